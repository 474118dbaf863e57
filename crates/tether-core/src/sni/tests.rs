//! The ClientHello parser against real rustls hellos, hand-built ones and random bytes.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;

// === building hellos ===

/// What a real client sends first: rustls's ClientHello for `server_name` (rustls sends
/// no SNI for an IP address).
fn rustls_hello(server_name: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut wire = Vec::new();
    conn.write_tls(&mut wire).unwrap();
    wire
}

fn u16_prefixed(data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(data.len()).unwrap();
    [&len.to_be_bytes()[..], data].concat()
}

fn records(fragments: &[&[u8]]) -> Vec<u8> {
    fragments.iter().flat_map(|f| [&[22, 3, 1][..], &u16_prefixed(f)].concat()).collect()
}

fn handshake(kind: u8, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).unwrap().to_be_bytes();
    [&[kind][..], &len[1..], body].concat()
}

/// A TLS 1.2-style ClientHello body: no session id, one suite, null compression, and
/// the extensions block when given.
fn hello_body(extensions: Option<&[u8]>) -> Vec<u8> {
    let mut body = [&[3, 3][..], &[7; 32], &[0], &[0, 2, 0x13, 0x01], &[1, 0]].concat();
    if let Some(e) = extensions {
        body.extend(u16_prefixed(e));
    }
    body
}

fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
    [&kind.to_be_bytes()[..], &u16_prefixed(data)].concat()
}

/// A server_name extension with these (name_type, name) entries.
fn server_name_ext(entries: &[(u8, &[u8])]) -> Vec<u8> {
    let list: Vec<u8> =
        entries.iter().flat_map(|(t, n)| [&[*t][..], &u16_prefixed(n)].concat()).collect();
    extension(0, &u16_prefixed(&list))
}

fn hello_with(extensions: Option<&[u8]>) -> Vec<u8> {
    records(&[&handshake(1, &hello_body(extensions))])
}

fn hello_for(name: &[u8]) -> Vec<u8> {
    hello_with(Some(&server_name_ext(&[(0, name)])))
}

fn sni(peek: Peek<'_>) -> Option<String> {
    match peek {
        Peek::Hello { sni } => sni.map(Cow::into_owned),
        other => panic!("expected a hello, got {other:?}"),
    }
}

// === real hellos ===

#[test]
fn rustls_hello_gives_its_server_name_borrowed() {
    let wire = rustls_hello("db.example.com");
    let peek = peek_client_hello(&wire);
    assert!(matches!(peek, Peek::Hello { sni: Some(Cow::Borrowed("db.example.com")) }));
}

#[test]
fn rustls_hello_for_an_ip_address_has_no_server_name() {
    assert_eq!(peek_client_hello(&rustls_hello("192.0.2.1")), Peek::Hello { sni: None });
}

#[test]
fn every_prefix_of_a_real_hello_needs_more() {
    let wire = rustls_hello("db.example.com");
    for end in 0..wire.len() {
        assert_eq!(peek_client_hello(&wire[..end]), Peek::NeedMore, "prefix of {end} bytes");
    }
}

#[test]
fn bytes_after_the_hello_are_ignored() {
    let mut wire = rustls_hello("db.example.com");
    wire.extend_from_slice(&[0x17, 3, 3, 0, 5, 1, 2, 3, 4, 5]);
    assert_eq!(sni(peek_client_hello(&wire)).as_deref(), Some("db.example.com"));
}

/// The hello split over two records at every possible point gives the same answer, and
/// every prefix of the two records needs more.
#[test]
fn hello_split_over_two_records_at_any_point_is_reassembled() {
    let wire = rustls_hello("db.example.com");
    let fragment = &wire[RECORD_HEADER..];
    for at in 1..fragment.len() {
        let split = records(&[&fragment[..at], &fragment[at..]]);
        assert_eq!(sni(peek_client_hello(&split)).as_deref(), Some("db.example.com"));
        for end in [at, at + RECORD_HEADER, at + RECORD_HEADER + 1, split.len() - 1] {
            assert_eq!(peek_client_hello(&split[..end]), Peek::NeedMore, "split {at}, {end}");
        }
    }
}

#[test]
fn hello_in_one_byte_records_is_reassembled() {
    let wire = hello_for(b"db.example.com");
    let fragments: Vec<&[u8]> = wire[RECORD_HEADER..].chunks(1).collect();
    let split = records(&fragments);
    assert_eq!(sni(peek_client_hello(&split)).as_deref(), Some("db.example.com"));
}

// === server names ===

#[test]
fn server_names_are_validated_and_lower_cased() {
    let long_label = "a".repeat(63);
    let longest = [&long_label[..]; 4].join(".");
    let too_long = format!("{longest}.ab");
    let valid: &[(&str, &str)] = &[
        ("db.example.com", "db.example.com"),
        ("DB.Example.COM", "db.example.com"),
        ("localhost", "localhost"),
        ("x-1.a-b.io", "x-1.a-b.io"),
        (&longest, &longest),
    ];
    for (name, want) in valid {
        assert_eq!(sni(peek_client_hello(&hello_for(name.as_bytes()))).as_deref(), Some(*want));
    }
    let label_64 = format!("{}.com", "a".repeat(64));
    let invalid: &[&[u8]] = &[
        b"",
        b".",
        b"example.com.",
        b".example.com",
        b"a..b",
        b"ex_ample.com",
        b"exa mple.com",
        b"caf\xc3\xa9.fr",
        b"a\0b",
        label_64.as_bytes(),
        too_long.as_bytes(),
    ];
    for name in invalid {
        let wire = hello_for(name);
        let peek = peek_client_hello(&wire);
        assert!(
            matches!(peek, Peek::Malformed(_)),
            "{:?}: {peek:?}",
            String::from_utf8_lossy(name)
        );
    }
}

#[test]
fn server_name_extensions_are_read_as_rfc_6066_says() {
    let other = extension(10, &[0, 2, 0, 29]);
    // None: malformed; Some(sni): a hello with that server name.
    type Want = Option<Option<&'static str>>;
    let cases: &[(&str, Vec<u8>, Want)] = &[
        ("no extensions", hello_body(None), Some(None)),
        ("empty extensions", hello_body(Some(&[])), Some(None)),
        ("other extensions only", hello_body(Some(&other)), Some(None)),
        (
            "after another extension",
            hello_body(Some(&[other.clone(), server_name_ext(&[(0, b"a.io")])].concat())),
            Some(Some("a.io")),
        ),
        (
            "unknown name type skipped",
            hello_body(Some(&server_name_ext(&[(7, b"zz"), (0, b"a.io")]))),
            Some(Some("a.io")),
        ),
        ("only an unknown name type", hello_body(Some(&server_name_ext(&[(7, b"a.io")]))), None),
        ("two host names", hello_body(Some(&server_name_ext(&[(0, b"a.io"), (0, b"b.io")]))), None),
        (
            "two extensions",
            hello_body(Some(
                &[server_name_ext(&[(0, b"a.io")]), server_name_ext(&[(0, b"b.io")])].concat(),
            )),
            None,
        ),
        ("empty extension", hello_body(Some(&extension(0, &[]))), None),
        ("empty list", hello_body(Some(&extension(0, &[0, 0]))), None),
        (
            "bytes after the list",
            hello_body(Some(&extension(0, &[0, 7, 0, 0, 4, b'a', b'.', b'i', b'o', 9]))),
            None,
        ),
        (
            "name past the list",
            hello_body(Some(&extension(0, &[0, 5, 0, 0, 4, b'a', b'.', b'i', b'o']))),
            None,
        ),
    ];
    for (what, body, want) in cases {
        let wire = records(&[&handshake(1, body)]);
        let peek = peek_client_hello(&wire);
        match want {
            Some(name) => {
                assert_eq!(peek, Peek::Hello { sni: name.map(Cow::Borrowed) }, "{what}")
            }
            None => assert!(matches!(peek, Peek::Malformed(_)), "{what}: {peek:?}"),
        }
    }
}

// === not a hello ===

#[test]
fn other_protocols_are_refused_from_their_first_bytes() {
    let cases: &[(&str, &[u8])] = &[
        ("HTTP", b"G"),
        ("HTTP request", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("SSLv2 hello", &[0x80, 0x2e, 0x01, 0x00, 0x02]),
        ("alert record", &[21, 3, 3, 0, 2, 2, 40]),
        ("record version 2", &[22, 2]),
        ("empty record", &[22, 3, 1, 0, 0]),
        ("record over 2^14", &[22, 3, 1, 0x40, 0x01]),
        ("ServerHello", &[22, 3, 3, 0, 60, 2]),
        ("Finished", &[22, 3, 3, 0, 60, 20, 0, 0]),
    ];
    for (what, bytes) in cases {
        let peek = peek_client_hello(bytes);
        assert!(matches!(peek, Peek::Malformed(_)), "{what}: {peek:?}");
    }
}

/// Inner lengths that point past the end of a complete hello are malformed; a
/// handshake length past the record means the next record is awaited.
#[test]
fn inner_lengths_are_checked_against_the_hello() {
    let good = hello_body(Some(&server_name_ext(&[(0, b"a.io")])));
    let with = |at: usize, byte: u8| {
        let mut body = good.clone();
        body[at] = byte;
        body
    };
    let cases: &[(&str, Vec<u8>)] = &[
        ("version 2", with(0, 2)),
        ("session id of 33", [&good[..34], &[33], &[0; 33], &good[35..]].concat()),
        ("session id past the end", with(34, 200)),
        ("odd cipher_suites", [&good[..35], &[0, 3, 0x13, 1, 0], &good[39..]].concat()),
        ("no cipher_suites", [&good[..35], &[0, 0], &good[39..]].concat()),
        ("cipher_suites past the end", with(35, 0xff)),
        ("no compression", [&good[..39], &[0], &good[41..]].concat()),
        ("extensions past the end", with(41, 0xff)),
        ("extensions cut", good[..good.len() - 1].to_vec()),
        ("extension length past its block", with(45, 0xff)),
        ("bytes after the extensions", [&good[..], &[0]].concat()),
        ("body cut before the extensions", good[..40].to_vec()),
        ("empty body", Vec::new()),
    ];
    for (what, body) in cases {
        let wire = records(&[&handshake(1, body)]);
        let peek = peek_client_hello(&wire);
        assert!(matches!(peek, Peek::Malformed(_)), "{what}: {peek:?}");
    }
    let mut longer = handshake(1, &good);
    longer[3] += 1; // one byte more than the record holds
    assert_eq!(peek_client_hello(&records(&[&longer])), Peek::NeedMore);
}

// === the size limit ===

#[test]
fn hello_declared_over_the_limit_is_too_large_at_once() {
    let wire = [22, 3, 1, 0, 9, 1, 0, 0x40, 0x00];
    assert_eq!(peek_client_hello(&wire), Peek::TooLarge);
    let full_record = [22, 3, 1, 0x40, 0x00, 1];
    assert_eq!(peek_client_hello(&full_record), Peek::TooLarge);
}

fn padded_hello(padding: usize) -> Vec<u8> {
    let ext = [server_name_ext(&[(0, b"a.io")]), extension(21, &vec![0; padding])].concat();
    handshake(1, &hello_body(Some(&ext)))
}

#[test]
fn record_headers_count_towards_the_limit() {
    // 3,000 bytes of hello in 1-byte records take 18,000 bytes on the wire.
    let hello = padded_hello(2900);
    let split = records(&hello.chunks(1).collect::<Vec<_>>());
    assert_eq!(peek_client_hello(&split), Peek::TooLarge);
    assert_eq!(peek_client_hello(&split[..MAX_CLIENT_HELLO]), Peek::TooLarge);
    let exact = padded_hello(0).len();
    let at_limit = records(&[&padded_hello(MAX_CLIENT_HELLO - RECORD_HEADER - exact)]);
    assert_eq!(at_limit.len(), MAX_CLIENT_HELLO);
    assert_eq!(sni(peek_client_hello(&at_limit)).as_deref(), Some("a.io"));
    let over = records(&[&padded_hello(MAX_CLIENT_HELLO - RECORD_HEADER - exact + 1)]);
    assert_eq!(peek_client_hello(&over[..100]), Peek::TooLarge);
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = peek_client_hello(&bytes);
        let framed = [&[22, 3, 1][..], &bytes].concat();
        let _ = peek_client_hello(&framed);
    }

    /// A real hello with one byte changed never panics, and any name it gives is valid.
    #[test]
    fn corrupted_hellos_give_only_valid_names(at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut wire = rustls_hello("db.example.com");
        let at = at.index(wire.len());
        wire[at] = byte;
        if let Peek::Hello { sni: Some(name) } = peek_client_hello(&wire) {
            prop_assert!(is_host_name(name.as_bytes()));
            prop_assert!(!name.bytes().any(|b| b.is_ascii_uppercase()));
        }
    }

    /// A full buffer always gets an answer: whatever the record sizes, a caller that read
    /// MAX_CLIENT_HELLO bytes never hears NeedMore.
    #[test]
    fn a_full_buffer_never_needs_more(chunk in 1usize..3000, padding in 0usize..20_000) {
        let hello = padded_hello(padding);
        let wire = records(&hello.chunks(chunk).collect::<Vec<_>>());
        let wire = [&wire[..], &vec![0; MAX_CLIENT_HELLO]].concat();
        let peek = peek_client_hello(&wire[..MAX_CLIENT_HELLO]);
        prop_assert!(matches!(peek, Peek::Hello { .. } | Peek::TooLarge), "{:?}", peek);
    }
}
