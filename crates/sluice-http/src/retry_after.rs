//! `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date.

use std::fmt;
use std::time::Duration;

use sluice_core::calendar;

use crate::ceil_secs;
use crate::error::{HeaderError, part};

const HEADER: &str = "Retry-After";

/// A parsed `Retry-After` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetryAfter {
    /// Delay-seconds: wait this long (always whole seconds when parsed).
    Delay(Duration),
    /// An HTTP-date: retry at this many seconds after the Unix epoch. Turning it into a
    /// delay needs the current time, which the caller passes to [`RetryAfter::delay_from`].
    At {
        /// Seconds since 1970-01-01T00:00:00Z.
        unix_secs: u64,
    },
}

impl RetryAfter {
    /// Parses delay-seconds (`120`) or an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
    ///
    /// Surrounding spaces and tabs are ignored. Delay-seconds too large for a `u64`
    /// saturate, as RFC 9111 §1.2.2 asks of delta-seconds. The obsolete RFC 850 and asctime
    /// date forms are refused, as is a leap second (`:60`) and any year before 1970.
    ///
    /// # Errors
    /// [`HeaderError::Malformed`] naming the bad part.
    pub fn parse(value: &str) -> Result<Self, HeaderError> {
        let value = value.trim_matches([' ', '\t']);
        if value.is_empty() {
            return Err(malformed(value, "empty value"));
        }
        if value.bytes().all(|b| b.is_ascii_digit()) {
            let secs = value.bytes().fold(0u64, |n, d| {
                n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
            });
            return Ok(Self::Delay(Duration::from_secs(secs)));
        }
        parse_imf_fixdate(value).map(|unix_secs| Self::At { unix_secs })
    }

    /// How long to wait from `now_unix_secs` (seconds since the Unix epoch, read by the
    /// caller): the delay itself, or the time until the date (zero if it has passed).
    pub fn delay_from(&self, now_unix_secs: u64) -> Duration {
        match *self {
            Self::Delay(delay) => delay,
            Self::At { unix_secs } => Duration::from_secs(unix_secs.saturating_sub(now_unix_secs)),
        }
    }
}

impl fmt::Display for RetryAfter {
    /// Delay-seconds rounded up (100 ms prints `1`), or the date as an IMF-fixdate.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Delay(delay) => write!(f, "{}", ceil_secs(delay)),
            Self::At { unix_secs } => f.write_str(&format_imf_fixdate(unix_secs)),
        }
    }
}

/// Encodes a wait as delay-seconds, rounded up so that a client is never early: a refusal
/// with `retry_after` of 100 ms gives `1`, zero gives `0`.
pub fn encode_retry_after(delay: Duration) -> String {
    ceil_secs(delay).to_string()
}

fn malformed(value: &str, reason: &'static str) -> HeaderError {
    HeaderError::Malformed {
        header: HEADER,
        part: part(value),
        reason,
    }
}

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Parses `Sun, 06 Nov 1994 08:49:37 GMT` strictly: exact layout, a weekday that matches
/// the date, a real day of the month, hours 0–23, minutes and seconds 0–59.
fn parse_imf_fixdate(value: &str) -> Result<u64, HeaderError> {
    let b = value.as_bytes();
    if b.len() != 29 || !value.is_ascii() {
        return Err(malformed(
            value,
            "not delay-seconds nor an IMF-fixdate like `Sun, 06 Nov 1994 08:49:37 GMT`",
        ));
    }
    // Every index below is < 29 and the value is ASCII, so the slices are in bounds.
    let piece = |from: usize, to: usize| value.get(from..to).unwrap_or_default();
    let layout_ok = b[3] == b','
        && b[4] == b' '
        && b[7] == b' '
        && b[11] == b' '
        && b[16] == b' '
        && b[19] == b':'
        && b[22] == b':'
        && piece(25, 29) == " GMT";
    if !layout_ok {
        return Err(malformed(
            value,
            "IMF-fixdate layout is `Sun, 06 Nov 1994 08:49:37 GMT` in",
        ));
    }
    let number = |from: usize, to: usize, what: &'static str| {
        let text = piece(from, to);
        if text.bytes().all(|c| c.is_ascii_digit()) {
            Ok(text.bytes().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
        } else {
            Err(malformed(text, what))
        }
    };
    let weekday = DAYS
        .iter()
        .position(|d| *d == piece(0, 3))
        .ok_or_else(|| malformed(piece(0, 3), "unknown day name"))?;
    let day = number(5, 7, "day is not two digits")?;
    let month = MONTHS
        .iter()
        .position(|m| *m == piece(8, 11))
        .ok_or_else(|| malformed(piece(8, 11), "unknown month name"))?;
    let year = number(12, 16, "year is not four digits")?;
    let hour = number(17, 19, "hour is not two digits")?;
    let minute = number(20, 22, "minute is not two digits")?;
    let second = number(23, 25, "second is not two digits")?;
    if year < 1970 {
        return Err(malformed(piece(12, 16), "year before 1970"));
    }
    let month = month as u64 + 1;
    // Four digits: the year fits in an i64, and the date's days in a u64 (year ≥ 1970).
    let (y, m, d) = (year.cast_signed(), month.cast_signed(), day.cast_signed());
    if day == 0 || d > calendar::days_in_month(y, m) {
        return Err(malformed(piece(5, 16), "no such day"));
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(malformed(piece(17, 25), "time of day out of range"));
    }
    let days = calendar::days_from_civil(y, m, d).cast_unsigned();
    // 1970-01-01 was a Thursday (index 3 from Monday).
    if (days + 3) % 7 != weekday as u64 {
        return Err(malformed(piece(0, 3), "day name does not match the date"));
    }
    Ok(days * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Formats seconds since the epoch as an IMF-fixdate. Years past 9999 cannot be written in
/// four digits and are printed in full (and will not parse back).
fn format_imf_fixdate(unix_secs: u64) -> String {
    let days = unix_secs / 86_400;
    let rest = unix_secs % 86_400;
    // u64 seconds are at most 2^48 days: no overflow as an i64.
    let (year, month, day) = calendar::civil_from_days(days.cast_signed());
    let weekday = DAYS
        .get(usize::try_from((days + 3) % 7).unwrap_or(0))
        .copied()
        .unwrap_or("Mon");
    let month_name = MONTHS
        .get(usize::try_from(month - 1).unwrap_or(0))
        .copied()
        .unwrap_or("Jan");
    format!(
        "{weekday}, {day:02} {month_name} {year:04} {:02}:{:02}:{:02} GMT",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The largest [`RetryAfter::At`] an IMF-fixdate can hold (four-digit years): 9999-12-31T23:59:59Z.
pub const MAX_IMF_UNIX_SECS: u64 = 253_402_300_799;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_seconds_rounded_up() {
        assert_eq!(encode_retry_after(Duration::from_millis(100)), "1");
        assert_eq!(encode_retry_after(Duration::from_secs(2)), "2");
        assert_eq!(encode_retry_after(Duration::from_millis(2001)), "3");
        assert_eq!(encode_retry_after(Duration::ZERO), "0");
        assert_eq!(RetryAfter::Delay(Duration::from_nanos(1)).to_string(), "1");
    }

    #[test]
    fn parses_delay_seconds_and_dates() {
        assert_eq!(
            RetryAfter::parse(" 120 "),
            Ok(RetryAfter::Delay(Duration::from_secs(120)))
        );
        assert_eq!(
            RetryAfter::parse("99999999999999999999999"),
            Ok(RetryAfter::Delay(Duration::from_secs(u64::MAX)))
        );
        assert_eq!(
            RetryAfter::parse("Sun, 06 Nov 1994 08:49:37 GMT"),
            Ok(RetryAfter::At {
                unix_secs: 784_111_777
            })
        );
        assert_eq!(
            RetryAfter::parse("Thu, 01 Jan 1970 00:00:00 GMT"),
            Ok(RetryAfter::At { unix_secs: 0 })
        );
        assert_eq!(
            RetryAfter::parse("Thu, 29 Feb 2024 12:00:00 GMT"),
            Ok(RetryAfter::At {
                unix_secs: 1_709_208_000
            })
        );
        assert_eq!(
            RetryAfter::parse("Fri, 31 Dec 9999 23:59:59 GMT"),
            Ok(RetryAfter::At {
                unix_secs: MAX_IMF_UNIX_SECS
            })
        );
    }

    #[test]
    fn formats_dates() {
        assert_eq!(
            RetryAfter::At {
                unix_secs: 784_111_777
            }
            .to_string(),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            RetryAfter::At { unix_secs: 0 }.to_string(),
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
    }

    #[test]
    fn delay_from_now() {
        let at = RetryAfter::At { unix_secs: 100 };
        assert_eq!(at.delay_from(40), Duration::from_secs(60));
        assert_eq!(at.delay_from(400), Duration::ZERO);
    }

    #[test]
    fn bad_values_name_the_part() {
        let cases = [
            ("", "empty", ""),
            ("-1", "IMF-fixdate", "-1"),
            (
                "Sunday, 06-Nov-94 08:49:37 GMT",
                "IMF-fixdate",
                "Sunday, 06-Nov-94 08:49:37 GMT",
            ),
            ("Mon, 06 Nov 1994 08:49:37 GMT", "does not match", "Mon"),
            ("Sun, 06 Nox 1994 08:49:37 GMT", "month", "Nox"),
            (
                "Sun, 31 Feb 1994 08:49:37 GMT",
                "no such day",
                "31 Feb 1994",
            ),
            ("Sun, 06 Nov 1994 24:49:37 GMT", "out of range", "24:49:37"),
            ("Sun, 06 Nov 1994 08:49:60 GMT", "out of range", "08:49:60"),
            ("Sun, 06 Nov 1969 08:49:37 GMT", "before 1970", "1969"),
            ("Sun, 0x Nov 1994 08:49:37 GMT", "day is not", "0x"),
            (
                "Sun, 06 Nov 1994 08:49:37 UTC",
                "layout",
                "Sun, 06 Nov 1994 08:49:37 UTC",
            ),
        ];
        for (input, reason, bad) in cases {
            match RetryAfter::parse(input) {
                Err(HeaderError::Malformed {
                    part, reason: r, ..
                }) => {
                    assert!(r.contains(reason), "{input}: {r}");
                    assert_eq!(part, bad, "{input}");
                }
                other => panic!("{input}: {other:?}"),
            }
        }
    }
}
