//! IPv6 end to end, through a real Tether: listeners on `[::1]` (plain and TLS with HTTP/2),
//! servers on `[::1]` beside servers on `127.0.0.1`, the client's IPv6 address in the
//! forwarding headers (bracketed and quoted in `Forwarded`, RFC 7239 §6), `client_ip`
//! affinity and per-client rate limits keyed by an IPv6 address.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tether_testkit::EchoServer;
use tether_testkit::tls::{Pki, negotiated_alpn, tls_connect};

use crate::support::fixture::*;

/// Upper bound for any single network step of a test.
const DEADLINE: Duration = Duration::from_secs(10);

const V6_ANY_PORT: SocketAddr = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0);

/// Echo server `v6` on `[::1]` and `v4` on `127.0.0.1`.
fn mixed_servers() -> Vec<EchoServer> {
    vec![
        EchoServer::start_on("v6", V6_ANY_PORT)
            .unwrap_or_else(|e| panic!("bind [::1] (is IPv6 loopback enabled?): {e}")),
        EchoServer::start("v4").unwrap(),
    ]
}

/// Listener "web" ([`web`]) on `[::1]:0`.
fn web_v6() -> Listener {
    web().address("[::1]:0")
}

async fn get_json(c: &reqwest::Client, url: &str) -> (u16, Value) {
    let resp = tokio::time::timeout(DEADLINE, c.get(url).send()).await.unwrap().unwrap();
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(DEADLINE, resp.bytes()).await.unwrap().unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_ipv6_listener_balances_over_ipv6_and_ipv4_servers_and_names_the_client() {
    let servers = mixed_servers();
    let t = start(config_on(web_v6(), app(&servers))).await;
    let addr = t.listener_addr("web");
    assert_eq!(addr.ip(), IpAddr::V6(Ipv6Addr::LOCALHOST), "listener bound on {addr}");
    let c = client();
    for i in 0..6 {
        let (status, echo) = get_json(&c, &format!("{}/r/{i}", t.url("web"))).await;
        assert_eq!(status, 200, "{echo}");
        let h = &echo["headers"];
        assert_eq!(h["x-forwarded-for"], "::1", "{echo}");
        assert_eq!(h["forwarded"].as_str().unwrap().split(';').next(), Some("for=\"[::1]\""));
        assert_eq!(h["x-forwarded-host"], addr.to_string(), "{echo}");
    }
    // Round robin reached both address families.
    assert_eq!((servers[0].requests(), servers[1].requests()), (3, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_http2_and_curl_work_on_an_ipv6_listener() {
    let servers = mixed_servers();
    let pki = Pki::new("tls-v6", &["localhost"]).unwrap();
    let tls = Tls::new(&pki.cert_file, &pki.key_file);
    let t = start(config_on(web_v6().tls(tls), app(&servers))).await;
    let addr = t.listener_addr("web");

    let cfg = pki.ca.client_config(&[b"h2", b"http/1.1"]).unwrap();
    let stream = tls_connect(addr, "localhost", cfg).await.unwrap();
    assert_eq!(negotiated_alpn(&stream).as_deref(), Some(&b"h2"[..]));
    let (mut h2, conn) = tokio::time::timeout(
        DEADLINE,
        http2::handshake(TokioExecutor::new(), TokioIo::new(stream)),
    )
    .await
    .unwrap()
    .unwrap();
    tokio::spawn(conn);
    for i in 0..4 {
        tokio::time::timeout(DEADLINE, h2.ready()).await.unwrap().unwrap();
        let req = http::Request::get(format!("https://localhost/h2/{i}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = tokio::time::timeout(DEADLINE, h2.send_request(req)).await.unwrap().unwrap();
        assert_eq!((resp.status().as_u16(), resp.version()), (200, http::Version::HTTP_2));
        let body = tokio::time::timeout(DEADLINE, resp.into_body().collect())
            .await
            .unwrap()
            .unwrap()
            .to_bytes();
        let echo: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(echo["headers"]["x-forwarded-for"], "::1", "{echo}");
        assert_eq!(echo["headers"]["x-forwarded-proto"], "https", "{echo}");
    }

    // curl as an operator would run it, pointed at the IPv6 address.
    let port = addr.port();
    let mut curl = std::process::Command::new("curl");
    curl.args(["-sS", "--max-time", "20", "--http2", "--cacert"])
        .arg(&pki.ca_file)
        .args(["--resolve", &format!("localhost:{port}:[::1]"), "-o", "/dev/null", "-w"])
        .args(["%{http_code} %{http_version} %{remote_ip}", &format!("https://localhost:{port}/")]);
    // curl ends by itself within --max-time.
    let out = tokio::task::spawn_blocking(move || curl.output()).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout, "200 2 ::1", "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(servers[0].requests() + servers[1].requests(), 5);
}

#[tokio::test]
async fn client_ip_affinity_and_rate_limits_key_on_the_ipv6_address() {
    let servers = mixed_servers();
    let app = app(&servers)
        .set("rate_limit.requests_per_second", 0.01)
        .set("rate_limit.burst", 5)
        .sticky(Sticky::client_ip());
    let v4 = Listener::new("v4").default_backend("app");
    let t = start(config_on(web_v6(), app).listener(v4)).await;
    let c = client();
    let get = |url: String| {
        let c = c.clone();
        async move { tokio::time::timeout(DEADLINE, c.get(url).send()).await.unwrap().unwrap() }
    };
    let mut pinned = None;
    let mut statuses = Vec::new();
    for i in 0..8 {
        let resp = get(format!("{}/s/{i}", t.url("web"))).await;
        statuses.push(resp.status().as_u16());
        if resp.status() == 200 {
            let server = server_of(&resp);
            assert_eq!(pinned.get_or_insert_with(|| server.clone()), &server, "request {i}");
        } else {
            assert!(resp.headers().contains_key("retry-after"), "429 without Retry-After");
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    // An IPv4 client of the same backend has its own bucket: served at once.
    let resp = get(format!("{}/v4", t.url("v4"))).await;
    assert_eq!(resp.status(), 200);
    let (status, echo) = get_json(&c, &format!("{}/v4", t.url("v4"))).await;
    assert_eq!((status, &echo["headers"]["x-forwarded-for"]), (200, &Value::from("127.0.0.1")));
}

#[tokio::test]
async fn a_dual_stack_listener_names_ipv4_clients_as_ipv4() {
    let dual_stack =
        std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").is_ok_and(|v| v.trim() == "0");
    let servers = mixed_servers();
    let dual = web().address("[::]:0").trusted_proxies(&["127.0.0.1/32"]);
    let t = start(config_on(dual, app(&servers))).await;
    let port = t.listener_addr("web").port();
    let c = client();
    let (status, echo) = get_json(&c, &format!("http://[::1]:{port}/v6")).await;
    assert_eq!((status, &echo["headers"]["x-forwarded-for"]), (200, &Value::from("::1")));
    if !dual_stack {
        eprintln!("net.ipv6.bindv6only is not 0: [::] takes no IPv4 here, IPv4 part skipped");
        return;
    }
    // An IPv4 client arrives as ::ffff:127.0.0.1 on the socket; Tether names it 127.0.0.1,
    // and trusts it as the IPv4 proxy it is configured as.
    let resp = tokio::time::timeout(
        DEADLINE,
        c.get(format!("http://127.0.0.1:{port}/v4"))
            .header("x-forwarded-for", "203.0.113.7")
            .send(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(resp.status(), 200);
    let echo: Value = resp.json().await.unwrap();
    let h = &echo["headers"];
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1", "{echo}");
    // `Forwarded` names the hop Tether saw (the client sent no `Forwarded` of its own).
    assert_eq!(h["forwarded"].as_str().unwrap().split(';').next(), Some("for=127.0.0.1"));
}
