//! Byte-exact edits of a JSON object's top-level members.
//!
//! Owns: locating a member (its key, its value, the span to remove with its comma) without
//! re-serialising anything, so an edit changes exactly the bytes it means to and every other
//! byte (whitespace, number formatting, key order, escapes) stays as the client or upstream
//! wrote it; [`Repeats`], which cuts the members a stream repeats in every chunk before the
//! chunk is read; and [`ValueSlot`], which tells a chunk that differs from the last one only
//! inside some of its strings and numbers. Does not: validate JSON beyond what finding members
//! needs (and, for [`ValueSlot`], those values); callers only edit (or learn from) documents serde
//! has already read.

use std::ops::Range;

use super::scan;

/// One top-level member of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The key's text between its quotes, escapes left as written.
    pub key: Range<usize>,
    pub value: Range<usize>,
}

#[inline]
pub(super) fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// Where the whitespace that ends at `end` starts: [`skip_ws`] read backwards.
pub(super) fn skip_ws_back(b: &[u8], mut end: usize) -> usize {
    while end > 0 && matches!(b[end - 1], b' ' | b'\t' | b'\n' | b'\r') {
        end -= 1;
    }
    end
}

/// The end of the string starting at `i` (on its opening quote), past the closing quote.
fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    loop {
        i += memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
        if b[i] == b'"' {
            return Some(i + 1);
        }
        // An escape: the next byte is taken as written, whatever it is.
        i += 2;
    }
}

/// The end of the value starting at `i`.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// `a == b`, eight or sixteen bytes at a time. Slice equality calls the C library's `bcmp`,
/// which musl (the static binaries' libc) runs one byte at a time: comparing stream chunks'
/// heads, tails and learnt parts (100–500 bytes each) that way took about 20k instructions
/// of a 15-event chat stream.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    /// The 8 bytes of `s` from `at` as one number (zero past the end, which callers avoid).
    fn word(s: &[u8], at: usize) -> u64 {
        s.get(at..)
            .and_then(|s| s.first_chunk::<8>())
            .map_or(0, |w| u64::from_ne_bytes(*w))
    }
    if a.len() != b.len() {
        return false;
    }
    let n = a.len();
    if n < 8 {
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    if n <= 16 {
        // Two words, overlapping when n < 16.
        return word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8);
    }
    let (a16, _) = a.as_chunks::<16>();
    let (b16, _) = b.as_chunks::<16>();
    a16.iter()
        .zip(b16)
        .all(|(x, y)| u128::from_ne_bytes(*x) == u128::from_ne_bytes(*y))
        // What the blocks leave (up to 15 bytes) lies in the last 16, which may overlap them.
        && word(a, n - 16) == word(b, n - 16)
        && word(a, n - 8) == word(b, n - 8)
}

/// `doc.starts_with(part)` through [`same`].
pub(crate) fn starts_with(doc: &[u8], part: &[u8]) -> bool {
    doc.get(..part.len()).is_some_and(|head| same(head, part))
}

/// `doc.ends_with(part)` through [`same`].
pub(crate) fn ends_with(doc: &[u8], part: &[u8]) -> bool {
    doc.len()
        .checked_sub(part.len())
        .is_some_and(|at| same(&doc[at..], part))
}

/// The top-level members of the object in `b` (leading whitespace allowed), in order, and the
/// position just after its `{`. `None` if `b` is not a well-formed object at the top level.
pub fn members(b: &[u8]) -> Option<(usize, Vec<Member>)> {
    let open = skip_ws(b, 0);
    if b.get(open) != Some(&b'{') {
        return None;
    }
    let body = open + 1;
    // A chat chunk has about eight members: room for them without regrowing.
    let mut out = Vec::with_capacity(16);
    let mut i = skip_ws(b, body);
    if b.get(i) == Some(&b'}') {
        return Some((body, out));
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = skip_string(b, i)?;
        let key = i + 1..key_end - 1;
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let value_start = skip_ws(b, i + 1);
        let value_end = skip_value(b, value_start)?;
        out.push(Member {
            key,
            value: value_start..value_end,
        });
        i = skip_ws(b, value_end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return Some((body, out)),
            _ => return None,
        }
    }
}

/// The member whose key is exactly `name` (unescaped keys only).
pub fn find<'m>(b: &[u8], members: &'m [Member], name: &str) -> Option<&'m Member> {
    members
        .iter()
        .find(|m| &b[m.key.clone()] == name.as_bytes())
}

/// Whether any key uses escapes: then keys cannot be compared as bytes, and edits are unsafe.
pub fn has_escaped_key(b: &[u8], members: &[Member]) -> bool {
    members.iter().any(|m| b[m.key.clone()].contains(&b'\\'))
}

/// The byte range that removes `members[index]` and exactly one comma next to it.
pub fn removal(members: &[Member], index: usize) -> Range<usize> {
    let m = &members[index];
    let key_start = m.key.start - 1;
    if index + 1 < members.len() {
        // Up to the next key: drops this member and the comma after it.
        key_start..members[index + 1].key.start - 1
    } else if index > 0 {
        // The last member: from the end of the previous value, which drops the comma before it.
        members[index - 1].value.end..m.value.end
    } else {
        key_start..m.value.end
    }
}

/// `b` with `range` replaced by `with`.
pub fn splice(b: &[u8], range: Range<usize>, with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() + with.len());
    out.extend_from_slice(&b[..range.start]);
    out.extend_from_slice(with);
    out.extend_from_slice(&b[range.end..]);
    out
}

/// The top-level members a stream repeats byte for byte at the start and at the end of every
/// chunk (OpenAI sends `id`, `object`, `created`, `model`, `service_tier` and
/// `system_fingerprint` before `choices`; Azure sends them after it), learnt from the last chunk
/// read in full, so that the next chunk's reader sees only what lies between.
///
/// Reading `{` + middle + `}` accepts exactly the chunks that reading them whole accepts, when the
/// middle starts with a key. The head and the tail are the same bytes, in the same place, as in
/// a chunk serde accepted, and JSON's tokens outside a string do not depend on what precedes
/// them. What is left is a string the middle leaves open: the tail's first byte that is not
/// whitespace or a comma is its first key's opening quote, which would close that string and be
/// followed by the key's first character, which no JSON value may be followed by: only plain
/// keys (`[A-Za-z0-9_]+`) are learnt, so a quote, a colon or a comma is never that character. A
/// string ending in a backslash meets whitespace or a comma, both invalid escapes. Nesting the
/// middle leaves open is caught by the tail's balance (it closes exactly one object). Both
/// edges are ASCII, so UTF-8 validity is the middle's alone.
///
/// The caller must still make sure the middle holds none of the keys the cut removed
/// ([`Repeats::cuts`]): a duplicate the whole reading would reject (serde rejects a known field
/// twice) passes the cut reading, which never sees the first one.
#[derive(Debug, Default)]
pub struct Repeats {
    /// Up to the first key to read, `{` included; empty when nothing repeats there.
    head: Vec<u8>,
    /// From the end of the last value to read, the closing `}` included; empty likewise.
    tail: Vec<u8>,
    /// The keys of the members in `head` and in `tail`, as ranges of those bytes.
    head_keys: Vec<Range<usize>>,
    tail_keys: Vec<Range<usize>>,
    patience: Patience,
}

impl Repeats {
    /// Writes into `out` what is left to read of `chunk` once the remembered head and tail are
    /// cut: `{`, the members between them, `}`. False when nothing can be cut: `chunk` must be
    /// read whole, then passed to [`Repeats::learn`]. A head or tail the chunk does not repeat is
    /// forgotten.
    pub fn cut(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> bool {
        if self.head.is_empty() && self.tail.is_empty() {
            return false;
        }
        if !starts_with(chunk, &self.head) {
            self.head.clear();
            self.head_keys.clear();
        }
        if !ends_with(chunk, &self.tail) {
            self.tail.clear();
            self.tail_keys.clear();
        }
        let start = if self.head.is_empty() {
            let open = skip_ws(chunk, 0);
            if chunk.get(open) != Some(&b'{') {
                return self.missed();
            }
            open + 1
        } else {
            self.head.len()
        };
        let end = if self.tail.is_empty() {
            let close = skip_ws_back(chunk, chunk.len());
            if close == 0 || chunk[close - 1] != b'}' {
                return self.missed();
            }
            close - 1
        } else {
            chunk.len() - self.tail.len()
        };
        if (self.head.is_empty() && self.tail.is_empty())
            || start > end
            || chunk.get(skip_ws(chunk, start)) != Some(&b'"')
        {
            return self.missed();
        }
        out.clear();
        out.push(b'{');
        out.extend_from_slice(&chunk[start..end]);
        out.push(b'}');
        self.patience.count(true);
        true
    }

    /// Never learns: every chunk is read whole (the reference the cut reading is tested against).
    #[cfg(test)]
    pub(crate) fn never() -> Self {
        Repeats {
            patience: Patience::lost_already(),
            ..Repeats::default()
        }
    }

    #[cfg(test)]
    pub(crate) fn hits(&self) -> u32 {
        self.patience.hits
    }

    fn missed(&mut self) -> bool {
        self.patience.count(false);
        false
    }

    /// Whether the last [`Repeats::cut`] removed a member named `key` (plain: as written).
    pub fn cuts(&self, key: &[u8]) -> bool {
        self.head_keys.iter().any(|k| &self.head[k.clone()] == key)
            || self.tail_keys.iter().any(|k| &self.tail[k.clone()] == key)
    }

    /// Remembers the leading and trailing members of `chunk`, a document serde has accepted,
    /// whose keys are plain and `repeatable`. Once most chunks have missed (a stream whose head
    /// changes every time), it stops learning and every chunk is read whole.
    pub fn learn(&mut self, chunk: &[u8], repeatable: impl Fn(&[u8]) -> bool) {
        self.head.clear();
        self.tail.clear();
        self.head_keys.clear();
        self.tail_keys.clear();
        if self.patience.lost() {
            return;
        }
        let Some((_, members)) = members(chunk) else {
            return;
        };
        let skips = |m: &Member| {
            let key = &chunk[m.key.clone()];
            !key.is_empty()
                && key.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
                && repeatable(key)
        };
        // A chunk of nothing but repeatable members leaves nothing to cut around.
        if let (Some(first), Some(last)) = (
            members.iter().position(|m| !skips(m)),
            members.iter().rposition(|m| !skips(m)),
        ) {
            if first > 0 {
                self.head
                    .extend_from_slice(&chunk[..members[first].key.start - 1]);
                self.head_keys
                    .extend(members[..first].iter().map(|m| m.key.clone()));
            }
            if last + 1 < members.len() {
                let end = members[last].value.end;
                self.tail.extend_from_slice(&chunk[end..]);
                self.tail_keys.extend(
                    members[last + 1..]
                        .iter()
                        .map(|m| m.key.start - end..m.key.end - end),
                );
            }
        }
        if self.head.is_empty() && self.tail.is_empty() {
            self.missed();
        }
    }
}

/// The last document read, with some of its string and number values marked: a document that
/// repeats it byte for byte outside those values is read the same way, those values aside. A
/// stream's text deltas are such documents (the text, OpenAI's `obfuscation` padding, a
/// Responses event's `sequence_number`), and a reader that ignores those values need not read
/// them at all.
///
/// Exact: the bytes up to the first marked value are those of a document serde accepted, so the
/// reader reaches the value in the same state. A string ends at its first unescaped quote;
/// [`string_end`] admits only contents that hold nothing serde's string reading rejects
/// (control characters, unknown escapes, `\u` without four hex digits, invalid UTF-8). A number
/// ends where JSON's grammar ends it ([`scan::number_end`], serde's own); what follows it in the
/// learnt document is never a byte a number could go on with. The bytes from there on must be
/// the learnt ones, a string's closing quote first, so the value closes where it did and the
/// reader leaves it in the state it did; the same holds for each marked value in turn, and the
/// rest is the same bytes. Every edge is ASCII, so UTF-8 validity is each part's alone.
#[derive(Debug, Default)]
pub struct ValueSlot {
    /// The learnt document without the marked values: up to the first one (a string's opening
    /// quote included), then from each one's end (a string's closing quote included) to the
    /// next, then to the end. Empty when nothing is learnt.
    parts: Vec<u8>,
    /// Where each of those parts ends in `parts`.
    ends: Vec<usize>,
    /// What lies after each part but the last.
    marks: Vec<Mark>,
    patience: Patience,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// A string's contents (the quotes are in the parts).
    String,
    Number,
}

impl ValueSlot {
    /// Remembers `doc`, a document serde has accepted, and `values`, the ranges of some of its
    /// values, in order and apart. Strings and numbers among them are marked; any other value
    /// stays part of the learnt bytes. Once most documents offered to [`ValueSlot::matches`]
    /// have missed, nothing more is learnt.
    pub fn learn(&mut self, doc: &[u8], values: impl IntoIterator<Item = Range<usize>>) {
        self.forget();
        if self.patience.lost() {
            return;
        }
        let mut from = 0;
        for range in values {
            let Some(value) = doc.get(range.clone()) else {
                return self.forget();
            };
            if range.start < from {
                return self.forget();
            }
            let (mark, end, resume) =
                if value.len() >= 2 && value.starts_with(b"\"") && value.ends_with(b"\"") {
                    (Mark::String, range.start + 1, range.end - 1)
                } else if scan::number_end(doc, range.start) == Some(range.end) {
                    (Mark::Number, range.start, range.end)
                } else {
                    continue;
                };
            self.parts.extend_from_slice(&doc[from..end]);
            self.ends.push(self.parts.len());
            self.marks.push(mark);
            from = resume;
        }
        if self.marks.is_empty() {
            return self.forget();
        }
        self.parts.extend_from_slice(&doc[from..]);
        self.ends.push(self.parts.len());
    }

    pub fn forget(&mut self) {
        self.parts.clear();
        self.ends.clear();
        self.marks.clear();
    }

    /// Whether `doc` is the learnt document with other valid values in the marked places.
    pub fn matches(&mut self, doc: &[u8]) -> bool {
        if self.ends.is_empty() {
            return false;
        }
        let hit = self.matches_parts(doc);
        self.patience.count(hit);
        hit
    }

    fn matches_parts(&self, doc: &[u8]) -> bool {
        let mut at = 0;
        let mut start = 0;
        for (i, &end) in self.ends.iter().enumerate() {
            if i > 0 {
                let value_end = match self.marks[i - 1] {
                    // Up to the closing quote, which the next part starts with.
                    Mark::String => string_end(doc, at),
                    Mark::Number => scan::number_end(doc, at),
                };
                let Some(value_end) = value_end else {
                    return false;
                };
                at = value_end;
            }
            let part = &self.parts[start..end];
            if !starts_with(&doc[at..], part) {
                return false;
            }
            at += part.len();
            start = end;
        }
        at == doc.len()
    }

    #[cfg(test)]
    pub(crate) fn hits(&self) -> u32 {
        self.patience.hits
    }

    /// Never learns: every document is read (the reference the slot is tested against).
    #[cfg(test)]
    pub(crate) fn never() -> Self {
        ValueSlot {
            patience: Patience::lost_already(),
            ..ValueSlot::default()
        }
    }
}

/// How often a learnt shortcut paid off: once most tries have missed (a stream whose chunks
/// differ in other places every time), learning it again is not worth its cost.
#[derive(Debug, Default)]
struct Patience {
    hits: u32,
    misses: u32,
}

impl Patience {
    /// Below this many misses, learning goes on whatever the hit rate.
    const TRIES: u32 = 4;

    fn count(&mut self, hit: bool) {
        let n = if hit {
            &mut self.hits
        } else {
            &mut self.misses
        };
        *n = n.saturating_add(1);
    }

    fn lost(&self) -> bool {
        self.misses >= Self::TRIES && self.misses > self.hits
    }

    /// One that never learns (the readers' tests compare against it).
    #[cfg(test)]
    fn lost_already() -> Self {
        Patience {
            hits: 0,
            misses: u32::MAX,
        }
    }
}

/// Where the string whose contents start at `from` closes (its closing quote), when serde_json
/// reads those contents as a string: [`scan::string_end`]'s grammar, and valid UTF-8.
fn string_end(doc: &[u8], from: usize) -> Option<usize> {
    let (end, _) = scan::string_end(doc, from)?;
    std::str::from_utf8(&doc[from..end]).is_ok().then_some(end)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    fn keys(b: &[u8]) -> Vec<String> {
        members(b)
            .unwrap()
            .1
            .iter()
            .map(|m| String::from_utf8_lossy(&b[m.key.clone()]).into_owned())
            .collect()
    }

    proptest! {
        /// `same`, `starts_with` and `ends_with` answer as the standard library does, for
        /// every length around the word and block sizes and a difference at any byte.
        #[test]
        fn byte_comparisons_agree_with_the_standard_library(
            a in prop::collection::vec(any::<u8>(), 0..80),
            flip in any::<prop::sample::Index>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut b = a.clone();
            prop_assert!(same(&a, &b));
            if !b.is_empty() {
                let i = flip.index(b.len());
                b[i] ^= 1 << (i % 8);
                prop_assert!(!same(&a, &b), "differ at {} of {}", i, a.len());
            }
            let k = cut.index(a.len() + 1);
            for part in [&a[..k], &a[a.len() - k..], &b[..k], &b[b.len() - k..]] {
                prop_assert_eq!(starts_with(&a, part), a.starts_with(part));
                prop_assert_eq!(ends_with(&a, part), a.ends_with(part));
            }
            prop_assert_eq!(same(&a[..k], &b[..k]), a[..k] == b[..k]);
            prop_assert_eq!(same(&a[..k], &a), k == a.len());
        }
    }

    #[test]
    fn members_are_found_whatever_the_values_hold() {
        let b = br#" { "a" : 1 , "b":"x,}\"]", "c":{"d":[1,{"e":"}"}]}, "usage":null }"#;
        assert_eq!(keys(b), vec!["a", "b", "c", "usage"]);
        let (_, ms) = members(b).unwrap();
        assert_eq!(&b[ms[3].value.clone()], b"null");
        assert_eq!(&b[ms[1].value.clone()], br#""x,}\"]""#);
        assert_eq!(members(b"{}").unwrap().1, vec![]);
        assert!(members(b"[1]").is_none());
        assert!(members(br#"{"a":1"#).is_none());
        assert!(members(br#"{"a" 1}"#).is_none());
    }

    #[test]
    fn removing_a_member_leaves_valid_json_and_every_other_byte() {
        for (doc, name, want) in [
            (r#"{"a":1,"usage":null,"b":2}"#, "usage", r#"{"a":1,"b":2}"#),
            (r#"{"a":1,"usage":null}"#, "usage", r#"{"a":1}"#),
            (r#"{"usage":null,"b":2}"#, "usage", r#"{"b":2}"#),
            (r#"{"usage":null}"#, "usage", r#"{}"#),
            (r#"{"a": 1.50, "usage": null }"#, "usage", r#"{"a": 1.50 }"#),
        ] {
            let b = doc.as_bytes();
            let (_, ms) = members(b).unwrap();
            let i = ms
                .iter()
                .position(|m| &b[m.key.clone()] == name.as_bytes())
                .unwrap();
            let out = splice(b, removal(&ms, i), b"");
            assert_eq!(String::from_utf8(out).unwrap(), want, "{doc}");
        }
    }

    /// Random objects whose values hold the bytes that trip naive scanners; no `usage` key.
    pub(crate) fn object() -> impl Strategy<Value = Map<String, Value>> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            "[a-z,:{}\\[\\]\" \\\\]{0,8}".prop_map(Value::from),
        ];
        let value = leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        proptest::collection::btree_map("[a-z]{1,6}", value, 0..6)
            .prop_map(|m| m.into_iter().filter(|(k, _)| k != "usage").collect())
    }

    proptest! {
        #[test]
        fn removal_of_an_inserted_member_restores_the_document(obj in object(), at in any::<prop::sample::Index>(), pretty in any::<bool>()) {
            let mut with = Map::new();
            let at = at.index(obj.len() + 1);
            for (i, (k, v)) in obj.iter().enumerate() {
                if i == at { with.insert("usage".into(), Value::Null); }
                with.insert(k.clone(), v.clone());
            }
            if at == obj.len() { with.insert("usage".into(), Value::Null); }
            let text = if pretty { serde_json::to_string_pretty(&Value::Object(with)) } else { serde_json::to_string(&Value::Object(with)) }.unwrap();
            let b = text.as_bytes();
            let (_, ms) = members(b).unwrap();
            prop_assert_eq!(ms.len(), obj.len() + 1);
            let i = ms.iter().position(|m| &b[m.key.clone()] == b"usage").unwrap();
            let out = splice(b, removal(&ms, i), b"");
            let back: Value = serde_json::from_slice(&out).unwrap();
            prop_assert_eq!(back, Value::Object(obj));
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Some((_, ms)) = members(&b) {
                for i in 0..ms.len() {
                    let _ = splice(&b, removal(&ms, i), b"");
                }
            }
        }
    }

    fn cut(repeats: &mut Repeats, chunk: &str) -> Option<String> {
        let mut out = Vec::new();
        repeats
            .cut(chunk.as_bytes(), &mut out)
            .then(|| String::from_utf8(out).unwrap())
    }

    fn learnt(chunk: &str) -> Repeats {
        let mut repeats = Repeats::default();
        repeats.learn(chunk.as_bytes(), |k| k != b"choices");
        repeats
    }

    #[test]
    fn repeated_head_and_tail_are_cut_around_what_must_be_read() {
        let first = r#" {"id":"a","created":1, "choices":[1],"x":{"y":2},"model":"m"}"#;
        let mut r = learnt(first);
        assert_eq!(
            cut(
                &mut r,
                r#" {"id":"a","created":1, "choices":[2],"x":{"y":2},"model":"m"}"#
            )
            .as_deref(),
            Some(r#"{"choices":[2]}"#)
        );
        // The head no longer repeats: forgotten, and the tail still cut.
        assert_eq!(
            cut(
                &mut r,
                r#"{"id":"b","choices":[3],"x":{"y":2},"model":"m"}"#
            )
            .as_deref(),
            Some(r#"{"id":"b","choices":[3]}"#)
        );
        // Nothing repeats any more: the chunk is read whole and learnt from.
        assert_eq!(cut(&mut r, r#"{"id":"b","choices":[4]}"#), None);
    }

    #[test]
    fn a_middle_that_is_not_a_member_is_read_whole() {
        let mut r = learnt(r#"{"id":"a","choices":[],"model":"m"}"#);
        // `{` + `}` alone would be a valid object; the whole chunk is not.
        assert_eq!(cut(&mut r, r#"{"id":"a",,"model":"m"}"#), None);
        let mut r = learnt(r#"{"id":"a","choices":[],"model":"m"}"#);
        assert_eq!(cut(&mut r, r#"{"id":"a","model":"m"}"#), None);
    }

    #[test]
    fn keys_that_are_not_plain_are_never_cut() {
        let mut r = learnt(r#"{"i d":"a","choices":[],"\u0063hoices":1,"k:":"m"}"#);
        assert_eq!(r.head, b"");
        assert_eq!(r.tail, b"");
        assert_eq!(cut(&mut r, r#"{"i d":"a","choices":[]}"#), None);
    }

    #[test]
    fn a_stream_that_never_repeats_stops_being_learnt() {
        let mut r = Repeats::default();
        for i in 0..20 {
            let chunk = format!(r#"{{"id":"{i}","choices":[]}}"#);
            if cut(&mut r, &chunk).is_none() {
                r.learn(chunk.as_bytes(), |k| k != b"choices");
            }
        }
        assert!(r.head.is_empty());
        assert!(
            r.patience.misses <= Patience::TRIES + 1,
            "{}",
            r.patience.misses
        );
    }

    /// Keys and values for the head and tail, mostly plain (only plain ones are learnt).
    fn plain_members() -> impl Strategy<Value = Vec<(String, Value)>> {
        let value = prop_oneof![
            Just(Value::Null),
            any::<i32>().prop_map(Value::from),
            "[a-z\\\" ,:{}]{0,6}".prop_map(Value::from),
        ];
        let key = prop_oneof![4 => "[a-z_]{1,4}", 1 => "[a-z:, ]{0,3}"];
        proptest::collection::vec((key, value), 0..4)
    }

    fn join(members: &[(String, Value)]) -> String {
        members
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    proptest! {
        /// Whatever the middle holds (strings left open, stray escapes, unbalanced brackets),
        /// the cut reading accepts a chunk exactly when the whole reading does.
        #[test]
        fn cut_reading_accepts_what_whole_reading_accepts(
            head in plain_members(),
            tail in plain_members(),
            middle in prop_oneof![
                "[a-z0-9\\\" ,:{}\\[\\]]{0,24}",
                // A well-formed middle with one byte inserted or the rest cut off.
                (object(), any::<prop::sample::Index>(), "[\\\" ,:{}\\[\\]]?").prop_map(|(o, at, with)| {
                    let text = serde_json::to_string(&Value::Object(o)).unwrap();
                    let inner = &text[1..text.len() - 1];
                    let at = at.index(inner.len() + 1);
                    let at = (0..=at).rev().find(|i| inner.is_char_boundary(*i)).unwrap_or(0);
                    if with.is_empty() { inner[..at].to_owned() } else { format!("{}{with}{}", &inner[..at], &inner[at..]) }
                }),
            ],
            pretty in any::<bool>(),
        ) {
            let sep = if pretty { ", " } else { "," };
            let compose = |middle: &str| {
                let mut parts = Vec::new();
                if !head.is_empty() { parts.push(join(&head)); }
                parts.push(middle.to_owned());
                if !tail.is_empty() { parts.push(join(&tail)); }
                format!("{{{}}}", parts.join(sep))
            };
            let learnt_from = compose(r#""choices":[]"#);
            prop_assume!(serde_json::from_str::<Value>(&learnt_from).is_ok());
            let mut repeats = Repeats::default();
            repeats.learn(learnt_from.as_bytes(), |k| k != b"choices");
            let chunk = compose(&middle);
            if let Some(cut) = cut(&mut repeats, &chunk) {
                let whole = serde_json::from_str::<Value>(&chunk);
                let part = serde_json::from_str::<Value>(&cut);
                prop_assert_eq!(whole.is_ok(), part.is_ok(), "{} → {}", chunk, cut);
                if let (Ok(Value::Object(whole)), Ok(Value::Object(part))) = (whole, part) {
                    let repeated: Vec<&String> = head.iter().chain(&tail).map(|(k, _)| k).collect();
                    for (k, v) in &part {
                        if !repeated.contains(&k) {
                            prop_assert_eq!(whole.get(k), Some(v));
                        }
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// `string_end` closes a string exactly where serde would, on contents serde accepts.
        #[test]
        fn string_ends_are_where_serde_ends_a_string(
            body in proptest::collection::vec(
                prop_oneof![
                    Just(b'"'), Just(b'\\'), Just(b'u'), Just(b'n'), Just(b'x'), Just(b'/'),
                    Just(b'0'), Just(b'F'), Just(b'g'), Just(b' '), Just(0x01), Just(0x1f),
                    Just(0x7f), Just(0xc3), Just(0xa9), Just(0xff),
                ],
                0..12,
            ),
        ) {
            let mut doc = b"\"".to_vec();
            doc.extend_from_slice(&body);
            doc.push(b'"');
            let serde = std::str::from_utf8(&doc)
                .is_ok_and(|text| serde_json::from_str::<&serde_json::value::RawValue>(text).is_ok());
            prop_assert_eq!(
                string_end(&doc, 1) == Some(doc.len() - 1),
                serde,
                "{:?}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn a_document_that_differs_only_inside_the_marked_strings_matches() {
        let learnt = br#"{"choices":[{"delta":{"content":"Hi"},"finish_reason":null}],"o":"ab"}"#;
        let at = |w: &[u8]| learnt.windows(w.len()).position(|x| x == w).unwrap();
        let (hi, ab) = (at(br#""Hi""#), at(br#""ab""#));
        let mut slot = ValueSlot::default();
        assert!(!slot.matches(learnt), "nothing learnt yet");
        slot.learn(learnt, [hi..hi + 4, ab..ab + 4]);
        for same in [
            &learnt[..],
            br#"{"choices":[{"delta":{"content":""},"finish_reason":null}],"o":""}"#,
            br#"{"choices":[{"delta":{"content":" there, \"you\"\n\u00e9"},"finish_reason":null}],"o":"x\\"}"#,
            "{\"choices\":[{\"delta\":{\"content\":\"caf\u{e9} \u{1f600}\"},\"finish_reason\":null}],\"o\":\"abcdef\"}".as_bytes(),
        ] {
            assert!(slot.matches(same), "{}", String::from_utf8_lossy(same));
        }
        for other in [
            // Elsewhere than in the strings.
            &br#"{"choices":[{"delta":{"content":"Hi"},"finish_reason":"stop"}],"o":"ab"}"#[..],
            br#"{"choices":[{"delta":{"content":"Hi"},"finish_reason":null}],"o":"ab","p":1}"#,
            // A quote that closes a string early, an escaped closing quote.
            br#"{"choices":[{"delta":{"content":"a"},"b":"c"},"finish_reason":null}],"o":"ab"}"#,
            br#"{"choices":[{"delta":{"content":"Hi"},"finish_reason":null}],"o":"a\"}"#,
            // What serde rejects in a string.
            br#"{"choices":[{"delta":{"content":"\q"},"finish_reason":null}],"o":"ab"}"#,
            br#"{"choices":[{"delta":{"content":"Hi"},"finish_reason":null}],"o":"\u12"}"#,
            b"{\"choices\":[{\"delta\":{\"content\":\"tab\there\"},\"finish_reason\":null}],\"o\":\"ab\"}",
            b"{\"choices\":[{\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}],\"o\":\"\xff\"}",
            // Cut short.
            br#"{"choices":[{"delta":{"content":"Hi"#,
        ] {
            assert!(!slot.matches(other), "{}", String::from_utf8_lossy(other));
        }
        assert_eq!(slot.hits(), 4);
        // Only strings and numbers are marked (another value stays learnt bytes), in order;
        // forgetting empties the slot. (A fresh slot: this one has missed too often to learn.)
        let mut slot = ValueSlot::default();
        let null = br#"{"content":null}"#;
        slot.learn(null, std::iter::once(11..15));
        assert!(!slot.matches(null), "nothing marked, nothing learnt");
        slot.learn(learnt, [ab..ab + 4, hi..hi + 4]);
        assert!(!slot.matches(learnt));
        slot.learn(learnt, std::iter::once(hi..hi + 4));
        assert!(slot.matches(learnt));
        let null_and_string = br#"{"c":null,"o":"ab"}"#;
        slot.learn(null_and_string, [5..9, 14..18]);
        assert!(slot.matches(br#"{"c":null,"o":"xyz"}"#));
        assert!(!slot.matches(br#"{"c":"x","o":"ab"}"#));
        slot.forget();
        assert!(!slot.matches(learnt));
    }

    #[test]
    fn a_document_that_differs_only_in_a_marked_number_matches() {
        let learnt = br#"{"type":"d","sequence_number":7,"delta":"Hi","n":[1]}"#;
        let mut slot = ValueSlot::default();
        slot.learn(learnt, [30..31, 40..44]);
        for same in [
            &br#"{"type":"d","sequence_number":8,"delta":"","n":[1]}"#[..],
            br#"{"type":"d","sequence_number":-0,"delta":"Hi","n":[1]}"#,
            br#"{"type":"d","sequence_number":123456789012345678901234567890,"delta":"x","n":[1]}"#,
            br#"{"type":"d","sequence_number":1.5e-3,"delta":"Hi","n":[1]}"#,
            br#"{"type":"d","sequence_number":0.0E+0,"delta":"Hi","n":[1]}"#,
        ] {
            assert!(slot.matches(same), "{}", String::from_utf8_lossy(same));
        }
        for other in [
            // What serde rejects as a number.
            &br#"{"type":"d","sequence_number":07,"delta":"Hi","n":[1]}"#[..],
            br#"{"type":"d","sequence_number":-,"delta":"Hi","n":[1]}"#,
            br#"{"type":"d","sequence_number":1.,"delta":"Hi","n":[1]}"#,
            br#"{"type":"d","sequence_number":.5,"delta":"Hi","n":[1]}"#,
            br#"{"type":"d","sequence_number":1e,"delta":"Hi","n":[1]}"#,
            br#"{"type":"d","sequence_number":+1,"delta":"Hi","n":[1]}"#,
            br#"{"type":"d","sequence_number":1 ,"delta":"Hi","n":[1]}"#,
            // Another value there, or a difference elsewhere.
            br#"{"type":"d","sequence_number":"7","delta":"Hi","n":[1]}"#,
            br#"{"type":"d","sequence_number":null,"delta":"Hi","n":[1]}"#,
            br#"{"type":"d","sequence_number":7,"delta":"Hi","n":[2]}"#,
        ] {
            assert!(!slot.matches(other), "{}", String::from_utf8_lossy(other));
        }
    }

    proptest! {
        /// `number_end` ends a number exactly where serde reads one whole.
        #[test]
        fn number_ends_are_where_serde_ends_a_number(
            body in proptest::collection::vec(
                prop_oneof![
                    Just(b'-'), Just(b'+'), Just(b'.'), Just(b'e'), Just(b'E'), Just(b'0'),
                    Just(b'1'), Just(b'9'), Just(b'x'),
                ],
                0..8,
            ),
        ) {
            let mut doc = body.clone();
            doc.push(b']');
            let text = format!("[{}]", String::from_utf8_lossy(&body));
            let serde = serde_json::from_str::<Vec<serde::de::IgnoredAny>>(&text)
                .is_ok_and(|v| v.len() == 1);
            prop_assert_eq!(scan::number_end(&doc, 0) == Some(body.len()), serde, "{}", text);
        }
    }

    #[test]
    fn a_slot_that_keeps_missing_stops_being_learnt() {
        let mut slot = ValueSlot::default();
        let mut learnt = 0;
        for i in 0..20 {
            let doc = format!(r#"{{"id":{i},"t":"x","k":{i}}}"#);
            if !slot.matches(doc.as_bytes()) {
                let x = doc.find(r#""x""#).unwrap();
                slot.learn(doc.as_bytes(), std::iter::once(x..x + 3));
                learnt += usize::from(!slot.ends.is_empty());
            }
        }
        assert_eq!(learnt, Patience::TRIES as usize);
        assert_eq!(slot.hits(), 0);
    }

    #[test]
    fn escaped_keys_are_detected() {
        let b = br#"{"\u0075sage":null,"a":1}"#;
        let (_, ms) = members(b).unwrap();
        assert!(has_escaped_key(b, &ms));
        assert!(find(b, &ms, "usage").is_none());
    }
}
