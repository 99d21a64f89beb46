//! The remote service: resolves keys in `call`, asks the server in its future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use sluice_core::Key;
use sluice_http::HeaderStyle;
use tower_service::Service;

use super::check::{Failure, RemoteBackend};
use super::layer::OnFailure;
use super::respond;
use super::stats::{Counters, RemoteStats};
use crate::body::ResponseBody;
use crate::headers::Stamp;
use crate::limits::{Keys, LimitSet, RequestCost};
use crate::service::{missing_key, stamped, take, unavailable};

/// What every clone of one [`RemoteRateLimit`] shares.
pub(crate) struct Shared<B, L, C> {
    pub(crate) backend: Arc<B>,
    pub(crate) domain: Arc<str>,
    pub(crate) limits: L,
    /// One per limit, in the order the limits were added (and their descriptors sent).
    pub(crate) names: Vec<Arc<str>>,
    pub(crate) cost: C,
    pub(crate) timeout: Duration,
    pub(crate) on_failure: OnFailure,
    pub(crate) style: HeaderStyle,
    pub(crate) counters: Arc<Counters>,
}

/// The future of [`RemoteRateLimit::call`]: boxed, since it waits on the network anyway.
pub type RemoteResponseFuture<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody<B>>, E>> + Send + 'static>>;

/// The middleware built by [`RemoteRateLimitLayer`](super::RemoteRateLimitLayer).
///
/// `poll_ready` is the inner service's: this service never waits for the server there.
/// `call` takes every limit's key from the request (a keyless request is answered at once,
/// as the local layer does: `400`, `401` with `WWW-Authenticate`, or the fallback key),
/// then its future sends them all in one check and:
///
/// - allowed: calls the inner service and adds the rate limit headers the server's answer
///   gives (body untouched);
/// - refused: answers `429 Too Many Requests` with `Retry-After`, the headers and an
///   RFC 9457 problem body naming the limits over their rules, without calling the inner
///   service;
/// - no decision (unreachable, timed out, not a decision): calls the inner service
///   without headers ([`OnFailure::Open`]) or answers `503` with a problem body
///   ([`OnFailure::Closed`]).
pub struct RemoteRateLimit<I, B, L = (), C = crate::UnitCost> {
    inner: I,
    shared: Arc<Shared<B, L, C>>,
}

impl<I, B, L, C> RemoteRateLimit<I, B, L, C> {
    pub(crate) fn new(inner: I, shared: Arc<Shared<B, L, C>>) -> Self {
        Self { inner, shared }
    }

    /// The counts of this service's layer so far.
    pub fn stats(&self) -> RemoteStats {
        self.shared.counters.snapshot()
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

impl<I: Clone, B, L, C> Clone for RemoteRateLimit<I, B, L, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<I: fmt::Debug, B, L, C> fmt::Debug for RemoteRateLimit<I, B, L, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.shared.names.iter().map(|n| &**n).collect();
        f.debug_struct("RemoteRateLimit")
            .field("inner", &self.inner)
            .field("domain", &self.shared.domain)
            .field("limits", &names)
            .finish_non_exhaustive()
    }
}

impl<I, B, L, C, ReqB, ResB> Service<Request<ReqB>> for RemoteRateLimit<I, B, L, C>
where
    I: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    I::Future: Send + 'static,
    B: RemoteBackend,
    L: LimitSet<ReqB>,
    C: RequestCost<ReqB>,
    ReqB: Send + 'static,
    ResB: Send + 'static,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = I::Error;
    type Future = RemoteResponseFuture<ResB, I::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let mut keys = Keys::default();
        if let Err(refusal) = self.shared.limits.resolve(&req, &mut keys) {
            let response = missing_key(&refusal);
            // Not `future::ready`: that would hold the error type, which need not be `Send`.
            return Box::pin(async move { Ok(response) });
        }
        let hits = self.shared.cost.cost(&req);
        let shared = self.shared.clone();
        let mut inner = take(&mut self.inner);
        Box::pin(async move {
            let stamp = match shared.decide(keys.as_slice(), hits).await {
                Ok(stamp) => stamp,
                Err(response) => return Ok(response),
            };
            let response = inner.call(req).await?;
            Ok(stamped(stamp, response))
        })
    }
}

impl<B: RemoteBackend, L, C> Shared<B, L, C> {
    /// The headers of an admitted request, or the layer's own answer.
    async fn decide<ResB>(
        &self,
        keys: &[Key],
        hits: u64,
    ) -> Result<Stamp, Response<ResponseBody<ResB>>> {
        if keys.is_empty() {
            // No limits: nothing to ask.
            return Ok(Stamp::Off);
        }
        let check = self.backend.check(&self.domain, keys, hits);
        let answer = match tokio::time::timeout(self.timeout, check).await {
            Ok(answer) => answer.and_then(|a| a.for_descriptors(keys.len())),
            Err(_elapsed) => Err(Failure::TimedOut),
        };
        match answer {
            Ok(answer) if !answer.over_limit => {
                self.counters.decided(false);
                Ok(respond::stamp(self.style, &self.names, &answer))
            }
            Ok(answer) => {
                self.counters.decided(true);
                Err(respond::refused(self.style, &self.names, &answer))
            }
            Err(failure) => {
                self.counters.failed(failure);
                match self.on_failure {
                    OnFailure::Open => Ok(Stamp::Off),
                    OnFailure::Closed => Err(unavailable()),
                }
            }
        }
    }
}
