//! Every operation and endpoint shape through the proxy, against the embedded mock upstream
//! (deterministic, OpenAI-shaped), plus usage injection, routes, compression and capture.

mod support;

use std::io::Write;

use bytes::Bytes;
use genai_tap::config::{CaptureMode, CaptureTarget, RouteConfig, StreamUsage};
use genai_tap::mock::{self, MockConfig};
use genai_tap::telemetry::semconv::*;
use http::{Method, StatusCode};
use opentelemetry::Value;
use opentelemetry::trace::Status;
use support::*;

async fn mock_url() -> String {
    format!(
        "http://{}",
        mock::spawn(MockConfig::default()).await.unwrap()
    )
}

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}],"temperature":0.1}"#;
const CHAT_STREAM: &str =
    r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Say hello"}]}"#;

struct Case {
    path: &'static str,
    body: &'static str,
    name: &'static str,
    operation: &'static str,
    api_type: Option<&'static str>,
    streamed: bool,
}

#[tokio::test]
async fn every_operation_in_every_endpoint_shape_gets_a_complete_span() {
    let upstream = mock_url().await;
    let cases = [
        Case {
            path: "/v1/chat/completions",
            body: CHAT,
            name: "chat gpt-4o-mini",
            operation: "chat",
            api_type: Some("chat_completions"),
            streamed: false,
        },
        Case {
            path: "/v1/chat/completions",
            body: CHAT_STREAM,
            name: "chat gpt-4o-mini",
            operation: "chat",
            api_type: Some("chat_completions"),
            streamed: true,
        },
        Case {
            path: "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21",
            body: r#"{"messages":[{"role":"user","content":"hi"}],"stream":true}"#,
            name: "chat prod-4o",
            operation: "chat",
            api_type: Some("chat_completions"),
            streamed: true,
        },
        Case {
            path: "/openai/v1/chat/completions",
            body: CHAT,
            name: "chat gpt-4o-mini",
            operation: "chat",
            api_type: Some("chat_completions"),
            streamed: false,
        },
        Case {
            path: "/models/chat/completions?api-version=2024-05-01-preview",
            body: CHAT,
            name: "chat gpt-4o-mini",
            operation: "chat",
            api_type: Some("chat_completions"),
            streamed: false,
        },
        Case {
            path: "/v1/responses",
            body: r#"{"model":"gpt-4.1","input":"Say hello","max_output_tokens":50}"#,
            name: "chat gpt-4.1",
            operation: "chat",
            api_type: Some("responses"),
            streamed: false,
        },
        Case {
            path: "/v1/responses",
            body: r#"{"model":"gpt-4.1","input":"Say hello","stream":true}"#,
            name: "chat gpt-4.1",
            operation: "chat",
            api_type: Some("responses"),
            streamed: true,
        },
        Case {
            path: "/openai/responses?api-version=2025-04-01-preview",
            body: r#"{"model":"gpt-4.1","input":"hi","stream":true}"#,
            name: "chat gpt-4.1",
            operation: "chat",
            api_type: Some("responses"),
            streamed: true,
        },
        Case {
            path: "/openai/v1/responses",
            body: r#"{"model":"gpt-4.1","input":"hi"}"#,
            name: "chat gpt-4.1",
            operation: "chat",
            api_type: Some("responses"),
            streamed: false,
        },
        Case {
            path: "/v1/embeddings",
            body: r#"{"model":"text-embedding-3-small","input":["a b","c"],"encoding_format":"float"}"#,
            name: "embeddings text-embedding-3-small",
            operation: "embeddings",
            api_type: None,
            streamed: false,
        },
        Case {
            path: "/openai/deployments/ada/embeddings?api-version=2024-10-21",
            body: r#"{"input":"hello world"}"#,
            name: "embeddings ada",
            operation: "embeddings",
            api_type: None,
            streamed: false,
        },
        Case {
            path: "/models/embeddings?api-version=2024-05-01-preview",
            body: r#"{"model":"embed-v3","input":"x","encoding_format":"base64"}"#,
            name: "embeddings embed-v3",
            operation: "embeddings",
            api_type: None,
            streamed: false,
        },
        Case {
            path: "/v1/completions",
            body: r#"{"model":"gpt-3.5-turbo-instruct","prompt":"Say this is a test","max_tokens":7}"#,
            name: "text_completion gpt-3.5-turbo-instruct",
            operation: "text_completion",
            api_type: None,
            streamed: false,
        },
        Case {
            path: "/v1/completions",
            body: r#"{"model":"gpt-3.5-turbo-instruct","prompt":"Say this","stream":true}"#,
            name: "text_completion gpt-3.5-turbo-instruct",
            operation: "text_completion",
            api_type: None,
            streamed: true,
        },
    ];
    for case in cases {
        let proxy = Proxy::start(&upstream).await;
        let direct = post_json(&format!("{upstream}{}", case.path), case.body).await;
        let proxied = post_json(&proxy.url(case.path), case.body).await;
        assert_eq!(proxied.status, StatusCode::OK, "{}", case.path);
        assert_eq!(
            proxied.body, direct.body,
            "{}: the client gets the upstream's bytes",
            case.path
        );
        let span = proxy.one_span().await;
        assert_eq!(span.name, case.name, "{}", case.path);
        assert_eq!(
            attr_str(&span, GEN_AI_OPERATION_NAME).as_deref(),
            Some(case.operation)
        );
        assert_eq!(
            attr_str(&span, OPENAI_API_TYPE).as_deref(),
            case.api_type,
            "{}",
            case.path
        );
        // Usage is injected for streamed chat only; a streamed legacy completion has none.
        let usage_expected = !(case.streamed && case.operation == "text_completion");
        assert_eq!(
            attr_i64(&span, GEN_AI_USAGE_INPUT_TOKENS).is_some(),
            usage_expected,
            "{}: usage",
            case.path
        );
        assert_eq!(span.status, Status::Unset, "{}", case.path);
        assert_eq!(
            attr(&span, GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK).is_some(),
            case.streamed,
            "{}",
            case.path
        );
        if case.operation == "embeddings" {
            assert!(
                attr_i64(&span, GEN_AI_EMBEDDINGS_DIMENSION_COUNT).is_some(),
                "{}",
                case.path
            );
            assert_eq!(attr(&span, GEN_AI_RESPONSE_FINISH_REASONS), None);
        } else {
            assert_eq!(
                attr(&span, GEN_AI_RESPONSE_FINISH_REASONS),
                Some(strings(&["stop"])),
                "{}",
                case.path
            );
            assert!(
                attr_str(&span, GEN_AI_RESPONSE_ID).is_some(),
                "{}",
                case.path
            );
        }
        // The mock is on 127.0.0.1, so the provider is inferred as openai whatever the path;
        // the real hosts' inference is unit-tested in genai::provider.
        assert_eq!(
            attr_str(&span, GEN_AI_PROVIDER_NAME).as_deref(),
            Some("openai")
        );
        proxy.stop().await;
    }
}

#[tokio::test]
async fn streamed_chat_usage_is_injected_and_the_client_sees_the_stream_it_asked_for() {
    let upstream = mock_url().await;
    let proxy = Proxy::start(&upstream).await;
    let direct = post_json(&format!("{upstream}/v1/chat/completions"), CHAT_STREAM).await;
    assert!(
        !direct.body.windows(7).any(|w| w == b"\"usage\""),
        "the mock sends no usage unless asked"
    );
    let proxied = post_json(&proxy.url("/v1/chat/completions"), CHAT_STREAM).await;
    assert_eq!(
        proxied.body, direct.body,
        "byte for byte what the client would have received"
    );
    let span = proxy.one_span().await;
    assert_eq!(attr_i64(&span, GEN_AI_USAGE_INPUT_TOKENS), Some(2));
    assert_eq!(attr_i64(&span, GEN_AI_USAGE_OUTPUT_TOKENS), Some(11));
    assert_eq!(
        attr(&span, GENAI_TAP_USAGE_INJECTED),
        Some(Value::Bool(true))
    );
    assert_eq!(proxy.app.stats.snapshot().usage_injected, 1);
    proxy.stop().await;
}

#[tokio::test]
async fn usage_the_client_asked_for_is_passed_through_untouched() {
    let upstream = mock_url().await;
    let proxy = Proxy::start(&upstream).await;
    let body = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
    let direct = post_json(&format!("{upstream}/v1/chat/completions"), body).await;
    let proxied = post_json(&proxy.url("/v1/chat/completions"), body).await;
    assert_eq!(proxied.body, direct.body);
    assert!(
        proxied.body.windows(12).any(|w| w == b"\"choices\":[]"),
        "the usage chunk stays"
    );
    let span = proxy.one_span().await;
    assert_eq!(attr_i64(&span, GEN_AI_USAGE_OUTPUT_TOKENS), Some(11));
    assert_eq!(attr(&span, GENAI_TAP_USAGE_INJECTED), None);
    proxy.stop().await;
}

#[tokio::test]
async fn passthrough_and_old_azure_api_versions_never_modify_the_request() {
    let recorded = Upstream::start(|_| Reply::sse(fixture("chat_stream_azure.sse"))).await;
    let passthrough = Proxy::start_with(&recorded.url(), |c| {
        c.upstream.stream_usage = StreamUsage::Passthrough;
    })
    .await;
    post_json(&passthrough.url("/v1/chat/completions"), CHAT_STREAM).await;
    passthrough.stop().await;
    let inject = Proxy::start(&recorded.url()).await;
    post_json(
        &inject.url("/openai/deployments/d/chat/completions?api-version=2024-06-01"),
        CHAT_STREAM,
    )
    .await;
    post_json(
        &inject.url("/openai/deployments/d/chat/completions?api-version=2024-10-21"),
        CHAT_STREAM,
    )
    .await;
    let seen = recorded.seen();
    assert_eq!(seen[0].body, CHAT_STREAM.as_bytes(), "passthrough");
    assert_eq!(
        seen[1].body,
        CHAT_STREAM.as_bytes(),
        "api-version 2024-06-01 rejects stream_options"
    );
    assert_eq!(
        std::str::from_utf8(&seen[2].body).unwrap(),
        r#"{"stream_options":{"include_usage":true},"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Say hello"}]}"#
    );
    assert_eq!(
        seen[2]
            .headers
            .get("content-length")
            .unwrap()
            .to_str()
            .unwrap(),
        seen[2].body.len().to_string()
    );
    inject.stop().await;
}

#[tokio::test]
async fn an_upstream_that_rejects_stream_options_gets_the_original_request_and_no_more_injection() {
    let upstream = Upstream::start(|seen| {
        if seen.body.windows(14).any(|w| w == b"stream_options") {
            Reply::json(
                400,
                r#"{"error":{"message":"Unrecognized request argument supplied: stream_options","type":"invalid_request_error","param":null,"code":null}}"#,
            )
        } else {
            Reply::sse(fixture("chat_stream_azure.sse"))
        }
    })
    .await;
    let proxy = Proxy::start(&upstream.url()).await;
    for _ in 0..2 {
        let answer = post_json(&proxy.url("/v1/chat/completions"), CHAT_STREAM).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, fixture("chat_stream_azure.sse"));
    }
    let bodies: Vec<Bytes> = upstream.seen().into_iter().map(|s| s.body).collect();
    assert_eq!(
        bodies.len(),
        3,
        "injected, resent as sent, then never injected again"
    );
    assert_eq!(bodies[1], CHAT_STREAM.as_bytes());
    assert_eq!(bodies[2], CHAT_STREAM.as_bytes());
    let spans = proxy.spans().await;
    assert_eq!(spans.len(), 2);
    assert!(spans.iter().all(|s| s.status == Status::Unset));
    assert_eq!(proxy.app.stats.snapshot().usage_injection_rejected, 1);
    proxy.stop().await;
}

#[tokio::test]
async fn a_400_about_the_request_itself_reaches_the_client_unchanged() {
    const ANSWER: &str = r#"{"error":{"message":"Invalid model","type":"invalid_request_error","param":"model","code":"model_not_found"}}"#;
    let upstream = Upstream::start(|_| Reply::json(400, ANSWER)).await;
    let proxy = Proxy::start(&upstream.url()).await;
    let answer = post_json(&proxy.url("/v1/chat/completions"), CHAT_STREAM).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body, ANSWER.as_bytes());
    assert_eq!(upstream.seen().len(), 1, "no retry");
    let span = proxy.one_span().await;
    assert_eq!(attr_str(&span, ERROR_TYPE).as_deref(), Some("400"));
    assert_eq!(span.status, Status::error("model_not_found"));
    proxy.stop().await;
}

#[tokio::test]
async fn routes_send_each_prefix_to_its_upstream_and_only_there() {
    let a = Upstream::start(|_| Reply::json(200, fixture("chat_response.json"))).await;
    let b = Upstream::start(|_| Reply::json(200, fixture("chat_response_tools.json"))).await;
    let (a_url, b_url) = (a.url(), b.url());
    let proxy = Proxy::start_with(&a.url(), move |c| {
        c.upstream.url = None;
        c.routes = vec![
            RouteConfig {
                prefix: "/azure".into(),
                url: format!("{a_url}/openai"),
                provider: Some("azure.ai.openai".into()),
                strip_prefix: true,
                stream_usage: None,
                auth: None,
            },
            RouteConfig {
                prefix: "/other".into(),
                url: b_url,
                provider: None,
                strip_prefix: true,
                stream_usage: None,
                auth: None,
            },
        ];
    })
    .await;
    post_json(
        &proxy.url("/azure/deployments/d/chat/completions?api-version=2024-10-21"),
        CHAT,
    )
    .await;
    post_json(&proxy.url("/other/v1/chat/completions"), CHAT).await;
    let missing = post_json(&proxy.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        a.seen()[0].uri.path_and_query().unwrap(),
        "/openai/deployments/d/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(b.seen()[0].uri.path(), "/v1/chat/completions");
    let spans = proxy.spans().await;
    assert_eq!(spans.len(), 2);
    let providers: Vec<String> = spans
        .iter()
        .map(|s| attr_str(s, GEN_AI_PROVIDER_NAME).unwrap())
        .collect();
    assert_eq!(providers, vec!["azure.ai.openai", "openai"]);
    assert_eq!(
        attr_i64(&spans[1], SERVER_PORT),
        Some(i64::from(b.addr.port()))
    );
    assert_eq!(
        attr(&spans[1], GENAI_TAP_RESPONSE_TOOL_CALLS),
        Some(strings(&["get_weather", "get_time"]))
    );
    proxy.stop().await;
}

fn gzip(data: &[u8]) -> Bytes {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    Bytes::from(e.finish().unwrap())
}

#[tokio::test]
async fn compressed_responses_reach_the_client_compressed_and_are_observed_decoded() {
    let zipped = gzip(&fixture("chat_response.json"));
    let body = zipped.clone();
    let upstream = Upstream::start(move |_| Reply::Full {
        status: 200,
        headers: vec![
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        body: body.clone(),
    })
    .await;
    let proxy = Proxy::start(&upstream.url()).await;
    let answer = send(
        Method::POST,
        &proxy.url("/v1/chat/completions"),
        &[
            ("content-type", "application/json"),
            ("accept-encoding", "gzip, deflate"),
        ],
        CHAT,
    )
    .await;
    assert_eq!(answer.headers.get("content-encoding").unwrap(), "gzip");
    assert_eq!(answer.body, zipped, "the compressed bytes, untouched");
    let span = proxy.one_span().await;
    assert_eq!(attr_i64(&span, GEN_AI_USAGE_INPUT_TOKENS), Some(19));
    proxy.stop().await;

    let br = fixture("chat_stream_usage.sse.br");
    let stream = br.clone();
    let upstream = Upstream::start(move |_| Reply::Full {
        status: 200,
        headers: vec![
            ("content-type", "text/event-stream"),
            ("content-encoding", "br"),
        ],
        body: stream.clone(),
    })
    .await;
    let proxy = Proxy::start(&upstream.url()).await;
    let answer = post_json(
        &proxy.url("/v1/chat/completions"),
        r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
    )
    .await;
    assert_eq!(answer.body, br);
    let span = proxy.one_span().await;
    assert_eq!(attr_i64(&span, GEN_AI_USAGE_OUTPUT_TOKENS), Some(3));
    assert_eq!(
        attr(&span, GEN_AI_RESPONSE_FINISH_REASONS),
        Some(strings(&["stop"]))
    );
    proxy.stop().await;
}

#[tokio::test]
async fn azure_content_filter_results_and_request_ids_are_recorded() {
    let upstream = Upstream::start(|_| Reply::Full {
        status: 200,
        headers: vec![
            ("content-type", "text/event-stream"),
            ("x-request-id", "req-az-1"),
            ("apim-request-id", "apim-9"),
            ("x-ms-region", "Sweden Central"),
        ],
        body: fixture("chat_stream_azure.sse"),
    })
    .await;
    let proxy = Proxy::start_with(&upstream.url(), |c| {
        c.upstream.stream_usage = StreamUsage::Passthrough;
    })
    .await;
    post_json(
        &proxy.url("/openai/deployments/d/chat/completions?api-version=2024-10-21"),
        CHAT_STREAM,
    )
    .await;
    let span = proxy.one_span().await;
    assert_eq!(
        attr(&span, GENAI_TAP_CONTENT_FILTER_FILTERED),
        Some(Value::Bool(false))
    );
    assert_eq!(
        attr_str(&span, GENAI_TAP_UPSTREAM_REQUEST_ID).as_deref(),
        Some("req-az-1")
    );
    assert_eq!(
        attr_str(&span, GENAI_TAP_UPSTREAM_APIM_REQUEST_ID).as_deref(),
        Some("apim-9")
    );
    assert_eq!(
        attr_str(&span, GENAI_TAP_UPSTREAM_REGION).as_deref(),
        Some("Sweden Central")
    );
    proxy.stop().await;
}

#[tokio::test]
async fn content_is_captured_only_when_asked_in_the_conventions_form() {
    let upstream = mock_url().await;
    let body = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Weather in Paris?"}],"tools":[{"type":"function","function":{"name":"get_weather","description":"Weather by city","parameters":{"type":"object"}}}]}"#;
    let off = Proxy::start(&upstream).await;
    post_json(&off.url("/v1/chat/completions"), body).await;
    let span = off.one_span().await;
    assert!(
        span.attributes
            .iter()
            .all(|kv| !kv.key.as_str().starts_with("gen_ai.input")
                && !kv.key.as_str().starts_with("gen_ai.output")),
        "no content by default"
    );
    assert!(!format!("{span:?}").contains("Paris"));
    off.stop().await;

    let on = Proxy::start_with(&upstream, |c| {
        c.capture.mode = CaptureMode::On;
        c.capture.target = CaptureTarget::Span;
    })
    .await;
    post_json(&on.url("/v1/chat/completions"), body).await;
    let span = on.one_span().await;
    let input: serde_json::Value =
        serde_json::from_str(&attr_str(&span, GEN_AI_INPUT_MESSAGES).unwrap()).unwrap();
    assert_eq!(
        input[0],
        serde_json::json!({"role": "system", "parts": [{"type": "text", "content": "Be brief."}]})
    );
    assert_eq!(input[1]["parts"][0]["content"], "Weather in Paris?");
    let output: serde_json::Value =
        serde_json::from_str(&attr_str(&span, GEN_AI_OUTPUT_MESSAGES).unwrap()).unwrap();
    assert_eq!(output[0]["finish_reason"], "tool_calls");
    assert_eq!(output[0]["parts"][0]["type"], "tool_call");
    assert_eq!(output[0]["parts"][0]["name"], "get_weather");
    assert_eq!(
        output[0]["parts"][0]["arguments"],
        serde_json::json!({"city": "Paris"}),
        "assembled from deltas, parsed"
    );
    let tools: serde_json::Value =
        serde_json::from_str(&attr_str(&span, GEN_AI_TOOL_DEFINITIONS).unwrap()).unwrap();
    assert_eq!(tools[0]["name"], "get_weather");
    on.stop().await;
}
