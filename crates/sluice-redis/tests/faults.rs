//! Faults on a real, throwaway `redis-server`, with the real Redis `TIME` timeline.
//!
//! - Killing Redis in the middle of a load (several tasks deciding in a loop) behind a
//!   [`FallbackStore`]: no decision is an `Err`, nothing panics, every decision comes back
//!   within the call timeout, and each limit's [`FailurePolicy`] does what it says
//!   (`FailOpen` allows, `FailClosed` refuses with a `retry_after`, `Local` really limits on
//!   the local `MemoryStore`), all marked `degraded`. The breaker opens, so a dead Redis
//!   costs a short-circuited call (microseconds), not a timeout per request.
//! - Restarting Redis on the same port: decisions go back to Redis by themselves (the
//!   connection reconnects, the breaker probes after its open period) within a couple of
//!   seconds, although the restarted server has lost the function library. A reservation
//!   goes back to the store that holds it: one held by the dead Redis cannot be cancelled
//!   (an `Err`, not a panic), one made locally meanwhile is cancelled locally after Redis
//!   is back.
//! - `FUNCTION FLUSH` and `SCRIPT FLUSH` in the middle of a run against `RedisStore` alone:
//!   no decision fails, and the limit still admits exactly what it allows.
//! - `RedisStore` alone while Redis is down: every call is an `Err` (quickly, no panic,
//!   no hang), and calls succeed again after a restart without ever surfacing "Function
//!   not found".
//!
//! A real process is involved, so these tests run in real time (tokio's clock, not paused):
//! every wait polls with short sleeps and gives up after at most 2 s, and the timeouts
//! are short (100 ms per call, a breaker open for 200 ms).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sluice_core::{BreakerConfig, BreakerState, Decision, Key, MonotonicClock, Policy};
use sluice_redis::RedisStore;
use sluice_store::{FailurePolicy, FallbackConfig, FallbackStore, Limit, MemoryStore, Store};
use sluice_testkit::RedisServer;
use tokio::task::{JoinHandle, block_in_place};
use tokio::time::{Instant, sleep};

/// The per-call timeout of the fallback store.
const TIMEOUT: Duration = Duration::from_millis(100);
/// How long the breaker stays open before it lets a probe through.
const OPEN_FOR: Duration = Duration::from_millis(200);
/// Consecutive failures that open the breaker.
const THRESHOLD: u32 = 3;
/// The longest any wait in these tests may last.
const MAX_WAIT: Duration = Duration::from_secs(2);
/// Scheduling slack on top of the call timeout for one decision (a busy 2-vCPU machine).
const SLACK: Duration = Duration::from_millis(150);
/// Tasks deciding in a loop during a load.
const TASKS: usize = 4;

type Guarded = FallbackStore<RedisStore, MemoryStore, MonotonicClock>;

/// A Redis store on Redis `TIME`, with its own key prefix.
async fn redis_store(server: &RedisServer) -> RedisStore {
    RedisStore::connect(&server.url())
        .await
        .expect("connect to the test redis-server")
        .isolated()
}

/// `RedisStore` behind a fallback store with a short timeout and a short open period.
async fn guarded(server: &RedisServer) -> Arc<Guarded> {
    let config = FallbackConfig {
        timeout: TIMEOUT,
        breaker: BreakerConfig {
            failure_threshold: THRESHOLD,
            open_for: OPEN_FOR,
            half_open_probes: 1,
            failure_rate: None,
        },
    };
    Arc::new(FallbackStore::with_config(
        redis_store(server).await,
        MemoryStore::new(),
        config,
        MonotonicClock::new(),
    ))
}

/// One limit the load decides on, with the failure policy it is checked under.
#[derive(Clone, Debug)]
struct Case {
    key: Key,
    policy: Policy,
    on_failure: FailurePolicy,
}

impl Case {
    fn new(user: &str, rate: &str, on_failure: FailurePolicy) -> Self {
        Self {
            key: Key::new("api", [("user", user)]).expect("a valid test key"),
            policy: Policy::parse("gcra", rate).expect("a valid test policy"),
            on_failure,
        }
    }

    fn limit(&self) -> Limit<'_> {
        Limit::new(&self.key, &self.policy).on_failure(self.on_failure)
    }
}

/// One failure policy each: a generous limit for fail-open and fail-closed (Redis always
/// allows it), and a 3-per-minute limit for local (one key shared by every task).
fn one_case_per_policy() -> Vec<Case> {
    vec![
        Case::new("open", "100000/m", FailurePolicy::FailOpen),
        Case::new("closed", "100000/m", FailurePolicy::FailClosed),
        Case::new("local", "3/m", FailurePolicy::Local),
    ]
}

/// One decision made during a load.
#[derive(Debug)]
struct Record {
    case: usize,
    started: Instant,
    elapsed: Duration,
    outcome: Result<Decision, String>,
}

impl Record {
    fn ended(&self) -> Instant {
        self.started + self.elapsed
    }

    fn decision(&self) -> &Decision {
        match &self.outcome {
            Ok(decision) => decision,
            Err(err) => panic!("case {} failed: {err}", self.case),
        }
    }
}

/// Several tasks checking every case in turn, in a loop, until told to stop.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<Vec<Record>>>,
}

impl Load {
    fn start<S: Store>(store: Arc<S>, cases: &[Case]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let cases: Arc<[Case]> = cases.into();
        let tasks = (0..TASKS)
            .map(|_| {
                let (store, cases) = (Arc::clone(&store), Arc::clone(&cases));
                let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
                tokio::spawn(async move {
                    let mut records = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        for (i, case) in cases.iter().enumerate() {
                            let started = Instant::now();
                            let outcome = store
                                .check(case.limit(), 1)
                                .await
                                .map_err(|e| e.to_string());
                            records.push(Record {
                                case: i,
                                started,
                                elapsed: started.elapsed(),
                                outcome,
                            });
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        // Short-circuited calls never yield; keep the load cooperative.
                        sleep(Duration::from_millis(1)).await;
                    }
                    records
                })
            })
            .collect();
        Self { stop, done, tasks }
    }

    /// Decisions completed so far.
    fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Waits until `more` decisions have completed after this call.
    async fn wait_for(&self, more: u64) {
        let target = self.done() + more;
        wait_until(&format!("{more} more decisions"), || self.done() >= target).await;
    }

    /// Stops the tasks and returns every decision they made, in no particular order. A task
    /// that panicked fails the test here.
    async fn finish(self) -> Vec<Record> {
        self.stop.store(true, Ordering::Relaxed);
        let mut records = Vec::new();
        for task in self.tasks {
            records.extend(task.await.expect("a load task panicked"));
        }
        records
    }
}

/// Polls `done` every 10 ms until it holds; fails the test after [`MAX_WAIT`].
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < MAX_WAIT,
            "gave up waiting for {what} after {MAX_WAIT:?}"
        );
        sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

/// Kills redis-server (SIGKILL: a crash, as clients see it) and returns when it is gone.
fn kill(server: &mut RedisServer) -> Instant {
    block_in_place(|| server.stop());
    Instant::now()
}

/// Starts redis-server again on the same port and returns once it answers `PING`.
fn restart(server: &mut RedisServer) {
    block_in_place(|| server.restart()).expect("restart redis-server");
}

/// Checks that a degraded decision is what its case's failure policy says.
fn assert_policy_followed(case: &Case, decision: &Decision) {
    assert!(decision.degraded, "{case:?}: {decision:?}");
    match case.on_failure {
        FailurePolicy::FailOpen => {
            assert!(decision.allowed, "fail-open refused: {decision:?}");
            assert_eq!(decision.remaining, decision.limit, "{decision:?}");
        }
        FailurePolicy::FailClosed => {
            assert!(!decision.allowed, "fail-closed allowed: {decision:?}");
            let wait = decision.retry_after.expect("a fail-closed retry_after");
            assert!(
                !wait.is_zero() && wait <= OPEN_FOR.max(TIMEOUT),
                "retry_after {wait:?}: until the next probe at most"
            );
        }
        FailurePolicy::Local => {
            if !decision.allowed {
                assert_eq!(decision.remaining, 0, "{decision:?}");
                assert!(decision.retry_after.is_some(), "{decision:?}");
            }
        }
    }
}

/// Checks what every run with faults must show: no `Err`, every degraded decision as its
/// policy says, and none slower than the call timeout (plus scheduling slack).
fn assert_every_decision_sound(cases: &[Case], records: &[Record]) {
    for record in records {
        let decision = record.decision();
        if decision.degraded {
            assert_policy_followed(&cases[record.case], decision);
        }
        assert!(
            record.elapsed <= TIMEOUT + SLACK,
            "a decision took {:?}, more than the {TIMEOUT:?} timeout: {record:?}",
            record.elapsed
        );
    }
}

/// The degraded decisions on the local case, which the local `MemoryStore` made.
fn local_degraded(cases: &[Case], records: &[Record]) -> (usize, usize) {
    let local: Vec<&Decision> = records
        .iter()
        .filter(|r| cases[r.case].on_failure == FailurePolicy::Local)
        .map(Record::decision)
        .filter(|d| d.degraded)
        .collect();
    let allowed = local.iter().filter(|d| d.allowed).count();
    (allowed, local.len() - allowed)
}

/// Makes one decision per case on a live Redis: all from Redis (and loads the library).
async fn warm_up(store: &Guarded, cases: &[Case]) {
    for case in cases {
        let decision = store.check(case.limit(), 1).await.expect("warm-up");
        assert!(decision.allowed && !decision.degraded, "{decision:?}");
    }
}

/// Sequential calls while Redis is down until `wanted` of them were short-circuited:
/// returns their latencies. A call that went to Redis (a half-open probe) is not counted.
async fn short_circuited_latencies(store: &Guarded, case: &Case, wanted: usize) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let started = Instant::now();
    while latencies.len() < wanted {
        assert!(
            started.elapsed() < MAX_WAIT,
            "only {} of {wanted} calls short-circuited in {MAX_WAIT:?}: {:?}",
            latencies.len(),
            store.stats()
        );
        let before = store.stats().short_circuited;
        let call = Instant::now();
        let decision = store.check(case.limit(), 1).await.expect("a decision");
        let elapsed = call.elapsed();
        assert_policy_followed(case, &decision);
        if store.stats().short_circuited > before {
            latencies.push(elapsed);
        }
    }
    latencies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_redis_mid_load_applies_each_failure_policy_within_the_timeout() {
    let mut server = RedisServer::spawn().expect("redis-server");
    let store = guarded(&server).await;
    let cases = one_case_per_policy();
    warm_up(&store, &cases).await;

    let load = Load::start(Arc::clone(&store), &cases);
    load.wait_for(300).await;
    let killed = kill(&mut server);
    wait_until("the breaker to open", || {
        matches!(store.breaker_state(), BreakerState::Open { .. })
    })
    .await;
    let open = store.stats();
    load.wait_for(300).await;
    let later = store.stats();
    let records = load.finish().await;

    assert_every_decision_sound(&cases, &records);
    for (i, case) in cases.iter().enumerate() {
        let ours = || records.iter().filter(move |r| r.case == i);
        assert!(
            ours().any(|r| r.ended() < killed && !r.decision().degraded),
            "{case:?}: no decision from Redis before the kill"
        );
        let after: Vec<&Record> = ours().filter(|r| r.started >= killed).collect();
        assert!(after.len() >= 10, "{case:?}: {} decisions", after.len());
        for record in after {
            assert!(record.decision().degraded, "Redis was dead: {record:?}");
        }
    }
    // The local limit really limits: 3 per minute, counted on the MemoryStore.
    let (admitted, refused) = local_degraded(&cases, &records);
    assert_eq!(admitted, 3, "local admissions while Redis was down");
    assert!(refused > 0, "the local limit never refused");

    // The breaker keeps short-circuiting while Redis stays down, and most calls to a dead
    // Redis never reach it.
    assert!(later.short_circuited > open.short_circuited, "{later:?}");
    let failed_calls = later.primary_errors + later.timeouts;
    assert!(
        later.short_circuited >= 5 * failed_calls,
        "too many calls reached the dead Redis: {later:?}"
    );
    assert!(
        later.degraded_decisions >= later.short_circuited,
        "{later:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_refuses_in_well_under_the_timeout() {
    let mut server = RedisServer::spawn().expect("redis-server");
    let store = guarded(&server).await;
    let cases = one_case_per_policy();
    warm_up(&store, &cases).await;
    kill(&mut server);

    let closed = &cases[1];
    let latencies = short_circuited_latencies(&store, closed, 50).await;
    let slowest = latencies.iter().max().copied().unwrap_or_default();
    let total: Duration = latencies.iter().sum();
    assert!(
        slowest < TIMEOUT / 4,
        "slowest short-circuited call {slowest:?}"
    );
    // Fifty refusals cost less than one timeout would.
    assert!(total < TIMEOUT, "50 short-circuited calls took {total:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_go_back_to_a_restarted_redis_within_seconds() {
    let mut server = RedisServer::spawn().expect("redis-server");
    let store = guarded(&server).await;
    let cases = one_case_per_policy();
    warm_up(&store, &cases).await;

    let load = Load::start(Arc::clone(&store), &cases);
    load.wait_for(100).await;
    kill(&mut server);
    wait_until("the breaker to open", || {
        matches!(store.breaker_state(), BreakerState::Open { .. })
    })
    .await;
    load.wait_for(100).await;
    restart(&mut server);
    // Not `primary_ok`: a call admitted before the breaker opened may still succeed on the
    // restarted server, and its stale outcome leaves the breaker open.
    let waited = wait_until("a probe to close the breaker", || {
        store.breaker_state() == BreakerState::Closed
    })
    .await;
    let back = Instant::now();
    load.wait_for(300).await;
    let records = load.finish().await;

    assert_every_decision_sound(&cases, &records);
    assert!(waited < MAX_WAIT, "back on Redis after {waited:?}");
    for (i, case) in cases.iter().enumerate() {
        let ours = || records.iter().filter(move |r| r.case == i);
        let after: Vec<&Record> = ours().filter(|r| r.started >= back).collect();
        assert!(after.len() >= 10, "{case:?}: {} decisions", after.len());
        for record in after {
            assert!(
                !record.decision().degraded,
                "Redis was back but the decision was degraded: {record:?}"
            );
        }
    }
    // The restarted server lost the library; the store loaded it again.
    let functions = block_in_place(|| server.command(&["FUNCTION", "LIST"])).expect("list");
    assert!(functions.contains("sluice"), "{functions}");
    assert!(matches!(store.breaker_state(), BreakerState::Closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_go_back_where_they_were_held_across_a_restart() {
    let mut server = RedisServer::spawn().expect("redis-server");
    let store = guarded(&server).await;
    let cases = one_case_per_policy();
    warm_up(&store, &cases).await;
    let local = &cases[2];
    let limits = [local.limit()];

    let on_redis = store.reserve(&limits, 1, Duration::ZERO).await;
    let on_redis = on_redis.expect("a reservation on Redis");
    assert!(on_redis.granted() && !on_redis.degraded, "{on_redis:?}");

    kill(&mut server);
    // Its holds are on the dead Redis: giving them back fails, as an error.
    let cancelled = store.cancel(&on_redis).await;
    assert!(cancelled.is_err(), "{cancelled:?}");
    let on_local = store.reserve(&limits, 1, Duration::ZERO).await;
    let on_local = on_local.expect("a degraded reservation");
    assert!(on_local.granted() && on_local.degraded, "{on_local:?}");
    let held = store.secondary().peek(local.limit()).await.expect("peek");
    assert_eq!(held.remaining, 2, "{held:?}");

    restart(&mut server);
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < MAX_WAIT, "{:?}", store.stats());
        let decision = store.check(cases[0].limit(), 1).await.expect("a decision");
        if !decision.degraded {
            break;
        }
        sleep(Duration::from_millis(10)).await;
    }
    // Back on Redis, the degraded reservation still goes back to the local store.
    store
        .cancel(&on_local)
        .await
        .expect("cancel on the secondary");
    let freed = store.secondary().peek(local.limit()).await.expect("peek");
    assert_eq!(freed.remaining, 3, "{freed:?}");
}

/// One field of a command's line in `INFO commandstats`, e.g. `calls` of `fcall`
/// (zero when the command was never called).
fn command_stat(server: &RedisServer, command: &str, field: &str) -> u64 {
    let info = block_in_place(|| server.command(&["INFO", "commandstats"])).expect("INFO");
    let prefix = format!("cmdstat_{command}:");
    let Some(line) = info.lines().find_map(|l| l.strip_prefix(&prefix)) else {
        return 0;
    };
    line.trim()
        .split(',')
        .find_map(|pair| pair.strip_prefix(field)?.strip_prefix('='))
        .and_then(|value| value.parse().ok())
        .expect("a numeric field of INFO commandstats")
}

/// How many times the sluice library was missing when called, and how many times it was
/// loaded, on `server`.
fn library_misses_and_loads(server: &RedisServer) -> (u64, u64) {
    (
        command_stat(server, "fcall", "failed_calls"),
        command_stat(server, "function|load", "calls"),
    )
}

/// Decisions on `RedisStore` alone (no fallback) while `flush` runs three times mid-run:
/// every one is `Ok` and from Redis, and the 200-per-hour limit admits exactly 200.
/// Returns how many times the library was found missing during the flushes.
async fn flushing_mid_run_costs_no_decision(flush: &[&str]) -> u64 {
    let server = RedisServer::spawn().expect("redis-server");
    let store = Arc::new(redis_store(&server).await);
    let cases = vec![
        Case::new("exact", "200/h", FailurePolicy::FailClosed),
        Case::new("roomy", "100000/m", FailurePolicy::FailClosed),
    ];
    let load = Load::start(Arc::clone(&store), &cases);
    load.wait_for(50).await;
    // The first calls found a fresh server without the library and loaded it.
    let (misses_before, loads_before) = library_misses_and_loads(&server);
    assert!(misses_before >= 1 && loads_before >= 1);
    let mut flushed = Vec::new();
    for _ in 0..3 {
        let reply = block_in_place(|| server.command(flush)).expect("flush");
        assert_eq!(reply, "OK");
        flushed.push(Instant::now());
        load.wait_for(150).await;
    }
    let records = load.finish().await;

    for record in &records {
        let decision = record.decision();
        assert!(!decision.degraded, "{record:?}");
        if record.case == 1 {
            assert!(decision.allowed, "{record:?}");
        }
    }
    for at in flushed {
        assert!(
            records.iter().filter(|r| r.started >= at).count() >= 100,
            "too few decisions after the flush at {at:?}"
        );
    }
    let attempts = records.iter().filter(|r| r.case == 0).count();
    let admitted = records
        .iter()
        .filter(|r| r.case == 0 && r.decision().allowed)
        .count();
    assert!(attempts > 200, "only {attempts} attempts");
    assert_eq!(admitted, 200, "nothing lost or doubled by the flushes");
    let functions = block_in_place(|| server.command(&["FUNCTION", "LIST"])).expect("list");
    assert!(functions.contains("sluice"), "{functions}");
    let (misses, loads) = library_misses_and_loads(&server);
    // Every miss was answered by loading the library again.
    assert!(loads - loads_before >= misses - misses_before);
    misses - misses_before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_flush_mid_run_costs_no_failed_decision() {
    let misses = flushing_mid_run_costs_no_decision(&["FUNCTION", "FLUSH"]).await;
    // Each flush really removed the library under the running load.
    assert!(misses >= 3, "the library went missing {misses} times");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_mid_run_is_harmless() {
    let misses = flushing_mid_run_costs_no_decision(&["SCRIPT", "FLUSH"]).await;
    // Functions are not scripts: SCRIPT FLUSH leaves the library alone.
    assert_eq!(misses, 0, "SCRIPT FLUSH removed the library");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_alone_errs_while_redis_is_down_and_recovers_after_restart() {
    let mut server = RedisServer::spawn().expect("redis-server");
    let store = redis_store(&server).await;
    let case = Case::new("alone", "100000/m", FailurePolicy::FailClosed);
    let first = store.check(case.limit(), 1).await.expect("live redis");
    assert!(first.allowed && !first.degraded, "{first:?}");

    kill(&mut server);
    let dead = tokio::time::timeout(MAX_WAIT, async {
        for _ in 0..5 {
            let outcome = store.check(case.limit(), 1).await;
            assert!(outcome.is_err(), "Redis is dead: {outcome:?}");
        }
    });
    dead.await.expect("calls to a dead Redis hung");

    restart(&mut server);
    let mut errors = Vec::new();
    let recovered = tokio::time::timeout(MAX_WAIT, async {
        loop {
            match store.check(case.limit(), 1).await {
                Ok(decision) => break decision,
                Err(err) => errors.push(err.to_string()),
            }
            sleep(Duration::from_millis(10)).await;
        }
    });
    let Ok(decision) = recovered.await else {
        panic!("no decision {MAX_WAIT:?} after the restart: {errors:?}");
    };
    assert!(decision.allowed && !decision.degraded, "{decision:?}");
    // Reconnecting may cost a call or two, but the lost library never surfaces.
    assert!(errors.len() <= 2, "{errors:?}");
    assert!(
        errors.iter().all(|e| !e.contains("Function not found")),
        "{errors:?}"
    );
}
