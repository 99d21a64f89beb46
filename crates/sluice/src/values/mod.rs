//! The value parsers of the command line: counts, percentages, alert levels, sizes,
//! durations, booleans, log formats, addresses and URLs, and (in [`admin`]) the values of
//! the admin commands.
//!
//! Flags (`crate::cli`) and config files (`crate::settings_file`) parse with the same
//! functions, so a value means the same on a command line, in an environment variable and
//! in a file. Each error says what was expected and names the value; clap (or the file's
//! reader) adds the flag or key. This module uses none of the subcommands: they and
//! `cli.rs` use it.

mod admin;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub(crate) use admin::{Entry, LimitSpec, ServerUrl, Token, parse_reason, parse_ttl};

/// The log formats: lines for humans, or one JSON object per line.
pub(crate) const LOG_FORMATS: [&str; 2] = ["human", "json"];

/// How `sluice batch` shows progress: a bar on a terminal (else log lines), a bar, log
/// lines every few seconds, or nothing.
pub(crate) const PROGRESS_MODES: [&str; 4] = ["auto", "bar", "log", "none"];

/// A count that must be at least one.
pub(crate) fn at_least_one(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(err) => Err(format!("not a whole number: {err}")),
    }
}

/// A count from 1 to 1,000,000 (a concurrency limit, a number of attempts).
pub(crate) fn parse_count(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        Ok(n) => Err(format!("must be from 1 to 1000000, got {n}")),
        Err(_) => Err("not a whole number".to_owned()),
    }
}

/// Parses a percentage from 1 to 100, with or without its `%`.
pub(crate) fn parse_percent(text: &str) -> Result<u8, String> {
    match text.trim().trim_end_matches('%').trim_end().parse::<u8>() {
        Ok(p) if (1..=100).contains(&p) => Ok(p),
        _ => Err(format!("expected a percentage from 1 to 100, got '{text}'")),
    }
}

/// Quota usage percentages that raise alerts, ascending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AlertLevels(pub(crate) Vec<u8>);

/// Comma-separated percentages from 1 to 100, strictly ascending (`60,80,95`).
pub(crate) fn parse_alert_levels(text: &str) -> Result<AlertLevels, String> {
    let mut levels = Vec::new();
    for part in text.split(',') {
        let level = parse_percent(part)?;
        if levels.last().is_some_and(|&last| level <= last) {
            return Err(format!(
                "levels must be ascending: {level} comes after {:?}",
                levels
            ));
        }
        levels.push(level);
    }
    Ok(AlertLevels(levels))
}

/// A size in bytes, with an optional binary suffix: `1048576`, `512KiB`, `8MiB`, `1GiB`.
pub(crate) fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: usize = digits
        .parse()
        .map_err(|_| "expected a number of bytes, e.g. 1048576 or 8MiB".to_owned())?;
    let factor: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown unit {other:?}: use KiB, MiB or GiB")),
    };
    let bytes = number
        .checked_mul(factor)
        .ok_or_else(|| "too large".to_owned())?;
    if bytes == 0 {
        return Err("must be more than zero".to_owned());
    }
    Ok(bytes)
}

/// `sluice batch --concurrency`: the adaptive limit, or a fixed one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Concurrency {
    /// Adaptive, between 1 and 100.
    Auto,
    /// Exactly this many in flight at most.
    Fixed(u32),
}

/// `auto` or a number of requests in flight, at least 1.
pub(crate) fn parse_concurrency(text: &str) -> Result<Concurrency, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("auto") {
        return Ok(Concurrency::Auto);
    }
    match text.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(Concurrency::Fixed(n)),
        _ => Err(format!("expected auto or a number ≥ 1, got '{text}'")),
    }
}

/// Parses a duration with the core's one duration grammar (`50ms`, `1.5s`, `1m30s`, `0`).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    sluice_core::time::parse_duration(text.trim()).map_err(|err| err.to_string())
}

/// A backoff schedule, `MIN..MAX` in the core's duration grammar (`60s..5m`): the first
/// retry's ceiling, doubling up to the last.
pub(crate) fn parse_backoff(text: &str) -> Result<sluice_core::Backoff, String> {
    let Some((base, max)) = text.split_once("..") else {
        return Err(format!("expected MIN..MAX, e.g. 60s..5m, got '{text}'"));
    };
    let base = parse_timeout(base).map_err(|e| format!("MIN: {e}"))?;
    let max = parse_timeout(max).map_err(|e| format!("MAX: {e}"))?;
    if max < base {
        return Err(format!("MAX ({max:?}) is below MIN ({base:?})"));
    }
    Ok(sluice_core::Backoff { base, max })
}

/// A timeout: a positive duration in the core's grammar (`30s`, `10m`, `1h`).
pub(crate) fn parse_timeout(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err("must be more than zero".to_owned());
    }
    Ok(duration)
}

/// Parses a yes-or-no value: true, false, yes, no, on, off, 1 or 0 (any case).
pub(crate) fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("expected true or false, got '{text}'")),
    }
}

/// A log format, as `--log-format` takes it.
pub(crate) fn parse_log_format(text: &str) -> Result<String, String> {
    one_of(text, &LOG_FORMATS)
}

/// A progress display, as `sluice batch --progress` takes it.
pub(crate) fn parse_progress(text: &str) -> Result<String, String> {
    one_of(text, &PROGRESS_MODES)
}

/// One of `choices` (`expected human or json`, `expected auto, bar, log or none`).
fn one_of(text: &str, choices: &[&str]) -> Result<String, String> {
    let text = text.trim();
    if choices.contains(&text) {
        return Ok(text.to_owned());
    }
    match choices {
        [] => Err("no value is allowed".to_owned()),
        [one] => Err(format!("expected {one}")),
        [init @ .., last] => Err(format!("expected {} or {last}", init.join(", "))),
    }
}

/// A string that is not empty, as `--name` takes it.
pub(crate) fn parse_text(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(text.to_owned())
}

/// A file or directory path that is not empty, as `--state-file` and `--input` take it.
pub(crate) fn parse_path(text: &str) -> Result<PathBuf, String> {
    parse_text(text).map(PathBuf::from)
}

/// An address to listen on, `IP:PORT`, as `--listen` takes it.
pub(crate) fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    text.trim()
        .parse()
        .map_err(|e: std::net::AddrParseError| e.to_string())
}

/// `sluice batch --upstream` and `--proxy`: an http:// (or, with the `tls` feature,
/// https://) URL with a host and no query.
pub(crate) fn parse_base_url(text: &str) -> Result<String, String> {
    let text = text.trim();
    let bad = |why: &str| Err(format!("{why}, got '{text}'"));
    let Ok(uri) = text.parse::<http::Uri>() else {
        return bad("expected a URL such as https://api.openai.com");
    };
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") if cfg!(feature = "tls") => {}
        Some("https") => return bad("https needs a build with the `tls` feature"),
        _ => return bad("expected an http:// or https:// URL"),
    }
    if uri.host().is_none_or(str::is_empty) {
        return bad("expected a URL with a host");
    }
    if uri.query().is_some() {
        return bad("expected a URL without a query");
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn backoffs_are_min_dot_dot_max() {
        let backoff = parse_backoff("60s..5m").unwrap();
        assert_eq!(backoff.base, Duration::from_secs(60));
        assert_eq!(backoff.max, Duration::from_secs(300));
        assert_eq!(
            parse_backoff(" 1s .. 1s ").unwrap().max,
            Duration::from_secs(1)
        );
        for (text, error) in [
            ("5m", "expected MIN..MAX, e.g. 60s..5m, got '5m'"),
            ("0..5m", "MIN: must be more than zero"),
            ("1s..", "MAX: "),
            ("5m..1m", "MAX (60s) is below MIN (300s)"),
        ] {
            let got = parse_backoff(text).unwrap_err();
            assert!(got.starts_with(error), "{text}: {got}");
        }
    }

    proptest! {
        /// Any text is a backoff or an error, never a panic; any MIN..MAX written from two
        /// durations reads back.
        #[test]
        fn backoff_text_never_panics_and_round_trips(
            text in ".{0,40}",
            base_ms in 1_u64..10_000_000,
            extra_ms in 0_u64..10_000_000,
        ) {
            let _ = parse_backoff(&text);
            let written = format!("{base_ms}ms..{}ms", base_ms + extra_ms);
            let backoff = parse_backoff(&written).unwrap();
            prop_assert_eq!(backoff.base, Duration::from_millis(base_ms));
            prop_assert_eq!(backoff.max, Duration::from_millis(base_ms + extra_ms));
        }
    }

    #[test]
    fn counts_must_be_positive() {
        assert!(at_least_one("0").is_err());
        assert!(at_least_one("x").is_err());
        assert_eq!(at_least_one("3"), Ok(3));
        assert!(parse_count("0").is_err());
        assert!(parse_count("1000001").unwrap_err().contains("1000000"));
        assert_eq!(parse_count("64"), Ok(64));
    }

    #[test]
    fn percentages_run_from_one_to_a_hundred() {
        assert_eq!(parse_percent("80"), Ok(80));
        assert_eq!(parse_percent("95%"), Ok(95));
        assert_eq!(parse_percent(" 100 "), Ok(100));
        assert!(parse_percent("0").is_err());
        assert!(parse_percent("101").is_err());
        assert!(parse_percent("half").unwrap_err().contains("'half'"));
    }

    #[test]
    fn alert_levels_are_ascending_percentages() {
        assert_eq!(
            parse_alert_levels("60,80,95"),
            Ok(AlertLevels(vec![60, 80, 95]))
        );
        assert_eq!(parse_alert_levels(" 90 "), Ok(AlertLevels(vec![90])));
        assert!(
            parse_alert_levels("80,60")
                .unwrap_err()
                .contains("ascending")
        );
        assert!(parse_alert_levels("0,50").unwrap_err().contains("1 to 100"));
        assert!(parse_alert_levels("50,x").unwrap_err().contains("'x'"));
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert!(parse_size("0").is_err());
        assert!(parse_size("8MB").unwrap_err().contains("MiB"));
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn concurrency_is_auto_or_a_positive_number() {
        assert_eq!(parse_concurrency("auto"), Ok(Concurrency::Auto));
        assert_eq!(parse_concurrency("AUTO"), Ok(Concurrency::Auto));
        assert_eq!(parse_concurrency("8"), Ok(Concurrency::Fixed(8)));
        assert_eq!(
            parse_concurrency("x"),
            Err("expected auto or a number ≥ 1, got 'x'".to_owned())
        );
        assert!(parse_concurrency("0").is_err());
        assert!(parse_concurrency("-3").is_err());
    }

    #[test]
    fn durations_parse_in_every_documented_form() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("0", ms(0)),
            ("50ms", ms(50)),
            ("1.5s", ms(1500)),
            ("1m30s", ms(90_000)),
            ("2min", ms(120_000)),
            ("1h", ms(3_600_000)),
            ("250us", Duration::from_micros(250)),
            ("7ns", Duration::from_nanos(7)),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_durations_name_the_bad_part() {
        for (text, part) in [
            ("50", "missing unit"),
            ("5x", "\"x\""),
            ("ms", "\"ms\""),
            ("", "empty"),
        ] {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains(part), "{text}: {err}");
        }
    }

    #[test]
    fn timeouts_are_more_than_zero() {
        assert_eq!(parse_timeout("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_timeout("0"), Err("must be more than zero".to_owned()));
        assert!(parse_timeout("soon").is_err());
    }

    #[test]
    fn booleans_take_the_usual_words() {
        for yes in ["true", "YES", "on", "1"] {
            assert_eq!(parse_bool(yes), Ok(true), "{yes}");
        }
        for no in ["false", "No", "off", "0"] {
            assert_eq!(parse_bool(no), Ok(false), "{no}");
        }
        assert!(parse_bool("maybe").unwrap_err().contains("'maybe'"));
    }

    #[test]
    fn formats_text_and_addresses() {
        assert_eq!(parse_log_format(" json"), Ok("json".to_owned()));
        assert_eq!(
            parse_log_format("xml"),
            Err("expected human or json".to_owned())
        );
        assert_eq!(parse_progress("log"), Ok("log".to_owned()));
        assert_eq!(
            parse_progress("loud"),
            Err("expected auto, bar, log or none".to_owned())
        );
        assert_eq!(parse_text(""), Err("must not be empty".to_owned()));
        assert_eq!(parse_path("a/b"), Ok(PathBuf::from("a/b")));
        assert_eq!(
            parse_listen("127.0.0.1:8090"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 8090)))
        );
        assert!(parse_listen("localhost").is_err());
    }

    #[test]
    fn base_urls_are_http_or_https_with_a_host() {
        assert_eq!(
            parse_base_url("http://127.0.0.1:8090"),
            Ok("http://127.0.0.1:8090".to_owned())
        );
        assert!(parse_base_url("https://api.openai.com/v1").is_ok());
        assert_eq!(
            parse_base_url("ftp://x"),
            Err("expected an http:// or https:// URL, got 'ftp://x'".to_owned())
        );
        assert!(parse_base_url("api.openai.com").is_err());
        assert!(
            parse_base_url("http://x/?a=1")
                .unwrap_err()
                .contains("query")
        );
    }
}
