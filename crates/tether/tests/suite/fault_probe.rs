//! Regression tests for the defects a fault probe found, each through the real binary:
//!
//! 1. `CONNECT` is refused (501) before a server is chosen, and never blames a server.
//! 2. Response framing: a response with both `Transfer-Encoding` and `Content-Length` reaches
//!    the client whole (chunked, no length) and its server connection is not reused; other
//!    broken response framing never reaches the client as a complete-looking message.
//! 3. A client that half-closes after a request that asked to close gets its response.
//! 4. A client that goes away while its request is at the server is logged (499,
//!    `complete=false`) and counted.
//! 5. Of several affinity cookies, the first valid one is used.
//! 6. Open tunnels (WebSocket) get the grace period on SIGTERM; accept failures at the
//!    file-descriptor limit are logged once a second with a count.

// A test upstream's bookkeeping (which paths came on which connection), not the data path.
#![allow(clippy::disallowed_types)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tether_testkit::servers::{Behaviour, Counters, Server};
use tether_testkit::{EchoServer, Tether, WebSocketEchoServer, wait_until, wait_until_async};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::fixture::*;
use crate::support::h1raw::{RawClient, converse};
use crate::support::h2raw;

/// How long a log line or a metric may take to show on a loaded machine.
const SETTLE: Duration = Duration::from_secs(10);

// === helpers ===

/// A one-off upstream: reads each request head on a connection and answers with the bytes
/// its script gives for the request's path, keeping the connection open (keep-alive).
struct Scripted {
    script: fn(&str) -> &'static [u8],
    /// The paths requested, one list per connection.
    connections: std::sync::Mutex<Vec<Vec<String>>>,
}

impl Scripted {
    fn new(script: fn(&str) -> &'static [u8]) -> Self {
        Self { script, connections: std::sync::Mutex::default() }
    }

    fn connections(&self) -> Vec<Vec<String>> {
        self.connections.lock().unwrap().clone()
    }
}

impl Behaviour for Scripted {
    async fn serve(self: Arc<Self>, mut stream: TcpStream, counters: Arc<Counters>) {
        let index = {
            let mut all = self.connections.lock().unwrap();
            all.push(Vec::new());
            all.len() - 1
        };
        let mut buf = Vec::new();
        let mut chunk = [0; 4096];
        loop {
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                continue;
            };
            counters.record_request();
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            let path = head.split(' ').nth(1).unwrap_or("/");
            self.connections.lock().unwrap()[index].push(path.to_owned());
            if stream.write_all((self.script)(path)).await.is_err() {
                return;
            }
        }
    }
}

/// A Tether whose backend "app" is `servers` (name, address), with an admin listener.
async fn start_with_servers(servers: &[(&str, SocketAddr)], app: Backend) -> Tether {
    let entries = servers.iter().map(|(name, addr)| ServerEntry::new(name, addr));
    start(config(app.servers(entries)).admin()).await
}

/// `backend` ejecting a server for 30 s after two failures in a row.
fn with_outlier_detection(backend: Backend) -> Backend {
    backend.set("outlier.consecutive_failures", 2).set("outlier.base_ejection", "30s")
}

/// The value of `tether_requests_total` for server `server` and `code_class`, 0 when absent.
async fn requests_total(t: &Tether, server: &str, code_class: &str) -> f64 {
    metric_sum(t, "tether_requests_total", &[("server", server), ("code_class", code_class)]).await
}

/// Every line of `/metrics` that starts with `prefix`.
async fn metric_lines(t: &Tether, prefix: &str) -> Vec<String> {
    let text = client().get(admin_url(t, "/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines().filter(|l| l.starts_with(prefix)).map(str::to_owned).collect()
}

fn access_lines(t: &Tether) -> Vec<Value> {
    t.logs().into_iter().filter(|l| l["target"] == "tether::access").collect()
}

// === 1. CONNECT ===

#[tokio::test]
async fn connect_is_refused_with_501_and_never_blames_a_server() {
    let servers = echo_servers(4);
    let t = start(config(with_outlier_detection(app(&servers))).admin()).await;
    let addr = t.listener_addr("web");

    for i in 0..100 {
        let target = format!("127.0.0.1:{}", 1 + i % 3);
        let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
        let c = converse(addr, req.as_bytes()).await;
        assert_eq!(c.statuses(), [501], "CONNECT {i}: {}", c.summary());
        assert!(c.closed, "the connection is closed after a refused CONNECT: {}", c.summary());
    }
    // HTTP/2 (prior knowledge): CONNECT carries only `:method` and `:authority`.
    let fields: [(&[u8], &[u8]); 2] = [(b":method", b"CONNECT"), (b":authority", b"127.0.0.1:1")];
    let frames = h2raw::headers(1, &fields, false);
    let outcome = h2raw::exchange(addr, &frames).await;
    assert_eq!(outcome, h2raw::Outcome::Response(Some(501)), "HTTP/2 CONNECT");

    let c = client();
    for s in &servers {
        let json = server_json(&t, &c, s.name()).await;
        assert_eq!(json["errors_total"], 0, "{json}");
        assert_eq!(json["ejected"], false, "{json}");
        assert_ne!(json["health"], "down", "{json}");
        assert_eq!(json["requests_total"], 0, "no CONNECT reached a server: {json}");
        assert_eq!(s.requests(), 0);
    }
    assert!(
        metric_lines(&t, "tether_upstream_errors_total{").await.iter().all(|l| l.ends_with(" 0"))
    );
    let refused = metric_lines(&t, "tether_requests_refused_total{").await;
    assert!(
        refused.iter().any(|l| l.contains("reason=\"method\"") && l.ends_with(" 101")),
        "{refused:?}"
    );
    // Ordinary requests are served by all four afterwards.
    for _ in 0..8 {
        assert_eq!(c.get(t.url("web")).send().await.unwrap().status(), 200);
    }
    assert!(servers.iter().all(|s| s.requests() == 2));
}

#[tokio::test]
async fn server_answers_of_501_and_505_do_not_count_as_server_failures() {
    let not_impl = tether_testkit::StatusServer::start(501).unwrap();
    let version = tether_testkit::StatusServer::start(505).unwrap();
    let servers = [("ni", not_impl.addr()), ("vn", version.addr())];
    let t = start_with_servers(&servers, with_outlier_detection(Backend::new())).await;
    let c = client();
    for _ in 0..10 {
        let status = c.get(t.url("web")).send().await.unwrap().status().as_u16();
        assert!(matches!(status, 501 | 505), "{status}");
    }
    for name in ["ni", "vn"] {
        let json = server_json(&t, &c, name).await;
        assert_eq!(json["errors_total"], 0, "{json}");
        assert_eq!(json["ejected"], false, "{json}");
    }
}

// === 2. Response framing ===

const BOTH_FRAMINGS: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
const FINE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfine";

/// Answers by path: `/both`, `/two-lengths`, `/bad-length`, `/bad-chunk`, `/gzip`; `FINE`
/// for anything else.
fn framing_script(path: &str) -> &'static [u8] {
    match path {
        "/both" => BOTH_FRAMINGS,
        "/two-lengths" => b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nhello",
        "/bad-length" => b"HTTP/1.1 200 OK\r\nContent-Length: 3x\r\n\r\nhel",
        "/bad-chunk" => {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
        }
        "/gzip" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nnot really gzip",
        _ => FINE,
    }
}

async fn framing_rig() -> (Server<Scripted>, Tether) {
    let server =
        Server::start_with(Scripted::new(framing_script), "127.0.0.1:0".parse().unwrap()).unwrap();
    let t = start_with_servers(&[("scripted", server.addr())], Backend::new()).await;
    (server, t)
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn a_response_with_both_framings_arrives_whole_and_chunked_on_a_fresh_server_connection() {
    let (server, t) = framing_rig().await;
    let mut c = RawClient::connect(t.listener_addr("web")).await;
    for round in 0..3 {
        assert!(c.send(&get("/both")).await);
        let replies = c.replies(1).await;
        let r = replies.first().unwrap_or_else(|| panic!("round {round}: no complete response"));
        assert_eq!(r.status, 200, "round {round}: {r:?}");
        assert_eq!(r.header("content-length"), None, "round {round}: {r:?}");
        assert_eq!(r.header("transfer-encoding"), Some("chunked"), "round {round}: {r:?}");
        assert_eq!(r.body, b"hello", "round {round}");
        // The next request on the same client connection works.
        assert!(c.send(&get("/next")).await);
        let next = c.replies(1).await;
        assert_eq!(next.first().map(|r| (r.status, r.body.clone())), Some((200, b"fine".to_vec())));
    }
    // Each response with both framings retired its server connection: nothing came on one
    // after it.
    assert_eq!(server.requests(), 6);
    let connections = server.behaviour().connections();
    for paths in &connections {
        let both = paths.iter().position(|p| p == "/both");
        assert!(both.is_none_or(|i| i + 1 == paths.len()), "reused after /both: {connections:?}");
    }
    let json = server_json(&t, &client(), "scripted").await;
    assert_eq!(json["errors_total"], 0, "{json}");
}

#[tokio::test]
async fn broken_response_framing_never_reaches_the_client_as_a_complete_message() {
    let (_server, t) = framing_rig().await;
    let addr = t.listener_addr("web");
    for path in ["/two-lengths", "/bad-length", "/bad-chunk", "/gzip"] {
        let mut c = RawClient::connect(addr).await;
        assert!(c.send(&get(path)).await, "{path}");
        let replies = c.replies(1).await;
        match replies.first() {
            // Refused before the head: a 502, and the client connection still works.
            Some(r) => {
                assert_eq!(r.status, 502, "{path}: a complete response passed: {r:?}");
                assert!(c.send(&get("/next")).await, "{path}");
                let next = c.replies(1).await;
                assert_eq!(next.first().map(|r| r.status), Some(200), "{path}");
            }
            // Cut after the head: no complete message, and the connection is closed.
            None => {
                let rest = c.finish().await;
                assert!(rest.replies.is_empty() && rest.closed, "{path}: {}", rest.summary());
            }
        }
    }
}

// === 3. Half-close ===

/// Sends `request`, shuts the sending side, and reads until the connection ends.
async fn half_closed(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    s.shutdown().await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(SETTLE, s.read_to_end(&mut got)).await.unwrap().unwrap();
    got
}

#[tokio::test]
async fn a_client_that_half_closes_after_its_request_gets_the_response() {
    let servers = echo_servers(1);
    let t = start(config(app(&servers))).await;
    let addr = t.listener_addr("web");
    let requests: [&[u8]; 3] = [
        b"GET /slow?ms=300 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /slow?ms=300 HTTP/1.0\r\n\r\n",
        b"GET /now HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ];
    for request in requests {
        let got = half_closed(addr, request).await;
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200"),
            "{:?}: {text}",
            String::from_utf8_lossy(request)
        );
        assert!(text.contains("\"server\":\"s0\""), "the body came too: {text}");
    }
    assert_eq!(servers[0].requests(), 3);
    let logged = access_lines(&t);
    assert!(wait_until(SETTLE, || access_lines(&t).len() == 3).await, "{logged:?}");
    assert!(access_lines(&t).iter().all(|l| l["status"] == 200 && l["complete"] == true));
}

// === 4. Aborted requests ===

#[tokio::test]
async fn a_client_that_leaves_while_its_request_is_at_the_server_is_logged_as_499() {
    let servers = echo_servers(1);
    let t = start(config(app(&servers)).admin()).await;
    let mut s = TcpStream::connect(t.listener_addr("web")).await.unwrap();
    s.write_all(b"GET /slow?ms=3000 HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert!(wait_until(SETTLE, || servers[0].requests() == 1).await);
    drop(s);

    let line = t
        .wait_for_log(|l| l["target"] == "tether::access", SETTLE)
        .await
        .unwrap_or_else(|| panic!("no access-log line for the aborted request"));
    assert_eq!(line["status"], 499, "{line}");
    assert_eq!(line["complete"], false, "{line}");
    assert_eq!(line["server"], "s0", "{line}");
    let counted =
        wait_until_async(SETTLE, || async { requests_total(&t, "s0", "4xx").await == 1.0 });
    assert!(
        counted.await,
        "tether_requests_total for the 499: {}",
        requests_total(&t, "s0", "4xx").await
    );
    let json = server_json(&t, &client(), "s0").await;
    assert_eq!(json["errors_total"], 0, "a client leaving is not the server's failure: {json}");
}

// === 5. Several affinity cookies ===

#[tokio::test]
async fn the_first_valid_affinity_cookie_is_used_when_several_are_sent() {
    let servers = echo_servers(3);
    let t = start(config(app(&servers).sticky(Sticky::cookie()))).await;
    let c = client();
    let first = c.get(t.url("web")).send().await.unwrap();
    let pinned = server_of(&first);
    let valid = tether_cookie(&first).unwrap();

    let headers = [
        format!("tether=garbage; tether={valid}"),
        format!("other=1; tether=AAAA; tether={valid}; tether=zzz"),
        format!("tether={valid}; tether=garbage"),
    ];
    for (i, cookie) in headers.iter().cycle().take(12).enumerate() {
        let r = c.get(t.url("web")).header("cookie", cookie).send().await.unwrap();
        assert_eq!(server_of(&r), pinned, "request {i} with {cookie:?} was re-pinned");
        assert_eq!(tether_cookie(&r), None, "request {i}: a live session got a new cookie");
    }
    // With no valid one, the client is re-pinned with a new cookie, as with one bad cookie.
    let r = c.get(t.url("web")).header("cookie", "tether=bad; tether=worse").send().await.unwrap();
    assert!(tether_cookie(&r).is_some());
}

// === 6. Tunnels on SIGTERM, accept failures ===

type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Sends `msg` and expects it back.
async fn echo(sock: &mut WebSocket, msg: &str) {
    sock.send(tokio_tungstenite::tungstenite::Message::text(msg)).await.unwrap();
    let back = tokio::time::timeout(SETTLE, sock.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(back.into_text().unwrap().as_str(), msg);
}

#[tokio::test]
async fn an_open_websocket_tunnel_keeps_working_through_the_grace_period_on_sigterm() {
    let ws = WebSocketEchoServer::start().unwrap();
    let tunnel = Backend::new().server(ServerEntry::new("w", ws.addr()));
    let mut t = start(config(tunnel).set("grace_period", "4s")).await;
    let url = format!("ws://{}/chat", t.listener_addr("web"));
    let (mut sock, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    echo(&mut sock, "before").await;

    let mark = t.log_mark();
    t.signal("TERM").unwrap();
    let draining =
        |l: &Value| l["message"].as_str().is_some_and(|m| m.starts_with("shutting down"));
    assert!(t.wait_for_log_since(mark, draining, SETTLE).await.is_some());
    // The tunnel outlives the signal (it used to be cut at once)...
    for i in 0..5 {
        echo(&mut sock, &format!("after {i}")).await;
        // Pacing, not a wait for a condition: the tunnel must keep working for a while
        // into the grace period, not only in the instant after the signal.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ...and the process still ends when the grace period runs out, cutting it.
    let status = t.wait_exit(Duration::from_secs(20)).await;
    assert!(status.is_some(), "still running long after the grace period");
    let end = tokio::time::timeout(SETTLE, sock.next()).await.unwrap();
    assert!(!matches!(end, Some(Ok(tokio_tungstenite::tungstenite::Message::Text(_)))), "{end:?}");
}

#[tokio::test]
async fn accept_failures_at_the_descriptor_limit_are_logged_once_a_second_with_a_count() {
    let servers: Vec<EchoServer> = echo_servers(1);
    let t = start(config(app(&servers))).await;
    let addr = t.listener_addr("web");
    // Hold connections until Tether runs out of descriptors, then keep one more waiting
    // in the backlog: every accept now fails, every 50 ms.
    let limit = 64;
    let out = std::process::Command::new("prlimit")
        .args([format!("--nofile={limit}:{limit}"), format!("--pid={}", t.pid())])
        .output()
        .unwrap();
    assert!(out.status.success(), "prlimit: {}", String::from_utf8_lossy(&out.stderr));
    let mut held = Vec::new();
    for _ in 0..limit + 8 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    let failed = |l: &Value| l["message"] == "accept failed";
    assert!(t.wait_for_log(failed, SETTLE).await.is_some(), "accept never failed");
    let watching = std::time::Instant::now();
    // Accept is retried every 50 ms; the next line, a second later, stands for the ~20
    // failures since (logged one by one, no line would carry a count above 1).
    let summed = |l: &Value| failed(l) && l["failures"].as_u64().is_some_and(|n| n > 1);
    assert!(t.wait_for_log(summed, SETTLE).await.is_some(), "no line counts the failures");
    let lines: Vec<Value> = t.logs().into_iter().filter(failed).collect();
    // One line for the first failure, then at most one a second (a slow machine only
    // makes fewer).
    let most = watching.elapsed().as_secs() as usize + 2;
    assert!(lines.len() <= most, "{} lines, expected at most {most}: {lines:?}", lines.len());
    let counted: u64 = lines.iter().map(|l| l["failures"].as_u64().unwrap()).sum();
    assert!(counted > lines.len() as u64, "the lines count the failures in between: {lines:?}");
    assert!(lines.iter().all(|l| l["listener"] == "web"), "{lines:?}");
    drop(held);
}

#[tokio::test]
async fn a_listener_that_cannot_bind_names_the_os_error_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let web = web().address(taken.local_addr().unwrap());
    let mut t = Tether::spawn(BIN, config_on(web, app(&echo_servers(1)))).unwrap();
    let status = t.wait_exit(SETTLE).await.expect("tether kept running without its listener");
    assert_eq!(status.code(), Some(1));
    let stderr: Vec<String> = t
        .logs()
        .iter()
        .filter(|l| l["stream"] == "stderr")
        .filter_map(|l| l["raw"].as_str().map(str::to_owned))
        .collect();
    let line = stderr.iter().find(|l| l.contains("cannot bind")).unwrap_or_else(|| {
        panic!("no bind error on stderr: {stderr:?}");
    });
    assert!(line.contains("listener \"web\""), "{line}");
    assert_eq!(line.matches("in use").count(), 1, "the OS message once: {line}");
}
