//! A running Tether: start (bind every listener and the admin API, spawn health checks),
//! the controller that applies reloads and admin commands (the only writer of the
//! configuration), signals, and graceful shutdown.
//!
//! [`Tether::start`] binds every listener (port 0 allowed) and logs `listener bound` with the
//! real address. Reload is diff-based through the [`Registry`]: servers and backends that
//! remain keep their runtime state and pooled connections; the new [`Snapshot`] is published
//! with one atomic swap.
//!
//! A reload may also add, remove and re-address listeners (`listeners`, by name): new
//! addresses are all bound before anything is published — one that cannot be bound fails
//! the reload, closes what was bound, and the old configuration keeps serving — then the
//! listeners that are gone or moved stop accepting (their ports close) and their connections
//! drain as in a shutdown, for up to `grace_period`; the new snapshot is published, and the
//! new listeners start accepting, on every worker thread. A listener that stays (same name,
//! same address) keeps its sockets and takes its other settings from the new snapshot.
//! Connections know their listener by name, so a reload that reorders listeners never hands
//! one another's settings.

mod listeners;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tether_core::affinity::CookieKeys;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::admin::{self, AdminContext};
use crate::config::{Config, ConfigErrors, Server, ServerSource};
use crate::control::{Command, ControlError};
use crate::discovery::Discovery;
use crate::server::DrainToken;
use crate::snapshot::{Registry, Snapshot};
use listeners::{BindFailure, Listeners};

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
    /// A listener the new file adds or moves cannot bind its address (in use, permission);
    /// what the reload had bound is closed again.
    // The OS error is in the message, not a `source`, as in `StartError::Bind`.
    #[error("listener {name:?} cannot bind {address}: {error}")]
    Bind {
        /// Listener name.
        name: String,
        /// Configured address.
        address: SocketAddr,
        /// The OS error, or which listener still holds the address.
        error: std::io::Error,
    },
}

impl From<BindFailure> for ReloadError {
    fn from(BindFailure { name, address, error }: BindFailure) -> Self {
        ReloadError::Bind { name, address, error }
    }
}

impl From<BindFailure> for StartError {
    fn from(BindFailure { name, address, error }: BindFailure) -> Self {
        StartError::Bind { name, address, error }
    }
}

/// A running Tether: listeners bound, serving.
pub struct Tether {
    current: Arc<ArcSwap<Snapshot>>,
    registry: Registry,
    fallback_keys: Arc<CookieKeys>,
    config_path: Option<PathBuf>,
    /// The listeners, each with its own drain signal and tokens.
    listeners: Listeners,
    /// The admin listener's drain signal and tokens.
    drain: watch::Sender<bool>,
    drain_token: DrainToken,
    drained: mpsc::Receiver<()>,
    commands: mpsc::Receiver<Command>,
    admin_address: Option<SocketAddr>,
    signals: Option<Signals>,
    health_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Servers found in DNS and the tasks that find them.
    discovery: Discovery,
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

/// Worker threads, thread per core: each runs a current-thread runtime of its own, accepts
/// from its own `SO_REUSEPORT` socket of every listener, and serves those connections start
/// to end — its own upstream connection pools, no task moving between threads, no shared
/// queue. They share only the snapshot and atomics. The controller, the admin API and health
/// checks run on the runtime that started Tether.
pub struct Workers {
    handles: Vec<tokio::runtime::Handle>,
}

impl Workers {
    /// Starts `n` worker threads, which run for the rest of the process.
    pub fn start(n: usize) -> std::io::Result<Self> {
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .on_thread_park(on_worker_park)
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            rt.spawn(keep_timers_near());
            std::thread::Builder::new()
                .name(format!("tether-worker-{i}"))
                .spawn(move || rt.block_on(std::future::pending::<()>()))?;
        }
        Ok(Self { handles })
    }
}

impl Tether {
    /// Binds every listener of `config` and starts serving on the current runtime.
    /// `config_path` is re-read on reload.
    pub async fn start(config: Config, config_path: Option<PathBuf>) -> Result<Self, StartError> {
        Self::start_inner(config, config_path, None, None).await
    }

    /// Like [`Tether::start`], with extra routes on the admin listener (the demo's controls).
    pub async fn start_with(
        config: Config,
        config_path: Option<PathBuf>,
        admin_extra: Option<axum::Router>,
    ) -> Result<Self, StartError> {
        Self::start_inner(config, config_path, admin_extra, None).await
    }

    /// Like [`Tether::start`], client connections served by `workers` (one listening socket
    /// per worker and listener).
    pub async fn start_on(
        config: Config,
        config_path: Option<PathBuf>,
        workers: &Workers,
    ) -> Result<Self, StartError> {
        Self::start_inner(config, config_path, None, Some(workers)).await
    }

    async fn start_inner(
        config: Config,
        config_path: Option<PathBuf>,
        admin_extra: Option<axum::Router>,
        workers: Option<&Workers>,
    ) -> Result<Self, StartError> {
        let fallback_keys = fallback_keys(&config)?;
        let signals = match Signals::install() {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot install signal handlers; SIGHUP/SIGTERM will not be handled");
                None
            }
        };
        let mut registry = Registry::default();
        config.warn_expiring_certs();
        let configured = config.listeners.clone();
        let admin = config.admin.clone();
        let current = Arc::new(ArcSwap::from_pointee(registry.build(config, &fallback_keys)));
        let (drain, drain_rx) = watch::channel(false);
        let (drain_token, drained) = mpsc::channel(1);
        let mut listeners = Listeners::new(workers, Arc::clone(&current));
        listeners.open_all(&configured)?;
        let (command_tx, commands) = mpsc::channel(16);
        let admin_address = match admin {
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
                let stop = (drain_rx.clone(), drain_token.clone());
                Some(start_admin(a.address, ctx, admin_extra, stop).await?)
            }
            None => None,
        };
        let health_tasks = spawn_health_checks(&current.load());
        let mut discovery = Discovery::new(registry.metrics());
        discovery.published(&current.load());
        crate::systemd::notify("READY=1");
        Ok(Self {
            health_tasks,
            discovery,
            signals,
            commands,
            admin_address,
            current,
            registry,
            fallback_keys,
            config_path,
            listeners,
            drain,
            drain_token,
            drained,
        })
    }

    /// The listeners' names and bound addresses, in config order.
    pub fn addresses(&self) -> &[(String, SocketAddr)] {
        self.listeners.addresses()
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

    /// Publishes an already validated configuration (reload, or tests), opening and
    /// closing listeners as it says (module docs: new ones are all bound first; a failure
    /// changes nothing).
    pub fn apply(&mut self, config: Config) -> Result<u64, ReloadError> {
        let bound = self.listeners.bind_new(&config.listeners)?;
        // Nothing fails from here on.
        let listeners = config.listeners.clone();
        self.listeners.close_removed(&listeners, config.grace_period);
        self.publish(config, true);
        self.listeners.start_bound(bound, &listeners);
        Ok(self.current.load().generation)
    }

    /// Builds and publishes a snapshot of `config` (from the file, or changed at runtime),
    /// dropping metric series of what is gone.
    fn publish(&mut self, config: Config, from_file: bool) {
        if from_file {
            config.warn_expiring_certs();
        }
        let config = self.discovery.merge(config);
        let snapshot = Arc::new(if from_file {
            self.registry.build(config, &self.fallback_keys)
        } else {
            self.registry.rebuild(config, &self.fallback_keys)
        });
        let previous = self.current.swap(Arc::clone(&snapshot));
        previous.forget_removed_metrics(&snapshot, self.registry.metrics());
        for t in self.health_tasks.drain(..) {
            t.abort();
        }
        self.health_tasks = spawn_health_checks(&snapshot);
        self.discovery.published(&snapshot);
    }

    /// News from DNS discovery (servers changed, or draining ones may go): a new snapshot
    /// of the configuration being served with the discovered servers as they are now.
    fn discovered(&mut self, event: crate::discovery::Event) {
        let snap = self.current.load_full();
        if self.discovery.handle(event, &snap) {
            self.publish((*snap.config).clone(), false);
        }
    }

    /// Applies one admin command (the controller is the only writer).
    fn command(&mut self, cmd: Command) {
        let (reply, result) = match cmd {
            Command::BoundAddresses(reply) => {
                let _ = reply.send(self.listeners.addresses().to_vec());
                return;
            }
            Command::Reload(reply) => {
                (reply, self.reload_logged(ReloadTrigger::Api).map_err(ControlError::Reload))
            }
            Command::SetServer { backend, server, state, weight, reply } => {
                (reply, self.set_server(&backend, &server, state, weight))
            }
            Command::AddServer { backend, server, reply } => {
                (reply, self.add_server(&backend, server))
            }
            Command::RemoveServer { backend, server, reply } => {
                (reply, self.remove_server(&backend, &server))
            }
            Command::FlushSessions { backend, reply } => (reply, self.flush_sessions(&backend)),
        };
        // The API caller may have gone away: nothing to tell then.
        let _ = reply.send(result);
    }

    fn add_server(&mut self, backend: &str, server: Server) -> Result<u64, ControlError> {
        self.edit_servers(backend, |servers| {
            if servers.iter().any(|s| s.name == server.name) {
                return Err(ControlError::ServerExists(server.name.clone()));
            }
            tracing::info!(backend, server = %server.name, address = %server.address, "server added by the admin API");
            servers.push(server);
            Ok(())
        })
    }

    fn remove_server(&mut self, backend: &str, server: &str) -> Result<u64, ControlError> {
        self.edit_servers(backend, |servers| {
            if servers.iter().any(|s| s.name == server && s.source == ServerSource::Dns) {
                return Err(ControlError::Discovered(server.to_owned()));
            }
            let before = servers.len();
            servers.retain(|s| s.name != server);
            if servers.len() == before {
                let (backend, server) = (backend.to_owned(), server.to_owned());
                return Err(ControlError::NoServer { backend, server });
            }
            if servers.is_empty() {
                return Err(ControlError::LastServer);
            }
            tracing::info!(
                backend,
                server,
                "server removed by the admin API; its in-flight requests finish"
            );
            Ok(())
        })
    }

    fn flush_sessions(&mut self, backend: &str) -> Result<u64, ControlError> {
        let snap = self.current.load();
        let b = snap.backend(backend).ok_or_else(|| ControlError::NoBackend(backend.to_owned()))?;
        let table = b.table.as_ref().ok_or(ControlError::NoTable)?;
        let n = table.len();
        table.clear();
        tracing::info!(backend, entries = n, "affinity table flushed");
        Ok(n)
    }

    /// Adds or removes servers of `backend` at runtime: a new snapshot of the current
    /// configuration with the change (it lasts until a reload re-reads the file).
    fn edit_servers(
        &mut self,
        backend: &str,
        edit: impl FnOnce(&mut Vec<Server>) -> Result<(), ControlError>,
    ) -> Result<u64, ControlError> {
        let snap = self.current.load_full();
        let mut config = (*snap.config).clone();
        let b = config
            .backends
            .iter_mut()
            .find(|b| b.name == backend)
            .ok_or_else(|| ControlError::NoBackend(backend.to_owned()))?;
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
    ) -> Result<u64, ControlError> {
        let snap = self.current.load_full();
        let b = snap.backend(backend).ok_or_else(|| ControlError::NoBackend(backend.to_owned()))?;
        let s = b.servers.iter().find(|s| s.state.name() == server).ok_or_else(|| {
            ControlError::NoServer { backend: backend.to_owned(), server: server.to_owned() }
        })?;
        if weight.is_some() && s.source == ServerSource::Dns {
            return Err(ControlError::Discovered(server.to_owned()));
        }
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
        self.listeners.stop_accepting().await;
        // Each open connection holds a clone of its listener's token; a channel reports
        // closed when the last one is dropped.
        drop(self.drain_token);
        let (mut admin, listeners) = (self.drained, self.listeners);
        let drained = async move {
            let _ = admin.recv().await;
            listeners.drained().await;
        };
        tokio::time::timeout(grace, drained).await.is_ok()
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
                    let _ = self.reload_logged(ReloadTrigger::Signal);
                    crate::systemd::notify("READY=1");
                }
                Some(cmd) = self.commands.recv() => self.command(cmd),
                event = self.discovery.next() => self.discovered(event),
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

    /// Reloads, counts and logs the outcome with what asked for it (`trigger`: `signal` or
    /// `api`), so that a reload's line is told from another's.
    pub fn reload_logged(&mut self, trigger: ReloadTrigger) -> Result<u64, String> {
        let result = self.reload();
        self.registry.metrics().reload(result.is_ok());
        let trigger = trigger.as_str();
        match result {
            Ok(generation) => {
                tracing::info!(generation, trigger, "config reloaded");
                Ok(generation)
            }
            Err(e) => {
                let kept = self.snapshot().generation;
                tracing::error!(error = %e, kept_generation = kept, trigger, "reload failed");
                Err(e.to_string())
            }
        }
    }
}

/// What asked for a reload (the `trigger` of its log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadTrigger {
    /// `SIGHUP`.
    Signal,
    /// `POST /api/v1/reload`.
    Api,
}

impl ReloadTrigger {
    /// The log line's `trigger`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadTrigger::Signal => "signal",
            ReloadTrigger::Api => "api",
        }
    }
}

/// The cookie keys used when the configuration names none: random, for this process only
/// (said in a warning when a backend is sticky).
fn fallback_keys(config: &Config) -> Result<Arc<CookieKeys>, StartError> {
    let keys = CookieKeys::random().map_err(|_| StartError::Random)?;
    if config.cookie_keys.is_none() && config.backends.iter().any(|b| b.sticky.is_some()) {
        tracing::warn!(
            "no [secrets].cookie_keys or TETHER_COOKIE_KEYS: affinity cookies are signed with a \
             random per-process key and will not survive a restart or work across instances"
        );
    }
    Ok(Arc::new(keys))
}

/// Binds the admin listener and serves the API on it until the drain starts (holding a
/// drain token meanwhile); its bound address.
async fn start_admin(
    address: SocketAddr,
    ctx: AdminContext,
    extra: Option<axum::Router>,
    (mut stop, token): (watch::Receiver<bool>, DrainToken),
) -> Result<SocketAddr, StartError> {
    let listener = TcpListener::bind(address).await.map_err(|error| StartError::Bind {
        name: "admin".to_owned(),
        address,
        error,
    })?;
    let bound = listener.local_addr().unwrap_or(address);
    tracing::info!(listener = "admin", address = %bound, "listener bound");
    tokio::spawn(async move {
        admin::serve(listener, ctx, extra, async move {
            let _ = stop.changed().await;
        })
        .await;
        drop(token);
    });
    Ok(bound)
}

/// One checker task per backend that has a `[health_check]`.
fn spawn_health_checks(snap: &Snapshot) -> Vec<tokio::task::JoinHandle<()>> {
    snap.backends
        .iter()
        .filter_map(|b| b.health_check.clone().map(|c| crate::health::spawn(b, c)))
        .collect()
}

/// Runs for the life of a runtime that serves connections, waking it once a second.
///
/// Tokio's timer writes to the runtime's eventfd whenever a new timer is due before the time
/// the runtime last computed it would next wake, even from the runtime's own thread. Without
/// a near timer, that is every connection's first timer (a 5 s connect or 10 s header timeout
/// beside idle timeouts of a minute): one `write` syscall and one extra `epoll_wait` return
/// per connection (`strace` on a TCP listener: 0.5–1 per connection). With this tick the
/// next wake is never more than a second away, so timers of a second or more never do.
pub async fn keep_timers_near() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// The runtime's park hook: a worker thread about to go idle closes its expired idle server
/// connections (the pools are per thread, so only the thread itself can).
pub fn on_worker_park() {
    crate::upstream::h1::pools::sweep();
}
