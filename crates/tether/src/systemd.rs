//! systemd readiness notifications (`Type=notify`): `READY=1` once every listener is bound,
//! `RELOADING=1` … `READY=1` around a reload, `STOPPING=1` when the drain starts.
//!
//! The protocol is one datagram to the socket named by `NOTIFY_SOCKET`; when it is unset
//! (not started by systemd) every call does nothing. Abstract sockets (`@name`) are handled.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `"READY=1"`) to systemd; a no-op outside systemd. Failures are logged
/// once per call and never affect serving.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let result = UnixDatagram::unbound().and_then(|sock| {
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            send_abstract(&sock, name, state)
        } else {
            sock.send_to(state.as_bytes(), &path).map(|_| ())
        }
    });
    if let Err(e) = result {
        tracing::warn!(error = %e, state, "cannot notify systemd");
    }
}

#[cfg(target_os = "linux")]
fn send_abstract(sock: &UnixDatagram, name: &[u8], state: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(state.as_bytes(), &addr).map(|_| ())
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &str) -> std::io::Result<()> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "abstract sockets need Linux"))
}
