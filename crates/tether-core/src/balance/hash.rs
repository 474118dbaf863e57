//! Consistent hashing with bounded loads: the same request key goes to the same server, unless
//! that server already carries more than its share.
//!
//! Every server owns points on a ring of 64-bit positions; a key belongs to the first point
//! clockwise from its own position. Adding or removing a server only moves the keys of the arcs
//! it gains or loses — about 1/n of them — which is what keeps caches warm across
//! configuration changes. Points are hashes of the server's *name* (fixed seed), never of its
//! position, so Tether instances with the same servers agree whatever their config order.
//!
//! **Points per server** follow ketama (the memcached client that popularised the ring):
//! [`POINTS_PER_SERVER`] = 160 for a server of average weight, `160 × n × weight / Σweight` in
//! general (at least 1). With equal weights that is exactly 160 whatever `n`, so a membership
//! change leaves everyone else's points untouched; the ring stays ~160 points per server
//! whatever the weights (a table of `160 × weight` points would reach 40,960 per server at
//! weight 256). 160 points give each server its share within about ±8 % (1/√160). A server's
//! points are the first `k` of a sequence fixed by its name, so when unequal weights change
//! the average, a server gains or loses only the points at the tail.
//!
//! **Bounded loads** (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing with Bounded
//! Loads", 2016; deployed by Vimeo with a factor of 1.25): a plain ring sends a hot key's every
//! request to one server. Here the key's server takes the request only while its in-flight
//! count is below `factor × (in-flight of all usable servers + 1) × weight / Σ usable weight`
//! — the paper's `⌈c·(m+1)/n⌉` bound, weighted (with equal weights it is exactly the paper's:
//! `load < x` and `load < ⌈x⌉` agree for a whole `load`). Otherwise the walk goes on clockwise
//! to the next server not yet seen. Since the bounds add up to more than the total load, some
//! usable server always meets its bound; only when loads move under a racing pick can none be
//! found, and the first usable server on the walk takes the request. Loads are
//! `ServerState::in_flight`, live. A factor of 0 turns the bound off.
//!
//! The pick path allocates nothing: one pass to sum the usable load, a binary search, and a
//! walk that remembers the servers it judged in a 256-bit set on the stack. Keys are remixed
//! before the search, so that a caller passing a raw small number (not a [`key_hash`]) still
//! spreads; [`Balancer::pick`] without a key walks from a rotating counter, which spreads
//! requests by arc length, i.e. by weight.
//!
//! [`key_hash`]: super::key_hash

use std::sync::atomic::{AtomicU64, Ordering};

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::{Balancer, Member, Seen, mix64};

/// Ring points of a server of average weight (ketama's figure).
pub const POINTS_PER_SERVER: u64 = 160;

/// Fixed seed of the ring points ("tetherrg"): instances and versions must agree.
const RING_SEED: u64 = 0x7465_7468_6572_7267;

/// A consistent-hash ring with bounded loads over a fixed member list.
#[derive(Debug)]
pub struct Ring {
    members: Vec<Member>,
    /// Ring positions, ascending.
    points: Box<[u64]>,
    /// `owners[k]` is the member index owning `points[k]`.
    owners: Box<[u32]>,
    /// Bound in percent of the average load; 0 = no bound.
    factor: u32,
    /// Stand-in keys for keyless picks.
    next: AtomicU64,
}

impl Ring {
    /// Builds the ring over `members`, with the bounded-load factor in percent (see
    /// [`Options::hash_balance_factor`](super::Options::hash_balance_factor): 0 = off, 1..=99
    /// taken as 100).
    pub fn new(members: &[Member], balance_factor: u32) -> Self {
        let (points, owners) = build_ring(members);
        let factor = if balance_factor == 0 { 0 } else { balance_factor.max(100) };
        Self { members: members.to_vec(), points, owners, factor, next: AtomicU64::new(0) }
    }

    /// Number of points on the ring (about [`POINTS_PER_SERVER`] per server).
    pub fn points(&self) -> usize {
        self.points.len()
    }
}

/// Ketama's rule: `160 × n × weight / Σweight`, rounded, at least 1.
fn points_for(weight: u32, members: u64, total_weight: u64) -> u64 {
    let scaled = POINTS_PER_SERVER * members * u64::from(weight.max(1));
    ((2 * scaled + total_weight) / (2 * total_weight)).max(1)
}

fn build_ring(members: &[Member]) -> (Box<[u64]>, Box<[u32]>) {
    let total_weight: u64 = members.iter().map(|m| u64::from(m.weight.max(1))).sum();
    let n = members.len() as u64;
    let mut entries: Vec<(u64, u32)> = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let count = points_for(m.weight, n, total_weight);
        let seed = xxh3_64_with_seed(m.state.name().as_bytes(), RING_SEED);
        // Member lists are far below 2^32 entries (each is 16 bytes of memory).
        entries.extend((0..count).map(|j| (xxh3_64_with_seed(&j.to_le_bytes(), seed), i as u32)));
    }
    // Equal positions (a 64-bit collision) are ordered by name, not by config order.
    let name = |i: u32| members[i as usize].state.name();
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| name(a.1).cmp(name(b.1))));
    let (points, owners): (Vec<u64>, Vec<u32>) = entries.into_iter().unzip();
    (points.into_boxed_slice(), owners.into_boxed_slice())
}

/// The bounded-load test for one pick, from one pass over the usable members.
struct Bound {
    /// `factor × (total in-flight + 1)`.
    scaled_load: u128,
    /// `100 × usable weight`.
    scaled_weight: u128,
}

impl Bound {
    /// `None` when no member is usable.
    fn of(members: &[Member], factor: u32, usable: &dyn Fn(usize) -> bool) -> Option<Self> {
        let (mut load, mut weight) = (0u64, 0u64);
        for (i, m) in members.iter().enumerate() {
            if usable(i) {
                load += m.state.in_flight();
                weight += u64::from(m.weight.max(1));
            }
        }
        (weight > 0).then(|| Bound {
            scaled_load: u128::from(factor) * u128::from(load + 1),
            scaled_weight: 100 * u128::from(weight),
        })
    }

    /// `in_flight < factor/100 × (load + 1) × weight / usable weight`, without division.
    fn admits(&self, m: &Member) -> bool {
        u128::from(m.state.in_flight()) * self.scaled_weight
            < self.scaled_load * u128::from(m.weight.max(1))
    }
}

impl Balancer for Ring {
    /// Without a key: a rotating counter stands in, spreading requests by weight.
    fn pick(&self, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        self.pick_key(self.next.fetch_add(1, Ordering::Relaxed), usable)
    }

    fn pick_key(&self, key: u64, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let bound = match self.factor {
            0 => None,
            factor => Some(Bound::of(&self.members, factor, usable)?),
        };
        let len = self.owners.len();
        let position = mix64(key);
        let start = self.points.partition_point(|&p| p < position);
        let mut seen = Seen::default();
        let mut first_usable = None;
        for step in 0..len {
            let i = self.owners[(start + step) % len] as usize;
            if !seen.first_visit(i) {
                continue;
            }
            if usable(i) {
                match &bound {
                    Some(b) if !b.admits(&self.members[i]) => {
                        first_usable.get_or_insert(i);
                    }
                    _ => return Some(i),
                }
            }
            if seen.all_of(self.members.len()) {
                break;
            }
        }
        first_usable
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::key_hash;
    use crate::balance::tests::members;
    use crate::rng::SplitMix;

    fn keys(n: u64) -> impl Iterator<Item = u64> {
        (0..n).map(|k| key_hash(&k.to_le_bytes()))
    }

    fn name_of(m: &[Member], ring: &Ring, key: u64, usable: &dyn Fn(usize) -> bool) -> String {
        m[ring.pick_key(key, usable).expect("a usable member")].state.name().to_owned()
    }

    #[test]
    fn same_key_reaches_the_same_server_at_zero_load_whatever_the_config_order() {
        let m = members(&[1; 10]);
        let reversed: Vec<Member> = m.iter().rev().cloned().collect();
        let (a, b) = (Ring::new(&m, 125), Ring::new(&reversed, 125));
        for k in keys(10_000) {
            let name = name_of(&m, &a, k, &|_| true);
            assert_eq!(name_of(&m, &a, k, &|_| true), name);
            assert_eq!(name_of(&reversed, &b, k, &|_| true), name);
        }
    }

    #[test]
    fn removing_one_of_ten_servers_moves_only_its_keys() {
        let m = members(&[1; 10]);
        let nine: Vec<Member> = m.iter().filter(|s| s.state.name() != "s3").cloned().collect();
        let (ten_ring, nine_ring) = (Ring::new(&m, 125), Ring::new(&nine, 125));
        let mut moved = 0;
        for k in keys(10_000) {
            let before = name_of(&m, &ten_ring, k, &|_| true);
            let after = name_of(&nine, &nine_ring, k, &|_| true);
            let marked_down = name_of(&m, &ten_ring, k, &|i| i != 3);
            assert_eq!(after, marked_down, "removing s3 and marking it down agree");
            if before != after {
                assert_eq!(before, "s3", "only the removed server's keys move");
                moved += 1;
            }
        }
        assert!((500..=1_500).contains(&moved), "{moved} of 10000 keys moved");
    }

    /// 80 % of requests carry one hot key; requests are held (in flight) as placed.
    #[test]
    fn a_hot_key_spills_over_and_no_server_exceeds_a_quarter_above_average() {
        let m = members(&[1; 10]);
        let ring = Ring::new(&m, 125);
        let rng = SplitMix::seeded(9);
        let hot = key_hash(b"/popular");
        let mut held = Vec::new();
        for r in 0..3_000u64 {
            let key = if rng.below(10) < 8 { hot } else { key_hash(&r.to_le_bytes()) };
            let i = ring.pick_key(key, &|_| true).expect("a usable member");
            held.push(m[i].state.begin());
            // Held from r = 1000 on, released at random: the bound holds where a request lands.
            if r >= 1_000 && rng.below(2) == 0 {
                held.swap_remove(rng.below(held.len() as u64) as usize);
            }
            let total: u64 = m.iter().map(|s| s.state.in_flight()).sum();
            let limit = 1.25 * total as f64 / 10.0 + 1.0;
            let load = |s: &Member| s.state.in_flight() as f64;
            let max = if r < 1_000 { m.iter().map(load).fold(0.0, f64::max) } else { load(&m[i]) };
            assert!(max <= limit, "step {r}: load {max} above {limit}");
        }
    }

    #[test]
    fn without_the_bound_a_hot_key_stays_on_one_server() {
        let m = members(&[1; 4]);
        let ring = Ring::new(&m, 0);
        let hot = key_hash(b"/popular");
        let home = ring.pick_key(hot, &|_| true).expect("a usable member");
        let _held: Vec<_> = (0..20).map(|_| m[home].state.begin()).collect();
        assert_eq!(ring.pick_key(hot, &|_| true), Some(home));
        let bounded = Ring::new(&m, 125);
        assert_ne!(bounded.pick_key(hot, &|_| true), Some(home));
    }

    #[test]
    fn shares_follow_weights() {
        let m = members(&[1, 1, 2]);
        let ring = Ring::new(&m, 125);
        assert_eq!(ring.points(), 480);
        let mut counts = [0u32; 3];
        for k in keys(40_000) {
            counts[ring.pick_key(k, &|_| true).expect("a usable member")] += 1;
        }
        let share = |i: usize| f64::from(counts[i]) / 40_000.0;
        for (i, want) in [(0, 0.25), (1, 0.25), (2, 0.5)] {
            assert!((share(i) - want).abs() < 0.05, "{counts:?}");
        }
    }

    #[test]
    fn keyless_picks_spread_over_every_server() {
        let m = members(&[1; 10]);
        let ring = Ring::new(&m, 125);
        let mut counts = [0u32; 10];
        for _ in 0..10_000 {
            counts[ring.pick(&|_| true).expect("a usable member")] += 1;
        }
        assert!(counts.iter().all(|&c| (500..1_500).contains(&c)), "{counts:?}");
    }

    #[test]
    fn walks_past_the_256_remembered_servers() {
        let m = members(&[1; 300]);
        let ring = Ring::new(&m, 125);
        for k in keys(20) {
            assert_eq!(ring.pick_key(k, &|i| i == 299), Some(299));
            assert_eq!(ring.pick_key(k, &|i| i == 7), Some(7));
        }
        assert_eq!(ring.pick_key(1, &|_| false), None);
        assert_eq!(Ring::new(&[], 125).pick_key(1, &|_| true), None);
    }
}
