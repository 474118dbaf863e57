//! Starting headless Chromium and finding the page target to drive.
//!
//! Chromium is started with `--remote-debugging-port=0` (the OS picks the port) in its own
//! process group with a fresh profile directory; the port is read from the
//! `DevTools listening on ws://...` line it prints on stderr. The page's WebSocket address
//! then comes from the DevTools HTTP endpoint (`/json/list`, or `PUT /json/new` when no page
//! is open yet). Everything stays on loopback.

use std::ffi::OsString;
use std::fs;
use std::io::{self, BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::BrowserError;

/// Executable names looked up on `PATH`, in this order.
const CANDIDATES: &[&str] =
    &["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"];

/// Environment variable naming the browser executable explicitly (overrides `PATH` lookup).
pub const BROWSER_ENV: &str = "TETHER_CHROMIUM";

/// Stderr lines kept for error messages.
const STDERR_TAIL: usize = 30;

/// The flags every launch uses. Besides headless mode, they switch off everything that would
/// reach out to the network on its own (refused here, and noise in any case).
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
    "--window-size=1280,1000",
];

/// The running browser process group and its profile directory; both go away on drop.
#[derive(Debug)]
pub(crate) struct Process {
    child: Child,
    profile: PathBuf,
}

impl Process {
    /// Spawns the browser and waits up to `deadline` for its DevTools address
    /// (`ws://127.0.0.1:PORT/devtools/browser/...`), returned with the process.
    pub(crate) async fn spawn(deadline: Duration) -> Result<(Self, String), BrowserError> {
        let exe = find_executable().ok_or_else(not_installed)?;
        let profile = new_profile_dir()?;
        let spawned = Command::new(&exe)
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own group, so drop can kill the renderers and the zygote with it.
            .process_group(0)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(source) => {
                let _ = fs::remove_dir_all(&profile);
                let what = format!("spawning {}", exe.display());
                return Err(BrowserError::Io { what, source });
            }
        };
        let stderr = child.stderr.take();
        let process = Self { child, profile };
        let Some(stderr) = stderr else {
            unreachable!("stderr was requested as a pipe above");
        };
        let lines = forward_lines(stderr)?;
        let url = devtools_url(lines, deadline).await?;
        Ok((process, url))
    }

    /// The process id (and process group id).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // The wrapper script, the browser, its zygote and renderers share the group we made.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &group])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Best effort: a leftover temp dir must not fail the test that made it.
        let _ = fs::remove_dir_all(&self.profile);
    }
}

/// The browser executable: `$TETHER_CHROMIUM`, else the first candidate found on `PATH`.
fn find_executable() -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os(BROWSER_ENV).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(explicit));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    CANDIDATES.iter().find_map(|name| {
        std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| is_executable(p))
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn not_installed() -> BrowserError {
    BrowserError::NotInstalled {
        looked_for: format!("${BROWSER_ENV}, or {} on PATH", CANDIDATES.join(", ")),
    }
}

/// A new, empty profile directory under the system temp dir.
fn new_profile_dir() -> Result<PathBuf, BrowserError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let name = format!(
        "tether-chromium-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let path = std::env::temp_dir().join(name);
    // `create_dir`, not `create_dir_all`: never adopt a directory someone else made.
    fs::create_dir(&path).map_err(|source| BrowserError::Io {
        what: format!("creating {}", path.display()),
        source,
    })?;
    Ok(path)
}

/// Reads stderr on a thread for the whole life of the process (so Chromium never blocks on a
/// full pipe) and forwards each line; the channel closes when the process closes stderr.
fn forward_lines(stderr: ChildStderr) -> Result<mpsc::UnboundedReceiver<String>, BrowserError> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("chromium-stderr".into())
        .spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // Nobody listens after launch: keep draining regardless.
                let _ = tx.send(line);
            }
        })
        .map_err(|source| BrowserError::Io { what: "starting the stderr reader".into(), source })?;
    Ok(rx)
}

/// Waits for `DevTools listening on ws://...` among the stderr lines.
async fn devtools_url(
    mut lines: mpsc::UnboundedReceiver<String>,
    deadline: Duration,
) -> Result<String, BrowserError> {
    const MARK: &str = "DevTools listening on ";
    let end = Instant::now() + deadline;
    let mut seen: Vec<String> = Vec::new();
    loop {
        match tokio::time::timeout_at(end, lines.recv()).await {
            Ok(Some(line)) => {
                if let Some(url) = line.split_once(MARK).map(|(_, url)| url.trim().to_owned()) {
                    return Ok(url);
                }
                seen.push(line);
                if seen.len() > STDERR_TAIL {
                    seen.remove(0);
                }
            }
            Ok(None) => {
                let stderr = seen.join("\n");
                return Err(BrowserError::Launch { reason: "the browser exited".into(), stderr });
            }
            Err(_) => {
                let reason = format!("no DevTools address within {deadline:?}");
                return Err(BrowserError::Launch { reason, stderr: seen.join("\n") });
            }
        }
    }
}

/// The `webSocketDebuggerUrl` of a page target: the first open page, else a new blank one.
pub(crate) async fn page_target(browser_ws: &str) -> Result<String, BrowserError> {
    let host = browser_ws
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| BrowserError::Http(format!("unexpected DevTools address {browser_ws}")))?;
    let list = http_json(host, "GET", "/json/list").await?;
    let pages = list.as_array().into_iter().flatten();
    let open = pages.filter(|t| t["type"] == "page").find_map(ws_url);
    if let Some(url) = open {
        return Ok(url);
    }
    let created = http_json(host, "PUT", "/json/new?about:blank").await?;
    ws_url(&created).ok_or_else(|| BrowserError::Http(format!("no page target in {created}")))
}

fn ws_url(target: &Value) -> Option<String> {
    target["webSocketDebuggerUrl"].as_str().map(str::to_owned)
}

/// One HTTP/1.1 request to the DevTools endpoint, its body parsed as JSON.
///
/// The endpoint keeps the connection open whatever the request says and answers HTTP/1.0
/// with nothing, so the body is read by its `Content-Length`. The `Host` must be an IP
/// address or `localhost` (DNS-rebinding protection).
async fn http_json(host: &str, method: &str, path: &str) -> Result<Value, BrowserError> {
    let what = format!("{method} http://{host}{path}");
    let io = |source: io::Error| BrowserError::Io { what: what.clone(), source };
    let bad = |detail: &str| BrowserError::Http(format!("{what}: {detail}"));
    let mut stream = TcpStream::connect(host).await.map_err(io)?;
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(head_end) = find(&response, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&response[..head_end]).into_owned();
            if !head.starts_with("HTTP/1.1 200") {
                return Err(bad(&head));
            }
            let length = content_length(&head).ok_or_else(|| bad(&head))?;
            let body_start = head_end + 4;
            if response.len() >= body_start + length {
                let body = &response[body_start..body_start + length];
                return serde_json::from_slice(body).map_err(|e| bad(&e.to_string()));
            }
        }
        let n = stream.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            return Err(bad(&format!(
                "connection closed after {:?}",
                String::from_utf8_lossy(&response)
            )));
        }
        response.extend_from_slice(&chunk[..n]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
    })
}
