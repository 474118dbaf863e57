//! Configuration: the TOML file in two stages.
//!
//! 1. [`raw`]: serde types that mirror the file, `deny_unknown_fields` everywhere.
//! 2. [`validate`]: turns the raw file into a [`Config`] whose every value is checked and
//!    typed, collecting *all* errors (each with its key path and line) instead of stopping
//!    at the first.
//!
//! A structural error (bad TOML syntax, an unknown key, a wrong type) stops stage one, so it
//! is reported alone; every other mistake is reported together. Defaults live in the
//! `DEFAULT_*` constants below and in `docs/configuration.md`.

pub mod raw;
mod route;
mod validate;

pub use route::{
    HeaderEdits, HostMatch, Part, Rewrite, Route, RouteAction, RouteMatch, SplitSide, Template,
};

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use tether_core::affinity::{CookieKeys, Expiry};
use tether_core::balance::Algorithm;

/// `grace_period`: how long SIGTERM waits for in-flight requests.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(30);
/// `listeners[].timeouts.header`: time allowed to read a request head.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// `listeners[].timeouts.body`: longest pause while receiving a request body.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// `listeners[].timeouts.idle`: keep-alive idle time of a client connection.
pub const DEFAULT_CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// `backends.*.timeouts.connect`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// `backends.*.timeouts.response`: time until the server's response head.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// `backends.*.timeouts.idle`: how long a pooled server connection may sit idle.
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The longest duration any key accepts: 400 days.
///
/// Past it a value is refused by validation rather than overflowing a timer at run time
/// (`Instant + Duration` panics near `i64::MAX` seconds). 400 days rather than a round year
/// because it is the longest cookie lifetime browsers honour (RFC 6265bis caps `Max-Age` and
/// `Expires` there) and it admits `"1y"` (365.25 days) for `sticky.max_age`/`max_lifetime`;
/// no timeout needs more.
pub const MAX_DURATION: Duration = Duration::from_secs(400 * 24 * 3600);
/// `backends.*.sticky.cookie_name`.
pub const DEFAULT_COOKIE_NAME: &str = "tether";
/// `[stick_table].capacity`.
pub const DEFAULT_STICK_CAPACITY: u64 = 1_000_000;
/// `backends.*.sticky.idle_timeout`.
pub const DEFAULT_STICKY_IDLE: Duration = Duration::from_secs(30 * 60);
/// `backends.*.sticky.max_lifetime`.
pub const DEFAULT_STICKY_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `grace_period`.
    pub grace_period: Duration,
    /// `access_log`: one log line per request (default true).
    pub access_log: bool,
    /// `[[listeners]]`, in file order.
    pub listeners: Vec<Listener>,
    /// `[[routes]]`, in file order (first match wins).
    pub routes: Vec<Route>,
    /// `[backends.NAME]`, sorted by name.
    pub backends: Vec<Backend>,
    /// `[secrets].cookie_keys` or `TETHER_COOKIE_KEYS`; `None` means a random per-process key.
    pub cookie_keys: Option<CookieKeys>,
    /// `[stick_table].capacity`: bindings per backend table (the local cache with Redis).
    pub stick_capacity: u64,
    /// `[stick_table] store = "redis"`: the shared table.
    pub redis: Option<RedisStore>,
    /// `[admin]`, when present.
    pub admin: Option<Admin>,
    /// `[request_id] header` (default `X-Request-Id`); `None` with `enabled = false`.
    pub request_id: Option<http::HeaderName>,
}

/// Default `[request_id] header`.
pub const DEFAULT_REQUEST_ID_HEADER: &str = "x-request-id";

/// `[stick_table] store = "redis"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisStore {
    /// `redis_url`.
    pub url: String,
    /// `redis_timeout` (default 10 ms): the longest a request waits on Redis.
    pub timeout: Duration,
    /// `redis_prefix` (default `tether`): key namespace.
    pub prefix: String,
    /// `redis_cluster` (default false): `url` lists seed nodes of a Redis Cluster.
    pub cluster: bool,
    /// The PEM read from `redis_ca_file`: the CA that signs Redis's certificate (`rediss://`);
    /// `None` trusts the system's roots.
    pub ca_pem: Option<Vec<u8>>,
}

impl RedisStore {
    /// The node URLs: one, or (cluster) the comma-separated seed list.
    pub fn urls(&self) -> Vec<&str> {
        self.url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect()
    }

    /// Whether the connection uses TLS (`rediss://`).
    pub fn tls(&self) -> bool {
        self.url.trim_start().starts_with("rediss://")
    }
}

/// `[admin]`: the admin API, metrics and dashboard listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// `address` (default `127.0.0.1:8081`).
    pub address: SocketAddr,
    /// The token read from `token_file`, whitespace trimmed.
    pub token: Option<String>,
}

/// `[admin].address`.
pub const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:8081";

/// One `[[listeners]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    /// Unique name (log and metric label).
    pub name: String,
    /// Address to bind; port 0 picks a free port (tests).
    pub address: SocketAddr,
    /// `mode` (default `http`): what the listener speaks to its clients.
    pub mode: ListenerMode,
    /// Backend for requests no route matches; without it they get 404.
    pub default_backend: Option<String>,
    /// Peers whose `X-Forwarded-For` / `Forwarded` are believed and extended.
    pub trusted_proxies: Vec<IpNet>,
    /// `timeouts.header`.
    pub header_timeout: Duration,
    /// `timeouts.body`.
    pub body_timeout: Duration,
    /// `timeouts.idle`.
    pub idle_timeout: Duration,
    /// `limits`.
    pub limits: ListenerLimits,
    /// `rate_limit`: per-client request rate, over every request of the listener.
    pub rate_limit: Option<RateLimit>,
    /// `tls`: terminate TLS with these certificates.
    pub tls: Option<crate::tls::TlsSettings>,
    /// `proxy_protocol`: connections start with a PROXY protocol (v1 or v2) header, accepted
    /// only from `trusted_proxies`.
    pub proxy_protocol: bool,
    /// `http2.max_concurrent_streams` (default 100).
    pub h2_max_streams: u32,
    /// TCP listeners: the `[[routes]]` with `sni` that apply to it, in file order.
    pub sni_routes: Vec<SniRoute>,
}

/// A `[[routes]]` entry with `sni`: TLS passthrough on TCP listeners, by the server name of
/// the client's ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniRoute {
    /// Its position in `[[routes]]` (one route may apply to several listeners).
    pub position: usize,
    /// `sni`: the name, exact or `*.suffix`.
    pub sni: HostMatch,
    /// `backend`.
    pub backend: String,
}

impl Config {
    /// The backends that TCP listeners use: default backends and SNI routes' backends.
    pub fn tcp_backends(&self) -> std::collections::HashSet<&str> {
        let tcp = self.listeners.iter().filter(|l| l.mode == ListenerMode::Tcp);
        tcp.flat_map(|l| l.default_backend.iter().chain(l.sni_routes.iter().map(|r| &r.backend)))
            .map(String::as_str)
            .collect()
    }

    /// The backends HTTP requests reach: HTTP listeners' default backends, and routes'
    /// backends and split sides.
    pub fn http_backends(&self) -> std::collections::HashSet<&str> {
        let http = self.listeners.iter().filter(|l| l.mode == ListenerMode::Http);
        let defaults = http.filter_map(|l| l.default_backend.as_deref());
        let routed = self.routes.iter().flat_map(|r| match &r.action {
            RouteAction::Backend(b) => vec![b.as_str()],
            RouteAction::Split { sides, .. } => sides.iter().map(|s| s.backend.as_str()).collect(),
            RouteAction::Redirect { .. } | RouteAction::Respond { .. } => Vec::new(),
        });
        defaults.chain(routed).collect()
    }
}

/// `backends.NAME.send_proxy`: which PROXY protocol header tells the server the client's
/// address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    /// `v1`: the text header (`PROXY TCP4 ...`).
    V1,
    /// `v2`: the binary header.
    V2,
}

/// `listeners[].mode`: what a listener speaks to its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListenerMode {
    /// `http` (default): HTTP/1.1 and HTTP/2, routed per request.
    #[default]
    Http,
    /// `tcp`: each connection relayed as bytes to a server of `default_backend`.
    Tcp,
}

impl ListenerMode {
    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerMode::Http => "http",
            ListenerMode::Tcp => "tcp",
        }
    }
}

/// `listeners[].limits`. Defaults follow Envoy's edge guidance where it gives one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// `max_header_bytes` (default 65536): request line plus headers; beyond it, 431.
    pub max_header_bytes: usize,
    /// `max_headers` (default 100): header lines per request; beyond it, 431.
    pub max_headers: usize,
    /// `max_body_bytes` (default 0 = unlimited): request body; beyond it, 413.
    pub max_body_bytes: u64,
    /// `max_connections` (default 0 = unlimited): open client connections on the listener.
    pub max_connections: usize,
    /// `max_connections_per_ip` (default 0 = unlimited): open connections per client address.
    pub max_connections_per_ip: usize,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_body_bytes: 0,
            max_connections: 0,
            max_connections_per_ip: 0,
        }
    }
}

/// `limits.max_header_bytes`.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// `limits.max_headers`.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// `http2.max_concurrent_streams`.
pub const DEFAULT_H2_MAX_STREAMS: u32 = 100;

/// `rate_limit` on a listener or a backend: a token bucket per client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// `requests_per_second`: the sustained rate.
    pub per_second: f64,
    /// `burst` (default: twice the rate, at least 1): requests allowed at once.
    pub burst: u32,
    /// `key`: what identifies a client.
    pub key: RateKey,
}

/// `backends.NAME.tls`: TLS to the servers.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// PEM of `ca_file`: the CA that signs the servers' certificates; `None` trusts the
    /// system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// `server_name`: the name sent as SNI and verified in the servers' certificates;
    /// `None` verifies each server's IP address.
    pub server_name: Option<String>,
    /// The rustls client configuration built from them.
    pub client_config: std::sync::Arc<rustls::ClientConfig>,
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.ca_pem == other.ca_pem && self.server_name == other.server_name
    }
}

impl Eq for UpstreamTls {}

/// `rate_limit.key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateKey {
    /// `client_ip` (default): the client's address (after trusted proxies).
    ClientIp,
    /// `affinity`: the session's affinity key (cookie, header, application cookie), so one
    /// session cannot flood its pinned server from many addresses; requests without one
    /// fall back to the client address.
    Affinity,
}

/// One `[backends.NAME]` section.
#[derive(Debug, Clone)]
pub struct Backend {
    /// The table key.
    pub name: String,
    /// `balance` (default `round_robin`).
    pub balance: Balance,
    /// `hash_key`: what `hash` and `maglev` hash (required by them, refused otherwise).
    pub hash_key: Option<HashKey>,
    /// `hash_balance_factor`: `hash`'s bound on a server's load, in percent of the average
    /// (0: no bound).
    pub hash_balance_factor: u32,
    /// `[backends.NAME.sticky]` when `mode` is not `none`.
    pub sticky: Option<Sticky>,
    /// `timeouts.connect`.
    pub connect_timeout: Duration,
    /// `timeouts.response`.
    pub response_timeout: Duration,
    /// `timeouts.idle`.
    pub idle_timeout: Duration,
    /// `limits`.
    pub limits: Limits,
    /// `[backends.NAME.health_check]`, when present.
    pub health_check: Option<HealthCheck>,
    /// `on_all_down`.
    pub on_all_down: OnAllDown,
    /// `retry`.
    pub retry: Retry,
    /// `outlier`, when present.
    pub outlier: Option<Outlier>,
    /// `slow_start`: ramp a recovered or added server over this long (zero: off).
    pub slow_start: Duration,
    /// `rate_limit`: per-client request rate into this backend.
    pub rate_limit: Option<RateLimit>,
    /// `tls`: connect to the servers over TLS.
    pub tls: Option<UpstreamTls>,
    /// `http2`: speak HTTP/2 to the servers (ALPN `h2` over TLS, prior knowledge without).
    pub http2: bool,
    /// `send_proxy` (TCP backends): a PROXY protocol header before the client's bytes.
    pub send_proxy: Option<ProxyVersion>,
    /// `[[backends.NAME.servers]]`, in file order.
    pub servers: Vec<Server>,
    /// `[backends.NAME.discovery]`: more servers, found in DNS.
    pub discovery: Option<Discovery>,
}

/// `backends.NAME.balance`: one of tether-core's algorithms, or `least_sessions`, which
/// balances sessions (it reads the session counts Tether keeps per server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// `round_robin`, `least_conn`, `random`, `p2c`, `first`, `hash`, `maglev`, `least_time`.
    Core(Algorithm),
    /// `least_sessions` (sticky backends only): a new session goes to the server with the
    /// fewest live sessions relative to its weight.
    LeastSessions,
}

impl Balance {
    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::Core(a) => a.as_str(),
            Balance::LeastSessions => "least_sessions",
        }
    }

    /// The algorithm the backend's balancer object runs (`least_sessions` falls back to
    /// `least_conn` when no session count can tell servers apart).
    pub fn algorithm(self) -> Algorithm {
        match self {
            Balance::Core(a) => a,
            Balance::LeastSessions => Algorithm::LeastConn,
        }
    }
}

/// `backends.NAME.hash_key`: what identifies a request for `hash` and `maglev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// `uri`: path and query.
    Uri,
    /// `path`: the path alone.
    Path,
    /// `client_ip`: the client's address (`X-Forwarded-For` from `trusted_proxies`).
    ClientIp,
    /// `header:NAME`: a request header's value.
    Header(http::HeaderName),
    /// `cookie:NAME`: a request cookie's value.
    Cookie(String),
}

/// `sticky.same_site`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// `lax` (default).
    Lax,
    /// `strict`.
    Strict,
    /// `none` (forces `Secure`, as browsers require).
    None,
}

/// `sticky.secure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secure {
    /// `"auto"` (default): Secure when the client-facing scheme is https.
    Auto,
    /// `true`.
    Always,
    /// `false`.
    Never,
}

/// `backends.*.limits`: per-server admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `max_connections_per_server`: concurrent requests per server; 0 = unlimited.
    pub max_per_server: u32,
    /// `queue_size`: requests that may wait for a free slot (per backend); 0 = none wait.
    pub queue_size: u32,
    /// `queue_timeout`: longest wait in the queue before `503`.
    pub queue_timeout: Duration,
}

/// `health_check.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    /// An HTTP request; the status (and optionally the body) decides.
    Http,
    /// A TCP connect.
    Tcp,
}

/// `[backends.NAME.health_check]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// `type` (default `http`).
    pub kind: CheckKind,
    /// `path` (default `/healthz`).
    pub path: String,
    /// `expect_status` (default `200-399`), inclusive.
    pub expect_status: (u16, u16),
    /// `expect_body`: a substring the body must contain.
    pub expect_body: Option<String>,
    /// `host`: the Host header (default: the server's address).
    pub host: Option<String>,
    /// `interval` (default 2 s), jittered by up to 10%.
    pub interval: Duration,
    /// `timeout` (default 1 s).
    pub timeout: Duration,
    /// `rise` (default 2).
    pub rise: u32,
    /// `fall` (default 3).
    pub fall: u32,
}

/// `on_all_down`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnAllDown {
    /// `"503"` (default): answer 503.
    Unavailable,
    /// `"fail_open"`: try the servers anyway.
    FailOpen,
}

/// `retry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// `attempts`: total attempts for an idempotent request (default 2, 1 = no retry).
    pub attempts: u32,
    /// `budget_percent`: retries allowed as a share of requests (default 20).
    pub budget_percent: u32,
}

/// `outlier`: passive ejection of failing servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outlier {
    /// `consecutive_failures` (default 5).
    pub consecutive_failures: u32,
    /// `base_ejection` (default 10 s), doubled on each repeat ejection.
    pub base_ejection: Duration,
    /// `max_ejection` (default 300 s).
    pub max_ejection: Duration,
    /// `max_ejected_percent` (default 50).
    pub max_ejected_percent: u32,
}

/// `limits.queue_timeout`.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
/// `health_check.interval`.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// `health_check.timeout`.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// `health_check.rise`: passes in a row that bring a server up.
pub const DEFAULT_CHECK_RISE: u32 = 2;
/// `health_check.fall`: failures in a row that take a server down.
pub const DEFAULT_CHECK_FALL: u32 = 3;
/// `retry.attempts`: attempts in all, the first included.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 2;
/// `retry.budget_percent`.
pub const DEFAULT_RETRY_BUDGET_PERCENT: u32 = 20;
/// `outlier.consecutive_failures`.
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
/// `outlier.base_ejection`.
pub const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(10);
/// `outlier.max_ejection`.
pub const DEFAULT_MAX_EJECTION: Duration = Duration::from_secs(300);
/// `outlier.max_ejected_percent`.
pub const DEFAULT_MAX_EJECTED_PERCENT: u32 = 50;
/// `stick_table.redis_timeout`.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(10);
/// `stick_table.redis_prefix`.
pub const DEFAULT_REDIS_PREFIX: &str = "tether";

/// `sticky.on_server_full`: the pinned server is at its connection limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnServerFull {
    /// Wait for a slot on the pinned server (default).
    Queue,
    /// Serve this request elsewhere and keep the pin.
    Spill,
    /// Re-pin to another server.
    Redispatch,
}

/// `sticky.on_server_down`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnServerDown {
    /// Re-pin to another server (default).
    Redispatch,
    /// Answer 503: for applications that must not silently lose session state.
    Fail,
}

/// `sticky.mode`: where a client's affinity key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StickyMode {
    /// A Tether-issued signed cookie (no server-side state).
    Cookie,
    /// The client's IP address, grouped by prefix length (IPv4, IPv6).
    ClientIp {
        /// `client_ip_prefix_v4` (default 32: one address).
        v4: u8,
        /// `client_ip_prefix_v6` (default 128: one address).
        v6: u8,
    },
    /// A request header's value (`sticky.header`).
    Header(http::HeaderName),
    /// The application's own session cookie, learned from the server's `Set-Cookie`.
    AppCookie(String),
}

impl StickyMode {
    /// The configuration name.
    pub fn as_str(&self) -> &'static str {
        match self {
            StickyMode::Cookie => "cookie",
            StickyMode::ClientIp { .. } => "client_ip",
            StickyMode::Header(_) => "header",
            StickyMode::AppCookie(_) => "app_cookie",
        }
    }

    /// Whether affinity lives in the stick table (every mode but `cookie`).
    pub fn uses_table(&self) -> bool {
        !matches!(self, StickyMode::Cookie)
    }
}

/// A backend's affinity settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Sticky {
    /// `mode` (default `cookie`).
    pub mode: StickyMode,
    /// `cookie_name`.
    pub cookie_name: String,
    /// `idle_timeout` and `max_lifetime`.
    pub expiry: Expiry,
    /// `same_site`.
    pub same_site: SameSite,
    /// `secure`.
    pub secure: Secure,
    /// `http_only` (default true).
    pub http_only: bool,
    /// `domain` (default: none, host-only cookie).
    pub domain: Option<String>,
    /// `path` (default `/`).
    pub path: String,
    /// `on_server_down`.
    pub on_server_down: OnServerDown,
    /// `on_server_full`.
    pub on_server_full: OnServerFull,
    /// `max_age`: `Max-Age` of the cookie; `None` makes it a browser-session cookie.
    pub max_age: Option<Duration>,
    /// `rebound_header`: the request header that tells a server it received a session
    /// re-pinned from another (off by default).
    pub rebound_header: Option<http::HeaderName>,
    /// `max_in_flight_per_session`: one session's concurrent requests (0: unlimited).
    pub max_in_flight_per_session: u32,
    /// `first_pick_window`: cookieless requests of one client within this long of its first
    /// share that first pick (cookie mode; zero: off).
    pub first_pick_window: Duration,
    /// `first_pick_across_connections`: one address and `User-Agent` is one client.
    pub first_pick_across_connections: bool,
}

/// Default `sticky.first_pick_window`.
pub const DEFAULT_FIRST_PICK_WINDOW: Duration = Duration::from_secs(2);
/// Longest `sticky.first_pick_window`: it covers one page load's parallel requests.
pub const MAX_FIRST_PICK_WINDOW: Duration = Duration::from_secs(60);

/// One `[[backends.NAME.servers]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Stable identity: cookies and tables refer to it, never to the address.
    pub name: String,
    /// `host:port` to connect to.
    pub address: http::uri::Authority,
    /// `weight`, 1..=256 (default 1).
    pub weight: u32,
    /// `backup`: used only when no primary server is usable.
    pub backup: bool,
    /// `state`: `ready` (default), `drain` (keeps pinned sessions, takes no new ones) or
    /// `maint` (takes nothing). Applied when it changes in the file.
    pub state: tether_core::AdminState,
    /// Where the server comes from: the file (or the admin API), or DNS discovery.
    pub source: ServerSource,
}

/// Where a server of a backend comes from (the admin API's `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerSource {
    /// `[[backends.NAME.servers]]`, or added through the admin API.
    Config,
    /// Found by `[backends.NAME.discovery]`.
    Dns,
}

impl ServerSource {
    /// The admin API's name: `config` or `dns`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerSource::Config => "config",
            ServerSource::Dns => "dns",
        }
    }
}

/// `[backends.NAME.discovery]`: servers found in DNS and re-resolved periodically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// `dns` or `srv`: what is looked up.
    pub lookup: DiscoveryLookup,
    /// `interval` (default 5 s): time between resolutions, shorter when the records' TTL is.
    pub interval: Duration,
    /// `nameservers`: the DNS servers asked; empty means the system's resolver configuration
    /// (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    /// `on_removed` (default `drain`): what happens to a server that leaves DNS.
    pub on_removed: OnRemoved,
}

/// `discovery.dns` or `discovery.srv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryLookup {
    /// `dns = "HOST:PORT"`: each A and AAAA record of `host` is a server at `port`.
    Dns {
        /// The name looked up.
        host: String,
        /// The servers' port.
        port: u16,
    },
    /// `srv = "_service._proto.NAME"`: each SRV record of the lowest priority is a server at
    /// its target and port, weighted by its weight.
    Srv(String),
}

/// `discovery.on_removed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRemoved {
    /// `drain` (default): the server keeps its pinned sessions and takes no new ones; it goes
    /// when it holds no session, at the latest after the backend's `sticky.max_lifetime`.
    Drain,
    /// `remove`: the server goes with the next snapshot.
    Remove,
}

/// `discovery.interval`.
pub const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(5);
/// The shortest `discovery.interval`: more often would only load the DNS servers.
pub const MIN_DISCOVERY_INTERVAL: Duration = Duration::from_millis(100);

/// One configuration mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path, e.g. `backends.app.sticky.mode`.
    pub path: String,
    /// 1-based line in the file, where known.
    pub line: Option<usize>,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{} (line {line}): {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// Every mistake found in one file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(f, "{n} configuration error{}:", if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    fn one(path: impl Into<String>, line: Option<usize>, message: impl Into<String>) -> Self {
        Self(vec![ConfigError { path: path.into(), line, message: message.into() }])
    }
}

impl Config {
    /// Logs a warning for every listener certificate within
    /// [`crate::tls::EXPIRY_WARNING_DAYS`] of expiry (at start and on reload).
    pub fn warn_expiring_certs(&self) {
        for l in &self.listeners {
            for c in l.tls.iter().flat_map(|t| &t.certs) {
                let days = c.days_left();
                if days < crate::tls::EXPIRY_WARNING_DAYS {
                    tracing::warn!(
                        listener = %l.name,
                        cert = %c.files.cert.display(),
                        expires = %c.expires_rfc3339(),
                        days_left = days,
                        "TLS certificate expires soon"
                    );
                }
            }
        }
    }

    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors::one(path.display().to_string(), None, format!("cannot read: {e}"))
        })?;
        Self::parse(&text)
    }

    /// Validates configuration text; `TETHER_COOKIE_KEYS` overrides `[secrets].cookie_keys`.
    pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
        let env_keys = std::env::var("TETHER_COOKIE_KEYS").ok().filter(|s| !s.trim().is_empty());
        Self::parse_with_env_keys(text, env_keys.as_deref())
    }

    /// Like [`Config::parse`] with the environment's cookie keys passed in (for tests).
    pub fn parse_with_env_keys(text: &str, env_keys: Option<&str>) -> Result<Config, ConfigErrors> {
        let de = toml::Deserializer::new(text);
        let raw: raw::RawConfig =
            serde_path_to_error::deserialize(de).map_err(|e| raw::structural(text, e, ""))?;
        validate::validate(raw, text, env_keys)
    }

    /// The backend named `name`.
    pub fn backend(&self, name: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.name == name)
    }
}

/// Validates one server entry given as a TOML table (the admin API's `POST .../servers`),
/// with the same rules and messages as in a file.
pub fn parse_server(entry: &toml::Table) -> Result<Server, ConfigErrors> {
    let text =
        toml::to_string(entry).map_err(|e| ConfigErrors::one("server", None, e.to_string()))?;
    let de = toml::Deserializer::new(&text);
    let raw: raw::RawServer =
        serde_path_to_error::deserialize(de).map_err(|e| raw::structural(&text, e, "server"))?;
    validate::server_entry(&raw, &text)
}

/// 1-based line number of byte offset `pos` in `text`.
fn line_of(text: &str, pos: usize) -> usize {
    text.as_bytes()[..pos.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests;
