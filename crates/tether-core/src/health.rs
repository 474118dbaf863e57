//! Health-check hysteresis: `rise` consecutive successes to come up, `fall` consecutive
//! failures to go down, so one lost probe does not flap a server. The checker task owns one
//! [`Hysteresis`] per server and publishes transitions into the server's atomics.

use crate::server::Health;

/// Consecutive-result counting for one server.
#[derive(Debug, Clone)]
pub struct Hysteresis {
    rise: u32,
    fall: u32,
    streak_ok: u32,
    streak_fail: u32,
    state: Health,
}

impl Hysteresis {
    /// Starts in `initial` (a reload keeps the server's current health).
    pub fn new(rise: u32, fall: u32, initial: Health) -> Self {
        Self { rise: rise.max(1), fall: fall.max(1), streak_ok: 0, streak_fail: 0, state: initial }
    }

    /// The current state.
    pub fn state(&self) -> Health {
        self.state
    }

    /// Records one probe result; returns the new state when it changed.
    pub fn record(&mut self, ok: bool) -> Option<Health> {
        if ok {
            self.streak_ok += 1;
            self.streak_fail = 0;
        } else {
            self.streak_fail += 1;
            self.streak_ok = 0;
        }
        let next = match self.state {
            Health::Down | Health::Unchecked if ok && self.streak_ok >= self.rise => Health::Up,
            Health::Up | Health::Unchecked if !ok && self.streak_fail >= self.fall => Health::Down,
            s => s,
        };
        (next != self.state).then(|| {
            self.state = next;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_fall_failures_to_go_down_and_rise_successes_to_come_back() {
        let mut h = Hysteresis::new(2, 3, Health::Up);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(true), None, "a success resets the failure streak");
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), Some(Health::Down));
        assert_eq!(h.record(true), None);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(true), None);
        assert_eq!(h.record(true), Some(Health::Up));
    }

    #[test]
    fn unchecked_resolves_either_way() {
        let mut h = Hysteresis::new(1, 1, Health::Unchecked);
        assert_eq!(h.record(true), Some(Health::Up));
        let mut h = Hysteresis::new(2, 2, Health::Unchecked);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), Some(Health::Down));
    }
}
