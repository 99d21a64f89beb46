//! The in-memory store's synchronous fast path.
//!
//! `MemoryStore` decides without waiting (its `Store` futures are `ready`), so the layer
//! asks it directly in `call` and needs no boxed future. A store's futures cannot be named
//! (they are `impl Future` in the trait), so the layer recognises the in-memory store by
//! its type, for the clocks of sluice-core; any other store (Redis, a `FallbackStore`, an
//! in-memory store on another clock) takes the general, boxed path, which decides the same.

use std::any::Any;
use std::time::Duration;

use sluice_core::{Decision, ManualClock, MonotonicClock, SystemClock, Verdict};
use sluice_store::{Limit, MemoryStore, Reservation, Store};

/// A `MemoryStore` the layer can ask synchronously.
#[derive(Clone, Copy)]
pub(crate) enum Memory<'a> {
    Monotonic(&'a MemoryStore<MonotonicClock>),
    Manual(&'a MemoryStore<ManualClock>),
    System(&'a MemoryStore<SystemClock>),
}

/// `store` as a [`Memory`] when it is an in-memory store on one of sluice-core's clocks.
pub(crate) fn memory<S: Store>(store: &S) -> Option<Memory<'_>> {
    let any: &dyn Any = store;
    if let Some(store) = any.downcast_ref() {
        return Some(Memory::Monotonic(store));
    }
    if let Some(store) = any.downcast_ref() {
        return Some(Memory::Manual(store));
    }
    any.downcast_ref().map(Memory::System)
}

macro_rules! each {
    ($self:ident, $store:ident => $body:expr) => {
        match $self {
            Memory::Monotonic($store) => $body,
            Memory::Manual($store) => $body,
            Memory::System($store) => $body,
        }
    };
}

impl Memory<'_> {
    pub(crate) fn check(self, limit: Limit<'_>, cost: u64) -> Decision {
        each!(self, store => store.check_now(limit, cost))
    }

    pub(crate) fn check_all(self, limits: &[Limit<'_>], cost: u64) -> Verdict {
        each!(self, store => store.check_all_now(limits, cost))
    }

    pub(crate) fn reserve(
        self,
        limits: &[Limit<'_>],
        cost: u64,
        max_wait: Duration,
    ) -> Reservation {
        each!(self, store => store.reserve_now(limits, cost, max_wait))
    }

    pub(crate) fn cancel(self, reservation: &Reservation) {
        each!(self, store => store.cancel_now(reservation));
    }
}
