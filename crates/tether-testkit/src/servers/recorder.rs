//! An upstream that records exactly what reaches it, for request-smuggling tests.
//!
//! It speaks HTTP/1.1 itself, with a strict parser of its own ([`parse`]), rather than
//! through hyper: a proxy's framing mistakes must show up here as they are, not be smoothed
//! over by a second lenient parser. For every connection it keeps every byte received, and
//! it sorts those bytes into:
//!
//! - [`Recording::requests`]: complete, well-formed requests (head and body);
//! - [`Recording::truncated`]: well-formed heads whose body was cut off by the connection
//!   closing (a proxy aborting a request it could not finish);
//! - [`Recording::malformed`]: bytes that can never be a well-formed request (a smuggled
//!   prefix such as `GPOST`, raw tunnelled bytes, ambiguous framing). The recorder answers
//!   them `400` and closes;
//! - bytes not (yet) part of a complete request on a connection still open
//!   ([`RecordedConnection::unconsumed`]).
//!
//! [`Recording::problems`] lists everything a smuggling test should fail on.
//!
//! Every complete request is answered `200` with `x-server: <name>`, `content-length`, and
//! the body `"<METHOD> <target>\n"` (empty, `content-length: 0`, for `HEAD`), so a client can tell responses apart
//! by target. A target starting with `/early` is answered as soon as its head has arrived,
//! before the body is read (the body is still read afterwards, to keep the framing). The
//! connection closes after a request with `Connection: close` or of HTTP/1.0.

mod parse;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use self::parse::{Framing, Head, Step};
use super::{ANY_LOCAL_PORT, Behaviour, Counters, Server};

/// Bytes read from a connection at a time: 16 KiB.
const READ_LEN: usize = 16 * 1024;

/// Targets starting with this are answered before their body is read.
pub const EARLY_PREFIX: &str = "/early";

/// Behaviour of a [`RecorderServer`]: answers and records as described in the module docs.
#[derive(Debug)]
pub struct Recorder {
    name: Arc<str>,
    /// The one shared record: connection tasks write through `send_modify`, tests read
    /// snapshots (no std lock; the crate's clippy config bans them).
    recording: watch::Sender<Recording>,
}

/// A strict HTTP/1.1 server recording every byte and request it receives.
pub type RecorderServer = Server<Recorder>;

/// Everything a [`Recorder`] has received since it was first started.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    /// Complete, well-formed requests in the order they completed.
    pub requests: Vec<RecordedRequest>,
    /// Well-formed heads whose body never completed because the connection closed; `body`
    /// holds what had arrived (decoded as far as possible for a chunked body: empty).
    pub truncated: Vec<RecordedRequest>,
    /// Bytes that were not a well-formed request.
    pub malformed: Vec<Malformed>,
    /// Every accepted connection, in accept order (`connection` fields index this).
    pub connections: Vec<RecordedConnection>,
}

/// One request as the recorder parsed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// Index of the connection in [`Recording::connections`].
    pub connection: usize,
    pub method: String,
    pub target: String,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    /// Names as sent, values trimmed of surrounding whitespace, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, de-chunked when it was chunked.
    pub body: Vec<u8>,
}

/// Bytes the recorder could not accept as a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// Index of the connection in [`Recording::connections`].
    pub connection: usize,
    /// What was wrong with them.
    pub reason: String,
    /// The offending bytes, from the start of the request they were meant to be.
    pub bytes: Vec<u8>,
}

/// One connection's bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordedConnection {
    /// Every byte received, in order.
    pub raw: Vec<u8>,
    /// How many of `raw` have been accounted for (a request, a truncated one, malformed).
    pub consumed: usize,
    /// Whether the connection is still open.
    pub open: bool,
}

// === impl RecorderServer ===

impl Server<Recorder> {
    /// Starts a recorder named `name` (sent as `x-server`) on `127.0.0.1:0`.
    pub fn start(name: &str) -> io::Result<Self> {
        Self::start_on(name, ANY_LOCAL_PORT)
    }

    /// Starts a recorder named `name` on `addr`.
    pub fn start_on(name: &str, addr: SocketAddr) -> io::Result<Self> {
        if !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "name: visible ASCII only"));
        }
        let (recording, _) = watch::channel(Recording::default());
        Self::start_with(Recorder { name: name.into(), recording }, addr)
    }

    /// A snapshot of everything received so far.
    pub fn recording(&self) -> Recording {
        self.behaviour().recording.borrow().clone()
    }
}

// === impl Recording ===

impl Recording {
    /// Targets of the complete requests, in order.
    pub fn targets(&self) -> Vec<&str> {
        self.requests.iter().map(|r| r.target.as_str()).collect()
    }

    /// What a smuggling test fails on, one line each: malformed bytes, and bytes on an open
    /// connection that are not part of a complete request. Empty when everything received
    /// was well-formed and accounted for.
    pub fn problems(&self) -> Vec<String> {
        let malformed = self.malformed.iter().map(|m| {
            format!(
                "connection {}: malformed ({}): {:?}",
                m.connection,
                m.reason,
                String::from_utf8_lossy(&m.bytes)
            )
        });
        let unconsumed = self.connections.iter().enumerate().filter_map(|(i, c)| {
            let rest = c.unconsumed();
            (!rest.is_empty()).then(|| {
                format!("connection {i}: unconsumed bytes {:?}", String::from_utf8_lossy(rest))
            })
        });
        malformed.chain(unconsumed).collect()
    }

    /// Whether any byte received, anywhere, contains `needle` (e.g. a smuggled `GPOST`).
    pub fn raw_contains(&self, needle: &[u8]) -> bool {
        self.connections.iter().any(|c| c.raw.windows(needle.len()).any(|w| w == needle))
    }
}

// === impl RecordedRequest ===

impl RecordedRequest {
    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_values(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
            .collect()
    }
}

// === impl RecordedConnection ===

impl RecordedConnection {
    /// Bytes received but not (yet) part of a complete request.
    pub fn unconsumed(&self) -> &[u8] {
        &self.raw[self.consumed.min(self.raw.len())..]
    }
}

// === impl Recorder ===

impl Behaviour for Recorder {
    async fn serve(self: Arc<Self>, stream: TcpStream, counters: Arc<Counters>) {
        let mut id = 0;
        self.recording.send_modify(|r| {
            id = r.connections.len();
            r.connections.push(RecordedConnection { open: true, ..Default::default() });
        });
        let mut connection = Connection { recorder: &self, counters: &counters, id, stream };
        connection.run().await;
        self.recording.send_modify(|r| r.connections[id].open = false);
    }
}

/// A request whose head has been parsed and whose body is still coming.
struct Pending {
    head: Head,
    head_len: usize,
    answered: bool,
}

/// One connection being served.
struct Connection<'a> {
    recorder: &'a Recorder,
    counters: &'a Counters,
    id: usize,
    stream: TcpStream,
}

impl Connection<'_> {
    /// Reads, parses and answers until the connection ends or something malformed arrives.
    async fn run(&mut self) {
        // Bytes received and not yet part of a complete request.
        let mut buf = Vec::new();
        let mut pending: Option<Pending> = None;
        let mut chunk = vec![0; READ_LEN];
        loop {
            match self.advance(&mut buf, &mut pending).await {
                Advance::Again => continue,
                Advance::Close => return,
                Advance::NeedMore => {}
            }
            let n = match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return self.ended(&buf, pending),
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            self.recorder.recording.send_modify(|r| {
                r.connections[self.id].raw.extend_from_slice(&chunk[..n]);
            });
        }
    }

    /// Takes the next step on the buffered bytes: a head, then its body, then the answer.
    async fn advance(&mut self, buf: &mut Vec<u8>, pending: &mut Option<Pending>) -> Advance {
        if pending.is_none() {
            match parse::head(buf) {
                Step::Partial => return Advance::NeedMore,
                Step::Malformed(reason) => return self.reject(buf, reason).await,
                Step::Done(head, head_len) => {
                    self.counters.record_request();
                    let early = head.target.starts_with(EARLY_PREFIX);
                    if early && !self.answer(&head).await {
                        return Advance::Close;
                    }
                    *pending = Some(Pending { head, head_len, answered: early });
                }
            }
        }
        let Some(p) = pending.take() else {
            return Advance::Again;
        };
        let (body, body_len) = match parse::body(p.head.framing, &buf[p.head_len..]) {
            Step::Partial => {
                *pending = Some(p);
                return Advance::NeedMore;
            }
            Step::Malformed(reason) => return self.reject(buf, reason).await,
            Step::Done(body, body_len) => (body, body_len),
        };
        let used = p.head_len + body_len;
        buf.drain(..used);
        let request = self.request(&p.head, body);
        self.recorder.recording.send_modify(|r| {
            r.connections[self.id].consumed += used;
            r.requests.push(request);
        });
        if !p.answered && !self.answer(&p.head).await {
            return Advance::Close;
        }
        if p.head.close {
            let _ = self.stream.shutdown().await;
            return Advance::Close;
        }
        Advance::Again
    }

    /// Writes the `200` for `head`; false when the client is gone.
    async fn answer(&mut self, head: &Head) -> bool {
        // A HEAD answer declares no length: nothing a client would wait for.
        let body = if head.method == "HEAD" {
            String::new()
        } else {
            format!("{} {}\n", head.method, head.target)
        };
        let len = body.len();
        let close = if head.close { "connection: close\r\n" } else { "" };
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {len}\r\n\
             x-server: {}\r\n{close}\r\n{body}",
            self.recorder.name
        );
        self.stream.write_all(response.as_bytes()).await.is_ok()
    }

    /// Records `buf` as malformed, answers `400` and closes.
    async fn reject(&mut self, buf: &[u8], reason: String) -> Advance {
        self.recorder.recording.send_modify(|r| {
            r.connections[self.id].consumed = r.connections[self.id].raw.len();
            r.malformed.push(Malformed { connection: self.id, reason, bytes: buf.to_vec() });
        });
        let answer = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        let _ = self.stream.write_all(answer).await;
        let _ = self.stream.shutdown().await;
        Advance::Close
    }

    /// The peer closed: a pending request is truncated, leftover head bytes are malformed.
    fn ended(&self, buf: &[u8], pending: Option<Pending>) {
        self.recorder.recording.send_modify(|r| {
            r.connections[self.id].consumed = r.connections[self.id].raw.len();
            if let Some(p) = pending {
                let body = match p.head.framing {
                    Framing::Length(_) => buf[p.head_len..].to_vec(),
                    Framing::Chunked => Vec::new(),
                };
                r.truncated.push(self.request(&p.head, body));
            } else if !buf.is_empty() {
                let reason = "connection ended inside a request head".to_owned();
                r.malformed.push(Malformed { connection: self.id, reason, bytes: buf.to_vec() });
            }
        });
    }

    fn request(&self, head: &Head, body: Vec<u8>) -> RecordedRequest {
        RecordedRequest {
            connection: self.id,
            method: head.method.clone(),
            target: head.target.clone(),
            version: head.version.to_owned(),
            headers: head.headers.clone(),
            body,
        }
    }
}

/// What [`Connection::advance`] leaves the read loop to do.
enum Advance {
    /// Parse again: more may be complete in the buffer.
    Again,
    /// Read more bytes first.
    NeedMore,
    /// The connection is over.
    Close,
}
