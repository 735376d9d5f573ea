//! The proxy over loopback: real server, in-process upstream, in-memory span export.

mod support;

use std::time::Duration;

use bytes::Bytes;
use genai_tap::config::{AuthConfig, AuthHeader, Dur, ListenerTls};
use genai_tap::telemetry::semconv::*;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use opentelemetry::trace::{SpanKind, Status};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHAT: &str = "/v1/chat/completions";

#[tokio::test]
async fn non_streaming_chat_is_forwarded_unchanged_and_traced() {
    let upstream = Upstream::start(|_| Reply::json(200, fixture("chat_response.json"))).await;
    let proxy = Proxy::start(&upstream.url()).await;
    let request = fixture("chat_request_full.json");
    // The fixture streams; this test wants the plain form of the same request.
    let request = Bytes::from(
        String::from_utf8(request.to_vec())
            .unwrap()
            .replace("\"stream\": true", "\"stream\": false"),
    );

    let answer = post_json(&proxy.url(CHAT), request.clone()).await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.body,
        fixture("chat_response.json"),
        "response bytes unchanged"
    );
    assert_eq!(upstream.seen()[0].body, request, "request bytes unchanged");
    let span = proxy.one_span().await;
    assert_eq!(span.name, "chat gpt-4o-mini");
    assert_eq!(span.span_kind, SpanKind::Client);
    assert_eq!(span.status, Status::Unset);
    assert_eq!(
        attr_str(&span, GEN_AI_OPERATION_NAME).as_deref(),
        Some("chat")
    );
    assert_eq!(
        attr_str(&span, GEN_AI_PROVIDER_NAME).as_deref(),
        Some("openai")
    );
    assert_eq!(
        attr_str(&span, GEN_AI_REQUEST_MODEL).as_deref(),
        Some("gpt-4o-mini")
    );
    assert_eq!(attr_i64(&span, GEN_AI_REQUEST_MAX_TOKENS), Some(200));
    assert_eq!(attr(&span, GEN_AI_REQUEST_TEMPERATURE), Some(0.2.into()));
    assert_eq!(attr(&span, GEN_AI_REQUEST_TOP_P), Some(0.9.into()));
    assert_eq!(
        attr(&span, GEN_AI_REQUEST_FREQUENCY_PENALTY),
        Some(0.5.into())
    );
    assert_eq!(
        attr(&span, GEN_AI_REQUEST_PRESENCE_PENALTY),
        Some((-0.5).into())
    );
    assert_eq!(
        attr(&span, GEN_AI_REQUEST_STOP_SEQUENCES),
        Some(strings(&["END", "STOP"]))
    );
    assert_eq!(attr_i64(&span, GEN_AI_REQUEST_SEED), Some(42));
    assert_eq!(attr_i64(&span, GEN_AI_REQUEST_CHOICE_COUNT), Some(2));
    assert_eq!(
        attr(&span, GEN_AI_REQUEST_STREAM),
        None,
        "absent unless streaming"
    );
    assert_eq!(
        attr_str(&span, GEN_AI_RESPONSE_ID).as_deref(),
        Some("chatcmpl-abc123")
    );
    assert_eq!(
        attr_str(&span, GEN_AI_RESPONSE_MODEL).as_deref(),
        Some("gpt-4o-mini-2024-07-18")
    );
    assert_eq!(
        attr(&span, GEN_AI_RESPONSE_FINISH_REASONS),
        Some(strings(&["stop", "length"]))
    );
    assert_eq!(attr_i64(&span, GEN_AI_USAGE_INPUT_TOKENS), Some(19));
    assert_eq!(attr_i64(&span, GEN_AI_USAGE_OUTPUT_TOKENS), Some(10));
    assert_eq!(
        attr_str(&span, SERVER_ADDRESS).as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        attr_i64(&span, SERVER_PORT),
        Some(i64::from(upstream.addr.port()))
    );
    assert_eq!(
        attr(&span, GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK),
        None,
        "streams only"
    );
    assert!(span.end_time >= span.start_time);
    proxy.stop().await;
}

#[tokio::test]
async fn streamed_chat_with_usage_is_assembled_and_bytes_are_unchanged() {
    let upstream = Upstream::start(|_| Reply::sse(fixture("chat_stream_usage.sse"))).await;
    let proxy = Proxy::start(&upstream.url()).await;

    let answer = post_json(
        &proxy.url(CHAT),
        r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;

    assert_eq!(answer.body, fixture("chat_stream_usage.sse"));
    assert_eq!(
        answer.headers.get("content-type").unwrap(),
        "text/event-stream"
    );
    let span = proxy.one_span().await;
    assert_eq!(attr(&span, GEN_AI_REQUEST_STREAM), Some(true.into()));
    assert_eq!(
        attr_str(&span, GEN_AI_RESPONSE_ID).as_deref(),
        Some("chatcmpl-stream1")
    );
    assert_eq!(
        attr(&span, GEN_AI_RESPONSE_FINISH_REASONS),
        Some(strings(&["stop"]))
    );
    assert_eq!(attr_i64(&span, GEN_AI_USAGE_INPUT_TOKENS), Some(12));
    assert_eq!(attr_i64(&span, GEN_AI_USAGE_OUTPUT_TOKENS), Some(3));
    match attr(&span, GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK) {
        Some(opentelemetry::Value::F64(s)) => assert!((0.0..10.0).contains(&s), "{s}"),
        other => panic!("time to first chunk: {other:?}"),
    }
    proxy.stop().await;
}

#[tokio::test]
async fn streamed_chat_without_usage_has_no_token_counts() {
    let upstream = Upstream::start(|_| Reply::sse(fixture("chat_stream_azure.sse"))).await;
    let proxy = Proxy::start(&upstream.url()).await;
    let answer = post_json(
        &proxy.url(CHAT),
        r#"{"model":"gpt-4o","stream":true,"messages":[]}"#,
    )
    .await;
    assert_eq!(answer.body, fixture("chat_stream_azure.sse"));
    let span = proxy.one_span().await;
    assert_eq!(
        attr_str(&span, GEN_AI_RESPONSE_ID).as_deref(),
        Some("chatcmpl-az1")
    );
    assert_eq!(
        attr(&span, GEN_AI_RESPONSE_FINISH_REASONS),
        Some(strings(&["stop"]))
    );
    assert_eq!(attr(&span, GEN_AI_USAGE_INPUT_TOKENS), None);
    assert_eq!(attr(&span, GEN_AI_USAGE_OUTPUT_TOKENS), None);
    assert_eq!(span.status, Status::Unset);
    proxy.stop().await;
}

#[tokio::test]
async fn stream_chunks_reach_the_client_before_the_upstream_sends_the_next() {
    let (reply, chunks) = Reply::sse_stream();
    let reply = std::sync::Mutex::new(Some(reply));
    let upstream = Upstream::start(move |_| reply.lock().unwrap().take().unwrap()).await;
    let proxy = Proxy::start(&upstream.url()).await;

    let request = http::Request::post(proxy.url(CHAT))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from_static(
            br#"{"model":"m","stream":true,"messages":[]}"#,
        )))
        .unwrap();
    let first = Bytes::from_static(
        b"data: {\"id\":\"o1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n",
    );
    chunks.send(Chunk::Data(first.clone())).await.unwrap();
    let response = tokio::time::timeout(LIMIT, client().request(request))
        .await
        .unwrap()
        .unwrap();
    let mut body = response.into_body();
    // The upstream has sent one chunk and waits: only pass-through can deliver it now.
    let frame = tokio::time::timeout(LIMIT, body.frame())
        .await
        .expect("the first chunk arrives while the upstream waits")
        .unwrap()
        .unwrap();
    assert_eq!(frame.into_data().unwrap(), first);
    let rest = Bytes::from_static(b"data: {\"id\":\"o1\",\"choices\":[{\"index\":0,\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n");
    chunks.send(Chunk::Data(rest.clone())).await.unwrap();
    drop(chunks);
    let tail = tokio::time::timeout(LIMIT, body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(tail, rest);
    let span = proxy.one_span().await;
    assert_eq!(
        attr(&span, GEN_AI_RESPONSE_FINISH_REASONS),
        Some(strings(&["stop"]))
    );
    proxy.stop().await;
}

#[tokio::test]
async fn client_disconnect_mid_stream_cancels_the_upstream_and_ends_the_span_once() {
    let (reply, chunks) = Reply::sse_stream();
    let reply = std::sync::Mutex::new(Some(reply));
    let upstream = Upstream::start(move |_| reply.lock().unwrap().take().unwrap()).await;
    let proxy = Proxy::start(&upstream.url()).await;

    let request = http::Request::post(proxy.url(CHAT))
        .body(http_body_util::Full::new(Bytes::from_static(
            br#"{"model":"m","stream":true,"messages":[]}"#,
        )))
        .unwrap();
    chunks
        .send(Chunk::Data(Bytes::from_static(
            b"data: {\"id\":\"gone\",\"model\":\"m-1\",\"choices\":[{\"index\":0,\"delta\":{}}]}\n\n",
        )))
        .await
        .unwrap();
    let response = client().request(request).await.unwrap();
    let mut body = response.into_body();
    let _ = tokio::time::timeout(LIMIT, body.frame()).await.unwrap();
    drop(body);

    // The proxy drops the upstream call: the upstream sees its response body abandoned.
    tokio::time::timeout(LIMIT, chunks.closed())
        .await
        .expect("upstream call cancelled");
    let span = proxy.one_span().await;
    assert_eq!(attr_str(&span, ERROR_TYPE).as_deref(), Some("cancelled"));
    assert!(matches!(span.status, Status::Error { .. }));
    assert_eq!(
        attr_str(&span, GEN_AI_RESPONSE_ID).as_deref(),
        Some("gone"),
        "what arrived is kept"
    );
    assert_eq!(
        attr(&span, GEN_AI_RESPONSE_FINISH_REASONS),
        Some(strings(&["error"]))
    );
    proxy.stop().await;
}

#[tokio::test]
async fn upstream_breaking_mid_stream_fails_the_span_and_the_client_sees_the_break() {
    let (reply, chunks) = Reply::sse_stream();
    let reply = std::sync::Mutex::new(Some(reply));
    let upstream = Upstream::start(move |_| reply.lock().unwrap().take().unwrap()).await;
    let proxy = Proxy::start(&upstream.url()).await;
    chunks
        .send(Chunk::Data(Bytes::from_static(b"data: {\"id\":\"x\"}\n\n")))
        .await
        .unwrap();
    let request = http::Request::post(proxy.url(CHAT))
        .body(http_body_util::Full::new(Bytes::from_static(
            br#"{"model":"m","stream":true}"#,
        )))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let _first = tokio::time::timeout(LIMIT, body.frame()).await.unwrap();
    chunks.send(Chunk::Fail).await.unwrap();
    let collected = tokio::time::timeout(LIMIT, body.collect()).await.unwrap();
    assert!(
        collected.is_err(),
        "the client sees the stream break, not a clean end"
    );
    let span = proxy.one_span().await;
    assert_eq!(
        attr_str(&span, ERROR_TYPE).as_deref(),
        Some("connection_reset")
    );
    proxy.stop().await;
}

#[tokio::test]
async fn upstream_http_errors_are_passed_through_and_recorded() {
    for (status, body, error_type, description) in [
        (
            429,
            r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-x","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
            "429",
            "rate_limit_exceeded",
        ),
        (
            500,
            r#"{"error":{"message":"The server had an error","type":"server_error","param":null,"code":null}}"#,
            "500",
            "server_error",
        ),
        (
            503,
            "<html>Service Unavailable</html>",
            "503",
            "HTTP 503 Service Unavailable",
        ),
    ] {
        let upstream = Upstream::start(move |_| Reply::json(status, body)).await;
        let proxy = Proxy::start(&upstream.url()).await;
        let answer = post_json(&proxy.url(CHAT), r#"{"model":"gpt-4o","messages":[]}"#).await;
        assert_eq!(answer.status.as_u16(), status);
        assert_eq!(answer.body, body.as_bytes());
        let span = proxy.one_span().await;
        assert_eq!(attr_str(&span, ERROR_TYPE).as_deref(), Some(error_type));
        assert_eq!(span.status, Status::error(description));
        assert!(
            !format!("{span:?}").contains("organization org-x"),
            "the error message may quote user data and is not exported"
        );
        proxy.stop().await;
    }
}

#[tokio::test]
async fn unreachable_upstream_gets_a_502_json_error_and_a_failed_span() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let proxy = Proxy::start(&format!("http://{closed}")).await;
    let answer = post_json(&proxy.url(CHAT), r#"{"model":"gpt-4o","messages":[]}"#).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        answer.headers.get("content-type").unwrap(),
        "application/json"
    );
    let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(body["error"]["code"], "connection_refused");
    assert_eq!(body["error"]["type"], "upstream_error");
    let span = proxy.one_span().await;
    assert_eq!(span.name, "chat gpt-4o");
    assert_eq!(
        attr_str(&span, ERROR_TYPE).as_deref(),
        Some("connection_refused")
    );
    assert!(matches!(span.status, Status::Error { .. }));
    assert_eq!(proxy.app.stats.snapshot().upstream_errors, 1);
    proxy.stop().await;
}

#[tokio::test]
async fn upstream_that_does_not_answer_in_time_gets_a_504() {
    let upstream = Upstream::start(|_| Reply::Hang).await;
    let proxy = Proxy::start_with(&upstream.url(), |c| {
        c.upstream.response_timeout = genai_tap::config::Dur(Duration::from_millis(200));
    })
    .await;
    let answer = post_json(&proxy.url(CHAT), r#"{"model":"gpt-4o","messages":[]}"#).await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(body["error"]["code"], "timeout");
    let span = proxy.one_span().await;
    assert_eq!(attr_str(&span, ERROR_TYPE).as_deref(), Some("timeout"));
    proxy.stop().await;
}

#[tokio::test]
async fn malformed_json_request_is_forwarded_byte_for_byte_and_the_span_says_why() {
    let upstream = Upstream::start(|_| {
        Reply::json(
            400,
            r#"{"error":{"message":"We could not parse the JSON body of your request.","type":"invalid_request_error","param":null,"code":null}}"#,
        )
    })
    .await;
    let proxy = Proxy::start(&upstream.url()).await;
    let broken = Bytes::from_static(b"{\"model\": \"gpt-4o\", \"messages\": [");
    let answer = post_json(&proxy.url(CHAT), broken.clone()).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(upstream.seen()[0].body, broken);
    let span = proxy.one_span().await;
    assert_eq!(span.name, "chat");
    assert_eq!(
        attr_str(&span, GENAI_TAP_REQUEST_PARSE_ERROR).as_deref(),
        Some("truncated JSON at line 1 column 33")
    );
    assert_eq!(attr_str(&span, ERROR_TYPE).as_deref(), Some("400"));
    assert_eq!(proxy.app.stats.snapshot().parse_failures, 1);
    proxy.stop().await;
}

#[tokio::test]
async fn non_genai_paths_are_forwarded_without_a_span() {
    let upstream = Upstream::start(|seen| match seen.uri.path() {
        "/v1/models" => Reply::json(200, r#"{"object":"list","data":[]}"#),
        _ => Reply::json(200, r#"{"id":"file-1"}"#),
    })
    .await;
    let proxy = Proxy::start(&upstream.url()).await;
    let models = send(
        Method::GET,
        &proxy.url("/v1/models?limit=5"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(models.body, r#"{"object":"list","data":[]}"#.as_bytes());
    let upload = send(
        Method::POST,
        &proxy.url("/v1/files"),
        &[("content-type", "application/octet-stream")],
        vec![7u8; 300_000],
    )
    .await;
    assert_eq!(upload.status, StatusCode::OK);
    assert!(proxy.spans().await.is_empty());
    let seen = upstream.seen();
    assert_eq!(seen[0].uri.path_and_query().unwrap(), "/v1/models?limit=5");
    assert_eq!(seen[1].body.len(), 300_000);
    assert_eq!(proxy.app.stats.snapshot().observed, 0);
    proxy.stop().await;
}

#[tokio::test]
async fn end_to_end_headers_pass_both_ways_and_hop_by_hop_ones_do_not() {
    let upstream = Upstream::start(|_| Reply::Full {
        status: 200,
        headers: vec![
            ("content-type", "application/json"),
            ("x-request-id", "req-123"),
            ("openai-processing-ms", "42"),
            ("set-cookie", "__cf_bm=abc; path=/"),
            ("set-cookie", "_cfuvid=def; path=/"),
            ("keep-alive", "timeout=5"),
        ],
        body: fixture("chat_response.json"),
    })
    .await;
    let proxy = Proxy::start(&format!("{}/base/v1", upstream.url())).await;
    let sent: &[(&str, &str)] = &[
        ("content-type", "application/json"),
        ("authorization", "Bearer sk-secret"),
        ("api-key", "azure-secret"),
        ("openai-organization", "org-1"),
        ("user-agent", "OpenAI/Python 1.99.0"),
        ("x-stainless-lang", "python"),
        ("accept", "application/json"),
        ("cookie", "a=b"),
        ("connection", "keep-alive, x-hop"),
        ("x-hop", "only-for-this-connection"),
    ];
    let answer = send(
        Method::POST,
        &proxy.url("/chat/completions?api-version=2024-10-21"),
        sent,
        r#"{"model":"gpt-4o"}"#,
    )
    .await;

    let seen = &upstream.seen()[0];
    assert_eq!(
        seen.uri.path_and_query().unwrap(),
        "/base/v1/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(
        seen.headers.get("host").unwrap().to_str().unwrap(),
        upstream.addr.to_string(),
        "Host names the upstream"
    );
    for (k, v) in sent
        .iter()
        .filter(|(k, _)| !["connection", "x-hop"].contains(k))
    {
        assert_eq!(seen.headers.get(*k).unwrap(), v, "{k} forwarded as sent");
    }
    assert!(seen.headers.get("x-hop").is_none());
    assert!(seen.headers.get("connection").is_none());
    assert_eq!(answer.headers.get("x-request-id").unwrap(), "req-123");
    assert_eq!(answer.headers.get("openai-processing-ms").unwrap(), "42");
    assert_eq!(answer.headers.get_all("set-cookie").iter().count(), 2);
    assert!(answer.headers.get("keep-alive").is_none());
    assert_eq!(answer.body, fixture("chat_response.json"));
    proxy.stop().await;
}

#[tokio::test]
async fn absolute_form_and_connect_are_refused_so_this_is_not_an_open_proxy() {
    let upstream = Upstream::start(|_| Reply::json(200, "{}")).await;
    let proxy = Proxy::start(&upstream.url()).await;
    let absolute = raw_exchange(
        proxy.addr,
        "GET http://169.254.169.254/latest/meta-data HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(absolute.starts_with("HTTP/1.1 400"), "{absolute}");
    assert!(absolute.contains("absolute_form_not_allowed"), "{absolute}");
    let connect = raw_exchange(
        proxy.addr,
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(connect.starts_with("HTTP/1.1 405"), "{connect}");
    let traversal = raw_exchange(
        proxy.addr,
        "GET /v1/../../admin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(traversal.starts_with("HTTP/1.1 400"), "{traversal}");
    assert!(upstream.seen().is_empty(), "nothing reached the upstream");
    assert_eq!(proxy.app.stats.snapshot().refused, 3);
    proxy.stop().await;
}

#[tokio::test]
async fn http2_cleartext_clients_are_served_on_the_same_port() {
    let upstream = Upstream::start(|_| Reply::sse(fixture("chat_stream_usage.sse"))).await;
    let proxy = Proxy::start(&upstream.url()).await;
    let h2: hyper_util::client::legacy::Client<_, http_body_util::Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let request = http::Request::post(proxy.url(CHAT))
        .body(http_body_util::Full::new(Bytes::from_static(
            br#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true}}"#,
        )))
        .unwrap();
    let response = tokio::time::timeout(LIMIT, h2.request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, fixture("chat_stream_usage.sse"));
    assert_eq!(upstream.seen()[0].version, http::Version::HTTP_11);
    let span = proxy.one_span().await;
    assert_eq!(attr_i64(&span, GEN_AI_USAGE_OUTPUT_TOKENS), Some(3));
    proxy.stop().await;
}

#[tokio::test]
async fn a_cleartext_client_whose_first_bytes_trickle_in_is_still_served() {
    // "P" could begin HTTP/2's preface: the protocol is decided only once more bytes arrive.
    let upstream = Upstream::start(|_| Reply::json(200, fixture("chat_response.json"))).await;
    let proxy = Proxy::start(&upstream.url()).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(b"P").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let body = r#"{"model":"gpt-4o-mini","messages":[]}"#;
    let rest = format!(
        "OST {CHAT} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(rest.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(LIMIT, stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert_eq!(upstream.seen()[0].body, body.as_bytes());
    proxy.stop().await;
}

#[tokio::test]
async fn a_connection_that_never_sends_a_byte_does_not_hold_up_the_drain() {
    let upstream = Upstream::start(|_| Reply::json(200, fixture("chat_response.json"))).await;
    let proxy = Proxy::start(&upstream.url()).await;
    let mut silent = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    // Served first, so the silent connection is surely accepted before the drain starts.
    post_json(&proxy.url(CHAT), r#"{"model":"m","messages":[]}"#).await;
    // The drain deadline (25 s by default) is well past LIMIT: only closing the silent
    // connection at once lets the proxy stop within it.
    assert!(proxy.stop().await, "the proxy stopped within {LIMIT:?}");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(LIMIT, silent.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "the silent connection was closed: {read:?}"
    );
}

#[tokio::test]
async fn azure_deployment_path_names_the_model_when_the_body_does_not() {
    let upstream = Upstream::start(|_| Reply::json(200, fixture("chat_response.json"))).await;
    let proxy = Proxy::start_with(&upstream.url(), |c| {
        c.upstream.provider = Some("azure.ai.openai".into());
    })
    .await;
    post_json(
        &proxy.url("/openai/deployments/prod-gpt4o/chat/completions?api-version=2024-10-21"),
        r#"{"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    let span = proxy.one_span().await;
    assert_eq!(span.name, "chat prod-gpt4o");
    assert_eq!(
        attr_str(&span, GEN_AI_PROVIDER_NAME).as_deref(),
        Some("azure.ai.openai")
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_request_body_over_the_observation_limit_is_forwarded_whole_and_unobserved() {
    let upstream = Upstream::start(|_| Reply::json(200, fixture("chat_response.json"))).await;
    let proxy = Proxy::start_with(&upstream.url(), |c| {
        c.limits.max_observed_body = genai_tap::config::ByteSize(1024);
    })
    .await;
    let big = format!(
        r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(100_000)
    );
    let answer = post_json(&proxy.url(CHAT), big.clone()).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(upstream.seen()[0].body, big.as_bytes());
    let span = proxy.one_span().await;
    assert!(
        attr_str(&span, GENAI_TAP_REQUEST_PARSE_ERROR)
            .unwrap()
            .contains("observation limit")
    );
    proxy.stop().await;
}

fn auth(key: Option<&str>, key_file: Option<std::path::PathBuf>, replace: bool) -> AuthConfig {
    AuthConfig {
        header: None,
        key: key.map(str::to_owned),
        key_file,
        replace,
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("genai-tap-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `contents` to `path` the way Kubernetes updates a mounted Secret: a new file moved
/// into place.
fn replace_file(path: &std::path::Path, contents: &[u8]) {
    let next = path.with_extension("next");
    std::fs::write(&next, contents).unwrap();
    std::fs::rename(&next, path).unwrap();
}

#[tokio::test]
async fn the_configured_key_is_added_only_when_the_client_sent_none_and_never_exported() {
    let upstream = Upstream::start(|_| Reply::json(200, fixture("chat_response.json"))).await;
    let proxy = Proxy::start_with(&upstream.url(), |c| {
        c.upstream.auth = Some(auth(Some("sk-canary-5f3a"), None, false));
        c.capture.mode = genai_tap::config::CaptureMode::On;
    })
    .await;
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let url = proxy.url(CHAT);
    send(Method::POST, &url, &[], Bytes::from(body)).await;
    send(
        Method::POST,
        &url,
        &[("authorization", "Bearer sk-app-own")],
        Bytes::from(body),
    )
    .await;

    let seen = upstream.seen();
    assert_eq!(seen[0].headers["authorization"], "Bearer sk-canary-5f3a");
    assert_eq!(
        seen[1].headers["authorization"], "Bearer sk-app-own",
        "the client's own credential wins"
    );
    assert!(!seen[1].headers.contains_key("api-key"));
    let spans = proxy.spans().await;
    assert_eq!(spans.len(), 2);
    assert!(
        !format!("{spans:?}").contains("sk-canary"),
        "the key is never exported"
    );
    assert_eq!(proxy.app.stats.snapshot().credentials_added, 1);
    proxy.stop().await;
}

#[tokio::test]
async fn replacing_swaps_an_sdk_placeholder_for_the_azure_api_key() {
    let upstream = Upstream::start(|_| Reply::json(200, fixture("chat_response.json"))).await;
    // The default header follows the provider: Azure endpoints take `api-key`.
    let proxy = Proxy::start_with(&upstream.url(), |c| {
        c.upstream.provider = Some("azure.ai.openai".into());
        c.upstream.auth = Some(auth(Some("azure-key"), None, true));
    })
    .await;
    send(
        Method::POST,
        &proxy.url("/openai/deployments/d1/chat/completions?api-version=2024-10-21"),
        &[("authorization", "Bearer placeholder")],
        Bytes::from_static(br#"{"messages":[]}"#),
    )
    .await;
    let seen = &upstream.seen()[0];
    assert_eq!(seen.headers["api-key"], "azure-key");
    assert!(!seen.headers.contains_key("authorization"));
    proxy.stop().await;
}

#[tokio::test]
async fn a_rotated_key_file_is_used_without_a_restart() {
    let upstream = Upstream::start(|_| Reply::json(200, fixture("chat_response.json"))).await;
    let path = temp_dir("key-rotation").join("api-key");
    std::fs::write(&path, "key-one\n").unwrap();
    let proxy = Proxy::start_with(&upstream.url(), |c| {
        c.upstream.auth = Some(AuthConfig {
            header: Some(AuthHeader::ApiKey),
            ..auth(None, Some(path.clone()), false)
        });
        c.server.reload_interval = Dur(Duration::from_millis(20));
    })
    .await;
    let url = proxy.url("/v1/models");
    send(Method::GET, &url, &[], Bytes::new()).await;
    replace_file(&path, b"key-two\n");
    let mut last = String::new();
    for _ in 0..250 {
        send(Method::GET, &url, &[], Bytes::new()).await;
        last = upstream.seen().last().unwrap().headers["api-key"]
            .to_str()
            .unwrap()
            .to_owned();
        if last == "key-two" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(upstream.seen()[0].headers["api-key"], "key-one");
    assert_eq!(last, "key-two", "the new key is picked up");
    // A broken rotation (an empty file) keeps the last good key.
    replace_file(&path, b"");
    while proxy.app.stats.snapshot().reload_failures == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    send(Method::GET, &url, &[], Bytes::new()).await;
    assert_eq!(
        upstream.seen().last().unwrap().headers["api-key"],
        "key-two"
    );
    proxy.stop().await;
}

/// A TLS client trusting the fixture CA; returns the leaf certificate the server presented and
/// the protocol negotiated by ALPN.
async fn tls_connect(
    addr: std::net::SocketAddr,
    alpn: &[&[u8]],
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    Vec<u8>,
) {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pki_types::CertificateDer::pem_file_iter(tls_fixture("ca.pem")).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let stream = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let leaf = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    (stream, leaf)
}

fn pem_der(name: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_file(tls_fixture(name))
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn the_tls_listener_serves_http1_and_http2_and_picks_up_a_renewed_certificate() {
    let upstream = Upstream::start(|_| Reply::json(200, fixture("chat_response.json"))).await;
    let dir = temp_dir("listener-tls");
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::copy(tls_fixture("server.pem"), &cert).unwrap();
    std::fs::copy(tls_fixture("server.key"), &key).unwrap();
    let proxy = Proxy::start_with(&upstream.url(), |c| {
        c.server.tls = Some(ListenerTls {
            cert_file: cert.clone(),
            key_file: key.clone(),
        });
        c.server.reload_interval = Dur(Duration::from_millis(20));
    })
    .await;

    // ALPN names the protocol; a client that offers none is told apart by its first bytes.
    for (alpn, version) in [
        (&[b"http/1.1".as_slice()][..], http::Version::HTTP_11),
        (&[b"h2".as_slice()][..], http::Version::HTTP_2),
        (&[][..], http::Version::HTTP_11),
    ] {
        let (stream, leaf) = tls_connect(proxy.addr, alpn).await;
        assert_eq!(leaf, pem_der("server.pem"));
        let io = hyper_util::rt::TokioIo::new(stream);
        // HTTP/2 names the authority in the request; HTTP/1 sends a path and a host header.
        let uri = if version == http::Version::HTTP_2 {
            format!("https://localhost{CHAT}")
        } else {
            CHAT.to_owned()
        };
        let request = http::Request::post(uri)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(Bytes::from_static(
                br#"{"model":"m","messages":[]}"#,
            )))
            .unwrap();
        let response = if version == http::Version::HTTP_2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
                    .unwrap();
            tokio::spawn(conn);
            sender.send_request(request).await.unwrap()
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            sender.send_request(request).await.unwrap()
        };
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), version);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, fixture("chat_response.json"));
    }

    // cert-manager renews: both files change; new connections get the new certificate.
    replace_file(&key, &std::fs::read(tls_fixture("server2.key")).unwrap());
    replace_file(&cert, &std::fs::read(tls_fixture("server2.pem")).unwrap());
    let renewed = pem_der("server2.pem");
    let mut presented = Vec::new();
    for _ in 0..250 {
        presented = tls_connect(proxy.addr, &[b"http/1.1"]).await.1;
        if presented == renewed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(presented, renewed, "the renewed certificate is served");
    assert_eq!(proxy.spans().await.len(), 3);
    proxy.stop().await;
}

#[tokio::test]
async fn a_plaintext_client_on_the_tls_port_is_counted_and_does_not_disturb_others() {
    let upstream = Upstream::start(|_| Reply::json(200, fixture("chat_response.json"))).await;
    let proxy = Proxy::start_with(&upstream.url(), |c| {
        c.server.tls = Some(ListenerTls {
            cert_file: tls_fixture("server.pem"),
            key_file: tls_fixture("server.key"),
        });
    })
    .await;
    let reply = raw_exchange(proxy.addr, "GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(!reply.starts_with("HTTP/1.1 200"), "{reply}");
    let (_stream, leaf) = tls_connect(proxy.addr, &[b"h2"]).await;
    assert_eq!(leaf, pem_der("server.pem"));
    assert_eq!(proxy.app.stats.snapshot().tls_handshake_failures, 1);
    assert!(upstream.seen().is_empty());
    proxy.stop().await;
}

#[tokio::test]
async fn an_upstream_asking_for_a_client_certificate_gets_the_configured_one() {
    let upstream =
        Upstream::start_tls(true, |_| Reply::json(200, fixture("chat_response.json"))).await;
    let with_cert = Proxy::start_with(&upstream.url(), |c| {
        c.upstream.ca_file = Some(tls_fixture("ca.pem"));
        c.upstream.client_cert_file = Some(tls_fixture("client.pem"));
        c.upstream.client_key_file = Some(tls_fixture("client.key"));
    })
    .await;
    let without = Proxy::start_trusting_test_ca(&upstream.url()).await;
    let body = r#"{"model":"m","messages":[]}"#;
    let ok = post_json(&with_cert.url(CHAT), body).await;
    assert_eq!(ok.status, StatusCode::OK);
    let refused = post_json(&without.url(CHAT), body).await;
    assert_eq!(refused.status, StatusCode::BAD_GATEWAY);
    assert_eq!(upstream.seen().len(), 1);
    with_cert.stop().await;
    without.stop().await;
}

#[tokio::test]
async fn certificate_and_key_files_that_do_not_belong_together_stop_start_up_naming_the_key() {
    let mut config = genai_tap::config::Config::default();
    config.upstream.url = Some("http://127.0.0.1:9".into());
    config.server.tls = Some(ListenerTls {
        cert_file: tls_fixture("server.pem"),
        key_file: tls_fixture("server2.key"),
    });
    let stats = std::sync::Arc::new(genai_tap::stats::Stats::default());
    let telemetry = genai_tap::telemetry::Telemetry::configured(&config, stats.clone()).build();
    let err = genai_tap::app::App::new(&config, telemetry, stats).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("invalid `server.tls.cert_file`"), "{text}");
    assert!(text.contains("server2.key"), "{text}");
}
