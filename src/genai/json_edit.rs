//! Byte-exact edits of a JSON object's top-level members.
//!
//! Owns: locating a member (its key, its value, the span to remove with its comma) without
//! re-serialising anything, so an edit changes exactly the bytes it means to and every other
//! byte (whitespace, number formatting, key order, escapes) stays as the client or upstream
//! wrote it. Does not: validate JSON beyond what finding members needs; callers only edit
//! documents serde has already read.

use std::ops::Range;

/// One top-level member of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The key's text between its quotes, escapes left as written.
    pub key: Range<usize>,
    pub value: Range<usize>,
}

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

    #[test]
    fn escaped_keys_are_detected() {
        let b = br#"{"\u0075sage":null,"a":1}"#;
        let (_, ms) = members(b).unwrap();
        assert!(has_escaped_key(b, &ms));
        assert!(find(b, &ms, "usage").is_none());
    }
}
