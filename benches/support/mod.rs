//! What the benchmarks that run the real binary share.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The binary to measure: `GENAI_TAP_BIN`, or this profile's build.
pub fn binary() -> String {
    std::env::var("GENAI_TAP_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_genai-tap").to_owned())
}

/// Starts `genai-tap run` with `args` and `env` (on a clean environment, JSON logs, admin port
/// on any free port) and waits for its ready line: the child and the address it listens on.
#[allow(
    dead_code,
    reason = "the instructions bench always runs the binary under valgrind"
)]
pub fn start_ready(args: &[&str], env: &[(String, String)]) -> (Child, String) {
    start_ready_under(&[], args, env)
}

/// [`start_ready`], the binary run by `wrapper` (a program and its arguments, e.g. valgrind).
pub fn start_ready_under(
    wrapper: &[String],
    args: &[&str],
    env: &[(String, String)],
) -> (Child, String) {
    let mut command = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(binary());
            c
        }
        None => Command::new(binary()),
    };
    let mut child = command
        .arg("run")
        .args(args)
        .env_clear()
        .env("GENAI_TAP_ADMIN__LISTEN", "127.0.0.1:0")
        .env("GENAI_TAP_LOG__FORMAT", "json")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("a ready line before stderr closes")
            .expect("readable stderr");
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if json["fields"]["message"] == "genai-tap ready" {
            break json["fields"]["listen"]
                .as_str()
                .expect("listen field")
                .to_owned();
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr)
}

/// An OTLP/HTTP receiver that decodes every trace export and counts its spans, on a thread
/// and event loop of its own, as a collector in another process would be: decoding a batch of
/// 512 spans takes milliseconds, and on the benches' shared runtime it stalled the mock
/// upstream's workers, a delay that landed on proxied requests alone.
#[allow(dead_code, reason = "the footprint bench exports nowhere")]
pub fn start_receiver(spans: std::sync::Arc<std::sync::atomic::AtomicU64>) -> std::net::SocketAddr {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    use std::sync::atomic::Ordering;

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
    listener
        .set_nonblocking(true)
        .expect("a non-blocking listener");
    let addr = listener.local_addr().expect("receiver address");
    let receiver = async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
        genai_tap::mock::serve_with(
            listener,
            move |req: http::Request<hyper::body::Incoming>| {
                let spans = spans.clone();
                async move {
                    let traces = req.uri().path() == "/v1/traces";
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    if traces && let Ok(export) = ExportTraceServiceRequest::decode(body) {
                        let n: usize = export
                            .resource_spans
                            .iter()
                            .flat_map(|r| &r.scope_spans)
                            .map(|s| s.spans.len())
                            .sum();
                        spans.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    let mut r =
                        http::Response::new(http_body_util::Either::Left(Full::new(Bytes::new())));
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/x-protobuf"),
                    );
                    r
                }
            },
        )
        .await;
    };
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the receiver's runtime")
            .block_on(receiver);
    });
    addr
}
