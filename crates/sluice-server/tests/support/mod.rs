//! A server started in this process on port-0 listeners, with clients for both protocols.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "a support module shared by test binaries that each use a part"
)]

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::PathBuf;
use std::time::Duration;

use axum::body::Bytes;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use sluice_server::{ConnectionLimits, ServeOptions, Spawned};
use tonic::transport::Channel;

/// The admin token every test server is started with.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// How long a test waits for something asynchronous (a reload) before failing.
const PATIENCE: Duration = Duration::from_secs(10);

/// A `/v1/check` body: one descriptor per entry list.
pub fn check_body(domain: &str, descriptors: &[&[(&str, &str)]], hits: Option<u64>) -> Value {
    let descriptors: Vec<Value> = descriptors
        .iter()
        .map(|entries| {
            let entries: Vec<Value> = entries
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect();
            json!({ "entries": entries })
        })
        .collect();
    let mut body = json!({"domain": domain, "descriptors": descriptors});
    if let Some(hits) = hits {
        body["hits"] = json!(hits);
    }
    body
}

fn json_or_null(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}

/// An HTTP JSON client of one server.
#[derive(Clone, Debug)]
pub struct Client {
    pub http_addr: SocketAddr,
    client: HyperClient<HttpConnector, Full<Bytes>>,
}

impl Client {
    fn new(http_addr: SocketAddr) -> Self {
        Self {
            http_addr,
            client: HyperClient::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Sends one request; returns the status, the headers and the body bytes.
    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Bytes,
        token: Option<&str>,
    ) -> (u16, http::HeaderMap, Bytes) {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.http_addr));
        if let Some(token) = token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Full::new(body)).expect("a request");
        let response = self
            .client
            .request(request)
            .await
            .expect("the server answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        (status, headers, bytes)
    }

    /// POSTs raw bytes; returns the status, the body as JSON (Null if not JSON) and the
    /// content type.
    pub async fn post_raw(&self, path: &str, body: String) -> (u16, Value, String) {
        let (status, headers, bytes) = self.send("POST", path, Bytes::from(body), None).await;
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        (status, json_or_null(&bytes), content_type)
    }

    /// Any request with an optional JSON body and bearer token; returns the status, the
    /// JSON answer (Null if not JSON) and the headers.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        token: Option<&str>,
    ) -> (u16, Value, http::HeaderMap) {
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let (status, headers, bytes) = self.send(method, path, body, token).await;
        (status, json_or_null(&bytes), headers)
    }

    /// An admin call with the test token; returns the status and the JSON answer.
    pub async fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let (status, value, _) = self.call(method, path, body, Some(ADMIN_TOKEN)).await;
        (status, value)
    }

    /// POSTs JSON; returns the status and the JSON answer.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, value, _) = self.post_raw(path, body.to_string()).await;
        (status, value)
    }

    /// GETs a path; returns the status and the body text.
    pub async fn get_raw(&self, path: &str) -> (u16, String) {
        let (status, _, bytes) = self.send("GET", path, Bytes::new(), None).await;
        (status, String::from_utf8(bytes.to_vec()).expect("UTF-8"))
    }

    /// GETs JSON.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let (status, text) = self.get_raw(path).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// GETs text.
    pub async fn get_text(&self, path: &str) -> String {
        self.get_raw(path).await.1
    }
}

/// A running server with its config file in a temporary directory.
#[derive(Debug)]
pub struct TestServer {
    client: Client,
    pub grpc_addr: SocketAddr,
    pub config_file: PathBuf,
    dir: PathBuf,
    server: Option<Spawned>,
}

impl Deref for TestServer {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

pub use sluice_testkit::temp_dir;

impl TestServer {
    /// Serves `config` (YAML) on the in-memory store, watching its file.
    pub async fn start(config: &str) -> Self {
        Self::start_with(config, false).await
    }

    /// Same, choosing whether RLS answers carry RateLimit headers.
    pub async fn start_with(config: &str, ratelimit_headers: bool) -> Self {
        let dir = temp_dir("serve");
        let config_file = dir.join("config.yaml");
        std::fs::write(&config_file, config).expect("config written");
        let options = ServeOptions {
            config_path: Some(config_file.clone()),
            redis: None,
            ratelimit_headers,
            watch: true,
            admin_token: Some(ADMIN_TOKEN.to_owned()),
            overrides_file: None,
            connections: ConnectionLimits::default(),
        };
        Self::start_options(options, dir, config_file).await
    }

    /// Serves `config` with `adjust` applied to the default test options (admin token
    /// set, file watched).
    pub async fn start_adjusted(config: &str, adjust: impl FnOnce(&mut ServeOptions)) -> Self {
        let dir = temp_dir("serve");
        let config_file = dir.join("config.yaml");
        std::fs::write(&config_file, config).expect("config written");
        let mut options = ServeOptions {
            config_path: Some(config_file.clone()),
            redis: None,
            ratelimit_headers: false,
            watch: true,
            admin_token: Some(ADMIN_TOKEN.to_owned()),
            overrides_file: None,
            connections: ConnectionLimits::default(),
        };
        adjust(&mut options);
        Self::start_options(options, dir, config_file).await
    }

    /// The temporary directory holding the config.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    async fn start_options(options: ServeOptions, dir: PathBuf, config_file: PathBuf) -> Self {
        let server = sluice_server::spawn(options)
            .await
            .expect("the server starts");
        Self {
            client: Client::new(server.http),
            grpc_addr: server.grpc,
            config_file,
            dir,
            server: Some(server),
        }
    }

    /// A client to use from another task.
    pub fn clone_client(&self) -> Client {
        self.client.clone()
    }

    /// A gRPC RLS client.
    pub async fn grpc(&self) -> RateLimitServiceClient<Channel> {
        RateLimitServiceClient::connect(format!("http://{}", self.grpc_addr))
            .await
            .expect("gRPC connects")
    }

    /// Replaces the config file as editors do: write a new file, rename it over the old.
    pub fn write_config(&self, text: &str) {
        let staged = self.dir.join(".config.yaml.tmp");
        std::fs::write(&staged, text).expect("staged");
        std::fs::rename(&staged, &self.config_file).expect("renamed");
    }

    /// Waits until the server serves config version `version`.
    pub async fn wait_for_version(&self, version: u64) {
        self.wait_until(|s| async move { s.get("/v1/limits").await.1["version"] == version })
            .await;
    }

    /// Waits until `/metrics` has `line`.
    pub async fn wait_for_metric(&self, line: &str) {
        self.wait_until(|s| async move { s.get_text("/metrics").await.lines().any(|l| l == line) })
            .await;
    }

    pub async fn wait_until<F, Fut>(&self, mut condition: F)
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !condition(self.client.clone()).await {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Shuts the server down gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.expect("the server stopped cleanly");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
