//! Weighted rendezvous (highest random weight) hashing: the server for a client key.
//!
//! Used for the *first* assignment of table-based affinity (`client_ip`, `header`): every
//! request of a new client — concurrent requests of one page load, or requests reaching
//! several Tether instances at once — computes the same server from the key alone, instead
//! of racing to bind different ones. Each server's score is `-weight / ln(h)` with `h` a
//! fixed-seed hash of (key, server name) mapped into (0, 1): shares follow the weights, and
//! adding or removing a server only moves the keys that belong to it. Names, not positions,
//! enter the hash, so instances with the same servers agree whatever their config order.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::Member;

/// Fixed seed: the choice must agree across instances and restarts.
const SEED: u64 = 0x7465_7468_6572_7268; // "tetherrh"

/// The member with the highest score for `key` among those `usable`.
pub fn pick(members: &[Member], key: u128, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, m) in members.iter().enumerate() {
        if !usable(i) {
            continue;
        }
        let mut buf = [0u8; 16];
        buf.copy_from_slice(&key.to_le_bytes());
        let h = xxh3_64_with_seed(m.state.name().as_bytes(), SEED ^ xxh3_64_with_seed(&buf, SEED));
        // Map to (0, 1): 53 random bits, never 0 or 1.
        let unit = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = -f64::from(m.weight) / unit.ln();
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((i, score));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::members;

    #[test]
    fn same_key_same_server_and_shares_follow_weights() {
        let m = members(&[1, 1, 2]);
        let mut counts = [0u32; 3];
        for k in 0..40_000u128 {
            let i = pick(&m, k * 0x9E37_79B9, &|_| true).unwrap();
            assert_eq!(pick(&m, k * 0x9E37_79B9, &|_| true), Some(i));
            counts[i] += 1;
        }
        let share = |i: usize| f64::from(counts[i]) / 40_000.0;
        assert!((share(0) - 0.25).abs() < 0.025, "{counts:?}");
        assert!((share(2) - 0.5).abs() < 0.025, "{counts:?}");
    }

    #[test]
    fn removing_a_server_only_moves_its_own_keys() {
        let m = members(&[1, 1, 1]);
        for k in 0..5_000u128 {
            let before = pick(&m, k, &|_| true).unwrap();
            let after = pick(&m, k, &|i| i != 1).unwrap();
            if before != 1 {
                assert_eq!(before, after);
            }
        }
    }

    #[test]
    fn config_order_does_not_matter() {
        let m = members(&[1, 1, 1]);
        let reversed: Vec<Member> = m.iter().rev().cloned().collect();
        for k in 0..1000u128 {
            let a = pick(&m, k, &|_| true).unwrap();
            let b = pick(&reversed, k, &|_| true).unwrap();
            assert_eq!(m[a].state.name(), reversed[b].state.name());
        }
    }
}
