//! Watching the request heads of an HTTP/1 connection as its bytes arrive, independently of
//! the HTTP server that parses them, to see what the server's parser hides or answers on its
//! own: hyper drops a `Content-Length` that comes with `Transfer-Encoding` before the request
//! reaches Tether, yet Tether's framing policy refuses such a request outright (`400`); and
//! hyper answers `400` to a transfer coding it does not know, where the policy (RFC 9112 §6.1)
//! answers `501`.
//!
//! [`HeadScan`] follows the connection's framing — each head (parsed by httparse, the parser
//! hyper uses), then its body by `Content-Length` or by chunks — and reports every head that
//! carries both framing headers, or a single unknown coding ([`Finding`]). Where it cannot
//! follow (HTTP/2, a tunnel, an unknown coding, anything it does not understand) it switches
//! itself off: the server's own parser still decides, and a head the scan did not judge is
//! simply not flagged.

use crate::h1::is_tchar;

/// Header lines one head may have for the scan to judge it (more: the scan stops).
const MAX_HEADERS: usize = 128;

/// What an unknown coding's `Transfer-Encoding` header is renamed to (same length, so the
/// bytes stay where they are): hyper then passes the head on, without a body, instead of
/// answering `400` itself, and Tether answers `501` by the head's index.
pub const RENAMED_TRANSFER_ENCODING: &[u8; 17] = b"tether-unknown-te";

/// What the scan found in one request head, by the head's index on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finding {
    /// Both `Content-Length` and `Transfer-Encoding`.
    BothFramings(u64),
    /// An HTTP/1.1 head with one `Transfer-Encoding` holding one coding that is not `chunked`
    /// (and no `Content-Length`): its header was renamed to [`RENAMED_TRANSFER_ENCODING`].
    UnknownCoding(u64),
}

impl Finding {
    /// The head's index on the connection.
    pub fn index(self) -> u64 {
        match self {
            Finding::BothFramings(i) | Finding::UnknownCoding(i) => i,
        }
    }

    /// Packs the finding into a `u64` (for an atomic; `u64::MAX` stays free for "none").
    pub fn encode(self) -> u64 {
        match self {
            Finding::BothFramings(i) => i << 1,
            Finding::UnknownCoding(i) => (i << 1) | 1,
        }
    }

    /// Unpacks [`Finding::encode`]; `u64::MAX` is none.
    pub fn decode(v: u64) -> Option<Finding> {
        match v {
            u64::MAX => None,
            v if v & 1 == 0 => Some(Finding::BothFramings(v >> 1)),
            v => Some(Finding::UnknownCoding(v >> 1)),
        }
    }
}

/// The longest chunk-size line (with extensions) the scan follows.
const MAX_CHUNK_LINE: usize = 4096;

/// Where the scan is in the byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// At the start of a head (or in the middle of one kept in `partial`).
    Head,
    /// Inside a body of known length: bytes still to skip.
    Body(u64),
    /// In a chunk-size line (kept in `partial`).
    ChunkSize,
    /// Inside chunk data: bytes still to skip, then the CRLF.
    ChunkData(u64),
    /// The CR LF after chunk data: how many of the two bytes are still expected.
    ChunkEnd(u8),
    /// In the trailer section after the last chunk (current line kept in `partial`).
    Trailers,
    /// Not following any more.
    Off,
}

/// The scan of one connection's client-to-server bytes.
#[derive(Debug)]
pub struct HeadScan {
    state: State,
    partial: Vec<u8>,
    max_head: usize,
    heads: u64,
}

impl HeadScan {
    /// A scan of a new connection; heads longer than `max_head` bytes stop it.
    pub fn new(max_head: usize) -> Self {
        Self { state: State::Head, partial: Vec::new(), max_head, heads: 0 }
    }

    /// Whether the scan has stopped following the connection.
    pub fn is_off(&self) -> bool {
        self.state == State::Off
    }

    /// Feeds the next bytes read from the client; calls `found` for every head that carries
    /// both `Content-Length` and `Transfer-Encoding`, or a single unknown coding — the
    /// latter's header is renamed in `data` when its name lies there (when it arrived in an
    /// earlier read, already handed on, the head is not flagged and hyper answers `400`).
    pub fn feed(&mut self, data: &mut [u8], found: &mut impl FnMut(Finding)) {
        let mut at = 0;
        while at < data.len() {
            let rest = &mut data[at..];
            at += match self.state {
                State::Off => return,
                State::Head => self.head(rest, found),
                State::Body(left) => {
                    let n = left.min(rest.len() as u64);
                    self.state = if n == left { State::Head } else { State::Body(left - n) };
                    n as usize
                }
                State::ChunkSize => self.chunk_size(rest),
                State::ChunkData(left) => {
                    let n = left.min(rest.len() as u64);
                    self.state =
                        if n == left { State::ChunkEnd(2) } else { State::ChunkData(left - n) };
                    n as usize
                }
                State::ChunkEnd(want) => {
                    let expected = if want == 2 { b'\r' } else { b'\n' };
                    if rest[0] != expected {
                        self.off();
                        return;
                    }
                    self.state = if want == 2 { State::ChunkEnd(1) } else { State::ChunkSize };
                    1
                }
                State::Trailers => self.trailers(rest),
            };
        }
    }

    fn off(&mut self) {
        self.state = State::Off;
        self.partial = Vec::new();
    }

    /// Consumes a head from `data` (or keeps what there is of it); returns the bytes used.
    fn head(&mut self, data: &mut [u8], found: &mut impl FnMut(Finding)) -> usize {
        let all = data.len();
        if self.heads == 0 && self.partial.is_empty() && data.starts_with(b"PRI * HTTP/2.0") {
            self.off(); // HTTP/2 with prior knowledge: no HTTP/1 framing here.
            return all;
        }
        // Usually the whole head is in this read: parse it in place. Otherwise `before`
        // bytes of it came in earlier reads.
        let before = self.partial.len();
        let parsed = if before == 0 {
            parse_head(data)
        } else {
            let take = data.len().min((self.max_head + 1).saturating_sub(before));
            self.partial.extend_from_slice(&data[..take]);
            parse_head(&self.partial)
        };
        let (len, framing) = match parsed {
            Parsed::Complete(len, _) if len > self.max_head => {
                self.off();
                return all;
            }
            Parsed::Complete(len, framing) => (len, framing),
            Parsed::Partial if before == 0 && data.len() <= self.max_head => {
                self.partial.extend_from_slice(data);
                return all;
            }
            Parsed::Partial if before > 0 && self.partial.len() <= self.max_head => return all,
            Parsed::Partial | Parsed::Invalid => {
                self.off();
                return all;
            }
        };
        self.partial = Vec::new();
        let used = len - before;
        let index = self.heads;
        self.heads += 1;
        if framing.length_line && framing.transfer_encoding {
            found(Finding::BothFramings(index));
        }
        if let Some(name) = framing.unknown_coding_at {
            // Renamed only where the name is in this read: earlier bytes are handed on.
            if let Some(name) = name.checked_sub(before) {
                data[name..name + RENAMED_TRANSFER_ENCODING.len()]
                    .copy_from_slice(RENAMED_TRANSFER_ENCODING);
                found(Finding::UnknownCoding(index));
            }
            self.off(); // The body's length is unknown; the connection closes after it.
            return all;
        }
        self.state = match framing {
            Framing { tunnel: true, .. } => State::Off,
            Framing { transfer_encoding: true, chunked: true, .. } => State::ChunkSize,
            Framing { transfer_encoding: true, .. } => State::Off,
            Framing { length: Some(0) | None, .. } => State::Head,
            Framing { length: Some(n), .. } => State::Body(n),
        };
        if self.state == State::Off {
            return all;
        }
        used
    }

    /// Reads a chunk-size line (`HEX[;ext]` CRLF).
    fn chunk_size(&mut self, data: &[u8]) -> usize {
        let Some(end) = data.iter().position(|b| *b == b'\n') else {
            self.partial.extend_from_slice(data);
            if self.partial.len() > MAX_CHUNK_LINE {
                self.off();
            }
            return data.len();
        };
        if self.partial.len() + end + 1 > MAX_CHUNK_LINE {
            self.off();
            return data.len();
        }
        self.partial.extend_from_slice(&data[..=end]);
        let line = std::mem::take(&mut self.partial);
        let digits: Vec<u8> = line.iter().copied().take_while(u8::is_ascii_hexdigit).collect();
        let size = std::str::from_utf8(&digits)
            .ok()
            .filter(|d| !d.is_empty() && d.len() <= 16)
            .and_then(|d| u64::from_str_radix(d, 16).ok());
        self.state = match size {
            Some(0) => State::Trailers,
            Some(n) => State::ChunkData(n),
            None => State::Off,
        };
        end + 1
    }

    /// Reads trailer lines until the empty line that ends the message.
    fn trailers(&mut self, data: &[u8]) -> usize {
        let Some(end) = data.iter().position(|b| *b == b'\n') else {
            self.partial.extend_from_slice(data);
            if self.partial.len() > self.max_head {
                self.off();
            }
            return data.len();
        };
        if self.partial.len() + end + 1 > self.max_head {
            self.off();
            return data.len();
        }
        self.partial.extend_from_slice(&data[..=end]);
        let line = std::mem::take(&mut self.partial);
        if line == b"\r\n" || line == b"\n" {
            self.state = State::Head;
        }
        end + 1
    }
}

/// How a head frames its body.
#[derive(Debug, Clone, Copy)]
struct Framing {
    length: Option<u64>,
    /// A `Content-Length` line, readable or not (with `Transfer-Encoding`, hyper ignores it
    /// whatever it holds, but the head still has both framings).
    length_line: bool,
    transfer_encoding: bool,
    chunked: bool,
    /// `Upgrade` or `CONNECT`: the bytes after it may be a tunnel.
    tunnel: bool,
    /// Where the name of the one `Transfer-Encoding` header of an HTTP/1.1 head starts, when
    /// its value is one coding that is not `chunked` and there is no `Content-Length`.
    unknown_coding_at: Option<usize>,
}

enum Parsed {
    Complete(usize, Framing),
    Partial,
    Invalid,
}

fn parse_head(bytes: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Invalid,
    };
    let mut f = Framing {
        length: None,
        length_line: false,
        transfer_encoding: false,
        chunked: false,
        tunnel: req.method == Some("CONNECT"),
        unknown_coding_at: None,
    };
    let mut codings = 0;
    let mut unknown = None;
    let mut length_invalid = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            f.transfer_encoding = true;
            codings += 1;
            let last = h.value.rsplit(|b| *b == b',').next().unwrap_or(&[]);
            f.chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
            let value = h.value.trim_ascii();
            if !f.chunked && !value.is_empty() && value.iter().all(|b| is_tchar(*b)) {
                unknown = Some(h.name.as_ptr() as usize - bytes.as_ptr() as usize);
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            f.length_line = true;
            let first = h.value.split(|b| *b == b',').next().unwrap_or(&[]).trim_ascii();
            let n = std::str::from_utf8(first).ok().and_then(|s| s.parse::<u64>().ok());
            length_invalid |= n.is_none();
            f.length = n.or(f.length);
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            f.tunnel = true;
        }
    }
    if length_invalid && !f.transfer_encoding {
        // hyper refuses it (400) itself; nothing for the scan to add.
        return Parsed::Invalid;
    }
    if codings == 1 && !f.length_line && req.version == Some(1) {
        f.unknown_coding_at = unknown;
    }
    Parsed::Complete(len, f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `stream` in two reads cut at `split`: the findings, whether the scan stopped,
    /// and the bytes as handed on.
    fn scanned(stream: &[u8], split: usize) -> (Vec<Finding>, bool, Vec<u8>) {
        let mut scan = HeadScan::new(65536);
        let mut seen = Vec::new();
        let mut bytes = stream.to_vec();
        let (a, b) = bytes.split_at_mut(split.min(stream.len()));
        scan.feed(a, &mut |f| seen.push(f));
        scan.feed(b, &mut |f| seen.push(f));
        (seen, scan.is_off(), bytes)
    }

    /// The indexes of heads with both framing headers, and whether the scan stopped.
    fn flagged(stream: &[u8], split: usize) -> (Vec<u64>, bool) {
        let (seen, off, _) = scanned(stream, split);
        let both = seen
            .iter()
            .map(|f| match f {
                Finding::BothFramings(i) => *i,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        (both, off)
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    const CL_TE: &[u8] =
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    const TE_CL: &[u8] =
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n";

    #[test]
    fn both_framing_headers_are_flagged_by_head_index() {
        let mut stream = GET.to_vec();
        stream.extend_from_slice(b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
        stream.extend_from_slice(CL_TE);
        for split in 0..stream.len() {
            assert_eq!(flagged(&stream, split), (vec![2], false), "split at {split}");
        }
        assert_eq!(flagged(TE_CL, 7).0, vec![0]);
    }

    #[test]
    fn a_length_beside_a_coding_counts_whatever_it_holds() {
        // hyper ignores a Content-Length after Transfer-Encoding without reading it: an
        // unreadable one must still make the head one with both framings.
        for length in ["abc", "", "-1", "5, x"] {
            let head = format!(
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: {length}\r\n\r\n0\r\n\r\n"
            );
            assert_eq!(flagged(head.as_bytes(), 3).0, vec![0], "{length:?}");
        }
        // Alone, an unreadable length is hyper's to refuse: not flagged.
        let alone = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n";
        assert_eq!(flagged(alone, 3).0, Vec::<u64>::new());
    }

    #[test]
    fn bodies_that_look_like_heads_are_skipped() {
        // A body (by length, then by chunks, with extensions and trailers) holding a head
        // with both headers must not be flagged.
        let inner = CL_TE;
        let mut stream =
            format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", inner.len())
                .into_bytes();
        stream.extend_from_slice(inner);
        stream
            .extend_from_slice(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
        stream.extend_from_slice(format!("{:x};ext=1\r\n", inner.len()).as_bytes());
        stream.extend_from_slice(inner);
        stream.extend_from_slice(b"\r\n0\r\nX-Trailer: y\r\n\r\n");
        stream.extend_from_slice(GET);
        for split in 0..stream.len() {
            assert_eq!(flagged(&stream, split), (vec![], false), "split at {split}");
        }
    }

    #[test]
    fn what_it_cannot_follow_switches_it_off() {
        assert!(flagged(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 3).1);
        assert!(flagged(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n\x81\x05", 100).1);
        assert!(flagged(b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 100).1);
        assert!(flagged(b"\x16\x03\x01 not http", 100).1);
        let mut scan = HeadScan::new(100);
        scan.feed(&mut [b'a'; 200], &mut |_| {});
        assert!(scan.is_off(), "a head over the limit");
    }

    #[test]
    fn a_single_unknown_coding_is_renamed_where_the_name_is_in_the_completing_read() {
        let mut stream = GET.to_vec();
        let head = b"POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n";
        stream.extend_from_slice(head);
        stream.extend_from_slice(b"hello");
        let name = GET.len() + 27;
        let head_end = GET.len() + head.len();
        assert_eq!(&stream[name..name + 17], b"Transfer-Encoding");
        let mut renamed = stream.clone();
        renamed[name..name + 17].copy_from_slice(RENAMED_TRANSFER_ENCODING);
        for split in 0..=stream.len() {
            let (seen, off, bytes) = scanned(&stream, split);
            assert!(off, "split at {split}: an unknown coding stops the scan");
            if split <= name || split >= head_end {
                assert_eq!(seen, vec![Finding::UnknownCoding(1)], "split at {split}");
                assert_eq!(bytes, renamed, "split at {split}");
            } else {
                assert_eq!(seen, vec![], "split at {split}: the name was handed on already");
                assert_eq!(bytes, stream, "split at {split}");
            }
        }
    }

    #[test]
    fn only_one_plain_unknown_coding_on_http_1_1_is_renamed() {
        let left_alone: &[&[u8]] = &[
            b"POST / HTTP/1.0\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, deflate\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip;q=1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ];
        for head in left_alone {
            let (seen, _, bytes) = scanned(head, head.len());
            let text = String::from_utf8_lossy(head);
            assert!(!seen.iter().any(|f| matches!(f, Finding::UnknownCoding(_))), "{text}");
            assert_eq!(&bytes[..], *head, "{text}");
        }
        let identity = b"PUT / HTTP/1.1\r\nHost: x\r\ntransfer-encoding:  identity \r\n\r\n";
        assert_eq!(scanned(identity, 0).0, vec![Finding::UnknownCoding(0)]);
    }

    #[test]
    fn findings_survive_their_encoding() {
        assert_eq!(Finding::decode(u64::MAX), None);
        for f in [Finding::BothFramings(0), Finding::UnknownCoding(0), Finding::UnknownCoding(7)] {
            assert_eq!(Finding::decode(f.encode()), Some(f));
        }
    }

    proptest! {
        /// However the bytes are cut into reads, the same heads are flagged.
        #[test]
        fn reads_of_any_size_give_the_same_verdict(cuts in proptest::collection::vec(1usize..40, 1..30)) {
            let mut stream = Vec::new();
            for _ in 0..3 {
                stream.extend_from_slice(GET);
                stream.extend_from_slice(CL_TE);
                stream.extend_from_slice(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
            }
            let mut scan = HeadScan::new(65536);
            let mut seen = Vec::new();
            let mut rest = &mut stream[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = cuts[i % cuts.len()].min(rest.len());
                let (read, after) = rest.split_at_mut(n);
                scan.feed(read, &mut |f| seen.push(f.index()));
                rest = after;
                i += 1;
            }
            prop_assert_eq!(seen, vec![1, 4, 7]);
            prop_assert!(!scan.is_off());
        }
    }
}
