//! The tower layer around the fake quota-limited upstream (an in-process tower service),
//! under paused tokio time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use http_body_util::{BodyExt, Full};
use sluice_core::{BreakerConfig, Nanos};
use sluice_egress::quota::Dimension;
use sluice_egress::usage::estimate_tokens;
use sluice_egress::{
    Egress, EgressConfig, EgressError, EgressLayer, EgressLayerError, EgressService,
    MAX_WAIT_HEADER, PRIORITY_HEADER, Priority, ResponseTooLarge, TENANT_HEADER, Tenant,
    TokioClock,
};
use sluice_store::MemoryStore;
use sluice_testkit::upstream::{
    FakeUpstream, FakeUpstreamConfig, Fault, chat_body, chat_request, json_request,
};
use tower::{Layer, ServiceExt};

/// 2026-11-26T12:00:00Z.
const EPOCH: Nanos = Nanos::new(1_795_694_400_000_000_000);

struct Setup {
    clock: TokioClock,
    upstream: FakeUpstream,
}

fn setup(config: FakeUpstreamConfig) -> Setup {
    let clock = TokioClock::anchored_at(EPOCH);
    let upstream = FakeUpstream::new(config, Arc::new(clock));
    Setup { clock, upstream }
}

impl Setup {
    fn egress(&self, config: EgressConfig) -> Egress {
        Egress::with_store(config, MemoryStore::with_clock(self.clock), self.clock)
            .expect("a valid egress config")
    }

    fn service(
        &self,
        config: EgressConfig,
    ) -> EgressService<MemoryStore<TokioClock>, FakeUpstream> {
        EgressLayer::new(self.egress(config)).layer(self.upstream.clone())
    }
}

fn models() -> Request<Full<Bytes>> {
    json_request(Method::GET, "/v1/models", &serde_json::Value::Null)
}

async fn body_text(response: Response<Full<Bytes>>) -> String {
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("a full body")
        .to_bytes();
    String::from_utf8(bytes.to_vec()).expect("a UTF-8 body")
}

#[tokio::test(start_paused = true)]
async fn a_429_is_retried_after_its_retry_after() {
    let s = setup(FakeUpstreamConfig::default());
    let mut config = EgressConfig::new("fake");
    config.retry.retry_after_spread = Duration::ZERO;
    let service = s.service(config);
    s.upstream.fail_next(
        1,
        Fault::ServerError {
            status: 429,
            retry_after: Some(Duration::from_millis(2_500)),
        },
    );

    let answer = service
        .clone()
        .oneshot(chat_request("Hello", Some(10)))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(body_text(answer).await.contains("chat.completion"));

    let log = s.upstream.log();
    assert_eq!(log.iter().map(|s| s.status).collect::<Vec<_>>(), [429, 200]);
    assert_eq!(
        log[1].at.saturating_since(log[0].at),
        Duration::from_millis(2_500)
    );
    let stats = service.egress().stats();
    assert_eq!(
        (stats.attempts, stats.retried, stats.rate_limited),
        (2, 1, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_post_is_not_retried_after_a_500() {
    let s = setup(FakeUpstreamConfig::default());
    let service = s.service(EgressConfig::new("fake"));
    s.upstream.fail_next(1, Fault::server_error(500));
    let answer = service
        .oneshot(chat_request("Hello", Some(10)))
        .await
        .unwrap();
    assert_eq!(answer.status(), 500);
    assert_eq!(s.upstream.stats().requests, 1);
}

#[tokio::test(start_paused = true)]
async fn an_outage_opens_the_circuit_and_nothing_more_is_sent() {
    let s = setup(FakeUpstreamConfig::default());
    let mut config = EgressConfig::new("fake");
    config.breaker = BreakerConfig {
        failure_threshold: 3,
        open_for: Duration::from_secs(10),
        half_open_probes: 1,
        failure_rate: None,
    };
    config.retry.max_attempts = 1;
    let service = s.service(config);

    s.upstream.set_outage(Some(Fault::server_error(503)));
    for _ in 0..3 {
        let answer = service.clone().oneshot(models()).await.unwrap();
        assert_eq!(answer.status(), 503);
    }
    for _ in 0..20 {
        match service.clone().oneshot(models()).await {
            Err(EgressLayerError::Egress(EgressError::CircuitOpen { retry_after, .. })) => {
                assert!(retry_after <= Duration::from_secs(10));
            }
            other => panic!("expected CircuitOpen, got {other:?}"),
        }
    }
    assert_eq!(s.upstream.stats().requests, 3, "nothing is sent while open");

    s.upstream.set_outage(None);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let answer = service.clone().oneshot(models()).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(
        service.egress().stats().circuit,
        sluice_core::BreakerState::Closed
    );
}

#[tokio::test(start_paused = true)]
async fn a_hundred_calls_are_paced_with_no_429_after_the_first_answers() {
    // 30 requests a minute.
    let s = setup(FakeUpstreamConfig {
        rpm: 30,
        latency: Duration::from_millis(300),
        ..FakeUpstreamConfig::default()
    });
    let service = s.service(EgressConfig::new("fake"));

    // 10 workers share the 100 calls.
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..10 {
        let (service, next) = (service.clone(), Arc::clone(&next));
        workers.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= 100 {
                    return statuses;
                }
                let prompt = format!("Question {i}");
                let answer = service
                    .clone()
                    .oneshot(chat_request(&prompt, Some(20)))
                    .await;
                statuses.push(answer.map(|a| a.status()).map_err(|e| e.to_string()));
            }
        }));
    }
    for worker in workers {
        for status in worker.await.unwrap() {
            assert_eq!(status, Ok(http::StatusCode::OK));
        }
    }

    let log = s.upstream.log();
    // The first answers arrive after the 300 ms latency and teach the client the limits.
    let first_answers = EPOCH.plus_nanos(300_000_000);
    let late_429s = log
        .iter()
        .filter(|s| s.status == 429 && s.at > first_answers)
        .count();
    let all_429s = log.iter().filter(|s| s.status == 429).count();
    let end = log
        .iter()
        .map(|s| s.at)
        .max()
        .unwrap()
        .saturating_since(EPOCH);
    println!(
        "100 calls in {end:?}: {} requests, {all_429s} 429s, {late_429s} after the first answers",
        log.len()
    );
    assert_eq!(late_429s, 0, "429s after the first answers");
    assert_eq!(s.upstream.stats().ok, 100);
    // Paced at the quota's rate (less the pacer's 2 % headroom), not far below it.
    let warm = EPOCH.plus_nanos(10_000_000_000);
    let after_warmup = log.iter().filter(|s| s.at >= warm).count();
    let per_minute = after_warmup as f64 / (end.as_secs_f64() - 10.0) * 60.0;
    println!("{per_minute:.1} calls per minute after the first 10 s");
    assert!(
        (0.95 * 30.0..=30.0 * 1.01).contains(&per_minute),
        "{per_minute:.1}/min"
    );
}

/// An inner service that records the headers it was sent and, while the call is in flight,
/// how many tokens the egress client has counted as sent today.
#[derive(Clone)]
struct Recorder {
    upstream: FakeUpstream,
    egress: Egress,
    seen: Arc<Mutex<Vec<(HeaderMap, u64)>>>,
}

impl tower_service::Service<Request<Full<Bytes>>> for Recorder {
    type Response = Response<Full<Bytes>>;
    type Error = sluice_testkit::upstream::FakeUpstreamError;
    type Future = sluice_testkit::upstream::FakeUpstreamFuture;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Full<Bytes>>) -> Self::Future {
        let tokens_today = self
            .egress
            .stats()
            .quota
            .iter()
            .find(|u| u.dimension == Dimension::TokensPerDay)
            .map_or(0, |u| u.used);
        self.seen
            .lock()
            .expect("the recorder's lock")
            .push((request.headers().clone(), tokens_today));
        self.upstream.call(request)
    }
}

fn recorder(
    s: &Setup,
    config: EgressConfig,
) -> (EgressService<MemoryStore<TokioClock>, Recorder>, Recorder) {
    let egress = s.egress(config);
    let recorder = Recorder {
        upstream: s.upstream.clone(),
        egress: egress.clone(),
        seen: Arc::default(),
    };
    (EgressLayer::new(egress).layer(recorder.clone()), recorder)
}

#[tokio::test(start_paused = true)]
async fn tokens_are_estimated_from_the_body_and_sluice_headers_are_stripped() {
    let s = setup(FakeUpstreamConfig::default());
    let mut config = EgressConfig::new("fake");
    config.quota.tokens_per_day = Some(1_000_000);
    let (service, recorder) = recorder(&s, config);

    // The estimate counts the 200 tokens asked for; the fake answers with at most 100.
    let mut request = chat_request("Tell me about sluice gates, briefly.", Some(200));
    request
        .headers_mut()
        .insert(PRIORITY_HEADER, "interactive".parse().unwrap());
    request
        .headers_mut()
        .insert(TENANT_HEADER, "acme".parse().unwrap());
    request
        .headers_mut()
        .insert(MAX_WAIT_HEADER, "5s".parse().unwrap());
    let answer = service.clone().oneshot(request).await.unwrap();
    assert_eq!(answer.status(), 200);

    let estimate = estimate_tokens(
        chat_body("Tell me about sluice gates, briefly.", Some(200))
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let seen = recorder.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let (headers, in_flight_tokens) = &seen[0];
    assert_eq!(
        *in_flight_tokens, estimate,
        "counted at the estimate while in flight"
    );
    assert!(
        headers.keys().all(|k| !k.as_str().starts_with("x-sluice-")),
        "{headers:?}"
    );
    assert_eq!(headers["content-type"], "application/json");

    // Once answered, the count is settled to the usage the answer reported.
    let used = s.upstream.stats().tokens;
    let settled = service
        .egress()
        .stats()
        .quota
        .iter()
        .find(|u| u.dimension == Dimension::TokensPerDay)
        .map(|u| u.used);
    assert_eq!(settled, Some(used));
    assert_ne!(used, estimate, "the settlement is visible");
}

#[tokio::test(start_paused = true)]
async fn priority_from_an_extension_or_a_header_decides_who_passes_a_paused_quota() {
    let s = setup(FakeUpstreamConfig::default());
    let mut config = EgressConfig::new("fake");
    // Batch work pauses at 80 % of 10 requests a day.
    config.quota.requests_per_day = Some(10);
    let (service, recorder) = recorder(&s, config);
    let batch = || {
        let mut request = models();
        request.extensions_mut().insert(Tenant::new("nightly"));
        request
    };
    for _ in 0..8 {
        let answer = service.clone().oneshot(batch()).await.unwrap();
        assert_eq!(answer.status(), 200);
    }

    let mut fail_fast = batch();
    fail_fast
        .headers_mut()
        .insert(MAX_WAIT_HEADER, "0".parse().unwrap());
    match service.clone().oneshot(fail_fast).await {
        Err(EgressLayerError::Egress(e @ EgressError::QuotaPaused { .. })) => {
            assert!(e.retry_after().is_some());
        }
        other => panic!("expected QuotaPaused, got {other:?}"),
    }

    let mut by_header = models();
    by_header
        .headers_mut()
        .insert(PRIORITY_HEADER, "interactive".parse().unwrap());
    assert_eq!(
        service.clone().oneshot(by_header).await.unwrap().status(),
        200
    );
    let mut by_extension = models();
    by_extension.extensions_mut().insert(Priority::INTERACTIVE);
    assert_eq!(
        service
            .clone()
            .oneshot(by_extension)
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(recorder.seen.lock().unwrap().len(), 10);

    let mut bad = models();
    bad.headers_mut()
        .insert(PRIORITY_HEADER, "urgent".parse().unwrap());
    match service.oneshot(bad).await {
        Err(EgressLayerError::Header(e)) => assert_eq!(e.name, PRIORITY_HEADER),
        other => panic!("expected a header error, got {other:?}"),
    }
    assert_eq!(s.upstream.stats().requests, 10);
}

#[tokio::test(start_paused = true)]
async fn bodies_over_the_bounds_fail_without_retrying() {
    let s = setup(FakeUpstreamConfig::default());
    let layer = EgressLayer::new(s.egress(EgressConfig::new("fake")))
        .max_request_body(64)
        .max_response_body(64);
    let service = layer.layer(s.upstream.clone());

    let too_long = "x".repeat(100);
    match service.clone().oneshot(chat_request(&too_long, None)).await {
        Err(EgressLayerError::RequestTooLarge { limit: 64 }) => {}
        other => panic!("expected RequestTooLarge, got {other:?}"),
    }
    assert_eq!(s.upstream.stats().requests, 0, "nothing was sent");

    // The model list is longer than 64 bytes; a GET would be retried after a failure that
    // may be transient, but not after this one.
    let error = service.oneshot(models()).await.unwrap_err();
    let cause = error.attempt_error().expect("an attempt failed");
    assert_eq!(
        cause.downcast_ref::<ResponseTooLarge>().map(|e| e.limit),
        Some(64)
    );
    assert_eq!(s.upstream.stats().requests, 1);
}

#[tokio::test(start_paused = true)]
async fn inner_service_errors_are_retried_for_idempotent_requests_and_kept() {
    let s = setup(FakeUpstreamConfig::default());
    let mut config = EgressConfig::new("fake");
    config.retry.max_attempts = 3;
    let service = s.service(config);

    s.upstream.fail_next(1, Fault::ConnectionReset);
    let answer = service.clone().oneshot(models()).await.unwrap();
    assert_eq!(answer.status(), 200, "a GET is retried after a reset");

    s.upstream.fail_next(3, Fault::ConnectionReset);
    let error = service.oneshot(models()).await.unwrap_err();
    match &error {
        EgressLayerError::Egress(EgressError::Send { attempts: 3, .. }) => {}
        other => panic!("expected Send after 3 attempts, got {other:?}"),
    }
    assert!(
        error
            .attempt_error()
            .and_then(|e| e.downcast_ref::<sluice_testkit::upstream::FakeUpstreamError>())
            .is_some(),
        "{error:?}"
    );
    assert_eq!(s.upstream.stats().requests, 5);
}
