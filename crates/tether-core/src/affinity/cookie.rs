//! The affinity cookie token.
//!
//! Layout (version 1), 33 bytes, then unpadded URL-safe base64 (44 characters):
//!
//! ```text
//! version(1) | issued_at(u32 BE, unix s) | refreshed_at(u32 BE) | server tag(8) | mac(16)
//! ```
//!
//! - The **server tag** is `HMAC-SHA256(key, "tether/server/v1" 0 backend 0 server)[..8]`: it
//!   names the server's stable name under a secret key, never its address, port or position,
//!   and differs per backend, so a cookie of one backend means nothing to another.
//! - The **mac** is `HMAC-SHA256(key, "tether/cookie/v1" 0 backend 0 bytes[..17])[..16]`,
//!   compared in constant time. 128 bits of tag is plenty against forgery (NIST SP 800-107).
//! - **Key rotation**: the first key signs; every key verifies. A token verified by an older
//!   key reports its key index so the caller can re-issue it under the current key.
//!
//! Times are whole seconds: idle windows are minutes to hours, and 32-bit seconds last
//! until 2106.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::hmac;
use subtle::ConstantTimeEq;

const VERSION: u8 = 1;
const BODY_LEN: usize = 1 + 4 + 4 + 8;
const MAC_LEN: usize = 16;
const TOKEN_LEN: usize = BODY_LEN + MAC_LEN;
/// Minimum key size: 32 random bytes (256 bits), as HMAC-SHA256 wants.
pub const MIN_KEY_BYTES: usize = 32;

/// A server's keyed identity inside a token.
pub type ServerTag = [u8; 8];

/// Why a configured cookie key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// Not standard padded base64.
    #[error("cookie key {index} is not valid base64: {reason}")]
    Base64 {
        /// Position in the key list.
        index: usize,
        /// The decoder's message.
        reason: String,
    },
    /// Decodes to fewer than [`MIN_KEY_BYTES`] bytes.
    #[error("cookie key {index} has {len} bytes; at least {MIN_KEY_BYTES} random bytes are needed")]
    TooShort {
        /// Position in the key list.
        index: usize,
        /// Decoded length.
        len: usize,
    },
    /// The list is empty.
    #[error("no cookie key given")]
    Empty,
}

/// Why a cookie value is not a valid token. Every variant is treated as "no cookie".
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Wrong length or not base64.
    #[error("malformed affinity token")]
    Malformed,
    /// A version this build does not know.
    #[error("unknown affinity token version")]
    Version,
    /// No configured key verifies it (tampered, forged, or signed with a retired key).
    #[error("affinity token signature does not verify")]
    BadMac,
}

/// The verified content of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// Keyed server identity (see [`CookieKeys::server_tag`]).
    pub server: ServerTag,
    /// When the pin was first made (unix seconds).
    pub issued_at: u32,
    /// When the cookie was last (re)issued (unix seconds).
    pub refreshed_at: u32,
    /// Which configured key verified it: 0 is the current signing key.
    pub key_index: usize,
}

/// The signing and verification keys, first one signs.
#[derive(Clone)]
pub struct CookieKeys {
    keys: Vec<hmac::Key>,
}

impl std::fmt::Debug for CookieKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CookieKeys({} keys)", self.keys.len())
    }
}

impl CookieKeys {
    /// Keys from raw secret bytes (each at least [`MIN_KEY_BYTES`]).
    pub fn from_bytes<K: AsRef<[u8]>>(keys: &[K]) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        let mut out = Vec::with_capacity(keys.len());
        for (index, k) in keys.iter().enumerate() {
            let k = k.as_ref();
            if k.len() < MIN_KEY_BYTES {
                return Err(KeyError::TooShort { index, len: k.len() });
            }
            out.push(hmac::Key::new(hmac::HMAC_SHA256, k));
        }
        Ok(Self { keys: out })
    }

    /// Keys from standard padded base64 strings, as written in config or
    /// `TETHER_COOKIE_KEYS`. Surrounding whitespace is ignored.
    pub fn from_base64<S: AsRef<str>>(keys: &[S]) -> Result<Self, KeyError> {
        let raw = keys
            .iter()
            .enumerate()
            .map(|(index, s)| {
                STANDARD
                    .decode(s.as_ref().trim())
                    .map_err(|e| KeyError::Base64 { index, reason: e.to_string() })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_bytes(&raw)
    }

    /// A fresh random key (used when none is configured: cookies then die with the process).
    pub fn random() -> Result<Self, ring::error::Unspecified> {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)?;
        Ok(Self { keys: vec![key] })
    }

    /// How many keys verify (the first also signs).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: construction refuses an empty list.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// A 64-bit secret derived from the signing key for `purpose` (e.g. the stick-table hash
    /// seed), so instances sharing keys derive the same value.
    pub fn derive_seed(&self, purpose: &str) -> u64 {
        let tag = hmac::sign(&self.keys[0], purpose.as_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&tag.as_ref()[..8]);
        u64::from_le_bytes(b)
    }

    /// The tag that names `server` of `backend` under key `key_index`.
    pub fn server_tag(&self, key_index: usize, backend: &str, server: &str) -> Option<ServerTag> {
        let key = self.keys.get(key_index)?;
        let mut ctx = hmac::Context::with_key(key);
        ctx.update(b"tether/server/v1\0");
        ctx.update(backend.as_bytes());
        ctx.update(b"\0");
        ctx.update(server.as_bytes());
        let full = ctx.sign();
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&full.as_ref()[..8]);
        Some(tag)
    }

    fn mac(&self, key_index: usize, backend: &str, body: &[u8]) -> [u8; MAC_LEN] {
        let mut ctx = hmac::Context::with_key(&self.keys[key_index]);
        ctx.update(b"tether/cookie/v1\0");
        ctx.update(backend.as_bytes());
        ctx.update(b"\0");
        ctx.update(body);
        let full = ctx.sign();
        let mut mac = [0u8; MAC_LEN];
        mac.copy_from_slice(&full.as_ref()[..MAC_LEN]);
        mac
    }

    /// Encodes a token for `server` (a tag under key 0) of `backend`, signed with key 0.
    pub fn encode(
        &self,
        backend: &str,
        server: ServerTag,
        issued_at: u32,
        refreshed_at: u32,
    ) -> String {
        let mut raw = [0u8; TOKEN_LEN];
        raw[0] = VERSION;
        raw[1..5].copy_from_slice(&issued_at.to_be_bytes());
        raw[5..9].copy_from_slice(&refreshed_at.to_be_bytes());
        raw[9..17].copy_from_slice(&server);
        let mac = self.mac(0, backend, &raw[..BODY_LEN]);
        raw[BODY_LEN..].copy_from_slice(&mac);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Decodes and verifies a cookie value for `backend`. Cheap checks (length, version) come
    /// before any HMAC so garbage costs little.
    pub fn decode(&self, backend: &str, value: &str) -> Result<Token, TokenError> {
        let value = value.trim_matches('"');
        if value.len() != (TOKEN_LEN * 4).div_ceil(3) {
            return Err(TokenError::Malformed);
        }
        let mut raw = [0u8; TOKEN_LEN];
        match URL_SAFE_NO_PAD.decode_slice(value, &mut raw) {
            Ok(TOKEN_LEN) => {}
            _ => return Err(TokenError::Malformed),
        }
        if raw[0] != VERSION {
            return Err(TokenError::Version);
        }
        let (body, mac) = raw.split_at(BODY_LEN);
        let key_index = (0..self.keys.len())
            .find(|&k| bool::from(self.mac(k, backend, body).ct_eq(mac)))
            .ok_or(TokenError::BadMac)?;
        let mut server = [0u8; 8];
        server.copy_from_slice(&body[9..17]);
        Ok(Token {
            server,
            issued_at: u32::from_be_bytes([body[1], body[2], body[3], body[4]]),
            refreshed_at: u32::from_be_bytes([body[5], body[6], body[7], body[8]]),
            key_index,
        })
    }
}

#[cfg(test)]
mod tests;
