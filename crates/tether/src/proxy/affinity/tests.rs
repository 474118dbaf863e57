//! Reading pins and recording table outcomes, as tables.
//!
//! Cookie rows run against a backend whose keys are `[2, 1]` (2 signs, 1 is the previous
//! key still verifying) with `idle_timeout = "1h"` (refresh after 15 min) and
//! `max_lifetime = "12h"`. Table rows use an in-memory stick table.

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderValue;
use tether_core::stick::StickKey;

use super::*;
use crate::snapshot::Snapshot;
use crate::test_support;

const NOW: u32 = 1_000_000;
const IDLE: u32 = 3600;

fn fixture(sticky: &str) -> Snapshot {
    let servers = test_support::servers("app", &["a", "b"]);
    test_support::snapshot_with_keys(
        &format!(
            "[backends.app]\n[backends.app.sticky]\nidle_timeout = \"1h\"\n\
             max_lifetime = \"12h\"\n{sticky}\n{servers}"
        ),
        &[2, 1],
    )
}

/// A token as some signer would have issued it.
#[derive(Debug, Clone, Copy)]
struct Tok {
    /// Seed of the signing key (2 current, 1 previous, 3 never configured).
    key: u8,
    backend: &'static str,
    server: &'static str,
    /// Seconds before [`NOW`] it was first issued (negative: in the future).
    issued_ago: i64,
    refreshed_ago: i64,
}

/// The session id every [`Tok`] carries.
const SESSION: u64 = 0x5e55_1011;

const FRESH: Tok = Tok { key: 2, backend: "app", server: "b", issued_ago: 100, refreshed_ago: 100 };

/// [`NOW`] minus `ago` seconds.
fn at(ago: i64) -> u32 {
    u32::try_from(i64::from(NOW) - ago).expect("in range")
}

impl Tok {
    fn value(self) -> String {
        let signer = test_support::keys(&[self.key]);
        let tag = signer.server_tag(0, self.backend, self.server).expect("key 0 exists");
        signer.encode(self.backend, tag, SESSION, at(self.issued_ago), at(self.refreshed_ago))
    }

    /// The same, as a version 1 token (no session id).
    fn value_v1(self) -> String {
        let signer = test_support::keys(&[self.key]);
        let tag = signer.server_tag(0, self.backend, self.server).expect("key 0 exists");
        signer.encode_v1(self.backend, tag, at(self.issued_ago), at(self.refreshed_ago))
    }
}

/// A cookie value a row sends.
#[derive(Debug, Clone, Copy)]
enum C {
    Raw(&'static str),
    Token(Tok),
    /// The token with its last character changed.
    Tampered(Tok),
    /// The token in double quotes.
    Quoted(Tok),
    /// The token as version 1 (before session ids).
    V1(Tok),
}

impl C {
    fn value(self) -> String {
        match self {
            C::Raw(v) => v.to_owned(),
            C::Token(t) => t.value(),
            C::Tampered(t) => {
                let mut v = t.value();
                let last = if v.ends_with('A') { "B" } else { "A" };
                v.replace_range(v.len() - 1.., last);
                v
            }
            C::Quoted(t) => format!("\"{}\"", t.value()),
            C::V1(t) => t.value_v1(),
        }
    }
}

/// 44 characters (a token's length) decoding to zero bytes: version 0.
const UNKNOWN_VERSION: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// What a read pin should say: server, outcome, refresh, issued_at.
type PinWant = (Option<usize>, Outcome, bool, u32);

/// A new pin made now (nothing followed).
const fn fresh(outcome: Outcome) -> PinWant {
    (None, outcome, true, NOW)
}

fn got(pin: &Pin) -> PinWant {
    (pin.server, pin.outcome, pin.refresh, pin.issued_at)
}

#[test]
fn read_pin_follows_only_valid_unexpired_cookies_naming_a_live_server() {
    use Outcome::{Expired, Hit, Invalid, New};
    let t = FRESH;
    let hit = |refresh: bool, issued_ago: i64| (Some(1), Hit, refresh, at(issued_ago));
    let tok = |t: Tok| Some(C::Token(t));
    let aged = |issued_ago, refreshed_ago| tok(Tok { issued_ago, refreshed_ago, ..t });
    let rows: Vec<(&str, Option<C>, PinWant)> = vec![
        ("no cookie", None, fresh(New)),
        ("empty value", Some(C::Raw("")), fresh(Invalid)),
        ("garbage", Some(C::Raw("not-a-token")), fresh(Invalid)),
        ("right length, unknown version", Some(C::Raw(UNKNOWN_VERSION)), fresh(Invalid)),
        ("tampered", Some(C::Tampered(t)), fresh(Invalid)),
        ("another backend's cookie", tok(Tok { backend: "shop", ..t }), fresh(Invalid)),
        ("valid and fresh", tok(t), hit(false, 100)),
        ("quoted", Some(C::Quoted(t)), hit(false, 100)),
        ("refresh not yet due", aged(1000, 899), hit(false, 1000)),
        ("refresh due at a quarter", aged(1000, 900), hit(true, 1000)),
        ("idle, still alive", aged(4000, 3599), hit(true, 4000)),
        ("idle expired", aged(5000, 3600), fresh(Expired)),
        ("busy, just under max_lifetime", aged(43_199, 5), hit(false, 43_199)),
        ("busy but past max_lifetime", aged(43_200, 5), fresh(Expired)),
        ("small clock skew is fine", aged(-30, -30), hit(false, -30)),
        ("issued in the future", aged(-120, -120), fresh(Expired)),
        ("refreshed before it was issued", aged(100, 200), fresh(Expired)),
        ("signed with the previous key", tok(Tok { key: 1, ..t }), hit(true, 100)),
        ("signed with a retired key", tok(Tok { key: 3, ..t }), fresh(Invalid)),
        ("names a removed server", tok(Tok { server: "gone", ..t }), fresh(Invalid)),
        ("previous key, removed server", tok(Tok { key: 1, server: "gone", ..t }), fresh(Invalid)),
        ("version 1 token: followed, re-issued", Some(C::V1(t)), hit(true, 100)),
        ("version 1, previous key", Some(C::V1(Tok { key: 1, ..t })), hit(true, 100)),
        (
            "version 1, idle expired",
            Some(C::V1(Tok { issued_ago: 5000, refreshed_ago: 3600, ..t })),
            fresh(Expired),
        ),
    ];
    let snap = fixture("mode = \"cookie\"");
    let sticky = snap.backends[0].sticky.as_ref().expect("sticky");
    for (case, cookie, want) in rows {
        let value = cookie.map(C::value);
        let pin = read_pin(sticky, "app", value.as_deref(), NOW);
        assert_eq!(got(&pin), want, "{case} ({cookie:?})");
        assert_eq!(pin.key, None, "{case}: cookie pins have no table key");
        let v2_hit = pin.server.is_some() && !matches!(cookie, Some(C::V1(_)));
        assert_eq!(pin.session, v2_hit.then_some(SESSION), "{case}: session id");
    }
}

#[test]
fn read_cookie_pin_takes_the_first_valid_of_at_most_four_cookies() {
    use Outcome::{Expired, Hit, Invalid, New};
    let t = FRESH;
    let to_a = C::Token(Tok { server: "a", ..t });
    let expired = C::Token(Tok { issued_ago: 5000, refreshed_ago: IDLE.into(), ..t });
    let bad = C::Raw("junk");
    let hit_b = (Some(1), Hit, false, NOW - 100);
    // `(case, cookies in request order, pin, index of the value used)`.
    let rows: Vec<(&str, Vec<C>, PinWant, Option<usize>)> = vec![
        ("none", vec![], fresh(New), None),
        ("one valid", vec![C::Token(t)], hit_b, Some(0)),
        ("a stale one before a valid one", vec![bad, C::Token(t)], hit_b, Some(1)),
        (
            "two valid: the first wins",
            vec![to_a, C::Token(t)],
            (Some(0), Hit, false, NOW - 100),
            Some(0),
        ),
        ("none valid: the first one's outcome", vec![expired, bad], fresh(Expired), None),
        ("none valid, invalid first", vec![bad, expired], fresh(Invalid), None),
        ("valid fourth is read", vec![bad, bad, bad, C::Token(t)], hit_b, Some(3)),
        ("valid fifth is not", vec![bad, bad, bad, bad, C::Token(t)], fresh(Invalid), None),
    ];
    let snap = fixture("mode = \"cookie\"");
    let sticky = snap.backends[0].sticky.as_ref().expect("sticky");
    for (case, cookies, want, want_used) in rows {
        let values: Vec<String> = cookies.iter().map(|c| c.value()).collect();
        let (pin, used) = read_cookie_pin(sticky, "app", values.iter().map(String::as_str), NOW);
        assert_eq!(got(&pin), want, "{case}");
        assert_eq!(used, want_used.map(|i| values[i].as_str()), "{case}: value used");
    }
}

const K: StickKey = 0x5eed;

fn pin(key: Option<StickKey>, learn_only: bool, server: Option<usize>, outcome: Outcome) -> Pin {
    Pin {
        key,
        learn_only,
        server,
        outcome,
        issued_at: NOW,
        refresh: false,
        session: None,
        first: First::No,
    }
}

fn table(backend: &BackendView) -> &crate::stick::Table {
    backend.table.as_ref().expect("a table mode")
}

/// The server `key` is bound to now, if any.
async fn bound(backend: &BackendView, key: StickKey) -> Option<String> {
    match table(backend).get(key, NOW).await {
        Lookup::Bound(s) => Some(s.to_string()),
        Lookup::Expired | Lookup::Missing => None,
    }
}

/// Key [`K`] arriving with `outcome` and no server to follow.
fn unbound(outcome: Outcome) -> Pin {
    pin(Some(K), false, None, outcome)
}

/// Key [`K`] following its binding to server 0.
fn to_a(learn_only: bool) -> Pin {
    pin(Some(K), learn_only, Some(0), Outcome::Hit)
}

/// `(case, K bound before to, pin, server that served, outcome, K bound after to)`.
type RecordRow = (&'static str, Option<&'static str>, Pin, usize, Outcome, Option<&'static str>);

#[tokio::test]
async fn record_table_binds_new_keys_and_rebinds_moved_ones() {
    use Outcome::{Expired, Hit, Invalid, New, Rebound};
    let learn_only = pin(Some(K), true, None, New);
    let rows: Vec<RecordRow> = vec![
        ("new key: bound where served", None, unbound(New), 1, New, Some("b")),
        ("expired key: bound again", None, unbound(Expired), 0, Expired, Some("a")),
        ("key naming a removed server", None, unbound(Invalid), 1, Invalid, Some("b")),
        ("hit: binding kept", Some("a"), to_a(false), 0, Hit, Some("a")),
        ("pinned server failed: rebound", Some("a"), to_a(false), 1, Rebound, Some("b")),
        ("raced: the first binding wins", Some("a"), unbound(New), 1, New, Some("a")),
        ("no key: nothing bound", None, pin(None, false, None, New), 0, New, None),
        ("learn-only key: never bound", None, learn_only, 0, New, None),
        ("learn-only key follows failover", Some("a"), to_a(true), 1, Rebound, Some("b")),
    ];
    for (case, before, pin, served, want, after) in rows {
        let snap = fixture("mode = \"header\"\nheader = \"x-session\"");
        let backend = &snap.backends[0];
        if let Some(name) = before {
            table(backend).bind_if_absent(K, &Arc::from(name), NOW - 10);
        }
        let outcome = record_table(backend, &pin, served, &HeaderMap::new(), NOW);
        assert_eq!(outcome, want, "{case}: outcome");
        assert_eq!(bound(backend, K).await.as_deref(), after, "{case}: binding");
    }
}

/// `(case, id bound before to, Set-Cookie headers of b's answer, id looked up, bound to)`.
type LearnRow =
    (&'static str, Option<&'static str>, Vec<&'static str>, &'static str, Option<&'static str>);

#[tokio::test]
async fn app_cookie_bindings_come_only_from_the_servers_set_cookie() {
    let rows: Vec<LearnRow> = vec![
        ("learned", None, vec!["sid=abc; Path=/"], "abc", Some("b")),
        ("learned among other cookies", None, vec!["x=1", "sid=abc"], "abc", Some("b")),
        ("quoted value learned unquoted", None, vec!["sid=\"xyz\"; HttpOnly"], "xyz", Some("b")),
        ("deletion is not learned", None, vec!["sid=; Max-Age=0"], "", None),
        ("another cookie's value is not", None, vec!["other=abc"], "abc", None),
        ("a prefix of the name is not", None, vec!["sid2=abc"], "abc", None),
        ("no Set-Cookie, nothing learned", None, vec![], "abc", None),
        ("a learned id moves with its server", Some("a"), vec!["sid=abc"], "abc", Some("b")),
    ];
    for (case, before, set_cookies, id, want) in rows {
        let snap = fixture("mode = \"app_cookie\"\napp_cookie = \"sid\"");
        let backend = &snap.backends[0];
        let key = backend.hasher.hash(id.as_bytes());
        if let Some(name) = before {
            table(backend).bind_if_absent(key, &Arc::from(name), NOW - 10);
        }
        let mut headers = HeaderMap::new();
        for v in set_cookies {
            headers.append(header::SET_COOKIE, HeaderValue::from_static(v));
        }
        record_table(backend, &pin(None, true, None, Outcome::New), 1, &headers, NOW);
        assert_eq!(bound(backend, key).await.as_deref(), want, "{case}");
    }
}

/// `(case, header value, bound before (server, seconds ago), server, outcome, has a key)`.
type ReadRow =
    (&'static str, Option<&'static str>, Option<(&'static str, u32)>, Option<usize>, Outcome, bool);

#[tokio::test]
async fn read_table_pin_follows_live_bindings_to_known_servers() {
    use Outcome::{Expired, Hit, Invalid, New};
    let rows: Vec<ReadRow> = vec![
        ("no header: no key", None, None, None, New, false),
        ("empty header: no key", Some(""), None, None, New, false),
        ("unbound key", Some("s1"), None, None, New, true),
        ("bound", Some("s1"), Some(("b", 10)), Some(1), Hit, true),
        ("bound, idle but alive", Some("s1"), Some(("a", IDLE - 1)), Some(0), Hit, true),
        ("bound, idle expired", Some("s1"), Some(("a", IDLE)), None, Expired, true),
        ("bound to a removed server", Some("s1"), Some(("gone", 10)), None, Invalid, true),
    ];
    for (case, value, before, server, outcome, has_key) in rows {
        let snap = fixture("mode = \"header\"\nheader = \"x-session\"");
        let backend = &snap.backends[0];
        let mode = &backend.sticky.as_ref().expect("sticky").config.mode;
        let mut headers = HeaderMap::new();
        if let Some(v) = value {
            headers.insert("x-session", HeaderValue::from_static(v));
        }
        if let Some((name, ago)) = before {
            let key = backend.hasher.hash(b"s1");
            table(backend).bind_if_absent(key, &Arc::from(name), NOW - ago);
        }
        let client: IpAddr = [192, 0, 2, 7].into();
        let pin = read_table_pin(backend, mode, &headers, client, NOW).await;
        assert_eq!((pin.server, pin.outcome), (server, outcome), "{case}");
        assert_eq!(pin.key.is_some(), has_key, "{case}: key");
        assert!(!pin.learn_only, "{case}: header keys may create bindings");
    }
}

#[test]
fn client_ip_keys_group_addresses_by_prefix() {
    // `(case, first address, second address, same key)` under /24 and /48 prefixes.
    let rows: Vec<(&str, &str, &str, bool)> = vec![
        ("same address", "192.0.2.7", "192.0.2.7", true),
        ("same /24", "192.0.2.7", "192.0.2.200", true),
        ("next /24", "192.0.2.7", "192.0.3.7", false),
        ("same /48", "2001:db8:1::1", "2001:db8:1:ffff::2", true),
        ("next /48", "2001:db8:1::1", "2001:db8:2::1", false),
    ];
    let mode = StickyMode::ClientIp { v4: 24, v6: 48 };
    let hasher = tether_core::stick::KeyHasher::new(7);
    let key = |ip: &str| {
        let ip: IpAddr = ip.parse().expect("an address");
        raw_key(&mode, &HeaderMap::new(), ip, |raw| hasher.hash(raw))
    };
    for (case, a, b, same) in rows {
        assert_eq!(key(a) == key(b), same, "{case}");
    }
}
