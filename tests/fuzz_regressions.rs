//! Every input under `fuzz/regressions/<target>/` — seeds from the fixtures, and any input a
//! fuzzer ever crashed on — replayed through the same checks the fuzz targets run
//! (`genai_tap::fuzzing`), so a fixed crash stays fixed without running a fuzzer.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{} holds no inputs", dir.display());
    for path in inputs {
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{} fails its check", path.display());
    }
}

#[test]
fn sse_inputs() {
    replay("sse", genai_tap::fuzzing::sse);
}

#[test]
fn genai_inputs() {
    replay("genai", genai_tap::fuzzing::genai);
}

#[test]
fn codec_inputs() {
    replay("codec", genai_tap::fuzzing::codec);
}

#[test]
fn redact_inputs() {
    replay("redact", genai_tap::fuzzing::redact);
}
