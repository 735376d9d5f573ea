//! Instructions per proxied request, counted by valgrind's callgrind: a figure that repeats
//! where timings do not (the same binary and inputs give the same count within a fraction of a
//! percent, whatever else the machine is doing), so a change can be judged by one run each.
//!
//!   cargo bench --bench instructions          # needs valgrind; says so and skips without it
//!   GENAI_TAP_BIN=path/to/other/genai-tap cargo bench --bench instructions   # A/B
//!
//! Runs the real binary under callgrind five times, each to a clean exit on SIGTERM: with no
//! traffic (start-up and shutdown), with N chat completions, N more of a long conversation, N
//! streamed ones and N streamed Responses API calls, sent one after another on one connection
//! to the crate's mock upstream, every span exported over OTLP/HTTP to a live receiver before
//! the exit. (run − idle) / N is the figure. User-space
//! instructions only: the kernel's share (the socket calls) is not in it. Settings:
//! INSTRUCTIONS_REQUESTS (default 1000); INSTRUCTIONS_KEEP=dir keeps each run's callgrind file
//! there, for `callgrind_annotate --inclusive=yes`. It asserts nothing.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello"}],"temperature":0.2,"max_tokens":64}"#;
const STREAM: &str = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"count to ten"}]}"#;
const RESPONSES_STREAM: &str = r#"{"model":"gpt-4.1","stream":true,"input":"count to ten"}"#;
const CHAT_PATH: &str = "/v1/chat/completions";
const RESPONSES_PATH: &str = "/v1/responses";

/// valgrind's path, from this process's PATH (the binary runs with a cleared environment).
fn valgrind() -> Option<String> {
    std::env::var("PATH").ok()?.split(':').find_map(|dir| {
        let path = std::path::Path::new(dir).join("valgrind");
        path.is_file().then(|| path.display().to_string())
    })
}

/// Total instructions of one run of the binary serving `requests` copies of `body`.
fn count(
    valgrind: &str,
    runtime: &tokio::runtime::Runtime,
    upstream: &str,
    receiver: &str,
    spans: &AtomicU64,
    (path, body): (&str, &'static str),
    requests: u64,
) -> u64 {
    let out = std::env::temp_dir().join(format!(
        "genai-tap-callgrind-{}-{requests}.out",
        std::process::id()
    ));
    let wrapper = [
        valgrind.to_owned(),
        "--tool=callgrind".to_owned(),
        format!("--callgrind-out-file={}", out.display()),
        "--log-file=/dev/null".to_owned(),
    ];
    let env = [
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
            receiver.to_owned(),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "100".to_owned()),
    ];
    let (mut child, addr) = support::start_ready_under(
        &wrapper,
        &["--listen", "127.0.0.1:0", "--upstream", upstream],
        &env,
    );
    let before = spans.load(Ordering::Relaxed);
    runtime.block_on(send(&format!("http://{addr}{path}"), body, requests));
    // Every span exported inside the count (bounded: a broken export shows as a short count).
    let deadline = Instant::now() + Duration::from_secs(60);
    while spans.load(Ordering::Relaxed) < before + requests && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let exported = spans.load(Ordering::Relaxed) - before;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    if let Ok(dir) = std::env::var("INSTRUCTIONS_KEEP") {
        let kept =
            std::path::Path::new(&dir).join(format!("callgrind-{requests}-{}.out", body.len()));
        // Copied, not renamed: the temp dir is often another filesystem.
        if std::fs::create_dir_all(&dir).is_ok() && std::fs::copy(&out, &kept).is_ok() {
            println!("  kept {} (callgrind_annotate it)", kept.display());
        }
    }
    let _ = std::fs::remove_file(&out);
    if exported < requests {
        println!("  (only {exported} of {requests} spans reached the receiver)");
    }
    text.lines()
        .find_map(|l| l.strip_prefix("totals: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn send(url: &str, body: &'static str, requests: u64) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    for _ in 0..requests {
        let request = http::Request::post(url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("a request");
        if let Ok(response) = client.request(request).await {
            let _ = response.into_body().collect().await;
        }
    }
}

fn main() {
    // `cargo bench` passes --bench; a filter argument that is not ours means skip.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && a != "instructions")
    {
        return;
    }
    let Some(valgrind) = valgrind() else {
        println!("valgrind is not installed: skipping (apt-get install valgrind)");
        return;
    };
    let requests: u64 = std::env::var("INSTRUCTIONS_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let spans = Arc::new(AtomicU64::new(0));
    let (mock, receiver) = runtime.block_on(async {
        let mock = genai_tap::mock::spawn(genai_tap::mock::MockConfig::default())
            .await
            .expect("the mock upstream binds");
        (mock, support::start_receiver(spans.clone()))
    });
    let upstream = format!("http://{mock}");
    let receiver = format!("http://{receiver}");
    println!("binary: {}", support::binary());
    let run = |call, n| count(&valgrind, &runtime, &upstream, &receiver, &spans, call, n);
    let idle = run((CHAT_PATH, CHAT), 0);
    println!("start-up and shutdown: {idle} instructions");
    // A long conversation (40 turns, 34 KB), as agents send it: what the request's size costs.
    let long: &'static str = String::leak(
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/chat_request_long.json"
        ))
        .expect("fixture"),
    );
    for (name, path, body) in [
        ("chat completion", CHAT_PATH, CHAT),
        ("chat completion, a 34 KB conversation", CHAT_PATH, long),
        ("streamed chat completion", CHAT_PATH, STREAM),
        (
            "streamed response (Responses API)",
            RESPONSES_PATH,
            RESPONSES_STREAM,
        ),
    ] {
        let total = run((path, body), requests);
        let per = total.saturating_sub(idle) as f64 / requests as f64;
        println!("{name}: {per:.0} instructions per request ({requests} requests, spans exported)");
    }
}
