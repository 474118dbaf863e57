//! DNS service discovery through the real binary: a DNS server in the test process
//! (`tether_testkit::dns`) whose records change while Tether runs, echo servers on loopback
//! addresses the records name, and Tether re-resolving every 200 ms.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::Value;
use tether_testkit::dns::DnsServer;
use tether_testkit::{EchoServer, Tether, wait_until_async};

use crate::support::fixture::*;

const INTERVAL: &str = "200ms";
/// Long enough for a few resolutions on a loaded machine.
const SETTLE: Duration = Duration::from_secs(10);
const TTL: u32 = 1;

/// `127.0.0.N`.
fn loopback(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// Echo servers `s2`, `s3`, ... on `127.0.0.2`, `127.0.0.3`, ... all on one port (an A
/// record carries no port): the port the first got, retried while another address has it.
fn echo_on_loopbacks(n: u8) -> (Vec<EchoServer>, u16) {
    for _ in 0..20 {
        let first = EchoServer::start_on("s2", SocketAddr::from((loopback(2), 0))).unwrap();
        let port = first.addr().port();
        let mut all = vec![first];
        for i in 3..2 + n {
            match EchoServer::start_on(&format!("s{i}"), SocketAddr::from((loopback(i), port))) {
                Ok(s) => all.push(s),
                Err(_) => break,
            }
        }
        if all.len() == usize::from(n) {
            return (all, port);
        }
    }
    panic!("no port free on 127.0.0.2..{}", 1 + n);
}

/// Backend "app" found by `discovery` (`dns` or `srv` = `name`) at `dns`, every 200 ms.
fn discovered(kind: &str, name: &str, dns: &DnsServer) -> Backend {
    Backend::new()
        .set(&format!("discovery.{kind}"), name)
        .set("discovery.interval", INTERVAL)
        .set("discovery.nameservers", vec![dns.addr().to_string()])
}

/// The servers of backend "app" in the admin API: name → its JSON.
async fn servers(t: &Tether, c: &reqwest::Client) -> HashMap<String, Value> {
    let v = admin_json(c, t, "/api/v1/backends/app").await;
    let list = v["servers"].as_array().cloned().unwrap_or_default();
    list.into_iter().map(|s| (s["name"].as_str().unwrap_or_default().to_owned(), s)).collect()
}

/// Waits until the admin API shows exactly `names` in backend "app".
async fn wait_servers(t: &Tether, c: &reqwest::Client, names: &[String]) {
    let mut want = names.to_vec();
    want.sort();
    let reached = wait_until_async(SETTLE, || async {
        let mut got: Vec<String> = servers(t, c).await.into_keys().collect();
        got.sort();
        got == want
    })
    .await;
    let got: Vec<String> = servers(t, c).await.into_keys().collect();
    assert!(reached, "servers {got:?}, expected {want:?}");
}

/// The `x-server` of one request without a cookie, on a new connection.
async fn fresh_pick(t: &Tether) -> String {
    let r = fresh_client().get(t.url("web")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    server_of(&r)
}

/// `127.0.0.N:PORT`, a discovered server's name.
fn named(n: u8, port: u16) -> String {
    format!("127.0.0.{n}:{port}")
}

#[tokio::test]
async fn a_records_become_servers_and_a_new_record_gets_traffic_within_the_interval() {
    let (_echo, port) = echo_on_loopbacks(4);
    let dns = DnsServer::start().await.unwrap();
    dns.set_a("app.test", &[loopback(2), loopback(3), loopback(4)], TTL);
    let app = discovered("dns", &format!("app.test:{port}"), &dns);
    let t = start(config(app).admin()).await;
    let c = client();
    wait_servers(&t, &c, &[named(2, port), named(3, port), named(4, port)]).await;
    for (name, s) in servers(&t, &c).await {
        assert_eq!(s["source"], "dns", "{name}: {s}");
        assert_eq!(s["address"], name.as_str());
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        seen.insert(fresh_pick(&t).await);
    }
    assert_eq!(seen.len(), 3, "round robin over the three: {seen:?}");

    dns.set_a("app.test", &[loopback(2), loopback(3), loopback(4), loopback(5)], TTL);
    let changed = Instant::now();
    let reached = wait_until_async(SETTLE, || async { fresh_pick(&t).await == "s5" }).await;
    assert!(reached, "the fourth record's server got no traffic");
    // One interval plus a rebuild; the bound leaves room for a loaded machine.
    assert!(changed.elapsed() < Duration::from_secs(3), "took {:?}", changed.elapsed());
}

#[tokio::test]
async fn a_server_that_leaves_dns_keeps_its_pinned_sessions_until_they_end_with_drain() {
    let (_echo, port) = echo_on_loopbacks(3);
    let dns = DnsServer::start().await.unwrap();
    dns.set_a("app.test", &[loopback(2), loopback(3), loopback(4)], TTL);
    // A short idle timeout: the drained server's session count falls to 0 soon after its
    // last session stops.
    let sticky = Sticky::cookie().set("idle_timeout", "2s");
    let app = discovered("dns", &format!("app.test:{port}"), &dns).sticky(sticky);
    let t = start(config(app).admin()).await;
    let c = client();
    let leaving = named(4, port);
    wait_servers(&t, &c, &[named(2, port), named(3, port), leaving.clone()]).await;
    let session = Session { cookie: std::cell::RefCell::new(pinned_to(&t, "s4").await) };

    dns.set_a("app.test", &[loopback(2), loopback(3)], TTL);
    let drained = wait_until_async(SETTLE, || async {
        assert_eq!(session.get(&t, &c).await, "s4", "the pinned session moved");
        servers(&t, &c).await.get(&leaving).is_some_and(|s| s["state"] == "drain")
    })
    .await;
    assert!(drained, "{leaving} was not drained: {:?}", servers(&t, &c).await.get(&leaving));
    for i in 0..30 {
        assert_eq!(session.get(&t, &c).await, "s4", "pinned request {i}");
        assert_ne!(fresh_pick(&t).await, "s4", "new session {i} went to the draining server");
    }
    // Its one session stops: once the count falls to 0 the server goes.
    wait_servers(&t, &c, &[named(2, port), named(3, port)]).await;
}

/// A client's session: its cookie, as the last response set it (a refreshed cookie replaces
/// the old one, as in a browser; the idle timeout counts from the last refresh).
struct Session {
    cookie: std::cell::RefCell<String>,
}

impl Session {
    /// One request of the session; the server that answered.
    async fn get(&self, t: &Tether, c: &reqwest::Client) -> String {
        let cookie = format!("tether={}", self.cookie.borrow());
        let r = c.get(t.url("web")).header("cookie", cookie).send().await.unwrap();
        assert_eq!(r.status(), 200);
        if let Some(refreshed) = tether_cookie(&r) {
            *self.cookie.borrow_mut() = refreshed;
        }
        server_of(&r)
    }
}

/// A cookie of a new session that landed on `server`.
async fn pinned_to(t: &Tether, server: &str) -> String {
    for _ in 0..50 {
        let r = fresh_client().get(t.url("web")).send().await.unwrap();
        if server_of(&r) == server {
            return tether_cookie(&r).unwrap();
        }
    }
    panic!("no new session landed on {server}");
}

#[tokio::test]
async fn a_server_that_leaves_dns_is_gone_at_once_with_remove() {
    let (_echo, port) = echo_on_loopbacks(3);
    let dns = DnsServer::start().await.unwrap();
    dns.set_a("app.test", &[loopback(2), loopback(3), loopback(4)], TTL);
    let app = discovered("dns", &format!("app.test:{port}"), &dns)
        .set("discovery.on_removed", "remove")
        .sticky(Sticky::cookie());
    let t = start(config(app).admin()).await;
    let c = client();
    wait_servers(&t, &c, &[named(2, port), named(3, port), named(4, port)]).await;
    let cookie = pinned_to(&t, "s4").await;

    dns.set_a("app.test", &[loopback(2), loopback(3)], TTL);
    wait_servers(&t, &c, &[named(2, port), named(3, port)]).await;
    for i in 0..10 {
        let r = c.get(t.url("web")).header("cookie", format!("tether={cookie}")).send();
        assert_ne!(server_of(&r.await.unwrap()), "s4", "request {i} reached the removed server");
    }
}

#[tokio::test]
async fn a_dns_server_that_stops_answering_leaves_the_servers_serving_with_one_warning() {
    let (_echo, port) = echo_on_loopbacks(2);
    let dns = DnsServer::start().await.unwrap();
    dns.set_a("app.test", &[loopback(2), loopback(3)], TTL);
    let t = start(config(discovered("dns", &format!("app.test:{port}"), &dns)).admin()).await;
    let c = client();
    wait_servers(&t, &c, &[named(2, port), named(3, port)]).await;

    let mark = t.log_mark();
    dns.set_answering(false);
    let errors = || metric_sum(&t, "tether_discovery_errors_total", &[("backend", "app")]);
    assert!(wait_until_async(SETTLE, || async { errors().await >= 3.0 }).await, "no failures");
    let warned: Vec<Value> = t.logs()[mark..]
        .iter()
        .filter(|l| l["level"] == "WARN" && l["backend"] == "app")
        .cloned()
        .collect();
    assert_eq!(warned.len(), 1, "one warning for the streak: {warned:?}");
    assert!(warned[0]["message"].as_str().unwrap().contains("keeping the last known servers"));
    assert_eq!(servers(&t, &c).await.len(), 2);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(fresh_pick(&t).await);
    }
    assert_eq!(seen.len(), 2, "both servers still serve: {seen:?}");

    dns.set_answering(true);
    let again =
        t.wait_for_log_since(mark, |l| l["message"] == "DNS discovery resolves again", SETTLE);
    assert!(again.await.is_some(), "no recovery logged");
}

#[tokio::test]
async fn srv_weights_split_new_sessions_and_only_the_lowest_priority_serves() {
    let (a, b, fallback) = (echo("a"), echo("b"), echo("fallback"));
    let dns = DnsServer::start().await.unwrap();
    for target in ["a.test", "b.test", "fallback.test"] {
        dns.set_a(target, &[Ipv4Addr::LOCALHOST], TTL);
    }
    let port = |s: &EchoServer| s.addr().port();
    let records = [
        (10, 1, port(&a), "a.test"),
        (10, 3, port(&b), "b.test"),
        (20, 100, port(&fallback), "fallback.test"),
    ];
    dns.set_srv("_http._tcp.app.test", &records, TTL);
    let app = discovered("srv", "_http._tcp.app.test", &dns).sticky(Sticky::cookie());
    let t = start(config(app).admin()).await;
    let c = client();
    let (name_a, name_b) = (format!("a.test:{}", port(&a)), format!("b.test:{}", port(&b)));
    wait_servers(&t, &c, &[name_a.clone(), name_b.clone()]).await;
    let listed = servers(&t, &c).await;
    assert_eq!(
        (listed[&name_a]["weight"].as_u64(), listed[&name_b]["weight"].as_u64()),
        (Some(1), Some(3))
    );

    let mut picks: HashMap<String, u32> = HashMap::new();
    for _ in 0..400 {
        *picks.entry(fresh_pick(&t).await).or_default() += 1;
    }
    let share_b = f64::from(picks.get("b").copied().unwrap_or(0)) / 400.0;
    assert!((0.70..=0.80).contains(&share_b), "b's share {share_b}: {picks:?}");
    assert_eq!(picks.get("fallback"), None, "a higher priority's record served: {picks:?}");
}

fn echo(name: &str) -> EchoServer {
    EchoServer::start(name).unwrap()
}

#[tokio::test]
async fn until_the_first_resolution_the_backend_has_its_static_servers() {
    let (_echo, port) = echo_on_loopbacks(1);
    let fixed = echo("fixed");
    let dns = DnsServer::start().await.unwrap();
    dns.set_answering(false);
    let app = discovered("dns", &format!("app.test:{port}"), &dns).server(&fixed);
    let t = start(config(app).admin()).await;
    let c = client();
    let started = t.wait_for_log(
        |l| l["message"].as_str().is_some_and(|m| m.starts_with("DNS discovery started")),
        SETTLE,
    );
    assert!(started.await.is_some(), "discovery start not logged");
    assert_eq!(fresh_pick(&t).await, "fixed");
    assert_eq!(servers(&t, &c).await["fixed"]["source"], "config");

    dns.set_a("app.test", &[loopback(2)], TTL);
    dns.set_answering(true);
    wait_servers(&t, &c, &["fixed".to_owned(), named(2, port)]).await;
    let reached = wait_until_async(SETTLE, || async { fresh_pick(&t).await == "s2" }).await;
    assert!(reached, "the discovered server got no traffic beside the static one");
}

#[tokio::test]
async fn the_admin_api_sets_a_discovered_servers_state_but_leaves_weight_and_removal_to_dns() {
    let (_echo, port) = echo_on_loopbacks(2);
    let dns = DnsServer::start().await.unwrap();
    dns.set_a("app.test", &[loopback(2), loopback(3)], TTL);
    let t = start(config(discovered("dns", &format!("app.test:{port}"), &dns)).admin()).await;
    let c = client();
    wait_servers(&t, &c, &[named(2, port), named(3, port)]).await;
    let url = admin_url(&t, &format!("/api/v1/backends/app/servers/{}", named(2, port)));
    let weight = c.patch(&url).body("{\"weight\":5}").send().await.unwrap();
    assert_eq!(weight.status(), 409);
    let message = weight.json::<Value>().await.unwrap()["error"].as_str().unwrap().to_owned();
    assert!(message.contains("DNS discovery"), "{message}");
    assert_eq!(c.delete(&url).send().await.unwrap().status(), 409);
    let maint = c.patch(&url).body("{\"state\":\"maint\"}").send().await.unwrap();
    assert_eq!(maint.status(), 200);
    let listed = servers(&t, &c).await;
    assert_eq!(listed[&named(2, port)]["state"], "maint");
    assert_eq!(listed[&named(2, port)]["weight"], 1);
    for _ in 0..4 {
        assert_eq!(fresh_pick(&t).await, "s3", "a server in maintenance took a request");
    }
}

#[test]
fn discovery_errors_name_their_keys() {
    let base = |d: Backend| config(d).to_string();
    let cases = [
        (
            Backend::new().set("discovery.dns", "a.test:80").set("discovery.srv", "_x._tcp.a.test"),
            "backends.app.discovery.srv",
        ),
        (Backend::new().set("discovery.interval", "1s"), "backends.app.discovery"),
        (
            Backend::new()
                .set("discovery.dns", "a.test:80")
                .set("discovery.nameservers", vec!["dns.local:53"]),
            "backends.app.discovery.nameservers[0]",
        ),
        (
            Backend::new().set("discovery.dns", "a.test:80").set("discovery.interval", "soon"),
            "backends.app.discovery.interval",
        ),
        (
            Backend::new().set("discovery.dns", "a.test:80").set("discovery.interval", "10ms"),
            "backends.app.discovery.interval",
        ),
        (Backend::new().set("discovery.dns", "a.test"), "backends.app.discovery.dns"),
        (
            Backend::new().set("discovery.dns", "a.test:80").set("discovery.on_removed", "keep"),
            "backends.app.discovery.on_removed",
        ),
    ];
    for (backend, key) in cases {
        let out = tether_testkit::run_check(BIN, base(backend)).unwrap();
        assert_eq!(out.code, Some(1), "{key}: {}", out.stderr);
        assert!(out.stderr.contains(key), "{key} not named: {}", out.stderr);
    }
    let ok = Backend::new().set("discovery.srv", "_http._tcp.app.test");
    let out = tether_testkit::run_check(BIN, base(ok)).unwrap();
    assert_eq!(out.code, Some(0), "a backend with discovery needs no servers: {}", out.stderr);
}
