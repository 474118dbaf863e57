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

    /// Admits the connection (connection limits), then in its own task: the PROXY header and
    /// the TLS handshake, when the listener has them, then HTTP (or the TCP relay) in a task
    /// that holds only what serving takes, so that an idle connection costs no more. The
    /// tasks hold the listener's [`ConnSettings`] as they were at accept time, not the
    /// snapshot (a long keep-alive connection must not keep an old configuration alive across
    /// reloads).
    fn serve(&self, stream: tokio::net::TcpStream, peer: SocketAddr) {
        // `None`: a reload removed the listener, and this loop is about to end.
        let Some(settings) = self.current.load().listener(&self.name).map(|l| Arc::clone(&l.conn))
        else {
            return;
        };
        let slot = if settings.proxy_protocol {
            // The client's address is known only after the header: count it then.
            None
        } else {
            match admit(&self.conns, &settings, peer) {
                Some(slot) => Some(slot),
                None => return,
            }
        };
        #[cfg(not(target_os = "linux"))]
        let _ = stream.set_nodelay(true); // Inherited from the listening socket on Linux.
        let (name, current, drain, token, conns) = (
            Arc::clone(&self.name),
            Arc::clone(&self.current),
            self.drain.clone(),
            self.token.clone(),
            Arc::clone(&self.conns),
        );
        if settings.tcp && !settings.proxy_protocol {
            // Nothing to read before the relay: the task is the relay itself (as for plain
            // HTTP below, an idle connection's task is no larger than its state).
            let io = accept::Prefixed::new(bytes::Bytes::new(), stream);
            tokio::spawn(
                tcp::TcpConn { current, settings, client: peer, drain, token }.serve(io, slot),
            );
            return;
        }
        if !settings.proxy_protocol && settings.tls.is_none() && !settings.tcp {
            // Nothing to read or negotiate before HTTP: the task is the HTTP/1.1 loop itself,
            // so an idle connection's task is no larger than the loop's state.
            let io = accept::Prefixed::new(bytes::Bytes::new(), stream);
            let ctx = Arc::new(ConnCtx::new(name, peer, false, token.clone()));
            let serve = Serve { current, ctx, settings, drain, token };
            tokio::spawn(h1::Conn::new(io, serve, slot).serve());
            return;
        }
        tokio::spawn(async move {
            let l = &*settings;
            let mut stream = stream;
            let mut slot = slot;
            let (client, prefix) = if l.proxy_protocol {
                // Boxed, as the paths below that most connections never take: the task of
                // an idle connection is as large as its largest state.
                let Some(found) = Box::pin(proxy_header(&mut stream, l, peer)).await else {
                    return;
                };
                slot = match admit(&conns, l, found.0) {
                    Some(s) => Some(s),
                    None => return,
                };
                found
            } else {
                (peer, bytes::Bytes::new())
            };
            // What serves the connection from here on is a task of its own, and this one
            // ends: an idle connection costs that task alone, not this one's state too.
            let io = accept::Prefixed::new(prefix, stream);
            if l.tcp {
                let settings = Arc::clone(&settings);
                tokio::spawn(
                    tcp::TcpConn { current, settings, client, drain, token }.serve(io, slot),
                );
                return;
            }
            let ctx = ConnCtx::new(name, client, l.tls.is_some(), token.clone());
            let serve = Serve {
                current,
                ctx: Arc::new(ctx),
                settings: Arc::clone(&settings),
                drain,
                token,
            };
            match &l.tls {
                None => drop(tokio::spawn(serve.run(io, false, slot))),
                // Boxed, so that plain connections do not carry the size of a TLS session in
                // their task.
                Some(config) => Box::pin(serve_tls(serve, io, slot, config, l, client)).await,
            }
        });
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
    config: &Arc<rustls::ServerConfig>,
    l: &ConnSettings,
    client: SocketAddr,
) {
    let handshake = tokio_rustls::TlsAcceptor::from(Arc::clone(config)).accept(io);
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
                let resp = proxy::handle(&snap, &ctx, req, None).await;
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
