//! A circuit breaker: stop calling something that keeps failing, then probe it.
//!
//! [`CircuitBreaker`] is a pure state machine. It reads no clock (every method takes
//! `now`), does no I/O and knows nothing about what it guards: a shared store (sluice-store's
//! `FallbackStore` around Redis) or, on the outbound side, an upstream API. The caller asks
//! [`try_acquire`](CircuitBreaker::try_acquire) before each call, and reports the outcome
//! with the [`Permit`] it got back: [`on_success`](CircuitBreaker::on_success),
//! [`on_failure`](CircuitBreaker::on_failure), or [`release`](CircuitBreaker::release) when
//! the call ended without an outcome (it was cancelled). It has no interior mutability:
//! callers that share one breaker put it behind a lock and hold the lock only for these
//! calls, never across the guarded call itself.
//!
//! ```text
//!     failure_threshold consecutive failures, or the failure rate reached
//!   Closed ───────────────────────────────────────────▶ Open { until: now + open_for }
//!     ▲                                                  │        ▲
//!     │ a probe succeeds                   now ≥ until   │        │ a probe fails
//!     │                                                  ▼        │
//!     └──────────────────────────────────────────────── HalfOpen ─┘
//!                                (at most half_open_probes calls in flight)
//! ```
//!
//! - **Closed**: every call passes. Each failure counts, each success resets the count;
//!   `failure_threshold` failures in a row open the circuit. With a [`FailureRate`], the
//!   last `window` outcomes are kept too, and a failure that leaves at least `min_calls`
//!   of them with at least `percent` failures also opens it (a success never does): a
//!   service failing every other call never fails twice in a row, yet is hardly up.
//!   Opening or closing forgets both counts.
//! - **Open { until }**: no call passes before `until`. The first
//!   [`try_acquire`](CircuitBreaker::try_acquire) at or after `until` moves to half-open.
//! - **HalfOpen**: up to `half_open_probes` calls (probes) pass at once; others are
//!   rejected until a probe reports. One successful probe closes the circuit; one failed
//!   probe opens it again for `open_for`.
//!
//! Outcomes are matched to the state their permit was issued in: a call that started
//! before the circuit last changed state is *stale*, and its outcome is ignored. So a slow
//! call admitted while closed cannot close a circuit that has opened since, and a late
//! failure cannot extend an open period. A released permit gives back its probe slot and
//! changes nothing else.
//!
//! ```
//! use std::time::Duration;
//! use sluice_core::{BreakerConfig, BreakerState, CircuitBreaker, Nanos};
//!
//! let mut breaker = CircuitBreaker::new(BreakerConfig {
//!     failure_threshold: 2,
//!     open_for: Duration::from_secs(1),
//!     half_open_probes: 1,
//!     failure_rate: None,
//! });
//! let t0 = Nanos::new(0);
//! for _ in 0..2 {
//!     let permit = breaker.try_acquire(t0).unwrap();
//!     breaker.on_failure(permit, t0);
//! }
//! let one_second = Nanos::new(1_000_000_000);
//! assert_eq!(breaker.state(), BreakerState::Open { until: one_second });
//! assert_eq!(breaker.try_acquire(t0).unwrap_err().until, Some(one_second));
//!
//! let probe = breaker.try_acquire(one_second).unwrap();
//! assert!(probe.is_probe());
//! breaker.on_success(probe, one_second);
//! assert_eq!(breaker.state(), BreakerState::Closed);
//! ```

use std::time::Duration;

use crate::outcomes::Outcomes;
use crate::time::{Nanos, duration_nanos};

/// How a [`CircuitBreaker`] trips and recovers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BreakerConfig {
    /// Consecutive failures that open a closed circuit. Zero is treated as one.
    pub failure_threshold: u32,
    /// How long an open circuit rejects every call before it lets probes through.
    pub open_for: Duration,
    /// How many probes a half-open circuit lets through at once. Zero is treated as one
    /// (a circuit that never probes would never close).
    pub half_open_probes: u32,
    /// An optional second way to open a closed circuit: the share of failures among its
    /// recent outcomes. `None` opens on consecutive failures only.
    pub failure_rate: Option<FailureRate>,
}

/// Opens a closed circuit when failures make up at least `percent` of its last `window`
/// outcomes, once there are `min_calls` of them (see [`BreakerConfig::failure_rate`]).
///
/// Out-of-range values are clamped when the breaker is built: `percent` to `1..=100`,
/// `window` to `1..=128`, `min_calls` to `1..=window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FailureRate {
    /// The share of failures, in percent (1 to 100), that opens the circuit.
    pub percent: u8,
    /// How many of the latest outcomes count, at most 128 (the window is one `u128`).
    pub window: u32,
    /// No verdict before the window holds this many outcomes, so that one early failure
    /// is not a 100% failure rate.
    pub min_calls: u32,
}

impl FailureRate {
    /// The largest `window`: outcomes are kept as the bits of one `u128`.
    pub const MAX_WINDOW: u32 = u128::BITS;

    fn clamped(self) -> Self {
        let window = self.window.clamp(1, Self::MAX_WINDOW);
        Self {
            percent: self.percent.clamp(1, 100),
            window,
            min_calls: self.min_calls.clamp(1, window),
        }
    }
}

impl Default for BreakerConfig {
    /// Opens after 5 consecutive failures, for 1 s, then lets 1 probe through.
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: Duration::from_secs(1),
            half_open_probes: 1,
            failure_rate: None,
        }
    }
}

/// Where a [`CircuitBreaker`] stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls pass; consecutive failures are being counted.
    Closed,
    /// Calls are rejected until `until` (on the caller's timeline).
    Open {
        /// The first instant a probe may go through.
        until: Nanos,
    },
    /// A limited number of probes may pass; their outcome closes or re-opens the circuit.
    HalfOpen,
}

impl BreakerState {
    /// A short lowercase name for metrics and logs: `closed`, `open` or `half_open`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open { .. } => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// Leave to make one call, handed back to the breaker with its outcome.
///
/// Not `Clone`: each permit reports exactly one outcome. Dropping a permit without
/// reporting leaks a half-open probe slot until the circuit next changes state; hand it to
/// [`CircuitBreaker::release`] when the call was cancelled.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "report the call's outcome with on_success, on_failure or release"]
pub struct Permit {
    /// The breaker's generation (count of state changes) when the permit was issued.
    generation: u64,
    /// Whether this call is a half-open probe.
    probe: bool,
}

impl Permit {
    /// Whether this call is a probe of a half-open circuit (its outcome decides whether
    /// the circuit closes).
    pub const fn is_probe(&self) -> bool {
        self.probe
    }
}

/// A call the breaker did not let through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rejected {
    /// When the circuit lets a probe through again: `Some(until)` while it is open;
    /// `None` while it is half-open with every probe slot taken (the answer then depends
    /// on those probes' outcomes).
    pub until: Option<Nanos>,
}

impl Rejected {
    /// How long after `now` a probe may go through, when that is known (see
    /// [`Rejected::until`]).
    pub const fn retry_after(&self, now: Nanos) -> Option<Duration> {
        match self.until {
            Some(until) => Some(until.saturating_since(now)),
            None => None,
        }
    }
}

/// The breaker state machine (see the [module docs](self)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: BreakerState,
    /// Consecutive failures while closed.
    failures: u32,
    /// The latest outcomes while closed, a yes for a failure; kept only with a failure
    /// rate.
    outcomes: Outcomes,
    /// Probes issued in the current half-open period and not yet reported or released.
    probes_in_flight: u32,
    /// Incremented on every state change; stamps permits so stale outcomes are ignored.
    generation: u64,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config: BreakerConfig {
                failure_threshold: config.failure_threshold.max(1),
                half_open_probes: config.half_open_probes.max(1),
                failure_rate: config.failure_rate.map(FailureRate::clamped),
                ..config
            },
            state: BreakerState::Closed,
            failures: 0,
            outcomes: Outcomes::new(config.failure_rate.map_or(1, |rate| rate.window)),
            probes_in_flight: 0,
            generation: 0,
        }
    }

    /// The configuration in force (zeros raised to one, the failure rate clamped).
    pub const fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The state as last changed. An `Open` state whose `until` has passed stays `Open`
    /// here until the next [`try_acquire`](Self::try_acquire); see [`state_at`](Self::state_at).
    pub const fn state(&self) -> BreakerState {
        self.state
    }

    /// The state as a call at `now` would find it: `HalfOpen` once an open period is over.
    /// For metrics; changes nothing.
    pub const fn state_at(&self, now: Nanos) -> BreakerState {
        match self.state {
            BreakerState::Open { until } if now.as_u64() >= until.as_u64() => {
                BreakerState::HalfOpen
            }
            state => state,
        }
    }

    /// Consecutive failures counted while closed (zero in the other states).
    pub const fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// Half-open probes currently out (issued, not yet reported or released).
    pub const fn probes_in_flight(&self) -> u32 {
        self.probes_in_flight
    }

    /// Asks to make one call at `now`. Moves an open circuit whose period is over to
    /// half-open.
    pub fn try_acquire(&mut self, now: Nanos) -> Result<Permit, Rejected> {
        if let BreakerState::Open { until } = self.state {
            if now < until {
                return Err(Rejected { until: Some(until) });
            }
            self.transition(BreakerState::HalfOpen);
        }
        match self.state {
            BreakerState::Closed => Ok(self.permit(false)),
            BreakerState::HalfOpen if self.probes_in_flight < self.config.half_open_probes => {
                self.probes_in_flight += 1;
                Ok(self.permit(true))
            }
            BreakerState::HalfOpen => Err(Rejected { until: None }),
            BreakerState::Open { until } => Err(Rejected { until: Some(until) }),
        }
    }

    /// Reports that the call made under `permit` succeeded at `now`: resets the failure
    /// count of a closed circuit (and counts a success in its failure-rate window), closes
    /// a half-open one. Ignored if the permit is stale.
    ///
    /// `now` is not needed by today's rules; it is part of the signature so that every
    /// report carries its instant, as [`on_failure`](Self::on_failure)'s does.
    pub fn on_success(&mut self, permit: Permit, now: Nanos) {
        let _ = now;
        if permit.generation != self.generation {
            return;
        }
        match self.state {
            BreakerState::Closed => {
                self.failures = 0;
                // No rate check: a success never opens the circuit, even when it brings the
                // window to `min_calls` at the rate. The next failure checks again.
                self.record(false);
            }
            BreakerState::HalfOpen => self.transition(BreakerState::Closed),
            // Unreachable for a current permit: opening changes the generation.
            BreakerState::Open { .. } => {}
        }
    }

    /// Reports that the call made under `permit` failed at `now`: counts it against a
    /// closed circuit (opening it at the threshold of consecutive failures or at the
    /// failure rate), re-opens a half-open one. Ignored if the permit is stale.
    pub fn on_failure(&mut self, permit: Permit, now: Nanos) {
        if permit.generation != self.generation {
            return;
        }
        match self.state {
            BreakerState::Closed => {
                self.failures = self.failures.saturating_add(1);
                self.record(true);
                if self.failures >= self.config.failure_threshold || self.rate_reached() {
                    self.open(now);
                }
            }
            BreakerState::HalfOpen => self.open(now),
            BreakerState::Open { .. } => {}
        }
    }

    /// Gives back a permit whose call ended without an outcome (cancelled, dropped): a
    /// half-open probe slot becomes free again; nothing else changes.
    pub fn release(&mut self, permit: Permit) {
        if permit.generation == self.generation && permit.probe {
            self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
        }
    }

    fn permit(&self, probe: bool) -> Permit {
        Permit {
            generation: self.generation,
            probe,
        }
    }

    /// Pushes one outcome into the failure-rate window, if there is one.
    fn record(&mut self, failed: bool) {
        if self.config.failure_rate.is_some() {
            self.outcomes.record(failed);
        }
    }

    /// Whether the window holds enough outcomes, and enough of them are failures.
    fn rate_reached(&self) -> bool {
        self.config.failure_rate.is_some_and(|rate| {
            let failures = u64::from(self.outcomes.count());
            let outcomes = u64::from(self.outcomes.len());
            outcomes >= u64::from(rate.min_calls)
                && failures * 100 >= u64::from(rate.percent) * outcomes
        })
    }

    fn open(&mut self, now: Nanos) {
        let until = now.plus_nanos(duration_nanos(self.config.open_for));
        self.transition(BreakerState::Open { until });
    }

    fn transition(&mut self, to: BreakerState) {
        self.state = to;
        self.failures = 0;
        self.outcomes.clear();
        self.probes_in_flight = 0;
        self.generation = self.generation.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    const MS: u64 = 1_000_000;

    fn at_ms(ms: u64) -> Nanos {
        Nanos::new(ms * MS)
    }

    fn config(threshold: u32, open_ms: u64, probes: u32) -> BreakerConfig {
        BreakerConfig {
            failure_threshold: threshold,
            open_for: Duration::from_millis(open_ms),
            half_open_probes: probes,
            failure_rate: None,
        }
    }

    /// `config(threshold, 1000, 1)` plus a failure rate.
    fn rate(threshold: u32, percent: u8, window: u32, min_calls: u32) -> BreakerConfig {
        BreakerConfig {
            failure_rate: Some(FailureRate {
                percent,
                window,
                min_calls,
            }),
            ..config(threshold, 1000, 1)
        }
    }

    /// One step of a table-driven test: an action at an instant (in ms).
    #[derive(Clone, Copy, Debug)]
    enum Step {
        /// `try_acquire` then `on_success` at once.
        Ok(u64),
        /// `try_acquire` then `on_failure` at once.
        Fail(u64),
        /// `try_acquire`, keeping the permit out (a call still in flight).
        Hold(u64),
        /// `try_acquire` must be rejected with this `until` (ms; `None` = probes busy).
        Rejected(u64, Option<u64>),
        /// The state right after the previous step, as `state()` reports it.
        State(BreakerState),
    }

    fn run(config: BreakerConfig, steps: &[Step]) {
        let mut breaker = CircuitBreaker::new(config);
        let mut in_flight = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            match *step {
                Step::Ok(t) => {
                    let permit = breaker
                        .try_acquire(at_ms(t))
                        .unwrap_or_else(|r| panic!("step {i} {step:?}: rejected {r:?}"));
                    breaker.on_success(permit, at_ms(t));
                }
                Step::Fail(t) => {
                    let permit = breaker
                        .try_acquire(at_ms(t))
                        .unwrap_or_else(|r| panic!("step {i} {step:?}: rejected {r:?}"));
                    breaker.on_failure(permit, at_ms(t));
                }
                Step::Hold(t) => in_flight.push(
                    breaker
                        .try_acquire(at_ms(t))
                        .unwrap_or_else(|r| panic!("step {i} {step:?}: rejected {r:?}")),
                ),
                Step::Rejected(t, until) => {
                    let got = breaker.try_acquire(at_ms(t));
                    let want = Rejected {
                        until: until.map(at_ms),
                    };
                    assert_eq!(got, Err(want), "step {i} {step:?}");
                }
                Step::State(want) => assert_eq!(breaker.state(), want, "step {i}"),
            }
        }
    }

    const CLOSED: Step = Step::State(BreakerState::Closed);
    const HALF_OPEN: Step = Step::State(BreakerState::HalfOpen);
    const fn open_until(ms: u64) -> Step {
        Step::State(BreakerState::Open {
            until: Nanos::new(ms * MS),
        })
    }

    #[test]
    fn table() {
        use Step::*;
        let cases: &[(&str, BreakerConfig, &[Step])] = &[
            (
                "opens at exactly the threshold",
                config(3, 1000, 1),
                &[
                    Fail(0),
                    Fail(1),
                    CLOSED,
                    Fail(2),
                    open_until(1002),
                    Rejected(2, Some(1002)),
                ],
            ),
            (
                "a success resets the count of consecutive failures",
                config(3, 1000, 1),
                &[
                    Fail(0),
                    Fail(1),
                    Ok(2),
                    Fail(3),
                    Fail(4),
                    CLOSED,
                    Fail(5),
                    open_until(1005),
                ],
            ),
            (
                "rejects until the last nanosecond of the open period, probes at until",
                config(1, 1000, 1),
                &[
                    Fail(10),
                    Rejected(10, Some(1010)),
                    Rejected(1009, Some(1010)),
                    Ok(1010),
                    CLOSED,
                    Ok(1011),
                ],
            ),
            (
                "a failed probe re-opens for open_for from the failure",
                config(1, 1000, 1),
                &[
                    Fail(0),
                    Fail(1500),
                    open_until(2500),
                    Rejected(2499, Some(2500)),
                    Ok(2500),
                    CLOSED,
                ],
            ),
            (
                "closing forgets earlier failures",
                config(2, 100, 1),
                &[
                    Fail(0),
                    Fail(0),
                    Ok(100),
                    Fail(101),
                    CLOSED,
                    Fail(102),
                    open_until(202),
                ],
            ),
            (
                "half-open with every probe out rejects without an until, at any time",
                config(1, 100, 2),
                &[
                    Fail(0),
                    Hold(100),
                    HALF_OPEN,
                    Hold(150),
                    Rejected(150, None),
                    Rejected(10_000, None),
                    HALF_OPEN,
                ],
            ),
            (
                "zero threshold and zero probes are treated as one",
                config(0, 100, 0),
                &[Fail(0), open_until(100), Ok(100), CLOSED],
            ),
            (
                "the failure rate opens a circuit that never fails twice in a row",
                rate(100, 50, 10, 4),
                &[
                    Fail(0),
                    Ok(1),
                    Fail(2),
                    CLOSED,
                    Ok(3),
                    CLOSED,
                    Fail(4),
                    open_until(1004),
                ],
            ),
            (
                "no rate verdict before min_calls outcomes",
                rate(100, 50, 10, 4),
                &[Fail(0), Fail(1), Fail(2), CLOSED, Fail(3), open_until(1003)],
            ),
            (
                "a success never opens the circuit, even at the rate",
                rate(100, 50, 4, 4),
                &[
                    Fail(0),
                    Fail(1),
                    Ok(2),
                    Ok(3),
                    CLOSED,
                    Fail(4),
                    open_until(1004),
                ],
            ),
            (
                "old outcomes slide out of the window",
                rate(100, 50, 4, 4),
                &[
                    Fail(0),
                    Fail(1),
                    Fail(2),
                    Ok(3),
                    Ok(4),
                    Ok(5),
                    // 4 failures in 7 calls, but 1 in the last 4.
                    Fail(6),
                    CLOSED,
                    // 2 in the last 4.
                    Fail(7),
                    open_until(1007),
                ],
            ),
            (
                "consecutive failures still open a circuit with a failure rate",
                rate(2, 100, 10, 10),
                &[Ok(0), Fail(1), Fail(2), open_until(1002)],
            ),
            (
                "opening and closing clear the window",
                rate(100, 50, 10, 4),
                &[
                    Fail(0),
                    Fail(1),
                    Fail(2),
                    Fail(3),
                    open_until(1003),
                    Ok(1003),
                    CLOSED,
                    Fail(1004),
                    Fail(1005),
                    Fail(1006),
                    CLOSED,
                    Fail(1007),
                    open_until(2007),
                ],
            ),
        ];
        for (name, config, steps) in cases {
            eprintln!("case: {name}");
            run(*config, steps);
        }
    }

    #[test]
    fn a_full_width_window_keeps_128_outcomes() {
        let mut breaker = CircuitBreaker::new(rate(u32::MAX, 1, 128, 128));
        let mut report = |failed: bool| {
            let p = breaker.try_acquire(at_ms(0)).unwrap();
            if failed {
                breaker.on_failure(p, at_ms(0));
            } else {
                breaker.on_success(p, at_ms(0));
            }
            breaker.state()
        };
        for _ in 0..127 {
            report(false);
        }
        // 1 in 128 is under 1%; 2 in 128 is over.
        assert_eq!(report(true), BreakerState::Closed);
        assert_eq!(report(true), BreakerState::Open { until: at_ms(1000) });
    }

    #[test]
    fn failure_rate_is_clamped_into_range() {
        for ((percent, window, min_calls), want) in [
            ((0, 0, 0), (1, 1, 1)),
            ((200, 500, 1000), (100, 128, 128)),
            ((50, 10, 20), (50, 10, 10)),
            ((50, 10, 5), (50, 10, 5)),
        ] {
            let breaker = CircuitBreaker::new(rate(5, percent, window, min_calls));
            let got = breaker.config().failure_rate.unwrap();
            assert_eq!((got.percent, got.window, got.min_calls), want);
        }
    }

    #[test]
    fn half_open_admits_exactly_the_probe_count() {
        let mut breaker = CircuitBreaker::new(config(1, 1000, 2));
        let p = breaker.try_acquire(at_ms(0)).unwrap();
        breaker.on_failure(p, at_ms(0));
        let a = breaker.try_acquire(at_ms(1000)).unwrap();
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        let b = breaker.try_acquire(at_ms(1000)).unwrap();
        assert!(a.is_probe() && b.is_probe());
        assert_eq!(breaker.probes_in_flight(), 2);
        assert_eq!(
            breaker.try_acquire(at_ms(1001)),
            Err(Rejected { until: None })
        );
        // A released probe frees its slot.
        breaker.release(a);
        let c = breaker.try_acquire(at_ms(1002)).unwrap();
        // One success closes; the other probe's later failure is stale.
        breaker.on_success(b, at_ms(1003));
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.on_failure(c, at_ms(1004));
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(breaker.consecutive_failures(), 0);
    }

    #[test]
    fn stale_outcomes_are_ignored() {
        let mut breaker = CircuitBreaker::new(config(1, 1000, 1));
        let slow = breaker.try_acquire(at_ms(0)).unwrap();
        let fast = breaker.try_acquire(at_ms(0)).unwrap();
        breaker.on_failure(fast, at_ms(1));
        assert_eq!(breaker.state(), BreakerState::Open { until: at_ms(1001) });
        // A call admitted while closed cannot close the circuit that opened since...
        breaker.on_success(slow, at_ms(2));
        assert_eq!(breaker.state(), BreakerState::Open { until: at_ms(1001) });
        // ...nor can a late failure extend the open period.
        let mut breaker = CircuitBreaker::new(config(1, 1000, 1));
        let slow = breaker.try_acquire(at_ms(0)).unwrap();
        let fast = breaker.try_acquire(at_ms(0)).unwrap();
        breaker.on_failure(fast, at_ms(1));
        breaker.on_failure(slow, at_ms(500));
        assert_eq!(breaker.state(), BreakerState::Open { until: at_ms(1001) });
    }

    #[test]
    fn state_at_reports_half_open_once_the_period_is_over() {
        let mut breaker = CircuitBreaker::new(config(1, 1000, 1));
        let p = breaker.try_acquire(at_ms(0)).unwrap();
        breaker.on_failure(p, at_ms(0));
        assert_eq!(
            breaker.state_at(at_ms(999)),
            BreakerState::Open { until: at_ms(1000) }
        );
        assert_eq!(breaker.state_at(at_ms(1000)), BreakerState::HalfOpen);
        assert_eq!(breaker.state().name(), "open");
        assert_eq!(BreakerState::HalfOpen.name(), "half_open");
    }

    #[test]
    fn open_period_saturates_at_the_end_of_time() {
        let mut breaker = CircuitBreaker::new(config(1, 1000, 1));
        let p = breaker.try_acquire(Nanos::MAX).unwrap();
        breaker.on_failure(p, Nanos::MAX);
        assert_eq!(breaker.state(), BreakerState::Open { until: Nanos::MAX });
        assert_eq!(
            Rejected {
                until: Some(at_ms(5))
            }
            .retry_after(at_ms(7)),
            Some(Duration::ZERO)
        );
    }

    #[derive(Clone, Debug)]
    enum Op {
        Acquire,
        /// Report the outcome of the i-th outstanding permit (modulo their number).
        Succeed(usize),
        Fail(usize),
        Release(usize),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Acquire),
            2 => any::<usize>().prop_map(Op::Succeed),
            3 => any::<usize>().prop_map(Op::Fail),
            1 => any::<usize>().prop_map(Op::Release),
            2 => (0u64..40).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// Whatever the interleaving of calls and outcomes: no call passes while open, at
        /// most `half_open_probes` probes are ever out at once, the circuit opens exactly
        /// at the threshold or the failure rate of a naive model of the window, and probes
        /// are allowed again exactly at `until`.
        #[test]
        fn invariants_hold_under_any_interleaving(
            threshold in prop_oneof![3 => 1u32..4, 1 => Just(u32::MAX)],
            open_for in 1u64..30,
            probes in 1u32..4,
            rate in proptest::option::of((1u8..=100, 1u32..8, 1u32..8)),
            ops in proptest::collection::vec(op(), 0..200),
        ) {
            let mut breaker = CircuitBreaker::new(BreakerConfig {
                failure_threshold: threshold,
                open_for: Duration::from_nanos(open_for),
                half_open_probes: probes,
                failure_rate: rate.map(|(percent, window, min_calls)| FailureRate {
                    percent,
                    window,
                    min_calls,
                }),
            });
            let rate = breaker.config().failure_rate;
            let mut now = Nanos::new(0);
            // Permits issued and not yet reported, in no particular order.
            let mut outstanding: Vec<Permit> = Vec::new();
            // The outcomes of the current closed period, oldest first, `true` for a failure.
            let mut model: VecDeque<bool> = VecDeque::new();
            let mut model_generation = breaker.generation;
            for op in ops {
                if breaker.generation != model_generation {
                    model.clear();
                    model_generation = breaker.generation;
                }
                let before = breaker.state();
                match op {
                    Op::Acquire => match breaker.try_acquire(now) {
                        Ok(permit) => {
                            if let BreakerState::Open { until } = before {
                                prop_assert!(now >= until, "let a call through while open");
                            }
                            prop_assert_eq!(permit.is_probe(), breaker.state() == BreakerState::HalfOpen);
                            outstanding.push(permit);
                        }
                        Err(rejected) => match before {
                            BreakerState::Closed => prop_assert!(false, "rejected while closed"),
                            BreakerState::Open { until } => {
                                prop_assert!(now < until, "rejected a probe at or after until");
                                prop_assert_eq!(rejected.until, Some(until));
                            }
                            BreakerState::HalfOpen => {
                                prop_assert_eq!(rejected.until, None);
                                prop_assert_eq!(breaker.probes_in_flight(), probes);
                            }
                        },
                    },
                    Op::Succeed(i) | Op::Fail(i) | Op::Release(i) if !outstanding.is_empty() => {
                        let permit = outstanding.swap_remove(i % outstanding.len());
                        let current = permit.generation == breaker.generation;
                        let failures = breaker.consecutive_failures();
                        match op {
                            Op::Succeed(_) => {
                                breaker.on_success(permit, now);
                                if current && before == BreakerState::Closed {
                                    model.push_back(false);
                                }
                                if current {
                                    prop_assert_eq!(breaker.state(), BreakerState::Closed);
                                    prop_assert_eq!(breaker.consecutive_failures(), 0);
                                }
                            }
                            Op::Fail(_) => {
                                breaker.on_failure(permit, now);
                                if current {
                                    if before == BreakerState::Closed {
                                        model.push_back(true);
                                    }
                                    if let Some(rate) = rate {
                                        while model.len() > rate.window as usize {
                                            model.pop_front();
                                        }
                                    }
                                    let failed = model.iter().filter(|&&f| f).count();
                                    let rate_reached = rate.is_some_and(|rate| {
                                        model.len() >= rate.min_calls as usize
                                            && failed * 100 >= usize::from(rate.percent) * model.len()
                                    });
                                    let opens = before == BreakerState::HalfOpen
                                        || failures + 1 >= threshold
                                        || rate_reached;
                                    let want = if opens {
                                        BreakerState::Open { until: now.plus_nanos(open_for) }
                                    } else {
                                        BreakerState::Closed
                                    };
                                    prop_assert_eq!(breaker.state(), want);
                                }
                            }
                            _ => breaker.release(permit),
                        }
                        if !current {
                            prop_assert_eq!(breaker.state(), before, "a stale outcome changed the state");
                        }
                    }
                    Op::Advance(by) => now = now.plus_nanos(by),
                    _ => {}
                }
                prop_assert!(breaker.probes_in_flight() <= probes);
                let live_probes = outstanding
                    .iter()
                    .filter(|p| p.is_probe() && p.generation == breaker.generation)
                    .count();
                prop_assert_eq!(live_probes, breaker.probes_in_flight() as usize);
                prop_assert!(breaker.consecutive_failures() < threshold);
                if let Some(rate) = rate {
                    while model.len() > rate.window as usize {
                        model.pop_front();
                    }
                }
                if breaker.state() == BreakerState::Closed && breaker.generation == model_generation {
                    let failed = model.iter().filter(|&&f| f).count();
                    let kept = if rate.is_some() { model.len() } else { 0 };
                    let kept_failed = if rate.is_some() { failed } else { 0 };
                    prop_assert_eq!(breaker.outcomes.len() as usize, kept);
                    prop_assert_eq!(breaker.outcomes.count() as usize, kept_failed);
                }
            }
        }
    }
}
