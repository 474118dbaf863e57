//! What happens on a client connection before HTTP: the PROXY protocol header (v1 text or
//! v2 binary, through the `ppp` crate) from trusted proxies, and a reader that hands bytes
//! read past that header on to the HTTP layer.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use ppp::{HeaderResult, PartialResult};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The longest PROXY header accepted (v1 is at most 107 bytes; v2 is 16 plus addresses and
/// TLVs, which real proxies keep small).
const MAX_PROXY_HEADER: usize = 4096;

/// Why a PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The connection closed or failed before a whole header arrived.
    #[error("connection ended before the PROXY header: {0}")]
    Io(#[from] io::Error),
    /// The bytes are not a PROXY header.
    #[error("invalid PROXY protocol header: {0}")]
    Invalid(String),
    /// More than [`MAX_PROXY_HEADER`] bytes without a complete header.
    #[error("PROXY protocol header longer than {MAX_PROXY_HEADER} bytes")]
    TooLong,
}

/// Reads the PROXY header at the start of `stream`. Returns the client address it carries
/// (`None` for a `LOCAL` / `UNKNOWN` header: the proxy's own connection, e.g. a health
/// check) and the bytes read past the header.
pub async fn read_proxy_header<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(Option<SocketAddr>, Bytes), ProxyHeaderError> {
    let mut buf = BytesMut::with_capacity(256);
    loop {
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(ProxyHeaderError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        let parsed = HeaderResult::parse(&buf);
        if parsed.is_incomplete() {
            if buf.len() >= MAX_PROXY_HEADER {
                return Err(ProxyHeaderError::TooLong);
            }
            continue;
        }
        let (len, addr) = match parsed {
            HeaderResult::V1(Ok(h)) => (h.header.len(), v1_source(&h.addresses)),
            HeaderResult::V2(Ok(h)) => {
                let addr = match h.command {
                    ppp::v2::Command::Local => None,
                    ppp::v2::Command::Proxy => v2_source(&h.addresses),
                };
                (h.len(), addr)
            }
            HeaderResult::V1(Err(e)) => return Err(ProxyHeaderError::Invalid(e.to_string())),
            HeaderResult::V2(Err(e)) => return Err(ProxyHeaderError::Invalid(e.to_string())),
        };
        buf.advance(len);
        return Ok((addr, buf.freeze()));
    }
}

fn v1_source(a: &ppp::v1::Addresses) -> Option<SocketAddr> {
    match a {
        ppp::v1::Addresses::Tcp4(ip) => {
            Some(SocketAddr::new(IpAddr::V4(ip.source_address), ip.source_port))
        }
        ppp::v1::Addresses::Tcp6(ip) => {
            Some(SocketAddr::new(ip.source_address.to_canonical(), ip.source_port))
        }
        ppp::v1::Addresses::Unknown => None,
    }
}

fn v2_source(a: &ppp::v2::Addresses) -> Option<SocketAddr> {
    match a {
        ppp::v2::Addresses::IPv4(ip) => {
            Some(SocketAddr::new(IpAddr::V4(ip.source_address), ip.source_port))
        }
        ppp::v2::Addresses::IPv6(ip) => {
            Some(SocketAddr::new(ip.source_address.to_canonical(), ip.source_port))
        }
        ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => None,
    }
}

/// A stream that first yields `prefix` (bytes already read from it), then the rest.
pub struct Prefixed<T> {
    /// Boxed: most connections have none, and every idle connection's task holds this.
    prefix: Option<Box<Bytes>>,
    inner: T,
}

impl<T> Prefixed<T> {
    /// `inner`, with `prefix` read back first.
    pub fn new(prefix: Bytes, inner: T) -> Self {
        Self { prefix: (!prefix.is_empty()).then(|| Box::new(prefix)), inner }
    }

    /// The bytes not read yet of the prefix, and the wrapped stream.
    pub fn into_parts(self) -> (Bytes, T) {
        (self.prefix.map(|p| *p).unwrap_or_default(), self.inner)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(prefix) = &mut this.prefix {
            let n = prefix.len().min(buf.remaining());
            buf.put_slice(&prefix.split_to(n));
            if prefix.is_empty() {
                this.prefix = None;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // HTTP/2's writer and rustls usually pass one slice: a plain `send`.
        crate::upstream::stream::poll_write_slices(Pin::new(&mut self.get_mut().inner), cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records which write call carried which bytes.
    #[derive(Default)]
    struct Calls(Vec<(&'static str, Vec<u8>)>);

    impl AsyncWrite for Calls {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().0.push(("write", b.to_vec()));
            Poll::Ready(Ok(b.len()))
        }
        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = all.len();
            self.get_mut().0.push(("writev", all));
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn one_slice_is_a_plain_write_and_more_stay_vectored() {
        let mut io = Prefixed::new(Bytes::new(), Calls::default());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let one = [io::IoSlice::new(b"head")];
        let two = [io::IoSlice::new(b"head"), io::IoSlice::new(b"body")];
        assert!(Pin::new(&mut io).poll_write_vectored(&mut cx, &one).is_ready());
        assert!(Pin::new(&mut io).poll_write_vectored(&mut cx, &two).is_ready());
        let (_, calls) = io.into_parts();
        assert_eq!(calls.0, [("write", b"head".to_vec()), ("writev", b"headbody".to_vec())]);
    }

    async fn parse(bytes: &[u8]) -> Result<(Option<SocketAddr>, Bytes), ProxyHeaderError> {
        let mut r = bytes;
        read_proxy_header(&mut r).await
    }

    #[tokio::test]
    async fn v1_and_v2_headers_give_the_client_address_and_keep_what_follows() {
        let (addr, rest) =
            parse(b"PROXY TCP4 192.0.2.7 10.0.0.1 5555 80\r\nGET / HTTP/1.1\r\n").await.unwrap();
        assert_eq!(addr, Some("192.0.2.7:5555".parse().unwrap()));
        assert_eq!(&rest[..], b"GET / HTTP/1.1\r\n");

        let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        v2.extend([0x21, 0x11, 0, 12]); // v2 PROXY, TCP over IPv4, 12 address bytes
        v2.extend([203, 0, 113, 9, 10, 0, 0, 1]);
        v2.extend(4242u16.to_be_bytes());
        v2.extend(443u16.to_be_bytes());
        v2.extend(b"GET");
        let (addr, rest) = parse(&v2).await.unwrap();
        assert_eq!(addr, Some("203.0.113.9:4242".parse().unwrap()));
        assert_eq!(&rest[..], b"GET");

        let (addr, _) = parse(b"PROXY UNKNOWN\r\n").await.unwrap();
        assert_eq!(addr, None);

        // A dual-stack proxy may send an IPv4 client as IPv4-mapped IPv6: named as IPv4.
        let (addr, _) = parse(b"PROXY TCP6 ::ffff:192.0.2.8 ::1 6000 80\r\n").await.unwrap();
        assert_eq!(addr, Some("192.0.2.8:6000".parse().unwrap()));
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\n\r\n").await,
            Err(ProxyHeaderError::Invalid(_))
        ));
        assert!(matches!(parse(b"PROXY TCP4 1.2.3.4").await, Err(ProxyHeaderError::Io(_))));
        assert!(matches!(
            parse(b"PROXY TCP4 999.2.3.4 10.0.0.1 1 2\r\n").await,
            Err(ProxyHeaderError::Invalid(_))
        ));
    }
}
