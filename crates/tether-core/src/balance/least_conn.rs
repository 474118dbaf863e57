//! Weighted least connections: the usable server with the fewest in-flight requests relative
//! to its weight. Ties rotate (the scan starts one further on each call), so equally idle
//! servers share the load instead of the first one taking every request.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Balancer, Member, lighter};

/// Weighted least connections over a fixed member list.
#[derive(Debug)]
pub struct LeastConn {
    members: Vec<Member>,
    start: AtomicUsize,
}

impl LeastConn {
    /// Builds over `members`; reads their live in-flight counters at each pick.
    pub fn new(members: &[Member]) -> Self {
        Self { members: members.to_vec(), start: AtomicUsize::new(0) }
    }
}

impl Balancer for LeastConn {
    fn pick(&self, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let start = self.start.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(usize, u64)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if !usable(i) {
                continue;
            }
            let load = self.members[i].state.in_flight();
            match best {
                Some((b, b_load))
                    if !lighter(load, self.members[i].weight, b_load, self.members[b].weight) => {}
                _ => best = Some((i, load)),
            }
        }
        best.map(|(i, _)| i)
    }
}
