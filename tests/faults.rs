//! Fail-open under every fault: a broken exporter, a misbehaving upstream, a hostile client or
//! a panicking observer never harms the app's traffic. Each test injects one fault over
//! loopback and checks what the client saw, what the telemetry says, and that the proxy still
//! serves. README's "Reliability" section lists them.

mod support;

use std::sync::Mutex;

use std::time::{Duration, Instant};

use bytes::Bytes;
use genai_tap::config::{ByteSize, Dur, OtlpProtocol};
use genai_tap::telemetry::semconv::*;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use support::otlp::{Behaviour, OtlpReceiver};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHAT: &str = "/v1/chat/completions";
const REQUEST: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

async fn chat_upstream() -> Upstream {
    Upstream::start(|_| Reply::json(200, fixture("chat_response.json"))).await
}

/// Polls `done` until it holds (bounded by [`LIMIT`]).
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The exporter

#[derive(Debug, Clone, Copy)]
enum ExporterFault {
    /// Nothing listens: connections are refused.
    Down,
    /// Accepts the connection and the request, never answers.
    BlackHole,
    Status(u16),
    /// Answers, but only after the export timeout.
    Slow,
}

/// The admin port's `/metrics` text for `proxy`.
async fn admin_metrics(proxy: &Proxy) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(genai_tap::admin::serve(
        listener,
        proxy.app.admin(),
        std::future::pending(),
    ));
    let answer = send(
        Method::GET,
        &format!("http://{addr}/metrics"),
        &[],
        Bytes::new(),
    )
    .await;
    server.abort();
    String::from_utf8(answer.body.to_vec()).unwrap()
}

/// Sends a request whose span is named after `model` every 50 ms until `done` (bounded).
async fn send_until(url: &str, model: &str, done: impl Fn() -> bool) {
    let body = format!(r#"{{"model":"{model}","messages":[]}}"#);
    let deadline = Instant::now() + LIMIT;
    while !done() {
        assert!(Instant::now() < deadline, "no recovery in time");
        assert_eq!(post_json(url, body.clone()).await.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Requests flow with unchanged answers while the exporter is broken; drops and failures are
/// counted and the queue stays within its size; once the collector recovers, new spans reach
/// it without a restart.
async fn exporter_fault(protocol: OtlpProtocol, fault: ExporterFault) {
    let upstream = chat_upstream().await;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut receiver = None;
    if !matches!(fault, ExporterFault::Down) {
        let r = OtlpReceiver::start_on(addr).await;
        r.behave(match fault {
            ExporterFault::BlackHole => Behaviour::Hang,
            ExporterFault::Status(s) => Behaviour::Fail(s),
            _ => Behaviour::Slow(Duration::from_secs(5)),
        });
        receiver = Some(r);
    }
    let proxy = Proxy::start_configured(&upstream.url(), |c| {
        c.telemetry.otlp.endpoint = Some(format!("http://{addr}"));
        c.telemetry.otlp.protocol = protocol;
        c.telemetry.otlp.timeout = Dur(Duration::from_millis(200));
        c.telemetry.batch.export_timeout = Dur(Duration::from_millis(200));
        c.telemetry.batch.schedule_delay = Dur(Duration::from_millis(20));
        c.telemetry.batch.max_queue_size = 4;
        c.telemetry.batch.max_export_batch_size = 4;
        c.telemetry.metrics.interval = Dur(Duration::from_secs(3600));
    })
    .await;
    let url = proxy.url(CHAT);
    for _ in 0..30 {
        let answer = post_json(&url, REQUEST).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, fixture("chat_response.json"), "unchanged");
    }
    let stats = proxy.app.stats.clone();
    eventually("failed or dropped spans are counted", || {
        let s = stats.snapshot();
        s.spans_failed + s.spans_dropped > 0
    })
    .await;
    for (_, signal, depth) in proxy.app.telemetry.queue_depths() {
        assert!(
            depth <= 4,
            "{signal} queue holds {depth}, more than its size"
        );
    }
    assert_eq!(stats.snapshot().spans_exported, 0, "{fault:?}");
    let metrics = admin_metrics(&proxy).await;
    let lost: u64 = [
        "genai_tap_spans_failed_total ",
        "genai_tap_spans_dropped_total ",
    ]
    .iter()
    .filter_map(|name| metrics.lines().find_map(|l| l.strip_prefix(name)))
    .map(|v| v.trim().parse::<u64>().unwrap())
    .sum();
    assert!(lost > 0, "visible on /metrics: {metrics}");

    let receiver = match receiver {
        Some(r) => r,
        None => OtlpReceiver::start_on(addr).await,
    };
    receiver.behave(Behaviour::Accept);
    send_until(&url, "after-recovery", || {
        receiver
            .spans()
            .iter()
            .any(|s| s.span.name == "chat after-recovery")
    })
    .await;
    assert!(stats.snapshot().spans_exported > 0);
    proxy.stop().await;
}

#[tokio::test]
async fn exporter_down_over_http() {
    exporter_fault(OtlpProtocol::HttpProtobuf, ExporterFault::Down).await;
}

#[tokio::test]
async fn exporter_down_over_grpc() {
    exporter_fault(OtlpProtocol::Grpc, ExporterFault::Down).await;
}

#[tokio::test]
async fn exporter_black_holed_over_http() {
    exporter_fault(OtlpProtocol::HttpProtobuf, ExporterFault::BlackHole).await;
}

#[tokio::test]
async fn exporter_black_holed_over_grpc() {
    exporter_fault(OtlpProtocol::Grpc, ExporterFault::BlackHole).await;
}

#[tokio::test]
async fn exporter_answering_500_over_http() {
    exporter_fault(OtlpProtocol::HttpProtobuf, ExporterFault::Status(500)).await;
}

#[tokio::test]
async fn exporter_answering_429_over_http() {
    exporter_fault(OtlpProtocol::HttpProtobuf, ExporterFault::Status(429)).await;
}

#[tokio::test]
async fn exporter_unavailable_over_grpc() {
    exporter_fault(OtlpProtocol::Grpc, ExporterFault::Status(503)).await;
}

#[tokio::test]
async fn exporter_too_slow_over_http() {
    exporter_fault(OtlpProtocol::HttpProtobuf, ExporterFault::Slow).await;
}

#[tokio::test]
async fn exporter_too_slow_over_grpc() {
    exporter_fault(OtlpProtocol::Grpc, ExporterFault::Slow).await;
}

// ---------------------------------------------------------------------------------------------
// The upstream

/// An upstream that answers the first request with `first` and every later one with a plain
/// chat completion (so the test can check the proxy still serves).
async fn upstream_first(first: Reply) -> Upstream {
    let first = Mutex::new(Some(first));
    Upstream::start(move |_| {
        first
            .lock()
            .unwrap()
            .take()
            .unwrap_or_else(|| Reply::json(200, fixture("chat_response.json")))
    })
    .await
}

async fn still_serves(proxy: &Proxy) {
    let answer = post_json(&proxy.url(CHAT), REQUEST).await;
    assert_eq!(answer.status, StatusCode::OK, "the proxy still serves");
}

async fn open_stream(proxy: &Proxy, model: &str) -> hyper::body::Incoming {
    let request = http::Request::post(proxy.url(CHAT))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(format!(
            r#"{{"model":"{model}","stream":true,"stream_options":{{"include_usage":true}}}}"#
        ))))
        .unwrap();
    let response = tokio::time::timeout(LIMIT, client().request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body()
}

fn span_for<'a>(
    spans: &'a [opentelemetry_sdk::trace::SpanData],
    model: &str,
) -> Vec<&'a opentelemetry_sdk::trace::SpanData> {
    spans
        .iter()
        .filter(|s| attr_str(s, GEN_AI_REQUEST_MODEL).as_deref() == Some(model))
        .collect()
}

#[tokio::test]
async fn an_upstream_stalling_mid_stream_is_cut_off_after_the_idle_timeout() {
    let (reply, chunks) = Reply::sse_stream();
    let upstream = upstream_first(reply).await;
    let proxy = Proxy::start_with(&upstream.url(), |c| {
        c.upstream.body_idle_timeout = Dur(Duration::from_millis(200));
    })
    .await;
    chunks
        .send(Chunk::Data(Bytes::from_static(b"data: {\"id\":\"s\"}\n\n")))
        .await
        .unwrap();
    let mut body = open_stream(&proxy, "stalled").await;
    assert!(
        body.frame().await.unwrap().is_ok(),
        "the first chunk arrives"
    );
    // The upstream keeps the stream open and sends nothing more.
    let rest = tokio::time::timeout(LIMIT, body.collect()).await.unwrap();
    assert!(
        rest.is_err(),
        "the client sees the stream cut, not a clean end"
    );
    let spans = proxy.spans().await;
    let stalled = span_for(&spans, "stalled");
    assert_eq!(stalled.len(), 1, "ended once");
    assert_eq!(attr_str(stalled[0], ERROR_TYPE).as_deref(), Some("timeout"));
    still_serves(&proxy).await;
    drop(chunks);
    proxy.stop().await;
}

#[tokio::test]
async fn malformed_sse_and_invalid_utf8_reach_the_client_unchanged_and_the_span_says_why() {
    let mut sent = Vec::new();
    sent.extend_from_slice(
        b"data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n",
    );
    sent.extend_from_slice(b"data: {not json\n\n");
    sent.extend_from_slice(b"data: \xff\xfe\xfd\n\n");
    sent.extend_from_slice(b": comment\nevent: odd\nretry: x\n\n");
    sent.extend_from_slice(b"data: [DONE]\n\n");
    let sent = Bytes::from(sent);
    let upstream = upstream_first(Reply::sse(sent.clone())).await;
    let proxy = Proxy::start(&upstream.url()).await;
    let body = open_stream(&proxy, "garbled").await;
    let received = body.collect().await.unwrap().to_bytes();
    assert_eq!(received, sent, "byte for byte");
    let spans = proxy.spans().await;
    let span = span_for(&spans, "garbled")[0];
    assert_eq!(attr_str(span, GEN_AI_RESPONSE_ID).as_deref(), Some("c1"));
    let why = attr_str(span, GENAI_TAP_RESPONSE_PARSE_ERROR).expect("the span says why");
    assert!(!why.is_empty());
    still_serves(&proxy).await;
    proxy.stop().await;
}

#[tokio::test]
async fn a_response_larger_than_the_observation_limit_is_forwarded_whole() {
    let content = "x".repeat(1 << 20);
    let big = Bytes::from(format!(
        r#"{{"id":"big","object":"chat.completion","model":"m","choices":[{{"index":0,"message":{{"role":"assistant","content":"{content}"}},"finish_reason":"stop"}}]}}"#
    ));
    let upstream = upstream_first(Reply::json(200, big.clone())).await;
    let proxy = Proxy::start_with(&upstream.url(), |c| {
        c.limits.max_observed_body = ByteSize(64 << 10);
    })
    .await;
    let answer = post_json(&proxy.url(CHAT), r#"{"model":"huge"}"#).await;
    assert_eq!(answer.body, big, "the whole body, unchanged");
    let spans = proxy.spans().await;
    let why = attr_str(span_for(&spans, "huge")[0], GENAI_TAP_RESPONSE_PARSE_ERROR)
        .expect("the span says why it carries less");
    assert!(why.contains("limit"), "{why}");
    still_serves(&proxy).await;
    proxy.stop().await;
}

#[tokio::test]
async fn a_truncated_gzip_body_reaches_the_client_as_sent_and_the_span_says_why() {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&fixture("chat_response.json")).unwrap();
    let whole = encoder.finish().unwrap();
    let truncated = Bytes::copy_from_slice(&whole[..whole.len() / 2]);
    let upstream = upstream_first(Reply::Full {
        status: 200,
        headers: vec![
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        body: truncated.clone(),
    })
    .await;
    let proxy = Proxy::start(&upstream.url()).await;
    let answer = post_json(&proxy.url(CHAT), r#"{"model":"truncated"}"#).await;
    assert_eq!(
        answer.body, truncated,
        "compressed bytes, as the upstream sent them"
    );
    let spans = proxy.spans().await;
    assert!(
        attr_str(
            span_for(&spans, "truncated")[0],
            GENAI_TAP_RESPONSE_PARSE_ERROR
        )
        .is_some(),
        "the span says the body could not be read"
    );
    still_serves(&proxy).await;
    proxy.stop().await;
}

/// An HTTP/2 upstream over TLS that sends GOAWAY after answering each connection's first
/// request. Returns its URL and how many connections it accepted.
async fn goaway_upstream() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let acceptor = tls_acceptor(false);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let (answered, mut goaway) = tokio::sync::mpsc::channel::<()>(1);
                let service = hyper::service::service_fn(move |_req| {
                    let answered = answered.clone();
                    async move {
                        let _ = answered.try_send(());
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(fixture(
                            "chat_response.json",
                        ))))
                    }
                });
                let conn =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = goaway.recv() => conn.as_mut().graceful_shutdown(),
                }
                let _ = conn.await;
            });
        }
    });
    (format!("https://{addr}"), accepted)
}

#[tokio::test]
async fn an_http2_upstream_sending_goaway_costs_no_request() {
    let (url, accepted) = goaway_upstream().await;
    let proxy = Proxy::start_trusting_test_ca(&url).await;
    for _ in 0..5 {
        let answer = post_json(&proxy.url(CHAT), REQUEST).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, fixture("chat_response.json"));
    }
    assert!(
        accepted.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "the proxy reconnected after GOAWAY"
    );
    let spans = proxy.spans().await;
    assert_eq!(spans.len(), 5);
    assert!(spans.iter().all(|s| attr(s, ERROR_TYPE).is_none()));
    proxy.stop().await;
}

/// An HTTP/1.1 upstream on raw sockets that answers every request `{}` (keep-alive) and closes
/// each connection after `per_connection` answers without announcing it, as an upstream's own
/// idle timeout does. Counts the connections it accepted and those the proxy closed.
struct RawUpstream {
    addr: std::net::SocketAddr,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    closed_by_proxy: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl RawUpstream {
    async fn start(per_connection: usize) -> RawUpstream {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed_by_proxy = Arc::new(AtomicUsize::new(0));
        let (count, closed) = (accepted.clone(), closed_by_proxy.clone());
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let closed = closed.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for _ in 0..per_connection {
                        // One whole request: its head, then content-length bytes of body.
                        let end = loop {
                            let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                            if let Some(head) = text.find("\r\n\r\n") {
                                let length = text[..head]
                                    .lines()
                                    .find_map(|l| l.strip_prefix("content-length:"))
                                    .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                                if buf.len() >= head + 4 + length {
                                    break head + 4 + length;
                                }
                            }
                            let mut chunk = [0u8; 4096];
                            match tcp.read(&mut chunk).await {
                                Ok(0) | Err(_) => {
                                    closed.fetch_add(1, Ordering::SeqCst);
                                    return;
                                }
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        buf.drain(..end);
                        let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                                      content-length: 2\r\n\r\n{}";
                        if tcp.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        RawUpstream {
            addr,
            accepted,
            closed_by_proxy,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn closed_by_proxy(&self) -> usize {
        self.closed_by_proxy
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn upstream_connections_are_reused_and_one_the_upstream_closed_costs_no_request() {
    let upstream = RawUpstream::start(usize::MAX).await;
    let proxy = Proxy::start(&format!("http://{}", upstream.addr)).await;
    for _ in 0..5 {
        assert_eq!(
            post_json(&proxy.url(CHAT), REQUEST).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        upstream.accepted(),
        1,
        "one kept-alive connection served all five"
    );
    proxy.stop().await;

    // This one drops each connection after its first answer, without `connection: close`.
    let upstream = RawUpstream::start(1).await;
    let proxy = Proxy::start(&format!("http://{}", upstream.addr)).await;
    for i in 1..=3 {
        assert_eq!(
            post_json(&proxy.url(CHAT), REQUEST).await.status,
            StatusCode::OK
        );
        assert_eq!(upstream.accepted(), i);
        // Time for the proxy to read the close; a request racing it may fail, as anywhere.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let spans = proxy.spans().await;
    assert_eq!(spans.len(), 3);
    assert!(spans.iter().all(|s| attr(s, ERROR_TYPE).is_none()));
    proxy.stop().await;
}

#[tokio::test]
async fn an_https_upstream_offering_h2_gets_one_http2_connection_shared_by_concurrent_requests() {
    let upstream =
        Upstream::start_tls(false, |_| Reply::json(200, fixture("chat_response.json"))).await;
    let proxy = Proxy::start_trusting_test_ca(&upstream.url()).await;
    // The first request opens the connection; the rest run at once on it.
    assert_eq!(
        post_json(&proxy.url(CHAT), REQUEST).await.status,
        StatusCode::OK
    );
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let url = proxy.url(CHAT);
        requests.spawn(async move { post_json(&url, REQUEST).await.status });
    }
    while let Some(status) = requests.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }
    let seen = upstream.seen();
    assert_eq!(seen.len(), 9);
    assert!(seen.iter().all(|s| s.version == http::Version::HTTP_2));
    assert_eq!(upstream.connections(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn idle_upstream_connections_are_closed_after_the_pool_idle_timeout() {
    let upstream = RawUpstream::start(usize::MAX).await;
    let proxy = Proxy::start_with(&format!("http://{}", upstream.addr), |c| {
        c.upstream.pool_idle_timeout = Dur(Duration::from_millis(300));
    })
    .await;
    assert_eq!(
        post_json(&proxy.url(CHAT), REQUEST).await.status,
        StatusCode::OK
    );
    assert_eq!(upstream.closed_by_proxy(), 0, "kept for the next request");
    eventually("the idle connection is closed", || {
        upstream.closed_by_proxy() == 1
    })
    .await;
    // The next request opens a new one.
    assert_eq!(
        post_json(&proxy.url(CHAT), REQUEST).await.status,
        StatusCode::OK
    );
    assert_eq!(upstream.accepted(), 2);
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The client

#[tokio::test]
async fn a_client_leaving_mid_request_costs_nothing_upstream_and_the_span_says_cancelled() {
    let upstream = chat_upstream().await;
    let proxy = Proxy::start(&upstream.url()).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 1000\r\n\r\n{\"model\":\"gone\",",
        )
        .await
        .unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(stream);
    let stats = proxy.app.stats.clone();
    eventually("the exchange is recorded", || {
        stats.snapshot().exchanges.iter().flatten().sum::<u64>() == 1
    })
    .await;
    let spans = proxy.spans().await;
    assert_eq!(spans.len(), 1);
    assert_eq!(
        attr_str(&spans[0], ERROR_TYPE).as_deref(),
        Some("cancelled")
    );
    assert!(upstream.seen().is_empty(), "nothing half-sent upstream");
    still_serves(&proxy).await;
    proxy.stop().await;
}

#[tokio::test]
async fn slow_clients_are_cut_off_at_the_header_timeout_while_others_are_served() {
    let upstream = chat_upstream().await;
    let proxy = Proxy::start_with(&upstream.url(), |c| {
        c.server.header_read_timeout = Dur(Duration::from_millis(300));
    })
    .await;
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    still_serves(&proxy).await;
    for mut s in slow {
        let mut out = Vec::new();
        // The proxy closes the connection (after a 408, or without a word).
        let read = tokio::time::timeout(LIMIT, s.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "the slow connection is closed");
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{text}"
        );
    }
    assert!(
        upstream.seen().len() == 1,
        "only the complete request went upstream"
    );
    proxy.stop().await;
}

/// A body of `frames` frames of 1 MiB with no length announced (chunked).
struct Unsized {
    frames: usize,
    chunk: Bytes,
}

impl http_body::Body for Unsized {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.frames == 0 {
            return std::task::Poll::Ready(None);
        }
        self.frames -= 1;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(self.chunk.clone()))))
    }
}

#[tokio::test]
async fn a_100_mib_request_body_streams_through_unobserved() {
    let upstream = chat_upstream().await;
    let proxy = Proxy::start(&upstream.url()).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Unsized>();
    let request = http::Request::post(proxy.url(CHAT))
        .body(Unsized {
            frames: 100,
            chunk: Bytes::from(vec![b'a'; 1 << 20]),
        })
        .unwrap();
    let response = tokio::time::timeout(LIMIT, client.request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = upstream.seen();
    assert_eq!(seen[0].body.len(), 100 << 20, "every byte arrived");
    assert!(seen[0].body.iter().all(|b| *b == b'a'));
    let span = proxy.one_span().await;
    let why = attr_str(&span, GENAI_TAP_REQUEST_PARSE_ERROR).unwrap();
    assert!(why.contains("observation limit"), "{why}");
    proxy.stop().await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let upstream =
        Upstream::start(|seen| Reply::json(200, format!(r#"{{"path":"{}"}}"#, seen.uri.path())))
            .await;
    let proxy = Proxy::start(&upstream.url()).await;
    let reply = raw_exchange(
        proxy.addr,
        "GET /v1/models/one HTTP/1.1\r\nhost: x\r\n\r\n\
         GET /v1/models/two HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    let one = reply
        .find(r#"{"path":"/v1/models/one"}"#)
        .expect("first answer");
    let two = reply
        .find(r#"{"path":"/v1/models/two"}"#)
        .expect("second answer");
    assert!(one < two, "in order: {reply}");
    assert_eq!(reply.matches("HTTP/1.1 200").count(), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn malformed_http_and_bare_cr_or_folded_headers_get_a_400_and_reach_nobody() {
    let upstream = chat_upstream().await;
    let proxy = Proxy::start(&upstream.url()).await;
    for request in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-a: b\rinjected: c\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-a: b\r\n injected: c\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nhost: x\r\nbad header: v\r\n\r\n",
        b"GET /v1/mo\0dels HTTP/1.1\r\nhost: x\r\n\r\n",
    ] {
        let reply = raw_exchange(proxy.addr, request).await;
        assert!(
            reply.starts_with("HTTP/1.1 400"),
            "{:?}: {reply}",
            String::from_utf8_lossy(request)
        );
    }
    assert!(upstream.seen().is_empty(), "nothing reached the upstream");
    still_serves(&proxy).await;
    proxy.stop().await;
}

#[tokio::test]
async fn request_heads_over_the_size_limit_get_a_431() {
    let upstream = chat_upstream().await;
    let proxy = Proxy::start_with(&upstream.url(), |c| {
        c.server.max_header_bytes = ByteSize(8 << 10);
    })
    .await;
    let big = "v".repeat(16 << 10);
    let reply = raw_exchange(
        proxy.addr,
        format!("GET /v1/models HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n"),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    assert!(upstream.seen().is_empty());
    still_serves(&proxy).await;
    proxy.stop().await;
}

#[tokio::test]
async fn past_the_connection_limit_new_clients_wait_for_a_free_slot() {
    let upstream = chat_upstream().await;
    let proxy = Proxy::start_with(&upstream.url(), |c| {
        c.server.max_connections = 2;
    })
    .await;
    // Two idle connections take both slots.
    let first = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let _second = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let stats = proxy.app.stats.clone();
    let url = proxy.url(CHAT);
    let third = tokio::spawn(async move { post_json(&url, REQUEST).await });
    eventually("the third connection waits", || {
        stats.snapshot().connection_limit_waits > 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !third.is_finished(),
        "not served while both slots are taken"
    );
    drop(first);
    let answer = tokio::time::timeout(LIMIT, third).await.unwrap().unwrap();
    assert_eq!(answer.status, StatusCode::OK, "served once a slot freed");
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The observer

/// Debug builds only: the fault hook does not exist in release builds.
#[cfg(debug_assertions)]
#[tokio::test]
async fn an_observer_panic_leaves_the_request_untouched_and_is_counted() {
    let upstream = Upstream::start(|seen| {
        if seen.body.windows(6).any(|w| w == b"stream") {
            Reply::sse(fixture("chat_stream_usage.sse"))
        } else {
            Reply::json(200, fixture("chat_response.json"))
        }
    })
    .await;
    let proxy = Proxy::start(&upstream.url()).await;
    let plain = post_json(
        &proxy.url(CHAT),
        r#"{"model":"genai-tap-fault:observer-panic"}"#,
    )
    .await;
    assert_eq!(plain.body, fixture("chat_response.json"));
    let mut body = open_stream(&proxy, "genai-tap-fault:observer-panic").await;
    let mut streamed = Vec::new();
    while let Some(frame) = body.frame().await {
        streamed.extend_from_slice(&frame.unwrap().into_data().unwrap());
    }
    assert_eq!(
        streamed,
        fixture("chat_stream_usage.sse"),
        "the whole stream"
    );
    let stats = proxy.app.stats.clone();
    eventually("both panics are counted", || {
        stats.snapshot().observer_panics == 2
    })
    .await;
    still_serves(&proxy).await;
    let spans = proxy.spans().await;
    assert_eq!(spans.len(), 1, "only the healthy exchange is recorded");
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Not an open proxy

#[tokio::test]
async fn host_forwarded_host_and_authority_cannot_choose_where_a_request_goes() {
    let upstream = Upstream::start(|_| Reply::json(200, "{}")).await;
    let proxy = Proxy::start(&upstream.url()).await;
    let reply = raw_exchange(
        proxy.addr,
        "GET /v1/models HTTP/1.1\r\nhost: evil.invalid\r\nx-forwarded-host: evil.invalid\r\n\
         forwarded: host=evil.invalid\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    // HTTP/2 names the authority in the request itself.
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let request = http::Request::get("http://evil.invalid:443/v1/models")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2, "both went to the configured upstream");
    for s in &seen {
        let host = s
            .headers
            .get("host")
            .map(|h| h.to_str().unwrap().to_owned());
        let authority = s.uri.authority().map(|a| a.to_string());
        let named = host.or(authority).unwrap();
        assert_eq!(named, upstream.addr.to_string(), "the upstream's own name");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn route_prefixes_cannot_be_climbed_out_of() {
    let other = Upstream::start(|_| Reply::json(200, "{}")).await;
    let routed = Upstream::start(|_| Reply::json(200, "{}")).await;
    let proxy = Proxy::start_with(&other.url(), |c| {
        c.routes = vec![genai_tap::config::RouteConfig {
            prefix: "/tenant".into(),
            url: format!("{}/base", routed.url()),
            provider: None,
            strip_prefix: true,
            stream_usage: None,
            auth: None,
        }];
    })
    .await;
    for path in [
        "/tenant/../v1/models",
        "/tenant/%2e%2e/v1/models",
        "/tenant/..%2fv1%2fmodels",
        "/tenant/..%5cv1",
        "/tenant/.%2e/v1",
    ] {
        let reply = raw_exchange(
            proxy.addr,
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
        )
        .await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{path}: {reply}");
    }
    assert!(other.seen().is_empty() && routed.seen().is_empty());
    proxy.stop().await;
}

/// An upstream answer framed two ways at once, `Transfer-Encoding: chunked` and a
/// `Content-Length` that disagrees with it (RFC 9112 §6.3: the chunked framing wins, and the
/// length must not be passed on). Forwarded with the length, the client's answer would be
/// framed by a number the body does not match: cut short or left hanging.
#[tokio::test]
async fn an_answer_framed_by_both_chunks_and_a_length_reaches_the_client_whole() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = fixture("chat_response.json");
    let chunked = {
        let mut out = Vec::new();
        for piece in body.chunks(100) {
            out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            out.extend_from_slice(piece);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    };
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let answer = chunked.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                // Kept alive: a client framed by the length would wait on it for the rest.
                loop {
                    // Each request's body is REQUEST: read until it has all come.
                    let mut seen = Vec::new();
                    while !seen.ends_with(REQUEST.as_bytes()) {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                                content-length: 7\r\ntransfer-encoding: chunked\r\n\r\n";
                    let _ = tcp.write_all(head.as_bytes()).await;
                    let _ = tcp.write_all(&answer).await;
                }
            });
        }
    });
    let proxy = Proxy::start(&format!("http://{addr}")).await;
    let answer = tokio::time::timeout(LIMIT, post_json(&proxy.url(CHAT), REQUEST))
        .await
        .expect("the answer ended");
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, body, "the whole body, as the chunks framed it");
    assert_ne!(
        answer.headers.get(http::header::CONTENT_LENGTH),
        Some(&http::HeaderValue::from_static("7")),
        "the length the chunks overrode is not passed on"
    );
    let span = proxy.one_span().await;
    assert_eq!(attr_i64(&span, GEN_AI_USAGE_OUTPUT_TOKENS), Some(10));
    still_serves(&proxy).await;
    proxy.stop().await;
}
