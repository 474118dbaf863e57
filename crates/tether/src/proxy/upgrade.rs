//! Protocol upgrades (WebSocket and others): once the server has answered 101, the two
//! upgraded connections are joined and bytes copied both ways until either side closes.
//! Nothing is tunnelled before the server's 101: until then it is an ordinary request.

use super::body::Held;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;

/// Joins the client's and the server's upgraded connections in a background task. The
/// in-flight guard lives as long as the tunnel, so least-connection balancing sees it, and
/// so does the drain token: a graceful shutdown lets open tunnels run for up to
/// `grace_period`, as it does requests, and ends them when it runs out.
pub fn tunnel(client: OnUpgrade, server: OnUpgrade, guard: (Held, tokio::sync::mpsc::Sender<()>)) {
    tokio::spawn(async move {
        let (c, s) = tokio::join!(client, server);
        match (c, s) {
            (Ok(c), Ok(s)) => copy(c, s).await,
            (c, s) => tracing::debug!(
                client_ok = c.is_ok(),
                server_ok = s.is_ok(),
                "upgrade did not complete"
            ),
        }
        drop(guard);
    });
}

async fn copy(client: Upgraded, server: Upgraded) {
    let mut c = TokioIo::new(client);
    let mut s = TokioIo::new(server);
    if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut s).await {
        tracing::debug!(error = %e, "tunnel closed with an error");
    }
}
