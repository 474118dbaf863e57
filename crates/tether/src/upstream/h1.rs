//! Tether's own HTTP/1.1 client for servers (issue #13, step 2), on the pure codec in
//! `tether_core::h1` and the pool rules in `tether_core::pool`.
//!
//! A request's task does all the work itself: it checks a connection out of the server's
//! [`Origin`] pool (or dials one), writes the head it encoded once ([`Encoded`]), streams the
//! body while it reads the response head ([`exchange`]), and hands the client the response
//! body, which reads the rest straight from the connection ([`ResponseBody`]) and puts the
//! connection back only when [`Ending::reusable`] says the exchange was clean. No task,
//! channel or watch per connection, and the response-framing policy is part of the one parse
//! of the head (`tether_core::h1::response`).
//!
//! A pooled connection that the server closed while it sat idle is noticed before use
//! ([`Stream::is_usable`]); when the close races the request instead, an idempotent request
//! without a body is sent again once on a new connection (nothing came back; a `POST` is
//! never sent twice).

mod body;
mod exchange;
mod lines;

use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Method, Response, StatusCode, Uri, Version};
use tether_core::h1::{BodyFraming, HeadLimits, HeaderSpan, ResponseHead, write_request_head};
use tether_core::pool::{Ending, IdlePool};

pub use self::body::ResponseBody;
use self::body::Reuse;
use self::exchange::Exchange;
pub use self::lines::ServerLines;
use super::body::{BodyStalled, BodyTooLarge, ClientBodyFailed};
use super::stream::{Dialer, Stream};
use crate::config;

/// Idle connections kept per server and worker thread (more are closed on return).
pub const MAX_IDLE_PER_SERVER: usize = 1024;

/// One server as the HTTP/1.1 client sees it: how to dial it. Its idle connections live in
/// the pools of the worker threads ([`pools`]), keyed by the origin's id: a checkout and a
/// checkin touch only the current thread's pool, with no lock.
#[derive(Debug)]
pub struct Origin {
    id: u64,
    dialer: Dialer,
    idle_timeout: Duration,
    limits: HeadLimits,
    /// Dropped with the origin: the pools drop its connections at their next sweep.
    alive: Arc<()>,
}

impl Origin {
    /// The server at `address`; idle connections are kept `idle_timeout` at most.
    pub fn new(
        address: http::uri::Authority,
        tls: Option<&config::UpstreamTls>,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Arc<Self> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Arc::new(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            dialer: Dialer::new(address, tls, connect_timeout),
            idle_timeout,
            limits: HeadLimits::default(),
            alive: Arc::new(()),
        })
    }

    /// A pooled connection of this thread that is still usable, if any.
    fn checkout(&self) -> Option<Stream> {
        loop {
            let mut io = pools::checkout(self.id, Instant::now())?;
            if io.is_usable() {
                return Some(io);
            }
        }
    }

    /// Returns a connection after an exchange that ended as `ending` (closed unless clean).
    fn checkin(&self, io: Stream, ending: Ending) {
        let pool = || {
            let pool = IdlePool::new(MAX_IDLE_PER_SERVER, self.idle_timeout);
            (pool, Arc::downgrade(&self.alive))
        };
        pools::checkin(self.id, io, ending, Instant::now(), pool);
    }
}

/// The idle connections of the current worker thread, by origin.
pub mod pools {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::sync::Weak;
    use std::time::{Duration, Instant};

    use tether_core::pool::{Ending, IdlePool};

    use crate::upstream::stream::Stream;

    /// How often a thread's pools drop expired connections and those of removed servers.
    const SWEEP_EVERY: Duration = Duration::from_secs(1);

    struct Pools {
        by_origin: HashMap<u64, (IdlePool<Stream>, Weak<()>)>,
        swept: Instant,
    }

    thread_local! {
        static POOLS: RefCell<Pools> =
            RefCell::new(Pools { by_origin: HashMap::new(), swept: Instant::now() });
    }

    pub(super) fn checkout(origin: u64, now: Instant) -> Option<Stream> {
        POOLS.with_borrow_mut(|p| p.by_origin.get_mut(&origin)?.0.checkout(now))
    }

    pub(super) fn checkin(
        origin: u64,
        io: Stream,
        ending: Ending,
        now: Instant,
        new_pool: impl FnOnce() -> (IdlePool<Stream>, Weak<()>),
    ) {
        // A refused connection is closed after the borrow ends.
        let refused = POOLS.with_borrow_mut(|p| {
            let refused =
                p.by_origin.entry(origin).or_insert_with(new_pool).0.checkin(io, ending, now);
            p.sweep_if_due(now);
            refused
        });
        drop(refused);
    }

    /// Drops this thread's expired idle connections and the pools of removed servers, at
    /// most once a [`SWEEP_EVERY`]. Called on every checkin and when a worker thread goes
    /// idle (the runtime's park hook), so a quiet thread does not hold connections open.
    pub fn sweep() {
        // Never re-entered: the park hook runs outside any checkin.
        let _ = POOLS.try_with(|p| {
            if let Ok(mut p) = p.try_borrow_mut() {
                p.sweep_if_due(Instant::now());
            }
        });
    }

    impl Pools {
        fn sweep_if_due(&mut self, now: Instant) {
            if now.saturating_duration_since(self.swept) < SWEEP_EVERY {
                return;
            }
            self.swept = now;
            self.by_origin.retain(|_, (pool, alive)| {
                pool.prune(now);
                alive.strong_count() > 0 && !pool.is_empty()
            });
        }
    }
}

/// What went wrong with one request to a server, by whose fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server could not be reached (lookup, connect, TLS handshake, connect timeout).
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// The connection failed during the exchange (reset, closed before answering).
    #[error("{0}")]
    Io(std::io::Error),
    /// The server's response breaks HTTP/1.1 or the response-framing policy.
    #[error("{0}")]
    Server(String),
    /// No response head within the response timeout.
    #[error("no response head in time")]
    Timeout,
    /// A request head that cannot be written faithfully (nothing was sent).
    #[error("{0}")]
    NotForwardable(String),
    /// The client paused its body longer than the listener allows.
    #[error("the client stopped sending its request body")]
    ClientBodyTimeout,
    /// The client's body went past `max_body_bytes`.
    #[error("the request body is larger than max_body_bytes")]
    BodyTooLarge,
    /// Reading the client's body failed.
    #[error("{0}")]
    ClientBody(String),
}

impl Error {
    /// The error of a failed request body, by its cause.
    fn client_body(e: super::body::BodyError) -> Self {
        if e.is::<BodyStalled>() {
            Error::ClientBodyTimeout
        } else if e.is::<BodyTooLarge>() {
            Error::BodyTooLarge
        } else if e.is::<ClientBodyFailed>() {
            Error::ClientBody(e.to_string())
        } else {
            Error::ClientBody(format!("request body: {e}"))
        }
    }
}

/// A request head as it goes to servers, written once and sent on each attempt.
#[derive(Debug, Clone)]
pub struct Encoded {
    head: Bytes,
    /// The body is sent chunked (it has no `Content-Length`).
    chunked: bool,
    /// `HEAD`: the response has no body.
    to_head: bool,
    /// The request asks to switch protocols: a `101` answer is expected.
    upgrade: bool,
    /// The method is idempotent (RFC 9110 §9.2.2): sending it twice does no harm.
    idempotent: bool,
}

/// Encodes the head of a request whose headers are ready for the server (hop-by-hop ones
/// removed, forwarding ones added). The body, when there is one, goes by its
/// `Content-Length`, else chunked; a `POST`, `PUT` or `PATCH` without a body says
/// `Content-Length: 0`.
pub fn encode(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    has_body: bool,
    upgrade: bool,
) -> Result<Encoded, Error> {
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let has_length = headers.contains_key(CONTENT_LENGTH);
    let chunked = has_body && !has_length;
    let wants_length = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    let framing: Option<(&[u8], &[u8])> = if chunked {
        Some((b"transfer-encoding", b"chunked"))
    } else if !has_body && !has_length && wants_length {
        Some((b"content-length", b"0"))
    } else {
        None
    };
    let lines = headers
        .iter()
        .filter(|(name, _)| **name != TRANSFER_ENCODING)
        .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()))
        .chain(framing);
    let size: usize = headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    let mut out = Vec::with_capacity(size + target.len() + 48);
    write_request_head(&mut out, method.as_str().as_bytes(), target.as_bytes(), lines)
        .map_err(|e| Error::NotForwardable(e.to_string()))?;
    let to_head = *method == Method::HEAD;
    let idempotent = method.is_idempotent();
    Ok(Encoded { head: Bytes::from(out), chunked, to_head, upgrade, idempotent })
}

impl Encoded {
    /// The same head with one more header field (the caller checked both are valid).
    pub fn with_header(&self, name: &http::HeaderName, value: &http::HeaderValue) -> Encoded {
        let end = self.head.len().saturating_sub(2); // before the blank line
        let mut head = Vec::with_capacity(self.head.len() + name.as_str().len() + value.len() + 4);
        head.extend_from_slice(&self.head[..end]);
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n\r\n");
        Encoded { head: Bytes::from(head), ..*self }
    }
}

/// Sends `req` with `body` to `origin` and waits for the response head; `response_timeout`
/// counts from the end of the request (its last body byte).
pub async fn send(
    origin: &Arc<Origin>,
    req: &Encoded,
    mut body: super::body::ReqBody,
    response_timeout: Duration,
) -> Result<Response<ResponseBody>, Error> {
    // Sent again only when nothing came back, it has no body to replay, and sending it
    // twice does no harm (RFC 9112 §9.3.1): a POST is never replayed.
    let replayable = req.idempotent && matches!(body, super::body::ReqBody::Empty);
    let mut pooled = true;
    loop {
        let (io, reused) = match pooled.then(|| origin.checkout()).flatten() {
            Some(io) => (io, true),
            // Boxed, as the rare paths below: an awaited future is stored inline in the
            // request's future, which is moved into its box on every request; the connect
            // and TLS handshake (~1.3 KB) is needed only when no pooled connection is idle.
            None => (Box::pin(origin.dialer.connect()).await.map_err(Error::Connect)?, false),
        };
        let body = std::mem::replace(&mut body, super::body::ReqBody::Empty);
        let mut ex = Box::new(Exchange::new(io, req.head.clone(), body, req.chunked, req.to_head));
        let mut spans = Vec::with_capacity(16);
        match read_head(&mut ex, &origin.limits, &mut spans, response_timeout).await {
            Ok(head) => return respond(origin, ex, &head, spans, req.upgrade),
            Err(Error::Io(e)) if reused && replayable && !ex.received => {
                tracing::debug!(error = %e, "a pooled server connection was closed; sending again on a new one");
                pooled = false;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Drives the upload and reads the response head; the response timer starts once the
/// request has been written whole (or the server stopped taking it).
async fn read_head(
    ex: &mut Exchange,
    limits: &HeadLimits,
    spans: &mut Vec<HeaderSpan>,
    response_timeout: Duration,
) -> Result<ResponseHead, Error> {
    // Armed once the request is written: a clock read and a timer per request, not two.
    let mut timer: Pin<&mut Option<tokio::time::Sleep>> = pin!(None);
    poll_fn(|cx| {
        if !ex.upload_over() {
            if let Poll::Ready(Err(e)) = ex.poll_upload(cx) {
                return Poll::Ready(Err(e));
            }
        }
        if let Poll::Ready(head) = ex.poll_head(cx, limits, spans) {
            return Poll::Ready(head);
        }
        if ex.upload_over() {
            if timer.is_none() {
                timer.set(Some(tokio::time::sleep(response_timeout)));
            }
            if timer.as_mut().as_pin_mut().is_some_and(|t| t.poll(cx).is_ready()) {
                return Poll::Ready(Err(Error::Timeout));
            }
        }
        Poll::Pending
    })
    .await
}

/// The response for the client: the head's status, its map holding only the framing line
/// Tether chose (never the server's lines), and the body still on the connection, which
/// carries the server's other lines ([`ServerLines`]).
fn respond(
    origin: &Arc<Origin>,
    mut ex: Box<Exchange>,
    head: &ResponseHead,
    spans: Vec<HeaderSpan>,
    upgrade: bool,
) -> Result<Response<ResponseBody>, Error> {
    if head.is_upgrade() && !upgrade {
        return Err(Error::Server("a 101 answer to a request that asked for no upgrade".into()));
    }
    let bytes = ex.rbuf.split_to(head.len).freeze();
    let (lines, kept_length) = ServerLines::of_head(bytes, spans, head.is_upgrade())?;
    let headers = lines::framing_map(&lines, head.framing, kept_length);
    let reuse = Reuse { head_allows: head.reusable(), framing_doubtful: head.length_dropped };
    let framing = if head.is_upgrade() { BodyFraming::NoBody } else { head.framing };
    let mut body = ResponseBody::new(ex, Arc::clone(origin), framing, reuse, lines);
    if !head.is_upgrade() && matches!(framing, BodyFraming::NoBody | BodyFraming::Length(0)) {
        body.end_now();
    }
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(head.status)
        .map_err(|_| Error::Server(format!("invalid status {}", head.status)))?;
    *resp.version_mut() = if head.minor_version == 0 { Version::HTTP_10 } else { Version::HTTP_11 };
    *resp.headers_mut() = headers;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};
    use tether_core::h1::parse_response;

    /// The response's map with the server's lines moved into it, as an HTTP/2 client gets it.
    fn response_headers(
        bytes: Bytes,
        spans: Vec<HeaderSpan>,
        framing: BodyFraming,
        switching: bool,
    ) -> Result<HeaderMap, Error> {
        let (lines, kept) = ServerLines::of_head(bytes, spans, switching)?;
        let mut map = lines::framing_map(&lines, framing, kept);
        lines.into_map(&mut map);
        Ok(map)
    }

    /// The headers the client gets for a response head, or the refusal.
    fn forwarded(head: &str, to_head: bool) -> Result<Vec<(String, String)>, String> {
        let bytes = Bytes::copy_from_slice(head.as_bytes());
        let mut spans = Vec::new();
        let parsed = parse_response(&bytes, &HeadLimits::default(), to_head, &mut spans);
        let head = parsed.map_err(|e| e.to_string())?.ok_or("incomplete")?;
        let map = response_headers(bytes, spans, head.framing, head.is_upgrade())
            .map_err(|e| e.to_string())?;
        Ok(map.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned())).collect())
    }

    #[test]
    fn hop_by_hop_lines_and_those_connection_names_are_left_out() {
        // (case, head after the status line, the names the client gets)
        let rows: &[(&str, &str, &[&str])] = &[
            (
                "keep-alive server",
                "Connection: keep-alive\r\nKeep-Alive: timeout=5\r\nA: 1\r\n",
                &["a"],
            ),
            ("named before Connection", "X-Hop: 1\r\nA: 1\r\nConnection: close, X-Hop\r\n", &["a"]),
            (
                "named after Connection",
                "Connection: x-hop , upgrade\r\nX-Hop: 1\r\nX-Hop: 2\r\nA: 1\r\n",
                &["a"],
            ),
            (
                "two Connection lines",
                "Connection: a\r\nConnection: b\r\nA: 1\r\nB: 2\r\nC: 3\r\n",
                &["c"],
            ),
            (
                "every hop-by-hop name",
                "TE: x\r\nTrailer: x\r\nProxy-Connection: x\r\nProxy-Authenticate: x\r\nProxy-Authorization: x\r\nUpgrade: x\r\nA: 1\r\n",
                &["a"],
            ),
            ("a name that is no header", "Connection: not a name\r\nA: 1\r\n", &["a"]),
            (
                "repeated end-to-end lines kept",
                "Set-Cookie: a=1\r\nDate: x\r\nSet-Cookie: b=2\r\n",
                &["set-cookie", "set-cookie", "date"],
            ),
        ];
        for (case, lines, want) in rows {
            let head = format!("HTTP/1.1 200 OK\r\n{lines}content-length: 0\r\n\r\n");
            let got = forwarded(&head, false).unwrap_or_else(|e| panic!("{case}: {e}"));
            // Sorted: a map's remove moves its last entry into the hole.
            let mut names: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
            names.sort_unstable();
            let mut expected = want.to_vec();
            expected.push("content-length");
            expected.sort_unstable();
            assert_eq!(names, expected, "{case}");
        }
        // A 101 keeps Upgrade for the tunnel (Connection is put back by the request path).
        let switching =
            "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
        let got = forwarded(switching, false).unwrap();
        assert_eq!(got, [("upgrade".to_owned(), "websocket".to_owned())]);
    }

    fn lengths(headers: &[(String, String)]) -> Vec<&str> {
        headers.iter().filter(|(k, _)| k == "content-length").map(|(_, v)| v.as_str()).collect()
    }

    #[test]
    fn a_plain_length_is_forwarded_as_the_servers_own_bytes() {
        let raw = "HTTP/1.1 200 OK\r\ncontent-length: 42\r\n\r\n";
        let bytes = Bytes::copy_from_slice(raw.as_bytes());
        let mut spans = Vec::new();
        let head = parse_response(&bytes, &HeadLimits::default(), false, &mut spans);
        let head = head.unwrap().unwrap();
        let map = response_headers(bytes.clone(), spans, head.framing, false).unwrap();
        let value = map[CONTENT_LENGTH].as_bytes();
        assert_eq!(value, b"42");
        assert!(bytes.as_ptr_range().contains(&value.as_ptr()), "no copy");
    }

    #[test]
    fn the_client_gets_the_one_framing_tether_chose() {
        // (case, response head, to a HEAD request, Content-Length values forwarded; None: 502)
        type Case = (&'static str, &'static str, bool, Option<&'static [&'static str]>);
        let cases: &[Case] = &[
            ("a length", "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n", false, Some(&["3"])),
            ("chunked", "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", false, Some(&[])),
            (
                "chunked wins over a length, which is dropped",
                "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
                false,
                Some(&[]),
            ),
            (
                "agreeing lengths collapse",
                "HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\ncontent-length: 3\r\n\r\n",
                false,
                Some(&["3"]),
            ),
            (
                "a HEAD answer keeps its length once",
                "HTTP/1.1 200 OK\r\ncontent-length: 9\r\ncontent-length: 9\r\n\r\n",
                true,
                Some(&["9"]),
            ),
            ("until close: no length", "HTTP/1.1 200 OK\r\nx: y\r\n\r\n", false, Some(&[])),
            (
                "leading zeros dropped",
                "HTTP/1.1 200 OK\r\ncontent-length: 007\r\n\r\n",
                false,
                Some(&["7"]),
            ),
            ("a zero length", "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", false, Some(&["0"])),
            (
                "a length with spaces around its comma",
                "HTTP/1.1 200 OK\r\ncontent-length: 12 , 12\r\n\r\n",
                false,
                Some(&["12"]),
            ),
            (
                "an unknown coding",
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
                false,
                None,
            ),
            (
                "differing lengths",
                "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
                false,
                None,
            ),
        ];
        for (case, head, to_head, want) in cases {
            let got = forwarded(head, *to_head);
            match want {
                Some(want) => {
                    let got = got.unwrap_or_else(|e| panic!("{case}: refused: {e}"));
                    assert_eq!(lengths(&got), *want, "{case}");
                    assert!(got.iter().all(|(k, _)| k != "transfer-encoding"), "{case}");
                }
                None => assert!(got.is_err(), "{case}: {got:?}"),
            }
        }
    }

    fn encoded(method: Method, uri: &str, headers: &[(&str, &str)], has_body: bool) -> String {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let uri: Uri = uri.parse().unwrap();
        let e = encode(&method, &uri, &map, has_body, false).unwrap();
        String::from_utf8(e.head.to_vec()).unwrap()
    }

    #[test]
    fn a_request_head_says_how_its_body_is_framed() {
        /// (case, method, target, headers, has a body, the head written)
        type Row = (
            &'static str,
            Method,
            &'static str,
            &'static [(&'static str, &'static str)],
            bool,
            &'static str,
        );
        let rows: &[Row] = &[
            (
                "no body",
                Method::GET,
                "/a?b",
                &[("host", "x")],
                false,
                "GET /a?b HTTP/1.1\r\nhost: x\r\n\r\n",
            ),
            (
                "a body with a length goes by it",
                Method::POST,
                "/",
                &[("content-length", "5")],
                true,
                "POST / HTTP/1.1\r\ncontent-length: 5\r\n\r\n",
            ),
            (
                "a body without one is chunked",
                Method::PUT,
                "/",
                &[],
                true,
                "PUT / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            ),
            (
                "an empty POST says so",
                Method::POST,
                "/",
                &[],
                false,
                "POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            ),
            (
                "absolute form becomes origin form",
                Method::GET,
                "http://h/p",
                &[],
                false,
                "GET /p HTTP/1.1\r\n\r\n",
            ),
            (
                "a request for the server itself",
                Method::OPTIONS,
                "*",
                &[],
                false,
                "OPTIONS * HTTP/1.1\r\n\r\n",
            ),
        ];
        for (case, method, uri, headers, has_body, want) in rows {
            assert_eq!(encoded(method.clone(), uri, headers, *has_body), *want, "{case}");
        }
    }
}
