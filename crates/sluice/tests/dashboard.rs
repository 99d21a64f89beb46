//! The dashboard in a real browser: `sluice serve` with an admin token, and
//! `crates/sluice-server/tests/browser/dashboard.mjs` driving Debian's chromium through
//! playwright-core against it (the token form, live numbers under load, overrides set in the
//! form and obeyed by `/v1/check`, a `<script>` key shown as text, a screenshot).
//!
//! Needs chromium (`SLUICE_CHROMIUM`, else `chromium` on `PATH`), node, and playwright-core
//! installed in that directory (`npm ci`). `scripts/test` installs what is missing and sets
//! `SLUICE_REQUIRE_BROWSER=1`, which turns anything missing into a failure instead of a skip.
//! The screenshot goes to `target/test-artifacts/dashboard.png`; with
//! `SLUICE_UPDATE_SCREENSHOT=1` it is also copied to `docs/dashboard.png`.

#![allow(
    clippy::disallowed_types,
    reason = "waiting on the browser process is wall-clock time by nature"
)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use support::{ServeProcess, temp_dir};

/// How long the browser script may run: its own waits are bounded by 30 s in all, plus
/// launching chromium and the page's one-second refreshes.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);

/// The admin token of the server under test.
const TOKEN: &str = "dashboard-test-token";

/// Where the browser test lives.
const BROWSER_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../sluice-server/tests/browser"
);

/// The page itself, to check what it is made of.
const PAGE: &str = include_str!("../../sluice-server/src/dashboard/index.html");

/// Domain `api`: every user gets 5 a minute. Domain `login`: 3 a minute per client, in
/// shadow mode (counted, never refused), so the charts show all three series.
const API_CONFIG: &str = "domain: api
descriptors:
  - key: user
    rate_limit:
      name: per-user
      unit: minute
      requests_per_unit: 5
";
const LOGIN_CONFIG: &str = "domain: login
descriptors:
  - key: ip
    shadow_mode: true
    rate_limit:
      name: per-client-trial
      unit: minute
      requests_per_unit: 3
";

#[test]
fn the_page_is_self_contained_and_never_parses_strings_as_markup() {
    for needle in [
        ".innerHTML",
        ".outerHTML",
        ".insertAdjacentHTML",
        "document.write",
        ".createContextualFragment",
        "DOMParser",
        "eval(",
        "new Function(",
    ] {
        assert!(
            !PAGE.contains(needle),
            "index.html uses {needle}: render server and user strings with textContent"
        );
    }
    // Works offline: nothing is loaded from another origin (the SVG namespace is a name).
    for line in PAGE.lines() {
        let external =
            line.contains("http://") || line.contains("https://") || line.contains("//cdn");
        assert!(
            !external || line.contains("http://www.w3.org/2000/svg"),
            "index.html refers to another origin: {}",
            line.trim()
        );
    }
    assert!(
        !PAGE.contains("localStorage"),
        "the token must stay in sessionStorage"
    );
}

#[test]
fn the_dashboard_works_in_a_real_browser() {
    let Some(browser) = Browser::find() else {
        return;
    };
    let dir = temp_dir("dashboard");
    let config = dir.join("config");
    std::fs::create_dir_all(&config).expect("the config dir");
    std::fs::write(config.join("api.yaml"), API_CONFIG).expect("api.yaml is written");
    std::fs::write(config.join("login.yaml"), LOGIN_CONFIG).expect("login.yaml is written");
    let config = config.to_string_lossy().into_owned();

    let server = ServeProcess::start(&dir, &["--config", &config, "--admin-token", TOKEN]);
    // A second server without a token, for the "admin API disabled" page, unless this
    // environment gives every server one.
    let disabled = if std::env::var_os("SLUICE_ADMIN_TOKEN").is_some() {
        eprintln!("SLUICE_ADMIN_TOKEN is set: the disabled admin API is not checked");
        None
    } else {
        Some(ServeProcess::start(&dir, &["--config", &config]))
    };

    let artifacts = artifacts_dir();
    let screenshot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let output = dir.join("browser.log");
    let started = Instant::now();
    let base = format!("http://{}", server.http);
    let screenshot_arg = screenshot.to_string_lossy().into_owned();
    let mut args = vec![
        "--base",
        &base,
        "--token",
        TOKEN,
        "--screenshot",
        &screenshot_arg,
    ];
    let disabled_base = disabled.as_ref().map(|d| format!("http://{}", d.http));
    if let Some(disabled_base) = &disabled_base {
        args.extend(["--disabled-base", disabled_base]);
    }
    let status = browser.run(&args, &output);
    let out = std::fs::read_to_string(&output).unwrap_or_default();
    eprintln!("{out}");
    let took = started.elapsed();
    assert!(
        status.is_some_and(|s| s.success()),
        "the browser test {} after {took:.1?}:\n{out}\n--- sluice serve log ---\n{}",
        status.map_or_else(
            || format!("did not finish within {SCRIPT_TIMEOUT:?}"),
            |s| format!("failed ({s})")
        ),
        server.log_text()
    );

    let png = std::fs::read(&screenshot)
        .unwrap_or_else(|err| panic!("no screenshot at {}: {err}\n{out}", screenshot.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} is not a screenshot ({} bytes)",
        screenshot.display(),
        png.len()
    );
    eprintln!(
        "screenshot: {} ({} KiB), browser test {took:.1?}",
        screenshot.display(),
        png.len() / 1024
    );
    if std::env::var("SLUICE_UPDATE_SCREENSHOT").is_ok_and(|v| v == "1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
        std::fs::create_dir_all(&docs).expect("docs/");
        std::fs::copy(&screenshot, docs.join("dashboard.png")).expect("docs/dashboard.png");
        eprintln!("copied to docs/dashboard.png");
    }

    drop(disabled);
    server.terminate();
    // Kept when the test fails, for the logs.
    let _ = std::fs::remove_dir_all(&dir);
}

/// `target/test-artifacts`, next to cargo's `target/tmp` for integration tests.
fn artifacts_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.parent().unwrap_or(tmp).join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("target/test-artifacts");
    dir
}

/// What the browser test needs: chromium, node, and playwright-core in [`BROWSER_DIR`].
#[derive(Debug)]
struct Browser {
    chromium: PathBuf,
    node: PathBuf,
}

impl Browser {
    /// Everything found, or `None` (after saying what is missing) when not required.
    fn find() -> Option<Self> {
        let required = std::env::var("SLUICE_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
        let chromium = match std::env::var_os("SLUICE_CHROMIUM").filter(|v| !v.is_empty()) {
            Some(path) => {
                let path = PathBuf::from(path);
                assert!(
                    path.is_file(),
                    "SLUICE_CHROMIUM={} is not a file",
                    path.display()
                );
                Some(path)
            }
            None => on_path("chromium"),
        };
        let node = on_path("node");
        let playwright = Path::new(BROWSER_DIR)
            .join("node_modules/playwright-core/package.json")
            .is_file();
        let mut missing = Vec::new();
        if chromium.is_none() {
            missing.push("no chromium (set SLUICE_CHROMIUM or put `chromium` on PATH)");
        }
        if node.is_none() {
            missing.push("no node on PATH");
        }
        if !playwright {
            missing.push(
                "playwright-core is not installed (npm ci in crates/sluice-server/tests/browser)",
            );
        }
        match (chromium, node) {
            (Some(chromium), Some(node)) if missing.is_empty() => Some(Self { chromium, node }),
            _ if required => panic!(
                "SLUICE_REQUIRE_BROWSER=1 but {} (scripts/test installs them)",
                missing.join(", ")
            ),
            _ => {
                eprintln!(
                    "skipped: {} (scripts/test installs them and requires them)",
                    missing.join(", ")
                );
                None
            }
        }
    }

    /// Runs `node dashboard.mjs args` with its output in `log`; `None` when it ran past
    /// [`SCRIPT_TIMEOUT`] (then it is killed by its PID).
    fn run(&self, args: &[&str], log: &Path) -> Option<ExitStatus> {
        let log_file = std::fs::File::create(log).expect("the browser log");
        let mut child = Command::new(&self.node)
            .arg("dashboard.mjs")
            .args(args)
            .current_dir(BROWSER_DIR)
            .env("SLUICE_CHROMIUM", &self.chromium)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("the browser log"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|err| panic!("{} does not start: {err}", self.node.display()));
        let status = wait_for(&mut child, SCRIPT_TIMEOUT);
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        status
    }
}

fn wait_for(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}
