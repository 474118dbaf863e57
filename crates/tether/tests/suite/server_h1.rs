//! Tether's own HTTP/1.1 server, through the real binary: what hyper's server used to do for
//! Tether and the connection's loop (`server::h1`) does now — `Expect: 100-continue`, HTTP/1.0
//! connections, and request bodies that end exactly where their framing says, so the bytes
//! after them are the next request.

use serde_json::Value;

use crate::support::fixture::*;
use crate::support::h1raw::{RawClient, converse};

/// The echo server's account of a request: its JSON body.
fn echoed(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(body)))
}

#[tokio::test]
async fn expect_100_continue_gets_100_when_the_body_is_wanted_then_the_answer() {
    let servers = echo_servers(1);
    let t = start(config(app(&servers))).await;
    let mut c = RawClient::connect(t.listener_addr("web")).await;
    let head = b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n";
    assert!(c.send(head).await);
    // The client waits for the 100 before it sends the body (curl waits a second, then
    // sends anyway): the 100 must come without the body.
    let interim = c.replies(1).await;
    assert_eq!(interim.iter().map(|r| r.status).collect::<Vec<_>>(), [100]);
    assert!(c.send(b"hello").await);
    let answer = c.replies(1).await;
    assert_eq!(answer.len(), 1, "no answer after the body");
    assert_eq!(answer[0].status, 200);
    assert_eq!(echoed(&answer[0].body)["body_bytes"], 5);
}

#[tokio::test]
async fn expect_100_continue_over_the_body_limit_gets_413_and_no_100() {
    let servers = echo_servers(1);
    let web = web().set("limits.max_body_bytes", 10);
    let t = start(config_on(web, app(&servers))).await;
    let head =
        b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n";
    let got = converse(t.listener_addr("web"), head).await;
    assert_eq!(got.statuses(), [413], "{}", got.summary());
    assert!(got.replies[0].says_close() && got.closed, "{}", got.summary());
    assert_eq!(servers[0].requests(), 0, "nothing reached the server");
}

#[tokio::test]
async fn an_http10_request_is_answered_then_its_connection_closed() {
    let servers = echo_servers(1);
    let t = start(config(app(&servers))).await;
    let request = b"GET /ten HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n";
    let got = converse(t.listener_addr("web"), request).await;
    assert_eq!(got.statuses(), [200], "{}", got.summary());
    assert!(got.closed, "an HTTP/1.0 connection is closed after its response: {}", got.summary());
    assert_eq!(echoed(&got.replies[0].body)["path"], "/ten");
}

/// Bodies framed by length and by chunks, each followed in the same write by the next
/// request: each body is forwarded whole and the bytes after it are read as a request,
/// answered in order on the same connection.
#[tokio::test]
async fn the_request_after_a_body_in_the_same_write_is_the_next_request() {
    let servers = echo_servers(1);
    let t = start(config(app(&servers))).await;
    let stream = [
        &b"POST /one HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"[..],
        b"POST /two HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwxyz\r\n0\r\n\r\n",
        b"GET /three HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    .concat();
    let mut c = RawClient::connect(t.listener_addr("web")).await;
    assert!(c.send(&stream).await);
    let replies = c.replies(3).await;
    let seen: Vec<(u16, Value, Value)> = replies
        .iter()
        .map(|r| {
            let e = echoed(&r.body);
            (r.status, e["path"].clone(), e["body_bytes"].clone())
        })
        .collect();
    let want = [(200, "/one", 3), (200, "/two", 4), (200, "/three", 0)];
    assert_eq!(seen.len(), 3, "{seen:?}");
    for ((status, path, bytes), (ws, wp, wb)) in seen.iter().zip(want) {
        assert_eq!((*status, path.as_str(), bytes.as_u64()), (ws, Some(wp), Some(wb)));
    }
    assert!(replies.iter().all(|r| !r.says_close()), "the connection stays open");
    assert_eq!(servers[0].requests(), 3);
}
