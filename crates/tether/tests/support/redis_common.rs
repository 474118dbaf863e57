//! Shared set-up for the Redis-shared stick table tests (`redis_affinity.rs`,
//! `redis_tls_cluster.rs`): two instances, A and B, over the same three servers but with
//! different views of them (on A only `s0` takes new sessions, on B only `s1` and `s2` do),
//! sharing one Redis, and what the tests read from it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tether_testkit::redis::{RedisCluster, RedisServer};
use tether_testkit::{EchoServer, Tether, wait_until_async};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::fixture::{
    Backend, Config, KEY, Route, ServerEntry, Sticky, admin_json, admin_url, server_of, start, web,
};

/// Affinity by header `X-Session-Id`, forgotten after [`IDLE_TIMEOUT`].
pub fn header_sticky() -> Sticky {
    Sticky::header("X-Session-Id").set("idle_timeout", "10m")
}

/// The `idle_timeout` of [`header_sticky`]: what a binding's TTL starts from.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// For the sharing tests, a Redis timeout of 500 ms: generous, so a slow machine does not
/// turn a lookup into a miss.
pub fn patient() -> Config {
    Config::new().set("stick_table.redis_timeout", "500ms")
}

/// How long background writes and reconnects get before a test gives up on them.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// How long an instance gets to count what Redis holds: its census runs every 5 s.
pub const CENSUS_DEADLINE: Duration = Duration::from_secs(15);

/// What the tests read from a single Redis or a cluster (every running node).
pub trait Store {
    /// The `redis_url` Tether is given.
    fn url(&self) -> String;
    async fn keys(&self, pattern: &str) -> Vec<String>;
    async fn get(&self, key: &str) -> Option<String>;
    async fn flush(&self);
    async fn dbsize(&self) -> u64;
}

impl Store for RedisServer {
    fn url(&self) -> String {
        RedisServer::url(self)
    }
    async fn keys(&self, pattern: &str) -> Vec<String> {
        RedisServer::keys(self, pattern).await.unwrap()
    }
    async fn get(&self, key: &str) -> Option<String> {
        RedisServer::get(self, key).await.unwrap()
    }
    async fn flush(&self) {
        self.command(&["FLUSHALL"]).await.unwrap();
    }
    async fn dbsize(&self) -> u64 {
        RedisServer::dbsize(self).await.unwrap()
    }
}

impl Store for RedisCluster {
    fn url(&self) -> String {
        RedisCluster::url(self)
    }
    async fn keys(&self, pattern: &str) -> Vec<String> {
        RedisCluster::keys(self, pattern).await.unwrap()
    }
    async fn get(&self, key: &str) -> Option<String> {
        RedisCluster::get(self, key).await.unwrap()
    }
    async fn flush(&self) {
        // Replicas follow their primaries (and refuse writes).
        for i in self.primaries().await.unwrap() {
            self.nodes()[i].command(&["FLUSHALL"]).await.unwrap();
        }
    }
    async fn dbsize(&self) -> u64 {
        RedisCluster::dbsize(self).await.unwrap()
    }
}

/// `settings` (e.g. [`patient`]) plus listener "web" → backend "app" over `servers`, where
/// only the names in `active` take new sessions (the others drain), and the stick table in
/// the Redis at `url`. Paths under `/warm-up` go to backend "warm", the same servers and
/// affinity: [`both_connected`]'s bindings stay out of "app"'s keys.
pub fn shared_config(
    settings: Config,
    servers: &[EchoServer],
    active: &[&str],
    sticky: Sticky,
    url: &str,
) -> Config {
    let app = servers.iter().fold(Backend::new(), |app, s| {
        let state = if active.contains(&s.name()) { "ready" } else { "drain" };
        app.server(ServerEntry::from(s).state(state))
    });
    let app = app.sticky(sticky);
    settings
        .listener(web())
        .route(Route::to("warm").path_prefix("/warm-up"))
        .backend("warm", app.clone())
        .backend("app", app)
        .cookie_keys(&[KEY])
        .redis_stick_table(url)
}

/// A (new sessions → s0) and B (new sessions → s1, s2), sharing `store`, both on top of
/// `settings`.
pub async fn pair(
    servers: &[EchoServer],
    sticky: Sticky,
    store: &impl Store,
    settings: Config,
) -> (Tether, Tether) {
    let url = store.url();
    let a = shared_config(settings.clone(), servers, &["s0"], sticky.clone(), &url);
    let b = shared_config(settings, servers, &["s1", "s2"], sticky, &url);
    (start(a).await, start(b).await)
}

/// Waits until both instances write to `store` (they connect in the background after
/// start-up, and a binding made before that stays local), then empties it. The bindings it
/// makes are backend "warm"'s: one still on its way when `store` is emptied (each is written
/// in the background) lands among "warm"'s keys, never among "app"'s, which tests count.
pub async fn both_connected(c: &reqwest::Client, (a, b): (&Tether, &Tether), store: &impl Store) {
    let probe = AtomicUsize::new(0);
    let connected = wait_until_async(DEADLINE, || async {
        let i = probe.fetch_add(1, Ordering::Relaxed);
        warm_up(c, a, &format!("warm-up-a-{i}")).await;
        warm_up(c, b, &format!("warm-up-b-{i}")).await;
        let mut values = Vec::new();
        for key in store.keys("tether:warm:*").await {
            values.extend(store.get(&key).await);
        }
        // A binds only s0, B only s1 and s2: both have written.
        values.iter().any(|v| v == "s0") && values.iter().any(|v| v != "s0")
    })
    .await;
    assert!(
        connected,
        "A and B did not both write to redis within {DEADLINE:?}; A said {:?}; B said {:?}",
        about_redis(a),
        about_redis(b)
    );
    store.flush().await;
}

/// A new session `id` in either mode: as the session header, and as an application cookie
/// the server issues.
pub async fn warm_up(c: &reqwest::Client, t: &Tether, id: &str) {
    let url = format!("{}/warm-up?cookie_name=JSESSIONID&cookie_value={id}", t.url("web"));
    let r = c.get(url).header("x-session-id", id).send().await.unwrap();
    assert_eq!(r.status(), 200, "warm-up {id}");
}

/// The server that answered a request with session header `key`; panics unless it is a 200.
pub async fn route(c: &reqwest::Client, t: &Tether, key: &str) -> String {
    let r = c.get(t.url("web")).header("x-session-id", key).send().await.unwrap();
    assert_eq!(r.status(), 200, "session {key:?}");
    server_of(&r)
}

/// Which server answered how often, for `n` requests alternating A, B, A, ... with header
/// `name: value`.
pub async fn alternate(
    c: &reqwest::Client,
    (a, b): (&Tether, &Tether),
    n: u32,
    (name, value): (&str, &str),
) -> HashMap<String, u32> {
    let mut counts = HashMap::new();
    for i in 0..n {
        let t = if i % 2 == 0 { a } else { b };
        let r = c.get(t.url("web")).header(name, value).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        *counts.entry(server_of(&r)).or_insert(0) += 1;
    }
    counts
}

/// Waits for the first binding of backend `app` to be written and returns its key; panics
/// when there is none within [`DEADLINE`] or there is more than one.
pub async fn the_one_binding(store: &impl Store) -> String {
    let written =
        wait_until_async(DEADLINE, || async { !store.keys("tether:app:*").await.is_empty() }).await;
    assert!(written, "no binding in redis within {DEADLINE:?}: {:?}", store.keys("*").await);
    let keys = store.keys("tether:app:*").await;
    assert_eq!(keys.len(), 1, "one session, one binding: {keys:?}");
    keys.into_iter().next().unwrap()
}

/// Sends twenty first requests of the new session `raw` at once, alternating A and B: A alone
/// would bind s0 and B s1 or s2, so both bind and one SET NX wins. Then `store` holds that
/// one binding, and A and B converge on the winner and stay there.
pub async fn concurrent_first_requests_converge(
    c: &reqwest::Client,
    (a, b): (&Tether, &Tether),
    store: &impl Store,
    raw: &'static str,
) {
    let mut racers = JoinSet::new();
    for i in 0..20 {
        let (c, url) = (c.clone(), if i % 2 == 0 { a.url("web") } else { b.url("web") });
        racers.spawn(async move { c.get(url).header("x-session-id", raw).send().await });
    }
    while let Some(joined) = racers.join_next().await {
        let r = joined.unwrap().unwrap();
        assert_eq!(r.status(), 200);
    }

    let key = the_one_binding(store).await;
    assert_hashed(&key, raw);
    let winner = store.get(&key).await.unwrap();
    assert!(["s0", "s1", "s2"].contains(&winner.as_str()), "value {winner:?}");
    let converged = wait_until_async(DEADLINE, || async {
        route(c, a, raw).await == winner && route(c, b, raw).await == winner
    })
    .await;
    assert!(converged, "A and B never both routed to the winner {winner} in {DEADLINE:?}");
    let counts = alternate(c, (a, b), 100, ("x-session-id", raw)).await;
    assert_eq!(counts, HashMap::from([(winner.clone(), 100)]), "and stay there");
    assert_eq!(store.get(&key).await, Some(winner), "redis holds the first writer");
}

/// `{prefix}:{backend}:{32 hex chars}`: a keyed hash, never the client's key.
pub fn assert_hashed(key: &str, raw: &str) {
    let hash = key.strip_prefix("tether:app:").unwrap_or_else(|| panic!("prefix of {key:?}"));
    assert!(
        hash.len() == 32 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "not 32 hex chars: {key:?}"
    );
    assert!(!key.contains(raw), "the raw session key {raw:?} is in redis: {key:?}");
}

/// Waits up to [`CENSUS_DEADLINE`] until `t`'s admin API counts `n` sessions, all bound to
/// `s0`, in backend `app`; false if it never does.
pub async fn census_shows(c: &reqwest::Client, t: &Tether, n: usize) -> bool {
    wait_until_async(CENSUS_DEADLINE, || async {
        let backend = admin_json(c, t, "/api/v1/backends/app").await;
        let s0 = backend["servers"].as_array().unwrap().iter().find(|s| s["name"] == "s0").cloned();
        s0.is_some_and(|s| s["sessions_bound"] == n) && backend["stick_table_entries"] == n
    })
    .await
}

/// Flushes backend `app`'s sessions through `t`'s admin API and waits until `store` holds
/// none of its bindings; false if some are still there after [`DEADLINE`].
pub async fn flush_empties(c: &reqwest::Client, t: &Tether, store: &impl Store) -> bool {
    let r = c.delete(admin_url(t, "/api/v1/backends/app/sessions")).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    wait_until_async(DEADLINE, || async { store.keys("tether:app:*").await.is_empty() }).await
}

/// Requests a traffic loop sends after Redis (or a node of it) broke, at the least, however
/// long they take: enough that a failure per request would show in the counts and logs.
pub const MIN_BROKEN: usize = 100;

/// The most the median request may take while Redis is broken: far above a loopback request
/// of a debug build, far below the redis client's 1 s timeouts, which requests waiting on
/// Redis would show. A median, so that a busy machine stalling a few requests does not
/// count; a request that hangs fails at the test client's 5 s timeout instead.
pub const MEDIAN_BOUND: Duration = Duration::from_millis(200);

/// What a traffic loop saw.
#[derive(Debug, Default)]
pub struct Traffic {
    pub sent: usize,
    pub failures: Vec<String>,
    /// Latency of every request sent after Redis (or a node of it) broke.
    pub broken: Vec<Duration>,
}

// === impl Traffic ===

impl Traffic {
    /// Whether the loop has run for `at_least` (since `start`) and sent [`MIN_BROKEN`]
    /// requests after the break.
    pub fn is_done(&self, start: Instant, at_least: Duration) -> bool {
        start.elapsed() >= at_least && self.broken.len() >= MIN_BROKEN
    }

    /// Asserts that no request failed and the requests after the break did not wait on
    /// Redis (see [`MEDIAN_BOUND`]).
    pub fn assert_unharmed(&self, what: &str) {
        assert!(self.failures.is_empty(), "{what}: failed requests: {:?}", self.failures);
        let mut latencies = self.broken.clone();
        latencies.sort();
        let median = latencies.get(latencies.len() / 2).copied().unwrap_or_default();
        let max = latencies.last().copied().unwrap_or_default();
        assert!(
            median < MEDIAN_BOUND,
            "{what}: median latency {median:?} (bound {MEDIAN_BOUND:?}, max {max:?}) over {} \
             requests after the break",
            latencies.len()
        );
    }
}

/// Every line that mentions Redis, for failure reports.
pub fn about_redis(t: &Tether) -> Vec<Value> {
    let mentions = |l: &Value| l["message"].as_str().is_some_and(|m| m.contains("redis"));
    t.logs().into_iter().filter(mentions).collect()
}

/// Lines with `message` logged after `mark`.
pub fn count(t: &Tether, mark: usize, message: &str) -> usize {
    t.logs().iter().skip(mark).filter(|l| is(l, message)).count()
}

/// The log contract: `"message"` is exactly the event, details go in fields.
pub fn is(line: &Value, message: &str) -> bool {
    line["message"] == message
}
