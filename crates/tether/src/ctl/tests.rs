use std::path::Path;

use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn server(name: &str, sessions: Option<u64>, exact: Option<bool>) -> ServerJson {
    ServerJson {
        name: name.into(),
        address: "10.0.0.1:8080".into(),
        health: "up".into(),
        state: "ready".into(),
        in_flight: 2,
        requests_total: 1234,
        sessions_bound: sessions,
        sessions_exact: exact,
        source: Some("config".into()),
    }
}

#[test]
fn the_admin_url_comes_from_the_flag_then_the_environment_then_the_default() {
    let env = |k: &str| (k == ADMIN_ENV).then(|| "http://10.1.1.1:9000".to_owned());
    let from_flag = AdminTarget::resolve(Some("127.0.0.2:7000"), None, env).unwrap();
    assert_eq!(from_flag.url("/x"), "http://127.0.0.2:7000/x");
    let from_env = AdminTarget::resolve(None, None, env).unwrap();
    assert_eq!(from_env.url("/x"), "http://10.1.1.1:9000/x");
    let default = AdminTarget::resolve(None, None, no_env).unwrap();
    assert_eq!(default.url("/api/v1/backends"), "http://127.0.0.1:8081/api/v1/backends");
    let empty = |_: &str| Some(" ".to_owned());
    let unset = AdminTarget::resolve(None, None, empty).unwrap();
    assert_eq!(unset.url(""), DEFAULT_ADMIN, "an empty variable counts as unset");
    assert!(!unset.has_token());
}

#[test]
fn a_base_path_is_kept_without_its_trailing_slash() {
    let t = AdminTarget::resolve(Some("http://lb.internal:80/tether/"), None, no_env).unwrap();
    assert_eq!(t.url("/api/v1/status"), "http://lb.internal:80/tether/api/v1/status");
}

#[test]
fn only_plain_http_admin_urls_are_taken() {
    for (url, why) in [
        ("https://127.0.0.1:8081", "only http://"),
        ("ftp://127.0.0.1:8081", "only http://"),
        ("http://user:pw@127.0.0.1:8081", "credentials"),
        ("http://127.0.0.1:8081/?x=1", "query"),
        ("http://", "not a URL"),
        ("not a url at all", "not a URL"),
    ] {
        let err = AdminTarget::resolve(Some(url), None, no_env).unwrap_err().to_string();
        assert!(err.contains(why) && err.contains(url), "{url}: {err}");
    }
}

#[test]
fn the_token_comes_from_the_file_trimmed_else_from_the_environment() {
    let dir = std::env::temp_dir().join(format!("tether-ctl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, "  s3cret\n").unwrap();
    let env = |k: &str| (k == TOKEN_ENV).then(|| "from-env".to_owned());
    let t = AdminTarget::resolve(None, Some(&file), env).unwrap();
    assert_eq!(t.token.as_deref(), Some("s3cret"), "the file wins over the variable");
    let t = AdminTarget::resolve(None, None, env).unwrap();
    assert_eq!(t.token.as_deref(), Some("from-env"));
    std::fs::write(&file, "\n").unwrap();
    let empty = AdminTarget::resolve(None, Some(&file), no_env).unwrap_err().to_string();
    assert!(empty.contains("empty"), "{empty}");
    std::fs::remove_dir_all(&dir).unwrap();
    let missing = AdminTarget::resolve(None, Some(Path::new("/nonexistent/t")), no_env);
    assert!(missing.unwrap_err().to_string().contains("/nonexistent/t"));
}

#[test]
fn names_are_one_path_segment_whatever_they_hold() {
    assert_eq!(segment("app-1.v2_x"), "app-1.v2_x");
    assert_eq!(segment("a/b c"), "a%2Fb%20c");
    assert_eq!(segment("é"), "%C3%A9");
}

#[test]
fn a_count_reads_as_sessions_with_a_tilde_for_an_estimate() {
    let exact = |n| SessionCount { n, exact: true };
    assert_eq!(exact(42).to_string(), "42 sessions");
    assert_eq!(exact(1).to_string(), "1 session");
    assert_eq!(exact(0).to_string(), "0 sessions");
    assert_eq!(SessionCount { n: 42, exact: false }.to_string(), "~42 sessions");
    assert_eq!(SessionCount::of(&server("a", None, None)), None);
    assert_eq!(SessionCount::of(&server("a", Some(3), None)), Some(exact(3)));
    assert_eq!(SessionCount::of(&server("a", Some(3), Some(true))), Some(exact(3)));
}

#[test]
fn the_table_has_a_row_per_server_and_aligns_its_numbers() {
    let backends = [BackendJson {
        name: "app".into(),
        servers: vec![server("s0", Some(7), Some(false)), server("s1", Some(12), None)],
    }];
    let table = render_table(&backends);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, HEADER);
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["app", "s0", "10.0.0.1:8080", "config", "up", "ready", "2", "7~", "1234"]
    );
    assert_eq!(lines[2].split_whitespace().collect::<Vec<_>>()[7], "12");
    // Right-aligned under SESSIONS, the exact figure padded so the digits line up.
    let end = lines[0].find("SESSIONS").unwrap() + "SESSIONS".len();
    assert!(lines[1][..end].ends_with(" 7~"), "{table}");
    assert!(lines[2][..end].ends_with(" 12 "), "{table}");
    assert!(lines.iter().all(|l| !l.ends_with(' ')), "no trailing spaces: {table:?}");
}

#[test]
fn a_backend_without_counts_shows_a_dash() {
    let backends = [BackendJson { name: "web".into(), servers: vec![server("a", None, None)] }];
    let table = render_table(&backends);
    assert_eq!(table.lines().nth(1).unwrap().split_whitespace().nth(7), Some("-"), "{table}");
}

#[test]
fn the_drain_line_says_what_the_server_keeps() {
    let after = BackendJson { name: "app".into(), servers: vec![server("s1", Some(42), None)] };
    assert_eq!(
        drained_line("app", "s1", Some(&after)),
        "app/s1: state drain; it keeps its 42 sessions and takes no new ones (2 in flight)"
    );
    assert_eq!(
        drained_line("app", "s1", None),
        "app/s1: state drain; it keeps its pinned sessions and takes no new ones"
    );
}

#[test]
fn errors_name_the_token_the_url_and_what_remains() {
    let url = "http://127.0.0.1:1/api/v1/backends".to_owned();
    let missing = CtlError::Unauthorized { url: url.clone(), token_given: false }.to_string();
    assert!(missing.contains(&url) && missing.contains("needs a token"), "{missing}");
    let wrong = CtlError::Unauthorized { url, token_given: true }.to_string();
    assert!(wrong.contains("token was refused"), "{wrong}");
    let timeout = CtlError::Timeout {
        backend: "app".into(),
        server: "s1".into(),
        after: Duration::from_secs(120),
        remaining: SessionCount { n: 3, exact: true },
    };
    assert_eq!(
        timeout.to_string(),
        "timed out after 2m: app/s1 still holds 3 sessions (it stays in drain)"
    );
}
