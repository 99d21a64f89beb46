//! Decisions through `MemoryStore`, side by side with governor's keyed limiter on the
//! same keys: one hot key, and 1,000,000 distinct keys visited in random order.
//!
//! Both limiters run a rate of one unit per nanosecond with a burst of 1000, so almost
//! every check is admitted (the path that writes state). Run with
//! `cargo bench -p sluice-store --bench decisions`.

use std::future::Future;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use governor::{Quota, RateLimiter};
use sluice_core::{AlgorithmKind, Key, Policy, Rate};
use sluice_store::{Limit, MemoryConfig, MemoryStore, Store};

const MANY_KEYS: usize = 1_000_000;
const VISITS: usize = 1 << 16;

/// Polls a future that the memory store always returns ready.
fn now_or_never<F: Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).as_mut().poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => unreachable!("MemoryStore futures are always ready"),
    }
}

fn policy(kind: AlgorithmKind) -> Policy {
    let rate = Rate::new(1_000_000_000, Duration::from_secs(1)).expect("valid bench input");
    let policy = Policy::new(kind, rate);
    match kind {
        AlgorithmKind::Gcra => policy.with_burst(1000).expect("valid bench input"),
        // The log keeps an entry per admission; a smaller window keeps it bounded.
        AlgorithmKind::SlidingLog => Policy::new(
            kind,
            Rate::new(1_000_000, Duration::from_millis(1)).expect("valid bench input"),
        ),
        AlgorithmKind::Concurrency => Policy::new(
            kind,
            Rate::new(1000, Duration::from_secs(30)).expect("valid bench input"),
        ),
        _ => policy,
    }
}

fn governor_quota() -> Quota {
    Quota::with_period(Duration::from_nanos(1))
        .expect("valid bench input")
        .allow_burst(NonZeroU32::new(1000).expect("valid bench input"))
}

/// The canonical key for user `i`; governor gets the same string.
fn key(i: usize) -> Key {
    Key::new("api", [("user", i.to_string())]).expect("valid bench input")
}

/// A fixed pseudo-random visiting order over `n` keys (xorshift, no dependency).
#[allow(
    clippy::cast_possible_truncation,
    reason = "the remainder is below n, a usize"
)]
fn visiting_order(n: usize) -> Vec<usize> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..VISITS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        })
        .collect()
}

fn hot_key(c: &mut Criterion) {
    let mut group = c.benchmark_group("hot_key");
    group.throughput(Throughput::Elements(1));
    let key = key(42);
    let name = key.as_str().to_owned();

    let limiter = RateLimiter::keyed(governor_quota());
    group.bench_function("governor", |b| {
        b.iter(|| black_box(limiter.check_key(black_box(&name)).is_ok()))
    });

    for kind in AlgorithmKind::ALL {
        let store = MemoryStore::new();
        let policy = policy(kind);
        if kind == AlgorithmKind::Concurrency {
            // A lease is only meaningful with its release: acquire, then give it back.
            group.bench_function(
                BenchmarkId::new("sluice", "concurrency_acquire_release"),
                |b| {
                    b.iter(|| {
                        let limits = [Limit::new(black_box(&key), &policy)];
                        let lease = now_or_never(store.reserve(&limits, 1, Duration::ZERO))
                            .expect("valid bench input");
                        now_or_never(store.cancel(&lease)).expect("valid bench input");
                        black_box(lease.granted())
                    })
                },
            );
            continue;
        }
        group.bench_function(BenchmarkId::new("sluice", kind), |b| {
            b.iter(|| {
                let limit = Limit::new(black_box(&key), &policy);
                black_box(
                    now_or_never(store.check(limit, 1))
                        .expect("valid bench input")
                        .allowed,
                )
            })
        });
    }
    group.finish();
}

fn many_keys(c: &mut Criterion) {
    let mut group = c.benchmark_group("1M_keys");
    group.throughput(Throughput::Elements(VISITS as u64));
    group.sample_size(20);
    let order = visiting_order(MANY_KEYS);

    {
        let names: Vec<String> = (0..MANY_KEYS).map(|i| key(i).as_str().to_owned()).collect();
        let limiter = RateLimiter::keyed(governor_quota());
        for name in &names {
            let _ = limiter.check_key(name);
        }
        group.bench_function("governor", |b| {
            b.iter(|| {
                for &i in &order {
                    black_box(limiter.check_key(&names[i]).is_ok());
                }
            })
        });
    }

    let keys: Vec<Key> = (0..MANY_KEYS).map(key).collect();
    for kind in AlgorithmKind::ALL {
        let store = MemoryStore::with_config(
            MemoryConfig {
                max_keys: 2 * MANY_KEYS,
                ..MemoryConfig::default()
            },
            sluice_core::MonotonicClock::new(),
        );
        let policy = policy(kind);
        for key in &keys {
            now_or_never(store.check(Limit::new(key, &policy), 1)).expect("infallible");
        }
        if kind == AlgorithmKind::Concurrency {
            group.bench_function(
                BenchmarkId::new("sluice", "concurrency_acquire_release"),
                |b| {
                    b.iter(|| {
                        for &i in &order {
                            let limits = [Limit::new(&keys[i], &policy)];
                            let lease = now_or_never(store.reserve(&limits, 1, Duration::ZERO))
                                .expect("infallible");
                            now_or_never(store.cancel(&lease)).expect("infallible");
                            black_box(lease.granted());
                        }
                    })
                },
            );
            continue;
        }
        group.bench_function(BenchmarkId::new("sluice", kind), |b| {
            b.iter(|| {
                for &i in &order {
                    let limit = Limit::new(&keys[i], &policy);
                    black_box(
                        now_or_never(store.check(limit, 1))
                            .expect("infallible")
                            .allowed,
                    );
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, hot_key, many_keys);
criterion_main!(benches);
