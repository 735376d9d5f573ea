//! Test harness: a programmable upstream that records what it receives, and the proxy started
//! in-process in front of it with an in-memory span exporter. Everything binds 127.0.0.1:0.
#![allow(dead_code)]

pub mod otlp;
pub mod process;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use genai_tap::app::App;
use genai_tap::config::Config;
use genai_tap::stats::Stats;
use genai_tap::telemetry::Telemetry;
use genai_tap::telemetry::memory::MemoryExporter;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version,
};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use opentelemetry::Value;
use opentelemetry_sdk::trace::SpanData;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// Every test is bounded: nothing here waits longer than this.
pub const LIMIT: Duration = Duration::from_secs(10);

pub fn fixture(name: &str) -> Bytes {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

/// A request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// One piece of a streamed reply.
#[derive(Debug)]
pub enum Chunk {
    Data(Bytes),
    /// Break the body with an error: the connection is torn down mid-message.
    Fail,
}

/// What the upstream answers.
pub enum Reply {
    Full {
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        body: Bytes,
    },
    Stream {
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        chunks: mpsc::Receiver<Chunk>,
    },
    /// Never answer (until the connection is dropped).
    Hang,
}

impl Reply {
    pub fn json(status: u16, body: impl Into<Bytes>) -> Reply {
        Reply::Full {
            status,
            headers: vec![("content-type", "application/json")],
            body: body.into(),
        }
    }

    /// A complete SSE body sent in one go.
    pub fn sse(body: impl Into<Bytes>) -> Reply {
        Reply::Full {
            status: 200,
            headers: vec![("content-type", "text/event-stream")],
            body: body.into(),
        }
    }

    /// An SSE body fed by the returned sender, chunk by chunk.
    pub fn sse_stream() -> (Reply, mpsc::Sender<Chunk>) {
        let (tx, rx) = mpsc::channel(64);
        (
            Reply::Stream {
                status: 200,
                headers: vec![("content-type", "text/event-stream")],
                chunks: rx,
            },
            tx,
        )
    }
}

struct ChunkBody(mpsc::Receiver<Chunk>);

impl Body for ChunkBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|c| match c {
            Some(Chunk::Data(b)) => Some(Ok(Frame::data(b))),
            Some(Chunk::Fail) => Some(Err(std::io::Error::other("upstream broke the stream"))),
            None => None,
        })
    }
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

/// A programmable upstream on 127.0.0.1 that records every request it receives.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    scheme: &'static str,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

/// The test TLS material in `tests/fixtures/tls`.
pub fn tls_fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// A TLS acceptor presenting the fixture `server.pem` (HTTP/2 and HTTP/1.1 by ALPN); with
/// `client_auth`, clients must present a certificate issued by the fixture CA.
pub fn tls_acceptor(client_auth: bool) -> tokio_rustls::TlsAcceptor {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = CertificateDer::pem_file_iter(tls_fixture("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(tls_fixture("server.key")).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if client_auth {
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(tls_fixture("ca.pem")).unwrap() {
            roots.add(ca.unwrap()).unwrap();
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_single_cert(certs, key).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

impl Upstream {
    pub async fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Upstream {
        Upstream::serve(None, handler).await
    }

    /// The upstream over TLS (`https://127.0.0.1:port`, certificate from the fixture CA).
    pub async fn start_tls(
        client_auth: bool,
        handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Upstream {
        Upstream::serve(Some(tls_acceptor(client_auth)), handler).await
    }

    async fn serve(
        tls: Option<tokio_rustls::TlsAcceptor>,
        handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Upstream {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let handler: Arc<Handler> = Arc::new(handler);
        let record = seen.clone();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let handler = handler.clone();
                let record = record.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let handler = handler.clone();
                        let record = record.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let seen = Seen {
                                method: parts.method,
                                uri: parts.uri,
                                version: parts.version,
                                headers: parts.headers,
                                body,
                            };
                            let reply = handler(&seen);
                            record.lock().unwrap().push(seen);
                            let response = match reply {
                                Reply::Full {
                                    status,
                                    headers,
                                    body,
                                } => respond(status, &headers, Either::Left(Full::new(body))),
                                Reply::Stream {
                                    status,
                                    headers,
                                    chunks,
                                } => respond(status, &headers, Either::Right(ChunkBody(chunks))),
                                Reply::Hang => {
                                    std::future::pending::<()>().await;
                                    unreachable!()
                                }
                            };
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(tls) => {
                            // A refused client certificate ends here, as a failed handshake.
                            if let Ok(stream) = tls.accept(stream).await {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                    }
                });
            }
        });
        Upstream {
            addr,
            seen,
            scheme,
            accepted,
        }
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// How many connections it has accepted.
    pub fn connections(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn respond<B>(status: u16, headers: &[(&'static str, &'static str)], body: B) -> Response<B> {
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    for (k, v) in headers {
        r.headers_mut()
            .append(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    r
}

/// The proxy, in-process, exporting into memory.
pub struct Proxy {
    pub addr: SocketAddr,
    pub app: App,
    pub spans: MemoryExporter,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream_url: &str) -> Proxy {
        Proxy::start_with(upstream_url, |_| {}).await
    }

    /// In front of an https upstream whose certificate the test CA signed.
    pub async fn start_trusting_test_ca(upstream_url: &str) -> Proxy {
        Proxy::start_with(upstream_url, |c| {
            c.upstream.ca_file = Some(tls_fixture("ca.pem"));
        })
        .await
    }

    pub async fn start_with(upstream_url: &str, configure: impl FnOnce(&mut Config)) -> Proxy {
        let mut config = Config::default();
        config.upstream.url = Some(upstream_url.to_owned());
        configure(&mut config);
        let stats = Arc::new(Stats::default());
        let spans = MemoryExporter::default();
        let telemetry = Telemetry::configured(&config, stats.clone())
            .exporter("memory", "memory", spans.clone())
            .build();
        Proxy::serve(config, telemetry, stats, spans).await
    }

    /// The proxy with the exporters its configuration names (OTLP, Application Insights...).
    pub async fn start_configured(
        upstream_url: &str,
        configure: impl FnOnce(&mut Config),
    ) -> Proxy {
        let mut config = Config::default();
        config.upstream.url = Some(upstream_url.to_owned());
        configure(&mut config);
        let stats = Arc::new(Stats::default());
        let telemetry = Telemetry::from_config(&config, stats.clone()).unwrap();
        Proxy::serve(config, telemetry, stats, MemoryExporter::default()).await
    }

    async fn serve(
        config: Config,
        telemetry: Telemetry,
        stats: Arc<Stats>,
        spans: MemoryExporter,
    ) -> Proxy {
        let app = App::new(&config, telemetry, stats).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = app.clone();
        let task = tokio::spawn(async move {
            serving
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Proxy {
            addr,
            app,
            spans,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every span exported once all exchanges so far have been recorded.
    pub async fn spans(&self) -> Vec<SpanData> {
        tokio::time::timeout(LIMIT, self.app.settle())
            .await
            .expect("observers settle");
        self.spans.spans()
    }

    /// The only span exported so far.
    pub async fn one_span(&self) -> SpanData {
        let mut spans = self.spans().await;
        assert_eq!(spans.len(), 1, "exactly one span: {spans:#?}");
        spans.remove(0)
    }

    /// Signals shutdown without waiting for the drain.
    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops the proxy and waits for its drain, up to LIMIT: whether it finished by then.
    pub async fn stop(mut self) -> bool {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(LIMIT, &mut self.task).await.is_ok()
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body.into())).unwrap();
    let response = tokio::time::timeout(LIMIT, client().request(req))
        .await
        .expect("an answer in time")
        .expect("a response");
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(LIMIT, body.collect())
        .await
        .expect("a body in time")
        .expect("a complete body")
        .to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Writes raw bytes on a new connection and reads until the proxy closes it (bounded).
pub async fn raw_exchange(addr: SocketAddr, request: impl AsRef<[u8]>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_ref()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(LIMIT, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

pub async fn post_json(url: &str, body: impl Into<Bytes>) -> Answer {
    send(
        Method::POST,
        url,
        &[
            ("content-type", "application/json"),
            ("authorization", "Bearer sk-test"),
        ],
        body,
    )
    .await
}

pub fn attr(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

pub fn attr_str(span: &SpanData, key: &str) -> Option<String> {
    attr(span, key).map(|v| v.as_str().into_owned())
}

pub fn attr_i64(span: &SpanData, key: &str) -> Option<i64> {
    match attr(span, key)? {
        Value::I64(i) => Some(i),
        other => panic!("{key} is not an integer: {other:?}"),
    }
}

pub fn strings(values: &[&str]) -> Value {
    Value::Array(opentelemetry::Array::String(
        values.iter().map(|s| (*s).to_owned().into()).collect(),
    ))
}
