//! A deliberately strict HTTP/1.x request parser for the [`Recorder`](super::Recorder).
//!
//! The recorder stands where a smuggled request would land, so it must not be lenient in
//! any way a proxy could hide behind: lines end in CRLF only, no obs-fold, no space before
//! the colon, no control bytes, exactly one `Transfer-Encoding: chunked` or one
//! `Content-Length` (never both), exactly one `Host` on HTTP/1.1, and strict chunk framing.
//! Anything else is malformed, and a test fails on it.
//!
//! The parser works on the bytes received so far and reports whether they hold a complete
//! element ([`Step::Done`] with the bytes it used), need more ([`Step::Partial`]) or can
//! never become valid ([`Step::Malformed`]).

/// A request head longer than this is malformed: 64 KiB.
pub(super) const MAX_HEAD_LEN: usize = 64 * 1024;

/// A chunk-size line (with extensions) longer than this is malformed: 1 KiB.
const MAX_CHUNK_LINE_LEN: usize = 1024;

/// Hex digits in a chunk size before it counts as an overflow (16 fill a `u64`).
const MAX_CHUNK_SIZE_DIGITS: usize = 16;

/// Outcome of parsing from the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step<T> {
    /// The bytes so far are a valid prefix; read more.
    Partial,
    /// A complete element and how many bytes of the buffer it used.
    Done(T, usize),
    /// These bytes can never become a valid element, and why.
    Malformed(String),
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Head {
    pub method: String,
    pub target: String,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: &'static str,
    /// Names as sent, values with surrounding whitespace trimmed, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    pub framing: Framing,
    /// Whether the connection ends after this request (HTTP/1.0 or `Connection: close`).
    pub close: bool,
}

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    Length(u64),
    Chunked,
}

/// Parses a request head (request line, header lines, empty line) at the start of `buf`.
pub(super) fn head(buf: &[u8]) -> Step<Head> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD_LEN {
            return Step::Malformed(format!("no end of head within {MAX_HEAD_LEN} bytes"));
        }
        // Judge what has arrived already, so raw bytes tunnelled on a connection kept open
        // show up at once instead of waiting for a CRLFCRLF that never comes.
        return match check_partial_head(buf) {
            Some(reason) => Step::Malformed(reason),
            None => Step::Partial,
        };
    };
    match parse_head(&buf[..end]) {
        Ok(head) => Step::Done(head, end + 4),
        Err(reason) => Step::Malformed(reason),
    }
}

/// Parses a body framed as `framing` at the start of `buf`; the result is the decoded body.
pub(super) fn body(framing: Framing, buf: &[u8]) -> Step<Vec<u8>> {
    match framing {
        Framing::Length(len) => match usize::try_from(len) {
            Ok(len) if buf.len() >= len => Step::Done(buf[..len].to_vec(), len),
            _ => Step::Partial,
        },
        Framing::Chunked => chunked(buf),
    }
}

fn parse_head(head: &[u8]) -> Result<Head, String> {
    let mut lines = split_lines(head)?.into_iter();
    let request_line = lines.next().unwrap_or_default();
    let (method, target, version) = request_line_parts(request_line)?;
    let headers = lines.map(header_line).collect::<Result<Vec<_>, _>>()?;
    let framing = framing(&headers, version)?;
    if version == "HTTP/1.1" && count(&headers, "host") != 1 {
        return Err(format!("HTTP/1.1 with {} Host headers", count(&headers, "host")));
    }
    let close = version == "HTTP/1.0"
        || headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("connection")
                && v.split(|&b| b == b',').any(|t| trim(t).eq_ignore_ascii_case(b"close"))
        });
    Ok(Head { method, target, version, headers, framing, close })
}

/// Splits a head (without its final CRLFCRLF) on CRLF; a CR or LF alone is malformed.
fn split_lines(head: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut lines = Vec::new();
    let mut rest = head;
    loop {
        let (line, next) = match find(rest, b"\r\n") {
            Some(i) => (&rest[..i], Some(&rest[i + 2..])),
            None => (rest, None),
        };
        if line.iter().any(|&b| b == b'\r' || b == b'\n') {
            return Err(format!("bare CR or LF in line {:?}", String::from_utf8_lossy(line)));
        }
        lines.push(line);
        match next {
            Some(next) => rest = next,
            None => return Ok(lines),
        }
    }
}

/// `METHOD SP target SP HTTP/1.x`, single spaces, nothing else.
fn request_line_parts(line: &[u8]) -> Result<(String, String, &'static str), String> {
    let bad = || format!("bad request line {:?}", String::from_utf8_lossy(line));
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(bad());
    }
    if target.is_empty() || !target.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
        return Err(bad());
    }
    let version = match version {
        b"HTTP/1.1" => "HTTP/1.1",
        b"HTTP/1.0" => "HTTP/1.0",
        _ => return Err(bad()),
    };
    // Only tchar and visible ASCII are left, so both are valid UTF-8.
    Ok((String::from_utf8_lossy(method).into(), String::from_utf8_lossy(target).into(), version))
}

/// `name:value` with `name` all tchar (no space before the colon, no obs-fold) and `value`
/// free of control bytes other than HTAB.
fn header_line(line: &[u8]) -> Result<(String, Vec<u8>), String> {
    let bad = |why: &str| format!("{why} in header line {:?}", String::from_utf8_lossy(line));
    let colon = line.iter().position(|&b| b == b':').ok_or_else(|| bad("no colon"))?;
    let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(bad("invalid name (obs-fold, space before colon or bad byte)"));
    }
    if !value.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80) {
        return Err(bad("control byte in value"));
    }
    Ok((String::from_utf8_lossy(name).into(), value.to_vec()))
}

/// The body framing the headers declare; any ambiguity is malformed.
fn framing(headers: &[(String, Vec<u8>)], version: &str) -> Result<Framing, String> {
    let (te, cl) = (count(headers, "transfer-encoding"), count(headers, "content-length"));
    if te > 0 {
        if te > 1 || cl > 0 || version != "HTTP/1.1" {
            return Err(format!(
                "ambiguous framing: {te} Transfer-Encoding, {cl} Content-Length, {version}"
            ));
        }
        return match first(headers, "transfer-encoding") {
            Some(v) if v.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
            v => Err(format!("Transfer-Encoding {:?}", v.map(|v| String::from_utf8_lossy(v)))),
        };
    }
    match cl {
        0 => Ok(Framing::Length(0)),
        1 => {
            let v = first(headers, "content-length").unwrap_or_default();
            let digits = !v.is_empty() && v.len() <= 19 && v.iter().all(u8::is_ascii_digit);
            // At most 19 ASCII digits: valid UTF-8 and within u64.
            let len = digits.then(|| String::from_utf8_lossy(v).parse::<u64>().ok()).flatten();
            len.map(Framing::Length)
                .ok_or_else(|| format!("bad Content-Length {:?}", String::from_utf8_lossy(v)))
        }
        n => Err(format!("{n} Content-Length headers")),
    }
}

/// A chunked body: `size[;ext] CRLF data CRLF` ... `0 CRLF` trailers `CRLF`.
fn chunked(buf: &[u8]) -> Step<Vec<u8>> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let size = match chunk_size_line(&buf[at..]) {
            Step::Done(size, used) => {
                at += used;
                size
            }
            Step::Partial => return Step::Partial,
            Step::Malformed(reason) => return Step::Malformed(reason),
        };
        if size == 0 {
            return match trailers(&buf[at..]) {
                Step::Done((), used) => Step::Done(body, at + used),
                Step::Partial => Step::Partial,
                Step::Malformed(reason) => Step::Malformed(reason),
            };
        }
        let Some(end) = usize::try_from(size).ok().and_then(|s| at.checked_add(s)) else {
            return Step::Malformed(format!("chunk of {size} bytes"));
        };
        if buf.len() < end + 2 {
            // Check what has arrived of the CRLF after the data, if any.
            let tail = buf.get(end..).unwrap_or_default();
            return if b"\r\n".starts_with(tail) {
                Step::Partial
            } else {
                Step::Malformed("chunk data not followed by CRLF".into())
            };
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Step::Malformed("chunk data not followed by CRLF".into());
        }
        body.extend_from_slice(&buf[at..end]);
        at = end + 2;
    }
}

/// `HEXDIG+ [; ext] CRLF`; the size and the bytes used.
fn chunk_size_line(buf: &[u8]) -> Step<u64> {
    let Some(end) = find(buf, b"\r\n") else {
        // A CR may end the buffer (its LF still to come); anywhere else it stands alone.
        let bare = buf.contains(&b'\n') || buf[..buf.len().saturating_sub(1)].contains(&b'\r');
        return if bare || buf.len() > MAX_CHUNK_LINE_LEN {
            Step::Malformed("bad chunk-size line".into())
        } else {
            Step::Partial
        };
    };
    let line = &buf[..end];
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let (hex, ext) = line.split_at(digits);
    let ext_ok = ext.is_empty()
        || (ext[0] == b';'
            && ext.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80));
    if digits == 0 || digits > MAX_CHUNK_SIZE_DIGITS || !ext_ok {
        return Step::Malformed(format!("bad chunk-size line {:?}", String::from_utf8_lossy(line)));
    }
    // Only hex digits, at most 16 of them: valid UTF-8 and within u64.
    match u64::from_str_radix(&String::from_utf8_lossy(hex), 16) {
        Ok(size) => Step::Done(size, end + 2),
        Err(e) => Step::Malformed(format!("chunk size: {e}")),
    }
}

/// Trailer lines after the last chunk, up to and including the empty line.
fn trailers(buf: &[u8]) -> Step<()> {
    let mut at = 0;
    loop {
        let Some(end) = find(&buf[at..], b"\r\n") else {
            let rest = &buf[at..];
            let bare = rest.contains(&b'\n') || rest.len() > MAX_HEAD_LEN;
            return if bare { Step::Malformed("bad trailer".into()) } else { Step::Partial };
        };
        let line = &buf[at..at + end];
        at += end + 2;
        if line.is_empty() {
            return Step::Done((), at);
        }
        if let Err(reason) = header_line(line) {
            return Step::Malformed(format!("trailer: {reason}"));
        }
    }
}

/// Whether an incomplete head already shows it can never be valid: a control byte other
/// than CR, LF, HTAB, or a complete first line that is no request line.
fn check_partial_head(buf: &[u8]) -> Option<String> {
    if let Some(&b) = buf.iter().find(|&&b| (b < 0x20 && !b"\r\n\t".contains(&b)) || b == 0x7f) {
        return Some(format!("control byte {b:#04x} before the end of a head"));
    }
    let first_line = find(buf, b"\r\n").map(|end| &buf[..end])?;
    request_line_parts(first_line).err()
}

fn first<'h>(headers: &'h [(String, Vec<u8>)], name: &str) -> Option<&'h [u8]> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
}

fn count(headers: &[(String, Vec<u8>)], name: &str) -> usize {
    headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).count()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// RFC 9110 `tchar`: the bytes of a method or header name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(raw: &[u8]) -> Head {
        match head(raw) {
            Step::Done(h, used) => {
                assert_eq!(used, raw.len());
                h
            }
            other => panic!("{other:?}"),
        }
    }

    fn malformed<T: std::fmt::Debug>(step: Step<T>) -> bool {
        matches!(step, Step::Malformed(_))
    }

    #[test]
    fn a_plain_head_parses_with_its_framing() {
        let h = head_of(b"POST /a?b HTTP/1.1\r\nHost: x\r\nContent-Length:  12 \r\n\r\n");
        assert_eq!((h.method.as_str(), h.target.as_str(), h.version), ("POST", "/a?b", "HTTP/1.1"));
        assert_eq!(h.framing, Framing::Length(12));
        assert!(!h.close);
        let h = head_of(b"GET / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: Chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        assert!(head_of(b"GET / HTTP/1.0\r\n\r\n").close);
    }

    #[test]
    fn every_ambiguity_in_a_head_is_malformed() {
        for raw in [
            &b"GET / HTTP/1.1\r\nHost: x\r\nX: a\nY: b\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: x\r\nX: a\rY: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\0\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(malformed(head(raw)), "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn an_incomplete_head_is_judged_as_far_as_it_goes() {
        assert_eq!(head(b"GET / HTTP/1.1\r\nHost: x\r\n"), Step::Partial);
        assert!(malformed(head(b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f")));
        assert!(malformed(head(b"GPOST / HTTP/1.1 junk\r\nHo")));
    }

    #[test]
    fn chunked_bodies_decode_and_bad_framing_is_malformed() {
        let raw = b"5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        assert_eq!(body(Framing::Chunked, raw), Step::Done(b"hello!".to_vec(), raw.len() - 4));
        assert_eq!(body(Framing::Chunked, b"5\r\nhel"), Step::Partial);
        assert_eq!(body(Framing::Chunked, b"5\r\nhello\r"), Step::Partial);
        for raw in [
            &b"zz\r\n"[..],
            b"ffffffffffffffffff\r\n",
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\nhello",
        ] {
            assert!(malformed(body(Framing::Chunked, raw)), "{:?}", String::from_utf8_lossy(raw));
        }
        assert_eq!(body(Framing::Length(3), b"abcd"), Step::Done(b"abc".to_vec(), 3));
    }
}
