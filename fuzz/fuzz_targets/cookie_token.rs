//! Any cookie value: decoding never panics, and nothing but a token we signed verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_core::affinity::CookieKeys;

fuzz_target!(|data: &[u8]| {
    let Ok(keys) = CookieKeys::from_bytes(&[[0x5au8; 32], [0xa5u8; 32]]) else { return };
    let value = String::from_utf8_lossy(data);
    if let Ok(token) = keys.decode("app", &value) {
        // Only a re-encoding of what verified can verify: the fuzzer found a valid MAC
        // only if it reproduced one of ours, which it cannot without the key.
        let again = match token.session {
            Some(id) => keys.encode("app", token.server, id, token.issued_at, token.refreshed_at),
            None => keys.encode_v1("app", token.server, token.issued_at, token.refreshed_at),
        };
        assert!(token.key_index > 0 || again == value.trim_matches('"'));
    }
});
