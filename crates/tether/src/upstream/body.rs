//! The request body sent to a server: the client's body as it arrives ([`ClientBody`]: an
//! HTTP/2 stream's, or an HTTP/1.1 body that Tether's own server loop decodes and hands over
//! piece by piece), with a stall timer and a size limit, or nothing (bodiless requests, which
//! can be replayed on retry).

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::{mpsc, oneshot};
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
    body: ClientBody,
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
pub struct ClientBodyFailed(#[source] pub BodyError);

/// Error of a forwarded request body.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl ReqBody {
    /// Streams `body`, failing after `stall` without data or past `max_bytes` (0: no
    /// limit); the receiver resolves once the body has been passed on completely (or was
    /// dropped).
    pub fn streaming(
        body: ClientBody,
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

/// A client's request body as Tether's server received it.
#[derive(Debug)]
pub enum ClientBody {
    /// An HTTP/2 stream's body (hyper's server).
    H2(Incoming),
    /// An HTTP/1.1 body, decoded by the connection's loop.
    H1(H1Body),
    /// No body.
    Empty,
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ClientBody::H2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ClientBody::H1(b) => b.poll_data(cx).map_ok(Frame::data),
            ClientBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::H2(b) => b.is_end_stream(),
            ClientBody::H1(b) => b.ended,
            ClientBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::H2(b) => b.size_hint(),
            ClientBody::H1(b) => b.length.map_or_else(SizeHint::default, SizeHint::with_exact),
            ClientBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// An HTTP/1.1 request body on its way from the connection's loop, which reads and decodes
/// it ([`H1BodySender`]), to whoever forwards it. One piece at a time: the loop reads the
/// next only once this one has been taken, so a slow server slows the client down instead
/// of filling memory.
#[derive(Debug)]
pub struct H1Body {
    rx: mpsc::Receiver<Result<Bytes, BodyError>>,
    want: Arc<Want>,
    /// The declared length, for the size hint.
    length: Option<u64>,
    ended: bool,
}

/// The loop's end of an [`H1Body`].
#[derive(Debug)]
pub struct H1BodySender {
    tx: mpsc::Sender<Result<Bytes, BodyError>>,
    want: Arc<Want>,
}

/// What the body tells the loop: it has been asked for (the loop answers `Expect:
/// 100-continue` then, as hyper does), and there is room for another piece.
#[derive(Debug, Default)]
struct Want {
    asked: AtomicBool,
    waker: AtomicWaker,
}

impl H1Body {
    /// A body of `length` bytes (`None`: chunked), and the loop's end of it.
    pub fn channel(length: Option<u64>) -> (H1BodySender, Self) {
        let (tx, rx) = mpsc::channel(1);
        let want = Arc::new(Want::default());
        let body = Self { rx, want: Arc::clone(&want), length, ended: false };
        (H1BodySender { tx, want }, body)
    }

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if !self.want.asked.swap(true, Ordering::AcqRel) {
            self.want.waker.wake();
        }
        let piece = std::task::ready!(self.rx.poll_recv(cx));
        match &piece {
            Some(Ok(_)) => self.want.waker.wake(),
            Some(Err(_)) | None => self.ended = true,
        }
        Poll::Ready(piece)
    }
}

impl H1BodySender {
    /// Whether the body has been asked for.
    pub fn asked(&self) -> bool {
        self.want.asked.load(Ordering::Acquire)
    }

    /// Ready when the body has been asked for and has room for a piece (or is gone:
    /// [`Self::is_closed`]).
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.ready_now() {
            return Poll::Ready(());
        }
        self.want.waker.register(cx.waker());
        if self.ready_now() { Poll::Ready(()) } else { Poll::Pending }
    }

    fn ready_now(&self) -> bool {
        self.tx.is_closed() || (self.asked() && self.tx.capacity() > 0)
    }

    /// Whoever forwarded the body dropped it.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Passes a piece on (or the error that ends the body); call after [`Self::poll_ready`].
    /// `false`: the body is gone.
    pub fn send(&self, piece: Result<Bytes, BodyError>) -> bool {
        self.tx.try_send(piece).is_ok()
    }
}
