//! `sluice serve` (and in [`proxy`], `sluice proxy`) as a child process on free loopback
//! ports, stopped by its PID, with a tiny blocking HTTP client (no client crate needed for a few JSON calls).

#![allow(
    dead_code,
    unreachable_pub,
    reason = "a support module shared by test binaries that each use a part"
)]
#![allow(
    clippy::disallowed_types,
    reason = "waiting on a child process is wall-clock time by nature"
)]

pub mod proxy;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to start answering.
const STARTUP: Duration = Duration::from_secs(20);

/// A running `sluice serve`.
#[derive(Debug)]
pub struct ServeProcess {
    child: Child,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub log: PathBuf,
}

pub use sluice_testkit::temp_dir;

impl ServeProcess {
    /// Starts `sluice serve` with `args` on two free ports, logging to a file in `dir`, and
    /// waits until `/healthz` answers.
    pub fn start(dir: &Path, args: &[&str]) -> Self {
        let http = SocketAddr::from(([127, 0, 0, 1], sluice_testkit::free_port().expect("a port")));
        let grpc = SocketAddr::from(([127, 0, 0, 1], sluice_testkit::free_port().expect("a port")));
        let log = dir.join(format!("serve-{}.log", http.port()));
        let log_file = std::fs::File::create(&log).expect("a log file");
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("serve")
            .args(["--http", &http.to_string(), "--grpc", &grpc.to_string()])
            .args(args)
            .env("SLUICE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("sluice starts");
        let mut server = Self {
            child,
            http,
            grpc,
            log,
        };
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = server.child.try_wait().expect("wait") {
                panic!("sluice serve exited with {status}:\n{}", server.log_text());
            }
            if http_request(http, "GET", "/healthz", "").is_ok() {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "sluice serve did not start:\n{}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the server logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// POSTs JSON to the server and returns the status and parsed answer.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let (status, text) =
            http_request(self.http, "POST", path, &body.to_string()).expect("the server answers");
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// GETs a path as text.
    pub fn get(&self, path: &str) -> (u16, String) {
        http_request(self.http, "GET", path, "").expect("the server answers")
    }

    /// Sends SIGTERM to the PID and waits for a clean exit; returns the log.
    pub fn terminate(mut self) -> String {
        terminate(&mut self.child, &self.log, "sluice serve")
    }
}

/// Sends SIGTERM to `child` and waits (at most 10 s) for a clean exit; returns its log.
pub fn terminate(child: &mut Child, log: &Path, what: &str) -> String {
    let log_text = || std::fs::read_to_string(log).unwrap_or_default();
    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "exit status {status}:\n{}", log_text());
            return log_text();
        }
        assert!(Instant::now() < deadline, "{what} ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on a fresh connection; returns the status and body.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {response:?}")))?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let body = if response
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// A `/v1/check` body with one descriptor.
pub fn check_body(domain: &str, entries: &[(&str, &str)]) -> serde_json::Value {
    let entries: Vec<serde_json::Value> = entries
        .iter()
        .map(|(k, v)| serde_json::json!({"key": k, "value": v}))
        .collect();
    serde_json::json!({"domain": domain, "descriptors": [{"entries": entries}]})
}
