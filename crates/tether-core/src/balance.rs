//! Balancing algorithms.
//!
//! A balancer is built once from an immutable, ordered server set (a [`Member`] list taken
//! from one configuration snapshot) and is then shared by every worker thread. Each request
//! asks it to [`Balancer::pick`] one member among those the caller says are usable — the
//! caller decides readiness (health, admin state, already tried, full), the balancer decides
//! order. No algorithm takes a lock: round robin walks a precomputed smooth sequence with one
//! atomic counter; the load-aware ones read in-flight counters from [`ServerState`].
//!
//! Keyed algorithms ([`Algorithm::keyed`]) send the same request key to the same server: the
//! caller hashes what identifies the client or the resource with [`key_hash`] and calls
//! [`Balancer::pick_key`]. Their tables are built from server *names*, so every Tether
//! instance with the same servers agrees, whatever their order in each configuration.
//!
//! One algorithm per file:
//! - [`round_robin`]: smooth weighted round robin (nginx's interleaving, no bursts);
//! - [`least_conn`]: fewest in-flight requests relative to weight;
//! - [`random`]: weighted random;
//! - [`p2c`]: power of two choices on in-flight requests;
//! - [`first`]: the first usable server in configuration order (HAProxy's `first`);
//! - [`least_time`]: lowest peak-EWMA response time × (in-flight + 1), as Linkerd and Finagle;
//! - [`hash`]: consistent hashing on a ring, with bounded loads (a hot key spills over);
//! - [`maglev`]: Google's Maglev lookup table (even shares, one array read per pick);
//! - [`rendezvous`]: highest-random-weight hashing for first assignments of sticky tables.

pub mod first;
pub mod hash;
pub mod least_conn;
pub mod least_time;
pub mod maglev;
pub mod p2c;
pub mod random;
pub mod rendezvous;
pub mod round_robin;

use std::fmt;
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::rng::SplitMix;
use crate::server::ServerState;

/// Weights are 1..=[`MAX_WEIGHT`], as in HAProxy; 0 is rejected by config validation.
pub const MAX_WEIGHT: u32 = 256;

/// One server of the set a balancer is built from.
#[derive(Debug, Clone)]
pub struct Member {
    /// Shared runtime state (in-flight counter for load-aware algorithms).
    pub state: Arc<ServerState>,
    /// Static weight, 1..=256.
    pub weight: u32,
}

/// The algorithms Tether knows, as named in `backends.NAME.balance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `round_robin` (default).
    RoundRobin,
    /// `least_conn`.
    LeastConn,
    /// `random`.
    Random,
    /// `p2c`.
    P2c,
    /// `first`.
    First,
    /// `hash`: consistent hashing of a request key, with bounded loads.
    Hash,
    /// `maglev`: Maglev table lookup of a request key.
    Maglev,
    /// `least_time`: lowest response time × load.
    LeastTime,
}

impl Algorithm {
    /// Parses the configuration name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "round_robin" => Algorithm::RoundRobin,
            "least_conn" => Algorithm::LeastConn,
            "random" => Algorithm::Random,
            "p2c" => Algorithm::P2c,
            "first" => Algorithm::First,
            "hash" => Algorithm::Hash,
            "maglev" => Algorithm::Maglev,
            "least_time" => Algorithm::LeastTime,
            _ => return None,
        })
    }

    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::LeastConn => "least_conn",
            Algorithm::Random => "random",
            Algorithm::P2c => "p2c",
            Algorithm::First => "first",
            Algorithm::Hash => "hash",
            Algorithm::Maglev => "maglev",
            Algorithm::LeastTime => "least_time",
        }
    }

    /// Does the algorithm route by a request key? Then the caller must compute one with
    /// [`key_hash`] and call [`Balancer::pick_key`]; plain [`Balancer::pick`] would only
    /// spread requests by weight.
    pub fn keyed(self) -> bool {
        matches!(self, Algorithm::Hash | Algorithm::Maglev)
    }
}

/// Tuning of the algorithms that have any, from the backend's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// `hash` only: bounded loads, in percent of the average load (default
    /// [`DEFAULT_HASH_BALANCE_FACTOR`], 125). A key's server takes the request only while its
    /// in-flight count is below `factor / 100 ×` the average in-flight count of the usable
    /// servers (counting this request, scaled by weight); otherwise the next server clockwise
    /// on the ring does. 0 turns the bound off (plain consistent hashing: a hot key stays on
    /// one server whatever its load). Otherwise 100..=1000, validated by the caller: 100 is
    /// perfectly even and moves the most keys, 1000 almost never spills. Values 1..=99 could
    /// never be met by every server and are taken as 100.
    pub hash_balance_factor: u32,
}

/// Default of [`Options::hash_balance_factor`]: 125 %, the factor Vimeo deployed consistent
/// hashing with bounded loads with (at most a quarter above average per server).
pub const DEFAULT_HASH_BALANCE_FACTOR: u32 = 125;

impl Default for Options {
    fn default() -> Self {
        Self { hash_balance_factor: DEFAULT_HASH_BALANCE_FACTOR }
    }
}

/// Fixed seed of [`key_hash`] ("tetherkh"): it must not change between instances or versions.
const KEY_SEED: u64 = 0x7465_7468_6572_6b68;

/// The request key for [`Balancer::pick_key`]: xxh3 of `bytes` (client address, header value,
/// URL path…) with a fixed seed, so every Tether instance and every restart sends the same key
/// to the same server.
pub fn key_hash(bytes: &[u8]) -> u64 {
    xxh3_64_with_seed(bytes, KEY_SEED)
}

/// A balancing algorithm over a fixed member list.
pub trait Balancer: Send + Sync + fmt::Debug {
    /// Picks the index of one member for which `usable(index)` is true, or `None` when no
    /// member is usable. Must never return an index for which `usable` is false.
    fn pick(&self, usable: &dyn Fn(usize) -> bool) -> Option<usize>;

    /// Like [`pick`](Balancer::pick) for a request whose key is `key` (from [`key_hash`]):
    /// keyed algorithms send the same key to the same usable server. The others ignore the
    /// key (this default).
    fn pick_key(&self, key: u64, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let _ = key;
        self.pick(usable)
    }
}

/// Builds the balancer for `algorithm` over `members`, with default [`Options`].
pub fn build(algorithm: Algorithm, members: &[Member]) -> Box<dyn Balancer> {
    build_from(algorithm, members, &Options::default(), SplitMix::default())
}

/// Builds the balancer for `algorithm` over `members`, tuned by `options`.
pub fn build_with(
    algorithm: Algorithm,
    members: &[Member],
    options: &Options,
) -> Box<dyn Balancer> {
    build_from(algorithm, members, options, SplitMix::default())
}

/// Like [`build`], with a fixed random source for reproducible tests.
pub fn build_seeded(algorithm: Algorithm, members: &[Member], rng: SplitMix) -> Box<dyn Balancer> {
    build_from(algorithm, members, &Options::default(), rng)
}

fn build_from(
    algorithm: Algorithm,
    members: &[Member],
    options: &Options,
    rng: SplitMix,
) -> Box<dyn Balancer> {
    match algorithm {
        Algorithm::RoundRobin => Box::new(round_robin::RoundRobin::new(members)),
        Algorithm::LeastConn => Box::new(least_conn::LeastConn::new(members)),
        Algorithm::Random => Box::new(random::Random::new(members, rng)),
        Algorithm::P2c => Box::new(p2c::P2c::new(members, rng)),
        Algorithm::First => Box::new(first::First::new(members.len())),
        Algorithm::Hash => Box::new(hash::Ring::new(members, options.hash_balance_factor)),
        Algorithm::Maglev => Box::new(maglev::Maglev::new(members)),
        Algorithm::LeastTime => Box::new(least_time::LeastTime::new(members, rng)),
    }
}

/// `a_load / a_weight < b_load / b_weight` without division. Loads are counted with one
/// extra request (the one being placed), as HAProxy does, so weights matter at zero load.
fn lighter(a_load: u64, a_weight: u32, b_load: u64, b_weight: u32) -> bool {
    u128::from(a_load + 1) * u128::from(b_weight) < u128::from(b_load + 1) * u128::from(a_weight)
}

/// Weighted random choice among usable members, without allocating: one pass to sum the
/// usable weight, one to find the chosen member. `skip` excludes one more index (p2c).
fn weighted_random(
    members: &[Member],
    rng: &SplitMix,
    usable: &dyn Fn(usize) -> bool,
    skip: Option<usize>,
) -> Option<usize> {
    let ok = |i: usize| Some(i) != skip && usable(i);
    let total: u64 =
        (0..members.len()).filter(|&i| ok(i)).map(|i| u64::from(members[i].weight)).sum();
    if total == 0 {
        return None;
    }
    let mut r = rng.below(total);
    for (i, m) in members.iter().enumerate() {
        if !ok(i) {
            continue;
        }
        let w = u64::from(m.weight);
        if r < w {
            return Some(i);
        }
        r -= w;
    }
    None
}

/// SplitMix64's finaliser: 64 well-mixed bits from any input (remixing ring keys, drawing
/// tie-breaks from one random word).
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The members already looked at during one walk of `hash` or `maglev`, so that each is
/// judged once: a 256-bit set on the stack (no allocation on the pick path). Indices beyond
/// it are never remembered — with more members a walk may judge one twice, slower but
/// still correct.
#[derive(Default)]
struct Seen {
    bits: [u64; 4],
    distinct: usize,
}

impl Seen {
    const CAPACITY: usize = 256;

    /// Records `i`; false when it was already recorded.
    fn first_visit(&mut self, i: usize) -> bool {
        if i >= Self::CAPACITY {
            return true;
        }
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        if self.bits[word] & bit != 0 {
            return false;
        }
        self.bits[word] |= bit;
        self.distinct += 1;
        true
    }

    /// Every one of `n` members has been visited (known only when they all fit in the set).
    fn all_of(&self, n: usize) -> bool {
        n <= Self::CAPACITY && self.distinct == n
    }
}

#[cfg(test)]
mod tests;
