//! A throwaway PKI for TLS tests: a CA made on the spot, certificates it signs (expired ones
//! too, on purpose), and a rustls client that trusts that CA and nothing else.
//!
//! Keys are ECDSA P-256 (rcgen's default), made fresh for every [`TestCa`] and
//! [`IssuedCert`]; nothing is read from or written to disk unless a test asks
//! ([`write_pem`], [`IssuedCert::write`], or a [`Pki`], which writes a CA and one certificate
//! into a directory of its own for a config to name).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::{Duration, SystemTime};
//! use tether_testkit::tls::{TestCa, peer_cert_der, tls_connect, write_pem};
//!
//! let ca = TestCa::new("tether test CA")?;
//! let cert = ca.issue(&["localhost", "127.0.0.1"])?; // an IP string becomes an IP SAN
//! let dir = std::env::temp_dir();
//! let (cert_file, key_file) = cert.write(&dir, "server")?; // server.crt, server.key
//! let ca_file = write_pem(&dir, "ca.crt", &ca.cert_pem())?;
//!
//! let day = Duration::from_secs(86_400);
//! let now = SystemTime::now();
//! let expired = ca.issue_with_validity(&["localhost"], now - 2 * day, now - day)?;
//!
//! // ... start a server with cert_file/key_file on `addr`, then:
//! # let addr: std::net::SocketAddr = "127.0.0.1:443".parse()?;
//! let stream = tls_connect(addr, "localhost", ca.client_config(&[b"h2"])?).await?;
//! assert_eq!(peer_cert_der(&stream), Some(cert.cert_der()));
//! # let _ = (cert_file, key_file, ca_file, expired);
//! # Ok(()) }
//! ```

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SerialNumber, date_time_ymd,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::ScratchDir;

/// How long [`tls_connect`] may take, TCP connect and handshake together: 5 s.
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(5);

/// How long before "now" a certificate from [`TestCa::issue`] becomes valid: 1 day, so a
/// clock a little behind does not reject it.
pub const DEFAULT_BACKDATE: Duration = Duration::from_secs(24 * 60 * 60);

/// How long after "now" a certificate from [`TestCa::issue`] stays valid: 365 days.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Why making a certificate or a client configuration failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen could not make a key or a certificate (e.g. a name that is not valid IA5).
    #[error("rcgen: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The CA given to [`client_config`] is not a PEM certificate.
    #[error("reading a PEM certificate: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    /// rustls refused the configuration or the CA certificate.
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    /// A [`Pki`] could not make its directory or write its files.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A self-signed certificate authority that issues certificates for tests.
#[derive(Debug)]
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
}

/// A certificate signed by a [`TestCa`], with its private key.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The certificate, PEM (`-----BEGIN CERTIFICATE-----`).
    pub cert_pem: String,
    /// Its private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub key_pem: String,
    cert_der: CertificateDer<'static>,
    serial: u64,
}

// === impl TestCa ===

impl TestCa {
    /// A new CA with a fresh key, its common name `name`. It is valid from 1975 to 4096
    /// (rcgen's defaults), so any validity given to [`TestCa::issue_with_validity`] fits
    /// inside it.
    pub fn new(name: &str) -> Result<Self, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, PEM: what a client (or `redis_ca_file`) trusts.
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert_der.clone()
    }

    /// A rustls client that trusts this CA only; see [`client_config`].
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        client_config(&self.cert_pem, alpn)
    }

    /// A server (and client) certificate for `names`, valid from a day ago
    /// ([`DEFAULT_BACKDATE`]) for a year ([`DEFAULT_LIFETIME`]).
    ///
    /// Each name that parses as an IP address (`127.0.0.1`, `::1`) becomes an IP address SAN,
    /// every other one a DNS name SAN; the first name is also the common name.
    pub fn issue(&self, names: &[&str]) -> Result<IssuedCert, TlsError> {
        let now = SystemTime::now();
        self.issue_with_validity(names, now - DEFAULT_BACKDATE, now + DEFAULT_LIFETIME)
    }

    /// Like [`TestCa::issue`], valid from `not_before` to `not_after` (whole seconds): a
    /// window in the past makes an expired certificate, one in the future a not-yet-valid
    /// one.
    pub fn issue_with_validity(
        &self,
        names: &[&str],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCert, TlsError> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let serial = next_serial();
        params.serial_number = Some(SerialNumber::from(serial));
        // rcgen takes `time::OffsetDateTime`, which this crate does not name: count from 1970.
        let since_epoch = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default();
        params.not_before = date_time_ymd(1970, 1, 1) + since_epoch(not_before);
        params.not_after = date_time_ymd(1970, 1, 1) + since_epoch(not_after);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            serial,
        })
    }

    /// A certificate revocation list (PEM) signed by this CA that revokes `revoked`, valid
    /// from a day ago for a week.
    pub fn crl(&self, revoked: &[&IssuedCert]) -> Result<String, TlsError> {
        let since_epoch = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let now = date_time_ymd(1970, 1, 1) + since_epoch(SystemTime::now());
        let day = Duration::from_secs(24 * 60 * 60);
        let params = CertificateRevocationListParams {
            this_update: now - day,
            next_update: now + 7 * day,
            crl_number: SerialNumber::from(next_serial()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|c| RevokedCertParams {
                    serial_number: SerialNumber::from(c.serial),
                    revocation_time: now - day,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }
}

/// A serial number no other certificate (or CRL) of this process has: the time in
/// nanoseconds, bumped past the last one given.
fn next_serial() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = since_epoch_nanos();
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

fn since_epoch_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

// === impl IssuedCert ===

impl IssuedCert {
    /// The certificate, DER: compare it with [`peer_cert_der`] to tell which certificate a
    /// server presented.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert_der.clone()
    }

    /// A rustls server configuration with the ring provider that presents this certificate,
    /// asks for no client certificate and offers the ALPN protocols `alpn` (empty: no ALPN).
    /// [`crate::EchoServer::start_tls`] serves with it.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![self.cert_der()], key)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// A rustls client configuration (ring) that trusts the CA in `ca_pem` and presents this
    /// certificate as its client certificate, offering the ALPN protocols `alpn`.
    pub fn client_config(
        &self,
        ca_pem: &str,
        alpn: &[&[u8]],
    ) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert?)?;
        }
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())?;
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![self.cert_der()], key)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// Writes `<stem>.crt` and `<stem>.key` into `dir` and returns their paths
    /// (certificate, key).
    pub fn write(&self, dir: &Path, stem: &str) -> io::Result<(PathBuf, PathBuf)> {
        let cert = write_pem(dir, &format!("{stem}.crt"), &self.cert_pem)?;
        let key = write_pem(dir, &format!("{stem}.key"), &self.key_pem)?;
        Ok((cert, key))
    }
}

/// A [`TestCa`] and one certificate it issued, written into a [`ScratchDir`] of their own
/// (removed when this drops) as `server.crt`, `server.key` and `ca.pem`: for configs that
/// name certificate files.
#[derive(Debug)]
pub struct Pki {
    /// The CA, made for this PKI alone.
    pub ca: TestCa,
    /// The certificate for the names given to [`Pki::new`].
    pub cert: IssuedCert,
    /// `server.crt`: [`Pki::cert`], PEM.
    pub cert_file: PathBuf,
    /// `server.key`: its private key, PEM.
    pub key_file: PathBuf,
    /// `ca.pem`: the CA certificate, PEM.
    pub ca_file: PathBuf,
    // Last: the files outlive everything that names them.
    dir: ScratchDir,
}

// === impl Pki ===

impl Pki {
    /// A new CA and a certificate for `names` (see [`TestCa::issue`]), written into a new
    /// directory `tether-<tag>-...`.
    pub fn new(tag: &str, names: &[&str]) -> Result<Self, TlsError> {
        let dir = ScratchDir::new(tag)?;
        let ca = TestCa::new("tether test CA")?;
        let cert = ca.issue(names)?;
        let (cert_file, key_file) = cert.write(dir.path(), "server")?;
        let ca_file = write_pem(dir.path(), "ca.pem", &ca.cert_pem())?;
        Ok(Self { ca, cert, cert_file, key_file, ca_file, dir })
    }

    /// The directory the files are in, for more of them (removed with it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Writes `pem` to `dir/name` (replacing it) and returns the path.
pub fn write_pem(dir: &Path, name: &str, pem: &str) -> io::Result<PathBuf> {
    let path = dir.join(name);
    fs::write(&path, pem)
        .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))?;
    Ok(path)
}

/// A rustls client configuration with the ring provider that trusts only the CA in
/// `ca_pem` (every certificate in it, when it holds several), with no client certificate,
/// offering the ALPN protocols `alpn` (e.g. `&[b"h2", b"http/1.1"]`; empty: no ALPN).
pub fn client_config(ca_pem: &str, alpn: &[&[u8]]) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    if roots.is_empty() {
        return Err(TlsError::Pem(rustls::pki_types::pem::Error::NoItemsFound));
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Connects to `addr` over TCP and completes a TLS handshake, verifying the server's
/// certificate for `server_name` (a DNS name, or an IP address checked against IP SANs),
/// within [`CONNECT_DEADLINE`]. A refused certificate is an [`io::ErrorKind::InvalidData`]
/// error whose inner error is the [`rustls::Error`].
pub async fn tls_connect(
    addr: SocketAddr,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
) -> io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let connect = async {
        let tcp = TcpStream::connect(addr).await?;
        TlsConnector::from(config).connect(name, tcp).await
    };
    tokio::time::timeout(CONNECT_DEADLINE, connect).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("TLS connection to {addr} not done within {CONNECT_DEADLINE:?}"),
        )
    })?
}

/// The end-entity certificate the server presented, DER; compare it with
/// [`IssuedCert::cert_der`].
pub fn peer_cert_der(stream: &TlsStream<TcpStream>) -> Option<CertificateDer<'static>> {
    let (_, session) = stream.get_ref();
    session.peer_certificates()?.first().map(|c| c.clone().into_owned())
}

/// The ALPN protocol the handshake settled on, if any.
pub fn negotiated_alpn(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}
