//! The stick table: affinity that lives on the balancer's side, for the modes where the
//! client carries no Tether cookie (`client_ip`, `header`, `app_cookie`).
//!
//! - Keys are never stored raw: a [`KeyHasher`] turns a client's key (an IP prefix, a header
//!   value, an application session id) into a 128-bit keyed hash. Its seed derives from the
//!   cookie key, so instances that share keys agree on hashes (the Redis store relies on it)
//!   and someone reading the table learns nothing about clients.
//! - Values are server *stable names*, never addresses or positions.
//! - Expiry is judged against the caller's `now`, with the same [`Expiry`] policy as the
//!   cookie (idle and absolute), so it is testable without a real clock.
//! - [`StickStore`] is the seam for the Redis store of a later issue; [`memory::MemoryStore`]
//!   is the in-process one: bounded, idle-expiring, evicting when full, and counting the
//!   sessions bound to each server without scanning.

pub mod memory;

use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_128_with_seed;

use crate::affinity::Expiry;

/// A client key after keyed hashing.
pub type StickKey = u128;

/// Hashes raw client keys with a secret seed.
#[derive(Debug, Clone, Copy)]
pub struct KeyHasher {
    seed: u64,
}

impl KeyHasher {
    /// A hasher with the given secret seed (derive it from a shared secret so instances agree).
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }

    /// The stored form of `raw`.
    pub fn hash(&self, raw: &[u8]) -> StickKey {
        xxh3_128_with_seed(raw, self.seed)
    }
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A live binding to this server; its idle clock was refreshed.
    Bound(Arc<str>),
    /// There was a binding but it had expired (it is now removed).
    Expired,
    /// No binding.
    Missing,
}

/// One binding, as listed by the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The hashed key.
    pub key: StickKey,
    /// Server stable name.
    pub server: Arc<str>,
    /// Unix seconds when it was made.
    pub created: u32,
    /// Unix seconds when it was last used.
    pub last_used: u32,
}

/// A table of key → server bindings for one backend.
pub trait StickStore: Send + Sync + std::fmt::Debug {
    /// Looks `key` up at time `now` and refreshes its idle clock when live.
    fn get(&self, key: StickKey, now: u32) -> Lookup;
    /// Binds `key` to `server` unless a live binding exists; returns the server that holds
    /// the key afterwards (the existing one when another request won the race).
    fn bind_if_absent(&self, key: StickKey, server: &Arc<str>, now: u32) -> Arc<str>;
    /// Binds `key` to `server`, replacing any binding (re-pin after failover).
    fn rebind(&self, key: StickKey, server: &Arc<str>, now: u32);
    /// How many live bindings point at `server`.
    fn sessions_bound(&self, server: &str) -> u64;
    /// Number of bindings held.
    fn len(&self) -> u64;
    /// True when no binding is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Up to `limit` bindings (any order).
    fn list(&self, limit: usize) -> Vec<Binding>;
    /// Forgets every binding.
    fn clear(&self);
    /// Changes the expiry policy (reload).
    fn set_expiry(&self, expiry: Expiry);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_keyed() {
        let a = KeyHasher::new(1);
        let b = KeyHasher::new(2);
        assert_eq!(a.hash(b"10.0.0.1"), a.hash(b"10.0.0.1"));
        assert_ne!(a.hash(b"10.0.0.1"), b.hash(b"10.0.0.1"));
        assert_ne!(a.hash(b"10.0.0.1"), a.hash(b"10.0.0.2"));
    }
}
