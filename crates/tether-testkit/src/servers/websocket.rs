//! A WebSocket upstream that echoes every text and binary message, for tests of upgraded
//! connections through the proxy.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;

use super::{ANY_LOCAL_PORT, Behaviour, Counters, Server};

/// Behaviour of a [`WebSocketEchoServer`]: accepts the HTTP/1.1 upgrade (counted as a
/// request) and sends every text or binary message back unchanged. Pings are answered and
/// close frames acknowledged by the WebSocket library.
#[derive(Debug)]
pub struct WebSocketEcho;

/// A WebSocket echo server.
pub type WebSocketEchoServer = Server<WebSocketEcho>;

// === impl WebSocketEchoServer ===

impl Server<WebSocketEcho> {
    /// Starts the server on `127.0.0.1:0`.
    pub fn start() -> io::Result<Self> {
        Self::start_on(ANY_LOCAL_PORT)
    }

    /// Starts the server on `addr`, e.g. the address of a stopped one.
    pub fn start_on(addr: SocketAddr) -> io::Result<Self> {
        Self::start_with(WebSocketEcho, addr)
    }
}

// === impl WebSocketEcho ===

impl Behaviour for WebSocketEcho {
    async fn serve(self: Arc<Self>, stream: TcpStream, counters: Arc<Counters>) {
        // A failed handshake (not a WebSocket request) just closes the connection.
        let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
            return;
        };
        counters.record_request();
        while let Some(Ok(message)) = socket.next().await {
            let echoed = message.is_text() || message.is_binary();
            if echoed && socket.send(message).await.is_err() {
                return;
            }
        }
    }
}
