//! Metrics, trace context and destinations: decoded OTLP metrics from a real receiver, parent
//! and child spans across the app and the upstream, Application Insights envelopes at a
//! stand-in ingestion endpoint, and the admin endpoints.

mod support;

use std::convert::Infallible;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use genai_tap::config::{Dur, ExporterKind};
use genai_tap::mock::{self, MockConfig};
use genai_tap::telemetry::semconv::*;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_proto::tonic::common::v1::{KeyValue as ProtoKeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{HistogramDataPoint, metric};
use support::otlp::OtlpReceiver;
use support::*;

async fn mock_url() -> String {
    format!(
        "http://{}",
        mock::spawn(MockConfig::default()).await.unwrap()
    )
}

fn attr<'a>(attrs: &'a [ProtoKeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn has(attrs: &[ProtoKeyValue], key: &str, value: &str) -> bool {
    matches!(attr(attrs, key), Some(any_value::Value::StringValue(s)) if s == value)
}

fn histogram<'a>(
    metrics: &'a [opentelemetry_proto::tonic::metrics::v1::Metric],
    name: &str,
) -> (&'a str, &'a [HistogramDataPoint]) {
    let m = metrics.iter().find(|m| m.name == name).unwrap_or_else(|| {
        panic!(
            "{name} missing from {:?}",
            metrics.iter().map(|m| &m.name).collect::<Vec<_>>()
        )
    });
    match &m.data {
        Some(metric::Data::Histogram(h)) => (&m.unit, &h.data_points),
        other => panic!("{name} is not a histogram: {other:?}"),
    }
}

const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_reach_a_real_otlp_receiver_with_the_conventions_names_buckets_and_sums() {
    let receiver = OtlpReceiver::start().await;
    let upstream = mock_url().await;
    let endpoint = format!("http://{}", receiver.addr);
    let proxy = Proxy::start_configured(&upstream, move |c| {
        c.telemetry.otlp.endpoint = Some(endpoint);
        c.telemetry.exporters = vec![ExporterKind::Otlp];
        c.telemetry.metrics.interval = Dur(Duration::from_secs(3600));
    })
    .await;
    let chat = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"one two three"}]}"#;
    for _ in 0..2 {
        post_json(&proxy.url("/v1/chat/completions"), chat).await;
    }
    post_json(
        &proxy.url("/v1/chat/completions"),
        r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"one two three"}]}"#,
    )
    .await;
    post_json(
        &proxy.url("/v1/embeddings"),
        r#"{"model":"text-embedding-3-small","input":"a b c d"}"#,
    )
    .await;
    post_json(
        &proxy.url("/v1/chat/completions"),
        r#"{"model":"mock-rate-limited","messages":[]}"#,
    )
    .await;
    proxy.app.settle().await;
    let metrics = receiver.metrics();

    let (unit, points) = histogram(&metrics, GEN_AI_CLIENT_TOKEN_USAGE);
    assert_eq!(unit, "{token}");
    let find = |op: &str, model: &str, kind: &str| {
        points
            .iter()
            .find(|p| {
                has(&p.attributes, GEN_AI_OPERATION_NAME, op)
                    && has(&p.attributes, GEN_AI_REQUEST_MODEL, model)
                    && has(&p.attributes, GEN_AI_TOKEN_TYPE, kind)
            })
            .unwrap_or_else(|| panic!("{op} {model} {kind}"))
    };
    let input = find("chat", "gpt-4o-mini", "input");
    assert_eq!(
        (input.count, input.sum),
        (3, Some(9.0)),
        "3 calls x 3 tokens"
    );
    let output = find("chat", "gpt-4o-mini", "output");
    assert_eq!(
        (output.count, output.sum),
        (3, Some(33.0)),
        "the stream's usage was injected"
    );
    assert_eq!(input.explicit_bounds, TOKEN_BUCKETS);
    let embeddings = find("embeddings", "text-embedding-3-small", "input");
    assert_eq!((embeddings.count, embeddings.sum), (1, Some(4.0)));
    assert!(has(&input.attributes, GEN_AI_PROVIDER_NAME, "openai"));
    assert!(has(&input.attributes, GEN_AI_RESPONSE_MODEL, "gpt-4o-mini"));
    assert!(has(&input.attributes, SERVER_ADDRESS, "127.0.0.1"));

    let (unit, points) = histogram(&metrics, GEN_AI_CLIENT_OPERATION_DURATION);
    assert_eq!(unit, "s");
    assert_eq!(points[0].explicit_bounds, DURATION_BUCKETS);
    let failed: Vec<_> = points
        .iter()
        .filter(|p| attr(&p.attributes, ERROR_TYPE).is_some())
        .collect();
    assert_eq!(failed.len(), 1);
    assert!(has(&failed[0].attributes, ERROR_TYPE, "429"));
    assert_eq!(
        points.iter().map(|p| p.count).sum::<u64>(),
        5,
        "every request counts"
    );

    let (_, ttfc) = histogram(&metrics, GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK);
    assert_eq!(ttfc.iter().map(|p| p.count).sum::<u64>(), 1, "streams only");
    let (_, per_chunk) = histogram(&metrics, GEN_AI_CLIENT_OPERATION_TIME_PER_OUTPUT_CHUNK);
    assert!(
        per_chunk.iter().map(|p| p.count).sum::<u64>() >= 10,
        "one record per chunk after the first"
    );
    let (_, overhead) = histogram(&metrics, GENAI_TAP_PROXY_OVERHEAD);
    assert_eq!(overhead.iter().map(|p| p.count).sum::<u64>(), 5);
    assert!(
        overhead.iter().all(|p| p.sum.unwrap_or(1.0) < 1.0),
        "the proxy's own time is small"
    );

    let requests = metrics
        .iter()
        .find(|m| m.name == "genai_tap.requests")
        .expect("own counters as OTLP metrics");
    match &requests.data {
        Some(metric::Data::Sum(s)) => assert!(s.data_points.iter().any(|p| matches!(
            p.value,
            Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(5))
        ))),
        other => panic!("{other:?}"),
    }
    proxy.stop().await;
}

const PARENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn the_proxy_span_is_a_child_of_the_apps_and_the_parent_of_the_upstreams() {
    let upstream = Upstream::start(|_| Reply::json(200, fixture("chat_response.json"))).await;
    let proxy = Proxy::start(&upstream.url()).await;
    send(
        Method::POST,
        &proxy.url("/v1/chat/completions"),
        &[
            (
                "traceparent",
                &format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01"),
            ),
            ("tracestate", "vendor=abc"),
        ],
        r#"{"model":"gpt-4o","messages":[]}"#,
    )
    .await;
    let span = proxy.one_span().await;
    assert_eq!(
        span.span_context.trace_id(),
        TraceId::from_hex(PARENT_TRACE).unwrap()
    );
    assert_eq!(span.parent_span_id, SpanId::from_hex(PARENT_SPAN).unwrap());
    assert!(span.parent_span_is_remote);
    assert_eq!(span.span_context.trace_state().header(), "vendor=abc");
    let seen = &upstream.seen()[0];
    assert_eq!(
        seen.headers.get("traceparent").unwrap(),
        &format!("00-{PARENT_TRACE}-{}-01", span.span_context.span_id()),
        "the upstream's spans nest under the proxy's"
    );
    assert_eq!(seen.headers.get("tracestate").unwrap(), "vendor=abc");
    proxy.stop().await;
}

#[tokio::test]
async fn without_a_parent_a_trace_starts_here_and_a_sampled_out_parent_gets_no_span_but_metrics() {
    let upstream = Upstream::start(|_| Reply::json(200, fixture("chat_response.json"))).await;
    let proxy = Proxy::start(&upstream.url()).await;
    post_json(&proxy.url("/v1/chat/completions"), r#"{"model":"gpt-4o"}"#).await;
    let span = proxy.one_span().await;
    assert_eq!(span.parent_span_id, SpanId::INVALID);
    let traceparent = upstream.seen()[0]
        .headers
        .get("traceparent")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        traceparent,
        format!(
            "00-{}-{}-01",
            span.span_context.trace_id(),
            span.span_context.span_id()
        )
    );

    send(
        Method::POST,
        &proxy.url("/v1/chat/completions"),
        &[(
            "traceparent",
            &format!("00-{PARENT_TRACE}-{PARENT_SPAN}-00"),
        )],
        r#"{"model":"gpt-4o"}"#,
    )
    .await;
    assert_eq!(
        proxy.spans().await.len(),
        1,
        "parent-based: not sampled, no span"
    );
    let stats = proxy.app.stats.snapshot();
    assert_eq!(stats.spans_sampled_out, 1);
    assert_eq!(stats.exchanges[0][0], 2, "counted anyway");
    let propagated = upstream.seen()[1]
        .headers
        .get("traceparent")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        propagated.starts_with(&format!("00-{PARENT_TRACE}-")) && propagated.ends_with("-00"),
        "{propagated}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn propagation_can_be_switched_off_and_conversation_and_baggage_are_picked_up() {
    let upstream = Upstream::start(|_| Reply::json(200, fixture("chat_response.json"))).await;
    let proxy = Proxy::start_with(&upstream.url(), |c| {
        c.telemetry.propagate = false;
        c.telemetry.conversation_id_header = Some("x-conversation-id".into());
        c.telemetry.baggage_attributes = vec!["tenant.id".into()];
    })
    .await;
    let incoming = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    send(
        Method::POST,
        &proxy.url("/v1/chat/completions"),
        &[
            ("traceparent", &incoming),
            ("x-conversation-id", "conv-42"),
            ("baggage", "tenant.id=acme,user.secret=nope"),
        ],
        r#"{"model":"gpt-4o"}"#,
    )
    .await;
    assert_eq!(
        upstream.seen()[0].headers.get("traceparent").unwrap(),
        &incoming,
        "untouched"
    );
    let span = proxy.one_span().await;
    assert_eq!(
        attr_str(&span, GEN_AI_CONVERSATION_ID).as_deref(),
        Some("conv-42")
    );
    assert_eq!(attr_str(&span, "tenant.id").as_deref(), Some("acme"));
    assert_eq!(
        support::attr(&span, "user.secret"),
        None,
        "only configured baggage keys"
    );
    proxy.stop().await;
}

/// A stand-in for the Application Insights ingestion endpoint (HTTPS, like the real one, with
/// the test CA): records every envelope.
async fn ingestion() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let envelopes: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let record = envelopes.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = support::tls_acceptor(false);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let record = record.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let record = record.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/v2/track");
                        let gzip = req
                            .headers()
                            .get("content-encoding")
                            .is_some_and(|v| v == "gzip");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let mut text = String::new();
                        if gzip {
                            flate2::read::GzDecoder::new(&body[..])
                                .read_to_string(&mut text)
                                .unwrap();
                        } else {
                            text = String::from_utf8_lossy(&body).into_owned();
                        }
                        let items: Vec<serde_json::Value> = match serde_json::from_str(&text) {
                            Ok(serde_json::Value::Array(items)) => items,
                            _ => text
                                .lines()
                                .filter_map(|l| serde_json::from_str(l).ok())
                                .collect(),
                        };
                        let n = items.len();
                        record.lock().unwrap().extend(items);
                        let answer =
                            format!(r#"{{"itemsReceived":{n},"itemsAccepted":{n},"errors":[]}}"#);
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(answer))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
    (format!("https://{addr}/"), envelopes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_insights_receives_dependencies_metrics_and_events_from_a_connection_string() {
    let (endpoint, envelopes) = ingestion().await;
    let upstream = mock_url().await;
    let proxy = Proxy::start_configured(&upstream, move |c| {
        c.telemetry.applicationinsights.connection_string = Some(format!(
            "InstrumentationKey=00000000-0000-0000-0000-00000000abcd;IngestionEndpoint={endpoint}"
        ));
        c.telemetry.applicationinsights.ca_file =
            Some(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls/ca.pem").into());
        c.telemetry.metrics.interval = Dur(Duration::from_secs(3600));
        c.capture.mode = genai_tap::config::CaptureMode::On;
        c.capture.target = genai_tap::config::CaptureTarget::SpanAndEvent;
    })
    .await;
    post_json(
        &proxy.url("/v1/chat/completions"),
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello insights"}]}"#,
    )
    .await;
    proxy.app.settle().await;
    let all = envelopes.lock().unwrap().clone();
    let kinds: Vec<&str> = all.iter().filter_map(|e| e["name"].as_str()).collect();
    let dependency = all
        .iter()
        .find(|e| e["data"]["baseType"] == "RemoteDependencyData")
        .unwrap_or_else(|| panic!("no dependency in {kinds:?}"));
    assert_eq!(dependency["iKey"], "00000000-0000-0000-0000-00000000abcd");
    let data = &dependency["data"]["baseData"];
    assert_eq!(data["name"], "chat gpt-4o-mini");
    assert_eq!(data["properties"]["gen_ai.usage.input_tokens"], "2");
    assert_eq!(data["properties"]["gen_ai.request.model"], "gpt-4o-mini");
    assert!(
        data["properties"]["gen_ai.input.messages"]
            .as_str()
            .unwrap()
            .contains("hello insights")
    );
    let metrics: Vec<&str> = all
        .iter()
        .filter(|e| e["data"]["baseType"] == "MetricData")
        .flat_map(|e| {
            e["data"]["baseData"]["metrics"]
                .as_array()
                .into_iter()
                .flatten()
        })
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert!(
        metrics.contains(&GEN_AI_CLIENT_OPERATION_DURATION),
        "{metrics:?}"
    );
    assert!(metrics.contains(&GEN_AI_CLIENT_TOKEN_USAGE), "{metrics:?}");
    let event = all
        .iter()
        .find(|e| e["data"]["baseData"]["message"] == GEN_AI_CLIENT_INFERENCE_OPERATION_DETAILS)
        .unwrap_or_else(|| panic!("the content event: {kinds:?}"));
    let properties = &event["data"]["baseData"]["properties"];
    let input: serde_json::Value =
        serde_json::from_str(properties["gen_ai.input.messages"].as_str().unwrap()).unwrap();
    assert_eq!(
        input[0]["parts"][0]["content"], "hello insights",
        "JSON, not a flattened rendering"
    );
    assert_eq!(
        event["tags"]["ai.operation.id"], dependency["tags"]["ai.operation.id"],
        "same trace"
    );
    proxy.stop().await;
}

async fn get(url: &str) -> (StatusCode, String) {
    let answer = send(Method::GET, url, &[], Bytes::new()).await;
    (
        answer.status,
        String::from_utf8_lossy(&answer.body).into_owned(),
    )
}

#[tokio::test]
async fn admin_endpoints_answer_and_readiness_drops_as_soon_as_draining_starts() {
    let (reply, chunks) = Reply::sse_stream();
    let reply = Mutex::new(Some(reply));
    let upstream = Upstream::start(move |_| reply.lock().unwrap().take().unwrap()).await;
    let mut proxy = Proxy::start(&upstream.url()).await;
    let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = format!("http://{}", admin_listener.local_addr().unwrap());
    tokio::spawn(genai_tap::admin::serve(
        admin_listener,
        proxy.app.admin(),
        std::future::pending(),
    ));

    assert_eq!(
        get(&format!("{admin}/healthz")).await,
        (StatusCode::OK, "ok\n".into())
    );
    assert_eq!(get(&format!("{admin}/readyz")).await.0, StatusCode::OK);

    // A stream stays open while the proxy drains.
    chunks
        .send(Chunk::Data(Bytes::from_static(b"data: {\"id\":\"d\"}\n\n")))
        .await
        .unwrap();
    let request = http::Request::post(proxy.url("/v1/chat/completions"))
        .body(Full::new(Bytes::from_static(
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
        )))
        .unwrap();
    let response = client().request(request).await.unwrap();
    let mut body = response.into_body();
    let _ = body.frame().await;
    proxy.begin_stop();
    let mut ready = StatusCode::OK;
    for _ in 0..200 {
        ready = get(&format!("{admin}/readyz")).await.0;
        if ready == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        ready,
        StatusCode::SERVICE_UNAVAILABLE,
        "not ready while draining"
    );
    chunks
        .send(Chunk::Data(Bytes::from_static(b"data: [DONE]\n\n")))
        .await
        .unwrap();
    drop(chunks);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(
        &rest[..],
        b"data: [DONE]\n\n",
        "the open stream finished during the drain"
    );

    let (status, text) = get(&format!("{admin}/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text.contains("# TYPE genai_tap_requests_total counter\ngenai_tap_requests_total 1\n"),
        "{text}"
    );
    assert!(
        text.contains("genai_tap_exchanges_total{operation=\"chat\",outcome=\"ok\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("genai_tap_export_queue_depth{exporter=\"memory\",signal=\"spans\"}"),
        "{text}"
    );
    assert!(text.contains("genai_tap_ready 0"), "{text}");
    assert_eq!(get(&format!("{admin}/nope")).await.0, StatusCode::NOT_FOUND);
    proxy.stop().await;
}

#[tokio::test]
async fn during_the_shutdown_delay_new_requests_are_still_served_while_not_ready() {
    let upstream = Upstream::start(|_| Reply::json(200, fixture("chat_response.json"))).await;
    let mut proxy = Proxy::start_with(&upstream.url(), |c| {
        c.server.shutdown_delay = Dur(Duration::from_millis(300));
    })
    .await;
    proxy.begin_stop();
    while proxy.app.ready.load(std::sync::atomic::Ordering::Acquire) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Not ready, yet a request arriving now (the app shutting down alongside) is served.
    let answer = post_json(&proxy.url("/v1/chat/completions"), r#"{"model":"m"}"#).await;
    assert_eq!(answer.status, StatusCode::OK);
    let deadline = std::time::Instant::now() + LIMIT;
    while tokio::net::TcpStream::connect(proxy.addr).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the listener closes after the delay"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.stop().await;
}
