//! The reqwest middleware against the fake quota-limited upstream over real HTTP on
//! loopback, in real time (short waits: Retry-After of 50 ms).

#![cfg(feature = "reqwest")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Extensions, HeaderMap};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use sluice_core::Backoff;
use sluice_egress::classify::ErrorClass;
use sluice_egress::quota::Dimension;
use sluice_egress::reqwest::{EgressMiddleware, ResponseTooLarge, Tenant};
use sluice_egress::usage::estimate_tokens;
use sluice_egress::{Egress, EgressConfig, EgressError, Priority, TokioClock};
use sluice_testkit::upstream::{FakeServer, FakeUpstream, FakeUpstreamConfig, Fault, chat_body};

const PROMPT: &str = "Write one sentence about sluice gates.";

struct Setup {
    upstream: FakeUpstream,
    server: FakeServer,
    egress: Egress,
    seen: Arc<Mutex<Vec<Seen>>>,
    client: ClientWithMiddleware,
}

/// What the [`Recorder`] saw of one attempt on its way out.
#[derive(Clone, Debug)]
struct Seen {
    headers: HeaderMap,
    /// Tokens the client counted as sent today, while the attempt was in flight.
    tokens_today: u64,
}

/// A middleware after the egress one: sees each attempt as it goes to the wire.
struct Recorder {
    egress: Egress,
    seen: Arc<Mutex<Vec<Seen>>>,
}

#[async_trait::async_trait]
impl Middleware for Recorder {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let seen = Seen {
            headers: req.headers().clone(),
            tokens_today: tokens_today(&self.egress),
        };
        self.seen.lock().expect("the recorder's lock").push(seen);
        next.run(req, extensions).await
    }
}

fn tokens_today(egress: &Egress) -> u64 {
    egress
        .stats()
        .quota
        .iter()
        .find(|u| u.dimension == Dimension::TokensPerDay)
        .map_or(0, |u| u.used)
}

async fn setup(config: EgressConfig) -> Setup {
    setup_with(config, |m| m).await
}

async fn setup_with(
    mut config: EgressConfig,
    middleware: impl FnOnce(EgressMiddleware) -> EgressMiddleware,
) -> Setup {
    config.retry.retry_after_spread = Duration::ZERO;
    let upstream = FakeUpstream::new(FakeUpstreamConfig::default(), Arc::new(TokioClock::new()));
    let server = upstream.serve().await.expect("a loopback port");
    let egress = Egress::new(config).expect("a valid egress config");
    let seen = Arc::default();
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a reqwest client");
    let client = ClientBuilder::new(http)
        .with(middleware(EgressMiddleware::new(egress.clone())))
        .with(Recorder {
            egress: egress.clone(),
            seen: Arc::clone(&seen),
        })
        .build();
    Setup {
        upstream,
        server,
        egress,
        seen,
        client,
    }
}

impl Setup {
    fn chat(&self) -> reqwest_middleware::RequestBuilder {
        self.client
            .post(format!("{}/v1/chat/completions", self.server.url()))
            .header("content-type", "application/json")
            .body(chat_body(PROMPT, Some(200)).to_string())
    }

    fn models(&self) -> reqwest_middleware::RequestBuilder {
        self.client.get(format!("{}/v1/models", self.server.url()))
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("the recorder's lock").clone()
    }
}

fn egress_error(error: &reqwest_middleware::Error) -> &EgressError {
    match error {
        reqwest_middleware::Error::Middleware(e) => e
            .downcast_ref::<EgressError>()
            .unwrap_or_else(|| panic!("not an EgressError: {e:?}")),
        other => panic!("expected a middleware error, got {other:?}"),
    }
}

fn retry_after_50ms() -> Fault {
    Fault::ServerError {
        status: 429,
        retry_after: Some(Duration::from_millis(50)),
    }
}

#[tokio::test]
async fn a_429_with_retry_after_ms_is_retried_and_succeeds() {
    let s = setup(EgressConfig::new("fake")).await;
    s.upstream.fail_next(1, retry_after_50ms());

    let answer = s.chat().send().await.unwrap();

    assert_eq!(answer.status(), 200);
    assert_eq!(answer.version(), http::Version::HTTP_11);
    assert_eq!(
        answer.url().as_str(),
        format!("{}/v1/chat/completions", s.server.url())
    );
    assert_eq!(answer.headers()["x-request-id"], "req_2");
    assert!(
        answer
            .headers()
            .contains_key("x-ratelimit-remaining-requests")
    );
    let body = answer.text().await.unwrap();
    assert!(body.contains("chat.completion"), "{body}");

    let log = s.upstream.log();
    let statuses: Vec<u16> = log.iter().map(|s| s.status).collect();
    assert_eq!(statuses, [429, 200]);
    let waited = log[1].at.saturating_since(log[0].at);
    assert!(waited >= Duration::from_millis(50), "{waited:?}");
    let stats = s.egress.stats();
    assert_eq!(
        (stats.attempts, stats.retried, stats.rate_limited),
        (2, 1, 1)
    );
    assert_eq!(s.seen().len(), 2, "each attempt went down the chain");
}

#[tokio::test]
async fn a_500_on_a_post_is_not_retried() {
    let s = setup(EgressConfig::new("fake")).await;
    s.upstream.fail_next(1, Fault::server_error(500));

    let answer = s.chat().send().await.unwrap();
    assert_eq!(answer.status(), 500);
    assert!(answer.text().await.unwrap().contains("server_error"));
    assert_eq!(s.upstream.stats().requests, 1);
    assert_eq!(s.egress.stats().retried, 0);
}

#[tokio::test]
async fn tokens_are_estimated_from_the_json_body_and_settled_to_the_usage() {
    let mut config = EgressConfig::new("fake");
    config.quota.tokens_per_day = Some(1_000_000);
    let s = setup(config).await;

    let answer = s.chat().send().await.unwrap();
    assert_eq!(answer.status(), 200);

    let estimate = estimate_tokens(chat_body(PROMPT, Some(200)).to_string().as_bytes()).unwrap();
    let seen = s.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].tokens_today, estimate,
        "counted at the estimate in flight"
    );
    // The fake answers at most 100 completion tokens of the 200 asked for.
    let used = s.upstream.stats().tokens;
    assert!(used < estimate, "{used} < {estimate}");
    assert_eq!(
        tokens_today(&s.egress),
        used,
        "settled to the reported usage"
    );
}

#[tokio::test]
async fn priority_comes_from_a_header_or_an_extension_and_sluice_headers_are_stripped() {
    let mut config = EgressConfig::new("fake");
    // Batch work pauses at 80 % of 10 requests a day.
    config.quota.requests_per_day = Some(10);
    let s = setup(config).await;

    for _ in 0..8 {
        let answer = s
            .models()
            .header("x-sluice-tenant", "nightly")
            .header("x-sluice-priority", "batch")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
    let error = s
        .models()
        .with_extension(Tenant::new("nightly"))
        .header("x-sluice-max-wait", "0")
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(egress_error(&error), EgressError::QuotaPaused { .. }),
        "{error:?}"
    );

    let by_header = s
        .models()
        .header("x-sluice-priority", "interactive")
        .send()
        .await
        .unwrap();
    assert_eq!(by_header.status(), 200);
    let by_extension = s
        .models()
        .with_extension(Priority::INTERACTIVE)
        .send()
        .await
        .unwrap();
    assert_eq!(by_extension.status(), 200);

    let seen = s.seen();
    assert_eq!(seen.len(), 10);
    for attempt in &seen {
        assert!(
            attempt
                .headers
                .keys()
                .all(|k| !k.as_str().starts_with("x-sluice-")),
            "{:?}",
            attempt.headers
        );
    }
    assert_eq!(s.upstream.stats().requests, 10);

    let bad = s
        .models()
        .header("x-sluice-priority", "urgent")
        .send()
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("x-sluice-priority"), "{bad}");
    assert_eq!(s.upstream.stats().requests, 10);
}

#[tokio::test]
async fn a_streamed_body_gets_a_single_attempt() {
    let s = setup(EgressConfig::new("fake")).await;
    s.upstream.fail_next(1, retry_after_50ms());

    let stream = reqwest::Body::wrap(http_body_util::Full::new(Bytes::from(
        chat_body(PROMPT, Some(10)).to_string(),
    )));
    let answer = s.chat().body(stream).send().await.unwrap();
    assert_eq!(answer.status(), 429, "the 429 is the caller's to read");
    assert!(
        !answer.headers().contains_key("x-should-retry"),
        "the middleware's own marker is removed"
    );
    assert_eq!(s.upstream.stats().requests, 1);
    assert_eq!(s.egress.stats().retried, 0);
}

#[tokio::test]
async fn a_refused_connection_is_retried_then_reported_with_reqwests_error() {
    let mut config = EgressConfig::new("fake");
    config.retry.max_attempts = 2;
    config.retry.backoff.server_error = Backoff {
        base: Duration::from_millis(10),
        max: Duration::from_millis(10),
    };
    let s = setup(config).await;
    let url = format!("{}/v1/models", s.server.url());
    let Setup { server, client, .. } = s;
    server.shutdown().await;

    let error = client.get(&url).send().await.unwrap_err();
    match egress_error(&error) {
        EgressError::Send {
            attempts, source, ..
        } => {
            assert_eq!(*attempts, 2);
            assert_eq!(source.class, ErrorClass::Connect);
            let reqwest_error = source
                .source
                .downcast_ref::<reqwest::Error>()
                .expect("reqwest's own error");
            assert!(reqwest_error.is_connect());
        }
        other => panic!("expected Send, got {other:?}"),
    }
}

#[tokio::test]
async fn an_answer_over_the_bound_fails_without_retrying() {
    let s = setup_with(EgressConfig::new("fake"), |m| m.max_response_body(64)).await;
    let error = s.models().send().await.unwrap_err();
    match egress_error(&error) {
        EgressError::Send {
            attempts: 1,
            source,
            ..
        } => {
            let cause = source.source.downcast_ref::<ResponseTooLarge>();
            assert_eq!(cause.map(|c| c.limit), Some(64));
        }
        other => panic!("expected Send, got {other:?}"),
    }
    assert_eq!(s.upstream.stats().requests, 1);
}
