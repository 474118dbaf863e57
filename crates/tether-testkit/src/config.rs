//! Tether configuration files built in code: a typed builder for what the tests configure,
//! serialised by the `toml` crate, so a test states its set-up instead of splicing TOML text
//! (and cannot get a quote, an escape or the order of tables wrong).
//!
//! ```
//! use tether_testkit::config::{Backend, Config, Listener, ServerEntry, Sticky};
//!
//! let config = Config::new()
//!     .listener(Listener::new("web").default_backend("app").set("timeouts.header", "2s"))
//!     .backend(
//!         "app",
//!         Backend::new()
//!             .server(ServerEntry::new("s0", "127.0.0.1:8080").weight(2))
//!             .sticky(Sticky::header("X-Session-Id")),
//!     )
//!     .admin();
//! let toml = config.to_string(); // what `Tether::start` writes to the file
//! assert!(toml.contains("[[backends.app.servers]]"));
//! ```
//!
//! Typed methods cover the keys the tests use often. Every item also has `set(path, value)`
//! for any other key: a dotted path below the item (`"timeouts.header"`, `"limits.queue_size"`)
//! and any TOML value (`"2s"`, `5`, `true`, another item). Nothing is validated here: a test
//! may build a file Tether refuses, on purpose. Text that is not TOML at all (a syntax error,
//! an integer past 64 bits) stays a literal string in the test that needs it.

use std::fmt;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use crate::servers::EchoServer;

/// A whole configuration file; its [`Display`](fmt::Display) is the TOML text.
#[derive(Debug, Clone, Default)]
pub struct Config(Table);

/// A `[[listeners]]` entry.
#[derive(Debug, Clone)]
pub struct Listener(Table);

/// A `[[routes]]` entry.
#[derive(Debug, Clone, Default)]
pub struct Route(Table);

/// A `[backends.NAME]` table; its name is given to [`Config::backend`].
#[derive(Debug, Clone, Default)]
pub struct Backend(Table);

/// A `[[backends.NAME.servers]]` entry.
#[derive(Debug, Clone)]
pub struct ServerEntry(Table);

/// A `[backends.NAME.sticky]` table.
#[derive(Debug, Clone)]
pub struct Sticky(Table);

/// A `[backends.NAME.health_check]` table.
#[derive(Debug, Clone)]
pub struct HealthCheck(Table);

/// A listener's `tls` table; [`Tls::default`] is an empty one (no certificate, which Tether
/// refuses).
#[derive(Debug, Clone, Default)]
pub struct Tls(Table);

/// `set`, and the conversion into a TOML value that lets one item be set inside another.
macro_rules! items {
    ($($item:ident),*) => {$(
        impl $item {
            /// Sets the key at `path` (dotted, below this item) to `value`, replacing whatever
            /// was there: for any key without a method of its own.
            pub fn set(mut self, path: &str, value: impl Into<Value>) -> Self {
                let keys: Vec<&str> = path.split('.').collect();
                insert(&mut self.0, &keys, value.into());
                self
            }
        }

        impl From<$item> for Value {
            fn from(item: $item) -> Self {
                Value::Table(item.0)
            }
        }
    )*};
}

items!(Config, Listener, Route, Backend, ServerEntry, Sticky, HealthCheck, Tls);

// === impl Config ===

impl Config {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `listener` to `[[listeners]]`.
    pub fn listener(mut self, listener: Listener) -> Self {
        push(&mut self.0, "listeners", listener.into());
        self
    }

    /// Appends `route` to `[[routes]]`.
    pub fn route(mut self, route: Route) -> Self {
        push(&mut self.0, "routes", route.into());
        self
    }

    /// Sets `[backends.NAME]` to `backend` (a name may hold dots).
    pub fn backend(mut self, name: &str, backend: Backend) -> Self {
        insert(&mut self.0, &["backends", name], backend.into());
        self
    }

    /// An `[admin]` listener on a free loopback port (logged as listener `admin`).
    pub fn admin(self) -> Self {
        self.set("admin.address", "127.0.0.1:0")
    }

    /// [`Config::admin`] whose writes need the bearer token in the file at `path`.
    pub fn admin_token_file(self, path: &Path) -> Self {
        self.admin().set("admin.token_file", text(path))
    }

    /// `[secrets] cookie_keys`: the first signs, all verify.
    pub fn cookie_keys(self, keys: &[&str]) -> Self {
        self.set("secrets.cookie_keys", keys.to_vec())
    }

    /// `[stick_table]` in the Redis at `url` (`store = "redis"`).
    pub fn redis_stick_table(self, url: &str) -> Self {
        self.set("stick_table.store", "redis").set("stick_table.redis_url", url)
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Fails only for values TOML cannot hold, and a `Table` holds none.
        let text = toml::to_string(&self.0).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

// === impl Listener ===

impl Listener {
    /// Listener `name` on a free loopback port (`127.0.0.1:0`).
    pub fn new(name: &str) -> Self {
        Self(Table::new()).set("name", name).set("address", "127.0.0.1:0")
    }

    /// Binds `address` instead, e.g. `[::1]:0`.
    pub fn address(self, address: impl fmt::Display) -> Self {
        self.set("address", address.to_string())
    }

    /// The backend for requests no route matches.
    pub fn default_backend(self, backend: &str) -> Self {
        self.set("default_backend", backend)
    }

    /// Peers whose forwarding headers (and PROXY headers) are believed.
    pub fn trusted_proxies(self, cidrs: &[&str]) -> Self {
        self.set("trusted_proxies", cidrs.to_vec())
    }

    /// Terminates TLS.
    pub fn tls(self, tls: Tls) -> Self {
        self.set("tls", tls)
    }
}

// === impl Route ===

impl Route {
    /// A route to `backend` that matches every request until narrowed.
    pub fn to(backend: &str) -> Self {
        Self(Table::new()).set("backend", backend)
    }

    /// Matches the `Host` `host` (`"*.example.com"` for any subdomain).
    pub fn host(self, host: &str) -> Self {
        self.set("host", host)
    }

    /// Matches paths starting with `prefix`.
    pub fn path_prefix(self, prefix: &str) -> Self {
        self.set("path_prefix", prefix)
    }
}

// === impl Backend ===

impl Backend {
    /// A backend without servers or settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `server` to its `servers`.
    pub fn server(mut self, server: impl Into<ServerEntry>) -> Self {
        push(&mut self.0, "servers", server.into().into());
        self
    }

    /// Appends each of `servers`, in order.
    pub fn servers<S: Into<ServerEntry>>(self, servers: impl IntoIterator<Item = S>) -> Self {
        servers.into_iter().fold(self, Self::server)
    }

    /// The balancing algorithm, e.g. `"least_conn"`.
    pub fn balance(self, algorithm: &str) -> Self {
        self.set("balance", algorithm)
    }

    /// Session affinity.
    pub fn sticky(self, sticky: Sticky) -> Self {
        self.set("sticky", sticky)
    }

    /// Active health checks.
    pub fn health_check(self, check: HealthCheck) -> Self {
        self.set("health_check", check)
    }

    /// Connects to the servers over TLS, trusting the CA in the PEM file `ca_file`.
    pub fn tls_ca_file(self, ca_file: &Path) -> Self {
        self.set("tls.ca_file", text(ca_file))
    }
}

// === impl ServerEntry ===

impl ServerEntry {
    /// Server `name` at `address` (`IP:PORT` or `HOST:PORT`).
    pub fn new(name: &str, address: impl fmt::Display) -> Self {
        Self(Table::new()).set("name", name).set("address", address.to_string())
    }

    /// Its share of new sessions (1 to 256).
    pub fn weight(self, weight: u32) -> Self {
        self.set("weight", weight)
    }

    /// Takes traffic only when no primary server can.
    pub fn backup(self) -> Self {
        self.set("backup", true)
    }

    /// `"ready"`, `"drain"` or `"maint"`.
    pub fn state(self, state: &str) -> Self {
        self.set("state", state)
    }
}

impl From<&EchoServer> for ServerEntry {
    /// The echo server by its name and address.
    fn from(server: &EchoServer) -> Self {
        Self::new(server.name(), server.addr())
    }
}

// === impl Sticky ===

impl Sticky {
    /// Affinity by a signed cookie of Tether's.
    pub fn cookie() -> Self {
        Self::mode("cookie")
    }

    /// Affinity by the value of request header `name`, kept in the stick table.
    pub fn header(name: &str) -> Self {
        Self::mode("header").set("header", name)
    }

    /// Affinity by the client's address, kept in the stick table.
    pub fn client_ip() -> Self {
        Self::mode("client_ip")
    }

    /// Affinity by the application's session cookie `name`, learnt from its `Set-Cookie`.
    pub fn app_cookie(name: &str) -> Self {
        Self::mode("app_cookie").set("app_cookie", name)
    }

    fn mode(mode: &str) -> Self {
        Self(Table::new()).set("mode", mode)
    }
}

// === impl HealthCheck ===

impl HealthCheck {
    /// A `GET path` whose status decides.
    pub fn http(path: &str) -> Self {
        Self(Table::new()).set("type", "http").set("path", path)
    }

    /// A connect that succeeds is enough.
    pub fn tcp() -> Self {
        Self(Table::new()).set("type", "tcp")
    }

    /// Time between checks, e.g. `"100ms"`.
    pub fn interval(self, interval: &str) -> Self {
        self.set("interval", interval)
    }

    /// Time allowed for one check.
    pub fn timeout(self, timeout: &str) -> Self {
        self.set("timeout", timeout)
    }

    /// Passing checks in a row that bring a server up.
    pub fn rise(self, checks: u32) -> Self {
        self.set("rise", checks)
    }

    /// Failing checks in a row that take a server down.
    pub fn fall(self, checks: u32) -> Self {
        self.set("fall", checks)
    }
}

// === impl Tls ===

impl Tls {
    /// One certificate chain and its key (PEM files).
    pub fn new(cert: &Path, key: &Path) -> Self {
        Self(Table::new()).set("cert", text(cert)).set("key", text(key))
    }

    /// Several certificates, chosen by the client's SNI name; the first is the default.
    pub fn certificates(pairs: &[(PathBuf, PathBuf)]) -> Self {
        let list: Vec<Value> = pairs
            .iter()
            .map(|(cert, key)| {
                let pair = Table::from_iter([
                    ("cert".to_owned(), text(cert).into()),
                    ("key".to_owned(), text(key).into()),
                ]);
                Value::Table(pair)
            })
            .collect();
        Self(Table::new()).set("certificates", list)
    }

    /// Asks clients for a certificate signed by a CA in the PEM file `ca_file`.
    pub fn client_ca(self, ca_file: &Path) -> Self {
        self.set("client_ca", text(ca_file))
    }

    /// Refuses client certificates revoked by the CRLs in the PEM file `crl_file`.
    pub fn client_crl(self, crl_file: &Path) -> Self {
        self.set("client_crl", text(crl_file))
    }
}

/// A path as the string a config file holds.
fn text(path: &Path) -> String {
    path.display().to_string()
}

/// Sets `keys` (a path of nested tables, made where missing) to `value` in `table`. A value
/// other than a table in the way is replaced by one.
fn insert(table: &mut Table, keys: &[&str], value: Value) {
    match keys {
        [] => {}
        [key] => {
            table.insert((*key).to_owned(), value);
        }
        [key, rest @ ..] => {
            let mut inner = match table.remove(*key) {
                Some(Value::Table(inner)) => inner,
                _ => Table::new(),
            };
            insert(&mut inner, rest, value);
            table.insert((*key).to_owned(), Value::Table(inner));
        }
    }
}

/// Appends `value` to the array `key` of `table` (an array of tables in the file), made when
/// missing.
fn push(table: &mut Table, key: &str, value: Value) {
    let mut array = match table.remove(key) {
        Some(Value::Array(array)) => array,
        _ => Vec::new(),
    };
    array.push(value);
    table.insert(key.to_owned(), Value::Array(array));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file parsed back, to compare values rather than formatting.
    fn parsed(config: &Config) -> Table {
        toml::from_str(&config.to_string()).unwrap()
    }

    #[test]
    fn a_typical_file_reads_back_as_the_tables_tether_expects() {
        let config = Config::new()
            .set("grace_period", "5s")
            .listener(Listener::new("web").default_backend("app").set("timeouts.header", "1s"))
            .backend(
                "app",
                Backend::new()
                    .server(ServerEntry::new("s0", "127.0.0.1:1").weight(3))
                    .server(ServerEntry::new("s1", "127.0.0.1:2").backup())
                    .sticky(Sticky::header("X-Session-Id").set("idle_timeout", "10m"))
                    .set("limits.queue_size", 5),
            )
            .cookie_keys(&["k1", "k2"])
            .admin();
        let expected: Table = toml::from_str(
            r#"
            grace_period = "5s"
            [[listeners]]
            name = "web"
            address = "127.0.0.1:0"
            default_backend = "app"
            timeouts = { header = "1s" }
            [backends.app]
            limits = { queue_size = 5 }
            sticky = { mode = "header", header = "X-Session-Id", idle_timeout = "10m" }
            [[backends.app.servers]]
            name = "s0"
            address = "127.0.0.1:1"
            weight = 3
            [[backends.app.servers]]
            name = "s1"
            address = "127.0.0.1:2"
            backup = true
            [secrets]
            cookie_keys = ["k1", "k2"]
            [admin]
            address = "127.0.0.1:0"
            "#,
        )
        .unwrap();
        assert_eq!(parsed(&config), expected, "{config}");
    }

    #[test]
    fn set_replaces_values_and_makes_tables_on_the_way() {
        let backend = Backend::new().set("tls", true).set("tls.ca_file", "ca.pem").set("retry", 1);
        let config = Config::new().backend("a.b", backend.set("retry.attempts", 3));
        let table = parsed(&config);
        let backend = &table["backends"]["a.b"];
        assert_eq!(backend["tls"]["ca_file"].as_str(), Some("ca.pem"), "{config}");
        assert_eq!(backend["retry"]["attempts"].as_integer(), Some(3), "{config}");
    }

    #[test]
    fn tls_certificates_and_routes_are_arrays_of_tables() {
        let pairs = [("a.crt".into(), "a.key".into()), ("b.crt".into(), "b.key".into())];
        let config = Config::new()
            .listener(Listener::new("web").tls(Tls::certificates(&pairs).set("min_version", "1.3")))
            .route(Route::to("api").host("api.example.com").path_prefix("/v1/"))
            .route(Route::to("wild").host("*.example.com"));
        let table = parsed(&config);
        let tls = &table["listeners"][0]["tls"];
        assert_eq!(tls["certificates"][1]["key"].as_str(), Some("b.key"), "{config}");
        assert_eq!(tls["min_version"].as_str(), Some("1.3"));
        let routes = table["routes"].as_array().unwrap();
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0]["path_prefix"].as_str(), Some("/v1/"));
        assert_eq!(routes[1]["backend"].as_str(), Some("wild"));
    }
}
