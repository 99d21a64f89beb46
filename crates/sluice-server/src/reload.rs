//! Hot reload: watch the configuration's directory, and on a change that alters the
//! files' contents, load and swap the configuration atomically.
//!
//! The directory is watched rather than the file because editors and config-map updates
//! replace files by rename. Events are debounced; a reload happens only when the bytes of
//! the config files changed, so touching a file or saving it unchanged does nothing. An
//! invalid configuration is logged with its file, line and field, counted in
//! `sluice_config_reloads_total{result="failed"}`, and the old one keeps serving. Counters
//! survive a reload because states are keyed by the request's descriptors, not the config.
//! The `store:` section is read only at start.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::backend::Backend;
use crate::config::Config;
use crate::limiter::Limiter;

/// How long to wait for a burst of file events to settle before reloading.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// A running watcher; dropping it stops watching.
#[derive(Debug)]
pub(crate) struct ReloadHandle {
    _watcher: RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ReloadHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watches `path` (a config file or directory) and reloads `limiter`'s configuration when
/// it changes. On Unix, SIGHUP forces a reload too.
pub(crate) fn watch<B: Backend>(
    limiter: Arc<Limiter<B>>,
    path: PathBuf,
) -> Result<ReloadHandle, notify::Error> {
    let (events, mut changed) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = events.send(());
        }
    })?;
    let watched = if path.is_dir() {
        path.clone()
    } else {
        parent(&path)
    };
    watcher.watch(&watched, RecursiveMode::NonRecursive)?;

    let task = tokio::spawn(async move {
        let mut fingerprint = fingerprint_of(&path);
        let mut hangup = hangup();
        loop {
            let forced = tokio::select! {
                event = changed.recv() => match event {
                    Some(()) => false,
                    None => return,
                },
                () = next_signal(&mut hangup) => true,
            };
            tokio::time::sleep(DEBOUNCE).await;
            while changed.try_recv().is_ok() {}
            let now = fingerprint_of(&path);
            if !forced && now == fingerprint {
                continue;
            }
            fingerprint = now;
            reload(&limiter, &path);
        }
    });
    Ok(ReloadHandle {
        _watcher: watcher,
        task,
    })
}

/// Loads `path` and serves it if it is valid; logs and counts the outcome.
pub(crate) fn reload<B: Backend>(limiter: &Limiter<B>, path: &Path) {
    match Config::load(path) {
        Ok(config) => {
            if config.store != limiter.config().store {
                tracing::warn!("the store section changed; it takes effect at the next restart");
            }
            let mut config = config;
            config.store = limiter.config().store.clone();
            let version = limiter.replace_config(config);
            tracing::info!(version, path = %path.display(), "configuration reloaded");
        }
        Err(err) => {
            limiter.reload_failed(err.to_string());
            tracing::error!(error = %err, "configuration reload failed; the previous one keeps serving");
        }
    }
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A hash of the config files' names and bytes (a directory: its YAML files).
fn fingerprint_of(path: &Path) -> u64 {
    let mut hasher = DefaultHasher::new();
    let mut files = vec![path.to_path_buf()];
    if path.is_dir() {
        files = std::fs::read_dir(path)
            .map(|dir| {
                dir.flatten()
                    .map(|entry| entry.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
    }
    for file in files {
        file.hash(&mut hasher);
        std::fs::read(&file).ok().hash(&mut hasher);
    }
    hasher.finish()
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup() -> Hangup {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn hangup() -> Hangup {}

#[cfg(unix)]
async fn next_signal(hangup: &mut Hangup) {
    match hangup {
        Some(signal) => {
            if signal.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next_signal(_: &mut Hangup) {
    std::future::pending().await
}
