//! [`EgressMiddleware`]: sluice's pacing, quota, adaptive concurrency, retries and circuit
//! breaker for any [`reqwest_middleware`] client (feature `reqwest`).
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use sluice_egress::reqwest::EgressMiddleware;
//! use sluice_egress::{Egress, EgressConfig};
//!
//! let egress = Egress::new(EgressConfig::new("openai"))?;
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(EgressMiddleware::new(egress.clone()))
//!     .build();
//! let answer = client
//!     .post("http://127.0.0.1:8080/v1/chat/completions")
//!     .header("content-type", "application/json")
//!     .header("x-sluice-priority", "interactive")
//!     .body(r#"{"model":"m","messages":[{"role":"user","content":"Hi"}],"max_tokens":5}"#)
//!     .send()
//!     .await?;
//! println!("{}: {}", answer.status(), answer.text().await?);
//! # Ok(())
//! # }
//! ```
//!
//! # The job
//!
//! Each request's [`Job`](crate::Job) is made as the tower layer makes it (see
//! [`EgressLayer`](crate::EgressLayer)): its method, [`estimate_tokens`](crate::usage::estimate_tokens) of its
//! body (0 when the body is not an LLM request in JSON, or is a stream), and its priority,
//! tenant and longest wait from the middleware's extensions
//! ([`reqwest_middleware::RequestBuilder::with_extension`] with a
//! [`Priority`](crate::Priority), a [`Tenant`] or a [`MaxWait`]) or else from the
//! `x-sluice-priority`, `x-sluice-tenant` and `x-sluice-max-wait` headers, which are removed
//! before the request is sent.
//!
//! # Retries and bodies
//!
//! Each attempt sends a copy of the request ([`reqwest::Request::try_clone`]) down the rest
//! of the middleware chain. A request whose body cannot be copied (a stream, such as a
//! multipart form) gets a single attempt: its answer is returned whatever it is, and a
//! transport failure is not retried either (it is then not counted against the circuit
//! breaker, since it is reported as a failure not to retry).
//!
//! The answer's body is read whole (up to [`DEFAULT_MAX_BODY`] unless
//! [`max_response_body`](EgressMiddleware::max_response_body) says otherwise) before this
//! middleware returns: the client reads the usage it reports and sorts errors by their
//! wording. A streamed answer (server-sent events) therefore reaches the caller only once it
//! has ended. The answer returned keeps the upstream's status, headers, version, extensions
//! and final URL.
//!
//! # Errors
//!
//! A refusal or a call without an answer is a [`reqwest_middleware::Error::Middleware`]
//! holding the [`EgressError`]: `error.downcast_ref::<EgressError>()`. When attempts were
//! made and none was answered ([`EgressError::Send`]), the last attempt's
//! [`reqwest::Error`] is in its chain of causes. Transport errors are classed by reqwest's
//! own tests: [`is_connect`](reqwest::Error::is_connect) (never sent, always retried), then
//! [`is_timeout`](reqwest::Error::is_timeout), anything else a broken connection (retried
//! only for idempotent methods unless the client opted in).

use std::sync::{Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use http::{Extensions, HeaderName, HeaderValue};
use reqwest::{Request, Response, ResponseBuilderExt, Url};
use reqwest_middleware::{Middleware, Next};
use sluice_store::{MemoryStore, Store};

use crate::classify::ErrorClass;
use crate::job::job_for;
use crate::{Egress, EgressError, SendError, TokioClock};

pub use crate::job::{
    JobHeaderError, MAX_WAIT_HEADER, MaxWait, PRIORITY_HEADER, TENANT_HEADER, Tenant,
};
pub use crate::layer::{DEFAULT_MAX_BODY, ResponseTooLarge};

/// The header that tells the client not to retry an answer (see
/// [`may_retry`](crate::classify::may_retry)).
const X_SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

/// A [`reqwest_middleware::Middleware`] that sends every request through an [`Egress`]
/// client. See the [module docs](self).
pub struct EgressMiddleware<S = MemoryStore<TokioClock>> {
    egress: Egress<S>,
    max_response_body: usize,
}

impl<S> Clone for EgressMiddleware<S> {
    fn clone(&self) -> Self {
        Self {
            egress: self.egress.clone(),
            max_response_body: self.max_response_body,
        }
    }
}

impl<S> std::fmt::Debug for EgressMiddleware<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressMiddleware")
            .field("egress", &self.egress)
            .field("max_response_body", &self.max_response_body)
            .finish()
    }
}

impl<S> EgressMiddleware<S> {
    /// A middleware sending every request through `egress` (clones share its state), with
    /// answers bounded by [`DEFAULT_MAX_BODY`].
    pub fn new(egress: Egress<S>) -> Self {
        Self {
            egress,
            max_response_body: DEFAULT_MAX_BODY,
        }
    }

    /// The same middleware with another bound on answer bodies, in bytes. A larger answer
    /// fails its call, without retrying, with a [`ResponseTooLarge`] as the cause.
    #[must_use]
    pub fn max_response_body(self, bytes: usize) -> Self {
        Self {
            max_response_body: bytes,
            ..self
        }
    }

    /// The client every request goes through (for its [`stats`](Egress::stats)).
    pub fn egress(&self) -> &Egress<S> {
        &self.egress
    }
}

/// The URL an answer came from (after redirects), carried from an attempt to the end.
#[derive(Clone)]
struct AnsweredUrl(Url);

/// Marks an answer whose `x-should-retry` this middleware set to `false`, with the values
/// the upstream had sent, to put back.
#[derive(Clone)]
struct ShouldRetryOverride(Vec<HeaderValue>);

#[async_trait::async_trait]
impl<S: Store> Middleware for EgressMiddleware<S> {
    async fn handle(
        &self,
        mut req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let mut headers = std::mem::take(req.headers_mut());
        let job = job_for(
            req.method(),
            &mut headers,
            extensions,
            req.body().and_then(reqwest::Body::as_bytes),
        )
        .map_err(reqwest_middleware::Error::middleware)?;
        *req.headers_mut() = headers;
        let once = req.try_clone().is_none();
        // A request that can be copied is copied per attempt; one that cannot is taken.
        let request = Mutex::new(Some(req));
        let before = extensions.clone();
        let after: Mutex<Option<Extensions>> = Mutex::new(None);
        let limit = self.max_response_body;

        let answer = self
            .egress
            .execute(&job, || {
                let attempt = {
                    let mut request = request.lock().unwrap_or_else(PoisonError::into_inner);
                    if once {
                        request.take()
                    } else {
                        request.as_ref().and_then(Request::try_clone)
                    }
                };
                let next = next.clone();
                let mut extensions = before.clone();
                let after = &after;
                async move {
                    let Some(attempt) = attempt else {
                        // Unreachable: a single-attempt request's answer says not to retry,
                        // and its transport failures are classed as not retryable.
                        return Err(SendError {
                            class: ErrorClass::NotRetryable,
                            source: "the request's body is a stream and cannot be sent again"
                                .into(),
                        });
                    };
                    let result = send(next, attempt, &mut extensions, limit, once)
                        .await
                        .map_err(|e| {
                            if once {
                                // It cannot be sent again.
                                SendError {
                                    class: ErrorClass::NotRetryable,
                                    ..e
                                }
                            } else {
                                e
                            }
                        });
                    *after.lock().unwrap_or_else(PoisonError::into_inner) = Some(extensions);
                    result
                }
            })
            .await;

        if let Some(last) = after.into_inner().unwrap_or_else(PoisonError::into_inner) {
            *extensions = last;
        }
        let answer = answer.map_err(egress_error)?;
        rebuild(answer)
    }
}

/// One attempt down the rest of the chain, with the answer read whole.
async fn send(
    next: Next<'_>,
    request: Request,
    extensions: &mut Extensions,
    limit: usize,
    once: bool,
) -> Result<http::Response<Bytes>, SendError> {
    let mut response = next.run(request, extensions).await.map_err(|e| match e {
        reqwest_middleware::Error::Reqwest(e) => reqwest_error(e),
        // A later middleware failed: not a connection that was refused, so it may have
        // been sent.
        reqwest_middleware::Error::Middleware(e) => SendError {
            class: ErrorClass::ConnectionReset,
            source: e.into(),
        },
    })?;
    let url = response.url().clone();
    let status = response.status();
    let version = response.version();
    let mut headers = std::mem::take(response.headers_mut());
    let mut response_extensions = std::mem::take(response.extensions_mut());

    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(reqwest_error)? {
        if body.len().saturating_add(chunk.len()) > limit {
            return Err(SendError {
                class: ErrorClass::NotRetryable,
                source: Box::new(ResponseTooLarge { limit }),
            });
        }
        body.extend_from_slice(&chunk);
    }

    if once {
        // The request cannot be sent again: tell the client not to try, whatever the
        // upstream said.
        let said = headers.get_all(&X_SHOULD_RETRY).iter().cloned().collect();
        headers.insert(X_SHOULD_RETRY, HeaderValue::from_static("false"));
        response_extensions.insert(ShouldRetryOverride(said));
    }
    response_extensions.insert(AnsweredUrl(url));
    let mut answer = http::Response::new(body.freeze());
    *answer.status_mut() = status;
    *answer.version_mut() = version;
    *answer.headers_mut() = headers;
    *answer.extensions_mut() = response_extensions;
    Ok(answer)
}

/// The upstream's answer as a [`reqwest::Response`], with its URL.
fn rebuild(answer: http::Response<Bytes>) -> reqwest_middleware::Result<Response> {
    let (mut parts, body) = answer.into_parts();
    if let Some(ShouldRetryOverride(said)) = parts.extensions.remove::<ShouldRetryOverride>() {
        parts.headers.remove(&X_SHOULD_RETRY);
        for value in said {
            parts.headers.append(X_SHOULD_RETRY, value);
        }
    }
    let mut builder = http::Response::builder()
        .status(parts.status)
        .version(parts.version);
    if let Some(AnsweredUrl(url)) = parts.extensions.remove::<AnsweredUrl>() {
        builder = builder.url(url);
    }
    let mut rebuilt = builder
        .body(body)
        .map_err(reqwest_middleware::Error::middleware)?;
    *rebuilt.headers_mut() = parts.headers;
    rebuilt.extensions_mut().extend(parts.extensions);
    Ok(Response::from(rebuilt))
}

/// A reqwest failure as the client's [`SendError`]: connect, then timeout, else a broken
/// connection.
fn reqwest_error(error: reqwest::Error) -> SendError {
    let class = if error.is_connect() {
        ErrorClass::Connect
    } else if error.is_timeout() {
        ErrorClass::Timeout
    } else {
        ErrorClass::ConnectionReset
    };
    SendError {
        class,
        source: Box::new(error),
    }
}

/// The client's error as reqwest-middleware's, downcastable to [`EgressError`].
fn egress_error(error: EgressError) -> reqwest_middleware::Error {
    reqwest_middleware::Error::Middleware(anyhow::Error::new(error))
}
