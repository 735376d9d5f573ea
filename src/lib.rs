//! genai-tap: a sidecar reverse proxy that forwards OpenAI-compatible traffic unchanged and
//! traces it with OpenTelemetry, following the GenAI semantic conventions.
//!
//! How a request flows, and the module that owns each step:
//!
//! - [`server`]: accepts HTTP/1.1 and HTTP/2 connections (cleartext, or TLS with [`tls`]),
//!   drains on shutdown.
//! - [`proxy`]: refuses what would make it an open proxy, strips hop-by-hop headers, forwards
//!   to the configured upstream (adding its credential when configured), answers upstream
//!   failures with OpenAI-style 502/504 errors. [`reload`] keeps key and certificate files
//!   current.
//! - [`tap`]: a body wrapper that passes every frame through and hands a copy to an observer.
//! - [`observer`]: one task per GenAI exchange, off the forwarding path, folding the copies
//!   into an [`exchange::Exchange`] with the pure parsers of [`genai`] (and [`codec`] for
//!   compressed bodies); captured content can only leave through [`redact`].
//! - [`telemetry`]: turns each exchange into a span and exports it through bounded queues
//!   (OTLP gRPC or HTTP, console).
//! - [`config`]: defaults < TOML file < `GENAI_TAP_*` < `OTEL_*` < flags, validated.
//! - [`admin`]: health, readiness and Prometheus metrics on their own port.
//! - [`app`] wires these together; [`stats`] counts what the proxy swallowed (fail-open);
//!   [`mock`] and [`demo`] give a working setup with no account and no network.

#![forbid(unsafe_code)]

// Without the `proxy` feature (default on) only the pure protocol modules build: no IO, no
// async runtime, no OpenTelemetry SDK. The fuzz targets use that.

#[cfg(feature = "proxy")]
pub mod admin;
#[cfg(feature = "proxy")]
pub mod app;
#[cfg(feature = "proxy")]
pub mod client;
pub mod codec;
#[cfg(feature = "proxy")]
pub mod config;
#[cfg(feature = "proxy")]
pub mod demo;
pub mod exchange;
#[doc(hidden)]
pub mod fuzzing;
pub mod genai;
#[cfg(feature = "proxy")]
pub mod mock;
#[cfg(feature = "proxy")]
pub mod observer;
#[cfg(feature = "proxy")]
pub mod proxy;
pub mod redact;
#[cfg(feature = "proxy")]
pub mod reload;
#[cfg(feature = "proxy")]
pub mod server;
pub mod stats;
#[cfg(feature = "proxy")]
pub mod tap;
#[cfg(feature = "proxy")]
pub mod telemetry;
#[cfg(feature = "proxy")]
pub mod tls;
