//! Cookie affinity on the request path: read the pin, then decide the `Set-Cookie`.
//!
//! A cookie that is missing, malformed, forged, signed by an unknown key, expired or names a
//! server that no longer exists is treated as absent — the request is balanced normally and
//! gets a fresh cookie; it is never an error for the client.

use http::HeaderValue;
use tether_core::affinity::Verdict;

use crate::snapshot::StickyView;

/// How affinity went for one request (the `outcome` label of `tether_affinity_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Followed a valid pin.
    Hit,
    /// No cookie: a new pin was made.
    New,
    /// The pin had expired (idle or absolute): a new one was made.
    Expired,
    /// The cookie did not verify or named an unknown server: a new pin was made.
    Invalid,
    /// The pinned server could not serve: re-pinned to another.
    Rebound,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::New => "new",
            Outcome::Expired => "expired",
            Outcome::Invalid => "invalid",
            Outcome::Rebound => "rebound",
        }
    }
}

/// The pin a request arrived with.
#[derive(Debug, Clone, Copy)]
pub struct Pin {
    /// Server index it points to, when valid.
    pub server: Option<usize>,
    /// Outcome if the request ends up on `server` (or on a new server when `None`).
    pub outcome: Outcome,
    /// When the pin was first made (kept across refreshes).
    pub issued_at: u32,
    /// The cookie must be re-issued even on a hit (sliding idle window, key rotation).
    pub refresh: bool,
}

/// Reads the pin from the cookie value (if any) at time `now`.
pub fn read_pin(sticky: &StickyView, backend: &str, cookie: Option<&str>, now: u32) -> Pin {
    let fresh = |outcome| Pin { server: None, outcome, issued_at: now, refresh: true };
    let Some(value) = cookie else { return fresh(Outcome::New) };
    let Ok(token) = sticky.keys.decode(backend, value) else { return fresh(Outcome::Invalid) };
    let verdict = sticky.config.expiry.judge(token.issued_at, token.refreshed_at, now);
    if verdict == Verdict::Expired {
        return fresh(Outcome::Expired);
    }
    let Some(&server) = sticky.lookup.get(token.key_index).and_then(|m| m.get(&token.server))
    else {
        return fresh(Outcome::Invalid);
    };
    Pin {
        server: Some(server),
        outcome: Outcome::Hit,
        issued_at: token.issued_at,
        refresh: verdict == Verdict::Refresh || token.key_index != 0,
    }
}

impl Pin {
    /// The outcome and whether to send a cookie, given the server that finally served.
    pub fn settle(&self, served: usize) -> (Outcome, Option<u32>) {
        match self.server {
            Some(s) if s == served => (Outcome::Hit, self.refresh.then_some(self.issued_at)),
            Some(_) => (Outcome::Rebound, None),
            None => (self.outcome, None),
        }
    }
}

/// The `Set-Cookie` value pinning to server `server`, first issued at `issued_at`.
pub fn set_cookie(
    sticky: &StickyView,
    backend: &str,
    server: usize,
    issued_at: u32,
    now: u32,
    https: bool,
) -> Option<HeaderValue> {
    let tag = *sticky.tags.get(server)?;
    let token = sticky.keys.encode(backend, tag, issued_at, now);
    let mut v = String::with_capacity(sticky.config.cookie_name.len() + token.len() + 64);
    v.push_str(&sticky.config.cookie_name);
    v.push('=');
    v.push_str(&token);
    v.push_str(&sticky.attributes);
    if sticky.add_secure(https) {
        v.push_str("; Secure");
    }
    HeaderValue::from_str(&v).ok()
}
