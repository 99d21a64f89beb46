//! Resident memory per key with 1,000,000 GCRA keys in a `MemoryStore`, and in governor's
//! keyed limiter on the same key strings for comparison.
//!
//! `cargo run --release -p sluice-store --example memory_per_key` measures both, each in a
//! fresh child process so that neither sees the other's heap. Pass `sluice` or `governor`
//! (and optionally a key count) to measure one in this process.

use std::num::NonZeroU32;
use std::process::Command;
use std::time::Duration;

use sluice_core::{Key, MonotonicClock, Policy, Rate};
use sluice_store::{Limit, MemoryConfig, MemoryStore};

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("resident pages in statm");
    pages * 4096
}

fn key(i: usize) -> Key {
    Key::new("api", [("user", i.to_string())]).expect("valid key")
}

fn measure_sluice(n: usize) -> u64 {
    let store = MemoryStore::with_config(
        MemoryConfig {
            max_keys: 2 * n,
            ..MemoryConfig::default()
        },
        MonotonicClock::new(),
    );
    // A day per unit: no key expires while we count.
    let policy = Policy::gcra(Rate::new(10, Duration::from_secs(864_000)).expect("valid rate"));
    let before = resident_bytes();
    for i in 0..n {
        let key = key(i);
        let decision = store.check_now(Limit::new(&key, &policy), 1);
        assert!(decision.allowed);
    }
    let after = resident_bytes();
    assert_eq!(store.stats().keys, n);
    after - before
}

fn measure_governor(n: usize) -> u64 {
    let quota = governor::Quota::with_period(Duration::from_secs(86_400))
        .expect("non-zero period")
        .allow_burst(NonZeroU32::new(10).expect("non-zero"));
    let limiter = governor::RateLimiter::keyed(quota);
    let before = resident_bytes();
    for i in 0..n {
        assert!(limiter.check_key(&key(i).as_str().to_owned()).is_ok());
    }
    let after = resident_bytes();
    assert_eq!(limiter.len(), n);
    after - before
}

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next();
    let n: usize = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    match which.as_deref() {
        Some("sluice") => println!("{}", measure_sluice(n)),
        Some("governor") => println!("{}", measure_governor(n)),
        _ => {
            println!("{n} GCRA keys, resident bytes per key (RSS growth / keys):");
            let exe = std::env::current_exe().expect("own path");
            for name in ["sluice", "governor"] {
                let out = Command::new(&exe)
                    .args([name, &n.to_string()])
                    .output()
                    .expect("run child");
                let bytes: u64 = String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse()
                    .expect("child prints a byte count");
                println!("  {name:<9} {:>6.1} bytes/key", bytes as f64 / n as f64);
            }
        }
    }
}
