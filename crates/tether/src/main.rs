//! The `tether` command: `run`, `check`, `demo`, and `servers` and `drain` over the admin API.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tether::config::Config;
use tether::ctl::{self, AdminTarget, CtlError};
use tether::runtime::{Tether, Workers};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc malloc: the data path allocates small, short-lived buffers per
/// request, where glibc's arena bookkeeping showed up as ~6% of CPU (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tether",
    version,
    about = "An HTTP load balancer with session affinity done right"
)]
struct Cli {
    /// Log format; default: text on a terminal, json otherwise.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    /// Log level or filter (e.g. `info`, `warn`, `tether=debug`); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with the given configuration.
    Run {
        /// Configuration file.
        #[arg(short, long, default_value = "tether.toml")]
        config: PathBuf,
    },
    /// Validate a configuration file: exit 0 when valid, 1 with every error printed.
    Check {
        /// Configuration file.
        #[arg(short, long, default_value = "tether.toml")]
        config: PathBuf,
    },
    /// Self-contained demo: three demo servers behind a sticky Tether.
    Demo {
        /// Where the demo's load balancer listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the demo's admin API and dashboard listen.
        #[arg(long, default_value = "127.0.0.1:8081")]
        admin: SocketAddr,
    },
    /// Every backend's servers: health, admin state, in-flight, sessions bound, requests.
    Servers {
        #[command(flatten)]
        api: AdminArgs,
    },
    /// Put a server in `drain`: it keeps its pinned sessions and takes no new ones.
    Drain {
        /// The server's backend.
        backend: String,
        /// The server's name.
        server: String,
        /// Then follow its session count: exit 0 when it reaches 0, 1 at the timeout.
        #[arg(long)]
        wait: bool,
        /// With --wait: how long to wait for the sessions to end (e.g. `90s`, `10m`, `2h`).
        #[arg(long, default_value = "1h", value_parser = positive_duration, requires = "wait")]
        timeout: Duration,
        /// With --wait: time between two looks at the session count.
        #[arg(long, default_value = "1s", value_parser = positive_duration, requires = "wait")]
        interval: Duration,
        #[command(flatten)]
        api: AdminArgs,
    },
}

/// Where the admin API is and how to authenticate to it (`servers`, `drain`).
#[derive(Args)]
struct AdminArgs {
    /// Admin API URL, `http://HOST:PORT` [env: TETHER_ADMIN] [default: http://127.0.0.1:8081]
    #[arg(long, value_name = "URL")]
    admin: Option<String>,
    /// File holding the admin bearer token [else the token itself from env: TETHER_ADMIN_TOKEN]
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
}

impl AdminArgs {
    fn target(&self) -> Result<AdminTarget, CtlError> {
        let env = |name: &str| std::env::var(name).ok();
        AdminTarget::resolve(self.admin.as_deref(), self.token_file.as_deref(), env)
    }
}

/// A humantime duration (`500ms`, `30s`, `10m`) greater than zero.
fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be greater than zero".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{e}; write e.g. \"30s\", \"10m\", \"1h\"")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log_level);
    tether::tls::install_crypto_provider();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => run(config),
        Command::Demo { listen, admin } => {
            run_async(worker_threads(), tether::demo::run(listen, admin))
        }
        Command::Servers { api } => {
            ctl_exit(api.target().and_then(|t| ctl::servers(t, &mut std::io::stdout())))
        }
        Command::Drain { backend, server, wait, timeout, interval, api } => {
            let watch = wait.then_some(ctl::Watch { timeout, interval });
            let drain = |t| ctl::drain(t, &backend, &server, watch, &mut std::io::stdout());
            ctl_exit(api.target().and_then(drain))
        }
    }
}

/// Exit 0, or 1 with the error on one line of stderr.
fn ctl_exit(result: Result<(), CtlError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(c) => {
            let servers: usize = c.backends.iter().map(|b| b.servers.len()).sum();
            let sni: std::collections::BTreeSet<usize> =
                c.listeners.iter().flat_map(|l| l.sni_routes.iter().map(|r| r.position)).collect();
            println!(
                "{}: configuration ok ({} listeners, {} routes, {} backends, {} servers)",
                path.display(),
                c.listeners.len(),
                c.routes.len() + sni.len(),
                c.backends.len(),
                servers
            );
            for l in &c.listeners {
                for cert in l.tls.iter().flat_map(|t| &t.certs) {
                    println!(
                        "  listener {}: certificate {} for {} expires {} ({} days)",
                        l.name,
                        cert.files.cert.display(),
                        cert.names.join(", "),
                        cert.expires_rfc3339(),
                        cert.days_left()
                    );
                }
                if let Some(auth) = l.tls.as_ref().and_then(|t| t.client_auth.as_ref()) {
                    println!(
                        "  listener {}: client certificates {} (CA {}, {} certificate(s))",
                        l.name,
                        if auth.required { "required" } else { "optional" },
                        auth.file.display(),
                        auth.ca_count()
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint!("{}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// `tether run`: with several worker threads, thread per core ([`Workers`]) and the
/// controller on a runtime of its own; with one, everything on one current-thread runtime.
fn run(config: PathBuf) -> ExitCode {
    let threads = worker_threads();
    if threads == 1 {
        return run_async(1, serve(config, None));
    }
    match Workers::start(threads) {
        Ok(workers) => run_async(1, serve(config, Some(workers))),
        Err(e) => {
            tracing::error!(error = %e, "fatal: cannot start the worker threads");
            eprintln!("tether: cannot start the worker threads: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(path: PathBuf, workers: Option<Workers>) -> anyhow::Result<ExitCode> {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{}: {e}", path.display());
            tracing::error!(errors = e.0.len(), "invalid configuration; not starting");
            return Ok(ExitCode::FAILURE);
        }
    };
    let tether = match &workers {
        Some(w) => Tether::start_on(config, Some(path), w).await?,
        None => {
            // This runtime serves the connections itself.
            tokio::spawn(tether::runtime::keep_timers_near());
            Tether::start(config, Some(path)).await?
        }
    };
    let drained = tether.run_until_signal().await.context("installing signal handlers")?;
    if drained {
        tracing::info!("shutdown complete");
        Ok(ExitCode::SUCCESS)
    } else {
        tracing::warn!("shutdown complete; some requests were cut short");
        Ok(ExitCode::from(130))
    }
}

/// `TETHER_WORKER_THREADS`, else one per CPU this process may run on.
fn worker_threads() -> usize {
    std::env::var("TETHER_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
}

/// Runs `fut` on a runtime of `threads` threads.
fn run_async<F>(threads: usize, fut: F) -> ExitCode
where
    F: std::future::Future<Output = anyhow::Result<ExitCode>>,
{
    // One thread: a current-thread runtime has no cross-thread queues or work stealing to pay
    // for (see docs/performance.md for the measurement).
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .on_thread_park(tether::runtime::on_worker_park)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .on_thread_park(tether::runtime::on_worker_park)
            .enable_all()
            .build()
    };
    let result = match runtime {
        Ok(rt) => rt.block_on(fut),
        Err(e) => Err(anyhow::Error::new(e).context("starting the async runtime")),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "fatal");
            eprintln!("tether: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: Option<LogFormat>, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        Some(LogFormat::Json) => true,
        Some(LogFormat::Text) => false,
        None => !std::io::stdout().is_terminal(),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stdout);
    if json {
        builder.json().flatten_event(true).with_current_span(false).with_span_list(false).init();
    } else {
        builder.init();
    }
}
