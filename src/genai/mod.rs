//! Pure protocol knowledge of OpenAI-compatible APIs: which operation a request is, what its
//! body says, how a streamed response assembles. No IO, no OpenTelemetry.
//!
//! This module is the one place that maps an [`Api`] to its parsers; the submodules each own
//! one wire format.

pub mod chat;
pub mod content;
pub mod embeddings;
pub mod inject;
pub mod json;
pub mod json_edit;
pub mod operation;
pub mod provider;
pub mod responses;
pub mod scan;
pub mod sse;

pub use operation::{Api, Detected, Operation, detect};

use crate::exchange::{ApiError, ContentFilter, RequestFacts, ResponseFacts};

/// What a response (one body, or a whole stream) amounted to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResponseSummary {
    pub facts: ResponseFacts,
    /// An error reported inside a successful HTTP response (an in-stream error event, a
    /// Responses `status: failed`).
    pub error: Option<ApiError>,
    /// The first part that could not be read, described without its content.
    pub issue: Option<String>,
    /// The response reached its end marker (`[DONE]`, a terminal Responses status, a body).
    pub done: bool,
    /// Stream events other than `[DONE]`.
    pub chunks: u64,
    /// Output messages, when content is captured.
    pub output: Vec<content::Message>,
    /// A conversation the response says it belongs to (Responses `conversation`).
    pub conversation_id: Option<String>,
    /// Azure content filtering, when the response reports it.
    pub content_filter: Option<ContentFilter>,
}

/// Reads the request parameters of `api`; the second value says what could not be read.
pub fn parse_request(api: Api, body: &[u8]) -> (RequestFacts, Option<String>) {
    match api {
        Api::ChatCompletions | Api::Completions => chat::parse_request(body),
        Api::Responses => responses::parse_request(body),
        Api::Embeddings => embeddings::parse_request(body),
    }
}

/// Reads a complete (non-streaming) response of `api`.
pub fn parse_response(api: Api, body: &[u8], capture: bool) -> ResponseSummary {
    match api {
        Api::ChatCompletions | Api::Completions => chat::parse_response(body, capture),
        Api::Responses => responses::parse_response(body, capture),
        Api::Embeddings => embeddings::parse_response(body),
    }
}

/// Reads an error body, whatever the API.
pub fn parse_api_error(body: &[u8]) -> Option<ApiError> {
    chat::parse_api_error(body)
}

/// Whether the fast reader ([`scan`]) reads `body`, as every wire struct of every API, to what
/// serde reads, wherever it reads it at all (for the fuzz target).
pub fn readers_agree(body: &[u8]) -> bool {
    chat::compare_readers(body)
        .into_iter()
        .chain(responses::compare_readers(body))
        .chain(embeddings::compare_readers(body))
        .all(|a| a != json::Agreement::Differs)
}

/// A streamed response being assembled, event by event.
#[derive(Debug)]
pub enum Stream {
    Chat(chat::ChatStream),
    Responses(responses::ResponsesStream),
}

impl Stream {
    pub fn new(api: Api, capture: bool) -> Stream {
        match api {
            Api::Responses => Stream::Responses(responses::ResponsesStream::new(capture)),
            _ => Stream::Chat(chat::ChatStream::new(capture)),
        }
    }

    /// Feeds one SSE event's data; returns whether it was an output chunk.
    pub fn push(&mut self, data: &[u8]) -> bool {
        match self {
            Stream::Chat(s) => s.push(data),
            Stream::Responses(s) => s.push(data),
        }
    }

    pub fn finish(self) -> ResponseSummary {
        match self {
            Stream::Chat(s) => s.finish(),
            Stream::Responses(s) => s.finish(),
        }
    }
}

/// A recorded payload from `tests/fixtures/`, for the parsers' tests.
#[cfg(test)]
pub(crate) fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}
