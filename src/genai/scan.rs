//! Reading the wire structs' documents in one pass, without serde, when they are ordinary.
//!
//! Owns: [`Cursor`], which reads a document already known to be UTF-8 into the lenient wire
//! types of [`json`](super::json) exactly as serde_json reads it, or declines; and JSON's
//! grammar as serde_json applies it ([`string_end`], [`number_end`]). Does not: describe what is
//! wrong with a document. Declining is always allowed and costs only a second reading:
//! [`json::parse_object`](super::json::parse_object) then hands the document to serde_json, whose
//! answer (or error) it has always been. So the cursor accepts only what it reads to serde's
//! answer and declines the rest: malformed JSON, a key written with escapes, a member named
//! twice, an integer of more than 18 digits, a container nested deeper than [`MAX_DEPTH`], a
//! container a type reads with serde alone.
//!
//! Why: through serde, a chat request and its response took 15.9k instructions to read (the
//! derived visitors and serde_json's set-up for each token, about 300 a member); through the
//! cursor, 14.0k, two-fifths of it finding where each of their 48 strings ends (see
//! `benches/RESULTS.md`).

use std::borrow::Cow;

use super::json_edit::skip_ws;

/// The cursor gave up; serde_json reads the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Declined;

pub type Scanned<T> = Result<T, Declined>;

/// Containers that hold something, skipped nested deeper than this, are declined (serde_json
/// skips any depth).
pub const MAX_DEPTH: u32 = 64;

/// A JSON number as serde_json hands it to a visitor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A position in a UTF-8 document, moving forward one value at a time.
#[derive(Debug)]
pub struct Cursor<'de> {
    text: &'de str,
    at: usize,
}

impl<'de> Cursor<'de> {
    pub fn new(text: &'de str) -> Self {
        Cursor { text, at: 0 }
    }

    fn bytes(&self) -> &'de [u8] {
        self.text.as_bytes()
    }

    /// The next byte after whitespace, left unread.
    #[inline]
    pub fn peek(&mut self) -> Scanned<u8> {
        self.at = skip_ws(self.bytes(), self.at);
        self.bytes().get(self.at).copied().ok_or(Declined)
    }

    fn eat(&mut self, byte: u8) -> Scanned<()> {
        if self.peek()? != byte {
            return Err(Declined);
        }
        self.at += 1;
        Ok(())
    }

    /// Nothing but whitespace is left (serde_json's trailing-characters check).
    pub fn end(&mut self) -> Scanned<()> {
        match self.peek() {
            Err(Declined) => Ok(()),
            Ok(_) => Err(Declined),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Scanned<()> {
        let end = self.at + word.len();
        if self.bytes().get(self.at..end) != Some(word) {
            return Err(Declined);
        }
        self.at = end;
        Ok(())
    }

    /// `null`, `true` or `false` at the cursor: the one whose first byte is there.
    pub fn keyword(&mut self) -> Scanned<Option<bool>> {
        match self.peek()? {
            b'n' => self.literal(b"null").map(|()| None),
            b't' => self.literal(b"true").map(|()| Some(true)),
            b'f' => self.literal(b"false").map(|()| Some(false)),
            _ => Err(Declined),
        }
    }

    /// The string at the cursor, between its quotes and as written, and whether it holds an
    /// escape. Its contents are what serde_json's `ignore_str` accepts.
    #[inline]
    fn string(&mut self) -> Scanned<(&'de str, bool)> {
        let b = self.bytes();
        let open = skip_ws(b, self.at);
        if b.get(open) != Some(&b'"') {
            return Err(Declined);
        }
        let (end, escaped) = string_end(b, open + 1).ok_or(Declined)?;
        // Both ends are quotes, so both are character boundaries.
        let contents = self.text.get(open + 1..end).ok_or(Declined)?;
        self.at = end + 1;
        Ok((contents, escaped))
    }

    /// The string at the cursor, unescaped, borrowed when it holds no escape.
    pub fn text(&mut self) -> Scanned<Cow<'de, str>> {
        let start = self.at;
        match self.string()? {
            (plain, false) => Ok(Cow::Borrowed(plain)),
            // Escapes are rare in what is read: serde_json's own unescaping (surrogate pairs
            // and all), on the string alone.
            (_, true) => {
                let quoted = self.text.get(start..self.at).ok_or(Declined)?;
                let quoted = quoted.trim_start_matches([' ', '\n', '\t', '\r']);
                serde_json::from_str::<String>(quoted)
                    .map(Cow::Owned)
                    .map_err(|_| Declined)
            }
        }
    }

    /// A key and its colon.
    #[inline]
    fn key(&mut self) -> Scanned<&'de str> {
        let (key, escaped) = self.string()?;
        let b = self.bytes();
        let colon = skip_ws(b, self.at);
        // serde_json unescapes keys, and a key that only matches once unescaped is rare.
        if escaped || b.get(colon) != Some(&b':') {
            return Err(Declined);
        }
        self.at = colon + 1;
        Ok(key)
    }

    /// The number at the cursor, as serde_json's `deserialize_any` reads it.
    pub fn number(&mut self) -> Scanned<Number> {
        /// The powers of ten an `f64` holds exactly.
        const POW10: [f64; 23] = [
            1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
            1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
        ];
        self.peek()?;
        let b = self.bytes();
        let start = self.at;
        let negative = b.get(start) == Some(&b'-');
        let mut i = start + usize::from(negative);
        // Every digit, the fraction's too, as serde_json gathers them.
        let mut significand: u64 = 0;
        let mut digits = 0usize;
        let mut gather = |i: &mut usize| {
            let from = *i;
            while let Some(&d) = b.get(*i).filter(|d| d.is_ascii_digit()) {
                significand = significand
                    .wrapping_mul(10)
                    .wrapping_add(u64::from(d - b'0'));
                *i += 1;
            }
            digits += *i - from;
            *i - from
        };
        match b.get(i) {
            // A leading zero adds nothing to the significand.
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                gather(&mut i);
            }
            _ => return Err(Declined),
        }
        let mut exponent: i64 = 0;
        let mut float = false;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let fraction = gather(&mut i);
            if fraction == 0 {
                return Err(Declined);
            }
            exponent = -(fraction as i64);
            float = true;
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            let sign = match b.get(i) {
                Some(b'-') => -1,
                Some(b'+') => 1,
                _ => 0,
            };
            i += usize::from(sign != 0);
            let from = i;
            let mut e: i64 = 0;
            while let Some(&d) = b.get(i).filter(|d| d.is_ascii_digit()) {
                e = e.saturating_mul(10).saturating_add(i64::from(d - b'0'));
                i += 1;
            }
            if i == from {
                return Err(Declined);
            }
            exponent = exponent.saturating_add(if sign < 0 { -e } else { e });
            float = true;
        }
        self.at = i;
        if !float {
            return match (negative, digits <= 18) {
                // Past 18 digits serde_json goes on as u64 or falls back to a float: left to it.
                (_, false) => Err(Declined),
                (false, true) => Ok(Number::U64(significand)),
                // serde_json reads `-0` as a float.
                (true, true) if significand == 0 => Ok(Number::F64(-0.0)),
                (true, true) => Ok(Number::I64(-(significand as i64))),
            };
        }
        // Both readings are exact where the significand and the power of ten are exact
        // `f64`s: one correctly rounded operation, the same bits. Otherwise serde_json reads it.
        let power = usize::try_from(exponent.unsigned_abs()).ok();
        match power.and_then(|p| POW10.get(p)) {
            Some(&power) if digits <= 15 => {
                let f = significand as f64;
                let f = if exponent >= 0 { f * power } else { f / power };
                Ok(Number::F64(if negative { -f } else { f }))
            }
            _ => {
                let token = self.text.get(start..i).ok_or(Declined)?;
                serde_json::from_str::<f64>(token)
                    .map(Number::F64)
                    .map_err(|_| Declined)
            }
        }
    }

    /// Moves past the value at the cursor, accepting what serde_json's `ignore_value` accepts.
    pub fn skip(&mut self) -> Scanned<()> {
        // One bit a level: set for an object.
        let mut objects: u64 = 0;
        let mut depth: u32 = 0;
        loop {
            match self.peek()? {
                open @ (b'{' | b'[') => {
                    self.at += 1;
                    let close = if open == b'{' { b'}' } else { b']' };
                    if self.peek()? == close {
                        self.at += 1;
                    } else {
                        if depth == MAX_DEPTH {
                            return Err(Declined);
                        }
                        objects = objects << 1 | u64::from(open == b'{');
                        depth += 1;
                        if open == b'{' {
                            self.key()?;
                        }
                        continue;
                    }
                }
                b'"' => {
                    self.string()?;
                }
                b'-' | b'0'..=b'9' => {
                    self.at = number_end(self.bytes(), self.at).ok_or(Declined)?;
                }
                _ => {
                    self.keyword()?;
                }
            }
            // A value ended: close what it ended, or go on to the next one.
            loop {
                if depth == 0 {
                    return Ok(());
                }
                let object = objects & 1 == 1;
                match self.peek()? {
                    b',' => {
                        self.at += 1;
                        if object {
                            self.key()?;
                        }
                        break;
                    }
                    b'}' if object => {}
                    b']' if !object => {}
                    _ => return Err(Declined),
                }
                self.at += 1;
                objects >>= 1;
                depth -= 1;
            }
        }
    }

    /// The value at the cursor as written (what serde_json's `RawValue` borrows).
    pub fn raw(&mut self) -> Scanned<&'de str> {
        self.peek()?;
        let start = self.at;
        self.skip()?;
        self.text.get(start..self.at).ok_or(Declined)
    }

    /// Reads the object at the cursor, handing each key to `member`, which reads its value.
    pub fn members(
        &mut self,
        mut member: impl FnMut(&mut Self, &'de str) -> Scanned<()>,
    ) -> Scanned<()> {
        self.items(b'{', b'}', |c| {
            let key = c.key()?;
            member(c, key)
        })
    }

    /// Reads the array at the cursor, `element` reading each element.
    pub fn elements(&mut self, element: impl FnMut(&mut Self) -> Scanned<()>) -> Scanned<()> {
        self.items(b'[', b']', element)
    }

    /// `open`, then `item` read again after each comma, then `close`: an object's or an array's
    /// frame, with no comma after the last item.
    fn items(
        &mut self,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Scanned<()>,
    ) -> Scanned<()> {
        self.eat(open)?;
        if self.peek()? == close {
            self.at += 1;
            return Ok(());
        }
        loop {
            item(self)?;
            match self.peek()? {
                b',' => self.at += 1,
                b if b == close => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(Declined),
            }
        }
    }
}

/// What a value of some type reads as from the cursor (see [`Cursor`]).
pub trait Scan<'de>: Sized {
    fn scan(c: &mut Cursor<'de>) -> Scanned<Self>;
}

/// Where the string whose contents start at `from` closes (its closing quote), and whether the
/// contents hold an escape, when serde_json's `ignore_str` accepts them: only JSON's escapes
/// (`\u` with four hex digits) and no control character. UTF-8 is not checked.
///
/// Keys and most values end within a few words, read here without a call; the rest of a
/// longer string, or one with an escape, is [`string_end_from`]'s.
#[inline]
pub fn string_end(doc: &[u8], from: usize) -> Option<(usize, bool)> {
    let mut i = from;
    for _ in 0..SHORT_WORDS {
        let Some(word) = doc.get(i..).and_then(|s| s.first_chunk::<8>()) else {
            break;
        };
        let special = special_bytes(*word);
        if special != 0 {
            i += (special.trailing_zeros() / 8) as usize;
            if doc.get(i) == Some(&b'"') {
                return Some((i, false));
            }
            break;
        }
        i += 8;
    }
    string_end_from(doc, i)
}

/// How many words [`string_end`] reads itself.
const SHORT_WORDS: usize = 4;

/// A byte's high bit set where it (or, above the first such byte, maybe another) is a quote, a
/// backslash or a control character.
#[inline]
fn special_bytes(word: [u8; 8]) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let w = u64::from_le_bytes(word);
    ((w ^ (ONES * u64::from(b'"'))).wrapping_sub(ONES)
        | (w ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES)
        | w.wrapping_sub(ONES * 0x20))
        & !w
        & HIGH
}

/// [`string_end`] from `i` on: eight bytes a step to the next quote, backslash or control
/// character, escapes stepped over in place, so text dense with them (multi-line prompts, JSON
/// inside a string) is not read a byte at a time. A run of [`RUN_WORDS`] words with none of
/// them (long text, base64 data) is handed to `memchr2`, a vector at a time, for the rest of
/// the run.
fn string_end_from(doc: &[u8], mut i: usize) -> Option<(usize, bool)> {
    let mut escaped = false;
    let mut clean = 0;
    loop {
        if let Some(word) = doc.get(i..).and_then(|s| s.first_chunk::<8>()) {
            let special = special_bytes(*word);
            if special != 0 {
                i += (special.trailing_zeros() / 8) as usize;
                clean = 0;
            } else {
                i += 8;
                clean += 1;
                if clean < RUN_WORDS {
                    continue;
                }
                let rest = doc.get(i..)?;
                let stop = memchr::memchr2(b'"', b'\\', rest)?;
                if has_control(&rest[..stop]) {
                    return None;
                }
                i += stop;
                clean = 0;
            }
        } else {
            // The last few bytes of the document.
            while !matches!(doc.get(i)?, b'"' | b'\\' | 0x00..=0x1f) {
                i += 1;
            }
        }
        i += match doc[i] {
            b'"' => return Some((i, escaped)),
            b'\\' => {
                escaped = true;
                match doc.get(i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => 2,
                    b'u' if doc
                        .get(i + 2..i + 6)
                        .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) =>
                    {
                        6
                    }
                    _ => return None,
                }
            }
            _ => return None,
        };
    }
}

/// How many words with no quote, backslash or control character [`string_end`] reads before
/// it hands the rest of the run to `memchr2` (whose call costs what a few words do).
const RUN_WORDS: u32 = 8;

/// Whether `bytes` hold a control character (below 0x20), which a JSON string may not. No early
/// exit (one is rare: the string is malformed), so the compiler makes vector code of it.
fn has_control(bytes: &[u8]) -> bool {
    bytes.iter().fold(false, |found, &b| found | (b < 0x20))
}

/// Where the number starting at `from` ends, when serde_json reads one there: JSON's grammar,
/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`. A `0` followed by a digit ends at the `0`
/// (serde rejects it; the digit is then where the caller expects something else).
pub fn number_end(doc: &[u8], from: usize) -> Option<usize> {
    let digits = |i: usize| {
        i + doc
            .get(i..)
            .map_or(0, |d| d.iter().take_while(|b| b.is_ascii_digit()).count())
    };
    let mut i = from + usize::from(doc.get(from) == Some(&b'-'));
    i = match doc.get(i)? {
        b'0' => i + 1,
        b'1'..=b'9' => digits(i),
        _ => return None,
    };
    if doc.get(i) == Some(&b'.') {
        let end = digits(i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    if matches!(doc.get(i), Some(b'e' | b'E')) {
        i += 1 + usize::from(matches!(doc.get(i + 1), Some(b'+' | b'-')));
        let end = digits(i);
        if end == i {
            return None;
        }
        i = end;
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::value::RawValue;

    fn raw(doc: &str) -> Scanned<&str> {
        let mut c = Cursor::new(doc);
        let raw = c.raw()?;
        c.end().map(|()| raw)
    }

    #[test]
    fn values_are_skipped_whole() {
        for doc in [
            r#"{"a":[1,{"b":"c\n\u00e9"},[]],"d":{},"e":-0.5e+3,"f":null,"g":true}"#,
            " [ 1 , 2 ] ",
            r#""plain""#,
            "0",
            "false",
        ] {
            assert_eq!(raw(doc), Ok(doc.trim()), "{doc}");
        }
    }

    #[test]
    fn malformed_or_unusual_documents_are_declined() {
        for doc in [
            "{",
            "[1,]",
            r#"{"a":1,}"#,
            "[}",
            r#"{"a"}"#,
            "01",
            "-",
            "1.",
            "nul",
            r#""\x""#,
            r#"{"\u0061":1}"#,
            "\"\u{1}\"",
            "[1 2]",
        ] {
            assert_eq!(raw(doc), Err(Declined), "{doc}");
        }
        // The innermost array is empty: MAX_DEPTH arrays hold something.
        let deep = format!("{}{}", "[".repeat(66), "]".repeat(66));
        assert_eq!(raw(&deep), Err(Declined), "deeper than MAX_DEPTH");
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert_eq!(raw(&deep), Ok(deep.as_str()));
    }

    #[test]
    fn numbers_are_what_serde_json_hands_a_visitor() {
        let read = |doc: &str| Cursor::new(doc).number();
        assert_eq!(read("12"), Ok(Number::U64(12)));
        assert_eq!(read("-12"), Ok(Number::I64(-12)));
        assert_eq!(read("-0"), Ok(Number::F64(-0.0)));
        assert_eq!(read("0.25"), Ok(Number::F64(0.25)));
        assert_eq!(read("-1.50e1"), Ok(Number::F64(-15.0)));
        assert_eq!(read("7e22"), Ok(Number::F64(7e22)));
        // Past the exact reading serde_json's own answer is not always the nearest float, so it
        // is asked: 1.0000000000000001e-23 here.
        let serde: f64 = serde_json::from_str("0.1e-22").unwrap();
        assert_ne!(serde, 1e-23);
        assert_eq!(read("0.1e-22"), Ok(Number::F64(serde)));
        assert_eq!(
            read("999999999999999999"),
            Ok(Number::U64(999_999_999_999_999_999))
        );
        assert_eq!(read("9999999999999999999"), Err(Declined), "19 digits");
        assert_eq!(read("1e400"), Err(Declined), "out of range for serde_json");
    }

    #[test]
    fn text_is_borrowed_unless_escaped() {
        assert!(matches!(
            Cursor::new(r#""héllo""#).text(),
            Ok(Cow::Borrowed("héllo"))
        ));
        assert_eq!(
            Cursor::new(r#" "a\"b\ud83d\ude00""#).text(),
            Ok(Cow::Owned("a\"b😀".to_owned()))
        );
        assert_eq!(
            Cursor::new(r#""\ud800""#).text(),
            Err(Declined),
            "a lone surrogate"
        );
    }

    /// What serde_json's skipping makes of `doc`: accepted whole, or not.
    fn serde_skips(doc: &str) -> bool {
        serde_json::from_str::<&RawValue>(doc).is_ok()
    }

    fn json_tokens() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("{"),
                Just("}"),
                Just("["),
                Just("]"),
                Just(","),
                Just(":"),
                Just(" "),
                Just("\"k\""),
                Just("\"a\\nb\""),
                Just("\"\\u00e9\""),
                Just("\"\\q\""),
                Just("1"),
                Just("-0"),
                Just("2.5e3"),
                Just("01"),
                Just("true"),
                Just("null"),
                Just("nul"),
                Just("\"é\""),
            ],
            0..14,
        )
        .prop_map(|t| t.concat())
    }

    /// String contents of any length: runs of plain text (past the words `string_end` reads
    /// itself), escapes good and bad, now and then a quote or a control character.
    fn string_contents() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            8 => "[a-z é€]{0,40}".prop_map(String::into_bytes),
            3 => prop_oneof![
                Just(&b"\\n"[..]), Just(&b"\\\""[..]), Just(&b"\\\\"[..]),
                Just(&b"\\u00e9"[..]), Just(&b"\\u00g9"[..]), Just(&b"\\q"[..]),
                Just(&b"\\"[..]),
            ].prop_map(<[u8]>::to_vec),
            1 => prop_oneof![Just(b'"'), Just(0x01u8), Just(0x1f), Just(b'\t')]
                .prop_map(|b| vec![b]),
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|p| p.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(8192))]

        /// `string_end` closes a string where serde_json would, whatever its length, and says
        /// whether it held an escape.
        #[test]
        fn strings_end_where_serde_ends_them(body in string_contents()) {
            let mut doc = b"\"".to_vec();
            doc.extend_from_slice(&body);
            doc.push(b'"');
            let serde = std::str::from_utf8(&doc)
                .is_ok_and(|text| serde_json::from_str::<&RawValue>(text).is_ok());
            let end = string_end(&doc, 1);
            prop_assert_eq!(
                end.map(|(at, _)| at) == Some(doc.len() - 1),
                serde,
                "{:?}",
                String::from_utf8_lossy(&body)
            );
            if serde {
                prop_assert_eq!(end.map(|(_, escaped)| escaped), Some(body.contains(&b'\\')));
            }
        }

        /// Whatever the skipper accepts, serde_json accepts, and it ends where serde's does.
        #[test]
        fn skipping_accepts_only_what_serde_accepts(doc in json_tokens()) {
            if raw(&doc).is_ok() {
                prop_assert!(serde_skips(&doc), "{}", doc);
            }
        }

        /// And it declines only the unusual: no well-formed document of plain keys is declined.
        #[test]
        fn well_formed_plain_documents_are_skipped(value in plain_value()) {
            let doc = value.to_string();
            prop_assert_eq!(raw(&doc), Ok(doc.as_str()));
        }

        /// Numbers read as serde_json reads them, where the cursor reads them at all.
        #[test]
        fn numbers_read_as_serde_reads_them(
            doc in prop_oneof![
                // Mostly within the exact reading: up to 15 digits, powers of ten up to 22.
                "-?(0|[1-9][0-9]{0,7})(\\.[0-9]{1,8})?([eE][+-]?[0-9]{1,2})?",
                "-?(0|[1-9][0-9]{0,20})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?",
            ],
        ) {
            struct Any(Number);
            impl<'de> serde::Deserialize<'de> for Any {
                fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                    struct V;
                    impl serde::de::Visitor<'_> for V {
                        type Value = Number;
                        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                            f.write_str("a number")
                        }
                        fn visit_u64<E>(self, v: u64) -> Result<Number, E> { Ok(Number::U64(v)) }
                        fn visit_i64<E>(self, v: i64) -> Result<Number, E> { Ok(Number::I64(v)) }
                        fn visit_f64<E>(self, v: f64) -> Result<Number, E> { Ok(Number::F64(v)) }
                    }
                    d.deserialize_any(V).map(Any)
                }
            }
            if let Ok(n) = Cursor::new(&doc).number() {
                let serde = serde_json::from_str::<Any>(&doc).map(|a| a.0);
                prop_assert!(matches!(serde, Ok(s) if format!("{s:?}") == format!("{n:?}")), "{}", doc);
            }
        }
    }

    fn plain_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e6..1e6f64).prop_map(Value::from),
            "[ -~é\n\"\\\\]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
