//! Incremental Server-Sent Events decoding (WHATWG HTML §9.2.6), push-style.
//!
//! Owns: turning arbitrarily split bytes into `(event, data)` pairs, with a cap on how much one
//! event may hold. Does not: know what the data means, validate UTF-8 (the JSON parser that reads
//! the data does), or do IO. The result never depends on where the input was split.

use memchr::memchr2;

const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// Whether a `Content-Type` value is `text/event-stream` (parameters and case aside).
pub fn is_event_stream(content_type: &[u8]) -> bool {
    let essence = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default();
    essence
        .trim_ascii()
        .eq_ignore_ascii_case(b"text/event-stream")
}

/// One dispatched event. `event` is empty when the stream gave no `event:` field (the spec's
/// default type `message`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent<'a> {
    pub event: &'a [u8],
    pub data: &'a [u8],
}

/// Counters a caller may report: nothing here is an error for the stream itself.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SseStats {
    pub events: u64,
    /// Events discarded because a line or the event's data exceeded the cap.
    pub oversized: u64,
}

#[derive(Debug)]
pub struct SseDecoder {
    /// A line not yet terminated by the bytes seen so far.
    line: Vec<u8>,
    data: Vec<u8>,
    event: Vec<u8>,
    /// The previous push ended in CR: a leading LF in the next push belongs to the same line end.
    pending_cr: bool,
    /// How many bytes of a leading BOM have been matched; 3 once the stream start is past.
    bom_matched: usize,
    /// The event being assembled went over the cap and will be discarded at its end.
    oversized: bool,
    max_event: usize,
    stats: SseStats,
}

impl SseDecoder {
    /// `max_event` caps the bytes of one line and of one event's data.
    pub fn new(max_event: usize) -> Self {
        Self {
            line: Vec::new(),
            data: Vec::new(),
            event: Vec::new(),
            pending_cr: false,
            bom_matched: 0,
            oversized: false,
            max_event,
            stats: SseStats::default(),
        }
    }

    pub fn stats(&self) -> SseStats {
        self.stats
    }

    /// Feeds the next bytes of the stream, calling `on_event` for every event they complete.
    pub fn push(&mut self, mut input: &[u8], on_event: &mut impl FnMut(SseEvent<'_>)) {
        if self.bom_matched < BOM.len() {
            while let Some((&b, rest)) = input.split_first() {
                if b != BOM[self.bom_matched] {
                    // What looked like a BOM was data: replay the matched part first.
                    let matched = self.bom_matched;
                    self.bom_matched = BOM.len();
                    self.feed(&BOM[..matched], on_event);
                    break;
                }
                self.bom_matched += 1;
                input = rest;
                if self.bom_matched == BOM.len() {
                    break;
                }
            }
            if self.bom_matched < BOM.len() {
                return; // still inside a possible BOM; input is exhausted
            }
        }
        self.feed(input, on_event);
    }

    /// Ends the stream. Per the spec an event without its closing blank line is not dispatched;
    /// returns true when such an incomplete event (or line) was discarded.
    pub fn finish(&mut self) -> bool {
        let incomplete = !self.line.is_empty() || !self.data.is_empty() || self.oversized;
        self.line.clear();
        self.data.clear();
        self.event.clear();
        self.oversized = false;
        self.pending_cr = false;
        incomplete
    }

    fn feed(&mut self, mut input: &[u8], on_event: &mut impl FnMut(SseEvent<'_>)) {
        if self.pending_cr {
            self.pending_cr = false;
            if let Some(rest) = input.strip_prefix(b"\n") {
                input = rest;
            }
        }
        while !input.is_empty() {
            let Some(end) = memchr2(b'\n', b'\r', input) else {
                self.append_partial(input);
                return;
            };
            let (content, rest) = input.split_at(end);
            input = &rest[1..];
            if rest[0] == b'\r' {
                match input.first() {
                    Some(b'\n') => input = &input[1..],
                    None => self.pending_cr = true,
                    Some(_) => {}
                }
            }
            if self.line.is_empty() {
                // The same cap as for a line assembled from pieces, so splitting cannot matter.
                if content.len() > self.max_event {
                    self.oversized = true;
                } else if let Some(after) = self.dispatch_in_place(content, input, on_event) {
                    input = after;
                } else {
                    self.process_line(content, on_event);
                }
            } else {
                self.append_partial(content);
                let line = std::mem::take(&mut self.line);
                self.process_line(&line, on_event);
                self.line = line;
                self.line.clear();
            }
        }
    }

    /// The shape nearly every event has, one `data` line and the blank line that ends it, both
    /// in this push with nothing gathered before: dispatched from the input itself, not copied
    /// into `data` (which would grow, from empty, for each exchange's first events). Returns
    /// the input past the blank line, or `None` to take the general path, which gives the same
    /// event.
    fn dispatch_in_place<'i>(
        &mut self,
        line: &[u8],
        after: &'i [u8],
        on_event: &mut impl FnMut(SseEvent<'_>),
    ) -> Option<&'i [u8]> {
        if self.oversized || !self.data.is_empty() {
            return None;
        }
        let value = line.strip_prefix(b"data:")?;
        // Within the cap: the whole line was checked against it, and it is longer.
        let value = value.strip_prefix(b" ").unwrap_or(value);
        // A CR that ends the push may have its LF at the start of the next: read there as a
        // blank line of its own, which dispatches nothing once this event is out.
        let ([b'\n', rest @ ..] | [b'\r', b'\n', rest @ ..] | [b'\r', rest @ ..]) = after else {
            return None;
        };
        self.stats.events += 1;
        on_event(SseEvent {
            event: &self.event,
            data: value,
        });
        self.event.clear();
        Some(rest)
    }

    fn append_partial(&mut self, bytes: &[u8]) {
        if self.line.len() + bytes.len() > self.max_event {
            self.oversized = true;
            // Keep one byte so the partial line is still known to be non-empty (a line, not a
            // blank line that would dispatch) when its end arrives.
            if self.line.is_empty() {
                self.line.push(b'x');
            }
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn process_line(&mut self, line: &[u8], on_event: &mut impl FnMut(SseEvent<'_>)) {
        if line.is_empty() {
            self.dispatch(on_event);
            return;
        }
        if self.oversized || line[0] == b':' {
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.data.len() + value.len() + 1 > self.max_event {
                    self.oversized = true;
                    self.data.clear();
                } else {
                    self.data.extend_from_slice(value);
                    self.data.push(b'\n');
                }
            }
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
            }
            // `id` and `retry` steer reconnection, which an observer never does.
            _ => {}
        }
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(SseEvent<'_>)) {
        if self.oversized {
            self.stats.oversized += 1;
        } else if let Some((b'\n', data)) = self.data.split_last() {
            self.stats.events += 1;
            on_event(SseEvent {
                event: &self.event,
                data,
            });
        }
        self.oversized = false;
        self.data.clear();
        self.event.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(chunks: &[&[u8]], max: usize) -> (Vec<(String, String)>, SseStats, bool) {
        let mut d = SseDecoder::new(max);
        let mut out = Vec::new();
        for c in chunks {
            d.push(c, &mut |e: SseEvent<'_>| {
                out.push((
                    String::from_utf8_lossy(e.event).into_owned(),
                    String::from_utf8_lossy(e.data).into_owned(),
                ))
            });
        }
        let incomplete = d.finish();
        (out, d.stats(), incomplete)
    }

    fn ev(event: &str, data: &str) -> (String, String) {
        (event.to_owned(), data.to_owned())
    }

    #[test]
    fn data_lines_are_joined_with_newlines_and_dispatched_on_blank_line() {
        let (events, stats, incomplete) = decode_all(&[b"data: a\ndata:b\n\ndata: c\n\n"], 1024);
        assert_eq!(events, vec![ev("", "a\nb"), ev("", "c")]);
        assert_eq!(stats.events, 2);
        assert!(!incomplete);
    }

    #[test]
    fn cr_lf_and_crlf_all_end_lines() {
        let (events, ..) = decode_all(&[b"data: 1\r\n\r\ndata: 2\r\rdata: 3\n\n"], 1024);
        assert_eq!(events, vec![ev("", "1"), ev("", "2"), ev("", "3")]);
    }

    #[test]
    fn crlf_split_across_pushes_is_one_line_end() {
        let (events, ..) = decode_all(&[b"data: 1\r", b"\n", b"\r", b"\ndata: 2\n\n"], 1024);
        assert_eq!(events, vec![ev("", "1"), ev("", "2")]);
    }

    #[test]
    fn comments_unknown_fields_id_and_retry_are_ignored() {
        let (events, ..) = decode_all(
            &[b": keep-alive\nid: 7\nretry: 10\nfoo: bar\ndata: x\n\n"],
            1024,
        );
        assert_eq!(events, vec![ev("", "x")]);
    }

    #[test]
    fn event_type_is_reported_and_reset_after_dispatch() {
        let (events, ..) = decode_all(&[b"event: response.created\ndata: {}\n\ndata: y\n\n"], 1024);
        assert_eq!(events, vec![ev("response.created", "{}"), ev("", "y")]);
    }

    #[test]
    fn blank_line_without_data_dispatches_nothing() {
        let (events, ..) = decode_all(&[b"\n\nevent: ping\n\n"], 1024);
        assert!(events.is_empty());
    }

    #[test]
    fn field_without_colon_and_value_without_space() {
        let (events, ..) = decode_all(&[b"data\ndata:x\n\n"], 1024);
        assert_eq!(events, vec![ev("", "\nx")]);
    }

    #[test]
    fn leading_bom_is_stripped_even_when_split() {
        let (events, ..) = decode_all(&[&[0xEF], &[0xBB, 0xBF], b"data: a\n\n"], 1024);
        assert_eq!(events, vec![ev("", "a")]);
    }

    #[test]
    fn partial_bom_is_data() {
        let (events, ..) = decode_all(&[&[0xEF], b"data: a\n\ndata: b\n\n"], 1024);
        // "\u{FFFD}data" is an unknown field: the first event is lost, the second stands.
        assert_eq!(events, vec![ev("", "b")]);
    }

    #[test]
    fn unterminated_event_is_not_dispatched_and_is_reported() {
        let (events, _, incomplete) = decode_all(&[b"data: a\n\ndata: b\n"], 1024);
        assert_eq!(events, vec![ev("", "a")]);
        assert!(incomplete);
    }

    #[test]
    fn oversized_event_is_dropped_and_counted_and_the_next_one_survives() {
        let big = format!("data: {}\n\ndata: ok\n\n", "z".repeat(100));
        let (events, stats, _) = decode_all(&[big.as_bytes()], 32);
        assert_eq!(events, vec![ev("", "ok")]);
        assert_eq!(stats.oversized, 1);
    }

    #[test]
    fn oversized_partial_line_is_dropped_even_when_fed_byte_by_byte() {
        let big = format!("data: {}\n\ndata: ok\n\n", "z".repeat(100));
        let chunks: Vec<&[u8]> = big.as_bytes().chunks(1).collect();
        let (events, stats, _) = decode_all(&chunks, 32);
        assert_eq!(events, vec![ev("", "ok")]);
        assert_eq!(stats.oversized, 1);
    }

    #[test]
    fn many_data_lines_over_the_cap_are_dropped() {
        let many = format!("{}\ndata: ok\n\n", "data: 0123456789\n".repeat(10));
        let (events, stats, _) = decode_all(&[many.as_bytes()], 64);
        assert_eq!(events, vec![ev("", "ok")]);
        assert_eq!(stats.oversized, 1);
    }

    fn fixture() -> Vec<u8> {
        let mut s = Vec::new();
        s.extend_from_slice(&BOM);
        s.extend_from_slice(b": comment\r\n");
        s.extend_from_slice(b"data: {\"id\":\"a\",\"choices\":[]}\r\n\r\n");
        s.extend_from_slice(b"event: x\rdata: one\rdata: two\r\r");
        s.extend_from_slice(b"data:tight\n\n");
        s.extend_from_slice(b"data: [DONE]\n\n");
        s
    }

    #[test]
    fn a_one_line_event_is_dispatched_from_the_input_not_gathered() {
        let mut d = SseDecoder::new(1024);
        let mut seen = Vec::new();
        d.push(
            b"data: {\"a\":1}\n\nevent: done\r\ndata: [DONE]\r\n\r\n",
            &mut |e: SseEvent<'_>| seen.push((e.event.to_vec(), e.data.to_vec())),
        );
        assert_eq!(
            seen,
            vec![
                (b"".to_vec(), b"{\"a\":1}".to_vec()),
                (b"done".to_vec(), b"[DONE]".to_vec())
            ]
        );
        assert_eq!(
            d.data.capacity(),
            0,
            "no event went through the gathering buffer"
        );
    }

    /// SSE-shaped streams: the lines an upstream sends, each with any of the three line ends.
    fn sse_lines() -> impl Strategy<Value = Vec<u8>> {
        let line = prop_oneof![
            "[a-z{}\":, ]{0,12}".prop_map(|v| format!("data: {v}")),
            "[a-z]{0,6}".prop_map(|v| format!("data:{v}")),
            Just("data".to_owned()),
            "[a-z.]{0,8}".prop_map(|v| format!("event: {v}")),
            Just(": ping".to_owned()),
            Just("id: 3".to_owned()),
            Just(String::new()),
            Just(String::new()),
        ];
        let end = prop_oneof![Just("\n"), Just("\r"), Just("\r\n")];
        proptest::collection::vec((line, end), 0..24).prop_map(|lines| {
            lines
                .into_iter()
                .flat_map(|(l, e)| format!("{l}{e}").into_bytes())
                .collect()
        })
    }

    proptest! {
        /// Whole, the usual events take the in-place path; a byte at a time, none can (the
        /// blank line is never in the same push), so the two paths are compared here.
        #[test]
        fn events_dispatched_in_place_are_those_gathered_a_byte_at_a_time(
            bytes in sse_lines(),
            max in prop_oneof![Just(8usize), Just(1024)],
            cut in any::<prop::sample::Index>(),
        ) {
            let whole = decode_all(&[&bytes], max);
            let bytes_one_by_one: Vec<&[u8]> = bytes.chunks(1).collect();
            prop_assert_eq!(&decode_all(&bytes_one_by_one, max), &whole);
            // Cut anywhere, a blank line's CR can end one push and its LF start the next.
            let (a, b) = bytes.split_at(cut.index(bytes.len() + 1));
            prop_assert_eq!(&decode_all(&[a, b], max), &whole);
        }

        #[test]
        fn events_do_not_depend_on_how_the_bytes_are_split(cuts in proptest::collection::vec(0usize..200, 0..12)) {
            let bytes = fixture();
            let whole = decode_all(&[&bytes], 1024);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut at = 0;
            for c in cuts {
                chunks.push(&bytes[at..c]);
                at = c;
            }
            chunks.push(&bytes[at..]);
            prop_assert_eq!(decode_all(&chunks, 1024), whole);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_split_does_not_matter(bytes in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..300) {
            let cut = cut % (bytes.len() + 1);
            let whole = decode_all(&[&bytes], 64);
            let split = decode_all(&[&bytes[..cut], &bytes[cut..]], 64);
            prop_assert_eq!(split, whole);
        }
    }

    #[test]
    fn every_single_split_point_gives_the_same_events() {
        let bytes = fixture();
        let whole = decode_all(&[&bytes], 1024);
        assert_eq!(whole.0.len(), 4);
        for i in 0..=bytes.len() {
            assert_eq!(
                decode_all(&[&bytes[..i], &bytes[i..]], 1024),
                whole,
                "split at {i}"
            );
        }
    }
}
