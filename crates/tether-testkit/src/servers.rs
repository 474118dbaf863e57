//! Upstream servers for tests: real sockets on `127.0.0.1:0`, spawned in the current tokio
//! runtime.
//!
//! Every server is a [`Server<B>`]: one accept task that owns the listening socket and a
//! [`JoinSet`] of connection tasks, so stopping it closes the port *and* every open
//! connection, the way a crashed process would. What a server does with a connection is its
//! [`Behaviour`]; the type aliases ([`EchoServer`], [`HangServer`], ...) name the built-in ones.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use tether_testkit::EchoServer;
//!
//! let mut a = EchoServer::start("a")?;
//! let addr = a.addr();
//! a.stop().await; // the port now refuses connections
//! let a = EchoServer::start_on("a", addr)?; // "server came back"
//! # Ok(()) }
//! ```

mod body;
mod delay;
mod echo;
mod raw;
mod recorder;
pub mod scripted;
mod status;
mod websocket;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

pub use body::{DOWNLOAD_CHUNK_LEN, download_byte};
pub use delay::{Delay, DelayServer};
pub use echo::{Echo, EchoServer};
pub use raw::{
    CloseMidResponse, CloseMidResponseServer, GARBAGE, Garbage, GarbageServer, Hang, HangServer,
    Reset, ResetServer, TRUNCATED_RESPONSE,
};
pub use recorder::{
    EARLY_PREFIX, Malformed, RecordedConnection, RecordedRequest, Recorder, RecorderServer,
    Recording,
};
pub use status::{Status, StatusServer};
pub use websocket::{WebSocketEcho, WebSocketEchoServer};

use body::TestBody;

/// `127.0.0.1:0`: where [`Server`]s bind unless told otherwise (`start_on`).
pub const ANY_LOCAL_PORT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// Pending connections the listening socket queues before refusing more.
const LISTEN_BACKLOG: u32 = 1024;

/// Pause after a failed `accept` (e.g. out of file descriptors) instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// What a [`Server`] does with each accepted connection.
///
/// Implemented by the built-in behaviours ([`Echo`], [`Hang`], ...); tests may implement it
/// for a one-off upstream and run it with [`Server::start_with`].
pub trait Behaviour: Send + Sync + 'static {
    /// Serves one accepted connection until it ends.
    ///
    /// The future is dropped (closing `stream`) when the server stops, so it needs no
    /// shutdown logic of its own. Call [`Counters::record_request`] for every request seen.
    fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        counters: Arc<Counters>,
    ) -> impl Future<Output = ()> + Send;
}

/// What a server has seen since it was first started (kept across [`Server::restart`]).
#[derive(Debug, Default)]
pub struct Counters {
    requests: AtomicU64,
    connections: AtomicU64,
}

// === impl Counters ===

impl Counters {
    /// Counts one request (a [`Behaviour`] calls this as soon as it has a request head).
    pub fn record_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    fn record_connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }
}

/// A running (or stopped) test server with behaviour `B`.
///
/// Dropping it aborts the accept task and, with it, every connection; use [`Server::stop`]
/// when the test must know the port is closed before going on.
pub struct Server<B: Behaviour> {
    addr: SocketAddr,
    behaviour: Arc<B>,
    counters: Arc<Counters>,
    running: Option<Running>,
}

/// The accept task of a started server and the way to tell it to stop.
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

// === impl Server ===

impl<B: Behaviour> Server<B> {
    /// Binds `addr` (with `SO_REUSEADDR`, so a stopped server's port can be taken again at
    /// once) and starts serving `behaviour` in the current tokio runtime.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub fn start_with(behaviour: B, addr: SocketAddr) -> io::Result<Self> {
        let behaviour = Arc::new(behaviour);
        let counters = Arc::new(Counters::default());
        let (addr, running) = launch(&behaviour, &counters, addr)?;
        Ok(Self { addr, behaviour, counters, running: Some(running) })
    }

    /// The address the server listens on (kept after [`Server::stop`]).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the base URL of the server.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received since the server was first started.
    pub fn requests(&self) -> u64 {
        self.counters.requests()
    }

    /// TCP connections accepted since the server was first started.
    pub fn connections(&self) -> u64 {
        self.counters.connections()
    }

    /// The server's behaviour (e.g. to read an [`Echo`]'s name).
    pub fn behaviour(&self) -> &B {
        &self.behaviour
    }

    /// Whether the server is accepting connections (started and not stopped).
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Closes the listening socket and every open connection, and returns once both are
    /// closed: a connect to [`Server::addr`] afterwards is refused. Does nothing if stopped.
    pub async fn stop(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        // The accept task may already be gone only if it panicked; either way it is over.
        let _ = running.stop.send(());
        let _ = running.task.await;
    }

    /// Stops the server if it runs, then serves again on the same address with the same
    /// behaviour and counters, as a restarted upstream process would.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.stop().await;
        let (_, running) = launch(&self.behaviour, &self.counters, self.addr)?;
        self.running = Some(running);
        Ok(())
    }
}

impl<B: Behaviour> Drop for Server<B> {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            // Aborting drops the accept task's listener and JoinSet, which aborts every
            // connection task.
            running.task.abort();
        }
    }
}

impl<B: Behaviour> std::fmt::Debug for Server<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("behaviour", &std::any::type_name::<B>())
            .field("running", &self.is_running())
            .field("counters", &self.counters)
            .finish()
    }
}

/// Binds `addr` and spawns the accept task; returns the bound address.
fn launch<B: Behaviour>(
    behaviour: &Arc<B>,
    counters: &Arc<Counters>,
    addr: SocketAddr,
) -> io::Result<(SocketAddr, Running)> {
    let listener = bind(addr)?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel();
    let task =
        tokio::spawn(accept_loop(listener, Arc::clone(behaviour), Arc::clone(counters), stopped));
    Ok((addr, Running { stop, task }))
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // Lets a restarted server take its port back while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Owns the listener and every connection task; on stop, closes the listener first, then
/// aborts the connections and waits until all of them are dropped.
async fn accept_loop<B: Behaviour>(
    listener: TcpListener,
    behaviour: Arc<B>,
    counters: Arc<Counters>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    counters.record_connection();
                    let serve = Arc::clone(&behaviour).serve(stream, Arc::clone(&counters));
                    connections.spawn(serve);
                }
                Err(_) => tokio::time::sleep(ACCEPT_BACKOFF).await,
            },
        }
        // Reap finished connections so a long test doesn't accumulate them.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    connections.shutdown().await;
}

/// Serves HTTP/1.1 and HTTP/2 (told apart by the HTTP/2 preface, so prior knowledge and
/// ALPN `h2` both work) on `stream`, a TCP or TLS connection, answering with `handler`.
async fn serve_http<I, H, F>(stream: I, handler: H)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<TestBody>> + Send + 'static,
{
    let service = service_fn(move |request| {
        let response = handler(request);
        async move { Ok::<_, Infallible>(response.await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    // A connection error is the client's doing (reset, malformed request): a test server has
    // no one to report it to, and the client sees the effect anyway.
    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
}

/// A response with `status` and a short text body.
fn text_response(status: StatusCode, body: impl Into<String>) -> Response<TestBody> {
    let mut response = Response::new(TestBody::full(body.into()));
    *response.status_mut() = status;
    response
}
