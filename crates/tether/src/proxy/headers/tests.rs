use super::*;

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    h
}

#[test]
fn hop_by_hop_and_connection_named_headers_are_removed() {
    let mut h = map(&[
        ("connection", "keep-alive, x-secret, X-Forwarded-For"),
        ("keep-alive", "timeout=5"),
        ("x-secret", "1"),
        ("te", "trailers"),
        ("upgrade", "websocket"),
        ("x-kept", "yes"),
    ]);
    strip_hop_by_hop(&mut h, false);
    assert_eq!(h.len(), 1, "{h:?}");
    assert!(h.contains_key("x-kept"));
}

#[test]
fn every_connection_line_names_headers_to_remove() {
    // (case, headers, tunnelling, the names left)
    type Row<'a> = (&'a str, &'a [(&'a str, &'a str)], bool, &'a [&'a str]);
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("one line", &[("connection", "x-a"), ("x-a", "1"), ("x-b", "2")], false, &["x-b"]),
        ("two lines", &[("connection", "x-a"), ("connection", "X-B , close"), ("x-a", "1"), ("x-b", "2"), ("x-c", "3")], false, &["x-c"]),
        ("upgrade on the second line", &[("connection", "x-a"), ("connection", "upgrade"), ("upgrade", "ws"), ("x-a", "1")], true, &["upgrade", "connection"]),
        ("names that are no header name", &[("connection", "a b, , \"q\""), ("x-kept", "1")], false, &["x-kept"]),
        ("hop-by-hop names", &[("connection", "Keep-Alive, TE, upgrade"), ("keep-alive", "5"), ("te", "trailers"), ("upgrade", "ws"), ("x-kept", "1")], false, &["x-kept"]),
        ("hop-by-hop names, tunnelling", &[("connection", "keep-alive, Upgrade"), ("keep-alive", "5"), ("upgrade", "ws")], true, &["connection", "upgrade"]),
        ("a header named close", &[("connection", "close"), ("close", "1"), ("x-kept", "1")], false, &["x-kept"]),
    ];
    for (case, headers, upgrade, left) in rows {
        let mut h = map(headers);
        strip_hop_by_hop(&mut h, *upgrade);
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        let mut want = left.to_vec();
        want.sort_unstable();
        assert_eq!(names, want, "{case}");
    }
}

#[test]
fn each_hop_by_hop_header_alone_is_removed() {
    // Only the names present are removed: each one alone, without a `Connection` line.
    let names = ["keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization"];
    for name in names.into_iter().chain(["te", "trailer", "transfer-encoding", "upgrade"]) {
        for upgrade in [false, true] {
            let mut h = map(&[("x-before", "1"), (name, "v"), ("x-after", "2")]);
            strip_hop_by_hop(&mut h, upgrade);
            let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
            left.sort_unstable();
            let want: &[&str] = match (name, upgrade) {
                ("upgrade", true) => &["connection", "upgrade", "x-after", "x-before"],
                (_, true) => &["connection", "x-after", "x-before"],
                _ => &["x-after", "x-before"],
            };
            assert_eq!(left, want, "{name}, tunnelling {upgrade}");
        }
    }
}

#[test]
fn naming_forwarded_for_in_connection_cannot_strip_ours() {
    let mut h = map(&[("connection", "x-forwarded-for"), ("host", "a.example")]);
    strip_hop_by_hop(&mut h, false);
    add_forwarding(&mut h, &PeerHeaders::new("192.0.2.7".parse().unwrap()), false, "http");
    assert_eq!(h["x-forwarded-for"], "192.0.2.7");
}

#[test]
fn upgrade_is_kept_when_tunnelling() {
    let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
    assert!(wants_upgrade(&h));
    strip_hop_by_hop(&mut h, true);
    assert_eq!(h["upgrade"], "websocket");
    assert_eq!(h["connection"], "upgrade");
}

#[test]
fn untrusted_forwarding_headers_are_replaced() {
    let mut h = map(&[
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-proto", "https"),
        ("host", "shop.example"),
    ]);
    add_forwarding(&mut h, &PeerHeaders::new("192.0.2.7".parse().unwrap()), false, "http");
    assert_eq!(h["x-forwarded-for"], "192.0.2.7");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example");
    assert_eq!(h["forwarded"], "for=192.0.2.7;proto=http;host=\"shop.example\"");
}

#[test]
fn the_forwarded_value_fills_its_string_exactly() {
    for ip in ["192.0.2.7", "2001:db8::1"] {
        let peer = PeerHeaders::new(ip.parse().unwrap());
        for (proto, host) in [("http", None), ("https", Some("shop.example:8443"))] {
            let v = forwarded_value(&peer, proto, host);
            assert_eq!(v.len(), v.capacity(), "{v}");
        }
    }
}

#[test]
fn trusted_forwarding_headers_are_extended() {
    let mut h = map(&[("x-forwarded-for", "203.0.113.9"), ("x-forwarded-proto", "https")]);
    add_forwarding(&mut h, &PeerHeaders::new("10.1.2.3".parse().unwrap()), true, "http");
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 10.1.2.3");
    assert_eq!(h["x-forwarded-proto"], "https");
}

#[test]
fn ipv6_peers_are_quoted_in_forwarded() {
    let mut h = HeaderMap::new();
    add_forwarding(&mut h, &PeerHeaders::new("::1".parse().unwrap()), false, "http");
    assert_eq!(h["forwarded"], "for=\"[::1]\";proto=http");
}

#[test]
fn trust_matches_cidrs_and_mapped_v4() {
    let nets: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
    assert!(is_trusted("10.9.9.9".parse().unwrap(), &nets));
    assert!(is_trusted("::ffff:10.9.9.9".parse().unwrap(), &nets));
    assert!(!is_trusted("11.0.0.1".parse().unwrap(), &nets));
}

#[test]
fn our_cookie_is_found_and_stripped_others_kept() {
    let mut h = map(&[("cookie", "a=1; tether=TOKEN; b=2"), ("cookie", "tether=x")]);
    assert_eq!(find_cookie(&h, "tether"), Some("TOKEN"));
    strip_cookie(&mut h, "tether");
    assert_eq!(h.get_all("cookie").iter().count(), 1);
    assert_eq!(h["cookie"], "a=1; b=2");
    let mut only = map(&[("cookie", "tether=x")]);
    strip_cookie(&mut only, "tether");
    assert!(!only.contains_key("cookie"));
    // One line, one cookie, whether ours or not; ours beside others on one or two lines.
    type Lines<'a> = &'a [(&'a str, &'a str)];
    let cases: &[(Lines, &[&str])] = &[
        (&[("cookie", " tether=x ")], &[]),
        (&[("cookie", "other=x")], &["other=x"]),
        (&[("cookie", "tetherx=1")], &["tetherx=1"]),
        (&[("cookie", "tether=x;")], &[]),
        (&[("cookie", "tether=x; a=1")], &["a=1"]),
        (&[("cookie", "tether=x"), ("cookie", "tether=y")], &[]),
        (&[("cookie", "tether=x"), ("cookie", "a=1")], &["a=1"]),
    ];
    for (lines, kept) in cases {
        let mut h = map(lines);
        strip_cookie(&mut h, "tether");
        let left: Vec<_> = h.get_all("cookie").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(&left, kept, "{lines:?}");
    }
}

#[test]
fn cookie_lines_are_read_by_bytes() {
    // Another cookie's obs-text does not hide ours, and survives the strip byte for byte.
    let mut h = HeaderMap::new();
    h.append(header::COOKIE, HeaderValue::from_bytes(b"a=caf\xc3\xa9\xff; tether=T").unwrap());
    assert_eq!(find_cookie(&h, "tether"), Some("T"));
    strip_cookie(&mut h, "tether");
    assert_eq!(h["cookie"].as_bytes(), b"a=caf\xc3\xa9\xff");
    // Pairs without `=`, empty pairs, tabs: (line, values of "tether", line left by the strip).
    let cases: &[(&str, &[&str], Option<&str>)] = &[
        ("tether", &[], None),
        ("tether; a", &[], Some("a")),
        (";; tether=1 ;;", &["1"], None),
        ("\ttether\t=\t2\t; b=", &["2"], Some("b=")),
        ("tether=; tether==x", &["", "=x"], None),
        ("a=1;b=2", &[], Some("a=1;b=2")),
    ];
    for (line, values, left) in cases {
        let mut h = map(&[("cookie", line)]);
        assert_eq!(cookie_values(&h, "tether").collect::<Vec<_>>(), *values, "{line:?}");
        strip_cookie(&mut h, "tether");
        assert_eq!(h.get("cookie").map(|v| v.to_str().unwrap()), *left, "{line:?}");
    }
}

#[test]
fn cookie_with_similar_name_is_kept() {
    let mut h = map(&[("cookie", "xtether=1; tether2=2")]);
    assert_eq!(find_cookie(&h, "tether"), None);
    strip_cookie(&mut h, "tether");
    assert_eq!(h["cookie"], "xtether=1; tether2=2");
}

#[test]
fn servers_set_cookie_with_our_name_is_dropped() {
    let mut h = map(&[("set-cookie", "tether=evil; Path=/"), ("set-cookie", "sid=1")]);
    drop_set_cookie_named(&mut h, "tether");
    assert_eq!(h.get_all("set-cookie").iter().collect::<Vec<_>>(), vec!["sid=1"]);
}

#[test]
fn responses_with_our_cookie_become_private() {
    let mut h = map(&[("cache-control", "public, max-age=60, s-maxage=600")]);
    make_private(&mut h);
    assert_eq!(h["cache-control"], "max-age=60, private");
    let mut none = HeaderMap::new();
    make_private(&mut none);
    assert_eq!(none["cache-control"], "private");
}

#[test]
fn host_is_taken_without_port() {
    let uri: http::Uri = "/x".parse().unwrap();
    assert_eq!(request_host(&uri, &map(&[("host", "a.example:8080")])), Some("a.example"));
    assert_eq!(request_host(&uri, &map(&[("host", "[::1]:80")])), Some("[::1]"));
    let abs: http::Uri = "http://b.example/x".parse().unwrap();
    assert_eq!(request_host(&abs, &HeaderMap::new()), Some("b.example"));
}

#[test]
fn client_ip_is_the_rightmost_untrusted_hop() {
    let nets: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
    let h = map(&[("x-forwarded-for", "1.1.1.1, 203.0.113.5"), ("x-forwarded-for", "10.0.0.2")]);
    let peer: IpAddr = "10.0.0.1".parse().unwrap();
    assert_eq!(client_ip(peer, &h, &nets), "203.0.113.5".parse::<IpAddr>().unwrap());
    let outsider: IpAddr = "198.51.100.1".parse().unwrap();
    assert_eq!(client_ip(outsider, &h, &nets), outsider, "untrusted peers are the client");
    let junk = map(&[("x-forwarded-for", "nonsense")]);
    assert_eq!(client_ip(peer, &junk, &nets), peer);
}

#[test]
fn asks_to_close_follows_the_version_and_the_connection_options() {
    use http::Version;
    type Case<'a> = (&'a str, Version, &'a [(&'a str, &'a str)], bool);
    let cases: &[Case] = &[
        ("1.1 without Connection keeps the connection", Version::HTTP_11, &[], false),
        ("1.1 with close", Version::HTTP_11, &[("connection", "close")], true),
        ("1.1 with Close in another case", Version::HTTP_11, &[("connection", "Close")], true),
        ("1.1 with close among options", Version::HTTP_11, &[("connection", "x-a, close")], true),
        (
            "1.1 with close on a second line",
            Version::HTTP_11,
            &[("connection", "te"), ("connection", "close")],
            true,
        ),
        ("1.1 with keep-alive", Version::HTTP_11, &[("connection", "keep-alive")], false),
        ("1.1 naming a header only", Version::HTTP_11, &[("connection", "x-closed")], false),
        ("1.0 without Connection closes", Version::HTTP_10, &[], true),
        ("1.0 with keep-alive keeps it", Version::HTTP_10, &[("connection", "Keep-Alive")], false),
        ("1.0 naming another option closes", Version::HTTP_10, &[("connection", "te")], true),
        (
            "1.0 with keep-alive and close closes",
            Version::HTTP_10,
            &[("connection", "keep-alive, close")],
            true,
        ),
    ];
    for (case, version, pairs, want) in cases {
        assert_eq!(asks_to_close(*version, &map(pairs)), *want, "{case}");
    }
}

#[test]
fn cookie_values_lists_every_value_of_the_name_in_order() {
    let h = map(&[("cookie", "tether=a; other=x; tether=b"), ("cookie", " tether = c ;tetherx=d")]);
    assert_eq!(cookie_values(&h, "tether").collect::<Vec<_>>(), ["a", "b", "c"]);
    assert_eq!(find_cookie(&h, "tether"), Some("a"));
    assert_eq!(cookie_values(&h, "missing").count(), 0);
}

#[test]
fn the_typed_hop_by_hop_names_are_the_codecs_set() {
    // The request path removes these from maps; the HTTP/1.1 client skips the same set as
    // it reads a response (`tether_core::h1::is_hop_by_hop`): one list, two forms.
    let names = HOP_BY_HOP;
    for name in &names {
        assert!(tether_core::h1::is_hop_by_hop(name.as_str().as_bytes()), "{name}");
    }
    let distinct: std::collections::HashSet<&str> = names.iter().map(HeaderName::as_str).collect();
    assert_eq!(distinct.len(), 8, "is_hop_by_hop knows eight names");
}
