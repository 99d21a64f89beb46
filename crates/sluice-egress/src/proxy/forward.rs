//! One request through the proxy: read it, make its job, attempt until done, relay the
//! answer.
//!
//! The attempts run in one future, the *producer*, that owns the job and borrows the
//! egress client across its awaits (an attempt and a stream's settlement hold borrows of
//! both). The request's future polls it until it sends the answer's head; for a streamed
//! answer the producer then moves into the answer's body, which polls it as the client
//! reads, so the relay and the final settlement run in the connection's task, and stop
//! when the client goes away. Nothing is spawned per request.
//!
//! A streamed answer's [`Settlement`] holds the call's concurrency slot, and the producer
//! holds the settlement until the upstream's stream ends: the slot is given back when the
//! stream completes (a success, timed over the whole stream), breaks off (a failure of its
//! class), or when the client goes away and the body, with the producer inside, is
//! dropped. So `--max-concurrency` counts streams until they end, not until their head.
//!
//! With [`ProxyConfig::coalesce`] on, a request that may share its answer (see
//! [`super::coalesce`]) goes through [`Egress::execute_coalesced`] instead: its answer is
//! read whole, since one answer goes to every identical request waiting for it.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{Extensions, HeaderMap, Request, Response, StatusCode, Uri, Version, request, response};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use sluice_store::Store;
use tokio::sync::{mpsc, oneshot};

use super::ATTEMPTS_HEADER;
use super::body::{Producer, ProxyBody, Relayed};
use super::coalesce;
use super::config::ProxyConfig;
use super::local;
use super::metrics::{Metrics, Source};
use super::problem::{Reason, problem, refusal};
use super::sse::UsageScanner;
use super::upstream::{UpstreamClient, outgoing_headers, remove_hop_by_hop};
use crate::classify::{ErrorClass, transport_class};
use crate::client::Settlement;
use crate::coalesce::CoalesceKey;
use crate::job::job_for;
use crate::retry::NextStep;
use crate::{Egress, EgressError, Job, SendError};

/// Frames of a stream buffered between the upstream and the client.
const RELAY_BUFFER: usize = 16;

/// How long a client may take to send a request's body.
const REQUEST_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// What every request of one proxy shares.
pub(crate) struct Shared<S> {
    pub(crate) config: ProxyConfig,
    pub(crate) egress: Egress<S>,
    pub(crate) metrics: Metrics,
    client: UpstreamClient,
    host: String,
    /// Stands for the upstream in coalescing keys (the request's path is in their digest).
    coalesce_base: Uri,
}

impl<S> Shared<S> {
    pub(crate) fn new(config: ProxyConfig, egress: Egress<S>, client: UpstreamClient) -> Self {
        let host = config.upstream.authority().to_string();
        let coalesce_base = config.upstream.join(None).unwrap_or_default();
        Self {
            config,
            egress,
            metrics: Metrics::default(),
            client,
            host,
            coalesce_base,
        }
    }
}

/// The start of the answer, from the producer.
enum Head {
    /// A whole answer: the upstream's, or the proxy's own.
    Whole(Response<ProxyBody>, Source),
    /// The head of a streamed answer; its frames come through the channel.
    Stream(response::Parts, mpsc::Receiver<Relayed>),
}

/// Answers one request.
pub(crate) async fn handle<S: Store + 'static>(
    shared: Arc<Shared<S>>,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    if let Some(response) = local::route(&shared, &request) {
        return response;
    }
    shared.metrics.request();
    let (response, source) = forward(&shared, request).await;
    shared.metrics.response(source, response.status());
    response
}

async fn forward<S: Store + 'static>(
    shared: &Arc<Shared<S>>,
    request: Request<Incoming>,
) -> (Response<ProxyBody>, Source) {
    let (mut parts, body) = request.into_parts();
    let limit = shared.config.max_request_body;
    let read = tokio::time::timeout(REQUEST_BODY_TIMEOUT, Limited::new(body, limit).collect());
    let body = match read.await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => {
            let detail = format!("The request body is larger than {limit} bytes.");
            return own(
                shared,
                Reason::RequestTooLarge,
                StatusCode::PAYLOAD_TOO_LARGE,
                &detail,
            );
        }
        Ok(Err(e)) => {
            let detail = format!("Reading the request body failed: {e}.");
            return own(shared, Reason::BadRequest, StatusCode::BAD_REQUEST, &detail);
        }
        Err(_) => {
            let detail = format!(
                "The request body did not arrive within {} s.",
                REQUEST_BODY_TIMEOUT.as_secs()
            );
            return own(
                shared,
                Reason::BadRequest,
                StatusCode::REQUEST_TIMEOUT,
                &detail,
            );
        }
    };
    let job = match job_for(
        &parts.method,
        &mut parts.headers,
        &parts.extensions,
        Some(&body),
    ) {
        Ok(job) => job,
        Err(e) => {
            return own(
                shared,
                Reason::BadRequest,
                StatusCode::BAD_REQUEST,
                &format!("{e}."),
            );
        }
    };
    parts.uri = match shared.config.upstream.join(parts.uri.path_and_query()) {
        Ok(uri) => uri,
        Err(e) => {
            let detail = format!("The request's path cannot be forwarded: {e}.");
            return own(shared, Reason::BadRequest, StatusCode::BAD_REQUEST, &detail);
        }
    };
    outgoing_headers(&mut parts.headers, &shared.host);
    // The client negotiates its own protocol with the upstream.
    parts.version = Version::HTTP_11;
    parts.extensions = Extensions::new();

    if shared.config.coalesce
        && let Some(key) = coalesce::key_for(&parts, &body, &shared.coalesce_base)
    {
        return coalesced(shared, key, &job, &parts, &body).await;
    }

    let (head_tx, mut head_rx) = oneshot::channel();
    let mut producer: Option<Producer> = Some(Box::pin(attempts(
        Arc::clone(shared),
        job,
        parts,
        body,
        head_tx,
    )));
    let head = poll_fn(|cx| {
        if let Some(work) = &mut producer
            && work.as_mut().poll(cx).is_ready()
        {
            producer = None;
        }
        match Pin::new(&mut head_rx).poll(cx) {
            Poll::Ready(head) => Poll::Ready(head.ok()),
            // A producer that has ended has sent its head or dropped the sender.
            Poll::Pending if producer.is_none() => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    match head {
        Some(Head::Whole(response, source)) => (response, source),
        Some(Head::Stream(parts, frames)) => (
            Response::from_parts(parts, ProxyBody::relay(producer, frames)),
            Source::Upstream,
        ),
        None => {
            let detail = "The proxy ended the request without an answer.";
            own(
                shared,
                Reason::UpstreamUnreachable,
                StatusCode::BAD_GATEWAY,
                detail,
            )
        }
    }
}

/// The proxy's own answer, counted.
fn own<S>(
    shared: &Shared<S>,
    reason: Reason,
    status: StatusCode,
    detail: &str,
) -> (Response<ProxyBody>, Source) {
    shared.metrics.refused(reason);
    (problem(reason, status, detail, None), Source::Proxy)
}

/// The producer: attempts until done, sends the head, relays a stream.
async fn attempts<S: Store>(
    shared: Arc<Shared<S>>,
    job: Job,
    parts: request::Parts,
    body: Bytes,
    head: oneshot::Sender<Head>,
) {
    let egress = &shared.egress;
    let config = &shared.config;
    let mut call = egress.call(&job);
    loop {
        let attempt = match call.attempt().await {
            Ok(attempt) => attempt,
            Err(error) => {
                let _ = head.send(refused(&shared, &error));
                return;
            }
        };
        let request = Request::from_parts(parts.clone(), Full::new(body.clone()));
        let timeout = config.attempt_timeout;
        let sent = match tokio::time::timeout(timeout, shared.client.send(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(SendError {
                class: transport_class(&e),
                source: Box::new(e),
            }),
            Err(_) => Err(SendError {
                class: ErrorClass::Timeout,
                source: format!("no answer within {timeout:?}").into(),
            }),
        };
        let (report, answer) = match sent {
            Err(error) => {
                shared.metrics.upstream_error(error.class);
                (attempt.failed(&error).await, Err(error))
            }
            Ok(response) => {
                let status = response.status();
                shared.metrics.upstream_answer(status);
                if status.as_u16() < 400 && streams(response.headers(), config.max_response_body) {
                    let report = attempt.answered(status, response.headers(), None).await;
                    relay(&shared, report.settlement, response, call.attempts(), head).await;
                    return;
                }
                let (answer, body) = response.into_parts();
                // The body too must come within the attempt's time.
                let read = Limited::new(body, config.max_response_body).collect();
                let read = match tokio::time::timeout(timeout, read).await {
                    Ok(read) => read,
                    Err(elapsed) => Err(elapsed.into()),
                };
                match read {
                    Ok(collected) => {
                        let bytes = collected.to_bytes();
                        let report = attempt
                            .answered(status, &answer.headers, Some(&bytes))
                            .await;
                        (report, Ok((answer, bytes)))
                    }
                    Err(e) if e.is::<LengthLimitError>() => {
                        let report = attempt.answered(status, &answer.headers, None).await;
                        if let Some(settlement) = report.settlement {
                            settlement.settle_to(None).await;
                        }
                        let detail = format!(
                            "The upstream answered {status} with a body larger than {} bytes.",
                            config.max_response_body
                        );
                        let _ = head.send(whole(own(
                            &shared,
                            Reason::ResponseTooLarge,
                            StatusCode::BAD_GATEWAY,
                            &detail,
                        )));
                        return;
                    }
                    Err(e) => {
                        let error = SendError {
                            class: transport_class(&*e),
                            source: e,
                        };
                        shared.metrics.upstream_error(error.class);
                        (attempt.failed(&error).await, Err(error))
                    }
                }
            }
        };
        match call.next_step(&report) {
            NextStep::RetryAfter(wait) => {
                drop(report);
                let _waiting = Gauge::up(&shared.metrics.retry_waits);
                call.back_off(wait).await;
            }
            NextStep::Done | NextStep::GiveUp => {
                let attempts = call.attempts();
                let message = match answer {
                    Ok((answer, bytes)) => Head::Whole(
                        Response::from_parts(client_head(answer, attempts), ProxyBody::full(bytes)),
                        Source::Upstream,
                    ),
                    Err(error) => refused(&shared, &call.send_failed(error)),
                };
                let _ = head.send(message);
                return;
            }
        }
    }
}

fn whole((response, source): (Response<ProxyBody>, Source)) -> Head {
    Head::Whole(response, source)
}

fn refused<S>(shared: &Shared<S>, error: &EgressError) -> Head {
    whole(refused_answer(shared, error))
}

/// The proxy's answer to a call the egress client refused or could not complete, counted.
fn refused_answer<S>(shared: &Shared<S>, error: &EgressError) -> (Response<ProxyBody>, Source) {
    let (reason, response) = refusal(error);
    shared.metrics.refused(reason);
    tracing::debug!(reason = reason.name(), error = %error, "answered without the upstream");
    (response, Source::Proxy)
}

/// Marks a coalesced call's answer whose body was larger than
/// [`ProxyConfig::max_response_body`]: its body is left out, and every request that
/// shares it gets 502.
#[derive(Clone, Copy, Debug)]
struct TooLarge;

/// Forwards a request that may share its call: the first of identical requests in flight
/// makes the call (with the retries the egress client decides), the others wait for its
/// answer and get a copy.
async fn coalesced<S: Store>(
    shared: &Shared<S>,
    key: CoalesceKey,
    job: &Job,
    parts: &request::Parts,
    body: &Bytes,
) -> (Response<ProxyBody>, Source) {
    shared.metrics.coalescing();
    let attempts = AtomicU32::new(0);
    let answer = shared
        .egress
        .execute_coalesced(key, job, || send_whole(shared, parts, body, &attempts))
        .await;
    match answer {
        Ok(response) if response.extensions().get::<TooLarge>().is_some() => {
            let detail = format!(
                "The upstream answered {} with a body larger than {} bytes.",
                response.status(),
                shared.config.max_response_body
            );
            own(
                shared,
                Reason::ResponseTooLarge,
                StatusCode::BAD_GATEWAY,
                &detail,
            )
        }
        Ok(response) => {
            let (parts, bytes) = response.into_parts();
            (
                Response::from_parts(parts, ProxyBody::full(bytes)),
                Source::Upstream,
            )
        }
        Err(error) => refused_answer(shared, &error),
    }
}

/// One attempt of a coalesced call: sends the request and reads the answer whole, both
/// within the attempt's time. The answer carries the attempts so far, as every relayed
/// answer does.
async fn send_whole<S>(
    shared: &Shared<S>,
    parts: &request::Parts,
    body: &Bytes,
    attempts: &AtomicU32,
) -> Result<Response<Bytes>, SendError> {
    let attempt = attempts.fetch_add(1, Ordering::Relaxed).saturating_add(1);
    let config = &shared.config;
    let request = Request::from_parts(parts.clone(), Full::new(body.clone()));
    let exchange = async {
        let response = shared.client.send(request).await.map_err(|e| SendError {
            class: transport_class(&e),
            source: Box::new(e),
        })?;
        shared.metrics.upstream_answer(response.status());
        let (head, incoming) = response.into_parts();
        let mut head = client_head(head, attempt);
        match Limited::new(incoming, config.max_response_body)
            .collect()
            .await
        {
            Ok(collected) => Ok(Response::from_parts(head, collected.to_bytes())),
            Err(e) if e.is::<LengthLimitError>() => {
                head.extensions.insert(TooLarge);
                Ok(Response::from_parts(head, Bytes::new()))
            }
            Err(e) => Err(SendError {
                class: transport_class(&*e),
                source: e,
            }),
        }
    };
    let timeout = config.attempt_timeout;
    let sent = match tokio::time::timeout(timeout, exchange).await {
        Ok(sent) => sent,
        Err(_) => Err(SendError {
            class: ErrorClass::Timeout,
            source: format!("no answer within {timeout:?}").into(),
        }),
    };
    if let Err(error) = &sent {
        shared.metrics.upstream_error(error.class);
    }
    sent
}

/// Relays a streamed answer: sends its head, then its frames as they come, reading the
/// usage of server-sent events; at the end, gives back the call's concurrency slot (held by
/// `settlement`) and settles the tokens.
async fn relay<S: Store>(
    shared: &Shared<S>,
    settlement: Option<Settlement<'_, S>>,
    response: Response<Incoming>,
    attempts: u32,
    head: oneshot::Sender<Head>,
) {
    let sse = is_event_stream(response.headers());
    let (parts, mut body) = response.into_parts();
    let (frames, receiver) = mpsc::channel(RELAY_BUFFER);
    if head
        .send(Head::Stream(client_head(parts, attempts), receiver))
        .is_err()
    {
        return;
    }
    shared.metrics.stream_started();
    let _active = Gauge::held(&shared.metrics.streams_active);
    let mut scanner = UsageScanner::default();
    let mut broke_off = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if sse && let Some(data) = frame.data_ref() {
                    scanner.feed(data);
                }
                if frames.send(Ok(frame)).await.is_err() {
                    // The client is gone (the body owns this producer, so this is only
                    // for safety): as when the body is dropped, nothing is learned.
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "the upstream's stream broke off");
                broke_off = Some(transport_class(&e));
                let _ = frames.send(Err(Box::new(e))).await;
                break;
            }
        }
    }
    // The upstream is done with the call: its slot goes back before the tokens settle.
    drop(body);
    let used = scanner.tokens();
    shared.metrics.stream_settled(used.is_some());
    if let Some(settlement) = settlement {
        match broke_off {
            None => settlement.settle_to(used).await,
            Some(class) => settlement.broke_off(class, used).await,
        }
    }
    drop(frames);
}

/// The upstream's answer head as it goes to the client.
fn client_head(mut parts: response::Parts, attempts: u32) -> response::Parts {
    remove_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .insert(ATTEMPTS_HEADER, HeaderValue::from(attempts));
    parts
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .get(..17)
                .is_some_and(|t| t.eq_ignore_ascii_case("text/event-stream"))
        })
}

/// Whether a successful answer is relayed as it arrives rather than read whole.
fn streams(headers: &HeaderMap, max_body: usize) -> bool {
    if is_event_stream(headers) {
        return true;
    }
    let length = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match length {
        Some(length) => length > u64::try_from(max_body).unwrap_or(u64::MAX),
        None => !is_json(headers),
    }
}

/// Whether the body is JSON by its `Content-Type` (`application/json` or `…+json`).
pub(super) fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|v| v == "application/json" || v.ends_with("+json"))
}

/// Counts something in a gauge while it lasts.
struct Gauge<'a>(&'a AtomicU64);

impl<'a> Gauge<'a> {
    fn up(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(gauge)
    }

    /// A gauge already counted up (by the caller) that this guard brings down.
    fn held(gauge: &'a AtomicU64) -> Self {
        Self(gauge)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| {
                (
                    http::HeaderName::from_static(n),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn decides_what_streams() {
        let max = 1_000;
        assert!(streams(
            &headers(&[("content-type", "text/event-stream; charset=utf-8")]),
            max
        ));
        assert!(streams(
            &headers(&[("content-type", "Text/Event-Stream")]),
            max
        ));
        assert!(!streams(
            &headers(&[
                ("content-type", "application/json"),
                ("content-length", "20")
            ]),
            max
        ));
        assert!(!streams(
            &headers(&[("content-type", "application/json")]),
            max
        ));
        assert!(!streams(
            &headers(&[("content-type", "application/problem+json; charset=utf-8")]),
            max
        ));
        assert!(streams(
            &headers(&[("content-type", "application/x-ndjson")]),
            max
        ));
        assert!(streams(
            &headers(&[
                ("content-type", "application/json"),
                ("content-length", "5000")
            ]),
            max
        ));
        assert!(streams(&headers(&[]), max));
    }
}
