//! OTLP trace export requests encoded straight from the SDK's `SpanData` into protobuf bytes.
//!
//! Owns: the protobuf wire form of `ExportTraceServiceRequest` (opentelemetry-proto's
//! `trace.proto`, `common.proto`, `resource.proto`), field for field what the SDK's own
//! transform produces. The SDK's path copies every span into owned protobuf structs (a string
//! allocation per attribute key and value), encodes them, then frees them: 11 % of the proxy's
//! CPU under load. Here each span is encoded once, where it is recorded ([`EncodedSpan`]), and
//! a batch is its spans' bytes behind the resource and scope, encoded once each. No IO.
//! Does not: send anything, or encode metrics and logs (those stay with the SDK: they are
//! exported once a minute, or only with content capture on).

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// `SpanFlags`: the span says whether its parent is remote, and whether it is.
const CONTEXT_HAS_IS_REMOTE: u32 = 0x100;
const CONTEXT_IS_REMOTE: u32 = 0x200;

/// Protobuf output into one growing buffer.
struct Writer {
    buf: Vec<u8>,
}

/// `v` as a protobuf varint at the start of `out`; how many bytes it took.
fn varint_bytes(mut v: u64, out: &mut [u8; 10]) -> usize {
    let mut n = 0;
    while v >= 0x80 {
        out[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    out[n] = v as u8;
    n + 1
}

impl Writer {
    fn varint(&mut self, v: u64) {
        // Tags and most lengths: one byte, pushed rather than copied from a scratch array.
        if v < 0x80 {
            self.buf.push(v as u8);
            return;
        }
        let mut bytes = [0u8; 10];
        let n = varint_bytes(v, &mut bytes);
        self.buf.extend_from_slice(&bytes[..n]);
    }

    fn tag(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field << 3 | u32::from(wire)));
    }

    /// A length-delimited field, written even when empty (proto3 omits empty scalars; callers
    /// that mean a scalar use [`Writer::string`] or [`Writer::bytes`]).
    fn raw(&mut self, field: u32, bytes: &[u8]) {
        self.length(field, bytes.len());
        self.buf.extend_from_slice(bytes);
    }

    /// The tag and length of a length-delimited field whose `len` bytes the caller writes next.
    fn length(&mut self, field: u32, len: usize) {
        self.tag(field, LEN);
        self.varint(len as u64);
    }

    fn bytes(&mut self, field: u32, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.raw(field, bytes);
        }
    }

    fn string(&mut self, field: u32, s: &str) {
        self.bytes(field, s.as_bytes());
    }

    fn uint(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.tag(field, VARINT);
            self.varint(v);
        }
    }

    fn fixed64(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.tag(field, FIXED64);
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn fixed32(&mut self, field: u32, v: u32) {
        if v != 0 {
            self.tag(field, FIXED32);
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// A nested message, present even when empty. Its length is not known until it is
    /// written: one byte is set aside, and the body moved up in the rare case that the
    /// length needs more.
    fn message(&mut self, field: u32, body: impl FnOnce(&mut Writer)) {
        self.message_sized(field, 1, body);
    }

    /// [`Writer::message`] with `set_aside` bytes kept for the length: as many as it usually
    /// takes, so that the body is moved (down or up) only when it does not. A span is nearly
    /// always 128 bytes to 16 KiB, a two-byte length; with one byte set aside, every span's
    /// body was moved up by one.
    fn message_sized(&mut self, field: u32, set_aside: usize, body: impl FnOnce(&mut Writer)) {
        self.tag(field, LEN);
        let at = self.buf.len();
        self.buf.resize(at + set_aside, 0);
        body(self);
        let len = self.buf.len() - at - set_aside;
        let mut prefix = [0u8; 10];
        let n = varint_bytes(len as u64, &mut prefix);
        if n > set_aside {
            self.buf
                .splice(at..at + set_aside, prefix[..n].iter().copied());
            return;
        }
        if n < set_aside {
            let end = self.buf.len();
            self.buf.copy_within(at + set_aside..end, at + n);
            self.buf.truncate(end - (set_aside - n));
        }
        self.buf[at..at + n].copy_from_slice(&prefix[..n]);
    }

    /// `KeyValue { key = 1; value = 2 }`.
    fn key_value(&mut self, field: u32, key: &str, value: &Value) {
        if !self.small_key_value(field, key.as_bytes(), value) {
            self.nested_key_value(field, key, value);
        }
    }

    /// [`Writer::key_value`] for any key and value, each length set aside and filled in.
    fn nested_key_value(&mut self, field: u32, key: &str, value: &Value) {
        self.message(field, |w| {
            w.string(1, key);
            w.message(2, |w| w.any_value(value));
        });
    }

    /// The same bytes as [`Writer::key_value`]'s general path for a named scalar or string
    /// whose every length fits one byte (nearly every attribute a span has), written in one
    /// reserve: the lengths are known before anything is written. False, writing nothing,
    /// for anything else.
    fn small_key_value(&mut self, field: u32, key: &[u8], value: &Value) -> bool {
        let mut scalar = [0u8; 10];
        // AnyValue's one field: its tag, whether it is length-delimited, its bytes.
        let (tag, delimited, body): (u8, bool, &[u8]) = match value {
            Value::String(s) => (1 << 3 | LEN, true, s.as_str().as_bytes()),
            Value::Bool(b) => {
                scalar[0] = u8::from(*b);
                (2 << 3 | VARINT, false, &scalar[..1])
            }
            Value::I64(i) => {
                let n = varint_bytes(*i as u64, &mut scalar);
                (3 << 3 | VARINT, false, &scalar[..n])
            }
            Value::F64(f) => {
                scalar[..8].copy_from_slice(&f.to_bits().to_le_bytes());
                (4 << 3 | FIXED64, false, &scalar[..8])
            }
            _ => return false,
        };
        let any = 1 + usize::from(delimited) + body.len();
        let kv = 2 + key.len() + 2 + any;
        // The general path leaves an empty key out; so does this one, by not taking it.
        if field >= 16 || key.is_empty() || key.len() >= 0x80 || body.len() >= 0x80 || kv >= 0x80 {
            return false;
        }
        let b = &mut self.buf;
        b.reserve(2 + kv);
        b.extend_from_slice(&[
            (field << 3) as u8 | LEN,
            kv as u8,
            1 << 3 | LEN,
            key.len() as u8,
        ]);
        b.extend_from_slice(key);
        b.extend_from_slice(&[2 << 3 | LEN, any as u8, tag]);
        if delimited {
            b.push(body.len() as u8);
        }
        b.extend_from_slice(body);
        true
    }

    fn attributes<'a>(&mut self, field: u32, attributes: impl IntoIterator<Item = &'a KeyValue>) {
        for kv in attributes {
            self.key_value(field, kv.key.as_str(), &kv.value);
        }
    }

    /// The body of `AnyValue`: a oneof, so its one field is written even when it is zero.
    fn any_value(&mut self, value: &Value) {
        match value {
            Value::String(s) => self.raw(1, s.as_str().as_bytes()),
            Value::Bool(b) => {
                self.tag(2, VARINT);
                self.varint(u64::from(*b));
            }
            Value::I64(i) => {
                self.tag(3, VARINT);
                self.varint(*i as u64);
            }
            Value::F64(f) => {
                self.tag(4, FIXED64);
                self.buf.extend_from_slice(&f.to_bits().to_le_bytes());
            }
            Value::Array(array) => self.message(5, |w| w.array(array)),
            // A kind of value added to the API after this was written: its text, not nothing.
            other => self.raw(1, other.as_str().as_bytes()),
        }
    }

    /// The body of `ArrayValue { repeated AnyValue values = 1 }`.
    fn array(&mut self, array: &Array) {
        fn each<T>(w: &mut Writer, values: &[T], value: impl Fn(&T) -> Value) {
            for v in values {
                w.message(1, |w| w.any_value(&value(v)));
            }
        }
        match array {
            Array::Bool(v) => each(self, v, |b| Value::Bool(*b)),
            Array::I64(v) => each(self, v, |i| Value::I64(*i)),
            Array::F64(v) => each(self, v, |f| Value::F64(*f)),
            Array::String(v) => {
                for s in v {
                    self.message(1, |w| w.raw(1, StringValue::as_str(s).as_bytes()));
                }
            }
            other => self.message(1, |w| {
                w.raw(1, Value::Array(other.clone()).as_str().as_bytes())
            }),
        }
    }

    /// The body of `InstrumentationScope { name = 1; version = 2; attributes = 3 }`.
    fn scope(&mut self, scope: &InstrumentationScope) {
        self.string(1, scope.name());
        self.string(2, scope.version().unwrap_or_default());
        self.attributes(3, scope.attributes());
    }

    /// The body of `Span`, in `trace.proto`'s field order.
    fn span(&mut self, span: &SpanData) {
        let context = &span.span_context;
        self.bytes(1, &context.trace_id().to_bytes());
        self.bytes(2, &context.span_id().to_bytes());
        self.string(3, &context.trace_state().header());
        if span.parent_span_id != opentelemetry::trace::SpanId::INVALID {
            self.bytes(4, &span.parent_span_id.to_bytes());
        }
        self.string(5, &span.name);
        self.uint(6, span_kind(&span.span_kind));
        self.fixed64(7, nanos(span.start_time));
        self.fixed64(8, nanos(span.end_time));
        self.attributes(9, &span.attributes);
        self.uint(10, u64::from(span.dropped_attributes_count));
        for event in span.events.iter() {
            // Event { time_unix_nano = 1; name = 2; attributes = 3; dropped_attributes_count = 4 }
            self.message(11, |w| {
                w.fixed64(1, nanos(event.timestamp));
                w.string(2, &event.name);
                w.attributes(3, &event.attributes);
                w.uint(4, u64::from(event.dropped_attributes_count));
            });
        }
        self.uint(12, u64::from(span.events.dropped_count));
        for link in span.links.iter() {
            // Link { trace_id = 1; span_id = 2; trace_state = 3; attributes = 4;
            //        dropped_attributes_count = 5; flags = 6 }
            self.message(13, |w| {
                let c = &link.span_context;
                w.bytes(1, &c.trace_id().to_bytes());
                w.bytes(2, &c.span_id().to_bytes());
                w.string(3, &c.trace_state().header());
                w.attributes(4, &link.attributes);
                w.uint(5, u64::from(link.dropped_attributes_count));
                w.fixed32(6, flags(c.is_remote(), c.trace_flags().to_u8()));
            });
        }
        self.uint(14, u64::from(span.links.dropped_count));
        // Status { message = 2; code = 3 }: always present.
        self.message(15, |w| match &span.status {
            Status::Unset => {}
            Status::Ok => w.uint(3, 1),
            Status::Error { description } => {
                w.string(2, description);
                w.uint(3, 2);
            }
        });
        self.fixed32(
            16,
            flags(span.parent_span_is_remote, context.trace_flags().to_u8()),
        );
    }
}

fn flags(parent_is_remote: bool, trace_flags: u8) -> u32 {
    let mut flags = u32::from(trace_flags) | CONTEXT_HAS_IS_REMOTE;
    if parent_is_remote {
        flags |= CONTEXT_IS_REMOTE;
    }
    flags
}

/// `Span.SpanKind`'s numbers.
fn span_kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The part of every request that depends only on the resource, encoded once.
#[derive(Debug, Clone, Default)]
pub struct EncodedResource {
    /// `Resource { attributes = 1 }`'s body.
    attributes: Vec<u8>,
    schema_url: String,
}

impl EncodedResource {
    pub fn new(resource: &Resource) -> Self {
        let mut w = Writer { buf: Vec::new() };
        for (key, value) in resource.iter() {
            w.key_value(1, key.as_str(), value);
        }
        EncodedResource {
            attributes: w.buf,
            schema_url: resource.schema_url().unwrap_or_default().to_owned(),
        }
    }
}

/// The part of every request that depends only on the instrumentation scope, encoded once:
/// every span the proxy records has the same scope.
#[derive(Debug, Clone)]
pub struct EncodedScope {
    /// `InstrumentationScope`'s body.
    body: Vec<u8>,
    schema_url: String,
}

impl EncodedScope {
    pub fn new(scope: &InstrumentationScope) -> Self {
        let mut w = Writer { buf: Vec::new() };
        w.scope(scope);
        EncodedScope {
            body: w.buf,
            schema_url: scope.schema_url().unwrap_or_default().to_owned(),
        }
    }
}

/// One span, encoded where it was recorded: `ScopeSpans.spans`' field, tag and length
/// included, so a batch is the spans' bytes one after another. The span's own allocations
/// are freed by the thread that made them (glibc's per-thread cache takes them back; freed on
/// the export thread, each went through the arena's slow path on both sides), and the export
/// thread only copies bytes instead of encoding a batch in one burst. The span's own
/// `instrumentation_scope` is not encoded: the batch's [`EncodedScope`] stands for it.
#[derive(Debug, Clone)]
pub struct EncodedSpan(Vec<u8>);

impl EncodedSpan {
    pub fn new(span: &SpanData) -> Self {
        let mut w = Writer {
            buf: Vec::with_capacity(Self::TYPICAL),
        };
        w.message_sized(2, 2, |w| w.span(span));
        // A span that outgrew the first guess (captured content) can hold up to twice its
        // size after doubling; it waits in the export queue, so it gives that back.
        if w.buf.capacity() > Self::TYPICAL {
            w.buf.shrink_to_fit();
        }
        EncodedSpan(w.buf)
    }

    /// A chat span without content takes about 550–900 bytes.
    const TYPICAL: usize = 1024;

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `ExportTraceServiceRequest` for `spans`, all of one scope: one `ResourceSpans` with one
/// `ScopeSpans` (none for an empty batch, as the SDK sends it). Every part's size is known
/// beforehand, so each length is written before its body: with [`Writer::message`]'s one
/// byte set aside, the whole batch was moved up twice (musl's backward `memmove` copies byte
/// by byte: about 1.4k instructions per span of the batch).
pub fn export_trace_request(
    resource: &EncodedResource,
    scope: &EncodedScope,
    spans: &[EncodedSpan],
) -> Vec<u8> {
    let bytes: usize = spans.iter().map(EncodedSpan::len).sum();
    // ScopeSpans { scope = 1; spans = 2; schema_url = 3 }
    let scope_spans = (!spans.is_empty())
        .then(|| delimited_len(1, scope.body.len()) + bytes + string_len(3, &scope.schema_url));
    // ResourceSpans { resource = 1; scope_spans = 2; schema_url = 3 }
    let resource_spans = delimited_len(1, resource.attributes.len())
        + scope_spans.map_or(0, |n| delimited_len(2, n))
        + string_len(3, &resource.schema_url);
    // ExportTraceServiceRequest { resource_spans = 1 }
    let total = delimited_len(1, resource_spans);
    let mut w = Writer {
        buf: Vec::with_capacity(total),
    };
    w.length(1, resource_spans);
    w.raw(1, &resource.attributes);
    if let Some(n) = scope_spans {
        w.length(2, n);
        w.raw(1, &scope.body);
        for span in spans {
            w.buf.extend_from_slice(&span.0);
        }
        w.string(3, &scope.schema_url);
    }
    w.string(3, &resource.schema_url);
    debug_assert_eq!(w.buf.len(), total);
    w.buf
}

fn varint_len(v: u64) -> usize {
    varint_bytes(v, &mut [0; 10])
}

/// What a length-delimited field of `len` bytes takes, its tag and length included.
fn delimited_len(field: u32, len: usize) -> usize {
    varint_len(u64::from(field << 3 | u32::from(LEN))) + varint_len(len as u64) + len
}

/// [`delimited_len`] for a field [`Writer::string`] leaves out when empty.
fn string_len(field: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        delimited_len(field, s.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;
    use std::time::Duration;

    use opentelemetry::trace::{Link, SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use proptest::prelude::*;
    use prost::Message;

    /// What the SDK's own exporter would have sent, decoded.
    fn expected(resource: &Resource, spans: Vec<SpanData>) -> ExportTraceServiceRequest {
        let resource = ResourceAttributesWithSchema::from(resource);
        ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(spans, &resource),
        }
    }

    fn ours(resource: &Resource, spans: &[SpanData]) -> ExportTraceServiceRequest {
        let encoded: Vec<EncodedSpan> = spans.iter().map(EncodedSpan::new).collect();
        let bytes = export_trace_request(
            &EncodedResource::new(resource),
            &EncodedScope::new(&scope()),
            &encoded,
        );
        ExportTraceServiceRequest::decode(bytes.as_slice()).expect("our bytes decode")
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::I64),
            any::<f64>()
                .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
                .prop_map(Value::F64),
            ".{0,200}".prop_map(|s| Value::String(s.into())),
            prop::collection::vec(".{0,20}", 0..4)
                .prop_map(|v| Value::Array(Array::String(v.into_iter().map(Into::into).collect()))),
            prop::collection::vec(any::<i64>(), 0..4).prop_map(|v| Value::Array(Array::I64(v))),
            prop::collection::vec(any::<bool>(), 0..3).prop_map(|v| Value::Array(Array::Bool(v))),
            prop::collection::vec(-1e9f64..1e9, 0..3).prop_map(|v| Value::Array(Array::F64(v))),
        ]
    }

    fn attributes(max: usize) -> impl Strategy<Value = Vec<KeyValue>> {
        prop::collection::vec(
            ("[a-z_.]{0,40}", value()).prop_map(|(k, v)| KeyValue::new(k, v)),
            0..max,
        )
    }

    fn context() -> impl Strategy<Value = SpanContext> {
        (
            any::<u128>(),
            any::<u64>(),
            any::<bool>(),
            any::<bool>(),
            "[a-z]{0,6}",
        )
            .prop_map(|(t, s, sampled, remote, state)| {
                let state = if state.is_empty() {
                    TraceState::default()
                } else {
                    TraceState::from_key_value([(state, "v1")]).unwrap_or_default()
                };
                let flags = if sampled {
                    TraceFlags::SAMPLED
                } else {
                    TraceFlags::default()
                };
                SpanContext::new(TraceId::from(t), SpanId::from(s), flags, remote, state)
            })
    }

    /// The one scope an exporter's spans have (the proxy's).
    fn scope() -> InstrumentationScope {
        InstrumentationScope::builder("genai-tap")
            .with_version("1.2.3")
            .with_schema_url("https://opentelemetry.io/schemas/1.37.0")
            .with_attributes([KeyValue::new("scope.attr", 7)])
            .build()
    }

    prop_compose! {
        fn span()(
            context in context(),
            parent in any::<u64>(),
            parent_is_remote in any::<bool>(),
            kind in 0..5u8,
            name in ".{0,60}",
            start in any::<u32>(),
            took in any::<u32>(),
            attributes in attributes(40),
            dropped in 0..3u32,
            events in prop::collection::vec((any::<u32>(), "[a-z.]{0,30}", attributes(6), 0..2u32), 0..4),
            links in prop::collection::vec((context(), attributes(4)), 0..3),
            status in 0..3u8,
            description in ".{0,40}",
        ) -> SpanData {
            let start_time = UNIX_EPOCH + Duration::from_micros(u64::from(start) * 1000);
            let mut span_events = SpanEvents::default();
            span_events.events = events
                .into_iter()
                .map(|(t, name, attributes, dropped)| opentelemetry::trace::Event::new(
                    name,
                    start_time + Duration::from_nanos(u64::from(t)),
                    attributes,
                    dropped,
                ))
                .collect();
            span_events.dropped_count = dropped;
            let mut span_links = SpanLinks::default();
            span_links.links = links
                .into_iter()
                .map(|(c, attributes)| Link::new(c, attributes, 1))
                .collect();
            SpanData {
                span_context: context,
                parent_span_id: SpanId::from(parent),
                parent_span_is_remote: parent_is_remote,
                span_kind: [SpanKind::Internal, SpanKind::Server, SpanKind::Client, SpanKind::Producer, SpanKind::Consumer][usize::from(kind)].clone(),
                name: Cow::Owned(name),
                start_time,
                end_time: start_time + Duration::from_nanos(u64::from(took)),
                attributes,
                dropped_attributes_count: dropped,
                events: span_events,
                links: span_links,
                status: match status {
                    0 => Status::Unset,
                    1 => Status::Ok,
                    _ => Status::error(description),
                },
                instrumentation_scope: scope(),
            }
        }
    }

    proptest! {
        /// The one-reserve path writes exactly what the general one does, or nothing.
        #[test]
        fn small_key_values_are_the_general_paths_bytes(
            key in "[a-z_.]{0,130}",
            value in value(),
            field in 1u32..20,
        ) {
            let mut general = Writer { buf: Vec::new() };
            general.nested_key_value(field, &key, &value);
            let mut small = Writer { buf: vec![7] };
            if small.small_key_value(field, key.as_bytes(), &value) {
                prop_assert_eq!(&small.buf[1..], &general.buf[..]);
            } else {
                prop_assert_eq!(small.buf, vec![7]);
            }
        }
    }

    #[test]
    fn a_length_set_aside_too_long_or_too_short_still_gives_the_minimal_prefix() {
        // One-, two- and three-byte lengths, each against two bytes set aside.
        for len in [0, 5, 127, 128, 300, 16_383, 16_384, 20_000] {
            let body = vec![0xab; len];
            let mut plain = Writer { buf: vec![7] };
            plain.message(2, |w| w.buf.extend_from_slice(&body));
            let mut sized = Writer { buf: vec![7] };
            sized.message_sized(2, 2, |w| w.buf.extend_from_slice(&body));
            assert_eq!(sized.buf, plain.buf, "body of {len} bytes");
        }
    }

    #[test]
    fn a_typical_attribute_takes_the_small_path() {
        let mut w = Writer { buf: Vec::new() };
        for value in [
            Value::from("openai"),
            Value::I64(1234),
            Value::Bool(true),
            Value::F64(0.5),
        ] {
            assert!(w.small_key_value(9, b"gen_ai.provider.name", &value));
        }
        assert!(!w.small_key_value(9, b"", &Value::from("openai")));
        assert!(!w.small_key_value(9, b"k", &Value::from("x".repeat(128))));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Every span, attribute, event and link decodes to what the SDK's transform builds.
        #[test]
        fn requests_decode_to_what_the_sdk_would_have_sent(
            spans in prop::collection::vec(span(), 0..12),
            resource_attrs in attributes(12),
        ) {
            let resource = Resource::builder_empty()
                .with_attributes(resource_attrs)
                .with_schema_url(Vec::<KeyValue>::new(), "https://opentelemetry.io/schemas/1.37.0")
                .build();
            prop_assert_eq!(ours(&resource, &spans), expected(&resource, spans));
        }
    }

    #[test]
    fn a_span_past_every_one_byte_length_and_an_empty_batch() {
        let resource = Resource::builder_empty()
            .with_attribute(KeyValue::new("service.name", "genai-tap"))
            .build();
        assert_eq!(ours(&resource, &[]), expected(&resource, Vec::new()));
        // Values long enough that strings, attributes, the span and the scope all need a
        // length of two or three bytes.
        let long = "x".repeat(20_000);
        let span = SpanData {
            span_context: SpanContext::new(
                TraceId::from(1u128),
                SpanId::from(2u64),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Client,
            name: "chat gpt-4o".into(),
            start_time: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            end_time: UNIX_EPOCH + Duration::from_secs(1_700_000_001),
            attributes: vec![
                KeyValue::new("gen_ai.input.messages", long.clone()),
                KeyValue::new("gen_ai.usage.input_tokens", 0i64),
                KeyValue::new("flag", false),
            ],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: scope(),
        };
        let spans = vec![span.clone(), span];
        assert_eq!(ours(&resource, &spans), expected(&resource, spans));
    }
}
