//! Per-server connection limits, the bounded queue, and what a full pinned server does to
//! its sessions (`on_server_full`), through a real Tether.

// Test helpers may unwrap: a failure here is a failed test, with the panic as its report.
#![allow(clippy::unwrap_used)]

mod fixture;

use std::time::{Duration, Instant};

use fixture::*;
use futures_util::future::join_all;

fn limited(servers: &[tether_testkit::EchoServer], limits: &str, sticky: Option<&str>) -> String {
    config(servers, &format!("limits = {{ {limits} }}"), sticky)
}

#[tokio::test]
async fn the_eleventh_request_queues_and_a_full_queue_gets_503_with_retry_after() {
    let servers = echo_servers(1);
    let cfg = limited(
        &servers,
        "max_connections_per_server = 10, queue_size = 5, queue_timeout = \"10s\"",
        None,
    );
    let t = start(&cfg).await;
    let c = client();
    // Long enough that all 16 requests arrive while the first 10 still hold their slots, even
    // on a loaded machine.
    let url = format!("{}/slow?ms=4000", t.url("web"));
    let started = Instant::now();
    let replies = join_all((0..16).map(|_| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            let r = c.get(url).send().await.unwrap();
            (r.status().as_u16(), r.headers().get("retry-after").is_some(), started.elapsed())
        }
    }))
    .await;
    let ok: Vec<_> = replies.iter().filter(|r| r.0 == 200).collect();
    let refused: Vec<_> = replies.iter().filter(|r| r.0 == 503).collect();
    assert_eq!((ok.len(), refused.len()), (15, 1), "{replies:?}");
    assert!(refused[0].1, "503 carries Retry-After");
    assert!(
        refused[0].2 < Duration::from_millis(3500),
        "the refusal is immediate: {:?}",
        refused[0].2
    );
    let queued = ok.iter().filter(|r| r.2 >= Duration::from_millis(7500)).count();
    assert_eq!(queued, 5, "five waited for a slot, then were served: {replies:?}");
    assert!(servers[0].requests() <= 15);
}

#[tokio::test]
async fn a_queued_request_gives_up_after_the_queue_timeout() {
    let servers = echo_servers(1);
    let cfg = limited(
        &servers,
        "max_connections_per_server = 1, queue_size = 4, queue_timeout = \"200ms\"",
        None,
    );
    let t = start(&cfg).await;
    let c = client();
    let slow = tokio::spawn({
        let (c, url) = (c.clone(), format!("{}/slow?ms=1500", t.url("web")));
        async move { c.get(url).send().await.unwrap().status() }
    });
    assert!(
        tether_testkit::wait_until(Duration::from_secs(5), || servers[0].requests() == 1).await
    );
    let started = Instant::now();
    let r = c.get(t.url("web")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(started.elapsed() >= Duration::from_millis(180), "it waited: {:?}", started.elapsed());
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "and gave up: {:?}",
        started.elapsed()
    );
    assert_eq!(slow.await.unwrap(), 200, "the request holding the slot is unaffected");
}

/// Pins key `k` to a server, then fills that server with one slow request of the same key.
async fn pin_and_fill(
    t: &tether_testkit::Tether,
    c: &reqwest::Client,
    servers: &[tether_testkit::EchoServer],
) -> (String, tokio::task::JoinHandle<u16>) {
    let first = c.get(t.url("web")).header("x-session-id", "k").send().await.unwrap();
    let owner = server_of(&first);
    let before: u64 = servers.iter().map(|s| s.requests()).sum();
    let slow = tokio::spawn({
        let (c, url) = (c.clone(), format!("{}/slow?ms=1500", t.url("web")));
        async move { c.get(url).header("x-session-id", "k").send().await.unwrap().status().as_u16() }
    });
    let arrived = tether_testkit::wait_until(Duration::from_secs(5), || {
        servers.iter().map(|s| s.requests()).sum::<u64>() > before
    })
    .await;
    assert!(arrived);
    (owner, slow)
}

const HEADER: &str = "mode = \"header\"\nheader = \"X-Session-Id\"";

#[tokio::test]
async fn spill_serves_elsewhere_once_and_keeps_the_pin() {
    let servers = echo_servers(2);
    let t = start(&limited(
        &servers,
        "max_connections_per_server = 1",
        Some(&format!("{HEADER}\non_server_full = \"spill\"")),
    ))
    .await;
    let c = client();
    let (owner, slow) = pin_and_fill(&t, &c, &servers).await;
    let r = c.get(t.url("web")).header("x-session-id", "k").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_ne!(server_of(&r), owner, "spilled to the other server");
    assert_eq!(slow.await.unwrap(), 200);
    let r = c.get(t.url("web")).header("x-session-id", "k").send().await.unwrap();
    assert_eq!(server_of(&r), owner, "the pin was kept");
    assert!(t.wait_for_log(|l| l["affinity"] == "spilled", Duration::from_secs(5)).await.is_some());
}

#[tokio::test]
async fn redispatch_moves_the_pin_when_the_server_is_full() {
    let servers = echo_servers(2);
    let t = start(&limited(
        &servers,
        "max_connections_per_server = 1",
        Some(&format!("{HEADER}\non_server_full = \"redispatch\"")),
    ))
    .await;
    let c = client();
    let (owner, slow) = pin_and_fill(&t, &c, &servers).await;
    let r = c.get(t.url("web")).header("x-session-id", "k").send().await.unwrap();
    let moved = server_of(&r);
    assert_ne!(moved, owner);
    assert_eq!(slow.await.unwrap(), 200);
    let r = c.get(t.url("web")).header("x-session-id", "k").send().await.unwrap();
    assert_eq!(server_of(&r), moved, "re-pinned");
}

#[tokio::test]
async fn queue_policy_waits_for_the_pinned_server() {
    let servers = echo_servers(2);
    let t =
        start(&limited(&servers, "max_connections_per_server = 1, queue_size = 10", Some(HEADER)))
            .await;
    let c = client();
    let (owner, slow) = pin_and_fill(&t, &c, &servers).await;
    let r = c.get(t.url("web")).header("x-session-id", "k").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(server_of(&r), owner, "waited for its own server");
    assert_eq!(slow.await.unwrap(), 200);
}

#[tokio::test]
async fn a_server_added_by_reload_ramps_up_under_slow_start() {
    let servers = echo_servers(3);
    let cfg = |n: usize| config(&servers[..n], "slow_start = \"60s\"", None);
    let mut t = start(&cfg(2)).await;
    assert_eq!(t.reload(&cfg(3)).await.unwrap()["message"], "config reloaded");
    let c = fresh_client();
    let mut to_new = 0;
    for _ in 0..300 {
        if server_of(&c.get(t.url("web")).send().await.unwrap()) == "s2" {
            to_new += 1;
        }
    }
    // Without slow start round robin would give it 100 of 300; at the start of a 60 s ramp
    // it takes about a tenth of its share.
    assert!(to_new > 0, "the new server gets some traffic");
    assert!(to_new < 50, "but only a small share while ramping: {to_new}");
}
