//! `mode = "tcp"` listeners: what a byte relay cannot honour is a configuration error, named
//! by its key, rather than a setting silently ignored. A TCP listener needs a
//! `default_backend` or SNI routes (there is no request to route), terminates no TLS (it
//! passes TLS through by SNI), is named by no HTTP route, and its backends' affinity cannot
//! come from cookies or headers: only `client_ip` (or none) works on bytes.
//!
//! `[[routes]]` with `sni` are the TCP listeners' routes: they pick a backend by the server
//! name of the client's TLS ClientHello, and take only `sni`, `listeners` and `backend`.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use tether_core::balance::Algorithm;

use super::super::raw::{RawBackend, RawListener, RawRoute};
use super::Checker;
use super::route::{host, known_backend};
use crate::config::{Backend, Balance, HashKey, Listener, ListenerMode, SniRoute, StickyMode};

/// Checks every TCP listener of `listeners` (validated) against its raw entry, the routes
/// and the backends, and gives each its SNI routes.
pub(super) fn tcp_listeners(
    c: &mut Checker,
    (raw, listeners): (&[RawListener], &mut [Listener]),
    routes: &[RawRoute],
    (raw_backends, backends): (&BTreeMap<String, RawBackend>, &[Backend]),
) {
    sni_routes(c, routes, listeners, raw_backends);
    let mut tcp_backends = BTreeSet::new();
    for (i, (r, l)) in raw.iter().zip(listeners.iter()).enumerate() {
        if l.mode != ListenerMode::Tcp {
            continue;
        }
        let p = |k: &str| format!("listeners[{i}].{k}");
        http_only_keys(c, i, r);
        if r.tls.is_some() {
            c.err::<()>(
                &p("tls"),
                None,
                "a TCP listener terminates no TLS: it passes TLS through to the servers (route \
                 it by name with [[routes]] sni)",
            );
        }
        for (j, route) in routes.iter().enumerate().filter(|(_, r)| r.sni.is_none()) {
            let Some(names) = &route.listeners else { continue };
            if names.get_ref().contains(&l.name) {
                let msg = format!(
                    "listener {:?} is a TCP listener: only routes with sni apply to it",
                    l.name
                );
                c.err(&format!("routes[{j}].listeners"), Some(names), msg);
            }
        }
        // An SNI route with mistakes of its own (already reported) still counts as one.
        let sni_named = routes.iter().any(|r| {
            r.sni.is_some()
                && r.listeners.as_ref().is_none_or(|names| names.get_ref().contains(&l.name))
        });
        if l.default_backend.is_none() && !sni_named {
            let msg = "a TCP listener needs a default_backend (or [[routes]] with sni)";
            c.err::<()>(&p("default_backend"), None, msg);
        }
        let served = l.default_backend.iter().chain(l.sni_routes.iter().map(|r| &r.backend));
        tcp_backends.extend(served.map(|b| (b.as_str(), l.name.as_str())));
    }
    let mut checked = HashSet::new();
    for (name, listener) in tcp_backends {
        let backend = backends.iter().find(|b| b.name == name);
        if let (Some(b), Some(raw)) = (backend, raw_backends.get(name)) {
            if checked.insert(name) {
                tcp_backend(c, b, raw, listener);
            }
        }
    }
    send_proxy_only_on_tcp(c, listeners, routes, backends, &checked);
}

/// The `[[routes]]` with `sni`: each checked and handed to the TCP listeners it applies to
/// (those of its `listeners`, or every TCP listener).
fn sni_routes(
    c: &mut Checker,
    routes: &[RawRoute],
    listeners: &mut [Listener],
    backends: &BTreeMap<String, RawBackend>,
) {
    let known: HashSet<&str> = backends.keys().map(String::as_str).collect();
    for (j, r) in routes.iter().enumerate() {
        let Some(sni) = &r.sni else { continue };
        let p = |k: &str| format!("routes[{j}].{k}");
        let errors = c.errors.len();
        http_route_keys(c, j, r);
        let pattern = host(c, &p("sni"), sni);
        let backend = match &r.backend {
            Some(b) => known_backend(c, &p("backend"), b, &known),
            None => {
                c.err::<()>(&p("backend"), None, "a route with sni needs a backend");
                None
            }
        };
        let names = r.listeners.as_ref().map(|n| n.get_ref().as_slice());
        for name in names.unwrap_or_default() {
            match listeners.iter().find(|l| l.name == *name) {
                None => c.err(&p("listeners"), r.listeners.as_ref(), format!("unknown listener {name:?}")),
                Some(l) if l.mode != ListenerMode::Tcp => c.err(
                    &p("listeners"),
                    r.listeners.as_ref(),
                    format!("listener {name:?} is an HTTP listener: sni routes TLS passthrough on TCP listeners (use host on HTTP)"),
                ),
                Some(_) => {}
            }
        }
        let applies =
            |l: &Listener| l.mode == ListenerMode::Tcp && names.is_none_or(|n| n.contains(&l.name));
        if !listeners.iter().any(applies) {
            c.err(
                &p("sni"),
                Some(sni),
                "no TCP listener for this route: sni applies to mode = \"tcp\" listeners",
            );
        }
        let (Some(sni), Some(backend)) = (pattern, backend) else { continue };
        if c.errors.len() != errors {
            continue;
        }
        for l in listeners.iter_mut().filter(|l| applies(l)) {
            let route = SniRoute { position: j, sni: sni.clone(), backend: backend.clone() };
            l.sni_routes.push(route);
        }
    }
}

/// Route keys that need an HTTP request, set on SNI route `j`: each an error.
fn http_route_keys(c: &mut Checker, j: usize, r: &RawRoute) {
    let set = [
        ("host", r.host.is_some()),
        ("path_prefix", r.path_prefix.is_some()),
        ("path_regex", r.path_regex.is_some()),
        ("methods", r.methods.is_some()),
        ("headers", r.headers.is_some()),
        ("strip_prefix", r.strip_prefix.is_some()),
        ("add_prefix", r.add_prefix.is_some()),
        ("request_headers", r.request_headers.is_some()),
        ("response_headers", r.response_headers.is_some()),
        ("split", r.split.is_some()),
        ("sticky_split", r.sticky_split.is_some()),
        ("split_cookie", r.split_cookie.is_some()),
        ("redirect", r.redirect.is_some()),
        ("respond", r.respond.is_some()),
    ];
    for (key, _) in set.iter().filter(|(_, is_set)| *is_set) {
        c.err::<()>(
            &format!("routes[{j}].{key}"),
            None,
            "an HTTP route key: a route with sni passes TLS through and takes only sni, \
             listeners and backend",
        );
    }
}

/// Keys that only mean something for HTTP requests, set on TCP listener `i`: each an error.
fn http_only_keys(c: &mut Checker, i: usize, r: &RawListener) {
    let limits = r.limits.as_ref();
    let set = [
        ("timeouts.body", r.timeouts.as_ref().is_some_and(|t| t.body.is_some())),
        ("limits.max_header_bytes", limits.is_some_and(|l| l.max_header_bytes.is_some())),
        ("limits.max_headers", limits.is_some_and(|l| l.max_headers.is_some())),
        ("limits.max_body_bytes", limits.is_some_and(|l| l.max_body_bytes.is_some())),
        ("rate_limit", r.rate_limit.is_some()),
        ("http2", r.http2.is_some()),
    ];
    for (key, _) in set.iter().filter(|(_, is_set)| *is_set) {
        c.err::<()>(
            &format!("listeners[{i}].{key}"),
            None,
            "an HTTP setting: a TCP listener relays bytes and has no requests to apply it to",
        );
    }
}

/// Backend `b` serves TCP listener `listener`: its HTTP-only keys are errors.
fn tcp_backend(c: &mut Checker, b: &Backend, raw: &RawBackend, listener: &str) {
    let name = &b.name;
    let why = |what: &str| format!("backend {name:?} serves TCP listener {listener:?}: {what}");
    if b.sticky.as_ref().is_some_and(|s| !matches!(s.mode, StickyMode::ClientIp { .. })) {
        let msg = why("TCP has no cookies/headers: use client_ip");
        c.err::<()>(&format!("backends.{name}.sticky.mode"), None, msg);
    }
    if b.balance == Balance::Core(Algorithm::LeastTime) {
        let msg = why("least_time balances response times, and TCP has no responses");
        c.err::<()>(&format!("backends.{name}.balance"), None, msg);
    }
    if b.hash_key.as_ref().is_some_and(|k| *k != HashKey::ClientIp) {
        let msg = why("only client_ip identifies a TCP connection");
        c.err::<()>(&format!("backends.{name}.hash_key"), None, msg);
    }
    let sticky = raw.sticky.as_ref();
    let timeouts = raw.timeouts.as_ref();
    let set = [
        ("rate_limit", raw.rate_limit.is_some()),
        ("tls", raw.tls.as_ref().is_some_and(|t| *t.get_ref() != toml::Value::Boolean(false))),
        ("http2", raw.http2 == Some(true)),
        ("timeouts.response", timeouts.is_some_and(|t| t.response.is_some())),
        ("timeouts.idle", timeouts.is_some_and(|t| t.idle.is_some())),
        ("sticky.rebound_header", sticky.is_some_and(|s| s.rebound_header.is_some())),
        (
            "sticky.max_in_flight_per_session",
            sticky.is_some_and(|s| s.max_in_flight_per_session.is_some()),
        ),
        ("sticky.first_pick_window", sticky.is_some_and(|s| s.first_pick_window.is_some())),
    ];
    for (key, _) in set.iter().filter(|(_, is_set)| *is_set) {
        let msg = why("an HTTP setting, with no requests to apply it to");
        c.err::<()>(&format!("backends.{name}.{key}"), None, msg);
    }
}

/// `send_proxy` on a backend that HTTP traffic reaches (an HTTP listener's default backend,
/// a route's backend or split side) is an error: it is a TCP setting.
fn send_proxy_only_on_tcp(
    c: &mut Checker,
    listeners: &[Listener],
    routes: &[RawRoute],
    backends: &[Backend],
    tcp: &HashSet<&str>,
) {
    let mut http: BTreeSet<&str> = listeners
        .iter()
        .filter(|l| l.mode == ListenerMode::Http)
        .filter_map(|l| l.default_backend.as_deref())
        .collect();
    for r in routes.iter().filter(|r| r.sni.is_none()) {
        http.extend(r.backend.iter().map(|b| b.get_ref().as_str()));
        let sides = r.split.as_ref().map(|s| s.get_ref().as_slice()).unwrap_or_default();
        http.extend(sides.iter().map(|s| s.backend.get_ref().as_str()));
    }
    for b in backends.iter().filter(|b| b.send_proxy.is_some()) {
        if http.contains(b.name.as_str()) || !tcp.contains(b.name.as_str()) {
            c.err::<()>(
                &format!("backends.{}.send_proxy", b.name),
                None,
                "send_proxy is for backends of TCP listeners only (HTTP servers learn the \
                 client's address from X-Forwarded-For)",
            );
        }
    }
}
