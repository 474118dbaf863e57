//! `tether servers` and `tether drain`: the real binary against a real Tether's admin API
//! (docs/operations.md, "Draining a server and watching its sessions end").

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tether_testkit::{KillOnDrop, ScratchDir, Tether, wait_until};

use crate::support::fixture::*;

/// How a `tether` command ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `tether ARGS` to its end (killed after 60 s) with no admin variables from the test's
/// own environment, only `env`.
async fn tether_cli(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(BIN);
    command.args(args).env_remove("TETHER_ADMIN").env_remove("TETHER_ADMIN_TOKEN");
    command.envs(env.iter().copied()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = KillOnDrop::new(command.spawn().unwrap());
    let mut status = None;
    let ended = wait_until(Duration::from_secs(60), || {
        status = child.try_wait().unwrap();
        status.is_some()
    })
    .await;
    assert!(ended, "tether {args:?} did not end within 60 s");
    let (stdout, stderr) = (read_all(child.stdout.take()), read_all(child.stderr.take()));
    Run { code: status.and_then(|s| s.code()), stdout, stderr }
}

fn read_all(pipe: Option<impl Read>) -> String {
    let mut text = String::new();
    pipe.unwrap().read_to_string(&mut text).unwrap();
    text
}

fn admin_base(t: &Tether) -> String {
    format!("http://{}", t.listener_addr("admin"))
}

/// Backend "app" over `servers` with affinity by header `X-Session-Id` (a stick table, so
/// counts are exact) whose bindings expire after `idle` without use, and the admin listener.
fn header_cfg(servers: &[tether_testkit::EchoServer], idle: &str) -> Config {
    let sticky = Sticky::header("X-Session-Id").set("idle_timeout", idle);
    config(app(servers).sticky(sticky)).admin()
}

/// Binds sessions `user0` .. `user{n-1}`, one request each.
async fn bind_sessions(c: &reqwest::Client, t: &Tether, n: usize) {
    for i in 0..n {
        let r = c.get(t.url("web")).header("x-session-id", format!("user{i}")).send().await;
        assert_eq!(r.unwrap().status(), 200);
    }
}

/// The session counts of the `s1: N sessions` lines of a `drain --wait`, in order.
fn counts_in(stdout: &str, server: &str) -> Vec<u64> {
    let marker = format!(" {server}: ");
    stdout
        .lines()
        .filter_map(|l| l.split_once(&marker)?.1.split(' ').next()?.parse().ok())
        .collect()
}

#[tokio::test]
async fn servers_lists_every_server_with_its_session_count() {
    let servers = echo_servers(2);
    let t = start(header_cfg(&servers, "30m")).await;
    let c = client();
    bind_sessions(&c, &t, 6).await;
    let run = tether_cli(&["servers"], &[("TETHER_ADMIN", &admin_base(&t))]).await;
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let lines: Vec<Vec<&str>> =
        run.stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        lines[0],
        [
            "BACKEND",
            "SERVER",
            "ADDRESS",
            "SOURCE",
            "HEALTH",
            "STATE",
            "IN-FLIGHT",
            "SESSIONS",
            "REQUESTS"
        ]
    );
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    let mut total = 0;
    for (row, echo) in lines[1..].iter().zip(&servers) {
        let api = server_json(&t, &c, echo.name()).await;
        let bound = api["sessions_bound"].as_u64().unwrap();
        let (requests, address) = (api["requests_total"].to_string(), echo.addr().to_string());
        let bound_text = bound.to_string();
        let want = ["app", echo.name(), &address, "config", "unchecked", "ready", "0", &bound_text];
        assert_eq!(row[..8], want, "{}", run.stdout);
        assert_eq!(row[8], requests);
        total += bound;
    }
    assert_eq!(total, 6, "{}", run.stdout);
}

#[tokio::test]
async fn drain_wait_exits_0_once_the_pinned_sessions_expire() {
    let servers = echo_servers(2);
    let t = start(header_cfg(&servers, "2s")).await;
    let c = client();
    bind_sessions(&c, &t, 6).await;
    let bound = server_json(&t, &c, "s1").await["sessions_bound"].as_u64().unwrap();
    assert!(bound > 0, "round robin put some sessions on s1");
    let admin = admin_base(&t);
    let args = ["drain", "app", "s1", "--wait", "--timeout", "20s", "--interval", "250ms"];
    let run = tether_cli(&[&args[..], &["--admin", &admin]].concat(), &[]).await;
    assert_eq!(run.code, Some(0), "stdout: {}\nstderr: {}", run.stdout, run.stderr);
    let first = run.stdout.lines().next().unwrap();
    assert!(first.starts_with(&format!("app/s1: state drain; it keeps its {bound} session")));
    let counts = counts_in(&run.stdout, "s1");
    assert_eq!(counts.first(), Some(&bound), "{}", run.stdout);
    assert_eq!(counts.last(), Some(&0), "{}", run.stdout);
    assert!(counts.windows(2).all(|w| w[1] < w[0]), "printed only when it falls: {counts:?}");
    assert!(run.stdout.ends_with("app/s1 holds no sessions: it can be taken out\n"));
    assert_eq!(server_json(&t, &c, "s1").await["state"], "drain");
}

#[tokio::test]
async fn drain_wait_times_out_while_traffic_keeps_a_session_alive() {
    let servers = echo_servers(2);
    let t = start(header_cfg(&servers, "2s")).await;
    let c = client();
    let send = || c.get(t.url("web")).header("x-session-id", "kept").send();
    let pinned = server_of(&send().await.unwrap());
    // The session's traffic, every 200 ms: well inside its 2 s idle timeout.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = tokio::spawn({
        let (c, url, stop) = (c.clone(), t.url("web"), Arc::clone(&stop));
        async move {
            let mut served_by = Vec::new();
            let mut pace = tokio::time::interval(Duration::from_millis(200));
            while !stop.load(Ordering::Relaxed) {
                pace.tick().await;
                let r = c.get(&url).header("x-session-id", "kept").send().await.unwrap();
                served_by.push(server_of(&r));
            }
            served_by
        }
    });
    let admin = admin_base(&t);
    let args = ["drain", "app", &pinned, "--wait", "--timeout", "2s", "--admin", &admin];
    let run = tether_cli(&args, &[]).await;
    stop.store(true, Ordering::Relaxed);
    let served_by = traffic.await.unwrap();
    assert_eq!(run.code, Some(1), "stdout: {}\nstderr: {}", run.stdout, run.stderr);
    assert_eq!(counts_in(&run.stdout, &pinned), [1], "{}", run.stdout);
    let want = format!("tether: timed out after 2s: app/{pinned} still holds 1 session");
    assert!(run.stderr.starts_with(&want), "{}", run.stderr);
    assert!(served_by.len() >= 5, "traffic flowed: {served_by:?}");
    assert!(served_by.iter().all(|s| *s == pinned), "drain kept the session: {served_by:?}");
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_named_and_exits_1() {
    let servers = echo_servers(2);
    let dir = ScratchDir::new("cli-token").unwrap();
    let (right, wrong) = (dir.path().join("right.token"), dir.path().join("wrong.token"));
    std::fs::write(&right, "s3cret\n").unwrap();
    std::fs::write(&wrong, "guess").unwrap();
    let t = start(header_cfg(&servers, "30m").admin_token_file(&right)).await;
    let admin = admin_base(&t);
    let drain = ["drain", "app", "s0", "--admin", &admin];
    let url = format!("{admin}/api/v1/backends/app/servers/s0");

    let none = tether_cli(&drain, &[]).await;
    assert_eq!(none.code, Some(1));
    assert!(none.stderr.contains(&url) && none.stderr.contains("401"), "{}", none.stderr);
    assert!(none.stderr.contains("needs a token"), "{}", none.stderr);

    let with_wrong = [&drain[..], &["--token-file", wrong.to_str().unwrap()]].concat();
    let bad = tether_cli(&with_wrong, &[]).await;
    assert_eq!(bad.code, Some(1));
    assert!(bad.stderr.contains("token was refused"), "{}", bad.stderr);
    assert_eq!(server_json(&t, &client(), "s0").await["state"], "ready", "nothing changed");

    let good = tether_cli(&drain, &[("TETHER_ADMIN_TOKEN", "s3cret")]).await;
    assert_eq!(good.code, Some(0), "{}", good.stderr);
    assert_eq!(server_json(&t, &client(), "s0").await["state"], "drain");
}

#[tokio::test]
async fn an_unknown_backend_or_server_exits_1_with_the_apis_message() {
    let servers = echo_servers(2);
    let t = start(header_cfg(&servers, "30m")).await;
    let admin = admin_base(&t);
    for (backend, server, message) in [
        ("app", "nope", "404: no server \"nope\" in backend \"app\""),
        ("nope", "s0", "404: no backend \"nope\""),
    ] {
        let run = tether_cli(&["drain", backend, server, "--wait", "--admin", &admin], &[]).await;
        assert_eq!(run.code, Some(1), "{backend}/{server}");
        assert!(run.stderr.contains(message), "{backend}/{server}: {}", run.stderr);
        assert_eq!(run.stdout, "", "{backend}/{server}");
    }
}

#[tokio::test]
async fn an_unreachable_or_non_http_admin_api_exits_1_naming_the_url() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let url = format!("http://{closed}");
    let run = tether_cli(&["servers", "--admin", &url], &[]).await;
    assert_eq!(run.code, Some(1));
    let want = format!("tether: cannot reach the admin API at {url}/api/v1/backends: ");
    assert!(run.stderr.starts_with(&want), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "one line: {}", run.stderr);

    let tls = format!("https://{closed}");
    let run = tether_cli(&["servers"], &[("TETHER_ADMIN", &tls)]).await;
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains(&tls) && run.stderr.contains("only http://"), "{}", run.stderr);
}
