//! The loaded configuration as JSON, for `GET /v1/limits`. Secrets stay out: a password in
//! a Redis URL is replaced by `***`.

use serde_json::{Map, Value, json};
use sluice_store::FailurePolicy;

use super::tree::{Domain, Level};
use super::{Config, Rule, StoreConfig};

pub(super) fn config(config: &Config) -> Value {
    let mut domains: Vec<&Domain> = config.domains.values().collect();
    domains.sort_by(|a, b| a.name.cmp(&b.name));
    json!({
        "default_algorithm": config.default_algorithm.name(),
        "store": store(&config.store),
        "sources": config
            .sources
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>(),
        "domains": domains.iter().map(|d| domain(d)).collect::<Vec<_>>(),
    })
}

pub(super) fn store(store: &StoreConfig) -> Value {
    match store {
        StoreConfig::Memory => json!({ "type": "memory" }),
        StoreConfig::Redis {
            urls,
            cluster,
            timeout,
        } => {
            let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            let urls: Vec<String> = urls.iter().map(|u| redact_url(u)).collect();
            if *cluster {
                json!({ "type": "redis_cluster", "urls": urls, "timeout_ms": timeout_ms })
            } else {
                json!({
                    "type": "redis",
                    "url": urls.first().cloned().unwrap_or_default(),
                    "timeout_ms": timeout_ms,
                })
            }
        }
    }
}

fn domain(domain: &Domain) -> Value {
    json!({
        "domain": domain.name,
        "file": domain.file,
        "descriptors": level(&domain.root),
    })
}

fn level(descriptors: &Level) -> Vec<Value> {
    descriptors
        .descriptors
        .iter()
        .map(|d| {
            let mut out = Map::new();
            out.insert("key".into(), d.key.clone().into());
            if let Some(value) = &d.value {
                out.insert("value".into(), value.clone().into());
            }
            if let Some(r) = &d.rule {
                out.insert("rate_limit".into(), rule(r));
            }
            if !d.children.is_empty() {
                out.insert("descriptors".into(), level(&d.children).into());
            }
            Value::Object(out)
        })
        .collect()
}

fn rule(rule: &Rule) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), rule.id.clone().into());
    out.insert(
        "name".into(),
        rule.name.clone().map_or(Value::Null, Value::from),
    );
    out.insert("unlimited".into(), rule.is_unlimited().into());
    if rule.blocked {
        out.insert("blocked".into(), true.into());
        out.insert("unit".into(), rule.unit.name().into());
        out.insert("requests_per_unit".into(), 0.into());
    }
    if let Some(policy) = &rule.policy {
        out.insert("unit".into(), rule.unit.name().into());
        out.insert("requests_per_unit".into(), rule.requests_per_unit.into());
        out.insert("unit_multiplier".into(), rule.unit_multiplier.into());
        out.insert("period_seconds".into(), rule.period().as_secs().into());
        out.insert("algorithm".into(), policy.algorithm().name().into());
        out.insert("burst".into(), policy.burst().into());
    }
    out.insert("shadow_mode".into(), rule.shadow_mode.into());
    out.insert("detailed_metric".into(), rule.detailed_metric.into());
    out.insert("replaces".into(), rule.replaces.clone().into());
    out.insert(
        "on_store_error".into(),
        failure_policy_name(rule.on_store_error).into(),
    );
    Value::Object(out)
}

/// The configuration name of a failure policy.
pub(super) fn failure_policy_name(policy: FailurePolicy) -> &'static str {
    match policy {
        FailurePolicy::FailOpen => "fail_open",
        FailurePolicy::FailClosed => "fail_closed",
        FailurePolicy::Local => "local",
    }
}

/// `url` with the password of its user info (and any `password=` query parameter)
/// replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = redact_query_password(tail);
    match scheme {
        Some(scheme) => format!("{scheme}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}

fn redact_query_password(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if name.eq_ignore_ascii_case("password") => format!("{name}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    let mut out = format!("{path}?{}", query.join("&"));
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}
