//! Zero-loss reloads: 30 reloads, one every 2 s, under a load of up to 1,000 requests a
//! second, with a server added and one removed along the way. No request fails, no
//! connection is refused, sticky clients keep their server, and the counters of unchanged
//! servers keep counting.
//!
//! The load is what the machine manages: the test asserts what happened to the requests that
//! were sent, and that some were in flight across every reload, never a rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tether_testkit::EchoServer;

use crate::fixture::*;

/// Reloads, one every [`CADENCE`]: the first third over s0, s1, s2, the second adds s3, the
/// last removes s2.
const RELOADS: usize = 30;
const CADENCE: Duration = Duration::from_secs(2);
const WORKERS: usize = 10;
/// Requests a worker sends per second at most.
const PER_WORKER_RPS: u64 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_every_2s_under_1000_rps_lose_nothing_and_keep_sessions_and_counters() {
    let all = echo_servers(4); // s0, s1 stay; s2 is removed; s3 is added
    let mut t = start(reload_config(&all[..3])).await;
    let c = client();
    let load = Load::start(&t.url("web"), pinned_sessions(&c, &t).await);

    let mut last_s0 = 0;
    let mut served_at_reload = vec![load.ok()];
    for reload in 0..RELOADS {
        tokio::time::sleep(CADENCE).await; // the reload cadence under test
        let servers: Vec<&EchoServer> = match reload * 3 / RELOADS {
            0 => all[..3].iter().collect(),
            1 => all.iter().collect(),
            _ => vec![&all[0], &all[1], &all[3]],
        };
        let out = t.reload(reload_config(servers)).await.unwrap();
        assert_eq!(out["message"], "config reloaded", "reload {reload}: {out}");
        let s0 = requests_of(&admin_app(&c, &t).await, "s0").unwrap();
        assert!(s0 >= last_s0, "counters of unchanged servers keep counting: {s0} < {last_s0}");
        last_s0 = s0;
        served_at_reload.push(load.ok());
    }
    let (ok, failed, moved) = load.stop().await;

    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    let idle = served_at_reload.windows(2).position(|w| w[1] == w[0]);
    assert_eq!(idle, None, "no request was served between two reloads: {served_at_reload:?}");
    assert!(moved.is_empty(), "sticky clients moved: {moved:?}");
    let v = admin_app(&c, &t).await;
    assert!(requests_of(&v, "s3").unwrap() > 0, "the added server took traffic");
    assert!(requests_of(&v, "s2").is_none(), "the removed server is gone");
}

/// Cookie affinity over `servers`, and the admin listener.
fn reload_config<'a>(servers: impl IntoIterator<Item = &'a EchoServer>) -> Config {
    config(Backend::new().servers(servers).sticky(Sticky::cookie())).admin()
}

/// Four sessions (server, cookie) pinned to the servers that stay, s0 and s1.
async fn pinned_sessions(c: &reqwest::Client, t: &tether_testkit::Tether) -> Vec<(String, String)> {
    let mut sticky = Vec::new();
    while sticky.len() < 4 {
        let r = c.get(t.url("web")).send().await.unwrap();
        let server = server_of(&r);
        if server == "s0" || server == "s1" {
            sticky.push((server, tether_cookie(&r).unwrap()));
        }
    }
    sticky
}

/// `GET /api/v1/backends/app` on the admin listener.
async fn admin_app(c: &reqwest::Client, t: &tether_testkit::Tether) -> Value {
    admin_json(c, t, "/api/v1/backends/app").await
}

/// `requests_total` of server `name` in a backend's admin JSON; `None` when it is not there.
fn requests_of(backend: &Value, name: &str) -> Option<u64> {
    let servers = backend["servers"].as_array().unwrap();
    servers.iter().find(|s| s["name"] == name).map(|s| s["requests_total"].as_u64().unwrap())
}

/// [`WORKERS`] clients sending GETs until stopped, the first of them with a pinned session.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    /// Each returns the servers its session was moved to (none when it has no session).
    workers: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

// === impl Load ===

impl Load {
    fn start(url: &str, sessions: Vec<(String, String)>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut sessions = sessions.into_iter();
        let workers = (0..WORKERS)
            .map(|w| {
                let counts = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
                // Half the workers open a new connection per request (refusals would show).
                let c = if w % 2 == 0 { client() } else { fresh_client() };
                tokio::spawn(work(c, url.to_owned(), sessions.next(), counts))
            })
            .collect();
        Self { stop, ok, failed, workers }
    }

    /// Requests answered 200 so far.
    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the workers; what they saw: requests answered 200, failed ones, and the servers
    /// pinned sessions were moved to.
    async fn stop(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut moved = Vec::new();
        for w in self.workers {
            moved.extend(w.await.unwrap());
        }
        (self.ok.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed), moved)
    }
}

/// One worker: GETs `url` at up to [`PER_WORKER_RPS`] with the cookie of `pinned` (server,
/// cookie) if any, until `stop`; counts outcomes into `ok` and `failed`.
async fn work(
    c: reqwest::Client,
    url: String,
    pinned: Option<(String, String)>,
    (stop, ok, failed): (Arc<AtomicBool>, Arc<AtomicU64>, Arc<AtomicU64>),
) -> Vec<String> {
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / PER_WORKER_RPS));
    let mut moved = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let mut req = c.get(&url);
        if let Some((_, cookie)) = &pinned {
            req = req.header("cookie", format!("tether={cookie}"));
        }
        match req.send().await {
            Ok(r) if r.status() == 200 => {
                let got = server_of(&r);
                moved.extend(pinned.as_ref().filter(|(server, _)| *server != got).map(|_| got));
                ok.fetch_add(1, Ordering::Relaxed);
            }
            outcome => {
                eprintln!("failed: {outcome:?}");
                failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    moved
}
