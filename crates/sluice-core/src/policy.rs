//! What a limit allows: an algorithm, a rate (limit per period) and a burst.
//!
//! Policies are validated when built, so every algorithm may assume a non-zero limit, a
//! non-zero period and arithmetic that cannot overflow.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::time::{duration_nanos, parse_duration, unit_nanos};

/// The longest span a policy may cover (period, or burst × emission interval): 2^62 ns,
/// about 146 years. Keeps every `now + span` far from `u64::MAX` for any realistic `now`.
pub const MAX_SPAN_NANOS: u64 = 1 << 62;

/// How a limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AlgorithmKind {
    /// Generic cell rate algorithm: a token bucket of `burst` tokens refilled at `limit` per
    /// `period`, kept as one timestamp. Also the leaky bucket as a meter.
    Gcra,
    /// At most `limit` per aligned window of length `period`.
    FixedWindow,
    /// The fixed window count plus the previous window's count weighted by how much of it
    /// still overlaps the sliding window.
    SlidingWindow,
    /// Exact: at most `limit` in any interval of length `period`, by keeping every admission.
    SlidingLog,
    /// At most `limit` units in flight; each lease expires after `period` if never released.
    Concurrency,
}

impl AlgorithmKind {
    /// Every algorithm, in declaration order.
    pub const ALL: [Self; 5] = [
        Self::Gcra,
        Self::FixedWindow,
        Self::SlidingWindow,
        Self::SlidingLog,
        Self::Concurrency,
    ];

    /// The canonical name, as accepted by [`FromStr`].
    pub const fn name(self) -> &'static str {
        match self {
            Self::Gcra => "gcra",
            Self::FixedWindow => "fixed_window",
            Self::SlidingWindow => "sliding_window",
            Self::SlidingLog => "sliding_log",
            Self::Concurrency => "concurrency",
        }
    }
}

impl fmt::Display for AlgorithmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AlgorithmKind {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "gcra" | "token_bucket" | "leaky_bucket" => Ok(Self::Gcra),
            "fixed_window" => Ok(Self::FixedWindow),
            "sliding_window" => Ok(Self::SlidingWindow),
            "sliding_log" => Ok(Self::SlidingLog),
            "concurrency" => Ok(Self::Concurrency),
            _ => Err(PolicyError::UnknownAlgorithm(s.to_owned())),
        }
    }
}

/// Why a policy or rate could not be built. Each variant names the offending part.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The limit was zero.
    #[error("limit must be at least 1, got 0")]
    ZeroLimit,
    /// The period was zero.
    #[error("period must be longer than zero")]
    ZeroPeriod,
    /// The burst was zero.
    #[error("burst must be at least 1, got 0")]
    ZeroBurst,
    /// The period is longer than [`MAX_SPAN_NANOS`].
    #[error("period {0:?} is longer than the maximum of about 146 years")]
    PeriodTooLong(Duration),
    /// More than one unit per nanosecond.
    #[error("rate {limit} per {period:?} is faster than one unit per nanosecond")]
    RateTooHigh {
        /// The requested limit.
        limit: u64,
        /// The requested period.
        period: Duration,
    },
    /// `burst × emission interval` exceeds [`MAX_SPAN_NANOS`].
    #[error("burst {0} takes longer than about 146 years to refill")]
    BurstTooLarge(u64),
    /// A burst other than the limit on an algorithm without a separate burst.
    #[error(
        "burst applies to gcra only; {algorithm} admits exactly its limit, so burst must be {limit} (got {burst})"
    )]
    BurstNotSupported {
        /// The algorithm the burst was given for.
        algorithm: AlgorithmKind,
        /// The policy's limit.
        limit: u64,
        /// The burst that was asked for.
        burst: u64,
    },
    /// The algorithm name is not one of [`AlgorithmKind::ALL`].
    #[error(
        "unknown algorithm {0:?}; expected gcra, fixed_window, sliding_window, sliding_log or concurrency"
    )]
    UnknownAlgorithm(String),
    /// A rate string could not be parsed; `part` is the piece at fault.
    #[error(
        "invalid rate {input:?}: {reason} {part:?} (expected e.g. \"100/s\", \"5000/min\", \"10/1h30m\")"
    )]
    InvalidRate {
        /// The whole input.
        input: String,
        /// The piece of the input at fault.
        part: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// `limit` units per `period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    limit: u64,
    period_nanos: u64,
}

impl Rate {
    /// `limit` units per `period`; both must be non-zero, the period at most
    /// [`MAX_SPAN_NANOS`], and the rate at most one unit per nanosecond.
    pub fn new(limit: u64, period: Duration) -> Result<Self, PolicyError> {
        if limit == 0 {
            return Err(PolicyError::ZeroLimit);
        }
        let period_nanos = duration_nanos(period);
        if period_nanos == 0 {
            return Err(PolicyError::ZeroPeriod);
        }
        if period_nanos > MAX_SPAN_NANOS {
            return Err(PolicyError::PeriodTooLong(period));
        }
        if limit > period_nanos {
            return Err(PolicyError::RateTooHigh { limit, period });
        }
        Ok(Self {
            limit,
            period_nanos,
        })
    }

    /// `limit` per second.
    pub fn per_second(limit: u64) -> Result<Self, PolicyError> {
        Self::new(limit, Duration::from_secs(1))
    }

    /// `limit` per minute.
    pub fn per_minute(limit: u64) -> Result<Self, PolicyError> {
        Self::new(limit, Duration::from_secs(60))
    }

    /// Units admitted per period.
    pub const fn limit(&self) -> u64 {
        self.limit
    }

    /// The period.
    pub const fn period(&self) -> Duration {
        Duration::from_nanos(self.period_nanos)
    }

    /// The period in nanoseconds.
    pub const fn period_nanos(&self) -> u64 {
        self.period_nanos
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.limit, format_period(self.period_nanos))
    }
}

impl FromStr for Rate {
    type Err = PolicyError;

    /// Parses `LIMIT/PERIOD`: `100/s`, `5000/min`, `4000000/min`, `10/1h30m`, `3/500ms`.
    /// A period is a unit word (`s`, `sec`, `second`, `min`, `minute`, `h`, `hour`, `d`,
    /// `day`, plurals allowed) or a duration in the grammar of
    /// [`parse_duration`] (`1h30m`, `1.5s`).
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let invalid = |part: &str, reason| PolicyError::InvalidRate {
            input: input.to_owned(),
            part: part.to_owned(),
            reason,
        };
        let (limit_text, period_text) = input
            .split_once('/')
            .ok_or_else(|| invalid(input, "missing '/' between limit and period in"))?;
        let limit_text = limit_text.trim();
        let limit: u64 = limit_text
            .replace('_', "")
            .parse()
            .map_err(|_| invalid(limit_text, "limit is not a whole number:"))?;
        let period_text = period_text.trim();
        let period = parse_period(period_text).map_err(|(part, reason)| invalid(&part, reason))?;
        Self::new(limit, period)
    }
}

/// Parses a period: a bare unit word (`s`, `min`, `hour`) or a duration like `1h30m`.
fn parse_period(text: &str) -> Result<Duration, (String, &'static str)> {
    if text.is_empty() {
        return Err((text.to_owned(), "missing period after '/':"));
    }
    if let Some(unit) = unit_nanos(text) {
        return Ok(Duration::from_nanos(unit));
    }
    if !text.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return Err((text.to_owned(), "unknown unit"));
    }
    parse_duration(text).map_err(|err| (err.part, err.reason))
}

fn format_period(nanos: u64) -> String {
    const UNITS: [(u64, &str); 5] = [
        (86_400_000_000_000, "d"),
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
    ];
    match nanos {
        1_000_000_000 => return "s".into(),
        60_000_000_000 => return "min".into(),
        3_600_000_000_000 => return "h".into(),
        86_400_000_000_000 => return "d".into(),
        _ => {}
    }
    if !nanos.is_multiple_of(1_000_000) {
        return format!("{nanos}ns");
    }
    let mut out = String::new();
    let mut rest = nanos;
    for (size, name) in UNITS {
        if rest >= size {
            out.push_str(&format!("{}{name}", rest / size));
            rest %= size;
        }
    }
    out
}

/// A validated limit: algorithm, rate and burst, with the derived emission interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Policy {
    algorithm: AlgorithmKind,
    rate: Rate,
    burst: u64,
    emission_nanos: u64,
}

impl Policy {
    /// A policy whose burst equals its limit (`10/s` admits 10 at once, then one every
    /// 100 ms).
    pub fn new(algorithm: AlgorithmKind, rate: Rate) -> Self {
        Self {
            algorithm,
            rate,
            burst: rate.limit,
            emission_nanos: emission_nanos(rate),
        }
    }

    /// A GCRA policy with burst equal to the limit.
    pub fn gcra(rate: Rate) -> Self {
        Self::new(AlgorithmKind::Gcra, rate)
    }

    /// Parses `algorithm` and `rate` (see [`Rate::from_str`]).
    pub fn parse(algorithm: &str, rate: &str) -> Result<Self, PolicyError> {
        Ok(Self::new(algorithm.parse()?, rate.parse()?))
    }

    /// The same policy with another burst. Only GCRA has a burst separate from its limit.
    pub fn with_burst(self, burst: u64) -> Result<Self, PolicyError> {
        if burst == 0 {
            return Err(PolicyError::ZeroBurst);
        }
        if self.algorithm != AlgorithmKind::Gcra && burst != self.rate.limit {
            return Err(PolicyError::BurstNotSupported {
                algorithm: self.algorithm,
                limit: self.rate.limit,
                burst,
            });
        }
        match burst.checked_mul(self.emission_nanos) {
            Some(span) if span <= MAX_SPAN_NANOS => Ok(Self { burst, ..self }),
            _ => Err(PolicyError::BurstTooLarge(burst)),
        }
    }

    /// The algorithm.
    pub const fn algorithm(&self) -> AlgorithmKind {
        self.algorithm
    }

    /// The rate.
    pub const fn rate(&self) -> Rate {
        self.rate
    }

    /// Units per period.
    pub const fn limit(&self) -> u64 {
        self.rate.limit
    }

    /// The period in nanoseconds.
    pub const fn period_nanos(&self) -> u64 {
        self.rate.period_nanos
    }

    /// The most units one request, or one instant, can ever get: the burst for GCRA, the
    /// limit for every other algorithm.
    pub const fn burst(&self) -> u64 {
        self.burst
    }

    /// Nanoseconds per unit, `ceil(period / limit)`: rounding up means sluice never admits
    /// more than the configured rate, at the price of at most one nanosecond per unit.
    pub const fn emission_nanos(&self) -> u64 {
        self.emission_nanos
    }

    /// Whether `cost` can ever be admitted by this policy.
    pub const fn admits_cost(&self, cost: u64) -> bool {
        cost <= self.burst
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.algorithm, self.rate)?;
        if self.burst != self.rate.limit {
            write!(f, " burst {}", self.burst)?;
        }
        Ok(())
    }
}

fn emission_nanos(rate: Rate) -> u64 {
    rate.period_nanos.div_ceil(rate.limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(s: &str) -> Rate {
        s.parse().unwrap()
    }

    #[test]
    fn parses_the_documented_forms() {
        let cases = [
            ("100/s", 100, 1_000_000_000),
            ("5000/min", 5000, 60_000_000_000),
            ("4000000/min", 4_000_000, 60_000_000_000),
            ("10/1h30m", 10, 5_400_000_000_000),
            ("3/500ms", 3, 500_000_000),
            ("1/day", 1, 86_400_000_000_000),
            ("7/2s", 7, 2_000_000_000),
            (" 12 / hour ", 12, 3_600_000_000_000),
            ("1_000/m", 1000, 60_000_000_000),
        ];
        for (input, limit, period) in cases {
            let r = rate(input);
            assert_eq!((r.limit(), r.period_nanos()), (limit, period), "{input}");
        }
    }

    #[test]
    fn errors_name_the_bad_part() {
        let cases = [
            ("100", "100"),
            ("x/s", "x"),
            ("10/", ""),
            ("10/3x", "x"),
            ("10/fortnight", "fortnight"),
            ("10/h5", "h5"),
            ("-1/s", "-1"),
        ];
        for (input, part) in cases {
            match input.parse::<Rate>() {
                Err(PolicyError::InvalidRate { part: got, .. }) => {
                    assert!(
                        got.contains(part),
                        "{input}: part {got:?} should name {part:?}"
                    );
                }
                other => panic!("{input}: expected InvalidRate, got {other:?}"),
            }
        }
        assert_eq!("0/s".parse::<Rate>(), Err(PolicyError::ZeroLimit));
        assert_eq!("5/0s".parse::<Rate>(), Err(PolicyError::ZeroPeriod));
        assert!(matches!(
            "2000000000/s".parse::<Rate>(),
            Err(PolicyError::RateTooHigh { .. })
        ));
    }

    #[test]
    fn error_messages_quote_input_and_part() {
        let err = "10/3x".parse::<Rate>().unwrap_err().to_string();
        assert!(err.contains("\"10/3x\"") && err.contains("\"x\""), "{err}");
    }

    #[test]
    fn display_round_trips() {
        for input in [
            "100/s", "5000/min", "10/1h30m", "3/500ms", "1/d", "9/1500ns",
        ] {
            let r = rate(input);
            assert_eq!(rate(&r.to_string()), r, "{input} -> {r}");
        }
    }

    #[test]
    fn burst_defaults_to_limit_and_is_validated() {
        let p = Policy::gcra(rate("10/s"));
        assert_eq!(p.burst(), 10);
        assert_eq!(p.emission_nanos(), 100_000_000);
        assert_eq!(p.with_burst(0), Err(PolicyError::ZeroBurst));
        assert_eq!(p.with_burst(3).unwrap().burst(), 3);
        let fixed = Policy::new(AlgorithmKind::FixedWindow, rate("10/s"));
        assert!(matches!(
            fixed.with_burst(3),
            Err(PolicyError::BurstNotSupported { .. })
        ));
        assert_eq!(fixed.with_burst(10).unwrap(), fixed);
        assert_eq!(
            Policy::gcra(rate("1/d")).with_burst(1 << 40),
            Err(PolicyError::BurstTooLarge(1 << 40))
        );
    }

    #[test]
    fn emission_interval_rounds_up() {
        assert_eq!(Policy::gcra(rate("3/s")).emission_nanos(), 333_333_334);
        assert_eq!(Policy::gcra(rate("4000000/min")).emission_nanos(), 15_000);
    }

    #[test]
    fn algorithm_names_round_trip() {
        for a in AlgorithmKind::ALL {
            assert_eq!(a.name().parse::<AlgorithmKind>().unwrap(), a);
        }
        assert_eq!(
            "token-bucket".parse::<AlgorithmKind>().unwrap(),
            AlgorithmKind::Gcra
        );
        assert!("lottery".parse::<AlgorithmKind>().is_err());
    }
}
