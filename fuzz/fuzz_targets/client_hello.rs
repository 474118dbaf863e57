//! Any first bytes of a TLS stream: reading the ClientHello never panics, and a server name
//! it gives is a valid lower-case host name. Fed through a TLS record header half the time,
//! so that the fuzzer reaches the ClientHello itself without having to find one first.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_core::sni::{MAX_CLIENT_HELLO, Peek, peek_client_hello};

/// Independent of the parser's own check: 1..=255 bytes of [a-z0-9-.], no empty label,
/// labels of at most 63 bytes.
fn valid_host_name(name: &str) -> bool {
    (1..=255).contains(&name.len())
        && name.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
        })
}

fn check(bytes: &[u8]) {
    match peek_client_hello(bytes) {
        Peek::Hello { sni: Some(name) } => assert!(valid_host_name(&name), "{name:?}"),
        Peek::NeedMore => assert!(bytes.len() < MAX_CLIENT_HELLO),
        Peek::Hello { sni: None } | Peek::Malformed(_) | Peek::TooLarge => {}
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some((&first, rest)) = data.split_first()
        && first & 1 == 1
    {
        let len = u16::try_from(rest.len()).unwrap_or(u16::MAX).to_be_bytes();
        check(&[&[22, 3, 1, len[0], len[1]][..], rest].concat());
    }
});
