//! Where `now` comes from.
//!
//! Algorithms never call a clock; stores and services read one [`Clock`] and pass the
//! instant down. This module is the only place in sluice-core that reads the OS clock.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::time::{Nanos, duration_nanos};

/// A source of instants. Production reads a monotonic clock; tests drive a [`ManualClock`].
pub trait Clock: Send + Sync + 'static {
    /// The current instant. Never goes backwards for a given clock.
    fn now(&self) -> Nanos;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Nanos {
        (**self).now()
    }
}

/// The production clock: monotonic nanoseconds since this clock was created.
///
/// Reads the CPU's time stamp counter through `quanta` (about 11 ns here, against about
/// 25 ns for `std::time::Instant`), which falls back to the OS monotonic clock where the
/// counter is not invariant. Clones share the same epoch, so their instants are comparable.
#[derive(Clone, Debug)]
#[allow(
    clippy::disallowed_types,
    reason = "the one place that reads the OS clock"
)]
pub struct MonotonicClock {
    clock: quanta::Clock,
    epoch: u64,
}

impl MonotonicClock {
    /// A clock whose epoch is now.
    #[allow(
        clippy::disallowed_types,
        reason = "the one place that reads the OS clock"
    )]
    pub fn new() -> Self {
        let clock = quanta::Clock::new();
        let epoch = clock.raw();
        Self { clock, epoch }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    #[inline]
    fn now(&self) -> Nanos {
        Nanos::new(self.clock.delta_as_nanos(self.epoch, self.clock.raw()))
    }
}

/// Wall-clock time: nanoseconds since the Unix epoch, as the OS reports it.
///
/// For instants that must mean the same on every machine and after a restart (when an
/// override expires, when a persisted quota resets), never for rate decisions: the OS may
/// step this clock backwards, which the [`Clock`] contract otherwise rules out. Reads
/// before 1970 (a badly set clock) give 0.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(
        clippy::disallowed_types,
        reason = "the one place that reads the OS clock"
    )]
    fn now(&self) -> Nanos {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Nanos::new(duration_nanos(since_epoch))
    }
}

/// A clock that moves only when told to. Clones share one time, so a test can hand a clone
/// to a store and keep one to drive it.
#[derive(Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Nanos) -> Self {
        Self {
            nanos: Arc::new(AtomicU64::new(start.as_u64())),
        }
    }

    /// Moves the clock forward by `by` (saturating).
    pub fn advance(&self, by: Duration) {
        let by = duration_nanos(by);
        // fetch_update never fails with a closure that always returns Some.
        let _ = self
            .nanos
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_add(by))
            });
    }

    /// Sets the clock to `to`. Moving it backwards is allowed so that tests can check how
    /// algorithms treat a clock that does not move forward.
    pub fn set(&self, to: Nanos) {
        self.nanos.store(to.as_u64(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Nanos {
        Nanos::new(self.nanos.load(Ordering::SeqCst))
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ManualClock").field(&self.now()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_clones_share_time() {
        let clock = ManualClock::new(Nanos::new(10));
        let other = clock.clone();
        clock.advance(Duration::from_nanos(5));
        assert_eq!(other.now(), Nanos::new(15));
        other.set(Nanos::new(3));
        assert_eq!(clock.now(), Nanos::new(3));
    }

    #[test]
    fn monotonic_clock_does_not_go_backwards() {
        let clock = MonotonicClock::new();
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
    }
}
