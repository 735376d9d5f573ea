//! Which GenAI operation a request is, from its method and path alone.
//!
//! Owns: the endpoint shapes of OpenAI-compatible APIs (`/v1/...`, Azure
//! `/openai/deployments/{deployment}/...`, `/openai/v1/...`, `/openai/...`, Foundry
//! `/models/...`) and which wire format each speaks. Does not: look at bodies or hosts.

use http::Method;

/// `gen_ai.operation.name` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Chat,
    TextCompletion,
    Embeddings,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Chat => "chat",
            Operation::TextCompletion => "text_completion",
            Operation::Embeddings => "embeddings",
        }
    }
}

/// The wire format of an endpoint; several map to one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    ChatCompletions,
    Responses,
    Completions,
    Embeddings,
}

impl Api {
    pub fn operation(self) -> Operation {
        match self {
            Api::ChatCompletions | Api::Responses => Operation::Chat,
            Api::Completions => Operation::TextCompletion,
            Api::Embeddings => Operation::Embeddings,
        }
    }

    /// `openai.api.type`, for the APIs the conventions name.
    pub fn openai_api_type(self) -> Option<&'static str> {
        match self {
            Api::ChatCompletions => Some("chat_completions"),
            Api::Responses => Some("responses"),
            Api::Completions | Api::Embeddings => None,
        }
    }
}

/// A request recognised as a GenAI operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detected<'a> {
    pub api: Api,
    /// The Azure OpenAI deployment named in the path, the model when the body names none.
    pub deployment: Option<&'a str>,
}

/// Recognises an operation from the request line. `path` excludes the query string.
pub fn detect<'a>(method: &Method, path: &'a str) -> Option<Detected<'a>> {
    if method != Method::POST {
        return None;
    }
    let path = path.strip_suffix('/').unwrap_or(path);
    // `/chat/completions` also ends in `/completions`: the longer shape first.
    let (api, head) = [
        ("/chat/completions", Api::ChatCompletions),
        ("/completions", Api::Completions),
        ("/embeddings", Api::Embeddings),
        ("/responses", Api::Responses),
    ]
    .into_iter()
    .find_map(|(suffix, api)| path.strip_suffix(suffix).map(|head| (api, head)))?;
    Some(Detected {
        api,
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

    fn post(path: &str) -> Option<(Api, Option<&str>)> {
        detect(&Method::POST, path).map(|d| (d.api, d.deployment))
    }

    #[test]
    fn every_endpoint_shape_of_every_operation() {
        let cases = [
            ("/v1/chat/completions", Api::ChatCompletions, None),
            ("/chat/completions", Api::ChatCompletions, None),
            ("/openai/v1/chat/completions", Api::ChatCompletions, None),
            ("/models/chat/completions", Api::ChatCompletions, None),
            ("/v1/chat/completions/", Api::ChatCompletions, None),
            (
                "/openai/deployments/gpt-4o-prod/chat/completions",
                Api::ChatCompletions,
                Some("gpt-4o-prod"),
            ),
            ("/v1/responses", Api::Responses, None),
            ("/openai/responses", Api::Responses, None),
            ("/openai/v1/responses", Api::Responses, None),
            ("/v1/embeddings", Api::Embeddings, None),
            ("/models/embeddings", Api::Embeddings, None),
            (
                "/openai/deployments/ada/embeddings",
                Api::Embeddings,
                Some("ada"),
            ),
            ("/v1/completions", Api::Completions, None),
            (
                "/openai/deployments/instruct/completions",
                Api::Completions,
                Some("instruct"),
            ),
        ];
        for (path, api, deployment) in cases {
            assert_eq!(post(path), Some((api, deployment)), "{path}");
        }
    }

    #[test]
    fn operations_and_api_types() {
        assert_eq!(Api::Responses.operation(), Operation::Chat);
        assert_eq!(Api::Completions.operation().as_str(), "text_completion");
        assert_eq!(Api::Embeddings.operation().as_str(), "embeddings");
        assert_eq!(Api::Responses.openai_api_type(), Some("responses"));
        assert_eq!(Api::Embeddings.openai_api_type(), None);
    }

    #[test]
    fn other_paths_and_methods_are_not_operations() {
        for path in [
            "/v1/models",
            "/v1/chat/completions/abc",
            "/v1/chat/completionsx",
            "/v1/responses/resp_123",
            "/v1/responses/resp_123/cancel",
            "/v1/files",
            "/v1/audio/speech",
            "/v1/images/generations",
        ] {
            assert_eq!(post(path), None, "{path}");
        }
        assert_eq!(detect(&Method::GET, "/v1/chat/completions"), None);
        assert_eq!(detect(&Method::GET, "/v1/responses"), None);
    }
}
