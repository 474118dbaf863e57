//! Per-server runtime state, shared by the data path, health checks and the admin API.
//!
//! A [`ServerState`] is keyed by the server's stable name and survives configuration reloads:
//! the snapshot builder looks the old one up by name and reuses it, so health, counters and
//! in-flight figures carry over. Every field is an atomic; nothing here takes a lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};

use arc_swap::ArcSwap;

/// What health checking last concluded about a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// No check has concluded yet (or none is configured): treated as usable.
    Unchecked,
    /// Checks pass.
    Up,
    /// Checks or passive detection say the server is failing: never selected.
    Down,
}

impl Health {
    /// The lowercase name used in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unchecked => "unchecked",
            Health::Up => "up",
            Health::Down => "down",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => Health::Up,
            2 => Health::Down,
            _ => Health::Unchecked,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Health::Unchecked => 0,
            Health::Up => 1,
            Health::Down => 2,
        }
    }
}

/// The operator's intent for a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdminState {
    /// Takes new and pinned sessions.
    Ready,
    /// Keeps serving sessions pinned to it, takes no new ones.
    Drain,
    /// Takes nothing; pinned sessions go elsewhere.
    Maint,
}

impl AdminState {
    /// The lowercase name used in config, JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }

    /// Parses `ready`, `drain` or `maint`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ready" => Some(AdminState::Ready),
            "drain" => Some(AdminState::Drain),
            "maint" => Some(AdminState::Maint),
            _ => None,
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => AdminState::Drain,
            2 => AdminState::Maint,
            _ => AdminState::Ready,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            AdminState::Ready => 0,
            AdminState::Drain => 1,
            AdminState::Maint => 2,
        }
    }
}

/// Upper bounds (milliseconds) of the per-server latency buckets; a last bucket takes the rest.
pub const LATENCY_BOUNDS_MS: [u64; 13] =
    [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000];

/// Time constant of the peak-EWMA response time (microseconds), 1 s: an older average keeps
/// the weight `exp(-elapsed / decay)` against a faster new sample. Short enough that a server
/// which recovered from a slow spell is trusted again within a few seconds of probes (the
/// `least_time` balancer sends it one pick in 32 meanwhile); Linkerd and Finagle use 10 s,
/// which keeps a once-slow server out for the better part of a minute.
pub const RESPONSE_TIME_DECAY_US: u64 = 1_000_000;

/// Runtime state of one server, identified by its stable name.
#[derive(Debug)]
pub struct ServerState {
    name: Arc<str>,
    health: AtomicU8,
    admin: AtomicU8,
    in_flight: AtomicU64,
    requests_total: AtomicU64,
    errors_total: AtomicU64,
    ejected: AtomicBool,
    consecutive_failures: AtomicU32,
    ejections: AtomicU32,
    last_change: AtomicU64,
    reason: ArcSwap<String>,
    recovered_at_ms: AtomicU64,
    latency: [AtomicU64; LATENCY_BOUNDS_MS.len() + 1],
    /// Peak-EWMA response time in microseconds, as `f64` bits; 0.0 until the first sample.
    rt_ewma_us: AtomicU64,
    /// Caller's clock (microseconds) at the latest sample, for the decay.
    rt_at_us: AtomicU64,
}

impl ServerState {
    /// A new server: health unchecked, state ready, all counters zero.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            health: AtomicU8::new(Health::Unchecked.to_u8()),
            admin: AtomicU8::new(AdminState::Ready.to_u8()),
            in_flight: AtomicU64::new(0),
            requests_total: AtomicU64::new(0),
            errors_total: AtomicU64::new(0),
            ejected: AtomicBool::new(false),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            last_change: AtomicU64::new(0),
            reason: ArcSwap::from_pointee(String::new()),
            recovered_at_ms: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            rt_ewma_us: AtomicU64::new(0),
            rt_at_us: AtomicU64::new(0),
        }
    }

    /// Counts one response head that took `micros` (dashboard latency per server).
    pub fn record_latency(&self, micros: u64) {
        let ms = micros / 1000;
        let i = LATENCY_BOUNDS_MS.iter().position(|&b| ms < b).unwrap_or(LATENCY_BOUNDS_MS.len());
        self.latency[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Responses per latency bucket since start (see [`LATENCY_BOUNDS_MS`]).
    pub fn latency_counts(&self) -> Vec<u64> {
        self.latency.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }

    /// Feeds one response time (`micros`, e.g. to the response head) into the peak-EWMA that
    /// the `least_time` balancer ranks servers by; `now_us` is the caller's monotonic clock in
    /// microseconds (tether-core reads no clock). Peak: a sample above the average replaces it
    /// at once, so a server turning slow is avoided from its first slow answer; a sample below
    /// is blended in with weight `1 - exp(-elapsed / RESPONSE_TIME_DECAY_US)`, elapsed being
    /// the time since the previous sample. Samples count as at least 1 µs, so an observed
    /// server never looks unobserved. Lock-free: concurrent samples each claim their own
    /// stretch of elapsed time and none is lost.
    pub fn observe_response_time(&self, micros: u64, now_us: u64) {
        let sample = micros.max(1) as f64;
        let last = self.rt_at_us.fetch_max(now_us, Ordering::Relaxed);
        let elapsed = now_us.saturating_sub(last) as f64;
        let keep = (-elapsed / RESPONSE_TIME_DECAY_US as f64).exp();
        // The closure always returns Some, so the update cannot fail.
        let _ = self.rt_ewma_us.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
            let old = f64::from_bits(bits);
            let new = if sample > old { sample } else { old * keep + sample * (1.0 - keep) };
            Some(new.to_bits())
        });
    }

    /// The peak-EWMA response time in microseconds; 0.0 when never observed.
    pub fn response_time_ewma_us(&self) -> f64 {
        f64::from_bits(self.rt_ewma_us.load(Ordering::Relaxed))
    }

    /// Marks the moment the server became usable again (recovery, end of ejection, added at
    /// runtime), in unix milliseconds: slow start ramps its share from there.
    pub fn mark_recovered(&self, unix_ms: u64) {
        self.recovered_at_ms.store(unix_ms, Ordering::Relaxed);
    }

    /// The share of its normal load a recovering server should take at `unix_ms` under a
    /// `ramp_ms` slow start: from 10% right after recovery to 100% at the end of the ramp.
    pub fn ramp(&self, unix_ms: u64, ramp_ms: u64) -> f64 {
        let since = self.recovered_at_ms.load(Ordering::Relaxed);
        if ramp_ms == 0 || since == 0 {
            return 1.0;
        }
        let elapsed = unix_ms.saturating_sub(since);
        if elapsed >= ramp_ms {
            1.0
        } else {
            (0.1 + 0.9 * elapsed as f64 / ramp_ms as f64).min(1.0)
        }
    }

    /// Passive outlier detection has ejected this server for now.
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Acquire)
    }

    /// Ejects (true) or returns (false) the server; returns the previous value.
    pub fn set_ejected(&self, ejected: bool) -> bool {
        if ejected {
            self.ejections.fetch_add(1, Ordering::Relaxed);
        }
        self.ejected.swap(ejected, Ordering::AcqRel)
    }

    /// How many times the server has been ejected (for exponential ejection times).
    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Records one upstream outcome for passive detection; returns the number of consecutive
    /// failures after it (0 after a success).
    pub fn record_outcome(&self, ok: bool) -> u32 {
        if ok {
            // Avoid a write on the common path when there is nothing to reset.
            if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
                self.consecutive_failures.store(0, Ordering::Relaxed);
            }
            0
        } else {
            self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1
        }
    }

    /// Records why the server last changed state, and when (unix seconds).
    pub fn note_change(&self, reason: String, unix_secs: u64) {
        self.reason.store(Arc::new(reason));
        self.last_change.store(unix_secs, Ordering::Relaxed);
    }

    /// Why the server last changed health or ejection state ("" when it never did).
    pub fn reason(&self) -> Arc<String> {
        self.reason.load_full()
    }

    /// When it last changed (unix seconds), 0 when it never did.
    pub fn last_change(&self) -> u64 {
        self.last_change.load(Ordering::Relaxed)
    }

    /// The stable name from the configuration.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The shared name, cheap to clone into logs and responses.
    pub fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    /// Current health.
    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Acquire))
    }

    /// Sets health; returns the previous value so callers can log transitions only.
    pub fn set_health(&self, h: Health) -> Health {
        Health::from_u8(self.health.swap(h.to_u8(), Ordering::AcqRel))
    }

    /// Current admin state.
    pub fn admin_state(&self) -> AdminState {
        AdminState::from_u8(self.admin.load(Ordering::Acquire))
    }

    /// Sets the admin state; returns the previous one.
    pub fn set_admin_state(&self, s: AdminState) -> AdminState {
        AdminState::from_u8(self.admin.swap(s.to_u8(), Ordering::AcqRel))
    }

    /// Healthy as far as checks and passive detection know (not down, not ejected).
    pub fn is_healthy(&self) -> bool {
        self.health() != Health::Down && !self.is_ejected()
    }

    /// May this server receive a *new* session (balancer choice)?
    pub fn accepts_new(&self) -> bool {
        self.is_healthy() && self.admin_state() == AdminState::Ready
    }

    /// May this server keep serving a session already pinned to it? Draining servers do.
    pub fn accepts_pinned(&self) -> bool {
        self.is_healthy() && self.admin_state() != AdminState::Maint
    }

    /// Requests currently being served (until their response body ends).
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests started on this server since it was first configured.
    pub fn requests_total(&self) -> u64 {
        self.requests_total.load(Ordering::Relaxed)
    }

    /// Requests to this server that ended in an upstream error.
    pub fn errors_total(&self) -> u64 {
        self.errors_total.load(Ordering::Relaxed)
    }

    /// Counts one upstream error.
    pub fn record_error(&self) {
        self.errors_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Starts a request: counts it and returns the guard that keeps it in flight.
    pub fn begin(self: &Arc<Self>) -> InFlightGuard {
        self.requests_total.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard { server: Arc::clone(self) }
    }
}

/// Counts one request as in flight on a server for as long as it lives. The proxy moves it
/// into the response body, so a streamed response stays counted until its last byte.
#[derive(Debug)]
pub struct InFlightGuard {
    server: Arc<ServerState>,
}

impl InFlightGuard {
    /// The server this request is counted on.
    pub fn server(&self) -> &Arc<ServerState> {
        &self.server
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.server.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_counts_until_dropped() {
        let s = Arc::new(ServerState::new("a"));
        let g1 = s.begin();
        let g2 = s.begin();
        assert_eq!(s.in_flight(), 2);
        drop(g1);
        assert_eq!(s.in_flight(), 1);
        drop(g2);
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.requests_total(), 2);
    }

    #[test]
    fn drain_keeps_pinned_sessions_but_takes_no_new_ones() {
        let s = ServerState::new("a");
        s.set_admin_state(AdminState::Drain);
        assert!(!s.accepts_new());
        assert!(s.accepts_pinned());
        s.set_admin_state(AdminState::Maint);
        assert!(!s.accepts_pinned());
    }

    #[test]
    fn slow_start_ramps_from_a_tenth_to_everything() {
        let s = ServerState::new("a");
        assert_eq!(s.ramp(5_000, 30_000), 1.0, "never recovered: full share");
        s.mark_recovered(10_000);
        assert!((s.ramp(10_000, 30_000) - 0.1).abs() < 1e-9);
        assert!((s.ramp(25_000, 30_000) - 0.55).abs() < 1e-9);
        assert_eq!(s.ramp(40_000, 30_000), 1.0);
        assert_eq!(s.ramp(10_000, 0), 1.0, "no slow start");
    }

    #[test]
    fn response_time_jumps_up_at_once_and_decays_down() {
        let s = ServerState::new("a");
        assert_eq!(s.response_time_ewma_us(), 0.0, "never observed");
        s.observe_response_time(1_000, 1_000_000);
        assert_eq!(s.response_time_ewma_us(), 1_000.0, "first sample taken whole");
        s.observe_response_time(50_000, 1_001_000);
        assert_eq!(s.response_time_ewma_us(), 50_000.0, "peak: slower sample replaces");
        // One decay constant later a fast sample keeps exp(-1) of the old average.
        s.observe_response_time(1_000, 1_001_000 + RESPONSE_TIME_DECAY_US);
        let expected = 50_000.0 / std::f64::consts::E + 1_000.0 * (1.0 - 1.0 / std::f64::consts::E);
        assert!((s.response_time_ewma_us() - expected).abs() < 1e-6);
        // A sample stamped in the past (another thread's clock read) changes nothing.
        s.observe_response_time(1_000, 5);
        assert!((s.response_time_ewma_us() - expected).abs() < 1e-6);
        s.observe_response_time(0, 10_000_000);
        assert!(s.response_time_ewma_us() >= 1.0, "an observed server never reads as new");
    }

    #[test]
    fn down_server_takes_nothing() {
        let s = ServerState::new("a");
        assert_eq!(s.set_health(Health::Down), Health::Unchecked);
        assert!(!s.accepts_new());
        assert!(!s.accepts_pinned());
    }
}
