//! The request framing policy, so that Tether and every server behind it agree on where
//! each request ends (request smuggling needs them to disagree). On HTTP/1.1 the head is
//! judged where it is parsed, in one pass (`tether_core::h1::head`, its policy table in the
//! module doc); a refused head reaches the request path with its reason ([`refusal`]) only
//! to be answered, counted and logged. [`check`] holds the same rules for heads that come
//! through another parser (HTTP/2 streams are framed by HTTP/2 and skip them):
//!
//! - `Transfer-Encoding` must appear once with the value `chunked` alone: several header
//!   lines or a list (`gzip, chunked`, `chunked, chunked`) → 400; a single coding other
//!   than `chunked` → 501;
//! - `Transfer-Encoding` together with `Content-Length` → 400 (RFC 9112 §6.3 allows a
//!   recipient to drop the length; a proxy that forwards both invites desync);
//! - repeated `Content-Length` values (several lines, or a list) that all agree are
//!   collapsed to one before forwarding; differing ones → 400;
//! - an HTTP/1.0 `POST`, `PUT` or `PATCH` without `Content-Length` → 411 (HTTP/1.0 bodies
//!   are delimited by their length; without one, the bytes after the head would be read as
//!   the next request);
//! - HTTP/1.1 without `Host`, or with more than one `Host` → 400 (RFC 9112 §3.2: routing
//!   and the server could read different hosts).
//!
//! A bare LF ends a header line (RFC 9112 §2.2 allows it); Tether forwards every header with
//! CRLF, so the servers behind never see one.
//!
//! Every refusal closes the connection (`Connection: close`): after a framing error the
//! rest of the bytes on it cannot be trusted to start a request.
//!
//! Responses from HTTP/1.1 servers get the same care, in the one parse of their head
//! (`tether_core::h1::response`, applied by [`crate::upstream::h1`]): the client never
//! receives a message that looks complete but is not, and a server connection whose framing
//! was suspect is never reused (docs/security.md, "Response framing").

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Method, Version};
use tether_core::h1::response::parse_length;

use tether_core::h1::RequestHeadError;

use super::error::ProxyError;
use crate::metrics::RequestRefusal;

/// Checks (and normalises) the framing headers of a request head.
pub fn check(method: &Method, version: Version, headers: &mut HeaderMap) -> Result<(), ProxyError> {
    if version >= Version::HTTP_2 {
        // HTTP/2 frames its own messages; h2 refuses connection-specific headers and a
        // content-length that disagrees with the DATA frames.
        return Ok(());
    }
    let mut hosts = headers.get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err(ProxyError::Framing("more than one Host header")),
        (None, None) if version == Version::HTTP_11 => {
            return Err(ProxyError::Framing("an HTTP/1.1 request without Host"));
        }
        _ => {}
    }
    let mut te = headers.get_all(TRANSFER_ENCODING).iter();
    if let Some(first) = te.next() {
        if te.next().is_some() {
            return Err(ProxyError::Framing("more than one Transfer-Encoding header"));
        }
        if headers.contains_key(CONTENT_LENGTH) {
            return Err(ProxyError::Framing("both Transfer-Encoding and Content-Length"));
        }
        if version == Version::HTTP_10 {
            return Err(ProxyError::Framing("Transfer-Encoding in an HTTP/1.0 request"));
        }
        let value = first.as_bytes().trim_ascii();
        if !value.eq_ignore_ascii_case(b"chunked") {
            return Err(if value.contains(&b',') {
                ProxyError::Framing("a Transfer-Encoding other than chunked alone")
            } else {
                ProxyError::UnknownCoding
            });
        }
        return Ok(());
    }
    if version == Version::HTTP_10
        && !headers.contains_key(CONTENT_LENGTH)
        && matches!(*method, Method::POST | Method::PUT | Method::PATCH)
    {
        return Err(ProxyError::LengthRequired);
    }
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    let Some(first) = lengths.next() else { return Ok(()) };
    let several = lengths.next().is_some() || first.as_bytes().contains(&b',');
    if !several {
        return Ok(());
    }
    let mut agreed: Option<u64> = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for part in value.as_bytes().split(|b| *b == b',') {
            let n = parse_length(part.trim_ascii())
                .ok_or(ProxyError::Framing("an invalid Content-Length"))?;
            if agreed.is_some_and(|a| a != n) {
                return Err(ProxyError::Framing("conflicting Content-Length values"));
            }
            agreed = Some(n);
        }
    }
    if let Some(n) = agreed {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
    }
    Ok(())
}

/// The answer to a head Tether's HTTP/1.1 parser refused by the framing policy
/// (`tether_core::h1::head`), which the server passes on in the request's extensions so that
/// the refusal is answered, counted and logged here like every other.
pub fn refusal(e: RequestHeadError) -> (RequestRefusal, ProxyError) {
    use RequestHeadError as E;
    let framing = |why| (RequestRefusal::Framing, ProxyError::Framing(why));
    match e {
        E::Connect => (
            RequestRefusal::Method,
            ProxyError::NotForwardable("CONNECT is not supported".to_owned()),
        ),
        E::UnknownCoding => (RequestRefusal::Framing, ProxyError::UnknownCoding),
        E::LengthRequired => (RequestRefusal::Framing, ProxyError::LengthRequired),
        E::BothFramings => framing("both Transfer-Encoding and Content-Length"),
        E::MissingHost => framing("an HTTP/1.1 request without Host"),
        E::SeveralHosts => framing("more than one Host header"),
        E::TransferEncoding => framing("a Transfer-Encoding other than chunked alone"),
        E::TransferEncodingOnHttp10 => framing("Transfer-Encoding in an HTTP/1.0 request"),
        E::InvalidContentLength => framing("an invalid Content-Length"),
        E::ConflictingContentLength => framing("conflicting Content-Length values"),
        E::Malformed(_) => framing("a malformed request head"),
        E::TooLarge | E::TooManyHeaders | E::TargetTooLong => {
            (RequestRefusal::Framing, ProxyError::TooManyHeaders)
        }
    }
}

/// The request's declared length, when it has a single valid `Content-Length`.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    parse_length(headers.get(CONTENT_LENGTH)?.as_bytes().trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn verdict(version: Version, pairs: &[(&str, &str)]) -> Result<HeaderMap, u16> {
        let mut h = head(pairs);
        h.append(HOST, HeaderValue::from_static("x"));
        check(&Method::POST, version, &mut h).map(|()| h).map_err(|e| e.status().as_u16())
    }

    #[test]
    fn host_must_appear_once_and_http10_bodies_need_a_length() {
        let mut two = head(&[("host", "a"), ("host", "b")]);
        assert_eq!(check(&Method::GET, Version::HTTP_11, &mut two).unwrap_err().status(), 400);
        let mut none = head(&[]);
        assert_eq!(check(&Method::GET, Version::HTTP_11, &mut none).unwrap_err().status(), 400);
        // HTTP/1.0 may omit Host.
        assert!(check(&Method::GET, Version::HTTP_10, &mut head(&[])).is_ok());
        let mut post10 = head(&[]);
        assert_eq!(check(&Method::POST, Version::HTTP_10, &mut post10).unwrap_err().status(), 411);
        let mut sized = head(&[("content-length", "3")]);
        assert!(check(&Method::POST, Version::HTTP_10, &mut sized).is_ok());
    }

    #[test]
    fn transfer_encoding_must_be_chunked_alone() {
        let v11 = Version::HTTP_11;
        assert!(verdict(v11, &[("transfer-encoding", "chunked")]).is_ok());
        assert!(verdict(v11, &[("transfer-encoding", " Chunked ")]).is_ok());
        assert_eq!(verdict(v11, &[("transfer-encoding", "chunked, chunked")]).unwrap_err(), 400);
        assert_eq!(verdict(v11, &[("transfer-encoding", "gzip, chunked")]).unwrap_err(), 400);
        assert_eq!(
            verdict(v11, &[("transfer-encoding", "gzip"), ("transfer-encoding", "chunked")])
                .unwrap_err(),
            400
        );
        assert_eq!(verdict(v11, &[("transfer-encoding", "gzip")]).unwrap_err(), 501);
        assert_eq!(
            verdict(v11, &[("transfer-encoding", "chunked"), ("content-length", "5")]).unwrap_err(),
            400
        );
        assert_eq!(
            verdict(Version::HTTP_10, &[("transfer-encoding", "chunked")]).unwrap_err(),
            400
        );
    }

    #[test]
    fn content_length_duplicates_collapse_when_equal_and_fail_otherwise() {
        let v11 = Version::HTTP_11;
        let h = verdict(v11, &[("content-length", "5"), ("content-length", "5")]).unwrap();
        assert_eq!(h.get_all(CONTENT_LENGTH).iter().count(), 1);
        assert_eq!(h[CONTENT_LENGTH], "5");
        let h = verdict(v11, &[("content-length", "7, 7")]).unwrap();
        assert_eq!(h[CONTENT_LENGTH], "7");
        assert_eq!(
            verdict(v11, &[("content-length", "5"), ("content-length", "6")]).unwrap_err(),
            400
        );
        assert_eq!(verdict(v11, &[("content-length", "5, 6")]).unwrap_err(), 400);
        assert_eq!(verdict(v11, &[("content-length", "5, +5")]).unwrap_err(), 400);
        assert!(verdict(v11, &[("content-length", "12")]).is_ok());
        // HTTP/2 is framed by its own frames.
        assert!(
            verdict(Version::HTTP_2, &[("content-length", "1"), ("content-length", "2")]).is_ok()
        );
    }

    #[test]
    fn lengths_are_digits_only() {
        assert_eq!(parse_length(b"0"), Some(0));
        assert_eq!(parse_length(b"18446744073709551615"), None);
        for bad in [&b""[..], b"-1", b"+1", b"0x10", b"1 1", b"1e3"] {
            assert_eq!(parse_length(bad), None, "{bad:?}");
        }
    }
}
