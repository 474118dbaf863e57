//! The admin listener (DESIGN 1.3): health, readiness, Prometheus metrics and the JSON API.
//!
//! Reads come straight from the current snapshot and the servers' atomics. Writes never touch
//! state here: they become [`Command`]s sent to the single controller task that owns the
//! registry (the same path SIGHUP takes), and the handler waits for its answer. Every write
//! needs the bearer token when one is configured; GET never mutates.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use serde_json::{Value, json};
use tether_core::AdminState;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use crate::snapshot::{BackendView, Snapshot};

/// A change asked for through the API, applied by the controller.
#[derive(Debug)]
pub enum Command {
    /// Re-read the configuration file.
    Reload(oneshot::Sender<Result<u64, String>>),
    /// Change a server's state and/or weight.
    SetServer {
        /// Backend name.
        backend: String,
        /// Server name.
        server: String,
        /// New state.
        state: Option<AdminState>,
        /// New weight.
        weight: Option<u32>,
        /// Answer: the new generation, or (status, message).
        reply: oneshot::Sender<Result<u64, (StatusCode, String)>>,
    },
    /// Add a server at runtime.
    AddServer {
        /// Backend name.
        backend: String,
        /// The server, validated like a config entry.
        server: crate::config::Server,
        /// Answer: the new generation, or (status, message).
        reply: oneshot::Sender<Result<u64, (StatusCode, String)>>,
    },
    /// Remove a server at runtime (its in-flight requests finish).
    RemoveServer {
        /// Backend name.
        backend: String,
        /// Server name.
        server: String,
        /// Answer: the new generation, or (status, message).
        reply: oneshot::Sender<Result<u64, (StatusCode, String)>>,
    },
    /// Forget every affinity binding of a backend's table.
    FlushSessions {
        /// Backend name.
        backend: String,
        /// Answer: entries removed.
        reply: oneshot::Sender<Result<u64, (StatusCode, String)>>,
    },
}

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

/// The admin router.
pub fn router(ctx: AdminContext) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/api/v1/reload", post(reload))
        .route("/api/v1/backends", get(backends))
        .route("/api/v1/backends/{b}", get(backend))
        .route("/api/v1/backends/{b}/servers", post(add_server))
        .route("/api/v1/backends/{b}/servers/{s}", patch(patch_server).delete(remove_server))
        .route("/api/v1/backends/{b}/sessions", get(sessions).delete(flush_sessions))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
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

/// Whether the request may proceed: no token configured, a read on a loopback address, or
/// the right bearer token (compared in constant time).
fn authorized(ctx: &AdminContext, headers: &HeaderMap, write: bool) -> bool {
    let Some(token) = &ctx.token else { return true };
    if !write && !ctx.token_for_reads {
        return true;
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    given.is_some_and(|g| {
        subtle::ConstantTimeEq::ct_eq(g.trim().as_bytes(), token.as_bytes()).into()
    })
}

/// The live dashboard: one self-contained page (no CDN), embedded in the binary.
const DASHBOARD: &str = include_str!("admin/dashboard.html");

async fn dashboard(State(ctx): State<AdminContext>, headers: HeaderMap) -> Response {
    if !authorized(&ctx, &headers, false) {
        return unauthorized();
    }
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

async fn metrics(State(ctx): State<AdminContext>, headers: HeaderMap) -> Response {
    if !authorized(&ctx, &headers, false) {
        return unauthorized();
    }
    let body = ctx.metrics.render(&ctx.current.load());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

async fn status(State(ctx): State<AdminContext>, headers: HeaderMap) -> Response {
    if !authorized(&ctx, &headers, false) {
        return unauthorized();
    }
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
            json!({
                "name": st.name(),
                "address": s.authority.as_str(),
                "weight": s.weight,
                "backup": s.backup,
                "health": if st.is_ejected() { "down" } else { st.health().as_str() },
                "health_reason": st.reason().as_str(),
                "last_change": (st.last_change() > 0).then(|| st.last_change()),
                "ejected": st.is_ejected(),
                "latency_buckets": st.latency_counts(),
                "state": st.admin_state().as_str(),
                "in_flight": st.in_flight(),
                "requests_total": st.requests_total(),
                "errors_total": st.errors_total(),
                "sessions_bound": b.table.as_ref().map(|t| t.sessions_bound(st.name())),
            })
        })
        .collect();
    json!({
        "name": &*b.name,
        "latency_bounds_ms": tether_core::server::LATENCY_BOUNDS_MS,
        "balance": cfg.map(|c| c.balance.as_str()),
        "sticky": b.sticky.as_ref().map(|s| s.config.mode.as_str()),
        "stick_table_entries": b.table.as_ref().map(|t| t.len()),
        "queue_waiting": b.waiting.load(std::sync::atomic::Ordering::Relaxed),
        "servers": servers,
    })
}

async fn backends(State(ctx): State<AdminContext>, headers: HeaderMap) -> Response {
    if !authorized(&ctx, &headers, false) {
        return unauthorized();
    }
    let snap = ctx.current.load();
    let list: Vec<Value> = snap.backends.iter().map(|b| backend_json(b, &snap)).collect();
    axum::Json(json!({ "backends": list })).into_response()
}

async fn backend(
    State(ctx): State<AdminContext>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&ctx, &headers, false) {
        return unauthorized();
    }
    let snap = ctx.current.load();
    match snap.backends.iter().find(|b| *b.name == *name) {
        Some(b) => axum::Json(backend_json(b, &snap)).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no backend {name:?}")),
    }
}

#[derive(serde::Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn sessions(
    State(ctx): State<AdminContext>,
    Path(name): Path<String>,
    Query(q): Query<Limit>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&ctx, &headers, false) {
        return unauthorized();
    }
    let snap = ctx.current.load();
    let Some(b) = snap.backends.iter().find(|b| *b.name == *name) else {
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
fn answer<T>(
    reply: Option<Result<T, (StatusCode, String)>>,
    ok: impl FnOnce(T) -> Response,
) -> Response {
    match reply {
        Some(Ok(v)) => ok(v),
        Some(Err((code, msg))) => error(code, msg),
        None => shutting_down(),
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

async fn reload(State(ctx): State<AdminContext>, headers: HeaderMap) -> Response {
    if !authorized(&ctx, &headers, true) {
        return unauthorized();
    }
    match ask(&ctx, Command::Reload).await {
        Some(Ok(generation)) => axum::Json(json!({ "generation": generation })).into_response(),
        Some(Err(e)) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
        None => shutting_down(),
    }
}

async fn patch_server(
    State(ctx): State<AdminContext>,
    Path((backend, server)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !authorized(&ctx, &headers, true) {
        return unauthorized();
    }
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
        match snap.backends.iter().find(|b| *b.name == *backend) {
            Some(b) => axum::Json(backend_json(b, &snap)).into_response(),
            None => StatusCode::NO_CONTENT.into_response(),
        }
    })
}

async fn add_server(
    State(ctx): State<AdminContext>,
    Path(backend): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !authorized(&ctx, &headers, true) {
        return unauthorized();
    }
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
    Path((backend, server)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&ctx, &headers, true) {
        return unauthorized();
    }
    let reply = ask(&ctx, |reply| Command::RemoveServer { backend, server, reply }).await;
    answer(reply, |generation| axum::Json(json!({ "generation": generation })).into_response())
}

async fn flush_sessions(
    State(ctx): State<AdminContext>,
    Path(backend): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&ctx, &headers, true) {
        return unauthorized();
    }
    let reply = ask(&ctx, |reply| Command::FlushSessions { backend, reply }).await;
    answer(reply, |n| axum::Json(json!({ "flushed": n })).into_response())
}

/// Whether an admin address may be served without a token.
pub fn is_loopback(addr: SocketAddr) -> bool {
    addr.ip().is_loopback()
}
