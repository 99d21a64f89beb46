//! What an upstream's answer means for retrying: [`classify_status`] sorts a response into
//! an [`Outcome`], and [`may_retry`] decides whether a failure of that [`ErrorClass`] may be
//! sent again.
//!
//! Pure: no I/O, no clock. The transport side (the client) maps its own errors to
//! [`ErrorClass::Timeout`], [`ErrorClass::Connect`] and [`ErrorClass::ConnectionReset`].
//!
//! # Statuses
//!
//! | Status | Class | Why |
//! |---|---|---|
//! | 1xx, 2xx, 3xx | [`Outcome::Success`] | answered; an unfollowed redirect is not a limiter's business |
//! | 429 | [`RateLimited`](ErrorClass::RateLimited), or [`QuotaExhausted`](ErrorClass::QuotaExhausted) when the body says so | not processed; wait for the hint |
//! | 402 | [`QuotaExhausted`](ErrorClass::QuotaExhausted) | Payment Required is billing by definition (OpenRouter, DeepSeek) |
//! | 400 | [`QuotaExhausted`](ErrorClass::QuotaExhausted) when the body names a billing problem, else [`NotRetryable`](ErrorClass::NotRetryable) | Anthropic's "credit balance is too low" and Bedrock's `ServiceQuotaExceededException` are 400s |
//! | 403 | [`QuotaExhausted`](ErrorClass::QuotaExhausted) or [`RateLimited`](ErrorClass::RateLimited) when the body says so, else [`NotRetryable`](ErrorClass::NotRetryable) | Google (`rateLimitExceeded`, `dailyLimitExceeded`) and GitHub send rate limits as 403 |
//! | 408 | [`ServerError`](ErrorClass::ServerError) | the server gave up on the request; a proxy may have forwarded part of it, so it is retried like a 5xx, not like a 429 |
//! | 501, 505 | [`NotRetryable`](ErrorClass::NotRetryable) | the server does not support what was asked: the same request fails again |
//! | other 4xx | [`NotRetryable`](ErrorClass::NotRetryable) | the request is wrong |
//! | 503, 529 | [`Overloaded`](ErrorClass::Overloaded) | busy (529 is Anthropic's `overloaded_error`) |
//! | other 5xx, 600–999 | [`ServerError`](ErrorClass::ServerError) | the upstream failed, or sent a status HTTP does not define |
//!
//! # Body sniffing
//!
//! For 400, 403 and 429 the first [`SNIFF_LIMIT`] bytes of the body are searched, ASCII
//! case-insensitively, for known wording. Raw bytes, not parsed JSON: a truncated JSON body
//! does not parse, and JSON, plain text and HTML all carry the same words. In order:
//!
//! 1. **Billing** → quota exhausted: OpenAI's `insufficient_quota`,
//!    `billing_hard_limit_reached` and `billing_not_active`; Anthropic's "credit balance is
//!    too low" and "usage limits"; Bedrock's `ServiceQuotaExceeded`; "insufficient
//!    credits". The only wording a 400 is sniffed for.
//! 2. **Long-window quota** → quota exhausted: daily or monthly wording ("per day",
//!    Google's `PerDay` quota ids and `dailyLimitExceeded`, OpenAI's `(RPD)`/`(TPD)`,
//!    "daily", "monthly"). Waiting a few seconds cannot help, so the caller pauses.
//! 3. **Short-window wording** → rate limited: "per minute", "per second", `(RPM)`, `(TPM)`,
//!    "rate limit", "too many requests", "try again in", Gemini's `retryDelay`, "throttl…".
//!    These decide Gemini's ambiguous "You exceeded your current quota" (sent for
//!    per-minute and per-day quotas alike) and Google's "Quota exceeded for quota metric …
//!    per minute".
//! 4. **Quota wording without a window** → quota exhausted: "exceeded your current quota",
//!    "quota exceeded", `quotaExceeded` (YouTube's daily quota), "out of quota".
//!
//! Bedrock names its exception in the `x-amzn-ErrorType` header, which this function does not
//! see; its message ("exceeds the service quota", "Too many tokens per day") is matched
//! instead.

use std::error::Error as StdError;
use std::fmt;

use http::{Method, StatusCode};

/// How many leading bytes of a body [`classify_status`] reads. Error bodies are small; the
/// bound keeps a huge or endless body from costing more than this.
pub const SNIFF_LIMIT: usize = 4096;

/// Why an upstream call failed, as far as retrying is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// 429 (not a quota exhausted): the upstream did not process the request; retry after its
    /// hint.
    RateLimited,
    /// The account's quota or credit is used up (billing, a daily limit): no fast retry; the
    /// caller pauses until the quota resets or someone pays.
    QuotaExhausted,
    /// 503 or 529: the upstream says it is busy; retry with backoff.
    Overloaded,
    /// Any other 5xx, and 408: the upstream failed, perhaps after doing some of the work.
    ServerError,
    /// No answer in time (transport): the request may have been processed.
    Timeout,
    /// Could not connect: the request was never sent.
    Connect,
    /// The connection broke after the request was sent: it may have been processed.
    ConnectionReset,
    /// Any other 4xx: the request is wrong, and sending it again cannot help.
    NotRetryable,
}

impl ErrorClass {
    /// Every class, in declaration order (for metrics that pre-register one series each).
    pub const ALL: [Self; 8] = [
        Self::RateLimited,
        Self::QuotaExhausted,
        Self::Overloaded,
        Self::ServerError,
        Self::Timeout,
        Self::Connect,
        Self::ConnectionReset,
        Self::NotRetryable,
    ];

    /// A stable snake_case name, usable as a metric label: `rate_limited`,
    /// `quota_exhausted`, `overloaded`, `server_error`, `timeout`, `connect`,
    /// `connection_reset`, `not_retryable`.
    pub fn name(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::QuotaExhausted => "quota_exhausted",
            Self::Overloaded => "overloaded",
            Self::ServerError => "server_error",
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::ConnectionReset => "connection_reset",
            Self::NotRetryable => "not_retryable",
        }
    }

    /// Whether the upstream says it has too much traffic ([`RateLimited`](Self::RateLimited),
    /// [`Overloaded`](Self::Overloaded)): the signal an AIMD controller decreases on.
    pub fn is_congestion(self) -> bool {
        matches!(self, Self::RateLimited | Self::Overloaded)
    }

    /// Whether the failure says the upstream is unwell and should count towards opening a
    /// circuit breaker. A rate limit, an exhausted quota or a bad request come from a
    /// healthy upstream doing its job, so they do not count.
    pub fn counts_against_breaker(self) -> bool {
        matches!(
            self,
            Self::ServerError
                | Self::Overloaded
                | Self::Timeout
                | Self::Connect
                | Self::ConnectionReset
        )
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How one upstream call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The upstream answered with a status below 400.
    Success,
    /// The call failed, for the reason given.
    Failure(ErrorClass),
}

impl Outcome {
    /// The failure's class; `None` for a success.
    pub fn error_class(self) -> Option<ErrorClass> {
        match self {
            Self::Success => None,
            Self::Failure(class) => Some(class),
        }
    }
}

/// Sorts a response by its status and, for 400, 403 and 429, the first [`SNIFF_LIMIT`] bytes
/// of its body (see the [module docs](self) for the table and the wording matched).
///
/// Never panics, whatever the status and bytes.
pub fn classify_status(status: StatusCode, body: Option<&[u8]>) -> Outcome {
    let code = status.as_u16();
    if code < 400 {
        return Outcome::Success;
    }
    let class = match code {
        429 => match sniff(body) {
            Some(Sniffed::Billing | Sniffed::Quota) => ErrorClass::QuotaExhausted,
            _ => ErrorClass::RateLimited,
        },
        402 => ErrorClass::QuotaExhausted,
        // A 400 that says "daily" or "rate limit" is more likely a validation error about a
        // parameter than a quota, so only billing wording counts.
        400 => match sniff(body) {
            Some(Sniffed::Billing) => ErrorClass::QuotaExhausted,
            _ => ErrorClass::NotRetryable,
        },
        403 => match sniff(body) {
            Some(Sniffed::Billing | Sniffed::Quota) => ErrorClass::QuotaExhausted,
            Some(Sniffed::RateLimit) => ErrorClass::RateLimited,
            None => ErrorClass::NotRetryable,
        },
        408 => ErrorClass::ServerError,
        503 | 529 => ErrorClass::Overloaded,
        501 | 505 => ErrorClass::NotRetryable,
        _ if code < 500 => ErrorClass::NotRetryable,
        _ => ErrorClass::ServerError,
    };
    Outcome::Failure(class)
}

/// What a body's wording says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sniffed {
    /// Billing or an account-wide quota.
    Billing,
    /// A quota over a day or longer, or over no stated window.
    Quota,
    /// A quota over a short window.
    RateLimit,
}

/// Billing and account quotas: no retry within seconds can succeed. Lowercase.
const BILLING_MARKERS: &[&[u8]] = &[
    b"insufficient_quota",
    b"billing_hard_limit_reached",
    b"billing_not_active",
    b"credit balance is too low",
    b"insufficient credits",
    b"insufficient_credits",
    b"usage limit",
    b"servicequotaexceeded",
    b"exceeds the service quota",
];

/// Daily and monthly quotas. Lowercase.
const LONG_WINDOW_MARKERS: &[&[u8]] = &[
    b"per day",
    b"perday",
    b"daily",
    b"(rpd)",
    b"(tpd)",
    b"per month",
    b"permonth",
    b"monthly",
];

/// Short windows: the quota comes back within seconds or minutes. Lowercase.
const RATE_LIMIT_MARKERS: &[&[u8]] = &[
    b"per min",
    b"permin",
    b"per sec",
    b"persec",
    b"(rpm)",
    b"(tpm)",
    b"(rps)",
    b"rate limit",
    b"rate_limit",
    b"ratelimit",
    b"too many requests",
    b"try again in",
    b"retry in",
    b"retrydelay",
    b"throttl",
];

/// Quota wording that names no window. Lowercase.
const VAGUE_QUOTA_MARKERS: &[&[u8]] = &[
    b"exceeded your current quota",
    b"exceeded your quota",
    b"quota exceeded",
    b"quotaexceeded",
    b"quota_exceeded",
    b"out of quota",
];

fn sniff(body: Option<&[u8]>) -> Option<Sniffed> {
    let body = body?;
    let len = body.len().min(SNIFF_LIMIT);
    // A stack copy: lowercasing once is cheaper than case-folding per marker, and avoids
    // allocating on the error path.
    let mut buf = [0_u8; SNIFF_LIMIT];
    let head = &mut buf[..len];
    head.copy_from_slice(&body[..len]);
    head.make_ascii_lowercase();
    let head = &*head;
    let any = |markers: &[&[u8]]| markers.iter().any(|m| contains(head, m));
    if any(BILLING_MARKERS) {
        Some(Sniffed::Billing)
    } else if any(LONG_WINDOW_MARKERS) {
        Some(Sniffed::Quota)
    } else if any(RATE_LIMIT_MARKERS) {
        Some(Sniffed::RateLimit)
    } else if any(VAGUE_QUOTA_MARKERS) {
        Some(Sniffed::Quota)
    } else {
        None
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether sending a request twice has the same effect as sending it once (RFC 9110
/// §9.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Idempotency {
    /// Safe to repeat: GET, HEAD, OPTIONS, TRACE, PUT, DELETE, or a POST the caller made
    /// idempotent (an `Idempotency-Key` header the upstream honours).
    Idempotent,
    /// Repeating it may repeat its effect (POST, PATCH, CONNECT, unknown methods).
    NotIdempotent,
}

impl Idempotency {
    /// What RFC 9110 says of `method`. Methods it does not define count as not idempotent:
    /// nothing says they are safe to repeat.
    pub fn of_method(method: &Method) -> Self {
        if [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::TRACE,
            Method::PUT,
            Method::DELETE,
        ]
        .contains(method)
        {
            Self::Idempotent
        } else {
            Self::NotIdempotent
        }
    }
}

/// The caller's retry choices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RetryRules {
    /// Retry non-idempotent requests after failures that may have been processed
    /// (overloaded, server error, timeout, connection reset). Off by default: a retried
    /// POST may charge or write twice. Turn it on for upstreams where a repeat is harmless,
    /// such as most LLM completion APIs.
    pub retry_non_idempotent: bool,
}

/// Whether a failure of `class` may be retried for a request of `idempotency`.
///
/// - `should_retry == Some(false)` (the upstream's `x-should-retry: false`) forbids every
///   retry.
/// - [`QuotaExhausted`](ErrorClass::QuotaExhausted) and
///   [`NotRetryable`](ErrorClass::NotRetryable): never (on a quota exhausted the caller
///   pauses instead).
/// - [`RateLimited`](ErrorClass::RateLimited) and [`Connect`](ErrorClass::Connect): always;
///   the upstream did not process the request.
/// - [`Overloaded`](ErrorClass::Overloaded), [`ServerError`](ErrorClass::ServerError),
///   [`Timeout`](ErrorClass::Timeout) and [`ConnectionReset`](ErrorClass::ConnectionReset):
///   only when the request is idempotent, the caller opted in
///   ([`RetryRules::retry_non_idempotent`]), or the upstream said `x-should-retry: true`.
///
/// Overloaded is in the last group on purpose. RFC 9110 implies a 503 was not processed,
/// but a 503 can come from a load balancer after the origin started on the request, so it
/// proves nothing. The OpenAI and Anthropic SDKs retry every 5xx, POST included; sluice is
/// stricter and leaves that to the opt-in or to the upstream's own `x-should-retry: true`.
pub fn may_retry(
    class: ErrorClass,
    idempotency: Idempotency,
    rules: &RetryRules,
    should_retry: Option<bool>,
) -> bool {
    if should_retry == Some(false) {
        return false;
    }
    match class {
        ErrorClass::QuotaExhausted | ErrorClass::NotRetryable => false,
        ErrorClass::RateLimited | ErrorClass::Connect => true,
        ErrorClass::Overloaded
        | ErrorClass::ServerError
        | ErrorClass::Timeout
        | ErrorClass::ConnectionReset => {
            idempotency == Idempotency::Idempotent
                || rules.retry_non_idempotent
                || should_retry == Some(true)
        }
    }
}

/// The class of a transport failure, read from its chain of causes: a refused connection
/// ([`std::io::ErrorKind::ConnectionRefused`]) is [`ErrorClass::Connect`] (never sent), a
/// timed-out one (an I/O `TimedOut`, or a tokio timeout) [`ErrorClass::Timeout`], anything
/// else [`ErrorClass::ConnectionReset`] (it may have been processed).
pub(crate) fn transport_class(error: &(dyn StdError + 'static)) -> ErrorClass {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return ErrorClass::Connect,
                std::io::ErrorKind::TimedOut => return ErrorClass::Timeout,
                _ => {}
            }
        }
        if error.is::<tokio::time::error::Elapsed>() {
            return ErrorClass::Timeout;
        }
        next = error.source();
    }
    ErrorClass::ConnectionReset
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use ErrorClass::*;

    const OPENAI_INSUFFICIENT_QUOTA: &str = r#"{
    "error": {
        "message": "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
        "type": "insufficient_quota",
        "param": null,
        "code": "insufficient_quota"
    }
}"#;

    const OPENAI_RATE_LIMIT_TPM: &str = r#"{
    "error": {
        "message": "Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM): Limit 30000, Used 29000, Requested 2000. Please try again in 2s. Visit https://platform.openai.com/account/rate-limits to learn more.",
        "type": "tokens",
        "param": null,
        "code": "rate_limit_exceeded"
    }
}"#;

    const OPENAI_RATE_LIMIT_RPD: &str = r#"{"error":{"message":"Rate limit reached for gpt-4o-mini in organization org-abc on requests per day (RPD): Limit 200, Used 200, Requested 1. Please try again in 7m12s.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;

    const OPENAI_BILLING_HARD_LIMIT: &str = r#"{"error":{"message":"Billing hard limit has been reached","type":"invalid_request_error","param":null,"code":"billing_hard_limit_reached"}}"#;

    const ANTHROPIC_RATE_LIMIT: &str = r#"{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed the rate limit for your organization of 50,000 input tokens per minute."}}"#;

    const ANTHROPIC_OVERLOADED: &str =
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;

    const ANTHROPIC_CREDIT: &str = r#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."},"request_id":"req_011"}"#;

    const ANTHROPIC_INVALID: &str = r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}"#;

    const BEDROCK_SERVICE_QUOTA: &str = r#"{"message":"Your request exceeds the service quota for your account. You can view your quotas at Viewing service quotas. You can resubmit your request later."}"#;

    const BEDROCK_TOKENS_PER_DAY: &str =
        r#"{"message":"Too many tokens per day, please wait before trying again."}"#;

    const GEMINI_PER_MINUTE: &str = r#"{"error":{"code":429,"message":"You exceeded your current quota, please check your plan and billing details.\n* Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: 15, model: gemini-2.0-flash\nPlease retry in 22.3s.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"22s"}]}}"#;

    const GEMINI_PER_DAY: &str = r#"{"error":{"code":429,"message":"You exceeded your current quota, please check your plan and billing details.\n* Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: 50, model: gemini-2.5-pro","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}]}}"#;

    const GOOGLE_USER_RATE_LIMIT_403: &str = r#"{"error":{"errors":[{"domain":"usageLimits","reason":"userRateLimitExceeded","message":"User Rate Limit Exceeded"}],"code":403,"message":"User Rate Limit Exceeded"}}"#;

    const YOUTUBE_QUOTA_403: &str = r#"{"error":{"code":403,"message":"The request cannot be completed because you have exceeded your quota.","errors":[{"message":"The request cannot be completed because you have exceeded your quota.","domain":"youtube.quota","reason":"quotaExceeded"}]}}"#;

    const GITHUB_RATE_LIMIT_403: &str = r#"{"message":"API rate limit exceeded for 203.0.113.7. (But here's the good news: Authenticated requests get a higher rate limit.)","documentation_url":"https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting"}"#;

    const FORBIDDEN_403: &str = r#"{"error":{"message":"You do not have permission to access this model.","type":"invalid_request_error","code":"model_not_found"}}"#;

    const PLAIN_503: &str = "Service Unavailable\n";

    fn class(status: u16, body: Option<&str>) -> Outcome {
        classify_status(
            StatusCode::from_u16(status).unwrap(),
            body.map(str::as_bytes),
        )
    }

    #[test]
    fn statuses_and_bodies() {
        let f = Outcome::Failure;
        let table: &[(u16, Option<&str>, Outcome)] = &[
            (100, None, Outcome::Success),
            (101, None, Outcome::Success),
            (200, Some(OPENAI_INSUFFICIENT_QUOTA), Outcome::Success),
            (204, None, Outcome::Success),
            (304, None, Outcome::Success),
            (399, None, Outcome::Success),
            // 429
            (429, None, f(RateLimited)),
            (429, Some(""), f(RateLimited)),
            (429, Some(OPENAI_RATE_LIMIT_TPM), f(RateLimited)),
            (429, Some(OPENAI_INSUFFICIENT_QUOTA), f(QuotaExhausted)),
            (429, Some(OPENAI_RATE_LIMIT_RPD), f(QuotaExhausted)),
            (429, Some(OPENAI_BILLING_HARD_LIMIT), f(QuotaExhausted)),
            (429, Some(ANTHROPIC_RATE_LIMIT), f(RateLimited)),
            (429, Some(BEDROCK_TOKENS_PER_DAY), f(QuotaExhausted)),
            (429, Some(GEMINI_PER_MINUTE), f(RateLimited)),
            (429, Some(GEMINI_PER_DAY), f(QuotaExhausted)),
            (429, Some("Too Many Requests"), f(RateLimited)),
            (429, Some("quota exceeded"), f(QuotaExhausted)),
            (
                429,
                Some("<html>INSUFFICIENT_QUOTA</html>"),
                f(QuotaExhausted),
            ),
            // 400
            (400, None, f(NotRetryable)),
            (400, Some(ANTHROPIC_INVALID), f(NotRetryable)),
            (400, Some(ANTHROPIC_CREDIT), f(QuotaExhausted)),
            (400, Some(BEDROCK_SERVICE_QUOTA), f(QuotaExhausted)),
            (400, Some("rate_limit must be positive"), f(NotRetryable)),
            (
                400,
                Some(r#"{"error":"daily_budget: quota exceeded"}"#),
                f(NotRetryable),
            ),
            // 402, 403
            (402, None, f(QuotaExhausted)),
            (403, None, f(NotRetryable)),
            (403, Some(FORBIDDEN_403), f(NotRetryable)),
            (403, Some(OPENAI_INSUFFICIENT_QUOTA), f(QuotaExhausted)),
            (403, Some(GOOGLE_USER_RATE_LIMIT_403), f(RateLimited)),
            (403, Some(GITHUB_RATE_LIMIT_403), f(RateLimited)),
            (403, Some(YOUTUBE_QUOTA_403), f(QuotaExhausted)),
            (
                403,
                Some(r#"{"reason":"dailyLimitExceeded"}"#),
                f(QuotaExhausted),
            ),
            // Other 4xx
            (401, Some(OPENAI_INSUFFICIENT_QUOTA), f(NotRetryable)),
            (404, None, f(NotRetryable)),
            (408, None, f(ServerError)),
            (409, None, f(NotRetryable)),
            (413, None, f(NotRetryable)),
            (422, None, f(NotRetryable)),
            (499, None, f(NotRetryable)),
            // 5xx
            (500, None, f(ServerError)),
            (500, Some(OPENAI_INSUFFICIENT_QUOTA), f(ServerError)),
            (501, None, f(NotRetryable)),
            (502, None, f(ServerError)),
            (503, Some(PLAIN_503), f(Overloaded)),
            (503, None, f(Overloaded)),
            (504, None, f(ServerError)),
            (505, None, f(NotRetryable)),
            (529, Some(ANTHROPIC_OVERLOADED), f(Overloaded)),
            (599, None, f(ServerError)),
            (600, None, f(ServerError)),
            (999, None, f(ServerError)),
        ];
        for &(status, body, want) in table {
            assert_eq!(class(status, body), want, "{status} {body:?}");
        }
    }

    #[test]
    fn garbage_bytes_are_read_as_no_wording() {
        let garbage: Vec<u8> = (0..=255).cycle().take(10_000).collect();
        for status in [400, 403, 429] {
            let want = if status == 429 {
                RateLimited
            } else {
                NotRetryable
            };
            let got = classify_status(StatusCode::from_u16(status).unwrap(), Some(&garbage));
            assert_eq!(got, Outcome::Failure(want), "{status}");
        }
        let invalid_utf8 = b"\xff\xfe insufficient_quota \xc3";
        assert_eq!(
            classify_status(StatusCode::TOO_MANY_REQUESTS, Some(invalid_utf8)),
            Outcome::Failure(QuotaExhausted)
        );
    }

    #[test]
    fn only_the_first_4_kib_is_read() {
        let marker = b"insufficient_quota";
        let mut within = vec![b' '; SNIFF_LIMIT - marker.len()];
        within.extend_from_slice(marker);
        within.resize(1 << 20, b'x');
        assert_eq!(
            classify_status(StatusCode::TOO_MANY_REQUESTS, Some(&within)),
            Outcome::Failure(QuotaExhausted)
        );
        // One byte further and the marker straddles the limit.
        let mut beyond = vec![b' '; SNIFF_LIMIT - marker.len() + 1];
        beyond.extend_from_slice(marker);
        beyond.resize(1 << 20, b'x');
        assert_eq!(
            classify_status(StatusCode::TOO_MANY_REQUESTS, Some(&beyond)),
            Outcome::Failure(RateLimited)
        );
    }

    #[test]
    fn markers_are_lowercase_and_non_empty() {
        for m in BILLING_MARKERS
            .iter()
            .chain(LONG_WINDOW_MARKERS)
            .chain(RATE_LIMIT_MARKERS)
            .chain(VAGUE_QUOTA_MARKERS)
        {
            assert!(!m.is_empty());
            assert_eq!(m.to_ascii_lowercase(), *m, "{}", String::from_utf8_lossy(m));
        }
    }

    #[test]
    fn idempotency_of_methods() {
        for m in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            let method = Method::from_bytes(m.as_bytes()).unwrap();
            assert_eq!(
                Idempotency::of_method(&method),
                Idempotency::Idempotent,
                "{m}"
            );
        }
        for m in ["POST", "PATCH", "CONNECT", "PROPFIND", "get"] {
            let method = Method::from_bytes(m.as_bytes()).unwrap();
            assert_eq!(
                Idempotency::of_method(&method),
                Idempotency::NotIdempotent,
                "{m}"
            );
        }
    }

    #[test]
    fn retry_table() {
        use Idempotency::{Idempotent as I, NotIdempotent as N};
        let strict = RetryRules::default();
        let opted = RetryRules {
            retry_non_idempotent: true,
        };
        // (class, idempotency, rules, should_retry, may retry)
        let table: &[(ErrorClass, Idempotency, RetryRules, Option<bool>, bool)] = &[
            (RateLimited, N, strict, None, true),
            (RateLimited, N, strict, Some(false), false),
            (Connect, N, strict, None, true),
            (Connect, I, strict, Some(false), false),
            (QuotaExhausted, I, opted, Some(true), false),
            (NotRetryable, I, opted, Some(true), false),
            (Overloaded, N, strict, None, false),
            (Overloaded, I, strict, None, true),
            (Overloaded, N, opted, None, true),
            (Overloaded, N, strict, Some(true), true),
            (Overloaded, I, opted, Some(false), false),
            (ServerError, N, strict, None, false),
            (ServerError, I, strict, None, true),
            (ServerError, N, opted, None, true),
            (ServerError, N, strict, Some(true), true),
            (Timeout, N, strict, None, false),
            (Timeout, I, strict, None, true),
            (Timeout, N, opted, None, true),
            (ConnectionReset, N, strict, None, false),
            (ConnectionReset, I, strict, None, true),
            (ConnectionReset, I, opted, Some(false), false),
        ];
        for &(class, idem, rules, should, want) in table {
            assert_eq!(
                may_retry(class, idem, &rules, should),
                want,
                "{class} {idem:?} {rules:?} {should:?}"
            );
        }
    }

    #[test]
    fn class_properties() {
        let congestion: Vec<_> = ErrorClass::ALL
            .into_iter()
            .filter(|c| c.is_congestion())
            .collect();
        assert_eq!(congestion, [RateLimited, Overloaded]);
        let breaker: Vec<_> = ErrorClass::ALL
            .into_iter()
            .filter(|c| c.counts_against_breaker())
            .collect();
        assert_eq!(
            breaker,
            [Overloaded, ServerError, Timeout, Connect, ConnectionReset]
        );
        let names: std::collections::HashSet<_> =
            ErrorClass::ALL.into_iter().map(ErrorClass::name).collect();
        assert_eq!(names.len(), ErrorClass::ALL.len());
        assert_eq!(QuotaExhausted.to_string(), "quota_exhausted");
        assert_eq!(Outcome::Failure(Timeout).error_class(), Some(Timeout));
        assert_eq!(Outcome::Success.error_class(), None);
    }

    proptest! {
        #[test]
        fn classify_never_panics(
            status in 100_u16..=999,
            body in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..6000)),
        ) {
            let status = StatusCode::from_u16(status).unwrap();
            let outcome = classify_status(status, body.as_deref());
            prop_assert_eq!(outcome == Outcome::Success, status.as_u16() < 400);
        }

        #[test]
        fn sniffing_reads_only_the_head(
            status in prop_oneof![Just(400_u16), Just(403), Just(429)],
            head in proptest::collection::vec(any::<u8>(), 0..SNIFF_LIMIT),
            tail in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let status = StatusCode::from_u16(status).unwrap();
            let mut body = head.clone();
            body.resize(SNIFF_LIMIT, b' ');
            let alone = classify_status(status, Some(&body));
            body.extend_from_slice(&tail);
            prop_assert_eq!(classify_status(status, Some(&body)), alone);
        }
    }

    #[test]
    fn transport_failures_are_classed_by_their_causes() {
        #[derive(Debug, thiserror::Error)]
        #[error("wrapper")]
        struct Wrapper(#[source] std::io::Error);

        let refused = Wrapper(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(transport_class(&refused), Connect);
        let timed_out = std::io::Error::from(std::io::ErrorKind::TimedOut);
        assert_eq!(transport_class(&timed_out), Timeout);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(transport_class(&reset), ConnectionReset);
        let other: Box<dyn StdError + Send + Sync> = "something else".into();
        assert_eq!(transport_class(&*other), ConnectionReset);
    }
}
