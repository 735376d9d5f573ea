//! Metrics: the GenAI client metrics of the conventions, the proxy's own cost, rate-limit
//! headroom, and the proxy's counters, exported on the Tokio runtime.
//!
//! Owns: the instruments (names, units, advised bucket boundaries, attributes), recording an
//! [`Exchange`] into them (every exchange, sampled or not), and one export task per destination
//! that collects through its own reader at the configured interval and temporality. Each
//! destination has its own reader, so a slow one cannot hold up another. Does not: decide where
//! metrics go (`telemetry`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use opentelemetry::metrics::{
    BoundCounter, BoundGauge, BoundHistogram, Gauge, Histogram, Meter, MeterProvider,
};
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
use crate::exchange::{Exchange, Target};
use crate::genai::Operation;
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

    /// Records through the exchange's series: bound instruments, so a measurement costs no
    /// attribute hashing. Failures take the unbound path with `error.type` added (they are rare,
    /// and their types many).
    fn record(&self, ex: &Exchange, series: &Series) {
        let duration = ex.duration.as_secs_f64();
        match &ex.failure {
            None => series
                .duration
                .get_or_init(|| self.duration.bind(&series.attributes))
                .record(duration),
            Some(failure) => {
                let mut with_error = series.attributes.clone();
                with_error.push(KeyValue::new(ERROR_TYPE, failure.error_type()));
                self.duration.record(duration, &with_error);
            }
        }

        let usage = &ex.response.usage;
        for (i, count) in [usage.input_tokens, usage.output_tokens]
            .into_iter()
            .enumerate()
        {
            let Some(count) = count.and_then(|c| u64::try_from(c).ok()) else {
                continue;
            };
            match self.names {
                Names::V1_41 => series.tokens[i]
                    .get_or_init(|| {
                        let mut attrs = series.attributes.clone();
                        attrs.push(KeyValue::new(GEN_AI_TOKEN_TYPE, TOKEN_TYPES[i]));
                        self.tokens.bind(&attrs)
                    })
                    .record(count),
                Names::Latest => series.token_counters[i]
                    .get_or_init(|| self.token_counters[i].bind(&series.attributes))
                    .add(count),
            }
        }
        if ex.streamed {
            if let Some(ttfc) = ex.time_to_first_chunk {
                series
                    .time_to_first_chunk
                    .get_or_init(|| self.time_to_first_chunk.bind(&series.attributes))
                    .record(ttfc.as_secs_f64());
            }
            if !ex.chunk_gaps_us.is_empty() {
                let per_chunk = series
                    .time_per_output_chunk
                    .get_or_init(|| self.time_per_output_chunk.bind(&series.attributes));
                for gap in &ex.chunk_gaps_us {
                    per_chunk.record(f64::from(*gap) / 1_000_000.0);
                }
            }
        }
        if let Some(overhead) = ex.overhead {
            series.overhead[usize::from(ex.streamed)]
                .get_or_init(|| {
                    self.overhead.bind(&[
                        KeyValue::new(GEN_AI_OPERATION_NAME, series.operation.as_str()),
                        KeyValue::new(GEN_AI_REQUEST_STREAM, ex.streamed),
                    ])
                })
                .record(overhead.as_secs_f64());
        }
        let limits = [
            ex.upstream.ratelimit_remaining_tokens,
            ex.upstream.ratelimit_remaining_requests,
        ];
        for (i, value) in limits.into_iter().enumerate() {
            let Some(value) = value else { continue };
            series.limits[i]
                .get_or_init(|| {
                    let gauge = [&self.remaining_tokens, &self.remaining_requests][i];
                    let mut attrs = vec![
                        KeyValue::new(GEN_AI_PROVIDER_NAME, series.target.provider.clone()),
                        KeyValue::new(SERVER_ADDRESS, series.target.host.clone()),
                    ];
                    let model = series.response_model.as_ref();
                    if let Some(model) = model.or(series.request_model.as_ref()) {
                        attrs.push(KeyValue::new(GEN_AI_REQUEST_MODEL, model.clone()));
                    }
                    gauge.bind(&attrs)
                })
                .record(value);
        }
    }
}

/// `gen_ai.token.type` of `[input, output]`.
const TOKEN_TYPES: [&str; 2] = ["input", "output"];

/// How many series keep their bound instruments. Past it, the series at the back of the cache
/// (one not recorded lately: each hit moves to the front) gives its place up; its handles are
/// dropped, so the SDK may evict its points as usual.
const MAX_SERIES: usize = 64;

/// One set of GenAI attributes (operation, provider, server, models) and the instruments bound
/// to it, each bound the first time it records: binding up front would make cumulative readers
/// export empty points (a time-to-first-chunk for a series that never streamed).
#[derive(Debug)]
struct Series {
    operation: Operation,
    target: Target,
    request_model: Option<Arc<str>>,
    response_model: Option<Arc<str>>,
    /// The attributes every GenAI instrument shares.
    attributes: Vec<KeyValue>,
    duration: OnceLock<BoundHistogram<f64>>,
    tokens: [OnceLock<BoundHistogram<u64>>; 2],
    token_counters: [OnceLock<BoundCounter<u64>>; 2],
    time_to_first_chunk: OnceLock<BoundHistogram<f64>>,
    time_per_output_chunk: OnceLock<BoundHistogram<f64>>,
    /// By `gen_ai.request.stream`.
    overhead: [OnceLock<BoundHistogram<f64>>; 2],
    /// Remaining tokens, remaining requests.
    limits: [OnceLock<BoundGauge<i64>>; 2],
}

impl Series {
    fn new(ex: &Exchange) -> Series {
        let operation = ex.api.operation();
        let request_model = ex.request.model.as_deref().map(Arc::<str>::from);
        let response_model = ex.response.model.as_deref().map(Arc::<str>::from);
        let mut attributes = vec![
            KeyValue::new(GEN_AI_OPERATION_NAME, operation.as_str()),
            KeyValue::new(GEN_AI_PROVIDER_NAME, ex.target.provider.clone()),
            KeyValue::new(SERVER_ADDRESS, ex.target.host.clone()),
            KeyValue::new(SERVER_PORT, i64::from(ex.target.port)),
        ];
        if let Some(model) = &request_model {
            attributes.push(KeyValue::new(GEN_AI_REQUEST_MODEL, model.clone()));
        }
        if let Some(model) = &response_model {
            attributes.push(KeyValue::new(GEN_AI_RESPONSE_MODEL, model.clone()));
        }
        Series {
            operation,
            target: ex.target.clone(),
            request_model,
            response_model,
            attributes,
            duration: OnceLock::new(),
            tokens: Default::default(),
            token_counters: Default::default(),
            time_to_first_chunk: OnceLock::new(),
            time_per_output_chunk: OnceLock::new(),
            overhead: Default::default(),
            limits: Default::default(),
        }
    }

    fn is_for(&self, ex: &Exchange) -> bool {
        self.operation == ex.api.operation()
            && self.target == ex.target
            && self.request_model.as_deref() == ex.request.model.as_deref()
            && self.response_model.as_deref() == ex.response.model.as_deref()
    }
}

/// The series recorded lately, the busiest near the front.
#[derive(Debug, Default)]
struct SeriesCache(Mutex<VecDeque<Arc<Series>>>);

impl SeriesCache {
    fn get(&self, ex: &Exchange) -> Arc<Series> {
        let mut cache = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = cache.iter().position(|s| s.is_for(ex)) {
            if i > 0 {
                // Keeps the busiest series at the front, where the search starts.
                cache.swap(0, i);
            }
            return cache[0].clone();
        }
        let series = Arc::new(Series::new(ex));
        if cache.len() == MAX_SERIES {
            cache.pop_back();
        }
        cache.push_front(series.clone());
        series
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
    series: SeriesCache,
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
            series: SeriesCache::default(),
            controls,
            _provider: provider,
        }
    }

    /// Records an exchange; never waits.
    pub fn record(&self, exchange: &Exchange) {
        self.instruments
            .record(exchange, &self.series.get(exchange));
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

#[cfg(test)]
mod tests {
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};

    use super::*;
    use crate::exchange::Failure;

    /// A meter on a manual reader, with the instruments and the series cache the proxy uses.
    struct Bench {
        reader: SharedReader,
        instruments: Instruments,
        series: SeriesCache,
        _provider: SdkMeterProvider,
    }

    impl Bench {
        fn new(names: Names, temporality: Temporality) -> Bench {
            let reader = SharedReader(Arc::new(
                ManualReader::builder()
                    .with_temporality(temporality)
                    .build(),
            ));
            let provider = SdkMeterProvider::builder()
                .with_reader(reader.clone())
                .build();
            let meter = provider.meter("test");
            Bench {
                reader,
                instruments: Instruments::new(&meter, names),
                series: SeriesCache::default(),
                _provider: provider,
            }
        }

        fn record(&self, ex: &Exchange) {
            self.instruments.record(ex, &self.series.get(ex));
        }

        fn collect(&self) -> Collected {
            let mut rm = ResourceMetrics::default();
            self.reader.collect(&mut rm).unwrap();
            Collected(rm)
        }
    }

    /// One collection's output.
    struct Collected(ResourceMetrics);

    impl Collected {
        /// `(attributes, count, sum)` of every point of a histogram, or of a sum's points
        /// (count 1), or of a gauge's; nothing when the metric was not exported.
        fn points(&self, name: &str) -> Vec<(Vec<KeyValue>, u64, f64)> {
            let rm = &self.0;
            let attrs = |a: &mut dyn Iterator<Item = &KeyValue>| {
                let mut a: Vec<KeyValue> = a.cloned().collect();
                a.sort_by(|x, y| x.key.cmp(&y.key));
                a
            };
            let mut out = Vec::new();
            for m in rm.scope_metrics().flat_map(|s| s.metrics()) {
                if m.name() != name {
                    continue;
                }
                match m.data() {
                    AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                        for p in h.data_points() {
                            out.push((attrs(&mut p.attributes()), p.count(), p.sum()));
                        }
                    }
                    AggregatedMetrics::U64(MetricData::Histogram(h)) => {
                        for p in h.data_points() {
                            out.push((attrs(&mut p.attributes()), p.count(), p.sum() as f64));
                        }
                    }
                    AggregatedMetrics::U64(MetricData::Sum(s)) => {
                        for p in s.data_points() {
                            out.push((attrs(&mut p.attributes()), 1, p.value() as f64));
                        }
                    }
                    AggregatedMetrics::I64(MetricData::Gauge(g)) => {
                        for p in g.data_points() {
                            out.push((attrs(&mut p.attributes()), 1, p.value() as f64));
                        }
                    }
                    other => panic!("{name}: unexpected data {other:?}"),
                }
            }
            out
        }
    }

    fn has(attrs: &[KeyValue], key: &str, value: &str) -> bool {
        attrs
            .iter()
            .any(|kv| kv.key.as_str() == key && kv.value.as_str() == value)
    }

    fn chat(model: &str, input: i64, output: i64) -> Exchange {
        let mut ex = Exchange::example();
        ex.request.model = Some(model.into());
        ex.response.model = Some(format!("{model}-2024"));
        ex.response.usage.input_tokens = Some(input);
        ex.response.usage.output_tokens = Some(output);
        ex.overhead = Some(Duration::from_micros(40));
        ex
    }

    #[test]
    fn every_series_keeps_its_own_points_when_there_are_more_than_the_cache_holds() {
        let bench = Bench::new(Names::V1_41, Temporality::Cumulative);
        let models: Vec<String> = (0..MAX_SERIES + 9).map(|i| format!("m{i}")).collect();
        // Twice round: every series is evicted between its two exchanges.
        for round in 1..=2 {
            for (i, model) in models.iter().enumerate() {
                bench.record(&chat(model, i as i64, 10 * round));
            }
        }
        let got = bench.collect();
        let tokens = got.points(GEN_AI_CLIENT_TOKEN_USAGE);
        assert_eq!(tokens.len(), 2 * models.len(), "input and output per model");
        for (i, model) in models.iter().enumerate() {
            let of = |kind: &str| {
                tokens
                    .iter()
                    .find(|(a, ..)| {
                        has(a, GEN_AI_REQUEST_MODEL, model)
                            && has(a, GEN_AI_RESPONSE_MODEL, &format!("{model}-2024"))
                            && has(a, GEN_AI_TOKEN_TYPE, kind)
                            && has(a, GEN_AI_OPERATION_NAME, "chat")
                            && has(a, GEN_AI_PROVIDER_NAME, "openai")
                            && has(a, SERVER_ADDRESS, "api.openai.com")
                    })
                    .map(|(_, count, sum)| (*count, *sum))
            };
            assert_eq!(of("input"), Some((2, 2.0 * i as f64)), "{model}");
            assert_eq!(of("output"), Some((2, 30.0)), "{model}");
        }
        let durations = got.points(GEN_AI_CLIENT_OPERATION_DURATION);
        assert_eq!(durations.len(), models.len());
        assert!(durations.iter().all(|(_, count, _)| *count == 2));
        let overhead = got.points(GENAI_TAP_PROXY_OVERHEAD);
        assert_eq!(overhead.len(), 1, "one series: chat, not streamed");
        assert_eq!(overhead[0].1, 2 * models.len() as u64);
        assert!(has(&overhead[0].0, GEN_AI_OPERATION_NAME, "chat"));
    }

    #[test]
    fn instruments_a_series_never_used_export_no_empty_points() {
        let bench = Bench::new(Names::V1_41, Temporality::Cumulative);
        let mut plain = Exchange::example();
        plain.response.usage.input_tokens = Some(3);
        bench.record(&plain);
        let mut failed = Exchange::example();
        failed.failure = Some(Failure::Status(429));
        bench.record(&failed);

        let got = bench.collect();
        assert!(
            got.points(GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK)
                .is_empty()
        );
        assert!(
            got.points(GEN_AI_CLIENT_OPERATION_TIME_PER_OUTPUT_CHUNK)
                .is_empty()
        );
        assert!(got.points(GENAI_TAP_RATELIMIT_REMAINING_TOKENS).is_empty());
        assert!(got.points(GENAI_TAP_PROXY_OVERHEAD).is_empty());
        let tokens = got.points(GEN_AI_CLIENT_TOKEN_USAGE);
        assert_eq!(
            tokens.len(),
            1,
            "no output count, no output point: {tokens:?}"
        );
        let durations = got.points(GEN_AI_CLIENT_OPERATION_DURATION);
        assert_eq!(durations.len(), 2, "{durations:?}");
        let (ok, err): (Vec<_>, Vec<_>) = durations
            .iter()
            .partition(|(a, ..)| !a.iter().any(|kv| kv.key.as_str() == ERROR_TYPE));
        assert_eq!((ok.len(), ok[0].1), (1, 1));
        assert!(has(&err[0].0, ERROR_TYPE, "429"));
        assert!(has(&err[0].0, GEN_AI_REQUEST_MODEL, "gpt-4o"));
    }

    #[test]
    fn streams_record_every_chunk_gap_and_rate_limits_the_latest_value() {
        let bench = Bench::new(Names::V1_41, Temporality::Delta);
        let mut ex = chat("gpt-4o", 5, 7);
        ex.streamed = true;
        ex.time_to_first_chunk = Some(Duration::from_millis(200));
        ex.chunk_gaps_us = vec![1_000, 2_000, 3_000];
        ex.upstream.ratelimit_remaining_tokens = Some(900);
        bench.record(&ex);
        ex.upstream.ratelimit_remaining_tokens = Some(800);
        ex.upstream.ratelimit_remaining_requests = Some(9);
        bench.record(&ex);

        let got = bench.collect();
        let gaps = got.points(GEN_AI_CLIENT_OPERATION_TIME_PER_OUTPUT_CHUNK);
        assert_eq!(gaps.len(), 1);
        assert_eq!(gaps[0].1, 6);
        assert!((gaps[0].2 - 0.012).abs() < 1e-9, "{}", gaps[0].2);
        let ttfc = got.points(GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK);
        assert_eq!((ttfc[0].1, ttfc[0].2), (2, 0.4));
        let overhead = got.points(GENAI_TAP_PROXY_OVERHEAD);
        assert_eq!(overhead.len(), 1);
        assert!(has(&overhead[0].0, GEN_AI_OPERATION_NAME, "chat"));
        assert!(
            overhead[0]
                .0
                .contains(&KeyValue::new(GEN_AI_REQUEST_STREAM, true))
        );
        let tokens = got.points(GENAI_TAP_RATELIMIT_REMAINING_TOKENS);
        assert_eq!(tokens.len(), 1);
        assert_eq!(tokens[0].2, 800.0, "the latest value");
        assert!(has(&tokens[0].0, GEN_AI_REQUEST_MODEL, "gpt-4o-2024"));
        assert!(has(&tokens[0].0, GEN_AI_PROVIDER_NAME, "openai"));
        assert_eq!(got.points(GENAI_TAP_RATELIMIT_REMAINING_REQUESTS)[0].2, 9.0);

        // Delta: the next collection has only what came after this one, and series bound
        // before it keep recording into it.
        assert!(bench.collect().points(GEN_AI_CLIENT_TOKEN_USAGE).is_empty());
        bench.record(&ex);
        let got = bench.collect();
        let usage = got.points(GEN_AI_CLIENT_TOKEN_USAGE);
        assert_eq!(usage.len(), 2);
        assert!(usage.iter().all(|(_, count, _)| *count == 1));
        assert_eq!(
            got.points(GEN_AI_CLIENT_OPERATION_TIME_PER_OUTPUT_CHUNK)[0].1,
            3
        );
    }

    #[test]
    fn latest_names_count_tokens_on_counters() {
        let bench = Bench::new(Names::Latest, Temporality::Cumulative);
        bench.record(&chat("gpt-4o", 5, 7));
        bench.record(&chat("gpt-4o", 1, 2));
        let got = bench.collect();
        let input = got.points(GEN_AI_CLIENT_INFERENCE_USAGE_INPUT_TOKENS);
        let output = got.points(GEN_AI_CLIENT_INFERENCE_USAGE_OUTPUT_TOKENS);
        assert_eq!((input.len(), input[0].2), (1, 6.0));
        assert_eq!((output.len(), output[0].2), (1, 9.0));
        assert!(
            !input[0]
                .0
                .iter()
                .any(|kv| kv.key.as_str() == GEN_AI_TOKEN_TYPE)
        );
        assert!(got.points(GEN_AI_CLIENT_TOKEN_USAGE).is_empty());
        assert_eq!(got.points(GEN_AI_CLIENT_INFERENCE_DURATION)[0].1, 2);
    }
}
