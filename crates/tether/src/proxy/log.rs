//! The access log (docs/operations.md, "Logs"): one structured line per request, written
//! through `tracing` with target `tether::access`, when the response body ends, the client
//! goes away, or (status 499) the client leaves before the response head. It never contains
//! a cookie value; the path is logged without its query string, which often carries tokens.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;

/// What is known about one request, filled in as it goes.
#[derive(Debug)]
pub struct AccessLog {
    /// Listener name.
    pub listener: Arc<str>,
    /// Client address (the socket peer).
    pub client: IpAddr,
    /// Request method.
    pub method: Method,
    /// Request path (no query).
    pub path: String,
    /// Status sent to the client.
    pub status: u16,
    /// Chosen backend.
    pub backend: Option<Arc<str>>,
    /// Server that answered (or was last tried).
    pub server: Option<Arc<str>>,
    /// Affinity outcome (`hit`, `new`, ...), or `-` when the backend is not sticky.
    pub affinity: &'static str,
    /// Servers tried.
    pub attempts: u32,
    /// Time until the server's response head.
    pub upstream_time: Option<Duration>,
    /// When the request arrived.
    pub started: Instant,
    /// Response body bytes passed to the client.
    pub bytes: u64,
    /// The body ended normally.
    pub complete: bool,
    /// The server's body failed midway.
    pub body_error: bool,
    /// The verified client certificate's subject (listeners with `tls.client_ca`).
    pub client_cert: Option<http::HeaderValue>,
    /// The affinity session, as a keyed hash (never the id a cookie carries), when sticky.
    pub session: Option<u64>,
    /// The request's id (`[request_id]`).
    pub request_id: Option<http::HeaderValue>,
}

impl AccessLog {
    /// A record for a request that just arrived.
    pub fn new(listener: Arc<str>, client: IpAddr, method: Method, path: &str) -> Self {
        Self {
            listener,
            client,
            method,
            path: path.to_owned(),
            status: 0,
            backend: None,
            server: None,
            affinity: "-",
            attempts: 0,
            upstream_time: None,
            started: Instant::now(),
            bytes: 0,
            complete: false,
            body_error: false,
            client_cert: None,
            session: None,
            request_id: None,
        }
    }

    /// Writes the line.
    pub fn emit(&self) {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        tracing::info!(
            target: "tether::access",
            listener = %self.listener,
            client = %self.client,
            method = %self.method,
            path = %self.path,
            status = self.status,
            backend = self.backend.as_deref().unwrap_or("-"),
            server = self.server.as_deref().unwrap_or("-"),
            affinity = self.affinity,
            session = self.session.map(|h| format!("{h:016x}")),
            attempts = self.attempts,
            upstream_ms = self.upstream_time.map(ms),
            total_ms = ms(self.started.elapsed()),
            bytes = self.bytes,
            complete = self.complete && !self.body_error,
            client_cert = self.client_cert.as_ref().and_then(|v| v.to_str().ok()),
            request_id = self.request_id.as_ref().and_then(|v| v.to_str().ok()),
            "request"
        );
    }
}
