//! An exporter that keeps every span in memory: for tests and for embedding genai-tap as a
//! library. Unlike the SDK's in-memory exporter, it keeps its spans across shutdown, so a test
//! can check what a graceful stop exported.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

#[derive(Debug, Clone, Default)]
pub struct MemoryExporter {
    spans: Arc<Mutex<Vec<SpanData>>>,
    shutdowns: Arc<AtomicUsize>,
}

impl MemoryExporter {
    /// Every span exported so far, in export order.
    pub fn spans(&self) -> Vec<SpanData> {
        self.spans.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn shutdowns(&self) -> usize {
        self.shutdowns.load(Ordering::Relaxed)
    }
}

impl SpanExporter for MemoryExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if let Ok(mut spans) = self.spans.lock() {
            spans.extend(batch);
        }
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: std::time::Duration) -> OTelSdkResult {
        self.shutdowns.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
