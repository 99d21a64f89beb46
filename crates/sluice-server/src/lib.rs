//! sluice-server: `sluice serve` as a library.
//!
//! A client (Envoy, a gateway, any service) asks "may this pass?" over Envoy's rate limit
//! service gRPC API or an HTTP JSON API; the server matches the request's descriptors to
//! the configured rules ([`config`], envoy ratelimit's YAML format), decides with any
//! sluice store (a [`Backend`]) and answers per descriptor.
//!
//! # The public API
//!
//! - **Running a server**: [`serve`] on your listeners until a shutdown future resolves;
//!   [`spawn`] on two free loopback ports, stopped through the [`Spawned`] it returns (the
//!   embedded server of tests and benchmarks); [`run`] for a [`Limiter`] over your own
//!   [`Backend`]. [`ServeOptions`] holds `sluice serve`'s flags (with
//!   [`ConnectionLimits`], what a client may hold of a listener, and [`InvalidLimit`]), [`load_config`] loads the
//!   configuration they name (to refuse a bad one before binding), [`ServeError`] (with
//!   [`OverrideStoreError`]) says why a server failed, [`redact`] hides a Redis URL's
//!   password for logs.
//! - **The configuration format**: the [`config`] module, kept public as the YAML format's
//!   namespace (`Config`, `Rule`, `Unit`, `StoreConfig`, `ConfigError`).
//! - **Deciding in process**: [`Limiter::check`] (and `reserve`, `settle`, `cancel`) takes
//!   a [`CheckRequest`] ([`Descriptor`]s of [`EntryRequest`]s, the `POST /v1/check` body)
//!   and answers an [`Outcome`] ([`Code`], one [`Status`] per descriptor) or a
//!   [`ReserveOutcome`], else a [`LimitError`] ([`InvalidRequest`], [`ReservationsFull`]).
//! - **Stores**: a [`Backend`] is a sluice store the server runs on, reporting its
//!   [`BackendHealth`].
//!
//! The rest (HTTP and gRPC services, admin API and dashboard, overrides, metrics, hot keys,
//! hot reload) is reached through a running server, not through Rust paths: its modules
//! are private, free to move.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use sluice_server::{ServeOptions, serve};
//! let http = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let grpc = tokio::net::TcpListener::bind("127.0.0.1:8081").await?;
//! serve(ServeOptions::default(), http, grpc, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

mod admin;
mod backend;
mod edges;
// Public on purpose: the configuration format's own namespace (`Config`, `Rule`, `Unit`,
// `StoreConfig`, `Entry`, `ConfigError`, `DEMO_YAML`), whose module docs are the reference
// of the YAML files `sluice serve` reads. Its submodules are private.
pub mod config;
mod grpc;
mod hot;
mod http;
mod limiter;
mod metrics;
mod overrides;
mod reload;
mod request;
mod reservations;
mod server;

pub use backend::{Backend, BackendHealth};
pub use edges::{ConnectionLimits, InvalidLimit};
pub use limiter::{Code, LimitError, Limiter, Outcome, ReserveOutcome, Status};
pub use overrides::OverrideStoreError;
pub use request::{CheckRequest, Descriptor, EntryRequest, InvalidRequest};
pub use reservations::ReservationsFull;
pub use server::{ServeError, ServeOptions, Spawned, load_config, redact, run, serve, spawn};
