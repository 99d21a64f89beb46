//! The server's own counters and their Prometheus text rendering.
//!
//! Hand-rolled on atomics rather than a metrics registry: the hot path is one map lookup by
//! `&str` under a read lock and a few relaxed increments, with no allocation. Every label
//! value comes from the configuration (domain names, rule ids), never from a request, so
//! the number of series is bounded by the config; requests for an unknown domain count
//! under `domain="_unknown"`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use sluice_http::prometheus::MetricType::{Counter, Gauge};
use sluice_http::prometheus::{MetricType, TextWriter};

use crate::backend::BackendHealth;

/// The label value of requests for a domain the configuration does not have.
pub(crate) const UNKNOWN_DOMAIN: &str = "_unknown";

/// Upper bounds of the decision latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
];

/// A descriptor whose remaining capacity after a hit is at most this fraction of its limit
/// counts as near the limit (envoy ratelimit's default ratio).
const NEAR_LIMIT_RATIO: f64 = 0.8;

/// Outcome of one request for the per-domain counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestResult {
    /// Every limit admitted it.
    Allowed,
    /// At least one enforcing limit refused it.
    Limited,
    /// Admitted, but a shadow-mode limit would have refused it.
    Shadow,
}

/// Outcome of one descriptor for its rule's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RuleHit {
    /// Units asked for.
    pub hits: u64,
    /// The limit's capacity.
    pub limit: u64,
    /// What was left after the decision.
    pub remaining: u64,
    /// Whether the limit refused.
    pub refused: bool,
    /// Whether the rule is in shadow mode.
    pub shadow: bool,
}

#[derive(Debug, Default)]
struct DomainCounters {
    allowed: AtomicU64,
    limited: AtomicU64,
    shadow: AtomicU64,
}

#[derive(Debug, Default)]
struct RuleCounters {
    total_hits: AtomicU64,
    over_limit: AtomicU64,
    near_limit: AtomicU64,
    shadow_over_limit: AtomicU64,
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&bound| secs <= bound) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// A connection family: name, type, help, and its counter in [`ConnectionCounters`].
type Family = (
    &'static str,
    MetricType,
    &'static str,
    fn(&ConnectionCounters) -> &AtomicU64,
);

/// One listener's connections (see `edges.rs`).
#[derive(Debug, Default)]
pub(crate) struct ConnectionCounters {
    /// Open now.
    pub(crate) open: AtomicU64,
    /// Accepted under the cap.
    pub(crate) accepted: AtomicU64,
    /// Closed at once because the listener held its maximum.
    pub(crate) refused: AtomicU64,
    /// Closed without a complete first request head in time.
    pub(crate) header_timeouts: AtomicU64,
    /// Closed after the idle timeout.
    pub(crate) idle_timeouts: AtomicU64,
}

/// Every counter the server exports.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// The HTTP listener's connections.
    pub(crate) http_connections: Arc<ConnectionCounters>,
    /// The gRPC listener's connections.
    pub(crate) grpc_connections: Arc<ConnectionCounters>,
    domains: RwLock<HashMap<String, Arc<DomainCounters>>>,
    rules: RwLock<HashMap<String, Arc<RuleCounters>>>,
    latency: Histogram,
    bad_requests: AtomicU64,
    store_errors: AtomicU64,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    config_version: AtomicU64,
}

impl Metrics {
    /// Counts one request of `domain` (a configured domain, or [`UNKNOWN_DOMAIN`]).
    pub(crate) fn request(&self, domain: &str, result: RequestResult, elapsed: Duration) {
        let counters = get_or_insert(&self.domains, domain);
        let counter = match result {
            RequestResult::Allowed => &counters.allowed,
            RequestResult::Limited => &counters.limited,
            RequestResult::Shadow => &counters.shadow,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.latency.observe(elapsed);
    }

    /// Counts one descriptor decided under the rule `rule_id`.
    pub(crate) fn rule(&self, rule_id: &str, hit: RuleHit) {
        let counters = get_or_insert(&self.rules, rule_id);
        counters.total_hits.fetch_add(hit.hits, Ordering::Relaxed);
        if hit.refused {
            let counter = if hit.shadow {
                &counters.shadow_over_limit
            } else {
                &counters.over_limit
            };
            counter.fetch_add(hit.hits, Ordering::Relaxed);
        } else if is_near_limit(hit.limit, hit.remaining) {
            counters.near_limit.fetch_add(hit.hits, Ordering::Relaxed);
        }
    }

    /// Counts a request refused as malformed.
    pub(crate) fn bad_request(&self) {
        self.bad_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a decision the store failed to make.
    pub(crate) fn store_error(&self) {
        self.store_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a configuration reload and, when it succeeded, the version now serving.
    pub(crate) fn reload(&self, result: Result<u64, ()>) {
        match result {
            Ok(version) => {
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                self.config_version.store(version, Ordering::Relaxed);
            }
            Err(()) => {
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Requests so far per domain: `[allowed, limited, shadow]`, sorted by domain.
    pub(crate) fn domain_totals(&self) -> Vec<(String, [u64; 3])> {
        let domains = read(&self.domains);
        let mut totals: Vec<(String, [u64; 3])> = domains
            .iter()
            .map(|(name, c)| {
                let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
                (
                    name.clone(),
                    [load(&c.allowed), load(&c.limited), load(&c.shadow)],
                )
            })
            .collect();
        totals.sort();
        totals
    }

    /// Requests decided so far, in every domain.
    pub(crate) fn requests(&self) -> u64 {
        read(&self.domains)
            .values()
            .map(|c| {
                let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
                load(&c.allowed) + load(&c.limited) + load(&c.shadow)
            })
            .sum()
    }

    /// Units so far per rule id: `[hits, over_limit, near_limit, shadow_over_limit]`.
    pub(crate) fn rule_totals(&self) -> HashMap<String, [u64; 4]> {
        read(&self.rules)
            .iter()
            .map(|(id, c)| {
                let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
                (
                    id.clone(),
                    [
                        load(&c.total_hits),
                        load(&c.over_limit),
                        load(&c.near_limit),
                        load(&c.shadow_over_limit),
                    ],
                )
            })
            .collect()
    }

    /// The Prometheus text exposition (format 0.0.4) of every counter, plus the store's.
    pub(crate) fn render(&self, store_kind: &str, store: &BackendHealth) -> String {
        let mut out = TextWriter::with_capacity(4096);
        self.render_domains(&mut out);
        self.render_rules(&mut out);
        self.render_latency(&mut out);
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let store_label = [("store", store_kind)];
        out.family(
            "sluice_bad_requests_total",
            Counter,
            "Requests refused as malformed (400 or INVALID_ARGUMENT).",
        );
        out.sample("sluice_bad_requests_total", &[], load(&self.bad_requests));
        out.family(
            "sluice_store_errors_total",
            Counter,
            "Calls to the shared store that failed or timed out, and decisions the server could not make.",
        );
        let errors = store.store_errors + load(&self.store_errors);
        out.sample("sluice_store_errors_total", &store_label, errors);
        out.family(
            "sluice_degraded_decisions_total",
            Counter,
            "Decisions made without the shared store, under each limit's on_store_error policy.",
        );
        out.sample(
            "sluice_degraded_decisions_total",
            &store_label,
            store.degraded_decisions,
        );
        out.family(
            "sluice_store_breaker_open",
            Gauge,
            "1 while the circuit breaker around the shared store is open.",
        );
        out.sample(
            "sluice_store_breaker_open",
            &store_label,
            u64::from(store.breaker_open),
        );
        out.family(
            "sluice_keys",
            Gauge,
            "Limiter states held in this process's memory.",
        );
        out.sample("sluice_keys", &[], store.keys);
        out.family(
            "sluice_evictions_total",
            Counter,
            "States evicted to stay within the memory key budget.",
        );
        out.sample("sluice_evictions_total", &[], store.evictions);
        out.family(
            "sluice_config_reloads_total",
            Counter,
            "Configuration reloads by result.",
        );
        for (result, counter) in [("ok", &self.reloads_ok), ("failed", &self.reloads_failed)] {
            out.sample(
                "sluice_config_reloads_total",
                &[("result", result)],
                load(counter),
            );
        }
        out.family(
            "sluice_config_version",
            Gauge,
            "Version of the configuration serving (1 at start, +1 per successful reload).",
        );
        out.sample("sluice_config_version", &[], load(&self.config_version));
        self.render_connections(&mut out);
        out.finish()
    }

    fn render_connections(&self, out: &mut TextWriter) {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let listeners = [
            ("http", &*self.http_connections),
            ("grpc", &*self.grpc_connections),
        ];
        let families: [Family; 3] = [
            (
                "sluice_connections_open",
                Gauge,
                "Client connections open, by listener.",
                |c| &c.open,
            ),
            (
                "sluice_connections_accepted_total",
                Counter,
                "Client connections accepted, by listener.",
                |c| &c.accepted,
            ),
            (
                "sluice_connections_refused_total",
                Counter,
                "Client connections closed at once because the listener held --max-connections.",
                |c| &c.refused,
            ),
        ];
        for (name, kind, help, counter) in families {
            out.family(name, kind, help);
            for (listener, counters) in listeners {
                out.sample(name, &[("listener", listener)], load(counter(counters)));
            }
        }
        out.family(
            "sluice_connections_timed_out_total",
            Counter,
            "Client connections closed by a timeout, by listener and reason (header_read: no complete first request head within --header-read-timeout; idle: no request within --idle-timeout).",
        );
        for (listener, counters) in listeners {
            for (reason, counter) in [
                ("header_read", &counters.header_timeouts),
                ("idle", &counters.idle_timeouts),
            ] {
                out.sample(
                    "sluice_connections_timed_out_total",
                    &[("listener", listener), ("reason", reason)],
                    load(counter),
                );
            }
        }
    }

    fn render_domains(&self, out: &mut TextWriter) {
        out.family(
            "sluice_decisions_total",
            Counter,
            "Requests decided, by domain and result (allowed, limited, shadow: allowed but over a shadow-mode limit).",
        );
        let domains = read(&self.domains);
        let mut names: Vec<&String> = domains.keys().collect();
        names.sort();
        for name in names {
            let counters = &domains[name];
            for (result, counter) in [
                ("allowed", &counters.allowed),
                ("limited", &counters.limited),
                ("shadow", &counters.shadow),
            ] {
                out.sample(
                    "sluice_decisions_total",
                    &[("domain", name), ("result", result)],
                    counter.load(Ordering::Relaxed),
                );
            }
        }
    }

    fn render_rules(&self, out: &mut TextWriter) {
        let rules = read(&self.rules);
        let mut ids: Vec<&String> = rules.keys().collect();
        ids.sort();
        for (metric, help, pick) in [
            (
                "sluice_rule_hits_total",
                "Units asked of each configured limit.",
                (|c: &RuleCounters| &c.total_hits) as fn(&RuleCounters) -> &AtomicU64,
            ),
            (
                "sluice_rule_over_limit_total",
                "Units each limit refused.",
                |c| &c.over_limit,
            ),
            (
                "sluice_rule_near_limit_total",
                "Units admitted with at most 20% of the limit left.",
                |c| &c.near_limit,
            ),
            (
                "sluice_rule_shadow_over_limit_total",
                "Units a shadow-mode limit would have refused.",
                |c| &c.shadow_over_limit,
            ),
        ] {
            out.family(metric, Counter, help);
            for id in &ids {
                let value = pick(&rules[*id]).load(Ordering::Relaxed);
                out.sample(metric, &[("rule", id)], value);
            }
        }
    }

    fn render_latency(&self, out: &mut TextWriter) {
        out.family(
            "sluice_decision_duration_seconds",
            MetricType::Histogram,
            "Time to decide one request, from parsed request to answer.",
        );
        let bucket = "sluice_decision_duration_seconds_bucket";
        let mut cumulative = 0;
        for (bound, counter) in LATENCY_BUCKETS.iter().zip(&self.latency.buckets) {
            cumulative += counter.load(Ordering::Relaxed);
            out.sample(bucket, &[("le", &bound.to_string())], cumulative);
        }
        let count = self.latency.count.load(Ordering::Relaxed);
        out.sample(bucket, &[("le", "+Inf")], count);
        let sum = Duration::from_nanos(self.latency.sum_nanos.load(Ordering::Relaxed));
        out.sample_f64(
            "sluice_decision_duration_seconds_sum",
            &[],
            sum.as_secs_f64(),
        );
        out.sample("sluice_decision_duration_seconds_count", &[], count);
    }
}

fn is_near_limit(limit: u64, remaining: u64) -> bool {
    #[expect(
        clippy::cast_precision_loss,
        reason = "a ratio of counts needs no exactness"
    )]
    let used = 1.0 - remaining as f64 / limit.max(1) as f64;
    used >= NEAR_LIMIT_RATIO
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn get_or_insert<T: Default>(map: &RwLock<HashMap<String, Arc<T>>>, name: &str) -> Arc<T> {
    if let Some(found) = read(map).get(name) {
        return Arc::clone(found);
    }
    let mut map = map.write().unwrap_or_else(PoisonError::into_inner);
    Arc::clone(map.entry(name.to_owned()).or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_by_domain_and_rule() {
        let metrics = Metrics::default();
        let ms = Duration::from_millis;
        metrics.request("api", RequestResult::Allowed, ms(0));
        metrics.request("api", RequestResult::Limited, ms(3));
        metrics.rule(
            "api.user",
            RuleHit {
                hits: 2,
                limit: 10,
                remaining: 1,
                refused: false,
                shadow: false,
            },
        );
        metrics.rule(
            "api.user",
            RuleHit {
                hits: 1,
                limit: 10,
                remaining: 0,
                refused: true,
                shadow: false,
            },
        );
        metrics.rule(
            "api.ip",
            RuleHit {
                hits: 1,
                limit: 10,
                remaining: 0,
                refused: true,
                shadow: true,
            },
        );
        metrics.reload(Ok(2));
        metrics.reload(Err(()));
        let text = metrics.render(
            "memory",
            &BackendHealth {
                keys: 7,
                ..BackendHealth::default()
            },
        );
        for line in [
            "sluice_decisions_total{domain=\"api\",result=\"allowed\"} 1",
            "sluice_decisions_total{domain=\"api\",result=\"limited\"} 1",
            "sluice_rule_hits_total{rule=\"api.user\"} 3",
            "sluice_rule_near_limit_total{rule=\"api.user\"} 2",
            "sluice_rule_over_limit_total{rule=\"api.user\"} 1",
            "sluice_rule_shadow_over_limit_total{rule=\"api.ip\"} 1",
            "sluice_rule_over_limit_total{rule=\"api.ip\"} 0",
            "sluice_decision_duration_seconds_bucket{le=\"0.000025\"} 1",
            "sluice_decision_duration_seconds_bucket{le=\"0.0025\"} 1",
            "sluice_decision_duration_seconds_bucket{le=\"0.005\"} 2",
            "sluice_decision_duration_seconds_count 2",
            "sluice_keys 7",
            "sluice_config_reloads_total{result=\"ok\"} 1",
            "sluice_config_reloads_total{result=\"failed\"} 1",
            "sluice_config_version 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    /// The whole text, byte for byte: label values escaped, families in order.
    #[test]
    fn renders_the_exposition_byte_for_byte() {
        let metrics = Metrics::default();
        let ms = Duration::from_millis;
        metrics.request("api", RequestResult::Shadow, Duration::from_micros(40));
        metrics.request("we\"ird\\\n", RequestResult::Allowed, ms(2));
        metrics.request(UNKNOWN_DOMAIN, RequestResult::Limited, ms(1000));
        metrics.rule(
            "api.user",
            RuleHit {
                hits: 4,
                limit: 5,
                remaining: 1,
                refused: false,
                shadow: false,
            },
        );
        metrics.bad_request();
        metrics.store_error();
        metrics.reload(Ok(3));
        let add = |counter: &AtomicU64, n| counter.fetch_add(n, Ordering::Relaxed);
        add(&metrics.http_connections.open, 2);
        add(&metrics.http_connections.accepted, 5);
        add(&metrics.http_connections.header_timeouts, 3);
        add(&metrics.grpc_connections.refused, 4);
        add(&metrics.grpc_connections.idle_timeouts, 1);
        let health = BackendHealth {
            keys: 9,
            evictions: 2,
            store_errors: 5,
            degraded_decisions: 6,
            breaker_open: true,
        };
        let expected = concat!(
            "# HELP sluice_decisions_total Requests decided, by domain and result (allowed, limited, shadow: allowed but over a shadow-mode limit).\n",
            "# TYPE sluice_decisions_total counter\n",
            "sluice_decisions_total{domain=\"_unknown\",result=\"allowed\"} 0\n",
            "sluice_decisions_total{domain=\"_unknown\",result=\"limited\"} 1\n",
            "sluice_decisions_total{domain=\"_unknown\",result=\"shadow\"} 0\n",
            "sluice_decisions_total{domain=\"api\",result=\"allowed\"} 0\n",
            "sluice_decisions_total{domain=\"api\",result=\"limited\"} 0\n",
            "sluice_decisions_total{domain=\"api\",result=\"shadow\"} 1\n",
            "sluice_decisions_total{domain=\"we\\\"ird\\\\\\n\",result=\"allowed\"} 1\n",
            "sluice_decisions_total{domain=\"we\\\"ird\\\\\\n\",result=\"limited\"} 0\n",
            "sluice_decisions_total{domain=\"we\\\"ird\\\\\\n\",result=\"shadow\"} 0\n",
            "# HELP sluice_rule_hits_total Units asked of each configured limit.\n",
            "# TYPE sluice_rule_hits_total counter\n",
            "sluice_rule_hits_total{rule=\"api.user\"} 4\n",
            "# HELP sluice_rule_over_limit_total Units each limit refused.\n",
            "# TYPE sluice_rule_over_limit_total counter\n",
            "sluice_rule_over_limit_total{rule=\"api.user\"} 0\n",
            "# HELP sluice_rule_near_limit_total Units admitted with at most 20% of the limit left.\n",
            "# TYPE sluice_rule_near_limit_total counter\n",
            "sluice_rule_near_limit_total{rule=\"api.user\"} 4\n",
            "# HELP sluice_rule_shadow_over_limit_total Units a shadow-mode limit would have refused.\n",
            "# TYPE sluice_rule_shadow_over_limit_total counter\n",
            "sluice_rule_shadow_over_limit_total{rule=\"api.user\"} 0\n",
            "# HELP sluice_decision_duration_seconds Time to decide one request, from parsed request to answer.\n",
            "# TYPE sluice_decision_duration_seconds histogram\n",
            "sluice_decision_duration_seconds_bucket{le=\"0.000025\"} 0\n",
            "sluice_decision_duration_seconds_bucket{le=\"0.00005\"} 1\n",
            "sluice_decision_duration_seconds_bucket{le=\"0.0001\"} 1\n",
            "sluice_decision_duration_seconds_bucket{le=\"0.00025\"} 1\n",
            "sluice_decision_duration_seconds_bucket{le=\"0.0005\"} 1\n",
            "sluice_decision_duration_seconds_bucket{le=\"0.001\"} 1\n",
            "sluice_decision_duration_seconds_bucket{le=\"0.0025\"} 2\n",
            "sluice_decision_duration_seconds_bucket{le=\"0.005\"} 2\n",
            "sluice_decision_duration_seconds_bucket{le=\"0.01\"} 2\n",
            "sluice_decision_duration_seconds_bucket{le=\"0.025\"} 2\n",
            "sluice_decision_duration_seconds_bucket{le=\"0.05\"} 2\n",
            "sluice_decision_duration_seconds_bucket{le=\"0.1\"} 2\n",
            "sluice_decision_duration_seconds_bucket{le=\"+Inf\"} 3\n",
            "sluice_decision_duration_seconds_sum 1.00204\n",
            "sluice_decision_duration_seconds_count 3\n",
            "# HELP sluice_bad_requests_total Requests refused as malformed (400 or INVALID_ARGUMENT).\n",
            "# TYPE sluice_bad_requests_total counter\n",
            "sluice_bad_requests_total 1\n",
            "# HELP sluice_store_errors_total Calls to the shared store that failed or timed out, and decisions the server could not make.\n",
            "# TYPE sluice_store_errors_total counter\n",
            "sluice_store_errors_total{store=\"redis\"} 6\n",
            "# HELP sluice_degraded_decisions_total Decisions made without the shared store, under each limit's on_store_error policy.\n",
            "# TYPE sluice_degraded_decisions_total counter\n",
            "sluice_degraded_decisions_total{store=\"redis\"} 6\n",
            "# HELP sluice_store_breaker_open 1 while the circuit breaker around the shared store is open.\n",
            "# TYPE sluice_store_breaker_open gauge\n",
            "sluice_store_breaker_open{store=\"redis\"} 1\n",
            "# HELP sluice_keys Limiter states held in this process's memory.\n",
            "# TYPE sluice_keys gauge\n",
            "sluice_keys 9\n",
            "# HELP sluice_evictions_total States evicted to stay within the memory key budget.\n",
            "# TYPE sluice_evictions_total counter\n",
            "sluice_evictions_total 2\n",
            "# HELP sluice_config_reloads_total Configuration reloads by result.\n",
            "# TYPE sluice_config_reloads_total counter\n",
            "sluice_config_reloads_total{result=\"ok\"} 1\n",
            "sluice_config_reloads_total{result=\"failed\"} 0\n",
            "# HELP sluice_config_version Version of the configuration serving (1 at start, +1 per successful reload).\n",
            "# TYPE sluice_config_version gauge\n",
            "sluice_config_version 3\n",
            "# HELP sluice_connections_open Client connections open, by listener.\n",
            "# TYPE sluice_connections_open gauge\n",
            "sluice_connections_open{listener=\"http\"} 2\n",
            "sluice_connections_open{listener=\"grpc\"} 0\n",
            "# HELP sluice_connections_accepted_total Client connections accepted, by listener.\n",
            "# TYPE sluice_connections_accepted_total counter\n",
            "sluice_connections_accepted_total{listener=\"http\"} 5\n",
            "sluice_connections_accepted_total{listener=\"grpc\"} 0\n",
            "# HELP sluice_connections_refused_total Client connections closed at once because the listener held --max-connections.\n",
            "# TYPE sluice_connections_refused_total counter\n",
            "sluice_connections_refused_total{listener=\"http\"} 0\n",
            "sluice_connections_refused_total{listener=\"grpc\"} 4\n",
            "# HELP sluice_connections_timed_out_total Client connections closed by a timeout, by listener and reason (header_read: no complete first request head within --header-read-timeout; idle: no request within --idle-timeout).\n",
            "# TYPE sluice_connections_timed_out_total counter\n",
            "sluice_connections_timed_out_total{listener=\"http\",reason=\"header_read\"} 3\n",
            "sluice_connections_timed_out_total{listener=\"http\",reason=\"idle\"} 0\n",
            "sluice_connections_timed_out_total{listener=\"grpc\",reason=\"header_read\"} 0\n",
            "sluice_connections_timed_out_total{listener=\"grpc\",reason=\"idle\"} 1\n",
        );
        assert_eq!(metrics.render("redis", &health), expected);
    }
}
