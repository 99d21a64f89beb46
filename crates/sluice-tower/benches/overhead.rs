//! Latency the layer adds per request: the same `service_fn` with and without it, with
//! the in-memory store, on a current-thread runtime; beside tower_governor 0.8 (per peer
//! IP, with and without its headers) on the same service in the same run.
//!
//! Every client but the `_4096_ips` ones is one address, which sluice's `PeerIp` key cache
//! always holds; the `_4096_ips` runs cycle through 4096 addresses (more than the cache's
//! 256 slots), so most of sluice's keys are built afresh, and tower_governor's map holds
//! 4096 entries.
//!
//! `cargo bench -p sluice-tower --bench overhead`

use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use sluice_core::Policy;
use sluice_store::MemoryStore;
use sluice_tower::{Constant, LimitSpec, PeerIp, RateLimitLayer};
use tower::{Layer, ServiceExt};

/// A request as axum hands it over: the peer address in `ConnectInfo`, which both
/// sluice's `PeerIp` and tower_governor's `PeerIpKeyExtractor` read.
fn request(peer: SocketAddr) -> Request<()> {
    let mut req = Request::new(());
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    req
}

/// The `n`-th of 4096 client addresses, in a scattered order.
fn nth_peer(n: u32) -> SocketAddr {
    let ip = std::net::Ipv4Addr::from(0x0a00_0000 | (n.wrapping_mul(2_654_435_761) % 4096));
    SocketAddr::new(ip.into(), 40000)
}

fn overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let inner = tower::service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    });
    let peer: SocketAddr = "192.0.2.7:40000".parse().expect("addr");
    // Limits high enough that every request is admitted: the cost measured is the
    // admitted path (key extraction, one store decision, headers).
    let big = Policy::parse("gcra", "1000000000/s").expect("valid");
    let one = RateLimitLayer::new(MemoryStore::new())
        .limit(LimitSpec::new("per-ip", big, PeerIp::new()))
        .expect("valid")
        .layer(inner);
    let quiet = RateLimitLayer::new(MemoryStore::new())
        .limit(LimitSpec::new("per-ip", big, PeerIp::new()))
        .expect("valid")
        .header_style(sluice_http::HeaderStyle::Off)
        .layer(inner);
    let legacy = RateLimitLayer::new(MemoryStore::new())
        .limit(LimitSpec::new("per-ip", big, PeerIp::new()))
        .expect("valid")
        .header_style(sluice_http::HeaderStyle::Legacy)
        .layer(inner);
    let two = RateLimitLayer::new(MemoryStore::new())
        .limit(LimitSpec::new("per-ip", big, PeerIp::new()))
        .and_then(|l| l.limit(LimitSpec::new("global", big, Constant::new("all"))))
        .expect("valid")
        .layer(inner);

    // tower_governor needs a body it can build its 429 from: axum's.
    let inner_axum = tower::service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(axum::body::Body::from("ok")))
    });
    let governor_config = tower_governor::governor::GovernorConfigBuilder::default()
        .per_nanosecond(1)
        .burst_size(1000)
        .key_extractor(tower_governor::key_extractor::PeerIpKeyExtractor)
        .finish()
        .expect("valid governor config");
    let governor = tower_governor::GovernorLayer::new(governor_config).layer(inner_axum);
    let governor_headers_config = tower_governor::governor::GovernorConfigBuilder::default()
        .per_nanosecond(1)
        .burst_size(1000)
        .key_extractor(tower_governor::key_extractor::PeerIpKeyExtractor)
        .use_headers()
        .finish()
        .expect("valid governor config");
    let governor_headers =
        tower_governor::GovernorLayer::new(governor_headers_config).layer(inner_axum);

    let mut group = c.benchmark_group("layer_overhead");
    group.bench_function("bare_axum_body", |b| {
        b.iter(|| rt.block_on(inner_axum.oneshot(black_box(request(peer)))))
    });
    group.bench_function("tower_governor", |b| {
        b.iter(|| rt.block_on(governor.clone().oneshot(black_box(request(peer)))))
    });
    group.bench_function("tower_governor_headers", |b| {
        b.iter(|| rt.block_on(governor_headers.clone().oneshot(black_box(request(peer)))))
    });
    group.bench_function("bare", |b| {
        b.iter(|| rt.block_on(inner.oneshot(black_box(request(peer)))))
    });
    group.bench_function("sluice_one_limit", |b| {
        b.iter(|| rt.block_on(one.clone().oneshot(black_box(request(peer)))))
    });
    group.bench_function("sluice_one_limit_headers_off", |b| {
        b.iter(|| rt.block_on(quiet.clone().oneshot(black_box(request(peer)))))
    });
    group.bench_function("sluice_one_limit_legacy_headers", |b| {
        b.iter(|| rt.block_on(legacy.clone().oneshot(black_box(request(peer)))))
    });
    group.bench_function("sluice_two_limits", |b| {
        b.iter(|| rt.block_on(two.clone().oneshot(black_box(request(peer)))))
    });
    let mut n = 0u32;
    group.bench_function("tower_governor_headers_4096_ips", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            rt.block_on(
                governor_headers
                    .clone()
                    .oneshot(black_box(request(nth_peer(n)))),
            )
        })
    });
    group.bench_function("sluice_one_limit_4096_ips", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            rt.block_on(one.clone().oneshot(black_box(request(nth_peer(n)))))
        })
    });
    group.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
