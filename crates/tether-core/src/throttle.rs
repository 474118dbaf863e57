//! A log line for a failure that can repeat many times a second (an `accept` at the
//! file-descriptor limit): the first occurrence is logged at once, the ones that follow
//! within the interval are only counted, and the next line says how many there were.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Decides when a repeating event is logged. Shared by the threads that see the event (the
/// accept loops of one listener, one per worker): one line per interval in all, not per
/// thread.
#[derive(Debug)]
pub struct LogThrottle {
    every: Duration,
    base: Instant,
    /// Nanoseconds after `base` of the last line, plus one; 0: none since the last pause.
    last_line: AtomicU64,
    /// Events since the last line.
    unlogged: AtomicU64,
}

impl LogThrottle {
    /// At most one line per `every`.
    pub fn new(every: Duration) -> Self {
        let (last_line, unlogged) = (AtomicU64::new(0), AtomicU64::new(0));
        Self { every, base: Instant::now(), last_line, unlogged }
    }

    /// Records one event at `now`; `Some(n)` when a line is due, `n` being the events it
    /// stands for (this one and those counted since the last line). Of threads racing for
    /// the same line, one gets it.
    pub fn event(&self, now: Instant) -> Option<u64> {
        self.unlogged.fetch_add(1, Ordering::AcqRel);
        let at = now.saturating_duration_since(self.base).as_nanos() as u64 + 1;
        let last = self.last_line.load(Ordering::Acquire);
        if last != 0 && Duration::from_nanos(at.saturating_sub(last)) < self.every {
            return None;
        }
        self.last_line.compare_exchange(last, at, Ordering::AcqRel, Ordering::Acquire).ok()?;
        Some(self.unlogged.swap(0, Ordering::AcqRel))
    }

    /// The events counted but not logged yet (say so when the failures stop), and resets.
    /// One load when there are none (called on every success).
    pub fn take_unlogged(&self) -> u64 {
        if self.unlogged.load(Ordering::Acquire) == 0 {
            return 0;
        }
        self.last_line.store(0, Ordering::Release);
        self.unlogged.swap(0, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_it_stands_for() {
        let t = LogThrottle::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        // (time in ms, line due with this count)
        let rows: &[(u64, Option<u64>)] = &[
            (0, Some(1)), // the first is logged at once
            (50, None),   // then counted...
            (100, None),
            (999, None),
            (1000, Some(4)), // ...and a second later, one line for all four
            (1050, None),
            (5000, Some(2)),
        ];
        for (at, want) in rows {
            assert_eq!(t.event(ms(*at)), *want, "event at {at} ms");
        }
        t.event(ms(5100));
        t.event(ms(5200));
        assert_eq!(t.take_unlogged(), 2, "failures stopped with two unlogged");
        assert_eq!(t.take_unlogged(), 0);
        assert_eq!(t.event(ms(5300)), Some(1), "after a pause the next one is logged at once");
    }

    #[test]
    fn threads_sharing_a_throttle_log_one_line_per_interval_in_all() {
        let t = std::sync::Arc::new(LogThrottle::new(Duration::from_secs(3600)));
        let at = Instant::now();
        let lines: Vec<Option<u64>> = std::thread::scope(|s| {
            let racers: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..100).map(|_| t.event(at)).collect::<Vec<_>>()))
                .collect();
            racers.into_iter().flat_map(|r| r.join().unwrap()).collect()
        });
        let logged: Vec<u64> = lines.into_iter().flatten().collect();
        assert_eq!(logged.len(), 1, "one line for 400 events within the interval: {logged:?}");
        assert_eq!(logged[0] + t.take_unlogged(), 400, "every event counted once");
    }
}
