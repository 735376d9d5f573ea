//! Telemetry: finished exchanges become GenAI spans and leave through export queues.
//!
//! Owns: span ids, the resource and instrumentation scope, the set of destinations (OTLP,
//! console), and their lifecycle (flush, shutdown). Does not: parse HTTP, or wait: recording an
//! exchange offers a span to each destination's bounded queue and returns.

pub mod console;
pub mod memory;
pub mod otlp;
pub mod pipeline;
pub mod semconv;
pub mod span;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::resource::TelemetryResourceDetector;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SpanExporter};

use crate::config::{Config, ExporterKind};
use crate::exchange::Exchange;
use crate::stats::Stats;
pub use pipeline::BatchSettings;
use pipeline::Pipeline;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTLP exporter: {0}")]
    Exporter(String),
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
}

/// The default `service.name`.
pub const DEFAULT_SERVICE_NAME: &str = "genai-tap";

/// Cheap to clone; every observer task holds one.
#[derive(Debug, Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pipelines: Vec<Pipeline>,
    content: span::ContentSettings,
    scope: InstrumentationScope,
    ids: RandomIdGenerator,
    /// Where each destination goes, for the start-up log line.
    destinations: Vec<String>,
}

/// Assembles a [`Telemetry`] from exporters.
pub struct TelemetryBuilder {
    content: span::ContentSettings,
    resource: Resource,
    settings: BatchSettings,
    stats: Arc<Stats>,
    pipelines: Vec<Pipeline>,
    destinations: Vec<String>,
}

impl TelemetryBuilder {
    /// Adds a destination with its own queue and export task (needs a Tokio runtime).
    pub fn exporter<E: SpanExporter + 'static>(
        mut self,
        name: &'static str,
        description: impl Into<String>,
        exporter: E,
    ) -> Self {
        self.pipelines.push(Pipeline::spawn(
            name,
            exporter,
            &self.resource,
            self.settings,
            self.stats.clone(),
        ));
        self.destinations.push(description.into());
        self
    }

    /// Where captured content goes (nowhere by default).
    pub fn content(mut self, settings: span::ContentSettings) -> Self {
        self.content = settings;
        self
    }

    pub fn build(self) -> Telemetry {
        Telemetry {
            inner: Arc::new(Inner {
                pipelines: self.pipelines,
                content: self.content,
                scope: InstrumentationScope::builder("genai-tap")
                    .with_version(env!("CARGO_PKG_VERSION"))
                    .with_schema_url(semconv::SCHEMA_URL)
                    .build(),
                ids: RandomIdGenerator::default(),
                destinations: self.destinations,
            }),
        }
    }
}

impl Telemetry {
    pub fn builder(
        resource: Resource,
        settings: BatchSettings,
        stats: Arc<Stats>,
    ) -> TelemetryBuilder {
        TelemetryBuilder {
            content: span::ContentSettings::default(),
            resource,
            settings,
            stats,
            pipelines: Vec::new(),
            destinations: Vec::new(),
        }
    }

    /// A builder with the configuration's resource, batching and content settings, and no
    /// destinations yet.
    pub fn configured(config: &Config, stats: Arc<Stats>) -> TelemetryBuilder {
        Telemetry::builder(resource(config), batch_settings(config), stats)
            .content(content_settings(config))
    }

    /// The destinations the configuration asks for.
    pub fn from_config(config: &Config, stats: Arc<Stats>) -> Result<Telemetry, TelemetryError> {
        let mut builder = Telemetry::configured(config, stats);
        for kind in config.exporters() {
            builder = match kind {
                ExporterKind::Otlp => {
                    let otlp = &config.telemetry.otlp;
                    let protocol = match otlp.protocol {
                        crate::config::OtlpProtocol::Grpc => "grpc",
                        crate::config::OtlpProtocol::HttpProtobuf => "http/protobuf",
                    };
                    builder.exporter(
                        "otlp",
                        format!("OTLP {protocol} to {}", otlp.traces_url()),
                        otlp::span_exporter(otlp)?,
                    )
                }
                ExporterKind::Console => builder.exporter(
                    "console",
                    "console (stdout)",
                    console::ConsoleExporter::stdout(),
                ),
                ExporterKind::None => builder,
            };
        }
        Ok(builder.build())
    }

    pub fn destinations(&self) -> &[String] {
        &self.inner.destinations
    }

    /// Builds the exchange's span and offers it to every destination. Never waits.
    pub fn record(&self, exchange: &Exchange) {
        let Some((last, rest)) = self.inner.pipelines.split_last() else {
            return;
        };
        let data = span::build(
            exchange,
            self.inner.ids.new_trace_id(),
            self.inner.ids.new_span_id(),
            &self.inner.scope,
            self.inner.content,
        );
        for p in rest {
            p.offer(data.clone());
        }
        last.offer(data);
    }

    /// Exports everything recorded so far.
    pub async fn flush(&self) {
        for p in &self.inner.pipelines {
            p.flush().await;
        }
    }

    /// Exports what is queued and stops every exporter, within `deadline` in all.
    pub async fn shutdown(&self, deadline: Duration) {
        let all = async {
            for p in &self.inner.pipelines {
                p.shutdown().await;
            }
        };
        if tokio::time::timeout(deadline, all).await.is_err() {
            tracing::warn!(
                ?deadline,
                "telemetry was not fully exported before the shutdown deadline"
            );
        }
    }
}

/// `service.name` (config, else `OTEL_RESOURCE_ATTRIBUTES`, else `genai-tap`), the resource
/// attributes, and the SDK's own `telemetry.sdk.*`.
pub fn resource(config: &Config) -> Resource {
    let t = &config.telemetry;
    let name = t
        .service_name
        .clone()
        .or_else(|| t.resource_attributes.get(semconv::SERVICE_NAME).cloned())
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    Resource::builder_empty()
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_attributes(
            t.resource_attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .with_service_name(name)
        .build()
}

pub fn content_settings(config: &Config) -> span::ContentSettings {
    let c = &config.capture;
    span::ContentSettings {
        on_span: c.enabled() && c.target.span(),
        on_event: c.enabled() && c.target.event(),
        max_bytes: c.max_bytes.0,
    }
}

pub fn batch_settings(config: &Config) -> BatchSettings {
    let b = &config.telemetry.batch;
    BatchSettings {
        max_queue_size: b.max_queue_size,
        max_export_batch_size: b.max_export_batch_size,
        schedule_delay: b.schedule_delay.0,
        export_timeout: b.export_timeout.0,
    }
}
