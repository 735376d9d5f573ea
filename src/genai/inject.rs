//! Token usage for streams whose client did not ask for it.
//!
//! Owns: adding `stream_options.include_usage: true` to a streamed chat request (a byte-exact
//! edit; nothing else in the body changes), whether an Azure `api-version` accepts it, and
//! [`UsageStripper`], which removes every trace of the injection from the stream the client
//! receives: the usage-only chunk (`"choices": []`) and the `"usage": null` member the upstream
//! adds to every other chunk. The client's bytes are then what it would have received without
//! the proxy. Does not: decide whether injection is configured, or do IO.

use std::ops::Range;
use std::sync::LazyLock;

use bytes::{Bytes, BytesMut};
use memchr::memmem::Finder;

use super::json_edit::{self, Member};

// Searchers built once: building one costs more than searching a chunk with it.
static STREAM_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"stream\""));
static USAGE_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));

/// Whether an Azure OpenAI `api-version` accepts `stream_options`: from `2024-09-01-preview`
/// (GA `2024-10-21`); older ones answer 400. Versions that are not dates (`preview`, `latest`,
/// the v1 API) are current. No version at all: not Azure's dated API.
pub fn supports_stream_options(api_version: Option<&str>) -> bool {
    let Some(v) = api_version else {
        return true;
    };
    let date = v.get(..10).filter(|d| {
        d.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        })
    });
    match date {
        Some(d) => d >= "2024-09-01",
        None => !v.is_empty(),
    }
}

/// The `api-version` query parameter.
pub fn api_version(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("api-version="))
}

fn only<'m>(b: &[u8], members: &'m [Member], name: &str) -> Result<Option<&'m Member>, ()> {
    let mut found = members
        .iter()
        .filter(|m| &b[m.key.clone()] == name.as_bytes());
    match (found.next(), found.next()) {
        (first, None) => Ok(first),
        // A duplicate key: which one the upstream reads is not ours to guess.
        _ => Err(()),
    }
}

/// The request with `stream_options.include_usage` set, when it streams and does not already
/// ask for usage. `None`: leave the request alone (not streaming, already asking, or anything
/// about the body that makes an exact edit uncertain).
pub fn include_usage(body: &[u8]) -> Option<Vec<u8>> {
    // Most requests do not stream: without the key's bytes anywhere there is nothing to walk.
    STREAM_KEY.find(body)?;
    let (open, members) = json_edit::members(body)?;
    if json_edit::has_escaped_key(body, &members) {
        return None;
    }
    let stream = only(body, &members, "stream").ok()??;
    if &body[stream.value.clone()] != b"true" {
        return None;
    }
    let Some(options) = only(body, &members, "stream_options").ok()? else {
        return Some(json_edit::splice(
            body,
            open..open,
            br#""stream_options":{"include_usage":true},"#,
        ));
    };
    let value = &body[options.value.clone()];
    if value == b"null" {
        return Some(json_edit::splice(
            body,
            options.value.clone(),
            br#"{"include_usage":true}"#,
        ));
    }
    let (inner_open, inner) = json_edit::members(value)?;
    if json_edit::has_escaped_key(value, &inner) {
        return None;
    }
    let base = options.value.start;
    match only(value, &inner, "include_usage").ok()? {
        Some(m) if &value[m.value.clone()] == b"true" => None,
        Some(m) => Some(json_edit::splice(
            body,
            base + m.value.start..base + m.value.end,
            b"true",
        )),
        None if inner.is_empty() => Some(json_edit::splice(
            body,
            options.value.clone(),
            br#"{"include_usage":true}"#,
        )),
        None => Some(json_edit::splice(
            body,
            base + inner_open..base + inner_open,
            br#""include_usage":true,"#,
        )),
    }
}

/// What to do with one SSE event of an injected stream.
#[derive(Debug, PartialEq)]
enum Verdict {
    Keep,
    Drop,
    /// Keep the event without this byte range of it (the injected member and one comma).
    Cut(Range<usize>),
}

/// `one_line`: where the event's only line ends, when [`event_end`] found it to be one line.
fn verdict(event: &[u8], one_line: Option<usize>) -> Verdict {
    let Some(first_usage) = USAGE_KEY.find(event) else {
        return Verdict::Keep;
    };
    let Some(data) = data_line(event, one_line) else {
        return Verdict::Keep;
    };
    let payload = &event[data.clone()];
    if let Some(cut) = trailing_null_usage(payload)
        && data.start + cut.key == first_usage
    {
        return Verdict::Cut(data.start + cut.range.start..data.start + cut.range.end);
    }
    walked_verdict(payload, data.start)
}

/// The value of the event's data line, when it has exactly one (OpenAI-compatible servers send
/// one per chunk). An event [`event_end`] found to be one line is that line: it is not split
/// again.
fn data_line(event: &[u8], one_line: Option<usize>) -> Option<Range<usize>> {
    let value = |start: usize, end: usize| {
        let rest = event[start..end].strip_prefix(b"data:")?;
        Some(start + 5 + usize::from(rest.first() == Some(&b' '))..end)
    };
    if let Some(end) = one_line {
        return value(0, end);
    }
    let mut data = None;
    let mut start = 0;
    while start < event.len() {
        let end = memchr::memchr2(b'\n', b'\r', &event[start..]).map_or(event.len(), |i| start + i);
        if let Some(v) = value(start, end) {
            if data.is_some() {
                return None;
            }
            data = Some(v);
        }
        start = end + 1;
    }
    data
}

/// Where a trailing `"usage":null` member sits: its key, and the bytes that remove it.
struct TrailingUsage {
    key: usize,
    range: Range<usize>,
}

/// The common case, found without walking the object: the upstream put `"usage":null` last, as
/// OpenAI, Azure OpenAI and vLLM do, so the document ends `…,"usage":null}`. Read back from the
/// closing brace, that can only be the object's last member (the comma before the key means its
/// quote is not escaped); the caller also checks that no other `"usage"` precedes it. The range
/// is the one [`json_edit::removal`] gives for a last member: from the end of the value before.
fn trailing_null_usage(p: &[u8]) -> Option<TrailingUsage> {
    let token_before = |end: usize, token: &[u8]| {
        let end = json_edit::skip_ws_back(p, end);
        let start = end.checked_sub(token.len())?;
        (&p[start..end] == token).then_some(start)
    };
    if p.get(json_edit::skip_ws(p, 0)) != Some(&b'{') {
        return None;
    }
    let close = token_before(p.len(), b"}")?;
    let null = token_before(close, b"null")?;
    let colon = token_before(null, b":")?;
    let key = token_before(colon, b"\"usage\"")?;
    let comma = token_before(key, b",")?;
    Some(TrailingUsage {
        key,
        range: json_edit::skip_ws_back(p, comma)..null + 4,
    })
}

/// The verdict from the object's members, wherever `usage` is among them.
fn walked_verdict(payload: &[u8], offset: usize) -> Verdict {
    let Some((_, members)) = json_edit::members(payload) else {
        return Verdict::Keep;
    };
    if json_edit::has_escaped_key(payload, &members) {
        return Verdict::Keep;
    }
    let Some(usage) = members
        .iter()
        .position(|m| &payload[m.key.clone()] == b"usage")
    else {
        return Verdict::Keep;
    };
    let usage_is_null = &payload[members[usage].value.clone()] == b"null";
    let no_choices = json_edit::find(payload, &members, "choices").is_some_and(|c| {
        payload[c.value.clone()]
            .iter()
            .filter(|b| !b.is_ascii_whitespace())
            .eq(b"[]".iter())
    });
    if !usage_is_null && no_choices {
        return Verdict::Drop;
    }
    if !usage_is_null {
        return Verdict::Keep;
    }
    let cut = json_edit::removal(&members, usage);
    Verdict::Cut(offset + cut.start..offset + cut.end)
}

/// The first complete event of a buffer.
#[derive(Debug, PartialEq)]
struct EventEnd {
    /// Just past its blank line.
    len: usize,
    /// Where its line ends, when it has one line (as every chunk of OpenAI-compatible servers
    /// does).
    one_line: Option<usize>,
}

/// The first complete event in `b`, if any.
fn event_end(b: &[u8]) -> Option<EventEnd> {
    let mut line_start = 0;
    let mut first_end = None;
    let mut lines = 0usize;
    while let Some(offset) = memchr::memchr2(b'\n', b'\r', &b[line_start..]) {
        let at = line_start + offset;
        let mut next = at + 1;
        if b[at] == b'\r' {
            match b.get(next) {
                Some(b'\n') => next += 1,
                Some(_) => {}
                // A `\n` may follow in the next frame: decide when it has come, so where the
                // stream was cut never changes where an event ends.
                None => return None,
            }
        }
        if at == line_start {
            return Some(EventEnd {
                len: next,
                one_line: first_end.filter(|_| lines == 1),
            });
        }
        first_end.get_or_insert(at);
        lines += 1;
        line_start = next;
    }
    None
}

/// Removes the traces of usage injection from an SSE stream, event by event.
///
/// Complete events are forwarded as soon as they are complete; an event split across frames
/// is held until its end arrives (an SSE client cannot act on half an event anyway). Frames
/// that need no change pass through without a copy. Past `max_pending` bytes without an event
/// end, the stripper stops rewriting and passes everything through.
#[derive(Debug)]
pub struct UsageStripper {
    pending: Vec<u8>,
    max_pending: usize,
    gave_up: bool,
}

impl UsageStripper {
    pub fn new(max_pending: usize) -> Self {
        UsageStripper {
            pending: Vec::new(),
            max_pending,
            gave_up: false,
        }
    }

    /// Rewrites the next frame; returns what to forward now (possibly nothing). Each event is
    /// judged once; until one needs a change, the frame's bytes are not copied.
    pub fn push(&mut self, input: Bytes) -> Bytes {
        if self.gave_up {
            return input;
        }
        let held = !self.pending.is_empty();
        if held {
            self.pending.extend_from_slice(&input);
        }
        let (mut done, at) = {
            let buf: &[u8] = if held { &self.pending } else { &input };
            // `None` while every event so far is kept as it is: `buf[..at]` goes out whole.
            let mut out: Option<BytesMut> = None;
            let mut at = 0;
            while let Some(EventEnd { len: end, one_line }) = event_end(&buf[at..]) {
                let event = &buf[at..at + end];
                let verdict = verdict(event, one_line);
                let out = match (&mut out, &verdict) {
                    (Some(out), _) => out,
                    (None, Verdict::Keep) => {
                        at += end;
                        continue;
                    }
                    (None, _) => {
                        let mut fresh = BytesMut::with_capacity(buf.len());
                        fresh.extend_from_slice(&buf[..at]);
                        out.insert(fresh)
                    }
                };
                match verdict {
                    Verdict::Keep => out.extend_from_slice(event),
                    Verdict::Drop => {}
                    Verdict::Cut(cut) => {
                        out.extend_from_slice(&event[..cut.start]);
                        out.extend_from_slice(&event[cut.end..]);
                    }
                }
                at += end;
            }
            let done = match out {
                Some(out) => out.freeze(),
                None if held => Bytes::copy_from_slice(&buf[..at]),
                None => input.slice(..at),
            };
            (done, at)
        };
        // What follows `at` is an event still incomplete: held for the next frame.
        if held {
            self.pending.drain(..at);
        } else {
            self.pending.extend_from_slice(&input[at..]);
        }
        if self.pending.len() > self.max_pending {
            self.gave_up = true;
            let mut all = BytesMut::with_capacity(done.len() + self.pending.len());
            all.extend_from_slice(&done);
            all.extend_from_slice(&self.pending);
            self.pending.clear();
            done = all.freeze();
        }
        done
    }

    /// The stream ended: whatever is held (an unterminated event) goes out as it is.
    pub fn finish(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn injected(body: &str) -> Option<String> {
        include_usage(body.as_bytes()).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn usage_is_requested_with_a_minimal_edit() {
        assert_eq!(
            injected(r#"{"model":"m","stream":true,"messages":[]}"#).as_deref(),
            Some(
                r#"{"stream_options":{"include_usage":true},"model":"m","stream":true,"messages":[]}"#
            )
        );
        assert_eq!(
            injected(r#"{"stream": true, "stream_options": null}"#).as_deref(),
            Some(r#"{"stream": true, "stream_options": {"include_usage":true}}"#)
        );
        assert_eq!(
            injected(r#"{"stream":true,"stream_options":{"include_usage":false}}"#).as_deref(),
            Some(r#"{"stream":true,"stream_options":{"include_usage":true}}"#)
        );
        assert_eq!(
            injected(r#"{"stream":true,"stream_options":{"include_obfuscation":false}}"#)
                .as_deref(),
            Some(
                r#"{"stream":true,"stream_options":{"include_usage":true,"include_obfuscation":false}}"#
            )
        );
        assert_eq!(
            injected(r#"{"stream":true,"stream_options":{}}"#).as_deref(),
            Some(r#"{"stream":true,"stream_options":{"include_usage":true}}"#)
        );
    }

    #[test]
    fn requests_that_must_be_left_alone() {
        for body in [
            r#"{"model":"m","messages":[]}"#,
            r#"{"stream":false}"#,
            r#"{"stream":"true"}"#,
            r#"{"stream_options":null,"messages":[{"content":"stream"}]}"#,
            r#"{"str\u0065am":true}"#,
            r#"{"stream":true,"stream_options":{"include_usage":true}}"#,
            r#"{"stream":true,"stream_options":"yes"}"#,
            r#"{"stream":true,"stream":true}"#,
            r#"{"stream":true,"stream_option\u0073":null}"#,
            r#"not json"#,
        ] {
            assert_eq!(injected(body), None, "{body}");
        }
    }

    #[test]
    fn azure_api_versions() {
        assert!(supports_stream_options(None));
        assert!(supports_stream_options(Some("2024-09-01-preview")));
        assert!(supports_stream_options(Some("2024-10-21")));
        assert!(supports_stream_options(Some("2025-04-01-preview")));
        assert!(supports_stream_options(Some("preview")));
        assert!(!supports_stream_options(Some("2024-08-01-preview")));
        assert!(!supports_stream_options(Some("2024-06-01")));
        assert!(!supports_stream_options(Some("2023-05-15")));
        assert!(!supports_stream_options(Some("")));
        assert_eq!(
            api_version(Some("a=1&api-version=2024-10-21")),
            Some("2024-10-21")
        );
        assert_eq!(api_version(Some("a=1")), None);
    }

    /// What the mock (and OpenAI) sends: with usage requested, `"usage":null` in every chunk and
    /// a usage-only chunk before `[DONE]`.
    fn stream(with_usage: bool) -> Vec<u8> {
        let u = if with_usage { r#","usage":null"# } else { "" };
        let mut s = String::new();
        for word in ["Hello", " there"] {
            s.push_str(&format!(
                "data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{word}\"}},\"finish_reason\":null}}]{u}}}\n\n"
            ));
        }
        s.push_str(&format!(
            "data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}]{u}}}\n\n"
        ));
        if with_usage {
            s.push_str("data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n");
        }
        s.push_str("data: [DONE]\n\n");
        s.into_bytes()
    }

    fn strip(frames: &[&[u8]]) -> Vec<u8> {
        let mut s = UsageStripper::new(1 << 20);
        let mut out = Vec::new();
        for f in frames {
            out.extend_from_slice(&s.push(Bytes::copy_from_slice(f)));
        }
        out.extend_from_slice(&s.finish());
        out
    }

    #[test]
    fn the_client_receives_the_stream_it_would_have_without_injection() {
        assert_eq!(strip(&[&stream(true)]), stream(false));
    }

    #[test]
    fn untouched_frames_are_not_copied() {
        let mut s = UsageStripper::new(1 << 20);
        let frame = Bytes::from(stream(false));
        let out = s.push(frame.clone());
        assert_eq!(out.as_ptr(), frame.as_ptr(), "the same buffer, not a copy");
    }

    #[test]
    fn events_end_at_a_blank_line_whatever_the_line_endings() {
        let end = |len, one_line| Some(EventEnd { len, one_line });
        assert_eq!(event_end(b"data: a\n\ndata: b\n\n"), end(9, Some(7)));
        assert_eq!(event_end(b"data: a\r\n\r\nrest"), end(11, Some(7)));
        assert_eq!(event_end(b"data: a\r\rrest"), end(9, Some(7)));
        assert_eq!(event_end(b"id: 1\ndata: a\n\n"), end(15, None));
        assert_eq!(event_end(b"\n"), end(1, None));
        assert_eq!(event_end(b"data: a\r\n"), None);
        assert_eq!(event_end(b"data: a\r"), None);
        assert_eq!(
            event_end(b"data: a\n\r"),
            None,
            "the \\r may be half of a \\r\\n"
        );
        assert_eq!(event_end(b""), None);
    }

    #[test]
    fn a_crlf_cut_between_frames_ends_the_event_where_it_would_whole() {
        let whole =
            b"data: {\"choices\":[],\"usage\":{\"total_tokens\":3}}\n\r\ndata: {\"a\":1}\n\n";
        let at = whole.iter().position(|&b| b == b'\r').unwrap() + 1;
        assert_eq!(strip(&[&whole[..at], &whole[at..]]), strip(&[whole]));
        assert_eq!(
            strip(&[whole]),
            b"data: {\"a\":1}\n\n",
            "the usage-only event is dropped"
        );
    }

    #[test]
    fn complete_events_go_out_at_once_and_a_partial_one_is_held() {
        let mut s = UsageStripper::new(1 << 20);
        let frame = Bytes::from_static(b"data: {\"a\":1}\n\ndata: {\"usage\":nu");
        let out = s.push(frame.clone());
        assert_eq!(out, &b"data: {\"a\":1}\n\n"[..]);
        assert_eq!(
            out.as_ptr(),
            frame.as_ptr(),
            "a slice of the frame, not a copy"
        );
        let rest = s.push(Bytes::from_static(b"ll,\"b\":2}\n\n"));
        assert_eq!(rest, &b"data: {\"b\":2}\n\n"[..]);
        assert!(s.finish().is_empty());
    }

    #[test]
    fn a_usage_the_client_asked_for_in_a_chunk_with_choices_stays() {
        let chunk = b"data: {\"choices\":[{\"index\":0}],\"usage\":{\"prompt_tokens\":1}}\n\n";
        assert_eq!(strip(&[chunk]), chunk);
    }

    #[test]
    fn an_endless_event_gives_up_and_passes_through() {
        let mut s = UsageStripper::new(16);
        let a = s.push(Bytes::from_static(b"data: {\"usage\":null,"));
        let b = s.push(Bytes::from_static(
            b"\"x\":1}\n\ndata: {\"usage\":null}\n\n",
        ));
        assert_eq!(
            [a, b].concat(),
            b"data: {\"usage\":null,\"x\":1}\n\ndata: {\"usage\":null}\n\n"
        );
    }

    #[test]
    fn a_usage_key_anywhere_before_the_last_member_is_left_to_the_walk() {
        for (chunk, stripped) in [
            (
                &b"data: {\"choices\":[{\"usage\":null}],\"usage\":null}\n\n"[..],
                &b"data: {\"choices\":[{\"usage\":null}]}\n\n"[..],
            ),
            (
                b"data: {\"choices\":[{\"delta\":{\"content\":\"usage\"}}],\"usage\":null}\n\n",
                b"data: {\"choices\":[{\"delta\":{\"content\":\"usage\"}}]}\n\n",
            ),
            // Not last: only the walk finds it.
            (
                b"data: {\"usage\":null,\"choices\":[]}\n\n",
                b"data: {\"choices\":[]}\n\n",
            ),
        ] {
            assert_eq!(
                strip(&[chunk]),
                stripped,
                "{}",
                String::from_utf8_lossy(chunk)
            );
        }
    }

    /// `obj` with `"usage":null` added as its last member, compact or with spaces around it.
    fn with_trailing_usage(
        obj: &serde_json::Map<String, serde_json::Value>,
        spaced: bool,
    ) -> String {
        let text = serde_json::to_string(obj).unwrap();
        let body = &text[..text.len() - 1];
        match (obj.is_empty(), spaced) {
            (true, _) => format!("{body}\"usage\":null}}"),
            (false, false) => format!("{body},\"usage\":null}}"),
            (false, true) => format!("{body} ,\t\"usage\" : null }} "),
        }
    }

    proptest! {
        #[test]
        fn a_trailing_null_usage_is_cut_where_the_walk_cuts_it(obj in super::json_edit::tests::object(), spaced in any::<bool>()) {
            let text = with_trailing_usage(&obj, spaced);
            let p = text.as_bytes();
            let Verdict::Cut(walked) = walked_verdict(p, 0) else {
                return Err(TestCaseError::fail("the walk found no usage member"));
            };
            let fast = trailing_null_usage(p);
            prop_assert_eq!(fast.is_some(), !obj.is_empty(), "the fast path reads every non-empty object");
            if let Some(fast) = fast {
                prop_assert_eq!(fast.range, walked.clone());
            }
            let event = format!("data: {text}\n\n");
            prop_assert_eq!(verdict(event.as_bytes(), None), Verdict::Cut(6 + walked.start..6 + walked.end));
        }

        /// An event found to be one line is judged as the line walk judges it.
        #[test]
        fn one_line_events_are_judged_as_split_ones(
            lines in proptest::collection::vec(
                proptest::sample::select(vec![
                    "data: {\"choices\":[],\"usage\":null}", "data:{\"a\":1,\"usage\":null}",
                    "data: {\"usage\":{\"total_tokens\":1},\"choices\":[]}", "data:", "id: 1",
                    ": usage", "event: usage", "data: \"usage\"",
                ]),
                1..4,
            ),
            ends in proptest::collection::vec(proptest::sample::select(vec!["\n", "\r", "\r\n"]), 4),
            // Something always follows, so a closing `\r` is not half of a `\r\n`.
            tail in proptest::sample::select(vec!["rest", "data: {\"usage\":null}\n\n", "\r"]),
        ) {
            let mut event = String::new();
            for (line, end) in lines.iter().zip(&ends) {
                event.push_str(line);
                event.push_str(end);
            }
            // A `\r` then a `\n` is one line end, not a line end and a blank line.
            let blank = if event.ends_with('\r') && ends[3] == "\n" { "\r" } else { ends[3] };
            event.push_str(blank);
            event.push_str(tail);
            let b = event.as_bytes();
            let Some(found) = event_end(b) else {
                return Err(TestCaseError::fail("a blank line ends every event here"));
            };
            prop_assert_eq!(found.one_line.is_some(), lines.len() == 1);
            let whole = &b[..found.len];
            prop_assert_eq!(verdict(whole, found.one_line), verdict(whole, None));
        }

        #[test]
        fn stripping_does_not_depend_on_frame_boundaries(cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10)) {
            let bytes = stream(true);
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut frames = Vec::new();
            let mut at = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                frames.push(&bytes[at..c]);
                at = c;
            }
            prop_assert_eq!(strip(&frames), stream(false));
        }
    }
}
