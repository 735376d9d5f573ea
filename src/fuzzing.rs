//! What the fuzz targets in `fuzz/` check, on arbitrary bytes: the code that reads untrusted
//! input (SSE streams, request and response bodies, compressed bodies, content to redact) never
//! panics, respects its caps, and does not depend on how its input is split. The targets and
//! `tests/fuzz_regressions.rs` (which replays every input a fuzzer ever found) call these, so
//! both check the same thing. Not used by the proxy itself.

use std::sync::OnceLock;

use crate::codec::Decoder;
use crate::genai::sse::{SseDecoder, SseStats};
use crate::genai::{self, Api};
use crate::redact::{RedactionConfig, Redactor, RuleConfig};

type Decoded = (Vec<(Vec<u8>, Vec<u8>)>, SseStats, bool);

fn decode(parts: &[&[u8]], max_event: usize) -> Decoded {
    let mut decoder = SseDecoder::new(max_event);
    let mut events = Vec::new();
    for part in parts {
        decoder.push(part, &mut |e| {
            events.push((e.event.to_vec(), e.data.to_vec()))
        });
    }
    let incomplete = decoder.finish();
    (events, decoder.stats(), incomplete)
}

/// SSE decoding: the same events, whether the stream comes whole or in pieces of any size.
/// First byte: the piece size; second: the event cap (small caps exercise the discard path).
pub fn sse(data: &[u8]) {
    let [stride, cap, stream @ ..] = data else {
        return;
    };
    let max_event = 1 + usize::from(*cap) * 4;
    let pieces: Vec<&[u8]> = stream.chunks(usize::from(*stride).max(1)).collect();
    let whole = decode(&[stream], max_event);
    assert_eq!(
        decode(&pieces, max_event),
        whole,
        "split into {stride}-byte pieces"
    );
    assert!(
        whole.0.iter().all(|(_, d)| d.len() <= max_event),
        "an event over the cap was dispatched"
    );
}

const APIS: [Api; 4] = [
    Api::ChatCompletions,
    Api::Responses,
    Api::Completions,
    Api::Embeddings,
];

/// Request and response extraction for every API, complete bodies and streams, with content
/// capture on and off: never a panic, whatever the bytes.
pub fn genai(data: &[u8]) {
    let [selector, body @ ..] = data else {
        return;
    };
    let api = APIS[usize::from(*selector) % APIS.len()];
    let capture = selector & 0x80 != 0;
    let _ = genai::parse_request(api, body);
    let _ = genai::parse_response(api, body, capture);
    let _ = genai::parse_api_error(body);
    assert!(
        genai::readers_agree(body),
        "the fast reader and serde disagree"
    );
    let mut stream = genai::Stream::new(api, capture);
    let mut decoder = SseDecoder::new(1 << 16);
    decoder.push(body, &mut |e| {
        stream.push(e.data);
    });
    decoder.finish();
    let _ = stream.finish();

    // Usage injection and stripping (the forwarding path): never a panic, and the same bytes
    // out however the stream is cut into frames.
    let _ = genai::inject::include_usage(body);
    let strip = |frames: &[&[u8]]| {
        let mut stripper = genai::inject::UsageStripper::new(1 << 20);
        let mut out = Vec::new();
        for frame in frames {
            out.extend_from_slice(&stripper.push(bytes::Bytes::copy_from_slice(frame)));
        }
        out.extend_from_slice(&stripper.finish());
        out
    };
    let stride = usize::from(*selector >> 2).max(1);
    let frames: Vec<&[u8]> = body.chunks(stride).collect();
    assert_eq!(
        strip(&frames),
        strip(&[body]),
        "usage stripping, cut into {stride}-byte frames"
    );
}

/// Decompression for the observer's copy: never a panic, never more output than the limit,
/// whatever the bytes and however they are split. First byte: the encoding; second: the piece
/// size.
pub fn codec(data: &[u8]) {
    const LIMIT: usize = 1 << 16;
    let [selector, stride, body @ ..] = data else {
        return;
    };
    let encoding = ["gzip", "deflate", "br", "zstd"][usize::from(*selector) % 4];
    let Ok(Some(mut decoder)) = Decoder::for_encoding(encoding.as_bytes(), LIMIT) else {
        panic!("{encoding} is supported");
    };
    let mut total = 0usize;
    let mut count = |out: &[u8]| total += out.len();
    for piece in body.chunks(usize::from(*stride).max(1)) {
        if decoder.push(piece, &mut count).is_err() {
            break;
        }
    }
    let _ = decoder.finish(&mut count);
    assert!(
        total <= LIMIT,
        "{total} bytes decoded past the {LIMIT}-byte limit"
    );
}

fn redactor() -> &'static Redactor {
    static REDACTOR: OnceLock<Redactor> = OnceLock::new();
    REDACTOR.get_or_init(|| {
        let config = RedactionConfig {
            rules: vec![
                RuleConfig {
                    preset: Some("all".into()),
                    ..RuleConfig::default()
                },
                RuleConfig {
                    name: Some("ticket".into()),
                    regex: Some(r"TICKET-(\d+)".into()),
                    replacement: Some("TICKET-[$1]".into()),
                    ..RuleConfig::default()
                },
            ],
            json_keys: vec!["password".into()],
            json_key_replacement: "hash".into(),
            hash_key: Some("fuzzing-hash-key-0123456789".into()),
        };
        match Redactor::from_config(&config) {
            Ok(r) => r,
            Err(e) => panic!("the fuzz redactor's rules are valid: {}", e.message),
        }
    })
}

/// Redaction with every preset, a custom rule with references, and a hashed JSON key: never a
/// panic, on text or JSON.
pub fn redact(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let r = redactor();
    let _ = r.text(&text);
    if let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(data) {
        r.walk(&mut value);
    }
}
