//! The proxy's cost, side by side: the same workload straight to a fast mock upstream (the
//! floor), through genai-tap with full telemetry to a live OTLP receiver (twice: on its default
//! one serving thread, and on one per core as nginx's workers are), and through nginx as a plain
//! reverse proxy (no telemetry), all on 127.0.0.1 in one run.
//!
//!   bash benches/loadbench              # installs wrk and nginx (Debian) when missing, then:
//!   cargo bench --bench load
//!
//! Prints, per target and concurrency, requests/s, latency p50/p99/p99.9 (wrk), the proxy's CPU
//! per 1,000 requests (its own /proc accounting) and peak RSS, the ratios genai-tap/direct and
//! genai-tap/nginx, and for streams the time to first byte and the delay each chunk picks up
//! on the way. It asserts nothing: these machines are noisy, so it reports.
//!
//! Settings (environment): LOADBENCH_SECS per wrk run (default 5), LOADBENCH_CONCURRENCY
//! (default "1,16,128"), LOADBENCH_STREAMS streams per target (default 200),
//! LOADBENCH_FIRST_TOKEN_MS the upstream's pause before a stream's first chunk in the second
//! stream set, as a model takes to its first token (default 20; the first set has none),
//! LOADBENCH_OPEN_STREAMS held open for the memory figure (default 1000), GENAI_TAP_BIN (the
//! binary to measure; default this build's).

mod support;

use genai_tap::mock::{ChannelBody, MockResponse, serve_with};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const CHAT: &str = "/v1/chat/completions";
/// A path genai-tap forwards without observing (the mock answers any path alike).
const UNOBSERVED: &str = "/v1/files/stream";

/// The path wrk's requests go to; `LOADBENCH_PATH` changes it (e.g. `/v1/models` for a path
/// the proxy forwards without observing).
fn chat_path() -> String {
    std::env::var("LOADBENCH_PATH").unwrap_or_else(|_| "/v1/chat/completions".to_owned())
}
const REQUEST: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello"}],"temperature":0.2,"max_tokens":64}"#;
const RESPONSE: &str = r#"{"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion","created":1741569952,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I assist you today?","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_06737a9306"}"#;
/// Chunks per timed stream, and the upstream's pause between them.
const CHUNKS: usize = 20;
const CHUNK_INTERVAL: Duration = Duration::from_millis(2);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// The mock upstream: a fixed chat completion, or a stream (`?mode=timed` paces chunks and
// stamps each with its send time, `&first=<ms>` pausing before the first as a model does;
// `?mode=hold` sends one chunk and then holds the stream open).

/// Nanoseconds since the bench started: the clock upstream stamps and client readings share.
fn now_ns(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn chunk(i: usize, stamp: u64) -> Bytes {
    Bytes::from(format!(
        "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" word{i}\"}},\"logprobs\":null,\"finish_reason\":null}}],\"t\":{stamp}}}\n\n"
    ))
}

async fn mock_answer(req: Request<Incoming>, epoch: Instant) -> MockResponse {
    let mode = req.uri().query().unwrap_or("").to_owned();
    let _ = req.into_body().collect().await;
    let stream = |rx| {
        let mut r = Response::new(http_body_util::Either::Right(ChannelBody(rx)));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
        r
    };
    let (mode, first_token) = match mode.split_once("&first=") {
        Some((mode, ms)) => (mode, Duration::from_millis(ms.parse().unwrap_or(0))),
        None => (mode.as_str(), Duration::ZERO),
    };
    match mode {
        "mode=timed" => {
            let (tx, rx) = mpsc::channel(CHUNKS + 2);
            let response = stream(rx);
            tokio::spawn(async move {
                for i in 0..CHUNKS {
                    let pause = if i == 0 { first_token } else { CHUNK_INTERVAL };
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                    if tx.send(chunk(i, now_ns(epoch))).await.is_err() {
                        return;
                    }
                }
                let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
            });
            response
        }
        "mode=hold" => {
            let (tx, rx) = mpsc::channel(2);
            let response = stream(rx);
            tokio::spawn(async move {
                let _ = tx.send(chunk(0, now_ns(epoch))).await;
                // Held until the client goes away.
                tx.closed().await;
            });
            response
        }
        _ => {
            let mut r = Response::new(http_body_util::Either::Left(Full::new(Bytes::from_static(
                RESPONSE.as_bytes(),
            ))));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            r
        }
    }
}

async fn start_mock(epoch: Instant) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the mock");
    let addr = listener.local_addr().expect("mock address");
    tokio::spawn(serve_with(listener, move |req| mock_answer(req, epoch)));
    addr
}

// ---------------------------------------------------------------------------------------------
// Processes under test

struct Proc {
    children: Vec<Child>,
    /// Processes whose CPU and memory count (nginx: master and workers).
    pids: Vec<u32>,
}

impl Drop for Proc {
    /// A clean stop (SIGTERM, as nginx's master needs to take its workers down with it: a
    /// SIGKILLed master leaves them running, holding their port and taking CPU from the next
    /// runs), then SIGKILL for whatever is left.
    fn drop(&mut self) {
        let signal = |sig: &str, pid: u32| {
            let _ = Command::new("kill")
                .args([sig, &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        };
        for c in &mut self.children {
            signal("-TERM", c.id());
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for &pid in &self.pids {
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                signal("-KILL", pid);
            }
        }
    }
}

/// Clock ticks of user + system CPU of a process, and its peak RSS in KiB.
fn usage(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let cpu = ticks(11) + ticks(12);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (cpu, hwm)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

impl Proc {
    fn cpu_ticks(&self) -> u64 {
        self.pids.iter().map(|p| usage(*p).0).sum()
    }
    fn peak_rss_kib(&self) -> u64 {
        self.pids.iter().map(|p| usage(*p).1).sum()
    }
}

fn ticks_per_second() -> f64 {
    // Linux's USER_HZ is 100 on every architecture it runs on.
    100.0
}

/// genai-tap with full telemetry to `receiver`; `workers` sets `server.workers` (`None`: its
/// default, one serving thread, as a sidecar runs).
fn start_genai_tap(
    upstream: SocketAddr,
    receiver: SocketAddr,
    workers: Option<usize>,
) -> (Proc, SocketAddr) {
    let mut env = vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
            format!("http://{receiver}"),
        ),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL".to_owned(),
            "http/protobuf".to_owned(),
        ),
        ("OTEL_METRIC_EXPORT_INTERVAL".to_owned(), "5000".to_owned()),
    ];
    if let Some(workers) = workers {
        env.push(("GENAI_TAP_SERVER__WORKERS".to_owned(), workers.to_string()));
    }
    env.extend(extra_env());
    let upstream = format!("http://{upstream}");
    let (child, addr) =
        support::start_ready(&["--listen", "127.0.0.1:0", "--upstream", &upstream], &env);
    let pid = child.id();
    (
        Proc {
            children: vec![child],
            pids: vec![pid],
        },
        addr.parse().expect("the listen address"),
    )
}

/// `LOADBENCH_TAP_ENV="K=V,K=V"`: more environment for genai-tap, to see what a setting costs
/// (e.g. `OTEL_TRACES_EXPORTER=none,OTEL_METRICS_EXPORTER=none`).
fn extra_env() -> Vec<(String, String)> {
    std::env::var("LOADBENCH_TAP_ENV")
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn find(binary: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(binary))
        .find(|p| p.exists())
}

fn start_nginx(upstream: SocketAddr, dir: &Path) -> Option<(Proc, SocketAddr)> {
    let nginx = find("nginx")?;
    let port = free_port();
    let d = dir.display();
    let conf = format!(
        r#"worker_processes auto;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream mock {{ server {upstream}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
        }}
    }}
}}
"#
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).ok()?;
    let child = Command::new(nginx)
        .args([
            "-e",
            &format!("{d}/error.log"),
            "-p",
            &format!("{d}/"),
            "-c",
        ])
        .arg(&path)
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let master = child.id();
    let mut pids = vec![master];
    pids.extend(children_of(master));
    Some((
        Proc {
            children: vec![child],
            pids,
        },
        addr,
    ))
}

fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let after = s.rsplit_once(')')?.1.to_owned();
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// wrk: the load generator for request/response figures

#[derive(Debug, Clone, Copy, Default)]
struct Run {
    requests: u64,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    errors: u64,
    /// CPU milliseconds of the proxy per 1,000 requests (none for direct).
    cpu_ms_per_1k: Option<f64>,
}

const WRK_SCRIPT: &str = r#"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-loadbench"
wrk.body = os.getenv("LOADBENCH_BODY")
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK %d %d %.1f %.1f %.1f %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"#;

fn wrk(url: &str, connections: usize, secs: u64, script: &Path, proc: Option<&Proc>) -> Run {
    let before = proc.map(Proc::cpu_ticks);
    let output = Command::new("wrk")
        .args(["-t", &connections.clamp(1, 2).to_string()])
        .args(["-c", &connections.to_string()])
        .args(["-d", &format!("{secs}s"), "--timeout", "10s", "-s"])
        .arg(script)
        .arg(url)
        .env("LOADBENCH_BODY", REQUEST)
        .output()
        .expect("wrk runs");
    let after = proc.map(Proc::cpu_ticks);
    let text = String::from_utf8_lossy(&output.stdout);
    let Some(line) = text.lines().find_map(|l| l.strip_prefix("WRK ")) else {
        panic!("wrk printed no summary:\n{text}");
    };
    let f: Vec<f64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let (requests, duration_us) = (f[0] as u64, f[1]);
    let cpu_ms_per_1k = before
        .zip(after)
        .map(|(b, a)| (a - b) as f64 / ticks_per_second() * 1e3 / (requests.max(1) as f64 / 1e3));
    Run {
        requests,
        rps: requests as f64 / (duration_us / 1e6),
        p50_us: f[2],
        p99_us: f[3],
        p999_us: f[4],
        errors: f[5] as u64,
        cpu_ms_per_1k,
    }
}

// ---------------------------------------------------------------------------------------------
// Streams: time to first byte and per-chunk delay, measured by an in-process client

#[derive(Debug, Default)]
struct StreamFigures {
    ttfb_us: Vec<f64>,
    chunk_delay_us: Vec<f64>,
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    values[rank.min(values.len() - 1)]
}

/// The upstream's send stamp in a chunk (`"t":<ns>`).
fn stamps(data: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(at) = memchr::memmem::find(rest, b"\"t\":") {
        rest = &rest[at + 4..];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if let Some(v) = std::str::from_utf8(&rest[..digits])
            .ok()
            .and_then(|s| s.parse().ok())
        {
            out.push(v);
        }
    }
    out
}

/// `count` timed streams, 4 at a time; the upstream waits `first_token` before the first chunk.
async fn streams(
    addr: SocketAddr,
    count: usize,
    epoch: Instant,
    first_token: Duration,
) -> StreamFigures {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let body = REQUEST.replace("\"max_tokens\":64", "\"max_tokens\":64,\"stream\":true");
    let mut tasks = Vec::new();
    let workers = 4;
    for w in 0..workers {
        let client = client.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut figures = StreamFigures::default();
            for _ in (w..count).step_by(workers) {
                let request = Request::post(format!(
                    "http://{addr}{CHAT}?mode=timed&first={}",
                    first_token.as_millis()
                ))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.clone())))
                .expect("a request");
                let sent = Instant::now();
                let Ok(response) = client.request(request).await else {
                    continue;
                };
                let mut body = response.into_body();
                let mut first = true;
                while let Some(Ok(frame)) = body.frame().await {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let now = now_ns(epoch);
                    if first {
                        figures.ttfb_us.push(sent.elapsed().as_secs_f64() * 1e6);
                        first = false;
                    }
                    for stamp in stamps(&data) {
                        figures
                            .chunk_delay_us
                            .push(now.saturating_sub(stamp) as f64 / 1e3);
                    }
                }
            }
            figures
        }));
    }
    let mut all = StreamFigures::default();
    for t in tasks {
        if let Ok(f) = t.await {
            all.ttfb_us.extend(f.ttfb_us);
            all.chunk_delay_us.extend(f.chunk_delay_us);
        }
    }
    all
}

/// Opens `count` streams that the upstream holds open (a connection each, as separate apps
/// would), waits for every first chunk, and returns the proxy's RSS growth per stream in KiB:
/// what an open stream costs, its connections included.
async fn held_streams(addr: SocketAddr, path: &str, count: usize, pid: u32) -> f64 {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let before = rss_kib(pid);
    let body = REQUEST.replace("\"max_tokens\":64", "\"max_tokens\":64,\"stream\":true");
    let mut held = Vec::new();
    for _ in 0..count {
        let request = Request::post(format!("http://{addr}{path}?mode=hold"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.clone())))
            .expect("a request");
        held.push(client.request(request));
    }
    let mut bodies = Vec::new();
    for r in held {
        if let Ok(response) = r.await {
            let mut body = response.into_body();
            let _ = body.frame().await;
            bodies.push(body);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    let per = after.saturating_sub(before) as f64 / bodies.len().max(1) as f64;
    drop(bodies);
    per
}

// ---------------------------------------------------------------------------------------------

fn print_runs(name: &str, runs: &[(usize, Run)]) {
    for (c, r) in runs {
        let cpu = r
            .cpu_ms_per_1k
            .map_or_else(|| "—".to_owned(), |v| format!("{v:.1}"));
        println!(
            "| {name} | {c} | {:.0} | {:.0} | {:.0} | {:.0} | {cpu} | {} |",
            r.rps, r.p50_us, r.p99_us, r.p999_us, r.errors
        );
    }
}

fn main() {
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && a != "load")
    {
        return;
    }
    let secs: u64 = env_or("LOADBENCH_SECS", 5);
    let concurrency: Vec<usize> = std::env::var("LOADBENCH_CONCURRENCY")
        .unwrap_or_else(|_| "1,16,128".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let stream_count: usize = env_or("LOADBENCH_STREAMS", 200);
    let first_token = Duration::from_millis(env_or("LOADBENCH_FIRST_TOKEN_MS", 20));
    let open_streams: usize = env_or("LOADBENCH_OPEN_STREAMS", 1000);
    if find("wrk").is_none() {
        eprintln!(
            "loadbench: wrk not found; run `bash benches/loadbench` (installs wrk and nginx)"
        );
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let epoch = Instant::now();
    let spans = Arc::new(AtomicU64::new(0));
    let (mock, receiver) = runtime.block_on(async {
        (
            start_mock(epoch).await,
            support::start_receiver(spans.clone()),
        )
    });
    let dir = std::env::temp_dir().join(format!("genai-tap-loadbench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let script = dir.join("post.lua");
    std::fs::File::create(&script)
        .and_then(|mut f| f.write_all(WRK_SCRIPT.as_bytes()))
        .expect("the wrk script");

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (tap, tap_addr) = start_genai_tap(mock, receiver, None);
    // nginx runs a worker per core (`worker_processes auto`); genai-tap's default is one serving
    // thread. The like-for-like is genai-tap with as many (`server.workers = 0`: one per core).
    let (tap_per_core, tap_per_core_addr) = start_genai_tap(mock, receiver, Some(0));
    let nginx = start_nginx(mock, &dir);
    if nginx.is_none() {
        eprintln!("loadbench: nginx not found or did not start; its column is left out");
    }
    println!("genai-tap: {}", support::binary());
    println!(
        "machine: {cores} cores; each run {secs} s; wrk, mock upstream, OTLP receiver and the proxy share them; \
         genai-tap serves on one thread (its default), `genai-tap ×{cores}` on one per core, as nginx's \
         workers do; `genai-tap, not observed` is the one-thread process on a path it forwards \
         without observing (the same requests and answers): forwarding alone\n"
    );

    let per_core = format!("genai-tap ×{cores}");
    let mut results: Vec<(&str, Vec<(usize, Run)>)> = Vec::new();
    let mut targets: Vec<(&str, SocketAddr, Option<&Proc>)> = vec![
        ("direct", mock, None),
        ("genai-tap", tap_addr, Some(&tap)),
        (&per_core, tap_per_core_addr, Some(&tap_per_core)),
    ];
    if let Some((proc, addr)) = &nginx {
        targets.push(("nginx", *addr, Some(proc)));
    }
    let is_tap = |name: &str| name.starts_with("genai-tap");
    let path = chat_path();
    // The same requests through genai-tap on a path it forwards without observing: what
    // forwarding through hyper costs by itself, the floor observation adds to.
    const FORWARDING_ONLY: &str = "genai-tap, not observed";
    let mut wrk_targets: Vec<(&str, SocketAddr, Option<&Proc>, &str)> = targets
        .iter()
        .map(|&(name, addr, proc)| (name, addr, proc, path.as_str()))
        .collect();
    let after_tap = wrk_targets
        .iter()
        .position(|t| t.0 == "genai-tap")
        .map_or(0, |i| i + 1);
    wrk_targets.insert(
        after_tap,
        (FORWARDING_ONLY, tap_addr, Some(&tap), UNOBSERVED),
    );
    // Requests that make spans: through genai-tap on the observed path.
    let spanned = |name: &str| is_tap(name) && name != FORWARDING_ONLY;
    let mut tap_requests = 0;
    // Warm every path (pools, page cache) before measuring.
    for (name, addr, proc, path) in &wrk_targets {
        let run = wrk(&format!("http://{addr}{path}"), 16, 1, &script, *proc);
        if spanned(name) {
            tap_requests += run.requests;
        }
    }
    for (name, addr, proc, path) in &wrk_targets {
        let mut runs = Vec::new();
        for &c in &concurrency {
            let run = wrk(&format!("http://{addr}{path}"), c, secs, &script, *proc);
            if spanned(name) {
                tap_requests += run.requests;
            }
            runs.push((c, run));
        }
        results.push((name, runs));
    }
    // Spans leave in batches (every 5 s at most): let the last one land.
    std::thread::sleep(Duration::from_secs(6));
    let exported = spans.load(Ordering::Relaxed);

    println!("## Small non-streaming chat completion (wrk, POST, keep-alive)\n");
    println!(
        "| target | connections | requests/s | p50 µs | p99 µs | p99.9 µs | CPU ms / 1k req | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, runs) in &results {
        print_runs(name, runs);
    }
    let get = |name: &str| results.iter().find(|(n, _)| *n == name).map(|(_, r)| r);
    println!(
        "\n| target | connections | / direct rps | added p50 µs | added p99 µs | / nginx rps | nginx p50 µs | CPU µs / req |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, proxied) in results.iter().filter(|(n, _)| is_tap(n)) {
        let Some(direct) = get("direct") else { break };
        for (i, (c, t)) in proxied.iter().enumerate() {
            let d = direct[i].1;
            let n = get("nginx").map(|n| n[i].1);
            println!(
                "| {name} | {c} | {:.2} | {:.0} | {:.0} | {} | {} | {} |",
                t.rps / d.rps,
                t.p50_us - d.p50_us,
                t.p99_us - d.p99_us,
                n.map_or("—".into(), |n| format!("{:.2}", t.rps / n.rps)),
                n.map_or("—".into(), |n| format!("{:.0}", n.p50_us)),
                t.cpu_ms_per_1k.map_or("—".into(), |v| format!("{v:.1}")),
            );
        }
    }

    println!(
        "\n## Streams ({stream_count} per target, {CHUNKS} chunks {} ms apart, 4 at a time)\n",
        CHUNK_INTERVAL.as_millis()
    );
    println!(
        "The first chunk comes at once (the hop's own cost), then after {} ms (a model's first \
         token, at the fast end: what a user waits for).\n",
        first_token.as_millis()
    );
    println!(
        "| target | TTFB p50 µs | TTFB p99 µs | chunk delay p50 µs | chunk delay p99 µs | TTFB p50 µs, first token at {0} ms | TTFB p99 µs, at {0} ms |",
        first_token.as_millis()
    );
    println!("|---|---|---|---|---|---|---|");
    let mut stream_rows = Vec::new();
    for (name, addr, _) in &targets {
        let mut f = runtime.block_on(streams(*addr, stream_count, epoch, Duration::ZERO));
        let mut m = runtime.block_on(streams(*addr, stream_count, epoch, first_token));
        let row = [
            percentile(&mut f.ttfb_us, 50.0),
            percentile(&mut f.ttfb_us, 99.0),
            percentile(&mut f.chunk_delay_us, 50.0),
            percentile(&mut f.chunk_delay_us, 99.0),
            percentile(&mut m.ttfb_us, 50.0),
            percentile(&mut m.ttfb_us, 99.0),
        ];
        println!(
            "| {name} | {:.0} | {:.0} | {:.1} | {:.1} | {:.0} | {:.0} |",
            row[0], row[1], row[2], row[3], row[4], row[5]
        );
        stream_rows.push((*name, row));
    }
    if let Some((_, floor)) = stream_rows.iter().find(|(n, _)| *n == "direct") {
        for (name, row) in stream_rows.iter().filter(|(n, _)| *n != "direct") {
            println!(
                "\n{name}: TTFB p50 ratio {:.3} vs direct ({:.4} with the first token at {} ms: \
                 {:.0} µs added); added per-chunk delay p50 {:.1} µs, p99 {:.1} µs",
                row[0] / floor[0],
                row[4] / floor[4],
                first_token.as_millis(),
                row[4] - floor[4],
                row[2] - floor[2],
                row[3] - floor[3]
            );
        }
    }

    // Each through a fresh process (freed memory is not returned at once, so growth after
    // the load above would understate it): streams on a path the proxy observes, then the same
    // on a path it forwards without observing, which is what the connections cost; the
    // difference is what observation holds per stream.
    let held = |path: &str| {
        let (fresh, addr) = start_genai_tap(mock, receiver, None);
        runtime.block_on(held_streams(addr, path, open_streams, fresh.pids[0]))
    };
    let per_stream = held(CHAT);
    let unobserved = held(UNOBSERVED);
    println!("\n## Memory\n");
    println!(
        "genai-tap: peak RSS {:.1} MiB over the whole run; {per_stream:.1} KiB per open stream \
         ({open_streams} held open, capture off), of which observation {:.1} KiB (the same \
         streams unobserved: {unobserved:.1} KiB, the proxy's two connections)",
        tap.peak_rss_kib() as f64 / 1024.0,
        per_stream - unobserved
    );
    println!(
        "{per_core}: peak RSS {:.1} MiB over the whole run",
        tap_per_core.peak_rss_kib() as f64 / 1024.0
    );
    if let Some((proc, _)) = &nginx {
        println!(
            "nginx (master + workers): peak RSS {:.1} MiB",
            proc.peak_rss_kib() as f64 / 1024.0
        );
    }
    println!(
        "\ntelemetry: the OTLP receiver counted {exported} spans for the {tap_requests} requests wrk \
         completed through genai-tap (connections wrk cut at the end of a run add cancelled ones)"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
