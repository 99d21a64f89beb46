//! `UpstreamSignals::read` on real-looking responses of each header family, sentinels,
//! malformed values and precedence; property tests that no header value panics it and that
//! OpenAI-style, legacy and Anthropic headers written from generated numbers read back.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use proptest::prelude::*;
use sluice_core::Nanos;
use sluice_core::time::parse_duration;
use sluice_http::{
    Dimension, Families, Family, HeaderError, LEGACY_EPOCH_THRESHOLD_SECS, LegacyHeaders,
    MAX_PART_LEN, MAX_SIGNAL_DURATION, UpstreamSignals, encode_go_duration,
};

const OK: StatusCode = StatusCode::OK;
const TOO_MANY: StatusCode = StatusCode::TOO_MANY_REQUESTS;

fn at(unix_secs: u64) -> Nanos {
    Nanos::new(unix_secs * 1_000_000_000)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("valid name"),
            HeaderValue::from_str(value).expect("valid value"),
        );
    }
    map
}

fn dim(
    source: Family,
    limit: Option<u64>,
    remaining: Option<u64>,
    reset_after: Option<Duration>,
) -> Dimension {
    Dimension {
        limit,
        remaining,
        reset_after,
        window: None,
        source: Some(source),
    }
}

fn families(list: &[Family]) -> Families {
    list.iter().copied().collect()
}

/// The (header, reason) of every ignored value.
fn ignored(signals: &UpstreamSignals) -> Vec<(&'static str, &'static str)> {
    signals
        .ignored
        .iter()
        .map(|err| match err {
            HeaderError::Malformed { header, reason, .. } => (*header, *reason),
            HeaderError::MissingParameter { header, .. } => (*header, "missing parameter"),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// OpenAI

#[test]
fn openai_documented_example() {
    // The sample values of OpenAI's rate limits guide, "Rate limits in headers".
    let h = headers(&[
        ("x-ratelimit-limit-requests", "60"),
        ("x-ratelimit-limit-tokens", "150000"),
        ("x-ratelimit-remaining-requests", "59"),
        ("x-ratelimit-remaining-tokens", "149984"),
        ("x-ratelimit-reset-requests", "1s"),
        ("x-ratelimit-reset-tokens", "6m0s"),
    ]);
    let s = UpstreamSignals::read(OK, &h, at(1_700_000_000));
    assert_eq!(
        s.requests,
        dim(Family::OpenAi, Some(60), Some(59), Some(secs(1)))
    );
    assert_eq!(
        s.tokens,
        dim(
            Family::OpenAi,
            Some(150_000),
            Some(149_984),
            Some(secs(360))
        )
    );
    assert_eq!(s.input_tokens, Dimension::default());
    assert_eq!(s.output_tokens, Dimension::default());
    assert_eq!(s.retry_after, None);
    assert_eq!(s.should_retry, None);
    assert_eq!(s.seen, families(&[Family::OpenAi]));
    assert!(s.ignored.is_empty());
    assert_eq!(s.status, OK);
}

#[test]
fn openai_recorded_response_with_extra_headers() {
    // As quoted from a real chat completions response (community.openai.com), with the
    // `_usage_based` variants this parser does not read.
    let h = headers(&[
        ("date", "Mon, 26 May 2025 05:00:04 GMT"),
        ("x-ratelimit-limit-requests", "5000"),
        ("x-ratelimit-limit-tokens", "160000"),
        ("x-ratelimit-limit-tokens_usage_based", "160000"),
        ("x-ratelimit-remaining-requests", "4999"),
        ("x-ratelimit-remaining-tokens", "159976"),
        ("x-ratelimit-remaining-tokens_usage_based", "159976"),
        ("x-ratelimit-reset-requests", "12ms"),
        ("x-ratelimit-reset-tokens", "9ms"),
        ("x-ratelimit-reset-tokens_usage_based", "9ms"),
    ]);
    let s = UpstreamSignals::read(OK, &h, at(1_748_235_604));
    assert_eq!(
        s.requests,
        dim(Family::OpenAi, Some(5000), Some(4999), Some(ms(12)))
    );
    assert_eq!(
        s.tokens,
        dim(Family::OpenAi, Some(160_000), Some(159_976), Some(ms(9)))
    );
    assert!(s.ignored.is_empty());
}

#[test]
fn openai_rate_limited_response() {
    let h = headers(&[
        ("x-ratelimit-limit-requests", "500"),
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-reset-requests", "1h2m3.5s"),
        ("x-ratelimit-limit-tokens", "30000"),
        ("x-ratelimit-remaining-tokens", "0"),
        ("x-ratelimit-reset-tokens", "20ms"),
        ("retry-after-ms", "1234.5"),
        ("retry-after", "2"),
        ("x-should-retry", "true"),
    ]);
    let s = UpstreamSignals::read(TOO_MANY, &h, at(1_700_000_000));
    assert_eq!(
        s.requests,
        dim(Family::OpenAi, Some(500), Some(0), Some(ms(3_723_500)))
    );
    assert!(s.requests.is_exhausted());
    assert_eq!(s.tokens.reset_after, Some(ms(20)));
    assert_eq!(s.retry_after, Some(Duration::from_micros(1_234_500)));
    assert_eq!(s.should_retry, Some(true));
    assert_eq!(
        s.seen,
        families(&[
            Family::OpenAi,
            Family::RetryAfterMs,
            Family::RetryAfter,
            Family::ShouldRetry
        ])
    );
    assert_eq!(s.status, TOO_MANY);
    assert_eq!(s.suggested_wait(), Some(Duration::from_micros(1_234_500)));
}

#[test]
fn azure_sentinels_leave_a_dimension_unknown() {
    // Azure OpenAI's Responses API: -1, -1 and 0 for tokens, and no Retry-After.
    let h = headers(&[
        ("x-ratelimit-limit-requests", "100"),
        ("x-ratelimit-remaining-requests", "99"),
        ("x-ratelimit-limit-tokens", "-1"),
        ("x-ratelimit-remaining-tokens", "-1"),
        ("x-ratelimit-reset-tokens", "0"),
    ]);
    let s = UpstreamSignals::read(OK, &h, at(1_700_000_000));
    assert_eq!(s.requests, dim(Family::OpenAi, Some(100), Some(99), None));
    assert_eq!(
        s.tokens,
        Dimension::default(),
        "a zero reset alone is dropped"
    );
    assert!(s.ignored.is_empty(), "sentinels are not malformed");
    assert!(s.seen.contains(Family::OpenAi));
}

#[test]
fn azure_bare_second_resets() {
    let h = headers(&[
        ("x-ratelimit-remaining-tokens", "0"),
        ("x-ratelimit-reset-tokens", "34"),
    ]);
    let s = UpstreamSignals::read(TOO_MANY, &h, at(1_700_000_000));
    assert_eq!(s.tokens, dim(Family::OpenAi, None, Some(0), Some(secs(34))));
    assert_eq!(s.suggested_wait(), Some(secs(34)));
}

// ---------------------------------------------------------------------------------------
// Anthropic

/// A successful Messages API response as recorded in tidyllm's test fixtures.
fn anthropic_recorded() -> HeaderMap {
    headers(&[
        ("date", "Thu, 21 Aug 2025 12:41:00 GMT"),
        ("anthropic-ratelimit-input-tokens-limit", "80000"),
        ("anthropic-ratelimit-input-tokens-remaining", "80000"),
        (
            "anthropic-ratelimit-input-tokens-reset",
            "2025-08-21T12:40:59Z",
        ),
        ("anthropic-ratelimit-output-tokens-limit", "16000"),
        ("anthropic-ratelimit-output-tokens-remaining", "16000"),
        (
            "anthropic-ratelimit-output-tokens-reset",
            "2025-08-21T12:41:00Z",
        ),
        ("anthropic-ratelimit-requests-limit", "1000"),
        ("anthropic-ratelimit-requests-remaining", "999"),
        ("anthropic-ratelimit-requests-reset", "2025-08-21T12:40:59Z"),
        ("anthropic-ratelimit-tokens-limit", "96000"),
        ("anthropic-ratelimit-tokens-remaining", "96000"),
        ("anthropic-ratelimit-tokens-reset", "2025-08-21T12:40:59Z"),
        ("request-id", "req_011CSLsW7mFqvHHnzrKdKjAE"),
    ])
}

/// 2025-08-21T12:40:00Z.
const ANTHROPIC_NOW: u64 = 1_755_780_000;

#[test]
fn anthropic_recorded_response() {
    let s = UpstreamSignals::read(OK, &anthropic_recorded(), at(ANTHROPIC_NOW));
    let a = Family::Anthropic;
    assert_eq!(s.requests, dim(a, Some(1000), Some(999), Some(secs(59))));
    assert_eq!(s.tokens, dim(a, Some(96_000), Some(96_000), Some(secs(59))));
    assert_eq!(
        s.input_tokens,
        dim(a, Some(80_000), Some(80_000), Some(secs(59)))
    );
    assert_eq!(
        s.output_tokens,
        dim(a, Some(16_000), Some(16_000), Some(secs(60)))
    );
    assert_eq!(s.seen, families(&[a]));
    assert!(s.ignored.is_empty());

    // Read at the response's own Date, every reset has passed or is now.
    let later = UpstreamSignals::read(OK, &anthropic_recorded(), at(ANTHROPIC_NOW + 60));
    for (name, d) in later.dimensions() {
        assert_eq!(d.reset_after, Some(Duration::ZERO), "{name}");
    }
}

#[test]
fn anthropic_rate_limited_with_offsets_and_fractions() {
    let h = headers(&[
        ("anthropic-ratelimit-requests-limit", "50"),
        ("anthropic-ratelimit-requests-remaining", "12"),
        (
            "anthropic-ratelimit-requests-reset",
            "2025-08-21T14:40:01.25+02:00",
        ),
        ("anthropic-ratelimit-output-tokens-limit", "8000"),
        ("anthropic-ratelimit-output-tokens-remaining", "0"),
        (
            "anthropic-ratelimit-output-tokens-reset",
            "2025-08-21T12:40:30Z",
        ),
        ("retry-after", "30"),
    ]);
    let s = UpstreamSignals::read(TOO_MANY, &h, at(ANTHROPIC_NOW));
    assert_eq!(
        s.requests,
        dim(Family::Anthropic, Some(50), Some(12), Some(ms(1250)))
    );
    assert!(s.output_tokens.is_exhausted());
    assert_eq!(s.output_tokens.reset_after, Some(secs(30)));
    assert_eq!(s.tokens, Dimension::default());
    assert_eq!(s.retry_after, Some(secs(30)));
}

// ---------------------------------------------------------------------------------------
// IETF and legacy

#[test]
fn ietf_fields_pick_the_tightest_request_policy() {
    let h = headers(&[
        (
            "ratelimit-policy",
            r#""burst";q=100;w=60, "daily";q=1000;w=86400"#,
        ),
        ("ratelimit", r#""burst";r=50;t=30, "daily";r=5;t=3600"#),
    ]);
    let s = UpstreamSignals::read(OK, &h, at(1_700_000_000));
    assert_eq!(
        s.requests,
        Dimension {
            limit: Some(1000),
            remaining: Some(5),
            reset_after: Some(secs(3600)),
            window: Some(secs(86_400)),
            source: Some(Family::Ietf),
        }
    );
    assert_eq!(s.tokens, Dimension::default());
    assert_eq!(s.seen, families(&[Family::Ietf]));
}

#[test]
fn ietf_ties_go_to_the_latest_reset_and_other_units_are_skipped() {
    let h = headers(&[
        (
            "ratelimit-policy",
            r#""a";q=10;w=1, "b";q=20;w=10;qu="requests", "bytes";q=5;w=1;qu="content-bytes""#,
        ),
        ("ratelimit", r#""a";r=0;t=1, "b";r=0;t=7, "bytes";r=0;t=99"#),
    ]);
    let s = UpstreamSignals::read(TOO_MANY, &h, at(1_700_000_000));
    assert_eq!(s.requests.limit, Some(20));
    assert_eq!(s.requests.reset_after, Some(secs(7)));
    assert_eq!(s.suggested_wait(), Some(secs(7)));
}

#[test]
fn ietf_without_a_matching_policy_or_without_ratelimit() {
    let h = headers(&[("ratelimit", r#""x";r=3;t=2"#)]);
    let s = UpstreamSignals::read(OK, &h, at(1_700_000_000));
    assert_eq!(s.requests, dim(Family::Ietf, None, Some(3), Some(secs(2))));

    let h = headers(&[("ratelimit-policy", r#""m";q=600;w=60, "h";q=10000;w=3600"#)]);
    let s = UpstreamSignals::read(OK, &h, at(1_700_000_000));
    assert_eq!(
        s.requests,
        Dimension {
            limit: Some(600),
            window: Some(secs(60)),
            source: Some(Family::Ietf),
            ..Dimension::default()
        }
    );
}

#[test]
fn legacy_resets_as_delay_or_unix_time() {
    // GitHub's documented example: a Unix time.
    let h = headers(&[
        ("x-ratelimit-limit", "60"),
        ("x-ratelimit-remaining", "56"),
        ("x-ratelimit-reset", "1372700873"),
    ]);
    let s = UpstreamSignals::read(OK, &h, at(1_372_700_000));
    assert_eq!(
        s.requests,
        dim(Family::Legacy, Some(60), Some(56), Some(secs(873)))
    );
    assert_eq!(s.seen, families(&[Family::Legacy]));

    let h = headers(&[
        ("X-RateLimit-Limit", "10"),
        ("X-RateLimit-Remaining", "0"),
        ("X-RateLimit-Reset", "60"),
    ]);
    let s = UpstreamSignals::read(TOO_MANY, &h, at(1_700_000_000));
    assert_eq!(
        s.requests,
        dim(Family::Legacy, Some(10), Some(0), Some(secs(60)))
    );

    // A partial set is read for what it says.
    let h = headers(&[("x-ratelimit-remaining", "7")]);
    let s = UpstreamSignals::read(OK, &h, at(1_700_000_000));
    assert_eq!(s.requests, dim(Family::Legacy, None, Some(7), None));
}

#[test]
fn legacy_epoch_threshold_is_exclusive() {
    let threshold = LEGACY_EPOCH_THRESHOLD_SECS.to_string();
    let above = (LEGACY_EPOCH_THRESHOLD_SECS + 100).to_string();
    let now = at(LEGACY_EPOCH_THRESHOLD_SECS);
    let reset = |value: &str| {
        let h = headers(&[("x-ratelimit-remaining", "1"), ("x-ratelimit-reset", value)]);
        UpstreamSignals::read(OK, &h, now).requests.reset_after
    };
    assert_eq!(reset(&threshold), Some(secs(LEGACY_EPOCH_THRESHOLD_SECS)));
    assert_eq!(reset(&above), Some(secs(100)));
}

// ---------------------------------------------------------------------------------------
// Retry signals

#[test]
fn retry_after_forms_and_precedence() {
    let now = at(784_111_777 - 90); // 90 s before Sun, 06 Nov 1994 08:49:37 GMT
    let wait = |pairs: &[(&str, &str)]| UpstreamSignals::read(TOO_MANY, &headers(pairs), now);

    assert_eq!(wait(&[("retry-after", "120")]).retry_after, Some(secs(120)));
    assert_eq!(
        wait(&[("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT")]).retry_after,
        Some(secs(90))
    );
    assert_eq!(wait(&[("retry-after", "1.5")]).retry_after, Some(ms(1500)));
    assert_eq!(
        wait(&[("retry-after", "0")]).retry_after,
        Some(Duration::ZERO)
    );
    assert_eq!(
        wait(&[("retry-after-ms", "250")]).retry_after,
        Some(ms(250))
    );
    assert_eq!(
        wait(&[("retry-after", "120"), ("retry-after-ms", "250")]).retry_after,
        Some(ms(250)),
        "retry-after-ms wins"
    );
    let fallback = wait(&[("retry-after", "120"), ("retry-after-ms", "soon")]);
    assert_eq!(fallback.retry_after, Some(secs(120)), "a bad ms falls back");
    assert_eq!(ignored(&fallback), [("retry-after-ms", "not a number")]);
    assert_eq!(
        wait(&[("retry-after", "-1"), ("retry-after-ms", "-1")]).retry_after,
        None
    );
    assert_eq!(
        wait(&[("retry-after", "99999999999999999999999")]).retry_after,
        Some(MAX_SIGNAL_DURATION)
    );
}

#[test]
fn should_retry_values() {
    let read = |value: &str| {
        UpstreamSignals::read(
            StatusCode::INTERNAL_SERVER_ERROR,
            &headers(&[("x-should-retry", value)]),
            at(0),
        )
    };
    assert_eq!(read("true").should_retry, Some(true));
    assert_eq!(read("false").should_retry, Some(false));
    assert_eq!(read(" True ").should_retry, Some(true));
    assert_eq!(read("").should_retry, None);
    let bad = read("yes");
    assert_eq!(bad.should_retry, None);
    assert_eq!(
        ignored(&bad),
        [("x-should-retry", "expected true or false")]
    );
    assert!(bad.seen.contains(Family::ShouldRetry));
}

// ---------------------------------------------------------------------------------------
// Sentinels and malformed values

#[test]
fn sentinels_and_malformed_values() {
    type Case = (
        &'static str,
        &'static str,
        Option<u64>,
        Option<&'static str>,
    );
    // (header, value, the field it should give, the reason it is ignored)
    let cases: &[Case] = &[
        ("x-ratelimit-limit-requests", "", None, None),
        ("x-ratelimit-limit-requests", "-1", None, None),
        ("x-ratelimit-limit-requests", "0", None, None),
        ("x-ratelimit-limit-requests", " 60 ", Some(60), None),
        (
            "x-ratelimit-limit-requests",
            "-5",
            None,
            Some("negative number"),
        ),
        (
            "x-ratelimit-limit-requests",
            "1.5",
            None,
            Some("not a whole number"),
        ),
        (
            "x-ratelimit-limit-requests",
            "lots",
            None,
            Some("not a whole number"),
        ),
        (
            "x-ratelimit-limit-requests",
            "18446744073709551616",
            None,
            Some("number too large"),
        ),
        ("x-ratelimit-remaining-requests", "0", Some(0), None),
        ("x-ratelimit-remaining-requests", "-1", None, None),
        ("x-ratelimit-remaining-requests", "", None, None),
        (
            "x-ratelimit-remaining-requests",
            "-2",
            None,
            Some("negative number"),
        ),
        (
            "x-ratelimit-remaining-requests",
            "18446744073709551615",
            Some(u64::MAX),
            None,
        ),
    ];
    for &(name, value, want, reason) in cases {
        let h = headers(&[(name, value)]);
        let s = UpstreamSignals::read(OK, &h, at(1_700_000_000));
        let got = if name.starts_with("x-ratelimit-limit") {
            s.requests.limit
        } else {
            s.requests.remaining
        };
        assert_eq!(got, want, "{name}: {value:?}");
        let reasons: Vec<&str> = ignored(&s).into_iter().map(|(_, r)| r).collect();
        assert_eq!(
            reasons,
            reason.into_iter().collect::<Vec<_>>(),
            "{name}: {value:?}"
        );
        assert!(s.seen.contains(Family::OpenAi));
    }
}

#[test]
fn malformed_resets_are_ignored_but_the_rest_is_kept() {
    let h = headers(&[
        ("x-ratelimit-limit-requests", "60"),
        ("x-ratelimit-remaining-requests", "10"),
        ("x-ratelimit-reset-requests", "6 minutes"),
        ("x-ratelimit-limit-tokens", "1000"),
        ("x-ratelimit-reset-tokens", "-3s"),
        ("anthropic-ratelimit-requests-reset", "tomorrow"),
        ("anthropic-ratelimit-tokens-reset", "2025-02-30T00:00:00Z"),
        ("x-ratelimit-reset", "1700000000000"),
        ("ratelimit", r#""a";r=-1;t=2"#),
        ("ratelimit-policy", r#""a";w=2"#),
        ("retry-after", "Sun, 06 Nov 1994 08:49:37 UTC"),
        ("retry-after-ms", "-20"),
    ]);
    let s = UpstreamSignals::read(OK, &h, at(1_700_000_000));
    assert_eq!(s.requests, dim(Family::OpenAi, Some(60), Some(10), None));
    assert_eq!(s.tokens, dim(Family::OpenAi, Some(1000), None, None));
    assert_eq!(s.retry_after, None);
    let mut got = ignored(&s);
    got.sort_unstable();
    let mut want = vec![
        (
            "anthropic-ratelimit-requests-reset",
            "not an RFC 3339 date-time like 2025-08-21T12:40:59Z",
        ),
        ("anthropic-ratelimit-tokens-reset", "no such date"),
        (
            "x-ratelimit-reset-requests",
            "not a duration like 6m0s, 1s or 20ms",
        ),
        ("x-ratelimit-reset-tokens", "negative duration"),
        (
            "X-RateLimit-Reset",
            "number too large (a Unix time in milliseconds?)",
        ),
        ("RateLimit", "parameter must not be negative"),
        ("RateLimit-Policy", "missing parameter"),
        ("retry-after-ms", "negative number"),
        (
            "Retry-After",
            "IMF-fixdate layout is `Sun, 06 Nov 1994 08:49:37 GMT` in",
        ),
    ];
    want.sort_unstable();
    assert_eq!(got, want);
    for err in &s.ignored {
        if let HeaderError::Malformed { part, .. } = err {
            assert!(part.len() <= MAX_PART_LEN);
        }
    }
    // The part is the value at fault.
    assert!(s.ignored.contains(&HeaderError::Malformed {
        header: "x-ratelimit-reset-tokens",
        part: "-3s".into(),
        reason: "negative duration",
    }));
}

#[test]
fn repeated_lines_and_non_utf8_values() {
    let mut h = headers(&[
        ("x-ratelimit-limit-requests", "60"),
        ("x-ratelimit-limit-requests", "60"),
        ("x-ratelimit-remaining-requests", "5"),
        ("x-ratelimit-remaining-requests", "6"),
    ]);
    h.insert(
        "x-ratelimit-limit-tokens",
        HeaderValue::from_bytes(b"\xff\xfe").expect("obs-text is a valid value"),
    );
    let s = UpstreamSignals::read(OK, &h, at(1_700_000_000));
    assert_eq!(s.requests, dim(Family::OpenAi, Some(60), None, None));
    assert_eq!(s.tokens, Dimension::default());
    let mut got = ignored(&s);
    got.sort_unstable();
    assert_eq!(
        got,
        [
            ("x-ratelimit-limit-tokens", "value is not UTF-8"),
            ("x-ratelimit-remaining-requests", "several different values"),
        ]
    );
}

#[test]
fn a_response_without_signals() {
    let h = headers(&[("content-type", "application/json"), ("x-request-id", "1")]);
    let s = UpstreamSignals::read(StatusCode::BAD_GATEWAY, &h, at(1_700_000_000));
    assert_eq!(
        s,
        UpstreamSignals {
            status: StatusCode::BAD_GATEWAY,
            ..UpstreamSignals::default()
        }
    );
    assert!(s.seen.is_empty());
    assert_eq!(s.suggested_wait(), None);
}

// ---------------------------------------------------------------------------------------
// Precedence

#[test]
fn vendor_over_ietf_over_legacy_per_dimension() {
    let all = [
        ("anthropic-ratelimit-requests-limit", "1"),
        ("x-ratelimit-limit-requests", "2"),
        ("ratelimit-policy", r#""p";q=3;w=60"#),
        ("ratelimit", r#""p";r=3;t=60"#),
        ("x-ratelimit-limit", "4"),
        ("x-ratelimit-remaining", "4"),
        ("x-ratelimit-reset", "60"),
    ];
    // Dropping the families in front, one at a time, hands `requests` to the next.
    for (from, want_limit, want_source) in [
        (0, 1, Family::Anthropic),
        (1, 2, Family::OpenAi),
        (2, 3, Family::Ietf),
        (4, 4, Family::Legacy),
    ] {
        let h = headers(&all[from..]);
        let s = UpstreamSignals::read(OK, &h, at(1_700_000_000));
        assert_eq!(s.requests.limit, Some(want_limit), "from {from}");
        assert_eq!(s.requests.source, Some(want_source), "from {from}");
    }
}

#[test]
fn fields_are_not_mixed_across_families() {
    let h = headers(&[
        ("x-ratelimit-limit-requests", "100"),
        ("x-ratelimit-remaining", "3"),
        ("x-ratelimit-reset", "30"),
    ]);
    let s = UpstreamSignals::read(OK, &h, at(1_700_000_000));
    assert_eq!(s.requests, dim(Family::OpenAi, Some(100), None, None));
    assert_eq!(s.seen, families(&[Family::OpenAi, Family::Legacy]));
}

#[test]
fn an_unknown_vendor_dimension_falls_through() {
    let h = headers(&[
        ("x-ratelimit-limit-requests", "-1"),
        ("x-ratelimit-remaining-requests", "-1"),
        ("x-ratelimit-reset-requests", "0s"),
        ("x-ratelimit-limit", "10"),
        ("x-ratelimit-remaining", "9"),
        ("x-ratelimit-reset", "5"),
        ("anthropic-ratelimit-tokens-limit", "0"),
        ("x-ratelimit-limit-tokens", "500"),
    ]);
    let s = UpstreamSignals::read(OK, &h, at(1_700_000_000));
    assert_eq!(
        s.requests,
        dim(Family::Legacy, Some(10), Some(9), Some(secs(5)))
    );
    assert_eq!(s.tokens, dim(Family::OpenAi, Some(500), None, None));
}

#[test]
fn suggested_wait_without_retry_after_is_the_latest_exhausted_reset() {
    let s = UpstreamSignals {
        requests: dim(Family::OpenAi, Some(10), Some(0), Some(secs(3))),
        tokens: dim(Family::OpenAi, Some(10), Some(0), Some(secs(9))),
        input_tokens: dim(Family::Anthropic, Some(10), Some(1), Some(secs(60))),
        ..UpstreamSignals::default()
    };
    assert_eq!(s.suggested_wait(), Some(secs(9)));
    let s = UpstreamSignals {
        retry_after: Some(secs(1)),
        ..s
    };
    assert_eq!(s.suggested_wait(), Some(secs(1)));
}

#[test]
fn write_openai_writes_what_upstreams_send() {
    let s = UpstreamSignals {
        requests: dim(Family::OpenAi, Some(60), Some(59), Some(secs(1))),
        tokens: dim(Family::OpenAi, Some(150_000), None, Some(secs(360))),
        retry_after: Some(ms(1500)),
        should_retry: Some(false),
        ..UpstreamSignals::default()
    };
    let mut h = HeaderMap::new();
    h.insert(
        "x-ratelimit-remaining-tokens",
        HeaderValue::from_static("7"),
    );
    s.write_openai(&mut h);
    assert_eq!(h["x-ratelimit-limit-requests"], "60");
    assert_eq!(h["x-ratelimit-remaining-requests"], "59");
    assert_eq!(h["x-ratelimit-reset-requests"], "1s");
    assert_eq!(h["x-ratelimit-limit-tokens"], "150000");
    assert_eq!(h["x-ratelimit-reset-tokens"], "6m0s");
    assert_eq!(
        h["x-ratelimit-remaining-tokens"], "7",
        "None is not written"
    );
    assert_eq!(h["retry-after-ms"], "1500");
    assert_eq!(h["retry-after"], "2");
    assert_eq!(h["x-should-retry"], "false");
}

// ---------------------------------------------------------------------------------------
// Properties

/// Every header name the parser reads.
const NAMES: &[&str] = &[
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-limit",
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-tokens-reset",
    "anthropic-ratelimit-input-tokens-limit",
    "anthropic-ratelimit-input-tokens-remaining",
    "anthropic-ratelimit-input-tokens-reset",
    "anthropic-ratelimit-output-tokens-limit",
    "anthropic-ratelimit-output-tokens-remaining",
    "anthropic-ratelimit-output-tokens-reset",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "ratelimit",
    "ratelimit-policy",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "retry-after",
    "retry-after-ms",
    "x-should-retry",
];

/// Values near every grammar: numbers, durations, dates, structured fields, junk.
fn value_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?[0-9]{0,22}(\\.[0-9]{0,12})?",
        "([0-9]{1,4}(\\.[0-9]{1,3})?(h|m|s|ms|us|ns|d|x)){1,4}",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?(Z|z|[+-][0-9]{2}:[0-9]{2})?",
        "(Mon|Sun|Xyz), [0-9]{2} (Nov|Feb) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT",
        r#"("[a-z]{0,3}"|[a-z]{1,3})(;[a-z]{1,2}=(-?[0-9]{1,16}|"[a-z]*"|[a-z]+|\?1))*(, ?"[a-z]{0,3}";r=[0-9];t=[0-9])?"#,
        "(true|false|TRUE|yes|)",
        "[ -~]{0,40}",
    ]
}

fn value_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        value_text().prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

fn check_invariants(signals: &UpstreamSignals) -> Result<(), TestCaseError> {
    for (name, d) in signals.dimensions() {
        prop_assert_eq!(d.is_known(), d.source.is_some(), "{}", name);
        if let Some(source) = d.source {
            prop_assert!(signals.seen.contains(source), "{}", name);
        }
        prop_assert_ne!(d.limit, Some(0));
        for wait in [d.reset_after, d.window].into_iter().flatten() {
            prop_assert!(wait <= MAX_SIGNAL_DURATION);
        }
    }
    if let Some(wait) = signals.retry_after {
        prop_assert!(wait <= MAX_SIGNAL_DURATION);
        prop_assert!(
            signals.seen.contains(Family::RetryAfter)
                || signals.seen.contains(Family::RetryAfterMs)
        );
    }
    if signals.should_retry.is_some() {
        prop_assert!(signals.seen.contains(Family::ShouldRetry));
    }
    for err in &signals.ignored {
        if let HeaderError::Malformed { part, .. } = err {
            prop_assert!(part.len() <= MAX_PART_LEN);
        }
    }
    Ok(())
}

fn dimension() -> impl Strategy<Value = Dimension> {
    (
        proptest::option::of(1..=u64::MAX),
        proptest::option::of(prop_oneof![Just(0u64), any::<u64>()]),
        proptest::option::of(prop_oneof![
            (0..=3_600_000u64).prop_map(Duration::from_millis),
            any::<u64>().prop_map(Duration::from_nanos),
        ]),
    )
        .prop_map(|(limit, remaining, reset_after)| Dimension {
            limit,
            remaining,
            reset_after,
            window: None,
            source: Some(Family::OpenAi),
        })
}

fn rfc3339(unix_nanos: u64) -> String {
    // Whole seconds from sluice-core, then the fraction spliced in before the `Z`.
    let secs = sluice_core::calendar::rfc3339_utc((unix_nanos / 1_000_000_000).cast_signed());
    let whole = secs.trim_end_matches('Z');
    format!("{whole}.{:09}Z", unix_nanos % 1_000_000_000)
}

proptest! {
    #[test]
    fn any_header_values_never_panic(
        pairs in proptest::collection::vec((0..NAMES.len(), value_bytes()), 0..12),
        now in any::<u64>(),
        status in 100u16..600,
    ) {
        let mut h = HeaderMap::new();
        for (index, bytes) in &pairs {
            if let Ok(value) = HeaderValue::from_bytes(bytes) {
                h.append(HeaderName::from_static(NAMES[*index]), value);
            }
        }
        let status = StatusCode::from_u16(status).expect("in range");
        let signals = UpstreamSignals::read(status, &h, Nanos::new(now));
        prop_assert_eq!(signals.status, status);
        check_invariants(&signals)?;
        let _ = signals.suggested_wait();
    }

    #[test]
    fn the_same_value_in_every_header_never_panics(value in value_bytes(), now in any::<u64>()) {
        if let Ok(value) = HeaderValue::from_bytes(&value) {
            let mut h = HeaderMap::new();
            for name in NAMES {
                h.insert(HeaderName::from_static(name), value.clone());
            }
            let signals = UpstreamSignals::read(TOO_MANY, &h, Nanos::new(now));
            check_invariants(&signals)?;
            prop_assert_eq!(signals.seen.iter().count(), Family::ALL.len());
        }
    }

    #[test]
    fn openai_headers_round_trip(
        requests in dimension(),
        tokens in dimension(),
        retry_after in proptest::option::of(any::<u64>().prop_map(Duration::from_nanos)),
        should_retry in proptest::option::of(any::<bool>()),
        now in any::<u64>(),
    ) {
        let written = UpstreamSignals {
            requests,
            tokens,
            retry_after,
            should_retry,
            ..UpstreamSignals::default()
        };
        let mut h = HeaderMap::new();
        written.write_openai(&mut h);
        let read = UpstreamSignals::read(TOO_MANY, &h, Nanos::new(now));
        let expect = |d: Dimension| if d.is_known() { d } else { Dimension::default() };
        prop_assert_eq!(read.requests, expect(requests));
        prop_assert_eq!(read.tokens, expect(tokens));
        prop_assert_eq!(read.retry_after, retry_after);
        prop_assert_eq!(read.should_retry, should_retry);
        prop_assert!(read.ignored.is_empty(), "{:?}", read.ignored);
    }

    #[test]
    fn legacy_headers_round_trip(
        limit in 1..=u64::MAX,
        remaining in any::<u64>(),
        delay in 0..=LEGACY_EPOCH_THRESHOLD_SECS,
        now in any::<u64>(),
    ) {
        let legacy = LegacyHeaders { limit, remaining, reset_secs: delay };
        let [l, r, t] = legacy.encode();
        let h = headers(&[("x-ratelimit-limit", &l), ("x-ratelimit-remaining", &r), ("x-ratelimit-reset", &t)]);
        let read = UpstreamSignals::read(OK, &h, Nanos::new(now));
        prop_assert_eq!(read.requests, dim(Family::Legacy, Some(limit), Some(remaining), Some(secs(delay))));
    }

    #[test]
    fn legacy_unix_time_resets_are_delays_from_now(
        reset_at in LEGACY_EPOCH_THRESHOLD_SECS + 1..=18_000_000_000u64,
        now in 0..=18_000_000_000_000_000_000u64,
    ) {
        let h = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &reset_at.to_string())]);
        let read = UpstreamSignals::read(TOO_MANY, &h, Nanos::new(now));
        let want = Duration::from_secs(reset_at).saturating_sub(Duration::from_nanos(now));
        prop_assert_eq!(read.requests.reset_after, Some(want));
    }

    #[test]
    fn anthropic_resets_are_delays_from_now(
        reset_at in any::<u64>(),
        now in any::<u64>(),
        limit in 1..=u64::MAX,
        remaining in any::<u64>(),
    ) {
        let (l, r) = (limit.to_string(), remaining.to_string());
        let reset = rfc3339(reset_at);
        let h = headers(&[
            ("anthropic-ratelimit-output-tokens-limit", &l),
            ("anthropic-ratelimit-output-tokens-remaining", &r),
            ("anthropic-ratelimit-output-tokens-reset", &reset),
        ]);
        let read = UpstreamSignals::read(OK, &h, Nanos::new(now));
        let wait = Duration::from_nanos(reset_at.saturating_sub(now));
        prop_assert_eq!(
            read.output_tokens,
            dim(Family::Anthropic, Some(limit), Some(remaining), Some(wait))
        );
    }

    #[test]
    fn go_durations_round_trip(nanos in any::<u64>()) {
        let d = Duration::from_nanos(nanos);
        let text = encode_go_duration(d);
        prop_assert!(text.is_ascii());
        prop_assert_eq!(parse_duration(&text), Ok(d));
    }
}
