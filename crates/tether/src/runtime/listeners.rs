//! The listeners of a running Tether, known by name, and how a reload changes them.
//!
//! A listener is its name: a reload that keeps a name with the same configured address keeps
//! its sockets, accept loops and connection counts (only its settings come from the new
//! snapshot). Any other listener of the new file is bound — every socket of every one,
//! before anything is published, so an address that cannot be bound fails the whole reload
//! and closes what was bound. Then the listeners that are gone (or moved to another
//! address) are closed: their accept loops end and their ports close at once, and their
//! connections drain as in a shutdown — requests finish, `Connection: close`, GOAWAY — for
//! up to the new `grace_period`, after which what is left is cut. The new snapshot is
//! published, and only then do the new listeners start accepting (so each connection finds
//! its listener in the snapshot).
//!
//! Each listener has its own drain signal and [`DrainToken`] channel: closing one drains
//! only its connections, and a shutdown waits for every listener's, those still closing
//! included. The cut is the signal's sender and the tokens' receiver dropped: a request in
//! progress, an HTTP/2 connection still closing and a tunnel each watch one of them, so an
//! idle connection's task carries nothing more for it.
//!
//! Because new addresses are bound before old ones close, an address cannot pass from one
//! listener to another in one reload (a rename, a swap): that is refused, naming the holder.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::Workers;
use crate::config;
use crate::server::{self, DrainToken};
use crate::snapshot::Snapshot;

/// A listener address that could not be bound.
#[derive(Debug)]
pub(super) struct BindFailure {
    pub name: String,
    pub address: SocketAddr,
    pub error: std::io::Error,
}

/// The open listeners, in the order of the configuration being served, and the drains of
/// those a reload closed.
pub(super) struct Listeners {
    open: Vec<Open>,
    /// Drains of listeners closed by reloads; each ends when its connections are gone or
    /// its grace period is over.
    closing: JoinSet<()>,
    /// The worker runtimes, each accepting on its own socket of every listener; empty: the
    /// current runtime accepts.
    workers: Vec<Handle>,
    current: Arc<ArcSwap<Snapshot>>,
    /// Numbers the listening addresses ([`server::listener_conns`]).
    serial: u64,
    /// Names and bound addresses of `open`, for [`super::Tether::addresses`].
    addresses: Vec<(String, SocketAddr)>,
}

/// One open listener.
struct Open {
    name: Arc<str>,
    /// As configured (port 0 allowed): a reload with the same name and address keeps it.
    configured: SocketAddr,
    /// As bound.
    address: SocketAddr,
    /// Its accept loops, one per runtime.
    accept: JoinSet<()>,
    /// Turned true to stop accepting and drain its connections; dropped, it cuts those still
    /// open.
    drain: watch::Sender<bool>,
    /// Cloned into every accept loop and connection.
    token: DrainToken,
    /// Reports closed when every token is dropped: the listener's connections are gone.
    /// Dropping it, with `drain`, cuts the connections still open.
    drained: mpsc::Receiver<()>,
}

/// A listener's sockets, bound and listening, before its accept loops start: dropping it
/// closes them.
pub(super) struct Bound {
    name: Arc<str>,
    configured: SocketAddr,
    address: SocketAddr,
    /// Per runtime: the worker's runtime (`None`: the current one) and its socket, made in
    /// that runtime's context.
    sockets: Vec<(Option<Handle>, TcpListener)>,
}

impl Listeners {
    /// No listener yet; accept loops will run on `workers` (else on the current runtime)
    /// and serve the snapshots published in `current`.
    pub fn new(workers: Option<&Workers>, current: Arc<ArcSwap<Snapshot>>) -> Self {
        let workers = workers.map(|w| w.handles.clone()).unwrap_or_default();
        let (open, closing, addresses) = (Vec::new(), JoinSet::new(), Vec::new());
        Self { open, closing, workers, current, serial: 0, addresses }
    }

    /// Binds and starts every listener of the configuration Tether starts with.
    pub fn open_all(&mut self, listeners: &[config::Listener]) -> Result<(), BindFailure> {
        for l in listeners {
            let bound = self.bind(l)?;
            self.start(bound);
        }
        self.index(listeners);
        Ok(())
    }

    /// The first step of a reload to `listeners`: binds every listener that is not open
    /// with the same name and address. On any failure what was bound is closed again (the
    /// sockets are dropped) and nothing changed.
    pub fn bind_new(&self, listeners: &[config::Listener]) -> Result<Vec<Bound>, BindFailure> {
        let mut bound = Vec::new();
        for l in listeners.iter().filter(|l| !self.keeps(l)) {
            if let Some(why) = self.holder(l, listeners) {
                let error = std::io::Error::new(std::io::ErrorKind::AddrInUse, why);
                return Err(BindFailure { name: l.name.clone(), address: l.address, error });
            }
            bound.push(self.bind(l)?);
        }
        Ok(bound)
    }

    /// The second step, which cannot fail: closes the open listeners `listeners` does not
    /// keep. Their ports close as their accept loops end; their connections drain for up to
    /// `grace`.
    pub fn close_removed(&mut self, listeners: &[config::Listener], grace: Duration) {
        let (kept, gone) = std::mem::take(&mut self.open)
            .into_iter()
            .partition(|o| listeners.iter().any(|l| o.is(l)));
        self.open = kept;
        for o in gone {
            self.closing.spawn(o.close(grace));
        }
        // Drains that ended are joined here, so the set does not grow across reloads.
        while self.closing.try_join_next().is_some() {}
    }

    /// The last step, once the snapshot naming them is published: `bound` starts accepting,
    /// and the open listeners take the order of `listeners`.
    pub fn start_bound(&mut self, bound: Vec<Bound>, listeners: &[config::Listener]) {
        for b in bound {
            self.start(b);
        }
        self.index(listeners);
    }

    /// Puts the open listeners in the order of `listeners`, and notes their addresses.
    fn index(&mut self, listeners: &[config::Listener]) {
        let position = |o: &Open| listeners.iter().position(|l| o.is(l));
        self.open.sort_by_key(position);
        self.addresses = self.open.iter().map(|o| (o.name.to_string(), o.address)).collect();
    }

    /// The open listeners' names and bound addresses, in config order.
    pub fn addresses(&self) -> &[(String, SocketAddr)] {
        &self.addresses
    }

    /// Shutdown: every listener stops accepting (its ports closed when this returns) and
    /// its connections start draining.
    pub async fn stop_accepting(&mut self) {
        for o in &self.open {
            let _ = o.drain.send(true);
        }
        for o in &mut self.open {
            while o.accept.join_next().await.is_some() {}
        }
    }

    /// Shutdown, after [`Listeners::stop_accepting`]: returns once every connection is gone,
    /// those of listeners still closing after a reload included.
    pub async fn drained(self) {
        let Self { open, mut closing, .. } = self;
        // The drain signals stay until the end: dropping one would cut its connections.
        let mut signals = Vec::with_capacity(open.len());
        let mut receivers = Vec::with_capacity(open.len());
        // The listeners' own tokens are dropped here, with the rest of each `Open`.
        for Open { drain, drained, .. } in open {
            signals.push(drain);
            receivers.push(drained);
        }
        for mut drained in receivers {
            // `None` once every token is dropped; nothing is ever sent.
            let _ = drained.recv().await;
        }
        while closing.join_next().await.is_some() {}
        drop(signals);
    }

    /// Whether `l` is open already, with this name and configured address.
    fn keeps(&self, l: &config::Listener) -> bool {
        self.open.iter().any(|o| o.is(l))
    }

    /// Why `l`'s address is not free for a reload to `listeners`, when an open listener
    /// holds it: one the reload closes (it is closed only after every new address is bound),
    /// or one that stays on exactly that address (binding it would fail, or, with
    /// `SO_REUSEPORT`, share the port with it).
    fn holder(&self, l: &config::Listener, listeners: &[config::Listener]) -> Option<String> {
        if l.address.port() == 0 {
            return None;
        }
        let overlaps = |a: SocketAddr| {
            a.port() == l.address.port()
                && (a.ip() == l.address.ip()
                    || a.ip().is_unspecified()
                    || l.address.ip().is_unspecified())
        };
        let stays = |o: &Open| listeners.iter().any(|n| o.is(n));
        let o = self
            .open
            .iter()
            .find(|o| if stays(o) { o.address == l.address } else { overlaps(o.address) })?;
        Some(match stays(o) {
            true => format!("listener {:?} is bound to it", o.name),
            false => format!(
                "listener {:?} holds it until this reload closes it; move an address from one \
                 listener to another in two reloads",
                o.name
            ),
        })
    }

    /// Binds `l`: one socket per runtime, each listening in its runtime's context, all on
    /// the same address (port 0: the port the first one got; `SO_REUSEPORT` with workers).
    fn bind(&self, l: &config::Listener) -> Result<Bound, BindFailure> {
        let fail = |error| BindFailure { name: l.name.clone(), address: l.address, error };
        let runtimes: Vec<Option<Handle>> = match self.workers.is_empty() {
            true => vec![None],
            false => self.workers.iter().cloned().map(Some).collect(),
        };
        let mut address = l.address;
        let mut sockets = Vec::with_capacity(runtimes.len());
        for runtime in runtimes {
            let socket = server::bind(address, runtime.is_some()).map_err(fail)?;
            address = socket.local_addr().map_err(fail)?;
            // Listening registers the socket with the I/O driver of the runtime it is made in.
            let listener = match &runtime {
                Some(rt) => {
                    let _in_worker = rt.enter();
                    server::listen(socket)
                }
                None => server::listen(socket),
            };
            sockets.push((runtime, listener.map_err(fail)?));
        }
        let (name, configured) = (l.name.as_str().into(), l.address);
        Ok(Bound { name, configured, address, sockets })
    }

    /// Starts the accept loops of `bound`, one per socket, sharing the listener's
    /// connection count and accept-failure throttle.
    fn start(&mut self, bound: Bound) {
        let Bound { name, configured, address, sockets } = bound;
        self.serial += 1;
        let (conns, failures) = (server::listener_conns(self.serial), server::listener_failures());
        let (drain, drain_rx) = watch::channel(false);
        let (token, drained) = mpsc::channel(1);
        let mut accept = JoinSet::new();
        for (runtime, listener) in sockets {
            let on = server::AcceptOn {
                runtime: runtime.as_ref(),
                conns: Arc::clone(&conns),
                failures: Arc::clone(&failures),
            };
            let stop = (drain_rx.clone(), token.clone());
            let current = Arc::clone(&self.current);
            server::spawn_acceptor(&mut accept, Arc::clone(&name), listener, on, current, stop);
        }
        tracing::info!(listener = %name, address = %address, "listener bound");
        self.open.push(Open { name, configured, address, accept, drain, token, drained });
    }
}

impl Open {
    /// Whether `l` names this listener at this address.
    fn is(&self, l: &config::Listener) -> bool {
        *self.name == *l.name && self.configured == l.address
    }

    /// Closes the listener (a reload removed or moved it): its accept loops end, closing
    /// its ports; its connections finish their requests and close, and those still open
    /// after `grace` are cut (`server::connection::until_abandoned`).
    async fn close(self, grace: Duration) {
        let Open { name, address, mut accept, drain, token, mut drained, .. } = self;
        let _ = drain.send(true);
        drop(token);
        while accept.join_next().await.is_some() {}
        tracing::info!(listener = %name, address = %address, "listener closed; its connections drain");
        match tokio::time::timeout(grace, drained.recv()).await {
            Ok(_) => tracing::info!(listener = %name, address = %address, "listener drained"),
            Err(_) => tracing::warn!(
                listener = %name,
                address = %address,
                grace_period = ?grace,
                "listener closed: connections still open after the grace period were cut"
            ),
        }
        // Dropping `drain` and `drained` here cuts what is left: requests in progress and
        // HTTP/2 connections still closing see the drain signal's sender gone, tunnels their
        // tokens' channel closed.
    }
}
