//! A real `redis-server` for the shared stick table's tests, and just enough of its protocol
//! (RESP) to look inside it.
//!
//! Each [`RedisServer`] is its own `redis-server` process on a free loopback port, in its own
//! temporary directory, with persistence off (`--save "" --appendonly no`), so a restart
//! comes back empty the way a crashed cache does. Tests break it on purpose: [`kill`]
//! (SIGKILL), [`pause`] / [`resume`] (SIGSTOP / SIGCONT) and [`restart`] on the same port.
//!
//! `redis-server` must be installed (`scripts/test.sh` installs Debian's `redis-server`);
//! when it is missing, [`RedisServer::start`] fails with [`RedisError::NotInstalled`] rather
//! than letting the test skip, because a skipped test proves nothing.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tether_testkit::redis::RedisError> {
//! use tether_testkit::redis::RedisServer;
//!
//! let mut redis = RedisServer::start().await?;
//! let url = redis.url(); // redis://127.0.0.1:PORT, for `[stick_table] redis_url`
//! assert_eq!(redis.dbsize().await?, 0);
//! redis.kill()?; // connections now fail
//! redis.restart().await?; // same port, empty
//! # Ok(()) }
//! ```
//!
//! [`RedisServer::start_tls`] runs one that speaks TLS only, with a certificate from a
//! [`TestCa`], and [`RedisCluster`] a Redis Cluster of several primaries.
//!
//! [`kill`]: RedisServer::kill
//! [`pause`]: RedisServer::pause
//! [`resume`]: RedisServer::resume
//! [`restart`]: RedisServer::restart

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::tls::{TestCa, tls_connect, write_pem};
use crate::wait::POLL_INTERVAL;

mod cluster;

pub use cluster::{CLUSTER_DEADLINE, NODE_TIMEOUT_MS, REDIS_CLI, RedisCluster};

/// The executable started, looked up on `PATH`.
pub const REDIS_SERVER: &str = "redis-server";

/// How long [`RedisServer::start`] and [`RedisServer::restart`] wait for `PING`: 10 s.
pub const START_DEADLINE: Duration = Duration::from_secs(10);

/// How long one command ([`RedisServer::command`]) may take, connecting included: 5 s.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(5);

/// Fresh ports [`RedisServer::start`] tries when another process takes the one it picked.
const PORT_ATTEMPTS: usize = 3;

/// Lines of the server's log file shown in errors.
const LOG_TAIL: usize = 20;

/// Why the Redis server or a command to it failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// `redis-server` is not on `PATH`.
    #[error(
        "`{REDIS_SERVER}` not found on PATH; install it: `apt-get install redis-server` on \
         Debian (scripts/test.sh does this when run as root)"
    )]
    NotInstalled,
    /// A file, process, socket or signal operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What the harness was doing.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The server exited or did not answer `PING` in time.
    #[error("redis-server on port {port} did not start: {reason}; its log:\n{log}")]
    Start {
        /// The port it was given.
        port: u16,
        /// What went wrong.
        reason: String,
        /// The last lines of its log file.
        log: String,
    },
    /// A command got no complete answer within [`COMMAND_DEADLINE`].
    #[error("{command:?} got no answer within {COMMAND_DEADLINE:?}")]
    Timeout {
        /// The command sent.
        command: Vec<String>,
    },
    /// The server answered with an error, or something that is not RESP.
    #[error("{command:?}: {reason}")]
    Protocol {
        /// The command sent.
        command: Vec<String>,
        /// The error reply, or what was wrong with the answer.
        reason: String,
    },
    /// A [`RedisCluster`] could not be formed (or `redis-cli` is missing).
    #[error("redis cluster: {reason}; details:\n{log}")]
    Cluster {
        /// What went wrong.
        reason: String,
        /// `redis-cli`'s output, or the nodes' `CLUSTER INFO`.
        log: String,
    },
}

/// Wraps an `io::Error` with what the harness was doing.
fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> RedisError {
    let what = what.into();
    move |source| RedisError::Io { what, source }
}

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `:42`
    Integer(i64),
    /// `$3\r\nabc`; `None` for the null bulk string (`$-1`), e.g. `GET` of a missing key.
    Bulk(Option<Vec<u8>>),
    /// `*2\r\n...`; `None` for the null array.
    Array(Option<Vec<Reply>>),
}

/// A `redis-server` process on `127.0.0.1:PORT`, with its own directory.
///
/// Dropping it kills the process (SIGKILL, which also ends a paused one) and removes the
/// directory.
#[derive(Debug)]
pub struct RedisServer {
    /// `None` after [`RedisServer::kill`].
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    mode: Mode,
}

/// How a [`RedisServer`] listens.
#[derive(Debug, Clone)]
enum Mode {
    /// Plain TCP on `port`.
    Plain,
    /// TLS only on `port` (`--port 0 --tls-port PORT`), its files in the server's directory;
    /// `client` trusts the CA that signed its certificate.
    Tls { client: Arc<rustls::ClientConfig> },
    /// Plain TCP, cluster mode, the cluster bus on `bus_port` (`--cluster-port`).
    ClusterNode { bus_port: u16 },
}

/// The server's certificate, key and CA certificate in its directory (TLS only).
const TLS_CERT_FILE: &str = "redis.crt";
const TLS_KEY_FILE: &str = "redis.key";
const TLS_CA_FILE: &str = "ca.crt";

/// The name TLS clients check the server's certificate against; the certificate also holds
/// `localhost`.
const TLS_SERVER_NAME: &str = "127.0.0.1";

// === impl RedisServer ===

impl RedisServer {
    /// Starts `redis-server` on a free loopback port and waits up to [`START_DEADLINE`]
    /// until it answers `PING`.
    ///
    /// The port is found by binding `127.0.0.1:0` and closing it again; should another
    /// process take it in between, a fresh port is tried (up to 3 times).
    pub async fn start() -> Result<Self, RedisError> {
        Self::start_in(new_dir()?, Mode::Plain).await
    }

    /// Starts `redis-server` listening with TLS only (no plain TCP port) on a free loopback
    /// port, with a certificate from `ca` for `localhost` and the IP SAN `127.0.0.1`, and
    /// waits up to [`START_DEADLINE`] until it answers `PING` over TLS.
    ///
    /// Clients need not present a certificate (`--tls-auth-clients no`). [`RedisServer::url`]
    /// is then `rediss://127.0.0.1:PORT`, [`RedisServer::ca_file`] the CA's PEM for
    /// `redis_ca_file`, and [`RedisServer::command`] and its helpers speak TLS.
    pub async fn start_tls(ca: &TestCa) -> Result<Self, RedisError> {
        let dir = new_dir()?;
        let tls_error = |e: crate::tls::TlsError| {
            io_error("making redis's TLS certificate")(io::Error::other(e))
        };
        let cert = ca.issue(&["localhost", "127.0.0.1"]).map_err(tls_error)?;
        let client = ca.client_config(&[]).map_err(tls_error)?;
        let write = |name: &str, pem: &str| {
            write_pem(&dir, name, pem).map_err(io_error(format!("writing {name}")))
        };
        write(TLS_CERT_FILE, &cert.cert_pem)?;
        write(TLS_KEY_FILE, &cert.key_pem)?;
        write(TLS_CA_FILE, &ca.cert_pem())?;
        Self::start_in(dir, Mode::Tls { client }).await
    }

    /// Starts a server in `dir` (which it then owns) on fresh ports, retrying when a port
    /// was taken meanwhile.
    async fn start_in(dir: PathBuf, mode: Mode) -> Result<Self, RedisError> {
        let mut server = Self { child: None, port: 0, dir, mode };
        let mut attempt = 1;
        loop {
            let ports = free_ports(2)?;
            server.port = ports[0];
            if let Mode::ClusterNode { bus_port } = &mut server.mode {
                *bus_port = ports[1];
            }
            match server.spawn_and_wait().await {
                Ok(()) => return Ok(server),
                // Most likely the port was taken meanwhile: try another one.
                Err(RedisError::Start { .. }) if attempt < PORT_ATTEMPTS => server.kill()?,
                Err(e) => return Err(e),
            }
            attempt += 1;
        }
    }

    /// `redis://127.0.0.1:PORT`; `rediss://127.0.0.1:PORT` for [`RedisServer::start_tls`]
    /// (its certificate has the IP SAN `127.0.0.1`).
    pub fn url(&self) -> String {
        let scheme = if self.is_tls() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Whether it listens with TLS ([`RedisServer::start_tls`]).
    pub fn is_tls(&self) -> bool {
        matches!(self.mode, Mode::Tls { .. })
    }

    /// The CA certificate's PEM file, for `redis_ca_file`; `None` unless TLS.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.is_tls().then(|| self.dir.join(TLS_CA_FILE))
    }

    /// The server's directory (its log, and for TLS its certificate files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The port, the same across [`RedisServer::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Kills the process with SIGKILL (no shutdown, like a crash) and reaps it; the port then
    /// refuses connections. Does nothing when it is not running.
    pub fn kill(&mut self) -> Result<(), RedisError> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        let sent = signal(child.id(), "KILL");
        // Reap it even if `kill` failed (it may have died on its own already).
        let _ = child.kill();
        let _ = child.wait();
        sent
    }

    /// Kills the process if it runs, then starts a new one on the same port (empty: nothing
    /// is persisted) and waits up to [`START_DEADLINE`] for `PING`.
    pub async fn restart(&mut self) -> Result<(), RedisError> {
        self.kill()?;
        self.spawn_and_wait().await
    }

    /// Freezes the process with SIGSTOP: connections stay open, nothing is answered.
    pub fn pause(&self) -> Result<(), RedisError> {
        signal(self.pid()?, "STOP")
    }

    /// Lets a paused process continue (SIGCONT).
    pub fn resume(&self) -> Result<(), RedisError> {
        signal(self.pid()?, "CONT")
    }

    /// The process id; an error after [`RedisServer::kill`].
    pub fn pid(&self) -> Result<u32, RedisError> {
        self.child.as_ref().map(Child::id).ok_or_else(|| {
            let source = io::Error::new(io::ErrorKind::NotFound, "killed and not restarted");
            io_error(format!("redis-server on port {}", self.port))(source)
        })
    }

    /// `DBSIZE`: the number of keys.
    pub async fn dbsize(&self) -> Result<u64, RedisError> {
        let command = ["DBSIZE"];
        match self.command(&command).await? {
            Reply::Integer(n) if n >= 0 => Ok(n.unsigned_abs()),
            other => Err(unexpected(&command, &other)),
        }
    }

    /// `KEYS pattern` (glob: `tether:app:*`), sorted.
    pub async fn keys(&self, pattern: &str) -> Result<Vec<String>, RedisError> {
        let command = ["KEYS", pattern];
        let reply = self.command(&command).await?;
        let Reply::Array(Some(items)) = &reply else { return Err(unexpected(&command, &reply)) };
        let mut keys = items
            .iter()
            .map(|item| match item {
                Reply::Bulk(Some(bytes)) => Ok(String::from_utf8_lossy(bytes).into_owned()),
                other => Err(unexpected(&command, other)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        keys.sort();
        Ok(keys)
    }

    /// `GET key`: its value as text, `None` when the key does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<String>, RedisError> {
        let command = ["GET", key];
        match self.command(&command).await? {
            Reply::Bulk(value) => Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned())),
            other => Err(unexpected(&command, &other)),
        }
    }

    /// `PTTL key` as a duration; `None` when the key has no TTL or does not exist.
    pub async fn ttl(&self, key: &str) -> Result<Option<Duration>, RedisError> {
        let command = ["PTTL", key];
        match self.command(&command).await? {
            Reply::Integer(ms) if ms >= 0 => Ok(Some(Duration::from_millis(ms.unsigned_abs()))),
            Reply::Integer(_) => Ok(None),
            other => Err(unexpected(&command, &other)),
        }
    }

    /// Sends one command on a new connection and reads its reply, within
    /// [`COMMAND_DEADLINE`]. An error reply (`-ERR ...`) is a [`RedisError::Protocol`].
    ///
    /// Over TLS for a [`RedisServer::start_tls`] server.
    pub async fn command(&self, args: &[&str]) -> Result<Reply, RedisError> {
        let owned = || args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
        match tokio::time::timeout(COMMAND_DEADLINE, self.exchange(args)).await {
            Ok(Ok(Ok(reply))) => Ok(reply),
            Ok(Ok(Err(reason))) => Err(RedisError::Protocol { command: owned(), reason }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(RedisError::Timeout { command: owned() }),
        }
    }

    /// Connects (TCP, then TLS when [`Mode::Tls`]), sends one command and reads one reply.
    async fn exchange(&self, args: &[&str]) -> Result<Result<Reply, String>, RedisError> {
        let addr = self.addr();
        match &self.mode {
            Mode::Tls { client } => {
                let stream = tls_connect(addr, TLS_SERVER_NAME, Arc::clone(client))
                    .await
                    .map_err(io_error(format!("connecting to redis over TLS at {addr}")))?;
                send_and_read(stream, args).await
            }
            Mode::Plain | Mode::ClusterNode { .. } => {
                let stream = TcpStream::connect(addr)
                    .await
                    .map_err(io_error(format!("connecting to redis at {addr}")))?;
                send_and_read(stream, args).await
            }
        }
    }

    /// The command line options that differ between modes.
    fn mode_args(&self) -> Vec<String> {
        let port = self.port.to_string();
        let file = |name: &str| self.dir.join(name).display().to_string();
        match &self.mode {
            Mode::Plain => vec!["--port".into(), port],
            Mode::Tls { .. } => vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port,
                "--tls-cert-file".into(),
                file(TLS_CERT_FILE),
                "--tls-key-file".into(),
                file(TLS_KEY_FILE),
                "--tls-ca-cert-file".into(),
                file(TLS_CA_FILE),
                "--tls-auth-clients".into(),
                "no".into(),
            ],
            Mode::ClusterNode { bus_port } => vec![
                "--port".into(),
                port.clone(),
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-port".into(),
                bus_port.to_string(),
                "--cluster-config-file".into(),
                file(&format!("nodes-{port}.conf")),
                "--cluster-node-timeout".into(),
                cluster::NODE_TIMEOUT_MS.to_string(),
            ],
        }
    }

    /// Spawns `redis-server` on `self.port` and waits for `PING`.
    async fn spawn_and_wait(&mut self) -> Result<(), RedisError> {
        let log = self.dir.join("redis.log");
        let spawned = Command::new(REDIS_SERVER)
            .args(self.mode_args())
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(RedisError::NotInstalled),
            Err(e) => return Err(io_error(format!("spawning {REDIS_SERVER}"))(e)),
        };
        self.child = Some(child);
        let end = Instant::now() + START_DEADLINE;
        loop {
            let exited = self.child.as_mut().and_then(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                return Err(self.start_error(format!("it exited ({status})")));
            }
            if self.ping().await {
                return Ok(());
            }
            if Instant::now() >= end {
                let reason = format!("no PONG within {START_DEADLINE:?}");
                return Err(self.start_error(reason));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// One `PING` attempt within 1 s: true on `+PONG`.
    async fn ping(&self) -> bool {
        let attempt = self.exchange(&["PING"]);
        matches!(
            tokio::time::timeout(Duration::from_secs(1), attempt).await,
            Ok(Ok(Ok(Reply::Simple(pong)))) if pong == "PONG"
        )
    }

    fn start_error(&self, reason: String) -> RedisError {
        RedisError::Start { port: self.port, reason, log: log_tail(&self.dir.join("redis.log")) }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.kill();
        // Best effort: a leftover temp dir must not fail the test that made it.
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Sends `kill -s SIGNAL pid`.
fn signal(pid: u32, name: &str) -> Result<(), RedisError> {
    let output = Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .output()
        .map_err(io_error("running kill"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let source = io::Error::other(format!("{}: {stderr}", output.status));
    Err(io_error(format!("`kill -s {name} {pid}`"))(source))
}

/// `n` distinct ports that were free a moment ago: bind `127.0.0.1:0` `n` times at once,
/// read the ports, close.
fn free_ports(n: usize) -> Result<Vec<u16>, RedisError> {
    let listeners = (0..n)
        .map(|_| {
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .map_err(io_error("binding 127.0.0.1:0 to find a free port"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr().map_err(io_error("reading a bound port"))?.port()))
        .collect()
}

/// Sends one command on `stream` and reads one reply.
async fn send_and_read<S: AsyncRead + AsyncWrite + Unpin + Send>(
    mut stream: S,
    args: &[&str],
) -> Result<Result<Reply, String>, RedisError> {
    stream.write_all(&encode(args)).await.map_err(io_error("sending a redis command"))?;
    stream.flush().await.map_err(io_error("sending a redis command"))?;
    read_reply(&mut BufReader::new(stream)).await
}

/// A new, empty `tether-redis-<pid>-<counter>-<nanos>` under the system temp dir.
fn new_dir() -> Result<PathBuf, RedisError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let name = format!(
        "tether-redis-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let path = std::env::temp_dir().join(name);
    // `create_dir`, not `create_dir_all`: never adopt a directory someone else made.
    fs::create_dir(&path).map_err(io_error(format!("creating {}", path.display())))?;
    Ok(path)
}

fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| format!("({}: {e})", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
}

fn unexpected(command: &[&str], reply: &Reply) -> RedisError {
    RedisError::Protocol {
        command: command.iter().map(|a| (*a).to_owned()).collect(),
        reason: format!("unexpected reply {reply:?}"),
    }
}

/// A command as a RESP array of bulk strings.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one reply. The outer error is the socket's; the inner one an error reply or bad
/// RESP. Nesting is bounded by the input, which comes from our own test server.
async fn read_reply<R: AsyncBufRead + Unpin + Send>(
    r: &mut R,
) -> Result<Result<Reply, String>, RedisError> {
    let mut pending: Vec<(usize, Vec<Reply>)> = Vec::new();
    loop {
        let line = read_line(r).await?;
        let (kind, rest) = line.split_at(line.len().min(1));
        let mut reply = match kind {
            "+" => Reply::Simple(rest.to_owned()),
            "-" => return Ok(Err(format!("error reply: {rest}"))),
            ":" => match rest.parse() {
                Ok(n) => Reply::Integer(n),
                Err(_) => return Ok(Err(format!("bad integer {line:?}"))),
            },
            "$" => match rest.parse::<i64>() {
                Ok(n) if n < 0 => Reply::Bulk(None),
                Ok(n) => {
                    let mut bytes = vec![0u8; n.unsigned_abs() as usize + 2];
                    r.read_exact(&mut bytes).await.map_err(io_error("reading a redis reply"))?;
                    bytes.truncate(bytes.len() - 2);
                    Reply::Bulk(Some(bytes))
                }
                Err(_) => return Ok(Err(format!("bad bulk length {line:?}"))),
            },
            "*" => match rest.parse::<i64>() {
                Ok(n) if n < 0 => Reply::Array(None),
                Ok(0) => Reply::Array(Some(Vec::new())),
                Ok(n) => {
                    pending.push((n.unsigned_abs() as usize, Vec::new()));
                    continue;
                }
                Err(_) => return Ok(Err(format!("bad array length {line:?}"))),
            },
            _ => return Ok(Err(format!("not RESP: {line:?}"))),
        };
        // Fold the finished reply into the arrays waiting for it.
        loop {
            let Some((len, items)) = pending.last_mut() else { return Ok(Ok(reply)) };
            items.push(reply);
            if items.len() < *len {
                break;
            }
            let Some((_, items)) = pending.pop() else { unreachable!("last_mut was Some") };
            reply = Reply::Array(Some(items));
        }
    }
}

/// One `\r\n`-terminated line, without the terminator; EOF is an error.
async fn read_line<R: AsyncBufRead + Unpin + Send>(r: &mut R) -> Result<String, RedisError> {
    let mut line = String::new();
    let n = r.read_line(&mut line).await.map_err(io_error("reading a redis reply"))?;
    if n == 0 {
        let source = io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed");
        return Err(io_error("reading a redis reply")(source));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> Result<Reply, String> {
        read_reply(&mut BufReader::new(bytes)).await.unwrap()
    }

    #[tokio::test]
    async fn replies_parse_including_nested_and_null_ones() {
        assert_eq!(parse(b"+PONG\r\n").await, Ok(Reply::Simple("PONG".into())));
        assert_eq!(parse(b":-2\r\n").await, Ok(Reply::Integer(-2)));
        assert_eq!(parse(b"$-1\r\n").await, Ok(Reply::Bulk(None)));
        assert_eq!(parse(b"$4\r\na\r\nb\r\n").await, Ok(Reply::Bulk(Some(b"a\r\nb".to_vec()))));
        let nested = parse(b"*2\r\n*1\r\n$1\r\nx\r\n:7\r\n").await;
        let x = Reply::Array(Some(vec![Reply::Bulk(Some(b"x".to_vec()))]));
        assert_eq!(nested, Ok(Reply::Array(Some(vec![x, Reply::Integer(7)]))));
        assert_eq!(parse(b"*0\r\n").await, Ok(Reply::Array(Some(vec![]))));
        assert!(parse(b"-ERR nope\r\n").await.unwrap_err().contains("ERR nope"));
        assert!(read_reply(&mut BufReader::new(&b"$5\r\nab"[..])).await.is_err(), "cut short");
    }

    #[test]
    fn commands_encode_as_arrays_of_bulk_strings() {
        assert_eq!(encode(&["KEYS", "t:*"]), b"*2\r\n$4\r\nKEYS\r\n$3\r\nt:*\r\n".to_vec());
    }

    #[tokio::test]
    async fn server_starts_answers_stops_and_comes_back_empty_on_the_same_port() {
        let mut redis = RedisServer::start().await.unwrap();
        let port = redis.port();
        assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
        redis.command(&["SET", "tether:app:k", "s1", "PX", "60000"]).await.unwrap();
        assert_eq!(redis.dbsize().await.unwrap(), 1);
        assert_eq!(redis.keys("tether:*").await.unwrap(), ["tether:app:k"]);
        assert_eq!(redis.get("tether:app:k").await.unwrap().as_deref(), Some("s1"));
        assert!(redis.ttl("tether:app:k").await.unwrap().unwrap() > Duration::from_secs(50));
        redis.pause().unwrap();
        assert!(!redis.ping().await, "a paused server does not answer");
        redis.resume().unwrap();
        assert!(redis.ping().await);
        redis.kill().unwrap();
        assert!(TcpStream::connect(redis.addr()).await.is_err(), "a killed server's port refuses");
        redis.restart().await.unwrap();
        assert_eq!(redis.port(), port);
        assert_eq!(redis.dbsize().await.unwrap(), 0, "nothing persisted");
        let dir = redis.dir.clone();
        drop(redis);
        assert!(!dir.exists(), "drop removes the directory");
    }
}
