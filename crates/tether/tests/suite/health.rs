//! Health checks, retries, passive outlier detection, backups, `on_all_down` and broken
//! upstreams, through a real Tether in front of real servers on loopback.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tether_testkit::{
    Behaviour, CloseMidResponseServer, Counters, EchoServer, GarbageServer, HangServer,
    ResetServer, Server, StatusServer, Tether, wait_until_async,
};
use tokio::net::TcpStream;

use crate::support::fixture::*;

/// Short checks of `path`, so hysteresis plays out in well under a second.
fn fast_http_check(path: &str) -> HealthCheck {
    HealthCheck::http(path).interval("100ms").timeout("100ms").rise(2).fall(2)
}

/// How long a transition may take: `fall` (or `rise`) × interval, plus generous slack for a
/// loaded machine.
const TRANSITION: Duration = Duration::from_secs(5);

/// Listener "web" → `app` (as backend "app"), and the admin listener.
fn with_admin(app: Backend) -> Config {
    config(app).admin()
}

/// Backend "app" over server `name` at `addr`, then the echo servers `others`.
fn first_then(name: &str, addr: SocketAddr, others: &[EchoServer]) -> Backend {
    Backend::new().server(ServerEntry::new(name, addr)).servers(others)
}

/// `backend` with passive outlier detection: a server is ejected after `failures` in a row,
/// for `base` (doubling up to `max`), and at most `max_percent` of the servers at once.
fn ejecting(
    backend: Backend,
    failures: u32,
    (base, max): (&str, &str),
    max_percent: u32,
) -> Backend {
    backend
        .set("outlier.consecutive_failures", failures)
        .set("outlier.base_ejection", base)
        .set("outlier.max_ejection", max)
        .set("outlier.max_ejected_percent", max_percent)
}

/// Every server's admin JSON in backend "app".
async fn servers_json(t: &Tether, c: &reqwest::Client) -> Vec<Value> {
    let v = admin_json(c, t, "/api/v1/backends/app").await;
    v["servers"].as_array().cloned().unwrap_or_default()
}

/// `(status, x-server)` of `n` GETs of `/`.
async fn spread(t: &Tether, c: &reqwest::Client, n: usize) -> Vec<(u16, String)> {
    let mut seen = Vec::with_capacity(n);
    for _ in 0..n {
        let r = c.get(t.url("web")).send().await.unwrap();
        seen.push((r.status().as_u16(), server_of(&r)));
    }
    seen
}

/// Sends GETs (at most `max`) until one is answered by `name`; true if one was.
async fn reaches(t: &Tether, c: &reqwest::Client, name: &str, max: usize) -> bool {
    for _ in 0..max {
        let r = c.get(t.url("web")).send().await.unwrap();
        if r.status() == 200 && server_of(&r) == name {
            return true;
        }
    }
    false
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Parses the Prometheus text format into `(name, labels) -> value`.
fn metric(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
        (n == name && rest.trim_end_matches('}') == labels).then(|| value.parse().unwrap())
    })
}

async fn metrics(t: &Tether, c: &reqwest::Client) -> String {
    c.get(admin_url(t, "/metrics")).send().await.unwrap().text().await.unwrap()
}

fn is_health_change(line: &Value, server: &str, to: &str) -> bool {
    line["message"] == "server health changed" && line["server"] == server && line["to"] == to
}

/// An upstream whose `/healthz` answers 200 or 503 as the test says, and which answers
/// everything else with 200 and `x-server: NAME` while counting it.
struct Flaky {
    name: &'static str,
    healthy: AtomicBool,
    traffic: AtomicU64,
}

type FlakyServer = Server<Flaky>;

fn start_flaky(name: &'static str) -> FlakyServer {
    let flaky = Flaky { name, healthy: AtomicBool::new(true), traffic: AtomicU64::new(0) };
    Server::start_with(flaky, tether_testkit::servers::ANY_LOCAL_PORT).unwrap()
}

impl Flaky {
    fn answer(&self, path: &str) -> Response<Full<Bytes>> {
        let status = if path == "/healthz" {
            if self.healthy.load(Ordering::SeqCst) {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            }
        } else {
            self.traffic.fetch_add(1, Ordering::SeqCst);
            StatusCode::OK
        };
        let mut response = Response::new(Full::new(Bytes::from(format!("{}\n", self.name))));
        *response.status_mut() = status;
        response.headers_mut().insert("x-server", self.name.parse().unwrap());
        response
    }
}

impl Behaviour for Flaky {
    async fn serve(self: Arc<Self>, stream: TcpStream, counters: Arc<Counters>) {
        let service = service_fn(move |request: Request<Incoming>| {
            counters.record_request();
            let response = self.answer(request.uri().path());
            async move { Ok::<_, Infallible>(response) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    }
}

#[tokio::test]
async fn failing_health_check_takes_a_server_out_and_back_in() {
    let flaky = start_flaky("flaky");
    let steady = echo_servers(1);
    let app = first_then("flaky", flaky.addr(), &steady).health_check(fast_http_check("/healthz"));
    let t = start(with_admin(app)).await;
    let c = client();

    let initial = server_json(&t, &c, "flaky").await["health"].clone();
    assert!(initial == "unchecked" || initial == "up", "starts usable: {initial}");
    wait_health(&t, &c, "flaky", "up", TRANSITION).await;
    assert!(reaches(&t, &c, "flaky", 10).await, "a healthy server takes its share");

    let mark = t.log_mark();
    let before_down = unix_now();
    flaky.behaviour().healthy.store(false, Ordering::SeqCst);
    let down = wait_health(&t, &c, "flaky", "down", TRANSITION).await;
    assert!(
        down["health_reason"].as_str().is_some_and(|r| !r.is_empty()),
        "a down server says why: {down}"
    );
    let changed = down["last_change"].as_f64().unwrap_or_else(|| panic!("last_change: {down}"));
    assert!(
        changed >= before_down.floor() - 1.0 && changed <= unix_now() + 1.0,
        "last_change is the unix time of the transition: {changed} vs {before_down}"
    );
    let line = t
        .wait_for_log_since(mark, |l| is_health_change(l, "flaky", "down"), TRANSITION)
        .await
        .unwrap_or_else(|| panic!("no \"server health changed\" line: {:?}", t.logs()));
    assert_eq!(line["backend"], "app", "{line}");
    assert_eq!(line["from"], "up", "{line}");
    assert!(line["reason"].as_str().is_some_and(|r| !r.is_empty()), "{line}");

    let traffic_while_down = flaky.behaviour().traffic.load(Ordering::SeqCst);
    for (status, by) in spread(&t, &c, 30).await {
        assert_eq!((status, by.as_str()), (200, "s0"), "a down server gets no traffic");
    }
    assert_eq!(flaky.behaviour().traffic.load(Ordering::SeqCst), traffic_while_down);

    flaky.behaviour().healthy.store(true, Ordering::SeqCst);
    let up = wait_health(&t, &c, "flaky", "up", TRANSITION).await;
    assert!(up["health_reason"].is_string(), "{up}");
    assert!(up["last_change"].as_f64().unwrap() >= changed, "{up}");
    assert!(reaches(&t, &c, "flaky", 10).await, "back in rotation after `rise` successes");
    assert!(
        t.wait_for_log_since(mark, |l| is_health_change(l, "flaky", "up"), TRANSITION)
            .await
            .is_some()
    );
    let downs = t.logs().iter().filter(|l| is_health_change(l, "flaky", "down")).count();
    assert_eq!(downs, 1, "each transition is logged once");
}

#[tokio::test]
async fn killed_server_costs_no_client_errors_and_returns_after_rise() {
    let mut servers = echo_servers(3);
    let t = start(with_admin(app(&servers).health_check(fast_http_check("/healthz")))).await;
    let (fresh, kept) = (fresh_client(), client());
    let admin = client();
    for name in ["s0", "s1", "s2"] {
        wait_health(&t, &admin, name, "up", TRANSITION).await;
    }

    let mut failures = Vec::new();
    let mut stopped_at = None;
    for i in 0..2000 {
        if i == 100 {
            servers[1].stop().await;
            stopped_at = Some(Instant::now());
        }
        if stopped_at.is_some_and(|at| at.elapsed() > Duration::from_millis(1500)) {
            break;
        }
        for (kind, c) in [("fresh", &fresh), ("keep-alive", &kept)] {
            match c.get(t.url("web")).send().await {
                Ok(r) if r.status() == 200 => {}
                Ok(r) => failures.push(format!("{kind} #{i}: {}", r.status())),
                Err(e) => failures.push(format!("{kind} #{i}: {e}")),
            }
        }
    }
    assert!(stopped_at.is_some(), "the loop reached the stop");
    assert!(failures.is_empty(), "client errors while a server died: {failures:?}");

    wait_health(&t, &admin, "s1", "down", TRANSITION).await;
    for (status, by) in spread(&t, &kept, 20).await {
        assert_eq!(status, 200);
        assert_ne!(by, "s1");
    }

    servers[1].restart().await.unwrap();
    wait_health(&t, &admin, "s1", "up", TRANSITION).await;
    assert!(reaches(&t, &fresh, "s1", 20).await, "the restarted server gets traffic again");
}

#[tokio::test]
async fn tcp_check_marks_a_closed_port_down() {
    let mut servers = echo_servers(2);
    servers[1].stop().await;
    let check = HealthCheck::tcp().interval("100ms").timeout("100ms").rise(2).fall(2);
    let t = start(with_admin(app(&servers).health_check(check))).await;
    let c = client();

    let down = wait_health(&t, &c, "s1", "down", TRANSITION).await;
    assert!(down["health_reason"].as_str().is_some_and(|r| !r.is_empty()), "{down}");
    wait_health(&t, &c, "s0", "up", TRANSITION).await;
    assert!(servers[0].connections() >= 2, "the check connects");
    assert_eq!(servers[0].requests(), 0, "a tcp check sends no HTTP request");

    let text = metrics(&t, &c).await;
    assert_eq!(metric(&text, "tether_server_up", "backend=\"app\",server=\"s1\""), Some(0.0));
    assert_eq!(metric(&text, "tether_server_up", "backend=\"app\",server=\"s0\""), Some(1.0));
    for (status, by) in spread(&t, &c, 10).await {
        assert_eq!((status, by.as_str()), (200, "s0"));
    }

    servers[1].restart().await.unwrap();
    wait_health(&t, &c, "s1", "up", TRANSITION).await;
    assert!(reaches(&t, &c, "s1", 10).await);
}

#[tokio::test]
async fn hung_server_gets_504_and_is_ejected() {
    let hang = HangServer::start().unwrap();
    let steady = echo_servers(1);
    let app = first_then("h", hang.addr(), &steady)
        .set("timeouts.response", "500ms")
        .set("retry.attempts", 1)
        .set("retry.budget_percent", 20);
    let t = start(with_admin(ejecting(app, 2, ("30s", "300s"), 50))).await;
    let c = client();

    let mut timeouts = 0;
    for _ in 0..12 {
        let started = Instant::now();
        let r = c.get(t.url("web")).send().await.unwrap();
        // A hang guard, not a speed requirement: ten times the 500 ms response timeout, far
        // below the 30 s default it would otherwise wait.
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        match r.status().as_u16() {
            504 => timeouts += 1,
            200 => assert_eq!(server_of(&r), "s0"),
            other => panic!("unexpected {other}"),
        }
        if server_json(&t, &c, "h").await["health"] == "down" {
            break;
        }
    }
    assert!(timeouts >= 1, "the hung server answered 504 at least once");
    let h = wait_health(&t, &c, "h", "down", Duration::from_secs(2)).await;
    assert!(
        h["health_reason"].as_str().is_some_and(|r| r.contains("ejected")),
        "the reason says ejected: {h}"
    );
    let seen = hang.requests();
    for (status, by) in spread(&t, &c, 10).await {
        assert_eq!((status, by.as_str()), (200, "s0"), "an ejected server gets nothing");
    }
    assert_eq!(hang.requests(), seen);
}

#[tokio::test]
async fn retry_budget_bounds_upstream_attempts_when_every_server_fails() {
    let failing: Vec<_> = (0..3).map(|_| StatusServer::start(503).unwrap()).collect();
    let entries =
        failing.iter().enumerate().map(|(i, s)| ServerEntry::new(&format!("f{i}"), s.addr()));
    let app = Backend::new().servers(entries).set("retry.attempts", 3);
    let t = start(with_admin(app.set("retry.budget_percent", 20))).await;
    let c = client();

    const REQUESTS: u64 = 200;
    for _ in 0..REQUESTS {
        let r = c.get(t.url("web")).send().await.unwrap();
        assert_eq!(r.status(), 503, "every server fails, so does the request");
    }
    let attempts: u64 = failing.iter().map(|s| s.requests()).sum();
    let bound = REQUESTS + REQUESTS * 20 / 100 + 10;
    assert!(attempts > REQUESTS, "503s on a GET are retried at all: {attempts}");
    assert!(attempts <= bound, "{attempts} upstream attempts for {REQUESTS} requests > {bound}");
    let text = metrics(&t, &c).await;
    let retries = metric(&text, "tether_retries_total", "backend=\"app\"")
        .unwrap_or_else(|| panic!("no tether_retries_total{{backend=\"app\"}}: {text}"));
    assert_eq!(retries, (attempts - REQUESTS) as f64, "every attempt after the first counts");
}

/// One server stuck answering 503 ("bad") and one echo server ("good"); two attempts per
/// request, with no budget on retries.
async fn bad_and_good() -> (StatusServer, Vec<EchoServer>, Tether) {
    let bad = StatusServer::start(503).unwrap();
    let good = vec![EchoServer::start("good").unwrap()];
    let app = first_then("bad", bad.addr(), &good).set("retry.attempts", 2);
    let t = start(with_admin(app.set("retry.budget_percent", 100))).await;
    (bad, good, t)
}

#[tokio::test]
async fn idempotent_get_is_retried_on_another_server_after_a_503() {
    let (bad, _good, t) = bad_and_good().await;
    let c = client();
    for _ in 0..5 {
        for method in ["GET", "HEAD", "OPTIONS", "DELETE"] {
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let r = c.request(m, t.url("web")).send().await.unwrap();
            assert_eq!((r.status().as_u16(), server_of(&r)), (200, "good".into()), "{method}");
        }
    }
    assert!(bad.requests() >= 1, "the 503 server was tried first at least once");
}

#[tokio::test]
async fn post_with_a_body_is_not_retried_after_a_503() {
    let (bad, good, t) = bad_and_good().await;
    let c = client();
    let (mut refused, mut served) = (0, 0);
    for _ in 0..10 {
        let r = c.post(t.url("web")).body("hello").send().await.unwrap();
        match r.status().as_u16() {
            503 => refused += 1,
            200 => served += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(refused >= 1, "some POSTs reached the 503 server");
    assert_eq!(bad.requests(), refused, "every POST the 503 server saw came back as its 503");
    assert_eq!(good[0].requests(), served, "and none of them was replayed on the good server");
}

#[tokio::test]
async fn garbage_and_reset_servers_give_502() {
    let garbage = GarbageServer::start().unwrap();
    let reset = ResetServer::start().unwrap();
    for (kind, addr) in [("garbage", garbage.addr()), ("reset", reset.addr())] {
        let t = start(with_admin(Backend::new().server(ServerEntry::new(kind, addr)))).await;
        let c = client();
        // Two rounds: four failures stay under any default outlier threshold (5).
        for _ in 0..2 {
            let started = Instant::now();
            let r = c.get(t.url("web")).send().await.unwrap();
            assert_eq!(r.status(), 502, "{kind}");
            // A hang guard, not a speed requirement: a broken answer is a 502 at once, not
            // after the 30 s response timeout.
            assert!(started.elapsed() < Duration::from_secs(5), "{kind}: {:?}", started.elapsed());
            let r = c.post(t.url("web")).body("x").send().await.unwrap();
            assert_eq!(r.status(), 502, "{kind} POST");
        }
    }
    assert!(garbage.requests() >= 1 && reset.requests() >= 1, "both were really asked");
}

#[tokio::test]
async fn close_mid_response_truncates_and_the_next_request_still_works() {
    let cut = CloseMidResponseServer::start().unwrap();
    let echo = echo_servers(1);
    let cfg = with_admin(app(&echo))
        .route(Route::to("cut").path_prefix("/cut"))
        .backend("cut", Backend::new().server(ServerEntry::new("cut", cut.addr())));
    let t = start(cfg).await;
    let c = client();
    for round in 1..=2_u64 {
        // The head and the first bytes usually reach the client before the body fails; when
        // the server's head, bytes and close arrive in one segment, hyper may abort the
        // client connection before flushing the head. Either way the client must never see
        // a complete message.
        let sent = c.get(format!("{}/cut", t.url("web"))).send().await;
        if let Ok(r) = sent {
            assert_eq!(r.status(), 200, "round {round}: the head was passed on");
            let body = tokio::time::timeout(Duration::from_secs(5), r.bytes()).await;
            let body = body.unwrap_or_else(|_| panic!("round {round}: the client hangs"));
            assert!(body.is_err(), "round {round}: a truncated body must not look complete");
        }
        assert_eq!(cut.requests(), round, "never retried after response bytes were sent");
        let r = c.get(t.url("web")).send().await.unwrap();
        assert_eq!(r.status(), 200, "round {round}: the next request works");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["server"], "s0");
    }
    assert_eq!(cut.connections(), 2, "the cut upstream connection was not reused");
}

#[tokio::test]
async fn backup_takes_over_only_when_every_primary_is_down() {
    let mut primaries = echo_servers(2);
    let backup = [EchoServer::start("b").unwrap()];
    let app = app(&primaries).server(ServerEntry::from(&backup[0]).backup());
    let t = start(with_admin(app.health_check(fast_http_check("/healthz")))).await;
    let c = client();
    let not_backup = |seen: Vec<(u16, String)>| {
        for (status, by) in seen {
            assert_eq!(status, 200);
            assert_ne!(by, "b", "the backup gets nothing while a primary is usable");
        }
    };
    not_backup(spread(&t, &c, 20).await);

    primaries[0].stop().await;
    wait_health(&t, &c, "s0", "down", TRANSITION).await;
    for (status, by) in spread(&t, &c, 20).await {
        assert_eq!((status, by.as_str()), (200, "s1"));
    }

    primaries[1].stop().await;
    wait_health(&t, &c, "s1", "down", TRANSITION).await;
    for (status, by) in spread(&t, &c, 20).await {
        assert_eq!((status, by.as_str()), (200, "b"), "the backup takes everything");
    }

    primaries[0].restart().await.unwrap();
    wait_health(&t, &c, "s0", "up", TRANSITION).await;
    for (status, by) in spread(&t, &c, 20).await {
        assert_eq!((status, by.as_str()), (200, "s0"), "back to the primary");
    }
}

/// A health check that always fails while the server itself serves fine.
fn failing_check() -> HealthCheck {
    fast_http_check("/status/500")
}

#[tokio::test]
async fn on_all_down_503_answers_with_retry_after_and_never_calls_the_servers() {
    let servers = echo_servers(1);
    let t = start(with_admin(app(&servers).health_check(failing_check()))).await;
    let c = client();
    wait_health(&t, &c, "s0", "down", TRANSITION).await;
    for _ in 0..5 {
        let r = c.get(t.url("web")).send().await.unwrap();
        assert_eq!(r.status(), 503);
        assert!(r.headers().get("retry-after").is_some(), "503 carries Retry-After");
        assert_eq!(server_of(&r), "-", "the down server was not asked");
        let ct = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
        assert!(ct.as_deref().is_some_and(|ct| ct.starts_with("text/plain")), "{ct:?}");
        assert!(!r.text().await.unwrap().trim().is_empty(), "a plain-text explanation");
    }
}

#[tokio::test]
async fn on_all_down_fail_open_still_tries_the_servers() {
    let servers = echo_servers(2);
    let app = app(&servers).set("on_all_down", "fail_open").health_check(failing_check());
    let t = start(with_admin(app)).await;
    let c = client();
    wait_health(&t, &c, "s0", "down", TRANSITION).await;
    wait_health(&t, &c, "s1", "down", TRANSITION).await;
    for (status, by) in spread(&t, &c, 6).await {
        assert_eq!(status, 200, "fail_open serves from the servers anyway");
        assert!(by == "s0" || by == "s1", "{by}");
    }
}

#[tokio::test]
async fn outlier_detection_ejects_a_server_answering_500s_and_caps_the_ejected_share() {
    let bad: Vec<_> = (0..2).map(|_| StatusServer::start(500).unwrap()).collect();
    let good = echo_servers(2);
    let app = Backend::new()
        .server(ServerEntry::new("bad0", bad[0].addr()))
        .server(ServerEntry::new("bad1", bad[1].addr()))
        .servers(&good);
    let t = start(with_admin(ejecting(app, 3, ("30s", "300s"), 25))).await;
    let c = client();

    let mut ejected = Vec::new();
    for _ in 0..40 {
        let r = c.get(t.url("web")).send().await.unwrap();
        assert!(matches!(r.status().as_u16(), 200 | 500), "{}", r.status());
        let all = servers_json(&t, &c).await;
        let down: Vec<_> = all.iter().filter(|s| s["health"] == "down").collect();
        assert!(down.len() <= 1, "at most 25% of 4 servers ejected at once: {all:?}");
        if let Some(s) = down.first() {
            assert!(
                s["health_reason"].as_str().is_some_and(|r| r.contains("ejected")),
                "the reason says ejected: {s}"
            );
            ejected.push(s["name"].as_str().unwrap().to_owned());
        }
    }
    let first = ejected.first().unwrap_or_else(|| panic!("nothing was ejected")).clone();
    assert!(first == "bad0" || first == "bad1", "only a failing server is ejected: {first}");
    assert!(ejected.iter().all(|n| *n == first), "the ejection lasts 30s: {ejected:?}");

    let (out, still_in) = if first == "bad0" { (&bad[0], &bad[1]) } else { (&bad[1], &bad[0]) };
    let (out_before, in_before) = (out.requests(), still_in.requests());
    let mut errors = 0;
    for (status, _) in spread(&t, &c, 12).await {
        errors += usize::from(status == 500);
    }
    assert_eq!(out.requests(), out_before, "the ejected server gets nothing");
    assert!(still_in.requests() > in_before, "the cap keeps the other failing server in");
    assert!(errors >= 1);
}

#[tokio::test]
async fn pinned_sessions_leave_a_server_its_health_check_marks_down() {
    for on_server_down in ["redispatch", "fail"] {
        let flaky = start_flaky("flaky");
        let steady = echo_servers(1);
        let sticky = Sticky::header("X-Session-Id").set("on_server_down", on_server_down);
        let app = first_then("flaky", flaky.addr(), &steady).sticky(sticky);
        let t = start(with_admin(app.health_check(fast_http_check("/healthz")))).await;
        let c = client();
        wait_health(&t, &c, "flaky", "up", TRANSITION).await;
        let get = |key: String| c.get(t.url("web")).header("x-session-id", key).send();
        let mut pinned = None;
        for i in 0..40 {
            if server_of(&get(format!("k{i}")).await.unwrap()) == "flaky" {
                pinned = Some(format!("k{i}"));
                break;
            }
        }
        let key = pinned.unwrap_or_else(|| panic!("no key was pinned to flaky"));
        assert_eq!(server_of(&get(key.clone()).await.unwrap()), "flaky", "the pin holds");

        flaky.behaviour().healthy.store(false, Ordering::SeqCst);
        wait_health(&t, &c, "flaky", "down", TRANSITION).await;
        let r = get(key.clone()).await.unwrap();
        match on_server_down {
            "redispatch" => {
                assert_eq!((r.status().as_u16(), server_of(&r)), (200, "s0".into()));
                let again = get(key.clone()).await.unwrap();
                assert_eq!(server_of(&again), "s0", "re-pinned");
            }
            _ => {
                assert_eq!(r.status(), 503, "on_server_down = fail");
                assert!(r.headers().get("retry-after").is_some());
            }
        }
    }
}

/// The first GETs that make `name` show as down, sent one by one (at most `max`).
async fn fail_until_down(t: &Tether, c: &reqwest::Client, name: &str, max: usize) -> bool {
    for _ in 0..max {
        c.get(t.url("web")).send().await.unwrap();
        if server_json(t, c, name).await["health"] == "down" {
            return true;
        }
    }
    false
}

#[tokio::test]
async fn repeat_ejections_double_in_length() {
    let bad = StatusServer::start(500).unwrap();
    let good = echo_servers(1);
    let app = ejecting(first_then("bad", bad.addr(), &good), 2, ("500ms", "60s"), 50);
    let t = start(with_admin(app)).await;
    let c = client();
    let mut lengths = Vec::new();
    for round in 1..=2 {
        let mark = t.log_mark();
        assert!(fail_until_down(&t, &c, "bad", 40).await, "ejection {round} never happened");
        let started = Instant::now();
        let ejected =
            t.wait_for_log_since(mark, |l| is_health_change(l, "bad", "down"), TRANSITION);
        let reason = ejected.await.map(|l| l["reason"].clone()).unwrap_or_default();
        let length = if round == 1 { "500ms" } else { "1s" };
        let says = format!("ejected for {length} ");
        assert!(
            reason.as_str().is_some_and(|r| r.starts_with(&says)),
            "ejection {round}: {reason}"
        );
        let back = wait_until_async(Duration::from_secs(10), || async {
            server_json(&t, &c, "bad").await["health"] != "down"
        })
        .await;
        assert!(back, "ejection {round} never ended");
        lengths.push(started.elapsed());
    }
    // The logged lengths above are the contract; the observed ones can only be longer (a
    // slow machine sees the return late), never shorter.
    let (first, second) = (lengths[0], lengths[1]);
    assert!(first >= Duration::from_millis(400), "the first lasts base_ejection: {lengths:?}");
    assert!(second >= Duration::from_millis(900), "the second lasts twice that: {lengths:?}");
}

/// `n` servers answering 500 with outlier detection capped at `percent`; eight GETs.
async fn hammer_failing_servers(n: usize, percent: u32) {
    let bad: Vec<_> = (0..n).map(|_| StatusServer::start(500).unwrap()).collect();
    let entries =
        bad.iter().enumerate().map(|(i, s)| ServerEntry::new(&format!("bad{i}"), s.addr()));
    let app = ejecting(Backend::new().servers(entries), 2, ("30s", "300s"), percent);
    let t = start(with_admin(app)).await;
    let c = client();
    for i in 0..8 {
        let r = c.get(t.url("web")).send().await.unwrap();
        assert_eq!(
            r.status(),
            500,
            "{n} server(s), cap {percent}%: request {i} still reaches a server: {:?}",
            servers_json(&t, &c).await
        );
    }
    for s in servers_json(&t, &c).await {
        assert_ne!(s["health"], "down", "{n} server(s), cap {percent}%: {s}");
    }
}

#[tokio::test]
async fn outlier_detection_never_ejects_the_only_server() {
    // With a 50% cap, ejecting the one server would eject 100% of the backend.
    hammer_failing_servers(1, 50).await;
}

#[tokio::test]
async fn max_ejected_percent_zero_ejects_nothing() {
    hammer_failing_servers(2, 0).await;
}

#[tokio::test]
async fn an_ejection_is_logged_from_the_health_the_server_had() {
    let bad = StatusServer::start(500).unwrap();
    let good = echo_servers(1);
    let app = ejecting(first_then("bad", bad.addr(), &good), 2, ("30s", "300s"), 50);
    let t = start(with_admin(app)).await;
    let c = client();
    let before = server_json(&t, &c, "bad").await["health"].clone();
    assert!(fail_until_down(&t, &c, "bad", 20).await, "never ejected");
    let line = t
        .wait_for_log(|l| is_health_change(l, "bad", "down"), TRANSITION)
        .await
        .unwrap_or_else(|| panic!("the ejection is logged as a health change"));
    assert_eq!(line["backend"], "app", "{line}");
    assert!(line["reason"].as_str().is_some_and(|r| r.contains("ejected")), "{line}");
    assert_eq!(line["from"], before, "`from` is the health the admin API showed: {line}");
}

#[tokio::test]
async fn a_recovered_server_ramps_up_under_slow_start() {
    let flaky = start_flaky("flaky");
    let steady = echo_servers(2);
    let app = first_then("flaky", flaky.addr(), &steady).set("slow_start", "60s");
    let t = start(with_admin(app.health_check(fast_http_check("/healthz")))).await;
    let c = client();
    wait_health(&t, &c, "flaky", "up", TRANSITION).await;
    let before: usize = spread(&t, &c, 300).await.iter().filter(|(_, by)| by == "flaky").count();
    assert!(before >= 90, "a server that never went down takes its full third: {before}");
    flaky.behaviour().healthy.store(false, Ordering::SeqCst);
    wait_health(&t, &c, "flaky", "down", TRANSITION).await;
    flaky.behaviour().healthy.store(true, Ordering::SeqCst);
    wait_health(&t, &c, "flaky", "up", TRANSITION).await;
    let after: usize = spread(&t, &c, 300).await.iter().filter(|(_, by)| by == "flaky").count();
    assert!(after > 0, "the recovered server gets some traffic");
    assert!(after < 50, "but only a small share at the start of its 60 s ramp: {after} of 300");
}
