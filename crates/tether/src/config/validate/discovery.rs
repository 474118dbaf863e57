//! `[backends.NAME.discovery]`: what is looked up in DNS (`dns` or `srv`, exactly one), how
//! often (`interval`), where (`nameservers`) and what becomes of a server that leaves DNS
//! (`on_removed`).

use std::net::SocketAddr;

use super::super::raw::RawDiscovery;
use super::{Checker, S};
use crate::config::{
    DEFAULT_DISCOVERY_INTERVAL, Discovery, DiscoveryLookup, MIN_DISCOVERY_INTERVAL, OnRemoved,
};

/// The validated section, or `None` (with the errors recorded) when it cannot be used.
pub(super) fn discovery(c: &mut Checker, backend: &str, d: &RawDiscovery) -> Option<Discovery> {
    let p = |k: &str| format!("backends.{backend}.discovery.{k}");
    let lookup = lookup(c, backend, d);
    let interval = interval(c, &p("interval"), d.interval.as_ref());
    let nameservers = match &d.nameservers {
        None => Vec::new(),
        Some(list) => nameservers(c, &p("nameservers"), list),
    };
    let on_removed = c.choice(
        &p("on_removed"),
        d.on_removed.as_ref(),
        OnRemoved::Drain,
        &[("drain", OnRemoved::Drain), ("remove", OnRemoved::Remove)],
    );
    Some(Discovery { lookup: lookup?, interval, nameservers, on_removed })
}

/// `dns` or `srv`: exactly one of them.
fn lookup(c: &mut Checker, backend: &str, d: &RawDiscovery) -> Option<DiscoveryLookup> {
    let p = |k: &str| format!("backends.{backend}.discovery.{k}");
    match (&d.dns, &d.srv) {
        (Some(_), Some(srv)) => {
            c.err(&p("srv"), Some(srv), "give either dns or srv, not both");
            None
        }
        (None, None) => {
            c.err::<()>(
                &format!("backends.{backend}.discovery"),
                None,
                "needs dns = \"HOST:PORT\" (A/AAAA records) or srv = \"_service._proto.NAME\" \
                 (SRV records)",
            );
            None
        }
        (Some(dns), None) => dns_host_port(c, &p("dns"), dns),
        (None, Some(srv)) => srv_name(c, &p("srv"), srv),
    }
}

/// `dns = "HOST:PORT"`: a DNS name and a port other than 0.
fn dns_host_port(c: &mut Checker, path: &str, v: &S) -> Option<DiscoveryLookup> {
    let text = v.get_ref().trim();
    let parsed = text.rsplit_once(':').and_then(|(host, port)| {
        let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
        is_dns_name(host).then(|| DiscoveryLookup::Dns { host: host.to_owned(), port })
    });
    if parsed.is_none() {
        c.err(
            path,
            Some(v),
            format!("invalid value {text:?}; expected HOST:PORT, e.g. \"app.internal:8080\""),
        );
    }
    parsed
}

/// `srv = "_service._proto.NAME"`: a DNS name (no port: the records carry it).
fn srv_name(c: &mut Checker, path: &str, v: &S) -> Option<DiscoveryLookup> {
    let text = v.get_ref().trim();
    if is_dns_name(text) {
        return Some(DiscoveryLookup::Srv(text.to_owned()));
    }
    c.err(
        path,
        Some(v),
        format!("invalid name {text:?}; expected a DNS name like \"_http._tcp.app.internal\""),
    );
    None
}

/// Letters, digits, `-`, `_` and dots, in labels of 1 to 63 characters (a final dot allowed).
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        })
}

/// `interval`: a duration of at least [`MIN_DISCOVERY_INTERVAL`].
fn interval(c: &mut Checker, path: &str, v: Option<&S>) -> std::time::Duration {
    let d = c.duration(path, v, DEFAULT_DISCOVERY_INTERVAL);
    if d < MIN_DISCOVERY_INTERVAL {
        let min = MIN_DISCOVERY_INTERVAL.as_millis();
        c.err(path, v, format!("must be at least {min}ms"));
        return DEFAULT_DISCOVERY_INTERVAL;
    }
    d
}

/// `nameservers`: one `IP:PORT` or more.
fn nameservers(c: &mut Checker, path: &str, list: &[S]) -> Vec<SocketAddr> {
    if list.is_empty() {
        c.err::<()>(
            path,
            None,
            "is empty; list IP:PORT entries, or leave it out to use the system's resolver",
        );
    }
    let mut addrs = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        match v.get_ref().trim().parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 => addrs.push(a),
            _ => c.err(
                &format!("{path}[{i}]"),
                Some(v),
                format!(
                    "invalid nameserver {:?}; expected IP:PORT, e.g. \"10.0.0.2:53\"",
                    v.get_ref()
                ),
            ),
        }
    }
    addrs
}
