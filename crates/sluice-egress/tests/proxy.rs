//! The reverse proxy over real HTTP on loopback: sluice-testkit's fake upstream behind
//! `proxy::serve`, driven by plain hyper clients (one connection pool each), in real time
//! with quotas high enough that every test takes a few seconds at most.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use sluice_core::Nanos;
use sluice_egress::concurrency::ConcurrencyConfig;
use sluice_egress::proxy::{self, ProxyConfig, ProxyConfigError};
use sluice_egress::quota::Dimension;
use sluice_egress::{Egress, EgressConfig, MAX_WAIT_HEADER, TokioClock};
use sluice_redis::RedisStore;
use sluice_store::Store;
use sluice_testkit::RedisServer;
use sluice_testkit::upstream::{
    FakeServer, FakeUpstream, FakeUpstreamConfig, Fault, StreamConfig, chat_body, chat_request,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A proxy served on a loopback port from a task, stopped by [`Proxy::stop`].
struct Proxy<S> {
    addr: SocketAddr,
    egress: Egress<S>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ProxyConfigError>>,
}

impl<S: Store + 'static> Proxy<S> {
    async fn start(config: ProxyConfig, egress: Egress<S>) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(proxy::serve(config, listener, egress.clone(), async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            egress,
            stop,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("the proxy task")
            .expect("the proxy ran");
    }
}

fn egress_config(name: &str) -> EgressConfig {
    EgressConfig::new(name)
}

async fn fake(config: FakeUpstreamConfig) -> (FakeUpstream, FakeServer) {
    let upstream = FakeUpstream::new(config, Arc::new(TokioClock::new()));
    let server = upstream.serve().await.expect("the fake upstream serves");
    (upstream, server)
}

fn post(url: &str, body: &Value) -> Request<Full<Bytes>> {
    Request::post(url)
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-test-secret")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a request")
}

fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::default()).expect("a request")
}

/// Sends a request and reads the whole answer.
async fn send(client: &HttpClient, request: Request<Full<Bytes>>) -> Response<Bytes> {
    let response = client.request(request).await.expect("the proxy answers");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("the body").to_bytes();
    Response::from_parts(parts, body)
}

fn json_body(response: &Response<Bytes>) -> Value {
    serde_json::from_slice(response.body()).unwrap_or(Value::Null)
}

/// Uses up the fake's requests bucket (in process, so quickly) until `left` remain.
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

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// What a burst through the proxy came to.
struct Burst {
    statuses: Vec<u16>,
    fake: sluice_testkit::upstream::FakeStats,
    metrics: String,
}

/// A burst of `CLIENTS × PER_CLIENT` chat completions, from as many clients with
/// connections of their own, through a proxy that believes the quota is `believed_rpm`,
/// to a fake whose quota is `RPM` with only 50 requests left (and 50 more a second): three
/// times what is there. The fake states no limits in its headers (many APIs say nothing
/// until they answer 429), so the proxy knows only its configuration and the 429s.
async fn burst(believed_rpm: u64) -> Burst {
    const RPM: u64 = 3_000;
    const CLIENTS: usize = 50;
    const PER_CLIENT: usize = 3;
    let (upstream, server) = fake(FakeUpstreamConfig {
        rpm: RPM,
        tpm: 0,
        quota_headers: false,
        ..FakeUpstreamConfig::default()
    })
    .await;
    drain(&upstream, RPM, 50).await;
    let mut config = egress_config("fake-openai");
    config.pace.requests_per_minute = Some(believed_rpm);
    let egress = Egress::new(config).expect("a valid config");
    let proxy = Proxy::start(
        ProxyConfig::new(&server.url()).expect("a valid config"),
        egress,
    )
    .await;

    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let url = proxy.url("/v1/chat/completions");
        tasks.push(tokio::spawn(async move {
            let client = http_client();
            let mut statuses = Vec::new();
            for j in 0..PER_CLIENT {
                let body = chat_body(&format!("client {i} request {j}"), Some(16));
                let answer = send(&client, post(&url, &body)).await;
                statuses.push(answer.status().as_u16());
            }
            statuses
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.extend(task.await.expect("a client task"));
    }
    let elapsed = started.elapsed();
    let fake = upstream.stats();
    let stats = proxy.egress.stats();
    println!(
        "{} requests through a proxy pacing at {believed_rpm}/min to a fake of {RPM}/min in \
         {elapsed:?}: the fake answered {} (200: {}, 429: {}); egress attempts {}, retries {}",
        statuses.len(),
        fake.requests,
        fake.ok,
        fake.rate_limited,
        stats.attempts,
        stats.retried
    );
    assert_eq!(statuses.len(), CLIENTS * PER_CLIENT);
    let metrics = send(&http_client(), get(&proxy.url("/_sluice/metrics"))).await;
    let metrics = String::from_utf8_lossy(metrics.body()).into_owned();
    proxy.stop().await;
    Burst {
        statuses,
        fake,
        metrics,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_three_times_the_quota_is_paced_without_a_429() {
    let burst = burst(3_000).await;
    assert!(
        burst.statuses.iter().all(|s| *s == 200),
        "every client got 200: {:?}",
        burst.statuses
    );
    assert_eq!(burst.fake.rate_limited, 0, "{:?}", burst.fake);
    assert_eq!(burst.fake.ok, 150);
    assert_eq!(
        metric(
            &burst.metrics,
            "sluice_proxy_responses_total{source=\"upstream\",class=\"2xx\"}"
        ),
        150.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstreams_429s_are_retried_and_never_reach_the_clients() {
    // The proxy believes the quota is twice what it is: the fake answers 429s, which the
    // proxy absorbs (retrying after their retry-after-ms, halving its rate).
    let burst = burst(6_000).await;
    assert!(
        burst.statuses.iter().all(|s| *s == 200),
        "every client got 200: {:?}",
        burst.statuses
    );
    assert!(burst.fake.rate_limited > 0, "{:?}", burst.fake);
    assert_eq!(burst.fake.ok, 150);
    assert_eq!(
        metric(&burst.metrics, "sluice_proxy_upstream_429_total"),
        burst.fake.rate_limited as f64
    );
    assert_eq!(
        metric(
            &burst.metrics,
            "sluice_proxy_responses_total{source=\"upstream\",class=\"4xx\"}"
        ),
        0.0
    );
    assert!(metric(&burst.metrics, "sluice_egress_retries_total") > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_opens_the_circuit_and_the_proxy_answers_503_at_once() {
    let (upstream, server) = fake(FakeUpstreamConfig::default()).await;
    upstream.set_outage(Some(Fault::server_error(503)));
    let mut config = egress_config("fake-openai");
    config.breaker.open_for = Duration::from_secs(30);
    let egress = Egress::new(config).expect("a valid config");
    let proxy = Proxy::start(ProxyConfig::new(&server.url()).expect("valid"), egress).await;
    let client = http_client();
    let url = proxy.url("/v1/chat/completions");

    // POSTs are not retried after a 5xx (they may have been processed): each relays the
    // upstream's 503, and the fifth opens the circuit.
    for _ in 0..5 {
        let answer = send(&client, post(&url, &chat_body("hi", Some(5)))).await;
        assert_eq!(answer.status(), 503);
        assert_eq!(
            json_body(&answer)["error"]["type"],
            "server_error",
            "the upstream's own answer"
        );
    }
    assert_eq!(upstream.stats().requests, 5);

    let started = Instant::now();
    let answer = send(&client, post(&url, &chat_body("hi", Some(5)))).await;
    let took = started.elapsed();
    assert_eq!(answer.status(), 503);
    assert!(took < Duration::from_millis(500), "answered in {took:?}");
    assert_eq!(answer.headers()["content-type"], "application/problem+json");
    let retry_after: u64 = answer.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("whole seconds");
    assert!(
        (29..=30).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    let problem = json_body(&answer);
    assert_eq!(problem["type"], "https://sluice.dev/problems/circuit-open");
    assert_eq!(problem["status"], 503);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("circuit open"),
        "{problem}"
    );
    assert_eq!(
        upstream.stats().requests,
        5,
        "nothing more reached the upstream"
    );

    let health = send(&client, get(&proxy.url("/healthz"))).await;
    assert_eq!(health.status(), 200);
    assert_eq!(json_body(&health)["circuit"], "open");
    proxy.stop().await;
}

/// An upstream that answers every request with what it received, as JSON.
async fn echo_upstream() -> (SocketAddr, JoinHandle<()>) {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("its address");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(|request: Request<hyper::body::Incoming>| async move {
                    let headers: serde_json::Map<String, Value> = request
                        .headers()
                        .iter()
                        .map(|(n, v)| (n.to_string(), Value::from(v.to_str().unwrap_or_default())))
                        .collect();
                    let target = request.uri().to_string();
                    let method = request.method().to_string();
                    let body = request.into_body().collect().await?.to_bytes();
                    let echo = json!({
                        "method": method,
                        "target": target,
                        "headers": headers,
                        "body": String::from_utf8_lossy(&body),
                    });
                    Ok::<_, hyper::Error>(
                        Response::builder()
                            .header("content-type", "application/json")
                            .header("connection", "keep-alive, x-upstream-hop")
                            .header("x-upstream-hop", "1")
                            .header("x-upstream", "kept")
                            .body(Full::new(Bytes::from(echo.to_string())))
                            .expect("a response"),
                    )
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_path_and_headers_strips_sluice_and_hop_by_hop_ones() {
    let (upstream, task) = echo_upstream().await;
    let base = format!("http://{upstream}/base/");
    let egress = Egress::new(egress_config("echo")).expect("a valid config");
    let proxy = Proxy::start(ProxyConfig::new(&base).expect("valid"), egress).await;
    let request = Request::post(proxy.url("/v1/chat/completions?x=1&y=%20"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-test-secret")
        .header("x-sluice-priority", "interactive")
        .header("x-sluice-tenant", "acme")
        .header("x-sluice-max-wait", "5s")
        .header("connection", "keep-alive, x-client-hop")
        .header("x-client-hop", "1")
        .header("x-custom", "kept")
        .body(Full::new(Bytes::from(chat_body("hi", Some(5)).to_string())))
        .expect("a request");
    let answer = send(&http_client(), request).await;
    assert_eq!(answer.status(), 200);
    let echo = json_body(&answer);
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["target"], "/base/v1/chat/completions?x=1&y=%20");
    let headers = &echo["headers"];
    assert_eq!(headers["authorization"], "Bearer sk-test-secret");
    assert_eq!(headers["host"], upstream.to_string());
    assert_eq!(headers["x-custom"], "kept");
    assert_eq!(headers["accept-encoding"], "identity");
    for gone in [
        "x-sluice-priority",
        "x-sluice-tenant",
        "x-sluice-max-wait",
        "x-client-hop",
    ] {
        assert!(
            headers.get(gone).is_none(),
            "{gone} was forwarded: {headers}"
        );
    }
    assert_eq!(
        serde_json::from_str::<Value>(echo["body"].as_str().unwrap_or_default())
            .expect("the body, as sent"),
        chat_body("hi", Some(5))
    );
    // The answer's own hop-by-hop headers stay on the proxy's side too.
    assert_eq!(answer.headers()["x-upstream"], "kept");
    assert!(answer.headers().get("x-upstream-hop").is_none());
    assert_eq!(answer.headers()["x-sluice-attempts"], "1");

    // A header that does not parse is the client's mistake, named in a problem.
    let bad = Request::get(proxy.url("/v1/models"))
        .header("x-sluice-priority", "urgent")
        .body(Full::default())
        .expect("a request");
    let answer = send(&http_client(), bad).await;
    assert_eq!(answer.status(), 400);
    let problem = json_body(&answer);
    assert_eq!(problem["type"], "https://sluice.dev/problems/bad-request");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("x-sluice-priority"),
        "{problem}"
    );
    proxy.stop().await;
    task.abort();
}

/// Reads a streamed answer frame by frame: the arrival time of each data frame (since
/// `started`) and the text.
async fn read_stream(
    client: &HttpClient,
    request: Request<Full<Bytes>>,
    started: Instant,
) -> (HeaderMap, Vec<Duration>, String) {
    let response = client.request(request).await.expect("the proxy answers");
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    let mut body = response.into_body();
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("a frame");
        if let Some(data) = frame.data_ref() {
            arrivals.push(started.elapsed());
            text.push_str(&String::from_utf8_lossy(data));
        }
    }
    (headers, arrivals, text)
}

fn tokens_per_day(egress: &Egress) -> u64 {
    egress
        .stats()
        .quota
        .iter()
        .find(|u| u.dimension == Dimension::TokensPerDay)
        .map_or(0, |u| u.used)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_relayed_chunk_by_chunk_and_settled_to_its_usage() {
    const INTERVAL: Duration = Duration::from_millis(150);
    let (upstream, server) = fake(FakeUpstreamConfig {
        stream: StreamConfig {
            chunks: 5,
            interval: INTERVAL,
        },
        ..FakeUpstreamConfig::default()
    })
    .await;
    let mut config = egress_config("fake-openai");
    // A configured daily token quota: the monitor counts every call's tokens against it,
    // estimated when sent, then settled.
    config.quota.tokens_per_day = Some(100_000_000);
    let egress = Egress::new(config).expect("a valid config");
    let proxy = Proxy::start(ProxyConfig::new(&server.url()).expect("valid"), egress).await;
    let client = http_client();
    let url = proxy.url("/v1/chat/completions");

    let mut body = chat_body("Tell me a story.", Some(1_000));
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    // The fake completes at most 100 tokens: far fewer than the 1000 the proxy reserves.
    let reported = upstream.request_tokens(&body);
    let estimate =
        sluice_egress::usage::estimate_tokens(body.to_string().as_bytes()).expect("an estimate");
    assert!(estimate > reported + 500, "{estimate} vs {reported}");

    let started = Instant::now();
    let (headers, arrivals, text) = read_stream(&client, post(&url, &body), started).await;
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/event-stream"),
        "{headers:?}"
    );
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| e.starts_with("data: "))
        .collect();
    // 5 content chunks, the finish, the usage, [DONE].
    assert_eq!(events.len(), 8, "{text}");
    assert_eq!(events[7], "data: [DONE]");
    println!("arrivals: {arrivals:?}");
    assert!(
        arrivals.len() >= 6,
        "the events came in {} frames",
        arrivals.len()
    );
    let first = arrivals[0];
    let last = arrivals[arrivals.len() - 1];
    assert!(
        first < INTERVAL * 3,
        "the first event arrived at {first:?}: the stream was buffered"
    );
    assert!(
        last - first >= INTERVAL * 5,
        "the events arrived between {first:?} and {last:?}: not one by one"
    );
    assert_eq!(
        tokens_per_day(&proxy.egress),
        reported,
        "settled to the stream's usage, not the estimate of {estimate}"
    );

    // Without include_usage there is nothing to settle to: the estimate stays charged.
    body["stream_options"] = json!({"include_usage": false});
    let (_, _, text) = read_stream(&client, post(&url, &body), Instant::now()).await;
    assert!(!text.contains("total_tokens"), "{text}");
    assert_eq!(tokens_per_day(&proxy.egress), reported + estimate);

    let metrics = send(&client, get(&proxy.url("/_sluice/metrics"))).await;
    let text = String::from_utf8_lossy(metrics.body()).into_owned();
    assert_eq!(metric(&text, "sluice_proxy_streams_total"), 2.0);
    assert_eq!(metric(&text, "sluice_proxy_streams_active"), 0.0);
    assert_eq!(
        metric(
            &text,
            "sluice_proxy_stream_settled_total{usage=\"reported\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "sluice_proxy_stream_settled_total{usage=\"estimate\"}"
        ),
        1.0
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_on_one_redis_share_one_quota() {
    const RPM: u64 = 3_000;
    const PER_PROXY: usize = 100;
    let redis = RedisServer::spawn().expect("redis-server");
    // No quota headers: the proxies know the limit only from their configuration, so
    // only their shared bucket keeps them under it.
    let (upstream, server) = fake(FakeUpstreamConfig {
        rpm: RPM,
        tpm: 0,
        quota_headers: false,
        ..FakeUpstreamConfig::default()
    })
    .await;
    // 60 left, 50 more a second. Together the proxies may send 49 at once and 49 a second;
    // each pacing alone at the account's rate would send twice that and meet 429s.
    drain(&upstream, RPM, 60).await;

    let mut proxies = Vec::new();
    for _ in 0..2 {
        let store = RedisStore::connect(&redis.url())
            .await
            .expect("connect to redis");
        let mut config = egress_config("shared-account");
        config.pace.requests_per_minute = Some(RPM);
        let egress = Egress::with_store(config, store, TokioClock::new()).expect("a valid config");
        proxies.push(Proxy::start(ProxyConfig::new(&server.url()).expect("valid"), egress).await);
    }
    let mut tasks = Vec::new();
    for proxy in &proxies {
        for worker in 0..20 {
            let url = proxy.url("/v1/chat/completions");
            tasks.push(tokio::spawn(async move {
                let client = http_client();
                let mut statuses = Vec::new();
                for i in 0..PER_PROXY / 20 {
                    let body = chat_body(&format!("{worker}-{i}"), Some(8));
                    statuses.push(send(&client, post(&url, &body)).await.status().as_u16());
                }
                statuses
            }));
        }
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.extend(task.await.expect("a client task"));
    }
    assert_eq!(statuses.len(), 2 * PER_PROXY);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");

    let fake = upstream.stats();
    let mut log: Vec<Nanos> = upstream.log().into_iter().map(|s| s.at).collect();
    log.sort();
    // After the first second's burst.
    let steady: Vec<Nanos> = log
        .iter()
        .copied()
        .filter(|at| at.saturating_since(log[0]) >= Duration::from_secs(1))
        .collect();
    let span = steady[steady.len() - 1]
        .saturating_since(steady[0])
        .as_secs_f64();
    #[allow(clippy::cast_precision_loss, reason = "small counts")]
    let per_second = (steady.len() - 1) as f64 / span;
    println!(
        "two proxies, one Redis: {} requests, {} 429s at the fake, {per_second:.1}/s in the steady part (limit {}/s)",
        fake.requests,
        fake.rate_limited,
        RPM / 60
    );
    assert_eq!(fake.rate_limited, 0, "the fake refused some: {fake:?}");
    assert!(per_second <= 50.0 * 1.05, "{per_second:.1}/s");
    for proxy in proxies {
        proxy.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_quota_and_a_large_body_are_answered_by_the_proxy() {
    let (upstream, server) = fake(FakeUpstreamConfig::default()).await;
    let mut config = egress_config("fake-openai");
    config.quota.requests_per_day = Some(4);
    let egress = Egress::new(config).expect("a valid config");
    let mut proxy_config = ProxyConfig::new(&server.url()).expect("valid");
    proxy_config.max_request_body = 1_024;
    let proxy = Proxy::start(proxy_config, egress).await;
    let client = http_client();
    let url = proxy.url("/v1/chat/completions");

    // Batch work pauses at 80 % of the daily quota: after 4 × 0.8 = 3.2 requests.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let mut request = post(&url, &chat_body("hi", Some(5)));
        // Even if the day ends within minutes: wait no longer than a second.
        request
            .headers_mut()
            .insert("x-sluice-max-wait", http::HeaderValue::from_static("1s"));
        let answer = send(&client, request).await;
        statuses.push(answer.status().as_u16());
        if answer.status() == StatusCode::TOO_MANY_REQUESTS {
            let problem = json_body(&answer);
            assert_eq!(problem["type"], "https://sluice.dev/problems/quota-paused");
            let retry_after: u64 = answer.headers()["retry-after"]
                .to_str()
                .expect("ascii")
                .parse()
                .expect("seconds");
            assert!((1..=86_400).contains(&retry_after), "{retry_after}");
            assert!(
                problem["detail"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("requests_per_day"),
                "{problem}"
            );
        }
    }
    // The quota waits for the next UTC day, beyond the second a request may wait.
    assert_eq!(statuses, [200, 200, 200, 200, 429]);
    assert_eq!(upstream.stats().requests, 4);

    let large = json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(2_000)}]});
    let answer = send(&client, post(&url, &large)).await;
    assert_eq!(answer.status(), 413);
    assert_eq!(
        json_body(&answer)["type"],
        "https://sluice.dev/problems/request-too-large"
    );

    let metrics = send(&client, get(&proxy.url("/metrics"))).await;
    let text = String::from_utf8_lossy(metrics.body()).into_owned();
    assert_eq!(
        metric(&text, "sluice_proxy_refused_total{reason=\"quota-paused\"}"),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "sluice_proxy_refused_total{reason=\"request-too-large\"}"
        ),
        1.0
    );
    assert!(
        text.contains("sluice_egress_quota_used{dimension=\"requests_per_day\""),
        "{text}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_endpoints_can_be_left_to_the_upstream() {
    let (_upstream, server) = fake(FakeUpstreamConfig::default()).await;
    let mut config = ProxyConfig::new(&server.url()).expect("valid");
    config.root_endpoints = false;
    let egress = Egress::new(egress_config("fake-openai")).expect("a valid config");
    let proxy = Proxy::start(config, egress).await;
    let client = http_client();
    // Forwarded: the fake has no /metrics.
    let answer = send(&client, get(&proxy.url("/metrics"))).await;
    assert_eq!(answer.status(), 404);
    assert_eq!(json_body(&answer)["error"]["type"], "invalid_request_error");
    let answer = send(&client, get(&proxy.url("/_sluice/healthz"))).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(json_body(&answer)["status"], "ok");
    let answer = send(&client, get(&proxy.url("/v1/models"))).await;
    assert_eq!(answer.status(), 200);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_answers_is_a_504_after_the_attempt_timeout() {
    let (upstream, server) = fake(FakeUpstreamConfig::default()).await;
    upstream.fail_next(1, Fault::Timeout);
    let mut config = ProxyConfig::new(&server.url()).expect("valid");
    config.attempt_timeout = Duration::from_millis(300);
    let egress = Egress::new(egress_config("fake-openai")).expect("a valid config");
    let proxy = Proxy::start(config, egress).await;
    let client = http_client();
    let url = proxy.url("/v1/chat/completions");

    // A POST that timed out may have been processed: it is not sent again.
    let started = Instant::now();
    let answer = send(&client, post(&url, &chat_body("hi", Some(5)))).await;
    let took = started.elapsed();
    assert_eq!(answer.status(), 504);
    let problem = json_body(&answer);
    assert_eq!(
        problem["type"],
        "https://sluice.dev/problems/upstream-timeout"
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(upstream.stats().timeouts, 1);

    // The next one goes through.
    let answer = send(&client, post(&url, &chat_body("hi", Some(5)))).await;
    assert_eq!(answer.status(), 200);
    proxy.stop().await;
}

/// What a round of identical requests sent at once came to.
struct Round {
    /// Each client's status and body, in the order they were sent.
    answers: Vec<(u16, Bytes)>,
    /// Requests the upstream saw.
    upstream_requests: u64,
    metrics: String,
}

/// Sends `requests` at once, each from a client of its own, through a proxy (coalescing
/// `on` or not) to a fake whose answers take a second, so that they are all in flight
/// together.
async fn round(coalesce: bool, requests: Vec<Request<Full<Bytes>>>, path: &str) -> Round {
    let (upstream, server) = fake(FakeUpstreamConfig {
        latency: Duration::from_secs(1),
        ..FakeUpstreamConfig::default()
    })
    .await;
    let mut config = ProxyConfig::new(&server.url()).expect("a valid config");
    config.coalesce = coalesce;
    let egress = Egress::new(egress_config("fake-openai")).expect("a valid config");
    let proxy = Proxy::start(config, egress).await;
    let url = proxy.url(path);
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|mut request| {
            *request.uri_mut() = url.parse().expect("the proxy's URL");
            tokio::spawn(async move {
                let answer = send(&http_client(), request).await;
                (answer.status().as_u16(), answer.into_body())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("a client task"));
    }
    let metrics = send(&http_client(), get(&proxy.url("/_sluice/metrics"))).await;
    let metrics = String::from_utf8_lossy(metrics.body()).into_owned();
    proxy.stop().await;
    Round {
        answers,
        upstream_requests: upstream.stats().requests,
        metrics,
    }
}

fn chat_post(authorization: &str, body: &Value) -> Request<Full<Bytes>> {
    Request::post("http://placeholder/")
        .header("content-type", "application/json")
        .header("authorization", authorization)
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a request")
}

fn distinct(bodies: impl IntoIterator<Item = Bytes>) -> usize {
    bodies
        .into_iter()
        .collect::<std::collections::HashSet<_>>()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_posts_in_flight_together_share_one_upstream_call() {
    let body = chat_body("What is 2 + 2?", Some(5));
    let requests = (0..20)
        .map(|_| chat_post("Bearer sk-test-secret", &body))
        .collect();
    let round = round(true, requests, "/v1/chat/completions").await;
    println!(
        "20 identical POSTs, coalescing on: the upstream saw {}",
        round.upstream_requests
    );
    assert!(
        round.answers.iter().all(|(status, _)| *status == 200),
        "{:?}",
        round.answers
    );
    assert_eq!(round.upstream_requests, 1, "one call for all of them");
    // The fake numbers its completions: one body means one answer, shared.
    assert_eq!(distinct(round.answers.iter().map(|(_, b)| b.clone())), 1);
    let completion: Value = serde_json::from_slice(&round.answers[0].1).expect("JSON");
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(
        metric(&round.metrics, "sluice_proxy_coalesce_eligible_total"),
        20.0
    );
    assert_eq!(
        metric(&round.metrics, "sluice_egress_coalesced_total"),
        19.0
    );
    assert_eq!(metric(&round.metrics, "sluice_egress_attempts_total"), 1.0);
    assert_eq!(
        metric(
            &round.metrics,
            "sluice_proxy_responses_total{source=\"upstream\",class=\"2xx\"}"
        ),
        20.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_different_credentials_never_share_an_answer() {
    let body = chat_body("What is 2 + 2?", Some(5));
    let requests = (0..20)
        .map(|i| {
            let key = if i % 2 == 0 {
                "Bearer sk-a"
            } else {
                "Bearer sk-b"
            };
            chat_post(key, &body)
        })
        .collect();
    let round = round(true, requests, "/v1/chat/completions").await;
    assert!(round.answers.iter().all(|(status, _)| *status == 200));
    assert!(
        round.upstream_requests >= 2,
        "the upstream saw {}",
        round.upstream_requests
    );
    let by_key = |parity: usize| {
        round
            .answers
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == parity)
            .map(|(_, (_, body))| body.clone())
            .collect::<Vec<_>>()
    };
    let (a, b) = (by_key(0), by_key(1));
    assert!(
        a.iter().all(|body| !b.contains(body)),
        "an answer to one API key went to the other"
    );
    // Within one key, they still share.
    assert_eq!(round.upstream_requests, 2);
    assert_eq!(distinct(a), 1);
    assert_eq!(distinct(b), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_coalescing_every_request_makes_its_own_call() {
    let body = chat_body("What is 2 + 2?", Some(5));
    let requests = (0..20)
        .map(|_| chat_post("Bearer sk-test-secret", &body))
        .collect();
    let round = round(false, requests, "/v1/chat/completions").await;
    assert!(round.answers.iter().all(|(status, _)| *status == 200));
    assert_eq!(round.upstream_requests, 20);
    assert_eq!(distinct(round.answers.iter().map(|(_, b)| b.clone())), 20);
    assert_eq!(
        metric(&round.metrics, "sluice_proxy_coalesce_eligible_total"),
        0.0
    );
    assert_eq!(metric(&round.metrics, "sluice_egress_coalesced_total"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_requests_are_never_coalesced() {
    let mut body = chat_body("Tell me a story.", Some(5));
    body["stream"] = json!(true);
    let mut requests: Vec<_> = (0..5)
        .map(|_| chat_post("Bearer sk-test-secret", &body))
        .collect();
    // Asking for events by header, with a body that does not say so.
    let plain = chat_body("Tell me a story.", Some(5));
    requests.extend((0..5).map(|_| {
        let mut request = chat_post("Bearer sk-test-secret", &plain);
        request.headers_mut().insert(
            "accept",
            http::HeaderValue::from_static("text/event-stream"),
        );
        request
    }));
    let round = round(true, requests, "/v1/chat/completions").await;
    assert!(
        round.answers.iter().all(|(status, _)| *status == 200),
        "{:?}",
        round.answers
    );
    assert_eq!(round.upstream_requests, 10, "each made its own call");
    for (_, body) in &round.answers[..5] {
        let text = String::from_utf8_lossy(body);
        assert!(text.contains("data: [DONE]"), "a stream: {text}");
    }
    assert_eq!(
        metric(&round.metrics, "sluice_proxy_coalesce_eligible_total"),
        0.0
    );
    assert_eq!(metric(&round.metrics, "sluice_proxy_streams_total"), 5.0);
}

/// The egress configuration of `sluice proxy --max-concurrency max`: at most `max` calls
/// to the upstream at once.
fn at_most(max: u32) -> EgressConfig {
    let mut config = egress_config("fake-openai");
    config.concurrency.max = max;
    config.concurrency.initial = config.concurrency.initial.min(max);
    config.concurrency.min = config.concurrency.min.min(max);
    config
}

/// A chat completion request for a stream of `max_tokens` words, with its usage at the end.
fn stream_body(prompt: &str, max_tokens: u64) -> Value {
    let mut body = chat_body(prompt, Some(max_tokens));
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    body
}

/// The `data:` payloads of a server-sent event stream, and the text of their deltas.
fn stream_content(text: &str) -> (Vec<&str>, String) {
    let events: Vec<&str> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    let content = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|e| {
            e.pointer("/choices/0/delta/content")?
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    (events, content)
}

/// Waits (polling, up to a generous bound) until `done` holds; whether it did.
async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_hold_their_concurrency_slot_until_they_end() {
    const CHUNKS: u64 = 8;
    const STREAMS: usize = 6;
    const WORDS: u64 = 40;
    // Each stream lasts about a second (11 events, 100 ms apart).
    let (upstream, server) = fake(FakeUpstreamConfig {
        stream: StreamConfig {
            chunks: CHUNKS,
            interval: Duration::from_millis(100),
        },
        ..FakeUpstreamConfig::default()
    })
    .await;
    let egress = Egress::new(at_most(2)).expect("a valid config");
    let proxy = Proxy::start(ProxyConfig::new(&server.url()).expect("valid"), egress).await;
    let url = proxy.url("/v1/chat/completions");

    let tasks: Vec<_> = (0..STREAMS)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let body = stream_body(&format!("stream {i}"), WORDS);
                let (_, _, text) =
                    read_stream(&http_client(), post(&url, &body), Instant::now()).await;
                text
            })
        })
        .collect();
    for task in tasks {
        let text = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("every stream ends")
            .expect("a client task");
        let (events, content) = stream_content(&text);
        // The content chunks, the finish, the usage, [DONE].
        assert_eq!(events.len(), usize::try_from(CHUNKS).unwrap() + 3, "{text}");
        assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
        assert_eq!(content, "tok ".repeat(40).trim_end(), "{text}");
    }
    // The client has every byte a moment before the proxy's relay and the fake see their
    // ends: wait for those.
    assert!(
        eventually(|| upstream.stream_stats().completed == 6).await,
        "{:?}",
        upstream.stream_stats()
    );
    assert!(
        eventually(|| proxy.egress.stats().in_flight == 0).await,
        "{:?}",
        proxy.egress.stats()
    );
    let streams = upstream.stream_stats();
    println!("{STREAMS} streams through a proxy of at most 2 calls: {streams:?}");
    assert_eq!((streams.started, streams.completed), (6, 6));
    assert_eq!(
        streams.max_open, 2,
        "the upstream had {} streams open at once through a proxy allowed 2",
        streams.max_open
    );
    let stats = proxy.egress.stats();
    assert_eq!(
        (stats.in_flight, stats.attempts, stats.succeeded),
        (0, 6, 6)
    );
    proxy.stop().await;
}

/// A fake whose streams are 300 events 100 ms apart (half a minute, if read to the end),
/// behind a proxy allowed one call at a time.
async fn long_streams_through_one_slot() -> (
    FakeUpstream,
    FakeServer,
    Proxy<sluice_store::MemoryStore<TokioClock>>,
) {
    let (upstream, server) = fake(FakeUpstreamConfig {
        stream: StreamConfig {
            chunks: 300,
            interval: Duration::from_millis(100),
        },
        ..FakeUpstreamConfig::default()
    })
    .await;
    let egress = Egress::new(at_most(1)).expect("a valid config");
    let proxy = Proxy::start(ProxyConfig::new(&server.url()).expect("valid"), egress).await;
    (upstream, server, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_stream_gives_its_slot_back() {
    let (upstream, _server, proxy) = long_streams_through_one_slot().await;
    let url = proxy.url("/v1/chat/completions");

    let leaving = http_client();
    let response = leaving
        .request(post(&url, &stream_body("a long story", 300)))
        .await
        .expect("the proxy answers");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = body.frame().await.expect("a first frame").expect("a frame");
    assert!(first.data_ref().is_some_and(|d| d.starts_with(b"data: ")));
    assert_eq!(
        proxy.egress.stats().in_flight,
        1,
        "the stream holds the one slot while it is relayed"
    );
    drop(body);
    drop(leaving);

    // The next call needs that slot: it gets it when the proxy sees the client gone, long
    // before the stream would have ended.
    let next = tokio::time::timeout(
        Duration::from_secs(20),
        send(&http_client(), post(&url, &chat_body("hi", Some(5)))),
    )
    .await
    .expect("the slot of the stream the client left was given back");
    assert_eq!(next.status(), 200);
    // The answer's relay gives its slot back a moment after the client has it all.
    assert!(
        eventually(|| proxy.egress.stats().in_flight == 0).await,
        "{:?}",
        proxy.egress.stats()
    );
    // The upstream saw the stream closed, not completed.
    assert!(
        eventually(|| upstream.stream_stats().open == 0).await,
        "{:?}",
        upstream.stream_stats()
    );
    let streams = upstream.stream_stats();
    assert_eq!((streams.started, streams.completed), (1, 0), "{streams:?}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_upstream_breaks_off_gives_its_slot_back() {
    let (_upstream, server, proxy) = long_streams_through_one_slot().await;
    let client = http_client();
    let response = client
        .request(post(
            &proxy.url("/v1/chat/completions"),
            &stream_body("a long story", 300),
        ))
        .await
        .expect("the proxy answers");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    body.frame().await.expect("a first frame").expect("a frame");
    assert_eq!(proxy.egress.stats().in_flight, 1);

    // The upstream goes away mid-stream: its connections close.
    server.shutdown().await;
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match body.frame().await {
                Some(Ok(_)) => {}
                Some(Err(_)) => return true,
                None => return false,
            }
        }
    })
    .await
    .expect("the relayed stream ends");
    assert!(ended, "the client sees the stream broken off, not complete");
    assert!(
        eventually(|| proxy.egress.stats().in_flight == 0).await,
        "the slot of the broken stream was never given back"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_waiting_in_line_past_its_max_wait_gets_a_429_at_once_and_nothing_is_sent() {
    let (upstream, server) = fake(FakeUpstreamConfig {
        latency: Duration::from_secs(3),
        ..FakeUpstreamConfig::default()
    })
    .await;
    let config = ProxyConfig::new(&server.url()).expect("a valid config");
    let mut egress = egress_config("fake-openai");
    egress.concurrency = ConcurrencyConfig {
        initial: 1,
        min: 1,
        max: 1,
        ..ConcurrencyConfig::default()
    };
    let egress = Egress::new(egress).expect("a valid config");
    let proxy = Proxy::start(config, egress).await;
    let url = proxy.url("/v1/chat/completions");

    // The one slot is busy for three seconds.
    let busy = {
        let request = post(&url, &chat_body("slow", Some(5)));
        tokio::spawn(async move { send(&http_client(), request).await.status() })
    };
    assert!(eventually(|| proxy.egress.stats().in_flight == 1).await);

    // Two callers that may wait 200 ms: one holds the turn and waits for the slot, the
    // other waits for the turn. Both leave the line at their deadline.
    let impatient = |n: u32| {
        let mut request = post(&url, &chat_body(&format!("impatient {n}"), Some(5)));
        request
            .headers_mut()
            .insert(MAX_WAIT_HEADER, http::HeaderValue::from_static("200ms"));
        tokio::spawn(async move {
            let started = Instant::now();
            let answer = send(&http_client(), request).await;
            (answer, started.elapsed())
        })
    };
    let (first, second) = (impatient(1), impatient(2));
    for task in [first, second] {
        let (answer, took) = task.await.expect("a client task");
        assert_eq!(answer.status(), 429);
        let problem = json_body(&answer);
        assert_eq!(problem["type"], "https://sluice.dev/problems/would-wait");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("after 200ms (max_wait)"), "{detail}");
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_millis(700),
            "answered after {took:?}"
        );
    }
    assert_eq!(upstream.stats().requests, 1, "nothing was sent for them");
    assert_eq!(busy.await.expect("the busy call"), 200);
    assert_eq!(upstream.stats().requests, 1);
    proxy.stop().await;
}
