//! Balancing algorithms.
//!
//! A balancer is built once from an immutable, ordered server set (a [`Member`] list taken
//! from one configuration snapshot) and is then shared by every worker thread. Each request
//! asks it to [`Balancer::pick`] one member among those the caller says are usable — the
//! caller decides readiness (health, admin state, already tried, full), the balancer decides
//! order. No algorithm takes a lock: round robin walks a precomputed smooth sequence with one
//! atomic counter; the load-aware ones read in-flight counters from [`ServerState`].
//!
//! One algorithm per file:
//! - [`round_robin`]: smooth weighted round robin (nginx's interleaving, no bursts);
//! - [`least_conn`]: fewest in-flight requests relative to weight;
//! - [`random`]: weighted random;
//! - [`p2c`]: power of two choices on in-flight requests;
//! - [`first`]: the first usable server in configuration order (HAProxy's `first`).

pub mod first;
pub mod least_conn;
pub mod p2c;
pub mod random;
pub mod rendezvous;
pub mod round_robin;

use std::fmt;
use std::sync::Arc;

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
        }
    }
}

/// A balancing algorithm over a fixed member list.
pub trait Balancer: Send + Sync + fmt::Debug {
    /// Picks the index of one member for which `usable(index)` is true, or `None` when no
    /// member is usable. Must never return an index for which `usable` is false.
    fn pick(&self, usable: &dyn Fn(usize) -> bool) -> Option<usize>;
}

/// Builds the balancer for `algorithm` over `members`.
pub fn build(algorithm: Algorithm, members: &[Member]) -> Box<dyn Balancer> {
    build_seeded(algorithm, members, SplitMix::default())
}

/// Like [`build`], with a fixed random source for reproducible tests.
pub fn build_seeded(algorithm: Algorithm, members: &[Member], rng: SplitMix) -> Box<dyn Balancer> {
    match algorithm {
        Algorithm::RoundRobin => Box::new(round_robin::RoundRobin::new(members)),
        Algorithm::LeastConn => Box::new(least_conn::LeastConn::new(members)),
        Algorithm::Random => Box::new(random::Random::new(members, rng)),
        Algorithm::P2c => Box::new(p2c::P2c::new(members, rng)),
        Algorithm::First => Box::new(first::First::new(members.len())),
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

#[cfg(test)]
mod tests;
