//! Which server serves the next attempt, and admission to it.
//!
//! Selection returns one candidate in preference order — the pinned server when it can take
//! the request, else the balancer's (or, for a new table key, rendezvous hashing's) choice
//! among primaries, else among backups — skipping servers that are down, in maintenance,
//! already tried or at their connection limit. Admission then takes a slot on the chosen
//! server: a semaphore permit (FIFO among waiters) that lives in the response body, so the
//! slot is held until the response has been passed on. Waiting is bounded by the backend's
//! `queue_size` and `queue_timeout`.

use std::sync::atomic::Ordering;

use tether_core::balance::rendezvous;
use tokio::sync::OwnedSemaphorePermit;

use super::affinity::{First, Pin};
use super::error::ProxyError;
use tether_core::AdminState;

use crate::config::{OnAllDown, OnServerDown, OnServerFull};
use crate::snapshot::BackendView;

/// Most attempts one request can make (`retry.attempts` is at most 10).
const MAX_ATTEMPTS: usize = 10;

/// Servers already tried for this request, kept inline (no allocation per request).
#[derive(Default)]
pub struct Tried {
    servers: [usize; MAX_ATTEMPTS],
    len: usize,
}

impl Tried {
    /// Records an attempt.
    pub fn push(&mut self, i: usize) {
        if let Some(slot) = self.servers.get_mut(self.len) {
            *slot = i;
            self.len += 1;
        }
    }

    /// Attempts so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was tried yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether server `i` was tried.
    pub fn contains(&self, i: usize) -> bool {
        self.servers[..self.len].contains(&i)
    }
}

/// The server for the next attempt. When it is full, [`admit`] waits for a slot on it.
#[derive(Debug, Clone, Copy)]
pub struct Pick {
    /// Index in the backend.
    pub server: usize,
    /// Served away from a full pinned server, keeping the pin (`on_server_full = "spill"`).
    pub spilled: bool,
}

/// The `hash_key = "client_ip"` key of a client address.
pub fn ip_key(ip: std::net::IpAddr) -> u64 {
    match ip {
        std::net::IpAddr::V4(a) => tether_core::balance::key_hash(&a.octets()),
        std::net::IpAddr::V6(a) => tether_core::balance::key_hash(&a.octets()),
    }
}

/// Chooses the server for the next attempt; `key` is the request's `hash_key` for the keyed
/// algorithms (`hash`, `maglev`).
pub fn choose(
    backend: &BackendView,
    pin: Option<&Pin>,
    tried: &Tried,
    key: Option<u64>,
) -> Result<Pick, ProxyError> {
    let pinned = pin.and_then(|p| p.server).zip(backend.sticky.as_ref());
    if let Some((s, sticky)) = pinned {
        let server = &backend.servers[s];
        if !tried.contains(s) && server.state.accepts_pinned() {
            if !server.full() {
                return Ok(Pick { server: s, spilled: false });
            }
            match sticky.config.on_server_full {
                OnServerFull::Queue => return Ok(Pick { server: s, spilled: false }),
                OnServerFull::Spill => {
                    // Elsewhere if anything has room; otherwise wait for the pinned server.
                    return Ok(balance(backend, (pin, key), tried, false)
                        .map(|i| Pick { server: i, spilled: true })
                        .unwrap_or(Pick { server: s, spilled: false }));
                }
                OnServerFull::Redispatch => {}
            }
        } else if sticky.config.on_server_down == OnServerDown::Fail
            && pin.is_some_and(|p| p.first == First::No)
        {
            // A client's own pin fails; a shared first pick (no cookie of the client's own
            // yet) moves like a new session.
            return Err(ProxyError::PinnedServerDown);
        }
    }
    if let Some(i) = balance(backend, (pin, key), tried, false) {
        return Ok(Pick { server: i, spilled: false });
    }
    // Everything usable is full: queue for the server the balancer would have chosen.
    if let Some(i) = balance(backend, (pin, key), tried, true) {
        return Ok(Pick { server: i, spilled: false });
    }
    if backend.on_all_down == OnAllDown::FailOpen {
        // Nothing is healthy: try any server not in maintenance rather than fail outright.
        let ok = |i: usize| {
            let s = &backend.servers[i].state;
            !tried.contains(i) && s.admin_state() != AdminState::Maint
        };
        if let Some(i) = backend.balancer.pick(&ok) {
            return Ok(Pick { server: i, spilled: false });
        }
    }
    Err(ProxyError::NoServer)
}

/// Whether another untried server could take the request (before giving up a response).
pub fn has_alternative(backend: &BackendView, tried: &Tried) -> bool {
    backend.servers.iter().enumerate().any(|(i, s)| !tried.contains(i) && s.state.accepts_new())
}

/// The balancer's choice among usable primaries, else backups; `even_full` also accepts
/// servers at their connection limit.
fn balance(
    backend: &BackendView,
    (pin, request_key): (Option<&Pin>, Option<u64>),
    tried: &Tried,
    even_full: bool,
) -> Option<usize> {
    let ok = |i: usize, backup: bool| {
        let s = &backend.servers[i];
        s.backup == backup
            && !tried.contains(i)
            && s.state.accepts_new()
            && (even_full || !s.full())
    };
    // A new table key goes where its hash says, so concurrent first requests of one client
    // (and other instances) agree without racing; load-aware balancers opt out so that new
    // capacity receives new sessions first.
    let by_key =
        pin.filter(|p| !p.learn_only).and_then(|p| p.key).filter(|_| !backend.pin_by_balancer);
    let pick = |backup: bool, skip: Option<usize>| {
        let ok = |i: usize| Some(i) != skip && ok(i, backup);
        match (by_key, request_key) {
            (Some(key), _) => rendezvous::pick(&backend.members, key, &ok),
            (None, Some(key)) => backend.balancer.pick_key(key, &ok),
            (None, None) if backend.least_sessions => fewest_sessions(backend, &ok),
            (None, None) => backend.balancer.pick(&ok),
        }
    };
    let first = pick(false, None).or_else(|| pick(true, None))?;
    Some(slow_start(backend, first).unwrap_or_else(|| {
        // The pick is still ramping up and lost the draw: choose again without it.
        pick(false, Some(first)).or_else(|| pick(true, Some(first))).unwrap_or(first)
    }))
}

/// `least_sessions`: the usable server with the fewest live sessions relative to its weight
/// (ties: fewer requests in flight), counted as placed at once.
fn fewest_sessions(backend: &BackendView, ok: &dyn Fn(usize) -> bool) -> Option<usize> {
    let now_ms = crate::clock::unix_now_ms();
    let cost = |i: usize| {
        let s = &backend.servers[i];
        (u128::from(backend.live_sessions(i, now_ms)), u128::from(s.weight), s.state.in_flight())
    };
    let mut best: Option<(usize, (u128, u128, u64))> = None;
    for i in (0..backend.servers.len()).filter(|&i| ok(i)) {
        let c = cost(i);
        let better = best.is_none_or(|(_, b)| {
            // c.sessions / c.weight < b.sessions / b.weight, without division.
            let (lhs, rhs) = (c.0 * b.1, b.0 * c.1);
            lhs < rhs || (lhs == rhs && c.2 < b.2)
        });
        if better {
            best = Some((i, c));
        }
    }
    let (i, _) = best?;
    backend.placed_session(i);
    Some(i)
}

/// Slow start: a server that recently recovered (or was added) takes only a growing share of
/// new sessions, by admitting the balancer's pick with probability equal to its ramp.
/// `None` when the pick should be skipped this time.
fn slow_start(backend: &BackendView, i: usize) -> Option<usize> {
    if backend.slow_start_ms == 0 {
        return Some(i);
    }
    let ramp = backend.servers[i].state.ramp(crate::clock::unix_now_ms(), backend.slow_start_ms);
    if ramp >= 1.0 || (backend.rng.below(1_000_000) as f64) < ramp * 1_000_000.0 {
        Some(i)
    } else {
        None
    }
}

/// Takes a connection slot on the picked server: at once when it has room, else by waiting
/// in the backend's bounded queue. `None` when the server has no limit.
pub async fn admit(
    backend: &BackendView,
    pick: Pick,
) -> Result<Option<OwnedSemaphorePermit>, ProxyError> {
    let Some(slots) = &backend.servers[pick.server].slots else { return Ok(None) };
    if let Ok(p) = slots.clone().try_acquire_owned() {
        return Ok(Some(p));
    }
    let limits = &backend.limits;
    let waiting = &backend.waiting;
    if waiting.fetch_add(1, Ordering::AcqRel) >= limits.queue_size as usize {
        waiting.fetch_sub(1, Ordering::AcqRel);
        return Err(ProxyError::Full);
    }
    let result = tokio::time::timeout(limits.queue_timeout, slots.clone().acquire_owned()).await;
    waiting.fetch_sub(1, Ordering::AcqRel);
    match result {
        Ok(Ok(p)) => Ok(Some(p)),
        _ => Err(ProxyError::Full),
    }
}

#[cfg(test)]
mod tests;
