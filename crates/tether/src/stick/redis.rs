//! Table-based affinity shared by several Tether instances through Redis.
//!
//! - Keys: `{prefix}:{backend}:{32 hex}` — the keyed 128-bit hash of the client's key (the
//!   seed derives from the shared cookie key, so instances agree), never the raw key. Values:
//!   server stable names. Every key has a TTL of the backend's `idle_timeout`, refreshed when
//!   used (at most once per quarter of the window per instance).
//! - Reads: the local table first; a local miss asks Redis (`GETEX`, refreshing the TTL) and
//!   waits at most `redis_timeout`.
//! - Writes never block a request: a new binding is `SET … NX GET` in the background (the first
//!   instance wins; a loser adopts the winner's server in its local table), a re-pin is a plain
//!   `SET`.
//! - Degradation: any error or timeout marks Redis unavailable (logged once, counted); for the
//!   next second requests use the local table alone, then one request probes again. The
//!   connection manager reconnects by itself. No request ever fails because of Redis.

mod census;
mod shared;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use arc_swap::ArcSwap;
use tether_core::affinity::Expiry;
use tether_core::stick::memory::MemoryStore;
use tether_core::stick::{Lookup, StickKey, StickStore};

pub use census::{SessionEntry, Sessions};
pub use shared::RedisShared;

/// One backend's table: a local [`MemoryStore`] in front of the shared Redis keys.
pub struct RedisTable {
    local: Arc<MemoryStore>,
    shared: Arc<RedisShared>,
    namespace: String,
    expiry: ArcSwap<Expiry>,
    census: ArcSwap<census::Census>,
}

impl std::fmt::Debug for RedisTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTable").field("namespace", &self.namespace).finish()
    }
}

impl RedisTable {
    /// The table of `backend`, with a local cache of `capacity` entries.
    /// Starts the background census of its keys in Redis.
    pub fn new(
        shared: Arc<RedisShared>,
        backend: &str,
        capacity: u64,
        expiry: Expiry,
    ) -> Arc<Self> {
        let namespace = format!("{}:{backend}:", shared.prefix);
        let table = Arc::new(Self {
            local: Arc::new(MemoryStore::new(capacity, expiry)),
            shared,
            namespace,
            expiry: ArcSwap::from_pointee(expiry),
            census: ArcSwap::from_pointee(census::Census::default()),
        });
        let weak = Arc::downgrade(&table);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(census::CENSUS_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(table) = weak.upgrade() else { return };
                if let Some(c) = census::take(&table.shared, &table.namespace).await {
                    table.census.store(Arc::new(c));
                }
            }
        });
        table
    }

    /// Sessions bound to `server`: Redis's count from the last census while it is recent,
    /// else this instance's table.
    pub fn sessions_bound(&self, server: &str) -> u64 {
        let c = self.census.load();
        if c.fresh() {
            c.per_server.get(server).copied().unwrap_or(0)
        } else {
            self.local.sessions_bound(server)
        }
    }

    /// Whether [`sessions_bound`](Self::sessions_bound) is a full count: the last census saw
    /// every key (or, when it is stale, the local table counts its own).
    pub fn counts_exactly(&self) -> bool {
        let c = self.census.load();
        !c.fresh() || c.complete
    }

    /// Bindings in Redis (last census) or, when that is stale, in the local table.
    pub fn len(&self) -> u64 {
        let c = self.census.load();
        if c.fresh() { c.total } else { self.local.len() }
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Up to `limit` bindings, read from Redis (a bounded SCAN); from the local table when
    /// Redis cannot be walked.
    pub async fn sessions(&self, limit: usize) -> Option<Sessions> {
        let now = crate::clock::unix_now();
        let mut entries = Vec::new();
        census::walk(&self.shared, &self.namespace, limit, true, |hex, server, ttl| {
            let left = u64::try_from(ttl.unwrap_or(0).max(0)).unwrap_or(0) / 1000;
            entries.push(census::SessionEntry {
                key: hex.to_owned(),
                server: Arc::from(server),
                created: None,
                last_used: None,
                expires: u32::try_from(now + left).unwrap_or(u32::MAX),
            });
        })
        .await?;
        let c = self.census.load();
        let (total, complete) = if c.fresh() {
            (c.total.max(entries.len() as u64), c.complete)
        } else {
            (entries.len() as u64, entries.len() < limit)
        };
        Some(Sessions { source: "redis", total, complete, entries })
    }

    /// The local cache.
    pub fn local(&self) -> &MemoryStore {
        &self.local
    }

    fn key(&self, key: StickKey) -> String {
        format!("{}{key:032x}", self.namespace)
    }

    fn ttl_ms(&self) -> u64 {
        let idle = u64::from(self.expiry.load().idle_timeout);
        if idle == 0 { 86_400_000 } else { idle * 1000 }
    }

    /// Local table first; on a miss, Redis within the timeout.
    pub async fn get(&self, key: StickKey, now: u32) -> Lookup {
        let (local, last_use) = self.local.get_with_last_use(key, now);
        if let Lookup::Bound(mine) = &local {
            if u64::from(last_use) <= self.shared.recovered_at.load(Ordering::Relaxed) {
                return self.reconcile(key, mine, now).await;
            }
            let quarter = self.expiry.load().idle_timeout / 4;
            if now.saturating_sub(last_use) >= quarter.max(1) {
                self.background(
                    redis::cmd("PEXPIRE").arg(self.key(key)).arg(self.ttl_ms()).clone(),
                    "refresh",
                );
            }
            return local;
        }
        let mut cmd = redis::cmd("GETEX");
        cmd.arg(self.key(key)).arg("PX").arg(self.ttl_ms());
        match self.shared.run::<Option<String>>("get", cmd).await {
            Some(Some(server)) => {
                let server: Arc<str> = Arc::from(server);
                self.local.rebind(key, &server, now);
                Lookup::Bound(server)
            }
            _ => local,
        }
    }

    /// A local binding not seen since Redis (re)appeared: Redis's binding wins if it has one
    /// (another instance bound or moved the key meanwhile); if it has none, ours is published.
    /// One Redis round trip per such key, then the key is back on the fast path.
    async fn reconcile(&self, key: StickKey, mine: &Arc<str>, now: u32) -> Lookup {
        let mut cmd = redis::cmd("GETEX");
        cmd.arg(self.key(key)).arg("PX").arg(self.ttl_ms());
        match self.shared.run::<Option<String>>("get", cmd).await {
            Some(Some(theirs)) if *theirs != **mine => {
                let theirs: Arc<str> = Arc::from(theirs);
                self.local.rebind(key, &theirs, now);
                Lookup::Bound(theirs)
            }
            Some(None) => {
                let mut set = redis::cmd("SET");
                set.arg(self.key(key)).arg(&**mine).arg("NX").arg("PX").arg(self.ttl_ms());
                self.background(set, "publish");
                Lookup::Bound(Arc::clone(mine))
            }
            _ => Lookup::Bound(Arc::clone(mine)),
        }
    }

    /// Binds locally now; `SET NX GET` in the background, adopting another instance's server
    /// if it was first.
    pub fn bind_if_absent(&self, key: StickKey, server: &Arc<str>, now: u32) -> Arc<str> {
        let winner = self.local.bind_if_absent(key, server, now);
        if self.shared.usable().is_some() {
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.key(key)).arg(&*winner).arg("NX").arg("GET").arg("PX").arg(self.ttl_ms());
            let (shared, local) = (Arc::clone(&self.shared), Arc::clone(&self.local));
            let mine = Arc::clone(&winner);
            tokio::spawn(async move {
                if let Some(Some(existing)) = shared.write::<Option<String>>("bind", cmd).await {
                    if *existing != *mine {
                        local.rebind(key, &Arc::from(existing), now);
                    }
                }
            });
        }
        winner
    }

    /// Re-pins locally and in Redis (background).
    pub fn rebind(&self, key: StickKey, server: &Arc<str>, now: u32) {
        self.local.rebind(key, server, now);
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key)).arg(&**server).arg("PX").arg(self.ttl_ms());
        self.background(cmd, "rebind");
    }

    /// Forgets every binding here and this backend's keys in Redis (bounded SCAN + DEL).
    pub fn clear(&self) {
        self.local.clear();
        self.census.store(Arc::new(census::Census::default()));
        let shared = Arc::clone(&self.shared);
        let namespace = self.namespace.clone();
        tokio::spawn(async move {
            // Repeat while a walk stops at its bound (more keys than one walk visits).
            for _ in 0..50 {
                let mut keys = Vec::new();
                let complete = census::walk(
                    &shared,
                    &namespace,
                    census::CENSUS_MAX_KEYS,
                    false,
                    |hex, _, _| {
                        keys.push(format!("{namespace}{hex}"));
                    },
                )
                .await;
                for batch in keys.chunks(1000) {
                    let mut del = redis::cmd("DEL");
                    del.arg(batch);
                    let _ = shared.write::<i64>("flush", del).await;
                }
                if complete != Some(false) {
                    return;
                }
            }
        });
    }

    /// Changes the expiry policy.
    pub fn set_expiry(&self, expiry: Expiry) {
        super::set_local_expiry(&self.local, expiry);
        self.expiry.store(Arc::new(expiry));
    }

    fn background(&self, cmd: redis::Cmd, what: &'static str) {
        if self.shared.usable().is_none() {
            return;
        }
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            let _ = shared.write::<redis::Value>(what, cmd).await;
        });
    }
}
