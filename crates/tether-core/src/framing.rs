//! Watching the request heads of an HTTP/1 connection as its bytes arrive, independently of
//! the HTTP server that parses them, to see what the server's parser hides: hyper drops a
//! `Content-Length` that comes with `Transfer-Encoding` before the request reaches Tether,
//! yet Tether's framing policy refuses such a request outright (`400`).
//!
//! [`HeadScan`] follows the connection's framing — each head (parsed by httparse, the parser
//! hyper uses), then its body by `Content-Length` or by chunks — and reports the index of
//! every head that carries both framing headers. Where it cannot follow (HTTP/2, a tunnel,
//! anything it does not understand) it switches itself off: the server's own parser still
//! decides, and a head the scan did not judge is simply not flagged.

/// Header lines one head may have for the scan to judge it (more: the scan stops).
const MAX_HEADERS: usize = 128;

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

    /// Feeds the next bytes read from the client; calls `flag(i)` for every head `i`
    /// (counting from 0) that has both `Content-Length` and `Transfer-Encoding`.
    pub fn feed(&mut self, mut data: &[u8], flag: &mut impl FnMut(u64)) {
        while !data.is_empty() {
            data = match self.state {
                State::Off => return,
                State::Head => self.head(data, flag),
                State::Body(left) => {
                    let n = left.min(data.len() as u64);
                    self.state = if n == left { State::Head } else { State::Body(left - n) };
                    &data[n as usize..]
                }
                State::ChunkSize => self.chunk_size(data),
                State::ChunkData(left) => {
                    let n = left.min(data.len() as u64);
                    self.state =
                        if n == left { State::ChunkEnd(2) } else { State::ChunkData(left - n) };
                    &data[n as usize..]
                }
                State::ChunkEnd(want) => {
                    let expected = if want == 2 { b'\r' } else { b'\n' };
                    if data[0] != expected {
                        self.off();
                        return;
                    }
                    self.state = if want == 2 { State::ChunkEnd(1) } else { State::ChunkSize };
                    &data[1..]
                }
                State::Trailers => self.trailers(data),
            };
        }
    }

    fn off(&mut self) {
        self.state = State::Off;
        self.partial = Vec::new();
    }

    /// Consumes a head from `data` (or keeps what there is of it); returns the rest.
    fn head<'a>(&mut self, data: &'a [u8], flag: &mut impl FnMut(u64)) -> &'a [u8] {
        if self.heads == 0 && self.partial.is_empty() && data.starts_with(b"PRI * HTTP/2.0") {
            self.off(); // HTTP/2 with prior knowledge: no HTTP/1 framing here.
            return &[];
        }
        // Usually the whole head is in this read: parse it in place.
        let (parsed, used_from_data) = if self.partial.is_empty() {
            match parse_head(data) {
                Parsed::Complete(len, _) if len > self.max_head => {
                    self.off();
                    return &[];
                }
                Parsed::Complete(len, framing) => (Some(framing), len),
                Parsed::Partial => (None, 0),
                Parsed::Invalid => {
                    self.off();
                    return &[];
                }
            }
        } else {
            (None, 0)
        };
        let (framing, rest) = match parsed {
            Some(f) => (f, &data[used_from_data..]),
            None => {
                let before = self.partial.len();
                let take = data.len().min(self.max_head + 1 - before.min(self.max_head + 1));
                self.partial.extend_from_slice(&data[..take]);
                match parse_head(&self.partial) {
                    Parsed::Complete(len, _) if len > self.max_head => {
                        self.off();
                        return &[];
                    }
                    Parsed::Complete(len, framing) => {
                        let rest = &data[len - before..];
                        self.partial = Vec::new();
                        (framing, rest)
                    }
                    Parsed::Partial if self.partial.len() <= self.max_head => return &[],
                    Parsed::Partial | Parsed::Invalid => {
                        self.off();
                        return &[];
                    }
                }
            }
        };
        let index = self.heads;
        self.heads += 1;
        if framing.length.is_some() && framing.transfer_encoding {
            flag(index);
        }
        self.state = match framing {
            Framing { tunnel: true, .. } => State::Off,
            Framing { transfer_encoding: true, chunked: true, .. } => State::ChunkSize,
            Framing { transfer_encoding: true, .. } => State::Off,
            Framing { length: Some(0) | None, .. } => State::Head,
            Framing { length: Some(n), .. } => State::Body(n),
        };
        if self.state == State::Off {
            self.partial = Vec::new();
        }
        rest
    }

    /// Reads a chunk-size line (`HEX[;ext]` CRLF).
    fn chunk_size<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        let Some(end) = data.iter().position(|b| *b == b'\n') else {
            self.partial.extend_from_slice(data);
            if self.partial.len() > MAX_CHUNK_LINE {
                self.off();
            }
            return &[];
        };
        if self.partial.len() + end + 1 > MAX_CHUNK_LINE {
            self.off();
            return &[];
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
        &data[end + 1..]
    }

    /// Reads trailer lines until the empty line that ends the message.
    fn trailers<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        let Some(end) = data.iter().position(|b| *b == b'\n') else {
            self.partial.extend_from_slice(data);
            if self.partial.len() > self.max_head {
                self.off();
            }
            return &[];
        };
        if self.partial.len() + end + 1 > self.max_head {
            self.off();
            return &[];
        }
        self.partial.extend_from_slice(&data[..=end]);
        let line = std::mem::take(&mut self.partial);
        if line == b"\r\n" || line == b"\n" {
            self.state = State::Head;
        }
        &data[end + 1..]
    }
}

/// How a head frames its body.
#[derive(Debug, Clone, Copy)]
struct Framing {
    length: Option<u64>,
    transfer_encoding: bool,
    chunked: bool,
    /// `Upgrade` or `CONNECT`: the bytes after it may be a tunnel.
    tunnel: bool,
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
        transfer_encoding: false,
        chunked: false,
        tunnel: req.method == Some("CONNECT"),
    };
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            f.transfer_encoding = true;
            let last = h.value.rsplit(|b| *b == b',').next().unwrap_or(&[]);
            f.chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let first = h.value.split(|b| *b == b',').next().unwrap_or(&[]).trim_ascii();
            let n = std::str::from_utf8(first).ok().and_then(|s| s.parse::<u64>().ok());
            match n {
                Some(n) => f.length = Some(n),
                None => return Parsed::Invalid,
            }
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            f.tunnel = true;
        }
    }
    Parsed::Complete(len, f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn flagged(stream: &[u8], split: usize) -> (Vec<u64>, bool) {
        let mut scan = HeadScan::new(65536);
        let mut seen = Vec::new();
        let (a, b) = stream.split_at(split.min(stream.len()));
        scan.feed(a, &mut |i| seen.push(i));
        scan.feed(b, &mut |i| seen.push(i));
        (seen, scan.is_off())
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
        scan.feed(&[b'a'; 200], &mut |_| {});
        assert!(scan.is_off(), "a head over the limit");
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
            let mut rest = &stream[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = cuts[i % cuts.len()].min(rest.len());
                scan.feed(&rest[..n], &mut |h| seen.push(h));
                rest = &rest[n..];
                i += 1;
            }
            prop_assert_eq!(seen, vec![1, 4, 7]);
            prop_assert!(!scan.is_off());
        }
    }
}
