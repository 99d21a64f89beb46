//! The contract every algorithm shares, checked from random reachable states.
//!
//! A state is reached by playing random operations (checks, reservations, refunds,
//! charges) from a fresh limit; then each law probes it:
//!
//! - a refusal's `retry_after` is exact: the same request passes at `now + retry_after`
//!   and not one nanosecond earlier (for checks and for reservations);
//! - only GCRA reserves future capacity; the others reserve now or refuse;
//! - cancel restores: taking capacity and refunding the whole ticket at the same instant
//!   leaves a state that decides like the one before, for several costs and instants;
//! - settle: to the same cost is a no-op, lower is refunding the difference (and a check
//!   settled lower decides like a check of the lower cost), higher is charging it;
//! - `check` is `decide` followed by `apply` when allowed, and changes nothing otherwise;
//! - the `remaining` of a decision predicts exactly which costs pass;
//! - waiting never lowers `remaining` (so a clock that steps back never gains capacity);
//! - `reset_after` is long enough for the limit to be full again (and exact for GCRA).

use std::time::Duration;

use proptest::prelude::*;
use sluice_core::{
    Algorithm, AlgorithmKind, Concurrency, FixedWindow, Gcra, Nanos, Policy, SlidingLog,
    SlidingWindow,
};

use crate::support::{Driver, Mix, Op, config, ordinary_origin, scenario};

const NS: Duration = Duration::from_nanos(1);

/// What the limit reports as available at `now`, without taking anything: the decision
/// for a cost it can never admit.
fn remaining<A: Algorithm>(policy: &Policy, state: &A::State, now: Nanos) -> u64 {
    A::decide(policy, state, policy.burst() + 1, now).remaining
}

/// Instants around `now` worth probing: the same instant, the next nanosecond, window and
/// expiry edges, and well past everything a small policy remembers.
fn probe_instants(policy: &Policy, now: Nanos) -> Vec<Nanos> {
    let p = policy.period_nanos();
    let horizon = (policy.burst() + 1) * policy.emission_nanos();
    [0, 1, p / 2, p - 1, p, p + 1, 2 * p, 3 * p, horizon]
        .iter()
        .map(|&dt| now.plus_nanos(dt))
        .collect()
}

/// Whether two states decide identically at every probe instant and cost.
fn assert_same_decisions<A: Algorithm>(
    policy: &Policy,
    expected: &A::State,
    actual: &A::State,
    now: Nanos,
) -> Result<(), TestCaseError> {
    for at in probe_instants(policy, now) {
        for cost in 0..=policy.burst() + 1 {
            prop_assert_eq!(
                A::decide(policy, expected, cost, at),
                A::decide(policy, actual, cost, at),
                "{}: cost {} at {}\nexpected state {:?}\nactual state {:?}",
                policy,
                cost,
                at,
                expected,
                actual
            );
            let wait = Duration::from_nanos(policy.period_nanos());
            prop_assert_eq!(
                A::plan(policy, expected, cost, at, wait),
                A::plan(policy, actual, cost, at, wait),
                "{}: reserving {} at {}",
                policy,
                cost,
                at
            );
        }
    }
    Ok(())
}

fn retry_after_is_exact<A: Algorithm>(driver: &Driver<A>, cost: u64) -> Result<(), TestCaseError> {
    let (policy, state, now) = (&driver.policy, &driver.state, driver.now);
    let decision = A::decide(policy, state, cost, now);
    if decision.allowed || decision.cost_exceeds_capacity {
        prop_assert_eq!(decision.retry_after, None);
        prop_assert_eq!(decision.cost_exceeds_capacity, cost > policy.burst());
        return Ok(());
    }
    let wait = decision
        .retry_after
        .expect("a refusal that waiting can fix says how long");
    prop_assert!(wait >= NS, "{policy}: refused with retry_after 0");
    prop_assert!(
        A::decide(policy, state, cost, now + wait).allowed,
        "{}: {} refused at {}, still refused after retry_after {:?}; state {:?}",
        policy,
        cost,
        now,
        wait,
        state
    );
    prop_assert!(
        !A::decide(policy, state, cost, now + (wait - NS)).allowed,
        "{}: {} refused at {} with retry_after {:?}, but passes 1ns earlier; state {:?}",
        policy,
        cost,
        now,
        wait,
        state
    );
    Ok(())
}

fn reservation_retry_after_is_exact<A: Algorithm>(
    driver: &Driver<A>,
    cost: u64,
    max_wait: Duration,
) -> Result<(), TestCaseError> {
    let (policy, state, now) = (&driver.policy, &driver.state, driver.now);
    let plan = A::plan(policy, state, cost, now, max_wait);
    if plan.decision.allowed || plan.decision.cost_exceeds_capacity {
        return Ok(());
    }
    let wait = plan
        .decision
        .retry_after
        .expect("a refused reservation says how long to wait");
    prop_assert!(
        wait >= NS,
        "{policy}: reservation refused with retry_after 0"
    );
    prop_assert!(
        A::plan(policy, state, cost, now + wait, max_wait)
            .decision
            .allowed,
        "{}: reserving {} (max wait {:?}) refused at {}, still refused after {:?}",
        policy,
        cost,
        max_wait,
        now,
        wait
    );
    prop_assert!(
        !A::plan(policy, state, cost, now + (wait - NS), max_wait)
            .decision
            .allowed,
        "{}: reserving {} (max wait {:?}) refused at {} with retry_after {:?}, passes 1ns earlier",
        policy,
        cost,
        max_wait,
        now,
        wait
    );
    Ok(())
}

fn reservation_waits_at_most_max_wait<A: Algorithm>(
    driver: &Driver<A>,
    cost: u64,
    max_wait: Duration,
    reserves_future: bool,
) -> Result<(), TestCaseError> {
    let (policy, state, now) = (&driver.policy, &driver.state, driver.now);
    let plan = A::plan(policy, state, cost, now, max_wait);
    let now_decision = A::decide(policy, state, cost, now);
    if now_decision.allowed || !reserves_future {
        // Capacity free now, or an algorithm that cannot promise future capacity.
        prop_assert_eq!(plan.decision, now_decision);
        prop_assert_eq!(plan.ready_at, now);
        return Ok(());
    }
    if plan.decision.allowed {
        // Ready exactly when a check would first pass, within the maximum wait.
        let wait = now_decision
            .retry_after
            .expect("refused now, so it says when");
        prop_assert!(wait <= max_wait);
        prop_assert_eq!(plan.ready_at, now + wait);
        prop_assert_eq!(plan.decision.remaining, 0);
    } else {
        prop_assert_eq!(plan.ready_at, now);
        prop_assert_eq!(
            plan.decision.cost_exceeds_capacity,
            now_decision.cost_exceeds_capacity
        );
    }
    Ok(())
}

fn cancel_restores<A: Algorithm>(
    driver: &Driver<A>,
    cost: u64,
    max_wait: Option<Duration>,
) -> Result<(), TestCaseError> {
    let (policy, before, now) = (&driver.policy, &driver.state, driver.now);
    let mut after = before.clone();
    let (allowed, ready_at) = match max_wait {
        Some(max_wait) => {
            let plan = A::plan(policy, before, cost, now, max_wait);
            (plan.decision.allowed, plan.ready_at)
        }
        None => (A::decide(policy, before, cost, now).allowed, now),
    };
    if !allowed {
        return Ok(());
    }
    let ticket = A::apply(policy, &mut after, cost, ready_at, now);
    prop_assert_eq!(ticket.cost, cost);
    prop_assert_eq!(ticket.at, ready_at);
    A::refund(policy, &mut after, &ticket, ticket.cost, now);
    assert_same_decisions::<A>(policy, before, &after, now)
}

fn settle_laws<A: Algorithm>(
    driver: &Driver<A>,
    cost: u64,
    actual: u64,
    later: u64,
) -> Result<(), TestCaseError> {
    let (policy, before, now) = (&driver.policy, &driver.state, driver.now);
    if !A::decide(policy, before, cost, now).allowed {
        return Ok(());
    }
    let mut taken = before.clone();
    let ticket = A::apply(policy, &mut taken, cost, now, now);

    // To the same cost: nothing changes, now or later.
    for at in [now, now.plus_nanos(later)] {
        let mut settled = taken.clone();
        A::settle(policy, &mut settled, &ticket, cost, at);
        prop_assert_eq!(&settled, &taken, "settle to the same cost at {}", at);
    }

    // Lower: refunding the difference; higher: charging it. At any later instant.
    let at = now.plus_nanos(later);
    let mut settled = taken.clone();
    A::settle(policy, &mut settled, &ticket, actual, at);
    let mut adjusted = taken.clone();
    if actual < cost {
        A::refund(policy, &mut adjusted, &ticket, cost - actual, at);
    } else if actual > cost {
        A::charge(policy, &mut adjusted, &ticket, actual - cost, at);
    }
    prop_assert_eq!(
        &settled,
        &adjusted,
        "settle {} -> {} at {}",
        cost,
        actual,
        at
    );

    // A check settled lower at once decides like a check of the lower cost.
    if actual < cost {
        let mut settled_now = taken.clone();
        A::settle(policy, &mut settled_now, &ticket, actual, now);
        let mut direct = before.clone();
        prop_assert!(A::check(policy, &mut direct, actual, now).allowed);
        assert_same_decisions::<A>(policy, &direct, &settled_now, now)?;
    }
    Ok(())
}

fn check_is_decide_then_apply<A: Algorithm>(
    driver: &Driver<A>,
    cost: u64,
) -> Result<(), TestCaseError> {
    let (policy, state, now) = (&driver.policy, &driver.state, driver.now);
    let decided = A::decide(policy, state, cost, now);
    prop_assert_eq!(
        decided,
        A::decide(policy, state, cost, now),
        "decide is deterministic"
    );
    let mut checked_state = state.clone();
    let checked = A::check(policy, &mut checked_state, cost, now);
    prop_assert_eq!(checked, decided);
    if decided.allowed {
        let mut applied = state.clone();
        A::apply(policy, &mut applied, cost, now, now);
        prop_assert_eq!(&checked_state, &applied);
    } else {
        prop_assert_eq!(&checked_state, state, "a refusal changes nothing");
    }
    prop_assert!(decided.remaining <= decided.limit);
    prop_assert_eq!(decided.limit, policy.burst());
    Ok(())
}

fn remaining_predicts_admission<A: Algorithm>(driver: &Driver<A>) -> Result<(), TestCaseError> {
    let (policy, state, now) = (&driver.policy, &driver.state, driver.now);
    let available = remaining::<A>(policy, state, now);
    prop_assert!(available <= policy.burst());
    for cost in 1..=policy.burst() {
        let decision = A::decide(policy, state, cost, now);
        prop_assert_eq!(
            decision.allowed,
            cost <= available,
            "{}: cost {} with {} remaining",
            policy,
            cost,
            available
        );
        let expected = if decision.allowed {
            available - cost
        } else {
            available
        };
        prop_assert_eq!(decision.remaining, expected, "{}: cost {}", policy, cost);
    }
    Ok(())
}

fn waiting_never_lowers_remaining<A: Algorithm>(driver: &Driver<A>) -> Result<(), TestCaseError> {
    let (policy, state, now) = (&driver.policy, &driver.state, driver.now);
    let p = policy.period_nanos();
    // From a stepped-back clock (before `now`) to well after it.
    let mut instants: Vec<Nanos> = (0..=2 * p).map(|back| now.minus_nanos(back)).collect();
    instants.extend(probe_instants(policy, now));
    instants.sort_unstable();
    let mut last = 0;
    for at in instants {
        let available = remaining::<A>(policy, state, at);
        prop_assert!(
            available >= last,
            "{}: {} remaining at {} after {} earlier; state {:?}",
            policy,
            available,
            at,
            last,
            state
        );
        last = available;
    }
    Ok(())
}

fn reset_after_reaches_full_capacity<A: Algorithm>(
    driver: &Driver<A>,
    cost: u64,
    exact: bool,
) -> Result<(), TestCaseError> {
    let (policy, now) = (&driver.policy, driver.now);
    let mut state = driver.state.clone();
    let decision = A::check(policy, &mut state, cost, now);
    let full_at = now + decision.reset_after;
    prop_assert_eq!(
        remaining::<A>(policy, &state, full_at),
        decision.limit,
        "{}: {:?} but not full at {}; state {:?}",
        policy,
        decision,
        full_at,
        state
    );
    if exact && decision.reset_after > Duration::ZERO {
        prop_assert!(remaining::<A>(policy, &state, full_at - NS) < decision.limit);
    }
    Ok(())
}

/// The laws, as one proptest module per algorithm.
macro_rules! laws_for {
    ($module:ident, $algorithm:ty, $kind:expr, reserves_future: $future:expr) => {
        mod $module {
            use super::*;

            fn reached() -> impl Strategy<Value = Driver<$algorithm>> {
                (scenario($kind, Mix::ALL, 32), ordinary_origin()).prop_map(
                    |((policy, ops), origin): ((Policy, Vec<Op>), u64)| {
                        Driver::<$algorithm>::run(policy, origin, &ops)
                    },
                )
            }

            proptest! {
                #![proptest_config(config("proptest-regressions/properties/laws.txt"))]

                #[test]
                fn refused_retry_after_is_exact(driver in reached(), cost in 0u64..=8) {
                    super::retry_after_is_exact(&driver, cost)?;
                }

                #[test]
                fn refused_reservation_retry_after_is_exact(
                    driver in reached(),
                    cost in 0u64..=8,
                    max_wait in 0u64..=40,
                ) {
                    super::reservation_retry_after_is_exact(
                        &driver,
                        cost,
                        Duration::from_nanos(max_wait),
                    )?;
                }

                #[test]
                fn reservation_is_ready_when_a_check_would_pass(
                    driver in reached(),
                    cost in 0u64..=8,
                    max_wait in 0u64..=40,
                ) {
                    super::reservation_waits_at_most_max_wait(
                        &driver,
                        cost,
                        Duration::from_nanos(max_wait),
                        $future,
                    )?;
                }

                #[test]
                fn cancelling_a_check_restores_the_decisions(
                    driver in reached(),
                    cost in 0u64..=8,
                ) {
                    super::cancel_restores(&driver, cost, None)?;
                }

                #[test]
                fn cancelling_a_reservation_restores_the_decisions(
                    driver in reached(),
                    cost in 0u64..=8,
                    max_wait in 0u64..=40,
                ) {
                    super::cancel_restores(&driver, cost, Some(Duration::from_nanos(max_wait)))?;
                }

                #[test]
                fn settle_is_a_refund_or_charge_of_the_difference(
                    driver in reached(),
                    cost in 0u64..=6,
                    actual in 0u64..=8,
                    later in prop_oneof![Just(0u64), 0u64..=80],
                ) {
                    super::settle_laws(&driver, cost, actual, later)?;
                }

                #[test]
                fn check_is_decide_then_apply(driver in reached(), cost in 0u64..=8) {
                    super::check_is_decide_then_apply(&driver, cost)?;
                }

                #[test]
                fn remaining_predicts_which_costs_pass(driver in reached()) {
                    super::remaining_predicts_admission(&driver)?;
                }

                #[test]
                fn waiting_never_lowers_remaining(driver in reached()) {
                    super::waiting_never_lowers_remaining(&driver)?;
                }

                #[test]
                fn reset_after_is_when_the_limit_is_full_again(
                    driver in reached(),
                    cost in 0u64..=8,
                ) {
                    super::reset_after_reaches_full_capacity(&driver, cost, $future)?;
                }
            }
        }
    };
}

laws_for!(gcra, Gcra, AlgorithmKind::Gcra, reserves_future: true);
laws_for!(fixed_window, FixedWindow, AlgorithmKind::FixedWindow, reserves_future: false);
laws_for!(sliding_window, SlidingWindow, AlgorithmKind::SlidingWindow, reserves_future: false);
laws_for!(sliding_log, SlidingLog, AlgorithmKind::SlidingLog, reserves_future: false);
laws_for!(concurrency, Concurrency, AlgorithmKind::Concurrency, reserves_future: false);
