//! Tether's own HTTP/1.1 codec (issue 13): the pure pieces of the engine that will replace
//! hyper's HTTP/1.1 client and server. Nothing here touches a socket or a clock; the engine
//! owns the buffers and the I/O and asks these functions what the bytes mean.
//!
//! - [`response`]: a server's response head, parsed with httparse, and its body framing by
//!   RFC 9112 §6.3 and Tether's response-framing policy (docs/security.md, "Response
//!   framing"): no body, a length, chunked, or until the server closes — and whether the
//!   server's connection may carry another request afterwards.
//! - [`head`]: a client's request head, parsed with httparse and judged by Tether's
//!   request-framing policy in the same pass (the refusals of hyper and of
//!   `proxy::framing` today, each with its status): its one body framing, and whether the
//!   client asked to close, to upgrade or for `100 Continue`.
//! - [`body`]: the streaming body decoder (by length, chunked, until close), fed reads of any
//!   size, returning ranges of its input and never buffering a body; and the chunked encoder.
//! - [`request`]: the request head Tether writes to a server, in one pass, refusing bytes
//!   that would let a header value start another line.
//! - [`reply`]: the response head Tether writes to a client, with the one framing header
//!   Tether chose (never the server's).
//!
//! The contract shared by all three: input may arrive split at any byte, and the answer
//! (head, decoded bytes, bytes consumed) is the same as if it had arrived in one read. The
//! property tests in `h1/tests.rs` hold the codec to that.

pub mod body;
pub mod head;
pub mod reply;
pub mod request;
pub mod response;

#[cfg(test)]
mod tests;

pub use body::{BodyError, BodyFraming, Decoder, Piece, Step, Trailers};
pub use head::{RequestHead, RequestHeadError, parse_request};
pub use request::{RequestError, write_request_head};
pub use response::{
    HeadLimits, HeaderSpan, ResponseError, ResponseHead, Span, connection_named, is_hop_by_hop,
    parse_response,
};

/// Header slots httparse gets on the stack; a larger `max_headers` costs one allocation per
/// parse (hyper does the same past its default of 100).
const STACK_HEADERS: usize = 100;

/// Where httparse writes the header lines of one parse: uninitialised slots (httparse writes
/// only those it fills, so a parse costs no memset), on the stack up to [`STACK_HEADERS`].
pub(crate) struct HeaderSlots<'b> {
    stack: [std::mem::MaybeUninit<httparse::Header<'b>>; STACK_HEADERS],
    heap: Vec<std::mem::MaybeUninit<httparse::Header<'b>>>,
}

impl<'b> HeaderSlots<'b> {
    pub(crate) fn new() -> Self {
        Self { stack: [const { std::mem::MaybeUninit::uninit() }; STACK_HEADERS], heap: Vec::new() }
    }

    /// `max` slots: the parse refuses a head with more lines.
    pub(crate) fn get(&mut self, max: usize) -> &mut [std::mem::MaybeUninit<httparse::Header<'b>>] {
        match self.stack.get_mut(..max) {
            Some(slots) => slots,
            None => {
                self.heap.resize_with(max, std::mem::MaybeUninit::uninit);
                &mut self.heap[..]
            }
        }
    }
}

/// A byte of an RFC 9110 token (method, header name, coding name).
pub(crate) fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// [`is_tchar`] for each byte value: every header name Tether writes is checked byte by byte,
/// and a lookup is cheaper than searching the list of symbols.
const TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = (i as u8).is_ascii_alphanumeric();
        i += 1;
    }
    let symbols = b"!#$%&'*+-.^_`|~";
    let mut j = 0;
    while j < symbols.len() {
        table[symbols[j] as usize] = true;
        j += 1;
    }
    table
};

/// A byte allowed in a field value (RFC 9110 §5.5): visible ASCII, obs-text, space, tab.
pub(crate) fn is_field_value_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

/// Whether every byte of `bytes` is an RFC 9110 token byte. Checked without an early exit:
/// every head Tether writes passes, so a branch per byte only costs (two to three times the
/// instructions of this fold, measured with callgrind).
pub(crate) fn all_tchar(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |ok, &b| ok & is_tchar(b))
}

/// Whether every byte of `bytes` may stand in a field value: eight bytes per step (every
/// value Tether writes is checked, most are 10 to 40 bytes long, and a loop per byte cost
/// ~6 instructions a byte, measured with callgrind). A tail shorter than eight is checked
/// as the last eight bytes again when there are that many, else padded with spaces.
pub(crate) fn all_field_value_bytes(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(8);
    let mut bad = 0;
    for word in &mut words {
        bad |= non_value_bytes(word_at(word));
    }
    if !words.remainder().is_empty() {
        let last = match bytes.len().checked_sub(8) {
            Some(start) => word_at(&bytes[start..]),
            None => {
                let mut padded = [b' '; 8];
                padded[..bytes.len()].copy_from_slice(bytes);
                u64::from_le_bytes(padded)
            }
        };
        bad |= non_value_bytes(last);
    }
    bad == 0
}

/// The first eight bytes of `bytes` (which has at least eight) as one word.
fn word_at(bytes: &[u8]) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(word)
}

/// `byte` repeated in the eight bytes of a word.
const fn splat(byte: u8) -> u64 {
    byte as u64 * 0x0101_0101_0101_0101
}

const LOW7: u64 = splat(0x7f);
const HIGH: u64 = splat(0x80);

/// The high bit of each byte set where that byte of `x` is zero (exact: no carry crosses
/// bytes, since no byte of `(x & LOW7) + LOW7` exceeds 0xfe).
fn zero_bytes(x: u64) -> u64 {
    !(((x & LOW7) + LOW7) | x) & HIGH
}

/// The high bit of each byte set where that byte of `x` may not stand in a field value: a
/// control byte other than tab, or DEL. `(x & LOW7) + 0x60` reaches 0x80 exactly when the
/// low seven bits are at least 0x20; or-ed with `x`, the high bit stays clear only below 0x20.
fn non_value_bytes(x: u64) -> u64 {
    let control = !(((x & LOW7) + splat(0x80 - 0x20)) | x) & HIGH;
    (control & !zero_bytes(x ^ splat(b'\t'))) | zero_bytes(x ^ splat(0x7f))
}

/// Which part of a header line was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineFault {
    /// The name is empty or not a token.
    Name,
    /// The value has a CR, LF, NUL or another control byte.
    Value,
}

/// Appends `name: value` and CRLF once the name is a token and the value holds no byte that
/// could end the line (so no value can smuggle another header).
pub(crate) fn push_header_line(
    out: &mut Vec<u8>,
    name: &[u8],
    value: &[u8],
) -> Result<(), LineFault> {
    if name.is_empty() || !all_tchar(name) {
        return Err(LineFault::Name);
    }
    if !all_field_value_bytes(value) {
        return Err(LineFault::Value);
    }
    out.reserve(name.len() + value.len() + 4);
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
    Ok(())
}
