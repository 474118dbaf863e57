//! When a pin has expired and when its cookie should be refreshed.
//!
//! Tether enforces expiry itself instead of trusting the browser to drop the cookie:
//! - **idle**: a pin unused for `idle_timeout` is forgotten. The cookie carries the time it
//!   was last issued; a request re-issues it once a quarter of the idle window has passed
//!   (a sliding window that costs one `Set-Cookie` per quarter window, not one per request).
//! - **absolute**: a pin older than `max_lifetime` (from its first issue) is forgotten however
//!   busy it is, so a stolen cookie is not valid forever.
//!
//! Tokens from the future (more than a minute of clock skew between instances) are refused.

/// Expiry settings of one backend, in seconds. `0` disables a bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// Forget a pin unused this long.
    pub idle_timeout: u32,
    /// Forget a pin this long after it was made, however busy.
    pub max_lifetime: u32,
}

/// Allowed clock skew between instances that share keys.
pub const MAX_SKEW_SECS: u32 = 60;

/// What to do with a verified pin at time `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Valid and fresh: follow it, send no cookie.
    Valid,
    /// Valid; follow it and re-issue the cookie with `refreshed_at = now`.
    Refresh,
    /// Expired (idle or absolute) or from the future: treat as absent.
    Expired,
}

impl Expiry {
    /// Judges a pin issued at `issued_at` and last refreshed at `refreshed_at`.
    pub fn judge(&self, issued_at: u32, refreshed_at: u32, now: u32) -> Verdict {
        let future = |t: u32| t > now.saturating_add(MAX_SKEW_SECS);
        if future(issued_at) || future(refreshed_at) || refreshed_at < issued_at {
            return Verdict::Expired;
        }
        if self.max_lifetime > 0 && now.saturating_sub(issued_at) >= self.max_lifetime {
            return Verdict::Expired;
        }
        let idle = now.saturating_sub(refreshed_at);
        if self.idle_timeout > 0 && idle >= self.idle_timeout {
            return Verdict::Expired;
        }
        if self.idle_timeout > 0 && idle >= self.idle_timeout / 4 {
            return Verdict::Refresh;
        }
        Verdict::Valid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: Expiry = Expiry { idle_timeout: 1800, max_lifetime: 43_200 };

    #[test]
    fn fresh_pin_is_valid_without_a_new_cookie() {
        assert_eq!(E.judge(1000, 1000, 1100), Verdict::Valid);
    }

    #[test]
    fn pin_is_refreshed_after_a_quarter_of_the_idle_window() {
        assert_eq!(E.judge(1000, 1000, 1000 + 450), Verdict::Refresh);
    }

    #[test]
    fn idle_pin_expires() {
        assert_eq!(E.judge(1000, 1000, 1000 + 1800), Verdict::Expired);
    }

    #[test]
    fn busy_pin_still_expires_at_max_lifetime() {
        let now = 1000 + 43_200;
        assert_eq!(E.judge(1000, now - 5, now), Verdict::Expired);
    }

    #[test]
    fn tokens_from_the_future_are_refused() {
        assert_eq!(E.judge(5000, 5000, 1000), Verdict::Expired);
        assert_eq!(E.judge(1000, 1030, 1000), Verdict::Valid, "small skew is fine");
    }

    #[test]
    fn zero_disables_a_bound() {
        let e = Expiry { idle_timeout: 0, max_lifetime: 0 };
        assert_eq!(e.judge(0, 0, u32::MAX - 100), Verdict::Valid);
    }
}
