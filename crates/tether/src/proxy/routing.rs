//! Phase 2, routing: the first `[[routes]]` entry whose every match key matches, its
//! rewrites of the request and the response, its split between backends (sticky by a signed
//! cookie), or the answer Tether gives itself (`redirect`, `respond`).

use std::borrow::Cow;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};

use super::body::RespBody;
use super::{ConnCtx, headers};
use crate::config::{HeaderEdits, Part, Route, RouteAction, RouteMatch};
use crate::snapshot::{ListenerView, RouteTarget, RouteView, Snapshot, SplitView};
use crate::upstream::body::ClientBody;

/// The first route that matches the request on `listener`, if any.
pub fn matching<'s>(
    snap: &'s Snapshot,
    listener: &ListenerView,
    req: &Request<ClientBody>,
) -> Option<&'s RouteView> {
    if snap.routes.is_empty() {
        return None;
    }
    let host = headers::request_host(req.uri(), req.headers());
    snap.routes.iter().find(|r| matches(&r.route.matcher, &listener.name, host, req))
}

/// Whether every match key of `m` holds for the request.
fn matches(m: &RouteMatch, listener: &str, host: Option<&str>, req: &Request<ClientBody>) -> bool {
    let path = req.uri().path();
    let host_ok = match (&m.host, host) {
        (None, _) => true,
        (Some(want), Some(h)) => want.matches(h),
        (Some(_), None) => false,
    };
    host_ok
        && m.path_prefix.as_deref().is_none_or(|p| path.starts_with(p))
        && (m.listeners.is_empty() || m.listeners.iter().any(|l| l == listener))
        && (m.methods.is_empty() || m.methods.contains(req.method()))
        && m.headers.iter().all(|(n, v)| req.headers().get_all(n).iter().any(|have| have == v))
        && m.path_regex.as_ref().is_none_or(|r| r.is_match(path))
}

/// What `{placeholders}` stand for in one request.
#[derive(Debug, Default)]
pub struct Vars {
    client_ip: String,
    host: String,
    request_id: String,
    scheme: &'static str,
    path: String,
    query: String,
}

impl Vars {
    /// The values of `req`'s placeholders (`request_id` named by the `[request_id]` header).
    pub fn of(
        req: &Request<ClientBody>,
        ctx: &ConnCtx,
        listener: &ListenerView,
        id: Option<&HeaderName>,
    ) -> Self {
        let client =
            headers::client_ip(ctx.peer.ip(), req.headers(), &listener.conn.trusted_proxies);
        let host = headers::request_host(req.uri(), req.headers()).unwrap_or_default();
        Vars {
            client_ip: client.to_string(),
            host: host.to_owned(),
            request_id: id
                .and_then(|n| req.headers().get(n))
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            scheme: if ctx.https { "https" } else { "http" },
            path: req.uri().path().to_owned(),
            query: req.uri().query().unwrap_or_default().to_owned(),
        }
    }

    fn value(&self, p: &Part) -> Cow<'_, str> {
        match p {
            Part::Text(_) => Cow::Borrowed(""), // written by the template itself
            Part::ClientIp => Cow::Borrowed(&self.client_ip),
            Part::Host => Cow::Borrowed(&self.host),
            Part::RequestId => Cow::Borrowed(&self.request_id),
            Part::Scheme => Cow::Borrowed(self.scheme),
            Part::Path => Cow::Borrowed(&self.path),
            Part::Query => Cow::Borrowed(&self.query),
            Part::PathAndQuery if self.query.is_empty() => Cow::Borrowed(&self.path),
            Part::PathAndQuery => Cow::Owned(format!("{}?{}", self.path, self.query)),
        }
    }
}

/// Applies `edits` to `h`: remove, then set, then add. A value that renders to something no
/// header may carry is skipped.
pub fn edit_headers(edits: &HeaderEdits, vars: &Vars, h: &mut HeaderMap) {
    for n in &edits.remove {
        h.remove(n);
    }
    let render =
        |t: &crate::config::Template| HeaderValue::from_str(&t.render(|p| vars.value(p))).ok();
    for (n, t) in &edits.set {
        if let Some(v) = render(t) {
            h.insert(n.clone(), v);
        }
    }
    for (n, t) in &edits.add {
        if let Some(v) = render(t) {
            h.append(n.clone(), v);
        }
    }
}

/// The route's rewrites of the request: its path (`strip_prefix`, then `add_prefix`) and
/// headers.
pub fn rewrite_request(route: &Route, vars: &Vars, req: &mut Request<ClientBody>) {
    let rw = &route.rewrite;
    if rw.strip_prefix.is_some() || rw.add_prefix.is_some() {
        let path = req.uri().path();
        let stripped =
            rw.strip_prefix.as_deref().and_then(|p| path.strip_prefix(p)).unwrap_or(path);
        let mut new_path = rw.add_prefix.clone().unwrap_or_default();
        if !stripped.starts_with('/') && !new_path.ends_with('/') {
            new_path.push('/');
        }
        new_path.push_str(stripped);
        if let Some(q) = req.uri().query() {
            new_path.push('?');
            new_path.push_str(q);
        }
        let mut parts = req.uri().clone().into_parts();
        if let Ok(pq) = new_path.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    edit_headers(&rw.request_headers, vars, req.headers_mut());
}

/// The answer of a `redirect` or `respond` route.
pub fn local_answer(route: &Route, vars: &Vars) -> Response<RespBody> {
    let (status, body, h) = match &route.action {
        RouteAction::Redirect { location, status } => {
            let loc = HeaderValue::from_str(&location.render(|p| vars.value(p)))
                .unwrap_or_else(|_| HeaderValue::from_static("/"));
            (*status, String::new(), vec![(header::LOCATION, loc)])
        }
        RouteAction::Respond { status, body, content_type } => {
            (*status, body.clone(), vec![(header::CONTENT_TYPE, content_type.clone())])
        }
        _ => (http::StatusCode::NOT_FOUND, String::new(), Vec::new()),
    };
    let mut resp = Response::new(RespBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().extend(h);
    edit_headers(&route.rewrite.response_headers, vars, resp.headers_mut());
    resp
}

/// The side of `split` for this request — the client's own (its valid cookie, while that
/// side's backend has a usable server), else a new pick by weight among the usable sides —
/// and the `Set-Cookie` that keeps a new client there.
pub fn split_side(
    split: &SplitView,
    snap: &Snapshot,
    req: &Request<ClientBody>,
    https: bool,
) -> (usize, Option<HeaderValue>) {
    let usable = |side: usize| {
        snap.backends
            .get(split.sides[side].0)
            .is_some_and(|b| b.servers.iter().any(|s| s.state.accepts_pinned()))
    };
    let own = split.sticky.then(|| cookie_side(split, req)).flatten();
    match own {
        // A side that cannot serve sends its clients elsewhere for now; the cookie stays, so
        // they come back when it recovers.
        Some(side) if usable(side) => (split.sides[side].0, None),
        Some(_) => (split.sides[pick(split, &usable)].0, None),
        None => {
            let side = pick(split, &usable);
            let cookie = split.sticky.then(|| split_cookie(split, side, https)).flatten();
            (split.sides[side].0, cookie)
        }
    }
}

/// A side by weight among those `usable` (all of them when none is).
fn pick(split: &SplitView, usable: &dyn Fn(usize) -> bool) -> usize {
    let candidates = |ok: &dyn Fn(usize) -> bool| -> u64 {
        (0..split.sides.len()).filter(|&i| ok(i)).map(|i| u64::from(split.sides[i].1)).sum()
    };
    let any = |_: usize| true;
    let ok: &dyn Fn(usize) -> bool = if candidates(usable) > 0 { usable } else { &any };
    let mut r = split.rng.below(candidates(ok).max(1));
    for (i, (_, w)) in split.sides.iter().enumerate() {
        if !ok(i) {
            continue;
        }
        if r < u64::from(*w) {
            return i;
        }
        r -= u64::from(*w);
    }
    0
}

/// The side a valid split cookie names.
fn cookie_side(split: &SplitView, req: &Request<ClientBody>) -> Option<usize> {
    headers::cookie_values(req.headers(), &split.cookie).take(4).find_map(|v| {
        let token = split.keys.decode(&split.namespace, v).ok()?;
        split.lookup.get(token.key_index)?.get(&token.server).copied()
    })
}

/// `Set-Cookie` keeping a client on `side`.
fn split_cookie(split: &SplitView, side: usize, https: bool) -> Option<HeaderValue> {
    let now = crate::clock::unix_now_u32();
    let token = split.keys.encode(&split.namespace, *split.tags.get(side)?, 0, now, now);
    let secure = if https { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{}={token}; Path=/; HttpOnly; SameSite=Lax{secure}",
        split.cookie
    ))
    .ok()
}

/// Where routing sends a request on, and what it adds to the response.
#[derive(Debug)]
pub struct Routed<'s> {
    /// Index into [`Snapshot::backends`].
    pub backend: usize,
    /// The route's `response_headers`, with the request's placeholder values.
    response: Option<(&'s Route, Vars)>,
    /// A split's `Set-Cookie` for a client new to it.
    set_cookie: Option<HeaderValue>,
}

/// Phase 2: the backend for the request (rewritten by its route), or Tether's own answer
/// for a `redirect` or `respond` route; `Ok(None)` when nothing routes it.
pub fn route<'s>(
    snap: &'s Snapshot,
    listener: &ListenerView,
    ctx: &ConnCtx,
    req: &mut Request<ClientBody>,
) -> Result<Option<Routed<'s>>, Box<Response<RespBody>>> {
    let Some(view) = matching(snap, listener, req) else {
        return Ok(listener.default_backend.map(|backend| Routed {
            backend,
            response: None,
            set_cookie: None,
        }));
    };
    let r = &view.route;
    let rewrites = r.rewrite.strip_prefix.is_some()
        || r.rewrite.add_prefix.is_some()
        || !r.rewrite.request_headers.is_empty()
        || !r.rewrite.response_headers.is_empty();
    let local = matches!(view.target, RouteTarget::Local);
    let vars =
        (rewrites || local).then(|| Vars::of(req, ctx, listener, snap.config.request_id.as_ref()));
    let (backend, set_cookie) = match &view.target {
        RouteTarget::Local => return Err(Box::new(local_answer(r, &vars.unwrap_or_default()))),
        RouteTarget::Backend(b) => (*b, None),
        RouteTarget::Split(split) => {
            let side = split_side(split, snap, req, ctx.https);
            headers::strip_cookie(req.headers_mut(), &split.cookie);
            side
        }
    };
    let response = vars.map(|vars| {
        rewrite_request(r, &vars, req);
        (r, vars)
    });
    let response = response.filter(|(r, _)| !r.rewrite.response_headers.is_empty());
    Ok(Some(Routed { backend, response, set_cookie }))
}

impl Routed<'_> {
    /// Whether [`Self::finish`] reads or changes the response's headers.
    pub fn edits_response(&self) -> bool {
        self.response.is_some() || self.set_cookie.is_some()
    }

    /// The route's additions to a server's response: its `response_headers`, a split's
    /// cookie.
    pub fn finish(&self, h: &mut HeaderMap) {
        if let Some((route, vars)) = &self.response {
            edit_headers(&route.rewrite.response_headers, vars, h);
        }
        if let Some(c) = &self.set_cookie {
            h.append(header::SET_COOKIE, c.clone());
            headers::make_private(h);
        }
    }
}
