//! The client's async shell: every call to the upstream goes through a [`Call`], the one
//! driver of attempts ([`Egress::execute`] runs one for a caller that hands it a `send`).
//!
//! The decisions live in [`EgressState`](crate::state), pure and behind one lock; this
//! shell does the waiting (the quota pause, the gate, the pace, a concurrency slot, the
//! backoff), the sending, the logging and broadcasting of [`EgressEvent`]s, and hands
//! state-file snapshots to a writer thread, never writing under the lock.
//!
//! One call, one attempt at a time:
//!
//! ```text
//!  circuit open? ──▶ fail at once (CircuitOpen, with when the next probe is)
//!  quota paused for this priority? ──▶ wait for the reset, or fail if beyond max_wait
//!  the gate: wait for this caller's turn (priority, tenant, arrival)
//!  pacer: reserve 1 request + the estimated tokens ──▶ wait until they are ready
//!  adaptive concurrency: wait for a slot
//!  (every wait above counts against the job's one max_wait)
//!  send ──▶ answer ──▶ learn (headers → pacer and quota; AIMD; concurrency; breaker)
//!                      settle the tokens to the reported usage
//!  success ──▶ done      retryable failure ──▶ back off (Retry-After, else the class's
//!                                              schedule), then again
//! ```
//!
//! The client spawns nothing for a call: waits happen in the caller's task, so dropping the
//! future cancels the call and gives back its concurrency slot. (The state file's writer
//! is one blocking thread at a time, see [`crate::state_file`].)
//!
//! A call whose answer streams ([`Call::attempt`], then [`Attempt::answered`] without
//! the body) keeps its concurrency slot until the stream ends: the upstream works on it
//! until then. The report's [`Settlement`] holds the slot; settling it (or dropping it,
//! when the reader goes away) gives the slot back once, and the adaptive limit learns the
//! whole stream's latency and how it ended. [`Egress::execute`] reads every answer whole
//! inside its `send`, so its calls end with their answer.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use sluice_core::{BreakerConfig, BreakerState, Clock, Nanos, Permit};
use sluice_http::UpstreamSignals;
use sluice_store::{MemoryStore, Store};
use tokio::sync::{Notify, broadcast};

use crate::TokioClock;
use crate::classify::{ErrorClass, Outcome, classify_status};
use crate::coalesce::{CoalesceKey, Coalescer};
use crate::concurrency::{ConcurrencyConfig, ConcurrencyError, Slot};
use crate::events::EgressEvent;
use crate::gate::Gate;
use crate::job::{Job, Priority};
use crate::pacer::{
    DimensionPace, PaceConfig, PaceConfigError, PaceDimension, PaceError, Paced, Pacer,
};
use crate::quota::{Admission, QuotaConfig, QuotaError, QuotaMonitor, Usage};
use crate::retry::{Failure, NextStep, RetryConfig};
use crate::state::{Answered, EgressState, StreamEnd, ThrottleAlertConfig};
use crate::state_file::StateFile;
use crate::usage::reported_tokens;

/// Events buffered per subscriber before the oldest are dropped.
const EVENT_BUFFER: usize = 1024;

/// Everything an [`Egress`] client is configured with.
#[derive(Clone, Debug)]
pub struct EgressConfig {
    /// The upstream's name: in logs, and the key of its pacing state in a shared store.
    pub upstream: String,
    /// Pacing by requests and tokens.
    pub pace: PaceConfig,
    /// Quota tracking, alerts and pausing.
    pub quota: QuotaConfig,
    /// The adaptive limit on calls in flight.
    pub concurrency: ConcurrencyConfig,
    /// When to stop calling a failing upstream, and how to probe it.
    pub breaker: BreakerConfig,
    /// Retries.
    pub retry: RetryConfig,
    /// How many calls may wait (for quota, pace or a slot) at once; more fail at once
    /// with [`EgressError::Overloaded`].
    pub max_waiting: usize,
    /// How long every caller pauses after the upstream says its quota is exhausted
    /// (`insufficient_quota`): a billing problem that retrying will not fix soon.
    pub exhausted_pause: Duration,
    /// Where the quota monitor's state is kept across restarts, if anywhere.
    pub state_file: Option<PathBuf>,
    /// How often, at most, the state file is rewritten.
    pub persist_every: Duration,
    /// When a share of throttled attempts raises an [`EgressEvent::ThrottleAlert`].
    pub throttle_alert: ThrottleAlertConfig,
}

impl EgressConfig {
    /// Defaults for the upstream named `upstream`.
    pub fn new(upstream: impl Into<String>) -> Self {
        Self {
            upstream: upstream.into(),
            pace: PaceConfig::default(),
            quota: QuotaConfig::default(),
            concurrency: ConcurrencyConfig::default(),
            breaker: BreakerConfig::default(),
            retry: RetryConfig::default(),
            max_waiting: 10_000,
            exhausted_pause: Duration::from_secs(60),
            state_file: None,
            persist_every: Duration::from_secs(1),
            throttle_alert: ThrottleAlertConfig::default(),
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EgressConfigError {
    /// Pacing.
    #[error(transparent)]
    Pace(#[from] PaceConfigError),
    /// Quota.
    #[error(transparent)]
    Quota(#[from] QuotaError),
    /// Concurrency.
    #[error(transparent)]
    Concurrency(#[from] ConcurrencyError),
    /// Retries.
    #[error("retry.max_attempts must be at least 1, got 0")]
    NoAttempts,
    /// The throttle alert.
    #[error(
        "throttle_alert: threshold must be in (0, 1] and window in 1..=128, got {threshold} and {window}"
    )]
    ThrottleAlert {
        /// The threshold given.
        threshold: f64,
        /// The window given.
        window: u32,
    },
}

/// A send that failed without an HTTP answer.
#[derive(Debug, thiserror::Error)]
#[error("{class:?}: {source}", class = self.class)]
pub struct SendError {
    /// [`ErrorClass::Connect`] (never sent), [`ErrorClass::ConnectionReset`] or
    /// [`ErrorClass::Timeout`].
    pub class: ErrorClass,
    /// What the transport said.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Why a call did not get an answer from the upstream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EgressError {
    /// The circuit is open: the upstream failed too often. Nothing was sent.
    #[error("circuit open for {upstream}: next probe in {retry_after:?}")]
    CircuitOpen {
        /// The upstream.
        upstream: String,
        /// When the next probe may go.
        retry_after: Duration,
    },
    /// Waiting for quota or pace would take longer than the job's `max_wait`.
    #[error("{upstream}: {source}")]
    WouldWait {
        /// The upstream.
        upstream: String,
        /// What it would wait for.
        #[source]
        source: PaceError,
    },
    /// The quota is paused (or exhausted) for this priority until after the job's
    /// `max_wait`.
    #[error(
        "{upstream}: {dimension} quota {reason} at {percent:.0} % until the reset in {retry_after:?}"
    )]
    QuotaPaused {
        /// The upstream.
        upstream: String,
        /// Which quota.
        dimension: &'static str,
        /// `paused` or `exhausted`.
        reason: &'static str,
        /// Its usage.
        percent: f64,
        /// When it resets.
        retry_after: Duration,
    },
    /// The call waited its whole `max_wait` in line, for its turn or a concurrency slot,
    /// and was not sent.
    #[error(
        "{upstream}: still waiting for {waiting_for} after {max_wait:?} (max_wait): it would have had to wait longer"
    )]
    WaitedTooLong {
        /// The upstream.
        upstream: String,
        /// `its turn` or `a concurrency slot`.
        waiting_for: &'static str,
        /// How long it waited: its `max_wait`.
        max_wait: Duration,
    },
    /// Too many calls are waiting already.
    #[error("{upstream}: {waiting} calls are waiting already (max_waiting)")]
    Overloaded {
        /// The upstream.
        upstream: String,
        /// How many.
        waiting: usize,
    },
    /// The last attempt failed without an answer.
    #[error("{upstream}: no answer after {attempts} attempt(s): {source}")]
    Send {
        /// The upstream.
        upstream: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        #[source]
        source: SendError,
    },
    /// The error of a coalesced call, shared by every caller that waited for it.
    #[error(transparent)]
    Shared(Arc<Self>),
    /// The pacing store failed.
    #[error("{upstream}: {source}")]
    Store {
        /// The upstream.
        upstream: String,
        /// What failed.
        #[source]
        source: PaceError,
    },
}

impl EgressError {
    /// How long the caller should wait before trying again, where sluice knows.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::CircuitOpen { retry_after, .. } | Self::QuotaPaused { retry_after, .. } => {
                Some(*retry_after)
            }
            Self::WouldWait {
                source: PaceError::WouldWait { wait, .. },
                ..
            } => Some(*wait),
            Self::Shared(inner) => inner.retry_after(),
            _ => None,
        }
    }
}

/// Counters since the client was made.
#[derive(Debug, Default)]
struct Counters {
    attempts: AtomicU64,
    succeeded: AtomicU64,
    retried: AtomicU64,
    rate_limited: AtomicU64,
    failed: AtomicU64,
    rejected: AtomicU64,
    coalesced: AtomicU64,
}

/// What the client is doing, for dashboards and logs.
#[derive(Clone, Debug)]
pub struct EgressStats {
    /// Calls waiting for quota, pace or a slot.
    pub waiting: usize,
    /// Calls backing off before a retry: they wait apart, so they never hold up fresh work.
    pub retrying: usize,
    /// Calls in flight.
    pub in_flight: u32,
    /// The adaptive concurrency limit.
    pub concurrency_limit: u32,
    /// Each pacing dimension.
    pub pace: [(PaceDimension, DimensionPace); 2],
    /// The circuit.
    pub circuit: BreakerState,
    /// Each known quota dimension.
    pub quota: Vec<Usage>,
    /// Attempts sent.
    pub attempts: u64,
    /// Calls answered with success.
    pub succeeded: u64,
    /// Attempts that were retries.
    pub retried: u64,
    /// Answers that were 429.
    pub rate_limited: u64,
    /// Attempts that failed (any class).
    pub failed: u64,
    /// Calls refused before sending (circuit open, quota paused, overloaded).
    pub rejected: u64,
    /// Calls answered with another identical call's answer.
    pub coalesced: u64,
    /// Calls waiting for their turn to pace, by priority, highest first.
    pub waiting_by_priority: Vec<(Priority, usize)>,
}

impl EgressStats {
    /// Successes over attempts, in `[0, 1]`; 1 before any attempt.
    pub fn success_rate(&self) -> f64 {
        if self.attempts == 0 {
            return 1.0;
        }
        ratio(self.succeeded, self.attempts)
    }

    /// Attempts the upstream answered 429 (or quota exhausted), in `[0, 1]`.
    pub fn throttle_rate(&self) -> f64 {
        if self.attempts == 0 {
            return 0.0;
        }
        ratio(self.rate_limited, self.attempts)
    }
}

#[allow(clippy::cast_precision_loss, reason = "a ratio of counts")]
fn ratio(part: u64, whole: u64) -> f64 {
    part as f64 / whole as f64
}

struct Inner<S> {
    config: EgressConfig,
    clock: TokioClock,
    pacer: Pacer<S>,
    /// The decisions: never locked across an await.
    state: Mutex<EgressState>,
    state_file: Option<StateFile>,
    events: broadcast::Sender<EgressEvent>,
    slot_freed: Notify,
    gate: Gate,
    retrying: AtomicUsize,
    coalescer: Coalescer<Result<Response<Bytes>, Arc<EgressError>>>,
    waiting: AtomicUsize,
    counters: Counters,
}

/// A quota-aware client for one upstream. Cheap to clone: clones share everything.
pub struct Egress<S = MemoryStore<TokioClock>> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for Egress<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S> std::fmt::Debug for Egress<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress")
            .field("upstream", &self.inner.config.upstream)
            .finish_non_exhaustive()
    }
}

impl Egress<MemoryStore<TokioClock>> {
    /// A client that paces in this process's memory. Must be created inside a tokio
    /// runtime.
    pub fn new(config: EgressConfig) -> Result<Self, EgressConfigError> {
        let clock = TokioClock::new();
        Self::with_store(config, MemoryStore::with_clock(clock), clock)
    }
}

impl<S: Store> Egress<S> {
    /// A client that paces through `store` (e.g. Redis, to share one upstream account
    /// between processes), reading time from `clock`.
    pub fn with_store(
        config: EgressConfig,
        store: S,
        clock: TokioClock,
    ) -> Result<Self, EgressConfigError> {
        if config.retry.max_attempts == 0 {
            return Err(EgressConfigError::NoAttempts);
        }
        let alert = config.throttle_alert;
        if !(alert.threshold > 0.0 && alert.threshold <= 1.0 && (1..=128).contains(&alert.window)) {
            return Err(EgressConfigError::ThrottleAlert {
                threshold: alert.threshold,
                window: alert.window,
            });
        }
        let pacer = Pacer::new(store, &config.upstream, &config.pace)?;
        let now = clock.now();
        let state_file = config
            .state_file
            .as_ref()
            .map(|path| StateFile::new(path.clone(), &config.upstream));
        let quota = match &state_file {
            Some(file) => file.load(config.quota.clone(), now)?,
            None => QuotaMonitor::new(config.quota.clone())?,
        };
        let state = EgressState::new(&config, quota)?;
        let gate = Gate::new(config.max_waiting);
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                clock,
                pacer,
                state: Mutex::new(state),
                state_file,
                events: broadcast::channel(EVENT_BUFFER).0,
                slot_freed: Notify::new(),
                gate,
                retrying: AtomicUsize::new(0),
                coalescer: Coalescer::new(),
                waiting: AtomicUsize::new(0),
                counters: Counters::default(),
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, EgressState> {
        self.inner.state()
    }

    /// A receiver of every [`EgressEvent`] from now on: quota alerts, pauses and resumes,
    /// concurrency and circuit changes, retries, throttle alerts. A receiver that falls
    /// more than 1024 events behind loses the oldest and is told how many
    /// (`RecvError::Lagged`); the calls never wait for it.
    pub fn subscribe(&self) -> broadcast::Receiver<EgressEvent> {
        self.inner.events.subscribe()
    }

    /// A driver for one call of `job`: its attempts, and the retry policy's next step
    /// after each (see [`Call`]).
    pub fn call<'a>(&'a self, job: &'a Job) -> Call<'a, S> {
        Call {
            egress: self,
            job,
            started: self.now(),
            attempts: 0,
        }
    }

    /// The client's clock reading: the timeline of its pacing, quota and reports.
    pub fn now(&self) -> Nanos {
        self.inner.clock.now()
    }

    fn upstream(&self) -> String {
        self.inner.config.upstream.clone()
    }

    /// Runs one call: `send` makes one attempt and is called again for each retry, each
    /// within [`RetryConfig::attempt_timeout`].
    ///
    /// Answers `Ok` with the upstream's last answer whenever there is one, successful or
    /// not (a 400 is the caller's to read; a 429 after the last retry too), and `Err` when
    /// nothing was sent or no answer came.
    pub async fn execute<F, Fut>(
        &self,
        job: &Job,
        mut send: F,
    ) -> Result<Response<Bytes>, EgressError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Response<Bytes>, SendError>>,
    {
        let mut call = self.call(job);
        loop {
            let attempt = call.attempt().await?;
            let result = call.timed(send()).await;
            let report = match &result {
                Ok(response) => {
                    attempt
                        .answered(response.status(), response.headers(), Some(response.body()))
                        .await
                }
                Err(error) => attempt.failed(error).await,
            };
            if !call.again(report).await {
                return result.map_err(|source| call.send_failed(source));
            }
        }
    }

    /// Waits until one attempt of `job` may be sent (circuit, quota, its turn, pace, a
    /// concurrency slot).
    async fn attempt<'a>(&'a self, job: &'a Job) -> Result<Attempt<'a, S>, EgressError> {
        let ticket = self.begin(job).await?;
        Ok(Attempt {
            job,
            sent_at: self.now(),
            guard: Guard {
                egress: self,
                ticket: Some(ticket),
            },
        })
    }

    /// [`execute`](Self::execute), shared with identical calls in flight: while a call with
    /// the same `key` runs, this one waits for its answer instead of calling the upstream
    /// again (see [`Coalescer`](crate::Coalescer)). Only for idempotent requests. An error is
    /// [`EgressError::Shared`] for the callers that waited for it.
    pub async fn execute_coalesced<F, Fut>(
        &self,
        key: CoalesceKey,
        job: &Job,
        send: F,
    ) -> Result<Response<Bytes>, EgressError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Response<Bytes>, SendError>>,
    {
        let coalesced = self
            .inner
            .coalescer
            .run(key, || async {
                self.execute(job, send).await.map_err(Arc::new)
            })
            .await;
        if coalesced.shared {
            self.inner
                .counters
                .coalesced
                .fetch_add(1, Ordering::Relaxed);
        }
        coalesced.value.map_err(|e| match Arc::try_unwrap(e) {
            Ok(e) => e,
            Err(shared) => EgressError::Shared(shared),
        })
    }

    /// Waits until one attempt may be sent: circuit, quota, pace, a concurrency slot.
    async fn begin(&self, job: &Job) -> Result<Ticket, EgressError> {
        let (_waiting, waiting) = Waiting::counted(&self.inner.waiting);
        if waiting >= self.inner.config.max_waiting {
            return Err(self.reject(EgressError::Overloaded {
                upstream: self.upstream(),
                waiting,
            }));
        }
        let deadline = self
            .now()
            .plus_nanos(sluice_core::time::duration_nanos(job.max_wait));
        self.check_circuit()?;
        self.wait_for_quota(job, deadline).await?;
        // Every wait in line ends at the deadline: a caller that reaches it leaves at once.
        let waited_too_long = |waiting_for| {
            self.reject(EgressError::WaitedTooLong {
                upstream: self.upstream(),
                waiting_for,
                max_wait: job.max_wait,
            })
        };
        let give_up_at = self.inner.clock.instant_at(deadline);
        // One caller at a time reserves, waits out its pace and takes a slot, in order of
        // priority and then tenant by tenant: a late interactive call overtakes the batch.
        let entered = tokio::time::timeout_at(
            give_up_at,
            self.inner.gate.enter(job.priority, job.tenant.as_deref()),
        )
        .await
        .map_err(|_| waited_too_long("its turn"))?;
        let turn = entered.map_err(|full| {
            self.reject(EgressError::Overloaded {
                upstream: self.upstream(),
                waiting: full.waiting,
            })
        })?;
        let max_wait = deadline.saturating_since(self.now());
        let paced = match self
            .inner
            .pacer
            .reserve(job.tokens, max_wait, self.now())
            .await
        {
            Ok(paced) => paced,
            Err(source @ PaceError::Store(_)) => {
                return Err(EgressError::Store {
                    upstream: self.upstream(),
                    source,
                });
            }
            Err(source) => {
                return Err(self.reject(EgressError::WouldWait {
                    upstream: self.upstream(),
                    source,
                }));
            }
        };
        if !paced.wait.is_zero() {
            tokio::time::sleep(paced.wait).await;
        }
        let Ok(slot) = tokio::time::timeout_at(give_up_at, self.slot()).await else {
            drop(turn);
            self.cancel_pace(&paced).await;
            return Err(waited_too_long("a concurrency slot"));
        };
        drop(turn);
        let now = self.now();
        let mut events = Vec::new();
        let acquired = self.state().send(job.tokens, now, &mut events);
        self.inner.emit(events);
        let permit = match acquired {
            Ok(permit) => permit,
            Err(retry_after) => {
                self.release_slot(slot);
                self.cancel_pace(&paced).await;
                return Err(self.reject(EgressError::CircuitOpen {
                    upstream: self.upstream(),
                    retry_after,
                }));
            }
        };
        self.inner.counters.attempts.fetch_add(1, Ordering::Relaxed);
        Ok(Ticket {
            paced,
            slot,
            permit,
        })
    }

    fn release_slot(&self, slot: Slot) {
        self.state().release(slot);
        self.inner.slot_freed.notify_one();
    }

    async fn cancel_pace(&self, paced: &Paced) {
        if let Err(e) = self.inner.pacer.cancel(paced).await {
            tracing::debug!(upstream = %self.inner.config.upstream, error = %e, "could not give back a reservation");
        }
    }

    fn reject(&self, error: EgressError) -> EgressError {
        self.inner.counters.rejected.fetch_add(1, Ordering::Relaxed);
        error
    }

    fn check_circuit(&self) -> Result<(), EgressError> {
        let mut events = Vec::new();
        let circuit = self.state().circuit(self.now(), &mut events);
        self.inner.emit(events);
        circuit.map_err(|retry_after| {
            self.reject(EgressError::CircuitOpen {
                upstream: self.upstream(),
                retry_after,
            })
        })
    }

    async fn wait_for_quota(&self, job: &Job, deadline: Nanos) -> Result<(), EgressError> {
        loop {
            let now = self.now();
            let admission = self.state().admit(job.priority, now);
            let Admission::Wait {
                until,
                dimension,
                percent,
                reason,
            } = admission
            else {
                return Ok(());
            };
            if until > deadline {
                return Err(self.reject(EgressError::QuotaPaused {
                    upstream: self.upstream(),
                    dimension: dimension.name(),
                    reason: reason.name(),
                    percent,
                    retry_after: until.saturating_since(now),
                }));
            }
            tokio::time::sleep_until(self.inner.clock.instant_at(until)).await;
        }
    }

    async fn slot(&self) -> Slot {
        loop {
            let freed = self.inner.slot_freed.notified();
            if let Some(slot) = self.state().try_slot() {
                return slot;
            }
            freed.await;
        }
    }

    /// Learns from one attempt's answer (or failure to get one).
    async fn finish(
        &self,
        ticket: Ticket,
        job: &Job,
        answer: Answer<'_>,
        sent_at: Nanos,
    ) -> AttemptReport<'_, S> {
        let Ticket {
            paced,
            slot,
            permit,
        } = ticket;
        let now = self.now();
        let latency = now.saturating_since(sent_at);
        let counters = &self.inner.counters;
        // Without its body the answer streams: the upstream works on until it ends.
        let streams = matches!(answer, Answer::Head { body: None, .. });
        let (outcome, signals, used) = match answer {
            Answer::Head {
                status,
                headers,
                body,
            } => {
                let signals = UpstreamSignals::read(status, headers, now);
                let outcome = classify_status(status, body);
                let used = match outcome {
                    Outcome::Success => body.and_then(reported_tokens),
                    // Refused answers did not use the tokens.
                    Outcome::Failure(_) => Some(0),
                };
                (outcome, Some(signals), used)
            }
            Answer::Failed(e) => {
                // A refused connection never reached the upstream; anything else may have.
                let used = Some(if e.class == ErrorClass::Connect {
                    0
                } else {
                    job.tokens
                });
                (Outcome::Failure(e.class), None, used)
            }
        };
        if let Some(signals) = &signals {
            self.inner.pacer.observe(signals, now);
        }
        let mut events = Vec::new();
        let (held, free, snapshot) = {
            let mut state = self.state();
            let held = state.answered(
                Answered {
                    slot,
                    permit,
                    outcome,
                    latency,
                    signals: signals.as_ref(),
                    estimate: job.tokens,
                    used,
                    streams,
                },
                now,
                &mut events,
            );
            (held, state.free_slots(), state.snapshot_if_due(now))
        };
        // Written by the state file's own thread, after the lock is released.
        if let (Some(file), Some(snapshot)) = (&self.inner.state_file, snapshot) {
            file.offer(snapshot);
        }
        // Held before anything else is awaited, so that a dropped call gives it back.
        let in_flight = held.map(|slot| InFlight {
            egress: self,
            slot: Some(slot),
            sent_at,
        });
        wake_waiters(&self.inner, free);
        self.inner.emit(events);
        // A streamed answer's usage comes at its end: the caller settles it then.
        let settlement = Settlement {
            egress: self,
            paced,
            estimate: job.tokens,
            in_flight,
        };
        let settlement = match used {
            Some(used) => {
                settlement.settle(used, false).await;
                None
            }
            None => Some(settlement),
        };
        match outcome {
            Outcome::Success => {
                self.inner.pacer.on_success(now);
                counters.succeeded.fetch_add(1, Ordering::Relaxed);
                AttemptReport {
                    failure: None,
                    should_retry: None,
                    retry_after: None,
                    settlement,
                }
            }
            Outcome::Failure(class) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                let signals = signals.unwrap_or_else(|| {
                    UpstreamSignals::read(StatusCode::OK, &HeaderMap::new(), now)
                });
                match class {
                    ErrorClass::RateLimited => {
                        counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                        self.inner.pacer.on_rate_limited(&signals, now);
                    }
                    ErrorClass::QuotaExhausted => {
                        counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(upstream = %self.inner.config.upstream, pause_s = self.inner.config.exhausted_pause.as_secs(), "the upstream says its quota is exhausted: pausing every caller");
                        self.inner
                            .pacer
                            .hold(now.plus_nanos(sluice_core::time::duration_nanos(
                                self.inner.config.exhausted_pause,
                            )));
                    }
                    _ => {}
                }
                AttemptReport {
                    failure: Some(class),
                    should_retry: signals.should_retry,
                    retry_after: signals.retry_after,
                    settlement,
                }
            }
        }
    }

    /// Writes the quota state to the state file now, after any write in flight (call
    /// before exiting).
    pub fn flush(&self) -> Result<(), QuotaError> {
        match &self.inner.state_file {
            Some(file) => {
                let snapshot = self.state().snapshot();
                file.flush(&snapshot)
            }
            None => Ok(()),
        }
    }

    /// What the client is doing now.
    pub fn stats(&self) -> EgressStats {
        let now = self.now();
        let c = &self.inner.counters;
        let state = self.state();
        EgressStats {
            waiting: self.inner.waiting.load(Ordering::Acquire),
            retrying: self.inner.retrying.load(Ordering::Acquire),
            in_flight: state.in_flight(),
            concurrency_limit: state.concurrency_limit(),
            pace: self.inner.pacer.view(now),
            circuit: state.circuit_at(now),
            quota: state.usage(now),
            attempts: c.attempts.load(Ordering::Relaxed),
            succeeded: c.succeeded.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            coalesced: c.coalesced.load(Ordering::Relaxed),
            waiting_by_priority: self.inner.gate.waiting_by_priority(),
        }
    }
}

/// What one attempt holds between sending and its answer.
struct Ticket {
    paced: Paced,
    slot: Slot,
    permit: Permit,
}

/// Gives back a ticket's slot and probe if the caller drops the call mid-flight.
struct Guard<'a, S> {
    egress: &'a Egress<S>,
    ticket: Option<Ticket>,
}

impl<S> Guard<'_, S> {
    fn take(mut self) -> Option<Ticket> {
        self.ticket.take()
    }
}

impl<S> Drop for Guard<'_, S> {
    fn drop(&mut self) {
        if let Some(Ticket { slot, permit, .. }) = self.ticket.take() {
            let inner = &self.egress.inner;
            inner.state().abandon(slot, permit);
            inner.slot_freed.notify_one();
        }
    }
}

/// What an attempt got back.
enum Answer<'b> {
    /// An HTTP answer: its head, and its body when it was read whole.
    Head {
        status: StatusCode,
        headers: &'b HeaderMap,
        body: Option<&'b [u8]>,
    },
    /// No answer.
    Failed(&'b SendError),
}

/// One attempt in progress, from [`Call::attempt`]: it holds its pace reservation, its
/// concurrency slot and, while the circuit is half-open, its probe.
#[must_use = "report the attempt with answered() or failed()"]
pub struct Attempt<'a, S: Store> {
    job: &'a Job,
    sent_at: Nanos,
    guard: Guard<'a, S>,
}

impl<S: Store> std::fmt::Debug for Attempt<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attempt")
            .field("sent_at", &self.sent_at)
            .finish_non_exhaustive()
    }
}

impl<'a, S: Store> Attempt<'a, S> {
    /// The upstream answered `status` with `headers`. Pass the `body` when it was read
    /// whole (its usage settles the tokens, and its wording tells a spent quota from a
    /// rate limit); pass `None` while it streams, and settle the tokens with the report's
    /// [`settlement`](AttemptReport::settlement) when it ends.
    ///
    /// A successful answer given without its body is a stream: the call keeps its
    /// concurrency slot, held by the settlement, until the stream ends, and the adaptive
    /// limit learns its outcome and latency then. The circuit breaker, the counters and
    /// [`Call::next_step`] take the head's word at once.
    pub async fn answered(
        self,
        status: StatusCode,
        headers: &HeaderMap,
        body: Option<&[u8]>,
    ) -> AttemptReport<'a, S> {
        let answer = Answer::Head {
            status,
            headers,
            body,
        };
        self.report(answer).await
    }

    /// The attempt got no answer.
    pub async fn failed(self, error: &SendError) -> AttemptReport<'a, S> {
        self.report(Answer::Failed(error)).await
    }

    async fn report(self, answer: Answer<'_>) -> AttemptReport<'a, S> {
        let Self {
            job,
            sent_at,
            guard,
        } = self;
        let egress = guard.egress;
        let Some(ticket) = guard.take() else {
            unreachable!("an attempt holds its ticket until it is reported")
        };
        egress.finish(ticket, job, answer, sent_at).await
    }
}

/// How an attempt went, as [`Call::next_step`] needs it.
#[derive(Debug)]
pub struct AttemptReport<'a, S: Store> {
    /// The failure's class; `None` for a success.
    pub failure: Option<ErrorClass>,
    /// The upstream's `x-should-retry`.
    pub should_retry: Option<bool>,
    /// The upstream's `Retry-After` (or `retry-after-ms`).
    pub retry_after: Option<Duration>,
    /// The tokens still to settle, when the answer's body was not given (it streams) or
    /// reported no usage. For a successful stream it also holds the call's concurrency slot
    /// until it is settled or dropped: keep it as long as the stream runs.
    pub settlement: Option<Settlement<'a, S>>,
}

/// The end of a call whose answer streams: its tokens, settled when its usage is known,
/// and, for a successful stream, its hold on the upstream.
///
/// While a stream's settlement lives, its call keeps its concurrency slot, so the limit
/// counts streams until they end, not until their head arrives. It gives the slot back
/// exactly once, whichever way the stream ends:
///
/// - [`settle_to`](Self::settle_to): the stream ended; the adaptive limit counts a
///   success that took from sending to now;
/// - [`broke_off`](Self::broke_off): the upstream's stream failed before its end; the
///   limit learns a failure of that class (a timeout is congestion, a reset connection is
///   not);
/// - dropped (the reader went away, the relay was cancelled): the slot is given back and
///   nothing is learned; the estimate stays charged.
///
/// Keep it with the stream: a proxy keeps it in the future that relays the body, which
/// the relayed body owns, so the slot lasts exactly as long as the relay.
#[must_use = "settle it when the answer ends: until then it holds the call's tokens and concurrency slot"]
pub struct Settlement<'a, S: Store> {
    egress: &'a Egress<S>,
    paced: Paced,
    estimate: u64,
    /// The stream's concurrency slot; `None` for an answer read whole.
    in_flight: Option<InFlight<'a, S>>,
}

impl<S: Store> std::fmt::Debug for Settlement<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settlement")
            .field("estimate", &self.estimate)
            .field("holds_slot", &self.holds_slot())
            .finish_non_exhaustive()
    }
}

impl<S: Store> Settlement<'_, S> {
    /// The answer ended: gives back a stream's concurrency slot (a success, as long as the
    /// whole stream took), then corrects the call's tokens to `used` (its estimate when
    /// the answer reported none).
    pub async fn settle_to(mut self, used: Option<u64>) {
        if let Some(mut call) = self.in_flight.take() {
            call.end(StreamEnd::Completed);
        }
        let used = used.unwrap_or(self.estimate);
        self.settle(used, true).await;
    }

    /// The answer broke off before its end with `class` (a reset connection, a timeout):
    /// gives back a stream's concurrency slot as a failure of `class`, then corrects the
    /// call's tokens to `used` (its estimate when the answer reported none).
    pub async fn broke_off(mut self, class: ErrorClass, used: Option<u64>) {
        if let Some(mut call) = self.in_flight.take() {
            call.end(StreamEnd::BrokeOff(class));
        }
        let used = used.unwrap_or(self.estimate);
        self.settle(used, true).await;
    }

    /// Whether it still holds a stream's concurrency slot.
    pub fn holds_slot(&self) -> bool {
        self.in_flight
            .as_ref()
            .is_some_and(|call| call.slot.is_some())
    }

    async fn settle(self, used: u64, count: bool) {
        let Self {
            egress,
            paced,
            estimate,
            in_flight,
        } = self;
        // Settled without a word on how the stream went: give the slot back, learn nothing.
        drop(in_flight);
        if count {
            let now = egress.now();
            let mut events = Vec::new();
            egress.state().settled(estimate, used, now, &mut events);
            egress.inner.emit(events);
        }
        if let Err(e) = egress.inner.pacer.settle(&paced, used).await {
            tracing::warn!(upstream = %egress.inner.config.upstream, error = %e, "could not settle the tokens of a call");
        }
    }
}

/// A streamed call's concurrency slot, held from its head until its end and given back
/// exactly once: by [`end`](Self::end), or on drop.
struct InFlight<'a, S> {
    egress: &'a Egress<S>,
    slot: Option<Slot>,
    sent_at: Nanos,
}

impl<S> InFlight<'_, S> {
    /// Gives the slot back, reporting how the call ended; only the first call does
    /// anything.
    fn end(&mut self, end: StreamEnd) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        let inner = &self.egress.inner;
        let now = inner.clock.now();
        let latency = now.saturating_since(self.sent_at);
        let mut events = Vec::new();
        let free = {
            let mut state = inner.state();
            state.stream_ended(slot, end, latency, now, &mut events);
            state.free_slots()
        };
        wake_waiters(inner, free);
        self.egress.inner.emit(events);
    }
}

impl<S> Drop for InFlight<'_, S> {
    fn drop(&mut self) {
        self.end(StreamEnd::Abandoned);
    }
}

/// Wakes one caller waiting for a slot per free slot (at least one: the limit may have
/// risen), up to 64.
fn wake_waiters<S>(inner: &Inner<S>, free: u32) {
    for _ in 0..free.clamp(1, 64) {
        inner.slot_freed.notify_one();
    }
}

/// Counts a call in a gauge until it is dropped, whichever way the wait ends.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(gauge: &'a AtomicUsize) -> Self {
        Self::counted(gauge).0
    }

    /// Also returns how many were counted before this one.
    fn counted(gauge: &'a AtomicUsize) -> (Self, usize) {
        let before = gauge.fetch_add(1, Ordering::AcqRel);
        (Self(gauge), before)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S> Inner<S> {
    /// Logs `events` and sends them to the subscribers.
    fn emit(&self, events: Vec<EgressEvent>) {
        if events.is_empty() {
            return;
        }
        let upstream = &self.config.upstream;
        let subscribed = self.events.receiver_count() > 0;
        for event in events {
            event.log(upstream);
            if subscribed {
                // Only fails when the last subscriber left meanwhile.
                let _ = self.events.send(event);
            }
        }
    }

    fn state(&self) -> MutexGuard<'_, EgressState> {
        // Plain numbers inside: a panic elsewhere cannot leave them half-updated.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The one driver of a call's attempts, from [`Egress::call`]: the library's
/// [`Egress::execute`], the proxy's streaming relay and the batch engine all run their
/// attempts through it, so one retry policy ([`RetryConfig`]) decides for all three.
///
/// An open loop, for callers that send themselves:
///
/// ```text
/// loop {
///     let attempt = call.attempt().await?;        // waits: circuit, quota, turn, pace, slot
///     let report = attempt.answered(status, &headers, body).await;   // or failed(&error)
///     if !call.again(report).await { break }      // backs off, or says it is over
/// }
/// ```
///
/// [`next_step`](Self::next_step) and [`back_off`](Self::back_off) are the two halves of
/// [`again`](Self::again), for a caller that must do something between them (a proxy
/// that answers before it would wait).
#[derive(Debug)]
pub struct Call<'a, S> {
    egress: &'a Egress<S>,
    job: &'a Job,
    started: Nanos,
    attempts: u32,
}

/// How long a call turned away before sending (too many waiting, circuit open) waits
/// before it asks again, when it keeps trying ([`RetryConfig::until_processed`]).
const REFUSED_PAUSE: Duration = Duration::from_secs(1);

impl<'a, S: Store> Call<'a, S> {
    /// Waits until the next attempt may be sent. With [`RetryConfig::until_processed`],
    /// an open circuit or a full line is waited out while the retry budget lasts.
    pub async fn attempt(&mut self) -> Result<Attempt<'a, S>, EgressError> {
        loop {
            match self.egress.attempt(self.job).await {
                Ok(attempt) => {
                    self.attempts += 1;
                    return Ok(attempt);
                }
                Err(error) => {
                    let retry = &self.egress.inner.config.retry;
                    let wait = match &error {
                        EgressError::CircuitOpen { retry_after, .. } => *retry_after,
                        EgressError::Overloaded { .. } => REFUSED_PAUSE,
                        _ => return Err(error),
                    };
                    let elapsed = self.egress.now().saturating_since(self.started);
                    if !retry.until_processed || elapsed.saturating_add(wait) > retry.max_elapsed {
                        return Err(error);
                    }
                    self.back_off(wait.max(Duration::from_millis(1))).await;
                }
            }
        }
    }

    /// `send`'s result within [`RetryConfig::attempt_timeout`]; past it, a
    /// [`ErrorClass::Timeout`] failure.
    pub async fn timed<T>(
        &self,
        send: impl Future<Output = Result<T, SendError>>,
    ) -> Result<T, SendError> {
        let timeout = self.egress.inner.config.retry.attempt_timeout;
        match tokio::time::timeout(timeout, send).await {
            Ok(result) => result,
            Err(_) => Err(SendError {
                class: ErrorClass::Timeout,
                source: format!("no answer within {timeout:?}").into(),
            }),
        }
    }

    /// Attempts sent so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// After `report`: `true` once the backoff before another attempt is over, `false`
    /// when the call is over (done, or given up).
    pub async fn again(&mut self, report: AttemptReport<'_, S>) -> bool {
        match self.next_step(&report) {
            NextStep::RetryAfter(wait) => {
                drop(report);
                self.back_off(wait).await;
                true
            }
            NextStep::Done | NextStep::GiveUp => false,
        }
    }

    /// What to do after the attempt `report` tells of: done, retry after a wait (an
    /// [`EgressEvent::Retry`]), or give up (not retryable, or out of attempts or time).
    pub fn next_step(&mut self, report: &AttemptReport<'_, S>) -> NextStep {
        let Some(class) = report.failure else {
            return NextStep::Done;
        };
        let egress = self.egress;
        let failure = Failure {
            class,
            idempotency: self.job.idempotency,
            retry_after: report.retry_after,
            should_retry: report.should_retry,
        };
        let elapsed = egress.now().saturating_since(self.started);
        let step =
            egress
                .inner
                .config
                .retry
                .next_step(&failure, self.attempts, elapsed, fastrand::f64());
        match step {
            NextStep::RetryAfter(wait) => {
                egress
                    .inner
                    .counters
                    .retried
                    .fetch_add(1, Ordering::Relaxed);
                egress.inner.emit(vec![EgressEvent::Retry {
                    attempt: self.attempts,
                    class,
                    wait,
                }]);
            }
            _ => {
                let upstream = &egress.inner.config.upstream;
                tracing::debug!(%upstream, class = class.name(), attempts = self.attempts, "giving up");
            }
        }
        step
    }

    /// Waits `wait` before the next attempt, counted among the calls backing off (which
    /// wait apart, so they never hold up fresh work).
    pub async fn back_off(&self, wait: Duration) {
        let _retrying = Waiting::new(&self.egress.inner.retrying);
        tokio::time::sleep(wait).await;
    }

    /// The error of a call whose last attempt got no answer.
    pub fn send_failed(&self, source: SendError) -> EgressError {
        EgressError::Send {
            upstream: self.egress.upstream(),
            attempts: self.attempts,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::concurrency::LatencyRule;

    fn egress(concurrency: ConcurrencyConfig) -> Egress {
        let mut config = EgressConfig::new("test");
        config.concurrency = concurrency;
        Egress::new(config).expect("a valid config")
    }

    fn concurrency(initial: u32, max: u32) -> ConcurrencyConfig {
        ConcurrencyConfig {
            initial,
            min: 1,
            max,
            // Every success counted raises the limit by 1.
            successes_per_increase: Some(1),
            decrease_cooldown: Duration::ZERO,
            ..ConcurrencyConfig::default()
        }
    }

    fn job() -> Job {
        Job::new(&http::Method::POST, 100)
    }

    /// An attempt answered 200 whose body streams: its settlement.
    async fn stream<'a>(
        egress: &'a Egress,
        job: &'a Job,
    ) -> Settlement<'a, MemoryStore<TokioClock>> {
        let attempt = egress.call(job).attempt().await.expect("an attempt");
        let report = attempt
            .answered(StatusCode::OK, &HeaderMap::new(), None)
            .await;
        assert_eq!(report.failure, None);
        report.settlement.expect("a stream has a settlement")
    }

    #[tokio::test(start_paused = true)]
    async fn a_streams_slot_is_held_until_it_ends_and_given_back_once() {
        let egress = egress(concurrency(2, 2));
        let job = job();
        let a = stream(&egress, &job).await;
        let b = stream(&egress, &job).await;
        assert!(a.holds_slot() && b.holds_slot());
        assert_eq!(egress.stats().in_flight, 2, "both streams hold their slot");
        let mut call = egress.call(&job);
        let third = tokio::time::timeout(Duration::from_secs(1), call.attempt()).await;
        assert!(third.is_err(), "no third call while two stream");
        // Settled, then dropped: one slot back, not two (b still holds its own).
        a.settle_to(Some(10)).await;
        assert_eq!(egress.stats().in_flight, 1);
        let c = stream(&egress, &job).await;
        assert_eq!(egress.stats().in_flight, 2);
        // Broken off, then dropped: once.
        c.broke_off(ErrorClass::ConnectionReset, None).await;
        assert_eq!(egress.stats().in_flight, 1);
        // Dropped unsettled (the reader went away): given back all the same.
        drop(b);
        assert_eq!(egress.stats().in_flight, 0);
        let d = stream(&egress, &job).await;
        drop(d);
        assert_eq!(egress.stats().in_flight, 0);
        // An answer read whole holds nothing past its report.
        let attempt = egress.call(&job).attempt().await.expect("an attempt");
        let report = attempt
            .answered(StatusCode::OK, &HeaderMap::new(), Some(b"{}"))
            .await;
        assert!(report.settlement.as_ref().is_some_and(|s| !s.holds_slot()));
        assert_eq!(egress.stats().in_flight, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_is_judged_when_it_ends() {
        let egress = egress(concurrency(1, 4));
        let limit = || egress.stats().concurrency_limit;
        let job = job();
        let s = stream(&egress, &job).await;
        assert_eq!(limit(), 1, "nothing learned at the head");
        s.settle_to(None).await;
        assert_eq!(limit(), 2, "a success at its end");
        let s = stream(&egress, &job).await;
        s.broke_off(ErrorClass::Timeout, None).await;
        assert_eq!(limit(), 1, "a stream that timed out is congestion");
        let s = stream(&egress, &job).await;
        drop(s);
        assert_eq!(limit(), 1, "a stream its reader left says nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn a_streams_latency_is_the_whole_stream() {
        let egress = egress(ConcurrencyConfig {
            latency: Some(LatencyRule { tolerance: 2.0 }),
            ..concurrency(4, 4)
        });
        let limit = || egress.stats().concurrency_limit;
        let job = job();
        // Two streams of 100 ms: the baseline.
        for _ in 0..2 {
            let s = stream(&egress, &job).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            s.settle_to(None).await;
        }
        assert_eq!(limit(), 4);
        // A head as fast as ever, then a stream ten times as long: slow.
        let s = stream(&egress, &job).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        s.settle_to(None).await;
        assert_eq!(limit(), 3, "1 s > 2 × the 100 ms baseline");
    }
}
