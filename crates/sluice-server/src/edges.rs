//! The server's own edges: how many connections a listener holds, and how long a client may
//! hold one without using it.
//!
//! Every accepted connection takes a permit of its listener's [`Acceptor`]; past
//! `max_connections` a new connection is closed at once, counted, and logged (the first
//! time, then at most once a minute with the number refused since). Its socket is wrapped
//! in a [`Guarded`] stream that closes it when the client holds it without using it:
//!
//! - a new connection whose first request has not arrived within `header_read_timeout`
//!   (half a request head, nothing at all, or an HTTP/2 preface and no request);
//! - a connection with no request in flight for `idle_timeout` since its last one.
//!
//! On HTTP/1 hyper's own header read timeout (the same `header_read_timeout`) also runs
//! between requests, counted from the end of the previous response, so an HTTP/1 connection
//! waits at most the shorter of the two for its next request head.
//!
//! A request is in flight from the moment a protocol's service is called
//! ([`Conn::begin`]) until its response is ready. The stream checks its deadline only
//! when the connection waits on the client (a read or a write that would block), on one
//! timer per connection, so a busy connection pays a few relaxed atomic loads per wait.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, Sleep};

use crate::metrics::ConnectionCounters;

/// How long the accept loop pauses after a failed accept (out of file descriptors), so it
/// does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// At most one "connection limit reached" line per listener this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// What a client may hold of a listener: connections, time, and HTTP/2 streams and frames.
///
/// The same limits apply to the HTTP port and to the gRPC port, each with its own count of
/// connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A new connection must send its first complete request head within this (a slow or
    /// silent client is cut off); on HTTP/1, every later request head too, counted from the
    /// end of the previous response.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// A request must be answered within this (its body included): HTTP answers 408, gRPC
    /// `CANCELLED`.
    pub request_timeout: Duration,
    /// Open connections per listener; beyond it, new connections are closed at once.
    pub max_connections: usize,
    /// HTTP/2: streams a connection may have open at once (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2: a ping is sent after this long without a frame from the client…
    pub http2_keepalive_interval: Duration,
    /// …and the connection is closed when its answer takes longer than this.
    pub http2_keepalive_timeout: Duration,
    /// HTTP/2: the largest frame the client may send (`SETTINGS_MAX_FRAME_SIZE`, 16384 to
    /// 16777215 bytes).
    pub http2_max_frame_size: u32,
    /// HTTP/2: the largest header list a request may have (`SETTINGS_MAX_HEADER_LIST_SIZE`,
    /// bytes).
    pub http2_max_header_list_size: u32,
}

impl Default for ConnectionLimits {
    /// 10 s for a request head (a client on the same network sends one in milliseconds),
    /// 60 s idle (as common load balancers), 30 s per request, 4096 connections per listener
    /// (a few per Envoy, for hundreds of them; about 100 MB at most for half-sent heads),
    /// 256 streams per HTTP/2 connection, a ping after 30 s of silence answered within
    /// 20 s, 16 KiB frames (HTTP/2's smallest maximum; a rate limit request is a few hundred
    /// bytes) and 16 KiB header lists.
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            max_connections: 4096,
            http2_max_concurrent_streams: 256,
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(20),
            http2_max_frame_size: 16_384,
            http2_max_header_list_size: 16_384,
        }
    }
}

/// A [`ConnectionLimits`] field whose value cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} {value}: {reason}")]
pub struct InvalidLimit {
    /// The field (its flag's name without `--`).
    pub field: &'static str,
    /// The value given.
    pub value: String,
    /// What it must be.
    pub reason: &'static str,
}

impl ConnectionLimits {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// The first field out of its range, with its value.
    pub fn validate(&self) -> Result<(), InvalidLimit> {
        let positive = [
            ("header-read-timeout", self.header_read_timeout),
            ("idle-timeout", self.idle_timeout),
            ("request-timeout", self.request_timeout),
            ("http2-keepalive-interval", self.http2_keepalive_interval),
            ("http2-keepalive-timeout", self.http2_keepalive_timeout),
        ];
        for (field, value) in positive {
            if value.is_zero() {
                return Err(InvalidLimit {
                    field,
                    value: format!("{value:?}"),
                    reason: "must be more than zero",
                });
            }
        }
        let invalid = |field, value: u64, reason| {
            Err(InvalidLimit {
                field,
                value: value.to_string(),
                reason,
            })
        };
        if self.max_connections == 0 {
            return invalid("max-connections", 0, "must be at least 1");
        }
        if self.http2_max_concurrent_streams == 0 {
            return invalid("http2-max-concurrent-streams", 0, "must be at least 1");
        }
        if !(16_384..=16_777_215).contains(&self.http2_max_frame_size) {
            return invalid(
                "http2-max-frame-size",
                self.http2_max_frame_size.into(),
                "must be from 16384 to 16777215 bytes (RFC 9113)",
            );
        }
        if self.http2_max_header_list_size < 1024 {
            return invalid(
                "http2-max-header-list-size",
                self.http2_max_header_list_size.into(),
                "must be at least 1024 bytes",
            );
        }
        Ok(())
    }
}

/// Why a connection was closed by its timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expiry {
    HeaderRead,
    Idle,
}

/// One connection's requests in flight, shared by its stream and its services.
#[derive(Debug)]
pub(crate) struct Conn {
    start: Instant,
    /// Nanoseconds after `start` when the last request in flight ended.
    idle_since: AtomicU64,
    in_flight: AtomicU32,
    /// At least one request has ended.
    served: AtomicBool,
    limits: ConnectionLimits,
}

impl Conn {
    /// Marks a request in flight until the returned guard drops.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }

    /// When the connection expires, and why; `None` while a request is in flight.
    fn deadline(&self) -> Option<(Instant, Expiry)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        if !self.served.load(Ordering::Acquire) {
            return Some((
                self.start + self.limits.header_read_timeout,
                Expiry::HeaderRead,
            ));
        }
        let idle_since = Duration::from_nanos(self.idle_since.load(Ordering::Acquire));
        Some((
            self.start + idle_since + self.limits.idle_timeout,
            Expiry::Idle,
        ))
    }
}

/// A request in flight on its connection (see [`Conn::begin`]).
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let conn = &self.0;
        let since = u64::try_from(conn.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        conn.idle_since.store(since, Ordering::Release);
        conn.served.store(true, Ordering::Release);
        conn.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connection of a request, in its extensions (tonic puts it there through
/// [`tonic::transport::server::Connected`]).
#[derive(Clone, Debug)]
pub(crate) struct ConnInfo {
    pub(crate) conn: Arc<Conn>,
}

/// An accepted connection: its socket, its permit, and the timer that closes it when the
/// client holds it without using it.
#[derive(Debug)]
pub(crate) struct Guarded {
    io: TcpStream,
    info: ConnInfo,
    timer: Pin<Box<Sleep>>,
    expired: bool,
    counters: Arc<ConnectionCounters>,
    _permit: OwnedSemaphorePermit,
}

impl Guarded {
    pub(crate) fn info(&self) -> &ConnInfo {
        &self.info
    }

    /// `Some(error)` once the connection's deadline has passed; else registers the timer.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let expired = |expiry| {
            let what = match expiry {
                Expiry::HeaderRead => "no complete request head within the header read timeout",
                Expiry::Idle => "no request within the idle timeout",
            };
            io::Error::new(io::ErrorKind::TimedOut, what)
        };
        loop {
            match self.info.conn.deadline() {
                Some((deadline, expiry)) => {
                    if self.timer.deadline() != deadline {
                        self.timer.as_mut().reset(deadline);
                    }
                    if self.timer.as_mut().poll(cx).is_pending() {
                        return None;
                    }
                    if !self.expired {
                        self.expired = true;
                        let counter = match expiry {
                            Expiry::HeaderRead => &self.counters.header_timeouts,
                            Expiry::Idle => &self.counters.idle_timeouts,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    return Some(expired(expiry));
                }
                None => {
                    // Busy: look again after an idle timeout, or when the client is waited on.
                    if self.timer.is_elapsed() {
                        let next = Instant::now() + self.info.conn.limits.idle_timeout;
                        self.timer.as_mut().reset(next);
                    }
                    if self.timer.as_mut().poll(cx).is_pending() {
                        return None;
                    }
                }
            }
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Pending => this
                .poll_expired(cx)
                .map_or(Poll::Pending, |e| Poll::Ready(Err(e))),
            ready => ready,
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Pending => this
                .poll_expired(cx)
                .map_or(Poll::Pending, |e| Poll::Ready(Err(e))),
            ready => ready,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Pending => this
                .poll_expired(cx)
                .map_or(Poll::Pending, |e| Poll::Ready(Err(e))),
            ready => ready,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Pending => this
                .poll_expired(cx)
                .map_or(Poll::Pending, |e| Poll::Ready(Err(e))),
            ready => ready,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Guarded {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

/// A listener with its connection cap.
#[derive(Debug)]
pub(crate) struct Acceptor {
    listener: TcpListener,
    /// `http` or `grpc`, for logs.
    name: &'static str,
    permits: Arc<Semaphore>,
    limits: ConnectionLimits,
    pub(crate) counters: Arc<ConnectionCounters>,
    /// When the last "limit reached" line was written, and how many were refused since.
    warned: Mutex<(Option<Instant>, u64)>,
}

impl Acceptor {
    pub(crate) fn new(
        listener: TcpListener,
        name: &'static str,
        limits: ConnectionLimits,
        counters: Arc<ConnectionCounters>,
    ) -> Self {
        Self {
            listener,
            name,
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            counters,
            warned: Mutex::new((None, 0)),
        }
    }

    /// The next connection under the cap; connections over it are closed at once.
    pub(crate) async fn accept(&self) -> Guarded {
        loop {
            let (stream, _peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(listener = self.name, error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
                drop(stream);
                self.refused();
                continue;
            };
            let _ = stream.set_nodelay(true);
            self.counters.accepted.fetch_add(1, Ordering::Relaxed);
            self.counters.open.fetch_add(1, Ordering::Relaxed);
            let start = Instant::now();
            let conn = Arc::new(Conn {
                start,
                idle_since: AtomicU64::new(0),
                in_flight: AtomicU32::new(0),
                served: AtomicBool::new(false),
                limits: self.limits,
            });
            return Guarded {
                io: stream,
                info: ConnInfo { conn },
                timer: Box::pin(tokio::time::sleep_until(
                    start + self.limits.header_read_timeout,
                )),
                expired: false,
                counters: Arc::clone(&self.counters),
                _permit: permit,
            };
        }
    }

    fn refused(&self) {
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        warned.1 += 1;
        let now = Instant::now();
        match warned.0 {
            None => tracing::warn!(
                listener = self.name,
                max_connections = self.limits.max_connections,
                "connection limit reached: new connections are closed at once until some close \
                 (--max-connections; counted in sluice_connections_refused_total)"
            ),
            Some(at) if now.duration_since(at) >= WARN_EVERY => tracing::warn!(
                listener = self.name,
                max_connections = self.limits.max_connections,
                refused = warned.1,
                "connection limit still reached: connections refused in the last minute"
            ),
            Some(_) => return,
        }
        *warned = (Some(now), 0);
    }

    /// Accepts on a task of its own into a stream (for tonic), until the stream is dropped.
    pub(crate) fn into_stream(self) -> Incoming {
        let (send, receive) = mpsc::channel(1);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    guarded = self.accept() => {
                        if send.send(guarded).await.is_err() {
                            return;
                        }
                    }
                    () = send.closed() => return,
                }
            }
        });
        Incoming(receive)
    }
}

/// Accepted connections as a stream (see [`Acceptor::into_stream`]).
#[derive(Debug)]
pub(crate) struct Incoming(mpsc::Receiver<Guarded>);

impl tonic::codegen::tokio_stream::Stream for Incoming {
    type Item = Result<Guarded, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|next| next.map(Ok))
    }
}

/// A tower layer that marks each gRPC request in flight on its connection.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TrackLayer;

impl<S> tower::Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track(inner)
    }
}

/// See [`TrackLayer`].
#[derive(Clone, Debug)]
pub(crate) struct Track<S>(S);

impl<S, B> tower::Service<http::Request<B>> for Track<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let guard = request
            .extensions()
            .get::<ConnInfo>()
            .map(|info| info.conn.begin());
        let future = self.0.call(request);
        Box::pin(async move {
            let response = future.await;
            drop(guard);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones_and_valid() {
        let limits = ConnectionLimits::default();
        assert_eq!(limits.header_read_timeout, Duration::from_secs(10));
        assert_eq!(limits.idle_timeout, Duration::from_secs(60));
        assert_eq!(limits.request_timeout, Duration::from_secs(30));
        assert_eq!(limits.max_connections, 4096);
        assert_eq!(limits.http2_max_concurrent_streams, 256);
        assert_eq!(limits.http2_max_frame_size, 16 * 1024);
        assert_eq!(limits.http2_max_header_list_size, 16 * 1024);
        assert_eq!(limits.validate(), Ok(()));
    }

    #[test]
    fn an_impossible_limit_names_its_field_and_value() {
        let limits = ConnectionLimits {
            idle_timeout: Duration::ZERO,
            ..ConnectionLimits::default()
        };
        let err = limits.validate().expect_err("zero");
        assert_eq!(
            err.to_string(),
            "invalid idle-timeout 0ns: must be more than zero"
        );
        let limits = ConnectionLimits {
            max_connections: 0,
            ..ConnectionLimits::default()
        };
        assert_eq!(
            limits.validate().expect_err("zero").to_string(),
            "invalid max-connections 0: must be at least 1"
        );
    }
}
