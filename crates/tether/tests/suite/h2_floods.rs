//! HTTP/2 abuse against a real Tether, sent frame by frame with [`h2raw`] on h2c (prior
//! knowledge) connections to `127.0.0.1`:
//!
//! 1. Rapid reset (CVE-2023-44487): 1000 × (HEADERS, RST_STREAM) on one connection end that
//!    connection (GOAWAY `ENHANCE_YOUR_CALM`, then close) before the flood reaches the
//!    upstream; another client is served meanwhile.
//! 2. Stream limit: Tether's SETTINGS announce `http2.max_concurrent_streams` (default 100,
//!    here also 10), and streams beyond it are refused (`REFUSED_STREAM`), never forwarded.
//! 3. CONTINUATION flood: a header block that never ends (8 MB of junk fields, or 200 000
//!    empty frames) ends the connection with nothing forwarded and no memory growth.
//! 4. Oversized header lists (a 100 KiB value, 1500 small fields, an HPACK-indexing bomb;
//!    more fields than `max_headers`): refused, nothing forwarded.
//! 5. Flow control: a client that never opens its window gets at most its initial window
//!    (65 535 bytes) of a 10 MB download; Tether waits without buffering the rest, serves
//!    others, and resumes when the window opens.
//! 6. Paced resets (each stream accepted, then cancelled) end the connection after 100; a
//!    client that never answers the closing PING is dropped once silent, unless a request
//!    of its is still in progress.
//!
//! Every wait is bounded by a deadline; what each test saw (frames, error codes, counts, RSS)
//! is printed on stderr (`--no-capture` shows it).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use tether_testkit::{EchoServer, RecorderServer, Tether};

use crate::support::fixture::{
    Backend, Listener, ServerEntry, app, config, config_on, connections_refused, echo_servers,
    start, web,
};
use crate::support::h2raw::{self, Frame, FrameReader, Next};

const MIB: u64 = 1024 * 1024;

/// How long a flood may take to be dealt with: 15 s.
const FLOOD_DEADLINE: Duration = Duration::from_secs(15);

/// How long the connection may stay open after an error GOAWAY: 5 s.
const CLOSE_DEADLINE: Duration = Duration::from_secs(5);

// === Rigs ===

/// An echo server as the only server of backend `app`, behind `listener` (see [`web`]).
async fn echo_rig(listener: Listener) -> (EchoServer, Tether) {
    let mut servers = echo_servers(1);
    let tether = start(config_on(listener, app(&servers))).await;
    (servers.remove(0), tether)
}

/// A [`RecorderServer`] (keeps every byte it receives) behind listener `web`.
async fn recorder_rig() -> (RecorderServer, Tether) {
    let recorder = RecorderServer::start("rec").unwrap();
    let app = Backend::new().server(ServerEntry::new("rec", recorder.addr()));
    let tether = start(config(app)).await;
    (recorder, tether)
}

/// A GET by a well-behaved HTTP/2 client (reqwest, prior knowledge) on a connection of its
/// own: the status and the body length.
async fn well_behaved(addr: SocketAddr, path: String) -> (u16, usize) {
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let resp = client
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("well-behaved GET {path}: {e:?}"));
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap_or_else(|e| panic!("well-behaved GET {path} body: {e:?}"));
    (status, body.len())
}

/// The same, started now in its own task: "another client, meanwhile".
fn bystander(addr: SocketAddr, path: &str) -> JoinHandle<(u16, usize)> {
    tokio::spawn(well_behaved(addr, path.to_owned()))
}

/// `echo.requests()` once it has stopped changing for 300 ms (waiting at most 5 s): the
/// upstream's count after requests still on their way have arrived.
async fn settled_requests(echo: &EchoServer) -> u64 {
    let end = Instant::now() + Duration::from_secs(5);
    let mut last = echo.requests();
    let mut since = Instant::now();
    while Instant::now() < end && since.elapsed() < Duration::from_millis(300) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = echo.requests();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last
}

// === Connections ===

/// Opens an h2c connection with default settings (so a 65 535-byte initial window), reads
/// the server's first SETTINGS, acknowledges it, and returns its parameters.
async fn handshake(addr: SocketAddr) -> (FrameReader, OwnedWriteHalf, Vec<(u16, u32)>) {
    let (mut reader, mut writer) = h2raw::open(addr, &h2raw::settings()).await;
    let until = Instant::now() + h2raw::DEADLINE;
    loop {
        match reader.next(until).await {
            Next::Frame(f) if f.is_settings() => {
                writer.write_all(&h2raw::settings_ack()).await.unwrap();
                return (reader, writer, f.settings());
            }
            Next::Frame(_) => {}
            other => panic!("no SETTINGS from Tether: {other:?}"),
        }
    }
}

fn setting(settings: &[(u16, u32)], id: u16) -> Option<u32> {
    settings.iter().rev().find(|(i, _)| *i == id).map(|(_, v)| *v)
}

/// Writes `bytes` in the background, keeping the write half open afterwards (dropping it
/// would half-close the connection, which the server could take as the end). The task
/// returns the half and whether everything was written within [`FLOOD_DEADLINE`]; a server
/// that closes the connection makes the write fail, which is fine.
fn flood(mut writer: OwnedWriteHalf, bytes: Vec<u8>) -> JoinHandle<(OwnedWriteHalf, bool)> {
    tokio::spawn(async move {
        let written = tokio::time::timeout(FLOOD_DEADLINE, writer.write_all(&bytes)).await;
        (writer, matches!(written, Ok(Ok(()))))
    })
}

/// How a connection ended, as read by [`read_to_end`].
#[derive(Debug, Default)]
struct Ending {
    /// Every GOAWAY, in order.
    goaways: Vec<Frame>,
    /// The connection closed (before the deadline).
    closed: bool,
    /// When the first GOAWAY came, or else the close, after the start.
    after: Option<Duration>,
    /// Frames received, by description of their kind (`RST_STREAM 0x7`, `HEADERS 200`, ...).
    seen: BTreeMap<String, usize>,
    /// Payload bytes of the DATA frames received.
    data_bytes: usize,
}

// === impl Ending ===

impl Ending {
    /// The first GOAWAY with an error code (not `NO_ERROR`).
    fn error_goaway(&self) -> Option<&Frame> {
        self.goaways.iter().find(|g| g.error_code() != Some(h2raw::NO_ERROR))
    }

    fn summary(&self) -> String {
        let goaways: Vec<String> = self.goaways.iter().map(Frame::describe).collect();
        format!(
            "goaways {goaways:?}, closed {}, after {:?}, frames seen {:?}",
            self.closed, self.after, self.seen
        )
    }
}

/// Reads every frame until the connection closes, waiting at most until `until` for the
/// first GOAWAY (or the close) and then at most [`CLOSE_DEADLINE`] for the close.
async fn read_to_end(reader: &mut FrameReader, started: Instant, until: Instant) -> Ending {
    let mut ending = Ending::default();
    let mut until = until;
    loop {
        match reader.next(until).await {
            Next::Frame(f) => {
                let key = match f.kind {
                    h2raw::HEADERS => format!("HEADERS {:?}", f.status()),
                    h2raw::RST_STREAM | h2raw::GOAWAY => {
                        format!("{} {:#x}", kind_name(f.kind), f.error_code().unwrap_or_default())
                    }
                    kind => kind_name(kind).to_owned(),
                };
                *ending.seen.entry(key).or_default() += 1;
                if f.kind == h2raw::DATA {
                    ending.data_bytes += f.payload.len();
                }
                if f.kind == h2raw::GOAWAY {
                    if ending.after.is_none() {
                        ending.after = Some(started.elapsed());
                        until = Instant::now() + CLOSE_DEADLINE;
                    }
                    ending.goaways.push(f);
                }
            }
            Next::Closed => {
                ending.closed = true;
                ending.after.get_or_insert(started.elapsed());
                return ending;
            }
            Next::TimedOut => return ending,
        }
    }
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        h2raw::DATA => "DATA",
        h2raw::HEADERS => "HEADERS",
        h2raw::RST_STREAM => "RST_STREAM",
        h2raw::SETTINGS => "SETTINGS",
        h2raw::PING => "PING",
        h2raw::GOAWAY => "GOAWAY",
        h2raw::WINDOW_UPDATE => "WINDOW_UPDATE",
        _ => "other",
    }
}

// === Memory ===

/// Samples Tether's resident memory every 5 ms from [`RssWatch::start`] until
/// [`RssWatch::growth`], so a short-lived peak is not missed.
struct RssWatch {
    baseline: u64,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

// === impl RssWatch ===

impl RssWatch {
    /// Warms Tether up first — 8 well-behaved HTTP/2 GETs of `path`, each on a connection
    /// of its own — so one-time costs are in the baseline, not in the growth: worker
    /// threads' stacks and allocator heaps, the upstream pool, and the memory the allocator
    /// keeps after large transfers (in a debug build, RSS climbs by about 14 MiB over the
    /// first six 1 MB downloads, in 2 MiB steps, then stays flat).
    async fn start_warm(tether: &Tether, path: &str) -> Self {
        let addr = tether.listener_addr("web");
        for _ in 0..8 {
            assert_eq!(well_behaved(addr, path.to_owned()).await.0, 200, "warm-up GET {path}");
        }
        Self::start(tether)
    }

    fn start(tether: &Tether) -> Self {
        let baseline = tether.rss_bytes().unwrap();
        let pid = tether.pid();
        let peak = Arc::new(AtomicU64::new(baseline));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (peak, stop) = (Arc::clone(&peak), Arc::clone(&stop));
            async move {
                // At most two minutes of samples, whatever happens to the test.
                for _ in 0..24_000 {
                    if let Some(rss) = rss_of(pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        Self { baseline, peak, stop, task }
    }

    /// The peak so far over the baseline, in bytes.
    fn growth_so_far(&self) -> u64 {
        self.peak.load(Ordering::Relaxed).saturating_sub(self.baseline)
    }

    /// The peak over the baseline, in bytes, then the baseline and the peak.
    async fn growth(self) -> (u64, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let peak = self.peak.load(Ordering::Relaxed);
        (peak.saturating_sub(self.baseline), self.baseline, peak)
    }
}

/// `VmRSS` of process `pid`, in bytes.
fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().strip_suffix("kB")?;
    Some(kib.trim().parse::<u64>().ok()? * 1024)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

// === 1. Rapid reset ===

/// CVE-2023-44487: 1000 streams, each opened (GET of a slow path, END_STREAM) and cancelled
/// at once, written as fast as the socket takes them. Tether must end the connection —
/// h2's limit of 20 pending-accept resets answers GOAWAY `ENHANCE_YOUR_CALM` — long before
/// the flood reaches the upstream, and keep serving another client meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_flood_is_cut_off_with_goaway() {
    const STREAMS: u32 = 1000;
    let (echo, tether) = echo_rig(web()).await;
    let addr = tether.listener_addr("web");
    let (mut reader, writer, _) = handshake(addr).await;

    let fields = h2raw::request("GET", "/slow?ms=2000", &[]);
    let bytes: Vec<u8> = (0..STREAMS)
        .flat_map(|i| {
            let id = 2 * i + 1;
            [h2raw::headers(id, &fields, true), h2raw::rst_stream(id, h2raw::CANCEL)].concat()
        })
        .collect();
    let started = Instant::now();
    let flooder = flood(writer, bytes);
    let during = bystander(addr, "/slow?ms=300");
    let ending = read_to_end(&mut reader, started, started + FLOOD_DEADLINE).await;
    let (_writer, all_written) = flooder.await.unwrap();
    let during = during.await.unwrap();
    let upstream = settled_requests(&echo).await - 1; // less the bystander's
    let after = well_behaved(addr, "/after".into()).await;

    eprintln!(
        "rapid reset: {}; flood written whole: {all_written}; flood requests at the upstream: \
         {upstream} of {STREAMS}; bystander during {during:?}, after {after:?}",
        ending.summary()
    );
    assert_eq!(during.0, 200, "a client on another connection was not served during the flood");
    assert_eq!(after.0, 200, "Tether does not serve after the flood");
    assert!(
        upstream < 200,
        "{upstream} of {STREAMS} reset streams reached the upstream: {}",
        ending.summary()
    );
    let goaway = ending.error_goaway();
    assert!(
        goaway.is_some() || ending.closed,
        "the flooding connection was neither sent an error GOAWAY nor closed: {}",
        ending.summary()
    );
    if let Some(goaway) = goaway {
        assert_eq!(
            goaway.error_code(),
            Some(h2raw::ENHANCE_YOUR_CALM),
            "GOAWAY for a rapid-reset flood: {}",
            goaway.describe()
        );
    }
    assert!(ending.closed, "the connection stayed open after the GOAWAY: {}", ending.summary());
}

/// What became of [`paced_cancels`].
struct Paced {
    ending: Ending,
    cancelled: u32,
    upstream: u64,
    /// Connections counted as `h2_resets`.
    counted: f64,
}

/// Opens up to 400 streams one at a time on one connection; each waits until the upstream
/// has its request (so h2 accepted it and its pending-accept limit never sees it), then
/// gets `cancel(stream)`. Another connection must still be served afterwards.
async fn paced_cancels(what: &str, cancel: impl Fn(u32) -> Vec<u8>) -> Paced {
    const STREAMS: u32 = 400;
    let echo = echo_servers(1).remove(0);
    let tether = start(config(app(std::slice::from_ref(&echo))).admin()).await;
    let addr = tether.listener_addr("web");
    let (mut reader, mut writer, _) = handshake(addr).await;
    let fields = h2raw::request("GET", "/slow?ms=5000", &[]);
    let started = Instant::now();
    let mut cancelled = 0;
    for i in 0..STREAMS {
        let id = 2 * i + 1;
        let before = echo.requests();
        if writer.write_all(&h2raw::headers(id, &fields, true)).await.is_err() {
            break;
        }
        // At most 2 s for the request to reach the upstream; none after the close.
        if !tether_testkit::wait_until(Duration::from_secs(2), || echo.requests() > before).await {
            break;
        }
        if writer.write_all(&cancel(id)).await.is_err() {
            break;
        }
        cancelled += 1;
    }
    let ending = read_to_end(&mut reader, started, started + FLOOD_DEADLINE).await;
    let upstream = settled_requests(&echo).await;
    let after = well_behaved(addr, "/after".into()).await;
    eprintln!(
        "{what}: {}; streams cancelled {cancelled} of {STREAMS}; upstream requests \
         {upstream}; after {after:?}",
        ending.summary()
    );
    assert_eq!(after.0, 200, "{what}: Tether does not serve another connection after it");
    // The count may land a moment after the close.
    tether_testkit::wait_until_async(Duration::from_secs(1), || async {
        connections_refused(&tether, "web", "h2_resets").await > 0.0
    })
    .await;
    let counted = connections_refused(&tether, "web", "h2_resets").await;
    Paced { ending, cancelled, upstream, counted }
}

/// The rapid reset, paced: the client cancels each stream (RST_STREAM) once accepted. Every
/// such stream costs an upstream request; Tether closes the connection once at least 100
/// streams ended before their answers and they are most of its streams, and counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_paced_resets_end_the_connection_after_a_hundred() {
    let p = paced_cancels("paced RST_STREAM", |id| h2raw::rst_stream(id, h2raw::CANCEL)).await;
    assert!(
        (100..=110).contains(&p.cancelled) && p.upstream <= 111,
        "the connection should end after ~100 cancelled streams: {} cancelled, {} upstream \
         requests; {}",
        p.cancelled,
        p.upstream,
        p.ending.summary()
    );
    // Closed outright: a graceful GOAWAY would wait for a PING answer such a client need
    // not send, accepting its streams meanwhile.
    assert!(p.ending.closed, "the connection stayed open: {}", p.ending.summary());
    assert_eq!(p.counted, 1.0, "tether_connections_refused_total{{reason=\"h2_resets\"}}");
}

/// Builds the frames for one stream.
type Frames = fn(u32) -> Vec<u8>;

/// MadeYouReset (CVE-2025-8671): the client makes the *server* reset each stream with a
/// frame that is an error on that stream, so no RST_STREAM of the client's is ever counted.
/// h2 treats both classic triggers — a zero WINDOW_UPDATE on a stream, DATA on a stream the
/// client already ended — as connection errors: the first one ends the connection with
/// GOAWAY PROTOCOL_ERROR (and Tether's premature-reset count would end it after 100 anyway).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_made_you_reset_triggers_end_the_connection_at_once() {
    let triggers: [(&str, Frames); 2] = [
        ("zero WINDOW_UPDATE", |id| h2raw::window_update(id, 0)),
        ("DATA after END_STREAM", |id| h2raw::data(id, b"x", false)),
    ];
    for (what, trigger) in triggers {
        let p = paced_cancels(what, trigger).await;
        assert!(p.cancelled <= 2 && p.upstream <= 2, "{what}: {} streams", p.cancelled);
        let goaway = p.ending.error_goaway().map(|g| g.error_code());
        assert_eq!(goaway, Some(Some(h2raw::PROTOCOL_ERROR)), "{what}: {}", p.ending.summary());
        assert!(p.ending.closed, "{what}: the connection stayed open: {}", p.ending.summary());
    }
}

// === 2. Stream limit ===

/// What became of the streams of [`open_streams`].
#[derive(Debug, Default)]
struct Streams {
    /// The server's SETTINGS.
    settings: Vec<(u16, u32)>,
    /// Streams answered and ended (HEADERS or DATA with END_STREAM): their status.
    answered: BTreeMap<u32, Option<u16>>,
    /// Streams reset by the server: the error code.
    reset: BTreeMap<u32, u32>,
    goaways: Vec<String>,
}

// === impl Streams ===

impl Streams {
    fn count(&self, status: u16) -> usize {
        self.answered.values().filter(|s| **s == Some(status)).count()
    }

    /// Streams refused: reset with `REFUSED_STREAM` (or `PROTOCOL_ERROR`, which RFC 9113
    /// §5.1.2 also allows for exceeding the limit).
    fn refused(&self) -> Vec<u32> {
        let refusal = [h2raw::REFUSED_STREAM, h2raw::PROTOCOL_ERROR];
        self.reset.iter().filter(|(_, c)| refusal.contains(c)).map(|(id, _)| *id).collect()
    }

    fn summary(&self) -> String {
        let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
        for s in self.answered.values() {
            *statuses.entry(format!("{s:?}")).or_default() += 1;
        }
        let mut codes: BTreeMap<String, usize> = BTreeMap::new();
        for c in self.reset.values() {
            *codes.entry(format!("{c:#x}")).or_default() += 1;
        }
        format!(
            "SETTINGS {:?}; answered {statuses:?}; reset by code {codes:?} (streams {:?}); \
             goaways {:?}",
            self.settings,
            self.reset.keys().collect::<Vec<_>>(),
            self.goaways
        )
    }
}

/// Opens `count` streams at once (GET `path`, END_STREAM) on one connection, after the
/// SETTINGS exchange and with a 16 MiB connection window, then reads until every stream is
/// answered or reset (or 20 s have passed, or the connection ends).
async fn open_streams(addr: SocketAddr, count: u32, path: &str) -> Streams {
    let (mut reader, mut writer, settings) = handshake(addr).await;
    let fields = h2raw::request("GET", path, &[]);
    let mut out = h2raw::window_update(0, 1 << 24);
    for i in 0..count {
        out.extend(h2raw::headers(2 * i + 1, &fields, true));
    }
    writer.write_all(&out).await.unwrap();
    let mut streams = Streams { settings, ..Streams::default() };
    let mut statuses = BTreeMap::new();
    let until = Instant::now() + Duration::from_secs(20);
    while streams.answered.len() + streams.reset.len() < count as usize {
        let f = match reader.next(until).await {
            Next::Frame(f) => f,
            Next::Closed | Next::TimedOut => break,
        };
        match f.kind {
            h2raw::HEADERS => {
                statuses.entry(f.stream).or_insert(f.status());
            }
            h2raw::RST_STREAM => {
                streams.reset.insert(f.stream, f.error_code().unwrap());
            }
            h2raw::GOAWAY => streams.goaways.push(f.describe()),
            _ => {}
        }
        if f.ends_stream() {
            streams.answered.insert(f.stream, statuses.get(&f.stream).copied().flatten());
        }
    }
    streams
}

/// 150 streams at once against the default limit: SETTINGS say 100, exactly 100 streams
/// reach the upstream and are answered, the other 50 are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_streams_beyond_the_default_limit_of_100_are_refused() {
    let (echo, tether) = echo_rig(web()).await;
    let addr = tether.listener_addr("web");
    let started = Instant::now();
    let streams = open_streams(addr, 150, "/slow?ms=2000").await;
    let upstream = settled_requests(&echo).await;
    eprintln!(
        "150 streams, limit 100: {}; upstream requests {upstream}; took {:?}",
        streams.summary(),
        started.elapsed()
    );
    assert_eq!(
        setting(&streams.settings, h2raw::SETTINGS_MAX_CONCURRENT_STREAMS),
        Some(100),
        "SETTINGS_MAX_CONCURRENT_STREAMS: {:?}",
        streams.settings
    );
    assert!(upstream <= 100, "{upstream} concurrent streams reached the upstream (limit 100)");
    assert_eq!(streams.refused().len(), 50, "streams refused: {}", streams.summary());
    assert_eq!(streams.count(200), 100, "streams answered 200: {}", streams.summary());
    assert_eq!(upstream, 100, "upstream requests");
    assert!(streams.goaways.is_empty(), "{}", streams.summary());
}

/// `http2 = { max_concurrent_streams = 10 }` on the listener: SETTINGS say 10, and of 15
/// streams at once 10 are served and 5 refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_listener_stream_limit_is_announced_and_enforced() {
    let (echo, tether) = echo_rig(web().set("http2.max_concurrent_streams", 10)).await;
    let addr = tether.listener_addr("web");
    let streams = open_streams(addr, 15, "/slow?ms=1000").await;
    let upstream = settled_requests(&echo).await;
    eprintln!("15 streams, limit 10: {}; upstream requests {upstream}", streams.summary());
    assert_eq!(
        setting(&streams.settings, h2raw::SETTINGS_MAX_CONCURRENT_STREAMS),
        Some(10),
        "SETTINGS_MAX_CONCURRENT_STREAMS: {:?}",
        streams.settings
    );
    assert_eq!(streams.refused().len(), 5, "streams refused: {}", streams.summary());
    assert_eq!(streams.count(200), 10, "streams answered 200: {}", streams.summary());
    assert_eq!(upstream, 10, "upstream requests (limit 10)");
}

// === 3. CONTINUATION flood ===

/// Stream 1's HEADERS (GET `/flood`, END_STREAM) without END_HEADERS.
fn flood_headers() -> Vec<u8> {
    h2raw::headers_fragment(1, &h2raw::hpack(&h2raw::request("GET", "/flood", &[])), true, false)
}

/// [`flood_headers`], then 500 CONTINUATION frames of 16 000 bytes (8 MB), each full of
/// complete literal fields `x-junk-NNNNN: aaa…` (950-byte values); END_HEADERS on the last.
/// 8 MB rather than 2, so that a Tether holding on to the block would fail the RSS bound too.
fn continuation_junk_flood() -> Vec<u8> {
    const FRAMES: usize = 500;
    let value = vec![b'a'; 950];
    let mut out = flood_headers();
    let mut n = 0;
    for i in 0..FRAMES {
        let mut block = Vec::new();
        loop {
            let name = format!("x-junk-{n:05}");
            let field = h2raw::hpack(&[(name.as_bytes(), &value)]);
            if block.len() + field.len() > 16_000 {
                break;
            }
            block.extend(field);
            n += 1;
        }
        out.extend(h2raw::continuation(1, &block, i == FRAMES - 1));
    }
    out
}

/// [`flood_headers`], then 200 000 empty CONTINUATION frames without END_HEADERS (1.8 MB):
/// a header block that grows by nothing and never ends.
fn continuation_empty_flood() -> Vec<u8> {
    let mut out = flood_headers();
    let empty = h2raw::continuation(1, &[], false);
    for _ in 0..200_000 {
        out.extend_from_slice(&empty);
    }
    out
}

/// Sends `bytes` on a fresh connection while a bystander is served, and checks: the
/// connection ends (error GOAWAY, then close) without a response on stream 1, Tether's RSS
/// grows by less than 5 MiB, and the bystander gets its 200.
async fn assert_continuation_flood_cut_off(
    name: &str,
    tether: &Tether,
    bytes: Vec<u8>,
) -> Vec<String> {
    let addr = tether.listener_addr("web");
    let rss = RssWatch::start_warm(tether, "/warm-up").await;
    let (mut reader, writer, _) = handshake(addr).await;
    let sent = bytes.len();
    let started = Instant::now();
    let flooder = flood(writer, bytes);
    let during = bystander(addr, &format!("/bystander-{name}"));
    let ending = read_to_end(&mut reader, started, started + FLOOD_DEADLINE).await;
    let (_writer, all_written) = flooder.await.unwrap();
    let during = during.await.unwrap();
    let (growth, baseline, peak) = rss.growth().await;
    eprintln!(
        "CONTINUATION flood {name} ({sent} bytes, written whole: {all_written}): {}; RSS {} -> \
         peak {} (+{}); bystander {during:?}",
        ending.summary(),
        mib(baseline),
        mib(peak),
        mib(growth)
    );
    let mut failures = Vec::new();
    if during.0 != 200 {
        failures.push(format!("{name}: bystander got {during:?}"));
    }
    if ending.seen.keys().any(|k| k.starts_with("HEADERS")) {
        failures.push(format!("{name}: a response came: {}", ending.summary()));
    }
    match ending.error_goaway() {
        Some(g) if g.error_code() == Some(h2raw::ENHANCE_YOUR_CALM) => {}
        Some(g) => failures.push(format!("{name}: GOAWAY code: {}", g.describe())),
        None if ending.closed => {} // closed without a word: ended all the same
        None => {
            failures.push(format!("{name}: the connection was not ended: {}", ending.summary()))
        }
    }
    if !ending.closed {
        failures.push(format!("{name}: the connection stayed open: {}", ending.summary()));
    }
    if growth > 5 * MIB {
        failures.push(format!("{name}: RSS grew by {}", mib(growth)));
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_continuation_flood_ends_the_connection_without_forwarding() {
    let (recorder, tether) = recorder_rig().await;
    let mut failures =
        assert_continuation_flood_cut_off("junk-fields", &tether, continuation_junk_flood()).await;
    failures.extend(
        assert_continuation_flood_cut_off("empty-frames", &tether, continuation_empty_flood())
            .await,
    );
    let rec = recorder.recording();
    if rec.raw_contains(b"/flood") || rec.raw_contains(b"x-junk") {
        failures.push(format!(
            "the flood reached the upstream: complete {:?}, truncated {:?}",
            rec.targets(),
            rec.truncated.iter().map(|r| &r.target).collect::<Vec<_>>()
        ));
    }
    failures.extend(rec.problems());
    assert!(failures.is_empty(), "CONTINUATION flood:\n{}", failures.join("\n"));
}

// === 4. Oversized header lists ===

/// A header block as HEADERS (END_STREAM) plus as many CONTINUATION frames as it takes
/// (16 000-byte fragments), END_HEADERS on the last: one header block, however large.
fn header_block_frames(block: &[u8]) -> Vec<u8> {
    let fragments: Vec<&[u8]> = block.chunks(16_000).collect();
    let last = fragments.len() - 1;
    let mut out = Vec::new();
    for (i, fragment) in fragments.iter().enumerate() {
        out.extend(if i == 0 {
            h2raw::headers_fragment(1, fragment, true, i == last)
        } else {
            h2raw::continuation(1, fragment, i == last)
        });
    }
    out
}

/// GET `path` with `extra` fields after the pseudo-headers, as one header block.
fn get_with_fields(path: &str, extra: &[(&[u8], &[u8])]) -> Vec<u8> {
    header_block_frames(&h2raw::hpack(&h2raw::request("GET", path, extra)))
}

/// Sends each case on its own connection: each must be refused (reset, 431, GOAWAY or
/// close) and no byte of it may reach the upstream; a fresh client is served afterwards.
async fn assert_header_lists_refused(
    recorder: &RecorderServer,
    tether: &Tether,
    cases: &[(&str, &str, Vec<u8>)],
) {
    let addr = tether.listener_addr("web");
    let mut failures = Vec::new();
    for (name, path, frames) in cases {
        let outcome = h2raw::exchange(addr, frames).await;
        eprintln!("{name} ({} bytes on the wire): {outcome:?}", frames.len());
        if !outcome.is_rejection() {
            failures.push(format!("{name}: {outcome:?}"));
        }
        if recorder.recording().raw_contains(path.as_bytes()) {
            failures.push(format!("{name}: forwarded to the upstream"));
        }
    }
    let probe = well_behaved(addr, "/probe".into()).await;
    if probe.0 != 200 {
        failures.push(format!("Tether no longer serves: {probe:?}"));
    }
    failures.extend(recorder.recording().problems());
    assert!(failures.is_empty(), "oversized header lists not refused:\n{}", failures.join("\n"));
}

/// Header lists over `max_header_bytes` (64 KiB, announced as SETTINGS_MAX_HEADER_LIST_SIZE):
/// one 100 KiB value, 1500 small fields (50 KiB on the wire but 92 KiB as counted by RFC 9113,
/// with 32 bytes per field), and an HPACK bomb — a 4000-byte field added to the dynamic
/// table once, then referenced 3000 times by one-byte indexes in a single 7 KB HEADERS frame
/// (12 MB decoded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_header_lists_over_max_header_bytes_are_refused() {
    let (recorder, tether) = recorder_rig().await;
    let (_reader, _writer, settings) = handshake(tether.listener_addr("web")).await;
    eprintln!("SETTINGS {settings:?}");
    assert_eq!(
        setting(&settings, h2raw::SETTINGS_MAX_HEADER_LIST_SIZE),
        Some(65536),
        "SETTINGS_MAX_HEADER_LIST_SIZE: {settings:?}"
    );

    let big = vec![b'b'; 100 * 1024];
    let names: Vec<String> = (0..1500).map(|i| format!("x-many-{i:04}")).collect();
    let many: Vec<(&[u8], &[u8])> =
        names.iter().map(|n| (n.as_bytes(), &b"vvvvvvvvvvvvvvvvvvvv"[..])).collect();
    let mut bomb = h2raw::hpack(&h2raw::request("GET", "/bomb", &[]));
    bomb.extend(h2raw::hpack_indexed_literal(b"x-bomb", &[b'z'; 4000]));
    for _ in 0..3000 {
        bomb.extend(h2raw::hpack_index(62));
    }
    let cases = [
        ("100 KiB value", "/big", get_with_fields("/big", &[(b"x-big", &big)])),
        ("1500 fields", "/many", get_with_fields("/many", &many)),
        ("HPACK bomb", "/bomb", h2raw::headers_fragment(1, &bomb, true, true)),
    ];
    assert_header_lists_refused(&recorder, &tether, &cases).await;
}

/// `limits.max_headers` (default 100: "header lines per request; beyond it, 431") holds for
/// HTTP/2 too: 150 tiny fields (3 KiB) in one HEADERS frame are refused, not forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_more_fields_than_max_headers_are_refused() {
    let (recorder, tether) = recorder_rig().await;
    let names: Vec<String> = (0..150).map(|i| format!("x-f-{i:03}")).collect();
    let fields: Vec<(&[u8], &[u8])> = names.iter().map(|n| (n.as_bytes(), &b"v"[..])).collect();
    let cases = [("150 fields", "/fields", get_with_fields("/fields", &fields))];
    assert_header_lists_refused(&recorder, &tether, &cases).await;
}

// === 5. Flow control ===

/// A client that never sends WINDOW_UPDATE asks for a 10 MB download: Tether sends at most
/// the 65 535-byte initial window of DATA and waits, without buffering the rest (RSS), while
/// another client downloads 1 MB; once the window opens, DATA flows again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_download_stops_at_the_client_window_without_buffering() {
    const INITIAL_WINDOW: usize = 65_535;
    let (_echo, tether) = echo_rig(web()).await;
    let addr = tether.listener_addr("web");
    let rss = RssWatch::start_warm(&tether, "/download?bytes=1000000").await;
    let (mut reader, mut writer, _) = handshake(addr).await;
    let fields = h2raw::request("GET", "/download?bytes=10000000", &[]);
    writer.write_all(&h2raw::headers(1, &fields, true)).await.unwrap();

    // Read until no DATA has come for 1.5 s (at most 15 s in all).
    let hard = Instant::now() + FLOOD_DEADLINE;
    let mut status = None;
    let mut data = 0;
    let mut other = Vec::new();
    let mut quiet_from = Instant::now();
    loop {
        let until = (quiet_from + Duration::from_millis(1500)).min(hard);
        match reader.next(until).await {
            Next::Frame(f) if f.kind == h2raw::DATA && f.stream == 1 => {
                data += f.payload.len();
                quiet_from = Instant::now();
            }
            Next::Frame(f) if f.kind == h2raw::HEADERS && f.stream == 1 => status = f.status(),
            Next::Frame(f) => other.push(f.describe()),
            Next::Closed => panic!("Tether closed the connection: status {status:?}, {data} B"),
            Next::TimedOut => break,
        }
    }
    let stalled = Instant::now();
    let stall_growth = rss.growth_so_far();
    let (during, during_len) = well_behaved(addr, "/download?bytes=1000000".into()).await;
    // Still nothing more on the stalled stream while the other client was served.
    let mut late = 0;
    let until = Instant::now() + Duration::from_millis(300);
    while let Next::Frame(f) = reader.next(until).await {
        if f.kind == h2raw::DATA {
            late += f.payload.len();
        }
    }
    let (growth, baseline, peak) = rss.growth().await;
    eprintln!(
        "window: status {status:?}, {data} DATA bytes before stalling, {late} more later; \
         other frames {other:?}; bystander {during} with {during_len} bytes; RSS {} -> peak {} \
         (+{} by the stall, +{} in all), stalled for {:?}",
        mib(baseline),
        mib(peak),
        mib(stall_growth),
        mib(growth),
        stalled.elapsed()
    );
    assert_eq!(status, Some(200));
    assert!(data > 0, "no DATA at all within the window");
    assert!(
        data + late <= INITIAL_WINDOW,
        "{} DATA bytes sent into a {INITIAL_WINDOW}-byte window",
        data + late
    );
    assert_eq!((during, during_len), (200, 1_000_000), "another client's download");
    // Only the stall is measured against the bound: the bystander's 1 MB download moves the
    // allocator's retained memory by 0-8 MiB on its own (2 MiB steps), stalled stream or not.
    // A Tether that buffered the body would show ~10 MiB already in the 1.5 s quiet period,
    // as the upstream writes the whole body within milliseconds.
    assert!(stall_growth < 5 * MIB, "RSS grew by {} as the download stalled", mib(stall_growth));

    // The stall was flow control: opening the window lets DATA flow again.
    let opened = [h2raw::window_update(0, 1 << 20), h2raw::window_update(1, 1 << 20)].concat();
    writer.write_all(&opened).await.unwrap();
    let until = Instant::now() + h2raw::DEADLINE;
    let mut resumed = 0;
    while resumed < 512 * 1024 {
        match reader.next(until).await {
            Next::Frame(f) if f.kind == h2raw::DATA && f.stream == 1 => resumed += f.payload.len(),
            Next::Frame(_) => {}
            Next::Closed | Next::TimedOut => break,
        }
    }
    eprintln!("window: {resumed} DATA bytes after opening the window by 1 MiB");
    assert!(resumed >= 512 * 1024, "only {resumed} bytes after WINDOW_UPDATE of 1 MiB");
}

// === 6. Clients that never answer the closing PING ===

/// A graceful HTTP/2 close sends GOAWAY and a PING and waits for the answer before the
/// final GOAWAY. A client that says nothing after its SETTINGS never answers: once the idle
/// timeout has closed the connection gracefully, Tether drops it after as long again of
/// silence (here 1 s + 1 s), instead of keeping it, and its connection slot, forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_idle_client_that_never_answers_the_ping_is_dropped() {
    // The header timeout is far off: only the idle close and the drop after it (1 s + 1 s)
    // can end the connection while the test waits (up to 20 s, and 5 s after the GOAWAY).
    let web = web().set("timeouts.idle", "1s").set("timeouts.header", "60s");
    let (_echo, tether) = echo_rig(web).await;
    let addr = tether.listener_addr("web");
    let (mut reader, _writer, _) = handshake(addr).await;
    let started = Instant::now();
    let ending = read_to_end(&mut reader, started, started + Duration::from_secs(20)).await;
    eprintln!("silent client: {}; closed after {:?}", ending.summary(), started.elapsed());
    assert!(!ending.goaways.is_empty(), "no graceful GOAWAY first: {}", ending.summary());
    assert!(ending.closed, "the silent connection was kept: {}", ending.summary());
}

/// A client that never answers PINGs sends one GET of `path` to a listener whose idle
/// timeout is 1 s, then stays silent: what came back until the connection closed (or 10 s).
async fn silent_client_get(path: &str) -> Ending {
    let (_echo, tether) = echo_rig(web().set("timeouts.idle", "1s")).await;
    let addr = tether.listener_addr("web");
    let (mut reader, mut writer, _) = handshake(addr).await;
    let fields = h2raw::request("GET", path, &[]);
    writer.write_all(&h2raw::headers(1, &fields, true)).await.unwrap();
    let started = Instant::now();
    let ending = read_to_end(&mut reader, started, started + Duration::from_secs(10)).await;
    eprintln!("silent client, GET {path}: {}", ending.summary());
    ending
}

/// The same silent client with a request in progress keeps its connection until the answer:
/// the idle close never cuts a request short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_idle_close_waits_for_a_request_in_progress_even_without_a_ping_answer() {
    let ending = silent_client_get("/slow?ms=3500").await;
    assert_eq!(
        ending.seen.get("HEADERS Some(200)"),
        Some(&1),
        "the request in progress was cut: {}",
        ending.summary()
    );
    assert!(ending.closed, "the connection was kept after the answer: {}", ending.summary());
}

/// The same with a body that pauses after its head for longer than the idle timeout: the
/// request is in progress until its body is sent whole, so the quiet close after the idle
/// one waits for the body too (it used to count the request done once its head was ready,
/// and dropped the connection before the body came).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_idle_close_waits_for_a_body_in_progress_even_without_a_ping_answer() {
    // The head at once, the 2,000 bytes of body 3 s later.
    let ending = silent_client_get("/download?bytes=2000&delay_ms=3000").await;
    assert_eq!(ending.seen.get("HEADERS Some(200)"), Some(&1), "{}", ending.summary());
    assert_eq!(ending.data_bytes, 2000, "the body was cut: {}", ending.summary());
    assert!(ending.closed, "the connection was kept after the answer: {}", ending.summary());
}
