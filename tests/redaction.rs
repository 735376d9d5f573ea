//! Canaries: known secrets and personal data planted in messages, tool arguments and results,
//! headers, upstream replies and error bodies, then every byte the built binary exports (raw
//! OTLP traces and logs, and the console) is searched for them.

mod support;

use std::process::Stdio;

use bytes::Bytes;
use http::Method;
use support::otlp::OtlpReceiver;
use support::process::{run_with, terminate};
use support::{Reply, Upstream, send};

/// Content the model sees and says: captured in `full` mode, redacted in `redacted` mode.
const CONTENT_CANARIES: &[&str] = &[
    "canary.user@example.com",
    "canary-pw-314159",
    "4111 1111 1111 1111",
    "123-45-6789",
    "reply.canary@example.com",
    "AKIAIOSFODNN7EXAMPLE",
];

/// Never exported in any mode: credentials and upstream error messages.
const NEVER: &[&str] = &[
    "sk-canaryCANARYcanary0123456789",
    "0123456789abcdef0123456789abcdef",
    "canary-cookie-value",
    "canary-proxy-auth",
    "error.canary@example.com",
];

const ALLOWLISTED_HEADER_VALUE: &str = "header.canary@example.com";

fn request(model: &str) -> String {
    serde_json::json!({
        "model": model,
        "stream": true,
        "messages": [
            {"role": "user", "content": "I am canary.user@example.com, my card is 4111 1111 1111 1111"},
            {"role": "assistant", "content": null, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "login", "arguments": "{\"user\":\"x\",\"password\":\"canary-pw-314159\"}"}
            }]},
            {"role": "tool", "tool_call_id": "call_1", "content": "SSN on file: 123-45-6789"}
        ]
    })
    .to_string()
}

const REPLY: &str = "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Write to reply.canary@example.com, key AKIAIOSFODNN7EXAMPLE\"}}]}\n\ndata: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";

async fn exported(mode: &str) -> String {
    let upstream = Upstream::start(|seen| {
        if seen.body.windows(5).any(|w| w == b"error") {
            Reply::json(
                400,
                r#"{"error":{"message":"Invalid request: error.canary@example.com is not allowed","type":"invalid_request_error","param":null,"code":"bad_user"}}"#,
            )
        } else {
            Reply::sse(REPLY)
        }
    })
    .await;
    let receiver = OtlpReceiver::start().await;
    let dir = std::env::temp_dir().join(format!("genai-tap-canary-{}-{mode}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    let rules = if mode == "redacted" {
        "[redaction]\njson_keys = [\"password\"]\nrules = [{ preset = \"all\" }]\n"
    } else {
        ""
    };
    std::fs::write(
        &config,
        format!("[capture]\nmode = \"{mode}\"\ntarget = \"span_and_event\"\nheaders = [\"x-user-email\"]\n{rules}"),
    )
    .unwrap();
    let stdout_path = dir.join("stdout.jsonl");
    let stdout = std::fs::File::create(&stdout_path).unwrap();
    let endpoint = format!("http://{}", receiver.addr);
    let mut running = run_with(
        &["--config", config.to_str().unwrap()],
        &upstream.url(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_TRACES_EXPORTER", "otlp,console"),
        ],
        Stdio::from(stdout),
    );
    let headers: &[(&str, &str)] = &[
        ("content-type", "application/json"),
        ("authorization", "Bearer sk-canaryCANARYcanary0123456789"),
        ("api-key", "0123456789abcdef0123456789abcdef"),
        ("cookie", "session=canary-cookie-value"),
        ("proxy-authorization", "Basic canary-proxy-auth"),
        ("x-user-email", ALLOWLISTED_HEADER_VALUE),
    ];
    let url = format!("http://{}/v1/chat/completions", running.addr);
    let ok = send(Method::POST, &url, headers, Bytes::from(request("gpt-4o"))).await;
    assert_eq!(ok.status, 200);
    let bad = send(
        Method::POST,
        &url,
        headers,
        Bytes::from(request("error-model")),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(terminate(&mut running.child).success());

    let mut all = String::from_utf8_lossy(&receiver.raw_bytes()).into_owned();
    let console = std::fs::read_to_string(&stdout_path).unwrap();
    assert_eq!(
        console.lines().count(),
        4,
        "two spans and two events on the console: {console}"
    );
    all.push_str(&console);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!receiver.spans().is_empty() && !receiver.log_records().is_empty());
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redacted_mode_exports_no_secret_anywhere() {
    let all = exported("redacted").await;
    for canary in CONTENT_CANARIES
        .iter()
        .chain(NEVER)
        .chain([&ALLOWLISTED_HEADER_VALUE])
    {
        assert!(!all.contains(canary), "{canary} leaked");
    }
    // The content was captured, redacted: the markers prove the test saw it.
    for marker in [
        "[REDACTED:email]",
        "[REDACTED:payment_card]",
        "[REDACTED:us_ssn]",
        "[REDACTED:aws_access_key]",
        "[REDACTED]",
    ] {
        assert!(all.contains(marker), "{marker} missing");
    }
    assert!(
        all.contains("http.request.header.x-user-email"),
        "the allowlisted header is exported, redacted"
    );
    assert!(
        all.contains("bad_user"),
        "the error's code is kept, its message is not"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_mode_exports_content_but_never_credentials_or_error_messages() {
    let all = exported("full").await;
    for canary in CONTENT_CANARIES.iter().chain([&ALLOWLISTED_HEADER_VALUE]) {
        assert!(
            all.contains(canary),
            "{canary} should be exported in full mode (so the test can fail)"
        );
    }
    for canary in NEVER {
        assert!(!all.contains(canary), "{canary} leaked");
    }
}
