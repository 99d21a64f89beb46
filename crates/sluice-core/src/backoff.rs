//! How long to wait before retrying: exponential backoff with full jitter.
//!
//! [`Backoff::full_jitter`] waits a uniformly random time between zero and an exponentially
//! growing ceiling ("full jitter", from the AWS Architecture Blog's "Exponential Backoff And
//! Jitter"): clients that failed together spread out instead of retrying in lockstep. When
//! the upstream said how long to wait (`Retry-After`), [`after_hint`] waits at least that,
//! plus a random spread for the same reason.
//!
//! Randomness is passed in as `unit`, a number in `[0, 1)` the caller draws, so this module
//! stays pure and its answers are exact in tests.
//!
//! ```
//! use std::time::Duration;
//! use sluice_core::Backoff;
//!
//! let backoff = Backoff::default();
//! assert_eq!(backoff.ceiling(0), Duration::from_millis(500));
//! assert_eq!(backoff.ceiling(3), Duration::from_secs(4));
//! assert_eq!(backoff.ceiling(10), Duration::from_secs(30));
//! assert_eq!(backoff.full_jitter(3, 0.25), Duration::from_secs(1));
//! assert_eq!(
//!     sluice_core::backoff::after_hint(Duration::from_secs(2), Duration::from_secs(1), 0.5),
//!     Duration::from_millis(2500)
//! );
//! ```

use std::time::Duration;

use crate::time::duration_nanos;

/// Exponential backoff: the `retry`-th retry waits up to `base × 2^retry`, at most `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first retry's wait.
    pub base: Duration,
    /// The ceiling of every wait.
    pub max: Duration,
}

impl Default for Backoff {
    /// 500 ms for the first retry, doubling up to 30 s.
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The longest wait before retry number `retry` (0 for the first retry):
    /// `min(max, base × 2^retry)`, saturating.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let max = self.max.as_nanos();
        if self.base.is_zero() {
            return Duration::ZERO;
        }
        // A shift of 128 or more, or an overflowing product, is far beyond any `max`.
        let nanos = 1u128
            .checked_shl(retry)
            .and_then(|factor| self.base.as_nanos().checked_mul(factor))
            .map_or(max, |nanos| nanos.min(max));
        // At most `max.as_nanos()`, so it is a valid `Duration`.
        Duration::from_nanos_u128(nanos)
    }

    /// The wait before retry number `retry` with full jitter: `unit × ceiling(retry)`, where
    /// `unit` is a random number in `[0, 1)` (clamped to `[0, 1]`; NaN counts as 0).
    pub fn full_jitter(&self, retry: u32, unit: f64) -> Duration {
        scale(self.ceiling(retry), unit)
    }

    /// The wait before retry number `retry` with equal jitter: between half and all of
    /// `ceiling(retry)`, `half + unit × (ceiling − half)` (`unit` as for
    /// [`full_jitter`](Self::full_jitter)). Never the instant retry full jitter may draw.
    pub fn equal_jitter(&self, retry: u32, unit: f64) -> Duration {
        let ceiling = self.ceiling(retry);
        let half = ceiling / 2;
        half + scale(ceiling - half, unit)
    }
}

/// Waits at least `hint` (an upstream's Retry-After), plus up to `spread` so that many
/// clients told the same hint do not return at the same instant: `hint + unit × spread`,
/// saturating, where `unit` is a random number in `[0, 1)` (clamped to `[0, 1]`; NaN counts
/// as 0).
pub fn after_hint(hint: Duration, spread: Duration, unit: f64) -> Duration {
    hint.saturating_add(scale(spread, unit))
}

/// `unit × d`, never above `d` (beyond about 584 years, `d` counts as that).
fn scale(d: Duration, unit: f64) -> Duration {
    let unit = if unit.is_nan() {
        0.0
    } else {
        unit.clamp(0.0, 1.0)
    };
    let nanos = duration_nanos(d);
    // Exact to the nanosecond below 2^53 ns (104 days); past that a random wait may round.
    let scaled = nanos as f64 * unit;
    Duration::from_nanos(f64_to_nanos(scaled, nanos))
}

/// `x` as whole nanoseconds, clamped to `[0, max]` (NaN gives 0).
fn f64_to_nanos(x: f64, max: u64) -> u64 {
    let x = if x.is_nan() { 0.0 } else { x.max(0.0) };
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "x is non-negative, and `as` saturates at u64::MAX; the result is clamped to max"
    )]
    let nanos = x as u64;
    nanos.min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn default_is_500ms_doubling_to_30s() {
        let b = Backoff::default();
        let ceilings: Vec<_> = (0..9).map(|r| b.ceiling(r)).collect();
        assert_eq!(
            ceilings,
            [500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000].map(ms)
        );
    }

    #[test]
    fn ceiling_saturates_at_max_for_huge_retries() {
        let b = Backoff {
            base: Duration::from_nanos(1),
            max: Duration::MAX,
        };
        assert_eq!(b.ceiling(0), Duration::from_nanos(1));
        assert_eq!(b.ceiling(40), Duration::from_nanos(1 << 40));
        assert_eq!(b.ceiling(127), Duration::MAX);
        assert_eq!(b.ceiling(128), Duration::MAX);
        assert_eq!(b.ceiling(u32::MAX), Duration::MAX);
        let b = Backoff {
            base: Duration::MAX,
            max: Duration::MAX,
        };
        assert_eq!(b.ceiling(1), Duration::MAX);
    }

    #[test]
    fn ceiling_edge_configs() {
        let zero = Backoff {
            base: Duration::ZERO,
            max: ms(100),
        };
        assert_eq!(zero.ceiling(u32::MAX), Duration::ZERO);
        let base_above_max = Backoff {
            base: ms(500),
            max: ms(100),
        };
        assert_eq!(base_above_max.ceiling(0), ms(100));
    }

    #[test]
    fn equal_jitter_is_between_half_and_all_of_the_ceiling() {
        let b = Backoff::default();
        assert_eq!(b.equal_jitter(2, 0.0), ms(1000));
        assert_eq!(b.equal_jitter(2, 0.5), ms(1500));
        assert_eq!(b.equal_jitter(2, 1.0), ms(2000));
        assert_eq!(b.equal_jitter(2, f64::NAN), ms(1000));
    }

    #[test]
    fn full_jitter_scales_the_ceiling_and_clamps_unit() {
        let b = Backoff::default();
        assert_eq!(b.full_jitter(2, 0.0), Duration::ZERO);
        assert_eq!(b.full_jitter(2, 0.5), ms(1000));
        assert_eq!(b.full_jitter(2, 0.999), ms(1998));
        for (unit, want) in [
            (f64::NAN, Duration::ZERO),
            (-1.0, Duration::ZERO),
            (f64::NEG_INFINITY, Duration::ZERO),
            (1.0, ms(2000)),
            (7.0, ms(2000)),
            (f64::INFINITY, ms(2000)),
        ] {
            assert_eq!(b.full_jitter(2, unit), want, "{unit}");
        }
    }

    #[test]
    fn after_hint_adds_a_share_of_the_spread() {
        let s = Duration::from_secs;
        assert_eq!(after_hint(s(10), s(2), 0.0), s(10));
        assert_eq!(after_hint(s(10), s(2), 0.25), ms(10_500));
        assert_eq!(after_hint(s(10), Duration::ZERO, 0.9), s(10));
        assert_eq!(after_hint(s(10), s(2), f64::NAN), s(10));
        assert_eq!(after_hint(s(10), s(2), 2.0), s(12));
        assert_eq!(after_hint(Duration::MAX, s(2), 0.5), Duration::MAX);
    }

    /// Any `f64`, with the awkward ones often.
    fn unit() -> impl Strategy<Value = f64> {
        prop_oneof![
            4 => 0.0f64..1.0,
            1 => any::<f64>(),
            1 => Just(f64::NAN),
            1 => Just(1.0),
        ]
    }

    fn duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            4 => (0u64..100_000_000_000).prop_map(Duration::from_nanos),
            1 => any::<u64>().prop_map(Duration::from_nanos),
            1 => (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        ]
    }

    proptest! {
        /// The ceiling never exceeds `max`, and never shrinks from one retry to the next.
        #[test]
        fn ceiling_is_monotone_and_bounded(base in duration(), max in duration(), retry in 0u32..200) {
            let b = Backoff { base, max };
            prop_assert!(b.ceiling(retry) <= max);
            prop_assert!(b.ceiling(retry) <= b.ceiling(retry + 1));
            prop_assert!(b.ceiling(0) == base.min(max));
        }

        /// A full-jitter wait never exceeds the ceiling, and grows with `unit`.
        #[test]
        fn full_jitter_is_within_the_ceiling(
            base in duration(),
            max in duration(),
            retry in 0u32..200,
            a in unit(),
            b in unit(),
        ) {
            let backoff = Backoff { base, max };
            prop_assert!(backoff.full_jitter(retry, a) <= backoff.ceiling(retry));
            if a <= b {
                prop_assert!(backoff.full_jitter(retry, a) <= backoff.full_jitter(retry, b));
            }
        }

        /// A hinted wait is at least the hint and at most the hint plus the spread.
        #[test]
        fn after_hint_stays_within_hint_and_spread(hint in duration(), spread in duration(), unit in unit()) {
            let wait = after_hint(hint, spread, unit);
            prop_assert!(wait >= hint);
            prop_assert!(wait <= hint.saturating_add(spread));
        }
    }
}
