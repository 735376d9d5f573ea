//! Pure protocol knowledge of OpenAI-compatible APIs: which operation a request is, what its
//! body says, how a streamed response assembles. No IO, no OpenTelemetry.

pub mod chat;
pub mod json;
pub mod operation;
pub mod sse;

pub use operation::{Detected, Operation, detect};
