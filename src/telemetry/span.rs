//! An [`Exchange`] as a GenAI client span, named and attributed per the conventions.
//!
//! Owns: the mapping from observed facts to span name, kind, attributes, status and times,
//! and the content attributes (placed last, within one byte budget, so content can never push
//! usage, model or error attributes out of a destination). Does not: choose ids, sample, or
//! export (see `telemetry`).

use std::borrow::Cow;

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use super::semconv::*;
use crate::exchange::{Exchange, Failure};
use crate::genai::Operation;
use crate::genai::content::{self, fit};
use crate::redact::Content;

/// Where captured content goes and how much of it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ContentSettings {
    pub on_span: bool,
    pub on_event: bool,
    pub max_bytes: usize,
}

/// `{gen_ai.operation.name} {gen_ai.request.model}`, or the operation alone.
pub fn name(ex: &Exchange) -> Cow<'static, str> {
    let op = ex.api.operation().as_str();
    match &ex.request.model {
        // Joined by hand: `format!` took about 1k instructions here in the static binary,
        // most of them the formatting machinery and musl's copies of two short strings.
        Some(model) => {
            let mut name = String::with_capacity(op.len() + 1 + model.len());
            name.push_str(op);
            name.push(' ');
            name.push_str(model);
            Cow::Owned(name)
        }
        None => Cow::Borrowed(op),
    }
}

fn arc_str(s: &std::sync::Arc<str>) -> Value {
    Value::String(StringValue::from(s.clone()))
}

/// The attributes known when the request arrives (samplers see these).
pub fn start_attributes(ex: &Exchange) -> Vec<KeyValue> {
    let mut attrs = Vec::with_capacity(40);
    attrs.push(KeyValue::new(
        GEN_AI_OPERATION_NAME,
        ex.api.operation().as_str(),
    ));
    attrs.push(KeyValue::new(
        GEN_AI_PROVIDER_NAME,
        arc_str(&ex.target.provider),
    ));
    if let Some(model) = &ex.request.model {
        attrs.push(KeyValue::new(GEN_AI_REQUEST_MODEL, model.clone()));
    }
    attrs.push(KeyValue::new(SERVER_ADDRESS, arc_str(&ex.target.host)));
    // Conditionally required whenever server.address is set, 443 included.
    attrs.push(KeyValue::new(SERVER_PORT, i64::from(ex.target.port)));
    attrs
}

/// The span's attributes but content, for the span and the content event alike: the start
/// ones, then request, response and outcome. The texts they keep are moved out of `ex`, not
/// copied (the copies were allocated here and the originals freed at once); what is built from
/// the exchange after this must not need them.
pub fn attributes(ex: &mut Exchange) -> Vec<KeyValue> {
    let mut attrs = start_attributes(ex);
    facts_attributes(ex, &mut attrs);
    attrs
}

/// Every attribute but the start ones and content: request, response, outcome.
fn facts_attributes(ex: &mut Exchange, attrs: &mut Vec<KeyValue>) {
    let req = &mut ex.request;
    if let Some(t) = ex.api.openai_api_type() {
        attrs.push(KeyValue::new(OPENAI_API_TYPE, t));
    }
    if req.stream {
        attrs.push(KeyValue::new(GEN_AI_REQUEST_STREAM, true));
    }
    if let Some(v) = req.max_tokens {
        attrs.push(KeyValue::new(GEN_AI_REQUEST_MAX_TOKENS, v));
    }
    for (key, value) in [
        (GEN_AI_REQUEST_TEMPERATURE, req.temperature),
        (GEN_AI_REQUEST_TOP_P, req.top_p),
        (GEN_AI_REQUEST_FREQUENCY_PENALTY, req.frequency_penalty),
        (GEN_AI_REQUEST_PRESENCE_PENALTY, req.presence_penalty),
    ] {
        if let Some(v) = value {
            attrs.push(KeyValue::new(key, v));
        }
    }
    if let Some(stops) = req.stop_sequences.take() {
        attrs.push(KeyValue::new(GEN_AI_REQUEST_STOP_SEQUENCES, strings(stops)));
    }
    if let Some(v) = req.seed {
        attrs.push(KeyValue::new(GEN_AI_REQUEST_SEED, v));
    }
    if let Some(n) = req.choice_count.filter(|&n| n != 1) {
        attrs.push(KeyValue::new(GEN_AI_REQUEST_CHOICE_COUNT, n));
    }
    if let Some(t) = req.output_type {
        attrs.push(KeyValue::new(GEN_AI_OUTPUT_TYPE, t));
    }
    if let Some(tier) = req.service_tier.take().filter(|t| t != "auto") {
        attrs.push(KeyValue::new(OPENAI_REQUEST_SERVICE_TIER, tier));
    }
    if let Some(id) = req.conversation_id.take() {
        attrs.push(KeyValue::new(GEN_AI_CONVERSATION_ID, id));
    }
    if let Some(formats) = req.encoding_formats.take() {
        attrs.push(KeyValue::new(
            GEN_AI_REQUEST_ENCODING_FORMATS,
            strings(formats),
        ));
    }
    if !req.tools.is_empty() {
        let tools = std::mem::take(&mut req.tools);
        attrs.push(KeyValue::new(GENAI_TAP_REQUEST_TOOLS, strings(tools)));
    }
    if ex.usage_injected {
        attrs.push(KeyValue::new(GENAI_TAP_USAGE_INJECTED, true));
    }
    for (key, value) in std::mem::take(&mut ex.baggage) {
        attrs.push(KeyValue::new(key, value));
    }
    // Allowlisted request headers: string[] per the HTTP conventions, values joined by name.
    let mut headers: Vec<(&str, Vec<String>)> = Vec::new();
    for (name, value) in &ex.request_headers {
        match headers.iter_mut().find(|(n, _)| n == name) {
            Some((_, values)) => values.push(value.clone()),
            None => headers.push((name, vec![value.clone()])),
        }
    }
    for (name, values) in headers {
        attrs.push(KeyValue::new(
            format!("http.request.header.{name}"),
            strings(values),
        ));
    }

    let resp = &mut ex.response;
    for (key, value) in [
        (GEN_AI_RESPONSE_ID, resp.id.take()),
        (GEN_AI_RESPONSE_MODEL, resp.model.take()),
        (OPENAI_RESPONSE_SERVICE_TIER, resp.service_tier.take()),
        (
            OPENAI_RESPONSE_SYSTEM_FINGERPRINT,
            resp.system_fingerprint.take(),
        ),
    ] {
        if let Some(v) = value {
            attrs.push(KeyValue::new(key, v));
        }
    }
    if !resp.finish_reasons.is_empty() {
        attrs.push(KeyValue::new(
            GEN_AI_RESPONSE_FINISH_REASONS,
            strings(std::mem::take(&mut resp.finish_reasons)),
        ));
    }
    if !resp.tool_calls.is_empty() {
        attrs.push(KeyValue::new(
            GENAI_TAP_RESPONSE_TOOL_CALLS,
            strings(std::mem::take(&mut resp.tool_calls)),
        ));
    }
    if ex.api.operation() == Operation::Embeddings
        && let Some(n) = req.dimensions.or(resp.embedding_dimensions)
    {
        attrs.push(KeyValue::new(GEN_AI_EMBEDDINGS_DIMENSION_COUNT, n));
    }
    let usage = &resp.usage;
    for (key, value) in [
        (GEN_AI_USAGE_INPUT_TOKENS, usage.input_tokens),
        (GEN_AI_USAGE_OUTPUT_TOKENS, usage.output_tokens),
        (
            GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
            usage.cache_read_input_tokens,
        ),
        (
            GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
            usage.reasoning_output_tokens,
        ),
    ] {
        if let Some(v) = value {
            attrs.push(KeyValue::new(key, v));
        }
    }
    if let Some(ttfc) = ex.time_to_first_chunk {
        attrs.push(KeyValue::new(
            GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
            ttfc.as_secs_f64(),
        ));
    }
    if let Some(filter) = &mut ex.content_filter {
        attrs.push(KeyValue::new(
            GENAI_TAP_CONTENT_FILTER_FILTERED,
            filter.filtered,
        ));
        if !filter.categories.is_empty() {
            attrs.push(KeyValue::new(
                GENAI_TAP_CONTENT_FILTER_CATEGORIES,
                strings(std::mem::take(&mut filter.categories)),
            ));
        }
    }
    for (key, value) in [
        (GENAI_TAP_UPSTREAM_REQUEST_ID, ex.upstream.request_id.take()),
        (
            GENAI_TAP_UPSTREAM_APIM_REQUEST_ID,
            ex.upstream.apim_request_id.take(),
        ),
        (GENAI_TAP_UPSTREAM_REGION, ex.upstream.region.take()),
    ] {
        if let Some(v) = value {
            attrs.push(KeyValue::new(key, v));
        }
    }
    if let Some(status) = ex.status {
        attrs.push(KeyValue::new(HTTP_RESPONSE_STATUS_CODE, i64::from(status)));
    }
    if let Some(failure) = &ex.failure {
        attrs.push(KeyValue::new(ERROR_TYPE, failure.error_type()));
    }
    if let Some(issue) = ex.request_issue.take() {
        attrs.push(KeyValue::new(GENAI_TAP_REQUEST_PARSE_ERROR, issue));
    }
    if let Some(issue) = ex.response_issue.take() {
        attrs.push(KeyValue::new(GENAI_TAP_RESPONSE_PARSE_ERROR, issue));
    }
}

fn strings(values: Vec<String>) -> Value {
    Value::Array(Array::String(
        values.into_iter().map(StringValue::from).collect(),
    ))
}

/// The content attributes as JSON texts, sharing `budget` bytes fairly: small ones whole, the
/// rest cut down to what is left (see [`content::fit`]). The flag says something was cut.
pub fn content_json(content: &Content, budget: usize) -> (Vec<(&'static str, String)>, bool) {
    let mut values: Vec<(&'static str, serde_json::Value)> = vec![
        (
            GEN_AI_INPUT_MESSAGES,
            content::messages_json(content.input()),
        ),
        (
            GEN_AI_OUTPUT_MESSAGES,
            content::messages_json(content.output()),
        ),
    ];
    if !content.system_instructions().is_empty() {
        values.push((
            GEN_AI_SYSTEM_INSTRUCTIONS,
            content::parts_json(content.system_instructions()),
        ));
    }
    if !content.tools().is_empty() {
        values.push((
            GEN_AI_TOOL_DEFINITIONS,
            content::tools_json(content.tools()),
        ));
    }
    let sizes: Vec<usize> = values.iter().map(|(_, v)| v.to_string().len()).collect();
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by_key(|&i| sizes[i]);
    let mut shares = vec![0; values.len()];
    let mut left = budget;
    for (k, &i) in order.iter().enumerate() {
        shares[i] = sizes[i].min(left / (order.len() - k));
        left -= shares[i];
    }
    let mut truncated = false;
    let texts = values
        .into_iter()
        .zip(shares)
        .map(|((key, value), share)| {
            let (text, cut) = fit(value, share);
            truncated |= cut;
            (key, text)
        })
        .collect();
    (texts, truncated)
}

/// The content attributes for a span: JSON strings, content last.
pub fn content_attributes(content: &Content, budget: usize) -> Vec<KeyValue> {
    let (texts, truncated) = content_json(content, budget);
    let mut attrs: Vec<KeyValue> = texts
        .into_iter()
        .map(|(key, text)| KeyValue::new(key, text))
        .collect();
    if truncated {
        attrs.push(KeyValue::new(GENAI_TAP_CONTENT_TRUNCATED, true));
    }
    attrs
}

/// The span status: an error with a content-free description, or unset.
pub fn status(ex: &Exchange) -> Status {
    let Some(failure) = &ex.failure else {
        return Status::Unset;
    };
    let identifier = ex.api_error.as_ref().and_then(|e| e.identifier());
    let description: Cow<'static, str> = match (failure, identifier) {
        (Failure::Status(_) | Failure::InStream(_), Some(id)) => Cow::Owned(id.to_owned()),
        (Failure::Status(code), None) => Cow::Owned(format!(
            "HTTP {code}{}",
            http::StatusCode::from_u16(*code)
                .ok()
                .and_then(|s| s.canonical_reason())
                .map(|r| format!(" {r}"))
                .unwrap_or_default()
        )),
        (Failure::InStream(_), None) => Cow::Borrowed("error event in stream"),
        (Failure::Transport(t), _) => Cow::Owned(format!("upstream {}", t.as_str())),
        (Failure::Cancelled, _) => {
            Cow::Borrowed("the client closed the request before the response completed")
        }
    };
    Status::error(description)
}

/// The complete span for an exchange, with the ids fixed when its request arrived, from the
/// [`attributes`] taken from it.
pub fn build(
    ex: &Exchange,
    mut attributes: Vec<KeyValue>,
    scope: &InstrumentationScope,
    content: ContentSettings,
) -> SpanData {
    if content.on_span
        && let Some(c) = &ex.content
    {
        attributes.extend(content_attributes(c, content.max_bytes));
    }
    SpanData {
        span_context: SpanContext::new(
            ex.trace.trace_id,
            ex.trace.span_id,
            TraceFlags::SAMPLED,
            false,
            ex.trace.trace_state.clone(),
        ),
        parent_span_id: ex.trace.parent.unwrap_or(SpanId::INVALID),
        parent_span_is_remote: ex.trace.parent.is_some(),
        span_kind: SpanKind::Client,
        name: name(ex),
        start_time: ex.start,
        end_time: ex.start + ex.duration,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: status(ex),
        instrumentation_scope: scope.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{
        ApiError, ContentFilter, RequestFacts, ResponseFacts, TransportError, Usage,
    };
    use crate::genai::Api;
    use crate::genai::content::{Message, Part, RequestContent};
    use crate::redact::Redactor;
    use std::time::Duration;

    fn exchange() -> Exchange {
        Exchange {
            request: RequestFacts {
                model: Some("gpt-4o".into()),
                temperature: Some(0.5),
                stream: true,
                choice_count: Some(1),
                stop_sequences: Some(vec!["END".into()]),
                service_tier: Some("auto".into()),
                tools: vec!["get_weather".into()],
                ..RequestFacts::default()
            },
            response: ResponseFacts {
                id: Some("chatcmpl-1".into()),
                model: Some("gpt-4o-2024-08-06".into()),
                finish_reasons: vec!["stop".into()],
                usage: Usage {
                    input_tokens: Some(10),
                    output_tokens: Some(20),
                    ..Usage::default()
                },
                ..ResponseFacts::default()
            },
            streamed: true,
            time_to_first_chunk: Some(Duration::from_millis(250)),
            ..Exchange::example()
        }
    }

    fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    fn build_with(ex: &Exchange, content: ContentSettings) -> SpanData {
        let mut ex = ex.clone();
        let attributes = attributes(&mut ex);
        build(
            &ex,
            attributes,
            &InstrumentationScope::builder("test").build(),
            content,
        )
    }

    fn build_one(ex: &Exchange) -> SpanData {
        build_with(ex, ContentSettings::default())
    }

    #[test]
    fn successful_stream_span() {
        let span = build_one(&exchange());
        assert_eq!(span.name, "chat gpt-4o");
        assert_eq!(span.span_kind, SpanKind::Client);
        assert_eq!(span.status, Status::Unset);
        assert_eq!(
            span.end_time.duration_since(span.start_time).unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(
            attr(&span, GEN_AI_OPERATION_NAME),
            Some(&Value::from("chat"))
        );
        assert_eq!(
            attr(&span, GEN_AI_PROVIDER_NAME),
            Some(&Value::from("openai"))
        );
        assert_eq!(
            attr(&span, OPENAI_API_TYPE),
            Some(&Value::from("chat_completions"))
        );
        assert_eq!(
            attr(&span, SERVER_ADDRESS),
            Some(&Value::from("api.openai.com"))
        );
        assert_eq!(attr(&span, SERVER_PORT), Some(&Value::I64(443)));
        assert_eq!(attr(&span, GEN_AI_REQUEST_STREAM), Some(&Value::from(true)));
        assert_eq!(
            attr(&span, GEN_AI_REQUEST_TEMPERATURE),
            Some(&Value::from(0.5))
        );
        assert_eq!(
            attr(&span, GEN_AI_REQUEST_CHOICE_COUNT),
            None,
            "n = 1 is left out"
        );
        assert_eq!(
            attr(&span, OPENAI_REQUEST_SERVICE_TIER),
            None,
            "auto is left out"
        );
        assert_eq!(
            attr(&span, GEN_AI_REQUEST_STOP_SEQUENCES),
            Some(&Value::Array(Array::String(vec!["END".into()])))
        );
        assert_eq!(
            attr(&span, GENAI_TAP_REQUEST_TOOLS),
            Some(&Value::Array(Array::String(vec!["get_weather".into()])))
        );
        assert_eq!(
            attr(&span, GEN_AI_RESPONSE_FINISH_REASONS),
            Some(&Value::Array(Array::String(vec!["stop".into()])))
        );
        assert_eq!(
            attr(&span, GEN_AI_USAGE_INPUT_TOKENS),
            Some(&Value::I64(10))
        );
        assert_eq!(
            attr(&span, GEN_AI_USAGE_OUTPUT_TOKENS),
            Some(&Value::I64(20))
        );
        assert_eq!(
            attr(&span, GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK),
            Some(&Value::F64(0.25))
        );
        assert_eq!(attr(&span, ERROR_TYPE), None);
        assert_eq!(attr(&span, GEN_AI_EMBEDDINGS_DIMENSION_COUNT), None);
    }

    #[test]
    fn embeddings_span() {
        let mut ex = exchange();
        ex.api = Api::Embeddings;
        ex.request = RequestFacts {
            model: Some("text-embedding-3-small".into()),
            encoding_formats: Some(vec!["base64".into()]),
            ..RequestFacts::default()
        };
        ex.response = ResponseFacts {
            model: Some("text-embedding-3-small".into()),
            embedding_dimensions: Some(1536),
            usage: Usage {
                input_tokens: Some(8),
                ..Usage::default()
            },
            ..ResponseFacts::default()
        };
        let span = build_one(&ex);
        assert_eq!(span.name, "embeddings text-embedding-3-small");
        assert_eq!(
            attr(&span, GEN_AI_OPERATION_NAME),
            Some(&Value::from("embeddings"))
        );
        assert_eq!(attr(&span, OPENAI_API_TYPE), None);
        assert_eq!(
            attr(&span, GEN_AI_EMBEDDINGS_DIMENSION_COUNT),
            Some(&Value::I64(1536))
        );
        assert_eq!(
            attr(&span, GEN_AI_REQUEST_ENCODING_FORMATS),
            Some(&Value::Array(Array::String(vec!["base64".into()])))
        );
        ex.request.dimensions = Some(256);
        assert_eq!(
            attr(&build_one(&ex), GEN_AI_EMBEDDINGS_DIMENSION_COUNT),
            Some(&Value::I64(256)),
            "the requested dimensions win"
        );
    }

    #[test]
    fn responses_span_with_conversation_and_azure_details() {
        let mut ex = exchange();
        ex.api = Api::Responses;
        ex.request.conversation_id = Some("conv_1".into());
        ex.content_filter = Some(ContentFilter {
            filtered: true,
            categories: vec!["violence".into()],
        });
        ex.upstream.request_id = Some("req_1".into());
        let span = build_one(&ex);
        assert_eq!(
            attr(&span, OPENAI_API_TYPE),
            Some(&Value::from("responses"))
        );
        assert_eq!(
            attr(&span, GEN_AI_CONVERSATION_ID),
            Some(&Value::from("conv_1"))
        );
        assert_eq!(
            attr(&span, GENAI_TAP_CONTENT_FILTER_FILTERED),
            Some(&Value::from(true))
        );
        assert_eq!(
            attr(&span, GENAI_TAP_UPSTREAM_REQUEST_ID),
            Some(&Value::from("req_1"))
        );
    }

    #[test]
    fn http_error_span_has_error_type_and_identifier_status() {
        let mut ex = exchange();
        ex.failure = Some(Failure::Status(429));
        ex.api_error = Some(ApiError {
            code: Some("rate_limit_exceeded".into()),
            kind: None,
        });
        let span = build_one(&ex);
        assert_eq!(attr(&span, ERROR_TYPE), Some(&Value::from("429")));
        assert_eq!(span.status, Status::error("rate_limit_exceeded"));

        ex.api_error = None;
        assert_eq!(
            build_one(&ex).status,
            Status::error("HTTP 429 Too Many Requests")
        );
    }

    #[test]
    fn transport_failure_and_cancellation() {
        let mut ex = exchange();
        ex.failure = Some(Failure::Transport(TransportError::Timeout));
        let span = build_one(&ex);
        assert_eq!(attr(&span, ERROR_TYPE), Some(&Value::from("timeout")));
        ex.failure = Some(Failure::Cancelled);
        assert_eq!(
            attr(&build_one(&ex), ERROR_TYPE),
            Some(&Value::from("cancelled"))
        );
    }

    #[test]
    fn unknown_model_names_the_span_by_operation() {
        let mut ex = exchange();
        ex.request.model = None;
        ex.target.port = 8000;
        ex.request_issue = Some("invalid JSON at line 1 column 2".into());
        let span = build_one(&ex);
        assert_eq!(span.name, "chat");
        assert_eq!(attr(&span, SERVER_PORT), Some(&Value::I64(8000)));
        assert_eq!(
            attr(&span, GENAI_TAP_REQUEST_PARSE_ERROR),
            Some(&Value::from("invalid JSON at line 1 column 2"))
        );
    }

    fn with_content(text_len: usize) -> Exchange {
        let mut ex = exchange();
        let request = RequestContent {
            messages: vec![Message {
                role: "user".into(),
                parts: vec![Part::Text("q".repeat(text_len))],
                ..Message::default()
            }],
            ..RequestContent::default()
        };
        let output = vec![Message {
            role: "assistant".into(),
            parts: vec![Part::Text("answer".into())],
            name: None,
            finish_reason: Some("stop".into()),
        }];
        ex.content = Some(Redactor::none().seal(request, output));
        ex
    }

    #[test]
    fn content_goes_on_the_span_only_when_asked_and_last() {
        let ex = with_content(10);
        assert_eq!(attr(&build_one(&ex), GEN_AI_INPUT_MESSAGES), None);
        let settings = ContentSettings {
            on_span: true,
            on_event: false,
            max_bytes: 32 << 10,
        };
        let span = build_with(&ex, settings);
        let input = attr(&span, GEN_AI_INPUT_MESSAGES).unwrap().as_str();
        assert_eq!(
            input,
            r#"[{"parts":[{"content":"qqqqqqqqqq","type":"text"}],"role":"user"}]"#
        );
        assert_eq!(
            attr(&span, GEN_AI_OUTPUT_MESSAGES).unwrap().as_str(),
            r#"[{"finish_reason":"stop","parts":[{"content":"answer","type":"text"}],"role":"assistant"}]"#
        );
        assert_eq!(
            attr(&span, GEN_AI_SYSTEM_INSTRUCTIONS),
            None,
            "absent when empty"
        );
        let keys: Vec<&str> = span.attributes.iter().map(|kv| kv.key.as_str()).collect();
        let first_content = keys
            .iter()
            .position(|k| *k == GEN_AI_INPUT_MESSAGES)
            .unwrap();
        assert!(
            keys[first_content..]
                .iter()
                .all(|k| k.starts_with("gen_ai.input")
                    || k.starts_with("gen_ai.output")
                    || k.starts_with("genai_tap.content"))
        );
        assert_eq!(attr(&span, GENAI_TAP_CONTENT_TRUNCATED), None);
    }

    #[test]
    fn oversized_content_is_cut_to_the_budget_and_marked() {
        let ex = with_content(100_000);
        let span = build_with(
            &ex,
            ContentSettings {
                on_span: true,
                on_event: false,
                max_bytes: 4096,
            },
        );
        let total: usize = [GEN_AI_INPUT_MESSAGES, GEN_AI_OUTPUT_MESSAGES]
            .iter()
            .map(|k| attr(&span, k).unwrap().as_str().len())
            .sum();
        assert!(total <= 4096, "{total}");
        assert_eq!(
            attr(&span, GENAI_TAP_CONTENT_TRUNCATED),
            Some(&Value::from(true))
        );
        assert!(
            attr(&span, GEN_AI_OUTPUT_MESSAGES)
                .unwrap()
                .as_str()
                .contains("answer"),
            "the small attribute stays whole"
        );
        assert_eq!(
            attr(&span, GEN_AI_USAGE_INPUT_TOKENS),
            Some(&Value::I64(10))
        );
    }
}
