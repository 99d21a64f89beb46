//! `sluice check`: ask one limit for several decisions in a row and print each one.
//!
//! The decisions go through the async [`Store`] trait on a fresh [`MemoryStore`], or on a
//! [`RedisStore`] shared with every other process using the same Redis, exactly as a server
//! would make them, driven by a small current-thread runtime. The store reads the
//! real monotonic clock, so `--interval` lets a user watch the limit refill.

use std::io::{self, Write};
use std::time::Duration;

use anyhow::Context as _;
use sluice_core::{Decision, Key, Policy};
use sluice_redis::RedisStore;
use sluice_store::{Limit, MemoryStore, Store};

use crate::cli::CheckArgs;

/// Makes `args.times` decisions of `args.cost` units against `policy` and prints them.
pub(crate) fn run(args: &CheckArgs, policy: Policy) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let key = Key::named(&args.key);
    let limit = Limit::new(&key, &policy);
    let mut out = io::stdout().lock();
    let table = Table::new(&policy, args.times);
    if !args.json {
        let place = if args.redis.is_some() {
            "in Redis"
        } else {
            "in memory"
        };
        writeln!(
            out,
            "{policy} on key {:?} {place}, cost {} per decision",
            key.as_str(),
            args.cost
        )?;
        table.header(&mut out)?;
    }
    let emit = |n: u64, decision: &Decision| {
        if args.json {
            writeln!(out, "{}", json_line(decision))
        } else {
            table.row(&mut out, n, decision)
        }
    };
    runtime.block_on(async {
        match &args.redis {
            // The URL may carry a password: it is never printed.
            Some(url) => {
                let store = RedisStore::connect(url)
                    .await
                    .context("cannot connect to the Redis given by --redis")?;
                decide(&store, limit, args.cost, args.times, args.interval, emit).await
            }
            None => {
                let store = MemoryStore::new();
                decide(&store, limit, args.cost, args.times, args.interval, emit).await
            }
        }
    })
}

/// Makes `times` decisions in a row on any store, `interval` apart, handing each to `emit`
/// as it is made.
async fn decide<S: Store>(
    store: &S,
    limit: Limit<'_>,
    cost: u64,
    times: u64,
    interval: Duration,
    mut emit: impl FnMut(u64, &Decision) -> io::Result<()>,
) -> anyhow::Result<()> {
    for n in 1..=times {
        if n > 1 && !interval.is_zero() {
            tokio::time::sleep(interval).await;
        }
        let decision = store
            .check(limit, cost)
            .await
            .context("the store failed to decide")?;
        emit(n, &decision)?;
    }
    Ok(())
}

/// One decision as a JSON object. Durations are whole milliseconds, rounded up so that
/// waiting `retry_after_ms` is always enough; `retry_after_ms` is null when allowed and
/// when no wait can help. `cost_exceeds_capacity` appears only when true.
fn json_line(d: &Decision) -> serde_json::Value {
    let mut line = serde_json::json!({
        "allowed": d.allowed,
        "limit": d.limit,
        "remaining": d.remaining,
        "reset_after_ms": millis_ceil(d.reset_after),
        "retry_after_ms": d.retry_after.map(millis_ceil),
    });
    if d.cost_exceeds_capacity {
        line["cost_exceeds_capacity"] = true.into();
    }
    line
}

fn millis_ceil(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// Column widths of the table, wide enough for the policy's numbers.
#[derive(Debug)]
struct Table {
    n: usize,
    limit: usize,
    remaining: usize,
}

impl Table {
    const HEADERS: [&str; 6] = [
        "#",
        "allowed",
        "limit",
        "remaining",
        "reset_after",
        "retry_after",
    ];

    fn new(policy: &Policy, times: u64) -> Self {
        let digits = policy.burst().to_string().len();
        Self {
            n: times.to_string().len(),
            limit: digits.max("limit".len()),
            remaining: digits.max("remaining".len()),
        }
    }

    fn header(&self, out: &mut impl Write) -> io::Result<()> {
        let [n, allowed, limit, remaining, reset, retry] = Self::HEADERS;
        writeln!(
            out,
            "{n:>nw$}  {allowed:<7}  {limit:>lw$}  {remaining:>rw$}  {reset:>11}  {retry:>11}",
            nw = self.n,
            lw = self.limit,
            rw = self.remaining,
        )
    }

    fn row(&self, out: &mut impl Write, n: u64, d: &Decision) -> io::Result<()> {
        let allowed = if d.allowed { "yes" } else { "no" };
        let retry = match d.retry_after {
            Some(wait) => human(wait),
            None if d.cost_exceeds_capacity => "never".to_owned(),
            None => "-".to_owned(),
        };
        writeln!(
            out,
            "{n:>nw$}  {allowed:<7}  {:>lw$}  {:>rw$}  {:>11}  {retry:>11}",
            d.limit,
            d.remaining,
            human(d.reset_after),
            nw = self.n,
            lw = self.limit,
            rw = self.remaining,
        )
    }
}

/// A duration for people: `0s`, `750ns`, `12.5µs`, `100ms`, `1.5s`, `59.9s`, `1m30s`,
/// `2h5m`. Three significant digits below a minute, whole seconds above.
fn human(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    // Precision loss is irrelevant here: three significant digits are shown.
    #[allow(clippy::cast_precision_loss, reason = "display only")]
    let f = nanos as f64;
    let (value, unit) = match nanos {
        // Thresholds sit where rounding to three digits would show 1000 of the smaller unit.
        ..999_500 => (f / 1e3, "µs"),
        999_500..999_500_000 => (f / 1e6, "ms"),
        _ => (f / 1e9, "s"),
    };
    if value < 59.95 || unit != "s" {
        let decimals = if value >= 99.95 {
            0
        } else if value >= 9.995 {
            1
        } else {
            2
        };
        let text = format!("{value:.decimals$}");
        let text = if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.')
        } else {
            &text
        };
        return format!("{text}{unit}");
    }
    let secs = d.as_secs() + u64::from(d.subsec_nanos() >= 500_000_000);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (amount, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if amount > 0 {
            out.push_str(&format!("{amount}{unit}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_read_naturally() {
        let ms = Duration::from_millis;
        for (d, want) in [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(750), "750ns"),
            (Duration::from_nanos(12_500), "12.5µs"),
            (ms(100), "100ms"),
            (Duration::from_nanos(99_999_990), "100ms"),
            (Duration::from_nanos(99_912_345), "99.9ms"),
            (Duration::from_nanos(999_600_000), "1s"),
            (Duration::from_nanos(999_400_000), "999ms"),
            (ms(1500), "1.5s"),
            (ms(1234), "1.23s"),
            (ms(20_000), "20s"),
            (ms(59_900), "59.9s"),
            (ms(60_000), "1m"),
            (ms(90_000), "1m30s"),
            (ms(7_500_000), "2h5m"),
        ] {
            assert_eq!(human(d), want, "{d:?}");
        }
    }

    #[test]
    fn json_has_exactly_the_documented_fields() {
        let allowed = Decision::allow(10, 9, Duration::from_nanos(100_000_001));
        assert_eq!(
            json_line(&allowed).to_string(),
            r#"{"allowed":true,"limit":10,"remaining":9,"reset_after_ms":101,"retry_after_ms":null}"#
        );
        let refused = Decision::deny(10, 0, Duration::from_secs(1), Duration::from_micros(1));
        assert_eq!(json_line(&refused)["retry_after_ms"], 1);
        let never = Decision::exceeds_capacity(10, 10, Duration::ZERO);
        assert_eq!(json_line(&never)["cost_exceeds_capacity"], true);
        assert!(json_line(&never)["retry_after_ms"].is_null());
    }

    #[test]
    fn rows_line_up_under_the_header() {
        let table = Table::new(&Policy::gcra("10/s".parse().unwrap()), 12);
        let mut out = Vec::new();
        table.header(&mut out).unwrap();
        table
            .row(
                &mut out,
                1,
                &Decision::allow(10, 9, Duration::from_millis(100)),
            )
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0].len(), lines[1].len(), "{text}");
    }
}
