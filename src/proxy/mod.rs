//! Forwarding: every request to the configured upstream, every response back, unchanged.
//!
//! Owns: where a request may go (only the configured upstream: absolute-form targets, CONNECT
//! and dot-segment paths are refused, so this is never an open proxy), hop-by-hop handling,
//! the upstream client, and the proxy's own answers (OpenAI-style JSON errors: 400 for a refused
//! request, 502 when the upstream cannot be reached, 504 when it does not answer in time).
//! GenAI requests get a tap; nothing else about them differs. Does not: parse bodies.

pub mod body;
pub mod credential;
pub mod hop;
pub mod route;

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderValue, Method, Request, Response, StatusCode, Version, header};
use hyper::body::Incoming;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};

use crate::client::{self, ClientError, Pool};
use crate::config::Config;
use crate::exchange::{Target, TransportError};
use crate::genai::{self, Api, inject, sse};
use crate::observer::{Observer, Start};
use crate::stats::Stats;
use crate::tap::{Ending, RequestBody, Tap, TapBody, TapEvent};
use crate::telemetry::context;
use crate::tls::CertFiles;
pub use body::{IdleError, IdleTimeout, ProxyBody, ResponseBodyError, StripBody, UpstreamBody};
use route::Unroutable;
pub use route::{Router, Upstream};

/// Requests the proxy answers itself instead of forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// `CONNECT`: tunnelling anywhere is what an open proxy does.
    Connect,
    /// `GET http://other.host/ HTTP/1.1`: the client picks the host; not here.
    AbsoluteForm,
    /// A target that is not a plain absolute path, or that climbs with dot segments.
    BadPath,
    /// No route matches the path and there is no default upstream.
    NoRoute,
}

impl From<Unroutable> for Refusal {
    fn from(u: Unroutable) -> Self {
        match u {
            Unroutable::BadPath => Refusal::BadPath,
            Unroutable::NoRoute => Refusal::NoRoute,
        }
    }
}

impl Refusal {
    fn response(self) -> Response<ProxyBody> {
        let (status, code, message) = match self {
            Refusal::Connect => (
                StatusCode::METHOD_NOT_ALLOWED,
                "connect_not_allowed",
                "genai-tap forwards to its configured upstream only; CONNECT is not supported",
            ),
            Refusal::AbsoluteForm => (
                StatusCode::BAD_REQUEST,
                "absolute_form_not_allowed",
                "genai-tap forwards to its configured upstream only; send an origin-form request target (a path)",
            ),
            Refusal::BadPath => (
                StatusCode::BAD_REQUEST,
                "invalid_path",
                "genai-tap refuses request paths with dot segments or without a leading slash",
            ),
            Refusal::NoRoute => (
                StatusCode::NOT_FOUND,
                "no_route",
                "genai-tap has no upstream configured for this path",
            ),
        };
        json_error(status, "invalid_request_error", code, message)
    }
}

/// An OpenAI-style error body, so SDKs surface the proxy's answers like the API's own.
fn json_error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "error": { "message": message, "type": kind, "param": null, "code": code }
    });
    let mut response = Response::new(ProxyBody::local(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn gateway_error(kind: TransportError, upstream: &Target) -> Response<ProxyBody> {
    let status = if kind == TransportError::Timeout {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::BAD_GATEWAY
    };
    let message = format!(
        "genai-tap could not get a response from the upstream {}:{} ({})",
        upstream.host,
        upstream.port,
        kind.as_str()
    );
    json_error(status, "upstream_error", kind.as_str(), &message)
}

/// What kind of transport failure an error (or any error in its source chain) is.
pub fn classify(error: &(dyn StdError + 'static)) -> TransportError {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            match io.kind() {
                ConnectionRefused => return TransportError::ConnectionRefused,
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => {
                    return TransportError::ConnectionReset;
                }
                TimedOut => return TransportError::Timeout,
                _ => {}
            }
        }
        if e.downcast_ref::<rustls::Error>().is_some() {
            return TransportError::Tls;
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                return TransportError::Timeout;
            }
            if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                return TransportError::ConnectionReset;
            }
            if h.is_parse() || h.is_parse_status() {
                return TransportError::Protocol;
            }
        }
        next = e.source();
    }
    match error.downcast_ref::<client::SendError>() {
        Some(client::SendError::Connect(_)) => TransportError::Connect,
        _ => TransportError::Other,
    }
}

fn classify_body_error(e: &ResponseBodyError) -> TransportError {
    match e {
        IdleError::Idle(_) => TransportError::Timeout,
        IdleError::Inner(e) => classify(e),
    }
}

type Sent = Result<Result<Response<Incoming>, client::SendError>, tokio::time::error::Elapsed>;

/// An upstream answer the proxy had to read whole, passed on as it came.
fn respond_buffered(
    mut parts: http::response::Parts,
    body: Bytes,
    mut tap: Tap,
    client_version: Version,
    call: (Instant, Instant),
) -> Response<ProxyBody> {
    hop::strip(&mut parts.headers);
    parts.version = client_version;
    tap.response_head(parts.status.as_u16(), &parts.headers, Some(call));
    tap.data(&body);
    tap.end(Ending::Complete);
    Response::from_parts(parts, ProxyBody::local(body))
}

thread_local! {
    /// Which of the serving threads this is; threads that are not one use the first pool.
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the calling thread as serving thread `index`, so its requests use its own pool.
pub fn set_worker(index: usize) {
    WORKER.set(index);
}

/// Forwards requests to the configured upstreams, observing the GenAI ones.
#[derive(Debug)]
pub struct Proxy {
    router: Router,
    /// One pool per serving thread (see [`set_worker`]): a request's upstream connection is
    /// driven by a task on the thread that serves the request. Bodies go boxed: each upstream
    /// connection's hyper channel allocates 32 request slots at once and keeps them for the
    /// connection's life, and a boxed body makes each slot 72 bytes smaller (2.3 KiB a
    /// connection, for one small allocation a request).
    pools: Box<[Pool<Box<UpstreamBody>>]>,
    response_timeout: Duration,
    body_idle_timeout: Duration,
    max_body: usize,
    /// Request headers whose values are exported (never credentials: config refuses those).
    export_headers: Vec<http::HeaderName>,
    /// Send the proxy span's `traceparent` upstream.
    propagate: bool,
    /// `baggage` keys copied onto spans.
    baggage_keys: Vec<String>,
    /// The header carrying `gen_ai.conversation.id`.
    conversation_header: Option<http::HeaderName>,
    observer: Observer,
    stats: Arc<Stats>,
}

impl Proxy {
    pub fn new(
        config: &Config,
        router: Router,
        observer: Observer,
        client_cert: Option<CertFiles>,
        stats: Arc<Stats>,
    ) -> Result<Proxy, ClientError> {
        let u = &config.upstream;
        let connector = client::connector(u.ca_file.as_deref(), client_cert, u.connect_timeout.0)?;
        Ok(Proxy {
            router,
            pools: (0..config.server.effective_workers())
                .map(|_| Pool::new(connector.clone(), u.pool_idle_timeout.0))
                .collect(),
            response_timeout: u.response_timeout.0,
            body_idle_timeout: u.body_idle_timeout.0,
            max_body: config.limits.max_observed_body.0,
            export_headers: config
                .capture
                .headers
                .iter()
                .filter_map(|h| {
                    http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).ok()
                })
                .collect(),
            propagate: config.telemetry.propagate,
            baggage_keys: config.telemetry.baggage_attributes.clone(),
            conversation_header: config
                .telemetry
                .conversation_id_header
                .as_deref()
                .and_then(|h| http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).ok()),
            observer,
            stats,
        })
    }

    /// Every upstream, for log lines.
    pub fn upstream_display(&self) -> String {
        self.router.describe().join(", ")
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    pub fn observer(&self) -> &Observer {
        &self.observer
    }

    /// How many threads serve the proxy port: one upstream pool each (`server.workers`).
    pub fn serving_threads(&self) -> usize {
        self.pools.len()
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    pub async fn handle(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let arrived = Instant::now();
        let wall = SystemTime::now();
        Stats::incr(&self.stats.requests);
        let routed = match self.admit(&req) {
            Ok(routed) => routed,
            Err(refusal) => {
                Stats::incr(&self.stats.refused);
                return refusal.response();
            }
        };
        let client_version = req.version();
        let detected = genai::detect(req.method(), &routed.path)
            .map(|d| (d.api, d.deployment.map(str::to_owned)));
        let upstream = routed.upstream;
        let injects = upstream.injects_usage(inject::api_version(req.uri().query()));
        let target = upstream.target(routed.uri.path());
        let (mut parts, body) = req.into_parts();
        hop::strip(&mut parts.headers);
        // The client named the proxy; the upstream gets its own name (from the URI).
        parts.headers.remove(header::HOST);
        if let Some(credential) = upstream.credential()
            && credential.apply(&mut parts.headers)
        {
            Stats::incr(&self.stats.credentials_added);
        }
        parts.uri = routed.uri;
        parts.version = Version::HTTP_11;

        let Some((api, deployment)) = detected else {
            let sent_at = Instant::now();
            let sent = self.send(parts, UpstreamBody::streaming(body)).await;
            return self.respond(sent, sent_at, None, false, client_version, &target);
        };
        Stats::incr(&self.stats.observed);
        let headers = self
            .export_headers
            .iter()
            .flat_map(|name| {
                parts.headers.get_all(name).iter().map(|v| {
                    (
                        name.clone(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
            })
            .collect();
        let trace = self
            .observer
            .telemetry()
            .begin_trace(&parts.headers, api.operation().as_str());
        if self.propagate {
            // The upstream's spans nest under the proxy's; the app's tracestate rides along.
            if let Some(value) = context::traceparent(trace.trace_id, trace.span_id, trace.sampled)
            {
                parts.headers.insert(context::TRACEPARENT, value);
            }
        }
        let baggage = if self.baggage_keys.is_empty() {
            Vec::new()
        } else {
            parts
                .headers
                .get_all(context::BAGGAGE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(context::parse_baggage)
                .filter(|(k, _)| self.baggage_keys.contains(k))
                .collect()
        };
        let conversation_id = self
            .conversation_header
            .as_ref()
            .and_then(|h| parts.headers.get(h))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut tap = self.observer.begin(Start {
            api,
            deployment,
            target: target.clone(),
            arrived,
            wall,
            headers,
            trace,
            baggage,
            conversation_id,
        });
        let (forward, observed) = match UpstreamBody::read(body, self.max_body).await {
            Ok(read) => read,
            Err(e) => {
                tracing::debug!(error = %e, "client request body failed");
                // The tap's drop records the exchange as cancelled by the client.
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "client_body_error",
                    "genai-tap could not read the request body",
                );
            }
        };
        if forward.is_buffered() {
            // The whole body is here: the expectation is already met.
            parts.headers.remove(header::EXPECT);
        }
        let injection = match &observed {
            RequestBody::Complete(original)
                if api == Api::ChatCompletions && injects && forward.is_buffered() =>
            {
                inject::include_usage(original).map(|b| (original.clone(), Bytes::from(b)))
            }
            _ => None,
        };
        tap.send(TapEvent::Request {
            body: observed,
            usage_injected: injection.is_some(),
        });
        let Some((original, modified)) = injection else {
            let sent_at = Instant::now();
            let sent = self.send(parts, forward).await;
            return self.respond(sent, sent_at, Some(tap), false, client_version, &target);
        };

        Stats::incr(&self.stats.usage_injected);
        let retry = (
            parts.method.clone(),
            parts.uri.clone(),
            parts.headers.clone(),
        );
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(modified.len()));
        let sent_at = Instant::now();
        let sent = self.send(parts, UpstreamBody::whole(modified)).await;
        let response = match sent {
            Ok(Ok(r)) if matches!(r.status().as_u16(), 400 | 422) => r,
            other => return self.respond(other, sent_at, Some(tap), true, client_version, &target),
        };
        let received_at = Instant::now();
        // A refusal may be about the field we added: read the answer to find out.
        let (answer_parts, answer) = response.into_parts();
        let answer = match tokio::time::timeout(
            self.response_timeout,
            Limited::new(answer, 64 << 10).collect(),
        )
        .await
        {
            Ok(Ok(collected)) => collected.to_bytes(),
            _ => return self.fail(TransportError::ConnectionReset, Some(tap), &target),
        };
        if memchr::memmem::find(&answer, b"stream_options").is_none() {
            // About the request itself: the client gets the answer as it came.
            return respond_buffered(
                answer_parts,
                answer,
                tap,
                client_version,
                (sent_at, received_at),
            );
        }
        if upstream.reject_usage_injection() {
            tracing::warn!(
                upstream = %upstream.display(),
                "the upstream rejected stream_options; usage injection is off for it from now on"
            );
        }
        Stats::incr(&self.stats.usage_injection_rejected);
        let (method, uri, headers) = retry;
        let mut again = Request::new(UpstreamBody::whole(original));
        *again.method_mut() = method;
        *again.uri_mut() = uri;
        *again.headers_mut() = headers;
        let sent_at = Instant::now();
        let sent = self.send_request(again).await;
        self.respond(sent, sent_at, Some(tap), false, client_version, &target)
    }

    // Not `async`: each `async fn` layer keeps its own copy of the request it is handed, and
    // the handler's future holds the deepest of them.
    fn send(
        &self,
        parts: http::request::Parts,
        body: UpstreamBody,
    ) -> Pin<Box<impl Future<Output = Sent> + '_>> {
        self.send_request(Request::from_parts(parts, body))
    }

    /// Boxed where it is built: returned by value, this 1 KB future was copied twice before its
    /// first poll (into a temporary, then into the handler's future); one allocation instead.
    fn send_request(
        &self,
        request: Request<UpstreamBody>,
    ) -> Pin<Box<impl Future<Output = Sent> + '_>> {
        let pool = &self.pools[WORKER.get() % self.pools.len()];
        Box::into_pin(Box::write(
            Box::new_uninit(),
            tokio::time::timeout(self.response_timeout, pool.send(request.map(Box::new))),
        ))
    }

    /// The client's response: the upstream's, tapped when observed (and with the traces of
    /// usage injection removed when `strip_usage`), or a gateway error.
    fn respond(
        &self,
        sent: Sent,
        sent_at: Instant,
        tap: Option<Tap>,
        strip_usage: bool,
        client_version: Version,
        target: &Target,
    ) -> Response<ProxyBody> {
        let received_at = Instant::now();
        let response = match sent {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                let kind = classify(&e);
                tracing::debug!(error = %e, kind = kind.as_str(), "upstream request failed");
                return self.fail(kind, tap, target);
            }
            Err(_elapsed) => return self.fail(TransportError::Timeout, tap, target),
        };
        let (mut parts, body) = response.into_parts();
        let body = IdleTimeout::new(body, self.body_idle_timeout);
        hop::strip(&mut parts.headers);
        parts.version = client_version;
        let Some(mut tap) = tap else {
            return Response::from_parts(parts, ProxyBody::Upstream(body));
        };
        tap.response_head(
            parts.status.as_u16(),
            &parts.headers,
            Some((sent_at, received_at)),
        );
        let tapped = TapBody::new(body, tap, classify_body_error);
        let streamed = parts
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| sse::is_event_stream(v.as_bytes()));
        let body = if strip_usage && parts.status == StatusCode::OK && streamed {
            // Removing chunks changes the length.
            parts.headers.remove(header::CONTENT_LENGTH);
            ProxyBody::Stripped(StripBody::new(tapped))
        } else {
            ProxyBody::Tapped(tapped)
        };
        Response::from_parts(parts, body)
    }

    fn fail(&self, kind: TransportError, tap: Option<Tap>, target: &Target) -> Response<ProxyBody> {
        Stats::incr(&self.stats.upstream_errors);
        if let Some(mut tap) = tap {
            tap.end(Ending::Failed(kind));
        }
        gateway_error(kind, target)
    }

    /// Where an acceptable request goes, or why it is refused.
    fn admit(&self, req: &Request<Incoming>) -> Result<route::Routed<'_>, Refusal> {
        if req.method() == Method::CONNECT {
            return Err(Refusal::Connect);
        }
        // HTTP/2 requests always carry :scheme and :authority; in HTTP/1 only an absolute-form
        // target does, and that asks a proxy to go wherever the client says.
        if req.version() < Version::HTTP_2 && req.uri().scheme().is_some() {
            return Err(Refusal::AbsoluteForm);
        }
        Ok(self.router.route(req.uri().path(), req.uri().query())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_in_the_source_chain_are_classified() {
        #[derive(Debug)]
        struct Wrapper(std::io::Error);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("wrapper")
            }
        }
        impl StdError for Wrapper {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let refused = Wrapper(std::io::ErrorKind::ConnectionRefused.into());
        assert_eq!(classify(&refused), TransportError::ConnectionRefused);
        let reset = Wrapper(std::io::ErrorKind::ConnectionReset.into());
        assert_eq!(classify(&reset), TransportError::ConnectionReset);
        let other = Wrapper(std::io::ErrorKind::Other.into());
        assert_eq!(classify(&other), TransportError::Other);
    }
}
