//! Telemetry: finished exchanges become GenAI spans (and, with content captured as events,
//! `gen_ai.client.inference.operation.details` log records) and leave through export queues.
//!
//! Owns: span ids, the resource and instrumentation scope, the set of destinations (OTLP,
//! console) per signal, and their lifecycle (flush, shutdown). Does not: parse HTTP, or wait:
//! recording an exchange offers to each destination's bounded queue and returns.

pub mod console;
pub mod events;
pub mod memory;
pub mod otlp;
pub mod pipeline;
pub mod semconv;
pub mod span;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::logs::LoggerProvider;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::{LogExporter, SdkLogRecord, SdkLogger, SdkLoggerProvider};
use opentelemetry_sdk::resource::TelemetryResourceDetector;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SpanData, SpanExporter};

use crate::config::{Config, ExporterKind, OtlpProtocol};
use crate::exchange::Exchange;
use crate::stats::Stats;
pub use pipeline::BatchSettings;
use pipeline::{Events, Pipeline, Spans};

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
    spans: Vec<Pipeline<SpanData>>,
    events: Vec<Pipeline<SdkLogRecord>>,
    content: span::ContentSettings,
    scope: InstrumentationScope,
    /// Makes log records; it has no processors of its own (our pipelines export them).
    logger: SdkLogger,
    _logger_provider: SdkLoggerProvider,
    ids: RandomIdGenerator,
    /// Where each destination goes, for the start-up log line.
    destinations: Vec<String>,
}

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("genai-tap")
        .with_version(env!("CARGO_PKG_VERSION"))
        .with_schema_url(semconv::SCHEMA_URL)
        .build()
}

/// Assembles a [`Telemetry`] from exporters.
pub struct TelemetryBuilder {
    content: span::ContentSettings,
    resource: Resource,
    settings: BatchSettings,
    stats: Arc<Stats>,
    spans: Vec<Pipeline<SpanData>>,
    events: Vec<Pipeline<SdkLogRecord>>,
    destinations: Vec<String>,
}

impl TelemetryBuilder {
    /// Adds a span destination with its own queue and export task (needs a Tokio runtime).
    pub fn exporter<E: SpanExporter + 'static>(
        mut self,
        name: &'static str,
        description: impl Into<String>,
        exporter: E,
    ) -> Self {
        let destination = Spans::new(exporter, &self.resource);
        self.spans.push(Pipeline::spawn(
            name,
            destination,
            self.settings,
            self.stats.clone(),
        ));
        self.destinations.push(description.into());
        self
    }

    /// Adds a destination for GenAI events (content captured as log records).
    pub fn event_exporter<E: LogExporter + 'static>(
        mut self,
        name: &'static str,
        description: impl Into<String>,
        exporter: E,
    ) -> Self {
        let destination = Events::new(exporter, &self.resource, scope());
        self.events.push(Pipeline::spawn(
            name,
            destination,
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
        let provider = SdkLoggerProvider::builder()
            .with_resource(self.resource.clone())
            .build();
        Telemetry {
            inner: Arc::new(Inner {
                spans: self.spans,
                events: self.events,
                content: self.content,
                scope: scope(),
                logger: provider.logger_with_scope(scope()),
                _logger_provider: provider,
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
            spans: Vec::new(),
            events: Vec::new(),
            destinations: Vec::new(),
        }
    }

    /// A builder with the configuration's resource, batching and content settings, and no
    /// destinations yet.
    pub fn configured(config: &Config, stats: Arc<Stats>) -> TelemetryBuilder {
        Telemetry::builder(resource(config), batch_settings(config), stats)
            .content(content_settings(config))
    }

    /// The destinations the configuration asks for: spans to each exporter, and events too
    /// when content is captured as events.
    pub fn from_config(config: &Config, stats: Arc<Stats>) -> Result<Telemetry, TelemetryError> {
        let events = content_settings(config).on_event;
        let mut builder = Telemetry::configured(config, stats);
        for kind in config.exporters() {
            builder = match kind {
                ExporterKind::Otlp => {
                    let otlp = &config.telemetry.otlp;
                    let protocol = match otlp.protocol {
                        OtlpProtocol::Grpc => "grpc",
                        OtlpProtocol::HttpProtobuf => "http/protobuf",
                    };
                    builder = builder.exporter(
                        "otlp",
                        format!("OTLP {protocol} to {}", otlp.traces_url()),
                        otlp::span_exporter(otlp)?,
                    );
                    if events {
                        builder = builder.event_exporter(
                            "otlp-logs",
                            format!("OTLP {protocol} events to {}", otlp.logs_url()),
                            otlp::log_exporter(otlp)?,
                        );
                    }
                    builder
                }
                ExporterKind::Console => {
                    builder = builder.exporter(
                        "console",
                        "console (stdout)",
                        console::ConsoleExporter::stdout(),
                    );
                    if events {
                        builder = builder.event_exporter(
                            "console-events",
                            "console events (stdout)",
                            console::ConsoleExporter::stdout(),
                        );
                    }
                    builder
                }
                ExporterKind::None => builder,
            };
        }
        Ok(builder.build())
    }

    pub fn destinations(&self) -> &[String] {
        &self.inner.destinations
    }

    /// Builds the exchange's span (and event) and offers them to every destination. Never waits.
    pub fn record(&self, exchange: &Exchange) {
        let inner = &*self.inner;
        let trace_id = inner.ids.new_trace_id();
        let span_id = inner.ids.new_span_id();
        if let Some((last, rest)) = inner.spans.split_last() {
            let data = span::build(exchange, trace_id, span_id, &inner.scope, inner.content);
            for p in rest {
                p.offer(data.clone());
            }
            last.offer(data);
        }
        if inner.content.on_event
            && let Some((last, rest)) = inner.events.split_last()
            && let Some(record) = events::build(
                &inner.logger,
                exchange,
                trace_id,
                span_id,
                inner.content.max_bytes,
            )
        {
            for p in rest {
                p.offer(record.clone());
            }
            last.offer(record);
        }
    }

    /// Exports everything recorded so far.
    pub async fn flush(&self) {
        for p in &self.inner.spans {
            p.flush().await;
        }
        for p in &self.inner.events {
            p.flush().await;
        }
    }

    /// Exports what is queued and stops every exporter, within `deadline` in all.
    pub async fn shutdown(&self, deadline: Duration) {
        let all = async {
            for p in &self.inner.spans {
                p.shutdown().await;
            }
            for p in &self.inner.events {
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
