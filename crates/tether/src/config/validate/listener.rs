//! The `[[listeners]]` entries: unique names and addresses, the default backend, trusted
//! proxies and timeouts; the edge settings are checked in [`super::edge`].

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::super::raw::RawListener;
use super::{Checker, S, edge};
use crate::config::{
    DEFAULT_BODY_TIMEOUT, DEFAULT_CLIENT_IDLE_TIMEOUT, DEFAULT_HEADER_TIMEOUT, Listener,
    ListenerMode,
};

pub(super) fn listeners(
    c: &mut Checker,
    raw: &[RawListener],
    known: &HashSet<&str>,
) -> Vec<Listener> {
    if raw.is_empty() {
        c.err::<()>("listeners", None, "at least one [[listeners]] entry is required");
    }
    let mut seen = Seen::default();
    raw.iter()
        .enumerate()
        .map(|(i, l)| listener(c, &format!("listeners[{i}]"), l, known, &mut seen))
        .collect()
}

/// The names and addresses of the listeners checked so far: no two may share either.
#[derive(Default)]
struct Seen {
    names: HashSet<String>,
    addresses: HashSet<SocketAddr>,
}

fn listener(
    c: &mut Checker,
    path: &str,
    l: &RawListener,
    known: &HashSet<&str>,
    seen: &mut Seen,
) -> Listener {
    let p = |k: &str| format!("{path}.{k}");
    c.name(&p("name"), &l.name);
    if !seen.names.insert(l.name.get_ref().clone()) {
        let msg = format!("duplicate listener name {:?}", l.name.get_ref());
        c.err(&p("name"), Some(&l.name), msg);
    }
    let address = address(c, &p("address"), &l.address, &mut seen.addresses);
    if let Some(b) = &l.default_backend {
        if !known.contains(b.get_ref().as_str()) {
            c.err(&p("default_backend"), Some(b), format!("unknown backend {:?}", b.get_ref()));
        }
    }
    let trusted_proxies = trusted_proxies(c, path, &l.trusted_proxies);
    let t = l.timeouts.as_ref();
    Listener {
        name: l.name.get_ref().clone(),
        address,
        mode: mode(c, &p("mode"), l.mode.as_ref()),
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
        rate_limit: l.rate_limit.as_ref().and_then(|r| edge::rate_limit(c, &p("rate_limit"), r)),
        tls: l.tls.as_ref().and_then(|t| edge::tls(c, &p("tls"), t)),
        proxy_protocol: edge::proxy_protocol(c, &p("proxy_protocol"), l),
        h2_max_streams: edge::h2_streams(c, &p("http2.max_concurrent_streams"), l),
        sni_routes: Vec::new(),
    }
}

/// `mode`: `http` (default) or `tcp`.
fn mode(c: &mut Checker, path: &str, v: Option<&S>) -> ListenerMode {
    match v.map(|v| v.get_ref().as_str()) {
        None | Some("http") => ListenerMode::Http,
        Some("tcp") => ListenerMode::Tcp,
        Some(other) => {
            let msg = format!("unknown mode {other:?}; expected \"http\" or \"tcp\"");
            c.err(path, v, msg);
            ListenerMode::Http
        }
    }
}

/// `address` as IP:PORT, not shared with an earlier listener (port 0, OS-assigned, may repeat).
fn address(c: &mut Checker, path: &str, v: &S, seen: &mut HashSet<SocketAddr>) -> SocketAddr {
    match v.get_ref().parse::<SocketAddr>() {
        Ok(a) => {
            if a.port() != 0 && !seen.insert(a) {
                c.err(path, Some(v), format!("two listeners on {a}"));
            }
            a
        }
        Err(_) => {
            let msg = format!(
                "invalid address {:?}; expected IP:PORT, e.g. \"0.0.0.0:8080\" or \"[::]:8080\"",
                v.get_ref()
            );
            c.err(path, Some(v), msg);
            SocketAddr::from(([0, 0, 0, 0], 0))
        }
    }
}

/// `trusted_proxies`: networks in CIDR notation or single addresses.
fn trusted_proxies(c: &mut Checker, path: &str, raw: &[S]) -> Vec<IpNet> {
    let mut out = Vec::new();
    for (j, t) in raw.iter().enumerate() {
        let s = t.get_ref().trim();
        match s.parse::<IpNet>().or_else(|_| s.parse::<IpAddr>().map(IpNet::from)) {
            Ok(n) => out.push(n),
            Err(_) => c.err(
                &format!("{path}.trusted_proxies[{j}]"),
                Some(t),
                format!("invalid address or CIDR {s:?}"),
            ),
        }
    }
    out
}
