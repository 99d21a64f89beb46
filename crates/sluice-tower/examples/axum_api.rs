//! A small axum API behind sluice-tower.
//!
//! `cargo run -p sluice-tower --example axum_api`, then `curl -i http://127.0.0.1:3000/`
//! a few times: the sixth request within a minute gets a 429 with `Retry-After`, the IETF
//! `RateLimit` headers and a problem body. It listens on `SLUICE_EXAMPLE_ADDR` (default
//! `127.0.0.1:3000`).
//!
//! - `GET /`: 5 requests per minute per client IP.
//! - `GET /api/items/{id}`: 10 per minute per `x-api-key` (401 without one), and 100 per
//!   minute per route for all keys together (`GET /api/items/{id}`, not per id).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use http::HeaderName;
use sluice_core::Policy;
use sluice_store::MemoryStore;
use sluice_tower::{Header, LimitSpec, MethodAndPath, OnMissingKey, PeerIp, RateLimitLayer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("SLUICE_EXAMPLE_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let store = Arc::new(MemoryStore::new());

    let per_ip = RateLimitLayer::shared(store.clone()).limit(LimitSpec::new(
        "per-ip",
        Policy::parse("gcra", "5/min")?,
        PeerIp::new(),
    ))?;
    let per_key_and_route = RateLimitLayer::shared(store.clone())
        .limit(
            LimitSpec::new(
                "per-key",
                Policy::parse("gcra", "10/min")?,
                Header(HeaderName::from_static("x-api-key")),
            )
            .on_missing_key(OnMissingKey::Unauthorized),
        )?
        .limit(LimitSpec::new(
            "per-route",
            Policy::parse("gcra", "100/min")?,
            MethodAndPath::new(),
        ))?;

    // A layer on a route (not on the whole router) sees the matched route, so
    // `MethodAndPath` counts `/api/items/1` and `/api/items/2` together.
    let app = Router::new()
        .route("/", get(|| async { "hello\n" }).layer(per_ip))
        .route(
            "/api/items/{id}",
            get(|Path(id): Path<u32>| async move { format!("item {id}\n") })
                .layer(per_key_and_route),
        );

    // The library spawns nothing; the application drops expired states.
    let cleanup = store.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            cleanup.remove_expired();
        }
    });

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
