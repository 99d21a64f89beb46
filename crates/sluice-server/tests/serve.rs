//! End to end over real sockets: the server runs in this process on port-0 listeners, and
//! is asked over HTTP JSON (a hyper client) and gRPC (a tonic client built from the same
//! Envoy types Envoy uses).
//!
//! Limits here are per hour or per day, so the real clock cannot change a decision while a
//! test runs; the exact arithmetic is the core's, tested there with a manual clock.

mod support;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use serde_json::{Value, json};
use support::{TestServer, check_body};

const USERS: &str = "
domain: api
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 5, algorithm: gcra}
  - key: user
    value: vip
    rate_limit: {unit: hour, requests_per_unit: 100, algorithm: gcra, name: vip}
  - key: path
    value: /search*
    rate_limit: {unit: day, requests_per_unit: 2, algorithm: fixed_window}
  - key: tenant
    descriptors:
      - key: user
        rate_limit: {unit: hour, requests_per_unit: 3, algorithm: gcra, name: tenant_user}
  - key: bot
    shadow_mode: true
    rate_limit: {unit: hour, requests_per_unit: 1, algorithm: gcra}
  - key: free
    rate_limit: {unlimited: true}
  - key: plan
    value: basic
    rate_limit:
      unit: hour
      requests_per_unit: 2
      algorithm: gcra
      name: basic
  - key: plan
    value: promo
    rate_limit:
      unit: hour
      requests_per_unit: 50
      algorithm: gcra
      name: promo
      replaces: [{name: basic}]
";

fn codes(response: &Value) -> Vec<String> {
    response["statuses"]
        .as_array()
        .expect("statuses is an array")
        .iter()
        .map(|s| s["code"].as_str().expect("code is a string").to_owned())
        .collect()
}

#[tokio::test]
async fn http_admits_exactly_the_limit_then_refuses_with_the_time_to_reset() {
    let server = TestServer::start(USERS).await;
    let body = check_body("api", &[&[("user", "alice")]], None);
    for remaining in (0..5).rev() {
        let (status, response) = server.post("/v1/check", &body).await;
        assert_eq!(status, 200);
        assert_eq!(response["overall_code"], "OK", "{response}");
        let s = &response["statuses"][0];
        assert_eq!(s["limit_remaining"], remaining);
        assert_eq!(s["limit"]["requests_per_unit"], 5);
        assert_eq!(s["limit"]["unit"], "hour");
        assert_eq!(s["retry_after_ms"], Value::Null);
    }
    let (_, response) = server.post("/v1/check", &body).await;
    assert_eq!(response["overall_code"], "OVER_LIMIT");
    let s = &response["statuses"][0];
    assert_eq!(s["code"], "OVER_LIMIT");
    assert_eq!(s["limit_remaining"], 0);
    // Five spent of 5/hour: full again in one hour, one more in 12 minutes.
    let reset = s["duration_until_reset_ms"].as_u64().expect("a number");
    assert!((3_590_000..=3_600_000).contains(&reset), "{reset}");
    let retry = s["retry_after_ms"].as_u64().expect("a number");
    assert!((710_000..=720_000).contains(&retry), "{retry}");
    // Another user is untouched.
    let (_, other) = server
        .post("/v1/check", &check_body("api", &[&[("user", "bob")]], None))
        .await;
    assert_eq!(other["statuses"][0]["limit_remaining"], 4);
    server.stop().await;
}

#[tokio::test]
async fn grpc_admits_exactly_the_limit_then_refuses_with_the_time_to_reset() {
    let server = TestServer::start(USERS).await;
    let mut client = server.grpc().await;
    let request = rls_request("api", &[&[("user", "carol")]], 0);
    for remaining in (0..5).rev() {
        let response = client
            .should_rate_limit(request.clone())
            .await
            .expect("answered")
            .into_inner();
        assert_eq!(response.overall_code, Code::Ok as i32);
        let status = &response.statuses[0];
        assert_eq!(status.limit_remaining, remaining);
        let limit = status.current_limit.as_ref().expect("a limit");
        assert_eq!(limit.requests_per_unit, 5);
    }
    let response = client
        .should_rate_limit(request)
        .await
        .expect("answered")
        .into_inner();
    assert_eq!(response.overall_code, Code::OverLimit as i32);
    let reset = response.statuses[0]
        .duration_until_reset
        .expect("a duration");
    assert!((3_590..=3_600).contains(&reset.seconds), "{reset:?}");
    server.stop().await;
}

#[tokio::test]
async fn grpc_hits_addend_counts_and_zero_means_one() {
    let server = TestServer::start(USERS).await;
    let mut client = server.grpc().await;
    let response = client
        .should_rate_limit(rls_request("api", &[&[("user", "dave")]], 3))
        .await
        .expect("answered")
        .into_inner();
    assert_eq!(response.statuses[0].limit_remaining, 2);
    let response = client
        .should_rate_limit(rls_request("api", &[&[("user", "dave")]], 0))
        .await
        .expect("answered")
        .into_inner();
    assert_eq!(response.statuses[0].limit_remaining, 1);
    let response = client
        .should_rate_limit(rls_request("api", &[&[("user", "dave")]], 2))
        .await
        .expect("answered")
        .into_inner();
    assert_eq!(response.overall_code, Code::OverLimit as i32);
    server.stop().await;
}

#[tokio::test]
async fn grpc_rejects_a_request_without_descriptors() {
    let server = TestServer::start(USERS).await;
    let mut client = server.grpc().await;
    let err = client
        .should_rate_limit(rls_request("api", &[], 1))
        .await
        .expect_err("invalid");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("descriptors"), "{}", err.message());
    server.stop().await;
}

#[tokio::test]
async fn unmatched_descriptors_and_unknown_domains_are_ok_without_a_limit() {
    let server = TestServer::start(USERS).await;
    for body in [
        check_body("api", &[&[("nobody", "x")]], None),
        check_body("elsewhere", &[&[("user", "alice")]], None),
        // Deeper than any configured limit: envoy ratelimit applies none.
        check_body("api", &[&[("user", "alice"), ("extra", "1")]], None),
        // Shallower: `tenant` alone has no limit of its own.
        check_body("api", &[&[("tenant", "t1")]], None),
    ] {
        for _ in 0..10 {
            let (_, response) = server.post("/v1/check", &body).await;
            assert_eq!(response["overall_code"], "OK", "{body}");
            assert_eq!(response["statuses"][0]["limit"], Value::Null, "{body}");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn value_match_beats_key_match_and_wildcards_match_prefixes() {
    let server = TestServer::start(USERS).await;
    let (_, vip) = server
        .post("/v1/check", &check_body("api", &[&[("user", "vip")]], None))
        .await;
    assert_eq!(vip["statuses"][0]["limit"]["requests_per_unit"], 100);
    assert_eq!(vip["statuses"][0]["limit"]["name"], "vip");
    let search = |q: &'static str| check_body("api", &[&[("path", q)]], None);
    let mut seen = Vec::new();
    for q in ["/search?q=a", "/search/b", "/searching"] {
        let (_, response) = server.post("/v1/check", &search(q)).await;
        seen.push(
            response["statuses"][0]["code"]
                .as_str()
                .expect("a code")
                .to_owned(),
        );
    }
    // Each value has its own counter of 2/day.
    assert_eq!(seen, ["OK", "OK", "OK"]);
    let (_, response) = server.post("/v1/check", &search("/search?q=a")).await;
    assert_eq!(response["statuses"][0]["limit_remaining"], 0);
    let (_, response) = server.post("/v1/check", &search("/search?q=a")).await;
    assert_eq!(response["overall_code"], "OVER_LIMIT");
    let (_, response) = server.post("/v1/check", &search("/other")).await;
    assert_eq!(response["statuses"][0]["limit"], Value::Null);
    server.stop().await;
}

#[tokio::test]
async fn nested_descriptors_limit_at_the_deepest_level() {
    let server = TestServer::start(USERS).await;
    let body = check_body("api", &[&[("tenant", "t1"), ("user", "erin")]], None);
    let mut got = Vec::new();
    for _ in 0..4 {
        let (_, response) = server.post("/v1/check", &body).await;
        got.push(
            response["overall_code"]
                .as_str()
                .expect("a code")
                .to_owned(),
        );
        assert_eq!(response["statuses"][0]["limit"]["name"], "tenant_user");
    }
    assert_eq!(got, ["OK", "OK", "OK", "OVER_LIMIT"]);
    server.stop().await;
}

#[tokio::test]
async fn several_descriptors_are_all_or_nothing() {
    let server = TestServer::start(USERS).await;
    // Spend the tenant limit for frank (3/hour).
    let tenant = [("tenant", "t2"), ("user", "frank")];
    for _ in 0..3 {
        server
            .post("/v1/check", &check_body("api", &[&tenant], None))
            .await;
    }
    // frank's own user limit (5/hour) is not debited by a request the tenant limit refuses.
    let both = check_body("api", &[&[("user", "frank")], &tenant], None);
    for _ in 0..3 {
        let (_, response) = server.post("/v1/check", &both).await;
        assert_eq!(response["overall_code"], "OVER_LIMIT");
        assert_eq!(codes(&response), ["OK", "OVER_LIMIT"]);
        assert_eq!(
            response["statuses"][0]["limit_remaining"], 4,
            "would-be remaining, nothing taken"
        );
    }
    let (_, alone) = server
        .post(
            "/v1/check",
            &check_body("api", &[&[("user", "frank")]], None),
        )
        .await;
    assert_eq!(alone["statuses"][0]["limit_remaining"], 4);
    server.stop().await;
}

#[tokio::test]
async fn shadow_mode_counts_but_allows() {
    let server = TestServer::start(USERS).await;
    let body = check_body("api", &[&[("bot", "crawler")]], None);
    for remaining in [0, 0, 0] {
        let (_, response) = server.post("/v1/check", &body).await;
        assert_eq!(response["overall_code"], "OK");
        assert_eq!(response["statuses"][0]["limit_remaining"], remaining);
        assert_eq!(response["statuses"][0]["limit"]["shadow_mode"], true);
    }
    let metrics = server.get_text("/metrics").await;
    assert!(
        metrics.contains("sluice_decisions_total{domain=\"api\",result=\"shadow\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_rule_shadow_over_limit_total{rule=\"api.bot\"} 2"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn unlimited_and_replaced_rules_never_refuse() {
    let server = TestServer::start(USERS).await;
    for _ in 0..5 {
        let (_, response) = server
            .post("/v1/check", &check_body("api", &[&[("free", "x")]], None))
            .await;
        assert_eq!(response["overall_code"], "OK");
    }
    // `promo` replaces `basic` when both apply: basic's 2/hour is not enforced.
    let both = check_body("api", &[&[("plan", "basic")], &[("plan", "promo")]], None);
    for _ in 0..4 {
        let (_, response) = server.post("/v1/check", &both).await;
        assert_eq!(response["overall_code"], "OK", "{response}");
        assert_eq!(response["statuses"][0]["limit"], Value::Null);
        assert_eq!(response["statuses"][1]["limit"]["name"], "promo");
    }
    // Alone, basic applies.
    let basic = check_body("api", &[&[("plan", "basic")]], None);
    let (_, first) = server.post("/v1/check", &basic).await;
    assert_eq!(first["statuses"][0]["limit_remaining"], 1);
    server.stop().await;
}

#[tokio::test]
async fn malformed_bodies_are_problems_that_name_the_field() {
    let server = TestServer::start(USERS).await;
    for (body, field) in [
        (json!({"domain": "api"}).to_string(), "body"),
        (
            json!({"domain": "api", "descriptors": [{"entries": [{"value": "x"}]}]}).to_string(),
            "descriptors[0].entries[0]",
        ),
        (
            json!({"domain": "api", "descriptors": [{"entries": [{"key": 7}]}]}).to_string(),
            "descriptors[0].entries[0].key",
        ),
        (
            json!({"domain": "api", "descriptors": [], "hits": 1}).to_string(),
            "descriptors",
        ),
        (
            json!({"domain": "api", "descriptors": [{"entries": [{"key": "k"}]}], "hits": -1})
                .to_string(),
            "hits",
        ),
        (
            json!({"domain": "api", "descriptors": [{"entries": [{"key": "k"}]}], "color": 1})
                .to_string(),
            "color",
        ),
        ("{not json".to_owned(), "body"),
    ] {
        let (status, problem, content_type) = server.post_raw("/v1/check", body.clone()).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(content_type, "application/problem+json");
        assert_eq!(problem["status"], 400);
        let detail = problem["detail"].as_str().expect("a detail");
        assert!(detail.contains(field), "{body}: {detail}");
    }
    let huge = format!("{{\"domain\":\"{}\"}}", "x".repeat(100_000));
    let (status, problem, _) = server.post_raw("/v1/check", huge).await;
    assert_eq!(status, 413);
    assert_eq!(problem["status"], 413);
    server.stop().await;
}

#[tokio::test]
async fn reservations_are_settled_or_cancelled_once() {
    let server = TestServer::start(USERS).await;
    let reserve = |hits: u64| {
        let mut body = check_body("api", &[&[("user", "gina")]], Some(hits));
        body["max_wait_ms"] = json!(0);
        body
    };
    let (status, granted) = server.post("/v1/reserve", &reserve(4)).await;
    assert_eq!(status, 200);
    assert_eq!(granted["granted"], true, "{granted}");
    assert_eq!(granted["wait_ms"], 0);
    let id = granted["reservation_id"]
        .as_str()
        .expect("an id")
        .to_owned();
    // Only one unit left: a reservation of 2 is refused.
    let (_, refused) = server.post("/v1/reserve", &reserve(2)).await;
    assert_eq!(refused["granted"], false);
    assert_eq!(refused["reservation_id"], Value::Null);
    // The work used 1 unit, not 4: settling gives 3 back.
    let (status, _) = server
        .post("/v1/settle", &json!({"reservation_id": id, "hits": 1}))
        .await;
    assert_eq!(status, 200);
    let (_, after) = server
        .post(
            "/v1/check",
            &check_body("api", &[&[("user", "gina")]], None),
        )
        .await;
    assert_eq!(after["statuses"][0]["limit_remaining"], 3);
    // The id is used up: neither a second settle nor a cancel can give units back.
    for (path, body) in [
        ("/v1/settle", json!({"reservation_id": id, "hits": 0})),
        ("/v1/cancel", json!({"reservation_id": id})),
        (
            "/v1/cancel",
            json!({"reservation_id": "0123456789abcdef0123456789abcdef"}),
        ),
    ] {
        let (status, problem) = server.post(path, &body).await;
        assert_eq!(status, 404, "{path}: {problem}");
    }
    let (_, reserved) = server.post("/v1/reserve", &reserve(2)).await;
    let id = reserved["reservation_id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let (status, _) = server
        .post("/v1/cancel", &json!({"reservation_id": id}))
        .await;
    assert_eq!(status, 200);
    let (_, after) = server
        .post(
            "/v1/check",
            &check_body("api", &[&[("user", "gina")]], None),
        )
        .await;
    assert_eq!(after["statuses"][0]["limit_remaining"], 2);
    server.stop().await;
}

#[tokio::test]
async fn limits_health_metrics_and_openapi_are_served() {
    let server = TestServer::start(USERS).await;
    let (status, limits) = server.get("/v1/limits").await;
    assert_eq!(status, 200);
    assert_eq!(limits["version"], 1);
    assert!(
        limits["config"].to_string().contains("tenant_user"),
        "{limits}"
    );
    assert_eq!(server.get_text("/healthz").await.trim(), "ok");
    let (status, ready) = server.get("/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(ready["store"], "memory");
    server
        .post("/v1/check", &check_body("api", &[&[("user", "hal")]], None))
        .await;
    let metrics = server.get_text("/metrics").await;
    for needle in [
        "sluice_decisions_total{domain=\"api\",result=\"allowed\"} 1",
        "sluice_decision_duration_seconds_count 1",
        "sluice_keys 1",
        "sluice_config_version 1",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    let (status, openapi) = server.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(openapi["openapi"], "3.1.0");
    for path in [
        "/v1/check",
        "/v1/reserve",
        "/v1/settle",
        "/v1/cancel",
        "/v1/limits",
    ] {
        assert!(openapi["paths"][path].is_object(), "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn grpc_health_reports_the_rate_limit_service_serving() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let server = TestServer::start(USERS).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_addr))
        .expect("an endpoint")
        .connect()
        .await
        .expect("connected");
    let mut health = HealthClient::new(channel);
    let service = "envoy.service.ratelimit.v3.RateLimitService".to_owned();
    let response = health
        .check(HealthCheckRequest { service })
        .await
        .expect("answered")
        .into_inner();
    assert_eq!(response.status, 1, "SERVING");
    server.stop().await;
}

#[tokio::test]
async fn a_changed_config_is_served_without_failing_a_request_or_resetting_kept_limits() {
    let server = TestServer::start(USERS).await;
    let user = check_body("api", &[&[("user", "ivy")]], None);
    for _ in 0..2 {
        server.post("/v1/check", &user).await;
    }
    // Requests keep flowing while the file changes.
    let load = {
        let server = server.clone_client();
        tokio::spawn(async move {
            let body = check_body("api", &[&[("user", "load")]], Some(0));
            let mut answered = 0;
            for _ in 0..300 {
                let (status, _) = server.post("/v1/check", &body).await;
                assert_eq!(status, 200);
                answered += 1;
            }
            answered
        })
    };
    let changed = USERS.replace(
        "requests_per_unit: 100, algorithm: gcra, name: vip",
        "requests_per_unit: 7, algorithm: gcra, name: vip",
    );
    server.write_config(&changed);
    server.wait_for_version(2).await;
    assert_eq!(load.await.expect("the load ran"), 300);
    let (_, vip) = server
        .post("/v1/check", &check_body("api", &[&[("user", "vip")]], None))
        .await;
    assert_eq!(vip["statuses"][0]["limit"]["requests_per_unit"], 7);
    // ivy's limit did not change: her two requests still count.
    let (_, ivy) = server.post("/v1/check", &user).await;
    assert_eq!(ivy["statuses"][0]["limit_remaining"], 2);

    // A broken file is refused; the previous config keeps serving.
    server.write_config("domain: api\ndescriptors:\n  - key: user\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n");
    server
        .wait_for_metric("sluice_config_reloads_total{result=\"failed\"} 1")
        .await;
    let (_, limits) = server.get("/v1/limits").await;
    assert_eq!(limits["version"], 2);
    let (_, ivy) = server.post("/v1/check", &user).await;
    assert_eq!(ivy["statuses"][0]["limit_remaining"], 1);
    server.stop().await;
}

#[tokio::test]
async fn ratelimit_headers_are_offered_to_envoy_when_enabled() {
    let server = TestServer::start_with(USERS, true).await;
    let mut client = server.grpc().await;
    let response = client
        .should_rate_limit(rls_request("api", &[&[("user", "jay")]], 1))
        .await
        .expect("answered")
        .into_inner();
    let headers: Vec<(String, String)> = response
        .response_headers_to_add
        .iter()
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect();
    let policy = sluice_http::parse_policy_header(&headers[0].1).expect("parses");
    let limit = sluice_http::parse_limit_header(&headers[1].1).expect("parses");
    assert_eq!(headers[0].0, "RateLimit-Policy");
    assert_eq!(
        (
            policy[0].name.as_str(),
            policy[0].quota,
            policy[0].window_secs
        ),
        ("api.user", 5, 3600)
    );
    assert_eq!(headers[1].0, "RateLimit");
    assert_eq!((limit[0].remaining, limit[0].reset_secs), (4, 720));
    assert_eq!(
        headers.len(),
        2,
        "no Retry-After while within the limit: {headers:?}"
    );

    // Over the limit (5 an hour, GCRA): the wait for the next unit is 720 s, while the
    // descriptor's reset (all five back) is 3600 s. Retry-After says the wait.
    let mut over = None;
    for _ in 0..5 {
        over = Some(
            client
                .should_rate_limit(rls_request("api", &[&[("user", "jay")]], 1))
                .await
                .expect("answered")
                .into_inner(),
        );
    }
    let over = over.expect("five answers");
    assert_eq!(over.overall_code, Code::OverLimit as i32);
    let reset = over.statuses[0]
        .duration_until_reset
        .as_ref()
        .map(|d| d.seconds);
    // (The server's clock is real: a few milliseconds have passed since the first unit.)
    assert!(
        reset.is_some_and(|secs| (3590..=3600).contains(&secs)),
        "{reset:?}"
    );
    let retry_after: Vec<&str> = over
        .response_headers_to_add
        .iter()
        .filter(|h| h.key == "Retry-After")
        .map(|h| h.value.as_str())
        .collect();
    assert_eq!(retry_after, ["720"]);
    server.stop().await;
}

fn rls_request(domain: &str, descriptors: &[&[(&str, &str)]], hits: u32) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.to_owned(),
        descriptors: descriptors
            .iter()
            .map(|entries| RateLimitDescriptor {
                entries: entries
                    .iter()
                    .map(|(key, value)| Entry {
                        key: (*key).to_owned(),
                        value: (*value).to_owned(),
                    })
                    .collect(),
                ..RateLimitDescriptor::default()
            })
            .collect(),
        hits_addend: hits,
    }
}
