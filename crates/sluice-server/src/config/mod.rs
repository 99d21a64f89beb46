//! Configuration: envoyproxy/ratelimit's YAML format, loaded unchanged, plus sluice's
//! extensions (algorithm, burst, failure policy, store).
//!
//! # Files
//!
//! [`Config::load`] takes one of:
//!
//! 1. an **envoy ratelimit domain file**, as envoy's ratelimit service reads it:
//!
//!    ```yaml
//!    domain: api
//!    descriptors:
//!      - key: user                 # required
//!        value: admin              # optional; a trailing * makes it a prefix wildcard
//!        rate_limit:               # optional
//!          unit: second            # second, minute, hour, day, week, month (30 days),
//!                                  # year (365 days); any case
//!          requests_per_unit: 100  # at least 1
//!          unit_multiplier: 1      # optional: the window is this many units
//!          name: admins            # optional, for replaces
//!          replaces: [{name: users}]
//!          unlimited: false        # true: matched, never limited (no unit then)
//!          algorithm: gcra         # sluice: gcra, fixed_window, sliding_window,
//!                                  #   sliding_log, concurrency
//!          burst: 200              # sluice, gcra only: the bucket size
//!          on_store_error: local   # sluice: fail_open, fail_closed or local
//!        shadow_mode: false        # counted and reported, never refused
//!        detailed_metric: false    # metrics per value
//!        descriptors: []           # nested descriptors, same shape
//!    ```
//!
//! 2. a **sluice config file**: `default_algorithm` (default `gcra`), `store` (`{type:
//!    memory}`, `{type: redis, url: ...}` or `{type: redis_cluster, urls: [...]}`, both with
//!    an optional `timeout`, default `50ms`) and `domains`, a list of envoy domain objects;
//!
//! 3. a **directory**: every `*.yaml` and `*.yml` file in it, by name, not recursing and
//!    skipping hidden files, each of kind 1 or 2. At most one of them may set `store` and
//!    `default_algorithm`, and each domain is defined once.
//!
//! Unknown keys, duplicate keys and two descriptors with the same key and value at one
//! level are errors, and every [`ConfigError`] names the file, the line, the field path
//! and the bad value: `api.yaml:12: descriptors[0].rate_limit.unit: unknown unit "seconds"
//! (expected second, minute, hour, day, week, month or year)`.
//!
//! # Matching
//!
//! [`Config::find`] is envoy ratelimit's lookup: a request descriptor's entries are matched
//! one level each, trying the exact `key`/`value` first, then the wildcard values of that
//! key in configuration order, then the descriptor with the key and no value. A rule
//! applies only if the descriptor matched by the *last* entry has a `rate_limit`: a request
//! with more or fewer entries than the configured limit's depth gets none.

mod build;
mod json;
mod load;
mod tree;
mod yaml;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sluice_core::{AlgorithmKind, Policy};
use sluice_store::FailurePolicy;

pub(crate) use json::redact_url;
use tree::Domain;

/// The built-in demo configuration, which `sluice serve` uses without `--config`; see
/// [`Config::demo`].
pub const DEMO_YAML: &str = r#"# sluice's built-in demo configuration (sluice serve without --config).
domain: demo
descriptors:
  # Each user: 10 requests per second (GCRA: a burst of 10, then one every 100 ms).
  - key: user
    rate_limit:
      unit: second
      requests_per_unit: 10

  # Each API key: 100 requests per minute.
  - key: api_key
    rate_limit:
      unit: minute
      requests_per_unit: 100

  # Each path under /search/: 5 requests per second.
  - key: path
    value: /search/*
    rate_limit:
      unit: second
      requests_per_unit: 5

  # Any other path: 50 requests per second, in shadow mode: counted and reported as over
  # the limit, never refused.
  - key: path
    shadow_mode: true
    rate_limit:
      unit: second
      requests_per_unit: 50
"#;

/// One entry of a request's descriptor: `key` with its `value` (empty when the caller sent
/// none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The entry's key, e.g. `user`.
    pub key: String,
    /// The entry's value, e.g. `42`.
    pub value: String,
}

impl Entry {
    /// The entry `key=value`.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// A loaded, validated configuration: every domain's descriptor tree, plus where state
/// lives. Immutable; a reload builds a new one. Cloning is cheap (the domains are shared).
#[derive(Clone, Debug)]
pub struct Config {
    /// Algorithm of limits that do not name one.
    pub default_algorithm: AlgorithmKind,
    /// Where limiter state lives.
    pub store: StoreConfig,
    /// The files this configuration was read from, in load order (empty for the demo and
    /// for [`Config::parse`]).
    pub sources: Vec<PathBuf>,
    domains: Arc<HashMap<String, Domain>>,
}

/// Where limiter state lives.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum StoreConfig {
    /// In this process.
    #[default]
    Memory,
    /// Shared in Redis.
    Redis {
        /// One node (`redis://host:port/`), or the seed nodes of a cluster.
        urls: Vec<String>,
        /// Whether `urls` are the seeds of a Redis Cluster.
        cluster: bool,
        /// How long a decision may wait for Redis before the failure policy applies.
        timeout: Duration,
    },
}

impl StoreConfig {
    /// The store's `type` in a config file: `memory`, `redis` or `redis_cluster`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis { cluster: false, .. } => "redis",
            Self::Redis { cluster: true, .. } => "redis_cluster",
        }
    }
}

/// Shows URLs with their passwords replaced by `***`, so the store can be logged.
impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory => f.write_str("Memory"),
            Self::Redis {
                urls,
                cluster,
                timeout,
            } => f
                .debug_struct("Redis")
                .field(
                    "urls",
                    &urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>(),
                )
                .field("cluster", cluster)
                .field("timeout", timeout)
                .finish(),
        }
    }
}

/// The unit of an envoy `rate_limit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unit {
    /// One second.
    Second,
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One day.
    Day,
    /// Seven days.
    Week,
    /// 30 days, as in envoy ratelimit.
    Month,
    /// 365 days, as in envoy ratelimit.
    Year,
}

impl Unit {
    /// Every unit, shortest first.
    pub const ALL: [Self; 7] = [
        Self::Second,
        Self::Minute,
        Self::Hour,
        Self::Day,
        Self::Week,
        Self::Month,
        Self::Year,
    ];

    /// The accepted names, for error messages.
    pub const EXPECTED: &'static str = "second, minute, hour, day, week, month or year";

    /// The unit's length in seconds (a month is 30 days and a year 365, as in envoy
    /// ratelimit).
    pub const fn seconds(self) -> u64 {
        match self {
            Self::Second => 1,
            Self::Minute => 60,
            Self::Hour => 3_600,
            Self::Day => 86_400,
            Self::Week => 7 * 86_400,
            Self::Month => 30 * 86_400,
            Self::Year => 365 * 86_400,
        }
    }

    /// The lowercase name, as in config files: `second`, `minute`, ...
    pub const fn name(self) -> &'static str {
        match self {
            Self::Second => "second",
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
            Self::Year => "year",
        }
    }

    /// The unit named `name`, in any case (`second`, `SECOND`), as envoy ratelimit reads it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|unit| unit.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One configured limit: what a fully matched descriptor is held to.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Stable identity for metrics and logs, envoy-style: `domain.key_value.key2`, from the
    /// configured path (a wildcard keeps its pattern: `api.path_/v1/*`).
    pub id: String,
    /// `rate_limit.name`, reported to clients and used by `replaces`.
    pub name: Option<String>,
    /// The envoy unit (`Second`, and meaningless, for an unlimited rule).
    pub unit: Unit,
    /// Requests per `unit_multiplier` units (as written, possibly 0, for an unlimited rule).
    pub requests_per_unit: u64,
    /// The window is this many units (1 when not given).
    pub unit_multiplier: u64,
    /// How it counts; `None` for `unlimited: true` and for a blocked rule.
    pub policy: Option<Policy>,
    /// Refuses every request: envoy ratelimit's `requests_per_unit: 0`, or an override
    /// that blocks a descriptor. Never counted.
    pub blocked: bool,
    /// Counted but never refuses.
    pub shadow_mode: bool,
    /// Per-value metrics: envoy ratelimit reports such a rule's metrics under
    /// `<id>_<value of the request's last entry>` instead of `<id>`.
    pub detailed_metric: bool,
    /// Names of rules this one replaces when both apply to one request.
    pub replaces: Vec<String>,
    /// What to decide when the shared store fails.
    pub on_store_error: FailurePolicy,
}

impl Rule {
    /// Whether the rule is `unlimited: true`: matched, never limited.
    pub fn is_unlimited(&self) -> bool {
        self.policy.is_none() && !self.blocked
    }

    /// The window: `unit_multiplier` units.
    pub fn period(&self) -> Duration {
        Duration::from_secs(self.unit.seconds().saturating_mul(self.unit_multiplier))
    }
}

/// Why a configuration could not be loaded.
///
/// Displayed as `file:line: field: message`; the line is left out when unknown (a file
/// that cannot be read) and the field when there is none (a YAML syntax error).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    /// The file, as given (or the `origin` passed to [`Config::parse`]).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The field's path, e.g. `descriptors[0].rate_limit.unit`; empty when the error is not
    /// about one field (YAML syntax, an unreadable file).
    pub field: String,
    /// What is wrong, with the bad value.
    pub message: String,
}

impl ConfigError {
    fn render(&self) -> String {
        let mut out = self.file.clone();
        if let Some(line) = self.line {
            out.push_str(&format!(":{line}"));
        }
        if !self.field.is_empty() {
            out.push_str(": ");
            out.push_str(&self.field);
        }
        out.push_str(": ");
        out.push_str(&self.message);
        out
    }
}

impl Config {
    /// Loads a sluice config file, an envoy ratelimit domain file, or a directory of them
    /// (see the [module docs](self)).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        load::load(path)
    }

    /// Parses one file's text (an envoy domain file or a sluice config file); `origin`
    /// names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let doc = build::read_file(text, origin)?;
        load::assemble(vec![doc], Vec::new())
    }

    /// The built-in demo configuration `sluice serve` uses without `--config`
    /// ([`DEMO_YAML`]): domain `demo`, GCRA, in memory, with
    ///
    /// - `user`: 10 requests per second for each user;
    /// - `api_key`: 100 requests per minute for each API key;
    /// - `path` with a value under `/search/` (the wildcard `/search/*`): 5 per second;
    /// - any other `path`: 50 per second, in shadow mode (reported, never refused).
    pub fn demo() -> Self {
        Self::parse(DEMO_YAML, "<demo>").expect("the built-in demo configuration is valid")
    }

    /// The rule a descriptor of `domain` is held to, by envoy ratelimit's matching rules
    /// (see the [module docs](self)). `None` for an unknown domain, an empty descriptor, or
    /// a descriptor that matches no limit.
    pub fn find(&self, domain: &str, entries: &[Entry]) -> Option<&Arc<Rule>> {
        self.find_pairs(
            domain,
            entries.iter().map(|e| (e.key.as_str(), e.value.as_str())),
        )
    }

    /// [`Config::find`] over `(key, value)` pairs, for callers that hold the entries in
    /// another type (an Envoy RLS request).
    pub fn find_pairs<'e>(
        &self,
        domain: &str,
        entries: impl IntoIterator<Item = (&'e str, &'e str)>,
    ) -> Option<&Arc<Rule>> {
        tree::find(&self.domains.get(domain)?.root, entries)
    }

    /// Whether `domain` is configured.
    pub fn has_domain(&self, domain: &str) -> bool {
        self.domains.contains_key(domain)
    }

    /// The configured domains, sorted.
    pub fn domain_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.domains.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Every rule of every domain: domains sorted by name, rules in configuration order
    /// (depth first).
    pub fn rules(&self) -> Vec<&Arc<Rule>> {
        let mut out = Vec::new();
        for name in self.domain_names() {
            if let Some(domain) = self.domains.get(name) {
                domain.root.rules(&mut out);
            }
        }
        out
    }

    /// The configuration as JSON, for `GET /v1/limits`: `default_algorithm`, `store` (its
    /// `type`, URLs without passwords, `timeout_ms`), `sources`, and `domains` sorted by
    /// name, each with its file and its descriptors in configuration order (`key`,
    /// `value`, `rate_limit`, nested `descriptors`).
    pub fn to_json(&self) -> serde_json::Value {
        json::config(self)
    }
}
