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
mod first_pick;
pub mod framing;
pub mod headers;
pub mod log;
mod request_id;
mod routing;
pub mod select;
pub mod upgrade;

use std::net::SocketAddr;
use std::time::Instant;

use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use tether_core::h1::RequestHeadError;

use self::affinity::{First, Outcome, Pin};
use self::body::Held;
use self::body::RespBody;
use self::error::ProxyError;
use self::log::AccessLog;
use self::select::Tried;
use crate::upstream::body::{ClientBody, ReqBody};
use crate::upstream::{ResponseBody as UpstreamBody, ServerClient, UpstreamClient, h1};
use tether_core::retry::{Attempt, RetryPolicy, Verdict};

use crate::config::{HashKey, RateKey, StickyMode};
use crate::health;
use crate::metrics::RequestRefusal;
use crate::snapshot::{BackendView, ListenerView, Snapshot};

/// What the data path knows about the client connection.
#[derive(Debug)]
pub struct ConnCtx {
    /// The listener's name, by which each request finds it in its snapshot (a reload may
    /// add, remove and reorder listeners: a position would point at another one).
    pub listener: std::sync::Arc<str>,
    /// The socket peer.
    pub peer: SocketAddr,
    /// The peer's address as the forwarding headers write it.
    pub peer_headers: headers::PeerHeaders,
    /// Whether the client-facing connection is TLS.
    pub https: bool,
    /// The client certificate, on listeners that ask for one.
    pub client_cert: ClientCert,
    /// Held by every tunnel started on the connection, so that a graceful shutdown waits
    /// for tunnels as it waits for connections (up to `grace_period`).
    pub drain_token: tokio::sync::mpsc::Sender<()>,
    /// Unique among this process's connections (names the client for `first_pick_window`).
    pub id: u64,
}

impl ConnCtx {
    /// Context of a new connection; `drain_token` is the connection's drain token.
    pub fn new(
        listener: std::sync::Arc<str>,
        peer: SocketAddr,
        https: bool,
        drain_token: tokio::sync::mpsc::Sender<()>,
    ) -> Self {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Self {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            drain_token,
            listener,
            peer,
            peer_headers: headers::PeerHeaders::new(peer.ip()),
            https,
            client_cert: ClientCert::NotAsked,
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
    /// Verified; its subject as a header value (`None` when the subject is not one). Boxed:
    /// every connection's context holds this, and few have a certificate.
    Verified(Option<Box<HeaderValue>>),
}

/// Where the response's head goes, and so where a server's header lines may stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadFor {
    /// Tether's HTTP/1.1 writer, which writes the lines still in the body
    /// ([`RespBody::server_lines`]) before the map's.
    H1Writer,
    /// Anything that reads only the map (hyper's HTTP/2 server): every line is put there.
    Map,
}

/// Serves one request against `snap`; never fails (errors become small plain-text answers).
/// `upgrade` is the client's side of a tunnel, for an HTTP/1.1 request asking to upgrade:
/// the connection, once the `101` has been written to it.
pub async fn handle(
    snap: &Snapshot,
    ctx: &ConnCtx,
    mut req: Box<Request<ClientBody>>,
    (upgrade, head_for): (Option<upgrade::ClientUpgrade>, HeadFor),
) -> Response<RespBody> {
    let Some(listener) = snap.listener(&ctx.listener) else {
        // A request that began as a reload removed its listener (whose connections drain).
        return ProxyError::ListenerClosed.response();
    };
    let request_id = snap.config.request_id.as_ref().map(|name| {
        let trusted = headers::is_trusted(ctx.peer.ip(), &listener.conn.trusted_proxies);
        (name, request_id::assign(name, trusted, req.headers_mut()))
    });
    let log = snap.config.access_log.then(|| {
        let mut log = Box::new(AccessLog::new(
            listener.name.clone(),
            ctx.peer.ip(),
            req.method().clone(),
            req.uri().path(),
        ));
        if let ClientCert::Verified(subject) = &ctx.client_cert {
            log.client_cert = subject.as_deref().cloned();
        }
        log.request_id = request_id.as_ref().map(|(_, id)| id.clone());
        log
    });
    let mut pending = Unanswered { log, server: None, listener: listener.index, answered: false };
    let arrived = Instant::now();
    let mut resp = match forward(snap, listener, ctx, (req, upgrade), arrived, &mut pending).await {
        Ok(resp) => resp,
        Err(e) => e.response(),
    };
    if head_for == HeadFor::Map {
        whole_headers(&mut resp);
    }
    if let Some((name, mut id)) = request_id {
        // Unique per response: HPACK must not index it. In its dynamic table every new id
        // would evict an entry, and each response would be compared with every id still there.
        id.set_sensitive(true);
        if resp.body().server_lines().is_some_and(|l| l.has(name)) {
            whole_headers(&mut resp);
        }
        resp.headers_mut().insert(name.clone(), id);
    }
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

impl<'s> Unanswered<'s> {
    fn log(&mut self) -> Option<&mut AccessLog> {
        self.log.as_deref_mut()
    }

    /// An attempt at `server` begins.
    fn attempt_on(&mut self, server: &'s crate::snapshot::ServerView) {
        self.server = Some(&server.metrics);
        if let Some(l) = self.log() {
            l.server = Some(server.state.name_arc().clone());
            l.attempts += 1;
        }
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

/// The request path, phase by phase: refuse bad framing → route → read affinity → rate
/// limit → prepare the request for servers → attempt (choose, send, classify, retry) →
/// record affinity and respond (`docs/architecture.md` walks through each).
async fn forward<'s>(
    snap: &'s Snapshot,
    listener: &ListenerView,
    ctx: &ConnCtx,
    (mut req, upgrade): (Box<Request<ClientBody>>, Option<upgrade::ClientUpgrade>),
    arrived: Instant,
    pending: &mut Unanswered<'s>,
) -> Result<Response<RespBody>, ProxyError> {
    refuse_bad_framing(listener, &mut req)?;
    let routed = match routing::route(snap, listener, ctx, &mut req) {
        Ok(routed) => routed.ok_or(ProxyError::NoRoute)?,
        Err(answer) => return Ok(*answer),
    };
    let backend = snap.backends.get(routed.backend).ok_or(ProxyError::NoRoute)?;
    if let Some(l) = pending.log() {
        l.backend = Some(backend.name.clone());
    }
    // Unix seconds for pins and cookies: only a sticky backend reads them.
    let now = if backend.sticky.is_some() { crate::clock::unix_now_u32() } else { 0 };
    let key = request_key(backend, listener, ctx, &req);
    let (pin, session) = read_affinity(backend, listener, ctx, &req, (key, now)).await;
    if listener.rate.is_some() || backend.rate.is_some() {
        rate_limit(listener, backend, ctx, &req, session)?;
    }
    let session_slot = admit_session(backend, listener, session, &req)?;
    let mut outgoing = Outgoing::prepare(*req, upgrade, listener, ctx, backend)?;
    outgoing.key = key;
    let mut answered = attempt(backend, pin.as_ref(), &mut outgoing, listener, pending).await?;
    answered.held.session = session_slot;
    let took = answered.replied.saturating_duration_since(arrived);
    backend.metrics.duration(listener.index, took.as_secs_f64());
    let mut resp = finish(backend, pin, now, ctx, answered, outgoing.client_upgrade, pending.log());
    if routed.edits_response() {
        whole_headers(&mut resp);
        routed.finish(resp.headers_mut());
    }
    crate::header_maps::give(outgoing.parts.headers);
    Ok(resp)
}

/// Phase 1: requests Tether refuses before routing — a method it does not forward, a head
/// whose framing is ambiguous (`framing`), too many header fields, a declared body over
/// the limit. Each is counted in `tether_requests_refused_total`.
fn refuse_bad_framing(
    listener: &ListenerView,
    req: &mut Request<ClientBody>,
) -> Result<(), ProxyError> {
    let refused = |why| listener.conn.metrics.request_refused(why);
    if let Some(e) = req.extensions().get::<RequestHeadError>() {
        let (why, err) = framing::refusal(*e);
        refused(why);
        return Err(err);
    }
    if req.method() == http::Method::CONNECT {
        // A reverse proxy opens no tunnel to an address of the client's choosing (HTTP/1.1
        // or HTTP/2): refused before a server is chosen, so no server is blamed.
        refused(RequestRefusal::Method);
        return Err(ProxyError::NotForwardable("CONNECT is not supported".to_owned()));
    }
    let (method, version) = (req.method().clone(), req.version());
    framing::check(&method, version, req.headers_mut())
        .inspect_err(|_| refused(RequestRefusal::Framing))?;
    if req.headers().len() > listener.conn.limits.max_headers {
        refused(RequestRefusal::Framing);
        return Err(ProxyError::TooManyHeaders);
    }
    let max_body = listener.conn.limits.max_body_bytes;
    if max_body > 0 && framing::content_length(req.headers()).is_some_and(|n| n > max_body) {
        refused(RequestRefusal::BodyTooLarge);
        return Err(ProxyError::BodyTooLarge);
    }
    Ok(())
}

/// Phase 3: the pin the request arrived with, and the session's identity for
/// `rate_limit.key = "affinity"` (a valid cookie, or the table key).
async fn read_affinity(
    backend: &BackendView,
    listener: &ListenerView,
    ctx: &ConnCtx,
    req: &Request<ClientBody>,
    (key, now): (Option<u64>, u32),
) -> (Option<Pin>, Option<u128>) {
    match backend.sticky.as_ref().map(|s| (s, &s.config.mode)) {
        None => (None, None),
        Some((s, StickyMode::Cookie)) => {
            let values = headers::cookie_values(req.headers(), &s.config.cookie_name);
            let (mut pin, used) = affinity::read_cookie_pin(s, &backend.name, values, now);
            if pin.server.is_none() {
                pin = first_pick::join((backend, s), (listener, ctx), req, pin, (key, now));
            }
            // Only a cookie the client sent names its session (a first pick's id is not the
            // client's yet). The id names it across refreshes; a version 1 token has none,
            // and its value (fixed until re-issued) stands in.
            let session = used.map(|v| match pin.session {
                Some(id) => backend.hasher.hash(&id.to_le_bytes()),
                None => backend.hasher.hash(v.as_bytes()),
            });
            (Some(pin), session)
        }
        Some((_, mode)) => {
            let client =
                headers::client_ip(ctx.peer.ip(), req.headers(), &listener.conn.trusted_proxies);
            let pin = affinity::read_table_pin(backend, mode, req.headers(), client, now).await;
            (Some(pin), pin.key)
        }
    }
}

/// The request as it goes to servers: the rewritten head (encoded once for HTTP/1.1
/// servers), the body (streamed once, so taken by the first attempt), and the client's side
/// of an upgrade.
struct Outgoing {
    parts: Parts,
    /// The head as written to HTTP/1.1 servers.
    encoded: Option<h1::Encoded>,
    body: Option<ReqBody>,
    /// Resolves once the body has been sent whole (the response timeout starts then).
    body_sent: Option<tokio::sync::oneshot::Receiver<()>>,
    /// No body: the request can be sent again.
    replayable: bool,
    client_upgrade: Option<upgrade::ClientUpgrade>,
    /// The request's `hash_key`, hashed, for keyed algorithms.
    key: Option<u64>,
}

impl Outgoing {
    /// Phase 5: hop-by-hop headers out, forwarding headers in, the body wrapped with the
    /// listener's stall timer and size limit. A head that cannot be written faithfully is
    /// refused here, before any server is tried.
    fn prepare(
        req: Request<ClientBody>,
        client_upgrade: Option<upgrade::ClientUpgrade>,
        listener: &ListenerView,
        ctx: &ConnCtx,
        backend: &BackendView,
    ) -> Result<Self, ProxyError> {
        let client_upgrade = client_upgrade
            .filter(|_| req.version() == Version::HTTP_11 && headers::wants_upgrade(req.headers()));
        let upgrade = client_upgrade.is_some();
        let (mut parts, body) = req.into_parts();
        prepare_headers(&mut parts, listener, ctx, backend, upgrade);
        let replayable = body.is_end_stream();
        let encoded = if backend.client_http2 {
            None
        } else {
            Some(h1::encode(&parts.method, &parts.uri, &parts.headers, !replayable, upgrade)?)
        };
        let max_body = listener.conn.limits.max_body_bytes;
        let (body, body_sent) = if replayable {
            (None, None)
        } else {
            let (b, sent) = ReqBody::streaming(body, listener.body_timeout, max_body);
            (Some(b), Some(sent))
        };
        Ok(Self { parts, encoded, body, body_sent, replayable, client_upgrade, key: None })
    }

    fn retry_policy(&self, backend: &BackendView) -> RetryPolicy {
        RetryPolicy {
            replayable: self.replayable,
            idempotent: self.replayable && self.parts.method.is_idempotent(),
            attempts: backend.retry.attempts as usize,
            servers: backend.servers.len(),
        }
    }
}

/// A server's response head, and what the response phase needs with it.
struct Answered {
    resp: Response<UpstreamBody>,
    pick: select::Pick,
    held: Held,
    /// When the response head arrived.
    replied: Instant,
}

/// Phase 6: attempts until a server answers or the retry policy says stop. Each attempt
/// chooses a server (affinity first, then the balancer, skipping those tried), waits for a
/// connection slot, sends, and classifies the outcome; only the server's failures count
/// against it.
async fn attempt<'s>(
    backend: &'s BackendView,
    pin: Option<&Pin>,
    out: &mut Outgoing,
    listener: &ListenerView,
    pending: &mut Unanswered<'s>,
) -> Result<Answered, ProxyError> {
    backend.budget.deposit();
    let policy = out.retry_policy(backend);
    let mut tried = Tried::default();
    loop {
        let pick = select::choose(backend, pin, &tried, out.key)?;
        tried.push(pick.server);
        let server = &backend.servers[pick.server];
        let permit = select::admit(backend, pick).await?;
        pending.attempt_on(server);
        let body = out.body.take().unwrap_or(ReqBody::Empty);
        let held = Held { guard: server.state.begin(), permit, session: None };
        let sent = Instant::now();
        let notice = rebound_notice(backend, pin, pick);
        let result = send(backend, server, out, body, notice.as_ref()).await;
        // One clock read for the response time, the upstream time and the request's duration.
        let replied = Instant::now();
        let outcome = record_attempt(backend, pick.server, &result, listener);
        let verdict =
            policy.judge(outcome, tried.len(), || select::has_alternative(backend, &tried));
        let retry = match verdict {
            Verdict::Done => false,
            Verdict::Retry => true,
            Verdict::RetryIfBudget => backend.budget.try_withdraw(),
        };
        if backend.times_responses && matches!(result, Ok(_) | Err(ProxyError::Timeout)) {
            let micros = replied.saturating_duration_since(sent).as_micros() as u64;
            server.state.observe_response_time(micros, crate::clock::mono_us());
        }
        match result {
            Ok(resp) => {
                let status = resp.status().as_u16();
                server.metrics.request(listener.index, status);
                if !retry {
                    let upstream_time = replied.saturating_duration_since(sent);
                    server.state.record_latency(upstream_time.as_micros() as u64);
                    if let Some(l) = pending.log() {
                        l.upstream_time = Some(upstream_time);
                    }
                    return Ok(Answered { resp, pick, held, replied });
                }
                tracing::debug!(backend = %backend.name, server = %server.state.name(), status, "retrying on another server");
            }
            Err(err) => {
                tracing::warn!(backend = %backend.name, server = %server.state.name(), error = %err, retry, "upstream request failed");
                if !retry {
                    // A failed attempt that is retried is no answer of this server's.
                    server.metrics.request(listener.index, err.status().as_u16());
                    return Err(err);
                }
            }
        }
        backend.metrics.retry();
    }
}

/// `sticky.rebound_header` for an attempt that re-pins a session to another server: the
/// pinned server's name and why it was left. `None` when the attempt goes to the pinned
/// server or spills (the pin stays), or the header is not configured.
fn rebound_notice(
    backend: &BackendView,
    pin: Option<&Pin>,
    pick: select::Pick,
) -> Option<(HeaderName, HeaderValue)> {
    let name = backend.sticky.as_ref()?.config.rebound_header.as_ref()?;
    // A session's first request moves no session: it never lived on its first pick.
    let pinned = pin.filter(|p| p.first != First::Leads)?.server?;
    if pinned == pick.server || pick.spilled {
        return None;
    }
    let server = &backend.servers[pinned];
    let reason = match server.state.admin_state() {
        tether_core::AdminState::Maint => "maint",
        _ if server.state.is_healthy() && server.full() => "full",
        // Down, ejected, or it failed this very request.
        _ => "down",
    };
    let value = HeaderValue::from_str(&format!("{}; reason={reason}", server.state.name())).ok()?;
    Some((name.clone(), value))
}

/// Records what one attempt says about its server — passive health, `errors_total`,
/// `tether_upstream_errors_total` — and names it for the retry policy. A client's failure
/// or a refused request is not the server's.
fn record_attempt(
    backend: &BackendView,
    idx: usize,
    result: &Result<Response<UpstreamBody>, ProxyError>,
    listener: &ListenerView,
) -> Attempt {
    let server = &backend.servers[idx];
    let err = match result {
        Ok(resp) => {
            let failed = error::response_blames_server(resp.status());
            health::observe(backend, idx, !failed);
            if failed {
                server.state.record_error();
            }
            return Attempt::Answered(resp.status().as_u16());
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
    match err {
        ProxyError::Connect(_) => Attempt::ConnectFailed,
        ProxyError::Timeout | ProxyError::Upstream(_) => Attempt::ServerFailed,
        _ => Attempt::Other,
    }
}

/// Applies the listener's and the backend's `rate_limit` to this request's client.
fn rate_limit(
    listener: &ListenerView,
    backend: &BackendView,
    ctx: &ConnCtx,
    req: &Request<ClientBody>,
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

/// The request's `hash_key` (`hash`, `maglev`), hashed the same way on every instance;
/// `None` without one, or when the request lacks it (it is then spread by weight).
fn request_key(
    backend: &BackendView,
    listener: &ListenerView,
    ctx: &ConnCtx,
    req: &Request<ClientBody>,
) -> Option<u64> {
    let hash = |b: &[u8]| tether_core::balance::key_hash(b);
    let nonempty = |v: &&[u8]| !v.is_empty();
    match backend.hash_key.as_ref()? {
        HashKey::Uri => {
            Some(hash(req.uri().path_and_query().map_or("/", |p| p.as_str()).as_bytes()))
        }
        HashKey::Path => Some(hash(req.uri().path().as_bytes())),
        HashKey::ClientIp => {
            let trusted = &listener.conn.trusted_proxies;
            Some(select::ip_key(headers::client_ip(ctx.peer.ip(), req.headers(), trusted)))
        }
        HashKey::Header(name) => {
            req.headers().get(name).map(|v| v.as_bytes()).filter(nonempty).map(hash)
        }
        HashKey::Cookie(name) => {
            headers::find_cookie(req.headers(), name).map(str::as_bytes).filter(nonempty).map(hash)
        }
    }
}

/// Holds one of the session's in-flight slots (`sticky.max_in_flight_per_session`) until
/// its response has been passed on; a session over its limit gets `429`. Requests without a
/// session yet (no valid cookie, no table key) are new and not limited here.
fn admit_session(
    backend: &BackendView,
    listener: &ListenerView,
    session: Option<u128>,
    req: &Request<ClientBody>,
) -> Result<Option<tether_core::conns::ConnSlot>, ProxyError> {
    let Some((sticky, key)) = backend.sticky.as_ref().zip(session) else { return Ok(None) };
    let Some(counter) = &sticky.in_flight else { return Ok(None) };
    let max = sticky.config.max_in_flight_per_session as usize;
    counter.admit_key(&key, 0, max).map(Some).map_err(|_| {
        listener.conn.metrics.request_refused(RequestRefusal::SessionConcurrency);
        let close = !req.body().is_end_stream();
        ProxyError::RateLimited { wait: std::time::Duration::from_secs(1), close }
    })
}

/// Phase 7: turns a server's response into the client's: a 101 starts the tunnel;
/// anything else streams back with the affinity outcome applied.
fn finish(
    backend: &BackendView,
    pin: Option<Pin>,
    now: u32,
    ctx: &ConnCtx,
    answered: Answered,
    client_upgrade: Option<upgrade::ClientUpgrade>,
    log: Option<&mut AccessLog>,
) -> Response<RespBody> {
    let Answered { mut resp, pick, held, .. } = answered;
    if let (Some(cu), StatusCode::SWITCHING_PROTOCOLS) = (client_upgrade, resp.status()) {
        if let Some(lines) = resp.body_mut().take_lines() {
            lines.into_map(resp.headers_mut());
        }
        let (mut rp, body) = resp.into_parts();
        if let Some(server) = match body {
            UpstreamBody::H1(b) => b.into_upgraded(),
            UpstreamBody::H2(_) => None,
        } {
            upgrade::tunnel(cu, server, (held, ctx.drain_token.clone()));
        }
        headers::strip_hop_by_hop(&mut rp.headers, true);
        return Response::from_parts(rp, RespBody::empty());
    }
    let from_h2 = matches!(resp.body(), UpstreamBody::H2(_));
    let mut resp = resp.map(|b| RespBody::upstream(b, held));
    if from_h2 {
        // Tether's HTTP/1.1 client leaves these lines out as it reads the head.
        headers::strip_hop_by_hop(resp.headers_mut(), false);
    }
    respond(backend, pin, pick, now, ctx.https, resp, log)
}

/// Sends one attempt: Tether's HTTP/1.1 client, or hyper's HTTP/2 one. The response
/// timeout starts once the request body has been sent whole (uploads may take as long as
/// they need while they keep moving; a stalled one fails on the listener's body timeout
/// instead). A response that breaks the response-framing policy is an upstream error
/// (`tether_core::h1::response`).
async fn send(
    backend: &BackendView,
    server: &crate::snapshot::ServerView,
    out: &mut Outgoing,
    body: ReqBody,
    extra: Option<&(HeaderName, HeaderValue)>,
) -> Result<Response<UpstreamBody>, ProxyError> {
    match (&server.client, &out.encoded) {
        (ServerClient::H1(origin), Some(head)) => {
            let with_extra = extra.map(|(n, v)| head.with_header(n, v));
            let head = with_extra.as_ref().unwrap_or(head);
            let resp = h1::send(origin, head, body, backend.response_timeout).await?;
            Ok(resp.map(UpstreamBody::H1))
        }
        (ServerClient::H2(client), _) => {
            let mut request = upstream_request(&out.parts, backend, server, body);
            if let Some((n, v)) = extra {
                request.headers_mut().insert(n.clone(), v.clone());
            }
            // Boxed: hyper's request future would enlarge every HTTP/1.1 request's future.
            let resp = Box::pin(send_h2(client, request, out.body_sent.take(), backend)).await?;
            Ok(resp.map(UpstreamBody::H2))
        }
        (ServerClient::H1(_), None) => {
            Err(ProxyError::NotForwardable("no HTTP/1.1 head for this request".to_owned()))
        }
    }
}

/// One attempt through hyper's HTTP/2 client.
async fn send_h2(
    client: &UpstreamClient,
    request: Request<ReqBody>,
    body_sent: Option<tokio::sync::oneshot::Receiver<()>>,
    backend: &BackendView,
) -> Result<Response<hyper::body::Incoming>, ProxyError> {
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
    result.map_err(|e| error::classify(&e))
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
        if let Some(name) = &s.config.rebound_header {
            // Only Tether may say a session was re-pinned.
            h.remove(name);
        }
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
                    h.insert(headers::CLIENT_CERT_SUBJECT, HeaderValue::clone(s));
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

/// Moves a server's header lines, still kept in the body, into the response's map: done
/// before any step that reads them or could repeat one of them (a header it inserts, which
/// must replace the server's).
fn whole_headers(resp: &mut Response<RespBody>) {
    if let Some(lines) = resp.body_mut().take_server_lines() {
        lines.into_map(resp.headers_mut());
    }
}

/// Finishes a server's response for the client (its hop-by-hop headers already out): a
/// server's attempt to set our cookie dropped, our `Set-Cookie` added when the pin changed
/// or needs a refresh.
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
    let (Some(sticky), Some(pin)) = (&backend.sticky, pin) else { return resp };
    if affinity_reads_server_lines(sticky, &pin, pick, resp.body()) {
        whole_headers(&mut resp);
    }
    let h = resp.headers_mut();
    if pick.spilled {
        // The pin stays as it was: no new cookie, no table change.
        if !sticky.config.mode.uses_table() {
            headers::drop_set_cookie_named(h, &sticky.config.cookie_name);
        }
        // Still a live session of its pinned server.
        if let Some((sketch, id)) =
            pin.server.and_then(|p| backend.servers[p].sessions.as_ref()).zip(pin.session)
        {
            sketch.observe(id, u64::from(now));
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
            // The table key is already a keyed hash of the client's key.
            l.session = pin.key.map(|k| k as u64);
        }
        return resp;
    }
    let (outcome, session) = cookie_response(backend, sticky, &pin, served, (now, https), h);
    backend.metrics.affinity(outcome);
    if let Some(l) = log {
        l.affinity = outcome.as_str();
        l.session = Some(backend.hasher.hash(&session.to_le_bytes()) as u64);
    }
    resp
}

/// Whether the affinity step reads the server's header lines, so that they must be in the
/// response's map first: always for a table mode (`learn` reads the server's cookies). Cookie
/// affinity only drops a server's cookie of our name, appends ours (after the server's lines,
/// wherever they are) and, when it does, makes the response private: it reads the lines when
/// the server set a cookie, or when ours is (re)issued and the server sent `Cache-Control`.
fn affinity_reads_server_lines(
    sticky: &crate::snapshot::StickyView,
    pin: &Pin,
    pick: select::Pick,
    body: &RespBody,
) -> bool {
    if sticky.config.mode.uses_table() {
        return true;
    }
    let Some(lines) = body.server_lines() else { return false };
    if lines.has(&header::SET_COOKIE) {
        return true;
    }
    if pick.spilled {
        return false;
    }
    // As in `cookie_response`: a hit keeps its cookie unless it is due for a refresh.
    let (outcome, keep_issued) = pin.settle(pick.server);
    let issues = !(outcome == Outcome::Hit && keep_issued.is_none());
    issues && lines.has(&header::CACHE_CONTROL)
}

/// Cookie affinity on a response from `served`: a server's own cookie of our name dropped,
/// ours set when the pin is new, moved or due for a refresh, the session counted on its
/// server. Returns the outcome and the session's id.
fn cookie_response(
    backend: &BackendView,
    sticky: &crate::snapshot::StickyView,
    pin: &Pin,
    served: usize,
    (now, https): (u32, bool),
    h: &mut http::HeaderMap,
) -> (Outcome, u64) {
    headers::drop_set_cookie_named(h, &sticky.config.cookie_name);
    let (outcome, keep_issued) = pin.settle(served);
    let issue = match outcome {
        Outcome::Hit => keep_issued,
        _ => Some(now),
    };
    // A rebound session keeps its id: it is the same client's session on another server.
    // A fresh pin has none, unless its client's first pick drew it.
    let session = pin.session.unwrap_or_else(affinity::new_session_id);
    if let Some(issued_at) = issue {
        let refreshed_at = if pin.first == First::No { now } else { pin.issued_at };
        let issue = affinity::Issue { server: served, session, issued_at, refreshed_at };
        if let Some(v) = affinity::set_cookie(sticky, &backend.name, issue, https) {
            h.append(header::SET_COOKIE, v);
            headers::make_private(h);
        }
    }
    if let Some(sketch) = &backend.servers[served].sessions {
        sketch.observe(session, u64::from(now));
    }
    (outcome, session)
}
