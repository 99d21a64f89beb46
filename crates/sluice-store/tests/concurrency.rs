//! Many threads hammering one `MemoryStore`: one key, many keys, and multi-limit requests.
//! Each test checks an invariant that no interleaving may break: never more admitted than
//! the algorithm's bound, and no partial debits of all-or-nothing requests.
//!
//! The clock is a `ManualClock` that stands still, or moves only between barrier-separated
//! rounds, so the expected counts are exact. Nothing sleeps.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::Duration;

use sluice_core::{Key, ManualClock, Nanos, Policy};
use sluice_store::{Limit, MemoryStore};

const THREADS: usize = 8;

/// One hour after the epoch: aligned to seconds, minutes and hours.
const START: Nanos = Nanos::new(3_600_000_000_000);

/// A store shared by reference among scoped threads, and the clock it reads.
fn shared_store() -> (MemoryStore<ManualClock>, ManualClock) {
    let clock = ManualClock::new(START);
    (MemoryStore::with_clock(clock.clone()), clock)
}

fn key(name: impl std::fmt::Display) -> Key {
    Key::new("hammer", [("k", name.to_string())]).expect("valid key")
}

fn policy(algorithm: &str, rate: &str) -> Policy {
    Policy::parse(algorithm, rate).expect("valid policy")
}

/// Runs `attempt(thread, i)` for `i in 0..attempts` on [`THREADS`] threads released
/// together; returns how many attempts returned true.
fn hammer(attempts: usize, attempt: impl Fn(usize, usize) -> bool + Sync) -> u64 {
    let admitted = AtomicU64::new(0);
    let start = Barrier::new(THREADS);
    thread::scope(|s| {
        for t in 0..THREADS {
            let (admitted, start, attempt) = (&admitted, &start, &attempt);
            s.spawn(move || {
                start.wait();
                for i in 0..attempts {
                    if attempt(t, i) {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    admitted.into_inner()
}

/// All threads check one key at one instant; exactly `limit` get through.
fn one_key_at_one_instant(algorithm: &str, rate: &str, expected: u64) {
    let (store, _clock) = shared_store();
    let (k, p) = (key("one"), policy(algorithm, rate));
    let admitted = hammer(100, |_, _| store.check_now(Limit::new(&k, &p), 1).allowed);
    assert_eq!(admitted, expected, "{p}");
    assert_eq!(store.peek_now(Limit::new(&k, &p)).remaining, 0, "{p}");
}

#[test]
fn gcra_admits_exactly_its_burst_at_one_instant() {
    let p = policy("gcra", "1000/s").with_burst(100).unwrap();
    let (store, _clock) = shared_store();
    let k = key("one");
    let admitted = hammer(100, |_, _| store.check_now(Limit::new(&k, &p), 1).allowed);
    assert_eq!(admitted, 100);
}

#[test]
fn fixed_window_admits_exactly_its_limit_at_one_instant() {
    one_key_at_one_instant("fixed_window", "100/min", 100);
}

#[test]
fn sliding_window_admits_exactly_its_limit_at_one_instant() {
    one_key_at_one_instant("sliding_window", "100/min", 100);
}

#[test]
fn sliding_log_admits_exactly_its_limit_at_one_instant() {
    one_key_at_one_instant("sliding_log", "100/min", 100);
}

#[test]
fn concurrency_grants_exactly_its_limit_of_leases_at_one_instant() {
    one_key_at_one_instant("concurrency", "100/min", 100);
}

#[test]
fn gcra_admits_exactly_burst_plus_refill_while_the_clock_moves_between_rounds() {
    // 1 ms per token, burst 50; the clock moves 10 ms between rounds.
    let (store, clock) = shared_store();
    let (k, p) = (key("one"), policy("gcra", "1000/s").with_burst(50).unwrap());
    let rounds = 100;
    let admitted = AtomicU64::new(0);
    let round = Barrier::new(THREADS + 1);
    thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for _ in 0..rounds {
                    round.wait(); // the clock is set for this round
                    for _ in 0..20 {
                        if store.check_now(Limit::new(&k, &p), 1).allowed {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    round.wait(); // round over
                }
            });
        }
        for r in 0..rounds {
            if r > 0 {
                clock.advance(Duration::from_millis(10));
            }
            round.wait();
            round.wait();
        }
    });
    // 8 × 20 attempts per round take every token there is: the burst, then 10 per round.
    assert_eq!(admitted.into_inner(), 50 + 10 * (rounds - 1));
}

#[test]
fn many_keys_each_admit_exactly_their_limit() {
    let (store, _clock) = shared_store();
    let p = policy("fixed_window", "50/min");
    let keys: Vec<Key> = (0..64).map(key).collect();
    let per_key: Vec<AtomicU64> = keys.iter().map(|_| AtomicU64::new(0)).collect();
    // Each thread walks the keys in its own order, 20 times.
    let admitted = hammer(64 * 20, |t, i| {
        let k = (i * (2 * t + 1) + t) % keys.len();
        let allowed = store.check_now(Limit::new(&keys[k], &p), 1).allowed;
        if allowed {
            per_key[k].fetch_add(1, Ordering::Relaxed);
        }
        allowed
    });
    assert_eq!(admitted, 64 * 50);
    for (k, count) in keys.iter().zip(&per_key) {
        assert_eq!(count.load(Ordering::Relaxed), 50, "{k}");
        assert_eq!(store.peek_now(Limit::new(k, &p)).remaining, 0, "{k}");
    }
}

#[test]
fn multi_limit_checks_are_all_or_nothing_under_contention() {
    let (store, _clock) = shared_store();
    let users: Vec<Key> = (0..8).map(|u| key(format!("user{u}"))).collect();
    let global = key("global");
    // 8 users × 15 = 120 > 100: both kinds of limit refuse some requests.
    let (per_user, shared) = (
        policy("fixed_window", "15/min"),
        policy("fixed_window", "100/min"),
    );
    let per_user_admitted: Vec<AtomicU64> = users.iter().map(|_| AtomicU64::new(0)).collect();
    let admitted = hammer(200, |t, i| {
        let u = (t + i) % users.len();
        let (user, all) = (
            Limit::new(&users[u], &per_user),
            Limit::new(&global, &shared),
        );
        // Half the requests name the global limit first: shard locks are taken in one order.
        let limits = if i % 2 == 0 { [user, all] } else { [all, user] };
        let verdict = store.check_all_now(&limits, 1);
        assert_eq!(verdict.allowed, verdict.decisions.iter().all(|d| d.allowed));
        if verdict.allowed {
            per_user_admitted[u].fetch_add(1, Ordering::Relaxed);
        }
        verdict.allowed
    });
    let per_user_admitted: Vec<u64> = per_user_admitted
        .into_iter()
        .map(|a| a.into_inner())
        .collect();
    assert_eq!(
        admitted, 100,
        "the global limit fills: users could take 120"
    );
    assert_eq!(per_user_admitted.iter().sum::<u64>(), admitted);
    // No partial debits: every limit was debited exactly by the requests it admitted.
    let global_left = store.peek_now(Limit::new(&global, &shared)).remaining;
    assert_eq!(global_left, 100 - admitted);
    for (user, count) in users.iter().zip(&per_user_admitted) {
        assert!(*count <= 15, "{user}: {count}");
        let left = store.peek_now(Limit::new(user, &per_user)).remaining;
        assert_eq!(left, 15 - count, "{user}");
    }
}

#[test]
fn gcra_reservations_never_promise_more_than_burst_plus_max_wait() {
    let (store, _clock) = shared_store();
    let (k, p) = (key("one"), policy("gcra", "10/s"));
    let waits = Mutex::new(Vec::new());
    let granted = hammer(10, |_, _| {
        let r = store.reserve_now(&[Limit::new(&k, &p)], 1, Duration::from_secs(1));
        if r.granted() {
            waits.lock().unwrap().push(r.wait);
        }
        r.granted()
    });
    // Burst 10 now, then one per 100 ms up to the 1 s maximum wait.
    assert_eq!(granted, 20);
    let mut waits = waits.into_inner().unwrap();
    waits.sort();
    let expected: Vec<Duration> = (0..20u64)
        .map(|i| Duration::from_millis(100 * i.saturating_sub(9)))
        .collect();
    assert_eq!(waits, expected);
}

/// Takes a lease, counts it in flight while "working", then gives it back with `release`.
/// Returns (grants, most leases ever seen in flight at once, remaining after all released).
fn lease_churn(
    release: impl Fn(&MemoryStore<ManualClock>, &sluice_store::Reservation) + Sync,
) -> (u64, usize, u64) {
    let (store, _clock) = shared_store();
    let (k, p) = (key("one"), policy("concurrency", "10/min"));
    let in_flight = AtomicUsize::new(0);
    let most = AtomicUsize::new(0);
    let grants = hammer(500, |_, _| {
        let r = store.reserve_now(&[Limit::new(&k, &p)], 1, Duration::ZERO);
        if !r.granted() {
            return false;
        }
        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        most.fetch_max(now, Ordering::SeqCst);
        in_flight.fetch_sub(1, Ordering::SeqCst);
        release(&store, &r);
        true
    });
    let remaining = store.peek_now(Limit::new(&k, &p)).remaining;
    (grants, most.into_inner(), remaining)
}

#[test]
fn concurrency_leases_settled_to_zero_never_exceed_the_limit() {
    let (grants, most, remaining) = lease_churn(|store, r| store.settle_now(r, 0));
    assert!(most <= 10, "{most} leases in flight at once");
    assert!(grants > 10, "released leases are granted again: {grants}");
    assert_eq!(remaining, 10, "every lease was released");
}

#[test]
fn concurrency_leases_cancelled_never_exceed_the_limit() {
    let (grants, most, remaining) = lease_churn(|store, r| store.cancel_now(r));
    assert!(most <= 10, "{most} leases in flight at once");
    assert!(grants > 10, "released leases are granted again: {grants}");
    assert_eq!(remaining, 10, "every lease was released");
}
