//! One request and its response on one server connection, driven by whoever polls it (the
//! request's own task): no task, channel or lock of its own.
//!
//! The request goes out while the response comes in, so a server that answers before it has
//! read the whole body (an early `413`, an echo streaming back) is served as it expects:
//! [`Exchange::poll_upload`] writes the head and then the body as the client sends it (by
//! length, or re-chunked), and [`Exchange::poll_head`] reads the response head. The response
//! body keeps driving the upload ([`super::body::ResponseBody`]).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http_body::Body as _;
use tether_core::h1::body::{CHUNK_END, ChunkHeader, LAST_CHUNK};
use tether_core::h1::{HeadLimits, HeaderSpan, ResponseHead, parse_response};
use tokio::io::AsyncWrite;

use super::Error;
use crate::turn::Turn;
use crate::upstream::body::ReqBody;
use crate::upstream::stream::Stream;

/// Bytes read from a server at a time (the buffer grows by this much when it runs out).
const READ_SIZE: usize = 16 * 1024;

/// Where the request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upload {
    /// Head or body bytes still to write.
    Sending,
    /// Written whole.
    Sent,
    /// Writing failed (the server closed or reset); the response may still be read.
    Broken,
}

/// A request in progress on a server connection.
#[derive(Debug)]
pub struct Exchange {
    pub io: Stream,
    /// The head, until written.
    head: Bytes,
    /// Body data queued for the server after the head, with its chunk framing (a request
    /// without a body queues nothing here, and this allocates nothing).
    queue: VecDeque<Bytes>,
    body: Option<ReqBody>,
    chunked: bool,
    upload: Upload,
    /// Why writing failed, for the error when no response comes either.
    write_error: Option<io::Error>,
    /// Read from the server and not yet used.
    pub rbuf: BytesMut,
    /// Any response byte arrived on this exchange.
    pub received: bool,
    /// The request was `HEAD` (its response has no body whatever it says).
    to_head: bool,
    /// The head waits one turn of the event loop before its first write: every connection
    /// made ready by the same batch of events reads and parses its request first, and their
    /// writes to servers follow together (as HAProxy runs its I/O handlers before the tasks
    /// that send). In layout S of `bench/run.sh`, ~30% fewer involuntary context switches
    /// and ~9% more requests/s (`docs/performance.md`).
    turn: Turn,
}

impl Exchange {
    /// An exchange that will write `head`, then `body` (chunk-encoded when `chunked`).
    pub fn new(io: Stream, head: Bytes, body: ReqBody, chunked: bool, to_head: bool) -> Self {
        let body = match body {
            ReqBody::Empty => None,
            b => Some(b),
        };
        Self {
            io,
            head,
            queue: VecDeque::new(),
            body,
            chunked,
            upload: Upload::Sending,
            write_error: None,
            rbuf: BytesMut::new(),
            received: false,
            to_head,
            turn: Turn::default(),
        }
    }

    /// The request was written whole.
    pub fn request_complete(&self) -> bool {
        self.upload == Upload::Sent
    }

    /// Nothing more will be written (sent whole, or writing failed).
    pub fn upload_over(&self) -> bool {
        self.upload != Upload::Sending
    }

    /// Writes what the request has ready; `Ready(Ok)` once nothing more will be written
    /// (sent whole, or the server stopped taking it — see [`Self::request_complete`]). An
    /// error is the client's: its body stalled, grew too large or broke.
    pub fn poll_upload(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        loop {
            if self.upload != Upload::Sending {
                return Poll::Ready(Ok(()));
            }
            if self.has_queued() {
                ready!(self.turn.poll(cx));
                if let Err(e) = ready!(self.poll_write_queue(cx)) {
                    self.upload = Upload::Broken;
                    self.write_error = Some(e);
                    self.body = None;
                }
                continue;
            }
            let Some(body) = self.body.as_mut() else {
                self.upload = Upload::Sent;
                continue;
            };
            match ready!(Pin::new(body).poll_frame(cx)) {
                None => {
                    self.body = None;
                    if self.chunked {
                        self.queue.push_back(Bytes::from_static(LAST_CHUNK));
                    }
                }
                Some(Ok(frame)) => {
                    // Trailers of a client's chunked body are not forwarded.
                    if let Ok(data) = frame.into_data() {
                        self.queue_data(data);
                    }
                }
                Some(Err(e)) => return Poll::Ready(Err(Error::client_body(e))),
            }
        }
    }

    /// Queues body bytes with their framing.
    fn queue_data(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        if self.chunked {
            let header = ChunkHeader::new(data.len());
            self.queue.push_back(Bytes::copy_from_slice(header.as_bytes()));
            self.queue.push_back(data);
            self.queue.push_back(Bytes::from_static(CHUNK_END));
        } else {
            self.queue.push_back(data);
        }
    }

    /// Bytes wait to be written: the head or queued body data.
    fn has_queued(&self) -> bool {
        !self.head.is_empty() || !self.queue.is_empty()
    }

    /// Writes the head and the queue out (vectored; one slice goes out as a plain write, see
    /// [`Stream`]), then flushes (TLS buffers).
    fn poll_write_queue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.has_queued() {
            let mut slices = [IoSlice::new(&[]); 8];
            let queued = std::iter::once(&self.head).chain(&self.queue).filter(|b| !b.is_empty());
            let n = queued.zip(slices.iter_mut()).fold(0, |n, (b, s)| {
                *s = IoSlice::new(b);
                n + 1
            });
            let mut written = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..n]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let from_head = written.min(self.head.len());
            self.head.advance(from_head);
            written -= from_head;
            while written > 0 {
                let Some(front) = self.queue.front_mut() else { break };
                let take = written.min(front.len());
                front.advance(take);
                written -= take;
                if front.is_empty() {
                    self.queue.pop_front();
                }
            }
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Reads more of the response into `rbuf`; `Ready(Ok(0))` at the server's end of input.
    pub fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < READ_SIZE / 4 {
            self.rbuf.reserve(READ_SIZE);
        }
        let n = ready!(tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf))?;
        self.received |= n > 0;
        Poll::Ready(Ok(n))
    }

    /// Reads until a final response head is complete at the start of `rbuf` (interim `1xx`
    /// heads other than `101` are read and dropped), filling `spans` with its header lines.
    pub fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        limits: &HeadLimits,
        spans: &mut Vec<HeaderSpan>,
    ) -> Poll<Result<ResponseHead, Error>> {
        loop {
            if !self.rbuf.is_empty() {
                match parse_response(&self.rbuf, limits, self.to_head, spans) {
                    Ok(Some(head)) if head.is_interim() => {
                        self.rbuf.advance(head.len);
                        continue;
                    }
                    Ok(Some(head)) => return Poll::Ready(Ok(head)),
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Err(Error::Server(e.to_string()))),
                }
            }
            match ready!(self.poll_read(cx)) {
                Ok(0) => return Poll::Ready(Err(self.closed_before_head())),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(Error::Io(e))),
            }
        }
    }

    /// The error for a server that closed before a complete response head.
    fn closed_before_head(&mut self) -> Error {
        match self.write_error.take() {
            Some(e) => Error::Io(e),
            None if self.rbuf.is_empty() => {
                Error::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before responding"))
            }
            None => Error::Server("connection closed inside the response head".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::test_support::CountingWaker;

    #[tokio::test]
    async fn the_head_is_written_one_turn_after_it_is_ready() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let head = Bytes::from_static(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n");
        let mut ex =
            Exchange::new(Stream::Plain(client), head.clone(), ReqBody::Empty, false, false);
        let (waker, wakes) = CountingWaker::new();
        let mut cx = Context::from_waker(&waker);

        assert!(ex.poll_upload(&mut cx).is_pending(), "the first poll only takes a turn");
        assert_eq!(wakes.wakes(), 1, "and asks to be polled again");
        assert!(!ex.upload_over());

        assert!(matches!(ex.poll_upload(&mut cx), Poll::Ready(Ok(()))), "the next one writes");
        assert!(ex.request_complete());
        let mut got = vec![0; head.len()];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(got, head);
    }
}
