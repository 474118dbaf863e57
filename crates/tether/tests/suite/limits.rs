//! Per-server connection limits, the bounded queue, and what a full pinned server does to
//! its sessions (`on_server_full`), through a real Tether; and the limits on configured
//! values (durations, integers, types) that `tether check` and `tether run` enforce.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tether_testkit::{CheckOutput, EchoServer, Tether, run_check};

use crate::support::fixture::*;

/// Backend "app" over `servers`, each holding at most `max_per_server` requests, with a queue
/// of `queue_size` (0: none).
fn limited(servers: &[EchoServer], max_per_server: u32, queue_size: u32) -> Backend {
    let app = app(servers).set("limits.max_connections_per_server", max_per_server);
    app.set("limits.queue_size", queue_size)
}

#[tokio::test]
async fn the_eleventh_request_queues_and_a_full_queue_gets_503_with_retry_after() {
    let servers = echo_servers(1);
    let t = start(config(limited(&servers, 10, 5).set("limits.queue_timeout", "10s"))).await;
    let c = client();
    // Long enough that all 16 requests arrive while the first 10 still hold their slots, even
    // on a loaded machine.
    let url = format!("{}/slow?ms=4000", t.url("web"));
    let started = Instant::now();
    let replies = join_all((0..16).map(|_| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            let r = c.get(url).send().await.unwrap();
            (r.status().as_u16(), r.headers().get("retry-after").is_some(), started.elapsed())
        }
    }))
    .await;
    let ok: Vec<_> = replies.iter().filter(|r| r.0 == 200).collect();
    let refused: Vec<_> = replies.iter().filter(|r| r.0 == 503).collect();
    assert_eq!((ok.len(), refused.len()), (15, 1), "{replies:?}");
    assert!(refused[0].1, "503 carries Retry-After");
    // Immediate: it did not wait for a slot, so it came back before any slot was freed.
    let first_served = ok.iter().map(|r| r.2).min().unwrap();
    assert!(refused[0].2 < first_served, "the refusal waited for a slot: {replies:?}");
    // Each held a slot for 4 s after waiting at least that long for it: a lower bound, which
    // a slow machine only makes longer.
    let queued = ok.iter().filter(|r| r.2 >= Duration::from_millis(7500)).count();
    assert_eq!(queued, 5, "five waited for a slot, then were served: {replies:?}");
    assert!(servers[0].requests() <= 15);
}

#[tokio::test]
async fn a_queued_request_gives_up_after_the_queue_timeout() {
    let servers = echo_servers(1);
    let t = start(config(limited(&servers, 1, 4).set("limits.queue_timeout", "200ms"))).await;
    let c = client();
    let slow = tokio::spawn({
        let (c, url) = (c.clone(), format!("{}/slow?ms=3000", t.url("web")));
        async move { c.get(url).send().await.unwrap().status() }
    });
    assert!(
        tether_testkit::wait_until(Duration::from_secs(5), || servers[0].requests() == 1).await
    );
    let started = Instant::now();
    let r = c.get(t.url("web")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(started.elapsed() >= Duration::from_millis(180), "it waited: {:?}", started.elapsed());
    // It gave up while the slot was still held (not when the slot came free), so the queue
    // timeout ended the wait.
    assert!(!slow.is_finished(), "the 503 came only after the slot was freed");
    assert_eq!(slow.await.unwrap(), 200, "the request holding the slot is unaffected");
}

/// Pins key `k` to a server, then fills that server with one slow request of the same key.
async fn pin_and_fill(
    t: &tether_testkit::Tether,
    c: &reqwest::Client,
    servers: &[EchoServer],
) -> (String, tokio::task::JoinHandle<u16>) {
    let first = c.get(t.url("web")).header("x-session-id", "k").send().await.unwrap();
    let owner = server_of(&first);
    let before: u64 = servers.iter().map(|s| s.requests()).sum();
    let slow = tokio::spawn({
        let (c, url) = (c.clone(), format!("{}/slow?ms=1500", t.url("web")));
        async move { c.get(url).header("x-session-id", "k").send().await.unwrap().status().as_u16() }
    });
    let arrived = tether_testkit::wait_until(Duration::from_secs(5), || {
        servers.iter().map(|s| s.requests()).sum::<u64>() > before
    })
    .await;
    assert!(arrived);
    (owner, slow)
}

/// Affinity by header `X-Session-Id`.
fn by_header() -> Sticky {
    Sticky::header("X-Session-Id")
}

#[tokio::test]
async fn spill_serves_elsewhere_once_and_keeps_the_pin() {
    let servers = echo_servers(2);
    let spill = by_header().set("on_server_full", "spill");
    let t = start(config(limited(&servers, 1, 0).sticky(spill))).await;
    let c = client();
    let (owner, slow) = pin_and_fill(&t, &c, &servers).await;
    let r = c.get(t.url("web")).header("x-session-id", "k").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_ne!(server_of(&r), owner, "spilled to the other server");
    assert_eq!(slow.await.unwrap(), 200);
    let r = c.get(t.url("web")).header("x-session-id", "k").send().await.unwrap();
    assert_eq!(server_of(&r), owner, "the pin was kept");
    assert!(t.wait_for_log(|l| l["affinity"] == "spilled", Duration::from_secs(5)).await.is_some());
}

#[tokio::test]
async fn redispatch_moves_the_pin_when_the_server_is_full() {
    let servers = echo_servers(2);
    let redispatch = by_header().set("on_server_full", "redispatch");
    let t = start(config(limited(&servers, 1, 0).sticky(redispatch))).await;
    let c = client();
    let (owner, slow) = pin_and_fill(&t, &c, &servers).await;
    let r = c.get(t.url("web")).header("x-session-id", "k").send().await.unwrap();
    let moved = server_of(&r);
    assert_ne!(moved, owner);
    assert_eq!(slow.await.unwrap(), 200);
    let r = c.get(t.url("web")).header("x-session-id", "k").send().await.unwrap();
    assert_eq!(server_of(&r), moved, "re-pinned");
}

#[tokio::test]
async fn queue_policy_waits_for_the_pinned_server() {
    let servers = echo_servers(2);
    let t = start(config(limited(&servers, 1, 10).sticky(by_header()))).await;
    let c = client();
    let (owner, slow) = pin_and_fill(&t, &c, &servers).await;
    let r = c.get(t.url("web")).header("x-session-id", "k").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(server_of(&r), owner, "waited for its own server");
    assert_eq!(slow.await.unwrap(), 200);
}

#[tokio::test]
async fn a_server_added_by_reload_ramps_up_under_slow_start() {
    let servers = echo_servers(3);
    let cfg = |n: usize| config(app(&servers[..n]).set("slow_start", "60s"));
    let mut t = start(&cfg(2)).await;
    assert_eq!(t.reload(&cfg(3)).await.unwrap()["message"], "config reloaded");
    let c = fresh_client();
    let mut to_new = 0;
    for _ in 0..300 {
        if server_of(&c.get(t.url("web")).send().await.unwrap()) == "s2" {
            to_new += 1;
        }
    }
    // Without slow start round robin would give it 100 of 300; at the start of a 60 s ramp
    // it takes about a tenth of its share.
    assert!(to_new > 0, "the new server gets some traffic");
    assert!(to_new < 50, "but only a small share while ramping: {to_new}");
}

// ---------------------------------------------------------------------------------------
// Limits on configured values

/// 1-based number of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    let at = text.lines().position(|l| l.contains(needle));
    at.map(|i| i + 1).unwrap_or_else(|| panic!("no line containing {needle:?} in:\n{text}"))
}

/// Asserts that `tether check` refused the file with one error, printed as
/// `PATH (line N): MESSAGE...`, N being the line holding `value`.
fn assert_one_error(out: &CheckOutput, text: &str, path: &str, value: &str, message: &str) {
    let report = format!("stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert_eq!(out.code, Some(1), "{path}: {report}");
    assert!(out.stderr.contains("1 configuration error:"), "{path}: {report}");
    let wanted = format!("{path} (line {}): {message}", line_of(text, value));
    assert!(out.stderr.lines().any(|l| l.trim().starts_with(&wanted)), "no {wanted:?}; {report}");
    assert!(!out.stderr.contains("$__"), "a serde internal name leaked: {report}");
}

/// `cfg`'s text with `line` added at the top of its table `header` (e.g. `[[listeners]]`):
/// for values no TOML library holds, such as integers past 64 bits.
fn with_raw_line(cfg: Config, header: &str, line: &str) -> String {
    let text = cfg.to_string();
    assert!(text.contains(header), "no {header} in:\n{text}");
    text.replacen(&format!("{header}\n"), &format!("{header}\n{line}\n"), 1)
}

/// A file whose only server has `weight = {weight}` (any TOML value).
fn with_weight(server: &EchoServer, weight: impl Into<toml::Value>) -> Config {
    config(Backend::new().server(ServerEntry::from(server).set("weight", weight)))
}

/// The duration keys of a listener, a backend and a backend's `sticky`.
const LISTENER_DURATIONS: [&str; 3] = ["timeouts.header", "timeouts.body", "timeouts.idle"];
const BACKEND_DURATIONS: [&str; 9] = [
    "timeouts.connect",
    "timeouts.response",
    "timeouts.idle",
    "limits.queue_timeout",
    "slow_start",
    "outlier.base_ejection",
    "outlier.max_ejection",
    "health_check.interval",
    "health_check.timeout",
];
const STICKY_DURATIONS: [&str; 3] = ["idle_timeout", "max_lifetime", "max_age"];

/// Every duration key: its path as errors name it, and a file with that key set to `value`.
fn duration_files(servers: &[EchoServer], value: &str) -> Vec<(String, String)> {
    let mut files =
        vec![("grace_period".to_owned(), config(app(servers)).set("grace_period", value))];
    for key in LISTENER_DURATIONS {
        let file = config_on(web().set(key, value), app(servers));
        files.push((format!("listeners[0].{key}"), file));
    }
    for key in BACKEND_DURATIONS {
        files.push((format!("backends.app.{key}"), config(app(servers).set(key, value))));
    }
    for key in STICKY_DURATIONS {
        let file = config(app(servers).sticky(Sticky::cookie().set(key, value)));
        files.push((format!("backends.app.sticky.{key}"), file));
    }
    let redis = config(app(servers)).redis_stick_table("redis://127.0.0.1:6379");
    files.push((
        "stick_table.redis_timeout".to_owned(),
        redis.set("stick_table.redis_timeout", value),
    ));
    files.into_iter().map(|(path, file)| (path, file.to_string())).collect()
}

#[tokio::test]
async fn check_refuses_every_duration_longer_than_400_days_naming_the_key() {
    let servers = echo_servers(1);
    // The value of the issue, one past the maximum, and one a timer cannot even hold.
    for value in ["2562047788015215h", "401d", "5000000000000000h"] {
        for (path, text) in duration_files(&servers, value) {
            let out = run_check(BIN, &text).unwrap();
            let message = format!("{value:?} is longer than the maximum of 400d");
            assert_one_error(&out, &text, &path, value, &message);
        }
    }
    for (path, text) in duration_files(&servers, "400d") {
        let out = run_check(BIN, &text).unwrap();
        assert_eq!(out.code, Some(0), "{path} = \"400d\" refused; stderr:\n{}", out.stderr);
    }
}

#[tokio::test]
async fn run_refuses_a_duration_too_long_for_a_timer_instead_of_resetting_connections() {
    let servers = echo_servers(1);
    let web = web().set("timeouts.header", "5000000000000000h");
    let mut tether = Tether::spawn(BIN, config_on(web, app(&servers))).unwrap();
    let status = tether.wait_exit(Duration::from_secs(10)).await;
    assert!(status.is_some(), "tether started with a header timeout no timer can hold");
    assert_eq!(status.and_then(|s| s.code()), Some(1), "logs: {:#?}", tether.logs());
    let named = tether.logs().iter().any(|l| {
        l["stream"] == "stderr"
            && l["raw"].as_str().is_some_and(|r| r.contains("listeners[0].timeouts.header (line"))
    });
    assert!(named, "the key is not named on stderr; logs: {:#?}", tether.logs());
}

#[tokio::test]
async fn every_duration_at_the_maximum_serves_requests_without_a_panic() {
    let servers = echo_servers(1);
    let d = "400d";
    let app = limited(&servers, 10, 5).health_check(HealthCheck::tcp().rise(1));
    let app = BACKEND_DURATIONS.into_iter().fold(app, |app, key| app.set(key, d));
    let sticky = STICKY_DURATIONS.into_iter().fold(Sticky::cookie(), |s, key| s.set(key, d));
    let web = LISTENER_DURATIONS.into_iter().fold(web(), |web, key| web.set(key, d));
    let t = start(config_on(web, app.sticky(sticky)).set("grace_period", d)).await;
    let c = client();
    // Twice on one kept-alive connection (the head timer restarts), with a body (the body
    // timer restarts on every chunk).
    for _ in 0..2 {
        let get = c.get(format!("{}/", t.url("web"))).send().await.unwrap();
        assert_eq!(get.status(), 200);
        let post = c.post(format!("{}/", t.url("web"))).body("hello").send().await.unwrap();
        assert_eq!(post.status(), 200);
    }
    let panicked =
        t.logs().iter().any(|l| l["raw"].as_str().is_some_and(|r| r.contains("panicked")));
    assert!(!panicked, "logs: {:#?}", t.logs());
}

#[tokio::test]
async fn check_names_the_key_of_a_value_of_the_wrong_type() {
    let servers = echo_servers(1);
    let listener = |web: Listener| config_on(web, app(&servers));
    // (the file, the key path, the wrong value, what the message says)
    let cases = [
        (
            with_weight(&servers[0], "2"),
            "backends.app.servers[0].weight",
            "\"2\"",
            "expected an integer, found string \"2\"",
        ),
        (
            with_weight(&servers[0], 2.5),
            "backends.app.servers[0].weight",
            "2.5",
            "expected an integer, found floating point `2.5`",
        ),
        (
            listener(web().set("timeouts", 5)),
            "listeners[0].timeouts",
            "timeouts = 5",
            "expected a table, found integer `5`",
        ),
        (
            listener(web().set("proxy_protocol", "yes")),
            "listeners[0].proxy_protocol",
            "\"yes\"",
            "expected a boolean",
        ),
        (
            config(app(&servers).sticky(Sticky::cookie().set("idle_timeout", 30))),
            "backends.app.sticky.idle_timeout",
            "= 30",
            "expected a string, found integer `30`",
        ),
    ];
    for (file, path, value, message) in cases {
        let text = file.to_string();
        let out = run_check(BIN, &text).unwrap();
        assert_one_error(&out, &text, path, value, message);
    }
}

#[tokio::test]
async fn check_names_the_key_of_an_integer_past_its_type() {
    let servers = echo_servers(1);
    // As text: most of these are past 64 bits, which no TOML library holds.
    let weight = |w: &str| {
        let file = config(Backend::new().server(&servers[0]));
        with_raw_line(file, "[[backends.app.servers]]", &format!("weight = {w}"))
    };
    let big = "99999999999999999999";
    let past_u64 = "18446744073709551616";
    let limits = with_raw_line(
        config(app(&servers)),
        "[[listeners]]",
        &format!("limits = {{ max_body_bytes = {past_u64} }}"),
    );
    // (the file, the key path, the value, what the message says)
    let cases = [
        (weight(big), "backends.app.servers[0].weight", big, format!("{big} is out of range")),
        (
            weight(&format!("-{big}")),
            "backends.app.servers[0].weight",
            big,
            format!("-{big} is out of range"),
        ),
        (
            limits,
            "listeners[0].limits.max_body_bytes",
            past_u64,
            format!("{past_u64} is out of range"),
        ),
        // Past u32 but a TOML integer: the key's own range.
        (
            weight("4294967296"),
            "backends.app.servers[0].weight",
            "4294967296",
            "weight 4294967296 is out of range; expected 1 to 256".to_owned(),
        ),
    ];
    for (text, path, value, message) in cases {
        let out = run_check(BIN, &text).unwrap();
        assert_one_error(&out, &text, path, value, &message);
        assert!(!out.stderr.contains("(file)"), "{path}: the key is not named:\n{}", out.stderr);
    }
}
