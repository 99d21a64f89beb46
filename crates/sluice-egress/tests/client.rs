//! The egress client against the fake quota-limited upstream, under paused tokio time: many
//! simulated minutes run in moments, and every wait is exact.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response};
use sluice_core::{BreakerConfig, Clock, Nanos};
use sluice_egress::classify::ErrorClass;
use sluice_egress::quota::QuotaEvent;
use sluice_egress::{
    Egress, EgressConfig, EgressError, EgressEvent, Job, Priority, SendError, TokioClock,
};
use sluice_store::MemoryStore;
use sluice_testkit::upstream::{
    FakeUpstream, FakeUpstreamConfig, FakeUpstreamError, Fault, Served, chat_body, chat_request,
    json_request, prompt_tokens,
};

/// 2026-11-26T12:00:00Z: tests start at a fixed wall-clock instant.
const EPOCH: Nanos = Nanos::new(1_795_694_400_000_000_000);
const PROMPT: &str = "Write one sentence about sluice gates.";
const MAX_TOKENS: u64 = 100;

struct Setup {
    clock: TokioClock,
    upstream: FakeUpstream,
}

fn setup(config: FakeUpstreamConfig) -> Setup {
    let clock = TokioClock::anchored_at(EPOCH);
    let upstream = FakeUpstream::new(config, Arc::new(clock));
    Setup { clock, upstream }
}

fn client(setup: &Setup, config: EgressConfig) -> Egress {
    Egress::with_store(config, MemoryStore::with_clock(setup.clock), setup.clock)
        .expect("a valid egress config")
}

fn estimate() -> u64 {
    prompt_tokens(&chat_body(PROMPT, Some(MAX_TOKENS))) + MAX_TOKENS
}

fn to_send_error(e: FakeUpstreamError) -> SendError {
    let class = match e {
        FakeUpstreamError::TimedOut => ErrorClass::Timeout,
        _ => ErrorClass::ConnectionReset,
    };
    SendError {
        class,
        source: Box::new(e),
    }
}

/// One chat completion through `egress`.
async fn chat(
    egress: &Egress,
    upstream: &FakeUpstream,
    job: &Job,
) -> Result<Response<Bytes>, EgressError> {
    egress
        .execute(job, || {
            let upstream = upstream.clone();
            async move {
                upstream
                    .handle(chat_request(PROMPT, Some(MAX_TOKENS)))
                    .await
                    .map_err(to_send_error)
            }
        })
        .await
}

fn chat_job() -> Job {
    Job::new(&Method::POST, estimate())
}

/// Runs `count` chats from `workers` concurrent tasks; returns how many ended 200.
async fn run_load(egress: &Egress, upstream: &FakeUpstream, count: usize, workers: usize) -> usize {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (egress, upstream, next) = (egress.clone(), upstream.clone(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < count {
                if let Ok(r) = chat(&egress, &upstream, &chat_job()).await
                    && r.status() == 200
                {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut ok = 0;
    for task in tasks {
        ok += task.await.expect("a load task panicked");
    }
    ok
}

/// [`run_load`] in a task of its own, from 32 workers.
fn spawn_load(
    egress: &Egress,
    upstream: &FakeUpstream,
    count: usize,
) -> tokio::task::JoinHandle<usize> {
    let (egress, upstream) = (egress.clone(), upstream.clone());
    tokio::spawn(async move { run_load(&egress, &upstream, count, 32).await })
}

/// The answers the upstream gave within `[from, to)` seconds of the start.
fn slice(log: &[Served], from: u64, to: u64) -> Vec<&Served> {
    let (from, to) = (
        EPOCH.plus_nanos(from * 1_000_000_000),
        EPOCH.plus_nanos(to * 1_000_000_000),
    );
    log.iter().filter(|s| s.at >= from && s.at < to).collect()
}

fn count(served: &[&Served], status: u16) -> usize {
    served.iter().filter(|s| s.status == status).count()
}

fn secs_since_start(at: Nanos) -> f64 {
    at.saturating_since(EPOCH).as_secs_f64()
}

#[tokio::test(start_paused = true)]
async fn a_thousand_calls_use_at_least_95_percent_of_the_quota_without_429s() {
    let s = setup(FakeUpstreamConfig {
        rpm: 600,
        tpm: 100_000,
        latency: Duration::from_millis(300),
        ..FakeUpstreamConfig::default()
    });
    let egress = client(&s, EgressConfig::new("fake"));

    let ok = run_load(&egress, &s.upstream, 1000, 32).await;
    assert_eq!(ok, 1000);

    let log = s.upstream.log();
    let stats = s.upstream.stats();
    let last = secs_since_start(log.iter().map(|s| s.at).max().unwrap());
    // Warm-up: until the first answers' headers teach the client the limits.
    let after_warmup = slice(&log, 5, 10_000);
    let throughput_per_minute = after_warmup.len() as f64 / (last - 5.0) * 60.0;
    println!(
        "1000 calls in {last:.1} s: {} 429s in all, {} after warm-up; {throughput_per_minute:.0} per minute after warm-up ({:.1} % of 600)",
        stats.rate_limited,
        count(&after_warmup, 429),
        throughput_per_minute / 6.0
    );
    assert_eq!(count(&after_warmup, 429), 0, "429s after warm-up");
    assert!(
        throughput_per_minute >= 0.95 * 600.0,
        "{throughput_per_minute:.1} per minute"
    );
    // And it never asked faster than the quota refills plus its initial bucket.
    assert!(
        throughput_per_minute <= 600.0 * 1.01,
        "{throughput_per_minute:.1} per minute"
    );
}

#[tokio::test(start_paused = true)]
async fn a_lowered_quota_is_discovered_and_a_raised_one_is_climbed_back_to() {
    let s = setup(FakeUpstreamConfig {
        rpm: 600,
        latency: Duration::from_millis(200),
        ..FakeUpstreamConfig::default()
    });
    let egress = client(&s, EgressConfig::new("fake"));

    let load = spawn_load(&egress, &s.upstream, 2_600);
    tokio::time::sleep(Duration::from_secs(60)).await;
    s.upstream.set_limits(300, 100_000);
    tokio::time::sleep(Duration::from_secs(120)).await;
    s.upstream.set_limits(600, 100_000);
    load.await.unwrap();

    let log = s.upstream.log();
    let end = secs_since_start(log.iter().map(|s| s.at).max().unwrap());
    assert!(
        end > 300.0,
        "the load ended at {end:.0} s, before the last minute measured"
    );
    let per_minute = |from, to| slice(&log, from, to).len() as f64 / (to - from) as f64 * 60.0;
    let lowered = slice(&log, 60, 180);
    let settled = slice(&log, 120, 180);
    println!(
        "600 rpm: {:.0}/min; lowered to 300: {} 429s in the first minute, {} in the second, {:.0}/min; raised to 600 again: {:.0}/min in the 2nd minute after",
        per_minute(10, 60),
        count(&slice(&log, 60, 120), 429),
        count(&settled, 429),
        per_minute(120, 180),
        per_minute(240, 300),
    );
    assert!(
        count(&lowered, 429) <= 10,
        "{} 429s after lowering",
        count(&lowered, 429)
    );
    assert_eq!(count(&settled, 429), 0, "429s a minute after lowering");
    assert!(per_minute(120, 180) >= 0.9 * 300.0);
    assert!(
        per_minute(240, 300) >= 0.9 * 600.0,
        "{:.0}/min after raising",
        per_minute(240, 300)
    );
}

#[tokio::test(start_paused = true)]
async fn an_outage_opens_the_circuit_which_fails_fast_then_recovers_through_a_probe() {
    let s = setup(FakeUpstreamConfig::default());
    let mut config = EgressConfig::new("fake");
    config.breaker = BreakerConfig {
        failure_threshold: 3,
        open_for: Duration::from_secs(10),
        half_open_probes: 1,
        failure_rate: None,
    };
    config.retry.max_attempts = 1;
    let egress = client(&s, config);
    let models = || {
        let upstream = s.upstream.clone();
        async move {
            upstream
                .handle(json_request(
                    Method::GET,
                    "/v1/models",
                    &serde_json::Value::Null,
                ))
                .await
                .map_err(to_send_error)
        }
    };
    let get = Job::new(&Method::GET, 0);

    s.upstream.set_outage(Some(Fault::server_error(500)));
    for _ in 0..3 {
        let answer = egress.execute(&get, models).await.unwrap();
        assert_eq!(answer.status(), 500);
    }
    let sent = s.upstream.stats().requests;
    let before = s.clock.now();
    for _ in 0..100 {
        match egress.execute(&get, models).await {
            Err(EgressError::CircuitOpen { retry_after, .. }) => {
                assert!(retry_after <= Duration::from_secs(10));
            }
            other => panic!("expected CircuitOpen, got {other:?}"),
        }
    }
    assert_eq!(
        s.upstream.stats().requests,
        sent,
        "nothing is sent while open"
    );
    assert_eq!(s.clock.now(), before, "failing fast takes no time");

    // Still down at the first probe: open again.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(egress.execute(&get, models).await.unwrap().status(), 500);
    assert!(matches!(
        egress.execute(&get, models).await,
        Err(EgressError::CircuitOpen { .. })
    ));

    // Back up: the next probe closes the circuit.
    s.upstream.set_outage(None);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(egress.execute(&get, models).await.unwrap().status(), 200);
    assert_eq!(egress.stats().circuit, sluice_core::BreakerState::Closed);
    assert_eq!(egress.execute(&get, models).await.unwrap().status(), 200);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_exactly() {
    let s = setup(FakeUpstreamConfig::default());
    let mut config = EgressConfig::new("fake");
    config.retry.retry_after_spread = Duration::ZERO;
    let egress = client(&s, config);
    s.upstream.fail_next(
        1,
        Fault::ServerError {
            status: 429,
            retry_after: Some(Duration::from_millis(2_500)),
        },
    );
    let call = {
        let (egress, upstream) = (egress.clone(), s.upstream.clone());
        tokio::spawn(async move { chat(&egress, &upstream, &chat_job()).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let backing_off = egress.stats();
    assert_eq!((backing_off.retrying, backing_off.waiting), (1, 0));
    assert_eq!(backing_off.throttle_rate(), 1.0);
    let answer = call.await.unwrap().unwrap();
    assert_eq!(answer.status(), 200);
    let done = egress.stats();
    assert_eq!(
        (done.retrying, done.retried, done.throttle_rate()),
        (0, 1, 0.5)
    );
    let log = s.upstream.log();
    assert_eq!(log.len(), 2);
    assert_eq!(
        log[1].at.saturating_since(log[0].at),
        Duration::from_millis(2_500)
    );
}

#[tokio::test(start_paused = true)]
async fn jitter_spreads_the_retries_of_many_clients() {
    let s = setup(FakeUpstreamConfig::default());
    let get = Job::new(&Method::GET, 0);
    s.upstream.fail_next(50, Fault::server_error(503));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let egress = client(&s, EgressConfig::new("fake"));
        let upstream = s.upstream.clone();
        let get = get.clone();
        tasks.push(tokio::spawn(async move {
            egress
                .execute(&get, || {
                    let upstream = upstream.clone();
                    async move {
                        upstream
                            .handle(json_request(
                                Method::GET,
                                "/v1/models",
                                &serde_json::Value::Null,
                            ))
                            .await
                            .map_err(to_send_error)
                    }
                })
                .await
                .unwrap()
                .status()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    let log = s.upstream.log();
    let retries: std::collections::BTreeSet<Nanos> = log
        .iter()
        .filter(|s| s.status == 200)
        .map(|s| s.at)
        .collect();
    let spread = retries
        .last()
        .unwrap()
        .saturating_since(*retries.first().unwrap());
    println!(
        "50 clients retried at {} distinct instants over {spread:?}",
        retries.len()
    );
    // The first retry after a server error waits between 250 and 500 ms. tokio's timer
    // counts whole milliseconds, so 50 draws over those 250 ms share an instant about 5
    // times on average (the birthday bound); without jitter all 50 would share one.
    assert!(
        retries.len() >= 38,
        "{} distinct retry instants of 50",
        retries.len()
    );
    assert!(
        spread >= Duration::from_millis(200),
        "retries spread over only {spread:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_post_is_not_retried_after_a_5xx_unless_the_caller_opts_in() {
    let s = setup(FakeUpstreamConfig::default());
    s.upstream.fail_next(1, Fault::server_error(500));
    let egress = client(&s, EgressConfig::new("fake"));
    let answer = chat(&egress, &s.upstream, &chat_job()).await.unwrap();
    assert_eq!(answer.status(), 500);
    assert_eq!(s.upstream.stats().requests, 1);

    s.upstream.fail_next(1, Fault::server_error(500));
    let mut config = EgressConfig::new("fake");
    config.retry.retry_non_idempotent = true;
    let opted_in = client(&s, config);
    let answer = chat(&opted_in, &s.upstream, &chat_job()).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(s.upstream.stats().requests, 3);

    // A 429 was not processed, so even a POST is retried.
    s.upstream.fail_next(
        1,
        Fault::ServerError {
            status: 429,
            retry_after: None,
        },
    );
    let answer = chat(&egress, &s.upstream, &chat_job()).await.unwrap();
    assert_eq!(answer.status(), 200);
}

#[tokio::test(start_paused = true)]
async fn batch_work_pauses_at_the_threshold_across_a_restart_and_resumes_at_the_reset() {
    let dir = sluice_testkit::temp_dir("egress-pause");
    let state = dir.join("quota.json");
    let s = setup(FakeUpstreamConfig::default());
    let config = || {
        let mut config = EgressConfig::new("fake");
        config.quota.requests_per_day = Some(50);
        config.state_file = Some(state.clone());
        config
    };
    let short = |job: Job| job.max_wait(Duration::from_secs(60));

    let egress = client(&s, config());
    for _ in 0..40 {
        assert_eq!(
            chat(&egress, &s.upstream, &short(chat_job()))
                .await
                .unwrap()
                .status(),
            200
        );
    }
    // 40 of 50 is the 80 % threshold: batch work waits for the next UTC day.
    match chat(&egress, &s.upstream, &short(chat_job())).await {
        Err(EgressError::QuotaPaused {
            dimension,
            reason,
            retry_after,
            ..
        }) => {
            assert_eq!((dimension, reason), ("requests_per_day", "paused"));
            let midnight = EPOCH.plus_nanos(12 * 3600 * 1_000_000_000);
            assert_eq!(retry_after, midnight.saturating_since(s.clock.now()));
        }
        other => panic!("expected QuotaPaused, got {other:?}"),
    }
    // Interactive work may spend the rest.
    let interactive = short(chat_job().priority(Priority::INTERACTIVE));
    for _ in 0..5 {
        assert_eq!(
            chat(&egress, &s.upstream, &interactive)
                .await
                .unwrap()
                .status(),
            200
        );
    }
    egress.flush().unwrap();
    drop(egress);

    // A restarted job remembers what it spent.
    let restarted = client(&s, config());
    assert!(matches!(
        chat(&restarted, &s.upstream, &short(chat_job())).await,
        Err(EgressError::QuotaPaused { .. })
    ));
    for _ in 0..5 {
        assert_eq!(
            chat(&restarted, &s.upstream, &interactive)
                .await
                .unwrap()
                .status(),
            200
        );
    }
    match chat(&restarted, &s.upstream, &interactive).await {
        Err(EgressError::QuotaPaused { reason, .. }) => assert_eq!(reason, "exhausted"),
        other => panic!("expected QuotaPaused (exhausted), got {other:?}"),
    }

    // A batch call that may wait long enough resumes at midnight.
    let patient = chat_job().max_wait(Duration::from_secs(13 * 3600));
    let answer = chat(&restarted, &s.upstream, &patient).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(s.clock.now(), EPOCH.plus_nanos(12 * 3600 * 1_000_000_000));
    assert_eq!(s.upstream.stats().requests, 51);
}

#[tokio::test(start_paused = true)]
async fn a_quota_shared_with_an_unseen_caller_is_spent_without_429s() {
    let s = setup(FakeUpstreamConfig {
        rpm: 600,
        latency: Duration::from_millis(200),
        ..FakeUpstreamConfig::default()
    });
    let egress = client(&s, EgressConfig::new("fake"));
    // Another program spends 300 of the 600 a minute on the same account, unpaced.
    let rogue = {
        let upstream = s.upstream.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    upstream
                        .handle(chat_request(PROMPT, Some(MAX_TOKENS)))
                        .await
                });
            }
        })
    };
    let load = spawn_load(&egress, &s.upstream, 100_000);
    let mut limited = Vec::new();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(60)).await;
        limited.push(egress.stats().rate_limited);
    }
    load.abort();
    rogue.abort();
    let log = s.upstream.log();
    let per_minute = |from, to| {
        slice(&log, from, to)
            .iter()
            .filter(|s| s.status == 200)
            .count() as f64
            / (to - from) as f64
            * 60.0
    };
    println!(
        "shared quota: the client's 429s by minute (cumulative) {limited:?}; the account served {:.0}/min in minutes 4-6",
        per_minute(180, 360)
    );
    assert!(
        limited[5] - limited[2] <= 3,
        "429s after the third minute: {limited:?}"
    );
    assert!(
        per_minute(180, 360) >= 0.9 * 600.0,
        "{:.0}/min",
        per_minute(180, 360)
    );
}

#[tokio::test(start_paused = true)]
async fn an_upstream_that_only_says_429_is_found_by_aimd() {
    let s = setup(FakeUpstreamConfig {
        rpm: 300,
        latency: Duration::from_millis(200),
        quota_headers: false,
        ..FakeUpstreamConfig::default()
    });
    let egress = client(&s, EgressConfig::new("fake"));
    let load = spawn_load(&egress, &s.upstream, 100_000);
    let mut limited = vec![0];
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(60)).await;
        limited.push(egress.stats().rate_limited);
    }
    load.abort();
    let log = s.upstream.log();
    let ok_per_minute = |from, to| {
        slice(&log, from, to)
            .iter()
            .filter(|s| s.status == 200)
            .count() as f64
            / (to - from) as f64
            * 60.0
    };
    let per_minute: Vec<u64> = limited.windows(2).map(|w| w[1] - w[0]).collect();
    println!(
        "no quota headers, 300 rpm: 429s per minute {per_minute:?}; {:.0}/min served in minutes 3-6; pace {:?}",
        ok_per_minute(120, 360),
        egress.stats().pace[0].1
    );
    assert!(
        per_minute[3..].iter().all(|&n| n <= 6),
        "429s per minute: {per_minute:?}"
    );
    assert!(
        ok_per_minute(120, 360) >= 0.8 * 300.0,
        "{:.0}/min",
        ok_per_minute(120, 360)
    );
}

/// Chats queued before `late` joins; returns the order the upstream served them in.
async fn served_order(
    jobs: Vec<(&'static str, Job)>,
    late: (&'static str, Job),
) -> Vec<&'static str> {
    let s = setup(FakeUpstreamConfig {
        rpm: 60,
        ..FakeUpstreamConfig::default()
    });
    let mut config = EgressConfig::new("fake");
    config.pace.requests_per_minute = Some(60);
    let egress = client(&s, config);
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let spawn = |name: &'static str, job: Job| {
        let (egress, upstream, order) = (egress.clone(), s.upstream.clone(), Arc::clone(&order));
        tokio::spawn(async move {
            let answer = chat(&egress, &upstream, &job).await.expect("an answer");
            assert_eq!(answer.status(), 200);
            order.lock().expect("not poisoned").push(name);
        })
    };
    for (name, job) in jobs {
        tasks.push(spawn(name, job));
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tasks.push(spawn(late.0, late.1));
    for task in tasks {
        task.await.expect("a call panicked");
    }
    order.lock().expect("not poisoned").clone()
}

#[tokio::test(start_paused = true)]
async fn a_late_interactive_call_overtakes_queued_batch_work() {
    let batch = (0..12).map(|_| ("batch", chat_job())).collect();
    let order = served_order(
        batch,
        ("interactive", chat_job().priority(Priority::INTERACTIVE)),
    )
    .await;
    let at = order.iter().position(|&n| n == "interactive").unwrap();
    println!("served: {order:?}");
    // One a second: the interactive call joins at 1.5 s, behind at most the call then
    // waiting out its pace and the ones already in flight.
    assert!(
        at <= 3,
        "the interactive call was served {}th: {order:?}",
        at + 1
    );
}

#[tokio::test(start_paused = true)]
async fn tenants_of_one_priority_take_turns() {
    let mut jobs: Vec<(&'static str, Job)> =
        (0..10).map(|_| ("big", chat_job().tenant("big"))).collect();
    jobs.extend((0..2).map(|_| ("small", chat_job().tenant("small"))));
    let order = served_order(jobs, ("late", chat_job().tenant("late"))).await;
    println!("served: {order:?}");
    let last_small = order.iter().rposition(|&n| n == "small").unwrap();
    // In arrival order the small tenant would be served last (11th and 12th); in turns it
    // alternates with the big one once both wait.
    assert!(
        last_small <= 7,
        "the small tenant waited behind the big one: {order:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn identical_concurrent_calls_share_one_upstream_call() {
    let s = setup(FakeUpstreamConfig {
        latency: Duration::from_millis(300),
        ..FakeUpstreamConfig::default()
    });
    let egress = client(&s, EgressConfig::new("fake"));
    let get = Job::new(&Method::GET, 0);
    let key = || {
        sluice_egress::CoalesceKey::new(
            &Method::GET,
            &"/v1/models".parse().unwrap(),
            &http::HeaderMap::new(),
            &[],
            b"",
        )
    };
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (egress, upstream, get) = (egress.clone(), s.upstream.clone(), get.clone());
        tasks.push(tokio::spawn(async move {
            egress
                .execute_coalesced(key(), &get, || {
                    let upstream = upstream.clone();
                    async move {
                        upstream
                            .handle(json_request(
                                Method::GET,
                                "/v1/models",
                                &serde_json::Value::Null,
                            ))
                            .await
                            .map_err(to_send_error)
                    }
                })
                .await
                .expect("an answer")
                .status()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    assert_eq!(s.upstream.stats().requests, 1);
    assert_eq!(egress.stats().coalesced, 19);
}

#[tokio::test(start_paused = true)]
async fn a_streamed_answer_is_settled_when_it_ends() {
    let s = setup(FakeUpstreamConfig::default());
    let mut config = EgressConfig::new("fake");
    config.quota.tokens_per_day = Some(1_000_000);
    let egress = client(&s, config);
    let tokens_today = |egress: &Egress| {
        egress
            .stats()
            .quota
            .iter()
            .find(|u| u.dimension == sluice_egress::quota::Dimension::TokensPerDay)
            .map(|u| u.used)
    };
    let job = chat_job();
    let mut call = egress.call(&job);
    let attempt = call.attempt().await.unwrap();
    let answer = s
        .upstream
        .handle(chat_request(PROMPT, Some(MAX_TOKENS)))
        .await
        .unwrap();
    // The head arrives; the body streams on.
    let report = attempt
        .answered(answer.status(), answer.headers(), None)
        .await;
    assert_eq!(report.failure, None);
    assert_eq!(call.next_step(&report), sluice_egress::NextStep::Done);
    assert_eq!(
        tokens_today(&egress),
        Some(estimate()),
        "the estimate stands while it streams"
    );
    report
        .settlement
        .expect("a streamed answer has tokens to settle")
        .settle_to(Some(42))
        .await;
    assert_eq!(tokens_today(&egress), Some(42));
    assert_eq!(egress.stats().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_hears_retries_concurrency_changes_throttle_alerts_and_quota_alerts() {
    let s = setup(FakeUpstreamConfig::default());
    let mut config = EgressConfig::new("fake");
    config.retry.retry_after_spread = Duration::ZERO;
    config.quota.requests_per_day = Some(4);
    config.quota.alert_levels = vec![50];
    config.throttle_alert = sluice_egress::ThrottleAlertConfig {
        threshold: 0.5,
        window: 2,
    };
    let egress = client(&s, config);
    let mut events = egress.subscribe();
    s.upstream.fail_next(
        1,
        Fault::ServerError {
            status: 429,
            retry_after: Some(Duration::from_millis(1_500)),
        },
    );
    let answer = chat(&egress, &s.upstream, &chat_job()).await.unwrap();
    assert_eq!(answer.status(), 200);
    let mut heard = Vec::new();
    while let Ok(event) = events.try_recv() {
        heard.push(event);
    }
    let has = |wanted: &dyn Fn(&EgressEvent) -> bool| heard.iter().any(wanted);
    assert!(
        has(&|e| matches!(
            e,
            EgressEvent::Retry {
                attempt: 1,
                class: ErrorClass::RateLimited,
                wait,
            } if *wait == Duration::from_millis(1_500)
        )),
        "{heard:?}"
    );
    assert!(
        has(&|e| matches!(e, EgressEvent::Concurrency { from: 10, to: 7 })),
        "the 429 lowered the limit: {heard:?}"
    );
    assert!(
        has(&|e| matches!(e, EgressEvent::ThrottleAlert { attempts: 2, .. })),
        "1 of the last 2 attempts throttled: {heard:?}"
    );
    assert!(
        has(&|e| matches!(e, EgressEvent::Quota(QuotaEvent::Alert { level: 50, .. }))),
        "2 of 4 requests of the day: {heard:?}"
    );
    let json = serde_json::to_value(&heard).unwrap();
    assert!(
        json.as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "retry" && e["wait_ms"] == 1500 && e["class"] == "rate_limited"),
        "{json}"
    );
}
