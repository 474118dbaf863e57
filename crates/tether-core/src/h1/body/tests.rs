use super::*;

/// What decoding gave: body bytes, trailer bytes, input consumed, complete.
#[derive(Debug, PartialEq, Eq)]
struct Out {
    body: Vec<u8>,
    trailers: Vec<u8>,
    consumed: usize,
    done: bool,
}

/// Feeds `input` in reads of `read` bytes (the unconsumed rest of a read is kept, as a
/// connection's buffer would keep it).
fn decode_in(mut dec: Decoder, input: &[u8], read: usize) -> Result<Out, BodyError> {
    let mut out = Out { body: Vec::new(), trailers: Vec::new(), consumed: 0, done: false };
    let mut have = 0;
    while !out.done && (out.consumed < have || have < input.len()) {
        if out.consumed == have {
            have = (have + read).min(input.len());
        }
        let buf = &input[out.consumed..have];
        let step = dec.decode(buf)?;
        match step.piece {
            Some(Piece::Body(r)) => out.body.extend_from_slice(&buf[r]),
            Some(Piece::Trailers(r)) => out.trailers.extend_from_slice(&buf[r]),
            None => {}
        }
        out.consumed += step.consumed;
        out.done = step.done;
    }
    Ok(out)
}

fn decode(framing: BodyFraming, input: &[u8]) -> Result<Out, BodyError> {
    decode_in(Decoder::new(framing).with_trailers(Trailers::Return, 64), input, input.len())
}

fn chunked(input: &str) -> Result<(String, String, usize), BodyError> {
    let out = decode(BodyFraming::Chunked, input.as_bytes())?;
    assert!(out.done, "{input:?} should be complete");
    Ok((
        String::from_utf8(out.body).unwrap(),
        String::from_utf8(out.trailers).unwrap(),
        out.consumed,
    ))
}

/// Body and trailers, or the refusal.
type Want = Result<(&'static str, &'static str), BodyError>;

/// Chunked bodies, valid and not: name, input, what decoding gives.
const CHUNKED: &[(&str, &str, Want)] = &[
    ("empty body", "0\r\n\r\n", Ok(("", ""))),
    ("two chunks", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", Ok(("hello world", ""))),
    (
        "upper and lower hex",
        "a\r\n0123456789\r\nA\r\n0123456789\r\n0\r\n\r\n",
        Ok(("01234567890123456789", "")),
    ),
    ("leading zeros", "0005\r\nhello\r\n000\r\n\r\n", Ok(("hello", ""))),
    ("extensions", "5;a=b;c=\"d e\"\r\nhello\r\n0;last\r\n\r\n", Ok(("hello", ""))),
    ("spaces before an extension", "5 \t;a\r\nhello\r\n0\r\n\r\n", Ok(("hello", ""))),
    ("spaces before CR", "5  \r\nhello\r\n0\r\n\r\n", Ok(("hello", ""))),
    ("trailers", "1\r\nx\r\n0\r\nA: 1\r\nB-C:x y\r\n\r\n", Ok(("x", "A: 1\r\nB-C:x y\r\n"))),
    ("an empty trailer value", "0\r\nA:\r\n\r\n", Ok(("", "A:\r\n"))),
    ("CR LF inside data is data", "4\r\n\r\n\r\n\r\n0\r\n\r\n", Ok(("\r\n\r\n", ""))),
    ("no size", "\r\nhello\r\n0\r\n\r\n", Err(BodyError::ChunkSize)),
    ("a sign", "+5\r\nhello\r\n0\r\n\r\n", Err(BodyError::ChunkSize)),
    ("0x prefix", "0x5\r\nhello\r\n0\r\n\r\n", Err(BodyError::ChunkSize)),
    ("a space inside the size", "1 1\r\nhello\r\n", Err(BodyError::ChunkSize)),
    ("a size past 64 bits", "10000000000000000\r\n", Err(BodyError::ChunkSizeOverflow)),
    ("bare LF after the size", "5\nhello\r\n0\r\n\r\n", Err(BodyError::LineEnding)),
    ("bare LF in an extension", "5;a\nhello\r\n0\r\n\r\n", Err(BodyError::LineEnding)),
    ("bare CR after the size", "5\rhello\r\n0\r\n\r\n", Err(BodyError::LineEnding)),
    ("NUL in an extension", "5;a\0\r\nhello\r\n0\r\n\r\n", Err(BodyError::ChunkExtension)),
    ("data longer than its size", "3\r\nhello\r\n0\r\n\r\n", Err(BodyError::LineEnding)),
    ("bare LF after data", "5\r\nhello\n0\r\n\r\n", Err(BodyError::LineEnding)),
    ("bare LF ending the body", "0\r\n\n", Err(BodyError::LineEnding)),
    ("bare LF after a trailer", "0\r\nA: 1\n\r\n", Err(BodyError::LineEnding)),
    ("obs-fold in trailers", "0\r\nA: 1\r\n 2\r\n\r\n", Err(BodyError::Trailer)),
    ("a trailer without colon", "0\r\nA 1\r\n\r\n", Err(BodyError::Trailer)),
    ("NUL in a trailer", "0\r\nA: \0\r\n\r\n", Err(BodyError::Trailer)),
    (
        "trailers past the limit",
        "0\r\nA: 0123456789012345678901234567890123456789012345678901234567890\r\n\r\n",
        Err(BodyError::TrailersTooLarge),
    ),
];

#[test]
fn chunked_decoding_table() {
    for (case, input, want) in CHUNKED {
        let got = chunked(input).map(|(b, t, _)| (b, t));
        let want = want.map(|(b, t)| (b.to_string(), t.to_string()));
        assert_eq!(got, want, "{case}");
    }
}

#[test]
fn a_long_chunk_size_line_is_refused_but_a_long_body_is_not() {
    let line = format!("1;{}\r\nx\r\n0\r\n\r\n", "a".repeat(MAX_CHUNK_LINE));
    assert_eq!(chunked(&line), Err(BodyError::ChunkLineTooLong));
    let line = format!("1;{}\r\nx\r\n0\r\n\r\n", "a".repeat(MAX_CHUNK_LINE - 5));
    assert_eq!(chunked(&line).map(|(b, ..)| b), Ok("x".to_string()));
    // Every chunk-size line has its own budget.
    let ext = "a".repeat(MAX_CHUNK_LINE - 10);
    let many = format!("1;{ext}\r\nx\r\n1;{ext}\r\ny\r\n0;{ext}\r\n\r\n");
    assert_eq!(chunked(&many).map(|(b, ..)| b), Ok("xy".to_string()));
}

#[test]
fn bytes_after_the_end_belong_to_the_next_message() {
    let cases: &[(&str, BodyFraming, &str, usize)] = &[
        ("chunked", BodyFraming::Chunked, "1\r\nx\r\n0\r\n\r\nHTTP/1.1", 11),
        ("chunked with trailers", BodyFraming::Chunked, "0\r\nA: 1\r\n\r\nnext", 11),
        ("length", BodyFraming::Length(3), "abcdef", 3),
        ("no body", BodyFraming::NoBody, "abc", 0),
        ("zero length", BodyFraming::Length(0), "abc", 0),
    ];
    for (case, framing, input, consumed) in cases {
        let out = decode(*framing, input.as_bytes()).unwrap();
        assert_eq!((out.consumed, out.done), (*consumed, true), "{case}");
    }
}

#[test]
fn a_complete_or_failed_decoder_stays_so() {
    let mut dec = Decoder::new(BodyFraming::Length(2));
    assert_eq!(dec.remaining(), Some(2));
    let step = dec.decode(b"abc").unwrap();
    assert_eq!(step, Step { consumed: 2, piece: Some(Piece::Body(0..2)), done: true });
    assert_eq!(dec.decode(b"c").unwrap(), Step { consumed: 0, piece: None, done: true });
    assert!(dec.finish().is_ok() && dec.is_done());

    let mut dec = Decoder::new(BodyFraming::Chunked);
    assert_eq!(dec.decode(b"z"), Err(BodyError::ChunkSize));
    assert_eq!(dec.decode(b"0\r\n\r\n"), Err(BodyError::ChunkSize));
    assert_eq!(dec.finish(), Err(BodyError::ChunkSize));
}

#[test]
fn the_close_ends_an_until_close_body_and_cuts_any_other() {
    let mut dec = Decoder::new(BodyFraming::UntilClose);
    let step = dec.decode(b"abc").unwrap();
    assert_eq!(step, Step { consumed: 3, piece: Some(Piece::Body(0..3)), done: false });
    assert_eq!(dec.decode(b"").unwrap(), Step { consumed: 0, piece: None, done: false });
    assert_eq!((dec.finish(), dec.is_done()), (Ok(()), true));

    for (case, framing, input) in [
        ("short of the length", BodyFraming::Length(5), &b"abc"[..]),
        ("without the last chunk", BodyFraming::Chunked, b"3\r\nabc\r\n"),
        ("inside the trailers", BodyFraming::Chunked, b"0\r\nA: 1\r\n"),
    ] {
        let mut dec = Decoder::new(framing);
        assert!(!dec.decode(input).unwrap().done, "{case}");
        assert_eq!(dec.finish(), Err(BodyError::Incomplete), "{case}");
        assert_eq!(dec.decode(b"x"), Err(BodyError::Incomplete), "{case}");
    }
}

#[test]
fn skipped_trailers_are_consumed_but_not_returned() {
    let input = b"1\r\nx\r\n0\r\nA: 1\r\n\r\n";
    let out = decode_in(Decoder::new(BodyFraming::Chunked), input, 1).unwrap();
    assert_eq!((out.body, out.trailers, out.consumed, out.done), (b"x".to_vec(), vec![], 17, true));
}

#[test]
fn chunk_data_comes_back_as_ranges_of_the_input() {
    let mut dec = Decoder::new(BodyFraming::Chunked);
    let input = b"5\r\nhello\r\n";
    let step = dec.decode(input).unwrap();
    assert_eq!(step, Step { consumed: 8, piece: Some(Piece::Body(3..8)), done: false });
    let step = dec.decode(&input[8..]).unwrap();
    assert_eq!(step, Step { consumed: 2, piece: None, done: false });
}

#[test]
fn chunk_headers_are_upper_hex_sizes() {
    let cases: &[(usize, &str)] =
        &[(0, "0\r\n"), (1, "1\r\n"), (15, "F\r\n"), (16, "10\r\n"), (4096, "1000\r\n")];
    for (size, want) in cases {
        assert_eq!(ChunkHeader::new(*size).as_bytes(), want.as_bytes(), "{size}");
    }
    let max = ChunkHeader::new(usize::MAX);
    assert_eq!(max.as_bytes().len(), usize::BITS as usize / 4 + 2);
    let mut out = Vec::new();
    encode_chunk(&mut out, b"");
    encode_chunk(&mut out, b"hello");
    encode_last_chunk(&mut out, b"A: 1\r\n");
    assert_eq!(out, b"5\r\nhello\r\n0\r\nA: 1\r\n\r\n");
    out.clear();
    encode_last_chunk(&mut out, b"");
    assert_eq!(out, LAST_CHUNK);
}
