//! The conformance suite every [`QueueStore`] must pass: generated sequences of joins,
//! serves, status reads, departures, pauses and time passing, each answer compared with a
//! reference model (sluice-core's [`Queue`] for the order, the limits [`Model`] for the
//! grants), on a [`ManualClock`] the suite drives. Nothing sleeps.
//!
//! Tickets are compared by the order the joins that made them came in, not by their
//! numbers, which are each store's own.
//!
//! ```no_run
//! # async fn example() {
//! use sluice_store::queue::MemoryQueues;
//! use sluice_store::{MemoryStore, conformance};
//!
//! conformance::queue::run(&conformance::Config::default(), |clock| async move {
//!     MemoryQueues::new(MemoryStore::with_clock(clock))
//! })
//! .await;
//! # }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
use sluice_core::queue::{Overflow, Queue, QueueConfig, WaiterId};
use sluice_core::{Clock, Key, ManualClock, Nanos, Policy, Verdict};

use super::model::Model;
use super::{Config, START};
use crate::queue::{Joined, Line, QueueStore, QueueTicket, Request, TicketStatus};
use crate::store::Limit;

#[derive(Clone, Debug)]
enum Op {
    /// A request joins; `wait` is its max wait in ms.
    Join {
        priority: i32,
        tenant: Option<u8>,
        cost: u64,
        wait: u64,
    },
    Serve,
    /// Reads the status of the n-th join's ticket (modulo the joins so far).
    Status(usize),
    /// Serves, then reads the status of the n-th join's ticket, in one call.
    Poll(usize),
    Leave(usize),
    Advance(u64),
    Pause,
    Resume,
}

fn op() -> impl Strategy<Value = Op> {
    // Few priorities and several tenants, so that lines of one priority and several
    // tenants form often, and their turns decide the grants.
    prop_oneof![
        6 => (0_i32..2, proptest::option::of(0_u8..3), 1_u64..3, 0_u64..4000)
            .prop_map(|(priority, tenant, cost, wait)| Op::Join { priority, tenant, cost, wait }),
        3 => Just(Op::Serve),
        2 => any::<usize>().prop_map(Op::Status),
        2 => any::<usize>().prop_map(Op::Poll),
        1 => any::<usize>().prop_map(Op::Leave),
        3 => (1_u64..700).prop_map(Op::Advance),
        1 => Just(Op::Pause),
        1 => Just(Op::Resume),
    ]
}

fn overflow() -> impl Strategy<Value = Overflow> {
    proptest::sample::select(Overflow::ALL.to_vec())
}

/// The model of a line: the core queue for the order, the limits model for the grants.
struct LineModel {
    /// Which of the universe's limits the line guards.
    which: u8,
    queue: Queue<i32, u64>,
    outcomes: HashMap<u64, TicketStatus>,
    limits: Model,
}

impl LineModel {
    fn check(&mut self, universe: &Universe, cost: u64, now: Nanos) -> Verdict {
        let limits = universe.limits(self.which);
        self.limits.check_all(&limits, cost, now)
    }

    fn serve(&mut self, universe: &Universe, now: Nanos) -> (Vec<u64>, Option<Nanos>) {
        let mut granted = Vec::new();
        for expired in self.queue.expire(now) {
            self.outcomes
                .insert(expired.id.get(), TicketStatus::TimedOut);
        }
        loop {
            if self.queue.is_paused() {
                return (granted, self.queue.next_deadline());
            }
            let Some(head) = self.queue.head() else {
                return (granted, None);
            };
            let (id, cost) = (head.id, head.value);
            let verdict = self.check(universe, cost, now);
            if verdict.allowed {
                self.queue.pop();
                granted.push(id.get());
                self.outcomes
                    .insert(id.get(), TicketStatus::Granted(verdict));
                continue;
            }
            if verdict.decisions.iter().any(|d| d.cost_exceeds_capacity) {
                self.queue.remove(id);
                self.outcomes.insert(id.get(), TicketStatus::TooLarge);
                continue;
            }
            let mut wait = Some(Duration::ZERO);
            for d in verdict.decisions.iter().filter(|d| !d.allowed) {
                wait = wait.zip(d.retry_after).map(|(a, b)| a.max(b));
            }
            let ready = wait.map(|w| now.plus_nanos(sluice_core::time::duration_nanos(w)));
            let next = ready.into_iter().chain(self.queue.next_deadline()).min();
            return (granted, next);
        }
    }

    fn status(&mut self, id: u64) -> TicketStatus {
        if let Some(status) = self.outcomes.remove(&id) {
            return status;
        }
        if self.queue.get(WaiterId::from_number(id)).is_some() {
            TicketStatus::Waiting
        } else {
            TicketStatus::Unknown
        }
    }
}

/// The key and policies the sequences use.
struct Universe {
    line: Key,
    keys: [Key; 2],
    policies: [Policy; 2],
}

impl Universe {
    fn new() -> Self {
        let key = |user: &str| {
            Key::new("queue-conformance", [("user", user)]).expect("the suite's keys are valid")
        };
        Self {
            line: key("line"),
            keys: [key("a"), key("b")],
            policies: [
                Policy::parse("gcra", "2/s").expect("valid"),
                Policy::parse("fixed_window", "3/s").expect("valid"),
            ],
        }
    }

    /// Bit 0: the GCRA limit on key a; bit 1: the window limit on key b.
    fn limits(&self, which: u8) -> Vec<Limit<'_>> {
        (0..2)
            .filter(|i| which & (1 << i) != 0)
            .map(|i| Limit::new(&self.keys[i], &self.policies[i]))
            .collect()
    }
}

/// Runs `config.cases` generated sequences against stores from `make_store`.
///
/// # Panics
///
/// When the store disagrees with the model or fails, with the sequence and the step.
pub async fn run<Q, F, Fut>(config: &Config, make_store: F)
where
    Q: QueueStore,
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = Q>,
{
    let mut seed = [0_u8; 32];
    seed[..8].copy_from_slice(&config.seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        proptest::test_runner::Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed),
    );
    let strategy = (
        0_usize..10,
        overflow(),
        1_u8..4,
        vec(op(), 1..=config.max_ops.max(1)),
    );
    for case in 0..config.cases {
        let tree = strategy
            .new_tree(&mut runner)
            .expect("the strategy always generates");
        let (max_length, overflow, which, ops) = tree.current();
        if let Err(failure) = replay(max_length, overflow, which, &ops, &make_store).await {
            panic!(
                "queue conformance case {case} (max_length {max_length}, {}, limits {which}): {failure}\nops: {ops:#?}",
                overflow.name()
            );
        }
    }
}

async fn replay<Q, F, Fut>(
    max_length: usize,
    overflow: Overflow,
    which: u8,
    ops: &[Op],
    make_store: &F,
) -> Result<(), String>
where
    Q: QueueStore,
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = Q>,
{
    let universe = Universe::new();
    let clock = ManualClock::new(START);
    let store = make_store(clock.clone()).await;
    let config = QueueConfig {
        max_length,
        overflow,
    };
    let limits = universe.limits(which);
    let line = Line {
        key: &universe.line,
        limits: &limits,
        config,
    };
    let mut model = LineModel {
        which,
        queue: Queue::new(config),
        outcomes: HashMap::new(),
        limits: Model::new(),
    };
    let names = ["t0", "t1", "t2"];
    // The n-th join's ticket in the store and in the model, when it waited.
    let mut tickets: Vec<Option<(QueueTicket, u64)>> = Vec::new();
    // Store ticket -> model id, to compare the grants of a serve.
    let mut by_store: BTreeMap<QueueTicket, u64> = BTreeMap::new();
    for (step, op) in ops.iter().enumerate() {
        let now = clock.now();
        let fail = |what: String| format!("step {step} ({op:?}): {what}");
        match *op {
            Op::Join {
                priority,
                tenant,
                cost,
                wait,
            } => {
                let request = Request {
                    cost,
                    priority,
                    tenant: tenant.map(|t| names[usize::from(t)]),
                    max_wait: Duration::from_millis(wait),
                };
                let got = store
                    .join(line, request)
                    .await
                    .map_err(|e| fail(format!("the store failed: {e}")))?;
                // The model: serve those ahead, then go at once if nobody waits.
                model.serve(&universe, now);
                let want = if model.queue.is_empty() && !model.queue.is_paused() {
                    let verdict = model.check(&universe, cost, now);
                    verdict.allowed.then_some(Joined::Granted(verdict))
                } else {
                    None
                };
                let want = match want {
                    Some(granted) => granted,
                    None => {
                        let deadline = now.plus_nanos(sluice_core::time::duration_nanos(
                            Duration::from_millis(wait),
                        ));
                        let name = tenant.map(|t| names[usize::from(t)].into());
                        match model.queue.push(priority, name, deadline, cost, now) {
                            Ok(joined) => {
                                if let Some(evicted) = joined.evicted {
                                    model
                                        .outcomes
                                        .insert(evicted.id.get(), TicketStatus::Evicted);
                                }
                                Joined::Waiting(QueueTicket(joined.id.get()))
                            }
                            Err(refusal) => Joined::Refused(refusal),
                        }
                    }
                };
                match (&got, &want) {
                    (Joined::Waiting(ticket), Joined::Waiting(QueueTicket(id))) => {
                        tickets.push(Some((*ticket, *id)));
                        by_store.insert(*ticket, *id);
                    }
                    (got, want) if got == want => tickets.push(None),
                    (got, want) => return Err(fail(format!("store {got:?}, model {want:?}"))),
                }
            }
            Op::Serve => {
                let got = store
                    .serve(line)
                    .await
                    .map_err(|e| fail(format!("the store failed: {e}")))?;
                let (granted, next_at) = model.serve(&universe, now);
                let got_granted: Vec<Option<u64>> = got
                    .granted
                    .iter()
                    .map(|t| by_store.get(t).copied())
                    .collect();
                let want_granted: Vec<Option<u64>> = granted.into_iter().map(Some).collect();
                if got_granted != want_granted || got.next_at != next_at {
                    return Err(fail(format!(
                        "store granted {got_granted:?} next at {:?}, model granted {want_granted:?} next at {next_at:?}",
                        got.next_at
                    )));
                }
            }
            Op::Poll(choice) => {
                let waited: Vec<(QueueTicket, u64)> = tickets.iter().flatten().copied().collect();
                if waited.is_empty() {
                    continue;
                }
                let (ticket, id) = waited[choice % waited.len()];
                let (served, got) = store
                    .poll(line, ticket)
                    .await
                    .map_err(|e| fail(format!("the store failed: {e}")))?;
                let (granted, next_at) = model.serve(&universe, now);
                let want = model.status(id);
                let got_granted: Vec<Option<u64>> = served
                    .granted
                    .iter()
                    .map(|t| by_store.get(t).copied())
                    .collect();
                let want_granted: Vec<Option<u64>> = granted.into_iter().map(Some).collect();
                if got_granted != want_granted || served.next_at != next_at || got != want {
                    return Err(fail(format!(
                        "store granted {got_granted:?} next at {:?} status {got:?}, model granted {want_granted:?} next at {next_at:?} status {want:?}",
                        served.next_at
                    )));
                }
            }
            Op::Status(choice) | Op::Leave(choice) => {
                let waited: Vec<(QueueTicket, u64)> = tickets.iter().flatten().copied().collect();
                if waited.is_empty() {
                    continue;
                }
                let (ticket, id) = waited[choice % waited.len()];
                let got = if matches!(op, Op::Status(_)) {
                    store.status(line, ticket).await
                } else {
                    store.leave(line, ticket).await
                }
                .map_err(|e| fail(format!("the store failed: {e}")))?;
                let want = if matches!(op, Op::Leave(_))
                    && model.queue.remove(WaiterId::from_number(id)).is_some()
                {
                    TicketStatus::Waiting
                } else {
                    model.status(id)
                };
                if got != want {
                    return Err(fail(format!("store {got:?}, model {want:?}")));
                }
            }
            Op::Advance(ms) => clock.advance(Duration::from_millis(ms)),
            Op::Pause => {
                store
                    .pause(line)
                    .await
                    .map_err(|e| fail(format!("the store failed: {e}")))?;
                model.queue.pause();
            }
            Op::Resume => {
                store
                    .resume(line)
                    .await
                    .map_err(|e| fail(format!("the store failed: {e}")))?;
                model.queue.resume();
            }
        }
        let stats = store
            .stats(line)
            .await
            .map_err(|e| fail(format!("the store failed: {e}")))?;
        let want = model.queue.len_by_priority();
        if stats.waiting_by_priority != want {
            return Err(fail(format!(
                "store has {:?} waiting, model {want:?}",
                stats.waiting_by_priority
            )));
        }
    }
    Ok(())
}
