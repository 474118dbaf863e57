//! The edge of a listener, through a real Tether: header and body limits, the header
//! timeout, per-client rate limits, connection limits and the PROXY protocol. Every test
//! also checks that a client within its limits, running at the same time, is unaffected.

use std::time::{Duration, Instant};

use tether_testkit::wait_until;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::fixture::*;

/// Sends `raw` on a new connection and reads until the server closes or `deadline`.
/// Returns what was read and whether the connection was closed.
async fn exchange(addr: std::net::SocketAddr, raw: &[u8], deadline: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    read_until_close(&mut s, deadline).await
}

async fn read_until_close(s: &mut TcpStream, deadline: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let end = tokio::time::Instant::now() + deadline;
    loop {
        match tokio::time::timeout_at(end, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

fn status_of(response: &str) -> u16 {
    response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A well-behaved client's request while the test misbehaves elsewhere.
async fn bystander_ok(c: &reqwest::Client, t: &tether_testkit::Tether) {
    let r = c.get(format!("{}/bystander", t.url("web"))).send().await.unwrap();
    assert_eq!(r.status(), 200, "a client within its limits is served");
}

/// A request of another client that is in flight (1.5 s at the server) while the test sends
/// its bad requests; awaiting the handle checks it was served untouched.
fn in_flight_bystander(t: &tether_testkit::Tether) -> tokio::task::JoinHandle<u16> {
    let url = format!("{}/slow?ms=1500", t.url("web"));
    tokio::spawn(async move { client().get(url).send().await.unwrap().status().as_u16() })
}

#[tokio::test]
async fn oversized_headers_get_431_and_too_many_headers_too() {
    let servers = echo_servers(1);
    let web = web().set("limits.max_header_bytes", 16384).set("limits.max_headers", 20);
    let t = start(config_on(web, app(&servers))).await;
    let addr = t.listener_addr("web");
    let meanwhile = in_flight_bystander(&t);
    assert!(wait_until(Duration::from_secs(10), || servers[0].requests() == 1).await);
    let big = format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "a".repeat(20_000));
    let (resp, closed) = exchange(addr, big.as_bytes(), Duration::from_secs(10)).await;
    assert_eq!(status_of(&resp), 431, "{resp}");
    assert!(closed, "the connection is closed after a 431");
    let many: String = (0..30).map(|i| format!("x-h{i}: v\r\n")).collect();
    let req = format!("GET / HTTP/1.1\r\nhost: x\r\n{many}\r\n");
    let (resp, _) = exchange(addr, req.as_bytes(), Duration::from_secs(10)).await;
    assert_eq!(status_of(&resp), 431, "{resp}");
    // Just under both limits is fine.
    let fine: String = (0..15).map(|i| format!("x-h{i}: {}\r\n", "b".repeat(500))).collect();
    let req = format!("GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{fine}\r\n");
    let (resp, _) = exchange(addr, req.as_bytes(), Duration::from_secs(10)).await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert_eq!(meanwhile.await.unwrap(), 200, "the request in flight meanwhile was served");
    assert_eq!(servers[0].requests(), 2, "only well-formed requests reached the server");
    bystander_ok(&client(), &t).await;
}

#[tokio::test]
async fn bodies_over_max_body_bytes_get_413_declared_or_streamed() {
    let servers = echo_servers(1);
    let t = start(config_on(web().set("limits.max_body_bytes", 1000), app(&servers))).await;
    let addr = t.listener_addr("web");
    let meanwhile = in_flight_bystander(&t);
    assert!(wait_until(Duration::from_secs(10), || servers[0].requests() == 1).await);
    // Declared: refused before anything is forwarded.
    let req =
        format!("POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\n\r\n{}", "x".repeat(5000));
    let (resp, closed) = exchange(addr, req.as_bytes(), Duration::from_secs(10)).await;
    assert_eq!(status_of(&resp), 413, "{resp}");
    assert!(resp.to_ascii_lowercase().contains("connection: close"), "{resp}");
    assert!(closed);
    assert_eq!(servers[0].requests(), 1, "a declared oversized body is never forwarded");
    // Chunked: refused once it passes the limit.
    let chunk = format!("{:x}\r\n{}\r\n", 600, "y".repeat(600));
    let req = format!(
        "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{chunk}{chunk}{chunk}0\r\n\r\n"
    );
    let (resp, _) = exchange(addr, req.as_bytes(), Duration::from_secs(10)).await;
    assert_eq!(status_of(&resp), 413, "{resp}");
    // Within the limit.
    let c = client();
    let r = c.post(t.url("web")).body(vec![b'z'; 1000]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let echoed: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echoed["body_bytes"], 1000);
    assert_eq!(meanwhile.await.unwrap(), 200, "the request in flight meanwhile was served");
}

#[tokio::test]
async fn a_slow_header_client_is_disconnected_after_the_header_timeout() {
    let servers = echo_servers(1);
    let t = start(config_on(web().set("timeouts.header", "1s"), app(&servers))).await;
    let addr = t.listener_addr("web");
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let started = Instant::now();
    // Meanwhile another client is served normally.
    let c = client();
    bystander_ok(&c, &t).await;
    // The slow client trickles a header line every 250 ms but never finishes the head, for
    // up to 8 s: short of the 10 s default, so only the configured 1 s, counted from the
    // start of the head and not restarted by each line, can close it meanwhile.
    let mut closed = false;
    let mut line = 0;
    while !closed && started.elapsed() < Duration::from_secs(8) {
        let trickle = format!("x-trickle-{line}: 1\r\n");
        closed = slow.write_all(trickle.as_bytes()).await.is_err()
            || read_until_close(&mut slow, Duration::from_millis(250)).await.1;
        line += 1;
    }
    assert!(closed, "still open after {:?}, header timeout 1 s", started.elapsed());
    assert_eq!(servers[0].requests(), 1, "only the bystander's request reached the server");
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429_with_retry_after_and_others_do_not() {
    let servers = echo_servers(2);
    let web = web().set("rate_limit.requests_per_second", 1).set("rate_limit.burst", 5);
    let t = start(config_on(web.trusted_proxies(&["127.0.0.1"]), app(&servers))).await;
    let c = client();
    let url = t.url("web");
    // The flooding client is 192.0.2.1 (through a trusted proxy: X-Forwarded-For).
    let flood_started = Instant::now();
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..12 {
        let r = c.get(&url).header("x-forwarded-for", "192.0.2.1").send().await.unwrap();
        if r.status() == 429 {
            retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        }
        statuses.push(r.status().as_u16());
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    // The burst of 5, plus the tokens refilled at 1 a second while the flood lasted (on a
    // slow machine, more of them).
    let refilled = flood_started.elapsed().as_secs() as usize + 1;
    assert!((5..=5 + refilled).contains(&ok), "burst 5, {refilled} refilled: {statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 12 - ok, "{statuses:?}");
    let retry_after: u64 = retry_after.expect("Retry-After on 429").parse().unwrap();
    assert!((1..=2).contains(&retry_after), "retry after {retry_after} s at 1 request/s");
    // Another client, at the same time, has its own full bucket.
    for i in 0..5 {
        let r = c.get(&url).header("x-forwarded-for", "192.0.2.2").send().await.unwrap();
        assert_eq!(r.status(), 200, "other client, request {i}");
    }
    // Both servers keep serving (the limit is per client, not per server).
    let served: u64 = servers.iter().map(|s| s.requests()).sum();
    assert_eq!(served, ok as u64 + 5);
    assert!(servers.iter().all(|s| s.requests() > 0), "round robin went on over both servers");
}

#[tokio::test]
async fn an_affinity_keyed_limit_stops_one_session_flooding_its_server_from_many_addresses() {
    let servers = echo_servers(2);
    // A token every 100 s: none comes back while the test runs, however slowly.
    let app = app(&servers)
        .set("rate_limit.requests_per_second", 0.01)
        .set("rate_limit.burst", 3)
        .set("rate_limit.key", "affinity")
        .sticky(Sticky::header("X-Session-Id"));
    let t = start(config_on(web().trusted_proxies(&["127.0.0.1"]), app).admin()).await;
    let c = client();
    let url = t.url("web");
    // One session from ten addresses: limited as one client.
    let mut limited = 0;
    for i in 0..10 {
        let r = c
            .get(&url)
            .header("x-session-id", "attacker")
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            limited += 1;
            assert!(r.headers().contains_key("retry-after"));
        }
    }
    assert_eq!(limited, 7, "all but the burst of 3 refused");
    // Other sessions, including one from the same address, are served.
    for i in 0..5 {
        let r = c
            .get(&url)
            .header("x-session-id", format!("user-{i}"))
            .header("x-forwarded-for", "198.51.100.0")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "session user-{i}");
    }
    let text = c.get(admin_url(&t, "/metrics")).send().await.unwrap().text().await.unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("tether_requests_refused_total") && l.contains("\"rate_limit\""))
        .unwrap_or_else(|| panic!("no rate_limit series:\n{text}"));
    let counted: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(counted as usize, limited, "{line}");
}

#[tokio::test]
async fn connections_over_the_per_ip_limit_are_closed_and_freed_slots_are_reused() {
    let servers = echo_servers(1);
    let web = web().set("limits.max_connections_per_ip", 3);
    let t = start(config_on(web, app(&servers))).await;
    let addr = t.listener_addr("web");
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 512];
        let n =
            tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.unwrap().unwrap();
        assert_eq!(status_of(&String::from_utf8_lossy(&buf[..n])), 200);
        held.push(s);
    }
    let (resp, closed) =
        exchange(addr, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", Duration::from_secs(10)).await;
    assert!(closed && resp.is_empty(), "a fourth connection is closed unanswered: {resp:?}");
    drop(held.pop());
    // The slot comes back once Tether sees the close.
    let reused = tether_testkit::wait_until_async(Duration::from_secs(10), || async {
        let (resp, _) = exchange(
            addr,
            b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        status_of(&resp) == 200
    })
    .await;
    assert!(reused, "a freed slot is reused");
}

fn proxy_v2(src: [u8; 4], port: u16) -> Vec<u8> {
    let mut v = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v.extend([0x21, 0x11, 0, 12]);
    v.extend(src);
    v.extend([127, 0, 0, 1]);
    v.extend(port.to_be_bytes());
    v.extend(80u16.to_be_bytes());
    v
}

#[tokio::test]
async fn proxy_protocol_gives_the_client_address_and_is_refused_from_untrusted_peers() {
    let servers = echo_servers(1);
    let proxied = |trusted: &str| web().set("proxy_protocol", true).trusted_proxies(&[trusted]);
    let t = start(config_on(proxied("127.0.0.1"), app(&servers))).await;
    let addr = t.listener_addr("web");
    let get = b"GET /pp HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    // v1
    let mut raw = b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\n".to_vec();
    raw.extend_from_slice(get);
    let (resp, _) = exchange(addr, &raw, Duration::from_secs(10)).await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert!(resp.contains("203.0.113.7"), "X-Forwarded-For carries the PROXY source: {resp}");
    // v2
    let mut raw = proxy_v2([198, 51, 100, 9], 5555);
    raw.extend_from_slice(get);
    let (resp, _) = exchange(addr, &raw, Duration::from_secs(10)).await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert!(resp.contains("198.51.100.9"), "{resp}");
    // No header: closed without an answer; nothing forwarded.
    let before = servers[0].requests();
    let (resp, closed) = exchange(addr, get, Duration::from_secs(10)).await;
    assert!(closed && resp.is_empty(), "{resp:?}");
    assert_eq!(servers[0].requests(), before);
    drop(t);

    // The same listener trusting only another network refuses 127.0.0.1's headers.
    let t = start(config_on(proxied("10.0.0.0/8"), app(&servers))).await;
    let mut raw = b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\n".to_vec();
    raw.extend_from_slice(get);
    let (resp, closed) = exchange(t.listener_addr("web"), &raw, Duration::from_secs(10)).await;
    assert!(closed && resp.is_empty(), "an untrusted peer's PROXY header is refused: {resp:?}");
    assert_eq!(servers[0].requests(), before);
}

#[tokio::test]
async fn edge_settings_are_checked_with_clear_errors() {
    let servers = echo_servers(1);
    let check = |web: Listener| tether_testkit::run_check(BIN, config_on(web, app(&servers)));
    let out = check(web().set("limits.max_header_bytes", 100)).unwrap();
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("listeners[0].limits.max_header_bytes"), "{}", out.stderr);
    let out = check(web().set("rate_limit.requests_per_second", 0)).unwrap();
    assert!(out.stderr.contains("listeners[0].rate_limit.requests_per_second"), "{}", out.stderr);
    let cookie_keyed =
        web().set("rate_limit.requests_per_second", 5).set("rate_limit.key", "cookie");
    let out = check(cookie_keyed).unwrap();
    assert!(out.stderr.contains("listeners[0].rate_limit.key"), "{}", out.stderr);
    let out = check(web().set("proxy_protocol", true)).unwrap();
    assert!(out.stderr.contains("needs trusted_proxies"), "{}", out.stderr);
    let out = check(web().set("limits.max_conections", 5)).unwrap();
    assert!(out.stderr.contains("max_conections"), "a typo names the key: {}", out.stderr);
    let within = web()
        .set("limits.max_connections", 100)
        .set("limits.max_body_bytes", 1048576)
        .set("rate_limit.requests_per_second", 0.5);
    let out = check(within).unwrap();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}
