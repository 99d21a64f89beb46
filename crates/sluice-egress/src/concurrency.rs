//! An adaptive limit on upstream calls in flight: lower on congestion, higher while calls
//! succeed and the limit is actually in use.
//!
//! [`AdaptiveConcurrency`] is a pure state machine over sluice-core's [`Aimd`]: it reads no
//! clock (every report takes `now`), does no I/O and has no interior mutability; a client
//! that shares one puts it behind a lock. A caller takes a [`Slot`] with
//! [`try_acquire`](AdaptiveConcurrency::try_acquire) before each call and hands it back
//! exactly once: [`on_success`](AdaptiveConcurrency::on_success),
//! [`on_failure`](AdaptiveConcurrency::on_failure), or
//! [`release`](AdaptiveConcurrency::release) for a call cancelled without an answer. A
//! call is in flight as long as the upstream works on it: the egress client holds a
//! streamed answer's slot until the stream ends.
//!
//! # Rules
//!
//! - **Decrease.** A [congestion](ErrorClass::is_congestion) failure (429, 503, 529), a
//!   [`Timeout`](ErrorClass::Timeout), or a success slower than the [`LatencyRule`]
//!   allows multiplies the limit by `decrease`, down to `min`. Other failures (a bad
//!   request, a server error, a reset connection) say nothing about load and only free
//!   the slot.
//! - **One decrease per burst.** Calls sent together fail together: twenty 429s answering
//!   twenty calls are one signal. A signal is ignored when its call was sent before the
//!   last decrease (it ran under the old limit, so it says nothing about the new one:
//!   TCP's once-per-round-trip rule), or when it comes within `decrease_cooldown` of the
//!   last decrease (the [`Aimd`] rule, for calls that start and fail within a burst).
//! - **Increase.** Each run of `successes_per_increase` successes (by default, the current
//!   limit's worth: +1 per round trip, TCP's congestion avoidance) adds 1, up to `max`.
//!   Only successes of calls made while the limit was **in use** count: at least half the
//!   limit in flight, counting the call itself, when it started or when it ended. Without
//!   that, a client that never runs more than two calls at once would see every success
//!   as evidence and creep up to `max`, and the first burst after would hit the upstream
//!   with a limit nothing had tested. Netflix's `concurrency-limits` (`AIMDLimit`) uses the
//!   same half-the-limit test.
//! - **Health** ([`HealthRule`], on by default). Over the last `window` calls, a share of
//!   failures above `decrease_above_errors` (20 %) decreases the limit as congestion does,
//!   and so does quota usage above `decrease_above_quota` (90 %, from
//!   [`observe_quota`](AdaptiveConcurrency::observe_quota)); the limit grows only while at
//!   least `increase_above_success` (95 %) of those calls succeeded and quota usage is
//!   below `increase_below_quota` (50 %). Bad requests say nothing about the upstream's
//!   health and are not counted.
//!
//! ```
//! use std::time::Duration;
//! use sluice_core::Nanos;
//! use sluice_egress::classify::ErrorClass;
//! use sluice_egress::concurrency::{AdaptiveConcurrency, ConcurrencyConfig};
//!
//! let mut limiter = AdaptiveConcurrency::new(ConcurrencyConfig {
//!     initial: 4,
//!     ..ConcurrencyConfig::default()
//! })
//! .unwrap();
//! let now = Nanos::new(0);
//! let slots: Vec<_> = (0..4).map(|_| limiter.try_acquire().unwrap()).collect();
//! assert!(limiter.try_acquire().is_none(), "4 of 4 in flight");
//! // The upstream answers all four with 429: one decrease, 4 × 0.75 = 3.
//! for slot in slots {
//!     limiter.on_failure(slot, ErrorClass::RateLimited, now);
//! }
//! assert_eq!((limiter.limit(), limiter.in_flight()), (3, 0));
//! ```

use std::time::Duration;

use sluice_core::{Aimd, AimdConfig, Nanos, Outcomes};

use crate::classify::ErrorClass;

/// How an [`AdaptiveConcurrency`] limit starts, moves, and where it stops.
#[derive(Clone, Debug, PartialEq)]
pub struct ConcurrencyConfig {
    /// The limit to start at, within `[min, max]`.
    pub initial: u32,
    /// The lowest the limit goes; at least 1, so calls always trickle through.
    pub min: u32,
    /// The highest the limit goes; at least `min`.
    pub max: u32,
    /// The factor the limit is multiplied by on congestion, in `(0, 1)`: 0.75 drops a
    /// limit of 20 to 15.
    pub decrease: f64,
    /// How many counted successes in a row raise the limit by 1, at least 1. `None`: the
    /// current limit, i.e. +1 per limit's worth of successes (classic AIMD over a window).
    pub successes_per_increase: Option<u32>,
    /// Also treat slow successes as congestion; `None` (the default) looks at failures
    /// only.
    pub latency: Option<LatencyRule>,
    /// Congestion signals within this long after a decrease are ignored, so that a burst
    /// of failures is one decrease even for calls sent after it. Zero relies on the
    /// sent-before-the-decrease rule alone.
    pub decrease_cooldown: Duration,
    /// Also follow the recent error rate and quota usage; `None` turns that off.
    pub health: Option<HealthRule>,
}

/// When the error rate and quota usage move the limit (see the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HealthRule {
    /// Over how many recent calls the shares are taken, 1 to 128. No share is judged
    /// before a quarter of them (at least one) have been seen.
    pub window: u32,
    /// Decrease when more than this share of the recent calls failed, in `[0, 1]`.
    pub decrease_above_errors: f64,
    /// Grow only while at least this share of the recent calls succeeded, in `[0, 1]`.
    pub increase_above_success: f64,
    /// Decrease when the most used quota dimension is above this share, in `[0, 1]`.
    pub decrease_above_quota: f64,
    /// Grow only while the most used quota dimension is below this share, in `[0, 1]`.
    pub increase_below_quota: f64,
}

impl Default for HealthRule {
    /// Over the last 100 calls: down above 20 % errors or 90 % quota, up only at 95 %
    /// success and below 50 % quota.
    fn default() -> Self {
        Self {
            window: 100,
            decrease_above_errors: 0.2,
            increase_above_success: 0.95,
            decrease_above_quota: 0.9,
            increase_below_quota: 0.5,
        }
    }
}

impl Default for ConcurrencyConfig {
    /// Starts at 10, between 1 and 100; decreases by 0.75 at most once a second; +1 per
    /// limit's worth of successes; no latency rule; the default [`HealthRule`].
    fn default() -> Self {
        Self {
            initial: 10,
            min: 1,
            max: 100,
            decrease: 0.75,
            successes_per_increase: None,
            latency: None,
            decrease_cooldown: Duration::from_secs(1),
            health: Some(HealthRule::default()),
        }
    }
}

impl ConcurrencyConfig {
    /// Checks every field; the error names the first bad one and its value.
    pub fn validate(&self) -> Result<(), ConcurrencyError> {
        if self.min == 0 {
            return Err(ConcurrencyError::ZeroMin);
        }
        if self.max < self.min {
            return Err(ConcurrencyError::MaxBelowMin {
                min: self.min,
                max: self.max,
            });
        }
        if !(self.min..=self.max).contains(&self.initial) {
            return Err(ConcurrencyError::InitialOutOfRange {
                initial: self.initial,
                min: self.min,
                max: self.max,
            });
        }
        if !(self.decrease > 0.0 && self.decrease < 1.0) {
            return Err(ConcurrencyError::DecreaseOutOfRange(self.decrease));
        }
        if self.successes_per_increase == Some(0) {
            return Err(ConcurrencyError::ZeroSuccessesPerIncrease);
        }
        if let Some(rule) = &self.latency
            && !(rule.tolerance.is_finite() && rule.tolerance > 1.0)
        {
            return Err(ConcurrencyError::ToleranceOutOfRange(rule.tolerance));
        }
        if let Some(health) = &self.health {
            if !(1..=128).contains(&health.window) {
                return Err(ConcurrencyError::HealthWindow(health.window));
            }
            for (field, share) in [
                ("decrease_above_errors", health.decrease_above_errors),
                ("increase_above_success", health.increase_above_success),
                ("decrease_above_quota", health.decrease_above_quota),
                ("increase_below_quota", health.increase_below_quota),
            ] {
                if !(0.0..=1.0).contains(&share) {
                    return Err(ConcurrencyError::HealthShare { field, share });
                }
            }
        }
        Ok(())
    }

    fn aimd(&self) -> AimdConfig {
        AimdConfig {
            min: f64::from(self.min),
            max: f64::from(self.max),
            increase: 1.0,
            decrease: self.decrease,
            // Runs are counted here, because their length may follow the limit.
            successes_per_increase: 1,
            decrease_cooldown: self.decrease_cooldown,
        }
    }
}

/// Treat a success much slower than usual as congestion: the upstream is queueing.
///
/// The usual latency is a **baseline**: the minimum of recent successes' latencies,
/// slowly forgetting. A faster success replaces it; a slower one moves it 1% of the way
/// towards itself, so after a lasting change (bigger requests, a farther region) the
/// baseline follows within a few hundred calls instead of calling every success slow
/// forever. A success slower than `tolerance` × the baseline (the baseline taken as at
/// least 1 ms, below which differences are scheduling noise) is congestion. This is the
/// idea of Netflix's Gradient limit, simplified to a threshold.
///
/// It suits upstreams whose calls cost about the same. Where latency follows the request
/// (an LLM writing 10 or 4 000 tokens), leave it off: the egress client reports a streamed
/// answer when its stream ends, so its latency is the whole stream's, not the time to its
/// first byte.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatencyRule {
    /// How many times the baseline a success may take before it counts as congestion:
    /// finite and above 1, e.g. 2.0.
    pub tolerance: f64,
}

/// Why a [`ConcurrencyConfig`] is invalid. Each variant names the field and the value at
/// fault.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConcurrencyError {
    /// `min` is zero.
    #[error("concurrency.min must be at least 1, got 0")]
    ZeroMin,
    /// `max` is below `min`.
    #[error("concurrency.max must be at least concurrency.min ({min}), got {max}")]
    MaxBelowMin {
        /// The configured `min`.
        min: u32,
        /// The configured `max`.
        max: u32,
    },
    /// `initial` is outside `[min, max]`.
    #[error("concurrency.initial must be between {min} and {max}, got {initial}")]
    InitialOutOfRange {
        /// The configured `initial`.
        initial: u32,
        /// The configured `min`.
        min: u32,
        /// The configured `max`.
        max: u32,
    },
    /// `decrease` is not in `(0, 1)`.
    #[error("concurrency.decrease must be in (0, 1), got {0}")]
    DecreaseOutOfRange(f64),
    /// `successes_per_increase` is `Some(0)`.
    #[error("concurrency.successes_per_increase must be at least 1, got 0")]
    ZeroSuccessesPerIncrease,
    /// `latency.tolerance` is not a finite number above 1.
    #[error("concurrency.latency.tolerance must be a finite number above 1, got {0}")]
    ToleranceOutOfRange(f64),
    /// `health.window` is not between 1 and 128.
    #[error("concurrency.health.window must be between 1 and 128, got {0}")]
    HealthWindow(u32),
    /// A share of `health` is not within `[0, 1]`.
    #[error("concurrency.health.{field} must be a share between 0 and 1, got {share}")]
    HealthShare {
        /// The field.
        field: &'static str,
        /// Its value.
        share: f64,
    },
}

/// Permission for one call, from [`AdaptiveConcurrency::try_acquire`].
///
/// Not `Clone`: each slot is handed back exactly once, with
/// [`on_success`](AdaptiveConcurrency::on_success),
/// [`on_failure`](AdaptiveConcurrency::on_failure) or
/// [`release`](AdaptiveConcurrency::release). A dropped slot stays counted in flight
/// forever.
#[derive(Debug)]
#[must_use = "hand the slot back with on_success, on_failure or release"]
pub struct Slot {
    /// Decreases before this call started: a signal from an older epoch is stale.
    epoch: u64,
    /// Calls in flight, this one included, when it started.
    in_flight_at_start: u32,
}

/// The adaptive concurrency limit (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct AdaptiveConcurrency {
    aimd: Aimd,
    successes_per_increase: Option<u32>,
    latency: Option<LatencyRule>,
    in_flight: u32,
    /// Counted successes since the last increase or congestion signal.
    run: u32,
    /// Decreases so far.
    epoch: u64,
    /// The latency baseline in seconds, once a success has been seen.
    baseline: Option<f64>,
    health: Option<HealthRule>,
    /// The latest calls' outcomes, a yes for a failure.
    failures: Outcomes,
    /// The most used quota dimension's share, from [`AdaptiveConcurrency::observe_quota`].
    quota_used: f64,
}

/// How far a slower success moves the baseline towards itself.
const BASELINE_DRIFT: f64 = 0.01;

/// The baseline's floor for the latency rule, in seconds.
const BASELINE_FLOOR: f64 = 0.001;

impl AdaptiveConcurrency {
    /// A limiter at `config.initial`, after [validating](ConcurrencyConfig::validate) it.
    pub fn new(config: ConcurrencyConfig) -> Result<Self, ConcurrencyError> {
        config.validate()?;
        Ok(Self {
            aimd: Aimd::new(config.aimd(), f64::from(config.initial)),
            successes_per_increase: config.successes_per_increase,
            latency: config.latency,
            in_flight: 0,
            run: 0,
            epoch: 0,
            baseline: None,
            health: config.health,
            failures: Outcomes::new(config.health.map_or(1, |rule| rule.window)),
            quota_used: 0.0,
        })
    }

    /// The current limit: the AIMD value rounded down, within `[min, max]`.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "the value is clamped to the u32 range first"
    )]
    pub fn limit(&self) -> u32 {
        self.aimd.value().floor().clamp(1.0, f64::from(u32::MAX)) as u32
    }

    /// Calls holding a slot. May exceed [`limit`](Self::limit) right after a decrease,
    /// until those calls end.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// A slot for one call, when fewer than [`limit`](Self::limit) calls are in flight.
    pub fn try_acquire(&mut self) -> Option<Slot> {
        if self.in_flight >= self.limit() {
            return None;
        }
        self.in_flight += 1;
        Some(Slot {
            epoch: self.epoch,
            in_flight_at_start: self.in_flight,
        })
    }

    /// Reports that the call holding `slot` succeeded after `latency`, at `now`.
    pub fn on_success(&mut self, slot: Slot, latency: Duration, now: Nanos) {
        let in_use = self.was_in_use(&slot);
        self.free(&slot);
        self.record(false);
        if self.observe_latency(latency) || self.unhealthy() {
            self.congestion(&slot, now);
            return;
        }
        if !in_use || !self.may_grow() {
            return;
        }
        self.run = self.run.saturating_add(1);
        let target = self
            .successes_per_increase
            .unwrap_or_else(|| self.limit())
            .max(1);
        if self.run >= target {
            self.run = 0;
            self.aimd.on_success(now);
        }
    }

    /// Reports that the call holding `slot` failed with `class`, at `now`. Congestion
    /// ([`ErrorClass::is_congestion`]) and [`ErrorClass::Timeout`] may decrease the limit;
    /// any other class only frees the slot.
    pub fn on_failure(&mut self, slot: Slot, class: ErrorClass, now: Nanos) {
        self.free(&slot);
        if class != ErrorClass::NotRetryable {
            self.record(true);
        }
        if class.is_congestion() || class == ErrorClass::Timeout || self.unhealthy() {
            self.congestion(&slot, now);
        }
    }

    /// Tells the limit how much of the quota is used: the most used dimension's share, in
    /// `[0, 1]` (clamped; NaN counts as 0). With a [`HealthRule`], usage above its
    /// `decrease_above_quota` decreases the limit at the next call's end, and usage at or
    /// above `increase_below_quota` stops it growing.
    pub fn observe_quota(&mut self, used: f64) {
        self.quota_used = if used.is_nan() {
            0.0
        } else {
            used.clamp(0.0, 1.0)
        };
    }

    /// The share of the recent calls that failed, once enough have been seen.
    pub fn error_rate(&self) -> Option<f64> {
        let health = self.health?;
        if self.failures.len() < health.window.div_ceil(4) {
            return None;
        }
        self.failures.share()
    }

    fn record(&mut self, failed: bool) {
        if self.health.is_some() {
            self.failures.record(failed);
        }
    }

    /// Whether the error rate or the quota usage calls for a decrease.
    fn unhealthy(&self) -> bool {
        let Some(health) = self.health else {
            return false;
        };
        self.quota_used > health.decrease_above_quota
            || self
                .error_rate()
                .is_some_and(|rate| rate > health.decrease_above_errors)
    }

    /// Whether the error rate and the quota usage let the limit grow.
    fn may_grow(&self) -> bool {
        let Some(health) = self.health else {
            return true;
        };
        self.quota_used < health.increase_below_quota
            && self
                .error_rate()
                .is_none_or(|rate| 1.0 - rate >= health.increase_above_success)
    }

    /// Frees the slot of a call that ended without an answer (cancelled): no signal.
    pub fn release(&mut self, slot: Slot) {
        self.free(&slot);
    }

    fn free(&mut self, _slot: &Slot) {
        // Saturating: a slot from another limiter must not wrap the count.
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Whether at least half the limit was in flight, counting this call, when it started
    /// or now (before it is freed).
    fn was_in_use(&self, slot: &Slot) -> bool {
        let peak = u64::from(slot.in_flight_at_start.max(self.in_flight));
        2 * peak >= u64::from(self.limit())
    }

    /// Applies the latency rule to one success and folds it into the baseline.
    fn observe_latency(&mut self, latency: Duration) -> bool {
        let Some(rule) = self.latency else {
            return false;
        };
        let seconds = latency.as_secs_f64();
        let slow = self
            .baseline
            .is_some_and(|b| seconds > b.max(BASELINE_FLOOR) * rule.tolerance);
        self.baseline = Some(match self.baseline {
            Some(b) if seconds >= b => b + (seconds - b) * BASELINE_DRIFT,
            _ => seconds,
        });
        slow
    }

    fn congestion(&mut self, slot: &Slot, now: Nanos) {
        self.run = 0;
        if slot.epoch < self.epoch {
            return;
        }
        if self.aimd.on_congestion(now) {
            self.epoch += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MS: u64 = 1_000_000;

    fn at_ms(ms: u64) -> Nanos {
        Nanos::new(ms * MS)
    }

    fn config(initial: u32) -> ConcurrencyConfig {
        ConcurrencyConfig {
            initial,
            min: 2,
            max: 40,
            decrease: 0.75,
            successes_per_increase: None,
            latency: None,
            decrease_cooldown: Duration::from_millis(100),
            health: None,
        }
    }

    fn limiter(config: ConcurrencyConfig) -> AdaptiveConcurrency {
        AdaptiveConcurrency::new(config).unwrap()
    }

    fn acquire(limiter: &mut AdaptiveConcurrency, n: u32) -> Vec<Slot> {
        (0..n).map(|_| limiter.try_acquire().unwrap()).collect()
    }

    /// Runs `n` successes with the limit full, at `now`.
    fn busy_successes(limiter: &mut AdaptiveConcurrency, n: u32, now: Nanos) {
        for _ in 0..n {
            let held = acquire(limiter, limiter.limit() - limiter.in_flight());
            for slot in held {
                limiter.on_success(slot, Duration::from_millis(10), now);
            }
        }
    }

    fn health(window: u32) -> ConcurrencyConfig {
        ConcurrencyConfig {
            health: Some(HealthRule {
                window,
                ..HealthRule::default()
            }),
            ..config(10)
        }
    }

    /// One call, alone in flight (so never "in use"), reported at `now`.
    fn alone(l: &mut AdaptiveConcurrency, failure: Option<ErrorClass>, now: Nanos) {
        let slot = l.try_acquire().unwrap();
        match failure {
            Some(class) => l.on_failure(slot, class, now),
            None => l.on_success(slot, Duration::from_millis(10), now),
        }
    }

    #[test]
    fn an_error_rate_above_a_fifth_decreases_the_limit() {
        let mut l = limiter(health(20));
        for i in 0..16 {
            alone(&mut l, None, at_ms(i));
        }
        // Server errors say nothing about load on their own, and 4 of the last 20 is 20 %.
        for i in 16..20 {
            alone(&mut l, Some(ErrorClass::ServerError), at_ms(i));
        }
        assert_eq!((l.limit(), l.error_rate()), (10, Some(0.2)));
        // A fifth failure in the last 20 is 25 %: above a fifth.
        alone(&mut l, Some(ErrorClass::ServerError), at_ms(20));
        assert_eq!(l.limit(), 7);
        // Bad requests are the caller's doing: not counted.
        alone(&mut l, Some(ErrorClass::NotRetryable), at_ms(21));
        assert_eq!(l.error_rate(), Some(0.25));
        // While the rate stays above, the limit keeps falling, once per cooldown.
        alone(&mut l, None, at_ms(50));
        assert_eq!(l.limit(), 7, "within the cooldown");
        alone(&mut l, None, at_ms(200));
        assert_eq!(l.limit(), 5);
    }

    #[test]
    fn the_limit_grows_only_while_calls_succeed_and_the_quota_is_below_half() {
        let mut l = limiter(health(8));
        busy_successes(&mut l, 1, at_ms(0));
        assert_eq!(l.limit(), 11, "all succeeded, quota unknown: it grows");
        l.observe_quota(0.6);
        busy_successes(&mut l, 1, at_ms(10));
        assert_eq!(l.limit(), 11, "60 % of the quota used: it holds");
        l.observe_quota(0.95);
        busy_successes(&mut l, 1, at_ms(20));
        assert_eq!(l.limit(), 8, "95 % of the quota used: it decreases");
        l.observe_quota(0.1);
        busy_successes(&mut l, 1, at_ms(400));
        assert_eq!(l.limit(), 9);
        let slot = l.try_acquire().unwrap();
        l.on_failure(slot, ErrorClass::Connect, at_ms(500));
        assert_eq!(l.error_rate(), Some(1.0 / 8.0));
        busy_successes(&mut l, 1, at_ms(600));
        assert_eq!(
            l.limit(),
            9,
            "87.5 % success over the last 8 is below 95 %: it holds"
        );
    }

    #[test]
    fn acquires_up_to_the_limit_and_releases() {
        let mut l = limiter(config(3));
        let slots = acquire(&mut l, 3);
        assert_eq!(l.in_flight(), 3);
        assert!(l.try_acquire().is_none());
        let mut slots = slots.into_iter();
        l.release(slots.next().unwrap());
        assert_eq!(l.in_flight(), 2);
        let again = l.try_acquire().unwrap();
        l.release(again);
        for slot in slots {
            l.on_failure(slot, ErrorClass::NotRetryable, at_ms(0));
        }
        assert_eq!((l.limit(), l.in_flight()), (3, 0));
    }

    #[test]
    fn a_429_decreases() {
        let mut l = limiter(config(20));
        let slot = l.try_acquire().unwrap();
        l.on_failure(slot, ErrorClass::RateLimited, at_ms(0));
        assert_eq!(l.limit(), 15);
    }

    #[test]
    fn overload_and_timeout_decrease_other_failures_do_not() {
        for (class, want) in [
            (ErrorClass::Overloaded, 15),
            (ErrorClass::Timeout, 15),
            (ErrorClass::RateLimited, 15),
            (ErrorClass::QuotaExhausted, 20),
            (ErrorClass::ServerError, 20),
            (ErrorClass::Connect, 20),
            (ErrorClass::ConnectionReset, 20),
            (ErrorClass::NotRetryable, 20),
        ] {
            let mut l = limiter(config(20));
            let slot = l.try_acquire().unwrap();
            l.on_failure(slot, class, at_ms(0));
            assert_eq!((l.limit(), l.in_flight()), (want, 0), "{class}");
        }
    }

    #[test]
    fn a_burst_is_one_decrease() {
        let mut l = limiter(config(20));
        let burst = acquire(&mut l, 20);
        for (i, slot) in burst.into_iter().enumerate() {
            l.on_failure(slot, ErrorClass::RateLimited, at_ms(i as u64));
        }
        assert_eq!(l.limit(), 15);
        // A call started after the decrease and failing within the cooldown: the same
        // burst.
        let slot = l.try_acquire().unwrap();
        l.on_failure(slot, ErrorClass::RateLimited, at_ms(50));
        assert_eq!(l.limit(), 15);
        // After the cooldown, a call started after the decrease is new evidence.
        let slot = l.try_acquire().unwrap();
        l.on_failure(slot, ErrorClass::RateLimited, at_ms(200));
        assert_eq!(l.limit(), 11);
    }

    #[test]
    fn a_call_sent_before_the_decrease_is_part_of_its_burst() {
        let mut l = limiter(config(20));
        let mut slots = acquire(&mut l, 2).into_iter();
        l.on_failure(slots.next().unwrap(), ErrorClass::Timeout, at_ms(0));
        assert_eq!(l.limit(), 15);
        // Long after the cooldown, the other call of the burst times out too.
        l.on_failure(slots.next().unwrap(), ErrorClass::Timeout, at_ms(30_000));
        assert_eq!(l.limit(), 15);
    }

    #[test]
    fn climbs_back_one_per_limits_worth_of_successes() {
        let mut l = limiter(config(20));
        let slot = l.try_acquire().unwrap();
        l.on_failure(slot, ErrorClass::RateLimited, at_ms(0));
        assert_eq!(l.limit(), 15);
        busy_successes(&mut l, 1, at_ms(10));
        assert_eq!(l.limit(), 16, "15 successes: +1");
        busy_successes(&mut l, 1, at_ms(20));
        assert_eq!(l.limit(), 17, "16 more: +1");
    }

    #[test]
    fn a_fixed_run_length() {
        let mut l = limiter(ConcurrencyConfig {
            successes_per_increase: Some(1),
            ..config(4)
        });
        let slots = acquire(&mut l, 4);
        for slot in slots {
            l.on_success(slot, Duration::from_millis(5), at_ms(0));
        }
        // Each success saw at least half the limit in flight when it started or ended.
        assert_eq!(l.limit(), 8);
    }

    #[test]
    fn congestion_restarts_the_run() {
        let mut l = limiter(ConcurrencyConfig {
            successes_per_increase: Some(3),
            ..config(4)
        });
        let mut slots = acquire(&mut l, 4).into_iter();
        l.on_success(slots.next().unwrap(), Duration::ZERO, at_ms(0));
        l.on_success(slots.next().unwrap(), Duration::ZERO, at_ms(0));
        l.on_failure(slots.next().unwrap(), ErrorClass::RateLimited, at_ms(0));
        assert_eq!(l.limit(), 3);
        l.on_success(slots.next().unwrap(), Duration::ZERO, at_ms(0));
        assert_eq!(l.limit(), 3, "the run restarted at the 429");
    }

    #[test]
    fn an_idle_client_does_not_creep_up() {
        let mut l = limiter(config(10));
        // One call at a time, thousands of times.
        for i in 0..5_000 {
            let slot = l.try_acquire().unwrap();
            l.on_success(slot, Duration::from_millis(10), at_ms(i));
        }
        assert_eq!(l.limit(), 10);
        // Two at a time on a limit of 4 is in use: it rises, but only while in use.
        let mut l = limiter(config(4));
        for i in 0..1_000 {
            let slots = acquire(&mut l, 2);
            for slot in slots {
                l.on_success(slot, Duration::from_millis(10), at_ms(i));
            }
        }
        // Two in flight use a limit of 4 (2 × 2 ≥ 4), not one of 5.
        assert_eq!(l.limit(), 5);
    }

    #[test]
    fn never_below_min_nor_above_max() {
        let mut l = limiter(config(3));
        for i in 0..20 {
            let slot = l.try_acquire().unwrap();
            l.on_failure(slot, ErrorClass::Overloaded, at_ms(i * 1_000));
        }
        assert_eq!(l.limit(), 2);
        busy_successes(&mut l, 1_000, at_ms(100_000));
        assert_eq!(l.limit(), 40);
    }

    #[test]
    fn slow_successes_decrease_under_the_latency_rule() {
        let mut l = limiter(ConcurrencyConfig {
            latency: Some(LatencyRule { tolerance: 2.0 }),
            ..config(20)
        });
        for (i, ms) in [100, 120, 110, 190].into_iter().enumerate() {
            let slot = l.try_acquire().unwrap();
            l.on_success(slot, Duration::from_millis(ms), at_ms(i as u64));
        }
        assert_eq!(l.limit(), 20, "within 2 × the 100 ms baseline");
        let slot = l.try_acquire().unwrap();
        l.on_success(slot, Duration::from_millis(250), at_ms(10));
        assert_eq!(l.limit(), 15, "250 ms > 2 × ~101 ms");
        // Without the rule, the same latencies change nothing.
        let mut l = limiter(config(20));
        for ms in [100, 250] {
            let slot = l.try_acquire().unwrap();
            l.on_success(slot, Duration::from_millis(ms), at_ms(0));
        }
        assert_eq!(l.limit(), 20);
    }

    #[test]
    fn the_baseline_forgets_slowly_and_ignores_sub_millisecond_noise() {
        let mut l = limiter(ConcurrencyConfig {
            latency: Some(LatencyRule { tolerance: 2.0 }),
            decrease_cooldown: Duration::ZERO,
            ..config(40)
        });
        // Zero-latency answers (paused time) then 1.5 ms: noise, not congestion.
        for ms in [0, 0, 1] {
            let slot = l.try_acquire().unwrap();
            l.on_success(slot, Duration::from_millis(ms), at_ms(0));
        }
        let slot = l.try_acquire().unwrap();
        l.on_success(slot, Duration::from_micros(1_500), at_ms(0));
        assert_eq!(l.limit(), 40);
        // A lasting move from 10 ms to 30 ms: slow at first, normal once learned.
        let mut l = limiter(ConcurrencyConfig {
            latency: Some(LatencyRule { tolerance: 2.0 }),
            ..config(40)
        });
        assert!(
            !l.observe_latency(Duration::from_millis(10)),
            "the first sets the baseline"
        );
        let slow: Vec<bool> = (0..500)
            .map(|_| l.observe_latency(Duration::from_millis(30)))
            .collect();
        // 30 > 2 × (30 − 20 × 0.99ⁿ) from n ≈ 29 on.
        assert_eq!(slow.iter().filter(|s| **s).count(), 29);
        assert!(slow[..29].iter().all(|s| *s));
        assert_eq!(l.baseline.map(|b| (b * 1000.0).round()), Some(30.0));
    }

    #[test]
    fn validate_names_the_field_and_value() {
        assert_eq!(ConcurrencyConfig::default().validate(), Ok(()));
        let cases: &[(ConcurrencyConfig, &str)] = &[
            (
                ConcurrencyConfig {
                    min: 0,
                    ..config(2)
                },
                "concurrency.min must be at least 1, got 0",
            ),
            (
                ConcurrencyConfig {
                    max: 1,
                    ..config(2)
                },
                "concurrency.max must be at least concurrency.min (2), got 1",
            ),
            (
                config(41),
                "concurrency.initial must be between 2 and 40, got 41",
            ),
            (
                ConcurrencyConfig {
                    decrease: 1.0,
                    ..config(2)
                },
                "concurrency.decrease must be in (0, 1), got 1",
            ),
            (
                ConcurrencyConfig {
                    decrease: f64::NAN,
                    ..config(2)
                },
                "concurrency.decrease must be in (0, 1), got NaN",
            ),
            (
                ConcurrencyConfig {
                    successes_per_increase: Some(0),
                    ..config(2)
                },
                "concurrency.successes_per_increase must be at least 1, got 0",
            ),
            (
                ConcurrencyConfig {
                    latency: Some(LatencyRule { tolerance: 1.0 }),
                    ..config(2)
                },
                "concurrency.latency.tolerance must be a finite number above 1, got 1",
            ),
            (
                ConcurrencyConfig {
                    latency: Some(LatencyRule {
                        tolerance: f64::INFINITY,
                    }),
                    ..config(2)
                },
                "concurrency.latency.tolerance must be a finite number above 1, got inf",
            ),
        ];
        for (config, want) in cases {
            assert_eq!(config.validate().unwrap_err().to_string(), *want);
            assert!(AdaptiveConcurrency::new(config.clone()).is_err());
        }
    }

    #[test]
    fn a_limit_of_u32_max_is_exact() {
        let l = limiter(ConcurrencyConfig {
            initial: u32::MAX,
            min: u32::MAX,
            max: u32::MAX,
            ..config(2)
        });
        assert_eq!(l.limit(), u32::MAX);
    }

    #[derive(Clone, Debug)]
    enum Event {
        Acquire,
        Success(usize, u64),
        Failure(usize, ErrorClass),
        Release(usize),
        Advance(u64),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            4 => Just(Event::Acquire),
            3 => (any::<usize>(), 0_u64..500).prop_map(|(i, ms)| Event::Success(i, ms)),
            2 => (any::<usize>(), proptest::sample::select(ErrorClass::ALL.to_vec()))
                .prop_map(|(i, c)| Event::Failure(i, c)),
            1 => any::<usize>().prop_map(Event::Release),
            1 => (0_u64..3_000).prop_map(Event::Advance),
        ]
    }

    proptest! {
        #[test]
        fn limit_stays_in_bounds_and_in_flight_counts_slots(
            min in 1_u32..10,
            span in 0_u32..50,
            initial_offset in 0_u32..60,
            decrease in 0.05_f64..0.95,
            per in proptest::option::of(1_u32..5),
            tolerance in proptest::option::of(1.1_f64..4.0),
            cooldown_ms in 0_u64..1_000,
            health in any::<bool>(),
            events in proptest::collection::vec(event(), 0..300),
        ) {
            let max = min + span;
            let config = ConcurrencyConfig {
                initial: min + initial_offset.min(span),
                min,
                max,
                decrease,
                successes_per_increase: per,
                latency: tolerance.map(|tolerance| LatencyRule { tolerance }),
                decrease_cooldown: Duration::from_millis(cooldown_ms),
                health: health.then(HealthRule::default),
            };
            let mut l = AdaptiveConcurrency::new(config).unwrap();
            let mut held: Vec<Slot> = Vec::new();
            let mut now = at_ms(0);
            for event in events {
                let before = l.limit();
                match event {
                    Event::Acquire => {
                        let free = l.in_flight() < l.limit();
                        match l.try_acquire() {
                            Some(slot) => {
                                prop_assert!(free);
                                held.push(slot);
                            }
                            None => prop_assert!(!free),
                        }
                    }
                    Event::Success(i, ms) if !held.is_empty() => {
                        let slot = held.swap_remove(i % held.len());
                        l.on_success(slot, Duration::from_millis(ms), now);
                        prop_assert!(l.limit() <= before + 1);
                    }
                    Event::Failure(i, class) if !held.is_empty() => {
                        let slot = held.swap_remove(i % held.len());
                        l.on_failure(slot, class, now);
                        prop_assert!(l.limit() <= before);
                    }
                    Event::Release(i) if !held.is_empty() => {
                        l.release(held.swap_remove(i % held.len()));
                        prop_assert_eq!(l.limit(), before);
                    }
                    Event::Advance(ms) => now = now.plus_nanos(ms * MS),
                    _ => {}
                }
                prop_assert!(min <= l.limit() && l.limit() <= max);
                prop_assert_eq!(l.in_flight() as usize, held.len());
            }
        }
    }
}
