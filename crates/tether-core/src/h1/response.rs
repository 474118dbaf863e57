//! A server's response head: parsed with httparse, then judged by Tether's response-framing
//! policy (docs/security.md, "Response framing"; RFC 9112 §6.3).
//!
//! [`parse_response`] is called on the bytes read so far from the server, from the start of
//! the response; it answers `Ok(None)` until the head is complete (httparse keeps no state, so
//! a split read is simply parsed again with more bytes). A complete head comes back as a
//! [`ResponseHead`]: status, version, where each header lies in the buffer ([`HeaderSpan`],
//! offsets rather than borrows, so the caller can keep the buffer and the spans side by side
//! and reuse one `Vec` for every response), and the body's [`BodyFraming`]:
//!
//! | response | framing | connection reusable after it |
//! |---|---|---|
//! | to a `HEAD` request, `1xx`, `204`, `304` | [`BodyFraming::NoBody`] | yes (`101`: never, it becomes a tunnel) |
//! | `Transfer-Encoding: chunked` alone | [`BodyFraming::Chunked`] | yes |
//! | `Transfer-Encoding: chunked` and `Content-Length` | `Chunked`, length dropped | no |
//! | any other `Transfer-Encoding` (list, unknown coding, several lines) | error | no |
//! | `Transfer-Encoding` on HTTP/1.0 | error | no |
//! | `Content-Length`, once or repeated with equal values | [`BodyFraming::Length`] | yes |
//! | `Content-Length` with differing values or not all digits | error | no |
//! | neither | [`BodyFraming::UntilClose`] | no |
//!
//! The framing headers are checked the same way whether or not the response can have a
//! body: a server that sends a bad one is not trusted with its connection either. And
//! "reusable" also needs the server not to have asked to close (`Connection: close`, or
//! HTTP/1.0 without `keep-alive`) — see [`ResponseHead::reusable`]. A `2xx` answer to
//! `CONNECT` (a tunnel) is not handled here: Tether refuses `CONNECT` before any server.

use std::ops::Range;

use super::body::BodyFraming;

/// How large a response head may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Status line plus header lines, with the final empty line; larger → [`ResponseError::TooLarge`].
    /// Capped at `u32::MAX` (spans are 32-bit offsets).
    pub max_head_bytes: usize,
    /// Header lines; more → [`ResponseError::TooManyHeaders`].
    pub max_headers: usize,
}

impl Default for HeadLimits {
    /// 64 KiB and 100 lines: the defaults of Tether's listener limits.
    fn default() -> Self {
        Self { max_head_bytes: 65536, max_headers: 100 }
    }
}

/// Why a response head is refused. Every variant means: answer the client `502` and close
/// the server's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// The status line or a header line is malformed (httparse's reason).
    #[error("malformed response head: {0}")]
    Malformed(httparse::Error),
    /// The head is longer than [`HeadLimits::max_head_bytes`].
    #[error("response head larger than the limit")]
    TooLarge,
    /// More header lines than [`HeadLimits::max_headers`].
    #[error("more response header lines than the limit")]
    TooManyHeaders,
    /// `Transfer-Encoding` other than `chunked` alone: a list, an unknown coding, or several
    /// lines — the coding could not be passed on faithfully.
    #[error("a response Transfer-Encoding other than chunked alone")]
    TransferEncoding,
    /// `Transfer-Encoding` in an HTTP/1.0 response, which has no chunked coding.
    #[error("Transfer-Encoding in an HTTP/1.0 response")]
    TransferEncodingOnHttp10,
    /// A `Content-Length` value that is not all digits (or does not fit 64 bits).
    #[error("an invalid response Content-Length")]
    InvalidContentLength,
    /// `Content-Length` values that differ.
    #[error("conflicting response Content-Length values")]
    ConflictingContentLength,
}

/// A byte range of the buffer a head was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// The range in the buffer.
    pub fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }

    /// The bytes in `buf` (the buffer the head was parsed from; another buffer gives `&[]`
    /// where the range does not fit it).
    pub fn get(self, buf: &[u8]) -> &[u8] {
        buf.get(self.range()).unwrap_or(&[])
    }

    /// Where `part`, a subslice of `buf`, lies in it.
    pub(crate) fn of(buf: &[u8], part: &[u8]) -> Span {
        let start = (part.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
        // Heads are at most u32::MAX bytes (`max_head_bytes` is capped): no truncation.
        let start = u32::try_from(start).unwrap_or(u32::MAX);
        let len = u32::try_from(part.len()).unwrap_or(0);
        Span { start, end: start.saturating_add(len) }
    }
}

/// Where one header line's name and value lie in the buffer (the value without the
/// whitespace around it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderSpan {
    /// The field name, as sent (any case).
    pub name: Span,
    /// The field value.
    pub value: Span,
}

/// A complete, accepted response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    /// Bytes of the head, final empty line included: the body starts at this offset.
    pub len: usize,
    /// `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub minor_version: u8,
    /// The status code (httparse accepts three digits, 100–999).
    pub status: u16,
    /// The reason phrase (empty when absent or not UTF-8).
    pub reason: Span,
    /// How the body is delimited. Whoever forwards the head writes the framing from this,
    /// not from the server's lines: one `Content-Length: n` for `Length(n)` (repeated equal
    /// lengths collapse), none for `Chunked` (a dropped length stays dropped).
    pub framing: BodyFraming,
    /// `Transfer-Encoding: chunked` came with `Content-Length`: the length must not be
    /// forwarded, and the connection must not be reused.
    pub length_dropped: bool,
    /// The server asked to close: `Connection: close`, or HTTP/1.0 without `keep-alive`.
    pub server_close: bool,
}

impl ResponseHead {
    /// `101 Switching Protocols`: the bytes after the head belong to the tunnel.
    pub fn is_upgrade(&self) -> bool {
        self.status == 101
    }

    /// An interim `1xx` other than `101` (`100 Continue`, `103 Early Hints`): the final
    /// response follows on the same connection.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }

    /// Whether the server's connection may carry another request once this response's body
    /// is complete: framing beyond doubt, no close asked for, no tunnel. The caller adds
    /// what only it knows: the body did complete, and no byte came after it unasked (a
    /// server that sends more than its response is out of step).
    pub fn reusable(&self) -> bool {
        !self.server_close
            && !self.length_dropped
            && !self.is_upgrade()
            && self.framing != BodyFraming::UntilClose
    }
}

/// Parses the response head at the start of `buf` (the bytes read so far). `Ok(None)`: the
/// head is not complete yet, read more. `to_head`: the request was `HEAD` (its response has
/// no body whatever its headers say). `headers` is cleared and filled with the header lines.
pub fn parse_response(
    buf: &[u8],
    limits: &HeadLimits,
    to_head: bool,
    headers: &mut Vec<HeaderSpan>,
) -> Result<Option<ResponseHead>, ResponseError> {
    headers.clear();
    let max_bytes = limits.max_head_bytes.min(u32::MAX as usize);
    let mut storage = super::HeaderSlots::new();
    let slots = storage.get(limits.max_headers);
    let mut res = httparse::Response::new(&mut []);
    let parsed =
        httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut res, buf, slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) if len <= max_bytes => len,
        Ok(httparse::Status::Partial) if buf.len() <= max_bytes => return Ok(None),
        Ok(_) => return Err(ResponseError::TooLarge),
        Err(httparse::Error::TooManyHeaders) => return Err(ResponseError::TooManyHeaders),
        Err(e) => return Err(ResponseError::Malformed(e)),
    };
    let (minor_version, status) = match (res.version, res.code) {
        (Some(v), Some(s)) => (v, s),
        // A complete parse always has both; refuse rather than guess.
        _ => return Err(ResponseError::Malformed(httparse::Error::Status)),
    };
    let scan = FramingHeaders::scan(res.headers, minor_version)?;
    headers.extend(res.headers.iter().map(|h| HeaderSpan {
        name: Span::of(buf, h.name.as_bytes()),
        value: Span::of(buf, h.value),
    }));
    let reason = match res.reason {
        Some(r) if !r.is_empty() => Span::of(buf, r.as_bytes()),
        _ => Span::default(),
    };
    let no_body = to_head || (100..200).contains(&status) || status == 204 || status == 304;
    let framing = if no_body { BodyFraming::NoBody } else { scan.framing };
    Ok(Some(ResponseHead {
        len,
        minor_version,
        status,
        reason,
        framing,
        length_dropped: scan.length_dropped,
        server_close: scan.close,
    }))
}

/// Whether a header line describes one connection and is never passed on (RFC 9110 §7.6.1,
/// plus the legacy `Keep-Alive` and `Proxy-Connection`), by its name as sent (any case).
/// `Upgrade` is not among them: it is passed on with a `101` and dropped otherwise.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    let candidate: &[u8] = match name.len() {
        2 => b"te",
        7 => b"trailer",
        10 if name[0].eq_ignore_ascii_case(&b'c') => b"connection",
        10 => b"keep-alive",
        16 => b"proxy-connection",
        17 => b"transfer-encoding",
        18 => b"proxy-authenticate",
        19 => b"proxy-authorization",
        _ => return false,
    };
    name.eq_ignore_ascii_case(candidate)
}

/// The header names a `Connection` value lists that are not hop-by-hop anyway, as sent:
/// the fields a proxy must remove besides the hop-by-hop ones (`close` too: a field of that
/// name would be one). `upgrade` is left to the caller (kept for a tunnel, dropped
/// otherwise), the hop-by-hop names (`keep-alive`, the usual value) go anyway, and a token
/// that is not UTF-8 names no header (names are ASCII).
pub fn connection_named(value: &[u8]) -> impl Iterator<Item = &str> {
    value.split(|b| *b == b',').filter_map(|token| {
        let token = std::str::from_utf8(token.trim_ascii()).ok()?;
        let skipped = token.is_empty()
            || token.eq_ignore_ascii_case("upgrade")
            || is_hop_by_hop(token.as_bytes());
        (!skipped).then_some(token)
    })
}

/// What the framing and connection headers of one head say.
struct FramingHeaders {
    framing: BodyFraming,
    length_dropped: bool,
    close: bool,
}

impl FramingHeaders {
    /// One pass over the header lines; the policy of the module's table.
    fn scan(headers: &[httparse::Header<'_>], minor: u8) -> Result<Self, ResponseError> {
        let mut te_lines = 0;
        let mut te_chunked = false;
        let mut length = Length::Absent;
        let (mut close, mut keep_alive) = (false, false);
        for h in headers {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"transfer-encoding") {
                te_lines += 1;
                te_chunked = h.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
            } else if name.eq_ignore_ascii_case(b"content-length") {
                length = length.add(h.value);
            } else if name.eq_ignore_ascii_case(b"connection") {
                for token in h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                    close |= token.eq_ignore_ascii_case(b"close");
                    keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
        }
        let close = close || (minor == 0 && !keep_alive);
        if te_lines > 0 {
            if minor == 0 {
                return Err(ResponseError::TransferEncodingOnHttp10);
            }
            if te_lines > 1 || !te_chunked {
                return Err(ResponseError::TransferEncoding);
            }
            // RFC 9112 §6.3: chunked wins; the length, valid or not, is dropped.
            let length_dropped = length != Length::Absent;
            return Ok(Self { framing: BodyFraming::Chunked, length_dropped, close });
        }
        let framing = match length {
            Length::Absent => BodyFraming::UntilClose,
            Length::Agreed(n) => BodyFraming::Length(n),
            Length::Invalid => return Err(ResponseError::InvalidContentLength),
            Length::Conflict => return Err(ResponseError::ConflictingContentLength),
        };
        Ok(Self { framing, length_dropped: false, close })
    }
}

/// The `Content-Length` lines seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Length {
    Absent,
    Agreed(u64),
    Invalid,
    Conflict,
}

impl Length {
    /// Adds one line's value (a comma list of lengths is allowed when they agree).
    fn add(self, value: &[u8]) -> Length {
        let mut acc = self;
        for part in value.split(|b| *b == b',') {
            acc = match (acc, parse_length(part.trim_ascii())) {
                (Length::Invalid, _) | (_, None) => Length::Invalid,
                (Length::Conflict, _) => Length::Conflict,
                (Length::Absent, Some(n)) => Length::Agreed(n),
                (Length::Agreed(a), Some(n)) if a == n => Length::Agreed(a),
                (Length::Agreed(_), Some(_)) => Length::Conflict,
            };
        }
        acc
    }
}

/// Digits only (no sign, no spaces, no hex), as RFC 9110 defines `Content-Length`; at most
/// 19 digits, so every accepted value fits a `u64`.
pub fn parse_length(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests;
