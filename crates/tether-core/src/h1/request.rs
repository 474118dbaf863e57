//! The request head Tether writes to a server: `METHOD target HTTP/1.1`, the header lines,
//! the empty line — appended to the caller's buffer in one pass, each piece checked as it is
//! written.
//!
//! The caller has already chosen the headers (hop-by-hop ones removed, forwarding headers
//! and the framing header added); this module only guarantees that what it writes is one
//! well-formed head: the method and names are tokens, the target is visible ASCII, and no
//! value holds a CR, LF, NUL or other control byte (a tab is allowed) — so no value can end
//! its line and smuggle another header or request. The version is always HTTP/1.1: Tether
//! speaks HTTP/1.1 to every server.
//!
//! On an error nothing is appended (the buffer is cut back to where it was): the request is
//! refused, and the buffer may still hold what the caller wrote before.

use super::{LineFault, all_tchar, push_header_line};

/// Why a request head could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The method is empty or not a token.
    #[error("invalid request method")]
    Method,
    /// The target is empty or has a byte that is not visible ASCII.
    #[error("invalid request target")]
    Target,
    /// A header name (at this position in the caller's list) is empty or not a token.
    #[error("invalid name of request header {0}")]
    HeaderName(usize),
    /// A header value (at this position) has a CR, LF, NUL or another control byte.
    #[error("invalid value of request header {0}")]
    HeaderValue(usize),
}

/// Appends the head `method target HTTP/1.1`, `name: value` for each header, and the empty
/// line to `out`. On an error `out` is left as it was.
pub fn write_request_head<'h>(
    out: &mut Vec<u8>,
    method: &[u8],
    target: &[u8],
    headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>,
) -> Result<(), RequestError> {
    let start = out.len();
    let written = write(out, method, target, &mut headers.into_iter());
    if written.is_err() {
        out.truncate(start);
    }
    written
}

/// Whether every byte is visible ASCII (a request target), checked without a branch per byte.
fn all_visible_ascii(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |ok, &b| ok & (0x21..0x7f).contains(&b))
}

/// The one pass: each piece is checked, then appended.
fn write<'h>(
    out: &mut Vec<u8>,
    method: &[u8],
    target: &[u8],
    headers: &mut dyn Iterator<Item = (&'h [u8], &'h [u8])>,
) -> Result<(), RequestError> {
    if method.is_empty() || !all_tchar(method) {
        return Err(RequestError::Method);
    }
    if target.is_empty() || !all_visible_ascii(target) {
        return Err(RequestError::Target);
    }
    out.extend_from_slice(method);
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (i, (name, value)) in headers.enumerate() {
        push_header_line(out, name, value).map_err(|fault| match fault {
            LineFault::Name => RequestError::HeaderName(i),
            LineFault::Value => RequestError::HeaderValue(i),
        })?;
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Result<String, RequestError> {
        let mut out = Vec::new();
        let pairs = headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        write_request_head(&mut out, method.as_bytes(), target.as_bytes(), pairs)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn a_head_is_written_as_http11_with_crlf_lines() {
        let head = written("GET", "/a?b=c", &[("Host", "x"), ("X-Forwarded-For", "1.2.3.4")]);
        assert_eq!(
            head.unwrap(),
            "GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n"
        );
        assert_eq!(written("OPTIONS", "*", &[]).unwrap(), "OPTIONS * HTTP/1.1\r\n\r\n");
        // A tab and obs-text are field-value bytes; an empty value is allowed.
        assert!(written("GET", "/", &[("a", "x\ty"), ("b", "caf\u{e9}"), ("c", "")]).is_ok());
    }

    #[test]
    fn refusal_table() {
        /// Name, method, target, headers, the refusal.
        type Case = (
            &'static str,
            &'static str,
            &'static str,
            &'static [(&'static str, &'static str)],
            RequestError,
        );
        let cases: &[Case] = &[
            ("empty method", "", "/", &[], RequestError::Method),
            ("space in method", "G T", "/", &[], RequestError::Method),
            ("empty target", "GET", "", &[], RequestError::Target),
            ("space in target", "GET", "/a b", &[], RequestError::Target),
            ("CR LF in target", "GET", "/\r\nX: y", &[], RequestError::Target),
            ("non-ASCII target", "GET", "/\u{e9}", &[], RequestError::Target),
            ("empty name", "GET", "/", &[("", "v")], RequestError::HeaderName(0)),
            ("colon in name", "GET", "/", &[("a", "1"), ("b:c", "v")], RequestError::HeaderName(1)),
            ("CR LF in value", "GET", "/", &[("a", "1\r\nEvil: 1")], RequestError::HeaderValue(0)),
            ("bare LF in value", "GET", "/", &[("a", "1\nb")], RequestError::HeaderValue(0)),
            ("bare CR in value", "GET", "/", &[("a", "1\rb")], RequestError::HeaderValue(0)),
            ("NUL in value", "GET", "/", &[("a", "1\0")], RequestError::HeaderValue(0)),
            ("DEL in value", "GET", "/", &[("a", "\u{7f}")], RequestError::HeaderValue(0)),
        ];
        for (case, method, target, headers, want) in cases {
            assert_eq!(written(method, target, headers), Err(*want), "{case}");
            let mut out = b"kept".to_vec();
            let pairs = headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
            assert!(
                write_request_head(&mut out, method.as_bytes(), target.as_bytes(), pairs).is_err()
            );
            assert_eq!(out, b"kept", "{case}: the buffer is cut back");
        }
    }

    proptest::proptest! {
        /// Whatever bytes the caller passes, what is written is one head whose header lines
        /// are exactly the ones given: no value can add a line or end the head.
        #[test]
        fn any_accepted_head_parses_back_line_for_line(
            headers in proptest::collection::vec(
                (proptest::collection::vec(proptest::sample::select(b"aZ-_!\r\n :".to_vec()), 0..6),
                 proptest::collection::vec(proptest::sample::select(b"a \t\r\n\0:\x7f\xe9".to_vec()), 0..8)),
                0..6),
        ) {
            let mut out = Vec::new();
            let pairs = headers.iter().map(|(n, v)| (&n[..], &v[..]));
            if write_request_head(&mut out, b"GET", b"/", pairs).is_err() {
                proptest::prop_assert!(out.is_empty());
                return Ok(());
            }
            let mut slots = [httparse::EMPTY_HEADER; 8];
            let mut req = httparse::Request::new(&mut slots);
            proptest::prop_assert_eq!(req.parse(&out), Ok(httparse::Status::Complete(out.len())));
            let got: Vec<_> = req.headers.iter().map(|h| (h.name.as_bytes(), h.value)).collect();
            let want: Vec<_> = headers.iter().map(|(n, v)| (&n[..], v.trim_ascii())).collect();
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn a_written_head_parses_back_to_the_same_request() {
        let headers = [("Host", "example.com"), ("Content-Length", "5"), ("X-A", "b, c")];
        let head = written("POST", "/upload", &headers).unwrap();
        let mut slots = [httparse::EMPTY_HEADER; 8];
        let mut req = httparse::Request::new(&mut slots);
        assert_eq!(req.parse(head.as_bytes()).unwrap(), httparse::Status::Complete(head.len()));
        assert_eq!((req.method, req.path, req.version), (Some("POST"), Some("/upload"), Some(1)));
        let got: Vec<_> =
            req.headers.iter().map(|h| (h.name, std::str::from_utf8(h.value).unwrap())).collect();
        assert_eq!(got, headers);
    }
}
