//! The real OpenAI JavaScript SDK against `sluice proxy`: sluice-testkit's fake upstream
//! served over HTTP in this test's runtime, `sluice proxy` in front of it as a child process,
//! and `node tests/js/openai_burst.mjs` pointing `new OpenAI({ baseURL, apiKey })` at the
//! proxy. The Python SDK's twin of this test is in `proxy.rs`.
//!
//! Needs node on `PATH` and the `openai` npm package in `tests/js/node_modules` at the
//! version `package-lock.json` pins: `scripts/test` runs `npm ci` there when it is missing and
//! sets `SLUICE_REQUIRE_OPENAI=1`, which turns anything missing into a failure. Without it the
//! test says what is missing and passes.

#![allow(
    clippy::disallowed_types,
    reason = "waiting on child processes is wall-clock time by nature"
)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::proxy::{ProxyProcess, SDK_STREAM_CHUNKS, assert_streamed_through, sdk_upstream};
use support::temp_dir;

/// Where the SDK script and its `package.json` live.
const JS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js");

/// How long the SDK script may run: the burst takes about 2 s and the stream under 1 s; each
/// request is bounded by the SDK's own 60 s timeout.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// The fake upstream's requests per minute, also given to the proxy with `--rpm`.
const RPM: u64 = 3_000;

/// How many requests the fake has left when the burst starts; it refills `RPM / 60` a second.
const LEFT: u64 = 50;

/// The burst: three times what the fake has left, from 50 concurrent callers.
const REQUESTS: u64 = 150;
const CONCURRENCY: u64 = 50;

/// The API key the script sends; it must never reach the proxy's log.
const API_KEY: &str = "sk-test-not-a-real-key";

/// node, with the `openai` package installed next to the script.
#[derive(Debug)]
struct Node {
    node: PathBuf,
    /// The installed `openai` version.
    installed: String,
}

impl Node {
    /// node and the SDK, or `None` (after saying what is missing) unless
    /// `SLUICE_REQUIRE_OPENAI=1`, which makes anything missing a failure.
    fn find() -> Option<Self> {
        let required = std::env::var("SLUICE_REQUIRE_OPENAI").is_ok_and(|v| v == "1");
        let js = Path::new(JS_DIR);
        let pinned = package_version(&js.join("package-lock.json"), |lock| {
            &lock["packages"]["node_modules/openai"]["version"]
        })
        .expect("tests/js/package-lock.json pins openai");
        let installed = package_version(
            &js.join("node_modules/openai/package.json"),
            |p| &p["version"],
        );
        let node = on_path("node");
        let mut missing = Vec::new();
        if node.is_none() {
            missing.push("no node on PATH (node 20 or newer)".to_owned());
        }
        if installed.is_none() {
            missing.push(format!(
                "the openai npm package ({pinned}, pinned in package-lock.json) is not in \
                 {JS_DIR}/node_modules: run `npm ci --ignore-scripts` there"
            ));
        }
        match (node, installed) {
            (Some(node), Some(installed)) => {
                if installed != pinned {
                    eprintln!(
                        "note: {JS_DIR}/node_modules has openai {installed}, package-lock.json \
                         pins {pinned} (scripts/test runs npm ci)"
                    );
                }
                Some(Self { node, installed })
            }
            _ if required => panic!(
                "SLUICE_REQUIRE_OPENAI=1 but {} (scripts/test installs the SDK)",
                missing.join(", ")
            ),
            _ => {
                eprintln!(
                    "SKIPPED: the OpenAI JS SDK test needs node and the SDK: {} (scripts/test \
                     installs it and sets SLUICE_REQUIRE_OPENAI=1)",
                    missing.join(", ")
                );
                None
            }
        }
    }

    /// Runs `node openai_burst.mjs ARGS` in [`JS_DIR`] with its stdout and stderr in files
    /// in `dir`; kills it by its PID after [`SCRIPT_TIMEOUT`]. Returns the exit status
    /// (`None` on a timeout), stdout and stderr.
    fn run(&self, dir: &Path, args: &[&str]) -> (Option<ExitStatus>, String, String) {
        let stdout = dir.join("openai_burst.stdout");
        let stderr = dir.join("openai_burst.stderr");
        let mut child = Command::new(&self.node)
            .arg("openai_burst.mjs")
            .args(args)
            .current_dir(JS_DIR)
            // OPENAI_LOG would have the SDK log to stdout, around the JSON.
            .env_remove("OPENAI_LOG")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("a stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("a stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", self.node.display()));
        let deadline = Instant::now() + SCRIPT_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for node") {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
        (status, read(&stdout), read(&stderr))
    }
}

/// A version read from a JSON file, if the file is there and has one.
fn package_version(path: &Path, field: impl Fn(&Value) -> &Value) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let json: Value = serde_json::from_str(&text).ok()?;
    field(&json).as_str().map(str::to_owned)
}

fn on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_js_sdk_completes_a_burst_above_the_quota_without_a_429() {
    let Some(node) = Node::find() else {
        return;
    };
    // 50 requests left and 50 more a second: the SDK's burst of 150 is three times that.
    let (upstream, server) = sdk_upstream(RPM, LEFT).await;
    let url = server.url();
    let dir = temp_dir("proxy-openai-js");
    let installed = node.installed.clone();
    // The proxy and node run off the runtime's workers, which serve the fake meanwhile.
    let ((status, stdout, stderr), log) = tokio::task::spawn_blocking(move || {
        let proxy = ProxyProcess::start(&dir, &url, &["--rpm", &RPM.to_string()]);
        let output = node.run(
            &dir,
            &[
                "--base-url",
                &format!("http://{}/v1", proxy.addr),
                "--requests",
                &REQUESTS.to_string(),
                "--concurrency",
                &CONCURRENCY.to_string(),
            ],
        );
        (output, proxy.terminate())
    })
    .await
    .expect("the proxy and the SDK script");

    let status =
        status.unwrap_or_else(|| panic!("the SDK script ran past {SCRIPT_TIMEOUT:?}:\n{stderr}"));
    assert!(
        status.success(),
        "the SDK script failed ({status}):\n{stderr}\n{stdout}\nproxy log:\n{log}"
    );
    let line = stdout.lines().rev().find(|l| !l.trim().is_empty());
    let summary: Value = line
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON summary from the SDK script:\n{stdout}\n{stderr}"));
    println!("openai JS SDK through sluice proxy: {summary}");
    let fake = upstream.stats();
    println!("the fake upstream: {fake:?}");

    // Every call succeeded on its one attempt: no 429 (nor anything else) reached the SDK.
    assert_eq!(summary["requests"], REQUESTS, "{summary}");
    assert_eq!(summary["rate_limited"], 0, "{summary}");
    assert_eq!(summary["ok"], REQUESTS, "{summary}");
    assert_eq!(summary["errors"], serde_json::json!([]), "{summary}");
    // The proxy held the burst instead of passing it on: the fake upstream refused nothing,
    // so it never saw more than its quota, and answered the burst and the stream once each.
    assert_eq!(fake.rate_limited, 0, "{fake:?}");
    assert_eq!(fake.ok, REQUESTS + 1, "{fake:?}");
    assert_eq!(fake.requests, fake.ok, "{fake:?}");
    assert!(!log.contains(API_KEY), "the API key reached the log");

    let stream = &summary["stream"];
    // Every event, one by one: the content chunks (the first with the role), the finish and
    // the usage chunk, the fake sending one each 100 ms (0.7 s in all).
    assert_eq!(stream["chunks"], SDK_STREAM_CHUNKS + 2, "{stream}");
    assert_streamed_through(stream, &upstream);
    assert_eq!(summary["openai_version"], installed.as_str(), "{summary}");
}
