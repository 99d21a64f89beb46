//! A fake quota-limited upstream: an OpenAI-style chat completion API with requests-per-
//! minute and tokens-per-minute quotas, OpenAI's rate limit headers and 429 bodies, and
//! injectable faults, for the tests of `sluice-egress`.
//!
//! [`FakeUpstream`] runs in two ways:
//!
//! - **In process**, as a [`tower_service::Service`]`<http::Request<B>>` answering
//!   `http::Response<`[`Full`]`<Bytes>>` (or [`FakeUpstream::handle`], which answers
//!   `http::Response<Bytes>` for easy assertions). Time comes only from the injected
//!   [`Clock`] and latency is a [`tokio::time::sleep`], so under paused tokio time
//!   (`#[tokio::test(start_paused = true)]`, with a clock that reads tokio's time) a test
//!   of many simulated minutes runs in milliseconds and is exactly repeatable. Nothing
//!   here opens a socket or reads the OS clock.
//! - **Over HTTP/1.1 on loopback**, with [`FakeUpstream::serve`]: a hyper server on
//!   `127.0.0.1:0` on a spawned task, stopped when the [`FakeServer`] is dropped. Give it
//!   a clock that follows real time then (`sluice_core::MonotonicClock`, or tokio's time
//!   without pausing).
//!
//! # Endpoints
//!
//! | Request | Answer |
//! |---|---|
//! | `POST /v1/chat/completions` | 200 `chat.completion`, charged 1 request and `prompt + completion` tokens |
//! | `GET /v1/models` | 200 model list, charged 1 request and 0 tokens |
//! | other paths or methods | 404 `invalid_request_error`, not charged |
//! | a chat body that is not JSON, or lacks `model` or `messages` | 400 `invalid_request_error`, not charged |
//!
//! Prompt tokens are [`prompt_tokens`]`(&body)`: `ceil(characters / 4) + 4 per message`.
//! Completion tokens are `min(max_tokens, config.completion_tokens)`, where `max_tokens` is
//! the body's `max_completion_tokens`, else its `max_tokens`, else [`DEFAULT_MAX_TOKENS`].
//!
//! # Quota
//!
//! Requests and tokens are each a token bucket that refills continuously: sluice-core's
//! GCRA with capacity equal to the per-minute limit (so `rpm: 600` admits 600 at once,
//! then one every 100 ms), as OpenAI describes its limits. A request is admitted only if
//! every bucket has room for it, and then debited from all of them at the instant it
//! arrives. A limit of zero turns that bucket off (and its headers with it). An optional
//! daily request budget is a third bucket, refilling over 24 hours.
//!
//! Every charged request's answer (200, and 429 for rate limits or insufficient quota)
//! carries `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`: the capacity, the units
//! left after this request, and the time until the bucket is full again as a Go duration
//! (`6m0s`, `1s`, `20ms`, written by [`sluice_http::encode_go_duration`]). A refused
//! request is not debited, so its headers show the buckets as they stand.
//!
//! A refusal is a 429 with OpenAI's body (`"code": "rate_limit_exceeded"`, `"type"`:
//! `"requests"` or `"tokens"`, for the bucket with the longer wait) and `retry-after-ms`
//! (exact, fractions of a millisecond allowed) and `retry-after` (whole seconds, rounded
//! up): the wait until every bucket has room for this request, if nothing else arrives. A
//! request needing more tokens than the whole TPM capacity is a 429 "Request too large"
//! without retry headers, since no wait helps.
//!
//! # Modes and faults
//!
//! - [`FakeUpstreamConfig::insufficient_quota`] (or [`FakeUpstream::set_insufficient_quota`]):
//!   every charged endpoint answers 429 `insufficient_quota` (type and code), with the rate
//!   limit headers but no retry headers and no debit: a billing problem, not a rate limit.
//! - [`FakeUpstream::set_limits`] and [`FakeUpstream::set_latency`] take effect on the next
//!   request. New limits keep the units in use (see [`FakeUpstream::set_limits`]).
//! - A [`Fault`] answers a request before routing and quota (nothing is charged):
//!   [`FakeUpstream::fail_next`] queues one for each of the next `n` requests,
//!   [`FakeUpstream::set_outage`] applies one to every request until cleared. Queued faults
//!   go first.
//!
//! Latency ([`FakeUpstreamConfig::latency`]) delays 200 answers only: refusals, errors and
//! faults answer at once, as a gateway in front of a busy model does.
//!
//! # Idempotency keys
//!
//! A request with an `Idempotency-Key` header whose key already got a 2xx answer gets that
//! answer again (status, headers and body, at once) instead of being processed: it is not
//! charged to the quota, not counted in [`FakeStats::ok`], and counted in
//! [`FakeStats::replayed`]. Only 2xx answers that are not streamed are stored, since a
//! refused or failed request was not processed; injected faults still come first. The store
//! keeps the last [`IDEMPOTENCY_CAPACITY`] keys, and [`FakeUpstream::idempotency_keys`] says
//! how often each was processed and replayed, so a test can assert that every item was
//! processed once.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use sluice_testkit::upstream::{FakeUpstream, FakeUpstreamConfig, chat_request};
//! use sluice_testkit::clock_at;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let config = FakeUpstreamConfig { rpm: 2, ..FakeUpstreamConfig::default() };
//! let upstream = FakeUpstream::new(config, Arc::new(clock_at(100)));
//! for _ in 0..2 {
//!     let response = upstream.handle(chat_request("Hi", Some(5))).await.unwrap();
//!     assert_eq!(response.status(), 200);
//! }
//! let refused = upstream.handle(chat_request("Hi", Some(5))).await.unwrap();
//! assert_eq!(refused.status(), 429);
//! assert_eq!(refused.headers()["x-ratelimit-remaining-requests"], "0");
//! assert_eq!(refused.headers()["retry-after-ms"], "30000"); // one request per 30 s
//! assert_eq!(upstream.stats().rate_limited, 1);
//! # }
//! ```

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use sluice_core::{Clock, Decision, Nanos};
use sluice_http::{Dimension, UpstreamSignals, encode_go_duration};

mod idempotency;
mod openai;
mod quota;
mod server;
mod stream;

pub use idempotency::{IDEMPOTENCY_CAPACITY, KeyUse};
pub use openai::{DEFAULT_MAX_TOKENS, FAKE_MODEL, prompt_tokens};
pub use server::FakeServer;
pub use stream::{FakeBody, StreamConfig, StreamStats};

use idempotency::IdempotencyStore;
use openai::{Chat, completion_body, error_body, models_body, parse_chat};
use quota::Bucket;

/// A minute: the period of the RPM and TPM buckets.
const MINUTE: Duration = Duration::from_secs(60);
/// A day: the period of the daily request budget.
const DAY: Duration = Duration::from_secs(86_400);
/// How long a [`Fault::Timeout`] keeps a request waiting before giving up on it.
pub const TIMEOUT_AFTER: Duration = Duration::from_secs(86_400);
/// How many entries [`FakeUpstream::log`] keeps: the most recent ones.
pub const LOG_CAPACITY: usize = 100_000;

/// The boxed error of a request body.
type BoxError = Box<dyn StdError + Send + Sync>;

/// How a [`FakeUpstream`] starts.
///
/// ```
/// use std::time::Duration;
/// use sluice_testkit::upstream::FakeUpstreamConfig;
///
/// let config = FakeUpstreamConfig {
///     rpm: 60,
///     latency: Duration::from_millis(200),
///     ..FakeUpstreamConfig::default()
/// };
/// assert_eq!(config.tpm, 100_000);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeUpstreamConfig {
    /// Requests per minute: the requests bucket's capacity and refill rate. 0: no limit,
    /// and no `x-ratelimit-*-requests` headers.
    pub rpm: u64,
    /// Tokens per minute: the tokens bucket's capacity and refill rate. 0: no limit, and no
    /// `x-ratelimit-*-tokens` headers.
    pub tpm: u64,
    /// The most completion tokens an answer has: each completion has
    /// `min(max_tokens, completion_tokens)`.
    pub completion_tokens: u64,
    /// How long a 200 answer takes (a [`tokio::time::sleep`] after the quota is charged).
    pub latency: Duration,
    /// Requests per day, a third bucket refilling over 24 hours (OpenAI's RPD); `None`: no
    /// daily budget. It sends no headers; a refusal names "requests per day (RPD)".
    pub daily_requests: Option<u64>,
    /// Whether every charged endpoint answers 429 `insufficient_quota`.
    pub insufficient_quota: bool,
    /// Whether answers carry the `x-ratelimit-*` headers. Off, the upstream is one of the
    /// many APIs that say nothing about their quota until they answer 429 (with
    /// `Retry-After`).
    pub quota_headers: bool,
    /// How a streamed answer (`"stream": true`) sends its events over HTTP (see
    /// [`StreamConfig`]).
    pub stream: StreamConfig,
}

impl Default for FakeUpstreamConfig {
    /// 600 requests and 100 000 tokens per minute, completions of at most 100 tokens, no
    /// latency, no daily budget.
    fn default() -> Self {
        Self {
            rpm: 600,
            tpm: 100_000,
            completion_tokens: 100,
            latency: Duration::ZERO,
            daily_requests: None,
            insufficient_quota: false,
            quota_headers: true,
            stream: StreamConfig::default(),
        }
    }
}

/// A failure to inject, as [`FakeUpstream::fail_next`] and [`FakeUpstream::set_outage`]
/// take it. A faulty request is not routed and not charged.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Answer `status` (a status that is not a valid code becomes 500) with an OpenAI
    /// `server_error` body, and `retry-after-ms` and `retry-after` when `retry_after` is
    /// set. No rate limit headers.
    ServerError {
        /// The status code, e.g. 500, 502, 503.
        status: u16,
        /// The wait to announce in the retry headers.
        retry_after: Option<Duration>,
    },
    /// Never answer: the request waits [`TIMEOUT_AFTER`] (a day, on tokio's timer) so the
    /// client's own timeout fires first; after that it ends with
    /// [`FakeUpstreamError::TimedOut`] in process, or the connection is closed over HTTP.
    Timeout,
    /// Drop the connection without an answer: [`FakeUpstreamError::ConnectionReset`] in
    /// process, a TCP reset (RST) over HTTP.
    ConnectionReset,
}

impl Fault {
    /// A server error without retry headers.
    pub fn server_error(status: u16) -> Self {
        Self::ServerError {
            status,
            retry_after: None,
        }
    }
}

/// Why the in-process service gave no response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FakeUpstreamError {
    /// An injected [`Fault::ConnectionReset`].
    #[error("connection reset by the fake upstream (injected fault)")]
    ConnectionReset,
    /// An injected [`Fault::Timeout`] that outlived [`TIMEOUT_AFTER`] without the client
    /// giving up.
    #[error("the fake upstream never answered (injected timeout)")]
    TimedOut,
    /// Reading the request body failed.
    #[error("reading the request body failed: {0}")]
    Body(#[source] BoxError),
}

/// Counters of everything a [`FakeUpstream`] answered, for assertions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FakeStats {
    /// Every request received, whatever became of it.
    pub requests: u64,
    /// 200 answers.
    pub ok: u64,
    /// 429 `rate_limit_exceeded` answers (per-minute buckets, daily budget, too large).
    pub rate_limited: u64,
    /// 429 `insufficient_quota` answers.
    pub insufficient_quota: u64,
    /// Injected [`Fault::ServerError`] answers.
    pub server_errors: u64,
    /// Injected [`Fault::Timeout`]s.
    pub timeouts: u64,
    /// Injected [`Fault::ConnectionReset`]s.
    pub resets: u64,
    /// 400 and 404 answers.
    pub client_errors: u64,
    /// Tokens charged by admitted requests (prompt plus completion).
    pub tokens: u64,
    /// Requests answered from the idempotency store: their `Idempotency-Key` had a 2xx
    /// answer already (not charged, not in `ok`).
    pub replayed: u64,
}

/// One request in [`FakeUpstream::log`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Served {
    /// When it arrived (and was charged), on the upstream's clock.
    pub at: Nanos,
    /// Its status; 0 for an injected timeout or connection reset (no answer).
    pub status: u16,
    /// The tokens it was charged: prompt plus completion when admitted, else 0.
    pub tokens: u64,
    /// Its number, from 1 in order of arrival; also in the `x-request-id` header
    /// (`req_<n>`) and a completion's id (`chatcmpl-<n>`).
    pub request_id: u64,
}

/// A fake OpenAI-style upstream with RPM and TPM quotas. Clones share one upstream, so a
/// test keeps a handle to change limits and inject faults while the client owns another.
/// See the [module documentation](self) for what it answers.
#[derive(Clone)]
pub struct FakeUpstream {
    inner: Arc<Inner>,
}

struct Inner {
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

struct State {
    config: FakeUpstreamConfig,
    requests: Bucket,
    tokens: Bucket,
    daily: Bucket,
    queued: VecDeque<Fault>,
    outage: Option<Fault>,
    next_id: u64,
    stats: FakeStats,
    log: VecDeque<Served>,
    idempotency: IdempotencyStore,
    streams: StreamStats,
}

/// What to do once the state has decided, outside its lock.
enum Action {
    Answer(Response<Bytes>),
    Delay(Duration, Response<Bytes>),
    Timeout,
    Reset,
    Stream(stream::Sse),
}

impl fmt::Debug for FakeUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("FakeUpstream")
            .field("config", &state.config)
            .field("stats", &state.stats)
            .field("outage", &state.outage)
            .field("queued_faults", &state.queued.len())
            .finish_non_exhaustive()
    }
}

impl FakeUpstream {
    /// An upstream with `config`, reading time from `clock`, with full buckets.
    pub fn new(config: FakeUpstreamConfig, clock: Arc<dyn Clock>) -> Self {
        let state = State {
            requests: Bucket::new(config.rpm, MINUTE),
            tokens: Bucket::new(config.tpm, MINUTE),
            daily: Bucket::new(config.daily_requests.unwrap_or(0), DAY),
            config,
            queued: VecDeque::new(),
            outage: None,
            next_id: 1,
            stats: FakeStats::default(),
            log: VecDeque::new(),
            idempotency: IdempotencyStore::default(),
            streams: StreamStats::default(),
        };
        Self {
            inner: Arc::new(Inner {
                clock,
                state: Mutex::new(state),
            }),
        }
    }

    /// The configuration as it stands now (after any `set_*` calls).
    pub fn config(&self) -> FakeUpstreamConfig {
        self.inner.lock().config.clone()
    }

    /// Changes the limits from the next request on (0: no limit). The buckets keep the
    /// units in use: with 100 of 600 requests used, a new limit of 300 leaves 200; units in
    /// use beyond the new capacity are forgotten (the bucket is then empty and refills at
    /// the new rate). Turning a limit off and on again starts it full.
    pub fn set_limits(&self, rpm: u64, tpm: u64) {
        let now = self.inner.clock.now();
        let mut state = self.inner.lock();
        state.config.rpm = rpm;
        state.config.tpm = tpm;
        state.requests.set_limit(rpm, MINUTE, now);
        state.tokens.set_limit(tpm, MINUTE, now);
    }

    /// Changes the daily request budget from the next request on, keeping the units in
    /// use as [`set_limits`](Self::set_limits) does.
    pub fn set_daily_requests(&self, daily: Option<u64>) {
        let now = self.inner.clock.now();
        let mut state = self.inner.lock();
        state.config.daily_requests = daily;
        state.daily.set_limit(daily.unwrap_or(0), DAY, now);
    }

    /// Changes how long 200 answers take, from the next request on.
    pub fn set_latency(&self, latency: Duration) {
        self.inner.lock().config.latency = latency;
    }

    /// Changes the completion size cap, from the next request on.
    pub fn set_completion_tokens(&self, completion_tokens: u64) {
        self.inner.lock().config.completion_tokens = completion_tokens;
    }

    /// Turns the `insufficient_quota` mode on or off.
    pub fn set_insufficient_quota(&self, on: bool) {
        self.inner.lock().config.insufficient_quota = on;
    }

    /// Makes each of the next `n` requests fail with `fault`, after the faults already
    /// queued.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        let mut state = self.inner.lock();
        state.queued.extend(std::iter::repeat_n(fault, n));
    }

    /// Makes every request fail with `fault` until `set_outage(None)` (once the queued
    /// faults of [`fail_next`](Self::fail_next) are used up).
    pub fn set_outage(&self, fault: Option<Fault>) {
        self.inner.lock().outage = fault;
    }

    /// Clears the queued faults and the outage.
    pub fn clear_faults(&self) {
        let mut state = self.inner.lock();
        state.queued.clear();
        state.outage = None;
    }

    /// The counters so far.
    pub fn stats(&self) -> FakeStats {
        self.inner.lock().stats
    }

    /// Every `Idempotency-Key` the store remembers (see the [module docs](self)), with how
    /// many of its requests were processed and how many replayed. Kept by
    /// [`reset_stats`](Self::reset_stats), like the buckets.
    pub fn idempotency_keys(&self) -> std::collections::HashMap<String, KeyUse> {
        self.inner.lock().idempotency.usage()
    }

    /// Every request so far in order of arrival, at most the last [`LOG_CAPACITY`].
    pub fn log(&self) -> Vec<Served> {
        self.inner.lock().log.iter().copied().collect()
    }

    /// Zeroes the counters (and the [`stream_stats`](Self::stream_stats), but for the
    /// streams still open) and empties the log; the buckets, faults and request numbers go
    /// on.
    pub fn reset_stats(&self) {
        let mut state = self.inner.lock();
        state.stats = FakeStats::default();
        state.log.clear();
        let open = state.streams.open;
        state.streams = StreamStats {
            open,
            max_open: open,
            ..StreamStats::default()
        };
    }

    /// What a chat completion request with `body` is charged with the current
    /// configuration: [`prompt_tokens`] plus its completion tokens.
    pub fn request_tokens(&self, body: &Value) -> u64 {
        let cap = self.inner.lock().config.completion_tokens;
        let max_tokens = ["max_completion_tokens", "max_tokens"]
            .iter()
            .find_map(|param| body.get(param).and_then(Value::as_u64))
            .unwrap_or(DEFAULT_MAX_TOKENS);
        prompt_tokens(body).saturating_add(max_tokens.min(cap))
    }

    /// Answers one request, as the [`Service`](tower_service::Service) impl does but with
    /// the body as [`Bytes`]. Reads the body whole, decides at the clock's current instant,
    /// then waits the latency (200 answers only) on tokio's timer.
    ///
    /// # Errors
    ///
    /// [`FakeUpstreamError::ConnectionReset`] and [`FakeUpstreamError::TimedOut`] for
    /// injected faults, [`FakeUpstreamError::Body`] when the body cannot be read.
    pub async fn handle<B>(&self, request: Request<B>) -> Result<Response<Bytes>, FakeUpstreamError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        match self.decide(request).await? {
            Action::Answer(response) => Ok(response),
            Action::Delay(latency, response) => {
                tokio::time::sleep(latency).await;
                Ok(response)
            }
            Action::Stream(sse) => {
                let mut open = stream::OpenStream::new(self);
                let response = sse.collect().await;
                open.complete();
                Ok(response)
            }
            Action::Timeout => {
                tokio::time::sleep(TIMEOUT_AFTER).await;
                Err(FakeUpstreamError::TimedOut)
            }
            Action::Reset => Err(FakeUpstreamError::ConnectionReset),
        }
    }

    /// Reads `request`'s body whole and decides its answer at the clock's current instant
    /// (the part [`handle`](Self::handle) and `respond` share).
    async fn decide<B>(&self, request: Request<B>) -> Result<Action, FakeUpstreamError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = request.into_parts();
        let bytes = body
            .collect()
            .await
            .map_err(|err| FakeUpstreamError::Body(err.into()))?
            .to_bytes();
        let now = self.inner.clock.now();
        Ok(self.inner.lock().answer_request(&parts, &bytes, now))
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Which bucket refused a request.
#[derive(Clone, Copy)]
enum Bucketed {
    Requests,
    Tokens,
    Daily,
}

impl State {
    /// Decides one request at `now` and records it, answering a repeated `Idempotency-Key`
    /// from the store (see the [module docs](self)).
    fn answer_request(&mut self, parts: &http::request::Parts, body: &[u8], now: Nanos) -> Action {
        let key = parts
            .headers
            .get("idempotency-key")
            .and_then(|value| value.to_str().ok());
        let Some(key) = key else {
            return self.answer(&parts.method, parts.uri.path(), body, now);
        };
        if self.queued.is_empty()
            && self.outage.is_none()
            && let Some(response) = self.idempotency.replay(key)
        {
            let id = self.next_id;
            self.next_id = self.next_id.saturating_add(1);
            self.stats.requests += 1;
            self.stats.replayed += 1;
            if self.log.len() >= LOG_CAPACITY {
                self.log.pop_front();
            }
            self.log.push_back(Served {
                at: now,
                status: response.status().as_u16(),
                tokens: 0,
                request_id: id,
            });
            return Action::Answer(response);
        }
        let action = self.answer(&parts.method, parts.uri.path(), body, now);
        if let Action::Answer(response) | Action::Delay(_, response) = &action {
            self.idempotency.record(key, response);
        }
        action
    }

    /// Decides one request at `now` and records it.
    fn answer(&mut self, method: &Method, path: &str, body: &[u8], now: Nanos) -> Action {
        let id = self.next_id;
        self.next_id = self.next_id.saturating_add(1);
        self.stats.requests += 1;
        let fault = self.queued.pop_front().or_else(|| self.outage.clone());
        let (action, tokens) = match fault {
            Some(fault) => (self.fault(fault, id), 0),
            None => self.route(method, path, body, id, now),
        };
        let status = match &action {
            Action::Answer(response) | Action::Delay(_, response) => response.status().as_u16(),
            Action::Stream(sse) => sse.status(),
            Action::Timeout | Action::Reset => 0,
        };
        if self.log.len() >= LOG_CAPACITY {
            self.log.pop_front();
        }
        self.log.push_back(Served {
            at: now,
            status,
            tokens,
            request_id: id,
        });
        action
    }

    fn fault(&mut self, fault: Fault, id: u64) -> Action {
        match fault {
            Fault::ServerError {
                status,
                retry_after,
            } => {
                self.stats.server_errors += 1;
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let message = format!(
                    "The server had an error while processing your request ({status}). Sorry about that!"
                );
                let mut response = json_response(
                    status,
                    &error_body(&message, "server_error", None, None),
                    id,
                );
                let signals = UpstreamSignals {
                    retry_after,
                    ..UpstreamSignals::default()
                };
                signals.write_openai(response.headers_mut());
                Action::Answer(response)
            }
            Fault::Timeout => {
                self.stats.timeouts += 1;
                Action::Timeout
            }
            Fault::ConnectionReset => {
                self.stats.resets += 1;
                Action::Reset
            }
        }
    }

    /// Routes a request that has no fault; returns the action and the tokens charged.
    fn route(
        &mut self,
        method: &Method,
        path: &str,
        body: &[u8],
        id: u64,
        now: Nanos,
    ) -> (Action, u64) {
        match (method, path) {
            (&Method::POST, "/v1/chat/completions") => match parse_chat(body) {
                Ok(chat) => stream::maybe_stream(
                    self.charge(Some(&chat), id, now),
                    body,
                    self.config.stream,
                ),
                Err(invalid) => {
                    self.stats.client_errors += 1;
                    let body = error_body(
                        &invalid.message,
                        "invalid_request_error",
                        invalid.param,
                        None,
                    );
                    (
                        Action::Answer(json_response(StatusCode::BAD_REQUEST, &body, id)),
                        0,
                    )
                }
            },
            (&Method::GET, "/v1/models") => self.charge(None, id, now),
            _ => {
                self.stats.client_errors += 1;
                let message = format!("Invalid URL ({method} {path})");
                let body = error_body(&message, "invalid_request_error", None, None);
                (
                    Action::Answer(json_response(StatusCode::NOT_FOUND, &body, id)),
                    0,
                )
            }
        }
    }

    /// Charges a chat completion (`Some`) or a model listing (`None`) to the quota.
    fn charge(&mut self, chat: Option<&Chat>, id: u64, now: Nanos) -> (Action, u64) {
        let model = chat.map_or(FAKE_MODEL, |c| c.model.as_str());
        let (prompt, completion) = chat.map_or((0, 0), |c| {
            (
                c.prompt_tokens,
                c.max_tokens.min(self.config.completion_tokens),
            )
        });
        let cost = prompt.saturating_add(completion);

        if self.config.insufficient_quota {
            self.stats.insufficient_quota += 1;
            let message = "You exceeded your current quota, please check your plan and billing \
                           details. For more information on this error, read the docs: \
                           https://platform.openai.com/docs/guides/error-codes/api-errors.";
            let body = error_body(
                message,
                "insufficient_quota",
                None,
                Some("insufficient_quota"),
            );
            let response = with_quota_headers(
                self.config.quota_headers,
                json_response(StatusCode::TOO_MANY_REQUESTS, &body, id),
                self.requests.decide(0, now),
                self.tokens.decide(0, now),
                None,
            );
            return (Action::Answer(response), 0);
        }

        let decisions = [
            (Bucketed::Requests, self.requests.decide(1, now), 1),
            (Bucketed::Tokens, self.tokens.decide(cost, now), cost),
            (Bucketed::Daily, self.daily.decide(1, now), 1),
        ];
        if let Some(&(_, Some(decision), _)) = decisions
            .iter()
            .find(|(_, d, _)| d.is_some_and(|d| d.cost_exceeds_capacity))
        {
            self.stats.rate_limited += 1;
            let message = format!(
                "Request too large for {model} in organization org-fake on tokens per min \
                 (TPM): Limit {}, Requested {cost}. The input or output tokens must be \
                 reduced in order to run successfully. Visit \
                 https://platform.openai.com/account/rate-limits to learn more.",
                decision.limit
            );
            let body = error_body(&message, "tokens", None, Some("rate_limit_exceeded"));
            let response = with_quota_headers(
                self.config.quota_headers,
                json_response(StatusCode::TOO_MANY_REQUESTS, &body, id),
                self.requests.decide(0, now),
                self.tokens.decide(0, now),
                None,
            );
            return (Action::Answer(response), 0);
        }

        // The refusing bucket with the longest wait (the first of equals).
        let mut refusal: Option<(Bucketed, Decision, u64)> = None;
        for (bucket, decision, bucket_cost) in decisions {
            let Some(decision) = decision.filter(|d| !d.allowed) else {
                continue;
            };
            if refusal.is_none_or(|(_, longest, _)| decision.retry_after > longest.retry_after) {
                refusal = Some((bucket, decision, bucket_cost));
            }
        }
        if let Some((bucket, decision, bucket_cost)) = refusal {
            self.stats.rate_limited += 1;
            let wait = decision.retry_after.unwrap_or(Duration::ZERO);
            let (kind, what) = match bucket {
                Bucketed::Requests => ("requests", "requests per min (RPM)"),
                Bucketed::Tokens => ("tokens", "tokens per min (TPM)"),
                Bucketed::Daily => ("requests", "requests per day (RPD)"),
            };
            let message = format!(
                "Rate limit reached for {model} in organization org-fake on {what}: Limit {}, \
                 Used {}, Requested {bucket_cost}. Please try again in {}. Visit \
                 https://platform.openai.com/account/rate-limits to learn more.",
                decision.limit,
                decision.limit.saturating_sub(decision.remaining),
                encode_go_duration(wait),
            );
            let body = error_body(&message, kind, None, Some("rate_limit_exceeded"));
            let response = with_quota_headers(
                self.config.quota_headers,
                json_response(StatusCode::TOO_MANY_REQUESTS, &body, id),
                self.requests.decide(0, now),
                self.tokens.decide(0, now),
                Some(wait),
            );
            return (Action::Answer(response), 0);
        }

        self.requests.apply(1, now);
        self.tokens.apply(cost, now);
        self.daily.apply(1, now);
        self.stats.ok += 1;
        self.stats.tokens = self.stats.tokens.saturating_add(cost);
        let body = match chat {
            Some(_) => completion_body(id, now.as_u64() / 1_000_000_000, model, prompt, completion),
            None => models_body(),
        };
        let response = with_quota_headers(
            self.config.quota_headers,
            json_response(StatusCode::OK, &body, id),
            decisions[0].1,
            decisions[1].1,
            None,
        );
        let action = if self.config.latency.is_zero() {
            Action::Answer(response)
        } else {
            Action::Delay(self.config.latency, response)
        };
        (action, cost)
    }
}

/// Adds the `x-ratelimit-*` headers of the two per-minute buckets (when `quota_headers`)
/// and, for a refusal, `retry-after-ms` and `retry-after`.
fn with_quota_headers(
    quota_headers: bool,
    mut response: Response<Bytes>,
    requests: Option<Decision>,
    tokens: Option<Decision>,
    retry_after: Option<Duration>,
) -> Response<Bytes> {
    let (requests, tokens) = if quota_headers {
        (requests, tokens)
    } else {
        (None, None)
    };
    let signals = UpstreamSignals {
        requests: dimension(requests),
        tokens: dimension(tokens),
        retry_after,
        ..UpstreamSignals::default()
    };
    signals.write_openai(response.headers_mut());
    response
}

fn dimension(decision: Option<Decision>) -> Dimension {
    decision.map_or_else(Dimension::default, |d| Dimension {
        limit: Some(d.limit),
        remaining: Some(d.remaining),
        reset_after: Some(d.reset_after),
        ..Dimension::default()
    })
}

/// A JSON answer with `x-request-id: req_<id>`.
fn json_response(status: StatusCode, body: &Value, id: u64) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(value) = HeaderValue::try_from(format!("req_{id}")) {
        headers.insert("x-request-id", value);
    }
    response
}

/// The body of a chat completion request: `model` [`FAKE_MODEL`], one user message with
/// `prompt`, and `max_tokens` when given.
pub fn chat_body(prompt: &str, max_tokens: Option<u64>) -> Value {
    let mut body = json!({
        "model": FAKE_MODEL,
        "messages": [{ "role": "user", "content": prompt }],
    });
    if let (Some(max_tokens), Some(object)) = (max_tokens, body.as_object_mut()) {
        object.insert("max_tokens".to_owned(), max_tokens.into());
    }
    body
}

/// `POST /v1/chat/completions` with [`chat_body`]`(prompt, max_tokens)`.
pub fn chat_request(prompt: &str, max_tokens: Option<u64>) -> Request<Full<Bytes>> {
    json_request(
        Method::POST,
        "/v1/chat/completions",
        &chat_body(prompt, max_tokens),
    )
}

/// A request with a JSON body (`content-type: application/json`).
pub fn json_request(method: Method, path: &str, body: &Value) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(Bytes::from(body.to_string())));
    *request.method_mut() = method;
    if let Ok(uri) = path.parse() {
        *request.uri_mut() = uri;
    }
    request
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    request
}

/// The future of [`FakeUpstream`]'s [`Service`](tower_service::Service) impl.
pub type FakeUpstreamFuture =
    Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, FakeUpstreamError>> + Send>>;

/// Always ready; each call answers as [`FakeUpstream::handle`], with the body as a
/// [`Full`]`<Bytes>` (collect it with [`http_body_util::BodyExt::collect`]).
impl<B> tower_service::Service<Request<B>> for FakeUpstream
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Full<Bytes>>;
    type Error = FakeUpstreamError;
    type Future = FakeUpstreamFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let upstream = self.clone();
        Box::pin(async move {
            let response = upstream.handle(request).await?;
            Ok(response.map(Full::new))
        })
    }
}
