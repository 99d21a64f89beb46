//! sluice-http: pure codecs for rate limit HTTP headers and 429 bodies.
//!
//! It encodes a [`Decision`] (with its [`Policy`] and a name) into the IETF httpapi
//! `RateLimit-Policy` and `RateLimit` structured fields ([`encode_policy_header`],
//! [`encode_limit_header`]), the legacy `X-RateLimit-*` headers ([`LegacyHeaders`]) and
//! `Retry-After` ([`encode_retry_after`]); [`write_headers`] puts the chosen set into an
//! [`http::HeaderMap`], and [`problem_body`] renders the RFC 9457 `application/problem+json`
//! body of a 429. Every encoder has a parser that reads back exactly what it writes
//! ([`parse_policy_header`], [`parse_limit_header`], [`RetryAfter::parse`],
//! [`LegacyHeaders::parse`]) and accepts what other servers send in those forms, so that
//! the outbound side can learn an upstream's limits from the same code. Malformed input is
//! a [`HeaderError`] naming the bad part, never a panic.
//!
//! This crate is not middleware and not a client: it does no I/O, has no async runtime and
//! never reads a clock (an HTTP-date is returned as Unix seconds, and
//! [`RetryAfter::delay_from`] takes the current time from the caller). [`UpstreamSignals`]
//! reads an upstream's response on top of these parsers: OpenAI, Anthropic, IETF and legacy
//! rate limit headers, `Retry-After`, `retry-after-ms` and `x-should-retry`, normalised into
//! one snapshot per response.
//!
//! [`prometheus`] writes the Prometheus text format of sluice's `/metrics` endpoints. With
//! the `check-json` feature, the `check` module holds the JSON body of `sluice serve`'s
//! `POST /v1/check`, one copy for the server that decodes requests and the clients that
//! send them.
//!
//! ```
//! use std::time::Duration;
//! use http::HeaderMap;
//! use sluice_core::{Decision, Policy};
//! use sluice_http::{HeaderStyle, write_headers};
//!
//! let policy = Policy::parse("gcra", "100/min").unwrap();
//! let refused = Decision::deny(100, 0, Duration::from_secs(30), Duration::from_millis(600));
//! let mut headers = HeaderMap::new();
//! write_headers(&mut headers, HeaderStyle::Ietf, &[("per-user", &policy, &refused)]).unwrap();
//! assert_eq!(headers["ratelimit-policy"], r#""per-user";q=100;w=60"#);
//! assert_eq!(headers["ratelimit"], r#""per-user";r=0;t=30"#);
//! assert_eq!(headers["retry-after"], "1");
//! ```

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use sluice_core::{Decision, Policy};

#[cfg(feature = "check-json")]
pub mod check;
mod error;
mod ietf;
mod legacy;
mod problem;
pub mod prometheus;
mod retry_after;
mod sf;
mod upstream;

pub use error::{HeaderError, MAX_PART_LEN};
pub use ietf::{
    LimitItem, PolicyItem, encode_limit_header, encode_policy_header, parse_limit_header,
    parse_policy_header, read_limit_header, read_policy_header,
};
pub use legacy::LegacyHeaders;
pub use problem::{PROBLEM_CONTENT_TYPE, PROBLEM_TYPE, problem_body, problem_json};
pub use retry_after::{MAX_IMF_UNIX_SECS, RetryAfter, encode_retry_after};
pub use sf::SF_INTEGER_MAX;
pub use upstream::{
    Dimension, Families, Family, LEGACY_EPOCH_THRESHOLD_SECS, MAX_SIGNAL_DURATION, UpstreamSignals,
    encode_go_duration,
};

/// `RateLimit-Policy` (lowercase, as HTTP/2 sends it).
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// `X-RateLimit-Limit`.
pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining`.
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset`.
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Which rate limit headers [`write_headers`] writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HeaderStyle {
    /// None (only `Retry-After` on a refusal).
    Off,
    /// `RateLimit-Policy` and `RateLimit`.
    #[default]
    Ietf,
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`.
    Legacy,
    /// Both sets.
    Both,
}

/// Writes the headers for a request decided against `items` (name, policy, decision),
/// replacing any already in `headers`.
///
/// - IETF: one `RateLimit-Policy` and one `RateLimit` item per entry, in order.
/// - Legacy: the values of [`Decision::most_restrictive`] of the decisions.
/// - Whatever the style: `Retry-After` with the largest `retry_after` of the refused
///   entries (rounded up to whole seconds), when any refused entry has one.
///
/// Nothing is written for an empty slice.
///
/// # Errors
/// [`HeaderError::InvalidName`] when an IETF-style name holds a control or non-ASCII
/// character; `headers` is left untouched then.
pub fn write_headers(
    headers: &mut HeaderMap,
    style: HeaderStyle,
    items: &[(&str, &Policy, &Decision)],
) -> Result<(), HeaderError> {
    let mut out: Vec<(HeaderName, String)> = Vec::with_capacity(6);
    if matches!(style, HeaderStyle::Ietf | HeaderStyle::Both) && !items.is_empty() {
        let (policies, limits) = ietf::encode_both(items)?;
        out.push((RATELIMIT_POLICY, policies));
        out.push((RATELIMIT, limits));
    }
    if matches!(style, HeaderStyle::Legacy | HeaderStyle::Both) {
        let most_restrictive = items
            .iter()
            .map(|(_, _, d)| **d)
            .reduce(|a, b| Decision::most_restrictive(&[a, b]).unwrap_or(a));
        if let Some(decision) = most_restrictive {
            let [limit, remaining, reset] = LegacyHeaders::new(&decision).encode();
            out.push((X_RATELIMIT_LIMIT, limit));
            out.push((X_RATELIMIT_REMAINING, remaining));
            out.push((X_RATELIMIT_RESET, reset));
        }
    }
    let wait = items
        .iter()
        .filter(|(_, _, d)| !d.allowed)
        .filter_map(|(_, _, d)| d.retry_after)
        .max();
    if let Some(wait) = wait {
        out.push((http::header::RETRY_AFTER, encode_retry_after(wait)));
    }
    let mut values = Vec::with_capacity(out.len());
    for (name, text) in out {
        // Takes the String's buffer as it is: no copy.
        let value = HeaderValue::from_maybe_shared(bytes::Bytes::from(text)).map_err(|_| {
            HeaderError::InvalidName {
                name: name.as_str().to_owned(),
                reason: "not a valid header value",
            }
        })?;
        values.push((name, value));
    }
    for (name, value) in values {
        headers.insert(name, value);
    }
    Ok(())
}

/// Whole seconds in `d`, rounded up.
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

/// Every line of header `name` joined with `, `, or `None` when absent.
pub(crate) fn joined(
    headers: &HeaderMap,
    name: &HeaderName,
    label: &'static str,
) -> Result<Option<String>, HeaderError> {
    let mut out: Option<String> = None;
    for value in headers.get_all(name) {
        let text = value.to_str().map_err(|_| HeaderError::Malformed {
            header: label,
            part: error::part(&String::from_utf8_lossy(value.as_bytes())),
            reason: "value is not visible ASCII",
        })?;
        match &mut out {
            Some(all) => {
                all.push_str(", ");
                all.push_str(text);
            }
            None => out = Some(text.to_owned()),
        }
    }
    Ok(out)
}
