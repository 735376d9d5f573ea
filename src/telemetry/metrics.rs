//! Metrics: the GenAI client metrics of the conventions, the proxy's own cost, rate-limit
//! headroom, and the proxy's counters, exported on the Tokio runtime.
//!
//! Owns: the instruments (names, units, advised bucket boundaries, attributes), recording an
//! [`Exchange`] into them (every exchange, sampled or not), and one export task per destination
//! that collects through its own reader at the configured interval and temporality. Each
//! destination has its own reader, so a slow one cannot hold up another. Does not: decide where
//! metrics go (`telemetry`).

use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::metrics::{Gauge, Histogram, Meter, MeterProvider};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};

use super::semconv::*;
use crate::exchange::Exchange;
use crate::stats::{LogLimiter, OPERATIONS, OUTCOMES, Stats};

/// The conventions' advised boundaries for durations, in seconds.
const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// The conventions' advised boundaries for token counts.
const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
/// The proxy's own time per request: microseconds matter here.
const OVERHEAD_BUCKETS: [f64; 13] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1,
];

/// Which metric names to use: the released v1.41 ones, or the GenAI repository's unreleased
/// renames (`semconv = "latest"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Names {
    #[default]
    V1_41,
    Latest,
}

#[derive(Debug)]
struct Instruments {
    names: Names,
    duration: Histogram<f64>,
    /// v1.41: one histogram with `gen_ai.token.type`.
    tokens: Histogram<u64>,
    /// latest: counters per token kind.
    token_counters: [opentelemetry::metrics::Counter<u64>; 2],
    time_to_first_chunk: Histogram<f64>,
    time_per_output_chunk: Histogram<f64>,
    overhead: Histogram<f64>,
    remaining_tokens: Gauge<i64>,
    remaining_requests: Gauge<i64>,
}

impl Instruments {
    fn new(meter: &Meter, names: Names) -> Instruments {
        let (duration, ttfc, tpoc) = match names {
            Names::V1_41 => (
                GEN_AI_CLIENT_OPERATION_DURATION,
                GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK,
                GEN_AI_CLIENT_OPERATION_TIME_PER_OUTPUT_CHUNK,
            ),
            Names::Latest => (
                GEN_AI_CLIENT_INFERENCE_DURATION,
                GEN_AI_CLIENT_INFERENCE_TIME_TO_FIRST_CHUNK,
                GEN_AI_CLIENT_INFERENCE_TIME_PER_OUTPUT_CHUNK,
            ),
        };
        let seconds = |name: &'static str, description: &'static str, buckets: &[f64]| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(buckets.to_vec())
                .build()
        };
        Instruments {
            names,
            duration: seconds(duration, "GenAI operation duration", &DURATION_BUCKETS),
            tokens: meter
                .u64_histogram(GEN_AI_CLIENT_TOKEN_USAGE)
                .with_unit("{token}")
                .with_description("Number of input and output tokens used")
                .with_boundaries(TOKEN_BUCKETS.to_vec())
                .build(),
            token_counters: [
                meter
                    .u64_counter(GEN_AI_CLIENT_INFERENCE_USAGE_INPUT_TOKENS)
                    .with_unit("{token}")
                    .build(),
                meter
                    .u64_counter(GEN_AI_CLIENT_INFERENCE_USAGE_OUTPUT_TOKENS)
                    .with_unit("{token}")
                    .build(),
            ],
            time_to_first_chunk: seconds(
                ttfc,
                "Time to receive the first chunk of a streamed response",
                &DURATION_BUCKETS,
            ),
            time_per_output_chunk: seconds(
                tpoc,
                "Time between consecutive chunks of a streamed response",
                &DURATION_BUCKETS,
            ),
            overhead: seconds(
                GENAI_TAP_PROXY_OVERHEAD,
                "Time the proxy added to a request, the upstream's time excluded",
                &OVERHEAD_BUCKETS,
            ),
            remaining_tokens: meter
                .i64_gauge(GENAI_TAP_RATELIMIT_REMAINING_TOKENS)
                .with_unit("{token}")
                .with_description("x-ratelimit-remaining-tokens of the latest response")
                .build(),
            remaining_requests: meter
                .i64_gauge(GENAI_TAP_RATELIMIT_REMAINING_REQUESTS)
                .with_unit("{request}")
                .with_description("x-ratelimit-remaining-requests of the latest response")
                .build(),
        }
    }

    fn record(&self, ex: &Exchange) {
        let mut base = Vec::with_capacity(8);
        base.push(KeyValue::new(
            GEN_AI_OPERATION_NAME,
            ex.api.operation().as_str(),
        ));
        base.push(KeyValue::new(
            GEN_AI_PROVIDER_NAME,
            opentelemetry::Value::String(ex.target.provider.clone().into()),
        ));
        base.push(KeyValue::new(
            SERVER_ADDRESS,
            opentelemetry::Value::String(ex.target.host.clone().into()),
        ));
        base.push(KeyValue::new(SERVER_PORT, i64::from(ex.target.port)));
        // Shared, so the attribute sets below copy a pointer, not the name.
        let shared = |s: &str| opentelemetry::Value::String(Arc::<str>::from(s).into());
        if let Some(model) = &ex.request.model {
            base.push(KeyValue::new(GEN_AI_REQUEST_MODEL, shared(model)));
        }
        if let Some(model) = &ex.response.model {
            base.push(KeyValue::new(GEN_AI_RESPONSE_MODEL, shared(model)));
        }

        let duration = ex.duration.as_secs_f64();
        match &ex.failure {
            None => self.duration.record(duration, &base),
            Some(failure) => {
                let mut with_error = base.clone();
                with_error.push(KeyValue::new(ERROR_TYPE, failure.error_type()));
                self.duration.record(duration, &with_error);
            }
        }

        let usage = &ex.response.usage;
        for (kind, count) in [
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
        ] {
            let Some(count) = count.and_then(|c| u64::try_from(c).ok()) else {
                continue;
            };
            match self.names {
                Names::V1_41 => {
                    let mut attrs = base.clone();
                    attrs.push(KeyValue::new(GEN_AI_TOKEN_TYPE, kind));
                    self.tokens.record(count, &attrs);
                }
                Names::Latest => {
                    self.token_counters[usize::from(kind == "output")].add(count, &base);
                }
            }
        }
        if ex.streamed {
            if let Some(ttfc) = ex.time_to_first_chunk {
                self.time_to_first_chunk.record(ttfc.as_secs_f64(), &base);
            }
            for gap in &ex.chunk_gaps_us {
                self.time_per_output_chunk
                    .record(f64::from(*gap) / 1_000_000.0, &base);
            }
        }
        if let Some(overhead) = ex.overhead {
            self.overhead.record(
                overhead.as_secs_f64(),
                &[
                    KeyValue::new(GEN_AI_OPERATION_NAME, ex.api.operation().as_str()),
                    KeyValue::new(GEN_AI_REQUEST_STREAM, ex.streamed),
                ],
            );
        }
        let limits = [
            (
                &self.remaining_tokens,
                ex.upstream.ratelimit_remaining_tokens,
            ),
            (
                &self.remaining_requests,
                ex.upstream.ratelimit_remaining_requests,
            ),
        ];
        if limits.iter().any(|(_, v)| v.is_some()) {
            let mut attrs = vec![base[1].clone(), base[2].clone()];
            if let Some(model) = ex.response.model.as_ref().or(ex.request.model.as_ref()) {
                attrs.push(KeyValue::new(GEN_AI_REQUEST_MODEL, model.clone()));
            }
            for (gauge, value) in limits {
                if let Some(v) = value {
                    gauge.record(v, &attrs);
                }
            }
        }
    }
}

/// A reader the meter provider and our export task share.
#[derive(Debug, Clone)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

enum Control {
    Flush(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// A metric exporter waiting to be started, with the temporality its reader should use.
pub struct Destination {
    name: &'static str,
    reader: Arc<ManualReader>,
    start: Box<dyn FnOnce(Arc<ManualReader>, mpsc::Receiver<Control>) + Send>,
}

impl Destination {
    pub fn new<E: PushMetricExporter + 'static>(
        name: &'static str,
        exporter: E,
        temporality: Temporality,
        interval: Duration,
        timeout: Duration,
        stats: Arc<Stats>,
    ) -> Destination {
        let reader = Arc::new(
            ManualReader::builder()
                .with_temporality(temporality)
                .build(),
        );
        Destination {
            name,
            reader,
            start: Box::new(move |reader, rx| {
                tokio::spawn(run(name, exporter, reader, interval, timeout, rx, stats));
            }),
        }
    }
}

/// The instruments and the export tasks behind them.
#[derive(Debug)]
pub struct Metrics {
    instruments: Instruments,
    controls: Vec<(&'static str, mpsc::Sender<Control>)>,
    _provider: SdkMeterProvider,
}

impl Metrics {
    /// Starts one export task per destination (needs a Tokio runtime).
    pub fn start(
        destinations: Vec<Destination>,
        resource: Resource,
        scope: InstrumentationScope,
        names: Names,
        stats: Arc<Stats>,
    ) -> Metrics {
        let mut builder = SdkMeterProvider::builder().with_resource(resource);
        let mut controls = Vec::new();
        for d in &destinations {
            builder = builder.with_reader(SharedReader(d.reader.clone()));
        }
        let provider = builder.build();
        for d in destinations {
            let (tx, rx) = mpsc::channel(4);
            (d.start)(d.reader, rx);
            controls.push((d.name, tx));
        }
        let meter = provider.meter_with_scope(scope);
        observe_stats(&meter, stats);
        Metrics {
            instruments: Instruments::new(&meter, names),
            controls,
            _provider: provider,
        }
    }

    /// Records an exchange; never waits.
    pub fn record(&self, exchange: &Exchange) {
        self.instruments.record(exchange);
    }

    pub async fn flush(&self) {
        for (_, tx) in &self.controls {
            let (done, wait) = oneshot::channel();
            if tx.send(Control::Flush(done)).await.is_ok() {
                let _ = wait.await;
            }
        }
    }

    /// A last collection and export, then the exporters stop.
    pub async fn shutdown(&self) {
        for (_, tx) in &self.controls {
            let (done, wait) = oneshot::channel();
            if tx.send(Control::Shutdown(done)).await.is_ok() {
                let _ = wait.await;
            }
        }
    }
}

/// The proxy's counters as observable counters, read at each collection.
fn observe_stats(meter: &Meter, stats: Arc<Stats>) {
    for (name, help, _) in stats.snapshot().fields() {
        let stats = stats.clone();
        meter
            .u64_observable_counter(format!("genai_tap.{name}"))
            .with_description(help)
            .with_callback(move |o| {
                if let Some((_, _, v)) = stats
                    .snapshot()
                    .fields()
                    .into_iter()
                    .find(|(n, ..)| *n == name)
                {
                    o.observe(v, &[]);
                }
            })
            .build();
    }
    meter
        .u64_observable_counter("genai_tap.exchanges")
        .with_description("Finished GenAI exchanges by operation and outcome")
        .with_callback(move |o| {
            let snapshot = stats.snapshot();
            for (i, operation) in OPERATIONS.iter().enumerate() {
                for (j, outcome) in OUTCOMES.iter().enumerate() {
                    o.observe(
                        snapshot.exchanges[i][j],
                        &[
                            KeyValue::new(GEN_AI_OPERATION_NAME, *operation),
                            KeyValue::new("outcome", *outcome),
                        ],
                    );
                }
            }
        })
        .build();
}

async fn run<E: PushMetricExporter>(
    name: &'static str,
    exporter: E,
    reader: Arc<ManualReader>,
    interval: Duration,
    timeout: Duration,
    mut rx: mpsc::Receiver<Control>,
    stats: Arc<Stats>,
) {
    let failures = LogLimiter::new(Duration::from_secs(30));
    let export = async |reader: &ManualReader| {
        let mut rm = ResourceMetrics::default();
        if let Err(e) = reader.collect(&mut rm) {
            tracing::debug!(exporter = name, error = %e, "metric collection failed");
            return;
        }
        let error = match tokio::time::timeout(timeout, exporter.export(&rm)).await {
            Ok(Ok(())) => {
                Stats::incr(&stats.metric_exports);
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {timeout:?}"),
        };
        Stats::incr(&stats.metric_export_failures);
        if let Some(suppressed) = failures.check() {
            tracing::warn!(exporter = name, suppressed, %error, "metric export failed");
        }
    };
    let mut tick = tokio::time::interval_at(Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => export(&reader).await,
            control = rx.recv() => match control {
                Some(Control::Flush(done)) => {
                    export(&reader).await;
                    let _ = done.send(());
                }
                Some(Control::Shutdown(done)) => {
                    export(&reader).await;
                    let _ = exporter.shutdown();
                    let _ = done.send(());
                    return;
                }
                None => {
                    export(&reader).await;
                    let _ = exporter.shutdown();
                    return;
                }
            },
        }
    }
}
