//! The admin API: authentication, overrides (also across instances sharing Redis, across a
//! restart, and how their expiry is shown), resets, lookups and live statistics.

mod support;

use serde_json::{Value, json};
use support::{ADMIN_TOKEN, TestServer, check_body};

const CONFIG: &str = "
domain: api
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 3, algorithm: gcra}
";

fn user(id: &str) -> Value {
    check_body("api", &[&[("user", id)]], None)
}

fn descriptor(id: &str) -> Value {
    json!({"domain": "api", "entries": [{"key": "user", "value": id}]})
}

fn override_for(id: &str, action: &str, extra: Value) -> Value {
    let mut body = descriptor(id);
    body["action"] = json!(action);
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            body[k] = v;
        }
    }
    body
}

async fn overall(server: &TestServer, id: &str) -> String {
    let (_, answer) = server.post("/v1/check", &user(id)).await;
    answer["overall_code"].as_str().expect("a code").to_owned()
}

#[tokio::test]
async fn without_the_token_nothing_is_read_or_changed() {
    let server = TestServer::start(CONFIG).await;
    let body = override_for("42", "blocked", json!({}));
    for token in [None, Some("wrong"), Some("")] {
        for (method, path) in [
            ("GET", "/admin/v1/stats"),
            ("PUT", "/admin/v1/overrides"),
            ("POST", "/admin/v1/reset"),
        ] {
            let (status, problem, headers) = server.call(method, path, Some(&body), token).await;
            assert_eq!(status, 401, "{method} {path} with {token:?}");
            assert_eq!(problem["status"], 401);
            assert_eq!(headers["www-authenticate"], "Bearer realm=\"sluice-admin\"");
        }
    }
    let (status, list) = server.admin("GET", "/admin/v1/overrides", None).await;
    assert_eq!(status, 200);
    assert_eq!(list["overrides"], json!([]));
    assert_eq!(overall(&server, "42").await, "OK");
    server.stop().await;
}

#[tokio::test]
async fn without_a_configured_token_the_admin_api_is_disabled() {
    let server = TestServer::start_adjusted(CONFIG, |o| o.admin_token = None).await;
    let (status, problem, _) = server
        .call("GET", "/admin/v1/stats", None, Some(ADMIN_TOKEN))
        .await;
    assert_eq!(status, 404);
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("--admin-token")
    );
    let (status, _) = server.get_raw("/dashboard").await;
    assert_eq!(status, 200, "the page itself is served; it holds no data");
    server.stop().await;
}

#[tokio::test]
async fn overrides_limit_unblock_and_block_one_descriptor() {
    let server = TestServer::start(CONFIG).await;
    // A tighter limit for user 42.
    // Per minute: a state of its own (states are per key, algorithm and period).
    let tight = override_for(
        "42",
        "limit",
        json!({"rate_limit": {"unit": "minute", "requests_per_unit": 1}, "reason": "abuse"}),
    );
    let (status, stored) = server
        .admin("PUT", "/admin/v1/overrides", Some(&tight))
        .await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["reason"], "abuse");
    assert_eq!(overall(&server, "42").await, "OK");
    let (_, refused) = server.post("/v1/check", &user("42")).await;
    assert_eq!(refused["overall_code"], "OVER_LIMIT");
    assert_eq!(refused["statuses"][0]["limit"]["name"], "override");
    assert_eq!(
        overall(&server, "43").await,
        "OK",
        "other users keep the configured limit"
    );
    // No limit at all.
    server
        .admin(
            "PUT",
            "/admin/v1/overrides",
            Some(&override_for("42", "unlimited", json!({}))),
        )
        .await;
    for _ in 0..10 {
        assert_eq!(overall(&server, "42").await, "OK");
    }
    // Blocked.
    server
        .admin(
            "PUT",
            "/admin/v1/overrides",
            Some(&override_for("42", "blocked", json!({}))),
        )
        .await;
    assert_eq!(overall(&server, "42").await, "OVER_LIMIT");
    let (_, list) = server.admin("GET", "/admin/v1/overrides", None).await;
    assert_eq!(list["overrides"].as_array().expect("a list").len(), 1);
    assert_eq!(list["overrides"][0]["action"], "blocked");
    // Deleted: the configured 3/hour applies again, untouched by the overrides.
    let (status, _) = server
        .admin("DELETE", "/admin/v1/overrides", Some(&descriptor("42")))
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .admin("DELETE", "/admin/v1/overrides", Some(&descriptor("42")))
        .await;
    assert_eq!(status, 404);
    assert_eq!(overall(&server, "42").await, "OK");
    server.stop().await;
}

#[tokio::test]
async fn bad_overrides_are_problems_naming_the_field() {
    let server = TestServer::start(CONFIG).await;
    for (body, field) in [
        (override_for("42", "limit", json!({})), "rate_limit"),
        (
            override_for(
                "42",
                "limit",
                json!({"rate_limit": {"unit": "fortnight", "requests_per_unit": 1}}),
            ),
            "rate_limit.unit",
        ),
        (override_for("42", "sometimes", json!({})), "action"),
        (
            json!({"domain": "api", "entries": [], "action": "blocked"}),
            "entries",
        ),
    ] {
        let (status, problem) = server
            .admin("PUT", "/admin/v1/overrides", Some(&body))
            .await;
        assert_eq!(status, 400, "{body}");
        let detail = problem["detail"].as_str().expect("detail");
        assert!(detail.contains(field), "{body}: {detail}");
    }
    server.stop().await;
}

#[tokio::test]
async fn reset_gives_a_key_its_whole_limit_back_and_lookup_explains() {
    let server = TestServer::start(CONFIG).await;
    for _ in 0..3 {
        server.post("/v1/check", &user("7")).await;
    }
    assert_eq!(overall(&server, "7").await, "OVER_LIMIT");
    let (status, lookup) = server
        .admin("POST", "/admin/v1/lookup", Some(&descriptor("7")))
        .await;
    assert_eq!(status, 200);
    assert_eq!(lookup["key"], "api|user=7");
    assert_eq!(lookup["rule"]["id"], "api.user");
    assert_eq!(lookup["state"]["remaining"], 0);
    assert!(
        lookup["explanation"]
            .as_str()
            .expect("text")
            .contains("allows 3 per hour"),
        "{lookup}"
    );

    let (status, reset) = server
        .admin("POST", "/admin/v1/reset", Some(&descriptor("7")))
        .await;
    assert_eq!((status, reset["rule"].clone()), (200, json!("api.user")));
    let (_, after) = server.post("/v1/check", &user("7")).await;
    assert_eq!(after["statuses"][0]["limit_remaining"], 2);

    let unknown = json!({"domain": "api", "entries": [{"key": "nobody", "value": "x"}]});
    let (status, _) = server
        .admin("POST", "/admin/v1/reset", Some(&unknown))
        .await;
    assert_eq!(status, 404);
    let (_, lookup) = server
        .admin("POST", "/admin/v1/lookup", Some(&unknown))
        .await;
    assert_eq!(lookup["rule"], Value::Null);
    assert!(
        lookup["explanation"]
            .as_str()
            .expect("text")
            .contains("no rule matches")
    );
    server.stop().await;
}

#[tokio::test]
async fn stats_report_totals_rules_hot_keys_and_series() {
    let server = TestServer::start(CONFIG).await;
    for _ in 0..5 {
        server.post("/v1/check", &user("hot")).await;
    }
    // Hot keys are sampled above ~2000 requests a second: enough traffic makes one show.
    for i in 0..64 {
        server
            .post("/v1/check", &user(&format!("cold{}", i % 2)))
            .await;
    }
    for _ in 0..64 {
        server.post("/v1/check", &user("hot")).await;
    }
    // The series is sampled once a second.
    server
        .wait_until(|client| async move {
            let (_, stats, _) = client
                .call("GET", "/admin/v1/stats", None, Some(ADMIN_TOKEN))
                .await;
            stats["series"]["domains"]["api"].is_object()
        })
        .await;
    let (status, stats) = server.admin("GET", "/admin/v1/stats", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        stats["totals"]["api"],
        json!({"allowed": 9, "limited": 124, "shadow": 0})
    );
    assert_eq!(stats["config"]["version"], 1);
    assert_eq!(stats["config"]["last_reload"]["ok"], true);
    assert_eq!(stats["store"]["kind"], "memory");
    assert_eq!(stats["rules"][0]["id"], "api.user");
    assert_eq!(stats["rules"][0]["hits"], 133);
    assert_eq!(stats["rules"][0]["over_limit"], 124);
    assert_eq!(
        stats["series"]["domains"]["api"]["allowed"]
            .as_array()
            .map(Vec::len),
        Some(120),
        "{stats}"
    );
    let hot = &stats["hot_keys"]["by_hits"][0];
    assert_eq!(hot["key"], "api|user=hot");
    server.stop().await;
}

/// The sum over the window of one column of a per-limit series (0 when there is none).
fn window_sum(stats: &Value, limit: &str, column: &str) -> u64 {
    stats["series"]["limits"][limit][column]
        .as_array()
        .map_or(0, |values| values.iter().filter_map(Value::as_u64).sum())
}

/// The first `/admin/v1/stats` answer that satisfies `condition`, polled (the admin API's
/// own rate limit answers 429 now and then to a client polling this fast: such answers
/// satisfy nothing and are polled again).
async fn stats_when(server: &TestServer, condition: impl Fn(&Value) -> bool) -> Value {
    let found = std::sync::Arc::new(std::sync::Mutex::new(Value::Null));
    server
        .wait_until(|client| {
            let found = std::sync::Arc::clone(&found);
            let condition = &condition;
            async move {
                let (status, stats, _) = client
                    .call("GET", "/admin/v1/stats", None, Some(ADMIN_TOKEN))
                    .await;
                let ok = status == 200 && condition(&stats);
                if ok {
                    *found.lock().expect("not poisoned") = stats;
                }
                ok
            }
        })
        .await;
    found.lock().expect("not poisoned").take()
}

/// `[allowed, limited, shadow]` units of `limit` over the series' window.
fn limit_sums(stats: &Value, limit: &str) -> [u64; 3] {
    ["allowed", "limited", "shadow"].map(|column| window_sum(stats, limit, column))
}

#[tokio::test]
async fn stats_have_a_live_series_per_limit_that_follows_reloads() {
    let two_limits = "
domain: api
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 3, algorithm: gcra}
  - key: ip
    shadow_mode: true
    rate_limit: {unit: hour, requests_per_unit: 1}
";
    let server = TestServer::start(two_limits).await;
    for _ in 0..5 {
        server.post("/v1/check", &user("7")).await;
    }
    for _ in 0..4 {
        server
            .post(
                "/v1/check",
                &check_body("api", &[&[("ip", "10.0.0.1")]], None),
            )
            .await;
    }
    // Sampled once a second: every unit shows in the window, under its limit.
    let stats = stats_when(&server, |stats| {
        limit_sums(stats, "api.user") == [3, 2, 0] && limit_sums(stats, "api.ip") == [1, 0, 3]
    })
    .await;
    assert_eq!(
        stats["series"]["limits"]["api.user"]["allowed"]
            .as_array()
            .map(Vec::len),
        Some(120),
        "{stats}"
    );
    // It moves with new traffic.
    for _ in 0..3 {
        server.post("/v1/check", &user("8")).await;
    }
    stats_when(&server, |stats| limit_sums(stats, "api.user") == [6, 2, 0]).await;
    // A reload that drops api.ip drops its series; api.user keeps its own.
    server.write_config(CONFIG);
    server.wait_for_version(2).await;
    stats_when(&server, |stats| {
        stats["series"]["limits"]["api.ip"].is_null() && limit_sums(stats, "api.user")[0] == 6
    })
    .await;
    server.stop().await;
}

/// Sends `body` to `/v1/check` `n` times.
async fn checks(server: &TestServer, body: &Value, n: usize) {
    for _ in 0..n {
        let (status, answer) = server.post("/v1/check", body).await;
        assert_eq!(status, 200, "{answer}");
    }
}

/// The hot key `key` in `list` (`by_hits` or `by_refusals`), if listed.
fn hot_key<'s>(stats: &'s Value, list: &str, key: &str) -> Option<&'s Value> {
    stats["hot_keys"][list]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["key"] == key))
}

#[tokio::test]
async fn hot_keys_are_reported_on_redis_too() {
    let redis = sluice_testkit::RedisServer::spawn().expect("redis-server starts");
    let server = TestServer::start_adjusted(CONFIG, |o| o.redis = Some(redis.url())).await;
    // Every request is recorded at this rate, or (on a fast machine, above ~2000 a second)
    // one in a few, each counting for as many.
    checks(&server, &user("hot"), 200).await;
    for i in 0..40 {
        checks(&server, &user(&format!("cold{i}")), 1).await;
    }
    let (status, stats) = server.admin("GET", "/admin/v1/stats", None).await;
    assert_eq!(status, 200);
    assert_eq!(stats["store"]["kind"], "redis", "{stats}");
    let top = &stats["hot_keys"]["by_hits"][0];
    assert_eq!(top["key"], "api|user=hot", "{stats}");
    let hits = top["hits"].as_u64().expect("hits");
    assert!((100..=400).contains(&hits), "about 200: {top}");
    let refused = hot_key(&stats, "by_refusals", "api|user=hot").expect("refused: {stats}");
    assert!(refused["refusals"].as_u64() > Some(0), "{refused}");
    server.stop().await;
}

#[tokio::test]
async fn shadow_mode_refusals_are_not_refusals_in_hot_keys() {
    let config = "
domain: api
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 3, algorithm: gcra}
  - key: ip
    shadow_mode: true
    rate_limit: {unit: hour, requests_per_unit: 1}
";
    let server = TestServer::start(config).await;
    let shady = check_body("api", &[&[("ip", "shady")]], None);
    checks(&server, &shady, 200).await;
    checks(&server, &user("refused"), 200).await;
    let (_, stats) = server.admin("GET", "/admin/v1/stats", None).await;
    let ip = hot_key(&stats, "by_hits", "api|ip=shady").expect("a hot key: {stats}");
    assert_eq!(
        ip["refusals"], 0,
        "a shadow-mode limit refused nothing: {ip}"
    );
    assert!(ip["shadow_refusals"].as_u64() > Some(0), "{ip}");
    assert!(
        hot_key(&stats, "by_refusals", "api|ip=shady").is_none(),
        "{stats}"
    );
    let user = hot_key(&stats, "by_refusals", "api|user=refused").expect("refused: {stats}");
    assert!(user["refusals"].as_u64() > Some(0), "{user}");
    assert_eq!(user["shadow_refusals"], 0, "{user}");
    server.stop().await;
}

#[tokio::test]
async fn a_lookup_explains_an_override_expiry_as_a_time() {
    let server = TestServer::start(CONFIG).await;
    let (status, stored) = server
        .admin(
            "PUT",
            "/admin/v1/overrides",
            Some(&override_for("exp", "blocked", json!({"ttl_s": 3600}))),
        )
        .await;
    assert_eq!(status, 200, "{stored}");
    let (_, lookup) = server
        .admin("POST", "/admin/v1/lookup", Some(&descriptor("exp")))
        .await;
    let text = lookup["explanation"].as_str().expect("text");
    assert!(!text.contains("unix"), "{text}");
    // `until 2026-11-26T12:00:00Z, in 59m 59s` (or `in 1h` when the second just turned).
    let until = text
        .split("until ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no expiry in {text:?}"));
    assert!(
        until.len() == 20 && until.ends_with('Z') && until.as_bytes()[10] == b'T',
        "{text}"
    );
    assert!(
        text.contains(", in 59m") || text.contains(", in 1h"),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn overrides_survive_a_restart_through_their_file() {
    let file = support::temp_dir("overrides").join("overrides.json");
    let file_for = |file: std::path::PathBuf| {
        move |o: &mut sluice_server::ServeOptions| o.overrides_file = Some(file)
    };
    let server = TestServer::start_adjusted(CONFIG, file_for(file.clone())).await;
    let (status, stored) = server
        .admin(
            "PUT",
            "/admin/v1/overrides",
            Some(&override_for("9", "blocked", json!({}))),
        )
        .await;
    assert_eq!(status, 200, "{stored}");
    assert!(file.exists());
    server.stop().await;
    let again = TestServer::start_adjusted(CONFIG, file_for(file.clone())).await;
    assert_eq!(overall(&again, "9").await, "OVER_LIMIT");
    again.stop().await;
    let _ = std::fs::remove_file(file);
}

#[tokio::test]
async fn an_override_set_on_one_instance_applies_on_another_sharing_redis() {
    let redis = sluice_testkit::RedisServer::spawn().expect("redis-server starts");
    let with_redis = |o: &mut sluice_server::ServeOptions| o.redis = Some(redis.url());
    let a = TestServer::start_adjusted(CONFIG, with_redis).await;
    let b = TestServer::start_adjusted(CONFIG, with_redis).await;
    assert_eq!(overall(&b, "shared").await, "OK");
    let (status, _) = a
        .admin(
            "PUT",
            "/admin/v1/overrides",
            Some(&override_for("shared", "blocked", json!({}))),
        )
        .await;
    assert_eq!(status, 200);
    // b polls the override version twice a second.
    let listed = |client: support::Client| async move {
        client
            .call("GET", "/admin/v1/overrides", None, Some(ADMIN_TOKEN))
            .await
            .1["overrides"]
            .as_array()
            .map_or(0, Vec::len)
    };
    b.wait_until(|client| async move { listed(client).await == 1 })
        .await;
    let (_, refused) = b.post("/v1/check", &user("shared")).await;
    assert_eq!(refused["overall_code"], "OVER_LIMIT");
    assert_eq!(refused["statuses"][0]["limit"]["name"], "override");
    a.admin("DELETE", "/admin/v1/overrides", Some(&descriptor("shared")))
        .await;
    b.wait_until(|client| async move { listed(client).await == 0 })
        .await;
    assert_eq!(overall(&b, "shared").await, "OK");
    a.stop().await;
    b.stop().await;
}
