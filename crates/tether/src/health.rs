//! Active health checks and passive outlier ejection.
//!
//! One task per backend with a `[health_check]` probes every server each interval (with up to
//! 10% jitter so many balancers do not probe in step), owns each server's [`Hysteresis`], and
//! publishes transitions into the server's atomics — the data path only reads them. Each
//! transition is logged once, with its reason. Tasks are restarted on reload; the servers'
//! health survives it.
//!
//! Passive detection ([`observe`]) runs on the data path: consecutive failures (connect
//! errors, resets, timeouts, 5xx) eject a server for `base_ejection × 2^(n-1)` (capped), never
//! more than `max_ejected_percent` of the backend at once; a timer task returns it.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{unix_now, unix_now_ms};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tether_core::health::Hysteresis;
use tether_core::rng::SplitMix;
use tether_core::{Health, ServerState};
use tokio::task::JoinHandle;

use crate::config::{CheckKind, HealthCheck, Outlier, UpstreamTls};
use crate::snapshot::BackendView;

/// Largest body read from a health-check answer.
const MAX_CHECK_BODY: usize = 64 * 1024;

/// Starts the checker of `backend` (one task for all its servers).
pub fn spawn(backend: &BackendView, check: HealthCheck) -> JoinHandle<()> {
    let name = Arc::clone(&backend.name);
    let targets: Vec<(Arc<ServerState>, http::uri::Authority)> =
        backend.servers.iter().map(|s| (Arc::clone(&s.state), s.authority.clone())).collect();
    let tls = backend.upstream_tls.clone();
    tokio::spawn(run(name, check, targets, tls))
}

async fn run(
    backend: Arc<str>,
    check: HealthCheck,
    targets: Vec<(Arc<ServerState>, http::uri::Authority)>,
    tls: Option<UpstreamTls>,
) {
    let mut hysteresis: Vec<Hysteresis> =
        targets.iter().map(|(s, _)| Hysteresis::new(check.rise, check.fall, s.health())).collect();
    let rng = SplitMix::default();
    loop {
        let probes = targets.iter().map(|(_, addr)| probe(&check, addr, tls.as_ref()));
        let results = futures_util::future::join_all(probes).await;
        for ((state, _), (h, result)) in targets.iter().zip(hysteresis.iter_mut().zip(results)) {
            let ok = result.is_ok();
            if let Some(next) = h.record(ok) {
                let reason = match &result {
                    Ok(()) => format!("{} consecutive checks passed", check.rise),
                    Err(e) => format!("{} consecutive checks failed: {e}", check.fall),
                };
                let from = state.set_health(next);
                state.note_change(reason.clone(), unix_now());
                if next == Health::Up {
                    state.record_outcome(true);
                    if from == Health::Down {
                        state.mark_recovered(unix_now_ms());
                    }
                }
                tracing::warn!(
                    backend = %backend,
                    server = %state.name(),
                    from = from.as_str(),
                    to = next.as_str(),
                    reason = %reason,
                    "server health changed"
                );
            }
        }
        let jitter_ms = rng.below((check.interval.as_millis() as u64 / 10).max(1));
        tokio::time::sleep(check.interval + Duration::from_millis(jitter_ms)).await;
    }
}

/// One probe: `Ok` when the server passes, else why not.
async fn probe(
    check: &HealthCheck,
    addr: &http::uri::Authority,
    tls: Option<&UpstreamTls>,
) -> Result<(), String> {
    match tokio::time::timeout(check.timeout, probe_inner(check, addr, tls)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {:?}", check.timeout)),
    }
}

async fn probe_inner(
    check: &HealthCheck,
    addr: &http::uri::Authority,
    tls: Option<&UpstreamTls>,
) -> Result<(), String> {
    let stream =
        tokio::net::TcpStream::connect(addr.as_str()).await.map_err(|e| format!("connect: {e}"))?;
    if check.kind == CheckKind::Tcp {
        return Ok(());
    }
    let Some(tls) = tls else { return http_check(stream, check, addr).await };
    let name = tls.server_name.clone().unwrap_or_else(|| addr.host().to_owned());
    let name = rustls_pki_types::ServerName::try_from(name).map_err(|e| format!("tls: {e}"))?;
    let mut config = (*tls.client_config).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    http_check(stream, check, addr).await
}

/// The HTTP part of a check, over a plain or TLS connection.
async fn http_check<I>(
    io: I,
    check: &HealthCheck,
    addr: &http::uri::Authority,
) -> Result<(), String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let driver = tokio::spawn(conn);
    let host = check.host.as_deref().unwrap_or(addr.as_str());
    let req = http::Request::get(check.path.as_str())
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "tether-health-check")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let result = async {
        let resp = sender.send_request(req).await.map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status().as_u16();
        let (lo, hi) = check.expect_status;
        if !(lo..=hi).contains(&status) {
            return Err(format!("status {status}, expected {lo}-{hi}"));
        }
        if let Some(needle) = &check.expect_body {
            let body = Limited::new(resp.into_body(), MAX_CHECK_BODY)
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            if !String::from_utf8_lossy(&body).contains(needle.as_str()) {
                return Err(format!("body lacks {needle:?}"));
            }
        }
        Ok(())
    }
    .await;
    driver.abort();
    result
}

/// Passive detection: records one outcome of server `i` and ejects it when it has failed
/// `consecutive_failures` times in a row, within the backend's ejection cap.
pub fn observe(backend: &BackendView, i: usize, ok: bool) {
    let Some(o) = backend.outlier else { return };
    let server = &backend.servers[i].state;
    let failures = server.record_outcome(ok);
    if ok || failures < o.consecutive_failures || server.is_ejected() {
        return;
    }
    let ejected = backend.servers.iter().filter(|s| s.state.is_ejected()).count();
    // Strictly within the cap, and never the last server (even at 100%): a backend of one
    // server (or a 0% cap) never loses it to passive detection, so detection alone cannot
    // empty a backend.
    let n = backend.servers.len();
    let cap = (n * o.max_ejected_percent as usize / 100).min(n.saturating_sub(1));
    if ejected >= cap {
        return;
    }
    if server.set_ejected(true) {
        return; // another request got there first
    }
    backend.servers[i].metrics.ejection();
    eject(Arc::clone(&backend.name), Arc::clone(server), o, failures);
}

fn eject(backend: Arc<str>, server: Arc<ServerState>, o: Outlier, failures: u32) {
    let n = server.ejections().clamp(1, 16);
    let duration = o.base_ejection.saturating_mul(1 << (n - 1)).min(o.max_ejection);
    let reason = format!("ejected for {duration:?} after {failures} consecutive failures");
    server.note_change(reason.clone(), unix_now());
    let from = server.health().as_str();
    tracing::warn!(backend = %backend, server = %server.name(), from, to = "down", reason = %reason, "server health changed");
    tokio::spawn(async move {
        tokio::time::sleep(duration).await;
        server.record_outcome(true);
        server.mark_recovered(unix_now_ms());
        server.set_ejected(false);
        let reason = "ejection ended".to_owned();
        server.note_change(reason.clone(), unix_now());
        tracing::warn!(backend = %backend, server = %server.name(), from = "down", to = server.health().as_str(), reason = %reason, "server health changed");
    });
}

#[cfg(test)]
mod tests;
