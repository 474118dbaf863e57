//! Zero-loss reloads: 60 s of ~1,000 req/s with a reload every 2 s, a server added and one
//! removed along the way. No request fails, no connection is refused, sticky clients keep
//! their server, and the counters of unchanged servers keep counting.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use tether_testkit::EchoServer;

use crate::fixture::*;

const RUN: Duration = Duration::from_secs(60);
const WORKERS: u64 = 10;
const PER_WORKER_RPS: u64 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_every_2s_under_1000_rps_lose_nothing_and_keep_sessions_and_counters() {
    let all = echo_servers(4); // s0, s1 stay; s2 is removed; s3 is added
    let mut t = start(reload_config(&all[..3])).await;
    let url = t.url("web");
    let admin = format!("http://{}/api/v1/backends/app", t.listener_addr("admin"));

    // Sticky clients pinned to servers that stay.
    let c = client();
    let mut sticky = Vec::new();
    while sticky.len() < 4 {
        let r = c.get(&url).send().await.unwrap();
        let server = server_of(&r);
        if server == "s0" || server == "s1" {
            sticky.push((server, tether_cookie(&r).unwrap()));
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), url.clone());
        let pinned = if w < 4 { Some(sticky[w as usize].clone()) } else { None };
        workers.push(tokio::spawn(async move {
            // Half the workers open a new connection per request (refusals would show).
            let c = if w % 2 == 0 { client() } else { fresh_client() };
            let mut tick = tokio::time::interval(Duration::from_millis(1000 / PER_WORKER_RPS));
            let mut moved = Vec::new();
            let deadline = Instant::now() + RUN + Duration::from_secs(5);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                tick.tick().await;
                let mut req = c.get(&url);
                if let Some((_, cookie)) = &pinned {
                    req = req.header("cookie", format!("tether={cookie}"));
                }
                match req.send().await {
                    Ok(r) if r.status() == 200 => {
                        if let Some((server, _)) = &pinned {
                            let got = server_of(&r);
                            if &got != server {
                                moved.push(got);
                            }
                        }
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        eprintln!("status {}", r.status());
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("error {e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            moved
        }));
    }

    let requests_of = |v: &Value, name: &str| {
        v["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["requests_total"].as_u64().unwrap())
    };
    let started = Instant::now();
    let mut reloads = 0;
    let mut last_s0 = 0;
    while started.elapsed() < RUN {
        tokio::time::sleep(Duration::from_secs(2)).await; // the reload cadence under test
        let phase = started.elapsed().as_secs();
        reloads += 1;
        let out = t.reload(&reload_text(&all, phase)).await.unwrap();
        assert_eq!(out["message"], "config reloaded", "{out}");
        let v: Value = c.get(&admin).send().await.unwrap().json().await.unwrap();
        let s0 = requests_of(&v, "s0").unwrap();
        assert!(s0 >= last_s0, "counters of unchanged servers keep counting: {s0} < {last_s0}");
        last_s0 = s0;
    }
    stop.store(true, Ordering::Relaxed);
    let mut moved = Vec::new();
    for w in workers {
        moved.extend(w.await.unwrap());
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    assert!(ok >= 30_000, "the load ran at a useful rate: {ok} requests");
    assert!(moved.is_empty(), "sticky clients moved: {moved:?}");
    assert!(reloads >= 25);
    let v: Value = c.get(&admin).send().await.unwrap().json().await.unwrap();
    assert!(requests_of(&v, "s3").unwrap() > 0, "the added server took traffic");
    assert!(requests_of(&v, "s2").is_none(), "the removed server is gone");
}

/// Cookie affinity over `servers`, and the admin listener.
fn reload_config<'a>(servers: impl IntoIterator<Item = &'a EchoServer>) -> Config {
    config(Backend::new().servers(servers).sticky(Sticky::cookie())).admin()
}

/// [`reload_config`] at `phase` seconds into the run: s0, s1 and s2, then s3 too, then
/// without s2.
fn reload_text(all: &[EchoServer], phase: u64) -> Config {
    match phase {
        0..20 => reload_config(&all[..3]),
        20..40 => reload_config(all),
        _ => reload_config([&all[0], &all[1], &all[3]]),
    }
}
