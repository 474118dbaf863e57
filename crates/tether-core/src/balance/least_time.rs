//! Least time: the usable server with the lowest expected wait, `response time × (in-flight +
//! 1) / weight` — the cost Linkerd and Finagle balance on.
//!
//! In-flight counts alone (`least_conn`) treat a server answering in 50 ms like one answering
//! in 1 ms until requests pile up on the slow one. Multiplying by a response time average
//! sends work to the fast servers from the start, while the in-flight factor still spreads it
//! once they get busy.
//!
//! **The average** is a *peak* EWMA kept per server in [`ServerState`]
//! ([`ServerState::observe_response_time`], fed by the caller with its own clock): a sample
//! above the average replaces it at once, a sample below is blended in with a weight that
//! grows with the time since the previous sample
//! ([`RESPONSE_TIME_DECAY_US`](crate::server::RESPONSE_TIME_DECAY_US), 1 s). A server turning
//! slow is avoided from its first slow answer; one getting faster is trusted again gradually.
//!
//! **New servers** have no average: their cost is 0 while nothing is in flight to them, so a
//! new server is measured first. While its first requests are in flight it ranks last instead
//! (cost +∞): nothing is known of its speed, and piling every request on it until its first
//! answer returns is the herd Linkerd avoids with a default response time. A failed request
//! records nothing, so the server is tried again once it is idle.
//!
//! **Ties.** Costs within [`TIE_MARGIN`] of the lowest count as equal, and one of them is drawn
//! at random (uniformly, by reservoir sampling in one pass). Measurements are noisy, and a
//! strict minimum would send every request to whichever server's average is a hair lower, or
//! starve a recovered server whose average approaches the others' from above but never
//! passes them.
//!
//! **Probing.** A server avoided for being slow gets no new samples, so nothing would tell
//! its recovery. One pick in [`PROBE_ONE_IN`] therefore goes to a random usable server
//! (weighted): about 1 % of requests with three servers, and the slow server's average catches
//! up within seconds once it is fast again.
//!
//! Two passes over the members per pick (lowest cost, then the ties), no lock, no allocation,
//! one draw from the shared random source.
//!
//! [`ServerState`]: crate::server::ServerState
//! [`ServerState::observe_response_time`]: crate::server::ServerState::observe_response_time

use super::{Balancer, Member, mix64, weighted_random};
use crate::rng::SplitMix;

/// One pick in `PROBE_ONE_IN` (32) goes to a random usable server, so that a server avoided
/// for being slow is still measured and its recovery seen.
pub const PROBE_ONE_IN: u64 = 32;

/// Costs at most this fraction (10 %) above the lowest count as a tie.
pub const TIE_MARGIN: f64 = 0.10;

/// Least time over a fixed member list.
#[derive(Debug)]
pub struct LeastTime {
    members: Vec<Member>,
    rng: SplitMix,
}

impl LeastTime {
    /// Builds over `members` with the given random source (probes and ties); reads their live
    /// response-time averages and in-flight counters at each pick.
    pub fn new(members: &[Member], rng: SplitMix) -> Self {
        Self { members: members.to_vec(), rng }
    }

    /// The usable member of lowest cost, and that cost.
    fn lowest(&self, usable: &dyn Fn(usize) -> bool) -> Option<(usize, f64)> {
        let mut best: Option<(usize, f64)> = None;
        for (i, m) in self.members.iter().enumerate() {
            if usable(i) {
                let c = cost(m);
                if best.is_none_or(|(_, b)| c < b) {
                    best = Some((i, c));
                }
            }
        }
        best
    }

    /// A uniform choice among the usable members within [`TIE_MARGIN`] of `lowest`, drawn from
    /// the random word `r`. Falls back to `best` if costs rose under a racing request.
    fn among_ties(
        &self,
        (best, lowest): (usize, f64),
        r: u64,
        usable: &dyn Fn(usize) -> bool,
    ) -> usize {
        let limit = lowest * (1.0 + TIE_MARGIN);
        let (mut chosen, mut ties, mut x) = (best, 0u64, r);
        for (i, m) in self.members.iter().enumerate() {
            if !usable(i) || cost(m) > limit {
                continue;
            }
            // Reservoir sampling: the k-th tie replaces the choice with probability 1/k.
            ties += 1;
            x = mix64(x);
            if x % ties == 0 {
                chosen = i;
            }
        }
        chosen
    }
}

/// Expected wait on `m`: response time × (in-flight + 1) / weight, 0 for a new idle server,
/// +∞ for a new one already being measured.
fn cost(m: &Member) -> f64 {
    let load = m.state.in_flight();
    let ewma = m.state.response_time_ewma_us();
    if ewma == 0.0 {
        return if load == 0 { 0.0 } else { f64::INFINITY };
    }
    ewma * (load + 1) as f64 / f64::from(m.weight.max(1))
}

impl Balancer for LeastTime {
    fn pick(&self, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let r = self.rng.next_u64();
        if r % PROBE_ONE_IN == 0 {
            return weighted_random(&self.members, &self.rng, usable, None);
        }
        let lowest = self.lowest(usable)?;
        Some(self.among_ties(lowest, r, usable))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::members;

    /// `picks` sequential requests on a simulated clock, each answered after `latency_us[i]`
    /// and observed then; returns the picks per server.
    fn run(
        b: &LeastTime,
        m: &[Member],
        clock: &mut u64,
        latency_us: [u64; 3],
        picks: usize,
    ) -> [usize; 3] {
        let mut counts = [0; 3];
        for _ in 0..picks {
            let i = b.pick(&|_| true).expect("a usable member");
            *clock += latency_us[i];
            m[i].state.observe_response_time(latency_us[i], *clock);
            counts[i] += 1;
        }
        counts
    }

    #[test]
    fn a_slow_server_gets_little_and_its_share_returns_within_ten_seconds_of_recovery() {
        let m = members(&[1, 1, 1]);
        let b = LeastTime::new(&m, SplitMix::seeded(5));
        let mut clock = 0;
        let c = run(&b, &m, &mut clock, [50_000, 1_000, 1_000], 3_000);
        assert!(c[0] <= 450, "the 50 ms server got {c:?} of 3000");
        assert!(c[1].abs_diff(c[2]) <= 300, "the fast servers share evenly: {c:?}");
        // All answer in 1 ms from now: 10,000 picks are 10 simulated seconds; the last 2,000
        // (seconds 8 to 10) must be shared a third each, give or take 6 points.
        let recovered = clock;
        run(&b, &m, &mut clock, [1_000; 3], 8_000);
        let c = run(&b, &m, &mut clock, [1_000; 3], 2_000);
        assert_eq!(clock - recovered, 10_000_000);
        for n in c {
            assert!((n as f64 / 2_000.0 - 1.0 / 3.0).abs() <= 0.06, "{c:?}");
        }
    }

    #[test]
    fn fewer_in_flight_wins_at_equal_response_time() {
        let m = members(&[1, 1, 1]);
        for s in &m {
            s.state.observe_response_time(1_000, 1);
        }
        let _busy = (m[0].state.begin(), m[2].state.begin());
        let b = LeastTime::new(&m, SplitMix::seeded(1));
        let c: Vec<usize> = (0..320).filter_map(|_| b.pick(&|_| true)).collect();
        let to_idle = c.iter().filter(|&&i| i == 1).count();
        assert!(to_idle >= 290, "{to_idle} of 320 to the idle server (the rest are probes)");
    }

    #[test]
    fn weight_divides_the_cost() {
        let m = members(&[1, 4]);
        m[0].state.observe_response_time(1_000, 1);
        m[1].state.observe_response_time(2_000, 1);
        let _busy: Vec<_> = (0..2).map(|_| m[1].state.begin()).collect();
        // 1000 × 1 / 1 = 1000 against 2000 × 3 / 4 = 1500.
        assert_eq!(LeastTime::new(&m, SplitMix::seeded(2)).lowest(&|_| true), Some((0, 1_000.0)));
        let _more = m[0].state.begin();
        assert_eq!(LeastTime::new(&m, SplitMix::seeded(2)).lowest(&|_| true).map(|b| b.0), Some(1));
    }

    #[test]
    fn a_new_server_is_measured_first_but_not_piled_on() {
        let m = members(&[1, 1]);
        m[0].state.observe_response_time(1_000, 1);
        let b = LeastTime::new(&m, SplitMix::seeded(3));
        assert_eq!(b.lowest(&|_| true), Some((1, 0.0)), "new and idle: measured first");
        let _measuring = m[1].state.begin();
        assert_eq!(b.lowest(&|_| true), Some((0, 1_000.0)), "being measured: others first");
    }

    #[test]
    fn probes_reach_every_usable_server_and_only_those() {
        let m = members(&[1, 1, 1]);
        m[0].state.observe_response_time(100_000, 1);
        m[1].state.observe_response_time(1_000, 1);
        m[2].state.observe_response_time(1_000, 1);
        let b = LeastTime::new(&m, SplitMix::seeded(4));
        let slow = (0..32_000).filter(|_| b.pick(&|i| i != 2) == Some(0)).count();
        // Probes are 1/32 of picks and reach the slow server half the time: 500 expected.
        assert!((400..=600).contains(&slow), "{slow} probes of 32000 picks");
        assert_eq!(b.pick(&|_| false), None);
    }
}
