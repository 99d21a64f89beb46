//! The conformance suite against `MemoryStore`: with the default sharded layout and with a
//! single shard, so that both the multi-shard and the single-shard locking paths are
//! compared with the model.
//!
//! Needs the `conformance` feature (`required-features` in Cargo.toml):
//! `cargo test -p sluice-store --all-features --test conformance_memory`.

use sluice_core::ManualClock;
use sluice_store::conformance::{self, Config};
use sluice_store::{MemoryConfig, MemoryStore};

async fn sharded(clock: ManualClock) -> MemoryStore<ManualClock> {
    MemoryStore::with_clock(clock)
}

async fn single_shard(clock: ManualClock) -> MemoryStore<ManualClock> {
    let config = MemoryConfig {
        shards: 1,
        ..MemoryConfig::default()
    };
    MemoryStore::with_config(config, clock)
}

#[tokio::test]
async fn sharded_store_passes_the_scenarios() {
    conformance::run_scenarios(&Config::default(), sharded).await;
}

#[tokio::test]
async fn single_shard_store_passes_the_scenarios() {
    conformance::run_scenarios(&Config::default(), single_shard).await;
}

#[tokio::test]
async fn sharded_store_matches_the_model_on_generated_sequences() {
    conformance::run_generated(&Config::default(), sharded).await;
}

#[tokio::test]
async fn single_shard_store_matches_the_model_on_generated_sequences() {
    let config = Config {
        seed: 0x0000_5140_1e5b_a2d0,
        ..Config::default()
    };
    conformance::run_generated(&config, single_shard).await;
}

#[tokio::test]
async fn skipping_an_unknown_scenario_is_refused() {
    let config = Config {
        skip_scenarios: vec!["no_such_scenario"],
        ..Config::default()
    };
    let outcome = tokio::spawn(async move {
        conformance::run_scenarios(&config, sharded).await;
    })
    .await;
    assert!(outcome.is_err_and(|e| e.is_panic()));
}

#[tokio::test]
async fn memory_queues_match_the_queue_model_on_generated_sequences() {
    let config = Config {
        cases: 256,
        max_ops: 80,
        ..Config::default()
    };
    conformance::queue::run(&config, |clock| async move {
        sluice_store::queue::MemoryQueues::new(MemoryStore::with_clock(clock))
    })
    .await;
}
