//! GCRA at exact instants: a burst then one per emission interval, the interval rounded up,
//! a burst other than the limit, costs above what is left and above the capacity,
//! reservations (`plan` + `apply`) within and beyond the maximum wait, and refunds,
//! charges and settles moving the theoretical arrival time.

use std::time::Duration;

use super::{MS, NS, SEC, never, pass, policy, run, run_fresh, wait};
use crate::algorithm::{Algorithm, Gcra, GcraState};
use crate::decision::{Decision, Ticket};
use crate::policy::{AlgorithmKind, Policy};
use crate::time::Nanos;

/// 10/s: burst 10, emission interval T = 100 ms, capacity 1 s.
fn ten_per_second() -> Policy {
    policy(AlgorithmKind::Gcra, "10/s")
}

#[test]
fn ten_per_second_admits_ten_at_once_then_one_every_hundred_milliseconds() {
    run_fresh::<Gcra>(
        &ten_per_second(),
        &[
            pass(0, 1, 9, 100 * MS),
            pass(0, 1, 8, 200 * MS),
            pass(0, 1, 7, 300 * MS),
            pass(0, 1, 6, 400 * MS),
            pass(0, 1, 5, 500 * MS),
            pass(0, 1, 4, 600 * MS),
            pass(0, 1, 3, 700 * MS),
            pass(0, 1, 2, 800 * MS),
            pass(0, 1, 1, 900 * MS),
            pass(0, 1, 0, SEC),
            wait(0, 1, 0, 100 * MS),
            wait(100 * MS - NS, 1, 0, NS),
            pass(100 * MS, 1, 0, SEC),
            wait(100 * MS, 1, 0, 100 * MS),
            wait(199 * MS, 1, 0, MS),
            pass(200 * MS, 1, 0, SEC),
            pass(300 * MS, 1, 0, SEC),
            // Idle until the bucket is full again (the last admission's tat is 1.3 s).
            wait(1300 * MS - NS, 10, 9, NS),
            pass(1300 * MS, 10, 0, SEC),
        ],
    );
}

#[test]
fn partly_refilled_bucket_refuses_more_than_is_left_with_the_exact_wait() {
    run_fresh::<Gcra>(
        &ten_per_second(),
        &[
            pass(0, 10, 0, SEC),
            // 250 ms later 2.5 units have dripped back: 2 whole ones.
            wait(250 * MS, 3, 2, 50 * MS),
            wait(300 * MS - NS, 3, 2, NS),
            pass(300 * MS, 3, 0, SEC),
            pass(550 * MS, 2, 0, 950 * MS),
        ],
    );
}

#[test]
fn cost_above_the_burst_is_refused_for_good_without_touching_the_state() {
    let p = ten_per_second();
    run_fresh::<Gcra>(
        &p,
        &[
            never(0, 11, 10),
            never(0, u64::MAX, 10),
            pass(0, 10, 0, SEC),
            never(0, 11, 0),
            wait(0, 10, 0, SEC),
            never(5 * SEC, 11, 10),
        ],
    );
}

#[test]
fn emission_interval_rounds_up_so_three_per_second_never_exceeds_three() {
    // T = ceil(1 s / 3) = 333_333_334 ns; capacity 1_000_000_002 ns.
    let t = 333_333_334;
    run_fresh::<Gcra>(
        &policy(AlgorithmKind::Gcra, "3/s"),
        &[
            pass(0, 1, 2, t),
            pass(0, 1, 1, 2 * t),
            pass(0, 1, 0, 3 * t),
            wait(0, 1, 0, t),
            wait(t - NS, 1, 0, NS),
            pass(t, 1, 0, 3 * t),
            // One second later only 2 more units have been earned, not 3.
            wait(t + SEC, 3, 2, 2),
            pass(t + SEC + 2, 3, 0, 3 * t),
        ],
    );
}

#[test]
fn burst_below_the_limit_caps_the_bucket_but_keeps_the_rate() {
    let p = ten_per_second().with_burst(3).unwrap();
    run_fresh::<Gcra>(
        &p,
        &[
            pass(0, 3, 0, 300 * MS),
            wait(0, 1, 0, 100 * MS),
            never(0, 4, 0),
            pass(100 * MS, 1, 0, 300 * MS),
            // A long idle refills only up to the burst.
            pass(10 * SEC, 3, 0, 300 * MS),
            wait(10 * SEC, 1, 0, 100 * MS),
        ],
    );
}

#[test]
fn burst_above_the_limit_allows_a_larger_first_burst() {
    let p = ten_per_second().with_burst(25).unwrap();
    run_fresh::<Gcra>(
        &p,
        &[
            pass(0, 25, 0, 2500 * MS),
            wait(0, 1, 0, 100 * MS),
            pass(100 * MS, 1, 0, 2500 * MS),
        ],
    );
}

/// Plans `cost` at `now` with `max_wait` and applies it when allowed.
fn reserve(p: &Policy, state: &mut GcraState, cost: u64, now: u64, max_wait: u64) -> Decision {
    let now = Nanos::new(now);
    let plan = Gcra::plan(p, state, cost, now, Duration::from_nanos(max_wait));
    if plan.decision.allowed {
        let ticket = Gcra::apply(p, state, cost, plan.ready_at, now);
        assert_eq!(
            ticket.at, plan.ready_at,
            "the ticket is for the ready instant"
        );
    } else {
        assert_eq!(plan.ready_at, now, "a refusal reserves nothing");
    }
    plan.decision
}

#[test]
fn reservation_is_ready_in_the_future_when_the_wait_fits_max_wait() {
    let p = ten_per_second();
    let (mut state, _) = run_fresh::<Gcra>(&p, &[pass(0, 10, 0, SEC)]);

    let plan = Gcra::plan(&p, &state, 1, Nanos::ZERO, Duration::from_secs(1));
    assert_eq!(plan.ready_at, Nanos::new(100 * MS));
    assert_eq!(
        plan.decision,
        Decision::allow(10, 0, Duration::from_millis(1100))
    );
    let ticket = Gcra::apply(&p, &mut state, 1, plan.ready_at, Nanos::ZERO);
    assert_eq!(
        ticket,
        Ticket {
            cost: 1,
            at: Nanos::new(100 * MS),
            lease: 0
        }
    );

    // The next reservation queues behind it: ready at 200 ms, exactly max_wait away.
    let plan = Gcra::plan(&p, &state, 1, Nanos::ZERO, Duration::from_millis(200));
    assert!(plan.decision.allowed);
    assert_eq!(plan.ready_at, Nanos::new(200 * MS));

    // A check at the same instant still sees no capacity now.
    run::<Gcra>(&p, &mut state, &[wait(0, 1, 0, 200 * MS)]);
}

#[test]
fn reservation_beyond_max_wait_is_refused_with_the_time_until_it_fits() {
    let p = ten_per_second();
    let (mut state, _) = run_fresh::<Gcra>(&p, &[pass(0, 10, 0, SEC)]);
    // 3 units are free at 300 ms: 50 ms more than a 250 ms wait allows.
    let refused = reserve(&p, &mut state, 3, 0, 250 * MS);
    assert_eq!(
        refused,
        Decision::deny(10, 0, Duration::from_secs(1), Duration::from_millis(50))
    );
    // One nanosecond short of max_wait: refused by one nanosecond.
    let refused = reserve(&p, &mut state, 3, 0, 300 * MS - NS);
    assert_eq!(refused.retry_after, Some(Duration::from_nanos(1)));
    // At retry_after the same reservation fits, and not a nanosecond earlier.
    assert!(!reserve(&p, &mut state, 3, 50 * MS - NS, 250 * MS).allowed);
    assert!(reserve(&p, &mut state, 3, 50 * MS, 250 * MS).allowed);
    run::<Gcra>(&p, &mut state, &[wait(50 * MS, 1, 0, 350 * MS)]);
}

#[test]
fn reservation_takes_capacity_now_when_there_is_some_and_never_for_too_large_a_cost() {
    let p = ten_per_second();
    let mut state = GcraState::default();
    let plan = Gcra::plan(&p, &state, 4, Nanos::ZERO, Duration::ZERO);
    assert_eq!(plan.ready_at, Nanos::ZERO);
    assert_eq!(plan.decision, Gcra::decide(&p, &state, 4, Nanos::ZERO));
    let never = Gcra::plan(&p, &state, 11, Nanos::ZERO, Duration::from_secs(3600));
    assert!(never.decision.cost_exceeds_capacity);
    assert_eq!(never.decision.retry_after, None);
    assert_eq!(never.ready_at, Nanos::ZERO);
    // With no wait allowed, a reservation is a check.
    run::<Gcra>(&p, &mut state, &[pass(0, 10, 0, SEC)]);
    assert_eq!(
        Gcra::plan(&p, &state, 1, Nanos::ZERO, Duration::ZERO).decision,
        Gcra::decide(&p, &state, 1, Nanos::ZERO)
    );
}

#[test]
fn cancelling_a_future_reservation_gives_its_slot_back() {
    let p = ten_per_second();
    let (mut state, _) = run_fresh::<Gcra>(&p, &[pass(0, 10, 0, SEC)]);
    let before = state;
    let now = Nanos::new(20 * MS);
    let plan = Gcra::plan(&p, &state, 2, now, Duration::from_secs(1));
    assert_eq!(plan.ready_at, Nanos::new(200 * MS));
    let ticket = Gcra::apply(&p, &mut state, 2, plan.ready_at, now);
    Gcra::refund(&p, &mut state, &ticket, ticket.cost, now);
    assert_eq!(state, before);
    run::<Gcra>(&p, &mut state, &[wait(20 * MS, 1, 0, 80 * MS)]);
}

#[test]
fn refund_charge_and_settle_move_the_theoretical_arrival_time() {
    let p = ten_per_second();
    let (mut state, tickets) = run_fresh::<Gcra>(&p, &[pass(0, 4, 6, 400 * MS)]);
    let ticket = tickets[0];

    // Settled lower: the difference comes back.
    Gcra::settle(&p, &mut state, &ticket, 1, Nanos::ZERO);
    assert_eq!(state.tat, Nanos::new(100 * MS));
    // Settled to the same cost: nothing moves.
    Gcra::settle(&p, &mut state, &ticket, 4, Nanos::ZERO);
    assert_eq!(state.tat, Nanos::new(100 * MS));
    // Settled higher: the difference is charged, whatever is left.
    Gcra::settle(&p, &mut state, &ticket, 9, Nanos::ZERO);
    assert_eq!(state.tat, Nanos::new(600 * MS));
    run::<Gcra>(&p, &mut state, &[wait(0, 5, 4, 100 * MS)]);
    Gcra::charge(&p, &mut state, &ticket, 9, Nanos::ZERO);
    assert_eq!(state.tat, Nanos::new(1500 * MS));
    run::<Gcra>(&p, &mut state, &[wait(0, 1, 0, 600 * MS), never(0, 11, 0)]);

    // A refund never leaves more than a fresh limit has.
    Gcra::refund(&p, &mut state, &ticket, 100, Nanos::new(SEC));
    assert_eq!(state.tat, Nanos::new(SEC));
    run::<Gcra>(
        &p,
        &mut state,
        &[pass(SEC, 10, 0, SEC), wait(SEC, 1, 0, 100 * MS)],
    );
    // Refunding into a bucket that is already full changes nothing.
    let full = GcraState {
        tat: Nanos::new(SEC),
    };
    let mut refunded = full;
    Gcra::refund(&p, &mut refunded, &ticket, 5, Nanos::new(3 * SEC));
    assert_eq!(refunded, full);
}

#[test]
fn time_to_full_and_expiry_follow_the_theoretical_arrival_time() {
    let p = ten_per_second();
    let (state, _) = run_fresh::<Gcra>(&p, &[pass(5 * SEC, 3, 7, 300 * MS)]);
    assert_eq!(Gcra::expires_at(&p, &state), Nanos::new(5300 * MS));
    assert_eq!(
        Gcra::time_to_full(&state, Nanos::new(5100 * MS)),
        Duration::from_millis(200)
    );
    assert_eq!(
        Gcra::time_to_full(&state, Nanos::new(6 * SEC)),
        Duration::ZERO
    );
    // From expires_at on, the state decides like a fresh one.
    let at = Gcra::expires_at(&p, &state);
    for cost in [1, 10, 11] {
        assert_eq!(
            Gcra::decide(&p, &state, cost, at),
            Gcra::decide(&p, &GcraState::default(), cost, at)
        );
    }
}

#[test]
fn near_the_end_of_time_gcra_admits_as_usual_until_its_schedule_would_pass_nanos_max() {
    let p = ten_per_second();
    let base = u64::MAX - 2 * SEC;
    let (mut state, _) = run_fresh::<Gcra>(
        &p,
        &[
            pass(base, 10, 0, SEC),
            wait(base, 1, 0, 100 * MS),
            pass(base + 100 * MS, 1, 0, SEC),
        ],
    );
    // One per 100 ms until the theoretical arrival time is exactly Nanos::MAX.
    for k in 2..=10 {
        run::<Gcra>(&p, &mut state, &[pass(base + k * 100 * MS, 1, 0, SEC)]);
    }
    assert_eq!(state.tat, Nanos::MAX);
    // From here a new arrival time cannot be represented: refused for good, however
    // often it is asked (saturating would admit every request from here on).
    let late = base + 1100 * MS;
    for _ in 0..100 {
        run::<Gcra>(&p, &mut state, &[never(late, 1, 0)]);
    }
    run::<Gcra>(&p, &mut state, &[never(u64::MAX, 1, 0)]);
    assert_eq!(state.tat, Nanos::MAX);
}
