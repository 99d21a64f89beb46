//! Any bytes as an upstream's rate limit headers (OpenAI, Anthropic, IETF, legacy,
//! `Retry-After`, `retry-after-ms`, `x-should-retry`): `UpstreamSignals::read` never panics,
//! every dimension it reports is known and comes from a family it saw, and what it reads
//! writes back as OpenAI-style headers that read to the same values.
//!
//! Input: 8 bytes of `now` (little-endian nanoseconds), 2 bytes of status, then lines split
//! on `\n`, each a byte that picks the header name followed by the value.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;
use sluice_core::Nanos;
use sluice_http::{
    Dimension, Family, HeaderError, MAX_PART_LEN, MAX_SIGNAL_DURATION, UpstreamSignals,
};

const NAMES: [&str; 26] = [
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

fuzz_target!(|bytes: &[u8]| {
    let (head, rest) = bytes.split_at(bytes.len().min(10));
    let mut now = [0u8; 8];
    for (slot, byte) in now.iter_mut().zip(head) {
        *slot = *byte;
    }
    let now = Nanos::new(u64::from_le_bytes(now));
    let status = match head.get(8..10) {
        Some(&[a, b]) => 100 + u16::from_le_bytes([a, b]) % 500,
        _ => 200,
    };
    let status = StatusCode::from_u16(status).expect("100..600 is a valid status");
    let mut headers = HeaderMap::new();
    for line in rest.split(|&b| b == b'\n') {
        let Some((&pick, value)) = line.split_first() else {
            continue;
        };
        if let Ok(value) = HeaderValue::from_bytes(value) {
            let name = NAMES[usize::from(pick) % NAMES.len()];
            headers.append(HeaderName::from_static(name), value);
        }
    }

    let signals = UpstreamSignals::read(status, &headers, now);
    assert_eq!(signals.status, status);
    for (name, d) in signals.dimensions() {
        assert_eq!(d.is_known(), d.source.is_some(), "{name}: {d:?}");
        if let Some(source) = d.source {
            assert!(signals.seen.contains(source), "{name}: {source:?}");
        }
        assert_ne!(d.limit, Some(0), "{name}");
        for wait in [d.reset_after, d.window].into_iter().flatten() {
            assert!(wait <= MAX_SIGNAL_DURATION, "{name}");
        }
    }
    if let Some(wait) = signals.retry_after {
        assert!(wait <= MAX_SIGNAL_DURATION);
        assert!(
            signals.seen.contains(Family::RetryAfter)
                || signals.seen.contains(Family::RetryAfterMs)
        );
    }
    for err in &signals.ignored {
        if let HeaderError::Malformed { part, .. } = err {
            assert!(part.len() <= MAX_PART_LEN, "{part:?}");
        }
    }
    let _ = signals.suggested_wait();

    // What was read writes back as OpenAI-style headers that read the same.
    let mut written = HeaderMap::new();
    signals.write_openai(&mut written);
    let again = UpstreamSignals::read(status, &written, now);
    let as_openai = |d: Dimension| {
        if d.is_known() {
            Dimension {
                window: None,
                source: Some(Family::OpenAi),
                ..d
            }
        } else {
            Dimension::default()
        }
    };
    assert_eq!(again.requests, as_openai(signals.requests));
    assert_eq!(again.tokens, as_openai(signals.tokens));
    assert_eq!(again.retry_after, signals.retry_after);
    assert_eq!(again.should_retry, signals.should_retry);
    assert!(again.ignored.is_empty(), "{:?}", again.ignored);
});
