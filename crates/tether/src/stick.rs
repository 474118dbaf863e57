//! The stick table as the request path sees it: the in-process [`MemoryStore`], or the same
//! store used as a local cache in front of Redis ([`redis::RedisTable`]) so that several
//! Tether instances share table-based affinity.
//!
//! Lookups that the local table answers never wait; only a local miss asks Redis, within
//! `redis_timeout`. Writes to Redis happen in the background.

pub mod redis;

pub use redis::{SessionEntry, Sessions};

use std::sync::Arc;

use tether_core::affinity::Expiry;
use tether_core::stick::memory::MemoryStore;
use tether_core::stick::{Binding, Lookup, StickKey, StickStore};

/// A backend's stick table.
#[derive(Debug, Clone)]
pub enum Table {
    /// In this process only.
    Memory(Arc<MemoryStore>),
    /// Shared through Redis, with a local cache.
    Redis(Arc<redis::RedisTable>),
}

impl Table {
    fn local(&self) -> &MemoryStore {
        match self {
            Table::Memory(m) => m,
            Table::Redis(r) => r.local(),
        }
    }

    /// Looks `key` up: the local table first, then (Redis) the shared one.
    pub async fn get(&self, key: StickKey, now: u32) -> Lookup {
        match self {
            Table::Memory(m) => m.get(key, now),
            // Boxed: a network round trip whose future (~2 KB) would otherwise be carried by
            // every request's future, memory tables and cookies included.
            Table::Redis(r) => Box::pin(r.get(key, now)).await,
        }
    }

    /// Binds a new key unless bound; returns the server holding it.
    pub fn bind_if_absent(&self, key: StickKey, server: &Arc<str>, now: u32) -> Arc<str> {
        match self {
            Table::Memory(m) => m.bind_if_absent(key, server, now),
            Table::Redis(r) => r.bind_if_absent(key, server, now),
        }
    }

    /// Re-binds a key (failover, learned application cookie).
    pub fn rebind(&self, key: StickKey, server: &Arc<str>, now: u32) {
        match self {
            Table::Memory(m) => m.rebind(key, server, now),
            Table::Redis(r) => r.rebind(key, server, now),
        }
    }

    /// Sessions bound to `server` (with Redis: the shared count from the last census).
    pub fn sessions_bound(&self, server: &str) -> u64 {
        match self {
            Table::Memory(m) => m.sessions_bound(server),
            Table::Redis(r) => r.sessions_bound(server),
        }
    }

    /// Whether [`sessions_bound`](Self::sessions_bound) is a full count (a Redis census
    /// stops at its key budget).
    pub fn counts_exactly(&self) -> bool {
        match self {
            Table::Memory(_) => true,
            Table::Redis(r) => r.counts_exactly(),
        }
    }

    /// Entries in the table (with Redis: the shared count from the last census).
    pub fn len(&self) -> u64 {
        match self {
            Table::Memory(m) => m.len(),
            Table::Redis(r) => r.len(),
        }
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Up to `limit` bindings: from Redis when the table is shared and Redis answers,
    /// else from this instance's table.
    pub async fn sessions(&self, limit: usize) -> Sessions {
        if let Table::Redis(r) = self {
            if let Some(s) = r.sessions(limit).await {
                return s;
            }
        }
        let local = self.local();
        let entries: Vec<SessionEntry> = local
            .list(limit)
            .into_iter()
            .map(|b: Binding| SessionEntry {
                key: format!("{:032x}", b.key),
                server: b.server,
                created: Some(b.created),
                last_used: Some(b.last_used),
                expires: b.last_used.saturating_add(local.expiry().idle_timeout),
            })
            .collect();
        let total = local.len();
        Sessions { source: "local", total, complete: true, entries }
    }

    /// Forgets every binding (with Redis: this backend's keys there too, in the background).
    pub fn clear(&self) {
        match self {
            Table::Memory(m) => m.clear(),
            Table::Redis(r) => r.clear(),
        }
    }

    /// Changes the expiry policy (reload).
    pub fn set_expiry(&self, expiry: Expiry) {
        match self {
            Table::Memory(m) => set_local_expiry(m, expiry),
            Table::Redis(r) => r.set_expiry(expiry),
        }
    }
}

/// Puts `expiry` in force on a memory table. When it lengthens a window, every entry is
/// rescheduled on a blocking thread (a full table takes seconds, which the controller's admin
/// API and health checks must not wait for); without a runtime (tests), at once.
pub(crate) fn set_local_expiry(store: &Arc<MemoryStore>, expiry: Expiry) {
    if !store.replace_expiry(expiry) {
        return;
    }
    let store = Arc::clone(store);
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn_blocking(move || store.reschedule())),
        Err(_) => store.reschedule(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// On a runtime, a reload that lengthens the idle window reschedules the existing
    /// bindings from a blocking thread: one outlives the old window, as a control's does not.
    #[tokio::test]
    async fn a_longer_window_reaches_existing_bindings_from_a_blocking_thread() {
        let short = Expiry { idle_timeout: 1, max_lifetime: 0 };
        let kept = Arc::new(MemoryStore::with_grace(100, short, Duration::ZERO));
        let control = MemoryStore::with_grace(100, short, Duration::ZERO);
        let a: Arc<str> = Arc::from("a");
        kept.bind_if_absent(1, &a, 0);
        control.bind_if_absent(1, &a, 0);
        set_local_expiry(&kept, Expiry { idle_timeout: 600, max_lifetime: 0 });
        let gone = tether_testkit::wait_until(Duration::from_secs(20), || {
            control.sessions_bound("a") == 0
        })
        .await;
        assert!(gone, "the control's binding never went");
        assert_eq!(kept.sessions_bound("a"), 1, "removed by the old window");
    }
}
