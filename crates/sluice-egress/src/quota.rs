//! The quota monitor: how much of an upstream account's quota a program has used, per
//! dimension, with alerts, and a pause for low-priority work before the quota runs out.
//!
//! Pure: every method takes `now` (wall-clock nanoseconds since the Unix epoch, so that a
//! persisted reset instant still means something after a restart) and nothing reads a
//! clock, and no I/O: [`QuotaMonitor::snapshot`] and [`QuotaMonitor::restore`] turn it into
//! a [`QuotaState`] and back, which the client's state file keeps.
//!
//! # Dimensions and where their numbers come from
//!
//! | Dimension | Limit | Usage |
//! |---|---|---|
//! | [`RequestsPerMinute`](Dimension::RequestsPerMinute) | the upstream's `requests` limit, else configured | the upstream's `limit − remaining`, else counted |
//! | [`TokensPerMinute`](Dimension::TokensPerMinute) | the upstream's `tokens` limit, else configured | the upstream's `limit − remaining`, else counted |
//! | [`RequestsPerDay`](Dimension::RequestsPerDay) | configured | counted, per UTC day |
//! | [`TokensPerDay`](Dimension::TokensPerDay) | configured | counted, per UTC day |
//!
//! - **Headers** ([`QuotaMonitor::observe`]): a limit the upstream reports replaces the
//!   configured one for good (the upstream knows best). A `remaining` opens a window that
//!   ends at the reported reset (`now + reset_after`; without a reset, `now + window`, else a
//!   minute), with `used = limit − remaining`. Calls sent after the observation are added on
//!   top until the next observation replaces the count, so the count never lags behind what
//!   this process has sent. A reset of zero means the quota is already full again.
//! - **Counting** ([`QuotaMonitor::record_sent`], [`QuotaMonitor::record_settled`]): with no
//!   headers, a per-minute dimension counts in a fixed window of one minute that starts at
//!   the first call after the previous window ended (not aligned to the clock's minutes).
//!   A daily dimension counts in the UTC day (Unix time, so days are 86 400 s). Token counts
//!   start as the caller's estimate and are corrected when the call settles; corrections
//!   are not applied to a window the headers gave, which the next observation corrects.
//! - Every dimension is counted whether or not it has a limit; a dimension without a known
//!   limit has no percentage and is left out of [`QuotaMonitor::usage`].
//!
//! # Alerts, pause and exhaustion
//!
//! Usage is `used / limit × 100`. Each level of [`QuotaConfig::alert_levels`] fires one
//! [`QuotaEvent::Alert`] when usage crosses it upward, once per window: it fires again only
//! after the window has reset and usage crosses it again. A call that crosses several levels
//! at once fires each, lowest first. At or above [`QuotaConfig::pause_threshold`], work below
//! [`QuotaConfig::pause_exempt`] waits for the dimension's reset; at 100 % (or when the
//! upstream says nothing remains) everyone waits.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};
use sluice_core::Nanos;
use sluice_core::time::duration_nanos;
use sluice_http::{Family, UpstreamSignals};

use crate::Priority;

const MINUTE_NANOS: u64 = 60_000_000_000;
const DAY_NANOS: u64 = 86_400_000_000_000;

/// What to track and when to alert and pause.
///
/// Deserialises with every field optional (missing ones take their defaults) and unknown
/// fields refused, so a typo in a config file is an error, not a silent default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaConfig {
    /// Requests per minute, until the upstream reports its own limit.
    pub requests_per_minute: Option<u64>,
    /// Tokens per minute, until the upstream reports its own limit.
    pub tokens_per_minute: Option<u64>,
    /// Requests per UTC day (upstreams do not report daily quotas in headers).
    pub requests_per_day: Option<u64>,
    /// Tokens per UTC day.
    pub tokens_per_day: Option<u64>,
    /// Usage percentages that raise an alert, ascending. The first is a
    /// [`Severity::Warning`], the last an [`Severity::Emergency`], those between
    /// [`Severity::Critical`]; a single level is a warning. Default `[60, 80, 95]`.
    pub alert_levels: Vec<u8>,
    /// Usage percentage at or above which work below [`pause_exempt`](Self::pause_exempt)
    /// waits for the reset. Default 80.
    pub pause_threshold: u8,
    /// This priority and above continue past the pause threshold (but not past 100 %).
    /// Default [`Priority::INTERACTIVE`]. In files: a number, `"batch"` or `"interactive"`.
    #[serde(with = "priority_serde")]
    pub pause_exempt: Priority,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            requests_per_minute: None,
            tokens_per_minute: None,
            requests_per_day: None,
            tokens_per_day: None,
            alert_levels: vec![60, 80, 95],
            pause_threshold: 80,
            pause_exempt: Priority::INTERACTIVE,
        }
    }
}

impl QuotaConfig {
    /// Checks every field; the error names the first bad field and its value.
    pub fn validate(&self) -> Result<(), QuotaError> {
        let config_error = |field, value: &dyn fmt::Display, reason: &str| QuotaError::Config {
            field,
            value: value.to_string(),
            reason: reason.to_owned(),
        };
        for (field, limit) in [
            ("requests_per_minute", self.requests_per_minute),
            ("tokens_per_minute", self.tokens_per_minute),
            ("requests_per_day", self.requests_per_day),
            ("tokens_per_day", self.tokens_per_day),
        ] {
            if limit == Some(0) {
                return Err(config_error(
                    field,
                    &0,
                    "is not a limit (at least 1; leave it out for none)",
                ));
            }
        }
        let mut previous: Option<u8> = None;
        for &level in &self.alert_levels {
            if !(1..=100).contains(&level) {
                return Err(config_error(
                    "alert_levels",
                    &level,
                    "is not a percentage (1..=100)",
                ));
            }
            if let Some(previous) = previous
                && level <= previous
            {
                return Err(config_error(
                    "alert_levels",
                    &level,
                    &format!("comes after {previous} (levels must ascend, each once)"),
                ));
            }
            previous = Some(level);
        }
        if !(1..=100).contains(&self.pause_threshold) {
            return Err(config_error(
                "pause_threshold",
                &self.pause_threshold,
                "is not a percentage (1..=100)",
            ));
        }
        Ok(())
    }

    /// The severity of `alert_levels[index]`.
    fn severity(&self, index: usize) -> Severity {
        let count = self.alert_levels.len();
        if index == 0 {
            Severity::Warning
        } else if index + 1 == count {
            Severity::Emergency
        } else {
            Severity::Critical
        }
    }
}

/// Why a quota operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuotaError {
    /// A configuration field has a bad value.
    #[error("{field}: {value} {reason}")]
    Config {
        /// The field, as spelt in [`QuotaConfig`].
        field: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A snapshot of a format this version does not read.
    #[error(
        "quota state version {found} is not supported (expected {})",
        QuotaState::VERSION
    )]
    Version {
        /// The snapshot's version.
        found: u32,
    },
    /// The state file could not be read or written.
    #[error("quota state file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The state file is not a quota state.
    #[error("quota state file {} is corrupt: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// A quota dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// Requests per minute (or per the window the upstream reports for requests).
    RequestsPerMinute,
    /// Tokens per minute (or per the window the upstream reports for tokens).
    TokensPerMinute,
    /// Requests per UTC day.
    RequestsPerDay,
    /// Tokens per UTC day.
    TokensPerDay,
}

impl Dimension {
    /// Every dimension, in the order [`QuotaMonitor::usage`] lists them.
    pub const ALL: [Self; 4] = [
        Self::RequestsPerMinute,
        Self::TokensPerMinute,
        Self::RequestsPerDay,
        Self::TokensPerDay,
    ];

    /// `requests_per_minute`, `tokens_per_minute`, `requests_per_day`, `tokens_per_day`:
    /// the configuration field's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::RequestsPerMinute => "requests_per_minute",
            Self::TokensPerMinute => "tokens_per_minute",
            Self::RequestsPerDay => "requests_per_day",
            Self::TokensPerDay => "tokens_per_day",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::RequestsPerMinute => 0,
            Self::TokensPerMinute => 1,
            Self::RequestsPerDay => 2,
            Self::TokensPerDay => 3,
        }
    }

    fn is_daily(self) -> bool {
        matches!(self, Self::RequestsPerDay | Self::TokensPerDay)
    }

    fn counts_tokens(self) -> bool {
        matches!(self, Self::TokensPerMinute | Self::TokensPerDay)
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a dimension's numbers come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The usage is the upstream's own (`limit − remaining` from its headers, plus calls
    /// sent since).
    Headers,
    /// Counted by this monitor, against a limit the upstream reported earlier.
    Counted,
    /// Counted by this monitor, against the configured limit.
    Configured,
}

impl Source {
    /// `headers`, `counted` or `configured`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Headers => "headers",
            Self::Counted => "counted",
            Self::Configured => "configured",
        }
    }
}

/// One dimension's usage at an instant.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Usage {
    /// Which dimension.
    pub dimension: Dimension,
    /// Its limit, never zero.
    pub limit: u64,
    /// Used in the current window (may exceed `limit` when counting overshoots).
    pub used: u64,
    /// `limit − used`, zero at or past the limit.
    pub remaining: u64,
    /// `used / limit × 100`; above 100 when `used` exceeds `limit`.
    pub percent: f64,
    /// When the current window ends (nanoseconds since the Unix epoch); `None` for a
    /// per-minute dimension with no window open.
    #[serde(serialize_with = "serialize_optional_nanos")]
    pub resets_at: Option<Nanos>,
    /// Where the numbers come from.
    pub source: Source,
}

/// Whether a call may go now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Admission {
    /// It may.
    Go,
    /// It must wait.
    Wait {
        /// Until this instant: the reset of the blocking dimension (the latest, when several
        /// block).
        until: Nanos,
        /// The blocking dimension.
        dimension: Dimension,
        /// Its usage (100 when the upstream said it is exhausted without giving a limit).
        percent: f64,
        /// Why.
        reason: WaitReason,
    },
}

/// Why a call must wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitReason {
    /// The dimension is at or above the pause threshold and the call's priority is below
    /// [`QuotaConfig::pause_exempt`].
    Paused,
    /// Nothing remains: every call waits.
    Exhausted,
}

impl WaitReason {
    /// `paused` or `exhausted`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Paused => "paused",
            Self::Exhausted => "exhausted",
        }
    }
}

/// How serious an alert is: by its level's position in [`QuotaConfig::alert_levels`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The first level.
    Warning,
    /// Levels between the first and the last.
    Critical,
    /// The last level (of two or more).
    Emergency,
}

impl Severity {
    /// `warning`, `critical` or `emergency`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Warning => "warning",
            Self::Critical => "critical",
            Self::Emergency => "emergency",
        }
    }
}

/// Something a record or observe call changed, for logs and callers that react.
///
/// Serialises as `{"event": "alert", "dimension": "tokens_per_minute", …}`, instants as
/// nanoseconds since the Unix epoch.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum QuotaEvent {
    /// Usage crossed an alert level upward.
    Alert {
        /// Which dimension.
        dimension: Dimension,
        /// The level crossed, in percent.
        level: u8,
        /// The usage now.
        percent: f64,
        /// The level's severity.
        severity: Severity,
    },
    /// Usage reached the pause threshold: work below `pause_exempt` waits until `until`.
    Paused {
        /// Which dimension.
        dimension: Dimension,
        /// Its reset.
        #[serde(serialize_with = "serialize_nanos")]
        until: Nanos,
        /// The usage now.
        percent: f64,
    },
    /// A paused or exhausted dimension no longer is.
    Resumed {
        /// Which dimension.
        dimension: Dimension,
        /// How long it was paused or exhausted: from the first event that said so to now
        /// (or to the reset, when the window ended).
        #[serde(rename = "paused_for_ms", serialize_with = "serialize_millis")]
        paused_for: Duration,
    },
    /// Nothing remains: every call waits until `until`.
    Exhausted {
        /// Which dimension.
        dimension: Dimension,
        /// Its reset.
        #[serde(serialize_with = "serialize_nanos")]
        until: Nanos,
    },
    /// A window that had alerted, paused or run out has ended: its alerts are re-armed.
    Reset {
        /// Which dimension.
        dimension: Dimension,
    },
}

impl QuotaEvent {
    /// The dimension the event is about.
    pub fn dimension(&self) -> Dimension {
        match *self {
            Self::Alert { dimension, .. }
            | Self::Paused { dimension, .. }
            | Self::Resumed { dimension, .. }
            | Self::Exhausted { dimension, .. }
            | Self::Reset { dimension } => dimension,
        }
    }

    /// Emits the event as a structured tracing event with the upstream's name: at `warn`
    /// for critical and emergency alerts, pauses and exhaustion, at `info` otherwise.
    pub fn log(&self, upstream: &str) {
        match *self {
            Self::Alert {
                dimension,
                level,
                percent,
                severity,
            } => {
                let dimension = dimension.name();
                let severity_name = severity.name();
                if severity == Severity::Warning {
                    tracing::info!(
                        upstream,
                        dimension,
                        level,
                        percent,
                        severity = severity_name,
                        "quota alert: {dimension} at {percent:.1} % (level {level} %)"
                    );
                } else {
                    tracing::warn!(
                        upstream,
                        dimension,
                        level,
                        percent,
                        severity = severity_name,
                        "quota alert: {dimension} at {percent:.1} % (level {level} %)"
                    );
                }
            }
            Self::Paused {
                dimension,
                until,
                percent,
            } => {
                let dimension = dimension.name();
                tracing::warn!(
                    upstream,
                    dimension,
                    percent,
                    until_ns = until.as_u64(),
                    "quota paused for low-priority work: {dimension} at {percent:.1} %"
                );
            }
            Self::Resumed {
                dimension,
                paused_for,
            } => {
                let dimension = dimension.name();
                let paused_for_ms = u64::try_from(paused_for.as_millis()).unwrap_or(u64::MAX);
                tracing::info!(
                    upstream,
                    dimension,
                    paused_for_ms,
                    "quota resumed: {dimension}, after {:.1} s",
                    paused_for.as_secs_f64()
                );
            }
            Self::Exhausted { dimension, until } => {
                let dimension = dimension.name();
                tracing::warn!(
                    upstream,
                    dimension,
                    until_ns = until.as_u64(),
                    "quota exhausted: {dimension}; every call waits for the reset"
                );
            }
            Self::Reset { dimension } => {
                let dimension = dimension.name();
                tracing::info!(upstream, dimension, "quota window reset: {dimension}");
            }
        }
    }
}

/// A monitor's state, for persisting across restarts: serialisable, versioned
/// (`"version": 1`). Instants are nanoseconds since the Unix epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaState {
    version: u32,
    dimensions: Vec<Track>,
}

impl QuotaState {
    /// The format version this code writes and reads.
    pub const VERSION: u32 = 1;

    /// The snapshot's format version.
    pub fn version(&self) -> u32 {
        self.version
    }
}

/// One dimension's learned limit and current window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Track {
    dimension: Dimension,
    /// The limit the upstream reported last (per-minute dimensions only).
    #[serde(default)]
    learned_limit: Option<u64>,
    #[serde(default)]
    window: Option<Window>,
}

/// A counting window, `[start, end)` in nanoseconds since the Unix epoch, with what was
/// already reported for it (so that events fire once per window).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
struct Window {
    start: u64,
    end: u64,
    used: u64,
    /// For a bucket that refills continuously (OpenAI, Anthropic: their reset is when it is
    /// *full* again), the nanoseconds one unit takes to come back; 0 for a window that
    /// resets all at once. `used` then drains from `observed` on.
    refill_per_unit: u64,
    /// When the upstream last said how much remains.
    observed: u64,
    /// The count is the upstream's (`limit − remaining`) plus calls sent since.
    headers: bool,
    /// The upstream said nothing remains (matters when no limit is known).
    exhausted: bool,
    /// The highest alert level fired in this window, 0 for none. A percentage rather than
    /// an index, so it keeps its meaning when the configured levels change across a restart.
    alerted: u8,
    paused_reported: bool,
    exhausted_reported: bool,
    /// When it was first reported paused or exhausted, while it is.
    stopped_at: Option<u64>,
}

impl Window {
    fn is_active(&self, now: Nanos) -> bool {
        now.as_u64() < self.end
    }

    /// What is in use at `now`, after a continuously refilling bucket drained.
    fn used_at(&self, now: Nanos) -> u64 {
        if self.refill_per_unit == 0 {
            return self.used;
        }
        let back = now.as_u64().saturating_sub(self.observed) / self.refill_per_unit;
        self.used.saturating_sub(back)
    }
}

impl Track {
    fn new(dimension: Dimension) -> Self {
        Self {
            dimension,
            learned_limit: None,
            window: None,
        }
    }

    /// The limit the upstream reported last, else the configured one.
    fn limit(&self, config: &QuotaConfig) -> Option<u64> {
        let configured = match self.dimension {
            Dimension::RequestsPerMinute => config.requests_per_minute,
            Dimension::TokensPerMinute => config.tokens_per_minute,
            Dimension::RequestsPerDay => config.requests_per_day,
            Dimension::TokensPerDay => config.tokens_per_day,
        };
        self.learned_limit.or(configured).filter(|&l| l > 0)
    }

    fn active(&self, now: Nanos) -> Option<&Window> {
        self.window.as_ref().filter(|w| w.is_active(now))
    }

    /// The active window, opened (empty) if there is none.
    fn open(&mut self, now: Nanos) -> &mut Window {
        let dimension = self.dimension;
        self.window.get_or_insert_with(|| {
            let (start, end) = if dimension.is_daily() {
                let start = day_start(now);
                (start, start.saturating_add(DAY_NANOS))
            } else {
                (now.as_u64(), now.as_u64().saturating_add(MINUTE_NANOS))
            };
            Window {
                start,
                end,
                ..Window::default()
            }
        })
    }

    /// Ends the window (if any), reporting a reset when it had something to re-arm.
    fn end_window(&mut self, events: &mut Vec<QuotaEvent>) {
        let Some(window) = self.window.take() else {
            return;
        };
        let stopped = window.paused_reported || window.exhausted_reported;
        if window.alerted > 0 || stopped {
            events.push(QuotaEvent::Reset {
                dimension: self.dimension,
            });
        }
        if stopped {
            let since = window.stopped_at.unwrap_or(window.end);
            events.push(QuotaEvent::Resumed {
                dimension: self.dimension,
                paused_for: Duration::from_nanos(window.end.saturating_sub(since)),
            });
        }
    }
}

/// A dimension's numbers at an instant.
struct View {
    limit: Option<u64>,
    used: u64,
    exhausted: bool,
    resets_at: Option<Nanos>,
    refill_per_unit: u64,
    source: Source,
}

impl View {
    fn of(config: &QuotaConfig, track: &Track, now: Nanos) -> Self {
        let dimension = track.dimension;
        let limit = track.limit(config);
        let active = track.active(now);
        let used = active.map_or(0, |w| w.used_at(now));
        let refill_per_unit = active.map_or(0, |w| w.refill_per_unit);
        let exhausted = active.is_some_and(|w| {
            let said_empty = w.exhausted
                && (w.refill_per_unit == 0
                    || now.as_u64() < w.observed.saturating_add(w.refill_per_unit));
            said_empty || limit.is_some_and(|limit| used >= limit)
        });
        let resets_at = match active {
            Some(w) => Some(Nanos::new(w.end)),
            None if dimension.is_daily() => {
                Some(Nanos::new(day_start(now).saturating_add(DAY_NANOS)))
            }
            None => None,
        };
        let source = if active.is_some_and(|w| w.headers) {
            Source::Headers
        } else if track.learned_limit.is_some() {
            Source::Counted
        } else {
            Source::Configured
        };
        Self {
            limit,
            used,
            exhausted,
            resets_at,
            refill_per_unit,
            source,
        }
    }

    /// When the wait for `reason` ends: the reset, or for a bucket that refills
    /// continuously, when enough units are back (one when exhausted; below `threshold`
    /// percent when paused).
    fn wait_until(&self, reason: WaitReason, threshold: u8, now: Nanos) -> Option<Nanos> {
        if self.refill_per_unit == 0 {
            return self.resets_at;
        }
        let units = match (reason, self.limit) {
            (WaitReason::Paused, Some(limit)) => {
                // Below the threshold means used × 100 < threshold × limit.
                let allowed = (u128::from(threshold) * u128::from(limit)).div_ceil(100);
                let allowed = u64::try_from(allowed).unwrap_or(u64::MAX).saturating_sub(1);
                self.used.saturating_sub(allowed).max(1)
            }
            _ => 1,
        };
        let wait = units.saturating_mul(self.refill_per_unit);
        let until = now.plus_nanos(wait);
        Some(self.resets_at.map_or(until, |reset| until.min(reset)))
    }

    fn percent(&self) -> Option<f64> {
        self.limit.map(|limit| percent(self.used, limit))
    }

    /// Whether usage is at or above `level` percent.
    fn reaches(&self, level: u8) -> bool {
        self.limit
            .is_some_and(|limit| reaches(self.used, limit, level))
    }
}

/// Tracks an upstream account's quota per [`Dimension`]; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct QuotaMonitor {
    config: QuotaConfig,
    tracks: [Track; 4],
}

impl QuotaMonitor {
    /// A monitor with nothing used yet.
    pub fn new(config: QuotaConfig) -> Result<Self, QuotaError> {
        config.validate()?;
        Ok(Self {
            config,
            tracks: Dimension::ALL.map(Track::new),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &QuotaConfig {
        &self.config
    }

    /// Counts a call about to be sent: `requests` (usually 1) and `tokens`, the caller's
    /// estimate of the tokens it will use (0 if it does not know).
    pub fn record_sent(&mut self, requests: u64, tokens: u64, now: Nanos) -> Vec<QuotaEvent> {
        self.step(now, |_, tracks, _| {
            for track in tracks {
                let amount = if track.dimension.counts_tokens() {
                    tokens
                } else {
                    requests
                };
                if amount > 0 {
                    let window = track.open(now);
                    window.used = window.used.saturating_add(amount);
                }
            }
        })
    }

    /// Corrects the token count once a call has settled: it was counted as `estimated`
    /// tokens and used `actual`. Windows the headers gave are left alone (the next
    /// observation corrects them). A correction that arrives after its window ended applies
    /// to the current one.
    pub fn record_settled(&mut self, estimated: u64, actual: u64, now: Nanos) -> Vec<QuotaEvent> {
        self.step(now, |_, tracks, _| {
            for track in tracks.iter_mut().filter(|t| t.dimension.counts_tokens()) {
                if actual > estimated {
                    let window = track.open(now);
                    if !window.headers {
                        window.used = window.used.saturating_add(actual - estimated);
                    }
                } else if let Some(window) = track.window.as_mut()
                    && !window.headers
                {
                    window.used = window.used.saturating_sub(estimated - actual);
                }
            }
        })
    }

    /// Reads what the upstream said about its limits: `signals.requests` feeds
    /// [`Dimension::RequestsPerMinute`] and `signals.tokens` [`Dimension::TokensPerMinute`].
    /// Its numbers replace this monitor's count (see the [module docs](self)).
    pub fn observe(&mut self, signals: &UpstreamSignals, now: Nanos) -> Vec<QuotaEvent> {
        self.step(now, |config, tracks, events| {
            for (index, said) in [(0, &signals.requests), (1, &signals.tokens)] {
                let track = &mut tracks[index];
                if !said.is_known() {
                    continue;
                }
                if let Some(limit) = said.limit.filter(|&l| l > 0) {
                    track.learned_limit = Some(limit);
                }
                let Some(remaining) = said.remaining else {
                    continue;
                };
                let span = said
                    .reset_after
                    .or(said.window)
                    .map_or(MINUTE_NANOS, duration_nanos);
                if span == 0 {
                    // The reset has passed: the quota is full again.
                    track.end_window(events);
                    continue;
                }
                let limit = track.limit(config);
                let window = track.window.get_or_insert_with(|| Window {
                    start: now.as_u64(),
                    ..Window::default()
                });
                window.end = now.as_u64().saturating_add(span);
                window.exhausted = remaining == 0;
                // Without a limit only exhaustion is known; the count restarts from here.
                window.used = limit.map_or(0, |limit| limit.saturating_sub(remaining));
                window.observed = now.as_u64();
                window.refill_per_unit = match (said.source, said.reset_after) {
                    (Some(Family::OpenAi | Family::Anthropic), Some(reset)) => {
                        // Full again after `reset`: the units in use come back evenly. With
                        // nothing in use, one unit's time is unknown and nothing drains.
                        let in_use = limit.map_or(1, |l| l.saturating_sub(remaining)).max(1);
                        (duration_nanos(reset) / in_use).max(1)
                    }
                    _ => 0,
                };
                if !window.headers {
                    // The count's alerts were against a guess: keep only those the upstream's
                    // numbers also reach, so that its crossings still fire.
                    let reached = config
                        .alert_levels
                        .iter()
                        .copied()
                        .filter(|&level| limit.is_some_and(|l| reaches(window.used, l, level)))
                        .max()
                        .unwrap_or(0);
                    window.alerted = window.alerted.min(reached);
                    window.headers = true;
                }
            }
        })
    }

    /// Every dimension with a known limit, in [`Dimension::ALL`] order.
    pub fn usage(&self, now: Nanos) -> Vec<Usage> {
        self.tracks
            .iter()
            .filter_map(|track| {
                let view = View::of(&self.config, track, now);
                let limit = view.limit?;
                Some(Usage {
                    dimension: track.dimension,
                    limit,
                    used: view.used,
                    remaining: limit.saturating_sub(view.used),
                    percent: percent(view.used, limit),
                    resets_at: view.resets_at,
                    source: view.source,
                })
            })
            .collect()
    }

    /// The most used dimension's share of its limit now, in `[0, ∞)` (0 when no limit is
    /// known): what the adaptive concurrency limit follows. Allocates nothing.
    pub fn busiest_share(&self, now: Nanos) -> f64 {
        self.tracks
            .iter()
            .filter_map(|track| {
                let view = View::of(&self.config, track, now);
                view.limit.map(|limit| percent(view.used, limit) / 100.0)
            })
            .fold(0.0, f64::max)
    }

    /// Whether a call of `priority` may go now: [`Admission::Wait`] when a dimension is
    /// exhausted (for everyone) or at or above the pause threshold (for priorities below
    /// `pause_exempt`), until the latest reset among the blocking dimensions.
    pub fn admit(&self, priority: Priority, now: Nanos) -> Admission {
        let mut admission = Admission::Go;
        for track in &self.tracks {
            let view = View::of(&self.config, track, now);
            let reason = if view.exhausted {
                WaitReason::Exhausted
            } else if priority < self.config.pause_exempt
                && view.reaches(self.config.pause_threshold)
            {
                WaitReason::Paused
            } else {
                continue;
            };
            let Some(until) = view
                .wait_until(reason, self.config.pause_threshold, now)
                .filter(|&at| at > now)
            else {
                continue;
            };
            let later = match admission {
                Admission::Go => true,
                Admission::Wait {
                    until: current,
                    reason: current_reason,
                    ..
                } => {
                    until > current
                        || until == current
                            && reason == WaitReason::Exhausted
                            && current_reason == WaitReason::Paused
                }
            };
            if later {
                admission = Admission::Wait {
                    until,
                    dimension: track.dimension,
                    percent: view.percent().unwrap_or(100.0),
                    reason,
                };
            }
        }
        admission
    }

    /// The state to persist.
    pub fn snapshot(&self) -> QuotaState {
        QuotaState {
            version: QuotaState::VERSION,
            dimensions: self.tracks.to_vec(),
        }
    }

    /// A monitor from a snapshot: learned limits are kept, windows that have ended by
    /// `now` start empty (and their alerts re-armed), the others continue.
    pub fn restore(config: QuotaConfig, state: QuotaState, now: Nanos) -> Result<Self, QuotaError> {
        if state.version != QuotaState::VERSION {
            return Err(QuotaError::Version {
                found: state.version,
            });
        }
        let mut monitor = Self::new(config)?;
        for saved in state.dimensions {
            let track = &mut monitor.tracks[saved.dimension.index()];
            if !saved.dimension.is_daily() {
                track.learned_limit = saved.learned_limit.filter(|&l| l > 0);
            }
            track.window = saved.window.filter(|w| w.is_active(now));
        }
        Ok(monitor)
    }

    /// Ends the windows that are over, applies `change`, then reports what changed.
    fn step(
        &mut self,
        now: Nanos,
        change: impl FnOnce(&QuotaConfig, &mut [Track; 4], &mut Vec<QuotaEvent>),
    ) -> Vec<QuotaEvent> {
        let mut events = Vec::new();
        for track in &mut self.tracks {
            if track.window.as_ref().is_some_and(|w| !w.is_active(now)) {
                track.end_window(&mut events);
            }
        }
        change(&self.config, &mut self.tracks, &mut events);
        self.evaluate(now, &mut events);
        events
    }

    /// Fires the alerts crossed and the pause and exhaustion changes since the last call.
    fn evaluate(&mut self, now: Nanos, events: &mut Vec<QuotaEvent>) {
        let Self { config, tracks } = self;
        for track in tracks.iter_mut() {
            let view = View::of(config, track, now);
            let dimension = track.dimension;
            let Some(window) = track.window.as_mut().filter(|w| w.is_active(now)) else {
                continue;
            };
            let end = Nanos::new(window.end);
            let paused_until = view
                .wait_until(WaitReason::Paused, config.pause_threshold, now)
                .unwrap_or(end);
            let exhausted_until = view
                .wait_until(WaitReason::Exhausted, config.pause_threshold, now)
                .unwrap_or(end);
            if let Some(percent) = view.percent() {
                for (index, &level) in config.alert_levels.iter().enumerate() {
                    if level > window.alerted && view.reaches(level) {
                        window.alerted = level;
                        events.push(QuotaEvent::Alert {
                            dimension,
                            level,
                            percent,
                            severity: config.severity(index),
                        });
                    }
                }
            }
            let paused = view.reaches(config.pause_threshold);
            if paused && !window.paused_reported {
                events.push(QuotaEvent::Paused {
                    dimension,
                    until: paused_until,
                    percent: view.percent().unwrap_or(100.0),
                });
            }
            if view.exhausted && !window.exhausted_reported {
                events.push(QuotaEvent::Exhausted {
                    dimension,
                    until: exhausted_until,
                });
            }
            let was_stopped = window.paused_reported || window.exhausted_reported;
            let stopped = paused || view.exhausted;
            if stopped && !was_stopped {
                window.stopped_at = Some(now.as_u64());
            }
            if was_stopped && !stopped {
                let since = window.stopped_at.take().unwrap_or(now.as_u64());
                events.push(QuotaEvent::Resumed {
                    dimension,
                    paused_for: Duration::from_nanos(now.as_u64().saturating_sub(since)),
                });
            }
            window.paused_reported = paused;
            window.exhausted_reported = view.exhausted;
        }
    }
}

fn percent(used: u64, limit: u64) -> f64 {
    // `limit` is never zero: configured limits are validated, reported ones filtered.
    used as f64 / limit.max(1) as f64 * 100.0
}

/// Whether `used` is at or above `level` percent of `limit`, exactly (no floating point).
fn reaches(used: u64, limit: u64, level: u8) -> bool {
    u128::from(used) * 100 >= u128::from(level) * u128::from(limit)
}

/// The start of `now`'s UTC day, in nanoseconds since the Unix epoch.
fn day_start(now: Nanos) -> u64 {
    now.as_u64() / DAY_NANOS * DAY_NANOS
}

fn serialize_millis<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn serialize_nanos<S: Serializer>(at: &Nanos, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(at.as_u64())
}

fn serialize_optional_nanos<S: Serializer>(
    at: &Option<Nanos>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    at.map(Nanos::as_u64).serialize(serializer)
}

/// [`Priority`] in config files: a number, or `"batch"` / `"interactive"`.
mod priority_serde {
    use std::fmt;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    use crate::Priority;

    pub(super) fn serialize<S: Serializer>(
        priority: &Priority,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(priority.0)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Priority, D::Error> {
        struct PriorityVisitor;

        impl Visitor<'_> for PriorityVisitor {
            type Value = Priority;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a priority: \"batch\", \"interactive\" or a number 0..=255")
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Priority, E> {
                u8::try_from(n)
                    .map(Priority)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(n), &self))
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Priority, E> {
                u8::try_from(n)
                    .map(Priority)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(n), &self))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Priority, E> {
                match text {
                    "batch" => Ok(Priority::BATCH),
                    "interactive" => Ok(Priority::INTERACTIVE),
                    _ => Err(E::invalid_value(de::Unexpected::Str(text), &self)),
                }
            }
        }

        deserializer.deserialize_any(PriorityVisitor)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;
    use sluice_http::{Dimension as Said, Family};

    use super::*;

    /// 2024-01-01T12:00:00Z.
    const NOON: u64 = 1_704_110_400;
    /// Seconds from noon to the next UTC midnight.
    const TO_MIDNIGHT: u64 = 12 * 3600;

    fn at(secs: u64) -> Nanos {
        Nanos::new((NOON + secs) * 1_000_000_000)
    }

    fn monitor(config: QuotaConfig) -> QuotaMonitor {
        QuotaMonitor::new(config).unwrap()
    }

    fn rpm(limit: u64) -> QuotaMonitor {
        monitor(QuotaConfig {
            requests_per_minute: Some(limit),
            ..QuotaConfig::default()
        })
    }

    fn said(limit: Option<u64>, remaining: Option<u64>, reset_secs: Option<u64>) -> Said {
        Said {
            limit,
            remaining,
            reset_after: reset_secs.map(Duration::from_secs),
            window: None,
            // A window that resets all at once; OpenAI's refilling bucket has its own test.
            source: Some(Family::Ietf),
        }
    }

    #[test]
    fn a_refilling_bucket_pauses_only_until_enough_is_back() {
        let mut m = rpm(100);
        let t0 = at(0);
        // 90 of 100 in use, full again in 54 s: a unit comes back every 0.6 s.
        let mut signals = requests(Some(100), Some(10), Some(54));
        signals.requests.source = Some(Family::OpenAi);
        m.observe(&signals, t0);
        let Admission::Wait { until, reason, .. } = m.admit(Priority::BATCH, t0) else {
            panic!("batch work pauses at 90 %");
        };
        assert_eq!(reason, WaitReason::Paused);
        // Below 80 % means at most 79 in use: 11 units back, 6.6 s.
        assert_eq!(until, t0.plus_nanos(6_600_000_000));
        assert_eq!(m.admit(Priority::BATCH, until), Admission::Go);
        assert_eq!(m.admit(Priority::INTERACTIVE, t0), Admission::Go);

        // Empty: everyone waits one unit's time, not the 60 s until full.
        let mut empty = requests(Some(100), Some(0), Some(60));
        empty.requests.source = Some(Family::OpenAi);
        m.observe(&empty, t0);
        let Admission::Wait { until, reason, .. } = m.admit(Priority::INTERACTIVE, t0) else {
            panic!("everyone waits when exhausted");
        };
        assert_eq!(reason, WaitReason::Exhausted);
        assert_eq!(until, t0.plus_nanos(600_000_000));
    }

    fn requests(
        limit: Option<u64>,
        remaining: Option<u64>,
        reset_secs: Option<u64>,
    ) -> UpstreamSignals {
        UpstreamSignals {
            requests: said(limit, remaining, reset_secs),
            ..UpstreamSignals::default()
        }
    }

    fn usage(monitor: &QuotaMonitor, dimension: Dimension, now: Nanos) -> Usage {
        monitor
            .usage(now)
            .into_iter()
            .find(|u| u.dimension == dimension)
            .unwrap()
    }

    fn alerts(events: &[QuotaEvent]) -> Vec<(u8, Severity)> {
        events
            .iter()
            .filter_map(|e| match *e {
                QuotaEvent::Alert {
                    level, severity, ..
                } => Some((level, severity)),
                _ => None,
            })
            .collect()
    }

    const RPM: Dimension = Dimension::RequestsPerMinute;

    #[test]
    fn alerts_fire_once_per_crossing() {
        let mut m = rpm(100);
        assert_eq!(m.record_sent(59, 0, at(0)), []);
        assert_eq!(
            m.record_sent(1, 0, at(1)),
            [QuotaEvent::Alert {
                dimension: RPM,
                level: 60,
                percent: 60.0,
                severity: Severity::Warning
            }]
        );
        assert_eq!(m.record_sent(1, 0, at(2)), [], "quiet at 61 %");
        assert_eq!(
            m.record_sent(19, 0, at(3)),
            [
                QuotaEvent::Alert {
                    dimension: RPM,
                    level: 80,
                    percent: 80.0,
                    severity: Severity::Critical
                },
                QuotaEvent::Paused {
                    dimension: RPM,
                    until: at(60),
                    percent: 80.0
                },
            ]
        );
        assert_eq!(m.record_sent(1, 0, at(4)), []);
        assert_eq!(
            alerts(&m.record_sent(14, 0, at(5))),
            [(95, Severity::Emergency)]
        );
        assert_eq!(m.record_sent(1, 0, at(6)), []);
    }

    #[test]
    fn a_jump_fires_every_level_crossed() {
        let mut m = rpm(100);
        let events = m.record_sent(96, 0, at(0));
        assert_eq!(
            alerts(&events),
            [
                (60, Severity::Warning),
                (80, Severity::Critical),
                (95, Severity::Emergency)
            ]
        );
    }

    #[test]
    fn a_window_reset_rearms_the_alerts() {
        let mut m = rpm(100);
        assert_eq!(
            alerts(&m.record_sent(60, 0, at(0))),
            [(60, Severity::Warning)]
        );
        assert_eq!(m.record_sent(1, 0, at(59)), []);
        // The counted window is one minute from its first call.
        assert_eq!(usage(&m, RPM, at(59)).resets_at, Some(at(60)));
        assert_eq!(usage(&m, RPM, at(60)).used, 0);
        assert_eq!(
            m.record_sent(60, 0, at(60)),
            [
                QuotaEvent::Reset { dimension: RPM },
                QuotaEvent::Alert {
                    dimension: RPM,
                    level: 60,
                    percent: 60.0,
                    severity: Severity::Warning
                },
            ]
        );
        assert_eq!(usage(&m, RPM, at(61)).resets_at, Some(at(120)));
    }

    #[test]
    fn headers_override_counting() {
        let mut m = rpm(100);
        m.record_sent(50, 0, at(0));
        let counted = usage(&m, RPM, at(0));
        assert_eq!(
            (counted.limit, counted.used, counted.percent, counted.source),
            (100, 50, 50.0, Source::Configured)
        );
        assert_eq!(
            m.observe(&requests(Some(200), Some(150), Some(30)), at(1)),
            []
        );
        assert_eq!(
            usage(&m, RPM, at(1)),
            Usage {
                dimension: RPM,
                limit: 200,
                used: 50,
                remaining: 150,
                percent: 25.0,
                resets_at: Some(at(31)),
                source: Source::Headers,
            }
        );
        // Calls sent after the observation count on top, until the next one.
        m.record_sent(10, 0, at(2));
        assert_eq!(usage(&m, RPM, at(2)).used, 60);
        m.observe(&requests(None, Some(100), Some(28)), at(3));
        assert_eq!(usage(&m, RPM, at(3)).used, 100, "the learned limit stays");
        // After the upstream's reset: counting again, against the learned limit.
        let after = usage(&m, RPM, at(31));
        assert_eq!(
            (after.limit, after.used, after.resets_at, after.source),
            (200, 0, None, Source::Counted)
        );
        m.record_sent(1, 0, at(40));
        assert_eq!(usage(&m, RPM, at(40)).resets_at, Some(at(100)));
        // A reset of zero: the quota is full again.
        m.observe(&requests(Some(200), Some(0), Some(0)), at(41));
        assert_eq!(usage(&m, RPM, at(41)).used, 0);
        assert_eq!(m.admit(Priority::BATCH, at(41)), Admission::Go);
    }

    #[test]
    fn counted_alerts_yield_to_the_upstreams_numbers() {
        let mut m = rpm(100);
        assert_eq!(
            alerts(&m.record_sent(60, 0, at(0))),
            [(60, Severity::Warning)]
        );
        // The upstream says 60 % too: no second warning.
        assert_eq!(
            m.observe(&requests(Some(1000), Some(400), Some(50)), at(1)),
            []
        );
        // It says 10 %, then 65 %: its own crossing fires.
        let mut m = rpm(100);
        m.record_sent(60, 0, at(0));
        assert_eq!(
            m.observe(&requests(Some(1000), Some(900), Some(50)), at(1)),
            []
        );
        assert_eq!(
            alerts(&m.observe(&requests(Some(1000), Some(350), Some(49)), at(2))),
            [(60, Severity::Warning)]
        );
    }

    #[test]
    fn the_busiest_share_is_the_most_used_dimension() {
        let mut m = monitor(QuotaConfig::default());
        m.record_sent(50, 0, at(0));
        assert_eq!(m.busiest_share(at(0)), 0.0, "no limit known");
        let mut m = monitor(QuotaConfig {
            requests_per_minute: Some(100),
            requests_per_day: Some(1000),
            ..QuotaConfig::default()
        });
        m.record_sent(50, 0, at(0));
        assert_eq!(m.busiest_share(at(0)), 0.5);
        assert_eq!(
            m.busiest_share(at(61)),
            0.05,
            "the minute reset; the day did not"
        );
    }

    #[test]
    fn batch_pauses_at_the_threshold_while_interactive_goes() {
        let mut m = rpm(100);
        m.record_sent(79, 0, at(0));
        assert_eq!(m.admit(Priority::BATCH, at(0)), Admission::Go);
        let events = m.record_sent(1, 0, at(1));
        assert!(events.contains(&QuotaEvent::Paused {
            dimension: RPM,
            until: at(60),
            percent: 80.0
        }));
        let paused = Admission::Wait {
            until: at(60),
            dimension: RPM,
            percent: 80.0,
            reason: WaitReason::Paused,
        };
        assert_eq!(m.admit(Priority::BATCH, at(2)), paused);
        assert_eq!(m.admit(Priority(9), at(2)), paused);
        assert_eq!(m.admit(Priority::INTERACTIVE, at(2)), Admission::Go);
        assert_eq!(m.admit(Priority(200), at(2)), Admission::Go);
        assert_eq!(m.admit(Priority::BATCH, at(60)), Admission::Go);
        assert_eq!(
            m.record_sent(1, 0, at(60)),
            [
                QuotaEvent::Reset { dimension: RPM },
                QuotaEvent::Resumed {
                    dimension: RPM,
                    paused_for: Duration::from_secs(59)
                }
            ]
        );
    }

    #[test]
    fn headers_that_lower_usage_resume() {
        let mut m = rpm(100);
        m.record_sent(85, 0, at(0));
        assert_eq!(
            m.observe(&requests(Some(100), Some(50), Some(30)), at(1)),
            [QuotaEvent::Resumed {
                dimension: RPM,
                paused_for: Duration::from_secs(1)
            }]
        );
        assert_eq!(m.admit(Priority::BATCH, at(1)), Admission::Go);
    }

    #[test]
    fn everyone_waits_when_exhausted_until_the_reset() {
        let mut m = monitor(QuotaConfig::default());
        let events = m.observe(&requests(Some(60), Some(0), Some(20)), at(0));
        assert_eq!(
            alerts(&events),
            [
                (60, Severity::Warning),
                (80, Severity::Critical),
                (95, Severity::Emergency)
            ]
        );
        assert_eq!(
            events[3..],
            [
                QuotaEvent::Paused {
                    dimension: RPM,
                    until: at(20),
                    percent: 100.0
                },
                QuotaEvent::Exhausted {
                    dimension: RPM,
                    until: at(20)
                },
            ]
        );
        let exhausted = Admission::Wait {
            until: at(20),
            dimension: RPM,
            percent: 100.0,
            reason: WaitReason::Exhausted,
        };
        assert_eq!(m.admit(Priority::INTERACTIVE, at(10)), exhausted);
        assert_eq!(m.admit(Priority(255), at(19)), exhausted);
        assert_eq!(m.admit(Priority::BATCH, at(20)), Admission::Go);
        assert_eq!(m.admit(Priority::INTERACTIVE, at(20)), Admission::Go);
        assert_eq!(
            m.observe(&requests(Some(60), Some(59), Some(1)), at(21)),
            [
                QuotaEvent::Reset { dimension: RPM },
                QuotaEvent::Resumed {
                    dimension: RPM,
                    paused_for: Duration::from_secs(20)
                }
            ]
        );

        // Counted the same way.
        let mut m = rpm(10);
        let events = m.record_sent(10, 0, at(0));
        assert!(events.contains(&QuotaEvent::Exhausted {
            dimension: RPM,
            until: at(60)
        }));
        assert!(matches!(
            m.admit(Priority::INTERACTIVE, at(59)),
            Admission::Wait {
                reason: WaitReason::Exhausted,
                ..
            }
        ));
        assert_eq!(m.admit(Priority::INTERACTIVE, at(60)), Admission::Go);
    }

    #[test]
    fn exhausted_without_a_known_limit_still_waits() {
        let mut m = monitor(QuotaConfig::default());
        assert_eq!(
            m.observe(&requests(None, Some(0), Some(30)), at(0)),
            [QuotaEvent::Exhausted {
                dimension: RPM,
                until: at(30)
            }]
        );
        assert_eq!(m.usage(at(0)), [], "no limit, no percentage");
        assert_eq!(
            m.admit(Priority::INTERACTIVE, at(1)),
            Admission::Wait {
                until: at(30),
                dimension: RPM,
                percent: 100.0,
                reason: WaitReason::Exhausted
            }
        );
    }

    #[test]
    fn tokens_are_corrected_when_settled_but_not_under_headers() {
        let mut m = monitor(QuotaConfig {
            tokens_per_minute: Some(1000),
            ..QuotaConfig::default()
        });
        let tpm = Dimension::TokensPerMinute;
        m.record_sent(1, 500, at(0));
        assert_eq!(
            alerts(&m.record_settled(500, 700, at(1))),
            [(60, Severity::Warning)]
        );
        assert_eq!(usage(&m, tpm, at(1)).used, 700);
        m.record_settled(400, 100, at(2));
        assert_eq!(usage(&m, tpm, at(2)).used, 400);
        let signals = UpstreamSignals {
            tokens: said(Some(1000), Some(500), Some(10)),
            ..UpstreamSignals::default()
        };
        m.observe(&signals, at(3));
        m.record_settled(100, 400, at(4));
        assert_eq!(usage(&m, tpm, at(4)).used, 500);
    }

    #[test]
    fn the_daily_budget_rolls_over_at_utc_midnight() {
        let mut m = monitor(QuotaConfig {
            requests_per_day: Some(1000),
            tokens_per_day: Some(10_000),
            ..QuotaConfig::default()
        });
        let rpd = Dimension::RequestsPerDay;
        let midnight = at(TO_MIDNIGHT);
        assert_eq!(usage(&m, rpd, at(0)).resets_at, Some(midnight));
        m.record_sent(1, 2000, at(0));
        assert_eq!(
            usage(&m, rpd, at(0)).resets_at,
            Some(midnight),
            "not a day from first use"
        );
        let before = at(TO_MIDNIGHT - 60);
        let events = m.record_sent(999, 0, before);
        assert!(events.contains(&QuotaEvent::Exhausted {
            dimension: rpd,
            until: midnight
        }));
        assert_eq!(
            m.admit(Priority::INTERACTIVE, at(TO_MIDNIGHT - 1)),
            Admission::Wait {
                until: midnight,
                dimension: rpd,
                percent: 100.0,
                reason: WaitReason::Exhausted
            }
        );
        assert_eq!(m.admit(Priority::BATCH, midnight), Admission::Go);
        let next = usage(&m, rpd, midnight);
        assert_eq!(
            (next.used, next.resets_at),
            (0, Some(at(TO_MIDNIGHT + 86_400)))
        );
        assert_eq!(usage(&m, Dimension::TokensPerDay, midnight).used, 0);
        assert_eq!(
            m.record_sent(1, 0, midnight),
            [
                QuotaEvent::Reset { dimension: rpd },
                QuotaEvent::Resumed {
                    dimension: rpd,
                    paused_for: Duration::from_secs(60)
                }
            ]
        );
    }

    #[test]
    fn the_latest_reset_among_blocking_dimensions_wins() {
        let mut m = monitor(QuotaConfig {
            requests_per_minute: Some(10),
            requests_per_day: Some(10),
            ..QuotaConfig::default()
        });
        m.record_sent(10, 0, at(0));
        assert!(matches!(
            m.admit(Priority::INTERACTIVE, at(1)),
            Admission::Wait {
                dimension: Dimension::RequestsPerDay,
                ..
            }
        ));
    }

    #[test]
    fn a_learned_limit_survives_a_restart() {
        let mut m = monitor(QuotaConfig::default());
        m.observe(&requests(Some(500), Some(400), Some(5)), at(0));
        let m = QuotaMonitor::restore(QuotaConfig::default(), m.snapshot(), at(3600)).unwrap();
        let u = usage(&m, RPM, at(3600));
        assert_eq!((u.limit, u.used, u.source), (500, 0, Source::Counted));
    }

    #[test]
    fn restore_refuses_other_versions() {
        let mut state = monitor(QuotaConfig::default()).snapshot();
        assert_eq!(state.version(), 1);
        state.version = 2;
        let err = QuotaMonitor::restore(QuotaConfig::default(), state, at(0)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "quota state version 2 is not supported (expected 1)"
        );
    }

    #[test]
    fn config_errors_name_the_field_and_value() {
        let check = |config: QuotaConfig, message: &str| {
            assert_eq!(config.validate().unwrap_err().to_string(), message);
            assert_eq!(QuotaMonitor::new(config).unwrap_err().to_string(), message);
        };
        let levels = |alert_levels: Vec<u8>| QuotaConfig {
            alert_levels,
            ..QuotaConfig::default()
        };
        let threshold = |pause_threshold| QuotaConfig {
            pause_threshold,
            ..QuotaConfig::default()
        };
        check(
            levels(vec![60, 120]),
            "alert_levels: 120 is not a percentage (1..=100)",
        );
        check(
            levels(vec![0]),
            "alert_levels: 0 is not a percentage (1..=100)",
        );
        check(
            levels(vec![80, 60]),
            "alert_levels: 60 comes after 80 (levels must ascend, each once)",
        );
        check(
            levels(vec![80, 80]),
            "alert_levels: 80 comes after 80 (levels must ascend, each once)",
        );
        check(
            threshold(0),
            "pause_threshold: 0 is not a percentage (1..=100)",
        );
        check(
            threshold(101),
            "pause_threshold: 101 is not a percentage (1..=100)",
        );
        check(
            QuotaConfig {
                tokens_per_day: Some(0),
                ..QuotaConfig::default()
            },
            "tokens_per_day: 0 is not a limit (at least 1; leave it out for none)",
        );
        for fine in [
            QuotaConfig::default(),
            levels(vec![]),
            levels(vec![100]),
            threshold(100),
        ] {
            fine.validate().unwrap();
        }
    }

    #[test]
    fn severities_follow_the_levels_position() {
        let severities = |alert_levels: Vec<u8>| {
            let config = QuotaConfig {
                alert_levels,
                ..QuotaConfig::default()
            };
            (0..config.alert_levels.len())
                .map(|i| config.severity(i))
                .collect::<Vec<_>>()
        };
        use Severity::{Critical, Emergency, Warning};
        assert_eq!(severities(vec![90]), [Warning]);
        assert_eq!(severities(vec![50, 90]), [Warning, Emergency]);
        assert_eq!(
            severities(vec![50, 70, 80, 90]),
            [Warning, Critical, Critical, Emergency]
        );
    }

    #[test]
    fn config_reads_from_json() {
        let config: QuotaConfig =
            serde_json::from_str(r#"{"tokens_per_minute": 1000, "pause_exempt": "batch"}"#)
                .unwrap();
        assert_eq!(config.tokens_per_minute, Some(1000));
        assert_eq!(config.pause_exempt, Priority::BATCH);
        assert_eq!(config.alert_levels, [60, 80, 95]);
        let json = serde_json::to_string(&QuotaConfig::default()).unwrap();
        assert!(json.contains(r#""pause_exempt":10"#), "{json}");
        assert_eq!(
            serde_json::from_str::<QuotaConfig>(&json).unwrap(),
            QuotaConfig::default()
        );
        for bad in [
            r#"{"pause_exempt": 300}"#,
            r#"{"pause_exempt": "urgent"}"#,
            r#"{"tokens_per_mintue": 5}"#,
        ] {
            assert!(serde_json::from_str::<QuotaConfig>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn events_and_usage_serialise_flat() {
        let event = QuotaEvent::Exhausted {
            dimension: Dimension::TokensPerDay,
            until: Nanos::new(123),
        };
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            serde_json::json!({"event": "exhausted", "dimension": "tokens_per_day", "until": 123})
        );
        let mut m = rpm(100);
        m.record_sent(1, 0, Nanos::new(5));
        assert_eq!(
            serde_json::to_value(m.usage(Nanos::new(5))).unwrap(),
            serde_json::json!([{
                "dimension": "requests_per_minute", "limit": 100, "used": 1, "remaining": 99,
                "percent": 1.0, "resets_at": 60_000_000_005_u64, "source": "configured"
            }])
        );
        for event in m.record_sent(99, 0, Nanos::new(6)) {
            event.log("test"); // no subscriber: must simply not panic
        }
        assert_eq!(Dimension::TokensPerDay.to_string(), "tokens_per_day");
    }

    #[derive(Clone, Debug)]
    enum Op {
        Sent(u64, u64),
        Settled(u64, u64),
        Observe(Option<u64>, Option<u64>, Option<u64>, bool),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let count = prop_oneof![0..200u64, any::<u64>()];
        prop_oneof![
            (count.clone(), count.clone()).prop_map(|(r, t)| Op::Sent(r, t)),
            (count.clone(), count.clone()).prop_map(|(e, a)| Op::Settled(e, a)),
            (
                proptest::option::of(count.clone()),
                proptest::option::of(count),
                proptest::option::of(prop_oneof![0..120_000_000_000u64, any::<u64>()]),
                any::<bool>()
            )
                .prop_map(|(l, r, reset, tokens)| Op::Observe(l, r, reset, tokens)),
            prop_oneof![0..90u64, 0..200_000u64].prop_map(Op::Advance),
        ]
    }

    fn config() -> impl Strategy<Value = QuotaConfig> {
        let limit = proptest::option::of(prop_oneof![1..300u64, 1..=u64::MAX]);
        (
            [limit.clone(), limit.clone(), limit.clone(), limit],
            proptest::collection::btree_set(1..=100u8, 0..5),
            1..=100u8,
            any::<u8>(),
        )
            .prop_map(
                |([rpm, tpm, rpd, tpd], levels, threshold, exempt)| QuotaConfig {
                    requests_per_minute: rpm,
                    tokens_per_minute: tpm,
                    requests_per_day: rpd,
                    tokens_per_day: tpd,
                    alert_levels: levels.into_iter().collect(),
                    pause_threshold: threshold,
                    pause_exempt: Priority(exempt),
                },
            )
    }

    proptest! {
        #[test]
        fn percentages_stay_sane_and_admit_never_panics(
            config in config(),
            ops in proptest::collection::vec(op(), 0..60),
        ) {
            let mut m = QuotaMonitor::new(config.clone()).unwrap();
            let mut now = at(TO_MIDNIGHT - 600);
            for op in ops {
                let events = match op {
                    Op::Sent(r, t) => m.record_sent(r, t, now),
                    Op::Settled(e, a) => m.record_settled(e, a, now),
                    Op::Observe(limit, remaining, reset, tokens) => {
                        let dimension = Said {
                            limit: limit.filter(|&l| l > 0),
                            remaining,
                            reset_after: reset.map(Duration::from_nanos),
                            window: None,
                            source: Some(Family::Anthropic),
                        };
                        let mut signals = UpstreamSignals::default();
                        if tokens { signals.tokens = dimension } else { signals.requests = dimension }
                        m.observe(&signals, now)
                    }
                    Op::Advance(secs) => {
                        now = now.plus_nanos(secs * 1_000_000_000);
                        Vec::new()
                    }
                };
                for event in &events {
                    if let QuotaEvent::Alert { percent, .. } | QuotaEvent::Paused { percent, .. } = *event {
                        prop_assert!(percent.is_finite() && percent >= 0.0);
                    }
                    if let QuotaEvent::Paused { until, .. } | QuotaEvent::Exhausted { until, .. } = *event {
                        prop_assert!(until > now);
                    }
                }
                for u in m.usage(now) {
                    prop_assert!(u.percent.is_finite() && u.percent >= 0.0, "{u:?}");
                    prop_assert!(u.limit > 0 && u.remaining == u.limit.saturating_sub(u.used), "{u:?}");
                    // One way only: near 2^64, `limit - 1` of `limit` rounds to 100.0.
                    prop_assert!(u.remaining > 0 || u.percent >= 100.0, "{u:?}");
                }
                for priority in [0, 9, 10, 255].map(Priority) {
                    match m.admit(priority, now) {
                        Admission::Go => {}
                        Admission::Wait { until, percent, .. } => {
                            prop_assert!(until > now);
                            prop_assert!(percent.is_finite() && percent >= 0.0);
                        }
                    }
                }
                let restored = QuotaMonitor::restore(config.clone(), m.snapshot(), now).unwrap();
                prop_assert_eq!(restored.usage(now), m.usage(now));
                prop_assert_eq!(restored.admit(Priority::BATCH, now), m.admit(Priority::BATCH, now));
            }
        }
    }
}
