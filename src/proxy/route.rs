//! Routing: which configured upstream a request goes to, and the URI it goes to there.
//!
//! Owns: the route table (path prefix → upstream; longest prefix wins, on segment
//! boundaries), joining an upstream's base path with the client's path, the provider name per
//! request, and refusing paths that could climb out of a base path. The client never names a
//! host: every URI built here has a configured scheme and authority.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::Uri;
use http::uri::{Authority, Scheme};

use crate::config::{AuthConfig, Config, StreamUsage};
use crate::exchange::Target;
use crate::genai::{inject, provider};
use crate::proxy::credential::Credential;

/// One upstream endpoint.
#[derive(Debug, Clone)]
pub struct Upstream {
    scheme: Scheme,
    authority: Authority,
    /// The URL's path without its trailing slash; client paths are appended to it.
    base_path: String,
    host: Arc<str>,
    port: u16,
    /// `gen_ai.provider.name` for `/models/...` paths and for the rest (equal when configured).
    provider_models: Arc<str>,
    provider_other: Arc<str>,
    stream_usage: StreamUsage,
    /// Set once the upstream answered that it does not accept `stream_options`.
    injection_rejected: Arc<AtomicBool>,
    /// The key the proxy adds for this upstream, if configured.
    credential: Option<Credential>,
}

impl Upstream {
    pub fn new(
        url: &str,
        provider: Option<&str>,
        stream_usage: StreamUsage,
    ) -> Result<Upstream, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let scheme = uri
            .scheme()
            .filter(|s| **s == Scheme::HTTP || **s == Scheme::HTTPS)
            .cloned()
            .ok_or_else(|| format!("{url:?} must start with http:// or https://"))?;
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("{url:?} has no host"))?;
        if uri.query().is_some() {
            return Err(format!("{url:?} must not carry a query string"));
        }
        let port = authority
            .port_u16()
            .unwrap_or(if scheme == Scheme::HTTPS { 443 } else { 80 });
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let base_path = uri.path().trim_end_matches('/').to_owned();
        let (models, other) = match provider {
            Some(p) => (p, p),
            None => (
                provider::infer(host, &format!("{base_path}/models/")),
                provider::infer(host, &base_path),
            ),
        };
        Ok(Upstream {
            host: host.into(),
            port,
            provider_models: models.into(),
            provider_other: other.into(),
            scheme,
            base_path,
            authority,
            stream_usage,
            injection_rejected: Arc::default(),
            credential: None,
        })
    }

    /// Adds the credential `auth` configures; `key` names it in errors.
    fn with_auth(
        mut self,
        auth: Option<&AuthConfig>,
        key: &str,
    ) -> Result<Upstream, (String, String)> {
        if let Some(auth) = auth {
            let azure = self.provider_other.starts_with("azure");
            self.credential = Some(Credential::from_config(auth, key, azure)?);
        }
        Ok(self)
    }

    pub fn credential(&self) -> Option<&Credential> {
        self.credential.as_ref()
    }

    /// Whether to ask this upstream for stream usage the client did not ask for.
    pub fn injects_usage(&self, api_version: Option<&str>) -> bool {
        self.stream_usage == StreamUsage::Inject
            && !self.injection_rejected.load(Ordering::Relaxed)
            && inject::supports_stream_options(api_version)
    }

    /// Stops injecting into this upstream. True the first time.
    pub fn reject_usage_injection(&self) -> bool {
        !self.injection_rejected.swap(true, Ordering::Relaxed)
    }

    /// Where a request with this upstream path goes, for telemetry.
    pub fn target(&self, upstream_path: &str) -> Target {
        let models = upstream_path == "/models" || upstream_path.starts_with("/models/");
        Target {
            provider: if models {
                self.provider_models.clone()
            } else {
                self.provider_other.clone()
            },
            host: self.host.clone(),
            port: self.port,
        }
    }

    /// The upstream URI for a path-and-query already validated by [`Router::route`].
    fn uri_for(&self, path_and_query: &str) -> Option<Uri> {
        let mut joined = String::with_capacity(self.base_path.len() + path_and_query.len());
        joined.push_str(&self.base_path);
        joined.push_str(path_and_query);
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(joined)
            .build()
            .ok()
    }

    pub fn display(&self) -> String {
        format!("{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

#[derive(Debug, Clone)]
struct Route {
    /// Without a trailing slash; never empty (that is the default upstream).
    prefix: String,
    strip: bool,
    upstream: Upstream,
}

/// Where one request goes.
#[derive(Debug)]
pub struct Routed<'a> {
    pub upstream: &'a Upstream,
    pub uri: Uri,
    /// The client's path with any route prefix removed: what operation detection reads.
    pub path: String,
}

/// Why a request cannot be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unroutable {
    /// Not a plain absolute path, or it climbs with dot segments.
    BadPath,
    /// No route matches and there is no default upstream.
    NoRoute,
}

/// The route table, with an optional default upstream for everything else.
#[derive(Debug, Clone)]
pub struct Router {
    routes: Vec<Route>,
    default: Option<Upstream>,
}

impl Router {
    pub fn from_config(config: &Config) -> Result<Router, (String, String)> {
        let default = match &config.upstream.url {
            Some(url) => Some(
                Upstream::new(
                    url,
                    config.upstream.provider.as_deref(),
                    config.upstream.stream_usage,
                )
                .map_err(|m| ("upstream.url".to_owned(), m))?
                .with_auth(config.upstream.auth.as_ref(), "upstream.auth")?,
            ),
            None => None,
        };
        let mut routes = Vec::new();
        for (i, r) in config.routes.iter().enumerate() {
            let upstream = Upstream::new(
                &r.url,
                r.provider
                    .as_deref()
                    .or(config.upstream.provider.as_deref()),
                r.stream_usage.unwrap_or(config.upstream.stream_usage),
            )
            .map_err(|m| (format!("routes[{i}].url"), m))?
            .with_auth(r.auth.as_ref(), &format!("routes[{i}].auth"))?;
            routes.push(Route {
                prefix: r.prefix.trim_end_matches('/').to_owned(),
                strip: r.strip_prefix,
                upstream,
            });
        }
        // Longest prefix first, so `/azure/eu` wins over `/azure`.
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(Router { routes, default })
    }

    /// Every upstream, for the start-up log line.
    pub fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .routes
            .iter()
            .map(|r| format!("{} -> {}", r.prefix, r.upstream.display()))
            .collect();
        if let Some(d) = &self.default {
            out.push(format!("* -> {}", d.display()));
        }
        out
    }

    /// Every upstream's credential, if any (to keep key files current).
    pub fn credentials(&self) -> impl Iterator<Item = &Credential> {
        self.routes
            .iter()
            .map(|r| &r.upstream)
            .chain(&self.default)
            .filter_map(Upstream::credential)
    }

    pub fn route(&self, path: &str, query: Option<&str>) -> Result<Routed<'_>, Unroutable> {
        if !path.starts_with('/') || has_dot_segment(path) {
            return Err(Unroutable::BadPath);
        }
        let matched = self.routes.iter().find(|r| {
            path.strip_prefix(&r.prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        });
        let (upstream, rest) = match matched {
            Some(r) if r.strip => {
                let rest = &path[r.prefix.len()..];
                (&r.upstream, if rest.is_empty() { "/" } else { rest })
            }
            Some(r) => (&r.upstream, path),
            None => (self.default.as_ref().ok_or(Unroutable::NoRoute)?, path),
        };
        let mut pq = String::with_capacity(rest.len() + query.map_or(0, |q| q.len() + 1));
        pq.push_str(rest);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        let uri = upstream.uri_for(&pq).ok_or(Unroutable::BadPath)?;
        Ok(Routed {
            upstream,
            uri,
            path: rest.to_owned(),
        })
    }
}

/// `.` or `..` segments, plain or percent-encoded, between `/`, `\` or their encodings (some
/// servers decode `%2F` or treat a backslash as a separator): they could climb out of the base
/// path.
fn has_dot_segment(path: &str) -> bool {
    // The usual path has none of these: no allocation for it.
    if !path.bytes().any(|b| matches!(b, b'.' | b'%' | b'\\')) {
        return false;
    }
    let decoded = path
        .replace("%2e", ".")
        .replace("%2E", ".")
        .replace("%2f", "/")
        .replace("%2F", "/")
        .replace("%5c", "/")
        .replace("%5C", "/")
        .replace('\\', "/");
    decoded
        .split('/')
        .any(|segment| segment == "." || segment == "..")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteConfig;

    fn router(default: Option<&str>, routes: &[(&str, &str, bool)]) -> Router {
        let mut config = Config::default();
        config.upstream.url = default.map(str::to_owned);
        config.routes = routes
            .iter()
            .map(|(prefix, url, strip)| RouteConfig {
                prefix: (*prefix).to_owned(),
                url: (*url).to_owned(),
                provider: None,
                strip_prefix: *strip,
                stream_usage: None,
                auth: None,
            })
            .collect();
        Router::from_config(&config).unwrap()
    }

    fn uri(r: &Router, path: &str, query: Option<&str>) -> String {
        r.route(path, query).unwrap().uri.to_string()
    }

    #[test]
    fn base_path_is_joined_with_the_client_path_and_query() {
        let r = router(Some("https://x.services.ai.azure.com/openai/v1/"), &[]);
        assert_eq!(
            uri(&r, "/chat/completions", Some("api-version=2024-10-21")),
            "https://x.services.ai.azure.com/openai/v1/chat/completions?api-version=2024-10-21"
        );
        let routed = r.route("/chat/completions", None).unwrap();
        let target = routed.upstream.target("/openai/v1/chat/completions");
        assert_eq!(
            (&*target.host, target.port),
            ("x.services.ai.azure.com", 443)
        );
        assert_eq!(&*target.provider, "azure.ai.openai");
    }

    #[test]
    fn longest_prefix_wins_on_segment_boundaries_and_strips_it() {
        let r = router(
            Some("http://default:1"),
            &[
                ("/azure", "https://a.openai.azure.com", true),
                ("/azure/eu", "https://eu.openai.azure.com", true),
                ("/groq/", "https://api.groq.com/openai", true),
                ("/keep", "http://k:2", false),
            ],
        );
        assert_eq!(
            uri(
                &r,
                "/azure/openai/deployments/d/chat/completions",
                Some("api-version=1")
            ),
            "https://a.openai.azure.com/openai/deployments/d/chat/completions?api-version=1"
        );
        assert_eq!(
            uri(&r, "/azure/eu/openai/responses", None),
            "https://eu.openai.azure.com/openai/responses"
        );
        assert_eq!(
            uri(&r, "/groq/v1/chat/completions", None),
            "https://api.groq.com/openai/v1/chat/completions"
        );
        assert_eq!(
            uri(&r, "/keep/v1/models", None),
            "http://k:2/keep/v1/models"
        );
        assert_eq!(
            uri(&r, "/azurex/v1/models", None),
            "http://default:1/azurex/v1/models"
        );
        assert_eq!(uri(&r, "/azure", None), "https://a.openai.azure.com/");
        let routed = r.route("/groq/v1/chat/completions", None).unwrap();
        assert_eq!(routed.path, "/v1/chat/completions");
        assert_eq!(&*routed.upstream.target(&routed.path).provider, "groq");
    }

    #[test]
    fn without_a_default_unmatched_paths_have_no_route() {
        let r = router(None, &[("/a", "http://a:1", true)]);
        assert_eq!(
            r.route("/b/v1/models", None).unwrap_err(),
            Unroutable::NoRoute
        );
        assert!(r.route("/a/v1/models", None).is_ok());
    }

    #[test]
    fn foundry_models_paths_are_azure_ai_inference() {
        let r = router(Some("https://proj.services.ai.azure.com"), &[]);
        let routed = r
            .route(
                "/models/chat/completions",
                Some("api-version=2024-05-01-preview"),
            )
            .unwrap();
        assert_eq!(
            &*routed.upstream.target("/models/chat/completions").provider,
            "azure.ai.inference"
        );
        assert_eq!(
            &*routed
                .upstream
                .target("/openai/v1/chat/completions")
                .provider,
            "azure.ai.openai"
        );
    }

    #[test]
    fn dot_segments_are_refused_plain_and_encoded() {
        let r = router(
            Some("https://x.example/openai/v1"),
            &[("/a", "http://a:1", true)],
        );
        for bad in [
            "/../admin",
            "/a/./b",
            "/%2e%2e/admin",
            "/a/%2E%2e",
            "/..",
            "relative",
            "/a/..%2fadmin",
            "/a/%2e%2e%2Fadmin",
            "/a/..%5cadmin",
            "/a\\..\\admin",
        ] {
            assert_eq!(
                r.route(bad, None).unwrap_err(),
                Unroutable::BadPath,
                "{bad}"
            );
        }
        assert!(r.route("/v1/files/..x", None).is_ok());
    }

    #[test]
    fn upstream_urls_that_cannot_be_forwarded_to_are_rejected() {
        for bad in ["ftp://x", "https://x/?a=b", "/relative"] {
            assert!(
                Upstream::new(bad, None, StreamUsage::Inject).is_err(),
                "{bad}"
            );
        }
    }
}
