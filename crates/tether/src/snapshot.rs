//! One immutable view of the configuration, published per generation.
//!
//! The data path loads the current [`Snapshot`] once per request (one atomic load through
//! `ArcSwap`) and reads routes, backends, balancers and sticky settings from it without any
//! lock. A reload builds a new snapshot beside the old one and swaps it in whole, so a request
//! never sees half of two configurations.
//!
//! Runtime state that must outlive a reload — each server's [`ServerState`] (health, admin
//! state, counters, in-flight) and each backend's pooled upstream client — lives in the
//! [`Registry`], keyed by stable names, and is reused by the next snapshot.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::TokioExecutor;
use ipnet::IpNet;
use tether_core::affinity::{CookieKeys, ServerTag, TagIndex};
use tether_core::balance::{self, Algorithm, Balancer, Member};
use tether_core::retry::RetryBudget;
use tether_core::sessions::SessionSketch;
use tether_core::stick::KeyHasher;
use tether_core::stick::memory::MemoryStore;
use tether_core::{AdminState, ServerState};
use tokio::sync::Semaphore;

use crate::config::{self, Config, SameSite, Secure};
use crate::metrics::{BackendMetrics, ListenerMetrics, Metrics, ServerMetrics};
use crate::rate::RateLimiter;
use crate::stick::Table;
use crate::stick::redis::{RedisShared, RedisTable};

use crate::upstream::h1::Origin;
use crate::upstream::{ClientKey, ServerClient, new_client};
use kept::Kept;

mod gauges;
mod kept;
mod listener;

/// Everything the data path needs, for one configuration generation.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one per successful load or reload.
    pub generation: u64,
    /// The configuration this was built from.
    pub config: Arc<Config>,
    /// Per listener, in config order. Connections name their listener and find it here by
    /// name ([`Snapshot::listener`]): a reload may add, remove and reorder listeners.
    pub listeners: Vec<ListenerView>,
    /// Routes with backend names resolved to indices.
    pub routes: Vec<RouteView>,
    /// Backends, in config order (sorted by name).
    pub backends: Vec<BackendView>,
}

impl Snapshot {
    /// The backend named `name`.
    pub fn backend(&self, name: &str) -> Option<&BackendView> {
        self.backends.iter().find(|b| *b.name == *name)
    }

    /// The listener named `name` (`None`: a reload removed it).
    pub fn listener(&self, name: &str) -> Option<&ListenerView> {
        self.listeners.iter().find(|l| *l.name == *name)
    }
}

/// A listener's request-time settings.
#[derive(Debug)]
pub struct ListenerView {
    /// Listener name (log label), its identity across reloads.
    pub name: Arc<str>,
    /// Its position in this snapshot's listeners: the index of its handles in the
    /// per-listener metrics of this snapshot's servers and backends.
    pub index: usize,
    /// Index of the default backend.
    pub default_backend: Option<usize>,
    /// TCP listeners: the SNI routes (name pattern, backend index), in file order.
    pub sni_routes: Vec<(config::HostMatch, usize)>,
    /// Longest pause allowed while receiving a request body.
    pub body_timeout: Duration,
    /// `rate_limit`.
    pub rate: Option<Arc<RateLimiter>>,
    /// What a client connection needs before and around HTTP (held by the connection task,
    /// which must not keep a whole snapshot alive); also the listener's trusted proxies,
    /// limits and refusal counters for the request path.
    pub conn: Arc<ConnSettings>,
}

/// A listener's connection-level settings.
#[derive(Debug)]
pub struct ConnSettings {
    /// Listener name (logs).
    pub name: Arc<str>,
    /// TLS termination, when configured.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Client certificates are asked for (`tls.client_ca`).
    pub client_certs: bool,
    /// `proxy_protocol`.
    pub proxy_protocol: bool,
    /// `mode = "tcp"`: connections are relayed as bytes to the default backend.
    pub tcp: bool,
    /// Peers whose forwarding headers (and PROXY header) are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// `limits` (connection counts).
    pub limits: config::ListenerLimits,
    /// `timeouts.header`: the request head, and the TLS handshake and PROXY header before it.
    pub header_timeout: Duration,
    /// `timeouts.idle`.
    pub idle_timeout: Duration,
    /// HTTP/2 settings of its connections.
    pub http: hyper::server::conn::http2::Builder<TokioExecutor>,
    /// Refusal counters.
    pub metrics: ListenerMetrics,
}

/// A route with its backends resolved.
#[derive(Debug)]
pub struct RouteView {
    /// The route as configured: match keys, rewrites, a redirect's or answer's content.
    pub route: config::Route,
    /// Where a matched request goes.
    pub target: RouteTarget,
}

/// Where a route sends what it matches.
#[derive(Debug)]
pub enum RouteTarget {
    /// Index into [`Snapshot::backends`].
    Backend(usize),
    /// A traffic split between backends.
    Split(SplitView),
    /// Tether answers itself (`redirect`, `respond`).
    Local,
}

/// A split with its sides' backends resolved and the signed cookie's tags precomputed.
#[derive(Debug)]
pub struct SplitView {
    /// (backend index, weight), in file order.
    pub sides: Vec<(usize, u32)>,
    /// Sum of the weights.
    pub total: u64,
    /// `sticky_split`.
    pub sticky: bool,
    /// The cookie's name.
    pub cookie: String,
    /// Signs and verifies the cookie (the affinity cookie's keys).
    pub keys: Arc<CookieKeys>,
    /// The cookie's namespace in the MAC (`split/<cookie>`).
    pub namespace: String,
    /// Per side, its tag under the signing key.
    pub tags: Vec<ServerTag>,
    /// Per key, tag → side (verifying keys after rotation map too).
    pub lookup: Vec<TagIndex>,
    /// Draws new clients' sides.
    pub rng: tether_core::rng::SplitMix,
}

impl SplitView {
    fn new(
        sides: Vec<(usize, u32)>,
        names: &[&str],
        sticky: bool,
        cookie: &str,
        keys: &Arc<CookieKeys>,
    ) -> Self {
        let namespace = format!("split/{cookie}");
        let tag = |k: usize, name: &str| keys.server_tag(k, &namespace, name).unwrap_or_default();
        let tags = names.iter().map(|n| tag(0, n)).collect();
        let lookup = (0..keys.len())
            .map(|k| names.iter().enumerate().map(|(i, n)| (tag(k, n), i)).collect())
            .collect();
        let total = sides.iter().map(|(_, w)| u64::from(*w)).sum();
        SplitView {
            sides,
            total,
            sticky,
            cookie: cookie.to_owned(),
            keys: Arc::clone(keys),
            namespace,
            tags,
            lookup,
            rng: tether_core::rng::SplitMix::default(),
        }
    }
}

/// The view of `route`, or `None` when a backend it names is missing.
fn route_view(
    route: &config::Route,
    index: &HashMap<&str, usize>,
    keys: &Arc<CookieKeys>,
) -> Option<RouteView> {
    let target = match &route.action {
        config::RouteAction::Backend(b) => RouteTarget::Backend(*index.get(b.as_str())?),
        config::RouteAction::Split { sides, sticky, cookie } => {
            let resolved = sides
                .iter()
                .map(|s| Some((*index.get(s.backend.as_str())?, s.weight)))
                .collect::<Option<Vec<_>>>()?;
            let names: Vec<&str> = sides.iter().map(|s| s.backend.as_str()).collect();
            RouteTarget::Split(SplitView::new(resolved, &names, *sticky, cookie, keys))
        }
        config::RouteAction::Redirect { .. } | config::RouteAction::Respond { .. } => {
            RouteTarget::Local
        }
    };
    Some(RouteView { route: route.clone(), target })
}

/// A backend ready to serve.
#[derive(Debug)]
pub struct BackendView {
    /// Backend name.
    pub name: Arc<str>,
    /// Servers in config order; balancer indices refer to this list.
    pub servers: Vec<ServerView>,
    /// The balancing algorithm over all servers (backups are filtered by the caller).
    pub balancer: Box<dyn Balancer>,
    /// `hash_key`: what keyed algorithms (`hash`, `maglev`) hash.
    pub hash_key: Option<config::HashKey>,
    /// `balance = "least_sessions"`: new sessions go to the server with the fewest.
    pub least_sessions: bool,
    /// `balance = "least_time"`: response times feed the balancer.
    pub times_responses: bool,
    /// Affinity, when configured.
    pub sticky: Option<StickyView>,
    /// The stick table, for table-based affinity modes (`client_ip`, `header`, `app_cookie`).
    pub table: Option<Table>,
    /// Turns raw affinity keys into table keys.
    pub hasher: KeyHasher,
    /// Balancer members (also used for rendezvous hashing of new table keys).
    pub members: Vec<Member>,
    /// Server index by stable name (table values name servers).
    pub by_name: HashMap<Arc<str>, usize>,
    /// Metric handles, resolved once.
    pub metrics: BackendMetrics,
    /// Per-server admission limits.
    pub limits: config::Limits,
    /// Requests waiting for a slot now (bounded by `limits.queue_size`).
    pub waiting: Arc<AtomicUsize>,
    /// Passive outlier detection, when configured.
    pub outlier: Option<config::Outlier>,
    /// What to do when no server is usable.
    pub on_all_down: config::OnAllDown,
    /// Retry policy for idempotent requests.
    pub retry: config::Retry,
    /// Retry budget (shared by the requests of this generation).
    pub budget: Arc<RetryBudget>,
    /// Active health check, when configured.
    pub health_check: Option<config::HealthCheck>,
    /// Slow-start ramp in milliseconds (0: off).
    pub slow_start_ms: u64,
    /// Random source for slow-start admission.
    pub rng: tether_core::rng::SplitMix,
    /// New table pins follow the balancer (load-aware algorithms, so new capacity gets new
    /// sessions first) instead of rendezvous hashing.
    pub pin_by_balancer: bool,
    /// Time allowed until the server's response head.
    pub response_timeout: Duration,
    /// `timeouts.connect`: how long a TCP listener waits for a server's connection.
    pub connect_timeout: Duration,
    /// `rate_limit`: per-client rate into this backend.
    pub rate: Option<Arc<RateLimiter>>,
    /// `https` for TLS backends, else `http`.
    pub scheme: http::uri::Scheme,
    /// The client speaks HTTP/2 to the servers (`http2`).
    pub client_http2: bool,
    /// `tls`: how to reach the servers over TLS (also used by health checks).
    pub upstream_tls: Option<config::UpstreamTls>,
    /// `send_proxy` (TCP listeners): the PROXY header sent before the client's bytes.
    pub send_proxy: Option<config::ProxyVersion>,
    /// HTTP listeners or routes send requests here (TCP listeners may too).
    pub http: bool,
}

/// One server of a backend.
#[derive(Debug)]
pub struct ServerView {
    /// Shared runtime state, reused across reloads.
    pub state: Arc<ServerState>,
    /// Where to connect.
    pub authority: http::uri::Authority,
    /// Static weight.
    pub weight: u32,
    /// Only used when no primary server is usable.
    pub backup: bool,
    /// The file (or admin API), or DNS discovery.
    pub source: config::ServerSource,
    /// Metric handles, resolved once.
    pub metrics: ServerMetrics,
    /// Connection slots when `limits.max_connections_per_server` is set (FIFO waiters).
    pub slots: Option<Arc<Semaphore>>,
    /// How requests reach the server, with its pooled connections (kept across reloads
    /// while its address, TLS and timeouts stay).
    pub client: ServerClient,
    /// Cookie affinity: the distinct sessions seen lately (kept across reloads while
    /// `idle_timeout` stays).
    pub sessions: Option<Arc<SessionSketch>>,
    /// Its live sessions as `least_sessions` reads them per request.
    pub gauge: SessionGauge,
}

/// How often `least_sessions` re-reads a server's session count (a table count or a sketch
/// estimate: microseconds, too slow for every new session).
const SESSION_GAUGE_REFRESH_MS: u64 = 250;

/// A server's live sessions as `least_sessions` reads them on the request path: the counted
/// figure, refreshed at most every [`SESSION_GAUGE_REFRESH_MS`], plus the sessions placed on
/// the server since, so a burst of new sessions sees each placement at once.
#[derive(Debug, Default)]
pub struct SessionGauge {
    counted: AtomicU64,
    counted_at_ms: AtomicU64,
    placed: AtomicU64,
}

impl BackendView {
    /// Server `s`'s live sessions and whether the figure is a count (table modes) rather
    /// than an estimate (cookie mode); `(0, true)` without affinity.
    pub fn sessions_of(&self, s: &ServerView) -> (u64, bool) {
        if let Some(t) = &self.table {
            return (t.sessions_bound(s.state.name()), t.counts_exactly());
        }
        match &s.sessions {
            Some(sketch) => (sketch.estimate(crate::clock::unix_now()), false),
            None => (0, true),
        }
    }
}

impl BackendView {
    /// Server `i`'s live sessions for `least_sessions` at `now_ms` (see [`SessionGauge`]).
    pub fn live_sessions(&self, i: usize, now_ms: u64) -> u64 {
        let server = &self.servers[i];
        let g = &server.gauge;
        let at = g.counted_at_ms.load(Ordering::Relaxed);
        let due = at == 0 || now_ms.saturating_sub(at) >= SESSION_GAUGE_REFRESH_MS;
        // One caller refreshes; the others read the figure as it is.
        if due
            && g.counted_at_ms
                .compare_exchange(at, now_ms.max(1), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            let placed = g.placed.load(Ordering::Relaxed);
            g.counted.store(self.sessions_of(server).0, Ordering::Relaxed);
            g.placed.fetch_sub(placed, Ordering::Relaxed);
        }
        g.counted.load(Ordering::Relaxed) + g.placed.load(Ordering::Relaxed)
    }

    /// A new session was placed on server `i` (counted until the next refresh sees it).
    pub fn placed_session(&self, i: usize) {
        self.servers[i].gauge.placed.fetch_add(1, Ordering::Relaxed);
    }
}

impl ServerView {
    /// Whether the server is at its connection limit.
    pub fn full(&self) -> bool {
        self.slots.as_ref().is_some_and(|s| s.available_permits() == 0)
    }
}

/// Cookie affinity of one backend, with keyed server tags precomputed.
#[derive(Debug)]
pub struct StickyView {
    /// Validated settings.
    pub config: config::Sticky,
    /// Signing and verifying keys.
    pub keys: Arc<CookieKeys>,
    /// Per server (index), its tag under the signing key.
    pub tags: Vec<ServerTag>,
    /// Per key, tag → server index (verifying keys after rotation map too).
    pub lookup: Vec<TagIndex>,
    /// `; Path=/; HttpOnly; SameSite=Lax` etc., without `Secure` (decided per request).
    pub attributes: String,
    /// Requests in flight per session, when `max_in_flight_per_session` is set.
    pub in_flight: Option<Arc<tether_core::conns::ConnCounter>>,
    /// Each client's first pick within `first_pick_window`, by client key (cookie mode).
    pub first_picks: Option<moka::sync::Cache<u64, FirstPick>>,
}

/// Most clients whose first pick is remembered at once, per backend: beyond it the least
/// recently seen are forgotten (their next cookieless request picks afresh).
const MAX_FIRST_PICKS: u64 = 65_536;

/// Where a client's first cookieless request was placed, shared by its next ones within
/// `first_pick_window`: same server, same session, same cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstPick {
    /// Server index in the backend.
    pub server: usize,
    /// The new session's id.
    pub session: u64,
    /// When the session started (its cookie's issue and refresh time).
    pub issued_at: u32,
}

/// What a stick table was built with: it is kept across a reload only if this is unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TableKey {
    capacity: u64,
    redis: Option<config::RedisStore>,
}

/// Runtime state kept across reloads, owned by the single task that builds snapshots.
#[derive(Debug, Default)]
pub struct Registry {
    metrics: Arc<Metrics>,
    /// Per (backend, server): the runtime state, kept for as long as the server exists.
    servers: Kept<ServerName, (), Arc<ServerState>>,
    /// The `state` each server had in the previous file: applied only when it changes, so a
    /// reload does not undo a runtime change the file says nothing new about.
    file_states: HashMap<ServerName, AdminState>,
    from_file: bool,
    tables: Kept<String, TableKey, Table>,
    redis: Option<(config::RedisStore, Arc<RedisShared>)>,
    /// Connection slots, by `limits.max_connections_per_server`.
    slots: Kept<ServerName, u32, Arc<Semaphore>>,
    /// Cookie-mode session sketches, by window (`idle_timeout` in seconds).
    sketches: Kept<ServerName, u64, Arc<SessionSketch>>,
    /// Each server's client and connection pool.
    server_clients: Kept<ServerName, ClientKey, ServerClient>,
    limiters: Kept<String, config::RateLimit, Arc<RateLimiter>>,
    generation: u64,
}

/// A server's identity across reloads: (backend, server).
type ServerName = (String, String);

/// Who a backend serves: every listener's name (metric labels), and whether a TCP listener
/// uses it (its servers count TCP connections and bytes).
#[derive(Debug, Clone, Copy)]
struct Served<'a> {
    listeners: &'a [String],
    tcp: bool,
    http: bool,
}

impl Registry {
    /// Builds the next snapshot from `config`, reusing the state of servers and backends that
    /// still exist and dropping the rest. `fallback_keys` sign cookies when the config has none.
    pub fn build(&mut self, config: Config, fallback_keys: &Arc<CookieKeys>) -> Snapshot {
        self.from_file = true;
        self.build_inner(config, fallback_keys)
    }

    /// Like [`Registry::build`] for a change made at runtime (admin API): server states in
    /// `config` are ignored — the servers' runtime states stand — and the file's states are
    /// still the reference for the next reload.
    pub fn rebuild(&mut self, config: Config, fallback_keys: &Arc<CookieKeys>) -> Snapshot {
        self.from_file = false;
        self.build_inner(config, fallback_keys)
    }

    fn build_inner(&mut self, config: Config, fallback_keys: &Arc<CookieKeys>) -> Snapshot {
        self.generation += 1;
        let keys =
            config.cookie_keys.clone().map(Arc::new).unwrap_or_else(|| Arc::clone(fallback_keys));
        let mut backends = self.build_backends(&config, &keys);
        if self.from_file {
            self.file_states = config
                .backends
                .iter()
                .flat_map(|b| b.servers.iter().map(|s| ((b.name.clone(), s.name.clone()), s.state)))
                .collect();
        }
        let index: HashMap<&str, usize> =
            config.backends.iter().enumerate().map(|(i, b)| (b.name.as_str(), i)).collect();
        for (b, view) in config.backends.iter().zip(&mut backends) {
            view.rate = b.rate_limit.map(|r| self.limiter(format!("backend/{}", b.name), r));
        }
        let listeners = (config.listeners.iter().enumerate())
            .map(|(i, l)| self.listener_view(i, l, &index))
            .collect();
        let routes = config.routes.iter().filter_map(|r| route_view(r, &index, &keys)).collect();
        self.limiters.commit();
        Snapshot {
            generation: self.generation,
            config: Arc::new(config),
            listeners,
            routes,
            backends,
        }
    }

    /// The backends' views, keeping (and then holding for the next build) every client,
    /// table, server state and slot whose key did not change.
    fn build_backends(&mut self, config: &Config, keys: &Arc<CookieKeys>) -> Vec<BackendView> {
        let hasher = KeyHasher::new(keys.derive_seed("tether/stick/v1"));
        let listener_names: Vec<String> = config.listeners.iter().map(|l| l.name.clone()).collect();
        // One Redis connection for every backend, kept while the URL and settings stay.
        let redis = config.redis.as_ref().map(|cfg| match &self.redis {
            Some((old, shared)) if old == cfg => Arc::clone(shared),
            _ => RedisShared::connect(cfg),
        });
        self.redis = config.redis.clone().zip(redis.clone());
        let table_key = TableKey { capacity: config.stick_capacity, redis: config.redis.clone() };
        let (tcp, http) = (config.tcp_backends(), config.http_backends());
        let backends = config
            .backends
            .iter()
            .map(|b| {
                let served = Served {
                    listeners: &listener_names,
                    tcp: tcp.contains(&*b.name),
                    http: http.contains(&*b.name),
                };
                let mut view = self.backend(b, keys, served);
                view.table = self.table_for(b, &table_key, redis.as_ref());
                view.hasher = hasher;
                view
            })
            .collect();
        self.servers.commit();
        self.server_clients.commit();
        self.tables.commit();
        self.slots.commit();
        self.sketches.commit();
        backends
    }

    /// A listener's view: its default backend resolved, its rate limiter kept when unchanged,
    /// its connection settings.
    fn listener_view(
        &mut self,
        position: usize,
        l: &config::Listener,
        index: &HashMap<&str, usize>,
    ) -> ListenerView {
        let name: Arc<str> = l.name.as_str().into();
        ListenerView {
            name: Arc::clone(&name),
            index: position,
            default_backend: l.default_backend.as_deref().and_then(|b| index.get(b).copied()),
            sni_routes: l
                .sni_routes
                .iter()
                .filter_map(|r| Some((r.sni.clone(), *index.get(r.backend.as_str())?)))
                .collect(),
            body_timeout: l.body_timeout,
            rate: l.rate_limit.map(|r| self.limiter(format!("listener/{}", l.name), r)),
            conn: Arc::new(ConnSettings {
                name,
                tls: l.tls.as_ref().map(|t| Arc::clone(&t.server_config)),
                client_certs: l.tls.as_ref().is_some_and(|t| t.client_auth.is_some()),
                proxy_protocol: l.proxy_protocol,
                tcp: l.mode == config::ListenerMode::Tcp,
                trusted_proxies: l.trusted_proxies.clone(),
                limits: l.limits,
                header_timeout: l.header_timeout,
                idle_timeout: l.idle_timeout,
                http: listener::connection_builder(l),
                metrics: self.metrics.listener(&l.name),
            }),
        }
    }

    /// The limiter called `name`, kept from the previous snapshot when its settings stay
    /// (clients keep their buckets across a reload).
    fn limiter(&mut self, name: String, config: config::RateLimit) -> Arc<RateLimiter> {
        self.limiters.get(&name, config, |c| Arc::new(RateLimiter::new(*c)))
    }

    /// The client of server `s`, kept across reloads while its settings and address stay:
    /// Tether's HTTP/1.1 client with the server's pool, or a hyper HTTP/2 client of its own.
    fn server_client(
        &mut self,
        b: &config::Backend,
        s: &config::Server,
        key: &ServerName,
    ) -> ServerClient {
        let mut ck = ClientKey::of(b);
        ck.pinned = Some(s.address.to_string());
        self.server_clients.get(key, ck, |ck| {
            if !ck.http2 {
                let tls = ck.tls.as_ref();
                return ServerClient::H1(Origin::new(s.address.clone(), tls, ck.connect, ck.idle));
            }
            let scheme = if b.tls.is_some() { "https" } else { "http" };
            let target = format!("{scheme}://{}", s.address).parse::<http::Uri>().ok();
            ServerClient::H2(Box::new(new_client(ck, target)))
        })
    }

    fn backend(
        &mut self,
        b: &config::Backend,
        keys: &Arc<CookieKeys>,
        served: Served<'_>,
    ) -> BackendView {
        let listeners = served.listeners;
        let views: Vec<ServerView> =
            b.servers.iter().map(|s| self.server_view(b, s, served)).collect();
        let members: Vec<Member> = views
            .iter()
            .map(|v| Member { state: Arc::clone(&v.state), weight: v.weight })
            .collect();
        let sticky = b.sticky.as_ref().map(|s| sticky_view(&b.name, s, &b.servers, keys));
        let by_name =
            views.iter().enumerate().map(|(i, v)| (v.state.name_arc().clone(), i)).collect();
        BackendView {
            name: b.name.as_str().into(),
            balancer: balance::build_with(
                b.balance.algorithm(),
                &members,
                &balance::Options { hash_balance_factor: b.hash_balance_factor },
            ),
            hash_key: b.hash_key.clone(),
            least_sessions: b.balance == config::Balance::LeastSessions,
            times_responses: b.balance == config::Balance::Core(Algorithm::LeastTime),
            members,
            by_name,
            metrics: self.metrics.backend(listeners, &b.name, b.sticky.is_some()),
            limits: b.limits,
            waiting: Arc::new(AtomicUsize::new(0)),
            outlier: b.outlier,
            on_all_down: b.on_all_down,
            retry: b.retry,
            budget: Arc::new(RetryBudget::new(b.retry.budget_percent)),
            health_check: b.health_check.clone(),
            slow_start_ms: b.slow_start.as_millis() as u64,
            rng: tether_core::rng::SplitMix::default(),
            // Load-aware and keyed algorithms place new table keys themselves.
            pin_by_balancer: b.balance == config::Balance::LeastSessions
                || matches!(
                    b.balance.algorithm(),
                    Algorithm::LeastConn
                        | Algorithm::P2c
                        | Algorithm::LeastTime
                        | Algorithm::Hash
                        | Algorithm::Maglev
                ),
            table: None,
            hasher: KeyHasher::new(0),
            servers: views,
            sticky,
            response_timeout: b.response_timeout,
            connect_timeout: b.connect_timeout,
            rate: None,
            scheme: if b.tls.is_some() {
                http::uri::Scheme::HTTPS
            } else {
                http::uri::Scheme::HTTP
            },
            client_http2: b.http2,
            upstream_tls: b.tls.clone(),
            send_proxy: b.send_proxy,
            http: served.http,
        }
    }

    /// A server's view, keeping its runtime state and connection slots across reloads (a
    /// server new to this generation starts ramping up like a recovered one).
    fn server_view(
        &mut self,
        b: &config::Backend,
        s: &config::Server,
        served: Served<'_>,
    ) -> ServerView {
        let key = (b.name.clone(), s.name.clone());
        let reloaded = self.generation > 1;
        let state = self.servers.get(&key, (), |()| {
            let fresh = Arc::new(ServerState::new(s.name.as_str()));
            // Added by a reload: ramp it up like a recovered server.
            if reloaded {
                fresh.mark_recovered(crate::clock::unix_now_ms());
            }
            fresh
        });
        if self.from_file && self.file_states.get(&key) != Some(&s.state) {
            let old = state.set_admin_state(s.state);
            if old != s.state {
                tracing::info!(backend = %b.name, server = %s.name, from = old.as_str(), to = s.state.as_str(), "server state changed by configuration");
            }
        }
        let limit = b.limits.max_per_server;
        let slots = (limit > 0)
            .then(|| self.slots.get(&key, limit, |l| Arc::new(Semaphore::new(*l as usize))));
        let client = self.server_client(b, s, &key);
        let sessions = b
            .sticky
            .as_ref()
            .filter(|st| st.mode == config::StickyMode::Cookie)
            .map(|st| u64::from(st.expiry.idle_timeout).max(1))
            .map(|window| self.sketches.get(&key, window, |w| Arc::new(SessionSketch::new(*w))));
        ServerView {
            gauge: SessionGauge::default(),
            sessions,
            client,
            slots,
            state,
            authority: s.address.clone(),
            weight: s.weight,
            backup: s.backup,
            source: s.source,
            metrics: self.metrics.server(served.listeners, &b.name, &s.name, served.tcp),
        }
    }

    /// The stick table of a table-mode backend: the existing one (its bindings survive the
    /// reload) unless the capacity changed.
    fn table_for(
        &mut self,
        b: &config::Backend,
        key: &TableKey,
        redis: Option<&Arc<RedisShared>>,
    ) -> Option<Table> {
        let sticky = b.sticky.as_ref().filter(|s| s.mode.uses_table())?;
        let table = self.tables.get(&b.name, key.clone(), |key| match redis {
            Some(shared) => Table::Redis(RedisTable::new(
                Arc::clone(shared),
                &b.name,
                key.capacity,
                sticky.expiry,
            )),
            None => Table::Memory(Arc::new(MemoryStore::new(key.capacity, sticky.expiry))),
        });
        // A kept table takes the new idle timeout and lifetime.
        table.set_expiry(sticky.expiry);
        Some(table)
    }

    /// The process's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

fn sticky_view(
    backend: &str,
    cfg: &config::Sticky,
    servers: &[config::Server],
    keys: &Arc<CookieKeys>,
) -> StickyView {
    let tag = |k: usize, name: &str| keys.server_tag(k, backend, name).unwrap_or_default();
    let tags = servers.iter().map(|s| tag(0, &s.name)).collect();
    let lookup = (0..keys.len())
        .map(|k| servers.iter().enumerate().map(|(i, s)| (tag(k, &s.name), i)).collect())
        .collect();
    let mut attributes = format!("; Path={}", cfg.path);
    if let Some(d) = &cfg.domain {
        attributes.push_str("; Domain=");
        attributes.push_str(d);
    }
    if cfg.http_only {
        attributes.push_str("; HttpOnly");
    }
    attributes.push_str(match cfg.same_site {
        SameSite::Lax => "; SameSite=Lax",
        SameSite::Strict => "; SameSite=Strict",
        SameSite::None => "; SameSite=None",
    });
    let always_secure = cfg.secure == Secure::Always || cfg.same_site == SameSite::None;
    if always_secure {
        attributes.push_str("; Secure");
    }
    if let Some(age) = cfg.max_age {
        attributes.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    // Keyed by a secret of the cookie keys, so clients cannot aim collisions at a session.
    let in_flight = (cfg.max_in_flight_per_session > 0)
        .then(|| tether_core::conns::ConnCounter::new(keys.derive_seed("tether/in-flight/v1")));
    let first_picks = (!cfg.first_pick_window.is_zero()).then(|| {
        moka::sync::Cache::builder()
            .max_capacity(MAX_FIRST_PICKS)
            .time_to_live(cfg.first_pick_window)
            .build()
    });
    StickyView {
        config: cfg.clone(),
        keys: Arc::clone(keys),
        tags,
        lookup,
        attributes,
        in_flight,
        first_picks,
    }
}

impl StickyView {
    /// Whether `Secure` must be added for a request whose client-facing scheme is `https`.
    pub fn add_secure(&self, https: bool) -> bool {
        self.config.secure == Secure::Auto && https && self.config.same_site != SameSite::None
    }
}

#[cfg(test)]
mod tests;
