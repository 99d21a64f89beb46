//! The JSON body of `sluice serve`'s `POST /v1/check`: what a client asks
//! ([`CheckRequest`]) and what the server answers ([`CheckResponse`]), one copy for both
//! sides (feature `check-json`).
//!
//! Strings are `Cow`s: a client encodes a request from borrowed text without copying it,
//! and decoding always yields owned text, so `CheckRequest<'static>` is what a server
//! decodes (`DeserializeOwned`). A request is decoded strictly (an unknown field is an
//! error, since the server must not ignore what a client meant); an answer leniently
//! (unknown fields are ignored and the fields a client does not need may be missing), so an
//! older client still reads a newer server's answers.
//!
//! Field names follow Envoy's `RateLimitRequest` and `RateLimitResponse`. Bounds (how many
//! descriptors, entries, hits) are the server's to enforce, not this module's.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// `overall_code` or `code` of a request that may pass.
pub const CODE_OK: &str = "OK";
/// `overall_code` or `code` of a request that is refused.
pub const CODE_OVER_LIMIT: &str = "OVER_LIMIT";

/// "May these descriptors of `domain` pass, at `hits` units each?"
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest<'a> {
    /// The configuration domain, e.g. `api`.
    pub domain: Cow<'a, str>,
    /// One or more descriptors, each checked against the rule it matches.
    pub descriptors: Vec<Descriptor<'a>>,
    /// Units each descriptor adds; absent or 0 means 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hits: Option<u64>,
}

/// One descriptor: an ordered list of entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Descriptor<'a> {
    /// The entries, outermost first.
    pub entries: Vec<Entry<'a>>,
    /// Units this descriptor adds, overriding the request's `hits`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hits: Option<u64>,
}

/// One `key`/`value` entry of a descriptor (`value` may be omitted: empty).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry<'a> {
    /// The entry's key.
    pub key: Cow<'a, str>,
    /// The entry's value.
    #[serde(default)]
    pub value: Cow<'a, str>,
}

impl CheckRequest<'_> {
    /// Units descriptor `i` adds: its own `hits`, else the request's, with absent or 0
    /// meaning 1.
    pub fn hits_of(&self, i: usize) -> u64 {
        let own = self.descriptors.get(i).and_then(|d| d.hits);
        match own.or(self.hits) {
            None | Some(0) => 1,
            Some(n) => n,
        }
    }
}

/// The answer to a [`CheckRequest`]: `OVER_LIMIT` when any enforcing limit refuses (then
/// none is debited), else `OK`; one status per descriptor, in request order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResponse<'a> {
    /// [`CODE_OK`] or [`CODE_OVER_LIMIT`] (a client treats anything else as no answer).
    pub overall_code: Cow<'a, str>,
    /// One per descriptor.
    pub statuses: Vec<Status<'a>>,
}

/// The answer for one descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status<'a> {
    /// [`CODE_OK`] or [`CODE_OVER_LIMIT`].
    pub code: Cow<'a, str>,
    /// The rule that decided; `null` when none did (no rule matched, or it is unlimited).
    pub limit: Option<Limit<'a>>,
    /// Units left in the current window.
    pub limit_remaining: u64,
    /// Milliseconds until the limit is whole again, rounded up.
    pub duration_until_reset_ms: u64,
    /// When over the limit: milliseconds until the same request may pass, rounded up;
    /// `null` when no wait helps, or when allowed.
    pub retry_after_ms: Option<u64>,
}

/// A rule as an answer shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit<'a> {
    /// Requests per `unit_multiplier` units.
    pub requests_per_unit: u64,
    /// `second`, `minute`, `hour`, `day`, ...
    pub unit: Cow<'a, str>,
    /// How many `unit`s the window spans; omitted when 1.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub unit_multiplier: u64,
    /// The rule's name, if it has one.
    pub name: Option<Cow<'a, str>>,
    /// How it counts (`gcra`, `sliding_window`, ..., or `blocked`).
    #[serde(default)]
    pub algorithm: Cow<'a, str>,
    /// Whether the rule only observes (it never refuses); omitted when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow_mode: bool,
}

fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> CheckRequest<'static> {
        serde_json::from_str(json).expect("a request")
    }

    #[test]
    fn hits_default_to_one_and_descriptors_override() {
        let r = request(
            r#"{"domain":"a","descriptors":[{"entries":[{"key":"k"}]},{"entries":[{"key":"k"}],"hits":5}],"hits":0}"#,
        );
        assert_eq!((r.hits_of(0), r.hits_of(1), r.hits_of(2)), (1, 5, 1));
        let r = request(r#"{"domain":"a","descriptors":[{"entries":[{"key":"k"}]}],"hits":3}"#);
        assert_eq!(r.hits_of(0), 3);
    }

    #[test]
    fn requests_are_strict() {
        let err = serde_json::from_str::<CheckRequest<'_>>(
            r#"{"domain":"a","descriptors":[{"entries":[{"key":"k","valeu":"v"}]}]}"#,
        )
        .expect_err("unknown field");
        assert!(err.to_string().contains("unknown field `valeu`"), "{err}");
        let err = serde_json::from_str::<CheckRequest<'_>>(r#"{"domain":"a"}"#)
            .expect_err("missing field");
        assert!(
            err.to_string().contains("missing field `descriptors`"),
            "{err}"
        );
    }

    #[test]
    fn requests_encode_as_the_server_reads_them() {
        let body = CheckRequest {
            domain: "api".into(),
            descriptors: vec![Descriptor {
                entries: vec![Entry {
                    key: "user".into(),
                    value: "42".into(),
                }],
                hits: None,
            }],
            hits: Some(2),
        };
        assert_eq!(
            serde_json::to_string(&body).expect("encodes"),
            r#"{"domain":"api","descriptors":[{"entries":[{"key":"user","value":"42"}]}],"hits":2}"#
        );
    }

    #[test]
    fn answers_are_lenient() {
        let json = r#"{"overall_code":"OK","statuses":[{"code":"OK",
            "limit":{"requests_per_unit":1,"unit":"hour","future":1},
            "limit_remaining":0,"duration_until_reset_ms":5}],"future":true}"#;
        let answer: CheckResponse<'_> = serde_json::from_str(json).expect("parses");
        let limit = answer.statuses[0].limit.as_ref().expect("a limit");
        assert_eq!((limit.unit_multiplier, limit.shadow_mode), (1, false));
        assert_eq!((limit.name.as_deref(), &*limit.algorithm), (None, ""));
        assert_eq!(answer.statuses[0].retry_after_ms, None);
    }
}
