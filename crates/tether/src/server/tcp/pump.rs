//! The byte relay of a TCP connection: one pump per direction, each waiting for its source
//! to be readable with no buffer, then borrowing one of the worker thread's 64 KiB buffers
//! for a read and the writes that pass it on. An idle relayed connection (an MQTT client
//! between keep-alives) so holds its task and its two sockets, and no buffer; a busy one
//! moves up to 64 KiB per system call (HAProxy and NGINX default to 16 KiB buffers).
//!
//! A source's end of stream is passed on as a half-close (`shutdown(SHUT_WR)` of the other
//! socket), so a client that stops sending still gets the whole reply; when both directions
//! end within one turn of the event loop, or for the direction that ends last, none is
//! needed, as both sockets are closed right after (one system call less per connection).
//!
//! A read that does not fill the buffer tells the thread's epoll state that the socket is
//! drained (tokio's `poll_read`), which saves the read that would only say so; when epoll
//! had already reported the source's end of stream, such a read took the last bytes, which
//! saves the read that would only return 0.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

/// Bytes one read may move.
const CHUNK: usize = 64 * 1024;

/// Buffers a thread keeps for its relays; more are dropped when given back.
const KEPT: usize = 32;

thread_local! {
    static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

fn lend() -> Box<[u8]> {
    FREE.with_borrow_mut(Vec::pop).unwrap_or_else(|| vec![0u8; CHUNK].into_boxed_slice())
}

fn give_back(buf: Box<[u8]>) {
    FREE.with_borrow_mut(|free| {
        if free.len() < KEPT {
            free.push(buf);
        }
    });
}

/// What a relay counts as bytes move: its own totals and when it last moved anything (for
/// the idle timeout), and the server's shared counters.
#[derive(Debug)]
pub(super) struct Tally {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last byte moved either way.
    pub last_ms: AtomicU64,
    /// From the client.
    pub bytes_in: AtomicU64,
    /// To the client.
    pub bytes_out: AtomicU64,
    /// The server's `tether_tcp_bytes_total` counters (in, out), when it has them.
    shared: Option<(Counter, Counter)>,
}

impl Tally {
    /// Starts counting now; `shared` are the server's (in, out) counters.
    pub fn new(shared: Option<(Counter, Counter)>) -> Self {
        Tally {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            shared,
        }
    }

    /// When the connection started.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Counts `n` bytes from the client (`inbound`) or to it.
    pub fn moved(&self, inbound: bool, n: u64) {
        let (own, shared) = match (inbound, &self.shared) {
            (true, s) => (&self.bytes_in, s.as_ref().map(|s| &s.0)),
            (false, s) => (&self.bytes_out, s.as_ref().map(|s| &s.1)),
        };
        own.fetch_add(n, Ordering::Relaxed);
        if let Some(c) = shared {
            c.inc_by(n);
        }
        self.last_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// Relays `client` and `server` both ways until each direction has ended (end of stream
/// passed on as a half-close) or either fails.
///
/// When one direction ends, the other gets one turn of the event loop to end too (a client
/// that closes as soon as it has its reply, the common case with `Connection: close`): then
/// both sockets are simply closed, with no `shutdown` first. Otherwise the end is passed on
/// as a half-close and the other direction runs on. HAProxy passes a close on one turn later
/// in the same way.
pub(super) async fn relay(
    client: &mut TcpStream,
    server: &mut TcpStream,
    tally: &Tally,
) -> io::Result<()> {
    let (client_read, client_write) = client.split();
    let (server_read, server_write) = server.split();
    let up = pump(client_read, server_write, tally, true);
    let down = pump(server_read, client_write, tally, false);
    tokio::pin!(up, down);
    let (mut to, mut other) = tokio::select! {
        to = &mut up => (to?, down),
        to = &mut down => (to?, up),
    };
    tokio::task::yield_now().await;
    if let Poll::Ready(ended) =
        std::future::poll_fn(|cx| Poll::Ready(other.as_mut().poll(cx))).await
    {
        return ended.map(drop);
    }
    to.shutdown().await?;
    other.await.map(drop)
}

/// Moves bytes from `from` to `to` until `from` ends; gives `to` back then, for the caller
/// to pass the end on.
async fn pump<'a>(
    mut from: ReadHalf<'_>,
    to: WriteHalf<'a>,
    tally: &Tally,
    inbound: bool,
) -> io::Result<WriteHalf<'a>> {
    // Whether the readiness tokio keeps may be stale: after a read that filled the buffer
    // (or one through `try_read`) it stays set although the socket may be empty. A plain
    // read would then wait holding the buffer, so `try_read` asks instead (and clears it).
    let mut stale = false;
    loop {
        let ready = from.ready(Interest::READABLE | Interest::ERROR).await?;
        let mut buf = lend();
        let read = if stale {
            match from.try_read(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    give_back(buf);
                    stale = false;
                    continue;
                }
                other => other,
            }
        } else {
            // Fresh readiness: the read returns at once, and a short one clears it.
            from.read(&mut buf).await.inspect(|&n| stale = n == buf.len())
        };
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                give_back(buf);
                return Err(e);
            }
        };
        if n == 0 {
            give_back(buf);
            return Ok(to);
        }
        let sent = write_all(&to, &buf[..n]).await;
        give_back(buf);
        sent?;
        tally.moved(inbound, n as u64);
        // The source's end of stream had come before this read (epoll said so with its
        // readiness) and the read did not fill the buffer: it took everything up to the
        // end, and a read that only returns 0 would say nothing new. Not after an error (a
        // reset also reads as closed): the next read reports it.
        if ready.is_read_closed() && !ready.is_error() && n < CHUNK {
            return Ok(to);
        }
    }
}

/// Writes all of `bytes`, waiting for room as needed.
async fn write_all(to: &WriteHalf<'_>, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match to.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => to.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A connected pair of loopback sockets: (the one Tether holds, the peer's).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (ours, _) = listener.accept().await.unwrap();
        (ours, peer)
    }

    /// Bytes and a reset that are both there before the relay reads: the bytes reach the
    /// client, and the relay reports the reset as an error instead of a clean end.
    #[tokio::test]
    async fn a_reset_that_came_with_the_last_bytes_is_an_error() {
        let (mut client, mut client_peer) = pair().await;
        let (mut server, mut server_peer) = pair().await;
        server_peer.write_all(b"partial").await.unwrap();
        server_peer.set_zero_linger().unwrap();
        drop(server_peer);
        // Wait until epoll has reported the reset too (each turn lets the runtime poll it),
        // so that the relay's first read sees both at once.
        let mut ready = server.ready(Interest::READABLE | Interest::ERROR).await.unwrap();
        for _ in 0..10_000 {
            if ready.is_error() {
                break;
            }
            tokio::task::yield_now().await;
            ready = server.ready(Interest::READABLE | Interest::ERROR).await.unwrap();
        }
        assert!(ready.is_read_closed() && ready.is_error(), "{ready:?}");
        let tally = Tally::new(None);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let _ = client_peer.read_to_end(&mut got).await;
            got
        });
        let relayed = relay(&mut client, &mut server, &tally).await;
        drop(client);
        assert_eq!(relayed.map_err(|e| e.kind()), Err(io::ErrorKind::ConnectionReset));
        let got = reader.await.unwrap();
        assert!(got.is_empty() || got == b"partial", "{got:?}");
    }
}
