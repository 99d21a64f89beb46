//! One item: its request, its calls through the egress client, and what becomes of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::{HeaderValue, Request, Response, Uri};
use serde::Serialize;
use serde_json::Value;
use sluice_core::{Clock, Nanos, time::duration_nanos};
use tokio::sync::{Notify, watch};

use super::dead_letter::{Entry, Kind};
use super::input::Item;
use super::state::idempotency_key;
use super::{IDEMPOTENCY_KEY, Transport};
use crate::classify::{ErrorClass, Idempotency, Outcome as Class, classify_status};
use crate::job::PRIORITY_HEADER;
use crate::quota::QuotaConfig;
use crate::retry::NextStep;
use crate::usage::estimate_tokens;
use crate::{Egress, EgressError, EgressStats, Job, Priority, TokioClock};

/// What every item task shares.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) egress: Egress,
    pub(crate) transport: Arc<dyn Transport>,
    /// The base URL without a trailing slash.
    pub(crate) base: String,
    pub(crate) via_proxy: bool,
    /// The seed of idempotency keys; `None`: none are sent.
    pub(crate) job_key: Option<String>,
    pub(crate) max_wait: Duration,
    /// Turns true when the run stops.
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) clock: TokioClock,
    /// The client's quota settings (pause threshold, who is exempt).
    pub(crate) quota: QuotaConfig,
    pub(crate) door: Door,
}

/// How many items may wait for their pace inside the client at once.
///
/// The client checks the quota before an item waits for its pace, so every item waiting
/// there has passed the pause check already. Letting only a few in at a time (plus those
/// on the wire or backing off, which check again before their next attempt) keeps the
/// overshoot past the pause threshold to about this many requests.
pub(crate) const QUEUED: usize = 4;

/// How often an item waiting at the door looks again, besides being woken.
const RECHECK: Duration = Duration::from_millis(50);

/// Lets items into the client: not while the quota holds batch work (see
/// [`held_until`]), and only a few waiting for their pace at once ([`QUEUED`]).
#[derive(Debug, Default)]
pub(crate) struct Door {
    inside: AtomicUsize,
    changed: Notify,
}

/// An item inside the client; leaving wakes the door's waiters.
struct Inside<'a>(&'a Door);

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.0.inside.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_waiters();
    }
}

/// Until when the quota holds work of `priority`: the latest reset of a dimension with
/// nothing left, or (below `pause_exempt`) at or past the pause threshold. The client
/// decides the same way when the item reaches it.
pub(crate) fn held_until(
    stats: &EgressStats,
    priority: Priority,
    quota: &QuotaConfig,
    now: Nanos,
) -> Option<Nanos> {
    let mut until = None;
    for usage in &stats.quota {
        let Some(reset) = usage.resets_at.filter(|&at| at > now) else {
            continue;
        };
        let held = usage.remaining == 0
            || (priority < quota.pause_exempt && usage.percent >= f64::from(quota.pause_threshold));
        if held {
            until = until.max(Some(reset));
        }
    }
    until
}

impl Ctx {
    /// Waits at the door; `None` when the run stops meanwhile. A hold that lasts past
    /// `deadline` does not wait here: the client then refuses the item, which fails.
    async fn enter(&self, priority: Priority, deadline: Nanos) -> Option<Inside<'_>> {
        let mut stop = self.stop.clone();
        loop {
            if *stop.borrow() {
                return None;
            }
            let now = self.clock.now();
            let stats = self.egress.stats();
            if let Some(until) = held_until(&stats, priority, &self.quota, now)
                && until <= deadline
            {
                tokio::select! {
                    () = tokio::time::sleep_until(self.clock.instant_at(until)) => continue,
                    () = wait_stop(&mut stop) => return None,
                }
            }
            let changed = self.door.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            let inside = self.door.inside.load(Ordering::Acquire);
            let busy = usize::try_from(stats.in_flight)
                .unwrap_or(usize::MAX)
                .saturating_add(stats.retrying);
            let cap = usize::try_from(stats.concurrency_limit)
                .unwrap_or(usize::MAX)
                .saturating_add(QUEUED);
            if inside.saturating_sub(busy) < QUEUED && inside.saturating_sub(stats.retrying) < cap {
                if self
                    .door
                    .inside
                    .compare_exchange(inside, inside + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Some(Inside(&self.door));
                }
                continue;
            }
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep(RECHECK) => {}
                () = wait_stop(&mut stop) => return None,
            }
        }
    }
}

/// What became of an item.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Answered with success: its result line, newline included.
    Done { id: String, line: Vec<u8> },
    /// Failed for good.
    Failed(Entry),
    /// Dropped because the run stopped; the next run sends it.
    Cancelled,
}

/// One line of the results file.
#[derive(Serialize)]
struct ResultLine<'a> {
    id: &'a str,
    status: u16,
    body: Value,
    attempts: u32,
    latency_ms: u64,
}

/// Sends one item until it succeeds, fails for good, or the run stops.
pub(crate) async fn process(item: Box<Item>, ctx: Arc<Ctx>) -> Outcome {
    let Item {
        line,
        id,
        method,
        path,
        mut headers,
        body,
        priority,
    } = *item;
    let failed = |reason: String, status: Option<u16>, body: Option<Value>, attempts: u32| {
        Outcome::Failed(Entry {
            kind: Kind::Failed,
            line,
            id: Some(id.clone()),
            reason,
            status,
            body,
            attempts: Some(attempts),
        })
    };
    let uri: Uri = match format!("{}{path}", ctx.base).parse() {
        Ok(uri) => uri,
        Err(e) => return failed(format!("path: not a valid URL: {e}"), None, None, 0),
    };
    // The client frames the body and manages the connection itself.
    for name in [CONTENT_LENGTH, TRANSFER_ENCODING, CONNECTION] {
        headers.remove(name);
    }
    if !body.is_empty() && !headers.contains_key(CONTENT_TYPE) {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    let mut idempotency = Idempotency::of_method(&method);
    if let Some(job_key) = &ctx.job_key {
        if !headers.contains_key(&IDEMPOTENCY_KEY)
            && let Ok(key) = HeaderValue::try_from(idempotency_key(job_key, &id))
        {
            headers.insert(IDEMPOTENCY_KEY, key);
        }
        idempotency = Idempotency::Idempotent;
    }
    if ctx.via_proxy {
        headers.insert(PRIORITY_HEADER, HeaderValue::from(u16::from(priority.0)));
    }
    let tokens = estimate_tokens(&body).unwrap_or(0);
    let deadline = ctx.clock.now().plus_nanos(duration_nanos(ctx.max_wait));
    let Some(inside) = ctx.enter(priority, deadline).await else {
        return Outcome::Cancelled;
    };
    let job = Job {
        priority,
        tenant: None,
        tokens,
        idempotency,
        max_wait: deadline.saturating_since(ctx.clock.now()),
    };
    // The client's one driver of attempts decides the retries: with the batch's settings
    // it keeps trying what the upstream turned away until the item's max_wait.
    let mut call = ctx.egress.call(&job);
    let mut stop = ctx.stop.clone();
    // The last transport failure, for the dead letter's reason.
    let mut last_failure: Option<String> = None;
    let (answer, latency) = loop {
        let attempt = tokio::select! {
            attempt = call.attempt() => attempt,
            () = wait_stop(&mut stop) => return Outcome::Cancelled,
        };
        let attempt = match attempt {
            Ok(attempt) => attempt,
            Err(e @ (EgressError::CircuitOpen { .. } | EgressError::Overloaded { .. })) => {
                let last = last_failure.unwrap_or_else(|| chain(&e));
                return failed(
                    format!(
                        "gave up after waiting {:?} (max_wait) for the upstream; last: {last}",
                        ctx.max_wait
                    ),
                    None,
                    None,
                    call.attempts(),
                );
            }
            Err(e) => return failed(chain(&e), None, None, call.attempts()),
        };
        // One fewer waiting for its pace: the next item may come in.
        ctx.door.changed.notify_waiters();
        let mut request = Request::new(body.clone());
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri.clone();
        *request.headers_mut() = headers.clone();
        let sent_at = ctx.clock.now();
        // Sent: the answer is let come even when the run stops (the run bounds how long).
        let result = call.timed(ctx.transport.send(request)).await;
        let latency = ctx.clock.now().saturating_since(sent_at);
        let report = match &result {
            Ok(response) => {
                attempt
                    .answered(response.status(), response.headers(), Some(response.body()))
                    .await
            }
            Err(error) => {
                last_failure = Some(chain(error));
                attempt.failed(error).await
            }
        };
        match call.next_step(&report) {
            NextStep::RetryAfter(wait) => {
                drop(report);
                if *ctx.stop.borrow() {
                    return Outcome::Cancelled;
                }
                tokio::select! {
                    () = call.back_off(wait) => {}
                    () = wait_stop(&mut stop) => return Outcome::Cancelled,
                }
            }
            NextStep::Done | NextStep::GiveUp => break (result, latency),
        }
    };
    drop(inside);
    let count = call.attempts();
    match answer {
        Ok(response) => {
            let status = response.status();
            match classify_status(status, Some(response.body())) {
                Class::Success => Outcome::Done {
                    line: result_line(&id, &response, count, latency),
                    id,
                },
                Class::Failure(
                    ErrorClass::RateLimited | ErrorClass::QuotaExhausted | ErrorClass::Overloaded,
                ) => failed(
                    format!(
                        "HTTP {status}: still refused after waiting {:?}",
                        ctx.max_wait
                    ),
                    Some(status.as_u16()),
                    Some(body_value(&response)),
                    count,
                ),
                Class::Failure(class) => failed(
                    format!("HTTP {status} ({class}) after {count} attempt(s)"),
                    Some(status.as_u16()),
                    Some(body_value(&response)),
                    count,
                ),
            }
        }
        Err(_) if *ctx.stop.borrow() => Outcome::Cancelled,
        Err(error) if error.class == ErrorClass::Connect => failed(
            format!(
                "gave up after waiting {:?} (max_wait) for the upstream; last: {}",
                ctx.max_wait,
                chain(&error)
            ),
            None,
            None,
            count,
        ),
        Err(error) => failed(chain(&call.send_failed(error)), None, None, count),
    }
}

/// An error and its causes, `: `-separated, each cause once (a message that already holds
/// its cause's text does not repeat it).
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let message = cause.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        next = cause.source();
    }
    text
}

/// Resolves once the run is stopping (never, if the run is gone).
async fn wait_stop(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stopping| *stopping).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The result line of a successful answer, with its newline.
fn result_line(id: &str, response: &Response<Bytes>, attempts: u32, latency: Duration) -> Vec<u8> {
    let line = ResultLine {
        id,
        status: response.status().as_u16(),
        body: body_value(response),
        attempts,
        latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
    };
    // Strings, numbers and a JSON value: it always serialises, on one line.
    let mut text = serde_json::to_vec(&line).unwrap_or_default();
    text.push(b'\n');
    text
}

/// An answer's body as JSON when it is JSON, else as a string (lossy UTF-8).
pub(crate) fn body_value(response: &Response<Bytes>) -> Value {
    let body = response.body();
    let looks_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"))
        || body
            .trim_ascii_start()
            .first()
            .is_some_and(|b| matches!(b, b'{' | b'['));
    if looks_json && let Ok(value) = serde_json::from_slice::<Value>(body) {
        return value;
    }
    Value::String(String::from_utf8_lossy(body).into_owned())
}
