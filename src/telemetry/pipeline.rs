//! One export queue per destination and signal: bounded, batched, exported off the request path.
//!
//! Owns: the queue between building telemetry and an exporter, batching by size and delay,
//! export timeouts, and the counters a fail-open proxy needs (queued, dropped, exported,
//! failed). Offering an item never waits: a full queue drops it and counts the drop. Each
//! destination has its own queue and task, so one slow or dead destination cannot hold up
//! another. Spans and log records (events) share this code through [`Destination`].
//! Does not: build spans or records, or pick exporters.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogBatch, LogExporter, SdkLogRecord};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};

use crate::stats::{LogLimiter, Stats};

#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
    pub schedule_delay: Duration,
    pub export_timeout: Duration,
}

/// Somewhere a batch of items can be exported to.
pub trait Destination: Send + Sync + 'static {
    type Item: Send + 'static;
    /// The counters this signal reports under.
    const COUNTERS: Counters;
    fn export(&self, batch: Vec<Self::Item>) -> impl Future<Output = OTelSdkResult> + Send;
    fn shutdown(&self) -> OTelSdkResult;
}

/// Which [`Stats`] counters a signal increments.
#[derive(Clone, Copy)]
pub struct Counters {
    pub queued: fn(&Stats) -> &AtomicU64,
    pub dropped: fn(&Stats) -> &AtomicU64,
    pub exported: fn(&Stats) -> &AtomicU64,
    pub failed: fn(&Stats) -> &AtomicU64,
}

/// What spans count under, whichever form they are exported in.
pub const SPAN_COUNTERS: Counters = Counters {
    queued: |s| &s.spans_queued,
    dropped: |s| &s.spans_dropped,
    exported: |s| &s.spans_exported,
    failed: |s| &s.spans_failed,
};

/// Spans to a [`SpanExporter`].
#[derive(Debug)]
pub struct Spans<E>(E);

impl<E: SpanExporter + 'static> Spans<E> {
    pub fn new(mut exporter: E, resource: &Resource) -> Self {
        exporter.set_resource(resource);
        Spans(exporter)
    }
}

impl<E: SpanExporter + 'static> Destination for Spans<E> {
    type Item = SpanData;
    const COUNTERS: Counters = SPAN_COUNTERS;
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        self.0.export(batch)
    }
    fn shutdown(&self) -> OTelSdkResult {
        self.0.shutdown()
    }
}

/// Log records (GenAI events) to a [`LogExporter`], all under one instrumentation scope.
#[derive(Debug)]
pub struct Events<E> {
    exporter: E,
    scope: InstrumentationScope,
}

impl<E: LogExporter + 'static> Events<E> {
    pub fn new(mut exporter: E, resource: &Resource, scope: InstrumentationScope) -> Self {
        exporter.set_resource(resource);
        Events { exporter, scope }
    }
}

impl<E: LogExporter + 'static> Destination for Events<E> {
    type Item = SdkLogRecord;
    const COUNTERS: Counters = Counters {
        queued: |s| &s.events_queued,
        dropped: |s| &s.events_dropped,
        exported: |s| &s.events_exported,
        failed: |s| &s.events_failed,
    };
    async fn export(&self, batch: Vec<SdkLogRecord>) -> OTelSdkResult {
        let refs: Vec<(&SdkLogRecord, &InstrumentationScope)> =
            batch.iter().map(|r| (r, &self.scope)).collect();
        self.exporter.export(LogBatch::new(&refs)).await
    }
    fn shutdown(&self) -> OTelSdkResult {
        self.exporter.shutdown()
    }
}

/// What the export task is asked to do besides exporting on its own schedule.
enum Control {
    Flush(oneshot::Sender<()>),
    /// Export what is queued, stop the exporter, and stop taking items.
    Shutdown(oneshot::Sender<()>),
}

/// The items waiting for export, shared by the handles (which offer) and the export task (which
/// takes whole batches).
///
/// Offering takes no lock: the export task may run at `SCHED_IDLE`, and a serving thread that
/// waited on a lock held by a preempted idle thread would wait for as long as the CPU stayed busy.
/// Items travel through std's lock-free channel; `len` admits them (bounded, and closed at
/// shutdown) and wakes the task only when a full batch is waiting, so the telemetry thread is not
/// woken once per span, which on a loaded machine cost a cross-thread wake-up and a context
/// switch per proxied request.
struct Queue<T> {
    sender: std_mpsc::Sender<T>,
    /// Received only by the export task (whose flush and shutdown are its own too).
    receiver: Mutex<std_mpsc::Receiver<T>>,
    /// Items admitted and not yet taken, with [`CLOSED`] set once the pipeline has shut down.
    len: AtomicUsize,
    /// Raised when a full batch is waiting (a stored permit is not lost while the task exports).
    full: Notify,
}

/// The bit of [`Queue::len`] that says the queue takes no more items.
const CLOSED: usize = 1 << (usize::BITS - 1);

impl<T> Queue<T> {
    fn new() -> Self {
        let (sender, receiver) = std_mpsc::channel();
        Queue {
            sender,
            receiver: Mutex::new(receiver),
            len: AtomicUsize::new(0),
            full: Notify::new(),
        }
    }

    /// Counts an item in, unless the queue is closed or holds `max`; returns the new length.
    fn admit(&self, max: usize) -> Option<usize> {
        self.len
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |len| {
                (len & CLOSED == 0 && len < max).then_some(len + 1)
            })
            .ok()
            .map(|len| len + 1)
    }

    /// Items admitted and not yet taken.
    fn depth(&self) -> usize {
        self.len.load(Ordering::Acquire) & !CLOSED
    }

    /// Takes no more items; those already admitted are still taken.
    fn close(&self) {
        self.len.fetch_or(CLOSED, Ordering::AcqRel);
    }

    /// Up to `max` items from the front; fewer only when `partial` (none otherwise). An item
    /// admitted but still on its way in (its sender between counting and sending) is left for
    /// the next call.
    fn take(&self, max: usize, partial: bool) -> Vec<T> {
        let n = self.depth().min(max);
        if n == 0 || (n < max && !partial) {
            return Vec::new();
        }
        let mut batch = Vec::with_capacity(n);
        {
            // Only the export task receives: this lock is never contended by an offer.
            let receiver = self
                .receiver
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            while batch.len() < n {
                match receiver.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
        }
        self.len.fetch_sub(batch.len(), Ordering::AcqRel);
        batch
    }
}

/// The handle of one destination's queue and export task.
pub struct Pipeline<T> {
    name: &'static str,
    queue: Arc<Queue<T>>,
    control: mpsc::Sender<Control>,
    settings: BatchSettings,
    stats: Arc<Stats>,
    counters: Counters,
    drops: LogLimiter,
}

impl<T> std::fmt::Debug for Pipeline<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Pipeline<T> {
    /// Starts the export task for `destination` on the current Tokio runtime.
    pub fn spawn<D: Destination<Item = T>>(
        name: &'static str,
        destination: D,
        settings: BatchSettings,
        stats: Arc<Stats>,
    ) -> Pipeline<T> {
        let queue = Arc::new(Queue::new());
        let (control, rx) = mpsc::channel(4);
        tokio::spawn(run(
            name,
            destination,
            queue.clone(),
            rx,
            settings,
            stats.clone(),
        ));
        Pipeline {
            name,
            queue,
            control,
            settings,
            stats,
            counters: D::COUNTERS,
            drops: LogLimiter::new(Duration::from_secs(30)),
        }
    }

    /// Queues an item for export, or drops it (counted) when the queue is full.
    pub fn offer(&self, item: T) {
        let Some(len) = self.queue.admit(self.settings.max_queue_size) else {
            Stats::incr((self.counters.dropped)(&self.stats));
            if let Some(suppressed) = self.drops.check() {
                tracing::warn!(
                    exporter = self.name,
                    suppressed,
                    "export queue full; dropping telemetry (the proxied traffic is unaffected)"
                );
            }
            return;
        };
        // The receiver lives in the queue itself, so sending cannot fail.
        let _ = self.queue.sender.send(item);
        Stats::incr((self.counters.queued)(&self.stats));
        // Every admission returns a length of its own, so one of them is the batch size.
        if len == self.settings.max_export_batch_size {
            self.queue.full.notify_one();
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Items waiting in the queue now.
    pub fn depth(&self) -> usize {
        self.queue.depth()
    }

    /// Exports everything queued so far; returns when the exporter has answered for it.
    pub async fn flush(&self) {
        self.call(Control::Flush).await;
    }

    /// Exports what is queued and stops the exporter; later items are dropped (and counted).
    pub async fn shutdown(&self) {
        self.call(Control::Shutdown).await;
    }

    async fn call(&self, message: fn(oneshot::Sender<()>) -> Control) {
        let (done, wait) = oneshot::channel();
        if self.control.send(message(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

struct Exporting<'a, D: Destination> {
    name: &'static str,
    destination: &'a D,
    queue: &'a Queue<D::Item>,
    settings: BatchSettings,
    stats: &'a Stats,
    failures: LogLimiter,
}

impl<D: Destination> Exporting<'_, D> {
    /// Exports queued items a batch at a time: every full batch, and with `partial` the rest
    /// too. Items offered while an export is under way are taken by the next round.
    async fn drain(&self, partial: bool) {
        loop {
            let batch = self
                .queue
                .take(self.settings.max_export_batch_size, partial);
            if batch.is_empty() {
                return;
            }
            self.export(batch).await;
        }
    }

    async fn export(&self, items: Vec<D::Item>) {
        let n = items.len() as u64;
        let outcome =
            tokio::time::timeout(self.settings.export_timeout, self.destination.export(items))
                .await;
        let error = match outcome {
            Ok(Ok(())) => {
                Stats::add((D::COUNTERS.exported)(self.stats), n);
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", self.settings.export_timeout),
        };
        Stats::add((D::COUNTERS.failed)(self.stats), n);
        if let Some(suppressed) = self.failures.check() {
            tracing::warn!(exporter = self.name, items = n, suppressed, %error, "telemetry export failed");
        }
    }

    /// Exports everything and stops the exporter; the queue takes no more items.
    async fn stop(&self) {
        self.queue.close();
        self.drain(true).await;
        // An item admitted just before the close may still be on its way in: its sender is
        // between two instructions, so it comes within a few polls (bounded all the same).
        for _ in 0..100 {
            if self.queue.depth() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            self.drain(true).await;
        }
        if let Err(e) = self.destination.shutdown() {
            tracing::debug!(exporter = self.name, error = %e, "exporter shutdown reported an error");
        }
    }
}

async fn run<D: Destination>(
    name: &'static str,
    destination: D,
    queue: Arc<Queue<D::Item>>,
    mut control: mpsc::Receiver<Control>,
    settings: BatchSettings,
    stats: Arc<Stats>,
) {
    let exporting = Exporting {
        name,
        destination: &destination,
        queue: &queue,
        settings,
        stats: &stats,
        failures: LogLimiter::new(Duration::from_secs(30)),
    };
    let mut tick = tokio::time::interval_at(
        Instant::now() + settings.schedule_delay,
        settings.schedule_delay,
    );
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            message = control.recv() => match message {
                Some(Control::Flush(done)) => {
                    exporting.drain(true).await;
                    let _ = done.send(());
                }
                Some(Control::Shutdown(done)) => {
                    exporting.stop().await;
                    let _ = done.send(());
                    return;
                }
                // Every handle is gone: nothing more can be offered.
                None => break,
            },
            () = queue.full.notified() => exporting.drain(false).await,
            _ = tick.tick() => exporting.drain(true).await,
        }
    }
    exporting.stop().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::memory::MemoryExporter;
    use opentelemetry_sdk::error::OTelSdkError;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn span(name: &'static str) -> SpanData {
        use opentelemetry::trace::*;
        SpanData {
            span_context: SpanContext::empty_context(),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Client,
            name: name.into(),
            start_time: std::time::SystemTime::UNIX_EPOCH,
            end_time: std::time::SystemTime::UNIX_EPOCH,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    fn settings(queue: usize, batch: usize) -> BatchSettings {
        BatchSettings {
            max_queue_size: queue,
            max_export_batch_size: batch,
            schedule_delay: Duration::from_secs(3600),
            export_timeout: Duration::from_millis(200),
        }
    }

    fn resource() -> Resource {
        Resource::builder_empty().build()
    }

    #[tokio::test]
    async fn flush_exports_what_was_offered_and_shutdown_exports_the_rest() {
        let exporter = MemoryExporter::default();
        let stats = Arc::new(Stats::default());
        let p = Pipeline::spawn(
            "mem",
            Spans::new(exporter.clone(), &resource()),
            settings(16, 8),
            stats.clone(),
        );
        p.offer(span("a"));
        p.flush().await;
        assert_eq!(exporter.spans().len(), 1);
        p.offer(span("b"));
        p.shutdown().await;
        assert_eq!(exporter.spans().len(), 2);
        let s = stats.snapshot();
        assert_eq!(
            (s.spans_queued, s.spans_exported, s.spans_dropped),
            (2, 2, 0)
        );
        assert_eq!(exporter.shutdowns(), 1);
        p.offer(span("late"));
        assert_eq!(
            stats.snapshot().spans_dropped,
            1,
            "after shutdown, spans are dropped and counted"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_is_exported_at_once_and_the_rest_on_the_schedule() {
        let exporter = MemoryExporter::default();
        let stats = Arc::new(Stats::default());
        let p = Pipeline::spawn(
            "mem",
            Spans::new(exporter.clone(), &resource()),
            settings(16, 4),
            stats.clone(),
        );
        for _ in 0..6 {
            p.offer(span("x"));
        }
        // The clock is paused: it moves only when every task waits, so this lets the export
        // task run and nothing else happen.
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(exporter.spans().len(), 4, "the full batch went at once");
        assert_eq!(p.depth(), 2, "the partial batch waits for the schedule");
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(exporter.spans().len(), 6, "the schedule took the rest");
        assert_eq!(p.depth(), 0);
        assert_eq!(stats.snapshot().spans_exported, 6);
    }

    /// An exporter that never answers until released: a black-holed collector.
    #[derive(Debug, Clone, Default)]
    struct Stuck(Arc<AtomicBool>);

    impl SpanExporter for Stuck {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            if self.0.load(Ordering::Relaxed) {
                return Ok(());
            }
            std::future::pending::<()>().await;
            Err(OTelSdkError::InternalFailure("unreachable".into()))
        }
    }

    #[tokio::test]
    async fn a_stuck_exporter_fills_the_queue_then_drops_are_counted_and_offer_never_waits() {
        let stats = Arc::new(Stats::default());
        let stuck = Stuck::default();
        let p = Pipeline::spawn(
            "stuck",
            Spans::new(stuck.clone(), &resource()),
            settings(4, 1),
            stats.clone(),
        );
        for _ in 0..50 {
            p.offer(span("x"));
            tokio::task::yield_now().await;
        }
        let s = stats.snapshot();
        assert_eq!(s.spans_queued + s.spans_dropped, 50);
        assert!(s.spans_dropped >= 40, "{s:?}");
        // The stuck export times out, is counted as failed, and the queue drains again.
        stuck.0.store(true, Ordering::Relaxed);
        p.flush().await;
        let s = stats.snapshot();
        assert!(s.spans_failed >= 1, "{s:?}");
        assert_eq!(s.spans_exported + s.spans_failed, s.spans_queued);
    }

    /// The export side may be a `SCHED_IDLE` thread preempted in the middle of taking a batch:
    /// offering must not wait for it.
    #[tokio::test]
    async fn offering_never_waits_for_the_export_side_taking_a_batch() {
        let exporter = MemoryExporter::default();
        let stats = Arc::new(Stats::default());
        let p = Arc::new(Pipeline::spawn(
            "mem",
            Spans::new(exporter.clone(), &resource()),
            settings(16, 8),
            stats.clone(),
        ));
        let taking = p.queue.receiver.lock().unwrap();
        let (done, offered) = std::sync::mpsc::channel();
        let offering = p.clone();
        std::thread::spawn(move || {
            for _ in 0..10 {
                offering.offer(span("x"));
            }
            let _ = done.send(());
        });
        offered
            .recv_timeout(Duration::from_secs(10))
            .expect("offers went through while the receiving side was held");
        drop(taking);
        p.flush().await;
        assert_eq!(exporter.spans().len(), 10);
        assert_eq!(stats.snapshot().spans_queued, 10);
    }
}
