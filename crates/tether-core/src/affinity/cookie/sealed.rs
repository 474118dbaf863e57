//! Tokens this thread signed lately, so that the same token issued again costs a copy
//! instead of an HMAC and an encoding. Every request of a client's first burst
//! (`first_pick_window`) gets the very same `Set-Cookie`: a client that never sends its
//! cookie back signed one token per response (measured with callgrind: ~5,000 of a minting
//! request's ~40,000 user-space instructions).
//!
//! A token is wholly determined by its keys, its backend and its body (version, times,
//! server tag, session id). None of these is secret — the body is readable in the cookie —
//! so an entry is found by a plain hash of the body and compared in ordinary time. Only
//! the MAC is secret, and it is only ever copied out. A slot holds one token: a newer one
//! replaces it.

use std::cell::RefCell;

use xxhash_rust::xxh3::xxh3_64;

use super::{TOKEN_LEN, V2_BODY};

/// Slots per thread (a pointer each, and ~120 bytes per token kept). A token may sit in
/// either of two slots and pushes out the less recently used one: with one slot per token,
/// 50 clients' bursts in 256 slots kept evicting each other on one request in five
/// (callgrind). Entries are boxed: one 30 KB table cost the process ~2 MiB of RSS (a
/// large-object page of the allocator), 256 small entries share small pages.
const SLOTS: usize = 256;

struct Entry {
    keys: u64,
    backend: Box<str>,
    body: [u8; V2_BODY],
    token: [u8; TOKEN_LEN],
    /// The cache's clock when the entry was last used.
    used: u64,
}

impl Entry {
    fn is(&self, keys: u64, backend: &str, body: &[u8; V2_BODY]) -> bool {
        self.keys == keys && self.body == *body && *self.backend == *backend
    }
}

#[derive(Default)]
struct Cache {
    clock: u64,
    slots: Vec<Option<Box<Entry>>>,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// The two slots a token with `body` may sit in.
fn slots_of(body: &[u8; V2_BODY]) -> [usize; 2] {
    let h = xxh3_64(body);
    [(h % SLOTS as u64) as usize, ((h >> 32) % SLOTS as u64) as usize]
}

/// Appends to `out` the token this thread signed for `body` of `backend` under the keys
/// with identity `keys`, if it still keeps it; whether it did.
pub(super) fn append(keys: u64, backend: &str, body: &[u8; V2_BODY], out: &mut String) -> bool {
    CACHE.with_borrow_mut(|cache| {
        cache.clock += 1;
        let clock = cache.clock;
        for at in slots_of(body) {
            let Some(Some(entry)) = cache.slots.get_mut(at) else { continue };
            if !entry.is(keys, backend, body) {
                continue;
            }
            // Kept only when it was a token's text (base64, so ASCII).
            let Ok(token) = std::str::from_utf8(&entry.token) else { return false };
            out.push_str(token);
            entry.used = clock;
            return true;
        }
        false
    })
}

/// Keeps `token`, just signed for `body` of `backend` under the keys with identity `keys`,
/// in the emptier or less recently used of its two slots.
pub(super) fn remember(keys: u64, backend: &str, body: &[u8; V2_BODY], token: &str) {
    let Ok(token) = <[u8; TOKEN_LEN]>::try_from(token.as_bytes()) else { return };
    CACHE.with_borrow_mut(|cache| {
        if cache.slots.is_empty() {
            cache.slots.resize_with(SLOTS, || None);
        }
        let age = |slot: &Option<Box<Entry>>| slot.as_ref().map_or(0, |e| e.used);
        let [a, b] = slots_of(body);
        let at = if age(&cache.slots[b]) < age(&cache.slots[a]) { b } else { a };
        let used = cache.clock;
        match &mut cache.slots[at] {
            // The slot's entry is reused, and its backend name when it is the same (most
            // sites have one).
            Some(old) => {
                if *old.backend != *backend {
                    old.backend = backend.into();
                }
                (old.keys, old.body, old.token, old.used) = (keys, *body, token, used);
            }
            empty => {
                *empty = Some(Box::new(Entry {
                    keys,
                    backend: backend.into(),
                    body: *body,
                    token,
                    used,
                }))
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::super::{CookieKeys, V1_BODY, write_v1_body};
    use super::*;

    fn body(server: [u8; 8], session: u64, times: (u32, u32)) -> [u8; V2_BODY] {
        let mut body = [0u8; V2_BODY];
        write_v1_body(&mut body, 2, server, times.0, times.1);
        body[V1_BODY..].copy_from_slice(&session.to_be_bytes());
        body
    }

    #[test]
    fn a_token_signed_again_is_the_kept_one_and_verifies() {
        let keys = CookieKeys::from_bytes(&[[7u8; 32]]).expect("keys");
        let tag = keys.server_tag(0, "web", "a").expect("tag");
        let first = keys.encode("web", tag, 42, 100, 200);
        let mut kept = String::from("prefix=");
        assert!(append(keys.id, "web", &body(tag, 42, (100, 200)), &mut kept));
        assert_eq!(kept, format!("prefix={first}"), "appended after what was there");
        assert_eq!(keys.encode("web", tag, 42, 100, 200), first);
        let token = keys.decode("web", &first).expect("verifies");
        assert_eq!((token.session, token.issued_at, token.refreshed_at), (Some(42), 100, 200));
    }

    #[test]
    fn only_the_same_keys_backend_and_body_find_a_token() {
        let keys = CookieKeys::from_bytes(&[[7u8; 32]]).expect("keys");
        let tag = keys.server_tag(0, "web", "a").expect("tag");
        keys.encode("web", tag, 42, 100, 200);
        let mut out = String::new();
        let misses = [
            (keys.id + 1, "web", body(tag, 42, (100, 200))),
            (keys.id, "api", body(tag, 42, (100, 200))),
            (keys.id, "web", body(tag, 43, (100, 200))),
            (keys.id, "web", body(tag, 42, (100, 201))),
            (keys.id, "web", body([0; 8], 42, (100, 200))),
        ];
        for (ids, backend, b) in misses {
            assert!(!append(ids, backend, &b, &mut out), "{ids} {backend} {b:?}");
        }
        assert!(out.is_empty());
    }

    #[test]
    fn fifty_clients_bursts_are_all_kept() {
        let keys = CookieKeys::from_bytes(&[[7u8; 32]]).expect("keys");
        let tag = keys.server_tag(0, "web", "a").expect("tag");
        let tokens: Vec<String> = (0..50).map(|s| keys.encode("web", tag, s, 100, 100)).collect();
        for (session, token) in (0u64..).zip(&tokens) {
            let mut out = String::new();
            let kept = append(keys.id, "web", &body(tag, session, (100, 100)), &mut out);
            assert!(kept, "session {session} was pushed out");
            assert_eq!(&out, token);
        }
    }

    #[test]
    fn new_keys_sign_their_own_token_for_the_same_body() {
        let old = CookieKeys::from_bytes(&[[7u8; 32]]).expect("keys");
        let new = CookieKeys::from_bytes(&[[8u8; 32]]).expect("keys");
        let tag = old.server_tag(0, "web", "a").expect("tag");
        let by_old = old.encode("web", tag, 42, 100, 200);
        let by_new = new.encode("web", tag, 42, 100, 200);
        assert_ne!(by_old, by_new);
        assert!(new.decode("web", &by_new).is_ok());
        assert!(old.decode("web", &by_new).is_err(), "not the old keys' token");
    }
}
