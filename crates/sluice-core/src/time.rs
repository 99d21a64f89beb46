//! Instants on a limiter's timeline.
//!
//! A [`Nanos`] is a count of nanoseconds since the epoch of whichever [`Clock`](crate::Clock)
//! produced it: process start for [`MonotonicClock`](crate::MonotonicClock), the Unix epoch for
//! Redis `TIME`. Durations stay [`std::time::Duration`].

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

/// An instant on a limiter's timeline, in nanoseconds since the clock's epoch.
///
/// Arithmetic saturates: a limiter must keep deciding, not panic, at the edges of time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nanos(u64);

impl Nanos {
    /// The clock's epoch.
    pub const ZERO: Self = Self(0);
    /// The last representable instant (about 584 years after the epoch).
    pub const MAX: Self = Self(u64::MAX);

    /// An instant `nanos` nanoseconds after the epoch.
    pub const fn new(nanos: u64) -> Self {
        Self(nanos)
    }

    /// Nanoseconds since the epoch.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub const fn saturating_since(self, earlier: Self) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// `self + nanos`, saturating at [`Nanos::MAX`].
    pub const fn plus_nanos(self, nanos: u64) -> Self {
        Self(self.0.saturating_add(nanos))
    }

    /// `self - nanos`, saturating at [`Nanos::ZERO`].
    pub const fn minus_nanos(self, nanos: u64) -> Self {
        Self(self.0.saturating_sub(nanos))
    }
}

/// Whole nanoseconds of `d`, saturating at `u64::MAX`.
pub fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Add<Duration> for Nanos {
    type Output = Self;
    fn add(self, rhs: Duration) -> Self {
        self.plus_nanos(duration_nanos(rhs))
    }
}

impl Sub<Duration> for Nanos {
    type Output = Self;
    fn sub(self, rhs: Duration) -> Self {
        self.minus_nanos(duration_nanos(rhs))
    }
}

impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ns", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_at_both_ends() {
        assert_eq!(Nanos::MAX + Duration::from_secs(1), Nanos::MAX);
        assert_eq!(Nanos::ZERO - Duration::from_secs(1), Nanos::ZERO);
        assert_eq!(
            Nanos::new(5).saturating_since(Nanos::new(9)),
            Duration::ZERO
        );
        assert_eq!(duration_nanos(Duration::MAX), u64::MAX);
    }
}
