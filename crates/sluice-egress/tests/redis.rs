//! Two clients (as if two processes) share one upstream account through one Redis: they
//! pace together at the account's rate, not each at it. Real time, against a throwaway
//! `redis-server`, so the rate is high and the run short.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Method;
use sluice_core::Nanos;
use sluice_egress::classify::ErrorClass;
use sluice_egress::{Egress, EgressConfig, Job, SendError, TokioClock};
use sluice_redis::RedisStore;
use sluice_testkit::RedisServer;
use sluice_testkit::upstream::{
    FakeUpstream, FakeUpstreamConfig, chat_body, chat_request, prompt_tokens,
};

const RPM: u64 = 3_000;
const PER_CLIENT: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_on_one_redis_pace_together_at_the_accounts_rate() {
    let redis = RedisServer::spawn().expect("redis-server");
    let clock = TokioClock::new();
    let upstream = FakeUpstream::new(
        FakeUpstreamConfig {
            rpm: RPM,
            latency: Duration::from_millis(20),
            ..FakeUpstreamConfig::default()
        },
        Arc::new(clock),
    );
    let estimate = prompt_tokens(&chat_body("hi", Some(16))) + 16;

    let mut tasks = Vec::new();
    for _ in 0..2 {
        let store = RedisStore::connect(&redis.url())
            .await
            .expect("connect to redis");
        let egress = Egress::with_store(EgressConfig::new("shared-account"), store, clock)
            .expect("a valid config");
        let sent = Arc::new(AtomicUsize::new(0));
        for _ in 0..16 {
            let (egress, upstream, sent) = (egress.clone(), upstream.clone(), Arc::clone(&sent));
            tasks.push(tokio::spawn(async move {
                while sent.fetch_add(1, Ordering::Relaxed) < PER_CLIENT {
                    let job = Job::new(&Method::POST, estimate);
                    let answer = egress
                        .execute(&job, || {
                            let upstream = upstream.clone();
                            async move {
                                upstream
                                    .handle(chat_request("hi", Some(16)))
                                    .await
                                    .map_err(|e| SendError {
                                        class: ErrorClass::ConnectionReset,
                                        source: Box::new(e),
                                    })
                            }
                        })
                        .await
                        .expect("an answer");
                    assert_eq!(answer.status(), 200);
                }
            }));
        }
    }
    for task in tasks {
        task.await.expect("a client task panicked");
    }

    let mut log: Vec<Nanos> = upstream.log().into_iter().map(|s| s.at).collect();
    log.sort();
    // The second half: long after the first answers taught both clients the limit, and
    // after the one-second burst the shared bucket allows.
    let steady = &log[log.len() / 2..];
    let span = steady[steady.len() - 1]
        .saturating_since(steady[0])
        .as_secs_f64();
    let per_minute = (steady.len() - 1) as f64 / span * 60.0;
    println!(
        "two clients, one Redis: {} calls, {per_minute:.0}/min in the steady part ({:.0} % of {RPM}), {} 429s",
        log.len(),
        per_minute / RPM as f64 * 100.0,
        upstream.stats().rate_limited
    );
    assert_eq!(upstream.stats().rate_limited, 0);
    assert!(
        per_minute <= RPM as f64 * 1.05,
        "{per_minute:.0}/min: the clients did not pace together"
    );
    assert!(per_minute >= RPM as f64 * 0.8, "{per_minute:.0}/min");
}
