//! An in-process DNS server for the service-discovery tests: hickory-server answering, over
//! UDP and TCP on one loopback port, from records the test changes while it runs.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use tether_testkit::dns::DnsServer;
//!
//! let dns = DnsServer::start().await?;
//! dns.set_a("app.test", &["127.0.0.2".parse().unwrap()], 1);
//! dns.set_srv("_http._tcp.app.test", &[(10, 1, 8080, "a.test")], 1);
//! let nameserver = dns.addr().to_string(); // for `discovery.nameservers`
//! dns.set_answering(false); // queries go unanswered from now on, like a dead server
//! # Ok(()) }
//! ```
//!
//! Only what discovery asks is served: A, AAAA and SRV records of exact names (no
//! wildcards, no delegation). A name with no record of the asked type gets an empty answer
//! (NODATA); an unknown name gets NXDOMAIN. SRV answers carry the A records of their targets
//! in the additional section, as real servers do.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hickory_server::ServerFuture;
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::proto::op::{Header, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

/// How long a TCP client may stay silent before the server closes its connection.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);

/// A DNS server on `127.0.0.1:PORT` (UDP and TCP); stops when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    zone: Arc<Zone>,
    server: ServerFuture<Handler>,
}

/// What hickory-server calls for each query: the test's zone, shared.
struct Handler(Arc<Zone>);

/// The records served and the switches a test flips. Records live in a `watch` channel:
/// one writer (the test), readers that never block it.
struct Zone {
    records: watch::Sender<Vec<Record>>,
    answering: AtomicBool,
    queries: AtomicU64,
}

// === impl DnsServer ===

impl DnsServer {
    /// Starts a server with no records on a free loopback port, the same for UDP and TCP.
    pub async fn start() -> io::Result<Self> {
        let (udp, tcp) = bind_pair().await?;
        let addr = udp.local_addr()?;
        let zone = Arc::new(Zone {
            records: watch::Sender::new(Vec::new()),
            answering: AtomicBool::new(true),
            queries: AtomicU64::new(0),
        });
        let mut server = ServerFuture::new(Handler(Arc::clone(&zone)));
        server.register_socket(udp);
        server.register_listener(tcp, TCP_TIMEOUT);
        Ok(Self { addr, zone, server })
    }

    /// The address to name in `discovery.nameservers`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the A records of `name` (replacing them; none removes them), with `ttl` seconds.
    pub fn set_a(&self, name: &str, ips: &[Ipv4Addr], ttl: u32) {
        let data = ips.iter().map(|ip| RData::A(A(*ip))).collect();
        self.replace(name, RecordType::A, data, ttl);
    }

    /// Sets the AAAA records of `name`, like [`DnsServer::set_a`].
    pub fn set_aaaa(&self, name: &str, ips: &[std::net::Ipv6Addr], ttl: u32) {
        let data = ips.iter().map(|ip| RData::AAAA(AAAA(*ip))).collect();
        self.replace(name, RecordType::AAAA, data, ttl);
    }

    /// Sets the SRV records of `name`: `(priority, weight, port, target)` each.
    pub fn set_srv(&self, name: &str, records: &[(u16, u16, u16, &str)], ttl: u32) {
        let data = records
            .iter()
            .map(|&(priority, weight, port, target)| {
                RData::SRV(SRV::new(priority, weight, port, fqdn(target)))
            })
            .collect();
        self.replace(name, RecordType::SRV, data, ttl);
    }

    /// Answers queries (`true`, the start) or lets them go unanswered, like a server that
    /// died or a network that drops its packets.
    pub fn set_answering(&self, answering: bool) {
        self.zone.answering.store(answering, Ordering::SeqCst);
    }

    /// Queries received so far, answered or not.
    pub fn queries(&self) -> u64 {
        self.zone.queries.load(Ordering::SeqCst)
    }

    fn replace(&self, name: &str, kind: RecordType, data: Vec<RData>, ttl: u32) {
        let name = fqdn(name);
        self.zone.records.send_modify(|records| {
            records.retain(|r| !(r.record_type() == kind && *r.name() == name));
            records.extend(data.into_iter().map(|d| Record::from_rdata(name.clone(), ttl, d)));
        });
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        // Cancels the UDP and TCP tasks; their sockets close with them.
        self.server.shutdown_token().cancel();
    }
}

/// A UDP socket and a TCP listener on the same free loopback port (a few tries: the port
/// the UDP socket got may be taken for TCP).
async fn bind_pair() -> io::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..20 {
        let udp = UdpSocket::bind((IpAddr::from(Ipv4Addr::LOCALHOST), 0)).await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free port for UDP and TCP")))
}

/// `name` as a fully qualified name (a test's mistake in a literal name is a panic).
fn fqdn(name: &str) -> Name {
    let mut n = Name::from_ascii(name).unwrap_or_else(|e| panic!("DNS name {name:?}: {e}"));
    n.set_fqdn(true);
    n
}

// === impl Zone ===

impl Zone {
    /// The answer to a query for `kind` records of `name`: answers, additionals, and the
    /// response code (NXDOMAIN for a name with no record at all).
    fn lookup(&self, name: &Name, kind: RecordType) -> (Vec<Record>, Vec<Record>, ResponseCode) {
        let records = self.records.borrow();
        let answers: Vec<Record> = records
            .iter()
            .filter(|r| r.record_type() == kind && r.name() == name)
            .cloned()
            .collect();
        // The targets' addresses of SRV answers, as real servers add them.
        let additionals = answers
            .iter()
            .filter_map(|r| match r.data() {
                RData::SRV(srv) => Some(srv.target().clone()),
                _ => None,
            })
            .flat_map(|target| {
                let of_target = |r: &&Record| {
                    matches!(r.record_type(), RecordType::A | RecordType::AAAA)
                        && *r.name() == target
                };
                records.iter().filter(of_target).cloned().collect::<Vec<_>>()
            })
            .collect();
        let known = records.iter().any(|r| r.name() == name);
        let code = if known { ResponseCode::NoError } else { ResponseCode::NXDomain };
        (answers, additionals, code)
    }
}

// === impl Handler ===

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let zone = &self.0;
        zone.queries.fetch_add(1, Ordering::SeqCst);
        let mut header = Header::response_from_request(request.header());
        let query = match request.request_info() {
            Ok(info) if zone.answering.load(Ordering::SeqCst) => info.query,
            // Unanswered: the client hears nothing and times out.
            _ => return header.into(),
        };
        let (answers, additionals, code) =
            zone.lookup(&Name::from(query.name()), query.query_type());
        header.set_authoritative(true);
        header.set_response_code(code);
        let builder = MessageResponseBuilder::from_message_request(request);
        let message = builder.build(header, answers.iter(), [], [], additionals.iter());
        response.send_response(message).await.unwrap_or_else(|_| header.into())
    }
}
