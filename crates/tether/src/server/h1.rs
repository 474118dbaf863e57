//! Tether's own HTTP/1.1 server: one loop per client connection, in the connection's task.
//!
//! The loop reads a request head ([`request::parse`]: httparse and the framing policy in one
//! pass), hands the request to [`proxy::handle`], and while the request is served it feeds
//! the request body ([`H1BodySender`], one piece at a time), watches for the client leaving
//! (the request is dropped and logged as `499`), and writes the response as soon as its head
//! exists ([`write`]), framed by Tether (a length, chunked, or until close). Requests are
//! answered one after the other, so pipelined ones are answered in order.
//!
//! Nothing is held while idle: between requests the read buffer goes back to the thread
//! ([`buffers`]) and the connection waits for readability with none; the request's state
//! lives in one allocation for the request's lifetime.
//!
//! Timeouts, as listeners configure them: the first head must be complete within
//! `timeouts.header` of the connection's start, later ones within `timeouts.header` of their
//! first byte; between requests, `timeouts.idle` without a byte closes the connection; a
//! response that cannot be written for `timeouts.idle` plus the shorter of the two is
//! dropped (a client that stopped reading). A drain closes an idle connection at once and a
//! busy one after its response (`Connection: close`).

mod buffers;
mod request;
mod write;

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::BytesMut;
use http::{Response, StatusCode};
use http_body::Body as _;
use tether_core::conns::ConnSlot;
use tether_core::h1::{BodyFraming, Decoder, HeadLimits, Piece, RequestHead, RequestHeadError};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, Sleep};

use self::write::{Asked, BodyOut, Out};
use super::Serve;
use super::accept::Prefixed;
use crate::proxy::body::RespBody;
use crate::proxy::upgrade::{ClientUpgrade, Upgraded};
use crate::proxy::{self, ConnCtx};
use crate::snapshot::{ConnSettings, Snapshot};
use crate::turn::Turn;
use crate::upstream::body::{BodyError, ClientBody, H1Body, H1BodySender};

/// The HTTP/2 connection preface, which a client speaking HTTP/2 without TLS sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One client connection speaking HTTP/1.1.
pub struct Conn<I> {
    io: I,
    rbuf: BytesMut,
    ctx: Arc<ConnCtx>,
    settings: Arc<ConnSettings>,
    current: Arc<ArcSwap<Snapshot>>,
    drain: watch::Receiver<bool>,
    /// The connection's place in the listener's limits, when the loop holds it.
    slot: Option<ConnSlot>,
}

/// How a connection's loop ended.
enum Ended {
    /// Closed.
    Done,
    /// The connection goes to the tunnel of a `101`.
    Upgrade(oneshot::Sender<Upgraded>),
    /// The client sent the HTTP/2 preface (it is in the read buffer).
    H2,
}

impl<I: AsyncRead + AsyncWrite + Send + Unpin + 'static> Conn<I> {
    /// A connection accepted now, with what it holds while it lives.
    pub fn new(io: I, serve: Serve, slot: Option<ConnSlot>) -> Self {
        // The drain waits for the connection by the token its context holds.
        let Serve { current, ctx, settings, drain, token: _ } = serve;
        let rbuf = BytesMut::new();
        Self { io, rbuf, ctx, settings, current, drain, slot }
    }

    /// Serves requests until the connection closes; a client that opens with the HTTP/2
    /// preface is served by hyper's HTTP/2 server instead.
    ///
    /// This future is the connection's task, and a task is as large as its future's largest
    /// state, idle or not. So no state holds the connection twice: the HTTP/2 path takes it
    /// by value into a boxed future, and this is an `async` block, not an `async fn`, which
    /// would keep its argument beside the local it moves it into (rust-lang/rust#62958).
    #[expect(clippy::manual_async_fn, reason = "an async fn stores its arguments twice")]
    pub fn serve(mut self) -> impl Future<Output = ()> + Send + 'static {
        async move {
            match self.serve_h1().await {
                Ended::Done => {}
                Ended::Upgrade(tx) => self.upgrade(tx),
                Ended::H2 => Box::pin(self.into_h2()).await,
            }
        }
    }

    /// Hands the connection to the tunnel of a `101`, with the bytes read past its head.
    fn upgrade(mut self, tx: oneshot::Sender<Upgraded>) {
        let early = std::mem::take(&mut self.rbuf).freeze();
        let _ = tx.send(Upgraded { io: Box::new(self.io), early });
    }

    /// Serves the connection with hyper's HTTP/2 server, the preface read so far first.
    async fn into_h2(self) {
        let Conn { io, rbuf, ctx, settings, current, drain, slot } = self;
        let token = ctx.drain_token.clone();
        let serve = Serve { current, ctx, settings, drain, token };
        serve.run_h2(Prefixed::new(rbuf.freeze(), io)).await;
        drop(slot);
    }

    /// The loop: one request after the other until the connection closes. (This and the
    /// waits below are `async` blocks for the reason [`Conn::serve`] gives: 16 bytes less in
    /// every idle connection's task, which keeps it in the allocator's 640-byte blocks.)
    #[expect(clippy::manual_async_fn, reason = "an async fn stores its arguments twice")]
    fn serve_h1(&mut self) -> impl Future<Output = Ended> + Send + '_ {
        async move {
            let mut first = true;
            loop {
                // The head is gone before the exchange is awaited: no part of that state.
                let exchange = match self.next_head(first).await {
                    Next::Head(head) => self.start(&head),
                    // Boxed, as every path taken once per connection: an idle connection's
                    // task is as large as its largest state.
                    Next::Refused(e) => return Box::pin(self.refuse(e)).await,
                    Next::H2 => return Ended::H2,
                    Next::Closed => return Ended::Done,
                };
                first = false;
                let Some(exchange) = exchange else {
                    return Box::pin(self.bare(StatusCode::BAD_REQUEST)).await;
                };
                match self.finish(exchange).await {
                    After::KeepAlive => self.rest(),
                    After::Close => return Box::pin(self.close()).await,
                    After::Drop => return Ended::Done,
                    After::Upgrade(tx) => return Ended::Upgrade(tx),
                }
            }
        }
    }

    /// Waits for the next complete head (or the end of the connection).
    #[expect(clippy::manual_async_fn, reason = "an async fn stores its arguments twice")]
    fn next_head(&mut self, first: bool) -> impl Future<Output = Next> + Send + '_ {
        async move {
            // The first head's time runs from the connection's first poll, right after its
            // accept (or its TLS handshake).
            let mut deadline = first.then(|| Instant::now() + self.settings.header_timeout);
            loop {
                if !self.rbuf.is_empty() {
                    if first && H2_PREFACE.starts_with(&self.rbuf[..self.rbuf.len().min(24)]) {
                        if self.rbuf.len() >= H2_PREFACE.len() {
                            return Next::H2;
                        }
                    } else {
                        match request::parse(&self.rbuf, &self.limits()) {
                            Ok(Some(head)) => return Next::Head(head),
                            Ok(None) => {}
                            Err(e) => return Next::Refused(e),
                        }
                    }
                    deadline.get_or_insert_with(|| Instant::now() + self.settings.header_timeout);
                } else if *self.drain.borrow() {
                    return Next::Closed;
                }
                let until = deadline.unwrap_or_else(|| Instant::now() + self.settings.idle_timeout);
                // Right after a response the next request is almost never there yet (the
                // client has still to read the response): a try before arming the timer would
                // be wasted.
                let try_first = first || !self.rbuf.is_empty();
                if !self.read_until(until, try_first).await {
                    return Next::Closed;
                }
            }
        }
    }

    /// Reads more bytes before `until`; `false` when the connection ended, the time ran out,
    /// or a drain began while no request was in progress. With `try_first`, one read is tried
    /// before arming a timer (a new connection's first head, or the rest of a head, is
    /// usually there already).
    #[expect(clippy::manual_async_fn, reason = "an async fn stores its arguments twice")]
    fn read_until(
        &mut self,
        until: Instant,
        try_first: bool,
    ) -> impl Future<Output = bool> + Send + '_ {
        async move {
            if try_first
                && let Some(read) = futures_util::FutureExt::now_or_never(poll_fn(|cx| {
                    poll_read(&mut self.io, &mut self.rbuf, cx)
                }))
            {
                return matches!(read, Ok(n) if n > 0);
            }
            let idle = self.rbuf.is_empty();
            let Self { io, rbuf, drain, .. } = self;
            let read = poll_fn(|cx| poll_read(io, rbuf, cx));
            tokio::select! {
                read = read => matches!(read, Ok(n) if n > 0),
                _ = tokio::time::sleep_until(until) => false,
                _ = drain.changed(), if idle => false,
            }
        }
    }

    fn limits(&self) -> HeadLimits {
        HeadLimits {
            max_head_bytes: self.settings.limits.max_header_bytes,
            max_headers: self.settings.limits.max_headers,
        }
    }

    /// Builds the request of `head` and starts serving it. `None`: the head is no request
    /// (a target that is no URI). The exchange is boxed so that the connection's task, sized
    /// by its largest state, stays sized by the wait for the next head.
    fn start(&mut self, head: &RequestHead) -> Option<Box<Exchange>> {
        let bytes = self.rbuf.split_to(head.len).freeze();
        let req = request::build(&bytes, head)?;
        let (feed, body) = match head.framing {
            BodyFraming::NoBody | BodyFraming::Length(0) => (None, ClientBody::Empty),
            framing => {
                let length = if let BodyFraming::Length(n) = framing { Some(n) } else { None };
                let (tx, body) = H1Body::channel(length);
                let decoder = Decoder::new(framing);
                let feed = Feed { decoder, tx, expect_continue: head.expect_continue };
                (Some(feed), ClientBody::H1(body))
            }
        };
        let (upgrade_tx, upgrade_rx) = head.upgrade.then(oneshot::channel).unzip();
        let asked = Asked {
            head: req.method() == http::Method::HEAD,
            http10: head.minor_version == 0,
            close: head.close || head.minor_version == 0,
            upgrade: upgrade_tx.is_some(),
        };
        let handling = serve_request(&self.current, &self.ctx, req.map(|()| body), upgrade_rx);
        Some(Box::new(Exchange::new(handling, feed, asked, upgrade_tx)))
    }

    /// Answers a head the framing policy refused through the request path (the same answer,
    /// metric and log line as on HTTP/2), or with a bare status when it is no request at all
    /// (malformed, too large).
    async fn refuse(&mut self, e: RequestHeadError) -> Ended {
        use RequestHeadError::*;
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
        if matches!(e, Malformed(_) | TargetTooLong | TooLarge | TooManyHeaders) {
            return self.bare(status).await;
        }
        let Some((mut req, len)) = request::refused(&self.rbuf, &self.limits()) else {
            return self.bare(status).await;
        };
        // The request path refuses it for this reason, whatever it would make of the head.
        req.extensions_mut().insert(e);
        let _ = self.rbuf.split_to(len);
        let asked = Asked {
            head: req.method() == http::Method::HEAD,
            http10: req.version() == http::Version::HTTP_10,
            close: true,
            upgrade: false,
        };
        let handling =
            serve_request(&self.current, &self.ctx, req.map(|()| ClientBody::Empty), None);
        let exchange = Box::new(Exchange::new(handling, None, asked, None));
        match self.finish(exchange).await {
            After::Drop => Ended::Done,
            _ => self.close().await,
        }
    }

    /// Writes a bare answer and closes.
    async fn bare(&mut self, status: StatusCode) -> Ended {
        let mut out = Vec::new();
        write::bare(&mut out, status);
        let written = tokio::time::timeout(self.settings.idle_timeout, self.io.write_all(&out));
        if matches!(written.await, Ok(Ok(()))) {
            return self.close().await;
        }
        Ended::Done
    }

    /// Closes the connection after its last response: the write side is shut (a FIN, or
    /// TLS close_notify), within the idle timeout.
    async fn close(&mut self) -> Ended {
        let _ = tokio::time::timeout(self.settings.idle_timeout, self.io.shutdown()).await;
        Ended::Done
    }

    /// Between requests: the read buffer goes back to the thread unless it holds the start
    /// of the next request.
    fn rest(&mut self) {
        if self.rbuf.is_empty() {
            buffers::give_back(std::mem::take(&mut self.rbuf));
        }
    }

    /// Drives `ex` until its response is written (or the client is gone, or the listener
    /// abandoned the connection: a reload removed it and its grace period is over).
    async fn finish(&mut self, mut ex: Box<Exchange>) -> After {
        let stall_after = self.settings.idle_timeout
            + self.settings.idle_timeout.min(self.settings.header_timeout);
        // Only the drain signal's sender going away ends this: a drain lets the request finish.
        // The wait registers once (under the signal's lock); after that it is polled again
        // only when the signal moved, not at every poll of the exchange.
        let mut drain = self.drain.clone();
        let mut abandoned = std::pin::pin!(async move { while drain.changed().await.is_ok() {} });
        let mut registered = false;
        let after = poll_fn(|cx| {
            if !registered || !matches!(self.drain.has_changed(), Ok(false)) {
                registered = true;
                if abandoned.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(After::Drop);
                }
            }
            ex.poll(self, stall_after, cx)
        })
        .await;
        if let After::KeepAlive = after {
            if *self.drain.borrow() {
                return After::Close;
            }
        }
        after
    }
}

/// Reads into `rbuf`, borrowing a buffer from the thread while it has none, and giving it
/// back when nothing came — unless a request in progress still shares it (it is given back
/// once that request is over).
fn poll_read<I: AsyncRead + Unpin>(
    io: &mut I,
    rbuf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let read = poll_read_kept(io, rbuf, cx);
    if read.is_pending() && rbuf.is_empty() && buffers::reclaim(rbuf) {
        buffers::give_back(std::mem::take(rbuf));
    }
    read
}

/// Reads into `rbuf`, keeping it when nothing came (a body is arriving).
fn poll_read_kept<I: AsyncRead + Unpin>(
    io: &mut I,
    rbuf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if rbuf.capacity() == 0 {
        *rbuf = buffers::lend();
    } else if rbuf.capacity() == rbuf.len() {
        rbuf.reserve(buffers::READ_BUF);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, rbuf)
}

/// The request path for one request, as a future the connection polls.
fn serve_request(
    current: &Arc<ArcSwap<Snapshot>>,
    ctx: &Arc<ConnCtx>,
    req: http::Request<ClientBody>,
    upgrade: Option<ClientUpgrade>,
) -> Pin<Box<dyn Future<Output = Response<RespBody>> + Send>> {
    let snap = current.load_full();
    let ctx = Arc::clone(ctx);
    // Boxed once here, the request is a pointer in each layer of the future below (an async
    // fn keeps its argument and a local copy of it): the future is ~1.3 KB smaller.
    let req = Box::new(req);
    Box::pin(
        async move { proxy::handle(&snap, &ctx, req, (upgrade, proxy::HeadFor::H1Writer)).await },
    )
}

enum Next {
    Head(RequestHead),
    Refused(RequestHeadError),
    H2,
    Closed,
}

/// What follows a request.
enum After {
    /// Read the next request.
    KeepAlive,
    /// Close gracefully.
    Close,
    /// Drop the connection: the client is gone or stalled, or the response was cut.
    Drop,
    /// Hand the connection to the tunnel.
    Upgrade(oneshot::Sender<Upgraded>),
}

/// The request body on its way from the socket to the request path.
struct Feed {
    decoder: Decoder,
    tx: H1BodySender,
    expect_continue: bool,
}

/// How feeding the body ended.
enum Fed {
    /// The body is complete.
    Whole,
    /// The request path dropped it before its end: the rest is unread.
    Abandoned,
    /// The client closed, failed or broke the chunked framing mid-body.
    Failed,
}

/// One request, from its head to the end of its response.
struct Exchange {
    handling: Option<Pin<Box<dyn Future<Output = Response<RespBody>> + Send>>>,
    feed: Option<Feed>,
    asked: Asked,
    upgrade: Option<oneshot::Sender<Upgraded>>,
    /// The response body and how it goes out, once the head is written.
    body: Option<RespBody>,
    framing: BodyOut,
    out: Out,
    /// A response head is queued (a `100 Continue` may precede it, never follow).
    answered: bool,
    /// The client may close its side without it meaning an abort (it asked to close).
    eof_ok: bool,
    /// The body was not read whole or the client is gone: no next request.
    close: bool,
    /// Bytes written since the last flush.
    unflushed: bool,
    /// Armed while a write is blocked.
    stall: Option<Pin<Box<Sleep>>>,
    /// The response waits one turn of the event loop before its first write, as the request
    /// does before its write to the server: the answers of every connection made ready by
    /// the same batch of events go out together.
    turn: Turn,
}

impl Exchange {
    fn new(
        handling: Pin<Box<dyn Future<Output = Response<RespBody>> + Send>>,
        feed: Option<Feed>,
        asked: Asked,
        upgrade: Option<oneshot::Sender<Upgraded>>,
    ) -> Self {
        Self {
            handling: Some(handling),
            feed,
            eof_ok: asked.close,
            close: asked.close,
            asked,
            upgrade,
            body: None,
            framing: BodyOut::None,
            out: Out::default(),
            answered: false,
            unflushed: false,
            stall: None,
            turn: Turn::default(),
        }
    }

    /// One turn of the request: feed the body, watch the client, take the response head,
    /// write what there is.
    fn poll<I>(
        &mut self,
        conn: &mut Conn<I>,
        stall_after: Duration,
        cx: &mut Context<'_>,
    ) -> Poll<After>
    where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        if let Some(feed) = &mut self.feed {
            let continued = self.answered;
            if let Poll::Ready(fed) = poll_feed(feed, conn, &mut self.out, continued, cx) {
                self.feed = None;
                if !matches!(fed, Fed::Whole) {
                    self.close = true;
                    self.eof_ok = true;
                }
            }
        }
        if self.handling.is_some() {
            if self.feed.is_none() && !self.eof_ok && self.watch_client(conn, cx).is_ready() {
                // The client left before its answer: dropping the request logs its 499.
                return Poll::Ready(After::Drop);
            }
            let Some(handling) = self.handling.as_mut() else { return Poll::Pending };
            let resp = match handling.as_mut().poll(cx) {
                Poll::Ready(resp) => resp,
                // Meanwhile, a `100 Continue` may be on its way.
                Poll::Pending => return self.poll_interim(conn, stall_after, cx),
            };
            self.handling = None;
            self.respond(resp, *conn.drain.borrow());
        }
        ready!(self.turn.poll(cx));
        self.poll_response(conn, stall_after, cx)
    }

    /// While the request is served and its body read whole: a client that closes or fails
    /// is gone (`Ready`); bytes it sends meanwhile are the next request, kept (up to one head).
    fn watch_client<I: AsyncRead + Unpin>(
        &mut self,
        conn: &mut Conn<I>,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        while conn.rbuf.len() < conn.settings.limits.max_header_bytes.max(buffers::READ_BUF) {
            match poll_read(&mut conn.io, &mut conn.rbuf, cx) {
                Poll::Ready(Ok(0)) => {
                    if self.asked.close {
                        self.eof_ok = true;
                        return Poll::Pending;
                    }
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Pending
    }

    /// Queues the response head and keeps its body to stream.
    fn respond(&mut self, resp: Response<RespBody>, draining: bool) {
        let (parts, mut body) = resp.into_parts();
        let lines = body.take_server_lines();
        let exact = body.size_hint().exact();
        let close = self.close
            || draining
            || proxy::headers::asks_to_close(http::Version::HTTP_11, &parts.headers)
            || self.feed.is_some();
        let asked = Asked { close, ..self.asked };
        let (reply, framing) = write::plan(&parts, exact, asked);
        let close = close || framing == BodyOut::UntilClose;
        let written = write::head(&mut self.out.buf, &parts, lines.as_ref(), reply, close);
        drop(lines);
        crate::header_maps::give(parts.headers);
        if !written {
            write::bare(&mut self.out.buf, StatusCode::BAD_GATEWAY);
            self.close = true;
            self.framing = BodyOut::None;
            self.answered = true;
            return;
        }
        self.close = close;
        self.framing = framing;
        self.answered = true;
        if framing != BodyOut::Switch {
            self.upgrade = None;
        }
        if framing != BodyOut::Switch {
            // Polled to its end even when nothing of it is sent (HEAD, 204, 304): the
            // request's log line and in-flight count end with it.
            self.body = Some(body);
        }
    }

    /// Writes an interim answer queued while the request is served; `Ready` only when the
    /// client is gone.
    fn poll_interim<I: AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<I>,
        stall_after: Duration,
        cx: &mut Context<'_>,
    ) -> Poll<After> {
        match self.poll_out(conn, stall_after, cx) {
            Poll::Ready(Err(())) => Poll::Ready(After::Drop),
            Poll::Ready(Ok(())) if self.unflushed => match self.poll_flush(conn, cx) {
                Poll::Ready(Err(())) => Poll::Ready(After::Drop),
                _ => Poll::Pending,
            },
            _ => Poll::Pending,
        }
    }

    /// Writes the response: queued bytes, then each body piece, then the end of the body.
    fn poll_response<I>(
        &mut self,
        conn: &mut Conn<I>,
        stall_after: Duration,
        cx: &mut Context<'_>,
    ) -> Poll<After>
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        loop {
            // The next piece joins what is queued (a head goes out with its first piece).
            let mut waiting = false;
            if self.out.takes_piece() {
                match self.poll_piece(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(())) => return Poll::Ready(After::Drop),
                    Poll::Pending => waiting = true,
                }
            }
            match self.poll_out(conn, stall_after, cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(())) => return Poll::Ready(After::Drop),
                Poll::Pending => return Poll::Pending,
            }
            if waiting {
                if self.unflushed {
                    if let Poll::Ready(Err(())) = self.poll_flush(conn, cx) {
                        return Poll::Ready(After::Drop);
                    }
                }
                return Poll::Pending;
            }
            if self.body.is_none() {
                break;
            }
        }
        if self.unflushed && ready!(self.poll_flush(conn, cx)).is_err() {
            return Poll::Ready(After::Drop);
        }
        if self.feed.is_some() {
            // The rest of the body is unread: the connection cannot carry another request.
            self.close = true;
        }
        Poll::Ready(match (self.upgrade.take(), self.framing, self.close) {
            (Some(tx), BodyOut::Switch, _) => After::Upgrade(tx),
            (_, BodyOut::UntilClose | BodyOut::Switch, _) | (_, _, true) => After::Close,
            _ => After::KeepAlive,
        })
    }

    /// Queues the response body's next piece, or its end. `Err`: the server's body failed
    /// (or ended short of its length), so the client must not take what it got for whole.
    fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        let Some(body) = self.body.as_mut() else { return Poll::Ready(Ok(())) };
        match ready!(Pin::new(body).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    self.out.piece(&mut self.framing, data);
                }
            }
            Some(Err(_)) => return Poll::Ready(Err(())),
            None => {
                self.body = None;
                match self.framing {
                    BodyOut::Chunked => self.out.last_chunk(),
                    BodyOut::Length(n) if n > 0 => return Poll::Ready(Err(())),
                    _ => {}
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Writes what is queued; a write blocked for `stall_after` fails.
    fn poll_out<I: AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<I>,
        stall_after: Duration,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), ()>> {
        if self.out.is_empty() {
            return Poll::Ready(Ok(()));
        }
        match self.out.poll_write(&mut conn.io, cx) {
            Poll::Ready(Ok(())) => {
                self.unflushed = true;
                self.stall = None;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(_)) => Poll::Ready(Err(())),
            Poll::Pending => {
                let stall =
                    self.stall.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall_after)));
                match stall.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(())),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn poll_flush<I: AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<I>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), ()>> {
        let flushed = ready!(Pin::new(&mut conn.io).poll_flush(cx));
        self.unflushed = false;
        Poll::Ready(flushed.map_err(|_| ()))
    }
}

/// Feeds the request body: reads, decodes and passes on one piece at a time, each once the
/// request path has taken the one before. Answers `Expect: 100-continue` when the body is
/// first asked for, unless the response head came first.
fn poll_feed<I: AsyncRead + Unpin>(
    feed: &mut Feed,
    conn: &mut Conn<I>,
    out: &mut Out,
    answered: bool,
    cx: &mut Context<'_>,
) -> Poll<Fed> {
    loop {
        if feed.decoder.is_done() {
            return Poll::Ready(Fed::Whole);
        }
        ready!(feed.tx.poll_ready(cx));
        if feed.tx.is_closed() {
            return Poll::Ready(Fed::Abandoned);
        }
        if std::mem::take(&mut feed.expect_continue) && !answered {
            out.buf.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        if conn.rbuf.is_empty() {
            // A large body is read in large pieces: each piece is one handoff and one write
            // to the server (the buffer is not kept by the thread afterwards).
            if feed.decoder.remaining().is_none_or(|n| n > buffers::READ_BUF as u64) {
                conn.rbuf.reserve(buffers::BODY_READ);
            }
            match ready!(poll_read_kept(&mut conn.io, &mut conn.rbuf, cx)) {
                Ok(0) => return Poll::Ready(fail(feed, io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => continue,
                Err(e) => return Poll::Ready(fail(feed, e)),
            }
        }
        let step = match feed.decoder.decode(&conn.rbuf) {
            Ok(step) => step,
            Err(e) => {
                return Poll::Ready(fail(feed, io::Error::new(io::ErrorKind::InvalidData, e)));
            }
        };
        let used = conn.rbuf.split_to(step.consumed).freeze();
        if let Some(Piece::Body(r)) = step.piece {
            if !r.is_empty() && !feed.tx.send(Ok(used.slice(r))) {
                return Poll::Ready(Fed::Abandoned);
            }
        }
    }
}

/// Ends the body with the client's failure.
fn fail(feed: &mut Feed, e: io::Error) -> Fed {
    let e: BodyError = Box::new(e);
    let _ = feed.tx.send(Err(e));
    Fed::Failed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The future of one request is boxed per request (and each HTTP/2 stream's is copied
    /// several times on its way into its task): it stays small because the request is a
    /// pointer in it, not a ~270-byte value in each of its async layers.
    #[tokio::test]
    async fn a_requests_future_holds_its_request_by_pointer() {
        let snap = crate::test_support::snapshot(&crate::test_support::servers("app", &["a"]));
        let current = Arc::new(ArcSwap::from_pointee(snap));
        let (drain, _held) = tokio::sync::mpsc::channel(1);
        let ctx = Arc::new(ConnCtx::new("web".into(), ([127, 0, 0, 1], 9).into(), false, drain));
        let req = http::Request::new(ClientBody::Empty);
        let request = std::mem::size_of_val(&req);
        let fut = serve_request(&current, &ctx, req, None);
        let size = std::mem::size_of_val(&*fut);
        assert!(size < 2048 && size < 8 * request, "{size} bytes (a request is {request})");
    }

    /// An idle keep-alive connection costs its task, which is as large as the connection's
    /// future in its largest state: the wait for the next head when the rest is boxed. The
    /// task adds ~110 bytes and is allocated in 128-byte steps: `Conn::serve` as an
    /// `async fn` was 864 bytes (the connection twice: its argument and the local it moved
    /// into), its task 1,024; at 528 bytes or less the task takes 640 (docs/performance.md,
    /// idle connections).
    #[tokio::test]
    async fn an_idle_connections_task_holds_the_connection_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await;
        let (stream, _) = listener.accept().await.unwrap();
        let snap = crate::test_support::snapshot(&crate::test_support::servers("app", &["a"]));
        let settings = Arc::clone(&snap.listeners[0].conn);
        let current = Arc::new(ArcSwap::from_pointee(snap));
        let (_drain_tx, drain) = watch::channel(false);
        let (token, _held) = tokio::sync::mpsc::channel(1);
        let ctx =
            Arc::new(ConnCtx::new("web".into(), ([127, 0, 0, 1], 9).into(), false, token.clone()));
        let serve = Serve { current, ctx, settings, drain, token };
        let mut conn = Conn::new(Prefixed::new(bytes::Bytes::new(), stream), serve, None);
        let (one, waiting) =
            (std::mem::size_of_val(&conn), std::mem::size_of_val(&conn.serve_h1()));
        let task = std::mem::size_of_val(&conn.serve());
        assert!(task < one + waiting + 32, "{task} bytes: the connection ({one}) held twice?");
        assert!(task <= 528, "{task} bytes (the connection {one}, its loop {waiting})");
        // The connection's context is its other allocation: with its reference counts, in
        // 160-byte blocks at most.
        let ctx = std::mem::size_of::<ConnCtx>();
        assert!(ctx + 16 <= 160, "the connection's context is {ctx} bytes");
    }

    /// While a request shares the connection's buffer, a read that finds nothing keeps it
    /// (lent to another connection, it would only make that one allocate); once the
    /// request is over, the same read gives it back.
    #[test]
    fn a_buffer_shared_with_a_request_stays_with_its_connection() {
        let (mut io, _peer) = tokio::io::duplex(64);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut rbuf = buffers::lend();
        rbuf.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let head = rbuf.split().freeze();
        assert!(poll_read(&mut io, &mut rbuf, &mut cx).is_pending());
        assert!(rbuf.capacity() > 0, "kept while the request holds its head");
        drop(head);
        assert!(poll_read(&mut io, &mut rbuf, &mut cx).is_pending());
        assert_eq!(rbuf.capacity(), 0, "given back once the request is gone");
    }
}
