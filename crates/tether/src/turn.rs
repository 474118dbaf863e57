//! One turn of the event loop, waited once: a connection's task that lets its write wait
//! until every other task made ready by the same batch of events has run. Their writes then
//! go out together, so a peer on the same machine (a server, a load generator) is woken
//! once per batch rather than once per message, and its wake-ups stop preempting Tether
//! mid-batch (`docs/performance.md`: fewer involuntary context switches). Costs one more
//! poll of the task.

use std::task::{Context, Poll};

/// Whether the turn has been taken.
#[derive(Debug, Default)]
pub struct Turn {
    taken: bool,
}

impl Turn {
    /// `Pending` the first time (and the task is woken at once, so it runs again after the
    /// tasks already queued), `Ready` ever after.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if std::mem::replace(&mut self.taken, true) {
            return Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::CountingWaker;

    #[test]
    fn the_first_poll_waits_a_turn_and_asks_to_run_again() {
        let (waker, counter) = CountingWaker::new();
        let mut cx = Context::from_waker(&waker);
        let mut turn = Turn::default();
        assert!(turn.poll(&mut cx).is_pending());
        assert_eq!(counter.wakes(), 1, "woken, so it is not forgotten");
        for _ in 0..3 {
            assert!(turn.poll(&mut cx).is_ready());
        }
        assert_eq!(counter.wakes(), 1, "once only");
    }
}
