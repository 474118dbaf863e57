//! Body types of the data path, both streaming: nothing here buffers a body whole.
//!
//! - [`ReqBody`]: what is sent to a server — the client's body as it arrives (with a stall
//!   timer), or nothing (bodiless requests, which can be replayed on retry).
//! - [`RespBody`]: what is sent to the client. It carries the request's [`InFlightGuard`] and
//!   access-log record, so the request counts as in flight until its last byte has been
//!   passed on (or the client went away), and the log line has the real byte count.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tether_core::InFlightGuard;
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio::time::Sleep;

use super::log::AccessLog;

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

/// What a request holds on its server while it is served: the in-flight count and, when the
/// backend limits connections, a slot. Both are released when this is dropped — at the end
/// of the response body, or of the tunnel for an upgraded connection.
#[derive(Debug)]
pub struct Held {
    /// Counts the request as in flight.
    pub guard: InFlightGuard,
    /// The connection slot (`limits.max_connections_per_server`).
    pub permit: Option<OwnedSemaphorePermit>,
}

/// The body returned to the client.
#[derive(Debug)]
pub struct RespBody {
    inner: Inner,
    guard: Option<Held>,
    log: Option<Box<AccessLog>>,
}

#[derive(Debug)]
enum Inner {
    Upstream(Incoming),
    Full(Option<Bytes>),
}

impl RespBody {
    /// A server's streamed body, counted in flight by `guard` until it ends.
    pub fn upstream(body: Incoming, guard: Held) -> Self {
        Self { inner: Inner::Upstream(body), guard: Some(guard), log: None }
    }

    /// A body Tether writes itself (error pages).
    pub fn full(text: impl Into<Bytes>) -> Self {
        Self { inner: Inner::Full(Some(text.into())), guard: None, log: None }
    }

    /// An empty body (101 responses).
    pub fn empty() -> Self {
        Self { inner: Inner::Full(None), guard: None, log: None }
    }

    /// Attaches the access-log record, written when the body ends or is dropped.
    pub fn with_log(mut self, log: Option<Box<AccessLog>>) -> Self {
        self.log = log;
        self
    }
}

impl RespBody {
    fn inner_ended(&self) -> bool {
        match &self.inner {
            Inner::Upstream(b) => b.is_end_stream(),
            Inner::Full(d) => d.is_none(),
        }
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = match &mut this.inner {
            Inner::Upstream(b) => ready!(Pin::new(b).poll_frame(cx)),
            Inner::Full(data) => data.take().map(|d| Ok(Frame::data(d))),
        };
        let ended = match &frame {
            Some(Ok(f)) => {
                if let (Some(log), Some(d)) = (this.log.as_mut(), f.data_ref()) {
                    log.bytes += d.len() as u64;
                }
                // hyper stops polling once a body with a known length says it has ended.
                this.inner_ended()
            }
            Some(Err(_)) => {
                if let Some(log) = this.log.as_mut() {
                    log.body_error = true;
                }
                if let Some(g) = &this.guard {
                    g.guard.server().record_error();
                }
                false
            }
            None => true,
        };
        if ended {
            if let Some(log) = this.log.as_mut() {
                log.complete = true;
            }
            // The response is over: stop counting it as in flight right away rather than
            // when hyper drops the body.
            this.guard = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner_ended()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(b) => b.size_hint(),
            Inner::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
        }
    }
}

impl Drop for RespBody {
    fn drop(&mut self) {
        if let Some(log) = self.log.take() {
            log.emit();
        }
    }
}
