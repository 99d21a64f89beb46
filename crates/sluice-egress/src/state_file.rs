//! The quota state file: where a client keeps its [`QuotaMonitor`] across restarts.
//!
//! Writes never happen on a caller's task or under the client's lock. The client hands a
//! [`Snapshot`] to [`StateFile::offer`], which returns at once; one blocking thread (tokio's
//! `spawn_blocking`) writes the newest snapshot offered, then the newest of those offered
//! meanwhile, so at most one write is in flight and a burst of offers costs one or two
//! writes. Snapshots carry a generation taken under the client's lock: a write never
//! replaces a newer snapshot with an older one, whichever thread gets to the file first.
//!
//! Each write goes to a temporary file in the same directory, is synced, and is renamed
//! over the file (and the directory synced), so a crash mid-write leaves the previous file.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Deserialize;
use sluice_core::Nanos;

use crate::quota::{QuotaConfig, QuotaError, QuotaMonitor, QuotaState};

/// A monitor's state at one moment, numbered in the order the moments came.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    /// Grows with every snapshot of one client.
    pub(crate) generation: u64,
    pub(crate) state: QuotaState,
}

/// A client's state file and its writer.
#[derive(Debug)]
pub(crate) struct StateFile {
    writer: Arc<Writer>,
}

#[derive(Debug)]
struct Writer {
    path: PathBuf,
    upstream: String,
    queue: Mutex<Queue>,
    /// Held while writing: the generation of the newest snapshot on disk.
    written: Mutex<u64>,
}

#[derive(Debug, Default)]
struct Queue {
    /// The newest snapshot not written yet.
    pending: Option<Snapshot>,
    /// A writer thread has been started and has not finished.
    running: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain values inside: a panic elsewhere cannot leave them half-updated.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl StateFile {
    /// The state file at `path`, for the upstream named `upstream` (in its log lines).
    pub(crate) fn new(path: PathBuf, upstream: &str) -> Self {
        Self {
            writer: Arc::new(Writer {
                path,
                upstream: upstream.to_owned(),
                queue: Mutex::new(Queue::default()),
                written: Mutex::new(0),
            }),
        }
    }

    /// The monitor kept in the file, or a fresh one when there is no file yet.
    pub(crate) fn load(&self, config: QuotaConfig, now: Nanos) -> Result<QuotaMonitor, QuotaError> {
        load(config, &self.writer.path, now)
    }

    /// Queues `snapshot` to be written and returns at once. A write failure is logged; the
    /// next snapshot tries again.
    pub(crate) fn offer(&self, snapshot: Snapshot) {
        let mut queue = lock(&self.writer.queue);
        if queue
            .pending
            .as_ref()
            .is_none_or(|p| p.generation < snapshot.generation)
        {
            queue.pending = Some(snapshot);
        }
        if queue.running {
            return;
        }
        queue.running = true;
        drop(queue);
        let drain = Drain(Arc::clone(&self.writer));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || drain.run());
            }
            // No runtime to hand it to: write here.
            Err(_) => drain.run(),
        }
    }

    /// Writes `snapshot` now, on this thread, after any write in flight (call before
    /// exiting).
    pub(crate) fn flush(&self, snapshot: &Snapshot) -> Result<(), QuotaError> {
        {
            let mut queue = lock(&self.writer.queue);
            if queue
                .pending
                .as_ref()
                .is_some_and(|p| p.generation <= snapshot.generation)
            {
                queue.pending = None;
            }
        }
        self.writer.write(snapshot)
    }
}

/// The writer thread's work: pending snapshots until none is left. Dropped without
/// running (a runtime shutting down), it lets the next offer start another.
struct Drain(Arc<Writer>);

impl Drain {
    fn run(self) {
        loop {
            let next = lock(&self.0.queue).pending.take();
            let Some(snapshot) = next else {
                return;
            };
            if let Err(e) = self.0.write(&snapshot) {
                tracing::warn!(upstream = %self.0.upstream, error = %e, "could not persist the quota state");
            }
        }
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        let mut queue = lock(&self.0.queue);
        queue.running = false;
        // An offer that came after the last look but saw `running` left its snapshot for
        // this thread: start another for it. Without a runtime, the next offer or flush
        // writes it.
        if queue.pending.is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        queue.running = true;
        drop(queue);
        let drain = Self(Arc::clone(&self.0));
        runtime.spawn_blocking(move || drain.run());
    }
}

impl Writer {
    fn write(&self, snapshot: &Snapshot) -> Result<(), QuotaError> {
        let mut written = lock(&self.written);
        if snapshot.generation <= *written {
            return Ok(());
        }
        write(&self.path, &snapshot.state)?;
        *written = snapshot.generation;
        Ok(())
    }
}

/// Writes `state` to `path` as JSON: to a temporary file in the same directory, synced,
/// then renamed over `path`, so that a crash leaves the old file or the new one, never half
/// of one.
pub(crate) fn write(path: &Path, state: &QuotaState) -> Result<(), QuotaError> {
    let io_error = |source| QuotaError::Io {
        path: path.to_owned(),
        source,
    };
    let Some(name) = path.file_name() else {
        return Err(io_error(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file path",
        )));
    };
    let json = serde_json::to_vec_pretty(state).map_err(|e| io_error(io::Error::other(e)))?;
    // Unique per process and call: two writers at once never share a file.
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let temp = path.with_file_name(temp_name);
    let written = (|| {
        let mut file = fs::File::create(&temp)?;
        file.write_all(&json)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if let Err(source) = written {
        let _ = fs::remove_file(&temp);
        return Err(io_error(source));
    }
    // Make the rename itself durable; not every platform can open a directory.
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if let Ok(dir) = fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// A monitor from the state file at `path`: a fresh one when the file does not exist, an
/// error naming the file and the fault when it cannot be read or parsed.
pub(crate) fn load(
    config: QuotaConfig,
    path: &Path,
    now: Nanos,
) -> Result<QuotaMonitor, QuotaError> {
    config.validate()?;
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return QuotaMonitor::new(config),
        Err(source) => {
            return Err(QuotaError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let corrupt = |reason: String| QuotaError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    // The version first, so that a newer format says so instead of failing field by field.
    #[derive(Deserialize)]
    struct Versioned {
        version: u32,
    }
    let versioned: Versioned =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if versioned.version != QuotaState::VERSION {
        return Err(corrupt(format!(
            "version {} is not supported (expected {})",
            versioned.version,
            QuotaState::VERSION
        )));
    }
    let state: QuotaState = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    QuotaMonitor::restore(config, state, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::Dimension;

    const NOON: u64 = 1_704_110_400;

    fn at(secs: u64) -> Nanos {
        Nanos::new((NOON + secs) * 1_000_000_000)
    }

    fn used(m: &QuotaMonitor, dimension: Dimension, now: Nanos) -> u64 {
        m.usage(now)
            .iter()
            .find(|u| u.dimension == dimension)
            .map_or(0, |u| u.used)
    }

    fn config() -> QuotaConfig {
        QuotaConfig {
            requests_per_minute: Some(1000),
            requests_per_day: Some(1000),
            ..QuotaConfig::default()
        }
    }

    fn names(dir: &Path) -> Vec<std::ffi::OsString> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    }

    #[test]
    fn a_written_state_survives_a_restart() {
        let dir = sluice_testkit::temp_dir("quota-persist");
        let path = dir.join("quota.json");
        let mut m = load(config(), &path, at(0)).unwrap();
        assert_eq!(
            used(&m, Dimension::RequestsPerMinute, at(0)),
            0,
            "no file: fresh"
        );
        m.record_sent(700, 0, at(0));
        write(&path, &m.snapshot()).unwrap();
        m.record_sent(1, 0, at(1));
        write(&path, &m.snapshot()).unwrap();
        assert_eq!(names(&dir), ["quota.json"], "no temporary file left behind");
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"version\": 1"), "{text}");

        // Restarted within the minute: both windows continue, alerts stay fired.
        let mut m = load(config(), &path, at(30)).unwrap();
        assert_eq!(used(&m, Dimension::RequestsPerMinute, at(30)), 701);
        assert_eq!(m.record_sent(1, 0, at(30)), []);

        // Restarted after the minute: it starts empty, the day's budget is still spent.
        let m = load(config(), &path, at(61)).unwrap();
        assert_eq!(used(&m, Dimension::RequestsPerMinute, at(61)), 0);
        assert_eq!(used(&m, Dimension::RequestsPerDay, at(61)), 701);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = sluice_testkit::temp_dir("quota-corrupt");
        let path = dir.join("quota.json");
        for (text, fault) in [
            ("{not json", "key must be a string"),
            ("", "EOF while parsing"),
            (
                r#"{"version": 2, "whatever": []}"#,
                "version 2 is not supported (expected 1)",
            ),
            (
                r#"{"version": 1, "dimensions": [{"dimension": "per_fortnight"}]}"#,
                "unknown variant",
            ),
        ] {
            fs::write(&path, text).unwrap();
            let err = load(QuotaConfig::default(), &path, at(0)).unwrap_err();
            assert!(matches!(err, QuotaError::Corrupt { .. }), "{err:?}");
            let message = err.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains(fault), "{text:?}: {message}");
        }
        let err = load(QuotaConfig::default(), &dir, at(0)).unwrap_err();
        assert!(matches!(err, QuotaError::Io { .. }), "a directory: {err:?}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_write_leaves_the_previous_file() {
        let dir = sluice_testkit::temp_dir("quota-torn");
        let path = dir.join("quota.json");
        let mut m = QuotaMonitor::new(config()).unwrap();
        m.record_sent(5, 0, at(0));
        write(&path, &m.snapshot()).unwrap();
        let before = fs::read(&path).unwrap();
        // A crash between creating the temporary file and the rename leaves a stray
        // temporary file and the old state file, never a half-written one.
        fs::write(dir.join(".quota.json.1.1.tmp"), b"{\"version\": 1, \"dimen").unwrap();
        assert_eq!(fs::read(&path).unwrap(), before);
        let m = load(config(), &path, at(1)).unwrap();
        assert_eq!(used(&m, Dimension::RequestsPerMinute, at(1)), 5);
        let _ = fs::remove_dir_all(&dir);
    }

    fn snapshot(m: &mut QuotaMonitor, generation: u64, sent: u64) -> Snapshot {
        m.record_sent(sent, 0, at(0));
        Snapshot {
            generation,
            state: m.snapshot(),
        }
    }

    #[test]
    fn an_older_snapshot_never_replaces_a_newer_one() {
        let dir = sluice_testkit::temp_dir("quota-generations");
        let path = dir.join("quota.json");
        let file = StateFile::new(path.clone(), "test");
        let mut m = QuotaMonitor::new(config()).unwrap();
        let older = snapshot(&mut m, 1, 1);
        let newer = snapshot(&mut m, 2, 1);
        file.flush(&newer).unwrap();
        file.flush(&older).unwrap();
        let m = load(config(), &path, at(1)).unwrap();
        assert_eq!(used(&m, Dimension::RequestsPerMinute, at(1)), 2);
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn offers_return_at_once_and_the_newest_is_written() {
        let dir = sluice_testkit::temp_dir("quota-offers");
        let path = dir.join("quota.json");
        let file = StateFile::new(path.clone(), "test");
        let mut m = QuotaMonitor::new(config()).unwrap();
        // Offered out of order, as callers that took them under the lock may offer them.
        let mut snapshots: Vec<Snapshot> = (1..=200).map(|g| snapshot(&mut m, g, 1)).collect();
        snapshots.swap(198, 199);
        for s in snapshots {
            file.offer(s);
        }
        // The writer drains on its own thread; flushing the newest waits for any write in
        // flight, and is then a no-op if the writer got there first.
        let newest = Snapshot {
            generation: 200,
            state: m.snapshot(),
        };
        file.flush(&newest).unwrap();
        let loaded = load(config(), &path, at(1)).unwrap();
        assert_eq!(used(&loaded, Dimension::RequestsPerMinute, at(1)), 200);
        assert_eq!(names(&dir), ["quota.json"], "no temporary file left behind");
        let _ = fs::remove_dir_all(&dir);
    }
}
