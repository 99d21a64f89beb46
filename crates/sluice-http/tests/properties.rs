//! Round trips (everything the encoders emit parses back to the same values) and
//! robustness (no parser panics on any text).

use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use sluice_core::{Decision, Policy, Rate};
use sluice_http::{
    HeaderError, HeaderStyle, LegacyHeaders, LimitItem, MAX_IMF_UNIX_SECS, PolicyItem, RetryAfter,
    SF_INTEGER_MAX, encode_limit_header, encode_policy_header, parse_limit_header,
    parse_policy_header, problem_json, read_limit_header, read_policy_header, write_headers,
};

/// Names as the encoders accept them: printable ASCII, quotes and backslashes included.
fn name() -> impl Strategy<Value = String> {
    "[ -~]{0,12}"
}

fn number() -> impl Strategy<Value = u64> {
    prop_oneof![0..=100u64, 0..=SF_INTEGER_MAX]
}

fn decision() -> impl Strategy<Value = Decision> {
    (
        1..=1_000_000u64,
        0..=1_000_000u64,
        0..=10_000_000_000u64,
        proptest::option::of(0..=10_000_000_000u64),
    )
        .prop_map(|(limit, remaining, reset, retry)| match retry {
            Some(retry) => Decision::deny(
                limit,
                remaining.min(limit),
                Duration::from_nanos(reset),
                Duration::from_nanos(retry),
            ),
            None => Decision::allow(limit, remaining.min(limit), Duration::from_nanos(reset)),
        })
}

fn policy() -> impl Strategy<Value = Policy> {
    (1..=1000u64, 1_000_000..=86_400_000_000_000u64).prop_filter_map("valid rate", |(l, p)| {
        Rate::new(l, Duration::from_nanos(p)).ok().map(Policy::gcra)
    })
}

/// A Malformed error's part must be a piece of what was parsed.
fn check_error(input: &str, err: &HeaderError) {
    if let HeaderError::Malformed { part, .. } = err {
        assert!(input.contains(part.as_str()), "{part:?} not in {input:?}");
    }
}

proptest! {
    #[test]
    fn policy_items_round_trip(items in proptest::collection::vec((name(), number(), number()), 0..5)) {
        let items: Vec<PolicyItem> = items
            .into_iter()
            .map(|(name, quota, window_secs)| PolicyItem { name, quota, window_secs })
            .collect();
        let text = encode_policy_header(&items).expect("printable names encode");
        prop_assert_eq!(parse_policy_header(&text), Ok(items));
    }

    #[test]
    fn limit_items_round_trip(items in proptest::collection::vec((name(), number(), number()), 0..5)) {
        let items: Vec<LimitItem> = items
            .into_iter()
            .map(|(name, remaining, reset_secs)| LimitItem { name, remaining, reset_secs })
            .collect();
        let text = encode_limit_header(&items).expect("printable names encode");
        prop_assert_eq!(parse_limit_header(&text), Ok(items));
    }

    #[test]
    fn written_headers_read_back(
        entries in proptest::collection::vec((name(), policy(), decision()), 1..4),
    ) {
        let items: Vec<(&str, &Policy, &Decision)> =
            entries.iter().map(|(n, p, d)| (n.as_str(), p, d)).collect();
        let mut headers = HeaderMap::new();
        write_headers(&mut headers, HeaderStyle::Both, &items).expect("printable names");
        let policies = read_policy_header(&headers).expect("own header parses");
        let limits = read_limit_header(&headers).expect("own header parses");
        prop_assert_eq!(policies.len(), entries.len());
        for ((name, policy, decision), (p, l)) in entries.iter().zip(policies.iter().zip(&limits)) {
            prop_assert_eq!(p, &PolicyItem::new(name.as_str(), policy, decision));
            prop_assert_eq!(l, &LimitItem::new(name.as_str(), decision));
            prop_assert_eq!(p.quota, decision.limit);
            prop_assert_eq!(l.remaining, decision.remaining);
            prop_assert!(Duration::from_secs(l.reset_secs) >= decision.reset_after);
            prop_assert!(Duration::from_secs(l.reset_secs) < decision.reset_after + Duration::from_secs(1));
        }
        let decisions: Vec<Decision> = entries.iter().map(|(_, _, d)| *d).collect();
        let worst = Decision::most_restrictive(&decisions).expect("non-empty");
        prop_assert_eq!(LegacyHeaders::read(&headers), Ok(Some(LegacyHeaders::new(&worst))));
        let wait = decisions.iter().filter(|d| !d.allowed).filter_map(|d| d.retry_after).max();
        match (wait, headers.get(http::header::RETRY_AFTER)) {
            (None, None) => {}
            (Some(wait), Some(value)) => {
                let parsed = RetryAfter::parse(value.to_str().expect("ascii"));
                let Ok(RetryAfter::Delay(delay)) = parsed else {
                    return Err(TestCaseError::fail(format!("{parsed:?}")));
                };
                prop_assert!(delay >= wait && delay < wait + Duration::from_secs(1));
            }
            (wait, value) => prop_assert!(false, "{wait:?} vs {value:?}"),
        }
        let names: Vec<&str> = entries.iter().filter(|(_, _, d)| !d.allowed).map(|(n, _, _)| n.as_str()).collect();
        let named: Vec<(&str, &Decision)> = items.iter().map(|(n, _, d)| (*n, *d)).collect();
        prop_assert_eq!(&problem_json(&named)["violated-policies"], &serde_json::json!(names));
    }

    #[test]
    fn retry_after_round_trips(secs in any::<u64>(), unix_secs in 0..=MAX_IMF_UNIX_SECS) {
        let delay = RetryAfter::Delay(Duration::from_secs(secs));
        prop_assert_eq!(RetryAfter::parse(&delay.to_string()), Ok(delay));
        let at = RetryAfter::At { unix_secs };
        prop_assert_eq!(RetryAfter::parse(&at.to_string()), Ok(at));
    }

    #[test]
    fn legacy_round_trips(limit in any::<u64>(), remaining in any::<u64>(), reset_secs in any::<u64>()) {
        let legacy = LegacyHeaders { limit, remaining, reset_secs };
        let [l, r, t] = legacy.encode();
        prop_assert_eq!(LegacyHeaders::parse(&l, &r, &t), Ok(legacy));
    }

    #[test]
    fn parsers_never_panic_on_any_text(text in "\\PC{0,40}|[ -~]{0,40}") {
        for result in [
            parse_policy_header(&text).map(|items| {
                let again = encode_policy_header(&items).expect("parsed names encode");
                assert_eq!(parse_policy_header(&again), Ok(items));
            }),
            parse_limit_header(&text).map(|items| {
                let again = encode_limit_header(&items).expect("parsed names encode");
                assert_eq!(parse_limit_header(&again), Ok(items));
            }),
            RetryAfter::parse(&text).map(|r| assert_eq!(RetryAfter::parse(&r.to_string()), Ok(r))),
            LegacyHeaders::parse(&text, &text, &text).map(|_| ()),
        ] {
            if let Err(err) = result {
                check_error(&text, &err);
            }
        }
    }

    #[test]
    fn structured_field_like_text_never_panics(
        text in r#"[ \t,;=":?()a-zA-Z0-9\\.*-]{0,40}"#,
    ) {
        for result in [
            parse_policy_header(&text).map(|items| {
                let again = encode_policy_header(&items).expect("parsed names encode");
                assert_eq!(parse_policy_header(&again), Ok(items));
            }),
            parse_limit_header(&text).map(|items| {
                let again = encode_limit_header(&items).expect("parsed names encode");
                assert_eq!(parse_limit_header(&again), Ok(items));
            }),
        ] {
            if let Err(err) = result {
                check_error(&text, &err);
            }
        }
    }

    #[test]
    fn header_maps_with_any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        if let Ok(value) = HeaderValue::from_bytes(&bytes) {
            let mut headers = HeaderMap::new();
            headers.append(sluice_http::RATELIMIT, value.clone());
            headers.append(sluice_http::RATELIMIT_POLICY, value.clone());
            headers.append(sluice_http::X_RATELIMIT_LIMIT, value);
            let _ = read_limit_header(&headers);
            let _ = read_policy_header(&headers);
            let _ = LegacyHeaders::read(&headers);
        }
    }
}

#[test]
fn write_headers_styles() {
    let p = Policy::parse("gcra", "100/min").expect("valid");
    let ok = Decision::allow(100, 99, Duration::from_millis(600));
    let refused = Decision::deny(10, 0, Duration::from_secs(5), Duration::from_millis(1500));
    let items = [("a", &p, &ok), ("b", &p, &refused)];

    let mut headers = HeaderMap::new();
    write_headers(&mut headers, HeaderStyle::Off, &items).expect("valid");
    assert_eq!(headers.len(), 1);
    assert_eq!(headers["retry-after"], "2");

    let mut headers = HeaderMap::new();
    write_headers(&mut headers, HeaderStyle::Legacy, &items).expect("valid");
    assert_eq!(headers["x-ratelimit-limit"], "10");
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    assert_eq!(headers["x-ratelimit-reset"], "5");
    assert!(headers.get("ratelimit").is_none());

    let mut headers = HeaderMap::new();
    write_headers(&mut headers, HeaderStyle::Both, &items).expect("valid");
    assert_eq!(
        headers["ratelimit-policy"],
        r#""a";q=100;w=60, "b";q=10;w=60"#
    );
    assert_eq!(headers["ratelimit"], r#""a";r=99;t=1, "b";r=0;t=5"#);
    assert_eq!(headers.len(), 6);

    let mut headers = HeaderMap::new();
    write_headers(&mut headers, HeaderStyle::Ietf, &[("a", &p, &ok)]).expect("valid");
    assert_eq!(headers.len(), 2, "no Retry-After when allowed");

    let mut headers = HeaderMap::new();
    let err = write_headers(&mut headers, HeaderStyle::Ietf, &[("b\u{0}", &p, &refused)]);
    assert!(matches!(err, Err(HeaderError::InvalidName { name, .. }) if name == "b\u{0}"));
    assert!(headers.is_empty());
}
