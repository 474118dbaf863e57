//! The balancing algorithms beyond round robin, end to end: hashing a request key (`hash`,
//! `maglev`), response time (`least_time`) and sessions (`least_sessions`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tether_testkit::DelayServer;
use tether_testkit::config::ServerEntry;

use crate::support::fixture::*;

/// The server that answers `path`.
async fn server_for(c: &reqwest::Client, t: &tether_testkit::Tether, path: &str) -> String {
    let r = c.get(format!("{}{path}", t.url("web"))).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    server_of(&r)
}

#[tokio::test]
async fn hash_by_uri_sends_one_uri_to_one_server_and_spreads_the_others() {
    let servers = echo_servers(3);
    let app = app(&servers).set("balance", "hash").set("hash_key", "uri");
    let t = start(config(app)).await;
    let c = client();
    let mut placed: HashMap<String, String> = HashMap::new();
    for i in 0..60 {
        let path = format!("/item/{i}?v=1");
        placed.insert(path.clone(), server_for(&c, &t, &path).await);
    }
    for (path, server) in &placed {
        assert_eq!(&server_for(&c, &t, path).await, server, "{path} moved");
    }
    let mut used: Vec<&String> = placed.values().collect();
    used.sort();
    used.dedup();
    assert_eq!(used.len(), 3, "60 URIs reach every server");
}

#[tokio::test]
async fn maglev_maps_keys_alike_on_two_instances_whatever_their_server_order() {
    let servers = echo_servers(4);
    let backend = |order: &[usize]| {
        let entries: Vec<ServerEntry> =
            order.iter().map(|&i| ServerEntry::from(&servers[i])).collect();
        Backend::new().servers(entries).set("balance", "maglev").set("hash_key", "header:X-User")
    };
    let a = start(config(backend(&[0, 1, 2, 3]))).await;
    let b = start(config(backend(&[3, 1, 0, 2]))).await;
    let c = client();
    let at = |t: &tether_testkit::Tether, user: String| {
        let req = c.get(t.url("web")).header("x-user", user);
        async move { server_of(&req.send().await.unwrap()) }
    };
    let mut spread: HashMap<String, u32> = HashMap::new();
    for i in 0..300 {
        let user = format!("user-{i}");
        let (on_a, on_b) = (at(&a, user.clone()).await, at(&b, user.clone()).await);
        assert_eq!(on_a, on_b, "{user}");
        *spread.entry(on_a).or_default() += 1;
    }
    assert_eq!(spread.len(), 4, "{spread:?}");
}

#[tokio::test]
async fn least_time_avoids_a_slow_server_and_returns_to_it_once_it_recovers() {
    let slow = DelayServer::start("slow", Duration::from_millis(50)).unwrap();
    let fast: Vec<DelayServer> = (0..2)
        .map(|i| DelayServer::start(&format!("fast{i}"), Duration::from_millis(1)).unwrap())
        .collect();
    let entries = std::iter::once(&slow)
        .chain(&fast)
        .map(|s| ServerEntry::new(s.name(), s.addr()))
        .collect::<Vec<_>>();
    let t = start(config(Backend::new().servers(entries).set("balance", "least_time"))).await;
    // 3,000 requests from 10 clients at once.
    let share_of_slow = |n: usize| {
        let url = t.url("web");
        async move {
            let tasks: Vec<_> = (0..10)
                .map(|_| {
                    let (c, url) = (client(), url.clone());
                    tokio::spawn(async move {
                        let mut slow = 0;
                        for _ in 0..n / 10 {
                            let r = c.get(&url).send().await.unwrap();
                            slow += u32::from(server_of(&r) == "slow");
                        }
                        slow
                    })
                })
                .collect();
            let mut slow = 0;
            for task in tasks {
                slow += task.await.unwrap();
            }
            f64::from(slow) / n as f64
        }
    };
    let share = share_of_slow(3000).await;
    assert!(share <= 0.15, "the slow server got {:.1}% of 3,000", share * 100.0);
    slow.set_delay(Duration::from_millis(1));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let share = share_of_slow(600).await;
        if (0.2..=0.45).contains(&share) {
            break;
        }
        assert!(Instant::now() < deadline, "10 s after recovery its share is still {share:.2}");
    }
}

#[tokio::test]
async fn least_sessions_fills_a_server_added_by_reload_until_it_matches() {
    let mut servers = echo_servers(4);
    let fourth = servers.pop().unwrap();
    let app_of = |entries: Vec<ServerEntry>| {
        Backend::new().servers(entries).set("balance", "least_sessions").sticky(Sticky::cookie())
    };
    let app = |servers: &[tether_testkit::EchoServer]| {
        app_of(servers.iter().map(ServerEntry::from).collect())
    };
    let mut t = start(config(app(&servers))).await;
    let c = fresh_client();
    let mut pinned: Vec<(String, String)> = Vec::new(); // (cookie, server)
    for _ in 0..900 {
        let r = c.get(t.url("web")).send().await.unwrap();
        pinned.push((tether_cookie(&r).unwrap(), server_of(&r)));
    }
    let mut all = servers.iter().collect::<Vec<_>>();
    all.push(&fourth);
    let entries: Vec<ServerEntry> = all.iter().map(|s| ServerEntry::from(*s)).collect();
    let outcome = t.reload(config(app_of(entries))).await.unwrap();
    assert_eq!(outcome["message"], "config reloaded", "{outcome}");
    let mut to_fourth = 0;
    for _ in 0..300 {
        let r = c.get(t.url("web")).send().await.unwrap();
        to_fourth += u32::from(server_of(&r) == fourth.name());
    }
    assert!(to_fourth >= 285, "{to_fourth} of the next 300 new sessions reached the new server");
    // Pinned sessions never move.
    for (cookie, server) in pinned.iter().step_by(9) {
        let r =
            c.get(t.url("web")).header("cookie", format!("tether={cookie}")).send().await.unwrap();
        assert_eq!(&server_of(&r), server);
    }
}

#[tokio::test]
async fn least_sessions_without_affinity_and_hash_without_a_key_are_config_errors() {
    let servers = echo_servers(1);
    for (backend, key, needle) in [
        (
            app(&servers).set("balance", "least_sessions"),
            "backends.app.balance",
            "needs [backends.NAME.sticky]",
        ),
        (app(&servers).set("balance", "hash"), "backends.app.hash_key", "needs hash_key"),
        (
            app(&servers).set("balance", "maglev").set("hash_key", "query"),
            "backends.app.hash_key",
            "invalid hash_key",
        ),
        (app(&servers).set("hash_key", "uri"), "backends.app.hash_key", "only used with"),
        (
            app(&servers)
                .set("balance", "hash")
                .set("hash_key", "uri")
                .set("hash_balance_factor", 50),
            "backends.app.hash_balance_factor",
            "out of range",
        ),
    ] {
        let out = tether_testkit::run_check(BIN, config(backend)).unwrap();
        assert_eq!(out.code, Some(1), "{}", out.stderr);
        assert!(out.stderr.contains(key) && out.stderr.contains(needle), "{key}: {}", out.stderr);
    }
}
