//! Chat Completions (`…/chat/completions`) and legacy Completions (`…/completions`), which share
//! a wire shape: request parameters, response facts, and the assembly of a streamed response
//! from its chunks (tool-call deltas included).
//!
//! Owns: the OpenAI chat wire format, read leniently (unknown fields skipped, mistyped fields
//! reported by name). Does not: decode SSE framing (`sse`), or turn content into the conventions'
//! message form (`content`); streamed text is only collected when asked to.

use std::borrow::Cow;
use std::ops::Range;

use serde::de::MapAccess;

use super::ResponseSummary;
use super::content::{Message, Part};
use super::json::{self, Code, Field, Lenient, List, Obj, Raw, Seen, Strings, Taker};
use super::json_edit::{Repeats, ValueSlot};
use super::scan::{Cursor, Scan, Scanned};
use crate::exchange::{ApiError, ContentFilter, RequestFacts, ResponseFacts, Usage};

/// Choice and tool-call indexes above this are treated as hostile rather than allocated for.
const MAX_INDEX: usize = 1024;

json::wire! {
    struct RequestWire {
        model: Field<String> = "model",
        max_completion_tokens: Field<i64> = "max_completion_tokens",
        max_tokens: Field<i64> = "max_tokens",
        temperature: Field<f64> = "temperature",
        top_p: Field<f64> = "top_p",
        frequency_penalty: Field<f64> = "frequency_penalty",
        presence_penalty: Field<f64> = "presence_penalty",
        stop: Field<Strings> = "stop",
        seed: Field<i64> = "seed",
        n: Field<i64> = "n",
        stream: Field<bool> = "stream",
        stream_options: Field<Obj<StreamOptionsWire>> = "stream_options",
        response_format: Field<Obj<ResponseFormatWire>> = "response_format",
        service_tier: Field<String> = "service_tier",
        tools: Field<List<Obj<ToolWire>>> = "tools",
        /// The deprecated form of `tools`.
        functions: Field<List<Obj<FunctionWire>>> = "functions",
    }

    struct StreamOptionsWire {
        include_usage: Field<bool> = "include_usage",
    }

    struct ResponseFormatWire {
        kind: Field<String> = "type",
    }

    struct ToolWire {
        kind: Field<String> = "type",
        function: Field<Obj<FunctionWire>> = "function",
    }

    struct FunctionWire {
        name: Field<String> = "name",
    }
}

/// Reads the request parameters. The second value names what could not be read, if anything:
/// the whole body (not JSON) or the fields whose type was unexpected.
pub fn parse_request(body: &[u8]) -> (RequestFacts, Option<String>) {
    let w: RequestWire = match json::parse_object(body) {
        Ok(w) => w,
        Err(e) => return (RequestFacts::default(), Some(e)),
    };
    let mut t = Taker::default();
    let max_completion_tokens = t.take("max_completion_tokens", w.max_completion_tokens);
    let max_tokens = t.take("max_tokens", w.max_tokens);
    let stream_options = t.take("stream_options", w.stream_options);
    let response_format = t.take("response_format", w.response_format);
    let mut tools: Vec<String> = t
        .take("tools", w.tools)
        .map(|t| {
            t.0.into_iter()
                .filter_map(|Obj(tool)| {
                    let function = tool.function.get().and_then(|f| f.0.name.get());
                    // Built-in tools have a type and no function name.
                    function.or_else(|| tool.kind.get())
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(functions) = t.take("functions", w.functions) {
        tools.extend(functions.0.into_iter().filter_map(|Obj(f)| f.name.get()));
    }
    let facts = RequestFacts {
        model: t.take("model", w.model),
        max_tokens: max_completion_tokens.or(max_tokens),
        temperature: t.take("temperature", w.temperature),
        top_p: t.take("top_p", w.top_p),
        frequency_penalty: t.take("frequency_penalty", w.frequency_penalty),
        presence_penalty: t.take("presence_penalty", w.presence_penalty),
        stop_sequences: t.take("stop", w.stop).map(|s| s.0),
        seed: t.take("seed", w.seed),
        choice_count: t.take("n", w.n),
        stream: t.take("stream", w.stream).unwrap_or(false),
        include_usage: stream_options
            .and_then(|o| o.0.include_usage.get())
            .unwrap_or(false),
        output_type: response_format
            .and_then(|f| f.0.kind.get())
            .and_then(|kind| output_type(&kind)),
        service_tier: t.take("service_tier", w.service_tier),
        tools,
        ..RequestFacts::default()
    };
    (facts, t.issue())
}

/// `response_format.type` (or Responses `text.format.type`) to `gen_ai.output.type`.
pub(crate) fn output_type(kind: &str) -> Option<&'static str> {
    match kind {
        "text" => Some("text"),
        "json_object" | "json_schema" => Some("json"),
        _ => None,
    }
}

json::wire! {
    /// Usage, as Chat Completions names it and (through the aliases) as the Responses API does.
    pub(crate) struct UsageWire {
        prompt_tokens: Field<i64> = "prompt_tokens" | "input_tokens",
        completion_tokens: Field<i64> = "completion_tokens" | "output_tokens",
        prompt_tokens_details: Field<Obj<PromptDetailsWire>> =
            "prompt_tokens_details" | "input_tokens_details",
        completion_tokens_details: Field<Obj<CompletionDetailsWire>> =
            "completion_tokens_details" | "output_tokens_details",
    }

    struct PromptDetailsWire {
        cached_tokens: Field<i64> = "cached_tokens",
    }

    struct CompletionDetailsWire {
        reasoning_tokens: Field<i64> = "reasoning_tokens",
    }
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

json::wire! {
    /// A tool call in a message or a stream delta. In deltas, `index` says which call a
    /// fragment continues; the first fragment brings `id` and the name, later ones more
    /// `arguments`.
    struct ToolCallWire<'a> {
        index: Field<i64> = "index",
        #[serde(borrow)]
        id: Field<Cow<'a, str>> = "id",
        #[serde(borrow)]
        function: Field<Obj<FunctionCallWire<'a>>> = "function",
    }

    struct FunctionCallWire<'a> {
        #[serde(borrow)]
        name: Field<Cow<'a, str>> = "name",
        /// Kept raw: only unescaped when content is captured.
        #[serde(borrow)]
        arguments: Option<Raw<'a>> = "arguments",
    }

    /// A complete `message` or a stream `delta`.
    struct MessageWire<'a> {
        #[serde(borrow)]
        role: Field<Cow<'a, str>> = "role",
        #[serde(borrow)]
        content: Option<Raw<'a>> = "content",
        #[serde(borrow)]
        refusal: Option<Raw<'a>> = "refusal",
        #[serde(borrow)]
        tool_calls: Field<List<Obj<ToolCallWire<'a>>>> = "tool_calls",
    }

    struct FilterCategoryWire {
        filtered: Field<bool> = "filtered",
        detected: Field<bool> = "detected",
    }
}

/// Azure's `content_filter_results`: `{category: {filtered, detected?, severity?}}`, read as the
/// categories that were filtered or detected.
#[derive(Debug, Default)]
struct FilterResults {
    filtered: bool,
    flagged: Vec<String>,
}

impl FilterResults {
    fn add(&mut self, category: Cow<'_, str>, results: Field<Obj<FilterCategoryWire>>) {
        let Some(Obj(c)) = results.get() else {
            return;
        };
        let filtered = c.filtered.get().unwrap_or(false);
        self.filtered |= filtered;
        if filtered || c.detected.get().unwrap_or(false) {
            self.flagged.push(category.into_owned());
        }
    }
}

impl<'de> Lenient<'de> for FilterResults {
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        let mut out = FilterResults::default();
        while let Some(category) = map.next_key::<Cow<'de, str>>()? {
            out.add(category, map.next_value()?);
        }
        Ok(Some(out))
    }
    fn scan_map(c: &mut Cursor<'de>) -> Scanned<Option<Self>> {
        let mut out = FilterResults::default();
        c.members(|c, category| {
            out.add(Cow::Borrowed(category), Field::scan(c)?);
            Ok(())
        })?;
        Ok(Some(out))
    }
}

json::wire! {
    struct PromptFilterWire {
        content_filter_results: Field<FilterResults> = "content_filter_results",
    }

    struct ChoiceWire<'a> {
        index: Field<i64> = "index",
        content_filter_results: Field<FilterResults> = "content_filter_results",
        #[serde(borrow)]
        finish_reason: Field<Cow<'a, str>> = "finish_reason",
        #[serde(borrow)]
        message: Field<Obj<MessageWire<'a>>> = "message",
        #[serde(borrow)]
        delta: Field<Obj<MessageWire<'a>>> = "delta",
        /// Legacy completions carry their output here.
        #[serde(borrow)]
        text: Option<Raw<'a>> = "text",
    }

    /// A non-streaming response body and a stream chunk share this shape.
    ///
    /// Every member but `choices` may be cut from a stream chunk that repeats it (see
    /// [`ChatStream::push`]): each keeps its first non-empty value or its last one, so the same
    /// bytes again change nothing. The `Seen` wrappers tell whether a cut chunk names one again.
    struct CompletionWire<'a> {
        #[serde(borrow)]
        id: Seen<Field<Cow<'a, str>>> = "id",
        #[serde(borrow)]
        model: Seen<Field<Cow<'a, str>>> = "model",
        #[serde(borrow)]
        system_fingerprint: Seen<Field<Cow<'a, str>>> = "system_fingerprint",
        #[serde(borrow)]
        service_tier: Seen<Field<Cow<'a, str>>> = "service_tier",
        #[serde(borrow)]
        choices: Field<List<Obj<ChoiceWire<'a>>>> = "choices",
        usage: Seen<Field<Obj<UsageWire>>> = "usage",
        error: Seen<Field<Obj<ApiErrorWire>>> = "error",
        prompt_filter_results: Seen<Field<List<Obj<PromptFilterWire>>>> =
            "prompt_filter_results",
        /// OpenAI's padding, different in every chunk: only its place is of interest.
        #[serde(borrow)]
        obfuscation: Seen<Option<Raw<'a>>> = "obfuscation",
    }
}

impl CompletionWire<'_> {
    /// The one member read in every chunk: each chunk's `choices` add to the output.
    const READ_EVERY_CHUNK: &'static [u8] = b"choices";

    /// Whether a member the cut removed (`cut(key)`) is here too: the whole chunk would name it
    /// twice, which serde rejects.
    fn names_a_cut_member(&self, cut: impl Fn(&[u8]) -> bool) -> bool {
        [
            (self.id.seen, &b"id"[..]),
            (self.model.seen, b"model"),
            (self.system_fingerprint.seen, b"system_fingerprint"),
            (self.service_tier.seen, b"service_tier"),
            (self.usage.seen, b"usage"),
            (self.error.seen, b"error"),
            (self.prompt_filter_results.seen, b"prompt_filter_results"),
            (self.obfuscation.seen, b"obfuscation"),
        ]
        .into_iter()
        .any(|(seen, key)| seen && cut(key))
    }

    /// Where the values a reader without capture ignores lie in `doc`, the document this was
    /// read from, in the document's order (the slot marks those that are strings or numbers):
    /// the first choice's text (its message's or delta's `content`, or legacy `text`) and the
    /// `obfuscation` padding.
    fn unread_in(&self, doc: &[u8]) -> impl Iterator<Item = Range<usize>> {
        let place = |raw: Raw<'_>| {
            let raw = raw.get();
            let start = raw.as_ptr().addr().checked_sub(doc.as_ptr().addr())?;
            let end = start.checked_add(raw.len())?;
            (end <= doc.len()).then_some(start..end)
        };
        let text = (|| {
            let Obj(choice) = self.choices.as_ref()?.0.first()?;
            let message = choice.message.as_ref().or(choice.delta.as_ref());
            place(message.and_then(|Obj(m)| m.content).or(choice.text)?)
        })();
        let padding = self.obfuscation.value.and_then(place);
        let mut both = [text, padding];
        both.sort_by_key(|r| r.as_ref().map(|r| r.start));
        both.into_iter().flatten()
    }
}

/// Reads a complete (non-streaming) response; with `capture`, its output messages too.
pub fn parse_response(body: &[u8], capture: bool) -> ResponseSummary {
    let mut stream = ChatStream::new(capture);
    match json::parse_object::<CompletionWire<'_>>(body) {
        Ok(w) => {
            stream.apply(w);
            let mut summary = stream.finish();
            summary.done = true;
            summary
        }
        Err(e) => ResponseSummary {
            issue: Some(e),
            ..ResponseSummary::default()
        },
    }
}

#[derive(Debug, Default)]
struct ToolCallState {
    id: Option<String>,
    name: Option<String>,
    arguments: String,
}

#[derive(Debug, Default)]
struct ChoiceState {
    finish_reason: Option<String>,
    role: Option<String>,
    text: String,
    tool_calls: Vec<ToolCallState>,
}

/// Assembles a streamed chat (or legacy) completion from its chunks' data.
#[derive(Debug, Default)]
pub struct ChatStream {
    capture: bool,
    facts: ResponseFacts,
    choices: Vec<ChoiceState>,
    error: Option<ApiError>,
    done: bool,
    chunks: u64,
    issue: Option<String>,
    filter: Option<ContentFilter>,
    /// The members each chunk repeats, and the buffer the rest is read from.
    repeats: Repeats,
    middle: Vec<u8>,
    /// The last chunk read (its middle), with its text and padding marked: without capture, a
    /// chunk that differs from it only there changes nothing.
    text_only: ValueSlot,
}

impl ChatStream {
    fn note_filter(&mut self, results: Field<FilterResults>) {
        let Some(results) = results.get() else {
            return;
        };
        let filter = self.filter.get_or_insert_with(ContentFilter::default);
        filter.filtered |= results.filtered;
        for category in results.flagged {
            if !filter.categories.contains(&category) {
                filter.categories.push(category);
            }
        }
    }
}

/// A JSON string value, unescaped; anything else (or `null`) is nothing.
fn raw_str(raw: Option<Raw<'_>>) -> Option<Cow<'_, str>> {
    raw.and_then(|r| {
        serde_json::from_str::<Option<Cow<'_, str>>>(r.get())
            .ok()
            .flatten()
    })
}

fn bounded(index: Field<i64>, position: usize) -> Option<usize> {
    let index = index
        .get()
        .and_then(|i| usize::try_from(i).ok())
        .unwrap_or(position);
    (index < MAX_INDEX).then_some(index)
}

fn slot<T: Default>(items: &mut Vec<T>, index: usize) -> &mut T {
    if items.len() <= index {
        items.resize_with(index + 1, T::default);
    }
    &mut items[index]
}

impl ChatStream {
    /// With `capture`, streamed text and tool-call arguments are collected for content capture.
    pub fn new(capture: bool) -> Self {
        ChatStream {
            capture,
            ..ChatStream::default()
        }
    }

    /// Feeds one SSE event's data. Returns whether it was an output chunk (not `[DONE]`).
    pub fn push(&mut self, data: &[u8]) -> bool {
        if data == b"[DONE]" {
            self.done = true;
            return false;
        }
        self.chunks += 1;
        // Most of a chunk repeats the last one's members (`id`, `created`, `model`, ...): read
        // only what lies between them. Anything amiss there is left to the whole reading
        // below, which also says where a problem is in the chunk as sent.
        let mut middle = std::mem::take(&mut self.middle);
        let cut = self.repeats.cut(data, &mut middle);
        // Without capture the text (and OpenAI's padding) is not read, and reading the last
        // chunk again changes nothing (each member keeps its first non-empty value or its last
        // one): a chunk that differs from it only there, as most of a stream's chunks do, need
        // not be read. The slot learns nothing while capture is on.
        let read = cut
            && ((!self.capture && self.text_only.matches(&middle))
                || match json::parse_object::<CompletionWire<'_>>(&middle) {
                    Ok(w) if !w.names_a_cut_member(|key| self.repeats.cuts(key)) => {
                        if self.capture {
                            self.text_only.forget();
                        } else {
                            self.text_only.learn(&middle, w.unread_in(&middle));
                        }
                        self.apply(w);
                        true
                    }
                    _ => false,
                });
        self.middle = middle;
        if read {
            return true;
        }
        self.text_only.forget();
        match json::parse_object::<CompletionWire<'_>>(data) {
            Ok(w) => {
                self.repeats
                    .learn(data, |key| key != CompletionWire::READ_EVERY_CHUNK);
                self.apply(w)
            }
            Err(e) => {
                if self.issue.is_none() {
                    self.issue = Some(format!("chunk {}: {e}", self.chunks));
                }
            }
        }
        true
    }

    fn apply(&mut self, w: CompletionWire<'_>) {
        fn first(slot: &mut Option<String>, value: Field<Cow<'_, str>>) {
            if slot.is_none()
                && let Some(v) = value.get().filter(|v| !v.is_empty())
            {
                *slot = Some(v.into_owned());
            }
        }
        first(&mut self.facts.id, w.id.value);
        first(&mut self.facts.model, w.model.value);
        first(
            &mut self.facts.system_fingerprint,
            w.system_fingerprint.value,
        );
        first(&mut self.facts.service_tier, w.service_tier.value);
        for Obj(prompt) in w
            .prompt_filter_results
            .value
            .get()
            .map(|l| l.0)
            .unwrap_or_default()
        {
            self.note_filter(prompt.content_filter_results);
        }
        for (position, Obj(choice)) in w
            .choices
            .get()
            .map(|c| c.0)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let Some(index) = bounded(choice.index, position) else {
                self.issue
                    .get_or_insert_with(|| "choice index out of range".to_owned());
                continue;
            };
            let capture = self.capture;
            self.note_filter(choice.content_filter_results);
            let state = slot(&mut self.choices, index);
            if let Some(reason) = choice.finish_reason.get() {
                state.finish_reason = Some(reason.into_owned());
            }
            if capture && let Some(text) = raw_str(choice.text) {
                state.text.push_str(&text);
            }
            let Some(Obj(message)) = choice.message.get().or(choice.delta.get()) else {
                continue;
            };
            if capture {
                if let Some(role) = message.role.get() {
                    state.role = Some(role.into_owned());
                }
                if let Some(text) = raw_str(message.content) {
                    state.text.push_str(&text);
                }
                if let Some(refusal) = raw_str(message.refusal) {
                    state.text.push_str(&refusal);
                }
            }
            let calls = message.tool_calls.get().map(|l| l.0).unwrap_or_default();
            for (position, Obj(call)) in calls.into_iter().enumerate() {
                let Some(index) = bounded(call.index, position) else {
                    continue;
                };
                let call_state = slot(&mut state.tool_calls, index);
                if call_state.id.is_none() {
                    call_state.id = call.id.get().map(Cow::into_owned);
                }
                if let Some(Obj(function)) = call.function.get() {
                    if call_state.name.is_none() {
                        call_state.name = function.name.get().map(Cow::into_owned);
                    }
                    if capture && let Some(args) = raw_str(function.arguments) {
                        call_state.arguments.push_str(&args);
                    }
                }
            }
        }
        if let Some(Obj(usage)) = w.usage.value.get() {
            self.facts.usage = usage.into();
        }
        if let Some(Obj(error)) = w.error.value.get() {
            self.error = Some(error.into());
        }
    }

    pub fn finish(mut self) -> ResponseSummary {
        // A choice that started but never finished ended in error, per the conventions.
        self.facts.finish_reasons = self
            .choices
            .iter()
            .map(|c| {
                c.finish_reason
                    .clone()
                    .unwrap_or_else(|| "error".to_owned())
            })
            .collect();
        self.facts.tool_calls = self
            .choices
            .iter()
            .flat_map(|c| c.tool_calls.iter().filter_map(|t| t.name.clone()))
            .collect();
        let output = if self.capture {
            self.choices
                .into_iter()
                .map(|c| {
                    let mut parts = Vec::new();
                    if !c.text.is_empty() {
                        parts.push(Part::Text(c.text));
                    }
                    for call in c.tool_calls {
                        parts.push(Part::ToolCall {
                            id: call.id,
                            name: call.name.unwrap_or_default(),
                            arguments: (!call.arguments.is_empty()).then_some(call.arguments),
                        });
                    }
                    Message {
                        role: c.role.unwrap_or_else(|| "assistant".to_owned()),
                        parts,
                        name: None,
                        finish_reason: Some(c.finish_reason.unwrap_or_else(|| "error".to_owned())),
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        ResponseSummary {
            facts: self.facts,
            error: self.error,
            issue: self.issue,
            done: self.done,
            chunks: self.chunks,
            output,
            content_filter: self.filter,
            conversation_id: None,
        }
    }
}

json::wire! {
    pub(crate) struct ApiErrorWire {
        code: Field<Code> = "code",
        kind: Field<String> = "type",
    }
}

impl From<ApiErrorWire> for ApiError {
    fn from(w: ApiErrorWire) -> Self {
        ApiError {
            code: w.code.get().map(|c| c.0),
            kind: w.kind.get(),
        }
    }
}

json::wire! {
    struct ErrorBodyWire {
        error: Field<Obj<ApiErrorWire>> = "error",
    }
}

/// Reads an OpenAI-style error body (`{"error": {"code", "type", "message"}}`).
pub fn parse_api_error(body: &[u8]) -> Option<ApiError> {
    json::parse_object::<ErrorBodyWire>(body)
        .ok()
        .and_then(|w| w.error.get())
        .map(|Obj(e)| e.into())
}

/// How the two readers compare on `body` read as each of this module's documents (for tests
/// and the fuzz target).
pub(crate) fn compare_readers(body: &[u8]) -> Vec<json::Agreement> {
    vec![
        json::compare::<RequestWire>(body),
        json::compare::<CompletionWire<'_>>(body),
        json::compare::<ErrorBodyWire>(body),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genai::fixture;
    use crate::genai::sse::SseDecoder;
    use proptest::prelude::*;

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
                ..RequestFacts::default()
            }
        );
    }

    #[test]
    fn tool_definitions_are_named_including_built_ins_and_legacy_functions() {
        let (facts, _) = parse_request(&fixture("chat_request_tools.json"));
        assert_eq!(facts.tools, vec!["get_weather", "get_time", "web_search"]);
        let (facts, _) = parse_request(br#"{"model":"m","functions":[{"name":"old_style"}]}"#);
        assert_eq!(facts.tools, vec!["old_style"]);
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
        let summary = parse_response(&fixture("chat_response.json"), false);
        assert_eq!(summary.issue, None);
        assert_eq!(
            summary.facts,
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
                ..ResponseFacts::default()
            }
        );
        assert!(summary.output.is_empty(), "no content unless captured");
    }

    #[test]
    fn complete_body_with_tool_calls_and_captured_output() {
        let summary = parse_response(&fixture("chat_response_tools.json"), true);
        assert_eq!(summary.facts.finish_reasons, vec!["tool_calls"]);
        assert_eq!(summary.facts.tool_calls, vec!["get_weather", "get_time"]);
        assert_eq!(summary.output.len(), 1);
        assert_eq!(
            summary.output[0].parts,
            vec![
                Part::ToolCall {
                    id: Some("call_1".into()),
                    name: "get_weather".into(),
                    arguments: Some(r#"{"city":"Paris"}"#.into())
                },
                Part::ToolCall {
                    id: Some("call_2".into()),
                    name: "get_time".into(),
                    arguments: Some(r#"{"tz":"Europe/Paris"}"#.into())
                },
            ]
        );
    }

    #[test]
    fn choices_out_of_order_are_reported_in_index_order() {
        let summary = parse_response(
            br#"{"choices":[{"index":1,"finish_reason":"length"},{"index":0,"finish_reason":"stop"}]}"#,
            false,
        );
        assert_eq!(summary.facts.finish_reasons, vec!["stop", "length"]);
    }

    #[test]
    fn legacy_completion_text_is_captured() {
        let summary = parse_response(
            br#"{"id":"cmpl-1","object":"text_completion","model":"gpt-3.5-turbo-instruct","choices":[{"text":"\n\nThis is","index":0,"logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#,
            true,
        );
        assert_eq!(summary.facts.finish_reasons, vec!["length"]);
        assert_eq!(summary.facts.usage.output_tokens, Some(7));
        assert_eq!(
            summary.output[0].parts,
            vec![Part::Text("\n\nThis is".into())]
        );
    }

    fn summarize(bytes: &[u8], capture: bool) -> ResponseSummary {
        let mut d = SseDecoder::new(1 << 20);
        let mut s = ChatStream::new(capture);
        d.push(bytes, &mut |e| {
            s.push(e.data);
        });
        s.finish()
    }

    #[test]
    fn stream_with_usage_is_assembled() {
        let summary = summarize(&fixture("chat_stream_usage.sse"), true);
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
        assert_eq!(
            summary.output,
            vec![Message {
                role: "assistant".into(),
                parts: vec![Part::Text("Hello there\n\"friend\"".into())],
                name: None,
                finish_reason: Some("stop".into()),
            }]
        );
    }

    #[test]
    fn tool_call_deltas_are_assembled_across_chunks() {
        let summary = summarize(&fixture("chat_stream_tools.sse"), true);
        assert_eq!(summary.facts.finish_reasons, vec!["tool_calls"]);
        assert_eq!(summary.facts.tool_calls, vec!["get_weather", "get_time"]);
        assert_eq!(
            summary.output[0].parts,
            vec![
                Part::ToolCall {
                    id: Some("call_a".into()),
                    name: "get_weather".into(),
                    arguments: Some(r#"{"city": "Paris"}"#.into())
                },
                Part::ToolCall {
                    id: Some("call_b".into()),
                    name: "get_time".into(),
                    arguments: Some(r#"{"tz": "CET"}"#.into())
                },
            ]
        );
        let without = summarize(&fixture("chat_stream_tools.sse"), false);
        assert_eq!(without.facts.tool_calls, vec!["get_weather", "get_time"]);
        assert!(without.output.is_empty());
    }

    #[test]
    fn several_choices_each_finish_in_order() {
        let summary = summarize(&fixture("chat_stream_n2.sse"), true);
        assert_eq!(summary.facts.finish_reasons, vec!["stop", "length"]);
        assert_eq!(summary.output.len(), 2);
        assert_eq!(summary.output[1].parts, vec![Part::Text("B1 B2".into())]);
    }

    #[test]
    fn azure_prompt_filter_chunk_with_empty_id_does_not_win() {
        let summary = summarize(&fixture("chat_stream_azure.sse"), false);
        assert_eq!(summary.facts.id.as_deref(), Some("chatcmpl-az1"));
        assert_eq!(summary.facts.model.as_deref(), Some("gpt-4o-2024-11-20"));
        assert_eq!(summary.facts.finish_reasons, vec!["stop"]);
        assert_eq!(summary.facts.usage.input_tokens, None);
    }

    #[test]
    fn azure_content_filter_results_are_summed_up() {
        let summary = summarize(&fixture("chat_stream_azure.sse"), false);
        assert_eq!(
            summary.content_filter,
            Some(ContentFilter {
                filtered: false,
                categories: vec![]
            })
        );
        let summary = parse_response(
            br#"{"id":"x","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"jailbreak":{"filtered":false,"detected":true}}}],"choices":[{"index":0,"finish_reason":"content_filter","content_filter_results":{"violence":{"filtered":true,"severity":"high"},"hate":{"filtered":false,"severity":"safe"}}}]}"#,
            false,
        );
        assert_eq!(
            summary.content_filter,
            Some(ContentFilter {
                filtered: true,
                categories: vec!["jailbreak".into(), "violence".into()]
            })
        );
        assert_eq!(summary.facts.finish_reasons, vec!["content_filter"]);
        assert_eq!(
            parse_response(&fixture("chat_response.json"), false).content_filter,
            None
        );
    }

    #[test]
    fn unfinished_choice_reports_error_and_bad_chunk_is_described() {
        let summary = summarize(
            b"data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{}},{\"index\":1,\"finish_reason\":\"stop\"}]}\n\ndata: {oops\n\n",
            false,
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
            false,
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
    fn hostile_indexes_are_not_allocated() {
        let summary = summarize(
            b"data: {\"choices\":[{\"index\":4000000000},{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":99999999}]}}]}\n\n",
            true,
        );
        assert_eq!(summary.facts.finish_reasons, vec!["error"]);
        assert!(summary.issue.unwrap().contains("out of range"));
    }

    #[test]
    fn the_fast_reader_reads_as_serde_does() {
        use json::Wire;
        let keys = [
            <RequestWire as Wire>::KEYS,
            <StreamOptionsWire as Wire>::KEYS,
            <ResponseFormatWire as Wire>::KEYS,
            <ToolWire as Wire>::KEYS,
            <FunctionWire as Wire>::KEYS,
            <UsageWire as Wire>::KEYS,
            <PromptDetailsWire as Wire>::KEYS,
            <CompletionDetailsWire as Wire>::KEYS,
            <ToolCallWire<'_> as Wire>::KEYS,
            <FunctionCallWire<'_> as Wire>::KEYS,
            <MessageWire<'_> as Wire>::KEYS,
            <FilterCategoryWire as Wire>::KEYS,
            <PromptFilterWire as Wire>::KEYS,
            <ChoiceWire<'_> as Wire>::KEYS,
            <CompletionWire<'_> as Wire>::KEYS,
            <ApiErrorWire as Wire>::KEYS,
            <ErrorBodyWire as Wire>::KEYS,
            &["violence", "hate"],
        ]
        .concat();
        let mut recorded: Vec<Vec<u8>> = [
            "chat_request_full.json",
            "chat_request_tools.json",
            "chat_response.json",
            "chat_response_tools.json",
        ]
        .map(fixture)
        .into();
        for name in ["chat_stream_azure.sse", "chat_stream_tools.sse"] {
            SseDecoder::new(1 << 20).push(&fixture(name), &mut |e| {
                if e.data != b"[DONE]" {
                    recorded.push(e.data.to_vec());
                }
            });
        }
        recorded
            .push(br#"{"error":{"message":"Rate limit","type":"requests","code":429}}"#.to_vec());
        let recorded: Vec<&[u8]> = recorded.iter().map(Vec::as_slice).collect();
        json::tests::agreement_holds(json::tests::documents(&keys), compare_readers);
        json::tests::replacements_agree(&recorded, compare_readers);
    }

    #[test]
    fn recorded_documents_are_read_by_the_fast_reader() {
        use json::Agreement::Same;
        for name in ["chat_request_full.json", "chat_request_tools.json"] {
            assert_eq!(json::compare::<RequestWire>(&fixture(name)), Same, "{name}");
        }
        for name in ["chat_response.json", "chat_response_tools.json"] {
            assert_eq!(
                json::compare::<CompletionWire<'_>>(&fixture(name)),
                Same,
                "{name}"
            );
        }
        for name in [
            "chat_stream_azure.sse",
            "chat_stream_n2.sse",
            "chat_stream_tools.sse",
            "chat_stream_usage.sse",
        ] {
            let mut events = 0;
            SseDecoder::new(1 << 20).push(&fixture(name), &mut |e| {
                if e.data != b"[DONE]" {
                    events += 1;
                    assert_eq!(json::compare::<CompletionWire<'_>>(e.data), Same, "{name}");
                }
            });
            assert!(events > 1, "{name}");
        }
        let error = br#"{"error":{"message":"Rate limit","type":"requests","code":"429"}}"#;
        assert_eq!(json::compare::<ErrorBodyWire>(error), Same);
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

    #[test]
    fn openai_and_azure_streams_are_read_cut() {
        let read = |bytes: &[u8], capture: bool, cutting: bool| {
            let mut d = SseDecoder::new(1 << 20);
            let mut s = ChatStream::new(capture);
            if !cutting {
                s.repeats = Repeats::never();
            }
            d.push(bytes, &mut |e| {
                s.push(e.data);
            });
            s
        };
        // Azure's fixture, with its one text delta followed by two more.
        let azure = String::from_utf8(fixture("chat_stream_azure.sse")).unwrap();
        let hi = azure
            .lines()
            .find(|l| l.contains(r#""content":"Hi""#))
            .unwrap();
        let more = [r#"" there""#, r#""\n\"friend\"""#].map(|t| hi.replace(r#""Hi""#, t));
        let azure = azure.replace(hi, &format!("{hi}\n\n{}\n\n{}", more[0], more[1]));
        // OpenAI's, padded as OpenAI now pads every chunk by default.
        let padded: String = String::from_utf8(fixture("chat_stream_usage.sse"))
            .unwrap()
            .lines()
            .enumerate()
            .map(|(i, l)| match l.strip_suffix('}') {
                Some(l) if l.starts_with("data: {") => {
                    format!("{l},\"obfuscation\":\"{}\"}}\n", "xY3".repeat(i % 4))
                }
                _ => format!("{l}\n"),
            })
            .collect();
        for (name, bytes, texts_not_read) in [
            ("openai", fixture("chat_stream_usage.sse"), 1),
            ("openai padded", padded.into_bytes(), 1),
            ("azure", azure.into_bytes(), 2),
        ] {
            let s = read(&bytes, false, true);
            assert!(s.repeats.hits() >= 2, "{name}: {:?}", s.repeats);
            // Past the first, the text deltas are not read at all.
            assert_eq!(s.text_only.hits(), texts_not_read, "{name}");
            assert_eq!(s.finish(), read(&bytes, false, false).finish(), "{name}");
            // With capture on, every text is read.
            let s = read(&bytes, true, true);
            assert_eq!(s.text_only.hits(), 0, "{name}");
            assert_eq!(s.finish(), read(&bytes, true, false).finish(), "{name}");
        }
    }

    proptest! {
        #[test]
        fn stream_summary_does_not_depend_on_chunk_boundaries(
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..16),
            which in 0usize..3,
        ) {
            let bytes = fixture(["chat_stream_usage.sse", "chat_stream_tools.sse", "chat_stream_n2.sse"][which]);
            let whole = summarize(&bytes, true);
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut decoder = SseDecoder::new(1 << 20);
            let mut stream = ChatStream::new(true);
            let mut at = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                decoder.push(&bytes[at..c], &mut |e| { stream.push(e.data); });
                at = c;
            }
            prop_assert_eq!(stream.finish(), whole);
        }
    }

    proptest! {
        // The interesting cases (a repeated key in a cut chunk) are a few in a hundred.
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Cutting the repeated members changes nothing a stream amounts to, whatever the
        /// providers' member order, a head that changes midway, a repeated key, or a broken
        /// chunk.
        #[test]
        fn cutting_repeated_members_changes_no_summary(
            chunks in proptest::collection::vec(chunk(), 1..16),
            capture in any::<bool>(),
        ) {
            let mut cutting = ChatStream::new(capture);
            let mut whole = ChatStream::new(capture);
            whole.repeats = Repeats::never();
            for c in &chunks {
                cutting.push(c.as_bytes());
                whole.push(c.as_bytes());
            }
            prop_assert_eq!(cutting.finish(), whole.finish());
        }
    }

    #[test]
    fn a_chunk_read_whole_in_between_is_not_skipped_over() {
        let text = |text: &str, finish: &str, more: &str| {
            format!(
                r#"{{"id":"c","model":"m","choices":[{{"index":0,"delta":{{"content":"{text}"}},"finish_reason":"{finish}"}}]{more}}}"#
            )
        };
        let chunks = [
            text("a", "length", ""),
            text("b", "length", ""),
            // Read whole: it names a member the head learnt from the first does not have.
            text("c", "stop", r#","usage":{"completion_tokens":3}"#),
            // Like the second but for its text: what it says comes after the third.
            text("d", "length", ""),
        ];
        let mut s = ChatStream::new(false);
        for c in &chunks {
            s.push(c.as_bytes());
        }
        assert_eq!(s.finish().facts.finish_reasons, vec!["length".to_owned()]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Text deltas that only differ from the chunk before in their text, left unread when
        /// content is not captured, change nothing a stream amounts to, whatever the text
        /// holds (a quote, a bad escape, a control character) or a chunk broken anywhere.
        #[test]
        fn leaving_texts_unread_changes_no_summary(
            head_last in any::<bool>(),
            chunks in proptest::collection::vec(text_chunk(), 1..24),
            capture in any::<bool>(),
        ) {
            let mut skipping = ChatStream::new(capture);
            let mut whole = ChatStream::new(capture);
            whole.repeats = Repeats::never();
            for (delta, finish, usage, padding, broken) in &chunks {
                let choice = format!(r#"{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}"#);
                // A member the others lack, read whole, between two chunks alike.
                let usage = if *usage { r#","usage":{"prompt_tokens":1,"completion_tokens":2}"# } else { "" };
                let chunk = if head_last {
                    format!(r#"{{"choices":[{choice}]{usage},"created":1,"id":"c","model":"m"{padding}}}"#)
                } else {
                    format!(r#"{{"id":"c","created":1,"model":"m","choices":[{choice}]{usage}{padding}}}"#)
                };
                let mut chunk = chunk.into_bytes();
                if let Some(at) = broken {
                    chunk.remove(at.index(chunk.len()));
                }
                skipping.push(&chunk);
                whole.push(&chunk);
            }
            prop_assert_eq!(skipping.finish(), whole.finish());
        }
    }

    /// A delta (mostly text, as it varies), its finish reason, whether usage comes with it, the
    /// padding, and where one byte is missing.
    fn text_chunk() -> impl Strategy<
        Value = (
            String,
            &'static str,
            bool,
            String,
            Option<prop::sample::Index>,
        ),
    > {
        let text = r#"([a-z ,{}/é]|\\[n"/\\]|\\u00[0-9a-fA-F]{2}){0,6}"#;
        // Valid contents, or what serde refuses in a string, or a quote that ends it early.
        let string = || {
            prop_oneof![
                3 => text.prop_map(|text| format!(r#""{text}""#)),
                1 => (text, prop_oneof![Just(r#"""#), Just(r"\q"), Just(r"\u00x1"), Just("\t"), Just(r"\")])
                    .prop_map(|(text, bad)| format!(r#""{text}{bad}""#)),
            ]
        };
        let delta = prop_oneof![
            8 => string().prop_map(|text| format!(r#"{{"content":{text}}}"#)),
            1 => Just(r#"{"role":"assistant","content":""}"#.to_owned()),
            1 => Just(r#"{"content":null}"#.to_owned()),
            1 => Just("{}".to_owned()),
        ];
        let finish =
            prop_oneof![4 => Just("null"), 1 => Just(r#""stop""#), 1 => Just(r#""length""#)];
        let usage = prop_oneof![4 => Just(false), 1 => Just(true)];
        // OpenAI's padding, different in every chunk.
        let padding = prop_oneof![
            2 => Just(String::new()),
            4 => string().prop_map(|s| format!(r#","obfuscation":{s}"#)),
            1 => Just(r#","obfuscation":7"#.to_owned()),
        ];
        let broken =
            prop_oneof![15 => Just(None), 1 => any::<prop::sample::Index>().prop_map(Some)];
        (delta, finish, usage, padding, broken)
    }

    /// A chunk as OpenAI (head first), Azure (head last) or anyone else would send it.
    fn chunk() -> impl Strategy<Value = String> {
        // Mostly the same head, as in a real stream, so that chunks repeat it.
        let head = (
            prop_oneof![8 => Just(r#""id":"chatcmpl-1""#), 1 => Just(r#""id":"""#), 1 => Just(r#""id":7"#)],
            Just(r#""object":"chat.completion.chunk""#),
            prop_oneof![8 => Just(r#""created":1741570283"#), 1 => Just(r#""created":1741570284"#)],
            prop_oneof![8 => Just(r#""model":"gpt-4o""#), 1 => Just(r#""model":"gpt-4o-mini""#)],
            prop_oneof![8 => Just(r#""system_fingerprint":"fp_1""#), 1 => Just(r#""system_fingerprint":null"#)],
            Just(r#""service_tier":"default""#),
        )
            .prop_map(|(a, b, c, d, e, f)| vec![a, b, c, d, e, f]);
        let choice = (
            prop_oneof![4 => Just(0i64), 1 => Just(1)],
            prop_oneof![
                1 => Just(r#"{"role":"assistant","content":""}"#.to_owned()),
                4 => Just(r#"{"content":" word"}"#.to_owned()),
                // Text deltas as they vary, with what serde would refuse in a string.
                4 => r#"([a-z ",{}]|\\[nu"q]|\\u00[0-9a-fA-Fx]{2}|\t){0,4}"#
                    .prop_map(|text| format!(r#"{{"content":"{text}"}}"#)),
                1 => Just(r#"{"content":"\"quoted\", {}"}"#.to_owned()),
                1 => Just(r#"{"tool_calls":[{"index":0,"id":"call_1","function":{"name":"f","arguments":"{\"a\""}}]}"#.to_owned()),
                1 => Just(r#"{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]}"#.to_owned()),
                1 => Just("{}".to_owned()),
            ],
            prop_oneof![4 => Just("null"), 1 => Just(r#""stop""#), 1 => Just(r#""length""#)],
        )
            .prop_map(|(i, d, f)| format!(r#"{{"index":{i},"delta":{d},"logprobs":null,"finish_reason":{f}}}"#));
        let read = (
            proptest::collection::vec(choice, 0..2).prop_map(|c| format!(r#""choices":[{}]"#, c.join(","))),
            prop_oneof![
                3 => Just(None),
                1 => Just(Some(r#""usage":{"prompt_tokens":19,"completion_tokens":5,"total_tokens":24}"#.to_owned())),
                1 => Just(Some(r#""usage":null"#.to_owned())),
                1 => Just(Some(r#""error":{"type":"server_error","code":null}"#.to_owned())),
                1 => Just(Some(r#""prompt_filter_results":[{"content_filter_results":{"hate":{"filtered":true}}}]"#.to_owned())),
                1 => "[a-z]{1,5}".prop_map(|o| Some(format!(r#""obfuscation":"{o}""#))),
                1 => Just(Some(r#""model":"again""#.to_owned())),
                1 => Just(Some(r#""id":null"#.to_owned())),
                1 => Just(Some(r#""usage":null,"usage":null"#.to_owned())),
            ],
        )
            .prop_map(|(choices, other)| {
                let mut v = vec![choices];
                v.extend(other);
                v
            });
        (
            head,
            read,
            0..3usize,
            any::<prop::sample::Index>(),
            0..8usize,
        )
            .prop_map(|(head, read, order, broken_at, broken)| {
                let head: Vec<String> = head.into_iter().map(str::to_owned).collect();
                let members: Vec<String> = match order {
                    0 => head.into_iter().chain(read).collect(),
                    1 => read.into_iter().chain(head).collect(),
                    _ => read.into_iter().chain(head.into_iter().take(2)).collect(),
                };
                let chunk = format!("{{{}}}", members.join(","));
                if broken == 0 {
                    let at = broken_at.index(chunk.len());
                    format!("{}{}", &chunk[..at], &chunk[at + 1..])
                } else {
                    chunk
                }
            })
    }
}
