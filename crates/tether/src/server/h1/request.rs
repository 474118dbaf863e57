//! A parsed request head made into the `http` types the request path takes. Header values
//! are slices of the head's bytes, never copies.

use std::cell::RefCell;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Uri, Version};
use tether_core::h1::{self, HeadLimits, HeaderSpan, RequestHead, RequestHeadError};

thread_local! {
    /// Where the last head parsed on this thread has its header lines: one list per thread,
    /// not per connection (an idle connection keeps none).
    static SPANS: RefCell<Vec<HeaderSpan>> = const { RefCell::new(Vec::new()) };
}

/// Room for the headers the request path adds (`X-Forwarded-For`, `-Proto`, `-Host`,
/// `Forwarded`, the request id, one more), so that adding them never regrows the map.
const ADDED_BY_TETHER: usize = 6;

/// Parses the head at the start of `buf` (see [`h1::parse_request`]); its header lines are
/// kept for [`build`], which must follow before another parse on this thread.
pub fn parse(buf: &[u8], limits: &HeadLimits) -> Result<Option<RequestHead>, RequestHeadError> {
    SPANS.with_borrow_mut(|spans| h1::parse_request(buf, limits, spans))
}

/// The request of the head [`parse`] just accepted, held in `bytes` (the head's bytes);
/// `None` when its target is not a URI or a line is not a valid `http` header.
pub fn build(bytes: &Bytes, head: &RequestHead) -> Option<Request<()>> {
    let method = Method::from_bytes(head.method.get(bytes)).ok()?;
    let uri = Uri::from_maybe_shared(bytes.slice(head.target.range())).ok()?;
    let headers = SPANS.with_borrow(|spans| {
        let mut map = crate::header_maps::take(spans.len() + ADDED_BY_TETHER);
        for s in spans {
            let name = HeaderName::from_bytes(s.name.get(bytes)).ok()?;
            let value = HeaderValue::from_maybe_shared(bytes.slice(s.value.range())).ok()?;
            map.append(name, value);
        }
        Some(map)
    })?;
    Some(assemble(method, uri, head.minor_version, headers))
}

/// The request of a head the framing policy refused (a `CONNECT`, an ambiguous framing, no
/// `Host`), read leniently so that the request path can refuse it as it refuses such a
/// request on HTTP/2 — same answer, same metric, same access-log line — and the head's
/// length. `None` when the head is not even that.
pub fn refused(buf: &[u8], limits: &HeadLimits) -> Option<(Request<()>, usize)> {
    let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut parsed = httparse::Request::new(&mut slots);
    let len = match parsed.parse(&buf[..buf.len().min(limits.max_head_bytes)]) {
        Ok(httparse::Status::Complete(len)) => len,
        _ => return None,
    };
    let method = Method::from_bytes(parsed.method?.as_bytes()).ok()?;
    let uri = Uri::try_from(parsed.path?).ok()?;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_bytes(h.value))
        {
            headers.append(name, value);
        }
    }
    Some((assemble(method, uri, parsed.version?, headers), len))
}

fn assemble(method: Method, uri: Uri, minor_version: u8, headers: HeaderMap) -> Request<()> {
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = if minor_version == 0 { Version::HTTP_10 } else { Version::HTTP_11 };
    *req.headers_mut() = headers;
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HeadLimits {
        HeadLimits::default()
    }

    #[test]
    fn an_accepted_head_becomes_the_same_request() {
        let raw = b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Two: 1\r\nx-two: 2\r\nContent-Length: 3\r\n\r\nabc";
        let head = parse(raw, &limits()).unwrap().unwrap();
        let bytes = Bytes::copy_from_slice(&raw[..head.len]);
        let req = build(&bytes, &head).unwrap();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri(), "/a?b=1");
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()["host"], "x");
        let twos: Vec<_> = req.headers().get_all("x-two").iter().collect();
        assert_eq!(twos, ["1", "2"], "repeated lines kept, in order");
        assert_eq!(req.headers()["content-length"], "3");
    }

    #[test]
    fn the_headers_tether_adds_fit_without_regrowing_the_map() {
        use crate::proxy::headers::{PeerHeaders, add_forwarding};
        for raw in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\n\r\n",
        ] {
            let head = parse(raw, &limits()).unwrap().unwrap();
            let mut req = build(&Bytes::copy_from_slice(raw), &head).unwrap();
            let room = req.headers().capacity();
            let peer = PeerHeaders::new("192.0.2.1".parse().unwrap());
            add_forwarding(req.headers_mut(), &peer, false, "http");
            req.headers_mut().insert("x-request-id", http::HeaderValue::from_static("1"));
            req.headers_mut().insert("x-one-more", http::HeaderValue::from_static("1"));
            assert_eq!(req.headers().len(), head_lines(raw) + 6);
            assert_eq!(req.headers().capacity(), room, "{}", String::from_utf8_lossy(raw));
        }
    }

    fn head_lines(raw: &[u8]) -> usize {
        raw.windows(2).filter(|w| w == b"\r\n").count() - 2
    }

    #[test]
    fn a_head_the_policy_refuses_is_still_read_for_its_answer() {
        let rows: &[(&str, &[u8], RequestHeadError)] = &[
            ("CONNECT", b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", RequestHeadError::Connect),
            (
                "both framings",
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                RequestHeadError::BothFramings,
            ),
            ("no Host", b"GET / HTTP/1.1\r\n\r\n", RequestHeadError::MissingHost),
        ];
        for (case, raw, want) in rows {
            assert_eq!(parse(raw, &limits()), Err(*want), "{case}");
            let (req, len) = refused(raw, &limits()).expect(case);
            assert_eq!(len, raw.len(), "{case}");
            assert_eq!(req.version(), Version::HTTP_11, "{case}");
        }
        assert!(refused(b"GET / HTTP/1.1\r\nHost: a\r\n", &limits()).is_none(), "incomplete");
    }
}
