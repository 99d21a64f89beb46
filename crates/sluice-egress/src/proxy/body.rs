//! The body of the proxy's answers: whole, or relayed from the upstream as it arrives.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

use crate::layer::BoxError;

/// The work that relays a streamed answer: it reads the upstream's frames into the channel,
/// then settles the call's tokens. The body drives it, so it runs in the connection's task
/// and stops when the client goes away (the body is dropped).
///
/// It holds the call's concurrency slot (in its [`Settlement`](crate::client::Settlement))
/// until the upstream's stream ends, and it lives in the body: dropping the body drops it
/// and gives the slot back, so a stream occupies a slot exactly as long as it is relayed.
pub(crate) type Producer = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A frame of a relayed answer, or the upstream's failure mid-stream.
pub(crate) type Relayed = Result<Frame<Bytes>, BoxError>;

/// The body of an answer from [`serve`](super::serve).
pub(crate) struct ProxyBody {
    kind: Kind,
}

enum Kind {
    Full(Option<Bytes>),
    Relay {
        producer: Option<Producer>,
        frames: mpsc::Receiver<Relayed>,
    },
}

impl fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Full(bytes) => f
                .debug_struct("ProxyBody::Full")
                .field("len", &bytes.as_ref().map_or(0, Bytes::len))
                .finish(),
            Kind::Relay { producer, .. } => f
                .debug_struct("ProxyBody::Relay")
                .field("relaying", &producer.is_some())
                .finish(),
        }
    }
}

impl ProxyBody {
    /// A whole body.
    pub(crate) fn full(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Full(Some(bytes).filter(|b| !b.is_empty())),
        }
    }

    /// A body relayed through `frames`, filled by `producer` (`None` once it has ended).
    pub(crate) fn relay(producer: Option<Producer>, frames: mpsc::Receiver<Relayed>) -> Self {
        Self {
            kind: Kind::Relay { producer, frames },
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Relay { producer, frames } => {
                if let Some(work) = producer
                    && work.as_mut().poll(cx).is_ready()
                {
                    *producer = None;
                }
                match frames.poll_recv(cx) {
                    Poll::Ready(Some(frame)) => Poll::Ready(Some(frame)),
                    // The channel is closed, but the producer may still be settling the
                    // tokens: end only when it has (it wakes this task when it is done).
                    Poll::Ready(None) if producer.is_some() => Poll::Pending,
                    Poll::Ready(None) => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.kind, Kind::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Relay { .. } => SizeHint::default(),
        }
    }
}
