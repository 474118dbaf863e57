//! Tether's request-head parser (tether_core::h1::parse_request: httparse and the
//! request-framing policy in one pass) on arbitrary bytes.
//!
//! Invariants: no panic; an accepted head is at most the input and the limit, and has exactly
//! one framing, the one its lines say (chunked: one `Transfer-Encoding: chunked` line and no
//! length; a length: no coding, every `Content-Length` line that length; no body: neither),
//! one `Host` on HTTP/1.1, and is never `CONNECT`; a prefix of the input answers "incomplete"
//! or exactly what the whole does; one request in, at most one request out: the accepted head
//! written again with `write_request_head` parses to the same method, target, framing,
//! connection wishes and header lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_core::h1::response::parse_length;
use tether_core::h1::{
    BodyFraming, HeadLimits, HeaderSpan, RequestError, RequestHead, parse_request,
    write_request_head,
};

const LIMITS: HeadLimits = HeadLimits { max_head_bytes: 2048, max_headers: 24 };

/// The values of the header lines named `name`.
fn values<'b>(buf: &'b [u8], headers: &[HeaderSpan], name: &str) -> Vec<&'b [u8]> {
    let named = headers.iter().filter(|h| h.name.get(buf).eq_ignore_ascii_case(name.as_bytes()));
    named.map(|h| h.value.get(buf)).collect()
}

/// The accepted head has one framing, the one its lines say.
fn check_accepted(buf: &[u8], head: &RequestHead, headers: &[HeaderSpan]) {
    assert!(head.len <= buf.len() && head.len <= LIMITS.max_head_bytes);
    assert!(headers.len() <= LIMITS.max_headers);
    assert_ne!(head.method.get(buf), b"CONNECT");
    let (te, cl) =
        (values(buf, headers, "transfer-encoding"), values(buf, headers, "content-length"));
    match head.framing {
        BodyFraming::Chunked => {
            assert!(cl.is_empty() && te.len() == 1);
            assert!(te[0].trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
        BodyFraming::Length(n) => {
            assert!(te.is_empty() && !cl.is_empty());
            assert!(cl.iter().all(|v| parse_length(v.trim_ascii()) == Some(n)));
        }
        BodyFraming::NoBody => assert!(te.is_empty() && cl.is_empty()),
        BodyFraming::UntilClose => panic!("a request is never read until the close"),
    }
    let hosts = values(buf, headers, "host");
    assert_eq!(hosts.len(), usize::from(head.host.is_some()));
    assert!(head.minor_version == 0 || hosts.len() == 1);
    assert_eq!(head.host.map(|h| h.get(buf)), hosts.first().copied());
}

/// What a head says, as owned bytes: method, target, version, framing, wishes, lines.
type Said = (Vec<u8>, Vec<u8>, u8, BodyFraming, [bool; 3], Vec<(Vec<u8>, Vec<u8>)>);

fn said(buf: &[u8], head: &RequestHead, headers: &[HeaderSpan]) -> Said {
    let lines = headers.iter().map(|h| (h.name.get(buf).to_vec(), h.value.get(buf).to_vec()));
    (
        head.method.get(buf).to_vec(),
        head.target.get(buf).to_vec(),
        head.minor_version,
        head.framing,
        [head.close, head.upgrade, head.expect_continue],
        lines.collect(),
    )
}

/// Writes the accepted head again and parses it: the same request (the writer refuses only a
/// target with obs-text, which httparse lets through).
fn check_written_again(buf: &[u8], head: &RequestHead, headers: &[HeaderSpan]) {
    let (method, target) = (head.method.get(buf), head.target.get(buf));
    let pairs = headers.iter().map(|h| (h.name.get(buf), h.value.get(buf)));
    let mut out = Vec::new();
    if let Err(e) = write_request_head(&mut out, method, target, pairs) {
        assert_eq!(e, RequestError::Target);
        assert!(target.iter().any(|b| *b >= 0x80));
        return;
    }
    if head.minor_version == 0 {
        out[method.len() + target.len() + 9] = b'0'; // `HTTP/1.1` becomes `HTTP/1.0` again.
    }
    let roomy = HeadLimits { max_head_bytes: 1 << 20, max_headers: LIMITS.max_headers };
    let mut again_headers = Vec::new();
    let again = parse_request(&out, &roomy, &mut again_headers);
    let Ok(Some(again)) = again else { panic!("written again: {again:?}") };
    assert_eq!(again.len, out.len());
    assert_eq!(said(&out, &again, &again_headers), said(buf, head, headers));
}

fuzz_target!(|data: &[u8]| {
    // One byte: where to cut a prefix; then the bytes.
    let Some((&cut, bytes)) = data.split_first() else { return };
    let mut headers = Vec::new();
    let got = parse_request(bytes, &LIMITS, &mut headers);
    let mut prefix_headers = Vec::new();
    let cut = usize::from(cut).min(bytes.len());
    let prefix = parse_request(&bytes[..cut], &LIMITS, &mut prefix_headers);
    if prefix != Ok(None) {
        assert_eq!(prefix, got, "prefix of {cut} bytes");
        assert_eq!(prefix_headers, headers);
    }
    if let Ok(Some(head)) = got {
        check_accepted(bytes, &head, &headers);
        check_written_again(bytes, &head, &headers);
    }
});
