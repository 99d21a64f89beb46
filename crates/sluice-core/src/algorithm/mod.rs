//! The algorithms: stateless functions over a compact state, one module each.
//!
//! Every algorithm follows one contract, [`Algorithm`], so that a store holds a table of
//! `A::State` per algorithm and never knows how any of them counts. Deciding and debiting
//! are separate steps ([`Algorithm::decide`] then [`Algorithm::apply`]) so that a request
//! checked against several limits can be decided everywhere before it is debited anywhere.

mod concurrency;
mod gcra;
mod log;
mod window;

pub use concurrency::{Concurrency, Lease, LeaseState};
pub use gcra::{Gcra, GcraState};
pub use log::{LogState, SlidingLog};
pub use window::{FixedWindow, SlidingWindow, WindowState};

use std::fmt::Debug;
use std::time::Duration;

use crate::decision::{Decision, Plan, Ticket};
use crate::policy::Policy;
use crate::time::Nanos;

/// A rate limiting algorithm as pure functions of (policy, state, cost, now).
///
/// `State::default()` is a limit nobody has used. A state whose
/// [`expires_at`](Algorithm::expires_at) has passed decides exactly like the default, so
/// a store may drop it.
pub trait Algorithm {
    /// What the algorithm remembers per key.
    type State: Clone + Debug + Default + PartialEq + Send + Sync + 'static;

    /// What checking `cost` units at `now` would decide. Changes nothing.
    fn decide(policy: &Policy, state: &Self::State, cost: u64, now: Nanos) -> Decision;

    /// Debits `cost` units available at `ready_at` (`now` for a check). Call only after
    /// [`decide`](Algorithm::decide) or [`plan`](Algorithm::plan) allowed them.
    fn apply(
        policy: &Policy,
        state: &mut Self::State,
        cost: u64,
        ready_at: Nanos,
        now: Nanos,
    ) -> Ticket;

    /// What reserving `cost` units for the earliest instant they are available would
    /// decide, refusing if that instant is more than `max_wait` away. Only GCRA can
    /// promise future capacity; the other algorithms reserve now or refuse.
    fn plan(
        policy: &Policy,
        state: &Self::State,
        cost: u64,
        now: Nanos,
        max_wait: Duration,
    ) -> Plan {
        let _ = max_wait;
        Plan {
            decision: Self::decide(policy, state, cost, now),
            ready_at: now,
        }
    }

    /// Gives back `amount` of the units `ticket` took (a cancel gives back `ticket.cost`;
    /// for a lease that releases it). Never leaves more capacity than a fresh limit has.
    ///
    /// Callers give back at most `ticket.cost` and refund a ticket once: the state does not
    /// remember tickets, so a second cancel of the same ticket would free units other
    /// requests hold.
    fn refund(policy: &Policy, state: &mut Self::State, ticket: &Ticket, amount: u64, now: Nanos);

    /// Debits `amount` more for the request `ticket` admitted, whatever the remaining
    /// capacity: the usage already happened (settling an estimate to a larger actual cost).
    fn charge(policy: &Policy, state: &mut Self::State, ticket: &Ticket, amount: u64, now: Nanos);

    /// The instant from which `state` decides like `State::default()`.
    fn expires_at(policy: &Policy, state: &Self::State) -> Nanos;

    /// Decides and, if allowed, debits: the single-limit check.
    fn check(policy: &Policy, state: &mut Self::State, cost: u64, now: Nanos) -> Decision {
        let decision = Self::decide(policy, state, cost, now);
        if decision.allowed {
            Self::apply(policy, state, cost, now, now);
        }
        decision
    }

    /// Settles a ticket to the cost actually used: refunds the difference when the
    /// estimate was too high, charges it when too low.
    fn settle(policy: &Policy, state: &mut Self::State, ticket: &Ticket, actual: u64, now: Nanos) {
        match actual.cmp(&ticket.cost) {
            std::cmp::Ordering::Less => {
                Self::refund(policy, state, ticket, ticket.cost - actual, now);
            }
            std::cmp::Ordering::Greater => {
                Self::charge(policy, state, ticket, actual - ticket.cost, now);
            }
            std::cmp::Ordering::Equal => {}
        }
    }
}

/// `a - b` as a duration, zero when `b` is later.
fn until(a: Nanos, b: Nanos) -> Duration {
    a.saturating_since(b)
}

#[cfg(test)]
mod tests;
