//! Stage two: raw file → [`Config`], collecting every error with its key path and line.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use tether_core::AdminState;
use tether_core::affinity::CookieKeys;
use tether_core::balance::MAX_WEIGHT;
use toml::Spanned;

use super::raw::{RawBackend, RawConfig, RawServer, S};
use super::*;

mod balance;
mod discovery;
mod edge;
mod listener;
mod route;
mod stick_table;
mod sticky;
mod tcp;

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
    let mut listeners = listener::listeners(&mut c, &raw.listeners, &known);
    let listener_names: HashSet<&str> =
        raw.listeners.iter().map(|l| l.name.get_ref().as_str()).collect();
    let routes = route::routes(&mut c, &raw.routes, (&known, &listener_names));
    let all_backends = (&raw.backends, backends.as_slice());
    tcp::tcp_listeners(&mut c, (&raw.listeners, &mut listeners), &raw.routes, all_backends);
    let stick_capacity = stick_table::stick_capacity(&mut c, raw.stick_table.as_ref());
    let redis = stick_table::redis_store(&mut c, raw.stick_table.as_ref());
    let admin = raw.admin.as_ref().map(|a| admin(&mut c, a));
    let request_id = request_id(&mut c, raw.request_id.as_ref());
    let raw_keys = raw.secrets.as_ref().and_then(|s| s.cookie_keys.as_ref());
    let cookie_keys = cookie_keys(&mut c, raw_keys, env_keys);
    if redis.is_some() && raw_keys.is_none() && env_keys.is_none() {
        c.err::<()>(
            "secrets.cookie_keys",
            None,
            "stick_table.store = \"redis\" needs cookie_keys shared by every instance: table \
             keys are hashed with a secret derived from them, so instances with their own \
             random keys would never find each other's bindings (generate one with: head -c 32 \
             /dev/urandom | base64)",
        );
    }
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
            request_id,
        })
    } else {
        Err(ConfigErrors(c.errors))
    }
}

fn backends(c: &mut Checker, raw: &BTreeMap<String, RawBackend>) -> Vec<Backend> {
    raw.iter().map(|(name, b)| backend(c, name, b)).collect()
}

fn backend(c: &mut Checker, name: &str, b: &RawBackend) -> Backend {
    let p = |k: &str| format!("backends.{name}.{k}");
    c.name(&format!("backends.{name}"), &Spanned::new(0..0, name.to_owned()));
    let balance = balance::balance(c, name, b);
    let discovery = b.discovery.as_ref().and_then(|d| discovery::discovery(c, name, d));
    if b.servers.is_empty() && b.discovery.is_none() {
        c.err::<()>(
            &p("servers"),
            None,
            "a backend needs at least one [[backends.NAME.servers]] entry or a \
             [backends.NAME.discovery]",
        );
    }
    let servers = servers(c, name, b);
    let t = b.timeouts.as_ref();
    Backend {
        name: name.to_owned(),
        hash_key: balance::hash_key(c, name, b, balance),
        hash_balance_factor: balance::hash_balance_factor(c, name, b, balance),
        balance,
        sticky: b.sticky.as_ref().and_then(|s| sticky::sticky(c, &p("sticky"), s)),
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
        send_proxy: b.send_proxy.as_ref().map(|v| {
            let versions = [("v1", ProxyVersion::V1), ("v2", ProxyVersion::V2)];
            c.choice(&p("send_proxy"), Some(v), ProxyVersion::V1, &versions)
        }),
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
        discovery,
    }
}

/// `[[backends.NAME.servers]]`, each checked, names unique.
fn servers(c: &mut Checker, name: &str, b: &RawBackend) -> Vec<Server> {
    let mut names = HashSet::new();
    b.servers
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
        .collect()
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
    let interval = c.duration(&p("interval"), h.interval.as_ref(), DEFAULT_CHECK_INTERVAL);
    let timeout = c.duration(&p("timeout"), h.timeout.as_ref(), DEFAULT_CHECK_TIMEOUT);
    HealthCheck {
        kind,
        path,
        expect_status,
        expect_body: h.expect_body.as_ref().map(|b| b.get_ref().clone()).filter(|b| !b.is_empty()),
        host: h.host.as_ref().map(|b| b.get_ref().clone()).filter(|b| !b.is_empty()),
        interval,
        timeout,
        rise: int_in(c, &p("rise"), h.rise.as_ref(), DEFAULT_CHECK_RISE, 1..=100),
        fall: int_in(c, &p("fall"), h.fall.as_ref(), DEFAULT_CHECK_FALL, 1..=100),
    }
}

fn retry(c: &mut Checker, backend: &str, r: Option<&super::raw::RawRetry>) -> Retry {
    let p = |k: &str| format!("backends.{backend}.retry.{k}");
    Retry {
        attempts: int_in(
            c,
            &p("attempts"),
            r.and_then(|r| r.attempts.as_ref()),
            DEFAULT_RETRY_ATTEMPTS,
            1..=10,
        ),
        budget_percent: int_in(
            c,
            &p("budget_percent"),
            r.and_then(|r| r.budget_percent.as_ref()),
            DEFAULT_RETRY_BUDGET_PERCENT,
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
            DEFAULT_CONSECUTIVE_FAILURES,
            1..=1000,
        ),
        base_ejection: c.duration(
            &p("base_ejection"),
            o.base_ejection.as_ref(),
            DEFAULT_BASE_EJECTION,
        ),
        max_ejection: c.duration(&p("max_ejection"), o.max_ejection.as_ref(), DEFAULT_MAX_EJECTION),
        max_ejected_percent: int_in(
            c,
            &p("max_ejected_percent"),
            o.max_ejected_percent.as_ref(),
            DEFAULT_MAX_EJECTED_PERCENT,
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
        source: ServerSource::Config,
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

/// `[request_id]`: on by default with `X-Request-Id`; `enabled = false` turns it off.
fn request_id(c: &mut Checker, raw: Option<&super::raw::RawRequestId>) -> Option<http::HeaderName> {
    let default = http::HeaderName::from_static(DEFAULT_REQUEST_ID_HEADER);
    let Some(r) = raw else { return Some(default) };
    let name = match &r.header {
        None => default,
        Some(h) => match http::HeaderName::from_bytes(h.get_ref().trim().as_bytes()) {
            Ok(n) => n,
            Err(_) => {
                c.err(
                    "request_id.header",
                    Some(h),
                    format!("invalid header name {:?}", h.get_ref()),
                );
                default
            }
        },
    };
    r.enabled.unwrap_or(true).then_some(name)
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
