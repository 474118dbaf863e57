//! The Redis-shared stick table (`[stick_table] store = "redis"`): Tethers in front of one
//! real Redis share table affinity, and a Redis that dies or freezes never costs a request.
//!
//! Every test runs two instances, A and B, over the same three servers but with different
//! views of them: on A only `s0` takes new sessions, on B only `s1` and `s2` do (the others
//! drain, which keeps the sessions they are given). Alone, B never sends a new key to `s0`,
//! so every request B sends there follows a binding it can only have learned through Redis.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tether_testkit::redis::RedisServer;
use tether_testkit::{Tether, run_check, wait_until_async};
use tokio::time::Instant;

use crate::support::fixture::*;
use crate::support::redis_common::*;

/// For the failure tests, a Redis timeout of 10 ms: the default, which bounds how long a
/// request may wait.
fn impatient() -> Config {
    Config::new().set("stick_table.redis_timeout", "10ms")
}

async fn redis() -> RedisServer {
    RedisServer::start().await.unwrap_or_else(|e| panic!("{e}"))
}

/// Every key and value in `redis`, to check that `raw` appears nowhere.
async fn assert_nowhere_in(redis: &RedisServer, raw: &str) {
    for key in redis.keys("*").await.unwrap() {
        assert!(!key.contains(raw), "{raw:?} in key {key:?}");
        let value = redis.get(&key).await.unwrap().unwrap_or_default();
        assert!(!value.contains(raw), "{raw:?} in the value of {key:?}: {value:?}");
    }
}

#[tokio::test]
async fn two_instances_share_header_affinity_for_1000_requests() {
    let redis = redis().await;
    let servers = echo_servers(3);
    let (a, b) = pair(&servers, header_sticky(), &redis, patient()).await;
    let c = client();
    both_connected(&c, (&a, &b), &redis).await;
    let raw = "alice-7f3a9c-session";

    assert_eq!(route(&c, &a, raw).await, "s0", "A gives new sessions to s0");
    let key = the_one_binding(&redis).await;
    assert_hashed(&key, raw);
    assert_nowhere_in(&redis, raw).await;
    assert_eq!(redis.get(&key).await.unwrap().as_deref(), Some("s0"), "the value is the server");
    let ttl = redis.ttl(&key).await.unwrap().expect("every binding has a TTL");
    assert!(
        ttl <= IDLE_TIMEOUT && ttl > IDLE_TIMEOUT - Duration::from_secs(60),
        "TTL {ttl:?}, idle_timeout {IDLE_TIMEOUT:?}"
    );

    let counts = alternate(&c, (&a, &b), 1000, ("x-session-id", raw)).await;
    assert_eq!(counts, HashMap::from([("s0".to_owned(), 1000)]), "B follows A's binding");
    assert_eq!(redis.keys("tether:app:*").await.unwrap(), [key], "still one binding");

    // The premise: B's own new sessions never go to s0.
    for i in 0..20 {
        assert_ne!(route(&c, &b, &format!("bob-{i}")).await, "s0", "B's new session {i}");
    }
}

#[tokio::test]
async fn two_instances_share_a_learned_app_cookie() {
    let redis = redis().await;
    let servers = echo_servers(3);
    let (a, b) = pair(&servers, Sticky::app_cookie("JSESSIONID"), &redis, patient()).await;
    let c = fresh_client();
    both_connected(&c, (&a, &b), &redis).await;
    let id = "abc123sessionid";

    let login = c
        .get(format!("{}/login?cookie_name=JSESSIONID&cookie_value={id}", a.url("web")))
        .send()
        .await
        .unwrap();
    assert_eq!((login.status().as_u16(), server_of(&login)), (200, "s0".to_owned()));
    let key = the_one_binding(&redis).await;
    assert_hashed(&key, id);
    assert_nowhere_in(&redis, id).await;
    assert_eq!(redis.get(&key).await.unwrap().as_deref(), Some("s0"));

    // An id no server issued pins nothing on B, and is not written.
    let invented = alternate(&c, (&b, &b), 20, ("cookie", "JSESSIONID=made-up")).await;
    assert!(!invented.contains_key("s0"), "B balances invented ids over s1, s2: {invented:?}");
    let cookie = format!("theme=dark; JSESSIONID={id}");
    let learned = alternate(&c, (&a, &b), 200, ("cookie", &cookie)).await;
    assert_eq!(learned, HashMap::from([("s0".to_owned(), 200)]), "B follows what A learned");
    assert_eq!(redis.keys("tether:app:*").await.unwrap(), [key], "only the issued id is bound");
}

#[tokio::test]
async fn twenty_concurrent_first_requests_over_two_instances_converge() {
    let redis = redis().await;
    let servers = echo_servers(3);
    let (a, b) = pair(&servers, header_sticky(), &redis, patient()).await;
    let c = client();
    both_connected(&c, (&a, &b), &redis).await;
    let raw = "race-for-a-new-session";
    concurrent_first_requests_converge(&c, (&a, &b), &redis, raw).await;
}

#[tokio::test]
async fn redis_killed_during_traffic_costs_no_requests_and_bounded_latency() {
    breaks_during_traffic_and_recovers(Break::Kill).await;
}

#[tokio::test]
async fn redis_paused_with_sigstop_costs_no_requests() {
    breaks_during_traffic_and_recovers(Break::Pause).await;
}

#[test]
fn invalid_redis_url_is_a_clear_config_error() {
    let app = Backend::new().server(ServerEntry::new("s0", "127.0.0.1:9")).sticky(header_sticky());
    let file = |url: &str| config(app.clone()).redis_stick_table(url);
    let cluster_file = |url: &str| file(url).set("stick_table.redis_cluster", true);
    let with_ca_file = |url: &str| file(url).set("stick_table.redis_ca_file", "/nope.pem");
    for bad in ["http://x", "not a url", ""] {
        let out = run_check(BIN, file(bad)).unwrap();
        assert_eq!(out.code, Some(1), "{bad:?}: {out:?}");
        assert!(out.stderr.contains("stick_table.redis_url"), "{bad:?}: {}", out.stderr);
    }
    // The same file with a valid URL passes, credentials included (and no Redis is needed
    // to check it).
    let good = run_check(BIN, file("redis://tether:s3cret@127.0.0.1:6390/0")).unwrap();
    assert_eq!(good.code, Some(0), "{good:?}");
    // TLS and cluster URLs are accepted; their settings are checked.
    let tls = run_check(BIN, file("rediss://127.0.0.1:6390")).unwrap();
    assert_eq!(tls.code, Some(0), "{tls:?}");
    let seeds = "redis://127.0.0.1:7000,redis://127.0.0.1:7001";
    let cluster = run_check(BIN, cluster_file(seeds)).unwrap();
    assert_eq!(cluster.code, Some(0), "{cluster:?}");
    let not_cluster = run_check(BIN, file(seeds)).unwrap();
    assert_eq!(not_cluster.code, Some(1), "{not_cluster:?}");
    assert!(not_cluster.stderr.contains("redis_cluster = true"), "{}", not_cluster.stderr);
    let mixed = "redis://127.0.0.1:7000,rediss://127.0.0.1:7001";
    let mixed = run_check(BIN, cluster_file(mixed)).unwrap();
    assert!(mixed.stderr.contains("all use redis:// or all use rediss://"), "{}", mixed.stderr);
    let ca_plain = run_check(BIN, with_ca_file("redis://h:1")).unwrap();
    assert!(ca_plain.stderr.contains("stick_table.redis_ca_file"), "{}", ca_plain.stderr);
    assert!(ca_plain.stderr.contains("only used with TLS"), "{}", ca_plain.stderr);
    let ca_missing = run_check(BIN, with_ca_file("rediss://h:1")).unwrap();
    assert!(ca_missing.stderr.contains("cannot read \"/nope.pem\""), "{}", ca_missing.stderr);
}

/// With Redis, the figures an operator drains by (`sessions_bound`, the sessions endpoint)
/// count the shared table, so an instance reports bindings another instance made.
#[tokio::test]
async fn session_figures_count_what_redis_holds_not_just_this_instance() {
    let redis = redis().await;
    let servers = echo_servers(3);
    let (a, b) = pair(&servers, header_sticky(), &redis, patient().admin()).await;
    let c = client();
    both_connected(&c, (&a, &b), &redis).await;
    // Twelve sessions through A only (all on s0: A sends new sessions nowhere else).
    for i in 0..12 {
        assert_eq!(route(&c, &a, &format!("census-{i}")).await, "s0");
    }
    let written = wait_until_async(DEADLINE, || async {
        redis.keys("tether:app:*").await.unwrap().len() == 12
    })
    .await;
    assert!(written, "12 bindings in redis: {:?}", redis.keys("*").await);
    // B made none of them, yet reports them once its census has run (every 5 s).
    let seen = census_shows(&c, &b, 12).await;
    assert!(seen, "B counts A's sessions: {}", admin_json(&c, &b, "/api/v1/backends/app").await);
    let listing = admin_json(&c, &b, "/api/v1/backends/app/sessions?limit=5").await;
    assert_eq!(listing["source"], "redis", "{listing}");
    assert_eq!(listing["sessions"].as_array().unwrap().len(), 5, "{listing}");
    let first = &listing["sessions"][0];
    assert_eq!(first["server"], "s0", "{listing}");
    assert_eq!(first["key"].as_str().unwrap().len(), 32, "{listing}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let expires = first["expires"].as_u64().unwrap();
    assert!(
        expires > now.as_secs() && expires <= now.as_secs() + IDLE_TIMEOUT.as_secs() + 1,
        "expires within the idle timeout: {listing}"
    );
    let all = admin_json(&c, &b, "/api/v1/backends/app/sessions?limit=100").await;
    assert_eq!(all["sessions"].as_array().unwrap().len(), 12, "{all}");
    // Flushing through B empties Redis too.
    let emptied = flush_empties(&c, &b, &redis).await;
    assert!(emptied, "flush empties redis: {:?}", redis.keys("*").await);
}

// === Redis breaking under traffic ===

#[derive(Debug, Clone, Copy)]
enum Break {
    /// SIGKILL: connections are reset, the port refuses.
    Kill,
    /// SIGSTOP: connections stay open and nothing answers.
    Pause,
}

/// How long the traffic runs at least (and longer until it has sent [`MIN_BROKEN`] requests
/// after the break), and when Redis breaks during it.
const TRAFFIC: Duration = Duration::from_secs(5);
const BREAK_AT: Duration = Duration::from_millis(1500);

async fn breaks_during_traffic_and_recovers(how: Break) {
    let mut redis = redis().await;
    let servers = echo_servers(3);
    let (a, b) = pair(&servers, header_sticky(), &redis, impatient()).await;
    let c = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();

    both_connected(&c, (&a, &b), &redis).await;

    // Log lines are judged from the break on: before it, a background write slower than
    // 10 ms on a busy machine may already have flipped an instance once.
    let mut marks = [0, 0];
    let traffic = traffic(&c, (&a, &b), || {
        marks = [a.log_mark(), b.log_mark()];
        match how {
            Break::Kill => redis.kill(),
            Break::Pause => redis.pause(),
        }
    })
    .await;
    traffic.assert_unharmed(&format!("{how:?}"));
    for (t, mark) in [(&a, marks[0]), (&b, marks[1])] {
        let unavailable = |l: &Value| is(l, "redis unavailable");
        let logged = t.wait_for_log_since(mark, unavailable, DEADLINE).await;
        assert!(logged.is_some(), "{how:?}: no \"redis unavailable\" line in {:?}", about_redis(t));
        let times = count(t, mark, "redis unavailable");
        assert_eq!(times, 1, "{how:?}: logged once, not per failure: {:?}", about_redis(t));
    }

    match how {
        Break::Kill => redis.restart().await.unwrap(),
        Break::Pause => redis.resume().unwrap(),
    }
    recovers(&c, (&a, &b), marks, &redis).await;
}

/// Alternates requests with distinct sessions over A and B for [`TRAFFIC`] (see
/// [`Traffic::is_done`]), calling `break_redis` after [`BREAK_AT`].
async fn traffic(
    c: &reqwest::Client,
    (a, b): (&Tether, &Tether),
    break_redis: impl FnOnce() -> Result<(), tether_testkit::redis::RedisError>,
) -> Traffic {
    let mut seen = Traffic::default();
    let mut break_redis = Some(break_redis);
    let start = Instant::now();
    while !seen.is_done(start, TRAFFIC) {
        if start.elapsed() >= BREAK_AT {
            if let Some(break_now) = break_redis.take() {
                break_now().unwrap();
            }
        }
        let broken = break_redis.is_none();
        let t = if seen.sent % 2 == 0 { a } else { b };
        let sent = Instant::now();
        let r = c.get(t.url("web")).header("x-session-id", format!("user-{}", seen.sent)).send();
        match r.await {
            Ok(r) if r.status() == 200 => {}
            Ok(r) => seen.failures.push(format!("request {}: status {}", seen.sent, r.status())),
            Err(e) => seen.failures.push(format!("request {}: {e}", seen.sent)),
        }
        if broken {
            seen.broken.push(sent.elapsed());
        }
        seen.sent += 1;
    }
    seen
}

/// After Redis is back: both instances say so, new bindings are written again, and a new
/// session pinned through A is followed by B.
async fn recovers(
    c: &reqwest::Client,
    (a, b): (&Tether, &Tether),
    [mark_a, mark_b]: [usize; 2],
    redis: &RedisServer,
) {
    let probe = AtomicUsize::new(0);
    let before = redis.dbsize().await.unwrap();
    let back = wait_until_async(DEADLINE, || async {
        // Traffic on both, in case reconnecting waits for a request.
        let i = probe.fetch_add(1, Ordering::Relaxed);
        route(c, a, &format!("probe-a-{i}")).await;
        route(c, b, &format!("probe-b-{i}")).await;
        count(a, mark_a, "redis available") >= 1
            && count(b, mark_b, "redis available") >= 1
            && redis.dbsize().await.unwrap() > before
    })
    .await;
    assert!(
        back,
        "within {DEADLINE:?} of redis coming back: \"redis available\" logged by A {} and B {} \
         times (want 1+ each), {} keys (had {before}); A said {:?}; B said {:?}",
        count(a, mark_a, "redis available"),
        count(b, mark_b, "redis available"),
        redis.dbsize().await.unwrap(),
        about_redis(a),
        about_redis(b),
    );

    // A new session pinned through A is followed by B. Each try is a new session: with a
    // 10 ms timeout one slow lookup on a busy machine may rightly fall back to local affinity.
    let tries = AtomicUsize::new(0);
    let shared = wait_until_async(DEADLINE, || async {
        let raw = format!("carol-{}", tries.fetch_add(1, Ordering::Relaxed));
        assert_eq!(route(c, a, &raw).await, "s0");
        route(c, b, &raw).await == "s0"
    })
    .await;
    let tries = tries.into_inner();
    assert!(
        shared,
        "B followed none of A's {tries} new sessions after recovery; A said {:?}; B said {:?}",
        about_redis(a),
        about_redis(b)
    );
    let raw = format!("carol-{}", tries - 1);
    let counts = alternate(c, (a, b), 50, ("x-session-id", &raw)).await;
    assert_eq!(counts, HashMap::from([("s0".to_owned(), 50)]), "shared again");
}

#[tokio::test]
async fn bindings_made_while_redis_was_down_converge_after_it_returns() {
    let servers = echo_servers(3);
    let mut redis = redis().await;
    let (a, b) = pair(&servers, header_sticky(), &redis, patient()).await;
    let c = client();
    both_connected(&c, (&a, &b), &redis).await;
    redis.kill().unwrap_or_else(|e| panic!("{e}"));
    // Redis is gone: each instance binds the same new session on its own side.
    assert_eq!(route(&c, &a, "split-brain").await, "s0");
    let on_b = route(&c, &b, "split-brain").await;
    assert_ne!(on_b, "s0", "without Redis, B cannot know A's binding");
    redis.restart().await.unwrap_or_else(|e| panic!("{e}"));
    let recovered = wait_until_async(DEADLINE, || async {
        let logged =
            |t: &Tether| t.logs().iter().filter(|l| l["message"] == "redis available").count() >= 2;
        logged(&a) && logged(&b)
    })
    .await;
    assert!(recovered, "both instances see Redis again");
    // A's next use publishes its binding; B's next use adopts it.
    assert_eq!(route(&c, &a, "split-brain").await, "s0");
    let published =
        wait_until_async(DEADLINE, || async { redis.dbsize().await.unwrap_or(0) >= 1 }).await;
    assert!(published, "A published its local binding");
    assert_eq!(route(&c, &b, "split-brain").await, "s0", "B adopted the shared binding");
    for _ in 0..20 {
        assert_eq!(route(&c, &b, "split-brain").await, "s0");
        assert_eq!(route(&c, &a, "split-brain").await, "s0");
    }
}
