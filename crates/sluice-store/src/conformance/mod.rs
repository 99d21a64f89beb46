//! The conformance suite every [`Store`] must pass (feature `conformance`).
//!
//! The suite runs the same operations on the store under test and on a pure reference
//! [`Model`] (the sluice-core algorithms applied directly to a map of states) and demands
//! identical answers: every field of every [`Decision`](sluice_core::Decision),
//! [`Verdict`](sluice_core::Verdict) and [`Reservation`](crate::Reservation), holds
//! included. Each scenario and each generated sequence gets a fresh store from the
//! caller's factory, built around a [`ManualClock`] the suite drives; the model is handed
//! the same instant. Nothing sleeps.
//!
//! It runs:
//! - scripted [`SCENARIOS`]: each algorithm's admit / refuse / refill sequence at exact
//!   instants, all-or-nothing multi-limit requests, duplicate limits in one request,
//!   reservations (future `ready_at`, cancel, settle up and down), lease release, reset,
//!   peek, and costs beyond capacity — each also checked against the documented numbers;
//! - generated operation sequences (a seeded proptest strategy: [`Config::cases`]
//!   sequences of up to [`Config::max_ops`] operations over two keys and two policies of
//!   each algorithm), shrunk on failure.
//!
//! A failure panics with the steps so far, the store's answer and the model's.
//!
//! The factory decides how the store is built; it must give the store room for a few
//! dozen keys (no eviction of live state). A store that needs asynchronous setup (e.g. a
//! Redis store flushing its database) does it in the factory's future.
//!
//! ```no_run
//! # async fn example() {
//! use sluice_store::{MemoryStore, conformance};
//!
//! conformance::run_all(|clock| async move { MemoryStore::with_clock(clock) }).await;
//! # }
//! ```
//!
//! In a crate's own tests, declare the test target with `required-features =
//! ["conformance"]` and run `cargo test --all-features`.

mod driver;
mod model;
mod properties;
pub mod queue;
mod scenarios;

pub use model::Model;

use std::future::Future;

use sluice_core::{ManualClock, Nanos};

use crate::store::Store;

/// Where every scenario's clock starts: one hour after the epoch, so that windows of a
/// second, a minute and an hour all start exactly there.
const START: Nanos = Nanos::new(3_600_000_000_000);

/// The names of the scripted scenarios, in the order they run.
pub const SCENARIOS: &[&str] = scenarios::NAMES;

/// How much of the suite runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Number of generated sequences.
    pub cases: u32,
    /// Most operations in one generated sequence.
    pub max_ops: usize,
    /// Seed of the generator: the same seed generates the same sequences.
    pub seed: u64,
    /// Scenarios not to run (names from [`SCENARIOS`]): a store's known failures, each
    /// of which should have a bug report and an ignored test calling [`run_scenario`].
    pub skip_scenarios: Vec<&'static str>,
}

impl Default for Config {
    /// 64 generated sequences of up to 50 operations, a fixed seed, nothing skipped.
    fn default() -> Self {
        Self {
            cases: 64,
            max_ops: 50,
            seed: 0x5eed_5e1c_e000_0001,
            skip_scenarios: Vec::new(),
        }
    }
}

/// Runs the whole suite with the default [`Config`]: every scenario, then the generated
/// sequences. `make_store` builds a fresh, empty store reading the given clock.
///
/// # Panics
///
/// When the store disagrees with the model or fails, with a report of the steps so far.
pub async fn run_all<S, F, Fut>(make_store: F)
where
    S: Store,
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = S>,
{
    run_all_with(&Config::default(), make_store).await;
}

/// Runs the whole suite as `config` says: the scenarios, then the generated sequences.
///
/// # Panics
///
/// When the store disagrees with the model or fails, with a report of the steps so far.
pub async fn run_all_with<S, F, Fut>(config: &Config, make_store: F)
where
    S: Store,
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = S>,
{
    run_scenarios(config, &make_store).await;
    run_generated(config, &make_store).await;
}

/// Runs every scripted scenario except those `config` skips; reports all failures at once.
///
/// # Panics
///
/// When any scenario fails, or `config` skips a scenario that does not exist.
pub async fn run_scenarios<S, F, Fut>(config: &Config, make_store: F)
where
    S: Store,
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = S>,
{
    for skipped in &config.skip_scenarios {
        assert!(
            SCENARIOS.contains(skipped),
            "cannot skip unknown scenario {skipped:?}; the scenarios are {SCENARIOS:?}"
        );
    }
    let mut failures = Vec::new();
    for name in SCENARIOS {
        if config.skip_scenarios.contains(name) {
            continue;
        }
        if let Some(Err(failure)) = scenarios::run(name, &make_store).await {
            failures.push(failure);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} conformance scenarios failed:\n\n{}",
        failures.len(),
        SCENARIOS.len() - config.skip_scenarios.len(),
        failures.join("\n")
    );
}

/// Runs the one scenario called `name` (see [`SCENARIOS`]).
///
/// # Panics
///
/// When the scenario fails or does not exist.
pub async fn run_scenario<S, F, Fut>(name: &str, make_store: F)
where
    S: Store,
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = S>,
{
    match scenarios::run(name, &make_store).await {
        Some(Ok(())) => {}
        Some(Err(failure)) => panic!("{failure}"),
        None => panic!("no scenario {name:?}; the scenarios are {SCENARIOS:?}"),
    }
}

/// Runs the generated operation sequences `config` asks for.
///
/// # Panics
///
/// On the first sequence where the store disagrees with the model or fails, after
/// shrinking it to a short sequence that still does.
pub async fn run_generated<S, F, Fut>(config: &Config, make_store: F)
where
    S: Store,
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = S>,
{
    properties::run(config, &make_store).await;
}
