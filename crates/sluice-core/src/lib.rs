//! sluice-core: the pure logic of sluice.
//!
//! Policies ([`Policy`], [`Rate`]), the algorithms ([`Gcra`], [`FixedWindow`],
//! [`SlidingWindow`], [`SlidingLog`], [`Concurrency`]) as stateless functions over a compact
//! state, the [`Decision`] every caller renders its answer from, reservation [`Ticket`]s,
//! canonical [`Key`]s, the [`Clock`] abstraction, a [`CircuitBreaker`] for anything that
//! can fail (a shared store, an upstream API), and for the outbound side an [`Aimd`]
//! controller that adapts a rate or concurrency limit to congestion and [`Backoff`] for
//! retries.
//!
//! This crate does no I/O, spawns nothing and never reads a clock outside [`clock`]: every
//! operation takes `now`. Where state lives (memory, Redis) is the business of
//! `sluice-store` and `sluice-redis`; how answers are rendered (headers, gRPC) belongs to the
//! crates above.
//!
//! ```
//! use sluice_core::{Algorithm, Gcra, GcraState, Nanos, Policy};
//!
//! let policy = Policy::parse("gcra", "10/s").unwrap();
//! let mut state = GcraState::default();
//! let now = Nanos::new(1_000_000_000);
//! for _ in 0..10 {
//!     assert!(Gcra::check(&policy, &mut state, 1, now).allowed);
//! }
//! let refused = Gcra::check(&policy, &mut state, 1, now);
//! assert!(!refused.allowed);
//! assert_eq!(refused.retry_after, Some(std::time::Duration::from_millis(100)));
//! ```

pub mod aimd;
pub mod algorithm;
pub mod backoff;
pub mod breaker;
pub mod calendar;
pub mod clock;
pub mod decision;
pub mod key;
pub mod outcomes;
pub mod policy;
pub mod queue;
pub mod time;

pub use aimd::{Aimd, AimdConfig, AimdError};
pub use algorithm::{
    Algorithm, Concurrency, FixedWindow, Gcra, GcraState, Lease, LeaseState, LogState, SlidingLog,
    SlidingWindow, WindowState,
};
pub use backoff::Backoff;
pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker, FailureRate, Permit, Rejected};
pub use clock::{Clock, ManualClock, MonotonicClock, SystemClock};
pub use decision::{Decision, Plan, Ticket, Verdict};
pub use key::{Key, KeyError};
pub use outcomes::Outcomes;
pub use policy::{AlgorithmKind, MAX_SPAN_NANOS, Policy, PolicyError, Rate};
pub use time::Nanos;
