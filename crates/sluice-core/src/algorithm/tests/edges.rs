//! What every algorithm must survive, each checked for all five (10/s policies; for
//! concurrency 10 in flight with leases of 1 s):
//!
//! - a clock that does not move: many checks at one instant admit exactly the capacity,
//!   and every refusal after it is the same refusal;
//! - a clock that steps backwards: no panic, no fresh capacity from the step, and no more
//!   admitted than the bound allows once the clock moves on;
//! - instants near and at [`Nanos::MAX`]: no panic, no overflow, and the same decisions as
//!   anywhere else on the timeline (GCRA's own end-of-time table is in the `gcra` module);
//! - reservations on the algorithms that cannot promise future capacity: now or refused.

use std::time::Duration;

use super::{MS, NS, SEC, policy};
use crate::algorithm::{Algorithm, Concurrency, FixedWindow, Gcra, SlidingLog, SlidingWindow};
use crate::decision::Decision;
use crate::policy::{AlgorithmKind, Policy};
use crate::time::Nanos;

fn ten_per_second(kind: AlgorithmKind) -> Policy {
    policy(kind, "10/s")
}

/// Checks `cost` at `now` `times` times; returns the decisions.
fn check_repeatedly<A: Algorithm>(
    policy: &Policy,
    state: &mut A::State,
    cost: u64,
    now: u64,
    times: usize,
) -> Vec<Decision> {
    (0..times)
        .map(|_| A::check(policy, state, cost, Nanos::new(now)))
        .collect()
}

fn admitted(decisions: &[Decision]) -> usize {
    decisions.iter().filter(|d| d.allowed).count()
}

fn many_checks_at_one_instant_admit_exactly_the_capacity<A: Algorithm>(kind: AlgorithmKind) {
    let p = ten_per_second(kind);
    let mut state = A::State::default();
    let decisions = check_repeatedly::<A>(&p, &mut state, 1, 3700 * MS, 1000);
    assert!(
        decisions[..10].iter().all(|d| d.allowed),
        "{kind}: first 10"
    );
    assert_eq!(admitted(&decisions), 10, "{kind}");
    let first_refusal = decisions[10];
    assert!(
        first_refusal
            .retry_after
            .is_some_and(|r| r > Duration::ZERO)
    );
    assert!(
        decisions[10..].iter().all(|d| *d == first_refusal),
        "{kind}: every refusal at one instant is the same"
    );
}

#[test]
fn clock_that_does_not_move_admits_exactly_the_capacity() {
    many_checks_at_one_instant_admit_exactly_the_capacity::<Gcra>(AlgorithmKind::Gcra);
    many_checks_at_one_instant_admit_exactly_the_capacity::<FixedWindow>(
        AlgorithmKind::FixedWindow,
    );
    many_checks_at_one_instant_admit_exactly_the_capacity::<SlidingWindow>(
        AlgorithmKind::SlidingWindow,
    );
    many_checks_at_one_instant_admit_exactly_the_capacity::<SlidingLog>(AlgorithmKind::SlidingLog);
    many_checks_at_one_instant_admit_exactly_the_capacity::<Concurrency>(
        AlgorithmKind::Concurrency,
    );
}

/// Exhausts the limit at 5.5 s, then asks at instants up to 5.5 s earlier (the same
/// window, the previous one, the epoch): every one is refused, refunds and charges at
/// those instants do not panic.
fn stepping_back_after_exhausting_gains_nothing<A: Algorithm>(kind: AlgorithmKind) {
    let p = ten_per_second(kind);
    let mut state = A::State::default();
    let now = 5500 * MS;
    let first = check_repeatedly::<A>(&p, &mut state, 1, now, 10);
    assert_eq!(admitted(&first), 10, "{kind}");
    let ticket = A::apply(
        &p,
        &mut A::State::default(),
        1,
        Nanos::new(now),
        Nanos::new(now),
    );
    for back in [NS, 300 * MS, 600 * MS, 3 * SEC, now] {
        let then = now - back;
        let decisions = check_repeatedly::<A>(&p, &mut state, 1, then, 5);
        assert_eq!(admitted(&decisions), 0, "{kind}: stepped back {back} ns");
        assert!(decisions.iter().all(|d| d.remaining == 0), "{kind}");
        let mut scratch = state.clone();
        A::charge(&p, &mut scratch, &ticket, 1, Nanos::new(then));
        A::refund(&p, &mut scratch, &ticket, 1, Nanos::new(then));
        A::settle(&p, &mut scratch, &ticket, 3, Nanos::new(then));
    }
}

#[test]
fn clock_stepping_backwards_gains_no_capacity() {
    stepping_back_after_exhausting_gains_nothing::<Gcra>(AlgorithmKind::Gcra);
    stepping_back_after_exhausting_gains_nothing::<FixedWindow>(AlgorithmKind::FixedWindow);
    stepping_back_after_exhausting_gains_nothing::<SlidingWindow>(AlgorithmKind::SlidingWindow);
    stepping_back_after_exhausting_gains_nothing::<SlidingLog>(AlgorithmKind::SlidingLog);
    stepping_back_after_exhausting_gains_nothing::<Concurrency>(AlgorithmKind::Concurrency);
}

/// Takes 5 at 5.5 s, steps back across a window boundary to 4.9 s and takes what is
/// offered, then moves on to 5.6 s: over those 700 ms the total stays within the bound
/// (10 for windows, logs and leases; 10 + 0.7 s / 100 ms = 17 for GCRA).
fn stepping_back_then_forward_admits_at_most_the_bound<A: Algorithm>(
    kind: AlgorithmKind,
    bound: usize,
) {
    let p = ten_per_second(kind);
    let mut state = A::State::default();
    let mut total = admitted(&check_repeatedly::<A>(&p, &mut state, 1, 5500 * MS, 5));
    total += admitted(&check_repeatedly::<A>(&p, &mut state, 1, 4900 * MS, 20));
    total += admitted(&check_repeatedly::<A>(&p, &mut state, 1, 5600 * MS, 20));
    assert!(total <= bound, "{kind}: {total} admitted, bound {bound}");
    assert!(total >= 10, "{kind}: the limit still admits its capacity");
}

#[test]
fn clock_stepping_backwards_then_forward_admits_at_most_the_bound() {
    stepping_back_then_forward_admits_at_most_the_bound::<Gcra>(AlgorithmKind::Gcra, 17);
    stepping_back_then_forward_admits_at_most_the_bound::<FixedWindow>(
        AlgorithmKind::FixedWindow,
        10,
    );
    stepping_back_then_forward_admits_at_most_the_bound::<SlidingWindow>(
        AlgorithmKind::SlidingWindow,
        10,
    );
    stepping_back_then_forward_admits_at_most_the_bound::<SlidingLog>(
        AlgorithmKind::SlidingLog,
        10,
    );
    stepping_back_then_forward_admits_at_most_the_bound::<Concurrency>(
        AlgorithmKind::Concurrency,
        10,
    );
}

/// Plays the same schedule (bursts of 12 single-unit checks and a 3-unit check every
/// 100 ms for just under a second) from an ordinary instant and from `u64::MAX − 1 s`,
/// both with the same offset into the window. Returns what each decided, as
/// `(allowed, remaining)`.
fn schedule_near_and_far<A: Algorithm>(kind: AlgorithmKind) -> [Vec<(bool, u64)>; 2] {
    let p = ten_per_second(kind);
    let far = u64::MAX - SEC;
    let near = 10 * SEC + far % SEC;
    [near, far].map(|base| {
        let mut state = A::State::default();
        let mut seen = Vec::new();
        let instants = (0..10).map(|k| k * 100 * MS).chain([SEC - NS]);
        for at in instants {
            for cost in [1; 12].into_iter().chain([3]) {
                let d = A::check(&p, &mut state, cost, Nanos::new(base + at));
                seen.push((d.allowed, d.remaining));
            }
        }
        seen
    })
}

#[test]
fn near_the_end_of_time_windows_logs_and_leases_decide_as_anywhere_else() {
    let [near, far] = schedule_near_and_far::<FixedWindow>(AlgorithmKind::FixedWindow);
    assert_eq!(near, far, "fixed window");
    let [near, far] = schedule_near_and_far::<SlidingWindow>(AlgorithmKind::SlidingWindow);
    assert_eq!(near, far, "sliding window");
    let [near, far] = schedule_near_and_far::<SlidingLog>(AlgorithmKind::SlidingLog);
    assert_eq!(near, far, "sliding log");
    let [near, far] = schedule_near_and_far::<Concurrency>(AlgorithmKind::Concurrency);
    assert_eq!(near, far, "concurrency");
}

/// Checks 20 single units one nanosecond before [`Nanos::MAX`] and 20 at it: no panic,
/// and no more than the capacity over those two instants.
fn at_the_last_instant_admits_at_most_the_capacity<A: Algorithm>(kind: AlgorithmKind) -> usize {
    let p = ten_per_second(kind);
    let mut state = A::State::default();
    let before = check_repeatedly::<A>(&p, &mut state, 1, u64::MAX - 1, 20);
    let at = check_repeatedly::<A>(&p, &mut state, 1, u64::MAX, 20);
    let total = admitted(&before) + admitted(&at);
    assert!(
        total <= 10,
        "{kind}: {total} admitted at the last two instants"
    );
    assert!(at.iter().all(|d| !d.allowed || d.remaining < 10), "{kind}");
    let _ = A::expires_at(&p, &state);
    total
}

#[test]
fn at_nanos_max_no_algorithm_panics_or_admits_more_than_its_capacity() {
    // GCRA cannot record an arrival time past Nanos::MAX, so it admits nothing there.
    assert_eq!(
        at_the_last_instant_admits_at_most_the_capacity::<Gcra>(AlgorithmKind::Gcra),
        0
    );
    for total in [
        at_the_last_instant_admits_at_most_the_capacity::<FixedWindow>(AlgorithmKind::FixedWindow),
        at_the_last_instant_admits_at_most_the_capacity::<SlidingWindow>(
            AlgorithmKind::SlidingWindow,
        ),
        at_the_last_instant_admits_at_most_the_capacity::<SlidingLog>(AlgorithmKind::SlidingLog),
    ] {
        assert_eq!(total, 10);
    }
    // Lease ids start at `now`: one lease at MAX − 1 takes the last id below MAX, and no
    // unique id is left after it.
    assert_eq!(
        at_the_last_instant_admits_at_most_the_capacity::<Concurrency>(AlgorithmKind::Concurrency),
        1
    );
}

/// Reservations on an algorithm without future capacity: the same decision as a check,
/// ready now, however long the caller would wait.
fn reserves_now_or_refuses<A: Algorithm>(kind: AlgorithmKind) {
    let p = ten_per_second(kind);
    let mut state = A::State::default();
    let now = Nanos::new(SEC + 250 * MS);
    let an_hour = Duration::from_secs(3600);
    let plan = A::plan(&p, &state, 4, now, an_hour);
    assert!(plan.decision.allowed, "{kind}");
    assert_eq!(plan.ready_at, now, "{kind}");
    assert_eq!(plan.decision, A::decide(&p, &state, 4, now), "{kind}");
    let ticket = A::apply(&p, &mut state, 10, plan.ready_at, now);
    assert_eq!(ticket.at, now, "{kind}");
    let refused = A::plan(&p, &state, 1, now, an_hour);
    assert!(
        !refused.decision.allowed,
        "{kind}: no capacity now, none promised"
    );
    assert_eq!(refused.ready_at, now, "{kind}");
    assert_eq!(refused.decision, A::decide(&p, &state, 1, now), "{kind}");
    let never = A::plan(&p, &state, 11, now, an_hour);
    assert!(never.decision.cost_exceeds_capacity, "{kind}");
}

#[test]
fn only_gcra_reserves_future_capacity_the_others_reserve_now_or_refuse() {
    reserves_now_or_refuses::<FixedWindow>(AlgorithmKind::FixedWindow);
    reserves_now_or_refuses::<SlidingWindow>(AlgorithmKind::SlidingWindow);
    reserves_now_or_refuses::<SlidingLog>(AlgorithmKind::SlidingLog);
    reserves_now_or_refuses::<Concurrency>(AlgorithmKind::Concurrency);
    let p = ten_per_second(AlgorithmKind::Gcra);
    let mut state = <Gcra as Algorithm>::State::default();
    Gcra::apply(&p, &mut state, 10, Nanos::ZERO, Nanos::ZERO);
    let plan = Gcra::plan(&p, &state, 1, Nanos::ZERO, Duration::from_secs(3600));
    assert!(plan.decision.allowed);
    assert_eq!(plan.ready_at, Nanos::new(100 * MS));
}
