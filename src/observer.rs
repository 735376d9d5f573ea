//! The observer: one task per exchange, off the forwarding path, that folds the tap's events
//! into an [`Exchange`] and hands it to telemetry.
//!
//! Owns: [`Assembly`] (a synchronous fold over [`TapEvent`]s, testable without IO) and the task
//! that drives it, isolating any panic in parsing from the request. Does not: forward bytes,
//! or build spans (telemetry does, from the finished `Exchange`).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};

use crate::codec::Decoder;
use crate::exchange::{ApiError, Exchange, Failure, RequestFacts, ResponseFacts, Target};
use crate::genai::Operation;
use crate::genai::chat::{self, ChatStream};
use crate::genai::sse::SseDecoder;
use crate::stats::{LogLimiter, Stats};
use crate::tap::{Ending, RequestBody, Tap, TapEvent};
use crate::telemetry::Telemetry;

/// Bounds on what one exchange's observation may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of a request or (decoded) non-streaming response body kept for parsing.
    pub max_body: usize,
    /// Bytes of one SSE event.
    pub max_event: usize,
    /// Tap events in flight between the forwarding path and the observer.
    pub channel: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 8 << 20,
            max_event: 1 << 20,
            channel: 1024,
        }
    }
}

/// What is known when a request arrives.
#[derive(Debug, Clone)]
pub struct Start {
    pub operation: Operation,
    /// The Azure deployment from the path, used as the model when the body names none.
    pub deployment: Option<String>,
    pub target: Target,
    pub arrived: Instant,
    pub wall: SystemTime,
}

#[derive(Debug)]
enum Body {
    /// No response head yet.
    Awaiting,
    /// A complete JSON document, collected up to the limit.
    Json { parts: Vec<Bytes>, len: usize },
    /// Server-Sent Events, decoded as they arrive.
    Sse(Box<SseState>),
    /// Not observed any further; why.
    Skipped(String),
}

#[derive(Debug)]
struct SseState {
    decoder: SseDecoder,
    stream: ChatStream,
}

/// The fold from tap events to an [`Exchange`].
#[derive(Debug)]
pub struct Assembly {
    start: Start,
    limits: Limits,
    request: RequestFacts,
    request_issue: Option<String>,
    status: Option<u16>,
    decoder: Option<Decoder>,
    body: Body,
    first_data: Option<Instant>,
    ending: Option<(Ending, Instant)>,
    lost: bool,
}

impl Assembly {
    pub fn new(start: Start, limits: Limits) -> Self {
        Assembly {
            start,
            limits,
            request: RequestFacts::default(),
            request_issue: None,
            status: None,
            decoder: None,
            body: Body::Awaiting,
            first_data: None,
            ending: None,
            lost: false,
        }
    }

    pub fn apply(&mut self, event: TapEvent) {
        match event {
            TapEvent::Request(RequestBody::Complete(bytes)) => {
                let (facts, issue) = chat::parse_request(&bytes);
                self.request = facts;
                self.request_issue = issue;
            }
            TapEvent::Request(RequestBody::Unobserved(why)) => self.request_issue = Some(why),
            TapEvent::ResponseHead {
                status,
                content_type,
                content_encoding,
                at: _,
            } => {
                self.status = Some(status);
                let encoding = content_encoding.as_ref().map_or(&b""[..], |v| v.as_bytes());
                self.body = match Decoder::for_encoding(encoding, self.limits.max_body) {
                    Err(e) => Body::Skipped(e.to_string()),
                    Ok(decoder) => {
                        self.decoder = decoder;
                        if content_type.is_some_and(|v| is_event_stream(v.as_bytes())) {
                            Body::Sse(Box::new(SseState {
                                decoder: SseDecoder::new(self.limits.max_event),
                                stream: ChatStream::default(),
                            }))
                        } else {
                            Body::Json {
                                parts: Vec::new(),
                                len: 0,
                            }
                        }
                    }
                };
            }
            TapEvent::Data(bytes, at) => {
                self.first_data.get_or_insert(at);
                self.feed(bytes);
            }
            TapEvent::End { ending, lost, at } => {
                self.ending = Some((ending, at));
                self.lost = lost;
            }
        }
    }

    fn feed(&mut self, bytes: Bytes) {
        let Assembly {
            decoder,
            body,
            limits,
            ..
        } = self;
        let result = match decoder {
            Some(d) => d.push(&bytes, &mut |out| {
                consume(body, limits, Bytes::copy_from_slice(out))
            }),
            None => {
                consume(body, limits, bytes);
                Ok(())
            }
        };
        if let Err(e) = result {
            *body = Body::Skipped(e.to_string());
        }
    }

    /// The exchange as observed. Without an `End` event the tap was lost: cancelled.
    pub fn finish(mut self) -> Exchange {
        let (ending, ended_at) = self.ending.unwrap_or((Ending::Cancelled, Instant::now()));
        let mut response = ResponseFacts::default();
        let mut response_issue = None;
        let mut api_error: Option<ApiError> = None;
        let mut in_stream_error = None;
        let mut streamed = false;
        if ending == Ending::Complete
            && let Some(d) = self.decoder.as_mut()
        {
            let body = &mut self.body;
            let limits = &self.limits;
            if let Err(e) = d.finish(&mut |out| consume(body, limits, Bytes::copy_from_slice(out)))
            {
                self.body = Body::Skipped(e.to_string());
            }
        }
        let status = self.status.unwrap_or(0);
        match self.body {
            Body::Awaiting => {}
            Body::Json { parts, .. } => {
                if ending == Ending::Complete {
                    let bytes = concat(parts);
                    if status >= 400 {
                        api_error = chat::parse_api_error(&bytes);
                    } else {
                        let (facts, issue) = chat::parse_response(&bytes);
                        response = facts;
                        response_issue = issue;
                    }
                }
            }
            Body::Sse(sse) => {
                let SseState {
                    mut decoder,
                    stream,
                } = *sse;
                streamed = true;
                let truncated = decoder.finish();
                let oversized = decoder.stats().oversized;
                let summary = stream.finish();
                response = summary.facts;
                in_stream_error = summary.error;
                response_issue = summary
                    .issue
                    .or_else(|| {
                        (oversized > 0)
                            .then(|| format!("{oversized} events over the size limit skipped"))
                    })
                    .or_else(|| {
                        (truncated && ending == Ending::Complete)
                            .then(|| "stream ended inside an event".to_owned())
                    });
            }
            Body::Skipped(why) => response_issue = Some(why),
        }
        if self.lost {
            response_issue =
                Some("observer fell behind; part of the response was not observed".to_owned());
        }
        let failure = match ending {
            Ending::Failed(t) => Some(Failure::Transport(t)),
            Ending::Cancelled => Some(Failure::Cancelled),
            Ending::Complete if status >= 400 => Some(Failure::Status(status)),
            Ending::Complete => in_stream_error.clone().map(Failure::InStream),
        };
        let mut request = self.request;
        if request.model.is_none() {
            request.model = self.start.deployment;
        }
        Exchange {
            operation: self.start.operation,
            target: self.start.target,
            start: self.start.wall,
            duration: ended_at.saturating_duration_since(self.start.arrived),
            request,
            response,
            status: self.status,
            streamed,
            time_to_first_chunk: self
                .first_data
                .filter(|_| streamed)
                .map(|t| t.saturating_duration_since(self.start.arrived)),
            failure,
            api_error: api_error.or(in_stream_error),
            request_issue: self.request_issue,
            response_issue,
        }
    }
}

fn consume(body: &mut Body, limits: &Limits, bytes: Bytes) {
    match body {
        Body::Json { parts, len } => {
            *len += bytes.len();
            if *len > limits.max_body {
                *body = Body::Skipped(format!(
                    "response body exceeds the observation limit of {} bytes",
                    limits.max_body
                ));
            } else {
                parts.push(bytes);
            }
        }
        Body::Sse(sse) => {
            let SseState { decoder, stream } = &mut **sse;
            decoder.push(&bytes, &mut |e| stream.push(e.data));
        }
        Body::Awaiting | Body::Skipped(_) => {}
    }
}

fn concat(mut parts: Vec<Bytes>) -> Bytes {
    match parts.len() {
        0 => Bytes::new(),
        1 => parts.pop().unwrap_or_default(),
        _ => parts.concat().into(),
    }
}

fn is_event_stream(content_type: &[u8]) -> bool {
    let essence = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default();
    essence
        .trim_ascii()
        .eq_ignore_ascii_case(b"text/event-stream")
}

/// Starts one observer task per exchange.
#[derive(Debug, Clone)]
pub struct Observer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    telemetry: Telemetry,
    limits: Limits,
    stats: Arc<Stats>,
    panics: LogLimiter,
    /// Observer tasks not yet finished, and a wake-up for whoever waits for none.
    active: AtomicUsize,
    idle: Notify,
}

impl Observer {
    pub fn new(telemetry: Telemetry, limits: Limits, stats: Arc<Stats>) -> Self {
        Observer {
            inner: Arc::new(Inner {
                telemetry,
                limits,
                stats,
                panics: LogLimiter::new(Duration::from_secs(10)),
                active: AtomicUsize::new(0),
                idle: Notify::new(),
            }),
        }
    }

    pub fn telemetry(&self) -> &Telemetry {
        &self.inner.telemetry
    }

    /// Opens the tap for one exchange and starts its observer task.
    pub fn begin(&self, start: Start) -> Tap {
        let (tap, rx) = Tap::channel(self.inner.limits.channel);
        self.inner.active.fetch_add(1, Ordering::AcqRel);
        let inner = self.inner.clone();
        tokio::spawn(async move {
            observe(&inner, start, rx).await;
            if inner.active.fetch_sub(1, Ordering::AcqRel) == 1 {
                inner.idle.notify_waiters();
            }
        });
        tap
    }

    /// Returns once every exchange begun so far has been recorded (or abandoned).
    pub async fn settled(&self) {
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inner.active.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

async fn observe(inner: &Inner, start: Start, mut rx: mpsc::Receiver<TapEvent>) {
    let mut assembly = Assembly::new(start, inner.limits);
    while let Some(event) = rx.recv().await {
        if catch_unwind(AssertUnwindSafe(|| assembly.apply(event))).is_err() {
            return observer_panicked(inner);
        }
    }
    if assembly.lost {
        Stats::incr(&inner.stats.observation_lost);
    }
    let recorded = catch_unwind(AssertUnwindSafe(|| {
        let exchange = assembly.finish();
        if exchange.request_issue.is_some() || exchange.response_issue.is_some() {
            Stats::incr(&inner.stats.parse_failures);
        }
        inner.telemetry.record(&exchange);
    }));
    if recorded.is_err() {
        observer_panicked(inner);
    }
}

fn observer_panicked(inner: &Inner) {
    Stats::incr(&inner.stats.observer_panics);
    if let Some(suppressed) = inner.panics.check() {
        tracing::error!(
            suppressed,
            "observer panicked; the exchange was forwarded but not recorded"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::TransportError;
    use http::HeaderValue;

    fn start() -> Start {
        Start {
            operation: Operation::Chat,
            deployment: Some("my-deployment".into()),
            target: Target {
                provider: "openai".into(),
                host: "api.openai.com".into(),
                port: 443,
            },
            arrived: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    fn head(status: u16, content_type: &'static str) -> TapEvent {
        TapEvent::ResponseHead {
            status,
            content_type: Some(HeaderValue::from_static(content_type)),
            content_encoding: None,
            at: Instant::now(),
        }
    }

    fn data(s: &'static [u8]) -> TapEvent {
        TapEvent::Data(Bytes::from_static(s), Instant::now())
    }

    fn end(ending: Ending) -> TapEvent {
        TapEvent::End {
            ending,
            lost: false,
            at: Instant::now(),
        }
    }

    fn run(events: Vec<TapEvent>) -> Exchange {
        let mut a = Assembly::new(start(), Limits::default());
        for e in events {
            a.apply(e);
        }
        a.finish()
    }

    #[test]
    fn non_streaming_response_split_in_frames_is_parsed_whole() {
        let ex = run(vec![
            TapEvent::Request(RequestBody::Complete(Bytes::from_static(
                br#"{"model":"gpt-4o","messages":[]}"#,
            ))),
            head(200, "application/json"),
            data(br#"{"id":"c1","model":"gpt-4o-2024","choi"#),
            data(br#"ces":[{"index":0,"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#),
            end(Ending::Complete),
        ]);
        assert_eq!(ex.request.model.as_deref(), Some("gpt-4o"));
        assert_eq!(ex.response.id.as_deref(), Some("c1"));
        assert_eq!(ex.response.usage.output_tokens, Some(4));
        assert_eq!(ex.failure, None);
        assert!(!ex.streamed);
        assert_eq!(ex.time_to_first_chunk, None);
    }

    #[test]
    fn stream_is_assembled_and_time_to_first_chunk_kept() {
        let ex = run(vec![
            head(200, "text/event-stream; charset=utf-8"),
            data(b"data: {\"id\":\"s1\",\"choices\":[{\"index\":0,\"finish_reason\":null}]}\n\n"),
            data(b"data: {\"id\":\"s1\",\"choices\":[{\"index\":0,\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n"),
            end(Ending::Complete),
        ]);
        assert!(ex.streamed);
        assert_eq!(ex.response.finish_reasons, vec!["stop"]);
        assert!(ex.time_to_first_chunk.is_some());
        assert_eq!(ex.request.model.as_deref(), Some("my-deployment"));
    }

    #[test]
    fn http_error_keeps_the_error_identifiers_only() {
        let ex = run(vec![
            head(429, "application/json"),
            data(br#"{"error":{"message":"slow down, sk-secret","type":"requests","code":"rate_limit_exceeded"}}"#),
            end(Ending::Complete),
        ]);
        assert_eq!(ex.failure, Some(Failure::Status(429)));
        assert_eq!(
            ex.api_error.as_ref().and_then(|e| e.identifier()),
            Some("rate_limit_exceeded")
        );
        assert!(!format!("{ex:?}").contains("sk-secret"));
    }

    #[test]
    fn cancelled_stream_records_what_arrived() {
        let ex = run(vec![
            head(200, "text/event-stream"),
            data(b"data: {\"id\":\"s1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{}}]}\n\n"),
            end(Ending::Cancelled),
        ]);
        assert_eq!(ex.failure, Some(Failure::Cancelled));
        assert_eq!(ex.response.id.as_deref(), Some("s1"));
        assert_eq!(ex.response.finish_reasons, vec!["error"]);
    }

    #[test]
    fn no_end_event_means_cancelled_and_transport_failure_wins_over_status() {
        assert_eq!(run(vec![]).failure, Some(Failure::Cancelled));
        let ex = run(vec![
            head(500, "application/json"),
            end(Ending::Failed(TransportError::ConnectionReset)),
        ]);
        assert_eq!(
            ex.failure,
            Some(Failure::Transport(TransportError::ConnectionReset))
        );
    }

    #[test]
    fn in_stream_error_fails_the_exchange() {
        let ex = run(vec![
            head(200, "text/event-stream"),
            data(b"data: {\"error\":{\"type\":\"server_error\",\"code\":\"overloaded\"}}\n\n"),
            end(Ending::Complete),
        ]);
        assert_eq!(ex.failure.unwrap().error_type(), "overloaded");
    }

    #[test]
    fn gzip_response_is_decoded_for_observation() {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(br#"{"id":"gz","choices":[{"index":0,"finish_reason":"stop"}]}"#)
            .unwrap();
        let z = Bytes::from(e.finish().unwrap());
        let mut a = Assembly::new(start(), Limits::default());
        a.apply(TapEvent::ResponseHead {
            status: 200,
            content_type: Some(HeaderValue::from_static("application/json")),
            content_encoding: Some(HeaderValue::from_static("gzip")),
            at: Instant::now(),
        });
        a.apply(TapEvent::Data(z.slice(..10), Instant::now()));
        a.apply(TapEvent::Data(z.slice(10..), Instant::now()));
        a.apply(end(Ending::Complete));
        let ex = a.finish();
        assert_eq!(ex.response.id.as_deref(), Some("gz"));
        assert_eq!(ex.response_issue, None);
    }

    #[test]
    fn oversized_body_is_skipped_with_a_reason() {
        let mut a = Assembly::new(
            start(),
            Limits {
                max_body: 8,
                ..Limits::default()
            },
        );
        a.apply(head(200, "application/json"));
        a.apply(data(b"{\"id\":\"0123456789\"}"));
        a.apply(end(Ending::Complete));
        let ex = a.finish();
        assert_eq!(ex.response.id, None);
        assert!(ex.response_issue.unwrap().contains("observation limit"));
    }

    #[test]
    fn lost_events_are_reported() {
        let ex = run(vec![
            head(200, "text/event-stream"),
            TapEvent::End {
                ending: Ending::Complete,
                lost: true,
                at: Instant::now(),
            },
        ]);
        assert!(ex.response_issue.unwrap().contains("fell behind"));
    }
}
