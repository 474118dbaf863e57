//! Smooth weighted round robin.
//!
//! nginx's algorithm: at every step each server's running score grows by its weight, the
//! highest score wins and loses the total weight. Weights 5,1,1 give `a a b a c a a` — the
//! heavy server's turns are spread out instead of coming in a burst of five.
//!
//! The sequence is periodic with a period of the total weight (after dividing by the weights'
//! gcd), so it is computed once when the balancer is built and walked with one atomic counter:
//! no lock and no per-request state beyond that counter. When the member at the counter is not
//! usable the balancer takes the *next counter value* rather than the next usable neighbour,
//! so a down server's share is spread over the others in proportion to their weights instead
//! of all landing on the server that follows it in the sequence.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Balancer, Member};

/// Smooth weighted round robin over a fixed member list.
#[derive(Debug)]
pub struct RoundRobin {
    sequence: Box<[u32]>,
    next: AtomicUsize,
}

impl RoundRobin {
    /// Precomputes one period of the smooth sequence.
    pub fn new(members: &[Member]) -> Self {
        Self { sequence: smooth_sequence(members).into_boxed_slice(), next: AtomicUsize::new(0) }
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// One period of nginx's smooth weighted round robin, as member indices.
pub fn smooth_sequence(members: &[Member]) -> Vec<u32> {
    let g = members.iter().map(|m| m.weight.max(1)).fold(0, gcd).max(1);
    let weights: Vec<i64> = members.iter().map(|m| i64::from(m.weight.max(1) / g)).collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut seq = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += w;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        seq.push(best as u32);
    }
    seq
}

impl Balancer for RoundRobin {
    fn pick(&self, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let len = self.sequence.len();
        for _ in 0..len {
            let slot = self.next.fetch_add(1, Ordering::Relaxed) % len;
            let i = self.sequence[slot] as usize;
            if usable(i) {
                return Some(i);
            }
        }
        None
    }
}
