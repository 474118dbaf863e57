//! A log line for a failure that can repeat many times a second (an `accept` at the
//! file-descriptor limit): the first occurrence is logged at once, the ones that follow
//! within the interval are only counted, and the next line says how many there were.

use std::time::{Duration, Instant};

/// Decides when a repeating event is logged.
#[derive(Debug)]
pub struct LogThrottle {
    every: Duration,
    last_line: Option<Instant>,
    /// Events since the last line.
    unlogged: u64,
}

impl LogThrottle {
    /// At most one line per `every`.
    pub fn new(every: Duration) -> Self {
        Self { every, last_line: None, unlogged: 0 }
    }

    /// Records one event at `now`; `Some(n)` when a line is due, `n` being the events it
    /// stands for (this one and those counted since the last line).
    pub fn event(&mut self, now: Instant) -> Option<u64> {
        self.unlogged += 1;
        let due = self.last_line.is_none_or(|t| now.saturating_duration_since(t) >= self.every);
        if !due {
            return None;
        }
        self.last_line = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }

    /// The events counted but not logged yet (say so when the failures stop), and resets.
    pub fn take_unlogged(&mut self) -> u64 {
        self.last_line = None;
        std::mem::take(&mut self.unlogged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_it_stands_for() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut t = LogThrottle::new(Duration::from_secs(1));
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
}
