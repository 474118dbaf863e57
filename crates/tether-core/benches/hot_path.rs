//! Per-request costs of the pure logic: cookie token verify/issue, stick-table lookup and
//! bind, balancer picks (keyed ones too) and the Maglev table build.
//! `cargo bench -p tether-core` (divan). Figures: docs/performance.md.

use std::sync::Arc;

use divan::{Bencher, black_box};
use tether_core::ServerState;
use tether_core::affinity::{CookieKeys, Expiry};
use tether_core::balance::{self, Algorithm, Member, Options, key_hash, maglev, rendezvous};
use tether_core::stick::memory::MemoryStore;
use tether_core::stick::{KeyHasher, StickStore};

fn main() {
    divan::main();
}

fn keys() -> CookieKeys {
    CookieKeys::from_bytes(&[[7u8; 32]]).unwrap_or_else(|e| panic!("{e}"))
}

/// A cookie replayed on every request: verified once, then answered from the thread's cache
/// of verified tokens.
#[divan::bench]
fn cookie_verify_valid(b: Bencher) {
    let k = keys();
    let tag = k.server_tag(0, "app", "a").unwrap_or_default();
    let v = k.encode("app", tag, 0x1234_5678_9ABC_DEF0, 1_700_000_000, 1_700_000_000);
    b.bench(|| k.decode(black_box("app"), black_box(&v)));
}

/// Valid cookies seen for the first time (1,024 sessions in turn, more than the thread
/// keeps): the HMAC each time.
#[divan::bench]
fn cookie_verify_valid_first_seen(b: Bencher) {
    let k = keys();
    let tag = k.server_tag(0, "app", "a").unwrap_or_default();
    let values: Vec<String> =
        (0..1024).map(|s| k.encode("app", tag, s, 1_700_000_000, 1_700_000_000)).collect();
    let mut next = 0;
    b.bench_local(|| {
        next = (next + 1) % values.len();
        k.decode(black_box("app"), black_box(&values[next]))
    });
}

#[divan::bench]
fn cookie_verify_forged(b: Bencher) {
    let k = keys();
    let forged = "AWsL8IZrC_CGtbNPsxWOjbPStvgNsc94Flv8w7e2E3vA";
    b.bench(|| k.decode(black_box("app"), black_box(forged)));
}

#[divan::bench]
fn cookie_issue(b: Bencher) {
    let k = keys();
    let tag = k.server_tag(0, "app", "a").unwrap_or_default();
    b.bench(|| k.encode(black_box("app"), tag, 42, 1_700_000_000, 1_700_000_000));
}

const EXPIRY: Expiry = Expiry { idle_timeout: 1800, max_lifetime: 43_200 };

#[divan::bench]
fn stick_lookup_hit(b: Bencher) {
    let t = MemoryStore::new(1_000_000, EXPIRY);
    let h = KeyHasher::new(42);
    let server: Arc<str> = Arc::from("a");
    for i in 0..100_000u32 {
        t.bind_if_absent(h.hash(&i.to_le_bytes()), &server, 100);
    }
    let key = h.hash(&777u32.to_le_bytes());
    b.bench(|| t.get(black_box(key), 200));
}

#[divan::bench]
fn stick_hash_and_lookup_miss(b: Bencher) {
    let t = MemoryStore::new(1_000_000, EXPIRY);
    let h = KeyHasher::new(42);
    b.bench(|| t.get(h.hash(black_box(b"session-id-0123456789abcdef")), 200));
}

#[divan::bench]
fn stick_bind_new_keys(b: Bencher) {
    let t = MemoryStore::new(1_000_000, EXPIRY);
    let server: Arc<str> = Arc::from("a");
    let mut k = 0u128;
    b.bench_local(|| {
        k += 1;
        t.bind_if_absent(k, &server, 100)
    });
}

fn members(n: usize) -> Vec<Member> {
    (0..n)
        .map(|i| Member { state: Arc::new(ServerState::new(format!("s{i}"))), weight: 1 })
        .collect()
}

#[divan::bench(args = [Algorithm::RoundRobin, Algorithm::LeastConn, Algorithm::P2c, Algorithm::Random])]
fn balancer_pick_of_10(b: Bencher, algorithm: Algorithm) {
    let m = members(10);
    let bal = balance::build(algorithm, &m);
    b.bench(|| bal.pick(&|i| m[i].state.accepts_new()));
}

#[divan::bench]
fn rendezvous_pick_of_10(b: Bencher) {
    let m = members(10);
    b.bench(|| rendezvous::pick(&m, black_box(0xdead_beef), &|_| true));
}

/// Request keys for the keyed balancers, cycled so that picks touch different ring points
/// and table entries (a 65,537-entry Maglev table is 256 KiB: lookups are not all in L1).
fn request_keys() -> Vec<u64> {
    (0..4096u64).map(|k| key_hash(&k.to_le_bytes())).collect()
}

/// 0..9 requests in flight on the ten servers, held for the benchmark.
fn hold_uneven_load(m: &[Member]) -> Vec<tether_core::InFlightGuard> {
    m.iter().enumerate().flat_map(|(i, s)| (0..i).map(|_| s.state.begin())).collect()
}

/// Consistent hashing over 1,600 ring points: with the bounded-load check (125 %, one pass
/// summing in-flight, some keys walking past loaded servers) and without it (0).
#[divan::bench(args = [0, 125])]
fn hash_pick_of_10(b: Bencher, factor: u32) {
    let m = members(10);
    let _held = hold_uneven_load(&m);
    let bal = balance::build_with(Algorithm::Hash, &m, &Options { hash_balance_factor: factor });
    let (keys, mut k) = (request_keys(), 0);
    b.bench_local(|| {
        k = (k + 1) % keys.len();
        bal.pick_key(keys[k], &|i| m[i].state.accepts_new())
    });
}

/// One hot key on ten servers under uneven load: its server is above the bound, so the walk
/// goes on clockwise.
#[divan::bench]
fn hash_pick_hot_key_spilling_of_10(b: Bencher) {
    let m = members(10);
    let bal = balance::build(Algorithm::Hash, &m);
    let hot = key_hash(b"/popular");
    let home = bal.pick_key(hot, &|_| true).unwrap_or(0);
    let _held: Vec<_> = (0..50).map(|_| m[home].state.begin()).collect();
    b.bench(|| bal.pick_key(black_box(hot), &|i| m[i].state.accepts_new()));
}

#[divan::bench]
fn maglev_pick_of_10(b: Bencher) {
    let m = members(10);
    let bal = balance::build(Algorithm::Maglev, &m);
    let (keys, mut k) = (request_keys(), 0);
    b.bench_local(|| {
        k = (k + 1) % keys.len();
        bal.pick_key(keys[k], &|i| m[i].state.accepts_new())
    });
}

/// Server 3 is down: its keys probe the following table entries.
#[divan::bench]
fn maglev_pick_one_down_of_10(b: Bencher) {
    let m = members(10);
    let bal = balance::build(Algorithm::Maglev, &m);
    let (keys, mut k) = (request_keys(), 0);
    b.bench_local(|| {
        k = (k + 1) % keys.len();
        bal.pick_key(keys[k], &|i| i != 3 && m[i].state.accepts_new())
    });
}

/// Building the 65,537-entry table (done once per configuration generation).
#[divan::bench]
fn maglev_build_of_10(b: Bencher) {
    let m = members(10);
    b.bench(|| maglev::Maglev::new(black_box(&m)));
}

/// Two passes over ten servers with measured response times and uneven in-flight counts.
#[divan::bench]
fn least_time_pick_of_10(b: Bencher) {
    let m = members(10);
    for (i, s) in m.iter().enumerate() {
        s.state.observe_response_time(1_000 + 100 * i as u64, 1);
    }
    let _held = hold_uneven_load(&m);
    let bal = balance::build(Algorithm::LeastTime, &m);
    b.bench(|| bal.pick(&|i| m[i].state.accepts_new()));
}

#[divan::bench]
fn key_hash_of_an_address(b: Bencher) {
    b.bench(|| key_hash(black_box(b"203.0.113.77")));
}

/// A typical request head (a browser GET, ~400 bytes, arriving in one read) through the
/// h1 codec's one parse: httparse and the framing policy.
#[divan::bench]
fn h1_request_head(b: Bencher) {
    let head = b"GET /api/items?page=2 HTTP/1.1\r\nHost: app.example.com\r\n\
        User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
        Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
        Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n\
        Cookie: tether=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIj; sid=abc\r\n\
        Connection: keep-alive\r\n\r\n";
    let (limits, mut spans) = (tether_core::h1::HeadLimits::default(), Vec::new());
    b.bench_local(|| tether_core::h1::parse_request(black_box(&head[..]), &limits, &mut spans));
}

/// A typical server response head (7 lines) through the h1 codec's head parse and framing.
#[divan::bench]
fn h1_response_head(b: Bencher) {
    use tether_core::h1::{HeadLimits, parse_response};
    let head = b"HTTP/1.1 200 OK\r\nDate: Sun, 06 Dec 2026 10:00:00 GMT\r\nServer: app\r\n\
Content-Type: text/html; charset=utf-8\r\nContent-Length: 1234\r\nCache-Control: no-cache\r\n\
Set-Cookie: s=1; Path=/\r\nVary: Accept-Encoding\r\n\r\n";
    let limits = HeadLimits::default();
    let mut spans = Vec::with_capacity(16);
    b.bench_local(|| {
        parse_response(black_box(head), &limits, false, &mut spans).map(|h| h.is_some())
    });
}

/// 64 KiB of chunked body in 4 KiB chunks, decoded from one buffer.
#[divan::bench]
fn h1_decode_chunked_64k(b: Bencher) {
    use tether_core::h1::body::{BodyFraming, Decoder, encode_chunk, encode_last_chunk};
    let mut wire = Vec::new();
    for _ in 0..16 {
        encode_chunk(&mut wire, &[b'x'; 4096]);
    }
    encode_last_chunk(&mut wire, b"");
    b.bench(|| {
        let mut dec = Decoder::new(BodyFraming::Chunked);
        let (mut at, mut data) = (0, 0);
        while let Ok(step) = dec.decode(black_box(&wire[at..])) {
            data += step.piece.map_or(0, |p| p.range().len());
            at += step.consumed;
            if step.done {
                break;
            }
        }
        data
    });
}

/// A real ClientHello (rustls's, ~250 bytes, one record) read for its server name, as the
/// TLS passthrough listener does once per connection.
#[divan::bench]
fn sni_peek_client_hello(b: Bencher) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("{e}"))
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name =
        rustls::pki_types::ServerName::try_from("db.example.com").unwrap_or_else(|e| panic!("{e}"));
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).unwrap_or_else(|e| panic!("{e}"));
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap_or_else(|e| panic!("{e}"));
    b.bench(|| tether_core::sni::peek_client_hello(black_box(&hello)));
}
