//! The proxy's counters, and `GET /_sluice/metrics` in the Prometheus text format.
//!
//! | Metric | Type | Labels | What |
//! |---|---|---|---|
//! | `sluice_proxy_requests_total` | counter | | requests to forward (the proxy's own endpoints not counted) |
//! | `sluice_proxy_responses_total` | counter | `source` (`upstream`, `proxy`), `class` (`2xx`…) | answers to clients |
//! | `sluice_proxy_refused_total` | counter | `reason` (the problem type's name) | answers the proxy made itself |
//! | `sluice_proxy_upstream_responses_total` | counter | `class` | every attempt's answer, retried ones included |
//! | `sluice_proxy_upstream_429_total` | counter | | attempts the upstream answered 429 |
//! | `sluice_proxy_upstream_errors_total` | counter | `class` (`timeout`, `connect`, `connection_reset`) | attempts without an answer |
//! | `sluice_proxy_retry_waits` | gauge | | requests waiting to retry |
//! | `sluice_proxy_streams_total`, `sluice_proxy_streams_active` | counter, gauge | | streamed answers relayed |
//! | `sluice_proxy_stream_settled_total` | counter | `usage` (`reported`, `estimate`) | how streams' tokens were settled |
//! | `sluice_proxy_coalesce_eligible_total` | counter | | requests that could share an identical request's call (coalescing on, not streamed, `GET`, `HEAD` or a JSON `POST`) |
//! | `sluice_egress_coalesced_total` | counter | | of those, requests answered with an identical request's answer instead of a call of their own |
//! | `sluice_egress_attempts_total`, `_succeeded_total`, `_retries_total`, `_rate_limited_total`, `_failed_total`, `_rejected_total` | counter | | the egress client's counters |
//! | `sluice_egress_in_flight`, `sluice_egress_concurrency_limit` | gauge | | calls in flight and the adaptive limit |
//! | `sluice_egress_waiting` | gauge | | calls waiting for quota, pace or a slot |
//! | `sluice_egress_waiting_by_priority` | gauge | `priority` | calls waiting for their turn to pace |
//! | `sluice_egress_circuit_state` | gauge | `state` (`closed`, `open`, `half_open`) | 1 for the current state |
//! | `sluice_egress_pace_rate_per_minute`, `_pace_ceiling_per_minute`, `_pace_fraction`, `_pace_held` | gauge | `dimension` (`requests`, `tokens`) | pacing |
//! | `sluice_egress_quota_limit`, `_quota_used`, `_quota_remaining`, `_quota_percent`, `_quota_resets_at_seconds` | gauge | `dimension` (`requests_per_minute`, …) | quota usage |

use std::sync::atomic::{AtomicU64, Ordering};

use http::StatusCode;
use sluice_http::prometheus::MetricType::{Counter, Gauge};
use sluice_http::prometheus::TextWriter;

use super::problem::Reason;
use crate::EgressStats;
use crate::classify::ErrorClass;

/// Status classes `1xx` to `5xx`, by index `status / 100 - 1`.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn class_index(status: StatusCode) -> usize {
    usize::from(status.as_u16() / 100).clamp(1, 5) - 1
}

/// Who made an answer to a client.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Source {
    Upstream = 0,
    Proxy = 1,
}

/// The proxy's own counters; the egress client keeps the rest.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    requests: AtomicU64,
    responses: [[AtomicU64; 5]; 2],
    refused: [AtomicU64; Reason::ALL.len()],
    upstream: [AtomicU64; 5],
    upstream_429: AtomicU64,
    upstream_errors: [AtomicU64; ErrorClass::ALL.len()],
    pub(crate) retry_waits: AtomicU64,
    streams: AtomicU64,
    pub(crate) streams_active: AtomicU64,
    settled_reported: AtomicU64,
    settled_estimate: AtomicU64,
    coalesce_eligible: AtomicU64,
}

impl Metrics {
    pub(crate) fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn response(&self, source: Source, status: StatusCode) {
        self.responses[source as usize][class_index(status)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self, reason: Reason) {
        self.refused[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn upstream_answer(&self, status: StatusCode) {
        self.upstream[class_index(status)].fetch_add(1, Ordering::Relaxed);
        if status == StatusCode::TOO_MANY_REQUESTS {
            self.upstream_429.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn upstream_error(&self, class: ErrorClass) {
        if let Some(i) = ErrorClass::ALL.iter().position(|c| *c == class) {
            self.upstream_errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn stream_started(&self) {
        self.streams.fetch_add(1, Ordering::Relaxed);
        self.streams_active.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stream_settled(&self, reported: bool) {
        let counter = if reported {
            &self.settled_reported
        } else {
            &self.settled_estimate
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A request that may share an identical request's call went to the coalescer.
    pub(crate) fn coalescing(&self) {
        self.coalesce_eligible.fetch_add(1, Ordering::Relaxed);
    }

    /// Everything, with the egress client's `stats`, in the Prometheus text format.
    pub(crate) fn render(&self, stats: &EgressStats) -> String {
        let mut out = TextWriter::with_capacity(8 << 10);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);

        out.family(
            "sluice_proxy_requests_total",
            Counter,
            "Requests to forward.",
        );
        out.sample("sluice_proxy_requests_total", &[], load(&self.requests));

        out.family(
            "sluice_proxy_responses_total",
            Counter,
            "Answers to clients, by who made them and status class.",
        );
        for (source, name) in [(Source::Upstream, "upstream"), (Source::Proxy, "proxy")] {
            for (i, class) in CLASSES.iter().enumerate() {
                let value = load(&self.responses[source as usize][i]);
                out.sample(
                    "sluice_proxy_responses_total",
                    &[("source", name), ("class", class)],
                    value,
                );
            }
        }

        out.family(
            "sluice_proxy_refused_total",
            Counter,
            "Answers the proxy made itself, by problem type.",
        );
        for reason in Reason::ALL {
            let value = load(&self.refused[reason.index()]);
            out.sample(
                "sluice_proxy_refused_total",
                &[("reason", reason.name())],
                value,
            );
        }

        out.family(
            "sluice_proxy_upstream_responses_total",
            Counter,
            "Every attempt's answer from the upstream, by status class.",
        );
        for (i, class) in CLASSES.iter().enumerate() {
            out.sample(
                "sluice_proxy_upstream_responses_total",
                &[("class", class)],
                load(&self.upstream[i]),
            );
        }
        out.family(
            "sluice_proxy_upstream_429_total",
            Counter,
            "Attempts the upstream answered 429.",
        );
        out.sample(
            "sluice_proxy_upstream_429_total",
            &[],
            load(&self.upstream_429),
        );

        out.family(
            "sluice_proxy_upstream_errors_total",
            Counter,
            "Attempts without an answer, by class.",
        );
        for (i, class) in ErrorClass::ALL.iter().enumerate() {
            if matches!(
                class,
                ErrorClass::Timeout | ErrorClass::Connect | ErrorClass::ConnectionReset
            ) {
                out.sample(
                    "sluice_proxy_upstream_errors_total",
                    &[("class", class.name())],
                    load(&self.upstream_errors[i]),
                );
            }
        }

        out.family(
            "sluice_proxy_retry_waits",
            Gauge,
            "Requests waiting to retry.",
        );
        out.sample("sluice_proxy_retry_waits", &[], load(&self.retry_waits));
        out.family(
            "sluice_proxy_streams_total",
            Counter,
            "Streamed answers relayed.",
        );
        out.sample("sluice_proxy_streams_total", &[], load(&self.streams));
        out.family(
            "sluice_proxy_streams_active",
            Gauge,
            "Streamed answers being relayed.",
        );
        out.sample(
            "sluice_proxy_streams_active",
            &[],
            load(&self.streams_active),
        );
        out.family(
            "sluice_proxy_stream_settled_total",
            Counter,
            "Streams whose tokens were settled to their reported usage, or left at the estimate.",
        );
        out.sample(
            "sluice_proxy_stream_settled_total",
            &[("usage", "reported")],
            load(&self.settled_reported),
        );
        out.sample(
            "sluice_proxy_stream_settled_total",
            &[("usage", "estimate")],
            load(&self.settled_estimate),
        );
        out.family(
            "sluice_proxy_coalesce_eligible_total",
            Counter,
            "Requests that could share an identical request's upstream call.",
        );
        out.sample(
            "sluice_proxy_coalesce_eligible_total",
            &[],
            load(&self.coalesce_eligible),
        );

        egress(&mut out, stats);
        out.finish()
    }
}

fn egress(out: &mut TextWriter, stats: &EgressStats) {
    for (name, help, value) in [
        (
            "sluice_egress_attempts_total",
            "Attempts sent upstream.",
            stats.attempts,
        ),
        (
            "sluice_egress_succeeded_total",
            "Calls answered with success.",
            stats.succeeded,
        ),
        (
            "sluice_egress_retries_total",
            "Attempts that were retries.",
            stats.retried,
        ),
        (
            "sluice_egress_rate_limited_total",
            "Answers that were 429 (or quota exhausted).",
            stats.rate_limited,
        ),
        (
            "sluice_egress_failed_total",
            "Attempts that failed (any class).",
            stats.failed,
        ),
        (
            "sluice_egress_rejected_total",
            "Calls refused before sending (circuit open, quota paused, overloaded).",
            stats.rejected,
        ),
        (
            "sluice_egress_coalesced_total",
            "Calls answered with an identical call's answer instead of their own.",
            stats.coalesced,
        ),
    ] {
        out.family(name, Counter, help);
        out.sample(name, &[], value);
    }
    for (name, help, value) in [
        (
            "sluice_egress_in_flight",
            "Calls in flight.",
            u64::from(stats.in_flight),
        ),
        (
            "sluice_egress_concurrency_limit",
            "The adaptive limit on calls in flight.",
            u64::from(stats.concurrency_limit),
        ),
        (
            "sluice_egress_waiting",
            "Calls waiting for quota, pace or a slot.",
            count(stats.waiting),
        ),
    ] {
        out.family(name, Gauge, help);
        out.sample(name, &[], value);
    }
    out.family(
        "sluice_egress_waiting_by_priority",
        Gauge,
        "Calls waiting for their turn to pace, by priority.",
    );
    for (priority, waiting) in &stats.waiting_by_priority {
        let label = priority.0.to_string();
        out.sample(
            "sluice_egress_waiting_by_priority",
            &[("priority", &label)],
            count(*waiting),
        );
    }
    out.family(
        "sluice_egress_circuit_state",
        Gauge,
        "1 for the circuit's current state.",
    );
    for state in ["closed", "open", "half_open"] {
        let value = u64::from(stats.circuit.name() == state);
        out.sample("sluice_egress_circuit_state", &[("state", state)], value);
    }

    out.family(
        "sluice_egress_pace_rate_per_minute",
        Gauge,
        "The rate paced at, per minute (absent when not paced).",
    );
    for (dimension, pace) in &stats.pace {
        if let Some(rate) = pace.rate_per_minute {
            out.sample_f64(
                "sluice_egress_pace_rate_per_minute",
                &[("dimension", dimension.name())],
                rate,
            );
        }
    }
    out.family(
        "sluice_egress_pace_ceiling_per_minute",
        Gauge,
        "The upstream's limit per minute, when known.",
    );
    for (dimension, pace) in &stats.pace {
        if let Some(ceiling) = pace.ceiling_per_minute {
            out.sample_f64(
                "sluice_egress_pace_ceiling_per_minute",
                &[("dimension", dimension.name())],
                ceiling,
            );
        }
    }
    out.family(
        "sluice_egress_pace_fraction",
        Gauge,
        "The AIMD fraction of the ceiling in use.",
    );
    for (dimension, pace) in &stats.pace {
        out.sample_f64(
            "sluice_egress_pace_fraction",
            &[("dimension", dimension.name())],
            pace.fraction,
        );
    }
    out.family(
        "sluice_egress_pace_held",
        Gauge,
        "1 while every caller is held (exhausted, or told to retry later).",
    );
    for (dimension, pace) in &stats.pace {
        out.sample(
            "sluice_egress_pace_held",
            &[("dimension", dimension.name())],
            u64::from(pace.held_until.is_some()),
        );
    }

    for (name, help) in [
        ("sluice_egress_quota_limit", "The quota's limit."),
        ("sluice_egress_quota_used", "Used in the current window."),
        (
            "sluice_egress_quota_remaining",
            "Left in the current window.",
        ),
        (
            "sluice_egress_quota_percent",
            "Used, in percent of the limit.",
        ),
        (
            "sluice_egress_quota_resets_at_seconds",
            "When the current window ends, in Unix seconds.",
        ),
    ] {
        out.family(name, Gauge, help);
        for usage in &stats.quota {
            let labels = [
                ("dimension", usage.dimension.name()),
                ("source", usage.source.name()),
            ];
            match name {
                "sluice_egress_quota_limit" => out.sample(name, &labels, usage.limit),
                "sluice_egress_quota_used" => out.sample(name, &labels, usage.used),
                "sluice_egress_quota_remaining" => out.sample(name, &labels, usage.remaining),
                "sluice_egress_quota_percent" => out.sample_f64(name, &labels, usage.percent),
                _ => {
                    if let Some(at) = usage.resets_at {
                        out.sample(name, &labels, at.as_u64() / 1_000_000_000);
                    }
                }
            }
        }
    }
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}
