//! Table-driven tests of every algorithm at exact instants.
//!
//! Each test is a script of [`Row`]s — instant, cost, and the expected decision (allowed,
//! remaining, and `reset_after` when allowed or `retry_after` when refused) — that [`run`]
//! plays in order against one limit. `run` also checks on every row that `check` agrees
//! with `decide`, that an admission debits exactly what `apply` debits, and that a refusal
//! leaves the state untouched.
//!
//! One module per algorithm covers its window edges, refills, costs, reservations and
//! refunds; [`edges`] covers what every algorithm must survive: a clock that does not
//! move, a clock that steps backwards, and instants near [`Nanos::MAX`].

mod concurrency;
mod edges;
mod fixed_window;
mod gcra;
mod sliding_log;
mod sliding_window;

use super::Algorithm;
use crate::decision::{Decision, Ticket};
use crate::policy::{AlgorithmKind, Policy};
use crate::time::Nanos;

const NS: u64 = 1;
const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;

/// What a row expects of its decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Allowed, `remaining` left, full again after `reset_after` nanoseconds.
    Pass { remaining: u64, reset_after: u64 },
    /// Refused with `remaining` left; the same request passes after `retry_after`.
    Wait { remaining: u64, retry_after: u64 },
    /// Refused for good (the cost exceeds the capacity); no `retry_after`.
    Never { remaining: u64 },
}

/// One step of a script: `cost` units checked at instant `at` (nanoseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Row {
    at: u64,
    cost: u64,
    expect: Expect,
}

const fn pass(at: u64, cost: u64, remaining: u64, reset_after: u64) -> Row {
    Row {
        at,
        cost,
        expect: Expect::Pass {
            remaining,
            reset_after,
        },
    }
}

const fn wait(at: u64, cost: u64, remaining: u64, retry_after: u64) -> Row {
    Row {
        at,
        cost,
        expect: Expect::Wait {
            remaining,
            retry_after,
        },
    }
}

const fn never(at: u64, cost: u64, remaining: u64) -> Row {
    Row {
        at,
        cost,
        expect: Expect::Never { remaining },
    }
}

fn policy(kind: AlgorithmKind, rate: &str) -> Policy {
    Policy::new(kind, rate.parse().unwrap())
}

/// What `decision` shows in the terms of a row.
fn observed(decision: &Decision) -> Expect {
    let nanos = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap();
    match (decision.allowed, decision.retry_after) {
        (true, _) => Expect::Pass {
            remaining: decision.remaining,
            reset_after: nanos(decision.reset_after),
        },
        (false, Some(retry_after)) => Expect::Wait {
            remaining: decision.remaining,
            retry_after: nanos(retry_after),
        },
        (false, None) => Expect::Never {
            remaining: decision.remaining,
        },
    }
}

/// Plays `rows` in order against `state` and returns the tickets of the admitted rows.
fn run<A: Algorithm>(policy: &Policy, state: &mut A::State, rows: &[Row]) -> Vec<Ticket> {
    let mut tickets = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let now = Nanos::new(row.at);
        let before = state.clone();
        let decision = A::decide(policy, state, row.cost, now);
        assert_eq!(
            observed(&decision),
            row.expect,
            "row {i} of {policy}: {row:?} got {decision:?}"
        );
        assert_eq!(decision.limit, policy.burst(), "row {i}: limit");
        assert_eq!(
            decision.cost_exceeds_capacity,
            matches!(row.expect, Expect::Never { .. }),
            "row {i}: cost_exceeds_capacity"
        );
        let mut checked = before.clone();
        assert_eq!(
            A::check(policy, &mut checked, row.cost, now),
            decision,
            "row {i}: check disagrees with decide"
        );
        if decision.allowed {
            let ticket = A::apply(policy, state, row.cost, now, now);
            assert_eq!((ticket.cost, ticket.at), (row.cost, now), "row {i}: ticket");
            assert_eq!(*state, checked, "row {i}: check debits what apply debits");
            tickets.push(ticket);
        } else {
            assert_eq!(*state, before, "row {i}: a refusal changes nothing");
            assert_eq!(checked, before, "row {i}: a refused check changes nothing");
        }
    }
    tickets
}

/// Plays `rows` against a fresh limit.
fn run_fresh<A: Algorithm>(policy: &Policy, rows: &[Row]) -> (A::State, Vec<Ticket>) {
    let mut state = A::State::default();
    let tickets = run::<A>(policy, &mut state, rows);
    (state, tickets)
}
