//! `tether servers` and `tether drain`: the admin API from the command line.
//!
//! Draining a server is a promise about the future: it keeps the sessions pinned to it and
//! takes no new ones, so it can be taken out of service once the last of its sessions has
//! ended. These commands make that moment visible. `servers` prints every backend's servers
//! with their session counts; `drain BACKEND SERVER` sets the server's admin state to
//! `drain` (`PATCH /api/v1/backends/{b}/servers/{s}`) and, with `--wait`, polls
//! `GET /api/v1/backends/{b}` until its `sessions_bound` reaches 0 or the timeout passes.
//!
//! A count is either exact (a stick table, `sessions_exact` absent or true) or an estimate
//! (`sessions_exact: false`), shown with `~`. A backend whose servers report no count at all
//! (`sessions_bound: null`) cannot be waited on, and `--wait` says so instead of guessing.
//!
//! Every failure is one [`CtlError`], printed by the CLI on one line; exit status 1. The
//! commands run on a current-thread runtime of their own ([`block_on`]): one client, a few
//! requests, nothing to spread over threads.

mod client;

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tether_core::AdminState;
use tokio::time::Instant;

pub use self::client::{ADMIN_ENV, AdminTarget, DEFAULT_ADMIN, REQUEST_TIMEOUT, TOKEN_ENV};
use self::client::{Api, segment};

/// Why a command failed (exit status 1).
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// `--admin` / `TETHER_ADMIN` is not an `http://` URL the client can use.
    #[error("admin URL {url:?}: {why}")]
    AdminUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// `--token-file` could not be read or is empty.
    #[error("token file {}: {why}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// No answer: refused, unresolvable, cut, or none within [`REQUEST_TIMEOUT`].
    #[error("cannot reach the admin API at {url}: {why}")]
    Unreachable {
        /// The URL requested.
        url: String,
        /// The transport's error.
        why: String,
    },
    /// 401: the token is missing or wrong.
    #[error(
        "{url}: 401 Unauthorized: {}",
        if *token_given {
            "the admin token was refused (wrong token in --token-file or TETHER_ADMIN_TOKEN?)"
        } else {
            "the admin API needs a token: give it with --token-file or TETHER_ADMIN_TOKEN"
        }
    )]
    Unauthorized {
        /// The URL requested.
        url: String,
        /// Whether a token was sent (so it is wrong rather than missing).
        token_given: bool,
    },
    /// Any other error status, with the API's own message.
    #[error("{url}: {status}: {message}")]
    Api {
        /// The URL requested.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The API's `error` message (or the start of the body).
        message: String,
    },
    /// A 2xx answer that is not the JSON expected.
    #[error("{url}: unexpected answer: {why}")]
    Answer {
        /// The URL requested.
        url: String,
        /// What did not parse.
        why: String,
    },
    /// The server is not (or no longer) in its backend's listing.
    #[error("{backend}/{server} is not in the backend's servers (removed?)")]
    Gone {
        /// Backend name.
        backend: String,
        /// Server name.
        server: String,
    },
    /// `--wait` on a server whose backend reports no session count.
    #[error(
        "{backend}/{server} is draining, but the backend reports no session count for it \
         (cookie affinity keeps sessions in the clients' cookies): nothing to wait on"
    )]
    NoSessionCount {
        /// Backend name.
        backend: String,
        /// Server name.
        server: String,
    },
    /// `--timeout` passed before the server's sessions reached 0.
    #[error(
        "timed out after {}: {backend}/{server} still holds {remaining} (it stays in drain)",
        humantime::format_duration(*after)
    )]
    Timeout {
        /// Backend name.
        backend: String,
        /// Server name.
        server: String,
        /// The timeout.
        after: Duration,
        /// Sessions left at the last poll.
        remaining: SessionCount,
    },
    /// Writing the output failed (e.g. a closed pipe).
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
    /// The async runtime could not start.
    #[error("starting the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// `tether drain --wait`: how long to wait and how often to look.
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    /// Give up after this long (exit 1); the CLI's default is 1 h.
    pub timeout: Duration,
    /// Time between two polls; the CLI's default is 1 s.
    pub interval: Duration,
}

/// `tether servers`: every backend's servers as a table on `out`.
pub fn servers(target: AdminTarget, out: &mut impl Write) -> Result<(), CtlError> {
    block_on(async {
        let api = Api::new(target);
        let listing: BackendList = api.get("/api/v1/backends").await?;
        out.write_all(render_table(&listing.backends).as_bytes())?;
        Ok(())
    })
}

/// `tether drain BACKEND SERVER`: puts the server in `drain` and says so on `out`; with
/// `watch`, then follows its session count down to 0 ([`CtlError::Timeout`] if it does not
/// get there in time).
pub fn drain(
    target: AdminTarget,
    backend: &str,
    server: &str,
    watch: Option<Watch>,
    out: &mut impl Write,
) -> Result<(), CtlError> {
    block_on(async {
        let api = Api::new(target);
        let after = set_drain(&api, backend, server).await?;
        writeln!(out, "{}", drained_line(backend, server, after.as_ref()))?;
        match watch {
            Some(watch) => watch_sessions_end(&api, backend, server, watch, out).await,
            None => Ok(()),
        }
    })
}

/// Runs `fut` on a current-thread runtime made for it.
fn block_on<F: Future<Output = Result<(), CtlError>>>(fut: F) -> Result<(), CtlError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CtlError::Runtime)?;
    runtime.block_on(fut)
}

// === the API's JSON ===

/// `GET /api/v1/backends`.
#[derive(Debug, Deserialize)]
struct BackendList {
    backends: Vec<BackendJson>,
}

/// One backend, as `GET /api/v1/backends/{b}` and `PATCH .../servers/{s}` answer it (only
/// the fields these commands use; others are ignored).
#[derive(Debug, Deserialize)]
struct BackendJson {
    name: String,
    servers: Vec<ServerJson>,
}

#[derive(Debug, Deserialize)]
struct ServerJson {
    name: String,
    address: String,
    health: String,
    state: String,
    in_flight: u64,
    requests_total: u64,
    /// `null` when the backend keeps no count (cookie affinity without an estimate).
    sessions_bound: Option<u64>,
    /// `false` when `sessions_bound` is an estimate; absent from older Tethers (exact).
    #[serde(default)]
    sessions_exact: Option<bool>,
    /// `config` or `dns` (discovery); absent from older Tethers.
    #[serde(default)]
    source: Option<String>,
}

impl BackendJson {
    fn server(&self, name: &str) -> Option<&ServerJson> {
        self.servers.iter().find(|s| s.name == name)
    }
}

/// A server's session count as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionCount {
    /// Sessions bound.
    pub n: u64,
    /// False when the figure is an estimate.
    pub exact: bool,
}

impl SessionCount {
    fn of(s: &ServerJson) -> Option<Self> {
        Some(Self { n: s.sessions_bound?, exact: s.sessions_exact.unwrap_or(true) })
    }
}

/// `42 sessions`, `1 session`, or `~42 sessions` for an estimate.
impl fmt::Display for SessionCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let about = if self.exact { "" } else { "~" };
        let plural = if self.n == 1 { "" } else { "s" };
        write!(f, "{about}{} session{plural}", self.n)
    }
}

// === drain ===

/// `PATCH {"state": "drain"}`; the backend as the API answers it after the change.
async fn set_drain(
    api: &Api,
    backend: &str,
    server: &str,
) -> Result<Option<BackendJson>, CtlError> {
    let path = format!("/api/v1/backends/{}/servers/{}", segment(backend), segment(server));
    let body = serde_json::json!({ "state": AdminState::Drain.as_str() });
    api.patch(&path, &body).await
}

/// What `drain` did, from the backend the API answered with (if it did).
fn drained_line(backend: &str, server: &str, after: Option<&BackendJson>) -> String {
    let found = after.and_then(|b| b.server(server));
    let keeps = match found.and_then(SessionCount::of) {
        Some(count) => format!("keeps its {count}"),
        None => "keeps its pinned sessions".to_owned(),
    };
    let in_flight = found.map_or(String::new(), |s| format!(" ({} in flight)", s.in_flight));
    format!("{backend}/{server}: state drain; it {keeps} and takes no new ones{in_flight}")
}

/// Polls the backend every `watch.interval`, printing the count with a timestamp whenever
/// it changes, until it is 0 (`Ok`) or `watch.timeout` has passed ([`CtlError::Timeout`]).
/// The last poll happens at the deadline, so a count reaching 0 just in time counts. A
/// timeout too long for the clock to add (centuries) is no deadline.
async fn watch_sessions_end(
    api: &Api,
    backend: &str,
    server: &str,
    watch: Watch,
    out: &mut impl Write,
) -> Result<(), CtlError> {
    let deadline = Instant::now().checked_add(watch.timeout);
    let mut shown = None;
    loop {
        let count = poll_sessions(api, backend, server).await?;
        if shown != Some(count) {
            writeln!(out, "{} {server}: {count}", timestamp())?;
            out.flush()?;
            shown = Some(count);
        }
        if count.n == 0 {
            writeln!(out, "{backend}/{server} holds no sessions: it can be taken out")?;
            return Ok(());
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            let (backend, server) = (backend.to_owned(), server.to_owned());
            return Err(CtlError::Timeout {
                backend,
                server,
                after: watch.timeout,
                remaining: count,
            });
        }
        let left = deadline.map_or(watch.interval, |d| d - now);
        tokio::time::sleep(watch.interval.min(left)).await;
    }
}

/// The server's session count now.
async fn poll_sessions(api: &Api, backend: &str, server: &str) -> Result<SessionCount, CtlError> {
    let b: BackendJson = api.get(&format!("/api/v1/backends/{}", segment(backend))).await?;
    let gone = || CtlError::Gone { backend: backend.to_owned(), server: server.to_owned() };
    let s = b.server(server).ok_or_else(gone)?;
    SessionCount::of(s).ok_or_else(|| CtlError::NoSessionCount {
        backend: backend.to_owned(),
        server: server.to_owned(),
    })
}

/// Now, in UTC to the second (`2025-06-01T10:00:00Z`).
fn timestamp() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

// === servers ===

const HEADER: [&str; COLUMNS] = [
    "BACKEND",
    "SERVER",
    "ADDRESS",
    "SOURCE",
    "HEALTH",
    "STATE",
    "IN-FLIGHT",
    "SESSIONS",
    "REQUESTS",
];

/// Columns of the table.
const COLUMNS: usize = 9;

/// The columns from IN-FLIGHT on hold numbers and are aligned right.
const FIRST_NUMBER_COLUMN: usize = 6;

/// The table of `tether servers`: one row per server, columns two spaces apart. Sessions are
/// `-` without a count and end in `~` when estimated (exact figures then end in a space, so
/// the digits stay aligned).
fn render_table(backends: &[BackendJson]) -> String {
    let any_estimate = backends
        .iter()
        .flat_map(|b| &b.servers)
        .any(|s| SessionCount::of(s).is_some_and(|c| !c.exact));
    let mut rows = vec![HEADER.map(str::to_owned)];
    for b in backends {
        for s in &b.servers {
            rows.push([
                b.name.clone(),
                s.name.clone(),
                s.address.clone(),
                s.source.clone().unwrap_or_else(|| "-".to_owned()),
                s.health.clone(),
                s.state.clone(),
                s.in_flight.to_string(),
                sessions_cell(SessionCount::of(s), any_estimate),
                s.requests_total.to_string(),
            ]);
        }
    }
    align(&rows)
}

fn sessions_cell(count: Option<SessionCount>, any_estimate: bool) -> String {
    match count {
        None if any_estimate => "- ".to_owned(),
        None => "-".to_owned(),
        Some(c) if !c.exact => format!("{}~", c.n),
        Some(c) if any_estimate => format!("{} ", c.n),
        Some(c) => c.n.to_string(),
    }
}

/// `rows` as lines of padded columns.
fn align(rows: &[[String; COLUMNS]]) -> String {
    let mut widths = [0; COLUMNS];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                if i >= FIRST_NUMBER_COLUMN { format!("{cell:>w$}") } else { format!("{cell:<w$}") }
            })
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests;
