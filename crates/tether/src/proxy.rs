//! The request path: route → affinity → choose a server → forward → response.
//!
//! Per request: one snapshot load, one route scan, at most one cookie verification, one
//! balancer pick (more only when a connect fails), and the forwarded request streams its body
//! both ways. Connect failures are retried on another server only when the request has no
//! body (nothing to replay); everything else answers once, with the status chosen in
//! [`error::ProxyError::status`].

pub mod affinity;
pub mod body;
pub mod error;
pub mod framing;
pub mod headers;
pub mod log;
mod select;
mod upgrade;

use std::net::SocketAddr;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{CaptureConnection, capture_connection};
use tether_core::framing::Finding;

use self::affinity::{Outcome, Pin};
use self::body::Held;
use self::body::RespBody;
use self::error::ProxyError;
use self::log::AccessLog;
use self::select::{MAX_CONNECT_ATTEMPTS, Tried};
use crate::upstream::body::ReqBody;

use crate::config::{HostMatch, RateKey, StickyMode};
use crate::health;
use crate::metrics::RequestRefusal;
use crate::snapshot::{BackendView, ListenerView, Snapshot};

/// What the data path knows about the client connection.
#[derive(Debug)]
pub struct ConnCtx {
    /// Index of the listener in the snapshot.
    pub listener: usize,
    /// The socket peer.
    pub peer: SocketAddr,
    /// The peer's address as the forwarding headers write it.
    pub peer_headers: headers::PeerHeaders,
    /// Whether the client-facing connection is TLS.
    pub https: bool,
    /// The client certificate, on listeners that ask for one.
    pub client_cert: ClientCert,
    /// HTTP/1 requests seen on the connection so far.
    pub requests: std::sync::atomic::AtomicU64,
    /// The first [`Finding`] of the connection's head scan, encoded (`u64::MAX`: none): a
    /// head with both `Content-Length` and `Transfer-Encoding` (hyper drops the length
    /// before Tether sees it), or one with an unknown coding (renamed so that hyper passes it
    /// on instead of answering `400` itself).
    pub wire_finding: std::sync::atomic::AtomicU64,
    /// The HTTP/1 request in progress asked to close the connection after its response
    /// (`Connection: close`, or HTTP/1.0 without keep-alive): the client's end of input
    /// is then a half-close, not an abort (see [`headers::asks_to_close`]).
    pub closing_request: std::sync::atomic::AtomicBool,
    /// Held by every tunnel started on the connection, so that a graceful shutdown waits
    /// for tunnels as it waits for connections (up to `grace_period`).
    pub drain_token: tokio::sync::mpsc::Sender<()>,
}

impl ConnCtx {
    /// Context of a new connection; `drain_token` is the connection's drain token.
    pub fn new(
        listener: usize,
        peer: SocketAddr,
        https: bool,
        drain_token: tokio::sync::mpsc::Sender<()>,
    ) -> Self {
        Self {
            drain_token,
            listener,
            peer,
            peer_headers: headers::PeerHeaders::new(peer.ip()),
            https,
            client_cert: ClientCert::NotAsked,
            requests: std::sync::atomic::AtomicU64::new(0),
            wire_finding: std::sync::atomic::AtomicU64::new(u64::MAX),
            closing_request: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// What a listener with `tls.client_ca` learned of the client's certificate; the servers
/// are told in `X-Client-Cert-Verified` and `X-Client-Cert-Subject`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCert {
    /// The listener asks for none: the headers are left as the client sent them.
    NotAsked,
    /// Asked for, none sent (`client_auth = "optional"`).
    None,
    /// Verified; its subject as a header value (`None` when the subject is not one).
    Verified(Option<HeaderValue>),
}

/// Serves one request against `snap`; never fails (errors become small plain-text answers).
pub async fn handle(snap: &Snapshot, ctx: &ConnCtx, req: Request<Incoming>) -> Response<RespBody> {
    let Some(listener) = snap.listeners.get(ctx.listener) else {
        return ProxyError::NoRoute.response();
    };
    let log = snap.config.access_log.then(|| {
        let mut log = Box::new(AccessLog::new(
            listener.name.clone(),
            ctx.peer.ip(),
            req.method().clone(),
            req.uri().path(),
        ));
        if let ClientCert::Verified(subject) = &ctx.client_cert {
            log.client_cert.clone_from(subject);
        }
        log
    });
    let mut pending = Unanswered { log, server: None, listener: ctx.listener, answered: false };
    let arrived = Instant::now();
    let resp = match forward(snap, listener, ctx, req, arrived, &mut pending).await {
        Ok(resp) => resp,
        Err(e) => e.response(),
    };
    let log = pending.answered(resp.status());
    resp.map(|b| b.with_log(log))
}

/// A request whose response head is not ready yet. Dropped unanswered — the client went
/// away (its HTTP/1 connection closed, its HTTP/2 stream reset) and the request's future
/// with it — it writes the access-log line with status 499 and `complete=false` (NGINX's
/// "client closed request") and counts a 499 for the server the request was at.
struct Unanswered<'s> {
    log: Option<Box<AccessLog>>,
    /// The server of the current attempt.
    server: Option<&'s crate::metrics::ServerMetrics>,
    listener: usize,
    answered: bool,
}

/// The status logged and counted for a request whose client left before its answer.
const CLIENT_CLOSED_REQUEST: u16 = 499;

impl Unanswered<'_> {
    fn log(&mut self) -> Option<&mut AccessLog> {
        self.log.as_deref_mut()
    }

    /// The response head exists: the log record goes on with the response body.
    fn answered(mut self, status: StatusCode) -> Option<Box<AccessLog>> {
        self.answered = true;
        let mut log = self.log.take();
        if let Some(l) = log.as_mut() {
            l.status = status.as_u16();
        }
        log
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        if let Some(server) = self.server {
            server.request(self.listener, CLIENT_CLOSED_REQUEST);
        }
        if let Some(log) = self.log.as_mut() {
            log.status = CLIENT_CLOSED_REQUEST;
            log.emit();
        }
    }
}

async fn forward<'s>(
    snap: &'s Snapshot,
    listener: &ListenerView,
    ctx: &ConnCtx,
    mut req: Request<Incoming>,
    arrived: Instant,
    pending: &mut Unanswered<'s>,
) -> Result<Response<RespBody>, ProxyError> {
    let (method, version) = (req.method().clone(), req.version());
    if method == http::Method::CONNECT {
        // A reverse proxy opens no tunnel to an address of the client's choosing (HTTP/1.1
        // or HTTP/2): refused before a server is chosen, so no server is blamed.
        listener.conn.metrics.request_refused(RequestRefusal::Method);
        return Err(ProxyError::NotForwardable("CONNECT is not supported".to_owned()));
    }
    if version < Version::HTTP_2 {
        let index = ctx.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let found = Finding::decode(ctx.wire_finding.load(std::sync::atomic::Ordering::Relaxed));
        if let Some(found) = found.filter(|f| f.index() == index) {
            listener.conn.metrics.request_refused(RequestRefusal::Framing);
            return Err(match found {
                Finding::BothFramings(_) => {
                    ProxyError::Framing("both Transfer-Encoding and Content-Length")
                }
                Finding::UnknownCoding(_) => ProxyError::UnknownCoding,
            });
        }
    }
    framing::check(&method, version, req.headers_mut()).inspect_err(|_| {
        listener.conn.metrics.request_refused(RequestRefusal::Framing);
    })?;
    if req.headers().len() > listener.conn.limits.max_headers {
        listener.conn.metrics.request_refused(RequestRefusal::Framing);
        return Err(ProxyError::TooManyHeaders);
    }
    let max_body = listener.conn.limits.max_body_bytes;
    if max_body > 0 && framing::content_length(req.headers()).is_some_and(|n| n > max_body) {
        listener.conn.metrics.request_refused(RequestRefusal::BodyTooLarge);
        return Err(ProxyError::BodyTooLarge);
    }
    let backend = &snap.backends[route(snap, listener, &req).ok_or(ProxyError::NoRoute)?];
    if let Some(l) = pending.log() {
        l.backend = Some(backend.name.clone());
    }
    let now = crate::clock::unix_now_u32();
    // The session's identity for `rate_limit.key = "affinity"`: a valid cookie, or the
    // table key.
    let mut session: Option<u128> = None;
    let pin = match backend.sticky.as_ref().map(|s| (s, &s.config.mode)) {
        None => None,
        Some((s, StickyMode::Cookie)) => {
            let values = headers::cookie_values(req.headers(), &s.config.cookie_name);
            let (pin, used) = affinity::read_cookie_pin(s, &backend.name, values, now);
            session = used.map(|v| backend.hasher.hash(v.as_bytes()));
            Some(pin)
        }
        Some((_, mode)) => {
            let client =
                headers::client_ip(ctx.peer.ip(), req.headers(), &listener.conn.trusted_proxies);
            let pin = affinity::read_table_pin(backend, mode, req.headers(), client, now).await;
            session = pin.key;
            Some(pin)
        }
    };
    if listener.rate.is_some() || backend.rate.is_some() {
        rate_limit(listener, backend, ctx, &req, session)?;
    }
    let upgrade = req.version() == Version::HTTP_11 && headers::wants_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    prepare_headers(&mut parts, listener, ctx, backend, upgrade);
    // A request without a body can be replayed on another server if a connect fails.
    let replayable = body.is_end_stream();
    let (mut body, mut body_sent) = if replayable {
        (None, None)
    } else {
        let (b, sent) = ReqBody::streaming(body, listener.body_timeout, max_body);
        (Some(b), Some(sent))
    };
    // Idempotent, bodiless requests may also be retried after a 502/503/504 or a timeout
    // before the response head, within `retry.attempts` and the retry budget.
    let idempotent = replayable && parts.method.is_idempotent();
    backend.budget.deposit();
    let mut tried = Tried::default();
    loop {
        let pick = select::choose(backend, pin.as_ref(), &tried)?;
        let idx = pick.server;
        tried.push(idx);
        let server = &backend.servers[idx];
        let permit = select::admit(backend, pick).await?;
        pending.server = Some(&server.metrics);
        if let Some(l) = pending.log() {
            l.server = Some(server.state.name_arc().clone());
            l.attempts += 1;
        }
        let request =
            upstream_request(&parts, backend, server, body.take().unwrap_or(ReqBody::Empty));
        let guard = Held { guard: server.state.begin(), permit };
        let sent = Instant::now();
        let result = send(backend, server, request, body_sent.take()).await;
        let may_retry = |tried: &Tried| {
            idempotent
                && tried.len() < backend.retry.attempts as usize
                && select::has_alternative(backend, tried)
                && backend.budget.try_withdraw()
        };
        let err = match result {
            Ok(resp) => {
                let status = resp.status();
                let failed = error::response_blames_server(status);
                health::observe(backend, idx, !failed);
                if failed {
                    server.state.record_error();
                }
                let retryable = matches!(status.as_u16(), 502..=504);
                if retryable && may_retry(&tried) {
                    tracing::debug!(backend = %backend.name, server = %server.state.name(), status = status.as_u16(), "retrying on another server");
                    server.metrics.request(ctx.listener, status.as_u16());
                    backend.metrics.retry();
                    continue;
                }
                let upstream_time = sent.elapsed();
                server.state.record_latency(upstream_time.as_micros() as u64);
                if let Some(l) = pending.log() {
                    l.upstream_time = Some(upstream_time);
                }
                server.metrics.request(ctx.listener, status.as_u16());
                backend.metrics.duration(ctx.listener, arrived.elapsed().as_secs_f64());
                return Ok(finish(
                    backend,
                    pin,
                    pick,
                    now,
                    ctx,
                    resp,
                    guard,
                    client_upgrade,
                    pending.log(),
                ));
            }
            Err(e) => e,
        };
        if let ProxyError::BodyTooLarge = err {
            listener.conn.metrics.request_refused(RequestRefusal::BodyTooLarge);
        }
        if let Some(kind) = err.metric_kind() {
            server.state.record_error();
            server.metrics.error(kind);
            health::observe(backend, idx, false);
        }
        // Nothing was sent on a failed connect: always safe to try elsewhere. Anything else
        // only for idempotent requests, within the budget.
        let retry = match err {
            ProxyError::Connect(_) => {
                replayable && tried.len() < backend.servers.len().min(MAX_CONNECT_ATTEMPTS)
            }
            ProxyError::Timeout | ProxyError::Upstream(_) => may_retry(&tried),
            _ => false,
        };
        tracing::warn!(
            backend = %backend.name,
            server = %server.state.name(),
            error = %err,
            retry,
            "upstream request failed"
        );
        if !retry {
            server.metrics.request(ctx.listener, err.status().as_u16());
            return Err(err);
        }
        backend.metrics.retry();
    }
}

/// Applies the listener's and the backend's `rate_limit` to this request's client.
fn rate_limit(
    listener: &ListenerView,
    backend: &BackendView,
    ctx: &ConnCtx,
    req: &Request<Incoming>,
    session: Option<u128>,
) -> Result<(), ProxyError> {
    let ip = headers::client_ip(ctx.peer.ip(), req.headers(), &listener.conn.trusted_proxies);
    let ip_key: &[u8] = &match ip {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(v6) => v6.octets(),
    };
    let session_key = session.map(u128::to_le_bytes);
    for limiter in [&listener.rate, &backend.rate].into_iter().flatten() {
        let key = match (limiter.key(), &session_key) {
            (RateKey::Affinity, Some(k)) => &k[..],
            _ => ip_key,
        };
        if let Err(wait) = limiter.check(&backend.hasher, key) {
            listener.conn.metrics.request_refused(RequestRefusal::RateLimited);
            return Err(ProxyError::RateLimited { wait, close: !req.body().is_end_stream() });
        }
    }
    Ok(())
}

/// Turns a server's response into the client's: a 101 starts the tunnel; anything else
/// streams back with the affinity outcome applied.
#[allow(clippy::too_many_arguments)]
fn finish(
    backend: &BackendView,
    pin: Option<Pin>,
    pick: select::Pick,
    now: u32,
    ctx: &ConnCtx,
    mut resp: Response<Incoming>,
    guard: Held,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    log: Option<&mut AccessLog>,
) -> Response<RespBody> {
    if let (Some(cu), StatusCode::SWITCHING_PROTOCOLS) = (client_upgrade, resp.status()) {
        let held = (guard, ctx.drain_token.clone());
        upgrade::tunnel(cu, hyper::upgrade::on(&mut resp), held);
        let (mut rp, _) = resp.into_parts();
        headers::strip_hop_by_hop(&mut rp.headers, true);
        return Response::from_parts(rp, RespBody::empty());
    }
    let resp = resp.map(|b| RespBody::upstream(b, guard));
    respond(backend, pin, pick, now, ctx.https, resp, log)
}

/// Sends one attempt. The response timeout starts once the request body has been sent whole
/// (uploads may take as long as they need while they keep moving; a stalled one fails on the
/// listener's body timeout instead). A response that breaks the response-framing policy is
/// an upstream error ([`framing::check_response`]).
async fn send(
    backend: &BackendView,
    server: &crate::snapshot::ServerView,
    mut request: Request<ReqBody>,
    body_sent: Option<tokio::sync::oneshot::Receiver<()>>,
) -> Result<Response<Incoming>, ProxyError> {
    let client = server.client.as_ref().unwrap_or(&backend.client);
    // HTTP/1.1: kept to retire the connection when the response's framing is suspect.
    let conn = (!backend.client_http2).then(|| capture_connection(&mut request));
    let mut response = std::pin::pin!(client.request(request));
    let mut early = None;
    if let Some(sent) = body_sent {
        tokio::select! {
            r = &mut response => early = Some(r),
            _ = sent => {}
        }
    }
    let result = match early {
        Some(r) => r,
        None => match tokio::time::timeout(backend.response_timeout, response).await {
            Ok(r) => r,
            Err(_) => return Err(ProxyError::Timeout),
        },
    };
    let mut resp = result.map_err(|e| error::classify(&e))?;
    let framing = framing::check_response(resp.version(), resp.headers_mut());
    if framing != Ok(framing::ResponseFraming::Clean) {
        retire(conn.as_ref());
    }
    match framing {
        Ok(_) => Ok(resp),
        Err(why) => Err(ProxyError::Upstream(why.to_owned())),
    }
}

/// Keeps the pool from handing out a server connection again.
fn retire(conn: Option<&CaptureConnection>) {
    if let Some(c) = conn {
        if let Some(connected) = c.connection_metadata().as_ref() {
            connected.poison();
        }
    }
}

/// Rewrites the client's head for the server: hop-by-hop out, our cookie out, forwarding
/// headers in, `Host` kept (taken from the HTTP/2 authority when there is no header).
fn prepare_headers(
    parts: &mut Parts,
    listener: &ListenerView,
    ctx: &ConnCtx,
    backend: &BackendView,
    upgrade: bool,
) {
    let h = &mut parts.headers;
    headers::strip_hop_by_hop(h, upgrade);
    if let Some(s) = &backend.sticky {
        headers::strip_cookie(h, &s.config.cookie_name);
    }
    if !h.contains_key(header::HOST) {
        if let Some(v) = parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            h.insert(header::HOST, v);
        }
    }
    if ctx.client_cert != ClientCert::NotAsked {
        // Whatever the client wrote in them is dropped: only Tether's word counts.
        h.remove(headers::CLIENT_CERT_SUBJECT);
        let verified = match &ctx.client_cert {
            ClientCert::Verified(subject) => {
                if let Some(s) = subject {
                    h.insert(headers::CLIENT_CERT_SUBJECT, s.clone());
                }
                "SUCCESS"
            }
            _ => "NONE",
        };
        h.insert(headers::CLIENT_CERT_VERIFIED, HeaderValue::from_static(verified));
    }
    let trusted = headers::is_trusted(ctx.peer.ip(), &listener.conn.trusted_proxies);
    headers::add_forwarding(
        h,
        &ctx.peer_headers,
        trusted,
        if ctx.https { "https" } else { "http" },
    );
}

/// The request for one attempt. Headers are cloned only when another attempt may follow.
fn upstream_request(
    parts: &Parts,
    backend: &BackendView,
    server: &crate::snapshot::ServerView,
    body: ReqBody,
) -> Request<ReqBody> {
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(backend.scheme.clone());
    // HTTP/2 sends the URI's authority as `:authority`: the client's host (the server's own
    // client dials the server whatever the URI says). HTTP/1.1 sends `Host` as a header and
    // the URI's authority picks the pooled connection.
    let client_host = || {
        let host = parts.headers.get(header::HOST)?.to_str().ok()?;
        host.parse::<http::uri::Authority>().ok()
    };
    uri.authority = match backend.client_http2.then(client_host).flatten() {
        Some(host) => Some(host),
        None => Some(server.authority.clone()),
    };
    uri.path_and_query = parts.uri.path_and_query().cloned();
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    // Both parts come from already-valid URIs, so this cannot fail; fall back to "/" anyway.
    *req.uri_mut() = Uri::from_parts(uri).unwrap_or_else(|_| Uri::from_static("/"));
    *req.version_mut() = if backend.client_http2 { Version::HTTP_2 } else { Version::HTTP_11 };
    *req.headers_mut() = parts.headers.clone();
    req
}

/// Finishes a server's response for the client: hop-by-hop out, a server's attempt to set
/// our cookie dropped, our `Set-Cookie` added when the pin changed or needs a refresh.
fn respond(
    backend: &BackendView,
    pin: Option<Pin>,
    pick: select::Pick,
    now: u32,
    https: bool,
    mut resp: Response<RespBody>,
    log: Option<&mut AccessLog>,
) -> Response<RespBody> {
    let served = pick.server;
    let h = resp.headers_mut();
    headers::strip_hop_by_hop(h, false);
    let (Some(sticky), Some(pin)) = (&backend.sticky, pin) else { return resp };
    if pick.spilled {
        // The pin stays as it was: no new cookie, no table change.
        if !sticky.config.mode.uses_table() {
            headers::drop_set_cookie_named(h, &sticky.config.cookie_name);
        }
        backend.metrics.affinity(Outcome::Spilled);
        if let Some(l) = log {
            l.affinity = Outcome::Spilled.as_str();
        }
        return resp;
    }
    if sticky.config.mode.uses_table() {
        let outcome = affinity::record_table(backend, &pin, served, h, now);
        backend.metrics.affinity(outcome);
        if let Some(l) = log {
            l.affinity = outcome.as_str();
        }
        return resp;
    }
    headers::drop_set_cookie_named(h, &sticky.config.cookie_name);
    let (outcome, keep_issued) = pin.settle(served);
    let issue = match outcome {
        Outcome::Hit => keep_issued,
        _ => Some(now),
    };
    if let Some(issued_at) = issue {
        if let Some(v) = affinity::set_cookie(sticky, &backend.name, served, issued_at, now, https)
        {
            h.append(header::SET_COOKIE, v);
            headers::make_private(h);
        }
    }
    backend.metrics.affinity(outcome);
    if let Some(l) = log {
        l.affinity = outcome.as_str();
    }
    resp
}

fn route(snap: &Snapshot, listener: &ListenerView, req: &Request<Incoming>) -> Option<usize> {
    if !snap.routes.is_empty() {
        let host = headers::request_host(req.uri(), req.headers());
        let path = req.uri().path();
        for r in &snap.routes {
            let host_ok = match (&r.host, host) {
                (None, _) => true,
                (Some(HostMatch::Exact(e)), Some(h)) => h.eq_ignore_ascii_case(e),
                (Some(HostMatch::Suffix(s)), Some(h)) => {
                    h.len() > s.len()
                        && h.as_bytes()[h.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
                }
                (Some(_), None) => false,
            };
            if host_ok && r.path_prefix.as_deref().is_none_or(|p| path.starts_with(p)) {
                return Some(r.backend);
            }
        }
    }
    listener.default_backend
}
