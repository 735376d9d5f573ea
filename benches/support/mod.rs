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

/// A protobuf message's fields: `(number, wire type, payload)`, the payload of a
/// length-delimited field being its bytes; `None` past the first malformed byte.
fn fields(mut bytes: &[u8]) -> impl Iterator<Item = Option<(u64, u8, &[u8])>> {
    fn varint(bytes: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = bytes.split_first()?;
            *bytes = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }
    let mut broken = false;
    std::iter::from_fn(move || {
        if broken || bytes.is_empty() {
            return None;
        }
        let field = (|| {
            let tag = varint(&mut bytes)?;
            let wire = (tag & 7) as u8;
            let size = match wire {
                0 => {
                    varint(&mut bytes)?;
                    0
                }
                1 => 8,
                2 => usize::try_from(varint(&mut bytes)?).ok()?,
                5 => 4,
                _ => return None,
            };
            let payload = bytes.get(..size)?;
            bytes = &bytes[size..];
            Some((tag >> 3, wire, payload))
        })();
        broken = field.is_none();
        Some(field)
    })
}

/// The spans in an `ExportTraceServiceRequest`, counted by walking its framing down to
/// `ScopeSpans.spans` without decoding a span; `None` for a body that is not well framed.
fn count_spans(body: &[u8]) -> Option<u64> {
    fn nested(bytes: &[u8], want: u64) -> Option<Vec<&[u8]>> {
        let mut out = Vec::new();
        for field in fields(bytes) {
            let (number, wire, payload) = field?;
            if number == want && wire == 2 {
                out.push(payload);
            }
        }
        Some(out)
    }
    let mut spans = 0;
    for resource in nested(body, 1)? {
        for scope in nested(resource, 2)? {
            spans += nested(scope, 2)?.len() as u64;
        }
    }
    Some(spans)
}

/// An OTLP/HTTP receiver that counts every trace export's spans, on a thread and event loop
/// of its own, as a collector in another process would be. It walks the protobuf framing
/// rather than decoding: decoding a batch of 512 spans into owned structs took milliseconds of
/// the two cores the proxy, the mock and wrk share, a stall only proxied requests met (on the
/// benches' shared runtime it stalled the mock upstream's workers too). The test suite's
/// receiver decodes everything (`tests/support/otlp.rs`).
#[allow(dead_code, reason = "the footprint bench exports nowhere")]
pub fn start_receiver(spans: std::sync::Arc<std::sync::atomic::AtomicU64>) -> std::net::SocketAddr {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
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
                    if traces && let Some(n) = count_spans(&body) {
                        spans.fetch_add(n, Ordering::Relaxed);
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
