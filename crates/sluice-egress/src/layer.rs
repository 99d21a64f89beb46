//! A tower layer that sends every request of a tower HTTP client service through an
//! [`Egress`] client: pacing, quota, adaptive concurrency, retries and the circuit breaker
//! for any `Service<http::Request<Full<Bytes>>>` (hyper-util's client, a tower stack, a
//! test double).
//!
//! ```text
//!  request ──▶ read the body (≤ max_request_body) ──▶ Job: method, estimated tokens,
//!              priority / tenant / max wait (extensions, else x-sluice-* headers, which
//!              are removed)
//!          ──▶ Egress::execute: for each attempt, a copy of the request as
//!              Request<Full<Bytes>> ──▶ inner service (cloned, polled ready) ──▶ read the
//!              answer's body (≤ max_response_body)
//!  answer  ◀── Response<Full<Bytes>>: the upstream's last answer, successful or not
//! ```
//!
//! # Bodies are buffered
//!
//! The request body is read into memory once, before anything is sent: the client needs
//! its bytes to estimate the tokens, and a retry sends them again. The inner service is
//! therefore called with `Request<Full<Bytes>>`, whatever the caller's body type. The
//! answer's body is read whole too (the client reads the usage it reports and sorts errors
//! by their wording), so a streamed answer (server-sent events) reaches the caller only once
//! it has ended. Both are bounded ([`DEFAULT_MAX_BODY`] unless set): a larger request fails
//! with [`EgressLayerError::RequestTooLarge`] before anything is sent, a larger answer fails
//! that call, without retrying, with a [`ResponseTooLarge`] as its cause.
//!
//! # Readiness
//!
//! [`EgressService::poll_ready`] is always ready: a call may wait for pace and quota for a
//! long time, and holding the inner service's readiness meanwhile would block every other
//! caller. Each attempt clones the inner service and waits for that clone to be ready (the
//! usual clone-and-ready pattern), so the inner service must be `Clone`.
//!
//! # What the job says
//!
//! The [`Job`] of a request is made by the same rules here and in the reqwest middleware:
//! the method decides whether it may be retried after a failure that may have been
//! processed, [`estimate_tokens`] of the body gives its tokens (0 when the body is not an
//! LLM request in JSON), and its priority, tenant and longest wait come from a request
//! extension ([`Priority`], [`Tenant`], [`MaxWait`]) or else from a header
//! ([`PRIORITY_HEADER`], [`TENANT_HEADER`], [`MAX_WAIT_HEADER`]). Those headers are always
//! removed before the request goes upstream; one with a value that does not parse fails the
//! call with a [`JobHeaderError`] naming it.

use std::error::Error as StdError;
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Extensions, HeaderMap, HeaderName, Method, Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use sluice_store::{MemoryStore, Store};
use tower_service::Service;

use crate::classify::ErrorClass;
use crate::usage::estimate_tokens;
use crate::{Egress, EgressError, Job, Priority, SendError, TokioClock};

/// A boxed error, as tower services commonly return them.
pub type BoxError = Box<dyn StdError + Send + Sync>;

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

/// The default bound on a request body and on an answer body: 32 MiB.
pub const DEFAULT_MAX_BODY: usize = 32 << 20;

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

/// The cause of a failed call whose answer had a larger body than the bound: the answer
/// was dropped, and the call is not retried (the same request would get the same answer).
#[derive(Debug, thiserror::Error)]
#[error("the answer's body is larger than {limit} bytes")]
pub struct ResponseTooLarge {
    /// The bound, in bytes.
    pub limit: usize,
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

/// A [`tower_layer::Layer`] that puts an [`Egress`] client in front of an HTTP client
/// service. See the [module docs](self).
pub struct EgressLayer<S = MemoryStore<TokioClock>> {
    egress: Egress<S>,
    limits: Limits,
}

/// The bounds on buffered bodies.
#[derive(Clone, Copy, Debug)]
struct Limits {
    request: usize,
    response: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            request: DEFAULT_MAX_BODY,
            response: DEFAULT_MAX_BODY,
        }
    }
}

impl<S> Clone for EgressLayer<S> {
    fn clone(&self) -> Self {
        Self {
            egress: self.egress.clone(),
            limits: self.limits,
        }
    }
}

impl<S> fmt::Debug for EgressLayer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EgressLayer")
            .field("egress", &self.egress)
            .field("max_request_body", &self.limits.request)
            .field("max_response_body", &self.limits.response)
            .finish()
    }
}

impl<S> EgressLayer<S> {
    /// A layer sending every call through `egress` (clones share its state), with bodies
    /// bounded by [`DEFAULT_MAX_BODY`].
    pub fn new(egress: Egress<S>) -> Self {
        Self {
            egress,
            limits: Limits::default(),
        }
    }

    /// The same layer with another bound on request bodies, in bytes.
    #[must_use]
    pub fn max_request_body(self, bytes: usize) -> Self {
        Self {
            limits: Limits {
                request: bytes,
                ..self.limits
            },
            ..self
        }
    }

    /// The same layer with another bound on answer bodies, in bytes.
    #[must_use]
    pub fn max_response_body(self, bytes: usize) -> Self {
        Self {
            limits: Limits {
                response: bytes,
                ..self.limits
            },
            ..self
        }
    }

    /// The client every call goes through (for its [`stats`](Egress::stats)).
    pub fn egress(&self) -> &Egress<S> {
        &self.egress
    }
}

impl<S, Svc> tower_layer::Layer<Svc> for EgressLayer<S> {
    type Service = EgressService<S, Svc>;

    fn layer(&self, inner: Svc) -> Self::Service {
        EgressService {
            inner,
            egress: self.egress.clone(),
            limits: self.limits,
        }
    }
}

/// The service [`EgressLayer`] makes: every call goes through its [`Egress`] client.
pub struct EgressService<S, Svc> {
    inner: Svc,
    egress: Egress<S>,
    limits: Limits,
}

impl<S, Svc: Clone> Clone for EgressService<S, Svc> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            egress: self.egress.clone(),
            limits: self.limits,
        }
    }
}

impl<S, Svc: fmt::Debug> fmt::Debug for EgressService<S, Svc> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EgressService")
            .field("inner", &self.inner)
            .field("egress", &self.egress)
            .field("max_request_body", &self.limits.request)
            .field("max_response_body", &self.limits.response)
            .finish()
    }
}

impl<S, Svc> EgressService<S, Svc> {
    /// `inner` behind `egress`, with bodies bounded by [`DEFAULT_MAX_BODY`] (the same as
    /// `EgressLayer::new(egress).layer(inner)`).
    pub fn new(inner: Svc, egress: Egress<S>) -> Self {
        Self {
            inner,
            egress,
            limits: Limits::default(),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &Svc {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut Svc {
        &mut self.inner
    }

    /// The inner service, consuming this one.
    pub fn into_inner(self) -> Svc {
        self.inner
    }

    /// The client every call goes through.
    pub fn egress(&self) -> &Egress<S> {
        &self.egress
    }
}

/// Why a call through an [`EgressService`] has no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EgressLayerError {
    /// The client refused the call (circuit open, quota paused, would wait too long,
    /// overloaded, store failure), or no attempt got an answer:
    /// [`EgressError::Send`] holds the last attempt's failure, the inner service's error or
    /// a failure reading the answer (see [`attempt_error`](Self::attempt_error)).
    #[error(transparent)]
    Egress(#[from] EgressError),
    /// Reading the request body failed; nothing was sent.
    #[error("reading the request body failed: {0}")]
    RequestBody(#[source] BoxError),
    /// The request body is larger than the layer's bound; nothing was sent.
    #[error("the request body is larger than {limit} bytes")]
    RequestTooLarge {
        /// The bound, in bytes.
        limit: usize,
    },
    /// A `x-sluice-*` header does not parse; nothing was sent.
    #[error(transparent)]
    Header(#[from] JobHeaderError),
}

impl EgressLayerError {
    /// The last attempt's own failure, when attempts were made and none got an answer: the
    /// inner service's error (downcast it to its type), a failure reading the answer's
    /// body, or a [`ResponseTooLarge`].
    pub fn attempt_error(&self) -> Option<&(dyn StdError + Send + Sync + 'static)> {
        match self {
            Self::Egress(EgressError::Send { source, .. }) => Some(&*source.source),
            _ => None,
        }
    }
}

/// The future of an [`EgressService`] call.
pub type EgressFuture =
    Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, EgressLayerError>> + Send>>;

impl<S, Svc, ReqBody, ResBody> Service<Request<ReqBody>> for EgressService<S, Svc>
where
    S: Store,
    Svc: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Clone + Send + 'static,
    Svc::Future: Send,
    Svc::Error: Into<BoxError>,
    ReqBody: Body + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Full<Bytes>>;
    type Error = EgressLayerError;
    type Future = EgressFuture;

    /// Always ready: readiness is awaited per attempt, on a clone of the inner service.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let inner = self.inner.clone();
        let egress = self.egress.clone();
        let limits = self.limits;
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let body = match Limited::new(body, limits.request).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) if e.is::<LengthLimitError>() => {
                    return Err(EgressLayerError::RequestTooLarge {
                        limit: limits.request,
                    });
                }
                Err(e) => return Err(EgressLayerError::RequestBody(e)),
            };
            let job = job_for(
                &parts.method,
                &mut parts.headers,
                &parts.extensions,
                Some(&body),
            )?;
            let answer = egress
                .execute(&job, move || {
                    let request = Request::from_parts(parts.clone(), Full::new(body.clone()));
                    attempt(inner.clone(), request, limits.response)
                })
                .await?;
            Ok(answer.map(Full::new))
        })
    }
}

/// One attempt: waits for `service` to be ready, calls it, reads the answer's body.
async fn attempt<Svc, ResBody>(
    mut service: Svc,
    request: Request<Full<Bytes>>,
    max_body: usize,
) -> Result<Response<Bytes>, SendError>
where
    Svc: Service<Request<Full<Bytes>>, Response = Response<ResBody>>,
    Svc::Error: Into<BoxError>,
    ResBody: Body,
    ResBody::Error: Into<BoxError>,
{
    poll_fn(|cx| service.poll_ready(cx))
        .await
        .map_err(|e| transport_error(e.into()))?;
    let response = service
        .call(request)
        .await
        .map_err(|e| transport_error(e.into()))?;
    let (parts, body) = response.into_parts();
    let body = match Limited::new(body, max_body).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            return Err(SendError {
                class: ErrorClass::NotRetryable,
                source: Box::new(ResponseTooLarge { limit: max_body }),
            });
        }
        Err(e) => return Err(transport_error(e)),
    };
    Ok(Response::from_parts(parts, body))
}

/// A transport failure as the client's [`SendError`], classed by [`transport_class`].
fn transport_error(source: BoxError) -> SendError {
    SendError {
        class: transport_class(&*source),
        source,
    }
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

    #[test]
    fn transport_failures_are_classed_by_their_causes() {
        #[derive(Debug, thiserror::Error)]
        #[error("wrapper")]
        struct Wrapper(#[source] std::io::Error);

        let refused = Wrapper(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(transport_class(&refused), ErrorClass::Connect);
        let timed_out = std::io::Error::from(std::io::ErrorKind::TimedOut);
        assert_eq!(transport_class(&timed_out), ErrorClass::Timeout);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(transport_class(&reset), ErrorClass::ConnectionReset);
        let other: BoxError = "something else".into();
        assert_eq!(transport_class(&*other), ErrorClass::ConnectionReset);
    }
}
