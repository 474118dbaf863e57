//! The admin listener: health, readiness, Prometheus metrics and the JSON API.
//!
//! Reads come straight from the current snapshot and the servers' atomics. Writes never touch
//! state here: they become [`Command`]s sent to the single controller task that owns the
//! registry (the same path SIGHUP takes), and the handler waits for its answer. Every write
//! needs the bearer token when one is configured, checked by one layer ([`require_token`]);
//! GET never mutates.
//!
//! Every error of the API is JSON, `{"error": "..."}` ([`error`]): the handlers' own, and
//! axum's rejections too (bad path or query, body too large, wrong method), through the
//! extractors of [`extract`] and the router's fallbacks.

mod extract;

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use serde_json::{Value, json};
use tether_core::AdminState;
use tokio::sync::{mpsc, oneshot};

use self::extract::{ApiBody, ApiPath, ApiQuery};
use crate::config;
use crate::control::{Command, ControlError};
use crate::metrics::Metrics;
use crate::snapshot::{BackendView, Snapshot};

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminContext {
    /// The snapshot being served.
    pub current: Arc<ArcSwap<Snapshot>>,
    /// Process metrics.
    pub metrics: Arc<Metrics>,
    /// Channel to the controller.
    pub commands: mpsc::Sender<Command>,
    /// Bearer token required for writes (and everything on a non-loopback address).
    pub token: Option<Arc<str>>,
    /// Whether the token is required for reads too (non-loopback admin address).
    pub token_for_reads: bool,
    /// Process start.
    pub started: Instant,
    /// Serving `tether demo` (its extra routes are mounted).
    pub demo: bool,
}

/// The admin router. Unknown paths and methods are JSON errors like the rest (404, 405 with
/// `Allow`); bodies over [`extract::BODY_LIMIT`] are refused with 413. The parameter names
/// appear in path errors ("Invalid UTF-8 in `backend`").
pub fn router(ctx: AdminContext) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/api/v1/reload", post(reload))
        .route("/api/v1/listeners", get(listeners))
        .route("/api/v1/backends", get(backends))
        .route("/api/v1/backends/{backend}", get(backend))
        .route("/api/v1/backends/{backend}/servers", post(add_server))
        .route(
            "/api/v1/backends/{backend}/servers/{server}",
            patch(patch_server).delete(remove_server),
        )
        .route("/api/v1/backends/{backend}/sessions", get(sessions).delete(flush_sessions))
        // Before the open probes: it applies to the routes registered so far, and runs
        // before their extractors (a request without the token learns nothing else).
        .route_layer(middleware::from_fn_with_state(ctx.clone(), require_token))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        // After the routes: it applies to those registered so far.
        .method_not_allowed_fallback(|| async {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this endpoint")
        })
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .with_state(ctx)
}

/// Serves the admin API on `listener` until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ctx: AdminContext,
    extra: Option<Router>,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let addr = listener.local_addr().ok();
    let app = match extra {
        Some(extra) => extra.merge(router(AdminContext { demo: true, ..ctx })),
        None => router(ctx),
    };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
        tracing::error!(address = ?addr, error = %e, "admin listener failed");
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

fn unauthorized() -> Response {
    error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
}

/// The bearer-token check, one layer over every endpoint but `/healthz` and `/readyz`:
/// writes need the token whenever one is configured, reads only on a non-loopback admin
/// address.
async fn require_token(State(ctx): State<AdminContext>, req: Request, next: Next) -> Response {
    let write = !matches!(*req.method(), Method::GET | Method::HEAD);
    if authorized(&ctx, req.headers(), write) { next.run(req).await } else { unauthorized() }
}

/// Whether the request may proceed: no token configured, a read on a loopback address, or
/// the right bearer token (compared in constant time).
fn authorized(ctx: &AdminContext, headers: &HeaderMap, write: bool) -> bool {
    let Some(token) = &ctx.token else { return true };
    if !write && !ctx.token_for_reads {
        return true;
    }
    bearer_token(headers).is_some_and(|given| {
        subtle::ConstantTimeEq::ct_eq(given.as_bytes(), token.as_bytes()).into()
    })
}

/// The token of an `Authorization: Bearer <token>` header. The scheme is matched without
/// regard to case (RFC 9110 §11.1: `bearer` and `BEARER` too) and one or more spaces follow
/// it; the token itself is case-sensitive, and surrounding whitespace is not part of it.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The live dashboard: one self-contained page (no CDN), embedded in the binary.
const DASHBOARD: &str = include_str!("admin/dashboard.html");

async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::HeaderName::from_static("x-content-type-options"), "nosniff"),
        ],
        DASHBOARD,
    )
        .into_response()
}

async fn readyz(State(ctx): State<AdminContext>) -> Response {
    let snap = ctx.current.load();
    (StatusCode::OK, format!("ready: generation {}\n", snap.generation)).into_response()
}

async fn metrics(State(ctx): State<AdminContext>) -> Response {
    let body = ctx.current.load().render_metrics(&ctx.metrics);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

async fn status(State(ctx): State<AdminContext>) -> Response {
    let snap = ctx.current.load();
    axum::Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": ctx.started.elapsed().as_secs(),
        "generation": snap.generation,
        "demo": ctx.demo,
    }))
    .into_response()
}

/// JSON of one backend and its servers.
pub fn backend_json(b: &BackendView, snap: &Snapshot) -> Value {
    let cfg = snap.config.backend(&b.name);
    let servers: Vec<Value> = b
        .servers
        .iter()
        .map(|s| {
            let st = &s.state;
            let (sessions, exact) = b.sessions_of(s);
            json!({
                "name": st.name(),
                "address": s.authority.as_str(),
                "weight": s.weight,
                "backup": s.backup,
                "source": s.source.as_str(),
                "health": if st.is_ejected() { "down" } else { st.health().as_str() },
                "health_reason": st.reason().as_str(),
                "last_change": (st.last_change() > 0).then(|| st.last_change()),
                "ejected": st.is_ejected(),
                "latency_buckets": st.latency_counts(),
                "state": st.admin_state().as_str(),
                "in_flight": st.in_flight(),
                "requests_total": st.requests_total(),
                "errors_total": st.errors_total(),
                "sessions_bound": sessions,
                "sessions_exact": exact,
                "tcp": s.metrics.tcp.as_ref().map(|m| json!({
                    "connections_open": st.in_flight(),
                    "connections_total": m.connections.get(),
                    "bytes_in": m.bytes_in.get(),
                    "bytes_out": m.bytes_out.get(),
                })),
            })
        })
        .collect();
    json!({
        "name": &*b.name,
        "tcp": b.servers.iter().any(|s| s.metrics.tcp.is_some()),
        "http": b.http,
        "latency_bounds_ms": tether_core::server::LATENCY_BOUNDS_MS,
        "balance": cfg.map(|c| c.balance.as_str()),
        "sticky": b.sticky.as_ref().map(|s| s.config.mode.as_str()),
        "stick_table_entries": b.table.as_ref().map(|t| t.len()),
        "queue_waiting": b.waiting.load(std::sync::atomic::Ordering::Relaxed),
        "servers": servers,
    })
}

/// JSON of one listener: what it is, where it is bound (`bound`: each open socket's
/// address, so port 0 shows the port the kernel chose), and where it sends traffic.
fn listener_json(l: &config::Listener, bound: &[(String, std::net::SocketAddr)]) -> Value {
    let mut addresses: Vec<String> =
        bound.iter().filter(|(name, _)| *name == l.name).map(|(_, a)| a.to_string()).collect();
    addresses.dedup(); // One socket per worker thread on the same address.
    let sni_routes: Vec<Value> = l
        .sni_routes
        .iter()
        .map(|r| {
            let sni = match &r.sni {
                config::HostMatch::Exact(name) => name.clone(),
                config::HostMatch::Suffix(suffix) => format!("*{suffix}"),
            };
            json!({ "sni": sni, "backend": r.backend })
        })
        .collect();
    json!({
        "name": l.name,
        "address": l.address.to_string(),
        "bound": addresses,
        "mode": l.mode.as_str(),
        "default_backend": l.default_backend,
        "tls": l.tls.is_some(),
        "proxy_protocol": l.proxy_protocol,
        "sni_routes": sni_routes,
    })
}

async fn listeners(State(ctx): State<AdminContext>) -> Response {
    let Some(bound) = ask(&ctx, Command::BoundAddresses).await else {
        return shutting_down();
    };
    let snap = ctx.current.load();
    let list: Vec<Value> = snap.config.listeners.iter().map(|l| listener_json(l, &bound)).collect();
    axum::Json(json!({ "listeners": list })).into_response()
}

async fn backends(State(ctx): State<AdminContext>) -> Response {
    let snap = ctx.current.load();
    let list: Vec<Value> = snap.backends.iter().map(|b| backend_json(b, &snap)).collect();
    axum::Json(json!({ "backends": list })).into_response()
}

async fn backend(State(ctx): State<AdminContext>, ApiPath(name): ApiPath<String>) -> Response {
    let snap = ctx.current.load();
    match snap.backend(&name) {
        Some(b) => axum::Json(backend_json(b, &snap)).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no backend {name:?}")),
    }
}

/// The query of `GET .../sessions`; any other parameter is an error, like an unknown field
/// in a body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Limit {
    limit: Option<usize>,
}

async fn sessions(
    State(ctx): State<AdminContext>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<Limit>,
) -> Response {
    let snap = ctx.current.load();
    let Some(b) = snap.backend(&name) else {
        return error(StatusCode::NOT_FOUND, format!("no backend {name:?}"));
    };
    let Some(table) = &b.table else {
        return error(
            StatusCode::BAD_REQUEST,
            "this backend keeps no stick table (cookie affinity lives in the client's cookie)",
        );
    };
    let table = table.clone();
    drop(snap);
    let listing = table.sessions(q.limit.unwrap_or(100).min(10_000)).await;
    let entries: Vec<Value> = listing
        .entries
        .iter()
        .map(|e| {
            json!({
                "key": e.key,
                "server": &*e.server,
                "created": e.created,
                "last_used": e.last_used,
                "expires": e.expires,
            })
        })
        .collect();
    axum::Json(json!({
        "backend": name,
        "source": listing.source,
        "entries": listing.total,
        "complete": listing.complete,
        "sessions": entries,
    }))
    .into_response()
}

/// Sends a command to the controller and waits for its answer; `None` while shutting down.
async fn ask<T>(ctx: &AdminContext, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    ctx.commands.send(make(tx)).await.ok()?;
    rx.await.ok()
}

fn shutting_down() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
}

/// The HTTP answer to a controller reply: `ok` on success, the controller's error otherwise.
fn answer(reply: Option<Result<u64, ControlError>>, ok: impl FnOnce(u64) -> Response) -> Response {
    match reply {
        Some(Ok(v)) => ok(v),
        Some(Err(e)) => error(control_status(&e), e.to_string()),
        None => shutting_down(),
    }
}

/// The status of a command the controller refused.
fn control_status(e: &ControlError) -> StatusCode {
    match e {
        ControlError::NoBackend(_) | ControlError::NoServer { .. } => StatusCode::NOT_FOUND,
        ControlError::ServerExists(_) | ControlError::LastServer | ControlError::Discovered(_) => {
            StatusCode::CONFLICT
        }
        ControlError::NoTable => StatusCode::BAD_REQUEST,
        ControlError::Reload(_) => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

/// A JSON object body whose keys are all in `allowed`.
fn json_object(body: &[u8], allowed: &[&str]) -> Result<serde_json::Map<String, Value>, String> {
    let map = match serde_json::from_slice(body) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err("expected a JSON object".to_owned()),
        Err(e) => return Err(format!("invalid JSON: {e}")),
    };
    if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("unknown field {k:?}; expected {}", allowed.join(", ")));
    }
    Ok(map)
}

async fn reload(State(ctx): State<AdminContext>) -> Response {
    answer(ask(&ctx, Command::Reload).await, |generation| {
        axum::Json(json!({ "generation": generation })).into_response()
    })
}

async fn patch_server(
    State(ctx): State<AdminContext>,
    ApiPath((backend, server)): ApiPath<(String, String)>,
    ApiBody(body): ApiBody,
) -> Response {
    let v = match json_object(&body, &["state", "weight"]) {
        Ok(m) => Value::Object(m),
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let state = match v.get("state") {
        None => None,
        Some(s) => match s.as_str().and_then(AdminState::parse) {
            Some(st) => Some(st),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "state must be \"ready\", \"drain\" or \"maint\"",
                );
            }
        },
    };
    let weight = match v.get("weight") {
        None => None,
        Some(w) => match w.as_u64().filter(|w| (1..=256).contains(w)) {
            Some(w) => Some(w as u32),
            None => {
                return error(StatusCode::BAD_REQUEST, "weight must be an integer from 1 to 256");
            }
        },
    };
    if state.is_none() && weight.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "nothing to change: give \"state\" and/or \"weight\"",
        );
    }
    let cmd = |reply| Command::SetServer {
        backend: backend.clone(),
        server: server.clone(),
        state,
        weight,
        reply,
    };
    answer(ask(&ctx, cmd).await, |_| {
        let snap = ctx.current.load();
        match snap.backend(&backend) {
            Some(b) => axum::Json(backend_json(b, &snap)).into_response(),
            None => StatusCode::NO_CONTENT.into_response(),
        }
    })
}

async fn add_server(
    State(ctx): State<AdminContext>,
    ApiPath(backend): ApiPath<String>,
    ApiBody(body): ApiBody,
) -> Response {
    let v = match json_object(&body, &["name", "address", "weight", "backup"]) {
        Ok(m) => Value::Object(m),
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    // Validate exactly like a configuration entry, so the API accepts what the file would.
    let mut entry = toml::Table::new();
    for key in ["name", "address"] {
        match v.get(key).and_then(Value::as_str) {
            Some(s) => entry.insert(key.into(), toml::Value::String(s.into())),
            None => {
                return error(StatusCode::BAD_REQUEST, format!("\"{key}\" (a string) is required"));
            }
        };
    }
    if let Some(w) = v.get("weight") {
        match w.as_i64() {
            Some(w) => entry.insert("weight".into(), toml::Value::Integer(w)),
            None => return error(StatusCode::BAD_REQUEST, "\"weight\" must be an integer"),
        };
    }
    if let Some(b) = v.get("backup") {
        match b.as_bool() {
            Some(b) => entry.insert("backup".into(), toml::Value::Boolean(b)),
            None => return error(StatusCode::BAD_REQUEST, "\"backup\" must be true or false"),
        };
    }
    let server = match crate::config::parse_server(&entry) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string().trim().to_owned()),
    };
    let reply = ask(&ctx, |reply| Command::AddServer { backend, server, reply }).await;
    answer(reply, |generation| {
        (StatusCode::CREATED, axum::Json(json!({ "generation": generation }))).into_response()
    })
}

async fn remove_server(
    State(ctx): State<AdminContext>,
    ApiPath((backend, server)): ApiPath<(String, String)>,
) -> Response {
    let reply = ask(&ctx, |reply| Command::RemoveServer { backend, server, reply }).await;
    answer(reply, |generation| axum::Json(json!({ "generation": generation })).into_response())
}

async fn flush_sessions(
    State(ctx): State<AdminContext>,
    ApiPath(backend): ApiPath<String>,
) -> Response {
    let reply = ask(&ctx, |reply| Command::FlushSessions { backend, reply }).await;
    answer(reply, |n| axum::Json(json!({ "flushed": n })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = header::HeaderValue::from_str(value).unwrap_or_else(|e| panic!("{e}"));
        headers.insert(header::AUTHORIZATION, value);
        headers
    }

    #[test]
    fn bearer_scheme_matches_in_any_case_and_the_token_keeps_its_own() {
        for (value, token) in [
            ("Bearer s3cret", "s3cret"),
            ("bearer s3cret", "s3cret"),
            ("BEARER S3CRET", "S3CRET"),
            ("bEaReR   s3cret ", "s3cret"),
        ] {
            assert_eq!(bearer_token(&with_authorization(value)), Some(token), "{value:?}");
        }
    }

    #[test]
    fn other_schemes_and_empty_tokens_are_no_bearer_token() {
        for value in ["Basic s3cret", "Bearers3cret", "Bearer", "Bearer   ", "s3cret", ""] {
            assert_eq!(bearer_token(&with_authorization(value)), None, "{value:?}");
        }
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }
}
