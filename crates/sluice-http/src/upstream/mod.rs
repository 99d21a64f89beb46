//! Upstream signals: what a response says about the caller's rate limits, read from every
//! header family sluice knows and normalised into one [`UpstreamSignals`] per response.
//!
//! The outbound side (sluice-egress) reads this snapshot after each call to an upstream
//! API. The structured parts reuse this crate's codecs: the IETF fields through
//! [`read_limit_header`] and [`read_policy_header`], `Retry-After` through
//! [`RetryAfter::parse`], durations through sluice-core's `parse_duration`. RFC 3339 is
//! parsed by the small strict parser in `rfc3339.rs`.

use std::cmp::Reverse;
use std::fmt::{self, Write as _};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use sluice_core::Nanos;

use crate::error::{HeaderError, part};
use crate::sf::{self, Bare};
use crate::{
    LimitItem, PolicyItem, RATELIMIT, RATELIMIT_POLICY, encode_retry_after, joined,
    read_limit_header, read_policy_header,
};

mod rfc3339;
mod value;

pub use value::{LEGACY_EPOCH_THRESHOLD_SECS, MAX_SIGNAL_DURATION};

/// A family of rate limit headers an upstream may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Family {
    /// Anthropic: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`.
    Anthropic,
    /// OpenAI (and Azure OpenAI, Groq, …): `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`.
    OpenAi,
    /// The IETF `RateLimit` and `RateLimit-Policy` structured fields.
    Ietf,
    /// The legacy `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`.
    Legacy,
    /// `retry-after-ms` (OpenAI and Anthropic SDK convention).
    RetryAfterMs,
    /// `Retry-After` (RFC 9110 §10.2.3).
    RetryAfter,
    /// `x-should-retry` (OpenAI and Anthropic SDK convention).
    ShouldRetry,
}

impl Family {
    /// Every family, in order of precedence where they overlap.
    pub const ALL: [Self; 7] = [
        Self::Anthropic,
        Self::OpenAi,
        Self::Ietf,
        Self::Legacy,
        Self::RetryAfterMs,
        Self::RetryAfter,
        Self::ShouldRetry,
    ];

    fn bit(self) -> u8 {
        match self {
            Self::Anthropic => 1,
            Self::OpenAi => 1 << 1,
            Self::Ietf => 1 << 2,
            Self::Legacy => 1 << 3,
            Self::RetryAfterMs => 1 << 4,
            Self::RetryAfter => 1 << 5,
            Self::ShouldRetry => 1 << 6,
        }
    }

    /// A short human name: `Anthropic`, `OpenAI`, `RateLimit`, `X-RateLimit`,
    /// `retry-after-ms`, `Retry-After`, `x-should-retry`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Anthropic => "Anthropic",
            Self::OpenAi => "OpenAI",
            Self::Ietf => "RateLimit",
            Self::Legacy => "X-RateLimit",
            Self::RetryAfterMs => "retry-after-ms",
            Self::RetryAfter => "Retry-After",
            Self::ShouldRetry => "x-should-retry",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`Family`]s.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Families(u8);

impl Families {
    /// No family.
    pub const EMPTY: Self = Self(0);

    /// Whether `family` is in the set.
    pub fn contains(self, family: Family) -> bool {
        self.0 & family.bit() != 0
    }

    /// Adds `family`.
    pub fn insert(&mut self, family: Family) {
        self.0 |= family.bit();
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The families in the set, in the order of [`Family::ALL`].
    pub fn iter(self) -> impl Iterator<Item = Family> {
        Family::ALL.into_iter().filter(move |f| self.contains(*f))
    }
}

impl FromIterator<Family> for Families {
    fn from_iter<I: IntoIterator<Item = Family>>(iter: I) -> Self {
        let mut set = Self::EMPTY;
        for family in iter {
            set.insert(family);
        }
        set
    }
}

impl fmt::Debug for Families {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// What an upstream says about one quota dimension (requests, tokens, …). Every field is
/// `None` when the upstream did not say, said "unknown", or said something malformed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Dimension {
    /// The quota's capacity, never zero (a zero limit reads as unknown).
    pub limit: Option<u64>,
    /// Units left. `Some(0)` means exhausted. Reported as sent: it may exceed `limit`.
    pub remaining: Option<u64>,
    /// Time from `now` until the quota is back to full (or, for upstreams that say so, until
    /// the window resets). Zero when the reset instant has passed.
    pub reset_after: Option<Duration>,
    /// The quota's window, when the upstream states one (only the IETF `w` parameter does).
    pub window: Option<Duration>,
    /// The family these values came from; `None` for an unknown dimension.
    pub source: Option<Family>,
}

impl Dimension {
    /// Whether the upstream gave a limit or a remaining count (a reset alone says
    /// nothing about the quota and is dropped by [`UpstreamSignals::read`]).
    pub fn is_known(&self) -> bool {
        self.limit.is_some() || self.remaining.is_some()
    }

    /// Whether `remaining` is zero.
    pub fn is_exhausted(&self) -> bool {
        self.remaining == Some(0)
    }
}

/// One response's rate limit signals, normalised across upstream header families.
///
/// Built by [`UpstreamSignals::read`] from a response's status and headers and the current
/// time, which the caller passes in: nothing here reads a clock.
///
/// # Header families
///
/// | Family | Headers | Reset format |
/// |---|---|---|
/// | [`Family::Anthropic`] | `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}` | RFC 3339 instant, e.g. `2025-08-21T12:40:59Z` |
/// | [`Family::OpenAi`] | `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` | Go duration, e.g. `6m0s`, `1s`, `20ms`, `1h2m3.5s`; or bare seconds |
/// | [`Family::Ietf`] | `RateLimit` (`r`, `t`), `RateLimit-Policy` (`q`, `w`, `qu`) | whole seconds (`t`) |
/// | [`Family::Legacy`] | `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` | seconds from now, or a Unix time above 10^9 |
/// | [`Family::RetryAfterMs`] | `retry-after-ms` | milliseconds, fraction allowed (`1234.56`) |
/// | [`Family::RetryAfter`] | `Retry-After` | delay-seconds or IMF-fixdate (also `1.5`) |
/// | [`Family::ShouldRetry`] | `x-should-retry` | `true` / `false` |
///
/// Sources for the vendor headers: OpenAI's rate limits guide
/// (<https://platform.openai.com/docs/guides/rate-limits>, "Rate limits in headers": sample
/// values `60`, `150000`, `59`, `149984`, `1s`, `6m0s`); a real OpenAI response quoted on
/// <https://community.openai.com/t/how-to-get-rate-limit-reset-time-for-response-api/1268905>
/// (`12ms`, `9ms`, plus `*-tokens_usage_based` headers, which are not read); Azure OpenAI
/// sending `-1`, `-1`, `0` for a dimension it does not track
/// (<https://github.com/openai/openai-dotnet/issues/838>,
/// <https://learn.microsoft.com/en-us/answers/questions/5625878/>); Anthropic's rate limits
/// page (<https://docs.anthropic.com/en/api/rate-limits>, "Response headers"), as restated
/// in <https://docs.aws.amazon.com/claude-platform/latest/userguide/rate-limits.html>
/// (requests, combined tokens, input-tokens and output-tokens, each `-limit`, `-remaining`
/// and an RFC 3339 `-reset`), and a recorded Anthropic response in tidyllm's test fixtures
/// (<https://rdrr.io/cran/tidyllm/src/tests/testthat/claude/api.anthropic.com/v1/messages-e050b5-POST.R>);
/// `retry-after-ms` and `x-should-retry` as the official Python SDKs read them
/// (`_parse_retry_after_header` and `_should_retry` in `openai-python`'s and
/// `anthropic-sdk-python`'s `_base_client.py`: `retry-after-ms` first, as float
/// milliseconds; `x-should-retry` `true` or `false` overrides the status). Anthropic's
/// `anthropic-ratelimit-unified-*` and priority-tier headers are not read.
///
/// # Values
///
/// Surrounding spaces and tabs are ignored. A header sent on several lines with different
/// values is malformed; identical repeated lines are read once.
///
/// | Value | limit | remaining | reset, `retry-after-ms`, `Retry-After` |
/// |---|---|---|---|
/// | absent, empty or `-1` | unknown | unknown | unknown |
/// | `0` | unknown | 0 (exhausted) | zero (resets now, retry now); malformed as an RFC 3339 reset |
/// | other negative number | malformed | malformed | malformed |
/// | too large for a `u64` (durations: for `u64` nanoseconds) | malformed | malformed | malformed, except `Retry-After` delay-seconds: clamped, as RFC 9111 §1.2.2 asks |
/// | anything else not in the grammar | malformed | malformed | malformed |
///
/// - Counts are whole decimal numbers (no sign, no fraction).
/// - The IETF fields follow their structured-field grammar instead ([`read_limit_header`],
///   [`read_policy_header`]): a malformed item, `-1` included, makes the whole field
///   ignored; a zero `q` is an unknown limit and a zero `w` an unknown window.
/// - `X-RateLimit-Reset` is a decimal number of seconds. At most
///   [`LEGACY_EPOCH_THRESHOLD_SECS`] (10^9, i.e. 31 years) it is a delay from now; above it,
///   a Unix time (seconds since 1970), turned into a delay from `now`. A value too large
///   for sluice's time range (past the year 2554, such as a Unix time in milliseconds) is
///   malformed.
/// - Resets given as instants (RFC 3339, IMF-fixdate, legacy Unix times) become the delay
///   from `now`, zero once passed. Every duration is clamped to [`MAX_SIGNAL_DURATION`].
/// - A dimension counts only when its family gave a `limit` or a `remaining`: a reset alone
///   (Azure's `-1`, `-1`, `0`) leaves the dimension unknown.
///
/// Malformed values are never an error and never a panic: each is left out of the
/// snapshot and recorded in [`ignored`](Self::ignored), which the caller may log (this
/// crate has no logging dependency).
///
/// # Precedence
///
/// - Each dimension comes whole from one family, the first that makes it known in the order
///   Anthropic, OpenAI, IETF, legacy. Fields are never mixed across families, which may
///   count over different windows.
/// - `requests`: all four families. `tokens`: Anthropic (combined input and output), then
///   OpenAI. `input_tokens` and `output_tokens`: Anthropic only.
/// - IETF: the items whose policy has no `qu` or `qu="requests"` feed `requests`; among the
///   `RateLimit` items, the one with the fewest remaining units wins (ties: the latest
///   reset), with `limit` and `window` from the `RateLimit-Policy` item of the same name.
///   With only `RateLimit-Policy`, the smallest quota gives `limit` and `window`.
/// - Legacy `X-RateLimit-*` feed `requests`.
/// - `retry_after`: `retry-after-ms` over `Retry-After` (it is more precise), whatever the
///   status; a malformed one falls back to the other.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use http::{HeaderMap, StatusCode};
/// use sluice_core::Nanos;
/// use sluice_http::{Family, UpstreamSignals};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("x-ratelimit-limit-requests", "60".parse().unwrap());
/// headers.insert("x-ratelimit-remaining-requests", "0".parse().unwrap());
/// headers.insert("x-ratelimit-reset-requests", "6m0s".parse().unwrap());
/// headers.insert("x-ratelimit-limit-tokens", "-1".parse().unwrap());
/// headers.insert("retry-after-ms", "1500".parse().unwrap());
/// headers.insert("retry-after", "2".parse().unwrap());
/// // Unix time from the caller's wall clock: 2023-11-14T22:13:20Z.
/// let now = Nanos::new(1_700_000_000_000_000_000);
/// let signals = UpstreamSignals::read(StatusCode::TOO_MANY_REQUESTS, &headers, now);
/// assert_eq!(signals.requests.limit, Some(60));
/// assert!(signals.requests.is_exhausted());
/// assert_eq!(signals.requests.reset_after, Some(Duration::from_secs(360)));
/// assert_eq!(signals.requests.source, Some(Family::OpenAi));
/// assert_eq!(signals.tokens.limit, None); // -1: unknown
/// assert_eq!(signals.retry_after, Some(Duration::from_millis(1500)));
/// assert!(signals.ignored.is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamSignals {
    /// The response's status, as passed to [`read`](Self::read).
    pub status: StatusCode,
    /// Requests.
    pub requests: Dimension,
    /// Tokens (Anthropic: input and output combined).
    pub tokens: Dimension,
    /// Input tokens (Anthropic).
    pub input_tokens: Dimension,
    /// Output tokens (Anthropic).
    pub output_tokens: Dimension,
    /// How long the upstream asks to wait before retrying (`retry-after-ms` or
    /// `Retry-After`), measured from `now`.
    pub retry_after: Option<Duration>,
    /// The upstream's explicit word on whether to retry (`x-should-retry`).
    pub should_retry: Option<bool>,
    /// Every family with at least one header present, valid or not.
    pub seen: Families,
    /// The malformed header values that were ignored, each a [`HeaderError`] naming the
    /// header and the value.
    pub ignored: Vec<HeaderError>,
}

impl UpstreamSignals {
    /// Reads the signals of one response. `now` is the current time in nanoseconds since
    /// the Unix epoch (a wall clock, not a monotonic one), used to turn reset instants into
    /// delays. See the [type's documentation](Self) for the rules.
    pub fn read(status: StatusCode, headers: &HeaderMap, now: Nanos) -> Self {
        let seen = families_present(headers);
        if seen.is_empty() {
            return Self {
                status,
                ..Self::default()
            };
        }
        let mut reader = Reader {
            headers,
            ignored: Vec::new(),
        };
        let anthropic_reset = |text: &str| value::rfc3339_reset(text, now);
        let [
            anthropic_requests,
            anthropic_tokens,
            input_tokens,
            output_tokens,
        ] = ANTHROPIC
            .each_ref()
            .map(|names| reader.dimension(names, Family::Anthropic, anthropic_reset));
        let [openai_requests, openai_tokens] = OPENAI
            .each_ref()
            .map(|names| reader.dimension(names, Family::OpenAi, value::go_duration));
        let ietf = reader.ietf();
        let legacy = reader.dimension(&LEGACY, Family::Legacy, |text| {
            value::legacy_reset(text, now)
        });
        let retry_after_ms = reader.value(&RETRY_AFTER_MS, value::millis);
        let retry_after = reader.value(&RETRY_AFTER, |text| value::retry_after(text, now));
        let should_retry = reader.value(&X_SHOULD_RETRY, value::boolean);
        Self {
            status,
            requests: first_known([anthropic_requests, openai_requests, ietf, legacy]),
            tokens: first_known([anthropic_tokens, openai_tokens]),
            input_tokens: first_known([input_tokens]),
            output_tokens: first_known([output_tokens]),
            retry_after: retry_after_ms.or(retry_after),
            should_retry,
            seen,
            ignored: reader.ignored,
        }
    }

    /// The four dimensions with their names: `requests`, `tokens`, `input-tokens`,
    /// `output-tokens`.
    pub fn dimensions(&self) -> [(&'static str, &Dimension); 4] {
        [
            ("requests", &self.requests),
            ("tokens", &self.tokens),
            ("input-tokens", &self.input_tokens),
            ("output-tokens", &self.output_tokens),
        ]
    }

    /// How long the upstream suggests waiting before the next call: `retry_after` when it
    /// sent one, else the latest `reset_after` of the exhausted dimensions, else `None`.
    pub fn suggested_wait(&self) -> Option<Duration> {
        self.retry_after.or_else(|| {
            self.dimensions()
                .into_iter()
                .filter(|(_, d)| d.is_exhausted())
                .filter_map(|(_, d)| d.reset_after)
                .max()
        })
    }

    /// Writes the snapshot as an OpenAI-style upstream sends it (for fakes and tests):
    /// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` for the known fields of
    /// `requests` and `tokens` (resets with [`encode_go_duration`]), `retry-after-ms` and
    /// `Retry-After` (whole seconds, rounded up) for `retry_after`, and `x-should-retry`.
    /// Headers already in `headers` with those names are replaced; fields that are `None`
    /// are not written.
    ///
    /// [`read`](Self::read) gives back the same `requests`, `tokens`, `retry_after` and
    /// `should_retry` (with `source` set to OpenAI), except that a zero `limit` reads as
    /// unknown, a dimension with neither limit nor remaining is dropped, and `window` is not
    /// written.
    pub fn write_openai(&self, headers: &mut HeaderMap) {
        for (dimension, names) in [(&self.requests, &OPENAI[0]), (&self.tokens, &OPENAI[1])] {
            put(
                headers,
                &names.limit,
                dimension.limit.map(|n| n.to_string()),
            );
            put(
                headers,
                &names.remaining,
                dimension.remaining.map(|n| n.to_string()),
            );
            put(
                headers,
                &names.reset,
                dimension.reset_after.map(encode_go_duration),
            );
        }
        put(
            headers,
            &RETRY_AFTER_MS,
            self.retry_after.map(encode_millis),
        );
        put(
            headers,
            &RETRY_AFTER,
            self.retry_after.map(encode_retry_after),
        );
        put(
            headers,
            &X_SHOULD_RETRY,
            self.should_retry.map(|b| b.to_string()),
        );
    }
}

/// Formats a duration as Go's `time.Duration.String` does (`0s`, `20ms`, `1.5s`, `6m0s`,
/// `1h2m3.5s`), exact to the nanosecond, except that microseconds are written `us` where Go
/// writes `µs`, because header values must be ASCII. sluice-core's `parse_duration` reads
/// every output back.
pub fn encode_go_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return with_fraction(nanos / 1_000, nanos % 1_000, 3, "us");
    }
    if nanos < 1_000_000_000 {
        return with_fraction(nanos / 1_000_000, nanos % 1_000_000, 6, "ms");
    }
    let secs = duration.as_secs();
    let (hours, minutes, seconds) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    // Writing into a String cannot fail.
    if hours > 0 {
        let _ = write!(out, "{hours}h");
    }
    if hours > 0 || minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    out.push_str(&with_fraction(
        u128::from(seconds),
        u128::from(duration.subsec_nanos()),
        9,
        "s",
    ));
    out
}

/// `whole.fraction` with `digits` fraction digits, trailing zeros (and a bare `.`) dropped.
fn with_fraction(whole: u128, fraction: u128, digits: usize, unit: &str) -> String {
    if fraction == 0 {
        return format!("{whole}{unit}");
    }
    let fraction = format!("{fraction:0digits$}");
    format!("{whole}.{}{unit}", fraction.trim_end_matches('0'))
}

/// Milliseconds with up to six fraction digits: exact to the nanosecond.
fn encode_millis(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    with_fraction(nanos / 1_000_000, nanos % 1_000_000, 6, "")
}

/// One header: its wire name and the label errors use.
struct Field {
    name: HeaderName,
    label: &'static str,
}

impl Field {
    const fn new(name: &'static str) -> Self {
        Self {
            name: HeaderName::from_static(name),
            label: name,
        }
    }

    const fn labelled(name: &'static str, label: &'static str) -> Self {
        Self {
            name: HeaderName::from_static(name),
            label,
        }
    }
}

/// The three headers of one dimension.
struct Triple {
    limit: Field,
    remaining: Field,
    reset: Field,
}

impl Triple {
    fn fields(&self) -> [&Field; 3] {
        [&self.limit, &self.remaining, &self.reset]
    }
}

/// Requests, tokens (combined), input tokens, output tokens.
static ANTHROPIC: [Triple; 4] = [
    Triple {
        limit: Field::new("anthropic-ratelimit-requests-limit"),
        remaining: Field::new("anthropic-ratelimit-requests-remaining"),
        reset: Field::new("anthropic-ratelimit-requests-reset"),
    },
    Triple {
        limit: Field::new("anthropic-ratelimit-tokens-limit"),
        remaining: Field::new("anthropic-ratelimit-tokens-remaining"),
        reset: Field::new("anthropic-ratelimit-tokens-reset"),
    },
    Triple {
        limit: Field::new("anthropic-ratelimit-input-tokens-limit"),
        remaining: Field::new("anthropic-ratelimit-input-tokens-remaining"),
        reset: Field::new("anthropic-ratelimit-input-tokens-reset"),
    },
    Triple {
        limit: Field::new("anthropic-ratelimit-output-tokens-limit"),
        remaining: Field::new("anthropic-ratelimit-output-tokens-remaining"),
        reset: Field::new("anthropic-ratelimit-output-tokens-reset"),
    },
];

/// Requests, tokens.
static OPENAI: [Triple; 2] = [
    Triple {
        limit: Field::new("x-ratelimit-limit-requests"),
        remaining: Field::new("x-ratelimit-remaining-requests"),
        reset: Field::new("x-ratelimit-reset-requests"),
    },
    Triple {
        limit: Field::new("x-ratelimit-limit-tokens"),
        remaining: Field::new("x-ratelimit-remaining-tokens"),
        reset: Field::new("x-ratelimit-reset-tokens"),
    },
];

static LEGACY: Triple = Triple {
    limit: Field::labelled("x-ratelimit-limit", "X-RateLimit-Limit"),
    remaining: Field::labelled("x-ratelimit-remaining", "X-RateLimit-Remaining"),
    reset: Field::labelled("x-ratelimit-reset", "X-RateLimit-Reset"),
};

static RETRY_AFTER_MS: Field = Field::new("retry-after-ms");
static RETRY_AFTER: Field = Field::labelled("retry-after", "Retry-After");
static X_SHOULD_RETRY: Field = Field::new("x-should-retry");

/// The families with at least one header in `headers`.
fn families_present(headers: &HeaderMap) -> Families {
    let any = |triples: &[Triple]| {
        triples
            .iter()
            .flat_map(Triple::fields)
            .any(|field| headers.contains_key(&field.name))
    };
    let mut seen = Families::EMPTY;
    for (family, present) in [
        (Family::Anthropic, any(&ANTHROPIC)),
        (Family::OpenAi, any(&OPENAI)),
        (
            Family::Ietf,
            headers.contains_key(&RATELIMIT) || headers.contains_key(&RATELIMIT_POLICY),
        ),
        (Family::Legacy, any(std::slice::from_ref(&LEGACY))),
        (
            Family::RetryAfterMs,
            headers.contains_key(&RETRY_AFTER_MS.name),
        ),
        (Family::RetryAfter, headers.contains_key(&RETRY_AFTER.name)),
        (
            Family::ShouldRetry,
            headers.contains_key(&X_SHOULD_RETRY.name),
        ),
    ] {
        if present {
            seen.insert(family);
        }
    }
    seen
}

/// The first known candidate, or an unknown dimension.
fn first_known<const N: usize>(candidates: [Dimension; N]) -> Dimension {
    candidates
        .into_iter()
        .find(Dimension::is_known)
        .unwrap_or_default()
}

fn put(headers: &mut HeaderMap, field: &Field, text: Option<String>) {
    if let Some(text) = text
        && let Ok(value) = HeaderValue::try_from(text)
    {
        headers.insert(field.name.clone(), value);
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n).min(MAX_SIGNAL_DURATION)
}

/// Reads header values and records the malformed ones.
struct Reader<'a> {
    headers: &'a HeaderMap,
    ignored: Vec<HeaderError>,
}

impl<'a> Reader<'a> {
    fn malformed(&mut self, header: &'static str, value: &[u8], reason: &'static str) {
        let text = String::from_utf8_lossy(value);
        self.ignored.push(HeaderError::Malformed {
            header,
            part: part(text.trim_matches([' ', '\t'])),
            reason,
        });
    }

    /// The text of a single-valued header, or `None` when it is absent or cannot be read
    /// (then recorded).
    fn text(&mut self, field: &Field) -> Option<&'a str> {
        let mut lines = self.headers.get_all(&field.name).iter();
        let first = lines.next()?;
        if lines.any(|line| line != first) {
            self.malformed(field.label, first.as_bytes(), "several different values");
            return None;
        }
        match std::str::from_utf8(first.as_bytes()) {
            Ok(text) => Some(text),
            Err(_) => {
                self.malformed(field.label, first.as_bytes(), "value is not UTF-8");
                None
            }
        }
    }

    /// The value of a single-valued header, or `None` when absent, unknown or malformed
    /// (then recorded).
    fn value<T>(
        &mut self,
        field: &Field,
        parse: impl FnOnce(&str) -> value::Parsed<T>,
    ) -> Option<T> {
        let text = self.text(field)?;
        match parse(text) {
            Ok(value) => value,
            Err(reason) => {
                self.malformed(field.label, text.as_bytes(), reason);
                None
            }
        }
    }

    fn dimension(
        &mut self,
        names: &Triple,
        family: Family,
        reset: impl FnOnce(&str) -> value::Parsed<Duration>,
    ) -> Dimension {
        Dimension {
            limit: self.value(&names.limit, value::limit),
            remaining: self.value(&names.remaining, value::count),
            reset_after: self.value(&names.reset, reset),
            window: None,
            source: Some(family),
        }
    }

    /// The IETF fields' requests dimension (see [`UpstreamSignals`] for the rule).
    fn ietf(&mut self) -> Dimension {
        let limits: Vec<LimitItem> = self.ietf_items(read_limit_header);
        let policies: Vec<PolicyItem> = self.ietf_items(read_policy_header);
        let other_units = if policies.is_empty() {
            Vec::new()
        } else {
            policies_in_other_units(self.headers)
        };
        let counts_requests = |name: &str| !other_units.iter().any(|n| n == name);
        let window = |policy: &PolicyItem| Some(policy.window_secs).filter(|&w| w > 0).map(secs);
        let source = Some(Family::Ietf);
        let tightest = limits
            .iter()
            .filter(|item| counts_requests(&item.name))
            .min_by_key(|item| (item.remaining, Reverse(item.reset_secs)));
        if let Some(item) = tightest {
            let policy = policies.iter().find(|p| p.name == item.name);
            return Dimension {
                limit: policy.map(|p| p.quota).filter(|&q| q > 0),
                remaining: Some(item.remaining),
                reset_after: Some(secs(item.reset_secs)),
                window: policy.and_then(window),
                source,
            };
        }
        policies
            .iter()
            .filter(|p| counts_requests(&p.name) && p.quota > 0)
            .min_by_key(|p| p.quota)
            .map(|p| Dimension {
                limit: Some(p.quota),
                window: window(p),
                source,
                ..Dimension::default()
            })
            .unwrap_or_default()
    }

    fn ietf_items<T>(&mut self, read: fn(&HeaderMap) -> Result<Vec<T>, HeaderError>) -> Vec<T> {
        read(self.headers).unwrap_or_else(|err| {
            self.ignored.push(err);
            Vec::new()
        })
    }
}

/// The names of the `RateLimit-Policy` items whose quota unit (`qu`) is not `requests`
/// (`content-bytes`, `concurrent-requests`, or anything else).
fn policies_in_other_units(headers: &HeaderMap) -> Vec<String> {
    let Ok(Some(text)) = joined(headers, &RATELIMIT_POLICY, "RateLimit-Policy") else {
        return Vec::new();
    };
    let Ok(items) = sf::parse_list(&text) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let (Bare::String(name) | Bare::Token(name)) = &item.bare else {
                return None;
            };
            match item.param("qu") {
                None => None,
                Some(Bare::String(unit) | Bare::Token(unit)) if unit == "requests" => None,
                Some(_) => Some(name.clone()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_are_formatted_as_go_does() {
        let ns = Duration::from_nanos;
        for (duration, text) in [
            (Duration::ZERO, "0s"),
            (ns(1), "1ns"),
            (ns(999), "999ns"),
            (ns(1_500), "1.5us"),
            (ns(20_000_000), "20ms"),
            (ns(20_000_001), "20.000001ms"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_secs(360), "6m0s"),
            (Duration::from_millis(3_723_500), "1h2m3.5s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (ns(1_000_000_001), "1.000000001s"),
            (ns(u64::MAX), "5124095h34m33.709551615s"),
        ] {
            assert_eq!(encode_go_duration(duration), text);
            assert_eq!(
                sluice_core::time::parse_duration(text),
                Ok(duration),
                "{text}"
            );
        }
    }

    #[test]
    fn milliseconds_keep_their_fraction() {
        assert_eq!(encode_millis(Duration::from_millis(1500)), "1500");
        assert_eq!(encode_millis(Duration::from_micros(1_234_560)), "1234.56");
        assert_eq!(encode_millis(Duration::from_nanos(1)), "0.000001");
        assert_eq!(encode_millis(Duration::ZERO), "0");
    }

    #[test]
    fn family_sets() {
        let set: Families = [Family::RetryAfter, Family::OpenAi].into_iter().collect();
        assert!(set.contains(Family::OpenAi));
        assert!(!set.contains(Family::Anthropic));
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [Family::OpenAi, Family::RetryAfter]
        );
        assert_eq!(format!("{set:?}"), "{OpenAi, RetryAfter}");
        assert!(Families::EMPTY.is_empty());
        let all: Families = Family::ALL.into_iter().collect();
        assert_eq!(all.iter().count(), Family::ALL.len());
        assert_eq!(Family::Legacy.to_string(), "X-RateLimit");
    }

    #[test]
    fn header_names_are_what_the_families_say() {
        let names: Vec<&str> = ANTHROPIC
            .iter()
            .chain(&OPENAI)
            .chain([&LEGACY])
            .flat_map(Triple::fields)
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(names.len(), 21);
        assert!(names.contains(&"anthropic-ratelimit-output-tokens-reset"));
        assert!(names.contains(&"x-ratelimit-reset-tokens"));
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
    }
}
