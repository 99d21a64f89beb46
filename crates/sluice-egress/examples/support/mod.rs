//! What the example programs share: their settings from the environment, and
//! percentiles (`http.rs`, for those that send over HTTP themselves: one timed request).

#![allow(dead_code, reason = "each example uses the parts it needs")]

use std::time::Duration;

/// The whole number in the environment variable `name`, else `default`.
pub(crate) fn env_number(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .map_err(|e| format!("{name}={value:?} is not a whole number: {e}")),
        Err(_) => Ok(default),
    }
}

/// The `p` percentile (0 to 1) of `sorted`, which is not empty.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a list"
    )]
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// A duration in whole microseconds, for a table.
pub(crate) fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}
