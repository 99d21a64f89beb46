//! The decision service both protocols call: match descriptors to rules, ask the store,
//! count, and answer per descriptor.
//!
//! Matching follows envoy ratelimit (see [`Config::find`]); then, unlike envoy ratelimit,
//! the enforcing limits of one request are checked **all or nothing**: a request refused by
//! one limit is not debited from the others. Shadow-mode limits are checked on their own,
//! count as usual and never refuse. A rule's state is keyed by the domain and the
//! request's entries (not the rule), so a reload that keeps a limit keeps its counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use sluice_core::{Clock, Decision, Key, MonotonicClock, Policy, SystemClock};
use sluice_store::{Limit, Reservation};

use crate::backend::Backend;
use crate::config::{Config, Rule};
use crate::hot::{HotKey, HotKeys, Rank, Seen};
use crate::metrics::{Metrics, RequestResult, RuleHit, UNKNOWN_DOMAIN};
use crate::overrides::{
    DescriptorRef, Override, OverrideRequest, OverrideSet, OverrideStore, OverrideStoreError,
};
use crate::request::{CheckRequest, InvalidRequest, validate};
use crate::reservations::{Reservations, ReservationsFull};

/// Most reservations outstanding at once.
const MAX_RESERVATIONS: usize = 100_000;

/// How long an unsettled reservation is kept beyond its wait, at least.
const RESERVATION_GRACE: Duration = Duration::from_secs(60);

/// The answer for one descriptor, or for a whole request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// Within the limit (or no limit applies, or the limit is in shadow mode).
    Ok,
    /// Over the limit.
    OverLimit,
}

impl Code {
    /// `OK` or `OVER_LIMIT`, as Envoy spells them.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ok => sluice_http::check::CODE_OK,
            Self::OverLimit => sluice_http::check::CODE_OVER_LIMIT,
        }
    }
}

/// One descriptor's answer.
#[derive(Clone, Debug)]
pub struct Status {
    /// Whether this descriptor is within its limit.
    pub code: Code,
    /// The rule it matched, if any (also for `unlimited` rules, which have no decision).
    pub rule: Option<Arc<Rule>>,
    /// What the store decided, when a limited rule matched.
    pub decision: Option<Decision>,
}

/// The answer to a whole check.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// `OverLimit` when any descriptor is.
    pub code: Code,
    /// One per descriptor, in request order.
    pub statuses: Vec<Status>,
}

/// The answer to a reservation.
#[derive(Clone, Debug)]
pub struct ReserveOutcome {
    /// Whether every limit granted the units within the maximum wait.
    pub granted: bool,
    /// The id to settle or cancel with, when granted.
    pub id: Option<String>,
    /// How long to wait before proceeding.
    pub wait: Duration,
    /// One per descriptor, in request order.
    pub statuses: Vec<Status>,
}

/// What applies to a descriptor: its key, the rule (an override's, else the config's) and
/// the override, if one is in force.
pub(crate) type Applied = (Key, Option<Arc<Rule>>, Option<Override>);

/// Why an admin operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdminError {
    /// The request was malformed.
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    /// The override store failed.
    #[error("the override store failed: {0}")]
    Overrides(#[from] OverrideStoreError),
    /// The limiter's store failed.
    #[error(transparent)]
    Limit(#[from] LimitError),
}

/// Wall-clock milliseconds from a Unix-nanosecond clock.
fn unix_ms(clock: &dyn Clock) -> u64 {
    clock.now().as_u64() / 1_000_000
}

/// Why a request got no decision.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// The request was malformed.
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    /// The store failed and no failure policy could answer.
    #[error("the store failed: {0}")]
    Store(String),
    /// No outstanding reservation has this id (never issued, expired, or already used).
    #[error(
        "no outstanding reservation with this id (unknown, expired, or already settled or cancelled)"
    )]
    UnknownReservation,
    /// The reservation table is full.
    #[error(transparent)]
    Full(#[from] ReservationsFull),
}

/// The server's decision service over one store.
pub struct Limiter<B> {
    config: ArcSwap<Config>,
    version: AtomicU64,
    backend: B,
    metrics: Metrics,
    hot: HotKeys,
    reservations: Reservations,
    clock: MonotonicClock,
    overrides: ArcSwap<OverrideSet>,
    override_store: OverrideStore,
    override_version: AtomicU64,
    wall: Arc<dyn Clock>,
    started_ms: u64,
    last_reload: Mutex<ReloadStatus>,
}

impl<B: std::fmt::Debug> std::fmt::Debug for Limiter<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("version", &self.version)
            .field("backend", &self.backend)
            .field("override_store", &self.override_store)
            .finish_non_exhaustive()
    }
}

/// The outcome of the last configuration load.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct ReloadStatus {
    /// Whether it was served.
    pub ok: bool,
    /// When (Unix ms).
    pub at_unix_ms: u64,
    /// Why not, when it failed.
    pub error: Option<String>,
}

/// A request matched against the configuration.
struct Matched {
    domain: String,
    rules: Vec<Option<Arc<Rule>>>,
    keys: Vec<Option<Key>>,
    costs: Vec<u64>,
}

impl Matched {
    /// Whether an enforcing (not shadow) rule of the request blocks everything.
    fn blocks(&self) -> bool {
        self.rules
            .iter()
            .flatten()
            .any(|r| r.blocked && !r.shadow_mode)
    }

    /// The refusals of blocked rules, `None` elsewhere.
    fn blocked_decisions(&self) -> Vec<Option<Decision>> {
        self.rules
            .iter()
            .map(|rule| {
                let rule = rule.as_ref().filter(|r| r.blocked)?;
                Some(Decision::exceeds_capacity(0, 0, rule.period()))
            })
            .collect()
    }

    /// The limits of descriptors whose rule is limited and (not) in shadow mode.
    fn limits(&self, shadow: bool) -> Vec<(usize, Limit<'_>)> {
        self.rules
            .iter()
            .zip(&self.keys)
            .enumerate()
            .filter_map(|(i, (rule, key))| {
                let rule = rule.as_ref()?;
                let policy: &Policy = rule.policy.as_ref()?;
                let limit = Limit::new(key.as_ref()?, policy).on_failure(rule.on_store_error);
                (rule.shadow_mode == shadow).then_some((i, limit))
            })
            .collect()
    }
}

impl<B: Backend> Limiter<B> {
    /// A limiter serving `config` (version 1) on `backend`.
    pub fn new(config: Config, backend: B) -> Self {
        let metrics = Metrics::default();
        metrics.reload(Ok(1));
        let wall: Arc<dyn Clock> = Arc::new(SystemClock);
        let started_ms = unix_ms(&*wall);
        Self {
            config: ArcSwap::from_pointee(config),
            version: AtomicU64::new(1),
            backend,
            metrics,
            hot: HotKeys::default(),
            reservations: Reservations::new(MAX_RESERVATIONS),
            clock: MonotonicClock::new(),
            overrides: ArcSwap::from_pointee(OverrideSet::default()),
            override_store: OverrideStore::Local {
                file: None,
                state: Arc::default(),
            },
            override_version: AtomicU64::new(0),
            wall,
            started_ms,
            last_reload: Mutex::new(ReloadStatus {
                ok: true,
                at_unix_ms: started_ms,
                error: None,
            }),
        }
    }

    /// The same limiter keeping its overrides in `store`.
    #[must_use]
    pub(crate) fn with_override_store(mut self, store: OverrideStore) -> Self {
        self.override_store = store;
        self
    }

    /// The same limiter reading wall-clock time (override expiry) from `clock`: Unix
    /// nanoseconds: a `ManualClock` in tests.
    #[cfg(test)]
    #[must_use]
    pub(crate) fn with_wall_clock(mut self, clock: impl Clock) -> Self {
        self.wall = Arc::new(clock);
        self.started_ms = unix_ms(&*self.wall);
        self
    }

    /// Now, in Unix milliseconds.
    pub(crate) fn wall_ms(&self) -> u64 {
        unix_ms(&*self.wall)
    }

    /// When the limiter was built, in Unix milliseconds.
    pub(crate) fn started_ms(&self) -> u64 {
        self.started_ms
    }

    /// The outcome of the last configuration load.
    pub(crate) fn last_reload(&self) -> ReloadStatus {
        self.last_reload
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records a failed reload (the previous configuration keeps serving).
    pub(crate) fn reload_failed(&self, error: String) {
        self.metrics.reload(Err(()));
        *self
            .last_reload
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = ReloadStatus {
            ok: false,
            at_unix_ms: self.wall_ms(),
            error: Some(error),
        };
    }

    /// The overrides in force.
    pub(crate) fn overrides(&self) -> Arc<OverrideSet> {
        self.overrides.load_full()
    }

    /// Reloads the overrides from their store if they changed there (another instance
    /// changed them); the server calls this about twice a second.
    pub(crate) async fn sync_overrides(&self) -> Result<(), OverrideStoreError> {
        let version = self.override_store.version().await?;
        if version != self.override_version.load(Ordering::Acquire) {
            let all = self.override_store.load().await?;
            self.overrides.store(Arc::new(OverrideSet::new(all)));
            self.override_version.store(version, Ordering::Release);
        }
        Ok(())
    }

    /// Sets an override (replacing one on the same descriptor) and applies it here at once.
    pub(crate) async fn put_override(
        &self,
        request: OverrideRequest,
    ) -> Result<Override, AdminError> {
        let o = request.into_override(self.wall_ms())?;
        let key = o.key()?;
        self.override_store.put(&o, &key).await?;
        self.sync_overrides().await?;
        tracing::info!(key = %key.as_str(), action = ?o.action, "override set");
        Ok(o)
    }

    /// Deletes the override of a descriptor; whether there was one.
    pub(crate) async fn delete_override(
        &self,
        descriptor: &DescriptorRef,
    ) -> Result<bool, AdminError> {
        let key = descriptor.key()?;
        let deleted = self.override_store.delete(&key).await?;
        self.sync_overrides().await?;
        if deleted {
            tracing::info!(key = %key.as_str(), "override deleted");
        }
        Ok(deleted)
    }

    /// The rule a descriptor is held to now (an override, else the config's) and its key.
    pub(crate) fn rule_for(&self, descriptor: &DescriptorRef) -> Result<Applied, AdminError> {
        let key = descriptor.key()?;
        let config = self.config.load();
        let pairs = descriptor.entries.iter().map(|e| (&*e.key, &*e.value));
        let configured = config.find_pairs(&descriptor.domain, pairs).cloned();
        let overrides = self.overrides.load();
        match overrides.get(key.as_str(), self.wall_ms()) {
            Some((o, rule)) => Ok((key, Some(Arc::clone(rule)), Some(o.clone()))),
            None => Ok((key, configured, None)),
        }
    }

    /// The current state of a descriptor's limit (nothing debited), if a limited rule
    /// applies to it.
    pub(crate) async fn peek(
        &self,
        key: &Key,
        rule: &Rule,
    ) -> Result<Option<Decision>, LimitError> {
        let Some(policy) = rule.policy.as_ref() else {
            return Ok(None);
        };
        let limit = Limit::new(key, policy).on_failure(rule.on_store_error);
        Ok(Some(self.store(self.backend.peek(limit).await)?))
    }

    /// Forgets a descriptor's counters under the rule that applies to it now; the rule's
    /// id, or `None` when no limited rule applies.
    pub(crate) async fn reset(
        &self,
        descriptor: &DescriptorRef,
    ) -> Result<Option<String>, AdminError> {
        let (key, rule, _) = self.rule_for(descriptor)?;
        let Some(rule) = rule.filter(|r| r.policy.is_some()) else {
            return Ok(None);
        };
        if let Some(policy) = rule.policy.as_ref() {
            let limit = Limit::new(&key, policy).on_failure(rule.on_store_error);
            self.store(self.backend.reset(limit).await)?;
        }
        tracing::info!(key = %key.as_str(), rule = %rule.id, "counters reset");
        Ok(Some(rule.id.clone()))
    }

    /// The configuration serving now.
    pub(crate) fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// The version of the configuration serving now (1 at start, +1 per replacement).
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Serves `config` from now on, atomically: a request sees the old or the new one,
    /// never a mix. Returns the new version.
    pub(crate) fn replace_config(&self, config: Config) -> u64 {
        self.config.store(Arc::new(config));
        let version = self.version.fetch_add(1, Ordering::AcqRel) + 1;
        self.metrics.reload(Ok(version));
        *self
            .last_reload
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = ReloadStatus {
            ok: true,
            at_unix_ms: self.wall_ms(),
            error: None,
        };
        version
    }

    /// The store.
    pub(crate) fn backend(&self) -> &B {
        &self.backend
    }

    /// The counters.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The `n` keys this process decided most often (or refused most often, by an enforcing
    /// limit) over the last one to two minutes, from a sample of the requests.
    pub(crate) fn hot_keys(&self, n: usize, rank: Rank) -> Vec<HotKey> {
        self.hot.top(n, rank, self.clock.now())
    }

    /// Adapts the hot keys' sampling to the request rate since the last call; the server
    /// calls this once a second.
    pub(crate) fn adapt_hot_keys(&self) {
        self.hot.adapt(self.metrics.requests());
    }

    /// The `/metrics` text.
    pub(crate) fn render_metrics(&self) -> String {
        self.metrics
            .render(self.backend.kind(), &self.backend.health())
    }

    /// Decides a request: debits every enforcing limit, or none.
    pub async fn check(&self, request: CheckRequest) -> Result<Outcome, LimitError> {
        let started = self.clock.now();
        let config = self.config.load();
        let matched = self.matched(&config, request)?;
        let mut decisions = matched.blocked_decisions();
        let enforcing = matched.limits(false);
        if matched.blocks() {
            // Refused whatever the other limits say: debit none of them, show their state.
            for (i, limit) in &enforcing {
                decisions[*i] = Some(self.store(self.backend.peek(*limit).await)?);
            }
        }
        let groups = if matched.blocks() {
            Vec::new()
        } else {
            by_cost(&enforcing, &matched.costs)
        };
        for group in groups {
            let cost = matched.costs[group[0].0];
            let limits: Vec<Limit<'_>> = group.iter().map(|(_, limit)| *limit).collect();
            if let [limit] = limits.as_slice() {
                decisions[group[0].0] = Some(self.store(self.backend.check(*limit, cost).await)?);
            } else {
                let verdict = self.store(self.backend.check_all(&limits, cost).await)?;
                for ((i, _), decision) in group.iter().zip(verdict.decisions) {
                    decisions[*i] = Some(decision);
                }
            }
        }
        for (i, limit) in matched.limits(true) {
            decisions[i] = Some(self.store(self.backend.check(limit, matched.costs[i]).await)?);
        }

        let outcome = self.outcome(&matched, decisions);
        self.sample_hot(&matched, &outcome.statuses);
        let shadowed = outcome.statuses.iter().any(|s| {
            s.rule.as_ref().is_some_and(|r| r.shadow_mode) && s.decision.is_some_and(|d| !d.allowed)
        });
        let result = match outcome.code {
            Code::OverLimit => RequestResult::Limited,
            Code::Ok if shadowed => RequestResult::Shadow,
            Code::Ok => RequestResult::Allowed,
        };
        let label = if config.has_domain(&matched.domain) {
            matched.domain.as_str()
        } else {
            UNKNOWN_DOMAIN
        };
        self.metrics
            .request(label, result, self.clock.now().saturating_since(started));
        Ok(outcome)
    }

    /// Takes the request's hits on every enforcing limit for the earliest instant all can
    /// supply them, if that is at most `max_wait` away. Shadow-mode limits are not reserved.
    pub async fn reserve(
        &self,
        request: CheckRequest,
        max_wait: Duration,
    ) -> Result<ReserveOutcome, LimitError> {
        let config = self.config.load();
        let matched = self.matched(&config, request)?;
        if matched.blocks() {
            let outcome = self.outcome(&matched, matched.blocked_decisions());
            self.sample_hot(&matched, &outcome.statuses);
            return Ok(ReserveOutcome {
                granted: false,
                id: None,
                wait: Duration::ZERO,
                statuses: outcome.statuses,
            });
        }
        let enforcing = matched.limits(false);
        let cost = enforcing.first().map_or(1, |(i, _)| matched.costs[*i]);
        if let Some((i, _)) = enforcing.iter().find(|(i, _)| matched.costs[*i] != cost) {
            return Err(InvalidRequest::new(
                format!("descriptors[{i}].hits"),
                "a reservation takes the same hits on every limited descriptor",
            )
            .into());
        }
        let limits: Vec<Limit<'_>> = enforcing.iter().map(|(_, limit)| *limit).collect();
        let reservation = self.store(self.backend.reserve(&limits, cost, max_wait).await)?;
        let mut decisions: Vec<Option<Decision>> = vec![None; matched.rules.len()];
        for ((i, _), decision) in enforcing.iter().zip(&reservation.verdict.decisions) {
            decisions[*i] = Some(*decision);
        }
        let outcome = self.outcome(&matched, decisions);
        self.sample_hot(&matched, &outcome.statuses);
        let (granted, wait) = (reservation.granted(), reservation.wait);
        let id = if granted {
            let period = limits
                .iter()
                .map(|l| Duration::from_nanos(l.policy.period_nanos()))
                .max()
                .unwrap_or_default();
            let ttl = wait + period.max(RESERVATION_GRACE);
            match self
                .reservations
                .insert(reservation.clone(), self.clock.now(), ttl)
            {
                Ok(id) => Some(id),
                Err(full) => {
                    // Nobody could ever settle it: give the units back at once.
                    self.store(self.backend.cancel(&reservation).await)?;
                    return Err(full.into());
                }
            }
        } else {
            None
        };
        Ok(ReserveOutcome {
            granted,
            id,
            wait,
            statuses: outcome.statuses,
        })
    }

    /// Corrects reservation `id` to `actual` hits per limit; the id is then used up.
    pub async fn settle(&self, id: &str, actual: u64) -> Result<(), LimitError> {
        let reservation = self.take_reservation(id)?;
        self.store(self.backend.settle(&reservation, actual).await)
    }

    /// Gives back everything reservation `id` took; the id is then used up.
    pub async fn cancel(&self, id: &str) -> Result<(), LimitError> {
        let reservation = self.take_reservation(id)?;
        self.store(self.backend.cancel(&reservation).await)
    }

    fn take_reservation(&self, id: &str) -> Result<Reservation, LimitError> {
        self.reservations
            .take(id, self.clock.now())
            .ok_or(LimitError::UnknownReservation)
    }

    fn matched(&self, config: &Config, request: CheckRequest) -> Result<Matched, LimitError> {
        if let Err(invalid) = validate(&request) {
            self.metrics.bad_request();
            return Err(invalid.into());
        }
        let costs: Vec<u64> = (0..request.descriptors.len())
            .map(|i| request.hits_of(i))
            .collect();
        let CheckRequest {
            domain,
            descriptors,
            ..
        } = request;
        let mut rules = Vec::with_capacity(descriptors.len());
        let mut keys = Vec::with_capacity(descriptors.len());
        let overrides = self.overrides.load();
        let now_ms = self.wall_ms();
        for (i, descriptor) in descriptors.iter().enumerate() {
            let pairs = descriptor.entries.iter().map(|e| (&*e.key, &*e.value));
            let mut rule = config.find_pairs(&domain, pairs.clone()).cloned();
            let needs_key =
                !overrides.is_empty() || rule.as_ref().is_some_and(|r| r.policy.is_some());
            let key = if needs_key {
                Some(Key::new(&domain, pairs).map_err(|err| {
                    InvalidRequest::new(format!("descriptors[{i}]"), err.to_string())
                })?)
            } else {
                None
            };
            if let Some(key) = &key
                && let Some((_, overriding)) = overrides.get(key.as_str(), now_ms)
            {
                rule = Some(Arc::clone(overriding));
            }
            rules.push(rule);
            keys.push(key);
        }
        apply_replaces(&mut rules, &mut keys);
        Ok(Matched {
            domain: domain.into_owned(),
            rules,
            keys,
            costs,
        })
    }

    fn outcome(&self, matched: &Matched, decisions: Vec<Option<Decision>>) -> Outcome {
        let mut code = Code::Ok;
        let statuses = matched
            .rules
            .iter()
            .zip(decisions)
            .enumerate()
            .map(|(i, (rule, decision))| {
                let mut status_code = Code::Ok;
                if let (Some(rule), Some(d)) = (rule, decision) {
                    self.metrics.rule(
                        &rule.id,
                        RuleHit {
                            hits: matched.costs[i],
                            limit: d.limit,
                            remaining: d.remaining,
                            refused: !d.allowed,
                            shadow: rule.shadow_mode,
                        },
                    );
                    if !d.allowed && !rule.shadow_mode {
                        status_code = Code::OverLimit;
                        code = Code::OverLimit;
                    }
                }
                Status {
                    code: status_code,
                    rule: rule.clone(),
                    decision,
                }
            })
            .collect();
        Outcome { code, statuses }
    }

    /// Records the request's keys in the hot keys, if it is sampled: each key with a
    /// decision, refused only when an enforcing limit refused it.
    fn sample_hot(&self, matched: &Matched, statuses: &[Status]) {
        let Some(weight) = self.hot.sample() else {
            return;
        };
        let seen = matched
            .keys
            .iter()
            .zip(statuses)
            .filter_map(|(key, status)| {
                let (key, rule, decision) =
                    (key.as_ref()?, status.rule.as_ref()?, status.decision?);
                Some((key, Seen::of(decision.allowed, rule.shadow_mode)))
            });
        self.hot.record(self.clock.now(), weight, seen);
    }

    fn store<T>(&self, result: Result<T, B::Error>) -> Result<T, LimitError> {
        result.map_err(|err| {
            self.metrics.store_error();
            tracing::warn!(error = %err, "store failed");
            LimitError::Store(err.to_string())
        })
    }
}

/// Envoy's `replaces`: a matched rule named in another matched rule's `replaces` list does
/// not apply to this request.
fn apply_replaces(rules: &mut [Option<Arc<Rule>>], keys: &mut [Option<Key>]) {
    if rules.iter().flatten().all(|r| r.replaces.is_empty()) {
        return;
    }
    let replaced: Vec<String> = rules
        .iter()
        .flatten()
        .flat_map(|r| r.replaces.iter().cloned())
        .collect();
    for (rule, key) in rules.iter_mut().zip(keys) {
        let name = rule.as_ref().and_then(|r| r.name.as_deref());
        if name.is_some_and(|name| replaced.iter().any(|r| r == name)) {
            *rule = None;
            *key = None;
        }
    }
}

/// Groups limits by their descriptor's cost: each group is one all-or-nothing check.
/// Almost always one group (every descriptor at the request's hits).
fn by_cost<'l, 'a>(
    limits: &'l [(usize, Limit<'a>)],
    costs: &[u64],
) -> Vec<Vec<(usize, Limit<'a>)>> {
    let Some((first, _)) = limits.first() else {
        return Vec::new();
    };
    if limits.iter().all(|(i, _)| costs[*i] == costs[*first]) {
        return vec![limits.to_vec()];
    }
    let mut groups: BTreeMap<u64, Vec<(usize, Limit<'a>)>> = BTreeMap::new();
    for (i, limit) in limits {
        groups.entry(costs[*i]).or_default().push((*i, *limit));
    }
    groups.into_values().collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sluice_core::{ManualClock, Nanos};
    use sluice_store::MemoryStore;

    use super::*;
    use crate::request::{Descriptor, EntryRequest};

    const CONFIG: &str = "
domain: api
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 3, algorithm: gcra}
";

    fn user(id: &str) -> Vec<EntryRequest> {
        vec![EntryRequest {
            key: "user".into(),
            value: id.to_owned().into(),
        }]
    }

    /// The wall clock is the limiter's own (the admin API's tests cannot move it).
    #[tokio::test]
    async fn an_override_expires_at_its_ttl_on_the_wall_clock() {
        let wall = ManualClock::new(Nanos::new(1_790_000_000_000_000_000));
        let limiter = Limiter::new(
            Config::parse(CONFIG, "test.yaml").expect("valid"),
            MemoryStore::new(),
        )
        .with_override_store(OverrideStore::local(None).expect("a store"))
        .with_wall_clock(wall.clone());
        let request: OverrideRequest = serde_json::from_value(json!({
            "domain": "api",
            "entries": [{"key": "user", "value": "t"}],
            "action": "blocked",
            "ttl_s": 60,
        }))
        .expect("valid");
        let stored = limiter.put_override(request).await.expect("stored");
        assert_eq!(stored.expires_at_unix_ms, Some(1_790_000_000_000 + 60_000));
        let check = || CheckRequest {
            domain: "api".into(),
            descriptors: vec![Descriptor {
                entries: user("t"),
                hits: None,
            }],
            hits: None,
        };
        assert_eq!(
            limiter.check(check()).await.expect("decided").code,
            Code::OverLimit
        );
        wall.advance(Duration::from_millis(59_999));
        assert_eq!(
            limiter.check(check()).await.expect("decided").code,
            Code::OverLimit
        );
        wall.advance(Duration::from_millis(1));
        assert_eq!(
            limiter.check(check()).await.expect("decided").code,
            Code::Ok
        );
        assert!(limiter.overrides().list(limiter.wall_ms()).is_empty());
        let gone = DescriptorRef {
            domain: "api".to_owned(),
            entries: user("t"),
        };
        assert!(limiter.rule_for(&gone).expect("valid").2.is_none());
    }
}
