//! sluice-server: `sluice serve` as a library.
//!
//! A client (Envoy, a gateway, any service) asks "may this pass?" over Envoy's rate limit
//! service gRPC API or an HTTP JSON API; the server matches the request's descriptors to
//! the configured rules ([`config`], envoy ratelimit's YAML format), decides with any
//! sluice store ([`backend`]) and answers per descriptor.
//!
//! - [`limiter`]: the decision service both protocols call (matching, all-or-nothing
//!   checks, shadow mode, reservations, metrics).
//! - [`http`] and [`grpc`]: the two protocols, thin translations to and from [`request`]
//!   and [`limiter`] types.
//! - [`hot`]: hot keys, sampled from the decisions whatever the store.
//! - [`reload`]: hot reload of the configuration; [`server`]: building the store the
//!   configuration names and running both listeners until shutdown.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use sluice_server::{ServeOptions, serve};
//! let http = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let grpc = tokio::net::TcpListener::bind("127.0.0.1:8081").await?;
//! serve(ServeOptions::default(), http, grpc, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod backend;
pub mod config;
pub mod grpc;
pub mod hot;
pub mod http;
pub mod limiter;
pub mod metrics;
pub mod overrides;
pub mod reload;
pub mod request;
pub mod reservations;
pub mod server;

pub use backend::{Backend, BackendHealth};
pub use config::{Config, ConfigError};
pub use limiter::{Code, Limiter, Outcome};
pub use server::{ServeError, ServeOptions, Spawned, load_config, run, serve, spawn};
