//! The value parsers of `sluice proxy`'s settings, shared by its flags (`crate::cli`)
//! and its config file: each value means the same on a command line and in the file.

use std::net::SocketAddr;
use std::time::Duration;

use crate::cli::parse_percent;

/// The log formats: lines for humans, or one JSON object per line.
pub(crate) const LOG_FORMATS: [&str; 2] = ["human", "json"];

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

/// A count from 1 to 1,000,000.
pub(crate) fn parse_concurrency(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        Ok(n) => Err(format!("must be from 1 to 1000000, got {n}")),
        Err(_) => Err("not a whole number".to_owned()),
    }
}

/// A timeout: a positive duration in the core's grammar (`30s`, `10m`, `1h`).
pub(crate) fn parse_timeout(text: &str) -> Result<Duration, String> {
    let duration = sluice_core::time::parse_duration(text.trim()).map_err(|e| e.to_string())?;
    if duration.is_zero() {
        return Err("must be more than zero".to_owned());
    }
    Ok(duration)
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

/// A log format, as `--log-format` takes it.
pub(super) fn parse_log_format(text: &str) -> Result<String, String> {
    let text = text.trim();
    if LOG_FORMATS.contains(&text) {
        Ok(text.to_owned())
    } else {
        Err(format!("expected {}", LOG_FORMATS.join(" or ")))
    }
}

/// An address to listen on, `IP:PORT`, as `--listen` takes it.
pub(super) fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    text.trim()
        .parse()
        .map_err(|e: std::net::AddrParseError| e.to_string())
}

/// A string that is not empty, as `--name` takes it.
pub(super) fn parse_text(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn percents_and_counts_have_ranges() {
        assert_eq!(parse_percent("80"), Ok(80));
        assert!(parse_percent("0").is_err());
        assert!(parse_percent("101").is_err());
        assert!(parse_concurrency("0").is_err());
        assert_eq!(parse_concurrency("64"), Ok(64));
        assert!(parse_timeout("0").is_err());
    }
}
