//! Bytes per stick-table entry: fills a memory store with 1,000,000 bindings and reports the
//! growth of the process's resident memory per entry. `cargo bench -p tether-core --bench
//! stick_memory`. Figures: docs/performance.md.

use std::sync::Arc;

use tether_core::affinity::Expiry;
use tether_core::stick::memory::MemoryStore;
use tether_core::stick::{KeyHasher, StickStore};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn main() {
    const N: u64 = 1_000_000;
    let expiry = Expiry { idle_timeout: 1800, max_lifetime: 43_200 };
    let servers: Vec<Arc<str>> = (0..10).map(|i| Arc::from(format!("server-{i}"))).collect();
    let hasher = KeyHasher::new(7);
    let before = rss_bytes();
    let table = MemoryStore::new(N, expiry);
    for i in 0..N {
        let key = hasher.hash(format!("client-{i}").as_bytes());
        table.bind_if_absent(key, &servers[(i % 10) as usize], 1_000);
    }
    table.sync();
    let after = rss_bytes();
    let entries = table.len();
    println!(
        "stick_memory: {entries} entries, RSS +{:.1} MiB, {:.0} bytes per entry",
        (after.saturating_sub(before)) as f64 / 1_048_576.0,
        after.saturating_sub(before) as f64 / entries.max(1) as f64
    );
}
