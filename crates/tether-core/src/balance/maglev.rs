//! Maglev hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
//! Balancer", NSDI 2016): a lookup table that maps a request key to a server in one array read,
//! with near-perfectly even shares and little disruption when servers come and go.
//!
//! **Building** (once, in [`Maglev::new`]). The table has `M` entries, `M` prime. Each server
//! gets a permutation of the entries, `offset, offset + skip, offset + 2·skip, … (mod M)`, from
//! two fixed-seed hashes of its *name* (`offset` in `0..M`, `skip` in `1..M`: with `M` prime
//! every skip visits every entry). Servers then take turns claiming the next entry of their
//! permutation that is still free, until the table is full. Servers take their turns in name
//! order, so instances with the same servers build the same table whatever the config order.
//!
//! **Weights** — each server gets `weight` turns per round of `max weight` iterations, spread
//! out the way Envoy's Maglev does it: in iteration `t` a server takes a turn only when
//! `t × weight` has caught up with its credit, and each turn raises the credit by the largest
//! weight. A server of the largest weight takes a turn every iteration, one of a third of it
//! every third. Entries are claimed one per turn, so shares follow weights to within an entry.
//! (Taking all `weight` turns in a row would let the first servers fill the table alone once
//! the weights add up to more than `M`.)
//!
//! **Table size.** The paper asks for `M ≫ n` (`M ≥ 100 n` keeps shares within about 1 %), and
//! the size must not follow the server count: keys are placed by `key mod M`, so a new `M`
//! moves nearly every key, on every reload that adds or removes a server. `M` is therefore the
//! smallest prime ≥ `max(`[`SLOTS_PER_SERVER`]` × n, `[`MIN_TABLE_SIZE`]`)` = 65,537 — the
//! paper's and Envoy's default — for any backend of up to 655 servers: 256 KiB per table.
//!
//! **Picking** reads `table[key mod M]`. When that server is not usable, the following entries
//! (`key + 1, key + 2, …`) are tried in turn. Neighbouring entries belong to unrelated servers,
//! so a down server's keys spread over the others, and no other key moves. The walk judges
//! each server once (a 256-bit set on the stack) and stops when all were found unusable.
//! Without a key, [`Balancer::pick`] walks the table with a rotating counter: shares by
//! weight.

use std::sync::atomic::{AtomicU64, Ordering};

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::{Balancer, Member, Seen};

/// Entries per server the table has at least (the paper's `M ≥ 100 n`).
pub const SLOTS_PER_SERVER: usize = 100;

/// The smallest table (a prime): fixed size for up to 655 servers, so that membership changes
/// move only the keys they must.
pub const MIN_TABLE_SIZE: usize = 65_537;

/// Fixed seeds of the permutations ("tethermo", "tetherms"): instances and versions agree.
const OFFSET_SEED: u64 = 0x7465_7468_6572_6d6f;
const SKIP_SEED: u64 = 0x7465_7468_6572_6d73;

/// An empty entry while the table is being filled.
const EMPTY: u32 = u32::MAX;

/// A Maglev lookup table over a fixed member list.
#[derive(Debug)]
pub struct Maglev {
    /// Member index per entry.
    table: Box<[u32]>,
    members: usize,
    /// Stand-in keys for keyless picks.
    next: AtomicU64,
}

impl Maglev {
    /// Builds the table over `members` (about a millisecond for ten servers).
    pub fn new(members: &[Member]) -> Self {
        let table = if members.is_empty() {
            Box::default()
        } else {
            populate(members, table_size(members.len())).into_boxed_slice()
        };
        Self { table, members: members.len(), next: AtomicU64::new(0) }
    }

    /// The member index of every table entry.
    pub fn table(&self) -> &[u32] {
        &self.table
    }
}

/// The table size `M` for `members` servers: the smallest prime ≥
/// `max(SLOTS_PER_SERVER × members, MIN_TABLE_SIZE)`.
pub fn table_size(members: usize) -> usize {
    let at_least = members.saturating_mul(SLOTS_PER_SERVER).max(MIN_TABLE_SIZE);
    (at_least..).find(|&c| is_prime(c)).unwrap_or(at_least)
}

fn is_prime(n: usize) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

/// One server's walk through its permutation while the table fills.
struct Cursor {
    member: u32,
    position: usize,
    skip: usize,
    weight: u64,
    credit: u64,
}

/// The servers' cursors, in name order.
fn cursors(members: &[Member], size: usize) -> Vec<Cursor> {
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by(|&a, &b| members[a].state.name().cmp(members[b].state.name()));
    let m = size as u64;
    order
        .into_iter()
        .map(|i| {
            let name = members[i].state.name().as_bytes();
            Cursor {
                // Member lists are far below 2^32 entries (each is 16 bytes of memory).
                member: i as u32,
                position: (xxh3_64_with_seed(name, OFFSET_SEED) % m) as usize,
                skip: (xxh3_64_with_seed(name, SKIP_SEED) % (m - 1) + 1) as usize,
                weight: u64::from(members[i].weight.max(1)),
                credit: 0,
            }
        })
        .collect()
}

/// Fills a table of `size` (a prime > 1) entries: servers claim entries in turn.
fn populate(members: &[Member], size: usize) -> Vec<u32> {
    let mut cursors = cursors(members, size);
    let max_weight = cursors.iter().map(|c| c.weight).max().unwrap_or(1);
    let mut table = vec![EMPTY; size];
    let mut filled = 0;
    let mut iteration = 0u64;
    while filled < size {
        iteration += 1;
        for c in cursors.iter_mut() {
            if iteration * c.weight < c.credit {
                continue;
            }
            c.credit += max_weight;
            // Terminates: the permutation visits every entry and one is still free.
            while table[c.position] != EMPTY {
                // `position + skip < 2 × size`: one subtraction instead of a division.
                c.position += c.skip;
                if c.position >= size {
                    c.position -= size;
                }
            }
            table[c.position] = c.member;
            filled += 1;
            if filled == size {
                break;
            }
        }
    }
    table
}

impl Balancer for Maglev {
    /// Without a key: a rotating counter stands in, spreading requests by weight.
    fn pick(&self, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        self.pick_key(self.next.fetch_add(1, Ordering::Relaxed), usable)
    }

    fn pick_key(&self, key: u64, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let size = self.table.len();
        if size == 0 {
            return None;
        }
        let start = (key % size as u64) as usize;
        let mut seen = Seen::default();
        for step in 0..size {
            let i = self.table[(start + step) % size] as usize;
            if !seen.first_visit(i) {
                continue;
            }
            if usable(i) {
                return Some(i);
            }
            if seen.all_of(self.members) {
                return None;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::key_hash;
    use crate::balance::tests::members;

    fn keys(n: u64) -> impl Iterator<Item = u64> {
        (0..n).map(|k| key_hash(&k.to_le_bytes()))
    }

    fn name_of(m: &[Member], t: &Maglev, key: u64, usable: &dyn Fn(usize) -> bool) -> String {
        m[t.pick_key(key, usable).expect("a usable member")].state.name().to_owned()
    }

    #[test]
    fn table_size_is_a_prime_fixed_up_to_655_servers() {
        let cases = [(0, 65_537), (1, 65_537), (10, 65_537), (655, 65_537), (656, 65_609)];
        for (servers, size) in cases {
            assert_eq!(table_size(servers), size, "{servers} servers");
        }
        assert_eq!(Maglev::new(&members(&[1; 10])).table().len(), 65_537);
    }

    #[test]
    fn the_same_servers_in_another_order_map_every_key_alike() {
        let m = members(&[1, 2, 1, 3, 1, 1, 1, 1, 1, 1]);
        let reversed: Vec<Member> = m.iter().rev().cloned().collect();
        let (a, b) = (Maglev::new(&m), Maglev::new(&reversed));
        for k in keys(10_000) {
            assert_eq!(name_of(&m, &a, k, &|_| true), name_of(&reversed, &b, k, &|_| true));
        }
    }

    #[test]
    fn removing_one_of_ten_servers_moves_few_keys() {
        let m = members(&[1; 10]);
        let nine: Vec<Member> = m.iter().filter(|s| s.state.name() != "s3").cloned().collect();
        let (ten, rebuilt) = (Maglev::new(&m), Maglev::new(&nine));
        let (mut moved, mut moved_when_down) = (0, 0);
        for k in keys(10_000) {
            let before = name_of(&m, &ten, k, &|_| true);
            let down = name_of(&m, &ten, k, &|i| i != 3);
            if before != down {
                assert_eq!(before, "s3", "marking s3 down moves only its keys");
                moved_when_down += 1;
            }
            moved += usize::from(before != name_of(&nine, &rebuilt, k, &|_| true));
        }
        assert!((800..=1_200).contains(&moved_when_down), "{moved_when_down} moved when down");
        assert!(moved <= 1_500, "{moved} of 10000 keys moved when rebuilt without s3");
    }

    #[test]
    fn shares_follow_weights() {
        let m = members(&[1, 1, 2, 4]);
        let t = Maglev::new(&m);
        let mut entries = [0usize; 4];
        for &i in t.table() {
            entries[i as usize] += 1;
        }
        let size = t.table().len() as f64;
        for (i, want) in [(0, 0.125), (1, 0.125), (2, 0.25), (3, 0.5)] {
            assert!((entries[i] as f64 / size - want).abs() < 0.001, "{entries:?}");
        }
        let mut counts = [0u32; 4];
        for k in keys(40_000) {
            counts[t.pick_key(k, &|_| true).expect("a usable member")] += 1;
        }
        assert!((f64::from(counts[3]) / 40_000.0 - 0.5).abs() < 0.02, "{counts:?}");
    }

    #[test]
    fn largest_weights_do_not_crowd_out_the_others() {
        let m = members(&[256; 10]);
        let t = Maglev::new(&m);
        let mut entries = [0usize; 10];
        for &i in t.table() {
            entries[i as usize] += 1;
        }
        assert!(entries.iter().all(|&e| e.abs_diff(6_554) <= 1), "{entries:?}");
    }

    #[test]
    fn probing_finds_the_usable_servers_and_gives_up_when_there_are_none() {
        let m = members(&[1; 300]);
        let t = Maglev::new(&m);
        for k in keys(20) {
            assert_eq!(t.pick_key(k, &|i| i == 299), Some(299));
            assert_eq!(t.pick_key(k, &|i| i == 7), Some(7));
        }
        assert_eq!(t.pick_key(1, &|_| false), None);
        assert_eq!(Maglev::new(&members(&[1; 3])).pick_key(1, &|_| false), None);
        assert_eq!(Maglev::new(&[]).pick_key(1, &|_| true), None);
    }

    #[test]
    fn keyless_picks_follow_weights() {
        let m = members(&[1, 3]);
        let t = Maglev::new(&m);
        let mut counts = [0u32; 2];
        for _ in 0..40_000 {
            counts[t.pick(&|_| true).expect("a usable member")] += 1;
        }
        assert!((f64::from(counts[1]) / 40_000.0 - 0.75).abs() < 0.01, "{counts:?}");
    }
}
