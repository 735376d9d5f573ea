//! Which GenAI operation a request is, from its method and path alone.
//!
//! Owns: the endpoint shapes of OpenAI-compatible APIs (`/v1/...`, Azure
//! `/openai/deployments/{deployment}/...`, `/openai/v1/...`). Does not: look at bodies or hosts.

use http::Method;

/// `gen_ai.operation.name` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Chat,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Chat => "chat",
        }
    }
}

/// A request recognised as a GenAI operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detected<'a> {
    pub operation: Operation,
    /// The Azure OpenAI deployment named in the path, the model when the body names none.
    pub deployment: Option<&'a str>,
}

/// Recognises an operation from the request line. `path` excludes the query string.
pub fn detect<'a>(method: &Method, path: &'a str) -> Option<Detected<'a>> {
    if method != Method::POST {
        return None;
    }
    let path = path.strip_suffix('/').unwrap_or(path);
    let head = path.strip_suffix("/chat/completions")?;
    Some(Detected {
        operation: Operation::Chat,
        deployment: deployment(head),
    })
}

/// The `{deployment}` of a path prefix ending in `/deployments/{deployment}`.
fn deployment(head: &str) -> Option<&str> {
    let (rest, name) = head.rsplit_once('/')?;
    (rest.ends_with("/deployments") && !name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(path: &str) -> Option<Detected<'_>> {
        detect(&Method::POST, path)
    }

    #[test]
    fn chat_completions_in_every_endpoint_shape() {
        for path in [
            "/v1/chat/completions",
            "/chat/completions",
            "/openai/v1/chat/completions",
            "/models/chat/completions",
            "/v1/chat/completions/",
        ] {
            assert_eq!(
                chat(path),
                Some(Detected {
                    operation: Operation::Chat,
                    deployment: None
                }),
                "{path}"
            );
        }
    }

    #[test]
    fn azure_deployment_is_taken_from_the_path() {
        let d = chat("/openai/deployments/gpt-4o-prod/chat/completions").unwrap();
        assert_eq!(d.deployment, Some("gpt-4o-prod"));
    }

    #[test]
    fn other_paths_and_methods_are_not_operations() {
        assert_eq!(chat("/v1/models"), None);
        assert_eq!(chat("/v1/chat/completions/abc"), None);
        assert_eq!(chat("/v1/chat/completionsx"), None);
        assert_eq!(detect(&Method::GET, "/v1/chat/completions"), None);
    }
}
