//! An upstream that answers every request with one fixed status, e.g. a backend stuck
//! returning 503.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use http::StatusCode;
use tokio::net::TcpStream;

use super::{ANY_LOCAL_PORT, Behaviour, Counters, Server, serve_http, text_response};

/// Behaviour of a [`StatusServer`]: every request gets `status` and a short text body.
#[derive(Debug)]
pub struct Status {
    status: StatusCode,
}

/// An HTTP/1.1 + HTTP/2 server answering every request with the same status.
pub type StatusServer = Server<Status>;

// === impl StatusServer ===

impl Server<Status> {
    /// Starts a server answering `code` on `127.0.0.1:0`; fails when `code` is not a valid
    /// status (100–999).
    pub fn start(code: u16) -> io::Result<Self> {
        Self::start_on(code, ANY_LOCAL_PORT)
    }

    /// Starts a server answering `code` on `addr`.
    pub fn start_on(code: u16, addr: SocketAddr) -> io::Result<Self> {
        let status = StatusCode::from_u16(code)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Self::start_with(Status { status }, addr)
    }

    /// The status every request gets.
    pub fn status(&self) -> StatusCode {
        self.behaviour().status
    }
}

// === impl Status ===

impl Behaviour for Status {
    async fn serve(self: Arc<Self>, stream: TcpStream, counters: Arc<Counters>) {
        serve_http(stream, move |_request| {
            counters.record_request();
            let status = self.status;
            async move { text_response(status, format!("status {}\n", status.as_u16())) }
        })
        .await;
    }
}
