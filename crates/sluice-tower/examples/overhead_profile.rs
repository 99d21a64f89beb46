//! The layer's added latency, measured so that a noisy, shared machine cannot bias it:
//! every variant runs `N` requests per round, the variants take turns within each round,
//! and the table shows each one's median over the rounds, and what it adds to the bare
//! service it wraps (sluice wraps a `Full` body service, tower_governor an axum one, as in
//! `benches/overhead.rs`).
//!
//! ```text
//! cargo run --release -p sluice-tower --example overhead_profile -- [ROUNDS] [N]
//! ```
//!
//! With a variant name instead (`bare`, `bare_axum`, `quiet`: sluice without headers,
//! `ietf`, `governor`, `governor_headers`) it drives that one alone, for an instruction
//! profile: `valgrind --tool=callgrind target/release/examples/overhead_profile quiet 20000`.

#![allow(
    clippy::disallowed_types,
    reason = "a benchmark measures wall-clock time by nature"
)]

use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use sluice_core::Policy;
use sluice_http::HeaderStyle;
use sluice_store::MemoryStore;
use sluice_tower::{LimitSpec, PeerIp, RateLimitLayer};
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt};

type Service = BoxCloneService<Request<()>, (), Infallible>;

fn request(peer: SocketAddr) -> Request<()> {
    let mut req = Request::new(());
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    req
}

/// Every variant, named, with the name of the bare service it wraps. The response is
/// dropped inside the service so that all variants have one type.
fn variants() -> Vec<(&'static str, &'static str, Service)> {
    let inner = tower::service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    });
    let inner_axum = tower::service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(axum::body::Body::from("ok")))
    });
    let big = Policy::parse("gcra", "1000000000/s").expect("valid");
    let sluice = |style| {
        RateLimitLayer::new(MemoryStore::new())
            .limit(LimitSpec::new("per-ip", big, PeerIp::new()))
            .expect("valid")
            .header_style(style)
            .layer(inner)
    };
    let governor_builder = || {
        let mut builder = tower_governor::governor::GovernorConfigBuilder::default();
        builder
            .per_nanosecond(1)
            .burst_size(1000)
            .key_extractor(tower_governor::key_extractor::PeerIpKeyExtractor);
        builder
    };
    let governor = tower_governor::GovernorLayer::new(
        governor_builder().finish().expect("valid governor config"),
    )
    .layer(inner_axum);
    // `use_headers` gives a builder of another type: its layer is another type too.
    let governor_headers = tower_governor::GovernorLayer::new(
        governor_builder()
            .use_headers()
            .finish()
            .expect("valid governor config"),
    )
    .layer(inner_axum);
    fn unit<S, R: 'static>(service: S) -> Service
    where
        S: tower::Service<Request<()>, Response = R, Error = Infallible> + Clone + Send + 'static,
        S::Future: Send + 'static,
    {
        BoxCloneService::new(service.map_response(drop))
    }
    // tower_governor's error type is its own; every request here is admitted.
    fn admitted<E: std::fmt::Display>(e: E) -> Infallible {
        panic!("tower_governor refused: {e}")
    }
    vec![
        ("bare", "bare", unit(inner)),
        ("bare_axum", "bare_axum", unit(inner_axum)),
        ("quiet", "bare", unit(sluice(HeaderStyle::Off))),
        ("ietf", "bare", unit(sluice(HeaderStyle::Ietf))),
        ("governor", "bare_axum", unit(governor.map_err(admitted))),
        (
            "governor_headers",
            "bare_axum",
            unit(governor_headers.map_err(admitted)),
        ),
    ]
}

/// Runs `n` requests through `service`; the mean time per request in nanoseconds.
fn drive(rt: &tokio::runtime::Runtime, service: &Service, n: u64) -> f64 {
    let peer: SocketAddr = "192.0.2.7:40000".parse().expect("addr");
    let start = Instant::now();
    for _ in 0..n {
        let _ = black_box(rt.block_on(service.clone().oneshot(black_box(request(peer)))));
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let variants = variants();
    if let Some(name) = args.first().filter(|a| a.parse::<u64>().is_err()) {
        let n = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
        let (_, _, service) = variants
            .iter()
            .find(|(v, _, _)| v == name)
            .unwrap_or_else(|| panic!("unknown variant {name}"));
        drive(&rt, service, n);
        return;
    }
    let rounds: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(100);
    let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    for (_, _, service) in &variants {
        drive(&rt, service, n); // warm up
    }
    let mut times = vec![Vec::with_capacity(rounds); variants.len()];
    for _ in 0..rounds {
        for (i, (_, _, service)) in variants.iter().enumerate() {
            times[i].push(drive(&rt, service, n));
        }
    }
    let medians: Vec<f64> = times.into_iter().map(median).collect();
    let of = |name: &str| {
        variants
            .iter()
            .position(|(v, _, _)| *v == name)
            .map_or(f64::NAN, |i| medians[i])
    };
    println!("| variant | median ns/request | added over its bare service |");
    println!("|---|--:|--:|");
    for (i, (name, bare, _)) in variants.iter().enumerate() {
        let added = medians[i] - of(bare);
        println!("| {name} | {:.0} | {added:.0} |", medians[i]);
    }
    println!("\n{rounds} rounds of {n} requests per variant, interleaved; medians.");
}
