//! The wire-level head scan (tether_core::framing::HeadScan) on arbitrary bytes cut into two
//! reads at an arbitrary point: it never panics, and where the cut falls never changes which
//! heads it flags or whether it gives up.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_core::framing::HeadScan;

fn run(parts: &[&[u8]]) -> (Vec<u64>, bool) {
    let mut scan = HeadScan::new(8192);
    let mut flagged = Vec::new();
    for p in parts {
        scan.feed(p, &mut |i| flagged.push(i));
    }
    (flagged, scan.is_off())
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else { return };
    let cut = usize::from(cut).min(bytes.len());
    let whole = run(&[bytes]);
    let (a, b) = bytes.split_at(cut);
    assert_eq!(run(&[a, b]), whole, "cut at {cut}");
});
