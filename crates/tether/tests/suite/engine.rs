//! The correctness contract of the upstream HTTP/1.1 engine (issue #13), through the real
//! binary, so it holds whichever client reaches the servers:
//!
//! 1. Pipelined requests are answered in order, each by its own response, and reach the
//!    server whole: exactly the requests sent, bodies intact.
//! 2. How a client's bytes are split into writes changes nothing: the same answers and the
//!    same requests at the server as when they come in one write.
//! 3. A server connection is reused only after a response that ended cleanly: never after one
//!    cut short, malformed, with doubtful framing, reset, delimited by close, or saying
//!    `Connection: close`; and the next request is served normally on a new connection.
//! 4. A pooled connection the server has closed while idle costs the client nothing: a
//!    request without a body still gets the server's answer, not a 502; but a request that
//!    is not idempotent is never sent twice (RFC 9112, section 9.3.1).
//!
//! Servers: the strict [`RecorderServer`] (answers `"<METHOD> <target>\n"`) where requests
//! must arrive intact, the [`ScriptedServer`] (exact bytes per path, a log of which
//! connection each request arrived on) where connection reuse is judged.

use std::net::SocketAddr;
use std::time::Duration;

use tether_testkit::servers::scripted::{Answer, ScriptedConnection, ScriptedServer, Then};
use tether_testkit::{RecorderServer, Tether, wait_until};

use crate::support::fixture::{Backend, ServerEntry, config, start};
use crate::support::h1raw::{DEADLINE, RawClient, Reply};

// === helpers ===

/// A Tether whose backend "app" is the one server at `addr`, behind listener "web".
async fn behind(addr: SocketAddr) -> Tether {
    start(config(Backend::new().server(ServerEntry::new("up", addr)))).await
}

/// One request of a test stream as the server must receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    method: String,
    target: String,
    body: Vec<u8>,
}

impl Sent {
    fn new(method: &str, target: &str, body: &[u8]) -> Self {
        Self { method: method.to_owned(), target: target.to_owned(), body: body.to_vec() }
    }

    /// The recorder's answer to this request.
    fn answer(&self) -> (u16, Vec<u8>) {
        (200, format!("{} {}\n", self.method, self.target).into_bytes())
    }
}

/// Each reply's status and body.
fn answers(replies: &[Reply]) -> Vec<(u16, Vec<u8>)> {
    replies.iter().map(|r| (r.status, r.body.clone())).collect()
}

/// Waits until `rec` holds `from + n` complete requests, asserts nothing else arrived
/// (nothing malformed, truncated or left over) and returns the `n` from index `from`.
async fn forwarded(rec: &RecorderServer, from: usize, n: usize) -> Vec<Sent> {
    wait_until(DEADLINE, || rec.recording().requests.len() >= from + n).await;
    let recording = rec.recording();
    assert!(recording.problems().is_empty(), "{:?}", recording.problems());
    assert!(recording.truncated.is_empty(), "{:?}", recording.truncated);
    assert_eq!(recording.requests.len(), from + n, "{:?}", recording.targets());
    let requests = &recording.requests[from..];
    requests.iter().map(|r| Sent::new(&r.method, &r.target, &r.body)).collect()
}

/// Writes `pieces` one after another on a new client connection and reads `n` replies.
async fn exchange(addr: SocketAddr, pieces: &[&[u8]], n: usize) -> Vec<(u16, Vec<u8>)> {
    let mut c = RawClient::connect(addr).await;
    for piece in pieces {
        assert!(c.send(piece).await, "Tether stopped reading");
        // Pacing, not a wait for a condition: a gap lets each piece arrive in a read of its
        // own; nothing asserted depends on it.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    answers(&c.replies(n).await)
}

// === 1. Pipelining ===

/// Ten requests for `/p0`..`/p9`: `/p3` a POST whose `Content-Length` body is itself shaped
/// like a request, `/p6` a POST with a chunked body, the rest GETs. The bytes, and each
/// request as the server must receive it.
fn ten_requests() -> (Vec<u8>, Vec<Sent>) {
    let (mut bytes, mut sent) = (Vec::new(), Vec::new());
    for i in 0..10 {
        let target = format!("/p{i}");
        let head = |method: &str, framing: &str| {
            format!("{method} {target} HTTP/1.1\r\nHost: x\r\n{framing}\r\n").into_bytes()
        };
        let (method, body): (&str, &[u8]) = match i {
            3 => {
                let body = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
                bytes.extend(head("POST", &format!("Content-Length: {}\r\n", body.len())));
                bytes.extend_from_slice(body);
                ("POST", body)
            }
            6 => {
                bytes.extend(head("POST", "Transfer-Encoding: chunked\r\n"));
                bytes.extend_from_slice(b"7\r\nchunked\r\n6\r\n-body!\r\n0\r\n\r\n");
                ("POST", b"chunked-body!")
            }
            _ => {
                bytes.extend(head("GET", ""));
                ("GET", b"")
            }
        };
        sent.push(Sent::new(method, &target, body));
    }
    (bytes, sent)
}

/// Catches an engine that answers pipelined requests out of order, loses, merges or repeats
/// one, or misframes a body (the request-shaped body would reach the server as a request).
#[tokio::test]
async fn ten_pipelined_requests_in_one_write_are_answered_in_order_and_arrive_whole() {
    let rec = RecorderServer::start("rec").unwrap();
    let t = behind(rec.addr()).await;
    let (bytes, sent) = ten_requests();
    let got = exchange(t.listener_addr("web"), &[&bytes], sent.len()).await;
    let want: Vec<(u16, Vec<u8>)> = sent.iter().map(Sent::answer).collect();
    assert_eq!(got, want, "answers, in request order");
    assert_eq!(forwarded(&rec, 0, sent.len()).await, sent, "what the server received");
}

// === 2. Splitting ===

/// Five pipelined requests exercising every framing, chunk extensions and a trailer, with
/// bodies holding CRLFs and request-shaped text, and what the server must receive.
fn framing_mix() -> (Vec<u8>, Vec<Sent>) {
    let bytes = b"GET /a?x=1 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n\
        POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello\r\n\r\nyo\
        POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
        5;ext=1\r\nhello\r\n6;name=\"v; x\"\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n\
        PUT /d HTTP/1.1\r\nHost: x\r\nContent-Length: 19\r\n\r\nGET /e HTTP/1.1\r\n\r\n\
        DELETE /e HTTP/1.1\r\nHost: x\r\n\r\n";
    let sent = vec![
        Sent::new("GET", "/a?x=1", b""),
        Sent::new("POST", "/b", b"hello\r\n\r\nyo"),
        Sent::new("POST", "/c", b"hello world"),
        Sent::new("PUT", "/d", b"GET /e HTTP/1.1\r\n\r\n"),
        Sent::new("DELETE", "/e", b""),
    ];
    (bytes.to_vec(), sent)
}

/// 1 to 8 distinct cut points in `1..len`, in order, from a splitmix64 stream seeded by
/// `seed`: deterministic, so a failing case can be replayed by its number.
fn cut_points(seed: u64, len: usize) -> Vec<usize> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    // Both bounds are small (len is a few hundred), so the casts cannot truncate.
    let count = 1 + (next() % 8) as usize;
    let mut cuts: Vec<usize> =
        (0..count).map(|_| 1 + (next() % (len as u64 - 1)) as usize).collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// `bytes` cut at `cuts`.
fn split_at<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let bounds: Vec<usize> =
        [0].into_iter().chain(cuts.iter().copied()).chain([bytes.len()]).collect();
    bounds.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
}

/// Catches an engine (or client codec) whose parse depends on where reads end: a head, a
/// chunk-size line, an extension, a trailer or a CRLF split across writes must change nothing.
#[tokio::test]
async fn a_pipelined_stream_split_anywhere_gives_the_same_answers_and_requests_as_unsplit() {
    let rec = RecorderServer::start("rec").unwrap();
    let t = behind(rec.addr()).await;
    let addr = t.listener_addr("web");
    let (bytes, sent) = framing_mix();
    let n = sent.len();
    let whole_answers = exchange(addr, &[&bytes], n).await;
    let want: Vec<(u16, Vec<u8>)> = sent.iter().map(Sent::answer).collect();
    assert_eq!(whole_answers, want, "unsplit answers");
    let whole_requests = forwarded(&rec, 0, n).await;
    assert_eq!(whole_requests, sent, "unsplit, what the server received");
    for case in 0..20 {
        let cuts = cut_points(case, bytes.len());
        let got = exchange(addr, &split_at(&bytes, &cuts), n).await;
        assert_eq!(got, whole_answers, "case {case}, cut at {cuts:?}: answers");
        let requests = forwarded(&rec, n * (1 + case as usize), n).await;
        assert_eq!(requests, whole_requests, "case {case}, cut at {cuts:?}: at the server");
    }
}

// === 3. Connection reuse ===

/// A clean response, kept alive.
const FINE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfine";

/// Answers by path. The server keeps every connection it may keep open, so that an engine
/// sending the next request on it would be seen doing so, not merely fail.
fn reuse_script(path: &str) -> Answer {
    let cut = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789";
    match path {
        "/cut" => Answer::new(cut, Then::HalfClose),
        "/garbage" => Answer::new(tether_testkit::servers::GARBAGE, Then::KeepOpen),
        // The reverse header order of `fault_probe`'s `/both`.
        "/te-then-cl" => Answer::new(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\n",
            Then::KeepOpen,
        ),
        "/reset" => Answer::new(cut, Then::Reset),
        "/until-close" => Answer::new(b"HTTP/1.1 200 OK\r\n\r\nuntil close", Then::HalfClose),
        "/close" => Answer::new(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbye",
            Then::KeepOpen,
        ),
        _ => Answer::new(FINE, Then::KeepOpen),
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
}

/// A [`ScriptedServer`] behind a Tether, and a client connection to the Tether.
struct Rig {
    server: ScriptedServer,
    tether: Tether,
    client: RawClient,
}

impl Rig {
    async fn start(script: fn(&str) -> Answer) -> Self {
        let server = ScriptedServer::start(script).unwrap();
        let tether = behind(server.addr()).await;
        let client = RawClient::connect(tether.listener_addr("web")).await;
        Self { server, tether, client }
    }

    /// Sends `request` and returns the complete reply, if one came. Requests go on one
    /// client connection while Tether keeps it, so that a pool per worker thread is likely
    /// the same one for consecutive requests and reuse would be seen.
    async fn ask(&mut self, request: &[u8]) -> Option<Reply> {
        assert!(self.client.send(request).await, "Tether stopped reading");
        let reply = self.client.replies(1).await.pop();
        if reply.as_ref().is_none_or(Reply::says_close) {
            self.client = RawClient::connect(self.tether.listener_addr("web")).await;
        }
        reply
    }

    /// `GET path`, which must get the server's `200 fine`.
    async fn get_fine(&mut self, path: &str) {
        let got = answers(self.ask(&get(path)).await.as_slice());
        assert_eq!(got, [(200, b"fine".to_vec())], "GET {path}: {:?}", self.server.log());
    }
}

/// Sends `GET bad` then `GET /good` and asserts that `/good` got the server's `200 fine` on
/// a server connection no `bad` came on, and that nothing followed `bad` on its connection.
/// `whole` is the body the client must get for `bad` (a complete 200), `None` when `bad`'s
/// response is broken and must not reach the client as a complete success.
async fn assert_not_reused_after(bad: &str, whole: Option<&[u8]>) {
    let mut rig = Rig::start(reuse_script).await;
    let reply = rig.ask(&get(bad)).await;
    match (whole, &reply) {
        (Some(body), _) => assert_eq!(answers(reply.as_slice()), [(200, body.to_vec())], "{bad}"),
        (None, Some(r)) => assert!(r.status >= 500, "{bad}: passed on as complete: {r:?}"),
        (None, None) => {}
    }
    rig.get_fine("/good").await;
    let log = rig.server.log();
    let (bad_on, good_on) = (rig.server.connections_of(bad), rig.server.connections_of("/good"));
    assert!(!bad_on.is_empty() && good_on.len() == 1, "{log:?}");
    assert!(!bad_on.contains(&good_on[0]), "/good came on {bad}'s connection: {log:?}");
    for i in bad_on {
        assert_eq!(log[i].paths.last().map(String::as_str), Some(bad), "reused: {log:?}");
    }
}

/// Catches a rig that could not tell reuse from non-reuse: clean responses must leave the
/// connection pooled (the control for the tests below). Of four sequential requests at
/// least one reuses a connection (a race with the pool is tolerated).
#[tokio::test]
async fn sequential_clean_requests_reuse_a_server_connection() {
    let mut rig = Rig::start(reuse_script).await;
    for i in 0..4 {
        rig.get_fine(&format!("/fine/{i}")).await;
    }
    let log = rig.server.log();
    assert!(log.len() < 4, "no server connection was reused: {log:?}");
}

/// Catches an engine that pools a connection whose response ended short (Content-Length
/// 1000, 10 bytes, FIN): the rest of the stream is not the next response.
#[tokio::test]
async fn a_server_connection_is_not_reused_after_a_response_cut_short() {
    assert_not_reused_after("/cut", None).await;
}

/// Catches an engine that keeps a connection after an unparsable response (the server here
/// would happily answer the next request on it).
#[tokio::test]
async fn a_server_connection_is_not_reused_after_a_malformed_response() {
    assert_not_reused_after("/garbage", None).await;
}

/// Catches an engine that pools a connection after `Transfer-Encoding` and `Content-Length`
/// together (listed in that order): where one message ended is in doubt.
#[tokio::test]
async fn a_server_connection_is_not_reused_after_doubtful_framing() {
    assert_not_reused_after("/te-then-cl", Some(b"hello")).await;
}

/// Catches an engine that pools a connection reset in the middle of a body, or turns the
/// reset into an error for the next client.
#[tokio::test]
async fn a_server_connection_is_not_reused_after_a_reset_mid_body() {
    assert_not_reused_after("/reset", None).await;
}

/// Catches an engine that takes a response without length as empty and pools the connection
/// (its body would become the next response), or cuts the body short.
#[tokio::test]
async fn a_server_connection_is_not_reused_after_a_response_delimited_by_close() {
    assert_not_reused_after("/until-close", Some(b"until close")).await;
}

/// Catches an engine that ignores `Connection: close` and sends the next request on that
/// connection (the server here leaves it open: only the header keeps the engine off it).
#[tokio::test]
async fn after_connection_close_from_the_server_the_next_request_goes_on_a_new_connection() {
    assert_not_reused_after("/close", Some(b"bye")).await;
}

// === 4. Stale pooled connections ===

/// A clean keep-alive response, after which the server closes the connection at once.
fn answer_once(_path: &str) -> Answer {
    Answer::new(FINE, Then::Close)
}

/// Catches an engine that hands a client a 502 for a pooled connection the server closed
/// while it was idle, when the request (no body) could go on a fresh connection.
#[tokio::test]
async fn a_pooled_connection_the_server_closed_while_idle_does_not_fail_the_next_request() {
    let mut rig = Rig::start(answer_once).await;
    for round in 0..5 {
        rig.get_fine(&format!("/round/{round}")).await;
        let closed = wait_until(DEADLINE, || rig.server.log().iter().all(|conn| conn.ended));
        assert!(closed.await, "round {round}: the server never closed: {:?}", rig.server.log());
    }
    let log = rig.server.log();
    assert!(log.iter().all(|conn| conn.paths.len() == 1), "{log:?}");
}

/// Answers `/warm` and keeps the connection; closes without a word after anything else.
fn close_unanswered(path: &str) -> Answer {
    match path {
        "/warm" => Answer::new(FINE, Then::KeepOpen),
        _ => Answer::new(b"", Then::Close),
    }
}

/// Catches an engine that sends a non-idempotent request again when its (pooled) server
/// connection closes without an answer: the server may have acted on it already.
#[tokio::test]
async fn a_post_whose_pooled_connection_closes_unanswered_is_not_sent_twice() {
    let mut rig = Rig::start(close_unanswered).await;
    for round in 0..3 {
        rig.get_fine("/warm").await;
        let post = format!("POST /post/{round} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        let reply = rig.ask(post.as_bytes()).await;
        assert!(reply.as_ref().is_none_or(|r| r.status >= 500), "round {round}: {reply:?}");
    }
    let log = rig.server.log();
    let pooled = |conn: &ScriptedConnection| conn.paths.first().is_some_and(|p| p == "/warm");
    let reused = log.iter().filter(|conn| pooled(conn) && conn.paths.len() > 1).count();
    assert!(reused > 0, "no POST went on a pooled connection, nothing was tested: {log:?}");
    for round in 0..3 {
        let post = format!("/post/{round}");
        let sent = log.iter().flat_map(|conn| &conn.paths).filter(|p| **p == post).count();
        assert_eq!(sent, 1, "POST {post} sent {sent} times: {log:?}");
    }
}
