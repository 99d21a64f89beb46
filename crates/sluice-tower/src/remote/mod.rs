//! A remote sluice server as the layer's backend (features `remote-http`,
//! `remote-grpc`).
//!
//! The model is Envoy's: the **server** owns the limits (its YAML configuration, admin
//! overrides, dashboard), and the service only describes each request and acts on the
//! answer. [`RemoteRateLimitLayer`] takes one key per [`RemoteLimit`] from the request,
//! with the same [`KeyExtractor`](crate::KeyExtractor)s as the local layer, sends them as
//! the descriptors of one check (all or nothing: a refusal by one limit counts on none),
//! and then:
//!
//! - allowed: calls the inner service and adds `RateLimit-Policy` / `RateLimit` (or the
//!   legacy headers, see [`HeaderStyle`](crate::HeaderStyle)) from the server's numbers:
//!   `"<limit name>";q=<requests_per_unit>;w=<window seconds>` and
//!   `"<limit name>";r=<remaining>;t=<seconds to reset>`. A descriptor that matched no
//!   rule adds no item;
//! - refused: answers `429` with `Retry-After` (the server's wait), the same headers and
//!   the same RFC 9457 problem body as the local layer, naming the limits over their
//!   rules;
//! - keyless: `400`, `401` with `WWW-Authenticate`, or a fallback key, without asking
//!   (see [`OnMissingKey`](crate::OnMissingKey));
//! - no decision (connection refused or broken, no answer within the
//!   [timeout](RemoteRateLimitLayer::timeout), an error status, a body that does not
//!   parse, an `UNKNOWN` code): [`OnFailure::Open`] calls the inner service without rate
//!   limit headers, [`OnFailure::Closed`] answers `503` with a problem body. Nothing is
//!   logged per request; [`RemoteRateLimitLayer::stats`] counts each outcome.
//!
//! Two transports:
//!
//! - `HttpBackend` (feature `remote-http`): `sluice serve`'s `POST /v1/check`, over
//!   pooled keep-alive HTTP/1.1 connections.
//! - `GrpcBackend` (feature `remote-grpc`): Envoy's rate limit service v3
//!   (`ShouldRateLimit`), served by `sluice serve`'s gRPC listener or by any other
//!   implementation (envoyproxy/ratelimit).
//!
//! The descriptor of a limit is its key's entries after the domain (e.g. `ip=192.0.2.7`
//! for [`PeerIp`](crate::PeerIp); see [`RemoteLimit`]); the domain sent is the layer's.
//! So this layer and a server configured as
//!
//! ```yaml
//! domain: api
//! descriptors:
//!   - key: ip
//!     rate_limit: {unit: minute, requests_per_unit: 60, algorithm: gcra}
//!   - key: x-api-key
//!     rate_limit: {unit: hour, requests_per_unit: 1000, algorithm: gcra}
//! ```
//!
//! limit each client IP to 60 requests a minute and each API key to 1000 an hour:
//!
//! ```no_run
//! # #[cfg(feature = "remote-http")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//!
//! use sluice_tower::remote::{HttpBackend, OnFailure, RemoteLimit, RemoteRateLimitLayer};
//! use sluice_tower::{Header, HeaderStyle, OnMissingKey, PeerIp};
//!
//! let layer = RemoteRateLimitLayer::new(HttpBackend::new("http://127.0.0.1:8080")?, "api")
//!     .limit(RemoteLimit::new("per-ip", PeerIp::new()))?
//!     .limit(
//!         RemoteLimit::new("per-key", Header(http::HeaderName::from_static("x-api-key")))
//!             .on_missing_key(OnMissingKey::Unauthorized),
//!     )?
//!     .timeout(Duration::from_millis(100))
//!     .on_failure(OnFailure::Open)
//!     .header_style(HeaderStyle::Ietf);
//! // `GrpcBackend::connect_lazy("http://127.0.0.1:8081")?` (feature `remote-grpc`, inside
//! // a tokio runtime) asks the same server over gRPC.
//! # let _ = layer;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "remote-http"))]
//! # fn main() {}
//! ```
//!
//! `call` never waits in `poll_ready`: it resolves the keys at once and asks the server in
//! its (boxed) future, on tokio's timer for the timeout.

mod check;
#[cfg(feature = "remote-grpc")]
mod grpc;
#[cfg(feature = "remote-http")]
mod http_json;
mod layer;
mod respond;
mod service;
mod stats;

pub use check::RemoteBackend;
#[cfg(feature = "remote-grpc")]
pub use grpc::GrpcBackend;
#[cfg(feature = "remote-http")]
pub use http_json::HttpBackend;
pub use layer::{DEFAULT_TIMEOUT, OnFailure, RemoteLimit, RemoteRateLimitLayer, WithRemoteLimit};
pub use service::{RemoteRateLimit, RemoteResponseFuture};
pub use stats::RemoteStats;

/// Why a server's address cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot use {endpoint:?} as a sluice server: {reason}")]
pub struct EndpointError {
    /// The address given.
    pub endpoint: String,
    /// What is wrong with it.
    pub reason: String,
}

impl EndpointError {
    fn new(endpoint: &str, reason: &str) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            reason: reason.to_owned(),
        }
    }
}
