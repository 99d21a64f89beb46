//! The fake upstream over real HTTP/1.1 on loopback.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::{FakeUpstream, FakeUpstreamError};
use crate::TestkitError;

/// How long the accept loop pauses after a failed accept (out of file descriptors), so it
/// does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// A [`FakeUpstream`] served over HTTP/1.1 on `127.0.0.1`, from
/// [`FakeUpstream::serve`]. Dropping it (or [`shutdown`](Self::shutdown)) stops accepting
/// and closes every open connection, answered or not.
#[derive(Debug)]
pub struct FakeServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl FakeServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash: append `/v1/chat/completions`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and waits until its task has ended, so the port is closed on return.
    pub async fn shutdown(mut self) {
        self.task.abort();
        // The task was aborted: its outcome is a cancellation, nothing to report.
        let _ = (&mut self.task).await;
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeUpstream {
    /// Serves this upstream (the same state as every clone) over HTTP/1.1 on
    /// `127.0.0.1:0`, from a task spawned on the current tokio runtime. Keep-alive works;
    /// an injected [`Fault::ConnectionReset`](super::Fault::ConnectionReset) resets the TCP
    /// connection (the client reads `ECONNRESET`) without an answer.
    ///
    /// Latency and timeouts wait on tokio's timer, so serve from a runtime whose time is
    /// not paused, and give the upstream a clock that follows real time (or a
    /// [`ManualClock`](crate::ManualClock) the test moves).
    ///
    /// # Errors
    ///
    /// [`TestkitError::Io`] when the loopback port cannot be bound.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub async fn serve(&self) -> Result<FakeServer, TestkitError> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|err| TestkitError::io("binding the fake upstream to 127.0.0.1:0", err))?;
        let addr = listener
            .local_addr()
            .map_err(|err| TestkitError::io("reading the fake upstream's address", err))?;
        let task = tokio::spawn(accept_loop(listener, self.clone()));
        Ok(FakeServer { addr, task })
    }
}

/// Accepts connections until aborted. The connections' tasks live in a [`JoinSet`] owned
/// here, so aborting this task closes them all.
async fn accept_loop(listener: TcpListener, upstream: FakeUpstream) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, upstream.clone()));
                }
                Err(_) => tokio::time::sleep(ACCEPT_BACKOFF).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, upstream: FakeUpstream) {
    // Small answers: send them at once.
    let _ = stream.set_nodelay(true);
    let reset = Arc::new(AtomicBool::new(false));
    let io = TokioIo::new(ResettableStream {
        inner: stream,
        reset: Arc::clone(&reset),
    });
    let service = service_fn(move |request: http::Request<Incoming>| {
        let upstream = upstream.clone();
        let reset = Arc::clone(&reset);
        async move {
            match upstream.respond(request).await {
                Ok(response) => Ok(response),
                Err(err) => {
                    if matches!(err, FakeUpstreamError::ConnectionReset) {
                        reset.store(true, Ordering::SeqCst);
                    }
                    // hyper closes the connection without answering a service error.
                    Err(err)
                }
            }
        }
    });
    // A failed connection (a reset, a client gone) is the client's business.
    let _ = http1::Builder::new().serve_connection(io, service).await;
}

/// A TCP stream that, once its flag is set, closes with a reset instead of a FIN: zero
/// linger on drop, and no orderly shutdown.
struct ResettableStream {
    inner: TcpStream,
    reset: Arc<AtomicBool>,
}

impl ResettableStream {
    fn resetting(&self) -> bool {
        self.reset.load(Ordering::SeqCst)
    }
}

impl Drop for ResettableStream {
    fn drop(&mut self) {
        if self.resetting() {
            // Closing a socket with zero linger sends RST. If this fails the close is an
            // orderly one, still without an answer.
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.resetting() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
