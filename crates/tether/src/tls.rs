//! TLS termination with rustls and its ring provider (the only crypto provider in the build).
//!
//! A listener's certificates are read and checked when the configuration is validated, so a
//! missing, expired, not-yet-valid or mismatched file is a configuration error naming its
//! key, at start and on reload (a failed reload keeps the old certificates). The certificate
//! for a connection is chosen by SNI among the names each certificate covers (its DNS
//! subject alternative names, `*.` wildcards included); the first certificate answers
//! clients that send no name or a name no certificate covers. ALPN offers `h2` and
//! `http/1.1`. A reload builds a new acceptor: new connections get the new certificates,
//! connections already open keep theirs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

/// Makes ring the process's default rustls provider, for code that asks rustls for the
/// default (redis-rs's `rediss://` connections). Idempotent.
pub fn install_crypto_provider() {
    // An error only means a provider is installed already, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client side of TLS to servers: rustls with ring, trusting `ca_pem` (PEM, one or more
/// certificates) or, without it, the system's roots.
pub fn upstream_client_config(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = match ca_pem {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("ca_file: {e}"))?;
                roots.add(cert).map_err(|e| format!("ca_file: {e}"))?;
            }
            builder.with_root_certificates(roots)
        }
        None => {
            use hyper_rustls::ConfigBuilderExt as _;
            builder.with_native_roots().map_err(|e| {
                format!("no system CA certificates to verify the servers ({e}); set ca_file")
            })?
        }
    };
    Ok(config.with_no_client_auth())
}

/// A client configuration that is never used to connect (plain-HTTP backends share the
/// TLS-capable connector type).
pub fn unused_client_config() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth())
        .unwrap_or_else(|_| {
            // Only a provider without TLS 1.2/1.3 could fail; ring has both.
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        })
}

/// `tls.min_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3 (default).
    V1_2,
    /// TLS 1.3 only.
    V1_3,
}

/// One certificate chain file and its private key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// A certificate read, checked and ready to serve.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    /// Where it came from.
    pub files: CertFiles,
    /// The DNS names it covers, lower case (`*.example.com` for a wildcard).
    pub names: Vec<String>,
    /// Unix seconds after which it is expired.
    pub not_after: i64,
    key: Arc<CertifiedKey>,
}

impl LoadedCert {
    /// `notAfter`, RFC 3339.
    pub fn expires_rfc3339(&self) -> String {
        rfc3339(self.not_after)
    }

    /// Whole days until it expires (negative once expired).
    pub fn days_left(&self) -> i64 {
        let now = crate::clock::unix_now() as i64;
        (self.not_after - now).div_euclid(86_400)
    }
}

/// Certificates closer than this to expiry are logged as a warning at start and reload.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

/// Why a certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read or holds no PEM of the expected kind.
    #[error("cannot read {path:?}: {detail}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The certificate does not parse as X.509.
    #[error("{path:?} is not a valid X.509 certificate: {detail}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        detail: String,
    },
    /// Its validity period is over.
    #[error("the certificate in {path:?} expired on {when} (renew it)")]
    Expired {
        /// The file.
        path: PathBuf,
        /// `notAfter`, RFC 3339.
        when: String,
    },
    /// Its validity period has not begun.
    #[error("the certificate in {path:?} is not valid before {when}")]
    NotYetValid {
        /// The file.
        path: PathBuf,
        /// `notBefore`, RFC 3339.
        when: String,
    },
    /// The key is of a kind ring cannot sign with, or does not belong to the certificate.
    #[error("the key in {key:?} does not match the certificate in {cert:?}: {detail}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's message.
        detail: String,
    },
}

impl CertError {
    /// Whether the key file, rather than the certificate, is at fault.
    pub fn concerns_key(&self, files: &CertFiles) -> bool {
        match self {
            CertError::Read { path, .. } => *path == files.key,
            CertError::Mismatch { .. } => true,
            _ => false,
        }
    }
}

/// Reads and checks one certificate and key.
pub fn load(files: &CertFiles) -> Result<LoadedCert, CertError> {
    let read = |path: &PathBuf, detail: String| CertError::Read { path: path.clone(), detail };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| read(&files.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| read(&files.cert, e.to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err(read(&files.cert, "no CERTIFICATE block in the file".to_owned()));
    };
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|e| read(&files.key, e.to_string()))?;
    let (names, not_before, not_after) = inspect(leaf.as_ref())
        .map_err(|detail| CertError::Invalid { path: files.cert.clone(), detail })?;
    let now = crate::clock::unix_now() as i64;
    if now > not_after {
        return Err(CertError::Expired { path: files.cert.clone(), when: rfc3339(not_after) });
    }
    if now < not_before {
        return Err(CertError::NotYetValid { path: files.cert.clone(), when: rfc3339(not_before) });
    }
    let mismatch = |detail: String| CertError::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        detail,
    };
    let signer =
        provider().key_provider.load_private_key(key).map_err(|e| mismatch(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|e| mismatch(e.to_string()))?;
    Ok(LoadedCert { files: files.clone(), names, not_after, key: Arc::new(certified) })
}

/// The DNS names (SANs, else the subject's CN) and validity of a DER certificate.
fn inspect(der: &[u8]) -> Result<(Vec<String>, i64, i64), String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(n) = name {
                names.push(n.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    let validity = cert.validity();
    Ok((names, validity.not_before.timestamp(), validity.not_after.timestamp()))
}

fn rfc3339(unix: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64),
    )
    .to_string()
}

/// Client certificates a listener asks for (`tls.client_ca`, `tls.client_auth`,
/// `tls.client_crl`).
#[derive(Debug, Clone)]
pub struct ClientAuth {
    /// `client_ca`.
    pub file: PathBuf,
    /// The CA certificates in it.
    roots: Vec<CertificateDer<'static>>,
    /// `client_auth = "required"` (else `"optional"`).
    pub required: bool,
    /// `client_crl` and the revocation lists in it.
    pub crl_file: Option<PathBuf>,
    crls: Vec<CertificateRevocationListDer<'static>>,
}

impl ClientAuth {
    /// Reads the CA certificates from `pem` (the contents of `file`) and the revocation
    /// lists from `crl` (a file and its contents); an error says what is wrong, and whether
    /// it is about the CRL file (`true`) or the CA file.
    pub fn new(
        file: PathBuf,
        pem: &[u8],
        required: bool,
        crl: Option<(PathBuf, &[u8])>,
    ) -> Result<Self, (bool, String)> {
        let mut roots = Vec::new();
        for cert in CertificateDer::pem_slice_iter(pem) {
            roots.push(cert.map_err(|e| (false, format!("{file:?}: {e}")))?);
        }
        if roots.is_empty() {
            return Err((false, format!("{file:?} holds no PEM certificate")));
        }
        let mut crls = Vec::new();
        let crl_file = match crl {
            Some((crl_file, crl_pem)) => {
                for list in CertificateRevocationListDer::pem_slice_iter(crl_pem) {
                    crls.push(list.map_err(|e| (true, format!("{crl_file:?}: {e}")))?);
                }
                if crls.is_empty() {
                    let why = format!("{crl_file:?} holds no PEM revocation list (X509 CRL)");
                    return Err((true, why));
                }
                Some(crl_file)
            }
            None => None,
        };
        let auth = Self { file, roots, required, crl_file, crls };
        // Build the verifier once now, so that a CA or CRL it cannot use is a config error.
        auth.verifier()?;
        Ok(auth)
    }

    /// How many CA certificates `client_ca` holds.
    pub fn ca_count(&self) -> usize {
        self.roots.len()
    }

    fn verifier(
        &self,
    ) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, (bool, String)> {
        let mut store = rustls::RootCertStore::empty();
        for cert in &self.roots {
            let added = store.add(cert.clone());
            added.map_err(|e| (false, format!("{:?}: not a CA certificate: {e}", self.file)))?;
        }
        let mut builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(store),
            provider(),
        );
        if !self.required {
            builder = builder.allow_unauthenticated();
        }
        if !self.crls.is_empty() {
            // A client certificate its issuer's CRL lists is refused; one whose issuer has no
            // CRL in the file is not checked (client_ca may hold CAs without one).
            builder = builder
                .with_crls(self.crls.iter().cloned())
                .only_check_end_entity_revocation()
                .allow_unknown_revocation_status();
        }
        builder.build().map_err(|e| (self.crl_file.is_some(), e.to_string()))
    }
}

impl PartialEq for ClientAuth {
    fn eq(&self, other: &Self) -> bool {
        self.file == other.file
            && self.required == other.required
            && self.roots == other.roots
            && self.crl_file == other.crl_file
            && self.crls == other.crls
    }
}

/// A certificate's subject as RFC 4514 text (`CN=alice, O=Example`).
pub fn subject(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.subject().to_string())
}

/// A listener's validated `tls` settings.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// The certificates, the default first.
    pub certs: Vec<LoadedCert>,
    /// `min_version`.
    pub min_version: TlsVersion,
    /// Client certificates, when asked for.
    pub client_auth: Option<ClientAuth>,
    /// The rustls configuration serving them.
    pub server_config: Arc<ServerConfig>,
}

impl PartialEq for TlsSettings {
    fn eq(&self, other: &Self) -> bool {
        self.min_version == other.min_version
            && self.client_auth == other.client_auth
            && self.certs.len() == other.certs.len()
            && self
                .certs
                .iter()
                .zip(&other.certs)
                .all(|(a, b)| a.files == b.files && a.key.cert.first() == b.key.cert.first())
    }
}

impl TlsSettings {
    /// Settings serving `certs` (non-empty; the first is the default): SNI selection, ALPN
    /// `h2` + `http/1.1`, client certificates verified against `client_auth`'s CA when given.
    pub fn new(
        certs: Vec<LoadedCert>,
        min_version: TlsVersion,
        client_auth: Option<ClientAuth>,
    ) -> Result<Self, String> {
        let versions: &[&'static rustls::SupportedProtocolVersion] = match min_version {
            TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::V1_3 => &[&rustls::version::TLS13],
        };
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .map_err(|e| e.to_string())?;
        let builder = match &client_auth {
            Some(auth) => builder.with_client_cert_verifier(auth.verifier().map_err(|(_, e)| e)?),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(SniResolver::new(&certs)));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self { certs, min_version, client_auth, server_config: Arc::new(config) })
    }
}

/// Picks a certificate by the client's SNI name: an exact name first, then a wildcard for
/// the name's parent domain, then the default.
#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    fn new(certs: &[LoadedCert]) -> Self {
        let mut exact = HashMap::new();
        for c in certs {
            for name in &c.names {
                // The first certificate naming a host wins, as in file order.
                exact.entry(name.clone()).or_insert_with(|| Arc::clone(&c.key));
            }
        }
        Self { exact, default: certs.first().map(|c| Arc::clone(&c.key)) }
    }

    fn pick(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = name else { return self.default.clone() };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return Some(Arc::clone(k));
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(k) = self.exact.get(&format!("*.{parent}")) {
                return Some(Arc::clone(k));
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(names: &[&str]) -> LoadedCert {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let c = params.self_signed(&key).unwrap();
        let der = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let signer = provider().key_provider.load_private_key(der).unwrap();
        let (names, _, not_after) = inspect(c.der()).unwrap();
        LoadedCert {
            files: CertFiles { cert: "c.pem".into(), key: "k.pem".into() },
            names,
            not_after,
            key: Arc::new(CertifiedKey::new(vec![c.der().clone()], signer)),
        }
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_the_first_certificate() {
        let a = cert(&["a.example.com"]);
        let wild = cert(&["*.example.org", "example.org"]);
        let r = SniResolver::new(&[a.clone(), wild.clone()]);
        let same = |k: Option<Arc<CertifiedKey>>, c: &LoadedCert| Arc::ptr_eq(&k.unwrap(), &c.key);
        assert!(same(r.pick(Some("a.example.com")), &a));
        assert!(same(r.pick(Some("A.Example.COM.")), &a));
        assert!(same(r.pick(Some("www.example.org")), &wild));
        assert!(same(r.pick(Some("example.org")), &wild));
        // A wildcard covers one label only; unknown names and no name get the default.
        assert!(same(r.pick(Some("x.www.example.org")), &a));
        assert!(same(r.pick(Some("other.test")), &a));
        assert!(same(r.pick(None), &a));
    }

    #[test]
    fn names_come_from_the_subject_alternative_names() {
        let c = cert(&["one.test", "two.test"]);
        assert_eq!(c.names, vec!["one.test", "two.test"]);
        assert!(c.not_after > 0);
    }
}
