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

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use http::StatusCode;

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
        let mut out = String::with_capacity(8 << 10);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);

        header(
            &mut out,
            "sluice_proxy_requests_total",
            "counter",
            "Requests to forward.",
        );
        sample(
            &mut out,
            "sluice_proxy_requests_total",
            &[],
            load(&self.requests),
        );

        header(
            &mut out,
            "sluice_proxy_responses_total",
            "counter",
            "Answers to clients, by who made them and status class.",
        );
        for (source, name) in [(Source::Upstream, "upstream"), (Source::Proxy, "proxy")] {
            for (i, class) in CLASSES.iter().enumerate() {
                let value = load(&self.responses[source as usize][i]);
                sample(
                    &mut out,
                    "sluice_proxy_responses_total",
                    &[("source", name), ("class", class)],
                    value,
                );
            }
        }

        header(
            &mut out,
            "sluice_proxy_refused_total",
            "counter",
            "Answers the proxy made itself, by problem type.",
        );
        for reason in Reason::ALL {
            let value = load(&self.refused[reason.index()]);
            sample(
                &mut out,
                "sluice_proxy_refused_total",
                &[("reason", reason.name())],
                value,
            );
        }

        header(
            &mut out,
            "sluice_proxy_upstream_responses_total",
            "counter",
            "Every attempt's answer from the upstream, by status class.",
        );
        for (i, class) in CLASSES.iter().enumerate() {
            sample(
                &mut out,
                "sluice_proxy_upstream_responses_total",
                &[("class", class)],
                load(&self.upstream[i]),
            );
        }
        header(
            &mut out,
            "sluice_proxy_upstream_429_total",
            "counter",
            "Attempts the upstream answered 429.",
        );
        sample(
            &mut out,
            "sluice_proxy_upstream_429_total",
            &[],
            load(&self.upstream_429),
        );

        header(
            &mut out,
            "sluice_proxy_upstream_errors_total",
            "counter",
            "Attempts without an answer, by class.",
        );
        for (i, class) in ErrorClass::ALL.iter().enumerate() {
            if matches!(
                class,
                ErrorClass::Timeout | ErrorClass::Connect | ErrorClass::ConnectionReset
            ) {
                sample(
                    &mut out,
                    "sluice_proxy_upstream_errors_total",
                    &[("class", class.name())],
                    load(&self.upstream_errors[i]),
                );
            }
        }

        header(
            &mut out,
            "sluice_proxy_retry_waits",
            "gauge",
            "Requests waiting to retry.",
        );
        sample(
            &mut out,
            "sluice_proxy_retry_waits",
            &[],
            load(&self.retry_waits),
        );
        header(
            &mut out,
            "sluice_proxy_streams_total",
            "counter",
            "Streamed answers relayed.",
        );
        sample(
            &mut out,
            "sluice_proxy_streams_total",
            &[],
            load(&self.streams),
        );
        header(
            &mut out,
            "sluice_proxy_streams_active",
            "gauge",
            "Streamed answers being relayed.",
        );
        sample(
            &mut out,
            "sluice_proxy_streams_active",
            &[],
            load(&self.streams_active),
        );
        header(
            &mut out,
            "sluice_proxy_stream_settled_total",
            "counter",
            "Streams whose tokens were settled to their reported usage, or left at the estimate.",
        );
        sample(
            &mut out,
            "sluice_proxy_stream_settled_total",
            &[("usage", "reported")],
            load(&self.settled_reported),
        );
        sample(
            &mut out,
            "sluice_proxy_stream_settled_total",
            &[("usage", "estimate")],
            load(&self.settled_estimate),
        );
        header(
            &mut out,
            "sluice_proxy_coalesce_eligible_total",
            "counter",
            "Requests that could share an identical request's upstream call.",
        );
        sample(
            &mut out,
            "sluice_proxy_coalesce_eligible_total",
            &[],
            load(&self.coalesce_eligible),
        );

        egress(&mut out, stats);
        out
    }
}

fn egress(out: &mut String, stats: &EgressStats) {
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
        header(out, name, "counter", help);
        sample(out, name, &[], value);
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
        header(out, name, "gauge", help);
        sample(out, name, &[], value);
    }
    header(
        out,
        "sluice_egress_waiting_by_priority",
        "gauge",
        "Calls waiting for their turn to pace, by priority.",
    );
    for (priority, waiting) in &stats.waiting_by_priority {
        let label = priority.0.to_string();
        sample(
            out,
            "sluice_egress_waiting_by_priority",
            &[("priority", &label)],
            count(*waiting),
        );
    }
    header(
        out,
        "sluice_egress_circuit_state",
        "gauge",
        "1 for the circuit's current state.",
    );
    for state in ["closed", "open", "half_open"] {
        let value = u64::from(stats.circuit.name() == state);
        sample(
            out,
            "sluice_egress_circuit_state",
            &[("state", state)],
            value,
        );
    }

    header(
        out,
        "sluice_egress_pace_rate_per_minute",
        "gauge",
        "The rate paced at, per minute (absent when not paced).",
    );
    for (dimension, pace) in &stats.pace {
        if let Some(rate) = pace.rate_per_minute {
            sample_f(
                out,
                "sluice_egress_pace_rate_per_minute",
                &[("dimension", dimension.name())],
                rate,
            );
        }
    }
    header(
        out,
        "sluice_egress_pace_ceiling_per_minute",
        "gauge",
        "The upstream's limit per minute, when known.",
    );
    for (dimension, pace) in &stats.pace {
        if let Some(ceiling) = pace.ceiling_per_minute {
            sample_f(
                out,
                "sluice_egress_pace_ceiling_per_minute",
                &[("dimension", dimension.name())],
                ceiling,
            );
        }
    }
    header(
        out,
        "sluice_egress_pace_fraction",
        "gauge",
        "The AIMD fraction of the ceiling in use.",
    );
    for (dimension, pace) in &stats.pace {
        sample_f(
            out,
            "sluice_egress_pace_fraction",
            &[("dimension", dimension.name())],
            pace.fraction,
        );
    }
    header(
        out,
        "sluice_egress_pace_held",
        "gauge",
        "1 while every caller is held (exhausted, or told to retry later).",
    );
    for (dimension, pace) in &stats.pace {
        sample(
            out,
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
        header(out, name, "gauge", help);
        for usage in &stats.quota {
            let labels = [
                ("dimension", usage.dimension.name()),
                ("source", usage.source.name()),
            ];
            match name {
                "sluice_egress_quota_limit" => sample(out, name, &labels, usage.limit),
                "sluice_egress_quota_used" => sample(out, name, &labels, usage.used),
                "sluice_egress_quota_remaining" => sample(out, name, &labels, usage.remaining),
                "sluice_egress_quota_percent" => sample_f(out, name, &labels, usage.percent),
                _ => {
                    if let Some(at) = usage.resets_at {
                        sample(out, name, &labels, at.as_u64() / 1_000_000_000);
                    }
                }
            }
        }
    }
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn labels(out: &mut String, labels: &[(&str, &str)]) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Label values are fixed names or numbers here: nothing to escape.
        let _ = write!(out, "{name}=\"{value}\"");
    }
    out.push('}');
}

fn sample(out: &mut String, name: &str, pairs: &[(&str, &str)], value: u64) {
    out.push_str(name);
    labels(out, pairs);
    let _ = writeln!(out, " {value}");
}

fn sample_f(out: &mut String, name: &str, pairs: &[(&str, &str)], value: f64) {
    out.push_str(name);
    labels(out, pairs);
    let _ = writeln!(out, " {value}");
}
