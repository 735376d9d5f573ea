//! `genai-tap demo`: the mock model server, the proxy in front of it, a few requests through it,
//! and their spans on the console. No account, no network, no collector.
//!
//! Owns: the scripted requests and what the demo tells the user. Does not: do anything `run`
//! does differently; the proxy, observer and telemetry are the production ones.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::app::{App, AppError};
use crate::config::Config;
use crate::mock::{self, MockConfig, RATE_LIMITED_MODEL};
use crate::stats::Stats;
use crate::telemetry::Telemetry;

/// `(what it shows, method, path, body)`.
fn script() -> Vec<(&'static str, Method, &'static str, String)> {
    let chat = |extra: &str, model: &str| {
        format!(
            r#"{{"model":"{model}","messages":[{{"role":"system","content":"You are a helpful assistant."}},{{"role":"user","content":"Say hello to the demo."}}]{extra}}}"#
        )
    };
    vec![
        (
            "chat completion",
            Method::POST,
            "/v1/chat/completions",
            chat(r#","temperature":0.7,"max_tokens":64"#, "gpt-4o-mini"),
        ),
        (
            "streamed chat completion, usage requested",
            Method::POST,
            "/v1/chat/completions",
            chat(
                r#","stream":true,"stream_options":{"include_usage":true}"#,
                "gpt-4o-mini",
            ),
        ),
        (
            "streamed chat completion, no usage requested",
            Method::POST,
            "/v1/chat/completions",
            chat(r#","stream":true,"seed":42,"stop":["\n\n"]"#, "gpt-4o"),
        ),
        (
            "chat completion answered with 429",
            Method::POST,
            "/v1/chat/completions",
            chat("", RATE_LIMITED_MODEL),
        ),
        (
            "model list (forwarded, not a GenAI operation: no span)",
            Method::GET,
            "/v1/models",
            String::new(),
        ),
    ]
}

/// Runs the demo. With `serve`, the proxy then stays up on the configured address, in front
/// of the mock, until `shutdown` completes.
pub async fn run(
    mut config: Config,
    serve: bool,
    shutdown: impl std::future::Future<Output = ()>,
    out: &mut (dyn Write + Send),
) -> Result<(), AppError> {
    let io = |context: &str| {
        let context = context.to_owned();
        move |source| AppError::Io { context, source }
    };
    let mock_addr = mock::spawn(MockConfig {
        chunk_delay: Duration::from_millis(15),
    })
    .await
    .map_err(io("cannot start the mock upstream"))?;
    config.upstream.url = Some(format!("http://{mock_addr}"));

    let stats = Arc::new(Stats::default());
    let telemetry = Telemetry::from_config(&config, stats.clone())?;
    let app = App::new(&config, telemetry, stats)?;
    let listen = if serve {
        config.listen
    } else {
        SocketAddr::from(([127, 0, 0, 1], 0))
    };
    let listener = App::bind(listen).await?;
    let addr = listener
        .local_addr()
        .map_err(io("cannot read the listening address"))?;

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = {
        let app = app.clone();
        tokio::spawn(async move {
            app.serve(listener, async {
                let _ = stopped.await;
            })
            .await;
        })
    };

    let say = |out: &mut (dyn Write + Send), line: String| {
        let _ = writeln!(out, "{line}");
    };
    say(
        out,
        format!(
            "genai-tap demo: mock model server on {mock_addr}, proxy on {addr}, spans to {}",
            app.telemetry.destinations().join(", ")
        ),
    );
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    for (what, method, path, body) in script() {
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, "Bearer sk-demo-not-a-real-key")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| AppError::Io {
                context: "cannot build a demo request".into(),
                source: std::io::Error::other(e),
            })?;
        match client.request(request).await {
            Ok(response) => {
                let status = response.status();
                let bytes = response
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes().len())
                    .unwrap_or(0);
                say(out, format!("  {what}: HTTP {status}, {bytes} bytes"));
            }
            Err(e) => say(out, format!("  {what}: failed: {e}")),
        }
    }
    app.settle().await;

    if serve {
        say(
            out,
            format!(
                "\nThe proxy stays up in front of the mock. Point any OpenAI client at it:\n  \
                 OPENAI_BASE_URL=http://{addr}/v1 OPENAI_API_KEY=anything\nCtrl-C to stop."
            ),
        );
        shutdown.await;
    }
    let _ = stop.send(());
    let _ = server.await;
    app.shutdown_telemetry(Duration::from_secs(5)).await;
    Ok(())
}
