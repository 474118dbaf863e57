//! An upstream whose answers take a time the test can change while it runs: a server that
//! slows down and recovers, for response-time balancing.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderValue, StatusCode};
use tokio::net::TcpStream;

use super::{ANY_LOCAL_PORT, Behaviour, Counters, Server, serve_http, text_response};

/// Behaviour of a [`DelayServer`]: every request waits the current delay, then gets `200`
/// with `x-server: <name>`.
#[derive(Debug)]
pub struct Delay {
    name: HeaderValue,
    delay_us: AtomicU64,
}

/// An HTTP/1.1 + HTTP/2 server answering after an adjustable delay.
pub type DelayServer = Server<Delay>;

// === impl DelayServer ===

impl Server<Delay> {
    /// Starts a server named `name` answering after `delay`, on `127.0.0.1:0`.
    pub fn start(name: &str, delay: Duration) -> io::Result<Self> {
        Self::start_on(name, delay, ANY_LOCAL_PORT)
    }

    /// Starts a server named `name` answering after `delay`, on `addr`.
    pub fn start_on(name: &str, delay: Duration, addr: SocketAddr) -> io::Result<Self> {
        let name = HeaderValue::from_str(name)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let delay_us = AtomicU64::new(delay.as_micros() as u64);
        Self::start_with(Delay { name, delay_us }, addr)
    }

    /// Changes the delay of every request from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.behaviour().delay_us.store(delay.as_micros() as u64, Ordering::Relaxed);
    }

    /// The server's name (its `x-server` header).
    pub fn name(&self) -> &str {
        self.behaviour().name.to_str().unwrap_or_default()
    }
}

// === impl Delay ===

impl Behaviour for Delay {
    async fn serve(self: Arc<Self>, stream: TcpStream, counters: Arc<Counters>) {
        serve_http(stream, move |_request| {
            counters.record_request();
            let this = Arc::clone(&self);
            async move {
                let wait = Duration::from_micros(this.delay_us.load(Ordering::Relaxed));
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                let mut r = text_response(StatusCode::OK, "ok\n");
                r.headers_mut().insert("x-server", this.name.clone());
                r
            }
        })
        .await;
    }
}
