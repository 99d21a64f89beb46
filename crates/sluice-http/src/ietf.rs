//! The IETF `RateLimit-Policy` and `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers),
//! in their structured-field List form.
//!
//! ```text
//! RateLimit-Policy: "per-user";q=100;w=60, "global";q=5000;w=1
//! RateLimit: "per-user";r=0;t=30, "global";r=4999;t=1
//! ```

use http::HeaderMap;
use sluice_core::{Decision, Policy};

use crate::error::{HeaderError, part};
use crate::sf::{self, Bare, Item, SF_INTEGER_MAX};
use crate::{RATELIMIT, RATELIMIT_POLICY, ceil_secs, joined};

const POLICY_HEADER: &str = "RateLimit-Policy";
const LIMIT_HEADER: &str = "RateLimit";

/// One `RateLimit-Policy` item: a named quota of `quota` units per `window_secs` seconds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PolicyItem {
    /// The policy's name, sent as an sf-string.
    pub name: String,
    /// Quota units per window (`q`).
    pub quota: u64,
    /// The window in seconds (`w`).
    pub window_secs: u64,
}

impl PolicyItem {
    /// The item for a limit named `name`: the quota is `decision.limit` (the capacity
    /// `remaining` counts against), the window is the policy's period in whole seconds,
    /// rounded up and at least 1.
    pub fn new(name: impl Into<String>, policy: &Policy, decision: &Decision) -> Self {
        Self {
            name: name.into(),
            quota: decision.limit,
            window_secs: policy.period_nanos().div_ceil(1_000_000_000).max(1),
        }
    }
}

/// One `RateLimit` item: what is left of a named policy and when it is whole again.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LimitItem {
    /// The policy's name, matching a [`PolicyItem`].
    pub name: String,
    /// Units remaining (`r`).
    pub remaining: u64,
    /// Seconds until the quota is back to full (`t`).
    pub reset_secs: u64,
}

impl LimitItem {
    /// The item for a limit named `name`: `decision.remaining`, and `decision.reset_after`
    /// in whole seconds rounded up (so a client that waits `t` seconds is never early).
    pub fn new(name: impl Into<String>, decision: &Decision) -> Self {
        Self {
            name: name.into(),
            remaining: decision.remaining,
            reset_secs: ceil_secs(decision.reset_after),
        }
    }
}

/// Encodes a `RateLimit-Policy` value, one item per policy: `"name";q=100;w=60`.
///
/// Numbers above [`SF_INTEGER_MAX`] (the largest 15-digit sf-integer) are sent as that
/// maximum. An empty slice gives an empty string (send no header then).
///
/// # Errors
/// [`HeaderError::InvalidName`] when a name holds a control or non-ASCII character.
pub fn encode_policy_header(items: &[PolicyItem]) -> Result<String, HeaderError> {
    encode(
        items
            .iter()
            .map(|i| (i.name.as_str(), [("q", i.quota), ("w", i.window_secs)])),
    )
}

/// Encodes a `RateLimit` value, one item per policy: `"name";r=0;t=30`.
///
/// Numbers above [`SF_INTEGER_MAX`] are sent as that maximum. An empty slice gives an
/// empty string.
///
/// # Errors
/// [`HeaderError::InvalidName`] when a name holds a control or non-ASCII character.
pub fn encode_limit_header(items: &[LimitItem]) -> Result<String, HeaderError> {
    encode(
        items
            .iter()
            .map(|i| (i.name.as_str(), [("r", i.remaining), ("t", i.reset_secs)])),
    )
}

/// Both fields for `(name, policy, decision)` triples, encoded straight from the decisions
/// (no intermediate items): the hot path of middleware answering every request.
pub(crate) fn encode_both(
    items: &[(&str, &Policy, &Decision)],
) -> Result<(String, String), HeaderError> {
    let policies = encode(items.iter().map(|(name, policy, decision)| {
        let window = policy.period_nanos().div_ceil(1_000_000_000).max(1);
        (*name, [("q", decision.limit), ("w", window)])
    }))?;
    let limits = encode(items.iter().map(|(name, _, decision)| {
        let reset = ceil_secs(decision.reset_after);
        (*name, [("r", decision.remaining), ("t", reset)])
    }))?;
    Ok((policies, limits))
}

fn encode<'a>(
    items: impl ExactSizeIterator<Item = (&'a str, [(&'static str, u64); 2])>,
) -> Result<String, HeaderError> {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(items.len() * 40);
    for (index, (name, params)) in items.enumerate() {
        if index > 0 {
            out.push_str(", ");
        }
        sf::write_string(&mut out, name).map_err(|reason| HeaderError::InvalidName {
            name: name.to_owned(),
            reason,
        })?;
        for (key, value) in params {
            // Writing into a String cannot fail.
            let _ = write!(out, ";{key}={}", value.min(SF_INTEGER_MAX));
        }
    }
    Ok(out)
}

/// Parses a `RateLimit-Policy` value (several header lines joined with `,`).
///
/// Each item's bare item (the name) may be an sf-string or a token; `q` and `w` are
/// required non-negative integers; other parameters (`qu`, `pk`, …) are ignored.
///
/// # Errors
/// A [`HeaderError`] naming the malformed part or the missing parameter.
pub fn parse_policy_header(value: &str) -> Result<Vec<PolicyItem>, HeaderError> {
    parse(POLICY_HEADER, value, |item, name| {
        Ok(PolicyItem {
            name,
            quota: number(POLICY_HEADER, item, "q")?,
            window_secs: number(POLICY_HEADER, item, "w")?,
        })
    })
}

/// Parses a `RateLimit` value (several header lines joined with `,`).
///
/// `r` and `t` are required non-negative integers; other parameters are ignored.
///
/// # Errors
/// A [`HeaderError`] naming the malformed part or the missing parameter.
pub fn parse_limit_header(value: &str) -> Result<Vec<LimitItem>, HeaderError> {
    parse(LIMIT_HEADER, value, |item, name| {
        Ok(LimitItem {
            name,
            remaining: number(LIMIT_HEADER, item, "r")?,
            reset_secs: number(LIMIT_HEADER, item, "t")?,
        })
    })
}

/// Reads every `RateLimit-Policy` line of `headers`; no header is an empty list.
///
/// # Errors
/// As [`parse_policy_header`], or when a line is not visible ASCII.
pub fn read_policy_header(headers: &HeaderMap) -> Result<Vec<PolicyItem>, HeaderError> {
    match joined(headers, &RATELIMIT_POLICY, POLICY_HEADER)? {
        Some(value) => parse_policy_header(&value),
        None => Ok(Vec::new()),
    }
}

/// Reads every `RateLimit` line of `headers`; no header is an empty list.
///
/// # Errors
/// As [`parse_limit_header`], or when a line is not visible ASCII.
pub fn read_limit_header(headers: &HeaderMap) -> Result<Vec<LimitItem>, HeaderError> {
    match joined(headers, &RATELIMIT, LIMIT_HEADER)? {
        Some(value) => parse_limit_header(&value),
        None => Ok(Vec::new()),
    }
}

fn parse<T>(
    header: &'static str,
    value: &str,
    build: impl Fn(&Item, String) -> Result<T, HeaderError>,
) -> Result<Vec<T>, HeaderError> {
    let items = sf::parse_list(value).map_err(|err| HeaderError::Malformed {
        header,
        part: part(&err.rest),
        reason: err.reason,
    })?;
    items
        .iter()
        .map(|item| {
            let name = match &item.bare {
                Bare::String(s) | Bare::Token(s) => s.clone(),
                _ => {
                    return Err(HeaderError::Malformed {
                        header,
                        part: part(&item.text),
                        reason: "the policy name must be a string or a token",
                    });
                }
            };
            build(item, name)
        })
        .collect()
}

fn number(header: &'static str, item: &Item, key: &'static str) -> Result<u64, HeaderError> {
    match item.param(key) {
        None => Err(HeaderError::MissingParameter {
            header,
            item: part(&item.text),
            param: key,
        }),
        Some(Bare::Integer(n)) => u64::try_from(*n).map_err(|_| HeaderError::Malformed {
            header,
            part: part(&item.text),
            reason: "parameter must not be negative",
        }),
        Some(_) => Err(HeaderError::Malformed {
            header,
            part: part(&item.text),
            reason: "parameter must be an integer",
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sluice_core::Rate;

    use super::*;

    fn policy(limit: u64, period: Duration) -> Policy {
        Policy::gcra(Rate::new(limit, period).expect("valid rate"))
    }

    #[test]
    fn encodes_policy_and_limit_items() {
        let p = policy(100, Duration::from_secs(60));
        let refused = Decision::deny(
            100,
            0,
            Duration::from_millis(29_001),
            Duration::from_millis(600),
        );
        let g = policy(5000, Duration::from_millis(1500));
        let allowed = Decision::allow(5000, 4999, Duration::from_millis(300));
        let policies = [
            PolicyItem::new("per-user", &p, &refused),
            PolicyItem::new("glo\"bal\\", &g, &allowed),
        ];
        assert_eq!(
            encode_policy_header(&policies),
            Ok(r#""per-user";q=100;w=60, "glo\"bal\\";q=5000;w=2"#.to_owned())
        );
        let limits = [
            LimitItem::new("per-user", &refused),
            LimitItem::new("glo\"bal\\", &allowed),
        ];
        assert_eq!(
            encode_limit_header(&limits),
            Ok(r#""per-user";r=0;t=30, "glo\"bal\\";r=4999;t=1"#.to_owned())
        );
        assert_eq!(encode_limit_header(&[]), Ok(String::new()));
    }

    #[test]
    fn window_is_at_least_one_second_and_reset_zero_stays_zero() {
        let p = policy(3, Duration::from_millis(500));
        let d = Decision::allow(3, 3, Duration::ZERO);
        assert_eq!(PolicyItem::new("a", &p, &d).window_secs, 1);
        assert_eq!(LimitItem::new("a", &d).reset_secs, 0);
    }

    #[test]
    fn huge_numbers_are_clamped_to_the_largest_sf_integer() {
        let item = LimitItem {
            name: "a".into(),
            remaining: u64::MAX,
            reset_secs: 1,
        };
        assert_eq!(
            encode_limit_header(&[item]),
            Ok(r#""a";r=999999999999999;t=1"#.to_owned())
        );
    }

    #[test]
    fn names_with_control_or_non_ascii_characters_are_refused() {
        for name in ["tab\there", "caf\u{e9}", "nl\n"] {
            let item = PolicyItem {
                name: name.into(),
                quota: 1,
                window_secs: 1,
            };
            match encode_policy_header(&[item]) {
                Err(HeaderError::InvalidName { name: n, .. }) => assert_eq!(n, name),
                other => panic!("{name:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn parses_tokens_unknown_parameters_and_whitespace() {
        let value =
            "  per-user;q=100;w=60;qu=\"requests\";pk=:YWJj:;x=1.5;flag ,\t\"b c\";w=1;q=2  ";
        assert_eq!(
            parse_policy_header(value),
            Ok(vec![
                PolicyItem {
                    name: "per-user".into(),
                    quota: 100,
                    window_secs: 60
                },
                PolicyItem {
                    name: "b c".into(),
                    quota: 2,
                    window_secs: 1
                },
            ])
        );
        assert_eq!(parse_limit_header(""), Ok(vec![]));
    }

    #[test]
    fn reads_multiple_header_lines() {
        let mut headers = HeaderMap::new();
        headers.append(&RATELIMIT, http::HeaderValue::from_static("\"a\";r=1;t=2"));
        headers.append(&RATELIMIT, http::HeaderValue::from_static("\"b\";r=3;t=4"));
        let items = read_limit_header(&headers).expect("valid");
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].name, "b");
        assert_eq!(read_policy_header(&headers), Ok(vec![]));
    }

    #[test]
    fn errors_name_the_bad_part() {
        let cases = [
            ("\"a\";r=1;t=2,", "trailing ','", ""),
            ("\"a\";r=1;t=2 \"b\"", "expected ','", "\"b\""),
            ("\"a\";r=-1;t=2", "negative", "\"a\";r=-1;t=2"),
            ("\"a\";r=1.5;t=2", "integer", "\"a\";r=1.5;t=2"),
            (
                "\"a\";r=1234567890123456;t=2",
                "15 digits",
                "1234567890123456;t=2",
            ),
            ("\"a;r=1", "unterminated", "\"a;r=1"),
            ("(\"a\");r=1", "inner lists", "(\"a\");r=1"),
            ("1;r=1;t=1", "name", "1;r=1;t=1"),
            ("\"a\";R=1", "parameter key", "R=1"),
            ("\"caf\u{e9}\";r=1", "non-ASCII", "\u{e9}\";r=1"),
        ];
        for (input, reason, bad) in cases {
            match parse_limit_header(input) {
                Err(HeaderError::Malformed {
                    part, reason: r, ..
                }) => {
                    assert!(r.contains(reason), "{input}: {r}");
                    assert_eq!(part, bad, "{input}");
                }
                other => panic!("{input}: {other:?}"),
            }
        }
        assert_eq!(
            parse_limit_header("\"a\";r=1"),
            Err(HeaderError::MissingParameter {
                header: "RateLimit",
                item: "\"a\";r=1".into(),
                param: "t"
            })
        );
    }
}
