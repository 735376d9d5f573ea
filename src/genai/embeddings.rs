//! Embeddings (`POST …/embeddings`): model, encoding format and dimensions from the request;
//! model, input tokens and vector length from the response.

use serde::de::SeqAccess;

use super::ResponseSummary;
use super::json::{self, Field, Lenient, List, Obj, Taker};
use super::scan::{Cursor, Scanned};
use crate::exchange::RequestFacts;

json::wire! {
    struct RequestWire {
        model: Field<String> = "model",
        encoding_format: Field<String> = "encoding_format",
        dimensions: Field<i64> = "dimensions",
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
        encoding_formats: t
            .take("encoding_format", w.encoding_format)
            .map(|f| vec![f]),
        dimensions: t.take("dimensions", w.dimensions),
        ..RequestFacts::default()
    };
    (facts, t.issue())
}

/// The length of an embedding: array elements, or base64-encoded little-endian f32s.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct VectorLength(i64);

impl<'de> Lenient<'de> for VectorLength {
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        let mut n = 0;
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
            n += 1;
        }
        Ok(Some(VectorLength(n)))
    }
    fn scan_seq(c: &mut Cursor<'de>) -> Scanned<Option<Self>> {
        let mut n = 0;
        c.elements(|c| {
            n += 1;
            c.skip()
        })?;
        Ok(Some(VectorLength(n)))
    }
    fn from_str(v: &str) -> Option<Self> {
        let v = v.trim_end_matches('=');
        Some(VectorLength((v.len() * 3 / 4 / 4) as i64))
    }
}

json::wire! {
    struct ItemWire {
        embedding: Field<VectorLength> = "embedding",
    }

    struct UsageWire {
        prompt_tokens: Field<i64> = "prompt_tokens",
    }
}

json::wire! {
    struct ResponseWire {
        model: Field<String> = "model",
        data: Field<List<Obj<ItemWire>>> = "data",
        usage: Field<Obj<UsageWire>> = "usage",
    }
}

pub fn parse_response(body: &[u8]) -> ResponseSummary {
    let mut summary = ResponseSummary::default();
    match json::parse_object::<ResponseWire>(body) {
        Ok(w) => {
            summary.facts.model = w.model.get();
            summary.facts.usage.input_tokens = w.usage.get().and_then(|u| u.0.prompt_tokens.get());
            summary.facts.embedding_dimensions = w
                .data
                .get()
                .and_then(|d| d.0.into_iter().next())
                .and_then(|Obj(item)| item.embedding.get())
                .map(|l| l.0);
            summary.done = true;
        }
        Err(e) => summary.issue = Some(e),
    }
    summary
}

/// How the two readers compare on `body` read as each of this module's documents (for tests
/// and the fuzz target).
pub(crate) fn compare_readers(body: &[u8]) -> Vec<json::Agreement> {
    vec![
        json::compare::<RequestWire>(body),
        json::compare::<ResponseWire>(body),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_reader_reads_as_serde_does() {
        use json::Wire;
        let keys = [
            <RequestWire as Wire>::KEYS,
            <ItemWire as Wire>::KEYS,
            <UsageWire as Wire>::KEYS,
            <ResponseWire as Wire>::KEYS,
        ]
        .concat();
        let recorded: [&[u8]; 2] = [
            br#"{"model":"text-embedding-3-small","input":["a","b"],"encoding_format":"float","dimensions":256}"#,
            br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-0.2]},{"object":"embedding","index":1,"embedding":"AACAPw=="}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}"#,
        ];
        json::tests::agreement_holds(json::tests::documents(&keys), compare_readers);
        json::tests::replacements_agree(&recorded, compare_readers);
    }

    #[test]
    fn request_and_float_response() {
        let (facts, issue) = parse_request(
            br#"{"model":"text-embedding-3-small","input":["a","b"],"encoding_format":"float","dimensions":256}"#,
        );
        assert_eq!(issue, None);
        assert_eq!(facts.model.as_deref(), Some("text-embedding-3-small"));
        assert_eq!(facts.encoding_formats, Some(vec!["float".into()]));
        assert_eq!(facts.dimensions, Some(256));
        let s = parse_response(
            br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-0.2,0.3]},{"object":"embedding","index":1,"embedding":[1,2,3]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}"#,
        );
        assert_eq!(s.facts.model.as_deref(), Some("text-embedding-3-small"));
        assert_eq!(s.facts.usage.input_tokens, Some(8));
        assert_eq!(s.facts.embedding_dimensions, Some(3));
        assert_eq!(s.facts.finish_reasons, Vec::<String>::new());
    }

    #[test]
    fn base64_vectors_are_measured_in_floats() {
        // 4 floats = 16 bytes = 24 base64 characters ("AAAA" per 3 bytes, padded).
        let s = parse_response(
            br#"{"data":[{"embedding":"AACAPwAAAEAAAEBAAACAQA=="}],"model":"m","usage":{"prompt_tokens":1}}"#,
        );
        assert_eq!(s.facts.embedding_dimensions, Some(4));
    }
}
