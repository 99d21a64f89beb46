//! The reference model: the sluice-core algorithms applied directly to a map of states.

use std::collections::HashMap;
use std::time::Duration;

use sluice_core::{
    Algorithm, Concurrency, Decision, FixedWindow, Gcra, GcraState, LeaseState, LogState, Nanos,
    SlidingLog, SlidingWindow, Ticket, Verdict, WindowState,
};

use crate::dispatch::with_algorithm;
use crate::store::{Limit, Reservation};

/// States of one algorithm, by canonical key string and period: two limits share a state
/// only if they have the same key, algorithm and period.
type Table<S> = HashMap<(String, u64), S>;

fn id(key: &sluice_core::Key, policy: &sluice_core::Policy) -> (String, u64) {
    (key.as_str().to_owned(), policy.period_nanos())
}

/// The reference every store is compared against: a synchronous, single-threaded map from
/// (algorithm, canonical key) to that algorithm's state, on which every operation applies
/// the sluice-core algorithms directly.
///
/// The model never drops a state on its own (only [`reset`](Model::reset) forgets one), so
/// it is the plain meaning of "apply the algorithm to everything that happened to this
/// key". A store may drop states whose [`expires_at`](Algorithm::expires_at) has passed;
/// the [`Algorithm`] contract promises that such states decide like fresh ones, so a correct
/// store still answers exactly like the model.
///
/// Limits on the same key share one state only when they also have the same algorithm and
/// period (as in every store): `10/s` and `1000/h` on one user count separately, while a
/// limit whose count changes keeps its state.
///
/// Every operation takes `now`, the instant the store under test reads from its clock.
#[derive(Clone, Debug, Default)]
pub struct Model {
    gcra: Table<GcraState>,
    fixed_window: Table<WindowState>,
    sliding_window: Table<WindowState>,
    sliding_log: Table<LogState>,
    concurrency: Table<LeaseState>,
}

/// An algorithm together with the model's table of its states.
trait Modelled: Algorithm {
    fn table(model: &mut Model) -> &mut Table<Self::State>;
    fn table_ref(model: &Model) -> &Table<Self::State>;
}

macro_rules! modelled {
    ($A:ty, $field:ident) => {
        impl Modelled for $A {
            fn table(model: &mut Model) -> &mut Table<Self::State> {
                &mut model.$field
            }
            fn table_ref(model: &Model) -> &Table<Self::State> {
                &model.$field
            }
        }
    };
}
modelled!(Gcra, gcra);
modelled!(FixedWindow, fixed_window);
modelled!(SlidingWindow, sliding_window);
modelled!(SlidingLog, sliding_log);
modelled!(Concurrency, concurrency);

impl Model {
    /// A model in which no limit has been used.
    pub fn new() -> Self {
        Self::default()
    }

    /// [`Store::check`](crate::Store::check): decides `cost` units on one limit and debits
    /// them if allowed.
    pub fn check(&mut self, limit: Limit<'_>, cost: u64, now: Nanos) -> Decision {
        self.step(limit, cost, now, None).0
    }

    /// [`Store::check_all`](crate::Store::check_all): the limits are processed in order on
    /// scratch copies of their states (so two limits on one state see each other's debit),
    /// and the copies replace the states only if every limit allowed.
    pub fn check_all(&mut self, limits: &[Limit<'_>], cost: u64, now: Nanos) -> Verdict {
        let mut scratch = self.clone();
        let decisions = limits
            .iter()
            .map(|&limit| scratch.step(limit, cost, now, None).0)
            .collect();
        let verdict = Verdict::from_decisions(decisions);
        if verdict.allowed {
            *self = scratch;
        }
        verdict
    }

    /// [`Store::peek`](crate::Store::peek): what a check of zero units decides now.
    pub fn peek(&self, limit: Limit<'_>, now: Nanos) -> Decision {
        with_algorithm!(limit.policy.algorithm(), A => {
            let fresh = <A as Algorithm>::State::default();
            let state = A::table_ref(self).get(&id(limit.key, limit.policy)).unwrap_or(&fresh);
            A::decide(limit.policy, state, 0, now)
        })
    }

    /// [`Store::reserve`](crate::Store::reserve): plans then applies each limit in order on
    /// scratch copies, keeps them only if every limit allowed; the reservation is ready at
    /// the latest of its holds' instants.
    pub fn reserve(
        &mut self,
        limits: &[Limit<'_>],
        cost: u64,
        max_wait: Duration,
        now: Nanos,
    ) -> Reservation {
        let mut scratch = self.clone();
        let (decisions, tickets): (Vec<Decision>, Vec<Option<Ticket>>) = limits
            .iter()
            .map(|&limit| scratch.step(limit, cost, now, Some(max_wait)))
            .unzip();
        let verdict = Verdict::from_decisions(decisions);
        if verdict.allowed {
            *self = scratch;
        }
        Reservation::new(limits, verdict, tickets, now)
    }

    /// [`Store::cancel`](crate::Store::cancel): refunds each hold's whole cost to its state,
    /// if the state is still there.
    pub fn cancel(&mut self, reservation: &Reservation, now: Nanos) {
        for hold in &reservation.holds {
            with_algorithm!(hold.policy.algorithm(), A => {
                if let Some(state) = A::table(self).get_mut(&id(&hold.key, &hold.policy)) {
                    A::refund(&hold.policy, state, &hold.ticket, hold.ticket.cost, now);
                }
            });
        }
    }

    /// [`Store::settle`](crate::Store::settle): settles each hold to `actual` units. A
    /// state that is gone still gets the extra usage of an estimate that was too low.
    pub fn settle(&mut self, reservation: &Reservation, actual: u64, now: Nanos) {
        for hold in &reservation.holds {
            with_algorithm!(hold.policy.algorithm(), A => {
                let table = A::table(self);
                if let Some(state) = table.get_mut(&id(&hold.key, &hold.policy)) {
                    A::settle(&hold.policy, state, &hold.ticket, actual, now);
                } else if actual > hold.ticket.cost {
                    let mut state = <A as Algorithm>::State::default();
                    A::charge(&hold.policy, &mut state, &hold.ticket, actual - hold.ticket.cost, now);
                    table.insert(id(&hold.key, &hold.policy), state);
                }
            });
        }
    }

    /// [`Store::reset`](crate::Store::reset): forgets the state of one limit.
    pub fn reset(&mut self, limit: Limit<'_>) {
        with_algorithm!(limit.policy.algorithm(), A => {
            A::table(self).remove(&id(limit.key, limit.policy));
        });
    }

    /// Decides (or, with `max_wait`, plans) one limit and applies it to the state if allowed.
    fn step(
        &mut self,
        limit: Limit<'_>,
        cost: u64,
        now: Nanos,
        max_wait: Option<Duration>,
    ) -> (Decision, Option<Ticket>) {
        let policy = limit.policy;
        with_algorithm!(policy.algorithm(), A => {
            let state = A::table(self).entry(id(limit.key, policy)).or_default();
            let (decision, ready_at) = match max_wait {
                None => (A::decide(policy, state, cost, now), now),
                Some(max_wait) => {
                    let plan = A::plan(policy, state, cost, now, max_wait);
                    (plan.decision, plan.ready_at)
                }
            };
            let ticket = decision
                .allowed
                .then(|| A::apply(policy, state, cost, ready_at, now));
            (decision, ticket)
        })
    }
}
