//! The "hello-world ceiling" for `sluice serve` benchmarks: the same two wire contracts,
//! with no limiter behind them.
//!
//! - `POST /v1/check` (axum) reads the JSON body into a `serde_json::Value`, as a real
//!   server must, and answers a fixed `OK` decision of the same shape as sluice's, one
//!   status per descriptor.
//! - `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` (tonic, envoy-types)
//!   always answers `OK`, one status per descriptor.
//!
//! Both listeners share one multi-thread tokio runtime with the default worker count, as
//! `sluice serve` does, so `scripts/bench-server` can report sluice's throughput as a
//! percentage of this one.
//!
//! ```text
//! cargo run --release -p sluice-server --example ceiling -- \
//!     --http 127.0.0.1:8080 --grpc 127.0.0.1:8081
//! ```

use std::net::SocketAddr;

use axum::Router;
use axum::extract::Json;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::serve::ListenerExt;
use clap::Parser;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use serde_json::Value;
use tonic::codegen::Bytes;

/// A minimal HTTP + gRPC rate limit server that always answers OK.
#[derive(Debug, Parser)]
#[command(name = "ceiling")]
struct Args {
    /// Address of the HTTP JSON API (`POST /v1/check`).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    http: SocketAddr,

    /// Address of the Envoy RLS v3 gRPC service.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8081")]
    grpc: SocketAddr,
}

/// One `OK` status, as `POST /v1/check` reports it.
const HTTP_STATUS: &str = r#"{"code":"OK","limit":{"requests_per_unit":1000000000,"unit":"second","name":null},"limit_remaining":999999999,"duration_until_reset_ms":1000,"retry_after_ms":null}"#;

/// The whole response body for `n` descriptors.
fn http_body(n: usize) -> String {
    let mut body = String::with_capacity(40 + n * (HTTP_STATUS.len() + 1));
    body.push_str(r#"{"overall_code":"OK","statuses":["#);
    for i in 0..n {
        if i > 0 {
            body.push(',');
        }
        body.push_str(HTTP_STATUS);
    }
    body.push_str("]}");
    body
}

/// `POST /v1/check`: parse the body, count its descriptors, answer OK for each.
async fn check(
    axum::extract::State(one): axum::extract::State<Bytes>,
    Json(request): Json<Value>,
) -> impl IntoResponse {
    let n = request
        .get("descriptors")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let body = if n == 1 {
        one
    } else {
        Bytes::from(http_body(n))
    };
    ([(CONTENT_TYPE, "application/json")], body)
}

/// The gRPC service: every descriptor is OK.
#[derive(Debug, Clone, Copy)]
struct AlwaysOk;

#[tonic::async_trait]
impl RateLimitService for AlwaysOk {
    async fn should_rate_limit(
        &self,
        request: tonic::Request<RateLimitRequest>,
    ) -> Result<tonic::Response<RateLimitResponse>, tonic::Status> {
        let statuses = request
            .get_ref()
            .descriptors
            .iter()
            .map(|_| DescriptorStatus {
                code: Code::Ok.into(),
                current_limit: Some(RateLimit {
                    name: String::new(),
                    requests_per_unit: 1_000_000_000,
                    unit: Unit::Second.into(),
                }),
                limit_remaining: 999_999_999,
                duration_until_reset: Some(PbDuration {
                    seconds: 1,
                    nanos: 0,
                }),
                quota: None,
            })
            .collect();
        Ok(tonic::Response::new(RateLimitResponse {
            overall_code: Code::Ok.into(),
            statuses,
            ..RateLimitResponse::default()
        }))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();

    let app = Router::new()
        .route("/v1/check", post(check))
        .with_state(Bytes::from(http_body(1)));
    let http = tokio::net::TcpListener::bind(args.http).await?;
    let http_addr = http.local_addr()?;
    let http = http.tap_io(|tcp| {
        // Best effort: a socket that refuses NODELAY still serves.
        let _ = tcp.set_nodelay(true);
    });

    let grpc = tonic::transport::server::TcpIncoming::bind(args.grpc)?.with_nodelay(Some(true));
    let grpc_addr = grpc.local_addr()?;
    let grpc = tonic::transport::Server::builder()
        .serve_with_incoming(RateLimitServiceServer::new(AlwaysOk), grpc);
    eprintln!("ceiling: http on {http_addr}, grpc on {grpc_addr}");

    let http = async move { axum::serve(http, app).await };
    tokio::select! {
        result = http => result?,
        result = grpc => result?,
    }
    Ok(())
}
