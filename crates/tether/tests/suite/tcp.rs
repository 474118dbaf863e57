//! `mode = "tcp"` listeners: connections relayed as bytes to the default backend's servers,
//! balanced, `client_ip`-sticky, past a stopped server, with half-close kept; and the
//! settings a byte relay cannot honour refused by name.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

use crate::support::fixture::*;

/// Longest any one client step may take.
pub(super) const STEP: Duration = Duration::from_secs(5);

/// A TCP server that writes `NAME\n` on each connection, echoes until EOF, then shuts its
/// write side down. Aborting the task (and awaiting it) closes the listening socket.
pub(super) struct TcpEcho {
    pub(super) name: String,
    pub(super) addr: SocketAddr,
    task: JoinHandle<()>,
}

impl TcpEcho {
    pub(super) async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let greeting = format!("{name}\n");
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let greeting = greeting.clone();
                tokio::spawn(async move {
                    s.write_all(greeting.as_bytes()).await?;
                    let (mut r, mut w) = s.split();
                    tokio::io::copy(&mut r, &mut w).await?;
                    w.shutdown().await
                });
            }
        });
        Self { name: name.to_owned(), addr, task }
    }

    /// Closes the listening socket: connects to it are refused from now on.
    pub(super) async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

pub(super) async fn tcp_echoes(n: usize) -> Vec<TcpEcho> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(TcpEcho::start(&format!("t{i}")).await);
    }
    out
}

/// Listener "web" in TCP mode before backend "app" over `servers`.
pub(super) fn tcp_config(servers: &[TcpEcho], backend: Backend) -> Config {
    let backend = servers.iter().fold(backend, |b, s| b.server(ServerEntry::new(&s.name, s.addr)));
    config_on(web().set("mode", "tcp"), backend)
}

/// Connects from `from` (any loopback address) to `to`.
pub(super) async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    tokio::time::timeout(STEP, socket.connect(to))
        .await
        .unwrap_or_else(|_| panic!("connect in time"))
        .unwrap()
}

/// The name line the server behind the connection greets with.
pub(super) async fn greeting(s: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.last() != Some(&b'\n') {
        let n = tokio::time::timeout(STEP, s.read(&mut byte))
            .await
            .unwrap_or_else(|_| panic!("greeting in time"));
        assert_eq!(n.unwrap(), 1, "connection closed before the greeting: {line:?}");
        line.push(byte[0]);
    }
    String::from_utf8(line).unwrap().trim_end().to_owned()
}

/// Which server each of `n` fresh connections from `from` reached, counted.
pub(super) async fn spread(from: &str, to: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let mut s = connect_from(from, to).await;
        *seen.entry(greeting(&mut s).await).or_insert(0) += 1;
    }
    seen
}

#[tokio::test]
async fn tcp_connections_round_robin_over_the_default_backend() {
    let servers = tcp_echoes(3).await;
    let t = start(tcp_config(&servers, Backend::new())).await;
    let seen = spread("127.0.0.1", t.listener_addr("web"), 30).await;
    let want: BTreeMap<String, usize> = servers.iter().map(|s| (s.name.clone(), 10)).collect();
    assert_eq!(seen, want);
}

#[tokio::test]
async fn tcp_client_ip_affinity_keeps_each_client_on_one_server() {
    let servers = tcp_echoes(3).await;
    let t = start(tcp_config(&servers, Backend::new().sticky(Sticky::client_ip()))).await;
    let addr = t.listener_addr("web");
    for client in ["127.0.0.2", "127.0.0.3"] {
        let seen = spread(client, addr, 20).await;
        assert_eq!(seen.len(), 1, "{client} reached {seen:?}");
        assert_eq!(seen.values().sum::<usize>(), 20);
    }
}

#[tokio::test]
async fn tcp_connect_failure_moves_to_another_server_unseen_by_the_client() {
    let mut servers = tcp_echoes(3).await;
    let t = start(tcp_config(&servers, Backend::new())).await;
    let stopped = servers.remove(1);
    let gone = stopped.name.clone();
    stopped.stop().await;
    let seen = spread("127.0.0.1", t.listener_addr("web"), 12).await;
    assert!(!seen.contains_key(&gone), "{seen:?}");
    assert_eq!(seen.values().sum::<usize>(), 12, "{seen:?}");
}

#[tokio::test]
async fn tcp_half_close_still_delivers_the_whole_reply() {
    let servers = tcp_echoes(1).await;
    let t = start(tcp_config(&servers, Backend::new())).await;
    let mut s = connect_from("127.0.0.1", t.listener_addr("web")).await;
    let body = vec![b'x'; 256 * 1024];
    s.write_all(&body).await.unwrap();
    s.shutdown().await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(STEP, s.read_to_end(&mut reply))
        .await
        .unwrap_or_else(|_| panic!("reply in time"))
        .unwrap();
    assert_eq!(reply.len(), "t0\n".len() + body.len());
    assert!(reply.starts_with(b"t0\n"));
    assert!(reply[3..].iter().all(|&b| b == b'x'));
}

/// The other way round: the server sends 1 MiB and shuts its write side down at once (its
/// last bytes and its end of stream arrive together), then reads what the client still has
/// to say. The client gets every byte and then the end of stream, while its own direction
/// stays open: what it sends afterwards reaches the server whole.
#[tokio::test]
async fn tcp_server_half_close_first_passes_every_byte_and_keeps_the_client_side_open() {
    const SENT: usize = 1024 * 1024;
    const ANSWER: usize = 256 * 1024;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(&vec![b's'; SENT]).await.unwrap();
        s.shutdown().await.unwrap();
        let mut heard = Vec::new();
        s.read_to_end(&mut heard).await.unwrap();
        heard
    });
    let backend = Backend::new().server(ServerEntry::new("s0", addr));
    let t = start(config_on(web().set("mode", "tcp"), backend)).await;
    let mut s = connect_from("127.0.0.1", t.listener_addr("web")).await;
    let mut got = Vec::new();
    tokio::time::timeout(STEP, s.read_to_end(&mut got))
        .await
        .unwrap_or_else(|_| panic!("the server's bytes and end of stream in time"))
        .unwrap();
    assert_eq!(got.len(), SENT);
    assert!(got.iter().all(|&b| b == b's'));
    s.write_all(&vec![b'c'; ANSWER]).await.unwrap();
    s.shutdown().await.unwrap();
    let heard = tokio::time::timeout(STEP, server)
        .await
        .unwrap_or_else(|_| panic!("the server hears the client's end in time"))
        .unwrap();
    assert_eq!(heard.len(), ANSWER);
    assert!(heard.iter().all(|&b| b == b'c'));
}

/// A server that resets the connection right after its last bytes: the client still gets
/// them, its connection is closed, and the access log says the relay ended in an error, not
/// as a clean close.
#[tokio::test]
async fn tcp_server_reset_after_its_bytes_is_logged_as_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        // Only once the relay is connected and passing bytes (a reset before that fails
        // the connect, and the next server would be tried).
        let mut hello = [0u8; 2];
        s.read_exact(&mut hello).await.unwrap();
        s.write_all(b"partial").await.unwrap();
        s.set_zero_linger().unwrap();
    });
    let backend = Backend::new().server(ServerEntry::new("s0", addr));
    let t = start(config_on(web().set("mode", "tcp"), backend)).await;
    let mut s = connect_from("127.0.0.1", t.listener_addr("web")).await;
    s.write_all(b"hi").await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(STEP, s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the client's connection was not closed");
    assert_eq!(got, b"partial");
    server.await.unwrap();
    let logged = tether_testkit::wait::wait_until(STEP, || {
        t.logs().iter().any(|l| l["target"] == "tether::access")
    })
    .await;
    assert!(logged, "no access log line: {:?}", t.logs());
    let line = t.logs().into_iter().find(|l| l["target"] == "tether::access").unwrap();
    assert_eq!(line["end"], "error", "{line}");
    assert_eq!(line["bytes_out"], 7, "{line}");
}

#[tokio::test]
async fn tcp_listener_mistakes_are_config_errors_naming_the_key() {
    let servers = tcp_echoes(1).await;
    let rows = [
        (
            tcp_config(&servers, Backend::new()).listener(Listener::new("raw").set("mode", "udp")),
            "listeners[1].mode",
            "unknown mode",
        ),
        (
            tcp_config(&servers, Backend::new()).listener(Listener::new("raw").set("mode", "tcp")),
            "listeners[1].default_backend",
            "needs a default_backend",
        ),
        (
            tcp_config(&servers, Backend::new().sticky(Sticky::cookie())),
            "backends.app.sticky.mode",
            "use client_ip",
        ),
        (
            tcp_config(&servers, Backend::new().sticky(Sticky::header("x-user"))),
            "backends.app.sticky.mode",
            "use client_ip",
        ),
        (
            tcp_config(&servers, Backend::new())
                .route(Route::to("app").set("listeners", vec!["web"])),
            "routes[0].listeners",
            "TCP listener",
        ),
    ];
    let on_tcp = |key: &str, value: &str| {
        let backend =
            servers.iter().fold(Backend::new(), |b, s| b.server(ServerEntry::new(&s.name, s.addr)));
        config_on(web().set("mode", "tcp").set(key, value), backend)
    };
    let http_only = [
        (on_tcp("timeouts.body", "5s"), "listeners[0].timeouts.body", "an HTTP setting"),
        (
            on_tcp("rate_limit.requests_per_second", "10"),
            "listeners[0].rate_limit",
            "an HTTP setting",
        ),
        (on_tcp("tls.cert", "/nonexistent.pem"), "listeners[0].tls", "terminates no TLS"),
    ];
    for (config, key, needle) in rows.into_iter().chain(http_only) {
        let out = tether_testkit::run_check(BIN, config).unwrap();
        assert_eq!(out.code, Some(1), "{key}: {}", out.stderr);
        assert!(out.stderr.contains(key) && out.stderr.contains(needle), "{key}: {}", out.stderr);
    }
}

/// What a TCP listener's traffic looks like to an operator: `/api/v1/listeners` lists it,
/// the backend's servers count the connection and its bytes live (admin API and
/// `tether_tcp_*` metrics) while it is still open, and the access log line written when the
/// idle timeout ends it carries the bytes both ways.
#[tokio::test]
async fn tcp_traffic_shows_in_the_admin_api_metrics_and_access_log() {
    let servers = tcp_echoes(1).await;
    let listener = web().set("mode", "tcp").set("timeouts.idle", "1s");
    let backend =
        servers.iter().fold(Backend::new(), |b, s| b.server(ServerEntry::new(&s.name, s.addr)));
    let t = start(config_on(listener, backend).admin()).await;
    let c = client();
    let listeners = admin_json(&c, &t, "/api/v1/listeners").await;
    let web = &listeners["listeners"][0];
    assert_eq!(
        (web["name"].as_str(), web["mode"].as_str()),
        (Some("web"), Some("tcp")),
        "{listeners}"
    );
    assert_eq!(web["default_backend"], "app", "{listeners}");
    let bound = t.listener_addr("web").to_string();
    assert_eq!(web["bound"], serde_json::json!([bound]), "port 0 shows the chosen port");
    let app = admin_json(&c, &t, "/api/v1/backends/app").await;
    assert_eq!((app["tcp"].as_bool(), app["http"].as_bool()), (Some(true), Some(false)), "{app}");

    let mut s = connect_from("127.0.0.2", t.listener_addr("web")).await;
    assert_eq!(greeting(&mut s).await, "t0");
    s.write_all(&[b'x'; 1000]).await.unwrap();
    let mut echoed = [0u8; 1000];
    tokio::time::timeout(STEP, s.read_exact(&mut echoed)).await.unwrap().unwrap();
    // The relay counts a piece once it is written, so the client may read the echo first.
    let counted = tether_testkit::wait_until_async(STEP, || async {
        let tcp = server_json(&t, &c, "t0").await["tcp"].clone();
        (tcp["bytes_in"].as_u64(), tcp["bytes_out"].as_u64()) == (Some(1000), Some(1003))
    })
    .await;
    let tcp = server_json(&t, &c, "t0").await["tcp"].clone();
    assert!(counted, "the bytes were not counted: {tcp}");
    assert_eq!(tcp["connections_open"], 1, "{tcp}");
    assert_eq!(tcp["connections_total"], 1, "{tcp}");
    assert_eq!(
        (tcp["bytes_in"].as_u64(), tcp["bytes_out"].as_u64()),
        (Some(1000), Some(1003)),
        "{tcp}"
    );
    let bytes = "tether_tcp_bytes_total";
    let bytes_in = metric_sum(&t, bytes, &[("server", "t0"), ("direction", "in")]).await;
    let bytes_out = metric_sum(&t, bytes, &[("server", "t0"), ("direction", "out")]).await;
    assert_eq!((bytes_in, bytes_out), (1000.0, 1003.0));
    assert_eq!(metric_sum(&t, "tether_tcp_connections_total", &[("server", "t0")]).await, 1.0);

    // Nothing moves for timeouts.idle: Tether closes both sides and logs the bytes.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(STEP, s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the idle connection was not closed");
    let logged = tether_testkit::wait::wait_until(STEP, || {
        t.logs().iter().any(|l| l["target"] == "tether::access" && l["end"] == "idle")
    })
    .await;
    assert!(logged, "no access log line with end = idle: {:?}", t.logs());
    let line = t.logs().into_iter().find(|l| l["end"] == "idle").unwrap();
    assert_eq!(
        (line["bytes_in"].as_u64(), line["bytes_out"].as_u64()),
        (Some(1000), Some(1003)),
        "{line}"
    );
    assert_eq!(line["server"], "t0", "{line}");
}
