//! A real headless Chromium, driven over the Chrome DevTools Protocol, for testing pages the
//! way a user's browser runs them (Tether's dashboard).
//!
//! No browser-automation crate: the protocol is JSON over one WebSocket, and the workspace
//! already has tokio-tungstenite and serde_json. [`Browser::launch`] starts Chromium with a
//! fresh profile, attaches to a page and enables the `Runtime`, `Log` and `Page` domains, so
//! uncaught exceptions, `console.error` calls and error-level log entries (failed resource
//! loads among them) are collected as [`Browser::console_errors`].
//!
//! Chromium must be installed (`scripts/test.sh` installs Debian's `chromium`); when it is
//! missing, [`Browser::launch`] fails with [`BrowserError::NotInstalled`] rather than letting
//! the test skip, because a skipped test proves nothing.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tether_testkit::browser::BrowserError> {
//! use std::time::Duration;
//! use tether_testkit::browser::Browser;
//!
//! let mut browser = Browser::launch().await?;
//! browser.goto("data:text/html,<title>hi</title><p id=x>ready</p>").await?;
//! let ready = browser.wait_for("document.querySelector('#x').textContent === 'ready'",
//!                              Duration::from_secs(5)).await?;
//! assert!(ready);
//! assert_eq!(browser.eval("document.title").await?, "hi");
//! assert!(browser.console_errors().is_empty());
//! # Ok(()) }
//! ```

mod cdp;
mod launch;

use std::io;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::time::Instant;

use cdp::Connection;
pub use launch::BROWSER_ENV;
use launch::Process;

/// How long [`Browser::launch`] waits for Chromium to be ready: 20 s.
pub const LAUNCH_DEADLINE: Duration = Duration::from_secs(20);

/// How long [`Browser::goto`] waits for the page's load event: 20 s.
pub const LOAD_DEADLINE: Duration = Duration::from_secs(20);

/// How long any single protocol command may take: 10 s.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(10);

/// How often [`Browser::wait_for`] evaluates its condition: 50 ms.
pub const WAIT_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Why the browser could not do what a test asked.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// No Chromium executable was found.
    #[error(
        "no Chromium found (looked for {looked_for}); install it: `apt-get install chromium` \
         on Debian (scripts/test.sh does this when run as root), or set $TETHER_CHROMIUM to \
         a Chromium or Chrome executable"
    )]
    NotInstalled {
        /// Where the harness looked.
        looked_for: String,
    },
    /// Chromium started but never became ready, or exited.
    #[error("chromium did not start: {reason}; its stderr:\n{stderr}")]
    Launch {
        /// What went wrong.
        reason: String,
        /// Its last stderr lines.
        stderr: String,
    },
    /// A file, process or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What the harness was doing.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The DevTools HTTP endpoint gave an unexpected answer.
    #[error("DevTools endpoint: {0}")]
    Http(String),
    /// The DevTools WebSocket failed.
    #[error("DevTools WebSocket: {0}")]
    WebSocket(Box<tokio_tungstenite::tungstenite::Error>),
    /// The DevTools WebSocket was closed (the browser or page went away).
    #[error("DevTools WebSocket closed")]
    Closed,
    /// A protocol command was answered with an error, or the answer made no sense.
    #[error("{method}: {message}")]
    Protocol {
        /// The command.
        method: String,
        /// The browser's error message.
        message: String,
    },
    /// The page could not be navigated to.
    #[error("navigating to {url}: {message}")]
    Navigation {
        /// Where to.
        url: String,
        /// Chromium's error text, e.g. `net::ERR_CONNECTION_REFUSED`.
        message: String,
    },
    /// An evaluated script threw (or its promise rejected).
    #[error("script threw: {message}\nscript: {script}")]
    Script {
        /// The exception's description.
        message: String,
        /// The script.
        script: String,
    },
    /// A deadline passed.
    #[error("timed out waiting for {waiting_for}")]
    Timeout {
        /// What the harness was waiting for.
        waiting_for: String,
    },
    /// A screenshot could not be decoded or written.
    #[error("screenshot: {0}")]
    Screenshot(String),
}

impl From<tokio_tungstenite::tungstenite::Error> for BrowserError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        // Boxed: the WebSocket error is large and every result here carries this type.
        Self::WebSocket(Box::new(e))
    }
}

/// A headless Chromium with one page, driven over the DevTools Protocol.
///
/// Dropping it kills the browser's whole process group and removes its profile directory.
#[derive(Debug)]
pub struct Browser {
    conn: Connection,
    // Last, so the socket closes before the process goes.
    _process: Process,
}

// === impl Browser ===

impl Browser {
    /// Starts Chromium (`$TETHER_CHROMIUM`, else `chromium`, `chromium-browser`,
    /// `google-chrome` or `google-chrome-stable` from `PATH`) headless on loopback with a
    /// fresh profile, attaches to a page and enables `Runtime`, `Log` and `Page` events;
    /// within [`LAUNCH_DEADLINE`].
    pub async fn launch() -> Result<Self, BrowserError> {
        let end = Instant::now() + LAUNCH_DEADLINE;
        let (process, browser_ws) = Process::spawn(LAUNCH_DEADLINE).await?;
        let page_ws = tokio::time::timeout_at(end, launch::page_target(&browser_ws))
            .await
            .map_err(|_| BrowserError::Timeout { waiting_for: "a page target".into() })??;
        let conn = tokio::time::timeout_at(end, Connection::connect(&page_ws))
            .await
            .map_err(|_| BrowserError::Timeout { waiting_for: page_ws.clone() })??;
        let mut browser = Self { conn, _process: process };
        for domain in ["Runtime", "Log", "Page"] {
            browser.call(&format!("{domain}.enable"), json!({})).await?;
        }
        Ok(browser)
    }

    /// Navigates to `url` and waits up to [`LOAD_DEADLINE`] for its load event.
    pub async fn goto(&mut self, url: &str) -> Result<(), BrowserError> {
        let end = Instant::now() + LOAD_DEADLINE;
        let loads = self.conn.events.loads + 1;
        let nav = self.conn.call("Page.navigate", json!({ "url": url }), end).await?;
        if let Some(message) = nav["errorText"].as_str().filter(|t| !t.is_empty()) {
            let (url, message) = (url.to_owned(), message.to_owned());
            return Err(BrowserError::Navigation { url, message });
        }
        self.conn.wait_for_load(loads, end).await
    }

    /// Evaluates `js` in the page (awaiting it if it is a promise) and returns its value as
    /// JSON (`Null` for `undefined`). A thrown exception is [`BrowserError::Script`].
    pub async fn eval(&mut self, js: &str) -> Result<Value, BrowserError> {
        let params = json!({ "expression": js, "returnByValue": true, "awaitPromise": true });
        let reply = self.call("Runtime.evaluate", params).await?;
        if let Some(details) = reply.get("exceptionDetails") {
            let description = details["exception"]["description"].as_str();
            let message = description.or(details["text"].as_str()).unwrap_or("?").to_owned();
            return Err(BrowserError::Script { message, script: js.to_owned() });
        }
        Ok(reply["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    /// Evaluates the expression `js_condition` every [`WAIT_POLL_INTERVAL`] until it is
    /// truthy (→ `true`) or `deadline` has passed (→ `false`). An exception counts as false
    /// (the element may not exist yet); protocol failures are errors.
    pub async fn wait_for(
        &mut self,
        js_condition: &str,
        deadline: Duration,
    ) -> Result<bool, BrowserError> {
        let end = Instant::now() + deadline;
        let probe = format!(
            "(() => {{ try {{ return !!({js_condition}); }} catch (_) {{ return false; }} }})()"
        );
        loop {
            if self.eval(&probe).await? == Value::Bool(true) {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= end {
                return Ok(false);
            }
            tokio::time::sleep(WAIT_POLL_INTERVAL.min(end - now)).await;
        }
    }

    /// Uncaught exceptions, `console.error` calls and error-level log entries (e.g. a failed
    /// resource load) seen so far, oldest first. Events are read while commands run, so call
    /// this after an [`eval`](Self::eval) or [`wait_for`](Self::wait_for) that follows what
    /// should have been reported.
    pub fn console_errors(&self) -> Vec<String> {
        self.conn.events.console_errors.clone()
    }

    /// Gives the page a `width` × `height` CSS-pixel viewport (device scale 1, desktop), as a
    /// browser window of that inner size would, so layout tests do not depend on the launch
    /// window (1280 × 1000). Takes effect at once, also for a page already open.
    pub async fn set_viewport(&mut self, width: u32, height: u32) -> Result<(), BrowserError> {
        let params =
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false });
        self.call("Emulation.setDeviceMetricsOverride", params).await.map(drop)
    }

    /// Captures the viewport as PNG into `path`.
    pub async fn screenshot(&mut self, path: &Path) -> Result<(), BrowserError> {
        let reply = self.call("Page.captureScreenshot", json!({ "format": "png" })).await?;
        let data = reply["data"]
            .as_str()
            .ok_or_else(|| BrowserError::Screenshot(format!("no data in {reply}")))?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| BrowserError::Screenshot(e.to_string()))?;
        std::fs::write(path, png).map_err(|source| BrowserError::Io {
            what: format!("writing {}", path.display()),
            source,
        })
    }

    /// The browser's process id, which is also its process group's: the group dropping the
    /// browser kills.
    pub fn pid(&self) -> u32 {
        self._process.pid()
    }

    /// Sends any DevTools command to the page (for what the methods above don't cover) and
    /// returns its `result`; within [`COMMAND_DEADLINE`].
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, BrowserError> {
        self.conn.call(method, params, Instant::now() + COMMAND_DEADLINE).await
    }
}
