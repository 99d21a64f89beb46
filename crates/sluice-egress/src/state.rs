//! The client's bookkeeping without I/O: the circuit breaker, the adaptive concurrency
//! limit, the quota monitor and the throttle window, in the style of `quinn-proto`.
//!
//! [`EgressState`] reads no clock and touches no file or socket: every input is an answer
//! (or a failure to get one) and `now`, every output is a decision and the
//! [`EgressEvent`]s it caused, pushed onto the caller's list. The async shell in
//! [`crate::client`] holds it behind one lock, never across an await, and does the waiting,
//! the sending, the logging and the writing of the state file after the lock is released.

use std::time::Duration;

use sluice_core::{BreakerState, CircuitBreaker, Nanos, Outcomes, Permit};
use sluice_http::UpstreamSignals;

use crate::Priority;
use crate::classify::{ErrorClass, Outcome};
use crate::client::EgressConfig;
use crate::concurrency::{AdaptiveConcurrency, ConcurrencyError, Slot};
use crate::events::EgressEvent;
use crate::quota::{Admission, QuotaMonitor, Usage};
use crate::state_file::Snapshot;

/// When the share of throttled attempts raises an [`EgressEvent::ThrottleAlert`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ThrottleAlertConfig {
    /// The share of recent attempts answered 429 (or quota exhausted) that raises the
    /// alert, in `(0, 1]`. It is raised again only after the share has fallen back below.
    pub threshold: f64,
    /// Over how many recent attempts, 1 to 128. No alert before this many have been made.
    pub window: u32,
}

impl Default for ThrottleAlertConfig {
    /// 5 % of the last 100 attempts.
    fn default() -> Self {
        Self {
            threshold: 0.05,
            window: 100,
        }
    }
}

/// How a streamed call ended, for the concurrency limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    /// It ended normally: a success.
    Completed,
    /// The upstream's stream failed with this class.
    BrokeOff(ErrorClass),
    /// The reader went away: nothing to learn.
    Abandoned,
}

/// One attempt's answer, as the state learns it.
pub(crate) struct Answered<'a> {
    pub(crate) slot: Slot,
    pub(crate) permit: Permit,
    pub(crate) outcome: Outcome,
    /// From sending to the answer's head.
    pub(crate) latency: Duration,
    /// What the answer's headers said, when there was an answer.
    pub(crate) signals: Option<&'a UpstreamSignals>,
    /// The tokens the call was estimated at.
    pub(crate) estimate: u64,
    /// The tokens it used, when known now.
    pub(crate) used: Option<u64>,
    /// A successful answer whose body streams: the call keeps its slot until it ends.
    pub(crate) streams: bool,
}

/// Everything the client decides with, behind its lock.
#[derive(Debug)]
pub(crate) struct EgressState {
    breaker: CircuitBreaker,
    concurrency: AdaptiveConcurrency,
    quota: QuotaMonitor,
    /// The circuit as last reported in an event.
    circuit: BreakerState,
    throttle: Throttle,
    /// How often the quota state is snapshot for the state file; `None`: no state file.
    persist_every: Option<Duration>,
    persisted_at: Option<Nanos>,
    generation: u64,
}

impl EgressState {
    /// The state of a new client, with the quota monitor it loaded.
    pub(crate) fn new(
        config: &EgressConfig,
        quota: QuotaMonitor,
    ) -> Result<Self, ConcurrencyError> {
        Ok(Self {
            breaker: CircuitBreaker::new(config.breaker),
            concurrency: AdaptiveConcurrency::new(config.concurrency.clone())?,
            quota,
            circuit: BreakerState::Closed,
            throttle: Throttle::new(config.throttle_alert),
            persist_every: config.state_file.as_ref().map(|_| config.persist_every),
            persisted_at: None,
            generation: 0,
        })
    }

    /// `Err(retry_after)` while the circuit is open.
    pub(crate) fn circuit(
        &mut self,
        now: Nanos,
        events: &mut Vec<EgressEvent>,
    ) -> Result<(), Duration> {
        let state = self.circuit_changes(now, events);
        match state {
            BreakerState::Open { until } => Err(until.saturating_since(now)),
            _ => Ok(()),
        }
    }

    /// Whether quota lets work of `priority` go now.
    pub(crate) fn admit(&self, priority: Priority, now: Nanos) -> Admission {
        self.quota.admit(priority, now)
    }

    /// A concurrency slot, when one is free.
    pub(crate) fn try_slot(&mut self) -> Option<Slot> {
        self.concurrency.try_acquire()
    }

    /// Gives back a slot whose call was never sent.
    pub(crate) fn release(&mut self, slot: Slot) {
        self.concurrency.release(slot);
    }

    /// The breaker's leave to send one call of `tokens` estimated tokens, counted as sent;
    /// `Err(retry_after)` when the circuit refuses it.
    pub(crate) fn send(
        &mut self,
        tokens: u64,
        now: Nanos,
        events: &mut Vec<EgressEvent>,
    ) -> Result<Permit, Duration> {
        let permit = self
            .breaker
            .try_acquire(now)
            .map_err(|rejected| rejected.retry_after(now).unwrap_or_default());
        self.circuit_changes(now, events);
        let permit = permit?;
        events.extend(
            self.quota
                .record_sent(1, tokens, now)
                .into_iter()
                .map(Into::into),
        );
        Ok(permit)
    }

    /// A call dropped between its leave to send and its answer: its slot and probe go back,
    /// nothing is learned.
    pub(crate) fn abandon(&mut self, slot: Slot, permit: Permit) {
        self.concurrency.release(slot);
        self.breaker.release(permit);
    }

    /// Learns from one attempt's answer. Returns the slot back for a stream, which holds it
    /// until [`stream_ended`](Self::stream_ended).
    pub(crate) fn answered(
        &mut self,
        answer: Answered<'_>,
        now: Nanos,
        events: &mut Vec<EgressEvent>,
    ) -> Option<Slot> {
        let Answered {
            slot,
            permit,
            outcome,
            latency,
            signals,
            estimate,
            used,
            streams,
        } = answer;
        if let Some(signals) = signals {
            events.extend(self.quota.observe(signals, now).into_iter().map(Into::into));
        }
        if let Some(used) = used {
            events.extend(
                self.quota
                    .record_settled(estimate, used, now)
                    .into_iter()
                    .map(Into::into),
            );
        }
        self.observe_quota(now);
        let limit = self.concurrency.limit();
        // The breaker hears at the head (the upstream answered, so it is up); the
        // concurrency limit hears when the call ends, at the end of a stream.
        let held = match outcome {
            Outcome::Success => {
                self.breaker.on_success(permit, now);
                self.throttle.record(false, events);
                if streams {
                    Some(slot)
                } else {
                    self.concurrency.on_success(slot, latency, now);
                    None
                }
            }
            Outcome::Failure(class) => {
                self.concurrency.on_failure(slot, class, now);
                if class.counts_against_breaker() {
                    self.breaker.on_failure(permit, now);
                } else {
                    // It answered: whatever it said, the upstream is up.
                    self.breaker.on_success(permit, now);
                }
                let throttled =
                    matches!(class, ErrorClass::RateLimited | ErrorClass::QuotaExhausted);
                self.throttle.record(throttled, events);
                None
            }
        };
        self.concurrency_changes(limit, events);
        self.circuit_changes(now, events);
        held
    }

    /// A streamed call ended `latency` after it was sent: its slot goes back.
    pub(crate) fn stream_ended(
        &mut self,
        slot: Slot,
        end: StreamEnd,
        latency: Duration,
        now: Nanos,
        events: &mut Vec<EgressEvent>,
    ) {
        let limit = self.concurrency.limit();
        match end {
            StreamEnd::Completed => self.concurrency.on_success(slot, latency, now),
            StreamEnd::BrokeOff(class) => self.concurrency.on_failure(slot, class, now),
            StreamEnd::Abandoned => self.concurrency.release(slot),
        }
        self.concurrency_changes(limit, events);
    }

    /// A call estimated at `estimate` tokens used `used`.
    pub(crate) fn settled(
        &mut self,
        estimate: u64,
        used: u64,
        now: Nanos,
        events: &mut Vec<EgressEvent>,
    ) {
        events.extend(
            self.quota
                .record_settled(estimate, used, now)
                .into_iter()
                .map(Into::into),
        );
    }

    /// Slots free under the current limit.
    pub(crate) fn free_slots(&self) -> u32 {
        self.concurrency
            .limit()
            .saturating_sub(self.concurrency.in_flight())
    }

    /// A snapshot for the state file, when there is one and the last was taken at least
    /// `persist_every` ago.
    pub(crate) fn snapshot_if_due(&mut self, now: Nanos) -> Option<Snapshot> {
        let every = self.persist_every?;
        if self
            .persisted_at
            .is_some_and(|at| now.saturating_since(at) < every)
        {
            return None;
        }
        self.persisted_at = Some(now);
        Some(self.snapshot())
    }

    /// A snapshot of the quota state now.
    pub(crate) fn snapshot(&mut self) -> Snapshot {
        self.generation += 1;
        Snapshot {
            generation: self.generation,
            state: self.quota.snapshot(),
        }
    }

    pub(crate) fn in_flight(&self) -> u32 {
        self.concurrency.in_flight()
    }

    pub(crate) fn concurrency_limit(&self) -> u32 {
        self.concurrency.limit()
    }

    pub(crate) fn circuit_at(&self, now: Nanos) -> BreakerState {
        self.breaker.state_at(now)
    }

    pub(crate) fn usage(&self, now: Nanos) -> Vec<Usage> {
        self.quota.usage(now)
    }

    /// Tells the concurrency limit the most used quota dimension's share.
    fn observe_quota(&mut self, now: Nanos) {
        self.concurrency
            .observe_quota(self.quota.busiest_share(now));
    }

    fn concurrency_changes(&self, before: u32, events: &mut Vec<EgressEvent>) {
        let to = self.concurrency.limit();
        if to != before {
            events.push(EgressEvent::Concurrency { from: before, to });
        }
    }

    /// The circuit now, with an event when it changed since the last report.
    fn circuit_changes(&mut self, now: Nanos, events: &mut Vec<EgressEvent>) -> BreakerState {
        let state = self.breaker.state_at(now);
        if let Some(event) = EgressEvent::circuit(self.circuit, state, now) {
            events.push(event);
        }
        self.circuit = state;
        state
    }
}

/// The share of recent attempts the upstream throttled, and whether its alert is raised.
#[derive(Debug)]
struct Throttle {
    config: ThrottleAlertConfig,
    /// A yes for a throttled attempt.
    throttled: Outcomes,
    raised: bool,
}

impl Throttle {
    fn new(config: ThrottleAlertConfig) -> Self {
        Self {
            config,
            throttled: Outcomes::new(config.window),
            raised: false,
        }
    }

    fn record(&mut self, throttled: bool, events: &mut Vec<EgressEvent>) {
        self.throttled.record(throttled);
        let window = self.throttled.capacity();
        if self.throttled.len() < window {
            return;
        }
        let rate = f64::from(self.throttled.count()) / f64::from(window);
        if !self.raised && rate >= self.config.threshold {
            self.raised = true;
            events.push(EgressEvent::ThrottleAlert {
                rate,
                threshold: self.config.threshold,
                attempts: window,
            });
        } else if self.raised && rate < self.config.threshold {
            self.raised = false;
            events.push(EgressEvent::ThrottleCleared { rate });
        }
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, StatusCode};
    use sluice_core::BreakerConfig;

    use super::*;
    use crate::concurrency::ConcurrencyConfig;

    fn at_ms(ms: u64) -> Nanos {
        Nanos::new(ms * 1_000_000)
    }

    fn state(config: EgressConfig) -> EgressState {
        let quota = QuotaMonitor::new(config.quota.clone()).unwrap();
        EgressState::new(&config, quota).unwrap()
    }

    /// One attempt sent and answered with `outcome` at `now`.
    fn call(s: &mut EgressState, outcome: Outcome, now: Nanos) -> Vec<EgressEvent> {
        let mut events = Vec::new();
        let slot = s.try_slot().expect("a free slot");
        let permit = s.send(10, now, &mut events).expect("circuit closed");
        let signals = UpstreamSignals::read(StatusCode::OK, &HeaderMap::new(), now);
        let held = s.answered(
            Answered {
                slot,
                permit,
                outcome,
                latency: Duration::from_millis(10),
                signals: Some(&signals),
                estimate: 10,
                used: Some(10),
                streams: false,
            },
            now,
            &mut events,
        );
        assert!(held.is_none());
        events
    }

    #[test]
    fn the_throttle_alert_is_raised_once_and_cleared_once() {
        let mut config = EgressConfig::new("test");
        config.throttle_alert = ThrottleAlertConfig {
            threshold: 0.1,
            window: 20,
        };
        config.concurrency.health = None;
        let mut s = state(config);
        let throttled = Outcome::Failure(ErrorClass::RateLimited);
        let mut events = Vec::new();
        for i in 0..20 {
            let outcome = if i % 5 == 0 {
                throttled
            } else {
                Outcome::Success
            };
            events.extend(call(&mut s, outcome, at_ms(i)));
        }
        let alerts = |events: &[EgressEvent]| -> Vec<EgressEvent> {
            events
                .iter()
                .filter(|e| {
                    matches!(
                        e,
                        EgressEvent::ThrottleAlert { .. } | EgressEvent::ThrottleCleared { .. }
                    )
                })
                .cloned()
                .collect()
        };
        assert_eq!(
            alerts(&events),
            [EgressEvent::ThrottleAlert {
                rate: 0.2,
                threshold: 0.1,
                attempts: 20
            }],
            "4 of 20 throttled"
        );
        let mut later = Vec::new();
        for i in 20..40 {
            later.extend(call(&mut s, Outcome::Success, at_ms(i)));
        }
        assert_eq!(
            alerts(&later),
            [EgressEvent::ThrottleCleared { rate: 0.05 }],
            "cleared once, when the share fell below 10 %"
        );
    }

    #[test]
    fn circuit_and_concurrency_changes_are_events() {
        let mut config = EgressConfig::new("test");
        config.breaker = BreakerConfig {
            failure_threshold: 2,
            open_for: Duration::from_secs(1),
            ..BreakerConfig::default()
        };
        config.concurrency = ConcurrencyConfig {
            initial: 4,
            decrease_cooldown: Duration::ZERO,
            health: None,
            ..ConcurrencyConfig::default()
        };
        let mut s = state(config);
        let overloaded = Outcome::Failure(ErrorClass::Overloaded);
        let first = call(&mut s, overloaded, at_ms(0));
        assert_eq!(first, [EgressEvent::Concurrency { from: 4, to: 3 }]);
        let second = call(&mut s, overloaded, at_ms(1));
        assert!(
            second.contains(&EgressEvent::Circuit {
                from: "closed",
                to: "open",
                retry_after: Some(Duration::from_secs(1)),
            }),
            "{second:?}"
        );
        let mut events = Vec::new();
        assert_eq!(
            s.circuit(at_ms(500), &mut events),
            Err(Duration::from_millis(501))
        );
        assert!(events.is_empty(), "still open: nothing new");
        assert_eq!(s.circuit(at_ms(1001), &mut events), Ok(()));
        assert_eq!(
            events,
            [EgressEvent::Circuit {
                from: "open",
                to: "half_open",
                retry_after: None
            }]
        );
    }

    #[test]
    fn snapshots_are_due_every_persist_interval_and_numbered() {
        let mut config = EgressConfig::new("test");
        config.state_file = Some("unused.json".into());
        config.persist_every = Duration::from_secs(1);
        let mut s = state(config);
        let first = s
            .snapshot_if_due(at_ms(0))
            .expect("the first is due at once");
        assert!(s.snapshot_if_due(at_ms(999)).is_none());
        let second = s.snapshot_if_due(at_ms(1000)).expect("a second later");
        assert!(second.generation > first.generation);
        let mut without = state(EgressConfig::new("test"));
        assert!(without.snapshot_if_due(at_ms(0)).is_none(), "no state file");
    }
}
