//! The layer inside an axum router: connect info, matched routes, per-route layers.
#![cfg(feature = "axum")]

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use http::{Request, StatusCode};
use sluice_core::{ManualClock, Nanos, Policy};
use sluice_http::read_limit_header;
use sluice_store::MemoryStore;
use sluice_tower::{LimitSpec, MethodAndPath, PeerIp, RateLimitLayer};
use tower::ServiceExt;

fn get_from(uri: &str, peer: &str) -> Request<Body> {
    let mut req = Request::get(uri)
        .body(Body::empty())
        .expect("valid request");
    let addr: SocketAddr = format!("{peer}:1234").parse().expect("addr");
    req.extensions_mut().insert(ConnectInfo(addr));
    req
}

#[tokio::test]
async fn route_layers_see_connect_info_and_the_matched_route() {
    let store = MemoryStore::with_clock(ManualClock::new(Nanos::new(1_000_000_000_000)));
    let layer = RateLimitLayer::new(store)
        .limit(LimitSpec::new(
            "per-ip",
            Policy::parse("gcra", "5/min").expect("valid"),
            PeerIp::new(),
        ))
        .and_then(|l| {
            l.limit(LimitSpec::new(
                "per-route",
                Policy::parse("gcra", "3/min").expect("valid"),
                MethodAndPath::new(),
            ))
        })
        .expect("valid");
    let app = Router::new().route("/items/{id}", get(|| async { "item" }).route_layer(layer));

    // Three different ids from three clients share the route's budget.
    for (n, (id, peer)) in [(1, "1.1.1.1"), (2, "2.2.2.2"), (3, "3.3.3.3")]
        .iter()
        .enumerate()
    {
        let resp = app
            .clone()
            .oneshot(get_from(&format!("/items/{id}"), peer))
            .await
            .expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK);
        let limits = read_limit_header(resp.headers()).expect("parses");
        assert_eq!(limits[0].remaining, 4, "each client is new");
        assert_eq!(limits[1].remaining, 2 - n as u64, "one route");
    }
    let resp = app
        .clone()
        .oneshot(get_from("/items/4", "1.1.1.1"))
        .await
        .expect("infallible");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "20");
}
