//! The service: decides in `call`, answers refusals itself.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response, StatusCode};
use sluice_core::{Decision, Policy, Verdict};
use sluice_http::{HeaderStyle, PROBLEM_CONTENT_TYPE, problem_body, write_headers};
use sluice_store::{Limit, Store};
use tower_service::Service;

use crate::body::ResponseBody;
use crate::limits::{LimitSet, Refusal, RequestCost, Resolved};

/// The problem type of a request refused because a limit found no key in it.
pub const MISSING_KEY_PROBLEM_TYPE: &str = "https://sluice.dev/problems/missing-key";
/// The problem type of a request refused because the store failed.
pub const UNAVAILABLE_PROBLEM_TYPE: &str = "https://sluice.dev/problems/limiter-unavailable";

/// What every clone of one [`RateLimit`] shares.
pub(crate) struct Shared<S, L, C> {
    pub(crate) store: Arc<S>,
    pub(crate) limits: L,
    pub(crate) names: Vec<Arc<str>>,
    pub(crate) cost: C,
    pub(crate) style: HeaderStyle,
}

/// The future of [`RateLimit::call`]. Boxed because a [`Store`]'s futures cannot be
/// named (they are `impl Future` in the trait).
pub type ResponseFuture<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody<B>>, E>> + Send + 'static>>;

/// The middleware built by [`RateLimitLayer`](crate::RateLimitLayer).
///
/// `poll_ready` is the inner service's: this service never waits for capacity. `call`
/// takes every limit's key from the request, asks the store for all of them at once
/// (`Store::check_all`, all or nothing) and then:
///
/// - allowed: calls the inner service and adds the rate limit headers to its response
///   (body untouched);
/// - refused: answers `429 Too Many Requests` with `Retry-After`, the rate limit headers
///   and an RFC 9457 problem body listing the violated limits, without calling the inner
///   service;
/// - a limit found no key: `400` or `401` with a problem body, or the limit's fallback key
///   (see [`OnMissingKey`](crate::OnMissingKey));
/// - the store failed: `503 Service Unavailable` with a problem body. (A `FallbackStore`
///   applies each limit's failure policy first and does not fail.)
pub struct RateLimit<I, S, L = (), C = crate::UnitCost> {
    inner: I,
    shared: Arc<Shared<S, L, C>>,
}

impl<I, S, L, C> RateLimit<I, S, L, C> {
    pub(crate) fn new(inner: I, shared: Arc<Shared<S, L, C>>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &I {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut I {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> I {
        self.inner
    }
}

impl<I: Clone, S, L, C> Clone for RateLimit<I, S, L, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<I: fmt::Debug, S, L, C> fmt::Debug for RateLimit<I, S, L, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("limits", &self.shared.names)
            .field("style", &self.shared.style)
            .finish_non_exhaustive()
    }
}

impl<I, S, L, C, ReqB, ResB> Service<Request<ReqB>> for RateLimit<I, S, L, C>
where
    I: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    I::Future: Send + 'static,
    S: Store,
    L: LimitSet<ReqB>,
    C: RequestCost<ReqB>,
    ReqB: Send + 'static,
    ResB: Send + 'static,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = I::Error;
    type Future = ResponseFuture<ResB, I::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let mut resolved: Vec<Resolved> = Vec::with_capacity(self.shared.limits.len());
        if let Err(refusal) = self.shared.limits.resolve(&req, &mut resolved) {
            let response = missing_key(&refusal);
            return Box::pin(async move { Ok(response) });
        }
        let cost = self.shared.cost.cost(&req);
        // Call the instance that was driven to readiness; leave a fresh clone for the next
        // `poll_ready`.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let shared = self.shared.clone();
        Box::pin(async move {
            let limits: Vec<Limit<'_>> = resolved
                .iter()
                .map(|r| Limit::new(&r.key, &r.policy).on_failure(r.on_failure))
                .collect();
            // One limit (the common case) takes the store's single check, which needs no
            // transaction bookkeeping.
            let verdict = match limits.as_slice() {
                [limit] => shared
                    .store
                    .check(*limit, cost)
                    .await
                    .map(|decision| Verdict::from_decisions(vec![decision])),
                _ => shared.store.check_all(&limits, cost).await,
            };
            let Ok(verdict) = verdict else {
                return Ok(unavailable());
            };
            let items: Vec<(&str, &Policy, &Decision)> = resolved
                .iter()
                .zip(&verdict.decisions)
                .map(|(r, d)| (&*r.name, &r.policy, d))
                .collect();
            if !verdict.allowed {
                return Ok(refused(shared.style, &items));
            }
            let response = inner.call(req).await?;
            let (mut parts, body) = response.into_parts();
            // Names were checked when the limits were added, so this cannot fail; if it
            // did, the response would go out without rate limit headers.
            let _ = write_headers(&mut parts.headers, shared.style, &items);
            Ok(Response::from_parts(parts, ResponseBody::inner(body)))
        })
    }
}

/// A response with `status` and a problem document.
fn problem<B>(status: StatusCode, body: Vec<u8>) -> Response<ResponseBody<B>> {
    let mut response = Response::new(ResponseBody::full(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
    response
}

fn refused<B>(
    style: HeaderStyle,
    items: &[(&str, &Policy, &Decision)],
) -> Response<ResponseBody<B>> {
    let (_, body) = problem_body(items);
    let mut response = problem(StatusCode::TOO_MANY_REQUESTS, body);
    let _ = write_headers(response.headers_mut(), style, items);
    response
}

fn missing_key<B>(refusal: &Refusal) -> Response<ResponseBody<B>> {
    let status = if refusal.unauthorized {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::BAD_REQUEST
    };
    let body = serde_json::json!({
        "type": MISSING_KEY_PROBLEM_TYPE,
        "title": status.canonical_reason().unwrap_or("Bad Request"),
        "status": status.as_u16(),
        "detail": format!("Rate limit \"{}\" cannot identify the client: {}.", refusal.name, refusal.reason),
    });
    problem(status, body.to_string().into_bytes())
}

fn unavailable<B>() -> Response<ResponseBody<B>> {
    // The store's error is not sent: it may name internal hosts.
    let body = serde_json::json!({
        "type": UNAVAILABLE_PROBLEM_TYPE,
        "title": "Service Unavailable",
        "status": 503,
        "detail": "The rate limiter cannot decide right now; retry later.",
    });
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        body.to_string().into_bytes(),
    )
}
