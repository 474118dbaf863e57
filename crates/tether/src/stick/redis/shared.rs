//! The connection to Redis shared by every backend's table: one server (through redis-rs's
//! connection manager) or a Redis Cluster (its cluster client), plain or TLS, and the
//! health bookkeeping that lets requests skip Redis while it is down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

use crate::config::RedisStore;

/// How long Redis is left alone after a failure before one request probes it again.
const PROBE_AFTER: Duration = Duration::from_secs(1);

/// At most one warning pair (unavailable, available) per this long.
const QUIET_FOR: Duration = Duration::from_secs(30);

/// Time allowed to background writes, which no request waits for. Their timeouts are not
/// taken as Redis being down (a busy Redis may be slower than the read timeout and still fine).
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// The connection and health of one Redis, shared by every backend's table.
pub struct RedisShared {
    conn: ArcSwapOption<Conn>,
    pub(super) timeout: Duration,
    pub(super) prefix: String,
    available: AtomicBool,
    retry_at_ms: AtomicU64,
    epoch: Instant,
    errors: AtomicU64,
    cfg: RedisStore,
    connecting: AtomicBool,
    /// Unix seconds when Redis last became available: local bindings last used before then
    /// may have been made (or moved) while the instances could not see each other.
    pub(super) recovered_at: AtomicU64,
    /// `now_ms` of the last transition logged as a warning (0: none yet).
    last_loud_ms: AtomicU64,
    /// Whether the current outage's "unavailable" was a warning.
    outage_loud: AtomicBool,
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
            cfg: cfg.clone(),
            connecting: AtomicBool::new(false),
            recovered_at: AtomicU64::new(0),
            last_loud_ms: AtomicU64::new(0),
            outage_loud: AtomicBool::new(false),
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
                match Conn::open(&shared.cfg).await {
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
                        let was_up = shared.available.swap(false, Ordering::Relaxed);
                        if (was_up || shared.errors() == 1) && shared.loud(true) {
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
    pub(super) fn usable(&self) -> Option<Arc<Conn>> {
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
            self.recovered_at.store(crate::clock::unix_now(), Ordering::Relaxed);
            if self.loud(false) || self.errors() == 0 {
                tracing::warn!("redis available");
            } else {
                tracing::debug!("redis available");
            }
        }
    }

    fn mark_failed(&self, what: &str, error: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.retry_at_ms.store(self.now_ms() + PROBE_AFTER.as_millis() as u64, Ordering::Relaxed);
        if self.available.swap(false, Ordering::Relaxed) {
            if self.loud(true) {
                tracing::warn!(operation = what, error, "redis unavailable");
            } else {
                tracing::debug!(operation = what, error, "redis unavailable");
            }
        }
    }

    /// Whether a transition is logged as a warning. An outage's "unavailable" is, unless one
    /// was already this [`QUIET_FOR`]; its "available" is when its "unavailable" was. So a
    /// Redis (or one cluster node) that keeps failing and answering the probe logs one pair
    /// per 30 s, the rest at debug; `errors` counts every failure.
    fn loud(&self, going_down: bool) -> bool {
        if !going_down {
            return self.outage_loud.swap(false, Ordering::Relaxed);
        }
        let now = self.now_ms().max(1);
        let last = self.last_loud_ms.load(Ordering::Relaxed);
        let loud = last == 0 || now.saturating_sub(last) >= QUIET_FOR.as_millis() as u64;
        if loud {
            self.last_loud_ms.store(now, Ordering::Relaxed);
        }
        self.outage_loud.store(loud, Ordering::Relaxed);
        loud
    }

    /// Runs one command within the timeout, recording the outcome. After an error the
    /// connection is replaced by a fresh one in the background; a mere timeout (a slow or
    /// paused Redis) keeps it.
    pub(super) async fn run<T: redis::FromRedisValue>(
        self: &Arc<Self>,
        what: &str,
        cmd: redis::Cmd,
    ) -> Option<T> {
        self.run_within(self.timeout, true, what, &cmd, None).await
    }

    /// A background write: a longer timeout, and a timeout alone does not mark Redis down.
    pub(super) async fn write<T: redis::FromRedisValue>(
        self: &Arc<Self>,
        what: &str,
        cmd: redis::Cmd,
    ) -> Option<T> {
        self.run_within(WRITE_TIMEOUT, false, what, &cmd, None).await
    }

    /// A background read or write on one node of a cluster (`None`: wherever the key lives).
    pub(super) async fn write_on<T: redis::FromRedisValue>(
        self: &Arc<Self>,
        what: &str,
        cmd: &redis::Cmd,
        node: Option<&(String, u16)>,
    ) -> Option<T> {
        self.run_within(WRITE_TIMEOUT, false, what, cmd, node).await
    }

    /// The nodes a key scan visits (see [`Conn::scan_nodes`]), when Redis is usable.
    pub(super) async fn scan_nodes(self: &Arc<Self>) -> Option<Vec<Option<(String, u16)>>> {
        let conn = self.usable()?;
        match tokio::time::timeout(WRITE_TIMEOUT, conn.scan_nodes()).await {
            Ok(Ok(nodes)) => Some(nodes),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "redis: cannot list cluster nodes");
                None
            }
            Err(_) => None,
        }
    }

    async fn run_within<T: redis::FromRedisValue>(
        self: &Arc<Self>,
        timeout: Duration,
        timeout_is_failure: bool,
        what: &str,
        cmd: &redis::Cmd,
        node: Option<&(String, u16)>,
    ) -> Option<T> {
        let conn = self.usable()?;
        match tokio::time::timeout(timeout, conn.query::<T>(cmd, node)).await {
            Ok(Ok(v)) => {
                self.mark_available();
                Some(v)
            }
            Ok(Err(e)) => {
                self.mark_failed(what, &e.to_string());
                // One server: whatever broke, start from a fresh connection rather than trust
                // the old one. A cluster client reconnects to its nodes by itself, and a fresh
                // client would "succeed" through the nodes still up while one is down.
                if matches!(*conn, Conn::Single(_)) {
                    self.reconnect();
                }
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

/// A connection to one Redis or to a cluster. Both are cheap to clone and multiplex
/// concurrent commands over their connections.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Connects and waits for a PING to be answered (a paused Redis accepts connections but
    /// does not answer).
    async fn open(cfg: &RedisStore) -> redis::RedisResult<Self> {
        let certs = cfg
            .ca_pem
            .as_ref()
            .map(|pem| redis::TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) });
        let connecting = async {
            if cfg.cluster {
                let mut builder = redis::cluster::ClusterClientBuilder::new(cfg.urls())
                    .connection_timeout(Duration::from_secs(1))
                    .response_timeout(Duration::from_secs(1))
                    .retries(1);
                if let Some(certs) = certs {
                    builder = builder.certs(certs);
                }
                redis::RedisResult::Ok(Conn::Cluster(
                    builder.build()?.get_async_connection().await?,
                ))
            } else {
                let client = match certs {
                    Some(certs) => redis::Client::build_with_tls(cfg.url.as_str(), certs)?,
                    None => redis::Client::open(cfg.url.as_str())?,
                };
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Duration::from_secs(1))
                    .set_response_timeout(Duration::from_secs(1))
                    .set_number_of_retries(1);
                Ok(Conn::Single(ConnectionManager::new_with_config(client, config).await?))
            }
        };
        let conn = tokio::time::timeout(Duration::from_secs(3), connecting)
            .await
            .map_err(|_| io_error("connect timed out"))??;
        let _: redis::Value =
            tokio::time::timeout(Duration::from_secs(1), conn.query(&redis::cmd("PING"), None))
                .await
                .map_err(|_| io_error("no answer to PING"))??;
        Ok(conn)
    }

    /// Runs `cmd`; on a cluster, `node` sends it to one primary (`SCAN` is per node).
    pub(super) async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        node: Option<&(String, u16)>,
    ) -> redis::RedisResult<T> {
        match (self, node) {
            (Conn::Single(c), _) => cmd.query_async(&mut c.clone()).await,
            (Conn::Cluster(c), None) => cmd.query_async(&mut c.clone()).await,
            (Conn::Cluster(c), Some((host, port))) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                let v = c.clone().route_command(cmd, routing).await?;
                T::from_redis_value(&v)
            }
        }
    }

    /// The nodes a key scan must visit: `[None]` for one server; every primary of a cluster
    /// (from `CLUSTER SLOTS`).
    pub(super) async fn scan_nodes(&self) -> redis::RedisResult<Vec<Option<(String, u16)>>> {
        let Conn::Cluster(_) = self else { return Ok(vec![None]) };
        let slots: Vec<redis::Value> =
            self.query(&redis::cmd("CLUSTER").arg("SLOTS").clone(), None).await?;
        let mut nodes: Vec<Option<(String, u16)>> = Vec::new();
        for range in slots {
            // [start, end, [host, port, id, ...] (the primary), replicas...]
            let redis::Value::Array(parts) = range else { continue };
            let Some(redis::Value::Array(primary)) = parts.get(2) else { continue };
            let host: Option<String> =
                primary.first().and_then(|v| redis::from_redis_value(v).ok());
            let port: Option<u16> = primary.get(1).and_then(|v| redis::from_redis_value(v).ok());
            if let (Some(host), Some(port)) = (host, port) {
                let node = Some((host, port));
                if !nodes.contains(&node) {
                    nodes.push(node);
                }
            }
        }
        Ok(nodes)
    }
}

fn io_error(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::IoError, what))
}
