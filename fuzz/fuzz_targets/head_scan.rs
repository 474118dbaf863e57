//! The wire-level head scan (tether_core::framing::HeadScan) on arbitrary bytes cut into two
//! reads at an arbitrary point: it never panics, and where the cut falls never changes which
//! heads it flags for both framing headers or whether it gives up. An unknown coding is
//! renamed only where its header name lies in the read that completes the head, so a cut may
//! lose that (last) finding, and then the bytes are handed on untouched.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_core::framing::{Finding, HeadScan};

fn run(bytes: &[u8], cut: usize) -> (Vec<Finding>, bool, Vec<u8>) {
    let mut scan = HeadScan::new(8192);
    let mut found = Vec::new();
    let mut bytes = bytes.to_vec();
    let (a, b) = bytes.split_at_mut(cut);
    scan.feed(a, &mut |f| found.push(f));
    scan.feed(b, &mut |f| found.push(f));
    (found, scan.is_off(), bytes)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else { return };
    let cut = usize::from(cut).min(bytes.len());
    let (whole, whole_off, whole_bytes) = run(bytes, bytes.len());
    let (found, off, handed) = run(bytes, cut);
    assert_eq!(off, whole_off, "cut at {cut}");
    if found == whole {
        assert_eq!(handed, whole_bytes, "cut at {cut}");
    } else {
        assert!(matches!(whole.last(), Some(Finding::UnknownCoding(_))), "cut at {cut}");
        assert_eq!(found[..], whole[..whole.len() - 1], "cut at {cut}");
        assert_eq!(handed, bytes, "cut at {cut}");
    }
});
