//! The configuration module against files: the examples in `examples/config/`, one by one
//! and as a directory, broken configurations with their exact errors, and properties of
//! `Config::parse` on arbitrary input.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use sluice_core::AlgorithmKind;
use sluice_server::config::{Config, StoreConfig, Unit};
use sluice_store::FailurePolicy;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config")
}

fn example(name: &str) -> Config {
    Config::load(&examples().join(name)).unwrap_or_else(|err| panic!("{err}"))
}

/// Request entries and the id of the rule they should select.
type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);

/// The id of the rule `entries` select in `domain`, if any.
fn id(config: &Config, domain: &str, entries: &[(&str, &str)]) -> Option<String> {
    config
        .find_pairs(domain, entries.iter().copied())
        .map(|rule| rule.id.clone())
}

/// A directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("sluice-config-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create a temporary directory");
        Self(path)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, text).expect("write a temporary file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn edge_proxy_example() {
    let config = example("edge_proxy.yaml");
    assert_eq!(config.domain_names(), ["edge_proxy"]);
    assert_eq!(config.sources, [examples().join("edge_proxy.yaml")]);
    let cases: &[Case<'_>] = &[
        (
            &[("remote_address", "198.51.100.7")],
            Some("edge_proxy.remote_address"),
        ),
        (
            &[("remote_address", "203.0.113.10")],
            Some("edge_proxy.remote_address_203.0.113.10"),
        ),
        (
            &[("remote_address", "10.0.0.5")],
            Some("edge_proxy.remote_address_10.0.0.5"),
        ),
        (
            &[("path", "/login"), ("remote_address", "198.51.100.7")],
            Some("edge_proxy.path_/login*.remote_address"),
        ),
        (
            &[("path", "/login/sso"), ("remote_address", "198.51.100.7")],
            Some("edge_proxy.path_/login*.remote_address"),
        ),
        (
            &[("path", "/logout"), ("remote_address", "198.51.100.7")],
            None,
        ),
        (&[("path", "/login")], None),
    ];
    for (entries, expected) in cases {
        assert_eq!(
            id(&config, "edge_proxy", entries).as_deref(),
            *expected,
            "{entries:?}"
        );
    }
    let partner = config
        .find_pairs("edge_proxy", [("remote_address", "203.0.113.10")])
        .unwrap();
    assert_eq!(partner.requests_per_unit, 1000);
    assert_eq!(partner.policy.unwrap().limit(), 1000);
    let checker = config
        .find_pairs("edge_proxy", [("remote_address", "10.0.0.5")])
        .unwrap();
    assert!(checker.is_unlimited());
    let login = config
        .find_pairs("edge_proxy", [("path", "/login"), ("remote_address", "x")])
        .unwrap();
    assert_eq!((login.unit, login.requests_per_unit), (Unit::Minute, 5));
}

#[test]
fn messaging_example() {
    let config = example("messaging.yaml");
    let marketing = config
        .find_pairs(
            "messaging",
            [("message_type", "marketing"), ("to_number", "2061111111")],
        )
        .unwrap();
    assert_eq!(marketing.id, "messaging.message_type_marketing.to_number");
    assert_eq!(
        (marketing.unit, marketing.requests_per_unit),
        (Unit::Day, 5)
    );
    let any = config
        .find_pairs("messaging", [("to_number", "2061111111")])
        .unwrap();
    assert_eq!(any.name.as_deref(), Some("per_number"));
    assert_eq!(any.requests_per_unit, 100);
    let otp = config
        .find_pairs(
            "messaging",
            [("message_type", "otp"), ("to_number", "2061111111")],
        )
        .unwrap();
    assert_eq!(otp.replaces, ["per_number"]);
    assert_eq!(otp.period(), Duration::from_secs(3600));
    assert_eq!(
        id(&config, "messaging", &[("message_type", "marketing")]),
        None
    );
    assert_eq!(
        id(
            &config,
            "messaging",
            &[("message_type", "transactional"), ("to_number", "1")]
        ),
        None
    );
}

#[test]
fn mongo_cps_example() {
    let config = example("mongo_cps.yaml");
    assert_eq!(
        id(&config, "mongo_cps", &[("database", "users")]).as_deref(),
        Some("mongo_cps.database_users")
    );
    assert_eq!(id(&config, "mongo_cps", &[("database", "orders")]), None);
    let analytics = config
        .find_pairs("mongo_cps", [("database", "analytics")])
        .unwrap();
    assert!(analytics.shadow_mode);
    let reports = config
        .find_pairs("mongo_cps", [("database", "reports")])
        .unwrap();
    assert!(reports.detailed_metric);
    assert_eq!(reports.unit_multiplier, 15);
    assert_eq!(reports.period(), Duration::from_secs(900));
    assert_eq!(reports.policy.unwrap().period_nanos(), 900_000_000_000);
}

#[test]
fn sluice_example() {
    let config = example("sluice.yaml");
    assert_eq!(config.domain_names(), ["api", "llm"]);
    assert_eq!(config.default_algorithm, AlgorithmKind::Gcra);
    assert_eq!(config.store, StoreConfig::Memory);

    let key = config.find_pairs("api", [("api_key", "k1")]).unwrap();
    let policy = key.policy.unwrap();
    assert_eq!(
        (policy.algorithm(), policy.limit(), policy.burst()),
        (AlgorithmKind::Gcra, 100, 300)
    );

    let free = config
        .find_pairs("api", [("plan", "free"), ("api_key", "k1")])
        .unwrap();
    assert_eq!(free.policy.unwrap().algorithm(), AlgorithmKind::FixedWindow);
    assert_eq!(
        id(&config, "api", &[("plan", "paid"), ("api_key", "k1")]),
        None
    );

    let upload = config
        .find_pairs("api", [("upload", "u"), ("user", "42")])
        .unwrap();
    assert_eq!(
        upload.policy.unwrap().algorithm(),
        AlgorithmKind::Concurrency
    );
    assert_eq!(upload.period(), Duration::from_secs(600));
    assert_eq!(upload.on_store_error, FailurePolicy::FailClosed);

    let search = config
        .find_pairs("api", [("path", "/v1/search/users")])
        .unwrap();
    assert_eq!(search.id, "api.path_/v1/search*");
    assert_eq!(search.on_store_error, FailurePolicy::FailOpen);
    assert_eq!(
        search.policy.unwrap().algorithm(),
        AlgorithmKind::SlidingWindow
    );

    let team = config.find_pairs("llm", [("team", "research")]).unwrap();
    assert_eq!(team.name.as_deref(), Some("team_tokens"));
    assert_eq!(team.unit, Unit::Week);
    let large = config
        .find_pairs("llm", [("model", "large-2"), ("team", "research")])
        .unwrap();
    assert_eq!(large.replaces, ["team_tokens"]);
    assert_eq!(
        id(
            &config,
            "llm",
            &[("model", "small-1"), ("team", "research")]
        ),
        None
    );
}

#[test]
fn the_examples_directory_is_one_configuration() {
    let config = Config::load(&examples()).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        config.domain_names(),
        ["api", "edge_proxy", "llm", "messaging", "mongo_cps"]
    );
    let files: Vec<String> = config
        .sources
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files,
        [
            "edge_proxy.yaml",
            "messaging.yaml",
            "mongo_cps.yaml",
            "sluice.yaml"
        ]
    );
    assert_eq!(config.store, StoreConfig::Memory);
    assert!(
        config
            .find_pairs("mongo_cps", [("database", "users")])
            .is_some()
    );
    assert!(config.find_pairs("api", [("api_key", "k")]).is_some());
    assert_eq!(config.rules().len(), 17);
    let json = config.to_json();
    assert_eq!(json["domains"].as_array().unwrap().len(), 5);
    assert_eq!(json["domains"][1]["domain"], "edge_proxy");
}

#[test]
fn a_directory_takes_yaml_files_by_name_and_skips_the_rest() {
    let dir = TempDir::new("skips");
    dir.write("b.yml", "domain: b\n");
    dir.write("a.yaml", "domain: a\n");
    dir.write(".hidden.yaml", "not: [valid\n");
    dir.write("notes.txt", "not yaml at all: [\n");
    fs::create_dir(dir.0.join("sub.yaml")).unwrap();
    let config = Config::load(&dir.0).unwrap();
    assert_eq!(config.domain_names(), ["a", "b"]);
    assert_eq!(config.sources, [dir.0.join("a.yaml"), dir.0.join("b.yml")]);
}

#[test]
fn a_directory_sets_store_and_default_algorithm_once() {
    let dir = TempDir::new("settings");
    dir.write(
        "a.yaml",
        "default_algorithm: fixed_window\ndomains:\n  - domain: a\n",
    );
    let b = dir.write("b.yaml", "domains: []\nstore:\n  type: memory\n");
    let err = Config::load(&dir.0).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:2: store: store and default_algorithm are already set in {} (at most one file \
             of a directory may set them)",
            b.display(),
            dir.0.join("a.yaml").display()
        )
    );
}

#[test]
fn the_default_algorithm_of_one_file_applies_to_the_others() {
    let dir = TempDir::new("default");
    dir.write(
        "a.yaml",
        "domain: a\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 5}\n",
    );
    dir.write("settings.yaml", "default_algorithm: sliding_log\n");
    let config = Config::load(&dir.0).unwrap();
    let rule = config.find_pairs("a", [("k", "v")]).unwrap();
    assert_eq!(rule.policy.unwrap().algorithm(), AlgorithmKind::SlidingLog);
}

#[test]
fn a_domain_defined_in_two_files_names_both() {
    let dir = TempDir::new("duplicate");
    let a = dir.write("a.yaml", "# first\ndomain: shared\n");
    let b = dir.write(
        "b.yaml",
        "domains:\n  - domain: other\n  - domain: shared\n",
    );
    let err = Config::load(&dir.0).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:3: domains[1].domain: duplicate domain \"shared\" (already defined in {}:2)",
            b.display(),
            a.display()
        )
    );
}

#[test]
fn load_errors_name_the_file() {
    let dir = TempDir::new("errors");
    let bad = dir.write(
        "bad.yaml",
        "domain: api\ndescriptors:\n  - key: a\n    rate_limit: {}\n",
    );
    assert_eq!(
        Config::load(&bad).unwrap_err().to_string(),
        format!(
            "{}:4: descriptors[0].rate_limit.unit: missing (expected second, minute, hour, day, \
             week, month or year)",
            bad.display()
        )
    );
    let missing = dir.0.join("missing.yaml");
    let err = Config::load(&missing).unwrap_err();
    assert_eq!(err.file, missing.display().to_string());
    assert_eq!(err.line, None);
    assert!(err.message.starts_with("cannot read: "), "{err}");

    let empty = TempDir::new("empty");
    empty.write("readme.md", "# no yaml here\n");
    assert_eq!(
        Config::load(&empty.0).unwrap_err().to_string(),
        format!(
            "{}: no *.yaml or *.yml files in this directory",
            empty.0.display()
        )
    );

    let binary = dir.write("binary.yaml", "");
    fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
    let err = Config::load(&binary).unwrap_err();
    assert!(err.message.starts_with("not valid UTF-8"), "{err}");
}

/// `(config text, expected error)`, parsed as `api.yaml`.
const BROKEN: &[(&str, &str)] = &[
    // YAML itself.
    (
        "domain: api\ndescriptors:\n  - key: a\n   value: b\n",
        "api.yaml:4: invalid YAML: while parsing a block collection, did not find expected '-' \
         indicator (column 4)",
    ),
    (
        "domain: api\ndescriptors: [\n",
        "api.yaml:2: invalid YAML: unclosed bracket '[' (column 14)",
    ),
    (
        "domain: api\ndescriptors:\n\t- key: a\n",
        "api.yaml:3: invalid YAML: tabs disallowed within this context (block indentation) \
         (column 2)",
    ),
    (
        "domain: a\n---\ndomain: b\n",
        "api.yaml:3: invalid YAML: only single YAML document expected but multiple found \
         (column 1)",
    ),
    (
        "domain: api\ndescriptors:\n  - key: a\n    key: b\n",
        "api.yaml:4: descriptors[0].key: duplicate key (also at line 3)",
    ),
    // The file's shape.
    (
        "",
        "api.yaml: empty file: expected an envoy ratelimit domain file (domain: ...) or a sluice \
         config file (domains: ...)",
    ),
    (
        "- domain: a\n",
        "api.yaml:1: expected a mapping with domain: (an envoy ratelimit domain file) or \
         domains: (a sluice config file), got a list",
    ),
    (
        "descriptors: []\n",
        "api.yaml:1: domain: missing: every domain needs a name (domain: ...)",
    ),
    ("domain: ''\n", "api.yaml:1: domain: must not be empty"),
    (
        "domain: api\nstore: {type: memory}\n",
        "api.yaml:1: unknown key \"domain\": a sluice config file lists its domains under \
         domains:, each with its own domain and descriptors",
    ),
    (
        "domain: api\nshadow_mode: true\n",
        "api.yaml:2: unknown key \"shadow_mode\": it belongs to a descriptor, inside descriptors:",
    ),
    (
        "domain: api\nversion: 2\n",
        "api.yaml:2: unknown key \"version\" (expected domain or descriptors)",
    ),
    (
        "domain: api\ndescriptors: {key: a}\n",
        "api.yaml:2: descriptors: expected a list, got a mapping",
    ),
    // Descriptors.
    (
        "domain: api\ndescriptors:\n  - user\n",
        "api.yaml:3: descriptors[0]: expected a mapping, got \"user\"",
    ),
    (
        "domain: api\ndescriptors:\n  - value: a\n",
        "api.yaml:3: descriptors[0].key: missing: every descriptor needs a key",
    ),
    (
        "domain: api\ndescriptors:\n  - key: ''\n",
        "api.yaml:3: descriptors[0].key: must not be empty",
    ),
    (
        "domain: api\ndescriptors:\n  - key: a\n    rate_limits: {unit: second}\n",
        "api.yaml:4: descriptors[0]: unknown key \"rate_limits\" (expected key, value, \
         rate_limit, shadow_mode, detailed_metric or descriptors)",
    ),
    (
        "domain: api\ndescriptors:\n  - key: a\n    unit: second\n",
        "api.yaml:4: descriptors[0]: unknown key \"unit\": it belongs inside the descriptor's \
         rate_limit",
    ),
    (
        "domain: api\ndescriptors:\n  - key: a\n    rate_limit:\n      unit: second\n      \
         requests_per_unit: 1\n      shadow_mode: true\n",
        "api.yaml:7: descriptors[0].rate_limit: unknown key \"shadow_mode\": it belongs to the \
         descriptor, beside rate_limit",
    ),
    (
        "domain: api\ndescriptors:\n  - key: db\n    value: users\n  - key: db\n    value: users\n",
        "api.yaml:6: descriptors[1].value: duplicate descriptor \"db_users\" at this level (also \
         at line 4)",
    ),
    (
        "domain: api\ndescriptors:\n  - key: db\n  - key: db\n",
        "api.yaml:4: descriptors[1].key: duplicate descriptor \"db\" at this level (also at line \
         3)",
    ),
    (
        "domain: api\ndescriptors:\n  - key: a\n    value: b_c\n  - key: a_b\n    value: c\n",
        "api.yaml:6: descriptors[1].value: duplicate descriptor \"a_b_c\" at this level (also at \
         line 4)",
    ),
    (
        "domain: api\ndescriptors:\n  - key: a\n    shadow_mode: maybe\n",
        "api.yaml:4: descriptors[0].shadow_mode: expected true or false, got \"maybe\"",
    ),
    (
        "domain: api\ndescriptors:\n  - key: a\n    value: [1, 2]\n",
        "api.yaml:4: descriptors[0].value: expected a string, got a list",
    ),
    // rate_limit.
    (
        "domain: api\ndescriptors:\n  - key: user\n    rate_limit:\n      unit: seconds\n      \
         requests_per_unit: 10\n",
        "api.yaml:5: descriptors[0].rate_limit.unit: unknown unit \"seconds\" (expected second, \
         minute, hour, day, week, month or year)",
    ),
    (
        "domain: api\ndescriptors:\n  - key: a\n    rate_limit:\n      requests_per_unit: 10\n",
        "api.yaml:5: descriptors[0].rate_limit.unit: missing (expected second, minute, hour, \
         day, week, month or year)",
    ),
    (
        "domain: api\ndescriptors:\n  - key: a\n    rate_limit: {unit: second}\n",
        "api.yaml:4: descriptors[0].rate_limit.requests_per_unit: missing: how many requests \
         each unit allows",
    ),
    (
        "domain: api\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, requests_per_unit: \
         0, burst: 3}\n",
        "api.yaml:4: descriptors[0].rate_limit.burst: must not be set when requests_per_unit is 0 \
         (the rule refuses every request)",
    ),
    (
        "domain: api\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, requests_per_unit: \
         -5}\n",
        "api.yaml:4: descriptors[0].rate_limit.requests_per_unit: must not be negative, got -5",
    ),
    (
        "domain: api\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, requests_per_unit: \
         lots}\n",
        "api.yaml:4: descriptors[0].rate_limit.requests_per_unit: expected a whole number, got \
         \"lots\"",
    ),
    (
        "domain: api\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, requests_per_unit: \
         1.5}\n",
        "api.yaml:4: descriptors[0].rate_limit.requests_per_unit: expected a whole number, got \
         1.5",
    ),
    (
        "domain: api\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, requests_per_unit: \
         99999999999999999999}\n",
        "api.yaml:4: descriptors[0].rate_limit.requests_per_unit: 99999999999999999999 is too \
         large (at most 18446744073709551615)",
    ),
    (
        "domain: api\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, requests_per_unit: \
         2000000000}\n",
        "api.yaml:4: descriptors[0].rate_limit.requests_per_unit: rate 2000000000 per 1s is \
         faster than one unit per nanosecond",
    ),
    (
        "domain: api\ndescriptors:\n  - key: a\n    rate_limit: {unit: minute, requests_per_unit: \
         1, unit_multiplier: 0}\n",
        "api.yaml:4: descriptors[0].rate_limit.unit_multiplier: must be at least 1, got 0",
    ),
    (
        "domain: api\ndescriptors:\n  - key: a\n    rate_limit: {unit: year, requests_per_unit: \
         1, unit_multiplier: 200}\n",
        "api.yaml:4: descriptors[0].rate_limit.unit_multiplier: a period of 200 × 1 year is \
         longer than the maximum of about 146 years",
    ),
    (
        "domain: api\ndescriptors:\n  - key: a\n    rate_limit:\n      unlimited: true\n      \
         unit: second\n",
        "api.yaml:6: descriptors[0].rate_limit.unit: must not be set when unlimited is true",
    ),
    (
        "domain: api\ndescriptors:\n  - key: a\n    rate_limit:\n      unlimited: true\n      \
         burst: 5\n",
        "api.yaml:6: descriptors[0].rate_limit.burst: must not be set when unlimited is true",
    ),
    (
        "domain: api\ndescriptors:\n  - key: a\n    rate_limit:\n      name: mine\n      unit: \
         second\n      requests_per_unit: 1\n      replaces: [{name: mine}]\n",
        "api.yaml:8: descriptors[0].rate_limit.replaces[0].name: a rule cannot replace itself \
         (\"mine\")",
    ),
    (
        "domain: api\ndescriptors:\n  - key: a\n    rate_limit:\n      unit: second\n      \
         requests_per_unit: 1\n      replaces:\n        - {}\n",
        "api.yaml:8: descriptors[0].rate_limit.replaces[0].name: missing: name the rule this \
         one replaces",
    ),
    // sluice's extensions.
    (
        "domain: api\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, requests_per_unit: \
         1, algorithm: leaky}\n",
        "api.yaml:4: descriptors[0].rate_limit.algorithm: unknown algorithm \"leaky\"; expected \
         gcra, fixed_window, sliding_window, sliding_log or concurrency",
    ),
    (
        "domain: api\ndescriptors:\n  - key: a\n    rate_limit:\n      unit: second\n      \
         requests_per_unit: 10\n      algorithm: fixed_window\n      burst: 20\n",
        "api.yaml:8: descriptors[0].rate_limit.burst: burst applies to gcra only; fixed_window \
         admits exactly its limit, so burst must be 10 (got 20)",
    ),
    (
        "domain: api\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, requests_per_unit: \
         1, burst: 0}\n",
        "api.yaml:4: descriptors[0].rate_limit.burst: burst must be at least 1, got 0",
    ),
    (
        "domain: api\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, requests_per_unit: \
         1, on_store_error: retry}\n",
        "api.yaml:4: descriptors[0].rate_limit.on_store_error: unknown failure policy \"retry\" \
         (expected fail_open, fail_closed or local)",
    ),
    // sluice config files.
    (
        "default_algorithm: token_bucket_v2\n",
        "api.yaml:1: default_algorithm: unknown algorithm \"token_bucket_v2\"; expected gcra, \
         fixed_window, sliding_window, sliding_log or concurrency",
    ),
    (
        "store: {type: etcd}\n",
        "api.yaml:1: store.type: unknown store type \"etcd\" (expected memory, redis or \
         redis_cluster)",
    ),
    (
        "store:\n  url: redis://localhost/\n",
        "api.yaml:2: store.type: missing (expected memory, redis or redis_cluster)",
    ),
    (
        "store:\n  type: redis\n",
        "api.yaml:2: store.url: missing (e.g. url: redis://127.0.0.1:6379/)",
    ),
    (
        "store:\n  type: memory\n  timeout: 10ms\n",
        "api.yaml:3: store.timeout: applies to the redis and redis_cluster stores only",
    ),
    (
        "store:\n  type: redis\n  url: redis://localhost/\n  timeout: fast\n",
        "api.yaml:4: store.timeout: expected a number at \"fast\" (expected e.g. 50ms, 1.5s, \
         1h30m; units ns, us, ms, s, m, h, d)",
    ),
    (
        "store:\n  type: redis\n  url: http://admin:hunter2@localhost/\n",
        "api.yaml:3: store.url: expected a redis://, rediss:// or unix:// URL, got \
         \"http://admin:***@localhost/\"",
    ),
    (
        "store:\n  type: redis_cluster\n  urls: []\n",
        "api.yaml:3: store.urls: must list at least one seed node",
    ),
    (
        "store:\n  type: redis_cluster\n  url: redis://a/\n",
        "api.yaml:3: store.url: type redis_cluster takes a list of seed nodes under urls",
    ),
    (
        "store:\n  type: redis\n  url: redis://localhost/\n  pool: 4\n",
        "api.yaml:4: store: unknown key \"pool\" (expected type, url, urls or timeout)",
    ),
    (
        "store: {type: redis, url: 'redis://localhost/'}\ndomains:\n  - domain: api\n    \
         descriptors:\n      - key: a\n        rate_limit: {unit: month, unit_multiplier: 2, \
         requests_per_unit: 1}\n",
        "api.yaml:6: domains[0].descriptors[0].rate_limit.unit_multiplier: a period of 2 × 1 \
         month is longer than the Redis store can hold (under 2^52 ns, about 52 days)",
    ),
    (
        "domains:\n  - domain: api\n  - domain: web\n  - domain: api\n",
        "api.yaml:4: domains[2].domain: duplicate domain \"api\" (also defined at line 2)",
    ),
    (
        "domains:\n  - descriptors: []\n",
        "api.yaml:2: domains[0].domain: missing: every domain needs a name (domain: ...)",
    ),
    (
        "domains:\n  - domain: api\n    store: {type: memory}\n",
        "api.yaml:3: domains[0]: unknown key \"store\" (expected domain or descriptors)",
    ),
];

#[test]
fn broken_configurations_get_exact_errors() {
    for (text, expected) in BROKEN {
        match Config::parse(text, "api.yaml") {
            Ok(config) => panic!("{text:?} loaded: {:?}", config.domain_names()),
            Err(err) => assert_eq!(err.to_string(), *expected, "for {text:?}"),
        }
    }
}

#[test]
fn descriptors_nested_deeper_than_a_key_can_be_are_refused() {
    let mut text = String::from("domain: d\ndescriptors:\n");
    for depth in 0..17 {
        let indent = "  ".repeat(depth * 2 + 1);
        text.push_str(&format!(
            "{indent}- key: k{depth}\n{indent}  descriptors:\n"
        ));
    }
    let err = Config::parse(&text, "deep.yaml").unwrap_err();
    assert_eq!(err.line, Some(35));
    assert_eq!(
        err.field,
        "descriptors[0]".to_owned() + &".descriptors[0]".repeat(16)
    );
    assert_eq!(
        err.message,
        "descriptors nest 17 levels deep, but a request descriptor has at most 16 entries, so it \
         could never match"
    );
}

#[test]
fn the_deepest_useful_configuration_loads() {
    // A sluice config file, descriptors 16 levels deep (the most entries a key has), with
    // replaces at the bottom: the deepest YAML a useful configuration needs.
    let mut text = String::from("domains:\n  - domain: d\n    descriptors:\n");
    let mut entries = Vec::new();
    for depth in 0..16 {
        let indent = " ".repeat(6 + depth * 4);
        text.push_str(&format!("{indent}- key: k{depth}\n"));
        if depth < 15 {
            text.push_str(&format!("{indent}  descriptors:\n"));
        } else {
            text.push_str(&format!(
                "{indent}  rate_limit:\n{indent}    unit: second\n{indent}    \
                 requests_per_unit: 1\n{indent}    replaces:\n{indent}      - name: other\n"
            ));
        }
        entries.push((format!("k{depth}"), "v".to_owned()));
    }
    let config = Config::parse(&text, "deepest.yaml").unwrap_or_else(|err| panic!("{err}"));
    let rule = config
        .find_pairs("d", entries.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .unwrap();
    assert_eq!(rule.replaces, ["other"]);
}

/// Words of the format, so that generated documents reach past the first check.
const WORDS: &[&str] = &[
    "domain",
    "domains",
    "descriptors",
    "key",
    "value",
    "rate_limit",
    "unit",
    "requests_per_unit",
    "unit_multiplier",
    "unlimited",
    "name",
    "replaces",
    "shadow_mode",
    "detailed_metric",
    "algorithm",
    "burst",
    "on_store_error",
    "default_algorithm",
    "store",
    "type",
    "url",
    "urls",
    "timeout",
    "second",
    "MINUTE",
    "year",
    "gcra",
    "fixed_window",
    "concurrency",
    "local",
    "memory",
    "redis",
    "redis_cluster",
    "redis://h/",
    "50ms",
    "*",
    "a*",
    "",
];

/// A YAML-ish value.
#[derive(Clone, Debug)]
enum Yaml {
    Null,
    Bool(bool),
    Int(i64),
    Word(String),
    Seq(Vec<Self>),
    Map(Vec<(String, Self)>),
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(WORDS).prop_map(str::to_owned),
        1 => "[a-z_*/.0-9-]{0,8}",
    ]
}

fn yaml() -> impl Strategy<Value = Yaml> {
    let leaf = prop_oneof![
        Just(Yaml::Null),
        any::<bool>().prop_map(Yaml::Bool),
        prop_oneof![0..20i64, any::<i64>()].prop_map(Yaml::Int),
        word().prop_map(Yaml::Word),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Yaml::Seq),
            prop::collection::vec((word(), inner), 0..6).prop_map(Yaml::Map),
        ]
    })
}

/// Block style, the way config files are written.
fn render_block(value: &Yaml, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Yaml::Seq(items) if !items.is_empty() => {
            for item in items {
                out.push_str(&format!("{pad}-"));
                render_nested(item, indent + 2, out);
            }
        }
        Yaml::Map(entries) if !entries.is_empty() => {
            for (key, item) in entries {
                out.push_str(&format!("{pad}{}:", scalar(key)));
                render_nested(item, indent + 2, out);
            }
        }
        other => out.push_str(&format!("{pad}{}\n", render_flow(other))),
    }
}

fn render_nested(value: &Yaml, indent: usize, out: &mut String) {
    match value {
        Yaml::Seq(items) if !items.is_empty() => {
            out.push('\n');
            render_block(value, indent, out);
        }
        Yaml::Map(entries) if !entries.is_empty() => {
            out.push('\n');
            render_block(value, indent, out);
        }
        other => out.push_str(&format!(" {}\n", render_flow(other))),
    }
}

/// Flow style, one line.
fn render_flow(value: &Yaml) -> String {
    match value {
        Yaml::Null => "~".to_owned(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Int(n) => n.to_string(),
        Yaml::Word(w) => scalar(w),
        Yaml::Seq(items) => format!(
            "[{}]",
            items.iter().map(render_flow).collect::<Vec<_>>().join(", ")
        ),
        Yaml::Map(entries) => format!(
            "{{{}}}",
            entries
                .iter()
                .map(|(k, v)| format!("{}: {}", scalar(k), render_flow(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn scalar(word: &str) -> String {
    format!("'{}'", word.replace('\'', "''"))
}

/// Checks what every outcome of `Config::parse` must satisfy.
fn check(text: &str) {
    match Config::parse(text, "gen.yaml") {
        Ok(config) => {
            let _ = config.to_json();
            for name in config.domain_names() {
                for entries in [
                    &[("key", "value")][..],
                    &[("a", "a"), ("b", "")],
                    &[("", "")],
                ] {
                    let _ = config.find_pairs(name, entries.iter().copied());
                }
            }
        }
        Err(err) => {
            assert_eq!(err.file, "gen.yaml");
            let lines = text.lines().count().max(1);
            if let Some(line) = err.line {
                assert!(
                    line >= 1 && line <= lines + 1,
                    "line {line} of {lines}: {err}"
                );
            }
            assert!(!err.message.is_empty());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_never_panics_on_arbitrary_text(text in any::<String>()) {
        check(&text);
    }

    #[test]
    fn parse_never_panics_on_yaml_punctuation(
        text in "[a-z_:\\- \\n\\t\\[\\]{}*&!|>#'\",.0-9?%@`]{0,300}"
    ) {
        check(&text);
    }

    #[test]
    fn parse_never_panics_on_yaml_structures(value in yaml(), block in any::<bool>()) {
        let text = if block {
            let mut out = String::new();
            render_block(&value, 0, &mut out);
            out
        } else {
            render_flow(&value)
        };
        check(&text);
    }

    #[test]
    fn parse_never_panics_on_envoy_shaped_files(descriptors in prop::collection::vec(yaml(), 0..4)) {
        let value = Yaml::Map(vec![
            ("domain".to_owned(), Yaml::Word("d".to_owned())),
            ("descriptors".to_owned(), Yaml::Seq(descriptors)),
        ]);
        let mut text = String::new();
        render_block(&value, 0, &mut text);
        check(&text);
    }
}

/// On the test thread's 2 MiB stack, in a debug build.
#[test]
fn parse_survives_deep_nesting_and_alias_bombs() {
    check(&"[".repeat(100_000));
    check(&"{a: ".repeat(100_000));
    for depth in [39, 40, 41, 100, 10_000] {
        check(&"- ".repeat(depth));
        let mut map = String::new();
        for level in 0..depth.min(200) {
            map.push_str(&format!("{}k:\n", "  ".repeat(level)));
        }
        check(&map);
        let mut mixed = String::new();
        for level in 0..depth.min(200) {
            mixed.push_str(&format!("{}- k:\n", "    ".repeat(level)));
        }
        check(&mixed);
    }
    let err = Config::parse(&"- ".repeat(41), "deep.yaml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "deep.yaml:1: invalid YAML: nested deeper than 40 levels (column 81)"
    );
    let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 0..12 {
        let prev = if i == 0 {
            "a".to_owned()
        } else {
            format!("b{}", i - 1)
        };
        text.push_str(&format!("b{i}: &b{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
    }
    check(&text);
}
