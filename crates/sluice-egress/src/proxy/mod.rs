//! A reverse proxy that sends every request through an [`Egress`](crate::Egress) client
//! (feature `proxy`; `proxy-tls` adds https upstreams): programs in any language get
//! sluice's pacing, quota monitoring, retries and circuit breaker by pointing their base
//! URL at it. [`serve`] runs it on a listener until a shutdown future resolves; the
//! `sluice proxy` command is a thin shell around it.
//!
//! ```text
//!  client ──▶ read the body once (≤ max_request_body, else 413) ──▶ Job: method,
//!             estimated tokens, x-sluice-priority / -tenant / -max-wait (then removed)
//!         ──▶ coalescing on, and identical to a request in flight ──▶ wait for its answer
//!         ──▶ attempt: circuit, quota, pace, concurrency slot
//!               refused before sending ──▶ 503 (circuit) / 429 (quota, overloaded, would
//!                                          wait), Retry-After, application/problem+json
//!         ──▶ forward: upstream base URL + path and query, hop-by-hop headers removed,
//!             Host rewritten, everything else (Authorization included) as sent
//!         ──▶ answer  not a success, and retrying helps ──▶ read it, learn, wait, again
//!                     streamed success ──▶ relayed frame by frame as it arrives; the
//!                                          SSE `usage` settles the tokens at the end
//!                     otherwise ──▶ read whole, learn (usage, wording), relayed
//! ```
//!
//! # What reaches the client
//!
//! The upstream's answer, status, headers (minus hop-by-hop ones) and body, whenever
//! there is one: a 400 is the client's to read, and so is a 429 or 5xx after the retries
//! ran out. A 429 the retries can still absorb never reaches the client; it waits
//! instead (up to its `x-sluice-max-wait`, 10 minutes unless set). Every relayed answer
//! carries `x-sluice-attempts`, the number of attempts it took. The proxy answers by itself,
//! with an [RFC 9457](https://www.rfc-editor.org/rfc/rfc9457) `application/problem+json`
//! body, when:
//!
//! | Status | When | `type` (under `https://sluice.dev/problems/`) |
//! |---|---|---|
//! | 503 + `Retry-After` | the circuit is open: the upstream failed too often | `circuit-open` |
//! | 429 + `Retry-After` | the quota is paused or exhausted for this priority beyond its wait | `quota-paused` |
//! | 429 + `Retry-After` | pacing would make it wait beyond its `x-sluice-max-wait` | `would-wait` |
//! | 429 + `Retry-After: 1` | too many requests are waiting already (`max_waiting`) | `overloaded` |
//! | 503 | the shared pacing store (Redis) failed | `store-unavailable` |
//! | 400 | an `x-sluice-*` header does not parse, or the body cannot be read | `bad-request` |
//! | 408 | the request body did not arrive within 60 s | `bad-request` |
//! | 413 | the request body is larger than [`ProxyConfig::max_request_body`] | `request-too-large` |
//! | 502 / 504 | no attempt got an answer (connection refused or reset / timed out) | `upstream-unreachable` / `upstream-timeout` |
//! | 502 | the upstream's answer is larger than [`ProxyConfig::max_response_body`] | `response-too-large` |
//!
//! # Streams
//!
//! A successful answer streams when it is `text/event-stream`, or has no `Content-Length`
//! and is not JSON (JSON is only useful whole, and its `usage` is needed), or is longer
//! than [`ProxyConfig::max_response_body`]: it is reported to the egress client as it
//! starts, relayed frame by frame, and its server-sent events are scanned for the last
//! `usage` object (OpenAI's final chunk with `stream_options.include_usage`, Anthropic's
//! `message_start` and `message_delta`), which settles the call's tokens when the stream
//! ends; without one the estimate stays charged. The proxy asks the upstream for
//! uncompressed answers (`Accept-Encoding: identity`) so that it can read their usage.
//! A stream keeps its concurrency slot until it ends (completes, breaks off, or the client
//! goes away), and the adaptive limit learns its whole duration then; it ends early, its
//! tokens left at the estimate, when the client goes away.
//!
//! # Coalescing
//!
//! With [`ProxyConfig::coalesce`] (off by default; `sluice proxy --coalesce`), identical
//! requests in flight at the same moment share one upstream call: the first makes it,
//! with the usual pacing and retries, and the others wait for its answer and get a copy,
//! spending no quota of their own. Identical means the same method, path, query, body
//! bytes and headers as they go upstream, credentials included (`Authorization`,
//! `x-api-key`, ...: two API keys never share an answer), hop-by-hop and `x-sluice-*`
//! headers aside, compared by a SHA-256 digest. Only `GET`, `HEAD` and `POST`s with a JSON
//! body qualify, and never a streamed request (`"stream": true` in the body, or
//! `Accept: text/event-stream`). Such an answer is read whole, since it goes to several
//! clients. It is not a cache: a request arriving after the answer makes a new call.
//! Turn it on when clients send the same deterministic request at once (replicas of a
//! job, retries of an impatient client); it is wrong for sampled completions that are
//! meant to differ per call.
//!
//! # Its own endpoints
//!
//! Under the reserved prefix [`LOCAL_PREFIX`] (`/_sluice/`), never forwarded:
//! `GET /_sluice/healthz` (200, JSON: `status`, `upstream`, `circuit`) and
//! `GET /_sluice/metrics` (Prometheus text, see [`metrics`]). With
//! [`ProxyConfig::root_endpoints`] (the default) `GET /healthz` and `GET /metrics` answer
//! the same; turn it off when the upstream has paths of those names that clients must
//! reach. Every other method or path is forwarded.
//!
//! # Not supported
//!
//! Protocol upgrades (WebSocket, `CONNECT`): the `Upgrade` header is hop-by-hop and is
//! removed. Request bodies are read whole before anything is sent (a retry sends them
//! again), so a request cannot stream its body.

mod body;
mod coalesce;
mod config;
mod forward;
mod local;
pub mod metrics;
mod problem;
mod server;
mod sse;
mod upstream;

pub use config::{
    DEFAULT_MAX_REQUEST_BODY, DEFAULT_MAX_RESPONSE_BODY, ProxyConfig, ProxyConfigError, UpstreamUrl,
};
pub use server::serve;
pub use sse::UsageScanner;

/// The path prefix of the proxy's own endpoints; requests under it are never forwarded.
pub const LOCAL_PREFIX: &str = "/_sluice/";

/// The header on every relayed answer that says how many attempts it took.
pub const ATTEMPTS_HEADER: http::HeaderName = http::HeaderName::from_static("x-sluice-attempts");

/// The problem type URIs of the proxy's own answers end with their name after this.
pub const PROBLEM_BASE: &str = "https://sluice.dev/problems/";
