//! Generated operation sequences: every answer of the store must equal the model's.
//!
//! Sequences come from a proptest strategy driven by a seeded runner, so every run
//! generates the same cases. A failing sequence is shrunk (each candidate replayed on a
//! fresh store) before it is reported.

use std::future::Future;
use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
use sluice_core::{Key, ManualClock, Policy};

use super::driver::{Driver, Failure};
use super::{Config, START};
use crate::store::{Limit, Reservation, Store};

/// Keys the sequences use.
const KEYS: usize = 2;
/// Policies per algorithm (same period, so that they may share a key's state).
const VARIANTS: usize = 2;
/// Most replays spent shrinking one failure.
const SHRINK_STEPS: u32 = 10_000;

/// The keys and policies a sequence refers to by index.
struct Universe {
    keys: Vec<Key>,
    /// `VARIANTS` policies per algorithm, in [`AlgorithmKind::ALL`] order.
    ///
    /// [`AlgorithmKind::ALL`]: sluice_core::AlgorithmKind::ALL
    policies: Vec<Policy>,
}

impl Universe {
    fn new() -> Self {
        let policy = |algorithm: &str, rate: &str| {
            Policy::parse(algorithm, rate).expect("the suite's policies are valid")
        };
        let policies = vec![
            policy("gcra", "5/s")
                .with_burst(3)
                .expect("the suite's bursts are valid"),
            policy("gcra", "10/s"),
            policy("fixed_window", "4/s"),
            policy("fixed_window", "6/s"),
            policy("sliding_window", "4/s"),
            policy("sliding_window", "6/s"),
            policy("sliding_log", "3/s"),
            policy("sliding_log", "5/s"),
            policy("concurrency", "2/s"),
            policy("concurrency", "3/s"),
        ];
        let keys = (0..KEYS)
            .map(|i| {
                Key::new("conformance", [("user", i.to_string())])
                    .expect("the suite's keys are valid")
            })
            .collect();
        Self { keys, policies }
    }

    fn limit(&self, r: LimitRef) -> Limit<'_> {
        Limit::new(&self.keys[r.key], &self.policies[r.policy])
    }

    fn limits(&self, refs: &[LimitRef]) -> Vec<Limit<'_>> {
        refs.iter().map(|&r| self.limit(r)).collect()
    }

    fn every_limit(&self) -> impl Iterator<Item = Limit<'_>> {
        self.keys
            .iter()
            .flat_map(|k| self.policies.iter().map(move |p| Limit::new(k, p)))
    }
}

/// A limit of the [`Universe`], by index.
#[derive(Clone, Copy, Debug)]
struct LimitRef {
    key: usize,
    policy: usize,
}

/// One step of a generated sequence.
#[derive(Clone, Debug)]
enum Op {
    Check {
        limit: LimitRef,
        cost: u64,
    },
    CheckAll {
        limits: Vec<LimitRef>,
        cost: u64,
    },
    Peek {
        limit: LimitRef,
    },
    Reserve {
        limits: Vec<LimitRef>,
        cost: u64,
        max_wait: Duration,
    },
    /// Cancels reservation `index % made`, granted or not, possibly again.
    Cancel {
        index: usize,
    },
    /// Settles reservation `index % made` to `actual`.
    Settle {
        index: usize,
        actual: u64,
    },
    Reset {
        limit: LimitRef,
    },
    Advance {
        by: Duration,
    },
}

/// A generated case: where the clock starts (offset from [`START`]) and what happens.
#[derive(Clone, Debug)]
struct Sequence {
    offset_nanos: u64,
    ops: Vec<Op>,
}

/// Limits of one algorithm (`focus`), or of any (`focus == None`), to make contention on
/// one algorithm's states likely.
fn limit_ref(focus: Option<usize>) -> BoxedStrategy<LimitRef> {
    let policy = match focus {
        Some(kind) => (kind * VARIANTS..(kind + 1) * VARIANTS).boxed(),
        None => (0..5 * VARIANTS).boxed(),
    };
    (0..KEYS, policy)
        .prop_map(|(key, policy)| LimitRef { key, policy })
        .boxed()
}

fn limit_list(focus: Option<usize>) -> impl Strategy<Value = Vec<LimitRef>> {
    prop_oneof![
        3 => vec(limit_ref(focus), 1..=4),
        1 => (limit_ref(focus), limit_ref(focus)).prop_map(|(a, b)| vec![a, b, a]),
    ]
}

/// Mostly one unit; sometimes none or a few; sometimes more than any policy's capacity.
fn cost() -> impl Strategy<Value = u64> {
    prop_oneof![6 => Just(1u64), 3 => 0u64..=4, 1 => Just(20u64)]
}

fn max_wait() -> impl Strategy<Value = Duration> {
    prop::sample::select(vec![
        Duration::ZERO,
        Duration::from_millis(100),
        Duration::from_secs(1),
        Duration::from_secs(10),
    ])
}

/// Steps around the policies' interesting instants: emission intervals, window and
/// period boundaries, one nanosecond either side.
fn advance() -> impl Strategy<Value = Duration> {
    let nanos = Duration::from_nanos;
    let millis = Duration::from_millis;
    prop_oneof![
        2 => Just(nanos(1)),
        5 => prop::sample::select(vec![
            millis(1), millis(10), millis(50), millis(100), millis(150),
            millis(199), millis(200), millis(201), millis(333),
        ]),
        2 => prop::sample::select(vec![
            millis(499), millis(500), nanos(999_999_999), millis(1000), nanos(1_000_000_001),
        ]),
        1 => prop::sample::select(vec![
            millis(1500), millis(2000), millis(3000), millis(60_000),
        ]),
    ]
}

fn op(focus: Option<usize>) -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (limit_ref(focus), cost()).prop_map(|(limit, cost)| Op::Check { limit, cost }),
        3 => (limit_list(focus), cost()).prop_map(|(limits, cost)| Op::CheckAll { limits, cost }),
        2 => limit_ref(focus).prop_map(|limit| Op::Peek { limit }),
        3 => (limit_list(focus), cost(), max_wait())
            .prop_map(|(limits, cost, max_wait)| Op::Reserve { limits, cost, max_wait }),
        2 => (0usize..64).prop_map(|index| Op::Cancel { index }),
        2 => (0usize..64, 0u64..=6).prop_map(|(index, actual)| Op::Settle { index, actual }),
        1 => limit_ref(focus).prop_map(|limit| Op::Reset { limit }),
        4 => advance().prop_map(|by| Op::Advance { by }),
    ]
}

fn sequence(max_ops: usize) -> impl Strategy<Value = Sequence> {
    let offset = prop_oneof![1 => Just(0u64), 3 => 0u64..2_000_000_000];
    // Half the cases focus on one algorithm, the rest mix all five.
    let focus = prop_oneof![1 => Just(None), 1 => (0usize..5).prop_map(Some)];
    (offset, focus).prop_flat_map(move |(offset_nanos, focus)| {
        vec(op(focus), 1..=max_ops.max(1)).prop_map(move |ops| Sequence { offset_nanos, ops })
    })
}

/// Runs `config.cases` generated sequences; panics with the shrunk failing one.
pub(super) async fn run<S, F, Fut>(config: &Config, make_store: &F)
where
    S: Store,
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = S>,
{
    let universe = Universe::new();
    let strategy = sequence(config.max_ops);
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&config.seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        proptest::test_runner::Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed),
    );
    for case in 0..config.cases {
        let mut tree = strategy
            .new_tree(&mut runner)
            .unwrap_or_else(|reason| panic!("cannot generate case {case}: {reason}"));
        let Err(mut failure) = replay(&universe, &tree.current(), case, make_store).await else {
            continue;
        };
        let mut steps = 0;
        if tree.simplify() {
            while steps < SHRINK_STEPS {
                steps += 1;
                match replay(&universe, &tree.current(), case, make_store).await {
                    Err(smaller) => {
                        failure = smaller;
                        if !tree.simplify() {
                            break;
                        }
                    }
                    Ok(()) => {
                        if !tree.complicate() {
                            break;
                        }
                    }
                }
            }
        }
        panic!(
            "generated case {case} of {} (seed {}) failed; shrunk in {steps} replays to:\n{failure}",
            config.cases, config.seed
        );
    }
}

/// Replays one sequence on a fresh store, then peeks every limit of the universe.
async fn replay<S, F, Fut>(
    universe: &Universe,
    sequence: &Sequence,
    case: u32,
    make_store: &F,
) -> Result<(), Failure>
where
    S: Store,
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = S>,
{
    let start = START.plus_nanos(sequence.offset_nanos);
    let mut d = Driver::start(format!("generated case {case}"), start, make_store).await;
    let mut made: Vec<Reservation> = Vec::new();
    for op in &sequence.ops {
        match op {
            Op::Check { limit, cost } => {
                d.check(universe.limit(*limit), *cost).await?;
            }
            Op::CheckAll { limits, cost } => {
                d.check_all(&universe.limits(limits), *cost).await?;
            }
            Op::Peek { limit } => {
                d.peek(universe.limit(*limit)).await?;
            }
            Op::Reserve {
                limits,
                cost,
                max_wait,
            } => {
                let reservation = d
                    .reserve(&universe.limits(limits), *cost, *max_wait)
                    .await?;
                made.push(reservation);
            }
            Op::Cancel { index } => {
                if let Some(r) = pick(&made, *index) {
                    d.cancel(r).await?;
                }
            }
            Op::Settle { index, actual } => {
                if let Some(r) = pick(&made, *index) {
                    d.settle(r, *actual).await?;
                }
            }
            Op::Reset { limit } => d.reset(universe.limit(*limit)).await?,
            Op::Advance { by } => d.advance(*by),
        }
    }
    for limit in universe.every_limit() {
        d.peek(limit).await?;
    }
    Ok(())
}

fn pick(made: &[Reservation], index: usize) -> Option<&Reservation> {
    (!made.is_empty()).then(|| &made[index % made.len()])
}
