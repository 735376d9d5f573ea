//! The listener: accepts connections, speaks HTTP/1.1 and HTTP/2 on the same port (cleartext
//! with prior knowledge, or TLS with ALPN when configured), and drains gracefully.
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
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::proxy::Proxy;
use crate::stats::Stats;

#[derive(Debug, Clone, Copy)]
pub struct ServerSettings {
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    pub drain_timeout: Duration,
    pub shutdown_delay: Duration,
}

impl From<&crate::config::Config> for ServerSettings {
    fn from(c: &crate::config::Config) -> Self {
        ServerSettings {
            max_header_bytes: c.server.max_header_bytes.0,
            header_read_timeout: c.server.header_read_timeout.0,
            drain_timeout: c.server.drain_timeout.0,
            shutdown_delay: c.server.shutdown_delay.0,
        }
    }
}

/// Serves `proxy` on `listener` (over TLS when `tls` is set) until `shutdown` completes, then
/// drains. A connection is served while it holds one of `slots` (shared by every thread that
/// serves the same port, so `server.max_connections` bounds them all).
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    proxy: Arc<Proxy>,
    settings: ServerSettings,
    slots: Arc<Semaphore>,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        // Validated to be at least hyper's minimum of 8 KiB.
        .max_buf_size(settings.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    // Every connection's task, so the ones still open at the drain deadline can be closed.
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            (slot, accepted) = accept(&listener, &slots, &proxy) => match accepted {
                Ok((stream, _peer)) => {
                    // Small SSE chunks must leave at once, not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    // Subscribed now, so a shutdown that starts during a TLS handshake still
                    // reaches this connection.
                    let watcher = graceful.watcher();
                    let (builder, proxy) = (builder.clone(), proxy.clone());
                    let Some(acceptor) = acceptor.clone() else {
                        connections.spawn(async move {
                            connection(builder, TokioIo::new(stream), proxy, watcher).await;
                            drop(slot);
                        });
                        continue;
                    };
                    let handshake_timeout = settings.header_read_timeout;
                    connections.spawn(async move {
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => {
                                connection(builder, TokioIo::new(stream), proxy, watcher).await;
                            }
                            Ok(Err(e)) => {
                                Stats::incr(&proxy.stats().tls_handshake_failures);
                                tracing::debug!(error = %e, "TLS handshake failed");
                            }
                            Err(_) => {
                                Stats::incr(&proxy.stats().tls_handshake_failures);
                                tracing::debug!("TLS handshake timed out");
                            }
                        }
                        drop(slot);
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
        tracing::warn!(
            open = connections.len(),
            "drain deadline passed; closing the remaining connections"
        );
    }
    // Their exchanges end as cancelled, so observers settle and every span is exported.
    connections.shutdown().await;
}

/// The next connection, once a slot is free (`server.max_connections`).
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    proxy: &Proxy,
) -> (
    Option<OwnedSemaphorePermit>,
    std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)>,
) {
    let slot = match slots.clone().try_acquire_owned() {
        Ok(slot) => slot,
        Err(_) => {
            Stats::incr(&proxy.stats().connection_limit_waits);
            tracing::debug!("connection limit reached; waiting for a connection to close");
            match slots.clone().acquire_owned().await {
                Ok(slot) => slot,
                // Never closed; if it were, serve without a limit rather than stop.
                Err(_) => return (None, listener.accept().await),
            }
        }
    };
    (Some(slot), listener.accept().await)
}

/// Serves one connection's requests until it closes or a drain asks it to finish.
async fn connection<I>(
    builder: auto::Builder<TokioExecutor>,
    io: I,
    proxy: Arc<Proxy>,
    watcher: Watcher,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let proxy = proxy.clone();
        async move { Ok::<_, Infallible>(proxy.handle(req).await) }
    });
    let conn = builder.serve_connection(io, service).into_owned();
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
