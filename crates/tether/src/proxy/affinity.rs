//! Affinity on the request path: read the pin a request carries, then record the outcome.
//!
//! - `cookie`: the pin is in Tether's signed cookie. A cookie that is missing, malformed,
//!   forged, signed by an unknown key, expired or names a server that no longer exists is
//!   treated as absent — the request is balanced normally and gets a fresh cookie; it is never
//!   an error for the client.
//! - `client_ip`, `header`, `app_cookie`: the pin is in the stick table under a keyed hash of
//!   the client's key. `app_cookie` bindings are created only from the server's `Set-Cookie`,
//!   never from a value a client sends, so clients cannot fill the table with invented ids.

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::LazyLock;

use http::{HeaderMap, HeaderValue, header};
use ipnet::{Ipv4Net, Ipv6Net};
use tether_core::affinity::Verdict;
use tether_core::affinity::cookie::TOKEN_LEN;
use tether_core::rng::SplitMix;
use tether_core::stick::{Lookup, StickKey};

use super::headers;
use crate::config::StickyMode;
use crate::snapshot::{BackendView, StickyView};
pub use tether_core::affinity::Outcome;

/// The pin a request arrived with.
#[derive(Debug, Clone, Copy)]
pub struct Pin {
    /// The hashed table key (table modes), when the request carried one.
    pub key: Option<StickKey>,
    /// The key may only follow bindings, never create one (`app_cookie`).
    pub learn_only: bool,
    /// Server index it points to, when valid.
    pub server: Option<usize>,
    /// Outcome if the request ends up on `server` (or on a new server when `None`).
    pub outcome: Outcome,
    /// When the pin was first made (kept across refreshes).
    pub issued_at: u32,
    /// The cookie must be re-issued even on a hit (sliding idle window, key rotation, a
    /// version 1 token).
    pub refresh: bool,
    /// The session id the cookie carries (cookie mode; `None` before the first cookie and in
    /// version 1 tokens).
    pub session: Option<u64>,
    /// The pin is a client's first pick within `first_pick_window`, not a cookie's.
    pub first: First,
}

/// A cookieless request's part in its client's first pick (`sticky.first_pick_window`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum First {
    /// Not part of one: the pin, if any, comes from the request.
    #[default]
    No,
    /// The client's first request: it made the pick.
    Leads,
    /// A later request of the client within the window: it shares the pick.
    Follows,
}

/// Reads the pin from the cookie value (if any) at time `now`.
pub fn read_pin(sticky: &StickyView, backend: &str, cookie: Option<&str>, now: u32) -> Pin {
    let fresh = |outcome| Pin {
        key: None,
        learn_only: false,
        server: None,
        outcome,
        issued_at: now,
        refresh: true,
        session: None,
        first: First::No,
    };
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
        key: None,
        learn_only: false,
        server: Some(server),
        outcome: Outcome::Hit,
        issued_at: token.issued_at,
        refresh: verdict == Verdict::Refresh || token.key_index != 0 || token.session.is_none(),
        session: token.session,
        first: First::No,
    }
}

/// A new session's id. SplitMix is a bijection of its counter, so ids never repeat within a
/// process; the random seed makes a clash with another instance's ids a 2^-64 chance.
pub fn new_session_id() -> u64 {
    static IDS: LazyLock<SplitMix> = LazyLock::new(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(crate::clock::unix_now_ms());
        SplitMix::seeded(h.finish())
    });
    IDS.next_u64()
}

/// Cookie values of one name tried at most per request: each costs a signature check.
pub const MAX_COOKIES_TRIED: usize = 4;

/// Reads the pin from the first *valid* of the request's affinity cookies (a stale one
/// with another `Path` or `Domain` must not break a live session), trying at most
/// [`MAX_COOKIES_TRIED`]; with none valid, the first one's outcome (`invalid`, `expired`).
/// Also returns the value used, which names the session for rate limits.
pub fn read_cookie_pin<'v>(
    sticky: &StickyView,
    backend: &str,
    values: impl Iterator<Item = &'v str>,
    now: u32,
) -> (Pin, Option<&'v str>) {
    let mut first = None;
    for value in values.take(MAX_COOKIES_TRIED) {
        let pin = read_pin(sticky, backend, Some(value), now);
        if pin.server.is_some() {
            return (pin, Some(value));
        }
        first.get_or_insert(pin);
    }
    (first.unwrap_or_else(|| read_pin(sticky, backend, None, now)), None)
}

/// Reads the pin of a table mode: the client's key from the request, then the table.
pub async fn read_table_pin(
    backend: &BackendView,
    mode: &StickyMode,
    headers: &HeaderMap,
    client: IpAddr,
    now: u32,
) -> Pin {
    let key = raw_key(mode, headers, client, |raw| backend.hasher.hash(raw));
    let mut pin = Pin {
        key,
        learn_only: matches!(mode, StickyMode::AppCookie(_)),
        server: None,
        outcome: Outcome::New,
        issued_at: now,
        refresh: false,
        session: None,
        first: First::No,
    };
    let (Some(key), Some(table)) = (key, backend.table.as_ref()) else { return pin };
    match table.get(key, now).await {
        Lookup::Bound(name) => match backend.by_name.get(&name) {
            Some(&i) => {
                pin.server = Some(i);
                pin.outcome = Outcome::Hit;
            }
            None => pin.outcome = Outcome::Invalid,
        },
        Lookup::Expired => pin.outcome = Outcome::Expired,
        Lookup::Missing => {}
    }
    pin
}

/// The client's affinity key for a table mode, hashed by `hash`.
fn raw_key(
    mode: &StickyMode,
    headers: &HeaderMap,
    client: IpAddr,
    hash: impl Fn(&[u8]) -> StickKey,
) -> Option<StickKey> {
    match mode {
        StickyMode::Cookie => None,
        StickyMode::ClientIp { v4, v6 } => Some(match client {
            IpAddr::V4(a) => hash(&Ipv4Net::new(a, *v4).map_or(a, |n| n.network()).octets()),
            IpAddr::V6(a) => hash(&Ipv6Net::new(a, *v6).map_or(a, |n| n.network()).octets()),
        }),
        StickyMode::Header(name) => {
            headers.get(name).map(|v| v.as_bytes()).filter(|v| !v.is_empty()).map(hash)
        }
        StickyMode::AppCookie(name) => headers::find_cookie(headers, name)
            .filter(|v| !v.is_empty())
            .map(|v| hash(v.as_bytes())),
    }
}

/// Records a table-mode outcome once `served` answered with `response_headers`: binds new
/// keys, re-binds moved ones, and learns application session ids from `Set-Cookie`.
pub fn record_table(
    backend: &BackendView,
    pin: &Pin,
    served: usize,
    response_headers: &HeaderMap,
    now: u32,
) -> Outcome {
    let (outcome, _) = pin.settle(served);
    let (Some(table), Some(sticky)) = (backend.table.as_ref(), backend.sticky.as_ref()) else {
        return outcome;
    };
    let name = backend.servers[served].state.name_arc();
    match (outcome, pin.key) {
        (Outcome::Rebound, Some(k)) => table.rebind(k, name, now),
        (Outcome::New | Outcome::Expired | Outcome::Invalid, Some(k)) if !pin.learn_only => {
            table.bind_if_absent(k, name, now);
        }
        _ => {}
    }
    if let StickyMode::AppCookie(cookie) = &sticky.config.mode {
        for value in set_cookie_values(response_headers, cookie) {
            table.rebind(backend.hasher.hash(value.as_bytes()), name, now);
        }
    }
    outcome
}

/// Values the server sets for cookie `name` (empty values — deletions — are skipped).
fn set_cookie_values<'h>(headers: &'h HeaderMap, name: &'h str) -> impl Iterator<Item = &'h str> {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next()?.split_once('='))
        .filter(move |(k, v)| k.trim() == name && !v.trim().is_empty())
        .map(|(_, v)| v.trim().trim_matches('"'))
}
impl Pin {
    /// The outcome and whether to send a cookie, given the server that finally served.
    pub fn settle(&self, served: usize) -> (Outcome, Option<u32>) {
        match self.server {
            // A first pick's requests get its cookie; the leader counts as the new session,
            // followers as hits (or as the expired or invalid cookie they brought).
            Some(s) if s == served && self.first != First::No => {
                (self.outcome, Some(self.issued_at))
            }
            Some(s) if s == served => (Outcome::Hit, self.refresh.then_some(self.issued_at)),
            Some(_) => (Outcome::Rebound, None),
            None => (self.outcome, None),
        }
    }
}

/// What a `Set-Cookie` of Tether's says: the server, the session, when the pin was made.
#[derive(Debug, Clone, Copy)]
pub struct Issue {
    /// Server index the cookie pins to.
    pub server: usize,
    /// The session's id.
    pub session: u64,
    /// When the pin was first made.
    pub issued_at: u32,
    /// When the cookie is (re)issued: now, or for a first pick its start, so every request
    /// of the burst gets the very same cookie.
    pub refreshed_at: u32,
}

/// The `Set-Cookie` value of `issue`.
pub fn set_cookie(
    sticky: &StickyView,
    backend: &str,
    issue: Issue,
    https: bool,
) -> Option<HeaderValue> {
    let tag = *sticky.tags.get(issue.server)?;
    let name = &sticky.config.cookie_name;
    // One string, turned into the value without a copy: name, token, attributes.
    let room = name.len() + 1 + TOKEN_LEN + sticky.attributes.len() + "; Secure".len();
    let mut v = String::with_capacity(room);
    v.push_str(name);
    v.push('=');
    let times = (issue.issued_at, issue.refreshed_at);
    sticky.keys.encode_to(&mut v, backend, tag, issue.session, times);
    v.push_str(&sticky.attributes);
    if sticky.add_secure(https) {
        v.push_str("; Secure");
    }
    HeaderValue::try_from(v).ok()
}

#[cfg(test)]
mod tests;
