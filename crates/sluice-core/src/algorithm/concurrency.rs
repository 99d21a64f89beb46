//! Concurrency: leases on in-flight work, each expiring after `period` if never released.
//!
//! The policy `limit/period` reads "at most `limit` units in flight; a lease nobody
//! releases frees itself after `period`". A check takes a lease that is only freed by
//! expiry; a reservation's ticket names its lease, and cancelling it releases the lease.
//!
//! **Bound.** At every instant, the cost of admitted leases that are neither released nor
//! expired is at most `limit`.

use std::time::Duration;

use super::{Algorithm, until};
use crate::decision::{Decision, Ticket};
use crate::policy::Policy;
use crate::time::Nanos;

/// In-flight leases with expiry.
#[derive(Clone, Copy, Debug, Default)]
pub struct Concurrency;

/// One lease on in-flight capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Lease {
    /// Unique per key, also across evictions of the key's state (ids start at `now`).
    pub id: u64,
    /// Units held.
    pub cost: u64,
    /// When the lease frees itself if never released.
    pub expires_at: Nanos,
}

/// The leases of one key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseState {
    /// Leases in the order they were taken.
    pub leases: Vec<Lease>,
    /// The next lease id.
    pub next_id: u64,
}

fn in_flight(state: &LeaseState, now: Nanos) -> u64 {
    state
        .leases
        .iter()
        .filter(|lease| lease.expires_at > now)
        .fold(0u64, |sum, lease| sum.saturating_add(lease.cost))
}

fn find(state: &mut LeaseState, id: u64) -> Option<usize> {
    state.leases.iter().position(|lease| lease.id == id)
}

impl Algorithm for Concurrency {
    type State = LeaseState;

    fn decide(policy: &Policy, state: &LeaseState, cost: u64, now: Nanos) -> Decision {
        let limit = policy.limit();
        let used = in_flight(state, now);
        let remaining = limit.saturating_sub(used);
        let last_expiry = Self::expires_at(policy, state);
        let reset_after = until(last_expiry, now);
        if !policy.admits_cost(cost) {
            return Decision::exceeds_capacity(limit, remaining, reset_after);
        }
        if cost <= remaining {
            let reset_after = reset_after.max(Duration::from_nanos(policy.period_nanos()));
            return Decision::allow(limit, remaining - cost, reset_after);
        }
        // The latest we may have to wait: until enough leases expire (releases come sooner).
        let mut live: Vec<&Lease> = state.leases.iter().filter(|l| l.expires_at > now).collect();
        live.sort_by_key(|lease| lease.expires_at);
        let mut still_used = used;
        let mut retry_at = now;
        for lease in live {
            still_used = still_used.saturating_sub(lease.cost);
            retry_at = lease.expires_at;
            if still_used.saturating_add(cost) <= limit {
                break;
            }
        }
        Decision::deny(limit, remaining, reset_after, until(retry_at, now))
    }

    fn apply(policy: &Policy, state: &mut LeaseState, cost: u64, _: Nanos, now: Nanos) -> Ticket {
        state.leases.retain(|lease| lease.expires_at > now);
        if cost == 0 {
            // Nothing is held, so there is nothing to release later.
            return Ticket {
                cost,
                at: now,
                lease: 0,
            };
        }
        let id = state.next_id.max(now.as_u64()).max(1);
        state.next_id = id.saturating_add(1);
        state.leases.push(Lease {
            id,
            cost,
            expires_at: now.plus_nanos(policy.period_nanos()),
        });
        Ticket {
            cost,
            at: now,
            lease: id,
        }
    }

    fn refund(_: &Policy, state: &mut LeaseState, ticket: &Ticket, amount: u64, now: Nanos) {
        state.leases.retain(|lease| lease.expires_at > now);
        if let Some(i) = find(state, ticket.lease) {
            let lease = &mut state.leases[i];
            lease.cost = lease.cost.saturating_sub(amount);
            if lease.cost == 0 {
                state.leases.swap_remove(i);
            }
        }
    }

    fn charge(_: &Policy, state: &mut LeaseState, ticket: &Ticket, amount: u64, now: Nanos) {
        state.leases.retain(|lease| lease.expires_at > now);
        if let Some(i) = find(state, ticket.lease) {
            let lease = &mut state.leases[i];
            lease.cost = lease.cost.saturating_add(amount);
        }
    }

    fn expires_at(_: &Policy, state: &LeaseState) -> Nanos {
        state
            .leases
            .iter()
            .map(|lease| lease.expires_at)
            .max()
            .unwrap_or(Nanos::ZERO)
    }
}
