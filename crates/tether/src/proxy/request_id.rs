//! Request IDs (`[request_id]`, on by default as `X-Request-Id`): one id per request, seen
//! by the server, returned to the client and written in the access log, so a client's
//! complaint, Tether's log line and the server's log line can be tied together.
//!
//! An id arriving from a `trusted_proxies` peer (a front proxy that already assigned one) is
//! kept; from anyone else it is replaced, so a client cannot pick the id another request's log
//! lines are found by. New ids are 128 random bits as 32 hex digits. W3C `traceparent` and
//! `tracestate` are not touched: they pass through like any other header.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

use http::{HeaderMap, HeaderName, HeaderValue};

/// The longest id kept from a trusted proxy; a longer one is replaced.
const MAX_KEPT_LEN: usize = 128;

/// The request's id: the one a trusted proxy sent, else a new one written into `headers`.
pub fn assign(name: &HeaderName, from_trusted: bool, headers: &mut HeaderMap) -> HeaderValue {
    if from_trusted {
        let kept = headers.get(name).filter(|v| !v.is_empty() && v.len() <= MAX_KEPT_LEN);
        if let Some(v) = kept {
            return v.clone();
        }
    }
    let id = generate();
    headers.insert(name.clone(), id.clone());
    id
}

/// 128 random bits as 32 lowercase hex digits, from this thread's SplitMix64 sequence
/// (randomly seeded per thread: no shared counter on the request path).
fn generate() -> HeaderValue {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(std::collections::hash_map::RandomState::new().build_hasher().finish());
    }
    let next = || {
        STATE.with(|s| {
            let z = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
            s.set(z);
            let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        })
    };
    let mut out = [0u8; 32];
    for (half, word) in [next(), next()].into_iter().enumerate() {
        for i in 0..16 {
            let nibble = (word >> (60 - 4 * i)) & 0xf;
            out[half * 16 + i] = b"0123456789abcdef"[nibble as usize];
        }
    }
    // Owned by the value: its clones (the server's, the client's, the log's) share it.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(out))
        .unwrap_or_else(|_| HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> HeaderName {
        HeaderName::from_static("x-request-id")
    }

    #[test]
    fn who_may_choose_the_id() {
        // (case, sent by the client, peer trusted, kept)
        let long = "a".repeat(MAX_KEPT_LEN + 1);
        let rows: [(&str, Option<&str>, bool, bool); 5] = [
            ("none sent, untrusted", None, false, false),
            ("none sent, trusted", None, true, false),
            ("sent by an untrusted client", Some("abc"), false, false),
            ("sent by a trusted proxy", Some("abc"), true, true),
            ("trusted but absurdly long", Some(&long), true, false),
        ];
        for (case, sent, trusted, kept) in rows {
            let mut h = HeaderMap::new();
            if let Some(v) = sent {
                h.insert(name(), HeaderValue::from_str(v).unwrap());
            }
            let id = assign(&name(), trusted, &mut h);
            assert_eq!(h.get(name()), Some(&id), "{case}: the server sees the id");
            if kept {
                assert_eq!(Some(id.to_str().unwrap()), sent, "{case}");
            } else {
                assert_eq!(id.len(), 32, "{case}");
                assert!(id.to_str().unwrap().bytes().all(|b| b.is_ascii_hexdigit()), "{case}");
            }
        }
    }

    #[test]
    fn new_ids_do_not_repeat() {
        let ids: std::collections::HashSet<_> = (0..10_000).map(|_| generate()).collect();
        assert_eq!(ids.len(), 10_000);
    }
}
