//! `gen_ai.provider.name` from where a request goes: the upstream host, and for Azure AI
//! Foundry hosts the path (`/models/...` is Azure AI Inference, `/openai/...` Azure OpenAI).
//!
//! Owns: the table of well-known OpenAI-compatible endpoints and the conventions' provider
//! names for them. Anything unknown speaks the OpenAI API and is reported as `openai`;
//! configuration overrides the inference per upstream.

/// Provider names from the conventions' well-known values.
pub const OPENAI: &str = "openai";
pub const AZURE_OPENAI: &str = "azure.ai.openai";
pub const AZURE_INFERENCE: &str = "azure.ai.inference";

/// The provider for a request to `host` with the upstream path `path`.
pub fn infer(host: &str, path: &str) -> &'static str {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let is = |suffix: &str| host == suffix[1..] || host.ends_with(suffix);
    let models_path = path == "/models" || path.starts_with("/models/");
    if is(".openai.azure.com") || is(".cognitiveservices.azure.com") {
        return if models_path {
            AZURE_INFERENCE
        } else {
            AZURE_OPENAI
        };
    }
    if is(".services.ai.azure.com") {
        return if models_path {
            AZURE_INFERENCE
        } else {
            AZURE_OPENAI
        };
    }
    if is(".inference.ai.azure.com") || is(".models.ai.azure.com") {
        return AZURE_INFERENCE;
    }
    let known: &[(&str, &'static str)] = &[
        (".anthropic.com", "anthropic"),
        (".mistral.ai", "mistral_ai"),
        (".deepseek.com", "deepseek"),
        (".groq.com", "groq"),
        (".x.ai", "x_ai"),
        (".perplexity.ai", "perplexity"),
        (".cohere.com", "cohere"),
        (".cohere.ai", "cohere"),
        ("generativelanguage.googleapis.com", "gcp.gemini"),
        ("aiplatform.googleapis.com", "gcp.vertex_ai"),
    ];
    for (suffix, provider) in known {
        if host.ends_with(suffix) || host == suffix.trim_start_matches('.') {
            return provider;
        }
    }
    if host.starts_with("bedrock-runtime.") && host.ends_with(".amazonaws.com") {
        return "aws.bedrock";
    }
    OPENAI
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_and_azure_flavours() {
        assert_eq!(infer("api.openai.com", "/v1/chat/completions"), "openai");
        assert_eq!(
            infer(
                "my-res.openai.azure.com",
                "/openai/deployments/x/chat/completions"
            ),
            "azure.ai.openai"
        );
        assert_eq!(
            infer("proj.services.ai.azure.com", "/openai/v1/responses"),
            "azure.ai.openai"
        );
        assert_eq!(
            infer("proj.services.ai.azure.com", "/models/chat/completions"),
            "azure.ai.inference"
        );
        assert_eq!(
            infer("x.eastus2.models.ai.azure.com", "/chat/completions"),
            "azure.ai.inference"
        );
        assert_eq!(infer("MY-RES.OpenAI.Azure.com.", "/"), "azure.ai.openai");
    }

    #[test]
    fn other_compatible_providers_and_the_default() {
        assert_eq!(infer("api.groq.com", "/openai/v1/chat/completions"), "groq");
        assert_eq!(infer("api.deepseek.com", "/chat/completions"), "deepseek");
        assert_eq!(
            infer("api.mistral.ai", "/v1/chat/completions"),
            "mistral_ai"
        );
        assert_eq!(infer("api.x.ai", "/v1/chat/completions"), "x_ai");
        assert_eq!(
            infer(
                "generativelanguage.googleapis.com",
                "/v1beta/openai/chat/completions"
            ),
            "gcp.gemini"
        );
        assert_eq!(
            infer(
                "bedrock-runtime.us-east-1.amazonaws.com",
                "/openai/v1/chat/completions"
            ),
            "aws.bedrock"
        );
        assert_eq!(infer("127.0.0.1", "/v1/chat/completions"), "openai");
        assert_eq!(infer("evil-openai.azure.com.attacker.net", "/"), "openai");
    }
}
