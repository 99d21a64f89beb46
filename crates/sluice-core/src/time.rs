//! Instants on a limiter's timeline.
//!
//! A [`Nanos`] is a count of nanoseconds since the epoch of whichever [`Clock`](crate::Clock)
//! produced it: process start for [`MonotonicClock`](crate::MonotonicClock), the Unix epoch for
//! Redis `TIME`. Durations stay [`std::time::Duration`].

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

/// An instant on a limiter's timeline, in nanoseconds since the clock's epoch.
///
/// Arithmetic saturates: a limiter must keep deciding, not panic, at the edges of time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nanos(u64);

impl Nanos {
    /// The clock's epoch.
    pub const ZERO: Self = Self(0);
    /// The last representable instant (about 584 years after the epoch).
    pub const MAX: Self = Self(u64::MAX);

    /// An instant `nanos` nanoseconds after the epoch.
    pub const fn new(nanos: u64) -> Self {
        Self(nanos)
    }

    /// Nanoseconds since the epoch.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub const fn saturating_since(self, earlier: Self) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// `self + nanos`, saturating at [`Nanos::MAX`].
    pub const fn plus_nanos(self, nanos: u64) -> Self {
        Self(self.0.saturating_add(nanos))
    }

    /// `self - nanos`, saturating at [`Nanos::ZERO`].
    pub const fn minus_nanos(self, nanos: u64) -> Self {
        Self(self.0.saturating_sub(nanos))
    }
}

/// Whole nanoseconds of `d`, saturating at `u64::MAX`.
pub fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Why a duration could not be parsed; `part` is the piece of the input at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason} {part:?} (expected e.g. 50ms, 1.5s, 1h30m; units ns, us, ms, s, m, h, d)")]
pub struct DurationError {
    /// The piece of the input at fault.
    pub part: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Parses a duration: `0`, or one or more `<number><unit>` parts such as `50ms`, `1.5s`,
/// `1h30m` or Go's `6m0s`. Units are `ns`, `us` (`µs`), `ms`, `s`, `m` (`min`), `h` and
/// `d`, plus the words `sec(s)`, `second(s)`, `minute(s)`, `hour(s)`, `day(s)`. Decimals are
/// exact to the nanosecond (digits beyond it are dropped); the total must fit in `u64`
/// nanoseconds. This is the one duration grammar of sluice: policies, flags and upstream
/// headers all use it.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let fail = |part: &str, reason| DurationError {
        part: part.to_owned(),
        reason,
    };
    if text.is_empty() {
        return Err(fail(text, "empty duration"));
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
            return Err(fail(rest, "expected a number at"));
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(fail(number, "missing unit after"));
        }
        let unit_nanos = u128::from(unit_nanos(unit).ok_or_else(|| fail(unit, "unknown unit"))?);
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole
                .parse()
                .map_err(|_| fail(whole, "number too large:"))?
        };
        // Nine digits of a fraction reach the nanosecond; later ones cannot matter.
        let digits = &fraction[..fraction.len().min(9)];
        let scale = 10u128.pow(u32::try_from(digits.len()).unwrap_or(9));
        let fraction: u128 = if digits.is_empty() {
            0
        } else {
            digits.parse().unwrap_or(0)
        };
        total = whole
            .checked_mul(unit_nanos)
            .and_then(|w| w.checked_add(fraction * unit_nanos / scale))
            .and_then(|part| total.checked_add(part))
            .filter(|&t| t <= u128::from(u64::MAX))
            .ok_or_else(|| fail(text, "duration too long:"))?;
        rest = after;
    }
    Ok(Duration::from_nanos(
        u64::try_from(total).unwrap_or(u64::MAX),
    ))
}

/// Nanoseconds in one `unit`, for the units and unit words [`parse_duration`] accepts.
pub fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" | "nanosecond" | "nanoseconds" => 1,
        "us" | "µs" | "microsecond" | "microseconds" => 1_000,
        "ms" | "millisecond" | "milliseconds" => 1_000_000,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000_000_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000_000_000,
        "h" | "hr" | "hour" | "hours" => 3_600_000_000_000,
        "d" | "day" | "days" => 86_400_000_000_000,
        _ => return None,
    })
}

impl Add<Duration> for Nanos {
    type Output = Self;
    fn add(self, rhs: Duration) -> Self {
        self.plus_nanos(duration_nanos(rhs))
    }
}

impl Sub<Duration> for Nanos {
    type Output = Self;
    fn sub(self, rhs: Duration) -> Self {
        self.minus_nanos(duration_nanos(rhs))
    }
}

impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ns", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_exactly() {
        let ns = Duration::from_nanos;
        for (text, want) in [
            ("0", ns(0)),
            ("50ms", ns(50_000_000)),
            ("1.5s", ns(1_500_000_000)),
            ("1h30m", ns(5_400_000_000_000)),
            ("6m0s", ns(360_000_000_000)),
            ("1h2m3.5s", ns(3_723_500_000_000)),
            ("0.000000001s", ns(1)),
            ("0.0000000019s", ns(1)),
            (".5s", ns(500_000_000)),
            ("250us", ns(250_000)),
            ("2min", ns(120_000_000_000)),
            ("1d", ns(86_400_000_000_000)),
            ("7.66s", ns(7_660_000_000)),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn duration_errors_name_the_bad_part() {
        for (text, part) in [
            ("", ""),
            ("50", "50"),
            ("5x", "x"),
            ("ms", "ms"),
            ("1.2.3s", "1.2.3s"),
            ("99999999999h", "99999999999h"),
        ] {
            let err = parse_duration(text).unwrap_err();
            assert_eq!(err.part, part, "{text}: {err}");
        }
    }

    #[test]
    fn arithmetic_saturates_at_both_ends() {
        assert_eq!(Nanos::MAX + Duration::from_secs(1), Nanos::MAX);
        assert_eq!(Nanos::ZERO - Duration::from_secs(1), Nanos::ZERO);
        assert_eq!(
            Nanos::new(5).saturating_since(Nanos::new(9)),
            Duration::ZERO
        );
        assert_eq!(duration_nanos(Duration::MAX), u64::MAX);
    }
}
