//! Hop-by-hop headers (RFC 9110 §7.6.1): meaningful for one connection only, so removed before
//! a message is forwarded in either direction. Everything else passes through untouched.

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};

/// How many names are always hop-by-hop: `strip` marks those present in a `u16`.
const FIXED: usize = 9;
const _: () = assert!(FIXED <= u16::BITS as usize);

/// Always connection-specific, whether or not `Connection` names them. `Proxy-Authorization`
/// and `Proxy-Authenticate` are addressed to a proxy, which this one is; `Trailer` announces
/// trailers for the client's framing, not the upstream's.
const HOP_BY_HOP: [HeaderName; FIXED] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the hop-by-hop headers, including any the `Connection` header lists.
///
/// Clients and upstreams alike usually send `Connection: keep-alive` (httpx, undici, nginx), so
/// this runs on most messages: one pass over the names present finds which of the fixed names
/// to remove, the listed names are looked up as they are written (`remove` matches text in any
/// case, without building a `HeaderName`), and nothing is allocated.
pub fn strip(headers: &mut HeaderMap) {
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // A header `Connection` lists only counts when `Connection` itself is present (index 0).
    if present & 1 != 0 {
        // The values are moved out (shared, not copied) so the names they list can be removed;
        // more than one `Connection` line is rare, and only then is a list allocated.
        let mut values = headers.get_all(header::CONNECTION).iter();
        let first = values.next().cloned();
        let rest: Vec<HeaderValue> = values.cloned().collect();
        headers.remove(header::CONNECTION);
        for value in first.iter().chain(&rest) {
            let Ok(value) = value.to_str() else { continue };
            for name in value.split(',') {
                // Not a header name (empty, `close`, stray bytes): matches nothing.
                headers.remove(name.trim());
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate().skip(1) {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The plain reading of the rule, which `strip` must match: every name `Connection` lists,
    /// parsed, and every fixed name, removed.
    fn strip_plainly(headers: &mut HeaderMap) {
        if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
            return;
        }
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in listed.iter().chain(HOP_BY_HOP.iter()) {
            headers.remove(name);
        }
    }

    const NAMES: &[&str] = &[
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
        "x-session-token",
        "x-other",
        "content-type",
        "authorization",
    ];
    /// What a `Connection` line may list: names in any case and spacing, tokens that are not
    /// header names, and nothing.
    const TOKENS: &[&str] = &[
        "keep-alive",
        "Keep-Alive",
        "close",
        " X-Session-Token ",
        "x-other",
        "TE",
        "",
        " upgrade",
        "bad name",
        "content-type",
        "Authorization",
    ];

    fn header_line() -> impl Strategy<Value = (String, Vec<u8>)> {
        let name = proptest::sample::select(NAMES).prop_map(str::to_owned);
        let listed = proptest::collection::vec(proptest::sample::select(TOKENS), 0..4)
            .prop_map(|tokens| tokens.join(",").into_bytes());
        // Bytes a header value may hold that are not text: `to_str` refuses the line.
        let opaque = Just(b"keep-alive, x-other\xff".to_vec());
        (name, prop_oneof![4 => listed, 1 => opaque])
    }

    proptest! {
        #[test]
        fn strip_removes_what_the_plain_reading_removes(
            lines in proptest::collection::vec(header_line(), 0..10),
        ) {
            let mut h = HeaderMap::new();
            for (name, value) in &lines {
                let value = HeaderValue::from_bytes(value).unwrap();
                h.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value);
            }
            let mut want = h.clone();
            strip_plainly(&mut want);
            strip(&mut h);
            prop_assert_eq!(h, want);
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_removed_others_kept() {
        let mut h = headers(&[
            ("connection", "keep-alive, X-Session-Token"),
            ("keep-alive", "timeout=5"),
            ("x-session-token", "abc"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic eA=="),
            ("authorization", "Bearer sk-keep"),
            ("api-key", "keep"),
            ("content-type", "application/json"),
            ("x-request-id", "r1"),
        ]);
        strip(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            vec!["api-key", "authorization", "content-type", "x-request-id"]
        );
    }

    #[test]
    fn without_hop_by_hop_headers_nothing_is_touched() {
        let mut h = headers(&[
            ("x-session-token", "abc"),
            ("content-type", "application/json"),
        ]);
        let before = h.clone();
        strip(&mut h);
        assert_eq!(h, before);
        h.append("keep-alive", "timeout=5".parse().unwrap());
        strip(&mut h);
        assert_eq!(h, before, "a lone hop-by-hop header is still removed");
    }
}
