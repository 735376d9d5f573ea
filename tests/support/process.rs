//! Running the built binary: a clean environment, the ready line, signals, reaping.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::LIMIT;

/// The binary under test: `GENAI_TAP_BIN` (e.g. the static binary the image ships, built by
/// `.ci/build-static`), or this profile's build.
pub fn bin() -> String {
    std::env::var("GENAI_TAP_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_genai-tap").to_owned())
}

/// The binary with a clean environment: only what the test passes.
pub fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    cmd
}

pub struct Running {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub stderr: mpsc::Receiver<String>,
}

/// A child the test did not stop itself (a failed assertion, say) is killed and reaped.
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `genai-tap run` on an ephemeral port and waits for its ready line.
pub fn run(upstream: &str, env: &[(&str, &str)]) -> Running {
    run_with(&[], upstream, env, Stdio::null())
}

/// The binary in front of the crate's mock upstream, exporting over OTLP `protocol` to a fresh
/// receiver, with `env` on top.
pub async fn run_exporting(
    protocol: &str,
    env: &[(&str, &str)],
) -> (super::otlp::OtlpReceiver, Running) {
    let receiver = super::otlp::OtlpReceiver::start().await;
    let mock = genai_tap::mock::spawn(genai_tap::mock::MockConfig::default())
        .await
        .unwrap();
    let endpoint = format!("http://{}", receiver.addr);
    let mut all = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
    ];
    all.extend_from_slice(env);
    let running = run(&format!("http://{mock}"), &all);
    (receiver, running)
}

/// `run` with extra arguments, and stdout where the test wants it (the console exporter).
pub fn run_with(args: &[&str], upstream: &str, env: &[(&str, &str)], stdout: Stdio) -> Running {
    let mut env = env.to_vec();
    env.push(("GENAI_TAP_LOG__FORMAT", "json"));
    // Several binaries run at once: none may hold the default admin port.
    env.push(("GENAI_TAP_ADMIN__LISTEN", "127.0.0.1:0"));
    let (tx, stderr) = mpsc::channel();
    let mut running = Running {
        child: command(
            &[
                &["run", "--listen", "127.0.0.1:0", "--upstream", upstream],
                args,
            ]
            .concat(),
            &env,
        )
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts"),
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        admin: SocketAddr::from(([127, 0, 0, 1], 0)),
        stderr,
    };
    let pipe = running.child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + LIMIT;
    loop {
        let line = running
            .stderr
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("a ready line");
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if json["fields"]["message"] == "genai-tap ready" {
            running.addr = json["fields"]["listen"].as_str().unwrap().parse().unwrap();
            running.admin = json["fields"]["admin"].as_str().unwrap().parse().unwrap();
            return running;
        }
    }
}

pub fn wait(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the process exits in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGTERM, as Kubernetes does, without waiting.
pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

pub fn terminate(child: &mut Child) -> ExitStatus {
    sigterm(child);
    wait(child)
}
