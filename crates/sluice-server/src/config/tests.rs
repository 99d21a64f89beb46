use std::time::Duration;

use sluice_core::AlgorithmKind;
use sluice_store::FailurePolicy;

use super::*;

/// Exercises every matching rule; comments give the envoy ratelimit behaviour checked.
const MATCHING: &str = r"
domain: t
descriptors:
  - key: remote_address
    rate_limit: {unit: second, requests_per_unit: 10}
  - key: remote_address
    value: 50.0.0.5
    rate_limit: {unit: second, requests_per_unit: 1}

  - key: path
    value: /api/*
    rate_limit: {unit: minute, requests_per_unit: 20}
  - key: path
    value: /api/v2/*
    rate_limit: {unit: minute, requests_per_unit: 30}
  - key: path
    value: /api/exact
    rate_limit: {unit: minute, requests_per_unit: 40}

  - key: message_type
    value: marketing
    descriptors:
      - key: to_number
        rate_limit: {unit: day, requests_per_unit: 5}
  - key: to_number
    rate_limit: {unit: day, requests_per_unit: 100}

  - key: key
    value: value
    rate_limit: {unit: second, requests_per_unit: 300}

  - key: service
    descriptors:
      - key: user
        value: internal
        rate_limit: {unlimited: true}
      - key: user
        rate_limit: {unit: second, requests_per_unit: 7}
        descriptors:
          - key: region
            rate_limit: {unit: hour, requests_per_unit: 9}

  - key: a
    value: '1'
    descriptors:
      - key: b
        rate_limit: {unit: second, requests_per_unit: 1}
  - key: a
    descriptors:
      - key: c
        rate_limit: {unit: second, requests_per_unit: 1}

  - key: whitelisted
";

fn matching() -> Config {
    Config::parse(MATCHING, "matching.yaml").unwrap()
}

/// Request entries and the id of the rule they should select.
type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);

fn find_id(config: &Config, domain: &str, entries: &[(&str, &str)]) -> Option<String> {
    config
        .find_pairs(domain, entries.iter().copied())
        .map(|rule| rule.id.clone())
}

#[test]
fn matches_like_envoy_ratelimit() {
    let config = matching();
    let cases: &[Case<'_>] = &[
        // Key-only descriptor: any value.
        (&[("remote_address", "1.2.3.4")], Some("t.remote_address")),
        (&[("remote_address", "")], Some("t.remote_address")),
        // Exact value before key-only.
        (
            &[("remote_address", "50.0.0.5")],
            Some("t.remote_address_50.0.0.5"),
        ),
        // Wildcards: the first matching prefix in configuration order.
        (&[("path", "/api/users")], Some("t.path_/api/*")),
        (&[("path", "/api/")], Some("t.path_/api/*")),
        (&[("path", "/api/v2/x")], Some("t.path_/api/*")),
        // The pattern itself matches exactly.
        (&[("path", "/api/v2/*")], Some("t.path_/api/v2/*")),
        // Exact before wildcard.
        (&[("path", "/api/exact")], Some("t.path_/api/exact")),
        // No wildcard matches and the key has no key-only descriptor.
        (&[("path", "/ap")], None),
        (&[("path", "/other")], None),
        // Nested.
        (
            &[("message_type", "marketing"), ("to_number", "2061111111")],
            Some("t.message_type_marketing.to_number"),
        ),
        (&[("to_number", "2061111111")], Some("t.to_number")),
        // Shallower than the limit: the placeholder has no rate_limit.
        (&[("message_type", "marketing")], None),
        (&[("message_type", "other"), ("to_number", "1")], None),
        // Deeper than the limit (README example 4).
        (&[("key", "value")], Some("t.key_value")),
        (&[("key", "value"), ("subkey", "subvalue")], None),
        (&[("remote_address", "1.2.3.4"), ("x", "y")], None),
        // Unlimited and nested key-only.
        (
            &[("service", "auth"), ("user", "internal")],
            Some("t.service.user_internal"),
        ),
        (
            &[("service", "auth"), ("user", "bob")],
            Some("t.service.user"),
        ),
        (
            &[("service", "auth"), ("user", "bob"), ("region", "eu")],
            Some("t.service.user.region"),
        ),
        // The unlimited descriptor has no children: deeper gets nothing.
        (
            &[("service", "auth"), ("user", "internal"), ("region", "eu")],
            None,
        ),
        (&[("service", "auth")], None),
        // No backtracking: (a, 1) is chosen at level one, and has no child c.
        (&[("a", "1"), ("b", "x")], Some("t.a_1.b")),
        (&[("a", "2"), ("c", "x")], Some("t.a.c")),
        (&[("a", "1"), ("c", "x")], None),
        // Whitelisted, unknown key, empty descriptor.
        (&[("whitelisted", "x")], None),
        (&[("nope", "x")], None),
        (&[], None),
        // Keys and values are case-sensitive.
        (&[("Remote_Address", "1.2.3.4")], None),
    ];
    for (entries, expected) in cases {
        assert_eq!(
            find_id(&config, "t", entries).as_deref(),
            *expected,
            "entries {entries:?}"
        );
    }
    assert_eq!(find_id(&config, "other", &[("remote_address", "x")]), None);
}

#[test]
fn find_takes_entries() {
    let config = matching();
    let entries = [
        Entry::new("message_type", "marketing"),
        Entry::new("to_number", "1"),
    ];
    let rule = config.find("t", &entries).unwrap();
    assert_eq!(rule.id, "t.message_type_marketing.to_number");
    assert_eq!(rule.unit, Unit::Day);
    assert_eq!(rule.requests_per_unit, 5);
    assert!(config.find("t", &[]).is_none());
}

#[test]
fn unlimited_rules_have_no_policy() {
    let config = matching();
    let rule = config
        .find_pairs("t", [("service", "s"), ("user", "internal")])
        .unwrap();
    assert!(rule.is_unlimited());
    assert!(rule.policy.is_none());
    let limited = config
        .find_pairs("t", [("service", "s"), ("user", "u")])
        .unwrap();
    assert!(!limited.is_unlimited());
}

#[test]
fn wildcard_lookups_see_only_their_level() {
    // A wildcard of one level never matches an entry at another level.
    let config = Config::parse(
        r"
domain: w
descriptors:
  - key: outer
    descriptors:
      - key: path
        value: /x/*
        rate_limit: {unit: second, requests_per_unit: 1}
  - key: path
    value: /y/*
    rate_limit: {unit: second, requests_per_unit: 2}
",
        "w.yaml",
    )
    .unwrap();
    assert_eq!(
        find_id(&config, "w", &[("outer", "o"), ("path", "/x/1")]).as_deref(),
        Some("w.outer.path_/x/*")
    );
    assert_eq!(
        find_id(&config, "w", &[("outer", "o"), ("path", "/y/1")]),
        None
    );
    assert_eq!(find_id(&config, "w", &[("path", "/x/1")]), None);
    assert_eq!(
        find_id(&config, "w", &[("path", "/y/1")]).as_deref(),
        Some("w.path_/y/*")
    );
}

#[test]
fn rules_carry_policies_and_extensions() {
    let config = Config::parse(
        r"
default_algorithm: sliding_window
domains:
  - domain: x
    descriptors:
      - key: a
        rate_limit:
          unit: MINUTE
          requests_per_unit: 100
          unit_multiplier: 5
          name: a_limit
      - key: b
        shadow_mode: true
        detailed_metric: true
        rate_limit:
          unit: Second
          requests_per_unit: 10
          algorithm: gcra
          burst: 25
          on_store_error: fail_closed
          replaces: [{name: a_limit}]
",
        "x.yaml",
    )
    .unwrap();
    assert_eq!(config.default_algorithm, AlgorithmKind::SlidingWindow);
    assert_eq!(config.store, StoreConfig::Memory);

    let a = config.find_pairs("x", [("a", "1")]).unwrap();
    assert_eq!(a.name.as_deref(), Some("a_limit"));
    assert_eq!(a.unit, Unit::Minute);
    assert_eq!(a.unit_multiplier, 5);
    assert_eq!(a.period(), Duration::from_secs(300));
    let policy = a.policy.unwrap();
    assert_eq!(policy.algorithm(), AlgorithmKind::SlidingWindow);
    assert_eq!(policy.limit(), 100);
    assert_eq!(policy.period_nanos(), 300_000_000_000);
    assert_eq!(a.on_store_error, FailurePolicy::Local);
    assert!(!a.shadow_mode);

    let b = config.find_pairs("x", [("b", "1")]).unwrap();
    let policy = b.policy.unwrap();
    assert_eq!(policy.algorithm(), AlgorithmKind::Gcra);
    assert_eq!(policy.burst(), 25);
    assert_eq!(b.on_store_error, FailurePolicy::FailClosed);
    assert!(b.shadow_mode && b.detailed_metric);
    assert_eq!(b.replaces, ["a_limit"]);
}

#[test]
fn units_parse_in_any_case_and_have_envoy_lengths() {
    assert_eq!(Unit::from_name("SECOND"), Some(Unit::Second));
    assert_eq!(Unit::from_name("Week"), Some(Unit::Week));
    assert_eq!(Unit::from_name("seconds"), None);
    assert_eq!(Unit::from_name(""), None);
    assert_eq!(Unit::Month.seconds(), 30 * 86_400);
    assert_eq!(Unit::Year.seconds(), 365 * 86_400);
    for unit in Unit::ALL {
        assert_eq!(Unit::from_name(unit.name()), Some(unit));
        assert_eq!(unit.to_string(), unit.name());
    }
}

#[test]
fn values_keep_their_source_text() {
    let config = Config::parse(
        r"
domain: v
descriptors:
  - key: version
    value: 1.10
    rate_limit: {unit: second, requests_per_unit: 1}
  - key: status
    value: 404
    rate_limit: {unit: second, requests_per_unit: 2}
  - key: flag
    value: yes
    rate_limit: {unit: second, requests_per_unit: 3}
  - key: hex
    value: 0x1F
    rate_limit: {unit: second, requests_per_unit: 4}
  - key: commented
    value: 1.50   # a comment
    rate_limit: {unit: second, requests_per_unit: 5}
  - {key: flow, value: 007, rate_limit: {unit: second, requests_per_unit: 6}}
  - key: crlf
    value: 12
    rate_limit: {unit: second, requests_per_unit: 7}
",
        "v.yaml",
    )
    .unwrap();
    for (key, value) in [
        ("version", "1.10"),
        ("status", "404"),
        ("flag", "yes"),
        ("hex", "0x1F"),
        ("commented", "1.50"),
        ("flow", "007"),
    ] {
        assert!(
            config.find_pairs("v", [(key, value)]).is_some(),
            "{key}={value}"
        );
    }
    assert!(config.find_pairs("v", [("version", "1.1")]).is_none());
}

#[test]
fn anchors_aliases_and_merge_keys_work() {
    let config = Config::parse(
        r"
domain: m
descriptors:
  - key: a
    rate_limit: &per_second {unit: second, requests_per_unit: 5}
  - key: b
    rate_limit: *per_second
  - key: c
    rate_limit:
      <<: *per_second
      requests_per_unit: 9
  - key: d
    rate_limit:
      <<: *per_second
      unit: hour
      unit: day
",
        "m.yaml",
    );
    let err = config.unwrap_err();
    assert_eq!(
        err.to_string(),
        "m.yaml:16: descriptors[3].rate_limit.unit: duplicate key (also at line 15)"
    );
    let config = Config::parse(
        r"
domain: m
descriptors:
  - key: a
    rate_limit: &per_second {unit: second, requests_per_unit: 5}
  - key: b
    rate_limit: *per_second
  - key: c
    rate_limit:
      <<: *per_second
      requests_per_unit: 9
",
        "m.yaml",
    )
    .unwrap();
    let b = config.find_pairs("m", [("b", "x")]).unwrap();
    assert_eq!((b.unit, b.requests_per_unit), (Unit::Second, 5));
    let c = config.find_pairs("m", [("c", "x")]).unwrap();
    assert_eq!((c.unit, c.requests_per_unit), (Unit::Second, 9));
}

#[test]
fn windows_line_endings_are_read() {
    let config = Config::parse(
        &DEMO_YAML.replace('\n', "\r\n").replace("/search/*", "5"),
        "crlf.yaml",
    )
    .unwrap();
    assert_eq!(
        config.find_pairs("demo", [("path", "5")]).unwrap().id,
        "demo.path_5"
    );
    assert!(config.find_pairs("demo", [("user", "u")]).is_some());
}

#[test]
fn the_demo_configuration_loads_and_matches() {
    let demo = Config::demo();
    assert_eq!(demo.domain_names(), ["demo"]);
    assert!(demo.sources.is_empty());
    assert_eq!(demo.default_algorithm, AlgorithmKind::Gcra);
    assert_eq!(demo.store, StoreConfig::Memory);
    let user = demo.find_pairs("demo", [("user", "42")]).unwrap();
    assert_eq!((user.requests_per_unit, user.unit), (10, Unit::Second));
    let key = demo.find_pairs("demo", [("api_key", "k")]).unwrap();
    assert_eq!((key.requests_per_unit, key.unit), (100, Unit::Minute));
    let search = demo.find_pairs("demo", [("path", "/search/q")]).unwrap();
    assert_eq!(search.id, "demo.path_/search/*");
    assert!(!search.shadow_mode);
    let other = demo.find_pairs("demo", [("path", "/")]).unwrap();
    assert!(other.shadow_mode);
    assert_eq!(demo.rules().len(), 4);
}

#[test]
fn json_lists_domains_rules_and_store() {
    let json = Config::demo().to_json();
    assert_eq!(json["default_algorithm"], "gcra");
    assert_eq!(json["store"]["type"], "memory");
    let domain = &json["domains"][0];
    assert_eq!(domain["domain"], "demo");
    let first = &domain["descriptors"][0];
    assert_eq!(first["key"], "user");
    assert!(first.get("value").is_none());
    let rule = &first["rate_limit"];
    assert_eq!(rule["id"], "demo.user");
    assert_eq!(rule["unit"], "second");
    assert_eq!(rule["requests_per_unit"], 10);
    assert_eq!(rule["algorithm"], "gcra");
    assert_eq!(rule["burst"], 10);
    assert_eq!(rule["period_seconds"], 1);
    assert_eq!(rule["shadow_mode"], false);
    assert_eq!(rule["unlimited"], false);
    assert_eq!(rule["on_store_error"], "local");
    assert_eq!(domain["descriptors"][2]["value"], "/search/*");
    assert_eq!(domain["descriptors"][3]["rate_limit"]["shadow_mode"], true);
}

#[test]
fn json_and_debug_hide_redis_passwords() {
    let config = Config::parse(
        r"
store:
  type: redis
  url: redis://user:s3cret@redis.internal:6379/0?password=other
  timeout: 20ms
domains: []
",
        "s.yaml",
    )
    .unwrap();
    assert_eq!(
        config.store,
        StoreConfig::Redis {
            urls: vec!["redis://user:s3cret@redis.internal:6379/0?password=other".into()],
            cluster: false,
            timeout: Duration::from_millis(20),
        }
    );
    let json = config.to_json();
    assert_eq!(json["store"]["type"], "redis");
    assert_eq!(
        json["store"]["url"],
        "redis://user:***@redis.internal:6379/0?password=***"
    );
    assert_eq!(json["store"]["timeout_ms"], 20);
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("s3cret") && !debug.contains("other"),
        "{debug}"
    );
}

#[test]
fn redacts_urls() {
    let cases = [
        ("redis://127.0.0.1:6379/", "redis://127.0.0.1:6379/"),
        ("redis://:pw@host:6379", "redis://:***@host:6379"),
        ("rediss://user:pw@host/0", "rediss://user:***@host/0"),
        ("redis://user@host/", "redis://user@host/"),
        ("redis://u:p@ss@host/", "redis://u:***@host/"),
        (
            "redis://host/?db=1&password=x#f",
            "redis://host/?db=1&password=***#f",
        ),
        ("unix:///tmp/redis.sock", "unix:///tmp/redis.sock"),
        ("no-scheme:pw@host", "no-scheme:***@host"),
    ];
    for (url, expected) in cases {
        assert_eq!(redact_url(url), expected, "{url}");
    }
}

#[test]
fn errors_render_file_line_field_message() {
    let full = ConfigError {
        file: "a.yaml".into(),
        line: Some(3),
        field: "descriptors[0].key".into(),
        message: "missing".into(),
    };
    assert_eq!(full.to_string(), "a.yaml:3: descriptors[0].key: missing");
    let bare = ConfigError {
        file: "a.yaml".into(),
        line: None,
        field: String::new(),
        message: "cannot read".into(),
    };
    assert_eq!(bare.to_string(), "a.yaml: cannot read");
}
