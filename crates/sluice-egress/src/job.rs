//! What a caller says about one upstream call before it is made: its [`Job`], and how a
//! job is read from an HTTP request (a request extension, else an `x-sluice-*` header,
//! which is removed before the request goes upstream) by the tower layer, the reqwest
//! middleware, the proxy and the batch engine alike.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{Extensions, HeaderMap, HeaderName, Method};

use crate::classify::Idempotency;
use crate::usage::estimate_tokens;

/// How much a call matters when there is not enough quota for everything: higher goes
/// first, and only [`Priority::INTERACTIVE`] and above may spend the quota beyond the pause
/// threshold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority(pub u8);

impl Priority {
    /// Background work that can wait for the next reset (a batch job).
    pub const BATCH: Self = Self(0);
    /// Work a person is waiting for.
    pub const INTERACTIVE: Self = Self(10);
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BATCH => f.write_str("batch"),
            Self::INTERACTIVE => f.write_str("interactive"),
            Self(n) => write!(f, "{n}"),
        }
    }
}

/// What the caller says about one call.
#[derive(Clone, Debug)]
pub struct Job {
    /// Higher goes first; below [`QuotaConfig::pause_exempt`](crate::quota::QuotaConfig::pause_exempt) it pauses at the threshold.
    pub priority: Priority,
    /// Whose work it is: callers of one priority are served in turn by tenant, so one
    /// tenant's thousand calls do not starve another's one.
    pub tenant: Option<Arc<str>>,
    /// The tokens the call may use: the prompt plus `max_tokens`. Settled to the usage
    /// the answer reports.
    pub tokens: u64,
    /// Whether sending it twice is harmless.
    pub idempotency: Idempotency,
    /// How long it may wait, in all, for quota, its turn, pace and a slot before failing.
    pub max_wait: Duration,
}

impl Job {
    /// A job of `tokens` estimated tokens, for a request with `method`, at
    /// [`Priority::BATCH`], that may wait up to 10 minutes.
    pub fn new(method: &Method, tokens: u64) -> Self {
        Self {
            priority: Priority::BATCH,
            tenant: None,
            tokens,
            idempotency: Idempotency::of_method(method),
            max_wait: Duration::from_secs(600),
        }
    }

    /// The same job at `priority`.
    #[must_use]
    pub fn priority(self, priority: Priority) -> Self {
        Self { priority, ..self }
    }

    /// The same job on behalf of `tenant`.
    #[must_use]
    pub fn tenant(self, tenant: impl Into<Arc<str>>) -> Self {
        Self {
            tenant: Some(tenant.into()),
            ..self
        }
    }

    /// The same job with another maximum wait.
    #[must_use]
    pub fn max_wait(self, max_wait: Duration) -> Self {
        Self { max_wait, ..self }
    }
}

/// The request header that sets a call's [`Priority`]: `batch`, `interactive` or a number
/// from 0 to 255. Removed before the request is sent.
pub const PRIORITY_HEADER: HeaderName = HeaderName::from_static("x-sluice-priority");
/// The request header that names a call's tenant (see [`Job::tenant`]). Removed before the
/// request is sent.
pub const TENANT_HEADER: HeaderName = HeaderName::from_static("x-sluice-tenant");
/// The request header that sets how long a call may wait for quota, pace and a slot
/// ([`Job::max_wait`]), in sluice's duration grammar (`0`, `250ms`, `1.5s`, `2m`). Removed
/// before the request is sent.
pub const MAX_WAIT_HEADER: HeaderName = HeaderName::from_static("x-sluice-max-wait");

/// Whose work a request is, as a request extension: callers of one priority are served in
/// turn by tenant (see [`Job::tenant`]). Takes precedence over [`TENANT_HEADER`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tenant(pub Arc<str>);

impl Tenant {
    /// The tenant named `name`.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self(name.into())
    }
}

/// How long a request may wait for quota, pace and a slot before failing, as a request
/// extension (see [`Job::max_wait`]). Takes precedence over [`MAX_WAIT_HEADER`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MaxWait(pub Duration);

/// A `x-sluice-*` request header whose value does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid {name} header {value:?}: {reason}")]
pub struct JobHeaderError {
    /// The header.
    pub name: HeaderName,
    /// Its value, lossily decoded.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Reads a `batch`, `interactive` or `0`–`255` priority (names ASCII case-insensitive).
pub(crate) fn parse_priority(text: &str) -> Option<Priority> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("batch") {
        Some(Priority::BATCH)
    } else if text.eq_ignore_ascii_case("interactive") {
        Some(Priority::INTERACTIVE)
    } else {
        text.parse::<u8>().ok().map(Priority)
    }
}

/// Removes the header `name` and returns its value as text, if it was there once.
fn take_header(
    headers: &mut HeaderMap,
    name: &HeaderName,
) -> Result<Option<String>, JobHeaderError> {
    let mut values = match headers.entry(name) {
        http::header::Entry::Occupied(entry) => entry.remove_entry_mult().1,
        http::header::Entry::Vacant(_) => return Ok(None),
    };
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let lossy = String::from_utf8_lossy(value.as_bytes()).into_owned();
    let error = |reason: &str| JobHeaderError {
        name: name.clone(),
        value: lossy.clone(),
        reason: reason.to_owned(),
    };
    if values.next().is_some() {
        return Err(error("the header appears more than once"));
    }
    let text = value
        .to_str()
        .map_err(|_| error("not visible ASCII"))?
        .trim()
        .to_owned();
    Ok(Some(text))
}

/// The [`Job`] of a request (see the [module docs](self)): removes the `x-sluice-*`
/// headers from `headers` in every case, and reads priority, tenant and maximum wait from
/// `extensions` first, then from those headers.
pub(crate) fn job_for(
    method: &Method,
    headers: &mut HeaderMap,
    extensions: &Extensions,
    body: Option<&[u8]>,
) -> Result<Job, JobHeaderError> {
    let tokens = body.and_then(estimate_tokens).unwrap_or(0);
    let mut job = Job::new(method, tokens);

    let priority_header = take_header(headers, &PRIORITY_HEADER)?;
    let tenant_header = take_header(headers, &TENANT_HEADER)?;
    let max_wait_header = take_header(headers, &MAX_WAIT_HEADER)?;

    if let Some(priority) = extensions.get::<Priority>() {
        job = job.priority(*priority);
    } else if let Some(text) = priority_header {
        let priority = parse_priority(&text).ok_or_else(|| JobHeaderError {
            name: PRIORITY_HEADER,
            value: text.clone(),
            reason: "expected batch, interactive or a number from 0 to 255".to_owned(),
        })?;
        job = job.priority(priority);
    }

    if let Some(Tenant(tenant)) = extensions.get::<Tenant>() {
        job = job.tenant(Arc::clone(tenant));
    } else if let Some(text) = tenant_header {
        if text.is_empty() {
            return Err(JobHeaderError {
                name: TENANT_HEADER,
                value: text,
                reason: "empty".to_owned(),
            });
        }
        job = job.tenant(text);
    }

    if let Some(MaxWait(max_wait)) = extensions.get::<MaxWait>() {
        job = job.max_wait(*max_wait);
    } else if let Some(text) = max_wait_header {
        let max_wait = sluice_core::time::parse_duration(&text).map_err(|e| JobHeaderError {
            name: MAX_WAIT_HEADER,
            value: text.clone(),
            reason: e.to_string(),
        })?;
        job = job.max_wait(max_wait);
    }
    Ok(job)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-other", HeaderValue::from_static("kept"));
        for (name, value) in pairs {
            headers.append(
                *name,
                HeaderValue::from_str(value).expect("a valid header value"),
            );
        }
        headers
    }

    #[test]
    fn reads_the_job_from_headers_and_removes_them() {
        let mut h = headers(&[
            (&PRIORITY_HEADER, "interactive"),
            (&TENANT_HEADER, "acme"),
            (&MAX_WAIT_HEADER, "1.5s"),
        ]);
        let body = br#"{"messages":[{"role":"user","content":"abcdefgh"}],"max_tokens":10}"#;
        let job = job_for(&Method::POST, &mut h, &Extensions::new(), Some(body)).unwrap();
        assert_eq!(job.priority, Priority::INTERACTIVE);
        assert_eq!(job.tenant.as_deref(), Some("acme"));
        assert_eq!(job.max_wait, Duration::from_millis(1_500));
        assert_eq!(job.tokens, 2 + 4 + 10);
        assert_eq!(h.len(), 1, "only x-other is left: {h:?}");

        for (text, priority) in [("batch", 0), ("Interactive", 10), ("0", 0), ("255", 255)] {
            let mut h = headers(&[(&PRIORITY_HEADER, text)]);
            let job = job_for(&Method::GET, &mut h, &Extensions::new(), None).unwrap();
            assert_eq!(job.priority, Priority(priority), "{text}");
            assert_eq!(job.tokens, 0);
        }
    }

    #[test]
    fn extensions_win_over_headers_which_are_removed_anyway() {
        let mut h = headers(&[(&PRIORITY_HEADER, "batch"), (&TENANT_HEADER, "from-header")]);
        let mut extensions = Extensions::new();
        extensions.insert(Priority(42));
        extensions.insert(Tenant::new("from-extension"));
        extensions.insert(MaxWait(Duration::ZERO));
        let job = job_for(&Method::GET, &mut h, &extensions, Some(b"not json")).unwrap();
        assert_eq!(job.priority, Priority(42));
        assert_eq!(job.tenant.as_deref(), Some("from-extension"));
        assert_eq!(job.max_wait, Duration::ZERO);
        assert_eq!(job.tokens, 0);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn bad_headers_are_errors_that_name_them() {
        for (name, value) in [
            (&PRIORITY_HEADER, "urgent"),
            (&PRIORITY_HEADER, "256"),
            (&TENANT_HEADER, ""),
            (&MAX_WAIT_HEADER, "soon"),
        ] {
            let mut h = headers(&[(name, value)]);
            let error = job_for(&Method::GET, &mut h, &Extensions::new(), None).unwrap_err();
            assert_eq!(&error.name, name);
            assert!(error.to_string().contains(name.as_str()), "{error}");
        }
        let mut twice = headers(&[(&TENANT_HEADER, "a"), (&TENANT_HEADER, "b")]);
        let error = job_for(&Method::GET, &mut twice, &Extensions::new(), None).unwrap_err();
        assert!(error.reason.contains("more than once"), "{error}");
    }
}
