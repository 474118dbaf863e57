//! The metrics that mirror live state (servers up, in flight, sessions bound, queue depth,
//! table entries, certificate expiry), filled from a snapshot at scrape time, and the series
//! of listeners, servers and backends a new snapshot no longer has, dropped on publish.

use std::sync::atomic::Ordering;

use crate::metrics::{Metrics, ServerGauges};

use super::Snapshot;

impl Snapshot {
    /// The text exposition of every metric, after refreshing the live gauges from `self`.
    pub fn render_metrics(&self, metrics: &Metrics) -> String {
        metrics.clear_cert_expiry();
        for l in &self.config.listeners {
            for c in l.tls.iter().flat_map(|t| &t.certs) {
                metrics.set_cert_expiry(&l.name, &c.files.cert.display().to_string(), c.not_after);
            }
        }
        for b in &self.backends {
            for s in &b.servers {
                let sessions = b.table.as_ref().map(|t| t.sessions_bound(s.state.name()));
                let live = ServerGauges {
                    up: s.state.accepts_pinned(),
                    in_flight: s.state.in_flight(),
                    sessions,
                    live_sessions: b.sticky.is_some().then(|| b.sessions_of(s).0),
                };
                metrics.set_server_gauges(&b.name, s.state.name(), live);
            }
            let queued = b.waiting.load(Ordering::Relaxed) as u64;
            metrics.set_backend_gauges(&b.name, queued, b.table.as_ref().map(|t| t.len()));
        }
        metrics.encode()
    }

    /// Drops from `metrics` every series of the listeners, servers and backends that `next`
    /// no longer has.
    pub fn forget_removed_metrics(&self, next: &Snapshot, metrics: &Metrics) {
        let listeners: Vec<String> = self.config.listeners.iter().map(|l| l.name.clone()).collect();
        let servers: Vec<(&str, &str)> = (self.backends.iter())
            .flat_map(|b| b.servers.iter().map(|s| (&*b.name, s.state.name())))
            .collect();
        let backends: Vec<&str> = self.backends.iter().map(|b| &*b.name).collect();
        for l in listeners.iter().filter(|l| next.listener(l).is_none()) {
            metrics.forget_listener(l, &backends, &servers);
        }
        for b in &self.backends {
            let kept = next.backend(&b.name);
            for s in &b.servers {
                if !kept.is_some_and(|k| k.by_name.contains_key(s.state.name())) {
                    metrics.forget_server(&listeners, &b.name, s.state.name());
                }
            }
            if kept.is_none() {
                metrics.forget_backend(&listeners, &b.name);
            }
        }
    }
}
