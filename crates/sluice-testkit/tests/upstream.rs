//! The fake quota-limited upstream: in process under paused tokio time, and over HTTP on
//! loopback.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use sluice_core::time::duration_nanos;
use sluice_testkit::upstream::{
    FAKE_MODEL, FakeUpstream, FakeUpstreamConfig, FakeUpstreamError, Fault, LOG_CAPACITY,
    TIMEOUT_AFTER, chat_body, chat_request, json_request, prompt_tokens,
};
use sluice_testkit::{Clock, ClockExt, Nanos, clock_at};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tower_service::Service;

/// Where the test clocks start: away from zero, like `clock_at`.
const EPOCH: Nanos = Nanos::new(1_000_000_000_000);

/// A clock that follows tokio's time, so that paused time moves it.
#[derive(Debug)]
struct TokioClock {
    start: Instant,
}

impl Clock for TokioClock {
    fn now(&self) -> Nanos {
        EPOCH.plus_nanos(duration_nanos(self.start.elapsed()))
    }
}

fn upstream(config: FakeUpstreamConfig) -> FakeUpstream {
    FakeUpstream::new(
        config,
        Arc::new(TokioClock {
            start: Instant::now(),
        }),
    )
}

fn limits(rpm: u64, tpm: u64) -> FakeUpstreamConfig {
    FakeUpstreamConfig {
        rpm,
        tpm,
        ..FakeUpstreamConfig::default()
    }
}

/// "Hello, world" with `max_tokens` 10: 7 prompt tokens (12 characters, one message) and
/// 10 completion tokens.
const HELLO_TOKENS: u64 = 17;

async fn hello(upstream: &FakeUpstream) -> Response<Bytes> {
    upstream
        .handle(chat_request("Hello, world", Some(10)))
        .await
        .expect("an answer")
}

fn header<'a>(response: &'a Response<Bytes>, name: &str) -> Option<&'a str> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("an ASCII header"))
}

fn quota(response: &Response<Bytes>, dimension: &str) -> (String, String, String) {
    let get = |what: &str| {
        header(response, &format!("x-ratelimit-{what}-{dimension}"))
            .unwrap_or_else(|| panic!("no x-ratelimit-{what}-{dimension}"))
            .to_owned()
    };
    (get("limit"), get("remaining"), get("reset"))
}

fn body(response: &Response<Bytes>) -> Value {
    serde_json::from_slice(response.body()).expect("a JSON body")
}

fn strings(a: &str, b: &str, c: &str) -> (String, String, String) {
    (a.to_owned(), b.to_owned(), c.to_owned())
}

#[tokio::test(start_paused = true)]
async fn answers_carry_openai_headers_that_count_down() {
    let upstream = upstream(FakeUpstreamConfig::default());
    assert_eq!(
        prompt_tokens(&chat_body("Hello, world", Some(10))),
        HELLO_TOKENS - 10
    );
    assert_eq!(
        upstream.request_tokens(&chat_body("Hello, world", Some(10))),
        HELLO_TOKENS
    );

    let first = hello(&upstream).await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "content-type"), Some("application/json"));
    assert_eq!(header(&first, "x-request-id"), Some("req_1"));
    // 600 RPM: one request every 100 ms. 100 000 TPM: one token every 600 µs.
    assert_eq!(quota(&first, "requests"), strings("600", "599", "100ms"));
    assert_eq!(
        quota(&first, "tokens"),
        strings("100000", "99983", "10.2ms")
    );
    assert_eq!(header(&first, "retry-after-ms"), None);
    assert_eq!(header(&first, "retry-after"), None);
    assert_eq!(
        body(&first),
        json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1_000,
            "model": FAKE_MODEL,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "tok tok tok tok tok tok tok tok tok tok"},
                "finish_reason": "stop",
            }],
            "usage": {"prompt_tokens": 7, "completion_tokens": 10, "total_tokens": 17},
        })
    );

    let second = hello(&upstream).await;
    assert_eq!(quota(&second, "requests"), strings("600", "598", "200ms"));
    assert_eq!(
        quota(&second, "tokens"),
        strings("100000", "99966", "20.4ms")
    );

    // 10 ms later, a tenth of a request and 16.67 tokens have come back: remaining counts
    // whole units only.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let third = hello(&upstream).await;
    assert_eq!(quota(&third, "requests"), strings("600", "597", "290ms"));
    assert_eq!(
        quota(&third, "tokens"),
        strings("100000", "99965", "20.6ms")
    );
    assert_eq!(upstream.stats().tokens, 3 * HELLO_TOKENS);
}

#[tokio::test(start_paused = true)]
async fn without_quota_headers_only_a_429_says_anything() {
    let upstream = upstream(FakeUpstreamConfig {
        rpm: 1,
        quota_headers: false,
        ..FakeUpstreamConfig::default()
    });
    let ok = hello(&upstream).await;
    assert_eq!(ok.status(), 200);
    assert!(
        ok.headers()
            .keys()
            .all(|name| !name.as_str().starts_with("x-ratelimit")),
        "{:?}",
        ok.headers()
    );
    let refused = hello(&upstream).await;
    assert_eq!(refused.status(), 429);
    assert!(
        refused
            .headers()
            .keys()
            .all(|name| !name.as_str().starts_with("x-ratelimit"))
    );
    assert_eq!(header(&refused, "retry-after-ms"), Some("60000"));
}

#[tokio::test(start_paused = true)]
async fn completion_tokens_are_capped_by_max_tokens_and_the_config() {
    let upstream = upstream(FakeUpstreamConfig {
        completion_tokens: 12,
        ..FakeUpstreamConfig::default()
    });
    let usage = |response: &Response<Bytes>| body(response)["usage"]["completion_tokens"].clone();
    let capped = upstream.handle(chat_request("x", Some(50))).await.unwrap();
    assert_eq!(usage(&capped), 12);
    let default = upstream.handle(chat_request("x", None)).await.unwrap();
    assert_eq!(usage(&default), 12);
    upstream.set_completion_tokens(100);
    let default = upstream.handle(chat_request("x", None)).await.unwrap();
    assert_eq!(usage(&default), 16);
    let newer_name = json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 50,
        "max_completion_tokens": 3,
    });
    let newer = upstream
        .handle(json_request(
            Method::POST,
            "/v1/chat/completions",
            &newer_name,
        ))
        .await
        .unwrap();
    assert_eq!(usage(&newer), 3);
    assert_eq!(body(&newer)["model"], "gpt-4o");
}

#[tokio::test(start_paused = true)]
async fn an_empty_requests_bucket_answers_429_until_it_refills() {
    // 3 RPM: one request every 20 s.
    let upstream = upstream(limits(3, 100_000));
    for _ in 0..3 {
        assert_eq!(hello(&upstream).await.status(), 200);
    }
    let refused = hello(&upstream).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "retry-after-ms"), Some("20000"));
    assert_eq!(header(&refused, "retry-after"), Some("20"));
    assert_eq!(quota(&refused, "requests"), strings("3", "0", "1m0s"));
    // Not debited: the tokens bucket shows the three admitted requests only.
    assert_eq!(
        quota(&refused, "tokens").1,
        (100_000 - 3 * HELLO_TOKENS).to_string()
    );
    let error = body(&refused);
    assert_eq!(error["error"]["type"], "requests");
    assert_eq!(error["error"]["code"], "rate_limit_exceeded");
    assert_eq!(error["error"]["param"], Value::Null);
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "Rate limit reached for gpt-fake in organization org-fake on requests per min \
             (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s."
        ),
        "{message}"
    );

    tokio::time::sleep(Duration::from_millis(19_999)).await;
    let still = hello(&upstream).await;
    assert_eq!(still.status(), 429);
    assert_eq!(header(&still, "retry-after-ms"), Some("1"));
    assert_eq!(header(&still, "retry-after"), Some("1"));

    tokio::time::sleep(Duration::from_millis(1)).await;
    let admitted = hello(&upstream).await;
    assert_eq!(admitted.status(), 200);
    assert_eq!(quota(&admitted, "requests"), strings("3", "0", "1m0s"));

    // A full refill after a minute of quiet.
    tokio::time::sleep(Duration::from_secs(60)).await;
    for _ in 0..3 {
        assert_eq!(hello(&upstream).await.status(), 200);
    }
    let stats = upstream.stats();
    assert_eq!((stats.requests, stats.ok, stats.rate_limited), (9, 7, 2));
    assert_eq!(stats.tokens, 7 * HELLO_TOKENS);
}

#[tokio::test(start_paused = true)]
async fn an_empty_tokens_bucket_answers_429_with_type_tokens() {
    // 100 TPM: one token every 600 ms. Five requests of 17 leave 15.
    let upstream = upstream(limits(600, 100));
    for _ in 0..5 {
        assert_eq!(hello(&upstream).await.status(), 200);
    }
    let refused = hello(&upstream).await;
    assert_eq!(refused.status(), 429);
    // Two more tokens are needed: 1.2 s, rounded up to 2 s in `retry-after`.
    assert_eq!(header(&refused, "retry-after-ms"), Some("1200"));
    assert_eq!(header(&refused, "retry-after"), Some("2"));
    assert_eq!(quota(&refused, "tokens"), strings("100", "15", "51s"));
    assert_eq!(quota(&refused, "requests"), strings("600", "595", "500ms"));
    let error = body(&refused);
    assert_eq!(error["error"]["type"], "tokens");
    assert_eq!(error["error"]["code"], "rate_limit_exceeded");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("on tokens per min (TPM): Limit 100, Used 85, Requested 17.")
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(hello(&upstream).await.status(), 200);
}

#[tokio::test(start_paused = true)]
async fn the_bucket_with_the_longer_wait_names_the_refusal() {
    // Requests: one every 60 s. Tokens: one every 600 ms, so 17 take 10.2 s.
    let upstream = upstream(limits(1, 100));
    assert_eq!(hello(&upstream).await.status(), 200);
    let refused = hello(&upstream).await;
    assert_eq!(body(&refused)["error"]["type"], "requests");
    assert_eq!(header(&refused, "retry-after-ms"), Some("60000"));

    upstream.set_limits(600, 20);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(hello(&upstream).await.status(), 200);
    let refused = hello(&upstream).await;
    assert_eq!(body(&refused)["error"]["type"], "tokens");
}

#[tokio::test(start_paused = true)]
async fn a_request_larger_than_the_tpm_capacity_is_refused_without_retry_headers() {
    let upstream = upstream(limits(600, 10));
    let refused = hello(&upstream).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "retry-after-ms"), None);
    assert_eq!(header(&refused, "retry-after"), None);
    assert_eq!(quota(&refused, "tokens"), strings("10", "10", "0s"));
    let error = body(&refused);
    assert_eq!(error["error"]["type"], "tokens");
    assert_eq!(error["error"]["code"], "rate_limit_exceeded");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Request too large for gpt-fake")
    );
    assert_eq!(upstream.stats().rate_limited, 1);
}

#[tokio::test(start_paused = true)]
async fn set_limits_takes_effect_on_the_next_request_and_keeps_the_units_in_use() {
    let upstream = upstream(limits(600, 100_000));
    for _ in 0..100 {
        assert_eq!(hello(&upstream).await.status(), 200);
    }
    upstream.set_limits(300, 50_000);
    assert_eq!(
        upstream.config(),
        FakeUpstreamConfig {
            rpm: 300,
            tpm: 50_000,
            ..FakeUpstreamConfig::default()
        }
    );
    let next = hello(&upstream).await;
    // 100 used of 300, then this one. 1 700 tokens used of 50 000, then 17.
    assert_eq!(quota(&next, "requests"), strings("300", "199", "20.2s"));
    assert_eq!(quota(&next, "tokens").1, "48283");

    // Below what is in use: empty, refilling at the new rate.
    upstream.set_limits(1, 100_000);
    let refused = hello(&upstream).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(quota(&refused, "requests"), strings("1", "0", "1m0s"));
    assert_eq!(header(&refused, "retry-after-ms"), Some("60000"));

    // No limit: the dimension's headers go away.
    upstream.set_limits(0, 100_000);
    let unlimited = hello(&upstream).await;
    assert_eq!(unlimited.status(), 200);
    assert_eq!(header(&unlimited, "x-ratelimit-limit-requests"), None);
    assert_eq!(header(&unlimited, "x-ratelimit-remaining-requests"), None);
    assert_eq!(header(&unlimited, "x-ratelimit-reset-requests"), None);
    assert!(header(&unlimited, "x-ratelimit-limit-tokens").is_some());
}

#[tokio::test(start_paused = true)]
async fn latency_delays_admitted_answers_only() {
    let upstream = upstream(limits(1, 100_000));
    upstream.set_latency(Duration::from_millis(250));
    let start = Instant::now();
    assert_eq!(hello(&upstream).await.status(), 200);
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    let start = Instant::now();
    assert_eq!(hello(&upstream).await.status(), 429);
    assert_eq!(start.elapsed(), Duration::ZERO);

    // Concurrent calls overlap: latency is not a queue.
    upstream.set_limits(600, 100_000);
    let start = Instant::now();
    let calls = (0..5).map(|_| {
        let upstream = upstream.clone();
        tokio::spawn(async move { hello(&upstream).await.status() })
    });
    for call in calls.collect::<Vec<_>>() {
        assert_eq!(call.await.unwrap(), 200);
    }
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    // The log records arrivals, when the quota is charged.
    let log = upstream.log();
    assert_eq!(log.len(), 7);
    assert_eq!(log[0].at, EPOCH);
    assert_eq!(log[1].at, EPOCH.plus_nanos(250_000_000));
    assert_eq!(log[6].at, EPOCH.plus_nanos(250_000_000));
}

#[tokio::test(start_paused = true)]
async fn server_errors_are_answered_and_not_charged() {
    let upstream = upstream(FakeUpstreamConfig::default());
    upstream.fail_next(
        2,
        Fault::ServerError {
            status: 503,
            retry_after: Some(Duration::from_millis(1_500)),
        },
    );
    upstream.fail_next(1, Fault::server_error(500));
    for _ in 0..2 {
        let failed = hello(&upstream).await;
        assert_eq!(failed.status(), 503);
        assert_eq!(header(&failed, "retry-after-ms"), Some("1500"));
        assert_eq!(header(&failed, "retry-after"), Some("2"));
        assert_eq!(header(&failed, "x-ratelimit-limit-requests"), None);
        assert_eq!(body(&failed)["error"]["type"], "server_error");
    }
    let failed = hello(&upstream).await;
    assert_eq!(failed.status(), 500);
    assert_eq!(header(&failed, "retry-after-ms"), None);

    let ok = hello(&upstream).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(quota(&ok, "requests").1, "599");

    upstream.set_outage(Some(Fault::server_error(502)));
    for _ in 0..3 {
        assert_eq!(hello(&upstream).await.status(), 502);
    }
    // Queued faults go before the outage.
    upstream.fail_next(1, Fault::server_error(504));
    assert_eq!(hello(&upstream).await.status(), 504);
    assert_eq!(hello(&upstream).await.status(), 502);
    upstream.set_outage(None);
    assert_eq!(hello(&upstream).await.status(), 200);

    let stats = upstream.stats();
    assert_eq!((stats.requests, stats.ok, stats.server_errors), (10, 2, 8));
    let statuses: Vec<u16> = upstream.log().iter().map(|s| s.status).collect();
    assert_eq!(statuses, [503, 503, 500, 200, 502, 502, 502, 504, 502, 200]);
}

#[tokio::test(start_paused = true)]
async fn resets_and_timeouts_give_no_answer() {
    let upstream = upstream(FakeUpstreamConfig::default());
    upstream.fail_next(1, Fault::ConnectionReset);
    let reset = upstream.handle(chat_request("Hi", None)).await;
    assert!(matches!(reset, Err(FakeUpstreamError::ConnectionReset)));

    // The client's timeout fires; the upstream is still "working on it".
    upstream.fail_next(2, Fault::Timeout);
    let start = Instant::now();
    let timed_out = tokio::time::timeout(
        Duration::from_secs(30),
        upstream.handle(chat_request("Hi", None)),
    )
    .await;
    assert!(timed_out.is_err());
    assert_eq!(start.elapsed(), Duration::from_secs(30));
    // A client without a timeout waits a (paused) day.
    let start = Instant::now();
    let gave_up = upstream.handle(chat_request("Hi", None)).await;
    assert!(matches!(gave_up, Err(FakeUpstreamError::TimedOut)));
    assert_eq!(start.elapsed(), TIMEOUT_AFTER);

    upstream.set_outage(Some(Fault::ConnectionReset));
    for _ in 0..2 {
        let reset = upstream.handle(chat_request("Hi", None)).await;
        assert!(matches!(reset, Err(FakeUpstreamError::ConnectionReset)));
    }
    upstream.clear_faults();
    assert_eq!(hello(&upstream).await.status(), 200);

    let stats = upstream.stats();
    assert_eq!(
        (stats.requests, stats.resets, stats.timeouts, stats.ok),
        (6, 3, 2, 1)
    );
    let log = upstream.log();
    assert!(log[..5].iter().all(|s| s.status == 0 && s.tokens == 0));
    assert_eq!(log[5].tokens, HELLO_TOKENS);
    let ids: Vec<u64> = log.iter().map(|s| s.request_id).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6]);
}

#[tokio::test(start_paused = true)]
async fn insufficient_quota_is_a_429_without_retry_headers_or_debit() {
    let upstream = upstream(FakeUpstreamConfig {
        insufficient_quota: true,
        ..FakeUpstreamConfig::default()
    });
    for _ in 0..3 {
        let refused = hello(&upstream).await;
        assert_eq!(refused.status(), 429);
        assert_eq!(header(&refused, "retry-after-ms"), None);
        assert_eq!(header(&refused, "retry-after"), None);
        assert_eq!(quota(&refused, "requests"), strings("600", "600", "0s"));
        let error = body(&refused);
        assert_eq!(error["error"]["type"], "insufficient_quota");
        assert_eq!(error["error"]["code"], "insufficient_quota");
    }
    upstream.set_insufficient_quota(false);
    assert_eq!(hello(&upstream).await.status(), 200);
    let stats = upstream.stats();
    assert_eq!(
        (stats.insufficient_quota, stats.rate_limited, stats.ok),
        (3, 0, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_daily_budget_refuses_once_spent() {
    let upstream = upstream(FakeUpstreamConfig {
        daily_requests: Some(2),
        ..FakeUpstreamConfig::default()
    });
    assert_eq!(hello(&upstream).await.status(), 200);
    assert_eq!(hello(&upstream).await.status(), 200);
    let refused = hello(&upstream).await;
    assert_eq!(refused.status(), 429);
    // Two a day: one every 12 hours.
    assert_eq!(header(&refused, "retry-after"), Some("43200"));
    let error = body(&refused);
    assert_eq!(error["error"]["type"], "requests");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("requests per day (RPD): Limit 2, Used 2")
    );
    upstream.set_daily_requests(None);
    assert_eq!(hello(&upstream).await.status(), 200);
}

#[tokio::test(start_paused = true)]
async fn models_unknown_paths_and_bad_bodies() {
    let upstream = upstream(limits(600, 100_000));
    let models = upstream
        .handle(json_request(Method::GET, "/v1/models", &Value::Null))
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    assert_eq!(body(&models)["data"][0]["id"], FAKE_MODEL);
    assert_eq!(quota(&models, "requests").1, "599");
    assert_eq!(quota(&models, "tokens").1, "100000");

    let unknown = upstream
        .handle(json_request(Method::GET, "/v1/nothing", &Value::Null))
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(body(&unknown)["error"]["type"], "invalid_request_error");
    assert_eq!(header(&unknown, "x-ratelimit-limit-requests"), None);
    let wrong_method = upstream
        .handle(json_request(
            Method::GET,
            "/v1/chat/completions",
            &Value::Null,
        ))
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 404);
    assert_eq!(
        body(&wrong_method)["error"]["message"],
        "Invalid URL (GET /v1/chat/completions)"
    );

    let mut not_json = Request::new(Full::new(Bytes::from_static(b"{\"model\":")));
    *not_json.method_mut() = Method::POST;
    *not_json.uri_mut() = "/v1/chat/completions".parse().unwrap();
    let bad = upstream.handle(not_json).await.unwrap();
    assert_eq!(bad.status(), 400);
    let error = body(&bad);
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert_eq!(error["error"]["code"], Value::Null);
    let no_messages = upstream
        .handle(json_request(
            Method::POST,
            "/v1/chat/completions",
            &json!({"model": "m"}),
        ))
        .await
        .unwrap();
    assert_eq!(no_messages.status(), 400);
    assert_eq!(body(&no_messages)["error"]["param"], "messages");

    // None of them was charged.
    assert_eq!(quota(&hello(&upstream).await, "requests").1, "598");
    let stats = upstream.stats();
    assert_eq!((stats.requests, stats.ok, stats.client_errors), (6, 2, 4));
}

#[tokio::test(start_paused = true)]
async fn it_is_a_tower_service_with_full_bodies() {
    let mut service = upstream(limits(600, 100_000));
    std::future::poll_fn(|cx| Service::<Request<Full<Bytes>>>::poll_ready(&mut service, cx))
        .await
        .unwrap();
    let response = service
        .call(chat_request("Hello, world", Some(10)))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-ratelimit-remaining-requests"], "599");
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["usage"]["total_tokens"], HELLO_TOKENS);

    // Any body with `Bytes` data: a `String` here.
    let request = Request::post("/v1/chat/completions")
        .body(chat_body("Hi", None).to_string())
        .unwrap();
    assert_eq!(service.call(request).await.unwrap().status(), 200);

    service.fail_next(1, Fault::ConnectionReset);
    let reset = service.call(chat_request("Hi", None)).await;
    assert!(matches!(reset, Err(FakeUpstreamError::ConnectionReset)));
}

#[tokio::test(start_paused = true)]
async fn the_log_gives_throughput_per_time_slice_and_stays_bounded() {
    // 60 RPM under a steady 2 requests a second: the full bucket of 60 and a minute of
    // refill in the first minute (the 120th request finds it a hair short), then one a
    // second.
    let upstream = upstream(limits(60, 0));
    for _ in 0..240 {
        hello(&upstream).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log = upstream.log();
    assert_eq!(log.len(), 240);
    let ok_in = |from_secs: u64, to_secs: u64| {
        log.iter()
            .filter(|s| s.status == 200)
            .filter(|s| {
                let secs = (s.at.as_u64() - EPOCH.as_u64()) / 1_000_000_000;
                (from_secs..to_secs).contains(&secs)
            })
            .count()
    };
    assert_eq!(ok_in(0, 60), 119);
    assert_eq!(ok_in(60, 120), 60);
    assert_eq!(upstream.stats().rate_limited, 240 - 119 - 60);

    upstream.reset_stats();
    assert_eq!(upstream.log(), []);
    let unlimited = FakeUpstream::new(limits(0, 0), Arc::new(clock_at(5)));
    for _ in 0..=LOG_CAPACITY {
        unlimited
            .handle(json_request(Method::GET, "/v1/models", &Value::Null))
            .await
            .unwrap();
    }
    let log = unlimited.log();
    assert_eq!(log.len(), LOG_CAPACITY);
    assert_eq!(log[0].request_id, 2);
    assert_eq!(
        unlimited.stats().requests,
        u64::try_from(LOG_CAPACITY).unwrap() + 1
    );
}

/// Sends one HTTP/1.1 request with `Connection: close` and reads until the server closes.
async fn raw_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    Ok(String::from_utf8(answer).expect("a UTF-8 answer"))
}

/// The value of `name` in a raw HTTP answer's head.
fn raw_header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[tokio::test]
async fn over_http_it_answers_and_resets_connections() {
    // Real sockets need running time; a manual clock keeps the quota exact.
    let clock = clock_at(1_000);
    let upstream = FakeUpstream::new(limits(2, 100_000), Arc::new(clock.clone()));
    let server = upstream.serve().await.unwrap();
    assert!(server.addr().ip().is_loopback());
    assert_eq!(server.url(), format!("http://{}", server.addr()));

    let chat = chat_body("Hello, world", Some(10)).to_string();
    let ok = raw_request(server.addr(), "POST", "/v1/chat/completions", &chat)
        .await
        .unwrap();
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert_eq!(raw_header(&ok, "x-ratelimit-limit-requests"), Some("2"));
    assert_eq!(raw_header(&ok, "x-ratelimit-remaining-requests"), Some("1"));
    assert_eq!(raw_header(&ok, "x-ratelimit-reset-requests"), Some("30s"));
    assert_eq!(
        raw_header(&ok, "x-ratelimit-remaining-tokens"),
        Some("99983")
    );
    let json: Value = serde_json::from_str(ok.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json["usage"]["total_tokens"], HELLO_TOKENS);

    let ok = raw_request(server.addr(), "POST", "/v1/chat/completions", &chat)
        .await
        .unwrap();
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    let refused = raw_request(server.addr(), "POST", "/v1/chat/completions", &chat)
        .await
        .unwrap();
    assert!(
        refused.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
        "{refused}"
    );
    assert_eq!(raw_header(&refused, "retry-after-ms"), Some("30000"));
    assert_eq!(raw_header(&refused, "retry-after"), Some("30"));

    clock.advance_secs(30);
    let models = raw_request(server.addr(), "GET", "/v1/models", "")
        .await
        .unwrap();
    assert!(models.starts_with("HTTP/1.1 200 OK\r\n"), "{models}");
    let missing = raw_request(server.addr(), "GET", "/nope", "")
        .await
        .unwrap();
    assert!(
        missing.starts_with("HTTP/1.1 404 Not Found\r\n"),
        "{missing}"
    );

    // A reset: no answer, the connection is torn down.
    upstream.fail_next(1, Fault::ConnectionReset);
    let reset = raw_request(server.addr(), "POST", "/v1/chat/completions", &chat).await;
    let err = reset.expect_err("a reset, not an answer");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    let failing = upstream.clone();
    failing.fail_next(1, Fault::server_error(503));
    let unavailable = raw_request(server.addr(), "POST", "/v1/chat/completions", &chat)
        .await
        .unwrap();
    assert!(
        unavailable.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{unavailable}"
    );

    let stats = upstream.stats();
    assert_eq!(
        (
            stats.requests,
            stats.ok,
            stats.rate_limited,
            stats.resets,
            stats.server_errors,
            stats.client_errors
        ),
        (7, 3, 1, 1, 1, 1)
    );

    let addr = server.addr();
    server.shutdown().await;
    let refused = TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn over_http_keep_alive_serves_several_requests_on_one_connection() {
    let upstream = FakeUpstream::new(FakeUpstreamConfig::default(), Arc::new(clock_at(1)));
    let server = upstream.serve().await.unwrap();
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    let chat = chat_body("Hi", None).to_string();
    let one = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{chat}",
        chat.len()
    );
    let last = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{chat}",
        chat.len()
    );
    stream
        .write_all(format!("{one}{last}").as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert_eq!(answer.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{answer}");
    assert!(
        answer.contains("x-ratelimit-remaining-requests: 598"),
        "{answer}"
    );
    drop(server);
}
