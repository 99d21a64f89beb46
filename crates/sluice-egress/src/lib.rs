//! sluice-egress: outbound rate limiting, for programs that call quota-limited upstream
//! APIs (OpenAI, AWS Bedrock, any API that answers 429).
//!
//! The pure parts take `now` and do no I/O: the [`quota`] monitor, the adaptive
//! [`concurrency`] limit and the [`classify`] rules that sort an upstream's answer into
//! retry classes. The async parts (pacing, the client) run on tokio and read time from
//! [`TokioClock`], so that tests under paused tokio time see the same timeline as the
//! timers they wait on.

#[cfg(feature = "batch")]
pub mod batch;
pub mod classify;
pub mod client;
pub mod clock;
pub mod coalesce;
pub mod concurrency;
pub mod events;
pub mod gate;
pub mod job;
pub mod layer;
pub mod pacer;
pub mod probe;
#[cfg(feature = "proxy")]
pub mod proxy;
pub mod quota;
#[cfg(feature = "reqwest")]
pub mod reqwest;
pub mod retry;
mod state;
mod state_file;
#[cfg(any(feature = "rustls", feature = "proxy-tls"))]
mod tls;
pub mod usage;

pub use client::{
    Call, Egress, EgressConfig, EgressConfigError, EgressError, EgressStats, SendError,
};
pub use clock::TokioClock;
pub use events::EgressEvent;
pub use job::{
    Job, JobHeaderError, MAX_WAIT_HEADER, MaxWait, PRIORITY_HEADER, Priority, TENANT_HEADER, Tenant,
};
pub use retry::{ClassBackoff, NextStep, RetryConfig};
pub use state::ThrottleAlertConfig;
