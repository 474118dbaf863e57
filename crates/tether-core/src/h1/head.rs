//! A client's request head: parsed with httparse and judged by Tether's request-framing
//! policy in the same pass (docs/security.md, "The framing policy"; RFC 9112 §3, §6.3) — the
//! server side of the codec, as [`super::response`] is the client side.
//!
//! [`parse_request`] is called on the bytes read so far from the client, from the start of
//! the request; it answers `Ok(None)` until the head is complete (httparse keeps no state: a
//! split read is parsed again with more bytes, and the answer never depends on the split). A
//! complete, accepted head comes back as a [`RequestHead`]: where the method, target, `Host`
//! and each header lie in the buffer ([`Span`], [`HeaderSpan`]), the body's one
//! [`BodyFraming`], and what the client asked of the connection (close, upgrade,
//! `100-continue`). A refused one comes back as a [`RequestHeadError`], whose
//! [`status`](RequestHeadError::status) is the answer; every refusal closes the connection.
//!
//! Before Tether served HTTP/1.1 itself, hyper parsed the head and Tether judged what hyper
//! let through (`crates/tether/src/proxy/framing.rs`, with a wire scan for what hyper hid).
//! This parse gives the same answers in one place (the column "before" keeps who answered
//! what then). The first row that matches wins, in the order hyper then Tether refused:
//!
//! | request | before | here |
//! |---|---|---|
//! | malformed request line or header line (httparse: method or target not a token, a version other than 1.0 and 1.1, bare CR, NUL, obs-fold, space before the colon, a bad name) | hyper, `400` | [`Malformed`](RequestHeadError::Malformed), `400` |
//! | head over `max_head_bytes` | hyper, `431` | [`TooLarge`](RequestHeadError::TooLarge), `431` |
//! | more lines than `max_headers` | hyper, `431` | [`TooManyHeaders`](RequestHeadError::TooManyHeaders), `431` |
//! | target over 65,534 bytes | hyper, `414` | [`TargetTooLong`](RequestHeadError::TargetTooLong), `414` |
//! | `Transfer-Encoding` on HTTP/1.0 | hyper, `400` | [`TransferEncodingOnHttp10`](RequestHeadError::TransferEncodingOnHttp10), `400` |
//! | `Content-Length` before any `Transfer-Encoding` not all digits (`+5`, `0x5`, a list `5, 5`) | hyper, `400` | [`InvalidContentLength`](RequestHeadError::InvalidContentLength), `400` |
//! | `Content-Length` lines before any `Transfer-Encoding` that differ | hyper, `400` | [`ConflictingContentLength`](RequestHeadError::ConflictingContentLength), `400` |
//! | `Transfer-Encoding` whose last line does not end in `chunked` (`gzip`, `chunked, gzip`, two lines ending `cow`), but for the lone unknown coding below | hyper, `400` | [`TransferEncoding`](RequestHeadError::TransferEncoding), `400` |
//! | (any of the three rows above, with both framing headers) | hyper, `400` | [`BothFramings`](RequestHeadError::BothFramings), `400` |
//! | `CONNECT` | Tether, `501` | [`Connect`](RequestHeadError::Connect), `501` |
//! | HTTP/1.1, one `Transfer-Encoding` line holding one coding (a token) that is not `chunked` (`gzip`, `identity`, `xchunked`), no `Content-Length` | Tether, `501` (the head scan renames the header so hyper lets it through) | [`UnknownCoding`](RequestHeadError::UnknownCoding), `501` |
//! | `Transfer-Encoding` and `Content-Length` | Tether, `400` (seen by the head scan: hyper drops the length) | [`BothFramings`](RequestHeadError::BothFramings), `400` |
//! | HTTP/1.1 without `Host` | Tether, `400` | [`MissingHost`](RequestHeadError::MissingHost), `400` |
//! | more than one `Host` line | Tether, `400` | [`SeveralHosts`](RequestHeadError::SeveralHosts), `400` |
//! | `Transfer-Encoding: chunked` on several lines, or a list ending in `chunked` (`gzip, chunked`, `chunked, chunked`) | Tether, `400` | [`TransferEncoding`](RequestHeadError::TransferEncoding), `400` |
//! | HTTP/1.0 `POST`, `PUT` or `PATCH` without `Content-Length` | Tether, `411` | [`LengthRequired`](RequestHeadError::LengthRequired), `411` |
//! | `Transfer-Encoding: chunked`, one line, alone (any case) | chunked | [`BodyFraming::Chunked`] |
//! | `Content-Length: n`, once or on several lines that agree | length (repeats collapsed) | [`BodyFraming::Length`] |
//! | neither | no body | [`BodyFraming::NoBody`] |
//!
//! Among the `400`s the variant follows this fixed order, not the order of the lines (hyper
//! stops at the first bad line; the status is the same).
//!
//! Where the old answer was an accident of the machinery, this parse gives the policy's:
//! - a lone unknown coding whose header name came in an earlier read than the end of its
//!   head gets hyper's `400` before (the scan can only rename bytes not yet handed on); here
//!   always `501`;
//! - `Transfer-Encoding: chunked` followed by a `Content-Length` the scan cannot read
//!   (`abc`, empty) is forwarded before as chunked (hyper skips a length after a coding, and
//!   the scan gives up on the head); here `400`, as every head with both headers;
//! - a `Content-Length` of 20 digits or more (10^19 and up) is `400` here
//!   ([`super::response::parse_length`]); hyper accepts up to 2^64 − 3 and answers `431` to
//!   the last two values;
//! - hyper's head limit is its read buffer, never under 8 KiB; here `max_head_bytes` exactly.
//!
//! Not judged here, left to the caller: the target's URI form (hyper answers `400` when it
//! cannot make an `http::Uri` of it: bytes that are not UTF-8, a form it does not know); the
//! HTTP/2 preface (`PRI * HTTP/2.0` is `Malformed` here, so sniff it first); a declared
//! length over `max_body_bytes` (`413`, from [`BodyFraming::Length`]).

use super::body::BodyFraming;
use super::response::{HeadLimits, HeaderSpan, Span, parse_length};

/// The longest request target hyper accepts (`u16::MAX - 1`); longer is `414`.
pub const MAX_TARGET_LEN: usize = 65534;

/// Why a request head is refused. Every refusal closes the connection after its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestHeadError {
    /// The request line or a header line is malformed (httparse's reason). `400`.
    #[error("malformed request head: {0}")]
    Malformed(httparse::Error),
    /// The head is longer than [`HeadLimits::max_head_bytes`]. `431`.
    #[error("request head larger than the limit")]
    TooLarge,
    /// More header lines than [`HeadLimits::max_headers`]. `431`.
    #[error("more request header lines than the limit")]
    TooManyHeaders,
    /// The target is longer than [`MAX_TARGET_LEN`]. `414`.
    #[error("request target longer than the limit")]
    TargetTooLong,
    /// `Transfer-Encoding` in an HTTP/1.0 request, which has no chunked coding. `400`.
    #[error("Transfer-Encoding in an HTTP/1.0 request")]
    TransferEncodingOnHttp10,
    /// A `Content-Length` that is not all digits (a list too), or does not fit 19. `400`.
    #[error("an invalid request Content-Length")]
    InvalidContentLength,
    /// `Content-Length` lines that differ. `400`.
    #[error("conflicting request Content-Length values")]
    ConflictingContentLength,
    /// `Transfer-Encoding` other than `chunked` alone on one line: a list, several lines, or
    /// a last coding that is not `chunked`. `400`.
    #[error("a request Transfer-Encoding other than chunked alone")]
    TransferEncoding,
    /// One transfer coding that Tether does not implement (RFC 9112 §6.1). `501`.
    #[error("unsupported request transfer coding")]
    UnknownCoding,
    /// Both `Transfer-Encoding` and `Content-Length`: never forwarded. `400`.
    #[error("both Transfer-Encoding and Content-Length")]
    BothFramings,
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2). `400`.
    #[error("an HTTP/1.1 request without Host")]
    MissingHost,
    /// More than one `Host` line: routing and the server could read different ones. `400`.
    #[error("more than one Host header")]
    SeveralHosts,
    /// An HTTP/1.0 `POST`, `PUT` or `PATCH` without `Content-Length`: its body could only
    /// be read as the next request. `411`.
    #[error("HTTP/1.0 request body without Content-Length")]
    LengthRequired,
    /// `CONNECT`: a reverse proxy opens no tunnel to an address of the client's choosing.
    /// `501`.
    #[error("CONNECT is not supported")]
    Connect,
}

impl RequestHeadError {
    /// The status Tether answers with (then it closes the connection).
    pub fn status(&self) -> u16 {
        use RequestHeadError::*;
        match self {
            TooLarge | TooManyHeaders => 431,
            TargetTooLong => 414,
            UnknownCoding | Connect => 501,
            LengthRequired => 411,
            Malformed(_)
            | TransferEncodingOnHttp10
            | InvalidContentLength
            | ConflictingContentLength
            | TransferEncoding
            | BothFramings
            | MissingHost
            | SeveralHosts => 400,
        }
    }
}

/// A complete, accepted request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes of the head, leading empty lines and the final empty line included: the body
    /// starts at this offset.
    pub len: usize,
    /// The method, as sent (a token; case matters).
    pub method: Span,
    /// The request target, as sent: visible ASCII or obs-text bytes, not yet a URI.
    pub target: Span,
    /// `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub minor_version: u8,
    /// The value of the one `Host` line; `None` only on HTTP/1.0 without one.
    pub host: Option<Span>,
    /// How the body is delimited. Whoever forwards the request writes the framing from this,
    /// not from the client's lines (repeated equal lengths collapse to one).
    pub framing: BodyFraming,
    /// The client asked to close after the response: `Connection: close`, or HTTP/1.0
    /// without `Connection: keep-alive`.
    pub close: bool,
    /// An HTTP/1.1 request to switch protocols: an `Upgrade` line and `upgrade` among the
    /// `Connection` options. Tunnelled only if the server answers `101`.
    pub upgrade: bool,
    /// `Expect: 100-continue` on HTTP/1.1 with a body to read (as hyper: the last `Expect`
    /// line decides, and a request without a body needs no `100 Continue`).
    pub expect_continue: bool,
}

/// Parses the request head at the start of `buf` (the bytes read so far). `Ok(None)`: the
/// head is not complete yet, read more. `headers` is cleared, then filled with the header
/// lines of an accepted head.
pub fn parse_request(
    buf: &[u8],
    limits: &HeadLimits,
    headers: &mut Vec<HeaderSpan>,
) -> Result<Option<RequestHead>, RequestHeadError> {
    headers.clear();
    let max_bytes = limits.max_head_bytes.min(u32::MAX as usize);
    let mut storage = super::HeaderSlots::new();
    let slots = storage.get(limits.max_headers);
    // Only the bytes the head may fill are parsed: whatever lies past them (and however much
    // of it has arrived) cannot change the answer.
    let window = &buf[..buf.len().min(max_bytes)];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, window, slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < max_bytes => return Ok(None),
        Ok(httparse::Status::Partial) => return Err(RequestHeadError::TooLarge),
        Err(httparse::Error::TooManyHeaders) => return Err(RequestHeadError::TooManyHeaders),
        Err(e) => return Err(RequestHeadError::Malformed(e)),
    };
    let (Some(method), Some(target), Some(minor_version)) = (req.method, req.path, req.version)
    else {
        // A complete parse always has all three; refuse rather than guess.
        return Err(RequestHeadError::Malformed(httparse::Error::Version));
    };
    if target.len() > MAX_TARGET_LEN {
        return Err(RequestHeadError::TargetTooLong);
    }
    let lines = Lines::scan(buf, req.headers);
    let framing = lines.judge(method.as_bytes(), minor_version)?;
    headers.extend(req.headers.iter().map(|h| HeaderSpan {
        name: Span::of(buf, h.name.as_bytes()),
        value: Span::of(buf, h.value),
    }));
    let has_body = matches!(framing, BodyFraming::Chunked | BodyFraming::Length(1..));
    Ok(Some(RequestHead {
        len,
        method: Span::of(buf, method.as_bytes()),
        target: Span::of(buf, target.as_bytes()),
        minor_version,
        host: lines.host,
        framing,
        close: lines.close || (minor_version == 0 && !lines.keep_alive),
        upgrade: minor_version == 1 && lines.upgrade && lines.connection_upgrade,
        expect_continue: minor_version == 1 && lines.expect_continue && has_body,
    }))
}

/// What the header lines of one head say about framing and the connection: one pass over
/// them, before any decision.
#[derive(Debug, Default)]
struct Lines {
    /// `Transfer-Encoding` lines.
    te_lines: u32,
    /// The last `Transfer-Encoding` line's last coding is `chunked` (what hyper checks).
    te_ends_chunked: bool,
    /// The last `Transfer-Encoding` line is exactly `chunked`.
    te_chunked_alone: bool,
    /// The last `Transfer-Encoding` line is one token other than `chunked`.
    te_one_unknown: bool,
    /// `Content-Length` lines.
    cl_lines: u32,
    /// The `Content-Length` lines before the first `Transfer-Encoding` line, as hyper reads
    /// them (after a coding, hyper skips lengths unread): none, the length, or the refusal.
    length: Option<Result<u64, RequestHeadError>>,
    /// `Host` lines, and the last one's value.
    hosts: u32,
    host: Option<Span>,
    /// `Connection` options (on lines of visible ASCII only, as Tether reads them).
    close: bool,
    keep_alive: bool,
    connection_upgrade: bool,
    /// An `Upgrade` line.
    upgrade: bool,
    /// The last `Expect` line is `100-continue`.
    expect_continue: bool,
}

impl Lines {
    /// The one pass over the header lines.
    fn scan(buf: &[u8], headers: &[httparse::Header<'_>]) -> Lines {
        let mut l = Lines::default();
        for h in headers {
            let (name, value) = (h.name.as_bytes(), h.value);
            if name.eq_ignore_ascii_case(b"transfer-encoding") {
                l.te_lines += 1;
                let last = value.rsplit(|b| *b == b',').next().unwrap_or_default();
                l.te_ends_chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
                l.te_chunked_alone = value.trim_ascii().eq_ignore_ascii_case(b"chunked");
                l.te_one_unknown = !l.te_ends_chunked && is_token(value.trim_ascii());
            } else if name.eq_ignore_ascii_case(b"content-length") {
                l.cl_lines += 1;
                if l.te_lines == 0 {
                    l.length = Some(add_length(l.length, value));
                }
            } else if name.eq_ignore_ascii_case(b"host") {
                l.hosts += 1;
                l.host = Some(Span::of(buf, value));
            } else if name.eq_ignore_ascii_case(b"connection") {
                for option in connection_options(value) {
                    l.close |= option.eq_ignore_ascii_case(b"close");
                    l.keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
                    l.connection_upgrade |= option.eq_ignore_ascii_case(b"upgrade");
                }
            } else if name.eq_ignore_ascii_case(b"upgrade") {
                l.upgrade = true;
            } else if name.eq_ignore_ascii_case(b"expect") {
                l.expect_continue = value.eq_ignore_ascii_case(b"100-continue");
            }
        }
        l
    }

    /// The policy of the module's table, row by row: the body's framing, or the refusal.
    fn judge(&self, method: &[u8], minor: u8) -> Result<BodyFraming, RequestHeadError> {
        use RequestHeadError::*;
        let (te, cl) = (self.te_lines > 0, self.cl_lines > 0);
        // The old head scan renamed this header, so hyper never refused it (on HTTP/1.0 it
        // did not: hyper refused every coding there, first). The order is kept.
        let unknown = self.te_lines == 1 && !cl && self.te_one_unknown;
        if let Some(refusal) = self.hyper_refusal(minor, unknown) {
            return Err(if te && cl { BothFramings } else { refusal });
        }
        if method == b"CONNECT" {
            return Err(Connect);
        }
        if unknown {
            return Err(UnknownCoding);
        }
        if te && cl {
            return Err(BothFramings);
        }
        match (self.hosts, minor) {
            (0, 1) => return Err(MissingHost),
            (2.., _) => return Err(SeveralHosts),
            _ => {}
        }
        if te {
            let alone = self.te_lines == 1 && self.te_chunked_alone;
            return if alone { Ok(BodyFraming::Chunked) } else { Err(TransferEncoding) };
        }
        match self.length {
            Some(Ok(n)) => Ok(BodyFraming::Length(n)),
            None if minor == 0 && matches!(method, b"POST" | b"PUT" | b"PATCH") => {
                Err(LengthRequired)
            }
            // A refused length was refused with hyper's refusals, above.
            _ => Ok(BodyFraming::NoBody),
        }
    }

    /// What hyper refused (`400`) before Tether saw the request, first in the table's order.
    fn hyper_refusal(&self, minor: u8, unknown: bool) -> Option<RequestHeadError> {
        use RequestHeadError::*;
        let te = self.te_lines > 0;
        match self.length {
            _ if te && minor == 0 => Some(TransferEncodingOnHttp10),
            Some(Err(refused)) => Some(refused),
            _ if te && !self.te_ends_chunked && !unknown => Some(TransferEncoding),
            _ => None,
        }
    }
}

/// Adds one `Content-Length` line to what the lines before it said: `None` (no length
/// yet), the length they agree on, or the first refusal (hyper stops at the first bad line).
/// Digits only, so a list (`5, 5`) is invalid, as hyper reads a request's length.
fn add_length(
    before: Option<Result<u64, RequestHeadError>>,
    value: &[u8],
) -> Result<u64, RequestHeadError> {
    let n = parse_length(value.trim_ascii()).ok_or(RequestHeadError::InvalidContentLength);
    match before {
        None => n,
        Some(Ok(agreed)) if n.is_ok_and(|n| n != agreed) => {
            Err(RequestHeadError::ConflictingContentLength)
        }
        Some(Ok(_)) => n,
        Some(Err(refused)) => Err(refused),
    }
}

/// A non-empty token (RFC 9110 §5.6.2).
fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|b| super::is_tchar(*b))
}

/// The comma-separated options of a `Connection` line, trimmed. A line with a byte that is
/// not visible ASCII (or a tab) gives none: `http::HeaderValue::to_str` refuses it, so
/// Tether's reading of `Connection` elsewhere (`proxy::headers`) skips it.
fn connection_options(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let ascii = value.iter().all(|b| *b == b'\t' || (0x20..0x7f).contains(b));
    value.split(|b| *b == b',').filter(move |_| ascii).map(<[u8]>::trim_ascii)
}

#[cfg(test)]
mod tests;
