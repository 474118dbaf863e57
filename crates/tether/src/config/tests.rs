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
    assert_eq!(app.balance, Algorithm::LeastConn);
    assert_eq!(app.connect_timeout, Duration::from_millis(500));
    assert_eq!(app.response_timeout, DEFAULT_RESPONSE_TIMEOUT);
    let sticky = app.sticky.as_ref().unwrap();
    assert_eq!(sticky.cookie_name, "tether");
    assert_eq!(sticky.expiry.idle_timeout, 600);
    assert_eq!(sticky.secure, Secure::Auto);
    assert_eq!(app.servers[0].weight, 5);
    assert_eq!(c.routes[0].host, Some(HostMatch::Suffix(".example.com".into())));
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
