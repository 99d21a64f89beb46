//! `sluice proxy` as a child process in front of sluice-testkit's fake upstream, for the
//! proxy tests and the OpenAI SDK tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_testkit::upstream::{
    FakeServer, FakeUpstream, FakeUpstreamConfig, StreamConfig, chat_request,
};

use super::{STARTUP, http_request};

/// A running `sluice proxy`, killed when dropped (stop it with [`terminate`](Self::terminate)
/// to see it exit cleanly).
pub struct ProxyProcess {
    child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl ProxyProcess {
    /// Starts `sluice proxy --upstream URL --listen <free port> ARGS`, logging to a file in
    /// `dir`, and waits until `/_sluice/healthz` answers.
    pub fn start(dir: &Path, upstream: &str, args: &[&str]) -> Self {
        let addr = free_addr();
        let listen = addr.to_string();
        let mut all = vec!["--upstream", upstream, "--listen", &listen];
        all.extend_from_slice(args);
        Self::start_configured(dir, addr, &all, &[])
    }

    /// Starts `sluice proxy ARGS` with `env` and nothing else on its command line (the
    /// upstream and the address may come from a --config file), logging to a file in
    /// `dir`, and waits until `/_sluice/healthz` answers at `addr`.
    pub fn start_configured(
        dir: &Path,
        addr: SocketAddr,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let log = dir.join(format!("proxy-{}.log", addr.port()));
        let log_file = std::fs::File::create(&log).expect("a log file");
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("proxy")
            .args(args)
            .envs(env.iter().copied())
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

    /// What the proxy logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The proxy's /_sluice/metrics text.
    pub fn metrics(&self) -> String {
        let (status, text) =
            http_request(self.addr, "GET", "/_sluice/metrics", "").expect("metrics");
        assert_eq!(status, 200, "{text}");
        text
    }

    /// Sends SIGTERM to its PID and waits for a clean exit; returns the log.
    pub fn terminate(mut self) -> String {
        super::terminate(&mut self.child, &self.log, "sluice proxy")
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback address.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], sluice_testkit::free_port().expect("a port")))
}

/// The fake upstream, served over HTTP on loopback in this test's runtime.
pub async fn fake(config: FakeUpstreamConfig) -> (FakeUpstream, FakeServer) {
    let upstream = FakeUpstream::new(config, Arc::new(sluice_egress::TokioClock::new()));
    let server = upstream.serve().await.expect("the fake upstream serves");
    (upstream, server)
}

/// The fake the SDK tests (Python and JS) send their burst to: `rpm` requests a minute,
/// silent about its quota until it answers 429 (as many APIs are: the proxy knows it from
/// `--rpm`), with `left` requests left in its bucket, and streams of
/// [`SDK_STREAM_CHUNKS`] content events 100 ms apart.
pub async fn sdk_upstream(rpm: u64, left: u64) -> (FakeUpstream, FakeServer) {
    let (upstream, server) = fake(FakeUpstreamConfig {
        rpm,
        tpm: 0,
        quota_headers: false,
        stream: StreamConfig {
            chunks: SDK_STREAM_CHUNKS,
            interval: Duration::from_millis(100),
        },
        ..FakeUpstreamConfig::default()
    })
    .await;
    drain(&upstream, rpm, left).await;
    (upstream, server)
}

/// Content events in each of [`sdk_upstream`]'s streams.
pub const SDK_STREAM_CHUNKS: u64 = 6;

/// Uses up the fake's requests bucket (in process) until `left` remain.
pub async fn drain(upstream: &FakeUpstream, rpm: u64, left: u64) {
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
pub async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work)
        .await
        .expect("the blocking work")
}

/// Checks what an SDK script (Python or JS) reports of its streamed completion: the
/// chunks arrived spread over at least half a second (relayed, not buffered), the final
/// usage is what the fake charged for the request, and the text is the fake's.
pub fn assert_streamed_through(stream: &serde_json::Value, upstream: &FakeUpstream) {
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
