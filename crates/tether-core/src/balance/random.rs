//! Weighted random: each usable server is chosen with probability proportional to its weight.

use super::{Balancer, Member, weighted_random};
use crate::rng::SplitMix;

/// Weighted random over a fixed member list.
#[derive(Debug)]
pub struct Random {
    members: Vec<Member>,
    rng: SplitMix,
}

impl Random {
    /// Builds over `members` with the given random source.
    pub fn new(members: &[Member], rng: SplitMix) -> Self {
        Self { members: members.to_vec(), rng }
    }
}

impl Balancer for Random {
    fn pick(&self, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        weighted_random(&self.members, &self.rng, usable, None)
    }
}
