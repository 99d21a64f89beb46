//! The service: decides in `call`, answers refusals itself.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use sluice_core::{Decision, Key, Verdict};
use sluice_http::{HeaderStyle, PROBLEM_CONTENT_TYPE, problem_body};
use sluice_store::{Immediate, Limit, Reservation, Store};
use tower_service::Service;

use crate::body::ResponseBody;
use crate::headers::{Prebuilt, Stamp};
use crate::limits::{Keys, LimitInfo, LimitSet, Refusal, RequestCost};

/// The problem type of a request refused because a limit found no key in it.
pub const MISSING_KEY_PROBLEM_TYPE: &str = "https://sluice.dev/problems/missing-key";
/// The problem type of a request refused because the store failed.
pub const UNAVAILABLE_PROBLEM_TYPE: &str = "https://sluice.dev/problems/limiter-unavailable";

/// What every clone of one [`RateLimit`] shares.
pub(crate) struct Shared<S, L, C> {
    pub(crate) store: Arc<S>,
    pub(crate) limits: L,
    pub(crate) cost: C,
    pub(crate) config: Config,
}

/// The part of [`Shared`] that does not depend on the type parameters.
pub(crate) struct Config {
    /// One per limit, in the order the limits were added.
    pub(crate) infos: Vec<LimitInfo>,
    pub(crate) style: HeaderStyle,
    pub(crate) headers: Prebuilt,
    /// Wait up to this long for capacity instead of refusing (`None`: refuse at once).
    pub(crate) max_wait: Option<Duration>,
}

type BoxedResponse<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody<B>>, E>> + Send + 'static>>;

pin_project! {
    /// The future of [`RateLimit::call`].
    ///
    /// With a store that decides without waiting (the in-memory store, through
    /// [`Store::immediate`]) the decision is made in `call` and this is the inner
    /// service's future (or the layer's own answer): no allocation. Other stores, whose
    /// futures cannot be named, and waiting for capacity
    /// ([`max_wait`](crate::RateLimitLayer::max_wait)) go through a boxed future.
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        state: State<F, B, E>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B, E> {
        // The layer's own answer.
        Ready { response: Option<Response<ResponseBody<B>>> },
        // Admitted: the inner service's answer gets `stamp`.
        Inner { #[pin] future: F, stamp: Option<Stamp> },
        // Deciding with an asynchronous store, or waiting for capacity.
        Boxed { future: BoxedResponse<B, E> },
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    fn ready(response: Response<ResponseBody<B>>) -> Self {
        Self {
            state: State::Ready {
                response: Some(response),
            },
        }
    }

    fn inner(future: F, stamp: Stamp) -> Self {
        Self {
            state: State::Inner {
                future,
                stamp: Some(stamp),
            },
        }
    }

    fn boxed(future: BoxedResponse<B, E>) -> Self {
        Self {
            state: State::Boxed { future },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Ready { response } => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
            StateProj::Inner { future, stamp } => {
                let response = std::task::ready!(future.poll(cx))?;
                let stamp = stamp.take().expect("polled after completion");
                Poll::Ready(Ok(stamped(stamp, response)))
            }
            StateProj::Boxed { future } => future.as_mut().poll(cx),
        }
    }
}

impl<F, B, E> fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Ready { .. } => "ready",
            State::Inner { .. } => "inner",
            State::Boxed { .. } => "boxed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

/// The middleware built by [`RateLimitLayer`](crate::RateLimitLayer).
///
/// `poll_ready` is the inner service's: this service never waits for capacity there.
/// `call` takes every limit's key from the request, asks the store for all of them at once
/// (all or nothing) and then:
///
/// - allowed: calls the inner service and adds the rate limit headers to its response
///   (body untouched);
/// - refused: answers `429 Too Many Requests` with `Retry-After`, the rate limit headers
///   and an RFC 9457 problem body listing the violated limits, without calling the inner
///   service;
/// - with [`max_wait`](crate::RateLimitLayer::max_wait): reserves the capacity instead,
///   waits until it is ready (at most `max_wait`), then calls the inner service; refuses
///   as above when the wait would be longer;
/// - a limit found no key: `400`, or `401` with `WWW-Authenticate`, with a problem body,
///   or the limit's fallback key (see [`OnMissingKey`](crate::OnMissingKey));
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
        let names: Vec<&str> = self.shared.config.infos.iter().map(|i| &*i.name).collect();
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("limits", &names)
            .field("style", &self.shared.config.style)
            .field("max_wait", &self.shared.config.max_wait)
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
    type Future = ResponseFuture<I::Future, ResB, I::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let shared = &*self.shared;
        let mut keys = Keys::default();
        if let Err(refusal) = shared.limits.resolve(&req, &mut keys) {
            return ResponseFuture::ready(missing_key(&refusal));
        }
        let cost = shared.cost.cost(&req);
        let config = &shared.config;
        let Some(store) = shared.store.immediate() else {
            let shared = self.shared.clone();
            let inner = take(&mut self.inner);
            return ResponseFuture::boxed(Box::pin(decide_async(shared, keys, cost, inner, req)));
        };
        let Some(max_wait) = config.max_wait else {
            // The common case: decided here, the inner future returned as it is.
            let stamp = match decide_now(store, config, keys.as_slice(), cost) {
                Decided::One(decision) if decision.allowed => {
                    config.headers.stamp(std::slice::from_ref(&decision))
                }
                Decided::Many(verdict) if verdict.allowed => {
                    config.headers.stamp(&verdict.decisions)
                }
                Decided::One(decision) => {
                    return ResponseFuture::ready(refused(config, &[decision]));
                }
                Decided::Many(verdict) => {
                    return ResponseFuture::ready(refused(config, &verdict.decisions));
                }
            };
            let mut inner = take(&mut self.inner);
            return ResponseFuture::inner(inner.call(req), stamp);
        };
        let reservation = with_limits(config, keys.as_slice(), |limits| {
            store.reserve_now(limits, cost, max_wait)
        });
        if !reservation.granted() {
            return ResponseFuture::ready(refused(config, &reservation.verdict.decisions));
        }
        let stamp = waited_stamp(config, &reservation);
        let mut inner = take(&mut self.inner);
        if reservation.wait.is_zero() {
            return ResponseFuture::inner(inner.call(req), stamp);
        }
        let wait = reservation.wait;
        let guard = CancelOnDrop {
            store: self.shared.store.clone(),
            reservation: Some(reservation),
        };
        ResponseFuture::boxed(Box::pin(async move {
            wait_out(guard, wait).await;
            let response = inner.call(req).await?;
            Ok(stamped(stamp, response))
        }))
    }
}

/// The instance that was driven to readiness, leaving a fresh clone for the next
/// `poll_ready`.
pub(crate) fn take<I: Clone>(inner: &mut I) -> I {
    let fresh = inner.clone();
    std::mem::replace(inner, fresh)
}

/// A decision of an immediate store: one limit needs no `Vec`.
enum Decided {
    One(Decision),
    Many(Verdict),
}

fn decide_now(store: &dyn Immediate, config: &Config, keys: &[Key], cost: u64) -> Decided {
    match (keys, config.infos.as_slice()) {
        ([key], [info]) => Decided::One(store.check_now(info.limit(key), cost)),
        _ => Decided::Many(with_limits(config, keys, |limits| {
            store.check_all_now(limits, cost)
        })),
    }
}

/// Calls `f` with the store's view of every limit on its key.
fn with_limits<R>(config: &Config, keys: &[Key], f: impl FnOnce(&[Limit<'_>]) -> R) -> R {
    match (keys, config.infos.as_slice()) {
        ([key], [info]) => f(&[info.limit(key)]),
        _ => {
            let limits: Vec<Limit<'_>> = config
                .infos
                .iter()
                .zip(keys)
                .map(|(info, key)| info.limit(key))
                .collect();
            f(&limits)
        }
    }
}

/// Any store: decides (or reserves and waits) in the returned future.
async fn decide_async<I, S, L, C, ReqB, ResB>(
    shared: Arc<Shared<S, L, C>>,
    keys: Keys,
    cost: u64,
    mut inner: I,
    req: Request<ReqB>,
) -> Result<Response<ResponseBody<ResB>>, I::Error>
where
    I: Service<Request<ReqB>, Response = Response<ResB>>,
    S: Store,
{
    let config = &shared.config;
    let limits: Vec<Limit<'_>> = config
        .infos
        .iter()
        .zip(keys.as_slice())
        .map(|(info, key)| info.limit(key))
        .collect();
    let stamp = match config.max_wait {
        None => {
            // One limit takes the store's single check, which needs no transaction
            // bookkeeping.
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
            if !verdict.allowed {
                return Ok(refused(config, &verdict.decisions));
            }
            config.headers.stamp(&verdict.decisions)
        }
        Some(max_wait) => {
            let Ok(reservation) = shared.store.reserve(&limits, cost, max_wait).await else {
                return Ok(unavailable());
            };
            if !reservation.granted() {
                return Ok(refused(config, &reservation.verdict.decisions));
            }
            let stamp = waited_stamp(config, &reservation);
            let wait = reservation.wait;
            if !wait.is_zero() {
                let guard = CancelOnDrop {
                    store: shared.store.clone(),
                    reservation: Some(reservation),
                };
                wait_out(guard, wait).await;
            }
            stamp
        }
    };
    let response = inner.call(req).await?;
    Ok(stamped(stamp, response))
}

/// The headers of a granted reservation, as they stand once its wait is over: the
/// decisions were made when it was taken, so their resets are `wait` closer.
fn waited_stamp(config: &Config, reservation: &Reservation) -> Stamp {
    let wait = reservation.wait;
    if wait.is_zero() {
        return config.headers.stamp(&reservation.verdict.decisions);
    }
    let decisions: Vec<Decision> = reservation
        .verdict
        .decisions
        .iter()
        .map(|d| Decision {
            reset_after: d.reset_after.saturating_sub(wait),
            ..*d
        })
        .collect();
    config.headers.stamp(&decisions)
}

/// Sleeps `wait` (tokio's timer), then keeps the reservation `guard` holds.
async fn wait_out<S: Store>(mut guard: CancelOnDrop<S>, wait: Duration) {
    tokio::time::sleep(wait).await;
    guard.reservation = None;
}

/// Gives a reservation back if the request is dropped while it waits for it.
///
/// Drop cannot await: an immediate store (in memory) cancels synchronously; any other store's cancel
/// is spawned on the current tokio runtime (best effort: without a runtime, or if that
/// call fails, the capacity stays taken, as if the request had run, which never admits
/// more than the limit).
struct CancelOnDrop<S: Store> {
    store: Arc<S>,
    reservation: Option<Reservation>,
}

impl<S: Store> Drop for CancelOnDrop<S> {
    fn drop(&mut self) {
        let Some(reservation) = self.reservation.take() else {
            return;
        };
        if let Some(store) = self.store.immediate() {
            store.cancel_now(&reservation);
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let store = self.store.clone();
            runtime.spawn(async move {
                let _ = store.cancel(&reservation).await;
            });
        }
    }
}

/// The inner service's response with the rate limit headers; its body untouched.
pub(crate) fn stamped<B>(stamp: Stamp, response: Response<B>) -> Response<ResponseBody<B>> {
    let (mut parts, body) = response.into_parts();
    stamp.write(&mut parts.headers);
    Response::from_parts(parts, ResponseBody::inner(body))
}

/// A response with `status` and a problem document.
pub(crate) fn problem<B>(status: StatusCode, body: Vec<u8>) -> Response<ResponseBody<B>> {
    let mut response = Response::new(ResponseBody::full(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
    response
}

fn refused<B>(config: &Config, decisions: &[Decision]) -> Response<ResponseBody<B>> {
    let items: Vec<(&str, &Decision)> = config
        .infos
        .iter()
        .zip(decisions)
        .map(|(info, decision)| (&*info.name, decision))
        .collect();
    let (_, body) = problem_body(&items);
    let mut response = problem(StatusCode::TOO_MANY_REQUESTS, body);
    config
        .headers
        .stamp(decisions)
        .write(response.headers_mut());
    if let Some(retry_after) = Prebuilt::retry_after(decisions) {
        response.headers_mut().insert(RETRY_AFTER, retry_after);
    }
    response
}

pub(crate) fn missing_key<B>(refusal: &Refusal) -> Response<ResponseBody<B>> {
    let status = if refusal.challenge.is_some() {
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
    let mut response = problem(status, body.to_string().into_bytes());
    if let Some(challenge) = &refusal.challenge {
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, challenge.clone());
    }
    response
}

pub(crate) fn unavailable<B>() -> Response<ResponseBody<B>> {
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
