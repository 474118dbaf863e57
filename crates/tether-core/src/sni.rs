//! Reading the server name (SNI) out of a TLS ClientHello without terminating TLS.
//!
//! A TLS passthrough listener routes a connection by the host name the client asked for,
//! then replays the bytes it read to the chosen server, which does the handshake itself.
//! [`peek_client_hello`] is the pure half of that: given the bytes read so far, it says
//! whether to read more, which name the hello carries, or that the connection must close.
//!
//! It follows RFC 8446 §4.1.2 / RFC 5246 §7.4.1.2 and RFC 6066 §3:
//!
//! - the stream starts with handshake records (type 22, version 3.x, length 1..=2^14); the
//!   ClientHello may be split over several of them and is reassembled (copied only then);
//! - the handshake message is a ClientHello (type 1) whose every length is checked against
//!   the bytes that hold it, and which it must fill exactly;
//! - extensions may be absent (TLS 1.2 and older), which means no server name;
//! - the `server_name` extension (0) carries one `host_name` entry; entries of unknown name
//!   types are skipped, as Go's crypto/tls does; a second `host_name` or a second
//!   `server_name` extension is malformed, since Tether and the server could each read a
//!   different one and route and serve different names.
//!
//! Host names are case-insensitive: the name is returned lower-cased (borrowed from the
//! buffer when it already is), so that the caller can look it up as it is.

use std::borrow::Cow;

/// The most bytes of a stream Tether reads for a ClientHello: 16 KiB, record headers
/// included, so that a caller reading into a buffer of this size never hears
/// [`Peek::NeedMore`] once it is full. Real hellos are 0.2–2 KiB (a few more with large
/// session tickets).
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// The longest host name (RFC 1035 §2.3.4, in its dotted text form).
pub const MAX_HOST_NAME: usize = 255;

/// What the bytes read so far say about the ClientHello at the start of a TLS stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek<'a> {
    /// Not enough bytes yet: read more (the caller enforces its timeout). Never returned
    /// for a buffer of [`MAX_CLIENT_HELLO`] bytes or more.
    NeedMore,
    /// A complete ClientHello. `sni` is its host name, a valid DNS name in lower case
    /// (see [`is_host_name`]), or `None` when the hello has no `server_name` extension.
    Hello {
        /// The requested host name: borrowed from the buffer unless the hello spanned
        /// several records or the name had upper-case letters.
        sni: Option<Cow<'a, str>>,
    },
    /// Not a TLS ClientHello at all (plain HTTP, SSLv2), or a malformed one: close the
    /// connection. The text says what was wrong, for a log field.
    Malformed(&'static str),
    /// The ClientHello would need more than [`MAX_CLIENT_HELLO`] bytes: close the connection.
    TooLarge,
}

/// Judges the ClientHello at the start of `buf`, the bytes read so far from a TLS client.
///
/// Bytes after the ClientHello are ignored (the caller replays everything it read). Every
/// prefix of a valid hello gives [`Peek::NeedMore`]; garbage is told apart from the first
/// byte that is wrong, so plain HTTP (`G...`) is [`Peek::Malformed`] at once.
pub fn peek_client_hello(buf: &[u8]) -> Peek<'_> {
    let sni = reassemble(buf).and_then(|hello| match hello {
        Cow::Borrowed(hello) => Ok(server_name(hello)?.map(lower_case)),
        Cow::Owned(hello) => Ok(server_name(&hello)?.map(|s| Cow::Owned(s.to_ascii_lowercase()))),
    });
    match sni {
        Ok(sni) => Peek::Hello { sni },
        Err(Stop::NeedMore) => Peek::NeedMore,
        Err(Stop::TooLarge) => Peek::TooLarge,
        Err(Stop::Malformed(why)) => Peek::Malformed(why),
    }
}

/// Whether `name` is a host name Tether routes by: 1 to 255 bytes of ASCII letters, digits,
/// `-` and `.`, in labels of 1 to 63 bytes (so no leading, trailing or doubled dot: RFC 6066
/// sends the name without the root's trailing dot). Underscores are refused, as in host
/// names (RFC 1123); hyphens are not checked for position.
pub fn is_host_name(name: &[u8]) -> bool {
    (1..=MAX_HOST_NAME).contains(&name.len())
        && name.split(|&b| b == b'.').all(|label| {
            (1..=63).contains(&label.len())
                && label.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        })
}

fn lower_case(name: &str) -> Cow<'_, str> {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// Why a ClientHello could not be returned (yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    NeedMore,
    TooLarge,
    Malformed(&'static str),
}

// === record layer ===

const RECORD_HEADER: usize = 5;
/// RFC 8446 §5.1: a plaintext record's fragment is at most 2^14 bytes.
const MAX_FRAGMENT: usize = 1 << 14;
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_HEADER: usize = 4;
const CLIENT_HELLO: u8 = 1;

/// One handshake record at the start of a stream's tail, perhaps not all read yet.
struct Record<'a> {
    /// The fragment bytes read so far.
    fragment: &'a [u8],
    /// Where the record ends in the stream.
    end: usize,
}

/// The record starting at `at`: its header is checked as far as it was read, so that
/// garbage is refused from its first byte.
fn record(buf: &[u8], at: usize) -> Result<Record<'_>, Stop> {
    let head = buf.get(at..).unwrap_or_default();
    let head = head.get(..RECORD_HEADER).unwrap_or(head);
    if head.first().is_some_and(|&t| t != CONTENT_HANDSHAKE) {
        return Err(Stop::Malformed("not a TLS handshake record"));
    }
    if head.get(1).is_some_and(|&major| major != 3) {
        return Err(Stop::Malformed("record version is not 3.x"));
    }
    let [_, _, _, hi, lo] = *head else {
        return Err(need_up_to(at + RECORD_HEADER));
    };
    let declared = usize::from(u16::from_be_bytes([hi, lo]));
    if declared == 0 || declared > MAX_FRAGMENT {
        return Err(Stop::Malformed("record length out of range"));
    }
    let end = at + RECORD_HEADER + declared;
    if end > MAX_CLIENT_HELLO {
        return Err(Stop::TooLarge);
    }
    let fragment = buf.get(at + RECORD_HEADER..end.min(buf.len())).unwrap_or_default();
    Ok(Record { fragment, end })
}

/// More bytes are needed for the stream to reach `end`.
fn need_up_to(end: usize) -> Stop {
    if end > MAX_CLIENT_HELLO { Stop::TooLarge } else { Stop::NeedMore }
}

/// The ClientHello handshake message (header included) from the records at the start of
/// `buf`: borrowed when one record holds it, as nearly every client sends it.
fn reassemble(buf: &[u8]) -> Result<Cow<'_, [u8]>, Stop> {
    let (mut at, mut joined) = (0, Cow::Borrowed(&[][..]));
    loop {
        let record = record(buf, at)?;
        if joined.is_empty() {
            joined = Cow::Borrowed(record.fragment);
        } else {
            joined.to_mut().extend_from_slice(record.fragment);
        }
        if let Some(len) = hello_len(&joined)?.filter(|&len| joined.len() >= len) {
            return Ok(match joined {
                Cow::Borrowed(b) => Cow::Borrowed(&b[..len]),
                Cow::Owned(mut v) => {
                    v.truncate(len);
                    Cow::Owned(v)
                }
            });
        }
        if record.end > buf.len() {
            return Err(Stop::NeedMore);
        }
        at = record.end;
    }
}

/// The ClientHello's length with its header, once its header is read.
fn hello_len(handshake: &[u8]) -> Result<Option<usize>, Stop> {
    if handshake.first().is_some_and(|&t| t != CLIENT_HELLO) {
        return Err(Stop::Malformed("first handshake message is not a ClientHello"));
    }
    let Some(&[_, a, b, c]) = handshake.get(..HANDSHAKE_HEADER) else {
        return Ok(None);
    };
    let len = HANDSHAKE_HEADER + (usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c));
    // The hello needs one record header at least around it.
    if RECORD_HEADER + len > MAX_CLIENT_HELLO {
        return Err(Stop::TooLarge);
    }
    Ok(Some(len))
}

// === ClientHello ===

/// Checked big-endian reads over a complete message: a length pointing past its end is
/// malformed, never a panic.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], &'static str> {
        let (head, rest) = self.0.split_at_checked(n).ok_or(what)?;
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, &'static str> {
        let &[b] = self.take(1, what)? else { return Err(what) };
        Ok(b)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, &'static str> {
        let &[hi, lo] = self.take(2, what)? else { return Err(what) };
        Ok(u16::from_be_bytes([hi, lo]))
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], &'static str> {
        let len = self.u8(what)?;
        self.take(usize::from(len), what)
    }

    /// A vector with a two-byte length prefix.
    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], &'static str> {
        let len = self.u16(what)?;
        self.take(usize::from(len), what)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The host name in a complete ClientHello handshake message (header included).
fn server_name(hello: &[u8]) -> Result<Option<&str>, Stop> {
    client_hello_body(hello.get(HANDSHAKE_HEADER..).unwrap_or_default()).map_err(Stop::Malformed)
}

fn client_hello_body(body: &[u8]) -> Result<Option<&str>, &'static str> {
    let mut c = Cursor(body);
    if c.u16("truncated legacy_version")? >> 8 != 3 {
        return Err("ClientHello version is not 3.x");
    }
    c.take(32, "truncated random")?;
    if c.vec8("truncated legacy_session_id")?.len() > 32 {
        return Err("legacy_session_id longer than 32 bytes");
    }
    let suites = c.vec16("truncated cipher_suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err("cipher_suites empty or of odd length");
    }
    if c.vec8("truncated legacy_compression_methods")?.is_empty() {
        return Err("no compression method");
    }
    if c.is_empty() {
        return Ok(None); // TLS 1.2 and older may send no extensions at all
    }
    let extensions = c.vec16("truncated extensions")?;
    if !c.is_empty() {
        return Err("bytes after the extensions");
    }
    find_server_name(extensions)
}

const EXT_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST_NAME: u8 = 0;

fn find_server_name(extensions: &[u8]) -> Result<Option<&str>, &'static str> {
    let (mut c, mut found) = (Cursor(extensions), None);
    while !c.is_empty() {
        let kind = c.u16("truncated extension type")?;
        let data = c.vec16("truncated extension")?;
        if kind == EXT_SERVER_NAME {
            if found.is_some() {
                return Err("two server_name extensions");
            }
            found = Some(host_name(data)?);
        }
    }
    Ok(found)
}

/// The `host_name` entry of a `server_name` extension (RFC 6066 §3).
fn host_name(extension: &[u8]) -> Result<&str, &'static str> {
    let mut outer = Cursor(extension);
    let mut list = Cursor(outer.vec16("truncated server_name_list")?);
    if !outer.is_empty() || list.is_empty() {
        return Err("server_name extension is not one non-empty list");
    }
    let mut host = None;
    while !list.is_empty() {
        let kind = list.u8("truncated name_type")?;
        let name = list.vec16("truncated server name")?;
        if kind != NAME_TYPE_HOST_NAME {
            continue;
        }
        if host.is_some() {
            return Err("two host_name entries");
        }
        if !is_host_name(name) {
            return Err("server name is not a valid host name");
        }
        // Infallible: is_host_name accepts ASCII only.
        host = std::str::from_utf8(name).ok();
    }
    host.ok_or("server_name extension without a host_name")
}

#[cfg(test)]
mod tests;
