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
//!            failure_threshold consecutive failures
//!   Closed ───────────────────────────────────────────▶ Open { until: now + open_for }
//!     ▲                                                  │        ▲
//!     │ a probe succeeds                   now ≥ until   │        │ a probe fails
//!     │                                                  ▼        │
//!     └──────────────────────────────────────────────── HalfOpen ─┘
//!                                (at most half_open_probes calls in flight)
//! ```
//!
//! - **Closed**: every call passes. Each failure counts, each success resets the count;
//!   `failure_threshold` failures in a row open the circuit.
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
}

impl Default for BreakerConfig {
    /// Opens after 5 consecutive failures, for 1 s, then lets 1 probe through.
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: Duration::from_secs(1),
            half_open_probes: 1,
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
                ..config
            },
            state: BreakerState::Closed,
            failures: 0,
            probes_in_flight: 0,
            generation: 0,
        }
    }

    /// The configuration in force (zeros raised to one).
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
    /// count of a closed circuit, closes a half-open one. Ignored if the permit is stale.
    ///
    /// `now` is not needed by today's rules; it is part of the signature so that every
    /// report carries its instant, as [`on_failure`](Self::on_failure)'s does.
    pub fn on_success(&mut self, permit: Permit, now: Nanos) {
        let _ = now;
        if permit.generation != self.generation {
            return;
        }
        match self.state {
            BreakerState::Closed => self.failures = 0,
            BreakerState::HalfOpen => self.transition(BreakerState::Closed),
            // Unreachable for a current permit: opening changes the generation.
            BreakerState::Open { .. } => {}
        }
    }

    /// Reports that the call made under `permit` failed at `now`: counts it against a
    /// closed circuit (opening it at the threshold), re-opens a half-open one. Ignored if
    /// the permit is stale.
    pub fn on_failure(&mut self, permit: Permit, now: Nanos) {
        if permit.generation != self.generation {
            return;
        }
        match self.state {
            BreakerState::Closed => {
                self.failures = self.failures.saturating_add(1);
                if self.failures >= self.config.failure_threshold {
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

    fn open(&mut self, now: Nanos) {
        let until = now.plus_nanos(duration_nanos(self.config.open_for));
        self.transition(BreakerState::Open { until });
    }

    fn transition(&mut self, to: BreakerState) {
        self.state = to;
        self.failures = 0;
        self.probes_in_flight = 0;
        self.generation = self.generation.wrapping_add(1);
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

    fn config(threshold: u32, open_ms: u64, probes: u32) -> BreakerConfig {
        BreakerConfig {
            failure_threshold: threshold,
            open_for: Duration::from_millis(open_ms),
            half_open_probes: probes,
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
        ];
        for (name, config, steps) in cases {
            eprintln!("case: {name}");
            run(*config, steps);
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
        /// at the threshold, and probes are allowed again exactly at `until`.
        #[test]
        fn invariants_hold_under_any_interleaving(
            threshold in 1u32..4,
            open_for in 1u64..30,
            probes in 1u32..4,
            ops in proptest::collection::vec(op(), 0..200),
        ) {
            let mut breaker = CircuitBreaker::new(BreakerConfig {
                failure_threshold: threshold,
                open_for: Duration::from_nanos(open_for),
                half_open_probes: probes,
            });
            let mut now = Nanos::new(0);
            // Permits issued and not yet reported, in no particular order.
            let mut outstanding: Vec<Permit> = Vec::new();
            for op in ops {
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
                                if current {
                                    prop_assert_eq!(breaker.state(), BreakerState::Closed);
                                    prop_assert_eq!(breaker.consecutive_failures(), 0);
                                }
                            }
                            Op::Fail(_) => {
                                breaker.on_failure(permit, now);
                                if current {
                                    let opens = before == BreakerState::HalfOpen
                                        || failures + 1 >= threshold;
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
            }
        }
    }
}
