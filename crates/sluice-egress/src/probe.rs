//! Finding the rate of an upstream that never states its limit, from its 429s alone.
//!
//! While a client sends faster than such an upstream admits, the upstream's successes
//! come at exactly its rate: so at each 429 the probe sets its rate to what succeeded over
//! the last seconds, a little below ([`BACKOFF`]), and then climbs by a small fixed step per
//! run of successes until the next 429. The climb is slow on purpose: each crossing of the
//! limit costs a few 429s, and a slow climb crosses it rarely.

use std::time::Duration;

use sluice_core::Nanos;

/// How far below the measured rate the probe restarts after a 429.
pub(crate) const BACKOFF: f64 = 0.9;
/// The climb per run of successes, as a fraction of the rate measured at the last 429.
pub(crate) const STEP: f64 = 0.01;
/// Successes per step.
pub(crate) const RUN: u32 = 20;
/// 429s within this long of a decrease belong to the same burst.
pub(crate) const COOLDOWN: Duration = Duration::from_secs(2);

const SECOND: u64 = 1_000_000_000;
/// Whole seconds the success rate is measured over.
const WINDOW: usize = 10;

/// The rate of successes over the last [`WINDOW`] whole seconds.
#[derive(Clone, Debug, Default)]
struct Meter {
    counts: [u32; WINDOW + 1],
    second: u64,
}

impl Meter {
    fn slot(second: u64) -> usize {
        // The modulus keeps the index below WINDOW + 1.
        usize::try_from(second % (WINDOW as u64 + 1)).unwrap_or(0)
    }

    /// Moves the ring to `now`'s second, zeroing the seconds skipped.
    fn roll(&mut self, now: Nanos) {
        let second = now.as_u64() / SECOND;
        if second <= self.second {
            return;
        }
        let skipped = (second - self.second).min(WINDOW as u64 + 1);
        for s in 1..=skipped {
            self.counts[Self::slot(self.second + s)] = 0;
        }
        self.second = second;
    }

    fn record(&mut self, now: Nanos) {
        self.roll(now);
        let slot = &mut self.counts[Self::slot(self.second)];
        *slot = slot.saturating_add(1);
    }

    /// Successes per minute over the whole seconds before `now`.
    fn per_minute(&mut self, now: Nanos) -> f64 {
        self.roll(now);
        let current = Self::slot(self.second);
        let total: u64 = (0..=WINDOW)
            .filter(|&i| i != current)
            .map(|i| u64::from(self.counts[i]))
            .sum();
        #[allow(clippy::cast_precision_loss, reason = "a count of recent successes")]
        let total = total as f64;
        total * 60.0 / WINDOW as f64
    }
}

/// The probe's state: unpaced until the first 429, then a measured rate that climbs.
#[derive(Clone, Debug, Default)]
pub(crate) struct RateProbe {
    meter: Meter,
    rate: Option<f64>,
    step: f64,
    successes: u32,
    last_decrease: Option<Nanos>,
}

impl RateProbe {
    /// The rate to pace at, per minute; `None` before the first 429.
    pub(crate) fn rate_per_minute(&self) -> Option<f64> {
        self.rate
    }

    /// A call succeeded at `now`.
    pub(crate) fn on_success(&mut self, now: Nanos) {
        self.meter.record(now);
        let Some(rate) = self.rate else { return };
        self.successes += 1;
        if self.successes >= RUN {
            self.successes = 0;
            self.rate = Some(rate + self.step);
        }
    }

    /// The upstream answered 429 at `now`. Returns whether the rate changed.
    pub(crate) fn on_rate_limited(&mut self, now: Nanos) -> bool {
        self.successes = 0;
        if self
            .last_decrease
            .is_some_and(|last| now.saturating_since(last) < COOLDOWN)
        {
            return false;
        }
        self.last_decrease = Some(now);
        let measured = self.meter.per_minute(now);
        let rate = if measured > 0.0 {
            measured * BACKOFF
        } else {
            // Nothing succeeded lately: halve, starting from one a second.
            self.rate.unwrap_or(120.0) * 0.5
        }
        .max(1.0);
        self.step = (rate * STEP).max(0.1);
        self.rate = Some(rate);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_ms(ms: u64) -> Nanos {
        Nanos::new(ms * 1_000_000)
    }

    #[test]
    fn unpaced_until_the_first_429_then_just_below_what_succeeded() {
        let mut probe = RateProbe::default();
        // 5 successes a second for 20 s.
        for i in 0..100 {
            probe.on_success(at_ms(i * 200));
        }
        assert_eq!(probe.rate_per_minute(), None);
        assert!(probe.on_rate_limited(at_ms(20_000)));
        let rate = probe.rate_per_minute().unwrap();
        assert!((rate - 300.0 * BACKOFF).abs() < 1e-9, "{rate}");
        // The same burst: ignored.
        assert!(!probe.on_rate_limited(at_ms(21_000)));
        // Climbs one step per run of successes.
        for i in 0..RUN {
            probe.on_success(at_ms(22_000 + u64::from(i)));
        }
        let climbed = probe.rate_per_minute().unwrap();
        assert!((climbed - rate * (1.0 + STEP)).abs() < 1e-9, "{climbed}");
    }

    #[test]
    fn with_no_recent_success_it_halves() {
        let mut probe = RateProbe::default();
        assert!(probe.on_rate_limited(at_ms(0)));
        assert_eq!(probe.rate_per_minute(), Some(60.0));
        assert!(probe.on_rate_limited(at_ms(60_000)));
        assert_eq!(probe.rate_per_minute(), Some(30.0));
        for _ in 0..10 {
            probe.on_rate_limited(at_ms(120_000));
        }
        assert!(probe.rate_per_minute().unwrap() >= 1.0);
    }

    #[test]
    fn the_meter_forgets_old_seconds() {
        let mut meter = Meter::default();
        for i in 0..50 {
            meter.record(at_ms(i * 100)); // 10 a second for 5 s
        }
        assert!((meter.per_minute(at_ms(5_000)) - 300.0).abs() < 1e-9);
        assert_eq!(meter.per_minute(at_ms(60_000)), 0.0);
        // A clock that steps backwards changes nothing.
        meter.record(at_ms(1_000));
        assert_eq!(meter.per_minute(at_ms(60_000)), 0.0);
    }
}
