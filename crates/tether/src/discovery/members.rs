//! The discovered servers of one backend, as the controller keeps them between resolutions:
//! who is in DNS, who left and is draining, and which admin state was last set on each.
//!
//! The rules (module docs of [`crate::discovery`]): a new name joins; a known name takes its
//! new address and weight; a name that left DNS goes at once with `on_removed = "remove"` or
//! without affinity, and otherwise drains until [`Members::sweep`] finds it holds no session
//! or has drained for the backend's `sticky.max_lifetime`. A draining name that comes back is
//! ready again.

use std::collections::BTreeMap;

use tether_core::AdminState;

use super::{Found, desired_state};
use crate::config::{self, OnRemoved, ServerSource};
use crate::snapshot::BackendView;

/// One backend's discovered servers, by name.
#[derive(Debug, Default)]
pub(super) struct Members {
    servers: BTreeMap<String, Member>,
}

/// One discovered server.
#[derive(Debug)]
struct Member {
    found: Found,
    /// When it left DNS (Unix ms), while it drains.
    gone_since_ms: Option<u64>,
    /// The admin state last set on its runtime state by discovery.
    applied: Option<AdminState>,
}

// === impl Members ===

impl Members {
    /// Whether any server is draining (the controller then sweeps).
    pub(super) fn draining(&self) -> bool {
        self.servers.values().any(|m| m.gone_since_ms.is_some())
    }

    /// The servers to add to the backend's configuration: draining ones in state `drain`.
    pub(super) fn servers(&self) -> impl Iterator<Item = config::Server> + '_ {
        self.servers.values().map(|m| config::Server {
            name: m.found.name.clone(),
            address: m.found.address.clone(),
            weight: m.found.weight,
            backup: false,
            state: desired_state(m.gone_since_ms.is_some()),
            source: ServerSource::Dns,
        })
    }

    /// Takes a resolution's servers; whether the backend's servers changed.
    pub(super) fn update(
        &mut self,
        backend: &str,
        found: Vec<Found>,
        on_removed: OnRemoved,
        sticky: bool,
        now_ms: u64,
    ) -> bool {
        let mut changed = false;
        let mut seen = std::collections::HashSet::with_capacity(found.len());
        for f in found {
            seen.insert(f.name.clone());
            changed |= self.found(backend, f);
        }
        let drain = on_removed == OnRemoved::Drain && sticky;
        let before = self.servers.len();
        self.servers.retain(|name, m| {
            if seen.contains(name) || m.gone_since_ms.is_some() {
                return true;
            }
            if drain {
                tracing::info!(backend, server = %name, "server left DNS; draining its sessions");
                m.gone_since_ms = Some(now_ms);
                changed = true;
                return true;
            }
            tracing::info!(backend, server = %name, "server left DNS; removed");
            false
        });
        changed || self.servers.len() != before
    }

    /// One server of a resolution; whether it is new, came back or changed.
    fn found(&mut self, backend: &str, f: Found) -> bool {
        let Some(m) = self.servers.get_mut(&f.name) else {
            tracing::info!(backend, server = %f.name, weight = f.weight, "server discovered in DNS");
            let member = Member { found: f, gone_since_ms: None, applied: None };
            self.servers.insert(member.found.name.clone(), member);
            return true;
        };
        let back = m.gone_since_ms.take().is_some();
        if back {
            tracing::info!(backend, server = %f.name, "server back in DNS; ready again");
        }
        let changed = back || m.found != f;
        m.found = f;
        changed
    }

    /// Removes the draining servers that hold no session any more or have drained for the
    /// backend's `sticky.max_lifetime`; whether any went.
    pub(super) fn sweep(&mut self, backend: &BackendView, now_ms: u64) -> bool {
        let lifetime_ms =
            backend.sticky.as_ref().map(|s| u64::from(s.config.expiry.max_lifetime) * 1000);
        let sessions = |name: &str| {
            backend
                .servers
                .iter()
                .find(|s| s.state.name() == name)
                .map_or(0, |s| backend.sessions_of(s).0)
        };
        self.sweep_with(&backend.name, now_ms, lifetime_ms, sessions)
    }

    /// [`Members::sweep`] with the session count and lifetime given (unit tests).
    pub(super) fn sweep_with(
        &mut self,
        backend: &str,
        now_ms: u64,
        lifetime_ms: Option<u64>,
        sessions: impl Fn(&str) -> u64,
    ) -> bool {
        let before = self.servers.len();
        self.servers.retain(|name, m| {
            let Some(since) = m.gone_since_ms else { return true };
            let held = sessions(name);
            let expired = lifetime_ms.is_none_or(|l| now_ms.saturating_sub(since) >= l);
            if held > 0 && !expired {
                return true;
            }
            tracing::info!(backend, server = %name, sessions = held, "drained server removed");
            false
        });
        self.servers.len() != before
    }

    /// Sets the admin state discovery wants on each server of `backend` whose wanted state
    /// changed since it was last set (an operator's own change stands until then).
    pub(super) fn apply_states(&mut self, backend: &BackendView) {
        for (name, m) in &mut self.servers {
            let want = desired_state(m.gone_since_ms.is_some());
            if m.applied == Some(want) {
                continue;
            }
            let Some(view) = backend.servers.iter().find(|s| s.state.name() == name) else {
                continue;
            };
            let old = view.state.set_admin_state(want);
            if old != want {
                tracing::info!(backend = %backend.name, server = %name, from = old.as_str(), to = want.as_str(), "server state changed by DNS discovery");
            }
            m.applied = Some(want);
        }
    }
}
