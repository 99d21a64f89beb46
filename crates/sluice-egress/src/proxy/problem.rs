//! The proxy's own answers: RFC 9457 problem details.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use serde_json::json;
use sluice_http::PROBLEM_CONTENT_TYPE;

use super::PROBLEM_BASE;
use super::body::ProxyBody;
use crate::EgressError;

/// Why the proxy answered by itself: the `type` of its problem body, and a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Reason {
    CircuitOpen,
    QuotaPaused,
    WouldWait,
    Overloaded,
    StoreUnavailable,
    BadRequest,
    RequestTooLarge,
    UpstreamUnreachable,
    UpstreamTimeout,
    ResponseTooLarge,
}

impl Reason {
    pub(crate) const ALL: [Self; 10] = [
        Self::CircuitOpen,
        Self::QuotaPaused,
        Self::WouldWait,
        Self::Overloaded,
        Self::StoreUnavailable,
        Self::BadRequest,
        Self::RequestTooLarge,
        Self::UpstreamUnreachable,
        Self::UpstreamTimeout,
        Self::ResponseTooLarge,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::CircuitOpen => "circuit-open",
            Self::QuotaPaused => "quota-paused",
            Self::WouldWait => "would-wait",
            Self::Overloaded => "overloaded",
            Self::StoreUnavailable => "store-unavailable",
            Self::BadRequest => "bad-request",
            Self::RequestTooLarge => "request-too-large",
            Self::UpstreamUnreachable => "upstream-unreachable",
            Self::UpstreamTimeout => "upstream-timeout",
            Self::ResponseTooLarge => "response-too-large",
        }
    }

    pub(crate) fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }

    fn title(self) -> &'static str {
        match self {
            Self::CircuitOpen => "Upstream circuit open",
            Self::QuotaPaused => "Upstream quota paused",
            Self::WouldWait => "Upstream quota would make this request wait too long",
            Self::Overloaded => "Too many requests waiting",
            Self::StoreUnavailable => "Pacing store unavailable",
            Self::BadRequest => "Bad request",
            Self::RequestTooLarge => "Request body too large",
            Self::UpstreamUnreachable => "Upstream unreachable",
            Self::UpstreamTimeout => "Upstream timed out",
            Self::ResponseTooLarge => "Upstream answer too large",
        }
    }
}

/// A problem answer: `status`, an optional `Retry-After` (whole seconds, rounded up, at
/// least 1) and the problem body.
pub(crate) fn problem(
    reason: Reason,
    status: StatusCode,
    detail: &str,
    retry_after: Option<Duration>,
) -> Response<ProxyBody> {
    let mut body = json!({
        "type": format!("{PROBLEM_BASE}{}", reason.name()),
        "title": reason.title(),
        "status": status.as_u16(),
        "detail": detail,
    });
    let retry_secs = retry_after.map(ceil_secs);
    if let (Some(secs), Some(object)) = (retry_secs, body.as_object_mut()) {
        object.insert("retry_after_seconds".to_owned(), secs.into());
    }
    let mut response = Response::new(ProxyBody::full(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(secs) = retry_secs {
        headers.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// Whole seconds, rounded up, at least 1: a `Retry-After` of 0 invites an instant retry.
pub(crate) fn ceil_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// The answer to a call the egress client refused or could not complete, and why.
pub(crate) fn refusal(error: &EgressError) -> (Reason, Response<ProxyBody>) {
    let retry_after = error.retry_after();
    let (reason, status) = match error {
        EgressError::Shared(inner) => return refusal(inner),
        EgressError::CircuitOpen { .. } => (Reason::CircuitOpen, StatusCode::SERVICE_UNAVAILABLE),
        EgressError::QuotaPaused { .. } => (Reason::QuotaPaused, StatusCode::TOO_MANY_REQUESTS),
        EgressError::WouldWait { .. } | EgressError::WaitedTooLong { .. } => {
            (Reason::WouldWait, StatusCode::TOO_MANY_REQUESTS)
        }
        EgressError::Overloaded { .. } => (Reason::Overloaded, StatusCode::TOO_MANY_REQUESTS),
        EgressError::Store { .. } => (Reason::StoreUnavailable, StatusCode::SERVICE_UNAVAILABLE),
        EgressError::Send { source, .. } => match source.class {
            crate::classify::ErrorClass::Timeout => {
                (Reason::UpstreamTimeout, StatusCode::GATEWAY_TIMEOUT)
            }
            _ => (Reason::UpstreamUnreachable, StatusCode::BAD_GATEWAY),
        },
    };
    let retry_after = match reason {
        // The queue drains quickly: come back in a second.
        Reason::Overloaded => Some(Duration::from_secs(1)),
        _ => retry_after,
    };
    (
        reason,
        problem(reason, status, &with_causes(error), retry_after),
    )
}

/// An error and its causes, each said once: `a: b: c.`
fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        next = cause.source();
    }
    text.push('.');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_at_least_one_second() {
        assert_eq!(ceil_secs(Duration::ZERO), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1_001)), 2);
        assert_eq!(ceil_secs(Duration::from_secs(30)), 30);
    }

    #[test]
    fn every_reason_has_its_index() {
        for (i, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
    }
}
