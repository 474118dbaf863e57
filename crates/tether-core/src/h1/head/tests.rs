use proptest::prelude::*;

use super::*;
use crate::h1::write_request_head;
use BodyFraming::{Chunked, Length, NoBody};
use RequestHeadError::*;

/// An HTTP/1.1 `POST /` with `Host: x`, these header lines, and the empty line.
macro_rules! post {
    ($($line:literal),*) => {
        concat!("POST / HTTP/1.1\r\nHost: x\r\n", $($line, "\r\n",)* "\r\n")
    };
}

/// Parses `text` with the default limits.
fn parsed(text: &[u8]) -> Result<Option<RequestHead>, RequestHeadError> {
    parse_request(text, &HeadLimits::default(), &mut Vec::new())
}

/// What the table checks of an accepted head: framing, close, upgrade, `100-continue`.
type Verdict = Result<(BodyFraming, bool, bool, bool), RequestHeadError>;

fn verdict(text: &str) -> Verdict {
    let head = parsed(text.as_bytes())?.expect("a complete head");
    Ok((head.framing, head.close, head.upgrade, head.expect_continue))
}

/// The accepted head of an ordinary request with this framing: keep-alive, no upgrade.
const fn framed(framing: BodyFraming) -> Verdict {
    Ok((framing, false, false, false))
}

/// The module's table, row by row and in its order (a head that breaks two rows gets the
/// first one's answer), then what the client asks of the connection.
const REQUEST_FRAMING: &[(&str, &str, Verdict)] = &[
    // hyper's refusals, before Tether's today.
    (
        "TE on HTTP/1.0",
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        Err(TransferEncodingOnHttp10),
    ),
    (
        "an unknown coding on HTTP/1.0",
        "POST / HTTP/1.0\r\nTransfer-Encoding: gzip\r\n\r\n",
        Err(TransferEncodingOnHttp10),
    ),
    ("a signed length", post!("Content-Length: +5"), Err(InvalidContentLength)),
    ("a negative length", post!("Content-Length: -1"), Err(InvalidContentLength)),
    ("a hex length", post!("Content-Length: 0x10"), Err(InvalidContentLength)),
    ("a length with a space inside", post!("Content-Length:  5 5"), Err(InvalidContentLength)),
    ("an empty length", post!("Content-Length: "), Err(InvalidContentLength)),
    (
        "a list of equal lengths (hyper reads digits only)",
        post!("Content-Length: 5, 5"),
        Err(InvalidContentLength),
    ),
    (
        "a length of 20 digits",
        post!("Content-Length: 10000000000000000000"),
        Err(InvalidContentLength),
    ),
    (
        "differing lengths on two lines",
        post!("Content-Length: 5", "Content-Length: 6"),
        Err(ConflictingContentLength),
    ),
    ("a coding after chunked", post!("Transfer-Encoding: chunked, gzip"), Err(TransferEncoding)),
    ("a coding with a parameter", post!("Transfer-Encoding: gzip;q=1"), Err(TransferEncoding)),
    ("an empty coding", post!("Transfer-Encoding: "), Err(TransferEncoding)),
    (
        "two lines, the last not chunked",
        post!("Transfer-Encoding: chunked", "Transfer-encoding: cow"),
        Err(TransferEncoding),
    ),
    (
        "an unknown coding with a length",
        post!("Transfer-Encoding: gzip", "Content-Length: 5"),
        Err(BothFramings),
    ),
    (
        "an invalid length before chunked",
        post!("Content-Length: x", "Transfer-Encoding: chunked"),
        Err(BothFramings),
    ),
    (
        "both on HTTP/1.0",
        "POST / HTTP/1.0\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        Err(BothFramings),
    ),
    // CONNECT: after hyper's refusals, before the rest of the policy.
    ("CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", Err(Connect)),
    ("CONNECT without Host", "CONNECT a:443 HTTP/1.1\r\n\r\n", Err(Connect)),
    (
        "CONNECT with both framings",
        "CONNECT a:443 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        Err(Connect),
    ),
    (
        "CONNECT with an unknown coding",
        "CONNECT a:443 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        Err(Connect),
    ),
    (
        "CONNECT with an invalid length",
        "CONNECT a:443 HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
        Err(InvalidContentLength),
    ),
    (
        "CONNECT on HTTP/1.0 with TE",
        "CONNECT a:443 HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        Err(TransferEncodingOnHttp10),
    ),
    // A lone unknown coding: 501, before Host.
    ("gzip", post!("Transfer-Encoding: gzip"), Err(UnknownCoding)),
    ("identity", post!("transfer-encoding:  identity "), Err(UnknownCoding)),
    ("xchunked", post!("Transfer-Encoding: xchunked"), Err(UnknownCoding)),
    ("gzip without Host", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", Err(UnknownCoding)),
    ("gzip with two Hosts", post!("Host: y", "Transfer-Encoding: gzip"), Err(UnknownCoding)),
    // Both framing headers.
    ("CL then TE", post!("Content-Length: 5", "Transfer-Encoding: chunked"), Err(BothFramings)),
    ("TE then CL", post!("Transfer-Encoding: chunked", "Content-Length: 5"), Err(BothFramings)),
    (
        "TE then a length the head scan cannot read",
        post!("Transfer-Encoding: chunked", "Content-Length: abc"),
        Err(BothFramings),
    ),
    (
        "TE then a list of lengths",
        post!("Transfer-Encoding: chunked", "Content-Length: 5, 6"),
        Err(BothFramings),
    ),
    (
        "a TE list with a length",
        post!("Transfer-Encoding: gzip, chunked", "Content-Length: 5"),
        Err(BothFramings),
    ),
    (
        "both, without Host",
        "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        Err(BothFramings),
    ),
    // Host.
    ("HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n", Err(MissingHost)),
    ("two Hosts", post!("Host: y"), Err(SeveralHosts)),
    ("two Hosts on HTTP/1.0", "GET / HTTP/1.0\r\nHost: x\r\nHost: y\r\n\r\n", Err(SeveralHosts)),
    (
        "no Host, with a TE list",
        "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        Err(MissingHost),
    ),
    (
        "two Hosts and an HTTP/1.0 body without a length",
        "POST / HTTP/1.0\r\nHost: x\r\nHost: y\r\n\r\n",
        Err(SeveralHosts),
    ),
    // Transfer-Encoding other than chunked alone, once hyper let it through.
    (
        "chunked on two lines",
        post!("Transfer-Encoding: chunked", "Transfer-Encoding: chunked"),
        Err(TransferEncoding),
    ),
    (
        "gzip then chunked on two lines",
        post!("Transfer-Encoding: gzip", "Transfer-Encoding: chunked"),
        Err(TransferEncoding),
    ),
    (
        "chunked twice in a list",
        post!("Transfer-Encoding: chunked, chunked"),
        Err(TransferEncoding),
    ),
    ("a list ending in chunked", post!("Transfer-Encoding: gzip, chunked"), Err(TransferEncoding)),
    // An HTTP/1.0 body needs a length.
    ("HTTP/1.0 POST without a length", "POST / HTTP/1.0\r\n\r\n", Err(LengthRequired)),
    ("HTTP/1.0 PUT without a length", "PUT / HTTP/1.0\r\nHost: x\r\n\r\n", Err(LengthRequired)),
    (
        "HTTP/1.0 PATCH with keep-alive",
        "PATCH / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        Err(LengthRequired),
    ),
    (
        "HTTP/1.0 POST with a length",
        "POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\n",
        Ok((Length(3), true, false, false)),
    ),
    (
        "HTTP/1.0 DELETE without a length has no body",
        "DELETE / HTTP/1.0\r\n\r\n",
        Ok((NoBody, true, false, false)),
    ),
    (
        "methods are case-sensitive: post is not POST",
        "post / HTTP/1.0\r\n\r\n",
        Ok((NoBody, true, false, false)),
    ),
    // The framings accepted.
    ("chunked", post!("Transfer-Encoding: chunked"), framed(Chunked)),
    ("chunked in another case", post!("transfer-encoding:  Chunked "), framed(Chunked)),
    ("a length", post!("Content-Length: 12"), framed(Length(12))),
    ("a zero length", post!("Content-Length: 0"), framed(Length(0))),
    ("leading zeros", post!("Content-Length: 007"), framed(Length(7))),
    (
        "equal lengths on two lines collapse",
        post!("Content-Length: 5", "content-length: 5"),
        framed(Length(5)),
    ),
    (
        "the largest length",
        post!("Content-Length: 9999999999999999999"),
        framed(Length(9_999_999_999_999_999_999)),
    ),
    ("neither: no body", post!(), framed(NoBody)),
    ("HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n", Ok((NoBody, true, false, false))),
    ("an empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", framed(NoBody)),
    // Closing.
    ("Connection: close", post!("Connection: close"), Ok((NoBody, true, false, false))),
    (
        "close among other options",
        post!("Connection: foo, Close"),
        Ok((NoBody, true, false, false)),
    ),
    (
        "close on one line, keep-alive on another",
        post!("Connection: keep-alive", "Connection: close"),
        Ok((NoBody, true, false, false)),
    ),
    (
        "a Connection line that is not ASCII is not read",
        post!("Connection: close, \u{e9}"),
        framed(NoBody),
    ),
    (
        "HTTP/1.0 with keep-alive",
        "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
        framed(NoBody),
    ),
    (
        "HTTP/1.0 with keep-alive and close",
        "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
        Ok((NoBody, true, false, false)),
    ),
    // Upgrading.
    (
        "an upgrade",
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        Ok((NoBody, false, true, false)),
    ),
    (
        "upgrade among other options",
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, upgrade\r\nUpgrade: h2c\r\n\r\n",
        Ok((NoBody, false, true, false)),
    ),
    (
        "Upgrade without the Connection option",
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n",
        framed(NoBody),
    ),
    (
        "the Connection option without Upgrade",
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n\r\n",
        framed(NoBody),
    ),
    (
        "no upgrade on HTTP/1.0",
        "GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        Ok((NoBody, true, false, false)),
    ),
    // 100-continue.
    (
        "Expect: 100-continue",
        post!("Content-Length: 5", "Expect: 100-continue"),
        Ok((Length(5), false, false, true)),
    ),
    (
        "100-continue in another case, chunked",
        post!("Transfer-Encoding: chunked", "Expect: 100-Continue"),
        Ok((Chunked, false, false, true)),
    ),
    ("no 100 Continue without a body", post!("Expect: 100-continue"), framed(NoBody)),
    (
        "no 100 Continue for a zero length",
        post!("Content-Length: 0", "Expect: 100-continue"),
        framed(Length(0)),
    ),
    (
        "the last Expect line decides",
        post!("Content-Length: 5", "Expect: 100-continue", "Expect: x"),
        framed(Length(5)),
    ),
    (
        "no 100 Continue on HTTP/1.0",
        "POST / HTTP/1.0\r\nContent-Length: 5\r\nConnection: keep-alive\r\nExpect: 100-continue\r\n\r\n",
        framed(Length(5)),
    ),
];

#[test]
fn request_framing_table() {
    for (case, text, want) in REQUEST_FRAMING {
        assert_eq!(verdict(text), *want, "{case}");
    }
}

#[test]
fn each_refusal_has_its_status() {
    let table: &[(RequestHeadError, u16)] = &[
        (Malformed(httparse::Error::Token), 400),
        (TooLarge, 431),
        (TooManyHeaders, 431),
        (TargetTooLong, 414),
        (TransferEncodingOnHttp10, 400),
        (InvalidContentLength, 400),
        (ConflictingContentLength, 400),
        (TransferEncoding, 400),
        (UnknownCoding, 501),
        (BothFramings, 400),
        (MissingHost, 400),
        (SeveralHosts, 400),
        (LengthRequired, 411),
        (Connect, 501),
    ];
    for (error, status) in table {
        assert_eq!(error.status(), *status, "{error:?}");
    }
}

#[test]
fn malformed_heads_are_refused_as_hyper_refuses_them() {
    // crates/tether/tests/suite/smuggling.rs, "Parse errors": hyper's 400 for each.
    let cases: &[(&str, &[u8])] = &[
        ("two spaces", b"GET  /rl HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("extra token", b"GET /rl HTTP/1.1 extra\r\nHost: x\r\n\r\n"),
        ("bad method", b"G(T /rl HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("bad version", b"GET /rl HTTP/9.9\r\nHost: x\r\n\r\n"),
        ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        ("no version", b"GET /rl\r\nHost: x\r\n\r\n"),
        ("space in target", b"GET /r l HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("obs-fold", b"GET /fold HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n"),
        (
            "folded TE",
            b"POST / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n Transfer-Encoding: chunked\r\n\r\n",
        ),
        ("bare CR", b"GET /cr HTTP/1.1\r\nHost: x\r\nX-A: a\rX-Injected: yes\r\n\r\n"),
        ("NUL in a value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n"),
        ("NUL in a name", b"GET / HTTP/1.1\r\nHost: x\r\nX\0A: b\r\n\r\n"),
        ("space before the colon", b"GET / HTTP/1.1\r\nHost : x\r\n\r\n"),
        ("tab before the colon", b"GET / HTTP/1.1\r\nHost: x\r\nX-A\t: b\r\n\r\n"),
        (
            "TE with a space before the colon",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n",
        ),
        ("( in a name", b"GET / HTTP/1.1\r\nHost: x\r\nX(A): b\r\n\r\n"),
        ("empty name", b"GET / HTTP/1.1\r\nHost: x\r\n: b\r\n\r\n"),
        ("no colon", b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"),
        ("TLS", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
    ];
    for (case, text) in cases {
        let got = parsed(text);
        assert!(matches!(got, Err(Malformed(_))), "{case}: {got:?}");
    }
}

#[test]
fn a_bare_lf_ends_a_line_as_hyper_reads_it() {
    // RFC 9112 §2.2 allows it; the forwarded head is written with CRLF by Tether.
    let text = b"GET /lf HTTP/1.1\nHost: x\nX-A: a\nX-Injected: yes\n\n";
    let mut headers = Vec::new();
    let head = parse_request(text, &HeadLimits::default(), &mut headers).unwrap().unwrap();
    assert_eq!(head.len, text.len());
    let names: Vec<_> = headers.iter().map(|h| h.name.get(text)).collect();
    assert_eq!(names, [&b"Host"[..], b"X-A", b"X-Injected"]);
}

#[test]
fn limits_refuse_large_heads_many_lines_and_long_targets() {
    let limits = HeadLimits { max_head_bytes: 64, max_headers: 2 };
    let parse = |b: &[u8]| parse_request(b, &limits, &mut Vec::new());
    assert_eq!(parse(b""), Ok(None));
    assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None));
    // A partial head as long as the limit can only end past it.
    let at_limit = format!("GET / HTTP/1.1\r\nX-A: {}", "a".repeat(64 - 21));
    assert_eq!(at_limit.len(), 64);
    assert_eq!(parse(&at_limit.as_bytes()[..63]), Ok(None));
    assert_eq!(parse(at_limit.as_bytes()), Err(TooLarge));
    let whole = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", "a".repeat(64 - 26));
    assert_eq!(parse(whole.as_bytes()).map(|h| h.map(|h| h.len)), Ok(Some(64)));
    let over = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", "a".repeat(64 - 25));
    assert_eq!(parse(over.as_bytes()), Err(TooLarge));
    assert_eq!(parse(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"), Err(TooManyHeaders));
    // What lies past the limit cannot change the answer, however much of it has arrived: a
    // bad byte or a third line there is not seen.
    let bad_past = format!("{at_limit}\0\r\nB: 2\r\nC: 3\r\n\r\n");
    assert_eq!(parse(bad_past.as_bytes()), Err(TooLarge));
    let tiny = HeadLimits { max_head_bytes: 0, max_headers: 0 };
    assert_eq!(
        parse_request(b"GET / HTTP/1.1\r\nA: 1\r\n\r\n", &tiny, &mut Vec::new()),
        Err(TooLarge)
    );
    // More slots than fit the stack.
    let limits = HeadLimits { max_head_bytes: 1 << 20, max_headers: 500 };
    let text = format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", "A: 1\r\n".repeat(400));
    let got = parse_request(text.as_bytes(), &limits, &mut Vec::new()).unwrap();
    assert_eq!(got.map(|h| h.len), Some(text.len()));
    // hyper's 414, for a listener whose head limit lets such a target through.
    for (len, want) in
        [(MAX_TARGET_LEN, Ok(Some(NoBody))), (MAX_TARGET_LEN + 1, Err(TargetTooLong))]
    {
        let text = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(len - 1));
        let got = parse_request(text.as_bytes(), &limits, &mut Vec::new());
        assert_eq!(got.map(|h| h.map(|h| h.framing)), want, "{len}");
    }
}

#[test]
fn spans_locate_the_method_target_host_and_headers_in_the_buffer() {
    let buf = b"\r\n\nPUT /a?b=c HTTP/1.1\r\nHost:  example.com \r\nContent-Length: 2\r\n\r\nhi";
    let mut headers = vec![HeaderSpan { name: Span::default(), value: Span::default() }; 9];
    let head = parse_request(buf, &HeadLimits::default(), &mut headers).unwrap().unwrap();
    assert_eq!((head.len, head.minor_version), (buf.len() - 2, 1));
    assert_eq!((head.method.get(buf), head.target.get(buf)), (&b"PUT"[..], &b"/a?b=c"[..]));
    assert_eq!(head.host.map(|h| h.get(buf)), Some(&b"example.com"[..]));
    let pairs: Vec<_> = headers.iter().map(|h| (h.name.get(buf), h.value.get(buf))).collect();
    assert_eq!(pairs, [(&b"Host"[..], &b"example.com"[..]), (b"Content-Length", b"2")]);
    // A refused head leaves no header spans behind.
    assert_eq!(
        parse_request(b"GET / HTTP/1.1\r\n\r\n", &HeadLimits::default(), &mut headers),
        Err(MissingHost)
    );
    assert!(headers.is_empty());
}

// === Splits, the head scan, and writing the head again ===

/// Every growing prefix of `bytes` gives `Ok(None)` until the verdict, then the verdict of
/// the whole, with the same spans.
fn assert_prefixes_agree(bytes: &[u8], limits: &HeadLimits) -> Result<(), TestCaseError> {
    let (mut whole_spans, mut spans) = (Vec::new(), Vec::new());
    let whole = parse_request(bytes, limits, &mut whole_spans);
    let mut decided = false;
    for end in 0..=bytes.len() {
        let got = parse_request(&bytes[..end], limits, &mut spans);
        if got == Ok(None) {
            prop_assert!(!decided, "undecided again at {} of {}", end, bytes.len());
            continue;
        }
        decided = true;
        prop_assert_eq!(&got, &whole, "prefix of {} bytes", end);
        prop_assert_eq!(&spans, &whole_spans, "prefix of {} bytes", end);
    }
    Ok(())
}

#[test]
fn the_table_gives_its_verdict_only_once_the_head_is_whole() {
    for (case, text, _) in REQUEST_FRAMING {
        let mut bytes = text.as_bytes().to_vec();
        bytes.extend_from_slice(b"5\r\nhello\r\n0\r\n\r\nGET /next HTTP/1.1\r\n");
        assert_prefixes_agree(&bytes, &HeadLimits::default())
            .map_err(|e| format!("{case}: {e}"))
            .unwrap();
        let head = parsed(&text.as_bytes()[..text.len() - 1]);
        assert_eq!(head, Ok(None), "{case}: one byte short");
    }
}

/// Header lines that matter to the policy, and a few that do not.
const LINES: &[&str] = &[
    "Host: x",
    "Host: y",
    "Transfer-Encoding: chunked",
    "transfer-encoding:  Chunked ",
    "Transfer-Encoding: gzip",
    "Transfer-Encoding: gzip, chunked",
    "Transfer-Encoding: chunked, gzip",
    "Transfer-Encoding: ",
    "Transfer-Encoding: gzip;q=1",
    "Content-Length: 5",
    "Content-Length: 6",
    "content-length: 0",
    "Content-Length: 5, 5",
    "Content-Length: +5",
    "Content-Length: abc",
    "Connection: close",
    "Connection: keep-alive, Upgrade",
    "Upgrade: websocket",
    "Expect: 100-continue",
    "X-A: b",
];

/// A request head made of the pieces above.
fn head() -> impl Strategy<Value = Vec<u8>> {
    let method = prop::sample::select(vec!["GET", "POST", "PUT", "CONNECT", "M-SEARCH"]);
    let target = prop::sample::select(vec!["/", "/a?b=c", "*", "http://x/y", "x:443", "/\u{e9}"]);
    let version = prop::sample::select(vec!["HTTP/1.0", "HTTP/1.1"]);
    let lines = prop::collection::vec(prop::sample::select(LINES), 0..7);
    (method, target, version, lines).prop_map(|(m, t, v, lines)| {
        let mut text = format!("{m} {t} {v}\r\n");
        for line in lines {
            text.push_str(line);
            text.push_str("\r\n");
        }
        text.push_str("\r\n");
        text.into_bytes()
    })
}

/// Writes an accepted head again, line for line, with `write_request_head` (HTTP/1.1, made
/// HTTP/1.0 again when it was). `None` when the writer refuses the target (obs-text).
fn written(buf: &[u8], head: &RequestHead, headers: &[HeaderSpan]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (method, target) = (head.method.get(buf), head.target.get(buf));
    let pairs = headers.iter().map(|h| (h.name.get(buf), h.value.get(buf)));
    if let Err(e) = write_request_head(&mut out, method, target, pairs) {
        assert_eq!(e, crate::h1::RequestError::Target, "only a target with obs-text is refused");
        assert!(target.iter().any(|b| *b >= 0x80));
        return None;
    }
    if head.minor_version == 0 {
        out[method.len() + target.len() + 9] = b'0';
    }
    Some(out)
}

proptest! {
    #[test]
    fn any_split_of_a_head_and_what_follows_gives_the_same_answer(
        head in head(),
        tail in prop::collection::vec(prop::sample::select(b"0123456789aF;\r\n:xGET /HTTP1.\0\t ".to_vec()), 0..40),
        max_head_bytes in 0usize..200,
    ) {
        let bytes = [head, tail].concat();
        assert_prefixes_agree(&bytes, &HeadLimits::default())?;
        assert_prefixes_agree(&bytes, &HeadLimits { max_head_bytes, max_headers: 4 })?;
    }

    /// One request in, at most one request out, its framing kept: an accepted head written
    /// again parses to the same request.
    #[test]
    fn an_accepted_head_written_again_parses_the_same(head in head()) {
        let mut headers = Vec::new();
        let Ok(Some(first)) = parse_request(&head, &HeadLimits::default(), &mut headers) else {
            return Ok(());
        };
        let Some(out) = written(&head, &first, &headers) else { return Ok(()) };
        let mut again_headers = Vec::new();
        let again = parse_request(&out, &HeadLimits::default(), &mut again_headers);
        let again = again.map_err(|e| TestCaseError::fail(e.to_string()))?;
        let again = again.ok_or_else(|| TestCaseError::fail("incomplete"))?;
        prop_assert_eq!(again.len, out.len());
        prop_assert_eq!(
            (first.framing, first.close, first.upgrade, first.expect_continue, first.minor_version),
            (again.framing, again.close, again.upgrade, again.expect_continue, again.minor_version)
        );
        prop_assert_eq!(first.method.get(&head), again.method.get(&out));
        prop_assert_eq!(first.target.get(&head), again.target.get(&out));
        prop_assert_eq!(first.host.map(|h| h.get(&head)), again.host.map(|h| h.get(&out)));
        let lines = |buf: &[u8], spans: &[HeaderSpan]| -> Vec<(Vec<u8>, Vec<u8>)> {
            spans.iter().map(|h| (h.name.get(buf).to_vec(), h.value.get(buf).to_vec())).collect()
        };
        prop_assert_eq!(lines(&head, &headers), lines(&out, &again_headers));
    }
}
