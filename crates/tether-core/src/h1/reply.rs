//! The response head Tether writes to a client: `HTTP/1.1 status reason`, the header lines,
//! the framing Tether chose, the empty line — appended to the caller's buffer in one pass.
//!
//! The framing is never copied from the server's lines: the caller says how Tether will send
//! the body ([`ReplyFraming`]), and this module writes the one header that says so. A
//! framing header in the caller's list (`Content-Length`, `Transfer-Encoding`) is refused, so
//! a response can never carry two framings, whatever the server sent (both headers, repeated
//! lengths, a length beside chunked). `Connection: close` is written when asked and refused
//! in the list for the same reason. As for requests ([`super::request`]), names must be
//! tokens and no value or reason may hold a CR, LF, NUL or other control byte.
//!
//! On an error nothing is appended (the buffer is cut back to where it was).

use super::{LineFault, all_field_value_bytes, push_header_line};

/// How Tether sends the body it writes this head for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyFraming {
    /// `Content-Length: n` (also for a response to HEAD: the length the GET would have).
    Length(u64),
    /// `Transfer-Encoding: chunked` (HTTP/1.1 clients, body of unknown length).
    Chunked,
    /// No framing header: a response without a body (1xx, 204, 304), or a body delimited by
    /// closing the connection (an HTTP/1.0 client, a body of unknown length).
    Unframed,
    /// A `101` that switches the connection to the protocol the client asked for: no framing
    /// header, `connection: upgrade` (the caller passes the `Upgrade` line); `close` is
    /// ignored, the connection becomes a tunnel.
    Upgrade,
}

/// Why a response head could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The status is not a three-digit code from 100 to 599.
    #[error("invalid status code")]
    Status,
    /// The reason phrase has a control byte other than a tab.
    #[error("invalid reason phrase")]
    Reason,
    /// A header name (at this position in the caller's list) is empty or not a token.
    #[error("invalid name of response header {0}")]
    HeaderName(usize),
    /// A header value (at this position) has a CR, LF, NUL or another control byte.
    #[error("invalid value of response header {0}")]
    HeaderValue(usize),
    /// A framing or connection header (at this position) is in the list: Tether writes those.
    #[error("response header {0} is one Tether writes itself")]
    Reserved(usize),
}

/// Headers the caller may not pass: Tether writes them from [`ReplyFraming`] and `close`.
const RESERVED: [&[u8]; 3] = [b"content-length", b"transfer-encoding", b"connection"];

/// Appends `HTTP/1.1 status reason`, `name: value` for each header, the framing header, a
/// `Connection: close` when `close`, and the empty line to `out`. On an error `out` is left
/// as it was.
pub fn write_reply_head<'h>(
    out: &mut Vec<u8>,
    status: u16,
    reason: &[u8],
    headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>,
    framing: ReplyFraming,
    close: bool,
) -> Result<(), ReplyError> {
    let start = out.len();
    let written = write(out, status, reason, &mut headers.into_iter(), framing, close);
    if written.is_err() {
        out.truncate(start);
    }
    written
}

/// The one pass: each piece is checked, then appended.
fn write<'h>(
    out: &mut Vec<u8>,
    status: u16,
    reason: &[u8],
    headers: &mut dyn Iterator<Item = (&'h [u8], &'h [u8])>,
    framing: ReplyFraming,
    close: bool,
) -> Result<(), ReplyError> {
    if !(100..=599).contains(&status) {
        return Err(ReplyError::Status);
    }
    if !all_field_value_bytes(reason) {
        return Err(ReplyError::Reason);
    }
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
    for (i, (name, value)) in headers.enumerate() {
        if RESERVED.iter().any(|r| name.eq_ignore_ascii_case(r)) {
            return Err(ReplyError::Reserved(i));
        }
        push_header_line(out, name, value).map_err(|fault| match fault {
            LineFault::Name => ReplyError::HeaderName(i),
            LineFault::Value => ReplyError::HeaderValue(i),
        })?;
    }
    match framing {
        ReplyFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        ReplyFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        ReplyFraming::Unframed => {}
        ReplyFraming::Upgrade => out.extend_from_slice(b"connection: upgrade\r\n"),
    }
    if close && framing != ReplyFraming::Upgrade {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Appends `n` in decimal, without allocating (a head is written per response).
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    type Headers<'a> = &'a [(&'a str, &'a str)];

    fn written(
        status: u16,
        headers: Headers<'_>,
        framing: ReplyFraming,
        close: bool,
    ) -> Result<String, ReplyError> {
        let mut out = b"kept".to_vec();
        let pairs = headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        let result = write_reply_head(&mut out, status, b"OK", pairs, framing, close);
        let text = String::from_utf8(out).unwrap();
        match result {
            Ok(()) => Ok(text.strip_prefix("kept").unwrap().to_owned()),
            Err(e) => {
                assert_eq!(text, "kept", "nothing appended on an error");
                Err(e)
            }
        }
    }

    #[test]
    fn the_framing_written_is_the_one_tether_chose() {
        use ReplyFraming::*;
        let h: Headers = &[("x-server", "a")];
        let rows: &[(&str, u16, Headers, ReplyFraming, bool, &str)] = &[
            (
                "a length",
                200,
                h,
                Length(5),
                false,
                "HTTP/1.1 200 OK\r\nx-server: a\r\ncontent-length: 5\r\n\r\n",
            ),
            (
                "chunked",
                200,
                h,
                Chunked,
                false,
                "HTTP/1.1 200 OK\r\nx-server: a\r\ntransfer-encoding: chunked\r\n\r\n",
            ),
            (
                "until close",
                200,
                h,
                Unframed,
                true,
                "HTTP/1.1 200 OK\r\nx-server: a\r\nconnection: close\r\n\r\n",
            ),
            ("no body", 204, &[], Unframed, false, "HTTP/1.1 204 OK\r\n\r\n"),
            (
                "switching protocols",
                101,
                &[("upgrade", "websocket")],
                Upgrade,
                true,
                "HTTP/1.1 101 OK\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            ),
            (
                "a zero length and close",
                200,
                &[],
                Length(0),
                true,
                "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            ),
        ];
        for (case, status, headers, framing, close, want) in rows {
            assert_eq!(written(*status, headers, *framing, *close).as_deref(), Ok(*want), "{case}");
        }
    }

    #[test]
    fn heads_that_could_carry_two_framings_or_split_a_line_are_refused() {
        use ReplyError::*;
        let chunked = ReplyFraming::Chunked;
        let rows: &[(&str, u16, Headers, ReplyError)] = &[
            ("a server's length beside ours", 200, &[("Content-Length", "3")], Reserved(0)),
            (
                "a server's coding",
                200,
                &[("a", "1"), ("transfer-encoding", "chunked")],
                Reserved(1),
            ),
            ("a server's Connection", 200, &[("CONNECTION", "keep-alive")], Reserved(0)),
            ("a CR LF in a value", 200, &[("x", "1\r\nset-cookie: evil")], HeaderValue(0)),
            ("a NUL in a value", 200, &[("x", "a\0b")], HeaderValue(0)),
            ("a space in a name", 200, &[("x y", "1")], HeaderName(0)),
            ("an empty name", 200, &[("", "1")], HeaderName(0)),
            ("a status below 100", 99, &[], Status),
            ("a status above 599", 600, &[], Status),
        ];
        for (case, status, headers, want) in rows {
            assert_eq!(written(*status, headers, chunked, false), Err(*want), "{case}");
        }
        let mut out = Vec::new();
        let none = std::iter::empty();
        let bad_reason = write_reply_head(&mut out, 200, b"O\nK", none, chunked, false);
        assert_eq!(bad_reason, Err(Reason));
        assert!(out.is_empty());
    }

    #[test]
    fn decimals_are_written_without_allocating_for_every_width() {
        for n in [0, 7, 10, 99, 100, 404, 65_536, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes(), "{n}");
        }
    }

    #[test]
    fn a_written_head_parses_back_with_the_framing_it_says() {
        use super::super::BodyFraming;
        use super::super::response::{HeadLimits, parse_response};
        let rows: &[(ReplyFraming, BodyFraming)] = &[
            (ReplyFraming::Length(7), BodyFraming::Length(7)),
            (ReplyFraming::Chunked, BodyFraming::Chunked),
            (ReplyFraming::Unframed, BodyFraming::UntilClose),
        ];
        for (framing, want) in rows {
            let mut out = Vec::new();
            let headers = [(&b"x-a"[..], &b"1"[..])];
            write_reply_head(&mut out, 200, b"OK", headers, *framing, false).unwrap();
            let head = parse_response(&out, &HeadLimits::default(), false, &mut Vec::new())
                .unwrap()
                .unwrap();
            assert_eq!(head.framing, *want, "{framing:?}");
        }
    }
}
