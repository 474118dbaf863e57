//! The live dashboard (`GET /` on the admin listener) in a real headless Chromium: it shows
//! every server with live numbers, runs without console errors, and its buttons drive the
//! admin API (docs/operations.md).
//!
//! Chromium must be installed (`scripts/test.sh` installs it): without it these tests fail,
//! they do not skip.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tether_testkit::browser::Browser;
use tether_testkit::{KillOnDrop, ScratchDir, Tether};

use crate::support::fixture::*;

/// Long enough for several 1 s poll cycles of the page on a slow machine.
const UI_DEADLINE: Duration = Duration::from_secs(15);

/// Backend "app" over `servers` with affinity by header `X-Session-Id`, and the admin
/// listener.
fn header_cfg(servers: &[tether_testkit::EchoServer]) -> Config {
    config(app(servers).sticky(Sticky::header("X-Session-Id"))).admin()
}

async fn launch() -> Browser {
    Browser::launch().await.unwrap_or_else(|e| panic!("{e}"))
}

/// Opens the dashboard at `url` and waits until its first poll has rendered.
async fn open_dashboard(browser: &mut Browser, url: &str) {
    browser.goto(url).await.unwrap();
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

/// Takes a screenshot and checks that it is a PNG: into `docs/dashboard.png` when `for_docs`
/// and `TETHER_SCREENSHOT` is set (to refresh the picture in operations.md), else into a
/// scratch directory removed afterwards.
async fn take_screenshot(browser: &mut Browser, for_docs: bool) {
    let scratch = ScratchDir::new("dashboard").unwrap();
    let path = if for_docs && std::env::var_os("TETHER_SCREENSHOT").is_some() {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/dashboard.png")
    } else {
        scratch.path().join("dashboard.png")
    };
    browser.screenshot(&path).await.unwrap();
    let png = std::fs::read(&path).unwrap();
    assert!(png.len() > 1000 && png.starts_with(b"\x89PNG\r\n\x1a\n"), "{} bytes", png.len());
}

/// `tether demo` on OS-assigned ports: its rows carry the extra stop / start buttons, the
/// widest the dashboard draws. Killed on drop, also when the test fails.
struct Demo {
    /// Held for its drop, which kills the demo.
    _child: KillOnDrop,
    /// The demo's load-balancer listener.
    listen: SocketAddr,
    /// The admin listener (API and dashboard).
    admin: SocketAddr,
}

impl Demo {
    fn start() -> Self {
        let ports = ["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"];
        let mut child = KillOnDrop::new(
            Command::new(BIN)
                .args(["--log-format", "json", "demo"])
                .args(ports)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads stdout to the end, so the demo never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line).unwrap_or_default();
                if v["message"] == "listener bound" {
                    let field = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
                    let _ = tx.send((field("listener"), field("address")));
                }
            }
        });
        // The guard first, so a demo that never binds is killed too.
        let unbound = SocketAddr::from(([0, 0, 0, 0], 0));
        let mut demo = Self { _child: child, listen: unbound, admin: unbound };
        while demo.listen.port() == 0 || demo.admin.port() == 0 {
            let (listener, address) = rx.recv_timeout(Duration::from_secs(20)).unwrap();
            let address = address.parse().unwrap();
            match listener.as_str() {
                "demo" => demo.listen = address,
                "admin" => demo.admin = address,
                other => panic!("unexpected listener {other}"),
            }
        }
        demo
    }

    fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
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
    let t = start(header_cfg(&servers)).await;
    let mut browser = launch().await;
    open_dashboard(&mut browser, &admin_url(&t, "/")).await;

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
    let dir = ScratchDir::new("dashboard-token").unwrap();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, "dash-s3cret\n").unwrap();
    let t = start(header_cfg(&servers).admin_token_file(&token_file)).await;
    let before = send_sessions(&t, "old", 30).await;
    let pinned_to_s0: Vec<&String> =
        before.iter().filter(|(_, s)| s == "s0").map(|(id, _)| id).collect();
    assert!(!pinned_to_s0.is_empty(), "round robin put some sessions on s0: {before:?}");
    let on_s0_before = pinned_to_s0.len();

    let mut browser = launch().await;
    open_dashboard(&mut browser, &admin_url(&t, "/")).await;
    let drain = "document.querySelector('tr[data-server=\"s0\"] button[data-action=\"drain\"]')\
                 .click()";

    // Without the token the write is refused, and the page's error line says so (not the
    // whole page: a server's port may hold "401").
    let refused = "document.querySelector('#error').textContent.includes('401')";
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
    assert_sessions_shown(&mut browser, on_s0_before, 80 - on_s0_before).await;
    take_screenshot(&mut browser, false).await;
}

/// Waits until the sessions column shows `on_s0` sessions on s0 and `elsewhere` on s1 and
/// s2 together.
async fn assert_sessions_shown(browser: &mut Browser, on_s0: usize, elsewhere: usize) {
    let sessions = |s: &str| format!("Number({})", cell(s, "sessions"));
    let (s0, s1, s2) = (sessions("s0"), sessions("s1"), sessions("s2"));
    let followed = format!("{s0} === {on_s0} && {s1} + {s2} === {elsewhere}");
    assert!(
        browser.wait_for(&followed, UI_DEADLINE).await.unwrap(),
        "sessions column: {}",
        browser.eval(&format!("[{s0}, {s1}, {s2}]")).await.unwrap()
    );
}

/// Servers with names and addresses as long as configurations allow (names: 64 characters),
/// added to the demo at runtime: `(name, address, backup)`. None of them answers, so their
/// rows also carry a health-check failure reason.
const LONG_SERVERS: [(&str, &str, bool); 3] = [
    (
        "payments-eu-west-1-replica-0042.internal",
        "payments-eu-west-1-replica-0042.internal.example.invalid:8443",
        false,
    ),
    ("checkout-service-canary-blue-green-us-east-2-az1-node-0000000007", "127.0.0.1:1", true),
    ("search_indexer.batch-worker.pool-b.node-19", "[::1]:1", false),
];

/// A JS expression: what of the page does not fit the window — the document's width, every
/// control outside the viewport, every table cell whose content is cut off, and every element
/// in a backend's section that scrolls sideways (the table's wrapper on narrow windows).
const OVERFLOW: &str = "(() => {
  const root = document.documentElement, width = root.clientWidth;
  const controls = [...document.querySelectorAll('td.actions button, td.actions input')];
  const outside = controls.map(e => [e, e.getBoundingClientRect()])
    .filter(([, r]) => r.width === 0 || r.left < 0 || r.right > width)
    .map(([e, r]) => `${e.closest('tr').dataset.server} ${e.dataset.action || e.className}: \
                      ${Math.round(r.left)}..${Math.round(r.right)}`);
  const cut = [...document.querySelectorAll('th, td')]
    .filter(c => c.scrollWidth > c.clientWidth + 1)
    .map(c => `${c.className || c.textContent}: ${c.scrollWidth} > ${c.clientWidth}`);
  const scrolled = [...document.querySelectorAll('section.backend *')]
    .filter(e => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible')
    .map(e => `${e.closest('section').dataset.backend} ${e.className}`);
  return { inner: window.innerWidth, width, scrollWidth: root.scrollWidth, controls: controls.length,
           outside, cut, scrolled };
})()";

#[tokio::test]
async fn dashboard_fits_a_1280_pixel_window_with_long_names_and_every_button_visible() {
    let demo = Demo::start();
    let c = client();
    for (name, address, backup) in LONG_SERVERS {
        let body = serde_json::json!({ "name": name, "address": address, "backup": backup });
        let r = c.post(demo.admin_url("/api/v1/backends/app/servers")).json(&body).send();
        assert_eq!(r.await.unwrap().status(), 201, "{name}");
    }
    let stop = c.post(demo.admin_url("/api/v1/demo/servers/alpha/stop")).send().await.unwrap();
    assert_eq!(stop.status(), 200);
    let traffic = {
        let url = format!("http://{}/", demo.listen);
        tokio::spawn(async move {
            let c = client();
            // Bounded: at most ~30 s of traffic even if the test never aborts it.
            for _ in 0..1500 {
                let _ = c.get(&url).send().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let mut browser = launch().await;
    browser.set_viewport(1280, 800).await.unwrap();
    open_dashboard(&mut browser, &demo.admin_url("/")).await;
    // Every row drawn, the failing ones down with their reason, and live numbers.
    let settled = "(() => { const rows = [...document.querySelectorAll('tr[data-server]')]; \
                   return rows.length === 6 && rows.filter(tr => \
                   tr.querySelector('td.health').textContent === 'down' && \
                   tr.querySelector('td.change').textContent !== '–').length === 4 && \
                   rows.some(tr => parseFloat(tr.querySelector('td.rps').textContent) > 0); })()";
    let rows = "[...document.querySelectorAll('tr[data-server]')].map(tr => tr.textContent)";
    assert!(
        browser.wait_for(settled, UI_DEADLINE).await.unwrap(),
        "rows: {}",
        browser.eval(rows).await.unwrap()
    );
    let fit = browser.eval(OVERFLOW).await.unwrap();
    // The picture shows the whole page, still 1280 pixels wide; for the docs, with a few
    // seconds of history in the charts.
    if std::env::var_os("TETHER_SCREENSHOT").is_some() {
        tokio::time::sleep(Duration::from_secs(8)).await;
    }
    let height = browser.eval("document.documentElement.scrollHeight").await.unwrap();
    browser.set_viewport(1280, height.as_u64().unwrap().try_into().unwrap()).await.unwrap();
    take_screenshot(&mut browser, true).await;
    traffic.abort();
    assert_eq!(fit["inner"], 1280, "the window is 1280 pixels wide: {fit}");
    assert!(fit["scrollWidth"].as_u64() <= fit["width"].as_u64(), "horizontal scroll: {fit}");
    assert_eq!(fit["controls"], 6 * 7, "drain, maint, ready, weight box, set, stop, start: {fit}");
    for key in ["outside", "cut", "scrolled"] {
        assert_eq!(fit[key], serde_json::json!([]), "{key}: {fit}");
    }
    // No information is dropped to make it fit: each full name and address is on the page.
    let text = browser.eval("document.querySelector('main').innerText").await.unwrap();
    for (name, address, _) in LONG_SERVERS {
        for shown in [name, address] {
            assert!(text.as_str().unwrap().contains(shown), "{shown} not shown: {text}");
        }
    }

    let script_errors: Vec<String> =
        browser.console_errors().into_iter().filter(|e| !e.starts_with("log[network]")).collect();
    assert_eq!(script_errors, Vec::<String>::new());
}

/// A TCP listener's backend in the dashboard: the listener line says `tcp`, the table counts
/// open connections and connections per second and shows the bytes relayed each way (no
/// response-time columns), and the page logs no errors.
#[tokio::test]
async fn dashboard_shows_a_tcp_backend_with_its_connections_and_bytes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let servers = super::tcp::tcp_echoes(2).await;
    let backend =
        servers.iter().fold(Backend::new(), |b, s| b.server(ServerEntry::new(&s.name, s.addr)));
    let t = start(config_on(web().set("mode", "tcp"), backend).admin()).await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s = super::tcp::connect_from("127.0.0.1", t.listener_addr("web")).await;
        super::tcp::greeting(&mut s).await;
        s.write_all(&[b'x'; 2048]).await.unwrap();
        let mut echoed = [0u8; 2048];
        s.read_exact(&mut echoed).await.unwrap();
        open.push(s);
    }
    let mut browser = launch().await;
    open_dashboard(&mut browser, &admin_url(&t, "/")).await;
    let listener = "document.querySelector('#listeners [data-listener=\"web\"]').textContent";
    let text = browser.eval(listener).await.unwrap();
    assert!(text.as_str().is_some_and(|t| t.contains("web tcp") && t.contains("→ app")), "{text}");
    let headers = "[...document.querySelectorAll('section.backend[data-backend=\"app\"] th')]\
                   .map(th => th.textContent)";
    let headers: Vec<String> =
        serde_json::from_value(browser.eval(headers).await.unwrap()).unwrap();
    for want in ["open conns", "conn/s", "bytes in", "bytes out"] {
        assert!(headers.iter().any(|h| h == want), "no {want:?} column: {headers:?}");
    }
    assert!(!headers.iter().any(|h| h == "p99"), "response times on a TCP backend: {headers:?}");
    for s in ["t0", "t1"] {
        assert_eq!(browser.eval(&cell(s, "inflight")).await.unwrap(), "1", "{s}");
        assert_eq!(browser.eval(&cell(s, "bytes-in")).await.unwrap(), "2.0 KiB", "{s}");
        assert_eq!(browser.eval(&cell(s, "bytes-out")).await.unwrap(), "2.0 KiB", "{s}");
    }
    drop(open);
    let closed =
        format!("{} === '0' && {} === '0'", cell("t0", "inflight"), cell("t1", "inflight"));
    assert!(
        browser.wait_for(&closed, UI_DEADLINE).await.unwrap(),
        "open connections not back to 0"
    );
    assert_eq!(browser.console_errors(), Vec::<String>::new(), "the page logs no errors");
}

/// A backend that an HTTP listener and a TCP listener both use: its table has the response
/// time columns and the bytes columns, the counts say they add requests and connections, and
/// the TCP connection's bytes show beside the HTTP request's p99.
#[tokio::test]
async fn dashboard_shows_a_backend_reached_by_http_and_tcp_with_both_sets_of_columns() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let servers = echo_servers(1);
    let l4 = Listener::new("l4").set("mode", "tcp").default_backend("app");
    let t = start(config(app(&servers)).listener(l4).admin()).await;
    let resp = client().get(t.url("web")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut s = super::tcp::connect_from("127.0.0.1", t.listener_addr("l4")).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(super::tcp::STEP, s.read_to_end(&mut reply))
        .await
        .unwrap_or_else(|_| panic!("the relayed answer in time"))
        .unwrap();
    assert!(reply.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&reply));
    let mut browser = launch().await;
    open_dashboard(&mut browser, &admin_url(&t, "/")).await;
    let headers = "[...document.querySelectorAll('section.backend[data-backend=\"app\"] th')]\
                   .map(th => th.textContent)";
    let headers: Vec<String> =
        serde_json::from_value(browser.eval(headers).await.unwrap()).unwrap();
    for want in ["in flight + open", "req + conn/s", "p50", "p99", "bytes in", "bytes out"] {
        assert!(headers.iter().any(|h| h == want), "no {want:?} column: {headers:?}");
    }
    let bytes_in = browser.eval(&cell("s0", "bytes-in")).await.unwrap();
    assert!(bytes_in.as_str().is_some_and(|b| b.ends_with(" B") && b != "0 B"), "{bytes_in}");
    let charts = "document.querySelectorAll('section.backend[data-backend=\"app\"] canvas').length";
    assert_eq!(browser.eval(charts).await.unwrap(), 2, "rate and latency charts");
    assert_eq!(browser.console_errors(), Vec::<String>::new(), "the page logs no errors");
}
