//! Values read from files and read again when the files change: mounted Kubernetes Secrets
//! (credentials, certificates) rotate under a running sidecar.
//!
//! Owns: loading a value from its files, noticing a change (by polling each file's identity:
//! inode, size, modification time; Kubernetes swaps a symlink, so the followed file changes),
//! and swapping the value atomically. A failed reload keeps the previous value, counts and logs
//! the failure (the message names the file, never its contents). Does not: know what the files
//! hold (the `load` function does).

use std::path::PathBuf;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use crate::stats::Stats;

/// What identifies one version of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
}

fn identity(path: &PathBuf) -> Option<Identity> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Identity {
        inode,
        len: meta.len(),
        modified: meta.modified().ok(),
    })
}

type Loader<T> = Box<dyn Fn() -> Result<T, String> + Send + Sync>;

/// A value loaded from `paths`, current as of the last check.
pub struct Watched<T> {
    /// What the value is, for log lines ("upstream credential", "listener certificate").
    what: &'static str,
    paths: Vec<PathBuf>,
    load: Loader<T>,
    state: RwLock<(Arc<T>, Vec<Option<Identity>>)>,
}

impl<T> std::fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("what", &self.what)
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> Watched<T> {
    /// Loads the value now; an error here is a start-up error.
    pub fn new(
        what: &'static str,
        paths: Vec<PathBuf>,
        load: impl Fn() -> Result<T, String> + Send + Sync + 'static,
    ) -> Result<Arc<Watched<T>>, String> {
        let identities = paths.iter().map(identity).collect();
        let value = load()?;
        Ok(Arc::new(Watched {
            what,
            paths,
            load: Box::new(load),
            state: RwLock::new((Arc::new(value), identities)),
        }))
    }

    /// The current value.
    pub fn get(&self) -> Arc<T> {
        match self.state.read() {
            Ok(state) => state.0.clone(),
            // A panic while swapping cannot leave a half-written Arc: the value is whole.
            Err(poisoned) => poisoned.into_inner().0.clone(),
        }
    }

    /// Reloads if any file changed since the last load. `Some(Ok)` when it reloaded,
    /// `Some(Err)` when it tried and failed (the old value stays), `None` when nothing changed.
    pub fn check(&self) -> Option<Result<(), String>> {
        let now: Vec<Option<Identity>> = self.paths.iter().map(identity).collect();
        let unchanged = match self.state.read() {
            Ok(state) => state.1 == now,
            Err(poisoned) => poisoned.into_inner().1 == now,
        };
        if unchanged {
            return None;
        }
        let loaded = (self.load)();
        let mut state = match self.state.write() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Remember what was seen either way: a broken file is retried when it changes again,
        // not logged every interval.
        state.1 = now;
        Some(loaded.map(|value| state.0 = Arc::new(value)))
    }

    /// Checks every `interval` on a blocking thread, until the value is dropped.
    pub fn spawn_reloader(self: &Arc<Self>, interval: Duration, stats: Arc<Stats>) {
        let weak: Weak<Watched<T>> = Arc::downgrade(self);
        let what = self.what;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime (a synchronous caller checking the configuration): nothing to watch.
            return;
        };
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(watched) = weak.upgrade() else {
                    return;
                };
                let checked = tokio::task::spawn_blocking(move || watched.check()).await;
                match checked {
                    Ok(None) => {}
                    Ok(Some(Ok(()))) => {
                        Stats::incr(&stats.reloads);
                        tracing::info!(what, "reloaded after its file changed");
                    }
                    Ok(Some(Err(error))) => {
                        Stats::incr(&stats.reload_failures);
                        tracing::warn!(what, %error, "reload failed; keeping the previous one");
                    }
                    Err(_) => {
                        Stats::incr(&stats.reload_failures);
                        tracing::warn!(what, "reload panicked; keeping the previous one");
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("genai-tap-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn watch(path: &std::path::Path) -> Arc<Watched<String>> {
        let p = path.to_path_buf();
        Watched::new("test value", vec![path.to_path_buf()], move || {
            let text = std::fs::read_to_string(&p).map_err(|e| e.to_string())?;
            if text.trim().is_empty() {
                return Err("empty".into());
            }
            Ok(text.trim().to_owned())
        })
        .unwrap()
    }

    #[test]
    fn a_changed_file_is_reloaded_and_an_unchanged_one_is_not() {
        let path = temp("changed");
        std::fs::write(&path, "one").unwrap();
        let w = watch(&path);
        assert_eq!(*w.get(), "one");
        assert_eq!(w.check(), None);
        // A new file moved into place, as Kubernetes does: a new inode.
        let next = temp("changed.next");
        std::fs::write(&next, "two-two").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(w.check(), Some(Ok(())));
        assert_eq!(*w.get(), "two-two");
        assert_eq!(w.check(), None);
    }

    #[test]
    fn a_broken_file_keeps_the_old_value_and_is_reported_once() {
        let path = temp("broken");
        std::fs::write(&path, "good").unwrap();
        let w = watch(&path);
        let next = temp("broken.next");
        std::fs::write(&next, "   ").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(w.check(), Some(Err("empty".to_owned())));
        assert_eq!(*w.get(), "good");
        assert_eq!(w.check(), None, "not retried until it changes again");
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(w.check(), Some(Err(_))), "a vanished file fails");
        assert_eq!(*w.get(), "good");
        std::fs::write(&path, "fixed").unwrap();
        assert_eq!(w.check(), Some(Ok(())));
        assert_eq!(*w.get(), "fixed");
    }

    #[test]
    fn a_file_that_cannot_be_loaded_at_start_is_an_error() {
        let path = temp("missing-at-start");
        let _ = std::fs::remove_file(&path);
        let p = path.clone();
        let err = Watched::new("test value", vec![path], move || {
            std::fs::read_to_string(&p).map_err(|e| e.to_string())
        })
        .unwrap_err();
        assert!(err.contains("No such file"), "{err}");
    }
}
