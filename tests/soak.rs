//! A bounded soak: the real binary under mixed traffic (plain and streamed chat, embeddings,
//! clients that walk away mid-stream) for `GENAI_TAP_SOAK_SECS` seconds (default 60; longer by
//! hand). Resident memory and open file descriptors stay flat after warm-up, and every request
//! gets exactly one span.
//!
//! `GENAI_TAP_SOAK_SECS=600 cargo test --release --test soak -- --nocapture` prints the samples.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use support::process::{run_exporting, terminate};

const WORKERS: usize = 8;
/// RSS may wander this much above its post-warm-up level (allocator noise), no more.
const RSS_SLACK_KIB: u64 = 4 << 10;
/// Pooled upstream connections come and go; a leak grows without bound.
const FD_SLACK: usize = 8;

fn seconds() -> u64 {
    std::env::var("GENAI_TAP_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// xorshift64: a reproducible mix without another crate.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

async fn worker(
    addr: std::net::SocketAddr,
    seed: u64,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut mix = Mix(seed);
    while !stop.load(Ordering::Relaxed) {
        let roll = mix.next() % 10;
        let (path, body) = match roll {
            0..=3 => (
                "/v1/chat/completions",
                r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"soak"}]}"#,
            ),
            4..=7 | 9 => (
                "/v1/chat/completions",
                r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"soak"}]}"#,
            ),
            _ => (
                "/v1/embeddings",
                r#"{"model":"text-embedding-3-small","input":"soak"}"#,
            ),
        };
        let request = http::Request::post(format!("http://{addr}{path}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("a request");
        let response = tokio::time::timeout(support::LIMIT, client.request(request))
            .await
            .expect("an answer in time")
            .expect("a response");
        sent.fetch_add(1, Ordering::Relaxed);
        let mut body = response.into_body();
        if roll == 9 {
            // The client walks away after the first chunk.
            let _ = body.frame().await;
            continue;
        }
        tokio::time::timeout(support::LIMIT, body.collect())
            .await
            .expect("a body in time")
            .expect("a complete body");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_descriptors_stay_flat_and_every_request_gets_one_span() {
    let total = Duration::from_secs(seconds());
    let warm_up = total / 3;
    let (receiver, mut running) = run_exporting(
        "grpc",
        &[
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "65536"),
        ],
    )
    .await;
    let pid = running.child.id();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|i| {
            tokio::spawn(worker(
                running.addr,
                0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1),
                stop.clone(),
                sent.clone(),
            ))
        })
        .collect();

    let started = Instant::now();
    tokio::time::sleep(warm_up).await;
    let (rss_warm, fds_warm) = (rss_kib(pid), open_fds(pid));
    let mut rss_max = rss_warm;
    while started.elapsed() < total {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = rss_kib(pid);
        rss_max = rss_max.max(rss);
        println!(
            "t={:>4}s rss={rss} KiB fds={} requests={}",
            started.elapsed().as_secs(),
            open_fds(pid),
            sent.load(Ordering::Relaxed)
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("a worker that did not panic");
    }
    let fds_end = open_fds(pid);
    println!(
        "rss: {rss_warm} KiB after warm-up, {rss_max} KiB at most; fds: {fds_warm} -> {fds_end}"
    );
    assert!(
        rss_max <= rss_warm + RSS_SLACK_KIB,
        "RSS grew from {rss_warm} KiB to {rss_max} KiB after warm-up"
    );
    assert!(
        fds_end <= fds_warm + FD_SLACK,
        "open descriptors grew from {fds_warm} to {fds_end}"
    );

    assert!(terminate(&mut running.child).success(), "exit 0");
    let requests = sent.load(Ordering::Relaxed);
    let spans = receiver.spans();
    let ids: HashSet<Vec<u8>> = spans.iter().map(|s| s.span.span_id.clone()).collect();
    println!("{requests} requests, {} spans", spans.len());
    assert!(requests > 0);
    assert_eq!(ids.len(), spans.len(), "no span exported twice");
    assert_eq!(spans.len() as u64, requests, "one span per request");
}
