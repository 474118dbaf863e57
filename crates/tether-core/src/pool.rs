//! The idle connections to one server, for the HTTP/1.1 engine of issue #13: a connection
//! is checked out for one request and returned only when the exchange left it in a known
//! state.
//!
//! - **LIFO**: the connection returned last is handed out first. It is the one least likely
//!   to have been closed by the server's idle timeout, and under light load the same few
//!   connections stay warm while the rest age out (HAProxy and Pingora reuse this way).
//! - **Capped**: at most `max_idle` wait; a connection returned to a full pool is closed.
//! - **Idle timeout**: a connection idle longer than `idle_timeout` is never handed out
//!   (closed at the next checkout, checkin or [`IdlePool::prune`]).
//! - **Only clean connections come back** ([`Ending::reusable`]): after a complete,
//!   well-framed response to a complete request, with no `Connection: close` either way.
//!   A response that was cut, malformed, read until close, or whose framing was in doubt
//!   (both `Transfer-Encoding` and `Content-Length`) retires the connection.
//!
//! The pool is single-owner (one per server per worker thread, no lock) and pure: the caller
//! passes the time, so the rules are unit-tested without sockets or clocks.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How one exchange on a connection ended, as far as reuse goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    /// The request (head and body) was sent whole.
    pub request_complete: bool,
    /// The response was read to its end by its own framing (length or last chunk).
    pub response_complete: bool,
    /// The response's framing was in doubt (e.g. both `Transfer-Encoding` and
    /// `Content-Length`): read as the policy says, but not to be trusted again.
    pub framing_doubtful: bool,
    /// Either side said `Connection: close` (or spoke HTTP/1.0 without keep-alive), or the
    /// response was delimited by the connection's close.
    pub close: bool,
    /// The connection was switched to another protocol (`101`): it is a tunnel now.
    pub upgraded: bool,
}

impl Ending {
    /// Whether the connection may serve another request.
    pub fn reusable(&self) -> bool {
        self.request_complete
            && self.response_complete
            && !self.framing_doubtful
            && !self.close
            && !self.upgraded
    }
}

/// The idle connections to one server.
#[derive(Debug)]
pub struct IdlePool<T> {
    /// Oldest first: checkouts take from the back, expiry trims the front.
    idle: VecDeque<(T, Instant)>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl<T> IdlePool<T> {
    /// A pool keeping at most `max_idle` connections, each for at most `idle_timeout`.
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Self {
        Self { idle: VecDeque::new(), max_idle, idle_timeout }
    }

    /// The freshest idle connection, if one has not outlived the idle timeout.
    pub fn checkout(&mut self, now: Instant) -> Option<T> {
        self.prune(now);
        self.idle.pop_back().map(|(conn, _)| conn)
    }

    /// Returns `conn` after an exchange that ended as `ending` at `now`: kept when reusable
    /// and there is room; otherwise handed back to be closed.
    pub fn checkin(&mut self, conn: T, ending: Ending, now: Instant) -> Option<T> {
        if !ending.reusable() || self.max_idle == 0 {
            return Some(conn);
        }
        self.prune(now);
        if self.idle.len() >= self.max_idle {
            return Some(conn);
        }
        self.idle.push_back((conn, now));
        None
    }

    /// Drops the connections idle longer than the idle timeout; how many.
    pub fn prune(&mut self, now: Instant) -> usize {
        let before = self.idle.len();
        while self
            .idle
            .front()
            .is_some_and(|(_, since)| now.saturating_duration_since(*since) >= self.idle_timeout)
        {
            self.idle.pop_front();
        }
        before - self.idle.len()
    }

    /// Connections waiting.
    pub fn len(&self) -> usize {
        self.idle.len()
    }

    /// No connection waiting.
    pub fn is_empty(&self) -> bool {
        self.idle.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: Ending = Ending {
        request_complete: true,
        response_complete: true,
        framing_doubtful: false,
        close: false,
        upgraded: false,
    };

    #[test]
    fn only_clean_exchanges_leave_a_reusable_connection() {
        let rows: &[(&str, Ending, bool)] = &[
            ("a complete, well-framed exchange", CLEAN, true),
            (
                "the request body was not sent whole",
                Ending { request_complete: false, ..CLEAN },
                false,
            ),
            ("the response was cut short", Ending { response_complete: false, ..CLEAN }, false),
            (
                "both framings: chunked read, not trusted",
                Ending { framing_doubtful: true, ..CLEAN },
                false,
            ),
            ("Connection: close", Ending { close: true, ..CLEAN }, false),
            ("a 101: the connection is a tunnel", Ending { upgraded: true, ..CLEAN }, false),
        ];
        for (case, ending, want) in rows {
            assert_eq!(ending.reusable(), *want, "{case}");
        }
    }

    #[test]
    fn checkout_is_last_in_first_out() {
        let t0 = Instant::now();
        let mut pool = IdlePool::new(4, Duration::from_secs(60));
        for (i, conn) in ["a", "b", "c"].into_iter().enumerate() {
            assert_eq!(pool.checkin(conn, CLEAN, t0 + Duration::from_secs(i as u64)), None);
        }
        let now = t0 + Duration::from_secs(5);
        let order: Vec<_> = std::iter::from_fn(|| pool.checkout(now)).collect();
        assert_eq!(order, ["c", "b", "a"]);
        assert!(pool.is_empty());
    }

    #[test]
    fn a_full_pool_hands_the_connection_back_to_be_closed() {
        let t0 = Instant::now();
        let mut pool = IdlePool::new(2, Duration::from_secs(60));
        assert_eq!(pool.checkin(1, CLEAN, t0), None);
        assert_eq!(pool.checkin(2, CLEAN, t0), None);
        assert_eq!(pool.checkin(3, CLEAN, t0), Some(3), "over max_idle");
        assert_eq!(pool.len(), 2);
        let mut none = IdlePool::new(0, Duration::from_secs(60));
        assert_eq!(none.checkin(1, CLEAN, t0), Some(1), "max_idle 0 keeps nothing");
    }

    #[test]
    fn an_unclean_exchange_hands_the_connection_back_to_be_closed() {
        let t0 = Instant::now();
        let mut pool = IdlePool::new(4, Duration::from_secs(60));
        let doubtful = Ending { framing_doubtful: true, ..CLEAN };
        assert_eq!(pool.checkin("suspect", doubtful, t0), Some("suspect"));
        assert_eq!(pool.checkout(t0), None);
    }

    #[test]
    fn connections_idle_past_the_timeout_are_never_handed_out() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut pool = IdlePool::new(8, s(10));
        pool.checkin("old", CLEAN, t0);
        pool.checkin("mid", CLEAN, t0 + s(5));
        pool.checkin("new", CLEAN, t0 + s(9));
        // (case, at, expected checkout)
        assert_eq!(pool.prune(t0 + s(9)), 0, "nothing has expired yet");
        assert_eq!(pool.checkout(t0 + s(14)), Some("new"), "the freshest first");
        assert_eq!(pool.checkout(t0 + s(16)), None, "'mid' expired at 15 s, 'old' at 10 s");
        assert!(pool.is_empty(), "expired connections were dropped, not kept");
        // A full pool of expired connections makes room for a fresh one.
        let mut full = IdlePool::new(1, s(10));
        full.checkin("stale", CLEAN, t0);
        assert_eq!(full.checkin("fresh", CLEAN, t0 + s(11)), None);
        assert_eq!(full.checkout(t0 + s(12)), Some("fresh"));
    }
}
