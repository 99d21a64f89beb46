//! Scripted scenarios: short operation sequences with the exact answers the algorithms
//! document, checked against both the model and the store under test.

use std::future::Future;
use std::time::Duration;

use sluice_core::{Decision, Key, ManualClock, Nanos, Policy, Ticket};

use super::START;
use super::driver::{Driver, Failure};
use crate::store::{Hold, Limit, Store};

/// Declares the scenarios: the list of names and the dispatch from a name to its function.
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        /// Every scenario, in the order [`run`] runs them.
        pub(super) const NAMES: &[&str] = &[$(stringify!($name)),*];

        /// Runs the scenario `name` on a fresh store; `None` if there is no such scenario.
        pub(super) async fn run<S, F, Fut>(name: &str, make_store: &F) -> Option<Result<(), Failure>>
        where
            S: Store,
            F: Fn(ManualClock) -> Fut,
            Fut: Future<Output = S>,
        {
            match name {
                $(stringify!($name) => {
                    let driver = Driver::start(stringify!($name), START, make_store).await;
                    Some($name(driver).await)
                })*
                _ => None,
            }
        }
    };
}

scenarios!(
    gcra_admits_its_burst_then_refills,
    fixed_window_counts_per_aligned_window,
    sliding_window_weights_the_previous_window,
    sliding_log_is_exact_over_any_period,
    concurrency_holds_leases_until_they_expire,
    multi_limit_refusal_debits_nothing,
    duplicate_limits_see_each_others_debit,
    gcra_reservation_waits_then_cancel_gives_back,
    multi_limit_reservation_waits_for_the_slowest,
    settle_refunds_and_charges_the_difference,
    concurrency_cancel_releases_the_lease,
    lease_ids_are_not_reused_after_all_leases_are_released,
    reset_forgets_one_limit_only,
    peek_debits_nothing,
    cost_exceeding_capacity_is_refused_without_debit,
    limits_with_different_periods_on_one_key_count_separately,
);

fn policy(algorithm: &str, rate: &str) -> Policy {
    Policy::parse(algorithm, rate).expect("the suite's policies are valid")
}

fn gcra(rate: &str, burst: u64) -> Policy {
    policy("gcra", rate)
        .with_burst(burst)
        .expect("the suite's bursts are valid")
}

fn key(user: &str) -> Key {
    Key::new("conformance", [("user", user)]).expect("the suite's keys are valid")
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

const SECOND: Duration = Duration::from_secs(1);

/// GCRA 5/s with burst 3: three at once, then one every 200 ms.
async fn gcra_admits_its_burst_then_refills<S: Store>(mut d: Driver<S>) -> Result<(), Failure> {
    let (k, p) = (key("a"), gcra("5/s", 3));
    let l = Limit::new(&k, &p);
    for (remaining, reset) in [(2, 200), (1, 400), (0, 600)] {
        let got = d.check(l, 1).await?;
        d.expect(
            "burst admitted",
            got,
            Decision::allow(3, remaining, ms(reset)),
        )?;
    }
    let got = d.check(l, 1).await?;
    d.expect(
        "past the burst",
        got,
        Decision::deny(3, 0, ms(600), ms(200)),
    )?;
    d.advance(ms(200));
    let got = d.check(l, 1).await?;
    d.expect("one unit refilled", got, Decision::allow(3, 0, ms(600)))?;
    let got = d.check(l, 1).await?;
    d.expect("only one", got, Decision::deny(3, 0, ms(600), ms(200)))?;
    d.advance(SECOND);
    let got = d.peek(l).await?;
    d.expect("full again", got, Decision::allow(3, 3, Duration::ZERO))
}

/// Fixed window 3/s: three per aligned second, refused until the next one starts.
async fn fixed_window_counts_per_aligned_window<S: Store>(mut d: Driver<S>) -> Result<(), Failure> {
    let (k, p) = (key("a"), policy("fixed_window", "3/s"));
    let l = Limit::new(&k, &p);
    d.advance(ms(250));
    for remaining in [2, 1, 0] {
        let got = d.check(l, 1).await?;
        d.expect(
            "within the window",
            got,
            Decision::allow(3, remaining, ms(750)),
        )?;
    }
    let got = d.check(l, 1).await?;
    d.expect("window full", got, Decision::deny(3, 0, ms(750), ms(750)))?;
    d.advance(ms(749));
    let got = d.check(l, 1).await?;
    d.expect("still full", got, Decision::deny(3, 0, ms(1), ms(1)))?;
    d.advance(ms(1));
    let got = d.check(l, 1).await?;
    d.expect("next window", got, Decision::allow(3, 2, SECOND))
}

/// Sliding window 4/s: the previous window's count weighs by how much of it overlaps.
async fn sliding_window_weights_the_previous_window<S: Store>(
    mut d: Driver<S>,
) -> Result<(), Failure> {
    let (k, p) = (key("a"), policy("sliding_window", "4/s"));
    let l = Limit::new(&k, &p);
    for remaining in [3, 2, 1, 0] {
        let got = d.check(l, 1).await?;
        d.expect(
            "within the limit",
            got,
            Decision::allow(4, remaining, 2 * SECOND),
        )?;
    }
    let got = d.check(l, 1).await?;
    let wait = ms(1250);
    d.expect("full", got, Decision::deny(4, 0, 2 * SECOND, wait))?;
    d.advance(SECOND);
    let got = d.check(l, 1).await?;
    d.expect(
        "previous window weighs fully",
        got,
        Decision::deny(4, 0, SECOND, ms(250)),
    )?;
    d.advance(ms(500));
    let got = d.check(l, 1).await?;
    d.expect("half of it slid out", got, Decision::allow(4, 1, ms(1500)))?;
    let got = d.check(l, 1).await?;
    d.expect("half of it slid out", got, Decision::allow(4, 0, ms(1500)))?;
    let got = d.check(l, 1).await?;
    d.expect("full again", got, Decision::deny(4, 0, ms(1500), ms(250)))
}

/// Sliding log 3/s: admissions slide out exactly one period after they happened.
async fn sliding_log_is_exact_over_any_period<S: Store>(mut d: Driver<S>) -> Result<(), Failure> {
    let (k, p) = (key("a"), policy("sliding_log", "3/s"));
    let l = Limit::new(&k, &p);
    for remaining in [2, 1, 0] {
        let got = d.check(l, 1).await?;
        d.expect(
            "within the limit",
            got,
            Decision::allow(3, remaining, SECOND),
        )?;
        d.advance(ms(100));
    }
    let got = d.check(l, 1).await?;
    d.expect("full", got, Decision::deny(3, 0, ms(900), ms(700)))?;
    d.advance(ms(699));
    let got = d.check(l, 1).await?;
    d.expect(
        "first admission still counts",
        got,
        Decision::deny(3, 0, ms(201), ms(1)),
    )?;
    d.advance(ms(1));
    let got = d.check(l, 1).await?;
    d.expect(
        "first admission slid out",
        got,
        Decision::allow(3, 0, SECOND),
    )
}

/// Concurrency 2/s: two leases at once; a lease nobody releases frees itself after 1 s.
async fn concurrency_holds_leases_until_they_expire<S: Store>(
    mut d: Driver<S>,
) -> Result<(), Failure> {
    let (k, p) = (key("a"), policy("concurrency", "2/s"));
    let l = Limit::new(&k, &p);
    for remaining in [1, 0] {
        let got = d.check(l, 1).await?;
        d.expect("lease taken", got, Decision::allow(2, remaining, SECOND))?;
    }
    let got = d.check(l, 1).await?;
    d.expect("all leases held", got, Decision::deny(2, 0, SECOND, SECOND))?;
    d.advance(ms(999));
    let got = d.check(l, 1).await?;
    d.expect("leases still held", got, Decision::deny(2, 0, ms(1), ms(1)))?;
    d.advance(ms(1));
    let got = d.check(l, 1).await?;
    d.expect("leases expired", got, Decision::allow(2, 1, SECOND))
}

/// A request refused by one limit debits none of the others, whichever comes first.
async fn multi_limit_refusal_debits_nothing<S: Store>(mut d: Driver<S>) -> Result<(), Failure> {
    let (a, b, global) = (key("a"), key("b"), Key::named("global"));
    let (per_user, shared) = (policy("gcra", "10/s"), policy("fixed_window", "2/s"));
    let user_a = Limit::new(&a, &per_user);
    let user_b = Limit::new(&b, &per_user);
    let all = Limit::new(&global, &shared);
    for (user_left, global_left) in [(9, 1), (8, 0)] {
        let got = d.check_all(&[user_a, all], 1).await?;
        let expected = [
            Decision::allow(10, user_left, ms(100 * (10 - user_left))),
            Decision::allow(2, global_left, SECOND),
        ];
        d.expect(
            "both allow",
            (got.allowed, got.decisions),
            (true, expected.to_vec()),
        )?;
    }
    let got = d.check_all(&[user_a, all], 1).await?;
    let expected = vec![
        Decision::allow(10, 7, ms(300)),
        Decision::deny(2, 0, SECOND, SECOND),
    ];
    d.expect(
        "global refuses",
        (got.allowed, got.decisions),
        (false, expected),
    )?;
    let untouched = Decision::allow(10, 8, ms(200));
    let got = d.peek(user_a).await?;
    d.expect("user limit not debited", got, untouched)?;

    let got = d.check_all(&[all, user_a], 1).await?;
    d.expect("global refuses first", got.allowed, false)?;
    let got = d.peek(user_a).await?;
    d.expect("user limit not debited", got, untouched)?;

    let got = d.reserve(&[user_a, all], 1, 10 * SECOND).await?;
    d.expect(
        "reservation refused",
        (got.granted(), got.holds),
        (false, vec![]),
    )?;
    let got = d.peek(user_a).await?;
    d.expect("user limit not debited", got, untouched)?;

    let got = d.check_all(&[user_b, all], 1).await?;
    d.expect("refused for another user", got.allowed, false)?;
    let got = d.peek(user_b).await?;
    d.expect(
        "other user untouched",
        got,
        Decision::allow(10, 10, Duration::ZERO),
    )
}

/// The same limit twice in one request counts twice, and both see the first debit.
async fn duplicate_limits_see_each_others_debit<S: Store>(mut d: Driver<S>) -> Result<(), Failure> {
    let (k, p) = (key("a"), policy("fixed_window", "2/s"));
    let l = Limit::new(&k, &p);
    let got = d.check_all(&[l, l], 1).await?;
    let expected = vec![Decision::allow(2, 1, SECOND), Decision::allow(2, 0, SECOND)];
    d.expect(
        "both debited",
        (got.allowed, got.decisions),
        (true, expected),
    )?;
    let got = d.peek(l).await?;
    d.expect("two units used", got.remaining, 0)?;

    d.reset(l).await?;
    d.check(l, 1).await?;
    let got = d.check_all(&[l, l], 1).await?;
    let expected = vec![
        Decision::allow(2, 0, SECOND),
        Decision::deny(2, 0, SECOND, SECOND),
    ];
    d.expect(
        "second sees the first",
        (got.allowed, got.decisions),
        (false, expected),
    )?;
    let got = d.peek(l).await?;
    d.expect("nothing debited", got.remaining, 1)?;

    let (g, gp) = (key("b"), gcra("1/s", 2));
    let gl = Limit::new(&g, &gp);
    let reservation = d.reserve(&[gl, gl], 1, Duration::ZERO).await?;
    let expected = vec![
        Decision::allow(2, 1, SECOND),
        Decision::allow(2, 0, 2 * SECOND),
    ];
    d.expect(
        "both reserved",
        reservation.verdict.decisions.clone(),
        expected,
    )?;
    d.expect("two holds", reservation.holds.len(), 2)?;
    d.cancel(&reservation).await?;
    let got = d.peek(gl).await?;
    d.expect(
        "both given back",
        got,
        Decision::allow(2, 2, Duration::ZERO),
    )
}

/// GCRA promises future capacity within `max_wait`; cancelling gives it back.
async fn gcra_reservation_waits_then_cancel_gives_back<S: Store>(
    mut d: Driver<S>,
) -> Result<(), Failure> {
    let (k, p) = (key("a"), policy("gcra", "1/s"));
    let l = Limit::new(&k, &p);
    let t0 = d.now();
    d.check(l, 1).await?;
    let reservation = d.reserve(&[l], 1, 2 * SECOND).await?;
    let hold = Hold {
        key: k.clone(),
        policy: p,
        ticket: Ticket {
            cost: 1,
            at: t0 + SECOND,
            lease: 0,
        },
    };
    d.expect("granted", reservation.granted(), true)?;
    d.expect("ready in a second", reservation.ready_at, t0 + SECOND)?;
    d.expect("wait", reservation.wait, SECOND)?;
    d.expect("hold", reservation.holds.clone(), vec![hold])?;
    let got = d.peek(l).await?;
    d.expect("in debt", got, Decision::deny(1, 0, 2 * SECOND, SECOND))?;

    let refused = d.reserve(&[l], 1, ms(500)).await?;
    let expected = vec![Decision::deny(1, 0, 2 * SECOND, ms(1500))];
    d.expect("too long a wait", refused.verdict.decisions, expected)?;
    d.expect("nothing held", refused.holds, vec![])?;
    d.expect(
        "refused: ready now",
        (refused.ready_at, refused.wait),
        (t0, Duration::ZERO),
    )?;

    d.cancel(&reservation).await?;
    let got = d.peek(l).await?;
    d.expect("given back", got, Decision::allow(1, 0, SECOND))?;
    d.advance(SECOND);
    let got = d.peek(l).await?;
    d.expect("full", got, Decision::allow(1, 1, Duration::ZERO))
}

/// A reservation over several limits is ready when the slowest of them is.
async fn multi_limit_reservation_waits_for_the_slowest<S: Store>(
    mut d: Driver<S>,
) -> Result<(), Failure> {
    let (a, b) = (key("a"), key("b"));
    let (slow, fast) = (policy("gcra", "1/s"), policy("gcra", "10/s"));
    let (la, lb) = (Limit::new(&a, &slow), Limit::new(&b, &fast));
    let t0 = d.now();
    d.check(la, 1).await?;
    let reservation = d.reserve(&[la, lb], 1, 5 * SECOND).await?;
    d.expect("granted", reservation.granted(), true)?;
    d.expect(
        "ready",
        (reservation.ready_at, reservation.wait),
        (t0 + SECOND, SECOND),
    )?;
    let ats: Vec<Nanos> = reservation.holds.iter().map(|h| h.ticket.at).collect();
    d.expect("each hold's instant", ats, vec![t0 + SECOND, t0])?;
    d.cancel(&reservation).await?;
    let got = d.peek(la).await?;
    d.expect("slow given back", got, Decision::allow(1, 0, SECOND))?;
    let got = d.peek(lb).await?;
    d.expect(
        "fast given back",
        got,
        Decision::allow(10, 10, Duration::ZERO),
    )
}

/// Settling refunds an estimate that was too high and charges one that was too low.
async fn settle_refunds_and_charges_the_difference<S: Store>(
    mut d: Driver<S>,
) -> Result<(), Failure> {
    let k = key("a");
    let (log, bucket, window) = (
        policy("sliding_log", "10/s"),
        policy("gcra", "10/s"),
        policy("fixed_window", "3/s"),
    );
    let l = Limit::new(&k, &log);
    let r = d.reserve(&[l], 4, Duration::ZERO).await?;
    d.expect(
        "reserved",
        r.verdict.decisions.clone(),
        vec![Decision::allow(10, 6, SECOND)],
    )?;
    d.settle(&r, 2).await?;
    let got = d.peek(l).await?.remaining;
    d.expect("refunded", got, 8)?;
    let r = d.reserve(&[l], 2, Duration::ZERO).await?;
    d.settle(&r, 5).await?;
    let got = d.peek(l).await?.remaining;
    d.expect("charged", got, 3)?;

    let g = Limit::new(&k, &bucket);
    let r = d.reserve(&[g], 4, Duration::ZERO).await?;
    d.settle(&r, 1).await?;
    let got = d.peek(g).await?;
    d.expect("refunded", got, Decision::allow(10, 9, ms(100)))?;
    let r = d.reserve(&[g], 1, Duration::ZERO).await?;
    d.settle(&r, 4).await?;
    let got = d.peek(g).await?;
    d.expect("charged", got, Decision::allow(10, 5, ms(500)))?;

    let w = Limit::new(&k, &window);
    let r = d.reserve(&[w], 1, Duration::ZERO).await?;
    d.settle(&r, 10).await?;
    let got = d.peek(w).await?.remaining;
    d.expect("charged past the limit", got, 0)?;
    let got = d.check(w, 1).await?;
    d.expect(
        "refused after the charge",
        got,
        Decision::deny(3, 0, SECOND, SECOND),
    )
}

/// Cancelling or settling to zero releases a lease at once.
async fn concurrency_cancel_releases_the_lease<S: Store>(mut d: Driver<S>) -> Result<(), Failure> {
    let (k, p) = (key("a"), policy("concurrency", "2/min"));
    let l = Limit::new(&k, &p);
    let minute = Duration::from_secs(60);
    let first = d.reserve(&[l], 1, Duration::ZERO).await?;
    let second = d.reserve(&[l], 1, Duration::ZERO).await?;
    let (a, b) = (first.holds[0].ticket.lease, second.holds[0].ticket.lease);
    d.expect(
        "leases are named",
        (a != 0, b != 0, a != b),
        (true, true, true),
    )?;
    let refused = d.reserve(&[l], 1, Duration::ZERO).await?;
    let expected = vec![Decision::deny(2, 0, minute, minute)];
    d.expect("both leases held", refused.verdict.decisions, expected)?;

    d.cancel(&first).await?;
    let got = d.peek(l).await?;
    d.expect("released", got, Decision::allow(2, 1, minute))?;
    let third = d.reserve(&[l], 1, Duration::ZERO).await?;
    d.expect("lease taken again", third.granted(), true)?;
    d.settle(&second, 0).await?;
    let got = d.peek(l).await?.remaining;
    d.expect("settled to zero", got, 1)?;
    d.cancel(&first).await?;
    let got = d.peek(l).await?.remaining;
    d.expect("a second cancel releases nothing", got, 1)?;
    d.settle(&third, 2).await?;
    let got = d.peek(l).await?.remaining;
    d.expect("lease grown", got, 0)
}

/// Once every lease of a key is released, the next lease must not take the id of a
/// released one (else a late cancel of the old reservation releases the new lease).
async fn lease_ids_are_not_reused_after_all_leases_are_released<S: Store>(
    mut d: Driver<S>,
) -> Result<(), Failure> {
    let (k, p) = (key("a"), policy("concurrency", "3/s"));
    let l = Limit::new(&k, &p);
    let first = d.reserve(&[l], 1, Duration::ZERO).await?;
    let second = d.reserve(&[l], 1, Duration::ZERO).await?;
    d.cancel(&first).await?;
    d.cancel(&second).await?;
    // Nothing in flight: a store may now drop the state, and this write invites it to.
    d.check_all(&[l], 0).await?;
    let third = d.reserve(&[l], 1, Duration::ZERO).await?;
    let ids = |r: &crate::store::Reservation| r.holds[0].ticket.lease;
    let fresh = ids(&third) != ids(&first) && ids(&third) != ids(&second);
    d.expect("a fresh lease id", fresh, true)?;
    d.cancel(&first).await?;
    let got = d.peek(l).await?.remaining;
    d.expect("the new lease is still held", got, 2)
}

/// Resetting one limit leaves other algorithms on the same key and other keys alone.
async fn reset_forgets_one_limit_only<S: Store>(mut d: Driver<S>) -> Result<(), Failure> {
    let (a, b, c) = (key("a"), key("b"), key("c"));
    let (window, bucket) = (policy("fixed_window", "1/s"), policy("gcra", "1/s"));
    let (fa, ga, fb) = (
        Limit::new(&a, &window),
        Limit::new(&a, &bucket),
        Limit::new(&b, &window),
    );
    for l in [fa, ga, fb] {
        d.check(l, 1).await?;
        let got = d.check(l, 1).await?;
        d.expect("used up", got.allowed, false)?;
    }
    d.reset(fa).await?;
    let got = d.check(fa, 1).await?.allowed;
    d.expect("reset limit admits", got, true)?;
    let got = d.check(ga, 1).await?.allowed;
    d.expect("other algorithm kept", got, false)?;
    let got = d.check(fb, 1).await?.allowed;
    d.expect("other key kept", got, false)?;
    d.reset(Limit::new(&c, &window)).await
}

/// Peeking any number of times debits nothing, for every algorithm.
async fn peek_debits_nothing<S: Store>(mut d: Driver<S>) -> Result<(), Failure> {
    let k = key("a");
    for name in [
        "gcra",
        "fixed_window",
        "sliding_window",
        "sliding_log",
        "concurrency",
    ] {
        let p = policy(name, "3/s");
        let l = Limit::new(&k, &p);
        for _ in 0..5 {
            let got = d.peek(l).await?;
            d.expect("fresh", (got.allowed, got.remaining), (true, 3))?;
        }
        for _ in 0..3 {
            let got = d.check(l, 1).await?.allowed;
            d.expect("admitted", got, true)?;
            d.peek(l).await?;
        }
        let got = d.peek(l).await?;
        d.expect("used up", (got.allowed, got.remaining), (true, 0))?;
        let got = d.check(l, 1).await?.allowed;
        d.expect("refused", got, false)?;
    }
    Ok(())
}

/// A cost above the capacity is refused as such (no retry helps), debiting nothing,
/// alone, among other limits, and as a reservation.
async fn cost_exceeding_capacity_is_refused_without_debit<S: Store>(
    mut d: Driver<S>,
) -> Result<(), Failure> {
    let (k, other_key) = (key("a"), key("z"));
    let other_policy = policy("gcra", "10/s");
    let other = Limit::new(&other_key, &other_policy);
    let policies = [
        gcra("10/s", 3),
        policy("fixed_window", "3/s"),
        policy("sliding_window", "3/s"),
        policy("sliding_log", "3/s"),
        policy("concurrency", "3/s"),
    ];
    for p in &policies {
        let l = Limit::new(&k, p);
        let got = d.check(l, 4).await?;
        let shape = (got.allowed, got.cost_exceeds_capacity, got.retry_after);
        d.expect("exceeds capacity", shape, (false, true, None))?;
        let got = d.peek(l).await?.remaining;
        d.expect("not debited", got, 3)?;

        let got = d.check_all(&[other, l], 4).await?;
        d.expect("refused", got.allowed, false)?;
        d.expect("flagged", got.decisions[1].cost_exceeds_capacity, true)?;
        let got = d.peek(other).await?.remaining;
        d.expect("other not debited", got, 10)?;

        let got = d.reserve(&[l], 4, Duration::from_secs(3600)).await?;
        let shape = (got.granted(), got.holds.is_empty(), got.wait);
        d.expect("reservation refused", shape, (false, true, Duration::ZERO))?;
        d.expect("no retry helps", got.verdict.decisions[0].retry_after, None)?;
        let got = d.peek(l).await?.remaining;
        d.expect("not debited", got, 3)?;
    }
    Ok(())
}

/// `2/s` and `3/min` on the same key are two limits with two states; a limit whose count
/// changes (a hot reload) keeps its state.
async fn limits_with_different_periods_on_one_key_count_separately<S: Store>(
    mut d: Driver<S>,
) -> Result<(), Failure> {
    let k = key("a");
    for algorithm in [
        "gcra",
        "fixed_window",
        "sliding_window",
        "sliding_log",
        "concurrency",
    ] {
        let (per_second, per_minute) = (policy(algorithm, "2/s"), policy(algorithm, "3/min"));
        let (second, minute) = (Limit::new(&k, &per_second), Limit::new(&k, &per_minute));
        let got = d.check_all(&[second, minute], 1).await?;
        d.expect("both admit", got.allowed, true)?;
        let remaining = [
            d.peek(second).await?.remaining,
            d.peek(minute).await?.remaining,
        ];
        d.expect(algorithm, remaining, [1, 2])?;

        // GCRA keeps its debt in time (500 ms of the new 1 s capacity, 200 ms per unit);
        // the counters keep their count.
        let raised = policy(algorithm, "5/s");
        let got = d.peek(Limit::new(&k, &raised)).await?;
        let expected = if algorithm == "gcra" { 2 } else { 4 };
        d.expect("a changed count keeps the state", got.remaining, expected)?;
    }
    Ok(())
}
