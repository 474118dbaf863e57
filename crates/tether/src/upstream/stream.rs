//! One connection to a server, plain TCP or TLS, and how it is opened: resolve, connect
//! within `timeouts.connect`, `TCP_NODELAY`, then the TLS handshake (SNI and verification by
//! `tls.server_name`, else by the server's address; ALPN `http/1.1`). [`connect_tcp`] is the
//! TCP connect both this and the layer-4 relay use; [`poll_write_slices`] the write every
//! socket wrapper uses.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config;

/// A connection to a server.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Where and how to connect to one server.
#[derive(Debug)]
pub struct Dialer {
    /// `host:port` as configured.
    address: http::uri::Authority,
    /// The address when the host is an IP literal (no lookup needed).
    literal: Option<SocketAddr>,
    tls: Option<(Arc<rustls::ClientConfig>, Option<ServerName<'static>>)>,
    connect_timeout: Duration,
}

impl Dialer {
    /// A dialer for the server at `address`, over TLS when `tls` is set.
    pub fn new(
        address: http::uri::Authority,
        tls: Option<&config::UpstreamTls>,
        connect_timeout: Duration,
    ) -> Self {
        let literal = address.as_str().parse::<SocketAddr>().ok();
        let tls = tls.map(|t| {
            let mut client = (*t.client_config).clone();
            client.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = t.server_name.clone().unwrap_or_else(|| host_of(&address).to_owned());
            // A name rustls refuses cannot verify any certificate: each connect fails with
            // a clear error.
            let name = ServerName::try_from(name).ok();
            (Arc::new(client), name)
        });
        Self { address, literal, tls, connect_timeout }
    }

    /// Opens a new connection; the whole of it (lookup, connect, TLS handshake) within the
    /// connect timeout.
    pub async fn connect(&self) -> io::Result<Stream> {
        match tokio::time::timeout(self.connect_timeout, self.open()).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
        }
    }

    async fn open(&self) -> io::Result<Stream> {
        let tcp = match self.literal {
            Some(addr) => connect_addr(addr).await?,
            None => connect_tcp(self.address.as_str()).await?,
        };
        match &self.tls {
            None => Ok(Stream::Plain(tcp)),
            Some((_, None)) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the TLS server name is not a valid DNS name or IP address",
            )),
            Some((config, Some(name))) => {
                let connector = TlsConnector::from(Arc::clone(config));
                let tls = connector.connect(name.clone(), tcp).await?;
                Ok(Stream::Tls(Box::new(tls)))
            }
        }
    }
}

/// Connects to `address` (`host:port`; a host name is looked up) with `TCP_NODELAY` set.
pub async fn connect_tcp(address: &str) -> io::Result<TcpStream> {
    if let Ok(addr) = address.parse::<SocketAddr>() {
        return connect_addr(addr).await;
    }
    let tcp = TcpStream::connect(address).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// Connects to `addr` with `TCP_NODELAY` set before the connect. A connect epoll reports
/// writable with neither error nor hang-up has succeeded, so the socket's error is read
/// (`SO_ERROR`) only when it failed: one system call per connection less than tokio's
/// `TcpStream::connect`, which reads it every time.
async fn connect_addr(addr: SocketAddr) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&addr.into()) {
        Err(e) if e.raw_os_error() != Some(libc::EINPROGRESS) => return Err(e),
        _ => {}
    }
    let tcp = TcpStream::from_std(socket.into())?;
    let ready = tcp.ready(tokio::io::Interest::WRITABLE).await?;
    if ready.is_write_closed() {
        let refused = || io::Error::from(io::ErrorKind::ConnectionRefused);
        return Err(tcp.take_error()?.unwrap_or_else(refused));
    }
    Ok(tcp)
}

/// The host of `host:port` (brackets of an IPv6 literal removed).
fn host_of(address: &http::uri::Authority) -> &str {
    address.host().trim_start_matches('[').trim_end_matches(']')
}

impl Stream {
    /// Whether an idle connection is still usable: nothing to read yet. A server that closed
    /// it (end of input), reset it, or sent bytes nobody asked for makes it unusable. Checked
    /// without waiting, before a pooled connection carries a request.
    pub fn is_usable(&mut self) -> bool {
        let mut probe = [0u8; 1];
        let mut buf = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        matches!(Pin::new(self).poll_read(&mut cx, &mut buf), Poll::Pending)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

/// Writes `bufs` to a socket: one slice as a plain write (`send`, a shorter path through the
/// kernel than `writev`), more as a vectored write. Every socket writer that takes vectored
/// writes goes through this (the client side's `Prefixed`, a plain server connection), so a
/// caller passes its non-empty slices and need not choose.
pub fn poll_write_slices<W: AsyncWrite + ?Sized>(
    io: Pin<&mut W>,
    cx: &mut Context<'_>,
    bufs: &[io::IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    match bufs {
        [one] => io.poll_write(cx, one),
        _ => io.poll_write_vectored(cx, bufs),
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => poll_write_slices(Pin::new(s), cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
