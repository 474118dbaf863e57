//! The discovery task of one backend: resolve, tell the controller when the servers changed,
//! wait, again — for as long as the backend's `discovery` settings stay (the controller
//! aborts the task when they change or go).
//!
//! It logs transitions, not states: the first resolution, the first failure of a streak (at
//! warn, with the error), the recovery. Every failure is counted in
//! `tether_discovery_errors_total{backend}`; a failed or empty resolution changes nothing.

use std::time::Duration;

use hickory_resolver::TokioResolver;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use super::resolve::{self, Resolution, ResolveError};
use super::{Found, Update};
use crate::config::{self, DiscoveryLookup};

/// The shortest wait a record's TTL can ask for: a TTL of 0 or 1 s must not make Tether
/// query in a loop.
pub(super) const TTL_FLOOR: Duration = Duration::from_secs(1);

/// One backend's discovery loop and what it remembers between resolutions.
pub(super) struct Watch {
    backend: String,
    id: u64,
    config: config::Discovery,
    tx: mpsc::Sender<Update>,
    errors: Counter,
    resolver: Option<TokioResolver>,
    /// The servers last sent; `None` before the first successful resolution.
    last: Option<Vec<Found>>,
    /// Failures in a row.
    failures: u64,
}

// === impl Watch ===

impl Watch {
    pub(super) fn new(
        backend: &str,
        id: u64,
        config: config::Discovery,
        tx: mpsc::Sender<Update>,
        errors: Counter,
    ) -> Self {
        let backend = backend.to_owned();
        Self { backend, id, config, tx, errors, resolver: None, last: None, failures: 0 }
    }

    /// Runs until aborted, or until the controller is gone.
    pub(super) async fn run(mut self) {
        tracing::info!(
            backend = %self.backend,
            lookup = %describe(&self.config.lookup),
            "DNS discovery started; until its first resolution the backend has only its \
             configured servers"
        );
        loop {
            let wait = match self.resolve().await {
                Ok(r) if !r.servers.is_empty() => match self.succeeded(r).await {
                    Some(wait) => wait,
                    None => return,
                },
                Ok(_) => self.failed("no records"),
                Err(e) => self.failed(&e.to_string()),
            };
            tokio::time::sleep(wait).await;
        }
    }

    async fn resolve(&mut self) -> Result<Resolution, ResolveError> {
        let resolver = match &mut self.resolver {
            Some(r) => r,
            None => self.resolver.insert(resolve::resolver(&self.config)?),
        };
        resolve::resolve(resolver, &self.config.lookup).await
    }

    /// Sends the servers when they changed; the wait until the next resolution, `None`
    /// when the controller is gone.
    async fn succeeded(&mut self, r: Resolution) -> Option<Duration> {
        let backend = &self.backend;
        if self.failures > 0 {
            tracing::info!(backend = %backend, failures = self.failures, servers = r.servers.len(), "DNS discovery resolves again");
        } else if self.last.is_none() {
            tracing::info!(backend = %backend, servers = r.servers.len(), "DNS discovery: first resolution");
        }
        self.failures = 0;
        if self.last.as_ref() != Some(&r.servers) {
            self.last = Some(r.servers.clone());
            let update = Update { backend: backend.clone(), task: self.id, servers: r.servers };
            self.tx.send(update).await.ok()?;
        }
        Some(next_wait(self.config.interval, r.ttl))
    }

    /// Counts the failure, warns at the first of a streak; the wait until the next try.
    fn failed(&mut self, error: &str) -> Duration {
        self.errors.inc();
        if self.failures == 0 {
            let known = self.last.as_ref().map_or(0, Vec::len);
            tracing::warn!(
                backend = %self.backend,
                lookup = %describe(&self.config.lookup),
                error,
                known_servers = known,
                "DNS discovery failed; keeping the last known servers (logged once until it \
                 resolves again)"
            );
        }
        self.failures += 1;
        self.config.interval
    }
}

/// The wait until the next resolution: `interval`, or the records' TTL when shorter, but
/// never under [`TTL_FLOOR`] because of a TTL.
pub(super) fn next_wait(interval: Duration, ttl: Option<Duration>) -> Duration {
    match ttl {
        Some(ttl) => interval.min(ttl.max(TTL_FLOOR)),
        None => interval,
    }
}

/// `dns app.internal:8080` or `srv _http._tcp.app.internal`, for logs.
fn describe(lookup: &DiscoveryLookup) -> String {
    match lookup {
        DiscoveryLookup::Dns { host, port } => format!("dns {host}:{port}"),
        DiscoveryLookup::Srv(name) => format!("srv {name}"),
    }
}
