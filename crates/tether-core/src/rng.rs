//! A lock-free, seedable pseudo-random source (SplitMix64 over an atomic counter).
//!
//! The randomised balancers (`random`, `p2c`) are shared by every worker thread, so their
//! random source must be `Sync` without a lock. SplitMix64 needs only an atomically advanced
//! counter; each call is one `fetch_add` and a few multiplications. It is not cryptographic and
//! does not need to be: it only spreads load. Tests seed it to get reproducible sequences.

use std::sync::atomic::{AtomicU64, Ordering};

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// A shareable random source. `Default` seeds from the address of a stack value and the
/// current time, which is plenty for load spreading.
#[derive(Debug)]
pub struct SplitMix {
    state: AtomicU64,
}

impl SplitMix {
    /// A source that yields the same sequence for the same seed.
    pub fn seeded(seed: u64) -> Self {
        Self { state: AtomicU64::new(seed) }
    }

    /// The next 64 random bits.
    pub fn next_u64(&self) -> u64 {
        let mut z =
            self.state.fetch_add(GOLDEN_GAMMA, Ordering::Relaxed).wrapping_add(GOLDEN_GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound > 0`), by Lemire's multiply-shift (bias < 2^-32 for
    /// the small bounds used here).
    pub fn below(&self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

impl Default for SplitMix {
    fn default() -> Self {
        let local = 0u8;
        let addr = std::ptr::addr_of!(local) as u64;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Self::seeded(addr ^ now.rotate_left(17))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let a = SplitMix::seeded(7);
        let b = SplitMix::seeded(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let r = SplitMix::seeded(1);
        let mut seen = [0u32; 5];
        for _ in 0..10_000 {
            let v = r.below(5) as usize;
            seen[v] += 1;
        }
        assert!(seen.iter().all(|&n| n > 1_700), "{seen:?}");
    }
}
