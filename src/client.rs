//! Outbound connections: one connector recipe for the upstream and the OTLP/HTTP exporter.
//!
//! Owns: TLS roots (Mozilla's, via webpki-roots, plus an optional PEM bundle), the ring crypto
//! provider (chosen explicitly, so no process-wide default is needed), ALPN for HTTP/2, and TCP
//! options. Does not: decide what is sent.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::HOST;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::tls::CertFiles;

pub type Connector = HttpsConnector<HttpConnector>;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read CA bundle {path}: {message}")]
    CaFile { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// Reads every certificate of a PEM bundle; an empty bundle is an error (a wrong file, surely).
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let fail = |message: String| ClientError::CaFile {
        path: path.to_owned(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no PEM certificates in it".to_owned()));
    }
    Ok(certs)
}

/// An https-or-http connector offering HTTP/2 and HTTP/1.1 by ALPN, presenting
/// `client_cert` to servers that ask for one.
pub fn connector(
    ca_file: Option<&Path>,
    client_cert: Option<CertFiles>,
    connect_timeout: Duration,
) -> Result<Connector, ClientError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        for cert in read_ca_file(path)? {
            roots.add(cert).map_err(|e| ClientError::CaFile {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots);
    let tls = match client_cert {
        Some(certs) => tls.with_client_cert_resolver(Arc::new(certs)),
        None => tls.with_no_client_auth(),
    };

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));

    Ok(HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http))
}

/// A pooled client over `connector`.
pub fn pooled<B>(connector: Connector, idle_timeout: Duration) -> Client<Connector, B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(idle_timeout)
        .build(connector)
}

/// A request the pool could not deliver.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot connect to the upstream: {0}")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("upstream connection failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("upstream request has no scheme and authority")]
    NotAbsolute,
}

/// A connection's sending half: HTTP/1.1 carries one request at a time, HTTP/2 (when ALPN
/// picks it) is shared by every request to its destination.
enum Sender<B> {
    H1(http1::SendRequest<B>),
    H2(http2::SendRequest<B>),
}

impl<B> Sender<B> {
    fn is_ready(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_ready(),
            Sender::H2(s) => s.is_ready(),
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }
}

struct Listed<B> {
    sender: Sender<B>,
    /// Last handed out, put back, or seen busy by the sweeper.
    used: Instant,
}

/// The connections to one upstream (scheme and authority).
struct Destination<B> {
    scheme: Scheme,
    authority: Authority,
    /// What HTTP/1.1 requests name as `Host`, worked out once.
    host: Option<HeaderValue>,
    conns: Vec<Listed<B>>,
}

struct Shared<B> {
    destinations: Mutex<Vec<Destination<B>>>,
    sweeping: AtomicBool,
}

/// Upstream connections, kept per destination and reused.
///
/// One pool per serving thread: its connection tasks run on the thread that opened them. An
/// HTTP/1.1 connection stays listed while it delivers a response body and is picked again once
/// hyper reports it ready (its last response read to the end), so nothing has to watch for
/// that moment and hand it back. A request that finds its reused connection already closed
/// (the upstream dropped it while idle, an HTTP/2 GOAWAY) is sent again on a new one, as long
/// as none of it was written. Connections unused for `idle_timeout` are closed by a sweeper task,
/// which runs only while the pool holds any.
pub struct Pool<B> {
    connector: Connector,
    idle_timeout: Duration,
    shared: Arc<Shared<B>>,
}

impl<B> std::fmt::Debug for Pool<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

/// `uri` as an HTTP/1.1 request line names it: path and query only.
fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(p) if p.as_str() != "/" => {
            let mut parts = http::uri::Parts::default();
            parts.path_and_query = Some(p.clone());
            Uri::from_parts(parts).unwrap_or_default()
        }
        _ => Uri::default(),
    }
}

/// The `Host` value for `authority`: the port only when it is not the scheme's default.
fn host_value(scheme: &Scheme, authority: &Authority) -> Option<HeaderValue> {
    let default = if *scheme == Scheme::HTTPS { 443 } else { 80 };
    match authority.port_u16() {
        Some(port) if port != default => {
            HeaderValue::from_str(&format!("{}:{port}", authority.host())).ok()
        }
        _ => HeaderValue::from_str(authority.host()).ok(),
    }
}

impl<B> Pool<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new(connector: Connector, idle_timeout: Duration) -> Self {
        Pool {
            connector,
            idle_timeout,
            shared: Arc::new(Shared {
                destinations: Mutex::new(Vec::new()),
                sweeping: AtomicBool::new(false),
            }),
        }
    }

    /// Sends `req` (absolute URI) on a pooled connection, or a new one.
    pub async fn send(&self, mut req: Request<B>) -> Result<Response<Incoming>, SendError> {
        let uri = req.uri().clone();
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(SendError::NotAbsolute);
        };
        let (mut found, host) = self.checkout(scheme, authority);
        loop {
            let reused = found.is_some();
            let sender = match found.take() {
                Some(sender) => sender,
                // Boxed: the handshakes would otherwise make every request's future (which the
                // server keeps allocated for each client connection) several KiB larger.
                None => Box::pin(self.connect(&uri, scheme, authority)).await?,
            };
            let sent = match sender {
                Sender::H1(mut tx) => {
                    *req.uri_mut() = origin_form(&uri);
                    if let Some(host) = &host
                        && !req.headers().contains_key(HOST)
                    {
                        req.headers_mut().insert(HOST, host.clone());
                    }
                    let sent = tx.try_send_request(req).await;
                    if sent.is_ok() {
                        // Busy until its body is read; listed again for when it is ready.
                        self.put(scheme, authority, Sender::H1(tx));
                    }
                    sent
                }
                Sender::H2(mut tx) => tx.try_send_request(req).await,
            };
            match sent {
                Ok(response) => return Ok(response),
                Err(mut e) => match e.take_message() {
                    // Nothing of it was written: a new connection takes it, once (a reused
                    // one that failed may not yet look closed, and must not be picked again).
                    Some(unsent) if reused => {
                        req = unsent;
                        *req.uri_mut() = uri.clone();
                    }
                    _ => return Err(SendError::Http(e.into_error())),
                },
            }
        }
    }

    /// A ready connection to the destination, if one is listed, and its `Host` value.
    fn checkout(
        &self,
        scheme: &Scheme,
        authority: &Authority,
    ) -> (Option<Sender<B>>, Option<HeaderValue>) {
        let mut destinations = lock(&self.shared.destinations);
        let dest = match destinations
            .iter()
            .position(|d| d.authority == *authority && d.scheme == *scheme)
        {
            Some(i) => &mut destinations[i],
            None => {
                destinations.push(Destination {
                    scheme: scheme.clone(),
                    authority: authority.clone(),
                    host: host_value(scheme, authority),
                    conns: Vec::new(),
                });
                let last = destinations.len() - 1;
                &mut destinations[last]
            }
        };
        let host = dest.host.clone();
        let mut i = 0;
        while i < dest.conns.len() {
            let listed = &mut dest.conns[i];
            if listed.sender.is_closed() {
                dest.conns.swap_remove(i);
                continue;
            }
            if listed.sender.is_ready() {
                let sender = match &listed.sender {
                    Sender::H2(s) => {
                        listed.used = Instant::now();
                        Sender::H2(s.clone())
                    }
                    Sender::H1(_) => dest.conns.swap_remove(i).sender,
                };
                return (Some(sender), host);
            }
            i += 1;
        }
        (None, host)
    }

    /// Lists a connection (again).
    fn put(&self, scheme: &Scheme, authority: &Authority, sender: Sender<B>) {
        let mut destinations = lock(&self.shared.destinations);
        if let Some(dest) = destinations
            .iter_mut()
            .find(|d| d.authority == *authority && d.scheme == *scheme)
        {
            dest.conns.push(Listed {
                sender,
                used: Instant::now(),
            });
        }
        drop(destinations);
        self.sweep_soon();
    }

    async fn connect(
        &self,
        uri: &Uri,
        scheme: &Scheme,
        authority: &Authority,
    ) -> Result<Sender<B>, SendError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| tower_service::Service::poll_ready(&mut connector, cx))
            .await
            .map_err(SendError::Connect)?;
        // The connector reads only the scheme, host and port of the request's own URI.
        let io = tower_service::Service::call(&mut connector, uri.clone())
            .await
            .map_err(SendError::Connect)?;
        if io.connected().is_negotiated_h2() {
            let (mut tx, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await?;
            // Spawned as it is: an `async` block awaiting it would hold it twice over. Its
            // failures reach the requests it carries, which report them.
            tokio::spawn(conn);
            tx.ready().await?;
            // Shared from the start: concurrent requests need not open their own.
            self.put(scheme, authority, Sender::H2(tx.clone()));
            Ok(Sender::H2(tx))
        } else {
            let (mut tx, conn) = http1::Builder::new().handshake(io).await?;
            tokio::spawn(conn);
            tx.ready().await?;
            Ok(Sender::H1(tx))
        }
    }

    /// Starts the sweeper unless it runs: it closes connections unused for the idle timeout,
    /// and stops when none is left.
    fn sweep_soon(&self) {
        if self.shared.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = Arc::downgrade(&self.shared);
        let every = self.idle_timeout.max(Duration::from_millis(100));
        let timeout = self.idle_timeout;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                let now = Instant::now();
                let mut destinations = lock(&shared.destinations);
                let mut left = 0;
                for dest in destinations.iter_mut() {
                    dest.conns.retain_mut(|c| {
                        if c.sender.is_closed() {
                            return false;
                        }
                        if !c.sender.is_ready() {
                            // Delivering a response: in use now.
                            c.used = now;
                        }
                        now.saturating_duration_since(c.used) < timeout
                    });
                    left += dest.conns.len();
                }
                if left == 0 {
                    shared.sweeping.store(false, Ordering::Release);
                    return;
                }
            }
        });
    }
}

/// The pool's lock, whatever a panicking holder left: its state is a list, never half-updated.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
