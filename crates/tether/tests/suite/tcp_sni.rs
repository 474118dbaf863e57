//! TLS passthrough on `mode = "tcp"` listeners: `[[routes]]` with `sni` pick the backend by
//! the ClientHello's server name (exact or `*.` suffix, first match, else the default
//! backend, limited to the listeners a route names, changed by a reload) and Tether never
//! terminates TLS (the client sees the server's own certificate, the server gets the hello
//! byte for byte however it arrived); bad, oversized, slow and trickled ClientHellos are
//! closed, logged and counted; `send_proxy` tells the server the client's address; and the
//! keys that make no sense there are config errors naming the key.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tether_testkit::tls::{IssuedCert, TestCa, peer_cert_der, tls_connect, write_pem};
use tether_testkit::{ScratchDir, Tether};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::tcp::*;
use crate::support::fixture::*;

/// A TLS server presenting its own certificate (no ALPN), answering any HTTP/1.1 request
/// with `200` and the body `NAME sni=SERVERNAME` (`-` without SNI), then closing.
struct TlsServer {
    name: String,
    addr: SocketAddr,
    cert: IssuedCert,
    task: JoinHandle<()>,
}

impl TlsServer {
    /// Server `name` with a certificate from `ca` for `names`.
    async fn start(ca: &TestCa, name: &str, names: &[&str]) -> Self {
        let cert = ca.issue(names).unwrap_or_else(|e| panic!("issue {names:?}: {e}"));
        let acceptor = TlsAcceptor::from(cert.server_config(&[]).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let label = name.to_owned();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, label) = (acceptor.clone(), label.clone());
                tokio::spawn(async move { answer(acceptor, tcp, &label).await });
            }
        });
        Self { name: name.to_owned(), addr, cert, task }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One TLS connection of a [`TlsServer`]: handshake, read the request head, answer.
async fn answer(acceptor: TlsAcceptor, tcp: TcpStream, label: &str) -> io::Result<()> {
    let mut tls = acceptor.accept(tcp).await?;
    let sni = tls.get_ref().1.server_name().unwrap_or("-").to_owned();
    let (mut head, mut buf) = (Vec::new(), [0u8; 1024]);
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let body = format!("{label} sni={sni}");
    let reply = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: \
         close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(reply.as_bytes()).await?;
    tls.shutdown().await
}

/// A TCP listener "web" (`mode = "tcp"`, access log on, admin listener) with `routes`
/// (server-name pattern, backend) in order, and one backend per server, named after it.
fn passthrough(listener: Listener, routes: &[(&str, &str)], servers: &[&TlsServer]) -> Config {
    let mut config = Config::new()
        .set("grace_period", "5s")
        .set("access_log", true)
        .listener(listener.set("mode", "tcp"))
        .admin();
    for (sni, backend) in routes {
        config = config.route(Route::to(backend).set("sni", *sni));
    }
    for s in servers {
        config = config.backend(&s.name, Backend::new().server(ServerEntry::new(&s.name, s.addr)));
    }
    config
}

/// A TLS connection to `addr` for `name` (a DNS name, sent as SNI; or an IP address, which
/// rustls sends no SNI for), trusting only `ca`: the certificate the server presented and
/// the body of its answer to `GET /`.
async fn fetch(addr: SocketAddr, name: &str, ca: &TestCa) -> (CertificateDer<'static>, String) {
    let config = ca.client_config(&[]).unwrap();
    let mut tls = tls_connect(addr, name, config)
        .await
        .unwrap_or_else(|e| panic!("TLS to {addr} as {name}: {e}"));
    let cert = peer_cert_der(&tls).unwrap_or_else(|| panic!("{name}: no peer certificate"));
    tls.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(STEP, tls.read_to_end(&mut reply))
        .await
        .unwrap_or_else(|_| panic!("{name}: reply in time"))
        .unwrap_or_else(|e| panic!("{name}: reply: {e}"));
    let reply = String::from_utf8(reply).unwrap();
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    (cert, body.unwrap_or_else(|| panic!("{name}: not an HTTP reply: {reply:?}")))
}

/// `curl --resolve NAME:PORT:127.0.0.1 --cacert CA https://NAME:PORT/`: its output, or a
/// panic with its error when it fails (a refused certificate included).
async fn curl(port: u16, name: &str, ca_file: &Path) -> String {
    let args = [
        "-sS".to_owned(),
        "--noproxy".to_owned(),
        "*".to_owned(),
        "--max-time".to_owned(),
        "5".to_owned(),
        "--resolve".to_owned(),
        format!("{name}:{port}:127.0.0.1"),
        "--cacert".to_owned(),
        ca_file.display().to_string(),
        format!("https://{name}:{port}/"),
    ];
    let run =
        tokio::task::spawn_blocking(move || std::process::Command::new("curl").args(args).output());
    let out = run.await.unwrap().unwrap_or_else(|e| panic!("spawning curl: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "curl {name}: {} {stderr}", out.status);
    String::from_utf8(out.stdout).unwrap()
}

/// The access-log line of the connection from `client`, once logged.
async fn access_line_of(t: &Tether, client: SocketAddr) -> Value {
    let client = client.to_string();
    let of = |l: &Value| l["message"] == "tcp" && l["client"] == client.as_str();
    let line = t.wait_for_log(of, STEP).await;
    line.unwrap_or_else(|| panic!("no access line for {client} within {STEP:?}"))
}

/// Reads until the other side closes (end of stream or reset), within [`STEP`]; the bytes
/// that came before.
async fn until_closed(s: &mut TcpStream) -> Vec<u8> {
    let (mut got, mut buf) = (Vec::new(), [0u8; 1024]);
    loop {
        let read = tokio::time::timeout(STEP, s.read(&mut buf)).await;
        match read.unwrap_or_else(|_| panic!("connection still open after {STEP:?}: {got:?}")) {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Two TLS servers behind one TCP listener with two exact SNI routes: curl (a separate TLS
/// stack, resolving each name to Tether) and rustls each reach the server their name
/// routes to, which saw that very name as SNI (the hello was replayed), and the
/// certificate the client verified is that server's own: Tether passed TLS through.
#[tokio::test]
async fn exact_sni_routes_reach_each_tls_server_end_to_end() {
    let ca = TestCa::new("sni test CA").unwrap();
    let a = TlsServer::start(&ca, "a", &["a.example.test"]).await;
    let b = TlsServer::start(&ca, "b", &["b.example.test"]).await;
    let routes = [("a.example.test", "a"), ("b.example.test", "b")];
    let t = start(passthrough(Listener::new("web"), &routes, &[&a, &b])).await;
    let addr = t.listener_addr("web");
    let dir = ScratchDir::new("sni-curl").unwrap();
    let ca_file = write_pem(dir.path(), "ca.pem", &ca.cert_pem()).unwrap();
    for s in [&a, &b] {
        let name = format!("{}.example.test", s.name);
        let want = format!("{} sni={name}", s.name);
        assert_eq!(curl(addr.port(), &name, &ca_file).await, want, "curl {name}");
        let (cert, body) = fetch(addr, &name, &ca).await;
        assert_eq!(body, want, "rustls {name}");
        assert_eq!(cert, s.cert.cert_der(), "{name}: not {}'s own certificate", s.name);
    }
}

/// `*.example.test` after an exact `a.example.test` route: a subdomain (`c.`) and a deeper
/// one reach the suffix route's server, `a.example.test` (in any case) still takes the
/// first (exact) route, and the bare `example.test`, which a suffix pattern does not match, goes to the
/// default backend.
#[tokio::test]
async fn suffix_sni_route_takes_subdomains_after_an_earlier_exact_route() {
    let ca = TestCa::new("sni test CA").unwrap();
    let a = TlsServer::start(&ca, "a", &["a.example.test"]).await;
    let w = TlsServer::start(&ca, "w", &["*.example.test", "deep.c.example.test"]).await;
    let d = TlsServer::start(&ca, "d", &["example.test"]).await;
    let routes = [("a.example.test", "a"), ("*.example.test", "w")];
    let listener = Listener::new("web").default_backend("d");
    let t = start(passthrough(listener, &routes, &[&a, &w, &d])).await;
    let addr = t.listener_addr("web");
    let rows = [
        ("c.example.test", &w),
        ("deep.c.example.test", &w),
        ("a.example.test", &a),
        ("A.Example.TEST", &a),
        ("example.test", &d),
    ];
    for (name, server) in rows {
        let (cert, body) = fetch(addr, name, &ca).await;
        let want = format!("{} sni={name}", server.name);
        assert!(body.eq_ignore_ascii_case(&want), "{name}: {body}");
        assert_eq!(cert, server.cert.cert_der(), "{name}: not {}'s certificate", server.name);
    }
}

/// A ClientHello without SNI (rustls connecting to an IP address) and one whose name no
/// route matches both reach the listener's `default_backend`, end to end.
#[tokio::test]
async fn hello_without_sni_or_unmatched_goes_to_the_default_backend() {
    let ca = TestCa::new("sni test CA").unwrap();
    let a = TlsServer::start(&ca, "a", &["a.example.test"]).await;
    let d = TlsServer::start(&ca, "d", &["127.0.0.1", "other.example.org"]).await;
    let listener = Listener::new("web").default_backend("d");
    let t = start(passthrough(listener, &[("a.example.test", "a")], &[&a, &d])).await;
    let addr = t.listener_addr("web");
    let (cert, body) = fetch(addr, "127.0.0.1", &ca).await;
    assert_eq!(body, "d sni=-", "no SNI");
    assert_eq!(cert, d.cert.cert_der());
    let (cert, body) = fetch(addr, "other.example.org", &ca).await;
    assert_eq!(body, "d sni=other.example.org", "unmatched SNI");
    assert_eq!(cert, d.cert.cert_der());
    assert_eq!(fetch(addr, "a.example.test", &ca).await.1, "a sni=a.example.test");
}

/// A TLS handshake for `name` over a TCP connection from 127.0.0.1 to `addr`: the client's
/// address, and whether the handshake completed within [`STEP`].
async fn handshake(addr: SocketAddr, name: &str, ca: &TestCa) -> (SocketAddr, io::Result<()>) {
    let tcp = connect_from("127.0.0.1", addr).await;
    let local = tcp.local_addr().unwrap();
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let connector = TlsConnector::from(ca.client_config(&[]).unwrap());
    let done = tokio::time::timeout(STEP, connector.connect(name, tcp)).await;
    (
        local,
        done.unwrap_or_else(|_| panic!("handshake neither done nor failed in {STEP:?}")).map(drop),
    )
}

/// A TCP listener with SNI routes and no `default_backend`: a hello without SNI and one
/// matching no route are closed (the handshake fails, access log `end = "no_route"`),
/// while a routed name is served.
#[tokio::test]
async fn without_a_default_backend_unrouted_hellos_are_closed() {
    let ca = TestCa::new("sni test CA").unwrap();
    let a = TlsServer::start(&ca, "a", &["a.example.test", "127.0.0.1"]).await;
    let t = start(passthrough(Listener::new("web"), &[("a.example.test", "a")], &[&a])).await;
    let addr = t.listener_addr("web");
    for name in ["127.0.0.1", "other.example.org"] {
        let (client, done) = handshake(addr, name, &ca).await;
        assert!(done.is_err(), "{name}: the handshake completed without a route");
        let line = access_line_of(&t, client).await;
        assert_eq!(line["end"], "no_route", "{name}: {line}");
    }
    let (_, done) = handshake(addr, "a.example.test", &ca).await;
    done.unwrap_or_else(|e| panic!("a.example.test not served: {e}"));
}

/// The bytes of a TLS record header that announces `len` bytes of handshake.
fn record_header(len: u16) -> Vec<u8> {
    let [hi, lo] = len.to_be_bytes();
    vec![22, 3, 1, hi, lo]
}

/// What each bad-hello case sends, and the access log's `end` for it.
fn bad_hellos() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let random: Vec<u8> = (0u32..64).map(|i| (i * 37 + 11) as u8).collect();
    // A full 16 KiB record (its header makes it 16 KiB + 5) holding a ClientHello that
    // claims 64 KiB, then 4 KiB of its bytes.
    let mut oversized = record_header(16 * 1024);
    oversized.extend_from_slice(&[1, 0x01, 0x00, 0x00]);
    oversized.extend(std::iter::repeat_n(0xab, 4096));
    vec![
        ("plain HTTP", b"GET / HTTP/1.1\r\n\r\n".to_vec(), "bad_client_hello"),
        ("random bytes", random, "bad_client_hello"),
        ("oversized", oversized, "client_hello_too_large"),
        ("slow", record_header(512), "client_hello_timeout"),
    ]
}

/// Plain HTTP, random bytes, a ClientHello over 16 KiB and a record header followed by
/// nothing (with `timeouts.header = "300ms"`): each is closed by Tether within [`STEP`]
/// (the slow one not before 300 ms), reaching no server, logged with its `end`, and counted
/// in `tether_connections_refused_total{reason="client_hello"}`.
#[tokio::test]
async fn bad_oversized_and_slow_client_hellos_are_closed_and_counted() {
    let ca = TestCa::new("sni test CA").unwrap();
    let a = TlsServer::start(&ca, "a", &["a.example.test"]).await;
    let listener = Listener::new("web").default_backend("a").set("timeouts.header", "300ms");
    let t = start(passthrough(listener, &[("a.example.test", "a")], &[&a])).await;
    let addr = t.listener_addr("web");
    let cases = bad_hellos();
    for (what, bytes, end) in &cases {
        // Before connecting: Tether's header timeout starts at its accept.
        let sent = Instant::now();
        let mut s = connect_from("127.0.0.1", addr).await;
        let client = s.local_addr().unwrap();
        // Tether may close before it has read everything: a failed write is fine.
        let _ = s.write_all(bytes).await;
        assert_eq!(until_closed(&mut s).await, b"", "{what}: a server answered");
        if *end == "client_hello_timeout" {
            assert!(sent.elapsed() >= Duration::from_millis(300), "{what}: closed too soon");
        }
        let line = access_line_of(&t, client).await;
        assert_eq!(line["end"], *end, "{what}: {line}");
        assert_eq!(line["backend"], "-", "{what} reached a backend: {line}");
    }
    let refused = connections_refused(&t, "web", "client_hello").await;
    assert_eq!(refused, cases.len() as f64, "tether_connections_refused_total");
    assert_eq!(fetch(addr, "a.example.test", &ca).await.1, "a sni=a.example.test");
}

/// What a [`ProxyServer`] saw on a connection: the PROXY header's source address, and the
/// first bytes that followed it.
type Seen = (SocketAddr, Vec<u8>);

/// A plain TCP server that reads a PROXY header (v1 or v2, by `ppp`), reports its source
/// and the bytes right after it, then echoes everything after the header until EOF.
async fn proxy_server() -> (SocketAddr, mpsc::UnboundedReceiver<Seen>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (source, rest) = read_proxy_header(&mut s).await?;
                let _ = tx.send((source, rest.clone()));
                s.write_all(&rest).await?;
                let (mut r, mut w) = s.split();
                tokio::io::copy(&mut r, &mut w).await?;
                w.shutdown().await
            });
        }
    });
    (addr, rx, task)
}

/// Reads a whole PROXY header from `s`: its source address and the bytes read past it.
async fn read_proxy_header(s: &mut TcpStream) -> io::Result<(SocketAddr, Vec<u8>)> {
    use ppp::{HeaderResult, PartialResult};
    let (mut buf, mut chunk) = (Vec::new(), [0u8; 1024]);
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let parsed = HeaderResult::parse(&buf);
        if parsed.is_incomplete() {
            continue;
        }
        let bad = |e: &dyn std::fmt::Debug| io::Error::other(format!("PROXY header: {e:?}"));
        let (source, len) = match parsed {
            HeaderResult::V1(Ok(h)) => match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => {
                    ((a.source_address, a.source_port).into(), h.header.len())
                }
                other => return Err(bad(&other)),
            },
            HeaderResult::V2(Ok(h)) => match h.addresses {
                ppp::v2::Addresses::IPv4(a) => ((a.source_address, a.source_port).into(), h.len()),
                other => return Err(bad(&other)),
            },
            other => return Err(bad(&other)),
        };
        return Ok((source, buf[len..].to_vec()));
    }
}

/// `send_proxy = VERSION` on the default backend of a TCP listener: a client from
/// 127.0.0.2 is seen by the server as 127.0.0.2 (its very port), and its bytes relay both
/// ways after the header, the header never reaching the client.
async fn send_proxy_tells_the_server_the_client_address(version: &str) {
    let (server, mut seen, task) = proxy_server().await;
    let backend = Backend::new().set("send_proxy", version).server(ServerEntry::new("p", server));
    let t = start(config_on(web().set("mode", "tcp"), backend)).await;
    let mut s = connect_from("127.0.0.2", t.listener_addr("web")).await;
    let client = s.local_addr().unwrap();
    s.write_all(b"hello through the relay\n").await.unwrap();
    let header = tokio::time::timeout(STEP, seen.recv()).await;
    let (source, _) = header.unwrap_or_else(|_| panic!("{version}: no header in time")).unwrap();
    assert_eq!(source, client, "{version}: the header's source");
    let mut back = vec![0u8; b"hello through the relay\n".len()];
    let read = tokio::time::timeout(STEP, s.read_exact(&mut back)).await;
    read.unwrap_or_else(|_| panic!("{version}: echo in time")).unwrap();
    assert_eq!(back, b"hello through the relay\n", "{version}: the bytes after the header");
    s.shutdown().await.unwrap();
    assert_eq!(until_closed(&mut s).await, b"", "{version}: bytes past the echo");
    task.abort();
}

/// `send_proxy = "v1"`: the text header carries the client's address and port.
#[tokio::test]
async fn send_proxy_v1_tells_the_server_the_client_address() {
    send_proxy_tells_the_server_the_client_address("v1").await;
}

/// `send_proxy = "v2"`: the binary header carries the client's address and port.
#[tokio::test]
async fn send_proxy_v2_tells_the_server_the_client_address() {
    send_proxy_tells_the_server_the_client_address("v2").await;
}

/// The first flight of a rustls client for `name`: its ClientHello, as sent on the wire.
fn client_hello_bytes(ca: &TestCa, name: &str) -> Vec<u8> {
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let mut conn = rustls::ClientConnection::new(ca.client_config(&[]).unwrap(), name).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

/// An SNI route to a backend with `send_proxy = "v2"`: the server gets the PROXY header
/// (source 127.0.0.2) and right after it the client's ClientHello byte for byte, as
/// Tether read it to route.
#[tokio::test]
async fn sni_route_with_send_proxy_replays_the_hello_after_the_header() {
    let ca = TestCa::new("sni test CA").unwrap();
    let (server, mut seen, task) = proxy_server().await;
    let backend = Backend::new().set("send_proxy", "v2").server(ServerEntry::new("p", server));
    let config = Config::new()
        .listener(Listener::new("web").set("mode", "tcp"))
        .route(Route::to("pp").set("sni", "db.example.test"))
        .backend("pp", backend);
    let t = start(config).await;
    let hello = client_hello_bytes(&ca, "db.example.test");
    let mut s = connect_from("127.0.0.2", t.listener_addr("web")).await;
    let client = s.local_addr().unwrap();
    s.write_all(&hello).await.unwrap();
    let header = tokio::time::timeout(STEP, seen.recv()).await;
    let (source, after) = header.unwrap_or_else(|_| panic!("no header in time")).unwrap();
    assert_eq!(source, client, "the header's source");
    assert!(hello.starts_with(&after), "bytes after the header are not the hello's");
    // The server echoes all it got after the header: the hello must come back whole.
    let mut back = vec![0u8; hello.len()];
    let read = tokio::time::timeout(STEP, s.read_exact(&mut back)).await;
    read.unwrap_or_else(|_| panic!("hello echo in time")).unwrap();
    assert_eq!(back, hello, "the server did not get the ClientHello as sent");
    task.abort();
}

/// Listener "web" (TCP) with one SNI route (`db.example.test`) to backend "app" (servers
/// of `servers`) set up as `backend`, plus `route` keys on that route.
fn sni_on(servers: &[TcpEcho], backend: Backend, route: Route) -> Config {
    sni_config(Listener::new("web"), servers, backend, route)
}

/// [`sni_on`] with `listener` (made a TCP one, access log on) instead of a plain "web".
fn sni_config(listener: Listener, servers: &[TcpEcho], backend: Backend, route: Route) -> Config {
    let backend = servers.iter().fold(backend, |b, s| b.server(ServerEntry::new(&s.name, s.addr)));
    Config::new()
        .set("access_log", true)
        .listener(listener.set("mode", "tcp"))
        .route(route.set("sni", "db.example.test"))
        .backend("app", backend)
}

/// What `tether check` says of an HTTP key on an `sni` route.
const HTTP_KEY: &str = "an HTTP route key";

/// A route to "app" with `key` set ([`sni_on`] adds its `sni`).
fn sni_route(key: &str, value: impl Into<toml::Value>) -> Route {
    Route::to("app").set(key, value)
}

/// What `tether check` must refuse, naming the key: HTTP route keys on an `sni` route, an
/// `sni` route naming an HTTP listener, `send_proxy` on a backend HTTP reaches, and
/// HTTP-only keys on a backend of a TCP listener. And a TCP listener whose only routes are
/// SNI routes needs no `default_backend` (it checks clean).
#[tokio::test]
async fn sni_and_tcp_backend_mistakes_are_config_errors_naming_the_key() {
    let servers = tcp_echoes(1).await;
    let http = || Listener::new("h").default_backend("app");
    let mut side = toml::Table::new();
    side.insert("backend".into(), "app".into());
    side.insert("weight".into(), 100.into());
    let split = toml::Value::Array(vec![side.into()]);
    let mut rows = vec![
        (
            sni_on(&servers, Backend::new(), sni_route("path_prefix", "/api")),
            "routes[0].path_prefix",
            HTTP_KEY,
        ),
        (
            sni_on(&servers, Backend::new(), sni_route("host", "db.example.test")),
            "routes[0].host",
            HTTP_KEY,
        ),
        (sni_on(&servers, Backend::new(), sni_route("split", split)), "routes[0].split", HTTP_KEY),
        (
            sni_on(&servers, Backend::new(), sni_route("listeners", vec!["h"])).listener(http()),
            "routes[0].listeners",
            "is an HTTP listener",
        ),
        (
            sni_on(&servers, Backend::new().set("send_proxy", "v2"), Route::to("app"))
                .listener(http()),
            "backends.app.send_proxy",
            "TCP listeners only",
        ),
        (
            sni_on(&servers, Backend::new().set("send_proxy", "v1"), Route::to("app"))
                .listener(Listener::new("h").default_backend("other"))
                .route(Route::to("app").path_prefix("/x").set("listeners", vec!["h"]))
                .backend("other", Backend::new().server(ServerEntry::new("o", servers[0].addr))),
            "backends.app.send_proxy",
            "TCP listeners only",
        ),
    ];
    let tcp_backend: [(&str, toml::Value, &str); 7] = [
        ("rate_limit.requests_per_second", 10.into(), "backends.app.rate_limit"),
        ("tls", true.into(), "backends.app.tls"),
        ("http2", true.into(), "backends.app.http2"),
        ("timeouts.response", "5s".into(), "backends.app.timeouts.response"),
        ("sticky.rebound_header", "x-rebound".into(), "backends.app.sticky.rebound_header"),
        ("balance", "least_time".into(), "backends.app.balance"),
        ("hash_key", "uri".into(), "backends.app.hash_key"),
    ];
    for (key, value, named) in tcp_backend {
        let mut backend = Backend::new().set(key, value);
        if key.starts_with("sticky.") {
            backend = backend.set("sticky.mode", "client_ip");
        }
        if key == "hash_key" {
            backend = backend.balance("hash"); // Else refused for a reason not TCP's.
        }
        rows.push((sni_on(&servers, backend, Route::to("app")), named, "serves TCP listener"));
    }
    for (config, key, needle) in rows {
        let out = tether_testkit::run_check(BIN, &config).unwrap();
        assert_eq!(out.code, Some(1), "{key}: {}\n{config}", out.stderr);
        let said = out.stderr.lines().any(|l| l.contains(key) && l.contains(needle));
        assert!(said, "{key} ({needle}): {}", out.stderr);
    }
    let fine = sni_on(&servers, Backend::new().set("send_proxy", "v1"), Route::to("app"));
    let out = tether_testkit::run_check(BIN, fine).unwrap();
    assert_eq!(out.code, Some(0), "SNI routes without default_backend: {}", out.stderr);
}

/// `hello` (one TLS record, as a client sends it) re-framed as two handshake records, the
/// ClientHello split at byte `at` of its fragment.
fn two_records(hello: &[u8], at: usize) -> Vec<u8> {
    let (version, fragment) = (&hello[1..3], &hello[5..]);
    assert_eq!(fragment.len(), usize::from(u16::from_be_bytes([hello[3], hello[4]])));
    let mut out = Vec::new();
    for part in [&fragment[..at], &fragment[at..]] {
        out.push(22);
        out.extend_from_slice(version);
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// A ClientHello that arrives in three writes, and one split over two TLS records, are
/// still routed by their server name (the only route, no default backend) and reach the
/// server byte for byte as the client sent them (the server echoes them back); the access
/// log counts the hello in `bytes_in`.
#[tokio::test]
async fn hello_in_pieces_or_over_two_records_is_routed_and_replayed_exactly() {
    let ca = TestCa::new("sni test CA").unwrap();
    let servers = tcp_echoes(1).await;
    let t = start(sni_on(&servers, Backend::new(), Route::to("app"))).await;
    let hello = client_hello_bytes(&ca, "db.example.test");
    let pieces = [&hello[..3], &hello[3..40], &hello[40..]];
    let split = two_records(&hello, 50);
    let cases = [("three writes", pieces.to_vec()), ("two records", vec![&split[..]])];
    for (what, writes) in cases {
        let mut s = connect_from("127.0.0.1", t.listener_addr("web")).await;
        for w in &writes {
            s.write_all(w).await.unwrap();
            // A pause so that Tether's reads see the pieces apart: not a wait for anything.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(greeting(&mut s).await, "t0", "{what}: not routed to the server");
        let sent: Vec<u8> = writes.concat();
        let mut back = vec![0u8; sent.len()];
        let read = tokio::time::timeout(STEP, s.read_exact(&mut back)).await;
        read.unwrap_or_else(|_| panic!("{what}: echo in time")).unwrap();
        assert_eq!(back, sent, "{what}: the server did not get the bytes as sent");
        let client = s.local_addr().unwrap();
        s.shutdown().await.unwrap();
        assert_eq!(until_closed(&mut s).await, b"", "{what}: bytes past the echo");
        let line = access_line_of(&t, client).await;
        let want = (sent.len(), "t0\n".len() + sent.len());
        let got = (line["bytes_in"].as_u64(), line["bytes_out"].as_u64());
        assert_eq!(got, (Some(want.0 as u64), Some(want.1 as u64)), "{what}: {line}");
    }
}

/// A ClientHello trickled a byte every 50 ms is closed once `timeouts.header` (300 ms) is
/// over since the connection began: the limit is on the whole hello, not on each read.
#[tokio::test]
async fn trickled_client_hello_is_closed_at_the_header_timeout() {
    let ca = TestCa::new("sni test CA").unwrap();
    let servers = tcp_echoes(1).await;
    let listener = Listener::new("web").set("timeouts.header", "300ms");
    let config = sni_config(listener, &servers, Backend::new(), Route::to("app"));
    let t = start(config).await;
    let hello = client_hello_bytes(&ca, "db.example.test");
    // Before the connection exists: Tether's 300 ms start from its accept, which may read
    // the clock before this task resumes from the connect.
    let started = Instant::now();
    let s = connect_from("127.0.0.1", t.listener_addr("web")).await;
    let client = s.local_addr().unwrap();
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        for b in hello {
            tick.tick().await;
            if w.write_all(&[b]).await.is_err() {
                return;
            }
        }
    });
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(STEP, r.read(&mut buf)).await;
    let closed =
        matches!(read.unwrap_or_else(|_| panic!("still open after {STEP:?}")), Ok(0) | Err(_));
    let took = started.elapsed();
    writer.abort();
    assert!(closed, "a server answered a hello still being trickled");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "closed after {took:?}"
    );
    assert_eq!(access_line_of(&t, client).await["end"], "client_hello_timeout");
}

/// A route with `listeners = ["web"]` applies to that TCP listener only: the same name on
/// TCP listener "other" goes to that listener's `default_backend`.
#[tokio::test]
async fn sni_route_applies_only_to_the_tcp_listeners_it_names() {
    let ca = TestCa::new("sni test CA").unwrap();
    let a = TlsServer::start(&ca, "a", &["a.example.test"]).await;
    let d = TlsServer::start(&ca, "d", &["a.example.test"]).await;
    let other = Listener::new("other").set("mode", "tcp").default_backend("d");
    let route = Route::to("a").set("sni", "a.example.test").set("listeners", vec!["web"]);
    let config = passthrough(Listener::new("web"), &[], &[&a, &d]).listener(other).route(route);
    let t = start(config).await;
    let (cert, body) = fetch(t.listener_addr("web"), "a.example.test", &ca).await;
    assert_eq!((cert, body.as_str()), (a.cert.cert_der(), "a sni=a.example.test"), "on web");
    let (cert, body) = fetch(t.listener_addr("other"), "a.example.test", &ca).await;
    assert_eq!((cert, body.as_str()), (d.cert.cert_der(), "d sni=a.example.test"), "on other");
}

/// A reload that points an SNI route at another backend: new connections for that name
/// reach the new server.
#[tokio::test]
async fn reload_moves_an_sni_route_to_another_backend() {
    let ca = TestCa::new("sni test CA").unwrap();
    let a = TlsServer::start(&ca, "a", &["a.example.test"]).await;
    let b = TlsServer::start(&ca, "b", &["a.example.test"]).await;
    let mut t =
        start(passthrough(Listener::new("web"), &[("a.example.test", "a")], &[&a, &b])).await;
    let addr = t.listener_addr("web");
    assert_eq!(fetch(addr, "a.example.test", &ca).await.1, "a sni=a.example.test");
    let moved = passthrough(Listener::new("web"), &[("a.example.test", "b")], &[&a, &b]);
    let outcome = t.reload(moved).await.unwrap();
    assert_eq!(outcome["message"], "config reloaded", "{outcome}");
    let (cert, body) = fetch(addr, "a.example.test", &ca).await;
    assert_eq!((cert, body.as_str()), (b.cert.cert_der(), "b sni=a.example.test"));
}

/// PROXY protocol in and out: a TCP listener with `proxy_protocol` behind a trusted proxy
/// (the test, from 127.0.0.1) takes the client address from the incoming v1 header and
/// passes it on in the v2 header of `send_proxy`; the bytes that came in the same segment as
/// the incoming header reach the server right after the outgoing one.
#[tokio::test]
async fn a_proxied_client_address_is_passed_on_to_the_server() {
    let (server, mut seen, task) = proxy_server().await;
    let backend = Backend::new().set("send_proxy", "v2").server(ServerEntry::new("p", server));
    let listener = web()
        .set("mode", "tcp")
        .set("proxy_protocol", true)
        .set("trusted_proxies", vec!["127.0.0.0/8"]);
    let t = start(config_on(listener, backend)).await;
    let mut s = connect_from("127.0.0.1", t.listener_addr("web")).await;
    s.write_all(b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\nfirst bytes\n").await.unwrap();
    let header = tokio::time::timeout(STEP, seen.recv()).await;
    let (source, rest) = header.unwrap_or_else(|_| panic!("no header in time")).unwrap();
    assert_eq!(source, "203.0.113.7:5555".parse::<SocketAddr>().unwrap());
    let mut back = vec![0u8; b"first bytes\n".len()];
    tokio::time::timeout(STEP, s.read_exact(&mut back)).await.unwrap().unwrap();
    assert_eq!(back, b"first bytes\n", "the bytes after the incoming header (server saw {rest:?})");
    task.abort();
}
