//! Sliding log: exact counting by remembering every admission within one period.
//!
//! **Bound.** For every instant `t`, the cost admitted in the half-open interval
//! `(t − period, t]` is at most `limit`. The price is memory: up to `limit` entries per key
//! (admissions at the same instant share one entry).

use std::collections::VecDeque;

use super::{Algorithm, until};
use crate::decision::{Decision, Ticket};
use crate::policy::Policy;
use crate::time::Nanos;

/// Exact sliding log.
#[derive(Clone, Copy, Debug, Default)]
pub struct SlidingLog;

/// Admissions still inside the window, oldest first, as `(instant, cost)`, with their sum
/// kept alongside so that a decision costs O(1) amortised, not O(entries).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogState {
    /// Sorted by instant; one entry per instant.
    entries: VecDeque<(Nanos, u64)>,
    /// The sum of every entry's cost.
    total: u64,
}

impl LogState {
    /// The admissions remembered, oldest first, as `(instant, cost)`; one entry per
    /// instant. Entries that have slid out of the window may linger until the next write.
    pub fn entries(&self) -> &VecDeque<(Nanos, u64)> {
        &self.entries
    }
}

/// Whether an admission at `at` still counts at `now`: `now − at < period`. Entries after
/// `now` (a clock that stepped back) count too. Computed as a difference, not as
/// `at + period > now`, which saturates (and forgets entries) at the end of time.
fn live(policy: &Policy, at: Nanos, now: Nanos) -> bool {
    now.as_u64().saturating_sub(at.as_u64()) < policy.period_nanos()
}

/// The cost of the live entries: the total less the expired prefix (entries are sorted,
/// and every write prunes, so that prefix is short).
fn used(policy: &Policy, state: &LogState, now: Nanos) -> u64 {
    let expired = state
        .entries
        .iter()
        .take_while(|(at, _)| !live(policy, *at, now))
        .fold(0u64, |sum, (_, cost)| sum.saturating_add(*cost));
    state.total.saturating_sub(expired)
}

fn prune(policy: &Policy, state: &mut LogState, now: Nanos) {
    while let Some(&(at, cost)) = state.entries.front() {
        if live(policy, at, now) {
            break;
        }
        state.total = state.total.saturating_sub(cost);
        state.entries.pop_front();
    }
}

impl Algorithm for SlidingLog {
    type State = LogState;

    fn decide(policy: &Policy, state: &LogState, cost: u64, now: Nanos) -> Decision {
        let limit = policy.limit();
        let period = policy.period_nanos();
        let used = used(policy, state, now);
        let remaining = limit.saturating_sub(used);
        let newest = state.entries.back().map(|(at, _)| *at);
        let reset_after = newest
            .filter(|at| live(policy, *at, now))
            .map_or(std::time::Duration::ZERO, |at| {
                until(at.plus_nanos(period), now)
            });
        if !policy.admits_cost(cost) {
            return Decision::exceeds_capacity(limit, remaining, reset_after);
        }
        if cost <= remaining {
            let reset_after = if cost == 0 {
                reset_after
            } else {
                until(now.plus_nanos(period), now)
            };
            return Decision::allow(limit, remaining - cost, reset_after);
        }
        // Walk the live entries oldest first until enough has slid out.
        let mut still_used = used;
        let mut retry_at = now;
        for &(at, entry_cost) in &state.entries {
            if !live(policy, at, now) {
                continue;
            }
            still_used = still_used.saturating_sub(entry_cost);
            retry_at = at.plus_nanos(period);
            if still_used.saturating_add(cost) <= limit {
                break;
            }
        }
        Decision::deny(limit, remaining, reset_after, until(retry_at, now))
    }

    fn apply(policy: &Policy, state: &mut LogState, cost: u64, _: Nanos, now: Nanos) -> Ticket {
        prune(policy, state, now);
        add_at(state, now, cost);
        Ticket {
            cost,
            at: now,
            lease: 0,
        }
    }

    fn refund(policy: &Policy, state: &mut LogState, ticket: &Ticket, amount: u64, now: Nanos) {
        prune(policy, state, now);
        if let Ok(i) = state
            .entries
            .binary_search_by_key(&ticket.at, |(at, _)| *at)
        {
            let cost = &mut state.entries[i].1;
            let given_back = amount.min(*cost);
            *cost -= given_back;
            state.total -= given_back;
            if *cost == 0 {
                state.entries.remove(i);
            }
        }
    }

    fn charge(policy: &Policy, state: &mut LogState, ticket: &Ticket, amount: u64, now: Nanos) {
        prune(policy, state, now);
        // Usage that has already slid out of the window limits nothing any more.
        if live(policy, ticket.at, now) {
            add_at(state, ticket.at, amount);
        }
    }

    fn expires_at(policy: &Policy, state: &LogState) -> Nanos {
        state
            .entries
            .back()
            .map_or(Nanos::ZERO, |(at, _)| at.plus_nanos(policy.period_nanos()))
    }
}

/// Adds `cost` at instant `at`, keeping entries sorted and one per instant.
fn add_at(state: &mut LogState, at: Nanos, cost: u64) {
    if cost == 0 {
        return;
    }
    state.total = state.total.saturating_add(cost);
    match state.entries.binary_search_by_key(&at, |(t, _)| *t) {
        Ok(i) => state.entries[i].1 = state.entries[i].1.saturating_add(cost),
        Err(i) => state.entries.insert(i, (at, cost)),
    }
}
