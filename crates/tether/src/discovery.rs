//! DNS service discovery: servers of a backend found in DNS (`[backends.NAME.discovery]`),
//! beside or instead of the servers of the file.
//!
//! One task per backend with discovery ([`task`]) resolves its name every `interval` (sooner
//! when the records' TTL is shorter, never more often than [`task::TTL_FLOOR`]) and tells the
//! controller when the set of servers changed. The controller, the one writer of the
//! configuration, keeps the discovered servers of each backend here ([`Discovery`]) and
//! rebuilds the snapshot from its configuration plus them ([`Discovery::merge`]); the
//! `Registry` keeps each server's state, pool and session sketch by name, so a rebuild loses
//! nothing and health checks, slow start, metrics and affinity treat a discovered server as
//! they treat one of the file. DNS is never waited on by the controller.
//!
//! Identity stays stable while the address does: a discovered server is named by its address
//! (`10.0.0.5:8080`) for `dns`, by `target:port` for `srv`, and affinity cookies and tables
//! refer to that name.
//!
//! DNS trouble never empties a backend: a failed or empty resolution keeps the last known
//! servers (one warning per failure streak, each failure counted in
//! `tether_discovery_errors_total`). A server that leaves DNS goes at once with
//! `on_removed = "remove"`; with `"drain"` (the default) it is set to `drain` — its pinned
//! sessions go on, new ones go elsewhere — and goes when it holds no session, at the latest
//! after the backend's `sticky.max_lifetime`, and at once without affinity ([`members`]).

mod members;
mod resolve;
mod task;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tether_core::AdminState;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::config::{self, Config, ServerSource};
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use members::Members;

/// How often draining discovered servers are checked for their last session.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// A server found in DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// `IP:PORT` (`dns`) or `target:port` (`srv`): its stable identity.
    pub name: String,
    /// Where to connect: `IP:PORT`.
    pub address: http::uri::Authority,
    /// 1 for `dns`; the SRV weight, clamped to 1..=256, for `srv`.
    pub weight: u32,
}

/// A discovery task's news: its backend's servers are now `servers` (sorted by name).
#[derive(Debug)]
pub struct Update {
    backend: String,
    task: u64,
    servers: Vec<Found>,
}

/// What [`Discovery::next`] hands the controller.
#[derive(Debug)]
pub enum Event {
    /// A backend's servers changed in DNS.
    Update(Update),
    /// Time to check whether draining servers may go.
    Sweep,
}

/// The discovered servers of every backend and the tasks that find them; owned by the
/// controller.
pub struct Discovery {
    metrics: Arc<Metrics>,
    tasks: HashMap<String, Task>,
    members: HashMap<String, Members>,
    tx: mpsc::Sender<Update>,
    rx: mpsc::Receiver<Update>,
    sweep: tokio::time::Interval,
    next_id: u64,
}

/// A running discovery task: which configuration it runs, and how to stop it.
struct Task {
    id: u64,
    config: config::Discovery,
    handle: AbortHandle,
}

// === impl Discovery ===

impl Discovery {
    /// No tasks yet: [`Discovery::published`] starts them. Must be called on a tokio runtime.
    pub fn new(metrics: &Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel(16);
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            metrics: Arc::clone(metrics),
            tasks: HashMap::new(),
            members: HashMap::new(),
            tx,
            rx,
            sweep,
            next_id: 0,
        }
    }

    /// `config` with the discovered servers of each backend appended (sorted by name) and
    /// any discovered server it already carried replaced, so a configuration taken from a
    /// snapshot can be merged again. A name the file already uses is left to the file.
    pub fn merge(&self, mut config: Config) -> Config {
        for b in &mut config.backends {
            b.servers.retain(|s| s.source != ServerSource::Dns);
            let Some(members) = self.members.get(&b.name).filter(|_| b.discovery.is_some()) else {
                continue;
            };
            let taken: HashSet<String> = b.servers.iter().map(|s| s.name.clone()).collect();
            b.servers.extend(members.servers().filter(|s| !taken.contains(&s.name)));
        }
        config
    }

    /// After each publish: starts a task for each backend whose discovery is new or changed,
    /// stops those of backends without it (forgetting their servers), and sets the admin
    /// state of servers that left DNS or came back.
    pub fn published(&mut self, snapshot: &Snapshot) {
        let wanted: HashMap<&str, &config::Discovery> = snapshot
            .config
            .backends
            .iter()
            .filter_map(|b| Some((b.name.as_str(), b.discovery.as_ref()?)))
            .collect();
        self.tasks.retain(|backend, task| {
            let keep = wanted.get(backend.as_str()) == Some(&&task.config);
            if !keep {
                task.handle.abort();
            }
            keep
        });
        self.members.retain(|backend, _| wanted.contains_key(backend.as_str()));
        for (backend, config) in wanted {
            if !self.tasks.contains_key(backend) {
                self.spawn(backend, config);
            }
        }
        for b in &snapshot.backends {
            if let Some(members) = self.members.get_mut(&*b.name) {
                members.apply_states(b);
            }
        }
    }

    fn spawn(&mut self, backend: &str, config: &config::Discovery) {
        self.next_id += 1;
        let watch = task::Watch::new(
            backend,
            self.next_id,
            config.clone(),
            self.tx.clone(),
            self.metrics.discovery_errors(backend),
        );
        let handle = tokio::spawn(watch.run()).abort_handle();
        let task = Task { id: self.next_id, config: config.clone(), handle };
        self.tasks.insert(backend.to_owned(), task);
    }

    /// The next update of a task, or the next sweep while servers drain. Cancel-safe: meant
    /// for the controller's `select!`.
    pub async fn next(&mut self) -> Event {
        let draining = self.members.values().any(Members::draining);
        tokio::select! {
            Some(update) = self.rx.recv() => Event::Update(update),
            _ = self.sweep.tick(), if draining => Event::Sweep,
            // The channel cannot close (`self` keeps a sender), and with nothing draining
            // only an update can come.
            else => std::future::pending().await,
        }
    }

    /// Applies `event` against the snapshot being served; whether the snapshot must be
    /// rebuilt (through [`Discovery::merge`]).
    pub fn handle(&mut self, event: Event, snapshot: &Snapshot) -> bool {
        let now_ms = crate::clock::unix_now_ms();
        match event {
            Event::Update(u) => {
                let Some(task) = self.tasks.get(&u.backend).filter(|t| t.id == u.task) else {
                    return false; // from a task stopped since
                };
                let on_removed = task.config.on_removed;
                let sticky = snapshot.backend(&u.backend).is_some_and(|b| b.sticky.is_some());
                let members = self.members.entry(u.backend.clone()).or_default();
                members.update(&u.backend, u.servers, on_removed, sticky, now_ms)
            }
            Event::Sweep => {
                let mut changed = false;
                for (backend, members) in &mut self.members {
                    if let Some(b) = snapshot.backend(backend) {
                        changed |= members.sweep(b, now_ms);
                    }
                }
                changed
            }
        }
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        for task in self.tasks.values() {
            task.handle.abort();
        }
    }
}

/// The admin state a discovered server should have: `drain` once it left DNS.
fn desired_state(draining: bool) -> AdminState {
    if draining { AdminState::Drain } else { AdminState::Ready }
}

#[cfg(test)]
mod tests;
