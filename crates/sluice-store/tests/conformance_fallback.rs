//! The conformance suite against a `FallbackStore` whose primary is a healthy
//! `MemoryStore`: the fallback must be transparent, answering exactly as its primary (and
//! so as the model) does, with nothing marked degraded.
//!
//! Needs the `conformance` feature (`required-features` in Cargo.toml):
//! `cargo test -p sluice-store --all-features --test conformance_fallback`.

use sluice_core::ManualClock;
use sluice_store::conformance::{self, Config};
use sluice_store::{FallbackConfig, FallbackStore, MemoryStore};

type Fallback = FallbackStore<MemoryStore<ManualClock>, MemoryStore<ManualClock>, ManualClock>;

async fn fallback(clock: ManualClock) -> Fallback {
    FallbackStore::with_config(
        MemoryStore::with_clock(clock.clone()),
        MemoryStore::with_clock(clock.clone()),
        FallbackConfig::default(),
        clock,
    )
}

#[tokio::test]
async fn fallback_over_a_healthy_primary_passes_the_scenarios() {
    conformance::run_scenarios(&Config::default(), fallback).await;
}

#[tokio::test]
async fn fallback_over_a_healthy_primary_matches_the_model_on_generated_sequences() {
    conformance::run_generated(&Config::default(), fallback).await;
}
