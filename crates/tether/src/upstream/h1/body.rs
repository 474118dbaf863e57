//! A server's response body as it arrives, decoded by its framing (length, chunked, until
//! close) straight out of the read buffer: each piece is a slice of what was read, never a
//! copy. The body also keeps the request's upload going, and when the response has ended
//! cleanly it returns the connection to its server's pool.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tether_core::h1::{BodyFraming, Decoder, Piece};
use tether_core::pool::Ending;

use super::exchange::Exchange;
use super::{Error, Origin, ServerLines};
use crate::upstream::stream::Stream;

/// How the response left the connection, besides its body's framing.
#[derive(Debug, Clone, Copy)]
pub struct Reuse {
    /// The head allows another request: no close asked for, framing beyond doubt.
    pub head_allows: bool,
    /// `Transfer-Encoding` came with `Content-Length`.
    pub framing_doubtful: bool,
}

/// A server's response body on an HTTP/1.1 connection.
#[derive(Debug)]
pub struct ResponseBody {
    /// The exchange, until the body has ended (or failed).
    exchange: Option<Box<Exchange>>,
    origin: Arc<Origin>,
    decoder: Decoder,
    reuse: Reuse,
    /// The server's header lines, until the client's head is written or they are moved
    /// into the response's map.
    lines: Option<ServerLines>,
}

/// A failed response body: the server cut it, broke its framing, or the connection failed
/// (the client's side is cut too, so it cannot mistake a partial body for a whole one).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BodyFailed(pub Error);

impl ResponseBody {
    pub(super) fn new(
        exchange: Box<Exchange>,
        origin: Arc<Origin>,
        framing: BodyFraming,
        reuse: Reuse,
        lines: ServerLines,
    ) -> Self {
        let decoder = Decoder::new(framing);
        Self { exchange: Some(exchange), origin, decoder, reuse, lines: Some(lines) }
    }

    /// The server's header lines, not yet in the response's map.
    pub fn lines(&self) -> Option<&ServerLines> {
        self.lines.as_ref()
    }

    /// Takes the server's header lines (the response's map needs them, or the client's
    /// head has been written).
    pub fn take_lines(&mut self) -> Option<ServerLines> {
        self.lines.take()
    }

    /// A bodiless response (or an empty one): the exchange ends with its head.
    pub(super) fn end_now(&mut self) {
        match self.exchange.as_ref() {
            Some(ex) if ex.upload_over() => self.finish(),
            // The server answered before the request was sent whole: the connection is
            // not in a known state.
            _ => self.exchange = None,
        }
    }

    /// The connection of a `101` answer, with the bytes the server sent after its head: the
    /// server's side of the tunnel.
    pub fn into_upgraded(mut self) -> Option<(Stream, Bytes)> {
        let ex = self.exchange.take()?;
        let Exchange { io, rbuf, .. } = *ex;
        Some((io, rbuf.freeze()))
    }

    /// The response has ended by its framing: the connection goes back to the pool when
    /// the whole exchange was clean, and is closed otherwise.
    fn finish(&mut self) {
        let Some(ex) = self.exchange.take() else { return };
        let ending = Ending {
            request_complete: ex.request_complete(),
            response_complete: true,
            framing_doubtful: self.reuse.framing_doubtful,
            // Bytes after the response that nobody asked for: the server is out of step.
            close: !self.reuse.head_allows || !ex.rbuf.is_empty(),
            upgraded: false,
        };
        self.origin.checkin(ex.io, ending);
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<Frame<Bytes>, BodyFailed>>> {
        self.exchange = None;
        Poll::Ready(Some(Err(BodyFailed(e))))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyFailed;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyFailed>>> {
        let this = self.get_mut();
        loop {
            let Some(ex) = this.exchange.as_mut() else { return Poll::Ready(None) };
            if !ex.upload_over() {
                if let Poll::Ready(Err(e)) = ex.poll_upload(cx) {
                    return this.fail(e);
                }
            }
            if this.decoder.is_done() {
                this.finish();
                return Poll::Ready(None);
            }
            if !ex.rbuf.is_empty() {
                let step = match this.decoder.decode(&ex.rbuf) {
                    Ok(step) => step,
                    Err(e) => return this.fail(Error::Server(e.to_string())),
                };
                let used = ex.rbuf.split_to(step.consumed).freeze();
                if step.done {
                    this.finish();
                }
                match step.piece {
                    Some(Piece::Body(r)) if !r.is_empty() => {
                        return Poll::Ready(Some(Ok(Frame::data(used.slice(r)))));
                    }
                    _ => continue,
                }
            }
            match ready!(ex.poll_read(cx)) {
                Ok(0) => match this.decoder.finish() {
                    Ok(()) => {
                        // Read until close: complete, and the connection is spent.
                        this.exchange = None;
                        return Poll::Ready(None);
                    }
                    Err(e) => return this.fail(Error::Server(e.to_string())),
                },
                Ok(_) => {}
                Err(e) => return this.fail(Error::Io(e)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.exchange.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(n) if self.exchange.is_some() => SizeHint::with_exact(n),
            Some(_) => SizeHint::with_exact(0),
            None => SizeHint::default(),
        }
    }
}
