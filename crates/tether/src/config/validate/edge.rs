//! The edge settings of a listener: limits, rate limits, TLS, PROXY protocol, HTTP/2.

use toml::Spanned;

use super::super::raw::{RawListener, RawListenerLimits, RawRateLimit, RawTls};
use super::{Checker, S};
use crate::config::{DEFAULT_H2_MAX_STREAMS, ListenerLimits, RateKey, RateLimit, UpstreamTls};
use crate::tls::{CertFiles, ClientAuth, TlsSettings, TlsVersion};

/// A whole number in `min..=max`, or `default` when absent (with an error when out of range).
fn number(
    c: &mut Checker,
    path: &str,
    v: Option<&Spanned<i64>>,
    (min, max): (i64, i64),
    default: i64,
    meaning: &str,
) -> i64 {
    match v {
        None => default,
        Some(n) if (min..=max).contains(n.get_ref()) => *n.get_ref(),
        Some(n) => {
            c.err(path, Some(n), format!("{} is out of range: {meaning}", n.get_ref()));
            default
        }
    }
}

pub(super) fn listener_limits(
    c: &mut Checker,
    path: &str,
    raw: Option<&RawListenerLimits>,
) -> ListenerLimits {
    let d = ListenerLimits::default();
    let Some(l) = raw else { return d };
    let p = |k: &str| format!("{path}.{k}");
    let unlimited = "use 0 (unlimited) or a positive number";
    ListenerLimits {
        max_header_bytes: number(
            c,
            &p("max_header_bytes"),
            l.max_header_bytes.as_ref(),
            (8192, 16 * 1024 * 1024),
            d.max_header_bytes as i64,
            "use 8192 to 16777216 bytes",
        ) as usize,
        max_headers: number(
            c,
            &p("max_headers"),
            l.max_headers.as_ref(),
            (1, 10_000),
            d.max_headers as i64,
            "use 1 to 10000",
        ) as usize,
        max_body_bytes: number(
            c,
            &p("max_body_bytes"),
            l.max_body_bytes.as_ref(),
            (0, i64::MAX),
            0,
            unlimited,
        ) as u64,
        max_connections: number(
            c,
            &p("max_connections"),
            l.max_connections.as_ref(),
            (0, i64::from(u32::MAX)),
            0,
            unlimited,
        ) as usize,
        max_connections_per_ip: number(
            c,
            &p("max_connections_per_ip"),
            l.max_connections_per_ip.as_ref(),
            (0, i64::from(u32::MAX)),
            0,
            unlimited,
        ) as usize,
    }
}

pub(super) fn rate_limit(c: &mut Checker, path: &str, r: &RawRateLimit) -> Option<RateLimit> {
    let p = |k: &str| format!("{path}.{k}");
    let rps = match r.requests_per_second.get_ref() {
        toml::Value::Integer(n) => *n as f64,
        toml::Value::Float(f) => *f,
        _ => -1.0,
    };
    if !(rps > 0.0 && rps <= 1e9) {
        c.err(
            &p("requests_per_second"),
            Some(&r.requests_per_second),
            "must be a number greater than 0 (e.g. 100 or 0.5)",
        );
        return None;
    }
    let default_burst = (rps * 2.0).ceil().clamp(1.0, f64::from(u32::MAX)) as i64;
    let burst = number(
        c,
        &p("burst"),
        r.burst.as_ref(),
        (1, i64::from(u32::MAX)),
        default_burst,
        "must be at least 1",
    ) as u32;
    let key = c.choice(
        &p("key"),
        r.key.as_ref(),
        RateKey::ClientIp,
        &[("client_ip", RateKey::ClientIp), ("affinity", RateKey::Affinity)],
    );
    Some(RateLimit { per_second: rps, burst, key })
}

pub(super) fn tls(c: &mut Checker, path: &str, t: &RawTls) -> Option<TlsSettings> {
    let mut files = Vec::new();
    match (&t.cert, &t.key) {
        (Some(cert), Some(key)) => files.push((format!("{path}."), cert, key)),
        (None, None) => {}
        (Some(cert), None) => {
            c.err(&format!("{path}.key"), Some(cert), "tls.cert needs tls.key (its private key)");
        }
        (None, Some(key)) => {
            c.err(&format!("{path}.cert"), Some(key), "tls.key needs tls.cert (the certificate)");
        }
    }
    for (i, pair) in t.certificates.iter().enumerate() {
        files.push((format!("{path}.certificates[{i}]."), &pair.cert, &pair.key));
    }
    if files.is_empty() {
        c.err::<()>(path, None, "tls needs a certificate: tls = { cert = \"...\", key = \"...\" }");
        return None;
    }
    let min_version = c.choice(
        &format!("{path}.min_version"),
        t.min_version.as_ref(),
        TlsVersion::V1_2,
        &[("1.2", TlsVersion::V1_2), ("1.3", TlsVersion::V1_3)],
    );
    let client_auth = client_auth(c, path, t);
    let mut certs = Vec::new();
    let mut ok = !matches!(client_auth, Err(()));
    for (prefix, cert, key) in files {
        let pair = CertFiles { cert: cert.get_ref().into(), key: key.get_ref().into() };
        match crate::tls::load(&pair) {
            Ok(loaded) => certs.push(loaded),
            Err(e) => {
                ok = false;
                let (which, at) = if e.concerns_key(&pair) { ("key", key) } else { ("cert", cert) };
                c.err(&format!("{prefix}{which}"), Some(at), e.to_string());
            }
        }
    }
    if !ok {
        return None;
    }
    match TlsSettings::new(certs, min_version, client_auth.ok().flatten()) {
        Ok(settings) => Some(settings),
        Err(e) => {
            c.err::<()>(path, None, format!("cannot set up TLS: {e}"));
            None
        }
    }
}

/// `tls.client_ca` and `tls.client_auth`: `Ok(None)` without client certificates, `Err`
/// after reporting a mistake.
fn client_auth(c: &mut Checker, path: &str, t: &RawTls) -> Result<Option<ClientAuth>, ()> {
    let Some(file) = &t.client_ca else {
        for (key, value) in [("client_auth", &t.client_auth), ("client_crl", &t.client_crl)] {
            if let Some(v) = value {
                let why = format!(
                    "tls.{key} needs tls.client_ca (the CA that signs client certificates)"
                );
                c.err(&format!("{path}.{key}"), Some(v), why);
                return Err(());
            }
        }
        return Ok(None);
    };
    let required = c.choice(
        &format!("{path}.client_auth"),
        t.client_auth.as_ref(),
        true,
        &[("required", true), ("optional", false)],
    );
    let read = |c: &mut Checker, key: &str, file: &S| {
        let read = std::fs::read(file.get_ref());
        read.map_err(|e| {
            c.err(
                &format!("{path}.{key}"),
                Some(file),
                format!("cannot read {:?}: {e}", file.get_ref()),
            );
        })
    };
    let ca_pem = read(c, "client_ca", file)?;
    let crl_pem = match &t.client_crl {
        Some(crl) => Some((crl, read(c, "client_crl", crl)?)),
        None => None,
    };
    let crl = crl_pem.as_ref().map(|(f, pem)| (std::path::PathBuf::from(f.get_ref()), &pem[..]));
    match ClientAuth::new(file.get_ref().into(), &ca_pem, required, crl) {
        Ok(auth) => Ok(Some(auth)),
        Err((in_crl, e)) => {
            let (key, at) = match (&crl_pem, in_crl) {
                (Some((f, _)), true) => ("client_crl", *f),
                _ => ("client_ca", file),
            };
            c.err(&format!("{path}.{key}"), Some(at), e);
            Err(())
        }
    }
}

pub(super) fn proxy_protocol(c: &mut Checker, path: &str, l: &RawListener) -> bool {
    let on = l.proxy_protocol.unwrap_or(false);
    if on && l.trusted_proxies.is_empty() {
        c.err::<()>(
            path,
            None,
            "proxy_protocol = true needs trusted_proxies: the addresses of the proxies allowed \
             to send the header (anyone else could claim any client address)",
        );
    }
    on
}

pub(super) fn h2_streams(c: &mut Checker, path: &str, l: &RawListener) -> u32 {
    number(
        c,
        path,
        l.http2.as_ref().and_then(|h| h.max_concurrent_streams.as_ref()),
        (1, 10_000),
        i64::from(DEFAULT_H2_MAX_STREAMS),
        "use 1 to 10000",
    ) as u32
}

/// `backends.NAME.tls`: `true`, or `{ ca_file = "...", server_name = "..." }`.
pub(super) fn upstream_tls(
    c: &mut Checker,
    path: &str,
    v: &Spanned<toml::Value>,
) -> Option<UpstreamTls> {
    let table = match v.get_ref() {
        toml::Value::Boolean(true) => return upstream_tls_config(c, path, v, None, None),
        toml::Value::Boolean(false) => return None,
        toml::Value::Table(t) => t,
        _ => {
            c.err(
                path,
                Some(v),
                "expected true, false or { ca_file = \"...\", server_name = \"...\" }",
            );
            return None;
        }
    };
    for key in table.keys() {
        if key != "ca_file" && key != "server_name" {
            c.err(
                &format!("{path}.{key}"),
                Some(v),
                "unknown key; expected ca_file or server_name",
            );
        }
    }
    let text = |c: &mut Checker, key: &str| match table.get(key) {
        None => None,
        Some(toml::Value::String(s)) => Some(s.clone()),
        Some(_) => {
            c.err(&format!("{path}.{key}"), Some(v), "expected a string");
            None
        }
    };
    let server_name = text(c, "server_name");
    if let Some(n) = &server_name {
        if rustls_pki_types::ServerName::try_from(n.as_str()).is_err() {
            c.err(
                &format!("{path}.server_name"),
                Some(v),
                format!("{n:?} is not a DNS name or IP address"),
            );
        }
    }
    let ca_pem = text(c, "ca_file").and_then(|f| match std::fs::read(&f) {
        Ok(pem) if pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => Some(pem),
        Ok(_) => {
            c.err(&format!("{path}.ca_file"), Some(v), format!("{f:?} holds no PEM certificate"));
            None
        }
        Err(e) => {
            c.err(&format!("{path}.ca_file"), Some(v), format!("cannot read {f:?}: {e}"));
            None
        }
    });
    upstream_tls_config(c, path, v, ca_pem, server_name)
}

fn upstream_tls_config(
    c: &mut Checker,
    path: &str,
    v: &Spanned<toml::Value>,
    ca_pem: Option<Vec<u8>>,
    server_name: Option<String>,
) -> Option<UpstreamTls> {
    match crate::tls::upstream_client_config(ca_pem.as_deref()) {
        Ok(config) => {
            Some(UpstreamTls { ca_pem, server_name, client_config: std::sync::Arc::new(config) })
        }
        Err(e) => {
            c.err(path, Some(v), e);
            None
        }
    }
}
