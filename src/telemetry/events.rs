//! Captured content as a `gen_ai.client.inference.operation.details` event: an OpenTelemetry
//! log record in the span's context, carrying the span's attributes and the content in
//! structured form (the conventions require structure on events, JSON text on spans).
//!
//! Owns: building that record from an [`Exchange`]. Does not: decide whether content is
//! captured (the observer did), or export (the pipeline does).

use std::collections::HashMap;

use opentelemetry::logs::{AnyValue, LogRecord, Logger, Severity};
use opentelemetry::trace::TraceFlags;
use opentelemetry::{Array, Key, KeyValue, Value};
use opentelemetry_sdk::logs::{SdkLogRecord, SdkLogger};

use super::semconv::{GEN_AI_CLIENT_INFERENCE_OPERATION_DETAILS, GENAI_TAP_CONTENT_TRUNCATED};
use super::span::content_json;
use crate::exchange::Exchange;

/// How content is put on the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Structured values, as the conventions require on events (OTLP, console).
    Structured,
    /// JSON text, with the event name as the message: for destinations that flatten structured
    /// values into strings of their own making (Application Insights).
    Text,
}

/// The event for an exchange whose content was captured, carrying the span's `attributes`
/// ([`super::span::attributes`]); `None` without content.
pub fn build(
    logger: &SdkLogger,
    ex: &Exchange,
    attributes: &[KeyValue],
    budget: usize,
    form: Form,
) -> Option<SdkLogRecord> {
    let content = ex.content.as_ref()?;
    let mut record = logger.create_log_record();
    record.set_event_name(GEN_AI_CLIENT_INFERENCE_OPERATION_DETAILS);
    record.set_timestamp(ex.start + ex.duration);
    record.set_observed_timestamp(std::time::SystemTime::now());
    record.set_severity_number(Severity::Info);
    record.set_severity_text("INFO");
    let flags = if ex.trace.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    record.set_trace_context(ex.trace.trace_id, ex.trace.span_id, Some(flags));
    for KeyValue { key, value, .. } in attributes {
        record.add_attribute(key.clone(), any(value.clone()));
    }
    let (texts, truncated) = content_json(content, budget);
    for (key, text) in texts {
        match form {
            Form::Structured => {
                let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
                record.add_attribute(key, structured(value));
            }
            Form::Text => record.add_attribute(key, text),
        }
    }
    if form == Form::Text {
        record.set_body(GEN_AI_CLIENT_INFERENCE_OPERATION_DETAILS.into());
    }
    if truncated {
        record.add_attribute(GENAI_TAP_CONTENT_TRUNCATED, true);
    }
    Some(record)
}

fn any(value: Value) -> AnyValue {
    match value {
        Value::Bool(b) => AnyValue::Boolean(b),
        Value::I64(i) => AnyValue::Int(i),
        Value::F64(f) => AnyValue::Double(f),
        Value::String(s) => AnyValue::String(s),
        Value::Array(Array::String(items)) => {
            AnyValue::ListAny(Box::new(items.into_iter().map(AnyValue::String).collect()))
        }
        Value::Array(Array::I64(items)) => {
            AnyValue::ListAny(Box::new(items.into_iter().map(AnyValue::Int).collect()))
        }
        Value::Array(Array::F64(items)) => {
            AnyValue::ListAny(Box::new(items.into_iter().map(AnyValue::Double).collect()))
        }
        Value::Array(Array::Bool(items)) => {
            AnyValue::ListAny(Box::new(items.into_iter().map(AnyValue::Boolean).collect()))
        }
        other => AnyValue::String(other.to_string().into()),
    }
}

/// JSON as an OpenTelemetry structured value.
pub fn structured(value: serde_json::Value) -> AnyValue {
    match value {
        serde_json::Value::Null => AnyValue::String("".into()),
        serde_json::Value::Bool(b) => AnyValue::Boolean(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => AnyValue::Int(i),
            None => AnyValue::Double(n.as_f64().unwrap_or_default()),
        },
        serde_json::Value::String(s) => AnyValue::String(s.into()),
        serde_json::Value::Array(items) => {
            AnyValue::ListAny(Box::new(items.into_iter().map(structured).collect()))
        }
        serde_json::Value::Object(map) => AnyValue::Map(Box::new(
            map.into_iter()
                .map(|(k, v)| (Key::new(k), structured(v)))
                .collect::<HashMap<_, _>>(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genai::content::{Message, Part, RequestContent};
    use crate::redact::Redactor;
    use opentelemetry::logs::LoggerProvider;
    use opentelemetry_sdk::logs::SdkLoggerProvider;

    fn exchange(with_content: bool) -> Exchange {
        Exchange {
            content: with_content.then(|| {
                Redactor::none().seal(
                    RequestContent {
                        messages: vec![Message {
                            role: "user".into(),
                            parts: vec![Part::Text("hi".into())],
                            ..Message::default()
                        }],
                        ..RequestContent::default()
                    },
                    Vec::new(),
                )
            }),
            ..Exchange::example()
        }
    }

    fn event(logger: &SdkLogger, mut ex: Exchange, form: Form) -> Option<SdkLogRecord> {
        let attributes = crate::telemetry::span::attributes(&mut ex);
        build(logger, &ex, &attributes, 1 << 15, form)
    }

    #[test]
    fn the_event_is_in_the_span_context_with_structured_content() {
        let provider = SdkLoggerProvider::builder().build();
        let logger = provider.logger("test");
        assert!(event(&logger, exchange(false), Form::Structured).is_none());
        let text = event(&logger, exchange(true), Form::Text).unwrap();
        assert!(
            text.attributes_iter()
                .any(|(k, v)| k.as_str() == "gen_ai.input.messages"
                    && matches!(v, AnyValue::String(s) if s.as_str().starts_with("[{\"parts\"")))
        );
        assert!(
            matches!(text.body(), Some(AnyValue::String(s)) if s.as_str() == GEN_AI_CLIENT_INFERENCE_OPERATION_DETAILS)
        );
        let record = event(&logger, exchange(true), Form::Structured).unwrap();
        assert_eq!(
            record.event_name(),
            Some(GEN_AI_CLIENT_INFERENCE_OPERATION_DETAILS)
        );
        let context = record.trace_context().unwrap();
        assert_eq!(
            (context.trace_id, context.span_id),
            (
                opentelemetry::trace::TraceId::from(1),
                opentelemetry::trace::SpanId::from(2)
            )
        );
        let attrs: HashMap<String, AnyValue> = record
            .attributes_iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        assert_eq!(
            attrs["gen_ai.request.model"],
            AnyValue::String("gpt-4o".into())
        );
        let AnyValue::ListAny(messages) = &attrs["gen_ai.input.messages"] else {
            panic!(
                "structured, not a string: {:?}",
                attrs["gen_ai.input.messages"]
            );
        };
        let AnyValue::Map(first) = &messages[0] else {
            panic!()
        };
        assert_eq!(first[&Key::new("role")], AnyValue::String("user".into()));
    }
}
