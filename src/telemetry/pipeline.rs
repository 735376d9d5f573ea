//! One export queue per destination: bounded, batched, exported off the request path.
//!
//! Owns: the queue between span building and an exporter, batching by size and delay, export
//! timeouts, and the counters a fail-open proxy needs (queued, dropped, exported, failed).
//! Offering a span never waits: a full queue drops it and counts the drop. One slow or dead
//! destination cannot hold up another, since each has its own queue and task.
//! Does not: build spans or pick exporters.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};

use crate::stats::{LogLimiter, Stats};

#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
    pub schedule_delay: Duration,
    pub export_timeout: Duration,
}

enum Message {
    Span(Box<SpanData>),
    Flush(oneshot::Sender<()>),
    /// Export what is queued, stop the exporter, and stop taking spans.
    Shutdown(oneshot::Sender<()>),
}

/// The handle of one destination's queue and export task.
#[derive(Debug)]
pub struct Pipeline {
    name: &'static str,
    tx: mpsc::Sender<Message>,
    stats: Arc<Stats>,
    drops: LogLimiter,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Message::Span(_) => "Span",
            Message::Flush(_) => "Flush",
            Message::Shutdown(_) => "Shutdown",
        })
    }
}

impl Pipeline {
    /// Starts the export task for `exporter` on the current Tokio runtime.
    pub fn spawn<E: SpanExporter + 'static>(
        name: &'static str,
        mut exporter: E,
        resource: &Resource,
        settings: BatchSettings,
        stats: Arc<Stats>,
    ) -> Pipeline {
        exporter.set_resource(resource);
        let (tx, rx) = mpsc::channel(settings.max_queue_size);
        tokio::spawn(run(name, exporter, rx, settings, stats.clone()));
        Pipeline {
            name,
            tx,
            stats,
            drops: LogLimiter::new(Duration::from_secs(30)),
        }
    }

    /// Queues a span for export, or drops it (counted) when the queue is full.
    pub fn offer(&self, span: SpanData) {
        match self.tx.try_send(Message::Span(Box::new(span))) {
            Ok(()) => Stats::incr(&self.stats.spans_queued),
            Err(_) => {
                Stats::incr(&self.stats.spans_dropped);
                if let Some(suppressed) = self.drops.check() {
                    tracing::warn!(
                        exporter = self.name,
                        suppressed,
                        "span export queue full; dropping spans (the proxied traffic is unaffected)"
                    );
                }
            }
        }
    }

    /// Exports everything queued so far; returns when the exporter has answered for it.
    pub async fn flush(&self) {
        self.call(Message::Flush).await;
    }

    /// Exports what is queued and stops the exporter; later spans are dropped (and counted).
    pub async fn shutdown(&self) {
        self.call(Message::Shutdown).await;
    }

    async fn call(&self, message: fn(oneshot::Sender<()>) -> Message) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(message(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn run<E: SpanExporter>(
    name: &'static str,
    exporter: E,
    mut rx: mpsc::Receiver<Message>,
    settings: BatchSettings,
    stats: Arc<Stats>,
) {
    let failures = LogLimiter::new(Duration::from_secs(30));
    let mut batch: Vec<SpanData> = Vec::with_capacity(settings.max_export_batch_size);
    let mut tick = tokio::time::interval_at(
        Instant::now() + settings.schedule_delay,
        settings.schedule_delay,
    );
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = rx.recv() => match message {
                Some(Message::Span(span)) => {
                    batch.push(*span);
                    if batch.len() >= settings.max_export_batch_size {
                        export(name, &exporter, &mut batch, settings, &stats, &failures).await;
                    }
                }
                Some(Message::Flush(done)) => {
                    export(name, &exporter, &mut batch, settings, &stats, &failures).await;
                    let _ = done.send(());
                }
                Some(Message::Shutdown(done)) => {
                    rx.close();
                    drain(&mut rx, &mut batch);
                    export(name, &exporter, &mut batch, settings, &stats, &failures).await;
                    stop(name, &exporter);
                    let _ = done.send(());
                    return;
                }
                None => break,
            },
            _ = tick.tick() => export(name, &exporter, &mut batch, settings, &stats, &failures).await,
        }
    }
    export(name, &exporter, &mut batch, settings, &stats, &failures).await;
    stop(name, &exporter);
}

/// Takes the spans still queued behind a shutdown (their exchanges finished before it).
fn drain(rx: &mut mpsc::Receiver<Message>, batch: &mut Vec<SpanData>) {
    while let Ok(message) = rx.try_recv() {
        match message {
            Message::Span(span) => batch.push(*span),
            Message::Flush(done) | Message::Shutdown(done) => {
                let _ = done.send(());
            }
        }
    }
}

fn stop<E: SpanExporter>(name: &'static str, exporter: &E) {
    if let Err(e) = exporter.shutdown() {
        tracing::debug!(exporter = name, error = %e, "exporter shutdown reported an error");
    }
}

async fn export<E: SpanExporter>(
    name: &'static str,
    exporter: &E,
    batch: &mut Vec<SpanData>,
    settings: BatchSettings,
    stats: &Stats,
    failures: &LogLimiter,
) {
    if batch.is_empty() {
        return;
    }
    let spans = std::mem::replace(batch, Vec::with_capacity(settings.max_export_batch_size));
    let n = spans.len() as u64;
    let error = match tokio::time::timeout(settings.export_timeout, exporter.export(spans)).await {
        Ok(Ok(())) => {
            Stats::add(&stats.spans_exported, n);
            return;
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {:?}", settings.export_timeout),
    };
    Stats::add(&stats.spans_failed, n);
    if let Some(suppressed) = failures.check() {
        tracing::warn!(exporter = name, spans = n, suppressed, %error, "span export failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::memory::MemoryExporter;
    use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
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

    #[tokio::test]
    async fn flush_exports_what_was_offered_and_shutdown_exports_the_rest() {
        let exporter = MemoryExporter::default();
        let stats = Arc::new(Stats::default());
        let p = Pipeline::spawn(
            "mem",
            exporter.clone(),
            &Resource::builder_empty().build(),
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
            stuck.clone(),
            &Resource::builder_empty().build(),
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
}
