use http::{Response, StatusCode};

use super::*;
use crate::upstream::h1::ServerLines;

fn parts(status: u16, headers: &[(&str, &str)]) -> Parts {
    let mut resp = Response::new(());
    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
    for (n, v) in headers {
        resp.headers_mut().append(
            http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    resp.into_parts().0
}

/// A case: name, status, headers, the body's exact size, what was asked, and the answer.
type Row<'a> = (&'a str, u16, &'a [(&'a str, &'a str)], Option<u64>, Asked, ReplyFraming, BodyOut);

const GET: Asked = Asked { head: false, http10: false, close: false, upgrade: false };

#[test]
fn the_framing_is_chosen_from_status_method_length_and_version() {
    use BodyOut as B;
    use ReplyFraming as R;
    let head = Asked { head: true, ..GET };
    let old = Asked { http10: true, ..GET };
    let upgrade = Asked { upgrade: true, ..GET };
    let cl: &[(&str, &str)] = &[("content-length", "5")];
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("the server's length", 200, cl, None, GET, R::Length(5), B::Length(5)),
        ("the server's length beats the hint", 200, cl, Some(9), GET, R::Length(5), B::Length(5)),
        ("an exact body size", 200, &[], Some(3), GET, R::Length(3), B::Length(3)),
        ("unknown length: chunked", 200, &[], None, GET, R::Chunked, B::Chunked),
        ("unknown length, HTTP/1.0: until close", 200, &[], None, old, R::Unframed, B::UntilClose),
        ("HEAD keeps the length, sends no body", 200, cl, None, head, R::Length(5), B::None),
        ("HEAD without a length", 200, &[], Some(0), head, R::Unframed, B::None),
        ("204 has no body and no length", 204, cl, Some(0), GET, R::Unframed, B::None),
        ("304 keeps the length", 304, cl, None, GET, R::Length(5), B::None),
        ("101 to an upgrade request switches", 101, &[], Some(0), upgrade, R::Upgrade, B::Switch),
        ("101 to anything else is only interim", 101, &[], Some(0), GET, R::Unframed, B::None),
        ("a length that is not one is ignored", 200, &[("content-length", "x")], None, GET, R::Chunked, B::Chunked),
    ];
    for (case, status, headers, exact, asked, reply, body) in rows {
        assert_eq!(plan(&parts(*status, headers), *exact, *asked), (*reply, *body), "{case}");
    }
}

/// A head is written into one allocation: the room reserved before writing always holds it,
/// for the longest status line and every framing Tether adds.
#[test]
fn the_room_reserved_for_a_head_holds_it() {
    let long = "v".repeat(300);
    type Case<'a> = (&'a str, u16, Vec<(&'a str, &'a str)>, ReplyFraming);
    let rows: &[Case] = &[
        ("no headers", 200, vec![], ReplyFraming::Length(u64::MAX)),
        ("the longest reason", 511, vec![("x-a", "1")], ReplyFraming::Length(u64::MAX)),
        ("chunked", 200, vec![("server", "nginx"), ("date", "now")], ReplyFraming::Chunked),
        ("upgrade", 101, vec![("upgrade", "websocket")], ReplyFraming::Upgrade),
        (
            "a long value",
            404,
            vec![("x-long", long.as_str()), ("x-b", "2")],
            ReplyFraming::Unframed,
        ),
    ];
    for (case, status, headers, framing) in rows {
        let p = parts(*status, headers);
        let mut out = Vec::new();
        assert!(head(&mut out, &p, None, *framing, true), "{case}");
        let room = head_room(&p, None);
        assert!(out.len() <= room, "{case}: {} > {room}", out.len());
    }
}

#[test]
fn the_head_drops_the_servers_framing_and_connection_lines() {
    let p = parts(200, &[("content-length", "5"), ("connection", "close"), ("x-a", "1")]);
    let mut out = Vec::new();
    assert!(head(&mut out, &p, None, ReplyFraming::Length(5), true));
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 5\r\nconnection: close\r\n\r\n"
    );
}

#[test]
fn the_servers_lines_go_first_as_it_wrote_them_then_the_maps() {
    let lines = ServerLines::of_response(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nSet-Cookie: a=1\r\nContent-Length: 5\r\nset-cookie: b=2\r\n\r\n",
    );
    let p = parts(200, &[("content-length", "5"), ("x-request-id", "7")]);
    let mut out = Vec::new();
    assert!(head(&mut out, &p, Some(&lines), ReplyFraming::Length(5), false));
    assert_eq!(
        String::from_utf8(out.clone()).unwrap(),
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nx-request-id: 7\r\ncontent-length: 5\r\n\r\n"
    );
    assert!(out.len() <= head_room(&p, Some(&lines)));
}

/// A writer that takes at most `max` bytes per call.
struct Trickle {
    got: Vec<u8>,
    max: usize,
    calls: usize,
}

impl AsyncWrite for Trickle {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = b.len().min(self.max);
        self.got.extend_from_slice(&b[..n]);
        self.calls += 1;
        Poll::Ready(Ok(n))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[test]
fn queued_pieces_are_written_whole_whatever_each_write_takes() {
    for max in [1, 2, 3, 7, 64] {
        let mut io = Trickle { got: Vec::new(), max, calls: 0 };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut out = Out::default();
        out.buf.extend_from_slice(b"HEAD\r\n");
        let mut framing = BodyOut::Chunked;
        out.piece(&mut framing, Bytes::from_static(b"hello"));
        assert!(out.poll_write(&mut io, &mut cx).is_ready());
        out.piece(&mut framing, Bytes::from_static(b"!"));
        assert!(out.poll_write(&mut io, &mut cx).is_ready());
        out.last_chunk();
        assert!(out.poll_write(&mut io, &mut cx).is_ready());
        assert!(out.is_empty());
        assert_eq!(io.got, b"HEAD\r\n5\r\nhello\r\n1\r\n!\r\n0\r\n\r\n", "{max} bytes a write");
    }
    let mut framing = BodyOut::Length(3);
    let mut out = Out::default();
    out.piece(&mut framing, Bytes::from_static(b"abcdef"));
    let mut io = Trickle { got: Vec::new(), max: 100, calls: 0 };
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(out.poll_write(&mut io, &mut cx).is_ready());
    assert_eq!(io.got, b"abc", "cut to the declared length");
    assert_eq!(framing, BodyOut::Length(0));
}

#[test]
fn a_small_piece_leaves_with_its_head_in_one_write_and_a_large_one_beside_it() {
    // (case, framing, piece size, the bytes before and after the piece, writes for it all)
    type Row = (&'static str, BodyOut, usize, &'static [u8], &'static [u8], usize);
    let at_limit = COPIED_PIECE;
    let above = COPIED_PIECE + 1;
    #[rustfmt::skip]
    let rows: [Row; 4] = [
        ("small, length", BodyOut::Length(5), 5, b"HEAD\r\n", b"", 1),
        ("at the limit, chunked", BodyOut::Chunked, at_limit, b"HEAD\r\n800\r\n", b"\r\n", 1),
        ("large, length", BodyOut::Length(above as u64), above, b"HEAD\r\n", b"", 2),
        ("large, chunked", BodyOut::Chunked, above, b"HEAD\r\n801\r\n", b"\r\n", 3),
    ];
    for (case, mut framing, size, before, after, writes) in rows {
        // A writer that takes everything, but one slice a call (the trait's default).
        let mut io = Trickle { got: Vec::new(), max: usize::MAX, calls: 0 };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut out = Out::default();
        out.buf.extend_from_slice(b"HEAD\r\n");
        out.piece(&mut framing, Bytes::from(vec![b'x'; size]));
        assert!(out.poll_write(&mut io, &mut cx).is_ready());
        let want = [before, &vec![b'x'; size][..], after].concat();
        assert!(io.got == want, "{case}: the bytes, in order");
        assert_eq!(io.calls, writes, "{case}");
    }
}

#[test]
fn a_copied_piece_holds_back_the_next_until_it_is_written() {
    // A client that does not read must stop the server's body, not grow the buffer: one
    // piece at a time, copied or not.
    for size in [5, COPIED_PIECE + 1] {
        let mut out = Out::default();
        out.buf.extend_from_slice(b"HEAD\r\n");
        assert!(out.takes_piece(), "a head alone leaves room for the first piece");
        let mut framing = BodyOut::Chunked;
        out.piece(&mut framing, Bytes::from(vec![b'x'; size]));
        assert!(!out.takes_piece(), "{size}-byte piece queued, nothing written");
        let mut io = Trickle { got: Vec::new(), max: usize::MAX, calls: 0 };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(out.poll_write(&mut io, &mut cx).is_ready());
        assert!(out.takes_piece(), "{size}-byte piece written");
    }
}
