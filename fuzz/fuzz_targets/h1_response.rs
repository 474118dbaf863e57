//! Tether's HTTP/1.1 response codec (tether_core::h1: head parser, then body decoder) on
//! arbitrary bytes, read as a connection would read them: in reads cut at arbitrary points,
//! unconsumed bytes kept for the next parse, responses one after another, then the close.
//!
//! Invariants: no panic; every step consumes at most its input and returns its output inside
//! what it consumed; a complete body stays complete (and consumes nothing more); a failed one
//! keeps failing; and the cuts change nothing: the responses read (status, framing, body
//! bytes, consumed bytes) and whether the stream was refused are the same as in one read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_core::h1::{BodyFraming, Decoder, HeadLimits, Piece, Trailers, parse_response};

/// One response as read: status, framing, body and trailer bytes, stream bytes consumed.
type Read = (u16, BodyFraming, Vec<u8>, Vec<u8>, usize);

/// A connection's reading side: unconsumed bytes, the responses read, the body in progress.
struct Conn {
    buf: Vec<u8>,
    out: Vec<Read>,
    body: Option<(Decoder, Read)>,
    to_head: bool,
}

/// The stream was refused (a bad head or body).
struct Refused;

impl Conn {
    /// Reads `bytes` in reads ending at `cuts`; the responses, and whether it was refused.
    fn run(bytes: &[u8], cuts: &[usize], to_head: bool) -> (Vec<Read>, bool) {
        let mut conn = Conn { buf: Vec::new(), out: Vec::new(), body: None, to_head };
        let mut from = 0;
        let mut refused = false;
        for &to in cuts.iter().chain([bytes.len()].iter()) {
            conn.buf.extend_from_slice(&bytes[from..to]);
            from = to;
            refused = refused || conn.advance().is_err();
        }
        // The close: a body read until it ends; any other unfinished one was cut.
        if let Some((mut dec, read)) = conn.body.take().filter(|_| !refused) {
            refused = dec.finish().is_err();
            conn.out.extend((!refused).then_some(read));
        }
        (conn.out, refused)
    }

    /// Parses heads and decodes bodies until the buffer runs out.
    fn advance(&mut self) -> Result<(), Refused> {
        loop {
            let Some((dec, read)) = self.body.as_mut() else {
                if !self.head()? {
                    return Ok(());
                }
                continue;
            };
            let Ok(step) = dec.decode(&self.buf) else {
                assert!(dec.decode(b"0\r\n\r\n").is_err(), "a failure is final");
                return Err(Refused);
            };
            assert!(step.consumed <= self.buf.len());
            match step.piece {
                Some(Piece::Body(r)) => {
                    assert!(r.end <= step.consumed && !r.is_empty());
                    read.2.extend_from_slice(&self.buf[r]);
                }
                Some(Piece::Trailers(r)) => {
                    assert!(r.end <= step.consumed);
                    read.3.extend_from_slice(&self.buf[r]);
                }
                None => {}
            }
            self.buf.drain(..step.consumed);
            read.4 += step.consumed;
            if step.done {
                let again = dec.decode(&self.buf).ok().filter(|s| s.done && s.consumed == 0);
                assert!(again.is_some(), "a complete message stays complete");
                self.out.extend(self.body.take().map(|(_, read)| read));
            } else if self.buf.is_empty() {
                return Ok(());
            }
        }
    }

    /// Parses a head at the start of the buffer; whether there was a whole one.
    fn head(&mut self) -> Result<bool, Refused> {
        let limits = HeadLimits { max_head_bytes: 512, max_headers: 8 };
        let head = match parse_response(&self.buf, &limits, self.to_head, &mut Vec::new()) {
            Ok(Some(head)) => head,
            Ok(None) => return Ok(false),
            Err(_) => return Err(Refused),
        };
        assert!(head.len <= self.buf.len() && head.len <= 512);
        self.buf.drain(..head.len);
        let dec = Decoder::new(head.framing).with_trailers(Trailers::Return, 256);
        self.body = Some((dec, (head.status, head.framing, vec![], vec![], head.len)));
        Ok(true)
    }
}

fuzz_target!(|data: &[u8]| {
    // Two bytes of cuts (read sizes), a flag byte, then the stream.
    let [a, b, flags, bytes @ ..] = data else { return };
    let to_head = flags & 1 == 1;
    let first = usize::from(*a).min(bytes.len());
    let second = (first + usize::from(*b)).min(bytes.len());
    let whole = Conn::run(bytes, &[], to_head);
    let split = Conn::run(bytes, &[first, second], to_head);
    assert_eq!(split, whole, "cuts at {first} and {second}");
    let consumed: usize = whole.0.iter().map(|r| r.4).sum();
    assert!(consumed <= bytes.len());
});
