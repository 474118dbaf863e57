//! The in-process stick table, on moka.
//!
//! moka gives a bounded concurrent map with near-LRU eviction (TinyLFU admission) and no
//! global lock. On top of it this store adds what a balancer needs:
//! - expiry judged with the caller's clock and Tether's [`Expiry`] policy; moka removes an
//!   entry on its own clock a little later ([`Backstop`]: the same idle window and lifetime
//!   plus [`GRACE`]), so an entry nobody asks for again stops being counted soon after
//!   Tether stopped honouring it, and its memory is reclaimed;
//! - a per-server count of bound sessions, kept exact by moka's eviction listener (every
//!   removal — expiry, eviction, replacement, flush — decrements the server it pointed at),
//!   so "how many sessions does this draining server still hold?" never scans the table.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use moka::notification::RemovalCause;
use moka::sync::Cache;

use super::{Binding, Lookup, StickKey, StickStore};
use crate::affinity::Expiry;

#[derive(Debug)]
struct Entry {
    server: Arc<str>,
    created: u32,
    last_used: AtomicU32,
}

type Counts = ArcSwap<HashMap<Arc<str>, Arc<AtomicI64>>>;

/// How long after Tether stops honouring a binding moka removes it. Tether judges in whole
/// seconds of the wall clock (up to 1 s earlier or later than moka's monotonic clock); the
/// rest is room for a small step of the wall clock. Never shorter: an entry moka removed
/// while Tether still judged it live would lose its client's pin.
pub const GRACE: Duration = Duration::from_secs(5);

/// moka's per-entry expiry: the window [`Expiry`] gives a binding, plus a grace, counted on
/// moka's clock from the binding's last write and last read.
struct Backstop {
    policy: Arc<ArcSwap<Expiry>>,
    grace: Duration,
}

impl Backstop {
    /// How long an entry written `age` ago may still live from now: the idle window or what
    /// is left of its lifetime, whichever ends first, plus the grace; `None` when `policy`
    /// sets neither limit.
    fn window(policy: Expiry, age: Duration, grace: Duration) -> Option<Duration> {
        let secs = |s: u32| Duration::from_secs(u64::from(s));
        let idle = (policy.idle_timeout > 0).then(|| secs(policy.idle_timeout));
        let lifetime =
            (policy.max_lifetime > 0).then(|| secs(policy.max_lifetime).saturating_sub(age));
        let left = match (idle, lifetime) {
            (Some(i), Some(l)) => i.min(l),
            (one, other) => one.or(other)?,
        };
        Some(left + grace)
    }

    fn after_write(&self) -> Option<Duration> {
        Self::window(**self.policy.load(), Duration::ZERO, self.grace)
    }
}

impl moka::Expiry<StickKey, Arc<Entry>> for Backstop {
    fn expire_after_create(&self, _: &StickKey, _: &Arc<Entry>, _: Instant) -> Option<Duration> {
        self.after_write()
    }

    fn expire_after_update(
        &self,
        _: &StickKey,
        _: &Arc<Entry>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.after_write()
    }

    fn expire_after_read(
        &self,
        _: &StickKey,
        _: &Arc<Entry>,
        read_at: Instant,
        _: Option<Duration>,
        written_at: Instant,
    ) -> Option<Duration> {
        let age = read_at.saturating_duration_since(written_at);
        Self::window(**self.policy.load(), age, self.grace)
    }
}

/// A bounded in-memory stick table for one backend.
pub struct MemoryStore {
    cache: Cache<StickKey, Arc<Entry>>,
    counts: Arc<Counts>,
    expiry: Arc<ArcSwap<Expiry>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").field("entries", &self.cache.entry_count()).finish()
    }
}

impl MemoryStore {
    /// The expiry policy in force.
    pub fn expiry(&self) -> Expiry {
        **self.expiry.load()
    }

    /// A table holding at most `capacity` bindings that expire per `expiry`.
    pub fn new(capacity: u64, expiry: Expiry) -> Self {
        Self::with_grace(capacity, expiry, GRACE)
    }

    /// [`new`](Self::new) with moka removing expired bindings `grace` after Tether stops
    /// honouring them (tests shorten it).
    pub fn with_grace(capacity: u64, expiry: Expiry, grace: Duration) -> Self {
        let counts: Arc<Counts> = Arc::new(ArcSwap::from_pointee(HashMap::new()));
        let listener_counts = Arc::clone(&counts);
        let policy = Arc::new(ArcSwap::from_pointee(expiry));
        let cache = Cache::builder()
            .max_capacity(capacity)
            .expire_after(Backstop { policy: Arc::clone(&policy), grace })
            .eviction_listener(move |_k, v: Arc<Entry>, _cause: RemovalCause| {
                if let Some(c) = listener_counts.load().get(&v.server) {
                    c.fetch_sub(1, Ordering::Relaxed);
                }
            })
            .build();
        Self { cache, counts, expiry: policy }
    }

    fn counter(&self, server: &Arc<str>) -> Arc<AtomicI64> {
        if let Some(c) = self.counts.load().get(server) {
            return Arc::clone(c);
        }
        // A server seen for the first time: copy-on-write (rare: once per server).
        let mut out = None;
        self.counts.rcu(|m| {
            let mut m = HashMap::clone(m);
            let c = Arc::clone(m.entry(Arc::clone(server)).or_default());
            out = Some(c);
            m
        });
        out.unwrap_or_default()
    }

    fn insert(&self, key: StickKey, server: &Arc<str>, now: u32) {
        self.counter(server).fetch_add(1, Ordering::Relaxed);
        let entry =
            Entry { server: Arc::clone(server), created: now, last_used: AtomicU32::new(now) };
        self.cache.insert(key, Arc::new(entry));
    }

    fn live(&self, e: &Entry, now: u32) -> bool {
        let expiry = **self.expiry.load();
        let last = e.last_used.load(Ordering::Relaxed);
        expiry.judge(e.created, last, now) != crate::affinity::Verdict::Expired
    }

    /// Applies pending evictions now (tests and figures; moka otherwise does it lazily).
    pub fn sync(&self) {
        self.cache.run_pending_tasks();
    }

    /// Puts `expiry` in force for lookups; whether it lengthens a window, in which case the
    /// entries' removal times, set by the old windows, need [`reschedule`](Self::reschedule)
    /// (else an entry the new policy keeps could be removed).
    /// [`StickStore::set_expiry`] does both.
    pub fn replace_expiry(&self, expiry: Expiry) -> bool {
        let before = self.expiry.swap(Arc::new(expiry));
        longer(expiry.idle_timeout, before.idle_timeout)
            || longer(expiry.max_lifetime, before.max_lifetime)
    }

    /// Reads every entry once, so that moka times its removal by the policy now in force:
    /// ~1.7 s for a million entries, so callers with a runtime run it off their event loop.
    pub fn reschedule(&self) {
        for (key, _) in self.cache.iter() {
            self.cache.get(&*key);
        }
    }
}

impl MemoryStore {
    /// Like [`StickStore::get`], also returning when the binding was last used before this
    /// lookup (so a shared store in front of which this is a cache can refresh its TTL only
    /// now and then, not on every request).
    pub fn get_with_last_use(&self, key: StickKey, now: u32) -> (Lookup, u32) {
        let Some(e) = self.cache.get(&key) else { return (Lookup::Missing, 0) };
        if !self.live(&e, now) {
            self.cache.invalidate(&key);
            return (Lookup::Expired, 0);
        }
        let before = e.last_used.fetch_max(now, Ordering::Relaxed);
        (Lookup::Bound(Arc::clone(&e.server)), before)
    }
}

impl StickStore for MemoryStore {
    fn get(&self, key: StickKey, now: u32) -> Lookup {
        let Some(e) = self.cache.get(&key) else { return Lookup::Missing };
        if !self.live(&e, now) {
            self.cache.invalidate(&key);
            return Lookup::Expired;
        }
        e.last_used.fetch_max(now, Ordering::Relaxed);
        Lookup::Bound(Arc::clone(&e.server))
    }

    fn bind_if_absent(&self, key: StickKey, server: &Arc<str>, now: u32) -> Arc<str> {
        let fresh = || {
            Arc::new(Entry {
                server: Arc::clone(server),
                created: now,
                last_used: AtomicU32::new(now),
            })
        };
        let entry = self.cache.entry(key).or_insert_with(fresh);
        if entry.is_fresh() {
            self.counter(server).fetch_add(1, Ordering::Relaxed);
            return Arc::clone(server);
        }
        let existing = entry.into_value();
        if self.live(&existing, now) {
            existing.last_used.fetch_max(now, Ordering::Relaxed);
            return Arc::clone(&existing.server);
        }
        self.insert(key, server, now);
        Arc::clone(server)
    }

    fn rebind(&self, key: StickKey, server: &Arc<str>, now: u32) {
        self.insert(key, server, now);
    }

    fn sessions_bound(&self, server: &str) -> u64 {
        // Evictions are applied lazily; apply them so the figure is exact (admin path only).
        self.cache.run_pending_tasks();
        self.counts.load().get(server).map_or(0, |c| c.load(Ordering::Relaxed).max(0) as u64)
    }

    fn len(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    fn list(&self, limit: usize) -> Vec<Binding> {
        self.cache
            .iter()
            .take(limit)
            .map(|(k, e)| Binding {
                key: *k,
                server: Arc::clone(&e.server),
                created: e.created,
                last_used: e.last_used.load(Ordering::Relaxed),
            })
            .collect()
    }

    fn clear(&self) {
        self.cache.invalidate_all();
        self.cache.run_pending_tasks();
    }

    fn set_expiry(&self, expiry: Expiry) {
        if self.replace_expiry(expiry) {
            self.reschedule();
        }
    }
}

/// Whether limit `new` is longer than `old` (0: no limit).
fn longer(new: u32, old: u32) -> bool {
    old != 0 && (new == 0 || new > old)
}

#[cfg(test)]
mod tests;
