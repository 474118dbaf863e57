//! When a failed attempt is tried again on another server ([`RetryPolicy`]), and the retry
//! budget: retries may not exceed a share of recent requests, so that retrying cannot
//! multiply the load on a backend that is already failing.
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

/// Connect attempts one request may make (on as many servers) when connects fail.
pub const MAX_CONNECT_ATTEMPTS: usize = 3;

/// What one attempt at a server came to, as far as retrying goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The server answered with this status.
    Answered(u16),
    /// The connection could not be made: nothing was sent.
    ConnectFailed,
    /// Sent, then the server failed: no response head in time, a reset, garbage.
    ServerFailed,
    /// Anything else (the client's fault, or a request Tether refuses): never retried.
    Other,
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The attempt's outcome is the answer.
    Done,
    /// Try another server.
    Retry,
    /// Try another server if the retry budget allows ([`RetryBudget::try_withdraw`]).
    RetryIfBudget,
}

/// The retry rules of one request.
///
/// - A failed connect sent nothing: safe to try elsewhere whenever the request can be sent
///   again (it has no body) and another server could take it, on up to
///   [`MAX_CONNECT_ATTEMPTS`] servers (fewer when the backend has fewer). With none left,
///   the failed connect is the answer (`502`), not "no server is available".
/// - A server failure after sending, or a `502`/`503`/`504` answer, is retried only for an
///   idempotent request without a body, within `retry.attempts`, when another server could
///   take it, and within the budget (a failing backend must not see its load multiplied).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// The request has no body, so it can be sent again.
    pub replayable: bool,
    /// Replayable, and its method is idempotent.
    pub idempotent: bool,
    /// `retry.attempts`: attempts in all, the first included.
    pub attempts: usize,
    /// Servers in the backend.
    pub servers: usize,
}

impl RetryPolicy {
    /// The verdict after `attempt`, when `tried` servers have been tried (this one included);
    /// `alternative` says whether an untried server could take the request (asked only when
    /// it matters).
    pub fn judge(&self, attempt: Attempt, tried: usize, alternative: impl Fn() -> bool) -> Verdict {
        match attempt {
            Attempt::ConnectFailed
                if self.replayable
                    && tried < self.servers.min(MAX_CONNECT_ATTEMPTS)
                    && alternative() =>
            {
                Verdict::Retry
            }
            Attempt::ServerFailed | Attempt::Answered(502..=504)
                if self.idempotent && tried < self.attempts && alternative() =>
            {
                Verdict::RetryIfBudget
            }
            _ => Verdict::Done,
        }
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

#[cfg(test)]
mod policy_tests {
    use super::*;

    const BODILESS_GET: RetryPolicy =
        RetryPolicy { replayable: true, idempotent: true, attempts: 2, servers: 4 };
    const BODILESS_POST: RetryPolicy = RetryPolicy { idempotent: false, ..BODILESS_GET };
    const UPLOAD: RetryPolicy =
        RetryPolicy { replayable: false, idempotent: false, ..BODILESS_GET };

    #[test]
    fn retry_verdicts() {
        use Attempt::*;
        use Verdict::*;
        let two_servers = RetryPolicy { servers: 2, ..BODILESS_GET };
        let five_attempts = RetryPolicy { attempts: 5, servers: 8, ..BODILESS_GET };
        // (case, policy, attempt, tried, another server could take it, verdict)
        let rows: &[(&str, RetryPolicy, Attempt, usize, bool, Verdict)] = &[
            ("a 200 is the answer", BODILESS_GET, Answered(200), 1, true, Done),
            (
                "a 500 is the server's answer, not retried",
                BODILESS_GET,
                Answered(500),
                1,
                true,
                Done,
            ),
            ("a 404 is the answer", BODILESS_GET, Answered(404), 1, true, Done),
            (
                "a 502 of a GET is retried within the budget",
                BODILESS_GET,
                Answered(502),
                1,
                true,
                RetryIfBudget,
            ),
            (
                "a 503 of a GET is retried within the budget",
                BODILESS_GET,
                Answered(503),
                1,
                true,
                RetryIfBudget,
            ),
            (
                "a 504 of a GET is retried within the budget",
                BODILESS_GET,
                Answered(504),
                1,
                true,
                RetryIfBudget,
            ),
            ("a 502 of a POST is the answer", BODILESS_POST, Answered(502), 1, true, Done),
            (
                "a 502 with no other server is the answer",
                BODILESS_GET,
                Answered(502),
                1,
                false,
                Done,
            ),
            (
                "a 502 after retry.attempts is the answer",
                BODILESS_GET,
                Answered(502),
                2,
                true,
                Done,
            ),
            (
                "more attempts allow more retries",
                five_attempts,
                Answered(502),
                4,
                true,
                RetryIfBudget,
            ),
            (
                "a timeout of a GET is retried within the budget",
                BODILESS_GET,
                ServerFailed,
                1,
                true,
                RetryIfBudget,
            ),
            ("a timeout of a POST is not retried", BODILESS_POST, ServerFailed, 1, true, Done),
            ("a failed upload is not retried", UPLOAD, ServerFailed, 1, true, Done),
            (
                "a failed connect of a GET is retried without budget",
                BODILESS_GET,
                ConnectFailed,
                1,
                true,
                Retry,
            ),
            (
                "a failed connect of a bodiless POST is retried too",
                BODILESS_POST,
                ConnectFailed,
                1,
                true,
                Retry,
            ),
            (
                "a failed connect ignores retry.attempts",
                BODILESS_GET,
                ConnectFailed,
                2,
                true,
                Retry,
            ),
            (
                "connects stop at three servers",
                BODILESS_GET,
                ConnectFailed,
                MAX_CONNECT_ATTEMPTS,
                true,
                Done,
            ),
            (
                "connects stop when every server was tried",
                two_servers,
                ConnectFailed,
                2,
                true,
                Done,
            ),
            ("a failed connect of an upload is not retried", UPLOAD, ConnectFailed, 1, true, Done),
            (
                "a failed connect with no other usable server is the answer",
                BODILESS_GET,
                ConnectFailed,
                1,
                false,
                Done,
            ),
            (
                "a failed connect on a backend of one server is the answer",
                RetryPolicy { servers: 1, ..BODILESS_GET },
                ConnectFailed,
                1,
                true,
                Done,
            ),
            (
                "one attempt allowed: a 502 is the answer",
                RetryPolicy { attempts: 1, ..BODILESS_GET },
                Answered(502),
                1,
                true,
                Done,
            ),
            ("a 501 is the answer", BODILESS_GET, Answered(501), 1, true, Done),
            ("a 505 is the answer", BODILESS_GET, Answered(505), 1, true, Done),
            ("the client's fault is never retried", BODILESS_GET, Other, 1, true, Done),
        ];
        for (case, policy, attempt, tried, alternative, want) in rows {
            assert_eq!(policy.judge(*attempt, *tried, || *alternative), *want, "{case}");
        }
    }
}
