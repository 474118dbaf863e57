//! The test servers behave as documented, seen from a real client over real sockets.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tether_testkit::servers::{GARBAGE, TRUNCATED_RESPONSE, download_byte};
use tether_testkit::{
    CloseMidResponseServer, EchoServer, GarbageServer, HangServer, ResetServer, StatusServer,
    WebSocketEchoServer, wait_until, wait_until_async,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const DEADLINE: Duration = Duration::from_secs(5);

type TestClient = Client<HttpConnector, BoxBody<Bytes, Infallible>>;

fn http1_client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn http2_client() -> TestClient {
    Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

fn empty() -> BoxBody<Bytes, Infallible> {
    Empty::new().boxed()
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

async fn send(client: &TestClient, request: Request<BoxBody<Bytes, Infallible>>) -> Answer {
    let response =
        client.request(request).await.unwrap_or_else(|e| panic!("request failed: {e:?}"));
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body
            .collect()
            .await
            .unwrap_or_else(|e| panic!("reading the body failed: {e:?}"))
            .to_bytes(),
    }
}

async fn get(url: &str) -> Answer {
    let request =
        Request::get(url).body(empty()).unwrap_or_else(|e| panic!("bad url {url:?}: {e}"));
    send(&http1_client(), request).await
}

async fn connect_refused(addr: SocketAddr) -> bool {
    matches!(TcpStream::connect(addr).await, Err(e) if e.kind() == io::ErrorKind::ConnectionRefused)
}

/// Sends a minimal HTTP/1.1 request on a raw connection.
async fn raw_request(addr: SocketAddr) -> TcpStream {
    let connected = TcpStream::connect(addr).await;
    let mut stream = connected.unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let request = b"GET / HTTP/1.1\r\nhost: test\r\n\r\n";
    let written = stream.write_all(request).await;
    written.unwrap_or_else(|e| panic!("write to {addr}: {e}"));
    stream
}

// === echo ===

#[tokio::test]
async fn echo_describes_the_request_and_counts_it() {
    let server = EchoServer::start("alpha").unwrap();
    assert_eq!(server.requests(), 0);

    let request = Request::builder()
        .method(Method::PUT)
        .uri(format!("{}/some/path?a=1&b=2", server.url()))
        .header("x-one", "1")
        .header("x-twice", "first")
        .header("x-twice", "second")
        .body(Full::new(Bytes::from_static(b"hello")).boxed())
        .unwrap();
    let answer = send(&http1_client(), request).await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["x-server"], "alpha");
    assert_eq!(answer.headers["content-type"], "application/json");
    let echo = answer.json();
    assert_eq!(echo["server"], "alpha");
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["path"], "/some/path");
    assert_eq!(echo["query"], "a=1&b=2");
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(echo["headers"]["x-one"], "1");
    assert_eq!(echo["headers"]["x-twice"], serde_json::json!(["first", "second"]));
    assert_eq!(echo["body_bytes"], 5);

    let without_query = get(&format!("{}/", server.url())).await.json();
    assert_eq!(without_query["query"], Value::Null);
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn echo_speaks_http2_with_prior_knowledge() {
    let server = EchoServer::start("h2").unwrap();
    let request = Request::get(format!("{}/x", server.url())).body(empty()).unwrap();

    let answer = send(&http2_client(), request).await;

    assert_eq!(answer.headers["x-server"], "h2");
    assert_eq!(answer.json()["version"], "HTTP/2.0");
}

#[tokio::test]
async fn echo_counts_a_streamed_upload_without_collecting_it() {
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 512; // 32 MiB
    let server = EchoServer::start("upload").unwrap();
    let chunk = Bytes::from(vec![7; CHUNK]);
    let frames = futures_util::stream::iter(
        (0..CHUNKS).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone()))),
    );
    let request = Request::post(format!("{}/upload", server.url()))
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .unwrap();

    let answer = send(&http1_client(), request).await;

    assert_eq!(answer.json()["body_bytes"], (CHUNK * CHUNKS) as u64);
}

#[tokio::test]
async fn download_streams_exactly_the_requested_bytes_of_the_pattern() {
    const LEN: u64 = 10 * 1024 * 1024 + 3; // not a whole number of chunks
    let server = EchoServer::start("dl").unwrap();
    let request =
        Request::get(format!("{}/download?bytes={LEN}", server.url())).body(empty()).unwrap();
    let response = http1_client().request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-length"], LEN.to_string().as_str());
    assert_eq!(response.headers()["x-server"], "dl");

    let mut body = response.into_body();
    let mut offset = 0u64;
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        for byte in data.iter() {
            assert_eq!(*byte, download_byte(offset), "byte at offset {offset}");
            offset += 1;
        }
    }
    assert_eq!(offset, LEN);
}

#[tokio::test]
async fn echo_special_paths_answer_as_documented() {
    let server = EchoServer::start("paths").unwrap();
    let base = server.url();

    let health = get(&format!("{base}/healthz")).await;
    assert_eq!((health.status, &health.body[..]), (StatusCode::OK, &b"ok"[..]));

    let teapot = get(&format!("{base}/status/418")).await;
    assert_eq!(teapot.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(teapot.headers["x-server"], "paths");

    assert_eq!(get(&format!("{base}/status/abc")).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(get(&format!("{base}/download")).await.status, StatusCode::BAD_REQUEST);

    let started = Instant::now();
    let slow = get(&format!("{base}/slow?ms=200")).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(slow.json()["path"], "/slow");

    assert_eq!(server.requests(), 5);
}

#[tokio::test]
async fn a_name_that_is_not_a_header_value_is_refused() {
    let error = EchoServer::start("bad\nname").unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
}

// === stop and restart ===

#[tokio::test]
async fn stop_closes_the_port_and_every_open_connection() {
    let mut server = EchoServer::start("stopped").unwrap();
    let addr = server.addr();
    let mut open = raw_request(addr).await;
    let mut head = [0; 12];
    open.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    server.stop().await;

    assert!(!server.is_running());
    assert!(connect_refused(addr).await, "port still accepts after stop");
    let mut rest = Vec::new();
    // The kept-alive connection is closed: reading ends (EOF or reset) instead of hanging.
    let read = tokio::time::timeout(DEADLINE, open.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "open connection survived stop");
}

#[tokio::test]
async fn a_stopped_server_can_start_again_on_the_same_port() {
    let mut first = EchoServer::start("phoenix").unwrap();
    let addr = first.addr();
    get(&first.url()).await;
    first.stop().await;

    let second = EchoServer::start_on("phoenix", addr).unwrap();

    assert_eq!(second.addr(), addr);
    assert_eq!(get(&second.url()).await.json()["server"], "phoenix");
    assert_eq!(second.requests(), 1, "a new server counts from zero");
}

#[tokio::test]
async fn restart_serves_again_and_keeps_counting() {
    let mut server = StatusServer::start(503).unwrap();
    let addr = server.addr();
    get(&server.url()).await;

    server.restart().await.unwrap();

    assert_eq!(server.addr(), addr);
    assert_eq!(get(&server.url()).await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(server.requests(), 2);
    assert_eq!(server.connections(), 2);
}

#[tokio::test]
async fn dropping_a_server_closes_its_port() {
    let server = HangServer::start().unwrap();
    let addr = server.addr();

    drop(server);

    // Drop only aborts the accept task; the runtime closes the socket right after.
    assert!(wait_until_async(DEADLINE, || connect_refused(addr)).await);
}

// === status ===

#[tokio::test]
async fn status_server_answers_every_request_with_its_status() {
    let server = StatusServer::start(503).unwrap();
    assert_eq!(server.status(), StatusCode::SERVICE_UNAVAILABLE);

    for path in ["/", "/a/b?c"] {
        let answer = get(&format!("{}{path}", server.url())).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(&answer.body[..], b"status 503\n");
    }
    assert_eq!(server.requests(), 2);
    assert_eq!(StatusServer::start(42).unwrap_err().kind(), io::ErrorKind::InvalidInput);
}

// === misbehaving ===

#[tokio::test]
async fn hang_server_accepts_and_reads_but_never_answers() {
    let server = HangServer::start().unwrap();
    let mut stream = raw_request(server.addr()).await;

    let mut byte = [0; 1];
    let read = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut byte)).await;

    assert!(read.is_err(), "hang server answered: {read:?}");
    assert!(wait_until(DEADLINE, || server.requests() == 1).await);
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn close_mid_response_server_sends_a_truncated_body_then_closes() {
    let server = CloseMidResponseServer::start().unwrap();
    let mut stream = raw_request(server.addr()).await;

    let mut received = Vec::new();
    stream.read_to_end(&mut received).await.unwrap();

    assert_eq!(received, TRUNCATED_RESPONSE);
    let via_client = http1_client()
        .request(Request::get(server.url()).body(empty()).unwrap())
        .await
        .unwrap()
        .into_body()
        .collect()
        .await;
    assert!(via_client.is_err(), "a client must see the body cut short");
    assert_eq!(server.connections(), 2);
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn garbage_server_answers_bytes_that_are_not_http() {
    let server = GarbageServer::start().unwrap();
    let mut stream = raw_request(server.addr()).await;

    let mut received = Vec::new();
    stream.read_to_end(&mut received).await.unwrap();

    assert_eq!(received, GARBAGE);
    let via_client =
        http1_client().request(Request::get(server.url()).body(empty()).unwrap()).await;
    assert!(via_client.is_err(), "a client must fail to parse garbage");
}

#[tokio::test]
async fn reset_server_resets_the_connection() {
    let server = ResetServer::start().unwrap();
    let mut stream = raw_request(server.addr()).await;

    let mut received = Vec::new();
    let error = stream.read_to_end(&mut received).await.unwrap_err();

    assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
    assert!(received.is_empty());
    assert_eq!(server.requests(), 1);
}

// === websocket ===

#[tokio::test]
async fn websocket_server_echoes_text_and_binary_messages() {
    let server = WebSocketEchoServer::start().unwrap();
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/chat", server.addr())).await.unwrap();

    for message in [Message::text("hello"), Message::binary(vec![0, 1, 2, 255])] {
        socket.send(message.clone()).await.unwrap();
        let echoed = socket.next().await.unwrap().unwrap();
        assert_eq!(echoed, message);
    }
    socket.close(None).await.unwrap();
    assert_eq!(server.requests(), 1);
}

// === waiting ===

#[tokio::test]
async fn wait_until_returns_as_soon_as_the_condition_holds_or_false_at_the_deadline() {
    let mut calls = 0;
    assert!(
        wait_until(DEADLINE, || {
            calls += 1;
            calls == 3
        })
        .await
    );
    assert_eq!(calls, 3);

    let started = Instant::now();
    assert!(!wait_until(Duration::from_millis(50), || false).await);
    assert!(started.elapsed() >= Duration::from_millis(50));

    let hanging = wait_until_async(Duration::from_millis(50), std::future::pending::<bool>);
    assert!(!hanging.await, "a check pending at the deadline counts as false");
}
