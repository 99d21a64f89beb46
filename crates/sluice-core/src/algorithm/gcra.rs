//! GCRA: a token bucket kept as one timestamp.
//!
//! With emission interval `T = ceil(period / limit)` and capacity `C = burst × T`, the
//! state is the theoretical arrival time `tat`: the instant the bucket is full again. A
//! request of `cost` is admitted at `now` when `max(tat, now) + cost × T − now ≤ C`.
//!
//! **Bound.** Over any closed interval of length `L`, the admitted cost is at most
//! `burst + L / T` (integer division), hence never more than `burst + L × limit / period`.
//! The bound counts admissions net of refunds: a refund gives capacity back on purpose
//! (even for units that had already refilled), while charges only lower what is admitted.

use std::time::Duration;

use super::{Algorithm, until};
use crate::decision::{Decision, Plan, Ticket};
use crate::policy::Policy;
use crate::time::Nanos;

/// The GCRA algorithm (token bucket; leaky bucket as a meter).
#[derive(Clone, Copy, Debug, Default)]
pub struct Gcra;

/// GCRA state: the theoretical arrival time. 8 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GcraState {
    /// The instant the bucket is full again; at or before `now` means full.
    pub tat: Nanos,
}

/// `(capacity C, cost × T)` in nanoseconds; both at most `MAX_SPAN_NANOS` for an
/// admissible cost, saturating otherwise.
fn spans(policy: &Policy, cost: u64) -> (u64, u64) {
    let t = policy.emission_nanos();
    (policy.burst() * t, cost.saturating_mul(t))
}

fn tokens(capacity: u64, debt: u64, t: u64) -> u64 {
    capacity.saturating_sub(debt) / t
}

impl Algorithm for Gcra {
    type State = GcraState;

    fn decide(policy: &Policy, state: &GcraState, cost: u64, now: Nanos) -> Decision {
        let t = policy.emission_nanos();
        let (capacity, increment) = spans(policy, cost);
        let base = state.tat.max(now);
        let debt = base.as_u64() - now.as_u64();
        if !policy.admits_cost(cost) {
            return Decision::exceeds_capacity(
                policy.burst(),
                tokens(capacity, debt, t),
                Duration::from_nanos(debt),
            );
        }
        if base.as_u64().checked_add(increment).is_none() {
            // The new `tat` would lie past the last representable instant: saturating it
            // would forget debt and admit without bound. Nothing can be admitted any more,
            // and no wait can help at the end of time.
            return Decision::exceeds_capacity(policy.burst(), 0, Duration::from_nanos(debt));
        }
        let debt_after = debt + increment;
        if debt_after <= capacity {
            Decision::allow(
                policy.burst(),
                tokens(capacity, debt_after, t),
                Duration::from_nanos(debt_after),
            )
        } else {
            Decision::deny(
                policy.burst(),
                tokens(capacity, debt, t),
                Duration::from_nanos(debt),
                Duration::from_nanos(debt_after - capacity),
            )
        }
    }

    fn plan(policy: &Policy, state: &GcraState, cost: u64, now: Nanos, max_wait: Duration) -> Plan {
        let decision = Self::decide(policy, state, cost, now);
        if decision.allowed || decision.cost_exceeds_capacity {
            return Plan {
                decision,
                ready_at: now,
            };
        }
        // Refused now, but the units are free once the debt drains below C − cost × T.
        let wait = decision.retry_after.unwrap_or(Duration::ZERO);
        if wait > max_wait {
            return Plan {
                decision: Decision {
                    retry_after: Some(wait - max_wait),
                    ..decision
                },
                ready_at: now,
            };
        }
        let (_, increment) = spans(policy, cost);
        let debt_after = state.tat.max(now).as_u64() - now.as_u64() + increment;
        Plan {
            decision: Decision::allow(policy.burst(), 0, Duration::from_nanos(debt_after)),
            ready_at: now + wait,
        }
    }

    fn apply(
        policy: &Policy,
        state: &mut GcraState,
        cost: u64,
        ready_at: Nanos,
        now: Nanos,
    ) -> Ticket {
        let (_, increment) = spans(policy, cost);
        state.tat = state.tat.max(now).plus_nanos(increment);
        Ticket {
            cost,
            at: ready_at,
            lease: 0,
        }
    }

    fn refund(policy: &Policy, state: &mut GcraState, _ticket: &Ticket, amount: u64, now: Nanos) {
        if state.tat <= now {
            return; // already full
        }
        let (_, give_back) = spans(policy, amount);
        state.tat = state.tat.minus_nanos(give_back).max(now);
    }

    fn charge(policy: &Policy, state: &mut GcraState, _ticket: &Ticket, amount: u64, now: Nanos) {
        let (_, extra) = spans(policy, amount);
        state.tat = state.tat.max(now).plus_nanos(extra);
    }

    fn expires_at(_policy: &Policy, state: &GcraState) -> Nanos {
        state.tat
    }
}

impl Gcra {
    /// Time until `state` is full again, as seen at `now`.
    pub fn time_to_full(state: &GcraState, now: Nanos) -> Duration {
        until(state.tat, now)
    }
}
