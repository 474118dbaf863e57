//! `mode = "tcp"` listeners: each admitted connection (limits, PROXY header) is relayed as
//! bytes to a server of the listener's `default_backend`.
//!
//! The server is chosen as for an HTTP request ([`select::choose`], [`select::admit`]), with
//! `client_ip` affinity read from and recorded in the backend's stick table. A connect that
//! fails or times out (`timeouts.connect`) is counted against the server's passive health
//! and the next server is tried: nothing has been sent yet, so every server may be tried.
//! Then bytes flow both ways with half-close kept (`copy_bidirectional` shuts a side's write
//! half down when the other side's reads end) until both sides are done, nothing moved for
//! the listener's `timeouts.idle`, or the listener's drain signal is dropped (its grace
//! period is over). A reload does not touch the connection: once connected it holds no
//! snapshot, only the server's in-flight guard (so `least_conn` sees it) and its slot.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::HeaderMap;
use tether_core::server::InFlightGuard;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};

use super::DrainToken;
use super::accept::Prefixed;
use super::connection::ActivityIo;
use crate::health;
use crate::proxy::affinity::{self, Outcome, Pin};
use crate::proxy::select::{self, Tried};
use crate::snapshot::{BackendView, ConnSettings, Snapshot};

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

impl TcpConn {
    /// Connects to a server of the default backend and relays until the connection ends.
    pub async fn serve(self, io: Prefixed<TcpStream>) {
        let started = Instant::now();
        let snap = self.current.load_full();
        let log = snap.config.access_log;
        let listener = &*self.settings.name;
        let Some(backend) = snap
            .listener(listener)
            .and_then(|l| l.default_backend)
            .and_then(|b| snap.backends.get(b))
        else {
            return;
        };
        let Some(up) = connect(backend, self.client).await else {
            if log {
                tracing::info!(target: "tether::access", listener, client = %self.client,
                    backend = %backend.name, end = "no_server", "tcp");
            }
            return;
        };
        drop(snap); // A long connection must not keep an old configuration alive.
        let (bytes_in, bytes_out, end) = self.relay(io, up.stream).await;
        if log {
            let affinity = up.affinity.map_or("none", Outcome::as_str);
            tracing::info!(target: "tether::access", listener, client = %self.client,
                backend = %up.backend, server = %up.server, affinity, bytes_in, bytes_out,
                duration_ms = started.elapsed().as_millis() as u64, end = ?end, "tcp");
        }
        drop(self.token);
    }

    /// Copies both ways until done, idle for `timeouts.idle`, or cut by the drain.
    async fn relay(&self, io: Prefixed<TcpStream>, mut server: TcpStream) -> (u64, u64, End) {
        let epoch = Instant::now();
        let last = Arc::new(AtomicU64::new(0));
        let mut client = ActivityIo::new(io, epoch, Arc::clone(&last));
        let idle = self.settings.idle_timeout;
        let idle_watch = async {
            loop {
                let since = Duration::from_millis(last.load(Ordering::Relaxed));
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
        let copied = tokio::select! {
            r = tokio::io::copy_bidirectional(&mut client, &mut server) => r,
            () = idle_watch => return (0, 0, End::Idle),
            () = cut => return (0, 0, End::Drained),
        };
        match copied {
            Ok((from_client, from_server)) => (from_client, from_server, End::Closed),
            Err(_) => (0, 0, End::Error),
        }
    }
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
    let mut tried = Tried::default();
    let tries = backend.servers.len().min(MAX_TRIES);
    while tried.len() < tries {
        let pick = select::choose(backend, pin.as_ref(), &tried, None).ok()?;
        let slot = select::admit(backend, pick).await.ok()?;
        tried.push(pick.server);
        let server = &backend.servers[pick.server];
        let in_flight = server.state.begin();
        let addr = server.authority.as_str();
        match tokio::time::timeout(backend.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                health::observe(backend, pick.server, true);
                let affinity = pin.as_ref().map(|p| record(backend, p, pick.server, now));
                return Some(Upstream {
                    stream,
                    backend: Arc::clone(&backend.name),
                    server: Arc::clone(server.state.name_arc()),
                    affinity,
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
