//! Raw HTTP/1.x over TCP, for requests no client library would send: the test writes the
//! exact bytes, then reads what came back, parsed into responses, and whether the server
//! closed the connection.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long to wait for responses, or for the server to close: 5 s.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// One response as received.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Lowercased names, values as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Everything a connection received after the test's bytes.
#[derive(Debug, Clone)]
pub struct Conversation {
    pub replies: Vec<Reply>,
    /// Bytes after the last complete response (a response cut short, or not HTTP at all).
    pub trailing: Vec<u8>,
    /// Whether the server closed the connection (EOF or reset) within [`DEADLINE`].
    pub closed: bool,
    /// Every byte received, for failure messages.
    pub raw: Vec<u8>,
}

/// A connection to write raw bytes to and read responses from.
pub struct RawClient {
    stream: TcpStream,
    raw: Vec<u8>,
    /// Received bytes not yet returned as a [`Reply`].
    buf: Vec<u8>,
    closed: bool,
}

// === impl Reply ===

impl Reply {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Whether a `Connection` header carries the `close` token.
    pub fn says_close(&self) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == "connection")
            .any(|(_, v)| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }
}

// === impl Conversation ===

impl Conversation {
    pub fn statuses(&self) -> Vec<u16> {
        self.replies.iter().map(|r| r.status).collect()
    }

    /// A one-line account for failure messages.
    pub fn summary(&self) -> String {
        let text = String::from_utf8_lossy(&self.raw);
        let shown: String = text.chars().take(400).collect();
        format!(
            "statuses {:?}, Connection: close on first {}, closed {}, received {:?}",
            self.statuses(),
            self.replies.first().is_some_and(Reply::says_close),
            self.closed,
            shown
        )
    }
}

// === impl RawClient ===

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Self { stream, raw: Vec::new(), buf: Vec::new(), closed: false }
    }

    /// Writes `bytes`; false when the server had already closed (its answer can still be
    /// read) or stopped reading for [`DEADLINE`].
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        let write = self.stream.write_all(bytes);
        matches!(tokio::time::timeout(DEADLINE, write).await, Ok(Ok(())))
    }

    /// Reads until `n` more responses have arrived, the connection closes or [`DEADLINE`]
    /// passes, and returns the responses that arrived (maybe fewer than `n`).
    pub async fn replies(&mut self, n: usize) -> Vec<Reply> {
        let end = Instant::now() + DEADLINE;
        let mut replies = Vec::new();
        loop {
            while replies.len() < n {
                let Some((reply, used)) = parse_reply(&self.buf, self.closed) else { break };
                self.buf.drain(..used);
                replies.push(reply);
            }
            if replies.len() == n || self.closed || !self.read_until(end).await {
                return replies;
            }
        }
    }

    /// Reads until the server closes or [`DEADLINE`] passes; everything received.
    pub async fn finish(mut self) -> Conversation {
        let end = Instant::now() + DEADLINE;
        while !self.closed && self.read_until(end).await {}
        let mut replies = Vec::new();
        while let Some((reply, used)) = parse_reply(&self.buf, self.closed) {
            self.buf.drain(..used);
            replies.push(reply);
        }
        Conversation { replies, trailing: self.buf, closed: self.closed, raw: self.raw }
    }

    /// One read before `end`; false when the deadline passed first.
    async fn read_until(&mut self, end: Instant) -> bool {
        let mut chunk = [0; 16 * 1024];
        match tokio::time::timeout_at(end, self.stream.read(&mut chunk)).await {
            Err(_) => false,
            Ok(Ok(0) | Err(_)) => {
                self.closed = true;
                true
            }
            Ok(Ok(n)) => {
                self.raw.extend_from_slice(&chunk[..n]);
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }
}

/// Connects, writes `bytes`, and reads until the server closes or [`DEADLINE`] passes.
pub async fn converse(addr: SocketAddr, bytes: &[u8]) -> Conversation {
    let mut client = RawClient::connect(addr).await;
    client.send(bytes).await;
    client.finish().await
}

/// The first complete response in `buf` and the bytes it used. A response without length
/// (no `content-length`, not chunked) runs to the end of the connection, so it is complete
/// only once `eof`.
fn parse_reply(buf: &[u8], eof: bool) -> Option<(Reply, usize)> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status = status_line.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut reply = Reply { status, headers, body: Vec::new() };
    let body_at = head_end + 4;
    let rest = &buf[body_at..];
    if reply.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let (body, used) = dechunk(rest)?;
        reply.body = body;
        return Some((reply, body_at + used));
    }
    let len = match reply.header("content-length") {
        Some(v) => v.parse::<usize>().ok()?,
        None if matches!(status, 100..=199 | 204 | 304) => 0,
        None if eof => rest.len(),
        None => return None,
    };
    reply.body = rest.get(..len)?.to_vec();
    Some((reply, body_at + len))
}

/// A complete chunked body at the start of `buf` (trailers skipped) and the bytes it used.
fn dechunk(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line_end = at + buf[at..].windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&buf[at..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // Trailers, up to the empty line.
            let end = buf[at..].windows(2).position(|w| w == b"\r\n")?;
            if end == 0 {
                return Some((body, at + 2));
            }
            let trailers_end = buf[at..].windows(4).position(|w| w == b"\r\n\r\n")?;
            return Some((body, at + trailers_end + 4));
        }
        body.extend_from_slice(buf.get(at..at + size)?);
        at += size + 2;
    }
}
