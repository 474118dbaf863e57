//! A server's header lines on their way to the client, kept as slices of its response head
//! instead of entries of a `HeaderMap`: a client on HTTP/1.1 gets them written straight from
//! the head's bytes (no name lookup, no hashing, nothing to drop), and whatever needs them in
//! the response's map — an HTTP/2 client, cookie affinity, a route's response rules, a
//! request id the server also sent — moves them there first ([`ServerLines::into_map`]).
//!
//! The lines are those of an accepted head (`tether_core::h1::response`, on httparse's
//! strict defaults): every name is a token and no value holds a control byte other than tab,
//! so each line is one `http` header as it stands.

use std::ops::Range;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use tether_core::h1::{BodyFraming, HeaderSpan, connection_named, is_hop_by_hop};

use super::Error;

/// The longest header name `http` takes (`HeaderName` refuses longer ones).
const MAX_NAME_LEN: usize = (1 << 16) - 1;

/// The server's end-to-end lines, in the order it sent them.
#[derive(Debug, Default)]
pub struct ServerLines {
    bytes: Bytes,
    spans: Vec<HeaderSpan>,
}

/// The length a `Content-Length` line gives, and where its value is when it is that number
/// written plainly.
pub(super) type KeptLength = Option<(u64, Option<Range<usize>>)>;

impl ServerLines {
    /// The lines of the head in `bytes` (parsed into `spans`) that go to the client: the
    /// server's hop-by-hop lines and those its `Connection` names left out, `Upgrade` kept
    /// only for a `101` (`switching`), and its `Content-Length` lines taken out (the first
    /// is returned: the caller writes the one framing Tether chose).
    pub(super) fn of_head(
        bytes: Bytes,
        mut spans: Vec<HeaderSpan>,
        switching: bool,
    ) -> Result<(Self, KeptLength), Error> {
        let mut kept_length = None;
        let mut named: Vec<&[u8]> = Vec::new();
        let mut too_long = false;
        spans.retain(|s| {
            let raw = s.name.get(&bytes);
            too_long |= raw.len() > MAX_NAME_LEN;
            if is_hop_by_hop(raw) || (!switching && raw.eq_ignore_ascii_case(b"upgrade")) {
                if raw.eq_ignore_ascii_case(b"connection") {
                    named.extend(connection_named(s.value.get(&bytes)).map(str::as_bytes));
                }
                return false;
            }
            if raw.eq_ignore_ascii_case(b"content-length") {
                if kept_length.is_none() {
                    kept_length = length_line(&bytes, s);
                }
                return false;
            }
            true
        });
        if too_long {
            return Err(Error::Server("invalid response header name".into()));
        }
        if !named.is_empty() {
            // A header named in `Connection` may come before it: removed once all are known.
            spans.retain(|s| !named.iter().any(|n| n.eq_ignore_ascii_case(s.name.get(&bytes))));
        }
        drop(named);
        Ok((Self { bytes, spans }, kept_length))
    }

    /// The lines of a whole response head, as the client gets them (tests).
    #[cfg(test)]
    pub(crate) fn of_response(raw: &str) -> Self {
        let bytes = Bytes::copy_from_slice(raw.as_bytes());
        let mut spans = Vec::new();
        let limits = tether_core::h1::HeadLimits::default();
        let head = tether_core::h1::parse_response(&bytes, &limits, false, &mut spans);
        assert!(matches!(head, Ok(Some(_))), "a whole, valid head: {raw:?}");
        Self::of_head(bytes, spans, false).map(|(lines, _)| lines).expect("lines")
    }

    /// Each line's name (as the server wrote it) and value.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans.iter().map(|s| (s.name.get(&self.bytes), s.value.get(&self.bytes)))
    }

    /// Bytes the lines take written as `name: value` and CRLF.
    pub fn written_len(&self) -> usize {
        self.spans.iter().map(|s| s.name.range().len() + s.value.range().len() + 4).sum()
    }

    /// Whether a line is named `name`.
    pub fn has(&self, name: &HeaderName) -> bool {
        let name = name.as_str().as_bytes();
        // Lengths first: asked once per response (the request id), and rarely a match.
        self.spans.iter().any(|s| {
            s.name.range().len() == name.len() && s.name.get(&self.bytes).eq_ignore_ascii_case(name)
        })
    }

    /// Puts the lines into `map`, after the entries it has (only the framing line Tether
    /// chose: every step that adds to the map moves the lines there first).
    pub fn into_map(self, map: &mut HeaderMap) {
        map.reserve(self.spans.len());
        for s in &self.spans {
            // Always valid (see the module's note); a line that were not is left out.
            let name = HeaderName::from_bytes(s.name.get(&self.bytes));
            let value = HeaderValue::from_maybe_shared(self.bytes.slice(s.value.range()));
            if let (Ok(name), Ok(value)) = (name, value) {
                map.append(name, value);
            }
        }
    }
}

/// The length a `Content-Length` line gives (its first value; the parser has checked that
/// any others agree), and where its value is in `bytes` when it is that number written
/// plainly: digits only, no leading zero.
fn length_line(bytes: &Bytes, s: &HeaderSpan) -> KeptLength {
    let value = s.value.get(bytes);
    let first = value.split(|b| *b == b',').next().unwrap_or_default();
    let n = tether_core::h1::response::parse_length(first.trim_ascii())?;
    let plain =
        value.iter().all(u8::is_ascii_digit) && (value == b"0" || value.first() != Some(&b'0'));
    Some((n, plain.then(|| s.value.range())))
}

/// The response's map: only the framing line Tether keeps, for `framing` — the server's
/// (validated) length for a length-framed body, its kept length for a bodiless one. The
/// server's own value is shared when it is the number written plainly (no copy).
/// The map has room for the lines too, and for the request id.
pub(super) fn framing_map(
    lines: &ServerLines,
    framing: BodyFraming,
    kept: KeptLength,
) -> HeaderMap {
    let (bytes, mut map) = (&lines.bytes, crate::header_maps::take(lines.spans.len() + 2));
    let length = match framing {
        BodyFraming::Length(n) => Some(n),
        BodyFraming::NoBody => kept.as_ref().map(|(n, _)| *n),
        BodyFraming::Chunked | BodyFraming::UntilClose => None,
    };
    if let Some(n) = length {
        let as_sent = kept.filter(|(k, _)| *k == n).and_then(|(_, plain)| plain);
        let value = as_sent.and_then(|r| HeaderValue::from_maybe_shared(bytes.slice(r)).ok());
        map.insert(http::header::CONTENT_LENGTH, value.unwrap_or_else(|| HeaderValue::from(n)));
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_found_in_any_case_and_only_as_a_whole_name() {
        let lines = ServerLines::of_response(
            "HTTP/1.1 200 OK\r\nX-Request-Id: s\r\nX-Request-Ids: t\r\nConnection: X-Hop\r\nX-Hop: 1\r\n\r\n",
        );
        // (name asked, found)
        let rows = [("x-request-id", true), ("x-request-ids", true), ("x-request", false)];
        for (name, found) in rows {
            assert_eq!(lines.has(&HeaderName::from_static(name)), found, "{name}");
        }
        assert!(!lines.has(&HeaderName::from_static("x-hop")), "named by Connection: left out");
        assert!(!lines.has(&HeaderName::from_static("connection")), "hop-by-hop: left out");
    }

    #[test]
    fn the_written_length_is_that_of_the_lines_as_written() {
        let lines = ServerLines::of_response("HTTP/1.1 200 OK\r\nA:1\r\nBb:   22  \r\n\r\n");
        let got: Vec<(&[u8], &[u8])> = lines.iter().collect();
        assert_eq!(got, [(&b"A"[..], &b"1"[..]), (b"Bb", b"22")], "values without their spaces");
        assert_eq!(lines.written_len(), "A: 1\r\n".len() + "Bb: 22\r\n".len());
    }
}
