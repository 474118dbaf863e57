//! Stage two: raw file → [`Config`], collecting every error with its key path and line.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use tether_core::AdminState;
use tether_core::affinity::{CookieKeys, Expiry};
use tether_core::balance::{Algorithm, MAX_WEIGHT};
use toml::Spanned;

use super::raw::{
    RawBackend, RawConfig, RawListener, RawRoute, RawServer, RawStickTable, RawSticky, S,
};
use super::*;

mod edge;

struct Checker<'a> {
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn err<T>(&mut self, path: &str, at: Option<&Spanned<T>>, message: impl Into<String>) {
        let line = at.map(|s| line_of(self.text, s.span().start));
        self.errors.push(ConfigError { path: path.to_owned(), line, message: message.into() });
    }

    fn duration(&mut self, path: &str, v: Option<&S>, default: Duration) -> Duration {
        let Some(s) = v else { return default };
        match humantime::parse_duration(s.get_ref().trim()) {
            Ok(d) if d.is_zero() => {
                self.err(path, Some(s), "must be greater than zero");
                default
            }
            Ok(d) if d > MAX_DURATION => {
                let max = MAX_DURATION.as_secs() / 86_400;
                let msg = format!("{:?} is longer than the maximum of {max}d", s.get_ref());
                self.err(path, Some(s), msg);
                default
            }
            Ok(d) => d,
            Err(e) => {
                let msg = format!(
                    "invalid duration {:?} ({e}); write e.g. \"500ms\", \"30s\", \"12h\"",
                    s.get_ref()
                );
                self.err(path, Some(s), msg);
                default
            }
        }
    }

    fn name(&mut self, path: &str, s: &S) {
        let n = s.get_ref();
        let ok = !n.is_empty()
            && n.len() <= 64
            && n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !ok {
            self.err(
                path,
                Some(s),
                format!("invalid name {n:?}: use 1-64 letters, digits, '_', '-' or '.'"),
            );
        }
    }

    fn choice<T: Copy>(
        &mut self,
        path: &str,
        v: Option<&S>,
        default: T,
        options: &[(&str, T)],
    ) -> T {
        let Some(s) = v else { return default };
        if let Some((_, t)) = options.iter().find(|(n, _)| *n == s.get_ref()) {
            return *t;
        }
        let names: Vec<_> = options.iter().map(|(n, _)| *n).collect();
        self.err(
            path,
            Some(s),
            format!("unknown value {:?}; expected one of: {}", s.get_ref(), names.join(" | ")),
        );
        default
    }
}

pub(super) fn validate(
    raw: RawConfig,
    text: &str,
    env_keys: Option<&str>,
) -> Result<Config, ConfigErrors> {
    let mut c = Checker { text, errors: Vec::new() };
    let grace_period = c.duration("grace_period", raw.grace_period.as_ref(), DEFAULT_GRACE_PERIOD);
    let backends = backends(&mut c, &raw.backends);
    let known: HashSet<&str> = raw.backends.keys().map(String::as_str).collect();
    let listeners = listeners(&mut c, &raw.listeners, &known);
    let routes =
        raw.routes.iter().enumerate().filter_map(|(i, r)| route(&mut c, i, r, &known)).collect();
    let stick_capacity = stick_capacity(&mut c, raw.stick_table.as_ref());
    let redis = redis_store(&mut c, raw.stick_table.as_ref());
    let admin = raw.admin.as_ref().map(|a| admin(&mut c, a));
    let cookie_keys =
        cookie_keys(&mut c, raw.secrets.as_ref().and_then(|s| s.cookie_keys.as_ref()), env_keys);
    if c.errors.is_empty() {
        Ok(Config {
            grace_period,
            access_log: raw.access_log.unwrap_or(true),
            listeners,
            routes,
            backends,
            cookie_keys,
            stick_capacity,
            redis,
            admin,
        })
    } else {
        Err(ConfigErrors(c.errors))
    }
}

fn listeners(c: &mut Checker, raw: &[RawListener], known: &HashSet<&str>) -> Vec<Listener> {
    if raw.is_empty() {
        c.err::<()>("listeners", None, "at least one [[listeners]] entry is required");
    }
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    let mut out = Vec::new();
    for (i, l) in raw.iter().enumerate() {
        let p = |k: &str| format!("listeners[{i}].{k}");
        c.name(&p("name"), &l.name);
        if !names.insert(l.name.get_ref().clone()) {
            c.err(
                &p("name"),
                Some(&l.name),
                format!("duplicate listener name {:?}", l.name.get_ref()),
            );
        }
        let address = match l.address.get_ref().parse::<SocketAddr>() {
            Ok(a) => {
                if a.port() != 0 && !addrs.insert(a) {
                    c.err(&p("address"), Some(&l.address), format!("two listeners on {a}"));
                }
                a
            }
            Err(_) => {
                let msg = format!(
                    "invalid address {:?}; expected IP:PORT, e.g. \"0.0.0.0:8080\" or \"[::]:8080\"",
                    l.address.get_ref()
                );
                c.err(&p("address"), Some(&l.address), msg);
                SocketAddr::from(([0, 0, 0, 0], 0))
            }
        };
        if let Some(b) = &l.default_backend {
            if !known.contains(b.get_ref().as_str()) {
                c.err(&p("default_backend"), Some(b), format!("unknown backend {:?}", b.get_ref()));
            }
        }
        let mut trusted_proxies = Vec::new();
        for (j, t) in l.trusted_proxies.iter().enumerate() {
            let s = t.get_ref().trim();
            match s.parse::<IpNet>().or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from)) {
                Ok(n) => trusted_proxies.push(n),
                Err(_) => c.err(
                    &format!("listeners[{i}].trusted_proxies[{j}]"),
                    Some(t),
                    format!("invalid address or CIDR {s:?}"),
                ),
            }
        }
        let t = l.timeouts.as_ref();
        out.push(Listener {
            name: l.name.get_ref().clone(),
            address,
            default_backend: l.default_backend.as_ref().map(|b| b.get_ref().clone()),
            trusted_proxies,
            header_timeout: c.duration(
                &p("timeouts.header"),
                t.and_then(|t| t.header.as_ref()),
                DEFAULT_HEADER_TIMEOUT,
            ),
            body_timeout: c.duration(
                &p("timeouts.body"),
                t.and_then(|t| t.body.as_ref()),
                DEFAULT_BODY_TIMEOUT,
            ),
            idle_timeout: c.duration(
                &p("timeouts.idle"),
                t.and_then(|t| t.idle.as_ref()),
                DEFAULT_CLIENT_IDLE_TIMEOUT,
            ),
            limits: edge::listener_limits(c, &p("limits"), l.limits.as_ref()),
            rate_limit: l
                .rate_limit
                .as_ref()
                .and_then(|r| edge::rate_limit(c, &p("rate_limit"), r)),
            tls: l.tls.as_ref().and_then(|t| edge::tls(c, &p("tls"), t)),
            proxy_protocol: edge::proxy_protocol(c, &p("proxy_protocol"), l),
            h2_max_streams: edge::h2_streams(c, &p("http2.max_concurrent_streams"), l),
        });
    }
    out
}

fn route(c: &mut Checker, i: usize, r: &RawRoute, known: &HashSet<&str>) -> Option<Route> {
    let p = |k: &str| format!("routes[{i}].{k}");
    if !known.contains(r.backend.get_ref().as_str()) {
        c.err(
            &p("backend"),
            Some(&r.backend),
            format!("unknown backend {:?}", r.backend.get_ref()),
        );
    }
    let host = r.host.as_ref().and_then(|h| {
        let s = h.get_ref().trim().to_ascii_lowercase();
        let valid = |n: &str| !n.is_empty() && n.chars().all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '.'));
        match s.strip_prefix("*.") {
            Some(rest) if valid(rest) => Some(HostMatch::Suffix(format!(".{rest}"))),
            None if valid(&s) => Some(HostMatch::Exact(s)),
            _ => {
                c.err(&p("host"), Some(h), format!("invalid host {:?}; expected a name like \"api.example.com\" or \"*.example.com\"", h.get_ref()));
                None
            }
        }
    });
    let path_prefix = r.path_prefix.as_ref().map(|pp| {
        if !pp.get_ref().starts_with('/') {
            c.err(&p("path_prefix"), Some(pp), "must start with '/'");
        }
        pp.get_ref().clone()
    });
    Some(Route { host, path_prefix, backend: r.backend.get_ref().clone() })
}

fn backends(c: &mut Checker, raw: &BTreeMap<String, RawBackend>) -> Vec<Backend> {
    raw.iter().map(|(name, b)| backend(c, name, b)).collect()
}

fn backend(c: &mut Checker, name: &str, b: &RawBackend) -> Backend {
    let p = |k: &str| format!("backends.{name}.{k}");
    c.name(&format!("backends.{name}"), &Spanned::new(0..0, name.to_owned()));
    let algos: Vec<(&str, Algorithm)> = ["round_robin", "least_conn", "random", "p2c", "first"]
        .iter()
        .filter_map(|n| Algorithm::parse(n).map(|a| (*n, a)))
        .collect();
    let balance = c.choice(&p("balance"), b.balance.as_ref(), Algorithm::RoundRobin, &algos);
    if b.servers.is_empty() {
        c.err::<()>(
            &p("servers"),
            None,
            "a backend needs at least one [[backends.NAME.servers]] entry",
        );
    }
    let mut names = HashSet::new();
    let servers = b
        .servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let srv = server(c, &format!("backends.{name}.servers[{i}]"), s);
            if !names.insert(srv.name.clone()) {
                c.err(
                    &format!("backends.{name}.servers[{i}].name"),
                    Some(&s.name),
                    format!("duplicate server name {:?}", srv.name),
                );
            }
            srv
        })
        .collect();
    let t = b.timeouts.as_ref();
    Backend {
        name: name.to_owned(),
        balance,
        sticky: b.sticky.as_ref().and_then(|s| sticky(c, name, s)),
        connect_timeout: c.duration(
            &p("timeouts.connect"),
            t.and_then(|t| t.connect.as_ref()),
            DEFAULT_CONNECT_TIMEOUT,
        ),
        response_timeout: c.duration(
            &p("timeouts.response"),
            t.and_then(|t| t.response.as_ref()),
            DEFAULT_RESPONSE_TIMEOUT,
        ),
        idle_timeout: c.duration(
            &p("timeouts.idle"),
            t.and_then(|t| t.idle.as_ref()),
            DEFAULT_UPSTREAM_IDLE_TIMEOUT,
        ),
        limits: limits(c, name, b.limits.as_ref()),
        rate_limit: b
            .rate_limit
            .as_ref()
            .and_then(|r| edge::rate_limit(c, &format!("backends.{name}.rate_limit"), r)),
        tls: b.tls.as_ref().and_then(|t| edge::upstream_tls(c, &format!("backends.{name}.tls"), t)),
        http2: b.http2.unwrap_or(false),
        health_check: b.health_check.as_ref().map(|h| health_check(c, name, h)),
        on_all_down: c.choice(
            &p("on_all_down"),
            b.on_all_down.as_ref(),
            OnAllDown::Unavailable,
            &[("503", OnAllDown::Unavailable), ("fail_open", OnAllDown::FailOpen)],
        ),
        retry: retry(c, name, b.retry.as_ref()),
        outlier: b.outlier.as_ref().map(|o| outlier(c, name, o)),
        slow_start: match &b.slow_start {
            Some(v)
                if v.get_ref().trim().trim_end_matches(|ch: char| ch.is_ascii_alphabetic())
                    == "0" =>
            {
                Duration::ZERO
            }
            v => c.duration(&p("slow_start"), v.as_ref(), Duration::ZERO),
        },
        servers,
    }
}

fn int_in(
    c: &mut Checker,
    path: &str,
    v: Option<&Spanned<i64>>,
    default: u32,
    range: std::ops::RangeInclusive<i64>,
) -> u32 {
    match v {
        None => default,
        Some(n) if range.contains(n.get_ref()) => *n.get_ref() as u32,
        Some(n) => {
            c.err(
                path,
                Some(n),
                format!(
                    "{} is out of range; expected {} to {}",
                    n.get_ref(),
                    range.start(),
                    range.end()
                ),
            );
            default
        }
    }
}

fn health_check(c: &mut Checker, backend: &str, h: &super::raw::RawHealthCheck) -> HealthCheck {
    let p = |k: &str| format!("backends.{backend}.health_check.{k}");
    let kind = c.choice(
        &p("type"),
        h.kind.as_ref(),
        CheckKind::Http,
        &[("http", CheckKind::Http), ("tcp", CheckKind::Tcp)],
    );
    let path = h.path.as_ref().map_or("/healthz".to_owned(), |v| {
        if !v.get_ref().starts_with('/')
            || v.get_ref().bytes().any(|b| b.is_ascii_control() || b == b' ')
        {
            c.err(
                &p("path"),
                Some(v),
                "must start with '/' and contain no spaces or control characters",
            );
        }
        v.get_ref().clone()
    });
    let expect_status = match h.expect_status.as_ref() {
        None => (200, 399),
        Some(v) => {
            let text = match v.get_ref() {
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::String(s) => s.clone(),
                _ => String::new(),
            };
            let parse = |s: &str| s.trim().parse::<u16>().ok().filter(|c| (100..=599).contains(c));
            let range = match text.split_once('-') {
                Some((a, b)) => parse(a).zip(parse(b)).filter(|(a, b)| a <= b),
                None => parse(&text).map(|c| (c, c)),
            };
            range.unwrap_or_else(|| {
                c.err(
                    &p("expect_status"),
                    Some(v),
                    "expected a status like 200 or a range like \"200-399\"",
                );
                (200, 399)
            })
        }
    };
    let interval = c.duration(&p("interval"), h.interval.as_ref(), Duration::from_secs(2));
    let timeout = c.duration(&p("timeout"), h.timeout.as_ref(), Duration::from_secs(1));
    HealthCheck {
        kind,
        path,
        expect_status,
        expect_body: h.expect_body.as_ref().map(|b| b.get_ref().clone()).filter(|b| !b.is_empty()),
        host: h.host.as_ref().map(|b| b.get_ref().clone()).filter(|b| !b.is_empty()),
        interval,
        timeout,
        rise: int_in(c, &p("rise"), h.rise.as_ref(), 2, 1..=100),
        fall: int_in(c, &p("fall"), h.fall.as_ref(), 3, 1..=100),
    }
}

fn retry(c: &mut Checker, backend: &str, r: Option<&super::raw::RawRetry>) -> Retry {
    let p = |k: &str| format!("backends.{backend}.retry.{k}");
    Retry {
        attempts: int_in(c, &p("attempts"), r.and_then(|r| r.attempts.as_ref()), 2, 1..=10),
        budget_percent: int_in(
            c,
            &p("budget_percent"),
            r.and_then(|r| r.budget_percent.as_ref()),
            20,
            0..=100,
        ),
    }
}

fn outlier(c: &mut Checker, backend: &str, o: &super::raw::RawOutlier) -> Outlier {
    let p = |k: &str| format!("backends.{backend}.outlier.{k}");
    Outlier {
        consecutive_failures: int_in(
            c,
            &p("consecutive_failures"),
            o.consecutive_failures.as_ref(),
            5,
            1..=1000,
        ),
        base_ejection: c.duration(
            &p("base_ejection"),
            o.base_ejection.as_ref(),
            Duration::from_secs(10),
        ),
        max_ejection: c.duration(
            &p("max_ejection"),
            o.max_ejection.as_ref(),
            Duration::from_secs(300),
        ),
        max_ejected_percent: int_in(
            c,
            &p("max_ejected_percent"),
            o.max_ejected_percent.as_ref(),
            50,
            0..=100,
        ),
    }
}

/// Validates a lone server entry (runtime addition).
pub(super) fn server_entry(raw: &RawServer, text: &str) -> Result<Server, ConfigErrors> {
    let mut c = Checker { text, errors: Vec::new() };
    let s = server(&mut c, "server", raw);
    if c.errors.is_empty() { Ok(s) } else { Err(ConfigErrors(c.errors)) }
}

fn server(c: &mut Checker, path: &str, s: &RawServer) -> Server {
    c.name(&format!("{path}.name"), &s.name);
    let addr = s.address.get_ref().trim();
    let address = match addr.parse::<http::uri::Authority>() {
        Ok(a)
            if a.port_u16().is_some_and(|p| p != 0)
                && !a.host().is_empty()
                && !addr.contains('@') =>
        {
            a
        }
        _ => {
            c.err(&format!("{path}.address"), Some(&s.address), format!("invalid address {addr:?}; expected HOST:PORT, e.g. \"10.0.0.5:8080\" or \"app1.internal:8080\""));
            http::uri::Authority::from_static("invalid:1")
        }
    };
    let weight = match &s.weight {
        None => 1,
        Some(w) if (1..=i64::from(MAX_WEIGHT)).contains(w.get_ref()) => *w.get_ref() as u32,
        Some(w) => {
            c.err(&format!("{path}.weight"), Some(w), format!("weight {} is out of range; expected 1 to {MAX_WEIGHT} (use state \"maint\" or remove the server to stop traffic)", w.get_ref()));
            1
        }
    };
    let state = s.state.as_ref().map_or(AdminState::Ready, |st| {
        AdminState::parse(st.get_ref()).unwrap_or_else(|| {
            let msg =
                format!("unknown value {:?}; expected one of: ready | drain | maint", st.get_ref());
            c.err(&format!("{path}.state"), Some(st), msg);
            AdminState::Ready
        })
    });
    Server {
        name: s.name.get_ref().clone(),
        address,
        weight,
        backup: s.backup.unwrap_or(false),
        state,
    }
}

fn sticky(c: &mut Checker, backend: &str, s: &RawSticky) -> Option<Sticky> {
    let p = |k: &str| format!("backends.{backend}.sticky.{k}");
    let mode_name = s.mode.as_ref().map(|m| m.get_ref().as_str()).unwrap_or("cookie");
    let required = |c: &mut Checker, key: &str, v: Option<&S>| -> Option<S> {
        if v.is_none() {
            c.err(&p(key), s.mode.as_ref(), format!("mode {mode_name:?} needs `{key}`"));
        }
        v.cloned()
    };
    let mode = match mode_name {
        "none" => return None,
        "cookie" => StickyMode::Cookie,
        "client_ip" => {
            let v4 = prefix(c, &p("client_ip_prefix_v4"), s.client_ip_prefix_v4.as_ref(), 32);
            let v6 = prefix(c, &p("client_ip_prefix_v6"), s.client_ip_prefix_v6.as_ref(), 128);
            StickyMode::ClientIp { v4, v6 }
        }
        "header" => {
            let h = required(c, "header", s.header.as_ref())?;
            match http::HeaderName::from_bytes(h.get_ref().trim().as_bytes()) {
                Ok(name) => StickyMode::Header(name),
                Err(_) => {
                    c.err(&p("header"), Some(&h), format!("invalid header name {:?}", h.get_ref()));
                    return None;
                }
            }
        }
        "app_cookie" => {
            let n = required(c, "app_cookie", s.app_cookie.as_ref())?;
            cookie_token(c, &p("app_cookie"), &n);
            StickyMode::AppCookie(n.get_ref().clone())
        }
        other => {
            let msg = format!(
                "unknown value {other:?}; expected one of: none | cookie | client_ip | header | app_cookie"
            );
            c.err(&p("mode"), s.mode.as_ref(), msg);
            return None;
        }
    };
    let cookie_name = s.cookie_name.as_ref().map_or(DEFAULT_COOKIE_NAME.to_owned(), |n| {
        cookie_token(c, &p("cookie_name"), n);
        n.get_ref().clone()
    });
    let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    let idle = c.duration(&p("idle_timeout"), s.idle_timeout.as_ref(), DEFAULT_STICKY_IDLE);
    let life = c.duration(&p("max_lifetime"), s.max_lifetime.as_ref(), DEFAULT_STICKY_LIFETIME);
    let same_site = c.choice(
        &p("same_site"),
        s.same_site.as_ref(),
        SameSite::Lax,
        &[("lax", SameSite::Lax), ("strict", SameSite::Strict), ("none", SameSite::None)],
    );
    let secure = match s.secure.as_ref().map(|v| (v, v.get_ref())) {
        None => Secure::Auto,
        Some((_, toml::Value::Boolean(true))) => Secure::Always,
        Some((_, toml::Value::Boolean(false))) => Secure::Never,
        Some((_, toml::Value::String(a))) if a == "auto" => Secure::Auto,
        Some((v, _)) => {
            c.err(&p("secure"), Some(v), "expected \"auto\", true or false");
            Secure::Auto
        }
    };
    let text_attr = |c: &mut Checker, key: &str, v: &S| {
        if v.get_ref().bytes().any(|b| b.is_ascii_control() || b == b';' || b == b' ') {
            c.err(&p(key), Some(v), "must not contain spaces, ';' or control characters");
        }
        v.get_ref().clone()
    };
    let domain = s.domain.as_ref().map(|d| text_attr(c, "domain", d)).filter(|d| !d.is_empty());
    let path = s.path.as_ref().map_or("/".to_owned(), |v| text_attr(c, "path", v));
    let on_server_down = c.choice(
        &p("on_server_down"),
        s.on_server_down.as_ref(),
        OnServerDown::Redispatch,
        &[("redispatch", OnServerDown::Redispatch), ("fail", OnServerDown::Fail)],
    );
    let max_age =
        s.max_age.as_ref().map(|m| c.duration(&p("max_age"), Some(m), DEFAULT_STICKY_IDLE));
    let on_server_full = c.choice(
        &p("on_server_full"),
        s.on_server_full.as_ref(),
        OnServerFull::Queue,
        &[
            ("queue", OnServerFull::Queue),
            ("spill", OnServerFull::Spill),
            ("redispatch", OnServerFull::Redispatch),
        ],
    );
    Some(Sticky {
        on_server_full,
        mode,
        max_age,
        cookie_name,
        expiry: Expiry { idle_timeout: secs(idle), max_lifetime: secs(life) },
        same_site,
        secure,
        http_only: s.http_only.unwrap_or(true),
        domain,
        path,
        on_server_down,
    })
}

/// A cookie name must be an RFC 6265 token.
fn cookie_token(c: &mut Checker, path: &str, n: &S) {
    let v = n.get_ref();
    let token = !v.is_empty()
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        c.err(
            path,
            Some(n),
            format!("invalid cookie name {v:?}: use letters, digits and !#$%&'*+-.^_`|~"),
        );
    }
}

fn prefix(c: &mut Checker, path: &str, v: Option<&Spanned<i64>>, max: u8) -> u8 {
    match v {
        None => max,
        Some(p) if (1..=i64::from(max)).contains(p.get_ref()) => *p.get_ref() as u8,
        Some(p) => {
            c.err(
                path,
                Some(p),
                format!("prefix length {} is out of range; expected 1 to {max}", p.get_ref()),
            );
            max
        }
    }
}

fn limits(c: &mut Checker, backend: &str, raw: Option<&super::raw::RawBackendLimits>) -> Limits {
    let p = |k: &str| format!("backends.{backend}.limits.{k}");
    let count = |c: &mut Checker, key: &str, v: Option<&Spanned<i64>>| match v {
        None => 0,
        Some(n) if (0..=i64::from(u32::MAX)).contains(n.get_ref()) => *n.get_ref() as u32,
        Some(n) => {
            c.err(&p(key), Some(n), "must be 0 (unlimited) or a positive number");
            0
        }
    };
    let max_per_server = count(
        c,
        "max_connections_per_server",
        raw.and_then(|l| l.max_connections_per_server.as_ref()),
    );
    let queue_size = count(c, "queue_size", raw.and_then(|l| l.queue_size.as_ref()));
    let queue_timeout = c.duration(
        &p("queue_timeout"),
        raw.and_then(|l| l.queue_timeout.as_ref()),
        DEFAULT_QUEUE_TIMEOUT,
    );
    Limits { max_per_server, queue_size, queue_timeout }
}

fn stick_capacity(c: &mut Checker, raw: Option<&RawStickTable>) -> u64 {
    let Some(t) = raw else { return DEFAULT_STICK_CAPACITY };
    match &t.capacity {
        None => DEFAULT_STICK_CAPACITY,
        Some(n) if *n.get_ref() >= 1 => *n.get_ref() as u64,
        Some(n) => {
            c.err("stick_table.capacity", Some(n), "must be at least 1");
            DEFAULT_STICK_CAPACITY
        }
    }
}

fn redis_store(c: &mut Checker, raw: Option<&RawStickTable>) -> Option<RedisStore> {
    let t = raw?;
    let store = t.store.as_ref().map_or("memory", |s| s.get_ref().as_str());
    match store {
        "memory" => {
            for (key, v) in [
                ("redis_url", &t.redis_url),
                ("redis_timeout", &t.redis_timeout),
                ("redis_prefix", &t.redis_prefix),
                ("redis_ca_file", &t.redis_ca_file),
            ] {
                if let Some(v) = v {
                    c.err(
                        &format!("stick_table.{key}"),
                        Some(v),
                        "only used with store = \"redis\"",
                    );
                }
            }
            return None;
        }
        "redis" => {}
        other => {
            c.err(
                "stick_table.store",
                t.store.as_ref(),
                format!("unknown value {other:?}; expected one of: memory | redis"),
            );
            return None;
        }
    }
    let Some(url) = &t.redis_url else {
        c.err::<()>(
            "stick_table.redis_url",
            None,
            "store = \"redis\" needs redis_url, e.g. \"redis://127.0.0.1:6379\"",
        );
        return None;
    };
    let u = url.get_ref().trim();
    let cluster = t.redis_cluster.unwrap_or(false);
    let urls: Vec<&str> = u.split(',').map(str::trim).collect();
    if urls.len() > 1 && !cluster {
        c.err(
            "stick_table.redis_url",
            Some(url),
            "several URLs are only accepted with redis_cluster = true (they are the cluster's seed nodes)",
        );
    }
    let tls = urls.first().is_some_and(|f| f.starts_with("rediss://"));
    for one in &urls {
        let scheme_ok = one.starts_with("redis://") || one.starts_with("rediss://");
        if !scheme_ok || redis::Client::open(*one).is_err() {
            c.err(
                "stick_table.redis_url",
                Some(url),
                format!(
                    "invalid Redis URL {one:?}; expected redis://[user:password@]host:port[/db] \
                     (rediss:// for TLS)"
                ),
            );
        } else if one.starts_with("rediss://") != tls {
            c.err(
                "stick_table.redis_url",
                Some(url),
                "cluster seed nodes must all use redis:// or all use rediss://",
            );
        }
    }
    let ca_pem = t.redis_ca_file.as_ref().and_then(|f| {
        if !tls {
            c.err(
                "stick_table.redis_ca_file",
                Some(f),
                "only used with TLS (a rediss:// redis_url)",
            );
            return None;
        }
        match std::fs::read(f.get_ref()) {
            Ok(pem) if pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => Some(pem),
            Ok(_) => {
                c.err(
                    "stick_table.redis_ca_file",
                    Some(f),
                    format!("{:?} holds no PEM certificate", f.get_ref()),
                );
                None
            }
            Err(e) => {
                c.err(
                    "stick_table.redis_ca_file",
                    Some(f),
                    format!("cannot read {:?}: {e}", f.get_ref()),
                );
                None
            }
        }
    });
    let timeout = c.duration(
        "stick_table.redis_timeout",
        t.redis_timeout.as_ref(),
        Duration::from_millis(10),
    );
    let prefix = t.redis_prefix.as_ref().map_or("tether".to_owned(), |p| {
        c.name("stick_table.redis_prefix", p);
        p.get_ref().clone()
    });
    Some(RedisStore { url: u.to_owned(), timeout, prefix, cluster, ca_pem })
}

fn admin(c: &mut Checker, a: &super::raw::RawAdmin) -> Admin {
    let address = match &a.address {
        None => DEFAULT_ADMIN_ADDRESS
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8081))),
        Some(s) => s.get_ref().parse().unwrap_or_else(|_| {
            c.err(
                "admin.address",
                Some(s),
                format!(
                    "invalid address {:?}; expected IP:PORT, e.g. \"127.0.0.1:8081\"",
                    s.get_ref()
                ),
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        }),
    };
    let token = a.token_file.as_ref().and_then(|f| match std::fs::read_to_string(f.get_ref()) {
        Ok(t) if !t.trim().is_empty() => Some(t.trim().to_owned()),
        Ok(_) => {
            c.err("admin.token_file", Some(f), format!("{:?} is empty", f.get_ref()));
            None
        }
        Err(e) => {
            c.err("admin.token_file", Some(f), format!("cannot read {:?}: {e}", f.get_ref()));
            None
        }
    });
    if !address.ip().is_loopback() && token.is_none() && a.token_file.is_none() {
        c.err("admin.address", a.address.as_ref(), format!("{address} is not a loopback address: set admin.token_file so the API is not open to the network"));
    }
    Admin { address, token }
}

fn cookie_keys(
    c: &mut Checker,
    raw: Option<&Spanned<Vec<String>>>,
    env: Option<&str>,
) -> Option<CookieKeys> {
    let (path, keys, at): (&str, Vec<String>, Option<&Spanned<Vec<String>>>) = match (env, raw) {
        (Some(e), _) => ("TETHER_COOKIE_KEYS", e.split(',').map(str::to_owned).collect(), None),
        (None, Some(r)) => ("secrets.cookie_keys", r.get_ref().clone(), Some(r)),
        (None, None) => return None,
    };
    match CookieKeys::from_base64(&keys) {
        Ok(k) => Some(k),
        Err(e) => {
            c.err(path, at, format!("{e} (generate one with: head -c 32 /dev/urandom | base64)"));
            None
        }
    }
}
