//! Lenient extraction of the few JSON fields telemetry needs.
//!
//! Owns: reading a field without letting an unexpected type fail the whole document (a request
//! whose `temperature` is a string still yields its model), and describing a parse failure
//! without quoting the input (serde's own messages can echo values, which may be content);
//! [`wire!`], which declares a wire struct once for both its readers, serde's and the faster
//! [`scan`](super::scan) cursor's, and [`parse_object`], which tries the cursor first. Does not:
//! know any OpenAI schema; `chat` and friends declare their wire structs with it.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::scan::{Cursor, Declined, Number, Scan, Scanned};

/// A field read leniently: absent (or `null`), present with the expected type, or present with
/// another type (kept apart so the span can say which fields were unusable).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Field<T> {
    #[default]
    Absent,
    Present(T),
    Mistyped,
}

impl<T> Field<T> {
    pub fn get(self) -> Option<T> {
        match self {
            Field::Present(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_ref(&self) -> Option<&T> {
        match self {
            Field::Present(v) => Some(v),
            _ => None,
        }
    }

    pub fn is_mistyped(&self) -> bool {
        matches!(self, Field::Mistyped)
    }
}

impl<T> From<Option<T>> for Field<T> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Field::Mistyped, Field::Present)
    }
}

/// How a JSON value of each kind turns into `Self`; `None` means "wrong type".
pub trait Lenient<'de>: Sized {
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
    fn from_i64(_: i64) -> Option<Self> {
        None
    }
    fn from_u64(v: u64) -> Option<Self> {
        i64::try_from(v).ok().and_then(Self::from_i64)
    }
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
    fn from_str(_: &str) -> Option<Self> {
        None
    }
    /// A string that lives as long as the input (no escapes in it): borrow rather than copy.
    fn from_borrowed_str(v: &'de str) -> Option<Self> {
        Self::from_str(v)
    }
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    /// [`Lenient::from_seq`] for the fast reader: the array at the cursor read to the same
    /// answer, or declined. Declining is always exact, so a type whose arrays are rare need not
    /// say how it reads them; one that overrides `from_seq` and this must keep them in step.
    fn scan_seq(_: &mut Cursor<'de>) -> Scanned<Option<Self>> {
        Err(Declined)
    }
    /// [`Lenient::from_map`] for the fast reader, as [`Lenient::scan_seq`] is for arrays.
    fn scan_map(_: &mut Cursor<'de>) -> Scanned<Option<Self>> {
        Err(Declined)
    }
}

impl Lenient<'_> for String {
    fn from_str(v: &str) -> Option<Self> {
        Some(v.to_owned())
    }
}

impl<'de: 'a, 'a> Lenient<'de> for Cow<'a, str> {
    fn from_str(v: &str) -> Option<Self> {
        Some(Cow::Owned(v.to_owned()))
    }
    fn from_borrowed_str(v: &'de str) -> Option<Self> {
        Some(Cow::Borrowed(v))
    }
}

impl Lenient<'_> for bool {
    fn from_bool(v: bool) -> Option<Self> {
        Some(v)
    }
}

impl Lenient<'_> for i64 {
    fn from_i64(v: i64) -> Option<Self> {
        Some(v)
    }
    fn from_f64(v: f64) -> Option<Self> {
        // `100.0` is how some clients serialise integers; anything fractional is a wrong type.
        (v.fract() == 0.0 && v.abs() < 9.0e15).then_some(v as i64)
    }
}

impl Lenient<'_> for f64 {
    fn from_i64(v: i64) -> Option<Self> {
        Some(v as f64)
    }
    fn from_u64(v: u64) -> Option<Self> {
        Some(v as f64)
    }
    fn from_f64(v: f64) -> Option<Self> {
        Some(v)
    }
}

/// A string, or an array of strings (`stop: "x"` and `stop: ["x", "y"]` alike).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Strings(pub Vec<String>);

impl<'de> Lenient<'de> for Strings {
    fn from_str(v: &str) -> Option<Self> {
        Some(Strings(vec![v.to_owned()]))
    }
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        let mut out = Vec::new();
        let mut all_strings = true;
        while let Some(item) = seq.next_element::<Field<String>>()? {
            match item {
                Field::Present(s) => out.push(s),
                _ => all_strings = false,
            }
        }
        Ok(all_strings.then_some(Strings(out)))
    }
    fn scan_seq(c: &mut Cursor<'de>) -> Scanned<Option<Self>> {
        let mut out = Vec::new();
        let mut all_strings = true;
        c.elements(|c| {
            match Field::<String>::scan(c)? {
                Field::Present(s) => out.push(s),
                _ => all_strings = false,
            }
            Ok(())
        })?;
        Ok(all_strings.then_some(Strings(out)))
    }
}

/// An identifier that providers send as a string or a number (`error.code`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Code(pub String);

impl Lenient<'_> for Code {
    fn from_str(v: &str) -> Option<Self> {
        Some(Code(v.to_owned()))
    }
    fn from_i64(v: i64) -> Option<Self> {
        Some(Code(v.to_string()))
    }
}

/// A nested object, itself made of lenient fields.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Obj<T>(pub T);

impl<'de, T: Wire<'de>> Lenient<'de> for Obj<T> {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map)).map(|v| Some(Obj(v)))
    }
    fn scan_map(c: &mut Cursor<'de>) -> Scanned<Option<Self>> {
        T::scan_object(c).map(|v| Some(Obj(v)))
    }
}

/// An array whose elements are read leniently; elements of the wrong type are skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct List<T>(pub Vec<T>);

impl<T> Default for List<T> {
    fn default() -> Self {
        List(Vec::new())
    }
}

impl<'de, T: Lenient<'de>> Lenient<'de> for List<T> {
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element::<Field<T>>()? {
            if let Field::Present(v) = item {
                out.push(v);
            }
        }
        Ok(Some(List(out)))
    }
    fn scan_seq(c: &mut Cursor<'de>) -> Scanned<Option<Self>> {
        let mut out = Vec::new();
        c.elements(|c| {
            if let Field::Present(v) = Field::<T>::scan(c)? {
                out.push(v);
            }
            Ok(())
        })?;
        Ok(Some(List(out)))
    }
}

impl<'de, T: Lenient<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FieldVisitor(PhantomData))
    }
}

/// What [`FieldVisitor`] makes of each kind of value, read by the cursor instead.
impl<'de, T: Lenient<'de>> Scan<'de> for Field<T> {
    fn scan(c: &mut Cursor<'de>) -> Scanned<Self> {
        Ok(match c.peek()? {
            b'"' => match c.text()? {
                Cow::Borrowed(v) => T::from_borrowed_str(v),
                Cow::Owned(v) => T::from_str(&v),
            }
            .into(),
            b'-' | b'0'..=b'9' => match c.number()? {
                Number::U64(v) => T::from_u64(v),
                Number::I64(v) => T::from_i64(v),
                Number::F64(v) => T::from_f64(v),
            }
            .into(),
            b'[' => T::scan_seq(c)?.into(),
            b'{' => T::scan_map(c)?.into(),
            _ => match c.keyword()? {
                None => Field::Absent,
                Some(v) => T::from_bool(v).into(),
            },
        })
    }
}

struct FieldVisitor<T>(PhantomData<T>);

impl<'de, T: Lenient<'de>> Visitor<'de> for FieldVisitor<T> {
    type Value = Field<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(T::from_bool(v).into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(T::from_i64(v).into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(T::from_u64(v).into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(T::from_f64(v).into())
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(T::from_str(v).into())
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(T::from_borrowed_str(v).into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Field::Absent)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Field::Absent)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Ok(T::from_seq(seq)?.into())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Ok(T::from_map(map)?.into())
    }
}

/// A member that also says whether its key was there at all, `null` included.
#[derive(Debug, Default)]
pub struct Seen<T> {
    pub seen: bool,
    pub value: T,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Seen<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(|value| Seen { seen: true, value })
    }
}

impl<'de, T: Scan<'de>> Scan<'de> for Seen<T> {
    fn scan(c: &mut Cursor<'de>) -> Scanned<Self> {
        T::scan(c).map(|value| Seen { seen: true, value })
    }
}

/// A value kept as written (serde_json's borrowed `RawValue`), to be read only when needed.
/// Its text lies inside the document it was read from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw<'a>(pub &'a str);

impl<'a> Raw<'a> {
    pub fn get(self) -> &'a str {
        self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Raw<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'de RawValue>::deserialize(d).map(|r| Raw(r.get()))
    }
}

impl<'de: 'a, 'a> Scan<'de> for Raw<'a> {
    fn scan(c: &mut Cursor<'de>) -> Scanned<Self> {
        c.raw().map(Raw)
    }
}

/// `null` is nothing, as serde reads an `Option`.
impl<'de, T: Scan<'de>> Scan<'de> for Option<T> {
    fn scan(c: &mut Cursor<'de>) -> Scanned<Self> {
        if c.peek()? == b'n' {
            return c.keyword().map(|_| None);
        }
        T::scan(c).map(Some)
    }
}

/// A wire struct: read by serde, or by the cursor when the document is ordinary. [`wire!`]
/// declares one.
pub trait Wire<'de>: Deserialize<'de> {
    /// The keys it reads, aliases included.
    const KEYS: &'static [&'static str];
    /// The object at the cursor, read as serde's derived reading reads it, or declined.
    fn scan_object(c: &mut Cursor<'de>) -> Scanned<Self>;
}

/// How the cursor's reading of a document compares with serde's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agreement {
    /// Neither reads the document.
    Unread,
    /// The cursor declined a document serde reads.
    Declined,
    /// Both read the same wire struct, field for field (by their `Debug` forms).
    Same,
    Differs,
}

/// Compares the two readings of `body` as a `T` (for tests and the fuzz target).
pub fn compare<'de, T: Wire<'de> + fmt::Debug>(body: &'de [u8]) -> Agreement {
    let Ok(text) = std::str::from_utf8(body) else {
        return Agreement::Unread;
    };
    match (scan_whole::<T>(text), serde_json::from_str::<T>(text)) {
        (Err(Declined), Err(_)) => Agreement::Unread,
        (Err(Declined), Ok(_)) => Agreement::Declined,
        (Ok(fast), Ok(serde)) if format!("{serde:?}") == format!("{fast:?}") => Agreement::Same,
        _ => Agreement::Differs,
    }
}

/// Declares wire structs: each field with the key it is read from (and the aliases that name it
/// too), lenient like every field here, read by serde ([`Deserialize`], every field defaulted)
/// and by the cursor ([`Wire`]) from the one declaration, so the two cannot name different keys.
/// A member named twice fails serde's reading and is declined by the cursor.
macro_rules! wire {
    ($(
        $(#[$attr:meta])*
        $vis:vis struct $name:ident $(<$lt:lifetime $(, $param:ident)*>)? {
            $( $(#[$field_attr:meta])* $field:ident : $ty:ty = $key:tt $(| $alias:tt)* ),* $(,)?
        }
    )*) => {$(
        $(#[$attr])*
        #[derive(serde::Deserialize, Default, Debug)]
        #[serde(default)]
        $vis struct $name $(<$lt $(, $param)*>)? {
            $( $(#[$field_attr])* #[serde(rename = $key $(, alias = $alias)*)] $field: $ty, )*
        }

        impl<'de $(: $lt, $lt $(, $param)*)?> $crate::genai::json::Wire<'de>
            for $name $(<$lt $(, $param)*>)?
        where
            Self: serde::Deserialize<'de> + Default,
            $($($param: $crate::genai::scan::Scan<'de>,)*)?
        {
            const KEYS: &'static [&'static str] = &[$($key $(, $alias)*),*];

            fn scan_object(
                c: &mut $crate::genai::scan::Cursor<'de>,
            ) -> $crate::genai::scan::Scanned<Self> {
                #[allow(non_camel_case_types, reason = "one variant a field, named as it is")]
                enum Member { $($field),* }
                let mut out = Self::default();
                let mut seen = 0u64;
                c.members(|c, key| {
                    let bit = match key {
                        $( $key $(| $alias)* => {
                            let bit = 1u64 << (Member::$field as u32);
                            if seen & bit == 0 {
                                out.$field = $crate::genai::scan::Scan::scan(c)?;
                            }
                            bit
                        } )*
                        _ => return c.skip(),
                    };
                    if seen & bit != 0 {
                        return Err($crate::genai::scan::Declined);
                    }
                    seen |= bit;
                    Ok(())
                })?;
                Ok(out)
            }
        }
    )*};
}
pub(crate) use wire;

/// Takes fields out of a parsed document, remembering the ones whose type was unexpected, so
/// every parser reports them the same way.
#[derive(Debug, Default)]
pub struct Taker {
    mistyped: Vec<&'static str>,
}

impl Taker {
    pub fn take<T>(&mut self, name: &'static str, field: Field<T>) -> Option<T> {
        if field.is_mistyped() {
            self.mistyped.push(name);
        }
        field.get()
    }

    /// `unexpected type for: a, b`, when any field was mistyped.
    pub fn issue(self) -> Option<String> {
        (!self.mistyped.is_empty())
            .then(|| format!("unexpected type for: {}", self.mistyped.join(", ")))
    }
}

/// Parses a document that must be a JSON object into a wire struct: the cursor reads it when it
/// is ordinary, serde_json otherwise, to the same answer. The error text never quotes the input.
pub fn parse_object<'de, T: Wire<'de>>(body: &'de [u8]) -> Result<T, String> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => return Err("empty body".to_owned()),
        Some(b'{') => {}
        Some(_) => return Err("body is not a JSON object".to_owned()),
    }
    match std::str::from_utf8(body) {
        // Validated in one pass here, the readers need not check each string again.
        Ok(text) => match scan_whole(text) {
            Ok(w) => return Ok(w),
            Err(Declined) => serde_json::from_str(text),
        },
        // Parsed as bytes, so the error says where the invalid sequence is.
        Err(_) => serde_json::from_slice(body),
    }
    .map_err(|e| describe(&e))
}

/// The cursor's reading of the whole of `text`.
fn scan_whole<'de, T: Wire<'de>>(text: &'de str) -> Scanned<T> {
    let mut c = Cursor::new(text);
    let w = T::scan_object(&mut c)?;
    c.end().map(|()| w)
}

/// A content-free description of a serde_json error: its category and position only.
pub fn describe(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Syntax => "invalid JSON",
        Category::Eof => "truncated JSON",
        Category::Data => "unexpected JSON structure",
        Category::Io => "unreadable JSON",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;

    /// Values of every kind, in the forms the cursor reads and those it must decline or leave
    /// to serde: escapes, `-0`, long integers, out-of-range floats, malformed tokens.
    const LEAVES: &[&str] = &[
        "null",
        "true",
        "false",
        "0",
        "7",
        "-3",
        "-0",
        "1.0",
        "100.0",
        "0.25",
        "-1.5e2",
        "123456789012345678",
        "1234567890123456789012",
        "1e400",
        "\"stop\"",
        "\"\"",
        "\"gpt-4o\"",
        "\"a\\nb\"",
        "\"\\u00e9t\\u00e9\"",
        "\"\\ud83d\\ude00\"",
        "\"\\ud800\"",
        "\"héllo\"",
        "[]",
        "{}",
        "[1, \"a\"]",
        "[\"a\"]",
        "{\"id\": \"i\"}",
        "01",
        "tru",
        "\"\\x\"",
        "\"\\u12\"",
        "1.",
        "\"\u{1}\"",
        "\"\u{1f}\"",
    ];

    /// JSON values of every kind ([`LEAVES`]), nested, their objects made of `keys` (and a few
    /// others, some written with escapes, some twice).
    fn values(keys: &[&'static str]) -> impl Strategy<Value = String> + use<> {
        let mut names: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
        names.extend(["\"x\"", "\"\\u0069d\"", "\"type\""].map(str::to_owned));
        let name = proptest::sample::select(names);
        let leaf = proptest::sample::select(LEAVES).prop_map(str::to_owned);
        leaf.prop_recursive(4, 48, 5, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4)
                    .prop_map(|items| format!("[{}]", items.join(","))),
                proptest::collection::vec((name.clone(), inner), 0..5).prop_map(object),
            ]
        })
    }

    fn object(members: Vec<(String, String)>) -> String {
        let members: Vec<String> = members
            .into_iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        format!("{{{}}}", members.join(", "))
    }

    /// Objects of [`values`].
    pub(crate) fn documents(keys: &[&'static str]) -> impl Strategy<Value = String> + use<> {
        let mut names: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
        names.push("\"x\"".to_owned());
        let members = (proptest::sample::select(names), values(keys));
        proptest::collection::vec(members, 0..8).prop_map(object)
    }

    /// Each of `recorded` with each of its values in turn (containers included, not the
    /// document itself) replaced by each of [`LEAVES`]: every field, at the depth it really has,
    /// given every kind of value (the keys come out sorted: `serde_json::Value` keeps no
    /// order). Each must read alike; every recorded document as it is (as each of the module's
    /// wire structs), and more than half of
    /// what serde reads of the rest, must be read by the cursor.
    pub(crate) fn replacements_agree(
        recorded: &[&[u8]],
        compare: impl Fn(&[u8]) -> Vec<Agreement>,
    ) {
        use serde_json::Value;
        /// The `n`th value of `v` in document order (`v` itself first), counting `n` down.
        fn nth<'v>(v: &'v mut Value, n: &mut usize) -> Option<&'v mut Value> {
            if *n == 0 {
                return Some(v);
            }
            *n -= 1;
            match v {
                Value::Array(items) => items.iter_mut().find_map(|item| nth(item, n)),
                Value::Object(members) => members.values_mut().find_map(|item| nth(item, n)),
                _ => None,
            }
        }
        const MARK: &str = "\u{1}mark\u{1}";
        let mut tally = Tally::default();
        for doc in recorded {
            // As every wire struct of the module: they skip the members they do not name.
            assert!(
                compare(doc).iter().all(|a| *a == Agreement::Same),
                "{}",
                String::from_utf8_lossy(doc)
            );
            let doc: Value = serde_json::from_slice(doc).expect("a recorded document");
            for at in 1.. {
                let mut marked = doc.clone();
                let Some(slot) = nth(&mut marked, &mut { at }) else {
                    break;
                };
                *slot = Value::String(MARK.to_owned());
                let marked = marked.to_string();
                for leaf in LEAVES {
                    let variant = marked.replace("\"\\u0001mark\\u0001\"", leaf);
                    tally.add(&variant, compare(variant.as_bytes()));
                }
            }
        }
        assert!(
            tally.same * 2 > tally.read,
            "the cursor read {} of the {} serde read",
            tally.same,
            tally.read
        );
    }

    /// How many readings serde made, and how many of them the cursor made alike.
    #[derive(Default)]
    struct Tally {
        read: usize,
        same: usize,
    }

    impl Tally {
        /// Counts `doc`'s readings; none may differ.
        fn add(&mut self, doc: &str, agreements: Vec<Agreement>) {
            for agreement in agreements {
                assert_ne!(agreement, Agreement::Differs, "{doc}");
                self.read += usize::from(agreement != Agreement::Unread);
                self.same += usize::from(agreement == Agreement::Same);
            }
        }
    }

    /// The cursor's readings of `strategy`'s documents as `compare` makes them: each must agree with
    /// serde's, and the cursor must read much of what serde reads for that to mean anything.
    pub(crate) fn agreement_holds(
        strategy: impl Strategy<Value = String>,
        compare: impl Fn(&[u8]) -> Vec<Agreement>,
    ) {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let mut tally = Tally::default();
        for _ in 0..2000 {
            let doc = strategy
                .new_tree(&mut runner)
                .expect("a document")
                .current();
            tally.add(&doc, compare(doc.as_bytes()));
        }
        // The documents often give a field the wrong kind of container, which the cursor leaves
        // to serde as it leaves escaped keys and long integers: it read 48–72 % of what serde
        // read when this was written.
        assert!(
            tally.same * 3 > tally.read,
            "the cursor read {} of the {} serde read",
            tally.same,
            tally.read
        );
    }

    wire! {
        struct Doc {
            s: Field<String> = "s",
            n: Field<i64> = "n",
            x: Field<f64> = "x",
            b: Field<bool> = "b",
            stop: Field<Strings> = "stop",
            code: Field<Code> = "code",
            inner: Field<Obj<Inner>> = "inner",
            list: Field<List<Obj<Inner>>> = "list",
        }

        struct Inner {
            k: Field<i64> = "k",
        }
    }

    #[test]
    fn well_typed_fields_are_present() {
        let d: Doc = parse_object(
            br#"{"s":"a","n":3,"x":0.5,"b":true,"stop":"END","code":429,"inner":{"k":1},"list":[{"k":2},7,{"k":3}]}"#,
        )
        .unwrap();
        assert_eq!(d.s.get().as_deref(), Some("a"));
        assert_eq!(d.n.get(), Some(3));
        assert_eq!(d.x.get(), Some(0.5));
        assert_eq!(d.b.get(), Some(true));
        assert_eq!(d.stop.get(), Some(Strings(vec!["END".into()])));
        assert_eq!(d.code.get(), Some(Code("429".into())));
        assert_eq!(d.inner.get().unwrap().0.k.get(), Some(1));
        let list = d.list.get().unwrap().0;
        assert_eq!(list.len(), 2, "the non-object element is skipped");
    }

    #[test]
    fn mistyped_fields_do_not_fail_the_document() {
        let d: Doc =
            parse_object(br#"{"s":1,"n":"many","x":"hot","b":"yes","stop":[1,"a"],"inner":[]}"#)
                .unwrap();
        assert!(d.s.is_mistyped());
        assert!(d.n.is_mistyped());
        assert!(d.x.is_mistyped());
        assert!(d.b.is_mistyped());
        assert!(d.stop.is_mistyped());
        assert!(d.inner.is_mistyped());
    }

    #[test]
    fn null_is_absent_and_integral_floats_are_integers() {
        let d: Doc = parse_object(br#"{"s":null,"n":100.0,"x":2}"#).unwrap();
        assert_eq!(d.s, Field::Absent);
        assert_eq!(d.n.get(), Some(100));
        assert_eq!(d.x.get(), Some(2.0));
        let d: Doc = parse_object(br#"{"n":1.5}"#).unwrap();
        assert!(d.n.is_mistyped());
    }

    #[test]
    fn errors_never_quote_the_input() {
        let secret = br#"{"s": "sk-SECRET", "n": }"#;
        let err = parse_object::<Doc>(secret).unwrap_err();
        assert!(!err.contains("SECRET"), "{err}");
        assert!(err.starts_with("invalid JSON at line 1"), "{err}");
        assert_eq!(
            parse_object::<Doc>(br#"{"s": "sk-SECRET"#).unwrap_err(),
            "truncated JSON at line 1 column 16"
        );
        assert_eq!(
            parse_object::<Doc>(b"[1]").unwrap_err(),
            "body is not a JSON object"
        );
        assert_eq!(parse_object::<Doc>(b"  ").unwrap_err(), "empty body");
    }

    #[test]
    fn text_is_read_whatever_its_script_and_invalid_utf8_is_located() {
        wire! {
            struct Borrowing<'a> {
                #[serde(borrow)]
                s: Field<Cow<'a, str>> = "s",
            }
        }
        let d: Borrowing<'_> = parse_object("{\"s\":\"héllo → 世界\"}".as_bytes()).unwrap();
        assert!(matches!(d.s, Field::Present(Cow::Borrowed("héllo → 世界"))));
        assert_eq!(
            parse_object::<Doc>(b"{\"n\":1,\n\"s\":\"ab\xff\"}").unwrap_err(),
            "invalid JSON at line 2 column 8"
        );
    }
}
