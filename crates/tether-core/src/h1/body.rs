//! Message bodies on the wire: the streaming [`Decoder`] and the chunked encoder.
//!
//! The decoder is a state machine fed the bytes of a connection in reads of any size. Each
//! [`Decoder::decode`] call looks at the start of its input and returns a [`Step`]: how many
//! input bytes it consumed, at most one [`Piece`] of output — a range *of the input* (body
//! bytes, or in [`Trailers::Return`] mode the trailer field lines), never a copy — and whether
//! the message is complete. The caller calls again with the rest of its input; once the
//! message is complete, the bytes from `consumed` on belong to the next message, and every
//! later call answers "complete, nothing consumed". Nothing is buffered: a chunk-size line or
//! a trailer split across reads is followed byte by byte, so the caller may drop what was
//! consumed.
//!
//! Chunked framing is strict (RFC 9112 §7.1), because a lenient chunk parser is how a
//! server's body gets read as the next response: every line ends in CR LF (a bare LF, or a CR
//! not followed by LF, is an error), the size is hex digits (optionally followed by spaces or
//! tabs, then extensions after `;`), a size past 64 bits is an error, the data is followed by
//! CR LF exactly, a size line is at most [`MAX_CHUNK_LINE`] bytes, and trailer fields must be
//! well-formed `name: value` lines within the decoder's trailer limit. Extensions are skipped
//! (any field-value byte is allowed in them). An error is final: the decoder keeps answering
//! it, and the connection must be closed.
//!
//! A body read [`BodyFraming::UntilClose`] ends only when the caller reports the close
//! ([`Decoder::finish`]); `finish` on any other unfinished body says it was cut short.

use std::ops::Range;

use super::{is_field_value_byte, is_tchar};

/// The longest chunk-size line, extensions and CR LF included.
pub const MAX_CHUNK_LINE: usize = 4096;

/// Trailer bytes a decoder accepts by default (the default response-head limit).
pub const DEFAULT_MAX_TRAILER_BYTES: usize = 65536;

/// How a message's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body, whatever the headers say (`HEAD`, `1xx`, `204`, `304`).
    NoBody,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
    /// Everything until the sender closes the connection (a response without framing).
    UntilClose,
}

/// What the chunked decoder does with trailer fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Trailers {
    /// Validate and drop them (the default).
    #[default]
    Skip,
    /// Return them as [`Piece::Trailers`]: the field lines as received, each ending CR LF,
    /// without the final empty line.
    Return,
}

/// Output of one [`Decoder::decode`] call: a range of that call's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Body bytes (chunk data with the framing removed).
    Body(Range<usize>),
    /// Trailer field lines (only in [`Trailers::Return`] mode).
    Trailers(Range<usize>),
}

impl Piece {
    /// The range of the input, whatever it holds.
    pub fn range(&self) -> Range<usize> {
        match self {
            Piece::Body(r) | Piece::Trailers(r) => r.clone(),
        }
    }
}

/// What one [`Decoder::decode`] call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Input bytes used; the next call starts at this offset. Zero only when the input was
    /// empty or the message was already complete.
    pub consumed: usize,
    /// At most one range of output, within `..consumed`.
    pub piece: Option<Piece>,
    /// The message is complete: the input from `consumed` on is not part of it.
    pub done: bool,
}

/// Why a body is refused. Every variant means the connection must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// A chunk-size line that does not start with a hex digit, or has junk after the size.
    #[error("invalid chunk size")]
    ChunkSize,
    /// A chunk size past 64 bits.
    #[error("chunk size too large")]
    ChunkSizeOverflow,
    /// A control byte in a chunk extension.
    #[error("invalid chunk extension")]
    ChunkExtension,
    /// A chunk-size line longer than [`MAX_CHUNK_LINE`].
    #[error("chunk-size line too long")]
    ChunkLineTooLong,
    /// A bare LF, a CR not followed by LF, or chunk data not followed by CR LF.
    #[error("chunked body line not ended by CR LF")]
    LineEnding,
    /// A malformed trailer field line.
    #[error("invalid trailer field")]
    Trailer,
    /// More trailer bytes than the decoder's limit.
    #[error("trailer section too large")]
    TrailersTooLarge,
    /// The connection closed before the body was complete.
    #[error("body cut short by the connection's close")]
    Incomplete,
}

/// Where the decoder is in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Body bytes still expected (`Content-Length`).
    Length(u64),
    /// Everything until the close.
    UntilClose,
    /// At the first byte of a chunk-size line.
    SizeStart,
    /// In the hex digits; the size so far.
    SizeDigits(u64),
    /// In spaces or tabs after the digits.
    SizeSpace(u64),
    /// In the extensions.
    Extension(u64),
    /// After the size line's CR.
    SizeLf(u64),
    /// Inside chunk data: bytes still expected.
    Data(u64),
    /// The CR after chunk data.
    DataCr,
    /// The LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// In a trailer field name.
    TrailerName,
    /// In a trailer field value.
    TrailerValue,
    /// After a trailer line's CR.
    TrailerLf,
    /// After the final empty line's CR.
    EndLf,
    /// The message is complete.
    Done,
    /// A framing error; final.
    Failed(BodyError),
}

impl State {
    /// Part of a chunk-size line.
    fn in_size_line(self) -> bool {
        matches!(
            self,
            State::SizeStart
                | State::SizeDigits(_)
                | State::SizeSpace(_)
                | State::Extension(_)
                | State::SizeLf(_)
        )
    }

    /// Part of the trailer section (final empty line included).
    fn in_trailers(self) -> bool {
        matches!(
            self,
            State::TrailerStart
                | State::TrailerName
                | State::TrailerValue
                | State::TrailerLf
                | State::EndLf
        )
    }
}

/// The streaming decoder of one message body; see the module docs for the contract.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
    trailers: Trailers,
    max_trailer_bytes: usize,
    /// Bytes of the current chunk-size line, or of the trailer section, so far.
    line: usize,
}

// === impl Decoder ===

impl Decoder {
    /// A decoder for a body framed by `framing`; trailers skipped, at most
    /// [`DEFAULT_MAX_TRAILER_BYTES`] of them.
    pub fn new(framing: BodyFraming) -> Self {
        let state = match framing {
            BodyFraming::NoBody | BodyFraming::Length(0) => State::Done,
            BodyFraming::Length(n) => State::Length(n),
            BodyFraming::Chunked => State::SizeStart,
            BodyFraming::UntilClose => State::UntilClose,
        };
        Self {
            state,
            trailers: Trailers::Skip,
            max_trailer_bytes: DEFAULT_MAX_TRAILER_BYTES,
            line: 0,
        }
    }

    /// The same decoder with trailers handled by `mode`, at most `max_bytes` of them (the
    /// final empty line included).
    pub fn with_trailers(mut self, mode: Trailers, max_bytes: usize) -> Self {
        self.trailers = mode;
        self.max_trailer_bytes = max_bytes;
        self
    }

    /// Whether the message is complete.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Body bytes still expected, when the body has a length.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Done => Some(0),
            _ => None,
        }
    }

    /// Decodes from the start of `input`; see [`Step`].
    pub fn decode(&mut self, input: &[u8]) -> Result<Step, BodyError> {
        match self.state {
            State::Failed(e) => Err(e),
            State::Done => Ok(Step { consumed: 0, piece: None, done: true }),
            State::Length(left) => {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                let left = left - n as u64;
                self.state = if left == 0 { State::Done } else { State::Length(left) };
                Ok(Step { consumed: n, piece: body(0..n), done: left == 0 })
            }
            State::UntilClose => {
                Ok(Step { consumed: input.len(), piece: body(0..input.len()), done: false })
            }
            _ => self.chunked(input).inspect_err(|e| self.state = State::Failed(*e)),
        }
    }

    /// The connection closed: completes a body read until the close; any other unfinished
    /// body was cut short ([`BodyError::Incomplete`]).
    pub fn finish(&mut self) -> Result<(), BodyError> {
        match self.state {
            State::Done | State::UntilClose => {
                self.state = State::Done;
                Ok(())
            }
            State::Failed(e) => Err(e),
            _ => {
                self.state = State::Failed(BodyError::Incomplete);
                Err(BodyError::Incomplete)
            }
        }
    }

    /// One step of a chunked body: framing bytes one at a time, chunk data as one range.
    fn chunked(&mut self, input: &[u8]) -> Result<Step, BodyError> {
        let mut at = 0;
        // The trailer field bytes seen in this call (they are contiguous).
        let mut trailer: Option<Range<usize>> = None;
        while at < input.len() && self.state != State::Done {
            if let State::Data(left) = self.state {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(input.len() - at);
                let left = left - n as u64;
                self.state = if left == 0 { State::DataCr } else { State::Data(left) };
                return Ok(Step { consumed: at + n, piece: body(at..at + n), done: false });
            }
            let (before, b) = (self.state, input[at]);
            self.count()?;
            let field =
                matches!(before, State::TrailerName | State::TrailerValue | State::TrailerLf)
                    || before == State::TrailerStart && b != b'\r';
            if field {
                trailer.get_or_insert(at..at).end = at + 1;
            }
            self.state = next(before, b)?;
            if self.state == State::SizeStart || before.in_size_line() && self.state.in_trailers() {
                self.line = 0; // A new size line, or the trailer section, starts.
            }
            at += 1;
        }
        let piece = match (self.trailers, trailer) {
            (Trailers::Return, Some(r)) => Some(Piece::Trailers(r)),
            _ => None,
        };
        Ok(Step { consumed: at, piece, done: self.state == State::Done })
    }

    /// Counts one framing byte against the size-line or trailer limit.
    fn count(&mut self) -> Result<(), BodyError> {
        self.line += 1;
        if self.state.in_size_line() && self.line > MAX_CHUNK_LINE {
            return Err(BodyError::ChunkLineTooLong);
        }
        if self.state.in_trailers() && self.line > self.max_trailer_bytes {
            return Err(BodyError::TrailersTooLarge);
        }
        Ok(())
    }
}

/// A body piece, unless empty.
fn body(range: Range<usize>) -> Option<Piece> {
    (!range.is_empty()).then_some(Piece::Body(range))
}

/// The chunked framing's transition on one byte (every state but data, done and failed).
fn next(state: State, b: u8) -> Result<State, BodyError> {
    use State::*;
    let hex = (b as char).to_digit(16).map(u64::from);
    Ok(match (state, b) {
        (SizeStart, _) => SizeDigits(hex.ok_or(BodyError::ChunkSize)?),
        (SizeDigits(v), _) if hex.is_some() => {
            if v > u64::MAX >> 4 {
                return Err(BodyError::ChunkSizeOverflow);
            }
            SizeDigits(v << 4 | hex.unwrap_or(0))
        }
        (SizeDigits(v) | SizeSpace(v), b' ' | b'\t') => SizeSpace(v),
        (SizeDigits(v) | SizeSpace(v) | Extension(v), b';') => Extension(v),
        (SizeDigits(v) | SizeSpace(v) | Extension(v), b'\r') => SizeLf(v),
        (SizeDigits(_) | SizeSpace(_), b'\n') => return Err(BodyError::LineEnding),
        (SizeDigits(_) | SizeSpace(_), _) => return Err(BodyError::ChunkSize),
        (Extension(v), _) if b != b'\n' && is_field_value_byte(b) => Extension(v),
        (Extension(_), b'\n') => return Err(BodyError::LineEnding),
        (Extension(_), _) => return Err(BodyError::ChunkExtension),
        (SizeLf(0), b'\n') => TrailerStart,
        (SizeLf(v), b'\n') => Data(v),
        (DataCr, b'\r') => DataLf,
        (DataLf, b'\n') => SizeStart,
        (TrailerStart, b'\r') => EndLf,
        (TrailerStart | TrailerName, _) if is_tchar(b) => TrailerName,
        (TrailerName, b':') => TrailerValue,
        (TrailerValue, b'\r') => TrailerLf,
        (TrailerValue, _) if b != b'\n' && is_field_value_byte(b) => TrailerValue,
        (TrailerLf, b'\n') => TrailerStart,
        (EndLf, b'\n') => Done,
        (SizeLf(_) | DataCr | DataLf | TrailerLf | EndLf, _) => {
            return Err(BodyError::LineEnding);
        }
        (TrailerStart | TrailerValue, b'\n') => return Err(BodyError::LineEnding),
        (TrailerStart | TrailerName | TrailerValue, _) => return Err(BodyError::Trailer),
        (Length(_) | UntilClose | Data(_) | Done | Failed(_), _) => state,
    })
}

// === chunked encoding ===

/// The last chunk of a body without trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// What follows every chunk's data.
pub const CHUNK_END: &[u8] = b"\r\n";

/// A chunk's size line (`HEX CR LF`), on the stack: for vectored writes of
/// `header, data, CHUNK_END` without copying the data.
#[derive(Debug, Clone, Copy)]
pub struct ChunkHeader {
    bytes: [u8; 18],
    len: u8,
}

impl ChunkHeader {
    /// The size line of a chunk of `size` bytes (a size of zero is the last chunk's line:
    /// use [`encode_chunk`], which writes nothing for empty data).
    pub fn new(size: usize) -> Self {
        let mut bytes = [0u8; 18];
        let digits = (usize::BITS - size.leading_zeros()).div_ceil(4).max(1) as usize;
        for (i, slot) in bytes[..digits].iter_mut().enumerate() {
            let nibble = (size >> (4 * (digits - 1 - i))) & 0xf;
            *slot = b"0123456789ABCDEF"[nibble];
        }
        bytes[digits] = b'\r';
        bytes[digits + 1] = b'\n';
        Self { bytes, len: (digits + 2) as u8 }
    }

    /// The line's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Writes `data` as one chunk; nothing when it is empty (an empty chunk would end the body).
pub fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    out.extend_from_slice(ChunkHeader::new(data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(CHUNK_END);
}

/// Writes the last chunk, with `trailers` — complete field lines each ending CR LF, as
/// [`Trailers::Return`] gives them — or none when empty.
pub fn encode_last_chunk(out: &mut Vec<u8>, trailers: &[u8]) {
    out.extend_from_slice(b"0\r\n");
    out.extend_from_slice(trailers);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests;
