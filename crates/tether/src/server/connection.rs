//! One HTTP/2 client connection (hyper's server): idle timeout and graceful close. HTTP/1.1
//! connections are Tether's own loop (`h1`), which keeps its own time.
//!
//! hyper-util's `GracefulShutdown` covers shutdown but not idleness, so each HTTP/2
//! connection task here waits on three things at once: the connection itself, its
//! listener's drain signal (a shutdown, or a reload that removed the listener), and an idle timer fed by [`ActivityIo`], which stamps every
//! read and write. Either of the last two asks the connection to close *gracefully*: GOAWAY,
//! and open streams end. So an idle timeout shorter than a slow server's response never cuts
//! a request short.
//!
//! Every task holds a [`DrainToken`]; the drain completes when all of them are dropped. The
//! drain signal's sender dropped after the drain began (a listener removed by a reload, its
//! grace period over) cuts the connection.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body::{Body, Frame, SizeHint};
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, mpsc, watch};

/// Held by every open connection; the drain waits until all are dropped.
pub type DrainToken = mpsc::Sender<()>;

/// A socket that records when it last moved a byte (HTTP/2 connections: their idle timer).
pub struct ActivityIo<T> {
    inner: T,
    epoch: Instant,
    last_ms: Arc<AtomicU64>,
}

impl<T> ActivityIo<T> {
    /// Wraps `inner`; `last_ms` receives milliseconds since `epoch` of the last activity.
    pub fn new(inner: T, epoch: Instant, last_ms: Arc<AtomicU64>) -> Self {
        Self { inner, epoch, last_ms }
    }

    fn touch(&self) {
        self.last_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ActivityIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ActivityIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A client may cancel this many of its HTTP/2 streams before their answers, on one
/// connection, before Tether looks at the share it cancels.
pub const MIN_PREMATURE_RESETS: u64 = 100;

/// The requests of one connection: how many are in progress (a connection closed for
/// idleness or for never sending a request is dropped once it has none and stays silent, see
/// [`drive`]), and, on HTTP/2, how many streams the client cancelled before their answers.
///
/// A *paced* rapid reset (CVE-2023-44487) — each stream accepted before it is cancelled, so
/// h2's pending-accept limit never sees it — costs an upstream request per stream while the
/// client pays a frame. Once at least [`MIN_PREMATURE_RESETS`] streams were cancelled early
/// and they are more than half of all, [`drive`] closes the connection, as Envoy's
/// premature-reset check does.
#[derive(Default)]
pub struct Requests {
    started: AtomicU64,
    active: AtomicU64,
    premature: AtomicU64,
    abusive: Notify,
}

impl Requests {
    /// Counts a new request (an HTTP/2 stream when `h2`); the watch ends it when dropped,
    /// as premature if that happens before [`RequestWatch::answered`] on HTTP/2.
    pub fn start(self: &Arc<Self>, h2: bool) -> RequestWatch {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        RequestWatch { requests: Arc::clone(self), h2, answered: false }
    }

    /// Requests whose response is not sent whole yet (its watch is alive).
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }
}

/// One request, watched until its response is sent whole (see [`Watched`]).
pub struct RequestWatch {
    requests: Arc<Requests>,
    h2: bool,
    answered: bool,
}

impl RequestWatch {
    /// The response head is ready: whatever happens to the stream now is not premature.
    /// The request stays in progress until the watch is dropped.
    pub fn answered(&mut self) {
        self.answered = true;
    }
}

/// A response body that keeps its request in progress until hyper has taken it whole (or the
/// stream was reset): a closing connection is not dropped while a body is still on its way,
/// however long it pauses.
pub struct Watched<B> {
    body: B,
    _watch: RequestWatch,
}

impl<B> Watched<B> {
    /// `body`, holding `watch` until it is dropped.
    pub fn new(body: B, watch: RequestWatch) -> Self {
        Self { body, _watch: watch }
    }
}

impl<B: Body + Unpin> Body for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for RequestWatch {
    fn drop(&mut self) {
        let r = &self.requests;
        r.active.fetch_sub(1, Ordering::Relaxed);
        if self.answered || !self.h2 {
            return;
        }
        let premature = r.premature.fetch_add(1, Ordering::Relaxed) + 1;
        if premature >= MIN_PREMATURE_RESETS && premature * 2 > r.started.load(Ordering::Relaxed) {
            r.abusive.notify_one();
        }
    }
}

/// Drives `conn` until it ends, closing it gracefully on drain, after `idle` without a
/// byte moving, or when no request has started within `first_request` (`timeouts.header`:
/// hyper's own header timeout starts only once HTTP/1 has been recognised; before that — no
/// byte yet, a TLS session with nothing in it, a partial HTTP/2 preface — only this bounds
/// the wait).
///
/// A graceful HTTP/2 close waits for the client to answer a PING before its final GOAWAY,
/// so a client that never answers would keep the connection forever: after an idle or
/// no-request close, a connection with no request in progress that stays silent for the
/// shorter of `idle` and the header timeout is dropped (`None`). When `requests` finds the
/// client cancelling most of its HTTP/2 streams, `on_abuse` is called and the connection is
/// dropped at once, and so is a closing connection whose drain signal's sender goes away
/// (its listener removed by a reload, the grace period over). `last_ms` is the connection's
/// [`ActivityIo`] stamp.
#[allow(clippy::too_many_arguments)]
pub async fn drive<C: GracefulConnection>(
    conn: C,
    mut drain: watch::Receiver<bool>,
    idle: Duration,
    epoch: Instant,
    last_ms: Arc<AtomicU64>,
    first_request: Duration,
    requests: Arc<Requests>,
    on_abuse: impl FnOnce(),
    _token: DrainToken,
) -> Option<C::Output> {
    let mut conn = std::pin::pin!(conn);
    let mut closing = *drain.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    let first_deadline = tokio::time::sleep(first_request);
    tokio::pin!(first_deadline);
    let mut first_checked = false;
    // Often enough to notice both the idle time and the grace after a quiet close.
    let check_every = (idle.min(first_request) / 4).max(Duration::from_millis(50));
    let mut tick = tokio::time::interval(check_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let now_ms = || epoch.elapsed().as_millis() as u64;
    let silent_ms = || now_ms().saturating_sub(last_ms.load(Ordering::Relaxed));
    // Set when Tether itself closed the connection (idle, no request): then silence with
    // nothing in progress for this long drops it.
    let mut quiet_close: Option<u64> = None;
    let grace_ms = idle.min(first_request).as_millis() as u64;
    loop {
        tokio::select! {
            // The connection first: frames a stream just queued are flushed before a tick
            // can find the connection quiet and drop it.
            biased;
            out = conn.as_mut() => return Some(out),
            _ = &mut first_deadline, if !closing && !first_checked => {
                first_checked = true;
                if requests.started.load(Ordering::Relaxed) == 0 {
                    closing = true;
                    quiet_close = Some(now_ms());
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = requests.abusive.notified() => {
                on_abuse();
                return None;
            }
            changed = drain.changed() => {
                if closing && changed.is_err() {
                    // The drain signal's sender is gone while closing: the listener abandoned
                    // its connections (removed by a reload, its grace period over).
                    return None;
                }
                if !closing {
                    // A drain, or the sender gone: finish what is in progress either way.
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = tick.tick(), if !closing || quiet_close.is_some() => {
                if let Some(since) = quiet_close {
                    let unanswered = now_ms().saturating_sub(since) >= grace_ms;
                    if unanswered && silent_ms() >= grace_ms && requests.active() == 0 {
                        return None;
                    }
                } else if silent_ms() >= idle.as_millis() as u64 {
                    closing = true;
                    quiet_close = Some(now_ms());
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    fn flagged(streams: &Requests) -> bool {
        streams.abusive.notified().now_or_never().is_some()
    }

    #[test]
    fn most_streams_cancelled_early_flag_the_connection_once_past_the_minimum() {
        let streams = Arc::new(Requests::default());
        // A busy, well-behaved connection that cancels some streams (a browser navigating
        // away) is never flagged: 150 answered, 149 cancelled.
        for _ in 0..150 {
            streams.start(true).answered();
        }
        for _ in 0..149 {
            drop(streams.start(true));
        }
        assert!(!flagged(&streams), "149 of 299 cancelled is not most");
        drop(streams.start(true));
        assert!(!flagged(&streams), "150 of 300 is half, not most");
        drop(streams.start(true));
        assert!(flagged(&streams), "151 of 301 is most");

        // Cancelling alone is fine below the minimum.
        let streams = Arc::new(Requests::default());
        for _ in 0..MIN_PREMATURE_RESETS - 1 {
            drop(streams.start(true));
        }
        assert!(!flagged(&streams));
        drop(streams.start(true));
        assert!(flagged(&streams));
    }
}
