use super::*;

const GOOD: &str = r#"
grace_period = "5s"

[[listeners]]
name = "web"
address = "127.0.0.1:8080"
default_backend = "app"
trusted_proxies = ["10.0.0.0/8", "192.168.1.1"]

[[routes]]
host = "*.example.com"
path_prefix = "/api/"
backend = "api"

[backends.app]
balance = "least_conn"
timeouts = { connect = "500ms" }

[backends.app.sticky]
mode = "cookie"
idle_timeout = "10m"

[[backends.app.servers]]
name = "a"
address = "127.0.0.1:9001"
weight = 5

[[backends.app.servers]]
name = "b"
address = "app-b.internal:9002"

[backends.api]
[[backends.api.servers]]
name = "x"
address = "[::1]:9003"
"#;

fn errors(text: &str) -> Vec<ConfigError> {
    Config::parse_with_env_keys(text, None).expect_err("should be invalid").0
}

fn has(errs: &[ConfigError], path: &str, needle: &str) -> bool {
    errs.iter().any(|e| e.path == path && e.message.contains(needle))
}

#[test]
fn good_config_is_typed_with_defaults() {
    let c = Config::parse_with_env_keys(GOOD, None).unwrap();
    assert_eq!(c.grace_period, Duration::from_secs(5));
    assert_eq!(c.listeners[0].trusted_proxies.len(), 2);
    let app = c.backend("app").unwrap();
    assert_eq!(app.balance, Balance::Core(Algorithm::LeastConn));
    assert_eq!(app.connect_timeout, Duration::from_millis(500));
    assert_eq!(app.response_timeout, DEFAULT_RESPONSE_TIMEOUT);
    let sticky = app.sticky.as_ref().unwrap();
    assert_eq!(sticky.cookie_name, "tether");
    assert_eq!(sticky.expiry.idle_timeout, 600);
    assert_eq!(sticky.secure, Secure::Auto);
    assert_eq!(app.servers[0].weight, 5);
    assert_eq!(c.routes[0].matcher.host, Some(HostMatch::Suffix(".example.com".into())));
    assert!(c.cookie_keys.is_none());
}

#[test]
fn unknown_key_names_its_path_and_line() {
    let text = GOOD.replace("mode = \"cookie\"", "mode = \"cookie\"\ncookie_nmae = \"x\"");
    let e = errors(&text);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].path, "backends.app.sticky.cookie_nmae");
    assert!(e[0].message.contains("cookie_nmae"), "{}", e[0].message);
    assert_eq!(e[0].line, Some(21));
}

#[test]
fn every_semantic_error_is_reported_at_once() {
    let text = r#"
grace_period = "forever"
[[listeners]]
name = "web"
address = "127.0.0.1:8080"
default_backend = "nope"
[[listeners]]
name = "web"
address = "127.0.0.1:8080"
[[routes]]
backend = "ghost"
path_prefix = "api"
[backends.app]
balance = "fastest"
[[backends.app.servers]]
name = "a"
address = "localhost"
weight = 0
[[backends.app.servers]]
name = "a"
address = "127.0.0.1:1"
[backends.empty]
"#;
    let e = errors(text);
    assert!(has(&e, "grace_period", "invalid duration"), "{e:#?}");
    assert!(has(&e, "listeners[0].default_backend", "unknown backend"));
    assert!(has(&e, "listeners[1].name", "duplicate listener name"));
    assert!(has(&e, "listeners[1].address", "two listeners on"));
    assert!(has(&e, "routes[0].backend", "unknown backend"));
    assert!(has(&e, "routes[0].path_prefix", "must start with '/'"));
    assert!(has(&e, "backends.app.balance", "round_robin"));
    assert!(has(&e, "backends.app.servers[0].address", "HOST:PORT"));
    assert!(has(&e, "backends.app.servers[0].weight", "out of range"));
    assert!(has(&e, "backends.app.servers[1].name", "duplicate server name"));
    assert!(has(&e, "backends.empty.servers", "at least one"));
    assert_eq!(e.iter().find(|e| e.path == "grace_period").unwrap().line, Some(2));
    assert_eq!(e.len(), 11, "{e:#?}");
}

#[test]
fn listeners_on_port_zero_may_repeat() {
    let text = GOOD.replace("address = \"127.0.0.1:8080\"", "address = \"127.0.0.1:0\"")
        + "[[listeners]]\nname = \"two\"\naddress = \"127.0.0.1:0\"\ndefault_backend = \"app\"\n";
    assert!(Config::parse_with_env_keys(&text, None).is_ok());
}

/// 32 bytes of base64: a valid cookie key.
const SHARED_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

#[test]
fn a_shared_redis_table_needs_shared_cookie_keys() {
    let redis = format!(
        "{GOOD}\n[stick_table]\nstore = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\n"
    );
    let e = errors(&redis);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(has(&e, "secrets.cookie_keys", "shared by every instance"), "{e:#?}");
    let with_keys = format!("{redis}[secrets]\ncookie_keys = [\"{SHARED_KEY}\"]\n");
    assert!(Config::parse_with_env_keys(&with_keys, None).is_ok());
    assert!(Config::parse_with_env_keys(&redis, Some(SHARED_KEY)).is_ok(), "from the environment");
}

#[test]
fn bad_cookie_keys_are_named() {
    let text = format!("{GOOD}\n[secrets]\ncookie_keys = [\"c2hvcnQ=\"]\n");
    let e = errors(&text);
    assert!(has(&e, "secrets.cookie_keys", "at least 32"), "{e:#?}");
    let e = Config::parse_with_env_keys(GOOD, Some("%%%")).unwrap_err().0;
    assert!(has(&e, "TETHER_COOKIE_KEYS", "base64"), "{e:#?}");
}

#[test]
fn env_keys_are_used_and_comma_separated() {
    let k = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let c = Config::parse_with_env_keys(GOOD, Some(&format!("{k},{k}"))).unwrap();
    assert_eq!(c.cookie_keys.unwrap().len(), 2);
}

#[test]
fn unsupported_sticky_modes_say_so() {
    let e = errors(&GOOD.replace("mode = \"cookie\"", "mode = \"cokie\""));
    assert!(has(&e, "backends.app.sticky.mode", "expected one of"));
}

#[test]
fn syntax_error_has_a_line() {
    let e = errors("[[listeners]\nname = 1");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].line, Some(1));
}

#[test]
fn empty_file_needs_a_listener() {
    assert!(has(&errors(""), "listeners", "at least one"));
}

/// `GOOD` with `line` added after the first line containing `anchor`.
fn after(anchor: &str, line: &str) -> String {
    GOOD.replacen(anchor, &format!("{anchor}\n{line}"), 1)
}

/// Every duration key: its path, and `GOOD` with that key set to `value`.
fn each_duration_key(value: &str) -> Vec<(&'static str, String)> {
    let v = format!("{value:?}");
    let listener = "default_backend = \"app\"";
    let app = "balance = \"least_conn\"";
    let sticky = "mode = \"cookie\"";
    let redis = format!(
        "{GOOD}\n[stick_table]\nstore = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\n\
         redis_timeout = {v}\n[secrets]\ncookie_keys = [\"{SHARED_KEY}\"]\n"
    );
    vec![
        ("grace_period", GOOD.replacen("\"5s\"", &v, 1)),
        (
            "listeners[0].timeouts.header",
            after(listener, &format!("timeouts = {{ header = {v} }}")),
        ),
        ("listeners[0].timeouts.body", after(listener, &format!("timeouts = {{ body = {v} }}"))),
        ("listeners[0].timeouts.idle", after(listener, &format!("timeouts = {{ idle = {v} }}"))),
        ("backends.app.timeouts.connect", GOOD.replacen("\"500ms\"", &v, 1)),
        (
            "backends.app.timeouts.response",
            GOOD.replacen("connect = \"500ms\"", &format!("response = {v}"), 1),
        ),
        (
            "backends.app.timeouts.idle",
            GOOD.replacen("connect = \"500ms\"", &format!("idle = {v}"), 1),
        ),
        (
            "backends.app.limits.queue_timeout",
            after(app, &format!("limits = {{ queue_timeout = {v} }}")),
        ),
        ("backends.app.slow_start", after(app, &format!("slow_start = {v}"))),
        (
            "backends.app.outlier.base_ejection",
            after(app, &format!("outlier = {{ base_ejection = {v} }}")),
        ),
        (
            "backends.app.outlier.max_ejection",
            after(app, &format!("outlier = {{ max_ejection = {v} }}")),
        ),
        (
            "backends.app.health_check.interval",
            after(app, &format!("health_check = {{ interval = {v} }}")),
        ),
        (
            "backends.app.health_check.timeout",
            after(app, &format!("health_check = {{ timeout = {v} }}")),
        ),
        ("backends.app.sticky.idle_timeout", GOOD.replacen("\"10m\"", &v, 1)),
        ("backends.app.sticky.max_lifetime", after(sticky, &format!("max_lifetime = {v}"))),
        ("backends.app.sticky.max_age", after(sticky, &format!("max_age = {v}"))),
        ("stick_table.redis_timeout", redis),
    ]
}

#[test]
fn every_duration_key_refuses_more_than_the_maximum_naming_the_key() {
    for value in ["2562047788015215h", "18446744073709551615s", "401d"] {
        for (path, text) in each_duration_key(value) {
            let e = errors(&text);
            let wanted = format!("{value:?} is longer than the maximum of 400d");
            assert_eq!(e.len(), 1, "{path} = {value}: {e:#?}");
            assert_eq!((e[0].path.as_str(), e[0].message.as_str()), (path, wanted.as_str()));
            let line = text.lines().position(|l| l.contains(value)).map(|i| i + 1);
            assert_eq!(e[0].line, line, "{path} = {value}");
        }
    }
}

#[test]
fn every_duration_key_accepts_the_maximum_and_a_year() {
    for value in ["400d", "1y", "9600h"] {
        for (path, text) in each_duration_key(value) {
            let parsed = Config::parse_with_env_keys(&text, None);
            assert!(parsed.is_ok(), "{path} = {value}: {:#?}", parsed.err());
        }
    }
    let c = Config::parse_with_env_keys(&GOOD.replacen("\"5s\"", "\"400d\"", 1), None).unwrap();
    assert_eq!(c.grace_period, MAX_DURATION);
}

#[test]
fn a_value_of_the_wrong_type_names_its_key_and_the_expected_kind() {
    let server_b = "name = \"b\"";
    let listener = "default_backend = \"app\"";
    // (the file, the key path, where the value is, what the message says)
    let cases = [
        (
            after(server_b, "weight = \"2\""),
            "backends.app.servers[1].weight",
            "expected an integer, found string \"2\"",
        ),
        (
            GOOD.replacen("weight = 5", "weight = 2.5", 1),
            "backends.app.servers[0].weight",
            "expected an integer, found floating point `2.5`",
        ),
        (
            after(listener, "timeouts = 5"),
            "listeners[0].timeouts",
            "expected a table, found integer `5`",
        ),
        (
            after(listener, "proxy_protocol = \"yes\""),
            "listeners[0].proxy_protocol",
            "expected a boolean, found string \"yes\"",
        ),
        (
            GOOD.replacen("name = \"web\"", "name = 1", 1),
            "listeners[0].name",
            "expected a string, found integer `1`",
        ),
        (
            format!("{GOOD}\n[secrets]\ncookie_keys = \"k\"\n"),
            "secrets.cookie_keys",
            "expected an array, found string \"k\"",
        ),
        (
            GOOD.replacen("mode = \"cookie\"", "mode = [\"cookie\"]", 1),
            "backends.app.sticky.mode",
            "expected a string, found an array",
        ),
    ];
    for (text, path, message) in cases {
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{path}: {e:#?}");
        assert_eq!((e[0].path.as_str(), e[0].message.as_str()), (path, message));
        // The line with the wrong value: the one key line not in GOOD.
        let changed = |l: &str| !l.starts_with('[') && !GOOD.lines().any(|g| g == l);
        let line = text.lines().position(changed).map(|i| i + 1);
        assert_eq!(e[0].line, line, "{path}");
    }
}

#[test]
fn an_integer_too_large_for_toml_names_its_key() {
    let server_b = "name = \"b\"";
    let listener = "default_backend = \"app\"";
    let big = "99999999999999999999";
    // (the file, the key path, the literal)
    let cases = [
        (
            GOOD.replacen("weight = 5", &format!("weight = {big}"), 1),
            "backends.app.servers[0].weight",
            big,
        ),
        (
            after(server_b, "weight = -99999999999999999999"),
            "backends.app.servers[1].weight",
            "-99999999999999999999",
        ),
        (
            after(server_b, "weight = 0xffffffffffffffffff"),
            "backends.app.servers[1].weight",
            "0xffffffffffffffffff",
        ),
        (
            after(listener, "limits = { max_body_bytes = 18446744073709551616 }"),
            "listeners[0].limits.max_body_bytes",
            "18446744073709551616",
        ),
        (GOOD.replacen("\"192.168.1.1\"", big, 1), "listeners[0].trusted_proxies[1]", big),
        (
            format!("{GOOD}\n[stick_table]\ncapacity = 1_000_000_000_000_000_000_000\n"),
            "stick_table.capacity",
            "1_000_000_000_000_000_000_000",
        ),
    ];
    for (text, path, literal) in cases {
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{path}: {e:#?}");
        assert_eq!(e[0].path, path, "{e:#?}");
        assert!(e[0].message.starts_with(&format!("{literal} is out of range")), "{e:#?}");
        let line = text.lines().position(|l| l.contains(literal)).map(|i| i + 1);
        assert_eq!(e[0].line, line, "{path}");
    }
    // Past u32 but within TOML: the key's own range check.
    let e = errors(&GOOD.replacen("weight = 5", "weight = 4294967296", 1));
    assert!(has(&e, "backends.app.servers[0].weight", "4294967296 is out of range"), "{e:#?}");
}

#[test]
fn a_lone_server_entry_names_its_key() {
    let entry: toml::Table =
        toml::from_str("name = \"a\"\naddress = \"127.0.0.1:1\"\nweight = \"2\"").unwrap();
    let e = parse_server(&entry).unwrap_err().0;
    assert_eq!(e[0].path, "server.weight", "{e:#?}");
    assert_eq!(e[0].message, "expected an integer, found string \"2\"");
}

#[test]
fn session_keys_of_sticky_are_checked_and_named() {
    let sticky = "mode = \"cookie\"";
    let rows: Vec<(&str, &str, Option<&str>)> = vec![
        ("rebound_header = \"X-Tether-Rebound\"", "", None),
        ("rebound_header = \"Cookie\"", "rebound_header", Some("a header Tether manages")),
        ("rebound_header = \"x-forwarded-for\"", "rebound_header", Some("a header Tether manages")),
        ("rebound_header = \"bad header\"", "rebound_header", Some("invalid header name")),
        ("max_in_flight_per_session = 4", "", None),
        ("max_in_flight_per_session = 0", "max_in_flight_per_session", Some("out of range")),
        ("max_in_flight_per_session = -1", "max_in_flight_per_session", Some("out of range")),
    ];
    for (line, key, want) in rows {
        let text = after(sticky, line);
        match want {
            None => {
                let c = Config::parse_with_env_keys(&text, None).unwrap();
                let app = c.backends.iter().find(|b| b.name == "app").unwrap();
                let s = app.sticky.as_ref().unwrap();
                assert!(s.rebound_header.is_some() || s.max_in_flight_per_session == 4, "{line}");
            }
            Some(needle) => {
                let e = errors(&text);
                let path = format!("backends.app.sticky.{key}");
                assert!(has(&e, &path, needle), "{line}: {e:#?}");
            }
        }
    }
}

#[test]
fn sticky_times_under_a_second_are_refused_not_read_as_unbounded() {
    for (line, key) in [
        ("idle_timeout = \"500ms\"", "backends.app.sticky.idle_timeout"),
        ("max_lifetime = \"999ms\"", "backends.app.sticky.max_lifetime"),
    ] {
        let text = GOOD.replacen("idle_timeout = \"10m\"", line, 1);
        let e = errors(&text);
        assert!(has(&e, key, "at least \"1s\""), "{line}: {e:#?}");
    }
    let text = GOOD.replacen("idle_timeout = \"10m\"", "idle_timeout = \"1s\"", 1);
    assert!(Config::parse_with_env_keys(&text, None).is_ok());
}

/// Which backends HTTP requests reach and which TCP listeners use: an HTTP listener's default,
/// routes' backends and split sides (a redirect reaches none); a TCP listener's default and
/// SNI routes; one backend may be in both.
#[test]
fn http_and_tcp_backends_are_told_apart() {
    let mut text = String::from(
        r#"
[[listeners]]
name = "web"
address = "127.0.0.1:0"
default_backend = "app"

[[listeners]]
name = "l4"
address = "127.0.0.1:0"
mode = "tcp"
default_backend = "db"

[[listeners]]
name = "l4b"
address = "127.0.0.1:0"
mode = "tcp"
default_backend = "api"

[[routes]]
path_prefix = "/api/"
backend = "api"

[[routes]]
path_prefix = "/new/"
split = [{ backend = "stable", weight = 9 }, { backend = "canary", weight = 1 }]

[[routes]]
path_prefix = "/old/"
redirect = { location = "/new/" }

[[routes]]
sni = "tls.example.com"
backend = "tls"
"#,
    );
    for (i, name) in ["app", "api", "stable", "canary", "db", "tls", "unused"].iter().enumerate() {
        text += &format!(
            "[backends.{name}]\n[[backends.{name}.servers]]\nname = \"s\"\naddress = \"127.0.0.1:{}\"\n",
            9000 + i
        );
    }
    let c = Config::parse_with_env_keys(&text, None).unwrap();
    let mut http: Vec<&str> = c.http_backends().into_iter().collect();
    let mut tcp: Vec<&str> = c.tcp_backends().into_iter().collect();
    http.sort_unstable();
    tcp.sort_unstable();
    assert_eq!(http, ["api", "app", "canary", "stable"]);
    assert_eq!(tcp, ["api", "db", "tls"]);
}
