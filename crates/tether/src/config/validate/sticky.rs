//! A backend's `sticky` table: the affinity mode, then the attributes of Tether's cookie and
//! what to do when the pinned server is down or full.

use std::time::Duration;

use tether_core::affinity::Expiry;
use toml::Spanned;

use super::super::raw::RawSticky;
use super::{Checker, S};
use crate::config::{
    DEFAULT_COOKIE_NAME, DEFAULT_FIRST_PICK_WINDOW, DEFAULT_STICKY_IDLE, DEFAULT_STICKY_LIFETIME,
    MAX_FIRST_PICK_WINDOW, OnServerDown, OnServerFull, SameSite, Secure, Sticky, StickyMode,
};

/// The affinity of the backend at `path`, or `None` for `mode = "none"` and for a mode that is
/// not valid (its errors recorded, the other keys left unchecked).
pub(super) fn sticky(c: &mut Checker, path: &str, s: &RawSticky) -> Option<Sticky> {
    let p = |k: &str| format!("{path}.{k}");
    let mode = mode(c, path, s)?;
    let cookie_name = s.cookie_name.as_ref().map_or(DEFAULT_COOKIE_NAME.to_owned(), |n| {
        cookie_token(c, &p("cookie_name"), n);
        n.get_ref().clone()
    });
    let expiry = expiry(c, path, s);
    let same_site = c.choice(
        &p("same_site"),
        s.same_site.as_ref(),
        SameSite::Lax,
        &[("lax", SameSite::Lax), ("strict", SameSite::Strict), ("none", SameSite::None)],
    );
    let secure = secure(c, &p("secure"), s.secure.as_ref());
    let domain =
        s.domain.as_ref().map(|d| cookie_attribute(c, &p("domain"), d)).filter(|d| !d.is_empty());
    let cookie_path =
        s.path.as_ref().map_or("/".to_owned(), |v| cookie_attribute(c, &p("path"), v));
    let on_server_down = c.choice(
        &p("on_server_down"),
        s.on_server_down.as_ref(),
        OnServerDown::Redispatch,
        &[("redispatch", OnServerDown::Redispatch), ("fail", OnServerDown::Fail)],
    );
    let max_age =
        s.max_age.as_ref().map(|m| c.duration(&p("max_age"), Some(m), DEFAULT_STICKY_IDLE));
    let on_server_full = on_server_full(c, &p("on_server_full"), s.on_server_full.as_ref());
    let rebound_header =
        s.rebound_header.as_ref().and_then(|h| rebound_header(c, &p("rebound_header"), h));
    let max_in_flight_per_session = super::int_in(
        c,
        &p("max_in_flight_per_session"),
        s.max_in_flight_per_session.as_ref(),
        0,
        1..=1_000_000,
    );
    let (first_pick_window, first_pick_across_connections) = first_pick(c, path, s, &mode);
    Some(Sticky {
        first_pick_window,
        first_pick_across_connections,
        rebound_header,
        max_in_flight_per_session,
        on_server_full,
        mode,
        max_age,
        cookie_name,
        expiry,
        same_site,
        secure,
        http_only: s.http_only.unwrap_or(true),
        domain,
        path: cookie_path,
        on_server_down,
    })
}

/// `mode` (default `cookie`) with the keys it needs; `None` for `"none"` and on error.
fn mode(c: &mut Checker, path: &str, s: &RawSticky) -> Option<StickyMode> {
    let p = |k: &str| format!("{path}.{k}");
    match mode_name(s) {
        "none" => None,
        "cookie" => Some(StickyMode::Cookie),
        "client_ip" => Some(StickyMode::ClientIp {
            v4: prefix(c, &p("client_ip_prefix_v4"), s.client_ip_prefix_v4.as_ref(), 32),
            v6: prefix(c, &p("client_ip_prefix_v6"), s.client_ip_prefix_v6.as_ref(), 128),
        }),
        "header" => header_mode(c, path, s),
        "app_cookie" => {
            let n = required(c, path, s, "app_cookie", s.app_cookie.as_ref())?;
            cookie_token(c, &p("app_cookie"), n);
            Some(StickyMode::AppCookie(n.get_ref().clone()))
        }
        other => {
            let msg = format!(
                "unknown value {other:?}; expected one of: none | cookie | client_ip | header | app_cookie"
            );
            c.err(&p("mode"), s.mode.as_ref(), msg);
            None
        }
    }
}

fn mode_name(s: &RawSticky) -> &str {
    s.mode.as_ref().map_or("cookie", |m| m.get_ref().as_str())
}

/// `key`'s value `v`, or an error (at `mode`) saying that the mode needs it.
fn required<'a>(
    c: &mut Checker,
    path: &str,
    s: &RawSticky,
    key: &str,
    v: Option<&'a S>,
) -> Option<&'a S> {
    if v.is_none() {
        let msg = format!("mode {:?} needs `{key}`", mode_name(s));
        c.err(&format!("{path}.{key}"), s.mode.as_ref(), msg);
    }
    v
}

/// `mode = "header"`: the request header whose value is the affinity key.
fn header_mode(c: &mut Checker, path: &str, s: &RawSticky) -> Option<StickyMode> {
    let h = required(c, path, s, "header", s.header.as_ref())?;
    match http::HeaderName::from_bytes(h.get_ref().trim().as_bytes()) {
        Ok(name) => Some(StickyMode::Header(name)),
        Err(_) => {
            let msg = format!("invalid header name {:?}", h.get_ref());
            c.err(&format!("{path}.header"), Some(h), msg);
            None
        }
    }
}

/// `first_pick_window` (default 2 s, `"0s"` off, at most a minute) and
/// `first_pick_across_connections`: cookie mode only (table modes converge by hashing).
fn first_pick(c: &mut Checker, path: &str, s: &RawSticky, mode: &StickyMode) -> (Duration, bool) {
    let p = |k: &str| format!("{path}.{k}");
    let cookie = *mode == StickyMode::Cookie;
    if !cookie {
        if let Some(w) = &s.first_pick_window {
            c.err(&p("first_pick_window"), Some(w), "only used with mode = \"cookie\"");
        }
        if let Some(a) = &s.first_pick_across_connections {
            c.err(&p("first_pick_across_connections"), Some(a), "only used with mode = \"cookie\"");
        }
        return (Duration::ZERO, false);
    }
    let window = match &s.first_pick_window {
        Some(w) if humantime::parse_duration(w.get_ref().trim()).is_ok_and(|d| d.is_zero()) => {
            Duration::ZERO
        }
        w => c.duration(&p("first_pick_window"), w.as_ref(), DEFAULT_FIRST_PICK_WINDOW),
    };
    if window > MAX_FIRST_PICK_WINDOW {
        c.err(
            &p("first_pick_window"),
            s.first_pick_window.as_ref(),
            "at most \"60s\": it covers the parallel requests of one page load",
        );
    }
    let across = s.first_pick_across_connections.as_ref().is_some_and(|a| *a.get_ref());
    (window.min(MAX_FIRST_PICK_WINDOW), across)
}

/// Headers Tether writes or frames requests with: none of them can carry the rebound notice.
const MANAGED_HEADERS: [&str; 12] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "cookie",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// `rebound_header`: a valid header name that Tether does not already manage.
fn rebound_header(c: &mut Checker, path: &str, h: &S) -> Option<http::HeaderName> {
    let Ok(name) = http::HeaderName::from_bytes(h.get_ref().trim().as_bytes()) else {
        c.err(path, Some(h), format!("invalid header name {:?}", h.get_ref()));
        return None;
    };
    let managed = MANAGED_HEADERS.contains(&name.as_str())
        || name.as_str().starts_with("proxy-")
        || name.as_str().starts_with("keep-alive");
    if managed {
        c.err(path, Some(h), format!("{name:?} is a header Tether manages; choose a name of its own, e.g. \"X-Tether-Rebound\""));
        return None;
    }
    Some(name)
}

/// `idle_timeout` and `max_lifetime`, in whole seconds (saturating at `u32::MAX`).
/// Sessions are timed in whole seconds (cookies and tables store Unix seconds), so anything
/// shorter than a second would read as 0 — which means "no bound" — and is refused.
fn expiry(c: &mut Checker, path: &str, s: &RawSticky) -> Expiry {
    let mut secs = |key: &str, v: Option<&S>, default: Duration| {
        let d = c.duration(&format!("{path}.{key}"), v, default);
        if d < Duration::from_secs(1) {
            let msg = "at least \"1s\": sessions are timed in whole seconds";
            c.err(&format!("{path}.{key}"), v, msg);
            return u32::try_from(default.as_secs()).unwrap_or(u32::MAX);
        }
        u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
    };
    let idle_timeout = secs("idle_timeout", s.idle_timeout.as_ref(), DEFAULT_STICKY_IDLE);
    let max_lifetime = secs("max_lifetime", s.max_lifetime.as_ref(), DEFAULT_STICKY_LIFETIME);
    Expiry { idle_timeout, max_lifetime }
}

/// `secure`: `"auto"` (the default), `true` or `false`.
fn secure(c: &mut Checker, path: &str, v: Option<&Spanned<toml::Value>>) -> Secure {
    let Some(v) = v else { return Secure::Auto };
    match v.get_ref() {
        toml::Value::Boolean(true) => Secure::Always,
        toml::Value::Boolean(false) => Secure::Never,
        toml::Value::String(a) if a == "auto" => Secure::Auto,
        _ => {
            c.err(path, Some(v), "expected \"auto\", true or false");
            Secure::Auto
        }
    }
}

/// A `Domain` or `Path` attribute: nothing that would end the attribute or split the header.
fn cookie_attribute(c: &mut Checker, path: &str, v: &S) -> String {
    if v.get_ref().bytes().any(|b| b.is_ascii_control() || b == b';' || b == b' ') {
        c.err(path, Some(v), "must not contain spaces, ';' or control characters");
    }
    v.get_ref().clone()
}

/// `on_server_full`: `queue` (the default), `spill` or `redispatch`.
fn on_server_full(c: &mut Checker, path: &str, v: Option<&S>) -> OnServerFull {
    c.choice(
        path,
        v,
        OnServerFull::Queue,
        &[
            ("queue", OnServerFull::Queue),
            ("spill", OnServerFull::Spill),
            ("redispatch", OnServerFull::Redispatch),
        ],
    )
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
