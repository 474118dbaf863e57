//! TCP listeners in operation: reloads, drains, shutdown, health checks and balancing by
//! client address, through the real binary.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tether_testkit::{Tether, wait_until, wait_until_async};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::tcp::*;
use crate::support::fixture::*;

/// A window in which something must *not* happen (a queued connection getting its greeting).
const QUIET: Duration = Duration::from_millis(300);

/// The single server every one of `n` connections from `from` reached; panics if they spread.
async fn pinned(from: &str, to: SocketAddr, n: usize) -> String {
    let seen = spread(from, to, n).await;
    assert_eq!(seen.len(), 1, "{from} reached {seen:?}");
    assert_eq!(seen.values().sum::<usize>(), n, "{seen:?}");
    seen.into_keys().next().unwrap_or_default()
}

/// Sends `msg` and reads the same bytes back, within [`STEP`].
async fn echoes(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).await.unwrap_or_else(|e| panic!("write {msg:?}: {e}"));
    let mut back = vec![0; msg.len()];
    tokio::time::timeout(STEP, s.read_exact(&mut back))
        .await
        .unwrap_or_else(|_| panic!("echo of {msg:?} in time"))
        .unwrap_or_else(|e| panic!("echo of {msg:?}: {e}"));
    assert_eq!(back, msg);
}

/// Reads until the other side closes (end of stream or reset), within [`STEP`]; the bytes
/// that came before.
async fn until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let read = tokio::time::timeout(STEP, s.read(&mut buf)).await;
        match read.unwrap_or_else(|_| panic!("connection still open after {STEP:?}: {got:?}")) {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Closes the client's side and checks the relay ends cleanly (the server's close arrives).
async fn close(mut s: TcpStream) {
    s.shutdown().await.unwrap();
    assert_eq!(until_closed(&mut s).await, b"", "nothing was left to read");
}

/// Sets server `name` of backend "app" to admin state `state`.
async fn set_state(t: &Tether, name: &str, state: &str) {
    let url = admin_url(t, &format!("/api/v1/backends/app/servers/{name}"));
    let body = format!("{{\"state\":\"{state}\"}}");
    let r = client().patch(url).body(body).send().await.unwrap();
    assert_eq!(r.status(), 200, "PATCH {name} {state}: {}", r.text().await.unwrap_or_default());
}

/// The access-log lines of TCP connections logged after `mark`, once there are `n` of them
/// (a line is written when its connection ends, a moment after the client has moved on).
async fn access_lines(t: &Tether, mark: usize, n: usize) -> Vec<Value> {
    let lines = || -> Vec<Value> {
        let all = t.logs();
        all.into_iter().skip(mark).filter(|l| l["message"] == "tcp").collect()
    };
    let complete = wait_until(STEP, || lines().len() >= n).await;
    let got = lines();
    assert!(complete, "{} of {n} access lines: {got:?}", got.len());
    got
}

/// The access-log line of the connection from `client` (address and port), once logged.
async fn access_line_of(t: &Tether, client: SocketAddr) -> Value {
    let client = client.to_string();
    let of = |l: &Value| l["message"] == "tcp" && l["client"] == client.as_str();
    let line = t.wait_for_log(of, STEP).await;
    line.unwrap_or_else(|| panic!("no access line for {client} within {STEP:?}"))
}

/// Backend "app" with `client_ip` affinity (servers added by [`tcp_config`]).
fn sticky() -> Backend {
    Backend::new().sticky(Sticky::client_ip())
}

/// `client_ip` affinity on TCP: 100 connections from 127.0.0.2 all reach one server, 100
/// from 127.0.0.3 all reach one server, and after a reload that adds a fourth server and
/// changes the connect timeout both clients still reach the same servers, read from the
/// stick table (access log `affinity = "hit"`), not merely re-hashed.
#[tokio::test]
async fn tcp_client_ip_pins_hold_over_100_connections_and_a_reload() {
    let servers = tcp_echoes(4).await;
    let mut t = start(tcp_config(&servers[..3], sticky())).await;
    let addr = t.listener_addr("web");
    let a = pinned("127.0.0.2", addr, 100).await;
    let b = pinned("127.0.0.3", addr, 100).await;
    access_lines(&t, 0, 200).await; // All logged: none may be taken for a later one.
    let harmless = tcp_config(&servers, sticky().set("timeouts.connect", "3s"));
    let outcome = t.reload(harmless).await.unwrap();
    assert_eq!(outcome["message"], "config reloaded", "{outcome}");
    let mark = t.log_mark();
    assert_eq!(pinned("127.0.0.2", addr, 100).await, a, "127.0.0.2 moved after the reload");
    assert_eq!(pinned("127.0.0.3", addr, 100).await, b, "127.0.0.3 moved after the reload");
    let lines = access_lines(&t, mark, 200).await;
    let not_hits: Vec<_> = lines.iter().filter(|l| l["affinity"] != "hit").collect();
    assert!(not_hits.is_empty(), "connections not served by their pin: {not_hits:?}");
}

/// A pinned client whose server stops: its next connection is served by another server
/// (the refused connect is not seen by the client, the pin is `rebound`), and every later
/// connection stays on that new server.
#[tokio::test]
async fn tcp_pinned_client_moves_once_its_server_stops_and_stays_moved() {
    let mut servers = tcp_echoes(3).await;
    let t = start(tcp_config(&servers, sticky())).await;
    let addr = t.listener_addr("web");
    let home = pinned("127.0.0.2", addr, 5).await;
    let i = servers.iter().position(|s| s.name == home).unwrap();
    servers.remove(i).stop().await;
    let mut first = connect_from("127.0.0.2", addr).await;
    let port = first.local_addr().unwrap();
    let new_home = greeting(&mut first).await;
    assert_ne!(new_home, home, "served by the stopped server");
    close(first).await;
    assert_eq!(access_line_of(&t, port).await["affinity"], "rebound");
    assert_eq!(pinned("127.0.0.2", addr, 20).await, new_home, "the client did not stay moved");
}

/// `drain` set through the admin API: the client pinned to the drained server keeps
/// reaching it, while new clients (127.0.0.4 to 127.0.0.40) never land on it.
#[tokio::test]
async fn tcp_drained_server_keeps_its_pinned_client_and_takes_no_new_one() {
    let servers = tcp_echoes(3).await;
    let t = start(tcp_config(&servers, sticky()).admin()).await;
    let addr = t.listener_addr("web");
    let home = pinned("127.0.0.2", addr, 5).await;
    set_state(&t, &home, "drain").await;
    assert_eq!(pinned("127.0.0.2", addr, 20).await, home, "the pinned client left a drain");
    for i in 4..=40 {
        let client = format!("127.0.0.{i}");
        let seen = pinned(&client, addr, 3).await;
        assert_ne!(seen, home, "new client {client} landed on the drained server");
    }
}

/// `maint` set through the admin API: even the client pinned to that server moves to
/// another one (`on_server_down = "redispatch"`, the default) and stays there, and new
/// clients avoid it too.
#[tokio::test]
async fn tcp_server_in_maint_loses_even_its_pinned_client() {
    let servers = tcp_echoes(3).await;
    let t = start(tcp_config(&servers, sticky()).admin()).await;
    let addr = t.listener_addr("web");
    let home = pinned("127.0.0.2", addr, 5).await;
    set_state(&t, &home, "maint").await;
    let moved = pinned("127.0.0.2", addr, 20).await;
    assert_ne!(moved, home, "the pinned client still reaches a server in maint");
    for i in 4..=20 {
        let client = format!("127.0.0.{i}");
        assert_ne!(pinned(&client, addr, 2).await, home, "{client} reached a server in maint");
    }
}

/// A reload that takes the server of an open TCP connection out of the backend leaves that
/// connection alone: it keeps echoing through its old server, while new connections
/// already go to the new one.
#[tokio::test]
async fn tcp_reload_removing_the_server_keeps_an_open_connection_relaying() {
    let servers = tcp_echoes(2).await;
    let mut t = start(tcp_config(&servers[..1], Backend::new())).await;
    let addr = t.listener_addr("web");
    let mut open = connect_from("127.0.0.1", addr).await;
    assert_eq!(greeting(&mut open).await, "t0");
    echoes(&mut open, b"before the reload\n").await;
    let outcome = t.reload(tcp_config(&servers[1..], Backend::new())).await.unwrap();
    assert_eq!(outcome["message"], "config reloaded", "{outcome}");
    assert_eq!(pinned("127.0.0.1", addr, 3).await, "t1", "the reload was not applied");
    echoes(&mut open, b"after the reload\n").await;
    close(open).await;
}

/// SIGTERM with an open TCP connection and a 30 s grace period: Tether stops accepting but
/// keeps relaying on it, and exits (status 0) soon after the client closes it, far before
/// the grace period ends.
#[tokio::test]
async fn tcp_sigterm_keeps_relaying_and_exits_once_the_connection_closes() {
    let servers = tcp_echoes(1).await;
    let mut t = start(tcp_config(&servers, Backend::new()).set("grace_period", "30s")).await;
    let mut open = connect_from("127.0.0.1", t.listener_addr("web")).await;
    assert_eq!(greeting(&mut open).await, "t0");
    let mark = t.log_mark();
    t.signal("TERM").unwrap();
    let says = |l: &Value| l["message"].as_str().is_some_and(|m| m.starts_with("shutting down"));
    assert!(t.wait_for_log_since(mark, says, STEP).await.is_some(), "no drain after SIGTERM");
    echoes(&mut open, b"during the drain\n").await;
    echoes(&mut open, b"still during the drain\n").await;
    assert!(t.wait_exit(Duration::ZERO).await.is_none(), "exited with a connection open");
    close(open).await;
    // 10 s tells "soon after the close" from the 30 s grace period.
    let status = t.wait_exit(Duration::from_secs(10)).await;
    let status = status.unwrap_or_else(|| panic!("still running 10 s after the close"));
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

/// SIGTERM with a 1 s grace period and a TCP connection that never closes: once the grace
/// period is over the connection is cut and Tether exits, saying some work was cut short
/// (exit status 130, as for HTTP requests still in flight).
#[tokio::test]
async fn tcp_sigterm_cuts_a_connection_still_open_after_the_grace_period() {
    let servers = tcp_echoes(1).await;
    let mut t = start(tcp_config(&servers, Backend::new()).set("grace_period", "1s")).await;
    let mut open = connect_from("127.0.0.1", t.listener_addr("web")).await;
    assert_eq!(greeting(&mut open).await, "t0");
    let signalled = Instant::now();
    t.signal("TERM").unwrap();
    let status = t.wait_exit(Duration::from_secs(10)).await;
    let status = status.unwrap_or_else(|| panic!("still running 10 s after SIGTERM"));
    assert!(signalled.elapsed() >= Duration::from_secs(1), "exited before the grace period");
    assert_eq!(until_closed(&mut open).await, b"", "the open connection was not cut");
    assert_eq!(status.code(), Some(130), "exit status {status}");
    let says = |l: &Value| l["message"].as_str().is_some_and(|m| m.contains("cut short"));
    assert!(t.logs().iter().any(says), "no warning that a connection was cut");
}

/// `balance = BALANCE` with `hash_key = "client_ip"` on a TCP backend without `sticky`:
/// each of eight client addresses reaches a single server over 10 connections, and the
/// addresses do not all share one server. `hash` gets no load bound: a connection's relay
/// may still be open on its server when the next one is balanced, and the bound would
/// (rightly) send that one elsewhere.
async fn hash_on_client_ip_keeps_each_address_on_one_server(balance: &str) {
    let servers = tcp_echoes(3).await;
    let mut backend = Backend::new().balance(balance).set("hash_key", "client_ip");
    if balance == "hash" {
        backend = backend.set("hash_balance_factor", 0);
    }
    let t = start(tcp_config(&servers, backend)).await;
    let addr = t.listener_addr("web");
    let mut homes = BTreeSet::new();
    for i in 2..=9 {
        homes.insert(pinned(&format!("127.0.0.{i}"), addr, 10).await);
    }
    assert!(homes.len() >= 2, "eight addresses all hashed to {homes:?}");
}

/// `balance = "hash"`, `hash_key = "client_ip"` on TCP: one address, one server.
#[tokio::test]
async fn tcp_hash_on_client_ip_keeps_each_address_on_one_server() {
    hash_on_client_ip_keeps_each_address_on_one_server("hash").await;
}

/// `balance = "maglev"`, `hash_key = "client_ip"` on TCP: one address, one server.
#[tokio::test]
async fn tcp_maglev_on_client_ip_keeps_each_address_on_one_server() {
    hash_on_client_ip_keeps_each_address_on_one_server("maglev").await;
}

/// A `type = "tcp"` health check marks a stopped server `down` (admin API), and new
/// connections then avoid it without even trying it (its `errors_total` stays put: no
/// refused connect had to be moved past).
#[tokio::test]
async fn tcp_health_check_marks_a_stopped_server_down_and_connections_avoid_it() {
    let mut servers = tcp_echoes(3).await;
    let check = HealthCheck::tcp().interval("100ms").timeout("1s").fall(1).rise(1);
    let t = start(tcp_config(&servers, Backend::new().health_check(check)).admin()).await;
    let c = client();
    let stopped = servers.remove(1);
    let gone = stopped.name.clone();
    stopped.stop().await;
    let down = wait_health(&t, &c, &gone, "down", STEP).await;
    let reason = down["health_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("checks failed"), "down for another reason: {down}");
    let seen = spread("127.0.0.1", t.listener_addr("web"), 12).await;
    assert!(!seen.contains_key(&gone), "{seen:?}");
    assert_eq!(seen.values().sum::<usize>(), 12, "{seen:?}");
    let after = server_json(&t, &c, &gone).await;
    assert_eq!(after["errors_total"], down["errors_total"], "the down server was tried: {after}");
}

/// One server with `limits.max_connections_per_server = 1` and no queue (`queue_size` 0):
/// while a connection holds the slot, the next one is closed without reaching the server
/// (access log `end = "no_server"`); once the first ends, new connections are served again.
#[tokio::test]
async fn tcp_full_server_without_a_queue_closes_the_next_connection() {
    let servers = tcp_echoes(1).await;
    let backend = Backend::new().set("limits.max_connections_per_server", 1);
    let t = start(tcp_config(&servers, backend)).await;
    let addr = t.listener_addr("web");
    let mut first = connect_from("127.0.0.1", addr).await;
    assert_eq!(greeting(&mut first).await, "t0");
    let mut second = connect_from("127.0.0.1", addr).await;
    let port = second.local_addr().unwrap();
    assert_eq!(until_closed(&mut second).await, b"", "the second connection reached t0");
    assert_eq!(access_line_of(&t, port).await["end"], "no_server");
    echoes(&mut first, b"still mine\n").await;
    close(first).await;
    let served = tether_testkit::wait_until_async(STEP, || async {
        let mut s = connect_from("127.0.0.1", addr).await;
        greeted(&mut s).await
    })
    .await;
    assert!(served, "the slot never came back after the first connection ended");
}

/// Whether the server greeted on `s` (rather than the connection being closed).
async fn greeted(s: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(tokio::time::timeout(STEP, s.read(&mut byte)).await, Ok(Ok(1)))
}

/// `max_connections_per_server = 1` with `queue_size = 1`: the next connection waits in
/// the queue (no greeting while the slot is held) and is served as soon as the first ends.
#[tokio::test]
async fn tcp_full_server_queues_the_next_connection_until_the_slot_frees() {
    let servers = tcp_echoes(1).await;
    let backend = Backend::new()
        .set("limits.max_connections_per_server", 1)
        .set("limits.queue_size", 1)
        .set("limits.queue_timeout", "30s");
    let t = start(tcp_config(&servers, backend)).await;
    let addr = t.listener_addr("web");
    let mut first = connect_from("127.0.0.1", addr).await;
    assert_eq!(greeting(&mut first).await, "t0");
    let mut second = connect_from("127.0.0.1", addr).await;
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(QUIET, second.read(&mut byte)).await;
    assert!(early.is_err(), "the queued connection did not wait: {early:?} {byte:?}");
    close(first).await;
    assert_eq!(greeting(&mut second).await, "t0");
    echoes(&mut second, b"served after the wait\n").await;
    close(second).await;
}

/// `max_connections_per_server = 1`, `queue_size = 1`, `queue_timeout = "300ms"`: a
/// connection that waits longer than the queue timeout is closed without reaching the server.
#[tokio::test]
async fn tcp_queue_timeout_closes_a_connection_that_waited_too_long() {
    let servers = tcp_echoes(1).await;
    let backend = Backend::new()
        .set("limits.max_connections_per_server", 1)
        .set("limits.queue_size", 1)
        .set("limits.queue_timeout", "300ms");
    let t = start(tcp_config(&servers, backend)).await;
    let addr = t.listener_addr("web");
    let mut first = connect_from("127.0.0.1", addr).await;
    assert_eq!(greeting(&mut first).await, "t0");
    let waited = Instant::now();
    let mut second = connect_from("127.0.0.1", addr).await;
    assert_eq!(until_closed(&mut second).await, b"", "the queued connection reached t0");
    assert!(waited.elapsed() >= Duration::from_millis(300), "closed before the queue timeout");
    echoes(&mut first, b"the first keeps its slot\n").await;
    close(first).await;
}

/// `balance = "least_sessions"` with `client_ip` affinity on TCP: 30 clients spread 10 per
/// server; a fourth server added by reload then takes (nearly) every one of the next 10 new
/// clients, since it has the fewest sessions, while the 30 pinned clients stay where they are.
#[tokio::test]
async fn tcp_least_sessions_fills_a_server_added_by_reload_first() {
    let servers = tcp_echoes(4).await;
    let backend = || sticky().balance("least_sessions");
    let mut t = start(tcp_config(&servers[..3], backend())).await;
    let addr = t.listener_addr("web");
    let mut homes = Vec::new();
    for i in 10..40 {
        homes.push(pinned(&format!("127.0.0.{i}"), addr, 1).await);
    }
    for s in &servers[..3] {
        let n = homes.iter().filter(|h| **h == s.name).count();
        assert_eq!(n, 10, "{} has {n} of the first 30 clients: {homes:?}", s.name);
    }
    let outcome = t.reload(tcp_config(&servers, backend())).await.unwrap();
    assert_eq!(outcome["message"], "config reloaded", "{outcome}");
    let mut fresh = Vec::new();
    for i in 40..50 {
        fresh.push(pinned(&format!("127.0.0.{i}"), addr, 1).await);
    }
    let on_new = fresh.iter().filter(|h| **h == servers[3].name).count();
    assert!(on_new >= 9, "the added server took {on_new} of 10 new clients: {fresh:?}");
    for (i, home) in (10..40).zip(&homes) {
        assert_eq!(&pinned(&format!("127.0.0.{i}"), addr, 1).await, home, "127.0.0.{i} moved");
    }
}

/// `client_ip` affinity on TCP shared through Redis: instance A gives new clients only to
/// t0, instance B only to t1 and t2 (t0 drains there, keeping its pins). A client first
/// served by A is then served by B on t0 — a binding B can only have read from Redis — while
/// B's own new clients never reach t0.
#[tokio::test]
async fn tcp_client_ip_affinity_is_shared_through_redis() {
    let redis = tether_testkit::redis::RedisServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let servers = tcp_echoes(3).await;
    let instance = |active: &[&str]| {
        let backend = servers.iter().fold(sticky(), |b, s| {
            let state = if active.contains(&s.name.as_str()) { "ready" } else { "drain" };
            b.server(ServerEntry::new(&s.name, s.addr).state(state))
        });
        Config::new()
            .set("stick_table.redis_timeout", "500ms")
            .listener(web().set("mode", "tcp"))
            .backend("app", backend)
            .cookie_keys(&[KEY])
            .redis_stick_table(&redis.url())
    };
    let a = start(instance(&["t0"])).await;
    let b = start(instance(&["t1", "t2"])).await;
    let (to_a, to_b) = (a.listener_addr("web"), b.listener_addr("web"));
    // Each instance connects to Redis in the background (a binding made before stays
    // local): fresh clients through it until Redis holds a binding it wrote.
    let redis = &redis;
    let in_redis = move |server: &'static str| async move {
        for key in redis.keys("tether:app:*").await.unwrap() {
            if redis.get(&key).await.unwrap().as_deref() == Some(server) {
                return true;
            }
        }
        false
    };
    let mut b_ready = false;
    for i in 200..230u8 {
        let server = pinned(&format!("127.0.0.{i}"), to_b, 1).await;
        assert_ne!(server, "t0", "B gives new clients to t1 or t2");
        let server: &'static str = if server == "t1" { "t1" } else { "t2" };
        if tether_testkit::wait_until_async(Duration::from_secs(1), || in_redis(server)).await {
            b_ready = true;
            break;
        }
    }
    assert!(b_ready, "B never wrote a binding to Redis");
    let mut shared = None;
    for i in 10..40u8 {
        let client = format!("127.0.0.{i}");
        assert_eq!(pinned(&client, to_a, 1).await, "t0", "A gives new clients to t0");
        if tether_testkit::wait_until_async(Duration::from_secs(1), || in_redis("t0")).await {
            shared = Some(client);
            break;
        }
    }
    let client = shared.unwrap_or_else(|| panic!("A never wrote a binding to Redis"));
    assert_eq!(pinned(&client, to_b, 20).await, "t0", "B follows the binding A wrote");
    for j in 100..120 {
        assert_ne!(pinned(&format!("127.0.0.{j}"), to_b, 1).await, "t0", "B's own new client");
    }
}

/// `limits.max_connections_per_ip = 1` on a TCP listener: a client's second concurrent
/// connection is closed before any server sees it (and counted), another address is still
/// served, and the first client may connect again once its connection ended.
#[tokio::test]
async fn tcp_listener_limits_connections_per_client_address() {
    let servers = tcp_echoes(1).await;
    let listener = web().set("mode", "tcp").set("limits.max_connections_per_ip", 1);
    let backend = Backend::new().server(ServerEntry::new(&servers[0].name, servers[0].addr));
    let t = start(config_on(listener, backend).admin()).await;
    let addr = t.listener_addr("web");
    let mut first = connect_from("127.0.0.2", addr).await;
    assert_eq!(greeting(&mut first).await, "t0");
    let mut second = connect_from("127.0.0.2", addr).await;
    assert_eq!(until_closed(&mut second).await, b"", "the second connection got bytes");
    let mut other = connect_from("127.0.0.3", addr).await;
    assert_eq!(greeting(&mut other).await, "t0", "another address is served");
    assert_eq!(connections_refused(&t, "web", "max_connections_per_ip").await, 1.0);
    close(first).await;
    let again = wait_until_async(STEP, || async {
        let mut s = connect_from("127.0.0.2", addr).await;
        let mut byte = [0u8; 1];
        matches!(tokio::time::timeout(STEP, s.read(&mut byte)).await, Ok(Ok(1)))
    })
    .await;
    assert!(again, "127.0.0.2 could not connect again after closing its connection");
}
