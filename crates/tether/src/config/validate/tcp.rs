//! `mode = "tcp"` listeners: what a byte relay cannot honour is a configuration error, named
//! by its key, rather than a setting silently ignored. A TCP listener needs a
//! `default_backend` (there is no request to route), terminates no TLS (passthrough comes
//! later), is named by no route, and its backend's affinity cannot come from cookies or
//! headers: only `client_ip` (or none) works on bytes.

use super::super::raw::{RawListener, RawRoute};
use super::Checker;
use crate::config::{Backend, Listener, ListenerMode, StickyMode};

/// Checks every TCP listener of `listeners` (validated) against its raw entry, the routes
/// and the backends.
pub(super) fn tcp_listeners(
    c: &mut Checker,
    (raw, listeners): (&[RawListener], &[Listener]),
    routes: &[RawRoute],
    backends: &[Backend],
) {
    for (i, (r, l)) in raw.iter().zip(listeners).enumerate() {
        if l.mode != ListenerMode::Tcp {
            continue;
        }
        let p = |k: &str| format!("listeners[{i}].{k}");
        http_only_keys(c, i, r);
        if r.tls.is_some() {
            c.err::<()>(
                &p("tls"),
                None,
                "a TCP listener terminates no TLS (TLS passthrough is not supported yet)",
            );
        }
        for (j, route) in routes.iter().enumerate() {
            let Some(names) = &route.listeners else { continue };
            if names.get_ref().contains(&l.name) {
                let msg = format!("listener {:?} is a TCP listener: routes are HTTP only", l.name);
                c.err(&format!("routes[{j}].listeners"), Some(names), msg);
            }
        }
        let Some(name) = &l.default_backend else {
            c.err::<()>(&p("default_backend"), None, "a TCP listener needs a default_backend");
            continue;
        };
        let sticky = backends.iter().find(|b| b.name == *name).and_then(|b| b.sticky.as_ref());
        if sticky.is_some_and(|s| !matches!(s.mode, StickyMode::ClientIp { .. })) {
            c.err::<()>(
                &format!("backends.{name}.sticky.mode"),
                None,
                format!(
                    "backend {name:?} serves TCP listener {:?}: TCP has no cookies/headers: \
                     use client_ip",
                    l.name
                ),
            );
        }
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
