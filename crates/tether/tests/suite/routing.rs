//! What every L7 balancer user expects: request IDs, richer routes, sticky traffic splits.

use std::time::Duration;

use tether_testkit::EchoServer;

use crate::support::fixture::*;

/// The request headers an echo server saw, from its JSON answer.
async fn seen(r: reqwest::Response) -> serde_json::Value {
    let v: serde_json::Value = r.json().await.unwrap();
    v["headers"].clone()
}

#[tokio::test]
async fn a_request_id_is_generated_seen_by_the_server_returned_and_logged() {
    let servers = echo_servers(1);
    let t = start(config(app(&servers))).await;
    let r = client().get(t.url("web")).send().await.unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 32, "{id}");
    assert_eq!(seen(r).await["x-request-id"], id.as_str(), "the server sees the same id");
    let line = t.wait_for_log(|l| l["request_id"] == id.as_str(), Duration::from_secs(5)).await;
    assert!(line.is_some(), "the access log names it");
}

#[tokio::test]
async fn a_request_id_is_kept_from_a_trusted_proxy_and_replaced_from_anyone_else() {
    let servers = echo_servers(1);
    let trusting = start(config_on(web().trusted_proxies(&["127.0.0.1"]), app(&servers))).await;
    let wary = start(config(app(&servers))).await;
    let send = |t: &tether_testkit::Tether| {
        client().get(t.url("web")).header("x-request-id", "front-1234").send()
    };
    let kept = send(&trusting).await.unwrap();
    assert_eq!(kept.headers()["x-request-id"], "front-1234");
    assert_eq!(seen(kept).await["x-request-id"], "front-1234");
    let replaced = send(&wary).await.unwrap();
    let id = replaced.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(id, "front-1234");
    assert_eq!(seen(replaced).await["x-request-id"], id.as_str());
}

/// Every response carries an id of its own, so an HTTP/2 response must send it as a literal
/// that is never indexed: added to the HPACK table, each id would evict an entry and make
/// every later response's id be compared with all those still there. Sent by a trusted proxy
/// the id is kept, so the test knows it (digits only, which `h2raw` can decode).
#[tokio::test]
async fn an_http2_response_sends_its_request_id_as_a_never_indexed_literal() {
    use tokio::io::AsyncWriteExt;

    use crate::support::h2raw::{self, Next, Representation};

    let servers = echo_servers(1);
    let t = start(config_on(web().trusted_proxies(&["127.0.0.1"]), app(&servers))).await;
    let (mut reader, mut writer) = h2raw::open(t.listener_addr("web"), &h2raw::settings()).await;
    let fields = h2raw::request("GET", "/", &[(b"x-request-id", b"20261207")]);
    writer.write_all(&h2raw::headers(1, &fields, true)).await.unwrap();
    let until = tokio::time::Instant::now() + h2raw::DEADLINE;
    let head = loop {
        match reader.next(until).await {
            Next::Frame(f) if f.kind == h2raw::HEADERS && f.stream == 1 => break f,
            Next::Frame(_) => {}
            other => panic!("no response to stream 1: {other:?}"),
        }
    };
    assert_eq!(head.status(), Some(200));
    let fields = h2raw::fields(&head).expect("a header block that parses");
    let id: Vec<_> = fields.iter().filter(|f| f.digits().as_deref() == Some("20261207")).collect();
    assert_eq!(id.len(), 1, "the id, once: {fields:?}");
    assert_eq!(id[0].representation, Representation::NeverIndexed);
}

#[tokio::test]
async fn request_ids_can_be_renamed_or_turned_off_and_traceparent_passes_through() {
    let servers = echo_servers(1);
    let renamed = start(config(app(&servers)).set("request_id.header", "X-Trace-Id")).await;
    let r = client().get(renamed.url("web")).send().await.unwrap();
    assert!(r.headers().contains_key("x-trace-id") && !r.headers().contains_key("x-request-id"));
    let off = start(config(app(&servers)).set("request_id.enabled", false)).await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = client().get(off.url("web")).header("traceparent", tp).send().await.unwrap();
    assert!(!r.headers().contains_key("x-request-id"));
    let h = seen(r).await;
    assert_eq!(h["traceparent"], tp);
    assert!(h.get("x-request-id").is_none());
}

/// Backend "app" over `app_servers` and backend "canary" over `canary_servers`.
fn two_backends(app_servers: &[EchoServer], canary_servers: &[EchoServer]) -> Config {
    config(app(app_servers)).backend("canary", Backend::new().servers(canary_servers))
}

fn echo(name: &str) -> EchoServer {
    EchoServer::start(name).unwrap()
}

#[tokio::test]
async fn each_match_key_narrows_a_route() {
    let (main, canary) = ([echo("main")], [echo("canary")]);
    let second = Listener::new("second").default_backend("app");
    let cfg = two_backends(&main, &canary)
        .listener(second)
        .route(Route::to("canary").set("headers.X-Canary", "1"))
        .route(Route::to("canary").set("methods", vec!["POST"]).path_prefix("/m/"))
        .route(Route::to("canary").set("path_regex", "^/items/[0-9]+$"))
        .route(Route::to("canary").set("listeners", vec!["second"]))
        .route(Route::to("canary").host("*.canary.example"));
    let t = start(cfg).await;
    let c = client();
    let web = t.url("web");
    let to = |r: reqwest::RequestBuilder| async move { server_of(&r.send().await.unwrap()) };
    let rows: Vec<(&str, reqwest::RequestBuilder, &str)> = vec![
        ("no key matches", c.get(&web), "main"),
        ("header exact", c.get(&web).header("x-canary", "1"), "canary"),
        ("header other value", c.get(&web).header("x-canary", "2"), "main"),
        ("method and prefix", c.post(format!("{web}/m/x")), "canary"),
        ("prefix, other method", c.get(format!("{web}/m/x")), "main"),
        ("regex", c.get(format!("{web}/items/42")), "canary"),
        ("regex, no match", c.get(format!("{web}/items/42/x")), "main"),
        ("listener", c.get(t.url("second")), "canary"),
        ("host suffix", c.get(&web).header("host", "a.canary.example"), "canary"),
    ];
    for (case, req, want) in rows {
        assert_eq!(to(req).await, want, "{case}");
    }
}

#[tokio::test]
async fn a_route_rewrites_the_path_and_headers_both_ways() {
    let (main, canary) = ([echo("main")], [echo("canary")]);
    let route = Route::to("canary")
        .path_prefix("/api/")
        .set("strip_prefix", "/api")
        .set("add_prefix", "/v2")
        .set("request_headers.set.X-Client", "{client_ip} via {scheme} for {host}")
        .set("request_headers.add.X-Id", "{request_id}")
        .set("request_headers.remove", vec!["X-Secret"])
        .set("response_headers.set.X-Route", "canary")
        .set("response_headers.remove", vec!["x-server"]);
    let t = start(two_backends(&main, &canary).route(route)).await;
    let r = client()
        .get(format!("{}/api/users?page=2", t.url("web")))
        .header("host", "shop.example")
        .header("x-secret", "s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-route"], "canary");
    assert!(!r.headers().contains_key("x-server"), "removed from the response");
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["server"], "canary");
    assert_eq!((v["path"].as_str(), v["query"].as_str()), (Some("/v2/users"), Some("page=2")));
    assert_eq!(v["headers"]["x-client"], "127.0.0.1 via http for shop.example");
    assert_eq!(v["headers"]["x-id"], id.as_str());
    assert!(v["headers"].get("x-secret").is_none());
}

#[tokio::test]
async fn a_respond_route_answers_without_any_server() {
    let main = [echo("main")];
    let route = Route::default()
        .path_prefix("/maintenance")
        .set("respond.status", 503)
        .set("respond.body", "back soon\n")
        .set("response_headers.set.Retry-After", "120");
    let t = start(config(app(&main)).route(route)).await;
    let r = client().get(format!("{}/maintenance", t.url("web"))).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(r.headers()["retry-after"], "120");
    assert_eq!(r.text().await.unwrap(), "back soon\n");
    assert_eq!(main[0].requests(), 0);
}

#[tokio::test]
async fn route_mistakes_are_config_errors_naming_the_key() {
    let main = [echo("main")];
    let rows = [
        (
            Route::to("app").set("path_regex", "([unclosed"),
            "routes[0].path_regex",
            "invalid regular expression",
        ),
        (
            Route::to("app").set("listeners", vec!["nope"]),
            "routes[0].listeners",
            "unknown listener",
        ),
        (Route::to("app").set("methods", vec!["G E T"]), "routes[0].methods", "invalid method"),
        (
            Route::to("app").set("request_headers.set.X-A", "{nope}"),
            "routes[0].request_headers.set",
            "unknown placeholder",
        ),
        (Route::default(), "routes[0].backend", "exactly one of"),
        (Route::to("app").set("respond.status", 200), "routes[0].backend", "exactly one of"),
        (
            Route::default().set("redirect.location", "/x").set("redirect.status", 200),
            "routes[0].redirect.status",
            "expected one of",
        ),
    ];
    for (route, key, needle) in rows {
        let out = tether_testkit::run_check(BIN, config(app(&main)).route(route)).unwrap();
        assert_eq!(out.code, Some(1), "{key}: {}", out.stderr);
        assert!(out.stderr.contains(key) && out.stderr.contains(needle), "{key}: {}", out.stderr);
    }
}

/// A browser-like client: its own connection and cookie jar.
fn browser() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().cookie_store(true).build().unwrap()
}

/// `v1` and `v2` (two echo servers each, cookie affinity, health-checked) behind one split
/// route with weights `w1`/`w2`.
fn split_config(v1: &[EchoServer], v2: &[EchoServer], (w1, w2): (i64, i64)) -> Config {
    let check = HealthCheck::tcp().interval("100ms").timeout("100ms").rise(1).fall(1);
    let side = |servers: &[EchoServer]| {
        Backend::new().servers(servers).sticky(Sticky::cookie()).health_check(check.clone())
    };
    let sides = |w1: i64, w2: i64| {
        let one = |b: &str, w: i64| {
            let mut t = toml::Table::new();
            t.insert("backend".into(), b.into());
            t.insert("weight".into(), w.into());
            toml::Value::Table(t)
        };
        toml::Value::Array(vec![one("v1", w1), one("v2", w2)])
    };
    Config::new()
        .listener(Listener::new("web"))
        .backend("v1", side(v1))
        .backend("v2", side(v2))
        .cookie_keys(&[KEY])
        .route(Route::default().set("split", sides(w1, w2)))
}

fn side_of(server: &str) -> &str {
    if server.starts_with("a") { "v1" } else { "v2" }
}

#[tokio::test]
async fn a_split_sends_new_clients_by_weight_and_keeps_each_on_its_side_and_server() {
    let v1 = [echo("a0"), echo("a1")];
    let v2 = [echo("b0"), echo("b1")];
    let t = start(split_config(&v1, &v2, (90, 10))).await;
    let url = t.url("web");
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut to_v2 = 0u32;
                for _ in 0..500 {
                    let r = browser().get(&url).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    to_v2 += u32::from(side_of(&server_of(&r)) == "v2");
                }
                to_v2
            })
        })
        .collect();
    let mut to_v2 = 0;
    for task in tasks {
        to_v2 += task.await.unwrap();
    }
    let share = f64::from(to_v2) / 2000.0;
    assert!((0.07..=0.13).contains(&share), "{to_v2} of 2,000 new clients on the 10% side");
    for _ in 0..4 {
        let b = browser();
        let first = server_of(&b.get(&url).send().await.unwrap());
        for i in 0..100 {
            let again = server_of(&b.get(&url).send().await.unwrap());
            assert_eq!(again, first, "request {i} left its side's server");
        }
    }
}

#[tokio::test]
async fn a_split_reload_moves_no_client_and_a_dead_side_sends_its_clients_across() {
    let v1 = [echo("a0"), echo("a1")];
    let mut v2 = [echo("b0"), echo("b1")];
    let mut t = start(split_config(&v1, &v2, (50, 50))).await;
    let url = t.url("web");
    let mut clients = Vec::new();
    for _ in 0..40 {
        let b = browser();
        let side = side_of(&server_of(&b.get(&url).send().await.unwrap())).to_owned();
        clients.push((b, side));
    }
    assert!(clients.iter().any(|(_, s)| s == "v2") && clients.iter().any(|(_, s)| s == "v1"));
    let outcome = t.reload(split_config(&v1, &v2, (100, 0))).await.unwrap();
    assert_eq!(outcome["message"], "config reloaded", "{outcome}");
    for (b, side) in &clients {
        assert_eq!(
            side_of(&server_of(&b.get(&url).send().await.unwrap())),
            side,
            "moved by a reload"
        );
    }
    for s in &mut v2 {
        s.stop().await;
    }
    // Once the health checks mark both down, every v2 client is served by v1.
    let all_across = || async {
        let mut ok = true;
        for (b, _) in clients.iter().filter(|(_, s)| s == "v2") {
            let r = b.get(&url).send().await.unwrap();
            ok &= r.status() == 200 && side_of(&server_of(&r)) == "v1";
        }
        ok
    };
    assert!(tether_testkit::wait_until_async(Duration::from_secs(5), all_across).await);
    for (b, _) in &clients {
        let r = b.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "no 5xx while a side is down");
    }
}
