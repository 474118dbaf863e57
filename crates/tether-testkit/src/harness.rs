//! Runs the real `tether` binary as a child process, the way an operator would, and reads
//! what it says through its JSON logs.
//!
//! The harness relies on this log contract of `tether --log-format json`: one JSON object
//! per line on stdout, with `message` and flattened fields, e.g.
//! `{"message":"listener bound","listener":"web","address":"127.0.0.1:40123",...}`;
//! reloads end with `"config reloaded"` or `"reload failed"`, with `"trigger":"signal"` for
//! a SIGHUP's (`"api"` for the admin API's).
//!
//! ```no_run
//! # async fn demo() -> Result<(), tether_testkit::HarnessError> {
//! use tether_testkit::Tether;
//! use tether_testkit::config::{Config, Listener};
//!
//! // In the tether crate's integration tests: env!("CARGO_BIN_EXE_tether").
//! let bin = "target/debug/tether";
//! let tether = Tether::start(bin, Config::new().listener(Listener::new("web"))).await?;
//! let url = tether.url("web"); // http://127.0.0.1:PORT
//! # Ok(()) }
//! ```
//!
//! Wherever a configuration is given, anything that displays as the file's text will do: a
//! [`Config`](crate::config::Config), or a string for a file the builder cannot make (one
//! that is not TOML at all, on purpose).

mod logs;

use std::collections::HashSet;
use std::fmt::Display;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::scratch::ScratchDir;
use crate::wait::POLL_INTERVAL;
use logs::LogCapture;

/// How long [`Tether::start`] waits for every listener to be bound: 20 s.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(20);

/// How long [`Tether::reload`] waits for the reload outcome: 10 s.
pub const RELOAD_DEADLINE: Duration = Duration::from_secs(10);

/// Log lines shown in errors and when a test panics with a running tether.
const LOG_TAIL: usize = 40;

/// Why the harness could not do what a test asked.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A file, process or `/proc` operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What the harness was doing.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The configuration given to [`Tether::start`] is not TOML (the harness counts its
    /// `[[listeners]]`).
    #[error("config is not valid TOML: {0}")]
    InvalidToml(#[from] toml::de::Error),
    /// The process ended while the harness was waiting for something.
    #[error("tether exited ({status}) while waiting for {waiting_for}; last log lines:\n{logs}")]
    Exited {
        /// How it ended.
        status: ExitStatus,
        /// What the harness was waiting for.
        waiting_for: String,
        /// The last log lines.
        logs: String,
    },
    /// The awaited log line did not come in time.
    #[error("timed out after {after:?} waiting for {waiting_for}; last log lines:\n{logs}")]
    Timeout {
        /// The deadline that passed.
        after: Duration,
        /// What the harness was waiting for.
        waiting_for: String,
        /// The last log lines.
        logs: String,
    },
    /// `kill` refused to deliver a signal.
    #[error("`kill -s {signal} {pid}` failed ({status}): {stderr}")]
    Signal {
        /// The signal name, e.g. `HUP`.
        signal: String,
        /// The target process.
        pid: u32,
        /// How `kill` ended.
        status: ExitStatus,
        /// What `kill` printed.
        stderr: String,
    },
}

/// Wraps an `io::Error` with what the harness was doing.
fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> HarnessError {
    let what = what.into();
    move |source| HarnessError::Io { what, source }
}

/// A running `tether` process with its own config file in a scratch directory.
///
/// Dropping it kills the process (SIGKILL) and removes the directory; if the test is
/// panicking, the last log lines are printed first.
#[derive(Debug)]
pub struct Tether {
    child: Child,
    config_path: PathBuf,
    logs: LogCapture,
    // Last, so the directory outlives the process that uses it.
    dir: ScratchDir,
}

// === impl Tether ===

impl Tether {
    /// Writes `config` to a fresh directory, spawns
    /// `BIN --log-format json run -c <dir>/tether.toml` (working directory `<dir>`), and waits
    /// up to [`STARTUP_DEADLINE`] until a `"listener bound"` line has appeared for each
    /// `[[listeners]]` entry.
    pub async fn start(bin: impl AsRef<Path>, config: impl Display) -> Result<Self, HarnessError> {
        Self::start_with_env(bin, config, &[]).await
    }

    /// Like [`Tether::start`], with `env` added to the process's environment (e.g.
    /// `[("TETHER_WORKER_THREADS", "2")]`).
    pub async fn start_with_env(
        bin: impl AsRef<Path>,
        config: impl Display,
        env: &[(&str, &str)],
    ) -> Result<Self, HarnessError> {
        let config_toml = config.to_string();
        let listeners = listener_count(&config_toml)?;
        let mut tether = Self::spawn_with_env(bin, &config_toml, env)?;
        tether.wait_for_listeners(listeners, STARTUP_DEADLINE).await?;
        Ok(tether)
    }

    /// Like [`Tether::start`] without waiting for anything: for tests of startup itself.
    pub fn spawn(bin: impl AsRef<Path>, config: impl Display) -> Result<Self, HarnessError> {
        Self::spawn_with_env(bin, config, &[])
    }

    /// Like [`Tether::spawn`], with `env` added to the process's environment.
    pub fn spawn_with_env(
        bin: impl AsRef<Path>,
        config: impl Display,
        env: &[(&str, &str)],
    ) -> Result<Self, HarnessError> {
        let bin = bin.as_ref();
        let dir = ScratchDir::new("test").map_err(io_error("creating a scratch directory"))?;
        let config_path = dir.path().join("tether.toml");
        write_atomically(&config_path, &config.to_string())?;
        let mut child = Command::new(bin)
            .args(["--log-format", "json", "run", "-c"])
            .arg(&config_path)
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io_error(format!("spawning {}", bin.display())))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            unreachable!("both pipes were requested above");
        };
        let logs = match LogCapture::start(stdout, stderr) {
            Ok(logs) => logs,
            Err(source) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io_error("starting log reader threads")(source));
            }
        };
        Ok(Self { child, config_path, logs, dir })
    }

    /// Waits until `count` distinct listeners have logged `"listener bound"`.
    pub async fn wait_for_listeners(
        &mut self,
        count: usize,
        deadline: Duration,
    ) -> Result<(), HarnessError> {
        let end = Instant::now() + deadline;
        let mut bound = HashSet::new();
        let mut since = 0;
        while bound.len() < count {
            let remaining = end.saturating_duration_since(Instant::now());
            let Some((index, line)) = self.logs.wait_for(since, is_listener_bound, remaining).await
            else {
                let waiting_for = format!("{count} listeners to be bound");
                return Err(self.failure(deadline, waiting_for).await);
            };
            since = index + 1;
            bound.insert(line["listener"].to_string());
        }
        Ok(())
    }

    /// The address listener `name` is bound to, from its latest `"listener bound"` line.
    ///
    /// # Panics
    /// When no such line has been logged (the test names a listener that does not exist).
    pub fn listener_addr(&self, name: &str) -> SocketAddr {
        self.try_listener_addr(name).unwrap_or_else(|| {
            panic!(
                "no \"listener bound\" log line with a valid address for listener {name:?}; \
                 last log lines:\n{}",
                self.logs.tail(LOG_TAIL)
            )
        })
    }

    /// Like [`Tether::listener_addr`], `None` instead of panicking.
    pub fn try_listener_addr(&self, name: &str) -> Option<SocketAddr> {
        let line =
            self.logs.find_last(|line| is_listener_bound(line) && line["listener"] == name)?;
        line["address"].as_str()?.parse().ok()
    }

    /// `http://ADDRESS` of listener `name`; panics like [`Tether::listener_addr`].
    pub fn url(&self, name: &str) -> String {
        format!("http://{}", self.listener_addr(name))
    }

    /// Replaces the config file's content (atomically: write a sibling, then rename). The
    /// process only notices on reload, e.g. after [`Tether::signal`]`("HUP")`.
    pub fn write_config(&self, config: impl Display) -> Result<(), HarnessError> {
        write_atomically(&self.config_path, &config.to_string())
    }

    /// Writes `config`, sends SIGHUP and waits up to [`RELOAD_DEADLINE`] for the
    /// outcome: the `"config reloaded"` or `"reload failed"` line of a signal logged after it.
    pub async fn reload(&mut self, config: impl Display) -> Result<Value, HarnessError> {
        self.write_config(config)?;
        let mark = self.log_mark();
        self.signal("HUP")?;
        // A reload asked through the admin API logs the same lines, maybe late (stderr is read
        // on its own thread): only a signal's counts.
        let outcome = |line: &Value| {
            (line["message"] == "config reloaded" || line["message"] == "reload failed")
                && line["trigger"] == "signal"
        };
        match self.logs.wait_for(mark, outcome, RELOAD_DEADLINE).await {
            Some((_, line)) => Ok(line),
            None => Err(self.failure(RELOAD_DEADLINE, "the reload outcome".into()).await),
        }
    }

    /// Sends signal `signal` (a name `kill -s` accepts: `HUP`, `TERM`, `INT`, ...).
    pub fn signal(&self, signal: &str) -> Result<(), HarnessError> {
        let pid = self.pid();
        let output = Command::new("kill")
            .args(["-s", signal, &pid.to_string()])
            .output()
            .map_err(io_error("running kill"))?;
        if output.status.success() {
            return Ok(());
        }
        Err(HarnessError::Signal {
            signal: signal.to_owned(),
            pid,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// Every line logged so far, in order; non-JSON lines as `{"raw": ..., "stream": ...}`.
    pub fn logs(&self) -> Vec<Value> {
        self.logs.snapshot()
    }

    /// The number of lines logged so far: pass it to [`Tether::wait_for_log_since`] to
    /// ignore everything logged before an action.
    pub fn log_mark(&self) -> usize {
        self.logs.len()
    }

    /// The first line, old or new, matching `pred`; waits for it up to `deadline`.
    /// `None` when it did not come in time or the process ended without logging it.
    pub async fn wait_for_log(
        &self,
        pred: impl Fn(&Value) -> bool,
        deadline: Duration,
    ) -> Option<Value> {
        self.wait_for_log_since(0, pred, deadline).await
    }

    /// Like [`Tether::wait_for_log`], looking only at lines after `mark`
    /// (from [`Tether::log_mark`]).
    pub async fn wait_for_log_since(
        &self,
        mark: usize,
        pred: impl Fn(&Value) -> bool,
        deadline: Duration,
    ) -> Option<Value> {
        let found = self.logs.wait_for(mark, pred, deadline).await;
        found.map(|(_, line)| line)
    }

    /// Waits up to `deadline` for the process to exit; `None` if it still runs. Once it has
    /// exited, also waits (within the same deadline) until everything it printed has been
    /// captured, so [`Tether::logs`] then holds its last words.
    pub async fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + deadline;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.logs.wait_ended(end.saturating_duration_since(Instant::now())).await;
                return Some(status);
            }
            let now = Instant::now();
            if now >= end {
                return None;
            }
            tokio::time::sleep(POLL_INTERVAL.min(end - now)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the process in bytes (`VmRSS` of `/proc/PID/status`; Linux only).
    pub fn rss_bytes(&self) -> Result<u64, HarnessError> {
        let path = format!("/proc/{}/status", self.pid());
        let status = fs::read_to_string(&path).map_err(io_error(format!("reading {path}")))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kib| kib.trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .ok_or_else(|| {
                let source = io::Error::new(io::ErrorKind::InvalidData, "no VmRSS line in kB");
                io_error(format!("reading {path}"))(source)
            })
    }

    /// The scratch directory (the process's working directory), for extra files a config
    /// refers to.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config file the process was started with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The error for a wait that ended without its line: the process exited, or time ran out.
    async fn failure(&mut self, after: Duration, waiting_for: String) -> HarnessError {
        // Output ends a moment before the process can be reaped: give it that moment.
        let exited = self.wait_exit(Duration::from_secs(1)).await;
        let logs = self.logs.tail(LOG_TAIL);
        match exited {
            Some(status) => HarnessError::Exited { status, waiting_for, logs },
            None => HarnessError::Timeout { after, waiting_for, logs },
        }
    }
}

impl Drop for Tether {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("tether (pid {}) last log lines:\n{}", self.pid(), self.logs.tail(LOG_TAIL));
        }
        // Fails only if the process was already reaped; wait() then reaps it if not.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `tether check` said about a configuration.
#[derive(Debug, Clone)]
pub struct CheckOutput {
    /// The exit code; `None` if the process was killed by a signal.
    pub code: Option<i32>,
    /// Everything printed on stdout.
    pub stdout: String,
    /// Everything printed on stderr.
    pub stderr: String,
}

/// Writes `config` to a fresh directory and runs `BIN check -c <file>` to completion.
pub fn run_check(bin: impl AsRef<Path>, config: impl Display) -> Result<CheckOutput, HarnessError> {
    let bin = bin.as_ref();
    let dir = ScratchDir::new("test").map_err(io_error("creating a scratch directory"))?;
    let config_path = dir.path().join("tether.toml");
    write_atomically(&config_path, &config.to_string())?;
    let output = Command::new(bin)
        .args(["check", "-c"])
        .arg(&config_path)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .map_err(io_error(format!("running {} check", bin.display())))?;
    Ok(CheckOutput {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Number of listeners a config binds: its `[[listeners]]` entries, plus the admin listener
/// (logged as listener `admin`) when an `[admin]` table is present.
fn listener_count(config_toml: &str) -> Result<usize, HarnessError> {
    let config: toml::Table = toml::from_str(config_toml)?;
    let listeners = config.get("listeners").and_then(toml::Value::as_array);
    let admin = usize::from(config.get("admin").is_some_and(toml::Value::is_table));
    Ok(listeners.map_or(0, Vec::len) + admin)
}

fn is_listener_bound(line: &Value) -> bool {
    line["message"] == "listener bound"
}

/// Writes `content` to a sibling file, then renames it over `path`, so the process never
/// reads a half-written config.
fn write_atomically(path: &Path, content: &str) -> Result<(), HarnessError> {
    let partial = path.with_extension("toml.partial");
    fs::write(&partial, content).map_err(io_error(format!("writing {}", partial.display())))?;
    fs::rename(&partial, path).map_err(io_error(format!("replacing {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_count_counts_listener_tables() {
        let config = "[[listeners]]\nname = \"a\"\n[[listeners]]\nname = \"b\"\n[other]\n";
        assert_eq!(listener_count(config).unwrap(), 2);
        assert_eq!(listener_count("[admin]\n").unwrap(), 1, "the admin listener counts");
        assert!(matches!(listener_count("[[listeners]\n"), Err(HarnessError::InvalidToml(_))));
    }
}
