//! sluice-store: where limiter state lives.
//!
//! One async [`Store`] trait, the [`MemoryStore`] that is the embedded default, the
//! [`FallbackStore`] that guards a shared store with a timeout and a circuit breaker and
//! applies each limit's [`FailurePolicy`] when it fails, and (with the `conformance`
//! feature) the suite every store must pass. The algorithms themselves
//! live in `sluice-core`; a store only keeps their states and applies them atomically.
//! Nothing here spawns background work: callers drive cleanup
//! ([`MemoryStore::remove_expired`]).

#[cfg(feature = "conformance")]
pub mod conformance;
mod dispatch;
pub mod fallback;
mod memory;
pub mod queue;
mod store;

pub use fallback::{FallbackConfig, FallbackError, FallbackStats, FallbackStore};
pub use memory::{MemoryConfig, MemoryStats, MemoryStore};
pub use store::{FailurePolicy, Hold, Immediate, Limit, Reservation, Store};
