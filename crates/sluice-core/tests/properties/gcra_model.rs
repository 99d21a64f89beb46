//! GCRA against a naive token bucket.
//!
//! The model counts tokens in nanoseconds: a capacity of `burst × T`, a refill of one
//! nanosecond per nanosecond, `cost × T` per request, a level that charges and
//! reservations may push below zero. Every check and reservation must get exactly the
//! model's decision (allowed, remaining, reset_after, retry_after, cost_exceeds_capacity)
//! and every reservation the model's `ready_at`.

use std::time::Duration;

use proptest::prelude::*;
use sluice_core::{AlgorithmKind, Decision, Gcra, Nanos, Policy};

use crate::support::{Driver, Event, Mix, Op, config, ordinary_origin, scenario};

/// A token bucket in nanoseconds of credit.
#[derive(Debug)]
struct Bucket {
    burst: u64,
    t: i128,
    capacity: i128,
    level: i128,
    last: u64,
}

impl Bucket {
    fn new(policy: &Policy, origin: u64) -> Self {
        let t = i128::from(policy.emission_nanos());
        let capacity = i128::from(policy.burst()) * t;
        Self {
            burst: policy.burst(),
            t,
            capacity,
            level: capacity,
            last: origin,
        }
    }

    fn refill(&mut self, now: u64) {
        let elapsed = i128::from(now - self.last);
        self.level = (self.level + elapsed).min(self.capacity);
        self.last = now;
    }

    fn nanos(value: i128) -> Duration {
        Duration::from_nanos(u64::try_from(value).expect("a non-negative span"))
    }

    fn remaining(&self, level: i128) -> u64 {
        u64::try_from(level.max(0) / self.t).expect("at most the burst")
    }

    fn reset_after(&self, level: i128) -> Duration {
        Self::nanos(self.capacity - level)
    }

    /// The decision for `cost` now, and the level after it if allowed.
    fn decide(&self, cost: u64) -> (Decision, i128) {
        let remaining = self.remaining(self.level);
        let reset_after = self.reset_after(self.level);
        if cost > self.burst {
            return (
                Decision::exceeds_capacity(self.burst, remaining, reset_after),
                self.level,
            );
        }
        let need = i128::from(cost) * self.t;
        if need <= self.level {
            let after = self.level - need;
            let decision =
                Decision::allow(self.burst, self.remaining(after), self.reset_after(after));
            (decision, after)
        } else {
            let wait = Self::nanos(need - self.level);
            (
                Decision::deny(self.burst, remaining, reset_after, wait),
                self.level,
            )
        }
    }

    fn check(&mut self, cost: u64) -> Decision {
        let (decision, after) = self.decide(cost);
        self.level = after;
        decision
    }

    /// A reservation: `(decision, ready_at)` given the clock at `now`.
    fn reserve(&mut self, cost: u64, max_wait: u64, now: u64) -> (Decision, u64) {
        let (decision, after) = self.decide(cost);
        if decision.allowed || decision.cost_exceeds_capacity {
            self.level = after;
            return (decision, now);
        }
        let need = i128::from(cost) * self.t;
        let wait = need - self.level;
        let max_wait = i128::from(max_wait);
        if wait > max_wait {
            let retry_after = Some(Self::nanos(wait - max_wait));
            return (
                Decision {
                    retry_after,
                    ..decision
                },
                now,
            );
        }
        self.level -= need;
        let decision = Decision::allow(self.burst, 0, self.reset_after(self.level));
        (
            decision,
            now + u64::try_from(wait).expect("a positive wait"),
        )
    }

    fn refund(&mut self, amount: u64) {
        self.level = (self.level + i128::from(amount) * self.t).min(self.capacity);
    }

    fn charge(&mut self, amount: u64) {
        self.level -= i128::from(amount) * self.t;
    }
}

proptest! {
    #![proptest_config(config("proptest-regressions/properties/gcra_model.txt"))]

    #[test]
    fn gcra_decides_exactly_like_a_token_bucket_in_nanoseconds(
        (policy, ops) in scenario(AlgorithmKind::Gcra, Mix::ALL, 64),
        origin in ordinary_origin(),
    ) {
        let mut gcra = Driver::<Gcra>::new(policy, origin);
        let mut bucket = Bucket::new(&policy, origin);
        for (i, op) in ops.iter().enumerate() {
            let events_before = gcra.events.len();
            let decision = gcra.step(op);
            let now = gcra.now.as_u64();
            bucket.refill(now);
            match *op {
                Op::Check { cost, .. } => {
                    let expected = bucket.check(cost);
                    prop_assert_eq!(decision, Some(expected), "op {} {:?} at {}", i, op, now);
                }
                Op::Reserve { cost, max_wait, .. } => {
                    let (expected, ready_at) = bucket.reserve(cost, max_wait, now);
                    prop_assert_eq!(decision, Some(expected), "op {} {:?} at {}", i, op, now);
                    if expected.allowed {
                        let Some(Event::Admit { ready_at: got, .. }) = gcra.events.last() else {
                            panic!("op {i}: an allowed reservation records an admission");
                        };
                        prop_assert_eq!(*got, Nanos::new(ready_at), "op {} {:?}", i, op);
                    }
                }
                Op::Refund { .. } | Op::Charge { .. } => {
                    match gcra.events.get(events_before) {
                        Some(Event::Refund { amount, .. }) => bucket.refund(*amount),
                        Some(Event::Charge { amount, .. }) => bucket.charge(*amount),
                        _ => {}
                    }
                }
            }
        }
    }
}
