//! Lenient extraction of the few JSON fields telemetry needs.
//!
//! Owns: reading a field without letting an unexpected type fail the whole document (a request
//! whose `temperature` is a string still yields its model), and describing a parse failure
//! without quoting the input (serde's own messages can echo values, which may be content).
//! Does not: know any OpenAI schema; `chat` and friends declare their wire structs with it.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

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

impl<'de, T: Deserialize<'de>> Lenient<'de> for Obj<T> {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map)).map(|v| Some(Obj(v)))
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
}

impl<'de, T: Lenient<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FieldVisitor(PhantomData))
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

/// Parses a document that must be a JSON object. The error text never quotes the input.
pub fn parse_object<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<T, String> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => return Err("empty body".to_owned()),
        Some(b'{') => {}
        Some(_) => return Err("body is not a JSON object".to_owned()),
    }
    match std::str::from_utf8(body) {
        // Validated in one pass here, the parser need not check each string it reads again.
        Ok(text) => serde_json::from_str(text),
        // Parsed as bytes, so the error says where the invalid sequence is.
        Err(_) => serde_json::from_slice(body),
    }
    .map_err(|e| describe(&e))
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
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Default, Debug)]
    #[serde(default)]
    struct Doc {
        s: Field<String>,
        n: Field<i64>,
        x: Field<f64>,
        b: Field<bool>,
        stop: Field<Strings>,
        code: Field<Code>,
        inner: Field<Obj<Inner>>,
        list: Field<List<Obj<Inner>>>,
    }

    #[derive(Deserialize, Default, Debug, PartialEq, Clone)]
    #[serde(default)]
    struct Inner {
        k: Field<i64>,
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
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Borrowing<'a> {
            #[serde(borrow)]
            s: Field<Cow<'a, str>>,
        }
        let d: Borrowing<'_> = parse_object("{\"s\":\"héllo → 世界\"}".as_bytes()).unwrap();
        assert!(matches!(d.s, Field::Present(Cow::Borrowed("héllo → 世界"))));
        assert_eq!(
            parse_object::<Doc>(b"{\"n\":1,\n\"s\":\"ab\xff\"}").unwrap_err(),
            "invalid JSON at line 2 column 8"
        );
    }
}
