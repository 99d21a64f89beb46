//! `FallbackStore`: a shared store guarded by a timeout and a circuit breaker, and each
//! limit's [`FailurePolicy`] when that store cannot answer.
//!
//! Every call to the primary (the shared store, e.g. Redis) first asks a
//! [`CircuitBreaker`]; if the circuit is closed (or half-open with a probe slot free) the
//! call runs under a per-call timeout, and its outcome goes back to the breaker. So a dead
//! primary costs `failure_threshold` timeouts, then one lock and one clock read per call
//! until the breaker lets a probe through; a probe that succeeds closes the circuit and
//! decisions come from the primary again.
//!
//! When the primary fails (an error or a timeout) or the circuit is open, a decision
//! (check, check_all, peek, reserve) is made from each limit's
//! [`on_failure`](crate::Limit::on_failure), and marked
//! [`degraded`](sluice_core::Decision::degraded):
//!
//! - [`FailOpen`](FailurePolicy::FailOpen): allowed, with the whole capacity remaining;
//! - [`FailClosed`](FailurePolicy::FailClosed): refused, `retry_after` = until the breaker
//!   lets a probe through (or the call timeout, when it has not opened);
//! - [`Local`](FailurePolicy::Local): the secondary store's decision.
//!
//! A request over several limits stays all or nothing. If a fail-closed limit (or a cost
//! beyond a fail-open limit's capacity) already refuses it, the secondary is not debited:
//! the entries of its local limits are the secondary's [`peek`](Store::peek) (their state
//! now, as a check of zero units sees it), since the store contract has no way to decide a
//! cost without taking it. Otherwise the local limits go to the secondary in one
//! all-or-nothing call, and its answer is the verdict.
//!
//! **Reservations** remember where their holds are: a reservation made on the secondary
//! has [`Reservation::degraded`] set, and [`cancel`](Store::cancel) and
//! [`settle`](Store::settle) send it back to the secondary even after the primary has
//! recovered; every other reservation goes to the primary. All holds of one reservation
//! live in one store (fail-open limits take no hold), so one flag is enough. Do not nest
//! `FallbackStore`s: the outer one would send the inner one's degraded reservations to its
//! own secondary.
//!
//! **Errors.** Decisions never fail because of the primary: every limit has a policy. What
//! can still fail is what has no policy, and it surfaces as a [`FallbackError`]: the
//! secondary store failing (never, for [`MemoryStore`], whose error is
//! [`Infallible`](std::convert::Infallible)); cancel or settle of a reservation held by
//! the primary while the primary fails (its holds then drain or expire there on their
//! own); and [`reset`](Store::reset) (the secondary's state is forgotten in any case). The
//! caller decides whether those matter; nothing panics.
//!
//! ```
//! use sluice_core::{Key, Policy};
//! use sluice_store::{FailurePolicy, FallbackStore, Limit, MemoryStore, Store};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! // In production the primary is a shared store (Redis); any `Store` will do.
//! let store = FallbackStore::new(MemoryStore::new(), MemoryStore::new());
//! let key = Key::new("api", [("user", "42")]).unwrap();
//! let policy = Policy::parse("gcra", "100/s").unwrap();
//! let limit = Limit::new(&key, &policy).on_failure(FailurePolicy::FailOpen);
//!
//! let decision = store.check(limit, 1).await.unwrap();
//! assert!(decision.allowed && !decision.degraded);
//! assert_eq!(store.stats().primary_ok, 1);
//! # });
//! ```

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use sluice_core::{
    BreakerConfig, BreakerState, CircuitBreaker, Clock, Decision, MonotonicClock, Permit, Rejected,
    Verdict,
};

use crate::memory::MemoryStore;
use crate::store::{FailurePolicy, Limit, Reservation, Store};

/// How a [`FallbackStore`] guards its primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FallbackConfig {
    /// The longest one call to the primary may take before it counts as a failure.
    pub timeout: Duration,
    /// When the circuit around the primary opens, and for how long.
    pub breaker: BreakerConfig,
}

impl Default for FallbackConfig {
    /// A 50 ms timeout and the default breaker (opens after 5 consecutive failures, for
    /// 1 s, then probes once).
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(50),
            breaker: BreakerConfig::default(),
        }
    }
}

/// Counters of a [`FallbackStore`], since it was built. Each is read on its own, so a
/// snapshot taken while calls run may be off by the calls in flight.
///
/// Every attempt to call the primary is counted once in `primary_ok`, `primary_errors`,
/// `timeouts` or `short_circuited`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FallbackStats {
    /// Calls the primary answered in time. A call let through just before the breaker
    /// opened may still count here while the breaker stays open: read the breaker's state,
    /// not this counter, to tell whether the primary is back.
    pub primary_ok: u64,
    /// Calls the primary answered with an error.
    pub primary_errors: u64,
    /// Calls the primary did not answer within the timeout.
    pub timeouts: u64,
    /// Calls not made because the circuit was open (or every half-open probe was out).
    pub short_circuited: u64,
    /// Answers to check, check_all, peek and reserve made without the primary (one per
    /// call, however many limits it covered).
    pub degraded_decisions: u64,
}

#[derive(Debug, Default)]
struct Counters {
    primary_ok: AtomicU64,
    primary_errors: AtomicU64,
    timeouts: AtomicU64,
    short_circuited: AtomicU64,
    degraded_decisions: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a [`FallbackStore`] could not do. Decisions never fail because of the primary;
/// see the [module docs](self) for what can.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FallbackError<P, S> {
    /// The primary answered an operation that has no failure policy (cancel, settle or
    /// reset) with an error.
    #[error("primary store failed: {0}")]
    Primary(#[source] P),
    /// The primary did not answer an operation that has no failure policy within the
    /// timeout.
    #[error("primary store did not answer within {0:?}")]
    Timeout(Duration),
    /// The circuit around the primary was open, so an operation that has no failure
    /// policy was not attempted.
    #[error("primary store not called: its circuit is open (next probe in {retry_after:?})")]
    CircuitOpen {
        /// How long until the breaker lets a probe through; `None` while half-open probes
        /// are out.
        retry_after: Option<Duration>,
    },
    /// The secondary (local) store failed.
    #[error("secondary store failed: {0}")]
    Secondary(#[source] S),
}

/// Why one call to the primary produced no answer.
enum Failure<E> {
    Error(E),
    Timeout,
    Open(Rejected),
}

/// A [`Store`] that asks a shared primary store through a timeout and a circuit breaker,
/// and applies each limit's [`FailurePolicy`] (falling back to the secondary store for
/// [`Local`](FailurePolicy::Local) limits) when the primary cannot answer. See the
/// [module docs](self).
///
/// `C` is the clock of the breaker (and of `ready_at` for degraded reservations that took
/// no hold); the primary and the secondary keep their own timelines. The timeout uses
/// `tokio::time`, so calls must run inside a Tokio runtime with the time driver enabled.
pub struct FallbackStore<P: Store, S: Store = MemoryStore, C: Clock = MonotonicClock> {
    primary: P,
    secondary: S,
    clock: C,
    config: FallbackConfig,
    breaker: Mutex<CircuitBreaker>,
    counters: Counters,
}

impl<P: Store, S: Store> FallbackStore<P, S, MonotonicClock> {
    /// Guards `primary` with the default [`FallbackConfig`], falling back to `secondary`.
    pub fn new(primary: P, secondary: S) -> Self {
        Self::with_config(
            primary,
            secondary,
            FallbackConfig::default(),
            MonotonicClock::new(),
        )
    }
}

impl<P: Store, S: Store, C: Clock> FallbackStore<P, S, C> {
    /// Guards `primary` as `config` says, falling back to `secondary`; the breaker reads
    /// `clock`.
    pub fn with_config(primary: P, secondary: S, config: FallbackConfig, clock: C) -> Self {
        Self {
            primary,
            secondary,
            clock,
            config,
            breaker: Mutex::new(CircuitBreaker::new(config.breaker)),
            counters: Counters::default(),
        }
    }

    /// The primary (shared) store.
    pub fn primary(&self) -> &P {
        &self.primary
    }

    /// The secondary (local) store.
    pub fn secondary(&self) -> &S {
        &self.secondary
    }

    /// The breaker's clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The configuration.
    pub fn config(&self) -> &FallbackConfig {
        &self.config
    }

    /// Current counters.
    pub fn stats(&self) -> FallbackStats {
        let c = &self.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        FallbackStats {
            primary_ok: load(&c.primary_ok),
            primary_errors: load(&c.primary_errors),
            timeouts: load(&c.timeouts),
            short_circuited: load(&c.short_circuited),
            degraded_decisions: load(&c.degraded_decisions),
        }
    }

    /// The state of the circuit around the primary, as a call made now would find it
    /// (half-open once an open period is over).
    pub fn breaker_state(&self) -> BreakerState {
        let now = self.clock.now();
        self.lock_breaker().state_at(now)
    }

    fn lock_breaker(&self) -> MutexGuard<'_, CircuitBreaker> {
        lock(&self.breaker)
    }

    /// Makes one call to the primary through the breaker and the timeout. `call` is only
    /// invoked once the breaker lets the call through (a store may do its work as soon as
    /// the method is called, before the future is polled).
    async fn call_primary<T, F, Fut>(&self, call: F) -> Result<T, Failure<P::Error>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, P::Error>>,
    {
        let acquired = self.lock_breaker().try_acquire(self.clock.now());
        let permit = match acquired {
            Ok(permit) => PermitGuard {
                breaker: &self.breaker,
                permit: Some(permit),
            },
            Err(rejected) => {
                Counters::bump(&self.counters.short_circuited);
                return Err(Failure::Open(rejected));
            }
        };
        let outcome = tokio::time::timeout(self.config.timeout, call()).await;
        let now = self.clock.now();
        match outcome {
            Ok(Ok(value)) => {
                permit.report(|breaker, p| breaker.on_success(p, now));
                Counters::bump(&self.counters.primary_ok);
                Ok(value)
            }
            Ok(Err(error)) => {
                permit.report(|breaker, p| breaker.on_failure(p, now));
                Counters::bump(&self.counters.primary_errors);
                Err(Failure::Error(error))
            }
            Err(_elapsed) => {
                permit.report(|breaker, p| breaker.on_failure(p, now));
                Counters::bump(&self.counters.timeouts);
                Err(Failure::Timeout)
            }
        }
    }

    /// How long a fail-closed refusal tells the client to wait: until the breaker lets a
    /// probe through if it is open, else the call timeout.
    fn retry_after(&self, failure: &Failure<P::Error>) -> Duration {
        let until = match failure {
            Failure::Open(rejected) => rejected.until,
            Failure::Error(_) | Failure::Timeout => match self.lock_breaker().state() {
                BreakerState::Open { until } => Some(until),
                BreakerState::Closed | BreakerState::HalfOpen => None,
            },
        };
        let now = self.clock.now();
        until
            .map(|until| until.saturating_since(now))
            .filter(|wait| !wait.is_zero())
            .unwrap_or(self.config.timeout)
    }

    fn error(&self, failure: Failure<P::Error>) -> FallbackError<P::Error, S::Error> {
        match failure {
            Failure::Error(error) => FallbackError::Primary(error),
            Failure::Timeout => FallbackError::Timeout(self.config.timeout),
            Failure::Open(rejected) => FallbackError::CircuitOpen {
                retry_after: rejected.retry_after(self.clock.now()),
            },
        }
    }

    /// Counts one degraded answer and hands back what `failure` says to wait.
    fn degrade(&self, failure: &Failure<P::Error>) -> Duration {
        Counters::bump(&self.counters.degraded_decisions);
        self.retry_after(failure)
    }

    /// The decisions of `limits` without the primary, all or nothing; and, for a
    /// reservation, the secondary's reservation of the local limits (when it was asked).
    async fn decide_degraded(
        &self,
        limits: &[Limit<'_>],
        cost: u64,
        retry_after: Duration,
        max_wait: Option<Duration>,
    ) -> Result<(Verdict, Option<Reservation>), FallbackError<P::Error, S::Error>> {
        let by_policy: Vec<Option<Decision>> = limits
            .iter()
            .map(|&limit| policy_decision(limit, cost, retry_after))
            .collect();
        let local: Vec<Limit<'_>> = limits
            .iter()
            .filter(|limit| limit.on_failure == FailurePolicy::Local)
            .copied()
            .collect();
        let others_allow = by_policy.iter().flatten().all(|d| d.allowed);
        let mut reservation = None;
        let local_decisions = if local.is_empty() {
            Vec::new()
        } else if !others_allow {
            // Refused already: look at the local limits without debiting them.
            let mut seen = Vec::with_capacity(local.len());
            for &limit in &local {
                seen.push(
                    self.secondary
                        .peek(limit)
                        .await
                        .map_err(FallbackError::Secondary)?,
                );
            }
            seen
        } else if let Some(max_wait) = max_wait {
            let r = self
                .secondary
                .reserve(&local, cost, max_wait)
                .await
                .map_err(FallbackError::Secondary)?;
            let decisions = r.verdict.decisions.clone();
            reservation = Some(r);
            decisions
        } else {
            self.secondary
                .check_all(&local, cost)
                .await
                .map_err(FallbackError::Secondary)?
                .decisions
        };
        let mut local_decisions = local_decisions.into_iter();
        let decisions = limits
            .iter()
            .zip(by_policy)
            .map(|(limit, decided)| {
                decided
                    .or_else(|| local_decisions.next())
                    // Only a secondary that broke its contract (fewer decisions than
                    // limits) leaves a gap: refuse rather than admit what nobody decided.
                    .unwrap_or_else(|| {
                        let capacity = limit.policy.burst();
                        Decision::deny(capacity, 0, retry_after, retry_after)
                    })
                    .into_degraded()
            })
            .collect();
        Ok((Verdict::from_decisions(decisions), reservation))
    }
}

/// What `limit`'s failure policy decides for `cost` without any store; `None` for
/// [`FailurePolicy::Local`], which asks the secondary.
fn policy_decision(limit: Limit<'_>, cost: u64, retry_after: Duration) -> Option<Decision> {
    let policy = limit.policy;
    let capacity = policy.burst();
    let fits = policy.admits_cost(cost);
    let decision = match limit.on_failure {
        FailurePolicy::Local => return None,
        FailurePolicy::FailOpen if fits => Decision::allow(capacity, capacity, Duration::ZERO),
        FailurePolicy::FailOpen => Decision::exceeds_capacity(capacity, capacity, Duration::ZERO),
        FailurePolicy::FailClosed if fits => Decision::deny(capacity, 0, retry_after, retry_after),
        FailurePolicy::FailClosed => Decision::exceeds_capacity(capacity, 0, retry_after),
    };
    Some(decision.into_degraded())
}

/// A permit out on a call to the primary. Reporting consumes it; dropping it unreported
/// (the caller's future was dropped mid-call) releases it, so a cancelled half-open probe
/// does not hold its slot forever.
struct PermitGuard<'a> {
    breaker: &'a Mutex<CircuitBreaker>,
    permit: Option<Permit>,
}

impl PermitGuard<'_> {
    fn report(mut self, outcome: impl FnOnce(&mut CircuitBreaker, Permit)) {
        if let Some(permit) = self.permit.take() {
            outcome(&mut lock(self.breaker), permit);
        }
    }
}

impl Drop for PermitGuard<'_> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            lock(self.breaker).release(permit);
        }
    }
}

/// Locks the breaker. Its methods cannot panic, so a poisoned lock still holds a sound
/// state.
fn lock(breaker: &Mutex<CircuitBreaker>) -> MutexGuard<'_, CircuitBreaker> {
    breaker.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<P: Store, S: Store, C: Clock> Store for FallbackStore<P, S, C> {
    type Error = FallbackError<P::Error, S::Error>;

    async fn check(&self, limit: Limit<'_>, cost: u64) -> Result<Decision, Self::Error> {
        let failure = match self.call_primary(|| self.primary.check(limit, cost)).await {
            Ok(decision) => return Ok(decision),
            Err(failure) => failure,
        };
        let retry_after = self.degrade(&failure);
        match policy_decision(limit, cost, retry_after) {
            Some(decision) => Ok(decision),
            None => self
                .secondary
                .check(limit, cost)
                .await
                .map(Decision::into_degraded)
                .map_err(FallbackError::Secondary),
        }
    }

    async fn check_all(&self, limits: &[Limit<'_>], cost: u64) -> Result<Verdict, Self::Error> {
        let failure = match self
            .call_primary(|| self.primary.check_all(limits, cost))
            .await
        {
            Ok(verdict) => return Ok(verdict),
            Err(failure) => failure,
        };
        let retry_after = self.degrade(&failure);
        let (verdict, _) = self
            .decide_degraded(limits, cost, retry_after, None)
            .await?;
        Ok(verdict)
    }

    async fn peek(&self, limit: Limit<'_>) -> Result<Decision, Self::Error> {
        let failure = match self.call_primary(|| self.primary.peek(limit)).await {
            Ok(decision) => return Ok(decision),
            Err(failure) => failure,
        };
        let retry_after = self.degrade(&failure);
        match policy_decision(limit, 0, retry_after) {
            Some(decision) => Ok(decision),
            None => self
                .secondary
                .peek(limit)
                .await
                .map(Decision::into_degraded)
                .map_err(FallbackError::Secondary),
        }
    }

    async fn reserve(
        &self,
        limits: &[Limit<'_>],
        cost: u64,
        max_wait: Duration,
    ) -> Result<Reservation, Self::Error> {
        let reserved = self
            .call_primary(|| self.primary.reserve(limits, cost, max_wait))
            .await;
        let failure = match reserved {
            Ok(reservation) => return Ok(reservation),
            Err(failure) => failure,
        };
        let retry_after = self.degrade(&failure);
        let (verdict, local) = self
            .decide_degraded(limits, cost, retry_after, Some(max_wait))
            .await?;
        let reservation = match local {
            Some(local) => Reservation {
                verdict,
                degraded: true,
                ..local
            },
            // No local limit, or refused before the secondary was asked: nothing held.
            None => Reservation {
                verdict,
                ready_at: self.clock.now(),
                wait: Duration::ZERO,
                holds: Vec::new(),
                degraded: true,
            },
        };
        Ok(reservation)
    }

    async fn cancel(&self, reservation: &Reservation) -> Result<(), Self::Error> {
        if reservation.degraded {
            return self
                .secondary
                .cancel(reservation)
                .await
                .map_err(FallbackError::Secondary);
        }
        self.call_primary(|| self.primary.cancel(reservation))
            .await
            .map_err(|failure| self.error(failure))
    }

    async fn settle(&self, reservation: &Reservation, actual: u64) -> Result<(), Self::Error> {
        if reservation.degraded {
            return self
                .secondary
                .settle(reservation, actual)
                .await
                .map_err(FallbackError::Secondary);
        }
        self.call_primary(|| self.primary.settle(reservation, actual))
            .await
            .map_err(|failure| self.error(failure))
    }

    /// Forgets the limit's state on both stores. The secondary is reset even when the
    /// primary fails; the primary's error (if any) is reported first.
    async fn reset(&self, limit: Limit<'_>) -> Result<(), Self::Error> {
        let local = self.secondary.reset(limit).await;
        self.call_primary(|| self.primary.reset(limit))
            .await
            .map_err(|failure| self.error(failure))?;
        local.map_err(FallbackError::Secondary)
    }
}

impl<P, S, C> fmt::Debug for FallbackStore<P, S, C>
where
    P: Store + fmt::Debug,
    S: Store + fmt::Debug,
    C: Clock + fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackStore")
            .field("primary", &self.primary)
            .field("secondary", &self.secondary)
            .field("clock", &self.clock)
            .field("config", &self.config)
            .field("breaker", &*self.lock_breaker())
            .field("stats", &self.stats())
            .finish()
    }
}
