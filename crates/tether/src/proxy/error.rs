//! What can go wrong on the request path, and the one place that maps it to a status.

use http::{HeaderValue, Response, StatusCode, header};

use super::body::RespBody;
use crate::upstream::body::{BodyStalled, BodyTooLarge, ClientBodyFailed};

/// A request that Tether answers itself instead of a server's response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route matched and the listener has no default backend.
    #[error("no backend is configured for this host and path")]
    NoRoute,
    /// The connection's listener was removed by a reload as the request began (its
    /// connections are draining).
    #[error("the listener was closed by a reload")]
    ListenerClosed,
    /// Every server of the backend is down, in maintenance or already tried.
    #[error("no server is available")]
    NoServer,
    /// Every candidate is at its connection limit and the queue is full or the wait expired.
    #[error("every server is at its connection limit")]
    Full,
    /// The pinned server is down and the backend's policy is `on_server_down = "fail"`.
    #[error("the server holding this session is unavailable")]
    PinnedServerDown,
    /// Connecting to the server failed.
    #[error("could not connect to the server: {0}")]
    Connect(String),
    /// The server did not send a response head in time.
    #[error("the server did not answer in time")]
    Timeout,
    /// The client paused longer than `timeouts.body` while sending its body.
    #[error("the client stopped sending its request body")]
    ClientBodyTimeout,
    /// The client's body failed (connection lost, malformed chunking).
    #[error("the client's request body failed: {0}")]
    ClientBody(String),
    /// The server answered something unusable or closed the connection.
    #[error("the server sent an invalid response: {0}")]
    Upstream(String),
    /// A request Tether cannot forward (`CONNECT`, or one its HTTP client refuses to write):
    /// refused without blaming a server.
    #[error("the request cannot be forwarded: {0}")]
    NotForwardable(String),
    /// The request's framing breaks the policy in [`super::framing`].
    #[error("request framing refused: {0}")]
    Framing(&'static str),
    /// More header fields than the listener's `max_headers` (HTTP/2; hyper refuses HTTP/1
    /// heads over the limit itself).
    #[error("more header fields than max_headers")]
    TooManyHeaders,
    /// An HTTP/1.0 request that may carry a body has no `Content-Length`.
    #[error("HTTP/1.0 request body without Content-Length")]
    LengthRequired,
    /// A transfer coding Tether does not implement.
    #[error("unsupported Transfer-Encoding")]
    UnknownCoding,
    /// The body is larger than the listener's `max_body_bytes`.
    #[error("request body over the listener's max_body_bytes")]
    BodyTooLarge,
    /// The client is over a `rate_limit`; it may try again after this long.
    #[error("rate limit exceeded")]
    RateLimited {
        /// Until a request would be allowed.
        wait: std::time::Duration,
        /// The request has an unread body: close the connection rather than read it.
        close: bool,
    },
}

impl ProxyError {
    /// The status for this error, by which side failed: 502 when the server could not be
    /// reached or answered garbage, 504 when it was too slow, 503 when nothing could serve,
    /// 404 when nothing is configured to serve, 408/400 when the client's body stalled or broke.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoServer
            | ProxyError::PinnedServerDown
            | ProxyError::Full
            | ProxyError::ListenerClosed => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect(_) | ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::ClientBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::ClientBody(_) | ProxyError::Framing(_) => StatusCode::BAD_REQUEST,
            ProxyError::UnknownCoding | ProxyError::NotForwardable(_) => {
                StatusCode::NOT_IMPLEMENTED
            }
            ProxyError::TooManyHeaders => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::LengthRequired => StatusCode::LENGTH_REQUIRED,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// When the server, not the client or Tether, is to blame: the index of the error's kind
    /// in [`crate::metrics::ERROR_KINDS`] (`connect`, `timeout`, `protocol`). Only these
    /// count against the server (`errors_total`, `tether_upstream_errors_total`, outlier
    /// detection).
    pub fn metric_kind(&self) -> Option<usize> {
        match self {
            ProxyError::Connect(_) => Some(0),
            ProxyError::Timeout => Some(1),
            ProxyError::Upstream(_) => Some(2),
            _ => None,
        }
    }

    /// A short plain-text response. The detail stays in the log, not in the body.
    pub fn response(&self) -> Response<RespBody> {
        let status = self.status();
        let reason = status.canonical_reason().unwrap_or("Error");
        let short = match self {
            ProxyError::NoRoute => "no backend for this request",
            ProxyError::ListenerClosed => "this listener is closing; retry",
            ProxyError::NoServer => "no server is available",
            ProxyError::Full => "all servers are busy; retry shortly",
            ProxyError::PinnedServerDown => "the server holding your session is unavailable",
            ProxyError::Connect(_) => "could not reach a server",
            ProxyError::Timeout => "the server did not answer in time",
            ProxyError::Upstream(_) => "the server sent an invalid response",
            ProxyError::NotForwardable(_) => "this request cannot be forwarded",
            ProxyError::ClientBodyTimeout => "the request body stopped arriving",
            ProxyError::ClientBody(_) => "the request body could not be read",
            ProxyError::Framing(_) => "the request's framing is ambiguous",
            ProxyError::UnknownCoding => "unsupported transfer coding",
            ProxyError::TooManyHeaders => "too many header fields",
            ProxyError::LengthRequired => "an HTTP/1.0 request body needs Content-Length",
            ProxyError::BodyTooLarge => "the request body is too large",
            ProxyError::RateLimited { .. } => "too many requests; slow down",
        };
        let mut resp =
            Response::new(RespBody::full(format!("{} {reason}: {short}\n", status.as_u16())));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        let close = match self {
            ProxyError::ClientBodyTimeout
            | ProxyError::ListenerClosed
            | ProxyError::ClientBody(_)
            | ProxyError::Framing(_)
            | ProxyError::UnknownCoding
            | ProxyError::NotForwardable(_)
            | ProxyError::LengthRequired
            | ProxyError::BodyTooLarge => true,
            ProxyError::RateLimited { close, .. } => *close,
            _ => false,
        };
        if close {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let ProxyError::RateLimited { wait, .. } = self {
            // Whole seconds, rounded up: a client that waits this long finds a token.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        resp
    }
}

impl From<crate::upstream::h1::Error> for ProxyError {
    /// The HTTP/1.1 client's errors, by the side that caused them.
    fn from(e: crate::upstream::h1::Error) -> Self {
        use crate::upstream::h1::Error as E;
        match e {
            E::Connect(e) => ProxyError::Connect(e.to_string()),
            E::Io(e) => ProxyError::Upstream(e.to_string()),
            E::Server(why) => ProxyError::Upstream(why),
            E::Timeout => ProxyError::Timeout,
            E::NotForwardable(why) => ProxyError::NotForwardable(why),
            E::ClientBodyTimeout => ProxyError::ClientBodyTimeout,
            E::BodyTooLarge => ProxyError::BodyTooLarge,
            E::ClientBody(why) => ProxyError::ClientBody(why),
        }
    }
}

/// Whether a server's response counts as its failure (`errors_total`, outlier detection):
/// a 5xx, except `501 Not Implemented` and `505 HTTP Version Not Supported`, which answer
/// what the client asked for rather than show the server failing (as HAProxy's
/// `observe layer7` counts them).
pub fn response_blames_server(status: StatusCode) -> bool {
    status.is_server_error()
        && status != StatusCode::NOT_IMPLEMENTED
        && status != StatusCode::HTTP_VERSION_NOT_SUPPORTED
}

/// Names what ended a failed attempt by the side that caused it: a failed connect and
/// anything the server did are the server's; a request body that stalled, grew too large or
/// broke is the client's; a request the HTTP client refused to write is Tether's own limit,
/// and nothing reached the server. Only the server's failures count against it
/// ([`ProxyError::metric_kind`]). The response timeout is classified by the caller.
pub fn classify(e: &hyper_util::client::legacy::Error) -> ProxyError {
    if e.is_connect() {
        ProxyError::Connect(error_chain(e))
    } else if caused_by::<BodyStalled>(e) {
        ProxyError::ClientBodyTimeout
    } else if caused_by::<BodyTooLarge>(e) {
        ProxyError::BodyTooLarge
    } else if caused_by::<ClientBodyFailed>(e) {
        ProxyError::ClientBody(error_chain(e))
    } else if refused_before_sending(e) {
        ProxyError::NotForwardable(error_chain(e))
    } else {
        ProxyError::Upstream(error_chain(e))
    }
}

/// Whether hyper refused to write the request (a method, version, URI form or header it
/// does not send). The client's body errors are hyper "user" errors too: [`classify`]
/// looks for those first.
fn refused_before_sending(e: &hyper_util::client::legacy::Error) -> bool {
    use std::error::Error as _;
    let mut cur = e.source();
    while let Some(c) = cur {
        if let Some(h) = c.downcast_ref::<hyper::Error>() {
            return h.is_user();
        }
        cur = c.source();
    }
    // hyper-util's own refusals (`UserUnsupportedRequestMethod`, `UserUnsupportedVersion`,
    // `UserAbsoluteUriRequired`) have no source; their kind shows only in the message.
    e.source().is_none() && e.to_string().starts_with("client error (User")
}

/// Whether `e` or one of its sources is an `E`.
pub fn caused_by<E: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if c.is::<E>() {
            return true;
        }
        cur = c.source();
    }
    false
}

/// An error with its sources, for logs (hyper's top-level messages are terse).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Empty;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn each_error_has_one_status_and_only_server_faults_blame_the_server() {
        let wait = std::time::Duration::from_secs(1);
        let rows: Vec<(&str, ProxyError, u16, bool)> = vec![
            ("no route", ProxyError::NoRoute, 404, false),
            ("no server", ProxyError::NoServer, 503, false),
            ("all full", ProxyError::Full, 503, false),
            ("pinned server down", ProxyError::PinnedServerDown, 503, false),
            ("listener closed by a reload", ProxyError::ListenerClosed, 503, false),
            ("connect failed", ProxyError::Connect("refused".into()), 502, true),
            ("response timeout", ProxyError::Timeout, 504, true),
            ("server protocol error", ProxyError::Upstream("reset".into()), 502, true),
            ("client body stalled", ProxyError::ClientBodyTimeout, 408, false),
            ("client body broke", ProxyError::ClientBody("eof".into()), 400, false),
            ("not forwardable", ProxyError::NotForwardable("CONNECT".into()), 501, false),
            ("request framing", ProxyError::Framing("both"), 400, false),
            ("too many headers", ProxyError::TooManyHeaders, 431, false),
            ("length required", ProxyError::LengthRequired, 411, false),
            ("unknown coding", ProxyError::UnknownCoding, 501, false),
            ("body too large", ProxyError::BodyTooLarge, 413, false),
            ("rate limited", ProxyError::RateLimited { wait, close: false }, 429, false),
        ];
        for (case, err, status, blames) in rows {
            assert_eq!(err.status().as_u16(), status, "{case}");
            assert_eq!(err.metric_kind().is_some(), blames, "{case}");
            assert_eq!(err.response().status(), err.status(), "{case}");
        }
    }

    #[test]
    fn only_server_failures_among_answers_blame_the_server() {
        let rows: &[(u16, bool)] = &[
            (200, false),
            (404, false),
            (499, false),
            (500, true),
            (501, false), // the method is not implemented: the client's ask
            (502, true),
            (503, true),
            (504, true),
            (505, false), // the client's HTTP version
            (599, true),
        ];
        for &(status, blames) in rows {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(response_blames_server(status), blames, "{status}");
        }
    }

    /// A loopback server that reads a request and answers `reply` (nothing, then close,
    /// when empty).
    async fn one_shot_server(reply: &'static [u8]) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let mut buf = [0; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(reply).await;
        });
        addr
    }

    async fn failure(method: http::Method, version: http::Version, uri: String) -> ProxyError {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let req = http::Request::builder().method(method).version(version).uri(uri);
        match client.request(req.body(Empty::new()).unwrap()).await {
            Ok(resp) => panic!("expected a failure, got {}", resp.status()),
            Err(e) => classify(&e),
        }
    }

    #[tokio::test]
    async fn classify_names_the_side_that_failed() {
        use http::{Method, Version};
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let garbage = one_shot_server(b"\x00\xffnot http\r\n\r\n").await;
        let silent = one_shot_server(b"").await;
        let get = Method::GET;
        let rows = [
            (
                "nothing listens",
                failure(get.clone(), Version::HTTP_11, format!("http://{closed}/")).await,
                "connect",
            ),
            (
                "not HTTP back",
                failure(get.clone(), Version::HTTP_11, format!("http://{garbage}/")).await,
                "server",
            ),
            (
                "closed without an answer",
                failure(get, Version::HTTP_11, format!("http://{silent}/")).await,
                "server",
            ),
            (
                "CONNECT over HTTP/1.0, refused before connecting",
                failure(Method::CONNECT, Version::HTTP_10, format!("http://{closed}/")).await,
                "tether",
            ),
        ];
        for (case, err, side) in rows {
            let got = match err {
                ProxyError::Connect(_) => "connect",
                ProxyError::Upstream(_) => "server",
                ProxyError::NotForwardable(_) => "tether",
                ref other => panic!("{case}: {other:?}"),
            };
            assert_eq!(got, side, "{case}: {err:?}");
        }
    }
}
