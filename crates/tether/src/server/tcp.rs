//! `mode = "tcp"` listeners: each admitted connection (limits, PROXY header) is relayed as
//! bytes to a server of the listener's `default_backend`, or, when the listener has SNI
//! routes, of the backend the server name of its TLS ClientHello routes to ([`hello`]: the
//! hello is read within `timeouts.header`, not answered, and replayed to the server).
//!
//! The server is chosen as for an HTTP request ([`select::choose`], [`select::admit`]), with
//! `client_ip` affinity read from and recorded in the backend's stick table. A connect that
//! fails or times out (`timeouts.connect`) is counted against the server's passive health
//! and the next server is tried: nothing has been sent yet, so every server may be tried.
//! Then bytes flow both ways with half-close kept (a side's write half is shut down when the
//! other side's reads end) until both sides are done, nothing moved for
//! the listener's `timeouts.idle`, or the listener's drain signal is dropped (its grace
//! period is over). A reload does not touch the connection: once connected it holds no
//! snapshot, only the server's in-flight guard (so `least_conn` sees it) and its slot.
//! A backend's `send_proxy` puts a PROXY protocol header first ([`io::proxy_header`]); the
//! bytes are relayed and counted by [`pump`], which holds no buffer while a connection is idle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::HeaderMap;
use tether_core::conns::ConnSlot;
use tether_core::server::InFlightGuard;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};

use super::DrainToken;
use super::accept::Prefixed;
use crate::config::HashKey;
use crate::health;
use crate::metrics::{ConnRefusal, TcpMetrics};
use crate::proxy::affinity::{self, Outcome, Pin};
use crate::proxy::select::{self, Tried};
use crate::snapshot::{BackendView, ConnSettings, Snapshot};
use crate::upstream::stream::connect_tcp;

mod hello;
mod io;
mod pump;

/// Most servers one connection tries (the size of [`Tried`]).
const MAX_TRIES: usize = 10;

/// One accepted connection of a TCP listener.
pub(super) struct TcpConn {
    pub current: Arc<ArcSwap<Snapshot>>,
    pub settings: Arc<ConnSettings>,
    pub client: SocketAddr,
    pub drain: watch::Receiver<bool>,
    pub token: DrainToken,
}

/// A connected server, and what keeps it counted while the connection lives.
struct Upstream {
    stream: TcpStream,
    backend: Arc<str>,
    server: Arc<str>,
    affinity: Option<Outcome>,
    metrics: Option<TcpMetrics>,
    _in_flight: InFlightGuard,
    _slot: Option<OwnedSemaphorePermit>,
}

/// How a relayed connection ended (the access log's `end`).
#[derive(Debug, Clone, Copy)]
enum End {
    /// Both sides closed.
    Closed,
    /// An I/O error on either side.
    Error,
    /// Nothing moved for `timeouts.idle`.
    Idle,
    /// Cut at the end of a drain's grace period.
    Drained,
}

impl End {
    /// The access log's `end`.
    fn as_str(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Error => "error",
            End::Idle => "idle",
            End::Drained => "drained",
        }
    }
}

impl TcpConn {
    /// Routes the connection (by SNI when the listener has SNI routes), connects to a server
    /// of the backend and relays until the connection ends; `slot` (its place in the
    /// listener's limits) is held until then.
    ///
    /// The connection's task is this future (as large as its largest state, idle or not): an
    /// `async` block, not an `async fn`, which would keep its arguments twice
    /// (rust-lang/rust#62958).
    #[expect(clippy::manual_async_fn, reason = "an async fn stores its arguments twice")]
    pub fn serve(
        self,
        mut io: Prefixed<TcpStream>,
        slot: Option<ConnSlot>,
    ) -> impl Future<Output = ()> + Send + 'static {
        async move {
            let started = Instant::now();
            let snap = self.current.load_full();
            let Some(listener) = snap.listener(&self.settings.name) else { return };
            let log = |end: &str, backend: Option<&str>| {
                if snap.config.access_log {
                    tracing::info!(target: "tether::access", listener = %listener.name,
                        client = %self.client, backend = backend.unwrap_or("-"), end, "tcp");
                }
            };
            let (hello, backend) = if listener.sni_routes.is_empty() {
                (Vec::new(), listener.default_backend)
            } else {
                match hello::read_hello(&mut io, self.settings.header_timeout).await {
                    Ok((bytes, sni)) => {
                        let backend = hello::route(listener, sni.as_deref());
                        (bytes, backend)
                    }
                    Err(bad) => {
                        if let hello::BadHello::Malformed(why) = bad {
                            tracing::debug!(client = %self.client, listener = %listener.name, why, "not a TLS ClientHello: connection closed");
                        }
                        self.settings.metrics.connection_refused(ConnRefusal::ClientHello);
                        return log(bad.as_str(), None);
                    }
                }
            };
            let Some(backend) = backend.and_then(|b| snap.backends.get(b)) else {
                return log("no_route", None);
            };
            let Some(mut up) = connect(backend, self.client).await else {
                return log("no_server", Some(&backend.name));
            };
            let (rest, mut client) = io.into_parts();
            let tally = pump::Tally::new(up.metrics.take().map(|m| {
                m.connections.inc();
                (m.bytes_in, m.bytes_out)
            }));
            if let Err(e) = preamble(backend, &self, &client, &mut up.stream, [&hello, &rest]).await
            {
                tracing::debug!(client = %self.client, server = %up.server, error = %e, "tcp: writing to the server failed");
                return log("error", Some(&backend.name));
            }
            tally.moved(true, (hello.len() + rest.len()) as u64);
            let access_log = snap.config.access_log;
            drop(snap); // A long connection must not keep an old configuration alive.
            let end = self.relay(&mut client, &mut up.stream, &tally).await;
            if access_log {
                let affinity = up.affinity.map_or("none", Outcome::as_str);
                let bytes_in = tally.bytes_in.load(Ordering::Relaxed);
                let bytes_out = tally.bytes_out.load(Ordering::Relaxed);
                tracing::info!(target: "tether::access", listener = %self.settings.name,
                    client = %self.client, backend = %up.backend, server = %up.server, affinity,
                    bytes_in, bytes_out, duration_ms = started.elapsed().as_millis() as u64,
                    end = end.as_str(), "tcp");
            }
            drop(self.token);
            drop(slot);
        }
    }

    /// Relays both ways until done, idle for `timeouts.idle`, or cut by the drain; how it
    /// ended.
    async fn relay(
        &self,
        client: &mut TcpStream,
        server: &mut TcpStream,
        tally: &pump::Tally,
    ) -> End {
        let (epoch, idle) = (tally.epoch(), self.settings.idle_timeout);
        let idle_watch = async {
            loop {
                let since = Duration::from_millis(tally.last_ms.load(Ordering::Relaxed));
                let left = (since + idle).saturating_sub(epoch.elapsed());
                if left.is_zero() {
                    return;
                }
                tokio::time::sleep(left).await;
            }
        };
        // Only the sender going away (the grace period is over) cuts: a drain's start does
        // not, as a byte stream has no graceful close Tether could ask for.
        let mut drain = self.drain.clone();
        let cut = async move { while drain.changed().await.is_ok() {} };
        tokio::select! {
            r = pump::relay(client, server, tally) => if r.is_ok() { End::Closed } else { End::Error },
            () = idle_watch => End::Idle,
            () = cut => End::Drained,
        }
    }
}

/// What the server gets before the client's bytes, in one write: the PROXY header
/// (`send_proxy`), then `read` — the bytes already read from the client (a ClientHello, bytes
/// that came with a PROXY header).
async fn preamble(
    backend: &BackendView,
    conn: &TcpConn,
    client: &TcpStream,
    server: &mut TcpStream,
    read: [&[u8]; 2],
) -> std::io::Result<()> {
    let mut first = Vec::new();
    if let Some(version) = backend.send_proxy {
        let local = client.local_addr()?;
        let local = SocketAddr::new(local.ip().to_canonical(), local.port());
        first = io::proxy_header(version, conn.client, local);
    }
    for bytes in read {
        first.extend_from_slice(bytes);
    }
    if !first.is_empty() {
        server.write_all(&first).await?;
    }
    Ok(())
}

/// Chooses a server (affinity first) and connects, trying another server when a connect
/// fails; `None` when no server could be reached.
async fn connect(backend: &BackendView, client: SocketAddr) -> Option<Upstream> {
    let now = crate::clock::unix_now_u32();
    let pin = match backend.sticky.as_ref().map(|s| &s.config.mode) {
        Some(mode) if mode.uses_table() => {
            Some(affinity::read_table_pin(backend, mode, &HeaderMap::new(), client.ip(), now).await)
        }
        _ => None,
    };
    let key = (backend.hash_key == Some(HashKey::ClientIp)).then(|| select::ip_key(client.ip()));
    let mut tried = Tried::default();
    let tries = backend.servers.len().min(MAX_TRIES);
    while tried.len() < tries {
        let pick = select::choose(backend, pin.as_ref(), &tried, key).ok()?;
        let slot = select::admit(backend, pick).await.ok()?;
        tried.push(pick.server);
        let server = &backend.servers[pick.server];
        let in_flight = server.state.begin();
        let addr = server.authority.as_str();
        match tokio::time::timeout(backend.connect_timeout, connect_tcp(addr)).await {
            Ok(Ok(stream)) => {
                health::observe(backend, pick.server, true);
                let affinity = pin.as_ref().map(|p| record(backend, p, pick.server, now));
                return Some(Upstream {
                    stream,
                    backend: Arc::clone(&backend.name),
                    server: Arc::clone(server.state.name_arc()),
                    affinity,
                    metrics: server.metrics.tcp.clone(),
                    _in_flight: in_flight,
                    _slot: slot,
                });
            }
            failed => {
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "connect timed out".to_owned(),
                };
                tracing::debug!(backend = %backend.name, server = %server.state.name(), error, "tcp connect failed");
                server.state.record_error();
                health::observe(backend, pick.server, false);
            }
        }
    }
    None
}

/// Binds or re-binds the client's table key to the server that took the connection.
fn record(backend: &BackendView, pin: &Pin, served: usize, now: u32) -> Outcome {
    let outcome = affinity::record_table(backend, pin, served, &HeaderMap::new(), now);
    backend.metrics.affinity(outcome);
    outcome
}
