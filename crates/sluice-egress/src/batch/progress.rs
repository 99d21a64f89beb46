//! What a run reports while it goes ([`BatchProgress`] to a [`ProgressSink`]) and when it
//! ends ([`BatchSummary`]).

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice_core::{BreakerState, Nanos};

use crate::EgressStats;

/// Where a run reports its progress: a progress bar, log lines, nothing ([`NoProgress`]).
pub trait ProgressSink: Send + Sync {
    /// Called when the run starts, every [`progress_every`](super::BatchConfig::progress_every),
    /// and once at the end (with [`BatchProgress::finished`] set).
    fn update(&self, progress: &BatchProgress);

    /// A notable moment, as one line for a person: resuming, pausing for the quota, going
    /// on, stopping.
    fn note(&self, message: &str) {
        let _ = message;
    }
}

/// A sink that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn update(&self, _progress: &BatchProgress) {}
}

/// A run's progress at one instant.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchProgress {
    /// Non-blank input lines.
    pub total: u64,
    /// Items in the results file (earlier runs included).
    pub done: u64,
    /// Entries in the dead letter: invalid lines and failed items (earlier runs included).
    pub failed: u64,
    /// Requests on the wire.
    pub in_flight: u32,
    /// Items started and not answered: waiting for quota, pace, a slot or a retry.
    pub waiting: u64,
    /// Items finished (done or failed) per minute over the last minute of this run.
    pub rate_per_minute: f64,
    /// At that rate, when the rest will be finished.
    pub eta: Option<Duration>,
    /// The most used quota dimension's usage, in percent, when a limit is known.
    pub quota_percent: Option<f64>,
    /// Why items are not being sent, when they are not: a quota pause or exhaustion, an
    /// open circuit.
    pub paused: Option<String>,
    /// 429 answers seen in this run.
    pub rate_limited: u64,
    /// Retries in this run.
    pub retries: u64,
    /// The concurrency limit.
    pub concurrency_limit: u32,
    /// Since the run started.
    pub elapsed: Duration,
    /// Whether the run has ended.
    pub finished: bool,
}

impl BatchProgress {
    /// Items neither in the results nor in the dead letter.
    pub fn remaining(&self) -> u64 {
        self.total
            .saturating_sub(self.done)
            .saturating_sub(self.failed)
    }
}

/// What a run did.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchSummary {
    /// Non-blank input lines.
    pub items: u64,
    /// Items answered with success in this run.
    pub succeeded: u64,
    /// Items that failed for good in this run (now in the dead letter).
    pub failed: u64,
    /// Invalid input lines found in this run (now in the dead letter).
    pub invalid: u64,
    /// Items skipped because an earlier run did them.
    pub already_done: u64,
    /// Items skipped because an earlier run failed them (run with `retry_failed` to send
    /// them again).
    pub skipped_failed: u64,
    /// Items the journal listed as in flight when the previous run stopped.
    pub resumed_in_flight: u64,
    /// Lines in the results file now.
    pub results: u64,
    /// Invalid lines in the dead letter now.
    pub dead_letter_invalid: u64,
    /// Failed items in the dead letter now.
    pub dead_letter_failed: u64,
    /// Items neither in the results nor in the dead letter (left by an interrupted run).
    pub remaining: u64,
    /// How long the run took.
    pub elapsed: Duration,
    /// Attempts sent.
    pub attempts: u64,
    /// Attempts that were retries.
    pub retries: u64,
    /// 429 answers seen.
    pub rate_limited: u64,
    /// Times items paused for the quota (or an open circuit).
    pub pauses: u64,
    /// Whether the run stopped before the end of the input.
    pub interrupted: bool,
    /// The results file.
    pub output: PathBuf,
    /// The dead letter.
    pub dead_letter: PathBuf,
}

impl BatchSummary {
    /// Items finished in this run per minute.
    pub fn items_per_minute(&self) -> f64 {
        per_minute(self.succeeded + self.failed, self.elapsed)
    }
}

impl fmt::Display for BatchSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.interrupted {
            "interrupted"
        } else {
            "finished"
        };
        writeln!(
            f,
            "batch {state} in {:.1} s: {} succeeded, {} failed, {} invalid lines ({:.0} items/min)",
            self.elapsed.as_secs_f64(),
            self.succeeded,
            self.failed,
            self.invalid,
            self.items_per_minute(),
        )?;
        writeln!(
            f,
            "  skipped: {} already done, {} failed earlier; {} were in flight when the last run stopped",
            self.already_done, self.skipped_failed, self.resumed_in_flight
        )?;
        writeln!(
            f,
            "  upstream: {} attempts, {} retries, {} answered 429, {} pauses",
            self.attempts, self.retries, self.rate_limited, self.pauses
        )?;
        writeln!(
            f,
            "  results: {} lines in {}",
            self.results,
            self.output.display()
        )?;
        write!(
            f,
            "  dead letter: {} failed items, {} invalid lines in {}",
            self.dead_letter_failed,
            self.dead_letter_invalid,
            self.dead_letter.display()
        )?;
        if self.remaining > 0 {
            write!(f, "\n  remaining: {} items", self.remaining)?;
        }
        Ok(())
    }
}

fn per_minute(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    to_f64(count) / secs * 60.0
}

#[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
fn to_f64(count: u64) -> f64 {
    count as f64
}

/// How long the rate is measured over.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Counts of the run, and the rate and pause state sampled at each tick.
#[derive(Debug)]
pub(crate) struct Tracker {
    started_at: Nanos,
    total: u64,
    pause_threshold: u8,
    pub(crate) resumed_in_flight: u64,
    pub(crate) started: u64,
    pub(crate) succeeded: u64,
    pub(crate) failed: u64,
    pub(crate) invalid: u64,
    pub(crate) skipped_done: u64,
    pub(crate) skipped_failed: u64,
    pub(crate) cancelled: u64,
    samples: VecDeque<(Nanos, u64)>,
    paused: Option<String>,
    pauses: u64,
}

impl Tracker {
    pub(crate) fn new(
        started_at: Nanos,
        total: u64,
        resumed_in_flight: usize,
        pause_threshold: u8,
    ) -> Self {
        Self {
            started_at,
            total,
            pause_threshold,
            resumed_in_flight: u64::try_from(resumed_in_flight).unwrap_or(u64::MAX),
            started: 0,
            succeeded: 0,
            failed: 0,
            invalid: 0,
            skipped_done: 0,
            skipped_failed: 0,
            cancelled: 0,
            samples: VecDeque::new(),
            paused: None,
            pauses: 0,
        }
    }

    /// The line that says a run resumes a job.
    pub(crate) fn resume_note(&self, done: usize, dead: usize, in_flight: &[String]) -> String {
        let mut note = format!(
            "resuming: {done} of {} items done, {dead} in the dead letter",
            self.total
        );
        if !in_flight.is_empty() {
            note.push_str(&format!(
                "; {} were in flight when the last run stopped and are sent again with their Idempotency-Key",
                in_flight.len()
            ));
        }
        note
    }

    fn finished(&self) -> u64 {
        self.succeeded + self.failed
    }

    /// Samples the rate and the pause state; returns a note when the pause state changed.
    pub(crate) fn observe(&mut self, now: Nanos, stats: &EgressStats) -> Option<String> {
        self.samples.push_back((now, self.finished()));
        while self
            .samples
            .front()
            .is_some_and(|&(at, _)| now.saturating_since(at) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        let paused = pause_reason(stats, self.pause_threshold, now);
        let note = match (&self.paused, &paused) {
            (None, Some(reason)) => {
                self.pauses += 1;
                Some(format!("paused: {reason}"))
            }
            (Some(_), None) => Some("going on: the pause is over".to_owned()),
            _ => None,
        };
        self.paused = paused;
        note
    }

    fn rate_per_minute(&self, now: Nanos) -> f64 {
        match self.samples.front() {
            Some(&(at, count)) if now.saturating_since(at) >= Duration::from_secs(1) => per_minute(
                self.finished().saturating_sub(count),
                now.saturating_since(at),
            ),
            _ => per_minute(self.finished(), now.saturating_since(self.started_at)),
        }
    }

    pub(crate) fn progress(
        &self,
        now: Nanos,
        stats: &EgressStats,
        done: usize,
        dead: usize,
        finished: bool,
    ) -> BatchProgress {
        let rate = self.rate_per_minute(now);
        let mut progress = BatchProgress {
            total: self.total,
            done: u64::try_from(done).unwrap_or(u64::MAX),
            failed: u64::try_from(dead).unwrap_or(u64::MAX),
            in_flight: stats.in_flight,
            waiting: self
                .started
                .saturating_sub(self.finished())
                .saturating_sub(self.cancelled)
                .saturating_sub(u64::from(stats.in_flight)),
            rate_per_minute: rate,
            eta: None,
            quota_percent: stats
                .quota
                .iter()
                .map(|usage| usage.percent)
                .reduce(f64::max),
            paused: self.paused.clone(),
            rate_limited: stats.rate_limited,
            retries: stats.retried,
            concurrency_limit: stats.concurrency_limit,
            elapsed: now.saturating_since(self.started_at),
            finished,
        };
        let remaining = progress.remaining();
        if rate > 0.0 && remaining > 0 {
            let minutes = to_f64(remaining) / rate;
            progress.eta = Duration::try_from_secs_f64(minutes * 60.0).ok();
        }
        progress
    }

    #[allow(clippy::too_many_arguments, reason = "the end of a run, once")]
    pub(crate) fn summary(
        &self,
        now: Nanos,
        stats: &EgressStats,
        interrupted: bool,
        done: usize,
        (invalid, failed): (usize, usize),
        output: &Path,
        dead_letter: &Path,
    ) -> BatchSummary {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let results = count(done);
        BatchSummary {
            items: self.total,
            succeeded: self.succeeded,
            failed: self.failed,
            invalid: self.invalid,
            already_done: self.skipped_done,
            skipped_failed: self.skipped_failed,
            resumed_in_flight: self.resumed_in_flight,
            results,
            dead_letter_invalid: count(invalid),
            dead_letter_failed: count(failed),
            remaining: self
                .total
                .saturating_sub(results)
                .saturating_sub(count(invalid + failed)),
            elapsed: now.saturating_since(self.started_at),
            attempts: stats.attempts,
            retries: stats.retried,
            rate_limited: stats.rate_limited,
            pauses: self.pauses,
            interrupted,
            output: output.to_owned(),
            dead_letter: dead_letter.to_owned(),
        }
    }
}

/// Why batch work is held now, if it is: an open circuit, an exhausted quota dimension, or
/// one at or above the pause threshold.
fn pause_reason(stats: &EgressStats, threshold: u8, now: Nanos) -> Option<String> {
    if let BreakerState::Open { until } = stats.circuit {
        return Some(format!(
            "the upstream is failing (circuit open), next try in {}",
            short(until.saturating_since(now))
        ));
    }
    let threshold = f64::from(threshold);
    for usage in &stats.quota {
        let Some(resets_at) = usage.resets_at.filter(|&at| at > now) else {
            continue;
        };
        let reset = short(resets_at.saturating_since(now));
        let name = usage.dimension.name();
        if usage.remaining == 0 {
            return Some(format!("{name} exhausted, until the reset in {reset}"));
        }
        if usage.percent >= threshold {
            return Some(format!(
                "{name} at {:.0} % (pause threshold {threshold:.0} %), until the reset in {reset}",
                usage.percent
            ));
        }
    }
    None
}

/// A duration for people: `45s`, `12m 5s`, `3h 20m`.
pub(crate) fn short(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..60 => format!("{}s", secs.max(1)),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        _ => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
    }
}
