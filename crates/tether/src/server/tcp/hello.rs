//! TLS passthrough: the ClientHello read (not answered) within `timeouts.header`, and the
//! backend its server name routes to.

use std::time::Duration;

use tether_core::sni::{MAX_CLIENT_HELLO, Peek, peek_client_hello};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::snapshot::ListenerView;

/// Why no ClientHello could be read: the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BadHello {
    /// Not a TLS ClientHello, or a malformed one (the text says what).
    Malformed(&'static str),
    /// Over [`MAX_CLIENT_HELLO`] bytes.
    TooLarge,
    /// Not complete within `timeouts.header`.
    Slow,
    /// The client closed (or failed) before the hello was complete.
    Closed,
}

impl BadHello {
    /// The access log's `end`.
    pub fn as_str(self) -> &'static str {
        match self {
            BadHello::Malformed(_) => "bad_client_hello",
            BadHello::TooLarge => "client_hello_too_large",
            BadHello::Slow => "client_hello_timeout",
            BadHello::Closed => "closed_before_hello",
        }
    }
}

/// Room first given to a ClientHello: most fit (0.2–2 KiB); the buffer doubles up to
/// [`MAX_CLIENT_HELLO`] for larger ones, so that slow clients cost little memory.
const FIRST_READ: usize = 2048;

/// Reads from `io` until the bytes hold a whole ClientHello, within `timeout`: the bytes
/// read (to replay to the server) and the server name, lower-cased, when it has one.
pub(super) async fn read_hello<R: AsyncRead + Unpin>(
    io: &mut R,
    timeout: Duration,
) -> Result<(Vec<u8>, Option<String>), BadHello> {
    let mut buf = vec![0u8; FIRST_READ];
    let mut len = 0;
    let read = async {
        loop {
            if len == buf.len() {
                buf.resize((2 * len).min(MAX_CLIENT_HELLO), 0);
            }
            match io.read(&mut buf[len..]).await {
                Ok(0) | Err(_) => return Err(BadHello::Closed),
                Ok(n) => len += n,
            }
            match peek_client_hello(&buf[..len]) {
                Peek::NeedMore => continue,
                Peek::Hello { sni } => return Ok(sni.map(|s| s.into_owned())),
                Peek::Malformed(why) => return Err(BadHello::Malformed(why)),
                Peek::TooLarge => return Err(BadHello::TooLarge),
            }
        }
    };
    let sni = tokio::time::timeout(timeout, read).await.unwrap_or(Err(BadHello::Slow))?;
    buf.truncate(len);
    Ok((buf, sni))
}

/// The backend (index) for server name `sni`: the first SNI route of `listener` whose name
/// matches, else its default backend.
pub(super) fn route(listener: &ListenerView, sni: Option<&str>) -> Option<usize> {
    let routed = sni.and_then(|name| {
        listener.sni_routes.iter().find(|(pattern, _)| pattern.matches(name)).map(|(_, b)| *b)
    });
    routed.or(listener.default_backend)
}
