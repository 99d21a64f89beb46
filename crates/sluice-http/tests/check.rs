//! Round trips of the `/v1/check` body: what a client encodes, the server decodes strictly
//! to the same request; what the server encodes, a client decodes to the same answer.

use std::borrow::Cow;

use proptest::prelude::*;
use sluice_http::check::{
    CODE_OK, CODE_OVER_LIMIT, CheckRequest, CheckResponse, Descriptor, Entry, Limit, Status,
};

/// Any text, escapes and non-ASCII included.
fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9_.:-]{0,12}", any::<String>()]
}

fn hits() -> impl Strategy<Value = Option<u64>> {
    proptest::option::of(prop_oneof![0..=10u64, any::<u64>()])
}

fn code() -> impl Strategy<Value = Cow<'static, str>> {
    prop_oneof![Just(CODE_OK), Just(CODE_OVER_LIMIT)].prop_map(Cow::Borrowed)
}

fn limit() -> impl Strategy<Value = Limit<'static>> {
    (
        any::<u64>(),
        prop_oneof![Just("second"), Just("minute"), Just("hour"), Just("day")],
        prop_oneof![Just(1u64), any::<u64>()],
        proptest::option::of(text()),
        prop_oneof![Just("gcra"), Just("sliding_window"), Just("blocked")],
        any::<bool>(),
    )
        .prop_map(
            |(requests_per_unit, unit, unit_multiplier, name, algorithm, shadow_mode)| Limit {
                requests_per_unit,
                unit: Cow::Borrowed(unit),
                unit_multiplier,
                name: name.map(Cow::Owned),
                algorithm: Cow::Borrowed(algorithm),
                shadow_mode,
            },
        )
}

fn status() -> impl Strategy<Value = Status<'static>> {
    (
        code(),
        proptest::option::of(limit()),
        any::<u64>(),
        any::<u64>(),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(
            |(code, limit, limit_remaining, duration_until_reset_ms, retry_after_ms)| Status {
                code,
                limit,
                limit_remaining,
                duration_until_reset_ms,
                retry_after_ms,
            },
        )
}

fn response() -> impl Strategy<Value = CheckResponse<'static>> {
    (code(), proptest::collection::vec(status(), 0..6)).prop_map(|(overall_code, statuses)| {
        CheckResponse {
            overall_code,
            statuses,
        }
    })
}

/// A request as a client holds it: domain, descriptors (entries, hits) and hits, as text
/// its keys own; the request borrows it when encoded.
type RequestParts = (
    String,
    Vec<(Vec<(String, String)>, Option<u64>)>,
    Option<u64>,
);

fn request_parts() -> impl Strategy<Value = RequestParts> {
    (
        text(),
        proptest::collection::vec(
            (proptest::collection::vec((text(), text()), 0..4), hits()),
            0..5,
        ),
        hits(),
    )
}

proptest! {
    #[test]
    fn server_answers_decode_in_the_client_and_back(answer in response()) {
        let bytes = serde_json::to_vec(&answer).expect("encodes");
        let decoded: CheckResponse<'static> = serde_json::from_slice(&bytes).expect("decodes");
        prop_assert_eq!(&decoded, &answer);
        prop_assert_eq!(serde_json::to_vec(&decoded).expect("encodes"), bytes);
    }

    #[test]
    fn client_requests_decode_in_the_server_and_back((domain, descriptors, hits) in request_parts()) {
        let request = CheckRequest {
            domain: Cow::Borrowed(domain.as_str()),
            descriptors: descriptors
                .iter()
                .map(|(entries, hits)| Descriptor {
                    entries: entries
                        .iter()
                        .map(|(key, value)| Entry {
                            key: Cow::Borrowed(key.as_str()),
                            value: Cow::Borrowed(value.as_str()),
                        })
                        .collect(),
                    hits: *hits,
                })
                .collect(),
            hits,
        };
        let bytes = serde_json::to_vec(&request).expect("encodes");
        let decoded: CheckRequest<'static> = serde_json::from_slice(&bytes).expect("decodes");
        prop_assert_eq!(&decoded, &request);
        prop_assert_eq!(serde_json::to_vec(&decoded).expect("encodes"), bytes);
    }
}
