//! Hot keys: the keys with the most hits over the recent past, for the dashboard.
//!
//! Each shard keeps a small Space-Saving summary (Metwally et al.) of a sample of its
//! decisions, in two generations of one window each. The hot path pays one counter
//! increment per decision and a scan of a few dozen fingerprints per sampled decision.

use std::time::Duration;

use sluice_core::{Key, Nanos};

use super::table::Fingerprint;

/// How hot keys are tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HotKeysConfig {
    /// Keys remembered per shard and generation.
    pub capacity_per_shard: usize,
    /// Record one decision in this many (rounded up to a power of two); counts are scaled
    /// back up. 1 records every decision.
    pub sample_every: u32,
    /// Length of one generation; [`top`](super::MemoryStore::hot_keys) covers the current
    /// and the previous one.
    pub window: Duration,
}

impl Default for HotKeysConfig {
    fn default() -> Self {
        Self {
            capacity_per_shard: 16,
            sample_every: 16,
            window: Duration::from_secs(60),
        }
    }
}

/// A key's recent traffic, estimated from samples.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HotKey {
    /// The key.
    pub key: Key,
    /// Decisions on it over the last one to two windows (an estimate: may overcount by the
    /// smallest count its shard tracked when it entered).
    pub hits: u64,
    /// How many of them were refused.
    pub refusals: u64,
}

#[derive(Debug)]
struct Counter {
    fingerprint: Fingerprint,
    key: Key,
    hits: u64,
    refusals: u64,
}

#[derive(Debug, Default)]
pub(crate) struct HotKeys {
    current: Vec<Counter>,
    previous: Vec<Counter>,
    window_start: Nanos,
}

impl HotKeys {
    pub(crate) fn record(
        &mut self,
        config: &HotKeysConfig,
        fingerprint: Fingerprint,
        key: &Key,
        refused: bool,
        now: Nanos,
    ) {
        self.rotate(config, now);
        let weight = u64::from(config.sample_every.max(1));
        let refusals = if refused { weight } else { 0 };
        if let Some(c) = self
            .current
            .iter_mut()
            .find(|c| c.fingerprint == fingerprint)
        {
            c.hits += weight;
            c.refusals += refusals;
            return;
        }
        if self.current.len() < config.capacity_per_shard {
            self.current.push(Counter {
                fingerprint,
                key: key.clone(),
                hits: weight,
                refusals,
            });
            return;
        }
        // Space-Saving: the newcomer takes over the smallest counter and inherits its count.
        if let Some(min) = self.current.iter_mut().min_by_key(|c| c.hits) {
            *min = Counter {
                fingerprint,
                key: key.clone(),
                hits: min.hits + weight,
                refusals,
            };
        }
    }

    fn rotate(&mut self, config: &HotKeysConfig, now: Nanos) {
        let window = sluice_core::time::duration_nanos(config.window).max(1);
        let start = Nanos::new(now.as_u64() - now.as_u64() % window);
        if start == self.window_start {
            return;
        }
        if self.window_start.plus_nanos(window) == start {
            self.previous = std::mem::take(&mut self.current);
        } else {
            self.previous.clear();
            self.current.clear();
        }
        self.window_start = start;
    }

    /// Adds this shard's counts over the current and previous generation to `out`.
    pub(crate) fn collect(&mut self, config: &HotKeysConfig, now: Nanos, out: &mut Vec<HotKey>) {
        self.rotate(config, now);
        // A key lives in one shard, so merging within the shard is enough.
        let first = out.len();
        for c in self.previous.iter().chain(&self.current) {
            match out[first..].iter_mut().find(|h| h.key == c.key) {
                Some(h) => {
                    h.hits += c.hits;
                    h.refusals += c.refusals;
                }
                None => out.push(HotKey {
                    key: c.key.clone(),
                    hits: c.hits,
                    refusals: c.refusals,
                }),
            }
        }
    }
}
