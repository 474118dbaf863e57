//! systemd `Type=notify`: READY=1 once listening, RELOADING=1/READY=1 around SIGHUP,
//! STOPPING=1 on SIGTERM — observed on a real notify socket.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use tether_testkit::{KillOnDrop, ScratchDir};

use crate::support::fixture::{BIN, Backend, ServerEntry, config};

#[test]
fn tether_tells_systemd_when_it_is_ready_reloading_and_stopping() {
    let dir = ScratchDir::new("systemd").unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let cfg = dir.path().join("tether.toml");
    let app = Backend::new().server(ServerEntry::new("a", "127.0.0.1:9"));
    std::fs::write(&cfg, config(app).to_string()).unwrap();
    // Killed when the test ends, also when an assertion fails first.
    let mut child = KillOnDrop::new(
        Command::new(BIN)
            .args(["--log-format", "json", "run", "-c"])
            .arg(&cfg)
            .env("NOTIFY_SOCKET", &sock_path)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let recv = || {
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(recv(), "READY=1");
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-s", "HUP", &pid]).status().unwrap().success());
    assert_eq!(recv(), "RELOADING=1");
    assert_eq!(recv(), "READY=1");
    assert!(Command::new("kill").args(["-s", "TERM", &pid]).status().unwrap().success());
    assert_eq!(recv(), "STOPPING=1");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}
