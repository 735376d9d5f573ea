//! What the benchmarks that run the real binary share.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The binary to measure: `GENAI_TAP_BIN`, or this profile's build.
pub fn binary() -> String {
    std::env::var("GENAI_TAP_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_genai-tap").to_owned())
}

/// Starts `genai-tap run` with `args` and `env` (on a clean environment, JSON logs, admin port
/// on any free port) and waits for its ready line: the child and the address it listens on.
pub fn start_ready(args: &[&str], env: &[(String, String)]) -> (Child, String) {
    let mut child = Command::new(binary())
        .arg("run")
        .args(args)
        .env_clear()
        .env("GENAI_TAP_ADMIN__LISTEN", "127.0.0.1:0")
        .env("GENAI_TAP_LOG__FORMAT", "json")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("a ready line before stderr closes")
            .expect("readable stderr");
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if json["fields"]["message"] == "genai-tap ready" {
            break json["fields"]["listen"]
                .as_str()
                .expect("listen field")
                .to_owned();
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr)
}
