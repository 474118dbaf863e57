//! The PROXY protocol header a relayed connection sends its server first (`send_proxy`).

use std::net::{IpAddr, SocketAddr};

use crate::config::ProxyVersion;

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
