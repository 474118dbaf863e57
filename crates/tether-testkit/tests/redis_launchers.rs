//! The TLS test PKI, the TLS Redis server and the Redis Cluster work as documented, seen from
//! real clients over real sockets.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::CertificateError;
use tether_testkit::redis::{REDIS_CLI, RedisCluster, RedisError, RedisServer, Reply};
use tether_testkit::tls::{TestCa, client_config, negotiated_alpn, peer_cert_der, tls_connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// The certificate error inside a refused [`tls_connect`].
fn cert_error(err: &std::io::Error) -> CertificateError {
    match err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(e)) => e.clone(),
        _ => panic!("not a certificate error: {err}"),
    }
}

/// A rustls server on 127.0.0.1 presenting `cert`, accepting one connection and echoing
/// one read back.
async fn tls_echo_once(cert: &tether_testkit::tls::IssuedCert) -> std::net::SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = vec![CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        // A refused handshake ends here, which is what some tests want.
        let Ok(mut tls) = acceptor.accept(tcp).await else { return };
        let mut buf = [0u8; 64];
        let n = tls.read(&mut buf).await.unwrap_or(0);
        let _ = tls.write_all(&buf[..n]).await;
        let _ = tls.shutdown().await;
    });
    addr
}

#[tokio::test]
async fn issued_certificates_verify_against_their_ca_only() {
    let ca = TestCa::new("tether test CA").unwrap();
    let cert = ca.issue(&["localhost", "127.0.0.1"]).unwrap();
    assert!(cert.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(cert.key_pem.contains("PRIVATE KEY"));

    // By name and by IP SAN, with ALPN, and the server presented exactly the issued cert.
    for name in ["localhost", "127.0.0.1"] {
        let addr = tls_echo_once(&cert).await;
        let config = ca.client_config(&[b"h2", b"http/1.1"]).unwrap();
        let mut stream = tls_connect(addr, name, config).await.unwrap();
        assert_eq!(peer_cert_der(&stream), Some(cert.cert_der()));
        assert_eq!(negotiated_alpn(&stream).as_deref(), Some(&b"h2"[..]));
        stream.write_all(b"ping").await.unwrap();
        let mut echoed = [0u8; 4];
        stream.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"ping");
    }

    // A name not in the certificate.
    let addr = tls_echo_once(&cert).await;
    let err = tls_connect(addr, "example.com", ca.client_config(&[]).unwrap()).await.unwrap_err();
    let e = cert_error(&err);
    assert!(
        matches!(
            e,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
        ),
        "{e:?}"
    );

    // Another CA.
    let other = TestCa::new("other CA").unwrap();
    let addr = tls_echo_once(&cert).await;
    let err = tls_connect(addr, "localhost", client_config(&other.cert_pem(), &[]).unwrap())
        .await
        .unwrap_err();
    assert_eq!(cert_error(&err), CertificateError::UnknownIssuer);
}

#[tokio::test]
async fn expired_and_not_yet_valid_certificates_are_refused() {
    let ca = TestCa::new("tether test CA").unwrap();
    let now = SystemTime::now();
    let expired = ca.issue_with_validity(&["localhost"], now - 2 * DAY, now - DAY).unwrap();
    let addr = tls_echo_once(&expired).await;
    let err = tls_connect(addr, "localhost", ca.client_config(&[]).unwrap()).await.unwrap_err();
    let e = cert_error(&err);
    assert!(
        matches!(e, CertificateError::Expired | CertificateError::ExpiredContext { .. }),
        "{e:?}"
    );

    let future = ca.issue_with_validity(&["localhost"], now + DAY, now + 2 * DAY).unwrap();
    let addr = tls_echo_once(&future).await;
    let err = tls_connect(addr, "localhost", ca.client_config(&[]).unwrap()).await.unwrap_err();
    let e = cert_error(&err);
    assert!(
        matches!(e, CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }),
        "{e:?}"
    );
}

#[test]
fn certificates_write_to_files() {
    let ca = TestCa::new("tether test CA").unwrap();
    let cert = ca.issue(&["localhost"]).unwrap();
    let dir = std::env::temp_dir().join(format!("tether-tls-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (crt, key) = cert.write(&dir, "server").unwrap();
    let ca_file = tether_testkit::tls::write_pem(&dir, "ca.crt", &ca.cert_pem()).unwrap();
    assert_eq!(std::fs::read_to_string(&crt).unwrap(), cert.cert_pem);
    assert_eq!(std::fs::read_to_string(&key).unwrap(), cert.key_pem);
    assert_eq!(std::fs::read_to_string(&ca_file).unwrap(), ca.cert_pem());
    assert!(client_config("not a PEM", &[]).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn tls_redis_answers_over_tls_with_the_ca_and_not_in_plain_text() {
    let ca = TestCa::new("redis CA").unwrap();
    let mut redis = RedisServer::start_tls(&ca).await.unwrap();
    let port = redis.port();
    assert!(redis.is_tls());
    assert_eq!(redis.url(), format!("rediss://127.0.0.1:{port}"));
    let ca_file = redis.ca_file().unwrap();
    assert_eq!(std::fs::read_to_string(&ca_file).unwrap(), ca.cert_pem());

    // The RESP helpers speak TLS.
    assert_eq!(redis.command(&["PING"]).await.unwrap(), Reply::Simple("PONG".into()));
    redis.command(&["SET", "tether:app:k", "s1", "PX", "60000"]).await.unwrap();
    assert_eq!(redis.dbsize().await.unwrap(), 1);
    assert_eq!(redis.keys("tether:*").await.unwrap(), ["tether:app:k"]);
    assert_eq!(redis.get("tether:app:k").await.unwrap().as_deref(), Some("s1"));

    // A client of our own, trusting the CA, by name and by IP.
    for name in ["localhost", "127.0.0.1"] {
        let mut tls =
            tls_connect(redis.addr(), name, ca.client_config(&[]).unwrap()).await.unwrap();
        tls.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
        let mut answer = [0u8; 7];
        tls.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"+PONG\r\n");
    }

    // Plain RESP to the TLS port gets nothing back: redis drops (resets) the connection.
    let mut plain = TcpStream::connect(redis.addr()).await.unwrap();
    plain.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the connection is closed, not left hanging");
    assert!(got.is_empty(), "plain text answered: {got:?}");

    // OpenSSL (redis-cli) verifies the certificate as well as rustls does.
    let out = std::process::Command::new(REDIS_CLI)
        .args(["--tls", "--cacert"])
        .arg(&ca_file)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "GET", "tether:app:k"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "s1", "{out:?}");

    // A client that does not trust the CA is refused.
    let other = TestCa::new("other CA").unwrap();
    let err = tls_connect(redis.addr(), "localhost", other.client_config(&[]).unwrap())
        .await
        .unwrap_err();
    assert_eq!(cert_error(&err), CertificateError::UnknownIssuer);

    // Restart keeps TLS and the port.
    redis.restart().await.unwrap();
    assert_eq!(redis.port(), port);
    assert_eq!(redis.dbsize().await.unwrap(), 0);
}

#[tokio::test]
async fn cluster_of_three_comes_up_and_routes_keys_to_their_owner() {
    let started = std::time::Instant::now();
    let mut cluster = RedisCluster::start(3).await.unwrap();
    eprintln!("cluster of 3 up in {:?}", started.elapsed());
    assert_eq!(cluster.nodes().len(), 3);
    let seeds: Vec<String> =
        cluster.addrs().iter().map(|a| format!("redis://127.0.0.1:{}", a.port())).collect();
    assert_eq!(cluster.url(), seeds.join(","));
    for node in cluster.nodes() {
        let info = node.cluster_info().await.unwrap();
        assert_eq!(info["cluster_state"], "ok");
        assert_eq!(info["cluster_size"], "3");
    }

    // Keys spread over the nodes; each lands on (only) its owner.
    let keys: Vec<String> = (0..30).map(|i| format!("tether:app:{i}")).collect();
    for key in &keys {
        assert_eq!(
            cluster.key_command(key, &["SET", key, "v", "PX", "60000"]).await.unwrap(),
            Reply::Simple("OK".into())
        );
    }
    let mut owners = std::collections::BTreeSet::new();
    for key in &keys {
        let owner = cluster.owner(key).await.unwrap();
        owners.insert(owner);
        assert_eq!(cluster.get(key).await.unwrap().as_deref(), Some("v"));
        assert!(cluster.ttl(key).await.unwrap().unwrap() > Duration::from_secs(50));
        // Any other node redirects.
        let other = &cluster.nodes()[(owner + 1) % 3];
        match other.get(key).await {
            Err(RedisError::Protocol { reason, .. }) => {
                assert!(reason.contains("MOVED"), "{reason}")
            }
            other => panic!("expected MOVED, got {other:?}"),
        }
    }
    assert_eq!(owners.len(), 3, "30 keys use all three nodes");
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(cluster.keys("tether:app:*").await.unwrap(), sorted);
    assert_eq!(cluster.dbsize().await.unwrap(), 30);
    assert_eq!(cluster.get("tether:missing").await.unwrap(), None);

    // redis-cli in cluster mode (-c) follows the redirections too.
    let port = cluster.nodes()[0].port().to_string();
    let out = std::process::Command::new(REDIS_CLI)
        .args(["-c", "-p", &port, "GET", "tether:app:7"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v");

    // A restarted node rejoins (empty); the cluster is whole again.
    let owner = cluster.owner("tether:app:7").await.unwrap();
    cluster.nodes_mut()[owner].restart().await.unwrap();
    cluster.wait_ok(Duration::from_secs(30)).await.unwrap();
    assert_eq!(cluster.get("tether:app:7").await.unwrap(), None);

    let dirs: Vec<_> = cluster.nodes().iter().map(|n| n.dir().to_owned()).collect();
    cluster.kill_all().unwrap();
    for addr in cluster.addrs() {
        assert!(TcpStream::connect(addr).await.is_err(), "{addr} still accepts");
    }
    drop(cluster);
    assert!(dirs.iter().all(|d| !d.exists()), "drop removes the nodes' directories");
}

#[tokio::test]
async fn cluster_needs_three_primaries() {
    let err = RedisCluster::start(2).await.unwrap_err();
    assert!(matches!(err, RedisError::Cluster { .. }), "{err}");
}
