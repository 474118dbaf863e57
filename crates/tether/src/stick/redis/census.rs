//! What Redis holds for one backend, read with bounded `SCAN`s: a periodic census of
//! bindings per server (`sessions_bound`, `stick_table_entries`, drain figures) and the
//! listing behind the sessions endpoint. On a cluster every primary is scanned.
//!
//! A walk visits at most [`CENSUS_MAX_KEYS`] keys (pages of [`PAGE`] keys, one `MGET` each);
//! past that the figures are marked incomplete rather than growing the cost without bound.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::RedisShared;

/// How often each instance counts a backend's bindings in Redis.
pub(super) const CENSUS_INTERVAL: Duration = Duration::from_secs(5);

/// The most keys one census visits.
pub(super) const CENSUS_MAX_KEYS: usize = 200_000;

/// Keys asked for per `SCAN` and fetched per `MGET`.
const PAGE: usize = 1000;

/// Bindings per server, as Redis held them at `taken`.
#[derive(Debug, Default)]
pub(super) struct Census {
    pub per_server: HashMap<Arc<str>, u64>,
    pub total: u64,
    pub complete: bool,
    pub taken: Option<Instant>,
}

impl Census {
    /// Whether this census is recent enough to report (Redis answered lately).
    pub fn fresh(&self) -> bool {
        self.taken.is_some_and(|t| t.elapsed() < CENSUS_INTERVAL * 3)
    }
}

/// One binding as listed by the sessions endpoint.
#[derive(Debug, Clone)]
pub struct SessionEntry {
    /// The hashed key, 32 hex digits.
    pub key: String,
    /// Server stable name.
    pub server: Arc<str>,
    /// Unix seconds when it was made (local table only).
    pub created: Option<u32>,
    /// Unix seconds when it was last used (local table only).
    pub last_used: Option<u32>,
    /// Unix seconds when it expires unless used.
    pub expires: u32,
}

/// A listing of a backend's bindings.
#[derive(Debug, Clone)]
pub struct Sessions {
    /// `"redis"` (the shared table) or `"local"` (this instance's table).
    pub source: &'static str,
    /// Bindings in the table (with Redis: as counted by the last census).
    pub total: u64,
    /// False when the count stopped at its bound.
    pub complete: bool,
    /// Up to the requested number of bindings.
    pub entries: Vec<SessionEntry>,
}

/// Walks the keys matching `{namespace}*` on every node, at most `max` of them, calling
/// `visit(hex_key, server)` for each key that still has a value. With `ttl`, also asks each
/// key's remaining time (`PTTL`, milliseconds) and passes it. Returns whether the walk saw
/// every key, or `None` when Redis could not be walked.
pub(super) async fn walk(
    shared: &Arc<RedisShared>,
    namespace: &str,
    max: usize,
    ttl: bool,
    mut visit: impl FnMut(&str, String, Option<i64>),
) -> Option<bool> {
    let pattern = format!("{namespace}*");
    let mut seen = 0usize;
    for node in shared.scan_nodes().await? {
        let mut cursor: u64 = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(PAGE);
            let (next, keys): (u64, Vec<String>) =
                shared.write_on("scan", &scan, node.as_ref()).await?;
            let keys: Vec<String> = keys.into_iter().take(max - seen).collect();
            if !keys.is_empty() {
                let mut mget = redis::cmd("MGET");
                mget.arg(&keys);
                let values: Vec<Option<String>> = shared.write_on("scan", &mget, None).await?;
                let ttls = if ttl { fetch_ttls(shared, &keys).await? } else { Vec::new() };
                for (i, (key, value)) in keys.iter().zip(values).enumerate() {
                    if let Some(server) = value {
                        let hex = key.strip_prefix(namespace).unwrap_or(key);
                        visit(hex, server, ttls.get(i).copied());
                    }
                }
                seen += keys.len();
            }
            if seen >= max {
                return Some(false);
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Some(true)
}

/// `PTTL` of each key, sent together over the multiplexed connection (only the sessions
/// endpoint asks, for one bounded page).
async fn fetch_ttls(shared: &Arc<RedisShared>, keys: &[String]) -> Option<Vec<i64>> {
    let asks = keys.iter().map(|k| async move {
        let mut pttl = redis::cmd("PTTL");
        pttl.arg(k);
        shared.write_on::<i64>("scan", &pttl, None).await
    });
    futures_util::future::join_all(asks).await.into_iter().collect()
}

/// Counts bindings per server.
pub(super) async fn take(shared: &Arc<RedisShared>, namespace: &str) -> Option<Census> {
    let mut census = Census::default();
    let mut names: Vec<Arc<str>> = Vec::new();
    let complete = walk(shared, namespace, CENSUS_MAX_KEYS, false, |_, server, _| {
        // Few distinct servers: reuse one Arc per name.
        let name = match names.iter().find(|n| ***n == *server) {
            Some(n) => Arc::clone(n),
            None => {
                let n: Arc<str> = Arc::from(server);
                names.push(Arc::clone(&n));
                n
            }
        };
        *census.per_server.entry(name).or_insert(0) += 1;
        census.total += 1;
    })
    .await?;
    census.complete = complete;
    census.taken = Some(Instant::now());
    Some(census)
}
