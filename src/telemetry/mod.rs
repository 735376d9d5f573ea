//! Telemetry: finished exchanges become GenAI spans (and, with content captured as events,
//! `gen_ai.client.inference.operation.details` log records) and leave through export queues.
//!
//! Owns: span ids, the resource and instrumentation scope, the set of destinations (OTLP,
//! console) per signal, and their lifecycle (flush, shutdown). Does not: parse HTTP, or wait:
//! recording an exchange offers to each destination's bounded queue and returns.

pub mod console;
pub mod context;
pub mod events;
pub mod memory;
pub mod metrics;
pub mod otlp;
pub mod pipeline;
pub mod semconv;
pub mod span;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::logs::LoggerProvider;
use opentelemetry::trace::{SpanContext, SpanKind, TraceContextExt, TraceFlags, TraceState};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::{LogExporter, SdkLogRecord, SdkLogger, SdkLoggerProvider};
use opentelemetry_sdk::resource::TelemetryResourceDetector;
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample, SpanData, SpanExporter,
};

use crate::config::{Config, ExporterKind, OtlpConfig, OtlpProtocol, SamplerKind, SemconvVersion};
use crate::exchange::{Exchange, TraceStart};
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
    /// Destinations taking spans encoded as they are recorded (OTLP/HTTP).
    encoded: Vec<Pipeline<wire::EncodedSpan>>,
    events: Vec<(events::Form, Pipeline<SdkLogRecord>)>,
    metrics: Option<metrics::Metrics>,
    sampler: Sampler,
    stats: Arc<Stats>,
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

/// Offers `item` to each of `pipelines`, cloned for all but the last.
fn offer_to_all<T: Clone + Send + 'static>(pipelines: &[Pipeline<T>], item: T) {
    if let Some((last, rest)) = pipelines.split_last() {
        for p in rest {
            p.offer(item.clone());
        }
        last.offer(item);
    }
}

/// Assembles a [`Telemetry`] from exporters.
pub struct TelemetryBuilder {
    content: span::ContentSettings,
    sampler: Sampler,
    metrics: Vec<metrics::Destination>,
    names: metrics::Names,
    resource: Resource,
    settings: BatchSettings,
    stats: Arc<Stats>,
    spans: Vec<Pipeline<SpanData>>,
    encoded: Vec<Pipeline<wire::EncodedSpan>>,
    events: Vec<(events::Form, Pipeline<SdkLogRecord>)>,
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

    /// Adds an OTLP/HTTP span destination, taking spans encoded as they are recorded (see
    /// [`wire::EncodedSpan`]) on a queue and export task of its own.
    pub fn otlp_http_exporter(
        mut self,
        description: impl Into<String>,
        cfg: &OtlpConfig,
    ) -> Result<Self, TelemetryError> {
        let exporter = otlp::HttpSpanExporter::new(cfg, &self.resource, &scope())?;
        self.encoded.push(Pipeline::spawn(
            "otlp",
            exporter,
            self.settings,
            self.stats.clone(),
        ));
        self.destinations.push(description.into());
        Ok(self)
    }

    /// Adds a destination for GenAI events (content captured as log records), with content in
    /// the form it takes.
    pub fn event_exporter<E: LogExporter + 'static>(
        mut self,
        name: &'static str,
        description: impl Into<String>,
        exporter: E,
        form: events::Form,
    ) -> Self {
        let destination = Events::new(exporter, &self.resource, scope());
        let pipeline = Pipeline::spawn(name, destination, self.settings, self.stats.clone());
        self.events.push((form, pipeline));
        self.destinations.push(description.into());
        self
    }

    /// Where captured content goes (nowhere by default).
    pub fn content(mut self, settings: span::ContentSettings) -> Self {
        self.content = settings;
        self
    }

    /// Which exchanges get a span (all, by default).
    pub fn sampler(mut self, sampler: Sampler) -> Self {
        self.sampler = sampler;
        self
    }

    /// Adds a metrics destination (started with the rest at `build`).
    pub fn metric_exporter(
        mut self,
        destination: metrics::Destination,
        description: impl Into<String>,
    ) -> Self {
        self.metrics.push(destination);
        self.destinations.push(description.into());
        self
    }

    /// Which metric names to use.
    pub fn metric_names(mut self, names: metrics::Names) -> Self {
        self.names = names;
        self
    }

    pub fn build(self) -> Telemetry {
        let provider = SdkLoggerProvider::builder()
            .with_resource(self.resource.clone())
            .build();
        let metrics = (!self.metrics.is_empty()).then(|| {
            metrics::Metrics::start(
                self.metrics,
                self.resource.clone(),
                scope(),
                self.names,
                self.stats.clone(),
            )
        });
        Telemetry {
            inner: Arc::new(Inner {
                spans: self.spans,
                encoded: self.encoded,
                events: self.events,
                metrics,
                sampler: self.sampler,
                stats: self.stats,
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
            sampler: Sampler::AlwaysOn,
            metrics: Vec::new(),
            names: metrics::Names::default(),
            resource,
            settings,
            stats,
            spans: Vec::new(),
            encoded: Vec::new(),
            events: Vec::new(),
            destinations: Vec::new(),
        }
    }

    /// A builder with the configuration's resource, batching and content settings, and no
    /// destinations yet.
    pub fn configured(config: &Config, stats: Arc<Stats>) -> TelemetryBuilder {
        let t = &config.telemetry;
        Telemetry::builder(resource(config), batch_settings(config), stats)
            .content(content_settings(config))
            .sampler(sampler(t.sampler, t.sampler_arg))
            .metric_names(match t.semconv {
                SemconvVersion::V1_41 => metrics::Names::V1_41,
                SemconvVersion::Latest => metrics::Names::Latest,
            })
    }

    /// The destinations the configuration asks for: spans to each exporter, events too when
    /// content is captured as events, and metrics to each metric exporter.
    pub fn from_config(config: &Config, stats: Arc<Stats>) -> Result<Telemetry, TelemetryError> {
        let events = content_settings(config).on_event;
        let otlp = &config.telemetry.otlp;
        let protocol = match otlp.protocol {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        };
        let app_insights = || -> Result<_, TelemetryError> {
            let connection = config
                .telemetry
                .applicationinsights
                .connection_string
                .as_deref()
                .unwrap_or_default();
            let ca_file = config.telemetry.applicationinsights.ca_file.as_deref();
            let client = otlp::HttpExportClient::new(ca_file, otlp.timeout.0)?;
            opentelemetry_application_insights::Exporter::new_from_connection_string(
                connection, client,
            )
            .map_err(|e| TelemetryError::Exporter(format!("Application Insights: {e}")))
        };
        let mut builder = Telemetry::configured(config, stats.clone());
        for kind in config.exporters() {
            builder = match kind {
                ExporterKind::Otlp => {
                    let description = format!("OTLP {protocol} to {}", otlp.traces_url());
                    builder = match otlp.protocol {
                        OtlpProtocol::HttpProtobuf => {
                            builder.otlp_http_exporter(description, otlp)?
                        }
                        OtlpProtocol::Grpc => {
                            builder.exporter("otlp", description, otlp::grpc_span_exporter(otlp)?)
                        }
                    };
                    if events {
                        builder = builder.event_exporter(
                            "otlp-logs",
                            format!("OTLP {protocol} events to {}", otlp.logs_url()),
                            otlp::log_exporter(otlp)?,
                            events::Form::Structured,
                        );
                    }
                    builder
                }
                ExporterKind::ApplicationInsights => {
                    builder =
                        builder.exporter("appinsights", "Application Insights", app_insights()?);
                    if events {
                        builder = builder.event_exporter(
                            "appinsights-logs",
                            "Application Insights events",
                            app_insights()?,
                            events::Form::Text,
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
                            events::Form::Structured,
                        );
                    }
                    builder
                }
                ExporterKind::None => builder,
            };
        }
        let m = &config.telemetry.metrics;
        let temporality = match m.temporality {
            crate::config::Temporality::Cumulative => {
                opentelemetry_sdk::metrics::Temporality::Cumulative
            }
            crate::config::Temporality::Delta => opentelemetry_sdk::metrics::Temporality::Delta,
            crate::config::Temporality::LowMemory => {
                opentelemetry_sdk::metrics::Temporality::LowMemory
            }
        };
        let timeout = config.telemetry.batch.export_timeout.0;
        for kind in config.metric_exporters() {
            builder = match kind {
                ExporterKind::Otlp => builder.metric_exporter(
                    metrics::Destination::new(
                        "otlp-metrics",
                        otlp::metric_exporter(otlp, temporality)?,
                        temporality,
                        m.interval.0,
                        timeout,
                        stats.clone(),
                    ),
                    format!("OTLP {protocol} metrics to {}", otlp.metrics_url()),
                ),
                ExporterKind::ApplicationInsights => {
                    let exporter = app_insights()?;
                    // Application Insights takes delta temporality only.
                    let delta =
                        opentelemetry_sdk::metrics::exporter::PushMetricExporter::temporality(
                            &exporter,
                        );
                    builder.metric_exporter(
                        metrics::Destination::new(
                            "appinsights-metrics",
                            exporter,
                            delta,
                            m.interval.0,
                            timeout,
                            stats.clone(),
                        ),
                        "Application Insights metrics",
                    )
                }
                // A metric dump on stdout every interval helps nobody; spans are there.
                ExporterKind::Console | ExporterKind::None => builder,
            };
        }
        Ok(builder.build())
    }

    /// Where the proxy span of a request arriving with `headers` sits: the app's trace when
    /// it sent a valid `traceparent`, a new one otherwise; and whether it is sampled.
    pub fn begin_trace(&self, headers: &http::HeaderMap, operation: &str) -> TraceStart {
        let inner = &*self.inner;
        let text = |name: &http::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        let parent = text(&context::TRACEPARENT).and_then(context::parse_traceparent);
        let trace_state = text(&context::TRACESTATE)
            .and_then(|v| v.parse::<TraceState>().ok())
            .unwrap_or_default();
        let trace_id = parent.map_or_else(|| inner.ids.new_trace_id(), |p| p.trace_id);
        let parent_context = parent.map(|p| {
            let flags = if p.sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            };
            Context::new().with_remote_span_context(SpanContext::new(
                p.trace_id,
                p.span_id,
                flags,
                true,
                trace_state.clone(),
            ))
        });
        let decision = inner.sampler.should_sample(
            parent_context.as_ref(),
            trace_id,
            operation,
            &SpanKind::Client,
            &[],
            &[],
        );
        TraceStart {
            trace_id,
            span_id: inner.ids.new_span_id(),
            parent: parent.map(|p| p.span_id),
            sampled: decision.decision == SamplingDecision::RecordAndSample,
            trace_state: decision.trace_state,
        }
    }

    pub fn destinations(&self) -> &[String] {
        &self.inner.destinations
    }

    /// `(exporter, signal, items queued)` for every export queue.
    pub fn queue_depths(&self) -> Vec<(&'static str, &'static str, usize)> {
        let spans = self
            .inner
            .spans
            .iter()
            .map(|p| (p.name(), p.depth()))
            .chain(self.inner.encoded.iter().map(|p| (p.name(), p.depth())))
            .map(|(name, depth)| (name, "spans", depth));
        let events = self
            .inner
            .events
            .iter()
            .map(|(_, p)| (p.name(), "events", p.depth()));
        spans.chain(events).collect()
    }

    /// Records the exchange's metrics, and its span (when sampled) and event (when content is
    /// captured as events), offering each to every destination. Never waits. The exchange's
    /// texts are moved out of it; it is taken by reference because moving it in copied all of
    /// its 1.2 KB.
    pub fn record(&self, exchange: &mut Exchange) {
        let inner = &*self.inner;
        if let Some(metrics) = &inner.metrics {
            metrics.record(exchange);
        }
        if !exchange.trace.sampled {
            Stats::incr(&inner.stats.spans_sampled_out);
        }
        let wants_span =
            exchange.trace.sampled && !(inner.spans.is_empty() && inner.encoded.is_empty());
        let wants_event =
            inner.content.on_event && exchange.content.is_some() && !inner.events.is_empty();
        if !wants_span && !wants_event {
            return;
        }
        // Built once for the span and the events alike, the texts moved out of the exchange.
        let attributes = span::attributes(exchange);
        if wants_event {
            // Each form is built once, whatever the number of destinations taking it.
            let mut built: Vec<(events::Form, SdkLogRecord)> = Vec::new();
            for (form, pipeline) in &inner.events {
                let record = match built.iter().find(|(f, _)| f == form) {
                    Some((_, r)) => r.clone(),
                    None => {
                        let Some(r) = events::build(
                            &inner.logger,
                            exchange,
                            &attributes,
                            inner.content.max_bytes,
                            *form,
                        ) else {
                            continue;
                        };
                        built.push((*form, r.clone()));
                        r
                    }
                };
                pipeline.offer(record);
            }
        }
        if wants_span {
            let data = span::build(exchange, attributes, &inner.scope, inner.content);
            if !inner.encoded.is_empty() {
                offer_to_all(&inner.encoded, wire::EncodedSpan::new(&data));
            }
            // Without such destinations the span is dropped here, on the thread that built it.
            offer_to_all(&inner.spans, data);
        }
    }

    /// Exports everything recorded so far.
    pub async fn flush(&self) {
        for p in &self.inner.spans {
            p.flush().await;
        }
        for p in &self.inner.encoded {
            p.flush().await;
        }
        for (_, p) in &self.inner.events {
            p.flush().await;
        }
        if let Some(m) = &self.inner.metrics {
            m.flush().await;
        }
    }

    /// Exports what is queued and stops every exporter, within `deadline` in all.
    pub async fn shutdown(&self, deadline: Duration) {
        let all = async {
            for p in &self.inner.spans {
                p.shutdown().await;
            }
            for p in &self.inner.encoded {
                p.shutdown().await;
            }
            for (_, p) in &self.inner.events {
                p.shutdown().await;
            }
            if let Some(m) = &self.inner.metrics {
                m.shutdown().await;
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

/// The sampler `OTEL_TRACES_SAMPLER` names; the ratio defaults to 1.
pub fn sampler(kind: SamplerKind, arg: Option<f64>) -> Sampler {
    let ratio = arg.unwrap_or(1.0);
    match kind {
        SamplerKind::AlwaysOn => Sampler::AlwaysOn,
        SamplerKind::AlwaysOff => Sampler::AlwaysOff,
        SamplerKind::TraceIdRatio => Sampler::TraceIdRatioBased(ratio),
        SamplerKind::ParentbasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        SamplerKind::ParentbasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        SamplerKind::ParentbasedTraceIdRatio => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
        }
    }
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
