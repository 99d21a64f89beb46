//! The layer on `RedisStore`: two layer instances, as two processes of one service would
//! have, each with its own connection to one throwaway `redis-server`, enforce one limit
//! together. Redis `TIME` is the timeline, so these tests run in real time.
//!
//! (A remote sluice server as the layer's backend is not built yet.)

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use sluice_core::Policy;
use sluice_redis::RedisStore;
use sluice_testkit::RedisServer;
use sluice_tower::{LimitSpec, PeerIp, RateLimitLayer};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

fn from_peer(peer: &str) -> Request<()> {
    let mut req = Request::new(());
    let addr: SocketAddr = format!("{peer}:40000").parse().expect("test peer");
    req.extensions_mut().insert(addr);
    req
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().expect("ascii header"))
}

fn ok(_req: Request<()>) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>> {
    std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(b"ok")))))
}

/// Two stores on separate connections sharing `prefix`, as two processes configured
/// alike would.
async fn two_processes(server: &RedisServer, prefix: &str) -> [RedisStore; 2] {
    let mut stores = Vec::new();
    for _ in 0..2 {
        let store = RedisStore::connect(&server.url())
            .await
            .expect("connect to the test redis");
        stores.push(store.with_prefix(prefix));
    }
    stores.try_into().expect("two stores")
}

#[tokio::test]
async fn two_layers_share_one_limit_through_redis() {
    let server = RedisServer::spawn().expect("redis-server");
    let prefix = format!("tower-{}", std::process::id());
    let services = two_processes(&server, &prefix).await.map(|store| {
        RateLimitLayer::new(store)
            .limit(LimitSpec::new(
                "per-ip",
                Policy::parse("gcra", "3/min").expect("valid policy"),
                PeerIp::new(),
            ))
            .expect("valid limit")
            .layer(tower::service_fn(ok))
    });
    let [a, b] = &services;

    // One budget of 3 (a unit every 20 s), whichever process the requests reach.
    for (svc, remaining) in [(a, 2), (b, 1), (a, 0)] {
        let resp = svc
            .clone()
            .oneshot(from_peer("1.2.3.4"))
            .await
            .expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            header(resp.headers(), "ratelimit-policy"),
            Some(r#""per-ip";q=3;w=60"#)
        );
        let expected = format!(r#""per-ip";r={remaining};t={}"#, 60 - 20 * remaining);
        assert_eq!(header(resp.headers(), "ratelimit"), Some(expected.as_str()));
    }
    for svc in [b, a] {
        let resp = svc
            .clone()
            .oneshot(from_peer("1.2.3.4"))
            .await
            .expect("infallible");
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        // Redis time moves on between the requests: just under 20 s, rounded up.
        assert_eq!(header(resp.headers(), "retry-after"), Some("20"));
    }
    // Another client has its own budget, on either process.
    let resp = b
        .clone()
        .oneshot(from_peer("5.6.7.8"))
        .await
        .expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header(resp.headers(), "ratelimit"),
        Some(r#""per-ip";r=2;t=20"#)
    );
    // The state is in Redis, under the shared prefix.
    let keys = server
        .command(&["KEYS", &format!("{prefix}:*")])
        .expect("KEYS");
    assert!(keys.contains("ip=1.2.3.4"), "{keys}");
    assert!(keys.contains("ip=5.6.7.8"), "{keys}");
}

#[tokio::test]
async fn a_layer_waits_for_capacity_another_process_used() {
    let server = RedisServer::spawn().expect("redis-server");
    let prefix = format!("tower-wait-{}", std::process::id());
    // 2/s: a unit every 500 ms, burst 2; wait up to 2 s. (Real time: the margins are
    // half a unit, so a slow machine does not change the outcome.)
    let services = two_processes(&server, &prefix).await.map(|store| {
        RateLimitLayer::new(store)
            .limit(LimitSpec::new(
                "per-ip",
                Policy::parse("gcra", "2/s").expect("valid policy"),
                PeerIp::new(),
            ))
            .expect("valid limit")
            .max_wait(Duration::from_secs(2))
            .layer(tower::service_fn(ok))
    });
    let [a, b] = &services;
    for _ in 0..2 {
        let resp = a
            .clone()
            .oneshot(from_peer("1.2.3.4"))
            .await
            .expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK);
    }
    // The other process is delayed (by just under 500 ms), not refused.
    let start = Instant::now();
    let resp = b
        .clone()
        .oneshot(from_peer("1.2.3.4"))
        .await
        .expect("infallible");
    let waited = start.elapsed();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(2000),
        "{waited:?}"
    );
    // Five more at once: the next units are 0.5, 1, 1.5 and (just under) 2 s away, the
    // fifth 2.5 s, past `max_wait`: four are delayed, one is refused.
    let mut tasks = Vec::new();
    for svc in [a, b, a, b, a] {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            svc.oneshot(from_peer("1.2.3.4"))
                .await
                .expect("infallible")
                .status()
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("task"));
    }
    statuses.sort();
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}
