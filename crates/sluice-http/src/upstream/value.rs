//! The value grammars of upstream signal headers: counts, durations, resets, booleans.
//!
//! Each parser takes one header value and answers `Ok(Some(_))` for a value, `Ok(None)` for
//! a sentinel that means "unknown", and `Err(reason)` for a malformed value (which the
//! caller records and otherwise ignores). Surrounding spaces and tabs are ignored
//! everywhere.

use std::time::Duration;

use sluice_core::Nanos;
use sluice_core::time::parse_duration;

use crate::{HeaderError, RetryAfter};

/// What one header value says.
pub(super) type Parsed<T> = Result<Option<T>, &'static str>;

/// The longest duration a snapshot holds: `u64::MAX` nanoseconds (about 584 years), the
/// span of sluice's own time type. Longer waits are clamped to it.
pub const MAX_SIGNAL_DURATION: Duration = Duration::from_nanos(u64::MAX);

/// Above this many seconds, an `X-RateLimit-Reset` value is a Unix time, not a delay
/// (10^9 s is 2001-09-09T01:46:40Z, and nobody means a delay of 31 years).
pub const LEGACY_EPOCH_THRESHOLD_SECS: u64 = 1_000_000_000;

fn trim(text: &str) -> &str {
    text.trim_matches([' ', '\t'])
}

/// The sentinels every numeric header shares: no value at all, or `-1`.
fn is_unknown(text: &str) -> bool {
    text.is_empty() || text == "-1"
}

/// A count: a whole number that fits a `u64`. `-1` and empty are unknown; `0` is zero.
pub(super) fn count(text: &str) -> Parsed<u64> {
    let text = trim(text);
    if is_unknown(text) {
        return Ok(None);
    }
    if text.starts_with('-') {
        return Err("negative number");
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a whole number");
    }
    text.parse().map(Some).map_err(|_| "number too large")
}

/// A limit: a count where `0` is unknown too (no upstream means "you may send nothing"
/// with a limit header; Azure OpenAI sends `0` and `-1` for dimensions it does not track).
pub(super) fn limit(text: &str) -> Parsed<u64> {
    count(text).map(|n| n.filter(|&n| n > 0))
}

/// Digits with at most one `.` (and at least one digit): `12`, `1.5`, `.5`, `3.`.
fn is_decimal(text: &str) -> bool {
    let digits = text.bytes().filter(u8::is_ascii_digit).count();
    let dots = text.bytes().filter(|&b| b == b'.').count();
    digits > 0 && dots <= 1 && digits + dots == text.len()
}

/// A non-negative decimal number of `unit` (a unit name of `parse_duration`, e.g. `s`,
/// `ms`), exact to the nanosecond.
fn decimal(text: &str, unit: &str) -> Result<Duration, &'static str> {
    if text.starts_with('-') {
        return Err("negative number");
    }
    if !is_decimal(text) {
        return Err("not a number");
    }
    parse_duration(&format!("{text}{unit}")).map_err(|_| "number too large")
}

/// The time from `now` until `at_nanos` (nanoseconds since the Unix epoch, negative before
/// 1970): zero when it has passed, at most [`MAX_SIGNAL_DURATION`].
pub(super) fn until(at_nanos: i128, now: Nanos) -> Duration {
    let wait = at_nanos.saturating_sub(i128::from(now.as_u64()));
    Duration::from_nanos(u64::try_from(wait.max(0)).unwrap_or(u64::MAX))
}

/// An OpenAI reset: a Go-style duration (`6m0s`, `1s`, `20ms`, `1h2m3.5s`) through
/// [`parse_duration`], or a bare number of seconds (`34`, `1.5`: Azure OpenAI).
pub(super) fn go_duration(text: &str) -> Parsed<Duration> {
    let text = trim(text);
    if is_unknown(text) {
        return Ok(None);
    }
    if text.starts_with('-') {
        return Err("negative duration");
    }
    if is_decimal(text) {
        return decimal(text, "s").map(Some);
    }
    parse_duration(text).map(Some).map_err(|err| {
        if err.reason.contains("too") {
            "duration too long"
        } else {
            "not a duration like 6m0s, 1s or 20ms"
        }
    })
}

/// An Anthropic reset: an RFC 3339 date-time, as a delay from `now`.
pub(super) fn rfc3339_reset(text: &str, now: Nanos) -> Parsed<Duration> {
    let text = trim(text);
    if is_unknown(text) {
        return Ok(None);
    }
    super::rfc3339::parse(text).map(|at| Some(until(at, now)))
}

/// A legacy `X-RateLimit-Reset`: seconds (a decimal number), read as a Unix time when
/// above [`LEGACY_EPOCH_THRESHOLD_SECS`] and as a delay otherwise.
pub(super) fn legacy_reset(text: &str, now: Nanos) -> Parsed<Duration> {
    let text = trim(text);
    if is_unknown(text) {
        return Ok(None);
    }
    let value = decimal(text, "s").map_err(|reason| {
        if reason == "number too large" {
            "number too large (a Unix time in milliseconds?)"
        } else {
            reason
        }
    })?;
    if value <= Duration::from_secs(LEGACY_EPOCH_THRESHOLD_SECS) {
        return Ok(Some(value));
    }
    Ok(Some(until(
        i128::try_from(value.as_nanos()).unwrap_or(i128::MAX),
        now,
    )))
}

/// `Retry-After`: delay-seconds or an IMF-fixdate ([`RetryAfter::parse`]), or a decimal
/// number of seconds (`1.5`, not standard but sent by some servers).
pub(super) fn retry_after(text: &str, now: Nanos) -> Parsed<Duration> {
    let text = trim(text);
    if is_unknown(text) {
        return Ok(None);
    }
    if text.starts_with('-') {
        return Err("negative number");
    }
    match RetryAfter::parse(text) {
        Ok(RetryAfter::Delay(delay)) => Ok(Some(delay.min(MAX_SIGNAL_DURATION))),
        Ok(RetryAfter::At { unix_secs }) => {
            Ok(Some(until(i128::from(unix_secs) * 1_000_000_000, now)))
        }
        Err(_) if is_decimal(text) => decimal(text, "s").map(Some),
        Err(HeaderError::Malformed { reason, .. }) => Err(reason),
        Err(_) => Err("not delay-seconds nor an IMF-fixdate"),
    }
}

/// `retry-after-ms`: a decimal number of milliseconds (`1500`, `1234.56`).
pub(super) fn millis(text: &str) -> Parsed<Duration> {
    let text = trim(text);
    if is_unknown(text) {
        return Ok(None);
    }
    decimal(text, "ms").map(Some)
}

/// `x-should-retry`: `true` or `false` (any case); empty is unknown.
pub(super) fn boolean(text: &str) -> Parsed<bool> {
    let text = trim(text);
    if text.is_empty() {
        Ok(None)
    } else if text.eq_ignore_ascii_case("true") {
        Ok(Some(true))
    } else if text.eq_ignore_ascii_case("false") {
        Ok(Some(false))
    } else {
        Err("expected true or false")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Nanos = Nanos::new(1_700_000_000_000_000_000);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn counts_and_limits() {
        assert_eq!(count("42"), Ok(Some(42)));
        assert_eq!(count(" 0\t"), Ok(Some(0)));
        assert_eq!(count("-1"), Ok(None));
        assert_eq!(count(""), Ok(None));
        assert_eq!(count("  "), Ok(None));
        assert_eq!(count("18446744073709551615"), Ok(Some(u64::MAX)));
        assert_eq!(count("18446744073709551616"), Err("number too large"));
        assert_eq!(count("-2"), Err("negative number"));
        assert_eq!(count("-0"), Err("negative number"));
        assert_eq!(count("+3"), Err("not a whole number"));
        assert_eq!(count("1.0"), Err("not a whole number"));
        assert_eq!(count("1 000"), Err("not a whole number"));
        assert_eq!(limit("0"), Ok(None));
        assert_eq!(limit("-1"), Ok(None));
        assert_eq!(limit("60"), Ok(Some(60)));
    }

    #[test]
    fn go_durations() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("6m0s", secs(360)),
            ("1s", secs(1)),
            ("20ms", ms(20)),
            ("1h2m3.5s", ms(3_723_500)),
            ("7.66s", ms(7_660)),
            ("2m59.56s", ms(179_560)),
            ("0s", Duration::ZERO),
            ("0", Duration::ZERO),
            ("34", secs(34)),
            ("1.5", ms(1500)),
            ("250us", Duration::from_micros(250)),
            ("1.5\u{b5}s", Duration::from_nanos(1500)),
        ] {
            assert_eq!(go_duration(text), Ok(Some(want)), "{text}");
        }
        assert_eq!(go_duration("-1"), Ok(None));
        assert_eq!(go_duration(""), Ok(None));
        assert_eq!(go_duration("-5s"), Err("negative duration"));
        assert_eq!(
            go_duration("5x"),
            Err("not a duration like 6m0s, 1s or 20ms")
        );
        assert_eq!(
            go_duration("1.2.3"),
            Err("not a duration like 6m0s, 1s or 20ms")
        );
        assert_eq!(go_duration("99999999999h"), Err("duration too long"));
    }

    #[test]
    fn legacy_resets_are_delays_or_unix_times() {
        assert_eq!(legacy_reset("60", NOW), Ok(Some(secs(60))));
        assert_eq!(legacy_reset("0", NOW), Ok(Some(Duration::ZERO)));
        assert_eq!(
            legacy_reset("1.25", NOW),
            Ok(Some(Duration::from_millis(1250)))
        );
        assert_eq!(
            legacy_reset("1000000000", NOW),
            Ok(Some(secs(1_000_000_000))),
            "the threshold itself is a delay"
        );
        assert_eq!(legacy_reset("1700000030", NOW), Ok(Some(secs(30))));
        assert_eq!(
            legacy_reset("1700000030.5", NOW),
            Ok(Some(Duration::from_millis(30_500)))
        );
        assert_eq!(
            legacy_reset("1000000001", NOW),
            Ok(Some(Duration::ZERO)),
            "past"
        );
        assert_eq!(legacy_reset("-1", NOW), Ok(None));
        assert_eq!(legacy_reset("-30", NOW), Err("negative number"));
        assert_eq!(legacy_reset("soon", NOW), Err("not a number"));
        assert_eq!(
            legacy_reset("1700000030000", NOW),
            Err("number too large (a Unix time in milliseconds?)")
        );
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(retry_after("120", NOW), Ok(Some(secs(120))));
        assert_eq!(retry_after("0", NOW), Ok(Some(Duration::ZERO)));
        assert_eq!(
            retry_after("1.5", NOW),
            Ok(Some(Duration::from_millis(1500)))
        );
        assert_eq!(
            retry_after("99999999999999999999999", NOW),
            Ok(Some(MAX_SIGNAL_DURATION))
        );
        // 2023-11-14T22:13:20Z is NOW; 22:14:00 is 40 s later.
        assert_eq!(
            retry_after("Tue, 14 Nov 2023 22:14:00 GMT", NOW),
            Ok(Some(secs(40)))
        );
        assert_eq!(
            retry_after("Tue, 14 Nov 2023 22:13:00 GMT", NOW),
            Ok(Some(Duration::ZERO))
        );
        assert_eq!(retry_after("-1", NOW), Ok(None));
        assert_eq!(retry_after("-5", NOW), Err("negative number"));
        assert!(retry_after("tomorrow", NOW).is_err());
    }

    #[test]
    fn millis_and_booleans() {
        assert_eq!(millis("1500"), Ok(Some(Duration::from_millis(1500))));
        assert_eq!(
            millis("1234.56"),
            Ok(Some(Duration::from_micros(1_234_560)))
        );
        assert_eq!(millis("0.0000001"), Ok(Some(Duration::ZERO)));
        assert_eq!(millis("-1"), Ok(None));
        assert_eq!(millis("-2"), Err("negative number"));
        assert_eq!(millis("1e3"), Err("not a number"));
        assert_eq!(millis("99999999999999999999"), Err("number too large"));
        assert_eq!(boolean("true"), Ok(Some(true)));
        assert_eq!(boolean(" FALSE "), Ok(Some(false)));
        assert_eq!(boolean(""), Ok(None));
        assert_eq!(boolean("1"), Err("expected true or false"));
    }

    #[test]
    fn until_saturates() {
        assert_eq!(until(-5, NOW), Duration::ZERO);
        assert_eq!(until(i128::MAX, Nanos::ZERO), MAX_SIGNAL_DURATION);
        assert_eq!(until(i128::MIN, Nanos::MAX), Duration::ZERO);
    }
}
