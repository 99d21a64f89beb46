//! `MemoryStore` behaviour beyond the `Store` contract: the bound on the number of keys
//! (and which states it evicts first) and `remove_expired`.
//!
//! Every test drives a `ManualClock`; nothing sleeps.

use std::time::Duration;

use sluice_core::{Key, ManualClock, Nanos, Policy, Rate};
use sluice_store::{Limit, MemoryConfig, MemoryStore};

/// One hour after the epoch: aligned to seconds, minutes and hours.
const START: Nanos = Nanos::new(3_600_000_000_000);

fn store(config: MemoryConfig) -> (MemoryStore<ManualClock>, ManualClock) {
    let clock = ManualClock::new(START);
    (MemoryStore::with_config(config, clock.clone()), clock)
}

fn key(name: impl std::fmt::Display) -> Key {
    Key::new("memory", [("k", name.to_string())]).expect("valid key")
}

fn policy(algorithm: &str, rate: &str) -> Policy {
    Policy::parse(algorithm, rate).expect("valid policy")
}

/// A bijection on u64 (odd multiplier, xor-shift): distinct inputs, scattered outputs.
fn scramble(i: u64) -> u64 {
    let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^ (x >> 29)
}

/// The bound `stats().keys` must respect: `max_keys` rounded up to a multiple of the
/// shard count (64 by default).
fn rounded_bound(max_keys: usize, shards: usize) -> usize {
    max_keys.div_ceil(shards) * shards
}

#[test]
fn key_bound_holds_under_a_flood_of_distinct_keys_at_one_instant() {
    let config = MemoryConfig {
        max_keys: 1000,
        ..MemoryConfig::default()
    };
    let bound = rounded_bound(config.max_keys, config.shards);
    let (store, _clock) = store(config);
    let p = policy("gcra", "1/min");
    let inserted = 100_000u64;
    for i in 0..inserted {
        let k = key(scramble(i));
        let decision = store.check_now(Limit::new(&k, &p), 1);
        assert!(decision.allowed, "a fresh (or evicted) key is admitted");
        if i % 500 == 0 {
            let keys = store.stats().keys;
            assert!(keys <= bound, "{keys} keys held after {i} inserts");
        }
    }
    let stats = store.stats();
    assert!(stats.keys <= bound, "{stats:?}");
    assert!(
        stats.keys >= bound * 7 / 8 - config.shards,
        "a full shard keeps seven eighths: {stats:?}"
    );
    assert_eq!(stats.evicted_expired, 0, "nothing expires at one instant");
    assert_eq!(stats.evicted_live + stats.keys as u64, inserted);
}

#[test]
fn key_bound_holds_while_time_advances_and_expired_states_are_counted() {
    let config = MemoryConfig {
        max_keys: 1000,
        ..MemoryConfig::default()
    };
    let bound = rounded_bound(config.max_keys, config.shards);
    let (store, clock) = store(config);
    // Each state lives one second; one insert per millisecond keeps about 1000 alive.
    let p = policy("gcra", "1/s");
    let inserted = 100_000u64;
    for i in 0..inserted {
        clock.advance(Duration::from_millis(1));
        let k = key(scramble(i));
        assert!(store.check_now(Limit::new(&k, &p), 1).allowed);
        if i % 500 == 0 {
            let keys = store.stats().keys;
            assert!(keys <= bound, "{keys} keys held after {i} inserts");
        }
    }
    let stats = store.stats();
    assert!(stats.keys <= bound, "{stats:?}");
    assert!(stats.evicted_expired > 0, "{stats:?}");
    assert_eq!(
        stats.evicted_expired + stats.evicted_live + stats.keys as u64,
        inserted
    );
}

#[test]
fn expired_states_are_evicted_before_live_ones() {
    let (store, clock) = store(MemoryConfig {
        max_keys: 100,
        shards: 1,
    });
    let short = policy("gcra", "1000/s"); // full again after 1 ms
    let long = policy("gcra", "1/h");
    for i in 0..50 {
        assert!(
            store
                .check_now(Limit::new(&key(format!("short{i}")), &short), 1)
                .allowed
        );
        assert!(
            store
                .check_now(Limit::new(&key(format!("long{i}")), &long), 1)
                .allowed
        );
    }
    assert_eq!(store.stats().keys, 100);
    clock.advance(Duration::from_secs(1));
    for i in 50..100 {
        assert!(
            store
                .check_now(Limit::new(&key(format!("long{i}")), &long), 1)
                .allowed
        );
    }
    let stats = store.stats();
    assert_eq!(
        (stats.keys, stats.evicted_expired, stats.evicted_live),
        (100, 50, 0)
    );
    for i in 0..100 {
        let k = key(format!("long{i}"));
        let d = store.peek_now(Limit::new(&k, &long));
        assert_eq!(d.remaining, 0, "long-lived key {i} was kept");
    }
}

#[test]
fn live_states_closest_to_expiring_are_evicted_first() {
    let (store, _clock) = store(MemoryConfig {
        max_keys: 100,
        shards: 1,
    });
    // Key i is full again after i + 1 seconds.
    let policies: Vec<Policy> = (0..100u64)
        .map(|i| Policy::gcra(Rate::new(1, Duration::from_secs(i + 1)).unwrap()))
        .collect();
    let keys: Vec<Key> = (0..100).map(key).collect();
    for (k, p) in keys.iter().zip(&policies) {
        assert!(store.check_now(Limit::new(k, p), 1).allowed);
    }
    let newcomer = key("newcomer");
    assert!(
        store
            .check_now(Limit::new(&newcomer, &policy("gcra", "1/h")), 1)
            .allowed
    );

    // A full shard frees an eighth of itself: the 13 soonest to expire.
    let stats = store.stats();
    assert_eq!(
        (stats.keys, stats.evicted_expired, stats.evicted_live),
        (88, 0, 13)
    );
    for (i, (k, p)) in keys.iter().zip(&policies).enumerate() {
        let remaining = store.peek_now(Limit::new(k, p)).remaining;
        let expected = if i < 13 { 1 } else { 0 };
        assert_eq!(remaining, expected, "key {i}: evicted keys restart full");
    }
}

#[test]
fn remove_expired_drops_only_states_that_decide_like_fresh_ones() {
    let (store, clock) = store(MemoryConfig::default());
    let algorithms = [
        "gcra",
        "fixed_window",
        "sliding_window",
        "sliding_log",
        "concurrency",
    ];
    let short: Vec<Policy> = algorithms.iter().map(|a| policy(a, "3/s")).collect();
    let long: Vec<Policy> = algorithms.iter().map(|a| policy(a, "3/h")).collect();
    for i in 0..10 {
        let (s, l) = (key(format!("short{i}")), key(format!("long{i}")));
        for (ps, pl) in short.iter().zip(&long) {
            assert!(store.check_now(Limit::new(&s, ps), 1).allowed);
            assert!(store.check_now(Limit::new(&l, pl), 1).allowed);
        }
    }
    assert_eq!(store.stats().keys, 100);
    assert_eq!(store.remove_expired(), 0, "nothing has expired yet");

    // Two periods: even the sliding window counter's state has expired.
    clock.advance(Duration::from_secs(2));
    assert_eq!(store.remove_expired(), 50);
    assert_eq!(store.remove_expired(), 0);
    let stats = store.stats();
    assert_eq!((stats.keys, stats.evicted_expired), (50, 50));
    for i in 0..10 {
        let l = key(format!("long{i}"));
        for pl in &long {
            let d = store.peek_now(Limit::new(&l, pl));
            assert_eq!(d.remaining, 2, "{pl} on long{i} kept its usage");
        }
    }
}

#[test]
fn remove_expired_does_not_let_a_released_lease_id_be_reused() {
    let (store, _clock) = store(MemoryConfig::default());
    let (k, p) = (key("leases"), policy("concurrency", "3/s"));
    let l = Limit::new(&k, &p);
    let first = store.reserve_now(&[l], 1, Duration::ZERO);
    let second = store.reserve_now(&[l], 1, Duration::ZERO);
    store.settle_now(&first, 0);
    store.settle_now(&second, 0);
    // Nothing in flight: the state may go, but what it knows about ids must not.
    store.remove_expired();
    let third = store.reserve_now(&[l], 1, Duration::ZERO);
    let lease = |r: &sluice_store::Reservation| r.holds[0].ticket.lease;
    assert_ne!(lease(&third), lease(&first));
    assert_ne!(lease(&third), lease(&second));
    // A late release of the first reservation must not release the third's lease.
    store.settle_now(&first, 0);
    assert_eq!(store.peek_now(l).remaining, 2);
}
