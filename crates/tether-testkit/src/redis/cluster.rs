//! A real Redis Cluster: several `redis-server` primaries in cluster mode, joined by
//! `redis-cli --cluster create`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use super::{Mode, RedisError, RedisServer, Reply, io_error, log_tail, new_dir, unexpected};
use crate::KillOnDrop;
use crate::wait::POLL_INTERVAL;

/// The executable that forms the cluster, looked up on `PATH` (Debian: `redis-tools`, which
/// `redis-server` depends on).
pub const REDIS_CLI: &str = "redis-cli";

/// How long [`RedisCluster::start`] gives `redis-cli --cluster create`, and then the nodes,
/// to agree that the cluster is up: 30 s each. It usually takes about 6 s (`redis-cli`
/// checks the join once a second).
pub const CLUSTER_DEADLINE: Duration = Duration::from_secs(30);

/// `--cluster-node-timeout` in milliseconds: how long a node may be unreachable before the
/// others mark it failed (then its replica, if it has one, is promoted; without one the
/// cluster goes `fail`).
pub const NODE_TIMEOUT_MS: u64 = 2000;

/// `redis-cli --cluster create` refuses fewer primaries.
const MIN_PRIMARIES: usize = 3;

/// The number of hash slots.
const SLOTS: &str = "16384";

/// A Redis Cluster of primaries (and optionally their replicas), each a [`RedisServer`] in cluster mode on
/// `127.0.0.1` (its cluster bus on another free port, `--cluster-port`).
///
/// The nodes are plain [`RedisServer`]s: kill, pause or restart one through
/// [`RedisCluster::nodes_mut`] (a restarted node keeps its cluster identity, from
/// `nodes-PORT.conf` in its directory, but not its keys). Dropping the cluster kills every
/// node and removes the directories.
///
/// ```no_run
/// # async fn demo() -> Result<(), tether_testkit::redis::RedisError> {
/// use tether_testkit::redis::RedisCluster;
///
/// let mut cluster = RedisCluster::start(3).await?;
/// let url = cluster.url(); // redis://127.0.0.1:P1,redis://127.0.0.1:P2,... (seed list)
/// cluster.key_command("k", &["SET", "k", "v"]).await?;
/// assert_eq!(cluster.get("k").await?.as_deref(), Some("v"));
/// let owner = cluster.owner("k").await?;
/// cluster.nodes_mut()[owner].kill()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    /// `redis-cli`'s output.
    dir: PathBuf,
}

// === impl RedisCluster ===

impl RedisCluster {
    /// Starts `n_primaries` (at least 3) cluster-mode servers, joins them with
    /// `redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes` (slots split
    /// evenly, in node order), and waits until every node reports `cluster_state:ok`, all
    /// 16384 slots served and all nodes known. Each step has [`CLUSTER_DEADLINE`].
    pub async fn start(n_primaries: usize) -> Result<Self, RedisError> {
        Self::start_with_replicas(n_primaries, 0).await
    }

    /// Like [`RedisCluster::start`], with `replicas` replicas for each primary: the first
    /// `n_primaries` nodes start as primaries, the rest as their replicas (`redis-cli`
    /// pairs them). Kill a primary and, after about [`NODE_TIMEOUT_MS`] and an election,
    /// its replica serves its slots with the keys it had replicated.
    pub async fn start_with_replicas(
        n_primaries: usize,
        replicas: usize,
    ) -> Result<Self, RedisError> {
        if n_primaries < MIN_PRIMARIES {
            return Err(RedisError::Cluster {
                reason: format!(
                    "`{REDIS_CLI} --cluster create` needs at least {MIN_PRIMARIES} primaries, \
                     {n_primaries} asked"
                ),
                log: String::new(),
            });
        }
        // Made first, so that whatever fails below is cleaned up by its drop.
        let total = n_primaries * (1 + replicas);
        let mut cluster = Self { nodes: Vec::with_capacity(total), dir: new_dir()? };
        for _ in 0..total {
            let node = RedisServer::start_in(new_dir()?, Mode::ClusterNode { bus_port: 0 }).await?;
            cluster.nodes.push(node);
        }
        cluster.create(replicas).await?;
        cluster.wait_ok(CLUSTER_DEADLINE).await?;
        Ok(cluster)
    }

    /// The seed list for `redis_url` with `redis_cluster = true`:
    /// `redis://127.0.0.1:P1,redis://127.0.0.1:P2,...`.
    pub fn url(&self) -> String {
        self.nodes.iter().map(RedisServer::url).collect::<Vec<_>>().join(",")
    }

    /// The nodes, in the order they were given to `redis-cli` (node 0 serves the lowest
    /// slots).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The nodes, to kill, pause or restart one.
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// The nodes' addresses, `127.0.0.1:P`.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(RedisServer::addr).collect()
    }

    /// Kills every node (SIGKILL); the first error, after trying them all.
    pub fn kill_all(&mut self) -> Result<(), RedisError> {
        let mut result = Ok(());
        for node in &mut self.nodes {
            let killed = node.kill();
            if result.is_ok() {
                result = killed;
            }
        }
        result
    }

    /// Polls every running node's `CLUSTER INFO` until each reports `cluster_state:ok`, all
    /// 16384 slots `ok` and every node known, or `deadline` passes. Use it after restarting
    /// a node.
    pub async fn wait_ok(&self, deadline: Duration) -> Result<(), RedisError> {
        let end = Instant::now() + deadline;
        let want_known = self.nodes.len().to_string();
        loop {
            let mut report = String::new();
            let mut all_ok = true;
            for node in self.running() {
                let healthy = match node.cluster_info().await {
                    Ok(info) => {
                        let field = |k: &str| info.get(k).map_or("?", String::as_str);
                        report.push_str(&format!(
                            "{}: cluster_state:{} cluster_slots_ok:{} cluster_known_nodes:{}\n",
                            node.addr(),
                            field("cluster_state"),
                            field("cluster_slots_ok"),
                            field("cluster_known_nodes"),
                        ));
                        field("cluster_state") == "ok"
                            && field("cluster_slots_ok") == SLOTS
                            && field("cluster_known_nodes") == want_known
                    }
                    Err(e) => {
                        report.push_str(&format!("{}: {e}\n", node.addr()));
                        false
                    }
                };
                all_ok &= healthy;
            }
            if all_ok {
                return Ok(());
            }
            if Instant::now() >= end {
                return Err(RedisError::Cluster {
                    reason: format!(
                        "the nodes did not all report cluster_state:ok within {deadline:?}"
                    ),
                    log: report,
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The index in [`RedisCluster::nodes`] of the primary that serves `key`'s slot, as the
    /// first running node sees it (`CLUSTER KEYSLOT`, `CLUSTER SLOTS`).
    pub async fn owner(&self, key: &str) -> Result<usize, RedisError> {
        let asked = self.any_running()?;
        let keyslot = ["CLUSTER", "KEYSLOT", key];
        let slot = match asked.command(&keyslot).await? {
            Reply::Integer(slot) => slot,
            other => return Err(unexpected(&keyslot, &other)),
        };
        let slots = ["CLUSTER", "SLOTS"];
        let reply = asked.command(&slots).await?;
        let Reply::Array(Some(ranges)) = &reply else { return Err(unexpected(&slots, &reply)) };
        for range in ranges {
            // [start, end, [ip, port, id, ...], replicas...]
            let Reply::Array(Some(fields)) = range else { return Err(unexpected(&slots, range)) };
            let (Some(Reply::Integer(start)), Some(Reply::Integer(end))) =
                (fields.first(), fields.get(1))
            else {
                return Err(unexpected(&slots, range));
            };
            if !(*start..=*end).contains(&slot) {
                continue;
            }
            let port = match fields.get(2) {
                Some(Reply::Array(Some(primary))) => match primary.get(1) {
                    Some(Reply::Integer(port)) => *port,
                    _ => return Err(unexpected(&slots, range)),
                },
                _ => return Err(unexpected(&slots, range)),
            };
            return self.nodes.iter().position(|n| i64::from(n.port()) == port).ok_or_else(|| {
                RedisError::Protocol {
                    command: slots.map(str::to_owned).to_vec(),
                    reason: format!("slot {slot} is served by port {port}, not one of ours"),
                }
            });
        }
        Err(RedisError::Protocol {
            command: slots.map(str::to_owned).to_vec(),
            reason: format!("no node serves slot {slot} (key {key:?})"),
        })
    }

    /// Sends `args` (a command about `key`, e.g. `["SET", key, "v", "PX", "60000"]`) to the
    /// node that serves `key`.
    pub async fn key_command(&self, key: &str, args: &[&str]) -> Result<Reply, RedisError> {
        let owner = self.owner(key).await?;
        self.nodes[owner].command(args).await
    }

    /// `GET key` on the node that serves it: its value as text, `None` when missing.
    pub async fn get(&self, key: &str) -> Result<Option<String>, RedisError> {
        let owner = self.owner(key).await?;
        self.nodes[owner].get(key).await
    }

    /// `PTTL key` on the node that serves it; `None` when it has no TTL or does not exist.
    pub async fn ttl(&self, key: &str) -> Result<Option<Duration>, RedisError> {
        let owner = self.owner(key).await?;
        self.nodes[owner].ttl(key).await
    }

    /// `KEYS pattern` on every running primary (a killed node's keys are gone anyway, and a
    /// replica's are its primary's), merged and sorted.
    pub async fn keys(&self, pattern: &str) -> Result<Vec<String>, RedisError> {
        let mut keys = Vec::new();
        for i in self.primaries().await? {
            keys.extend(self.nodes[i].keys(pattern).await?);
        }
        keys.sort();
        Ok(keys)
    }

    /// The sum of `DBSIZE` over the running primaries.
    pub async fn dbsize(&self) -> Result<u64, RedisError> {
        let mut total = 0;
        for i in self.primaries().await? {
            total += self.nodes[i].dbsize().await?;
        }
        Ok(total)
    }

    /// The indexes of the running nodes that are primaries now (`ROLE`), in node order: a
    /// replica promoted after its primary was killed is one.
    pub async fn primaries(&self) -> Result<Vec<usize>, RedisError> {
        let mut primaries = Vec::new();
        for (i, node) in self.nodes.iter().enumerate().filter(|(_, n)| n.pid().is_ok()) {
            if node.is_primary().await? {
                primaries.push(i);
            }
        }
        Ok(primaries)
    }

    /// The nodes not killed.
    fn running(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|n| n.pid().is_ok())
    }

    fn any_running(&self) -> Result<&RedisServer, RedisError> {
        self.running().next().ok_or_else(|| RedisError::Cluster {
            reason: "every node is killed".into(),
            log: String::new(),
        })
    }

    /// Runs `redis-cli --cluster create` within [`CLUSTER_DEADLINE`], its output to a file
    /// (a pipe nobody reads could fill up and stall it).
    async fn create(&self, replicas: usize) -> Result<(), RedisError> {
        let log_path = self.dir.join("redis-cli.log");
        let log = fs::File::create(&log_path)
            .map_err(io_error(format!("creating {}", log_path.display())))?;
        let log_err = log.try_clone().map_err(io_error("duplicating redis-cli's log file"))?;
        let spawned = Command::new(REDIS_CLI)
            .args(["--cluster", "create"])
            .args(self.nodes.iter().map(|n| n.addr().to_string()))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn();
        let mut child = match spawned {
            Ok(child) => KillOnDrop::new(child),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(RedisError::Cluster {
                    reason: format!(
                        "`{REDIS_CLI}` not found on PATH; install it: `apt-get install \
                         redis-tools` on Debian (redis-server depends on it)"
                    ),
                    log: String::new(),
                });
            }
            Err(e) => return Err(io_error(format!("spawning {REDIS_CLI}"))(e)),
        };
        let end = Instant::now() + CLUSTER_DEADLINE;
        let failed = |reason: String| RedisError::Cluster { reason, log: log_tail(&log_path) };
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(failed(format!(
                        "`{REDIS_CLI} --cluster create` failed ({status})"
                    )));
                }
                Ok(None) if Instant::now() >= end => {
                    return Err(failed(format!(
                        "`{REDIS_CLI} --cluster create` did not finish within {CLUSTER_DEADLINE:?}"
                    )));
                }
                Ok(None) => tokio::time::sleep(POLL_INTERVAL).await,
                Err(e) => return Err(io_error(format!("waiting for {REDIS_CLI}"))(e)),
            }
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        // The nodes kill themselves and remove their directories as they drop.
        let _ = fs::remove_dir_all(&self.dir);
    }
}

// === impl RedisServer (cluster mode) ===

impl RedisServer {
    /// Whether the server is a primary (`ROLE` says `master`), not a replica.
    pub async fn is_primary(&self) -> Result<bool, RedisError> {
        let command = ["ROLE"];
        match self.command(&command).await? {
            Reply::Array(Some(fields)) => match fields.first() {
                Some(Reply::Bulk(Some(role))) => Ok(role.as_slice() == b"master"),
                _ => Err(unexpected(&command, &Reply::Array(Some(fields)))),
            },
            other => Err(unexpected(&command, &other)),
        }
    }

    /// `CLUSTER INFO` as `field → value` (`cluster_state → ok`); an error reply unless the
    /// server runs in cluster mode.
    pub async fn cluster_info(&self) -> Result<BTreeMap<String, String>, RedisError> {
        let command = ["CLUSTER", "INFO"];
        let reply = self.command(&command).await?;
        let Reply::Bulk(Some(text)) = &reply else { return Err(unexpected(&command, &reply)) };
        Ok(String::from_utf8_lossy(text)
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect())
    }
}
