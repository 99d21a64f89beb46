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

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_testkit::upstream::{
    FakeServer, FakeUpstream, FakeUpstreamConfig, StreamConfig, chat_body, chat_request,
};
use support::{http_request, temp_dir};

/// How long the proxy may take to start answering.
const STARTUP: Duration = Duration::from_secs(20);

/// A running `sluice proxy`, killed when dropped.
struct ProxyProcess {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl ProxyProcess {
    /// Starts `sluice proxy --upstream URL --listen <free port> ARGS`, logging to a file in
    /// `dir`, and waits until `/_sluice/healthz` answers.
    fn start(dir: &Path, upstream: &str, args: &[&str]) -> Self {
        let port = sluice_testkit::free_port().expect("a port");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = dir.join(format!("proxy-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("a log file");
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("proxy")
            .args(["--upstream", upstream, "--listen", &addr.to_string()])
            .args(args)
            .env("SLUICE_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("sluice starts");
        let mut proxy = Self { child, addr, log };
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = proxy.child.try_wait().expect("wait") {
                panic!("sluice proxy exited with {status}:\n{}", proxy.log_text());
            }
            if http_request(addr, "GET", "/_sluice/healthz", "").is_ok() {
                return proxy;
            }
            assert!(
                Instant::now() < deadline,
                "sluice proxy did not start:\n{}",
                proxy.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for a clean exit; returns the log.
    fn terminate(mut self) -> String {
        support::terminate(&mut self.child, &self.log, "sluice proxy")
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn fake(config: FakeUpstreamConfig) -> (FakeUpstream, FakeServer) {
    let upstream = FakeUpstream::new(config, Arc::new(sluice_egress::TokioClock::new()));
    let server = upstream.serve().await.expect("the fake upstream serves");
    (upstream, server)
}

/// Uses up the fake's requests bucket (in process) until `left` remain.
async fn drain(upstream: &FakeUpstream, rpm: u64, left: u64) {
    for _ in 0..rpm - left {
        let answer = upstream
            .handle(chat_request("drain", Some(1)))
            .await
            .expect("an answer");
        assert_eq!(answer.status(), 200);
    }
    upstream.reset_stats();
}

/// Runs blocking work (child processes, the blocking HTTP client) off the runtime's
/// workers, which serve the fake upstream meanwhile.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work)
        .await
        .expect("the blocking work")
}

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
    let (upstream, server) = fake(FakeUpstreamConfig {
        rpm: RPM,
        tpm: 0,
        // Like many APIs, it says nothing of its quota until it answers 429: the proxy
        // knows it from --rpm.
        quota_headers: false,
        stream: StreamConfig {
            chunks: 6,
            interval: Duration::from_millis(100),
        },
        ..FakeUpstreamConfig::default()
    })
    .await;
    // 50 requests left and 50 more a second: the SDK's burst of 150 is three times that.
    drain(&upstream, RPM, 50).await;
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
    let spread =
        stream["last_s"].as_f64().unwrap_or(0.0) - stream["first_s"].as_f64().unwrap_or(0.0);
    assert!(
        spread >= 0.5,
        "the chunks arrived within {spread:.3} s: buffered? {stream}"
    );
    let expected = upstream.request_tokens(&serde_json::json!({
        "model": "gpt-fake",
        "messages": [{"role": "user", "content": "Stream me a story."}],
        "max_tokens": 50,
    }));
    assert_eq!(stream["usage"], expected, "{stream}");
    assert!(
        stream["content"]
            .as_str()
            .unwrap_or_default()
            .starts_with("tok"),
        "{stream}"
    );
}
