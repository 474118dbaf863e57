//! Lifecycle of the real `tether` binary: `check`, startup with a bad file, SIGHUP reloads
//! (good, broken, under traffic) and SIGTERM draining. Every test runs real echo servers and
//! a real Tether on port 0 and talks to it over loopback.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tether_testkit::{EchoServer, Tether, run_check, wait_until, wait_until_async};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::fixture::{
    BIN, Backend, Config, ServerEntry, Sticky, client, config, fresh_client,
};

/// Generous bound for anything that should happen "at once" on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(10);

/// Listener `web` on port 0 in front of `app` (as backend "app") with a connect timeout of
/// 1 s and a response timeout of 10 s; a grace period of 10 s.
fn lifecycle_config(app: Backend) -> Config {
    let app = app.set("timeouts.connect", "1s").set("timeouts.response", "10s");
    config(app).set("grace_period", "10s")
}

/// What one proxied request came back with.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// `x-server` of the echo server that answered ("" when absent).
    server: String,
    /// The `tether=...` pair of our affinity cookie, when one was set.
    cookie: Option<String>,
}

/// GETs `url` (with `cookie` as the `Cookie` header when given) and reads the whole body.
async fn get(client: &reqwest::Client, url: &str, cookie: Option<&str>) -> Result<Answer, String> {
    let mut request = client.get(url);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await.map_err(|e| format!("GET {url}: {e:?}"))?;
    let status = response.status().as_u16();
    let server = response
        .headers()
        .get("x-server")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let cookie = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|pair| pair.starts_with("tether="))
        .map(str::to_owned);
    response.bytes().await.map_err(|e| format!("reading the body of GET {url}: {e:?}"))?;
    Ok(Answer { status, server, cookie })
}

/// 1-based line number of the `nth` (0-based) line of `text` containing `needle`.
fn line_containing(text: &str, needle: &str, nth: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.contains(needle))
        .nth(nth)
        .map(|(index, _)| index + 1)
        .unwrap_or_else(|| panic!("no line #{nth} containing {needle:?} in:\n{text}"))
}

fn message_is(line: &Value, message: &str) -> bool {
    line["message"] == message
}

// ---------------------------------------------------------------------------------------
// tether check / tether run with a bad file

const SEVERAL_INDEPENDENT_ERRORS: &str = r#"grace_period = "10 parsecs"

[[listeners]]
name = "web"
address = "127.0.0.1:0"
default_backend = "nope"

[backends.app]
balance = "round_robin"

[[backends.app.servers]]
name = "a"
address = "127.0.0.1:9001"
weight = 0

[[backends.app.servers]]
name = "b"
address = "not-an-address"

[[backends.app.servers]]
name = "a"
address = "127.0.0.1:9003"
"#;

#[test]
fn check_prints_every_error_with_its_key_path_and_exits_1() {
    let text = SEVERAL_INDEPENDENT_ERRORS;
    let out = run_check(BIN, text).unwrap();

    assert_eq!(out.code, Some(1), "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("5 configuration errors:"),
        "expected a count of 5 errors; stderr:\n{}",
        out.stderr
    );
    let expected = [
        ("grace_period", line_containing(text, "10 parsecs", 0)),
        ("listeners[0].default_backend", line_containing(text, "\"nope\"", 0)),
        ("backends.app.servers[0].weight", line_containing(text, "weight = 0", 0)),
        ("backends.app.servers[1].address", line_containing(text, "not-an-address", 0)),
        ("backends.app.servers[2].name", line_containing(text, "name = \"a\"", 1)),
    ];
    for (path, line) in expected {
        let wanted = format!("{path} (line {line}): ");
        assert!(
            out.stderr.lines().any(|l| l.contains(&wanted)),
            "no line with {wanted:?}; stderr:\n{}",
            out.stderr
        );
    }

    // The same file with its mistakes fixed is accepted.
    let valid = text
        .replace("10 parsecs", "10s")
        .replace("\"nope\"", "\"app\"")
        .replace("weight = 0", "weight = 1")
        .replace("not-an-address", "127.0.0.1:9002")
        .replacen(
            "name = \"a\"\naddress = \"127.0.0.1:9003\"",
            "name = \"c\"\naddress = \"127.0.0.1:9003\"",
            1,
        );
    let ok = run_check(BIN, &valid).unwrap();
    assert_eq!(ok.code, Some(0), "valid file rejected; stderr:\n{}", ok.stderr);

    // An unknown key (a typo) is named with its full key path and line.
    let typo =
        format!("{valid}\n[backends.app.sticky]\nmode = \"cookie\"\ncookie_nmae = \"sid\"\n");
    let typo_line = line_containing(&typo, "cookie_nmae", 0);
    let bad = run_check(BIN, &typo).unwrap();
    assert_eq!(bad.code, Some(1), "stderr:\n{}", bad.stderr);
    assert!(
        bad.stderr.contains(&format!("backends.app.sticky.cookie_nmae (line {typo_line})")),
        "the unknown key is not named with its path and line; stderr:\n{}",
        bad.stderr
    );
}

#[tokio::test]
async fn run_with_an_invalid_file_exits_1_and_names_the_error() {
    let text =
        "grace_period = \"soon\"\n\n[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:0\"\n";
    let mut tether = Tether::spawn(BIN, text).unwrap();

    let status = tether.wait_exit(DEADLINE).await.expect("tether kept running with a bad file");
    assert_eq!(status.code(), Some(1), "logs: {:#?}", tether.logs());
    let named = tether
        .wait_for_log(
            |line| {
                line["stream"] == "stderr"
                    && line["raw"]
                        .as_str()
                        .is_some_and(|raw| raw.contains("grace_period (line 1): "))
            },
            DEADLINE,
        )
        .await;
    assert!(named.is_some(), "the error was not printed on stderr; logs: {:#?}", tether.logs());
    assert!(
        !tether.logs().iter().any(|line| message_is(line, "listener bound")),
        "a listener was bound although the file is invalid"
    );
}

// ---------------------------------------------------------------------------------------
// SIGHUP

#[tokio::test]
async fn sighup_with_a_broken_file_keeps_serving_the_old_config() {
    let a = EchoServer::start("a").unwrap();
    let b = EchoServer::start("b").unwrap();
    let good = lifecycle_config(Backend::new().servers([&a, &b]));
    let mut tether = Tether::start(BIN, &good).await.unwrap();
    let url = tether.url("web");
    let http = client();

    let outcome = tether.reload("[[listeners]\nthis is not toml = = =\n").await.unwrap();

    assert_eq!(outcome["message"], "reload failed", "outcome line: {outcome}");
    assert!(
        outcome["error"].as_str().is_some_and(|e| !e.is_empty()),
        "the failure does not say why: {outcome}"
    );
    let mut seen = HashMap::new();
    for _ in 0..10 {
        let answer = get(&http, &url, None).await.unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
        *seen.entry(answer.server).or_insert(0) += 1;
    }
    assert_eq!(seen.get("a"), Some(&5), "old round robin over a and b not kept: {seen:?}");
    assert_eq!(seen.get("b"), Some(&5), "old round robin over a and b not kept: {seen:?}");

    // The failed attempt did not count as a generation: the next good reload is the second.
    let next = tether.reload(&good).await.unwrap();
    assert_eq!(next["message"], "config reloaded", "{next}");
    assert_eq!(next["generation"], 2, "{next}");
}

#[tokio::test]
async fn sighup_with_a_new_server_starts_using_it() {
    let a = EchoServer::start("a").unwrap();
    let b = EchoServer::start("b").unwrap();
    let c = EchoServer::start("c").unwrap();
    let two = lifecycle_config(Backend::new().servers([&a, &b]));
    let mut tether = Tether::start(BIN, &two).await.unwrap();
    let url = tether.url("web");
    let http = client();
    for _ in 0..6 {
        assert_ne!(get(&http, &url, None).await.unwrap().server, "c");
    }
    assert_eq!(c.requests(), 0, "c got traffic before it was configured");

    let three = lifecycle_config(Backend::new().servers([&a, &b, &c]));
    let outcome = tether.reload(&three).await.unwrap();
    assert_eq!(outcome["message"], "config reloaded", "{outcome}");

    let mut attempts = 0;
    let reached_c = wait_until_async(DEADLINE, || {
        attempts += 1;
        let (http, url) = (&http, &url);
        async move {
            let answer = get(http, url, None).await;
            matches!(answer, Ok(Answer { status: 200, ref server, .. }) if server == "c")
        }
    })
    .await;
    assert!(reached_c, "no request reached the new server c in {attempts} attempts");
    assert!(c.requests() >= 1);
}

/// Sends GETs in a loop until `stop`, counting the answered ones in `served`; returns the
/// failures.
async fn traffic(
    http: reqwest::Client,
    url: String,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
) -> Vec<String> {
    let mut failures = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match get(&http, &url, None).await {
            Ok(Answer { status: 200, ref server, .. }) if ["a", "b", "c"].contains(&&**server) => {
                served.fetch_add(1, Ordering::Relaxed);
            }
            Ok(answer) => failures.push(format!("{answer:?}")),
            Err(e) => failures.push(e),
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_every_2s_during_20s_of_traffic_loses_no_request() {
    let a = EchoServer::start("a").unwrap();
    let b = EchoServer::start("b").unwrap();
    let c = EchoServer::start("c").unwrap();
    // Access log off: 100k request lines would only load the machine and the log capture.
    let quiet = |app: Backend| lifecycle_config(app).set("access_log", false);
    let without_c = quiet(Backend::new().server(ServerEntry::from(&a).weight(2)).server(&b));
    let with_c = quiet(Backend::new().servers([&a, &b, &c]));
    let mut tether = Tether::start(BIN, &without_c).await.unwrap();
    let url = tether.url("web");

    let start = Instant::now();
    let (stop, served) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = [client(), fresh_client(), fresh_client()]
        .into_iter()
        .map(|http| tokio::spawn(traffic(http, url.clone(), stop.clone(), served.clone())))
        .collect();

    // Requests answered so far: at the start, at each reload, and 2 s after the last.
    let mut served_at = vec![0];
    for round in 1..=9u32 {
        // The schedule of the workload, not a wait for a condition.
        tokio::time::sleep_until(start + Duration::from_secs(2) * round).await;
        served_at.push(served.load(Ordering::Relaxed));
        let next = if round % 2 == 1 { &with_c } else { &without_c };
        let outcome = tether.reload(next).await.unwrap();
        assert_eq!(outcome["message"], "config reloaded", "reload {round}: {outcome}");
    }
    // The schedule's last interval: requests must still be served after the last reload.
    tokio::time::sleep_until(start + Duration::from_secs(2) * 10).await;
    served_at.push(served.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);

    let mut failures = Vec::new();
    for client in clients {
        failures.extend(client.await.unwrap());
    }
    let total = served.load(Ordering::Relaxed) + failures.len() as u64;
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed; first ones: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    // However fast the machine: the traffic ran across every reload.
    let idle = served_at.windows(2).position(|w| w[1] == w[0]);
    assert_eq!(idle, None, "no request answered between two reloads: {served_at:?}");
    assert!(c.requests() > 0, "the reloads adding c never took effect");
    let reloaded = tether.logs().iter().filter(|line| message_is(line, "config reloaded")).count();
    assert!(reloaded >= 9, "only {reloaded} \"config reloaded\" lines after 9 reloads");
    eprintln!(
        "{total} requests, {reloaded} reloads, per server: a={} b={} c={}",
        a.requests(),
        b.requests(),
        c.requests()
    );
}

// ---------------------------------------------------------------------------------------
// SIGTERM

#[tokio::test]
async fn sigterm_lets_a_slow_request_finish_then_exits_0() {
    let a = EchoServer::start("a").unwrap();
    let cfg = lifecycle_config(Backend::new().server(&a));
    let mut tether = Tether::start(BIN, &cfg).await.unwrap();
    let addr = tether.listener_addr("web");
    let slow_url = format!("{}/slow?ms=2000", tether.url("web"));

    let http = client();
    let slow = tokio::spawn(async move { get(&http, &slow_url, None).await });
    assert!(wait_until(DEADLINE, || a.requests() >= 1).await, "the slow request never arrived");

    tether.signal("TERM").unwrap();

    let refused = wait_until_async(DEADLINE, || async {
        // A connect that succeeds is dropped at once; the drain closes it.
        TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(refused, "the listener still accepts connections after SIGTERM");
    assert!(!slow.is_finished(), "the listener closed only after the slow request ended");

    let answer = slow.await.unwrap().unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.server, "a");
    let status = tether.wait_exit(Duration::from_secs(10)).await.expect("still running");
    assert_eq!(status.code(), Some(0), "exit status {status}");
    let complete =
        tether.wait_for_log(|line| message_is(line, "shutdown complete"), DEADLINE).await;
    assert!(complete.is_some(), "no \"shutdown complete\" line");
}

/// A second SIGINT during the drain stops at once (docs/operations.md, "Signals"), cutting what is in flight,
/// and says so: exit status 130 and a warning, instead of waiting out the grace period.
#[tokio::test]
async fn a_second_sigint_during_the_drain_stops_at_once() {
    let a = EchoServer::start("a").unwrap();
    let cfg = lifecycle_config(Backend::new().server(&a)).set("grace_period", "60s");
    let mut tether = Tether::start(BIN, &cfg).await.unwrap();
    // 8 s: within the backend's 10 s response timeout, far beyond what the test waits.
    let slow_url = format!("{}/slow?ms=8000", tether.url("web"));
    let http = client();
    let slow = tokio::spawn(async move { get(&http, &slow_url, None).await });
    assert!(wait_until(DEADLINE, || a.requests() >= 1).await, "the slow request never arrived");

    let asked = std::time::Instant::now();
    tether.signal("INT").unwrap();
    let says =
        |line: &Value, text: &str| line["message"].as_str().is_some_and(|m| m.contains(text));
    let draining =
        tether.wait_for_log(|line| says(line, "shutting down"), DEADLINE).await.is_some();
    assert!(draining, "no drain after the first SIGINT");
    tether.signal("INT").unwrap();
    let status = tether.wait_exit(Duration::from_secs(5)).await.expect("still running");
    // Not a speed requirement: 5 s tells "at once" from the 60 s grace period.
    assert!(asked.elapsed() < Duration::from_secs(5), "waited {:?}", asked.elapsed());
    assert_eq!(status.code(), Some(130), "exit status {status}");
    let warned = tether.logs().iter().any(|l| says(l, "some requests were cut short"));
    assert!(warned, "no warning that requests were cut short");
    let answer = slow.await.unwrap();
    assert!(answer.is_err() || answer.as_ref().is_ok_and(|a| a.status != 200), "{answer:?}");
}

// ---------------------------------------------------------------------------------------
// State across reloads

#[tokio::test]
async fn counters_and_affinity_survive_a_reload() {
    let a = EchoServer::start("a").unwrap();
    let b = EchoServer::start("b").unwrap();
    let servers = |weight| {
        let (a, b) = (ServerEntry::from(&a).weight(weight), ServerEntry::from(&b).weight(weight));
        let app = Backend::new().balance("least_conn").sticky(Sticky::cookie()).servers([a, b]);
        lifecycle_config(app)
    };
    // least_conn reads each server's in-flight counter: that is the counter that must carry
    // over. Equal weights before and after, so only the counter decides.
    let (before, after) = (servers(1), servers(2));
    let mut tether = Tether::start(BIN, &before).await.unwrap();
    let url = tether.url("web");
    let http = client();

    // One affinity cookie per server: each new session from a connection of its own (one
    // connection's cookieless requests share their first pick).
    let mut cookies: HashMap<String, String> = HashMap::new();
    for _ in 0..20 {
        let answer = get(&fresh_client(), &url, None).await.unwrap();
        assert_eq!(answer.status, 200);
        let Answer { server, cookie, .. } = answer;
        let cookie = cookie.unwrap_or_else(|| panic!("no affinity cookie from {server}"));
        cookies.entry(server).or_insert(cookie);
        if cookies.len() == 2 {
            break;
        }
    }
    assert_eq!(cookies.len(), 2, "idle least_conn never picked both servers: {cookies:?}");

    // One long request keeps a server busy across the reload.
    let (a_before, b_before) = (a.requests(), b.requests());
    let slow_url = format!("{url}/slow?ms=30000");
    let slow_client = client();
    let slow = tokio::spawn(async move { get(&slow_client, &slow_url, None).await });
    assert!(
        wait_until(DEADLINE, || a.requests() + b.requests() > a_before + b_before).await,
        "the slow request never arrived"
    );
    let (busy, idle) = if a.requests() > a_before { ("a", "b") } else { ("b", "a") };

    let outcome = tether.reload(&after).await.unwrap();
    assert_eq!(outcome["message"], "config reloaded", "{outcome}");

    for _ in 0..6 {
        let answer = get(&http, &url, None).await.unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.server, idle,
            "least_conn sent a new session to {busy}, which has a request in flight: \
             its in-flight counter was lost in the reload"
        );
    }
    for server in [busy, idle] {
        for _ in 0..3 {
            let answer = get(&http, &url, Some(&cookies[server])).await.unwrap();
            assert_eq!(answer.status, 200);
            assert_eq!(answer.server, server, "a session pinned to {server} moved: {answer:?}");
        }
    }
    slow.abort();
}
