//! Two-thread scaling of `MemoryStore` decisions on distinct keys, beside governor's keyed
//! limiter, bracketed by a check of whether this machine's two vCPUs run in parallel right
//! now (on a shared host they are sometimes time-sliced onto one core).
//!
//! `cargo run --release -p sluice-store --example scaling [-- KEYS_PER_THREAD]`

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use sluice_core::{Clock, Key, MonotonicClock, Policy, Rate};
use sluice_store::{Limit, MemoryConfig, MemoryStore};

const OPS_PER_THREAD: usize = 4_000_000;

/// Runs `work(thread_index)` on `threads` threads at once; returns total ops per second.
fn throughput(threads: usize, work: impl Fn(usize) -> usize + Sync) -> f64 {
    let clock = MonotonicClock::new();
    let start = clock.now();
    let ops: usize = thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let work = &work;
                s.spawn(move || work(t))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("worker")).sum()
    });
    let secs = clock.now().saturating_since(start).as_secs_f64();
    ops as f64 / secs
}

/// Independent ALU chains: 2.0x means two real cores, 1.0x means time-sliced.
fn alu_scaling() -> f64 {
    let work = |t: usize| {
        let mut x = t as u64 + 1;
        for _ in 0..200_000_000u64 {
            x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        black_box(x);
        200_000_000
    };
    throughput(2, work) / throughput(1, work)
}

fn keys(thread: usize, per_thread: usize) -> Vec<Key> {
    (0..per_thread)
        .map(|i| Key::new("api", [("user", format!("{thread}-{i}"))]).expect("valid key"))
        .collect()
}

fn main() {
    let per_thread: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let key_sets: Vec<Vec<Key>> = (0..2).map(|t| keys(t, per_thread)).collect();

    let before = alu_scaling();
    println!("vCPU scaling before: {before:.2}x (2.0 = parallel, 1.0 = time-sliced)");

    let store = Arc::new(MemoryStore::with_config(
        MemoryConfig {
            max_keys: 4 * per_thread,
            shards: 4096,
        },
        MonotonicClock::new(),
    ));
    let policy = Policy::gcra(Rate::new(1_000_000_000, Duration::from_secs(1)).expect("rate"))
        .with_burst(1000)
        .expect("burst");
    let sluice = |t: usize| {
        let keys = &key_sets[t];
        for i in 0..OPS_PER_THREAD {
            let limit = Limit::new(&keys[i % keys.len()], &policy);
            black_box(store.check_now(limit, 1));
        }
        OPS_PER_THREAD
    };
    let quota = governor::Quota::with_period(Duration::from_nanos(1))
        .expect("period")
        .allow_burst(NonZeroU32::new(1000).expect("burst"));
    let limiter = governor::RateLimiter::keyed(quota);
    let names: Vec<Vec<String>> = key_sets
        .iter()
        .map(|keys| keys.iter().map(|k| k.as_str().to_owned()).collect())
        .collect();
    let governor = |t: usize| {
        let names = &names[t];
        for i in 0..OPS_PER_THREAD {
            black_box(limiter.check_key(&names[i % names.len()]).is_ok());
        }
        OPS_PER_THREAD
    };

    println!("{per_thread} distinct keys per thread, GCRA, M decisions/s:");
    println!(
        "  {:<9} {:>8} {:>8} {:>8}",
        "", "1 thread", "2 threads", "scaling"
    );
    for (name, run) in [
        ("sluice", &sluice as &(dyn Fn(usize) -> usize + Sync)),
        ("governor", &governor),
    ] {
        let one = throughput(1, run);
        let two = throughput(2, run);
        println!(
            "  {name:<9} {:>8.1} {:>9.1} {:>7.2}x",
            one / 1e6,
            two / 1e6,
            two / one
        );
    }

    let after = alu_scaling();
    println!("vCPU scaling after: {after:.2}x");
}
