//! Strategies and the driver shared by the property tests.
//!
//! Policies are tiny (limits up to 6, periods of a few dozen nanoseconds) so that a run of
//! a few dozen operations crosses many windows, refills and expiries. The [`Driver`] plays
//! [`Op`]s against one algorithm and records every admission, refund and charge as an
//! [`Event`], which the bound checkers replay.

use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::Union;
use proptest::test_runner::FileFailurePersistence;
use sluice_core::{Algorithm, AlgorithmKind, Decision, Nanos, Policy, Rate, Ticket};

/// Cases per property: enough to find edge cases, few enough to keep the suite fast.
pub(crate) const CASES: u32 = 384;

/// The proptest configuration every property uses; failing cases are saved to
/// `regressions` (relative to the crate root) and replayed first on every run.
pub(crate) fn config(regressions: &'static str) -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions))),
        ..ProptestConfig::with_cases(CASES)
    }
}

/// A small policy of `kind`: limit 1..=6 per a period of limit..=limit+30 ns, and for GCRA
/// a burst of 1..=8 independent of the limit.
pub(crate) fn policy(kind: AlgorithmKind) -> BoxedStrategy<Policy> {
    (1u64..=6, 0u64..=30, 1u64..=8)
        .prop_map(move |(limit, extra, burst)| {
            let rate = Rate::new(limit, Duration::from_nanos(limit + extra))
                .expect("at most one unit per nanosecond");
            let policy = Policy::new(kind, rate);
            if kind == AlgorithmKind::Gcra {
                policy.with_burst(burst).expect("a small burst fits")
            } else {
                policy
            }
        })
        .boxed()
}

/// Where a run's timeline starts: the epoch, somewhere ordinary, or within a few periods of
/// [`Nanos::MAX`] (times then saturate at the last instant).
pub(crate) fn origin() -> BoxedStrategy<u64> {
    prop_oneof![
        2 => Just(0u64),
        5 => 0u64..(1 << 40),
        2 => (u64::MAX - 200)..=u64::MAX,
    ]
    .boxed()
}

/// An origin far from both ends of time, for laws that look a few periods ahead.
pub(crate) fn ordinary_origin() -> BoxedStrategy<u64> {
    prop_oneof![Just(0u64), 0u64..(1 << 40)].boxed()
}

/// One step of a run. `dt` advances the clock before the operation.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Op {
    /// `Algorithm::check`.
    Check { dt: u64, cost: u64 },
    /// `Algorithm::plan` with `max_wait` nanoseconds, then `apply` when allowed.
    Reserve { dt: u64, cost: u64, max_wait: u64 },
    /// Refund up to `amount` of an earlier admission (clamped to what it still holds).
    Refund { dt: u64, pick: Index, amount: u64 },
    /// Charge `amount` more to an earlier admission.
    Charge { dt: u64, pick: Index, amount: u64 },
}

impl Op {
    /// How far this operation advances the clock.
    pub(crate) fn dt(&self) -> u64 {
        match *self {
            Self::Check { dt, .. }
            | Self::Reserve { dt, .. }
            | Self::Refund { dt, .. }
            | Self::Charge { dt, .. } => dt,
        }
    }
}

/// Which operations a run may contain besides checks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mix {
    /// Reservations (`plan` + `apply`).
    pub(crate) reserve: bool,
    /// Refunds of earlier admissions.
    pub(crate) refund: bool,
    /// Charges to earlier admissions.
    pub(crate) charge: bool,
}

impl Mix {
    /// Every kind of operation.
    pub(crate) const ALL: Self = Self {
        reserve: true,
        refund: true,
        charge: true,
    };
    /// Everything but refunds, which give capacity back on purpose.
    pub(crate) const NO_REFUNDS: Self = Self {
        reserve: true,
        refund: false,
        charge: true,
    };
}

/// A clock step: mostly none or small, sometimes several periods.
pub(crate) fn dt(period: u64) -> BoxedStrategy<u64> {
    prop_oneof![
        4 => Just(0u64),
        4 => 0..=period / 2 + 1,
        2 => 0..=3 * period,
    ]
    .boxed()
}

/// A cost: mostly within the capacity, sometimes zero, sometimes more than can ever pass.
pub(crate) fn cost(capacity: u64) -> BoxedStrategy<u64> {
    prop_oneof![
        8 => 1..=capacity,
        1 => Just(0u64),
        1 => capacity + 1..=capacity + 2,
    ]
    .boxed()
}

/// One operation for `policy` from `mix`.
pub(crate) fn op(policy: &Policy, mix: Mix) -> BoxedStrategy<Op> {
    let period = policy.period_nanos();
    let capacity = policy.burst();
    let mut arms: Vec<(u32, BoxedStrategy<Op>)> = vec![(
        6,
        (dt(period), cost(capacity))
            .prop_map(|(dt, cost)| Op::Check { dt, cost })
            .boxed(),
    )];
    if mix.reserve {
        arms.push((
            2,
            (dt(period), cost(capacity), 0..=3 * period)
                .prop_map(|(dt, cost, max_wait)| Op::Reserve { dt, cost, max_wait })
                .boxed(),
        ));
    }
    if mix.refund {
        arms.push((
            2,
            (dt(period), any::<Index>(), 1..=capacity)
                .prop_map(|(dt, pick, amount)| Op::Refund { dt, pick, amount })
                .boxed(),
        ));
    }
    if mix.charge {
        arms.push((
            1,
            (dt(period), any::<Index>(), 1..=capacity)
                .prop_map(|(dt, pick, amount)| Op::Charge { dt, pick, amount })
                .boxed(),
        ));
    }
    Union::new_weighted(arms).boxed()
}

/// A policy of `kind` with up to `max_len` operations for it.
pub(crate) fn scenario(
    kind: AlgorithmKind,
    mix: Mix,
    max_len: usize,
) -> BoxedStrategy<(Policy, Vec<Op>)> {
    policy(kind)
        .prop_flat_map(move |policy| {
            (
                Just(policy),
                prop::collection::vec(op(&policy, mix), 1..=max_len),
            )
        })
        .boxed()
}

/// Something that happened to the limit during a run.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Event {
    /// Capacity taken by a check or reservation at `now`, for use at `ready_at`.
    Admit {
        /// When the decision was made.
        now: Nanos,
        /// When the units are available (`now` except for a GCRA reservation).
        ready_at: Nanos,
        /// The receipt.
        ticket: Ticket,
    },
    /// `amount` of admission number `admission` given back at `now`.
    Refund {
        /// When.
        now: Nanos,
        /// Index into the admissions, in order.
        admission: usize,
        /// Units given back.
        amount: u64,
    },
    /// `amount` more charged at `now` for admission number `admission`.
    Charge {
        /// When.
        now: Nanos,
        /// Index into the admissions, in order.
        admission: usize,
        /// Units charged.
        amount: u64,
    },
}

/// Plays operations against algorithm `A` and records what happened.
#[derive(Debug)]
pub(crate) struct Driver<A: Algorithm> {
    /// The policy.
    pub(crate) policy: Policy,
    /// The limit's state.
    pub(crate) state: A::State,
    /// The clock.
    pub(crate) now: Nanos,
    /// Every admission's ticket and how much of it can still be refunded.
    pub(crate) tickets: Vec<(Ticket, u64)>,
    /// Everything that happened, in order.
    pub(crate) events: Vec<Event>,
}

impl<A: Algorithm> Driver<A> {
    /// A fresh limit with the clock at `origin`.
    pub(crate) fn new(policy: Policy, origin: u64) -> Self {
        Self {
            policy,
            state: A::State::default(),
            now: Nanos::new(origin),
            tickets: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Plays `ops` from a fresh limit at `origin`.
    pub(crate) fn run(policy: Policy, origin: u64, ops: &[Op]) -> Self {
        let mut driver = Self::new(policy, origin);
        for op in ops {
            driver.step(op);
        }
        driver
    }

    /// Advances the clock by the operation's `dt` and plays it.
    pub(crate) fn step(&mut self, op: &Op) -> Option<Decision> {
        self.now = self.now.plus_nanos(op.dt());
        self.play(op)
    }

    /// Plays `op` at the current instant (ignoring its `dt`). Returns the decision of a
    /// check or reservation.
    pub(crate) fn play(&mut self, op: &Op) -> Option<Decision> {
        let (policy, now) = (self.policy, self.now);
        match *op {
            Op::Check { cost, .. } => {
                let decision = A::decide(&policy, &self.state, cost, now);
                if decision.allowed {
                    let ticket = A::apply(&policy, &mut self.state, cost, now, now);
                    self.admitted(now, now, ticket);
                }
                Some(decision)
            }
            Op::Reserve { cost, max_wait, .. } => {
                let plan = A::plan(
                    &policy,
                    &self.state,
                    cost,
                    now,
                    Duration::from_nanos(max_wait),
                );
                if plan.decision.allowed {
                    let ticket = A::apply(&policy, &mut self.state, cost, plan.ready_at, now);
                    self.admitted(now, plan.ready_at, ticket);
                }
                Some(plan.decision)
            }
            Op::Refund { pick, amount, .. } => {
                let admission = self.pick(pick)?;
                let (ticket, refundable) = &mut self.tickets[admission];
                let amount = amount.min(*refundable);
                if amount == 0 {
                    return None;
                }
                *refundable -= amount;
                let ticket = *ticket;
                A::refund(&policy, &mut self.state, &ticket, amount, now);
                self.events.push(Event::Refund {
                    now,
                    admission,
                    amount,
                });
                None
            }
            Op::Charge { pick, amount, .. } => {
                let admission = self.pick(pick)?;
                let ticket = self.tickets[admission].0;
                A::charge(&policy, &mut self.state, &ticket, amount, now);
                self.events.push(Event::Charge {
                    now,
                    admission,
                    amount,
                });
                None
            }
        }
    }

    fn pick(&self, pick: Index) -> Option<usize> {
        (!self.tickets.is_empty()).then(|| pick.index(self.tickets.len()))
    }

    fn admitted(&mut self, now: Nanos, ready_at: Nanos, ticket: Ticket) {
        self.tickets.push((ticket, ticket.cost));
        self.events.push(Event::Admit {
            now,
            ready_at,
            ticket,
        });
    }
}
