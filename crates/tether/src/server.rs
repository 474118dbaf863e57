//! Listeners and client connections: the accept loop of each listener (connection limits,
//! PROXY protocol, TLS handshake), then HTTP/1.1 and HTTP/2 (prior knowledge or ALPN) on each
//! connection through hyper-util's auto builder, every request handed to [`crate::proxy`].
//! A `mode = "tcp"` listener relays its connections as bytes instead ([`tcp`]).
//!
//! Every connection task holds its listener's [`DrainToken`] and watches its listener's
//! drain signal (see [`connection`]), so a shutdown — or a reload that removes the listener
//! — sends HTTP/2 GOAWAY and `Connection: close` and lets in-flight requests finish within
//! the grace period. When the signal's sender is dropped (a removed listener whose grace
//! period is over) what is left is cut: a request in progress, an HTTP/2 connection still
//! closing. Accept loops and connections know their listener by name, never by position.
//! Starting, reloading and stopping the whole is [`crate::runtime`]'s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tether_core::conns::{ConnCounter, ConnSlot, Refused};
use tether_core::throttle::LogThrottle;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::metrics::ConnRefusal;
use crate::proxy::{self, ClientCert, ConnCtx};
use crate::snapshot::{ConnSettings, Snapshot};
use crate::upstream::body::ClientBody;

mod accept;
mod connection;
mod h1;
mod tcp;

use connection::ActivityIo;
pub use connection::DrainToken;

/// Where an accept loop runs and what it shares with the other loops of its listener.
pub struct AcceptOn<'a> {
    /// The runtime of a worker thread (thread per core), or `None`: the current runtime.
    pub runtime: Option<&'a tokio::runtime::Handle>,
    /// The listener's connection count (`limits.max_connections`, per address), shared by
    /// the accept loops of every worker.
    pub conns: Arc<ConnCounter>,
    /// The listener's accept failures (at the file-descriptor limit): one log line a second
    /// for all its accept loops.
    pub failures: Arc<LogThrottle>,
}

/// The accept-failure log throttle of a listener, for [`AcceptOn::failures`].
pub fn listener_failures() -> Arc<LogThrottle> {
    Arc::new(LogThrottle::new(Duration::from_secs(1)))
}

/// The connection count of a listening address, for [`AcceptOn::conns`]; `serial` tells it
/// from the process's other listening addresses (it seeds the per-IP hash).
pub fn listener_conns(serial: u64) -> Arc<ConnCounter> {
    ConnCounter::new(u64::from(std::process::id()) ^ serial << 32)
}

/// Starts an accept loop of listener `name` (of the snapshots published in `current`) on
/// `tasks`: each accepted connection is served in its own task, on the same runtime as the
/// loop, holding a clone of `token`, until `drain` turns true; then the loop ends and
/// `listener` is closed. `listener` must have been made in that runtime's context
/// ([`listen`]).
pub fn spawn_acceptor(
    tasks: &mut JoinSet<()>,
    name: Arc<str>,
    listener: TcpListener,
    on: AcceptOn<'_>,
    current: Arc<ArcSwap<Snapshot>>,
    (drain, token): (watch::Receiver<bool>, DrainToken),
) {
    let (conns, failures) = (on.conns, on.failures);
    let acceptor = Acceptor { name, listener, current, conns, failures, drain, token };
    match on.runtime {
        Some(rt) => tasks.spawn_on(acceptor.run(), rt),
        None => tasks.spawn(acceptor.run()),
    };
}

/// Pending connections the kernel may queue per listener (capped by `net.core.somaxconn`).
/// tokio's default backlog overflows under connection bursts, and an overflowing accept queue
/// drops SYNs, which clients retry only after a second or more.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listening socket with `SO_REUSEADDR` (restarts while old connections linger in
/// TIME_WAIT), and `SO_REUSEPORT` when several worker threads each accept from their own
/// socket on the same address (the kernel spreads new connections over them). `TCP_NODELAY`
/// is set on the listening socket: Linux gives it to every accepted connection, which saves
/// each one a system call.
pub fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    #[cfg(unix)]
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    Ok(socket)
}

/// Starts listening on a bound socket, with [`LISTEN_BACKLOG`], in the current runtime's
/// context (its I/O driver serves the listener and every connection accepted from it).
pub fn listen(socket: TcpSocket) -> std::io::Result<TcpListener> {
    socket.listen(LISTEN_BACKLOG)
}

/// One listener's accept loop.
struct Acceptor {
    name: Arc<str>,
    listener: TcpListener,
    current: Arc<ArcSwap<Snapshot>>,
    conns: Arc<ConnCounter>,
    failures: Arc<LogThrottle>,
    drain: watch::Receiver<bool>,
    token: DrainToken,
}

impl Acceptor {
    async fn run(mut self) {
        // At the file-descriptor limit accept fails every time it is tried: one line a
        // second (for all the listener's loops), with the count.
        loop {
            let accepted = tokio::select! {
                a = self.listener.accept() => a,
                _ = self.drain.changed() => return,
            };
            match accepted {
                // A dual-stack listener (`[::]:PORT`) sees IPv4 clients as `::ffff:a.b.c.d`:
                // name them as IPv4, so headers, trusted_proxies, client_ip affinity and
                // limits treat them as the IPv4 clients they are.
                Ok((stream, peer)) => {
                    let unlogged = self.failures.take_unlogged();
                    if unlogged > 0 {
                        tracing::warn!(failures = unlogged, "accept failed (until now)");
                    }
                    self.serve(stream, SocketAddr::new(peer.ip().to_canonical(), peer.port()))
                }
                Err(e) => {
                    if let Some(n) = self.failures.event(std::time::Instant::now()) {
                        let listener = &*self.name;
                        tracing::warn!(listener, error = %e, failures = n, "accept failed");
                    }
                    // EMFILE and friends: back off briefly instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Admits the connection (connection limits) and starts serving it; on a PROXY-protocol
    /// listener, a task reads the header first (the client is known only then).
    fn serve(&self, stream: tokio::net::TcpStream, peer: SocketAddr) {
        // `None`: a reload removed the listener, and this loop is about to end.
        let Some(settings) = self.current.load().listener(&self.name).map(|l| Arc::clone(&l.conn))
        else {
            return;
        };
        #[cfg(not(target_os = "linux"))]
        let _ = stream.set_nodelay(true); // Inherited from the listening socket on Linux.
        let proxy_protocol = settings.proxy_protocol;
        let accepted = Accepted {
            name: Arc::clone(&self.name),
            current: Arc::clone(&self.current),
            drain: self.drain.clone(),
            token: self.token.clone(),
            settings,
        };
        if proxy_protocol {
            tokio::spawn(accepted.after_proxy_header(stream, peer, Arc::clone(&self.conns)));
        } else if let Some(slot) = admit(&self.conns, &accepted.settings, peer) {
            accepted.start(peer, accept::Prefixed::new(bytes::Bytes::new(), stream), slot);
        }
    }
}

/// An accepted connection's share of its listener: the listener's [`ConnSettings`] as they
/// were at accept time, not the snapshot (a long keep-alive connection must not keep an old
/// configuration alive across reloads).
struct Accepted {
    name: Arc<str>,
    current: Arc<ArcSwap<Snapshot>>,
    drain: watch::Receiver<bool>,
    token: DrainToken,
    settings: Arc<ConnSettings>,
}

impl Accepted {
    /// Reads the PROXY header, admits the client it names, and starts serving.
    async fn after_proxy_header(
        self,
        mut stream: tokio::net::TcpStream,
        peer: SocketAddr,
        conns: Arc<ConnCounter>,
    ) {
        let Some((client, rest)) = proxy_header(&mut stream, &self.settings, peer).await else {
            return;
        };
        if let Some(slot) = admit(&conns, &self.settings, client) {
            self.start(client, accept::Prefixed::new(rest, stream), slot);
        }
    }

    /// Spawns what serves the connection from here on: the TCP relay, Tether's HTTP/1.1
    /// loop, or the TLS handshake and then HTTP. Each is a task of its own, which holds only
    /// what serving takes (a task is as large as its future's largest state, idle or not),
    /// and holds `slot`, the connection's place in the listener's limits.
    fn start(
        self,
        client: SocketAddr,
        io: accept::Prefixed<tokio::net::TcpStream>,
        slot: ConnSlot,
    ) {
        let Accepted { name, current, drain, token, settings } = self;
        let slot = Some(slot);
        if settings.tcp {
            tokio::spawn(tcp::TcpConn { current, settings, client, drain, token }.serve(io, slot));
            return;
        }
        let tls = settings.tls.clone();
        let ctx = Arc::new(ConnCtx::new(name, client, tls.is_some(), token.clone()));
        let serve = Serve { current, ctx, settings, drain, token };
        match tls {
            None => drop(tokio::spawn(h1::Conn::new(io, serve, slot).serve())),
            Some(config) => drop(tokio::spawn(serve_tls(serve, io, slot, config, client))),
        }
    }
}

/// The PROXY protocol header (within `timeouts.header`), from a trusted proxy only: the
/// client's address and the bytes read past the header; `None` (logged, counted) when the
/// connection must be closed.
async fn proxy_header(
    stream: &mut tokio::net::TcpStream,
    l: &ConnSettings,
    peer: SocketAddr,
) -> Option<(SocketAddr, bytes::Bytes)> {
    if !l.trusted_proxies.iter().any(|n| n.contains(&peer.ip())) {
        tracing::debug!(peer = %peer, listener = %l.name, "PROXY protocol from an untrusted address: connection closed");
        l.metrics.connection_refused(ConnRefusal::UntrustedProxy);
        return None;
    }
    match tokio::time::timeout(l.header_timeout, accept::read_proxy_header(stream)).await {
        Ok(Ok((addr, rest))) => Some((addr.unwrap_or(peer), rest)),
        Ok(Err(e)) => {
            tracing::debug!(peer = %peer, listener = %l.name, error = %e, "bad PROXY protocol header: connection closed");
            l.metrics.connection_refused(ConnRefusal::ProxyHeader);
            None
        }
        Err(_) => {
            l.metrics.connection_refused(ConnRefusal::ProxyHeader);
            None
        }
    }
}

/// The TLS handshake (within `timeouts.header`), then HTTP over it in a task of its own,
/// holding `slot`.
async fn serve_tls(
    serve: Serve,
    io: accept::Prefixed<tokio::net::TcpStream>,
    slot: Option<ConnSlot>,
    config: Arc<rustls::ServerConfig>,
    client: SocketAddr,
) {
    let settings = Arc::clone(&serve.settings);
    let l = &*settings;
    let handshake = tokio_rustls::TlsAcceptor::from(config).accept(io);
    match tokio::time::timeout(l.header_timeout, handshake).await {
        Ok(Ok(tls)) => {
            let mut serve = serve;
            if l.client_certs {
                // rustls verified it during the handshake (or there is none: "optional").
                let cert = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                    Some(der) => ClientCert::Verified(
                        crate::tls::subject(der)
                            .and_then(|s| http::HeaderValue::try_from(s).ok())
                            .map(Box::new),
                    ),
                    None => ClientCert::None,
                };
                // The connection's context is not shared yet.
                if let Some(ctx) = Arc::get_mut(&mut serve.ctx) {
                    ctx.client_cert = cert;
                }
            }
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            drop(tokio::spawn(serve.run(tls, h2, slot)));
        }
        Ok(Err(e)) => {
            // A client certificate that does not verify is worth an operator's eye (a
            // certificate made without v3 extensions, another CA, revoked); anything else
            // (scanners, old clients, no certificate at all) is routine.
            let refused_cert = e
                .get_ref()
                .and_then(|e| e.downcast_ref::<rustls::Error>())
                .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
            if refused_cert {
                tracing::info!(client = %client, listener = %l.name, error = %e, "TLS handshake failed: client certificate refused");
            } else {
                tracing::debug!(client = %client, listener = %l.name, error = %e, "TLS handshake failed");
            }
            l.metrics.connection_refused(ConnRefusal::TlsHandshake);
        }
        Err(_) => {
            tracing::debug!(client = %client, listener = %l.name, "TLS handshake timed out");
            l.metrics.connection_refused(ConnRefusal::TlsHandshake);
        }
    }
}

/// Counts a connection from `client` against the listener's limits; `None` (logged, counted)
/// when it is over one and must be closed.
fn admit(conns: &Arc<ConnCounter>, l: &ConnSettings, client: SocketAddr) -> Option<ConnSlot> {
    match conns.admit(client.ip(), l.limits.max_connections, l.limits.max_connections_per_ip) {
        Ok(slot) => Some(slot),
        Err(why) => {
            let (reason, what) = match why {
                Refused::Total => (ConnRefusal::MaxConnections, "listener at max_connections"),
                Refused::PerIp => (ConnRefusal::MaxPerIp, "client at max_connections_per_ip"),
            };
            tracing::debug!(client = %client, listener = %l.name, "{what}: connection closed");
            l.metrics.connection_refused(reason);
            None
        }
    }
}

/// HTTP on one accepted (and, where configured, decrypted) connection.
struct Serve {
    current: Arc<ArcSwap<Snapshot>>,
    ctx: Arc<ConnCtx>,
    settings: Arc<ConnSettings>,
    drain: watch::Receiver<bool>,
    token: DrainToken,
}

impl Serve {
    /// Serves the connection: HTTP/2 when TLS negotiated it, else Tether's HTTP/1.1 loop
    /// (which turns to HTTP/2 when the client's first bytes are its preface). Not an `async
    /// fn`: that would keep `io` (a TLS stream is ~1.2 KB) beside the loop that holds it
    /// too, for the connection's whole life (rust-lang/rust#62958).
    fn run<I>(self, io: I, h2: bool, slot: Option<ConnSlot>) -> impl Future<Output = ()> + Send
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        use futures_util::future::Either;
        // HTTP/2 is boxed: an HTTP/1.1 connection's task must not carry its size.
        if h2 {
            let io = accept::Prefixed::new(bytes::Bytes::new(), io);
            let served = futures_util::FutureExt::map(self.run_h2(io), move |()| drop(slot));
            return Either::Left(Box::pin(served));
        }
        Either::Right(h1::Conn::new(io, self, slot).serve())
    }

    /// HTTP/2 through hyper's server, each stream handed to the request path.
    async fn run_h2<I>(self, io: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let Serve { current, ctx, settings, drain, token } = self;
        let (idle, header_timeout) = (settings.idle_timeout, settings.header_timeout);
        let peer = ctx.peer;
        let requests = Arc::new(connection::Requests::default());
        let watched = Arc::clone(&requests);
        let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let snap = current.load_full();
            let ctx = Arc::clone(&ctx);
            let mut watch = watched.start(true);
            // Boxed for the same reason as HTTP/1.1's: every async layer keeps a copy.
            let req = Box::new(req.map(ClientBody::H2));
            async move {
                let resp = proxy::handle(&snap, &ctx, req, (None, proxy::HeadFor::Map)).await;
                watch.answered();
                Ok::<_, std::convert::Infallible>(resp.map(|b| connection::Watched::new(b, watch)))
            }
        });
        let epoch = std::time::Instant::now();
        let last = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let io = ActivityIo::new(io, epoch, Arc::clone(&last));
        let conn = settings.http.serve_connection(TokioIo::new(io), service);
        let on_abuse = || {
            tracing::warn!(
                client = %peer,
                listener = %settings.name,
                "HTTP/2 client cancelled most of its streams before their answers: connection closed"
            );
            settings.metrics.connection_refused(ConnRefusal::H2Resets);
        };
        let driven = connection::drive(
            conn,
            drain,
            idle,
            epoch,
            last,
            header_timeout,
            requests,
            on_abuse,
            token,
        );
        if let Some(Err(e)) = driven.await {
            tracing::debug!(client = %peer, error = %e, "client connection ended with an error");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections accepted from a socket made by [`bind`] have `TCP_NODELAY` without a
    /// system call of their own (Linux copies it from the listening socket).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn accepted_connections_inherit_nodelay_from_the_listener() {
        let listener = listen(bind("127.0.0.1:0".parse().unwrap(), false).unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(accepted.nodelay().unwrap(), "TCP_NODELAY not inherited");
    }
}
