//! Waiting for a condition instead of sleeping.
//!
//! A test that sleeps "long enough" is slow when the machine is fast and flaky when it is
//! slow. These helpers poll a condition every [`POLL_INTERVAL`] and return as soon as it
//! holds, or `false` once the deadline has passed. They use tokio's clock, so they also work
//! under paused time.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often the condition is checked: 10 ms.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Polls `condition` until it returns true (→ `true`) or `deadline` has passed (→ `false`).
/// The condition is checked at least once, and once more at the deadline.
pub async fn wait_until(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if condition() {
            return true;
        }
        let now = Instant::now();
        if now >= end {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL.min(end - now)).await;
    }
}

/// Like [`wait_until`] for a condition that must await (an HTTP probe, a log query).
/// A check still pending at the deadline is dropped and counts as false.
pub async fn wait_until_async<F, Fut>(deadline: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        if matches!(tokio::time::timeout_at(end, condition()).await, Ok(true)) {
            return true;
        }
        let now = Instant::now();
        if now >= end {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL.min(end - now)).await;
    }
}
