//! The schema: from a [`Node`] tree to domains, rules and settings, with every check and an
//! error naming the file, line, field path and bad value.
//!
//! A file is read in two steps, because in a directory the default algorithm and the store
//! may be set by another file: [`read_file`] checks the file's shape and settings and keeps
//! each domain's descriptors as nodes, then [`build_domain`] builds the rules once the
//! settings of the whole configuration are known.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sluice_core::key::MAX_ENTRIES;
use sluice_core::time::parse_duration;
use sluice_core::{AlgorithmKind, Policy, PolicyError, Rate};
use sluice_store::FailurePolicy;

use super::tree::{Descriptor, Domain, Level, Slot};
use super::yaml::{self, Kind, Node, ScalarType};
use super::{ConfigError, Rule, StoreConfig, Unit, redact_url};

/// How long a decision waits for Redis when the store does not say.
pub(super) const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(50);

const ENVOY_ROOT_KEYS: &[&str] = &["domain", "descriptors"];
const SLUICE_ROOT_KEYS: &[&str] = &["default_algorithm", "store", "domains"];
const DESCRIPTOR_KEYS: &[&str] = &[
    "key",
    "value",
    "rate_limit",
    "shadow_mode",
    "detailed_metric",
    "descriptors",
];
const RATE_LIMIT_KEYS: &[&str] = &[
    "unit",
    "requests_per_unit",
    "unit_multiplier",
    "unlimited",
    "name",
    "replaces",
    "algorithm",
    "burst",
    "on_store_error",
];
const REPLACES_KEYS: &[&str] = &["name"];
const STORE_KEYS: &[&str] = &["type", "url", "urls", "timeout"];

/// One file, read: its settings and its domains, not yet built.
#[derive(Debug)]
pub(super) struct FileDoc {
    /// The file, as named in errors.
    pub(super) file: String,
    /// `default_algorithm` and `store`, when the file sets either.
    pub(super) settings: Option<Settings>,
    /// The domains it defines, in order.
    pub(super) domains: Vec<DomainDoc>,
}

/// The settings a sluice config file sets.
#[derive(Debug)]
pub(super) struct Settings {
    /// `default_algorithm`, if set.
    pub(super) default_algorithm: Option<AlgorithmKind>,
    /// `store`, if set.
    pub(super) store: Option<StoreConfig>,
    /// The line of the first of them.
    pub(super) line: usize,
    /// The name of the first of them.
    pub(super) field: &'static str,
}

/// One domain of a file, with its descriptors still as YAML.
#[derive(Debug)]
pub(super) struct DomainDoc {
    /// The domain name.
    pub(super) name: String,
    /// The line of its `domain:` value.
    pub(super) line: usize,
    /// `""` in an envoy file, `domains[3].` in a sluice config.
    pub(super) prefix: String,
    /// The `descriptors` list, if any.
    descriptors: Option<Node>,
}

impl DomainDoc {
    /// The field path of the domain's name.
    pub(super) fn field(&self) -> String {
        format!("{}domain", self.prefix)
    }
}

/// What every rule needs from the whole configuration.
#[derive(Clone, Copy, Debug)]
pub(super) struct BuildContext {
    /// The algorithm of limits that do not name one.
    pub(super) default_algorithm: AlgorithmKind,
    /// Whether state lives in Redis, which holds shorter spans than memory.
    pub(super) redis: bool,
}

/// Reads one file's text: an envoy domain file (top-level `domain:`) or a sluice config
/// file (`default_algorithm`, `store`, `domains`).
pub(super) fn read_file(text: &str, file: &str) -> Result<FileDoc, ConfigError> {
    let root = yaml::parse(text, file)?;
    let cx = Cx { file };
    let entries = match &root.kind {
        Kind::Map(entries) => entries,
        Kind::Null => {
            return Err(cx.error(
                None,
                "",
                "empty file: expected an envoy ratelimit domain file (domain: ...) or a sluice \
                 config file (domains: ...)",
            ));
        }
        _ => {
            return Err(cx.error(
                Some(root.line),
                "",
                format!(
                    "expected a mapping with domain: (an envoy ratelimit domain file) or \
                     domains: (a sluice config file), got {}",
                    root.describe()
                ),
            ));
        }
    };
    let is_sluice = entries.iter().any(|(key, _)| {
        yaml::key_text(key).is_some_and(|k| SLUICE_ROOT_KEYS.contains(&k.as_ref()))
    });
    if is_sluice {
        read_sluice_file(&cx, &root)
    } else {
        let domain = read_domain(&cx, &root, "", root_hint_envoy)?;
        Ok(FileDoc {
            file: file.to_owned(),
            settings: None,
            domains: vec![domain],
        })
    }
}

fn read_sluice_file(cx: &Cx<'_>, root: &Node) -> Result<FileDoc, ConfigError> {
    let fields = cx.fields(root, "", SLUICE_ROOT_KEYS, root_hint_sluice)?;
    let default_algorithm = fields
        .get("default_algorithm")
        .map(|node| cx.algorithm(node, "default_algorithm"))
        .transpose()?;
    let store = fields
        .get("store")
        .map(|node| read_store(cx, node))
        .transpose()?;
    // Where the settings are, for the error when another file of a directory sets them too.
    let settings = ["default_algorithm", "store"]
        .into_iter()
        .filter(|key| fields.get(key).is_some())
        .filter_map(|key| Some((fields.key_line(key)?, key)))
        .min()
        .map(|(line, field)| Settings {
            default_algorithm,
            store,
            line,
            field,
        });
    let mut domains = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    if let Some(list) = fields.get("domains") {
        for (i, node) in cx.list(list, "domains")?.iter().enumerate() {
            let prefix = format!("domains[{i}].");
            let domain = read_domain(cx, node, &prefix, |_| None)?;
            if let Some(first) = seen.insert(domain.name.clone(), domain.line) {
                return Err(cx.error(
                    Some(domain.line),
                    domain.field(),
                    format!(
                        "duplicate domain {:?} (also defined at line {first})",
                        domain.name
                    ),
                ));
            }
            domains.push(domain);
        }
    }
    Ok(FileDoc {
        file: cx.file.to_owned(),
        settings,
        domains,
    })
}

fn read_domain(
    cx: &Cx<'_>,
    node: &Node,
    prefix: &str,
    hint: fn(&str) -> Option<&'static str>,
) -> Result<DomainDoc, ConfigError> {
    let path = prefix.strip_suffix('.').unwrap_or(prefix);
    let fields = cx.fields(node, path, ENVOY_ROOT_KEYS, hint)?;
    let field = format!("{prefix}domain");
    let name_node = fields.get("domain").ok_or_else(|| {
        cx.error(
            Some(node.line),
            &field,
            "missing: every domain needs a name (domain: ...)",
        )
    })?;
    let name = cx.string(name_node, &field)?;
    if name.is_empty() {
        return Err(cx.error(Some(name_node.line), &field, "must not be empty"));
    }
    let descriptors = fields.get("descriptors").cloned();
    if let Some(list) = &descriptors {
        cx.list(list, &format!("{prefix}descriptors"))?;
    }
    Ok(DomainDoc {
        name,
        line: name_node.line,
        prefix: prefix.to_owned(),
        descriptors,
    })
}

fn read_store(cx: &Cx<'_>, node: &Node) -> Result<StoreConfig, ConfigError> {
    let fields = cx.fields(node, "store", STORE_KEYS, |_| None)?;
    let type_node = fields.get("type").ok_or_else(|| {
        cx.error(
            Some(node.line),
            "store.type",
            "missing (expected memory, redis or redis_cluster)",
        )
    })?;
    let kind = cx.string(type_node, "store.type")?;
    let redis_only = |key: &str| -> Result<(), ConfigError> {
        match fields.get(key) {
            Some(n) => Err(cx.error(
                Some(n.line),
                format!("store.{key}"),
                "applies to the redis and redis_cluster stores only",
            )),
            None => Ok(()),
        }
    };
    match kind.to_ascii_lowercase().replace('-', "_").as_str() {
        "memory" => {
            redis_only("url")?;
            redis_only("urls")?;
            redis_only("timeout")?;
            Ok(StoreConfig::Memory)
        }
        "redis" => {
            if let Some(n) = fields.get("urls") {
                return Err(cx.error(
                    Some(n.line),
                    "store.urls",
                    "type redis takes one url (urls is for type redis_cluster)",
                ));
            }
            let url_node = fields.get("url").ok_or_else(|| {
                cx.error(
                    Some(node.line),
                    "store.url",
                    "missing (e.g. url: redis://127.0.0.1:6379/)",
                )
            })?;
            let url = cx.redis_url(url_node, "store.url")?;
            Ok(StoreConfig::Redis {
                urls: vec![url],
                cluster: false,
                timeout: read_timeout(cx, fields.get("timeout"))?,
            })
        }
        "redis_cluster" => {
            if let Some(n) = fields.get("url") {
                return Err(cx.error(
                    Some(n.line),
                    "store.url",
                    "type redis_cluster takes a list of seed nodes under urls",
                ));
            }
            let urls_node = fields.get("urls").ok_or_else(|| {
                cx.error(
                    Some(node.line),
                    "store.urls",
                    "missing: the seed nodes of the cluster (e.g. urls: [redis://10.0.0.1:6379/])",
                )
            })?;
            let items = cx.list(urls_node, "store.urls")?;
            if items.is_empty() {
                return Err(cx.error(
                    Some(urls_node.line),
                    "store.urls",
                    "must list at least one seed node",
                ));
            }
            let urls = items
                .iter()
                .enumerate()
                .map(|(i, n)| cx.redis_url(n, &format!("store.urls[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(StoreConfig::Redis {
                urls,
                cluster: true,
                timeout: read_timeout(cx, fields.get("timeout"))?,
            })
        }
        _ => Err(cx.error(
            Some(type_node.line),
            "store.type",
            format!("unknown store type {kind:?} (expected memory, redis or redis_cluster)"),
        )),
    }
}

fn read_timeout(cx: &Cx<'_>, node: Option<&Node>) -> Result<Duration, ConfigError> {
    let Some(node) = node else {
        return Ok(DEFAULT_REDIS_TIMEOUT);
    };
    let text = cx.string(node, "store.timeout")?;
    let timeout = parse_duration(&text)
        .map_err(|err| cx.error(Some(node.line), "store.timeout", err.to_string()))?;
    if timeout.is_zero() {
        return Err(cx.error(Some(node.line), "store.timeout", "must be longer than zero"));
    }
    Ok(timeout)
}

/// Builds one domain's descriptor tree and rules.
pub(super) fn build_domain(
    ctx: BuildContext,
    file: &str,
    doc: &DomainDoc,
) -> Result<Domain, ConfigError> {
    let cx = Cx { file };
    let root = match &doc.descriptors {
        Some(list) => {
            let path = format!("{}descriptors", doc.prefix);
            build_level(&cx, ctx, cx.list(list, &path)?, &path, &doc.name, 1)?
        }
        None => Level::default(),
    };
    Ok(Domain {
        name: doc.name.clone(),
        file: file.to_owned(),
        line: doc.line,
        root,
    })
}

fn build_level(
    cx: &Cx<'_>,
    ctx: BuildContext,
    items: &[Node],
    path: &str,
    parent_id: &str,
    depth: usize,
) -> Result<Level, ConfigError> {
    let mut level = Level::default();
    // envoy ratelimit keys a level by `key` or `key_value` and refuses two descriptors with
    // the same one; that string is also the rule's id, so it must be unique here.
    let mut composites: HashMap<String, usize> = HashMap::new();
    for (i, node) in items.iter().enumerate() {
        let path = format!("{path}[{i}]");
        if depth > MAX_ENTRIES {
            return Err(cx.error(
                Some(node.line),
                &path,
                format!(
                    "descriptors nest {depth} levels deep, but a request descriptor has at most \
                     {MAX_ENTRIES} entries, so it could never match"
                ),
            ));
        }
        let fields = cx.fields(node, &path, DESCRIPTOR_KEYS, descriptor_hint)?;
        let key_field = format!("{path}.key");
        let key_node = fields.get("key").ok_or_else(|| {
            cx.error(
                Some(node.line),
                &key_field,
                "missing: every descriptor needs a key",
            )
        })?;
        let key = cx.string(key_node, &key_field)?;
        if key.is_empty() {
            return Err(cx.error(Some(key_node.line), &key_field, "must not be empty"));
        }
        let value_field = format!("{path}.value");
        let value = match fields.get("value") {
            Some(n) => Some(cx.string(n, &value_field)?).filter(|v| !v.is_empty()),
            None => None,
        };
        let composite = match &value {
            Some(value) => format!("{key}_{value}"),
            None => key.clone(),
        };
        let (at_line, at_field) = match fields.get("value") {
            Some(n) if value.is_some() => (n.line, value_field),
            _ => (key_node.line, key_field),
        };
        if let Some(first) = composites.insert(composite.clone(), at_line) {
            return Err(cx.error(
                Some(at_line),
                at_field,
                format!("duplicate descriptor {composite:?} at this level (also at line {first})"),
            ));
        }
        let id = format!("{parent_id}.{composite}");
        let shadow_mode = cx.opt_bool(fields.get("shadow_mode"), &format!("{path}.shadow_mode"))?;
        let detailed_metric = cx.opt_bool(
            fields.get("detailed_metric"),
            &format!("{path}.detailed_metric"),
        )?;
        let rule = match fields.get("rate_limit") {
            Some(n) => Some(Arc::new(build_rule(
                cx,
                ctx,
                n,
                &format!("{path}.rate_limit"),
                id.clone(),
                shadow_mode,
                detailed_metric,
            )?)),
            None => None,
        };
        let children = match fields.get("descriptors") {
            Some(list) => {
                let child_path = format!("{path}.descriptors");
                build_level(
                    cx,
                    ctx,
                    cx.list(list, &child_path)?,
                    &child_path,
                    &id,
                    depth + 1,
                )?
            }
            None => Level::default(),
        };
        let slot = level.push(Descriptor {
            key,
            value,
            rule,
            children,
        });
        if slot == Slot::Taken {
            // Unreachable: equal key and value means equal composite, refused above.
            return Err(cx.error(
                Some(at_line),
                &path,
                format!("duplicate descriptor {composite:?} at this level"),
            ));
        }
    }
    Ok(level)
}

fn build_rule(
    cx: &Cx<'_>,
    ctx: BuildContext,
    node: &Node,
    path: &str,
    id: String,
    shadow_mode: bool,
    detailed_metric: bool,
) -> Result<Rule, ConfigError> {
    let fields = cx.fields(node, path, RATE_LIMIT_KEYS, rate_limit_hint)?;
    let field = |key: &str| format!("{path}.{key}");
    let unlimited = cx.opt_bool(fields.get("unlimited"), &field("unlimited"))?;
    let name = match fields.get("name") {
        Some(n) => Some(cx.string(n, &field("name"))?).filter(|s| !s.is_empty()),
        None => None,
    };
    let mut replaces = Vec::new();
    if let Some(list) = fields.get("replaces") {
        for (i, item) in cx.list(list, &field("replaces"))?.iter().enumerate() {
            let item_path = format!("{path}.replaces[{i}]");
            let item_fields = cx.fields(item, &item_path, REPLACES_KEYS, |_| None)?;
            let name_field = format!("{item_path}.name");
            let replaced = match item_fields.get("name") {
                Some(n) => (cx.string(n, &name_field)?, n.line),
                None => (String::new(), item.line),
            };
            if replaced.0.is_empty() {
                return Err(cx.error(
                    Some(replaced.1),
                    name_field,
                    "missing: name the rule this one replaces",
                ));
            }
            if name.as_deref() == Some(replaced.0.as_str()) {
                return Err(cx.error(
                    Some(replaced.1),
                    name_field,
                    format!("a rule cannot replace itself ({:?})", replaced.0),
                ));
            }
            replaces.push(replaced.0);
        }
    }
    let on_store_error = match fields.get("on_store_error") {
        Some(n) => cx.failure_policy(n, &field("on_store_error"))?,
        None => FailurePolicy::default(),
    };
    if unlimited {
        for key in [
            "unit",
            "unit_multiplier",
            "algorithm",
            "burst",
            "on_store_error",
        ] {
            if let Some(n) = fields.get(key) {
                return Err(cx.error(
                    Some(n.line),
                    field(key),
                    "must not be set when unlimited is true",
                ));
            }
        }
        // envoy ratelimit ignores requests_per_unit on an unlimited rule; so does sluice.
        let requests_per_unit = match fields.get("requests_per_unit") {
            Some(n) => cx.uint(n, &field("requests_per_unit"))?,
            None => 0,
        };
        return Ok(Rule {
            id,
            name,
            unit: Unit::Second,
            requests_per_unit,
            unit_multiplier: 1,
            policy: None,
            blocked: false,
            shadow_mode,
            detailed_metric,
            replaces,
            on_store_error,
        });
    }

    let unit_node = fields.get("unit").ok_or_else(|| {
        cx.error(
            Some(node.line),
            field("unit"),
            format!("missing (expected {})", Unit::EXPECTED),
        )
    })?;
    let unit_text = cx.string(unit_node, &field("unit"))?;
    let unit = Unit::from_name(&unit_text).ok_or_else(|| {
        cx.error(
            Some(unit_node.line),
            field("unit"),
            format!("unknown unit {unit_text:?} (expected {})", Unit::EXPECTED),
        )
    })?;
    let rpu_node = fields.get("requests_per_unit").ok_or_else(|| {
        cx.error(
            Some(node.line),
            field("requests_per_unit"),
            "missing: how many requests each unit allows",
        )
    })?;
    let requests_per_unit = cx.uint(rpu_node, &field("requests_per_unit"))?;
    let multiplier_node = fields.get("unit_multiplier");
    let unit_multiplier = match multiplier_node {
        Some(n) => {
            let m = cx.uint(n, &field("unit_multiplier"))?;
            if m == 0 {
                return Err(cx.error(
                    Some(n.line),
                    field("unit_multiplier"),
                    "must be at least 1, got 0",
                ));
            }
            m
        }
        None => 1,
    };
    if requests_per_unit == 0 {
        // envoy ratelimit's way to refuse everything matching (e.g. a banned client).
        for key in ["algorithm", "burst"] {
            if let Some(n) = fields.get(key) {
                return Err(cx.error(
                    Some(n.line),
                    field(key),
                    "must not be set when requests_per_unit is 0 (the rule refuses every request)",
                ));
            }
        }
        return Ok(Rule {
            id,
            name,
            unit,
            requests_per_unit,
            unit_multiplier,
            policy: None,
            blocked: true,
            shadow_mode,
            detailed_metric,
            replaces,
            on_store_error,
        });
    }
    // The field at fault when the period is out of range.
    let (period_line, period_field) = match multiplier_node {
        Some(n) => (n.line, field("unit_multiplier")),
        None => (unit_node.line, field("unit")),
    };
    let algorithm = match fields.get("algorithm") {
        Some(n) => cx.algorithm(n, &field("algorithm"))?,
        None => ctx.default_algorithm,
    };
    let period_secs = unit.seconds().checked_mul(unit_multiplier).ok_or_else(|| {
        cx.error(
            Some(period_line),
            &period_field,
            format!("{unit_multiplier} × 1 {unit} is too long a period"),
        )
    })?;
    let rate =
        Rate::new(requests_per_unit, Duration::from_secs(period_secs)).map_err(
            |err| match err {
                PolicyError::PeriodTooLong(_) => cx.error(
                    Some(period_line),
                    &period_field,
                    format!(
                        "a period of {unit_multiplier} × 1 {unit} is longer than the maximum of \
                     about 146 years"
                    ),
                ),
                other => cx.error(
                    Some(rpu_node.line),
                    field("requests_per_unit"),
                    other.to_string(),
                ),
            },
        )?;
    let mut policy = Policy::new(algorithm, rate);
    let burst_node = fields.get("burst");
    if let Some(n) = burst_node {
        let burst = cx.uint(n, &field("burst"))?;
        policy = policy
            .with_burst(burst)
            .map_err(|err| cx.error(Some(n.line), field("burst"), err.to_string()))?;
    }
    if ctx.redis {
        let max = sluice_redis::MAX_SPAN_NANOS;
        if policy.period_nanos() >= max {
            return Err(cx.error(
                Some(period_line),
                &period_field,
                format!(
                    "a period of {unit_multiplier} × 1 {unit} is longer than the Redis store \
                     can hold (under 2^52 ns, about 52 days)"
                ),
            ));
        }
        let span = u128::from(policy.burst()) * u128::from(policy.emission_nanos());
        if span >= u128::from(max) {
            let (line, at) = match burst_node {
                Some(n) => (n.line, field("burst")),
                None => (rpu_node.line, field("requests_per_unit")),
            };
            return Err(cx.error(
                Some(line),
                at,
                format!(
                    "burst {} takes longer to refill than the Redis store can hold (under 2^52 \
                     ns, about 52 days)",
                    policy.burst()
                ),
            ));
        }
    }
    Ok(Rule {
        id,
        name,
        unit,
        requests_per_unit,
        unit_multiplier,
        policy: Some(policy),
        blocked: false,
        shadow_mode,
        detailed_metric,
        replaces,
        on_store_error,
    })
}

fn root_hint_envoy(key: &str) -> Option<&'static str> {
    match key {
        "store" | "default_algorithm" => Some(
            "an envoy domain file has only domain and descriptors; store and default_algorithm \
             go in a sluice config file, which lists its domains under domains:",
        ),
        _ => descriptor_or_rule_hint(key),
    }
}

fn root_hint_sluice(key: &str) -> Option<&'static str> {
    match key {
        "domain" | "descriptors" => Some(
            "a sluice config file lists its domains under domains:, each with its own domain \
             and descriptors",
        ),
        _ => None,
    }
}

fn descriptor_hint(key: &str) -> Option<&'static str> {
    RATE_LIMIT_KEYS
        .contains(&key)
        .then_some("it belongs inside the descriptor's rate_limit")
}

fn rate_limit_hint(key: &str) -> Option<&'static str> {
    DESCRIPTOR_KEYS
        .contains(&key)
        .then_some("it belongs to the descriptor, beside rate_limit")
}

fn descriptor_or_rule_hint(key: &str) -> Option<&'static str> {
    if DESCRIPTOR_KEYS.contains(&key) {
        Some("it belongs to a descriptor, inside descriptors:")
    } else if RATE_LIMIT_KEYS.contains(&key) {
        Some("it belongs inside a descriptor's rate_limit")
    } else {
        None
    }
}

/// The keys of one mapping, checked: no unknown keys, no duplicates.
struct Fields<'n> {
    /// Key, the key's line, value.
    entries: Vec<(String, usize, &'n Node)>,
}

impl<'n> Fields<'n> {
    /// The line of `key` itself (the value of a nested mapping starts a line below).
    fn key_line(&self, key: &str) -> Option<usize> {
        self.entries
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|&(_, line, _)| line)
    }

    /// The value of `key`, unless absent or null (YAML's way of leaving a field unset).
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|&(_, _, node)| node)
            .filter(|node| !matches!(node.kind, Kind::Null))
    }
}

/// The file being read, for errors.
struct Cx<'a> {
    file: &'a str,
}

impl Cx<'_> {
    fn error(
        &self,
        line: Option<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            line,
            field: field.into(),
            message: message.into(),
        }
    }

    fn fields<'n>(
        &self,
        node: &'n Node,
        path: &str,
        allowed: &[&str],
        hint: impl Fn(&str) -> Option<&'static str>,
    ) -> Result<Fields<'n>, ConfigError> {
        let Kind::Map(pairs) = &node.kind else {
            return Err(self.error(
                Some(node.line),
                path,
                format!("expected a mapping, got {}", node.describe()),
            ));
        };
        let mut entries: Vec<(String, usize, &'n Node)> = Vec::with_capacity(pairs.len());
        for (key_node, value) in pairs {
            let Some(key) = yaml::key_text(key_node) else {
                return Err(self.error(
                    Some(key_node.line),
                    path,
                    format!("expected a key name, got {}", key_node.describe()),
                ));
            };
            if !allowed.contains(&key.as_ref()) {
                let message = match hint(&key) {
                    Some(hint) => format!("unknown key {key:?}: {hint}"),
                    None => format!("unknown key {key:?} (expected {})", one_of(allowed)),
                };
                return Err(self.error(Some(key_node.line), path, message));
            }
            if let Some(&(_, first, _)) = entries.iter().find(|(k, _, _)| k == key.as_ref()) {
                return Err(self.error(
                    Some(key_node.line),
                    join(path, &key),
                    format!("duplicate key (also at line {first})"),
                ));
            }
            entries.push((key.into_owned(), key_node.line, value));
        }
        Ok(Fields { entries })
    }

    fn string(&self, node: &Node, field: &str) -> Result<String, ConfigError> {
        match &node.kind {
            Kind::Scalar(scalar) => Ok(scalar.text.clone()),
            _ => Err(self.error(
                Some(node.line),
                field,
                format!("expected a string, got {}", node.describe()),
            )),
        }
    }

    fn uint(&self, node: &Node, field: &str) -> Result<u64, ConfigError> {
        let bad = |message: String| self.error(Some(node.line), field, message);
        match &node.kind {
            Kind::Scalar(scalar) => match scalar.ty {
                ScalarType::Int(n) if n < 0 => Err(bad(format!("must not be negative, got {n}"))),
                ScalarType::Int(n) => u64::try_from(n)
                    .map_err(|_| bad(format!("{} is too large (at most {})", n, u64::MAX))),
                ScalarType::Float if scalar.text.bytes().all(|b| b.is_ascii_digit()) => Err(bad(
                    format!("{} is too large (at most {})", scalar.text, u64::MAX),
                )),
                _ => Err(bad(format!(
                    "expected a whole number, got {}",
                    node.describe()
                ))),
            },
            _ => Err(bad(format!(
                "expected a whole number, got {}",
                node.describe()
            ))),
        }
    }

    fn opt_bool(&self, node: Option<&Node>, field: &str) -> Result<bool, ConfigError> {
        let Some(node) = node else {
            return Ok(false);
        };
        match &node.kind {
            Kind::Scalar(scalar) => match scalar.ty {
                ScalarType::Bool(b) => Ok(b),
                _ => Err(self.error(
                    Some(node.line),
                    field,
                    format!("expected true or false, got {}", node.describe()),
                )),
            },
            _ => Err(self.error(
                Some(node.line),
                field,
                format!("expected true or false, got {}", node.describe()),
            )),
        }
    }

    fn list<'n>(&self, node: &'n Node, field: &str) -> Result<&'n [Node], ConfigError> {
        match &node.kind {
            Kind::Seq(items) => Ok(items),
            Kind::Null => Ok(&[]),
            _ => Err(self.error(
                Some(node.line),
                field,
                format!("expected a list, got {}", node.describe()),
            )),
        }
    }

    fn algorithm(&self, node: &Node, field: &str) -> Result<AlgorithmKind, ConfigError> {
        let text = self.string(node, field)?;
        AlgorithmKind::from_str(&text)
            .map_err(|err| self.error(Some(node.line), field, err.to_string()))
    }

    fn failure_policy(&self, node: &Node, field: &str) -> Result<FailurePolicy, ConfigError> {
        let text = self.string(node, field)?;
        match text.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "fail_open" => Ok(FailurePolicy::FailOpen),
            "fail_closed" => Ok(FailurePolicy::FailClosed),
            "local" => Ok(FailurePolicy::Local),
            _ => Err(self.error(
                Some(node.line),
                field,
                format!(
                    "unknown failure policy {text:?} (expected fail_open, fail_closed or local)"
                ),
            )),
        }
    }

    fn redis_url(&self, node: &Node, field: &str) -> Result<String, ConfigError> {
        let url = self.string(node, field)?;
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("redis" | "rediss" | "redis+unix" | "unix") => Ok(url),
            _ => Err(self.error(
                Some(node.line),
                field,
                format!(
                    "expected a redis://, rediss:// or unix:// URL, got {:?}",
                    redact_url(&url)
                ),
            )),
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// `a, b or c`.
fn one_of(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}
