//! Costs of the per-server session count (`tether_core::sessions`): `observe` on every
//! request with a cookie, `estimate` per admin API call or metrics scrape.
//! `cargo bench -p tether-core --bench sessions` (divan).

use divan::{Bencher, black_box};
use tether_core::rng::SplitMix;
use tether_core::sessions::SessionSketch;

fn main() {
    divan::main();
}

const NOW: u64 = 1_700_000_000;
const WINDOW: u64 = 1800;

/// A sketch holding `n` distinct sessions spread over the last window.
fn filled(n: u64) -> SessionSketch {
    let sketch = SessionSketch::new(WINDOW);
    let ids = SplitMix::seeded(7);
    for i in 0..n {
        sketch.observe(ids.next_u64(), NOW - WINDOW + 1 + i * (WINDOW - 1) / n.max(1));
    }
    sketch
}

/// The usual request: a session already counted in this sub-window (two atomic loads).
#[divan::bench(threads = [1, 2])]
fn observe_known_session(b: Bencher) {
    let sketch = filled(100_000);
    b.bench(|| sketch.observe(black_box(0x5EED), NOW));
}

/// Sessions never seen before: now and then a register rises (a compare-and-swap).
#[divan::bench]
fn observe_new_sessions(b: Bencher) {
    let sketch = filled(100_000);
    let mut id = 0u64;
    b.bench_local(|| {
        id = id.wrapping_add(0x9E37_79B9_7F4A_7C15);
        sketch.observe(black_box(id), NOW);
    });
}

/// The first observation of a sub-window, which clears an expired register set; paid
/// once per sub-window (here every call moves the clock on by one sub-window).
#[divan::bench]
fn observe_rotating_sub_window(b: Bencher) {
    let sketch = filled(100_000);
    let mut now = NOW;
    b.bench_local(|| {
        now += WINDOW / 4;
        sketch.observe(black_box(42), now);
    });
}

#[divan::bench]
fn estimate_100k(b: Bencher) {
    let sketch = filled(100_000);
    b.bench(|| sketch.estimate(black_box(NOW)));
}

/// A server without traffic for longer than the window: every register set has expired.
#[divan::bench]
fn estimate_idle_server(b: Bencher) {
    let sketch = filled(100_000);
    b.bench(|| sketch.estimate(black_box(NOW + 2 * WINDOW)));
}
