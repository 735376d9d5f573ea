//! The listener: accepts connections, speaks HTTP/1.1 and HTTP/2 on the same port (cleartext
//! with prior knowledge, or TLS with ALPN when configured), and drains gracefully.
//!
//! Owns: the accept loop, per-connection protocol settings, and shutdown: stop accepting, let
//! in-flight requests and streams finish up to a deadline, then close what remains. Takes an
//! already-bound listener and a shutdown future, so tests bind port 0 and choose when to stop.
//! Does not: parse bodies or decide where requests go (`proxy`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use pin_project_lite::pin_project;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
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
    let builders = Arc::new(Builders::new(&settings));
    let acceptor = tls.map(TlsAcceptor::from);
    // Set when the drain starts: connections still waiting for their first bytes close, the
    // others are asked to finish what they are serving (`Drained`).
    let (draining, drain_started) = watch::channel(false);
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
                    let mut drain = drain_started.clone();
                    let (builders, proxy) = (builders.clone(), proxy.clone());
                    let Some(acceptor) = acceptor.clone() else {
                        connections.spawn(async move {
                            let protocol = tokio::select! {
                                protocol = cleartext_protocol(&stream) => protocol,
                                // Nothing was read yet: closing loses no request.
                                _ = drain.wait_for(|started| *started) => return,
                            };
                            let io = TokioIo::new(stream);
                            connection(&builders, protocol, io, proxy, drain).await;
                            drop(slot);
                        });
                        continue;
                    };
                    let handshake_timeout = settings.header_read_timeout;
                    connections.spawn(async move {
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => {
                                let protocol = match stream.get_ref().1.alpn_protocol() {
                                    Some(b"h2") => Some(Protocol::Http2),
                                    Some(b"http/1.1") => Some(Protocol::Http1),
                                    // No ALPN: told apart by the first bytes, as in cleartext.
                                    _ => None,
                                };
                                let io = TokioIo::new(stream);
                                connection(&builders, protocol, io, proxy, drain).await;
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
    draining.send_replace(true);
    tracing::info!(deadline = ?settings.drain_timeout, "draining in-flight requests");
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(settings.drain_timeout, drained)
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

/// HTTP/2 with prior knowledge opens with this preface (RFC 9113, section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a cleartext connection's first bytes say it speaks: HTTP/2 when they are the whole
/// preface, HTTP/1 as soon as they stray from it, `None` while they are a proper prefix of it
/// (or there are none).
fn sniff(first: &[u8]) -> Option<Protocol> {
    let n = first.len().min(H2_PREFACE.len());
    if first[..n] != H2_PREFACE[..n] {
        Some(Protocol::Http1)
    } else if n == H2_PREFACE.len() {
        Some(Protocol::Http2)
    } else {
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// The protocol a cleartext connection's first bytes show, read with `MSG_PEEK` so they stay
/// in the socket for hyper's first read.
///
/// hyper-util's builder, left to choose by itself, reads the first 24 bytes on their own and
/// hands them back through a rewinding reader, so hyper's first read returns only those, and
/// its next one, asking for 8 KiB more behind them, doubles the connection's read buffer to
/// 16 KiB for the connection's life. It is still left to choose when the bytes cannot tell
/// yet: a client that sends part of the HTTP/2 preface and waits, or one that closes at once.
async fn cleartext_protocol(stream: &tokio::net::TcpStream) -> Option<Protocol> {
    let mut first = [0u8; H2_PREFACE.len()];
    let n = stream.peek(&mut first).await.ok()?;
    sniff(&first[..n])
}

/// Applies the HTTP/1 settings to a builder of hyper's or of hyper-util's (the same methods,
/// no shared trait), so the two cannot drift apart.
macro_rules! http1_settings {
    ($builder:expr, $settings:expr) => {
        $builder
            .timer(TokioTimer::new())
            .header_read_timeout($settings.header_read_timeout)
            // Validated to be at least hyper's minimum of 8 KiB.
            .max_buf_size($settings.max_header_bytes)
    };
}

/// The per-connection protocol settings, shared by every connection of a listener.
struct Builders {
    /// Connections known to speak HTTP/1, nearly all of them. hyper's own builder: a
    /// connection's task is sized for the largest protocol its future can hold, and hyper-util's
    /// holds HTTP/2's state too, over twice HTTP/1's.
    http1: http1::Builder,
    /// Every other connection: HTTP/2, and those whose first bytes could not tell yet.
    /// hyper-util reads the first bytes itself (HTTP/2 keeps no HTTP/1 read buffer to double).
    detect: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new(settings: &ServerSettings) -> Builders {
        let mut http1 = http1::Builder::new();
        http1_settings!(http1, settings);
        let mut detect = auto::Builder::new(TokioExecutor::new());
        http1_settings!(detect.http1(), settings);
        detect
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
        Builders { http1, detect }
    }
}

/// Serves one connection's requests until it closes or a drain asks it to finish.
async fn connection<I>(
    builders: &Builders,
    protocol: Option<Protocol>,
    io: I,
    proxy: Arc<Proxy>,
    drain: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let proxy = proxy.clone();
        // Boxed per request: hyper keeps room for this future for the connection's whole life,
        // held streams and idle keep-alive included, and unboxed it is several KiB. Written
        // into its allocation rather than built on the stack and moved there (`Box::pin`
        // copied all 3.5 KB of it, most of them not yet in use, on every request).
        let handling = Box::into_pin(Box::write(Box::new_uninit(), async move {
            proxy.handle(req).await
        }));
        async move { Ok::<_, Infallible>(handling.await) }
    });
    let ended: Result<(), Box<dyn std::error::Error + Send + Sync>> = match protocol {
        Some(Protocol::Http1) => {
            let conn = builders.http1.serve_connection(io, service);
            drained(conn, drain, |c| c.graceful_shutdown())
                .await
                .map_err(Into::into)
        }
        // Boxed, so HTTP/1 connections' tasks are not sized for these.
        Some(Protocol::Http2) | None => {
            let conn = builders.detect.serve_connection(io, service);
            Box::pin(drained(conn, drain, |c| c.graceful_shutdown())).await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

pin_project! {
    /// A connection that is asked to finish (`finish`: hyper's `graceful_shutdown`) once the
    /// drain starts. hyper-util's `GracefulConnectionFuture` does the same but polls its
    /// `watch::Receiver::changed` future on every poll of the connection, a lock and a waker
    /// update each time, and a stream's connection is polled twice per chunk. The drain's
    /// future is polled here only to register a waker it does not hold yet, or once the
    /// drain has started (an atomic load tells).
    struct Drained<C, F, S> {
        #[pin]
        conn: C,
        #[pin]
        started: F,
        probe: watch::Receiver<bool>,
        finish: Option<S>,
        registered: Option<Waker>,
    }
}

/// `conn`, asked to finish by `finish` once `drain` says the drain has started.
fn drained<C, S: FnOnce(Pin<&mut C>)>(
    conn: C,
    mut drain: watch::Receiver<bool>,
    finish: S,
) -> Drained<C, impl Future<Output = ()>, S> {
    Drained {
        conn,
        probe: drain.clone(),
        // Ends when the drain starts, or when the server is gone (the sender dropped).
        started: async move {
            let _ = drain.wait_for(|started| *started).await;
        },
        finish: Some(finish),
        registered: None,
    }
}

impl<C: Future, F: Future<Output = ()>, S: FnOnce(Pin<&mut C>)> Future for Drained<C, F, S> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        if this.finish.is_some() {
            let new_waker = !this
                .registered
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()));
            // A closed channel (the server gone) counts as a change: the future then ends.
            if new_waker || this.probe.has_changed().unwrap_or(true) {
                if this.started.poll(cx).is_ready() {
                    if let Some(finish) = this.finish.take() {
                        finish(this.conn.as_mut());
                    }
                } else if new_waker {
                    *this.registered = Some(cx.waker().clone());
                }
            }
        }
        this.conn.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_first_bytes_tell_http1_from_http2_with_prior_knowledge() {
        assert_eq!(
            sniff(b"POST /v1/chat/completions HTTP/1.1\r\n"),
            Some(Protocol::Http1)
        );
        assert_eq!(sniff(b"G"), Some(Protocol::Http1));
        // "PRI" is a method name HTTP/1 would accept; only the whole preface means HTTP/2.
        assert_eq!(sniff(b"PRI * HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(sniff(H2_PREFACE), Some(Protocol::Http2));
        let mut preface_and_frame = H2_PREFACE.to_vec();
        preface_and_frame.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(sniff(&preface_and_frame), Some(Protocol::Http2));
        // Too early to tell: left to the builder, which reads on until it can.
        assert_eq!(sniff(b""), None);
        assert_eq!(sniff(b"PRI * HTTP/2.0\r\n"), None);
    }

    /// A connection future that stays pending (waking itself `self_wakes` times first, as a
    /// busy connection is polled again and again) until it is asked to finish.
    struct FakeConnection {
        self_wakes: usize,
        finished: bool,
    }

    impl Future for FakeConnection {
        type Output = &'static str;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<&'static str> {
            if self.finished {
                return Poll::Ready("finished");
            }
            if self.self_wakes > 0 {
                self.self_wakes -= 1;
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        }
    }

    /// Serves a fake connection as `connection` does; the count says how often it was asked
    /// to finish.
    fn serve_fake(
        drain: watch::Receiver<bool>,
    ) -> (
        tokio::task::JoinHandle<&'static str>,
        Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = asked.clone();
        let conn = FakeConnection {
            self_wakes: 50,
            finished: false,
        };
        let task = tokio::spawn(drained(conn, drain, move |c: Pin<&mut FakeConnection>| {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            c.get_mut().finished = true;
        }));
        (task, asked)
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_is_asked_to_finish_once_when_the_drain_starts() {
        let (draining, drain) = watch::channel(false);
        let (task, asked) = serve_fake(drain);
        // Polled through all its own wake-ups, never asked to finish.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(!task.is_finished());
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 0);
        draining.send_replace(true);
        finished_once(task, &asked, "the drain woke the connection").await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_asked_to_finish_when_the_server_is_gone() {
        let (draining, drain) = watch::channel(false);
        let (task, asked) = serve_fake(drain);
        tokio::task::yield_now().await;
        drop(draining);
        finished_once(task, &asked, "the closed channel woke the connection").await;
    }

    /// The fake connection ends, finished, having been asked once (bounded: a connection
    /// nothing wakes fails here instead of hanging the test).
    async fn finished_once(
        task: tokio::task::JoinHandle<&'static str>,
        asked: &std::sync::atomic::AtomicUsize,
        woken_by: &str,
    ) {
        let ended = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect(woken_by)
            .unwrap();
        assert_eq!(ended, "finished");
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    proptest! {
        /// More bytes never change an answer already given: what a short peek decides is
        /// what the whole opening would have decided.
        #[test]
        fn an_answer_holds_whatever_follows(
            take in 0usize..=24,
            rest in proptest::collection::vec(any::<u8>(), 0..40),
            cut in 0usize..64,
        ) {
            let mut bytes = H2_PREFACE[..take].to_vec();
            bytes.extend_from_slice(&rest);
            let cut = cut.min(bytes.len());
            if let Some(early) = sniff(&bytes[..cut]) {
                prop_assert_eq!(sniff(&bytes), Some(early));
            }
        }
    }
}
