//! `tether demo`: three demo servers and a sticky Tether in front of them, in one process.
//!
//! Each demo server answers with its name and a per-visitor visit counter kept in *its own
//! memory* (keyed by a `demo_visitor` cookie it hands out). With affinity working, a visitor's
//! count climbs on one server; if affinity broke, the count would restart on another server —
//! exactly the cost of lost stickiness that Tether exists to avoid.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tether_core::rng::SplitMix;
use tokio::net::TcpListener;
use tokio::sync::Mutex;

use crate::config::Config;
use crate::runtime::Tether;

/// Names of the demo servers.
pub const DEMO_SERVERS: [&str; 3] = ["alpha", "bravo", "charlie"];

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A socket could not be bound or used.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The generated configuration was refused (a bug).
    #[error("{0}")]
    Config(#[from] crate::config::ConfigErrors),
    /// Tether could not start (e.g. the port is taken).
    #[error("{0}; try `tether demo --listen 127.0.0.1:8090`")]
    Start(#[from] crate::runtime::StartError),
}

/// Runs the demo until Ctrl-C. Returns the process exit code.
pub async fn run(listen: SocketAddr, admin: SocketAddr) -> anyhow::Result<std::process::ExitCode> {
    let mut servers = Vec::new();
    for name in DEMO_SERVERS {
        servers.push(DemoServer::start(name).await.map_err(DemoError::from)?);
    }
    let addrs: Vec<(&str, SocketAddr)> = servers.iter().map(|s| (s.name, s.addr)).collect();
    let config = Config::parse_with_env_keys(&demo_config(listen, admin, &addrs), None)
        .map_err(DemoError::from)?;
    let control = Arc::new(Mutex::new(servers));
    let tether = Tether::start_with(config, None, Some(control_router(Arc::clone(&control))))
        .await
        .map_err(DemoError::from)?;
    let url = tether.addresses().first().map(|(_, a)| format!("http://{a}/")).unwrap_or_default();
    let dashboard = tether.admin_address().map(|a| format!("http://{a}/")).unwrap_or_default();
    print_instructions(&url, &dashboard, &addrs);
    let drained = tether.run_until_signal().await?;
    println!("demo stopped");
    Ok(if drained { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(130) })
}

/// The configuration the demo runs with: cookie affinity over the three demo servers, fast
/// TCP health checks (so a stopped server shows as down within a second), slow start, and the
/// admin listener with the dashboard.
pub fn demo_config(
    listen: SocketAddr,
    admin: SocketAddr,
    servers: &[(&str, SocketAddr)],
) -> String {
    let mut s = format!(
        "grace_period = \"2s\"\n\n[[listeners]]\nname = \"demo\"\naddress = \"{listen}\"\n\
         default_backend = \"app\"\n\n[backends.app]\nbalance = \"round_robin\"\nslow_start = \"10s\"\n\n\
         [backends.app.health_check]\ntype = \"tcp\"\ninterval = \"500ms\"\ntimeout = \"300ms\"\nrise = 2\nfall = 1\n\n\
         [backends.app.sticky]\nmode = \"cookie\"\ncookie_name = \"tether\"\nidle_timeout = \"30m\"\n"
    );
    for (name, addr) in servers {
        s.push_str(&format!(
            "\n[[backends.app.servers]]\nname = \"{name}\"\naddress = \"{addr}\"\n"
        ));
    }
    s.push_str(&format!("\n[admin]\naddress = \"{admin}\"\n"));
    s
}

fn print_instructions(url: &str, dashboard: &str, servers: &[(&str, SocketAddr)]) {
    println!("\nTether demo is running: a sticky load balancer at {url}");
    println!("Dashboard: {dashboard}   (stop and start demo servers there to watch failover)");
    for (name, addr) in servers {
        println!("  demo server {name:8} on {addr}");
    }
    println!(
        "\nTry it:\n\
         \x20 curl -c jar -b jar {url}     # repeat: same server, your visit count climbs\n\
         \x20 curl {url}                   # no cookie jar: each request is a new session (round robin)\n\
         \x20 curl -v -c jar -b jar {url}  # see the signed `tether` affinity cookie in Set-Cookie\n\
         \nThe counter lives in each server's own memory: with affinity it keeps climbing;\n\
         without it, the count would start again on another server. Stop your server from the\n\
         dashboard and your next request is served elsewhere, with a new cookie.\n\
         Press Ctrl-C to stop.\n"
    );
}

/// A demo server that can be stopped and started again on the same port.
pub struct DemoServer {
    name: &'static str,
    addr: SocketAddr,
    state: Arc<DemoState>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl DemoServer {
    /// Starts `name` on a free port of 127.0.0.1.
    pub async fn start(name: &'static str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state =
            Arc::new(DemoState { visits: Mutex::new(HashMap::new()), ids: SplitMix::default() });
        let task = Some(tokio::spawn(serve(name, listener, Arc::clone(&state))));
        Ok(Self { name, addr, state, task })
    }

    /// Whether it is accepting connections.
    pub fn running(&self) -> bool {
        self.task.is_some()
    }

    /// Stops it: the port closes and open connections are dropped, like a crash.
    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Starts it again on the same port, with its memory (visit counts) intact.
    pub async fn resume(&mut self) -> std::io::Result<()> {
        if self.task.is_none() {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.set_reuseaddr(true)?;
            socket.bind(self.addr)?;
            let listener = socket.listen(1024)?;
            self.task = Some(tokio::spawn(serve(self.name, listener, Arc::clone(&self.state))));
        }
        Ok(())
    }
}

async fn serve(name: &'static str, listener: TcpListener, state: Arc<DemoState>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let state = Arc::clone(&state);
        let svc = service_fn(move |req| {
            let state = Arc::clone(&state);
            async move { Ok::<_, Infallible>(state.answer(name, req).await) }
        });
        // Connections live in this task's JoinSet, so stopping the server drops them too.
        conns.spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
        while conns.try_join_next().is_some() {}
    }
}

type Control = Arc<Mutex<Vec<DemoServer>>>;

/// Admin API extension of the demo: list, stop and start the demo servers.
fn control_router(control: Control) -> axum::Router {
    use axum::extract::{Path, State};
    use axum::routing::{get, post};
    async fn list(State(c): State<Control>) -> axum::Json<serde_json::Value> {
        let servers = c.lock().await;
        let list: Vec<_> = servers
            .iter()
            .map(|s| serde_json::json!({ "name": s.name, "address": s.addr.to_string(), "running": s.running() }))
            .collect();
        axum::Json(serde_json::json!({ "servers": list }))
    }
    async fn act(
        State(c): State<Control>,
        Path((name, action)): Path<(String, String)>,
    ) -> (http::StatusCode, String) {
        let mut servers = c.lock().await;
        let Some(s) = servers.iter_mut().find(|s| s.name == name) else {
            return (http::StatusCode::NOT_FOUND, format!("no demo server {name:?}\n"));
        };
        match action.as_str() {
            "stop" => s.stop(),
            "start" => {
                if let Err(e) = s.resume().await {
                    return (
                        http::StatusCode::INTERNAL_SERVER_ERROR,
                        format!("cannot restart: {e}\n"),
                    );
                }
            }
            _ => return (http::StatusCode::NOT_FOUND, "action must be stop or start\n".into()),
        }
        tracing::info!(server = %name, action = %action, "demo server changed from the dashboard");
        (http::StatusCode::OK, format!("{name}: {action}\n"))
    }
    axum::Router::new()
        .route("/api/v1/demo", get(list))
        .route("/api/v1/demo/servers/{name}/{action}", post(act))
        .with_state(control)
}

struct DemoState {
    visits: Mutex<HashMap<u64, u64>>,
    ids: SplitMix,
}

impl DemoState {
    async fn answer(&self, name: &str, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let visitor = req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|p| p.trim().strip_prefix("demo_visitor="))
            .find_map(|v| v.parse::<u64>().ok());
        let (id, new) = match visitor {
            Some(id) => (id, false),
            None => (self.ids.below(1_000_000), true),
        };
        let count = {
            let mut visits = self.visits.lock().await;
            let c = visits.entry(id).or_insert(0);
            *c += 1;
            *c
        };
        let body = format!(
            "Hello from {name}! Visit #{count} of visitor {id} on this server.\n\
             (Counts live in {name}'s memory only: a new server would start again at 1.)\n"
        );
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert("x-demo-server", header::HeaderValue::from_static(static_name(name)));
        if new {
            if let Ok(v) = header::HeaderValue::from_str(&format!("demo_visitor={id}; Path=/")) {
                h.insert(header::SET_COOKIE, v);
            }
        }
        resp
    }
}

fn static_name(name: &str) -> &'static str {
    DEMO_SERVERS.iter().find(|n| **n == name).copied().unwrap_or("demo")
}
