//! The admin API: authentication, overrides (also across instances sharing Redis, across a
//! restart, and until their expiry), resets, lookups and live statistics.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use sluice_core::{ManualClock, Nanos};
use sluice_server::config::Config;
use sluice_server::overrides::{DescriptorRef, OverrideRequest, OverrideStore};
use sluice_server::request::{CheckRequest, EntryRequest};
use sluice_server::{Code, Limiter};
use sluice_store::MemoryStore;
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
    // Hot keys are sampled (one decision in 16): enough traffic makes one show.
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

#[tokio::test]
async fn an_override_expires_at_its_ttl_on_the_wall_clock() {
    let wall = ManualClock::new(Nanos::new(1_790_000_000_000_000_000));
    let limiter = Limiter::new(
        Config::parse(CONFIG, "test.yaml").expect("valid"),
        MemoryStore::new(),
    )
    .with_override_store(OverrideStore::local(None).expect("a store"))
    .with_wall_clock(wall.clone());
    let request: OverrideRequest =
        serde_json::from_value(override_for("t", "blocked", json!({"ttl_s": 60}))).expect("valid");
    let stored = limiter.put_override(request).await.expect("stored");
    assert_eq!(stored.expires_at_unix_ms, Some(1_790_000_000_000 + 60_000));
    let check = || CheckRequest {
        domain: "api".to_owned(),
        descriptors: vec![sluice_server::request::Descriptor {
            entries: vec![EntryRequest {
                key: "user".to_owned(),
                value: "t".to_owned(),
            }],
            hits: None,
        }],
        hits: None,
    };
    assert_eq!(
        limiter.check(check()).await.expect("decided").code,
        Code::OverLimit
    );
    wall.advance(Duration::from_millis(59_999));
    assert_eq!(
        limiter.check(check()).await.expect("decided").code,
        Code::OverLimit
    );
    wall.advance(Duration::from_millis(1));
    assert_eq!(
        limiter.check(check()).await.expect("decided").code,
        Code::Ok
    );
    assert!(limiter.overrides().list(limiter.wall_ms()).is_empty());
    let gone = DescriptorRef {
        domain: "api".to_owned(),
        entries: vec![EntryRequest {
            key: "user".to_owned(),
            value: "t".to_owned(),
        }],
    };
    assert!(limiter.rule_for(&gone).expect("valid").2.is_none());
}
