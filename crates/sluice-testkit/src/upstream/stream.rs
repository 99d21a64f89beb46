//! Streamed chat completions: `"stream": true` answered as OpenAI does, with server-sent
//! events.
//!
//! A chat completion request whose body has `"stream": true` is charged exactly as a plain
//! one, and its 200 answer carries the same headers (rate limits, `x-request-id`), but its
//! body is `text/event-stream`:
//!
//! ```text
//! data: {"id":"chatcmpl-7","object":"chat.completion.chunk",...,"choices":[{"index":0,"delta":{"role":"assistant","content":"tok tok "},"finish_reason":null}]}
//!
//! data: {..."choices":[{"index":0,"delta":{"content":"tok tok"},"finish_reason":null}]}
//!
//! data: {..."choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}
//!
//! data: {..."choices":[],"usage":{"prompt_tokens":5,"completion_tokens":4,"total_tokens":9}}
//!
//! data: [DONE]
//! ```
//!
//! [`StreamConfig::chunks`] content chunks (the completion's words shared out among them),
//! then the chunk that finishes, then, when the request's `stream_options.include_usage` is
//! true, a chunk with no choices and the `usage` (every other chunk then has
//! `"usage": null`, as OpenAI sends it), then `data: [DONE]`. Over HTTP
//! ([`FakeUpstream::serve`]) the first event goes right after the head (which waits the
//! configured latency, as a 200 does) and each next one [`StreamConfig::interval`] later,
//! each in its own chunk of the chunked body, so a client sees them arrive one by one. In
//! process ([`FakeUpstream::handle`] and the `Service` impl) the whole stream is the body,
//! after the same total wait.
//!
//! [`FakeUpstream::stream_stats`] counts the streams: begun, open now, the most open at one
//! moment, and completed. A stream is open from the moment its request is decided (before
//! the latency) until its body is dropped, whether every event was sent or the client went
//! away first: what a client that limits its streams in flight must keep within its limit.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use serde_json::{Value, json};
use tokio::time::Sleep;

use super::{Action, BoxError, FakeUpstream, FakeUpstreamError, TIMEOUT_AFTER};

/// The streams a [`FakeUpstream`] has answered with, from
/// [`stream_stats`](FakeUpstream::stream_stats).
///
/// ```
/// use sluice_testkit::upstream::StreamStats;
///
/// let stats = StreamStats::default();
/// assert_eq!((stats.started, stats.open, stats.max_open, stats.completed), (0, 0, 0, 0));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Streamed answers begun, each counted when its request is decided.
    pub started: u64,
    /// Streams open now: begun, and their body not yet dropped.
    pub open: u64,
    /// The most streams open at one moment, since the upstream was made or its stats were
    /// last reset.
    pub max_open: u64,
    /// Streams whose every event was sent (over HTTP: handed to the connection).
    pub completed: u64,
}

/// Counts one stream open in the upstream's [`StreamStats`] while it lives.
pub(super) struct OpenStream {
    upstream: FakeUpstream,
    completed: bool,
}

impl OpenStream {
    /// Counts a stream begun, and open until this is dropped.
    pub(super) fn new(upstream: &FakeUpstream) -> Self {
        let mut state = upstream.inner.lock();
        let streams = &mut state.streams;
        streams.started += 1;
        streams.open += 1;
        streams.max_open = streams.max_open.max(streams.open);
        drop(state);
        Self {
            upstream: upstream.clone(),
            completed: false,
        }
    }

    /// Counts the stream completed (once, however often it is called).
    pub(super) fn complete(&mut self) {
        if !self.completed {
            self.completed = true;
            self.upstream.inner.lock().streams.completed += 1;
        }
    }
}

impl fmt::Debug for OpenStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenStream")
            .field("completed", &self.completed)
            .finish_non_exhaustive()
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let mut state = self.upstream.inner.lock();
        state.streams.open = state.streams.open.saturating_sub(1);
    }
}

/// How a streamed answer (`"stream": true`) is paced.
///
/// ```
/// use std::time::Duration;
/// use sluice_testkit::upstream::{FakeUpstreamConfig, StreamConfig};
///
/// let config = FakeUpstreamConfig {
///     stream: StreamConfig { chunks: 5, interval: Duration::from_millis(50) },
///     ..FakeUpstreamConfig::default()
/// };
/// assert_eq!(config.stream.chunks, 5);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamConfig {
    /// How many chunks carry the completion's text (at least 1 is sent).
    pub chunks: u64,
    /// The time between two events.
    pub interval: Duration,
}

impl Default for StreamConfig {
    /// 4 content chunks, 10 ms apart.
    fn default() -> Self {
        Self {
            chunks: 4,
            interval: Duration::from_millis(10),
        }
    }
}

/// A streamed answer decided by the fake: its head, the wait before it, and its events.
pub(super) struct Sse {
    latency: Duration,
    head: Response<()>,
    events: VecDeque<Bytes>,
    interval: Duration,
}

impl Sse {
    pub(super) fn status(&self) -> u16 {
        self.head.status().as_u16()
    }

    /// The whole stream as one body, after the wait its events would take.
    pub(super) async fn collect(self) -> Response<Bytes> {
        let gaps = u32::try_from(self.events.len().saturating_sub(1)).unwrap_or(u32::MAX);
        tokio::time::sleep(
            self.latency
                .saturating_add(self.interval.saturating_mul(gaps)),
        )
        .await;
        let mut text = Vec::new();
        for event in &self.events {
            text.extend_from_slice(event);
        }
        let (parts, ()) = self.head.into_parts();
        Response::from_parts(parts, Bytes::from(text))
    }
}

/// Turns a 200 chat completion into a stream when its request asked for one.
pub(super) fn maybe_stream(
    action: (Action, u64),
    request: &[u8],
    config: StreamConfig,
) -> (Action, u64) {
    let Ok(request) = serde_json::from_slice::<Value>(request) else {
        return action;
    };
    if request.get("stream").and_then(Value::as_bool) != Some(true) {
        return action;
    }
    let include_usage = request
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true);
    let (action, tokens) = action;
    let (latency, response) = match action {
        Action::Answer(response) => (Duration::ZERO, response),
        Action::Delay(latency, response) => (latency, response),
        other => return (other, tokens),
    };
    if !response.status().is_success() {
        let action = if latency.is_zero() {
            Action::Answer(response)
        } else {
            Action::Delay(latency, response)
        };
        return (action, tokens);
    }
    let (mut parts, body) = response.into_parts();
    let Ok(completion) = serde_json::from_slice::<Value>(&body) else {
        return (Action::Answer(Response::from_parts(parts, body)), tokens);
    };
    parts.headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    parts
        .headers
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    parts.headers.remove(CONTENT_LENGTH);
    let sse = Sse {
        latency,
        head: Response::from_parts(parts, ()),
        events: events(&completion, config.chunks, include_usage),
        interval: config.interval,
    };
    (Action::Stream(sse), tokens)
}

/// The events of a completion's stream, each `data: ...\n\n`.
fn events(completion: &Value, chunks: u64, include_usage: bool) -> VecDeque<Bytes> {
    let text = completion
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let chunk = |delta: Value, finish: Value| {
        let mut chunk = json!({
            "id": completion.get("id"),
            "object": "chat.completion.chunk",
            "created": completion.get("created"),
            "model": completion.get("model"),
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        });
        if include_usage && let Some(object) = chunk.as_object_mut() {
            object.insert("usage".to_owned(), Value::Null);
        }
        chunk
    };
    let mut out = VecDeque::new();
    for (i, piece) in split(text, chunks).into_iter().enumerate() {
        let delta = if i == 0 {
            json!({ "role": "assistant", "content": piece })
        } else {
            json!({ "content": piece })
        };
        out.push_back(event(&chunk(delta, Value::Null)));
    }
    out.push_back(event(&chunk(json!({}), json!("stop"))));
    if include_usage {
        let usage = json!({
            "id": completion.get("id"),
            "object": "chat.completion.chunk",
            "created": completion.get("created"),
            "model": completion.get("model"),
            "choices": [],
            "usage": completion.get("usage"),
        });
        out.push_back(event(&usage));
    }
    out.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
    out
}

fn event(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// `text` in `n` pieces (at least one) of about equal length, cut between characters.
fn split(text: &str, n: u64) -> Vec<String> {
    let n = usize::try_from(n.max(1)).unwrap_or(usize::MAX).min(1 << 16);
    let chars: Vec<char> = text.chars().collect();
    let per = chars.len().div_ceil(n).max(1);
    let mut pieces: Vec<String> = chars.chunks(per).map(|c| c.iter().collect()).collect();
    pieces.resize(n, String::new());
    pieces
}

/// The body of an answer over HTTP: whole, or server-sent events one by one.
#[derive(Debug)]
pub struct FakeBody {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Full(Option<Bytes>),
    Events {
        events: VecDeque<Bytes>,
        interval: Duration,
        /// The wait before the next event; none before the first.
        next: Option<Pin<Box<Sleep>>>,
        /// Counts the stream open until the body is dropped.
        open: OpenStream,
    },
}

impl FakeBody {
    fn full(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Full(Some(bytes).filter(|b| !b.is_empty())),
        }
    }
}

impl Body for FakeBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.get_mut().kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Events {
                events,
                interval,
                next,
                open,
            } => {
                if let Some(sleep) = next
                    && sleep.as_mut().poll(cx).is_pending()
                {
                    return Poll::Pending;
                }
                let Some(event) = events.pop_front() else {
                    open.complete();
                    return Poll::Ready(None);
                };
                if events.is_empty() {
                    open.complete();
                }
                *next = Some(Box::pin(tokio::time::sleep(*interval)));
                Poll::Ready(Some(Ok(Frame::data(event))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Events { events, .. } => events.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Events { .. } => SizeHint::default(),
        }
    }
}

impl FakeUpstream {
    /// The streams so far (see [`StreamStats`]). [`reset_stats`](Self::reset_stats) zeroes
    /// them but for the streams still open, which stay counted (and are the new
    /// `max_open`).
    pub fn stream_stats(&self) -> StreamStats {
        self.inner.lock().streams
    }

    /// Answers one request as [`handle`](Self::handle) does, but with a streamed answer's
    /// events sent one by one, [`StreamConfig::interval`] apart: what
    /// [`serve`](Self::serve) answers over HTTP.
    ///
    /// # Errors
    ///
    /// As [`handle`](Self::handle).
    pub async fn respond<B>(
        &self,
        request: Request<B>,
    ) -> Result<Response<FakeBody>, FakeUpstreamError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        match self.decide(request).await? {
            Action::Answer(response) => Ok(response.map(FakeBody::full)),
            Action::Delay(latency, response) => {
                tokio::time::sleep(latency).await;
                Ok(response.map(FakeBody::full))
            }
            Action::Stream(sse) => {
                // Open from now: a client that gives up during the latency closes it.
                let open = OpenStream::new(self);
                tokio::time::sleep(sse.latency).await;
                let body = FakeBody {
                    kind: Kind::Events {
                        events: sse.events,
                        interval: sse.interval,
                        next: None,
                        open,
                    },
                };
                Ok(sse.head.map(|()| body))
            }
            Action::Timeout => {
                tokio::time::sleep(TIMEOUT_AFTER).await;
                Err(FakeUpstreamError::TimedOut)
            }
            Action::Reset => Err(FakeUpstreamError::ConnectionReset),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::Method;
    use http_body_util::BodyExt;

    use super::*;
    use crate::upstream::{FakeUpstreamConfig, chat_body, json_request};

    #[test]
    fn splits_text_into_n_pieces() {
        assert_eq!(split("tok tok", 2), vec!["tok ", "tok"]);
        assert_eq!(split("ab", 4), vec!["a", "b", "", ""]);
        assert_eq!(split("", 0), vec![""]);
    }

    #[test]
    fn events_end_with_usage_then_done() {
        let completion = json!({
            "id": "chatcmpl-1", "created": 1, "model": "m",
            "choices": [{"message": {"content": "tok tok tok"}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
        });
        let events = events(&completion, 3, true);
        assert_eq!(events.len(), 3 + 1 + 1 + 1);
        let usage = String::from_utf8_lossy(&events[4]).into_owned();
        assert!(usage.contains(r#""total_tokens":8"#), "{usage}");
        assert_eq!(&events[5][..], b"data: [DONE]\n\n");
        let without = events_without_usage(&completion);
        assert!(
            without
                .iter()
                .all(|e| !String::from_utf8_lossy(e).contains("usage"))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stream_stats_count_the_streams_open_at_once() {
        let upstream = FakeUpstream::new(
            FakeUpstreamConfig::default(),
            Arc::new(crate::clock_at(100)),
        );
        let mut body = chat_body("Hi", Some(5));
        body["stream"] = json!(true);
        let request = || json_request(Method::POST, "/v1/chat/completions", &body);
        let stats = |started, open, max_open, completed| StreamStats {
            started,
            open,
            max_open,
            completed,
        };
        let a = upstream.respond(request()).await.expect("a stream");
        let b = upstream.respond(request()).await.expect("a stream");
        assert_eq!(upstream.stream_stats(), stats(2, 2, 2, 0));
        let text = a
            .into_body()
            .collect()
            .await
            .expect("the events")
            .to_bytes();
        assert!(text.ends_with(b"data: [DONE]\n\n"));
        assert_eq!(upstream.stream_stats(), stats(2, 1, 2, 1));
        // A client that goes away: closed, not completed.
        drop(b);
        assert_eq!(upstream.stream_stats(), stats(2, 0, 2, 1));
        // In process, the whole stream at once.
        let answer = upstream.handle(request()).await.expect("a stream");
        assert_eq!(answer.status(), 200);
        assert_eq!(upstream.stream_stats(), stats(3, 0, 2, 2));
        let c = upstream.respond(request()).await.expect("a stream");
        upstream.reset_stats();
        assert_eq!(upstream.stream_stats(), stats(0, 1, 1, 0));
        drop(c);
        assert_eq!(upstream.stream_stats(), stats(0, 0, 1, 0));
    }

    fn events_without_usage(completion: &Value) -> VecDeque<Bytes> {
        events(completion, 2, false)
    }
}
