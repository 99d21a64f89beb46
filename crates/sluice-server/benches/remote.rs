//! Latency per request of the remote layer against `sluice serve` on loopback (HTTP JSON
//! and gRPC), beside the local layer on the in-memory store, on the same `service_fn`.
//!
//! The server runs in this process on its own runtime's two worker threads; requests are
//! sent one at a time from the bench thread, each admitted (one per-IP limit far above
//! the request rate), so the figure is one round trip plus both ends' work.
//!
//! `cargo bench -p sluice-server --bench remote`

use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use sluice_core::Policy;
use sluice_server::ServeOptions;
use sluice_store::MemoryStore;
use sluice_tower::remote::{GrpcBackend, HttpBackend, RemoteLimit, RemoteRateLimitLayer};
use sluice_tower::{LimitSpec, PeerIp, RateLimitLayer};
use tower::{Layer, Service, ServiceExt};

const CONFIG: &str = "
domain: bench
descriptors:
  - key: ip
    rate_limit: {unit: second, requests_per_unit: 100000000, algorithm: gcra}
";

fn request() -> Request<()> {
    let mut req = Request::new(());
    let peer: SocketAddr = "192.0.2.7:40000".parse().expect("addr");
    req.extensions_mut().insert(peer);
    req
}

/// Starts the server on `rt`; returns its HTTP and gRPC addresses.
fn start_server(rt: &tokio::runtime::Runtime) -> (SocketAddr, SocketAddr) {
    let dir = sluice_testkit::temp_dir("tower-remote-bench");
    let config = dir.join("config.yaml");
    std::fs::write(&config, CONFIG).expect("config written");
    let options = ServeOptions {
        config_path: Some(config),
        watch: false,
        ..ServeOptions::default()
    };
    let server = rt
        .block_on(sluice_server::spawn(options))
        .expect("the server starts");
    // Left running until the process ends.
    let addrs = (server.http, server.grpc);
    std::mem::forget(server);
    addrs
}

fn bench_one<S, B>(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &str, svc: S)
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible> + Clone,
{
    // Warm: the connection is open and the server has seen the key.
    let first = rt
        .block_on(svc.clone().oneshot(request()))
        .expect("infallible");
    assert_eq!(first.status(), StatusCode::OK, "{name}");
    assert!(first.headers().contains_key("ratelimit"), "{name}: decided");
    c.bench_function(name, |b| {
        b.iter(|| black_box(rt.block_on(svc.clone().oneshot(request()))))
    });
}

fn remote(c: &mut Criterion) {
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("server runtime");
    let (http, grpc) = start_server(&server_rt);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let inner = tower::service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    });

    c.bench_function("remote/bare_service", |b| {
        b.iter(|| black_box(rt.block_on(inner.oneshot(request()))))
    });
    let big = Policy::parse("gcra", "100000000/s").expect("valid");
    let local = RateLimitLayer::new(MemoryStore::new())
        .limit(LimitSpec::new("per-ip", big, PeerIp::new()))
        .expect("valid")
        .layer(inner);
    bench_one(c, &rt, "remote/local_memory_store", local);

    let over_http = rt.block_on(async {
        RemoteRateLimitLayer::new(
            HttpBackend::new(&format!("http://{http}")).expect("url"),
            "bench",
        )
        .limit(RemoteLimit::new("per-ip", PeerIp::new()))
        .expect("valid")
        .layer(inner)
    });
    bench_one(c, &rt, "remote/http_json", over_http);

    // The channel's connection task runs on the client runtime.
    let over_grpc = rt.block_on(async {
        RemoteRateLimitLayer::new(
            GrpcBackend::connect_lazy(&format!("http://{grpc}")).expect("uri"),
            "bench",
        )
        .limit(RemoteLimit::new("per-ip", PeerIp::new()))
        .expect("valid")
        .layer(inner)
    });
    bench_one(c, &rt, "remote/grpc", over_grpc);
}

criterion_group!(benches, remote);
criterion_main!(benches);
