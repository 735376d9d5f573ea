//! What a sidecar costs its pod: start-up time (exec to ready line) and resident memory idle
//! and after traffic, of the real binary. Run with `cargo bench --bench footprint`; it prints
//! figures, it asserts nothing (these machines are noisy).
//!
//! `GENAI_TAP_BIN=target/static/genai-tap-x86_64 cargo bench --bench footprint` measures the
//! static binary the container image ships (built by `.ci/build-static`) instead of this
//! profile's build.

mod support;

use std::process::Child;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const STARTS: usize = 20;
const REQUESTS: usize = 2_000;
const CONCURRENCY: usize = 8;

struct Running {
    child: Child,
    addr: String,
    started_in: Duration,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the proxy as a sidecar would run it: OTLP export configured (to a port nobody
/// listens on, so exports fail and are counted), JSON logs.
fn start(upstream: &str) -> Running {
    let begun = Instant::now();
    let env = [(
        "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
        "http://127.0.0.1:9".to_owned(),
    )];
    let (child, addr) =
        support::start_ready(&["--listen", "127.0.0.1:0", "--upstream", upstream], &env);
    Running {
        child,
        addr,
        started_in: begun.elapsed(),
    }
}

/// (VmRSS, VmHWM) in KiB, from /proc.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes --bench; a filter argument that is not ours means skip.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && a != "footprint")
    {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let mock = runtime
        .block_on(genai_tap::mock::spawn(
            genai_tap::mock::MockConfig::default(),
        ))
        .expect("the mock upstream binds");
    let upstream = format!("http://{mock}");
    println!("binary: {}", support::binary());

    let times: Vec<Duration> = (0..STARTS).map(|_| start(&upstream).started_in).collect();
    println!(
        "start-up (exec to ready line, {STARTS} runs): min {:.1} ms, median {:.1} ms, max {:.1} ms",
        ms(*times.iter().min().expect("runs")),
        ms(median(times.clone())),
        ms(*times.iter().max().expect("runs")),
    );

    let running = start(&upstream);
    std::thread::sleep(Duration::from_secs(1));
    let (idle, _) = memory(running.child.id());
    println!("idle RSS after 1 s: {:.1} MiB", idle as f64 / 1024.0);

    let url = format!("http://{}/v1/chat/completions", running.addr);
    let began = Instant::now();
    runtime.block_on(load(&url));
    let elapsed = began.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let (after, peak) = memory(running.child.id());
    println!(
        "after {REQUESTS} chat requests ({CONCURRENCY} at a time, half streamed, {:.0} req/s): \
         RSS {:.1} MiB, peak {:.1} MiB",
        REQUESTS as f64 / elapsed.as_secs_f64(),
        after as f64 / 1024.0,
        peak as f64 / 1024.0,
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn load(url: &str) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut tasks = Vec::new();
    for worker in 0..CONCURRENCY {
        let client = client.clone();
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            for i in (worker..REQUESTS).step_by(CONCURRENCY) {
                let body = if i % 2 == 0 {
                    r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"count to ten"}]}"#
                } else {
                    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"count to ten"}]}"#
                };
                let request = http::Request::post(&url)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(body.as_bytes())))
                    .expect("a request");
                let Ok(response) = client.request(request).await else {
                    continue;
                };
                let _ = response.into_body().collect().await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}
