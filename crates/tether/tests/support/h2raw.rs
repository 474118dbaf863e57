//! A hand-built HTTP/2 client (cleartext, prior knowledge) for frames no HTTP/2 library
//! would send: header values with CR, LF or NUL, connection-specific headers, uppercase
//! names, a `content-length` the DATA frames disagree with.
//!
//! Header blocks use only HPACK "literal without indexing, new name", never Huffman, so what
//! is on the wire is exactly the bytes the test wrote. Of the server's answer [`exchange`]
//! reads only the outcome of stream 1: its `:status`, a `RST_STREAM`, a `GOAWAY` or the end
//! of the connection.
//!
//! For floods and limits, [`open`] gives the raw connection instead: frames of any kind
//! (`CONTINUATION`, `RST_STREAM`, `WINDOW_UPDATE`, partial header blocks, HPACK indexing)
//! go out through the write half, and [`FrameReader`] returns every frame the server sends.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long to wait for the server's verdict on stream 1: 10 s.
pub const DEADLINE: Duration = Duration::from_secs(10);

// Frame types (RFC 9113 §6).
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

// Frame flags.
pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY: u8 = 0x20;

// Error codes of `GOAWAY` and `RST_STREAM` (RFC 9113 §7).
pub const NO_ERROR: u32 = 0x0;
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

// SETTINGS parameters (RFC 9113 §6.5.2).
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// The largest frame payload a peer must accept without asking (`SETTINGS_MAX_FRAME_SIZE`
/// default), minus one: what [`frame`] allows.
pub const MAX_PAYLOAD: usize = (1 << 14) - 1;

/// What the server did with stream 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A response head; the status when it could be decoded (see [`decode_status`]).
    Response(Option<u16>),
    /// `RST_STREAM` on stream 1 with this error code.
    Reset(u32),
    /// `GOAWAY` with this error code (a connection error).
    GoAway(u32),
    /// The connection ended without a verdict on stream 1.
    Closed,
    /// Nothing within [`DEADLINE`].
    Silent,
}

// === impl Outcome ===

impl Outcome {
    /// Whether the request was refused: reset, connection error, closed, or a 4xx answer.
    pub fn is_rejection(&self) -> bool {
        match self {
            Outcome::Reset(_) | Outcome::GoAway(_) | Outcome::Closed => true,
            Outcome::Response(Some(status)) => (400..500).contains(status),
            Outcome::Response(None) | Outcome::Silent => false,
        }
    }
}

/// One frame: 9-byte header then `payload`.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() <= MAX_PAYLOAD, "frames above the default SETTINGS_MAX_FRAME_SIZE");
    let len = u32::try_from(payload.len()).unwrap();
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An empty `SETTINGS` frame (all defaults).
pub fn settings() -> Vec<u8> {
    frame(SETTINGS, 0, 0, &[])
}

/// A complete `HEADERS` frame (`END_HEADERS`) carrying `fields`.
pub fn headers(stream: u32, fields: &[(&[u8], &[u8])], end_stream: bool) -> Vec<u8> {
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    frame(HEADERS, flags, stream, &hpack(fields))
}

/// A `DATA` frame.
pub fn data(stream: u32, bytes: &[u8], end_stream: bool) -> Vec<u8> {
    frame(DATA, if end_stream { END_STREAM } else { 0 }, stream, bytes)
}

/// The pseudo-headers of a request to `path` on authority `x`, then `extra`.
pub fn request<'a>(
    method: &'a str,
    path: &'a str,
    extra: &[(&'a [u8], &'a [u8])],
) -> Vec<(&'a [u8], &'a [u8])> {
    let mut fields: Vec<(&[u8], &[u8])> = vec![
        (b":method", method.as_bytes()),
        (b":scheme", b"http"),
        (b":path", path.as_bytes()),
        (b":authority", b"x"),
    ];
    fields.extend_from_slice(extra);
    fields
}

/// A header block of literal fields without indexing, with new names, no Huffman coding.
pub fn hpack(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00); // literal without indexing, name follows as a string
        for s in [name, value] {
            hpack_int(&mut out, 7, 0x00, s.len()); // H = 0: raw octets
            out.extend_from_slice(s);
        }
    }
    out
}

/// HPACK integer with an `n`-bit prefix (RFC 7541 §5.1); `flags` fill the rest of the octet.
fn hpack_int(out: &mut Vec<u8>, n: u32, flags: u8, value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(flags | value as u8); // below 2^n - 1 < 128: fits the prefix
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// Opens a connection to `addr`, sends the preface, an empty `SETTINGS` and `frames`, and
/// reads until the server's verdict on stream 1 (acknowledging its `SETTINGS`).
pub async fn exchange(addr: SocketAddr, frames: &[u8]) -> Outcome {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut out = PREFACE.to_vec();
    out.extend(settings());
    out.extend_from_slice(frames);
    // The server may refuse and close before taking everything; its verdict is still read.
    let _ = stream.write_all(&out).await;
    tokio::time::timeout(DEADLINE, verdict(&mut stream)).await.unwrap_or(Outcome::Silent)
}

async fn verdict(stream: &mut TcpStream) -> Outcome {
    let mut buf = Vec::new();
    let mut chunk = vec![0; 16 * 1024];
    loop {
        while let Some((kind, flags, id, payload, used)) = next_frame(&buf) {
            let outcome = match kind {
                SETTINGS if flags & ACK == 0 => {
                    let _ = stream.write_all(&frame(SETTINGS, ACK, 0, &[])).await;
                    None
                }
                HEADERS if id == 1 => Some(Outcome::Response(header_block(flags, &payload))),
                RST_STREAM if id == 1 => Some(Outcome::Reset(be_u32(payload.get(..4)))),
                GOAWAY => {
                    let (last, code) = (be_u32(payload.get(..4)), be_u32(payload.get(4..8)));
                    // A graceful GOAWAY that still covers stream 1: its answer follows.
                    (code != NO_ERROR || last == 0).then_some(Outcome::GoAway(code))
                }
                _ => None,
            };
            buf.drain(..used);
            if let Some(outcome) = outcome {
                return outcome;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Outcome::Closed,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The first complete frame in `buf`: type, flags, stream, payload, bytes used.
fn next_frame(buf: &[u8]) -> Option<(u8, u8, u32, Vec<u8>, usize)> {
    let header = buf.get(..9)?;
    let len = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
    let payload = buf.get(9..9 + len)?;
    let stream = be_u32(Some(&header[5..9])) & 0x7fff_ffff;
    Some((header[3], header[4], stream, payload.to_vec(), 9 + len))
}

fn be_u32(bytes: Option<&[u8]>) -> u32 {
    bytes.and_then(|b| <[u8; 4]>::try_from(b).ok()).map_or(u32::MAX, u32::from_be_bytes)
}

/// The status in a `HEADERS` payload, after stripping padding and priority.
fn header_block(flags: u8, payload: &[u8]) -> Option<u16> {
    decode_status(block_of(flags, payload)?)
}

/// The header block in a `HEADERS` payload: without its padding and priority.
fn block_of(flags: u8, payload: &[u8]) -> Option<&[u8]> {
    let mut block = payload;
    let mut pad = 0;
    if flags & PADDED != 0 {
        pad = usize::from(*block.first()?);
        block = &block[1..];
    }
    if flags & PRIORITY != 0 {
        block = block.get(5..)?;
    }
    block.get(..block.len().checked_sub(pad)?)
}

/// How a header block represents a field (RFC 7541 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Representation {
    /// A table entry by its index.
    Indexed,
    /// A literal the decoder adds to its dynamic table.
    Incremental,
    /// A literal not added to the table.
    WithoutIndexing,
    /// A literal no intermediary may ever add to a table.
    NeverIndexed,
}

/// A field of a header block: how it is represented, and its value as sent (`None` for an
/// indexed field, whose value is in a table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub representation: Representation,
    pub huffman: bool,
    pub value: Option<Vec<u8>>,
}

// === impl Field ===

impl Field {
    /// The value when it is made of ASCII digits only (plain or Huffman-coded).
    pub fn digits(&self) -> Option<String> {
        let value = self.value.as_deref()?;
        if self.huffman {
            huffman_digits(value)
        } else {
            value.iter().all(u8::is_ascii_digit).then(|| String::from_utf8_lossy(value).into())
        }
    }
}

/// The fields of a response `HEADERS` frame, in order (size updates skipped); `None` when
/// the block does not parse.
pub fn fields(frame: &Frame) -> Option<Vec<Field>> {
    let block = block_of(frame.flags, &frame.payload)?;
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(&first) = block.get(at) {
        let (representation, prefix) = match first {
            b if b & 0x80 != 0 => (Representation::Indexed, 7),
            b if b & 0xc0 == 0x40 => (Representation::Incremental, 6),
            b if b & 0xe0 == 0x20 => {
                at = read_int(block, at, 5)?.1; // dynamic table size update
                continue;
            }
            b if b & 0xf0 == 0x10 => (Representation::NeverIndexed, 4),
            _ => (Representation::WithoutIndexing, 4),
        };
        let (name_index, next) = read_int(block, at, prefix)?;
        at = next;
        if representation == Representation::Indexed {
            out.push(Field { representation, huffman: false, value: None });
            continue;
        }
        if name_index == 0 {
            at = read_string(block, at)?.2; // a new name
        }
        let (huffman, value, next) = read_string(block, at)?;
        at = next;
        out.push(Field { representation, huffman, value: Some(value.to_vec()) });
    }
    Some(out)
}

/// An HPACK string at `at`: whether it is Huffman-coded, its octets, and the next offset.
fn read_string(block: &[u8], at: usize) -> Option<(bool, &[u8], usize)> {
    let huffman = block.get(at)? & 0x80 != 0;
    let (len, at) = read_int(block, at, 7)?;
    let end = at.checked_add(usize::try_from(len).ok()?)?;
    Some((huffman, block.get(at..end)?, end))
}

/// The `:status` of a response header block, which servers send first: an indexed static
/// entry (200, 204, 206, 304, 400, 404, 500) or a literal with the static `:status` name
/// and a plain or Huffman-coded value. `None` for anything else (e.g. a dynamic-table hit,
/// which cannot happen on a connection's first response).
pub fn decode_status(block: &[u8]) -> Option<u16> {
    let mut at = 0;
    while block.get(at)? & 0xe0 == 0x20 {
        at = read_int(block, at, 5)?.1; // dynamic table size update
    }
    let first = *block.get(at)?;
    if first & 0x80 != 0 {
        let (index, _) = read_int(block, at, 7)?;
        const STATIC: [u16; 7] = [200, 204, 206, 304, 400, 404, 500];
        return index.checked_sub(8).and_then(|i| STATIC.get(usize::try_from(i).ok()?)).copied();
    }
    let prefix = if first & 0xc0 == 0x40 { 6 } else { 4 };
    let (name_index, at) = read_int(block, at, prefix)?;
    if name_index != 8 {
        return None;
    }
    let huffman = block.get(at)? & 0x80 != 0;
    let (len, at) = read_int(block, at, 7)?;
    let value = block.get(at..at + usize::try_from(len).ok()?)?;
    let text =
        if huffman { huffman_digits(value)? } else { String::from_utf8(value.to_vec()).ok()? };
    text.parse().ok()
}

/// An HPACK integer with an `n`-bit prefix at `at`: its value and the next offset.
fn read_int(block: &[u8], at: usize, n: u32) -> Option<(u64, usize)> {
    let max = (1u64 << n) - 1;
    let mut value = u64::from(*block.get(at)?) & max;
    let mut at = at + 1;
    if value < max {
        return Some((value, at));
    }
    let mut shift = 0;
    loop {
        let b = *block.get(at)?;
        at += 1;
        value += u64::from(b & 0x7f).checked_shl(shift)?;
        shift += 7;
        if b & 0x80 == 0 || shift > 28 {
            return Some((value, at));
        }
    }
}

/// Decodes a Huffman-coded string of ASCII digits (RFC 7541 Appendix B: '0'–'2' are the
/// 5-bit codes 0–2, '3'–'9' the 6-bit codes 25–31); `None` for any other symbol.
fn huffman_digits(bytes: &[u8]) -> Option<String> {
    let total = bytes.len() * 8;
    let bit = |p: usize| u8::from(bytes[p / 8] & (0x80 >> (p % 8)) != 0);
    let bits = |p: usize, n: usize| (p..p + n).fold(0u8, |v, p| v << 1 | bit(p));
    let mut out = String::new();
    let mut at = 0;
    loop {
        let rest = total - at;
        if rest < 8 && (at..total).all(|p| bit(p) == 1) {
            return Some(out); // end-of-string padding
        }
        if rest >= 5 && bits(at, 5) <= 2 {
            out.push(char::from(b'0' + bits(at, 5)));
            at += 5;
        } else if rest >= 6 && (25..=31).contains(&bits(at, 6)) {
            out.push(char::from(b'3' + bits(at, 6) - 25));
            at += 6;
        } else {
            return None;
        }
    }
}

// === Frame-level client ===
//
// For tests that need more than stream 1's verdict (floods, stream limits, flow control):
// build any frame, keep the connection, and read every frame the server sends.

/// The acknowledgement of the server's `SETTINGS`.
pub fn settings_ack() -> Vec<u8> {
    frame(SETTINGS, ACK, 0, &[])
}

/// A `HEADERS` frame carrying `block` (a header block fragment) as is; without
/// `END_HEADERS` unless `end_headers`, so `CONTINUATION` frames must follow.
pub fn headers_fragment(stream: u32, block: &[u8], end_stream: bool, end_headers: bool) -> Vec<u8> {
    let flags = if end_stream { END_STREAM } else { 0 } | if end_headers { END_HEADERS } else { 0 };
    frame(HEADERS, flags, stream, block)
}

/// A `CONTINUATION` frame carrying `block`.
pub fn continuation(stream: u32, block: &[u8], end_headers: bool) -> Vec<u8> {
    frame(CONTINUATION, if end_headers { END_HEADERS } else { 0 }, stream, block)
}

/// A `RST_STREAM` frame with error `code`.
pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

/// A `WINDOW_UPDATE` frame (`stream` 0: the connection window).
pub fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    frame(WINDOW_UPDATE, 0, stream, &(increment & 0x7fff_ffff).to_be_bytes())
}

/// One HPACK "literal with incremental indexing, new name" field (RFC 7541 §6.2.1): it is
/// also added to the decoder's dynamic table, at index 62 (the first dynamic entry).
pub fn hpack_indexed_literal(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x40];
    for s in [name, value] {
        hpack_int(&mut out, 7, 0x00, s.len());
        out.extend_from_slice(s);
    }
    out
}

/// One HPACK "indexed header field" (RFC 7541 §6.1): a reference to table entry `index`.
pub fn hpack_index(index: usize) -> Vec<u8> {
    let mut out = Vec::new();
    hpack_int(&mut out, 7, 0x80, index);
    out
}

/// One frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

// === impl Frame ===

impl Frame {
    /// A `HEADERS` or `DATA` frame that ends its stream.
    pub fn ends_stream(&self) -> bool {
        matches!(self.kind, DATA | HEADERS) && self.flags & END_STREAM != 0
    }

    /// A `SETTINGS` frame that is not an acknowledgement.
    pub fn is_settings(&self) -> bool {
        self.kind == SETTINGS && self.flags & ACK == 0
    }

    /// The error code of a `RST_STREAM` or `GOAWAY`.
    pub fn error_code(&self) -> Option<u32> {
        match self.kind {
            RST_STREAM => Some(be_u32(self.payload.get(..4))),
            GOAWAY => Some(be_u32(self.payload.get(4..8))),
            _ => None,
        }
    }

    /// The last stream id of a `GOAWAY`.
    pub fn last_stream(&self) -> Option<u32> {
        (self.kind == GOAWAY).then(|| be_u32(self.payload.get(..4)) & 0x7fff_ffff)
    }

    /// The parameters of a `SETTINGS` frame, in order.
    pub fn settings(&self) -> Vec<(u16, u32)> {
        if self.kind != SETTINGS {
            return Vec::new();
        }
        self.payload
            .chunks_exact(6)
            .map(|p| (u16::from_be_bytes([p[0], p[1]]), be_u32(p.get(2..6))))
            .collect()
    }

    /// The `:status` of a response `HEADERS` frame, when it could be decoded.
    pub fn status(&self) -> Option<u16> {
        (self.kind == HEADERS).then(|| header_block(self.flags, &self.payload)).flatten()
    }

    /// One line for a report, e.g. `GOAWAY(last 41, code 0xb, "too_many_resets")`.
    pub fn describe(&self) -> String {
        let code = self.error_code().unwrap_or_default();
        match self.kind {
            DATA => format!("DATA(stream {}, {} bytes)", self.stream, self.payload.len()),
            HEADERS => format!("HEADERS(stream {}, status {:?})", self.stream, self.status()),
            RST_STREAM => format!("RST_STREAM(stream {}, code {code:#x})", self.stream),
            SETTINGS => format!("SETTINGS(flags {:#x}, {:?})", self.flags, self.settings()),
            GOAWAY => format!(
                "GOAWAY(last {}, code {code:#x}, {:?})",
                self.last_stream().unwrap_or_default(),
                String::from_utf8_lossy(self.payload.get(8..).unwrap_or_default())
            ),
            WINDOW_UPDATE => format!(
                "WINDOW_UPDATE(stream {}, +{})",
                self.stream,
                be_u32(self.payload.get(..4)) & 0x7fff_ffff
            ),
            kind => format!("frame type {kind:#x} (stream {})", self.stream),
        }
    }
}

/// What [`FrameReader::next`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Frame(Frame),
    /// The connection ended (end of stream or an error such as a reset).
    Closed,
    /// Nothing complete before the deadline.
    TimedOut,
}

/// The read half of a connection, cut into frames.
#[derive(Debug)]
pub struct FrameReader {
    half: tokio::net::tcp::OwnedReadHalf,
    buf: Vec<u8>,
}

// === impl FrameReader ===

impl FrameReader {
    /// The next frame, unless the connection ends or `until` passes first.
    pub async fn next(&mut self, until: tokio::time::Instant) -> Next {
        let mut chunk = [0; 16 * 1024];
        loop {
            if let Some((kind, flags, stream, payload, used)) = next_frame(&self.buf) {
                self.buf.drain(..used);
                return Next::Frame(Frame { kind, flags, stream, payload });
            }
            match tokio::time::timeout_at(until, self.half.read(&mut chunk)).await {
                Err(_) => return Next::TimedOut,
                Ok(Ok(0) | Err(_)) => return Next::Closed,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// Connects to `addr`, sends the preface and `settings` (e.g. [`settings`]), and splits the
/// connection.
pub async fn open(
    addr: SocketAddr,
    settings: &[u8],
) -> (FrameReader, tokio::net::tcp::OwnedWriteHalf) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (half, mut write) = stream.into_split();
    write.write_all(&[PREFACE, settings].concat()).await.unwrap();
    (FrameReader { half, buf: Vec::new() }, write)
}

#[test]
fn statuses_decode_from_every_encoding_a_server_uses() {
    assert_eq!(decode_status(&[0x88]), Some(200));
    assert_eq!(decode_status(&[0x3f, 0xe1, 0x1f, 0x8c]), Some(400), "after a size update");
    // Literal with incremental indexing, Huffman: "502" = 011011 00000 00010 (16 bits) and
    // "503" = 011011 00000 011001 (17 bits) + 7 bits of padding.
    assert_eq!(decode_status(&[0x48, 0x82, 0x6c, 0x02]), Some(502));
    assert_eq!(decode_status(&[0x48, 0x83, 0x6c, 0x0c, 0xff]), Some(503));
    assert_eq!(decode_status(b"\x08\x03503"), Some(503));
    assert_eq!(decode_status(&[0x89 + 10]), None);
}
