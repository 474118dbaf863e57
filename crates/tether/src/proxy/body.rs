//! The body returned to the client, streaming (nothing here buffers a body whole):
//! [`RespBody`] carries the request's [`InFlightGuard`] and access-log record, so the
//! request counts as in flight until its last byte has been passed on (or the client went
//! away), and the log line has the real byte count. What is sent to a server is
//! [`crate::upstream::body::ReqBody`].

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tether_core::InFlightGuard;
use tokio::sync::OwnedSemaphorePermit;

use super::log::AccessLog;
use crate::upstream::{BodyError, ResponseBody as UpstreamBody};

/// What a request holds on its server while it is served: the in-flight count and, when the
/// backend limits connections, a slot. Both are released when this is dropped — at the end
/// of the response body, or of the tunnel for an upgraded connection.
#[derive(Debug)]
pub struct Held {
    /// Counts the request as in flight.
    pub guard: InFlightGuard,
    /// The connection slot (`limits.max_connections_per_server`).
    pub permit: Option<OwnedSemaphorePermit>,
    /// The session's in-flight slot (`sticky.max_in_flight_per_session`).
    pub session: Option<tether_core::conns::ConnSlot>,
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
    Upstream(UpstreamBody),
    Full(Option<Bytes>),
}

impl RespBody {
    /// A server's streamed body, counted in flight by `guard` until it ends.
    pub fn upstream(body: UpstreamBody, guard: Held) -> Self {
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
    /// The server's header lines not yet in the response's map
    /// ([`crate::upstream::h1::ServerLines`]).
    pub fn server_lines(&self) -> Option<&crate::upstream::h1::ServerLines> {
        match &self.inner {
            Inner::Upstream(b) => b.lines(),
            Inner::Full(_) => None,
        }
    }

    /// Takes the lines [`Self::server_lines`] shows (the client's head has been written).
    pub fn take_server_lines(&mut self) -> Option<crate::upstream::h1::ServerLines> {
        match &mut self.inner {
            Inner::Upstream(b) => b.take_lines(),
            Inner::Full(_) => None,
        }
    }

    fn inner_ended(&self) -> bool {
        match &self.inner {
            Inner::Upstream(b) => b.is_end_stream(),
            Inner::Full(d) => d.is_none(),
        }
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
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
