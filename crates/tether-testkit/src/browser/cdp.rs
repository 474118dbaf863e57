//! One Chrome DevTools Protocol session over a page target's WebSocket.
//!
//! Command replies (`{"id": N, "result": ...}`) and events (`{"method": ..., "params": ...}`)
//! arrive interleaved on the same socket. The connection has a single owner and reads only
//! while a command or a wait is in progress: every event read on the way is recorded in
//! [`Events`] (console errors, page loads) before the reply it preceded is returned, so
//! nothing is lost and no lock is needed.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::BrowserError;

/// What the page reported through events so far.
#[derive(Debug, Default)]
pub(crate) struct Events {
    /// Uncaught exceptions, `console.error` calls and error-level log entries, as text.
    pub(crate) console_errors: Vec<String>,
    /// How many `Page.loadEventFired` events have been seen.
    pub(crate) loads: u64,
}

impl Events {
    fn record(&mut self, method: &str, params: &Value) {
        match method {
            "Page.loadEventFired" => self.loads += 1,
            "Runtime.exceptionThrown" => {
                let d = &params["exceptionDetails"];
                let text = d["exception"]["description"].as_str().or(d["text"].as_str());
                let at = format!("{}:{}", d["url"].as_str().unwrap_or("?"), d["lineNumber"]);
                self.console_errors.push(format!("uncaught: {} ({at})", text.unwrap_or("?")));
            }
            "Runtime.consoleAPICalled" if params["type"] == "error" => {
                let args = params["args"].as_array().into_iter().flatten();
                let text: Vec<String> = args.map(remote_object_text).collect();
                self.console_errors.push(format!("console.error: {}", text.join(" ")));
            }
            "Log.entryAdded" if params["entry"]["level"] == "error" => {
                let e = &params["entry"];
                let (source, text) = (e["source"].as_str().unwrap_or("?"), &e["text"]);
                let url = e["url"].as_str().map(|u| format!(" ({u})")).unwrap_or_default();
                self.console_errors.push(format!("log[{source}]: {}{url}", text_of(text)));
            }
            _ => {}
        }
    }
}

/// A readable rendering of a `Runtime.RemoteObject` given to `console.error`.
fn remote_object_text(arg: &Value) -> String {
    match (&arg["value"], arg["description"].as_str()) {
        (Value::Null, Some(description)) => description.to_owned(),
        (value, _) => text_of(value),
    }
}

fn text_of(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_owned)
}

/// The WebSocket to one page target.
#[derive(Debug)]
pub(crate) struct Connection {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    pub(crate) events: Events,
}

impl Connection {
    pub(crate) async fn connect(url: &str) -> Result<Self, BrowserError> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Self { ws, next_id: 1, events: Events::default() })
    }

    /// Sends `method` with `params` and returns its `result`, recording the events read
    /// before the reply; fails at `end`.
    pub(crate) async fn call(
        &mut self,
        method: &str,
        params: Value,
        end: Instant,
    ) -> Result<Value, BrowserError> {
        let id = self.next_id;
        self.next_id += 1;
        let command = json!({ "id": id, "method": method, "params": params });
        self.ws.send(Message::text(command.to_string())).await?;
        loop {
            let message = self.next_message(end, method).await?;
            if message["id"].as_u64() != Some(id) {
                continue;
            }
            if let Some(error) = message.get("error") {
                let message = error["message"].as_str().unwrap_or("?").to_owned();
                let data = error["data"].as_str().map(|d| format!(" ({d})")).unwrap_or_default();
                let method = method.to_owned();
                return Err(BrowserError::Protocol { method, message: message + &data });
            }
            return Ok(message["result"].clone());
        }
    }

    /// Reads messages (recording events) until `Page.loadEventFired` number `loads` has been
    /// seen; fails at `end`.
    pub(crate) async fn wait_for_load(
        &mut self,
        loads: u64,
        end: Instant,
    ) -> Result<(), BrowserError> {
        while self.events.loads < loads {
            self.next_message(end, "Page.loadEventFired").await?;
        }
        Ok(())
    }

    /// The next JSON message, with events recorded; `what` names the wait in errors.
    async fn next_message(&mut self, end: Instant, what: &str) -> Result<Value, BrowserError> {
        loop {
            let next = tokio::time::timeout_at(end, self.ws.next())
                .await
                .map_err(|_| BrowserError::Timeout { waiting_for: what.to_owned() })?;
            let text = match next {
                None => return Err(BrowserError::Closed),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(_))) => return Err(BrowserError::Closed),
                // Pings are answered by tungstenite itself; CDP sends no binary frames.
                Some(Ok(_)) => continue,
            };
            let message: Value = serde_json::from_str(text.as_str()).map_err(|e| {
                BrowserError::Protocol { method: what.to_owned(), message: format!("{e}: {text}") }
            })?;
            if let Some(method) = message["method"].as_str() {
                self.events.record(method, &message["params"]);
            }
            return Ok(message);
        }
    }
}
