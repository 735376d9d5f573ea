//! The proxy's own counters: how much it forwarded, observed, exported, and swallowed.
//!
//! Owns: lock-free counters shared by every layer, and rate limiting for the log lines that
//! accompany them (a failing exporter must not log once per request). Does not: export anything
//! itself; telemetry and the admin endpoint read [`Stats::snapshot`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

macro_rules! counters {
    ($(#[doc = $doc:literal] $name:ident),* $(,)?) => {
        /// Counters, each only ever incremented.
        #[derive(Debug, Default)]
        pub struct Stats {
            $(#[doc = $doc] pub $name: AtomicU64,)*
            /// Finished exchanges by operation (chat, text_completion, embeddings) and outcome
            /// (ok, error).
            exchanges: [[AtomicU64; 2]; 3],
        }

        /// A point-in-time copy of [`Stats`].
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct Snapshot {
            $(#[doc = $doc] pub $name: u64,)*
            pub exchanges: [[u64; 2]; 3],
        }

        impl Stats {
            pub fn snapshot(&self) -> Snapshot {
                Snapshot {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                    exchanges: self.exchanges.each_ref().map(|row| row.each_ref().map(|c| c.load(Ordering::Relaxed))),
                }
            }
        }

        impl Snapshot {
            /// `(name, help, value)` for every counter, for exposition.
            pub fn fields(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((stringify!($name), $doc.trim(), self.$name),)*]
            }
        }
    };
}

/// The operations and outcomes exchanges are counted by, in the order of `Snapshot::exchanges`.
pub const OPERATIONS: [&str; 3] = ["chat", "text_completion", "embeddings"];
pub const OUTCOMES: [&str; 2] = ["ok", "error"];

counters! {
    /// Requests received on the proxy port.
    requests,
    /// Requests recognised as a GenAI operation and observed.
    observed,
    /// Requests refused by the proxy itself (absolute-form, CONNECT, bad path).
    refused,
    /// Upstream calls that failed before a response (connect, TLS, timeout).
    upstream_errors,
    /// Streamed chat requests the proxy asked for usage on the client's behalf.
    usage_injected,
    /// Upstreams that refused the injected `stream_options` (the request was resent as sent).
    usage_injection_rejected,
    /// Exchanges whose request or response body could not be parsed, in whole or in part.
    parse_failures,
    /// Values the redactor replaced.
    redactions,
    /// Exchanges whose observer fell behind and lost events (forwarding was unaffected).
    observation_lost,
    /// Observer panics caught (the request was unaffected).
    observer_panics,
    /// Spans handed to an export queue.
    spans_queued,
    /// Spans dropped because an export queue was full.
    spans_dropped,
    /// Spans an exporter accepted.
    spans_exported,
    /// Spans in batches an exporter failed or timed out on.
    spans_failed,
    /// Spans not exported because the trace sampler dropped them (metrics still count them).
    spans_sampled_out,
    /// Metric collections an exporter accepted.
    metric_exports,
    /// Metric collections an exporter failed or timed out on.
    metric_export_failures,
    /// GenAI events (content captured as log records) handed to an export queue.
    events_queued,
    /// Events dropped because an export queue was full.
    events_dropped,
    /// Events an exporter accepted.
    events_exported,
    /// Events in batches an exporter failed or timed out on.
    events_failed,
    /// Requests the proxy added the configured upstream credential to.
    credentials_added,
    /// Credential or certificate files reloaded after they changed.
    reloads,
    /// Changed credential or certificate files that could not be loaded (the old ones stay).
    reload_failures,
    /// Incoming TLS handshakes that failed or timed out.
    tls_handshake_failures,
    /// Times a new connection had to wait because `server.max_connections` were open.
    connection_limit_waits,
}

impl Stats {
    /// Counts a finished exchange; `operation` is `gen_ai.operation.name`.
    pub fn exchange(&self, operation: &str, failed: bool) {
        if let Some(i) = OPERATIONS.iter().position(|o| *o == operation) {
            self.exchanges[i][usize::from(failed)].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn incr(counter: &AtomicU64) {
        Self::add(counter, 1);
    }
}

/// Lets a log line through at most once per interval; counts what it held back.
#[derive(Debug)]
pub struct LogLimiter {
    origin: Instant,
    interval_ms: u64,
    /// Milliseconds since `origin` of the last line let through, plus one (0: never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl LogLimiter {
    pub fn new(interval: Duration) -> Self {
        LogLimiter {
            origin: Instant::now(),
            interval_ms: interval.as_millis().max(1) as u64,
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be logged now, with `n` lines suppressed since the last one.
    pub fn check(&self) -> Option<u64> {
        let now = self.origin.elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now < last + self.interval_ms {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if self
            .last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_lists_every_counter() {
        let s = Stats::default();
        Stats::incr(&s.requests);
        Stats::add(&s.spans_dropped, 3);
        let snap = s.snapshot();
        assert_eq!(snap.requests, 1);
        assert_eq!(snap.spans_dropped, 3);
        assert!(
            snap.fields()
                .iter()
                .any(|(n, help, v)| *n == "spans_dropped"
                    && *v == 3
                    && help.starts_with("Spans dropped"))
        );
        s.exchange("embeddings", true);
        s.exchange("unknown", false);
        assert_eq!(s.snapshot().exchanges[2], [0, 1]);
    }

    #[test]
    fn limiter_lets_one_line_through_per_interval_and_counts_the_rest() {
        let l = LogLimiter::new(Duration::from_secs(3600));
        assert_eq!(l.check(), Some(0));
        assert_eq!(l.check(), None);
        assert_eq!(l.check(), None);
        assert_eq!(l.suppressed.load(Ordering::Relaxed), 2);
    }
}
