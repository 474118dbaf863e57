//! A response on its way to an HTTP/1.1 client: the head Tether writes for it (one framing,
//! chosen here, never the server's) and the bytes queued for the socket — the head and chunk
//! framing in one buffer, a small body piece copied behind them and a large one beside it, so
//! a head and its first piece leave in one system call (only the parts left are passed to
//! the socket, which writes a lone one with a plain `send`).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::StatusCode;
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::response::Parts;
use tether_core::h1::body::ChunkHeader;
use tether_core::h1::reply::{ReplyFraming, write_reply_head};
use tokio::io::AsyncWrite;

use crate::upstream::h1::ServerLines;

/// What the request asked of the response, besides its body.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    /// A `HEAD` request: no body, whatever the head says.
    pub head: bool,
    /// An HTTP/1.0 client: no chunked coding.
    pub http10: bool,
    /// The connection closes after this response.
    pub close: bool,
    /// The client asked to upgrade, so a `101` switches protocols.
    pub upgrade: bool,
}

/// How the body goes out, as the head said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyOut {
    /// No body is sent.
    None,
    /// Exactly this many bytes are still to go.
    Length(u64),
    /// Chunked.
    Chunked,
    /// Until the connection closes.
    UntilClose,
    /// The connection becomes a tunnel (`101`).
    Switch,
}

/// The framing for a response with `parts` whose body has `exact` bytes when known: the
/// server's (validated) length; else the body's exact size; else chunked, or until close
/// for HTTP/1.0. No body for `HEAD`, `1xx`, `204` and `304` (the length a `HEAD` or `304`
/// would have is kept).
pub fn plan(parts: &Parts, exact: Option<u64>, asked: Asked) -> (ReplyFraming, BodyOut) {
    let status = parts.status;
    let length = || {
        let v = parts.headers.get(CONTENT_LENGTH)?;
        tether_core::h1::response::parse_length(v.as_bytes().trim_ascii())
    };
    if status == StatusCode::SWITCHING_PROTOCOLS && asked.upgrade {
        return (ReplyFraming::Upgrade, BodyOut::Switch);
    }
    if status.is_informational() || status == StatusCode::NO_CONTENT {
        return (ReplyFraming::Unframed, BodyOut::None);
    }
    if asked.head || status == StatusCode::NOT_MODIFIED {
        return (length().map_or(ReplyFraming::Unframed, ReplyFraming::Length), BodyOut::None);
    }
    match length().or(exact) {
        Some(n) => (ReplyFraming::Length(n), BodyOut::Length(n)),
        None if asked.http10 => (ReplyFraming::Unframed, BodyOut::UntilClose),
        None => (ReplyFraming::Chunked, BodyOut::Chunked),
    }
}

/// Appends the head for `parts` to `out`: the server's `lines` not yet in the map (already
/// without framing and hop-by-hop lines), then the map's; `false` (nothing appended) when a
/// header could not be written, which the caller answers with a bare `502`.
pub fn head(
    out: &mut Vec<u8>,
    parts: &Parts,
    lines: Option<&ServerLines>,
    framing: ReplyFraming,
    close: bool,
) -> bool {
    out.reserve(head_room(parts, lines));
    let reason = parts.status.canonical_reason().unwrap_or("");
    let mapped = parts
        .headers
        .iter()
        .filter(|(n, _)| **n != CONTENT_LENGTH && **n != TRANSFER_ENCODING && **n != CONNECTION)
        .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
    let headers = lines.into_iter().flat_map(ServerLines::iter).chain(mapped);
    let status = parts.status.as_u16();
    write_reply_head(out, status, reason.as_bytes(), headers, framing, close).is_ok()
}

/// Room for the head of `parts` whatever its framing, so that it is written into one
/// allocation: every header line, and at most 128 bytes for the status line and the lines
/// Tether adds (`HTTP/1.1 511 Network Authentication Required`, `content-length` with 20
/// digits, `connection: close`, the blank line).
fn head_room(parts: &Parts, lines: Option<&ServerLines>) -> usize {
    let mapped: usize = parts.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    mapped + lines.map_or(0, ServerLines::written_len) + 128
}

/// A bare answer Tether writes itself before a request exists (a head it cannot parse).
pub fn bare(out: &mut Vec<u8>, status: StatusCode) {
    let reason = status.canonical_reason().unwrap_or("");
    let none = std::iter::empty();
    // A status from StatusCode and a canonical reason always write.
    let _ = write_reply_head(
        out,
        status.as_u16(),
        reason.as_bytes(),
        none,
        ReplyFraming::Length(0),
        true,
    );
}

/// Bytes queued for the client: `buf` (heads, chunk framing) from `at`, then `data`, then
/// `tail`.
#[derive(Debug, Default)]
pub struct Out {
    pub buf: Vec<u8>,
    at: usize,
    data: Bytes,
    tail: &'static [u8],
    /// `buf` holds a copied body piece not yet written: no other piece may be queued, so a
    /// client that stops reading holds back the server's body instead of growing `buf`.
    copied: bool,
}

/// A body piece up to this size is copied behind the head or chunk header in `buf`, so the
/// usual small response leaves in one plain `send` (cheaper in the kernel than `writev`, and
/// the copy costs less than the difference); a larger one is written from where it is.
const COPIED_PIECE: usize = 2048;

/// The end of a chunked body.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

impl Out {
    /// Nothing is left to write.
    pub fn is_empty(&self) -> bool {
        self.at == self.buf.len() && self.data.is_empty() && self.tail.is_empty()
    }

    /// Whether a body piece (or the body's end) may be queued: the one before is written.
    /// Heads and framing still in `buf` are fine, the piece is written after them.
    pub fn takes_piece(&self) -> bool {
        self.data.is_empty() && self.tail.is_empty() && !self.copied
    }

    /// Queues a body piece framed by `framing` (whose remaining length it counts down); a
    /// piece past the declared length is cut to it. Call only when [`Self::takes_piece`].
    pub fn piece(&mut self, framing: &mut BodyOut, mut data: Bytes) {
        self.reset();
        let mut tail: &'static [u8] = b"";
        match framing {
            BodyOut::Length(left) => {
                let n = (*left).min(data.len() as u64);
                data.truncate(n as usize);
                *left -= n;
            }
            BodyOut::Chunked if !data.is_empty() => {
                self.buf.extend_from_slice(ChunkHeader::new(data.len()).as_bytes());
                tail = b"\r\n";
            }
            BodyOut::None | BodyOut::Switch => data.clear(),
            BodyOut::Chunked | BodyOut::UntilClose => {}
        }
        if data.len() <= COPIED_PIECE {
            self.buf.extend_from_slice(&data);
            self.buf.extend_from_slice(tail);
            self.copied = !data.is_empty();
        } else {
            self.data = data;
            self.tail = tail;
        }
    }

    /// Queues the end of a chunked body. Call only when [`Self::takes_piece`].
    pub fn last_chunk(&mut self) {
        self.reset();
        self.buf.extend_from_slice(LAST_CHUNK);
    }

    /// Empties `buf` once written, so heads and framing start at its beginning.
    fn reset(&mut self) {
        if self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
            self.copied = false;
        }
    }

    /// Writes until empty.
    pub fn poll_write<I: AsyncWrite + Unpin>(
        &mut self,
        io: &mut I,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while !self.is_empty() {
            // Only the parts left: the socket writes a lone one with a plain `send`.
            let mut slices = [IoSlice::new(&[]); 3];
            let parts = [&self.buf[self.at..], &self.data[..], self.tail];
            let left = parts.into_iter().filter(|p| !p.is_empty());
            let count = left.zip(&mut slices).fold(0, |count, (part, slice)| {
                *slice = IoSlice::new(part);
                count + 1
            });
            let slices = &slices[..count];
            let n = std::task::ready!(Pin::new(&mut *io).poll_write_vectored(cx, slices))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(n);
        }
        self.reset();
        Poll::Ready(Ok(()))
    }

    fn advance(&mut self, mut n: usize) {
        let from_buf = n.min(self.buf.len() - self.at);
        self.at += from_buf;
        n -= from_buf;
        let from_data = n.min(self.data.len());
        self.data.advance(from_data);
        n -= from_data;
        self.tail = &self.tail[n.min(self.tail.len())..];
    }
}

#[cfg(test)]
mod tests;
