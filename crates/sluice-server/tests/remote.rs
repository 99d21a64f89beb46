//! The remote layer end to end: `sluice serve` runs in this process on port-0 loopback
//! listeners, and every scenario runs over both transports (HTTP JSON and Envoy RLS gRPC).
//!
//! The server reads the real clock, so limits are per minute or per hour and header resets
//! are checked to the second they may have ticked down by; counts are exact.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use sluice_http::{PROBLEM_TYPE, parse_limit_header};
use sluice_server::{ServeOptions, Spawned};
use sluice_tower::remote::{
    GrpcBackend, HttpBackend, OnFailure, RemoteBackend, RemoteLimit, RemoteRateLimitLayer,
    RemoteStats,
};
use sluice_tower::{
    Constant, Header, HeaderStyle, MISSING_KEY_PROBLEM_TYPE, OnMissingKey, PeerIp,
    UNAVAILABLE_PROBLEM_TYPE,
};
use tokio::net::TcpListener;
use tower::{Layer, Service, ServiceExt};

const CONFIG: &str = "
domain: api
descriptors:
  - key: ip
    rate_limit: {unit: minute, requests_per_unit: 3, algorithm: gcra}
  - key: x-api-key
    rate_limit: {unit: hour, requests_per_unit: 2, algorithm: gcra, name: api-key}
  - key: fallback
    rate_limit: {unit: hour, requests_per_unit: 1, algorithm: gcra}
";

/// A client request is never slower than this, even when the server fails.
const BOUND: Duration = Duration::from_secs(2);

/// The layer's timeout in the tests that need one to fire.
const SHORT: Duration = Duration::from_millis(100);

/// The layer's timeout in the tests that need the server's answer.
const PATIENT: Duration = Duration::from_secs(1);

/// `sluice serve` on loopback with [`CONFIG`].
struct TestServer {
    server: Spawned,
    dir: PathBuf,
}

impl TestServer {
    async fn start() -> Self {
        let dir = sluice_testkit::temp_dir("tower-remote");
        let config = dir.join("config.yaml");
        std::fs::write(&config, CONFIG).expect("config written");
        let options = ServeOptions {
            config_path: Some(config),
            watch: false,
            // Over gRPC the server then says the wait in a `Retry-After` it asks to add.
            ratelimit_headers: true,
            ..ServeOptions::default()
        };
        let server = sluice_server::spawn(options)
            .await
            .expect("the server starts");
        Self { server, dir }
    }

    /// A layer asking this server over `T`, with no limits yet. Its timeout is generous:
    /// a first call opens the connection, which a loaded test machine may take more than
    /// the default 100 ms to do.
    fn layer<T: Transport>(&self) -> RemoteRateLimitLayer<T> {
        let backend = T::at(if T::GRPC {
            self.server.grpc
        } else {
            self.server.http
        });
        RemoteRateLimitLayer::new(backend, "api").timeout(PATIENT)
    }

    async fn stop(self) {
        self.server
            .stop()
            .await
            .expect("the server stopped cleanly");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What differs between the two transports.
trait Transport: RemoteBackend + Sized {
    const GRPC: bool;

    fn at(addr: SocketAddr) -> Self;
}

impl Transport for HttpBackend {
    const GRPC: bool = false;

    fn at(addr: SocketAddr) -> Self {
        Self::new(&format!("http://{addr}")).expect("a valid URL")
    }
}

impl Transport for GrpcBackend {
    const GRPC: bool = true;

    fn at(addr: SocketAddr) -> Self {
        Self::connect_lazy(&format!("http://{addr}")).expect("a valid URI")
    }
}

type Inner = tower::util::ServiceFn<
    fn(Request<()>) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>,
>;

fn ok_service() -> Inner {
    fn handle(_req: Request<()>) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>> {
        std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(b"ok")))))
    }
    tower::service_fn(handle as fn(_) -> _)
}

fn from_peer(ip: &str) -> Request<()> {
    let mut req = Request::new(());
    let addr: SocketAddr = format!("{ip}:40000").parse().expect("test peer");
    req.extensions_mut().insert(addr);
    req
}

fn with_key(mut req: Request<()>, key: &str) -> Request<()> {
    req.headers_mut().insert(
        HeaderName::from_static("x-api-key"),
        HeaderValue::from_str(key).expect("test header"),
    );
    req
}

fn api_key() -> Header {
    Header(HeaderName::from_static("x-api-key"))
}

/// An answer as the client sees it.
struct Seen {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// `RateLimit`'s items as `(name, r, t)`, each `t` checked to be `expected` or one
    /// second less (the clock runs while the test does) and reported as expected.
    fn limits(&self, expected_t: &[u64]) -> Vec<(String, u64, u64)> {
        let items = parse_limit_header(self.header("ratelimit").expect("a RateLimit header"))
            .expect("RateLimit parses");
        assert_eq!(items.len(), expected_t.len(), "{items:?}");
        items
            .into_iter()
            .zip(expected_t)
            .map(|(item, &t)| {
                assert!(
                    (t.saturating_sub(1)..=t).contains(&item.reset_secs),
                    "{item:?}: t should be {t}"
                );
                (item.name, item.remaining, t)
            })
            .collect()
    }

    fn has_no_rate_limit_headers(&self) -> bool {
        [
            "ratelimit",
            "ratelimit-policy",
            "x-ratelimit-limit",
            "retry-after",
        ]
        .iter()
        .all(|h| self.header(h).is_none())
    }
}

/// Sends `req` through `svc`, which must answer within [`BOUND`].
async fn send<S, B>(svc: &S, req: Request<()>) -> Seen
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible> + Clone,
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let response = tokio::time::timeout(BOUND, svc.clone().oneshot(req))
        .await
        .expect("answered within 2 s")
        .expect("infallible");
    let (parts, body) = response.into_parts();
    Seen {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.expect("a body").to_bytes(),
    }
}

fn stats(allowed: u64, limited: u64) -> RemoteStats {
    let mut stats = RemoteStats::default();
    stats.allowed = allowed;
    stats.limited = limited;
    stats
}

// --- A per-IP rule of 3 a minute: 3 admitted, then 429. ---

async fn per_ip_admits_three_then_refuses<T: Transport>() {
    let server = TestServer::start().await;
    let layer = server
        .layer::<T>()
        .limit(RemoteLimit::new("per-ip", PeerIp::new()))
        .expect("valid limit");
    let svc = layer.layer(ok_service());

    // GCRA 3/min: one request every 20 s, whole again 20 s after each.
    for (remaining, reset) in [(2, 20), (1, 40), (0, 60)] {
        let seen = send(&svc, from_peer("192.0.2.1")).await;
        assert_eq!(seen.status, StatusCode::OK);
        assert_eq!(seen.body, Bytes::from_static(b"ok"));
        assert_eq!(
            seen.header("ratelimit-policy"),
            Some(r#""per-ip";q=3;w=60"#)
        );
        assert_eq!(
            seen.limits(&[reset]),
            [("per-ip".to_owned(), remaining, reset)]
        );
        assert_eq!(seen.header("retry-after"), None);
    }

    let seen = send(&svc, from_peer("192.0.2.1")).await;
    assert_eq!(seen.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        seen.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(
        seen.header("ratelimit-policy"),
        Some(r#""per-ip";q=3;w=60"#)
    );
    assert_eq!(seen.limits(&[60]), [("per-ip".to_owned(), 0, 60)]);
    let retry_after: u64 = seen
        .header("retry-after")
        .expect("a Retry-After")
        .parse()
        .expect("seconds");
    // The wait for the next unit (3 a minute: 20 s), not the 60 s until all are back: over
    // gRPC too, from the `Retry-After` the server asks to add.
    let expected = 20;
    assert!(
        (expected - 1..=expected).contains(&retry_after),
        "Retry-After {retry_after}, expected {expected}"
    );
    let problem = seen.json();
    assert_eq!(problem["type"], PROBLEM_TYPE);
    assert_eq!(problem["status"], 429);
    assert_eq!(problem["title"], "Too Many Requests");
    assert_eq!(problem["violated-policies"], json!(["per-ip"]));
    assert_eq!(
        problem["detail"],
        format!("Rate limit \"per-ip\" exceeded; retry in {retry_after} seconds.")
    );

    // Another client has its own budget.
    let seen = send(&svc, from_peer("192.0.2.2")).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert_eq!(seen.limits(&[20]), [("per-ip".to_owned(), 2, 20)]);

    assert_eq!(layer.stats(), stats(4, 1));
    drop((svc, layer));
    server.stop().await;
}

#[tokio::test]
async fn http_per_ip_admits_three_a_minute_then_refuses_with_headers_and_problem() {
    per_ip_admits_three_then_refuses::<HttpBackend>().await;
}

#[tokio::test]
async fn grpc_per_ip_admits_three_a_minute_then_refuses_with_headers_and_problem() {
    per_ip_admits_three_then_refuses::<GrpcBackend>().await;
}

// --- Two limits in one check: all or nothing. ---

async fn two_limits_are_all_or_nothing<T: Transport>() {
    let server = TestServer::start().await;
    let layer = server
        .layer::<T>()
        .limit(RemoteLimit::new("per-ip", PeerIp::new()))
        .expect("valid limit")
        .limit(RemoteLimit::new("per-key", api_key()))
        .expect("valid limit")
        .header_style(HeaderStyle::Both);
    let svc = layer.layer(ok_service());
    let request = |key: &str| with_key(from_peer("198.51.100.7"), key);

    // The key's rule is 2 an hour (one every 30 minutes); the IP's is 3 a minute.
    for (ip_left, ip_reset, key_left, key_reset) in [(2, 20, 1, 1800), (1, 40, 0, 3600)] {
        let seen = send(&svc, request("k1")).await;
        assert_eq!(seen.status, StatusCode::OK);
        assert_eq!(
            seen.header("ratelimit-policy"),
            Some(r#""per-ip";q=3;w=60, "per-key";q=2;w=3600"#)
        );
        assert_eq!(
            seen.limits(&[ip_reset, key_reset]),
            [
                ("per-ip".to_owned(), ip_left, ip_reset),
                ("per-key".to_owned(), key_left, key_reset)
            ]
        );
        // Legacy: the most restrictive of the two.
        let most_restrictive = if key_left < ip_left {
            ("2", key_left)
        } else {
            ("3", ip_left)
        };
        assert_eq!(seen.header("x-ratelimit-limit"), Some(most_restrictive.0));
        assert_eq!(
            seen.header("x-ratelimit-remaining"),
            Some(most_restrictive.1.to_string().as_str())
        );
    }

    // The key is spent: refused, and the IP's last request is not taken.
    let seen = send(&svc, request("k1")).await;
    assert_eq!(seen.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(seen.json()["violated-policies"], json!(["per-key"]));
    assert_eq!(seen.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(seen.header("x-ratelimit-remaining"), Some("0"));

    // Proof: the same IP with another key still has its third request, then no fourth.
    let seen = send(&svc, request("k2")).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert_eq!(
        seen.limits(&[60, 1800]),
        [
            ("per-ip".to_owned(), 0, 60),
            ("per-key".to_owned(), 1, 1800)
        ]
    );
    // And the IP's refusal takes nothing from the new key either.
    let seen = send(&svc, request("k3")).await;
    assert_eq!(seen.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(seen.json()["violated-policies"], json!(["per-ip"]));
    let seen = send(&svc, with_key(from_peer("198.51.100.8"), "k3")).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert_eq!(
        seen.limits(&[20, 1800]),
        [
            ("per-ip".to_owned(), 2, 20),
            ("per-key".to_owned(), 1, 1800)
        ]
    );

    assert_eq!(layer.stats(), stats(4, 2));
    drop((svc, layer));
    server.stop().await;
}

#[tokio::test]
async fn http_two_limits_are_all_or_nothing() {
    two_limits_are_all_or_nothing::<HttpBackend>().await;
}

#[tokio::test]
async fn grpc_two_limits_are_all_or_nothing() {
    two_limits_are_all_or_nothing::<GrpcBackend>().await;
}

// --- A descriptor no rule matches: allowed, no header item. ---

async fn unmatched_descriptor_is_allowed_without_headers<T: Transport>() {
    let server = TestServer::start().await;
    let alone = server
        .layer::<T>()
        .limit(RemoteLimit::new("global", Constant::new("all")))
        .expect("valid limit")
        .header_style(HeaderStyle::Both);
    let svc = alone.layer(ok_service());
    for _ in 0..5 {
        let seen = send(&svc, from_peer("203.0.113.1")).await;
        assert_eq!(seen.status, StatusCode::OK);
        assert!(seen.has_no_rate_limit_headers(), "{:?}", seen.headers);
    }
    assert_eq!(alone.stats(), stats(5, 0));

    // Beside a matched one, it adds no item.
    let mixed = server
        .layer::<T>()
        .limit(RemoteLimit::new("global", Constant::new("all")))
        .expect("valid limit")
        .limit(RemoteLimit::new("per-ip", PeerIp::new()))
        .expect("valid limit");
    let seen = send(&mixed.layer(ok_service()), from_peer("203.0.113.1")).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert_eq!(
        seen.header("ratelimit-policy"),
        Some(r#""per-ip";q=3;w=60"#)
    );
    assert_eq!(seen.limits(&[20]), [("per-ip".to_owned(), 2, 20)]);

    drop((svc, alone, mixed));
    server.stop().await;
}

#[tokio::test]
async fn http_unmatched_descriptor_is_allowed_without_headers() {
    unmatched_descriptor_is_allowed_without_headers::<HttpBackend>().await;
}

#[tokio::test]
async fn grpc_unmatched_descriptor_is_allowed_without_headers() {
    unmatched_descriptor_is_allowed_without_headers::<GrpcBackend>().await;
}

// --- Keyless requests: answered without asking, as the local layer does. ---

async fn missing_key_is_401_with_a_challenge_or_a_shared_fallback<T: Transport>() {
    let server = TestServer::start().await;
    let layer = server
        .layer::<T>()
        .limit(
            RemoteLimit::new("per-key", api_key())
                .on_missing_key(OnMissingKey::Unauthorized)
                .www_authenticate(HeaderValue::from_static(r#"ApiKey header="x-api-key""#)),
        )
        .expect("valid limit");
    let seen = send(&layer.layer(ok_service()), from_peer("192.0.2.9")).await;
    assert_eq!(seen.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        seen.header("www-authenticate"),
        Some(r#"ApiKey header="x-api-key""#)
    );
    let problem = seen.json();
    assert_eq!(problem["type"], MISSING_KEY_PROBLEM_TYPE);
    assert_eq!(problem["status"], 401);
    assert_eq!(
        layer.stats(),
        RemoteStats::default(),
        "the server is not asked"
    );

    // With a fallback, keyless requests share one descriptor (`fallback=<name>`), which
    // this server limits to 1 an hour.
    let shared = server
        .layer::<T>()
        .limit(
            RemoteLimit::new("per-key", api_key())
                .on_missing_key(OnMissingKey::Fallback("anonymous".to_owned())),
        )
        .expect("valid limit");
    let svc = shared.layer(ok_service());
    assert_eq!(
        send(&svc, from_peer("192.0.2.9")).await.status,
        StatusCode::OK
    );
    let seen = send(&svc, from_peer("192.0.2.10")).await;
    assert_eq!(seen.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(seen.json()["violated-policies"], json!(["per-key"]));

    drop((layer, shared, svc));
    server.stop().await;
}

#[tokio::test]
async fn http_missing_key_is_401_with_a_challenge_or_a_shared_fallback() {
    missing_key_is_401_with_a_challenge_or_a_shared_fallback::<HttpBackend>().await;
}

#[tokio::test]
async fn grpc_missing_key_is_401_with_a_challenge_or_a_shared_fallback() {
    missing_key_is_401_with_a_challenge_or_a_shared_fallback::<GrpcBackend>().await;
}

// --- The request's cost is the check's hits. ---

async fn cost_is_sent_as_hits<T: Transport>() {
    let server = TestServer::start().await;
    let layer = server
        .layer::<T>()
        .limit(RemoteLimit::new("per-ip", PeerIp::new()))
        .expect("valid limit")
        .cost(|_req: &Request<()>| 2);
    let svc = layer.layer(ok_service());
    let seen = send(&svc, from_peer("192.0.2.20")).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert_eq!(seen.limits(&[40]), [("per-ip".to_owned(), 1, 40)]);
    let seen = send(&svc, from_peer("192.0.2.20")).await;
    assert_eq!(seen.status, StatusCode::TOO_MANY_REQUESTS);
    drop((svc, layer));
    server.stop().await;
}

#[tokio::test]
async fn http_cost_is_sent_as_hits() {
    cost_is_sent_as_hits::<HttpBackend>().await;
}

#[tokio::test]
async fn grpc_cost_is_sent_as_hits() {
    cost_is_sent_as_hits::<GrpcBackend>().await;
}

// --- No decision: the failure policy. ---

/// Sends one request through an `Open` and a `Closed` layer asking `addr` over `T` with
/// `timeout`, checks what each answers, and returns the counts of each.
async fn open_and_closed<T: Transport>(
    addr: SocketAddr,
    timeout: Duration,
) -> (RemoteStats, RemoteStats) {
    let layer = |on_failure| {
        RemoteRateLimitLayer::new(T::at(addr), "api")
            .limit(RemoteLimit::new("per-ip", PeerIp::new()))
            .expect("valid limit")
            .timeout(timeout)
            .on_failure(on_failure)
    };
    let open = layer(OnFailure::Open);
    let seen = send(&open.layer(ok_service()), from_peer("192.0.2.30")).await;
    assert_eq!(seen.status, StatusCode::OK, "open lets it through");
    assert_eq!(seen.body, Bytes::from_static(b"ok"));
    assert!(seen.has_no_rate_limit_headers(), "{:?}", seen.headers);

    let closed = layer(OnFailure::Closed);
    let seen = send(&closed.layer(ok_service()), from_peer("192.0.2.30")).await;
    assert_eq!(
        seen.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "closed refuses"
    );
    assert_eq!(
        seen.header("content-type"),
        Some("application/problem+json")
    );
    let problem = seen.json();
    assert_eq!(problem["type"], UNAVAILABLE_PROBLEM_TYPE);
    assert_eq!(problem["status"], 503);
    (open.stats(), closed.stats())
}

/// A port nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

/// A server that accepts connections and never says a word.
async fn silent_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (addr, task)
}

async fn server_down_follows_the_failure_policy<T: Transport>() {
    let (open, closed) = open_and_closed::<T>(closed_port().await, PATIENT).await;
    for stats in [open, closed] {
        assert_eq!(stats.unreachable, 1, "{stats:?}");
        assert_eq!(stats.failures(), 1, "{stats:?}");
    }
}

#[tokio::test]
async fn http_server_down_follows_the_failure_policy() {
    server_down_follows_the_failure_policy::<HttpBackend>().await;
}

#[tokio::test]
async fn grpc_server_down_follows_the_failure_policy() {
    server_down_follows_the_failure_policy::<GrpcBackend>().await;
}

async fn silent_server_times_out<T: Transport>() {
    let (addr, task) = silent_server().await;
    let (open, closed) = open_and_closed::<T>(addr, SHORT).await;
    for stats in [open, closed] {
        assert_eq!(stats.timed_out, 1, "{stats:?}");
        assert_eq!(stats.failures(), 1, "{stats:?}");
    }
    task.abort();
}

#[tokio::test]
async fn http_silent_server_times_out_and_follows_the_failure_policy() {
    silent_server_times_out::<HttpBackend>().await;
}

#[tokio::test]
async fn grpc_silent_server_times_out_and_follows_the_failure_policy() {
    silent_server_times_out::<GrpcBackend>().await;
}

/// An HTTP server answering every `/v1/check` with `status` and `body`.
async fn garbling_http_server(
    status: StatusCode,
    body: &'static str,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route(
        "/v1/check",
        axum::routing::post(move || async move { (status, body) }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

#[tokio::test]
async fn http_garbled_or_error_answers_follow_the_failure_policy() {
    for (status, body) in [
        (StatusCode::OK, "not json"),
        (
            StatusCode::OK,
            r#"{"overall_code":"UNKNOWN","statuses":[]}"#,
        ),
        // One status for a request of one descriptor is required.
        (StatusCode::OK, r#"{"overall_code":"OK","statuses":[]}"#),
        (StatusCode::INTERNAL_SERVER_ERROR, "{}"),
        (StatusCode::BAD_REQUEST, r#"{"type":"about:blank"}"#),
    ] {
        let (addr, task) = garbling_http_server(status, body).await;
        let (open, closed) = open_and_closed::<HttpBackend>(addr, PATIENT).await;
        for stats in [open, closed] {
            assert_eq!(stats.bad_answers, 1, "{status} {body}: {stats:?}");
            assert_eq!(stats.failures(), 1, "{stats:?}");
        }
        task.abort();
    }
}

/// An Envoy RLS server that answers every call with `overall_code`.
struct Garbling {
    overall_code: Code,
}

#[tonic::async_trait]
impl RateLimitService for Garbling {
    async fn should_rate_limit(
        &self,
        request: tonic::Request<RateLimitRequest>,
    ) -> Result<tonic::Response<RateLimitResponse>, tonic::Status> {
        let descriptors = request.into_inner().descriptors.len();
        Ok(tonic::Response::new(RateLimitResponse {
            overall_code: self.overall_code as i32,
            statuses: vec![Default::default(); descriptors],
            ..RateLimitResponse::default()
        }))
    }
}

#[tokio::test]
async fn grpc_unknown_overall_code_follows_the_failure_policy() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = RateLimitServiceServer::new(Garbling {
        overall_code: Code::Unknown,
    });
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await;
    });
    let (open, closed) = open_and_closed::<GrpcBackend>(addr, PATIENT).await;
    for stats in [open, closed] {
        assert_eq!(stats.bad_answers, 1, "{stats:?}");
        assert_eq!(stats.failures(), 1, "{stats:?}");
    }
    task.abort();
}

#[tokio::test]
async fn a_layer_without_a_domain_or_with_a_name_twice_is_refused_when_built() {
    let backend = || HttpBackend::new("http://127.0.0.1:9").expect("a valid URL");
    let empty =
        RemoteRateLimitLayer::new(backend(), "").limit(RemoteLimit::new("per-ip", PeerIp::new()));
    assert_eq!(
        empty.err().map(|e| e.to_string()).as_deref(),
        Some("the domain is empty: a rate limit server refuses every check without one")
    );
    let twice = RemoteRateLimitLayer::new(backend(), "api")
        .limit(RemoteLimit::new("per-ip", PeerIp::new()))
        .and_then(|layer| layer.limit(RemoteLimit::new("per-ip", Constant::new("all"))));
    assert_eq!(
        twice.err().map(|e| e.to_string()).as_deref(),
        Some("two limits are named \"per-ip\"")
    );
}
