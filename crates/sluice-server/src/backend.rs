//! The stores `sluice serve` can run on, and what the server reads from them for
//! `/metrics` and `/readyz`.

use sluice_core::BreakerState;
use sluice_redis::RedisStore;
use sluice_store::{FallbackStore, MemoryStore, Store};

/// A [`Store`] the server can run on: it also reports its health and is swept now and then.
pub trait Backend: Store {
    /// `memory` or `redis`, for logs and metrics.
    fn kind(&self) -> &'static str;

    /// A snapshot of the store's counters.
    fn health(&self) -> BackendHealth;

    /// Housekeeping the server runs every few seconds (e.g. dropping expired states).
    fn sweep(&self) {}
}

/// What a store says about itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendHealth {
    /// Limiter states held in this process's memory.
    pub keys: u64,
    /// States evicted to stay within the key budget.
    pub evictions: u64,
    /// Calls to the shared store that failed or timed out.
    pub store_errors: u64,
    /// Decisions made without the shared store (fail-open, fail-closed or local).
    pub degraded_decisions: u64,
    /// Whether the circuit breaker around the shared store is open: decisions are degraded.
    pub breaker_open: bool,
}

impl Backend for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn health(&self) -> BackendHealth {
        let stats = self.stats();
        BackendHealth {
            keys: stats.keys as u64,
            evictions: stats.evicted_expired + stats.evicted_live,
            ..BackendHealth::default()
        }
    }

    fn sweep(&self) {
        self.remove_expired();
    }
}

/// Redis guarded by a breaker, falling back to this process's memory.
pub(crate) type RedisBackend = FallbackStore<RedisStore, MemoryStore>;

impl Backend for RedisBackend {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn health(&self) -> BackendHealth {
        let stats = self.stats();
        let local = self.secondary().health();
        BackendHealth {
            keys: local.keys,
            evictions: local.evictions,
            store_errors: stats.primary_errors + stats.timeouts,
            degraded_decisions: stats.degraded_decisions,
            breaker_open: matches!(self.breaker_state(), BreakerState::Open { .. }),
        }
    }

    fn sweep(&self) {
        self.secondary().sweep();
    }
}
