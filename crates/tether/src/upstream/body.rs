//! The request body sent to a server: the client's body as it arrives, with a stall timer
//! and a size limit, or nothing (bodiless requests, which can be replayed on retry).

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::oneshot;
use tokio::time::Sleep;

/// The body forwarded to a server.
#[derive(Debug)]
pub enum ReqBody {
    /// The client's body, streamed.
    Streaming(Box<Streaming>),
    /// No body.
    Empty,
}

/// A client's request body on its way to a server. It fails with [`BodyStalled`] when the
/// client pauses longer than the listener's `timeouts.body`, and says when it has been sent
/// whole, so the server's response timeout starts only then (an upload may take as long as
/// it needs while it keeps moving).
#[derive(Debug)]
pub struct Streaming {
    body: Incoming,
    /// Bytes the body may still carry (`max_body_bytes`; `u64::MAX` when unlimited).
    allowance: u64,
    stall: Duration,
    timer: Pin<Box<Sleep>>,
    sent: Option<oneshot::Sender<()>>,
}

/// The client paused too long while sending its request body.
#[derive(Debug, thiserror::Error)]
#[error("the client stopped sending its request body")]
pub struct BodyStalled;

/// The client's body went past the listener's `max_body_bytes`.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than max_body_bytes")]
pub struct BodyTooLarge;

/// Reading the client's request body failed (connection lost, malformed chunking).
#[derive(Debug, thiserror::Error)]
#[error("reading the client's request body failed: {0}")]
pub struct ClientBodyFailed(#[source] pub hyper::Error);

/// Error of a forwarded request body.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl ReqBody {
    /// Streams `body`, failing after `stall` without data or past `max_bytes` (0: no
    /// limit); the receiver resolves once the body has been passed on completely (or was
    /// dropped).
    pub fn streaming(
        body: Incoming,
        stall: Duration,
        max_bytes: u64,
    ) -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let timer = Box::pin(tokio::time::sleep(stall));
        let allowance = if max_bytes == 0 { u64::MAX } else { max_bytes };
        let s = Streaming { body, allowance, stall, timer, sent: Some(tx) };
        (ReqBody::Streaming(Box::new(s)), rx)
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let s = match self.get_mut() {
            ReqBody::Streaming(s) => s,
            ReqBody::Empty => return Poll::Ready(None),
        };
        match Pin::new(&mut s.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                match s.allowance.checked_sub(len) {
                    Some(left) => s.allowance = left,
                    None => return Poll::Ready(Some(Err(Box::new(BodyTooLarge)))),
                }
                let deadline = tokio::time::Instant::now() + s.stall;
                s.timer.as_mut().reset(deadline);
                if s.body.is_end_stream() {
                    s.sent.take().map(|tx| tx.send(()));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(ClientBodyFailed(e))))),
            Poll::Ready(None) => {
                s.sent.take().map(|tx| tx.send(()));
                Poll::Ready(None)
            }
            Poll::Pending => match s.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyStalled)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Streaming(s) => s.body.is_end_stream(),
            ReqBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Streaming(s) => s.body.size_hint(),
            ReqBody::Empty => SizeHint::with_exact(0),
        }
    }
}
