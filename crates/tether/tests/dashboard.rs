//! The live dashboard (`GET /` on the admin listener) in a real headless Chromium: it shows
//! every server with live numbers, runs without console errors, and its buttons drive the
//! admin API (DESIGN 1.3).
//!
//! Chromium must be installed (`scripts/test.sh` installs it): without it these tests fail,
//! they do not skip.

// Test helpers may unwrap: a failure here is a failed test, with the panic as its report.
#![allow(clippy::unwrap_used)]

mod fixture;

use std::path::PathBuf;
use std::time::Duration;

use fixture::*;
use serde_json::Value;
use tether_testkit::Tether;
use tether_testkit::browser::Browser;

/// Long enough for several 1 s poll cycles of the page on a slow machine.
const UI_DEADLINE: Duration = Duration::from_secs(15);

fn header_cfg(servers: &[tether_testkit::EchoServer], admin_extra: &str) -> String {
    let cfg = config(servers, "", Some("mode = \"header\"\nheader = \"X-Session-Id\""));
    format!("{cfg}\n[admin]\naddress = \"127.0.0.1:0\"\n{admin_extra}\n")
}

fn admin_url(t: &Tether, path: &str) -> String {
    format!("http://{}{path}", t.listener_addr("admin"))
}

async fn launch() -> Browser {
    Browser::launch().await.unwrap_or_else(|e| panic!("{e}"))
}

/// Opens the dashboard and waits until its first poll has rendered.
async fn open_dashboard(browser: &mut Browser, t: &Tether) {
    browser.goto(&admin_url(t, "/")).await.unwrap();
    let live = "document.querySelector('#status').textContent.trim() === 'live'";
    let status =
        "document.querySelector('#status') && document.querySelector('#status').textContent";
    assert!(
        browser.wait_for(live, UI_DEADLINE).await.unwrap(),
        "#status never became live (it says {:?}); console errors: {:?}",
        browser.eval(status).await.unwrap(),
        browser.console_errors()
    );
}

/// `GET /api/v1/backends/app` on the admin listener.
async fn backend_app(t: &Tether) -> Value {
    let r = client().get(admin_url(t, "/api/v1/backends/app")).send().await.unwrap();
    r.json().await.unwrap()
}

/// A JS expression for a cell's trimmed text in server `server`'s row of backend `app`.
fn cell(server: &str, class: &str) -> String {
    format!(
        "document.querySelector('section.backend[data-backend=\"app\"] \
         tr[data-server=\"{server}\"] td.{class}').textContent.trim()"
    )
}

/// Requests with session ids `prefix0..prefixN`; returns the server each one reached.
async fn send_sessions(t: &Tether, prefix: &str, n: usize) -> Vec<(String, String)> {
    let c = client();
    let mut reached = Vec::new();
    for i in 0..n {
        let id = format!("{prefix}{i}");
        let r = c.get(t.url("web")).header("x-session-id", &id).send().await.unwrap();
        assert_eq!(r.status(), 200);
        reached.push((id, server_of(&r)));
    }
    reached
}

/// `docs/dashboard.png` when `TETHER_SCREENSHOT` is set (to refresh the README picture),
/// else a temp file that is removed afterwards.
fn screenshot_path() -> (PathBuf, bool) {
    if std::env::var_os("TETHER_SCREENSHOT").is_some() {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/dashboard.png");
        return (docs, true);
    }
    let name = format!("tether-dashboard-{}.png", std::process::id());
    (std::env::temp_dir().join(name), false)
}

/// A directory removed on drop, also when the test fails.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn browser_reports_page_errors_so_a_clean_console_means_something() {
    let mut browser = launch().await;
    // `done` is set in the same task that throws, so the evaluation that sees it runs after
    // the exception was reported: its reply comes after the event on the socket.
    let page = "data:text/html,<title>t</title><script>console.error('boom');\
                setTimeout(() => { window.done = true; throw new Error('bang') }, 10)</script>";
    browser.goto(page).await.unwrap();
    assert_eq!(browser.eval("document.title").await.unwrap(), "t");
    assert_eq!(browser.eval("Promise.resolve(40 + 2)").await.unwrap(), 42, "promises are awaited");
    assert!(browser.eval("null.x").await.is_err(), "a throwing script is an error");
    assert!(!browser.wait_for("null.x", Duration::from_millis(200)).await.unwrap());
    assert!(browser.wait_for("window.done", Duration::from_secs(5)).await.unwrap());
    let errors = browser.console_errors();
    assert!(errors.iter().any(|e| e.contains("boom")), "console.error: {errors:?}");
    assert!(errors.iter().any(|e| e.contains("bang")), "uncaught exception: {errors:?}");
}

#[tokio::test]
async fn dashboard_shows_every_server_with_live_numbers_and_no_console_errors() {
    let servers = echo_servers(3);
    let t = start(&header_cfg(&servers, "")).await;
    let mut browser = launch().await;
    open_dashboard(&mut browser, &t).await;

    let title = browser.eval("document.title").await.unwrap();
    assert!(title.as_str().unwrap().contains("Tether"), "title {title}");
    let rows = browser
        .eval(
            "[...document.querySelectorAll('section.backend[data-backend=\"app\"] tr[data-server]')]\
             .map(tr => [tr.dataset.server, tr.textContent])",
        )
        .await
        .unwrap();
    let rows: Vec<(String, String)> = serde_json::from_value(rows).unwrap();
    let names: Vec<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["s0", "s1", "s2"], "one row per server, in config order");
    for (name, text) in &rows {
        assert!(text.contains(name.as_str()), "row {name} shows its name: {text:?}");
    }
    let parts = "['canvas.chart-rps', 'canvas.chart-latency'].every(c => \
                 document.querySelector('section.backend[data-backend=\"app\"] ' + c)) && \
                 !!document.querySelector('input#token')";
    assert_eq!(browser.eval(parts).await.unwrap(), true, "both charts and the token field");
    for s in ["s0", "s1", "s2"] {
        let health = browser.eval(&cell(s, "health")).await.unwrap();
        assert!(["up", "down", "unchecked"].contains(&health.as_str().unwrap()), "{s}: {health}");
        assert_eq!(browser.eval(&cell(s, "state")).await.unwrap(), "ready", "{s}");
        assert_eq!(browser.eval(&cell(s, "weight")).await.unwrap(), "1", "{s}");
        let controls = format!(
            "['drain', 'maint', 'ready', 'weight'].every(a => document.querySelector(\
             'tr[data-server=\"{s}\"] button[data-action=\"' + a + '\"]')) && \
             !!document.querySelector('tr[data-server=\"{s}\"] input.weight-input')"
        );
        assert_eq!(browser.eval(&controls).await.unwrap(), true, "{s} has every control");
    }

    // Traffic while the page polls: req/s must go above zero, and the sessions column must
    // add up to the 12 distinct session ids.
    let traffic = {
        let url = t.url("web");
        tokio::spawn(async move {
            let c = client();
            // Bounded: at most ~30 s of traffic even if the test never aborts it.
            for i in 0..3000 {
                let id = format!("user{}", i % 12);
                let _ = c.get(&url).header("x-session-id", id).send().await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let sum = |class: &str| {
        format!(
            "[...document.querySelectorAll('section.backend[data-backend=\"app\"] td.{class}')]\
             .reduce((a, td) => a + (parseFloat(td.textContent) || 0), 0)"
        )
    };
    let rps_shown = format!("{} > 0", sum("rps"));
    let rps_ok = browser.wait_for(&rps_shown, UI_DEADLINE).await.unwrap();
    let sessions_ok = browser.wait_for(&format!("{} === 12", sum("sessions")), UI_DEADLINE).await;
    let latency = "[...document.querySelectorAll('td.p50, td.p99')].some(td => \
                   /^[0-9.]+ m?s$/.test(td.textContent.trim()))";
    let latency_ok = browser.wait_for(latency, UI_DEADLINE).await;
    traffic.abort();
    assert!(rps_ok, "req/s stayed at {}", browser.eval(&sum("rps")).await.unwrap());
    assert!(sessions_ok.unwrap(), "sessions sum {}", browser.eval(&sum("sessions")).await.unwrap());
    assert!(latency_ok.unwrap(), "no latency shown");

    // More poll cycles, until req/s is back to zero with the traffic gone: still live, and
    // no errors of any kind.
    let idle = format!("{} === 0", sum("rps"));
    assert!(browser.wait_for(&idle, UI_DEADLINE).await.unwrap(), "req/s never fell to 0");
    let live = "document.querySelector('#status').textContent.trim()";
    assert_eq!(browser.eval(live).await.unwrap(), "live");
    assert_eq!(browser.console_errors(), Vec::<String>::new(), "the page logs no errors");
}

#[tokio::test]
async fn drain_button_with_the_admin_token_stops_new_sessions_on_that_server() {
    let servers = echo_servers(3);
    let dir = TempDir(std::env::temp_dir().join(format!("tether-dash-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let token_file = dir.0.join("admin.token");
    std::fs::write(&token_file, "dash-s3cret\n").unwrap();
    let t =
        start(&header_cfg(&servers, &format!("token_file = \"{}\"", token_file.display()))).await;
    let before = send_sessions(&t, "old", 30).await;
    let pinned_to_s0: Vec<&String> =
        before.iter().filter(|(_, s)| s == "s0").map(|(id, _)| id).collect();
    assert!(!pinned_to_s0.is_empty(), "round robin put some sessions on s0: {before:?}");
    let on_s0_before = pinned_to_s0.len();

    let mut browser = launch().await;
    open_dashboard(&mut browser, &t).await;
    let drain = "document.querySelector('tr[data-server=\"s0\"] button[data-action=\"drain\"]')\
                 .click()";

    // Without the token the write is refused, and the page says so.
    let refused = "document.body.textContent.includes('401')";
    assert_eq!(browser.eval(refused).await.unwrap(), false);
    browser.eval(drain).await.unwrap();
    assert!(browser.wait_for(refused, UI_DEADLINE).await.unwrap(), "no 401 shown");
    let v = backend_app(&t).await;
    assert_eq!(v["servers"][0]["state"], "ready", "a refused click changed nothing");

    // With the token typed in, the click drains s0.
    let type_token = "{ const i = document.querySelector('input#token'); i.value = 'dash-s3cret'; \
                      i.dispatchEvent(new Event('input')); i.dispatchEvent(new Event('change')); }";
    browser.eval(type_token).await.unwrap();
    browser.eval(drain).await.unwrap();
    let shown = format!("{} === 'drain'", cell("s0", "state"));
    assert!(
        browser.wait_for(&shown, UI_DEADLINE).await.unwrap(),
        "s0's state cell says {}",
        browser.eval(&cell("s0", "state")).await.unwrap()
    );
    for s in ["s1", "s2"] {
        assert_eq!(browser.eval(&cell(s, "state")).await.unwrap(), "ready", "{s}");
    }

    let v = backend_app(&t).await;
    let states: Vec<(&str, &str)> = v["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [("s0", "drain"), ("s1", "ready"), ("s2", "ready")]);

    let after = send_sessions(&t, "new", 50).await;
    let on_s0: Vec<&(String, String)> = after.iter().filter(|(_, s)| s == "s0").collect();
    assert!(on_s0.is_empty(), "new sessions reached the drained s0: {on_s0:?}");
    assert!(after.iter().all(|(_, s)| s == "s1" || s == "s2"), "{after:?}");
    let c = client();
    for id in pinned_to_s0 {
        let r = c.get(t.url("web")).header("x-session-id", id).send().await.unwrap();
        assert_eq!(server_of(&r), "s0", "session {id} stays pinned while s0 drains");
    }

    // The clicks threw nothing. (Failed requests, the refused 401 among them, are logged
    // as network errors; the test above checks those for a page left alone.)
    let script_errors: Vec<String> =
        browser.console_errors().into_iter().filter(|e| !e.starts_with("log[network]")).collect();
    assert_eq!(script_errors, Vec::<String>::new());

    // The page follows: 80 sessions in all, none of the 50 new ones on s0.
    let sessions = |s: &str| format!("Number({})", cell(s, "sessions"));
    let followed = format!(
        "{} === {on_s0_before} && {} + {} === {}",
        sessions("s0"),
        sessions("s1"),
        sessions("s2"),
        80 - on_s0_before
    );
    assert!(
        browser.wait_for(&followed, UI_DEADLINE).await.unwrap(),
        "sessions column: {}",
        browser
            .eval(&format!("[{}, {}, {}]", sessions("s0"), sessions("s1"), sessions("s2")))
            .await
            .unwrap()
    );

    let (path, keep) = screenshot_path();
    browser.screenshot(&path).await.unwrap();
    let png = std::fs::read(&path).unwrap();
    if !keep {
        std::fs::remove_file(&path).unwrap();
    }
    assert!(png.len() > 1000 && png.starts_with(b"\x89PNG\r\n\x1a\n"), "{} bytes", png.len());
}
