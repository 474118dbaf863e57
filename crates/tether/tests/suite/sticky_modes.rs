//! Affinity modes beyond the cookie — `header`, `client_ip`, `app_cookie` — plus drain, key
//! rotation, restarts and hostile `Cookie` headers, all through a real Tether.

use std::collections::HashMap;

use tether_testkit::EchoServer;

use crate::support::fixture::*;

/// Backend "app" over `servers` with `weights` (in the same order).
fn weighted(servers: &[EchoServer], weights: &[u32]) -> Backend {
    let entries = servers.iter().zip(weights).map(|(s, w)| ServerEntry::from(s).weight(*w));
    Backend::new().servers(entries)
}

/// `sticky` affinity over the two `servers`, the first draining.
fn s0_drained(servers: &[EchoServer], sticky: Sticky) -> Config {
    let s0 = ServerEntry::from(&servers[0]).state("drain");
    config(Backend::new().server(s0).server(&servers[1]).sticky(sticky))
}

/// Affinity by header `X-Session-Id`.
fn by_header() -> Sticky {
    Sticky::header("X-Session-Id")
}

async fn spread(
    c: &reqwest::Client,
    url: &str,
    n: u32,
    header: &str,
    key: impl Fn(u32) -> String,
) -> HashMap<String, u32> {
    let mut counts = HashMap::new();
    for i in 0..n {
        let r = c.get(url).header(header, key(i)).send().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 200);
        *counts.entry(server_of(&r)).or_insert(0) += 1;
    }
    counts
}

fn assert_within_10_percent(counts: &HashMap<String, u32>, expected: &[(&str, f64)], n: u32) {
    for (name, share) in expected {
        let got = f64::from(*counts.get(*name).unwrap_or(&0)) / f64::from(n);
        assert!((got - share).abs() <= share * 0.10, "{name}: {got:.3} vs {share} ({counts:?})");
    }
}

#[tokio::test]
async fn header_mode_pins_one_key_and_spreads_keys_by_weight() {
    let servers = echo_servers(3);
    let t = start(config(weighted(&servers, &[1, 1, 2]).sticky(by_header()))).await;
    let c = client();
    let one = spread(&c, &t.url("web"), 1000, "x-session-id", |_| "user-42".into()).await;
    assert_eq!(one.len(), 1, "one key, one server: {one:?}");
    let many = spread(&c, &t.url("web"), 1000, "x-session-id", |i| format!("user-{i}")).await;
    assert_within_10_percent(&many, &[("s0", 0.25), ("s1", 0.25), ("s2", 0.5)], 1000);
}

#[tokio::test]
async fn client_ip_mode_follows_the_rightmost_untrusted_forwarded_for() {
    let servers = echo_servers(3);
    let app = weighted(&servers, &[1, 1, 2]).sticky(Sticky::client_ip());
    let t = start(config_on(web().trusted_proxies(&["127.0.0.0/8"]), app)).await;
    let c = client();
    let one = spread(&c, &t.url("web"), 1000, "x-forwarded-for", |i| {
        format!("6.6.6.{}, 198.51.100.7", i % 250)
    })
    .await;
    assert_eq!(one.len(), 1, "the client-written left part is ignored: {one:?}");
    let many = spread(&c, &t.url("web"), 1000, "x-forwarded-for", |i| {
        format!("10.{}.{}.1", i / 250, i % 250)
    })
    .await;
    assert_within_10_percent(&many, &[("s0", 0.25), ("s1", 0.25), ("s2", 0.5)], 1000);
}

#[tokio::test]
async fn client_ip_prefix_groups_a_nat_pool_on_one_server() {
    let servers = echo_servers(3);
    let by_slash_24 = Sticky::client_ip().set("client_ip_prefix_v4", 24);
    let t =
        start(config_on(web().trusted_proxies(&["127.0.0.1"]), app(&servers).sticky(by_slash_24)))
            .await;
    let pool = spread(&client(), &t.url("web"), 200, "x-forwarded-for", |i| {
        format!("203.0.113.{}", i % 250)
    })
    .await;
    assert_eq!(pool.len(), 1, "one /24, one server: {pool:?}");
}

#[tokio::test]
async fn app_cookie_learns_server_issued_ids_and_ignores_invented_ones() {
    let servers = echo_servers(3);
    let t = start(config(app(&servers).sticky(Sticky::app_cookie("JSESSIONID"))).admin()).await;
    let c = fresh_client();
    let sessions_url = admin_url(&t, "/api/v1/backends/app/sessions");
    let entries = || {
        let (c, url) = (c.clone(), sessions_url.clone());
        async move {
            let v: serde_json::Value = c.get(url).send().await.unwrap().json().await.unwrap();
            v["entries"].as_u64().unwrap()
        }
    };
    // Invented ids are never bound: the same made-up id keeps being balanced.
    let invented = spread(&c, &t.url("web"), 30, "cookie", |_| "JSESSIONID=made-up".into()).await;
    assert_eq!(invented.len(), 3, "an invented id pins nothing: {invented:?}");
    assert_eq!(entries().await, 0, "client-invented ids create no entries");
    // The application hands out an id: from then on it routes to that server.
    let login = c
        .get(format!("{}/login?cookie_name=JSESSIONID&cookie_value=abc123", t.url("web")))
        .send()
        .await
        .unwrap();
    let owner = server_of(&login);
    assert!(login.headers()["set-cookie"].to_str().unwrap().starts_with("JSESSIONID=abc123"));
    let learned =
        spread(&c, &t.url("web"), 1000, "cookie", |_| "theme=dark; JSESSIONID=abc123".into()).await;
    assert_eq!(learned, HashMap::from([(owner, 1000)]));
    assert_eq!(entries().await, 1, "only the server-issued id is in the table");
}

#[tokio::test]
async fn draining_server_keeps_its_sessions_and_takes_no_new_ones() {
    let servers = echo_servers(2);
    let mut t = start(config(app(&servers).sticky(by_header()))).await;
    let c = client();
    // Find a session pinned to s0.
    let mut on_s0 = None;
    for i in 0..50 {
        let r = c.get(t.url("web")).header("x-session-id", format!("k{i}")).send().await.unwrap();
        if server_of(&r) == "s0" {
            on_s0 = Some(format!("k{i}"));
            break;
        }
    }
    let on_s0 = on_s0.expect("some key hashes to s0");
    let out = t.reload(s0_drained(&servers, by_header())).await.unwrap();
    assert_eq!(out["message"], "config reloaded", "{out}");
    let kept = spread(&c, &t.url("web"), 100, "x-session-id", |_| on_s0.clone()).await;
    assert_eq!(
        kept,
        HashMap::from([("s0".to_owned(), 100)]),
        "existing session stays on the draining server"
    );
    let fresh = spread(&c, &t.url("web"), 200, "x-session-id", |i| format!("new-{i}")).await;
    assert_eq!(fresh, HashMap::from([("s1".to_owned(), 200)]), "no new session reaches it");
}

#[tokio::test]
async fn cookie_mode_drain_keeps_pinned_clients() {
    let servers = echo_servers(2);
    let cfg = config(app(&servers).sticky(Sticky::cookie()));
    let mut t = start(&cfg).await;
    let c = fresh_client();
    let mut cookie_for = HashMap::new();
    for _ in 0..4 {
        let r = c.get(t.url("web")).send().await.unwrap();
        cookie_for.insert(server_of(&r), tether_cookie(&r).unwrap());
    }
    let s0_cookie = cookie_for["s0"].clone();
    let drained = s0_drained(&servers, Sticky::cookie());
    assert_eq!(t.reload(drained).await.unwrap()["message"], "config reloaded");
    for _ in 0..50 {
        let r = c
            .get(t.url("web"))
            .header("cookie", format!("tether={s0_cookie}"))
            .send()
            .await
            .unwrap();
        assert_eq!(server_of(&r), "s0");
    }
    for _ in 0..50 {
        assert_eq!(server_of(&c.get(t.url("web")).send().await.unwrap()), "s1");
    }
}

const OLD_KEY: &str = "b2xkLWtleS1vbGQta2V5LW9sZC1rZXktb2xkLWtleSE=";

#[tokio::test]
async fn rotated_key_pins_while_listed_and_is_absent_once_removed() {
    let servers = echo_servers(3);
    let cfg = config(app(&servers).sticky(Sticky::cookie()));
    let mut t = start(cfg.clone().cookie_keys(&[OLD_KEY])).await;
    let c = client();
    let first = c.get(t.url("web")).send().await.unwrap();
    let (pinned, old_cookie) = (server_of(&first), tether_cookie(&first).unwrap());

    let rotated = cfg.clone().cookie_keys(&[KEY, OLD_KEY]);
    assert_eq!(t.reload(rotated).await.unwrap()["message"], "config reloaded");
    let r =
        c.get(t.url("web")).header("cookie", format!("tether={old_cookie}")).send().await.unwrap();
    assert_eq!(server_of(&r), pinned, "the old key still verifies");
    let reissued = tether_cookie(&r).expect("re-issued under the new key");
    assert_ne!(reissued, old_cookie);

    assert_eq!(t.reload(&cfg).await.unwrap()["message"], "config reloaded", "only the new key");
    let r =
        c.get(t.url("web")).header("cookie", format!("tether={reissued}")).send().await.unwrap();
    assert_eq!(server_of(&r), pinned, "the re-issued cookie pins under the new key");
    assert!(tether_cookie(&r).is_none());
    let r =
        c.get(t.url("web")).header("cookie", format!("tether={old_cookie}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(tether_cookie(&r).is_some(), "a cookie of a removed key is treated as absent");
}

#[tokio::test]
async fn a_cookie_issued_before_a_restart_pins_the_same_server_after_it() {
    let servers = echo_servers(3);
    let cfg = config(app(&servers).sticky(Sticky::cookie()));
    let c = client();
    let (pinned, cookie) = {
        let t = start(&cfg).await;
        let r = c.get(t.url("web")).send().await.unwrap();
        (server_of(&r), tether_cookie(&r).unwrap())
    };
    let t = start(&cfg).await;
    for _ in 0..20 {
        let r =
            c.get(t.url("web")).header("cookie", format!("tether={cookie}")).send().await.unwrap();
        assert_eq!(server_of(&r), pinned);
    }
}

#[tokio::test]
async fn malformed_cookie_headers_never_fail_the_request() {
    let servers = echo_servers(2);
    let t = start(config(app(&servers).sticky(Sticky::cookie()))).await;
    let c = client();
    let good = tether_cookie(&c.get(t.url("web")).send().await.unwrap()).unwrap();
    let big = "x".repeat(8 * 1024);
    let hostile = [
        String::new(),
        ";;;".into(),
        "tether".into(),
        "tether=".into(),
        "=tether".into(),
        format!("tether=\"{good}\""),
        format!("tether=junk; tether={good}"),
        format!("tether={good}; tether={good}"),
        format!("tether={big}"),
        format!("a={big}; tether={good}"),
        "tether=\t; ; =; tether".into(),
    ];
    for h in hostile {
        let r = c.get(t.url("web")).header("cookie", h.as_str()).send().await.unwrap();
        assert_eq!(r.status(), 200, "cookie header {:?}", &h[..h.len().min(40)]);
    }
}

#[tokio::test]
async fn table_bindings_survive_a_reload() {
    let servers = echo_servers(3);
    let mut t = start(config(weighted(&servers, &[1, 1, 1]).sticky(by_header()))).await;
    let c = client();
    let before = spread(&c, &t.url("web"), 30, "x-session-id", |_| "alice".into()).await;
    let reweighted = config(weighted(&servers, &[5, 1, 1]).sticky(by_header()));
    assert_eq!(t.reload(&reweighted).await.unwrap()["message"], "config reloaded");
    let after = spread(&c, &t.url("web"), 30, "x-session-id", |_| "alice".into()).await;
    assert_eq!(before, after);
}
