//! The Redis-shared stick table over TLS (`rediss://` + `redis_ca_file`) and on a Redis
//! Cluster (`redis_cluster = true`, a seed list), against real `redis-server`s.
//!
//! As in `redis_affinity.rs`, every test runs two instances, A and B, over the same three
//! servers with different views of them: on A only `s0` takes new sessions, on B only `s1`
//! and `s2` do (the others drain, which keeps the sessions they are given). Alone, B never
//! sends a new key to `s0`, so every request B sends there follows a binding it can only
//! have learned through Redis.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tether_testkit::redis::{CLUSTER_DEADLINE, RedisCluster, RedisServer, Reply};
use tether_testkit::tls::{TestCa, write_pem};
use tether_testkit::{Tether, wait_until_async};
use tokio::time::Instant;

use crate::support::fixture::*;
use crate::support::redis_common::*;

async fn tls_redis(ca: &TestCa) -> RedisServer {
    RedisServer::start_tls(ca).await.unwrap_or_else(|e| panic!("{e}"))
}

async fn cluster() -> RedisCluster {
    RedisCluster::start(3).await.unwrap_or_else(|e| panic!("{e}"))
}

fn test_ca(name: &str) -> TestCa {
    TestCa::new(name).unwrap_or_else(|e| panic!("{e}"))
}

/// `settings` trusting a TLS Redis whose certificate `ca_file` vouches for.
fn trusting(ca_file: &Path, settings: Config) -> Config {
    settings.set("stick_table.redis_ca_file", ca_file.display().to_string())
}

/// `settings` for a Redis Cluster, whose seed list is the URL.
fn cluster_of(settings: Config) -> Config {
    settings.set("stick_table.redis_cluster", true)
}

/// Waits until `store` holds exactly `n` bindings of backend `app` and returns them.
async fn n_bindings(store: &impl Store, n: usize) -> Vec<String> {
    let written =
        wait_until_async(DEADLINE, || async { store.keys("tether:app:*").await.len() == n }).await;
    let keys = store.keys("tether:app:*").await;
    assert!(written, "{n} bindings in redis within {DEADLINE:?}, not {}: {keys:?}", keys.len());
    keys
}

/// How many of `app`'s bindings each node of `cluster` holds, in node order.
async fn per_node(cluster: &RedisCluster) -> Vec<usize> {
    let mut counts = Vec::new();
    for node in cluster.nodes() {
        counts.push(node.keys("tether:app:*").await.unwrap().len());
    }
    counts
}

// === TLS ===

#[tokio::test]
async fn tls_two_instances_share_header_affinity() {
    let ca = test_ca("redis CA");
    let redis = tls_redis(&ca).await;
    assert!(redis.url().starts_with("rediss://"), "{}", redis.url());
    let servers = echo_servers(3);
    let settings = trusting(&redis.ca_file().unwrap(), patient());
    let (a, b) = pair(&servers, header_sticky(), &redis, settings).await;
    let c = client();
    both_connected(&c, (&a, &b), &redis).await;
    let raw = "tls-alice-5e1d07-session";

    assert_eq!(route(&c, &a, raw).await, "s0", "A gives new sessions to s0");
    let key = the_one_binding(&redis).await;
    assert_hashed(&key, raw);
    assert_eq!(Store::get(&redis, &key).await.as_deref(), Some("s0"), "the value is the server");
    let ttl = redis.ttl(&key).await.unwrap().expect("every binding has a TTL");
    assert!(
        ttl <= IDLE_TIMEOUT && ttl > IDLE_TIMEOUT - Duration::from_secs(60),
        "TTL {ttl:?}, idle_timeout {IDLE_TIMEOUT:?}"
    );

    let counts = alternate(&c, (&a, &b), 200, ("x-session-id", raw)).await;
    assert_eq!(counts, HashMap::from([("s0".to_owned(), 200)]), "B follows A's binding");
    assert_eq!(Store::keys(&redis, "tether:app:*").await, [key], "still one binding");

    // The premise: B's own new sessions never go to s0.
    for i in 0..20 {
        assert_ne!(route(&c, &b, &format!("tls-bob-{i}")).await, "s0", "B's new session {i}");
    }
}

/// A `redis_ca_file` that did not sign Redis's certificate: the handshake fails, Tether says
/// Redis is unavailable and keeps serving with its local table, and writes nothing.
#[tokio::test]
async fn tls_with_the_wrong_ca_serves_locally_and_writes_nothing() {
    let ca = test_ca("redis CA");
    let wrong = test_ca("some other CA");
    let redis = tls_redis(&ca).await;
    // In Redis's directory, which goes when `redis` drops.
    let wrong_file = write_pem(redis.dir(), "wrong-ca.pem", &wrong.cert_pem()).unwrap();
    let servers = echo_servers(3);
    let (a, b) = pair(&servers, header_sticky(), &redis, trusting(&wrong_file, patient())).await;
    let c = client();

    for (name, t) in [("A", &a), ("B", &b)] {
        let line = t.wait_for_log(|l| is(l, "redis unavailable"), DEADLINE).await;
        let line = line.unwrap_or_else(|| {
            panic!("{name}: no \"redis unavailable\" within {DEADLINE:?}: {:?}", about_redis(t))
        });
        let error = line["error"].as_str().unwrap_or_default().to_lowercase();
        assert!(
            error.contains("certificate") || error.contains("issuer"),
            "{name}: the reason is the certificate: {line}"
        );
    }

    // Every request is served, each instance keeps its own sessions, and none is shared.
    for i in 0..40 {
        let raw = format!("wrong-ca-{i}");
        assert_eq!(route(&c, &a, &raw).await, "s0", "A's new session {i}");
        let on_b = route(&c, &b, &raw).await;
        assert_ne!(on_b, "s0", "B cannot have learned A's binding {i}");
        for _ in 0..3 {
            assert_eq!(route(&c, &a, &raw).await, "s0", "A keeps session {i}");
            assert_eq!(route(&c, &b, &raw).await, on_b, "B keeps session {i}");
        }
    }
    assert_eq!(Store::dbsize(&redis).await, 0, "nothing written: {:?}", redis.keys("*").await);
    // Reconnecting goes on in the background; the failure is logged once, not per attempt.
    for (name, t) in [("A", &a), ("B", &b)] {
        assert_eq!(
            count(t, 0, "redis available"),
            0,
            "{name} never connected: {:?}",
            about_redis(t)
        );
        assert_eq!(
            count(t, 0, "redis unavailable"),
            1,
            "{name} logs it once: {:?}",
            about_redis(t)
        );
    }
}

// === Cluster ===

#[tokio::test]
async fn cluster_two_instances_share_one_session_and_thirty_spread_over_the_nodes() {
    let cluster = cluster().await;
    let servers = echo_servers(3);
    let (a, b) = pair(&servers, header_sticky(), &cluster, cluster_of(patient())).await;
    let c = client();
    both_connected(&c, (&a, &b), &cluster).await;

    // One session, 200 requests alternating over A and B.
    let raw = "cluster-alice-93b1c2";
    assert_eq!(route(&c, &a, raw).await, "s0", "A gives new sessions to s0");
    let key = the_one_binding(&cluster).await;
    assert_hashed(&key, raw);
    assert_eq!(Store::get(&cluster, &key).await.as_deref(), Some("s0"));
    let ttl = cluster.ttl(&key).await.unwrap().expect("every binding has a TTL");
    assert!(ttl > IDLE_TIMEOUT - Duration::from_secs(60), "TTL {ttl:?}");
    let counts = alternate(&c, (&a, &b), 200, ("x-session-id", raw)).await;
    assert_eq!(counts, HashMap::from([("s0".to_owned(), 200)]), "B follows A's binding");

    // Thirty more sessions through A: their keys spread over the slots, so over the nodes.
    let sessions: Vec<String> = (0..30).map(|i| format!("cluster-user-{i}")).collect();
    for raw in &sessions {
        assert_eq!(route(&c, &a, raw).await, "s0", "A's new session {raw}");
    }
    let keys = n_bindings(&cluster, 31).await;
    for key in &keys {
        assert_eq!(Store::get(&cluster, key).await.as_deref(), Some("s0"), "{key}");
    }
    let spread = per_node(&cluster).await;
    assert!(
        spread.iter().filter(|&&n| n > 0).count() >= 2,
        "31 keys on at least two nodes: {spread:?}"
    );
    // B follows every one of them, whichever node holds it.
    for raw in &sessions {
        assert_eq!(route(&c, &b, raw).await, "s0", "B follows A's session {raw}");
    }
    for raw in &sessions {
        let counts = alternate(&c, (&a, &b), 6, ("x-session-id", raw)).await;
        assert_eq!(counts, HashMap::from([("s0".to_owned(), 6)]), "session {raw}");
    }
    assert_eq!(Store::keys(&cluster, "tether:app:*").await, keys, "no new bindings");

    // The premise: B's own new sessions never go to s0.
    for i in 0..20 {
        assert_ne!(route(&c, &b, &format!("cluster-bob-{i}")).await, "s0", "B's session {i}");
    }
}

#[tokio::test]
async fn cluster_twenty_concurrent_first_requests_over_two_instances_converge() {
    let cluster = cluster().await;
    let servers = echo_servers(3);
    let (a, b) = pair(&servers, header_sticky(), &cluster, cluster_of(patient())).await;
    let c = client();
    both_connected(&c, (&a, &b), &cluster).await;
    let raw = "cluster-race-for-a-new-session";
    concurrent_first_requests_converge(&c, (&a, &b), &cluster, raw).await;
}

/// B reports bindings A made, wherever in the cluster they live: its census and its
/// sessions listing SCAN every primary, not just the node they happen to ask.
#[tokio::test]
async fn cluster_census_counts_bindings_on_every_primary() {
    const N: usize = 30;
    let cluster = cluster().await;
    let servers = echo_servers(3);
    let settings = cluster_of(patient()).admin();
    let (a, b) = pair(&servers, header_sticky(), &cluster, settings).await;
    let c = client();
    both_connected(&c, (&a, &b), &cluster).await;

    for i in 0..N {
        assert_eq!(route(&c, &a, &format!("census-{i}")).await, "s0");
    }
    let keys = n_bindings(&cluster, N).await;
    let spread = per_node(&cluster).await;
    assert!(
        spread.iter().filter(|&&n| n > 0).count() >= 2,
        "{N} keys on at least two nodes: {spread:?}"
    );

    // B made none of them, yet counts them all once its census has run (every 5 s).
    let seen = census_shows(&c, &b, N).await;
    assert!(
        seen,
        "B counts all {N} of A's sessions (per node {spread:?}): {}",
        admin_json(&c, &b, "/api/v1/backends/app").await
    );

    let listing = admin_json(&c, &b, "/api/v1/backends/app/sessions?limit=100").await;
    assert_eq!(listing["source"], "redis", "{listing}");
    assert_eq!(listing["entries"], N, "{listing}");
    assert_eq!(listing["complete"], true, "{listing}");
    let sessions = listing["sessions"].as_array().unwrap();
    assert!(sessions.iter().all(|s| s["server"] == "s0"), "{listing}");
    let listed: HashSet<String> =
        sessions.iter().map(|s| format!("tether:app:{}", s["key"].as_str().unwrap())).collect();
    let stored: HashSet<String> = keys.iter().cloned().collect();
    assert_eq!(listed, stored, "B lists exactly the keys the nodes hold");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    for s in sessions {
        let expires = s["expires"].as_u64().unwrap();
        assert!(
            expires > now.as_secs() && expires <= now.as_secs() + IDLE_TIMEOUT.as_secs() + 1,
            "expires within the idle timeout: {s}"
        );
    }
    // A smaller page is a page, not the whole table.
    let page = admin_json(&c, &b, "/api/v1/backends/app/sessions?limit=5").await;
    assert_eq!(page["source"], "redis", "{page}");
    assert_eq!(page["sessions"].as_array().unwrap().len(), 5, "{page}");

    // Flushing through B empties every node.
    let emptied = flush_empties(&c, &b, &cluster).await;
    assert!(emptied, "flush empties every node: {:?}", per_node(&cluster).await);
}

// === A cluster node dying under traffic ===

/// How long the traffic runs at least (and longer until it has sent [`MIN_BROKEN`] requests
/// after the kill), and when the node is killed during it.
const TRAFFIC: Duration = Duration::from_secs(6);
const BREAK_AT: Duration = Duration::from_millis(1500);

/// What happened around the kill.
#[derive(Debug)]
struct NodeKilled {
    traffic: Traffic,
    /// A's and B's log marks just before the kill.
    marks: [usize; 2],
    /// The index of the killed node.
    owner: usize,
    /// Connections the surviving nodes accepted while the node was dead.
    new_connections: u64,
    /// How long the traffic ran with the node dead.
    dead_for: Duration,
}

/// `total_connections_received` of `node` (`INFO stats`).
async fn connections_received(node: &RedisServer) -> u64 {
    let info = match node.command(&["INFO", "stats"]).await.unwrap() {
        Reply::Bulk(Some(text)) => String::from_utf8_lossy(&text).into_owned(),
        other => panic!("INFO stats: {other:?}"),
    };
    let line = info.lines().find_map(|l| l.strip_prefix("total_connections_received:"));
    line.unwrap_or_else(|| panic!("INFO stats: {info}")).trim().parse().unwrap()
}

/// The sum of [`connections_received`] over the nodes other than `except`.
async fn survivors_connections(cluster: &RedisCluster, except: usize) -> u64 {
    let mut total = 0;
    for (i, node) in cluster.nodes().iter().enumerate() {
        if i != except {
            total += connections_received(node).await;
        }
    }
    total
}

/// Pins `pinned` through A and waits until B follows it, then sends traffic alternating A
/// and B for [`TRAFFIC`] (half of it `pinned`, the rest each a new session) and kills the
/// node that holds `pinned`'s key after [`BREAK_AT`]. A request fails unless it is a 200,
/// and `pinned` also unless it lands on s0.
async fn kill_a_node_under_traffic(
    cluster: &mut RedisCluster,
    c: &reqwest::Client,
    (a, b): (&Tether, &Tether),
    pinned: &str,
) -> NodeKilled {
    both_connected(c, (a, b), &*cluster).await;
    assert_eq!(route(c, a, pinned).await, "s0");
    let key = the_one_binding(&*cluster).await;
    let owner = cluster.owner(&key).await.unwrap();
    // With a 10 ms timeout B's first lookup may miss on a busy machine; its own binding then
    // loses the SET NX to A's, and it adopts s0.
    let learned = wait_until_async(DEADLINE, || async { route(c, b, pinned).await == "s0" }).await;
    assert!(learned, "B never followed A's binding of {pinned:?}: {:?}", about_redis(b));

    let mut marks = [0, 0];
    let mut connections_at_kill = 0;
    let mut traffic = Traffic::default();
    let mut killed_at = None;
    let start = Instant::now();
    while !traffic.is_done(start, TRAFFIC) {
        if killed_at.is_none() && start.elapsed() >= BREAK_AT {
            connections_at_kill = survivors_connections(cluster, owner).await;
            marks = [a.log_mark(), b.log_mark()];
            cluster.nodes_mut()[owner].kill().unwrap();
            killed_at = Some(Instant::now());
        }
        let t = if traffic.sent % 2 == 0 { a } else { b };
        // Half the requests are the pinned session (on A and on B in turn), the others each
        // a new one.
        let session =
            if traffic.sent % 4 < 2 { pinned.to_owned() } else { format!("u-{}", traffic.sent) };
        let sent = Instant::now();
        let n = traffic.sent;
        match c.get(t.url("web")).header("x-session-id", &session).send().await {
            Ok(r) if r.status() != 200 => {
                traffic.failures.push(format!("request {n}: status {}", r.status()));
            }
            Ok(r) if session == pinned && server_of(&r) != "s0" => {
                traffic.failures.push(format!("request {n}: pinned, on {}", server_of(&r)));
            }
            Ok(_) => {}
            Err(e) => traffic.failures.push(format!("request {n}: {e}")),
        }
        if killed_at.is_some() {
            traffic.broken.push(sent.elapsed());
        }
        traffic.sent += 1;
    }
    let dead_for = killed_at.map(|at| at.elapsed()).unwrap_or_default();
    let new_connections = survivors_connections(cluster, owner).await - connections_at_kill;
    NodeKilled { traffic, marks, owner, new_connections, dead_for }
}

#[tokio::test]
async fn cluster_node_killed_during_traffic_costs_no_requests_and_bounded_latency() {
    let mut cluster = cluster().await;
    let servers = echo_servers(3);
    // The default redis_timeout (10 ms): what bounds a request while a node is gone.
    let (a, b) = pair(&servers, header_sticky(), &cluster, cluster_of(Config::new())).await;
    let c = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let pinned = "pinned-across-a-node-failure";
    let NodeKilled { traffic, marks, owner, .. } =
        kill_a_node_under_traffic(&mut cluster, &c, (&a, &b), pinned).await;

    traffic.assert_unharmed(&format!("node {owner} dead"));
    for (name, t, mark) in [("A", &a, marks[0]), ("B", &b, marks[1])] {
        let logged = t.wait_for_log_since(mark, |l| is(l, "redis unavailable"), DEADLINE).await;
        assert!(logged.is_some(), "{name}: no \"redis unavailable\": {:?}", about_redis(t));
    }

    // Still serving, the pinned session where it was, new sessions as each instance likes.
    for i in 0..20 {
        assert_eq!(route(&c, &a, pinned).await, "s0", "A, pinned, {i}");
        assert_eq!(route(&c, &b, pinned).await, "s0", "B, pinned, {i}");
        assert_eq!(route(&c, &a, &format!("after-a-{i}")).await, "s0", "A, new, {i}");
        assert_ne!(route(&c, &b, &format!("after-b-{i}")).await, "s0", "B, new, {i}");
    }

    // The node comes back (empty): sharing resumes, a new session pinned through A is
    // followed by B. Each try is a new session: with a 10 ms timeout one slow lookup on a
    // busy machine may rightly fall back to local affinity.
    cluster.nodes_mut()[owner].restart().await.unwrap();
    cluster.wait_ok(CLUSTER_DEADLINE).await.unwrap();
    let tries = AtomicUsize::new(0);
    let shared = wait_until_async(Duration::from_secs(20), || async {
        let raw = format!("carol-{}", tries.fetch_add(1, Ordering::Relaxed));
        assert_eq!(route(&c, &a, &raw).await, "s0");
        route(&c, &b, &raw).await == "s0"
    })
    .await;
    assert!(
        shared,
        "B followed none of A's {} new sessions after the node came back; A said {:?}; \
         B said {:?}",
        tries.load(Ordering::Relaxed),
        about_redis(&a),
        about_redis(&b)
    );
}

/// "redis unavailable" lines one instance may log per second a node stays dead: after a
/// failure Redis is left alone for a second before one request probes it, so a probe that
/// happens to reach a live node and the next request that reaches the dead one flip the
/// state at most about once a second. One per failed request would be hundreds.
const UNAVAILABLE_LINES_PER_SECOND: f64 = 2.0;
/// Connections both instances together may open to the surviving nodes per second a node
/// stays dead (reconnecting at most about once a second each).
const NEW_CONNECTIONS_PER_SECOND: f64 = 11.0;

/// What a rate of `per_second` allows over `dead_for`, plus one.
fn allowed(per_second: f64, dead_for: Duration) -> usize {
    // A few dozen at most: the cast cannot truncate.
    (per_second * dead_for.as_secs_f64()).ceil() as usize + 1
}

/// A dead node is a state, not an event per request: Tether must not reconnect to the
/// whole cluster and log "redis unavailable" / "redis available" for every request whose
/// key lives on the dead node.
#[tokio::test]
async fn cluster_node_killed_is_logged_as_a_state_not_per_failed_request() {
    let mut cluster = cluster().await;
    let servers = echo_servers(3);
    let (a, b) = pair(&servers, header_sticky(), &cluster, cluster_of(Config::new())).await;
    let c = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let killed = kill_a_node_under_traffic(&mut cluster, &c, (&a, &b), "flap").await;
    assert!(killed.traffic.failures.is_empty(), "failed requests: {:?}", killed.traffic.failures);

    // Per instance: "redis unavailable" lines, "redis available" lines, and warnings from
    // the redis client library itself, all since the kill.
    let lines: Vec<(usize, usize, usize)> = [(&a, killed.marks[0]), (&b, killed.marks[1])]
        .into_iter()
        .map(|(t, mark)| {
            let client = t.logs().iter().skip(mark).filter(|l| is_from_redis_client(l)).count();
            (count(t, mark, "redis unavailable"), count(t, mark, "redis available"), client)
        })
        .collect();
    let first_lines: Vec<Value> =
        about_redis(&a).into_iter().filter(|l| l["message"] != "request").take(4).collect();
    let max_lines = allowed(UNAVAILABLE_LINES_PER_SECOND, killed.dead_for);
    let max_connections = allowed(NEW_CONNECTIONS_PER_SECOND, killed.dead_for) as u64;
    assert!(
        lines.iter().all(|&(unavailable, ..)| unavailable <= max_lines)
            && killed.new_connections <= max_connections,
        "with node {} dead for {} requests in {:?}: (\"redis unavailable\", \"redis available\", \
         redis client warnings) logged by A {:?} and B {:?} (bound {max_lines} \"redis \
         unavailable\" each); the surviving nodes accepted {} new connections (bound \
         {max_connections}); A's first lines about redis: {first_lines:?}",
        killed.owner,
        killed.traffic.broken.len(),
        killed.dead_for,
        lines[0],
        lines[1],
        killed.new_connections,
    );
}

/// A line logged by the redis client library (`redis::...`), not by Tether.
fn is_from_redis_client(line: &Value) -> bool {
    line["target"].as_str().is_some_and(|t| t.starts_with("redis::"))
}

// === Cluster with replicas ===

/// How long a killed primary's replica gets to take over: the node timeout, an election,
/// and the survivors agreeing (seconds in practice).
const FAILOVER_DEADLINE: Duration = Duration::from_secs(30);

/// Sessions pinned through A before the failover.
const KEPT: usize = 12;

/// With a replica per primary, a primary's death loses no binding: its replica takes over
/// its slots with the keys it had, and an instance that never saw a session still finds it
/// there. Meanwhile no request fails.
/// Sends new sessions through A and B in turn until the cluster's map (as the first
/// running node tells it) gives `key`'s slot to a node other than `dead`: checked every 20
/// requests after the first 200, within [`FAILOVER_DEADLINE`]. Returns the node that took
/// over; no request may fail meanwhile.
async fn traffic_until_failover(
    c: &reqwest::Client,
    (a, b): (&Tether, &Tether),
    cluster: &RedisCluster,
    key: &str,
    dead: usize,
) -> usize {
    let (mut sent, mut failures) = (0usize, Vec::new());
    let start = Instant::now();
    let mut promoted = None;
    // Bounded by FAILOVER_DEADLINE, however many requests a machine sends meanwhile.
    while start.elapsed() < FAILOVER_DEADLINE {
        if sent % 20 == 0 && sent >= 200 {
            promoted = cluster.owner(key).await.ok().filter(|n| *n != dead);
            if promoted.is_some() {
                break;
            }
        }
        let t = if sent % 2 == 0 { a } else { b };
        let session = format!("during-{sent}");
        match c.get(t.url("web")).header("x-session-id", &session).send().await {
            Ok(r) if r.status() == 200 => {}
            Ok(r) => failures.push(format!("request {sent}: status {}", r.status())),
            Err(e) => failures.push(format!("request {sent}: {e}")),
        }
        sent += 1;
    }
    assert!(failures.is_empty(), "{} of {sent} requests failed: {failures:?}", failures.len());
    promoted.unwrap_or_else(|| {
        panic!("node {dead}'s slots did not move to its replica within {FAILOVER_DEADLINE:?}")
    })
}

/// Whether, within [`FAILOVER_DEADLINE`], B follows a new session that A pins and Redis
/// keeps on node `promoted`; and how many sessions it took.
async fn b_follows_a_on(
    c: &reqwest::Client,
    (a, b): (&Tether, &Tether),
    cluster: &RedisCluster,
    promoted: usize,
) -> (bool, usize) {
    let tries = AtomicUsize::new(0);
    let shared = wait_until_async(FAILOVER_DEADLINE, || async {
        let raw = format!("probe-{}", tries.fetch_add(1, Ordering::Relaxed));
        let before: HashSet<String> =
            Store::keys(cluster, "tether:app:*").await.into_iter().collect();
        assert_eq!(route(c, a, &raw).await, "s0");
        // The first write to the moved slots after the failover may still go to the dead
        // node (and the session stays local to A): that probe does not count.
        let written = wait_until_async(Duration::from_secs(2), || async {
            Store::keys(cluster, "tether:app:*").await.len() > before.len()
        })
        .await;
        if !written {
            return false;
        }
        let now = Store::keys(cluster, "tether:app:*").await;
        let key = now.into_iter().find(|k| !before.contains(k)).unwrap();
        cluster.owner(&key).await.unwrap() == promoted && route(c, b, &raw).await == "s0"
    })
    .await;
    (shared, tries.load(Ordering::Relaxed))
}

#[tokio::test]
async fn cluster_primary_killed_fails_over_to_its_replica_and_bindings_survive() {
    let mut cluster =
        RedisCluster::start_with_replicas(3, 1).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cluster.primaries().await.unwrap().len(), 3);
    let servers = echo_servers(3);
    let (a, b) = pair(&servers, header_sticky(), &cluster, cluster_of(patient())).await;
    let c = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    both_connected(&c, (&a, &b), &cluster).await;

    // KEPT sessions pinned through A (A binds new sessions to s0 only); B never sees them
    // before the failover, so it can only learn them from Redis afterwards.
    for i in 0..KEPT {
        assert_eq!(route(&c, &a, &format!("kept-{i}")).await, "s0");
    }
    let keys = n_bindings(&cluster, KEPT).await;
    // Every binding is on a replica too (keys counted on all six nodes: each twice).
    let replicated = wait_until_async(DEADLINE, || async {
        let mut copies = 0;
        for node in cluster.nodes() {
            copies += node.keys("tether:app:*").await.unwrap().len();
        }
        copies == 2 * KEPT
    })
    .await;
    assert!(replicated, "the replicas did not receive the {KEPT} bindings within {DEADLINE:?}");
    let owner = cluster.owner(&keys[0]).await.unwrap();
    let on_owner: Vec<&String> = {
        let mut v = Vec::new();
        for k in &keys {
            if cluster.owner(k).await.unwrap() == owner {
                v.push(k);
            }
        }
        v
    };

    // Kill that primary; new sessions keep flowing through both instances while the
    // cluster fails over, and none fails.
    cluster.nodes_mut()[owner].kill().unwrap();
    let promoted = traffic_until_failover(&c, (&a, &b), &cluster, on_owner[0], owner).await;
    assert!(cluster.primaries().await.unwrap().contains(&promoted));

    // Once B's client has the new map (it refreshes after errors), a session A pins on the
    // promoted node is followed by B.
    let (shared, tries) = b_follows_a_on(&c, (&a, &b), &cluster, promoted).await;
    assert!(
        shared,
        "B followed none of A's {tries} new sessions on the promoted node; A said {:?}; B \
         said {:?}",
        about_redis(&a),
        about_redis(&b)
    );
    eprintln!("probes until B followed one on the promoted node: {tries}");
    // Every session pinned before the failover, including the ones whose primary died, is
    // found by B where A put it.
    for i in 0..KEPT {
        assert_eq!(route(&c, &b, &format!("kept-{i}")).await, "s0", "kept-{i} through B");
    }
}
