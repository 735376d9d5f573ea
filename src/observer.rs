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
use http::{HeaderName, HeaderValue};
use tokio::sync::{Notify, mpsc};

use crate::codec::Decoder;
use crate::config::CaptureOnly;
use crate::exchange::{
    ApiError, Exchange, Failure, RequestFacts, Target, TraceStart, UpstreamHeaders,
};
use crate::genai::sse::SseDecoder;
use crate::genai::{self, Api, ResponseSummary};
use crate::redact::Redactor;
use crate::stats::{LogLimiter, Stats};
use crate::tap::{Batch, Ending, RequestBody, ResponseHead, Tap, TapEvent, Timing};
use crate::telemetry::Telemetry;

/// Chunk gaps kept per stream; a longer stream keeps its first ones (16 KiB at most).
const MAX_GAPS: usize = 4096;

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
    pub api: Api,
    /// The Azure deployment from the path, used as the model when the body names none.
    pub deployment: Option<String>,
    pub target: Target,
    pub arrived: Instant,
    pub wall: SystemTime,
    /// Request headers on the export allowlist, as sent (text copied out: a `HeaderValue` is a
    /// slice of the connection's read buffer and would keep all of it for the exchange).
    pub headers: Vec<(HeaderName, String)>,
    pub trace: TraceStart,
    /// Configured `baggage` members, as sent.
    pub baggage: Vec<(String, String)>,
    /// The configured conversation-id header's value.
    pub conversation_id: Option<String>,
}

/// Which exchanges keep their captured content, and the redactor it goes through.
#[derive(Debug, Clone)]
pub struct ContentCapture {
    /// The configured rules, or none in `full` mode.
    pub redactor: Arc<Redactor>,
    pub sample_rate: f64,
    pub only: CaptureOnly,
    pub slow_threshold: Duration,
}

impl ContentCapture {
    /// `draw` is uniform in [0, 1): content sampling is independent of trace sampling.
    fn keeps(&self, failed: bool, duration: Duration, draw: f64) -> bool {
        let slow = duration >= self.slow_threshold;
        let wanted = match self.only {
            CaptureOnly::All => true,
            CaptureOnly::Failed => failed,
            CaptureOnly::Slow => slow,
            CaptureOnly::FailedOrSlow => failed || slow,
        };
        wanted && draw < self.sample_rate
    }
}

/// How an exchange's text is treated on its way to telemetry.
#[derive(Debug, Clone, Default)]
pub struct Privacy {
    /// Present when content is captured.
    pub content: Option<ContentCapture>,
    /// Rules for free-text attributes (allowlisted header values, conversation ids), applied
    /// whatever the capture mode.
    pub attributes: Arc<Redactor>,
}

impl Privacy {
    /// Content captured for every exchange, through `redactor`.
    pub fn capturing(redactor: Redactor) -> Privacy {
        Privacy {
            content: Some(ContentCapture {
                redactor: Arc::new(redactor),
                sample_rate: 1.0,
                only: CaptureOnly::All,
                slow_threshold: Duration::MAX,
            }),
            attributes: Arc::default(),
        }
    }
}

/// A uniform draw in [0, 1) from a per-thread xorshift generator.
fn draw() -> f64 {
    use std::cell::Cell;
    use std::hash::{BuildHasher, Hasher};
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            std::collections::hash_map::RandomState::new().build_hasher().finish() | 1,
        );
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
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
    stream: genai::Stream,
    last_chunk: Option<Instant>,
    gaps_us: Vec<u32>,
}

impl SseState {
    fn feed(&mut self, bytes: &[u8], at: Instant) {
        let SseState {
            decoder,
            stream,
            last_chunk,
            gaps_us,
        } = self;
        decoder.push(bytes, &mut |e| {
            if stream.push(e.data) {
                if let Some(previous) = *last_chunk
                    && gaps_us.len() < MAX_GAPS
                {
                    let gap = at.saturating_duration_since(previous).as_micros();
                    gaps_us.push(u32::try_from(gap).unwrap_or(u32::MAX));
                }
                *last_chunk = Some(at);
            }
        });
    }
}

/// What an exchange keeps of its response head. Owned: the head's header values are slices of
/// the upstream connection's read buffer, and holding one for as long as a stream stays open
/// would keep that whole buffer (8 KiB) alive and make hyper allocate another.
#[derive(Debug)]
struct Head {
    status: u16,
    timing: Option<Timing>,
    upstream: UpstreamHeaders,
}

/// The fold from tap events to an [`Exchange`].
#[derive(Debug)]
pub struct Assembly {
    start: Start,
    limits: Limits,
    privacy: Privacy,
    /// The request body, kept for content capture only.
    request_body: Option<Bytes>,
    request: RequestFacts,
    request_issue: Option<String>,
    usage_injected: bool,
    head: Option<Head>,
    decoder: Option<Decoder>,
    body: Body,
    first_data: Option<Instant>,
    ending: Option<(Ending, Instant)>,
    lost: bool,
}

impl Assembly {
    /// Boxed, as the observer task keeps it (see [`Observer::begin`]).
    pub fn new(start: Start, limits: Limits, privacy: Privacy) -> Box<Self> {
        // Written where it is allocated, not built on the stack and copied into the box.
        Box::write(
            Box::new_uninit(),
            Assembly {
                start,
                limits,
                privacy,
                request_body: None,
                request: RequestFacts::default(),
                request_issue: None,
                usage_injected: false,
                head: None,
                decoder: None,
                body: Body::Awaiting,
                first_data: None,
                ending: None,
                lost: false,
            },
        )
    }

    fn capture(&self) -> bool {
        self.privacy.content.is_some()
    }

    pub fn apply(&mut self, event: TapEvent) {
        match event {
            TapEvent::Request {
                body: RequestBody::Complete(bytes),
                usage_injected,
            } => {
                fault::inject(&bytes);
                let (facts, issue) = genai::parse_request(self.start.api, &bytes);
                self.request = facts;
                self.request_issue = issue;
                self.usage_injected = usage_injected;
                if self.capture() {
                    self.request_body = Some(bytes);
                }
            }
            TapEvent::Request {
                body: RequestBody::Unobserved(why),
                ..
            } => self.request_issue = Some(why),
            TapEvent::ResponseHead(head) => {
                let encoding = head
                    .content_encoding
                    .as_ref()
                    .map_or(&b""[..], HeaderValue::as_bytes);
                self.body = match Decoder::for_encoding(encoding, self.limits.max_body) {
                    Err(e) => Body::Skipped(e.to_string()),
                    Ok(decoder) => {
                        self.decoder = decoder;
                        if head
                            .content_type
                            .as_ref()
                            .is_some_and(|v| crate::genai::sse::is_event_stream(v.as_bytes()))
                        {
                            Body::Sse(Box::new(SseState {
                                decoder: SseDecoder::new(self.limits.max_event),
                                stream: genai::Stream::new(self.start.api, self.capture()),
                                last_chunk: None,
                                gaps_us: Vec::new(),
                            }))
                        } else {
                            Body::Json {
                                parts: Vec::new(),
                                len: 0,
                            }
                        }
                    }
                };
                self.head = Some(Head {
                    status: head.status,
                    timing: head.timing,
                    upstream: upstream_headers(&head),
                });
            }
            TapEvent::Data(bytes, at) => {
                self.first_data.get_or_insert(at);
                self.feed(bytes, at);
            }
            TapEvent::End { ending, lost, at } => {
                self.ending = Some((ending, at));
                self.lost = lost;
            }
        }
    }

    fn feed(&mut self, bytes: Bytes, at: Instant) {
        let Assembly {
            decoder,
            body,
            limits,
            ..
        } = self;
        let result = match decoder {
            Some(d) => d.push(&bytes, &mut |out| {
                consume(body, limits, Bytes::copy_from_slice(out), at)
            }),
            None => {
                consume(body, limits, bytes, at);
                Ok(())
            }
        };
        if let Err(e) = result {
            *body = Body::Skipped(e.to_string());
        }
    }

    /// The exchange as observed. Without an `End` event the tap was lost: cancelled.
    /// Taken boxed, so the fields move out of the box one by one: a by-value `self` copied the
    /// whole assembly out of its box first.
    pub fn finish(mut self: Box<Self>) -> Exchange {
        // The clock is read only for an exchange that never ended (`unwrap_or` read it always).
        let (ending, ended_at) = self
            .ending
            .unwrap_or_else(|| (Ending::Cancelled, Instant::now()));
        if ending == Ending::Complete
            && let Some(d) = self.decoder.as_mut()
        {
            let body = &mut self.body;
            let limits = &self.limits;
            if let Err(e) =
                d.finish(&mut |out| consume(body, limits, Bytes::copy_from_slice(out), ended_at))
            {
                self.body = Body::Skipped(e.to_string());
            }
        }
        let api = self.start.api;
        let capture = self.capture();
        let head = self.head.take();
        let status = head.as_ref().map_or(0, |h| h.status);
        let mut summary = ResponseSummary::default();
        let mut api_error: Option<ApiError> = None;
        let mut streamed = false;
        let mut gaps_us = Vec::new();
        match self.body {
            Body::Awaiting => {}
            Body::Json { parts, .. } => {
                if ending == Ending::Complete {
                    let bytes = concat(parts);
                    if status >= 400 {
                        api_error = genai::parse_api_error(&bytes);
                    } else {
                        summary = genai::parse_response(api, &bytes, capture);
                    }
                }
            }
            Body::Sse(sse) => {
                let SseState {
                    mut decoder,
                    stream,
                    gaps_us: gaps,
                    ..
                } = *sse;
                streamed = true;
                gaps_us = gaps;
                let truncated = decoder.finish();
                let oversized = decoder.stats().oversized;
                summary = stream.finish();
                if summary.issue.is_none() {
                    summary.issue = (oversized > 0)
                        .then(|| format!("{oversized} events over the size limit skipped"))
                        .or_else(|| {
                            (truncated && ending == Ending::Complete)
                                .then(|| "stream ended inside an event".to_owned())
                        });
                }
            }
            Body::Skipped(why) => summary.issue = Some(why),
        }
        if self.lost {
            summary.issue =
                Some("observer fell behind; part of the response was not observed".to_owned());
        }
        let in_stream_error = summary.error.take();
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
        if request.conversation_id.is_none() {
            request.conversation_id = summary.conversation_id.take();
        }
        let duration = ended_at.saturating_duration_since(self.start.arrived);
        let content = self
            .privacy
            .content
            .as_ref()
            .filter(|c| c.keeps(failure.is_some(), duration, draw()))
            .map(|c| {
                let input = self
                    .request_body
                    .as_deref()
                    .and_then(|body| genai::content::request_content(api, body))
                    .unwrap_or_default();
                c.redactor.seal(input, std::mem::take(&mut summary.output))
            });
        let rules = &self.privacy.attributes;
        // The app's explicit header wins over what the body says.
        if let Some(id) = self.start.conversation_id.take() {
            request.conversation_id = Some(id);
        }
        if let Some(id) = &mut request.conversation_id
            && let std::borrow::Cow::Owned(redacted) = rules.text(id)
        {
            *id = redacted;
        }
        let request_headers = self
            .start
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), rules.text(value).into_owned()))
            .collect();
        let baggage = std::mem::take(&mut self.start.baggage)
            .into_iter()
            .map(|(k, v)| {
                let v = rules.text(&v).into_owned();
                (k, v)
            })
            .collect();
        let overhead = head.as_ref().and_then(|h| h.timing).map(|t| {
            t.sent.saturating_duration_since(self.start.arrived)
                + t.returned.saturating_duration_since(t.received)
        });
        Exchange {
            api,
            trace: self.start.trace,
            baggage,
            overhead,
            target: self.start.target,
            start: self.start.wall,
            duration,
            request,
            request_headers,
            usage_injected: self.usage_injected,
            status: head.as_ref().map(|h| h.status),
            streamed,
            time_to_first_chunk: self
                .first_data
                .filter(|_| streamed)
                .map(|t| t.saturating_duration_since(self.start.arrived)),
            chunk_gaps_us: gaps_us,
            upstream: head.map(|h| h.upstream).unwrap_or_default(),
            content_filter: summary.content_filter,
            failure,
            api_error: api_error.or(in_stream_error),
            request_issue: self.request_issue,
            response_issue: summary.issue,
            response: summary.facts,
            content,
        }
    }
}

fn text(v: &Option<HeaderValue>) -> Option<String> {
    v.as_ref()
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(128).collect())
}

fn number(v: &Option<HeaderValue>) -> Option<i64> {
    v.as_ref()?.to_str().ok()?.trim().parse().ok()
}

fn upstream_headers(head: &ResponseHead) -> UpstreamHeaders {
    UpstreamHeaders {
        request_id: text(&head.request_id),
        apim_request_id: text(&head.apim_request_id),
        region: text(&head.region),
        ratelimit_remaining_tokens: number(&head.ratelimit_remaining_tokens),
        ratelimit_remaining_requests: number(&head.ratelimit_remaining_requests),
    }
}

fn consume(body: &mut Body, limits: &Limits, bytes: Bytes, at: Instant) {
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
        Body::Sse(sse) => sse.feed(&bytes, at),
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

/// Starts one observer task per exchange.
#[derive(Debug, Clone)]
pub struct Observer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    telemetry: Telemetry,
    limits: Limits,
    privacy: Privacy,
    stats: Arc<Stats>,
    panics: LogLimiter,
    /// Observer tasks not yet finished, and a wake-up for whoever waits for none.
    active: AtomicUsize,
    idle: Notify,
}

impl Observer {
    pub fn new(telemetry: Telemetry, limits: Limits, privacy: Privacy, stats: Arc<Stats>) -> Self {
        Observer {
            inner: Arc::new(Inner {
                telemetry,
                limits,
                privacy,
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
        let (mut tap, rx) = Tap::channel(self.inner.limits.channel);
        self.inner.active.fetch_add(1, Ordering::AcqRel);
        let inner = self.inner.clone();
        // Taken now, inside the runtime: the first hand-over may come from a body's drop.
        let runtime = tokio::runtime::Handle::current();
        tap.on_first_batch(Box::new(move || {
            // Boxed before the spawn, so the task's future holds a pointer rather than the
            // assembly (or the start it is made from): tokio moves a future whole, into its
            // task cell on spawn and at each change of the cell's stage, six times an exchange.
            let assembly = Assembly::new(start, inner.limits, inner.privacy.clone());
            runtime.spawn(async move {
                observe(&inner, assembly, rx).await;
                if inner.active.fetch_sub(1, Ordering::AcqRel) == 1 {
                    inner.idle.notify_waiters();
                }
            });
        }));
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

async fn observe(inner: &Inner, mut assembly: Box<Assembly>, mut rx: mpsc::Receiver<Batch>) {
    while let Some(batch) = rx.recv().await {
        let applied = catch_unwind(AssertUnwindSafe(|| {
            for event in batch {
                assembly.apply(event);
            }
        }));
        if applied.is_err() {
            return observer_panicked(inner);
        }
    }
    if assembly.lost {
        Stats::incr(&inner.stats.observation_lost);
    }
    let recorded = catch_unwind(AssertUnwindSafe(|| {
        let mut exchange = assembly.finish();
        inner.stats.exchange(
            exchange.api.operation().as_str(),
            exchange.failure.is_some(),
        );
        if exchange.request_issue.is_some() || exchange.response_issue.is_some() {
            Stats::incr(&inner.stats.parse_failures);
        }
        inner.telemetry.record(&mut exchange);
    }));
    if recorded.is_err() {
        observer_panicked(inner);
    }
}

/// Faults the reliability tests force from outside (debug builds only; release builds, the
/// ones shipped and benchmarked, have none of this).
mod fault {
    /// A request body carrying this makes its observer panic.
    #[cfg(debug_assertions)]
    pub const OBSERVER_PANIC: &[u8] = b"genai-tap-fault:observer-panic";

    #[cfg(debug_assertions)]
    pub fn inject(request: &[u8]) {
        if memchr::memmem::find(request, OBSERVER_PANIC).is_some() {
            panic!("fault injected: observer panic");
        }
    }

    #[cfg(not(debug_assertions))]
    pub fn inject(_request: &[u8]) {}
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
            api: Api::ChatCompletions,
            deployment: Some("my-deployment".into()),
            target: Target {
                provider: "openai".into(),
                host: "api.openai.com".into(),
                port: 443,
            },
            arrived: Instant::now(),
            wall: SystemTime::now(),
            headers: Vec::new(),
            trace: TraceStart::default(),
            baggage: Vec::new(),
            conversation_id: None,
        }
    }

    fn head_with(status: u16, headers: &[(&'static str, &'static str)]) -> TapEvent {
        let mut map = http::HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, HeaderValue::from_static(v));
        }
        TapEvent::ResponseHead(ResponseHead::boxed(status, &map))
    }

    fn head(status: u16, content_type: &'static str) -> TapEvent {
        head_with(status, &[("content-type", content_type)])
    }

    fn request(body: &'static [u8]) -> TapEvent {
        TapEvent::Request {
            body: RequestBody::Complete(Bytes::from_static(body)),
            usage_injected: false,
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
        let mut a = Assembly::new(start(), Limits::default(), Privacy::default());
        for e in events {
            a.apply(e);
        }
        a.finish()
    }

    #[test]
    fn non_streaming_response_split_in_frames_is_parsed_whole() {
        let ex = run(vec![
            request(br#"{"model":"gpt-4o","messages":[]}"#),
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
        let mut a = Assembly::new(start(), Limits::default(), Privacy::default());
        a.apply(head_with(
            200,
            &[
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
        ));
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
            Privacy::default(),
        );
        a.apply(head(200, "application/json"));
        a.apply(data(b"{\"id\":\"0123456789\"}"));
        a.apply(end(Ending::Complete));
        let ex = a.finish();
        assert_eq!(ex.response.id, None);
        assert!(ex.response_issue.unwrap().contains("observation limit"));
    }

    #[test]
    fn an_open_exchange_keeps_no_slice_of_the_upstream_read_buffer() {
        // hyper's header values are slices of the connection's read buffer.
        let buffer = Bytes::from(b"text/event-streamreq_abc".to_vec());
        let value = |range| HeaderValue::from_maybe_shared(buffer.slice(range)).unwrap();
        let mut map = http::HeaderMap::new();
        map.insert(http::header::CONTENT_TYPE, value(0..17));
        map.insert("x-request-id", value(17..24));
        let mut a = Assembly::new(start(), Limits::default(), Privacy::default());
        a.apply(TapEvent::ResponseHead(ResponseHead::boxed(200, &map)));
        drop(map);
        assert!(
            buffer.is_unique(),
            "the assembly still holds part of the buffer"
        );
        a.apply(end(Ending::Complete));
        assert_eq!(a.finish().upstream.request_id.as_deref(), Some("req_abc"));
    }

    #[test]
    fn upstream_headers_and_chunk_gaps_are_kept() {
        let t0 = Instant::now();
        let chunk = |ms: u64| {
            TapEvent::Data(
                Bytes::from_static(b"data: {\"choices\":[{\"index\":0,\"delta\":{}}]}\n\n"),
                t0 + Duration::from_millis(ms),
            )
        };
        let ex = run(vec![
            head_with(
                200,
                &[
                    ("content-type", "text/event-stream"),
                    ("x-request-id", "req_abc"),
                    ("apim-request-id", "4f0c"),
                    ("x-ratelimit-remaining-tokens", "149984"),
                    ("x-ratelimit-remaining-requests", "not a number"),
                ],
            ),
            chunk(10),
            chunk(15),
            chunk(45),
            TapEvent::Data(
                Bytes::from_static(b"data: [DONE]\n\n"),
                t0 + Duration::from_millis(50),
            ),
            end(Ending::Complete),
        ]);
        assert_eq!(ex.upstream.request_id.as_deref(), Some("req_abc"));
        assert_eq!(ex.upstream.apim_request_id.as_deref(), Some("4f0c"));
        assert_eq!(ex.upstream.ratelimit_remaining_tokens, Some(149_984));
        assert_eq!(ex.upstream.ratelimit_remaining_requests, None);
        assert_eq!(
            ex.chunk_gaps_us,
            vec![5_000, 30_000],
            "one gap per chunk after the first; [DONE] is not a chunk"
        );
    }

    #[test]
    fn captured_content_comes_from_the_request_and_the_stream() {
        let mut a = Assembly::new(
            start(),
            Limits::default(),
            Privacy::capturing(Redactor::none()),
        );
        a.apply(request(
            br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"Hi!"}]}"#,
        ));
        a.apply(head(200, "text/event-stream"));
        a.apply(data(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}}]}\n\n"));
        a.apply(data(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n"));
        a.apply(end(Ending::Complete));
        let content = a.finish().content.expect("captured");
        assert_eq!(
            content.input()[0].parts,
            vec![crate::genai::content::Part::Text("Hi!".into())]
        );
        assert_eq!(
            content.output()[0].parts,
            vec![crate::genai::content::Part::Text("Hello".into())]
        );
        assert_eq!(content.output()[0].finish_reason.as_deref(), Some("stop"));
        assert_eq!(
            run(vec![end(Ending::Complete)]).content,
            None,
            "nothing without capture"
        );
    }

    #[test]
    fn content_sampling_keeps_what_is_asked_for() {
        let capture = |only, rate| ContentCapture {
            redactor: Arc::default(),
            sample_rate: rate,
            only,
            slow_threshold: Duration::from_secs(10),
        };
        let fast = Duration::from_millis(10);
        let slow = Duration::from_secs(11);
        assert!(capture(CaptureOnly::All, 1.0).keeps(false, fast, 0.99));
        assert!(!capture(CaptureOnly::All, 0.25).keeps(false, fast, 0.5));
        assert!(capture(CaptureOnly::All, 0.25).keeps(false, fast, 0.1));
        assert!(!capture(CaptureOnly::Failed, 1.0).keeps(false, fast, 0.0));
        assert!(capture(CaptureOnly::Failed, 1.0).keeps(true, fast, 0.0));
        assert!(capture(CaptureOnly::Slow, 1.0).keeps(false, slow, 0.0));
        assert!(capture(CaptureOnly::FailedOrSlow, 1.0).keeps(true, fast, 0.0));
        assert!(!capture(CaptureOnly::FailedOrSlow, 1.0).keeps(false, fast, 0.0));
        let draws: Vec<f64> = (0..1000).map(|_| draw()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let below = draws.iter().filter(|d| **d < 0.25).count();
        assert!(
            (150..350).contains(&below),
            "roughly uniform: {below}/1000 below 0.25"
        );
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
