use super::*;
use BodyFraming::{Chunked, Length, NoBody, UntilClose};

/// Parses `head` (an HTTP/1.1 status line is prepended when it does not start with one).
fn parsed(head: &str, to_head: bool) -> Result<Option<ResponseHead>, ResponseError> {
    let text = if head.starts_with("HTTP/") {
        head.to_string()
    } else {
        format!("HTTP/1.1 200 OK\r\n{head}")
    };
    parse_response(text.as_bytes(), &HeadLimits::default(), to_head, &mut Vec::new())
}

/// What the table checks of an accepted head: framing, length dropped, reusable.
type Verdict = Result<(BodyFraming, bool, bool), ResponseError>;

fn verdict(head: &str, to_head: bool) -> Verdict {
    let head = parsed(head, to_head)?.expect("complete head");
    Ok((head.framing, head.length_dropped, head.reusable()))
}

/// docs/security.md, "Response framing", row by row, then RFC 9112 §6.3's no-body cases and
/// the connection's reuse: name, head after the status line, a response to `HEAD`, verdict.
const RESPONSE_FRAMING: &[(&str, &str, bool, Verdict)] = {
    use ResponseError::*;
    &[
        // Row 1: chunked with a length: chunked wins, length dropped, connection retired.
        (
            "chunked wins over a length",
            "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
            Ok((Chunked, true, false)),
        ),
        (
            "chunked wins over a later length",
            "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            false,
            Ok((Chunked, true, false)),
        ),
        (
            "chunked wins over an invalid length",
            "Content-Length: 3x\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
            Ok((Chunked, true, false)),
        ),
        (
            "chunked wins over two lengths",
            "Content-Length: 3\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
            Ok((Chunked, true, false)),
        ),
        // Row 2: any other Transfer-Encoding.
        ("an unknown coding", "Transfer-Encoding: gzip\r\n\r\n", false, Err(TransferEncoding)),
        ("identity", "Transfer-Encoding: identity\r\n\r\n", false, Err(TransferEncoding)),
        (
            "a list ending in chunked",
            "Transfer-Encoding: gzip, chunked\r\n\r\n",
            false,
            Err(TransferEncoding),
        ),
        (
            "chunked twice in a list",
            "Transfer-Encoding: chunked, chunked\r\n\r\n",
            false,
            Err(TransferEncoding),
        ),
        (
            "chunked on two lines",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
            Err(TransferEncoding),
        ),
        ("an empty coding", "Transfer-Encoding: \r\n\r\n", false, Err(TransferEncoding)),
        // Row 3: equal lengths collapse.
        (
            "agreeing lengths in a list",
            "Content-Length: 3, 3\r\n\r\n",
            false,
            Ok((Length(3), false, true)),
        ),
        (
            "agreeing lengths on two lines",
            "Content-Length: 3\r\nContent-Length: 3\r\n\r\n",
            false,
            Ok((Length(3), false, true)),
        ),
        // Row 4: differing or not all digits.
        (
            "differing lengths on two lines",
            "Content-Length: 3\r\nContent-Length: 4\r\n\r\n",
            false,
            Err(ConflictingContentLength),
        ),
        (
            "differing lengths in a list",
            "Content-Length: 3, 4\r\n\r\n",
            false,
            Err(ConflictingContentLength),
        ),
        ("a signed length", "Content-Length: +3\r\n\r\n", false, Err(InvalidContentLength)),
        ("a hex length", "Content-Length: 0x3\r\n\r\n", false, Err(InvalidContentLength)),
        ("an empty length", "Content-Length: \r\n\r\n", false, Err(InvalidContentLength)),
        ("an empty list item", "Content-Length: 3,\r\n\r\n", false, Err(InvalidContentLength)),
        (
            "a length past 64 bits",
            "Content-Length: 18446744073709551616\r\n\r\n",
            false,
            Err(InvalidContentLength),
        ),
        // hyper's refusals the policy keeps.
        (
            "chunked on HTTP/1.0",
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
            Err(TransferEncodingOnHttp10),
        ),
        // The ordinary cases.
        ("chunked", "Transfer-Encoding: chunked\r\n\r\n", false, Ok((Chunked, false, true))),
        (
            "chunked in another case",
            "transfer-encoding:  Chunked \r\n\r\n",
            false,
            Ok((Chunked, false, true)),
        ),
        ("a length", "Content-Length: 12\r\n\r\n", false, Ok((Length(12), false, true))),
        ("a zero length", "Content-Length: 0\r\n\r\n", false, Ok((Length(0), false, true))),
        (
            "the largest length",
            "Content-Length: 9999999999999999999\r\n\r\n",
            false,
            Ok((Length(9_999_999_999_999_999_999), false, true)),
        ),
        ("no framing headers: read until close", "\r\n", false, Ok((UntilClose, false, false))),
        // RFC 9112 §6.3: no body, whatever the headers say (and they are still checked).
        ("a response to HEAD", "Content-Length: 12\r\n\r\n", true, Ok((NoBody, false, true))),
        (
            "a chunked response to HEAD",
            "Transfer-Encoding: chunked\r\n\r\n",
            true,
            Ok((NoBody, false, true)),
        ),
        ("204", "HTTP/1.1 204 No Content\r\n\r\n", false, Ok((NoBody, false, true))),
        (
            "304 with a length",
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            false,
            Ok((NoBody, false, true)),
        ),
        ("100 Continue", "HTTP/1.1 100 Continue\r\n\r\n", false, Ok((NoBody, false, true))),
        (
            "103 Early Hints",
            "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
            false,
            Ok((NoBody, false, true)),
        ),
        (
            "101 becomes a tunnel",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            false,
            Ok((NoBody, false, false)),
        ),
        (
            "204 with a bad coding",
            "HTTP/1.1 204 No Content\r\nTransfer-Encoding: gzip\r\n\r\n",
            false,
            Err(TransferEncoding),
        ),
        (
            "HEAD with chunked and a length",
            "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            true,
            Ok((NoBody, true, false)),
        ),
        // Whether the server lets the connection be reused.
        (
            "Connection: close",
            "Content-Length: 1\r\nConnection: close\r\n\r\n",
            false,
            Ok((Length(1), false, false)),
        ),
        (
            "close among other tokens",
            "Content-Length: 1\r\nConnection: foo, Close\r\n\r\n",
            false,
            Ok((Length(1), false, false)),
        ),
        (
            "HTTP/1.0 closes by default",
            "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
            false,
            Ok((Length(1), false, false)),
        ),
        (
            "HTTP/1.0 with keep-alive",
            "HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: Keep-Alive\r\n\r\n",
            false,
            Ok((Length(1), false, true)),
        ),
        (
            "HTTP/1.1 keep-alive is the default",
            "Content-Length: 1\r\nConnection: keep-alive\r\n\r\n",
            false,
            Ok((Length(1), false, true)),
        ),
    ]
};

#[test]
fn response_framing_table() {
    for (case, head, to_head, want) in RESPONSE_FRAMING {
        assert_eq!(verdict(head, *to_head), *want, "{case}");
    }
}

#[test]
fn malformed_heads_are_refused() {
    let cases: &[(&str, &str)] = &[
        ("not HTTP", "SSH-2.0-OpenSSH\r\n\r\n"),
        ("HTTP/2 status line", "HTTP/2 200 OK\r\n\r\n"),
        ("a two-digit status", "HTTP/1.1 20 OK\r\n\r\n"),
        ("a space before the colon", "HTTP/1.1 200 OK\r\nContent-Length : 1\r\n\r\n"),
        ("obs-fold", "HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\n\r\n"),
        ("NUL in a value", "HTTP/1.1 200 OK\r\nX-A: 1\0\r\n\r\n"),
        ("a bare CR", "HTTP/1.1 200 OK\r\nX-A: 1\rX-B: 2\r\n\r\n"),
    ];
    for (case, head) in cases {
        let got = parsed(head, false);
        assert!(matches!(got, Err(ResponseError::Malformed(_))), "{case}: {got:?}");
    }
}

#[test]
fn a_partial_head_needs_more_bytes_until_the_limit() {
    let limits = HeadLimits { max_head_bytes: 64, max_headers: 2 };
    let parse = |b: &[u8]| parse_response(b, &limits, false, &mut Vec::new());
    assert_eq!(parse(b""), Ok(None));
    assert_eq!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"), Ok(None));
    let long = format!("HTTP/1.1 200 OK\r\nX-A: {}", "a".repeat(60));
    assert_eq!(parse(long.as_bytes()), Err(ResponseError::TooLarge));
    let long = format!("HTTP/1.1 200 OK\r\nX-A: {}\r\n\r\n", "a".repeat(60));
    assert_eq!(parse(long.as_bytes()), Err(ResponseError::TooLarge));
    let many = b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    assert_eq!(parse(many), Err(ResponseError::TooManyHeaders));
    // More slots than fit the stack.
    let limits = HeadLimits { max_head_bytes: 65536, max_headers: 500 };
    let head = format!("HTTP/1.1 200 OK\r\n{}\r\n", "A: 1\r\n".repeat(400));
    let got = parse_response(head.as_bytes(), &limits, false, &mut Vec::new()).unwrap();
    assert_eq!(got.map(|h| h.len), Some(head.len()));
}

#[test]
fn spans_locate_the_status_reason_and_headers_in_the_buffer() {
    let buf = b"HTTP/1.1 404 Not Found\r\nServer: s\r\nContent-Length:  2 \r\n\r\nhi";
    let mut headers = vec![HeaderSpan { name: Span::default(), value: Span::default() }; 9];
    let head = parse_response(buf, &HeadLimits::default(), false, &mut headers).unwrap().unwrap();
    assert_eq!((head.status, head.minor_version, head.len), (404, 1, buf.len() - 2));
    assert_eq!(head.reason.get(buf), b"Not Found");
    let pairs: Vec<_> = headers.iter().map(|h| (h.name.get(buf), h.value.get(buf))).collect();
    assert_eq!(pairs, [(&b"Server"[..], &b"s"[..]), (b"Content-Length", b"2")]);
    assert!(!head.is_upgrade() && !head.is_interim());
    // A status line without a reason.
    let buf = b"HTTP/1.1 200\r\n\r\n";
    let head = parse_response(buf, &HeadLimits::default(), false, &mut headers).unwrap().unwrap();
    assert_eq!((head.status, head.reason.get(buf), headers.len()), (200, &b""[..], 0));
}

#[test]
fn lengths_are_digits_only() {
    assert_eq!(parse_length(b"0"), Some(0));
    assert_eq!(parse_length(b"9999999999999999999"), Some(9_999_999_999_999_999_999));
    for bad in [&b""[..], b"-1", b"+1", b"0x10", b"1 1", b"1e3", b"18446744073709551615"] {
        assert_eq!(parse_length(bad), None, "{bad:?}");
    }
}

#[test]
fn hop_by_hop_names_are_known_in_any_case_and_nothing_else_is() {
    let rows: &[(&str, bool)] = &[
        ("connection", true),
        ("Connection", true),
        ("KEEP-ALIVE", true),
        ("Proxy-Connection", true),
        ("te", true),
        ("TE", true),
        ("Trailer", true),
        ("transfer-encoding", true),
        ("Proxy-Authenticate", true),
        ("proxy-authorization", true),
        // Same lengths as hop-by-hop names, but end-to-end.
        ("ab", false),
        ("trailers", false),
        ("x-trailer", false),
        ("connectio1", false),
        ("keep-alivf", false),
        ("content-encoding", false),
        ("x-forwarded-proto", false),
        ("proxy-authenticat", false),
        // Passed on with a 101, so the caller decides.
        ("upgrade", false),
        ("", false),
    ];
    for (name, want) in rows {
        assert_eq!(is_hop_by_hop(name.as_bytes()), *want, "{name}");
    }
}

#[test]
fn a_connection_value_names_only_the_end_to_end_fields_to_remove() {
    let rows: &[(&[u8], &[&str])] = &[
        (b"keep-alive", &[]),
        (b"close", &["close"]),
        (b"Upgrade", &[]),
        (b"close, X-Hop", &["close", "X-Hop"]),
        (b" x-a ,x-b,, TE , Keep-Alive", &["x-a", "x-b"]),
        (b"x-a, \xff\xfe, x-b", &["x-a", "x-b"]),
        (b"", &[]),
    ];
    for (value, want) in rows {
        let got: Vec<&str> = connection_named(value).collect();
        assert_eq!(got, *want, "{:?}", String::from_utf8_lossy(value));
    }
}
