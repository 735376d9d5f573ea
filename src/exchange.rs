//! One proxied model call, as observed: what was asked, what came back, when, and how it ended.
//!
//! Owns: the plain data handed from protocol parsing (`genai`, `observer`) to telemetry.
//! Does not: know HTTP bodies or OpenTelemetry; everything here is facts, not formatting.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanId, TraceId, TraceState};

use crate::genai::Api;
use crate::redact::Content;

/// The proxy span's place in a trace, fixed when the request arrives so the upstream can be
/// told (`traceparent`) before the span exists.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceStart {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The app's span, when its request carried a valid `traceparent`.
    pub parent: Option<SpanId>,
    /// The sampler's decision: no span is exported otherwise (metrics count it anyway).
    pub sampled: bool,
    pub trace_state: TraceState,
}

impl Default for TraceStart {
    fn default() -> Self {
        TraceStart {
            trace_id: TraceId::INVALID,
            span_id: SpanId::INVALID,
            parent: None,
            sampled: true,
            trace_state: TraceState::default(),
        }
    }
}

/// Where the proxied call went; shared by every exchange on the same route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `gen_ai.provider.name`.
    pub provider: Arc<str>,
    /// `server.address`: the upstream host.
    pub host: Arc<str>,
    /// `server.port`: the upstream port (explicit or the scheme's default).
    pub port: u16,
}

/// Request parameters, as the conventions name them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestFacts {
    pub model: Option<String>,
    pub max_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub stop_sequences: Option<Vec<String>>,
    pub seed: Option<i64>,
    /// `n`, when present.
    pub choice_count: Option<i64>,
    pub stream: bool,
    /// `stream_options.include_usage` as the client sent it.
    pub include_usage: bool,
    /// `gen_ai.output.type`: `text`, `json`.
    pub output_type: Option<&'static str>,
    pub service_tier: Option<String>,
    /// Names of the tools offered to the model (function names, or built-in tool types).
    pub tools: Vec<String>,
    /// `gen_ai.conversation.id` from the body (Responses `conversation`).
    pub conversation_id: Option<String>,
    /// Embeddings `encoding_format`.
    pub encoding_formats: Option<Vec<String>>,
    /// Embeddings `dimensions`.
    pub dimensions: Option<i64>,
}

/// Token counts as reported by the upstream (`None`: not reported).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub cache_read_input_tokens: Option<i64>,
    pub reasoning_output_tokens: Option<i64>,
}

/// What the response said about itself, assembled from one body or from a stream's chunks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResponseFacts {
    pub id: Option<String>,
    pub model: Option<String>,
    /// One per choice, in choice-index order.
    pub finish_reasons: Vec<String>,
    pub usage: Usage,
    pub system_fingerprint: Option<String>,
    pub service_tier: Option<String>,
    /// Names of the tools the model called, in order.
    pub tool_calls: Vec<String>,
    /// Length of the first embedding vector.
    pub embedding_dimensions: Option<i64>,
}

/// Details from upstream response headers that operators ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamHeaders {
    /// `x-request-id`: what the provider's support asks for.
    pub request_id: Option<String>,
    /// `apim-request-id` (Azure API Management).
    pub apim_request_id: Option<String>,
    /// `x-ms-region` (Azure).
    pub region: Option<String>,
    /// `x-ratelimit-remaining-tokens`.
    pub ratelimit_remaining_tokens: Option<i64>,
    /// `x-ratelimit-remaining-requests`.
    pub ratelimit_remaining_requests: Option<i64>,
}

/// Azure content filtering, summed up over the prompt and every choice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentFilter {
    /// Whether any category was filtered.
    pub filtered: bool,
    /// Categories that were filtered or detected (e.g. `hate`, `jailbreak`), each once.
    pub categories: Vec<String>,
}

/// An error the upstream described in its own words: OpenAI-style `{"error": {...}}`.
/// Only the machine-readable identifiers are kept; the human message may quote user input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiError {
    pub code: Option<String>,
    pub kind: Option<String>,
}

impl ApiError {
    /// The most specific identifier available.
    pub fn identifier(&self) -> Option<&str> {
        self.code.as_deref().or(self.kind.as_deref())
    }
}

/// Transport failures, by the side of the wire they concern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportError {
    Timeout,
    /// Connecting failed for another reason than a refusal (e.g. the name did not resolve).
    Connect,
    ConnectionRefused,
    ConnectionReset,
    Tls,
    Protocol,
    Other,
}

impl TransportError {
    pub fn as_str(self) -> &'static str {
        match self {
            TransportError::Timeout => "timeout",
            TransportError::Connect => "connect_error",
            TransportError::ConnectionRefused => "connection_refused",
            TransportError::ConnectionReset => "connection_reset",
            TransportError::Tls => "tls_error",
            TransportError::Protocol => "protocol_error",
            TransportError::Other => "_OTHER",
        }
    }
}

/// Why an exchange did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The upstream answered with an HTTP error status (>= 400).
    Status(u16),
    /// The upstream reported an error inside a successful stream (an SSE error event).
    InStream(ApiError),
    /// The upstream could not be reached, or the connection broke.
    Transport(TransportError),
    /// The client went away before the response was complete.
    Cancelled,
}

impl Failure {
    /// The `error.type` value.
    pub fn error_type(&self) -> Cow<'static, str> {
        match self {
            Failure::Status(code) => Cow::Owned(code.to_string()),
            Failure::InStream(e) => e
                .identifier()
                .map_or(Cow::Borrowed("_OTHER"), |s| Cow::Owned(s.to_owned())),
            Failure::Transport(t) => Cow::Borrowed(t.as_str()),
            Failure::Cancelled => Cow::Borrowed("cancelled"),
        }
    }
}

/// Everything observed about one model call.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    pub api: Api,
    pub trace: TraceStart,
    pub target: Target,
    /// Wall-clock time the request arrived at the proxy.
    pub start: SystemTime,
    /// Request arrival to the last response byte (or the failure).
    pub duration: Duration,
    pub request: RequestFacts,
    /// Allowlisted request headers `(lowercase name, redacted value)`.
    pub request_headers: Vec<(String, String)>,
    /// Configured `baggage` members `(key, redacted value)`.
    pub baggage: Vec<(String, String)>,
    /// Time the proxy itself added: request arrival to forwarding, plus upstream response head
    /// to client response head. `None` when the upstream never answered.
    pub overhead: Option<Duration>,
    /// The proxy asked the upstream for stream usage the client did not request.
    pub usage_injected: bool,
    pub response: ResponseFacts,
    /// The upstream's HTTP status, when it answered.
    pub status: Option<u16>,
    /// The response was a Server-Sent Events stream.
    pub streamed: bool,
    /// Request arrival to the first response body bytes, for streams.
    pub time_to_first_chunk: Option<Duration>,
    /// Gaps between consecutive output chunks of a stream, in microseconds (capped).
    pub chunk_gaps_us: Vec<u32>,
    pub upstream: UpstreamHeaders,
    pub content_filter: Option<ContentFilter>,
    /// Captured, redacted content (content capture on only).
    pub content: Option<Content>,
    pub failure: Option<Failure>,
    /// The upstream's error identifiers, from an error body or an in-stream error.
    pub api_error: Option<ApiError>,
    /// Why the request body could not be read for telemetry (it was forwarded regardless).
    pub request_issue: Option<String>,
    /// Why the response body could not be fully read for telemetry.
    pub response_issue: Option<String>,
}

#[cfg(test)]
impl Exchange {
    /// A plain successful chat exchange, for tests to vary.
    pub(crate) fn example() -> Exchange {
        Exchange {
            api: Api::ChatCompletions,
            trace: TraceStart {
                trace_id: TraceId::from(1),
                span_id: SpanId::from(2),
                ..TraceStart::default()
            },
            target: Target {
                provider: "openai".into(),
                host: "api.openai.com".into(),
                port: 443,
            },
            start: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            duration: Duration::from_millis(1500),
            request: RequestFacts {
                model: Some("gpt-4o".into()),
                ..RequestFacts::default()
            },
            request_headers: Vec::new(),
            baggage: Vec::new(),
            overhead: None,
            usage_injected: false,
            response: ResponseFacts::default(),
            status: Some(200),
            streamed: false,
            time_to_first_chunk: None,
            chunk_gaps_us: Vec::new(),
            upstream: UpstreamHeaders::default(),
            content_filter: None,
            content: None,
            failure: None,
            api_error: None,
            request_issue: None,
            response_issue: None,
        }
    }
}
