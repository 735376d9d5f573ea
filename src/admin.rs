//! The admin port: `GET /healthz` (the process is up), `GET /readyz` (serving, not draining),
//! `GET /metrics` (the proxy's own counters in Prometheus text format).
//!
//! Owns: those three answers. Lives on its own port so no app path can shadow them and no
//! proxied traffic can reach them. Does not: expose anything about requests' content.

use std::convert::Infallible;
use std::fmt::Write;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::stats::{OPERATIONS, OUTCOMES, Stats};
use crate::telemetry::Telemetry;

/// What the admin endpoints report on.
#[derive(Debug, Clone)]
pub struct Admin {
    pub stats: Arc<Stats>,
    pub ready: Arc<AtomicBool>,
    pub telemetry: Telemetry,
}

impl Admin {
    fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let text = |status: StatusCode, body: String, content_type: &'static str| {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = status;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(content_type),
            );
            r
        };
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "GET only\n".into(),
                "text/plain",
            );
        }
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n".into(), "text/plain"),
            "/readyz" if self.ready.load(Ordering::Acquire) => {
                text(StatusCode::OK, "ready\n".into(), "text/plain")
            }
            "/readyz" => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready\n".into(),
                "text/plain",
            ),
            "/metrics" => text(
                StatusCode::OK,
                self.prometheus(),
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            _ => text(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain"),
        }
    }

    /// The Prometheus text exposition of the proxy's counters and queues.
    pub fn prometheus(&self) -> String {
        let snapshot = self.stats.snapshot();
        let mut out = String::with_capacity(4096);
        for (name, help, value) in snapshot.fields() {
            let _ = writeln!(out, "# HELP genai_tap_{name}_total {help}");
            let _ = writeln!(out, "# TYPE genai_tap_{name}_total counter");
            let _ = writeln!(out, "genai_tap_{name}_total {value}");
        }
        let _ = writeln!(
            out,
            "# HELP genai_tap_exchanges_total Finished GenAI exchanges by operation and outcome."
        );
        let _ = writeln!(out, "# TYPE genai_tap_exchanges_total counter");
        for (i, operation) in OPERATIONS.iter().enumerate() {
            for (j, outcome) in OUTCOMES.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "genai_tap_exchanges_total{{operation=\"{operation}\",outcome=\"{outcome}\"}} {}",
                    snapshot.exchanges[i][j]
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP genai_tap_export_queue_depth Telemetry items waiting for export."
        );
        let _ = writeln!(out, "# TYPE genai_tap_export_queue_depth gauge");
        for (exporter, signal, depth) in self.telemetry.queue_depths() {
            let _ = writeln!(
                out,
                "genai_tap_export_queue_depth{{exporter=\"{exporter}\",signal=\"{signal}\"}} {depth}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP genai_tap_ready Whether the proxy takes traffic (0 while draining)."
        );
        let _ = writeln!(out, "# TYPE genai_tap_ready gauge");
        let _ = writeln!(
            out,
            "genai_tap_ready {}",
            u8::from(self.ready.load(Ordering::Acquire))
        );
        let _ = writeln!(out, "# HELP genai_tap_build_info The running version.");
        let _ = writeln!(out, "# TYPE genai_tap_build_info gauge");
        let _ = writeln!(
            out,
            "genai_tap_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        out
    }
}

/// Serves the admin endpoints until `shutdown` completes.
pub async fn serve(listener: TcpListener, admin: Admin, shutdown: impl Future<Output = ()>) {
    let admin = Arc::new(admin);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let admin = admin.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let answer = admin.answer(&req);
                        async move { Ok::<_, Infallible>(answer) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            () = &mut shutdown => return,
        }
    }
}
