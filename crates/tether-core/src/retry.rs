//! The retry budget: retries may not exceed a share of recent requests, so that retrying
//! cannot multiply the load on a backend that is already failing.
//!
//! A token bucket without a clock: every request deposits `percent` hundredths of a retry,
//! every retry withdraws one whole retry. The bucket starts with, and is capped at, a small
//! reserve ([`RESERVE`] retries) so an idle backend can still retry its first failures and a
//! long quiet spell cannot bank unlimited retries for a later outage. With every server
//! failing, `n` requests cause at most `n × percent / 100 + RESERVE` retries.

use std::sync::atomic::{AtomicI64, Ordering};

/// Retries held in reserve (and the cap on what can be saved).
pub const RESERVE: i64 = 10;

const UNIT: i64 = 100;

/// A lock-free retry budget.
#[derive(Debug)]
pub struct RetryBudget {
    percent: i64,
    balance: AtomicI64,
}

impl RetryBudget {
    /// A budget allowing retries of `percent` % of requests.
    pub fn new(percent: u32) -> Self {
        Self { percent: i64::from(percent), balance: AtomicI64::new(RESERVE * UNIT) }
    }

    /// Counts one request.
    pub fn deposit(&self) {
        if self.percent == 0 {
            return;
        }
        let cap = RESERVE * UNIT;
        let _ = self.balance.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
            (b < cap).then(|| (b + self.percent).min(cap))
        });
    }

    /// Takes one retry if the budget allows it.
    pub fn try_withdraw(&self) -> bool {
        self.balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| (b >= UNIT).then_some(b - UNIT))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_the_share_of_requests_plus_the_reserve() {
        let b = RetryBudget::new(20);
        let mut retries = 0;
        for _ in 0..1000 {
            b.deposit();
            if b.try_withdraw() {
                retries += 1;
            }
        }
        assert!(retries <= 200 + RESERVE as u32, "{retries}");
        assert!(retries >= 195, "{retries}");
    }

    #[test]
    fn a_quiet_spell_cannot_bank_unlimited_retries() {
        let b = RetryBudget::new(100);
        for _ in 0..100_000 {
            b.deposit();
        }
        let burst = (0..1000).take_while(|_| b.try_withdraw()).count();
        assert_eq!(burst as i64, RESERVE);
    }

    #[test]
    fn zero_percent_allows_only_the_reserve() {
        let b = RetryBudget::new(0);
        for _ in 0..100 {
            b.deposit();
        }
        assert_eq!((0..100).take_while(|_| b.try_withdraw()).count() as i64, RESERVE);
    }
}

#[cfg(test)]
mod budget_tests;
