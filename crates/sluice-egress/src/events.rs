//! What a client tells the program that runs it: quota alerts, pauses, concurrency and
//! circuit changes, retries and throttle alerts.
//!
//! Every [`EgressEvent`] is logged as a structured tracing event with the upstream's name,
//! and sent to the subscribers of [`Egress::subscribe`](crate::Egress::subscribe): a
//! `tokio::sync::broadcast` receiver per subscriber, so a slow subscriber loses the oldest
//! events (and is told how many) instead of slowing the calls down.

use std::time::Duration;

use serde::Serialize;
use sluice_core::BreakerState;

use crate::classify::ErrorClass;
use crate::quota::QuotaEvent;

/// Something that changed in a client.
///
/// Serialises as `{"event": "concurrency", "from": 10, "to": 7, …}`; a quota event keeps
/// its own tag (`alert`, `paused`, `resumed`, …).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EgressEvent {
    /// The adaptive concurrency limit moved.
    Concurrency {
        /// The limit before.
        from: u32,
        /// The limit now.
        to: u32,
    },
    /// The circuit breaker changed state.
    Circuit {
        /// `closed`, `open` or `half_open`.
        from: &'static str,
        /// `closed`, `open` or `half_open`.
        to: &'static str,
        /// While open: how long until a probe may go.
        #[serde(
            rename = "retry_after_ms",
            skip_serializing_if = "Option::is_none",
            serialize_with = "millis"
        )]
        retry_after: Option<Duration>,
    },
    /// A call failed and will be tried again after `wait`.
    Retry {
        /// The attempt that failed (1 for the first).
        attempt: u32,
        /// Why it failed.
        #[serde(serialize_with = "class_name")]
        class: ErrorClass,
        /// The wait before the next attempt.
        #[serde(rename = "wait_ms", serialize_with = "millis_always")]
        wait: Duration,
    },
    /// The share of attempts the upstream throttled (429 or quota exhausted) over the
    /// recent ones passed the alert threshold.
    ThrottleAlert {
        /// The share, in `[0, 1]`.
        rate: f64,
        /// The threshold it passed.
        threshold: f64,
        /// Over how many recent attempts.
        attempts: u32,
    },
    /// The throttle rate fell back below its threshold.
    ThrottleCleared {
        /// The share, in `[0, 1]`.
        rate: f64,
    },
    /// The quota monitor's news: an alert level crossed, a pause, a resume, exhaustion, a
    /// window reset.
    #[serde(untagged)]
    Quota(QuotaEvent),
}

impl From<QuotaEvent> for EgressEvent {
    fn from(event: QuotaEvent) -> Self {
        Self::Quota(event)
    }
}

impl EgressEvent {
    /// The circuit change from `from` to `to`, when they differ in kind.
    pub(crate) fn circuit(
        from: BreakerState,
        to: BreakerState,
        now: sluice_core::Nanos,
    ) -> Option<Self> {
        if std::mem::discriminant(&from) == std::mem::discriminant(&to) {
            return None;
        }
        let retry_after = match to {
            BreakerState::Open { until } => Some(until.saturating_since(now)),
            _ => None,
        };
        Some(Self::Circuit {
            from: from.name(),
            to: to.name(),
            retry_after,
        })
    }

    /// Emits the event as a structured tracing event with the upstream's name: at `warn`
    /// for what needs a person's eye (critical alerts, pauses, an open circuit, throttling),
    /// at `info` for the rest, and at `debug` for retries.
    pub fn log(&self, upstream: &str) {
        match *self {
            Self::Quota(ref event) => event.log(upstream),
            Self::Concurrency { from, to } => {
                tracing::info!(upstream, from, to, "concurrency limit {from} -> {to}");
            }
            Self::Circuit {
                from,
                to,
                retry_after,
            } => {
                let retry_after_ms = retry_after.map(|d| d.as_millis());
                if to == "open" {
                    tracing::warn!(upstream, from, to, retry_after_ms, "circuit {from} -> {to}");
                } else {
                    tracing::info!(upstream, from, to, "circuit {from} -> {to}");
                }
            }
            Self::Retry {
                attempt,
                class,
                wait,
            } => {
                let class = class.name();
                let wait_ms = wait.as_millis();
                tracing::debug!(upstream, attempt, class, wait_ms, "retrying after {class}");
            }
            Self::ThrottleAlert {
                rate,
                threshold,
                attempts,
            } => {
                let percent = rate * 100.0;
                tracing::warn!(
                    upstream,
                    rate,
                    threshold,
                    attempts,
                    "throttle alert: the upstream throttled {percent:.1} % of the last {attempts} attempts"
                );
            }
            Self::ThrottleCleared { rate } => {
                tracing::info!(upstream, rate, "throttle rate back below its threshold");
            }
        }
    }
}

#[allow(
    clippy::ref_option,
    reason = "serde's serialize_with passes a reference"
)]
fn millis<S: serde::Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(d) => millis_always(d, s),
        None => s.serialize_none(),
    }
}

fn millis_always<S: serde::Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
}

fn class_name<S: serde::Serializer>(class: &ErrorClass, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(class.name())
}
