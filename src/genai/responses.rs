//! The Responses API (`POST …/responses`): request parameters, the response object, and
//! streams of lifecycle events (`response.created` … `response.completed` /
//! `response.incomplete` / `response.failed` / `error`).
//!
//! Owns: the Responses wire format and how its `status` maps to finish reasons and errors
//! (`completed` → `stop`; `incomplete` → its reason, `length` for max tokens; `failed` /
//! `cancelled` → `error`, with `error.type` = the error code, else `response.failed`).

use std::borrow::Cow;

use serde::de::{MapAccess, SeqAccess};

use super::ResponseSummary;
use super::chat::{ApiErrorWire, UsageWire, output_type};
use super::content;
use super::json::{self, Field, Lenient, List, Obj, Raw, Taker};
use super::json_edit::{self, ValueSlot};
use super::scan::{Cursor, Scan, Scanned};
use crate::exchange::{ApiError, RequestFacts};

/// `conversation`: a string id, or an object with one.
#[derive(Debug, Clone, PartialEq, Default)]
struct ConversationId(String);

impl<'de> Lenient<'de> for ConversationId {
    fn from_str(v: &str) -> Option<Self> {
        Some(ConversationId(v.to_owned()))
    }
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        let mut id = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "id" {
                id = map.next_value::<Field<String>>()?.get();
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(id.map(ConversationId))
    }
    fn scan_map(c: &mut Cursor<'de>) -> Scanned<Option<Self>> {
        let mut id = None;
        c.members(|c, key| {
            if key == "id" {
                id = Field::<String>::scan(c)?.get();
                Ok(())
            } else {
                c.skip()
            }
        })?;
        Ok(id.map(ConversationId))
    }
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

json::wire! {
    struct RequestWire {
        model: Field<String> = "model",
        max_output_tokens: Field<i64> = "max_output_tokens",
        temperature: Field<f64> = "temperature",
        top_p: Field<f64> = "top_p",
        stream: Field<bool> = "stream",
        text: Field<Obj<TextWire>> = "text",
        service_tier: Field<String> = "service_tier",
        conversation: Field<ConversationId> = "conversation",
        tools: Field<List<Obj<ToolWire>>> = "tools",
    }

    struct TextWire {
        format: Field<Obj<FormatWire>> = "format",
    }
}

json::wire! {
    struct FormatWire {
        kind: Field<String> = "type",
    }

    struct ToolWire {
        kind: Field<String> = "type",
        name: Field<String> = "name",
    }
}

pub fn parse_request(body: &[u8]) -> (RequestFacts, Option<String>) {
    let w: RequestWire = match json::parse_object(body) {
        Ok(w) => w,
        Err(e) => return (RequestFacts::default(), Some(e)),
    };
    let mut t = Taker::default();
    let facts = RequestFacts {
        model: t.take("model", w.model),
        max_tokens: t.take("max_output_tokens", w.max_output_tokens),
        temperature: t.take("temperature", w.temperature),
        top_p: t.take("top_p", w.top_p),
        stream: t.take("stream", w.stream).unwrap_or(false),
        output_type: t
            .take("text", w.text)
            .and_then(|t| t.0.format.get())
            .and_then(|f| f.0.kind.get())
            .and_then(|k| output_type(&k)),
        service_tier: t.take("service_tier", w.service_tier),
        conversation_id: t.take("conversation", w.conversation).map(|c| c.0),
        tools: t
            .take("tools", w.tools)
            .map(|l| {
                l.0.into_iter()
                    .filter_map(|Obj(t)| t.name.get().or_else(|| t.kind.get()))
                    .collect()
            })
            .unwrap_or_default(),
        ..RequestFacts::default()
    };
    (facts, t.issue())
}

json::wire! {
    struct IncompleteWire {
        reason: Field<String> = "reason",
    }

    struct OutputItemWire {
        kind: Field<String> = "type",
        name: Field<String> = "name",
    }
}

json::wire! {
    /// The response object: the body of a non-streaming call, and inside stream events.
    struct ResponseWire {
        id: Field<String> = "id",
        model: Field<String> = "model",
        status: Field<String> = "status",
        service_tier: Field<String> = "service_tier",
        error: Field<Obj<ApiErrorWire>> = "error",
        incomplete_details: Field<Obj<IncompleteWire>> = "incomplete_details",
        usage: Field<Obj<UsageWire>> = "usage",
        output: Field<List<Obj<OutputItemWire>>> = "output",
        conversation: Field<ConversationId> = "conversation",
    }

    /// One stream event's data: `{"type": "response.…", "response": {…}, …}`. Its response
    /// object is `R`: kept raw (`Raw`) to be read on its own, or read in the same pass
    /// (`Field<Obj<ResponseWire>>`).
    struct EventWire<'a, R> {
        #[serde(borrow)]
        kind: Field<Cow<'a, str>> = "type",
        response: Option<R> = "response",
        /// `error` events carry their code at the top level.
        code: Field<json::Code> = "code",
    }
}

/// An event as read: its type, its error code (`error` events) and its response object.
struct Event<'a> {
    kind: Cow<'a, str>,
    code: Field<json::Code>,
    response: Option<Object<'a>>,
}

/// An event's response object, read with the event or still to be read.
#[allow(
    clippy::large_enum_variant,
    reason = "lives on the stack while one event is read; boxing would allocate per event"
)]
enum Object<'a> {
    Read(ResponseWire),
    Raw(Raw<'a>),
}

/// Finish reason and error for a response status.
fn outcome(
    status: &str,
    incomplete: Option<String>,
    error: Option<ApiError>,
) -> (String, Option<ApiError>) {
    match status {
        "completed" => ("stop".into(), None),
        "incomplete" => {
            let reason = match incomplete.as_deref() {
                Some("max_output_tokens") | None => "length".to_owned(),
                Some(other) => other.to_owned(),
            };
            (reason, None)
        }
        "failed" | "cancelled" => {
            let mut e = error.unwrap_or_default();
            if e.code.is_none() {
                e.code = Some("response.failed".into());
            }
            ("error".into(), Some(e))
        }
        // queued / in_progress: the response has not finished.
        _ => ("error".into(), None),
    }
}

/// Reads a response object (complete or a snapshot from a stream event) and folds it into
/// `summary`; with `capture`, a finished one's output too.
fn apply(summary: &mut ResponseSummary, raw: &[u8], capture: bool) -> Result<(), String> {
    let w: ResponseWire = json::parse_object(raw)?;
    if let Some(reason) = fold(summary, w)
        && capture
    {
        let value: serde_json::Value = serde_json::from_slice(raw).unwrap_or_default();
        summary.output = content::responses_output(&value["output"], Some(reason));
    }
    Ok(())
}

/// Folds a response object into `summary`; its finish reason, when it has finished.
fn fold(summary: &mut ResponseSummary, w: ResponseWire) -> Option<String> {
    let facts = &mut summary.facts;
    if facts.id.is_none() {
        facts.id = w.id.get().filter(|s| !s.is_empty());
    }
    if let Some(model) = w.model.get().filter(|s| !s.is_empty()) {
        facts.model = Some(model);
    }
    if let Some(tier) = w.service_tier.get() {
        facts.service_tier = Some(tier);
    }
    if let Some(Obj(u)) = w.usage.get() {
        facts.usage = u.into();
    }
    if let Some(c) = w.conversation.get() {
        summary.conversation_id = Some(c.0);
    }
    let status = w.status.get().unwrap_or_default();
    if let Some(items) = w.output.get() {
        facts.tool_calls = items
            .0
            .into_iter()
            .filter(|Obj(i)| i.kind.as_ref().is_some_and(|k| k == "function_call"))
            .filter_map(|Obj(i)| i.name.get())
            .collect();
    }
    if !matches!(
        status.as_str(),
        "completed" | "incomplete" | "failed" | "cancelled"
    ) {
        return None;
    }
    let (reason, error) = outcome(
        &status,
        w.incomplete_details.get().and_then(|d| d.0.reason.get()),
        w.error.get().map(|Obj(e)| e.into()),
    );
    facts.finish_reasons = vec![reason.clone()];
    summary.error = error;
    summary.done = true;
    Some(reason)
}

/// An event's type, error code and response object. With `one_pass`, the response object is read
/// with the event. An event that pass does not take (the object is not an object, or serde
/// rejects something in it) is read again as before, its object kept raw and read on its own,
/// so its issue is reported where it was; an event that pass takes reads the same either way.
fn read_event(data: &[u8], one_pass: bool) -> Result<Event<'_>, String> {
    if one_pass
        && let Ok(e) = json::parse_object::<EventWire<'_, Field<Obj<ResponseWire>>>>(data)
        && let Some(response) = match e.response {
            None => Some(None),
            Some(Field::Present(Obj(w))) => Some(Some(Object::Read(w))),
            Some(_) => None,
        }
    {
        return Ok(Event {
            kind: e.kind.get().unwrap_or_default(),
            code: e.code,
            response,
        });
    }
    let e: EventWire<'_, Raw<'_>> = json::parse_object(data)?;
    Ok(Event {
        kind: e.kind.get().unwrap_or_default(),
        code: e.code,
        response: e.response.map(Object::Raw),
    })
}

/// Reads a complete (non-streaming) response object.
pub fn parse_response(body: &[u8], capture: bool) -> ResponseSummary {
    let mut summary = ResponseSummary::default();
    if let Err(e) = apply(&mut summary, body, capture) {
        summary.issue = Some(e);
    } else if !summary.done {
        summary.facts.finish_reasons = vec!["error".into()];
    }
    summary
}

/// Assembles a Responses stream from its events.
#[derive(Debug, Default)]
pub struct ResponsesStream {
    capture: bool,
    /// Response objects read in the same pass as their event (not with capture, which reads
    /// the raw object again for its output).
    one_pass: bool,
    summary: ResponseSummary,
    /// The last delta event read, with the members every delta changes marked.
    delta: ValueSlot,
}

/// The members of a delta event that change from one delta to the next and that the reader
/// ignores: the text (or arguments) delta, OpenAI's padding, the event's number.
const VARYING: [&[u8]; 3] = [b"delta", b"obfuscation", b"sequence_number"];

impl ResponsesStream {
    pub fn new(capture: bool) -> Self {
        ResponsesStream {
            capture,
            one_pass: !capture,
            ..ResponsesStream::default()
        }
    }

    /// Feeds one SSE event's data. Returns whether it carried output (a `*.delta` event).
    pub fn push(&mut self, data: &[u8]) -> bool {
        let s = &mut self.summary;
        s.chunks += 1;
        // A delta event without a `response` changes nothing but the count, whatever came
        // before it and with capture on or off (captured output is read from the final response
        // object): one that repeats the last delta read outside its varying members is read the
        // same way, so it need not be read (`ValueSlot` argues why that is exact). Most of a
        // stream's events are such deltas.
        if self.delta.matches(data) {
            return true;
        }
        let Event {
            kind,
            code,
            response,
        } = match read_event(data, self.one_pass) {
            Ok(e) => e,
            Err(e) => {
                if s.issue.is_none() {
                    s.issue = Some(format!("event {}: {e}", s.chunks));
                }
                return false;
            }
        };
        if kind == "error" {
            s.error = Some(ApiError {
                code: code.get().map(|c| c.0).or(Some("_OTHER".into())),
                kind: None,
            });
            return false;
        }
        let delta = kind.ends_with(".delta");
        match response {
            Some(Object::Read(w)) => {
                fold(s, w);
            }
            Some(Object::Raw(raw)) => {
                if let Err(e) = apply(s, raw.get().as_bytes(), self.capture)
                    && s.issue.is_none()
                {
                    s.issue = Some(format!("event {}: {e}", s.chunks));
                }
            }
            None if delta => {
                let marks = json_edit::members(data).map(|(_, members)| {
                    members
                        .into_iter()
                        .filter(|m| VARYING.contains(&&data[m.key.clone()]))
                        .map(|m| m.value)
                });
                self.delta.learn(data, marks.into_iter().flatten());
            }
            None => {}
        }
        delta
    }

    pub fn finish(mut self) -> ResponseSummary {
        if !self.summary.done && self.summary.facts.finish_reasons.is_empty() {
            // The response never reached a terminal status.
            self.summary.facts.finish_reasons = vec!["error".into()];
        }
        self.summary
    }
}

/// How the two readers compare on `body` read as each of this module's documents (for tests
/// and the fuzz target).
pub(crate) fn compare_readers(body: &[u8]) -> Vec<json::Agreement> {
    vec![
        json::compare::<RequestWire>(body),
        json::compare::<ResponseWire>(body),
        json::compare::<EventWire<'_, Field<Obj<ResponseWire>>>>(body),
        json::compare::<EventWire<'_, Raw<'_>>>(body),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genai::content::Part;
    use crate::genai::fixture;
    use crate::genai::sse::SseDecoder;
    use proptest::prelude::*;

    #[test]
    fn the_fast_reader_reads_as_serde_does() {
        use json::Wire;
        let keys = [
            <RequestWire as Wire>::KEYS,
            <TextWire as Wire>::KEYS,
            <FormatWire as Wire>::KEYS,
            <ToolWire as Wire>::KEYS,
            <IncompleteWire as Wire>::KEYS,
            <OutputItemWire as Wire>::KEYS,
            <ResponseWire as Wire>::KEYS,
            <UsageWire as Wire>::KEYS,
            <ApiErrorWire as Wire>::KEYS,
            <EventWire<'_, Raw<'_>> as Wire>::KEYS,
        ]
        .concat();
        let mut recorded = vec![
            fixture("responses_request.json"),
            fixture("responses_response.json"),
        ];
        SseDecoder::new(1 << 20).push(&fixture("responses_stream.sse"), &mut |e| {
            recorded.push(e.data.to_vec());
        });
        let recorded: Vec<&[u8]> = recorded.iter().map(Vec::as_slice).collect();
        json::tests::agreement_holds(json::tests::documents(&keys), compare_readers);
        json::tests::replacements_agree(&recorded, compare_readers);
    }

    #[test]
    fn recorded_documents_are_read_by_the_fast_reader() {
        use json::Agreement::Same;
        let request = fixture("responses_request.json");
        assert_eq!(json::compare::<RequestWire>(&request), Same);
        let response = fixture("responses_response.json");
        assert_eq!(json::compare::<ResponseWire>(&response), Same);
    }

    #[test]
    fn request_parameters() {
        let (facts, issue) = parse_request(&fixture("responses_request.json"));
        assert_eq!(issue, None);
        assert_eq!(facts.model.as_deref(), Some("gpt-4.1"));
        assert_eq!(facts.max_tokens, Some(500));
        assert_eq!(facts.temperature, Some(0.3));
        assert_eq!(facts.output_type, Some("json"));
        assert_eq!(
            facts.conversation_id.as_deref(),
            Some("conv_689667905b048191b4740501625afd940c7533ace33a2dab")
        );
        assert_eq!(facts.tools, vec!["get_weather", "web_search_preview"]);
        assert!(facts.stream);
        let (facts, _) = parse_request(
            br#"{"model":"m","conversation":"conv_1","previous_response_id":"resp_0"}"#,
        );
        assert_eq!(
            facts.conversation_id.as_deref(),
            Some("conv_1"),
            "previous_response_id is not a conversation"
        );
    }

    #[test]
    fn completed_response() {
        let s = parse_response(&fixture("responses_response.json"), true);
        assert_eq!(s.issue, None);
        assert_eq!(
            s.facts.id.as_deref(),
            Some("resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b")
        );
        assert_eq!(s.facts.model.as_deref(), Some("gpt-4.1-2025-04-14"));
        assert_eq!(s.facts.finish_reasons, vec!["stop"]);
        assert_eq!(s.facts.usage.input_tokens, Some(36));
        assert_eq!(s.facts.usage.output_tokens, Some(87));
        assert_eq!(s.facts.usage.cache_read_input_tokens, Some(4));
        assert_eq!(s.facts.usage.reasoning_output_tokens, Some(0));
        assert_eq!(s.facts.tool_calls, vec!["get_weather"]);
        assert_eq!(s.error, None);
        assert_eq!(s.output[0].finish_reason.as_deref(), Some("stop"));
        assert_eq!(
            s.output[0].parts[0],
            Part::Text("In a peaceful grove beneath a silver moon.".into())
        );
        assert!(
            matches!(&s.output[0].parts[1], Part::ToolCall { name, .. } if name == "get_weather")
        );
    }

    #[test]
    fn incomplete_and_failed_statuses() {
        let s = parse_response(
            br#"{"id":"r","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"model":"m"}"#,
            false,
        );
        assert_eq!(s.facts.finish_reasons, vec!["length"]);
        let s = parse_response(
            br#"{"id":"r","status":"incomplete","incomplete_details":{"reason":"content_filter"}}"#,
            false,
        );
        assert_eq!(s.facts.finish_reasons, vec!["content_filter"]);
        let s = parse_response(
            br#"{"id":"r","status":"failed","error":{"code":"server_error","message":"The model failed"}}"#,
            false,
        );
        assert_eq!(s.facts.finish_reasons, vec!["error"]);
        assert_eq!(s.error.unwrap().identifier(), Some("server_error"));
        let s = parse_response(br#"{"id":"r","status":"failed"}"#, false);
        assert_eq!(s.error.unwrap().identifier(), Some("response.failed"));
    }

    fn summarize(bytes: &[u8], capture: bool) -> ResponseSummary {
        let mut d = SseDecoder::new(1 << 20);
        let mut s = ResponsesStream::new(capture);
        d.push(bytes, &mut |e| {
            s.push(e.data);
        });
        s.finish()
    }

    #[test]
    fn stream_of_lifecycle_events() {
        let s = summarize(&fixture("responses_stream.sse"), true);
        assert_eq!(s.issue, None);
        assert!(s.done);
        assert_eq!(s.facts.id.as_deref(), Some("resp_stream1"));
        assert_eq!(s.facts.model.as_deref(), Some("gpt-4.1-2025-04-14"));
        assert_eq!(s.facts.finish_reasons, vec!["stop"]);
        assert_eq!(s.facts.usage.input_tokens, Some(37));
        assert_eq!(s.facts.usage.output_tokens, Some(11));
        assert_eq!(s.output[0].parts, vec![Part::Text("Hi there!".into())]);
    }

    #[test]
    fn failed_stream_and_error_event() {
        let s = summarize(
            b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r1\",\"status\":\"in_progress\",\"model\":\"m\"}}\n\nevent: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"id\":\"r1\",\"status\":\"failed\",\"error\":{\"code\":\"rate_limit_exceeded\",\"message\":\"x\"}}}\n\n",
            false,
        );
        assert_eq!(s.facts.finish_reasons, vec!["error"]);
        assert_eq!(s.error.unwrap().identifier(), Some("rate_limit_exceeded"));
        let s = summarize(
            b"event: error\ndata: {\"type\":\"error\",\"code\":\"ERR_SOMETHING\",\"message\":\"Something happened\",\"param\":null}\n\n",
            false,
        );
        assert_eq!(s.error.unwrap().identifier(), Some("ERR_SOMETHING"));
        let s = summarize(
            b"data: {\"type\":\"response.created\",\"response\":{\"id\":\"r2\",\"status\":\"in_progress\"}}\n\n",
            false,
        );
        assert!(!s.done);
        assert_eq!(
            s.facts.finish_reasons,
            vec!["error"],
            "never reached a terminal status"
        );
    }

    #[test]
    fn deltas_that_repeat_the_last_one_are_not_read() {
        for capture in [false, true] {
            let bytes = fixture("responses_stream.sse");
            let mut d = SseDecoder::new(1 << 20);
            let mut skipping = ResponsesStream::new(capture);
            let mut whole = ResponsesStream::new(capture);
            whole.delta = ValueSlot::never();
            let mut deltas = 0;
            d.push(&bytes, &mut |e| {
                let delta = skipping.push(e.data);
                assert_eq!(delta, whole.push(e.data));
                deltas += usize::from(delta);
            });
            assert_eq!(deltas, 2);
            assert_eq!(skipping.delta.hits(), 1, "the second delta");
            assert_eq!(skipping.finish(), whole.finish());
        }
    }

    /// A stream event: mostly deltas that vary where deltas vary (with what serde refuses
    /// there), among lifecycle, error and broken events.
    fn event() -> impl Strategy<Value = Vec<u8>> {
        let text = r#"([a-z ,{}/é]|\\[n"/\\]|\\u00[0-9a-fA-F]{2}){0,5}"#;
        let string = || {
            prop_oneof![
                4 => text.prop_map(|t| format!(r#""{t}""#)),
                1 => (text, prop_oneof![Just(r#"""#), Just(r"\q"), Just("\t"), Just(r"\")])
                    .prop_map(|(t, bad)| format!(r#""{t}{bad}""#)),
            ]
        };
        let number = prop_oneof![
            6 => (0u32..1000).prop_map(|n| n.to_string()),
            1 => Just("-0.5e+2".to_owned()),
            1 => prop_oneof![Just("07"), Just("1."), Just("-"), Just("1e"), Just(".5"), Just("\"5\""), Just("null")]
                .prop_map(str::to_owned),
        ];
        let kind = prop_oneof![
            6 => Just("response.output_text.delta"),
            1 => Just("response.function_call_arguments.delta"),
            1 => Just("response.output_text.done"),
        ];
        let item = prop_oneof![4 => Just("msg_1"), 1 => Just("msg_2")];
        let padding = prop_oneof![
            1 => Just(String::new()),
            3 => string().prop_map(|s| format!(r#","obfuscation":{s}"#)),
        ];
        let delta = (kind, number.clone(), item, string(), padding).prop_map(
            |(kind, n, item, text, padding)| {
                format!(
                    r#"{{"type":"{kind}","sequence_number":{n},"item_id":"{item}","output_index":0,"content_index":0,"delta":{text},"logprobs":[]{padding}}}"#
                )
            },
        );
        let lifecycle = (
            prop_oneof![
                Just(("response.created", "in_progress")),
                Just(("response.completed", "completed")),
                Just(("response.incomplete", "incomplete")),
                Just(("response.failed", "failed")),
            ],
            number,
            prop_oneof![Just("m1"), Just("m2")],
            0u32..100,
        )
            .prop_map(|((kind, status), n, model, tokens)| {
                format!(
                    r#"{{"type":"{kind}","sequence_number":{n},"response":{{"id":"r","status":"{status}","model":"{model}","usage":{{"input_tokens":3,"output_tokens":{tokens}}}}}}}"#
                )
            });
        let other = prop_oneof![
            Just(r#"{"type":"error","sequence_number":3,"code":"server_error","message":"x"}"#.to_owned()),
            // Response objects the one-pass reading does not take: not an object, or a key twice.
            prop_oneof![Just(r#""r""#), Just("[1]"), Just("7"), Just("null"), Just(r#"{"id":"r","model":"m4","model":"m5"}"#), Just(r#"{"id":"r","status":"completed","usage":{"input_tokens":1,"input_tokens":2}}"#)]
                .prop_map(|response| format!(r#"{{"type":"response.in_progress","sequence_number":4,"response":{response}}}"#)),
            // One that is read whole but holds values of other types.
            Just(r#"{"type":"response.completed","response":{"id":7,"model":["m"],"status":"completed","usage":{"input_tokens":"1"},"output":{}}}"#.to_owned()),
            // A delta that carries a response: read, never skipped.
            Just(r#"{"type":"response.output_text.delta","sequence_number":9,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"x","logprobs":[],"response":{"id":"r","status":"completed","model":"m3"}}"#.to_owned()),
        ];
        let event = prop_oneof![12 => delta, 2 => lifecycle, 1 => other];
        let broken =
            prop_oneof![15 => Just(None), 1 => any::<prop::sample::Index>().prop_map(Some)];
        (event, broken).prop_map(|(event, broken)| {
            let mut event = event.into_bytes();
            if let Some(at) = broken {
                event.remove(at.index(event.len()));
            }
            event
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]
        /// Leaving repeated deltas unread changes neither a summary nor what `push` says.
        #[test]
        fn leaving_deltas_unread_changes_no_summary(
            events in proptest::collection::vec(event(), 1..24),
            capture in any::<bool>(),
        ) {
            let mut skipping = ResponsesStream::new(capture);
            let mut whole = ResponsesStream::new(capture);
            whole.delta = ValueSlot::never();
            for event in &events {
                prop_assert_eq!(skipping.push(event), whole.push(event));
            }
            prop_assert_eq!(skipping.finish(), whole.finish());
        }

        /// Reading response objects in the same pass as their event (without capture) reads
        /// the same as reading them apart, issues included.
        #[test]
        fn one_pass_reads_what_two_passes_read(
            events in proptest::collection::vec(event(), 1..24),
        ) {
            let mut one = ResponsesStream::new(false);
            let mut two = ResponsesStream::new(false);
            two.one_pass = false;
            for event in &events {
                prop_assert_eq!(one.push(event), two.push(event));
            }
            prop_assert_eq!(one.finish(), two.finish());
        }

        #[test]
        fn stream_summary_does_not_depend_on_chunk_boundaries(cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..16)) {
            let bytes = fixture("responses_stream.sse");
            let whole = summarize(&bytes, true);
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut decoder = SseDecoder::new(1 << 20);
            let mut stream = ResponsesStream::new(true);
            let mut at = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                decoder.push(&bytes[at..c], &mut |e| { stream.push(e.data); });
                at = c;
            }
            prop_assert_eq!(stream.finish(), whole);
        }
    }
}
