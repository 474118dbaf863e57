//! Protocol upgrades (WebSocket and others): once the server has answered 101, the two
//! upgraded connections are joined and bytes copied both ways until either side closes.
//! Nothing is tunnelled before the server's 101: until then it is an ordinary request.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use super::body::Held;
use crate::upstream::stream::Stream;

/// A client connection, as the tunnel takes it over (plain TCP or TLS).
pub trait ClientIo: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> ClientIo for T {}

/// The client's connection after the `101` has been written to it, and the bytes the client
/// sent after its request head (they go to the server first).
pub struct Upgraded {
    /// The connection.
    pub io: Box<dyn ClientIo>,
    /// Bytes read past the request head.
    pub early: Bytes,
}

impl std::fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgraded").field("early", &self.early.len()).finish_non_exhaustive()
    }
}

/// The client's side of an upgrade: the connection's loop sends it once it has written the
/// server's `101` (and drops it when no `101` came).
pub type ClientUpgrade = oneshot::Receiver<Upgraded>;

/// Joins the client's upgraded connection and the server's (its connection, and the bytes
/// it sent after its `101` head, which go to the client first) in a background task. The
/// in-flight guard lives as long as the tunnel, so least-connection balancing sees it, and
/// so does the drain token: a graceful shutdown lets open tunnels run for up to
/// `grace_period`, as it does requests, and ends them when it runs out. A listener closed by
/// a reload ends its tunnels when its grace period runs out: it stops waiting for their
/// tokens (the token's channel closes).
pub fn tunnel(
    client: ClientUpgrade,
    server: (Stream, Bytes),
    guard: (Held, tokio::sync::mpsc::Sender<()>),
) {
    tokio::spawn(async move {
        let joined = async {
            match client.await {
                Ok(c) => copy(c, server).await,
                Err(_) => {
                    tracing::debug!("upgrade did not complete: the client's connection ended")
                }
            }
        };
        tokio::select! {
            () = joined => {}
            () = guard.1.closed() => tracing::debug!("tunnel ended: its listener was closed"),
        }
        drop(guard);
    });
}

async fn copy(client: Upgraded, (mut server, early): (Stream, Bytes)) {
    let Upgraded { io: mut c, early: client_early } = client;
    let copied = async {
        if !client_early.is_empty() {
            server.write_all(&client_early).await?;
        }
        if !early.is_empty() {
            c.write_all(&early).await?;
        }
        tokio::io::copy_bidirectional(&mut c, &mut server).await
    };
    if let Err(e) = copied.await {
        tracing::debug!(error = %e, "tunnel closed with an error");
    }
}
