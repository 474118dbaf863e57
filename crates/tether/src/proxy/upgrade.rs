//! Protocol upgrades (WebSocket and others): once the server has answered 101, the two
//! upgraded connections are joined and bytes copied both ways until either side closes.
//! Nothing is tunnelled before the server's 101: until then it is an ordinary request.

use bytes::Bytes;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use super::body::Held;
use crate::upstream::stream::Stream;

/// Joins the client's upgraded connection and the server's (its connection, and the bytes
/// it sent after its `101` head, which go to the client first) in a background task. The
/// in-flight guard lives as long as the tunnel, so least-connection balancing sees it, and
/// so does the drain token: a graceful shutdown lets open tunnels run for up to
/// `grace_period`, as it does requests, and ends them when it runs out.
pub fn tunnel(
    client: OnUpgrade,
    server: (Stream, Bytes),
    guard: (Held, tokio::sync::mpsc::Sender<()>),
) {
    tokio::spawn(async move {
        match client.await {
            Ok(c) => copy(c, server).await,
            Err(e) => tracing::debug!(error = %e, "upgrade did not complete"),
        }
        drop(guard);
    });
}

async fn copy(client: Upgraded, (mut server, early): (Stream, Bytes)) {
    let mut c = TokioIo::new(client);
    let copied = async {
        if !early.is_empty() {
            c.write_all(&early).await?;
        }
        tokio::io::copy_bidirectional(&mut c, &mut server).await
    };
    if let Err(e) = copied.await {
        tracing::debug!(error = %e, "tunnel closed with an error");
    }
}
