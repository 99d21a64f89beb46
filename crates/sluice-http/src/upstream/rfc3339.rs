//! A strict RFC 3339 `date-time` parser (§5.6), for Anthropic's reset timestamps.
//!
//! ```text
//! 2025-08-21T12:40:59Z   2025-08-21T12:40:59.123456789+02:00   2025-08-21 12:40:59z
//! ```
//!
//! The separator may be `T`, `t` or a space (RFC 3339's note in §5.6), the offset `Z`, `z`
//! or `±hh:mm` (`-00:00` is UTC). Fraction digits past the nanosecond are dropped. A leap
//! second (`:60`) is accepted and counts as the first second of the next minute, as Unix
//! time has no leap seconds.

use sluice_core::calendar;

/// Nanoseconds since 1970-01-01T00:00:00Z (negative before it) of an RFC 3339 date-time.
pub(super) fn parse(text: &str) -> Result<i128, &'static str> {
    const LAYOUT: &str = "not an RFC 3339 date-time like 2025-08-21T12:40:59Z";
    let (fixed, rest) = text.as_bytes().split_at_checked(19).ok_or(LAYOUT)?;
    let [
        y1,
        y2,
        y3,
        y4,
        b'-',
        mo1,
        mo2,
        b'-',
        d1,
        d2,
        b'T' | b't' | b' ',
        h1,
        h2,
        b':',
        mi1,
        mi2,
        b':',
        s1,
        s2,
    ] = *fixed
    else {
        return Err(LAYOUT);
    };
    let year = digits(&[y1, y2, y3, y4]).ok_or(LAYOUT)?;
    let month = digits(&[mo1, mo2]).ok_or(LAYOUT)?;
    let day = digits(&[d1, d2]).ok_or(LAYOUT)?;
    let hour = digits(&[h1, h2]).ok_or(LAYOUT)?;
    let minute = digits(&[mi1, mi2]).ok_or(LAYOUT)?;
    let second = digits(&[s1, s2]).ok_or(LAYOUT)?;
    if !(1..=12).contains(&month) || day == 0 || day > calendar::days_in_month(year, month) {
        return Err("no such date");
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err("time of day out of range");
    }

    let (nanos, rest) = match rest.split_first() {
        Some((b'.', after)) => {
            let len = after.iter().take_while(|b| b.is_ascii_digit()).count();
            if len == 0 {
                return Err("a fraction of a second needs digits");
            }
            let (fraction, rest) = after.split_at(len);
            let nanos = (0..9).fold(0i128, |n, i| {
                let digit = fraction.get(i).map_or(0, |d| d - b'0');
                n * 10 + i128::from(digit)
            });
            (nanos, rest)
        }
        _ => (0, rest),
    };
    let offset_secs = match *rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = digits(&[h1, h2]).ok_or("bad offset")?;
            let minutes = digits(&[m1, m2]).ok_or("bad offset")?;
            if hours > 23 || minutes > 59 {
                return Err("offset out of range");
            }
            let secs = hours * 3600 + minutes * 60;
            if sign == b'-' { -secs } else { secs }
        }
        _ => return Err("the time must end in Z or an offset like +02:00"),
    };
    let secs =
        calendar::days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
            - offset_secs;
    Ok(i128::from(secs) * 1_000_000_000 + nanos)
}

/// The number written by ASCII digits, or `None` if any is not a digit.
fn digits(bytes: &[u8]) -> Option<i64> {
    bytes.iter().try_fold(0i64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + i64::from(b - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SEC: i128 = 1_000_000_000;

    fn format(secs: i64, nanos: u32) -> String {
        let (year, month, day) = calendar::civil_from_days(secs.div_euclid(86_400));
        let rest = secs.rem_euclid(86_400);
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
            rest / 3600,
            rest % 3600 / 60,
            rest % 60
        )
    }

    #[test]
    fn parses_utc_offsets_and_fractions() {
        for (text, want) in [
            ("1970-01-01T00:00:00Z", 0),
            ("2025-08-21T12:40:59Z", 1_755_780_059 * SEC),
            ("2025-08-21t12:40:59z", 1_755_780_059 * SEC),
            ("2025-08-21 12:40:59Z", 1_755_780_059 * SEC),
            ("2025-08-21T14:40:59+02:00", 1_755_780_059 * SEC),
            ("2025-08-21T07:10:59-05:30", 1_755_780_059 * SEC),
            ("2025-08-21T12:40:59-00:00", 1_755_780_059 * SEC),
            ("2025-08-21T12:40:59.5Z", 1_755_780_059 * SEC + SEC / 2),
            (
                "2025-08-21T12:40:59.1234567891234Z",
                1_755_780_059 * SEC + 123_456_789,
            ),
            ("2024-02-29T00:00:00Z", 1_709_164_800 * SEC),
            ("2016-12-31T23:59:60Z", 1_483_228_800 * SEC),
            ("1969-12-31T23:59:59Z", -SEC),
            ("0000-01-01T00:00:00Z", -62_167_219_200 * SEC),
            ("9999-12-31T23:59:59Z", 253_402_300_799 * SEC),
        ] {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_rfc_3339() {
        for (text, reason) in [
            ("", "not an RFC 3339"),
            ("2025-08-21", "not an RFC 3339"),
            ("2025-08-21T12:40:59", "must end in"),
            ("2025/08/21T12:40:59Z", "not an RFC 3339"),
            ("2025-08-21T12:40Z", "not an RFC 3339"),
            ("20x5-08-21T12:40:59Z", "not an RFC 3339"),
            ("2025-13-21T12:40:59Z", "no such date"),
            ("2025-00-21T12:40:59Z", "no such date"),
            ("2025-02-29T12:40:59Z", "no such date"),
            ("2025-04-31T12:40:59Z", "no such date"),
            ("2025-08-21T24:00:00Z", "out of range"),
            ("2025-08-21T12:60:00Z", "out of range"),
            ("2025-08-21T12:40:61Z", "out of range"),
            ("2025-08-21T12:40:59.Z", "needs digits"),
            ("2025-08-21T12:40:59+2:00", "must end in"),
            ("2025-08-21T12:40:59+0200", "must end in"),
            ("2025-08-21T12:40:59+24:00", "offset out of range"),
            ("2025-08-21T12:40:59+0x:00", "bad offset"),
            ("2025-08-21T12:40:59Z ", "must end in"),
            ("2025-08-21T12:40:59UTC", "must end in"),
            ("2025-08-21T12:40:59\u{e9}", "must end in"),
            ("\u{e9}025-08-21T12:40:59Z", "not an RFC 3339"),
        ] {
            match parse(text) {
                Err(r) => assert!(r.contains(reason), "{text}: {r}"),
                Ok(v) => panic!("{text}: {v}"),
            }
        }
    }

    proptest! {
        #[test]
        fn formatted_instants_parse_back(
            secs in -62_167_219_200i64..=253_402_300_799,
            nanos in 0u32..1_000_000_000,
        ) {
            let text = format(secs, nanos);
            prop_assert_eq!(parse(&text), Ok(i128::from(secs) * SEC + i128::from(nanos)));
        }

        #[test]
        fn never_panics(text in "\\PC{0,40}|[0-9T:.Zz+ -]{0,40}") {
            let _ = parse(&text);
        }
    }
}
