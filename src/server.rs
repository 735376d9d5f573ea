//! The listener: accepts connections, speaks HTTP/1.1 and HTTP/2 cleartext (prior knowledge)
//! on the same port, and drains gracefully.
//!
//! Owns: the accept loop, per-connection protocol settings, and shutdown: stop accepting, let
//! in-flight requests and streams finish up to a deadline, then close what remains. Takes an
//! already-bound listener and a shutdown future, so tests bind port 0 and choose when to stop.
//! Does not: parse bodies or decide where requests go (`proxy`).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::proxy::Proxy;

#[derive(Debug, Clone, Copy)]
pub struct ServerSettings {
    pub header_read_timeout: Duration,
    pub drain_timeout: Duration,
}

impl From<&crate::config::Config> for ServerSettings {
    fn from(c: &crate::config::Config) -> Self {
        ServerSettings {
            header_read_timeout: c.server.header_read_timeout.0,
            drain_timeout: c.server.drain_timeout.0,
        }
    }
}

/// Serves `proxy` on `listener` until `shutdown` completes, then drains.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // Small SSE chunks must leave at once, not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    let proxy = proxy.clone();
                    let service = service_fn(move |req| {
                        let proxy = proxy.clone();
                        async move { Ok::<_, Infallible>(proxy.handle(req).await) }
                    });
                    let conn = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!(deadline = ?settings.drain_timeout, "draining in-flight requests");
    if tokio::time::timeout(settings.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain deadline passed; closing the remaining connections");
    }
}
