//! `[[routes]]`: match keys, rewrites, and exactly one of `backend`, `split`, `redirect`,
//! `respond`.

use std::collections::{BTreeMap, HashSet};

use http::{HeaderName, HeaderValue, Method, StatusCode};
use toml::Spanned;

use super::super::raw::{RawHeaderEdits, RawRedirect, RawRespond, RawRoute, RawSplitSide};
use super::{Checker, S};
use crate::config::{
    HeaderEdits, HostMatch, Rewrite, Route, RouteAction, RouteMatch, SplitSide, Template,
};

/// Default `split_cookie`.
const DEFAULT_SPLIT_COOKIE: &str = "tether_split";

/// Every route, in file order; a route with errors is left out (its errors recorded).
pub(super) fn routes(
    c: &mut Checker,
    raw: &[RawRoute],
    known: (&HashSet<&str>, &HashSet<&str>),
) -> Vec<Route> {
    let routes: Vec<Route> =
        raw.iter().enumerate().filter_map(|(i, r)| route(c, i, r, known)).collect();
    let mut cookies = HashSet::new();
    for (i, r) in raw.iter().enumerate() {
        let name = r.split_cookie.as_ref().map_or(DEFAULT_SPLIT_COOKIE, |n| n.get_ref().as_str());
        if r.split.is_some() && !cookies.insert(name.to_owned()) {
            let msg = format!(
                "split_cookie {name:?} is used by an earlier split route; give each split a cookie of its own"
            );
            c.err(&format!("routes[{i}].split_cookie"), r.split_cookie.as_ref(), msg);
        }
    }
    routes
}

fn route(
    c: &mut Checker,
    i: usize,
    r: &RawRoute,
    (backends, listeners): (&HashSet<&str>, &HashSet<&str>),
) -> Option<Route> {
    if r.sni.is_some() {
        return None; // TLS passthrough on TCP listeners: checked with them (`tcp`).
    }
    let p = |k: &str| format!("routes[{i}].{k}");
    let errors = c.errors.len();
    let matcher = RouteMatch {
        host: r.host.as_ref().and_then(|h| host(c, &p("host"), h)),
        path_prefix: r.path_prefix.as_ref().map(|v| path(c, &p("path_prefix"), v)),
        path_regex: r.path_regex.as_ref().and_then(|v| regex(c, &p("path_regex"), v)),
        listeners: names(c, &p("listeners"), r.listeners.as_ref(), listeners, "listener"),
        methods: methods(c, &p("methods"), r.methods.as_ref()),
        headers: exact_headers(c, &p("headers"), r.headers.as_ref()),
    };
    let rewrite = Rewrite {
        strip_prefix: r.strip_prefix.as_ref().map(|v| path(c, &p("strip_prefix"), v)),
        add_prefix: r.add_prefix.as_ref().map(|v| path(c, &p("add_prefix"), v)),
        request_headers: edits(c, &p("request_headers"), r.request_headers.as_ref()),
        response_headers: edits(c, &p("response_headers"), r.response_headers.as_ref()),
    };
    let action = action(c, i, r, backends)?;
    (c.errors.len() == errors).then_some(Route { matcher, rewrite, action })
}

/// Exactly one of `backend`, `split`, `redirect`, `respond`.
fn action(
    c: &mut Checker,
    i: usize,
    r: &RawRoute,
    backends: &HashSet<&str>,
) -> Option<RouteAction> {
    let p = |k: &str| format!("routes[{i}].{k}");
    let given = [r.backend.is_some(), r.split.is_some(), r.redirect.is_some(), r.respond.is_some()];
    if given.iter().filter(|g| **g).count() != 1 {
        c.err::<()>(
            &p("backend"),
            None,
            "a route needs exactly one of: backend, split, redirect, respond",
        );
        return None;
    }
    if r.split.is_none() && (r.sticky_split.is_some() || r.split_cookie.is_some()) {
        c.err::<()>(
            &p("sticky_split"),
            None,
            "sticky_split and split_cookie are only used with split",
        );
    }
    if let Some(b) = &r.backend {
        return known_backend(c, &p("backend"), b, backends).map(RouteAction::Backend);
    }
    if let Some(sides) = &r.split {
        return split(c, i, r, sides, backends);
    }
    if let Some(redirect) = &r.redirect {
        return redirect_action(c, &p("redirect"), redirect);
    }
    r.respond.as_ref().and_then(|x| respond_action(c, &p("respond"), x))
}

pub(super) fn known_backend(
    c: &mut Checker,
    path: &str,
    b: &S,
    backends: &HashSet<&str>,
) -> Option<String> {
    if backends.contains(b.get_ref().as_str()) {
        return Some(b.get_ref().clone());
    }
    c.err(path, Some(b), format!("unknown backend {:?}", b.get_ref()));
    None
}

fn split(
    c: &mut Checker,
    i: usize,
    r: &RawRoute,
    sides: &Spanned<Vec<RawSplitSide>>,
    backends: &HashSet<&str>,
) -> Option<RouteAction> {
    let p = |k: &str| format!("routes[{i}].{k}");
    let mut out = Vec::new();
    for (j, s) in sides.get_ref().iter().enumerate() {
        let backend = known_backend(c, &p(&format!("split[{j}].backend")), &s.backend, backends);
        let weight = *s.weight.get_ref();
        if !(0..=1_000_000).contains(&weight) {
            c.err(&p(&format!("split[{j}].weight")), Some(&s.weight), "expected 0 to 1000000");
        }
        out.extend(
            backend.map(|backend| SplitSide { backend, weight: weight.clamp(0, 1_000_000) as u32 }),
        );
    }
    if sides.get_ref().len() < 2 || out.iter().all(|s| s.weight == 0) {
        c.err(&p("split"), Some(sides), "a split needs at least two sides and a weight above 0");
    }
    let cookie = r.split_cookie.as_ref().map_or(DEFAULT_SPLIT_COOKIE.to_owned(), |n| {
        let ok = !n.get_ref().is_empty()
            && n.get_ref()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !ok {
            c.err(
                &p("split_cookie"),
                Some(n),
                "invalid cookie name: use letters, digits and !#$%&'*+-.^_`|~",
            );
        }
        n.get_ref().clone()
    });
    Some(RouteAction::Split { sides: out, sticky: r.sticky_split.unwrap_or(true), cookie })
}

fn redirect_action(c: &mut Checker, path: &str, r: &RawRedirect) -> Option<RouteAction> {
    let location = template(c, &format!("{path}.location"), &r.location)?;
    let status = match r.status.as_ref().map(|s| *s.get_ref()) {
        None => StatusCode::PERMANENT_REDIRECT,
        Some(n @ (301 | 302 | 303 | 307 | 308)) => StatusCode::from_u16(n as u16).ok()?,
        Some(_) => {
            c.err(
                &format!("{path}.status"),
                r.status.as_ref(),
                "expected one of 301, 302, 303, 307, 308",
            );
            return None;
        }
    };
    Some(RouteAction::Redirect { location, status })
}

fn respond_action(c: &mut Checker, path: &str, r: &RawRespond) -> Option<RouteAction> {
    let status = match u16::try_from(*r.status.get_ref()).ok().filter(|n| (200..=599).contains(n)) {
        Some(n) => StatusCode::from_u16(n).ok()?,
        None => {
            c.err(&format!("{path}.status"), Some(&r.status), "expected a status from 200 to 599");
            return None;
        }
    };
    let content_type = r
        .content_type
        .as_ref()
        .map_or(Some(HeaderValue::from_static("text/plain; charset=utf-8")), |t| {
            header_value(c, &format!("{path}.content_type"), t)
        })?;
    let body = r.body.as_ref().map_or(String::new(), |b| b.get_ref().clone());
    Some(RouteAction::Respond { status, body, content_type })
}

pub(super) fn host(c: &mut Checker, path: &str, h: &S) -> Option<HostMatch> {
    let s = h.get_ref().trim().to_ascii_lowercase();
    let valid = |n: &str| {
        !n.is_empty() && n.chars().all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '.'))
    };
    match s.strip_prefix("*.") {
        Some(rest) if valid(rest) => Some(HostMatch::Suffix(format!(".{rest}"))),
        None if valid(&s) => Some(HostMatch::Exact(s)),
        _ => {
            let msg = format!(
                "invalid host {:?}; expected a name like \"api.example.com\" or \"*.example.com\"",
                h.get_ref()
            );
            c.err(path, Some(h), msg);
            None
        }
    }
}

fn path(c: &mut Checker, key: &str, v: &S) -> String {
    if !v.get_ref().starts_with('/') {
        c.err(key, Some(v), "must start with '/'");
    }
    v.get_ref().clone()
}

fn regex(c: &mut Checker, path: &str, v: &S) -> Option<regex::Regex> {
    match regex::Regex::new(v.get_ref()) {
        Ok(r) => Some(r),
        Err(e) => {
            c.err(path, Some(v), format!("invalid regular expression: {e}"));
            None
        }
    }
}

fn names(
    c: &mut Checker,
    path: &str,
    v: Option<&Spanned<Vec<String>>>,
    known: &HashSet<&str>,
    what: &str,
) -> Vec<String> {
    let Some(v) = v else { return Vec::new() };
    for n in v.get_ref() {
        if !known.contains(n.as_str()) {
            c.err(path, Some(v), format!("unknown {what} {n:?}"));
        }
    }
    v.get_ref().clone()
}

fn methods(c: &mut Checker, path: &str, v: Option<&Spanned<Vec<String>>>) -> Vec<Method> {
    let Some(v) = v else { return Vec::new() };
    let mut out = Vec::new();
    for m in v.get_ref() {
        match Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes()) {
            Ok(method) => out.push(method),
            Err(_) => c.err(path, Some(v), format!("invalid method {m:?}")),
        }
    }
    out
}

fn header_name(
    c: &mut Checker,
    path: &str,
    at: &Spanned<impl Sized>,
    n: &str,
) -> Option<HeaderName> {
    match HeaderName::from_bytes(n.trim().as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            c.err(path, Some(at), format!("invalid header name {n:?}"));
            None
        }
    }
}

fn header_value(c: &mut Checker, path: &str, v: &S) -> Option<HeaderValue> {
    match HeaderValue::from_str(v.get_ref()) {
        Ok(h) => Some(h),
        Err(_) => {
            c.err(path, Some(v), format!("invalid header value {:?}", v.get_ref()));
            None
        }
    }
}

fn exact_headers(
    c: &mut Checker,
    path: &str,
    v: Option<&Spanned<BTreeMap<String, String>>>,
) -> Vec<(HeaderName, HeaderValue)> {
    let Some(v) = v else { return Vec::new() };
    let mut out = Vec::new();
    for (n, val) in v.get_ref() {
        let name = header_name(c, path, v, n);
        let value = HeaderValue::from_str(val).ok();
        if value.is_none() {
            c.err(path, Some(v), format!("invalid header value {val:?} for {n:?}"));
        }
        out.extend(name.zip(value));
    }
    out
}

fn edits(c: &mut Checker, path: &str, v: Option<&RawHeaderEdits>) -> HeaderEdits {
    let Some(v) = v else { return HeaderEdits::default() };
    let mut templates = |key: &str, m: Option<&Spanned<BTreeMap<String, String>>>| {
        let mut out = Vec::new();
        let Some(m) = m else { return out };
        let at = format!("{path}.{key}");
        for (n, t) in m.get_ref() {
            let name = header_name(c, &at, m, n);
            let parsed = Template::parse(t).map_err(|e| c.err(&at, Some(m), format!("{n}: {e}")));
            out.extend(name.zip(parsed.ok()));
        }
        out
    };
    let set = templates("set", v.set.as_ref());
    let add = templates("add", v.add.as_ref());
    let remove = v.remove.as_ref().map_or(Vec::new(), |r| {
        let at = format!("{path}.remove");
        r.get_ref().iter().filter_map(|n| header_name(c, &at, r, n)).collect()
    });
    HeaderEdits { set, add, remove }
}

fn template(c: &mut Checker, path: &str, v: &S) -> Option<Template> {
    Template::parse(v.get_ref()).map_err(|e| c.err(path, Some(v), e)).ok()
}
