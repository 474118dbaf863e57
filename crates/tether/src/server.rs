//! Listeners, client connections, reload and graceful shutdown.
//!
//! [`Tether::start`] binds every listener (port 0 allowed), logs `listener bound` with the
//! real address, and serves HTTP/1.1 and HTTP/2 (prior knowledge) on each through
//! hyper-util's auto builder. Every connection task watches one drain signal (see
//! [`connection`]), so a shutdown sends HTTP/2 GOAWAY and `Connection: close` and lets
//! in-flight requests finish within the grace period.
//!
//! Reload is diff-based through the [`Registry`]: servers and backends that remain keep their
//! runtime state and pooled connections; the new [`Snapshot`] is published with one atomic
//! swap. Listeners themselves (names and addresses) cannot change on reload: that needs a
//! restart, and a reload that tries is refused with that reason while the old config serves.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tether_core::affinity::CookieKeys;
use tether_core::conns::{ConnCounter, ConnSlot, Refused};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use axum::http::StatusCode;

use crate::admin::{self, AdminContext, Command};
use crate::config::{Config, ConfigErrors, Listener};
use crate::metrics::ConnRefusal;
use crate::proxy::{self, ClientCert, ConnCtx};
use crate::snapshot::{ConnSettings, Registry, Snapshot};

mod accept;
mod connection;

use connection::{ActivityIo, DrainToken};

/// Why Tether could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener address could not be bound.
    // The OS error is in the message and deliberately not a `source`: the fatal line prints
    // the error with its sources, and would say it twice.
    #[error("listener {name:?} cannot bind {address}: {error}")]
    Bind {
        /// Listener name.
        name: String,
        /// Configured address.
        address: SocketAddr,
        /// The OS error.
        error: std::io::Error,
    },
    /// No random source for the per-process cookie key.
    #[error("cannot generate a cookie key: no system random source")]
    Random,
}

/// Why a reload was refused (the old configuration keeps serving).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// Tether was started without a file (demo).
    #[error("no configuration file to reload")]
    NoFile,
    /// The new file is invalid.
    #[error("{0}")]
    Invalid(#[from] ConfigErrors),
    /// Listeners changed.
    #[error(
        "listeners cannot change on reload (names and addresses must stay the same); restart Tether to change them"
    )]
    ListenersChanged,
}

/// A running Tether: listeners bound, serving.
pub struct Tether {
    current: Arc<ArcSwap<Snapshot>>,
    registry: Registry,
    fallback_keys: Arc<CookieKeys>,
    config_path: Option<PathBuf>,
    bound: Vec<(String, SocketAddr)>,
    drain: watch::Sender<bool>,
    drain_token: DrainToken,
    drained: mpsc::Receiver<()>,
    accept_tasks: JoinSet<()>,
    commands: mpsc::Receiver<Command>,
    admin_address: Option<SocketAddr>,
    signals: Option<Signals>,
    health_tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// SIGHUP, SIGTERM and SIGINT handlers. Installed before any listener is bound, so a signal
/// sent as soon as `listener bound` is logged is handled, never the default action (which
/// for SIGHUP would kill the process).
#[cfg(unix)]
struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
}

impl Tether {
    /// Binds every listener of `config` and starts serving. `config_path` is re-read on reload.
    pub async fn start(config: Config, config_path: Option<PathBuf>) -> Result<Self, StartError> {
        Self::start_with(config, config_path, None).await
    }

    /// Like [`Tether::start`], with extra routes on the admin listener (the demo's controls).
    pub async fn start_with(
        config: Config,
        config_path: Option<PathBuf>,
        admin_extra: Option<axum::Router>,
    ) -> Result<Self, StartError> {
        let fallback_keys = match &config.cookie_keys {
            Some(_) => None,
            None => Some(CookieKeys::random().map_err(|_| StartError::Random)?),
        };
        if fallback_keys.is_some() && config.backends.iter().any(|b| b.sticky.is_some()) {
            tracing::warn!(
                "no [secrets].cookie_keys or TETHER_COOKIE_KEYS: affinity cookies are signed with a \
                 random per-process key and will not survive a restart or work across instances"
            );
        }
        let fallback_keys = Arc::new(match fallback_keys {
            Some(k) => k,
            None => CookieKeys::random().map_err(|_| StartError::Random)?,
        });
        let signals = match Signals::install() {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot install signal handlers; SIGHUP/SIGTERM will not be handled");
                None
            }
        };
        let mut registry = Registry::default();
        crate::tls::warn_expiring(&config.listeners);
        let listeners_cfg = config.listeners.clone();
        let admin_cfg = config.admin.clone();
        let snapshot = registry.build(config, &fallback_keys);
        let current = Arc::new(ArcSwap::from_pointee(snapshot));
        let (drain, drain_rx) = watch::channel(false);
        let (drain_token, drained) = mpsc::channel(1);
        let mut accept_tasks = JoinSet::new();
        let mut bound = Vec::new();
        for (index, l) in listeners_cfg.iter().enumerate() {
            let listener = bind(l.address).map_err(|error| StartError::Bind {
                name: l.name.clone(),
                address: l.address,
                error,
            })?;
            let address = listener.local_addr().unwrap_or(l.address);
            tracing::info!(listener = %l.name, address = %address, "listener bound");
            bound.push((l.name.clone(), address));
            let acceptor = Acceptor {
                index,
                listener,
                current: Arc::clone(&current),
                conns: ConnCounter::new(u64::from(std::process::id()) ^ (index as u64) << 32),
                drain: drain_rx.clone(),
                token: drain_token.clone(),
            };
            accept_tasks.spawn(acceptor.run());
        }
        let (command_tx, commands) = mpsc::channel(16);
        let admin_address = match admin_cfg {
            Some(a) => {
                let ctx = AdminContext {
                    current: Arc::clone(&current),
                    metrics: Arc::clone(registry.metrics()),
                    commands: command_tx,
                    token_for_reads: !a.address.ip().is_loopback(),
                    token: a.token.map(Arc::from),
                    started: std::time::Instant::now(),
                    demo: false,
                };
                let listener = TcpListener::bind(a.address).await.map_err(|error| {
                    StartError::Bind { name: "admin".to_owned(), address: a.address, error }
                })?;
                let address = listener.local_addr().unwrap_or(a.address);
                tracing::info!(listener = "admin", address = %address, "listener bound");
                let mut stop = drain_rx.clone();
                let token = drain_token.clone();
                tokio::spawn(async move {
                    admin::serve(listener, ctx, admin_extra, async move {
                        let _ = stop.changed().await;
                    })
                    .await;
                    drop(token);
                });
                Some(address)
            }
            None => None,
        };
        let health_tasks = spawn_health_checks(&current.load());
        crate::systemd::notify("READY=1");
        Ok(Self {
            health_tasks,
            signals,
            commands,
            admin_address,
            current,
            registry,
            fallback_keys,
            config_path,
            bound,
            drain,
            drain_token,
            drained,
            accept_tasks,
        })
    }

    /// The listeners' names and bound addresses, in config order.
    pub fn addresses(&self) -> &[(String, SocketAddr)] {
        &self.bound
    }

    /// The admin listener's bound address, when `[admin]` is configured.
    pub fn admin_address(&self) -> Option<SocketAddr> {
        self.admin_address
    }

    /// The snapshot being served.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Re-reads the configuration file and publishes it, keeping the state of servers that
    /// remain. On any error the old configuration keeps serving.
    pub fn reload(&mut self) -> Result<u64, ReloadError> {
        let path = self.config_path.as_ref().ok_or(ReloadError::NoFile)?;
        let config = Config::load(path)?;
        self.apply(config)
    }

    /// Publishes an already validated configuration (reload, or tests).
    pub fn apply(&mut self, config: Config) -> Result<u64, ReloadError> {
        let old = self.current.load();
        let same_listeners = config.listeners.len() == old.config.listeners.len()
            && config
                .listeners
                .iter()
                .zip(&old.config.listeners)
                .all(|(a, b)| a.name == b.name && a.address == b.address);
        if !same_listeners {
            return Err(ReloadError::ListenersChanged);
        }
        self.publish(config, true);
        Ok(self.current.load().generation)
    }

    /// Builds and publishes a snapshot of `config` (from the file, or changed at runtime),
    /// dropping metric series of what is gone.
    fn publish(&mut self, config: Config, from_file: bool) {
        if from_file {
            crate::tls::warn_expiring(&config.listeners);
        }
        let snapshot = Arc::new(if from_file {
            self.registry.build(config, &self.fallback_keys)
        } else {
            self.registry.rebuild(config, &self.fallback_keys)
        });
        let previous = self.current.swap(Arc::clone(&snapshot));
        self.registry.metrics().forget_removed(&previous, &snapshot);
        for t in self.health_tasks.drain(..) {
            t.abort();
        }
        self.health_tasks = spawn_health_checks(&snapshot);
    }

    /// Applies one admin command (the controller is the only writer).
    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Reload(reply) => {
                let r = self.reload_logged();
                let _ = reply.send(r);
            }
            Command::SetServer { backend, server, state, weight, reply } => {
                let _ = reply.send(self.set_server(&backend, &server, state, weight));
            }
            Command::AddServer { backend, server, reply } => {
                let _ = reply.send(self.edit_servers(&backend, |servers| {
                    if servers.iter().any(|s| s.name == server.name) {
                        return Err((StatusCode::CONFLICT, format!("server {:?} already exists", server.name)));
                    }
                    tracing::info!(backend = %backend, server = %server.name, address = %server.address, "server added by the admin API");
                    servers.push(server);
                    Ok(())
                }));
            }
            Command::RemoveServer { backend, server, reply } => {
                let _ = reply.send(self.edit_servers(&backend, |servers| {
                    let before = servers.len();
                    servers.retain(|s| s.name != server);
                    if servers.len() == before {
                        return Err((StatusCode::NOT_FOUND, format!("no server {server:?} in backend {backend:?}")));
                    }
                    if servers.is_empty() {
                        return Err((StatusCode::CONFLICT, "a backend needs at least one server".to_owned()));
                    }
                    tracing::info!(backend = %backend, server = %server, "server removed by the admin API; its in-flight requests finish");
                    Ok(())
                }));
            }
            Command::FlushSessions { backend, reply } => {
                let snap = self.current.load();
                let r = match snap.backends.iter().find(|b| *b.name == *backend) {
                    None => Err((StatusCode::NOT_FOUND, format!("no backend {backend:?}"))),
                    Some(b) => match &b.table {
                        None => Err((
                            StatusCode::BAD_REQUEST,
                            "this backend keeps no stick table".to_owned(),
                        )),
                        Some(t) => {
                            let n = t.len();
                            t.clear();
                            tracing::info!(backend = %backend, entries = n, "affinity table flushed");
                            Ok(n)
                        }
                    },
                };
                let _ = reply.send(r);
            }
        }
    }

    /// Adds or removes servers of `backend` at runtime: a new snapshot of the current
    /// configuration with the change (it lasts until a reload re-reads the file).
    fn edit_servers(
        &mut self,
        backend: &str,
        edit: impl FnOnce(&mut Vec<crate::config::Server>) -> Result<(), (StatusCode, String)>,
    ) -> Result<u64, (StatusCode, String)> {
        let snap = self.current.load_full();
        let mut config = (*snap.config).clone();
        let b = config
            .backends
            .iter_mut()
            .find(|b| b.name == backend)
            .ok_or((StatusCode::NOT_FOUND, format!("no backend {backend:?}")))?;
        edit(&mut b.servers)?;
        self.publish(config, false);
        Ok(self.current.load().generation)
    }

    /// Runtime change of a server: the state is set on its shared runtime state (it persists
    /// across reloads unless the file changes that server's `state`); a weight change
    /// publishes a new snapshot (it lasts until the next reload re-reads the file).
    fn set_server(
        &mut self,
        backend: &str,
        server: &str,
        state: Option<tether_core::AdminState>,
        weight: Option<u32>,
    ) -> Result<u64, (StatusCode, String)> {
        let snap = self.current.load_full();
        let b = snap
            .backends
            .iter()
            .find(|b| *b.name == *backend)
            .ok_or((StatusCode::NOT_FOUND, format!("no backend {backend:?}")))?;
        let s = b.servers.iter().find(|s| s.state.name() == server).ok_or((
            StatusCode::NOT_FOUND,
            format!("no server {server:?} in backend {backend:?}"),
        ))?;
        if let Some(st) = state {
            let old = s.state.set_admin_state(st);
            if old != st {
                tracing::info!(
                    backend,
                    server,
                    from = old.as_str(),
                    to = st.as_str(),
                    "server state changed by the admin API"
                );
            }
        }
        if let Some(w) = weight {
            let mut config = (*snap.config).clone();
            if let Some(cs) = config
                .backends
                .iter_mut()
                .find(|cb| cb.name == backend)
                .and_then(|cb| cb.servers.iter_mut().find(|cs| cs.name == server))
            {
                cs.weight = w;
            }
            self.publish(config, false);
            tracing::info!(backend, server, weight = w, "server weight changed by the admin API");
        }
        Ok(self.current.load().generation)
    }

    /// Stops accepting, lets in-flight requests finish for up to `grace`, then returns.
    /// Returns false when the grace period ran out with requests still in flight.
    pub async fn shutdown(mut self, grace: Duration) -> bool {
        let _ = self.drain.send(true);
        while self.accept_tasks.join_next().await.is_some() {}
        // Each open connection holds a clone of the token; the channel reports closed when
        // the last one is dropped.
        drop(self.drain_token);
        tokio::time::timeout(grace, self.drained.recv()).await.is_ok()
    }

    /// The grace period of the configuration being served.
    pub fn grace_period(&self) -> Duration {
        self.current.load().config.grace_period
    }

    /// Serves until SIGTERM or SIGINT, reloading on SIGHUP; a second SIGINT/SIGTERM during
    /// the drain stops at once. Returns whether the drain finished within the grace period.
    #[cfg(unix)]
    pub async fn run_until_signal(mut self) -> std::io::Result<bool> {
        let Signals { mut hup, mut term, mut int } = match self.signals.take() {
            Some(s) => s,
            None => Signals::install()?,
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    crate::systemd::notify("RELOADING=1");
                    let _ = self.reload_logged();
                    crate::systemd::notify("READY=1");
                }
                Some(cmd) = self.commands.recv() => self.command(cmd),
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        let grace = self.grace_period();
        crate::systemd::notify("STOPPING=1");
        tracing::info!(grace_period = ?grace, "shutting down: no new connections, finishing in-flight requests");
        let drained = tokio::select! {
            d = self.shutdown(grace) => d,
            _ = term.recv() => false,
            _ = int.recv() => false,
        };
        Ok(drained)
    }

    /// Reloads, counts and logs the outcome (signal and API paths).
    pub fn reload_logged(&mut self) -> Result<u64, String> {
        let result = self.reload();
        self.registry.metrics().reload(result.is_ok());
        match result {
            Ok(generation) => {
                tracing::info!(generation, "config reloaded");
                Ok(generation)
            }
            Err(e) => {
                let kept = self.snapshot().generation;
                tracing::error!(error = %e, kept_generation = kept, "reload failed");
                Err(e.to_string())
            }
        }
    }
}

/// Pending connections the kernel may queue per listener (capped by `net.core.somaxconn`).
/// tokio's default backlog overflows under connection bursts, and an overflowing accept queue
/// drops SYNs, which clients retry only after a second or more.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener with [`LISTEN_BACKLOG`] and `SO_REUSEADDR` (restarts while old
/// connections linger in TIME_WAIT).
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// One checker task per backend that has a `[health_check]`.
fn spawn_health_checks(snap: &Snapshot) -> Vec<tokio::task::JoinHandle<()>> {
    snap.backends
        .iter()
        .filter_map(|b| b.health_check.clone().map(|c| crate::health::spawn(b, c)))
        .collect()
}

/// hyper's settings for a listener's connections: the header timeout and size limits for
/// HTTP/1; stream, window and reset limits for HTTP/2 (Envoy's edge values: 100 streams,
/// 64 KiB stream and 1 MiB connection windows). Pending-accept resets bound the "rapid
/// reset" attack (CVE-2023-44487); the header list size bounds CONTINUATION floods.
pub(crate) fn connection_builder(l: &Listener) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(l.header_timeout)
        .keep_alive(true)
        .max_buf_size(l.limits.max_header_bytes.max(8192))
        .max_headers(l.limits.max_headers);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(l.h2_max_streams)
        .max_header_list_size(u32::try_from(l.limits.max_header_bytes).unwrap_or(u32::MAX))
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(1024 * 1024)
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(1024));
    b
}

/// One listener's accept loop.
struct Acceptor {
    index: usize,
    listener: TcpListener,
    current: Arc<ArcSwap<Snapshot>>,
    conns: Arc<ConnCounter>,
    drain: watch::Receiver<bool>,
    token: DrainToken,
}

impl Acceptor {
    async fn run(mut self) {
        // At the file-descriptor limit accept fails every time it is tried: one line a
        // second, with the count.
        let mut failures = tether_core::throttle::LogThrottle::new(Duration::from_secs(1));
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
                    let unlogged = failures.take_unlogged();
                    if unlogged > 0 {
                        tracing::warn!(failures = unlogged, "accept failed (until now)");
                    }
                    self.serve(stream, SocketAddr::new(peer.ip().to_canonical(), peer.port()))
                }
                Err(e) => {
                    if let Some(n) = failures.event(std::time::Instant::now()) {
                        let snap = self.current.load();
                        let listener = snap.listeners.get(self.index).map(|l| &*l.name);
                        tracing::warn!(listener, error = %e, failures = n, "accept failed");
                    }
                    // EMFILE and friends: back off briefly instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Admits the connection (connection limits), then in its own task: the PROXY header,
    /// the TLS handshake, and HTTP. The task holds the listener's [`ConnSettings`] as they
    /// were at accept time, not the snapshot (a long keep-alive connection must not keep an
    /// old configuration alive across reloads).
    fn serve(&self, stream: tokio::net::TcpStream, peer: SocketAddr) {
        let Some(settings) =
            self.current.load().listeners.get(self.index).map(|l| Arc::clone(&l.conn))
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
        let _ = stream.set_nodelay(true);
        let (index, current, drain, token, conns) = (
            self.index,
            Arc::clone(&self.current),
            self.drain.clone(),
            self.token.clone(),
            Arc::clone(&self.conns),
        );
        tokio::spawn(async move {
            let l = &*settings;
            let mut stream = stream;
            let mut client = peer;
            let mut prefix = bytes::Bytes::new();
            let mut slot = slot;
            if l.proxy_protocol {
                if !l.trusted_proxies.iter().any(|n| n.contains(&peer.ip())) {
                    tracing::debug!(peer = %peer, listener = %l.name, "PROXY protocol from an untrusted address: connection closed");
                    l.metrics.connection_refused(ConnRefusal::UntrustedProxy);
                    return;
                }
                let header = accept::read_proxy_header(&mut stream);
                match tokio::time::timeout(l.header_timeout, header).await {
                    Ok(Ok((addr, rest))) => {
                        client = addr.unwrap_or(peer);
                        prefix = rest;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %peer, listener = %l.name, error = %e, "bad PROXY protocol header: connection closed");
                        l.metrics.connection_refused(ConnRefusal::ProxyHeader);
                        return;
                    }
                    Err(_) => {
                        l.metrics.connection_refused(ConnRefusal::ProxyHeader);
                        return;
                    }
                }
                match admit(&conns, l, client) {
                    Some(s) => slot = Some(s),
                    None => return,
                }
            }
            let io = accept::Prefixed::new(prefix, stream);
            let ctx = ConnCtx::new(index, client, l.tls.is_some(), token.clone());
            let serve = Serve {
                current,
                ctx: Arc::new(ctx),
                settings: Arc::clone(&settings),
                drain,
                token,
            };
            match &l.tls {
                None => serve.run(io).await,
                // Boxed, so that plain connections do not carry the size of a TLS session in
                // their task.
                Some(config) => Box::pin(serve_tls(serve, io, config, l, client)).await,
            }
            drop(slot);
        });
    }
}

/// The TLS handshake (within `timeouts.header`), then HTTP over it.
async fn serve_tls(
    serve: Serve,
    io: accept::Prefixed<tokio::net::TcpStream>,
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
                        crate::tls::subject(der).and_then(|s| http::HeaderValue::try_from(s).ok()),
                    ),
                    None => ClientCert::None,
                };
                // The connection's context is not shared yet.
                if let Some(ctx) = Arc::get_mut(&mut serve.ctx) {
                    ctx.client_cert = cert;
                }
            }
            serve.run(tls).await
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
    async fn run<I>(self, io: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Serve { current, ctx, settings, drain, token } = self;
        let scan = tether_core::framing::HeadScan::new(settings.limits.max_header_bytes);
        let (idle, header_timeout) = (settings.idle_timeout, settings.header_timeout);
        let peer = ctx.peer;
        let requests = Arc::new(connection::Requests::default());
        let watched = Arc::clone(&requests);
        let io_ctx = Arc::clone(&ctx);
        let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let snap = current.load_full();
            let ctx = Arc::clone(&ctx);
            let h2 = req.version() == http::Version::HTTP_2;
            if !h2 {
                // Read by ActivityIo before hyper looks for more input on this connection.
                let closing = proxy::headers::asks_to_close(req.version(), req.headers());
                ctx.closing_request.store(closing, std::sync::atomic::Ordering::Relaxed);
            }
            let watch = watched.start(h2);
            // Boxed: hyper keeps the slot for a request's future for as long as the
            // connection lives, so an unboxed (large) future would cost every idle
            // keep-alive connection its size; boxed, it costs one allocation per request.
            Box::pin(async move {
                let resp = proxy::handle(&snap, &ctx, req).await;
                watch.answered();
                Ok::<_, std::convert::Infallible>(resp)
            })
        });
        let epoch = std::time::Instant::now();
        let last = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let io = ActivityIo::new(io, epoch, Arc::clone(&last), Some(scan), io_ctx);
        let io = TokioIo::new(io);
        let conn = settings.http.serve_connection_with_upgrades(io, service).into_owned();
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
