//! Open connections per client address (`max_connections_per_ip`), or requests in flight per
//! affinity session (`sticky.max_in_flight_per_session`), in fixed memory and without locks:
//! a count-min sketch of two rows of atomic counters. A client's count is the smaller of its
//! two counters, which can only over-count (when both of its counters are shared with other
//! busy clients), never under-count: a client is never let past its limit, and with 2 × 65,536
//! counters (512 KiB) an innocent client is refused only if both of its counters collide with
//! clients holding many connections.

use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

const WIDTH: usize = 1 << u16::BITS;

/// Per-address and total connection counts of one listener.
#[derive(Debug)]
pub struct ConnCounter {
    rows: [Box<[AtomicU32]>; 2],
    seeds: [u64; 2],
    total: AtomicUsize,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_connections` reached.
    Total,
    /// `max_connections_per_ip` reached for this address.
    PerIp,
}

/// One admitted connection; dropping it gives the slots back.
#[derive(Debug)]
pub struct ConnSlot {
    counter: Arc<ConnCounter>,
    /// Its counter in each row (a row is 2^16 wide): 16 bytes a slot, and every idle
    /// connection holds one.
    cells: [u16; 2],
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.counter.total.fetch_sub(1, Ordering::Relaxed);
        for (row, cell) in self.counter.rows.iter().zip(self.cells) {
            row[usize::from(cell)].fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl ConnCounter {
    /// An empty counter whose hashing is keyed by `seed` (so clients cannot aim collisions).
    pub fn new(seed: u64) -> Arc<Self> {
        let row = || (0..WIDTH).map(|_| AtomicU32::new(0)).collect::<Vec<_>>().into_boxed_slice();
        Arc::new(Self {
            rows: [row(), row()],
            seeds: [seed, seed.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15],
            total: AtomicUsize::new(0),
        })
    }

    /// Open connections counted now.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    fn cell<K: Hash>(&self, row: usize, key: &K) -> u16 {
        let mut h = xxhash_rust::xxh3::Xxh3Builder::new().with_seed(self.seeds[row]).build_hasher();
        key.hash(&mut h);
        std::hash::Hasher::finish(&h) as u16 // the low bits: WIDTH is 2^16
    }

    /// Admits a connection from `ip` unless that would exceed `max_total` or `max_per_ip`
    /// (0 = unlimited).
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        max_total: usize,
        max_per_ip: usize,
    ) -> Result<ConnSlot, Refused> {
        self.admit_key(&ip, max_total, max_per_ip)
    }

    /// Admits one more unit (connection, request) for `key` unless that would exceed
    /// `max_total` or `max_per_key` (0 = unlimited); [`Refused::PerIp`] names the per-key
    /// limit whatever the key is.
    pub fn admit_key<K: Hash>(
        self: &Arc<Self>,
        key: &K,
        max_total: usize,
        max_per_key: usize,
    ) -> Result<ConnSlot, Refused> {
        let total = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        let cells = [self.cell(0, key), self.cell(1, key)];
        let counts = [
            self.rows[0][usize::from(cells[0])].fetch_add(1, Ordering::Relaxed) + 1,
            self.rows[1][usize::from(cells[1])].fetch_add(1, Ordering::Relaxed) + 1,
        ];
        // Counting first and undoing on refusal keeps concurrent admissions from both
        // slipping under a limit.
        let slot = ConnSlot { counter: Arc::clone(self), cells };
        if max_total > 0 && total > max_total {
            return Err(Refused::Total);
        }
        if max_per_key > 0 && counts[0].min(counts[1]) as usize > max_per_key {
            return Err(Refused::PerIp);
        }
        Ok(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_ip_and_total_limits_hold_and_free_on_drop() {
        let c = ConnCounter::new(7);
        let a: Vec<_> = (0..3).map(|_| c.admit(ip("10.0.0.1"), 0, 3).unwrap()).collect();
        assert_eq!(c.admit(ip("10.0.0.1"), 0, 3).unwrap_err(), Refused::PerIp);
        // Another client is not affected, and the refusal left no count behind.
        let b = c.admit(ip("10.0.0.2"), 0, 3).unwrap();
        assert_eq!(c.total(), 4);
        drop(a);
        assert_eq!(c.total(), 1);
        let again: Vec<_> = (0..3).map(|_| c.admit(ip("10.0.0.1"), 0, 3).unwrap()).collect();
        assert_eq!(c.admit(ip("::1"), 4, 0).unwrap_err(), Refused::Total);
        drop((b, again));
        assert_eq!(c.total(), 0);
    }

    #[test]
    fn any_key_counts_on_its_own() {
        let c = ConnCounter::new(9);
        let a: Vec<_> = (0..2).map(|_| c.admit_key(&0xfeed_u128, 0, 2).unwrap()).collect();
        assert_eq!(c.admit_key(&0xfeed_u128, 0, 2).unwrap_err(), Refused::PerIp);
        assert!(c.admit_key(&0xbeef_u128, 0, 2).is_ok(), "another key is not affected");
        drop(a);
        assert!(c.admit_key(&0xfeed_u128, 0, 2).is_ok(), "freed on drop");
    }

    #[test]
    fn many_clients_at_their_limit_rarely_refuse_anyone_else() {
        let c = ConnCounter::new(42);
        // 2,000 clients with 10 connections each, at their limit of 10.
        let mut held = Vec::new();
        let mut short = 0;
        for i in 0..2_000u32 {
            for _ in 0..10 {
                match c.admit(IpAddr::from(i.to_be_bytes()), 0, 10) {
                    Ok(slot) => held.push(slot),
                    Err(_) => short += 1,
                }
            }
        }
        let mut refused = 0;
        for i in 0..2_000u32 {
            let newcomer = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            if c.admit(newcomer, 0, 10).is_err() {
                refused += 1;
            }
        }
        // A refusal needs both of a client's counters shared with full clients: about
        // (2,000 / 65,536)² ≈ 0.1%.
        assert!(short < 40, "{short} of 20000 held connections refused");
        assert!(refused < 20, "{refused} of 2000 newcomers refused");
    }
}
