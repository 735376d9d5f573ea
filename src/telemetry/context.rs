//! W3C Trace Context and Baggage, as far as a proxy span needs them: reading the app's
//! `traceparent` / `tracestate` / `baggage`, and writing the proxy span's `traceparent`.
//!
//! Owns: the header formats (<https://www.w3.org/TR/trace-context/>, <https://www.w3.org/TR/baggage/>).
//! Does not: decide sampling (`telemetry`) or touch requests (`proxy`).

use opentelemetry::trace::{SpanId, TraceFlags, TraceId};

/// The app's span, from its `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

fn hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2
        || !s
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

/// Parses `traceparent` per the spec: version `00` exactly four fields; later versions at least
/// four (extra fields ignored); all-zero ids and version `ff` are invalid.
pub fn parse_traceparent(value: &str) -> Option<Parent> {
    let mut fields = value.trim().split('-');
    let version = fields.next()?;
    let trace_id = fields.next()?;
    let span_id = fields.next()?;
    let flags = fields.next()?;
    let rest = fields.next();
    let version = hex::<1>(version)?[0];
    if version == 0xff || (version == 0 && rest.is_some()) {
        return None;
    }
    let trace_id = TraceId::from_bytes(hex::<16>(trace_id)?);
    let span_id = SpanId::from_bytes(hex::<8>(span_id)?);
    let flags = hex::<1>(flags)?[0];
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

/// The W3C trace-context and baggage headers.
pub const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
pub const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");
pub const BAGGAGE: http::HeaderName = http::HeaderName::from_static("baggage");

/// The `traceparent` header value for a span, `00-{trace id}-{span id}-{flags}`, written in
/// place: it is built for every observed request.
pub fn traceparent(trace_id: TraceId, span_id: SpanId, sampled: bool) -> Option<http::HeaderValue> {
    fn hex(out: &mut [u8], bytes: &[u8]) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 0xf)];
        }
    }
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
    hex(&mut out[3..35], &trace_id.to_bytes());
    hex(&mut out[36..52], &span_id.to_bytes());
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    hex(&mut out[53..55], &[flags.to_u8()]);
    http::HeaderValue::from_bytes(&out).ok()
}

/// `key=value` members of a `baggage` header, percent-decoded; properties (`;…`) dropped.
pub fn parse_baggage(value: &str) -> Vec<(String, String)> {
    value
        .split(',')
        .filter_map(|member| {
            let member = member.split(';').next()?;
            let (k, v) = member.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| (k.to_owned(), crate::config::percent_decode(v.trim())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_round_trips() {
        let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let p = parse_traceparent(v).unwrap();
        assert_eq!(p.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.span_id.to_string(), "00f067aa0ba902b7");
        assert!(p.sampled);
        assert_eq!(traceparent(p.trace_id, p.span_id, true).unwrap(), v);
        assert_eq!(
            traceparent(TraceId::from(1u128), SpanId::from(0xabu64), false).unwrap(),
            "00-00000000000000000000000000000001-00000000000000ab-00"
        );
        assert!(
            !parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
                .unwrap()
                .sampled
        );
    }

    #[test]
    fn invalid_traceparents_are_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future")
                .is_some(),
            "a later version may carry more fields"
        );
    }

    #[test]
    fn baggage_members_are_decoded_and_properties_dropped() {
        assert_eq!(
            parse_baggage("user.id=u%2042;ttl=5, tenant = acme ,broken"),
            vec![
                ("user.id".to_owned(), "u 42".to_owned()),
                ("tenant".to_owned(), "acme".to_owned())
            ]
        );
    }
}
