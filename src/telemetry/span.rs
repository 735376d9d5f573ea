//! An [`Exchange`] as a GenAI client span, named and attributed per the conventions.
//!
//! Owns: the mapping from observed facts to span name, kind, attributes, status and times.
//! Does not: choose ids, sample, or export (see `telemetry`).

use std::borrow::Cow;

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use super::semconv::*;
use crate::exchange::{Exchange, Failure};
use crate::genai::Operation;

/// `{gen_ai.operation.name} {gen_ai.request.model}`, or the operation alone.
pub fn name(ex: &Exchange) -> Cow<'static, str> {
    let op = ex.operation.as_str();
    match &ex.request.model {
        Some(model) => Cow::Owned(format!("{op} {model}")),
        None => Cow::Borrowed(op),
    }
}

/// The attributes known when the request arrives (samplers see these).
pub fn start_attributes(ex: &Exchange) -> Vec<KeyValue> {
    let mut attrs = Vec::with_capacity(32);
    attrs.push(KeyValue::new(GEN_AI_OPERATION_NAME, ex.operation.as_str()));
    attrs.push(KeyValue::new(
        GEN_AI_PROVIDER_NAME,
        Value::String(StringValue::from(ex.target.provider.clone())),
    ));
    if let Some(model) = &ex.request.model {
        attrs.push(KeyValue::new(GEN_AI_REQUEST_MODEL, model.clone()));
    }
    attrs.push(KeyValue::new(
        SERVER_ADDRESS,
        Value::String(StringValue::from(ex.target.host.clone())),
    ));
    // Conditionally required whenever server.address is set, 443 included.
    attrs.push(KeyValue::new(SERVER_PORT, i64::from(ex.target.port)));
    attrs
}

fn push_all(ex: &Exchange, attrs: &mut Vec<KeyValue>) {
    let req = &ex.request;
    if ex.operation == Operation::Chat {
        attrs.push(KeyValue::new(OPENAI_API_TYPE, "chat_completions"));
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
    if let Some(stops) = &req.stop_sequences {
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
    if let Some(tier) = req.service_tier.as_ref().filter(|t| *t != "auto") {
        attrs.push(KeyValue::new(OPENAI_REQUEST_SERVICE_TIER, tier.clone()));
    }

    let resp = &ex.response;
    for (key, value) in [
        (GEN_AI_RESPONSE_ID, &resp.id),
        (GEN_AI_RESPONSE_MODEL, &resp.model),
        (OPENAI_RESPONSE_SERVICE_TIER, &resp.service_tier),
        (OPENAI_RESPONSE_SYSTEM_FINGERPRINT, &resp.system_fingerprint),
    ] {
        if let Some(v) = value {
            attrs.push(KeyValue::new(key, v.clone()));
        }
    }
    if !resp.finish_reasons.is_empty() {
        attrs.push(KeyValue::new(
            GEN_AI_RESPONSE_FINISH_REASONS,
            strings(&resp.finish_reasons),
        ));
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
    if let Some(status) = ex.status {
        attrs.push(KeyValue::new(HTTP_RESPONSE_STATUS_CODE, i64::from(status)));
    }
    if let Some(failure) = &ex.failure {
        attrs.push(KeyValue::new(ERROR_TYPE, failure.error_type()));
    }
    if let Some(issue) = &ex.request_issue {
        attrs.push(KeyValue::new(GENAI_TAP_REQUEST_PARSE_ERROR, issue.clone()));
    }
    if let Some(issue) = &ex.response_issue {
        attrs.push(KeyValue::new(GENAI_TAP_RESPONSE_PARSE_ERROR, issue.clone()));
    }
}

fn strings(values: &[String]) -> Value {
    Value::Array(Array::String(
        values
            .iter()
            .map(|s| StringValue::from(s.clone()))
            .collect(),
    ))
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

/// The complete span for an exchange.
pub fn build(
    ex: &Exchange,
    trace_id: TraceId,
    span_id: SpanId,
    scope: &InstrumentationScope,
) -> SpanData {
    let mut attributes = start_attributes(ex);
    push_all(ex, &mut attributes);
    SpanData {
        span_context: SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: SpanId::INVALID,
        parent_span_is_remote: false,
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
    use crate::exchange::{ApiError, RequestFacts, ResponseFacts, Target, TransportError, Usage};
    use std::time::{Duration, SystemTime};

    fn exchange() -> Exchange {
        Exchange {
            operation: Operation::Chat,
            target: Target {
                provider: "openai".into(),
                host: "api.openai.com".into(),
                port: 443,
            },
            start: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            duration: Duration::from_millis(1500),
            request: RequestFacts {
                model: Some("gpt-4o".into()),
                temperature: Some(0.5),
                stream: true,
                choice_count: Some(1),
                stop_sequences: Some(vec!["END".into()]),
                service_tier: Some("auto".into()),
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
            status: Some(200),
            streamed: true,
            time_to_first_chunk: Some(Duration::from_millis(250)),
            failure: None,
            api_error: None,
            request_issue: None,
            response_issue: None,
        }
    }

    fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    fn build_one(ex: &Exchange) -> SpanData {
        build(
            ex,
            TraceId::from(1),
            SpanId::from(2),
            &InstrumentationScope::builder("test").build(),
        )
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
    fn unknown_model_names_the_span_by_operation_and_non_default_port_is_kept() {
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
}
