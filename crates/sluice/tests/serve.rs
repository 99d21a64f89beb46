//! `sluice serve` as a user runs it: the binary on real ports, stopped by its PID.

mod support;

use std::process::Command;

use support::{ServeProcess, check_body, temp_dir};

#[test]
fn without_a_config_it_serves_the_demo_and_says_so() {
    let dir = temp_dir("demo");
    let server = ServeProcess::start(&dir, &[]);
    let (status, answer) = server.post("/v1/check", &check_body("demo", &[("user", "42")]));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["overall_code"], "OK");
    assert!(answer["statuses"][0]["limit"].is_object(), "{answer}");
    let log = server.terminate();
    let first_lines: Vec<&str> = log.lines().take(3).collect();
    let head = first_lines.join("\n");
    assert!(head.contains("built-in demo"), "{log}");
    assert!(head.contains("http://127.0.0.1"), "{log}");
    assert!(log.contains("shutting down"), "{log}");
}

#[test]
fn check_config_accepts_the_examples_and_names_the_line_of_an_error() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/config");
    let ok = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--check-config", examples])
        .output()
        .expect("runs");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("valid"));

    let dir = temp_dir("check-config");
    let file = dir.join("broken.yaml");
    std::fs::write(&file, "domain: api\ndescriptors:\n  - key: user\n    rate_limit:\n      unit: fortnight\n      requests_per_unit: 5\n").expect("written");
    let bad = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--check-config"])
        .arg(&file)
        .output()
        .expect("runs");
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("broken.yaml:5"), "{stderr}");
    assert!(
        stderr.contains("descriptors[0].rate_limit.unit"),
        "{stderr}"
    );
    assert!(stderr.contains("fortnight"), "{stderr}");
}

#[test]
fn two_servers_on_one_redis_enforce_one_shared_limit_exactly() {
    let redis = sluice_testkit::RedisServer::spawn().expect("redis-server starts");
    let dir = temp_dir("shared");
    let config = dir.join("shared.yaml");
    std::fs::write(
        &config,
        "domain: shared\ndescriptors:\n  - key: user\n    rate_limit: {unit: hour, requests_per_unit: 20, algorithm: gcra}\n",
    )
    .expect("written");
    let config = config.to_string_lossy().into_owned();
    let args = ["--config", &config, "--redis", &redis.url()];
    let servers = [
        ServeProcess::start(&dir, &args),
        ServeProcess::start(&dir, &args),
    ];
    let body = check_body("shared", &[("user", "u1")]);
    let mut allowed = 0;
    for i in 0..30 {
        let (status, answer) = servers[i % 2].post("/v1/check", &body);
        assert_eq!(status, 200, "{answer}");
        if answer["overall_code"] == "OK" {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 20);
    let (_, metrics) = servers[0].get("/metrics");
    assert!(
        metrics.contains("sluice_degraded_decisions_total{store=\"redis\"} 0"),
        "{metrics}"
    );
    for server in servers {
        server.terminate();
    }
}
