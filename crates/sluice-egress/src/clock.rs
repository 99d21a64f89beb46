//! The egress side's one clock: tokio's, anchored to the wall clock.

use sluice_core::{Clock, Nanos, SystemClock, time::duration_nanos};

/// Nanoseconds since the Unix epoch, read as tokio's monotonic time since an anchor.
///
/// The client waits on tokio timers, so it must read the same timeline they run on: under
/// paused tokio time (`#[tokio::test(start_paused = true)]`) this clock moves only as
/// tokio's does, and a pacing test of many simulated minutes runs in milliseconds. Anchoring
/// to the wall clock at creation makes its instants mean something after a restart (a
/// persisted quota's reset), while between anchors it never steps backwards.
///
/// Must be created inside a tokio runtime.
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    start: tokio::time::Instant,
    epoch: Nanos,
}

impl TokioClock {
    /// A clock that reads the wall clock now and tokio's clock after that.
    pub fn new() -> Self {
        Self::anchored_at(SystemClock.now())
    }

    /// A clock that reads `epoch` now: tests use a fixed instant to make runs repeatable.
    pub fn anchored_at(epoch: Nanos) -> Self {
        Self {
            start: tokio::time::Instant::now(),
            epoch,
        }
    }

    /// The tokio instant at which this clock reads `at` (now, if `at` is past).
    pub fn instant_at(&self, at: Nanos) -> tokio::time::Instant {
        let since_start = at.saturating_since(self.epoch);
        self.start + since_start
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Nanos {
        self.epoch.plus_nanos(duration_nanos(self.start.elapsed()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_paused_tokio_time() {
        let clock = TokioClock::anchored_at(Nanos::new(1_000));
        assert_eq!(clock.now(), Nanos::new(1_000));
        tokio::time::sleep(Duration::from_secs(90)).await;
        assert_eq!(clock.now(), Nanos::new(1_000 + 90_000_000_000));
        assert_eq!(
            clock.instant_at(Nanos::new(1_000 + 1_000_000_000)) + Duration::from_secs(89),
            tokio::time::Instant::now()
        );
    }
}
