//! The admin API and Prometheus metrics against a real Tether (docs/operations.md).

use std::collections::HashMap;

use serde_json::Value;
use tether_testkit::{EchoServer, ScratchDir, Tether};

use crate::support::fixture::*;

async fn json(c: &reqwest::Client, url: &str) -> Value {
    c.get(url).send().await.unwrap().json().await.unwrap()
}

/// `backend` as "app" with affinity by header `X-Session-Id`, and the admin listener.
fn header_cfg(backend: Backend) -> Config {
    config(backend.sticky(Sticky::header("X-Session-Id"))).admin()
}

/// Parses the text format into (name, labels) -> value for the sample lines.
fn scrape(text: &str) -> HashMap<(String, String), f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n.to_owned(), rest.trim_end_matches('}').to_owned()),
                None => (series.to_owned(), String::new()),
            };
            ((name, labels), value.parse::<f64>().unwrap())
        })
        .collect()
}

fn labels_of(m: &HashMap<(String, String), f64>, name: &str) -> Vec<String> {
    m.keys().filter(|(n, _)| n == name).map(|(_, l)| l.clone()).collect()
}

#[tokio::test]
async fn metrics_are_scraped_parsed_and_named_as_the_contract_says() {
    let servers = echo_servers(2);
    let t = start(header_cfg(app(&servers))).await;
    let c = client();
    for i in 0..10 {
        c.get(t.url("web")).header("x-session-id", format!("k{}", i % 3)).send().await.unwrap();
    }
    let text = c.get(admin_url(&t, "/metrics")).send().await.unwrap().text().await.unwrap();
    let m = scrape(&text);
    let total: f64 =
        m.iter().filter(|((n, _), _)| n == "tether_requests_total").map(|(_, v)| v).sum();
    assert_eq!(total, 10.0, "{text}");
    for l in labels_of(&m, "tether_requests_total") {
        for key in ["listener=\"web\"", "backend=\"app\"", "server=\"", "code_class=\""] {
            assert!(l.contains(key), "{l}");
        }
    }
    assert!(
        m.contains_key(&(
            "tether_request_duration_seconds_count".into(),
            "listener=\"web\",backend=\"app\"".into()
        )),
        "{text}"
    );
    for name in ["tether_server_up", "tether_server_in_flight", "tether_sessions_bound"] {
        assert_eq!(labels_of(&m, name).len(), 2, "{name} per server: {text}");
    }
    let hits = m[&("tether_affinity_total".into(), "backend=\"app\",outcome=\"hit\"".into())];
    let news = m[&("tether_affinity_total".into(), "backend=\"app\",outcome=\"new\"".into())];
    assert_eq!((hits, news), (7.0, 3.0), "3 keys: 3 new, 7 hits");
    assert_eq!(m[&("tether_stick_table_entries".into(), "backend=\"app\"".into())], 3.0);
    assert!(!text.contains("k0") && !text.contains("k1"), "never a label per client key");
}

/// Sends one request for each of `n` sessions `{prefix}0`, `{prefix}1`, ... (header mode):
/// each binds a stick-table entry.
async fn bind_sessions(c: &reqwest::Client, t: &Tether, prefix: &str, n: usize) {
    for i in 0..n {
        let id = format!("{prefix}{i}");
        c.get(t.url("web")).header("x-session-id", id).send().await.unwrap();
    }
}

#[tokio::test]
async fn backends_json_shows_servers_state_and_sessions_bound() {
    let servers = echo_servers(2);
    let t = start(header_cfg(app(&servers))).await;
    let c = client();
    bind_sessions(&c, &t, "user", 6).await;
    let v = json(&c, &admin_url(&t, "/api/v1/backends")).await;
    let b = &v["backends"][0];
    assert_eq!(b["name"], "app");
    assert_eq!(b["balance"], "round_robin");
    assert_eq!(b["sticky"], "header");
    let servers_json = b["servers"].as_array().unwrap();
    assert_eq!(servers_json.len(), 2);
    for s in servers_json {
        for field in [
            "name",
            "address",
            "weight",
            "health",
            "state",
            "in_flight",
            "requests_total",
            "errors_total",
            "sessions_bound",
        ] {
            assert!(s.get(field).is_some(), "missing {field}: {s}");
        }
    }
    let bound: u64 = servers_json.iter().map(|s| s["sessions_bound"].as_u64().unwrap()).sum();
    assert_eq!(bound, 6);
    let one = json(&c, &admin_url(&t, "/api/v1/backends/app")).await;
    assert_eq!(one["name"], "app");
    let sessions = json(&c, &admin_url(&t, "/api/v1/backends/app/sessions?limit=4")).await;
    assert_eq!(sessions["entries"], 6);
    assert_eq!(sessions["sessions"].as_array().unwrap().len(), 4);
    let s0 = &sessions["sessions"][0];
    assert_eq!(s0["key"].as_str().unwrap().len(), 32, "hashed key, never the raw one: {s0}");
    assert!(!sessions.to_string().contains("user"));
}

#[tokio::test]
async fn unknown_names_are_404_and_bad_bodies_are_400() {
    let servers = echo_servers(1);
    let t = start(header_cfg(app(&servers))).await;
    let c = client();
    for path in ["/api/v1/backends/nope", "/api/v1/backends/nope/sessions", "/nothing"] {
        assert_eq!(c.get(admin_url(&t, path)).send().await.unwrap().status(), 404, "{path}");
    }
    let patch = |path: &str, body: &'static str| c.patch(admin_url(&t, path)).body(body).send();
    assert_eq!(
        patch("/api/v1/backends/app/servers/ghost", "{\"state\":\"drain\"}")
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        patch("/api/v1/backends/ghost/servers/s0", "{\"state\":\"drain\"}").await.unwrap().status(),
        404
    );
    for bad in [
        "not json",
        "[]",
        "{}",
        "{\"state\":\"sleepy\"}",
        "{\"weight\":0}",
        "{\"weight\":\"x\"}",
        "{\"colour\":1}",
    ] {
        let r = patch("/api/v1/backends/app/servers/s0", bad).await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let e: Value = r.json().await.unwrap();
        assert!(e["error"].is_string());
    }
    // Nothing above changed anything.
    let v = json(&c, &admin_url(&t, "/api/v1/backends/app")).await;
    assert_eq!(v["servers"][0]["state"], "ready");
    assert_eq!(v["servers"][0]["weight"], 1);
}

#[tokio::test]
async fn drain_through_the_api_keeps_sessions_and_stops_new_ones() {
    let servers = echo_servers(2);
    let t = start(header_cfg(app(&servers))).await;
    let c = client();
    let mut pinned_to_s0 = Vec::new();
    for i in 0..20 {
        let r = c.get(t.url("web")).header("x-session-id", format!("u{i}")).send().await.unwrap();
        if server_of(&r) == "s0" {
            pinned_to_s0.push(format!("u{i}"));
        }
    }
    assert!(!pinned_to_s0.is_empty());
    let r = c
        .patch(admin_url(&t, "/api/v1/backends/app/servers/s0"))
        .body("{\"state\":\"drain\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["servers"][0]["state"], "drain");
    assert_eq!(v["servers"][0]["sessions_bound"], pinned_to_s0.len() as u64);
    for k in &pinned_to_s0 {
        let r = c.get(t.url("web")).header("x-session-id", k).send().await.unwrap();
        assert_eq!(server_of(&r), "s0", "pinned sessions stay while draining");
    }
    for i in 0..50 {
        let r =
            c.get(t.url("web")).header("x-session-id", format!("fresh{i}")).send().await.unwrap();
        assert_eq!(server_of(&r), "s1", "no new session reaches a draining server");
    }
    let r = c
        .patch(admin_url(&t, "/api/v1/backends/app/servers/s0"))
        .body("{\"weight\":7}")
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["servers"][0]["weight"], 7);
    assert_eq!(v["servers"][0]["state"], "drain", "a weight change keeps the runtime state");
}

/// A Tether (header-sticky `app` on `servers`) whose admin token is read from a file holding
/// `token` as written (whitespace around it is not part of the token); the file's directory
/// lives as long as the returned guard.
async fn start_with_token(servers: &[EchoServer], token: &str) -> (Tether, ScratchDir) {
    let dir = ScratchDir::new("admin-token").unwrap();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, token).unwrap();
    (start(header_cfg(app(servers)).admin_token_file(&token_file)).await, dir)
}

#[tokio::test]
async fn writes_need_the_token_and_reads_do_not_on_loopback() {
    let servers = echo_servers(1);
    let (t, _dir) = start_with_token(&servers, "  s3cret-token\n").await;
    let c = client();
    assert_eq!(c.get(admin_url(&t, "/api/v1/backends")).send().await.unwrap().status(), 200);
    let url = admin_url(&t, "/api/v1/backends/app/servers/s0");
    assert_eq!(c.patch(&url).body("{\"state\":\"maint\"}").send().await.unwrap().status(), 401);
    let wrong =
        c.patch(&url).bearer_auth("nope").body("{\"state\":\"maint\"}").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        c.delete(admin_url(&t, "/api/v1/backends/app/sessions")).send().await.unwrap().status(),
        401
    );
    assert_eq!(c.post(admin_url(&t, "/api/v1/reload")).send().await.unwrap().status(), 401);
    let v = json(&c, &admin_url(&t, "/api/v1/backends/app")).await;
    assert_eq!(v["servers"][0]["state"], "ready", "refused writes changed nothing");
    let ok = c
        .patch(&url)
        .bearer_auth("s3cret-token")
        .body("{\"state\":\"maint\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn reload_through_the_api_reports_errors_and_keeps_serving() {
    let servers = echo_servers(2);
    let cfg = header_cfg(app(&servers));
    let t = start(&cfg).await;
    let c = client();
    t.write_config("[[listeners]]\nname = 1\n").unwrap();
    let r = c.post(admin_url(&t, "/api/v1/reload")).send().await.unwrap();
    assert_eq!(r.status(), 422);
    let e: Value = r.json().await.unwrap();
    assert!(e["error"].as_str().unwrap().contains("listeners"), "{e}");
    assert_eq!(c.get(t.url("web")).send().await.unwrap().status(), 200, "the old config serves");
    // Remove s1 by reload: its series disappear from /metrics.
    let one = header_cfg(app(&servers[..1]));
    c.get(t.url("web")).header("x-session-id", "a").send().await.unwrap();
    t.write_config(&one).unwrap();
    let r = c.post(admin_url(&t, "/api/v1/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["generation"].as_u64().unwrap() >= 2);
    let text = c.get(admin_url(&t, "/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(!text.contains("server=\"s1\""), "removed server's series are gone: {text}");
    assert!(text.contains("tether_config_reloads_total{result=\"failure\"} 1"), "{text}");
    assert!(text.contains("tether_config_reloads_total{result=\"success\"} 1"), "{text}");
}

#[tokio::test]
async fn flushing_sessions_empties_the_table() {
    let servers = echo_servers(2);
    let t = start(header_cfg(app(&servers))).await;
    let c = client();
    bind_sessions(&c, &t, "k", 5).await;
    let r = c.delete(admin_url(&t, "/api/v1/backends/app/sessions")).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["flushed"], 5);
    let after = json(&c, &admin_url(&t, "/api/v1/backends/app/sessions")).await;
    assert_eq!(after["entries"], 0);
    let status = json(&c, &admin_url(&t, "/api/v1/status")).await;
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(c.get(admin_url(&t, "/readyz")).send().await.unwrap().status().is_success());
}

#[tokio::test]
async fn servers_are_added_and_removed_at_runtime() {
    let servers = echo_servers(2);
    let t = start(header_cfg(app(&servers[..1]))).await;
    let c = client();
    let url = admin_url(&t, "/api/v1/backends/app/servers");
    let body = format!("{{\"name\":\"s1\",\"address\":\"{}\",\"weight\":3}}", servers[1].addr());
    let r = c.post(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(c.post(&url).body(body).send().await.unwrap().status(), 409, "duplicate name");
    for bad in [
        "{}",
        "{\"name\":\"x\"}",
        "{\"name\":\"x\",\"address\":\"nope\"}",
        "{\"name\":\"x\",\"address\":\"127.0.0.1:1\",\"weight\":0}",
        "{\"name\":\"bad name\",\"address\":\"127.0.0.1:1\"}",
        "[1]",
        "{\"name\":\"x\",\"address\":\"127.0.0.1:1\",\"colour\":1}",
    ] {
        let r = c.post(&url).body(bad).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    assert_eq!(
        c.post(admin_url(&t, "/api/v1/backends/ghost/servers"))
            .body("{\"name\":\"x\",\"address\":\"127.0.0.1:1\"}")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let mut reached = false;
    for i in 0..40 {
        let r = c.get(t.url("web")).header("x-session-id", format!("n{i}")).send().await.unwrap();
        reached |= server_of(&r) == "s1";
    }
    assert!(reached, "the added server takes new sessions");
    let v = json(&c, &admin_url(&t, "/api/v1/backends/app")).await;
    assert_eq!(v["servers"][1]["weight"], 3);
    assert_eq!(
        c.delete(admin_url(&t, "/api/v1/backends/app/servers/ghost"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        c.delete(admin_url(&t, "/api/v1/backends/app/servers/s1")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        c.delete(admin_url(&t, "/api/v1/backends/app/servers/s0")).send().await.unwrap().status(),
        409,
        "the last server stays"
    );
    for i in 0..20 {
        let r = c.get(t.url("web")).header("x-session-id", format!("n{i}")).send().await.unwrap();
        assert_eq!(server_of(&r), "s0");
    }
}

#[tokio::test]
async fn a_runtime_drain_survives_a_reload_that_does_not_change_the_state() {
    let servers = echo_servers(2);
    let cfg = header_cfg(app(&servers));
    let mut t = start(&cfg).await;
    let c = client();
    let r = c
        .patch(admin_url(&t, "/api/v1/backends/app/servers/s0"))
        .body("{\"state\":\"drain\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .patch(admin_url(&t, "/api/v1/backends/app/servers/s1"))
        .body("{\"weight\":5}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(t.reload(&cfg).await.unwrap()["message"], "config reloaded");
    let v = json(&c, &admin_url(&t, "/api/v1/backends/app")).await;
    assert_eq!(v["servers"][0]["state"], "drain", "the file did not change s0's state");
    assert_eq!(v["servers"][1]["weight"], 1, "runtime weights last until the next reload");
    let s0_in_maint = ServerEntry::from(&servers[0]).state("maint");
    let changed = header_cfg(Backend::new().server(s0_in_maint).server(&servers[1]));
    assert_eq!(t.reload(&changed).await.unwrap()["message"], "config reloaded");
    let v = json(&c, &admin_url(&t, "/api/v1/backends/app")).await;
    assert_eq!(v["servers"][0]["state"], "maint", "a state change in the file wins");
}

/// The admin API's bodies are small JSON objects: 64 KiB at most (operations.md).
const ADMIN_BODY_LIMIT: usize = 64 * 1024;

/// Asserts that `r` is an admin API error as operations.md promises: status `status`, a JSON
/// content type and exactly `{"error": "..."}` whose message contains `mentions`.
async fn assert_json_error(r: reqwest::Response, status: u16, mentions: &str) {
    let what = format!("{} {}", r.status(), r.url());
    assert_eq!(r.status(), status, "{what}");
    let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    let ct = ct.to_owned();
    let text = r.text().await.unwrap();
    assert!(ct.starts_with("application/json"), "{what}: content-type {ct:?}, body {text:?}");
    let v: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text:?}"));
    let message = v["error"].as_str().unwrap_or_else(|| panic!("{what}: no message: {v}"));
    assert_eq!(v.as_object().map(|o| o.len()), Some(1), "{what}: only \"error\": {v}");
    assert!(message.contains(mentions), "{what}: {message:?} should mention {mentions:?}");
}

#[tokio::test]
async fn bad_queries_paths_methods_and_oversized_bodies_get_json_errors() {
    let servers = echo_servers(1);
    let t = start(header_cfg(app(&servers))).await;
    let c = client();
    let get = |path: &str| c.get(admin_url(&t, path)).send();
    for (query, mentions) in [("limit=x", "limit"), ("limit=-1", "limit"), ("limt=3", "limt")] {
        let r = get(&format!("/api/v1/backends/app/sessions?{query}")).await.unwrap();
        assert_json_error(r, 400, mentions).await;
    }
    let r = get("/api/v1/backends/app/sessions?limit=2").await.unwrap();
    assert_eq!(r.status(), 200, "a good query still works");
    assert_json_error(get("/api/v1/backends/%FF").await.unwrap(), 400, "UTF-8").await;
    let bad_server = admin_url(&t, "/api/v1/backends/app/servers/%FF");
    let r = c.patch(&bad_server).body("{\"state\":\"drain\"}").send().await.unwrap();
    assert_json_error(r, 400, "UTF-8").await;

    let r = c.put(admin_url(&t, "/api/v1/backends")).send().await.unwrap();
    let allow = r.headers().get("allow").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert!(allow.contains("GET"), "405 still says what is allowed: {allow:?}");
    assert_json_error(r, 405, "method").await;

    // A body of exactly the limit is read (and here parsed: JSON padded with spaces)...
    let url = admin_url(&t, "/api/v1/backends/app/servers/s0");
    let mut at_limit = String::from("{\"weight\":2}");
    at_limit.push_str(&" ".repeat(ADMIN_BODY_LIMIT - at_limit.len()));
    let r = c.patch(&url).body(at_limit.clone()).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // ...one byte more is refused on every endpoint that takes a body.
    let over = at_limit + " ";
    assert_json_error(c.patch(&url).body(over.clone()).send().await.unwrap(), 413, "64 KiB").await;
    let add = admin_url(&t, "/api/v1/backends/app/servers");
    assert_json_error(c.post(&add).body(over).send().await.unwrap(), 413, "64 KiB").await;
    let v = json(&c, &admin_url(&t, "/api/v1/backends/app")).await;
    assert_eq!(v["servers"].as_array().unwrap().len(), 1, "nothing was added: {v}");
    assert_eq!(v["servers"][0]["weight"], 2, "only the in-limit body applied: {v}");
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_and_the_token_is_not() {
    let servers = echo_servers(1);
    let (t, _dir) = start_with_token(&servers, "Tok3n-s3cret\n").await;
    let c = client();
    let url = admin_url(&t, "/api/v1/backends/app/servers/s0");
    let patch = |auth: Option<&str>, state: &str| {
        let r = c.patch(&url).body(format!("{{\"state\":\"{state}\"}}"));
        match auth {
            Some(a) => r.header("authorization", a.to_owned()).send(),
            None => r.send(),
        }
    };
    // RFC 9110 §11.1: the scheme is case-insensitive, and one or more spaces follow it.
    for (auth, state) in [
        ("bearer Tok3n-s3cret", "drain"),
        ("BEARER Tok3n-s3cret", "maint"),
        ("bEaReR  Tok3n-s3cret", "drain"),
        ("Bearer Tok3n-s3cret", "ready"),
    ] {
        let r = patch(Some(auth), state).await.unwrap();
        assert_eq!(r.status(), 200, "{auth:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["servers"][0]["state"], state, "{auth:?} applied");
    }
    for auth in [
        "bearer tok3n-s3cret",
        "Bearer TOK3N-S3CRET",
        "bearer wrong",
        "Bearer",
        "bearerTok3n-s3cret",
        "Basic Tok3n-s3cret",
        "Tok3n-s3cret",
    ] {
        assert_json_error(patch(Some(auth), "maint").await.unwrap(), 401, "token").await;
    }
    assert_json_error(patch(None, "maint").await.unwrap(), 401, "token").await;
    let v = json(&c, &admin_url(&t, "/api/v1/backends/app")).await;
    assert_eq!(v["servers"][0]["state"], "ready", "refused writes changed nothing");
}
