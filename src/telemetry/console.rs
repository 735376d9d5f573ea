//! The console exporter: one JSON object per span, one span per line, on stdout.
//!
//! Owns: a stable, human-readable JSON rendering of a span. Does not: decide what a span holds
//! (content and redaction happen before any exporter sees it).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::logs::AnyValue;
use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::{Array, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::logs::{LogBatch, LogExporter};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use serde_json::{Map, json};

/// Where console lines go: stdout in the binary, a buffer in tests.
pub type Sink = Arc<Mutex<dyn Write + Send>>;

#[derive(Clone)]
pub struct ConsoleExporter {
    sink: Sink,
    resource: Map<String, serde_json::Value>,
}

impl std::fmt::Debug for ConsoleExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleExporter").finish_non_exhaustive()
    }
}

impl ConsoleExporter {
    pub fn stdout() -> Self {
        Self::new(Arc::new(Mutex::new(std::io::stdout())))
    }

    pub fn new(sink: Sink) -> Self {
        ConsoleExporter {
            sink,
            resource: Map::new(),
        }
    }
}

impl ConsoleExporter {
    fn write_lines(&self, lines: impl Iterator<Item = serde_json::Value>) -> OTelSdkResult {
        let mut text = String::new();
        for line in lines {
            text.push_str(&line.to_string());
            text.push('\n');
        }
        let mut sink = self
            .sink
            .lock()
            .map_err(|_| OTelSdkError::InternalFailure("console sink poisoned".into()))?;
        sink.write_all(text.as_bytes())
            .and_then(|()| sink.flush())
            .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))
    }

    fn take_resource(&mut self, resource: &Resource) {
        self.resource = resource
            .iter()
            .map(|(k, v)| (k.to_string(), value(v)))
            .collect();
    }
}

impl SpanExporter for ConsoleExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.write_lines(batch.iter().map(|span| render(span, &self.resource)))
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.take_resource(resource);
    }
}

/// Events print as `{"event": name, ...}`, one per line, beside the spans.
impl LogExporter for ConsoleExporter {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        self.write_lines(batch.iter().map(|(record, scope)| {
            let attributes: Map<String, serde_json::Value> = record
                .attributes_iter()
                .map(|(k, v)| (k.to_string(), any(v)))
                .collect();
            let context = record.trace_context();
            json!({
                "event": record.event_name(),
                "timestamp": record.timestamp().map(rfc3339),
                "trace_id": context.map(|c| c.trace_id.to_string()),
                "span_id": context.map(|c| c.span_id.to_string()),
                "attributes": attributes,
                "resource": self.resource,
                "scope": {"name": scope.name(), "version": scope.version()},
            })
        }))
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.take_resource(resource);
    }
}

fn any(v: &AnyValue) -> serde_json::Value {
    match v {
        AnyValue::Int(i) => json!(i),
        AnyValue::Double(f) => json!(f),
        AnyValue::String(s) => json!(s.as_str()),
        AnyValue::Boolean(b) => json!(b),
        AnyValue::Bytes(b) => json!(b.as_slice()),
        AnyValue::ListAny(items) => serde_json::Value::Array(items.iter().map(any).collect()),
        AnyValue::Map(map) => {
            serde_json::Value::Object(map.iter().map(|(k, v)| (k.to_string(), any(v))).collect())
        }
        other => json!(format!("{other:?}")),
    }
}

fn render(span: &SpanData, resource: &Map<String, serde_json::Value>) -> serde_json::Value {
    let attributes: Map<String, serde_json::Value> = span
        .attributes
        .iter()
        .map(|kv| (kv.key.to_string(), value(&kv.value)))
        .collect();
    let parent = span.parent_span_id;
    let status = match &span.status {
        Status::Unset => json!({"code": "unset"}),
        Status::Ok => json!({"code": "ok"}),
        Status::Error { description } => json!({"code": "error", "description": description}),
    };
    let duration = span
        .end_time
        .duration_since(span.start_time)
        .unwrap_or_default();
    json!({
        "name": span.name,
        "kind": kind(&span.span_kind),
        "trace_id": span.span_context.trace_id().to_string(),
        "span_id": span.span_context.span_id().to_string(),
        "parent_span_id": (parent != opentelemetry::trace::SpanId::INVALID).then(|| parent.to_string()),
        "start_time": rfc3339(span.start_time),
        "end_time": rfc3339(span.end_time),
        "duration_ms": (duration.as_secs_f64() * 1e6).round() / 1e3,
        "status": status,
        "attributes": attributes,
        "resource": resource,
        "scope": {
            "name": span.instrumentation_scope.name(),
            "version": span.instrumentation_scope.version(),
        },
    })
}

fn kind(kind: &SpanKind) -> &'static str {
    match kind {
        SpanKind::Client => "client",
        SpanKind::Server => "server",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
        SpanKind::Internal => "internal",
    }
}

fn value(v: &Value) -> serde_json::Value {
    match v {
        Value::Bool(b) => json!(b),
        Value::I64(i) => json!(i),
        Value::F64(f) => json!(f),
        Value::String(s) => json!(s.as_str()),
        Value::Array(Array::Bool(a)) => json!(a),
        Value::Array(Array::I64(a)) => json!(a),
        Value::Array(Array::F64(a)) => json!(a),
        Value::Array(Array::String(a)) => {
            json!(a.iter().map(|s| s.as_str()).collect::<Vec<_>>())
        }
        other => json!(other.to_string()),
    }
}

/// `2026-11-22T10:15:30.123456Z`: UTC, microseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456)),
            "2023-11-14T22:13:20.123456Z"
        );
        // A leap day and the turn of a century.
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000000Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(4_102_444_800)),
            "2100-01-01T00:00:00.000000Z"
        );
    }

    #[tokio::test]
    async fn one_json_line_per_span() {
        use opentelemetry::KeyValue;
        use opentelemetry::trace::*;
        let buf: Arc<Mutex<Vec<u8>>> = Arc::new(Mutex::new(Vec::new()));
        let mut exporter = ConsoleExporter::new(buf.clone());
        SpanExporter::set_resource(
            &mut exporter,
            &Resource::builder_empty()
                .with_attribute(KeyValue::new("service.name", "svc"))
                .build(),
        );
        let span = SpanData {
            span_context: SpanContext::new(
                TraceId::from(7),
                SpanId::from(9),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Client,
            name: "chat m".into(),
            start_time: UNIX_EPOCH,
            end_time: UNIX_EPOCH + Duration::from_micros(1500),
            attributes: vec![
                KeyValue::new("gen_ai.usage.input_tokens", 5i64),
                KeyValue::new(
                    "gen_ai.response.finish_reasons",
                    Value::Array(Array::String(vec!["stop".into()])),
                ),
            ],
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::error("429"),
            instrumentation_scope: Default::default(),
        };
        SpanExporter::export(&exporter, vec![span.clone(), span])
            .await
            .unwrap();
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["name"], "chat m");
        assert_eq!(v["kind"], "client");
        assert_eq!(v["parent_span_id"], serde_json::Value::Null);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["status"]["description"], "429");
        assert_eq!(v["attributes"]["gen_ai.usage.input_tokens"], 5);
        assert_eq!(v["attributes"]["gen_ai.response.finish_reasons"][0], "stop");
        assert_eq!(v["resource"]["service.name"], "svc");
        assert_eq!(v["trace_id"], "00000000000000000000000000000007");
    }
}
