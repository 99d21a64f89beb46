//! sluice-egress: outbound rate limiting, for programs that call quota-limited upstream
//! APIs (OpenAI, AWS Bedrock, any API that answers 429).
//!
//! # The public API
//!
//! - **The client**, at the crate root: [`Egress`] and its [`EgressConfig`];
//!   [`Egress::execute`] for a call with a `send` closure, or [`Egress::call`] and its
//!   [`Call`] to drive the attempts yourself (a proxy relaying a stream); the [`Job`] a
//!   caller describes a call with, and the `x-sluice-*` headers it may come from;
//!   [`EgressEvent`]s from [`Egress::subscribe`]; the retry policy ([`RetryConfig`],
//!   [`ClassBackoff`]); the [`EgressLayer`] for tower HTTP clients.
//! - **Pure building blocks**, each a public module of its own because each is usable
//!   alone and has its own vocabulary: the [`quota`] monitor, the adaptive [`concurrency`]
//!   limit, the [`classify`] rules that sort an answer into retry classes, and the token
//!   [`usage`] estimates. They take `now` and do no I/O.
//! - **Engines and integrations**, behind cargo features: [`proxy`] (`sluice proxy`),
//!   [`batch`] (`sluice batch`) and [`reqwest`] (a reqwest-middleware middleware).
//!
//! Every other module is private, so that the rooms inside can move without breaking
//! anyone. The async parts run on tokio and read time from [`TokioClock`], so that tests
//! under paused tokio time see the same timeline as the timers they wait on.

#[cfg(feature = "batch")]
pub mod batch;
pub mod classify;
mod client;
mod clock;
mod coalesce;
pub mod concurrency;
mod events;
mod gate;
mod job;
mod layer;
mod pacer;
mod probe;
#[cfg(feature = "proxy")]
pub mod proxy;
pub mod quota;
#[cfg(feature = "reqwest")]
pub mod reqwest;
mod retry;
mod state;
mod state_file;
#[cfg(any(feature = "rustls", feature = "proxy-tls"))]
mod tls;
pub mod usage;

pub use client::{
    Attempt, AttemptReport, Call, Egress, EgressConfig, EgressConfigError, EgressError,
    EgressStats, SendError, Settlement,
};
pub use clock::TokioClock;
pub use coalesce::{CoalesceKey, Coalesced, Coalescer};
pub use events::EgressEvent;
pub use gate::{Gate, GateFull, MAX_TENANT_LEN, Turn};
pub use job::{
    Job, JobHeaderError, MAX_WAIT_HEADER, MaxWait, PRIORITY_HEADER, Priority, TENANT_HEADER, Tenant,
};
pub use layer::{
    BoxError, DEFAULT_MAX_BODY, EgressFuture, EgressLayer, EgressLayerError, EgressService,
    ResponseTooLarge,
};
pub use pacer::{DimensionPace, PaceConfig, PaceConfigError, PaceDimension, PaceError};
pub use retry::{ClassBackoff, Failure, NextStep, RetryConfig};
pub use state::ThrottleAlertConfig;
