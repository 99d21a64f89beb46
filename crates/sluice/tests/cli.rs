//! Runs the built `sluice` binary as a user would and checks what it prints.
//!
//! The store inside reads the real clock, so every policy here is slow enough (per minute)
//! or the cost large enough that timing cannot change a decision.

use std::process::{Command, Output};

fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .expect("the sluice binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("stderr is UTF-8")
}

/// Runs `sluice check ... --json` and returns one parsed object per line.
fn check_json(args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["check"];
    all.extend_from_slice(args);
    all.push("--json");
    let output = sluice(&all);
    assert!(output.status.success(), "{}", stderr(&output));
    stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
        .collect()
}

#[test]
fn version_names_the_binary_and_its_version() {
    let output = sluice(&["--version"]);
    assert!(output.status.success());
    assert_eq!(
        stdout(&output).trim(),
        format!("sluice {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn gcra_admits_its_burst_then_refuses_with_a_wait() {
    let lines = check_json(&["--policy", "3/min", "--times", "5"]);
    let allowed: Vec<bool> = lines.iter().map(|l| l["allowed"] == true).collect();
    assert_eq!(allowed, [true, true, true, false, false]);
    let remaining: Vec<u64> = lines
        .iter()
        .map(|l| l["remaining"].as_u64().unwrap())
        .collect();
    assert_eq!(remaining, [2, 1, 0, 0, 0]);
    for line in &lines {
        let keys: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "allowed",
                "limit",
                "remaining",
                "reset_after_ms",
                "retry_after_ms"
            ]
        );
        assert_eq!(line["limit"], 3);
        if line["allowed"] == true {
            assert!(line["retry_after_ms"].is_null(), "{line}");
        } else {
            assert!(line["retry_after_ms"].as_u64().unwrap() > 0, "{line}");
        }
    }
}

#[test]
fn fixed_window_admits_its_limit_per_window() {
    let lines = check_json(&[
        "--policy",
        "3/min",
        "--algorithm",
        "fixed_window",
        "--times",
        "4",
    ]);
    let allowed: Vec<bool> = lines.iter().map(|l| l["allowed"] == true).collect();
    assert_eq!(allowed, [true, true, true, false]);
    assert!(lines[3]["retry_after_ms"].as_u64().unwrap() > 0);
}

#[test]
fn a_cost_above_capacity_is_refused_without_a_retry_time() {
    let lines = check_json(&["--policy", "10/s", "--cost", "11"]);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["allowed"], false);
    assert!(lines[0]["retry_after_ms"].is_null());
    assert_eq!(lines[0]["cost_exceeds_capacity"], true);
}

#[test]
fn a_bad_policy_names_the_flag_and_the_bad_part() {
    let output = sluice(&["check", "--policy", "10/3x"]);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(err.contains("--policy"), "{err}");
    assert!(err.contains("'10/3x'") && err.contains("\"x\""), "{err}");
    assert!(stdout(&output).is_empty());
}

#[test]
fn a_burst_on_a_window_algorithm_is_a_usage_error() {
    let output = sluice(&[
        "check",
        "--policy",
        "10/s",
        "--algorithm",
        "sliding_window",
        "--burst",
        "3",
    ]);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(
        err.contains("--burst") && err.contains("gcra only"),
        "{err}"
    );
}

#[test]
fn zero_times_is_rejected() {
    let output = sluice(&["check", "--policy", "10/s", "--times", "0"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--times"));
}

#[test]
fn the_table_has_a_header_and_one_row_per_decision() {
    let output = sluice(&[
        "check", "--policy", "3/min", "--key", "demo", "--times", "4",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].contains("gcra 3/min") && lines[0].contains("\"demo\""),
        "{text}"
    );
    let header: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "#",
            "allowed",
            "limit",
            "remaining",
            "reset_after",
            "retry_after"
        ]
    );
    let rows = &lines[2..];
    assert_eq!(rows.len(), 4, "{text}");
    assert!(
        rows[0]
            .split_whitespace()
            .eq(["1", "yes", "3", "2", "20s", "-"]),
        "{text}"
    );
    assert!(rows[3].starts_with("4  no"), "{text}");
}

#[test]
fn two_processes_share_one_limit_through_redis() {
    let server = sluice_testkit::RedisServer::spawn().expect("a throwaway redis-server");
    let url = server.url();
    let run = || {
        check_json(&[
            "--policy", "5/min", "--key", "shared", "--times", "3", "--redis", &url,
        ])
        .iter()
        .map(|line| line["allowed"].as_bool().expect("allowed is a bool"))
        .collect::<Vec<_>>()
    };
    assert_eq!(run(), [true, true, true]);
    // The second process sees what the first one used.
    assert_eq!(run(), [true, true, false]);
}

#[test]
fn an_unreachable_redis_is_a_clear_error() {
    let port = sluice_testkit::free_port().expect("a free port");
    let url = format!("redis://127.0.0.1:{port}/");
    let output = sluice(&["check", "--policy", "5/s", "--redis", &url]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains("cannot connect to the Redis given by --redis"),
        "{err}"
    );
}
