//! One layer variant driven `N` times, for an instruction profile of the admitted path:
//! `valgrind --tool=callgrind target/release/examples/overhead_profile <variant> [N]`,
//! with variant `bare`, `quiet` (sluice, headers off), `ietf`, `governor` or `bare_axum`.

use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use sluice_core::Policy;
use sluice_store::MemoryStore;
use sluice_tower::{LimitSpec, PeerIp, RateLimitLayer};
use tower::{Layer, Service, ServiceExt};

fn request(peer: SocketAddr) -> Request<()> {
    let mut req = Request::new(());
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    req
}

fn drive<S>(rt: &tokio::runtime::Runtime, service: S, n: u64)
where
    S: Service<Request<()>> + Clone,
{
    let peer: SocketAddr = "192.0.2.7:40000".parse().expect("addr");
    for _ in 0..n {
        let _ = black_box(rt.block_on(service.clone().oneshot(black_box(request(peer)))));
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let variant = args.next().unwrap_or_else(|| "quiet".into());
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let inner = tower::service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    });
    let inner_axum = tower::service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(axum::body::Body::from("ok")))
    });
    let big = Policy::parse("gcra", "1000000000/s").expect("valid");
    let layer = |style| {
        RateLimitLayer::new(MemoryStore::new())
            .limit(LimitSpec::new("per-ip", big, PeerIp::new()))
            .expect("valid")
            .header_style(style)
    };
    match variant.as_str() {
        "bare" => drive(&rt, inner, n),
        "bare_axum" => drive(&rt, inner_axum, n),
        "quiet" => drive(&rt, layer(sluice_http::HeaderStyle::Off).layer(inner), n),
        "ietf" => drive(&rt, layer(sluice_http::HeaderStyle::Ietf).layer(inner), n),
        "governor" => {
            let config = tower_governor::governor::GovernorConfigBuilder::default()
                .per_nanosecond(1)
                .burst_size(1000)
                .key_extractor(tower_governor::key_extractor::PeerIpKeyExtractor)
                .finish()
                .expect("valid governor config");
            drive(
                &rt,
                tower_governor::GovernorLayer::new(config).layer(inner_axum),
                n,
            );
        }
        other => panic!("unknown variant {other}"),
    }
}
