//! The legacy `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` headers.
//!
//! sluice writes `X-RateLimit-Reset` as seconds until the reset (as `RateLimit`'s `t`);
//! some upstreams send a Unix time there instead, which only the caller can tell apart.

use http::HeaderMap;
use sluice_core::Decision;

use crate::error::{HeaderError, part};
use crate::{X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING, X_RATELIMIT_RESET, ceil_secs, joined};

/// The three legacy header values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LegacyHeaders {
    /// `X-RateLimit-Limit`: the capacity.
    pub limit: u64,
    /// `X-RateLimit-Remaining`: units left.
    pub remaining: u64,
    /// `X-RateLimit-Reset`: seconds until full capacity, rounded up.
    pub reset_secs: u64,
}

impl LegacyHeaders {
    /// The values for one decision (pick the one to report with
    /// [`Decision::most_restrictive`] when a request has several limits).
    pub fn new(decision: &Decision) -> Self {
        Self {
            limit: decision.limit,
            remaining: decision.remaining,
            reset_secs: ceil_secs(decision.reset_after),
        }
    }

    /// The three values as decimal strings, in the order limit, remaining, reset.
    pub fn encode(&self) -> [String; 3] {
        [
            self.limit.to_string(),
            self.remaining.to_string(),
            self.reset_secs.to_string(),
        ]
    }

    /// Parses the three values (each a whole number, surrounding spaces ignored).
    ///
    /// # Errors
    /// [`HeaderError::Malformed`] naming the header and the bad value.
    pub fn parse(limit: &str, remaining: &str, reset: &str) -> Result<Self, HeaderError> {
        Ok(Self {
            limit: parse_number("X-RateLimit-Limit", limit)?,
            remaining: parse_number("X-RateLimit-Remaining", remaining)?,
            reset_secs: parse_number("X-RateLimit-Reset", reset)?,
        })
    }

    /// Reads the three headers from `headers`: `None` when none is present.
    ///
    /// # Errors
    /// [`HeaderError::Missing`] when only some are present, [`HeaderError::Malformed`]
    /// when a value is not a whole number (several lines of one header are refused).
    pub fn read(headers: &HeaderMap) -> Result<Option<Self>, HeaderError> {
        let names = [
            (&X_RATELIMIT_LIMIT, "X-RateLimit-Limit"),
            (&X_RATELIMIT_REMAINING, "X-RateLimit-Remaining"),
            (&X_RATELIMIT_RESET, "X-RateLimit-Reset"),
        ];
        let mut values = Vec::with_capacity(3);
        for (name, label) in names {
            values.push((joined(headers, name, label)?, label));
        }
        if values.iter().all(|(v, _)| v.is_none()) {
            return Ok(None);
        }
        let mut texts = Vec::with_capacity(3);
        for (value, label) in values {
            texts.push(value.ok_or(HeaderError::Missing { header: label })?);
        }
        match texts.as_slice() {
            [limit, remaining, reset] => Self::parse(limit, remaining, reset).map(Some),
            _ => Ok(None),
        }
    }
}

/// Parses one whole number of up to 20 digits that fits a `u64`.
fn parse_number(header: &'static str, value: &str) -> Result<u64, HeaderError> {
    let text = value.trim_matches([' ', '\t']);
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HeaderError::Malformed {
            header,
            part: part(text),
            reason: "not a whole number",
        });
    }
    text.parse().map_err(|_| HeaderError::Malformed {
        header,
        part: part(text),
        reason: "number too large",
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::HeaderValue;

    use super::*;

    #[test]
    fn encodes_a_decision() {
        let d = Decision::deny(
            10,
            0,
            Duration::from_millis(4500),
            Duration::from_millis(450),
        );
        let legacy = LegacyHeaders::new(&d);
        assert_eq!(legacy.encode(), ["10".to_owned(), "0".into(), "5".into()]);
    }

    #[test]
    fn parses_and_reads() {
        assert_eq!(
            LegacyHeaders::parse("10", " 3 ", "60"),
            Ok(LegacyHeaders {
                limit: 10,
                remaining: 3,
                reset_secs: 60
            })
        );
        let mut headers = HeaderMap::new();
        assert_eq!(LegacyHeaders::read(&headers), Ok(None));
        headers.insert(&X_RATELIMIT_LIMIT, HeaderValue::from_static("10"));
        assert_eq!(
            LegacyHeaders::read(&headers),
            Err(HeaderError::Missing {
                header: "X-RateLimit-Remaining"
            })
        );
        headers.insert(&X_RATELIMIT_REMAINING, HeaderValue::from_static("1"));
        headers.insert(&X_RATELIMIT_RESET, HeaderValue::from_static("2"));
        assert_eq!(
            LegacyHeaders::read(&headers),
            Ok(Some(LegacyHeaders {
                limit: 10,
                remaining: 1,
                reset_secs: 2
            }))
        );
    }

    #[test]
    fn bad_values_name_the_header_and_part() {
        assert_eq!(
            LegacyHeaders::parse("10", "-1", "60"),
            Err(HeaderError::Malformed {
                header: "X-RateLimit-Remaining",
                part: "-1".into(),
                reason: "not a whole number"
            })
        );
        assert_eq!(
            LegacyHeaders::parse("10", "1", "99999999999999999999"),
            Err(HeaderError::Malformed {
                header: "X-RateLimit-Reset",
                part: "99999999999999999999".into(),
                reason: "number too large"
            })
        );
    }
}
