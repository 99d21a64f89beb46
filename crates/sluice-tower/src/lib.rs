//! sluice-tower: inbound rate limiting as a tower middleware.
//!
//! [`RateLimitLayer`] checks each HTTP request against one or several limits (per client
//! IP, per API key, per route, global), all or nothing, through any sluice-store
//! [`Store`](sluice_store::Store) (the in-memory store, Redis, a `FallbackStore`). Keys
//! come from [`KeyExtractor`]s: [`PeerIp`] (safe against spoofed `X-Forwarded-For`),
//! [`Header`], [`Constant`], [`MethodAndPath`] and closures ([`from_fn`]). A refused
//! request gets `429 Too Many Requests` with `Retry-After`, the IETF `RateLimit-Policy` /
//! `RateLimit` headers and an RFC 9457 problem body, all rendered by `sluice-http`;
//! allowed responses carry the same headers (see [`HeaderStyle`]) and their bodies stream
//! through untouched.
//!
//! It decides in `call` and never holds requests in `poll_ready`, so it fits axum's
//! router. With the in-memory store (any store whose [`immediate`](sluice_store::Store::immediate)
//! twin decides without waiting) the decision is made right there, synchronously, and
//! the response future is the inner service's own (no boxing; a client's key is cached,
//! the `RateLimit-Policy` value is built once), so the common case of one limit allocates
//! nothing but the `RateLimit` header value (and the response's header map, as any header
//! does). A caller that prefers a delay to a
//! `429` can have the layer wait for capacity instead
//! ([`max_wait`](RateLimitLayer::max_wait): a reservation, then tokio's timer). A `401`
//! for a missing key carries a `WWW-Authenticate` challenge
//! ([`LimitSpec::www_authenticate`]).
//!
//! With feature `remote-http` or `remote-grpc`, `remote::RemoteRateLimitLayer` asks a
//! remote sluice server (or any Envoy rate limit service) instead: the server owns the
//! limits, the layer sends each request's keys as descriptors and answers as above, with
//! a failure policy for when the server cannot decide.
//!
//! It is not for outbound pacing (waiting for an upstream's quota: that is
//! `sluice-egress`), and it reads no clock (the store does). It spawns nothing, except
//! the cancel of a reservation whose request was dropped while waiting on a store that is
//! not in memory, and, in the remote layer, the connection tasks of its HTTP and gRPC
//! clients (hyper-util's pool, tonic's channel), on the current tokio runtime.
//!
//! ```
//! use sluice_core::Policy;
//! use sluice_store::MemoryStore;
//! use sluice_tower::{Constant, LimitSpec, PeerIp, RateLimitLayer};
//!
//! let layer = RateLimitLayer::new(MemoryStore::new())
//!     .limit(LimitSpec::new("per-ip", Policy::parse("gcra", "5/min")?, PeerIp::new()))?
//!     .limit(LimitSpec::new("global", Policy::parse("gcra", "1000/s")?, Constant::new("all")))?;
//! # let _ = layer;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod body;
mod cache;
mod extract;
mod headers;
mod layer;
mod limits;
mod proxy;
#[cfg(any(feature = "remote-http", feature = "remote-grpc"))]
pub mod remote;
mod service;

pub use body::ResponseBody;
pub use extract::{
    Constant, ForwardedHeader, FromFn, Header, KeyExtractor, KeyRejection, MethodAndPath, PeerIp,
    from_fn,
};
pub use layer::{ConfigError, RateLimitLayer, WithLimit};
pub use limits::{CostFn, LimitSet, LimitSpec, OnMissingKey, RequestCost, UnitCost};
pub use proxy::{Cidr, ProxyError, TrustedProxies};
pub use service::{MISSING_KEY_PROBLEM_TYPE, RateLimit, ResponseFuture, UNAVAILABLE_PROBLEM_TYPE};
pub use sluice_http::HeaderStyle;

/// The README's Rust examples (the store, the algorithms and this layer), compiled and run
/// as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeExamples;
