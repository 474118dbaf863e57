//! The stick table as the request path sees it: the in-process [`MemoryStore`], or the same
//! store used as a local cache in front of Redis ([`redis::RedisTable`]) so that several
//! Tether instances share table-based affinity.
//!
//! Lookups that the local table answers never wait; only a local miss asks Redis, within
//! `redis_timeout`. Writes to Redis happen in the background.

pub mod redis;

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
            Table::Redis(r) => r.get(key, now).await,
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

    /// Sessions bound to `server` in this instance's table.
    pub fn sessions_bound(&self, server: &str) -> u64 {
        self.local().sessions_bound(server)
    }

    /// Entries in this instance's table.
    pub fn len(&self) -> u64 {
        self.local().len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Up to `limit` entries of this instance's table.
    pub fn list(&self, limit: usize) -> Vec<Binding> {
        self.local().list(limit)
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
            Table::Memory(m) => m.set_expiry(expiry),
            Table::Redis(r) => r.set_expiry(expiry),
        }
    }
}
