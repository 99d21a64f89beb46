//! Any bytes as what an upstream or a state file says to the egress client: an answer's
//! status and body (`classify_status`, `reported_tokens`), a request body
//! (`estimate_tokens`), and a persisted quota state (`QuotaMonitor::restore`). None may
//! panic; an answer below 400 is a success and one at or above is not.
//!
//! Input: 2 bytes of status (little-endian, taken modulo 1000 and kept at 100 or more),
//! 8 bytes of `now`, then the body.
#![no_main]

use http::StatusCode;
use libfuzzer_sys::fuzz_target;
use sluice_core::Nanos;
use sluice_egress::classify::{Outcome, classify_status};
use sluice_egress::quota::{QuotaConfig, QuotaMonitor, QuotaState};
use sluice_egress::usage::{estimate_tokens, reported_tokens};

fuzz_target!(|data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    let code = (u16::from_le_bytes([data[0], data[1]]) % 1000).max(100);
    let now = Nanos::new(u64::from_le_bytes(
        data[2..10].try_into().unwrap_or_default(),
    ));
    let body = &data[10..];
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    let outcome = classify_status(status, Some(body));
    assert_eq!(
        matches!(outcome, Outcome::Success),
        status.as_u16() < 400,
        "{status}: {outcome:?}"
    );
    let _ = reported_tokens(body);
    let _ = estimate_tokens(body);
    if let Ok(state) = serde_json::from_slice::<QuotaState>(body)
        && let Ok(monitor) = QuotaMonitor::restore(QuotaConfig::default(), state, now)
    {
        let _ = monitor.usage(now);
        let _ = monitor.admit(sluice_egress::Priority::BATCH, now);
    }
});
