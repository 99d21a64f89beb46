//! `sluice proxy` as a child process in front of sluice-testkit's fake upstream (served in
//! this test's runtime on loopback), driven by a tiny HTTP client and by the real OpenAI
//! Python SDK.
//!
//! The SDK test needs a Python with the `openai` package: `scripts/test` installs one into
//! a venv under target/ and sets `SLUICE_OPENAI_PYTHON` to it (and `SLUICE_REQUIRE_OPENAI=1`,
//! which makes a missing one a failure). Without it the test says so and passes.

#![allow(
    clippy::disallowed_types,
    reason = "waiting on child processes is wall-clock time by nature"
)]

mod support;

use std::process::Command;

use serde_json::Value;
use sluice_testkit::upstream::{FakeUpstreamConfig, chat_body};
use support::proxy::{
    ProxyProcess, assert_streamed_through, blocking, fake, free_addr, sdk_upstream,
};
use support::{http_request, temp_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_proxy_forwards_logs_in_json_and_stops_on_sigterm() {
    let (upstream, server) = fake(FakeUpstreamConfig::default()).await;
    let url = server.url();
    let dir = temp_dir("proxy-cli");
    let (log, first, health, metrics) = blocking(move || {
        let proxy = ProxyProcess::start(
            &dir,
            &url,
            &[
                "--rpm",
                "600",
                "--log-format",
                "json",
                "--alert-levels",
                "50,90",
            ],
        );
        let body = chat_body("Hello through the proxy", Some(5)).to_string();
        let first = http_request(proxy.addr, "POST", "/v1/chat/completions", &body)
            .expect("the proxy answers");
        let health = http_request(proxy.addr, "GET", "/healthz", "").expect("healthz");
        let metrics = http_request(proxy.addr, "GET", "/metrics", "").expect("metrics");
        (proxy.terminate(), first, health, metrics)
    })
    .await;

    assert_eq!(first.0, 200, "{}", first.1);
    let completion: Value = serde_json::from_str(&first.1).expect("JSON");
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(upstream.stats().ok, 1);
    assert_eq!(health.0, 200);
    let health: Value = serde_json::from_str(&health.1).expect("JSON");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["circuit"], "closed");
    assert_eq!(metrics.0, 200);
    assert!(
        metrics.1.contains("sluice_proxy_requests_total 1\n"),
        "{}",
        metrics.1
    );
    assert!(
        metrics
            .1
            .contains("sluice_egress_pace_ceiling_per_minute{dimension=\"requests\"} 600"),
        "{}",
        metrics.1
    );

    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let message = lines[0]["fields"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("sluice proxy listening on http://127.0.0.1:")
            && message.contains(&format!("forwarding to {}", server.url())),
        "the first log line says where it listens and forwards: {message}"
    );
    assert!(
        log.contains("shutting down") && log.contains("sluice proxy stopped"),
        "{log}"
    );
}

#[test]
fn bad_flags_are_usage_errors_that_name_the_flag_and_value() {
    for (args, expected) in [
        (
            &["--upstream", "ftp://example.com"][..],
            "invalid value 'ftp://example.com' for '--upstream <URL>'",
        ),
        (
            &["--upstream", "http://user:hunter2@example.com"][..],
            "must not hold credentials",
        ),
        (
            &["--upstream", "http://h", "--rpm", "0"][..],
            "invalid value '0' for '--rpm <N>'",
        ),
        (
            &["--upstream", "http://h", "--pause-threshold", "120"][..],
            "invalid value '120' for '--pause-threshold <P>'",
        ),
        (
            &["--upstream", "http://h", "--alert-levels", "60,95,80"][..],
            "invalid value '60,95,80' for '--alert-levels <P,P,...>': levels must be ascending",
        ),
        (
            &["--upstream", "http://h", "--max-request-body", "8MB"][..],
            "invalid value '8MB' for '--max-request-body <SIZE>'",
        ),
        (
            &["--upstream", "http://h", "--listen", "localhost"][..],
            "invalid value 'localhost' for '--listen <ADDR>'",
        ),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("proxy")
            .args(args)
            .output()
            .expect("sluice runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }

    // Environment variables set the same values, checked the same way.
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("proxy")
        .env("SLUICE_PROXY_UPSTREAM", "http://h")
        .env("SLUICE_PROXY_TPM", "zero")
        .output()
        .expect("sluice runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid value 'zero' for '--tpm <N>'"),
        "{stderr}"
    );
}

/// The Python that has the `openai` package, if there is one.
fn openai_python() -> Option<String> {
    let python = std::env::var("SLUICE_OPENAI_PYTHON")
        .ok()
        .filter(|p| !p.is_empty());
    if python.is_none() {
        assert!(
            std::env::var("SLUICE_REQUIRE_OPENAI").as_deref() != Ok("1"),
            "SLUICE_REQUIRE_OPENAI=1 but SLUICE_OPENAI_PYTHON is not set: point it at a Python \
             with the openai package (scripts/test installs one into target/openai-venv)"
        );
        eprintln!(
            "SKIPPED: the OpenAI SDK test needs SLUICE_OPENAI_PYTHON, a Python with the openai \
             package (scripts/test installs one into target/openai-venv and sets it)"
        );
    }
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_completes_a_burst_above_the_quota_without_a_429() {
    const RPM: u64 = 3_000;
    let Some(python) = openai_python() else {
        return;
    };
    // 50 requests left and 50 more a second: the SDK's burst of 150 is three times that.
    let (upstream, server) = sdk_upstream(RPM, 50).await;
    let url = server.url();
    let dir = temp_dir("proxy-openai");
    let (output, log) = blocking(move || {
        let proxy = ProxyProcess::start(&dir, &url, &["--rpm", &RPM.to_string()]);
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/openai_burst.py");
        let output = Command::new(&python)
            .arg(script)
            .args(["--base-url", &format!("http://{}/v1", proxy.addr)])
            .args(["--requests", "150", "--concurrency", "50"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
        (output, proxy.terminate())
    })
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the SDK script failed ({}):\n{stderr}\n{stdout}\nproxy log:\n{log}",
        output.status
    );
    let summary: Value = serde_json::from_str(stdout.trim()).expect("the script's JSON");
    println!("openai SDK through sluice proxy: {summary}");
    let fake = upstream.stats();
    println!("the fake upstream: {fake:?}");
    assert_eq!(summary["requests"], 150);
    assert_eq!(summary["rate_limited"], 0, "{summary}");
    assert_eq!(summary["ok"], 150, "{summary}");
    assert!(
        !log.contains("sk-test-not-a-real-key"),
        "the API key reached the log"
    );

    let stream = &summary["stream"];
    // Role and 6 content chunks' worth, the finish, the usage chunk.
    assert!(stream["chunks"].as_u64().unwrap_or(0) >= 7, "{stream}");
    assert_streamed_through(stream, &upstream);
}

/// The requests-per-minute ceiling a proxy paces under, from its metrics.
fn rpm_ceiling(metrics: &str) -> Option<String> {
    metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix("sluice_egress_pace_ceiling_per_minute{dimension=\"requests\"} ")
        })
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_sets_the_proxy_and_flags_and_variables_override_it() {
    let (upstream, server) = fake(FakeUpstreamConfig::default()).await;
    let dir = temp_dir("proxy-config");
    let listen = free_addr();
    let config = dir.join("egress.yaml");
    std::fs::write(
        &config,
        format!(
            "# the proxy of this test\n\
             upstream: {}\n\
             listen: {listen}\n\
             rpm: 600\n\
             alert_levels: [50, 90]\n\
             log_format: json\n",
            server.url()
        ),
    )
    .expect("the config file");
    let config = config.to_string_lossy().into_owned();

    let (first, ceilings, log) = blocking(move || {
        // Everything from the file: upstream, address, quota, log format.
        let proxy = ProxyProcess::start_configured(&dir, listen, &["--config", &config], &[]);
        let body = chat_body("Hello through a configured proxy", Some(5)).to_string();
        let first = http_request(proxy.addr, "POST", "/v1/chat/completions", &body)
            .expect("the proxy answers");
        let from_file = rpm_ceiling(&proxy.metrics());
        let log = proxy.terminate();

        // A flag beats the file, and so does an environment variable; a flag beats both.
        let mut ceilings = vec![from_file];
        for (args, env) in [
            (&["--rpm", "1200"][..], &[][..]),
            (&[][..], &[("SLUICE_PROXY_RPM", "900")][..]),
            (&["--rpm", "1200"][..], &[("SLUICE_PROXY_RPM", "900")][..]),
        ] {
            let addr = free_addr();
            let listen = addr.to_string();
            let mut all = vec!["--config", config.as_str(), "--listen", listen.as_str()];
            all.extend_from_slice(args);
            let proxy = ProxyProcess::start_configured(&dir, addr, &all, env);
            ceilings.push(rpm_ceiling(&proxy.metrics()));
            proxy.terminate();
        }
        (first, ceilings, log)
    })
    .await;

    assert_eq!(first.0, 200, "{}", first.1);
    assert_eq!(upstream.stats().ok, 1);
    let ceilings: Vec<Option<&str>> = ceilings.iter().map(Option::as_deref).collect();
    assert_eq!(
        ceilings,
        [Some("600"), Some("1200"), Some("900"), Some("1200")],
        "file, flag over file, variable over file, flag over variable"
    );
    // The file's log format: every line is a JSON object.
    for line in log.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    assert!(log.contains("settings from"), "{log}");
}

#[test]
fn a_bad_config_file_is_a_usage_error_naming_the_file_line_field_and_value() {
    let dir = temp_dir("proxy-bad-config");
    let file = dir.join("egress.yaml");
    let shown = file.display().to_string();
    for (text, flags, expected) in [
        (
            "upstream: http://h\nrpm: 0\n",
            &[][..],
            format!("{shown}:2: invalid value '0' for 'rpm': must be at least 1"),
        ),
        (
            "upstream: http://h\n\npause_threshold: 120\n",
            &[][..],
            format!("{shown}:3: invalid value '120' for 'pause_threshold'"),
        ),
        (
            "upstream: http://h\nattempt_timeout: soon\n",
            &[][..],
            format!("{shown}:2: invalid value 'soon' for 'attempt_timeout'"),
        ),
        (
            // Even a value a flag overrides.
            "upstream: http://h\nrpm: lots\n",
            &["--rpm", "5"][..],
            format!("{shown}:2: invalid value 'lots' for 'rpm'"),
        ),
        (
            "upstream: ftp://h\n",
            &[][..],
            format!("{shown}:1: invalid value 'ftp://h' for 'upstream'"),
        ),
        (
            "upstream: http://user:hunter2@h\n",
            &[][..],
            "must not hold credentials".to_owned(),
        ),
        (
            "upstream: http://h\nrequests_per_minute: 500\n",
            &[][..],
            format!("{shown}:2: unknown setting 'requests_per_minute'"),
        ),
        (
            "upstream: http://h\nmax-attempts: 2\n",
            &[][..],
            "unknown setting 'max-attempts' (did you mean 'max_attempts'?)".to_owned(),
        ),
        (
            "rpm: 500\n",
            &[][..],
            "no upstream to forward to".to_owned(),
        ),
    ] {
        std::fs::write(&file, text).expect("the config file");
        let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("proxy")
            .arg("--config")
            .arg(&file)
            .args(flags)
            .env_remove("SLUICE_PROXY_UPSTREAM")
            .output()
            .expect("sluice runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{text:?}: {stderr}");
        assert!(stderr.contains(&expected), "{text:?}: {stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }

    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["proxy", "--config"])
        .arg(dir.join("missing.yaml"))
        .output()
        .expect("sluice runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("for '--config <FILE>': cannot read it"),
        "{stderr}"
    );
}
