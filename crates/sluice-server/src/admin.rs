//! The admin API (`/admin/v1/...`) and the dashboard page that uses it.
//!
//! Every admin call needs `Authorization: Bearer <token>`; the token is compared as a
//! SHA-256 digest in constant time. Without a configured token the admin API answers 404
//! (disabled, never open). The API is rate limited as a whole before authentication, so a
//! token cannot be guessed quickly. The dashboard page is public: it holds no data and asks
//! for the token, which it keeps only for the browser tab.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sluice_core::{Key, Policy};
use sluice_store::{Limit, MemoryStore};

use crate::backend::Backend;
use crate::config::{Config, Rule};
use crate::hot::Rank;
use crate::http::{Json, json_response, problem};
use crate::limiter::{AdminError, LimitError, Limiter};
use crate::overrides::{DescriptorRef, Override, OverrideRequest};

/// The dashboard, one self-contained page.
const DASHBOARD: &str = include_str!("dashboard/index.html");

/// What the dashboard may load: itself, inline script and style, and this origin's API.
const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'self' 'unsafe-inline'; \
    style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// Seconds of history in `/admin/v1/stats` series.
pub(crate) const SERIES_LEN: usize = 120;

/// Hot keys listed.
const HOT_KEYS: usize = 20;

/// Admin calls per second across all clients (GCRA, bursts of 50).
const ADMIN_RATE: &str = "20/s";

/// Per-second counts over the last [`SERIES_LEN`] seconds, sampled from the cumulative
/// counters by a task once a second (nothing on the decision path): the requests of each
/// domain (`allowed`, `limited`, and `shadow`: allowed but over a shadow-mode limit), and
/// the units of each configured limit (`allowed`: units the limit admitted, `limited`: units
/// it refused, `shadow`: units it would have refused in shadow mode). There is one limit
/// series per rule of the serving configuration (so their number is bounded by it); a rule
/// that a reload removes loses its series.
#[derive(Debug, Default)]
pub(crate) struct Series {
    inner: Mutex<SeriesInner>,
}

#[derive(Debug, Default)]
struct SeriesInner {
    end_ms: u64,
    domains: Rings,
    limits: Rings,
}

/// Per-interval differences of cumulative `[u64; 3]` counters, one ring per name.
#[derive(Debug, Default)]
struct Rings {
    last: HashMap<String, [u64; 3]>,
    rings: BTreeMap<String, VecDeque<[u64; 3]>>,
}

impl Rings {
    /// Records the difference between `counts` and the previous sample of `name`.
    fn push(&mut self, name: &str, counts: [u64; 3]) {
        let previous = self.remember(name, counts);
        let delta = [0, 1, 2].map(|i| counts[i].saturating_sub(previous[i]));
        let ring = match self.rings.get_mut(name) {
            Some(ring) => ring,
            None => self
                .rings
                .entry(name.to_owned())
                .or_insert_with(|| VecDeque::from(vec![[0; 3]; SERIES_LEN])),
        };
        ring.push_back(delta);
        while ring.len() > SERIES_LEN {
            ring.pop_front();
        }
    }

    /// Keeps `counts` as the last sample of `name`; returns the previous one.
    fn remember(&mut self, name: &str, counts: [u64; 3]) -> [u64; 3] {
        match self.last.get_mut(name) {
            Some(last) => std::mem::replace(last, counts),
            None => {
                self.last.insert(name.to_owned(), counts);
                [0; 3]
            }
        }
    }

    /// The rings as `{name: {allowed, limited, shadow}}`, without those all zero when
    /// `skip_idle`.
    fn to_json(&self, skip_idle: bool) -> serde_json::Map<String, Value> {
        self.rings
            .iter()
            .filter(|(_, ring)| !skip_idle || ring.iter().any(|c| c.iter().any(|n| *n > 0)))
            .map(|(name, ring)| {
                let column = |i: usize| ring.iter().map(|c| c[i]).collect::<Vec<u64>>();
                (
                    name.clone(),
                    json!({"allowed": column(0), "limited": column(1), "shadow": column(2)}),
                )
            })
            .collect()
    }
}

/// One limit's cumulative units, as [`Series::sample`] takes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LimitSample {
    /// The rule's id.
    pub id: String,
    /// Units it admitted, refused, and would have refused in shadow mode, so far.
    pub counts: [u64; 3],
    /// Whether the serving configuration has the rule: only those keep a series.
    pub configured: bool,
}

/// Every limit the metrics have counted, from their per-rule totals
/// (`[hits, over_limit, near_limit, shadow_over_limit]`), marked by whether `config` has it.
pub(crate) fn limit_samples(
    config: &Config,
    rule_totals: &HashMap<String, [u64; 4]>,
) -> Vec<LimitSample> {
    let configured: HashSet<&str> = config.rules().iter().map(|r| r.id.as_str()).collect();
    rule_totals
        .iter()
        .map(|(id, [hits, over, _, shadow_over])| LimitSample {
            id: id.clone(),
            counts: [
                hits.saturating_sub(over.saturating_add(*shadow_over)),
                *over,
                *shadow_over,
            ],
            configured: configured.contains(id.as_str()),
        })
        .collect()
}

impl Series {
    /// Records one interval: the difference between the cumulative counts (`[allowed,
    /// limited, shadow]` of each domain, and of each limit) and the previous sample. Limits
    /// no longer `configured` lose their series (their last counts are kept, so that a rule
    /// a later reload brings back does not show its whole past as one second).
    pub(crate) fn sample(
        &self,
        domains: &[(String, [u64; 3])],
        limits: &[LimitSample],
        now_ms: u64,
    ) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.end_ms = now_ms;
        for (domain, counts) in domains {
            inner.domains.push(domain, *counts);
        }
        for limit in limits {
            if limit.configured {
                inner.limits.push(&limit.id, limit.counts);
            } else {
                inner.limits.remember(&limit.id, limit.counts);
            }
        }
        inner
            .limits
            .rings
            .retain(|id, _| limits.iter().any(|l| l.configured && l.id == *id));
    }

    /// Samples `limiter`'s counters now.
    pub(crate) fn sample_limiter<B: Backend>(&self, limiter: &Limiter<B>) {
        let metrics = limiter.metrics();
        let limits = limit_samples(&limiter.config(), &metrics.rule_totals());
        self.sample(&metrics.domain_totals(), &limits, limiter.wall_ms());
    }

    fn to_json(&self) -> Value {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        json!({
            "interval_s": 1,
            "end_unix_ms": inner.end_ms,
            "domains": inner.domains.to_json(false),
            "limits": inner.limits.to_json(true),
        })
    }
}

/// The admin API's state.
#[derive(Debug)]
struct Admin<B> {
    limiter: Arc<Limiter<B>>,
    token_digest: Option<[u8; 32]>,
    series: Arc<Series>,
    guard: MemoryStore,
    guard_key: Key,
    guard_policy: Policy,
}

/// The admin routes and `/dashboard`, over `limiter`, enabled when `token` is set.
pub(crate) fn router<B: Backend>(
    limiter: Arc<Limiter<B>>,
    token: Option<&str>,
    series: Arc<Series>,
) -> Router {
    let guard_policy = Policy::parse("gcra", ADMIN_RATE)
        .and_then(|p| p.with_burst(50))
        .expect("the admin rate is a valid policy");
    let admin = Arc::new(Admin {
        limiter,
        token_digest: token.map(digest),
        series,
        guard: MemoryStore::new(),
        guard_key: Key::named("admin"),
        guard_policy,
    });
    let api = Router::new()
        .route("/stats", get(stats::<B>))
        .route(
            "/overrides",
            get(list_overrides::<B>)
                .put(put_override::<B>)
                .delete(delete_override::<B>),
        )
        .route("/reset", post(reset::<B>))
        .route("/lookup", post(lookup::<B>))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&admin),
            guard::<B>,
        ))
        .with_state(admin);
    Router::new()
        .nest("/admin/v1", api)
        .route("/dashboard", get(dashboard))
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Equal digests, compared without an early exit.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn guard<B: Backend>(
    State(admin): State<Arc<Admin<B>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = admin.token_digest.as_ref() else {
        return problem(
            StatusCode::NOT_FOUND,
            "Admin API Disabled",
            "the admin API is disabled: start sluice serve with --admin-token (or SLUICE_ADMIN_TOKEN)",
            None,
        );
    };
    let limit = Limit::new(&admin.guard_key, &admin.guard_policy);
    let decision = admin.guard.check_now(limit, 1);
    if !decision.allowed {
        let mut response = problem(
            StatusCode::TOO_MANY_REQUESTS,
            "Too Many Requests",
            &format!("the admin API allows {ADMIN_RATE}"),
            None,
        );
        let secs = decision.retry_after.map_or(1, |d| d.as_secs().max(1));
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return response;
    }
    if !bearer(request.headers()).is_some_and(|token| same(&digest(token), expected)) {
        let mut response = problem(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "send the admin token as Authorization: Bearer <token>",
            None,
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"sluice-admin\""),
        );
        return response;
    }
    next.run(request).await
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn dashboard() -> Response {
    let mut response = DASHBOARD.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(DASHBOARD_CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn rule_json(rule: &Rule, totals: Option<&[u64; 4]>) -> Value {
    let [hits, over_limit, near_limit, shadow_over_limit] = totals.copied().unwrap_or([0; 4]);
    json!({
        "id": rule.id,
        "domain": rule.id.split('.').next().unwrap_or(""),
        "name": rule.name,
        "requests_per_unit": rule.requests_per_unit,
        "unit": rule.unit.name(),
        "unit_multiplier": rule.unit_multiplier,
        "algorithm": rule.policy.map(|p| p.algorithm().name()),
        "shadow_mode": rule.shadow_mode,
        "unlimited": rule.is_unlimited(),
        "blocked": rule.blocked,
        "hits": hits,
        "over_limit": over_limit,
        "near_limit": near_limit,
        "shadow_over_limit": shadow_over_limit,
    })
}

async fn stats<B: Backend>(State(admin): State<Arc<Admin<B>>>) -> Response {
    let limiter = &admin.limiter;
    let config = limiter.config();
    let health = limiter.backend().health();
    let rule_totals = limiter.metrics().rule_totals();
    let rules: Vec<Value> = config
        .rules()
        .into_iter()
        .map(|rule| rule_json(rule, rule_totals.get(&rule.id)))
        .collect();
    let totals: serde_json::Map<String, Value> = limiter
        .metrics()
        .domain_totals()
        .into_iter()
        .map(|(domain, [allowed, limited, shadow])| {
            (
                domain,
                json!({"allowed": allowed, "limited": limited, "shadow": shadow}),
            )
        })
        .collect();
    let hot = |rank: Rank| -> Vec<Value> {
        limiter
            .hot_keys(HOT_KEYS, rank)
            .into_iter()
            .map(|k| {
                json!({
                    "key": k.key,
                    "hits": k.hits,
                    "refusals": k.refusals,
                    "shadow_refusals": k.shadow_refusals,
                })
            })
            .collect()
    };
    let now_ms = limiter.wall_ms();
    json_response(
        StatusCode::OK,
        &json!({
            "uptime_s": now_ms.saturating_sub(limiter.started_ms()) / 1000,
            "config": {
                "version": limiter.version(),
                "domains": config.domain_names(),
                "last_reload": limiter.last_reload(),
            },
            "store": {
                "kind": limiter.backend().kind(),
                "keys": health.keys,
                "evictions": health.evictions,
                "store_errors": health.store_errors,
                "degraded_decisions": health.degraded_decisions,
                "breaker_open": health.breaker_open,
            },
            "series": admin.series.to_json(),
            "totals": totals,
            "rules": rules,
            "hot_keys": {"by_hits": hot(Rank::Hits), "by_refusals": hot(Rank::Refusals)},
            "overrides": limiter.overrides().list(now_ms).len(),
        }),
    )
}

async fn list_overrides<B: Backend>(State(admin): State<Arc<Admin<B>>>) -> Response {
    let overrides = admin.limiter.overrides();
    let list: Vec<&Override> = overrides.list(admin.limiter.wall_ms());
    json_response(StatusCode::OK, &json!({ "overrides": list }))
}

async fn put_override<B: Backend>(
    State(admin): State<Arc<Admin<B>>>,
    Json(request): Json<OverrideRequest>,
) -> Response {
    match admin.limiter.put_override(request).await {
        Ok(stored) => json_response(StatusCode::OK, &stored),
        Err(err) => admin_error(&err),
    }
}

async fn delete_override<B: Backend>(
    State(admin): State<Arc<Admin<B>>>,
    Json(descriptor): Json<DescriptorRef>,
) -> Response {
    match admin.limiter.delete_override(&descriptor).await {
        Ok(true) => json_response(StatusCode::OK, &json!({"deleted": true})),
        Ok(false) => problem(
            StatusCode::NOT_FOUND,
            "No Such Override",
            "no override is set for this descriptor",
            None,
        ),
        Err(err) => admin_error(&err),
    }
}

async fn reset<B: Backend>(
    State(admin): State<Arc<Admin<B>>>,
    Json(descriptor): Json<DescriptorRef>,
) -> Response {
    match admin.limiter.reset(&descriptor).await {
        Ok(Some(rule)) => json_response(StatusCode::OK, &json!({"reset": true, "rule": rule})),
        Ok(None) => problem(
            StatusCode::NOT_FOUND,
            "No Limit",
            "no limited rule applies to this descriptor",
            None,
        ),
        Err(err) => admin_error(&err),
    }
}

async fn lookup<B: Backend>(
    State(admin): State<Arc<Admin<B>>>,
    Json(descriptor): Json<DescriptorRef>,
) -> Response {
    let limiter = &admin.limiter;
    let (key, rule, active) = match limiter.rule_for(&descriptor) {
        Ok(found) => found,
        Err(err) => return admin_error(&err),
    };
    let state = match &rule {
        Some(rule) => match limiter.peek(&key, rule).await {
            Ok(state) => state,
            Err(err) => return admin_error(&err.into()),
        },
        None => None,
    };
    let totals = limiter.metrics().rule_totals();
    let explanation = explain(
        &descriptor,
        rule.as_deref(),
        active.as_ref(),
        limiter.config().has_domain(&descriptor.domain),
        limiter.wall_ms(),
    );
    json_response(
        StatusCode::OK,
        &json!({
            "key": key.as_str(),
            "rule": rule.as_deref().map(|r| rule_json(r, totals.get(&r.id))),
            "override": active,
            "state": state.map(|d| json!({
                "limit": d.limit,
                "remaining": d.remaining,
                "reset_after_ms": u64::try_from(d.reset_after.as_millis()).unwrap_or(u64::MAX),
            })),
            "explanation": explanation,
        }),
    )
}

/// Why a descriptor gets the answer it gets, in one sentence (`now_ms`: Unix ms, for an
/// override's expiry).
fn explain(
    descriptor: &DescriptorRef,
    rule: Option<&Rule>,
    active: Option<&Override>,
    known_domain: bool,
    now_ms: u64,
) -> String {
    match (rule, active) {
        (Some(_), Some(o)) => {
            let until = o.expires_at_unix_ms.map_or_else(
                || "no expiry".to_owned(),
                |ms| format!("until {}, {}", rfc3339_utc(ms), from_now(ms, now_ms)),
            );
            let what = match o.action {
                crate::overrides::Action::Blocked => "blocks every request".to_owned(),
                crate::overrides::Action::Unlimited => "lifts every limit".to_owned(),
                crate::overrides::Action::Limit => {
                    o.rate_limit.as_ref().map_or_else(String::new, |r| {
                        format!("allows {} per {}", r.requests_per_unit, r.unit)
                    })
                }
            };
            format!("an override {what} ({until}); it takes the place of the configured rule")
        }
        (Some(rule), None) if rule.blocked => format!(
            "rule {} refuses every request (requests_per_unit: 0)",
            rule.id
        ),
        (Some(rule), None) if rule.is_unlimited() => {
            format!("rule {} is unlimited: every request passes", rule.id)
        }
        (Some(rule), None) => format!(
            "rule {} allows {} per {}{}{}",
            rule.id,
            rule.requests_per_unit,
            if rule.unit_multiplier == 1 {
                String::new()
            } else {
                format!("{} ", rule.unit_multiplier)
            },
            rule.unit.name(),
            if rule.shadow_mode {
                " in shadow mode (counted, never refused)"
            } else {
                ""
            },
        ),
        (None, _) if !known_domain => format!(
            "domain {:?} is not configured: every request passes",
            descriptor.domain
        ),
        (None, _) => "no rule matches these entries at this depth: every request passes".to_owned(),
    }
}

/// `unix_ms` as an RFC 3339 UTC timestamp to the second: `2026-11-26T12:00:00Z`.
fn rfc3339_utc(unix_ms: u64) -> String {
    // u64 milliseconds are under 2^54 seconds: no overflow as an i64.
    sluice_core::calendar::rfc3339_utc((unix_ms / 1000).cast_signed())
}

/// How far `at_ms` is from `now_ms`, in the two largest units: `in 59m 59s`, `in 2d 4h`,
/// or `already passed`.
fn from_now(at_ms: u64, now_ms: u64) -> String {
    if at_ms <= now_ms {
        return "already passed".to_owned();
    }
    let secs = (at_ms - now_ms).div_ceil(1000);
    let units = [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")];
    let Some(first) = units.iter().position(|(size, _)| secs >= *size) else {
        return "in 0s".to_owned();
    };
    let (size, unit) = units[first];
    let mut text = format!("in {}{unit}", secs / size);
    if let Some((next, next_unit)) = units.get(first + 1) {
        let rest = secs % size / next;
        if rest > 0 {
            text.push_str(&format!(" {rest}{next_unit}"));
        }
    }
    text
}

fn admin_error(err: &AdminError) -> Response {
    match err {
        AdminError::Invalid(invalid) => problem(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            &invalid.to_string(),
            Some(invalid),
        ),
        AdminError::Overrides(crate::overrides::OverrideStoreError::Full) => problem(
            StatusCode::CONFLICT,
            "Too Many Overrides",
            &err.to_string(),
            None,
        ),
        AdminError::Overrides(_) | AdminError::Limit(LimitError::Store(_)) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Store Unavailable",
            &err.to_string(),
            None,
        ),
        AdminError::Limit(other) => problem(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            &other.to_string(),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_digest() {
        assert!(same(&digest("s3cret"), &digest("s3cret")));
        assert!(!same(&digest("s3cret"), &digest("s3cres")));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert_eq!(bearer(&headers), Some("s3cret"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic s3cret"),
        );
        assert_eq!(bearer(&headers), None);
    }

    #[test]
    fn series_keep_per_interval_differences() {
        let series = Series::default();
        series.sample(&[("api".to_owned(), [5, 1, 0])], &[], 1_000);
        series.sample(&[("api".to_owned(), [9, 1, 2])], &[], 2_000);
        let json = series.to_json();
        let allowed = json["domains"]["api"]["allowed"].as_array().unwrap();
        assert_eq!(allowed.len(), SERIES_LEN);
        assert_eq!(allowed[SERIES_LEN - 2], 5);
        assert_eq!(allowed[SERIES_LEN - 1], 4);
        assert_eq!(json["domains"]["api"]["shadow"][SERIES_LEN - 1], 2);
        assert_eq!(json["end_unix_ms"], 2_000);
    }

    fn limit(id: &str, counts: [u64; 3], configured: bool) -> LimitSample {
        LimitSample {
            id: id.to_owned(),
            counts,
            configured,
        }
    }

    #[test]
    fn limit_series_follow_the_configuration() {
        let series = Series::default();
        let column = |json: &Value, id: &str, name: &str| -> Vec<u64> {
            let values = json["limits"][id][name]
                .as_array()
                .cloned()
                .unwrap_or_default();
            values.iter().map(|v| v.as_u64().unwrap()).collect()
        };
        series.sample(&[], &[limit("api.user", [3, 0, 0], true)], 1_000);
        series.sample(
            &[],
            &[
                limit("api.user", [5, 2, 0], true),
                limit("api.ip", [0, 0, 0], true),
            ],
            2_000,
        );
        let json = series.to_json();
        let allowed = column(&json, "api.user", "allowed");
        assert_eq!(
            (
                allowed.len(),
                allowed[SERIES_LEN - 2],
                allowed[SERIES_LEN - 1]
            ),
            (SERIES_LEN, 3, 2)
        );
        assert_eq!(column(&json, "api.user", "limited")[SERIES_LEN - 1], 2);
        assert!(
            json["limits"]["api.ip"].is_null(),
            "idle limits are left out: {json}"
        );
        // A reload drops api.user: its series goes; when it comes back, only new units show.
        series.sample(&[], &[limit("api.user", [9, 2, 0], false)], 3_000);
        assert!(series.to_json()["limits"]["api.user"].is_null());
        series.sample(&[], &[limit("api.user", [10, 2, 0], true)], 4_000);
        let json = series.to_json();
        assert_eq!(column(&json, "api.user", "allowed").iter().sum::<u64>(), 1);
    }

    #[test]
    fn limit_samples_split_hits_into_allowed_limited_and_shadow() {
        let config = Config::parse(
            "domain: api\ndescriptors:\n  - key: user\n    rate_limit: {unit: hour, requests_per_unit: 3}\n",
            "api.yaml",
        )
        .unwrap();
        let totals = HashMap::from([
            ("api.user".to_owned(), [10, 4, 1, 0]),
            ("api.gone".to_owned(), [7, 0, 0, 5]),
        ]);
        let mut samples = limit_samples(&config, &totals);
        samples.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(
            samples,
            [
                limit("api.gone", [2, 0, 5], false),
                limit("api.user", [6, 4, 0], true)
            ]
        );
    }

    #[test]
    fn times_are_rfc3339_utc_and_relative() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_399_999), "2000-02-28T23:59:59Z");
        assert_eq!(rfc3339_utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_798_286_400_000), "2026-12-26T12:00:00Z");
        assert_eq!(rfc3339_utc(4_107_542_400_000), "2100-03-01T00:00:00Z");
        let now = 1_790_000_000_000;
        assert_eq!(from_now(now + 3_540_000, now), "in 59m");
        assert_eq!(from_now(now + 3_599_001, now), "in 1h");
        assert_eq!(from_now(now + 3_598_500, now), "in 59m 59s");
        assert_eq!(from_now(now + 42_000, now), "in 42s");
        assert_eq!(from_now(now + 1, now), "in 1s");
        assert_eq!(
            from_now(now + 2 * 86_400_000 + 4 * 3_600_000 + 5_000, now),
            "in 2d 4h"
        );
        assert_eq!(from_now(now, now), "already passed");
    }

    #[test]
    fn an_override_explains_its_expiry_as_a_time() {
        use crate::overrides::OverrideRequest;
        let request: OverrideRequest = serde_json::from_value(json!({
            "domain": "api", "entries": [{"key": "user", "value": "42"}],
            "action": "blocked", "ttl_s": 3600,
        }))
        .unwrap();
        let now = 1_795_694_400_000;
        let o = request.into_override(now).unwrap();
        let rule = o.rule().unwrap();
        let descriptor: DescriptorRef = serde_json::from_value(json!({
            "domain": "api", "entries": [{"key": "user", "value": "42"}],
        }))
        .unwrap();
        let text = explain(&descriptor, Some(&rule), Some(&o), true, now + 60_000);
        assert!(
            text.contains("until 2026-11-26T13:00:00Z, in 59m"),
            "{text}"
        );
        assert!(!text.contains("unix"), "{text}");
    }
}
