//! A scripted raw upstream for connection-reuse tests: it answers each request with the
//! exact bytes its script gives for the request's path, then does what the script says with
//! the connection (keep it open, half-close it, close it, reset it), and logs which
//! connection, in accept order, every request arrived on and when each connection ended.
//!
//! After a half-close it keeps reading and logging request heads without answering them, so
//! a proxy that wrongly sends another request on a connection the response ended shows up in
//! the log instead of merely failing.
//!
//! Requests are read as a head plus a `Content-Length` body (chunked request bodies are not
//! understood: the tests that use this server send none).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::{ANY_LOCAL_PORT, Behaviour, Counters, Server};

/// A request head longer than this ends the connection: 64 KiB.
const MAX_HEAD_LEN: usize = 64 * 1024;

/// What to answer to a request, and what to do with the connection afterwards.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    /// Written as they are, in one write: a response, part of one, or anything else.
    pub bytes: &'static [u8],
    pub then: Then,
}

/// What a [`Scripted`] server does with a connection once it has written an [`Answer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Waits for the next request on the same connection.
    KeepOpen,
    /// Shuts its sending side (FIN) and keeps reading, logging later requests unanswered.
    HalfClose,
    /// Closes the connection (FIN), as a server closing an idle keep-alive connection does.
    Close,
    /// Resets the connection (RST, not FIN).
    Reset,
}

/// One connection as a [`Scripted`] server saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScriptedConnection {
    /// The path of every request that arrived on it, in order (answered or not).
    pub paths: Vec<String>,
    /// Whether the connection is over (closed or reset by either side).
    pub ended: bool,
}

/// Behaviour of a [`ScriptedServer`].
#[derive(Debug)]
pub struct Scripted {
    script: fn(&str) -> Answer,
    /// Every accepted connection, in accept order: connection tasks write through
    /// `send_modify`, tests read snapshots (no std lock; the crate's clippy config bans them).
    log: watch::Sender<Vec<ScriptedConnection>>,
}

/// A raw upstream answering each request path with scripted bytes.
pub type ScriptedServer = Server<Scripted>;

// === impl Answer ===

impl Answer {
    pub const fn new(bytes: &'static [u8], then: Then) -> Self {
        Self { bytes, then }
    }
}

// === impl ScriptedServer ===

impl Server<Scripted> {
    /// Starts a server answering with `script` on `127.0.0.1:0`.
    pub fn start(script: fn(&str) -> Answer) -> io::Result<Self> {
        Self::start_on(script, ANY_LOCAL_PORT)
    }

    /// Starts a server answering with `script` on `addr`.
    pub fn start_on(script: fn(&str) -> Answer, addr: SocketAddr) -> io::Result<Self> {
        let (log, _) = watch::channel(Vec::new());
        Self::start_with(Scripted { script, log }, addr)
    }

    /// A snapshot of every connection accepted so far, in accept order.
    pub fn log(&self) -> Vec<ScriptedConnection> {
        self.behaviour().log.borrow().clone()
    }

    /// The indices (into [`Server::log`]) of the connections `path` arrived on.
    pub fn connections_of(&self, path: &str) -> Vec<usize> {
        let log = self.log();
        let on = |c: &ScriptedConnection| c.paths.iter().any(|p| p == path);
        log.iter().enumerate().filter(|(_, c)| on(c)).map(|(i, _)| i).collect()
    }
}

// === impl Scripted ===

impl Behaviour for Scripted {
    async fn serve(self: Arc<Self>, mut stream: TcpStream, counters: Arc<Counters>) {
        let mut id = 0;
        self.log.send_modify(|log| {
            id = log.len();
            log.push(ScriptedConnection::default());
        });
        let mut buf = Vec::new();
        let mut answering = true;
        while let Some(path) = next_request(&mut stream, &mut buf).await {
            counters.record_request();
            let answer = answering.then(|| (self.script)(&path));
            self.log.send_modify(|log| log[id].paths.push(path));
            let Some(answer) = answer else { continue };
            if stream.write_all(answer.bytes).await.is_err() {
                break;
            }
            match answer.then {
                Then::KeepOpen => {}
                Then::HalfClose if stream.shutdown().await.is_ok() => answering = false,
                Then::HalfClose | Then::Close => break,
                Then::Reset => {
                    // Linger zero makes the drop below send RST instead of FIN.
                    let _ = stream.set_zero_linger();
                    break;
                }
            }
        }
        drop(stream);
        self.log.send_modify(|log| log[id].ended = true);
    }
}

/// Reads the next request (head and `Content-Length` body) into `buf` and takes it out;
/// its path, or `None` when the connection ended (or sent an overlong head) first.
async fn next_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if buf.len() > MAX_HEAD_LEN || !read_more(stream, buf).await {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
    let body_len = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < head_end + body_len {
        if !read_more(stream, buf).await {
            return None;
        }
    }
    buf.drain(..head_end + body_len);
    Some(path)
}

/// One read appended to `buf`; false at the end of the stream or on an error.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}
