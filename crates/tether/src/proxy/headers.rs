//! Header rewriting between client and server.
//!
//! Order matters and is fixed here: hop-by-hop headers are removed first (including every
//! header the `Connection` header names), *then* Tether adds its own forwarding headers, so
//! a client cannot make Tether strip `X-Forwarded-For` by naming it in `Connection`
//! (the Traefik CVE-2024-45410 class of bug).

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

/// Headers that describe one connection, never forwarded (RFC 9110 7.6.1, plus the legacy
/// `Keep-Alive` and `Proxy-Connection`).
/// The verified subject of the client's certificate (listeners with `tls.client_ca`).
pub const CLIENT_CERT_SUBJECT: HeaderName = HeaderName::from_static("x-client-cert-subject");
/// `SUCCESS` (a certificate was verified) or `NONE` (none sent; `client_auth = "optional"`).
pub const CLIENT_CERT_VERIFIED: HeaderName = HeaderName::from_static("x-client-cert-verified");

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers and every header named in `Connection`. `Upgrade` is removed
/// too unless `upgrade` is true (a request or 101 response being tunnelled), in which case
/// `Connection: upgrade` is put back.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Most messages carry none of these, and most others only `Connection`: one pass over
    // the names notes which are there, so only those are removed (each remove hashes).
    let present = hop_by_hop_present(headers);
    if present != 0 {
        if present & 1 != 0 {
            strip_connection(headers);
        }
        for (i, name) in HOP_BY_HOP.iter().enumerate().skip(1) {
            if present & (1 << i) != 0 {
                headers.remove(name);
            }
        }
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if present & UPGRADE_BIT != 0 {
        headers.remove(header::UPGRADE);
    }
}

/// Bit `i` set when `HOP_BY_HOP[i]` is among the names, [`UPGRADE_BIT`] (the bit after
/// them) for `Upgrade`.
fn hop_by_hop_present(headers: &HeaderMap) -> u16 {
    headers.keys().fold(0, |present, name| {
        let bit = match HOP_BY_HOP.iter().position(|h| h == name) {
            Some(i) => 1 << i,
            None if name == header::UPGRADE => UPGRADE_BIT,
            None => 0,
        };
        present | bit
    })
}

const UPGRADE_BIT: u16 = 1 << 8;

/// Removes `Connection` and every header its values name.
fn strip_connection(headers: &mut HeaderMap) {
    let mut connection = headers.get_all(header::CONNECTION).iter();
    let single = connection.next().is_some() && connection.next().is_none();
    if single {
        // The usual case, one `Connection` line: taken out of the map, not copied.
        if let Some(value) = headers.remove(header::CONNECTION) {
            remove_named(headers, &value);
        }
    } else {
        let values: Vec<HeaderValue> =
            headers.get_all(header::CONNECTION).iter().cloned().collect();
        headers.remove(header::CONNECTION);
        for value in &values {
            remove_named(headers, value);
        }
    }
}

/// Removes every header a `Connection` value names, looked up by the name as written:
/// nothing is allocated. The usual values (`keep-alive`, `close`, `upgrade`) and the other
/// hop-by-hop names are skipped (`tether_core::h1::connection_named`): [`strip_hop_by_hop`]
/// removes those headers anyway, or keeps `Upgrade` for a tunnel, and a lookup costs a hash.
fn remove_named(headers: &mut HeaderMap, connection: &HeaderValue) {
    for name in tether_core::h1::connection_named(connection.as_bytes()) {
        headers.remove(name);
    }
}

/// Is this an HTTP/1.1 request asking to switch protocols (`Connection: upgrade` and an
/// `Upgrade` header)?
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_option(headers, "upgrade")
}

/// Whether an HTTP/1 request asked to close the connection after its response:
/// `Connection: close`, or HTTP/1.0 without `Connection: keep-alive`.
pub fn asks_to_close(version: http::Version, headers: &HeaderMap) -> bool {
    if !headers.contains_key(header::CONNECTION) {
        return version <= http::Version::HTTP_10;
    }
    connection_option(headers, "close")
        || (version <= http::Version::HTTP_10 && !connection_option(headers, "keep-alive"))
}

/// Whether the `Connection` header lists `option` (case-insensitive).
fn connection_option(headers: &HeaderMap, option: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(option))
}

/// Is `peer` one of the proxies whose forwarding headers we believe?
pub fn is_trusted(peer: IpAddr, trusted: &[IpNet]) -> bool {
    let peer = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
        v4 => v4,
    };
    trusted.iter().any(|n| n.contains(&peer))
}

/// The client's address: the socket peer, or — when the peer is a trusted proxy — the
/// right-most address in `X-Forwarded-For` that is not itself a trusted proxy (addresses to
/// its left were written by the client and cannot be believed).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    if trusted.is_empty() || !is_trusted(peer, trusted) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all(HeaderName::from_static("x-forwarded-for"))
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else { break };
        client = ip;
        if !is_trusted(ip, trusted) {
            break;
        }
    }
    client
}

/// A client connection's address in the forms the forwarding headers use, built once per
/// connection rather than per request.
#[derive(Debug, Clone)]
pub struct PeerHeaders {
    /// The address as text, which is also `Forwarded`'s `for=` (each idle connection holds
    /// this: one form, not two).
    xff: HeaderValue,
    /// Whether the address is IPv6 (bracketed and quoted in `Forwarded`).
    v6: bool,
}

impl PeerHeaders {
    /// The forms of `ip`.
    pub fn new(ip: IpAddr) -> Self {
        let xff = HeaderValue::from_str(&ip.to_string());
        Self { xff: xff.unwrap_or(HeaderValue::from_static("unknown")), v6: ip.is_ipv6() }
    }

    /// `Forwarded`'s node: `for=` and the address, an IPv6 one bracketed and quoted.
    fn forwarded_for(&self) -> [&str; 3] {
        let text = self.xff.to_str().unwrap_or("unknown");
        if self.v6 { ["for=\"[", text, "]\""] } else { ["for=", text, ""] }
    }
}

/// Adds `X-Forwarded-For`, `-Proto`, `-Host` and `Forwarded`. From a trusted peer the
/// incoming chain is extended (and its proto/host kept); from anyone else it is replaced.
pub fn add_forwarding(
    headers: &mut HeaderMap,
    peer: &PeerHeaders,
    trusted: bool,
    proto: &'static str,
) {
    let xff = HeaderName::from_static("x-forwarded-for");
    let xfp = HeaderName::from_static("x-forwarded-proto");
    let xfh = HeaderName::from_static("x-forwarded-host");
    let host = headers.get(header::HOST).cloned();
    let host_text = host.as_ref().and_then(|h| h.to_str().ok());
    let host_text =
        host_text.filter(|h| h.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\'));
    let forwarded = forwarded_value(peer, proto, host_text);
    if trusted {
        append_list(headers, &xff, peer.xff.to_str().unwrap_or("unknown"));
        append_list(headers, &header::FORWARDED, &forwarded);
        if !headers.contains_key(&xfp) {
            headers.insert(xfp, HeaderValue::from_static(proto));
        }
        if let (false, Some(h)) = (headers.contains_key(&xfh), host) {
            headers.insert(xfh, h);
        }
    } else {
        headers.insert(xff, peer.xff.clone());
        // The String's buffer becomes the header's bytes: no copy.
        if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(forwarded)) {
            headers.insert(header::FORWARDED, v);
        }
        headers.insert(xfp, HeaderValue::from_static(proto));
        match host {
            Some(h) => {
                headers.insert(xfh, h);
            }
            None => {
                headers.remove(xfh);
            }
        }
    }
}

/// `Forwarded: for=...;proto=...;host="..."`, in a String exactly as long as its capacity:
/// such a String becomes a header's bytes without another allocation.
fn forwarded_value(peer: &PeerHeaders, proto: &str, host: Option<&str>) -> String {
    let node = peer.forwarded_for();
    let len = node.iter().map(|s| s.len()).sum::<usize>() + ";proto=".len() + proto.len();
    let mut forwarded = String::with_capacity(len + host.map_or(0, |h| h.len() + 8));
    node.iter().for_each(|s| forwarded.push_str(s));
    forwarded.push_str(";proto=");
    forwarded.push_str(proto);
    if let Some(h) = host {
        forwarded.push_str(";host=\"");
        forwarded.push_str(h);
        forwarded.push('"');
    }
    forwarded
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// Joins every existing value of `name` and `value` into one comma-separated header.
fn append_list(headers: &mut HeaderMap, name: &HeaderName, value: &str) {
    let mut joined = String::new();
    for v in headers.get_all(name).iter().filter_map(|v| v.to_str().ok()) {
        joined.push_str(v);
        joined.push_str(", ");
    }
    joined.push_str(value);
    set(headers, name.clone(), &joined);
}

/// The value of cookie `name` in the request's `Cookie` header(s), if any.
pub fn find_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    cookie_values(headers, name).next()
}

/// Every value of cookie `name` in the `Cookie` header(s), in the order sent (a client may
/// hold several under one name, set with different `Path` or `Domain` attributes). A value
/// that is not UTF-8 is skipped.
pub fn cookie_values<'h>(headers: &'h HeaderMap, name: &str) -> impl Iterator<Item = &'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|line| CookiePairs::new(line.as_bytes()))
        .filter(move |p| p.name == name.as_bytes())
        .filter_map(|p| std::str::from_utf8(p.value?).ok())
}

/// Removes cookie `name` from the `Cookie` header(s); drops a header left empty. Allocates
/// only when other cookies must be kept beside it (joined on one line with `"; "`).
pub fn strip_cookie(headers: &mut HeaderMap, name: &str) {
    let (mut present, mut others) = (false, false);
    for line in headers.get_all(header::COOKIE) {
        for pair in CookiePairs::new(line.as_bytes()) {
            if pair.name == name.as_bytes() { present = true } else { others = true }
        }
    }
    if !present {
        return;
    }
    let kept = others.then(|| {
        let mut kept = Vec::new();
        for line in headers.get_all(header::COOKIE) {
            for pair in CookiePairs::new(line.as_bytes()).filter(|p| p.name != name.as_bytes()) {
                if !kept.is_empty() {
                    kept.extend_from_slice(b"; ");
                }
                kept.extend_from_slice(pair.whole);
            }
        }
        kept
    });
    headers.remove(header::COOKIE);
    // The pairs come from valid header values, trimmed and joined: always a valid value.
    if let Some(v) = kept.and_then(|k| HeaderValue::from_bytes(&k).ok()) {
        headers.insert(header::COOKIE, v);
    }
}

/// One `name=value` pair of a `Cookie` line, trimmed of spaces and tabs (`trim_ascii`: a
/// header value holds no other ASCII whitespace); a pair without `=` is all name and no value.
struct CookiePair<'a> {
    whole: &'a [u8],
    name: &'a [u8],
    value: Option<&'a [u8]>,
}

/// The non-empty pairs of a `Cookie` line, split on `;` by bytes: no UTF-8 check of the
/// line, which may carry other cookies' obs-text.
struct CookiePairs<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> CookiePairs<'a> {
    fn new(line: &'a [u8]) -> Self {
        Self { rest: Some(line) }
    }
}

impl<'a> Iterator for CookiePairs<'a> {
    type Item = CookiePair<'a>;

    fn next(&mut self) -> Option<CookiePair<'a>> {
        loop {
            let rest = self.rest?;
            let (pair, after) = match memchr::memchr(b';', rest) {
                Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                None => (rest, None),
            };
            self.rest = after;
            let whole = pair.trim_ascii();
            if whole.is_empty() {
                continue;
            }
            return Some(match memchr::memchr(b'=', whole) {
                Some(i) => CookiePair {
                    whole,
                    name: whole[..i].trim_ascii(),
                    value: Some(whole[i + 1..].trim_ascii()),
                },
                None => CookiePair { whole, name: whole, value: None },
            });
        }
    }
}

/// Removes a server's `Set-Cookie` headers that would overwrite Tether's own cookie.
pub fn drop_set_cookie_named(headers: &mut HeaderMap, name: &str) {
    if !headers.contains_key(header::SET_COOKIE) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| {
            let s = v.to_str().unwrap_or("");
            s.split_once('=').map(|(k, _)| k.trim()) != Some(name)
        })
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for v in kept {
        headers.append(header::SET_COOKIE, v);
    }
}

/// Makes a response that carries Tether's `Set-Cookie` unstorable by shared caches: drops
/// `public` and `s-maxage`, adds `private` (browsers may still cache it for their user).
pub fn make_private(headers: &mut HeaderMap) {
    if let http::header::Entry::Vacant(none) = headers.entry(header::CACHE_CONTROL) {
        none.insert(HeaderValue::from_static("private"));
        return;
    }
    let existing: Vec<String> = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_owned)
        .collect();
    if existing
        .iter()
        .any(|d| d.eq_ignore_ascii_case("private") || d.eq_ignore_ascii_case("no-store"))
    {
        return;
    }
    let mut kept: Vec<&str> = existing
        .iter()
        .map(String::as_str)
        .filter(|d| {
            let name = d.split('=').next().unwrap_or("").trim();
            !name.eq_ignore_ascii_case("public") && !name.eq_ignore_ascii_case("s-maxage")
        })
        .collect();
    kept.push("private");
    set(headers, header::CACHE_CONTROL, &kept.join(", "));
}

/// The request's host without port, lowercased by the caller's comparison: the URI's
/// authority (HTTP/2, absolute-form) or the `Host` header.
pub fn request_host<'a>(uri: &'a http::Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    if let Some(h) = uri.host() {
        return Some(h);
    }
    let h = headers.get(header::HOST)?.to_str().ok()?;
    if h.starts_with('[') { h.find(']').map(|end| &h[..=end]) } else { h.split(':').next() }
}

#[cfg(test)]
mod tests;
