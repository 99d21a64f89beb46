//! The admission bound each algorithm's module doc states, checked exactly.
//!
//! Each property plays random operations and then replays the recorded events against a
//! naive checker that knows nothing of the algorithm's state:
//!
//! - GCRA: over any closed interval of length `L`, admitted cost ≤ `burst + L / T` (checks,
//!   reservations counted at `ready_at`, charges; no refunds, which give capacity back on
//!   purpose). Also with a clock that steps backwards, since the bound needs no order.
//! - Fixed window: net admitted cost (admissions less refunds) in any aligned window ≤ limit.
//! - Sliding window: the same aligned bound, and at each admission
//!   `previous × (period − elapsed) / period + current ≤ limit`, with both counts
//!   recomputed from the event history.
//! - Sliding log: for every `t`, net admitted cost in `(t − period, t]` ≤ limit.
//! - Concurrency: at every admission, the admitted cost of leases neither released nor
//!   expired ≤ limit.
//!
//! Runs start at the epoch, at an ordinary instant, or a few periods before `Nanos::MAX`.

use std::collections::HashMap;

use proptest::prelude::*;
use sluice_core::{
    AlgorithmKind, Concurrency, FixedWindow, Gcra, Policy, SlidingLog, SlidingWindow,
};

use crate::support::{Driver, Event, Mix, config, origin, scenario};

/// Admissions as `(instant, cost)` for the GCRA bound: reservations count at `ready_at`.
fn gcra_admissions(events: &[Event]) -> Vec<(u128, u64)> {
    let mut admitted: Vec<(u128, u64)> = events
        .iter()
        .filter_map(|event| match *event {
            Event::Admit {
                ready_at, ticket, ..
            } => Some((u128::from(ready_at.as_u64()), ticket.cost)),
            _ => None,
        })
        .collect();
    admitted.sort_unstable();
    admitted
}

/// Over every closed interval between two admission instants (the intervals that matter),
/// the admitted cost is at most `burst + L / T`.
fn assert_gcra_bound(policy: &Policy, events: &[Event]) -> Result<(), TestCaseError> {
    let t = u128::from(policy.emission_nanos());
    let burst = u128::from(policy.burst());
    let admitted = gcra_admissions(events);
    for (i, &(from, _)) in admitted.iter().enumerate() {
        let mut sum = 0u128;
        for &(to, cost) in &admitted[i..] {
            sum += u128::from(cost);
            let bound = burst + (to - from) / t;
            prop_assert!(
                sum <= bound,
                "{policy}: {sum} admitted in [{from}, {to}], bound {bound}; admissions {admitted:?}"
            );
        }
    }
    Ok(())
}

/// Net admitted cost per admission: its cost less everything refunded from it.
fn net_admissions(events: &[Event]) -> Vec<(u128, i128)> {
    let mut admitted: Vec<(u128, i128)> = Vec::new();
    for event in events {
        match *event {
            Event::Admit { ticket, .. } => {
                admitted.push((u128::from(ticket.at.as_u64()), i128::from(ticket.cost)));
            }
            Event::Refund {
                admission, amount, ..
            } => admitted[admission].1 -= i128::from(amount),
            Event::Charge { .. } => {}
        }
    }
    admitted
}

/// Net admitted cost in every aligned window is at most the limit.
fn assert_aligned_window_bound(policy: &Policy, events: &[Event]) -> Result<(), TestCaseError> {
    let period = u128::from(policy.period_nanos());
    let mut per_window: HashMap<u128, i128> = HashMap::new();
    for (at, cost) in net_admissions(events) {
        *per_window.entry(at / period).or_default() += cost;
    }
    for (window, admitted) in per_window {
        prop_assert!(
            admitted <= i128::from(policy.limit()),
            "{policy}: {admitted} admitted in window starting at {}; events {events:?}",
            window * period
        );
    }
    Ok(())
}

/// At each admission, the weighted count of the sliding window, recomputed from the history
/// (admissions and charges land in the window they happen in, refunds in the window of the
/// admission they refund), is at most the limit.
fn assert_sliding_window_weighted_bound(
    policy: &Policy,
    events: &[Event],
) -> Result<(), TestCaseError> {
    let period = u128::from(policy.period_nanos());
    let limit = i128::from(policy.limit());
    let mut used: HashMap<u128, i128> = HashMap::new();
    let mut admissions = Vec::new();
    for event in events {
        match *event {
            Event::Admit { now, ticket, .. } => {
                let now = u128::from(now.as_u64());
                let window = now / period;
                let elapsed = now - window * period;
                let previous = if window == 0 {
                    0
                } else {
                    used.get(&(window - 1)).copied().unwrap_or(0)
                };
                let current = used.get(&window).copied().unwrap_or(0);
                let cost = i128::from(ticket.cost);
                let p = period as i128;
                let weighted_scaled = previous * (p - elapsed as i128) + (current + cost) * p;
                prop_assert!(
                    weighted_scaled <= limit * p,
                    "{policy}: admitted {cost} at {now} with previous {previous}, current \
                     {current}, elapsed {elapsed}; events {events:?}"
                );
                *used.entry(window).or_default() += cost;
                admissions.push(ticket);
            }
            Event::Refund {
                admission, amount, ..
            } => {
                let window = u128::from(admissions[admission].at.as_u64()) / period;
                *used.entry(window).or_default() -= i128::from(amount);
            }
            Event::Charge { now, amount, .. } => {
                let window = u128::from(now.as_u64()) / period;
                *used.entry(window).or_default() += i128::from(amount);
            }
        }
    }
    Ok(())
}

/// For every instant `t`, net admitted cost in `(t − period, t]` is at most the limit.
/// Only instants at admissions need checking: they are where the sum can grow.
fn assert_sliding_log_bound(policy: &Policy, events: &[Event]) -> Result<(), TestCaseError> {
    let period = u128::from(policy.period_nanos());
    let admitted = net_admissions(events);
    for &(t, _) in &admitted {
        let in_window: i128 = admitted
            .iter()
            .filter(|&&(at, _)| at <= t && at + period > t)
            .map(|&(_, cost)| cost)
            .sum();
        prop_assert!(
            in_window <= i128::from(policy.limit()),
            "{policy}: {in_window} admitted in ({}, {t}]; admissions {admitted:?}",
            t.saturating_sub(period)
        );
    }
    Ok(())
}

/// A lease as the checker sees it.
#[derive(Debug)]
struct Held {
    expires_at: u128,
    cost: i128,
    refunded: i128,
    charged: i128,
    released: bool,
}

impl Held {
    fn live(&self, now: u128) -> bool {
        !self.released && self.expires_at > now
    }
}

/// At every admission, the admitted cost (less refunds) of leases that are neither
/// released nor expired, the new one included, is at most the limit.
fn assert_concurrency_bound(policy: &Policy, events: &[Event]) -> Result<(), TestCaseError> {
    let period = u128::from(policy.period_nanos());
    let mut leases: Vec<Held> = Vec::new();
    for event in events {
        match *event {
            Event::Admit { now, ticket, .. } => {
                let now = u128::from(now.as_u64());
                let cost = i128::from(ticket.cost);
                let in_flight: i128 = leases
                    .iter()
                    .filter(|lease| lease.live(now))
                    .map(|lease| lease.cost - lease.refunded)
                    .sum();
                prop_assert!(
                    in_flight + cost <= i128::from(policy.limit()),
                    "{policy}: admitted {cost} at {now} with {in_flight} in flight; \
                     events {events:?}"
                );
                leases.push(Held {
                    expires_at: now + period,
                    cost,
                    refunded: 0,
                    charged: 0,
                    released: cost == 0,
                });
            }
            Event::Refund {
                now,
                admission,
                amount,
            } => {
                let lease = &mut leases[admission];
                if lease.live(u128::from(now.as_u64())) {
                    // Giving back the whole ticket releases the lease, charges included.
                    if i128::from(amount) >= lease.cost {
                        lease.released = true;
                    } else {
                        lease.refunded += i128::from(amount);
                        lease.released = lease.cost + lease.charged == lease.refunded;
                    }
                }
            }
            Event::Charge {
                now,
                admission,
                amount,
            } => {
                let lease = &mut leases[admission];
                if lease.live(u128::from(now.as_u64())) {
                    lease.charged += i128::from(amount);
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config("proptest-regressions/properties/bounds.txt"))]

    #[test]
    fn gcra_admits_at_most_burst_plus_interval_over_emission_interval(
        (policy, ops) in scenario(AlgorithmKind::Gcra, Mix::NO_REFUNDS, 48),
        origin in origin(),
    ) {
        let driver = Driver::<Gcra>::run(policy, origin, &ops);
        assert_gcra_bound(&policy, &driver.events)?;
    }

    #[test]
    fn gcra_bound_holds_even_when_the_clock_steps_backwards(
        (policy, ops) in scenario(AlgorithmKind::Gcra, Mix::NO_REFUNDS, 48),
        backs in prop::collection::vec(prop_oneof![7 => Just(0u64), 3 => 0u64..=80], 48),
        origin in 100u64..(1 << 40),
    ) {
        let mut driver = Driver::<Gcra>::new(policy, origin);
        for (op, back) in ops.iter().zip(backs) {
            driver.now = driver.now.minus_nanos(back).plus_nanos(op.dt());
            driver.play(op);
        }
        assert_gcra_bound(&policy, &driver.events)?;
    }

    #[test]
    fn fixed_window_admits_at_most_limit_per_aligned_window(
        (policy, ops) in scenario(AlgorithmKind::FixedWindow, Mix::ALL, 48),
        origin in origin(),
    ) {
        let driver = Driver::<FixedWindow>::run(policy, origin, &ops);
        assert_aligned_window_bound(&policy, &driver.events)?;
    }

    #[test]
    fn sliding_window_admits_at_most_limit_per_aligned_window_and_weighted(
        (policy, ops) in scenario(AlgorithmKind::SlidingWindow, Mix::ALL, 48),
        origin in origin(),
    ) {
        let driver = Driver::<SlidingWindow>::run(policy, origin, &ops);
        assert_aligned_window_bound(&policy, &driver.events)?;
        assert_sliding_window_weighted_bound(&policy, &driver.events)?;
    }

    #[test]
    fn sliding_log_admits_at_most_limit_in_any_period(
        (policy, ops) in scenario(AlgorithmKind::SlidingLog, Mix::ALL, 48),
        origin in origin(),
    ) {
        let driver = Driver::<SlidingLog>::run(policy, origin, &ops);
        assert_sliding_log_bound(&policy, &driver.events)?;
    }

    #[test]
    fn concurrency_never_has_more_than_limit_in_flight(
        (policy, ops) in scenario(AlgorithmKind::Concurrency, Mix::ALL, 48),
        origin in origin(),
    ) {
        let driver = Driver::<Concurrency>::run(policy, origin, &ops);
        assert_concurrency_bound(&policy, &driver.events)?;
    }
}
