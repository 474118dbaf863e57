//! The codec's split-invariance: a stream of responses read in any number of reads, cut
//! anywhere, gives the same heads, the same body bytes and the same consumed counts as one
//! read — and the bodies a generator framed. And chunked encoding decodes to what it encoded.

use proptest::prelude::*;

use super::body::{encode_chunk, encode_last_chunk};
use super::*;

/// One response as the reader saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    status: u16,
    framing: BodyFraming,
    reusable: bool,
    body: Vec<u8>,
    trailers: Vec<u8>,
    /// Stream bytes the response took: head and body.
    consumed: usize,
}

/// Where the reader is.
enum Phase {
    Head,
    Body(Decoder, Seen),
}

/// Reads the responses of `stream` delivered in reads cut at `cuts`, as a connection would:
/// unconsumed bytes stay in its buffer. `heads[i]`: response `i` answers a `HEAD`. Ends at
/// the first error, and with the close after the last read.
fn read(stream: &[u8], cuts: &[usize], heads: &[bool]) -> (Vec<Seen>, Option<String>) {
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    bounds.push(stream.len());
    bounds.sort_unstable();
    let (mut buf, mut seen, mut phase, mut from) = (Vec::new(), Vec::new(), Phase::Head, 0);
    for to in bounds {
        buf.extend_from_slice(&stream[from..to]);
        from = to;
        if let Err(e) = advance(&mut buf, &mut phase, &mut seen, heads) {
            return (seen, Some(e));
        }
    }
    if let Phase::Body(mut dec, msg) = phase {
        match dec.finish() {
            Ok(()) => seen.push(msg),
            Err(e) => return (seen, Some(e.to_string())),
        }
    }
    (seen, None)
}

/// Parses and decodes what `buf` holds, removing what was consumed.
fn advance(
    buf: &mut Vec<u8>,
    phase: &mut Phase,
    seen: &mut Vec<Seen>,
    heads: &[bool],
) -> Result<(), String> {
    loop {
        match phase {
            Phase::Head => {
                let to_head = heads.get(seen.len()).copied().unwrap_or(false);
                let limits = HeadLimits::default();
                let Some(head) = parse_response(buf, &limits, to_head, &mut Vec::new())
                    .map_err(|e| e.to_string())?
                else {
                    return Ok(());
                };
                buf.drain(..head.len);
                let msg = Seen {
                    status: head.status,
                    framing: head.framing,
                    reusable: head.reusable(),
                    body: Vec::new(),
                    trailers: Vec::new(),
                    consumed: head.len,
                };
                let dec = Decoder::new(head.framing).with_trailers(Trailers::Return, 1024);
                *phase = Phase::Body(dec, msg);
            }
            Phase::Body(dec, msg) => {
                let step = dec.decode(buf).map_err(|e| e.to_string())?;
                match step.piece {
                    Some(Piece::Body(r)) => msg.body.extend_from_slice(&buf[r]),
                    Some(Piece::Trailers(r)) => msg.trailers.extend_from_slice(&buf[r]),
                    None => {}
                }
                buf.drain(..step.consumed);
                msg.consumed += step.consumed;
                if step.done {
                    seen.push(msg.clone());
                    *phase = Phase::Head;
                } else if buf.is_empty() {
                    return Ok(());
                }
            }
        }
    }
}

/// How a generated response frames its body.
#[derive(Debug, Clone)]
enum Frame {
    /// `Content-Length`, in one of the accepted spellings.
    Length { repeated: bool },
    /// Chunked: the body cut at these sizes, hex case and extensions varied, trailers.
    Chunked { cuts: Vec<usize>, upper: bool, ext: bool, trailers: bool },
    /// `204`, `304` or a response to `HEAD`: a head only.
    NoBody { status: u16, to_head: bool },
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        any::<bool>().prop_map(|repeated| Frame::Length { repeated }),
        (prop::collection::vec(1usize..40, 0..6), any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(cuts, upper, ext, trailers)| Frame::Chunked { cuts, upper, ext, trailers }),
        (prop::sample::select(vec![204u16, 304, 200]), any::<bool>())
            .prop_map(|(status, h)| Frame::NoBody { status, to_head: h || status == 200 }),
    ]
}

/// A response's bytes, the body it carries, its trailers, and whether it answers `HEAD`.
fn encode(frame: &Frame, body: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>, bool) {
    let mut out = b"HTTP/1.1 200 OK\r\nServer: gen\r\n".to_vec();
    match frame {
        Frame::Length { repeated } => {
            let n = body.len();
            let lines =
                if *repeated { format!("Content-Length: {n}, {n}\r\n") } else { String::new() };
            out.extend_from_slice(format!("{lines}Content-Length: {n}\r\n\r\n").as_bytes());
            out.extend_from_slice(body);
            (out, body.to_vec(), Vec::new(), false)
        }
        Frame::Chunked { cuts, upper, ext, trailers } => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            let mut rest = body;
            for size in cuts.iter().chain(std::iter::once(&usize::MAX)) {
                let (chunk, after) = rest.split_at((*size).min(rest.len()));
                if !chunk.is_empty() {
                    let n = chunk.len();
                    let size = if *upper { format!("{n:X}") } else { format!("{n:x}") };
                    let ext = if *ext { "; name=\"v;x\"" } else { "" };
                    out.extend_from_slice(format!("{size}{ext}\r\n").as_bytes());
                    out.extend_from_slice(chunk);
                    out.extend_from_slice(b"\r\n");
                }
                rest = after;
            }
            let t: &[u8] = if *trailers { b"X-Sum: 1\r\nX-B:\t2\r\n" } else { b"" };
            encode_last_chunk(&mut out, t);
            (out, body.to_vec(), t.to_vec(), false)
        }
        Frame::NoBody { status, to_head } => {
            out[9..12].copy_from_slice(status.to_string().as_bytes());
            out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            (out, Vec::new(), Vec::new(), *to_head)
        }
    }
}

/// A pipelined stream of generated responses.
#[derive(Debug, Clone)]
struct Stream {
    bytes: Vec<u8>,
    /// Each response's body and trailers.
    want: Vec<(Vec<u8>, Vec<u8>)>,
    /// Which responses answer `HEAD`.
    heads: Vec<bool>,
}

/// A few generated responses, optionally ended by one read until the close.
fn stream() -> impl Strategy<Value = Stream> {
    let msg = (frame(), prop::collection::vec(any::<u8>(), 0..120));
    (prop::collection::vec(msg, 1..5), prop::option::of(prop::collection::vec(any::<u8>(), 0..50)))
        .prop_map(|(msgs, last)| {
            let (mut bytes, mut want, mut heads) = (Vec::new(), Vec::new(), Vec::new());
            for (frame, body) in &msgs {
                let (b, body, trailers, to_head) = encode(frame, body);
                bytes.extend_from_slice(&b);
                want.push((body, trailers));
                heads.push(to_head);
            }
            if let Some(body) = last {
                bytes.extend_from_slice(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
                bytes.extend_from_slice(&body);
                want.push((body, Vec::new()));
                heads.push(false);
            }
            Stream { bytes, want, heads }
        })
}

proptest! {
    #[test]
    fn any_split_of_pipelined_responses_reads_the_same(
        Stream { bytes, want, heads } in stream(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let whole = read(&bytes, &[], &heads);
        prop_assert_eq!(&whole.1, &None);
        let got: Vec<_> = whole.0.iter().map(|s| (s.body.clone(), s.trailers.clone())).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(whole.0.iter().map(|s| s.consumed).sum::<usize>(), bytes.len());
        prop_assert_eq!(read(&bytes, &cuts, &heads), whole);
    }

    #[test]
    fn any_split_of_any_bytes_gives_the_same_answer(
        head in prop::sample::select(vec![
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n",
            "HTTP/1.0 200 OK\r\n\r\n",
            "HTTP/1.1 204 No Content\r\n\r\n",
        ]),
        tail in prop::collection::vec(
            prop::sample::select(b"0123456789aAfF;= \t\r\n\r\nx:HTTP/1.1 200\0".to_vec()), 0..80),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut bytes = head.as_bytes().to_vec();
        bytes.extend_from_slice(&tail);
        prop_assert_eq!(read(&bytes, &cuts, &[]), read(&bytes, &[], &[]));
    }

    #[test]
    fn chunked_encoding_then_decoding_is_the_identity(
        pieces in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8),
        trailers in prop::sample::select(vec![&b""[..], b"A: 1\r\n", b"A: 1\r\nB-2: x, y\r\n"]),
        read_size in 1usize..64,
    ) {
        let mut wire = Vec::new();
        for p in &pieces {
            encode_chunk(&mut wire, p);
        }
        encode_last_chunk(&mut wire, trailers);
        wire.extend_from_slice(b"HTTP/1.1 200 OK\r\n"); // The next message: not consumed.
        let mut dec = Decoder::new(BodyFraming::Chunked).with_trailers(Trailers::Return, 1024);
        let (mut body, mut got_trailers, mut at) = (Vec::new(), Vec::new(), 0);
        loop {
            let input = &wire[at..(at + read_size).min(wire.len())];
            let step = dec.decode(input).unwrap();
            match step.piece {
                Some(Piece::Body(r)) => body.extend_from_slice(&input[r]),
                Some(Piece::Trailers(r)) => got_trailers.extend_from_slice(&input[r]),
                None => {}
            }
            at += step.consumed;
            if step.done {
                break;
            }
        }
        prop_assert_eq!(body, pieces.concat());
        prop_assert_eq!(got_trailers, trailers);
        prop_assert_eq!(at, wire.len() - b"HTTP/1.1 200 OK\r\n".len());
    }
}

#[test]
fn ten_pipelined_responses_in_one_read_are_read_in_order() {
    let mut bytes = Vec::new();
    for i in 0..10u8 {
        let frame = if i % 2 == 0 {
            Frame::Length { repeated: false }
        } else {
            Frame::Chunked { cuts: vec![1], upper: false, ext: true, trailers: i == 9 }
        };
        bytes.extend_from_slice(&encode(&frame, &[b'a' + i; 3]).0);
    }
    let (seen, err) = read(&bytes, &[], &[]);
    assert_eq!(err, None);
    let bodies: Vec<_> = seen.iter().map(|s| s.body[0]).collect();
    assert_eq!(bodies, b"abcdefghij");
    assert!(seen.iter().all(|s| s.reusable && s.status == 200));
}

#[test]
fn a_response_cut_short_is_an_error_and_not_a_response() {
    let (bytes, ..) = encode(&Frame::Length { repeated: false }, b"hello");
    let (seen, err) = read(&bytes[..bytes.len() - 1], &[], &[]);
    assert_eq!((seen.len(), err.as_deref()), (0, Some("body cut short by the connection's close")));
}

#[test]
fn token_bytes_are_exactly_rfc_9110s() {
    // tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" /
    //         "|" / "~" / DIGIT / ALPHA
    let symbols = b"!#$%&'*+-.^_`|~";
    for b in 0..=255u8 {
        let want = b.is_ascii_digit() || b.is_ascii_alphabetic() || symbols.contains(&b);
        assert_eq!(is_tchar(b), want, "byte {b:#04x}");
    }
}

#[test]
fn the_whole_slice_checks_agree_with_the_byte_rules_at_every_position() {
    // The folds check many bytes at once: each byte value, alone and at each offset of a
    // longer run (where vectorised code takes another path), gives the byte rule's answer.
    // The fill bytes are valid values next to the invalid ones in the word-wise check
    // (0xff, 0x80 and tab beside control bytes and DEL).
    for b in 0..=255u8 {
        let value_ok = is_value_byte(b);
        for len in [1usize, 7, 8, 9, 15, 16, 17, 24, 33, 70] {
            for at in [0, 1, len / 2, len.saturating_sub(2), len - 1] {
                let at = at.min(len - 1);
                for fill in [b'a', 0xff, 0x80, b'\t', b' '] {
                    let mut value = vec![fill; len];
                    value[at] = b;
                    assert_eq!(
                        all_field_value_bytes(&value),
                        value_ok,
                        "byte {b:#04x} at {at}/{len} among {fill:#04x}"
                    );
                }
                let mut value = vec![b'a'; len];
                value[at] = b;
                assert_eq!(all_tchar(&value), is_tchar(b), "byte {b:#04x} at {at}/{len}");
            }
        }
    }
    assert!(all_field_value_bytes(b"") && all_tchar(b""));
}

/// The byte rule of RFC 9110 §5.5, one byte at a time.
fn is_value_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

proptest! {
    #[test]
    fn the_word_wise_value_check_agrees_with_the_byte_rule(
        // Mostly valid bytes, so that one bad byte in a long value is tried too.
        value in proptest::collection::vec(
            prop_oneof![20 => 0x20u8..0x7f, 3 => 0x80u8..=0xff, 1 => Just(b'\t'), 1 => any::<u8>()],
            0..80,
        ),
    ) {
        prop_assert_eq!(all_field_value_bytes(&value), value.iter().all(|&b| is_value_byte(b)));
    }
}
