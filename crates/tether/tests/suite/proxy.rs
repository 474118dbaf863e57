//! The data path through a real Tether: forwarding, headers, protocols, routing, errors.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tether_testkit::{EchoServer, HangServer, StatusServer, WebSocketEchoServer, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::fixture::*;
use crate::support::h1raw::Reply;

#[tokio::test]
async fn forwarding_headers_are_set_and_host_is_preserved() {
    let servers = echo_servers(1);
    let t = start(config(app(&servers))).await;
    let r = client()
        .get(format!("{}/p?q=1", t.url("web")))
        .header("host", "shop.example")
        .header("x-forwarded-for", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6")
        .send()
        .await
        .unwrap();
    let echo: serde_json::Value = r.json().await.unwrap();
    let h = &echo["headers"];
    assert_eq!(h["host"], "shop.example");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "untrusted XFF is replaced");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example");
    assert_eq!(h["forwarded"], "for=127.0.0.1;proto=http;host=\"shop.example\"");
    assert_eq!(echo["path"], "/p");
    assert_eq!(echo["query"], "q=1");
}

#[tokio::test]
async fn trusted_proxies_have_their_forwarded_for_extended() {
    let servers = echo_servers(1);
    let t = start(config_on(web().trusted_proxies(&["127.0.0.0/8"]), app(&servers))).await;
    let r =
        client().get(t.url("web")).header("x-forwarded-for", "203.0.113.9").send().await.unwrap();
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["headers"]["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
}

#[tokio::test]
async fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
    let servers = echo_servers(1);
    let t = start(config(app(&servers))).await;
    let addr = t.listener_addr("web");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Secret, X-Forwarded-For\r\n\
          X-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic eA==\r\n\
          TE: trailers\r\nX-Kept: yes\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&buf);
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let echo: serde_json::Value = serde_json::from_str(body).unwrap();
    let h = echo["headers"].as_object().unwrap();
    for gone in ["x-secret", "keep-alive", "proxy-authorization", "te"] {
        assert!(!h.contains_key(gone), "{gone} was forwarded: {h:?}");
    }
    assert_eq!(h["x-kept"], "yes");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "naming XFF in Connection must not strip ours");
}

/// Tether in front of one scripted server whose answers are `200` with body `ok`, and the
/// replies to two `GET /` on one HTTP/1.1 connection (each checked to be that answer).
async fn two_replies_through(
    script: fn(&str) -> tether_testkit::servers::scripted::Answer,
) -> (tether_testkit::servers::scripted::ScriptedServer, tether_testkit::Tether, Vec<Reply>) {
    let server = tether_testkit::servers::scripted::ScriptedServer::start(script).unwrap();
    let t = start(config(Backend::new().server(ServerEntry::new("up", server.addr())))).await;
    let mut c = crate::support::h1raw::RawClient::connect(t.listener_addr("web")).await;
    let mut replies = Vec::new();
    for _ in 0..2 {
        assert!(c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await);
        let Some(reply) = c.replies(1).await.pop() else { panic!("no reply") };
        assert_eq!((reply.status, reply.body.as_slice()), (200, &b"ok"[..]));
        replies.push(reply);
    }
    (server, t, replies)
}

#[tokio::test]
async fn a_servers_hop_by_hop_headers_and_those_it_names_in_connection_are_not_passed_on() {
    use tether_testkit::servers::scripted::{Answer, Then};
    fn answer(_path: &str) -> Answer {
        Answer::new(
            b"HTTP/1.1 200 OK\r\nX-Secret: 1\r\nConnection: keep-alive, X-Secret\r\n\
              Keep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nUpgrade: h2c\r\n\
              X-Kept: yes\r\nTrailer: X-T\r\nConnection: X-Later\r\nX-Later: 2\r\n\
              Content-Length: 2\r\n\r\nok",
            Then::KeepOpen,
        )
    }
    let (_server, _t, replies) = two_replies_through(answer).await;
    for reply in replies {
        let names: Vec<&str> = reply.headers.iter().map(|(n, _)| n.as_str()).collect();
        for gone in
            ["x-secret", "keep-alive", "proxy-authenticate", "upgrade", "trailer", "x-later"]
        {
            assert!(!names.contains(&gone), "{gone} was passed on: {names:?}");
        }
        assert_eq!(reply.header("x-kept"), Some("yes"), "{names:?}");
        // Tether's own: the client's connection stays open.
        assert!(!reply.says_close(), "{names:?}");
    }
}

#[tokio::test]
async fn a_servers_lines_reach_http1_and_http2_clients_and_its_request_id_gives_way() {
    use tether_testkit::servers::scripted::{Answer, Then};
    fn answer(_path: &str) -> Answer {
        Answer::new(
            b"HTTP/1.1 200 OK\r\nX-Request-Id: from-server\r\nSet-Cookie: a=1\r\n\
              X-Kept: yes\r\nset-cookie: b=2\r\nContent-Length: 2\r\n\r\nok",
            Then::KeepOpen,
        )
    }
    // HTTP/1.1: written from the server's own lines, the request id replaced, not repeated.
    let (_server, t, replies) = two_replies_through(answer).await;
    for reply in replies {
        let all = |name: &str| -> Vec<&str> {
            reply.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
        };
        let ids = all("x-request-id");
        assert!(ids.len() == 1 && ids[0].len() == 32, "Tether's id only: {ids:?}");
        assert_eq!(all("set-cookie"), ["a=1", "b=2"]);
        assert_eq!(all("x-kept"), ["yes"]);
        assert_eq!(all("content-length"), ["2"]);
    }
    // HTTP/2: the same lines, from the response's map.
    let h2 = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let r = h2.get(t.url("web")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let all = |name: &str| -> Vec<String> {
        r.headers().get_all(name).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
    };
    let ids = all("x-request-id");
    assert!(ids.len() == 1 && ids[0].len() == 32, "Tether's id only: {ids:?}");
    assert_eq!(all("set-cookie"), ["a=1", "b=2"]);
    assert_eq!(all("x-kept"), ["yes"]);
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served_and_forwarded_as_http1() {
    let servers = echo_servers(2);
    let t = start(config(app(&servers))).await;
    let c = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    for _ in 0..10 {
        let r = c.get(format!("{}/h2", t.url("web"))).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert!(r.headers().contains_key("x-server"), "the server's own header reaches it");
        let echo: serde_json::Value = r.json().await.unwrap();
        assert_eq!(echo["version"], "HTTP/1.1");
        assert!(echo["headers"]["host"].as_str().unwrap().starts_with("127.0.0.1:"));
    }
}

#[tokio::test]
async fn websocket_echo_works_through_tether() {
    let ws = WebSocketEchoServer::start().unwrap();
    let t = start(config(Backend::new().server(ServerEntry::new("w", ws.addr())))).await;
    let url = format!("ws://{}/chat", t.listener_addr("web"));
    let (mut sock, resp) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..50 {
        let msg = format!("hello {i}");
        sock.send(tokio_tungstenite::tungstenite::Message::text(msg.clone())).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(5), sock.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), msg);
    }
    sock.close(None).await.unwrap();
}

#[tokio::test]
async fn upgrade_refused_by_the_server_is_an_ordinary_response() {
    let servers = echo_servers(1);
    let t = start(config(app(&servers))).await;
    let r = client()
        .get(t.url("web"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the echo server answers 200, not 101: no tunnel");
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["headers"]["upgrade"], "websocket");
}

#[tokio::test]
async fn routes_match_host_then_path_then_fall_back_to_the_default() {
    let (app, api, wild) = (
        EchoServer::start("app").unwrap(),
        EchoServer::start("api").unwrap(),
        EchoServer::start("wild").unwrap(),
    );
    let cfg = Config::new()
        .listener(web())
        .listener(Listener::new("bare"))
        .route(Route::to("api").host("api.example.com").path_prefix("/v1/"))
        .route(Route::to("wild").host("*.example.com"))
        .backend("app", Backend::new().server(&app))
        .backend("api", Backend::new().server(&api))
        .backend("wild", Backend::new().server(&wild));
    let t = start(cfg).await;
    let c = client();
    let hit = |host: &'static str, path: &'static str| {
        let c = c.clone();
        let url = format!("{}{path}", t.url("web"));
        async move { c.get(url).header("host", host).send().await.unwrap() }
    };
    assert_eq!(server_of(&hit("api.example.com", "/v1/users").await), "api");
    assert_eq!(server_of(&hit("API.Example.com:8080", "/v1/x").await), "api");
    assert_eq!(server_of(&hit("api.example.com", "/v2/").await), "wild");
    assert_eq!(server_of(&hit("www.example.com", "/").await), "wild");
    assert_eq!(server_of(&hit("example.com", "/").await), "app", "*.example.com needs a subdomain");
    assert_eq!(server_of(&hit("other.test", "/v1/").await), "app");
    let r = c.get(t.url("bare")).header("host", "nothing.test").send().await.unwrap();
    assert_eq!(r.status(), 404, "no route and no default backend");
}

#[tokio::test]
async fn connect_failure_on_every_server_is_a_502_with_a_short_body() {
    let mut servers = echo_servers(2);
    let t = start(config(app(&servers).set("timeouts.connect", "1s"))).await;
    for s in &mut servers {
        s.stop().await;
    }
    let r = client().get(t.url("web")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    let body = r.text().await.unwrap();
    assert!(body.starts_with("502 Bad Gateway"), "{body}");
    assert!(!body.contains("127.0.0.1"), "no addresses in error pages: {body}");
}

#[tokio::test]
async fn a_dead_server_is_skipped_without_client_errors() {
    let mut servers = echo_servers(3);
    let t = start(config(app(&servers))).await;
    servers[1].stop().await;
    let c = fresh_client();
    for _ in 0..60 {
        let r = c.get(t.url("web")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_ne!(server_of(&r), "s1");
    }
}

#[tokio::test]
async fn a_hung_server_gets_a_504_within_the_response_timeout() {
    let hang = HangServer::start().unwrap();
    let hung = Backend::new().server(ServerEntry::new("h", hang.addr()));
    let t = start(config(hung.set("timeouts.response", "500ms"))).await;
    let started = Instant::now();
    let r = client().get(t.url("web")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    // Not a speed requirement: the default response timeout is 30 s, and 5 s (ten times the
    // configured one) tells the two apart with room for a slow machine.
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn server_status_codes_pass_through_unchanged() {
    let s = StatusServer::start(503).unwrap();
    let t = start(config(Backend::new().server(ServerEntry::new("x", s.addr())))).await;
    let r = client().get(t.url("web")).send().await.unwrap();
    assert_eq!(r.status(), 503);
}

#[tokio::test]
async fn a_malformed_request_gets_400_and_the_connection_is_closed() {
    let servers = echo_servers(1);
    let t = start(config(app(&servers))).await;
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    ] {
        let mut s = tokio::net::TcpStream::connect(t.listener_addr("web")).await.unwrap();
        s.write_all(garbage).await.unwrap();
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
        assert!(n.is_ok(), "connection not closed for {:?}", String::from_utf8_lossy(garbage));
        let text = String::from_utf8_lossy(&buf);
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    }
    assert_eq!(servers[0].requests(), 0, "nothing malformed reached the server");
    let r = client().get(t.url("web")).send().await.unwrap();
    assert_eq!(r.status(), 200, "and the proxy still serves");
}

#[tokio::test]
async fn access_log_has_one_structured_line_per_request() {
    let servers = echo_servers(1);
    let t = start(config(app(&servers).sticky(Sticky::cookie()))).await;
    client()
        .get(format!("{}/some/path?secret=1", t.url("web")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = t
        .wait_for_log(|l| l["target"] == "tether::access", Duration::from_secs(5))
        .await
        .expect("an access log line");
    for field in [
        "listener",
        "client",
        "method",
        "path",
        "status",
        "backend",
        "server",
        "affinity",
        "attempts",
        "upstream_ms",
        "total_ms",
        "bytes",
    ] {
        assert!(line.get(field).is_some(), "missing {field}: {line}");
    }
    assert_eq!(line["path"], "/some/path", "query strings are not logged");
    assert_eq!(line["status"], 200);
    assert_eq!(line["affinity"], "new");
    assert_eq!(line["complete"], true);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let servers = echo_servers(1);
    let web = web().set("timeouts.header", "30s").set("timeouts.idle", "300ms");
    let t = start(config_on(web, app(&servers))).await;
    let mut s = tokio::net::TcpStream::connect(t.listener_addr("web")).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    // The server closes the idle connection: read returns 0 well before the 30 s header timeout.
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "idle connection was not closed");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed too early: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_slow_response_outlasting_the_idle_timeout_is_not_cut() {
    let servers = echo_servers(1);
    let t = start(config_on(web().set("timeouts.idle", "200ms"), app(&servers))).await;
    let r = client().get(format!("{}/slow?ms=1000", t.url("web"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(server_of(&r), "s0");
}

/// A client that stops reading a download: no byte moves, the idle timeout closes the
/// connection gracefully — which for HTTP/1.1 means "after this response", never — so after
/// as long again of silence (the shorter of idle and header) Tether drops it instead of
/// holding the connection and the server's response forever.
#[tokio::test]
async fn a_client_that_stops_reading_a_download_is_dropped_after_the_idle_timeout() {
    let servers = echo_servers(1);
    let web = web().set("timeouts.header", "30s").set("timeouts.idle", "500ms");
    let t = start(config_on(web, app(&servers))).await;
    let mut s = tokio::net::TcpStream::connect(t.listener_addr("web")).await.unwrap();
    // 64 MiB: far more than the socket buffers hold, so Tether's writes stall.
    s.write_all(b"GET /download?bytes=67108864 HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut head = vec![0u8; 1024];
    let n = s.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));
    // Stop reading until Tether's end of the connection leaves ESTABLISHED (idle 0.5 s +
    // 0.5 s of grace; our full receive window keeps its FIN from reaching us), then drain
    // what the socket holds: the connection must end well short of 64 MiB.
    let (ours, tethers) = (s.local_addr().unwrap(), s.peer_addr().unwrap());
    assert!(
        tcp_established(tethers.port(), ours.port()),
        "Tether's end not found in /proc/net/tcp"
    );
    let dropped =
        wait_until(Duration::from_secs(10), || !tcp_established(tethers.port(), ours.port())).await;
    assert!(dropped, "Tether kept the stalled connection for 10 s");
    let mut received = n as u64;
    let mut buf = vec![0u8; 256 * 1024];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(k) => received += k as u64,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stalled download was still open after 13 s ({received} bytes)");
    assert!(received < 64 << 20, "the whole download arrived: the connection was never cut");
}

/// Whether the kernel has an IPv4 TCP connection from local port `local` to remote port
/// `remote` in state ESTABLISHED (`/proc/net/tcp`, state `01`).
fn tcp_established(local: u16, remote: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_else(|e| panic!("reading /proc/net/tcp: {e}"));
    let port = |addr: &str| addr.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        f.len() > 3 && port(f[1]) == Some(local) && port(f[2]) == Some(remote) && f[3] == "01"
    })
}

#[tokio::test]
async fn an_upload_slower_than_the_response_timeout_still_succeeds() {
    let servers = echo_servers(1);
    let t = start(config(app(&servers).set("timeouts.response", "300ms"))).await;
    // 8 chunks paced 100 ms apart: the upload takes ~0.8 s, the server answers at once after.
    let chunks = futures_util::stream::unfold(0u32, |i| async move {
        if i == 8 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        Some((Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 1000])), i + 1))
    });
    let r =
        client().post(t.url("web")).body(reqwest::Body::wrap_stream(chunks)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["body_bytes"], 8000);
}

#[tokio::test]
async fn a_stalled_upload_gets_408_after_the_body_timeout() {
    let servers = echo_servers(1);
    let t = start(config_on(web().set("timeouts.body", "300ms"), app(&servers))).await;
    let mut s = tokio::net::TcpStream::connect(t.listener_addr("web")).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "connection neither answered nor closed");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let r = client().get(t.url("web")).send().await.unwrap();
    assert_eq!(r.status(), 200, "other clients are unaffected");
}
