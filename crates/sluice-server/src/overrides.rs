//! Overrides: a different limit, no limit, or a block for one exact descriptor, set at
//! runtime through the admin API, optionally until an expiry.
//!
//! An override applies to a request descriptor whose domain and entries equal its own,
//! and takes the place of whatever rule the configuration matches for it. Overrides live in
//! the store the server runs on: in Redis (a hash plus a version counter that every
//! instance polls, so all of them apply a change within a second, and a restart keeps
//! them), or in this process, optionally persisted to a JSON file. Expiry is wall-clock
//! time (Unix milliseconds), so it means the same on every instance.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::AsyncCommands as _;
use serde::{Deserialize, Serialize};
use sluice_core::{AlgorithmKind, Key, Policy, Rate};
use sluice_store::FailurePolicy;

use crate::config::{Rule, Unit};
use crate::request::{EntryRequest, InvalidRequest};

/// Most overrides held at once.
pub(crate) const MAX_OVERRIDES: usize = 10_000;
/// Longest reason kept, in bytes.
const MAX_REASON: usize = 512;
/// Longest time-to-live: ten years.
const MAX_TTL_S: u64 = 10 * 365 * 24 * 3600;

/// What an override does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Action {
    /// Apply `rate_limit` instead of the configured limit.
    Limit,
    /// No limit at all.
    Unlimited,
    /// Refuse every request.
    Blocked,
}

/// The limit of an `Action::Limit` override, in the configuration's terms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OverrideRate {
    /// `second`, `minute`, `hour`, `day`, ...
    pub unit: String,
    /// Requests per unit, at least 1.
    pub requests_per_unit: u64,
    /// How it counts (default gcra).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
}

/// One override as stored and listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Override {
    /// The domain.
    pub domain: String,
    /// The descriptor's entries, in order.
    pub entries: Vec<EntryRequest>,
    /// What it does.
    pub action: Action,
    /// The limit, for `Action::Limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<OverrideRate>,
    /// When it stops applying (Unix ms), or never.
    pub expires_at_unix_ms: Option<u64>,
    /// When it was set (Unix ms).
    pub created_at_unix_ms: u64,
    /// Why, for the next operator.
    pub reason: Option<String>,
}

/// `PUT /admin/v1/overrides`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OverrideRequest {
    /// The domain.
    pub domain: String,
    /// The descriptor's entries.
    pub entries: Vec<EntryRequest>,
    /// What it does.
    pub action: Action,
    /// The limit, required for `limit`.
    #[serde(default)]
    pub rate_limit: Option<OverrideRate>,
    /// Seconds until it expires; absent: never.
    #[serde(default)]
    pub ttl_s: Option<u64>,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
}

/// A descriptor named by its domain and entries (`DELETE`, reset, lookup).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DescriptorRef {
    /// The domain.
    pub domain: String,
    /// The entries.
    pub entries: Vec<EntryRequest>,
}

impl DescriptorRef {
    /// The canonical key of the descriptor.
    pub(crate) fn key(&self) -> Result<Key, InvalidRequest> {
        descriptor_key(&self.domain, &self.entries)
    }
}

/// The key a descriptor's state and override are filed under.
pub(crate) fn descriptor_key(
    domain: &str,
    entries: &[EntryRequest],
) -> Result<Key, InvalidRequest> {
    if domain.is_empty() {
        return Err(InvalidRequest::new("domain", "must not be empty"));
    }
    if entries.is_empty() {
        return Err(InvalidRequest::new(
            "entries",
            "must hold at least one entry",
        ));
    }
    Key::new(domain, entries.iter().map(|e| (&e.key, &e.value)))
        .map_err(|err| InvalidRequest::new("entries", err.to_string()))
}

impl OverrideRequest {
    /// Validates the request into an override set at `now_ms`.
    pub(crate) fn into_override(self, now_ms: u64) -> Result<Override, InvalidRequest> {
        descriptor_key(&self.domain, &self.entries)?;
        match (self.action, &self.rate_limit) {
            (Action::Limit, None) => {
                return Err(InvalidRequest::new(
                    "rate_limit",
                    "required when action is \"limit\"",
                ));
            }
            (Action::Unlimited | Action::Blocked, Some(_)) => {
                return Err(InvalidRequest::new(
                    "rate_limit",
                    "only allowed when action is \"limit\"",
                ));
            }
            _ => {}
        }
        if let Some(reason) = &self.reason
            && reason.len() > MAX_REASON
        {
            return Err(InvalidRequest::new(
                "reason",
                format!("at most {MAX_REASON} bytes"),
            ));
        }
        let expires_at_unix_ms = match self.ttl_s {
            Some(0) => return Err(InvalidRequest::new("ttl_s", "must be at least 1")),
            Some(ttl) if ttl > MAX_TTL_S => {
                return Err(InvalidRequest::new(
                    "ttl_s",
                    format!("at most {MAX_TTL_S} (ten years), got {ttl}"),
                ));
            }
            Some(ttl) => Some(now_ms.saturating_add(ttl * 1000)),
            None => None,
        };
        let built = Override {
            domain: self.domain,
            entries: self.entries,
            action: self.action,
            rate_limit: self.rate_limit,
            expires_at_unix_ms,
            created_at_unix_ms: now_ms,
            reason: self.reason,
        };
        built.rule()?;
        Ok(built)
    }
}

impl Override {
    /// The canonical key it applies to.
    pub(crate) fn key(&self) -> Result<Key, InvalidRequest> {
        descriptor_key(&self.domain, &self.entries)
    }

    /// Whether it still applies at `now_ms`.
    pub(crate) fn active_at(&self, now_ms: u64) -> bool {
        self.expires_at_unix_ms.is_none_or(|at| now_ms < at)
    }

    /// The rule it stands for.
    pub(crate) fn rule(&self) -> Result<Rule, InvalidRequest> {
        let mut rule = Rule {
            id: format!("{}.override", self.domain),
            name: Some("override".to_owned()),
            unit: Unit::Second,
            requests_per_unit: 0,
            unit_multiplier: 1,
            policy: None,
            blocked: self.action == Action::Blocked,
            shadow_mode: false,
            detailed_metric: false,
            replaces: Vec::new(),
            on_store_error: FailurePolicy::Local,
        };
        if let Some(rate) = &self.rate_limit {
            let unit = Unit::from_name(&rate.unit).ok_or_else(|| {
                InvalidRequest::new(
                    "rate_limit.unit",
                    format!("unknown unit {:?} (expected {})", rate.unit, Unit::EXPECTED),
                )
            })?;
            let algorithm = match &rate.algorithm {
                Some(name) => name
                    .parse::<AlgorithmKind>()
                    .map_err(|err| InvalidRequest::new("rate_limit.algorithm", err.to_string()))?,
                None => AlgorithmKind::Gcra,
            };
            let period = Duration::from_secs(unit.seconds());
            let rate_value = Rate::new(rate.requests_per_unit, period).map_err(|err| {
                InvalidRequest::new("rate_limit.requests_per_unit", err.to_string())
            })?;
            rule.unit = unit;
            rule.requests_per_unit = rate.requests_per_unit;
            rule.policy = Some(Policy::new(algorithm, rate_value));
        }
        Ok(rule)
    }
}

/// The overrides in force, by canonical key. Immutable; a change builds a new set.
#[derive(Clone, Debug, Default)]
pub(crate) struct OverrideSet {
    by_key: HashMap<String, (Override, Arc<Rule>)>,
}

impl OverrideSet {
    /// The set of `overrides` (invalid ones, which a newer version may have written, are
    /// skipped with a warning).
    pub(crate) fn new(overrides: Vec<Override>) -> Self {
        let mut by_key = HashMap::with_capacity(overrides.len());
        for o in overrides {
            match (o.key(), o.rule()) {
                (Ok(key), Ok(rule)) => {
                    by_key.insert(key.as_str().to_owned(), (o, Arc::new(rule)));
                }
                (Err(err), _) | (_, Err(err)) => {
                    tracing::warn!(error = %err, "skipping an invalid stored override")
                }
            }
        }
        Self { by_key }
    }

    /// Whether there are none (the fast path of every decision).
    pub(crate) fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The override for `key` in force at `now_ms`.
    pub(crate) fn get(&self, key: &str, now_ms: u64) -> Option<(&Override, &Arc<Rule>)> {
        let (o, rule) = self.by_key.get(key)?;
        o.active_at(now_ms).then_some((o, rule))
    }

    /// Every override in force at `now_ms`, sorted by key.
    pub(crate) fn list(&self, now_ms: u64) -> Vec<&Override> {
        let mut keys: Vec<&String> = self.by_key.keys().collect();
        keys.sort();
        keys.into_iter()
            .filter_map(|k| self.by_key.get(k))
            .filter(|(o, _)| o.active_at(now_ms))
            .map(|(o, _)| o)
            .collect()
    }
}

/// Why the override store failed.
#[derive(Debug, thiserror::Error)]
pub enum OverrideStoreError {
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The file could not be written or read.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A stored override was not valid JSON.
    #[error("stored override: {0}")]
    Json(#[from] serde_json::Error),
    /// Too many overrides.
    #[error("at most {MAX_OVERRIDES} overrides")]
    Full,
}

/// Where overrides are kept.
#[derive(Clone)]
pub(crate) enum OverrideStore {
    /// In this process, optionally persisted to a JSON file.
    Local {
        /// The file, if any.
        file: Option<PathBuf>,
        /// The overrides and a version bumped on every change.
        state: Arc<Mutex<(u64, Vec<Override>)>>,
    },
    /// In Redis, shared by every instance.
    Redis(RedisOverrides),
}

impl std::fmt::Debug for OverrideStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local { file, .. } => f
                .debug_struct("Local")
                .field("file", file)
                .finish_non_exhaustive(),
            Self::Redis(redis) => redis.fmt(f),
        }
    }
}

/// A Redis connection for overrides (single node or cluster).
#[derive(Clone)]
pub(crate) enum RedisOverrides {
    /// One node.
    Single(redis::aio::ConnectionManager),
    /// A cluster: both keys share the hash tag `{sluice-overrides}`.
    Cluster(redis::cluster_async::ClusterConnection),
}

impl std::fmt::Debug for RedisOverrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "RedisOverrides::Single",
            Self::Cluster(_) => "RedisOverrides::Cluster",
        })
    }
}

const HASH_KEY: &str = "sl:{sluice-overrides}:all";
const VERSION_KEY: &str = "sl:{sluice-overrides}:version";

impl RedisOverrides {
    /// Connects to `urls` (several: a cluster).
    pub(crate) async fn connect(urls: &[String], cluster: bool) -> Result<Self, redis::RedisError> {
        if cluster {
            let client = redis::cluster::ClusterClient::new(urls.to_vec())?;
            Ok(Self::Cluster(client.get_async_connection().await?))
        } else {
            let url = urls
                .first()
                .map_or("redis://127.0.0.1:6379/", String::as_str);
            let client = redis::Client::open(url)?;
            Ok(Self::Single(client.get_connection_manager().await?))
        }
    }

    async fn version(&self) -> Result<u64, redis::RedisError> {
        let version: Option<u64> = match self {
            Self::Single(c) => c.clone().get(VERSION_KEY).await?,
            Self::Cluster(c) => c.clone().get(VERSION_KEY).await?,
        };
        Ok(version.unwrap_or(0))
    }

    async fn all(&self) -> Result<Vec<String>, redis::RedisError> {
        match self {
            Self::Single(c) => c.clone().hvals(HASH_KEY).await,
            Self::Cluster(c) => c.clone().hvals(HASH_KEY).await,
        }
    }

    async fn count(&self) -> Result<usize, redis::RedisError> {
        match self {
            Self::Single(c) => c.clone().hlen(HASH_KEY).await,
            Self::Cluster(c) => c.clone().hlen(HASH_KEY).await,
        }
    }

    async fn apply(&self, pipe: &redis::Pipeline) -> Result<(), redis::RedisError> {
        match self {
            Self::Single(c) => pipe.query_async(&mut c.clone()).await,
            Self::Cluster(c) => pipe.query_async(&mut c.clone()).await,
        }
    }
}

impl OverrideStore {
    /// Overrides in this process, persisted to `file` if given (loaded from it now).
    pub(crate) fn local(file: Option<PathBuf>) -> Result<Self, OverrideStoreError> {
        let overrides = match &file {
            Some(path) if path.exists() => {
                let bytes = std::fs::read(path).map_err(|source| OverrideStoreError::File {
                    path: path.clone(),
                    source,
                })?;
                serde_json::from_slice(&bytes)?
            }
            _ => Vec::new(),
        };
        Ok(Self::Local {
            file,
            state: Arc::new(Mutex::new((1, overrides))),
        })
    }

    /// A number that changes whenever the overrides do.
    pub(crate) async fn version(&self) -> Result<u64, OverrideStoreError> {
        match self {
            Self::Local { state, .. } => Ok(lock(state).0),
            Self::Redis(redis) => Ok(redis.version().await?),
        }
    }

    /// Every stored override (expired ones included).
    pub(crate) async fn load(&self) -> Result<Vec<Override>, OverrideStoreError> {
        match self {
            Self::Local { state, .. } => Ok(lock(state).1.clone()),
            Self::Redis(redis) => {
                let mut all = Vec::new();
                for text in redis.all().await? {
                    match serde_json::from_str(&text) {
                        Ok(o) => all.push(o),
                        Err(err) => {
                            tracing::warn!(error = %err, "skipping an unreadable stored override")
                        }
                    }
                }
                Ok(all)
            }
        }
    }

    /// Stores `o`, replacing any override of the same descriptor.
    pub(crate) async fn put(&self, o: &Override, key: &Key) -> Result<(), OverrideStoreError> {
        match self {
            Self::Local { file, state } => {
                let snapshot = {
                    let mut guard = lock(state);
                    let list = &mut guard.1;
                    list.retain(|x| x.key().ok().as_ref() != Some(key));
                    if list.len() >= MAX_OVERRIDES {
                        return Err(OverrideStoreError::Full);
                    }
                    list.push(o.clone());
                    guard.0 += 1;
                    guard.1.clone()
                };
                persist(file.as_ref(), &snapshot)
            }
            Self::Redis(redis) => {
                if redis.count().await? >= MAX_OVERRIDES {
                    return Err(OverrideStoreError::Full);
                }
                let json = serde_json::to_string(o)?;
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .hset(HASH_KEY, key.as_str(), json)
                    .ignore()
                    .incr(VERSION_KEY, 1)
                    .ignore();
                Ok(redis.apply(&pipe).await?)
            }
        }
    }

    /// Removes the override of `key`; whether there was one.
    pub(crate) async fn delete(&self, key: &Key) -> Result<bool, OverrideStoreError> {
        match self {
            Self::Local { file, state } => {
                let (removed, snapshot) = {
                    let mut guard = lock(state);
                    let before = guard.1.len();
                    guard.1.retain(|x| x.key().ok().as_ref() != Some(key));
                    let removed = guard.1.len() != before;
                    if removed {
                        guard.0 += 1;
                    }
                    (removed, guard.1.clone())
                };
                if removed {
                    persist(file.as_ref(), &snapshot)?;
                }
                Ok(removed)
            }
            Self::Redis(redis) => {
                let existed = redis.all().await?.iter().any(|text| {
                    serde_json::from_str::<Override>(text)
                        .is_ok_and(|o| o.key().ok().as_ref() == Some(key))
                });
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .hdel(HASH_KEY, key.as_str())
                    .ignore()
                    .incr(VERSION_KEY, 1)
                    .ignore();
                redis.apply(&pipe).await?;
                Ok(existed)
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes the overrides to `file` atomically (a temporary file renamed over it).
fn persist(file: Option<&PathBuf>, overrides: &[Override]) -> Result<(), OverrideStoreError> {
    let Some(path) = file else {
        return Ok(());
    };
    let error = |source| OverrideStoreError::File {
        path: path.clone(),
        source,
    };
    let staged = path.with_extension("tmp");
    let bytes = serde_json::to_vec_pretty(overrides)?;
    std::fs::write(&staged, bytes).map_err(error)?;
    std::fs::rename(&staged, path).map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> OverrideRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn requests_are_validated_naming_the_field() {
        for (json, field) in [
            (
                r#"{"domain":"","entries":[{"key":"u","value":"1"}],"action":"blocked"}"#,
                "domain",
            ),
            (
                r#"{"domain":"a","entries":[],"action":"blocked"}"#,
                "entries",
            ),
            (
                r#"{"domain":"a","entries":[{"key":"u"}],"action":"limit"}"#,
                "rate_limit",
            ),
            (
                r#"{"domain":"a","entries":[{"key":"u"}],"action":"blocked","rate_limit":{"unit":"second","requests_per_unit":1}}"#,
                "rate_limit",
            ),
            (
                r#"{"domain":"a","entries":[{"key":"u"}],"action":"limit","rate_limit":{"unit":"fortnight","requests_per_unit":1}}"#,
                "rate_limit.unit",
            ),
            (
                r#"{"domain":"a","entries":[{"key":"u"}],"action":"limit","rate_limit":{"unit":"second","requests_per_unit":0}}"#,
                "rate_limit.requests_per_unit",
            ),
            (
                r#"{"domain":"a","entries":[{"key":"u"}],"action":"limit","rate_limit":{"unit":"second","requests_per_unit":1,"algorithm":"magic"}}"#,
                "rate_limit.algorithm",
            ),
            (
                r#"{"domain":"a","entries":[{"key":"u"}],"action":"unlimited","ttl_s":0}"#,
                "ttl_s",
            ),
        ] {
            let err = request(json).into_override(0).unwrap_err();
            assert_eq!(err.field, field, "{json}: {err}");
        }
    }

    #[test]
    fn an_override_expires_at_its_ttl() {
        let o = request(
            r#"{"domain":"a","entries":[{"key":"u","value":"1"}],"action":"blocked","ttl_s":60}"#,
        )
        .into_override(1_000)
        .unwrap();
        assert_eq!(o.expires_at_unix_ms, Some(61_000));
        let set = OverrideSet::new(vec![o]);
        let key = "a|u=1";
        assert!(set.get(key, 60_999).is_some_and(|(_, rule)| rule.blocked));
        assert!(set.get(key, 61_000).is_none());
        assert!(set.list(61_000).is_empty());
    }

    #[tokio::test]
    async fn a_local_store_persists_to_its_file() {
        let path =
            std::env::temp_dir().join(format!("sluice-overrides-{}.json", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let store = OverrideStore::local(Some(path.clone())).unwrap();
        let o = request(r#"{"domain":"a","entries":[{"key":"u","value":"1"}],"action":"limit","rate_limit":{"unit":"minute","requests_per_unit":3}}"#)
            .into_override(5)
            .unwrap();
        let key = o.key().unwrap();
        store.put(&o, &key).await.unwrap();
        let reopened = OverrideStore::local(Some(path.clone())).unwrap();
        assert_eq!(reopened.load().await.unwrap(), vec![o]);
        assert!(reopened.delete(&key).await.unwrap());
        assert!(!reopened.delete(&key).await.unwrap());
        assert!(
            OverrideStore::local(Some(path.clone()))
                .unwrap()
                .load()
                .await
                .unwrap()
                .is_empty()
        );
        let _ = std::fs::remove_file(&path);
    }
}
