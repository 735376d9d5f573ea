#![no_main]
//! See `genai_tap::fuzzing::redact` for what this checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| genai_tap::fuzzing::redact(data));
