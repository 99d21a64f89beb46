//! Slowloris against `sluice serve`: opens N half-sent requests to each port while a
//! well-behaved client keeps deciding, and reports when the server closed the half-open
//! connections and the well-behaved client's latency.
//!
//! On the HTTP port each half-open connection sends half a request head; on the gRPC port,
//! the HTTP/2 preface, its SETTINGS and the first bytes of a HEADERS frame. The
//! well-behaved client sends `POST /v1/check` over one kept-alive HTTP/1.1 connection and
//! `ShouldRateLimit` over one gRPC channel, one request at a time each, until every
//! half-open connection is closed (or `--deadline` passes).
//!
//! Run it against a server in another process, whose connection cap is above N (each
//! half-open connection is one file descriptor here and one in the server):
//!
//! ```text
//! sluice serve --max-connections 6000 --header-read-timeout 5s &
//! cargo run --release -p sluice-server --example slowloris -- \
//!     --http 127.0.0.1:8080 --grpc 127.0.0.1:8081 --half-open 5000
//! ```
#![allow(
    clippy::disallowed_types,
    reason = "a load program measures real elapsed time: it needs the OS clock (std::time::Instant)"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

#[derive(Debug, Parser)]
struct Args {
    /// The server's HTTP address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// The server's gRPC address.
    #[arg(long, default_value = "127.0.0.1:8081")]
    grpc: SocketAddr,
    /// Half-open connections to each port.
    #[arg(long, default_value_t = 5000)]
    half_open: usize,
    /// Connections opened at once while the flood builds.
    #[arg(long, default_value_t = 200)]
    batch: usize,
    /// Give up waiting for the server to close them after this many seconds.
    #[arg(long, default_value_t = 120)]
    deadline: u64,
}

const HALF_HTTP: &[u8] = b"POST /v1/check HTTP/1.1\r\nHost: sluice\r\nContent-Type: applic";

/// The HTTP/2 preface, an empty SETTINGS frame, and a HEADERS frame that announces 64 bytes
/// and sends 3.
fn half_h2() -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&[0, 0, 64, 0x1, 0x4, 0, 0, 0, 1, 0x83, 0x86, 0x84]);
    out
}

/// When each half-open connection of one port was closed, seconds after it was opened.
struct Flood {
    opened: usize,
    failed_to_open: usize,
    closed_after: Vec<f64>,
    still_open: usize,
}

async fn flood(
    addr: SocketAddr,
    n: usize,
    batch: usize,
    payload: Vec<u8>,
    deadline: Instant,
) -> Flood {
    let payload: Arc<[u8]> = payload.into();
    let mut tasks = JoinSet::new();
    let mut failed_to_open = 0;
    let mut opened = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(batch) {
        let mut opening = JoinSet::new();
        for _ in chunk {
            let payload = Arc::clone(&payload);
            opening.spawn(async move {
                let mut stream = TcpStream::connect(addr).await?;
                stream.write_all(&payload).await?;
                Ok::<_, std::io::Error>((stream, Instant::now()))
            });
        }
        while let Some(done) = opening.join_next().await {
            match done.expect("no panic") {
                Ok((mut stream, at)) => {
                    opened += 1;
                    tasks.spawn(async move {
                        let mut buf = [0_u8; 512];
                        let left = deadline.saturating_duration_since(Instant::now());
                        loop {
                            match tokio::time::timeout(left, stream.read(&mut buf)).await {
                                Ok(Ok(0) | Err(_)) => return Some(at.elapsed().as_secs_f64()),
                                Ok(Ok(_)) => {}
                                Err(_) => return None,
                            }
                        }
                    });
                }
                Err(_) => failed_to_open += 1,
            }
        }
    }
    let mut closed_after = Vec::new();
    let mut still_open = 0;
    while let Some(done) = tasks.join_next().await {
        match done.expect("no panic") {
            Some(secs) => closed_after.push(secs),
            None => still_open += 1,
        }
    }
    closed_after.sort_by(f64::total_cmp);
    Flood {
        opened,
        failed_to_open,
        closed_after,
        still_open,
    }
}

/// The latencies of a well-behaved client, in milliseconds, and its errors.
#[derive(Default)]
struct Latencies {
    ms: Vec<f64>,
    errors: usize,
}

async fn http_client(addr: SocketAddr, stop: Arc<AtomicBool>) -> Latencies {
    let mut out = Latencies::default();
    let body = Bytes::from_static(
        br#"{"domain":"demo","descriptors":[{"entries":[{"key":"user","value":"42"}]}]}"#,
    );
    'connect: while !stop.load(Ordering::Relaxed) {
        let Ok(stream) = TcpStream::connect(addr).await else {
            out.errors += 1;
            continue;
        };
        let Ok((mut sender, connection)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            out.errors += 1;
            continue;
        };
        tokio::spawn(connection);
        while !stop.load(Ordering::Relaxed) {
            let request = http::Request::post(format!("http://{addr}/v1/check"))
                .header("content-type", "application/json")
                .body(Full::new(body.clone()))
                .expect("request");
            let begun = Instant::now();
            let answer = async {
                let response = sender.send_request(request).await?;
                response.into_body().collect().await?;
                Ok::<_, hyper::Error>(())
            }
            .await;
            match answer {
                Ok(()) => out.ms.push(begun.elapsed().as_secs_f64() * 1e3),
                Err(_) => {
                    out.errors += 1;
                    continue 'connect;
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    out
}

async fn grpc_client(addr: SocketAddr, stop: Arc<AtomicBool>) -> Latencies {
    let mut out = Latencies::default();
    let mut client = RateLimitServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("gRPC connects");
    let request = RateLimitRequest {
        domain: "demo".to_owned(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: "user".to_owned(),
                value: "42".to_owned(),
            }],
            ..RateLimitDescriptor::default()
        }],
        hits_addend: 1,
    };
    while !stop.load(Ordering::Relaxed) {
        let begun = Instant::now();
        match client.should_rate_limit(request.clone()).await {
            Ok(_) => out.ms.push(begun.elapsed().as_secs_f64() * 1e3),
            Err(_) => out.errors += 1,
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    out
}

fn percentile(sorted: &[f64], per_mille: usize) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(sorted.len() - 1) * per_mille / 1000]
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let deadline = Instant::now() + Duration::from_secs(args.deadline);
    let stop = Arc::new(AtomicBool::new(false));
    let http_client = tokio::spawn(http_client(args.http, Arc::clone(&stop)));
    let grpc_client = tokio::spawn(grpc_client(args.grpc, Arc::clone(&stop)));
    let begun = Instant::now();
    let (http, grpc) = tokio::join!(
        flood(
            args.http,
            args.half_open,
            args.batch,
            HALF_HTTP.to_vec(),
            deadline
        ),
        flood(args.grpc, args.half_open, args.batch, half_h2(), deadline),
    );
    stop.store(true, Ordering::Relaxed);
    let wall = begun.elapsed();
    let mut http_lat = http_client.await.expect("no panic");
    let mut grpc_lat = grpc_client.await.expect("no panic");

    println!(
        "half-open connections ({} per port, run {:.1} s):",
        args.half_open,
        wall.as_secs_f64()
    );
    println!(
        "| port | opened | failed to open | closed by server | still open | closed after: min | p50 | max |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, flood) in [("HTTP", &http), ("gRPC", &grpc)] {
        let c = &flood.closed_after;
        println!(
            "| {name} | {} | {} | {} | {} | {:.2} s | {:.2} s | {:.2} s |",
            flood.opened,
            flood.failed_to_open,
            c.len(),
            flood.still_open,
            percentile(c, 0),
            percentile(c, 500),
            percentile(c, 1000),
        );
    }
    println!();
    println!("well-behaved client meanwhile (one request at a time per protocol):");
    println!("| protocol | requests | errors | p50 | p99 | max |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, lat) in [
        ("HTTP /v1/check", &mut http_lat),
        ("gRPC ShouldRateLimit", &mut grpc_lat),
    ] {
        lat.ms.sort_by(f64::total_cmp);
        println!(
            "| {name} | {} | {} | {:.2} ms | {:.2} ms | {:.2} ms |",
            lat.ms.len(),
            lat.errors,
            percentile(&lat.ms, 500),
            percentile(&lat.ms, 990),
            percentile(&lat.ms, 1000),
        );
    }
}
