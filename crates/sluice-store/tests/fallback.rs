//! `FallbackStore`: each failure policy, the breaker around the primary (opening,
//! short-circuiting, probing, recovering), the counters, multi-limit requests with mixed
//! policies, and where reservations go back to.
//!
//! The primary is a fake whose behaviour the test switches at run time: healthy (a
//! `MemoryStore`), failing (an error at once) or hanging (a future that never completes).
//! The breaker reads a `ManualClock` the test advances; timeouts run on paused tokio time,
//! so a 50 ms timeout costs no real time. Nothing sleeps.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use sluice_core::{
    BreakerConfig, BreakerState, Clock, Decision, Key, ManualClock, Nanos, Policy, Verdict,
};
use sluice_store::{
    FailurePolicy, FallbackConfig, FallbackError, FallbackStats, FallbackStore, Limit, MemoryStore,
    Reservation, Store,
};

/// One hour after the epoch: aligned to seconds, minutes and hours.
const START: Nanos = Nanos::new(3_600_000_000_000);
const TIMEOUT: Duration = Duration::from_millis(50);
const OPEN_FOR: Duration = Duration::from_secs(1);
const THRESHOLD: u32 = 3;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn key(name: &str) -> Key {
    Key::new("fallback", [("k", name)]).expect("valid key")
}

fn policy(algorithm: &str, rate: &str) -> Policy {
    Policy::parse(algorithm, rate).expect("valid policy")
}

/// The error of the fake primary.
#[derive(Debug)]
struct Down;

impl fmt::Display for Down {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("primary is down")
    }
}

impl std::error::Error for Down {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    Healthy = 0,
    Failing = 1,
    Hanging = 2,
}

/// A primary store whose behaviour can be switched while it is in use, and which counts
/// the calls it gets.
#[derive(Debug)]
struct FakePrimary {
    inner: MemoryStore<ManualClock>,
    mode: AtomicU8,
    calls: AtomicUsize,
}

impl FakePrimary {
    fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Counts the call, then answers as the current mode says: a healthy primary does the
    /// work at once (like `MemoryStore`), a hanging one never answers (`None`).
    fn answer<T>(&self, healthy: impl FnOnce() -> T) -> Option<Result<T, Down>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match self.mode.load(Ordering::SeqCst) {
            0 => Some(Ok(healthy())),
            1 => Some(Err(Down)),
            _ => None,
        }
    }
}

/// The future of an answer: ready, or pending forever.
async fn reply<T>(answer: Option<Result<T, Down>>) -> Result<T, Down> {
    match answer {
        Some(answer) => answer,
        None => std::future::pending().await,
    }
}

impl Store for FakePrimary {
    type Error = Down;

    fn check(
        &self,
        limit: Limit<'_>,
        cost: u64,
    ) -> impl Future<Output = Result<Decision, Down>> + Send {
        reply(self.answer(|| self.inner.check_now(limit, cost)))
    }

    fn check_all(
        &self,
        limits: &[Limit<'_>],
        cost: u64,
    ) -> impl Future<Output = Result<Verdict, Down>> + Send {
        reply(self.answer(|| self.inner.check_all_now(limits, cost)))
    }

    fn peek(&self, limit: Limit<'_>) -> impl Future<Output = Result<Decision, Down>> + Send {
        reply(self.answer(|| self.inner.peek_now(limit)))
    }

    fn reserve(
        &self,
        limits: &[Limit<'_>],
        cost: u64,
        max_wait: Duration,
    ) -> impl Future<Output = Result<Reservation, Down>> + Send {
        reply(self.answer(|| self.inner.reserve_now(limits, cost, max_wait)))
    }

    fn cancel(&self, reservation: &Reservation) -> impl Future<Output = Result<(), Down>> + Send {
        reply(self.answer(|| self.inner.cancel_now(reservation)))
    }

    fn settle(
        &self,
        reservation: &Reservation,
        actual: u64,
    ) -> impl Future<Output = Result<(), Down>> + Send {
        reply(self.answer(|| self.inner.settle_now(reservation, actual)))
    }

    fn reset(&self, limit: Limit<'_>) -> impl Future<Output = Result<(), Down>> + Send {
        reply(self.answer(|| self.inner.reset_now(limit)))
    }
}

type Fallback = FallbackStore<FakePrimary, MemoryStore<ManualClock>, ManualClock>;

/// A fallback store over a healthy fake primary, a local secondary and one manual clock
/// shared by all three: 50 ms timeout, opens after 3 failures for 1 s, one probe.
fn store() -> (Fallback, ManualClock) {
    let clock = ManualClock::new(START);
    let primary = FakePrimary {
        inner: MemoryStore::with_clock(clock.clone()),
        mode: AtomicU8::new(Mode::Healthy as u8),
        calls: AtomicUsize::new(0),
    };
    let config = FallbackConfig {
        timeout: TIMEOUT,
        breaker: BreakerConfig {
            failure_threshold: THRESHOLD,
            open_for: OPEN_FOR,
            half_open_probes: 1,
            failure_rate: None,
        },
    };
    let secondary = MemoryStore::with_clock(clock.clone());
    let store = FallbackStore::with_config(primary, secondary, config, clock.clone());
    (store, clock)
}

/// Fails `THRESHOLD` checks on a fail-open limit, which opens the breaker.
async fn open_the_breaker(store: &Fallback) {
    let (k, p) = (key("tripwire"), policy("gcra", "1000/s"));
    let limit = Limit::new(&k, &p).on_failure(FailurePolicy::FailOpen);
    store.primary().set(Mode::Failing);
    for _ in 0..THRESHOLD {
        store.check(limit, 1).await.expect("a fail-open decision");
    }
    assert!(matches!(store.breaker_state(), BreakerState::Open { .. }));
}

#[tokio::test]
async fn defaults_are_documented() {
    let config = FallbackConfig::default();
    assert_eq!(config.timeout, ms(50));
    assert_eq!(config.breaker, BreakerConfig::default());
    assert_eq!(FailurePolicy::default(), FailurePolicy::Local);
    let (k, p) = (key("a"), policy("gcra", "1/s"));
    assert_eq!(Limit::new(&k, &p).on_failure, FailurePolicy::Local);
}

#[tokio::test]
async fn a_healthy_primary_decides_and_nothing_is_degraded() {
    let (store, _clock) = store();
    let (k, p) = (key("a"), policy("gcra", "2/s"));
    let limit = Limit::new(&k, &p).on_failure(FailurePolicy::FailClosed);
    let got = store.check(limit, 1).await.unwrap();
    assert_eq!(got, Decision::allow(2, 1, ms(500)));
    assert_eq!(store.primary().inner.peek_now(limit).remaining, 1);
    assert_eq!(store.secondary().peek_now(limit).remaining, 2);
    assert_eq!(store.primary().calls(), 1);
    assert_eq!(store.breaker_state(), BreakerState::Closed);
    assert_eq!(
        store.stats(),
        FallbackStats {
            primary_ok: 1,
            ..FallbackStats::default()
        }
    );
}

#[tokio::test]
async fn fail_open_allows_with_the_whole_capacity() {
    let (store, _clock) = store();
    store.primary().set(Mode::Failing);
    let (k, p) = (key("a"), policy("gcra", "10/s").with_burst(4).unwrap());
    let limit = Limit::new(&k, &p).on_failure(FailurePolicy::FailOpen);
    let expected = Decision::allow(4, 4, Duration::ZERO).into_degraded();
    for _ in 0..10 {
        assert_eq!(store.check(limit, 1).await.unwrap(), expected);
    }
    assert_eq!(store.peek(limit).await.unwrap(), expected);
    // A cost no store could ever admit is refused all the same.
    assert_eq!(
        store.check(limit, 5).await.unwrap(),
        Decision::exceeds_capacity(4, 4, Duration::ZERO).into_degraded()
    );
    // Nothing was counted anywhere.
    assert_eq!(store.secondary().peek_now(limit).remaining, 4);
    assert_eq!(store.primary().inner.peek_now(limit).remaining, 4);
}

#[tokio::test]
async fn fail_closed_refuses_until_the_breaker_may_probe() {
    let (store, clock) = store();
    store.primary().set(Mode::Failing);
    let (k, p) = (key("a"), policy("fixed_window", "10/s"));
    let limit = Limit::new(&k, &p).on_failure(FailurePolicy::FailClosed);
    // Closed breaker: a refusal for one timeout.
    for _ in 0..THRESHOLD - 1 {
        let got = store.check(limit, 1).await.unwrap();
        assert_eq!(got, Decision::deny(10, 0, TIMEOUT, TIMEOUT).into_degraded());
    }
    // The failure that opens it: refused until the probe, a whole open period away.
    let got = store.check(limit, 1).await.unwrap();
    assert_eq!(
        got,
        Decision::deny(10, 0, OPEN_FOR, OPEN_FOR).into_degraded()
    );
    // Open: the wait shrinks as the clock runs.
    clock.advance(ms(400));
    let got = store.check(limit, 1).await.unwrap();
    assert_eq!(got, Decision::deny(10, 0, ms(600), ms(600)).into_degraded());
    assert_eq!(store.peek(limit).await.unwrap(), got);
    assert_eq!(
        store.check(limit, 11).await.unwrap(),
        Decision::exceeds_capacity(10, 0, ms(600)).into_degraded()
    );
    assert_eq!(store.primary().calls(), 3);
}

#[tokio::test]
async fn local_decides_from_the_secondary() {
    let (store, _clock) = store();
    store.primary().set(Mode::Failing);
    let (k, p) = (key("a"), policy("gcra", "2/s"));
    let limit = Limit::new(&k, &p);
    let got = [
        store.check(limit, 1).await.unwrap(),
        store.check(limit, 1).await.unwrap(),
        store.check(limit, 1).await.unwrap(),
    ];
    assert_eq!(
        got,
        [
            Decision::allow(2, 1, ms(500)).into_degraded(),
            Decision::allow(2, 0, ms(1000)).into_degraded(),
            Decision::deny(2, 0, ms(1000), ms(500)).into_degraded(),
        ]
    );
    // A peek is a check of zero units: it passes even with nothing left.
    assert_eq!(
        store.peek(limit).await.unwrap(),
        Decision::allow(2, 0, ms(1000)).into_degraded()
    );
    assert_eq!(store.secondary().peek_now(limit).remaining, 0);
    assert_eq!(store.primary().inner.peek_now(limit).remaining, 2);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_primary_costs_threshold_timeouts_then_nothing() {
    let (store, _clock) = store();
    store.primary().set(Mode::Hanging);
    let (k, p) = (key("a"), policy("gcra", "100/s"));
    let limit = Limit::new(&k, &p);
    let started = tokio::time::Instant::now();
    for _ in 0..THRESHOLD {
        assert!(store.check(limit, 1).await.unwrap().degraded);
    }
    // Each call waited exactly its timeout (on paused time: no real time passed).
    assert_eq!(started.elapsed(), TIMEOUT * THRESHOLD);
    assert!(matches!(store.breaker_state(), BreakerState::Open { .. }));
    // Open: the primary is not called again, and no call waits.
    for _ in 0..20 {
        assert!(store.check(limit, 1).await.unwrap().degraded);
    }
    assert_eq!(started.elapsed(), TIMEOUT * THRESHOLD);
    assert_eq!(store.primary().calls(), 3);
    assert_eq!(
        store.stats(),
        FallbackStats {
            timeouts: 3,
            short_circuited: 20,
            degraded_decisions: 23,
            ..FallbackStats::default()
        }
    );
}

#[tokio::test(start_paused = true)]
async fn after_open_for_a_probe_goes_to_the_primary_and_decisions_return_to_it() {
    let (store, clock) = store();
    open_the_breaker(&store).await;
    store.primary().set(Mode::Healthy);
    let (k, p) = (key("a"), policy("gcra", "100/s"));
    let limit = Limit::new(&k, &p);

    // Healthy again, but the circuit stays open until open_for has passed.
    clock.advance(OPEN_FOR - Duration::from_nanos(1));
    tokio::time::advance(OPEN_FOR - Duration::from_nanos(1)).await;
    assert!(store.check(limit, 1).await.unwrap().degraded);
    assert_eq!(store.primary().calls(), 3);

    clock.advance(Duration::from_nanos(1));
    tokio::time::advance(Duration::from_nanos(1)).await;
    assert_eq!(store.breaker_state(), BreakerState::HalfOpen);
    let probe = store.check(limit, 1).await.unwrap();
    assert_eq!(probe, Decision::allow(100, 99, ms(10)));
    assert_eq!(store.primary().calls(), 4);
    assert_eq!(store.breaker_state(), BreakerState::Closed);
    for remaining in (90..99).rev() {
        let got = store.check(limit, 1).await.unwrap();
        assert!(!got.degraded);
        assert_eq!(got.remaining, remaining);
    }
    assert_eq!(store.primary().calls(), 13);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_opens_the_circuit_for_another_period() {
    let (store, clock) = store();
    open_the_breaker(&store).await;
    let (k, p) = (key("a"), policy("gcra", "100/s"));
    let limit = Limit::new(&k, &p).on_failure(FailurePolicy::FailClosed);
    clock.advance(OPEN_FOR);
    // The probe hangs: it times out and re-opens the circuit from now.
    store.primary().set(Mode::Hanging);
    let refused = store.check(limit, 1).await.unwrap();
    assert_eq!(refused.retry_after, Some(OPEN_FOR));
    assert_eq!(
        store.breaker_state(),
        BreakerState::Open {
            until: clock.now().plus_nanos(1_000_000_000)
        }
    );
    assert_eq!(store.primary().calls(), 4);
    assert_eq!(store.stats().timeouts, 1);
}

#[tokio::test(start_paused = true)]
async fn half_open_lets_one_probe_through_at_a_time() {
    let (store, clock) = store();
    open_the_breaker(&store).await;
    clock.advance(OPEN_FOR);
    store.primary().set(Mode::Hanging);
    let (k, p) = (key("a"), policy("gcra", "100/s"));
    let limit = Limit::new(&k, &p).on_failure(FailurePolicy::FailClosed);
    // The first call takes the only probe slot and hangs; the others, made while it is
    // out, are refused at once (retry after one timeout: the probe's outcome decides).
    // (The first call polled is the probe; whichever it is, the waits are these.)
    let (a, b, c) = tokio::join!(
        store.check(limit, 1),
        store.check(limit, 1),
        store.check(limit, 1)
    );
    let mut waits = [a, b, c].map(|d| d.unwrap().retry_after);
    waits.sort();
    assert_eq!(waits, [Some(TIMEOUT), Some(TIMEOUT), Some(OPEN_FOR)]);
    assert_eq!(store.primary().calls(), 4);
    let stats = store.stats();
    assert_eq!((stats.timeouts, stats.short_circuited), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn a_probe_dropped_mid_call_gives_back_its_slot() {
    let (store, clock) = store();
    open_the_breaker(&store).await;
    clock.advance(OPEN_FOR);
    store.primary().set(Mode::Hanging);
    let (k, p) = (key("a"), policy("gcra", "100/s"));
    let limit = Limit::new(&k, &p);
    // The caller gives up before the store's own timeout: the probe's future is dropped.
    let gave_up = tokio::time::timeout(ms(10), store.check(limit, 1)).await;
    assert!(gave_up.is_err());
    assert_eq!(store.primary().calls(), 4);
    assert_eq!(store.breaker_state(), BreakerState::HalfOpen);
    // The slot is free again: the next call probes, and closes the circuit.
    store.primary().set(Mode::Healthy);
    assert!(!store.check(limit, 1).await.unwrap().degraded);
    assert_eq!(store.primary().calls(), 5);
    assert_eq!(store.breaker_state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn counters_add_up() {
    let (store, clock) = store();
    let (k, p) = (key("a"), policy("gcra", "100/s"));
    let limit = Limit::new(&k, &p);
    let limits = [limit];
    // 2 ok, 1 error, 2 timeouts (opens), 3 short-circuited, then a successful probe.
    store.check(limit, 1).await.unwrap();
    store.peek(limit).await.unwrap();
    store.primary().set(Mode::Failing);
    store.check_all(&limits, 1).await.unwrap();
    store.primary().set(Mode::Hanging);
    store.reserve(&limits, 1, ms(0)).await.unwrap();
    store.check(limit, 1).await.unwrap();
    store.check(limit, 1).await.unwrap();
    store.peek(limit).await.unwrap();
    // Reset has no failure policy: an error, not a degraded decision.
    assert!(matches!(
        store.reset(limit).await,
        Err(FallbackError::CircuitOpen {
            retry_after: Some(_)
        })
    ));
    clock.advance(OPEN_FOR);
    store.primary().set(Mode::Healthy);
    store.check(limit, 1).await.unwrap();
    let stats = store.stats();
    assert_eq!(
        stats,
        FallbackStats {
            primary_ok: 3,
            primary_errors: 1,
            timeouts: 2,
            short_circuited: 3,
            degraded_decisions: 5,
        }
    );
    let attempts = stats.primary_ok + stats.primary_errors + stats.timeouts + stats.short_circuited;
    assert_eq!(attempts, 9);
    assert_eq!(store.primary().calls(), 6);
}

#[tokio::test]
async fn check_all_with_mixed_policies_stays_all_or_nothing() {
    let (store, _clock) = store();
    store.primary().set(Mode::Failing);
    let (ko, kc, kl) = (key("open"), key("closed"), key("local"));
    let p = policy("gcra", "2/s");
    let open = Limit::new(&ko, &p).on_failure(FailurePolicy::FailOpen);
    let closed = Limit::new(&kc, &p).on_failure(FailurePolicy::FailClosed);
    let local = Limit::new(&kl, &p);
    let allow_full = Decision::allow(2, 2, Duration::ZERO).into_degraded();

    // Fail-open and local: the secondary decides; the local limit is debited.
    let verdict = store.check_all(&[open, local], 1).await.unwrap();
    assert!(verdict.allowed);
    assert_eq!(
        verdict.decisions,
        vec![allow_full, Decision::allow(2, 1, ms(500)).into_degraded()]
    );
    assert_eq!(store.secondary().peek_now(local).remaining, 1);

    // A fail-closed limit refuses the request: the local limit is only looked at.
    let verdict = store.check_all(&[local, closed, open], 1).await.unwrap();
    assert!(!verdict.allowed);
    assert_eq!(
        verdict.decisions,
        vec![
            Decision::allow(2, 1, ms(500)).into_degraded(),
            Decision::deny(2, 0, TIMEOUT, TIMEOUT).into_degraded(),
            allow_full,
        ]
    );
    assert_eq!(store.secondary().peek_now(local).remaining, 1);

    // Two local limits go to the secondary together: one refusal, nothing debited.
    let (kl2, tight) = (key("local2"), policy("fixed_window", "1/s"));
    let local2 = Limit::new(&kl2, &tight);
    store.check(local2, 1).await.unwrap();
    let verdict = store.check_all(&[local, open, local2], 1).await.unwrap();
    assert!(!verdict.allowed);
    assert!(verdict.decisions.iter().all(|d| d.degraded));
    assert!(verdict.decisions[0].allowed && !verdict.decisions[2].allowed);
    assert_eq!(store.secondary().peek_now(local).remaining, 1);
    assert_eq!(store.primary().inner.peek_now(local).remaining, 2);
}

#[tokio::test]
async fn a_reservation_made_locally_is_cancelled_and_settled_locally() {
    let (store, clock) = store();
    let (k, p) = (key("a"), policy("gcra", "1/s"));
    let limit = Limit::new(&k, &p);
    store.primary().set(Mode::Failing);
    store.check(limit, 1).await.unwrap();
    let reservation = store.reserve(&[limit], 1, ms(2000)).await.unwrap();
    assert!(reservation.granted() && reservation.degraded);
    assert_eq!(reservation.wait, ms(1000));
    assert_eq!(reservation.holds.len(), 1);
    assert!(reservation.verdict.decisions[0].degraded);
    let in_debt = store.secondary().peek_now(limit);
    assert_eq!(in_debt.reset_after, ms(2000));

    // The primary recovers (the breaker closes), yet the cancel goes where the holds are.
    clock.advance(OPEN_FOR);
    store.primary().set(Mode::Healthy);
    assert!(
        !store
            .check(Limit::new(&key("b"), &p), 1)
            .await
            .unwrap()
            .degraded
    );
    assert_eq!(store.breaker_state(), BreakerState::Closed);
    let calls = store.primary().calls();
    store.cancel(&reservation).await.unwrap();
    assert_eq!(store.primary().calls(), calls);
    // One second later the first unit has drained; the cancelled one is gone too.
    assert_eq!(
        store.secondary().peek_now(limit).reset_after,
        Duration::ZERO
    );

    // Settling a local reservation also stays local.
    store.primary().set(Mode::Failing);
    let reservation = store.reserve(&[limit], 1, ms(0)).await.unwrap();
    assert!(reservation.granted() && reservation.degraded);
    store.primary().set(Mode::Healthy);
    let calls = store.primary().calls();
    store.settle(&reservation, 0).await.unwrap();
    assert_eq!(store.primary().calls(), calls);
    assert_eq!(
        store.secondary().peek_now(limit).reset_after,
        Duration::ZERO
    );
}

#[tokio::test]
async fn a_reservation_made_on_the_primary_goes_back_to_the_primary() {
    let (store, _clock) = store();
    let (k, p) = (key("a"), policy("concurrency", "2/min"));
    let limit = Limit::new(&k, &p);
    let reservation = store.reserve(&[limit], 1, ms(0)).await.unwrap();
    assert!(reservation.granted() && !reservation.degraded);
    assert_eq!(store.primary().inner.peek_now(limit).remaining, 1);
    store.cancel(&reservation).await.unwrap();
    assert_eq!(store.primary().inner.peek_now(limit).remaining, 2);

    // While the primary fails, giving back its capacity fails visibly; nothing panics
    // and the secondary is not touched.
    let reservation = store.reserve(&[limit], 1, ms(0)).await.unwrap();
    store.primary().set(Mode::Failing);
    let err = store.cancel(&reservation).await.unwrap_err();
    assert!(matches!(err, FallbackError::Primary(Down)), "{err}");
    assert_eq!(err.to_string(), "primary store failed: primary is down");
    assert!(matches!(
        store.settle(&reservation, 0).await,
        Err(FallbackError::Primary(Down))
    ));
    assert_eq!(store.secondary().peek_now(limit).remaining, 2);
    assert_eq!(store.primary().inner.peek_now(limit).remaining, 1);
}

#[tokio::test]
async fn a_fail_open_reservation_holds_nothing() {
    let (store, _clock) = store();
    store.primary().set(Mode::Failing);
    let (k, p) = (key("a"), policy("gcra", "1/s"));
    let open = Limit::new(&k, &p).on_failure(FailurePolicy::FailOpen);
    let reservation = store.reserve(&[open], 1, ms(0)).await.unwrap();
    assert!(reservation.granted() && reservation.degraded);
    assert_eq!(
        (reservation.wait, reservation.holds.len()),
        (Duration::ZERO, 0)
    );
    assert_eq!(
        reservation.verdict.decisions,
        vec![Decision::allow(1, 1, Duration::ZERO).into_degraded()]
    );
    store.cancel(&reservation).await.unwrap();

    // With a fail-closed limit beside it, a local limit takes nothing.
    let (kc, kl) = (key("closed"), key("local"));
    let closed = Limit::new(&kc, &p).on_failure(FailurePolicy::FailClosed);
    let local = Limit::new(&kl, &p);
    let reservation = store.reserve(&[local, closed], 1, ms(0)).await.unwrap();
    assert!(!reservation.granted() && reservation.degraded);
    assert!(reservation.holds.is_empty());
    assert_eq!(store.secondary().peek_now(local).remaining, 1);
}

#[tokio::test]
async fn reset_forgets_both_stores_and_reports_a_failing_primary() {
    let (store, _clock) = store();
    let (k, p) = (key("a"), policy("sliding_window", "3/s"));
    let limit = Limit::new(&k, &p);
    store.check(limit, 2).await.unwrap();
    store.primary().set(Mode::Failing);
    store.check(limit, 1).await.unwrap();
    assert_eq!(store.secondary().peek_now(limit).remaining, 2);
    assert_eq!(store.primary().inner.peek_now(limit).remaining, 1);

    assert!(matches!(
        store.reset(limit).await,
        Err(FallbackError::Primary(Down))
    ));
    assert_eq!(store.secondary().peek_now(limit).remaining, 3);
    store.primary().set(Mode::Healthy);
    store.reset(limit).await.unwrap();
    assert_eq!(store.primary().inner.peek_now(limit).remaining, 3);
}

#[tokio::test(start_paused = true)]
async fn errors_name_what_failed() {
    let (store, _clock) = store();
    let (k, p) = (key("a"), policy("gcra", "1/s"));
    let limit = Limit::new(&k, &p);
    store.primary().set(Mode::Hanging);
    let err = store.reset(limit).await.unwrap_err();
    assert_eq!(err.to_string(), "primary store did not answer within 50ms");
    open_the_breaker(&store).await;
    let err = store.reset(limit).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "primary store not called: its circuit is open (next probe in Some(1s))"
    );
}
