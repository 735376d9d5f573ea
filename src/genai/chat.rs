//! Chat Completions (`POST …/chat/completions`): request parameters, response facts, and the
//! assembly of a streamed response from its chunks.
//!
//! Owns: the OpenAI chat wire format, read leniently (unknown fields skipped, mistyped fields
//! reported by name). Does not: decode SSE framing (`sse`) or decide what is exported.

use std::borrow::Cow;

use serde::Deserialize;

use super::json::{self, Code, Field, List, Obj, Strings};
use crate::exchange::{ApiError, RequestFacts, ResponseFacts, Usage};

/// Choice indexes above this are treated as hostile rather than allocated for.
const MAX_CHOICES: usize = 1024;

#[derive(Deserialize, Default)]
#[serde(default)]
struct RequestWire {
    model: Field<String>,
    max_completion_tokens: Field<i64>,
    max_tokens: Field<i64>,
    temperature: Field<f64>,
    top_p: Field<f64>,
    frequency_penalty: Field<f64>,
    presence_penalty: Field<f64>,
    stop: Field<Strings>,
    seed: Field<i64>,
    n: Field<i64>,
    stream: Field<bool>,
    stream_options: Field<Obj<StreamOptionsWire>>,
    response_format: Field<Obj<ResponseFormatWire>>,
    service_tier: Field<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StreamOptionsWire {
    include_usage: Field<bool>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ResponseFormatWire {
    #[serde(rename = "type")]
    kind: Field<String>,
}

/// Reads the request parameters. The second value names what could not be read, if anything:
/// the whole body (not JSON) or the fields whose type was unexpected.
pub fn parse_request(body: &[u8]) -> (RequestFacts, Option<String>) {
    let w: RequestWire = match json::parse_object(body) {
        Ok(w) => w,
        Err(e) => return (RequestFacts::default(), Some(e)),
    };
    let mut mistyped: Vec<&str> = Vec::new();
    macro_rules! take {
        ($field:ident) => {{
            if w.$field.is_mistyped() {
                mistyped.push(stringify!($field));
            }
            w.$field.get()
        }};
    }
    let max_completion_tokens = take!(max_completion_tokens);
    let max_tokens = take!(max_tokens);
    let stream_options = take!(stream_options);
    let response_format = take!(response_format);
    let facts = RequestFacts {
        model: take!(model),
        max_tokens: max_completion_tokens.or(max_tokens),
        temperature: take!(temperature),
        top_p: take!(top_p),
        frequency_penalty: take!(frequency_penalty),
        presence_penalty: take!(presence_penalty),
        stop_sequences: take!(stop).map(|s| s.0),
        seed: take!(seed),
        choice_count: take!(n),
        stream: take!(stream).unwrap_or(false),
        include_usage: stream_options
            .and_then(|o| o.0.include_usage.get())
            .unwrap_or(false),
        output_type: response_format
            .and_then(|f| f.0.kind.get())
            .and_then(|kind| output_type(&kind)),
        service_tier: take!(service_tier),
    };
    let issue =
        (!mistyped.is_empty()).then(|| format!("unexpected type for: {}", mistyped.join(", ")));
    (facts, issue)
}

/// `response_format.type` to `gen_ai.output.type`.
fn output_type(kind: &str) -> Option<&'static str> {
    match kind {
        "text" => Some("text"),
        "json_object" | "json_schema" => Some("json"),
        _ => None,
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct UsageWire {
    prompt_tokens: Field<i64>,
    completion_tokens: Field<i64>,
    prompt_tokens_details: Field<Obj<PromptDetailsWire>>,
    completion_tokens_details: Field<Obj<CompletionDetailsWire>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PromptDetailsWire {
    cached_tokens: Field<i64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CompletionDetailsWire {
    reasoning_tokens: Field<i64>,
}

impl From<UsageWire> for Usage {
    fn from(w: UsageWire) -> Self {
        Usage {
            input_tokens: w.prompt_tokens.get(),
            output_tokens: w.completion_tokens.get(),
            cache_read_input_tokens: w
                .prompt_tokens_details
                .get()
                .and_then(|d| d.0.cached_tokens.get()),
            reasoning_output_tokens: w
                .completion_tokens_details
                .get()
                .and_then(|d| d.0.reasoning_tokens.get()),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChoiceWire<'a> {
    index: Field<i64>,
    #[serde(borrow)]
    finish_reason: Field<Cow<'a, str>>,
}

/// A non-streaming response body and a stream chunk share this shape (chunks carry `delta`
/// where bodies carry `message`, neither of which is read here).
#[derive(Deserialize, Default)]
#[serde(default)]
struct CompletionWire<'a> {
    #[serde(borrow)]
    id: Field<Cow<'a, str>>,
    #[serde(borrow)]
    model: Field<Cow<'a, str>>,
    #[serde(borrow)]
    system_fingerprint: Field<Cow<'a, str>>,
    #[serde(borrow)]
    service_tier: Field<Cow<'a, str>>,
    #[serde(borrow)]
    choices: Field<List<Obj<ChoiceWire<'a>>>>,
    usage: Field<Obj<UsageWire>>,
    error: Field<Obj<ApiErrorWire>>,
}

/// Reads a complete (non-streaming) chat completion.
pub fn parse_response(body: &[u8]) -> (ResponseFacts, Option<String>) {
    let mut stream = ChatStream::default();
    match json::parse_object::<CompletionWire<'_>>(body) {
        Ok(w) => {
            stream.apply(w);
            let summary = stream.finish();
            (summary.facts, None)
        }
        Err(e) => (ResponseFacts::default(), Some(e)),
    }
}

/// What a finished stream amounted to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamSummary {
    pub facts: ResponseFacts,
    /// An in-stream `{"error": …}` chunk.
    pub error: Option<ApiError>,
    /// The `[DONE]` sentinel arrived.
    pub done: bool,
    /// Data events other than `[DONE]`.
    pub chunks: u64,
    /// The first chunk that could not be read, described without its content.
    pub issue: Option<String>,
}

/// Assembles a streamed chat completion from its chunks' data, however many there are.
#[derive(Debug, Default)]
pub struct ChatStream {
    facts: ResponseFacts,
    /// Finish reason per choice index; `None` until that choice finishes.
    finish: Vec<Option<String>>,
    error: Option<ApiError>,
    done: bool,
    chunks: u64,
    issue: Option<String>,
}

impl ChatStream {
    /// Feeds one SSE event's data.
    pub fn push(&mut self, data: &[u8]) {
        if data == b"[DONE]" {
            self.done = true;
            return;
        }
        self.chunks += 1;
        match json::parse_object::<CompletionWire<'_>>(data) {
            Ok(w) => self.apply(w),
            Err(e) => {
                if self.issue.is_none() {
                    self.issue = Some(format!("chunk {}: {e}", self.chunks));
                }
            }
        }
    }

    fn apply(&mut self, w: CompletionWire<'_>) {
        fn first(slot: &mut Option<String>, value: Field<Cow<'_, str>>) {
            if slot.is_none()
                && let Some(v) = value.get().filter(|v| !v.is_empty())
            {
                *slot = Some(v.into_owned());
            }
        }
        first(&mut self.facts.id, w.id);
        first(&mut self.facts.model, w.model);
        first(&mut self.facts.system_fingerprint, w.system_fingerprint);
        first(&mut self.facts.service_tier, w.service_tier);
        if let Some(choices) = w.choices.get() {
            for (position, Obj(choice)) in choices.0.into_iter().enumerate() {
                let index = choice
                    .index
                    .get()
                    .and_then(|i| usize::try_from(i).ok())
                    .unwrap_or(position);
                if index >= MAX_CHOICES {
                    self.issue
                        .get_or_insert_with(|| format!("choice index {index} out of range"));
                    continue;
                }
                if self.finish.len() <= index {
                    self.finish.resize(index + 1, None);
                }
                if let Some(reason) = choice.finish_reason.get() {
                    self.finish[index] = Some(reason.into_owned());
                }
            }
        }
        if let Some(Obj(usage)) = w.usage.get() {
            self.facts.usage = usage.into();
        }
        if let Some(Obj(error)) = w.error.get() {
            self.error = Some(error.into());
        }
    }

    pub fn finish(mut self) -> StreamSummary {
        // A choice that started but never finished ended in error, per the conventions.
        self.facts.finish_reasons = self
            .finish
            .into_iter()
            .map(|r| r.unwrap_or_else(|| "error".to_owned()))
            .collect();
        StreamSummary {
            facts: self.facts,
            error: self.error,
            done: self.done,
            chunks: self.chunks,
            issue: self.issue,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ApiErrorWire {
    code: Field<Code>,
    #[serde(rename = "type")]
    kind: Field<String>,
}

impl From<ApiErrorWire> for ApiError {
    fn from(w: ApiErrorWire) -> Self {
        ApiError {
            code: w.code.get().map(|c| c.0),
            kind: w.kind.get(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ErrorBodyWire {
    error: Field<Obj<ApiErrorWire>>,
}

/// Reads an OpenAI-style error body (`{"error": {"code", "type", "message"}}`).
pub fn parse_api_error(body: &[u8]) -> Option<ApiError> {
    json::parse_object::<ErrorBodyWire>(body)
        .ok()
        .and_then(|w| w.error.get())
        .map(|Obj(e)| e.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn request_parameters_follow_the_conventions() {
        let (facts, issue) = parse_request(&fixture("chat_request_full.json"));
        assert_eq!(issue, None);
        assert_eq!(
            facts,
            RequestFacts {
                model: Some("gpt-4o-mini".into()),
                max_tokens: Some(200),
                temperature: Some(0.2),
                top_p: Some(0.9),
                frequency_penalty: Some(0.5),
                presence_penalty: Some(-0.5),
                stop_sequences: Some(vec!["END".into(), "STOP".into()]),
                seed: Some(42),
                choice_count: Some(2),
                stream: true,
                include_usage: true,
                output_type: Some("json"),
                service_tier: Some("default".into()),
            }
        );
    }

    #[test]
    fn max_completion_tokens_wins_over_max_tokens_and_a_single_stop_is_a_list() {
        let (facts, _) = parse_request(
            br#"{"model":"m","max_tokens":10,"max_completion_tokens":20,"stop":"x","messages":[]}"#,
        );
        assert_eq!(facts.max_tokens, Some(20));
        assert_eq!(facts.stop_sequences, Some(vec!["x".to_owned()]));
        assert!(!facts.stream);
    }

    #[test]
    fn mistyped_parameters_are_named_and_the_rest_still_read() {
        let (facts, issue) =
            parse_request(br#"{"model":"m","temperature":"hot","seed":[1],"top_p":1}"#);
        assert_eq!(facts.model.as_deref(), Some("m"));
        assert_eq!(facts.top_p, Some(1.0));
        assert_eq!(facts.temperature, None);
        assert_eq!(
            issue.as_deref(),
            Some("unexpected type for: temperature, seed")
        );
    }

    #[test]
    fn malformed_request_gives_a_reason_and_no_facts() {
        let (facts, issue) = parse_request(b"{\"model\": \"m\",");
        assert_eq!(facts, RequestFacts::default());
        assert_eq!(issue.as_deref(), Some("truncated JSON at line 1 column 14"));
    }

    #[test]
    fn response_facts_from_a_complete_body() {
        let (facts, issue) = parse_response(&fixture("chat_response.json"));
        assert_eq!(issue, None);
        assert_eq!(
            facts,
            ResponseFacts {
                id: Some("chatcmpl-abc123".into()),
                model: Some("gpt-4o-mini-2024-07-18".into()),
                finish_reasons: vec!["stop".into(), "length".into()],
                usage: Usage {
                    input_tokens: Some(19),
                    output_tokens: Some(10),
                    cache_read_input_tokens: Some(0),
                    reasoning_output_tokens: Some(0),
                },
                system_fingerprint: Some("fp_44709d6fcb".into()),
                service_tier: Some("default".into()),
            }
        );
    }

    #[test]
    fn choices_out_of_order_are_reported_in_index_order() {
        let (facts, _) = parse_response(
            br#"{"choices":[{"index":1,"finish_reason":"length"},{"index":0,"finish_reason":"stop"}]}"#,
        );
        assert_eq!(facts.finish_reasons, vec!["stop", "length"]);
    }

    fn stream_events(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut d = super::super::sse::SseDecoder::new(1 << 20);
        let mut out = Vec::new();
        d.push(bytes, &mut |e| out.push(e.data.to_vec()));
        out
    }

    fn summarize(bytes: &[u8]) -> StreamSummary {
        let mut s = ChatStream::default();
        for data in stream_events(bytes) {
            s.push(&data);
        }
        s.finish()
    }

    #[test]
    fn stream_with_usage_is_assembled() {
        let summary = summarize(&fixture("chat_stream_usage.sse"));
        assert!(summary.done);
        assert_eq!(summary.issue, None);
        assert_eq!(summary.chunks, 5);
        assert_eq!(summary.facts.id.as_deref(), Some("chatcmpl-stream1"));
        assert_eq!(
            summary.facts.model.as_deref(),
            Some("gpt-4o-mini-2024-07-18")
        );
        assert_eq!(summary.facts.finish_reasons, vec!["stop"]);
        assert_eq!(summary.facts.usage.input_tokens, Some(12));
        assert_eq!(summary.facts.usage.output_tokens, Some(3));
        assert_eq!(summary.facts.system_fingerprint.as_deref(), Some("fp_1"));
    }

    #[test]
    fn azure_prompt_filter_chunk_with_empty_id_does_not_win() {
        let summary = summarize(&fixture("chat_stream_azure.sse"));
        assert_eq!(summary.facts.id.as_deref(), Some("chatcmpl-az1"));
        assert_eq!(summary.facts.model.as_deref(), Some("gpt-4o-2024-11-20"));
        assert_eq!(summary.facts.finish_reasons, vec!["stop"]);
        assert_eq!(summary.facts.usage.input_tokens, None);
    }

    #[test]
    fn unfinished_choice_reports_error_and_bad_chunk_is_described() {
        let summary = summarize(
            b"data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{}},{\"index\":1,\"finish_reason\":\"stop\"}]}\n\ndata: {oops\n\n",
        );
        assert_eq!(summary.facts.finish_reasons, vec!["error", "stop"]);
        assert_eq!(
            summary.issue.as_deref(),
            Some("chunk 2: invalid JSON at line 1 column 2")
        );
        assert!(!summary.done);
    }

    #[test]
    fn in_stream_error_is_kept() {
        let summary = summarize(
            b"data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\",\"code\":null}}\n\n",
        );
        assert_eq!(
            summary.error,
            Some(ApiError {
                code: None,
                kind: Some("server_error".into())
            })
        );
    }

    #[test]
    fn hostile_choice_index_is_not_allocated() {
        let summary = summarize(b"data: {\"choices\":[{\"index\":4000000000}]}\n\n");
        assert!(summary.facts.finish_reasons.is_empty());
        assert!(summary.issue.unwrap().contains("out of range"));
    }

    #[test]
    fn api_error_body() {
        let e = parse_api_error(
            br#"{"error":{"message":"Rate limit reached for sk-...","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
        )
        .unwrap();
        assert_eq!(e.identifier(), Some("rate_limit_exceeded"));
        assert_eq!(e.kind.as_deref(), Some("requests"));
        assert_eq!(parse_api_error(b"<html>bad gateway</html>"), None);
    }

    proptest! {
        #[test]
        fn stream_summary_does_not_depend_on_chunk_boundaries(cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..16)) {
            let bytes = fixture("chat_stream_usage.sse");
            let whole = summarize(&bytes);
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut decoder = super::super::sse::SseDecoder::new(1 << 20);
            let mut stream = ChatStream::default();
            let mut at = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                decoder.push(&bytes[at..c], &mut |e| stream.push(e.data));
                at = c;
            }
            prop_assert_eq!(stream.finish(), whole);
        }
    }
}
