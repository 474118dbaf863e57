//! TLS and HTTP/2 from Tether to its servers (`backends.NAME.tls`, `backends.NAME.http2`),
//! through a real Tether in front of real echo servers on loopback: certificate
//! verification (private CA, server name, system roots), connection reuse, HTTP/2 over
//! prior knowledge and over ALPN, health checks over TLS, the Host the server sees, and the
//! configuration errors `tether check` reports.
//!
//! Certificates come from a throwaway CA ([`TestCa`]); the servers that speak TLS are
//! [`EchoServer::start_tls`], whose echo JSON says whether a request came over TLS, with
//! which SNI and which ALPN protocol.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tether_testkit::tls::{Pki, TestCa, write_pem};
use tether_testkit::{EchoServer, Tether, run_check, wait_until_async};

use crate::support::fixture::*;

/// How long a health transition or a log line may take on a loaded machine.
const TRANSITION: Duration = Duration::from_secs(10);

/// Upper bound for one batch of requests.
const DEADLINE: Duration = Duration::from_secs(20);

/// `/healthz` every 200 ms, one result enough to change state.
fn quick_health_check() -> HealthCheck {
    HealthCheck::http("/healthz").interval("200ms").timeout("1s").rise(1).fall(1)
}

// === helpers ===

/// A CA and a certificate for `localhost` and `127.0.0.1` signed by it.
fn loopback_pki(tag: &str) -> Pki {
    names_pki(tag, &["localhost", "127.0.0.1"])
}

/// A CA and a certificate for `names` signed by it.
fn names_pki(tag: &str, names: &[&str]) -> Pki {
    Pki::new(&format!("upstream-{tag}"), names).unwrap()
}

/// `n` TLS echo servers s0, s1, ... presenting `pki`'s certificate.
fn tls_servers(pki: &Pki, n: usize) -> Vec<EchoServer> {
    (0..n).map(|i| EchoServer::start_tls(&format!("s{i}"), &pki.cert).unwrap()).collect()
}

/// Backend "app" over `servers`, connecting over TLS trusting `pki`'s CA (see [`trusting`]).
fn pki_tls(servers: &[EchoServer], pki: &Pki, server_name: Option<&str>) -> Backend {
    trusting(app(servers), &pki.ca_file, server_name)
}

/// `backend` connecting over TLS, trusting the CA in `ca_file` and sending (and verifying)
/// `server_name` when given.
fn trusting(backend: Backend, ca_file: &Path, server_name: Option<&str>) -> Backend {
    let backend = backend.tls_ca_file(ca_file);
    match server_name {
        Some(name) => backend.set("tls.server_name", name),
        None => backend,
    }
}

/// GET `path` through listener "web" (with `host` as the Host header when given): the status
/// and the body parsed as JSON (`Null` when it is not JSON, e.g. a 502 page).
async fn get(t: &Tether, c: &reqwest::Client, path: &str, host: Option<&str>) -> (u16, Value) {
    let mut req = c.get(format!("{}{path}", t.url("web")));
    if let Some(host) = host {
        req = req.header("host", host);
    }
    let resp = tokio::time::timeout(DEADLINE, req.send()).await.unwrap().unwrap();
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(DEADLINE, resp.bytes()).await.unwrap().unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// `n` GETs of `path` sent all at once (each on its own client connection to Tether).
async fn parallel_gets(t: &Tether, path: &str, n: usize) -> Vec<(u16, Value)> {
    let c = client();
    let requests = (0..n).map(|_| get(t, &c, path, None));
    tokio::time::timeout(DEADLINE, futures_util::future::join_all(requests)).await.unwrap()
}

/// Asserts that `json` is the echo of a request that reached a server over TLS.
fn assert_over_tls(json: &Value, sni: Option<&str>, version: &str) {
    assert_eq!(json["tls"], true, "the server did not get the request over TLS: {json}");
    assert_eq!(json["sni"].as_str(), sni, "SNI the server saw: {json}");
    assert_eq!(json["version"], version, "{json}");
}

/// Waits for an "upstream request failed" line whose error satisfies `says`; panics with
/// every such line seen when none comes.
async fn upstream_failure_logged(t: &Tether, says: impl Fn(&str) -> bool) -> Value {
    let failed = |l: &Value| l["message"] == "upstream request failed";
    let found =
        t.wait_for_log(|l| failed(l) && l["error"].as_str().is_some_and(&says), TRANSITION).await;
    found.unwrap_or_else(|| {
        let seen: Vec<Value> = t.logs().into_iter().filter(failed).collect();
        panic!("no matching \"upstream request failed\" line; such lines: {seen:#?}")
    })
}

// === 1. TLS to the servers ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_backend_with_a_private_ca_reaches_the_server_over_tls_and_reuses_connections() {
    let pki = loopback_pki("private-ca");
    let servers = tls_servers(&pki, 1);
    let t = start(config(pki_tls(&servers, &pki, Some("localhost")))).await;
    let c = client();

    for i in 0..30 {
        let (status, json) = get(&t, &c, &format!("/pooled/{i}"), None).await;
        assert_eq!(status, 200, "request {i}: {json}");
        assert_eq!(json["path"], format!("/pooled/{i}"));
        assert_eq!(json["server"], "s0");
        assert_over_tls(&json, Some("localhost"), "HTTP/1.1");
        assert_ne!(json["alpn"], "h2", "HTTP/2 was negotiated without `http2 = true`: {json}");
    }
    assert_eq!(servers[0].requests(), 30);
    // One client connection, requests one after another: one pooled upstream connection
    // (two allowed, should the pool ever race a closing one).
    assert!(
        servers[0].connections() <= 2,
        "30 sequential requests took {} TLS connections: no keep-alive to the server",
        servers[0].connections()
    );
}

#[tokio::test]
async fn without_server_name_the_certificate_is_verified_for_the_server_ip() {
    // A certificate for 127.0.0.1 (IP SAN): verified by the address, no SNI sent.
    let with_ip = names_pki("by-ip", &["127.0.0.1"]);
    let servers = tls_servers(&with_ip, 1);
    let t = start(config(pki_tls(&servers, &with_ip, None))).await;
    let (status, json) = get(&t, &client(), "/by-ip", None).await;
    assert_eq!(status, 200, "{json}");
    // rustls sends no SNI for an IP address.
    assert_over_tls(&json, None, "HTTP/1.1");
    drop(t);

    // A certificate for localhost only does not cover 127.0.0.1.
    let dns_only = names_pki("dns-only", &["localhost"]);
    let servers = tls_servers(&dns_only, 1);
    let t = start(config(pki_tls(&servers, &dns_only, None))).await;
    let (status, _) = get(&t, &client(), "/by-ip", None).await;
    assert_eq!(status, 502, "a certificate for localhost was accepted for 127.0.0.1");
    assert_eq!(servers[0].requests(), 0);
    upstream_failure_logged(&t, |e| e.contains("not valid for name \"127.0.0.1\"")).await;
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_gets_502_and_is_logged() {
    let pki = loopback_pki("wrong-ca");
    let servers = tls_servers(&pki, 1);
    let other = TestCa::new("some other CA").unwrap();
    let other_ca = write_pem(pki.dir(), "other-ca.pem", &other.cert_pem()).unwrap();
    let t = start(config(trusting(app(&servers), &other_ca, Some("localhost")))).await;
    let c = client();

    for i in 0..3 {
        let (status, body) = get(&t, &c, "/wrong-ca", None).await;
        assert_eq!(status, 502, "request {i} through an untrusted server: {body}");
    }
    assert!(servers[0].connections() >= 1, "Tether never connected to the server");
    assert_eq!(servers[0].requests(), 0, "a request was sent over an unverified connection");
    let line = upstream_failure_logged(&t, |e| e.contains("UnknownIssuer")).await;
    assert_eq!(line["server"], "s0", "{line}");
    // Sanity: the right CA works with the same servers.
    drop(t);
    let t = start(config(pki_tls(&servers, &pki, Some("localhost")))).await;
    assert_eq!(get(&t, &c, "/right-ca", None).await.0, 200);
}

#[tokio::test]
async fn a_server_name_the_certificate_does_not_cover_gets_502() {
    let pki = loopback_pki("wrong-name");
    let servers = tls_servers(&pki, 1);
    let t = start(config(pki_tls(&servers, &pki, Some("other.test")))).await;
    let c = client();

    for i in 0..3 {
        let (status, body) = get(&t, &c, "/wrong-name", None).await;
        assert_eq!(
            status, 502,
            "request {i} to a server whose certificate is not for other.test: {body}"
        );
    }
    assert!(servers[0].connections() >= 1, "Tether never connected to the server");
    assert_eq!(servers[0].requests(), 0, "a request was sent over an unverified connection");
    upstream_failure_logged(&t, |e| e.contains("not valid for name \"other.test\"")).await;
}

#[tokio::test]
async fn tls_true_verifies_against_the_system_roots_which_do_not_hold_the_test_ca() {
    let pki = loopback_pki("system-roots");
    let servers = tls_servers(&pki, 1);
    let t = start(config(app(&servers).set("tls", true))).await;

    let (status, body) = get(&t, &client(), "/system-roots", None).await;
    assert_eq!(status, 502, "a certificate from a private CA passed the system roots: {body}");
    assert_eq!(servers[0].requests(), 0);
    assert!(servers[0].connections() >= 1, "Tether never connected to the server");
    upstream_failure_logged(&t, |e| e.contains("UnknownIssuer")).await;
}

#[tokio::test]
async fn a_plaintext_backend_does_not_speak_tls() {
    // The control for every "over TLS" assertion above: without `tls`, the echo says so.
    let servers = echo_servers(1);
    let t = start(config(app(&servers))).await;
    let (status, json) = get(&t, &client(), "/plain", None).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["tls"], false, "{json}");
    assert_eq!(json["version"], "HTTP/1.1", "{json}");

    // And a plaintext backend pointed at a TLS server fails instead of leaking plaintext.
    let pki = loopback_pki("plain-to-tls");
    let tls_servers = tls_servers(&pki, 1);
    let t = start(config(app(&tls_servers))).await;
    let (status, _) = get(&t, &client(), "/plain", None).await;
    assert_eq!(status, 502);
    assert_eq!(tls_servers[0].requests(), 0);
}

// === 2. HTTP/2 to the servers ===

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http2_to_a_plaintext_server_uses_prior_knowledge_and_multiplexes() {
    let servers = echo_servers(1);
    let t = start(config(app(&servers).set("http2", true))).await;

    // 50 requests at once, each slow enough that they overlap at the server.
    let results = parallel_gets(&t, "/slow?ms=300", 50).await;
    for (i, (status, json)) in results.iter().enumerate() {
        assert_eq!(*status, 200, "request {i}: {json}");
        assert_eq!(json["version"], "HTTP/2.0", "request {i} reached the server as: {json}");
        assert_eq!(json["tls"], false, "{json}");
    }
    assert_eq!(servers[0].requests(), 50);
    assert!(
        servers[0].connections() <= 2,
        "50 concurrent HTTP/2 requests opened {} connections to the server: no multiplexing",
        servers[0].connections()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http2_over_tls_negotiates_h2_by_alpn_and_multiplexes() {
    let pki = loopback_pki("h2-tls");
    let servers = tls_servers(&pki, 1);
    let t = start(config(pki_tls(&servers, &pki, Some("localhost")).set("http2", true))).await;

    let results = parallel_gets(&t, "/slow?ms=300", 30).await;
    for (i, (status, json)) in results.iter().enumerate() {
        assert_eq!(*status, 200, "request {i}: {json}");
        assert_over_tls(json, Some("localhost"), "HTTP/2.0");
        assert_eq!(json["alpn"], "h2", "ALPN did not settle on h2: {json}");
    }
    assert_eq!(servers[0].requests(), 30);
    assert!(
        servers[0].connections() <= 2,
        "30 concurrent HTTP/2 requests opened {} TLS connections to the server",
        servers[0].connections()
    );
}

// === 3. Health checks over TLS ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_of_a_tls_backend_use_tls_and_see_a_server_stop() {
    let pki = loopback_pki("health");
    let mut servers = tls_servers(&pki, 2);
    let backend = pki_tls(&servers, &pki, Some("localhost")).health_check(quick_health_check());
    let t = start(config(backend).admin()).await;
    let c = client();

    // Checks pass only if they speak TLS and verify: a plaintext check fails (fall = 1).
    wait_health(&t, &c, "s0", "up", TRANSITION).await;
    wait_health(&t, &c, "s1", "up", TRANSITION).await;
    let checks_reach =
        wait_until_async(TRANSITION, || async { servers.iter().all(|s| s.requests() >= 2) }).await;
    assert!(
        checks_reach,
        "health checks did not reach both servers: {} and {} requests",
        servers[0].requests(),
        servers[1].requests()
    );
    assert!(
        !t.logs().iter().any(|l| l["message"] == "server health changed" && l["to"] == "down"),
        "a healthy TLS server was marked down: {:#?}",
        t.logs()
    );

    let mark = t.log_mark();
    servers[0].stop().await;
    let down = t
        .wait_for_log_since(
            mark,
            |l| l["message"] == "server health changed" && l["server"] == "s0" && l["to"] == "down",
            TRANSITION,
        )
        .await;
    assert!(down.is_some(), "stopping s0 did not mark it down");
    wait_health(&t, &c, "s0", "down", TRANSITION).await;
    for i in 0..10 {
        let (status, json) = get(&t, &c, "/after-stop", None).await;
        assert_eq!(status, 200, "request {i}: {json}");
        assert_eq!(json["server"], "s1", "request {i} went to the stopped server: {json}");
        assert_eq!(json["tls"], true, "{json}");
    }

    // Back on the same port (still TLS): up again.
    servers[0].restart().await.unwrap();
    wait_health(&t, &c, "s0", "up", TRANSITION).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_check_over_tls_fails_when_the_certificate_does_not_verify() {
    let pki = loopback_pki("health-bad-name");
    let servers = tls_servers(&pki, 1);
    let backend = pki_tls(&servers, &pki, Some("other.test")).health_check(quick_health_check());
    let t = start(config(backend).admin()).await;
    let c = client();

    let json = wait_health(&t, &c, "s0", "down", TRANSITION).await;
    let down = t
        .wait_for_log(
            |l| l["message"] == "server health changed" && l["server"] == "s0" && l["to"] == "down",
            TRANSITION,
        )
        .await
        .unwrap();
    let reason = down["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("tls") && reason.contains("not valid for name"),
        "the down reason does not say the TLS check failed: {down}; admin: {json}"
    );
    assert_eq!(servers[0].requests(), 0, "a check was sent over an unverified connection");
}

// === 4. The Host the server sees ===

#[tokio::test]
async fn the_server_sees_the_clients_host_over_http1_and_http2() {
    const HOST: &str = "app.example.test:8443";
    let pki = loopback_pki("host");
    // (what, HTTP/2 to the server, over TLS)
    let cases =
        [("http1", false, false), ("http2 (h2c)", true, false), ("http2 over TLS", true, true)];
    // Every case runs, and the failures are reported together.
    let mut wrong = Vec::new();
    for (what, http2, tls) in cases {
        let servers = if tls { tls_servers(&pki, 1) } else { echo_servers(1) };
        let backend = if tls { pki_tls(&servers, &pki, Some("localhost")) } else { app(&servers) };
        let t = start(config(backend.set("http2", http2))).await;
        let (status, json) = get(&t, &client(), "/host", Some(HOST)).await;
        assert_eq!(status, 200, "{what}: {json}");
        let expected_version = if http2 { "HTTP/2.0" } else { "HTTP/1.1" };
        assert_eq!(json["version"], expected_version, "{what}: {json}");
        let host = json["headers"]["host"].as_str();
        let authority = json["authority"].as_str();
        if host.is_none() && authority.is_none() {
            wrong.push(format!("{what}: the server got neither Host nor :authority: {json}"));
        }
        // Whatever names the host must name the client's: an HTTP/2 server reads :authority
        // first (Go's net/http ignores Host when :authority is present, RFC 9113 8.3.1 lets a
        // server refuse a Host that differs from it), so it must not be the server address.
        if host.is_some_and(|h| h != HOST) {
            wrong.push(format!("{what}: the Host header is {host:?}, not {HOST:?}: {json}"));
        }
        if authority.is_some_and(|a| a != HOST) {
            wrong.push(format!("{what}: :authority is {authority:?}, not {HOST:?}: {json}"));
        }
    }
    assert!(wrong.is_empty(), "the server did not see the client's host:\n{}", wrong.join("\n"));
}

// === 5. Configuration errors ===

#[tokio::test]
async fn bad_upstream_tls_settings_fail_check_naming_the_key() {
    let servers = echo_servers(1);
    let pki = loopback_pki("check");
    let not_pem = write_pem(pki.dir(), "not-a-cert.pem", "hello\n").unwrap();
    let missing = pki.dir().join("missing-ca.pem");
    let good_ca = || pki_tls(&servers, &pki, None);

    // (what, the backend, the key path the error must name, what it must say)
    let cases = [
        (
            "missing ca_file",
            trusting(app(&servers), &missing, None),
            "backends.app.tls.ca_file",
            vec!["cannot read"],
        ),
        (
            "ca_file that is not PEM",
            trusting(app(&servers), &not_pem, None),
            "backends.app.tls.ca_file",
            vec!["no PEM certificate"],
        ),
        (
            "unknown key",
            good_ca().set("tls.verify", false),
            "backends.app.tls.verify",
            vec!["unknown"],
        ),
        (
            "bad server_name",
            good_ca().set("tls.server_name", "not a name!"),
            "backends.app.tls.server_name",
            vec!["not a name!"],
        ),
        (
            "server_name not a string",
            good_ca().set("tls.server_name", 1),
            "backends.app.tls.server_name",
            vec!["string"],
        ),
        ("tls = \"yes\"", app(&servers).set("tls", "yes"), "backends.app.tls", vec!["expected"]),
        (
            "http2 = \"yes\"",
            app(&servers).set("http2", "yes"),
            "backends.app.http2",
            vec!["boolean"],
        ),
    ];
    for (what, backend, key, says) in cases {
        let out = run_check(BIN, config(backend)).unwrap();
        assert_eq!(out.code, Some(1), "{what}: stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
        let line = out
            .stderr
            .lines()
            .find(|l| l.contains(&format!("{key} (line")) || l.contains(&format!("{key}: ")))
            .unwrap_or_else(|| panic!("{what}: no error naming {key}; stderr:\n{}", out.stderr));
        assert!(
            says.iter().any(|s| line.contains(s)),
            "{what}: the error does not say {says:?}: {line}"
        );
    }

    // The good forms pass.
    for backend in [
        pki_tls(&servers, &pki, Some("localhost")),
        pki_tls(&servers, &pki, Some("127.0.0.1")),
        good_ca().set("http2", true),
        app(&servers).set("tls", true).set("http2", true),
        app(&servers).set("tls", false).set("http2", false),
    ] {
        let file = config(backend);
        let out = run_check(BIN, &file).unwrap();
        assert_eq!(out.code, Some(0), "{file}: stderr:\n{}", out.stderr);
    }
}
