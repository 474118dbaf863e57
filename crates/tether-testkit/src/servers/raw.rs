//! Upstreams that misbehave at the TCP level, for the proxy's error paths. None of them
//! speaks HTTP properly; each reads the request head (counted as a request) and then fails
//! in its own way.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{ANY_LOCAL_PORT, Behaviour, Counters, Server};

/// A request head larger than this is treated as garbage and not counted.
const MAX_HEAD_LEN: usize = 64 * 1024;

/// How long a server that has closed its side still reads, so the client's leftover bytes
/// don't turn our close into a reset before it has read our bytes.
const LINGER_READING: Duration = Duration::from_secs(5);

/// What [`CloseMidResponse`] sends: a head promising 1000 bytes, then only 10.
pub const TRUNCATED_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789";

/// What [`Garbage`] sends instead of a response.
pub const GARBAGE: &[u8] = b"\x00\xffthis is not HTTP\x01\x02\r\n\r\n\xfe";

/// Accepts connections and reads everything sent, but never writes a byte.
#[derive(Debug)]
pub struct Hang;

/// A server that never answers (connect succeeds, response never comes).
pub type HangServer = Server<Hang>;

/// Answers with [`TRUNCATED_RESPONSE`] and closes: the body ends 990 bytes short.
#[derive(Debug)]
pub struct CloseMidResponse;

/// A server that closes the connection in the middle of the response body.
pub type CloseMidResponseServer = Server<CloseMidResponse>;

/// Answers with [`GARBAGE`] (not HTTP) and closes.
#[derive(Debug)]
pub struct Garbage;

/// A server that answers bytes that are not an HTTP response.
pub type GarbageServer = Server<Garbage>;

/// Reads the first bytes sent, then resets the connection (TCP RST, not FIN).
#[derive(Debug)]
pub struct Reset;

/// A server that resets every connection once the client has sent something.
pub type ResetServer = Server<Reset>;

/// Gives each raw behaviour `start()` on `127.0.0.1:0` and `start_on(addr)`.
macro_rules! raw_server_constructors {
    ($($behaviour:ident),*) => {$(
        impl Server<$behaviour> {
            /// Starts the server on `127.0.0.1:0`.
            pub fn start() -> io::Result<Self> {
                Self::start_on(ANY_LOCAL_PORT)
            }

            /// Starts the server on `addr`, e.g. the address of a stopped one.
            pub fn start_on(addr: SocketAddr) -> io::Result<Self> {
                Self::start_with($behaviour, addr)
            }
        }
    )*};
}

raw_server_constructors!(Hang, CloseMidResponse, Garbage, Reset);

// === impl Behaviour ===

impl Behaviour for Hang {
    async fn serve(self: Arc<Self>, mut stream: TcpStream, counters: Arc<Counters>) {
        if read_head(&mut stream).await {
            counters.record_request();
        }
        // Keep reading (so the client never blocks on a full buffer) until it gives up.
        let _ = tokio::io::copy(&mut stream, &mut tokio::io::sink()).await;
    }
}

impl Behaviour for CloseMidResponse {
    async fn serve(self: Arc<Self>, stream: TcpStream, counters: Arc<Counters>) {
        answer_and_close(stream, &counters, TRUNCATED_RESPONSE).await;
    }
}

impl Behaviour for Garbage {
    async fn serve(self: Arc<Self>, stream: TcpStream, counters: Arc<Counters>) {
        answer_and_close(stream, &counters, GARBAGE).await;
    }
}

impl Behaviour for Reset {
    async fn serve(self: Arc<Self>, mut stream: TcpStream, counters: Arc<Counters>) {
        let mut first = [0; 64];
        if matches!(stream.read(&mut first).await, Ok(n) if n > 0) {
            counters.record_request();
        }
        // Linger zero makes the drop below send RST instead of FIN.
        let _ = stream.set_zero_linger();
    }
}

/// Reads the request head, writes `answer`, closes our side, then drains what the client
/// still sends until it closes too (bounded by [`LINGER_READING`]).
async fn answer_and_close(mut stream: TcpStream, counters: &Counters, answer: &[u8]) {
    if !read_head(&mut stream).await {
        return;
    }
    counters.record_request();
    if stream.write_all(answer).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = tokio::io::sink();
    let drain = tokio::io::copy(&mut stream, &mut sink);
    let _ = tokio::time::timeout(LINGER_READING, drain).await;
}

/// Reads until the end of a request head (`\r\n\r\n`); false when the client closed first,
/// failed, or sent more than [`MAX_HEAD_LEN`] without one.
async fn read_head(stream: &mut TcpStream) -> bool {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0; 4096];
    while head.len() <= MAX_HEAD_LEN {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return true;
        }
    }
    false
}
