//! Per-client rate limiting: a token bucket in its GCRA form (generic cell rate algorithm),
//! where a bucket is one atomic "theoretical arrival time" and a check is one
//! compare-and-swap, with no lock and no background refill.
//!
//! A quota of `rate` requests per second with `burst` allows `burst` requests at once from
//! a full bucket, then one every `1/rate` seconds; a refused request learns how long until
//! one would be allowed (`Retry-After`). Time is the caller's, in nanoseconds from any fixed
//! origin, so the algorithm is tested at exact instants.

use std::sync::atomic::{AtomicU64, Ordering};

/// A rate and burst, in the units [`Quota::check`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Nanoseconds between requests at the sustained rate.
    interval: u64,
    /// How far ahead of now the arrival time may run: `burst × interval`.
    window: u64,
}

impl Quota {
    /// `per_second` requests per second (> 0) with bursts of `burst` (≥ 1).
    pub fn new(per_second: f64, burst: u32) -> Self {
        let interval = (1e9 / per_second.max(1e-9)).clamp(1.0, u64::MAX as f64 / 4.0) as u64;
        let window = interval.saturating_mul(u64::from(burst.max(1)));
        Self { interval, window }
    }

    /// How long an unused bucket takes to be full again: after that it equals a new one and
    /// may be forgotten.
    pub fn refill_nanos(&self) -> u64 {
        self.window
    }

    /// Takes one token from `bucket` at `now` (nanoseconds); `Err(wait)` when none is left,
    /// with the nanoseconds until one will be.
    pub fn check(&self, bucket: &AtomicU64, now: u64) -> Result<(), u64> {
        let mut tat = bucket.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now).saturating_add(self.interval);
            let limit = now.saturating_add(self.window);
            if next > limit {
                return Err(next - limit);
            }
            match bucket.compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(seen) => tat = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn a_full_bucket_allows_the_burst_then_one_per_interval() {
        let q = Quota::new(10.0, 5);
        let b = AtomicU64::new(0);
        let t0 = 100 * SEC;
        for i in 0..5 {
            assert_eq!(q.check(&b, t0), Ok(()), "request {i} of the burst");
        }
        let wait = q.check(&b, t0).unwrap_err();
        assert_eq!(wait, SEC / 10, "the next token comes after one interval");
        assert!(q.check(&b, t0 + SEC / 10 - 1).is_err());
        assert_eq!(q.check(&b, t0 + SEC / 10), Ok(()));
        assert!(q.check(&b, t0 + SEC / 10).is_err());
        // After a full refill the burst is back.
        let later = t0 + SEC;
        for _ in 0..5 {
            assert_eq!(q.check(&b, later), Ok(()));
        }
        assert!(q.check(&b, later).is_err());
    }

    #[test]
    fn slow_rates_and_refused_requests_do_not_consume() {
        let q = Quota::new(0.5, 1);
        let b = AtomicU64::new(0);
        assert_eq!(q.check(&b, 10 * SEC), Ok(()));
        assert_eq!(q.check(&b, 10 * SEC), Err(2 * SEC));
        // Hammering while refused does not push the next token further away.
        for _ in 0..100 {
            let _ = q.check(&b, 11 * SEC);
        }
        assert_eq!(q.check(&b, 12 * SEC), Ok(()));
        assert_eq!(q.refill_nanos(), 2 * SEC);
    }

    proptest! {
        /// Over any span, a bucket allows at most burst + rate × span requests, and a client
        /// that keeps to the rate is never refused.
        #[test]
        fn never_more_than_burst_plus_rate(
            rate in 1u32..1000, burst in 1u32..50,
            gaps in proptest::collection::vec(0u64..20_000_000, 1..400),
        ) {
            let q = Quota::new(f64::from(rate), burst);
            let b = AtomicU64::new(0);
            let start = 5 * SEC;
            let mut now = start;
            let mut allowed = 0u64;
            for g in &gaps {
                now += g;
                if q.check(&b, now).is_ok() {
                    allowed += 1;
                }
            }
            let span = now - start;
            let bound = u64::from(burst) + span * u64::from(rate) / SEC + 1;
            prop_assert!(allowed <= bound, "{allowed} > {bound}");

            let polite = AtomicU64::new(0);
            let step = SEC / u64::from(rate);
            for i in 0..gaps.len() as u64 {
                prop_assert!(q.check(&polite, start + i * step).is_ok());
            }
        }
    }
}
