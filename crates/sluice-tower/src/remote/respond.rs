//! A server's answer as the client sees it: the rate limit headers of an admitted
//! response, or the layer's own `429`.
//!
//! The numbers are the server's, so nothing can be built once per layer as the local
//! layer does: every value is encoded per answer, by sluice-http's encoders, and lands in
//! the same [`Stamp`] and problem response as the local layer's.

use std::sync::Arc;

use http::header::RETRY_AFTER;
use http::{HeaderValue, Response, StatusCode};
use sluice_core::Decision;
use sluice_http::{
    HeaderStyle, LegacyHeaders, LimitItem, PolicyItem, encode_limit_header, encode_policy_header,
    problem_body,
};

use super::check::Answer;
use crate::body::ResponseBody;
use crate::headers::{Prebuilt, Stamp};
use crate::service::problem;

/// One limit the server decided with a rule: what its header items say.
struct Item<'a> {
    name: &'a str,
    units: u64,
    window_secs: u64,
    decision: Decision,
}

/// The items of `answer`, named after the layer's limits (`names`, one per descriptor).
/// A descriptor no rule decided has none.
fn items<'a>(names: &'a [Arc<str>], answer: &Answer) -> Vec<Item<'a>> {
    names
        .iter()
        .zip(&answer.statuses)
        .filter_map(|(name, status)| {
            let quota = status.quota?;
            Some(Item {
                name,
                units: quota.units,
                window_secs: quota.window_secs,
                decision: status.decision(),
            })
        })
        .collect()
}

/// The headers for `answer` in `style`: IETF items per decided limit, the legacy values of
/// the most restrictive decision, as `sluice_http::write_headers` writes them.
pub(crate) fn stamp(style: HeaderStyle, names: &[Arc<str>], answer: &Answer) -> Stamp {
    let items = items(names, answer);
    if items.is_empty() {
        return Stamp::Off;
    }
    let ietf = || {
        let policies: Vec<PolicyItem> = items
            .iter()
            .map(|i| PolicyItem {
                name: i.name.to_owned(),
                quota: i.units,
                window_secs: i.window_secs,
            })
            .collect();
        let limits: Vec<LimitItem> = items
            .iter()
            .map(|i| LimitItem::new(i.name, &i.decision))
            .collect();
        // The names were checked to encode when the limits were added.
        let policy = encode_policy_header(&policies).ok()?;
        let limit = encode_limit_header(&limits).ok()?;
        Some([value(policy)?, value(limit)?])
    };
    let legacy = || {
        let decision = items
            .iter()
            .map(|i| i.decision)
            .reduce(|a, b| Decision::most_restrictive(&[a, b]).unwrap_or(a))?;
        let [limit, remaining, reset] = LegacyHeaders::new(&decision).encode();
        Some([value(limit)?, value(remaining)?, value(reset)?])
    };
    match style {
        HeaderStyle::Off => Stamp::Off,
        HeaderStyle::Ietf => ietf().map_or(Stamp::Off, Stamp::Ietf),
        HeaderStyle::Legacy => legacy().map_or(Stamp::Off, Stamp::Legacy),
        HeaderStyle::Both => match (ietf(), legacy()) {
            (Some([p, l]), Some([a, b, c])) => Stamp::Both(Box::new([p, l, a, b, c])),
            (Some(ietf), None) => Stamp::Ietf(ietf),
            (None, Some(legacy)) => Stamp::Legacy(legacy),
            (None, None) => Stamp::Off,
        },
    }
}

/// The layer's `429` for a refusing `answer`: the problem body naming the limits over
/// their rules, `Retry-After` (the longest wait the server gave) and the headers of
/// [`stamp`].
pub(crate) fn refused<B>(
    style: HeaderStyle,
    names: &[Arc<str>],
    answer: &Answer,
) -> Response<ResponseBody<B>> {
    let decisions: Vec<Decision> = answer.statuses.iter().map(|s| s.decision()).collect();
    let items: Vec<(&str, &Decision)> = names
        .iter()
        .zip(&decisions)
        .map(|(name, decision)| (&**name, decision))
        .collect();
    let (_, body) = problem_body(&items);
    let mut response = problem(StatusCode::TOO_MANY_REQUESTS, body);
    stamp(style, names, answer).write(response.headers_mut());
    if let Some(retry_after) = Prebuilt::retry_after(&decisions) {
        response.headers_mut().insert(RETRY_AFTER, retry_after);
    }
    response
}

fn value(text: String) -> Option<HeaderValue> {
    HeaderValue::try_from(text).ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::HeaderMap;
    use sluice_http::write_headers;

    use super::super::check::{Quota, Status};
    use super::*;

    fn limited(remaining: u64, over_limit: bool) -> Status {
        Status {
            over_limit,
            quota: Some(Quota {
                units: 5,
                window_secs: 60,
            }),
            remaining,
            reset_after: Duration::from_millis(48_500),
            retry_after: over_limit.then_some(Duration::from_millis(11_500)),
        }
    }

    const UNMATCHED: Status = Status {
        over_limit: false,
        quota: None,
        remaining: 0,
        reset_after: Duration::ZERO,
        retry_after: None,
    };

    /// The same bytes as sluice-http's `write_headers` for the limits a rule decided.
    #[test]
    fn writes_what_sluice_http_writes() {
        let names: Vec<Arc<str>> = ["per-ip", "all", "per-key"].map(Arc::from).to_vec();
        let answer = Answer {
            over_limit: false,
            statuses: vec![limited(3, false), UNMATCHED, limited(0, false)],
        };
        let policy = sluice_core::Policy::parse("gcra", "5/min").expect("valid");
        for style in [
            HeaderStyle::Off,
            HeaderStyle::Ietf,
            HeaderStyle::Legacy,
            HeaderStyle::Both,
        ] {
            let (a, b) = (answer.statuses[0].decision(), answer.statuses[2].decision());
            let mut expected = HeaderMap::new();
            write_headers(
                &mut expected,
                style,
                &[("per-ip", &policy, &a), ("per-key", &policy, &b)],
            )
            .expect("valid names");
            let mut actual = HeaderMap::new();
            stamp(style, &names, &answer).write(&mut actual);
            assert_eq!(actual, expected, "{style:?}");
        }
    }

    #[test]
    fn no_rule_no_headers() {
        let names: Vec<Arc<str>> = vec![Arc::from("all")];
        let answer = Answer {
            over_limit: false,
            statuses: vec![UNMATCHED],
        };
        let mut headers = HeaderMap::new();
        stamp(HeaderStyle::Both, &names, &answer).write(&mut headers);
        assert!(headers.is_empty(), "{headers:?}");
    }

    #[test]
    fn a_refusal_names_the_limits_over_their_rules() {
        let names: Vec<Arc<str>> = ["per-ip", "per-key"].map(Arc::from).to_vec();
        let answer = Answer {
            over_limit: true,
            statuses: vec![limited(2, false), limited(0, true)],
        };
        let response = refused::<()>(HeaderStyle::Ietf, &names, &answer);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[RETRY_AFTER], "12");
        assert_eq!(
            response.headers()["ratelimit"],
            r#""per-ip";r=2;t=49, "per-key";r=0;t=49"#
        );
    }
}
