//! Wiring: a validated [`Config`] and a [`Telemetry`] become a proxy ready to serve.
//!
//! Owns: assembling the layers in order (stats, observer, upstream, proxy) and the orderly
//! stop (drain connections, let observers finish, flush telemetry). Does not: read the
//! environment or parse arguments (`main`).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::admin::Admin;
use crate::config::{CaptureMode, Config, ConfigError};
use crate::observer::{ContentCapture, Limits, Observer, Privacy};
use crate::proxy::{Proxy, Router};
use crate::redact::Redactor;
use crate::server::{self, ServerSettings};
use crate::stats::Stats;
use crate::telemetry::Telemetry;
use crate::tls::{self, CertFiles};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::TelemetryError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

/// The redactors and content policy the configuration asks for.
fn privacy(config: &Config, stats: &Arc<Stats>) -> Result<Privacy, ConfigError> {
    let rules = Arc::new(
        Redactor::from_config(&config.redaction)
            .map_err(|e| ConfigError::Invalid {
                key: e.key,
                message: e.message,
            })?
            .with_stats(stats.clone()),
    );
    let c = &config.capture;
    let redactor = match c.mode {
        CaptureMode::Off => None,
        CaptureMode::Full => Some(Arc::new(Redactor::none())),
        CaptureMode::On if !rules.is_active() => Some(Arc::new(Redactor::none())),
        CaptureMode::On | CaptureMode::Redacted => Some(rules.clone()),
    };
    Ok(Privacy {
        content: redactor.map(|redactor| ContentCapture {
            redactor,
            sample_rate: c.sample_rate,
            only: c.only,
            slow_threshold: c.slow_threshold.0,
        }),
        attributes: rules,
    })
}

/// How content capture will behave, for the start-up log line.
pub fn capture_summary(config: &Config) -> &'static str {
    let rules = !config.redaction.rules.is_empty() || !config.redaction.json_keys.is_empty();
    match config.capture.mode {
        CaptureMode::Off => "off",
        CaptureMode::Full => "FULL (unredacted)",
        CaptureMode::On if !rules => "FULL (unredacted: no redaction rules configured)",
        CaptureMode::On | CaptureMode::Redacted => "redacted",
    }
}

/// A proxy, its telemetry, and how to serve and stop them.
#[derive(Debug, Clone)]
pub struct App {
    pub proxy: Arc<Proxy>,
    pub telemetry: Telemetry,
    pub stats: Arc<Stats>,
    /// True while serving; false from the moment draining starts.
    pub ready: Arc<AtomicBool>,
    settings: ServerSettings,
    /// Connections being served, across every serving thread (`server.max_connections`).
    slots: Arc<Semaphore>,
    /// The listener speaks TLS with this, when configured.
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl App {
    pub fn new(config: &Config, telemetry: Telemetry, stats: Arc<Stats>) -> Result<App, AppError> {
        config.require_upstream()?;
        let router = Router::from_config(config)
            .map_err(|(key, message)| ConfigError::Invalid { key, message })?;
        let limits = Limits {
            max_body: config.limits.max_observed_body.0,
            max_event: config.limits.max_observed_event.0,
            channel: config.limits.observer_queue,
        };
        let observer = Observer::new(
            telemetry.clone(),
            limits,
            privacy(config, &stats)?,
            stats.clone(),
        );
        let interval = config.server.reload_interval.0;
        let client_cert = match (
            &config.upstream.client_cert_file,
            &config.upstream.client_key_file,
        ) {
            (Some(cert), Some(key)) => {
                let certs =
                    CertFiles::load("upstream client certificate", cert.clone(), key.clone())
                        .map_err(|message| ConfigError::Invalid {
                            key: "upstream.client_cert_file".into(),
                            message,
                        })?;
                certs.spawn_reloader(interval, stats.clone());
                Some(certs)
            }
            _ => None,
        };
        for credential in router.credentials() {
            credential.spawn_reloader(interval, stats.clone());
        }
        let tls = match &config.server.tls {
            Some(t) => {
                let certs = CertFiles::load(
                    "listener certificate",
                    t.cert_file.clone(),
                    t.key_file.clone(),
                )
                .map_err(|message| ConfigError::Invalid {
                    key: "server.tls.cert_file".into(),
                    message,
                })?;
                certs.spawn_reloader(interval, stats.clone());
                Some(Arc::new(
                    tls::server_config(certs).map_err(crate::client::ClientError::from)?,
                ))
            }
            None => None,
        };
        let proxy = Proxy::new(config, router, observer, client_cert, stats.clone())?;
        Ok(App {
            proxy: Arc::new(proxy),
            telemetry,
            stats,
            ready: Arc::default(),
            settings: ServerSettings::from(config),
            slots: Arc::new(Semaphore::new(config.server.max_connections)),
            tls,
        })
    }

    /// Binds the configured address (or any other) with a message naming it on failure.
    pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, AppError> {
        TcpListener::bind(addr)
            .await
            .map_err(|source| AppError::Io {
                context: format!("cannot listen on {addr}"),
                source,
            })
    }

    /// Serves until `shutdown`; from then on not ready, still accepting for the shutdown
    /// delay, then drains connections and lets in-flight observations finish.
    pub async fn serve(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        self.ready.store(true, Ordering::Release);
        let ready = self.ready.clone();
        let delay = self.settings.shutdown_delay;
        let draining = async move {
            shutdown.await;
            ready.store(false, Ordering::Release);
            if !delay.is_zero() {
                tracing::info!(?delay, "not ready; still accepting until the drain");
                tokio::time::sleep(delay).await;
            }
        };
        server::serve(
            listener,
            self.tls.clone(),
            self.proxy.clone(),
            self.settings,
            self.slots.clone(),
            draining,
        )
        .await;
        self.proxy.observer().settled().await;
    }

    /// [`App::serve`] on threads of their own (`server.workers`, one per upstream pool), each
    /// with a single-threaded event loop accepting from the same listener. A connection, its upstream calls and its
    /// observers then stay on one thread: on one multi-threaded runtime the hand-offs between
    /// hyper's server and client connection tasks and the observers crossed threads, a wake-up
    /// each (the load benchmark measured a third less CPU per request, and a lower latency,
    /// this way). Telemetry export and the admin port stay on the caller's runtime. Returns
    /// once every thread has drained.
    pub async fn serve_on_workers(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), AppError> {
        let workers = self.proxy.serving_threads();
        let io = |context: &str| {
            let context = context.to_owned();
            move |source| AppError::Io { context, source }
        };
        let listener = listener
            .into_std()
            .map_err(io("cannot hand the listener to the serving threads"))?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut finished = Vec::with_capacity(workers);
        for index in 0..workers {
            // Everything that can fail is set up here, so a failure stops start-up.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(io("cannot start a serving thread's event loop"))?;
            let own = listener
                .try_clone()
                .map_err(io("cannot share the listener between serving threads"))?;
            let own = {
                let _inside = runtime.enter();
                TcpListener::from_std(own).map_err(io("cannot listen on a serving thread"))?
            };
            let (app, mut stopped) = (self.clone(), stopped.clone());
            let (done, finished_rx) = tokio::sync::oneshot::channel::<()>();
            finished.push(finished_rx);
            std::thread::Builder::new()
                .name(format!("genai-tap-{index}"))
                .spawn(move || {
                    crate::proxy::set_worker(index);
                    runtime.block_on(async move {
                        // Ends with the runtime, when this thread is done serving.
                        tokio::spawn(timer_anchor());
                        app.serve(own, async move {
                            let _ = stopped.wait_for(|stop| *stop).await;
                        })
                        .await;
                    });
                    drop(done);
                })
                .map_err(io("cannot start a serving thread"))?;
        }
        // Each thread holds its own handle: the port closes when the last one stops accepting.
        drop(listener);
        shutdown.await;
        let _ = stop.send(true);
        for thread in finished {
            // Dropped by the thread when it is done, however it ended.
            let _ = thread.await;
        }
        Ok(())
    }

    /// Whether the proxy port speaks TLS.
    pub fn serves_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// What the admin endpoints report on.
    pub fn admin(&self) -> Admin {
        Admin {
            stats: self.stats.clone(),
            ready: self.ready.clone(),
            telemetry: self.telemetry.clone(),
        }
    }

    /// Waits until every exchange so far has been recorded and exported.
    pub async fn settle(&self) {
        self.proxy.observer().settled().await;
        self.telemetry.flush().await;
    }

    /// Exports what remains and stops the exporters.
    pub async fn shutdown_telemetry(&self, deadline: Duration) {
        self.telemetry.shutdown(deadline).await;
    }
}

/// Keeps a timer on the calling event loop that is always due within a second.
///
/// Tokio's timer wakes its own event loop (an eventfd write, then an extra turn of the loop)
/// whenever a timer is armed to fire before every timer already armed. On a connection with
/// nothing else in flight that is every request: hyper's header-read timer was the earliest,
/// one `write(2)` per request at one connection (strace). With a timer always due sooner,
/// arming the per-request timers (header read, response, body idle: all seconds long) costs
/// no syscall; the price is one wake-up a second on an idle thread.
async fn timer_anchor() {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}
