//! Request smuggling: hostile framing sent as raw bytes to a real Tether, in front of a
//! [`RecorderServer`] that parses strictly and keeps every byte it receives.
//!
//! The framing policy under test (HTTP/1.1 unless said otherwise):
//!
//! 1. `Transfer-Encoding` appears once, exactly `chunked`; two lines or a list → `400` with
//!    `Connection: close`, then close. A single unknown coding → `501`, then close.
//! 2. `Content-Length` together with `Transfer-Encoding` → `400`, close, nothing forwarded.
//! 3. Differing or invalid `Content-Length` → `400`, close.
//! 4. HTTP/1.0 with `Transfer-Encoding` → `400`; a 1.0 body needs `Content-Length`.
//! 5. Every parse error → `400` with `Connection: close`, then close.
//! 6. Classic CL.TE / TE.CL / TE.TE payloads never get a second request (or the smuggled
//!    prefix) to the upstream.
//! 7. Broken chunked bodies end the connection without a success, never a second request.
//! 8. Bytes after an upgrade the server refused (200, not 101) are HTTP, never a tunnel.
//! 9. A body left unread by an early response is drained or the connection closed; it is
//!    never parsed as requests.
//! 10. Pipelined requests are answered in order.
//! 11. HTTP/2: header values with CR/LF/NUL, connection-specific headers, uppercase names
//!     and bodies disagreeing with `content-length` are rejected and never forwarded as is.
//!
//! Every test ends with [`Rig::settle`]: a fresh request proves Tether still serves, and the
//! recorder must have nothing malformed or left over.

use std::net::SocketAddr;

use tether_testkit::{RecorderServer, Recording, Tether, wait_until};

use crate::support::fixture::{Backend, ServerEntry, config, start};
use crate::support::h1raw::{self, Conversation, RawClient, converse};
use crate::support::h2raw;

/// A [`RecorderServer`] as the only server of backend `app`, behind listener `web`.
struct Rig {
    recorder: RecorderServer,
    tether: Tether,
}

// === impl Rig ===

impl Rig {
    async fn start() -> Self {
        let recorder = RecorderServer::start("rec").unwrap();
        let app = Backend::new().server(ServerEntry::new("rec", recorder.addr()));
        Self { tether: start(config(app)).await, recorder }
    }

    fn addr(&self) -> SocketAddr {
        self.tether.listener_addr("web")
    }

    /// Sends `bytes` on a fresh connection and reads until it closes (or the deadline).
    async fn send(&self, bytes: &[u8]) -> Conversation {
        converse(self.addr(), bytes).await
    }

    /// Proves Tether still serves (a fresh `GET /probe` gets the recorder's 200), waits until
    /// the recorder holds nothing malformed or half-received, and returns its recording
    /// without the probes.
    async fn settle(&self) -> Recording {
        let probe = self.send(b"GET /probe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert_eq!(probe.statuses(), [200], "Tether no longer serves: {}", probe.summary());
        assert_eq!(probe.replies[0].body, b"GET /probe\n");
        wait_until(h1raw::DEADLINE, || self.recorder.recording().problems().is_empty()).await;
        let mut recording = self.recorder.recording();
        recording.requests.retain(|r| r.target != "/probe");
        recording
    }
}

/// Sends each case on its own connection and checks the policy's refusal: exactly one
/// response, its status in `statuses`, carrying `Connection: close`, then the connection
/// closed; and nothing reached the upstream. Every case is tried before failing, so one run
/// reports them all.
async fn assert_refused(rig: &Rig, statuses: &[u16], cases: &[(&str, &[u8])]) {
    let mut failures = Vec::new();
    for (name, bytes) in cases {
        let c = rig.send(bytes).await;
        let refused = matches!(&c.replies[..], [r] if statuses.contains(&r.status) && r.says_close())
            && c.closed
            && c.trailing.is_empty();
        if !refused {
            failures.push(format!("{name}: {}", c.summary()));
        }
    }
    let rec = rig.settle().await;
    if !rec.requests.is_empty() || !rec.truncated.is_empty() {
        let truncated: Vec<&str> = rec.truncated.iter().map(|r| r.target.as_str()).collect();
        failures.push(format!(
            "forwarded to the upstream: complete {:?}, truncated {truncated:?}",
            rec.targets()
        ));
    }
    failures.extend(rec.problems());
    assert!(
        failures.is_empty(),
        "want exactly one {statuses:?} with Connection: close, then close, nothing forwarded:\n{}",
        failures.join("\n")
    );
}

/// Checks a smuggling attempt's effect on the upstream since `before` requests: at most
/// one new request, none for `smuggled` and none with a method other than GET/POST (a
/// desync shows as `GPOST`), nothing malformed or left over. The smuggled bytes may well
/// arrive as the *body* of the one request (TE.CL read as chunked): that is correct framing.
fn smuggling_failures(rec: &Recording, before: usize, smuggled: &str) -> Vec<String> {
    let new = &rec.requests[before.min(rec.requests.len())..];
    let mut failures = rec.problems();
    if new.len() > 1 {
        failures.push(format!("{} requests reached the upstream", new.len()));
    }
    for r in new {
        if r.target == smuggled || !["GET", "POST"].contains(&r.method.as_str()) {
            failures
                .push(format!("smuggled request reached the upstream: {} {}", r.method, r.target));
        }
    }
    failures
}

/// Sends each attempt on its own connection, and checks that the connection closes with no
/// more than one response and nothing smuggled reaches the upstream.
async fn assert_not_smuggled(rig: &Rig, attempts: &[(&str, Vec<u8>)]) {
    let mut failures = Vec::new();
    for (name, bytes) in attempts {
        let before = rig.settle().await.requests.len();
        let c = rig.send(bytes).await;
        if c.replies.len() > 1 || !c.closed {
            failures.push(format!("{name}: {}", c.summary()));
        }
        let rec = rig.settle().await;
        failures.extend(
            smuggling_failures(&rec, before, "/smuggled").iter().map(|f| format!("{name}: {f}")),
        );
    }
    assert!(failures.is_empty(), "smuggling attempts:\n{}", failures.join("\n"));
}

/// The request a smuggling payload tries to slip to the upstream.
const SMUGGLED: &str = "GPOST /smuggled HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";

/// A well-formed request sent after each payload: the victim of a CL.TE desync.
const FOLLOW_UP: &str = "POST /next HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";

/// CL.TE: `Content-Length` covers `0\r\n\r\nG`, chunked ends before the `G`, which would
/// prefix the next request (`GPOST /next`). `te` is the Transfer-Encoding line(s) to use.
fn cl_te(te: &str) -> Vec<u8> {
    format!(
        "POST /cl-te HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n{te}\r\n\r\n0\r\n\r\nG{FOLLOW_UP}"
    )
    .into_bytes()
}

/// TE.CL: `Content-Length: 4` covers only the chunk size line; the chunk holds a whole
/// request that a length-reading parser would take as the next one.
fn te_cl(te: &str) -> Vec<u8> {
    format!(
        "POST /te-cl HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n{te}\r\n\r\n{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n",
        SMUGGLED.len()
    )
    .into_bytes()
}

// === 1. Transfer-Encoding ===

#[tokio::test]
async fn transfer_encoding_twice_is_refused_with_400_and_close() {
    let rig = Rig::start().await;
    let cases: &[(&str, &[u8])] = &[
        (
            "chunked twice",
            b"POST /te-twice HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
              Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "cow then chunked",
            b"POST /te-cow-chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: cow\r\n\
              Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
    ];
    assert_refused(&rig, &[400], cases).await;
}

#[tokio::test]
async fn transfer_encoding_lists_are_refused_with_400_and_close() {
    let rig = Rig::start().await;
    let cases: &[(&str, &[u8])] = &[
        (
            "chunked, chunked",
            b"POST /te-list HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "gzip, chunked",
            b"POST /te-gzip-chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\n",
        ),
    ];
    assert_refused(&rig, &[400], cases).await;
}

#[tokio::test]
async fn an_unknown_transfer_coding_is_refused_with_501_and_close() {
    let rig = Rig::start().await;
    let cases: &[(&str, &[u8])] = &[
        ("gzip", b"POST /te-gzip HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nhello"),
        (
            "identity",
            b"POST /te-identity HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\nhello",
        ),
        (
            "pipelined behind a good request",
            b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n\
              POST /te-br HTTP/1.1\r\nHost: x\r\ntransfer-encoding: br\r\n\r\nhello",
        ),
    ];
    assert_refused(&rig, &[501], &cases[..2]).await;
    // The good request first is answered and forwarded; the bad one is refused after it.
    let c = rig.send(cases[2].1).await;
    assert_eq!(c.statuses(), [200, 501], "{}", c.summary());
    assert!(c.replies[1].says_close() && c.closed, "{}", c.summary());
    let rec = rig.settle().await;
    assert_eq!(rec.targets(), ["/first"], "only the good request reaches the upstream");
}

// === 2. Content-Length with Transfer-Encoding ===

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused_and_nothing_forwarded() {
    // hyper drops the Content-Length of such a request before Tether sees it; Tether's head
    // scan (tether_core::framing) sees it on the wire, so the request is still refused.
    let rig = Rig::start().await;
    let cases: &[(&str, &[u8])] = &[
        (
            "CL then TE",
            b"POST /cl-then-te HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\
              Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
              GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        (
            "TE then CL",
            b"POST /te-then-cl HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
              Content-Length: 10\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
              GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        (
            "after a well-formed request on the same connection",
            b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n\
              POST /te-then-cl HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
              Content-Length: 10\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
    ];
    let mut failures = Vec::new();
    for (name, bytes) in &cases[..2] {
        let c = rig.send(bytes).await;
        let refused =
            matches!(&c.replies[..], [r] if r.status == 400 && r.says_close()) && c.closed;
        if !refused {
            failures.push(format!("{name}: {}", c.summary()));
        }
    }
    let (name, bytes) = cases[2];
    let c = rig.send(bytes).await;
    if c.statuses() != [200, 400] || !c.replies[1].says_close() || !c.closed {
        failures.push(format!("{name}: {}", c.summary()));
    }
    let rec = rig.settle().await;
    failures.extend(rec.problems());
    assert_eq!(
        rec.targets(),
        ["/first"],
        "only the well-formed request is forwarded: {failures:?}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// === 3. Content-Length values ===

#[tokio::test]
async fn differing_content_lengths_are_refused_with_400_and_close() {
    let rig = Rig::start().await;
    let cases: &[(&str, &[u8])] = &[
        (
            "two lines",
            b"POST /cl-lines HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n\
              hello!",
        ),
        ("one list", b"POST /cl-list HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!"),
    ];
    assert_refused(&rig, &[400], cases).await;
}

#[tokio::test]
async fn invalid_content_length_values_are_refused_with_400_and_close() {
    let rig = Rig::start().await;
    let cases: &[(&str, &[u8])] = &[
        ("-1", b"POST /cl-neg HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\nhello"),
        ("+5", b"POST /cl-plus HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello"),
        ("0x10", b"POST /cl-hex HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\nhello"),
        (" 5 5", b"POST /cl-space HTTP/1.1\r\nHost: x\r\nContent-Length:  5 5\r\n\r\nhello"),
    ];
    assert_refused(&rig, &[400], cases).await;
}

// === 4. HTTP/1.0 ===

#[tokio::test]
async fn http10_with_transfer_encoding_is_refused_with_400_and_close() {
    let rig = Rig::start().await;
    let cases: &[(&str, &[u8])] = &[(
        "1.0 chunked",
        b"POST /ten-te HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n",
    )];
    assert_refused(&rig, &[400], cases).await;
}

#[tokio::test]
async fn an_http10_body_without_content_length_never_becomes_a_request() {
    let rig = Rig::start().await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let attempts = [
        ("1.0", format!("POST /ten HTTP/1.0\r\nHost: x\r\n\r\n{smuggled}").into_bytes()),
        (
            "1.0 keep-alive",
            format!("POST /ten HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n{smuggled}")
                .into_bytes(),
        ),
    ];
    assert_not_smuggled(&rig, &attempts).await;
}

// === 5. Parse errors ===

#[tokio::test]
async fn a_bad_request_line_is_refused_with_400_and_close() {
    let rig = Rig::start().await;
    let cases: &[(&str, &[u8])] = &[
        ("two spaces", b"GET  /rl HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("extra token", b"GET /rl HTTP/1.1 extra\r\nHost: x\r\n\r\n"),
        ("bad method", b"G(T /rl HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("bad version", b"GET /rl HTTP/9.9\r\nHost: x\r\n\r\n"),
        ("no version", b"GET /rl\r\nHost: x\r\n\r\n"),
        ("space in target", b"GET /r l HTTP/1.1\r\nHost: x\r\n\r\n"),
    ];
    assert_refused(&rig, &[400], cases).await;
}

#[tokio::test]
async fn an_obs_fold_continuation_is_refused_with_400_and_close() {
    let rig = Rig::start().await;
    let cases: &[(&str, &[u8])] = &[
        ("space", b"GET /fold HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n"),
        ("tab", b"GET /fold HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n"),
        (
            "folded TE",
            b"POST /fold HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-A: a\r\n \
              Transfer-Encoding: chunked\r\n\r\nhello",
        ),
    ];
    assert_refused(&rig, &[400], cases).await;
}

#[tokio::test]
async fn a_bare_lf_in_a_header_value_ends_the_line_for_tether_and_the_server_alike() {
    // RFC 9112 §2.2 lets a recipient take a bare LF as a line end, and hyper does. Tether
    // forwards every header with CRLF, so the server reads the same two headers Tether read:
    // no disagreement is possible.
    let rig = Rig::start().await;
    let c = rig
        .send(
            b"GET /lf HTTP/1.1\r\nHost: x\r\nX-A: a\nX-Injected: yes\r\nConnection: close\r\n\r\n",
        )
        .await;
    assert_eq!(c.statuses(), [200], "{}", c.summary());
    let rec = rig.settle().await;
    assert!(rec.problems().is_empty(), "{:?}", rec.problems());
    assert_eq!(rec.targets(), ["/lf"]);
    let r = &rec.requests[0];
    assert_eq!(r.header_values("x-a"), [b"a".to_vec()]);
    assert_eq!(r.header_values("x-injected"), [b"yes".to_vec()]);
    let raw = &rec.connections[r.connection].raw;
    assert!(!raw.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'), "a bare LF was forwarded");
}

#[tokio::test]
async fn a_bare_cr_in_a_header_value_is_refused_with_400_and_close() {
    let rig = Rig::start().await;
    let cases: &[(&str, &[u8])] =
        &[("bare CR", b"GET /cr HTTP/1.1\r\nHost: x\r\nX-A: a\rX-Injected: yes\r\n\r\n")];
    assert_refused(&rig, &[400], cases).await;
}

#[tokio::test]
async fn a_nul_in_a_header_is_refused_with_400_and_close() {
    let rig = Rig::start().await;
    let cases: &[(&str, &[u8])] = &[
        ("in value", b"GET /nul HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n"),
        ("in name", b"GET /nul HTTP/1.1\r\nHost: x\r\nX\0A: b\r\n\r\n"),
    ];
    assert_refused(&rig, &[400], cases).await;
}

#[tokio::test]
async fn whitespace_before_the_colon_is_refused_with_400_and_close() {
    let rig = Rig::start().await;
    let cases: &[(&str, &[u8])] = &[
        ("space", b"GET /colon HTTP/1.1\r\nHost : x\r\n\r\n"),
        ("tab", b"GET /colon HTTP/1.1\r\nHost: x\r\nX-A\t: b\r\n\r\n"),
    ];
    assert_refused(&rig, &[400], cases).await;
}

#[tokio::test]
async fn invalid_header_name_characters_are_refused_with_400_and_close() {
    let rig = Rig::start().await;
    let cases: &[(&str, &[u8])] = &[
        ("(", b"GET /name HTTP/1.1\r\nHost: x\r\nX(A): b\r\n\r\n"),
        ("@", b"GET /name HTTP/1.1\r\nHost: x\r\nX@A: b\r\n\r\n"),
        ("/", b"GET /name HTTP/1.1\r\nHost: x\r\nX/A: b\r\n\r\n"),
        ("space", b"GET /name HTTP/1.1\r\nHost: x\r\nX A: b\r\n\r\n"),
        ("empty", b"GET /name HTTP/1.1\r\nHost: x\r\n: b\r\n\r\n"),
        ("no colon", b"GET /name HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"),
    ];
    assert_refused(&rig, &[400], cases).await;
}

#[tokio::test]
async fn a_request_without_host_keeps_the_connection_in_sync() {
    // hyper accepts an HTTP/1.1 request without Host (RFC 9112 §3.2 would have a 400), and
    // the upstream then gets its own address as Host (hyper's client fills it in from the
    // URI). Either answer is allowed here; what must hold is framing: one request each,
    // exactly one Host upstream.
    let rig = Rig::start().await;
    let c = rig
        .send(
            b"GET /no-host HTTP/1.1\r\n\r\n\
              GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
    let rec = rig.settle().await;
    assert!(rec.problems().is_empty(), "{:?}", rec.problems());
    let refused = matches!(&c.replies[..], [r] if r.status == 400 && r.says_close());
    if refused {
        assert!(rec.requests.is_empty(), "refused, yet forwarded: {:?}", rec.targets());
    } else {
        let bodies: Vec<&[u8]> = c.replies.iter().map(|r| &r.body[..]).collect();
        assert_eq!(bodies, [&b"GET /no-host\n"[..], b"GET /after\n"], "{}", c.summary());
        assert_eq!(rec.targets(), ["/no-host", "/after"]);
        assert!(rec.requests.iter().all(|r| r.header_values("host").len() == 1));
    }
}

#[tokio::test]
async fn two_host_headers_are_refused_with_400_and_close() {
    // Not in the framing list above but the same kind of ambiguity: RFC 9112 §3.2 requires
    // a 400 for more than one Host line. Routing reads one, the upstream may read another.
    let rig = Rig::start().await;
    let cases: &[(&str, &[u8])] =
        &[("two lines", b"GET /two-hosts HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n")];
    assert_refused(&rig, &[400], cases).await;
}

// === 6. Classic desync payloads ===

#[tokio::test]
async fn cl_te_smuggling_never_reaches_the_upstream() {
    let rig = Rig::start().await;
    assert_not_smuggled(&rig, &[("CL.TE", cl_te("Transfer-Encoding: chunked"))]).await;
}

#[tokio::test]
async fn te_cl_smuggling_never_reaches_the_upstream() {
    let rig = Rig::start().await;
    assert_not_smuggled(&rig, &[("TE.CL", te_cl("Transfer-Encoding: chunked"))]).await;
}

/// One TE.TE obfuscation, tried in both CL.TE and TE.CL shape.
async fn assert_obfuscation_not_smuggled(te: &str) {
    let rig = Rig::start().await;
    assert_not_smuggled(&rig, &[("CL.TE", cl_te(te)), ("TE.CL", te_cl(te))]).await;
}

#[tokio::test]
async fn te_xchunked_never_smuggles() {
    assert_obfuscation_not_smuggled("Transfer-Encoding: xchunked").await;
}

#[tokio::test]
async fn te_with_a_space_before_the_colon_never_smuggles() {
    assert_obfuscation_not_smuggled("Transfer-Encoding : chunked").await;
}

#[tokio::test]
async fn te_with_a_tab_before_the_value_never_smuggles() {
    assert_obfuscation_not_smuggled("Transfer-Encoding:\tchunked").await;
}

#[tokio::test]
async fn te_chunked_then_te_cow_never_smuggles() {
    assert_obfuscation_not_smuggled("Transfer-Encoding: chunked\r\nTransfer-encoding: cow").await;
}

// === 7. Broken chunked bodies ===

/// Sends a chunked `POST /chunky` whose body starts with `body`, followed by a request for
/// `/smuggled`: the connection must close without a success, the upstream never sees
/// `/smuggled`, nor anything malformed.
async fn assert_broken_chunks_end_the_connection(cases: &[(&str, &[u8])]) {
    let rig = Rig::start().await;
    let mut failures = Vec::new();
    for (name, body) in cases {
        let before = rig.settle().await.requests.len();
        let mut bytes =
            b"POST /chunky HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        bytes.extend_from_slice(body);
        bytes.extend_from_slice(b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
        let c = rig.send(&bytes).await;
        if !c.closed || c.replies.iter().any(|r| r.status < 300) {
            failures.push(format!("{name}: {}", c.summary()));
        }
        let rec = rig.settle().await;
        failures.extend(
            smuggling_failures(&rec, before, "/smuggled").iter().map(|f| format!("{name}: {f}")),
        );
    }
    assert!(failures.is_empty(), "broken chunked bodies:\n{}", failures.join("\n"));
}

#[tokio::test]
async fn an_invalid_chunk_size_ends_the_connection() {
    assert_broken_chunks_end_the_connection(&[
        ("zz", b"zz\r\nhello\r\n0\r\n\r\n"),
        ("overflow", b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
        ("negative", b"-5\r\nhello\r\n0\r\n\r\n"),
    ])
    .await;
}

#[tokio::test]
async fn a_bare_lf_in_a_chunk_extension_ends_the_connection() {
    assert_broken_chunks_end_the_connection(&[("ext LF", b"5;a=b\nc\r\nhello\r\n0\r\n\r\n")]).await;
}

#[tokio::test]
async fn a_missing_crlf_in_a_chunked_body_ends_the_connection() {
    assert_broken_chunks_end_the_connection(&[
        ("after data", b"5\r\nhelloXX0\r\n\r\n"),
        ("after last chunk", b"5\r\nhello\r\n0\r\n"),
    ])
    .await;
}

// === 8. Refused upgrades ===

const UPGRADE: &[u8] =
    b"GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A masked WebSocket text frame ("Hello", RFC 6455 §5.7): not HTTP.
const WS_FRAME: &[u8] = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";

/// After an upgrade answered 200: the connection is closed or answers `400` to the frame;
/// the upstream saw `targets` and never the frame's bytes.
fn refused_upgrade_failures(c: &Conversation, rec: &Recording, targets: &[&str]) -> Vec<String> {
    let mut failures = rec.problems();
    if rec.targets() != targets {
        failures.push(format!("upstream saw {:?}, want {targets:?}", rec.targets()));
    }
    if rec.raw_contains(&WS_FRAME[2..]) {
        failures.push("the WebSocket frame was tunnelled to the upstream".into());
    }
    if c.replies.iter().any(|r| r.status != 400) || !c.closed {
        failures.push(format!("after the 200: {}", c.summary()));
    }
    failures
}

#[tokio::test]
async fn bytes_pipelined_after_a_refused_upgrade_are_not_tunnelled() {
    let rig = Rig::start().await;
    let mut client = RawClient::connect(rig.addr()).await;
    client.send(&[UPGRADE, WS_FRAME].concat()).await;
    let first = client.replies(1).await;
    assert_eq!(first.iter().map(|r| r.status).collect::<Vec<_>>(), [200], "the recorder's 200");
    assert_eq!(first[0].body, b"GET /upgrade\n");
    let c = client.finish().await;
    let rec = rig.settle().await;
    let failures = refused_upgrade_failures(&c, &rec, &["/upgrade"]);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn bytes_sent_after_a_refused_upgrade_are_http_not_a_tunnel() {
    let rig = Rig::start().await;
    let mut client = RawClient::connect(rig.addr()).await;
    client.send(UPGRADE).await;
    let first = client.replies(1).await;
    assert_eq!(first.iter().map(|r| r.status).collect::<Vec<_>>(), [200], "the recorder's 200");
    client.send(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let second = client.replies(1).await;
    assert_eq!(
        second.iter().map(|r| &r.body[..]).collect::<Vec<_>>(),
        [b"GET /after\n"],
        "the connection still speaks HTTP"
    );
    client.send(WS_FRAME).await;
    let c = client.finish().await;
    let rec = rig.settle().await;
    let failures = refused_upgrade_failures(&c, &rec, &["/upgrade", "/after"]);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// === 9. Early responses ===

/// A body of `len` bytes made of requests for `/smuggled`, cut wherever `len` falls.
fn request_shaped_body(len: usize) -> Vec<u8> {
    b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n".iter().copied().cycle().take(len).collect()
}

/// After an early answer to `POST /early`: either `/second` is answered correctly or the
/// connection closed; the body never reached the upstream as requests.
fn early_failures(c: &Conversation, rec: &Recording) -> Vec<String> {
    let mut failures = rec.problems();
    let answered = matches!(&c.replies[..], [r] if r.status == 200 && r.body == b"GET /second\n");
    if !(answered || (c.replies.is_empty() && c.closed)) {
        failures.push(format!("after the early answer: {}", c.summary()));
    }
    if rec.targets().iter().any(|t| !["/early", "/second"].contains(t)) {
        failures.push(format!("the unread body became requests: {:?}", rec.targets()));
    }
    failures
}

#[tokio::test]
async fn a_body_left_unread_by_an_early_response_never_becomes_requests() {
    let rig = Rig::start().await;
    let len = 256 * 1024;
    let body = request_shaped_body(len);
    let mut client = RawClient::connect(rig.addr()).await;
    let head = format!("POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n");
    client.send(&[head.as_bytes(), &body[..8 * 1024]].concat()).await;
    let early = client.replies(1).await;
    assert_eq!(early.iter().map(|r| &r.body[..]).collect::<Vec<_>>(), [b"POST /early\n"]);
    let second = b"GET /second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    client.send(&[&body[8 * 1024..], second].concat()).await;
    let c = client.finish().await;
    let rec = rig.settle().await;
    let failures = early_failures(&c, &rec);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn a_request_pipelined_after_an_early_answered_body_is_answered_or_closed() {
    let rig = Rig::start().await;
    let len = 64 * 1024;
    let mut bytes =
        format!("POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n").into_bytes();
    bytes.extend(request_shaped_body(len));
    bytes.extend_from_slice(b"GET /second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut c = rig.send(&bytes).await;
    assert_eq!(
        c.replies.first().map(|r| &r.body[..]),
        Some(&b"POST /early\n"[..]),
        "{}",
        c.summary()
    );
    c.replies.remove(0);
    let rec = rig.settle().await;
    let failures = early_failures(&c, &rec);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// === 10. Pipelining ===

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let rig = Rig::start().await;
    let mut client = RawClient::connect(rig.addr()).await;
    client
        .send(
            b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n\
              POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        )
        .await;
    let replies = client.replies(2).await;
    let bodies: Vec<&[u8]> = replies.iter().map(|r| &r.body[..]).collect();
    assert_eq!(bodies, [&b"GET /one\n"[..], b"POST /two\n"]);
    assert!(replies.iter().all(|r| r.status == 200 && !r.says_close()));
    drop(client);
    let rec = rig.settle().await;
    assert!(rec.problems().is_empty(), "{:?}", rec.problems());
    assert_eq!(rec.targets(), ["/one", "/two"]);
    assert_eq!(rec.requests[1].body, b"hello");
}

// === 11. HTTP/2 ===

/// Sends each request (HEADERS, then `data` if any) on its own h2c connection; every one
/// must be rejected (reset, connection error, close or 4xx) and nothing forwarded.
async fn assert_h2_rejected(cases: &[(&str, Vec<u8>)]) {
    let rig = Rig::start().await;
    let mut failures = Vec::new();
    for (name, frames) in cases {
        let outcome = h2raw::exchange(rig.addr(), frames).await;
        if !outcome.is_rejection() {
            failures.push(format!("{name}: {outcome:?}"));
        }
    }
    let rec = rig.settle().await;
    if !rec.requests.is_empty() || !rec.truncated.is_empty() {
        failures.push(format!("forwarded: {:?} / truncated {:?}", rec.requests, rec.truncated));
    }
    failures.extend(rec.problems());
    assert!(failures.is_empty(), "h2 requests not rejected:\n{}", failures.join("\n"));
}

fn h2_get_with(name: &[u8], value: &[u8]) -> Vec<u8> {
    h2raw::headers(1, &h2raw::request("GET", "/h2bad", &[(name, value)]), true)
}

#[tokio::test]
async fn h2_well_formed_requests_are_forwarded() {
    let rig = Rig::start().await;
    let get = h2raw::headers(1, &h2raw::request("GET", "/h2get", &[]), true);
    assert_eq!(h2raw::exchange(rig.addr(), &get).await, h2raw::Outcome::Response(Some(200)));
    let post_fields = h2raw::request("POST", "/h2post", &[(b"content-length", b"5")]);
    let post = [h2raw::headers(1, &post_fields, false), h2raw::data(1, b"hello", true)].concat();
    assert_eq!(h2raw::exchange(rig.addr(), &post).await, h2raw::Outcome::Response(Some(200)));
    let rec = rig.settle().await;
    assert!(rec.problems().is_empty(), "{:?}", rec.problems());
    assert_eq!(rec.targets(), ["/h2get", "/h2post"]);
    assert_eq!(rec.requests[1].body, b"hello");
}

#[tokio::test]
async fn h2_header_values_with_cr_lf_or_nul_are_rejected() {
    assert_h2_rejected(&[
        ("CR", h2_get_with(b"x-a", b"a\rb")),
        ("LF", h2_get_with(b"x-a", b"a\nb")),
        ("CRLF injection", h2_get_with(b"x-a", b"a\r\nx-injected: yes")),
        ("NUL", h2_get_with(b"x-a", b"a\0b")),
    ])
    .await;
}

#[tokio::test]
async fn h2_connection_specific_headers_are_rejected() {
    assert_h2_rejected(&[
        ("connection", h2_get_with(b"connection", b"keep-alive")),
        ("transfer-encoding", h2_get_with(b"transfer-encoding", b"chunked")),
        ("te", h2_get_with(b"te", b"gzip")),
        ("upgrade", h2_get_with(b"upgrade", b"websocket")),
        ("keep-alive", h2_get_with(b"keep-alive", b"timeout=5")),
    ])
    .await;
}

#[tokio::test]
async fn h2_uppercase_header_names_are_rejected() {
    assert_h2_rejected(&[
        ("X-Upper", h2_get_with(b"X-Upper", b"a")),
        ("Content-Length", h2_get_with(b"Content-Length", b"0")),
    ])
    .await;
}

/// A POST to `/cl` declaring `content-length: 10` with `sent` bytes of DATA, then
/// END_STREAM: rejected, and no complete request for it ever reaches the upstream (which
/// could only happen with a body other than the 10 bytes declared).
async fn assert_h2_length_mismatch_rejected(sent: usize) {
    let rig = Rig::start().await;
    let fields = h2raw::request("POST", "/cl", &[(b"content-length", b"10")]);
    let frames =
        [h2raw::headers(1, &fields, false), h2raw::data(1, &vec![b'x'; sent], true)].concat();
    let outcome = h2raw::exchange(rig.addr(), &frames).await;
    let rec = rig.settle().await;
    assert!(outcome.is_rejection(), "{sent} bytes for content-length 10: {outcome:?}");
    assert!(rec.problems().is_empty(), "{:?}", rec.problems());
    assert!(rec.requests.is_empty(), "completed at the upstream: {:?}", rec.requests);
}

#[tokio::test]
async fn h2_body_shorter_than_content_length_is_rejected() {
    assert_h2_length_mismatch_rejected(5).await;
}

#[tokio::test]
async fn h2_body_longer_than_content_length_is_rejected() {
    assert_h2_length_mismatch_rejected(15).await;
}
