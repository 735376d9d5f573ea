//! Configuration: built-in defaults < TOML file < `GENAI_TAP_*` env < standard `OTEL_*` env <
//! command-line flags, validated into one [`Config`].
//!
//! Owns: the schema (every key documented in `config/genai-tap.toml`), the mapping of the
//! OpenTelemetry environment variables onto it, and validation whose errors name the key (and
//! the file or variable it came from). Does not: touch the network or the process environment;
//! the environment arrives as a list of pairs, so tests never mutate global state.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

// The `[redaction]` section's schema lives beside the rule engine that reads it, which builds
// without the proxy (see `fuzz/`).
pub use crate::redact::{RedactionConfig, RuleConfig};

/// The default proxy port: clear of apps' usual 3000/5000/8080 and of OTLP's 4317/4318.
pub const DEFAULT_PORT: u16 = 7420;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(Box<figment::Error>),
    #[error("invalid `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the proxy listens on (loopback by default: a sidecar shares the pod's network).
    pub listen: SocketAddr,
    /// The default upstream, and settings every route shares.
    pub upstream: UpstreamConfig,
    /// More upstreams, chosen by path prefix.
    pub routes: Vec<RouteConfig>,
    pub telemetry: TelemetryConfig,
    pub capture: CaptureConfig,
    pub redaction: RedactionConfig,
    pub limits: LimitsConfig,
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            upstream: UpstreamConfig::default(),
            routes: Vec::new(),
            telemetry: TelemetryConfig::default(),
            capture: CaptureConfig::default(),
            redaction: RedactionConfig::default(),
            limits: LimitsConfig::default(),
            server: ServerConfig::default(),
            admin: AdminConfig::default(),
            log: LogConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL every request is forwarded to; it may carry a base path.
    pub url: Option<String>,
    /// `gen_ai.provider.name` for this upstream.
    pub provider: Option<String>,
    /// Extra PEM CA certificates to trust, on top of the Mozilla roots.
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Dur,
    /// Time allowed for the upstream's response headers (model calls can think for minutes).
    pub response_timeout: Dur,
    /// Longest silence allowed in the middle of a response body (a stalled stream); 0: none.
    pub body_idle_timeout: Dur,
    pub pool_idle_timeout: Dur,
    /// Token usage for streams whose client did not ask for it.
    pub stream_usage: StreamUsage,
    /// PEM client certificate (chain) presented to upstreams that ask for one (mutual TLS);
    /// reloaded when it changes. Needs `client_key_file`.
    pub client_cert_file: Option<PathBuf>,
    /// The PEM private key of `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
    /// A credential the proxy adds for this upstream, so the app needs no key.
    pub auth: Option<AuthConfig>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            url: None,
            provider: None,
            ca_file: None,
            connect_timeout: Dur::secs(10),
            response_timeout: Dur::secs(600),
            body_idle_timeout: Dur::secs(600),
            pool_idle_timeout: Dur::secs(90),
            stream_usage: StreamUsage::Inject,
            client_cert_file: None,
            client_key_file: None,
            auth: None,
        }
    }
}

/// What to do about streamed chat requests that do not ask for usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StreamUsage {
    /// Ask the upstream for usage and remove every trace of it from what the client receives.
    #[default]
    Inject,
    /// Never modify a request; such streams carry no token counts.
    Passthrough,
}

/// An upstream chosen by path prefix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Requests whose path starts with this (on a segment boundary) take this route.
    pub prefix: String,
    pub url: String,
    #[serde(default)]
    pub provider: Option<String>,
    /// Remove the prefix before appending the path to `url` (the prefix only routes).
    #[serde(default = "yes")]
    pub strip_prefix: bool,
    #[serde(default)]
    pub stream_usage: Option<StreamUsage>,
    /// This route's own credential; never inherited from `[upstream.auth]`, so a key cannot
    /// reach a host it was not configured for.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
}

/// An upstream credential added by the proxy (see `proxy::credential`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `api-key` or `authorization` (sent as `Bearer <key>`); by default `api-key` for Azure
    /// endpoints and `authorization` for the rest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<AuthHeader>,
    /// The key itself, best from a Secret through `GENAI_TAP_UPSTREAM__AUTH__KEY`; masked by
    /// `check-config`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A file holding the key (a mounted Secret), read again whenever it changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Also replace a credential the client sent (for SDKs that insist on a placeholder key).
    /// Off: the key is added only to requests that carry no `authorization` or `api-key`.
    pub replace: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthHeader {
    ApiKey,
    Authorization,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExporterKind {
    Otlp,
    Console,
    /// Azure Application Insights, straight from a connection string.
    #[serde(rename = "applicationinsights")]
    ApplicationInsights,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OtlpProtocol {
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Where spans go. Empty: OTLP when an endpoint is configured, else the console.
    pub exporters: Vec<ExporterKind>,
    /// `service.name`; `genai-tap` when unset.
    pub service_name: Option<String>,
    pub resource_attributes: BTreeMap<String, String>,
    pub otlp: OtlpConfig,
    pub batch: BatchConfig,
    pub metrics: MetricsConfig,
    pub applicationinsights: AppInsightsConfig,
    /// `OTEL_TRACES_SAMPLER`: which exchanges get a span (metrics count every one).
    pub sampler: SamplerKind,
    /// `OTEL_TRACES_SAMPLER_ARG`: the ratio for the `traceidratio` samplers.
    pub sampler_arg: Option<f64>,
    /// Send the proxy span's `traceparent` upstream, so server-side spans nest under it.
    pub propagate: bool,
    /// A request header whose value is `gen_ai.conversation.id`.
    pub conversation_id_header: Option<String>,
    /// `baggage` members copied onto spans as attributes (values redacted). Others are ignored.
    pub baggage_attributes: Vec<String>,
    /// Metric names: the released conventions, or the GenAI repository's unreleased renames.
    pub semconv: SemconvVersion,
    /// The scheduling priority of the thread that encodes and sends telemetry.
    pub export_priority: ExportPriority,
}

/// How the telemetry export thread competes for CPU with the serving threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ExportPriority {
    /// Like every other thread of the process.
    #[default]
    Normal,
    /// Linux's `SCHED_IDLE`: the thread runs when no other thread of the machine (or the
    /// container's CPU share) wants the CPU, and a serving thread that wakes takes the CPU from
    /// it at once. Batches then never delay forwarding; under sustained CPU saturation export
    /// waits, and spans beyond the queue are dropped (and counted).
    Idle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SemconvVersion {
    #[default]
    #[serde(rename = "1.41")]
    V1_41,
    #[serde(rename = "latest")]
    Latest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    AlwaysOn,
    AlwaysOff,
    #[serde(rename = "traceidratio")]
    TraceIdRatio,
    #[default]
    ParentbasedAlwaysOn,
    ParentbasedAlwaysOff,
    #[serde(rename = "parentbased_traceidratio")]
    ParentbasedTraceIdRatio,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Temporality {
    #[default]
    Cumulative,
    Delta,
    LowMemory,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where metrics go. Empty: wherever spans go (the console prints none).
    pub exporters: Vec<ExporterKind>,
    /// `OTEL_METRIC_EXPORT_INTERVAL`.
    pub interval: Dur,
    /// `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`.
    pub temporality: Temporality,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            exporters: Vec::new(),
            interval: Dur::secs(60),
            temporality: Temporality::Cumulative,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AppInsightsConfig {
    /// `APPLICATIONINSIGHTS_CONNECTION_STRING`; masked by check-config.
    pub connection_string: Option<String>,
    /// Extra PEM CA certificates for the ingestion endpoint (a TLS-inspecting proxy, say).
    pub ca_file: Option<PathBuf>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            exporters: Vec::new(),
            service_name: None,
            resource_attributes: BTreeMap::new(),
            otlp: OtlpConfig::default(),
            batch: BatchConfig::default(),
            metrics: MetricsConfig::default(),
            applicationinsights: AppInsightsConfig::default(),
            sampler: SamplerKind::default(),
            sampler_arg: None,
            propagate: true,
            conversation_id_header: None,
            baggage_attributes: Vec::new(),
            semconv: SemconvVersion::V1_41,
            export_priority: ExportPriority::Normal,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpConfig {
    /// Base endpoint; `/v1/traces` is appended for HTTP.
    pub endpoint: Option<String>,
    /// Full traces endpoint, used as is.
    pub traces_endpoint: Option<String>,
    /// Full logs endpoint (content captured as events), used as is.
    pub logs_endpoint: Option<String>,
    /// Full metrics endpoint, used as is.
    pub metrics_endpoint: Option<String>,
    pub protocol: OtlpProtocol,
    /// Sent with every export (e.g. an API key); masked by `check-config`.
    pub headers: BTreeMap<String, String>,
    pub timeout: Dur,
    /// Extra PEM CA certificates for an https endpoint.
    pub ca_file: Option<PathBuf>,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            endpoint: None,
            traces_endpoint: None,
            logs_endpoint: None,
            metrics_endpoint: None,
            protocol: OtlpProtocol::HttpProtobuf,
            headers: BTreeMap::new(),
            timeout: Dur::secs(10),
            ca_file: None,
        }
    }
}

impl OtlpConfig {
    pub fn is_configured(&self) -> bool {
        self.endpoint.is_some() || self.traces_endpoint.is_some()
    }

    /// The URL spans are sent to, per the OTLP exporter specification.
    pub fn traces_url(&self) -> String {
        self.signal_url("traces", self.traces_endpoint.as_deref())
    }

    /// The URL log records (events) are sent to.
    pub fn logs_url(&self) -> String {
        self.signal_url("logs", self.logs_endpoint.as_deref())
    }

    pub fn metrics_url(&self) -> String {
        self.signal_url("metrics", self.metrics_endpoint.as_deref())
    }

    /// A signal-specific endpoint is used as is; the base one gets `/v1/{signal}` for HTTP.
    fn signal_url(&self, signal: &str, specific: Option<&str>) -> String {
        if let Some(url) = specific {
            return url.to_owned();
        }
        match (&self.endpoint, self.protocol) {
            (Some(base), OtlpProtocol::HttpProtobuf) => {
                format!("{}/v1/{signal}", base.trim_end_matches('/'))
            }
            (Some(base), OtlpProtocol::Grpc) => base.clone(),
            (None, OtlpProtocol::HttpProtobuf) => format!("http://localhost:4318/v1/{signal}"),
            (None, OtlpProtocol::Grpc) => "http://localhost:4317".to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Spans waiting for export; more are dropped (and counted).
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
    pub schedule_delay: Dur,
    pub export_timeout: Dur,
}

impl Default for BatchConfig {
    fn default() -> Self {
        // The OpenTelemetry specification's defaults for the batch span processor.
        BatchConfig {
            max_queue_size: 2048,
            max_export_batch_size: 512,
            schedule_delay: Dur::secs(5),
            export_timeout: Dur::secs(30),
        }
    }
}

/// Whether message content is captured, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CaptureMode {
    /// No content leaves the process.
    #[default]
    Off,
    /// Captured; `redacted` when redaction rules are configured, else `full`.
    On,
    /// Captured, every redaction rule applied.
    Redacted,
    /// Captured as is (logged as a warning at start-up).
    Full,
}

/// Where captured content goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CaptureTarget {
    /// `gen_ai.input.messages` & co. as span attributes.
    #[default]
    Span,
    /// A `gen_ai.client.inference.operation.details` event (an OTLP log record).
    Event,
    SpanAndEvent,
}

impl CaptureTarget {
    pub fn span(self) -> bool {
        matches!(self, CaptureTarget::Span | CaptureTarget::SpanAndEvent)
    }
    pub fn event(self) -> bool {
        matches!(self, CaptureTarget::Event | CaptureTarget::SpanAndEvent)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    /// `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` overrides.
    pub mode: CaptureMode,
    pub target: CaptureTarget,
    /// All content attributes of one exchange together stay under this (Application Insights
    /// drops attributes past ~64 KB per record); what does not fit is truncated and marked.
    pub max_bytes: ByteSize,
    /// The fraction of exchanges whose content is kept (usage and metrics are always recorded).
    pub sample_rate: f64,
    /// Which exchanges' content is kept: all, or only failed and/or slow ones.
    pub only: CaptureOnly,
    /// What `slow` means: longer than this from request to last byte.
    pub slow_threshold: Dur,
    /// Request headers exported as `http.request.header.<name>` (values redacted).
    /// Credentials can never be listed.
    pub headers: Vec<String>,
}

/// Which exchanges keep their content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CaptureOnly {
    #[default]
    All,
    Failed,
    Slow,
    FailedOrSlow,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            mode: CaptureMode::Off,
            target: CaptureTarget::Span,
            max_bytes: ByteSize(32 << 10),
            sample_rate: 1.0,
            only: CaptureOnly::All,
            slow_threshold: Dur::secs(10),
            headers: Vec::new(),
        }
    }
}

impl CaptureConfig {
    pub fn enabled(&self) -> bool {
        self.mode != CaptureMode::Off
    }
}

/// Headers that carry credentials: never exported, whatever the allowlist says.
pub const FORBIDDEN_HEADERS: &[&str] = &[
    "authorization",
    "api-key",
    "cookie",
    "set-cookie",
    "proxy-authorization",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request or (decoded) response body parsed for telemetry; larger ones are
    /// forwarded untouched and their span says why it carries less.
    pub max_observed_body: ByteSize,
    /// Largest single SSE event parsed.
    pub max_observed_event: ByteSize,
    /// Frames in flight to one exchange's observer before observation gives up on it.
    pub observer_queue: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_observed_body: ByteSize(8 << 20),
            max_observed_event: ByteSize(1 << 20),
            observer_queue: 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// On SIGTERM/SIGINT, how long in-flight requests and streams may take to finish.
    pub drain_timeout: Dur,
    /// On SIGTERM/SIGINT, how long to go on accepting requests (while not ready) before the
    /// drain: for classic sidecars, which are stopped at the same time as the app they serve.
    pub shutdown_delay: Dur,
    /// How long a client may take to send its request headers (HTTP/1), and to finish a
    /// TLS handshake.
    pub header_read_timeout: Dur,
    /// Serve TLS instead of cleartext (a shared gateway rather than a sidecar).
    pub tls: Option<ListenerTls>,
    /// How often credential and certificate files are checked for changes.
    pub reload_interval: Dur,
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Threads serving the proxy port, each with its own event loop and upstream connection
    /// pool, so a request and its upstream call never hop between threads. One suits a sidecar
    /// (it spends the least CPU per request); raise it for a shared gateway. 0: one per core
    /// available to the process (its CPU quota included).
    pub workers: usize,
    /// Largest request head (HTTP/1 request line and headers, HTTP/2 header list).
    pub max_header_bytes: ByteSize,
}

/// The listener's certificate, reloaded when either file changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

impl ServerConfig {
    /// `workers`, with 0 resolved to the cores this process may use.
    pub fn effective_workers(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            n => n,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            drain_timeout: Dur::secs(25),
            shutdown_delay: Dur::secs(0),
            header_read_timeout: Dur::secs(30),
            tls: None,
            reload_interval: Dur::secs(10),
            max_connections: 4096,
            workers: 1,
            max_header_bytes: ByteSize(64 << 10),
        }
    }
}

/// The admin port: health, readiness and Prometheus metrics, apart from the proxy port so no
/// app path can shadow them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Probes reach the pod's IP: in Kubernetes set `0.0.0.0:7421`.
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT + 1)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter: `info`, `genai_tap=debug,hyper=info`, ...
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// A duration written with a unit: `250ms`, `5s`, `2m`, `1h`, `1.5s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }
}

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{s:?} has no unit (write e.g. \"5s\" or \"250ms\")"))?;
        let (number, unit) = s.split_at(split);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{s:?} is not a duration"))?;
        let scale = match unit.trim() {
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => {
                return Err(format!(
                    "unknown duration unit {other:?} (use ms, s, m or h)"
                ));
            }
        };
        Duration::try_from_secs_f64(value * scale)
            .map(Dur)
            .map_err(|_| format!("{s:?} is out of range"))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A size in bytes: an integer, or a string with a unit (`64KiB`, `8MiB`, `1MB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub usize);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let value: usize = number.parse().map_err(|_| format!("{s:?} is not a size"))?;
        let scale: usize = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            other => {
                return Err(format!(
                    "unknown size unit {other:?} (use B, KiB, MiB, GiB)"
                ));
            }
        };
        value
            .checked_mul(scale)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?} is out of range"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(usize),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = self.0;
        for (unit, scale) in [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if n >= scale && n.is_multiple_of(scale) {
                return s.collect_str(&format_args!("{}{unit}", n / scale));
            }
        }
        s.serialize_u64(n as u64)
    }
}

/// Everything configuration is read from, passed in rather than read from globals.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// The TOML file named by `--config`.
    pub file: Option<PathBuf>,
    /// The process environment (only `GENAI_TAP_*` and the `OTEL_*` variables below are read).
    pub env: Vec<(String, String)>,
    /// Command-line overrides.
    pub flags: Flags,
}

/// Command-line flags that override configuration.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Flags {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamFlag>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct UpstreamFlag {
    pub url: String,
}

const PREFIX: &str = "GENAI_TAP_";

impl Config {
    /// Loads and validates. An upstream is not required here (`demo` brings its own);
    /// `run` checks for it with [`Config::require_upstream`].
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = &sources.file {
            if !path.is_file() {
                return Err(invalid(
                    "--config",
                    format!("{} is not a readable file", path.display()),
                ));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        for (name, value) in &sources.env {
            if let Some(key) = name.strip_prefix(PREFIX) {
                let path: Vec<String> = key.split("__").map(|k| k.to_ascii_lowercase()).collect();
                let value = Value::from_str(value).unwrap_or_else(|v| match v {});
                figment = figment.merge(EnvVar::new(name, &path, value));
            }
        }
        for provider in otel_env(&sources.env) {
            figment = figment.merge(provider);
        }
        figment = figment.merge(Serialized::defaults(&sources.flags));
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.upstream.url {
            validate_url(url).map_err(|m| invalid("upstream.url", m))?;
        }
        if let Some(p) = &self.upstream.provider
            && p.trim().is_empty()
        {
            return Err(invalid("upstream.provider", "must not be empty"));
        }
        let mut prefixes = std::collections::HashSet::new();
        for (i, route) in self.routes.iter().enumerate() {
            let prefix = route.prefix.trim_end_matches('/');
            if !route.prefix.starts_with('/') || prefix.is_empty() {
                return Err(invalid(
                    format!("routes[{i}].prefix"),
                    format!(
                        "{:?} must be a path like \"/azure\" (\"/\" is upstream.url)",
                        route.prefix
                    ),
                ));
            }
            if prefix.contains(['?', '#']) || prefix.split('/').any(|s| s == "." || s == "..") {
                return Err(invalid(
                    format!("routes[{i}].prefix"),
                    "must be a plain path",
                ));
            }
            if !prefixes.insert(prefix) {
                return Err(invalid(
                    format!("routes[{i}].prefix"),
                    format!("{prefix:?} is used twice"),
                ));
            }
            validate_url(&route.url).map_err(|m| invalid(format!("routes[{i}].url"), m))?;
            if route.provider.as_ref().is_some_and(|p| p.trim().is_empty()) {
                return Err(invalid(
                    format!("routes[{i}].provider"),
                    "must not be empty",
                ));
            }
        }
        for (key, value) in [
            ("telemetry.otlp.endpoint", &self.telemetry.otlp.endpoint),
            (
                "telemetry.otlp.traces_endpoint",
                &self.telemetry.otlp.traces_endpoint,
            ),
            (
                "telemetry.otlp.logs_endpoint",
                &self.telemetry.otlp.logs_endpoint,
            ),
        ] {
            if let Some(url) = value {
                validate_url(url).map_err(|m| invalid(key, m))?;
            }
        }
        for name in self.telemetry.otlp.headers.keys() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(invalid(
                    "telemetry.otlp.headers",
                    format!("{name:?} is not a valid header name"),
                ));
            }
        }
        let batch = &self.telemetry.batch;
        if batch.max_queue_size == 0 {
            return Err(invalid(
                "telemetry.batch.max_queue_size",
                "must be at least 1",
            ));
        }
        if batch.max_export_batch_size == 0 || batch.max_export_batch_size > batch.max_queue_size {
            return Err(invalid(
                "telemetry.batch.max_export_batch_size",
                "must be between 1 and telemetry.batch.max_queue_size",
            ));
        }
        if batch.schedule_delay.0.is_zero() {
            return Err(invalid(
                "telemetry.batch.schedule_delay",
                "must be above zero",
            ));
        }
        if self.telemetry.exporters.contains(&ExporterKind::None)
            && self.telemetry.exporters.len() > 1
        {
            return Err(invalid(
                "telemetry.exporters",
                "\"none\" cannot be combined with other exporters",
            ));
        }
        crate::redact::Redactor::from_config(&self.redaction)
            .map_err(|e| invalid(e.key, e.message))?;
        if self.capture.mode == CaptureMode::Redacted
            && self.redaction.rules.is_empty()
            && self.redaction.json_keys.is_empty()
        {
            return Err(invalid(
                "capture.mode",
                "\"redacted\" needs at least one rule under [redaction] (or use \"full\" knowingly)",
            ));
        }
        if !(0.0..=1.0).contains(&self.capture.sample_rate) {
            return Err(invalid("capture.sample_rate", "must be between 0 and 1"));
        }
        for (i, name) in self.capture.headers.iter().enumerate() {
            let lower = name.to_ascii_lowercase();
            if FORBIDDEN_HEADERS.contains(&lower.as_str()) {
                return Err(invalid(
                    format!("capture.headers[{i}]"),
                    format!("{name:?} carries credentials and is never exported"),
                ));
            }
            if http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
                return Err(invalid(
                    format!("capture.headers[{i}]"),
                    format!("{name:?} is not a header name"),
                ));
            }
        }
        let exporters = self.exporters();
        if (exporters.contains(&ExporterKind::ApplicationInsights)
            || self
                .metric_exporters()
                .contains(&ExporterKind::ApplicationInsights))
            && self
                .telemetry
                .applicationinsights
                .connection_string
                .is_none()
        {
            return Err(invalid(
                "telemetry.applicationinsights.connection_string",
                "the applicationinsights exporter needs a connection string (APPLICATIONINSIGHTS_CONNECTION_STRING)",
            ));
        }
        if let Some(c) = &self.telemetry.applicationinsights.connection_string
            && !c.to_ascii_lowercase().contains("instrumentationkey=")
        {
            return Err(invalid(
                "telemetry.applicationinsights.connection_string",
                "has no InstrumentationKey",
            ));
        }
        if let Some(arg) = self.telemetry.sampler_arg
            && !(0.0..=1.0).contains(&arg)
        {
            return Err(invalid("telemetry.sampler_arg", "must be between 0 and 1"));
        }
        if self.telemetry.metrics.interval.0.is_zero() {
            return Err(invalid("telemetry.metrics.interval", "must be above zero"));
        }
        if let Some(h) = &self.telemetry.conversation_id_header
            && http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).is_err()
        {
            return Err(invalid(
                "telemetry.conversation_id_header",
                format!("{h:?} is not a header name"),
            ));
        }
        match (
            &self.upstream.client_cert_file,
            &self.upstream.client_key_file,
        ) {
            (Some(_), None) => {
                return Err(invalid(
                    "upstream.client_key_file",
                    "client_cert_file needs its private key",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "upstream.client_cert_file",
                    "client_key_file needs its certificate",
                ));
            }
            _ => {}
        }
        if self.server.max_connections == 0 {
            return Err(invalid("server.max_connections", "must be at least 1"));
        }
        if self.server.max_header_bytes.0 < 8 << 10 {
            return Err(invalid("server.max_header_bytes", "must be at least 8KiB"));
        }
        if self.server.workers > 1024 {
            return Err(invalid(
                "server.workers",
                "must be at most 1024 (0 means one per core)",
            ));
        }
        if self.server.reload_interval.0.is_zero() {
            return Err(invalid("server.reload_interval", "must be above zero"));
        }
        if self.limits.observer_queue == 0 {
            return Err(invalid("limits.observer_queue", "must be at least 1"));
        }
        if self
            .log
            .level
            .parse::<tracing_subscriber::EnvFilter>()
            .is_err()
        {
            return Err(invalid(
                "log.level",
                format!("{:?} is not a log filter", self.log.level),
            ));
        }
        Ok(())
    }

    /// `run` forwards somewhere: that somewhere must be configured.
    pub fn require_upstream(&self) -> Result<(), ConfigError> {
        if self.upstream.url.is_none() && self.routes.is_empty() {
            return Err(invalid(
                "upstream.url",
                "no upstream configured: pass --upstream URL, set GENAI_TAP_UPSTREAM__URL, \
                 or set url under [upstream] (or [[routes]]) in the config file",
            ));
        }
        Ok(())
    }

    /// The exporters in effect once `auto` (an empty list) is resolved: OTLP when an endpoint
    /// is set, Application Insights when a connection string is, else the console.
    pub fn exporters(&self) -> Vec<ExporterKind> {
        match self.telemetry.exporters.as_slice() {
            [] => {
                let mut auto = Vec::new();
                if self.telemetry.otlp.is_configured() {
                    auto.push(ExporterKind::Otlp);
                }
                if self
                    .telemetry
                    .applicationinsights
                    .connection_string
                    .is_some()
                {
                    auto.push(ExporterKind::ApplicationInsights);
                }
                if auto.is_empty() {
                    auto.push(ExporterKind::Console);
                }
                auto
            }
            [ExporterKind::None] => Vec::new(),
            list => list.to_vec(),
        }
    }

    /// Where metrics go: their own list, else the span exporters but the console (a metric
    /// dump every interval is noise there).
    pub fn metric_exporters(&self) -> Vec<ExporterKind> {
        match self.telemetry.metrics.exporters.as_slice() {
            [] => self
                .exporters()
                .into_iter()
                .filter(|k| *k != ExporterKind::Console)
                .collect(),
            [ExporterKind::None] => Vec::new(),
            list => list.to_vec(),
        }
    }

    /// The effective configuration as TOML, with secrets masked.
    pub fn to_masked_toml(&self) -> String {
        let mut shown = self.clone();
        for value in shown.telemetry.otlp.headers.values_mut() {
            *value = "****".to_owned();
        }
        if let Some(key) = &mut shown.redaction.hash_key {
            *key = "****".to_owned();
        }
        if let Some(c) = &mut shown.telemetry.applicationinsights.connection_string {
            *c = "****".to_owned();
        }
        if let Some(url) = &mut shown.upstream.url {
            *url = mask_userinfo(url);
        }
        let auths = std::iter::once(&mut shown.upstream.auth)
            .chain(shown.routes.iter_mut().map(|r| &mut r.auth));
        for auth in auths.flatten() {
            if let Some(key) = &mut auth.key {
                *key = "****".to_owned();
            }
        }
        for route in &mut shown.routes {
            route.url = mask_userinfo(&route.url);
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

fn validate_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{:?} is not a URL: {e}", mask_userinfo(url)))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(format!(
                "{:?} must start with http:// or https://",
                mask_userinfo(url)
            ));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{:?} has no host", mask_userinfo(url)));
    }
    if url.contains('#') {
        return Err("must not contain a fragment".to_owned());
    }
    Ok(())
}

fn mask_userinfo(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}****{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

/// One environment variable as a figment provider, so errors name the variable.
struct EnvVar {
    name: String,
    dict: Dict,
}

impl EnvVar {
    fn new(name: &str, path: &[String], value: Value) -> EnvVar {
        // Nest the value under the path, innermost key first.
        let mut value = value;
        for key in path.iter().skip(1).rev() {
            let mut inner = Dict::new();
            inner.insert(key.clone(), value);
            value = Value::from(inner);
        }
        let mut dict = Dict::new();
        if let Some(first) = path.first() {
            dict.insert(first.clone(), value);
        }
        EnvVar {
            name: name.to_owned(),
            dict,
        }
    }
}

impl Provider for EnvVar {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("{} environment variable", self.name))
    }
    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// The standard OpenTelemetry variables, mapped onto our keys (signal-specific ones win).
fn otel_env(env: &[(String, String)]) -> Vec<EnvVar> {
    let get = |name: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    };
    let mut out = Vec::new();
    let mut put = |name: &str, path: &[&str], value: Value| {
        let path: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
        out.push(EnvVar::new(name, &path, value));
    };
    let string = |s: &str| Value::from(s.to_owned());
    let millis = |s: &str| {
        if s.bytes().all(|b| b.is_ascii_digit()) {
            Value::from(format!("{s}ms"))
        } else {
            Value::from(s.to_owned())
        }
    };
    let number = |s: &str| Value::from_str(s).unwrap_or_else(|v| match v {});

    if let Some(v) = get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT") {
        const NAME: &str = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT";
        let (mode, target) = match v.to_ascii_uppercase().as_str() {
            "NO_CONTENT" | "FALSE" => ("off", None),
            "SPAN_ONLY" | "TRUE" => ("on", Some("span")),
            "EVENT_ONLY" => ("on", Some("event")),
            "SPAN_AND_EVENT" => ("on", Some("span_and_event")),
            // Unknown values fail validation, naming the variable.
            _ => (v, None),
        };
        put(NAME, &["capture", "mode"], string(mode));
        if let Some(target) = target {
            put(NAME, &["capture", "target"], string(target));
        }
    }
    if let Some(v) = get("APPLICATIONINSIGHTS_CONNECTION_STRING") {
        put(
            "APPLICATIONINSIGHTS_CONNECTION_STRING",
            &["telemetry", "applicationinsights", "connection_string"],
            string(v),
        );
    }
    if let Some(v) = get("OTEL_TRACES_SAMPLER") {
        put(
            "OTEL_TRACES_SAMPLER",
            &["telemetry", "sampler"],
            string(&v.to_ascii_lowercase()),
        );
    }
    if let Some(v) = get("OTEL_TRACES_SAMPLER_ARG") {
        put(
            "OTEL_TRACES_SAMPLER_ARG",
            &["telemetry", "sampler_arg"],
            number(v),
        );
    }
    if let Some(v) = get("OTEL_PROPAGATORS") {
        let none = v.split(',').any(|p| p.trim().eq_ignore_ascii_case("none"));
        put(
            "OTEL_PROPAGATORS",
            &["telemetry", "propagate"],
            Value::from(!none),
        );
    }
    if let Some(v) = get("OTEL_METRIC_EXPORT_INTERVAL") {
        put(
            "OTEL_METRIC_EXPORT_INTERVAL",
            &["telemetry", "metrics", "interval"],
            millis(v),
        );
    }
    if let Some(v) = get("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE") {
        put(
            "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
            &["telemetry", "metrics", "temporality"],
            string(&v.to_ascii_lowercase()),
        );
    }
    if let Some(v) = get("OTEL_METRICS_EXPORTER") {
        let list: Vec<Value> = v.split(',').map(|s| string(s.trim())).collect();
        put(
            "OTEL_METRICS_EXPORTER",
            &["telemetry", "metrics", "exporters"],
            Value::from(list),
        );
    }
    // The downward API fills these in the deploy manifests.
    for (name, attribute) in [
        ("K8S_POD_NAME", "k8s.pod.name"),
        ("K8S_NAMESPACE_NAME", "k8s.namespace.name"),
        ("K8S_NODE_NAME", "k8s.node.name"),
    ] {
        if let Some(v) = get(name) {
            let mut dict = Dict::new();
            dict.insert(attribute.to_owned(), string(v));
            put(
                name,
                &["telemetry", "resource_attributes"],
                Value::from(dict),
            );
        }
    }
    if let Some(v) = get("OTEL_SERVICE_NAME") {
        put(
            "OTEL_SERVICE_NAME",
            &["telemetry", "service_name"],
            string(v),
        );
    }
    if let Some(v) = get("OTEL_RESOURCE_ATTRIBUTES") {
        let dict: Dict = parse_key_values(v)
            .into_iter()
            .map(|(k, v)| (k, Value::from(v)))
            .collect();
        put(
            "OTEL_RESOURCE_ATTRIBUTES",
            &["telemetry", "resource_attributes"],
            Value::from(dict),
        );
    }
    if get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        put(
            "OTEL_SDK_DISABLED",
            &["telemetry", "exporters"],
            Value::from(vec![string("none")]),
        );
    } else if let Some(v) = get("OTEL_TRACES_EXPORTER") {
        let list: Vec<Value> = v.split(',').map(|s| string(s.trim())).collect();
        put(
            "OTEL_TRACES_EXPORTER",
            &["telemetry", "exporters"],
            Value::from(list),
        );
    }
    for (name, path) in [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "endpoint"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "traces_endpoint"),
        ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "logs_endpoint"),
        ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "metrics_endpoint"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "protocol"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "protocol"),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "ca_file"),
        ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "ca_file"),
    ] {
        if let Some(v) = get(name) {
            put(name, &["telemetry", "otlp", path], string(v));
        }
    }
    for name in [
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    ] {
        if let Some(v) = get(name) {
            put(name, &["telemetry", "otlp", "timeout"], millis(v));
        }
    }
    for name in [
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    ] {
        if let Some(v) = get(name) {
            let dict: Dict = parse_key_values(v)
                .into_iter()
                .map(|(k, v)| (k, Value::from(v)))
                .collect();
            put(name, &["telemetry", "otlp", "headers"], Value::from(dict));
        }
    }
    for (name, key) in [
        ("OTEL_BSP_SCHEDULE_DELAY", "schedule_delay"),
        ("OTEL_BSP_EXPORT_TIMEOUT", "export_timeout"),
    ] {
        if let Some(v) = get(name) {
            put(name, &["telemetry", "batch", key], millis(v));
        }
    }
    for (name, key) in [
        ("OTEL_BSP_MAX_QUEUE_SIZE", "max_queue_size"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "max_export_batch_size"),
    ] {
        if let Some(v) = get(name) {
            put(name, &["telemetry", "batch", key], number(v));
        }
    }
    out
}

/// `k1=v1,k2=v2` with percent-encoded values (W3C baggage style, as the OTel spec requires for
/// `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_EXPORTER_OTLP_HEADERS`). Malformed members are skipped.
pub fn parse_key_values(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|member| {
            let (k, v) = member.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| (percent_decode(k), percent_decode(v.trim())))
        })
        .collect()
}

pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("zz"), 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn load_env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::load(&Sources {
            env: env(pairs),
            ..Sources::default()
        })
    }

    fn file(contents: &str) -> tempfile_lite::TempFile {
        tempfile_lite::TempFile::with(contents)
    }

    /// A temporary file removed on drop, without another crate.
    mod tempfile_lite {
        use std::path::PathBuf;
        use std::sync::atomic::{AtomicU32, Ordering};
        pub struct TempFile(pub PathBuf);
        impl TempFile {
            pub fn with(contents: &str) -> TempFile {
                static N: AtomicU32 = AtomicU32::new(0);
                let path = std::env::temp_dir().join(format!(
                    "genai-tap-test-{}-{}.toml",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::write(&path, contents).unwrap();
                TempFile(path)
            }
        }
        impl Drop for TempFile {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn defaults_listen_on_loopback_and_print_to_the_console() {
        let c = load_env(&[]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:7420".parse().unwrap());
        assert_eq!(c.exporters(), vec![ExporterKind::Console]);
        assert!(c.require_upstream().is_err());
    }

    #[test]
    fn layers_apply_in_order_file_env_otel_flags() {
        let f = file(
            r#"
listen = "127.0.0.1:9000"
[upstream]
url = "https://file.example"
provider = "azure.ai.openai"
[telemetry]
service_name = "from-file"
[telemetry.batch]
max_queue_size = 100
"#,
        );
        let c = Config::load(&Sources {
            file: Some(f.0.clone()),
            env: env(&[
                ("GENAI_TAP_LISTEN", "127.0.0.1:9001"),
                ("GENAI_TAP_UPSTREAM__URL", "https://env.example/openai/v1"),
                ("GENAI_TAP_TELEMETRY__SERVICE_NAME", "from-env"),
                ("GENAI_TAP_TELEMETRY__BATCH__MAX_EXPORT_BATCH_SIZE", "50"),
                ("OTEL_SERVICE_NAME", "from-otel"),
            ]),
            flags: Flags {
                listen: Some("127.0.0.1:9002".parse().unwrap()),
                upstream: None,
            },
        })
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:9002".parse().unwrap());
        assert_eq!(
            c.upstream.url.as_deref(),
            Some("https://env.example/openai/v1")
        );
        assert_eq!(c.upstream.provider.as_deref(), Some("azure.ai.openai"));
        assert_eq!(c.telemetry.service_name.as_deref(), Some("from-otel"));
        assert_eq!(c.telemetry.batch.max_queue_size, 100);
        assert_eq!(c.telemetry.batch.max_export_batch_size, 50);
    }

    #[test]
    fn otel_variables_map_to_the_exporter_settings() {
        let c = load_env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "api-key=abc%3D%3D,x-team = genai",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-team=traces"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "64"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "32"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment.name=prod,team=a%2Cb",
            ),
        ])
        .unwrap();
        assert_eq!(c.exporters(), vec![ExporterKind::Otlp]);
        let otlp = &c.telemetry.otlp;
        assert_eq!(otlp.traces_url(), "http://collector:4318/v1/traces");
        assert_eq!(otlp.headers["api-key"], "abc==");
        assert_eq!(otlp.headers["x-team"], "traces");
        assert_eq!(otlp.timeout, Dur(Duration::from_millis(2500)));
        assert_eq!(
            c.telemetry.batch.schedule_delay,
            Dur(Duration::from_millis(200))
        );
        assert_eq!(c.telemetry.batch.max_queue_size, 64);
        assert_eq!(c.telemetry.resource_attributes["team"], "a,b");
    }

    #[test]
    fn grpc_protocol_uses_the_endpoint_as_is_and_signal_endpoint_wins() {
        let c = load_env(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
        ])
        .unwrap();
        assert_eq!(c.telemetry.otlp.traces_url(), "http://collector:4317");
        let c = load_env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://b:4318/custom"),
        ])
        .unwrap();
        assert_eq!(c.telemetry.otlp.traces_url(), "http://b:4318/custom");
        assert_eq!(c.telemetry.otlp.logs_url(), "http://a:4318/v1/logs");
    }

    #[test]
    fn traces_exporter_and_sdk_disabled() {
        let c = load_env(&[("OTEL_TRACES_EXPORTER", "otlp,console")]).unwrap();
        assert_eq!(
            c.exporters(),
            vec![ExporterKind::Otlp, ExporterKind::Console]
        );
        let c = load_env(&[("OTEL_TRACES_EXPORTER", "none")]).unwrap();
        assert!(c.exporters().is_empty());
        let c = load_env(&[
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "otlp"),
        ])
        .unwrap();
        assert!(c.exporters().is_empty());
    }

    fn error_text(r: Result<Config, ConfigError>) -> String {
        r.map(|_| ()).unwrap_err().to_string()
    }

    #[test]
    fn serving_threads_default_to_one_zero_means_a_core_each_and_an_absurd_count_is_refused() {
        let c = load_env(&[]).unwrap();
        assert_eq!(c.server.effective_workers(), 1);
        let c = load_env(&[("GENAI_TAP_SERVER__WORKERS", "0")]).unwrap();
        assert!(c.server.effective_workers() >= 1);
        let c = load_env(&[("GENAI_TAP_SERVER__WORKERS", "3")]).unwrap();
        assert_eq!(c.server.effective_workers(), 3);
        let e = error_text(load_env(&[("GENAI_TAP_SERVER__WORKERS", "100000")]));
        assert!(e.contains("server.workers"), "{e}");
    }

    #[test]
    fn errors_name_the_key_and_where_it_came_from() {
        let e = error_text(load_env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]));
        assert!(
            e.contains("protocol") && e.contains("OTEL_EXPORTER_OTLP_PROTOCOL"),
            "{e}"
        );

        let e = error_text(load_env(&[("GENAI_TAP_LISTEN", "not-an-address")]));
        assert!(
            e.contains("listen") && e.contains("GENAI_TAP_LISTEN"),
            "{e}"
        );

        let e = error_text(load_env(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")]));
        assert!(
            e.contains("timeout") && e.contains("OTEL_EXPORTER_OTLP_TIMEOUT"),
            "{e}"
        );

        let f = file("[upstream]\nurll = \"https://x\"\n");
        let e = error_text(Config::load(&Sources {
            file: Some(f.0.clone()),
            ..Sources::default()
        }));
        // figment shows the path relative to the working directory when it can (`../x.toml`
        // from a checkout under the temp dir): the file's name is in it either way.
        let name = f.0.file_name().unwrap_or_default().to_string_lossy();
        assert!(e.contains("urll") && e.contains(&*name), "{e}");

        let e = error_text(load_env(&[("GENAI_TAP_UPSTREAM__URL", "ftp://x")]));
        assert_eq!(
            e,
            "invalid `upstream.url`: \"ftp://x\" must start with http:// or https://"
        );

        let e = error_text(load_env(&[("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "5000")]));
        assert!(e.contains("telemetry.batch.max_export_batch_size"), "{e}");

        let e = error_text(load_env(&[(
            "GENAI_TAP_LIMITS__MAX_OBSERVED_BODY",
            "8 parsecs",
        )]));
        assert!(e.contains("max_observed_body"), "{e}");
    }

    #[test]
    fn routes_load_from_the_file_and_are_validated() {
        let f = file(
            r#"
[upstream]
stream_usage = "passthrough"
[[routes]]
prefix = "/azure"
url = "https://r.openai.azure.com"
provider = "azure.ai.openai"
[[routes]]
prefix = "/local/"
url = "http://127.0.0.1:8000"
strip_prefix = false
stream_usage = "inject"
"#,
        );
        let c = Config::load(&Sources {
            file: Some(f.0.clone()),
            ..Sources::default()
        })
        .unwrap();
        assert!(c.require_upstream().is_ok(), "routes alone are enough");
        assert_eq!(c.upstream.stream_usage, StreamUsage::Passthrough);
        assert_eq!(c.routes.len(), 2);
        assert!(c.routes[0].strip_prefix);
        assert!(!c.routes[1].strip_prefix);
        assert_eq!(c.routes[1].stream_usage, Some(StreamUsage::Inject));

        for (body, key) in [
            (
                "[[routes]]\nprefix = \"azure\"\nurl = \"https://x\"\n",
                "routes[0].prefix",
            ),
            (
                "[[routes]]\nprefix = \"/\"\nurl = \"https://x\"\n",
                "routes[0].prefix",
            ),
            (
                "[[routes]]\nprefix = \"/a\"\nurl = \"https://x\"\n[[routes]]\nprefix = \"/a/\"\nurl = \"https://y\"\n",
                "routes[1].prefix",
            ),
            (
                "[[routes]]\nprefix = \"/a\"\nurl = \"x\"\n",
                "routes[0].url",
            ),
        ] {
            let f = file(body);
            let e = error_text(Config::load(&Sources {
                file: Some(f.0.clone()),
                ..Sources::default()
            }));
            assert!(e.contains(key), "{body}: {e}");
        }
    }

    #[test]
    fn content_capture_follows_the_reference_instrumentation_variable() {
        let c = load_env(&[]).unwrap();
        assert!(!c.capture.enabled(), "off by default");
        for (value, mode, target) in [
            ("SPAN_ONLY", CaptureMode::On, CaptureTarget::Span),
            ("true", CaptureMode::On, CaptureTarget::Span),
            ("EVENT_ONLY", CaptureMode::On, CaptureTarget::Event),
            (
                "span_and_event",
                CaptureMode::On,
                CaptureTarget::SpanAndEvent,
            ),
            ("NO_CONTENT", CaptureMode::Off, CaptureTarget::Span),
            ("false", CaptureMode::Off, CaptureTarget::Span),
        ] {
            let c =
                load_env(&[("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", value)]).unwrap();
            assert_eq!(
                (c.capture.mode, c.capture.target),
                (mode, target),
                "{value}"
            );
        }
        let e = error_text(load_env(&[(
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
            "sometimes",
        )]));
        assert!(
            e.contains("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"),
            "{e}"
        );
    }

    #[test]
    fn redaction_rules_load_and_bad_ones_stop_start_up_by_name() {
        let f = file(
            r#"
[capture]
mode = "redacted"
headers = ["x-user-id"]
sample_rate = 0.25
only = "failed_or_slow"
[redaction]
json_keys = ["password"]
rules = [
  { preset = "api_keys" },
  { preset = "email", replacement = "hash" },
  { name = "ticket", regex = "TCK-\\d+", replacement = "[TICKET]" },
]
"#,
        );
        let c = Config::load(&Sources {
            file: Some(f.0.clone()),
            env: env(&[("GENAI_TAP_REDACTION__HASH_KEY", "0123456789abcdef-secret")]),
            ..Sources::default()
        })
        .unwrap();
        assert_eq!(c.redaction.rules.len(), 3);
        assert_eq!(c.capture.only, CaptureOnly::FailedOrSlow);
        let shown = c.to_masked_toml();
        assert!(!shown.contains("0123456789abcdef-secret"), "{shown}");

        for (body, key) in [
            (
                "[redaction]\nrules = [{ preset = \"cards\" }]\n",
                "redaction.rules[0].preset",
            ),
            (
                "[redaction]\nrules = [{ name = \"x\", regex = \"(\" }]\n",
                "redaction.rules[0].regex",
            ),
            (
                "[redaction]\njson_keys = [\"\"]\n",
                "redaction.json_keys[0]",
            ),
            (
                "[redaction]\nrules = [{ preset = \"email\", replacement = \"hash\" }]\n",
                "redaction.hash_key",
            ),
            ("[capture]\nmode = \"redacted\"\n", "capture.mode"),
            (
                "[capture]\nheaders = [\"Authorization\"]\n",
                "capture.headers[0]",
            ),
            (
                "[capture]\nheaders = [\"x-ok\", \"Cookie\"]\n",
                "capture.headers[1]",
            ),
            ("[capture]\nsample_rate = 1.5\n", "capture.sample_rate"),
        ] {
            let f = file(body);
            let e = error_text(Config::load(&Sources {
                file: Some(f.0.clone()),
                ..Sources::default()
            }));
            assert!(e.contains(key), "{body}: {e}");
        }
    }

    #[test]
    fn metrics_sampling_propagation_and_application_insights_from_the_standard_variables() {
        let c = load_env(&[
            ("OTEL_METRIC_EXPORT_INTERVAL", "5000"),
            ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "Delta"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_PROPAGATORS", "none"),
            ("APPLICATIONINSIGHTS_CONNECTION_STRING", "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=http://127.0.0.1:9/"),
            ("K8S_POD_NAME", "app-7d9f"),
            ("K8S_NAMESPACE_NAME", "prod"),
            ("OTEL_RESOURCE_ATTRIBUTES", "team=genai"),
        ])
        .unwrap();
        let t = &c.telemetry;
        assert_eq!(t.metrics.interval, Dur::secs(5));
        assert_eq!(t.metrics.temporality, Temporality::Delta);
        assert_eq!(t.sampler, SamplerKind::ParentbasedTraceIdRatio);
        assert_eq!(t.sampler_arg, Some(0.25));
        assert!(!t.propagate);
        assert_eq!(c.exporters(), vec![ExporterKind::ApplicationInsights]);
        assert_eq!(
            c.metric_exporters(),
            vec![ExporterKind::ApplicationInsights]
        );
        assert_eq!(t.resource_attributes["k8s.pod.name"], "app-7d9f");
        assert_eq!(t.resource_attributes["k8s.namespace.name"], "prod");
        assert_eq!(t.resource_attributes["team"], "genai");
        assert!(!c.to_masked_toml().contains("InstrumentationKey"));
        assert_eq!(
            load_env(&[]).unwrap().metric_exporters(),
            vec![],
            "console spans, no metric dump"
        );
        let e = error_text(load_env(&[("OTEL_TRACES_EXPORTER", "applicationinsights")]));
        assert!(e.contains("applicationinsights.connection_string"), "{e}");
        let e = error_text(load_env(&[("OTEL_TRACES_SAMPLER", "sometimes")]));
        assert!(e.contains("OTEL_TRACES_SAMPLER"), "{e}");
    }

    #[test]
    fn a_missing_config_file_is_an_error_not_a_default() {
        let e = error_text(Config::load(&Sources {
            file: Some("/nonexistent/genai-tap.toml".into()),
            ..Sources::default()
        }));
        assert!(
            e.contains("--config") && e.contains("/nonexistent/genai-tap.toml"),
            "{e}"
        );
    }

    #[test]
    fn masked_output_hides_secrets() {
        let c = load_env(&[
            ("GENAI_TAP_UPSTREAM__URL", "https://user:pw@example.com"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer%20s3cret",
            ),
        ])
        .unwrap();
        let shown = c.to_masked_toml();
        assert!(
            !shown.contains("s3cret") && !shown.contains("pw@"),
            "{shown}"
        );
        assert!(shown.contains("authorization = \"****\""), "{shown}");
        // What is printed loads back as the same configuration, secrets aside.
        let f = file(&shown);
        let again = Config::load(&Sources {
            file: Some(f.0.clone()),
            ..Sources::default()
        })
        .unwrap();
        assert_eq!(again.listen, c.listen);
        assert_eq!(again.limits, c.limits);
        assert_eq!(again.telemetry.batch, c.telemetry.batch);
    }

    #[test]
    fn durations_and_sizes_parse_with_units() {
        assert_eq!(
            "250ms".parse::<Dur>().unwrap(),
            Dur(Duration::from_millis(250))
        );
        assert_eq!(
            "1.5s".parse::<Dur>().unwrap(),
            Dur(Duration::from_millis(1500))
        );
        assert_eq!("2m".parse::<Dur>().unwrap(), Dur::secs(120));
        assert!("5".parse::<Dur>().unwrap_err().contains("no unit"));
        assert_eq!(Dur(Duration::from_millis(1500)).to_string(), "1500ms");
        assert_eq!("8MiB".parse::<ByteSize>().unwrap(), ByteSize(8 << 20));
        assert_eq!("1000".parse::<ByteSize>().unwrap(), ByteSize(1000));
        assert!("3 parsecs".parse::<ByteSize>().is_err());
    }

    #[test]
    fn the_documented_example_file_loads() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/genai-tap.toml");
        let c = Config::load(&Sources {
            file: Some(path),
            ..Sources::default()
        })
        .unwrap();
        assert!(c.upstream.url.is_some());
    }
}
