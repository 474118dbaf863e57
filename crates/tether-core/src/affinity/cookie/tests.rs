use proptest::prelude::*;

use super::*;

fn keys() -> CookieKeys {
    CookieKeys::from_bytes(&[[7u8; 32]]).unwrap()
}

#[test]
fn round_trip() {
    let k = keys();
    let tag = k.server_tag(0, "app", "a").unwrap();
    let v = k.encode("app", tag, 0xDEAD_BEEF_0123_4567, 100, 200);
    assert_eq!(v.len(), 55);
    let t = k.decode("app", &v).unwrap();
    let want = Token {
        server: tag,
        issued_at: 100,
        refreshed_at: 200,
        session: Some(0xDEAD_BEEF_0123_4567),
        key_index: 0,
    };
    assert_eq!(t, want);
}

#[test]
fn a_token_encoded_onto_a_value_is_the_same_token() {
    let k = keys();
    let tag = k.server_tag(0, "app", "a").unwrap();
    let mut value = String::from("tether=");
    k.encode_to(&mut value, "app", tag, 42, (100, 200));
    let (name, token) = value.split_at("tether=".len());
    assert_eq!(name, "tether=");
    assert_eq!(token, k.encode("app", tag, 42, 100, 200));
    assert_eq!(token.len(), TOKEN_LEN);
    assert_eq!(k.decode("app", token).unwrap().session, Some(42));
}

#[test]
fn version_1_tokens_still_verify_without_a_session() {
    let k = keys();
    let tag = k.server_tag(0, "app", "a").unwrap();
    let v = k.encode_v1("app", tag, 100, 200);
    assert_eq!(v.len(), 44);
    let t = k.decode("app", &v).unwrap();
    assert_eq!(
        t,
        Token { server: tag, issued_at: 100, refreshed_at: 200, session: None, key_index: 0 }
    );
}

#[test]
fn sessions_of_one_server_and_second_get_different_values() {
    let k = keys();
    let tag = k.server_tag(0, "app", "a").unwrap();
    assert_ne!(k.encode("app", tag, 1, 100, 100), k.encode("app", tag, 2, 100, 100));
}

#[test]
fn a_version_1_body_cannot_pass_for_version_2_or_back() {
    let k = keys();
    let tag = k.server_tag(0, "app", "a").unwrap();
    // Relabel each version's bytes as the other: the MAC context differs, so neither verifies.
    let mut v1 = URL_SAFE_NO_PAD.decode(k.encode_v1("app", tag, 1, 1)).unwrap();
    v1[0] = 2;
    assert!(k.decode("app", &URL_SAFE_NO_PAD.encode(&v1)).is_err());
    let mut v2 = URL_SAFE_NO_PAD.decode(k.encode("app", tag, 9, 1, 1)).unwrap();
    v2[0] = 1;
    assert!(k.decode("app", &URL_SAFE_NO_PAD.encode(&v2)).is_err());
}

#[test]
fn every_single_bit_flip_is_rejected() {
    let k = keys();
    let tag = k.server_tag(0, "app", "a").unwrap();
    let v = k.encode("app", tag, 42, 100, 200);
    let raw = URL_SAFE_NO_PAD.decode(&v).unwrap();
    for byte in 0..raw.len() {
        for bit in 0..8 {
            let mut r = raw.clone();
            r[byte] ^= 1 << bit;
            let forged = URL_SAFE_NO_PAD.encode(&r);
            assert!(k.decode("app", &forged).is_err(), "flip {byte}:{bit} accepted");
        }
    }
}

#[test]
fn token_of_one_backend_is_useless_for_another() {
    let k = keys();
    let tag = k.server_tag(0, "app", "a").unwrap();
    let v = k.encode("app", tag, 7, 1, 1);
    assert_eq!(k.decode("api", &v), Err(TokenError::BadMac));
    assert_ne!(k.server_tag(0, "api", "a"), Some(tag));
}

#[test]
fn token_names_no_server_in_clear() {
    let k = keys();
    let tag = k.server_tag(0, "app", "server-alpha").unwrap();
    let v = k.encode("app", tag, 7, 1, 1);
    let raw = URL_SAFE_NO_PAD.decode(&v).unwrap();
    assert!(!v.contains("alpha"));
    assert!(!raw.windows(5).any(|w| w == b"alpha"));
}

#[test]
fn rotated_keys_verify_and_report_their_index() {
    let old = CookieKeys::from_bytes(&[[1u8; 32]]).unwrap();
    let both = CookieKeys::from_bytes(&[[2u8; 32], [1u8; 32]]).unwrap();
    let v = old.encode("app", old.server_tag(0, "app", "a").unwrap(), 3, 5, 5);
    let t = both.decode("app", &v).unwrap();
    assert_eq!(t.key_index, 1);
    assert_eq!(Some(t.server), both.server_tag(1, "app", "a"));
}

#[test]
fn unknown_version_is_refused() {
    let k = keys();
    for v in [k.encode("app", [0; 8], 1, 1, 1), k.encode_v1("app", [0; 8], 1, 1)] {
        let mut raw = URL_SAFE_NO_PAD.decode(&v).unwrap();
        raw[0] = 3;
        assert_eq!(k.decode("app", &URL_SAFE_NO_PAD.encode(&raw)), Err(TokenError::Version));
    }
}

#[test]
fn keys_must_be_long_base64() {
    assert!(matches!(CookieKeys::from_base64(&["!!"]), Err(KeyError::Base64 { index: 0, .. })));
    assert_eq!(
        CookieKeys::from_base64(&["AAAA"]).unwrap_err(),
        KeyError::TooShort { index: 0, len: 3 }
    );
    let good = STANDARD.encode([9u8; 32]);
    assert_eq!(CookieKeys::from_base64(&[good]).unwrap().len(), 1);
    assert_eq!(CookieKeys::from_base64::<&str>(&[]).unwrap_err(), KeyError::Empty);
}

proptest! {
    #[test]
    fn garbage_never_panics_and_never_verifies(s in "\\PC{0,80}") {
        prop_assert!(keys().decode("app", &s).is_err());
    }

    #[test]
    fn random_44_char_values_never_verify(s in "[A-Za-z0-9_-]{44}") {
        prop_assert!(keys().decode("app", &s).is_err());
    }

    #[test]
    fn random_55_char_values_never_verify(s in "[A-Za-z0-9_-]{55}") {
        prop_assert!(keys().decode("app", &s).is_err());
    }
}

#[test]
fn a_verified_token_is_remembered_by_its_thread_and_answers_the_same() {
    let k = keys();
    let tag = k.server_tag(0, "app", "a").unwrap();
    let v = k.encode("app", tag, 42, 100, 200);
    assert_eq!(verified::lookup(k.id, "app", &v), None, "not verified yet");
    let first = k.decode("app", &v).unwrap();
    assert_eq!(verified::lookup(k.id, "app", &v), Some(first), "kept once it verified");
    assert_eq!(k.decode("app", &format!("\"{v}\"")), Ok(first), "quoted, the same value");
}

#[test]
fn a_remembered_token_is_no_token_elsewhere() {
    let k = keys();
    let tag = k.server_tag(0, "app", "a").unwrap();
    let v = k.encode("app", tag, 42, 100, 200);
    k.decode("app", &v).unwrap();
    let mut flipped = v.clone().into_bytes();
    flipped[20] = if flipped[20] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let other_keys = CookieKeys::from_bytes(&[[8u8; 32]]).unwrap();
    // (case, keys, backend, value)
    let rows: [(&str, &CookieKeys, &str, &str); 3] = [
        ("another backend", &k, "shop", &v),
        ("other keys (a reload with a new secret)", &other_keys, "app", &v),
        ("one character changed", &k, "app", &flipped),
    ];
    for (case, keys, backend, value) in rows {
        assert_eq!(keys.decode(backend, value), Err(TokenError::BadMac), "{case}");
        assert_eq!(verified::lookup(keys.id, backend, value), None, "{case}: not kept");
    }
    assert!(k.decode("app", &v).is_ok(), "the real one still verifies");
}

#[test]
fn more_tokens_than_slots_all_verify_right() {
    let k = keys();
    let tag = k.server_tag(0, "app", "a").unwrap();
    let values: Vec<(u64, String)> =
        (0..300u64).map(|s| (s, k.encode("app", tag, s, 100, 200))).collect();
    for _ in 0..2 {
        for (session, value) in &values {
            assert_eq!(k.decode("app", value).unwrap().session, Some(*session));
        }
    }
}

#[test]
fn a_tag_index_finds_each_server_and_no_other() {
    let k = keys();
    let names = ["a", "b", "c", "d", "e"];
    let index: TagIndex =
        names.iter().enumerate().map(|(i, n)| (k.server_tag(0, "app", n).unwrap(), i)).collect();
    for (i, n) in names.iter().enumerate() {
        assert_eq!(index.get(&k.server_tag(0, "app", n).unwrap()), Some(&i), "{n}");
    }
    assert_eq!(index.get(&k.server_tag(0, "app", "f").unwrap()), None);
    assert_eq!(index.get(&k.server_tag(0, "other", "a").unwrap()), None);
    assert_eq!(TagIndex::default().get(&[0; 8]), None);
    let twice: TagIndex = [([1; 8], 0), ([1; 8], 1)].into_iter().collect();
    assert_eq!(twice.get(&[1; 8]), Some(&0), "the first of two servers with one tag");
}
