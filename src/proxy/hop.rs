//! Hop-by-hop headers (RFC 9110 §7.6.1): meaningful for one connection only, so removed before
//! a message is forwarded in either direction. Everything else passes through untouched.

use http::HeaderMap;
use http::header::{self, HeaderName};

/// Always connection-specific, whether or not `Connection` names them. `Proxy-Authorization`
/// and `Proxy-Authenticate` are addressed to a proxy, which this one is; `Trailer` announces
/// trailers for the client's framing, not the upstream's.
const HOP_BY_HOP: [HeaderName; 9] = [
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
pub fn strip(headers: &mut HeaderMap) {
    // Usually there is none: one pass over the names present, not a lookup per candidate. A
    // header `Connection` lists only counts when `Connection` itself is present.
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

#[cfg(test)]
mod tests {
    use super::*;

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
