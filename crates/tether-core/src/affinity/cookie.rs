//! The affinity cookie token.
//!
//! Layout (version 2), 41 bytes, then unpadded URL-safe base64 (55 characters):
//!
//! ```text
//! version(1) | issued_at(u32 BE, unix s) | refreshed_at(u32 BE) | server tag(8)
//!            | session id(u64 BE) | mac(16)
//! ```
//!
//! - The **session id** is 64 random bits drawn when the session starts and kept across
//!   refreshes: two clients never share a cookie value, and rate limits, the access log and
//!   session counts can tell sessions apart.
//! - **Version 1** (33 bytes, 44 characters: the same without the session id, MAC context
//!   `tether/cookie/v1`) still verifies, so pins made before an upgrade hold; it carries no
//!   session id, and the caller re-issues it as version 2.
//! - The **server tag** is `HMAC-SHA256(key, "tether/server/v1" 0 backend 0 server)[..8]`: it
//!   names the server's stable name under a secret key, never its address, port or position,
//!   and differs per backend, so a cookie of one backend means nothing to another.
//! - The **mac** is `HMAC-SHA256(key, "tether/cookie/v2" 0 backend 0 body)[..16]` over every
//!   byte before it,
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

const MAC_LEN: usize = 16;
/// Version 1: times and server tag.
const V1_BODY: usize = 1 + 4 + 4 + 8;
/// Version 2: version 1 and the session id.
const V2_BODY: usize = V1_BODY + 8;
/// The longest token.
const MAX_TOKEN: usize = V2_BODY + MAC_LEN;
/// Characters of a (version 2) token.
pub const TOKEN_LEN: usize = encoded_len(MAX_TOKEN);
/// Minimum key size: 32 random bytes (256 bits), as HMAC-SHA256 wants.
pub const MIN_KEY_BYTES: usize = 32;

/// A server's keyed identity inside a token.
pub type ServerTag = [u8; 8];

/// Server tags to server positions, for the servers of one backend: a sorted list searched
/// by halves (a `HashMap` hashed each looked-up tag with SipHash, several times the work).
/// Of two servers with one tag (a 2^-64 chance), the first is found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagIndex(Vec<(ServerTag, usize)>);

impl TagIndex {
    /// The position of the server that `tag` names.
    pub fn get(&self, tag: &ServerTag) -> Option<&usize> {
        let at = self.0.binary_search_by(|(t, _)| t.cmp(tag)).ok()?;
        self.0.get(at).map(|(_, i)| i)
    }
}

impl FromIterator<(ServerTag, usize)> for TagIndex {
    fn from_iter<I: IntoIterator<Item = (ServerTag, usize)>>(tags: I) -> Self {
        let mut tags: Vec<_> = tags.into_iter().collect();
        tags.sort_by_key(|&(t, _)| t);
        tags.dedup_by_key(|&mut (t, _)| t);
        TagIndex(tags)
    }
}

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
    /// The session's random id; `None` in a version 1 token, which has none.
    pub session: Option<u64>,
    /// Which configured key verified it: 0 is the current signing key.
    pub key_index: usize,
}

/// The signing and verification keys, first one signs.
#[derive(Clone)]
pub struct CookieKeys {
    keys: Vec<hmac::Key>,
    /// Tells these keys from every other set made in this process (a reload makes new
    /// ones): tokens verified under them are remembered under it ([`verified`]).
    id: u64,
}

/// The identity of a new set of keys.
fn next_keys_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
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
        Ok(Self { keys: out, id: next_keys_id() })
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
        Ok(Self { keys: vec![key], id: next_keys_id() })
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
        ctx.update(if body.len() == V1_BODY {
            b"tether/cookie/v1\0"
        } else {
            b"tether/cookie/v2\0"
        });
        ctx.update(backend.as_bytes());
        ctx.update(b"\0");
        ctx.update(body);
        let full = ctx.sign();
        let mut mac = [0u8; MAC_LEN];
        mac.copy_from_slice(&full.as_ref()[..MAC_LEN]);
        mac
    }

    /// Encodes a version 2 token for `server` (a tag under key 0) of `backend` and session
    /// `session`, signed with key 0.
    pub fn encode(
        &self,
        backend: &str,
        server: ServerTag,
        session: u64,
        issued_at: u32,
        refreshed_at: u32,
    ) -> String {
        let mut token = String::with_capacity(TOKEN_LEN);
        self.encode_to(&mut token, backend, server, session, (issued_at, refreshed_at));
        token
    }

    /// [`encode`](Self::encode), appended to `out` (a `Set-Cookie` value being built, so the
    /// token needs no string of its own). `times` are (issued at, refreshed at). A token this
    /// thread signed lately is copied from [`sealed`] instead of signed again.
    pub fn encode_to(
        &self,
        out: &mut String,
        backend: &str,
        server: ServerTag,
        session: u64,
        (issued_at, refreshed_at): (u32, u32),
    ) {
        let mut body = [0u8; V2_BODY];
        write_v1_body(&mut body, 2, server, issued_at, refreshed_at);
        body[V1_BODY..].copy_from_slice(&session.to_be_bytes());
        if sealed::append(self.id, backend, &body, out) {
            return;
        }
        let mut raw = [0u8; MAX_TOKEN];
        raw[..V2_BODY].copy_from_slice(&body);
        let start = out.len();
        self.seal(backend, &mut raw, out);
        if let Some(token) = out.get(start..) {
            sealed::remember(self.id, backend, &body, token);
        }
    }

    /// Encodes a version 1 token, as Tether issued before session ids. Only tests of the
    /// upgrade path need it: Tether itself issues version 2.
    pub fn encode_v1(
        &self,
        backend: &str,
        server: ServerTag,
        issued_at: u32,
        refreshed_at: u32,
    ) -> String {
        let mut raw = [0u8; MAX_TOKEN];
        write_v1_body(&mut raw, 1, server, issued_at, refreshed_at);
        let mut token = String::new();
        self.seal(backend, &mut raw[..V1_BODY + MAC_LEN], &mut token);
        token
    }

    /// Signs the body of `raw` (all but its last [`MAC_LEN`] bytes) into them, then appends
    /// their encoding to `out`.
    fn seal(&self, backend: &str, raw: &mut [u8], out: &mut String) {
        let body_len = raw.len() - MAC_LEN;
        let mac = self.mac(0, backend, &raw[..body_len]);
        raw[body_len..].copy_from_slice(&mac);
        URL_SAFE_NO_PAD.encode_string(raw, out);
    }

    /// Decodes and verifies a cookie value for `backend`. A value this thread verified under
    /// these keys lately is answered from [`verified`] (a replayed cookie costs one HMAC per
    /// token and thread); anything else is checked in full.
    pub fn decode(&self, backend: &str, value: &str) -> Result<Token, TokenError> {
        let value = value.trim_matches('"');
        if let Some(token) = verified::lookup(self.id, backend, value) {
            return Ok(token);
        }
        let token = self.verify(backend, value)?;
        verified::remember(self.id, backend, value, token);
        Ok(token)
    }

    /// Decodes and verifies a (trimmed) cookie value. Cheap checks (length, version) come
    /// before any HMAC so garbage costs little.
    fn verify(&self, backend: &str, value: &str) -> Result<Token, TokenError> {
        let (version, len) = match value.len() {
            n if n == encoded_len(V1_BODY + MAC_LEN) => (1, V1_BODY + MAC_LEN),
            n if n == encoded_len(MAX_TOKEN) => (2, MAX_TOKEN),
            _ => return Err(TokenError::Malformed),
        };
        let mut buf = [0u8; MAX_TOKEN];
        match URL_SAFE_NO_PAD.decode_slice(value, &mut buf) {
            Ok(n) if n == len => {}
            _ => return Err(TokenError::Malformed),
        }
        let raw = &buf[..len];
        if raw[0] != version {
            return Err(TokenError::Version);
        }
        let (body, mac) = raw.split_at(len - MAC_LEN);
        let key_index = (0..self.keys.len())
            .find(|&k| bool::from(self.mac(k, backend, body).ct_eq(mac)))
            .ok_or(TokenError::BadMac)?;
        let mut server = [0u8; 8];
        server.copy_from_slice(&body[9..17]);
        let session = (version == 2).then(|| {
            let mut id = [0u8; 8];
            id.copy_from_slice(&body[V1_BODY..V2_BODY]);
            u64::from_be_bytes(id)
        });
        Ok(Token {
            server,
            issued_at: u32::from_be_bytes([body[1], body[2], body[3], body[4]]),
            refreshed_at: u32::from_be_bytes([body[5], body[6], body[7], body[8]]),
            session,
            key_index,
        })
    }
}

/// Writes the fields both versions share into `raw`.
fn write_v1_body(raw: &mut [u8], version: u8, server: ServerTag, issued_at: u32, refreshed: u32) {
    raw[0] = version;
    raw[1..5].copy_from_slice(&issued_at.to_be_bytes());
    raw[5..9].copy_from_slice(&refreshed.to_be_bytes());
    raw[9..17].copy_from_slice(&server);
}

/// Length of `n` bytes in unpadded base64.
const fn encoded_len(n: usize) -> usize {
    (n * 4).div_ceil(3)
}

mod sealed;
mod verified;

#[cfg(test)]
mod tests;
