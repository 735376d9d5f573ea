//! Upstream credential injection: the sidecar holds the model key, so the app needs none.
//!
//! Owns: the key (from configuration, i.e. an env var filled from a Secret, or from a file
//! re-read when it changes), the header it goes in (`api-key` for Azure, else
//! `Authorization: Bearer`), and when it is added: only when the client sent no credential of
//! its own, unless configured to replace one (official SDKs refuse to start without *some*
//! key). The value is marked sensitive (never HPACK-indexed), never logged, and never
//! exported: the header allowlist refuses credential headers. Does not: choose the upstream.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};

use crate::config::{AuthConfig, AuthHeader};
use crate::reload::Watched;
use crate::stats::Stats;

const API_KEY: HeaderName = HeaderName::from_static("api-key");

#[derive(Debug, Clone)]
enum Key {
    Fixed(HeaderValue),
    File(Arc<Watched<HeaderValue>>),
}

/// One upstream's credential and how it is added.
#[derive(Debug, Clone)]
pub struct Credential {
    header: HeaderName,
    key: Key,
    replace: bool,
}

/// The header value for a raw key, or why the key cannot be one.
fn header_value(header: &HeaderName, key: &str) -> Result<HeaderValue, String> {
    let key = key.trim();
    if key.is_empty() {
        return Err("the key is empty".to_owned());
    }
    let text = if *header == AUTHORIZATION {
        format!("Bearer {key}")
    } else {
        key.to_owned()
    };
    // Deliberately not the parser's message: nothing about the key's bytes may be printed.
    let mut value = HeaderValue::from_str(&text)
        .map_err(|_| "the key holds characters a header cannot carry".to_owned())?;
    value.set_sensitive(true);
    Ok(value)
}

fn read_key(header: &HeaderName, path: &PathBuf) -> Result<HeaderValue, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    header_value(header, &text).map_err(|m| format!("{}: {m}", path.display()))
}

impl Credential {
    /// Builds the credential `auth` describes; `key` names it in errors (`upstream.auth`).
    /// `azure` picks the default header: Azure endpoints take `api-key`.
    pub fn from_config(
        auth: &AuthConfig,
        key: &str,
        azure: bool,
    ) -> Result<Credential, (String, String)> {
        let header = match auth.header {
            Some(AuthHeader::ApiKey) => API_KEY,
            Some(AuthHeader::Authorization) => AUTHORIZATION,
            None if azure => API_KEY,
            None => AUTHORIZATION,
        };
        let source = match (&auth.key, &auth.key_file) {
            (Some(raw), None) => {
                Key::Fixed(header_value(&header, raw).map_err(|m| (format!("{key}.key"), m))?)
            }
            (None, Some(path)) => {
                let (h, p) = (header.clone(), path.clone());
                Key::File(
                    Watched::new("upstream credential", vec![path.clone()], move || {
                        read_key(&h, &p)
                    })
                    .map_err(|m| (format!("{key}.key_file"), m))?,
                )
            }
            (Some(_), Some(_)) => {
                return Err((
                    key.to_owned(),
                    "set either key or key_file, not both".to_owned(),
                ));
            }
            (None, None) => {
                return Err((
                    key.to_owned(),
                    "needs key (e.g. GENAI_TAP_UPSTREAM__AUTH__KEY from a Secret) or key_file"
                        .to_owned(),
                ));
            }
        };
        Ok(Credential {
            header,
            key: source,
            replace: auth.replace,
        })
    }

    /// Re-reads a key file when it changes (nothing to do for a fixed key).
    pub fn spawn_reloader(&self, interval: Duration, stats: Arc<Stats>) {
        if let Key::File(watched) = &self.key {
            watched.spawn_reloader(interval, stats);
        }
    }

    /// Adds the credential unless the client brought one (or replaces it when configured).
    /// True when it was added.
    pub fn apply(&self, headers: &mut HeaderMap) -> bool {
        let brought = headers.contains_key(AUTHORIZATION) || headers.contains_key(&API_KEY);
        if brought && !self.replace {
            return false;
        }
        headers.remove(AUTHORIZATION);
        headers.remove(&API_KEY);
        let value = match &self.key {
            Key::Fixed(v) => v.clone(),
            Key::File(w) => (*w.get()).clone(),
        };
        headers.insert(self.header.clone(), value);
        true
    }

    /// For the start-up line: which header, never the key.
    pub fn describe(&self) -> String {
        let from = match self.key {
            Key::Fixed(_) => "configuration",
            Key::File(_) => "file",
        };
        format!("{} from {from}", self.header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(key: Option<&str>, file: Option<PathBuf>, replace: bool) -> AuthConfig {
        AuthConfig {
            header: None,
            key: key.map(str::to_owned),
            key_file: file,
            replace,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn added_as_a_bearer_token_when_the_client_sent_none() {
        let c =
            Credential::from_config(&auth(Some(" sk-1\n"), None, false), "upstream.auth", false)
                .unwrap();
        let mut h = headers(&[("content-type", "application/json")]);
        assert!(c.apply(&mut h));
        assert_eq!(h["authorization"], "Bearer sk-1");
        assert!(h["authorization"].is_sensitive());
    }

    #[test]
    fn azure_upstreams_get_an_api_key_header() {
        let c =
            Credential::from_config(&auth(Some("k"), None, false), "upstream.auth", true).unwrap();
        let mut h = HeaderMap::new();
        assert!(c.apply(&mut h));
        assert_eq!(h["api-key"], "k");
        assert!(!h.contains_key("authorization"));
    }

    #[test]
    fn a_client_credential_is_kept_unless_replacing_is_configured() {
        let keep =
            Credential::from_config(&auth(Some("k"), None, false), "upstream.auth", true).unwrap();
        for sent in [("authorization", "Bearer app"), ("api-key", "app")] {
            let mut h = headers(&[sent]);
            assert!(!keep.apply(&mut h));
            assert_eq!(h[sent.0], sent.1);
        }
        let replace =
            Credential::from_config(&auth(Some("k"), None, true), "upstream.auth", true).unwrap();
        let mut h = headers(&[("authorization", "Bearer placeholder")]);
        assert!(replace.apply(&mut h));
        assert_eq!(h["api-key"], "k");
        assert!(
            !h.contains_key("authorization"),
            "the app's placeholder is gone"
        );
    }

    #[test]
    fn bad_keys_are_refused_naming_the_key_but_not_its_value() {
        let err = Credential::from_config(&auth(Some("  "), None, false), "routes[1].auth", false)
            .unwrap_err();
        assert_eq!(err.0, "routes[1].auth.key");
        let err = Credential::from_config(
            &auth(Some("sk-secret\u{7f}x"), None, false),
            "upstream.auth",
            false,
        )
        .unwrap_err();
        assert!(!err.1.contains("sk-secret"), "{err:?}");
        let err =
            Credential::from_config(&auth(None, None, false), "upstream.auth", false).unwrap_err();
        assert_eq!(err.0, "upstream.auth");
        let both = auth(Some("k"), Some("/x".into()), false);
        let err = Credential::from_config(&both, "upstream.auth", false).unwrap_err();
        assert!(err.1.contains("not both"));
        let missing = auth(None, Some("/nonexistent/genai-tap-key".into()), false);
        let err = Credential::from_config(&missing, "upstream.auth", false).unwrap_err();
        assert_eq!(err.0, "upstream.auth.key_file");
        assert!(err.1.contains("/nonexistent/genai-tap-key"), "{err:?}");
    }

    #[test]
    fn a_key_file_is_read_again_after_it_changes() {
        let dir = std::env::temp_dir().join(format!("genai-tap-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("api-key");
        std::fs::write(&path, "first\n").unwrap();
        let c = Credential::from_config(&auth(None, Some(path.clone()), false), "a", true).unwrap();
        let mut h = HeaderMap::new();
        c.apply(&mut h);
        assert_eq!(h["api-key"], "first");
        let next = dir.join("api-key.next");
        std::fs::write(&next, "second").unwrap();
        std::fs::rename(&next, &path).unwrap();
        let Key::File(watched) = &c.key else {
            panic!("a file key")
        };
        assert_eq!(watched.check(), Some(Ok(())));
        let mut h = HeaderMap::new();
        c.apply(&mut h);
        assert_eq!(h["api-key"], "second");
    }
}
