//! The parsers of outside input: rates (`100/s`), algorithm names, durations and keys.
//! Whatever the text, they return a value or an error that names a piece of the input;
//! they never panic, and what they print they parse back to the same value.

use std::time::Duration;

use proptest::prelude::*;
use sluice_core::key::{MAX_COMPONENT_LEN, MAX_ENTRIES};
use sluice_core::time::parse_duration;
use sluice_core::{AlgorithmKind, Key, PolicyError, Rate};

use crate::support::config;

/// Text that looks like a rate often enough to reach the deep branches.
fn rate_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9_]{0,12}/[0-9.]{0,6}(ns|us|µs|ms|s|m|min|h|d|day|x|)([0-9]{0,3}(ms|s|m|h)){0,2}",
        "[ -~]{0,24}",
    ]
}

fn rate() -> impl Strategy<Value = Rate> {
    (1u64..1_000_000, 1u64..=86_400_000_000_000)
        .prop_filter_map("rate faster than 1/ns", |(limit, period)| {
            Rate::new(limit, Duration::from_nanos(period)).ok()
        })
}

proptest! {
    #![proptest_config(config("proptest-regressions/properties/parsers.txt"))]

    #[test]
    fn a_rate_error_names_a_piece_of_the_input(text in rate_like()) {
        if let Err(PolicyError::InvalidRate { input, part, .. }) = text.parse::<Rate>() {
            prop_assert_eq!(&input, &text);
            prop_assert!(text.contains(&part), "{part:?} is not in {text:?}");
        }
    }

    #[test]
    fn a_rate_parses_back_from_its_display(rate in rate()) {
        prop_assert_eq!(rate.to_string().parse::<Rate>(), Ok(rate));
    }

    #[test]
    fn algorithm_names_never_panic(text in any::<String>()) {
        if let Ok(kind) = text.parse::<AlgorithmKind>() {
            prop_assert_eq!(kind.name().parse::<AlgorithmKind>(), Ok(kind));
        }
    }

    #[test]
    fn a_duration_error_names_a_piece_of_the_input(text in rate_like()) {
        if let Err(err) = parse_duration(&text) {
            prop_assert!(text.contains(&err.part), "{:?} is not in {text:?}", err.part);
        }
    }

    #[test]
    fn durations_in_parts_add_up(h in 0u64..10_000, m in 0u64..1000, s in 0u64..1000, ms in 0u64..1000) {
        let text = format!("{h}h{m}m{s}s{ms}ms");
        let want = Duration::from_secs(h * 3600 + m * 60 + s) + Duration::from_millis(ms);
        prop_assert_eq!(parse_duration(&text), Ok(want));
    }

    #[test]
    fn decimal_seconds_are_exact_to_the_nanosecond(whole in 0u64..1_000_000, nanos in 0u32..1_000_000_000) {
        let text = format!("{whole}.{nanos:09}s");
        prop_assert_eq!(parse_duration(&text), Ok(Duration::new(whole, nanos)));
    }

    #[test]
    fn keys_are_bounded_whatever_the_input(
        domain in any::<String>(),
        entries in prop::collection::vec((any::<String>(), any::<String>()), 0..=MAX_ENTRIES),
    ) {
        match Key::new(&domain, entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
            Ok(key) => {
                // Each component is at most MAX_COMPONENT_LEN bytes (or a 33-byte digest),
                // plus one separator before it.
                let bound = (1 + 2 * entries.len()) * (MAX_COMPONENT_LEN + 1);
                prop_assert!(key.as_str().len() <= bound, "{} > {bound}", key.as_str().len());
            }
            Err(_) => prop_assert!(domain.is_empty() || entries.iter().any(|(k, _)| k.is_empty())),
        }
    }

    #[test]
    fn distinct_short_entries_make_distinct_keys(
        a in prop::collection::vec(("[a-z|=%{}]{1,6}", "[a-z0-9|=%{}]{0,6}"), 0..4),
        b in prop::collection::vec(("[a-z|=%{}]{1,6}", "[a-z0-9|=%{}]{0,6}"), 0..4),
    ) {
        let key = |entries: &Vec<(String, String)>| {
            Key::new("api", entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap()
        };
        prop_assert_eq!(a == b, key(&a) == key(&b));
    }
}
