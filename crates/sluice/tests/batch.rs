//! `sluice batch` as a real process against sluice-testkit's fake upstream over real
//! HTTP on loopback, in real time: killed with SIGKILL at random moments and resumed,
//! interrupted with Ctrl-C, fed malformed lines and requests the upstream refuses.
//!
//! Runtime is kept small: 5,000 items at 30,000 requests a minute (the client paces at
//! 98 % of it, ~490 a second) take about 10 s in all, kills and restarts included.

#![allow(
    clippy::disallowed_types,
    reason = "waiting on a child process is wall-clock time by nature"
)]
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failure to set up is a test failure"
)]

mod support;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_core::SystemClock;
use sluice_testkit::upstream::{FakeServer, FakeUpstream, FakeUpstreamConfig, chat_body};

use support::temp_dir;

/// How long any one wait on the child may take.
const PATIENCE: Duration = Duration::from_secs(60);

/// The fake upstream on loopback, with the runtime that serves it.
struct Fake {
    upstream: FakeUpstream,
    server: Option<FakeServer>,
    runtime: tokio::runtime::Runtime,
}

impl Fake {
    fn start(config: FakeUpstreamConfig) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let upstream = FakeUpstream::new(config, Arc::new(SystemClock));
        let server = runtime.block_on(upstream.serve()).unwrap();
        Self {
            upstream,
            server: Some(server),
            runtime,
        }
    }

    /// A fake that allows 30,000 requests a minute, so that a run of a few dozen items
    /// takes no time; the daily limits of these tests are the client's own.
    fn fast() -> Self {
        Self::start(FakeUpstreamConfig {
            rpm: 30_000,
            tpm: 0,
            ..FakeUpstreamConfig::default()
        })
    }

    fn url(&self) -> String {
        self.server.as_ref().unwrap().url()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.runtime.block_on(server.shutdown());
        }
    }
}

/// Input lines of chat completions `item-0` .. `item-{n-1}`.
fn items(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| item(&format!("item-{i}")).to_string())
        .collect()
}

fn item(id: &str) -> Value {
    json!({
        "id": id,
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": {"authorization": "Bearer sk-test-not-logged"},
        "body": chat_body(&format!("One line about {id}."), Some(20)),
        "priority": 0,
    })
}

struct Job {
    dir: PathBuf,
    input: PathBuf,
    output: PathBuf,
}

impl Job {
    fn new(tag: &str, lines: &[String]) -> Self {
        let dir = temp_dir(tag);
        let input = dir.join("requests.jsonl");
        std::fs::write(&input, lines.join("\n") + "\n").unwrap();
        Self {
            output: dir.join("results.jsonl"),
            input,
            dir,
        }
    }

    /// `sluice batch` on this job against `url`, with `extra` flags; stdout and stderr go
    /// to files named after `run`.
    fn spawn(&self, url: &str, run: &str, extra: &[&str]) -> Child {
        let stdout = std::fs::File::create(self.dir.join(format!("{run}.out"))).unwrap();
        let stderr = std::fs::File::create(self.dir.join(format!("{run}.err"))).unwrap();
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("batch")
            .arg("--input")
            .arg(&self.input)
            .arg("--output")
            .arg(&self.output)
            .args(["--upstream", url, "--progress", "log"])
            .args(extra)
            .env("SLUICE_LOG", "warn")
            .stdout(stdout)
            .stderr(stderr)
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    }

    fn run(&self, url: &str, run: &str, extra: &[&str]) -> (ExitStatus, String, String) {
        let mut child = self.spawn(url, run, extra);
        let status = wait(&mut child);
        (
            status,
            self.text(&format!("{run}.out")),
            self.text(&format!("{run}.err")),
        )
    }

    /// `sluice batch ARGS` with `env`, run in this job's directory (so a config file's
    /// relative paths are the job's files) with nothing else set: no `SLUICE_LOG`, so the
    /// default log filter applies. Stdout and stderr go to files named after `run`.
    fn run_bare(
        &self,
        run: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (ExitStatus, String, String) {
        let stdout = std::fs::File::create(self.dir.join(format!("{run}.out"))).unwrap();
        let stderr = std::fs::File::create(self.dir.join(format!("{run}.err"))).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command.arg("batch").args(args).current_dir(&self.dir);
        for (name, _) in std::env::vars() {
            if name.starts_with("SLUICE_") || name == "RUST_LOG" {
                command.env_remove(name);
            }
        }
        let mut child = command
            .envs(env.iter().copied())
            .stdout(stdout)
            .stderr(stderr)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let status = wait(&mut child);
        (
            status,
            self.text(&format!("{run}.out")),
            self.text(&format!("{run}.err")),
        )
    }

    /// [`run_bare`](Self::run_bare) of this job's files against `url` with log lines for
    /// progress and `flags`.
    fn run_logged(&self, url: &str, flags: &[&str]) -> (ExitStatus, String, String) {
        let mut args = vec![
            "--input",
            "requests.jsonl",
            "--output",
            "results.jsonl",
            "--upstream",
            url,
            "--progress",
            "log",
        ];
        args.extend_from_slice(flags);
        self.run_bare("run", &args, &[])
    }

    fn text(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    fn results(&self) -> Vec<Value> {
        read_jsonl(&self.output)
    }

    fn dead_letter(&self) -> Vec<Value> {
        let mut state = self.output.as_os_str().to_owned();
        state.push(".state");
        read_jsonl(&PathBuf::from(state).join("dead-letter.jsonl"))
    }
}

/// Leaves the files of a failed test to read, removes those of a passing one.
impl Drop for Job {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Complete lines in a file.
fn count_lines(path: &Path) -> usize {
    std::fs::read(path).map_or(0, |bytes| bytes.iter().filter(|&&b| b == b'\n').count())
}

/// Waits for the child to exit, polling in short steps, at most [`PATIENCE`].
fn wait(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "sluice batch did not finish");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls until `done()` or the child exits; says whether `done()` came first.
fn poll_until(child: &mut Child, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if done() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(Instant::now() < deadline, "sluice batch made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A small random generator seeded from the OS (printed, to replay a failure).
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
            | 1;
        eprintln!("random seed {seed}");
        Self(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn ids(results: &[Value]) -> Vec<String> {
    results
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn kill_9_at_random_moments_and_resume_sends_each_item_once() {
    const ITEMS: usize = 5_000;
    const RPM: u64 = 30_000;
    let fake = Fake::start(FakeUpstreamConfig {
        rpm: RPM,
        tpm: 0,
        latency: Duration::from_millis(10),
        ..FakeUpstreamConfig::default()
    });
    let job = Job::new("cli-batch-kill", &items(ITEMS));
    let rpm = RPM.to_string();
    let flags = ["--rpm", rpm.as_str()];
    let mut rng = Rng::new();
    let started = Instant::now();
    let mut kills = 0;
    for round in 0..4 {
        let mut child = job.spawn(&fake.url(), &format!("run-{round}"), &flags);
        let reached = if round == 0 {
            // Anywhere from the start-up to the first few hundred results.
            let at = Instant::now() + Duration::from_millis(50 + rng.below(600));
            poll_until(&mut child, || Instant::now() >= at)
        } else {
            let target = count_lines(&job.output) + 300 + usize::try_from(rng.below(900)).unwrap();
            poll_until(&mut child, || count_lines(&job.output) >= target)
        };
        assert!(
            reached,
            "round {round} ended before it was killed: {}",
            job.text(&format!("run-{round}.err"))
        );
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(!status.success());
        kills += 1;
        eprintln!(
            "round {round}: killed with {} results written",
            count_lines(&job.output)
        );
    }
    let (status, out, err) = job.run(&fake.url(), "final", &flags);
    let elapsed = started.elapsed();
    assert!(status.success(), "{status}\n{out}\n{err}");
    assert!(out.contains("batch finished"), "{out}");

    // Every id once in the results, all answered 200.
    let results = job.results();
    let got = ids(&results);
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "an id is in the results twice");
    let want: HashSet<String> = (0..ITEMS).map(|i| format!("item-{i}")).collect();
    assert_eq!(unique.len(), ITEMS);
    assert!(got.iter().all(|id| want.contains(id)));
    assert!(results.iter().all(|r| r["status"] == 200), "all succeeded");

    // The upstream processed each item once: one key per item, none processed twice;
    // the calls a kill cut off were answered from its store when resent.
    let keys = fake.upstream.idempotency_keys();
    assert_eq!(keys.len(), ITEMS);
    let twice: Vec<_> = keys.iter().filter(|(_, u)| u.processed != 1).collect();
    assert!(twice.is_empty(), "processed more than once: {twice:?}");
    let stats = fake.upstream.stats();
    assert_eq!(stats.ok, u64::try_from(ITEMS).unwrap());
    eprintln!(
        "{kills} kills; upstream: {} requests, {} ok, {} replayed from the idempotency store, {} answered 429; {:.1} s in all",
        stats.requests,
        stats.ok,
        stats.replayed,
        stats.rate_limited,
        elapsed.as_secs_f64()
    );
    assert!(
        stats.replayed >= 1,
        "with 10 ms answers some calls are always on the wire at a kill"
    );
    // The answers replayed are the ones first given: completion ids are unique.
    let completions: HashSet<&str> = results
        .iter()
        .map(|r| r["body"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(completions.len(), ITEMS);
    // No header value reached any file.
    for file in std::fs::read_dir(&job.dir).unwrap() {
        let path = file.unwrap().path();
        if path.is_file() {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let leaked = path != job.input && text.contains("sk-test-not-logged");
            assert!(!leaked, "{}", path.display());
        }
    }
}

#[test]
fn throughput_follows_the_quota() {
    const ITEMS: usize = 2_000;
    const RPM: u64 = 12_000;
    let fake = Fake::start(FakeUpstreamConfig {
        rpm: RPM,
        tpm: 0,
        latency: Duration::from_millis(5),
        ..FakeUpstreamConfig::default()
    });
    let job = Job::new("cli-batch-throughput", &items(ITEMS));
    let started = Instant::now();
    // No --rpm: the client learns the limit from the upstream's headers.
    let (status, out, err) = job.run(&fake.url(), "run", &[]);
    let wall = started.elapsed();
    assert!(status.success(), "{status}\n{out}\n{err}");
    assert_eq!(count_lines(&job.output), ITEMS);
    let per_minute = ITEMS as f64 / wall.as_secs_f64() * 60.0;
    let fraction = per_minute / RPM as f64;
    // After the first two seconds (start-up and the pacer's one-second burst): the pace.
    let log = fake.upstream.log();
    let first = log[0].at;
    let later: Vec<_> = log
        .iter()
        .filter(|s| s.at.saturating_since(first) >= Duration::from_secs(2))
        .collect();
    let span = later[later.len() - 1].at.saturating_since(later[0].at);
    let steady = (later.len() - 1) as f64 / span.as_secs_f64() * 60.0;
    eprintln!(
        "throughput: {ITEMS} items in {:.2} s wall (process start-up included) = {per_minute:.0}/min = {:.0} % of {RPM} rpm; after the first 2 s: {steady:.0}/min = {:.1} % of it; 429s: {}\n{out}",
        wall.as_secs_f64(),
        fraction * 100.0,
        steady / RPM as f64 * 100.0,
        fake.upstream.stats().rate_limited,
    );
    // Paced at 98 % of the limit (after a one-second burst, and with up to a second's
    // worth of catch-up after a stall on a busy machine): never past the upstream's quota.
    assert_eq!(fake.upstream.stats().rate_limited, 0);
    let steady_fraction = steady / RPM as f64;
    assert!(steady_fraction > 0.8, "{steady}");
    assert!(steady_fraction < 1.2, "{steady}");
    assert!(fraction > 0.6, "{fraction}");
    assert!(fraction < 1.3, "{fraction}");
}

#[test]
fn malformed_lines_go_to_the_dead_letter_with_their_line_numbers() {
    let fake = Fake::start(FakeUpstreamConfig::default());
    let mut lines = items(3);
    lines.insert(1, "this is not json".to_owned()); // line 2
    lines.push(json!({"path": "/v1/chat/completions"}).to_string()); // line 5
    lines.push(item("item-0").to_string()); // line 6: a repeated id
    let job = Job::new("cli-batch-malformed", &lines);
    let (status, out, err) = job.run(&fake.url(), "run", &[]);
    assert_eq!(status.code(), Some(3), "{out}\n{err}");
    assert!(err.contains("3 items are in the dead letter"), "{err}");
    assert_eq!(ids(&job.results()).len(), 3);
    let dead = job.dead_letter();
    let lines: HashMap<u64, String> = dead
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(lines[&2].starts_with("not valid JSON"), "{dead:?}");
    assert!(lines[&5].contains("no id"), "{dead:?}");
    assert_eq!(lines[&6], "duplicate id (first on line 1)");
    assert_eq!(lines.len(), 3);
}

#[test]
fn a_refused_item_goes_to_the_dead_letter_and_retry_failed_sends_it_again() {
    let fake = Fake::start(FakeUpstreamConfig::default());
    let mut lines = items(10);
    // No messages: the fake answers 400, which no retry can fix.
    lines[4] =
        json!({"id": "item-4", "path": "/v1/chat/completions", "body": {"model": "gpt-fake"}})
            .to_string();
    let job = Job::new("cli-batch-refused", &lines);
    let (status, out, err) = job.run(&fake.url(), "first", &[]);
    assert_eq!(status.code(), Some(3), "{out}\n{err}");
    assert!(err.contains("--retry-failed"), "{err}");
    let dead = job.dead_letter();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        (dead[0]["id"].as_str(), dead[0]["line"].as_u64()),
        (Some("item-4"), Some(5))
    );
    assert_eq!(dead[0]["status"], 400);
    assert_eq!(job.results().len(), 9);

    // The request is fixed; --retry-failed sends it, once, and it leaves the dead letter.
    std::fs::write(&job.input, items(10).join("\n") + "\n").unwrap();
    let (status, out, err) = job.run(&fake.url(), "retry", &["--retry-failed"]);
    assert!(status.success(), "{status}\n{out}\n{err}");
    assert!(job.dead_letter().is_empty());
    let results = job.results();
    assert_eq!(results.len(), 10);
    assert_eq!(ids(&results).into_iter().collect::<HashSet<_>>().len(), 10);
    assert_eq!(fake.upstream.stats().ok, 10);
}

#[test]
fn ctrl_c_stops_cleanly_and_says_how_to_resume() {
    let fake = Fake::start(FakeUpstreamConfig {
        rpm: 3_000,
        tpm: 0,
        latency: Duration::from_millis(20),
        ..FakeUpstreamConfig::default()
    });
    let job = Job::new("cli-batch-interrupt", &items(200));
    let mut child = job.spawn(&fake.url(), "first", &[]);
    assert!(poll_until(&mut child, || count_lines(&job.output) >= 50));
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let status = wait(&mut child);
    let err = job.text("first.err");
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        err.contains("run the same command again to continue"),
        "{err}"
    );
    let after_stop = count_lines(&job.output);
    assert!(after_stop < 200);

    let (status, out, err) = job.run(&fake.url(), "second", &[]);
    assert!(status.success(), "{status}\n{out}\n{err}");
    let results = job.results();
    assert_eq!(results.len(), 200);
    assert_eq!(ids(&results).into_iter().collect::<HashSet<_>>().len(), 200);
    assert_eq!(fake.upstream.stats().ok, 200, "nothing processed twice");
}

#[test]
fn bad_flags_name_the_flag_and_value() {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["batch", "--input", "in.jsonl", "--output", "out.jsonl"])
        .args(["--upstream", "http://127.0.0.1:9", "--concurrency", "x"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("'--concurrency <auto|N>'")
            && err.contains("expected auto or a number ≥ 1, got 'x'"),
        "{err}"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["batch", "--input", "in.jsonl", "--output", "out.jsonl"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--upstream"));
}

/// Every line of a log, each parsed as a JSON object (a line that is not fails the test).
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}\n{log}")))
        .collect()
}

/// The levels of the quota alerts about requests per day in a JSON log.
fn daily_alert_levels(lines: &[Value]) -> Vec<u64> {
    lines
        .iter()
        .filter(|line| {
            let fields = &line["fields"];
            fields["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("quota alert"))
                && fields["dimension"] == "requests_per_day"
        })
        .map(|line| line["fields"]["level"].as_u64().unwrap())
        .collect()
}

/// The message of the first line of a JSON log whose message starts with `start`.
fn message<'a>(lines: &'a [Value], start: &str) -> Option<&'a str> {
    lines
        .iter()
        .filter_map(|line| line["fields"]["message"].as_str())
        .find(|m| m.starts_with(start))
}

#[test]
fn json_logs_show_the_first_quota_alert_of_a_daily_limit_by_default() {
    let fake = Fake::fast();
    let job = Job::new("cli-batch-json", &items(14));
    // 14 of 20 requests a day: 70 %, past the first of the default levels (60, 80, 95)
    // and short of the pause threshold (80).
    let (status, out, err) = job.run_logged(
        &fake.url(),
        &["--daily-limit", "20", "--log-format", "json"],
    );
    assert!(status.success(), "{status}\n{out}\n{err}");
    assert!(out.contains("batch finished"), "{out}");
    let lines = json_lines(&err);
    // The warning level is logged at info, and the default filter shows it.
    let alert = lines
        .iter()
        .find(|line| {
            line["fields"]["dimension"] == "requests_per_day"
                && line["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("quota alert"))
        })
        .unwrap_or_else(|| panic!("no quota alert in:\n{err}"));
    assert_eq!(alert["level"], "INFO", "{alert}");
    assert_eq!(alert["fields"]["level"], 60, "{alert}");
    assert_eq!(alert["fields"]["severity"], "warning", "{alert}");
    assert_eq!(daily_alert_levels(&lines), [60]);
    // The startup line and the progress lines are JSON too, with their numbers as fields.
    let start =
        message(&lines, "sluice batch: requests.jsonl to ").unwrap_or_else(|| panic!("{err}"));
    assert!(start.contains("20 requests/day"), "{start}");
    let last = lines
        .iter()
        .rev()
        .find(|line| line["fields"]["total"].is_u64())
        .unwrap_or_else(|| panic!("no progress line in:\n{err}"));
    assert_eq!(last["fields"]["done"], 14, "{last}");
    assert!(
        last["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("batch: 14/14")),
        "{last}"
    );
    assert!(!err.contains("sk-test-not-logged"));
}

#[test]
fn a_pause_at_the_threshold_is_logged_by_default() {
    let fake = Fake::fast();
    let job = Job::new("cli-batch-pause", &items(16));
    // Batch work pauses at 10 of 20 requests a day until midnight UTC, longer than the
    // items may wait: the few not sent by then fail for good.
    let (status, out, err) = job.run_logged(
        &fake.url(),
        &[
            "--daily-limit",
            "20",
            "--pause-threshold",
            "50",
            "--max-wait",
            "1s",
            "--concurrency",
            "1",
        ],
    );
    assert!(
        matches!(status.code(), Some(0 | 3)),
        "{status}\n{out}\n{err}"
    );
    assert!(
        err.contains("quota paused for low-priority work: requests_per_day at"),
        "{err}"
    );
    assert!(job.results().len() < 16, "{out}");
}

#[test]
fn a_config_file_sets_the_batch_and_flags_and_variables_override_it() {
    let fake = Fake::fast();
    let job = Job::new("cli-batch-config", &items(40));
    std::fs::write(
        job.dir.join("batch.yaml"),
        format!(
            "# the batch of this test\n\
             input: requests.jsonl\n\
             upstream: {}\n\
             daily_limit: 100\n\
             alert_levels: [10]\n\
             progress: log\n\
             log_format: json\n",
            fake.url()
        ),
    )
    .unwrap();
    // Each run has results (and so a state directory, with its daily count) of its own;
    // 40 of 100 requests a day cross every level below 40 %.
    let mut levels = Vec::new();
    let mut logs = Vec::new();
    for (run, flags, env) in [
        ("file", &[][..], &[][..]),
        ("flag", &["--alert-levels", "20"][..], &[][..]),
        (
            "variable",
            &[][..],
            &[("SLUICE_BATCH_ALERT_LEVELS", "30")][..],
        ),
        (
            "both",
            &["--alert-levels", "20"][..],
            &[("SLUICE_BATCH_ALERT_LEVELS", "30")][..],
        ),
    ] {
        let output = format!("{run}.jsonl");
        let mut args = vec!["--config", "batch.yaml", "--output", output.as_str()];
        args.extend_from_slice(flags);
        let (status, out, err) = job.run_bare(run, &args, env);
        assert!(status.success(), "{run}: {status}\n{out}\n{err}");
        assert_eq!(count_lines(&job.dir.join(&output)), 40, "{run}");
        let lines = json_lines(&err);
        levels.push(daily_alert_levels(&lines));
        logs.push(
            message(&lines, "settings from")
                .unwrap_or_else(|| panic!("{run}: no settings line in\n{err}"))
                .to_owned(),
        );
    }
    assert_eq!(
        levels,
        [vec![10], vec![20], vec![30], vec![20]],
        "file, flag over file, variable over file, flag over variable"
    );
    assert!(
        logs[0].ends_with(
            "batch.yaml: alert_levels, daily_limit, input, log_format, progress, upstream"
        ),
        "{}",
        logs[0]
    );
    assert!(
        logs[1].ends_with("batch.yaml: daily_limit, input, log_format, progress, upstream"),
        "{}",
        logs[1]
    );
    assert_eq!(fake.upstream.stats().ok, 160);
}

#[test]
fn a_bad_config_file_is_a_usage_error_naming_the_file_line_key_and_value() {
    let job = Job::new("cli-batch-bad-config", &items(1));
    let file = job.dir.join("batch.yaml");
    let shown = "batch.yaml";
    let target = "input: requests.jsonl\noutput: results.jsonl\nupstream: http://127.0.0.1:9\n";
    for (text, flags, env, expected) in [
        (
            format!("{target}rpm: 0\n"),
            &[][..],
            &[][..],
            format!("{shown}:4: invalid value '0' for 'rpm': must be at least 1"),
        ),
        (
            format!("{target}\nalert_levels: [60, 95, 80]\n"),
            &[][..],
            &[][..],
            format!(
                "{shown}:5: invalid value '60,95,80' for 'alert_levels': levels must be ascending"
            ),
        ),
        (
            format!("{target}max_wait: soon\n"),
            &[][..],
            &[][..],
            format!("{shown}:4: invalid value 'soon' for 'max_wait'"),
        ),
        (
            format!("concurrency: lots\n{target}"),
            &[][..],
            &[][..],
            format!(
                "{shown}:1: invalid value 'lots' for 'concurrency': expected auto or a number ≥ 1"
            ),
        ),
        (
            // Even a value a flag overrides.
            format!("{target}daily_tokens: many\n"),
            &["--daily-tokens", "5"][..],
            &[][..],
            format!("{shown}:4: invalid value 'many' for 'daily_tokens'"),
        ),
        (
            format!("{target}max-wait: 1h\n"),
            &[][..],
            &[][..],
            format!("{shown}:4: unknown setting 'max-wait' (did you mean 'max_wait'?)"),
        ),
        (
            format!("{target}requests_per_minute: 500\n"),
            &[][..],
            &[][..],
            format!("{shown}:4: unknown setting 'requests_per_minute'; the settings are input,"),
        ),
        (
            format!("{target}rpm: 5\nrpm: 6\n"),
            &[][..],
            &[][..],
            format!("{shown}:5: 'rpm' is set twice (first on line 4)"),
        ),
        (
            format!("{target}proxy: http://127.0.0.1:8090\n"),
            &[][..],
            &[][..],
            format!(
                "'upstream' in {shown}:3 and 'proxy' in {shown}:4 both say where to send the requests"
            ),
        ),
        (
            "input: requests.jsonl\noutput: results.jsonl\n".to_owned(),
            &[][..],
            &[][..],
            "nowhere to send the requests".to_owned(),
        ),
        (
            // The file named by the variable, and a variable's bad value.
            format!("{target}rpm: 0\n"),
            &["--config", "none.yaml"][..],
            &[("SLUICE_BATCH_CONFIG", "batch.yaml")][..],
            "invalid value 'none.yaml' for '--config <FILE>': cannot read it".to_owned(),
        ),
        (
            target.to_owned(),
            &[][..],
            &[("SLUICE_BATCH_TPM", "zero")][..],
            "invalid value 'zero' for '--tpm <N>'".to_owned(),
        ),
    ] {
        std::fs::write(&file, &text).unwrap();
        let mut args = flags.to_vec();
        if !args.contains(&"--config")
            && !env.iter().any(|(name, _)| *name == "SLUICE_BATCH_CONFIG")
        {
            args.extend_from_slice(&["--config", shown]);
        }
        let (status, out, err) = job.run_bare("bad", &args, env);
        assert_eq!(status.code(), Some(2), "{text:?}: {out}\n{err}");
        assert!(err.contains(&expected), "{text:?}: {err}");
    }
    // The variable names the file when no flag does.
    std::fs::write(&file, format!("{target}rpm: 0\n")).unwrap();
    let (status, _, err) = job.run_bare("variable", &[], &[("SLUICE_BATCH_CONFIG", shown)]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{shown}:4: invalid value '0' for 'rpm'")),
        "{err}"
    );
    assert!(job.results().is_empty());
}
