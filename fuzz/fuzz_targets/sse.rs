#![no_main]
//! See `genai_tap::fuzzing::sse` for what this checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| genai_tap::fuzzing::sse(data));
