//! Per-client rate limits (`rate_limit` on a listener or a backend): one GCRA bucket
//! ([`tether_core::rate::Quota`]) per client key, in a bounded cache that forgets a bucket
//! once it has been idle long enough to be full again (a forgotten bucket and a full one
//! behave the same). Keys are 128-bit keyed hashes of the client's address or affinity key.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use tether_core::rate::Quota;
use tether_core::stick::KeyHasher;

use crate::config::{RateKey, RateLimit};

/// Buckets kept per limiter at most; past this the least recently used are forgotten
/// (which only ever lets a forgotten client start again with a full bucket).
const MAX_BUCKETS: u64 = 1_000_000;

/// One `rate_limit`, with its buckets.
#[derive(Debug)]
pub struct RateLimiter {
    /// The settings it enforces (a reload with the same settings keeps the buckets).
    pub config: RateLimit,
    quota: Quota,
    buckets: moka::sync::Cache<u128, Arc<AtomicU64>>,
    epoch: Instant,
}

impl RateLimiter {
    /// A limiter for `config`.
    pub fn new(config: RateLimit) -> Self {
        let quota = Quota::new(config.per_second, config.burst);
        let idle = Duration::from_nanos(quota.refill_nanos()) + Duration::from_secs(1);
        let buckets =
            moka::sync::Cache::builder().max_capacity(MAX_BUCKETS).time_to_idle(idle).build();
        Self { config, quota, buckets, epoch: Instant::now() }
    }

    /// What identifies the client for this limit.
    pub fn key(&self) -> RateKey {
        self.config.key
    }

    /// Counts one request of the client `key`; `Err(wait)` when it is over its rate.
    pub fn check(&self, hasher: &KeyHasher, key: &[u8]) -> Result<(), Duration> {
        let id = hasher.hash(key);
        let bucket = self.buckets.get_with(id, || Arc::new(AtomicU64::new(0)));
        // Nanoseconds since the limiter began, offset so a new bucket starts full.
        let now = self.epoch.elapsed().as_nanos() as u64 + self.quota.refill_nanos();
        self.quota.check(&bucket, now).map_err(Duration::from_nanos)
    }
}
