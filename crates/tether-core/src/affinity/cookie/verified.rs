//! Tokens this thread has verified lately, so that a client replaying its cookie on every
//! request pays one HMAC per token and thread, not one per request (the HMAC was ~5,000 of a
//! sticky request's ~42,000 user-space instructions, measured with callgrind).
//!
//! Only tokens that verified are kept, each with the identity of the keys that verified it
//! (new keys after a reload match none of them) and its backend (a token signs its backend).
//! A value is compared whole and in constant time with the one kept in its slot; the slot
//! comes from a hash keyed with a random seed per thread, so a client can neither aim at
//! another client's slot nor learn from timing how much of a kept token it guessed. A slot
//! holds one token: a newer one replaces it.

use std::cell::RefCell;

use subtle::ConstantTimeEq;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::Token;

/// Slots per thread (each ~140 bytes).
const SLOTS: usize = 64;

/// The longest token value kept (a version 2 token is 55 characters); whole words.
const MAX_VALUE: usize = 56;
const _: () = assert!(MAX_VALUE % 8 == 0);

struct Entry {
    keys: u64,
    backend: Box<str>,
    len: usize,
    value: [u8; MAX_VALUE],
    token: Token,
}

struct Cache {
    seed: u64,
    slots: Vec<Option<Entry>>,
}

thread_local! {
    static CACHE: RefCell<Option<Cache>> = const { RefCell::new(None) };
}

/// The token `value` verified to under the keys with identity `keys` for `backend`, if this
/// thread verified it and still keeps it.
pub(super) fn lookup(keys: u64, backend: &str, value: &str) -> Option<Token> {
    if value.len() > MAX_VALUE {
        return None;
    }
    CACHE.with_borrow(|cache| {
        let cache = cache.as_ref()?;
        let entry = cache.slots[cache.slot(value)].as_ref()?;
        let same = entry.keys == keys
            && entry.len == value.len()
            && *entry.backend == *backend
            && same_bytes(&entry.value, value.as_bytes());
        same.then_some(entry.token)
    })
}

/// Keeps `token`, which `value` just verified to.
pub(super) fn remember(keys: u64, backend: &str, value: &str, token: Token) {
    if value.len() > MAX_VALUE {
        return;
    }
    CACHE.with_borrow_mut(|cache| {
        let cache = cache.get_or_insert_with(Cache::new);
        let slot = cache.slot(value);
        let mut kept = [0u8; MAX_VALUE];
        kept[..value.len()].copy_from_slice(value.as_bytes());
        // The slot's backend name is reused when it is the same (most sites have one).
        let backend = match cache.slots[slot].take() {
            Some(old) if *old.backend == *backend => old.backend,
            _ => backend.into(),
        };
        cache.slots[slot] = Some(Entry { keys, backend, len: value.len(), value: kept, token });
    });
}

/// Whether a slot's `kept` value (zero after its length) is `value`, no longer than it, in
/// time that does not depend on where they differ: eight bytes at a time into one
/// accumulator, which `subtle` compares with zero (byte by byte it cost ~700 instructions).
fn same_bytes(kept: &[u8; MAX_VALUE], value: &[u8]) -> bool {
    let mut given = [0u8; MAX_VALUE];
    let Some(room) = given.get_mut(..value.len()) else { return false };
    room.copy_from_slice(value);
    // `chunks_exact(8)` yields only 8-byte words: the conversion cannot fail.
    let word = |w: &[u8]| <[u8; 8]>::try_from(w).map_or(0, u64::from_ne_bytes);
    let diff = kept
        .chunks_exact(8)
        .zip(given.chunks_exact(8))
        .fold(0u64, |acc, (a, b)| acc | (word(a) ^ word(b)));
    bool::from(diff.ct_eq(&0))
}

impl Cache {
    fn new() -> Self {
        let mut seed = [0u8; 8];
        // Without the system's randomness the seed is fixed: slots can then be aimed at,
        // which costs a client only its own HMACs again, never a wrong answer.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed);
        Self { seed: u64::from_le_bytes(seed), slots: (0..SLOTS).map(|_| None).collect() }
    }

    fn slot(&self, value: &str) -> usize {
        (xxh3_64_with_seed(value.as_bytes(), self.seed) % SLOTS as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_the_same_only_when_every_byte_is() {
        let value = b"AmsXBKFrFwShgUm0ZPhpwn7HgRwuik0JKpkTQ_M4T4MR1JgYE_aTZtI";
        let mut kept = [0u8; MAX_VALUE];
        kept[..value.len()].copy_from_slice(value);
        assert!(same_bytes(&kept, value));
        for at in [0, 7, 8, 31, value.len() - 1] {
            let mut other = *value;
            other[at] ^= 1;
            assert!(!same_bytes(&kept, &other), "differs at {at}");
        }
        assert!(!same_bytes(&kept, &value[..value.len() - 1]), "a prefix is not the value");
        assert!(same_bytes(&[0u8; MAX_VALUE], b""));
        assert!(!same_bytes(&kept, &[b'A'; MAX_VALUE + 1]), "longer than a slot: not kept");
    }
}
