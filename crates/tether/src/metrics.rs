//! Prometheus metrics (their names and labels: docs/operations.md): handles resolved off the
//! hot path.
//!
//! Families live in one [`Metrics`] for the process. The data path never looks a label set up:
//! each snapshot resolves the handles it needs once ([`ServerMetrics`], [`BackendMetrics`])
//! and a request increments plain atomics. Gauges that mirror live state (server up,
//! in-flight, sessions bound, table entries) are filled at scrape time from that state.
//! Series of listeners, servers and backends that leave the configuration are removed on
//! reload.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use tether_core::affinity::Outcome;

/// `code_class` label values, by status / 100.
pub const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// `kind` label values of `tether_upstream_errors_total`.
pub const ERROR_KINDS: [&str; 3] = ["connect", "timeout", "protocol"];
/// `outcome` label values of `tether_affinity_total`.
pub const OUTCOMES: [Outcome; 6] = [
    Outcome::Hit,
    Outcome::New,
    Outcome::Expired,
    Outcome::Invalid,
    Outcome::Rebound,
    Outcome::Spilled,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    listener: String,
    backend: String,
    server: String,
    code_class: &'static str,
}

/// `reason` label values of `tether_connections_refused_total`.
pub const CONN_REFUSALS: [&str; 7] = [
    "max_connections",
    "max_connections_per_ip",
    "untrusted_proxy",
    "proxy_header",
    "tls_handshake",
    "h2_resets",
    "client_hello",
];
/// `reason` label values of `tether_requests_refused_total`.
pub const REQUEST_REFUSALS: [&str; 5] =
    ["framing", "body_too_large", "rate_limit", "method", "session_concurrency"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerReason {
    listener: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertLabels {
    listener: String,
    cert: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerBackend {
    listener: String,
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ServerLabels {
    pub(crate) backend: String,
    pub(crate) server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    backend: String,
    server: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    backend: String,
    server: String,
    direction: &'static str,
}

/// `direction` label values of `tether_tcp_bytes_total`: from the client, to the client.
pub const DIRECTIONS: [&str; 2] = ["in", "out"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    backend: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BackendLabels {
    pub(crate) backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 0.5 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric family of the process.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily<ListenerBackend>,
    upstream_errors: Family<ErrorLabels, Counter>,
    affinity: Family<OutcomeLabels, Counter>,
    retries: Family<BackendLabels, Counter>,
    reloads: Family<ResultLabels, Counter>,
    pub(crate) server_up: Family<ServerLabels, Gauge>,
    pub(crate) in_flight: Family<ServerLabels, Gauge>,
    pub(crate) sessions_bound: Family<ServerLabels, Gauge>,
    server_sessions: Family<ServerLabels, Gauge>,
    pub(crate) table_entries: Family<BackendLabels, Gauge>,
    ejections: Family<ServerLabels, Counter>,
    queue_depth: Family<BackendLabels, Gauge>,
    conns_refused: Family<ListenerReason, Counter>,
    requests_refused: Family<ListenerReason, Counter>,
    cert_expiry: Family<CertLabels, Gauge>,
    discovery_errors: Family<BackendLabels, Counter>,
    tcp_connections: Family<ServerLabels, Counter>,
    tcp_bytes: Family<DirectionLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tether");
        let r = &mut registry;
        // A struct's fields are evaluated in the order written: this order is the registration
        // order, which is the order of the exposition.
        Self {
            cert_expiry: family(r, CERT_EXPIRY),
            conns_refused: family(r, CONNS_REFUSED),
            requests_refused: family(r, REQUESTS_REFUSED),
            requests: family(r, REQUESTS),
            duration: register(r, DURATION, Family::new_with_constructor(duration_histogram)),
            upstream_errors: family(r, UPSTREAM_ERRORS),
            affinity: family(r, AFFINITY),
            retries: family(r, RETRIES),
            reloads: family(r, RELOADS),
            server_up: family(r, SERVER_UP),
            in_flight: family(r, IN_FLIGHT),
            sessions_bound: family(r, SESSIONS_BOUND),
            server_sessions: family(r, SERVER_SESSIONS),
            table_entries: family(r, TABLE_ENTRIES),
            ejections: family(r, EJECTIONS),
            queue_depth: family(r, QUEUE_DEPTH),
            discovery_errors: family(r, DISCOVERY_ERRORS),
            tcp_connections: family(r, TCP_CONNECTIONS),
            tcp_bytes: family(r, TCP_BYTES),
            registry,
        }
    }
}

/// Registers `metric` under `doc` and hands it back, so that each family is declared once.
fn register<M: Metric + Clone>(registry: &mut Registry, doc: Doc, metric: M) -> M {
    registry.register(doc.name, doc.help, metric.clone());
    metric
}

/// Registers an empty family under `doc`.
fn family<M: Metric + Clone + Default>(registry: &mut Registry, doc: Doc) -> M {
    register(registry, doc, M::default())
}

/// A family's name (after the `tether_` prefix; counters gain `_total`) and help text.
struct Doc {
    name: &'static str,
    help: &'static str,
}

// === Listeners: what Tether refused or answered itself ===

const CERT_EXPIRY: Doc = Doc {
    name: "tls_certificate_expiry_timestamp_seconds",
    help: "When each listener certificate expires (notAfter, Unix seconds); alert on time() \
           approaching it",
};
const CONNS_REFUSED: Doc = Doc {
    name: "connections_refused",
    help: "Client connections closed before HTTP or a TCP relay: connection limits, PROXY \
           header, TLS handshake, TLS ClientHello (SNI routes)",
};
const REQUESTS_REFUSED: Doc = Doc {
    name: "requests_refused",
    help: "Requests Tether answered itself: framing violations (400/501), body over the limit \
           (413), rate limits (429)",
};

// === Traffic: requests, their timing and what happened upstream ===

const REQUESTS: Doc =
    Doc { name: "requests", help: "Requests answered, by server and status class" };
const DURATION: Doc = Doc {
    name: "request_duration_seconds",
    help: "Time from the request's arrival to its response head",
};
const UPSTREAM_ERRORS: Doc =
    Doc { name: "upstream_errors", help: "Failed attempts to a server, by kind" };
const AFFINITY: Doc =
    Doc { name: "affinity", help: "Affinity outcome of requests to sticky backends" };
const RETRIES: Doc =
    Doc { name: "retries", help: "Requests retried on another server after a connect failure" };
const RELOADS: Doc = Doc { name: "config_reloads", help: "Configuration reloads, by result" };

// === Servers and backends: live state, filled at scrape time, and ejections ===

const SERVER_UP: Doc = Doc {
    name: "server_up",
    help: "1 when the server may receive traffic (not down, not in maintenance)",
};
const IN_FLIGHT: Doc = Doc { name: "server_in_flight", help: "Requests in flight on the server" };
const SESSIONS_BOUND: Doc =
    Doc { name: "sessions_bound", help: "Sticky sessions bound to the server (table modes)" };
const SERVER_SESSIONS: Doc = Doc {
    name: "server_sessions",
    help: "Live sticky sessions of the server, in every mode: counted in table modes, \
           estimated in cookie mode (distinct session ids seen within idle_timeout, about 2% error)",
};
const TABLE_ENTRIES: Doc =
    Doc { name: "stick_table_entries", help: "Entries in the backend's stick table" };
const EJECTIONS: Doc =
    Doc { name: "ejections", help: "Times passive outlier detection ejected the server" };
const QUEUE_DEPTH: Doc =
    Doc { name: "queue_depth", help: "Requests waiting for a connection slot in the backend" };

// === Discovery ===

const DISCOVERY_ERRORS: Doc = Doc {
    name: "discovery_errors",
    help: "DNS discovery resolutions that failed or found no record (the backend kept its \
           last known servers)",
};

// === TCP listeners ===

const TCP_CONNECTIONS: Doc = Doc {
    name: "tcp_connections",
    help: "Connections of TCP listeners relayed to the server (connected; open ones are in \
           tether_server_in_flight)",
};
const TCP_BYTES: Doc = Doc {
    name: "tcp_bytes",
    help: "Bytes relayed by TCP listeners through the server's connections: in = from the \
           clients, out = to the clients",
};

/// A server's counters, resolved once per snapshot.
#[derive(Debug, Clone, Default)]
pub struct ServerMetrics {
    /// Per listener index, per code class.
    requests: Vec<[Counter; 5]>,
    /// Per [`ERROR_KINDS`].
    errors: [Counter; 3],
    ejections: Counter,
    /// Servers of backends that TCP listeners use.
    pub tcp: Option<TcpMetrics>,
}

/// A server's TCP relay counters (each a shared atomic, counted as bytes move).
#[derive(Debug, Clone, Default)]
pub struct TcpMetrics {
    /// `tether_tcp_connections_total`.
    pub connections: Counter,
    /// `tether_tcp_bytes_total{direction="in"}`: from the clients.
    pub bytes_in: Counter,
    /// `tether_tcp_bytes_total{direction="out"}`: to the clients.
    pub bytes_out: Counter,
}

impl ServerMetrics {
    /// Counts one response with `status` on listener `listener`.
    pub fn request(&self, listener: usize, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        if let Some(c) = self.requests.get(listener) {
            c[class].inc();
        }
    }

    /// Counts one ejection by passive detection.
    pub fn ejection(&self) {
        self.ejections.inc();
    }

    /// Counts one failed attempt of kind `kind` (index into [`ERROR_KINDS`]).
    pub fn error(&self, kind: usize) {
        if let Some(c) = self.errors.get(kind) {
            c.inc();
        }
    }
}

/// A backend's handles, resolved once per snapshot.
#[derive(Debug, Clone, Default)]
pub struct BackendMetrics {
    /// Per listener index.
    duration: Vec<Histogram>,
    /// Per [`OUTCOMES`].
    affinity: Vec<Counter>,
    retries: Counter,
}

impl BackendMetrics {
    /// Records the time to response head on listener `listener`.
    pub fn duration(&self, listener: usize, seconds: f64) {
        if let Some(h) = self.duration.get(listener) {
            h.observe(seconds);
        }
    }

    /// Counts an affinity outcome.
    pub fn affinity(&self, outcome: Outcome) {
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
            self.affinity[i].inc();
        }
    }

    /// Counts one retry.
    pub fn retry(&self) {
        self.retries.inc();
    }
}

/// A listener's refusal counters, resolved once per snapshot.
#[derive(Debug, Clone, Default)]
pub struct ListenerMetrics {
    /// Per [`CONN_REFUSALS`].
    conns: Vec<Counter>,
    /// Per [`REQUEST_REFUSALS`].
    requests: Vec<Counter>,
}

/// Why a connection was closed before HTTP (index into [`CONN_REFUSALS`]).
#[derive(Debug, Clone, Copy)]
pub enum ConnRefusal {
    /// `max_connections`.
    MaxConnections = 0,
    /// `max_connections_per_ip`.
    MaxPerIp = 1,
    /// A PROXY header expected from an address not in `trusted_proxies`.
    UntrustedProxy = 2,
    /// A missing, slow or malformed PROXY header.
    ProxyHeader = 3,
    /// A failed or timed-out TLS handshake.
    TlsHandshake = 4,
    /// An HTTP/2 client that cancelled most of its streams before their answers (closed with
    /// GOAWAY).
    H2Resets = 5,
    /// TCP listeners with SNI routes: a ClientHello that is malformed, too large, slow, or
    /// cut short.
    ClientHello = 6,
}

/// Why Tether answered a request itself (index into [`REQUEST_REFUSALS`]).
#[derive(Debug, Clone, Copy)]
pub enum RequestRefusal {
    /// A framing violation.
    Framing = 0,
    /// A body over `max_body_bytes`.
    BodyTooLarge = 1,
    /// Over a `rate_limit`.
    RateLimited = 2,
    /// A method Tether does not forward (`CONNECT`).
    Method = 3,
    /// A session over `sticky.max_in_flight_per_session`.
    SessionConcurrency = 4,
}

impl ListenerMetrics {
    /// Counts a connection closed for `why`.
    pub fn connection_refused(&self, why: ConnRefusal) {
        if let Some(c) = self.conns.get(why as usize) {
            c.inc();
        }
    }

    /// Counts a request refused for `why`.
    pub fn request_refused(&self, why: RequestRefusal) {
        if let Some(c) = self.requests.get(why as usize) {
            c.inc();
        }
    }
}

impl Metrics {
    /// Resolves the refusal counters of listener `listener`.
    pub fn listener(&self, listener: &str) -> ListenerMetrics {
        let get = |family: &Family<ListenerReason, Counter>, reason| {
            family.get_or_create(&ListenerReason { listener: listener.to_owned(), reason }).clone()
        };
        ListenerMetrics {
            conns: CONN_REFUSALS.iter().map(|r| get(&self.conns_refused, r)).collect(),
            requests: REQUEST_REFUSALS.iter().map(|r| get(&self.requests_refused, r)).collect(),
        }
    }

    /// Resolves the handles of server `server` of `backend` for `listeners`, with its TCP
    /// counters when `tcp` (a TCP listener uses the backend).
    pub fn server(
        &self,
        listeners: &[String],
        backend: &str,
        server: &str,
        tcp: bool,
    ) -> ServerMetrics {
        let requests = listeners
            .iter()
            .map(|l| {
                CODE_CLASSES.map(|code_class| {
                    self.requests
                        .get_or_create(&RequestLabels {
                            listener: l.clone(),
                            backend: backend.to_owned(),
                            server: server.to_owned(),
                            code_class,
                        })
                        .clone()
                })
            })
            .collect();
        let errors = ERROR_KINDS.map(|kind| {
            let labels =
                ErrorLabels { backend: backend.to_owned(), server: server.to_owned(), kind };
            self.upstream_errors.get_or_create(&labels).clone()
        });
        let ejections = self
            .ejections
            .get_or_create(&ServerLabels { backend: backend.to_owned(), server: server.to_owned() })
            .clone();
        let tcp = tcp.then(|| self.tcp(backend, server));
        ServerMetrics { requests, errors, ejections, tcp }
    }

    /// Resolves the TCP counters of server `server` of `backend`.
    fn tcp(&self, backend: &str, server: &str) -> TcpMetrics {
        let labels = ServerLabels { backend: backend.to_owned(), server: server.to_owned() };
        let bytes = |direction| {
            let (backend, server) = (backend.to_owned(), server.to_owned());
            self.tcp_bytes.get_or_create(&DirectionLabels { backend, server, direction }).clone()
        };
        TcpMetrics {
            connections: self.tcp_connections.get_or_create(&labels).clone(),
            bytes_in: bytes(DIRECTIONS[0]),
            bytes_out: bytes(DIRECTIONS[1]),
        }
    }

    /// Resolves the handles of `backend` for `listeners`.
    pub fn backend(&self, listeners: &[String], backend: &str, sticky: bool) -> BackendMetrics {
        let duration = listeners
            .iter()
            .map(|l| {
                let labels = ListenerBackend { listener: l.clone(), backend: backend.to_owned() };
                self.duration.get_or_create(&labels).clone()
            })
            .collect();
        let affinity = if sticky {
            OUTCOMES
                .iter()
                .map(|o| {
                    let labels = OutcomeLabels { backend: backend.to_owned(), outcome: o.as_str() };
                    self.affinity.get_or_create(&labels).clone()
                })
                .collect()
        } else {
            Vec::new()
        };
        let retries =
            self.retries.get_or_create(&BackendLabels { backend: backend.to_owned() }).clone();
        BackendMetrics { duration, affinity, retries }
    }

    /// The counter of `backend`'s failed DNS discovery resolutions, resolved once per task.
    pub fn discovery_errors(&self, backend: &str) -> Counter {
        self.discovery_errors.get_or_create(&BackendLabels { backend: backend.to_owned() }).clone()
    }

    /// Counts a reload attempt.
    pub fn reload(&self, ok: bool) {
        self.reloads
            .get_or_create(&ResultLabels { result: if ok { "success" } else { "failure" } })
            .inc();
    }

    /// Drops the series of server `server` of `backend` (it left the configuration).
    pub fn forget_server(&self, listeners: &[String], backend: &str, server: &str) {
        let (backend, server) = (backend.to_owned(), server.to_owned());
        for l in listeners {
            for code_class in CODE_CLASSES {
                self.requests.remove(&RequestLabels {
                    listener: l.clone(),
                    backend: backend.clone(),
                    server: server.clone(),
                    code_class,
                });
            }
        }
        for kind in ERROR_KINDS {
            self.upstream_errors.remove(&ErrorLabels {
                backend: backend.clone(),
                server: server.clone(),
                kind,
            });
        }
        for direction in DIRECTIONS {
            let (backend, server) = (backend.clone(), server.clone());
            self.tcp_bytes.remove(&DirectionLabels { backend, server, direction });
        }
        let labels = ServerLabels { backend, server };
        self.tcp_connections.remove(&labels);
        self.ejections.remove(&labels);
        self.server_up.remove(&labels);
        self.in_flight.remove(&labels);
        self.sessions_bound.remove(&labels);
        self.server_sessions.remove(&labels);
    }

    /// Drops the per-backend series of `backend` (it left the configuration).
    pub fn forget_backend(&self, listeners: &[String], backend: &str) {
        let backend = backend.to_owned();
        for l in listeners {
            self.duration
                .remove(&ListenerBackend { listener: l.clone(), backend: backend.clone() });
        }
        for o in OUTCOMES {
            self.affinity.remove(&OutcomeLabels { backend: backend.clone(), outcome: o.as_str() });
        }
        self.retries.remove(&BackendLabels { backend: backend.clone() });
        self.queue_depth.remove(&BackendLabels { backend: backend.clone() });
        self.discovery_errors.remove(&BackendLabels { backend: backend.clone() });
        self.table_entries.remove(&BackendLabels { backend });
    }

    /// Drops the series labelled with `listener` (a reload removed it): its refusal counters,
    /// and its requests and response times at each of `servers` (backend, server) and
    /// `backends`.
    pub fn forget_listener(&self, listener: &str, backends: &[&str], servers: &[(&str, &str)]) {
        let listener = listener.to_owned();
        for reason in CONN_REFUSALS {
            self.conns_refused.remove(&ListenerReason { listener: listener.clone(), reason });
        }
        for reason in REQUEST_REFUSALS {
            self.requests_refused.remove(&ListenerReason { listener: listener.clone(), reason });
        }
        for &(backend, server) in servers {
            for code_class in CODE_CLASSES {
                self.requests.remove(&RequestLabels {
                    listener: listener.clone(),
                    backend: backend.to_owned(),
                    server: server.to_owned(),
                    code_class,
                });
            }
        }
        for &backend in backends {
            let labels =
                ListenerBackend { listener: listener.clone(), backend: backend.to_owned() };
            self.duration.remove(&labels);
        }
    }

    /// Forgets every certificate-expiry series (they are rebuilt from the configuration at
    /// each scrape: certificates change only on reload).
    pub fn clear_cert_expiry(&self) {
        self.cert_expiry.clear();
    }

    /// Sets `tether_tls_cert_expiry_seconds` of one certificate.
    pub fn set_cert_expiry(&self, listener: &str, cert: &str, not_after: i64) {
        let labels = CertLabels { listener: listener.to_owned(), cert: cert.to_owned() };
        self.cert_expiry.get_or_create(&labels).set(not_after);
    }

    /// Sets the live gauges of one server; `sessions` only for backends with a table.
    pub fn set_server_gauges(&self, backend: &str, server: &str, live: ServerGauges) {
        let labels = ServerLabels { backend: backend.to_owned(), server: server.to_owned() };
        self.server_up.get_or_create(&labels).set(i64::from(live.up));
        self.in_flight.get_or_create(&labels).set(live.in_flight as i64);
        if let Some(n) = live.sessions {
            self.sessions_bound.get_or_create(&labels).set(n as i64);
        }
        if let Some(n) = live.live_sessions {
            self.server_sessions.get_or_create(&labels).set(n as i64);
        }
    }

    /// Sets the live gauges of one backend; `entries` only for backends with a table.
    pub fn set_backend_gauges(&self, backend: &str, queued: u64, entries: Option<u64>) {
        let labels = BackendLabels { backend: backend.to_owned() };
        self.queue_depth.get_or_create(&labels).set(queued as i64);
        if let Some(n) = entries {
            self.table_entries.get_or_create(&labels).set(n as i64);
        }
    }

    /// The text exposition of every metric (live gauges as last set).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// A server's live state for its gauges, read at scrape time.
#[derive(Debug, Clone, Copy)]
pub struct ServerGauges {
    /// Takes requests (`tether_server_up`).
    pub up: bool,
    /// Requests in flight.
    pub in_flight: u64,
    /// Sessions bound to it, for backends with a stick table.
    pub sessions: Option<u64>,
    /// Its live sessions in any sticky mode (`tether_server_sessions`).
    pub live_sessions: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/metrics` lists the families in the order `Metrics::default` registers them.
    #[test]
    fn metrics_expose_families_in_registration_order() {
        let m = Metrics::default();
        let listeners = ["web".to_owned()];
        m.set_cert_expiry("web", "site", 0);
        m.listener("web");
        m.server(&listeners, "app", "a1", true);
        m.backend(&listeners, "app", true);
        m.discovery_errors("app");
        m.reload(true);
        let live =
            ServerGauges { up: true, in_flight: 0, sessions: Some(0), live_sessions: Some(0) };
        m.set_server_gauges("app", "a1", live);
        m.set_backend_gauges("app", 0, Some(0));
        let text = m.encode();
        let families: Vec<&str> =
            text.lines().filter_map(|l| l.strip_prefix("# HELP ")?.split(' ').next()).collect();
        assert_eq!(
            families,
            [
                "tether_tls_certificate_expiry_timestamp_seconds",
                "tether_connections_refused",
                "tether_requests_refused",
                "tether_requests",
                "tether_request_duration_seconds",
                "tether_upstream_errors",
                "tether_affinity",
                "tether_retries",
                "tether_config_reloads",
                "tether_server_up",
                "tether_server_in_flight",
                "tether_sessions_bound",
                "tether_server_sessions",
                "tether_stick_table_entries",
                "tether_ejections",
                "tether_queue_depth",
                "tether_discovery_errors",
                "tether_tcp_connections",
                "tether_tcp_bytes",
            ]
        );
    }

    #[test]
    fn a_removed_listener_loses_its_series_and_the_others_keep_theirs() {
        let m = Metrics::default();
        let listeners = ["web".to_owned(), "api".to_owned()];
        for l in &listeners {
            m.listener(l);
        }
        m.server(&listeners, "app", "a1", false);
        m.backend(&listeners, "app", false);
        m.forget_listener("api", &["app"], &[("app", "a1")]);
        let text = m.encode();
        let series = |listener: &str| {
            let label = format!("listener=\"{listener}\"");
            text.lines().filter(|l| !l.starts_with('#') && l.contains(&label)).count()
        };
        assert_eq!(series("api"), 0, "{text}");
        // 7 + 5 refusal reasons, 5 code classes, 1 histogram (16 buckets, +Inf, sum, count).
        assert_eq!(series("web"), 7 + 5 + 5 + 16 + 3, "{text}");
    }
}
