//! Where the admin API is, the token to show it, and one HTTP exchange with it.
//!
//! The admin API speaks plain HTTP (on loopback, or behind its bearer token), so the client
//! does too: hyper's pooled client over a TCP connector, which refuses any scheme but
//! `http`. Every exchange is bounded by [`REQUEST_TIMEOUT`]; every failure becomes one
//! [`CtlError`] naming the URL, so the command can say it in one line.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Uri};
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

use super::CtlError;

/// The admin address when neither `--admin` nor `TETHER_ADMIN` gives one: the default of
/// `[admin] address` (docs/configuration.md) and of `tether demo --admin`.
pub const DEFAULT_ADMIN: &str = "http://127.0.0.1:8081";

/// The variable that names the admin URL when `--admin` does not.
pub const ADMIN_ENV: &str = "TETHER_ADMIN";

/// The variable that holds the bearer token itself when `--token-file` is not given.
pub const TOKEN_ENV: &str = "TETHER_ADMIN_TOKEN";

/// How long one request to the admin API may take, connection included: 10 s.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest answer read: 16 MiB (a backends listing with thousands of servers fits).
const ANSWER_LIMIT: usize = 16 << 20;

/// The admin API to talk to: its base URL and the bearer token, if any.
#[derive(Debug, Clone)]
pub struct AdminTarget {
    authority: Authority,
    /// The base path without its trailing `/` (empty for the usual `http://host:port`).
    base_path: String,
    pub(super) token: Option<String>,
}

// === impl AdminTarget ===

impl AdminTarget {
    /// The target from the flags, else the environment (`env`, e.g. `std::env::var`):
    /// `--admin` or [`ADMIN_ENV`] or [`DEFAULT_ADMIN`]; the token read from `--token-file`
    /// (surrounding whitespace trimmed, as the server reads its own) or taken from
    /// [`TOKEN_ENV`]. An empty variable counts as unset.
    pub fn resolve(
        admin: Option<&str>,
        token_file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, CtlError> {
        let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let url = admin.map(str::to_owned).or_else(|| set(ADMIN_ENV));
        let (authority, base_path) = parse_base(url.as_deref().unwrap_or(DEFAULT_ADMIN))?;
        let token = match token_file {
            Some(path) => Some(read_token_file(path)?),
            None => set(TOKEN_ENV).map(|t| t.trim().to_owned()),
        };
        Ok(Self { authority, base_path, token })
    }

    /// The full URL of API path `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}{path}", self.authority, self.base_path)
    }

    /// Whether a token will be sent.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }
}

/// `http://HOST:PORT[/PREFIX]`, or `HOST:PORT` (as `[admin] address` is written), into the
/// authority and the prefix. Other schemes, credentials in the URL and queries are refused.
fn parse_base(text: &str) -> Result<(Authority, String), CtlError> {
    let bad = |why: &str| CtlError::AdminUrl { url: text.to_owned(), why: why.to_owned() };
    let full = if text.contains("://") { text.to_owned() } else { format!("http://{text}") };
    let uri: Uri = full.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad("only http:// works: the admin API serves plain HTTP"));
    }
    let Some(authority) = uri.authority().cloned() else { return Err(bad("no host")) };
    if authority.as_str().contains('@') {
        return Err(bad("credentials in the URL are not used; give the token instead"));
    }
    if uri.query().is_some() {
        return Err(bad("a query has no place in the admin URL"));
    }
    Ok((authority, uri.path().trim_end_matches('/').to_owned()))
}

fn read_token_file(path: &Path) -> Result<String, CtlError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CtlError::TokenFile { path: path.to_owned(), why: e.to_string() })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(CtlError::TokenFile { path: path.to_owned(), why: "it is empty".into() });
    }
    Ok(token.to_owned())
}

/// Percent-encodes one path segment (a backend or server name), so that a name with `/` or
/// a space reaches the API as a name it can refuse, never as another path.
pub fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A connection to the admin API: the target and a pooled HTTP client.
pub struct Api {
    target: AdminTarget,
    client: Client<HttpConnector, Full<Bytes>>,
}

// === impl Api ===

impl Api {
    /// A client for `target`. Needs a tokio runtime with I/O and time enabled when used.
    pub fn new(target: AdminTarget) -> Self {
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self { target, client }
    }

    /// The target's URL of `path`.
    pub fn url(&self, path: &str) -> String {
        self.target.url(path)
    }

    /// `GET path`, its JSON answer.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CtlError> {
        let body = self.exchange(Method::GET, path, Bytes::new()).await?;
        self.decode(path, &body)
    }

    /// `PATCH path` with JSON `body`; the answer's JSON, or `None` for an empty answer.
    pub async fn patch<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<Option<T>, CtlError> {
        let answer = self.exchange(Method::PATCH, path, Bytes::from(body.to_string())).await?;
        if answer.is_empty() {
            return Ok(None);
        }
        self.decode(path, &answer).map(Some)
    }

    fn decode<T: DeserializeOwned>(&self, path: &str, body: &[u8]) -> Result<T, CtlError> {
        serde_json::from_slice(body)
            .map_err(|e| CtlError::Answer { url: self.url(path), why: e.to_string() })
    }

    /// One request within [`REQUEST_TIMEOUT`]: the body of a 2xx answer, else the error
    /// the status and the API's `{"error": ...}` say.
    async fn exchange(&self, method: Method, path: &str, body: Bytes) -> Result<Bytes, CtlError> {
        let url = self.url(path);
        let request = self.request(method, &url, body)?;
        let unreachable = |why: String| CtlError::Unreachable { url: url.clone(), why };
        let answer = async {
            let response = self.client.request(request).await.map_err(|e| error_chain(&e))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), ANSWER_LIMIT).collect().await;
            body.map(|b| (status, b.to_bytes())).map_err(|e| error_chain(&*e))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, answer)
            .await
            .map_err(|_| unreachable(format!("no answer within {REQUEST_TIMEOUT:?}")))?
            .map_err(unreachable)?;
        if status.is_success() {
            return Ok(body);
        }
        Err(self.refusal(url, status, &body))
    }

    fn request(
        &self,
        method: Method,
        url: &str,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, CtlError> {
        let mut builder = Request::builder().method(method).uri(url);
        if !body.is_empty() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(token) = &self.target.token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        builder.body(Full::new(body)).map_err(|e| CtlError::AdminUrl {
            url: url.to_owned(),
            why: format!("cannot be requested ({e}); a token with control characters?"),
        })
    }

    /// The error for a non-2xx answer: 401 names the token, the rest carry the API's message.
    fn refusal(&self, url: String, status: StatusCode, body: &[u8]) -> CtlError {
        if status == StatusCode::UNAUTHORIZED {
            return CtlError::Unauthorized { url, token_given: self.target.has_token() };
        }
        let message = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| {
                let text = String::from_utf8_lossy(body);
                text.lines().next().unwrap_or("").chars().take(200).collect()
            });
        CtlError::Api { url, status: status.as_u16(), message }
    }
}

/// An error and its sources on one line (`client error (Connect): tcp connect error: ...`).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
