//! First: the first usable server in configuration order takes every request (HAProxy's
//! `balance first`), so that spare servers stay idle and can be powered down. Combined with
//! per-server connection limits, the next server takes over only when the first is full.

use super::Balancer;

/// First usable member in configuration order.
#[derive(Debug)]
pub struct First {
    len: usize,
}

impl First {
    /// Builds over a member list of `len` servers.
    pub fn new(len: usize) -> Self {
        Self { len }
    }
}

impl Balancer for First {
    fn pick(&self, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        (0..self.len).find(|&i| usable(i))
    }
}
