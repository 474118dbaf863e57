//! 1 GiB bodies through the real `tether` binary, both ways: they must stream, so the
//! proxy's resident memory stays flat however big the body is.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tether_testkit::servers::download_byte;
use tether_testkit::{EchoServer, Tether};

use crate::support::fixture::{Backend, config, start};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// How much Tether's RSS may grow above its idle level while a body streams through.
const RSS_ALLOWANCE: u64 = 64 * MIB;

/// Upper bound for one 1 GiB transfer on a slow, shared machine (debug build).
const TRANSFER_DEADLINE: Duration = Duration::from_secs(120);

/// How often RSS is sampled during a transfer.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// Tether in front of one echo server. The response timeout covers the whole upload (the
/// echo answers after the last byte), so it is set well above the transfer time.
async fn start_in_front_of(server: &EchoServer) -> Tether {
    let app = Backend::new().server(server).set("timeouts.connect", "1s");
    start(config(app.set("timeouts.response", "60s"))).await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap_or_else(|e| panic!("building an HTTP client: {e}"))
}

/// Tether's RSS once it has served a small request (pools and buffers exist).
async fn warm_rss(tether: &Tether, http: &reqwest::Client) -> u64 {
    let url = format!("{}/warmup", tether.url("web"));
    let response = http.get(&url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap_or_else(|e| panic!("reading the warm-up body: {e}"));
    tether.rss_bytes().unwrap_or_else(|e| panic!("reading RSS: {e}"))
}

/// Drives `transfer` to completion while sampling Tether's RSS every [`SAMPLE_EVERY`];
/// returns its output, the peak RSS and the number of samples.
async fn sampling_rss<T>(tether: &Tether, transfer: impl Future<Output = T>) -> (T, u64, u32) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    let mut peak = 0;
    let mut samples = 0;
    let sampled = async {
        tokio::pin!(transfer);
        loop {
            tokio::select! {
                out = &mut transfer => break out,
                _ = tick.tick() => {
                    let rss = tether.rss_bytes().unwrap_or_else(|e| panic!("reading RSS: {e}"));
                    peak = peak.max(rss);
                    samples += 1;
                }
            }
        }
    };
    let out = tokio::time::timeout(TRANSFER_DEADLINE, sampled)
        .await
        .unwrap_or_else(|_| panic!("the transfer took longer than {TRANSFER_DEADLINE:?}"));
    (out, peak, samples)
}

fn assert_bounded(before: u64, peak: u64, samples: u32) {
    eprintln!("RSS before {} MiB, peak {} MiB over {samples} samples", before / MIB, peak / MIB);
    assert!(samples >= 5, "only {samples} RSS samples: the transfer was not observed");
    assert!(
        peak <= before + RSS_ALLOWANCE,
        "Tether's RSS grew from {} MiB to {} MiB (allowed: +{} MiB): the body was buffered",
        before / MIB,
        peak / MIB,
        RSS_ALLOWANCE / MIB
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_upload_streams_through_with_bounded_memory() {
    let echo = EchoServer::start("a").unwrap();
    let tether = start_in_front_of(&echo).await;
    let http = client();
    let before = warm_rss(&tether, &http).await;

    // 1024 chunks of one shared 1 MiB buffer: the client holds 1 MiB, not 1 GiB.
    let chunk = Bytes::from(vec![0x5a_u8; MIB as usize]);
    let chunks = futures_util::stream::iter(
        (0..GIB / MIB).map(move |_| Ok::<Bytes, std::io::Error>(chunk.clone())),
    );
    let url = format!("{}/upload", tether.url("web"));
    let upload = async {
        let response = http.post(&url).body(reqwest::Body::wrap_stream(chunks)).send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        Ok::<_, reqwest::Error>((status, body))
    };
    let started = std::time::Instant::now();
    let (result, peak, samples) = sampling_rss(&tether, upload).await;
    eprintln!("1 GiB upload in {:?}", started.elapsed());

    let (status, body) = result.unwrap();
    assert_eq!(status, 200, "body: {}", String::from_utf8_lossy(&body));
    let echo_json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo_json["body_bytes"], GIB, "echo saw: {echo_json}");
    assert_eq!(echo_json["method"], "POST");
    assert_bounded(before, peak, samples);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_download_streams_through_with_bounded_memory() {
    let echo = EchoServer::start("a").unwrap();
    let tether = start_in_front_of(&echo).await;
    let http = client();
    let before = warm_rss(&tether, &http).await;

    let url = format!("{}/download?bytes={GIB}", tether.url("web"));
    let download = async {
        let response = http.get(&url).send().await?;
        let status = response.status();
        let length = response.content_length();
        let server = response.headers().get("x-server").cloned();
        let mut received = 0_u64;
        let mut mismatches = Vec::new();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            // First, middle and last byte of every chunk, at their offsets in the body.
            for at in [0, chunk.len() / 2, chunk.len().saturating_sub(1)] {
                if let Some(&byte) = chunk.get(at) {
                    let offset = received + at as u64;
                    if byte != download_byte(offset) && mismatches.len() < 10 {
                        mismatches.push((offset, byte, download_byte(offset)));
                    }
                }
            }
            received += chunk.len() as u64;
        }
        Ok::<_, reqwest::Error>((status, length, server, received, mismatches))
    };
    let started = std::time::Instant::now();
    let (result, peak, samples) = sampling_rss(&tether, download).await;
    eprintln!("1 GiB download in {:?}", started.elapsed());

    let (status, length, server, received, mismatches) = result.unwrap();
    assert_eq!(status, 200);
    assert_eq!(server.as_ref().and_then(|v| v.to_str().ok()), Some("a"));
    assert_eq!(length, Some(GIB), "content-length not passed through");
    assert_eq!(received, GIB, "the body was cut short or padded");
    assert!(mismatches.is_empty(), "(offset, got, expected): {mismatches:?}");
    assert_bounded(before, peak, samples);
}
