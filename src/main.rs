//! The `genai-tap` command: arguments, logging, the runtime, signals and exit codes.
//! Everything worth testing lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use genai_tap::app::{App, AppError};
use genai_tap::config::{Config, ExportPriority, Flags, LogFormat, Sources, UpstreamFlag};
use genai_tap::stats::Stats;
use genai_tap::telemetry::Telemetry;

/// The static (musl) binaries the image ships allocate through jemalloc. musl's own allocator
/// keeps no per-thread cache and maps and unmaps memory around every request's 8 KiB buffers
/// (about 0.8 `mmap` and 0.8 `munmap` per request at one connection), and rounds such a buffer
/// up to a 9,344-byte class; jemalloc has an 8 KiB class and caches per thread. Measured
/// against musl's (benches/RESULTS.md, "What was tried"): 9 % fewer instructions per chat
/// request, 29 instead of 41 KiB per open stream, 0.5 MiB more idle RSS. glibc builds keep
/// glibc's allocator, which has neither problem.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The `slab_sizes` option of `MALLOC_CONF` below, where jemalloc's page is 4 KiB.
#[cfg(all(target_env = "musl", target_arch = "x86_64"))]
macro_rules! slab_sizes {
    () => {
        ",slab_sizes:8192-8192:8"
    };
}
#[cfg(all(target_env = "musl", not(target_arch = "x86_64")))]
macro_rules! slab_sizes {
    () => {
        ""
    };
}

/// jemalloc's built-in options (`_RJEM_MALLOC_CONF` in the environment still overrides them).
/// - `narenas:1`: one arena rather than one per thread (up to four per core). A sidecar serves
///   on one thread, and each arena's first metadata block is a 2 MiB mapping, a huge page of
///   its own wherever transparent huge pages are `always`.
/// - `thp:never` keeps the heap itself in small pages.
/// - `tcache_gc_incr_bytes`: the thread cache's clean-up every MiB a thread allocates instead
///   of every 64 KiB (a request allocates about 20 KiB). Each clean-up handed cached memory
///   back that the next requests took again.
/// - `slab_sizes` (x86_64, where jemalloc's page is 4 KiB): 8 KiB regions in 32 KiB slabs of
///   four. hyper reads into a fresh 8 KiB buffer twice per exchange, and jemalloc's default
///   slab for that class is two pages holding one region, so a thread cache refill or flush
///   made or unmade a slab per buffer. aarch64's build has 64 KiB pages (jemalloc's
///   configure default there, for 64 KiB-page kernels), so its slabs hold eight already.
///
/// Together: the allocator's instructions per chat request 6.5k → 4.1k (callgrind under wrk,
/// 16 connections, benches/RESULTS.md "What was tried"); RSS after traffic and per open
/// stream unchanged.
#[cfg(target_env = "musl")]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &u8 = &concat!(
    "narenas:1,thp:never,tcache_gc_incr_bytes:1048576",
    slab_sizes!(),
    "\0"
)
.as_bytes()[0];

/// musl's x86_64 `memcpy` and `memmove` replaced, in the static binary only (see the module).
#[cfg(all(target_arch = "x86_64", any(test, target_env = "musl")))]
mod memcopy;

#[derive(Parser)]
#[command(
    name = "genai-tap",
    version,
    about = "A sidecar proxy that traces OpenAI-compatible traffic with OpenTelemetry"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run(Common),
    /// Start an embedded mock model server and the proxy in front of it, send a few requests,
    /// and print their spans. Needs no account and no network.
    Demo {
        #[command(flatten)]
        common: Common,
        /// Keep the proxy running (on the configured address) in front of the mock afterwards.
        #[arg(long)]
        serve: bool,
    },
    /// Print the effective configuration (secrets masked); exit non-zero, naming the key, on
    /// any error.
    CheckConfig(Common),
    /// Read text (or JSON) on stdin and print it with the configured redaction rules applied,
    /// to try rules before deploying them.
    Redact(Common),
}

#[derive(Args)]
struct Common {
    /// TOML configuration file (see config/genai-tap.toml).
    #[arg(long, short = 'c', value_name = "PATH")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7420].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Base URL requests are forwarded to, e.g. https://api.openai.com.
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
}

impl Common {
    fn sources(&self) -> Sources {
        Sources {
            file: self.config.clone(),
            env: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
            flags: Flags {
                listen: self.listen,
                upstream: self.upstream.clone().map(|url| UpstreamFlag { url }),
            },
        }
    }
}

fn main() -> ExitCode {
    no_huge_pages();
    let cli = Cli::parse();
    let (common, command) = match &cli.command {
        Command::Run(c) | Command::CheckConfig(c) | Command::Redact(c) => (c, &cli.command),
        Command::Demo { common, .. } => (common, &cli.command),
    };
    let config = match Config::load(&common.sources()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("genai-tap: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::CheckConfig(_) => return check_config(&config),
        Command::Redact(_) => return redact(&config),
        _ => {}
    }
    init_logging(&config);
    // tonic's TLS (OTLP over gRPC to https) asks rustls for the process-wide provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The admin port, signals and file reloads (and the demo's telemetry); `run` serves the
    // proxy port on threads of its own (`server.workers`) and exports on the export runtime.
    // One thread here is plenty, and every idle worker of a multi-threaded runtime costs
    // wake-ups.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("genai-tap: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let export = match export_runtime(config.telemetry.export_priority) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("genai-tap: cannot start the telemetry export thread: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match command {
            Command::Demo { serve, .. } => {
                genai_tap::demo::run(config, *serve, shutdown_signal(), &mut std::io::stderr())
                    .await
            }
            _ => run(config, export.handle()).await,
        }
    });
    drop(export);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if is_configuration(&e) {
                eprintln!("genai-tap: configuration error: {e}");
                ExitCode::from(2)
            } else {
                eprintln!("genai-tap: {e}");
                ExitCode::FAILURE
            }
        }
    }
}

/// Errors found while setting up from configuration (exit 2), as opposed to run-time ones.
fn is_configuration(e: &AppError) -> bool {
    matches!(
        e,
        AppError::Config(_) | AppError::Client(_) | AppError::Telemetry(_)
    )
}

fn check_config(config: &Config) -> ExitCode {
    print!("{}", config.to_masked_toml());
    let checks = config
        .require_upstream()
        .map_err(AppError::from)
        .and_then(|()| {
            // Build what can be built offline: CA bundles, OTLP endpoints, exporters.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| AppError::Io {
                    context: "cannot start the async runtime".into(),
                    source,
                })?;
            runtime.block_on(async {
                let stats = Arc::new(Stats::default());
                let telemetry = Telemetry::from_config(config, stats.clone())?;
                App::new(config, telemetry, stats).map(|_| ())
            })
        });
    match checks {
        Ok(()) => {
            eprintln!("genai-tap: configuration OK");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("genai-tap: configuration error: {e}");
            ExitCode::from(2)
        }
    }
}

fn redact(config: &Config) -> ExitCode {
    use std::io::{Read, Write};
    let redactor = match genai_tap::redact::Redactor::from_config(&config.redaction) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("genai-tap: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("genai-tap: cannot read stdin: {e}");
        return ExitCode::FAILURE;
    }
    let output = match serde_json::from_str::<serde_json::Value>(&input) {
        // JSON: key rules for its keys, text rules for its strings.
        Ok(mut value) if value.is_object() || value.is_array() => {
            redactor.walk(&mut value);
            format!("{value}\n")
        }
        _ => redactor.text(&input).into_owned(),
    };
    if std::io::stdout().write_all(output.as_bytes()).is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// The thread that encodes and sends telemetry (every exporter's task is started on it), apart
/// from the admin port's and the signals' so that `telemetry.export_priority` concerns export
/// alone: a readiness probe is answered at normal priority however busy the machine is.
fn export_runtime(priority: ExportPriority) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("genai-tap-export")
        .on_thread_start(move || {
            if priority == ExportPriority::Idle {
                idle_priority();
            }
        })
        .enable_all()
        .build()
}

/// Transparent huge pages off for the whole process. Where the host sets them to `always`
/// (RHEL's default, among others) the kernel backs every touched 2 MiB-aligned range of
/// anonymous memory with a huge page: each thread's stack and each of the allocator's blocks
/// then holds 2 MiB resident, for a proxy that touches a few KiB of each and has no use for
/// fewer TLB entries. A failure (an old kernel, a seccomp filter) costs memory, nothing else.
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes integers only and touches none of the process's memory.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

/// Moves the calling thread to `SCHED_IDLE`; a failure leaves it at normal priority, logged.
fn idle_priority() {
    #[cfg(target_os = "linux")]
    {
        // Zeroed rather than built field by field: musl's sched_param has more fields than
        // glibc's. SCHED_IDLE takes priority 0.
        // SAFETY: sched_param is plain integers, for which all zeroes is a valid value.
        let param: libc::sched_param = unsafe { std::mem::zeroed() };
        // The system call, not libc's wrapper: musl's wrapper refuses with ENOSYS (POSIX means
        // the process, Linux's call sets one thread). Pid 0 is the calling thread.
        // SAFETY: `param` is a valid sched_param for the call's duration.
        let set = unsafe {
            libc::syscall(
                libc::SYS_sched_setscheduler,
                0,
                libc::SCHED_IDLE,
                &param as *const libc::sched_param,
            )
        };
        if set != 0 {
            let e = std::io::Error::last_os_error();
            tracing::warn!(error = %e, "cannot lower the telemetry export thread's priority; it stays normal");
        }
    }
    #[cfg(not(target_os = "linux"))]
    tracing::warn!(
        "telemetry.export_priority = \"idle\" needs Linux; the export thread stays normal"
    );
}

async fn run(config: Config, export: &tokio::runtime::Handle) -> Result<(), AppError> {
    let stats = Arc::new(Stats::default());
    // Exporters start their tasks on the export thread.
    let telemetry = {
        let _export = export.enter();
        Telemetry::from_config(&config, stats.clone())?
    };
    let app = App::new(&config, telemetry, stats)?;
    let listener = App::bind(config.listen).await?;
    let listen = listener.local_addr().unwrap_or(config.listen);
    let admin_listener = App::bind(config.admin.listen).await?;
    let admin_addr = admin_listener.local_addr().unwrap_or(config.admin.listen);
    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin = tokio::spawn(genai_tap::admin::serve(
        admin_listener,
        app.admin(),
        async {
            let _ = admin_stopped.await;
        },
    ));
    let capture = genai_tap::app::capture_summary(&config);
    if capture.starts_with("FULL") {
        tracing::warn!(capture, "message content is exported without redaction");
    }
    let credentials: Vec<String> = app
        .proxy
        .router()
        .credentials()
        .map(|c| c.describe())
        .collect();
    tracing::info!(
        listen = %listen,
        tls = app.serves_tls(),
        admin = %admin_addr,
        credentials = %if credentials.is_empty() { "none".to_owned() } else { credentials.join(", ") },
        upstream = %app.proxy.upstream_display(),
        telemetry = %app.telemetry.destinations().join(", "),
        capture,
        "genai-tap ready"
    );
    app.serve_on_workers(listener, shutdown_signal()).await?;
    app.shutdown_telemetry(FLUSH_DEADLINE).await;
    let _ = admin_stop.send(());
    let _ = admin.await;
    tracing::info!("genai-tap stopped");
    Ok(())
}

/// How long the final export may take after the drain (the deploy manifests budget for it).
const FLUSH_DEADLINE: Duration = Duration::from_secs(10);

/// SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown requested");
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::new(&config.log.level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
