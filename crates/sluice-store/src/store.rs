//! The one contract every store implements.

use std::future::Future;
use std::time::Duration;

use sluice_core::{Decision, Key, Nanos, Policy, Ticket, Verdict};

/// What a limit decides when the shared store cannot be asked (it failed, timed out, or
/// its circuit breaker is open). Only a store that wraps another, like
/// [`FallbackStore`](crate::FallbackStore), acts on it; every other store ignores it.
///
/// Each decision made under a failure policy is marked
/// [`degraded`](sluice_core::Decision::degraded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FailurePolicy {
    /// Allow: availability over accuracy. The decision reports the whole capacity as
    /// remaining (nothing is counted meanwhile). A cost beyond the limit's capacity is
    /// still refused, as any store would.
    FailOpen,
    /// Refuse: accuracy over availability, for limits that protect something that must
    /// never be overrun. `retry_after` is when the shared store may be asked again.
    FailClosed,
    /// Decide from the local (secondary) store meanwhile: each instance enforces the limit
    /// on its own, so together they may admit up to the limit times the number of
    /// instances. The default.
    #[default]
    Local,
}

/// One limit a request is checked against: which key's state, under which policy, and
/// what to decide when the shared store cannot be asked.
///
/// Limits share a state only if they have the same key, algorithm and period: `10/s` and
/// `1000/h` on one user count separately.
#[derive(Clone, Copy, Debug)]
pub struct Limit<'a> {
    /// Whose state.
    pub key: &'a Key,
    /// How it counts.
    pub policy: &'a Policy,
    /// What to decide when the shared store fails (see [`FailurePolicy`]).
    pub on_failure: FailurePolicy,
}

impl<'a> Limit<'a> {
    /// The limit `policy` on `key`, falling back to the local store when the shared store
    /// fails ([`FailurePolicy::Local`]).
    pub const fn new(key: &'a Key, policy: &'a Policy) -> Self {
        Self {
            key,
            policy,
            on_failure: FailurePolicy::Local,
        }
    }

    /// The same limit with another failure policy.
    #[must_use]
    pub const fn on_failure(self, on_failure: FailurePolicy) -> Self {
        Self { on_failure, ..self }
    }
}

/// Capacity a reservation took on one limit, enough to give it back or settle it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    /// The limit's key.
    pub key: Key,
    /// The limit's policy.
    pub policy: Policy,
    /// What was taken.
    pub ticket: Ticket,
}

/// The answer to a reservation over one or several limits, all or nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// Allowed when every limit can supply the units within the maximum wait.
    pub verdict: Verdict,
    /// The instant all the units are available, on the store's timeline.
    pub ready_at: Nanos,
    /// How long after the reservation was made that is: wait this long, then proceed.
    pub wait: Duration,
    /// What was taken, one per limit; empty when refused.
    pub holds: Vec<Hold>,
    /// Made without the shared store: its holds live in a
    /// [`FallbackStore`](crate::FallbackStore)'s secondary (local) store, which is where
    /// that store sends its cancel and settle, and `ready_at` is on the secondary's
    /// timeline. Always false from a store that does not wrap another.
    pub degraded: bool,
}

impl Reservation {
    /// The reservation for `limits` given their all-or-nothing `verdict` and the ticket each
    /// limit took (`None` where it took nothing), as decided at `now`: it holds the tickets
    /// only if granted, and is ready when the last of them is.
    pub fn new(
        limits: &[Limit<'_>],
        verdict: Verdict,
        tickets: Vec<Option<Ticket>>,
        now: Nanos,
    ) -> Self {
        let holds: Vec<Hold> = if verdict.allowed {
            limits
                .iter()
                .zip(tickets)
                .filter_map(|(limit, ticket)| {
                    ticket.map(|ticket| Hold {
                        key: limit.key.clone(),
                        policy: *limit.policy,
                        ticket,
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        let ready_at = holds.iter().map(|h| h.ticket.at).max().unwrap_or(now);
        Self {
            verdict,
            ready_at,
            wait: ready_at.saturating_since(now),
            holds,
            degraded: false,
        }
    }

    /// Whether the reservation was granted.
    pub fn granted(&self) -> bool {
        self.verdict.allowed
    }
}

/// Where limiter state lives, and the operations on it.
///
/// Every operation is atomic per call: a request checked against several limits is
/// debited on all of them or on none, even with other callers racing on the same keys.
/// Over the limit is an `Ok` decision; `Err` means the store itself failed (e.g. Redis
/// unreachable). Each store owns its timeline (a [`Clock`](sluice_core::Clock) or Redis
/// `TIME`), so callers never pass `now`.
///
/// Every implementation must pass [`conformance`](crate::conformance) (feature
/// `conformance`).
pub trait Store: Send + Sync + 'static {
    /// What can go wrong in the store itself.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Checks `cost` units against one limit and debits them if allowed.
    fn check(
        &self,
        limit: Limit<'_>,
        cost: u64,
    ) -> impl Future<Output = Result<Decision, Self::Error>> + Send;

    /// Checks `cost` units against every limit; debits all of them only if all allow.
    fn check_all(
        &self,
        limits: &[Limit<'_>],
        cost: u64,
    ) -> impl Future<Output = Result<Verdict, Self::Error>> + Send;

    /// The limit's current state, as a check of zero units decides it: `remaining` is what
    /// is left now. Debits nothing.
    fn peek(&self, limit: Limit<'_>) -> impl Future<Output = Result<Decision, Self::Error>> + Send;

    /// Takes `cost` units on every limit for the earliest instant all of them can supply
    /// them, if that is at most `max_wait` away; otherwise takes nothing.
    fn reserve(
        &self,
        limits: &[Limit<'_>],
        cost: u64,
        max_wait: Duration,
    ) -> impl Future<Output = Result<Reservation, Self::Error>> + Send;

    /// Gives back everything `reservation` took (releases its leases).
    fn cancel(
        &self,
        reservation: &Reservation,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Corrects what `reservation` took to `actual` units per limit: refunds an estimate
    /// that was too high, charges one that was too low.
    fn settle(
        &self,
        reservation: &Reservation,
        actual: u64,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Forgets the state of one limit, as if nobody had used it.
    fn reset(&self, limit: Limit<'_>) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// This store's synchronous twin, when it decides without waiting on anything (the
    /// in-memory store): a caller on a hot path (sluice-tower's layer) then decides in
    /// place, with no future to build or box. `None` (the default) for a store that does
    /// I/O; the answers are the same either way.
    fn immediate(&self) -> Option<&dyn Immediate> {
        None
    }
}

/// The synchronous operations of a store that never waits (see [`Store::immediate`]).
/// Each is atomic and decides exactly as the [`Store`] method of the same name.
pub trait Immediate: Send + Sync {
    /// [`Store::check`], decided now.
    fn check_now(&self, limit: Limit<'_>, cost: u64) -> Decision;

    /// [`Store::check_all`], decided now.
    fn check_all_now(&self, limits: &[Limit<'_>], cost: u64) -> Verdict;

    /// [`Store::reserve`], decided now.
    fn reserve_now(&self, limits: &[Limit<'_>], cost: u64, max_wait: Duration) -> Reservation;

    /// [`Store::cancel`], done now.
    fn cancel_now(&self, reservation: &Reservation);
}
