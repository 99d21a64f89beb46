//! The tower layer: [`EgressLayer`] and its [`EgressService`].

use std::error::Error as StdError;
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use sluice_store::{MemoryStore, Store};
use tower_service::Service;

use crate::classify::ErrorClass;
use crate::classify::transport_class;
use crate::job::{JobHeaderError, job_for};
use crate::{Egress, EgressError, SendError, TokioClock};

/// A boxed error, as tower services commonly return them.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The default bound on a request body and on an answer body: 32 MiB.
pub const DEFAULT_MAX_BODY: usize = 32 << 20;

/// The cause of a failed call whose answer had a larger body than the bound: the answer
/// was dropped, and the call is not retried (the same request would get the same answer).
#[derive(Debug, thiserror::Error)]
#[error("the answer's body is larger than {limit} bytes")]
pub struct ResponseTooLarge {
    /// The bound, in bytes.
    pub limit: usize,
}

/// A tower layer that sends every request of a tower HTTP client service through an
/// [`Egress`] client: pacing, quota, adaptive concurrency, retries and the circuit breaker
/// for any `Service<http::Request<Full<Bytes>>>` (hyper-util's client, a tower stack, a
/// test double).
///
/// ```text
///  request ──▶ read the body (≤ max_request_body) ──▶ Job: method, estimated tokens,
///              priority / tenant / max wait (extensions, else x-sluice-* headers, which
///              are removed)
///          ──▶ Egress::execute: for each attempt, a copy of the request as
///              Request<Full<Bytes>> ──▶ inner service (cloned, polled ready) ──▶ read the
///              answer's body (≤ max_response_body)
///  answer  ◀── Response<Full<Bytes>>: the upstream's last answer, successful or not
/// ```
///
/// # Bodies are buffered
///
/// The request body is read into memory once, before anything is sent: the client needs
/// its bytes to estimate the tokens, and a retry sends them again. The inner service is
/// therefore called with `Request<Full<Bytes>>`, whatever the caller's body type. The
/// answer's body is read whole too (the client reads the usage it reports and sorts errors
/// by their wording), so a streamed answer (server-sent events) reaches the caller only once
/// it has ended. Both are bounded ([`DEFAULT_MAX_BODY`] unless set): a larger request fails
/// with [`EgressLayerError::RequestTooLarge`] before anything is sent, a larger answer fails
/// that call, without retrying, with a [`ResponseTooLarge`] as its cause.
///
/// # Readiness
///
/// [`EgressService::poll_ready`] is always ready: a call may wait for pace and quota for a
/// long time, and holding the inner service's readiness meanwhile would block every other
/// caller. Each attempt clones the inner service and waits for that clone to be ready (the
/// usual clone-and-ready pattern), so the inner service must be `Clone`.
///
/// # What the job says
///
/// The [`Job`](crate::Job) of a request is made by the same rules here and in the reqwest middleware:
/// the method decides whether it may be retried after a failure that may have been
/// processed, [`estimate_tokens`](crate::usage::estimate_tokens) of the body gives its tokens (0 when the body is not an
/// LLM request in JSON), and its priority, tenant and longest wait come from a request
/// extension ([`Priority`](crate::Priority), [`Tenant`](crate::Tenant),
/// [`MaxWait`](crate::MaxWait)) or else from a header
/// ([`PRIORITY_HEADER`](crate::PRIORITY_HEADER), [`TENANT_HEADER`](crate::TENANT_HEADER),
/// [`MAX_WAIT_HEADER`](crate::MAX_WAIT_HEADER)). Those headers are
/// always removed before the request goes upstream; one with a value that does not parse
/// fails the call with a [`JobHeaderError`] naming it.
///
/// A [`tower_layer::Layer`] that puts an [`Egress`] client in front of an HTTP client
/// service, as above.
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
