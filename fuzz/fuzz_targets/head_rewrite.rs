//! Request-head rewriting on arbitrary heads: the bytes are parsed as an HTTP/1.1 request head
//! (httparse, the parser hyper uses), then run through what Tether does to a head before
//! forwarding it — the framing check, hop-by-hop removal, forwarding headers, client address.
//! Nothing may panic, and whatever passes must come out well-framed: no hop-by-hop header
//! left, nothing the client named in `Connection` left, at most one `Content-Length` and
//! never with `Transfer-Encoding`, and the forwarding headers ending with the real peer.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tether::proxy::{framing, headers};

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

fuzz_target!(|data: &[u8]| {
    let (trusted, upgrade, data) = match data {
        [flags, rest @ ..] => (flags & 1 == 1, flags & 2 == 2, rest),
        [] => return,
    };
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut slots);
    let Ok(httparse::Status::Complete(_)) = req.parse(data) else { return };
    let version = if req.version == Some(0) { http::Version::HTTP_10 } else { http::Version::HTTP_11 };
    let Some(Ok(method)) = req.method.map(|m| http::Method::from_bytes(m.as_bytes())) else { return };
    let mut head = HeaderMap::new();
    for h in req.headers.iter() {
        // hyper refuses a head whose names or values http cannot hold; so does this.
        let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_bytes(h.value))
        else {
            return;
        };
        head.append(name, value);
    }
    let named_in_connection: Vec<HeaderName> = head
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !n.as_str().starts_with("x-forwarded") && n != header::FORWARDED)
        // A tunnel keeps `Upgrade` and gets `Connection: upgrade` back, even if named.
        .filter(|n| !(upgrade && (*n == header::UPGRADE || *n == header::CONNECTION)))
        .collect();
    let trusted_nets: Vec<ipnet::IpNet> =
        if trusted { vec![ipnet::IpNet::from(PEER)] } else { Vec::new() };
    let _client = headers::client_ip(PEER, &head, &trusted_nets);
    if framing::check(&method, version, &mut head).is_err() {
        return;
    }
    assert!(head.get_all(header::CONTENT_LENGTH).iter().count() <= 1);
    assert!(head.get_all(header::HOST).iter().count() <= 1);
    assert!(!(head.contains_key(header::CONTENT_LENGTH) && head.contains_key(header::TRANSFER_ENCODING)));
    headers::strip_hop_by_hop(&mut head, upgrade);
    for name in [
        header::TE,
        header::TRANSFER_ENCODING,
        header::TRAILER,
        header::PROXY_AUTHORIZATION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        assert!(!head.contains_key(&name), "{name} survived");
    }
    for name in &named_in_connection {
        assert!(!head.contains_key(name), "{name}, named in Connection, survived");
    }
    if upgrade {
        let connection: Vec<_> = head.get_all(header::CONNECTION).iter().collect();
        assert_eq!(connection, ["upgrade"], "a tunnel's Connection is Tether's own");
    } else {
        assert!(!head.contains_key(header::UPGRADE));
        assert!(!head.contains_key(header::CONNECTION));
    }
    headers::add_forwarding(&mut head, &headers::PeerHeaders::new(PEER), trusted, "http");
    let xff: Vec<&str> = head
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    assert_eq!(xff.last().copied(), Some("192.0.2.1"), "the last hop is the real peer");
    if !trusted {
        assert_eq!(xff.len(), 1, "an untrusted client's chain is replaced");
    }
});
