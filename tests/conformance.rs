//! The official `openai` SDKs (Python and Node) against the mock, directly and through the
//! proxy: the SDK must get the same results both ways, and the proxy must record every call.
//!
//! The SDKs are installed on first use under `target/tmp/conformance` from PyPI and npm at
//! pinned versions (`.ci/run` reaches both registries); later runs reuse them.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use genai_tap::config::RouteConfig;
use genai_tap::mock::{self, MockConfig};
use genai_tap::telemetry::semconv::*;
use opentelemetry_sdk::trace::SpanData;
use support::*;

const PYTHON_OPENAI: &str = "3.54.0";
const NODE_OPENAI: &str = "7.57.0";

fn workdir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("conformance")
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/conformance")
        .join(name)
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A virtualenv with the pinned SDK; created on first use.
fn python() -> PathBuf {
    let venv = workdir().join(format!("python-openai-{PYTHON_OPENAI}"));
    let python = venv.join("bin/python");
    if !venv.join(".ready").exists() {
        let _ = std::fs::remove_dir_all(&venv);
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        run(Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("openai=={PYTHON_OPENAI}"),
        ]));
        std::fs::write(venv.join(".ready"), PYTHON_OPENAI).unwrap();
    }
    python
}

/// A directory with the pinned SDK in `node_modules` and the script beside it (ES modules
/// resolve packages from the importing file's directory).
fn node() -> PathBuf {
    let dir = workdir().join(format!("node-openai-{NODE_OPENAI}"));
    if !dir.join(".ready").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        run(Command::new("npm").current_dir(&dir).args([
            "install",
            "--no-audit",
            "--no-fund",
            "--silent",
            &format!("openai@{NODE_OPENAI}"),
        ]));
        std::fs::write(dir.join(".ready"), NODE_OPENAI).unwrap();
    }
    std::fs::copy(script("openai_node.mjs"), dir.join("openai_node.mjs")).unwrap();
    dir
}

async fn blocking(mut cmd: Command) -> Output {
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    if !out.status.success() {
        panic!(
            "the SDK saw different results through the proxy:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_gets_the_same_results_through_the_proxy() {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let upstream = format!(
        "http://{}",
        mock::spawn(MockConfig::default()).await.unwrap()
    );
    let route_to = upstream.clone();
    let proxy = Proxy::start_with(&upstream, move |c| {
        c.routes = vec![RouteConfig {
            prefix: "/azure".into(),
            url: route_to,
            provider: Some("azure.ai.openai".into()),
            strip_prefix: true,
            stream_usage: None,
            auth: None,
        }];
    })
    .await;
    let mut cmd = Command::new(python);
    cmd.arg(script("openai_python.py"))
        .arg(&upstream)
        .arg(proxy.url(""))
        .arg(proxy.url("/azure"));
    let out = blocking(cmd).await;
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(report.lines().count(), 11, "{report}");

    let spans = proxy.spans().await;
    assert_eq!(spans.len(), 11, "one span per SDK call through the proxy");
    // Plain, streamed, and streamed-first-choice chat; the streams carry injected usage.
    let chat = named(&spans, "chat gpt-4o-mini");
    assert_eq!(chat.len(), 3);
    for span in &chat {
        assert_eq!(
            attr_i64(span, GEN_AI_USAGE_OUTPUT_TOKENS),
            Some(11),
            "{span:?}"
        );
        assert_eq!(
            attr_str(span, GEN_AI_PROVIDER_NAME).as_deref(),
            Some("openai")
        );
    }
    assert_eq!(
        chat.iter()
            .filter(|s| attr(s, GENAI_TAP_USAGE_INJECTED).is_some())
            .count(),
        2
    );
    let tools = named(&spans, "chat gpt-4o");
    assert_eq!(tools.len(), 2);
    for span in &tools {
        assert_eq!(
            attr(span, GEN_AI_RESPONSE_FINISH_REASONS),
            Some(strings(&["tool_calls"]))
        );
        assert_eq!(
            attr(span, GENAI_TAP_REQUEST_TOOLS),
            Some(strings(&["get_weather"]))
        );
        assert_eq!(
            attr(span, GENAI_TAP_RESPONSE_TOOL_CALLS),
            Some(strings(&["get_weather"]))
        );
    }
    let responses = named(&spans, "chat gpt-4.1");
    assert_eq!(responses.len(), 2);
    for span in &responses {
        assert_eq!(
            attr_str(span, OPENAI_API_TYPE).as_deref(),
            Some("responses")
        );
        assert_eq!(
            attr(span, GEN_AI_RESPONSE_FINISH_REASONS),
            Some(strings(&["stop"]))
        );
        assert!(attr_i64(span, GEN_AI_USAGE_INPUT_TOKENS).is_some());
    }
    let embeddings = named(&spans, "embeddings text-embedding-3-small");
    assert_eq!(embeddings.len(), 1);
    assert_eq!(
        attr(embeddings[0], GEN_AI_REQUEST_ENCODING_FORMATS),
        Some(strings(&["base64"]))
    );
    assert_eq!(
        attr_i64(embeddings[0], GEN_AI_EMBEDDINGS_DIMENSION_COUNT),
        Some(8)
    );
    let azure = named(&spans, "chat prod-4o");
    assert_eq!(azure.len(), 2);
    for span in &azure {
        assert_eq!(
            attr_str(span, GEN_AI_PROVIDER_NAME).as_deref(),
            Some("azure.ai.openai")
        );
        assert_eq!(attr_i64(span, GEN_AI_USAGE_INPUT_TOKENS), Some(9));
    }
    assert_eq!(named(&spans, "embeddings ada-prod").len(), 1);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_node_sdk_gets_the_same_results_through_the_proxy() {
    let dir = tokio::task::spawn_blocking(node).await.unwrap();
    let upstream = format!(
        "http://{}",
        mock::spawn(MockConfig::default()).await.unwrap()
    );
    let proxy = Proxy::start(&upstream).await;
    let mut cmd = Command::new("node");
    cmd.current_dir(&dir)
        .arg(Path::new("openai_node.mjs"))
        .arg(&upstream)
        .arg(proxy.url(""));
    let out = blocking(cmd).await;
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(report.lines().count(), 3, "{report}");
    let spans = proxy.spans().await;
    assert_eq!(spans.len(), 3);
    let chat = named(&spans, "chat gpt-4o-mini");
    assert_eq!(chat.len(), 2);
    assert!(
        chat.iter()
            .all(|s| attr_i64(s, GEN_AI_USAGE_INPUT_TOKENS) == Some(4))
    );
    assert_eq!(named(&spans, "embeddings text-embedding-3-small").len(), 1);
    proxy.stop().await;
}
