//! Resumable batch jobs (feature `batch`): a JSON Lines file of requests sent to a
//! quota-limited upstream through one [`Egress`] client, with every answer written to a
//! JSON Lines results file. This is `sluice batch` as a library; the binary adds flags, a
//! progress bar and signals.
//!
//! ```text
//!  requests.jsonl ──▶ read a line at a time (a bounded window of items in memory)
//!        │              invalid JSON, no id, a repeated id ──▶ dead letter (with the line)
//!        │              id already in results.jsonl ──▶ skipped (done by an earlier run)
//!        ▼
//!  in-flight journal ◀── the id, before it is sent
//!        ▼
//!  Egress::execute: quota pause, pace, adaptive concurrency, retries, circuit breaker
//!        │   one HTTP attempt per call of `send`, with `Idempotency-Key: <job key + id>`
//!        ▼
//!  results.jsonl ◀── {"id","status","body","attempts","latency_ms"}: one write per line
//!  dead letter   ◀── failed for good (4xx, retries exhausted, quota past the wait)
//! ```
//!
//! # Input
//!
//! One JSON object per line: `{"id": "...", "method": "POST", "path":
//! "/v1/chat/completions", "headers": {...}, "body": {...}, "priority": 0}`. Only `id` (a
//! non-empty string, unique in the file) and `path` are required; `method` defaults to
//! `POST`, `priority` to 0 (batch; 0–255, or `"batch"` / `"interactive"`). OpenAI's batch
//! file names are accepted too: `custom_id` for `id` and `url` for `path`. The request goes
//! to the base URL followed by `path`, with the item's headers (`Authorization` included;
//! header values are never logged or written anywhere) and the body as compact JSON
//! (`content-type: application/json` unless the item sets one; `content-length`,
//! `transfer-encoding` and `connection` are the client's to set and are dropped). Blank
//! lines are ignored. Any other line is written to the dead letter with its line number and
//! the reason.
//!
//! Items are read as they are needed: at most [`BatchConfig::window`] bodies are in memory
//! at once. The ids seen so far are kept (to refuse repeated ones), and so are the ids
//! already done, each as a 16-byte fingerprint (the first 128 bits of its SHA-256) rather
//! than its text, so memory per id is bounded whatever the ids' length.
//!
//! # Files
//!
//! - The **results** file ([`BatchConfig::output`]) is the record of what is done, in the
//!   order items finish (not the input's order). On start it is read: a torn last line (no
//!   newline, from a kill mid-write) is cut off, and every id in it is done. Each answer is
//!   then appended with one `write` of the whole line, and the file is synced to disk every
//!   [`BatchConfig::sync_every`] (or [`BatchConfig::sync_lines`] lines) and on exit.
//! - The **state directory** ([`BatchConfig::state_dir`], by default `<output>.state/`)
//!   holds [`DEAD_LETTER_FILE`] (one JSON object per line: `kind` `invalid` or `failed`,
//!   `line`, `id`, `reason`, and for failed items `status`, `body` and `attempts`),
//!   [`JOURNAL_FILE`] (the ids sent and not yet known to be done), [`QUOTA_FILE`] (the
//!   quota monitor's state, so daily counts and pauses survive restarts), [`MANIFEST_FILE`]
//!   (the job's idempotency key seed and the files it belongs to) and [`LOCK_FILE`] (held
//!   while a run is going, so two runs cannot share a state directory).
//!
//! # What is guaranteed
//!
//! Run the same command again after Ctrl-C, `kill -9` or a crash, and it continues: every
//! input id ends up exactly once in the results file or, if it failed for good, in the dead
//! letter. Nothing is lost, and nothing that was written as done is sent again.
//!
//! What the *upstream* sees depends on it. A kill can fall between the upstream's answer
//! and the line reaching the results file; those few items (at most the calls in flight,
//! listed in the journal) are sent again on resume. Each request carries an
//! `Idempotency-Key` that is the same on every run of the job ([`BatchConfig::idempotency_keys`]):
//! an upstream that honours it answers the repeat from its store, so each successful item
//! is processed exactly once. An upstream that ignores the key gets **at least once** for
//! those few calls. The same key makes a POST safe to retry after a timeout or a broken
//! connection, so with keys on the client retries those too.
//!
//! A kill is safe at any instant (every line is one write). A power failure can lose the
//! lines of the last [`BatchConfig::sync_every`]; those items are sent again, under the
//! same rules.
//!
//! # Failures and waiting
//!
//! An item waits rather than fails: a quota pause, an exhausted quota, a 429 or a 503 that
//! outlasts the client's retries, an open circuit or an upstream it cannot connect to make
//! it wait and try again, up to [`BatchConfig::max_wait`] (a day by default; the dead letter
//! then names the last failure). It fails for good, to the dead letter, on a non-retryable
//! answer (most 4xx), when the client's retries of another server error (500, 502, 504), a
//! timeout or a broken connection run out, or when a quota wait would pass `max_wait`.
//! `retry_failed` sends the failed items again; one that succeeds leaves the dead letter.
//!
//! The client checks the quota before an item waits for its pace, so the engine lets only a
//! few items wait inside it at once (besides those on the wire), and holds the rest itself
//! while the quota holds batch work: a pause takes effect within a few requests of the
//! threshold, and ends at the reset without anyone's help.
//!
//! # Stopping
//!
//! When `shutdown` resolves, no new item is started, items not yet sent are dropped (the
//! next run sends them), and items on the wire get [`BatchConfig::drain_timeout`] to
//! answer; then the files are synced and [`run`] returns a summary with
//! [`BatchSummary::interrupted`] set.

mod dead_letter;
mod ids;
mod input;
mod item;
mod journal;
mod output;
mod progress;
mod state;
#[cfg(test)]
mod tests;
mod transport;

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, Request, Response};
use sluice_core::{Clock, Nanos};
use sluice_store::MemoryStore;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::{Egress, EgressConfig, EgressConfigError, SendError, TokioClock};

pub use self::progress::{BatchProgress, BatchSummary, NoProgress, ProgressSink};
pub use self::transport::HttpTransport;

use self::dead_letter::DeadLetter;
use self::ids::IdKey;
use self::input::{Line, Reader};
use self::item::{Ctx, Outcome};
use self::journal::Journal;
use self::output::Output;
use self::progress::Tracker;

/// The dead letter, in the state directory: invalid lines and items that failed for good.
pub const DEAD_LETTER_FILE: &str = "dead-letter.jsonl";
/// The in-flight journal, in the state directory: ids sent and not known to be done.
pub const JOURNAL_FILE: &str = "in-flight.jsonl";
/// The quota monitor's state, in the state directory.
pub const QUOTA_FILE: &str = "quota.json";
/// The job's manifest, in the state directory: its files and idempotency key seed.
pub const MANIFEST_FILE: &str = "batch.json";
/// The lock file, in the state directory, held while a run is going.
pub const LOCK_FILE: &str = "lock";
/// The header that carries each item's idempotency key.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Sends one HTTP attempt: [`HttpTransport`] (reqwest), or an in-process double in tests.
pub trait Transport: Send + Sync + fmt::Debug + 'static {
    /// Sends `request` (an absolute URI, the body whole) and reads the whole answer, or
    /// fails with the [`SendError`] class of what went wrong.
    fn send(&self, request: Request<Bytes>) -> BoxFuture<'_, Result<Response<Bytes>, SendError>>;
}

/// Everything a batch run is configured with. [`BatchConfig::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct BatchConfig {
    /// The requests, one JSON object per line.
    pub input: PathBuf,
    /// The results, one JSON object per line; created if missing, appended to otherwise.
    pub output: PathBuf,
    /// Where the dead letter, journal, quota state and manifest live.
    pub state_dir: PathBuf,
    /// Where requests go: `http(s)://host[:port][/prefix]`; each item's `path` is appended.
    pub base_url: String,
    /// The base URL is a `sluice proxy`: each request also carries its priority in
    /// `x-sluice-priority`, so the proxy pauses batch work at its threshold.
    pub via_proxy: bool,
    /// The egress client (pace, quota, concurrency, retries). Its `state_file` is set to
    /// [`QUOTA_FILE`] in the state directory.
    pub egress: EgressConfig,
    /// Send the items in the dead letter again (the failed ones; invalid lines stay).
    pub retry_failed: bool,
    /// How long one item may wait for quota, pace, a closed circuit or a reachable
    /// upstream before it fails for good.
    pub max_wait: Duration,
    /// Send `Idempotency-Key` (unless the item sets it), and treat requests as safe to
    /// retry after failures that may have been processed.
    pub idempotency_keys: bool,
    /// The most items started and not finished at once (their bodies are in memory).
    pub window: usize,
    /// How often the progress sink is called.
    pub progress_every: Duration,
    /// After `shutdown`, how long requests on the wire may take to answer.
    pub drain_timeout: Duration,
    /// The longest time between syncs of the results file to disk.
    pub sync_every: Duration,
    /// The most result lines between syncs.
    pub sync_lines: u32,
    /// The longest input line, in bytes; longer ones are dead-lettered.
    pub max_line: usize,
    /// The most bytes of an answer kept; a larger answer fails its item.
    pub max_response: usize,
    /// How attempts are sent; `None`: an [`HttpTransport`].
    pub transport: Option<Arc<dyn Transport>>,
}

impl BatchConfig {
    /// A batch from `input` to `output`, sent to `base_url`, with the state directory next
    /// to the output ([`default_state_dir`](Self::default_state_dir)) and
    /// [`batch_egress`](Self::batch_egress) for the client.
    pub fn new(
        input: impl Into<PathBuf>,
        output: impl Into<PathBuf>,
        base_url: impl Into<String>,
    ) -> Self {
        let output = output.into();
        let base_url = base_url.into();
        let egress = Self::batch_egress(upstream_name(&base_url));
        Self {
            input: input.into(),
            state_dir: Self::default_state_dir(&output),
            output,
            base_url,
            via_proxy: false,
            window: window_for(egress.concurrency.max),
            egress,
            retry_failed: false,
            max_wait: Duration::from_secs(24 * 3600),
            idempotency_keys: true,
            progress_every: Duration::from_millis(250),
            drain_timeout: Duration::from_secs(30),
            sync_every: Duration::from_secs(1),
            sync_lines: 1000,
            max_line: crate::layer::DEFAULT_MAX_BODY,
            max_response: crate::layer::DEFAULT_MAX_BODY,
            transport: None,
        }
    }

    /// `<output>.state`, next to the output file.
    pub fn default_state_dir(output: &Path) -> PathBuf {
        let mut name = output.as_os_str().to_owned();
        name.push(".state");
        PathBuf::from(name)
    }

    /// The egress defaults for a batch: those of [`EgressConfig::new`], with more patience
    /// for retries (8 attempts within an hour), since nobody is waiting on one item.
    pub fn batch_egress(upstream: impl Into<String>) -> EgressConfig {
        let mut config = EgressConfig::new(upstream);
        config.retry.max_attempts = 8;
        config.retry.max_elapsed = Duration::from_secs(3600);
        config
    }

    /// The same configuration with the window sized for the client's concurrency limit
    /// (twice its maximum, within 16 to 1024): call after changing
    /// `egress.concurrency.max`.
    #[must_use]
    pub fn with_window_for_concurrency(self) -> Self {
        Self {
            window: window_for(self.egress.concurrency.max),
            ..self
        }
    }

    fn validate(&self) -> Result<(), BatchError> {
        let bad = |field: &'static str, value: &dyn fmt::Display, reason: &str| {
            Err(BatchError::Config {
                field,
                value: value.to_string(),
                reason: reason.to_owned(),
            })
        };
        let uri: http::Uri = match self.base_url.parse() {
            Ok(uri) => uri,
            Err(e) => return bad("base_url", &self.base_url, &format!("is not a URL: {e}")),
        };
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") if cfg!(feature = "rustls") || self.transport.is_some() => {}
            Some("https") => {
                return bad(
                    "base_url",
                    &self.base_url,
                    "is https, but this build has no TLS (feature `rustls`)",
                );
            }
            _ => {
                return bad(
                    "base_url",
                    &self.base_url,
                    "must start with http:// or https://",
                );
            }
        }
        if uri.authority().is_none() {
            return bad("base_url", &self.base_url, "has no host");
        }
        if uri.query().is_some() {
            return bad("base_url", &self.base_url, "may not have a query");
        }
        if self.window == 0 {
            return bad("window", &0, "must be at least 1");
        }
        if self.sync_lines == 0 {
            return bad("sync_lines", &0, "must be at least 1");
        }
        if self.progress_every.is_zero() {
            return bad("progress_every", &"0", "must be more than 0");
        }
        Ok(())
    }
}

/// The name of the upstream a base URL points at: its host, for logs.
fn upstream_name(base_url: &str) -> String {
    base_url
        .parse::<http::Uri>()
        .ok()
        .and_then(|uri| uri.host().map(str::to_owned))
        .unwrap_or_else(|| "upstream".to_owned())
}

fn window_for(max_concurrency: u32) -> usize {
    usize::try_from(max_concurrency.saturating_mul(2))
        .unwrap_or(usize::MAX)
        .clamp(16, 1024)
}

/// Why a batch could not run (failures of single items are not errors: they go to the
/// dead letter).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// A setting has a bad value.
    #[error("{field}: {value:?} {reason}")]
    Config {
        /// The setting, as named in [`BatchConfig`].
        field: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The egress client's configuration cannot work.
    #[error(transparent)]
    Egress(#[from] EgressConfigError),
    /// A file could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// Which file, in words.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// A file of the job holds a line that is not what this engine writes.
    #[error("{}: line {line} {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// Another run holds the state directory.
    #[error(
        "another sluice batch is running with the state directory {} (its {LOCK_FILE} is locked)",
        state_dir.display()
    )]
    Locked {
        /// The state directory.
        state_dir: PathBuf,
    },
    /// The state directory belongs to a job with another results file.
    #[error(
        "the state directory {} belongs to the results file {} (see its {MANIFEST_FILE}), not {}: use another state directory",
        state_dir.display(),
        recorded.display(),
        given.display()
    )]
    OtherJob {
        /// The state directory.
        state_dir: PathBuf,
        /// The results file it belongs to.
        recorded: PathBuf,
        /// The results file given.
        given: PathBuf,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// An item's task panicked (a bug).
    #[error("an item's task failed: {0}")]
    Task(String),
}

impl BatchError {
    fn io(what: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            what,
            path: path.to_owned(),
            source,
        }
    }
}

/// Runs the batch until every item is done or failed, or until `shutdown` resolves; see
/// the [module docs](self). Must run inside a tokio runtime; the items run on tasks of
/// its own (a [`JoinSet`] that is aborted if this future is dropped).
///
/// # Errors
///
/// A [`BatchError`] when the run cannot start (a bad setting, a locked or foreign state
/// directory, an unreadable file) or a file cannot be written. What was written before
/// stays valid: run again to continue.
pub async fn run(
    config: BatchConfig,
    progress: &dyn ProgressSink,
    shutdown: impl Future<Output = ()>,
) -> Result<BatchSummary, BatchError> {
    config.validate()?;
    let clock = TokioClock::new();
    let started = clock.now();
    let scan = input::scan(&config.input)?;
    let _lock = state::lock(&config.state_dir)?;
    let manifest = state::manifest(&config, &scan, started)?;
    let (mut output, done) = Output::recover(&config.output)?;
    let mut dead = DeadLetter::load(&config.state_dir.join(DEAD_LETTER_FILE), &done)?;
    let (mut journal, in_flight) = Journal::open(&config.state_dir.join(JOURNAL_FILE), |id| {
        done.contains(&IdKey::of(id)) || dead.is_failed(id)
    })?;
    let mut egress_config = config.egress.clone();
    egress_config.state_file = Some(config.state_dir.join(QUOTA_FILE));
    // An item keeps trying what the upstream turned away (429, a spent quota, 503, an open
    // circuit) for as long as it may wait.
    egress_config.retry.until_processed = true;
    egress_config.retry.max_elapsed = config.max_wait;
    let pause_threshold = egress_config.quota.pause_threshold;
    let egress = Egress::with_store(egress_config, MemoryStore::with_clock(clock), clock)?;
    let transport: Arc<dyn Transport> = match &config.transport {
        Some(transport) => Arc::clone(transport),
        None => Arc::new(HttpTransport::new(config.max_response)?),
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let ctx = Arc::new(Ctx {
        egress: egress.clone(),
        transport,
        base: config.base_url.trim_end_matches('/').to_owned(),
        via_proxy: config.via_proxy,
        job_key: config.idempotency_keys.then(|| manifest.job_key.clone()),
        max_wait: config.max_wait,
        stop: stop_rx,
        clock,
        quota: config.egress.quota.clone(),
        door: item::Door::default(),
    });

    let mut tracker = Tracker::new(started, scan.items, in_flight.len(), pause_threshold);
    if !done.is_empty() || !dead.is_empty() {
        let message = tracker.resume_note(done.len(), dead.len(), &in_flight);
        tracing::info!("{message}");
        progress.note(&message);
    }
    let mut run = Running {
        config: &config,
        clock,
        reader: Reader::open(&config.input, config.max_line)?,
        output: &mut output,
        journal: &mut journal,
        dead: &mut dead,
        done,
        tasks: JoinSet::new(),
        ctx,
        tracker: &mut tracker,
        input_done: false,
        stopping: false,
        unsynced: 0,
        synced_at: started,
    };
    let result = run.drive(progress, shutdown, &stop_tx).await;
    let complete = result.is_ok() && run.input_done && !run.stopping && run.tasks.is_empty();
    run.tasks.abort_all();
    let done_total = run.done.len();
    drop(run);

    // Whatever happened, leave the files synced and compact.
    let synced = output
        .sync()
        .map_err(|e| BatchError::io("cannot sync the results file", &config.output, e));
    let journal_done = if complete {
        journal.clear()
    } else {
        journal.sync()
    };
    let dead_done = dead.finish();
    if let Err(e) = egress.flush() {
        tracing::warn!(error = %e, "could not save the quota state");
    }
    result?;
    synced?;
    journal_done?;
    dead_done?;
    let now = clock.now();
    let stats = egress.stats();
    let summary = tracker.summary(
        now,
        &stats,
        !complete,
        done_total,
        dead.counts(),
        &config.output,
        dead.path(),
    );
    progress.update(&tracker.progress(now, &stats, done_total, dead.len(), true));
    Ok(summary)
}

/// The state of one run, borrowed by its main loop.
struct Running<'a> {
    config: &'a BatchConfig,
    clock: TokioClock,
    reader: Reader,
    output: &'a mut Output,
    journal: &'a mut Journal,
    dead: &'a mut DeadLetter,
    done: HashSet<IdKey>,
    tasks: JoinSet<Outcome>,
    ctx: Arc<Ctx>,
    tracker: &'a mut Tracker,
    input_done: bool,
    stopping: bool,
    unsynced: u32,
    synced_at: Nanos,
}

impl Running<'_> {
    async fn drive(
        &mut self,
        progress: &dyn ProgressSink,
        shutdown: impl Future<Output = ()>,
        stop: &watch::Sender<bool>,
    ) -> Result<(), BatchError> {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut tick = tokio::time::interval(self.config.progress_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        progress.update(&self.tracker.progress(
            self.clock.now(),
            &self.ctx.egress.stats(),
            self.done.len(),
            self.dead.len(),
            false,
        ));
        loop {
            self.fill()?;
            if self.tasks.is_empty() && (self.input_done || self.stopping) {
                return Ok(());
            }
            let drain_at = drain_deadline.unwrap_or_else(tokio::time::Instant::now);
            tokio::select! {
                biased;
                () = &mut shutdown, if !self.stopping => {
                    self.stopping = true;
                    // The receivers live in the tasks' context: sending cannot fail while
                    // it does, and nothing needs the value once it does not.
                    let _ = stop.send(true);
                    drain_deadline = Some(tokio::time::Instant::now() + self.config.drain_timeout);
                    let message = format!(
                        "stopping: no new items; waiting up to {:?} for the {} on the wire",
                        self.config.drain_timeout,
                        self.ctx.egress.stats().in_flight,
                    );
                    tracing::info!("{message}");
                    progress.note(&message);
                }
                joined = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    match joined {
                        Some(Ok(outcome)) => self.finish(outcome)?,
                        Some(Err(e)) if e.is_cancelled() => {}
                        Some(Err(e)) => return Err(BatchError::Task(e.to_string())),
                        None => {}
                    }
                }
                () = tokio::time::sleep_until(drain_at), if drain_deadline.is_some() => {
                    let left = self.tasks.len();
                    tracing::warn!(left, "requests still on the wire after the drain timeout: dropped (the next run sends them again)");
                    self.tasks.abort_all();
                    while self.tasks.join_next().await.is_some() {}
                    return Ok(());
                }
                _ = tick.tick() => {
                    let now = self.clock.now();
                    let stats = self.ctx.egress.stats();
                    if let Some(note) = self.tracker.observe(now, &stats) {
                        tracing::info!("{note}");
                        progress.note(&note);
                    }
                    progress.update(&self.tracker.progress(
                        now,
                        &stats,
                        self.done.len(),
                        self.dead.len(),
                        false,
                    ));
                    if self.unsynced > 0
                        && now.saturating_since(self.synced_at) >= self.config.sync_every
                    {
                        self.sync()?;
                    }
                }
            }
        }
    }

    /// Starts items until the window is full or the input ends.
    fn fill(&mut self) -> Result<(), BatchError> {
        while !self.input_done && !self.stopping && self.tasks.len() < self.config.window {
            let Some(line) = self.reader.next_line()? else {
                self.input_done = true;
                break;
            };
            match line {
                Line::Invalid(invalid) => {
                    if self.dead.add_invalid(&invalid)? {
                        self.tracker.invalid += 1;
                        tracing::warn!(line = invalid.line, reason = %invalid.reason, "input line skipped into the dead letter");
                    }
                }
                Line::Item(item) => {
                    self.dead.resolve_line(item.line)?;
                    if self.done.contains(&IdKey::of(&item.id)) {
                        self.tracker.skipped_done += 1;
                        continue;
                    }
                    if self.dead.is_failed(&item.id) && !self.config.retry_failed {
                        self.tracker.skipped_failed += 1;
                        continue;
                    }
                    self.journal.start(&item.id, item.line)?;
                    self.tracker.started += 1;
                    let ctx = Arc::clone(&self.ctx);
                    self.tasks.spawn(item::process(item, ctx));
                }
            }
        }
        Ok(())
    }

    /// Records one item's outcome.
    fn finish(&mut self, outcome: Outcome) -> Result<(), BatchError> {
        match outcome {
            Outcome::Done { id, line } => {
                self.output.append(&line).map_err(|e| {
                    BatchError::io("cannot write the results file", &self.config.output, e)
                })?;
                self.dead.resolve_failed(&id)?;
                self.done.insert(IdKey::of(&id));
                self.tracker.succeeded += 1;
                self.unsynced += 1;
                if self.unsynced >= self.config.sync_lines {
                    self.sync()?;
                }
            }
            Outcome::Failed(entry) => {
                tracing::debug!(line = entry.line, reason = %entry.reason, "item failed: dead letter");
                self.dead.add_failed(entry)?;
                self.tracker.failed += 1;
            }
            Outcome::Cancelled => self.tracker.cancelled += 1,
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), BatchError> {
        self.output
            .sync()
            .map_err(|e| BatchError::io("cannot sync the results file", &self.config.output, e))?;
        self.journal.sync()?;
        self.unsynced = 0;
        self.synced_at = self.clock.now();
        Ok(())
    }
}
