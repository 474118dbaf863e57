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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use redis::aio::ConnectionManager;
use tether_core::affinity::Expiry;
use tether_core::stick::memory::MemoryStore;
use tether_core::stick::{Lookup, StickKey, StickStore};

use crate::config::RedisStore;

/// How long Redis is left alone after a failure before one request probes it again.
const PROBE_AFTER: Duration = Duration::from_secs(1);

/// Time allowed to background writes, which no request waits for. Their timeouts are not
/// taken as Redis being down (a busy Redis may be slower than the read timeout and still fine).
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// The connection and health of one Redis, shared by every backend's table.
pub struct RedisShared {
    conn: ArcSwapOption<ConnectionManager>,
    timeout: Duration,
    prefix: String,
    available: AtomicBool,
    retry_at_ms: AtomicU64,
    epoch: Instant,
    errors: AtomicU64,
    url: String,
    connecting: AtomicBool,
    /// Unix seconds when Redis last became available: local bindings last used before then
    /// may have been made (or moved) while the instances could not see each other.
    recovered_at: AtomicU64,
}

impl std::fmt::Debug for RedisShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisShared")
            .field("available", &self.available.load(Ordering::Relaxed))
            .finish()
    }
}

impl RedisShared {
    /// Starts connecting to `cfg.url` in the background (start-up never waits for Redis).
    pub fn connect(cfg: &RedisStore) -> Arc<Self> {
        let shared = Arc::new(Self {
            conn: ArcSwapOption::empty(),
            timeout: cfg.timeout,
            prefix: cfg.prefix.clone(),
            available: AtomicBool::new(false),
            retry_at_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            errors: AtomicU64::new(0),
            url: cfg.url.clone(),
            connecting: AtomicBool::new(false),
            recovered_at: AtomicU64::new(0),
        });
        shared.reconnect();
        shared
    }

    /// (Re)connects in the background with exponential backoff (100 ms to 5 s), unless a
    /// connection attempt is already under way. Requests use the local table meanwhile.
    fn reconnect(self: &Arc<Self>) {
        if self.connecting.swap(true, Ordering::AcqRel) {
            return;
        }
        self.conn.store(None);
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                let Some(shared) = weak.upgrade() else { return };
                match connect(&shared.url).await {
                    Ok(conn) => {
                        // `connect` saw a PING answered (a paused Redis accepts connections but
                        // does not answer), so Redis is usable again.
                        shared.conn.store(Some(Arc::new(conn)));
                        shared.connecting.store(false, Ordering::Release);
                        shared.retry_at_ms.store(0, Ordering::Relaxed);
                        shared.mark_available();
                        return;
                    }
                    Err(e) => {
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                        if shared.available.swap(false, Ordering::Relaxed) || shared.errors() == 1 {
                            tracing::warn!(error = %e, "redis unavailable");
                        }
                    }
                }
                drop(shared);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
    }

    /// Redis failures counted so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Whether Redis answered the last time it was asked.
    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The connection, when Redis may be asked now.
    fn usable(&self) -> Option<Arc<ConnectionManager>> {
        let conn = self.conn.load_full()?;
        if self.available.load(Ordering::Relaxed)
            || self.now_ms() >= self.retry_at_ms.load(Ordering::Relaxed)
        {
            Some(conn)
        } else {
            None
        }
    }

    fn mark_available(&self) {
        if !self.available.swap(true, Ordering::Relaxed) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.recovered_at.store(now, Ordering::Relaxed);
            tracing::warn!("redis available");
        }
    }

    fn mark_failed(&self, what: &str, error: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.retry_at_ms.store(self.now_ms() + PROBE_AFTER.as_millis() as u64, Ordering::Relaxed);
        if self.available.swap(false, Ordering::Relaxed) {
            tracing::warn!(operation = what, error, "redis unavailable");
        }
    }

    /// Runs one command within the timeout, recording the outcome. After an error the
    /// connection is replaced by a fresh one in the background; a mere timeout (a slow or
    /// paused Redis) keeps it.
    async fn run<T: redis::FromRedisValue>(
        self: &Arc<Self>,
        what: &str,
        cmd: redis::Cmd,
    ) -> Option<T> {
        self.run_within(self.timeout, true, what, cmd).await
    }

    /// A background write: a longer timeout, and a timeout alone does not mark Redis down.
    async fn write<T: redis::FromRedisValue>(
        self: &Arc<Self>,
        what: &str,
        cmd: redis::Cmd,
    ) -> Option<T> {
        self.run_within(WRITE_TIMEOUT, false, what, cmd).await
    }

    async fn run_within<T: redis::FromRedisValue>(
        self: &Arc<Self>,
        timeout: Duration,
        timeout_is_failure: bool,
        what: &str,
        cmd: redis::Cmd,
    ) -> Option<T> {
        let conn = self.usable()?;
        let mut conn = (*conn).clone();
        match tokio::time::timeout(timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => {
                self.mark_available();
                Some(v)
            }
            Ok(Err(e)) => {
                self.mark_failed(what, &e.to_string());
                // Whatever broke, start from a fresh connection rather than trust the old one.
                self.reconnect();
                None
            }
            Err(_) => {
                if timeout_is_failure {
                    self.mark_failed(what, &format!("no answer within {timeout:?}"));
                }
                None
            }
        }
    }
}

async fn connect(url: &str) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(1))
        .set_response_timeout(Duration::from_secs(1))
        .set_number_of_retries(1);
    let mut conn = tokio::time::timeout(
        Duration::from_secs(3),
        ConnectionManager::new_with_config(client, config),
    )
    .await
    .map_err(|_| redis::RedisError::from((redis::ErrorKind::IoError, "connect timed out")))??;
    let _: String =
        tokio::time::timeout(Duration::from_secs(1), redis::cmd("PING").query_async(&mut conn))
            .await
            .map_err(|_| {
                redis::RedisError::from((redis::ErrorKind::IoError, "no answer to PING"))
            })??;
    Ok(conn)
}

/// One backend's table: a local [`MemoryStore`] in front of the shared Redis keys.
pub struct RedisTable {
    local: Arc<MemoryStore>,
    shared: Arc<RedisShared>,
    namespace: String,
    expiry: ArcSwap<Expiry>,
}

impl std::fmt::Debug for RedisTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTable").field("namespace", &self.namespace).finish()
    }
}

impl RedisTable {
    /// The table of `backend`, with a local cache of `capacity` entries.
    pub fn new(shared: Arc<RedisShared>, backend: &str, capacity: u64, expiry: Expiry) -> Self {
        let namespace = format!("{}:{backend}:", shared.prefix);
        Self {
            local: Arc::new(MemoryStore::new(capacity, expiry)),
            shared,
            namespace,
            expiry: ArcSwap::from_pointee(expiry),
        }
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
        let shared = Arc::clone(&self.shared);
        let pattern = format!("{}*", self.namespace);
        tokio::spawn(async move {
            let mut cursor: u64 = 0;
            for _ in 0..10_000 {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000);
                let Some((next, keys)) = shared.write::<(u64, Vec<String>)>("flush", scan).await
                else {
                    return;
                };
                if !keys.is_empty() {
                    let mut del = redis::cmd("DEL");
                    del.arg(keys);
                    let _ = shared.write::<i64>("flush", del).await;
                }
                if next == 0 {
                    return;
                }
                cursor = next;
            }
        });
    }

    /// Changes the expiry policy.
    pub fn set_expiry(&self, expiry: Expiry) {
        self.local.set_expiry(expiry);
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
