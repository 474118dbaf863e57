//! The bytes around a relayed connection: a client stream that counts what it moves (for the
//! access log, live for the metrics), and the PROXY protocol header sent to a server.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::ProxyVersion;
use crate::metrics::TcpMetrics;

/// The client side of a relay, counting bytes read from it (`bytes_in`) and written to it
/// (`bytes_out`) as they move, into the connection's own totals and the server's counters.
pub(super) struct Counted<T> {
    inner: T,
    /// From the client so far.
    pub bytes_in: u64,
    /// To the client so far.
    pub bytes_out: u64,
    metrics: Option<TcpMetrics>,
}

impl<T> Counted<T> {
    /// Wraps `inner`; `bytes_in` starts at `already_in` (bytes read before the relay, such as
    /// a ClientHello), which the server's counter is given now.
    pub fn new(inner: T, already_in: u64, metrics: Option<TcpMetrics>) -> Self {
        if let Some(m) = &metrics {
            m.connections.inc();
            m.bytes_in.inc_by(already_in);
        }
        Self { inner, bytes_in: already_in, bytes_out: 0, metrics }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            this.bytes_in += n;
            if let Some(m) = &this.metrics {
                m.bytes_in.inc_by(n);
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.bytes_out += n as u64;
            if let Some(m) = &this.metrics {
                m.bytes_out.inc_by(n as u64);
            }
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The PROXY protocol header telling a server that `client` connected to `local`. The two
/// addresses are given one family (an IPv4 one as IPv6-mapped beside an IPv6 one), as the
/// protocol has no mixed form.
pub(super) fn proxy_header(
    version: ProxyVersion,
    client: SocketAddr,
    local: SocketAddr,
) -> Vec<u8> {
    let (src, dst) = match (client.ip(), local.ip()) {
        (IpAddr::V4(_), IpAddr::V6(_)) | (IpAddr::V6(_), IpAddr::V4(_)) => {
            (as_v6(client), as_v6(local))
        }
        _ => (client, local),
    };
    match version {
        ProxyVersion::V1 => ppp::v1::Addresses::from((src, dst)).to_string().into_bytes(),
        ProxyVersion::V2 => {
            use ppp::v2::{Builder, Command, Protocol, Version};
            let builder = Builder::with_addresses(
                Version::Two | Command::Proxy,
                Protocol::Stream,
                (src, dst),
            );
            // Building into a Vec fails only on a length over u16, which two addresses
            // without TLVs never reach.
            builder.build().unwrap_or_default()
        }
    }
}

/// `addr` in the IPv6 family (IPv4 as `::ffff:a.b.c.d`).
fn as_v6(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), addr.port()),
        IpAddr::V6(_) => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Headers as `ppp` reads them back: each version, each family, and a mixed pair.
    #[test]
    fn proxy_headers_carry_the_client_and_the_local_address() {
        let rows: [(ProxyVersion, &str, &str, &str); 4] = [
            (ProxyVersion::V1, "127.0.0.2:4000", "127.0.0.1:80", "127.0.0.2:4000"),
            (ProxyVersion::V2, "127.0.0.2:4000", "127.0.0.1:80", "127.0.0.2:4000"),
            (ProxyVersion::V2, "[::1]:4000", "[::1]:80", "[::1]:4000"),
            (ProxyVersion::V1, "127.0.0.2:4000", "[::1]:80", "[::ffff:127.0.0.2]:4000"),
        ];
        for (version, client, local, want) in rows {
            let client: SocketAddr = client.parse().unwrap();
            let header = proxy_header(version, client, local.parse().unwrap());
            let source = match ppp::HeaderResult::parse(&header) {
                ppp::HeaderResult::V1(Ok(h)) => match h.addresses {
                    ppp::v1::Addresses::Tcp4(a) => {
                        SocketAddr::from((a.source_address, a.source_port))
                    }
                    ppp::v1::Addresses::Tcp6(a) => {
                        SocketAddr::from((a.source_address, a.source_port))
                    }
                    ppp::v1::Addresses::Unknown => panic!("unknown"),
                },
                ppp::HeaderResult::V2(Ok(h)) => match h.addresses {
                    ppp::v2::Addresses::IPv4(a) => {
                        SocketAddr::from((a.source_address, a.source_port))
                    }
                    ppp::v2::Addresses::IPv6(a) => {
                        SocketAddr::from((a.source_address, a.source_port))
                    }
                    other => panic!("{other:?}"),
                },
                other => panic!("{version:?} {client}: {other:?}"),
            };
            assert_eq!(source, want.parse::<SocketAddr>().unwrap(), "{version:?} {client}");
        }
    }
}
