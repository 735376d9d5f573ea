//! Every attribute name genai-tap emits, in one place, pinned to the OpenTelemetry semantic
//! conventions v1.41 (`../shared/SEMCONV.md`). The `opentelemetry-semantic-conventions` crate
//! only has these as deprecated items, so they are kept here.

/// The schema the names below belong to.
pub const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.41.0";

pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
pub const GEN_AI_PROVIDER_NAME: &str = "gen_ai.provider.name";
pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
pub const GEN_AI_REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
pub const GEN_AI_REQUEST_TEMPERATURE: &str = "gen_ai.request.temperature";
pub const GEN_AI_REQUEST_TOP_P: &str = "gen_ai.request.top_p";
pub const GEN_AI_REQUEST_FREQUENCY_PENALTY: &str = "gen_ai.request.frequency_penalty";
pub const GEN_AI_REQUEST_PRESENCE_PENALTY: &str = "gen_ai.request.presence_penalty";
pub const GEN_AI_REQUEST_STOP_SEQUENCES: &str = "gen_ai.request.stop_sequences";
pub const GEN_AI_REQUEST_SEED: &str = "gen_ai.request.seed";
pub const GEN_AI_REQUEST_CHOICE_COUNT: &str = "gen_ai.request.choice.count";
pub const GEN_AI_REQUEST_STREAM: &str = "gen_ai.request.stream";
pub const GEN_AI_OUTPUT_TYPE: &str = "gen_ai.output.type";
pub const GEN_AI_RESPONSE_ID: &str = "gen_ai.response.id";
pub const GEN_AI_RESPONSE_MODEL: &str = "gen_ai.response.model";
pub const GEN_AI_RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
pub const GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: &str = "gen_ai.response.time_to_first_chunk";
pub const GEN_AI_USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
pub const GEN_AI_USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
pub const GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: &str = "gen_ai.usage.cache_read.input_tokens";
pub const GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: &str = "gen_ai.usage.reasoning.output_tokens";

pub const OPENAI_API_TYPE: &str = "openai.api.type";
pub const OPENAI_REQUEST_SERVICE_TIER: &str = "openai.request.service_tier";
pub const OPENAI_RESPONSE_SERVICE_TIER: &str = "openai.response.service_tier";
pub const OPENAI_RESPONSE_SYSTEM_FINGERPRINT: &str = "openai.response.system_fingerprint";

pub const SERVER_ADDRESS: &str = "server.address";
pub const SERVER_PORT: &str = "server.port";
pub const ERROR_TYPE: &str = "error.type";
pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";

pub const SERVICE_NAME: &str = "service.name";

/// genai-tap's own attributes, for what the conventions have no name for.
pub const GENAI_TAP_REQUEST_PARSE_ERROR: &str = "genai_tap.request.parse_error";
pub const GENAI_TAP_RESPONSE_PARSE_ERROR: &str = "genai_tap.response.parse_error";

pub const GEN_AI_CONVERSATION_ID: &str = "gen_ai.conversation.id";
pub const GEN_AI_REQUEST_ENCODING_FORMATS: &str = "gen_ai.request.encoding_formats";
pub const GEN_AI_EMBEDDINGS_DIMENSION_COUNT: &str = "gen_ai.embeddings.dimension.count";

/// Opt-in content, JSON-encoded in the conventions' message form.
pub const GEN_AI_INPUT_MESSAGES: &str = "gen_ai.input.messages";
pub const GEN_AI_OUTPUT_MESSAGES: &str = "gen_ai.output.messages";
pub const GEN_AI_SYSTEM_INSTRUCTIONS: &str = "gen_ai.system_instructions";
pub const GEN_AI_TOOL_DEFINITIONS: &str = "gen_ai.tool.definitions";

/// The event that carries content when it is captured as an event.
pub const GEN_AI_CLIENT_INFERENCE_OPERATION_DETAILS: &str =
    "gen_ai.client.inference.operation.details";

/// Names of the tools offered (not content: identifiers the developer chose).
pub const GENAI_TAP_REQUEST_TOOLS: &str = "genai_tap.request.tools";
/// Names of the tools the model called, in order.
pub const GENAI_TAP_RESPONSE_TOOL_CALLS: &str = "genai_tap.response.tool_calls";
/// Some captured content did not fit the byte budget and was cut.
pub const GENAI_TAP_CONTENT_TRUNCATED: &str = "genai_tap.content.truncated";
/// Azure content filtering: whether anything was filtered, and which categories were
/// filtered or detected.
pub const GENAI_TAP_CONTENT_FILTER_FILTERED: &str = "genai_tap.content_filter.filtered";
pub const GENAI_TAP_CONTENT_FILTER_CATEGORIES: &str = "genai_tap.content_filter.categories";
/// Request identifiers from the upstream's response headers, for support cases.
pub const GENAI_TAP_UPSTREAM_REQUEST_ID: &str = "genai_tap.upstream.request_id";
pub const GENAI_TAP_UPSTREAM_APIM_REQUEST_ID: &str = "genai_tap.upstream.apim_request_id";
pub const GENAI_TAP_UPSTREAM_REGION: &str = "genai_tap.upstream.region";
/// The proxy asked for the stream's usage on the client's behalf (and hid it from the client).
pub const GENAI_TAP_USAGE_INJECTED: &str = "genai_tap.usage.injected";

// Metrics, v1.41 names.
pub const GEN_AI_CLIENT_OPERATION_DURATION: &str = "gen_ai.client.operation.duration";
pub const GEN_AI_CLIENT_TOKEN_USAGE: &str = "gen_ai.client.token.usage";
pub const GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK: &str =
    "gen_ai.client.operation.time_to_first_chunk";
pub const GEN_AI_CLIENT_OPERATION_TIME_PER_OUTPUT_CHUNK: &str =
    "gen_ai.client.operation.time_per_output_chunk";
pub const GEN_AI_TOKEN_TYPE: &str = "gen_ai.token.type";

// Metrics, the GenAI repository's unreleased names (behind `telemetry.semconv = "latest"`).
pub const GEN_AI_CLIENT_INFERENCE_DURATION: &str = "gen_ai.client.inference.duration";
pub const GEN_AI_CLIENT_INFERENCE_TIME_TO_FIRST_CHUNK: &str =
    "gen_ai.client.inference.time_to_first_chunk";
pub const GEN_AI_CLIENT_INFERENCE_TIME_PER_OUTPUT_CHUNK: &str =
    "gen_ai.client.inference.time_per_output_chunk";
pub const GEN_AI_CLIENT_INFERENCE_USAGE_INPUT_TOKENS: &str =
    "gen_ai.client.inference.usage.input_tokens";
pub const GEN_AI_CLIENT_INFERENCE_USAGE_OUTPUT_TOKENS: &str =
    "gen_ai.client.inference.usage.output_tokens";

/// The time the proxy added to a request, the upstream's time excluded.
pub const GENAI_TAP_PROXY_OVERHEAD: &str = "genai_tap.proxy.overhead";
/// Rate-limit headroom from the upstream's response headers.
pub const GENAI_TAP_RATELIMIT_REMAINING_TOKENS: &str =
    "genai_tap.upstream.ratelimit.remaining_tokens";
pub const GENAI_TAP_RATELIMIT_REMAINING_REQUESTS: &str =
    "genai_tap.upstream.ratelimit.remaining_requests";
