//! AIMD: additive increase, multiplicative decrease, over one `f64` value.
//!
//! [`Aimd`] steers a value (a rate in units per second, or a concurrency limit) towards what
//! an upstream can take, the way TCP steers its congestion window: every run of
//! `successes_per_increase` successes adds `increase`, every congestion signal (a 429, a
//! timeout) multiplies by `decrease`. The value always stays within `[min, ceiling]`, where
//! the [ceiling](Aimd::ceiling) is `max`, or lower when an outside limit is
//! [set](Aimd::set_ceiling) (a quota learned from an upstream's headers).
//!
//! A burst of congestion signals is one event, not many: after a decrease, further signals
//! are ignored for `decrease_cooldown`, so twenty 429s answering twenty calls sent together
//! halve the value once, not twenty times.
//!
//! Pure like the rest of the crate: every report takes `now`, nothing reads a clock.
//!
//! ```
//! use std::time::Duration;
//! use sluice_core::{Aimd, AimdConfig, Nanos};
//!
//! let config = AimdConfig {
//!     min: 1.0,
//!     max: 100.0,
//!     increase: 1.0,
//!     decrease: 0.5,
//!     successes_per_increase: 10,
//!     decrease_cooldown: Duration::from_secs(1),
//! };
//! config.validate().unwrap();
//! let mut limit = Aimd::new(config, 20.0);
//! let t0 = Nanos::new(0);
//! for _ in 0..10 {
//!     limit.on_success(t0);
//! }
//! assert_eq!(limit.value(), 21.0);
//! assert!(limit.on_congestion(t0));
//! assert_eq!(limit.value(), 10.5);
//! // The same burst of 429s, half a second later: ignored.
//! assert!(!limit.on_congestion(Nanos::new(500_000_000)));
//! assert_eq!(limit.value(), 10.5);
//! ```

use std::time::Duration;

use crate::time::Nanos;

/// How an [`Aimd`] value moves, and between which bounds.
///
/// There is no `Default`: the bounds and the step depend on what the value measures (a
/// concurrency of 1 to 64, a rate of 0.1 to 10 000 tokens per second), and a guess would be
/// wrong for most uses.
#[derive(Clone, Debug, PartialEq)]
pub struct AimdConfig {
    /// The lowest the value goes. Finite and above zero.
    pub min: f64,
    /// The highest the value goes. Finite and at least `min`.
    pub max: f64,
    /// Added after each run of `successes_per_increase` successes. Finite and above zero.
    pub increase: f64,
    /// The factor the value is multiplied by on congestion, in `(0, 1)`: `0.5` halves it.
    pub decrease: f64,
    /// How many successes in a row earn one increase. Zero is treated as one.
    pub successes_per_increase: u32,
    /// Congestion signals within this long after a decrease are ignored, so that one burst
    /// of failures counts as one decrease. Zero: every signal decreases.
    pub decrease_cooldown: Duration,
}

impl AimdConfig {
    /// Checks every field; the error names the first bad one and its value. NaN and
    /// infinities are rejected.
    pub fn validate(&self) -> Result<(), AimdError> {
        for (field, value) in [
            ("min", self.min),
            ("max", self.max),
            ("increase", self.increase),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(AimdError::NotPositive { field, value });
            }
        }
        if self.max < self.min {
            return Err(AimdError::MaxBelowMin {
                min: self.min,
                max: self.max,
            });
        }
        if !(self.decrease > 0.0 && self.decrease < 1.0) {
            return Err(AimdError::DecreaseOutOfRange(self.decrease));
        }
        Ok(())
    }

    /// This configuration with every field forced into its valid range, so that a bad one
    /// degrades instead of panicking or producing NaN. Valid fields are kept as they are.
    fn sanitized(self) -> Self {
        let min = if self.min.is_finite() && self.min > 0.0 {
            self.min
        } else if self.min == f64::INFINITY {
            f64::MAX
        } else {
            // Above zero, so that the value can never stall at nothing.
            f64::MIN_POSITIVE
        };
        Self {
            min,
            // `f64::min`/`max` return the other operand for NaN: a NaN max means no max.
            max: self.max.min(f64::MAX).max(min),
            // No valid step: never rise (the safe direction for a limit).
            increase: if self.increase > 0.0 {
                self.increase.min(f64::MAX)
            } else {
                0.0
            },
            // No valid factor: fall straight to `min` (again the safe direction).
            decrease: if self.decrease.is_nan() {
                0.0
            } else {
                self.decrease.clamp(0.0, 1.0)
            },
            successes_per_increase: self.successes_per_increase.max(1),
            decrease_cooldown: self.decrease_cooldown,
        }
    }
}

/// Why an [`AimdConfig`] is invalid. Each variant names the field and the value at fault.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AimdError {
    /// `min`, `max` or `increase` is zero, negative, NaN or infinite.
    #[error("aimd.{field} must be a finite number above 0, got {value}")]
    NotPositive {
        /// The field at fault: `min`, `max` or `increase`.
        field: &'static str,
        /// Its value.
        value: f64,
    },
    /// `max` is below `min`.
    #[error("aimd.max must be at least aimd.min ({min}), got {max}")]
    MaxBelowMin {
        /// The configured `min`.
        min: f64,
        /// The configured `max`.
        max: f64,
    },
    /// `decrease` is not in `(0, 1)`.
    #[error("aimd.decrease must be in (0, 1), got {0}")]
    DecreaseOutOfRange(f64),
}

/// An AIMD-controlled value (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct Aimd {
    config: AimdConfig,
    value: f64,
    /// The outside ceiling, if any: finite and above zero.
    outside: Option<f64>,
    /// Successes since the last increase or congestion signal.
    successes: u32,
    /// When the last congestion signal that was not ignored arrived.
    last_decrease: Option<Nanos>,
}

impl Aimd {
    /// A controller starting at `initial`, clamped to `[min, max]` (NaN starts at `min`).
    ///
    /// `config` should have passed [`AimdConfig::validate`]. An invalid one does not panic:
    /// each bad field is forced into range (a bad `min` becomes the smallest positive
    /// `f64`, a `max` below `min` becomes `min`, NaN or infinite `max` becomes `f64::MAX`, a
    /// bad `increase` becomes 0 so the value never rises, a `decrease` outside `[0, 1]` is
    /// clamped and NaN becomes 0), and [`config`](Self::config) shows the result.
    pub fn new(config: AimdConfig, initial: f64) -> Self {
        let config = config.sanitized();
        Self {
            value: initial.max(config.min).min(config.max),
            config,
            outside: None,
            successes: 0,
            last_decrease: None,
        }
    }

    /// The current value, within `[config().min, ceiling()]`.
    pub const fn value(&self) -> f64 {
        self.value
    }

    /// The configuration in force (as given when valid; see [`new`](Self::new)).
    pub const fn config(&self) -> &AimdConfig {
        &self.config
    }

    /// The highest the value may go now: `max`, or the outside ceiling if lower, but never
    /// below `min`.
    pub fn ceiling(&self) -> f64 {
        self.outside
            .map_or(self.config.max, |outside| outside.min(self.config.max))
            .max(self.config.min)
    }

    /// Sets or removes (`None`) an outside ceiling, such as a quota learned from an
    /// upstream's headers. A value above the new ceiling drops to it at once; removing or
    /// raising the ceiling leaves the value where it is, to rise by successes. A ceiling
    /// that is not finite or not above zero is taken as `None`.
    pub fn set_ceiling(&mut self, ceiling: Option<f64>) {
        self.outside = ceiling.filter(|c| c.is_finite() && *c > 0.0);
        self.value = self.value.min(self.ceiling());
    }

    /// Counts a success at `now`. Every `successes_per_increase`-th success in a row adds
    /// `increase`, up to the ceiling. Returns whether the value rose.
    ///
    /// `now` is not needed by today's rules; it is part of the signature so that every
    /// report carries its instant, as [`on_congestion`](Self::on_congestion)'s does.
    pub fn on_success(&mut self, now: Nanos) -> bool {
        let _ = now;
        self.successes = self.successes.saturating_add(1);
        if self.successes < self.config.successes_per_increase {
            return false;
        }
        self.successes = 0;
        let before = self.value;
        // The value is never above the ceiling, and `increase` is never negative.
        self.value = (before + self.config.increase).min(self.ceiling());
        self.value > before
    }

    /// Reports congestion (a 429, an overload answer, a timeout) at `now`: multiplies the
    /// value by `decrease`, down to `min`, unless a previous signal started a cooldown less
    /// than `decrease_cooldown` ago. Always ends the current run of successes. Returns
    /// whether the value fell.
    ///
    /// A signal outside the cooldown starts a new one even when the value is already at
    /// `min`, so the rest of that burst stays one event once successes raise the value.
    pub fn on_congestion(&mut self, now: Nanos) -> bool {
        self.successes = 0;
        if let Some(last) = self.last_decrease {
            // Also ignores a `now` before `last` (callers whose instants race).
            if now.saturating_since(last) < self.config.decrease_cooldown {
                return false;
            }
        }
        self.last_decrease = Some(now);
        let before = self.value;
        self.value = (before * self.config.decrease).max(self.config.min);
        self.value < before
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    fn at_ms(ms: u64) -> Nanos {
        Nanos::new(ms * MS)
    }

    fn config() -> AimdConfig {
        AimdConfig {
            min: 1.0,
            max: 10.0,
            increase: 1.0,
            decrease: 0.5,
            successes_per_increase: 2,
            decrease_cooldown: Duration::from_millis(100),
        }
    }

    #[test]
    fn validate_accepts_a_sound_config_and_names_the_bad_field() {
        assert_eq!(config().validate(), Ok(()));
        let equal = AimdConfig {
            max: 1.0,
            ..config()
        };
        assert_eq!(equal.validate(), Ok(()));
        let cases: &[(AimdConfig, &str)] = &[
            (
                AimdConfig {
                    min: 0.0,
                    ..config()
                },
                "aimd.min must be a finite number above 0, got 0",
            ),
            (
                AimdConfig {
                    min: f64::NAN,
                    ..config()
                },
                "aimd.min must be a finite number above 0, got NaN",
            ),
            (
                AimdConfig {
                    max: f64::INFINITY,
                    ..config()
                },
                "aimd.max must be a finite number above 0, got inf",
            ),
            (
                AimdConfig {
                    increase: -1.0,
                    ..config()
                },
                "aimd.increase must be a finite number above 0, got -1",
            ),
            (
                AimdConfig {
                    min: 5.0,
                    max: 2.5,
                    ..config()
                },
                "aimd.max must be at least aimd.min (5), got 2.5",
            ),
            (
                AimdConfig {
                    decrease: 1.5,
                    ..config()
                },
                "aimd.decrease must be in (0, 1), got 1.5",
            ),
            (
                AimdConfig {
                    decrease: 1.0,
                    ..config()
                },
                "aimd.decrease must be in (0, 1), got 1",
            ),
            (
                AimdConfig {
                    decrease: 0.0,
                    ..config()
                },
                "aimd.decrease must be in (0, 1), got 0",
            ),
            (
                AimdConfig {
                    decrease: f64::NAN,
                    ..config()
                },
                "aimd.decrease must be in (0, 1), got NaN",
            ),
        ];
        for (config, want) in cases {
            let err = config.validate().unwrap_err();
            assert_eq!(err.to_string(), *want, "{config:?}");
        }
    }

    #[test]
    fn initial_value_is_clamped() {
        assert_eq!(Aimd::new(config(), 5.0).value(), 5.0);
        assert_eq!(Aimd::new(config(), 0.1).value(), 1.0);
        assert_eq!(Aimd::new(config(), 99.0).value(), 10.0);
        assert_eq!(Aimd::new(config(), f64::NAN).value(), 1.0);
        assert_eq!(Aimd::new(config(), f64::INFINITY).value(), 10.0);
    }

    #[test]
    fn increases_after_each_run_of_successes_up_to_the_ceiling() {
        let mut aimd = Aimd::new(config(), 8.0);
        assert!(!aimd.on_success(at_ms(0)));
        assert!(aimd.on_success(at_ms(1)));
        assert_eq!(aimd.value(), 9.0);
        assert!(!aimd.on_success(at_ms(2)));
        assert!(aimd.on_success(at_ms(3)));
        assert_eq!(aimd.value(), 10.0);
        // At the ceiling: runs complete but change nothing.
        assert!(!aimd.on_success(at_ms(4)));
        assert!(!aimd.on_success(at_ms(5)));
        assert_eq!(aimd.value(), 10.0);
    }

    #[test]
    fn an_increase_is_clamped_to_the_ceiling() {
        let mut aimd = Aimd::new(
            AimdConfig {
                increase: 4.0,
                successes_per_increase: 1,
                ..config()
            },
            8.0,
        );
        assert!(aimd.on_success(at_ms(0)));
        assert_eq!(aimd.value(), 10.0);
    }

    #[test]
    fn zero_successes_per_increase_is_treated_as_one() {
        let mut aimd = Aimd::new(
            AimdConfig {
                successes_per_increase: 0,
                ..config()
            },
            1.0,
        );
        assert_eq!(aimd.config().successes_per_increase, 1);
        assert!(aimd.on_success(at_ms(0)));
        assert_eq!(aimd.value(), 2.0);
    }

    #[test]
    fn congestion_multiplies_down_to_min() {
        let mut aimd = Aimd::new(config(), 10.0);
        assert!(aimd.on_congestion(at_ms(0)));
        assert_eq!(aimd.value(), 5.0);
        assert!(aimd.on_congestion(at_ms(100)));
        assert_eq!(aimd.value(), 2.5);
        assert!(aimd.on_congestion(at_ms(200)));
        assert_eq!(aimd.value(), 1.25);
        assert!(aimd.on_congestion(at_ms(300)));
        assert_eq!(aimd.value(), 1.0);
        assert!(!aimd.on_congestion(at_ms(400)), "already at min");
        assert_eq!(aimd.value(), 1.0);
    }

    #[test]
    fn a_burst_of_congestion_within_the_cooldown_is_one_decrease() {
        let mut aimd = Aimd::new(config(), 8.0);
        assert!(aimd.on_congestion(at_ms(1000)));
        for t in [1000, 1001, 1050, 1099] {
            assert!(!aimd.on_congestion(at_ms(t)), "at {t} ms");
        }
        assert_eq!(aimd.value(), 4.0);
        // Exactly `decrease_cooldown` after the decrease, signals count again.
        assert!(aimd.on_congestion(at_ms(1100)));
        assert_eq!(aimd.value(), 2.0);
        // An instant before the last decrease (racing callers) is within the cooldown.
        assert!(!aimd.on_congestion(at_ms(900)));
    }

    #[test]
    fn a_signal_at_min_still_starts_a_cooldown() {
        let mut aimd = Aimd::new(
            AimdConfig {
                successes_per_increase: 1,
                ..config()
            },
            1.0,
        );
        assert!(!aimd.on_congestion(at_ms(0)));
        assert!(aimd.on_success(at_ms(10)));
        // A straggler of the same burst: ignored.
        assert!(!aimd.on_congestion(at_ms(20)));
        assert_eq!(aimd.value(), 2.0);
    }

    #[test]
    fn zero_cooldown_decreases_on_every_signal() {
        let mut aimd = Aimd::new(
            AimdConfig {
                decrease_cooldown: Duration::ZERO,
                ..config()
            },
            8.0,
        );
        assert!(aimd.on_congestion(at_ms(0)));
        assert!(aimd.on_congestion(at_ms(0)));
        assert_eq!(aimd.value(), 2.0);
    }

    #[test]
    fn congestion_resets_the_run_of_successes_even_when_ignored() {
        let mut aimd = Aimd::new(config(), 4.0);
        assert!(aimd.on_congestion(at_ms(0)));
        assert!(!aimd.on_success(at_ms(1)));
        assert!(!aimd.on_congestion(at_ms(2)), "within the cooldown");
        assert!(!aimd.on_success(at_ms(3)), "the run restarted");
        assert!(aimd.on_success(at_ms(4)));
        assert_eq!(aimd.value(), 3.0);
    }

    #[test]
    fn an_outside_ceiling_lowers_the_value_and_caps_increases() {
        let mut aimd = Aimd::new(config(), 8.0);
        aimd.set_ceiling(Some(6.0));
        assert_eq!((aimd.ceiling(), aimd.value()), (6.0, 6.0));
        aimd.on_success(at_ms(0));
        assert!(!aimd.on_success(at_ms(1)));
        assert_eq!(aimd.value(), 6.0);
        // Raising or removing it leaves the value where it is.
        aimd.set_ceiling(Some(9.0));
        assert_eq!((aimd.ceiling(), aimd.value()), (9.0, 6.0));
        aimd.set_ceiling(None);
        assert_eq!((aimd.ceiling(), aimd.value()), (10.0, 6.0));
        // Never above max, never below min.
        aimd.set_ceiling(Some(50.0));
        assert_eq!(aimd.ceiling(), 10.0);
        aimd.set_ceiling(Some(0.5));
        assert_eq!((aimd.ceiling(), aimd.value()), (1.0, 1.0));
    }

    #[test]
    fn a_meaningless_outside_ceiling_is_no_ceiling() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -3.0] {
            let mut aimd = Aimd::new(config(), 8.0);
            aimd.set_ceiling(Some(2.0));
            aimd.set_ceiling(Some(bad));
            assert_eq!(aimd.ceiling(), 10.0, "{bad}");
            assert_eq!(aimd.value(), 2.0, "{bad}");
        }
    }

    #[test]
    fn an_invalid_config_is_forced_into_range() {
        let aimd = Aimd::new(
            AimdConfig {
                min: f64::NAN,
                max: f64::NAN,
                increase: f64::NAN,
                decrease: f64::NAN,
                successes_per_increase: 0,
                decrease_cooldown: Duration::ZERO,
            },
            f64::NAN,
        );
        let c = aimd.config();
        assert_eq!(
            (c.min, c.max, c.increase, c.decrease),
            (f64::MIN_POSITIVE, f64::MAX, 0.0, 0.0)
        );
        assert_eq!(aimd.value(), f64::MIN_POSITIVE);
        let c = Aimd::new(
            AimdConfig {
                min: 5.0,
                max: 2.0,
                decrease: 3.0,
                ..config()
            },
            4.0,
        );
        assert_eq!((c.config().max, c.config().decrease), (5.0, 1.0));
        assert_eq!(c.value(), 5.0);
    }

    #[derive(Clone, Copy, Debug)]
    enum Op {
        Success,
        Congestion,
        Ceiling(Option<f64>),
        Advance(u64),
    }

    fn op(f: BoxedStrategy<f64>) -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => Just(Op::Success),
            3 => Just(Op::Congestion),
            1 => proptest::option::of(f).prop_map(Op::Ceiling),
            2 => (0u64..200).prop_map(Op::Advance),
        ]
    }

    /// Any `f64`, with the awkward ones (NaN, infinities, zero, negatives) often.
    fn any_f64() -> BoxedStrategy<f64> {
        prop_oneof![
            2 => any::<f64>(),
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => Just(0.0),
            4 => -2.0f64..100.0,
        ]
        .boxed()
    }

    /// Drives `aimd` through `ops`, checking the laws after each step.
    fn check_laws(mut aimd: Aimd, ops: Vec<Op>) -> Result<(), TestCaseError> {
        let mut now = Nanos::new(0);
        let mut last_decrease: Option<Nanos> = None;
        for op in ops {
            let before = aimd.value();
            match op {
                Op::Success => {
                    let rose = aimd.on_success(now);
                    prop_assert!(aimd.value() >= before, "a success lowered the value");
                    prop_assert_eq!(rose, aimd.value() > before);
                }
                Op::Congestion => {
                    let fell = aimd.on_congestion(now);
                    prop_assert!(aimd.value() <= before, "congestion raised the value");
                    prop_assert_eq!(fell, aimd.value() < before);
                    if fell {
                        if let Some(last) = last_decrease {
                            prop_assert!(
                                now.saturating_since(last) >= aimd.config().decrease_cooldown,
                                "two decreases within one cooldown"
                            );
                        }
                        last_decrease = Some(now);
                    }
                }
                Op::Ceiling(c) => {
                    aimd.set_ceiling(c);
                    prop_assert!(aimd.value() <= before);
                }
                Op::Advance(ms) => now = now.plus_nanos(ms * MS),
            }
            let c = aimd.config();
            prop_assert!(aimd.value().is_finite());
            prop_assert!(c.min > 0.0 && c.min <= aimd.ceiling() && aimd.ceiling() <= c.max);
            prop_assert!(aimd.value() >= c.min && aimd.value() <= aimd.ceiling());
        }
        Ok(())
    }

    proptest! {
        /// With a valid config: the value stays within `[min, ceiling]`, successes never
        /// lower it, congestion never raises it, the return values say whether it moved,
        /// and two decreases are never closer than the cooldown.
        #[test]
        fn laws_hold_for_valid_configs(
            min in 0.01f64..50.0,
            span in 0.0f64..100.0,
            increase in 0.01f64..20.0,
            decrease in 0.01f64..0.99,
            per in 0u32..4,
            cooldown_ms in 0u64..300,
            initial in any_f64(),
            ops in proptest::collection::vec(op(any_f64()), 0..200),
        ) {
            let config = AimdConfig {
                min,
                max: min + span,
                increase,
                decrease,
                successes_per_increase: per,
                decrease_cooldown: Duration::from_millis(cooldown_ms),
            };
            prop_assert_eq!(config.validate(), Ok(()));
            let aimd = Aimd::new(config, initial);
            prop_assert_eq!(aimd.config().min, min);
            prop_assert_eq!(aimd.config().max, min + span);
            check_laws(aimd, ops)?;
        }

        /// An invalid config never panics and never yields a value outside its bounds.
        #[test]
        fn laws_hold_for_any_config(
            min in any_f64(),
            max in any_f64(),
            increase in any_f64(),
            decrease in any_f64(),
            per in any::<u32>(),
            cooldown_ms in 0u64..300,
            initial in any_f64(),
            ops in proptest::collection::vec(op(any_f64()), 0..100),
        ) {
            let config = AimdConfig {
                min,
                max,
                increase,
                decrease,
                successes_per_increase: per,
                decrease_cooldown: Duration::from_millis(cooldown_ms),
            };
            check_laws(Aimd::new(config, initial), ops)?;
        }
    }
}
