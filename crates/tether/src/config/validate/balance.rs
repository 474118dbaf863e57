//! A backend's `balance` and the keys that tune it: `hash_key` for the algorithms that hash
//! a request key, `hash_balance_factor` for `hash`'s bounded loads.

use tether_core::balance::{Algorithm, DEFAULT_HASH_BALANCE_FACTOR};

use super::super::raw::RawBackend;
use super::Checker;
use crate::config::{Balance, HashKey};

/// Every name `balance` accepts, in the order the error message lists them.
const NAMES: [&str; 9] = [
    "round_robin",
    "least_conn",
    "random",
    "p2c",
    "first",
    "hash",
    "maglev",
    "least_time",
    "least_sessions",
];

/// `balance` (default `round_robin`); `least_sessions` only on a sticky backend.
pub(super) fn balance(c: &mut Checker, name: &str, b: &RawBackend) -> Balance {
    let path = format!("backends.{name}.balance");
    let choices: Vec<(&str, Balance)> = NAMES
        .iter()
        .map(|n| (*n, Algorithm::parse(n).map_or(Balance::LeastSessions, Balance::Core)))
        .collect();
    let chosen =
        c.choice(&path, b.balance.as_ref(), Balance::Core(Algorithm::RoundRobin), &choices);
    let sticky =
        b.sticky.as_ref().is_some_and(|s| s.mode.as_ref().is_none_or(|m| m.get_ref() != "none"));
    if chosen == Balance::LeastSessions && !sticky {
        c.err(
            &path,
            b.balance.as_ref(),
            "least_sessions balances sessions and needs [backends.NAME.sticky] affinity; \
             without affinity use least_conn",
        );
    }
    chosen
}

/// `hash_key`: required by `hash` and `maglev`, refused by the other algorithms.
pub(super) fn hash_key(
    c: &mut Checker,
    name: &str,
    b: &RawBackend,
    balance: Balance,
) -> Option<HashKey> {
    let path = format!("backends.{name}.hash_key");
    let keyed = balance.algorithm().keyed() && balance != Balance::LeastSessions;
    let Some(raw) = &b.hash_key else {
        if keyed {
            c.err::<()>(
                &path,
                None,
                format!(
                    "balance = \"{}\" needs hash_key: one of uri | path | client_ip | \
                     header:NAME | cookie:NAME",
                    balance.as_str()
                ),
            );
        }
        return None;
    };
    if !keyed {
        c.err(&path, Some(raw), "only used with balance = \"hash\" or \"maglev\"");
        return None;
    }
    let v = raw.get_ref().trim();
    let parsed = match v.split_once(':') {
        None => match v {
            "uri" => Some(HashKey::Uri),
            "path" => Some(HashKey::Path),
            "client_ip" => Some(HashKey::ClientIp),
            _ => None,
        },
        Some(("header", h)) => {
            http::HeaderName::from_bytes(h.trim().as_bytes()).ok().map(HashKey::Header)
        }
        Some(("cookie", n)) => cookie_name(n.trim()).map(|n| HashKey::Cookie(n.to_owned())),
        Some(_) => None,
    };
    if parsed.is_none() {
        c.err(
            &path,
            Some(raw),
            format!(
                "invalid hash_key {v:?}; expected one of: uri | path | client_ip | header:NAME | \
                 cookie:NAME"
            ),
        );
    }
    parsed
}

/// A cookie name (an RFC 6265 token), or `None`.
fn cookie_name(n: &str) -> Option<&str> {
    let token = !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    token.then_some(n)
}

/// `hash_balance_factor`: 0 (no bound) or 100 to 1000 percent, only with `hash`.
pub(super) fn hash_balance_factor(
    c: &mut Checker,
    name: &str,
    b: &RawBackend,
    balance: Balance,
) -> u32 {
    let path = format!("backends.{name}.hash_balance_factor");
    let Some(raw) = &b.hash_balance_factor else { return DEFAULT_HASH_BALANCE_FACTOR };
    if balance != Balance::Core(Algorithm::Hash) {
        c.err(&path, Some(raw), "only used with balance = \"hash\"");
        return DEFAULT_HASH_BALANCE_FACTOR;
    }
    match *raw.get_ref() {
        0 => 0,
        f @ 100..=1000 => f as u32,
        f => {
            c.err(
                &path,
                Some(raw),
                format!(
                    "{f} is out of range; expected 0 (no bound) or 100 to 1000 (percent of the \
                     average load a server may take)"
                ),
            );
            DEFAULT_HASH_BALANCE_FACTOR
        }
    }
}
