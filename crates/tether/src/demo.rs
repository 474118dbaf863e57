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
use crate::server::Tether;

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
    Start(#[from] crate::server::StartError),
}

/// Runs the demo until Ctrl-C. Returns the process exit code.
pub async fn run(listen: SocketAddr) -> anyhow::Result<std::process::ExitCode> {
    let mut servers = Vec::new();
    for name in DEMO_SERVERS {
        servers.push((name, start_demo_server(name).await.map_err(DemoError::from)?));
    }
    let config = Config::parse_with_env_keys(&demo_config(listen, &servers), None)
        .map_err(DemoError::from)?;
    let tether = Tether::start(config, None).await.map_err(DemoError::from)?;
    let url = tether.addresses().first().map(|(_, a)| format!("http://{a}/")).unwrap_or_default();
    print_instructions(&url, &servers);
    let drained = tether.run_until_signal().await?;
    println!("demo stopped");
    Ok(if drained { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(130) })
}

/// The configuration the demo runs with: cookie affinity over the three demo servers.
pub fn demo_config(listen: SocketAddr, servers: &[(&str, SocketAddr)]) -> String {
    let mut s = format!(
        "grace_period = \"2s\"\n\n[[listeners]]\nname = \"demo\"\naddress = \"{listen}\"\n\
         default_backend = \"app\"\n\n[backends.app]\nbalance = \"round_robin\"\n\n\
         [backends.app.sticky]\nmode = \"cookie\"\ncookie_name = \"tether\"\nidle_timeout = \"30m\"\n"
    );
    for (name, addr) in servers {
        s.push_str(&format!(
            "\n[[backends.app.servers]]\nname = \"{name}\"\naddress = \"{addr}\"\n"
        ));
    }
    s
}

fn print_instructions(url: &str, servers: &[(&str, SocketAddr)]) {
    println!("\nTether demo is running: a sticky load balancer at {url}");
    for (name, addr) in servers {
        println!("  demo server {name:8} on {addr}");
    }
    println!(
        "\nTry it:\n\
         \x20 curl -c jar -b jar {url}     # repeat: same server, your visit count climbs\n\
         \x20 curl {url}                   # no cookie jar: each request is a new session (round robin)\n\
         \x20 curl -v -c jar -b jar {url}  # see the signed `tether` affinity cookie in Set-Cookie\n\
         \nThe counter lives in each server's own memory: with affinity it keeps climbing;\n\
         without it, the count would start again on another server.\n\
         Press Ctrl-C to stop.\n"
    );
}

/// Starts one demo server on 127.0.0.1 (free port) and returns its address.
pub async fn start_demo_server(name: &'static str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let state =
        Arc::new(DemoState { visits: Mutex::new(HashMap::new()), ids: SplitMix::default() });
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let state = Arc::clone(&state);
            let svc = service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(state.answer(name, req).await) }
            });
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Ok(addr)
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
