//! The batch engine against sluice-testkit's fake upstream: in process under paused tokio
//! time (stops, resumes, quota pauses: exact and fast), and over loopback HTTP with the
//! reqwest transport.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use serde_json::{Value, json};
use sluice_testkit::upstream::{FakeUpstream, FakeUpstreamConfig, FakeUpstreamError, chat_body};
use tokio::sync::watch;

use super::*;
use crate::classify::ErrorClass;

const PATH: &str = "/v1/chat/completions";

/// The fake upstream as a [`Transport`], in process.
#[derive(Debug)]
struct InProcess(FakeUpstream);

impl Transport for InProcess {
    fn send(&self, request: Request<Bytes>) -> BoxFuture<'_, Result<Response<Bytes>, SendError>> {
        Box::pin(async move {
            self.0
                .handle(request.map(Full::new))
                .await
                .map_err(|e| SendError {
                    class: match e {
                        FakeUpstreamError::TimedOut => ErrorClass::Timeout,
                        _ => ErrorClass::ConnectionReset,
                    },
                    source: Box::new(e),
                })
        })
    }
}

fn fake(config: FakeUpstreamConfig) -> FakeUpstream {
    FakeUpstream::new(config, Arc::new(TokioClock::new()))
}

/// A chat completion item.
fn item(id: &str) -> Value {
    json!({
        "id": id,
        "method": "POST",
        "path": PATH,
        "headers": {"authorization": "Bearer sk-test-secret"},
        "body": chat_body(&format!("Write a line about {id}."), Some(20)),
    })
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

fn items(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| item(&format!("item-{i}")).to_string())
        .collect()
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn ids(values: &[Value]) -> Vec<String> {
    values
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect()
}

struct Job {
    dir: PathBuf,
    input: PathBuf,
    output: PathBuf,
}

impl Job {
    fn new(tag: &str, lines: &[String]) -> Self {
        let dir = sluice_testkit::temp_dir(tag);
        let input = dir.join("requests.jsonl");
        write_lines(&input, lines);
        Self {
            output: dir.join("results.jsonl"),
            input,
            dir,
        }
    }

    fn config(&self, base_url: &str, transport: Option<Arc<dyn Transport>>) -> BatchConfig {
        let mut config = BatchConfig::new(&self.input, &self.output, base_url);
        config.transport = transport;
        config.progress_every = Duration::from_millis(10);
        config
    }

    fn in_process(&self, upstream: &FakeUpstream) -> BatchConfig {
        self.config(
            "http://fake.test",
            Some(Arc::new(InProcess(upstream.clone()))),
        )
    }

    fn results(&self) -> Vec<Value> {
        read_jsonl(&self.output)
    }

    fn dead_letter(&self) -> Vec<Value> {
        read_jsonl(&BatchConfig::default_state_dir(&self.output).join(DEAD_LETTER_FILE))
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

/// Records the last progress and publishes how many items are done.
struct Watch(watch::Sender<u64>);

impl ProgressSink for Watch {
    fn update(&self, progress: &BatchProgress) {
        self.0.send_replace(progress.done);
    }
}

async fn run_to_end(config: BatchConfig) -> BatchSummary {
    run(config, &NoProgress, std::future::pending())
        .await
        .unwrap()
}

/// Each id in `results` once, and they are exactly `expected`.
fn assert_once_each(results: &[Value], expected: usize) {
    let ids = ids(results);
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "an id is in the results twice");
    let want: HashSet<String> = (0..expected).map(|i| format!("item-{i}")).collect();
    let got: HashSet<String> = ids.into_iter().collect();
    assert_eq!(got, want);
}

/// Every key the fake saw was processed once.
fn assert_processed_once(upstream: &FakeUpstream, expected: usize) {
    let keys = upstream.idempotency_keys();
    assert_eq!(keys.len(), expected, "one idempotency key per item");
    for (key, usage) in &keys {
        assert_eq!(
            usage.processed, 1,
            "{key} processed {} times",
            usage.processed
        );
    }
    assert_eq!(upstream.stats().ok, u64::try_from(expected).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_http_writes_one_result_per_id() {
    let upstream = fake(FakeUpstreamConfig {
        rpm: 60_000,
        latency: Duration::from_millis(2),
        ..FakeUpstreamConfig::default()
    });
    let server = upstream.serve().await.unwrap();
    let job = Job::new("batch-http", &items(40));
    let summary = run_to_end(job.config(&server.url(), None)).await;

    assert!(!summary.interrupted);
    assert_eq!(
        (summary.succeeded, summary.failed, summary.invalid),
        (40, 0, 0)
    );
    assert_eq!(summary.results, 40);
    let results = job.results();
    assert_once_each(&results, 40);
    for result in &results {
        assert_eq!(result["status"], 200);
        assert_eq!(result["body"]["object"], "chat.completion", "{result}");
        assert!(result["attempts"].as_u64().unwrap() >= 1);
        assert!(result["latency_ms"].is_u64());
    }
    assert_processed_once(&upstream, 40);
    let state = BatchConfig::default_state_dir(&job.output);
    assert_eq!(std::fs::read(state.join(JOURNAL_FILE)).unwrap(), b"");
    assert!(state.join(QUOTA_FILE).exists());
    // Header values are never written anywhere.
    for file in [
        &job.output,
        &state.join(DEAD_LETTER_FILE),
        &state.join(MANIFEST_FILE),
    ] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        assert!(!text.contains("sk-test-secret"), "{}", file.display());
    }

    // Again: nothing left to do, nothing sent.
    let again = run_to_end(job.config(&server.url(), None)).await;
    assert_eq!((again.succeeded, again.already_done), (0, 40));
    assert_eq!(upstream.stats().requests, 40);
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn stopping_and_resuming_sends_nothing_twice() {
    let upstream = fake(FakeUpstreamConfig {
        rpm: 6_000,
        latency: Duration::from_millis(200),
        ..FakeUpstreamConfig::default()
    });
    let job = Job::new("batch-resume", &items(60));
    let mut resumed_in_flight = 0;
    for round in 0..3 {
        let (tx, mut rx) = watch::channel(0);
        let mut config = job.in_process(&upstream);
        // Drop what is on the wire at once: as a kill between the upstream's answer and
        // the result line would.
        config.drain_timeout = Duration::ZERO;
        let target = 15 * (round + 1);
        let summary = run(config, &Watch(tx), async move {
            let _ = rx.wait_for(|done| *done >= target).await;
        })
        .await
        .unwrap();
        assert!(summary.interrupted, "round {round}: {summary}");
        assert!(summary.remaining > 0);
        resumed_in_flight += summary.resumed_in_flight;
        assert_once_each_prefix(&job.results());
    }
    let summary = run_to_end(job.in_process(&upstream)).await;
    resumed_in_flight += summary.resumed_in_flight;
    assert!(!summary.interrupted, "{summary}");
    assert_eq!(summary.remaining, 0);
    assert_once_each(&job.results(), 60);
    assert_processed_once(&upstream, 60);
    assert!(
        upstream.stats().replayed >= 1 && resumed_in_flight >= 1,
        "calls on the wire at a stop are sent again and answered from the upstream's store: {:?}, {resumed_in_flight} resumed",
        upstream.stats()
    );
}

/// No id twice among the results so far.
fn assert_once_each_prefix(results: &[Value]) {
    let ids = ids(results);
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len());
}

#[tokio::test(start_paused = true)]
async fn invalid_lines_are_dead_lettered_with_their_line_numbers() {
    let upstream = fake(FakeUpstreamConfig::default());
    let mut long = item("long");
    long["body"]["messages"][0]["content"] = Value::String("x".repeat(2_000));
    let lines = vec![
        item("a").to_string(),                                          // 1
        "{not json".to_owned(),                                         // 2
        json!({"path": PATH}).to_string(),                              // 3
        item("a").to_string(),                                          // 4: duplicate
        String::new(),                                                  // 5: blank, ignored
        json!({"id": "m", "method": "GE T", "path": PATH}).to_string(), // 6
        "[1, 2]".to_owned(),                                            // 7
        json!({"id": 7, "path": PATH}).to_string(),                     // 8
        json!({"id": "h", "path": PATH, "headers": {"x-key": "bad\nvalue"}}).to_string(), // 9
        json!({"id": "p", "path": "v1/no-slash"}).to_string(),          // 10
        long.to_string(),                                               // 11: too long
        item("b").to_string(),                                          // 12
    ];
    let job = Job::new("batch-invalid", &lines);
    let mut config = job.in_process(&upstream);
    config.max_line = 1_000;
    let summary = run_to_end(config).await;
    assert_eq!((summary.succeeded, summary.invalid), (2, 9), "{summary}");
    assert_eq!(ids(&job.results()), ["a", "b"]);

    let dead = job.dead_letter();
    let by_line: HashMap<u64, &Value> = dead
        .iter()
        .map(|e| (e["line"].as_u64().unwrap(), e))
        .collect();
    let reason = |line: u64| by_line[&line]["reason"].as_str().unwrap().to_owned();
    assert!(reason(2).starts_with("not valid JSON"), "{}", reason(2));
    assert!(reason(3).contains("no id"), "{}", reason(3));
    assert_eq!(reason(4), "duplicate id (first on line 1)");
    assert_eq!(by_line[&4]["id"], "a");
    assert!(reason(6).contains("method"), "{}", reason(6));
    assert_eq!(reason(7), "not a JSON object");
    assert!(reason(8).contains("id: expected a string"), "{}", reason(8));
    assert!(reason(9).contains("headers.x-key"), "{}", reason(9));
    assert!(!reason(9).contains("bad"), "header values are never shown");
    assert!(reason(10).contains("must start with /"), "{}", reason(10));
    assert!(
        reason(11).contains("longer than 1000 bytes"),
        "{}",
        reason(11)
    );
    assert!(!by_line.contains_key(&5));
    assert!(dead.iter().all(|e| e["kind"] == "invalid"));

    // A second run finds the same lines and does not repeat them.
    let mut config = job.in_process(&upstream);
    config.max_line = 1_000;
    let again = run_to_end(config).await;
    assert_eq!((again.invalid, again.already_done), (0, 2), "{again}");
    assert_eq!(again.dead_letter_invalid, 9);
    assert_eq!(job.dead_letter().len(), 9);
}

#[tokio::test(start_paused = true)]
async fn permanent_failures_are_dead_lettered_and_retried_on_request() {
    let upstream = fake(FakeUpstreamConfig::default());
    let mut lines = items(5);
    // No messages: the fake answers 400.
    let broken = json!({"id": "item-2", "path": PATH, "body": {"model": "gpt-fake"}});
    lines[2] = broken.to_string();
    let job = Job::new("batch-failed", &lines);
    let summary = run_to_end(job.in_process(&upstream)).await;
    assert_eq!((summary.succeeded, summary.failed), (4, 1), "{summary}");
    let dead = job.dead_letter();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["kind"], "failed");
    assert_eq!(dead[0]["id"], "item-2");
    assert_eq!(dead[0]["line"], 3);
    assert_eq!(dead[0]["status"], 400);
    assert_eq!(dead[0]["attempts"], 1, "a 400 is not retried");
    assert!(dead[0]["reason"].as_str().unwrap().contains("400"));
    assert_eq!(dead[0]["body"]["error"]["type"], "invalid_request_error");

    // Without --retry-failed it stays failed, and nothing is sent.
    let requests = upstream.stats().requests;
    let again = run_to_end(job.in_process(&upstream)).await;
    assert_eq!((again.skipped_failed, again.succeeded), (1, 0));
    assert_eq!(upstream.stats().requests, requests);

    // Fixed and retried: it succeeds, once, and leaves the dead letter.
    write_lines(&job.input, &items(5));
    let mut config = job.in_process(&upstream);
    config.retry_failed = true;
    let retried = run_to_end(config).await;
    assert_eq!(
        (retried.succeeded, retried.dead_letter_failed),
        (1, 0),
        "{retried}"
    );
    assert!(job.dead_letter().is_empty());
    assert_once_each(&job.results(), 5);
    assert_processed_once(&upstream, 5);
}

#[tokio::test(start_paused = true)]
async fn a_torn_last_line_is_cut_off_and_its_item_sent_again() {
    let upstream = fake(FakeUpstreamConfig::default());
    let job = Job::new("batch-torn", &items(4));
    let done =
        |id: &str| json!({"id": id, "status": 200, "body": {}, "attempts": 1, "latency_ms": 3});
    std::fs::write(
        &job.output,
        format!(
            "{}\n{}\n{{\"id\":\"item-2\",\"sta",
            done("item-0"),
            done("item-1")
        ),
    )
    .unwrap();
    let summary = run_to_end(job.in_process(&upstream)).await;
    assert_eq!(
        (summary.already_done, summary.succeeded),
        (2, 2),
        "{summary}"
    );
    assert_once_each(&job.results(), 4);
    assert_eq!(upstream.stats().ok, 2);
}

#[tokio::test(start_paused = true)]
async fn a_results_file_that_is_not_ours_is_refused() {
    let upstream = fake(FakeUpstreamConfig::default());
    let job = Job::new("batch-foreign", &items(2));
    std::fs::write(&job.output, "{\"id\":\"x\"}\nhello\n").unwrap();
    let error = run(
        job.in_process(&upstream),
        &NoProgress,
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, BatchError::Corrupt { line: 2, .. }),
        "{error}"
    );
    assert_eq!(upstream.stats().requests, 0);
}

#[tokio::test(start_paused = true)]
async fn one_state_directory_serves_one_run_and_one_job() {
    let upstream = fake(FakeUpstreamConfig::default());
    let job = Job::new("batch-lock", &items(2));
    let state_dir = BatchConfig::default_state_dir(&job.output);
    let lock = state::lock(&state_dir).unwrap();
    let error = run(
        job.in_process(&upstream),
        &NoProgress,
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, BatchError::Locked { .. }), "{error}");
    drop(lock);
    run_to_end(job.in_process(&upstream)).await;

    let mut other = job.in_process(&upstream);
    other.output = job.dir.join("other.jsonl");
    other.state_dir = state_dir;
    let error = run(other, &NoProgress, std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(error, BatchError::OtherJob { .. }), "{error}");
}

#[tokio::test(start_paused = true)]
async fn the_quota_pause_holds_items_until_the_reset() {
    // An upstream that says nothing about its quota: the client counts its own requests
    // in one-minute windows against --rpm 60 and pauses batch work at 50 %.
    let upstream = fake(FakeUpstreamConfig {
        rpm: 0,
        tpm: 0,
        quota_headers: false,
        ..FakeUpstreamConfig::default()
    });
    let job = Job::new("batch-pause", &items(40));
    let mut config = job.in_process(&upstream);
    config.egress.pace.requests_per_minute = Some(600);
    config.egress.quota.requests_per_minute = Some(60);
    config.egress.quota.pause_threshold = 50;
    let notes = Arc::new(std::sync::Mutex::new(Vec::new()));
    struct Notes(Arc<std::sync::Mutex<Vec<String>>>);
    impl ProgressSink for Notes {
        fn update(&self, _: &BatchProgress) {}
        fn note(&self, message: &str) {
            self.0.lock().unwrap().push(message.to_owned());
        }
    }
    let summary = run(config, &Notes(Arc::clone(&notes)), std::future::pending())
        .await
        .unwrap();
    assert_eq!(summary.succeeded, 40, "{summary}");
    assert!(summary.pauses >= 1, "{summary}");
    assert!(
        summary.elapsed >= Duration::from_secs(60),
        "30 in the first minute, then a pause to its end: {summary}"
    );
    assert_eq!(upstream.stats().rate_limited, 0);
    // The pause holds new items at 30 (50 % of 60); only the few already waiting for
    // their pace inside the client go on.
    let log = upstream.log();
    let first = log[0].at;
    let in_first_minute = log
        .iter()
        .filter(|s| s.at.saturating_since(first) < Duration::from_secs(60))
        .count();
    assert!(
        (30..=30 + item::QUEUED).contains(&in_first_minute),
        "{in_first_minute} sent in the first minute"
    );
    let notes = notes.lock().unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("paused: requests_per_minute at")),
        "{notes:?}"
    );
    assert!(notes.iter().any(|n| n.starts_with("going on")), "{notes:?}");
    // The counted window persists in the state directory.
    let state = BatchConfig::default_state_dir(&job.output).join(QUOTA_FILE);
    assert!(
        std::fs::read_to_string(state)
            .unwrap()
            .contains("requests_per_minute")
    );
}

#[test]
fn bodies_are_json_when_they_are_json() {
    let answer = |content_type: Option<&str>, body: &'static str| {
        let mut response = Response::new(Bytes::from_static(body.as_bytes()));
        if let Some(content_type) = content_type {
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, content_type.parse().unwrap());
        }
        item::body_value(&response)
    };
    assert_eq!(
        answer(Some("application/json"), "{\"a\":\n 1}"),
        json!({"a": 1})
    );
    assert_eq!(answer(None, " [1]"), json!([1]));
    assert_eq!(answer(Some("text/plain"), "hello"), json!("hello"));
    assert_eq!(
        answer(Some("application/json"), "{broken"),
        json!("{broken")
    );
}

#[test]
fn idempotency_keys_are_stable_and_distinct() {
    let a = state::idempotency_key("job", "a");
    assert_eq!(a, state::idempotency_key("job", "a"));
    assert_ne!(a, state::idempotency_key("job", "b"));
    assert_ne!(a, state::idempotency_key("other", "a"));
    assert!(a.starts_with("sluice-") && a.len() == 7 + 32, "{a}");
}

/// The fake in process, keeping the headers of every request.
#[derive(Debug)]
struct Recording {
    upstream: InProcess,
    seen: std::sync::Mutex<Vec<http::HeaderMap>>,
}

impl Transport for Recording {
    fn send(&self, request: Request<Bytes>) -> BoxFuture<'_, Result<Response<Bytes>, SendError>> {
        self.seen.lock().unwrap().push(request.headers().clone());
        self.upstream.send(request)
    }
}

#[tokio::test(start_paused = true)]
async fn requests_carry_their_headers_and_a_stable_idempotency_key() {
    let recording = Arc::new(Recording {
        upstream: InProcess(fake(FakeUpstreamConfig::default())),
        seen: std::sync::Mutex::new(Vec::new()),
    });
    let mut lines = items(2);
    lines.push(
        json!({"id": "own-key", "path": PATH, "priority": "interactive",
               "headers": {"idempotency-key": "mine", "content-type": "application/x-custom"},
               "body": chat_body("hi", Some(5))})
        .to_string(),
    );
    let job = Job::new("batch-headers", &lines);
    let mut config = job.config("http://fake.test", Some(Arc::clone(&recording) as _));
    config.via_proxy = true;
    run_to_end(config).await;
    let seen = recording.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    let by_key: HashMap<&str, &http::HeaderMap> = seen
        .iter()
        .map(|h| (h["idempotency-key"].to_str().unwrap(), h))
        .collect();
    let own = by_key["mine"];
    assert_eq!(own["content-type"], "application/x-custom");
    assert_eq!(own["x-sluice-priority"], "10");
    let generated: Vec<&&http::HeaderMap> = by_key
        .iter()
        .filter(|(k, _)| **k != "mine")
        .map(|(_, h)| h)
        .collect();
    assert_eq!(generated.len(), 2);
    for headers in generated {
        assert_eq!(headers["authorization"], "Bearer sk-test-secret");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["x-sluice-priority"], "0");
    }

    // The same job's keys are the same on every run; a new job's are not.
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(BatchConfig::default_state_dir(&job.output).join(MANIFEST_FILE)).unwrap(),
    )
    .unwrap();
    let job_key = manifest["job_key"].as_str().unwrap();
    assert!(by_key.contains_key(state::idempotency_key(job_key, "item-0").as_str()));

    // Without keys (and without a proxy) no such headers are added.
    let plain = Job::new("batch-no-keys", &items(1));
    let recording = Arc::new(Recording {
        upstream: InProcess(fake(FakeUpstreamConfig::default())),
        seen: std::sync::Mutex::new(Vec::new()),
    });
    let mut config = plain.config("http://fake.test", Some(Arc::clone(&recording) as _));
    config.idempotency_keys = false;
    run_to_end(config).await;
    let seen = recording.seen.lock().unwrap();
    assert!(!seen[0].contains_key("idempotency-key"));
    assert!(!seen[0].contains_key("x-sluice-priority"));
}

#[tokio::test(start_paused = true)]
async fn an_outage_makes_items_wait_not_fail() {
    let upstream = fake(FakeUpstreamConfig::default());
    upstream.set_outage(Some(sluice_testkit::upstream::Fault::server_error(503)));
    let job = Job::new("batch-outage", &items(20));
    let healer = {
        let upstream = upstream.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5 * 60)).await;
            upstream.set_outage(None);
        })
    };
    let summary = run_to_end(job.in_process(&upstream)).await;
    healer.await.unwrap();
    assert_eq!((summary.succeeded, summary.failed), (20, 0), "{summary}");
    assert!(summary.elapsed >= Duration::from_secs(5 * 60), "{summary}");
    assert!(
        summary.pauses >= 1,
        "the open circuit shows as a pause: {summary}"
    );
    assert!(upstream.stats().server_errors > 0);
    assert_once_each(&job.results(), 20);
    assert_processed_once(&upstream, 20);
}
