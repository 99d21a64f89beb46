//! Concurrency: leases on in-flight work, each expiring after `period` if never released.
//!
//! The policy `limit/period` reads "at most `limit` units in flight; a lease nobody
//! releases frees itself after `period`". Every admission takes a lease and its ticket
//! names it: refunding the ticket's whole cost (a cancel) releases the lease. A plain check
//! whose ticket is dropped holds its lease until expiry.
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

/// Whether `lease` still holds its units at `now`. An expiry saturated at [`Nanos::MAX`]
/// (a lease taken within one period of the end of time) never passes: its true expiry
/// lies beyond the last representable instant.
fn live(lease: &Lease, now: Nanos) -> bool {
    lease.expires_at > now || lease.expires_at == Nanos::MAX
}

fn in_flight(state: &LeaseState, now: Nanos) -> u64 {
    state
        .leases
        .iter()
        .filter(|lease| live(lease, now))
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
        let last_expiry = state.leases.iter().map(|lease| lease.expires_at).max();
        let reset_after = last_expiry.map_or(Duration::ZERO, |at| until(at, now));
        if !policy.admits_cost(cost) {
            return Decision::exceeds_capacity(limit, remaining, reset_after);
        }
        if cost > 0 && state.next_id.max(now.as_u64()) == u64::MAX {
            // Lease ids start at `now`; at the end of time none is left to hand out, and
            // a repeated id would let one ticket release another's lease.
            return Decision::exceeds_capacity(limit, remaining, reset_after);
        }
        if cost <= remaining {
            let reset_after = if cost == 0 {
                reset_after
            } else {
                reset_after.max(Duration::from_nanos(policy.period_nanos()))
            };
            return Decision::allow(limit, remaining - cost, reset_after);
        }
        // The latest we may have to wait: until enough leases expire (releases come sooner).
        let mut unexpired: Vec<&Lease> = state
            .leases
            .iter()
            .filter(|lease| live(lease, now))
            .collect();
        unexpired.sort_by_key(|lease| lease.expires_at);
        let mut still_used = used;
        let mut retry_at = now;
        for lease in unexpired {
            still_used = still_used.saturating_sub(lease.cost);
            retry_at = lease.expires_at;
            if still_used.saturating_add(cost) <= limit {
                break;
            }
        }
        Decision::deny(limit, remaining, reset_after, until(retry_at, now))
    }

    fn apply(policy: &Policy, state: &mut LeaseState, cost: u64, _: Nanos, now: Nanos) -> Ticket {
        state.leases.retain(|lease| live(lease, now));
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
        state.leases.retain(|lease| live(lease, now));
        if let Some(i) = find(state, ticket.lease) {
            let lease = &mut state.leases[i];
            // Giving back all the ticket took releases the lease, including units a settle
            // charged on top of it.
            lease.cost = if amount >= ticket.cost {
                0
            } else {
                lease.cost.saturating_sub(amount)
            };
            if lease.cost == 0 {
                state.leases.swap_remove(i);
            }
        }
    }

    fn charge(_: &Policy, state: &mut LeaseState, ticket: &Ticket, amount: u64, now: Nanos) {
        state.leases.retain(|lease| live(lease, now));
        if let Some(i) = find(state, ticket.lease) {
            let lease = &mut state.leases[i];
            lease.cost = lease.cost.saturating_add(amount);
        }
    }

    /// The last lease's expiry, but never before `next_id`: lease ids start at `now`, so
    /// a state may only be dropped once `now` has passed every id it handed out, or a new
    /// state could hand out an id that a stale ticket still names.
    fn expires_at(_: &Policy, state: &LeaseState) -> Nanos {
        let last_lease = state.leases.iter().map(|lease| lease.expires_at).max();
        last_lease
            .unwrap_or(Nanos::ZERO)
            .max(Nanos::new(state.next_id))
    }
}
