//! The built `genai-tap` binary: real process, real signals, real OTLP over the wire.

mod support;

use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as OtlpStatus;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::otlp::{OtlpReceiver, int, string, value};

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use support::process::{command, run, run_exporting, sigterm, terminate, wait};
use support::{Chunk, LIMIT, Reply, Upstream, client, fixture, post_json, send};

async fn export_over(protocol: &str) {
    let (receiver, mut running) = run_exporting(
        protocol,
        &[
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-otlp-key=k-123"),
            ("OTEL_SERVICE_NAME", "e2e-app"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment.name=test",
            ),
            // Long enough that only the flush on exit can deliver the spans.
            ("OTEL_BSP_SCHEDULE_DELAY", "60000"),
        ],
    )
    .await;
    let url = format!("http://{}/v1/chat/completions", running.addr);
    let plain = post_json(
        &url,
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"one two three"}]}"#,
    )
    .await;
    assert_eq!(plain.status, 200);
    let streamed = post_json(
        &url,
        r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#,
    )
    .await;
    assert!(streamed.body.ends_with(b"data: [DONE]\n\n"));
    let limited = post_json(&url, r#"{"model":"mock-rate-limited","messages":[]}"#).await;
    assert_eq!(limited.status, 429);

    assert!(
        terminate(&mut running.child).success(),
        "exit 0 after SIGTERM"
    );
    let logs: Vec<String> = running.stderr.try_iter().collect();
    assert!(
        logs.iter().any(|l| l.contains("shutdown requested")),
        "{logs:#?}"
    );

    let received = receiver.received();
    assert!(!received.is_empty(), "spans were exported on exit");
    for r in &received {
        assert_eq!(
            r.transport,
            if protocol == "grpc" { "grpc" } else { "http" }
        );
        assert_eq!(r.headers.get("x-otlp-key").unwrap(), "k-123");
    }
    let spans = receiver.spans();
    assert_eq!(spans.len(), 3, "{spans:#?}");
    for s in &spans {
        assert_eq!(
            string(&s.resource, "service.name").as_deref(),
            Some("e2e-app")
        );
        assert_eq!(
            string(&s.resource, "deployment.environment.name").as_deref(),
            Some("test")
        );
        assert_eq!(s.scope_name, "genai-tap");
        assert_eq!(s.span.kind, SpanKind::Client as i32);
        assert_eq!(
            string(&s.span.attributes, "gen_ai.operation.name").as_deref(),
            Some("chat")
        );
        assert_eq!(
            string(&s.span.attributes, "gen_ai.provider.name").as_deref(),
            Some("openai")
        );
        assert!(s.span.end_time_unix_nano >= s.span.start_time_unix_nano);
    }
    let by_model = |m: &'static str| {
        spans.iter().filter(move |s| {
            string(&s.span.attributes, "gen_ai.request.model").as_deref() == Some(m)
        })
    };
    let ok: Vec<_> = by_model("gpt-4o-mini").collect();
    assert_eq!(ok.len(), 2);
    assert!(ok.iter().all(|s| s.span.name == "chat gpt-4o-mini"));
    let plain_span = ok
        .iter()
        .find(|s| value(&s.span.attributes, "gen_ai.request.stream").is_none())
        .unwrap();
    assert_eq!(
        int(&plain_span.span.attributes, "gen_ai.usage.input_tokens"),
        Some(3)
    );
    let limited = by_model("mock-rate-limited").next().unwrap();
    assert_eq!(
        string(&limited.span.attributes, "error.type").as_deref(),
        Some("429")
    );
    let status = limited.span.status.clone().unwrap();
    assert_eq!(status.code, OtlpStatus::Error as i32);
    assert_eq!(status.message, "rate_limit_exceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_serving_threads_share_the_port_and_every_span_is_exported_on_sigterm() {
    let (receiver, mut running) = run_exporting(
        "http/protobuf",
        &[
            ("GENAI_TAP_SERVER__WORKERS", "3"),
            ("OTEL_BSP_SCHEDULE_DELAY", "60000"),
        ],
    )
    .await;
    let url = format!("http://{}/v1/chat/completions", running.addr);
    // A connection each, at once, so the threads accepting from the one listener all serve.
    let requests: Vec<_> = (0..12)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                post_json(
                    &url,
                    format!(r#"{{"model":"gpt-4o-mini","messages":[],"seed":{i}}}"#),
                )
                .await
                .status
            })
        })
        .collect();
    for r in requests {
        assert_eq!(r.await.unwrap(), 200);
    }
    assert!(
        terminate(&mut running.child).success(),
        "exit 0 after SIGTERM"
    );
    let spans = receiver.spans();
    let mut seeds: Vec<i64> = spans
        .iter()
        .filter_map(|s| int(&s.span.attributes, "gen_ai.request.seed"))
        .collect();
    seeds.sort_unstable();
    assert_eq!(seeds, (0..12).collect::<Vec<_>>(), "one span per request");
}

/// Each thread of `pid` by name (as the kernel truncates it) with its scheduling policy.
#[cfg(target_os = "linux")]
fn thread_policies(pid: u32) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let stat = std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap();
        // `tid (comm) state …`: the comm may hold spaces, so split at its closing parenthesis;
        // the policy is field 41, the 38th after the comm.
        let (head, rest) = stat.rsplit_once(") ").unwrap();
        let name = head.split_once(" (").unwrap().1.to_owned();
        let policy = rest.split_whitespace().nth(38).unwrap().parse().unwrap();
        out.push((name, policy));
    }
    out
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_export_priority_moves_only_the_export_thread_to_sched_idle_and_spans_still_go_out() {
    let (receiver, mut running) = run_exporting(
        "http/protobuf",
        &[
            ("GENAI_TAP_TELEMETRY__EXPORT_PRIORITY", "idle"),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    )
    .await;
    let url = format!("http://{}/v1/chat/completions", running.addr);
    let answer = post_json(&url, r#"{"model":"gpt-4o-mini","messages":[]}"#).await;
    assert_eq!(answer.status, 200);
    // Exported on the schedule, by the idle thread, before any flush on exit.
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.spans().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(receiver.spans().len(), 1, "the span went out while running");

    const SCHED_OTHER: u32 = 0;
    const SCHED_IDLE: u32 = 5;
    let policies = thread_policies(running.child.id());
    let of = |prefix: &str| -> Vec<u32> {
        policies
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, policy)| *policy)
            .collect()
    };
    assert_eq!(of("genai-tap-expor"), [SCHED_IDLE], "{policies:?}");
    assert_eq!(of("genai-tap-0"), [SCHED_OTHER], "{policies:?}");
    assert!(
        policies
            .iter()
            .filter(|(name, _)| !name.starts_with("genai-tap-expor"))
            .all(|(_, policy)| *policy == SCHED_OTHER),
        "only the export thread is lowered: {policies:?}"
    );
    assert!(terminate(&mut running.child).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_exports_spans_over_otlp_grpc_and_flushes_on_sigterm() {
    export_over("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_exports_spans_over_otlp_http_protobuf_and_flushes_on_sigterm() {
    export_over("http/protobuf").await;
}

async fn events_over(protocol: &str) {
    let receiver = OtlpReceiver::start().await;
    let mock = genai_tap::mock::spawn(genai_tap::mock::MockConfig::default())
        .await
        .unwrap();
    let endpoint = format!("http://{}", receiver.addr);
    let mut running = run(
        &format!("http://{mock}"),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            (
                "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
                "SPAN_AND_EVENT",
            ),
        ],
    );
    let url = format!("http://{}/v1/chat/completions", running.addr);
    post_json(
        &url,
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Bonjour"}]}"#,
    )
    .await;
    assert!(terminate(&mut running.child).success());

    let spans = receiver.spans();
    assert_eq!(spans.len(), 1);
    let span = &spans[0].span;
    let input = string(&span.attributes, "gen_ai.input.messages").unwrap();
    assert!(input.contains("Bonjour"), "JSON text on the span: {input}");
    let events = receiver.log_records();
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_eq!(
        event.event_name,
        "gen_ai.client.inference.operation.details"
    );
    assert_eq!(event.trace_id, span.trace_id, "in the span's context");
    assert_eq!(event.span_id, span.span_id);
    assert_eq!(
        string(&event.attributes, "gen_ai.request.model").as_deref(),
        Some("gpt-4o")
    );
    match value(&event.attributes, "gen_ai.input.messages") {
        Some(any_value::Value::ArrayValue(messages)) => {
            let first = format!("{:?}", messages.values[0]);
            assert!(
                first.contains("Bonjour") && first.contains("KvlistValue"),
                "{first}"
            );
        }
        other => panic!("structured content on the event: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_content_is_exported_as_an_event_over_otlp_grpc() {
    events_over("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_content_is_exported_as_an_event_over_otlp_http() {
    events_over("http/protobuf").await;
}

#[test]
fn demo_prints_one_json_span_per_genai_request() {
    let out = command(&["demo"], &[]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let spans: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON span"))
        .collect();
    assert_eq!(spans.len(), 4, "{stdout}");
    assert!(
        spans
            .iter()
            .all(|s| s["name"].as_str().unwrap().starts_with("chat "))
    );
    assert!(spans.iter().any(|s| s["attributes"]["error.type"] == "429"));
    assert!(
        spans
            .iter()
            .any(|s| s["attributes"]["gen_ai.request.stream"] == true)
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("HTTP 429"), "{stderr}");
    assert!(
        !stdout.contains("sk-demo"),
        "credentials never reach an exporter"
    );
}

#[test]
fn check_config_prints_the_effective_configuration_masked() {
    let out = command(
        &["check-config", "--upstream", "https://api.openai.com"],
        &[
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=hunter2"),
            ("GENAI_TAP_UPSTREAM__AUTH__KEY", "sk-canary-7d1e"),
        ],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("url = \"https://api.openai.com\""),
        "{stdout}"
    );
    assert!(stdout.contains("api-key = \"****\""), "{stdout}");
    assert!(!stdout.contains("hunter2"));
    assert!(
        stdout.contains("[upstream.auth]\nkey = \"****\""),
        "{stdout}"
    );
    assert!(!stdout.contains("sk-canary"));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("sk-canary"));
}

#[test]
fn bad_configuration_stops_start_up_naming_the_key() {
    for (args, env, key) in [
        (
            vec!["check-config"],
            vec![("GENAI_TAP_UPSTREAM__URL", "ftp://nope")],
            "upstream.url",
        ),
        (vec!["run"], vec![], "upstream.url"),
        (
            vec!["run", "--upstream", "http://127.0.0.1:1"],
            vec![("OTEL_BSP_MAX_QUEUE_SIZE", "lots")],
            "OTEL_BSP_MAX_QUEUE_SIZE",
        ),
        (
            vec!["check-config", "--upstream", "http://127.0.0.1:1"],
            vec![("GENAI_TAP_UPSTREAM__CA_FILE", "/nonexistent/ca.pem")],
            "/nonexistent/ca.pem",
        ),
        (
            vec!["check-config", "--upstream", "http://127.0.0.1:1"],
            vec![("GENAI_TAP_UPSTREAM__AUTH__KEY_FILE", "/nonexistent/key")],
            "upstream.auth.key_file",
        ),
        (
            vec!["check-config", "--upstream", "http://127.0.0.1:1"],
            vec![("GENAI_TAP_UPSTREAM__AUTH__HEADER", "x-key")],
            "upstream.auth.header",
        ),
        (
            vec!["check-config", "--upstream", "http://127.0.0.1:1"],
            vec![("GENAI_TAP_SERVER__TLS__CERT_FILE", "/nonexistent/tls.crt")],
            "server.tls",
        ),
        (
            vec!["check-config", "--upstream", "http://127.0.0.1:1"],
            vec![
                ("GENAI_TAP_SERVER__TLS__CERT_FILE", "/nonexistent/tls.crt"),
                ("GENAI_TAP_SERVER__TLS__KEY_FILE", "/nonexistent/tls.key"),
            ],
            "server.tls.cert_file",
        ),
        (
            vec!["check-config", "--upstream", "http://127.0.0.1:1"],
            vec![("GENAI_TAP_UPSTREAM__CLIENT_CERT_FILE", "/x.crt")],
            "upstream.client_key_file",
        ),
    ] {
        let out = command(&args, &env).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(key), "{args:?}: {stderr}");
    }
}

/// Polls `/readyz` on the admin port until it answers `want` (bounded by [`LIMIT`]).
async fn readiness_becomes(admin: std::net::SocketAddr, want: StatusCode) -> StatusCode {
    let deadline = Instant::now() + LIMIT;
    loop {
        let answer = send(
            Method::GET,
            &format!("http://{admin}/readyz"),
            &[],
            Bytes::new(),
        )
        .await;
        if answer.status == want || Instant::now() > deadline {
            return answer.status;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_open_stream_finish_then_exports_its_span_and_exits_0() {
    let receiver = OtlpReceiver::start().await;
    let (reply, chunks) = Reply::sse_stream();
    let reply = Mutex::new(Some(reply));
    let upstream = Upstream::start(move |_| reply.lock().unwrap().take().unwrap()).await;
    let endpoint = format!("http://{}", receiver.addr);
    let mut running = run(
        &upstream.url(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            // Only the flush on exit can deliver the span.
            ("OTEL_BSP_SCHEDULE_DELAY", "60000"),
        ],
    );
    assert_eq!(
        readiness_becomes(running.admin, StatusCode::OK).await,
        StatusCode::OK
    );
    let stream = fixture("chat_stream_usage.sse");
    let split = memchr::memmem::find(&stream, b"\n\n").unwrap() + 2;
    chunks
        .send(Chunk::Data(stream.slice(..split)))
        .await
        .unwrap();
    let request = http::Request::post(format!("http://{}/v1/chat/completions", running.addr))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#,
        )))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, stream.slice(..split));

    sigterm(&running.child);
    assert_eq!(
        readiness_becomes(running.admin, StatusCode::SERVICE_UNAVAILABLE).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "not ready as soon as draining starts"
    );
    // New connections are no longer accepted.
    let deadline = Instant::now() + LIMIT;
    while tokio::net::TcpStream::connect(running.addr).await.is_ok() {
        assert!(Instant::now() < deadline, "the listener closes");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The open stream carries on to its end.
    chunks
        .send(Chunk::Data(stream.slice(split..)))
        .await
        .unwrap();
    drop(chunks);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(
        rest,
        stream.slice(split..),
        "the stream completed unchanged"
    );
    assert!(wait(&mut running.child).success(), "exit 0");

    let spans = receiver.spans();
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let span = &spans[0].span;
    assert_eq!(span.name, "chat gpt-4o-mini");
    assert_eq!(string(&span.attributes, "error.type"), None);
    assert_eq!(int(&span.attributes, "gen_ai.usage.output_tokens"), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_still_open_at_the_drain_deadline_is_closed_and_its_span_still_exported() {
    let receiver = OtlpReceiver::start().await;
    let (reply, chunks) = Reply::sse_stream();
    let reply = Mutex::new(Some(reply));
    let upstream = Upstream::start(move |_| reply.lock().unwrap().take().unwrap()).await;
    let endpoint = format!("http://{}", receiver.addr);
    let mut running = run(
        &upstream.url(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_BSP_SCHEDULE_DELAY", "60000"),
            ("GENAI_TAP_SERVER__DRAIN_TIMEOUT", "300ms"),
        ],
    );
    chunks
        .send(Chunk::Data(Bytes::from_static(b"data: {\"id\":\"x\"}\n\n")))
        .await
        .unwrap();
    let request = http::Request::post(format!("http://{}/v1/chat/completions", running.addr))
        .body(Full::new(Bytes::from_static(
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
        )))
        .unwrap();
    let response = client().request(request).await.unwrap();
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();

    // The upstream never ends the stream: the deadline decides when the process stops
    // (`terminate` fails the test if that takes longer than LIMIT).
    assert!(terminate(&mut running.child).success(), "exit 0");
    let ended = body.collect().await;
    assert!(
        ended.is_err(),
        "the client sees the stream cut, not a clean end"
    );
    let spans = receiver.spans();
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(
        string(&spans[0].span.attributes, "error.type").as_deref(),
        Some("cancelled")
    );
    drop(chunks);
}
