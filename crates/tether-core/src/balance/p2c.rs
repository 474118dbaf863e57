//! Power of two choices: draw two different usable servers at random (weighted) and take the
//! one with fewer in-flight requests relative to its weight. Nearly as good as least
//! connections at spreading load, without scanning every server and without the herd effect
//! of many balancers all choosing the same least-loaded server.

use super::{Balancer, Member, lighter, weighted_random};
use crate::rng::SplitMix;

/// Power of two choices over a fixed member list.
#[derive(Debug)]
pub struct P2c {
    members: Vec<Member>,
    rng: SplitMix,
}

impl P2c {
    /// Builds over `members` with the given random source.
    pub fn new(members: &[Member], rng: SplitMix) -> Self {
        Self { members: members.to_vec(), rng }
    }
}

impl Balancer for P2c {
    fn pick(&self, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let a = weighted_random(&self.members, &self.rng, usable, None)?;
        let Some(b) = weighted_random(&self.members, &self.rng, usable, Some(a)) else {
            return Some(a);
        };
        let (ma, mb) = (&self.members[a], &self.members[b]);
        if lighter(mb.state.in_flight(), mb.weight, ma.state.in_flight(), ma.weight) {
            Some(b)
        } else {
            Some(a)
        }
    }
}
