//! Load generator for `sluice serve` (and for the `ceiling` example): drives the HTTP JSON
//! API (`POST /v1/check`) or the Envoy RLS v3 gRPC service (`ShouldRateLimit`) and reports
//! decisions per second, latency percentiles and the count of `OK`, `OVER_LIMIT` and
//! errors.
//!
//! It shares the machine's CPUs with the server it measures, so it is built to be cheap:
//! one runtime thread by default (`--threads`), request bodies serialized once per key
//! before the run, kept-alive connections (HTTP/1.1 through hyper's connection API, one
//! request in flight per connection; gRPC over h2 connections, several streams each) and a
//! fixed-size log-linear latency histogram per worker (about 3% resolution).
//!
//! Two modes:
//!
//! - **closed loop** (default): `--concurrency` workers each send their next request as
//!   soon as the previous one is answered. Latency is measured from the send.
//! - **open loop** (`--rate R`): requests are scheduled at `R` per second, independent of
//!   the answers, and at most `--concurrency` are in flight. Latency is measured from each
//!   request's *scheduled* send time, so a stalled server is charged for the requests that
//!   waited behind it (no coordinated omission). A pacer thread releases the scheduled
//!   requests, `--lead` (100 µs) ahead of time because waking a worker from another
//!   thread takes tens of microseconds here; a request that still goes out early is timed
//!   from its actual send. The delay between schedule and actual send ("send lag": mean,
//!   p99, max) is reported, so the generator's own share of the latency is visible.
//!
//! Requests cycle through `--keys` distinct descriptor values (`user` = `0`, `1`, ...), so
//! the server does per-key work. The first `--warmup` of the run is not counted.
//!
//! ```text
//! cargo run --release -p sluice-server --example loadgen -- \
//!     --http http://127.0.0.1:8080 --concurrency 64 --duration 10s
//! cargo run --release -p sluice-server --example loadgen -- \
//!     --grpc http://127.0.0.1:8081 --connections 4 --concurrency 40 --json
//! cargo run --release -p sluice-server --example loadgen -- \
//!     --http http://127.0.0.1:8080 --concurrency 64 --rate 40000
//! ```
#![allow(
    clippy::disallowed_types,
    reason = "a load generator measures real elapsed time: it needs the OS clock (std::time::Instant)"
)]

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BufMut;
use clap::{ArgGroup, Parser, ValueEnum};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use http::header::{CONTENT_TYPE, HOST, TE};
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use sluice_core::time::parse_duration;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};

/// The RLS method every gRPC request calls.
const RLS_PATH: &str = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";
/// The HTTP check path used when `--http` names none.
const CHECK_PATH: &str = "/v1/check";
/// Pause after a failed request, so a dead server does not turn the generator into a
/// busy loop.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Drive `sluice serve` (or any server with the same contracts) at a fixed concurrency or
/// a fixed rate, and report throughput and latency.
#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    group(ArgGroup::new("target").required(true).args(["http", "grpc"])),
    after_help = "Examples:\n  \
        loadgen --http http://127.0.0.1:8080 --concurrency 64\n  \
        loadgen --grpc http://127.0.0.1:8081 --connections 4 --concurrency 40 --json\n  \
        loadgen --http http://127.0.0.1:8080 --concurrency 64 --rate 40000 --duration 10s"
)]
struct Args {
    /// Drive the HTTP JSON API at this URL (the path defaults to /v1/check).
    #[arg(long, value_name = "URL")]
    http: Option<Uri>,

    /// Drive the Envoy RLS v3 gRPC service at this URL, e.g. http://127.0.0.1:8081.
    #[arg(long, value_name = "URL")]
    grpc: Option<Uri>,

    /// Connections to open. HTTP/1.1 carries one request at a time per connection, so for
    /// --http this defaults to (and must equal) --concurrency. For --grpc the in-flight
    /// requests are spread as h2 streams over these connections (default 1).
    #[arg(long, value_name = "N")]
    connections: Option<usize>,

    /// Requests in flight in total (closed loop: workers; open loop: the most in flight).
    #[arg(long, value_name = "N", default_value_t = 32)]
    concurrency: usize,

    /// How long to measure, after the warmup: e.g. 10s, 500ms, 1m.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration_arg)]
    duration: Duration,

    /// Measure this many requests instead of a duration (closed loop only).
    #[arg(long, value_name = "N", conflicts_with = "rate")]
    requests: Option<u64>,

    /// Uncounted run before measuring (connections are opened before it).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = duration_arg)]
    warmup: Duration,

    /// Open loop: schedule this many requests per second, whatever the answers, and
    /// measure latency from each scheduled send time.
    #[arg(long, value_name = "PER_SECOND", value_parser = clap::value_parser!(u64).range(1..))]
    rate: Option<u64>,

    /// Open loop: release each request this long before its scheduled time, to absorb
    /// the time it takes to wake a worker (a request sent early is timed from its actual
    /// send, one sent late from its schedule).
    #[arg(long, value_name = "DURATION", default_value = "100us", value_parser = duration_arg)]
    lead: Duration,

    /// Distinct descriptor values to cycle through.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    keys: u64,

    /// The request's domain.
    #[arg(long, value_name = "NAME", default_value = "bench")]
    domain: String,

    /// The descriptor entry's key; its value is the key number.
    #[arg(long, value_name = "KEY", default_value = "user")]
    descriptor_key: String,

    /// Units each request asks for (`hits` / `hits_addend`).
    #[arg(long, value_name = "N", default_value_t = 1)]
    hits: u32,

    /// Runtime threads of the generator (1 = a current-thread runtime).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    threads: u64,

    /// gRPC client: tonic channels (the default), or hyper's h2 client with hand-made gRPC
    /// framing (less client CPU).
    #[arg(long, value_enum, default_value_t = GrpcClient::Tonic)]
    grpc_client: GrpcClient,

    /// Print one JSON object on one line instead of the text report.
    #[arg(long)]
    json: bool,
}

/// Which gRPC client implementation to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GrpcClient {
    /// `tonic::client::Grpc` over a `tonic::transport::Channel` per connection.
    Tonic,
    /// `hyper::client::conn::http2` per connection, gRPC framing by hand.
    Raw,
}

fn duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::try_from(args.threads).unwrap_or(1))
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("loadgen: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("loadgen: {error}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------
// Targets and connections
// ---------------------------------------------------------------------------------------

/// Where and how to send HTTP/1.1 checks.
#[derive(Debug)]
struct HttpTarget {
    /// `host:port` to connect to.
    addr: String,
    /// The request target, e.g. `/v1/check`.
    path: Uri,
    /// The `Host` header.
    host: HeaderValue,
}

impl HttpTarget {
    fn new(url: &Uri) -> Result<Self, String> {
        let addr = authority_of(url, 80)?;
        let path = match url.path_and_query().map(PathAndQuery::as_str) {
            None | Some("/" | "") => CHECK_PATH,
            Some(path) => path,
        };
        let path = path
            .parse::<Uri>()
            .map_err(|e| format!("bad path in {url}: {e}"))?;
        let host = HeaderValue::from_str(&addr).map_err(|e| format!("bad host in {url}: {e}"))?;
        Ok(Self { addr, path, host })
    }

    async fn connect(&self) -> Result<http1::SendRequest<Full<Bytes>>, String> {
        let tcp = TcpStream::connect(&self.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        tcp.set_nodelay(true)
            .map_err(|e| format!("TCP_NODELAY: {e}"))?;
        let (sender, connection) = http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("HTTP/1.1 handshake with {}: {e}", self.addr))?;
        tokio::spawn(async move {
            // The worker sees the failure on its next request.
            let _ = connection.await;
        });
        Ok(sender)
    }
}

/// `host:port` of a URL, with the scheme's default port when it names none.
fn authority_of(url: &Uri, default_port: u16) -> Result<String, String> {
    let host = url
        .host()
        .ok_or_else(|| format!("{url}: the URL names no host"))?;
    Ok(format!("{host}:{}", url.port_u16().unwrap_or(default_port)))
}

/// One h2 connection for the raw gRPC client.
async fn connect_h2(addr: &str) -> Result<http2::SendRequest<Full<Bytes>>, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_nodelay(true)
        .map_err(|e| format!("TCP_NODELAY: {e}"))?;
    let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .map_err(|e| format!("h2 handshake with {addr}: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// A gRPC codec whose requests are already-encoded `RateLimitRequest`s and whose
/// responses decode to their `overall_code`.
#[derive(Debug, Clone, Copy, Default)]
struct PreEncoded;

impl Codec for PreEncoded {
    type Encode = Bytes;
    type Decode = i32;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        Self
    }

    fn decoder(&mut self) -> Self {
        Self
    }
}

impl Encoder for PreEncoded {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for PreEncoded {
    type Item = i32;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<i32>, tonic::Status> {
        RateLimitResponse::decode(src)
            .map(|response| Some(response.overall_code))
            .map_err(|e| tonic::Status::internal(format!("bad RateLimitResponse: {e}")))
    }
}

/// What the server decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// `OK`.
    Ok,
    /// `OVER_LIMIT`.
    OverLimit,
}

/// `overall_code` of the RLS enum: 1 = OK, 2 = OVER_LIMIT.
fn verdict_of_code(code: i32) -> Result<Verdict, String> {
    match code {
        1 => Ok(Verdict::Ok),
        2 => Ok(Verdict::OverLimit),
        other => Err(format!("overall_code {other}")),
    }
}

/// `overall_code` of a `/v1/check` JSON body, found without parsing the rest.
fn verdict_of_json(body: &[u8]) -> Result<Verdict, String> {
    const FIELD: &[u8] = b"\"overall_code\"";
    let at = body
        .windows(FIELD.len())
        .position(|w| w == FIELD)
        .ok_or_else(|| format!("no overall_code in {}", String::from_utf8_lossy(body)))?;
    let rest = &body[at + FIELD.len()..];
    let rest = rest.trim_ascii_start();
    let rest = rest.strip_prefix(b":").unwrap_or(rest).trim_ascii_start();
    if rest.starts_with(b"\"OK\"") {
        Ok(Verdict::Ok)
    } else if rest.starts_with(b"\"OVER_LIMIT\"") {
        Ok(Verdict::OverLimit)
    } else {
        Err(format!(
            "unexpected overall_code in {}",
            String::from_utf8_lossy(body)
        ))
    }
}

/// One worker's way to the server.
enum Conn {
    /// One HTTP/1.1 connection of its own.
    Http1 {
        sender: http1::SendRequest<Full<Bytes>>,
        target: Arc<HttpTarget>,
        content_type: HeaderValue,
    },
    /// A clone of a tonic client over a shared channel (one h2 connection).
    Tonic {
        grpc: tonic::client::Grpc<Channel>,
        path: PathAndQuery,
    },
    /// A clone of a shared hyper h2 connection.
    Raw {
        sender: http2::SendRequest<Full<Bytes>>,
        uri: Uri,
        content_type: HeaderValue,
        te: HeaderValue,
    },
}

impl Conn {
    /// Sends one request whose body is `body` and reads the decision.
    async fn call(&mut self, body: &Bytes) -> Result<Verdict, String> {
        match self {
            Self::Http1 {
                sender,
                target,
                content_type,
            } => {
                if sender.is_closed() {
                    *sender = target.connect().await?;
                }
                sender.ready().await.map_err(|e| e.to_string())?;
                let request = Request::builder()
                    .method(Method::POST)
                    .uri(target.path.clone())
                    .header(HOST, target.host.clone())
                    .header(CONTENT_TYPE, content_type.clone())
                    .body(Full::new(body.clone()))
                    .map_err(|e| e.to_string())?;
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(|e| e.to_string())?;
                let status = response.status();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?
                    .to_bytes();
                match status {
                    StatusCode::OK => verdict_of_json(&body),
                    StatusCode::TOO_MANY_REQUESTS => Ok(Verdict::OverLimit),
                    other => Err(format!("HTTP {other}: {}", String::from_utf8_lossy(&body))),
                }
            }
            Self::Tonic { grpc, path } => {
                grpc.ready().await.map_err(|e| e.to_string())?;
                let response = grpc
                    .unary(tonic::Request::new(body.clone()), path.clone(), PreEncoded)
                    .await
                    .map_err(|status| format!("gRPC {:?}: {}", status.code(), status.message()))?;
                verdict_of_code(response.into_inner())
            }
            Self::Raw {
                sender,
                uri,
                content_type,
                te,
            } => {
                sender.ready().await.map_err(|e| e.to_string())?;
                let request = Request::builder()
                    .method(Method::POST)
                    .uri(uri.clone())
                    .header(CONTENT_TYPE, content_type.clone())
                    .header(TE, te.clone())
                    .body(Full::new(body.clone()))
                    .map_err(|e| e.to_string())?;
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(|e| e.to_string())?;
                if response.status() != StatusCode::OK {
                    return Err(format!("HTTP {} on the gRPC route", response.status()));
                }
                // A trailers-only response carries grpc-status in its headers.
                if let Some(status) = response.headers().get("grpc-status") {
                    return Err(format!("gRPC status {status:?} (trailers-only)"));
                }
                let collected = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?;
                match collected.trailers().and_then(|t| t.get("grpc-status")) {
                    Some(status) if status == "0" => {}
                    Some(status) => return Err(format!("gRPC status {status:?}")),
                    None => return Err("gRPC response without grpc-status".to_owned()),
                }
                let data = collected.to_bytes();
                let message = data
                    .get(5..)
                    .ok_or_else(|| "gRPC response shorter than its frame header".to_owned())?;
                let response = RateLimitResponse::decode(message)
                    .map_err(|e| format!("bad RateLimitResponse: {e}"))?;
                verdict_of_code(response.overall_code)
            }
        }
    }
}

/// One pre-serialized request per key.
fn bodies(args: &Args, grpc: bool, framed: bool) -> Result<Arc<[Bytes]>, String> {
    (0..args.keys)
        .map(|key| {
            let value = key.to_string();
            if grpc {
                let message = RateLimitRequest {
                    domain: args.domain.clone(),
                    descriptors: vec![RateLimitDescriptor {
                        entries: vec![Entry {
                            key: args.descriptor_key.clone(),
                            value,
                        }],
                        ..RateLimitDescriptor::default()
                    }],
                    hits_addend: args.hits,
                }
                .encode_to_vec();
                if framed {
                    let len = u32::try_from(message.len())
                        .map_err(|_| "request too large for one gRPC frame".to_owned())?;
                    let mut frame = Vec::with_capacity(5 + message.len());
                    frame.push(0); // not compressed
                    frame.extend_from_slice(&len.to_be_bytes());
                    frame.extend_from_slice(&message);
                    Ok(Bytes::from(frame))
                } else {
                    Ok(Bytes::from(message))
                }
            } else {
                let body = serde_json::json!({
                    "domain": args.domain,
                    "descriptors": [{"entries": [{"key": args.descriptor_key, "value": value}]}],
                    "hits": args.hits,
                });
                serde_json::to_vec(&body)
                    .map(Bytes::from)
                    .map_err(|e| e.to_string())
            }
        })
        .collect()
}

/// Opens the connections and returns one `Conn` per worker.
async fn open(args: &Args) -> Result<(Vec<Conn>, usize, String), String> {
    let concurrency = args.concurrency;
    if concurrency == 0 {
        return Err("--concurrency must be at least 1".to_owned());
    }
    if let Some(url) = &args.http {
        let connections = args.connections.unwrap_or(concurrency);
        if connections != concurrency {
            return Err(format!(
                "HTTP/1.1 carries one request at a time per connection: --connections \
                 ({connections}) must equal --concurrency ({concurrency})"
            ));
        }
        let target = Arc::new(HttpTarget::new(url)?);
        let content_type = HeaderValue::from_static("application/json");
        let mut conns = Vec::with_capacity(concurrency);
        for _ in 0..concurrency {
            conns.push(Conn::Http1 {
                sender: target.connect().await?,
                target: Arc::clone(&target),
                content_type: content_type.clone(),
            });
        }
        let shown = format!("http://{}{}", target.addr, target.path);
        return Ok((conns, connections, shown));
    }
    let url = args
        .grpc
        .as_ref()
        .ok_or_else(|| "one of --http or --grpc is required".to_owned())?;
    let connections = args.connections.unwrap_or(1);
    if connections == 0 || connections > concurrency {
        return Err(format!(
            "--connections ({connections}) must be between 1 and --concurrency ({concurrency})"
        ));
    }
    let addr = authority_of(url, 80)?;
    let shown = format!("grpc://{addr}{RLS_PATH}");
    let mut conns = Vec::with_capacity(concurrency);
    match args.grpc_client {
        GrpcClient::Tonic => {
            let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| format!("bad --grpc URL {url}: {e}"))?
                .tcp_nodelay(true);
            let path = PathAndQuery::from_static(RLS_PATH);
            let mut channels = Vec::with_capacity(connections);
            for _ in 0..connections {
                // Each `connect` opens its own h2 connection.
                let channel = endpoint
                    .connect()
                    .await
                    .map_err(|e| format!("connect {addr}: {e} ({e:?})"))?;
                channels.push(tonic::client::Grpc::new(channel));
            }
            for i in 0..concurrency {
                conns.push(Conn::Tonic {
                    grpc: channels[i % connections].clone(),
                    path: path.clone(),
                });
            }
        }
        GrpcClient::Raw => {
            let uri: Uri = format!("http://{addr}{RLS_PATH}")
                .parse()
                .map_err(|e| format!("bad --grpc URL {url}: {e}"))?;
            let mut senders = Vec::with_capacity(connections);
            for _ in 0..connections {
                senders.push(connect_h2(&addr).await?);
            }
            for i in 0..concurrency {
                conns.push(Conn::Raw {
                    sender: senders[i % connections].clone(),
                    uri: uri.clone(),
                    content_type: HeaderValue::from_static("application/grpc"),
                    te: HeaderValue::from_static("trailers"),
                });
            }
        }
    }
    Ok((conns, connections, shown))
}

// ---------------------------------------------------------------------------------------
// Latency histogram
// ---------------------------------------------------------------------------------------

/// Sub-buckets per power of two: 2^5 = 32, so a bucket is at most ~3% wide.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * (1 << SUB_BITS);

/// A log-linear histogram of nanosecond values: exact below 32 ns, then 32 buckets per
/// power of two.
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum: u128,
    max: u64,
}

impl Histogram {
    fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            sum: 0,
            max: 0,
        }
    }

    fn index(value: u64) -> usize {
        let index = if value < SUB {
            value
        } else {
            let msb = 63 - value.leading_zeros();
            let shift = msb - SUB_BITS;
            // (value >> shift) is in [SUB, 2 * SUB).
            u64::from(shift + 1) * SUB + ((value >> shift) - SUB)
        };
        usize::try_from(index)
            .unwrap_or(BUCKETS - 1)
            .min(BUCKETS - 1)
    }

    /// The middle of a bucket.
    fn value_at(index: usize) -> u64 {
        let index = index as u64;
        if index < SUB {
            return index;
        }
        let group = index / SUB; // = shift + 1
        let mantissa = index % SUB + SUB;
        let width = 1u64 << (group - 1);
        (mantissa << (group - 1)).saturating_add(width / 2)
    }

    fn record(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.counts[Self::index(nanos)] += 1;
        self.total += 1;
        self.sum += u128::from(nanos);
        self.max = self.max.max(nanos);
    }

    fn merge(&mut self, other: &Self) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q` (0 < q <= 1), in nanoseconds.
    fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        // The rank is at most `total`, which fits in u64.
        let wanted = (q * self.total as f64).ceil().max(1.0);
        let mut seen = 0u64;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if count > 0 && seen as f64 >= wanted {
                return Self::value_at(index).min(self.max);
            }
        }
        self.max
    }

    fn mean(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            u64::try_from(self.sum / u128::from(self.total)).unwrap_or(u64::MAX)
        }
    }
}

// ---------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------

/// What one worker saw during the measured window.
struct Stats {
    latency: Histogram,
    ok: u64,
    over_limit: u64,
    errors: u64,
    first_error: Option<String>,
    /// Open loop: delay from scheduled to actual send.
    lag: Histogram,
    last_done: Option<Instant>,
}

impl Stats {
    fn new() -> Self {
        Self {
            latency: Histogram::new(),
            ok: 0,
            over_limit: 0,
            errors: 0,
            first_error: None,
            lag: Histogram::new(),
            last_done: None,
        }
    }

    fn record(&mut self, outcome: &Result<Verdict, String>, latency: Duration, done: Instant) {
        match outcome {
            Ok(verdict) => {
                self.latency.record(latency);
                match verdict {
                    Verdict::Ok => self.ok += 1,
                    Verdict::OverLimit => self.over_limit += 1,
                }
            }
            Err(error) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(error.clone());
                }
            }
        }
        self.last_done = Some(self.last_done.map_or(done, |last| last.max(done)));
    }

    fn merge(&mut self, other: &Self) {
        self.latency.merge(&other.latency);
        self.lag.merge(&other.lag);
        self.ok += other.ok;
        self.over_limit += other.over_limit;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        self.last_done = match (self.last_done, other.last_done) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

/// The shared timeline of a run.
struct Plan {
    /// When the warmup starts (and, open loop, when request 0 is scheduled).
    start: Instant,
    /// When counting starts.
    measure_from: Instant,
    /// When the last request may be sent (duration mode).
    end: Option<Instant>,
    /// Requests still to send (count mode).
    remaining: Option<AtomicI64>,
    /// Open loop only.
    open: Option<OpenLoop>,
}

/// The open-loop schedule: request `k` is due at `start + k / rate`.
struct OpenLoop {
    rate: u64,
    /// How far ahead of schedule the pacer releases requests.
    lead: Duration,
    permits: Arc<Semaphore>,
    tickets: AtomicU64,
}

impl OpenLoop {
    fn due(&self, start: Instant, ticket: u64) -> Instant {
        let nanos = u128::from(ticket) * 1_000_000_000 / u128::from(self.rate);
        start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// A closed-loop worker: next request as soon as the last one is answered.
async fn closed_loop(mut conn: Conn, plan: Arc<Plan>, bodies: Arc<[Bytes]>, first: usize) -> Stats {
    let mut stats = Stats::new();
    let mut key = first;
    loop {
        let sent = Instant::now();
        let counted = sent >= plan.measure_from;
        if counted {
            if plan.end.is_some_and(|end| sent >= end) {
                break;
            }
            if let Some(remaining) = &plan.remaining
                && remaining.fetch_sub(1, Ordering::Relaxed) <= 0
            {
                break;
            }
        }
        let outcome = conn.call(&bodies[key]).await;
        let done = Instant::now();
        key = if key + 1 == bodies.len() { 0 } else { key + 1 };
        if counted {
            stats.record(&outcome, done - sent, done);
        }
        if outcome.is_err() {
            tokio::time::sleep(ERROR_PAUSE).await;
        }
    }
    stats
}

/// An open-loop worker: sends each request the pacer releases, and measures from the
/// request's scheduled time.
async fn open_loop(mut conn: Conn, plan: Arc<Plan>, bodies: Arc<[Bytes]>, first: usize) -> Stats {
    let mut stats = Stats::new();
    let Some(open) = &plan.open else {
        return stats;
    };
    let mut key = first;
    // `acquire` fails once the pacer closes the semaphore at the end of the run.
    while let Ok(permit) = open.permits.acquire().await {
        permit.forget();
        let ticket = open.tickets.fetch_add(1, Ordering::Relaxed);
        let due = open.due(plan.start, ticket);
        let sent = Instant::now();
        let outcome = conn.call(&bodies[key]).await;
        let done = Instant::now();
        key = if key + 1 == bodies.len() { 0 } else { key + 1 };
        if due >= plan.measure_from {
            // Timed from the schedule when sent late (the wait is the server's or the
            // generator's queueing), from the send when the lead made it early.
            stats.record(
                &outcome,
                done.saturating_duration_since(due.min(sent)),
                done,
            );
            stats.lag.record(sent.saturating_duration_since(due));
        }
        if outcome.is_err() {
            tokio::time::sleep(ERROR_PAUSE).await;
        }
    }
    stats
}

/// The pacer thread: releases each scheduled request when it is due. Returns how many
/// requests were scheduled (released).
fn pace(plan: &Plan, open: &OpenLoop, end: Instant) -> u64 {
    let mut released = 0u64;
    loop {
        let now = Instant::now();
        if now >= end {
            open.permits.close();
            return released;
        }
        // Release what is due up to `lead` from now: waking a worker takes time.
        let horizon = (now + open.lead).min(end);
        let elapsed = (horizon - plan.start).as_nanos();
        let due =
            u64::try_from(elapsed * u128::from(open.rate) / 1_000_000_000 + 1).unwrap_or(u64::MAX);
        if due > released {
            open.permits
                .add_permits(usize::try_from(due - released).unwrap_or(usize::MAX >> 4));
            released = due;
        }
        let next = open.due(plan.start, released).min(end);
        std::thread::sleep(
            next.saturating_duration_since(Instant::now())
                .saturating_sub(open.lead),
        );
    }
}

/// Connects, runs, reports.
async fn run(args: Args) -> Result<(), String> {
    let grpc = args.grpc.is_some();
    let bodies = bodies(&args, grpc, args.grpc_client == GrpcClient::Raw)?;
    let (conns, connections, shown) = open(&args).await?;

    let start = Instant::now();
    let measure_from = start + args.warmup;
    let end = args
        .requests
        .is_none()
        .then(|| measure_from + args.duration);
    let plan = Arc::new(Plan {
        start,
        measure_from,
        end,
        remaining: args
            .requests
            .map(|n| AtomicI64::new(i64::try_from(n).unwrap_or(i64::MAX))),
        open: args.rate.map(|rate| OpenLoop {
            rate,
            lead: args.lead,
            permits: Arc::new(Semaphore::new(0)),
            tickets: AtomicU64::new(0),
        }),
    });

    let keys = bodies.len();
    let workers = conns.len();
    let mut handles = Vec::with_capacity(workers);
    for (i, conn) in conns.into_iter().enumerate() {
        // Spread the workers' starting keys over the key space.
        let first = i * keys / workers;
        let plan = Arc::clone(&plan);
        let bodies = Arc::clone(&bodies);
        handles.push(if plan.open.is_some() {
            tokio::spawn(open_loop(conn, plan, bodies, first))
        } else {
            tokio::spawn(closed_loop(conn, plan, bodies, first))
        });
    }
    let pacer = match (&plan.open, end) {
        (Some(_), Some(end)) => {
            let plan = Arc::clone(&plan);
            Some(std::thread::spawn(move || {
                plan.open.as_ref().map_or(0, |open| pace(&plan, open, end))
            }))
        }
        _ => None,
    };

    let mut total = Stats::new();
    for handle in handles {
        let stats = handle.await.map_err(|e| format!("a worker failed: {e}"))?;
        total.merge(&stats);
    }
    let scheduled = match pacer {
        Some(pacer) => Some(pacer.join().map_err(|_| "the pacer thread panicked")?),
        None => None,
    };

    let report = Report {
        protocol: if grpc { "grpc" } else { "http" },
        target: shown,
        connections,
        concurrency: args.concurrency,
        threads: args.threads,
        rate: args.rate,
        warmup: args.warmup,
        keys: args.keys,
        unsent: scheduled.and_then(|released| {
            plan.open
                .as_ref()
                .map(|open| released.saturating_sub(open.tickets.load(Ordering::Relaxed)))
        }),
        elapsed: total.last_done.map_or(Duration::ZERO, |last| {
            last.saturating_duration_since(measure_from)
        }),
        stats: total,
    };
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------------------

struct Report {
    protocol: &'static str,
    target: String,
    connections: usize,
    concurrency: usize,
    threads: u64,
    rate: Option<u64>,
    warmup: Duration,
    keys: u64,
    /// Open loop: requests released by the pacer but never sent.
    unsent: Option<u64>,
    elapsed: Duration,
    stats: Stats,
}

fn micros(nanos: u64) -> f64 {
    nanos as f64 / 1_000.0
}

fn human(nanos: u64) -> String {
    if nanos >= 10_000_000 {
        format!("{:.1} ms", nanos as f64 / 1e6)
    } else if nanos >= 1_000_000 {
        format!("{:.2} ms", nanos as f64 / 1e6)
    } else {
        format!("{} µs", nanos.div_ceil(1_000))
    }
}

impl Report {
    fn decisions(&self) -> u64 {
        self.stats.ok + self.stats.over_limit
    }

    fn per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.decisions() as f64 / secs
        } else {
            0.0
        }
    }

    fn json(&self) -> serde_json::Value {
        let latency = &self.stats.latency;
        let lag = &self.stats.lag;
        serde_json::json!({
            "protocol": self.protocol,
            "target": self.target,
            "connections": self.connections,
            "concurrency": self.concurrency,
            "threads": self.threads,
            "keys": self.keys,
            "rate": self.rate,
            "warmup_s": self.warmup.as_secs_f64(),
            "elapsed_s": self.elapsed.as_secs_f64(),
            "decisions": self.decisions(),
            "ok": self.stats.ok,
            "over_limit": self.stats.over_limit,
            "errors": self.stats.errors,
            "first_error": self.stats.first_error,
            "per_second": self.per_second().round(),
            "p50_us": micros(latency.quantile(0.50)),
            "p90_us": micros(latency.quantile(0.90)),
            "p99_us": micros(latency.quantile(0.99)),
            "p999_us": micros(latency.quantile(0.999)),
            "max_us": micros(latency.max),
            "mean_us": micros(latency.mean()),
            "send_lag_mean_us": self.rate.map(|_| micros(lag.mean())),
            "send_lag_p99_us": self.rate.map(|_| micros(lag.quantile(0.99))),
            "send_lag_max_us": self.rate.map(|_| micros(lag.max)),
            "unsent": self.unsent,
        })
    }

    fn text(&self) -> String {
        let latency = &self.stats.latency;
        let mut out = format!(
            "{} {}: {} connection{}, {} in flight, {} thread{}, {} keys\n",
            self.protocol,
            self.target,
            self.connections,
            if self.connections == 1 { "" } else { "s" },
            self.concurrency,
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            self.keys,
        );
        if let Some(rate) = self.rate {
            out.push_str(&format!(
                "  open loop at {rate}/s: send lag mean {}, p99 {}, max {}; {} released but unsent\n",
                human(self.stats.lag.mean()),
                human(self.stats.lag.quantile(0.99)),
                human(self.stats.lag.max),
                self.unsent.unwrap_or(0),
            ));
        }
        out.push_str(&format!(
            "  measured {:.2} s after {:.2} s warmup\n  decisions/s  {:.0}   ({} decisions: {} OK, {} OVER_LIMIT; {} errors)\n",
            self.elapsed.as_secs_f64(),
            self.warmup.as_secs_f64(),
            self.per_second(),
            self.decisions(),
            self.stats.ok,
            self.stats.over_limit,
            self.stats.errors,
        ));
        out.push_str(&format!(
            "  latency      p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {}\n",
            human(latency.quantile(0.50)),
            human(latency.quantile(0.90)),
            human(latency.quantile(0.99)),
            human(latency.quantile(0.999)),
            human(latency.max),
            human(latency.mean()),
        ));
        if let Some(error) = &self.stats.first_error {
            out.push_str(&format!("  first error: {error}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_contiguous_and_tight() {
        let mut previous = 0;
        for value in (0..100_000u64).chain([1 << 40, u64::MAX]) {
            let index = Histogram::index(value);
            assert!(index >= previous, "index goes down at {value}");
            previous = index;
            let middle = Histogram::value_at(index);
            let error = middle.abs_diff(value) as f64 / value.max(1) as f64;
            assert!(error <= 1.0 / 32.0, "{value} -> {middle}");
        }
    }

    #[test]
    fn quantiles() {
        let mut histogram = Histogram::new();
        for micros in 1..=1000u64 {
            histogram.record(Duration::from_micros(micros));
        }
        let p50 = histogram.quantile(0.5);
        assert!((485_000..=515_000).contains(&p50), "{p50}");
        let p99 = histogram.quantile(0.99);
        assert!((960_000..=1_000_000).contains(&p99), "{p99}");
        assert_eq!(histogram.quantile(1.0), 1_000_000);
    }

    #[test]
    fn json_verdicts() {
        assert_eq!(
            verdict_of_json(br#"{"overall_code":"OK","statuses":[]}"#),
            Ok(Verdict::Ok)
        );
        assert_eq!(
            verdict_of_json(br#"{ "overall_code" : "OVER_LIMIT" }"#),
            Ok(Verdict::OverLimit)
        );
        assert!(verdict_of_json(b"{}").is_err());
    }
}
