//! Any bytes as a rate limit header value (`RateLimit`, `RateLimit-Policy`, `Retry-After`,
//! `X-RateLimit-*`): a value or an error naming a piece of the input, never a panic; what
//! parses encodes back to text that parses to the same value.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sluice_http::{
    HeaderError, LegacyHeaders, RetryAfter, encode_limit_header, encode_policy_header,
    parse_limit_header, parse_policy_header, read_limit_header, read_policy_header,
};

fn check_error(text: &str, err: HeaderError) {
    if let HeaderError::Malformed { part, .. } = err {
        assert!(text.contains(&part), "{part:?} not in {text:?}");
    }
}

fuzz_target!(|bytes: &[u8]| {
    if let Ok(text) = std::str::from_utf8(bytes) {
        match parse_policy_header(text) {
            Ok(items) => {
                let again = encode_policy_header(&items).expect("parsed names encode");
                assert_eq!(parse_policy_header(&again), Ok(items));
            }
            Err(err) => check_error(text, err),
        }
        match parse_limit_header(text) {
            Ok(items) => {
                let again = encode_limit_header(&items).expect("parsed names encode");
                assert_eq!(parse_limit_header(&again), Ok(items));
            }
            Err(err) => check_error(text, err),
        }
        match RetryAfter::parse(text) {
            Ok(value) => assert_eq!(RetryAfter::parse(&value.to_string()), Ok(value)),
            Err(err) => check_error(text, err),
        }
        match LegacyHeaders::parse(text, text, text) {
            Ok(legacy) => {
                let [l, r, t] = legacy.encode();
                assert_eq!(LegacyHeaders::parse(&l, &r, &t), Ok(legacy));
            }
            Err(err) => check_error(text, err),
        }
    }
    if let Ok(value) = HeaderValue::from_bytes(bytes) {
        let mut headers = HeaderMap::new();
        headers.append(sluice_http::RATELIMIT, value.clone());
        headers.append(sluice_http::RATELIMIT_POLICY, value.clone());
        headers.append(sluice_http::X_RATELIMIT_RESET, value);
        let _ = read_limit_header(&headers);
        let _ = read_policy_header(&headers);
        let _ = LegacyHeaders::read(&headers);
    }
});
