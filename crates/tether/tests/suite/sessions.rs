//! Sessions as Tether's own objects: each cookie session has an identity of its own.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::support::fixture::*;

fn unix_now() -> u32 {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    u32::try_from(secs).unwrap()
}

#[tokio::test]
async fn a_thousand_first_cookies_from_one_server_are_a_thousand_values() {
    // One server: every cookie names it, and most are minted in the same second. Before
    // session ids, those tokens were byte-for-byte equal.
    let servers = echo_servers(1);
    let t = start(config(app(&servers).sticky(Sticky::cookie()))).await;
    let c = fresh_client();
    let mut values = HashSet::new();
    for i in 0..1000 {
        let r = c.get(t.url("web")).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        values.insert(tether_cookie(&r).expect("a first cookie"));
    }
    assert_eq!(values.len(), 1000, "every new session gets its own value");
}

#[tokio::test]
async fn an_affinity_limit_stops_one_cookie_session_not_its_neighbour() {
    let servers = echo_servers(1);
    // A token every 100 s: none comes back while the test runs.
    let app = app(&servers)
        .set("rate_limit.requests_per_second", 0.01)
        .set("rate_limit.burst", 3)
        .set("rate_limit.key", "affinity")
        .sticky(Sticky::cookie());
    let t = start(config(app)).await;
    let c = fresh_client();
    // Two sessions from the same server, back to back: the same second, as a rule.
    let first = |r: reqwest::Response| tether_cookie(&r).expect("a first cookie");
    let flooder = first(c.get(t.url("web")).send().await.unwrap());
    let neighbour = first(c.get(t.url("web")).send().await.unwrap());
    assert_ne!(flooder, neighbour);
    let send =
        |cookie: &str| c.get(t.url("web")).header("cookie", format!("tether={cookie}")).send();
    let mut limited = 0;
    for _ in 0..10 {
        if send(&flooder).await.unwrap().status() == 429 {
            limited += 1;
        }
    }
    // Its burst of 3 was spent, the first request (without the cookie) was keyed by address.
    assert_eq!(limited, 7, "the flooding session is limited after its burst");
    for i in 0..3 {
        assert_eq!(send(&neighbour).await.unwrap().status(), 200, "neighbour request {i}");
    }
}

#[tokio::test]
async fn a_version_1_cookie_keeps_its_pin_and_is_reissued_as_version_2() {
    let servers = echo_servers(3);
    let t = start(config(app(&servers).sticky(Sticky::cookie()))).await;
    let keys = tether_core::affinity::CookieKeys::from_base64(&[KEY]).unwrap();
    let now = unix_now();
    let v1 = keys.encode_v1("app", keys.server_tag(0, "app", "s2").unwrap(), now - 60, now - 60);
    assert_eq!(v1.len(), 44);
    let c = client();
    let r = c.get(t.url("web")).header("cookie", format!("tether={v1}")).send().await.unwrap();
    assert_eq!(server_of(&r), "s2", "the old pin holds");
    let v2 = tether_cookie(&r).expect("re-issued at once");
    let token = keys.decode("app", &v2).unwrap();
    assert!(token.session.is_some(), "version 2 carries a session id");
    assert_eq!(token.issued_at, now - 60, "the session's start is kept");
    assert_eq!(token.server, keys.server_tag(0, "app", "s2").unwrap());
    // The new cookie holds the pin and, fresh, is not re-issued again.
    let r = c.get(t.url("web")).header("cookie", format!("tether={v2}")).send().await.unwrap();
    assert_eq!(server_of(&r), "s2");
    assert!(tether_cookie(&r).is_none());
}

#[tokio::test]
async fn the_access_log_names_the_session_by_a_hash_that_stays_across_refreshes() {
    let servers = echo_servers(2);
    let t = start(config(app(&servers).sticky(Sticky::cookie().set("idle_timeout", "10m")))).await;
    let c = fresh_client();
    let first = tether_cookie(&c.get(t.url("web")).send().await.unwrap()).unwrap();
    let keys = tether_core::affinity::CookieKeys::from_base64(&[KEY]).unwrap();
    let token = keys.decode("app", &first).unwrap();
    let id = token.session.unwrap();
    // The same session, aged past a quarter of its idle window: re-issued with the same id.
    let now = unix_now();
    let aged = keys.encode("app", token.server, id, now - 400, now - 400);
    let r = c.get(t.url("web")).header("cookie", format!("tether={aged}")).send().await.unwrap();
    let refreshed = tether_cookie(&r).expect("refreshed");
    assert_eq!(keys.decode("app", &refreshed).unwrap().session, Some(id));
    let two = || t.logs().iter().filter(|l| l["session"].is_string()).count() >= 2;
    assert!(tether_testkit::wait_until(Duration::from_secs(5), two).await);
    let logged: Vec<String> =
        t.logs().iter().filter_map(|l| l["session"].as_str().map(str::to_owned)).collect();
    assert_eq!(logged[0], logged[1], "one session, one name: {logged:?}");
    assert_eq!(logged[0].len(), 16);
    let raw = format!("{id:016x}");
    assert!(logged.iter().all(|s| *s != raw), "the log shows a hash, not the id");
}

/// The request headers an echo server saw, from its JSON answer.
async fn seen_headers(r: reqwest::Response) -> serde_json::Value {
    let v: serde_json::Value = r.json().await.unwrap();
    v["headers"].clone()
}

#[tokio::test]
async fn a_re_pinned_session_tells_its_new_server_where_it_came_from_once() {
    let mut servers = echo_servers(3);
    let sticky = Sticky::cookie().set("rebound_header", "X-Tether-Rebound");
    let t = start(config(app(&servers).set("timeouts.connect", "1s").sticky(sticky))).await;
    let c = client();
    let forged = ("x-tether-rebound", "s9; reason=down");
    let first = c.get(t.url("web")).header(forged.0, forged.1).send().await.unwrap();
    let pinned = server_of(&first);
    let cookie = tether_cookie(&first).unwrap();
    assert!(
        seen_headers(first).await.get("x-tether-rebound").is_none(),
        "a client's own is removed"
    );
    servers.iter_mut().find(|s| s.name() == pinned).unwrap().stop().await;

    let with = |cookie: &str| {
        c.get(t.url("web")).header("cookie", format!("tether={cookie}")).header(forged.0, forged.1)
    };
    let moved = with(&cookie).send().await.unwrap();
    assert_ne!(server_of(&moved), pinned);
    let new_cookie = tether_cookie(&moved).expect("re-pinned");
    let notice = seen_headers(moved).await["x-tether-rebound"].clone();
    assert_eq!(notice, format!("{pinned}; reason=down"), "the old server and why, nothing forged");
    for i in 0..3 {
        let later = with(&new_cookie).send().await.unwrap();
        assert!(seen_headers(later).await.get("x-tether-rebound").is_none(), "later request {i}");
    }
}

#[tokio::test]
async fn a_session_moved_off_a_server_in_maintenance_says_maint() {
    let servers = echo_servers(2);
    let sticky = Sticky::cookie().set("rebound_header", "X-Tether-Rebound");
    let t = start(config(app(&servers).sticky(sticky)).admin()).await;
    let c = client();
    let first = c.get(t.url("web")).send().await.unwrap();
    let pinned = server_of(&first);
    let cookie = tether_cookie(&first).unwrap();
    let r = c
        .patch(admin_url(&t, &format!("/api/v1/backends/app/servers/{pinned}")))
        .body("{\"state\":\"maint\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(t.url("web")).header("cookie", format!("tether={cookie}")).send().await.unwrap();
    assert_eq!(seen_headers(r).await["x-tether-rebound"], format!("{pinned}; reason=maint"));
}

#[tokio::test]
async fn a_session_over_its_in_flight_limit_gets_429_and_others_are_served() {
    let servers = echo_servers(1);
    let sticky = Sticky::cookie().set("max_in_flight_per_session", 2);
    let t = start(config(app(&servers).sticky(sticky)).admin()).await;
    let c = fresh_client();
    let cookie_of = |r: reqwest::Response| tether_cookie(&r).expect("a first cookie");
    let busy = cookie_of(c.get(t.url("web")).send().await.unwrap());
    let other = cookie_of(c.get(t.url("web")).send().await.unwrap());
    let slow = |cookie: &str| {
        c.get(format!("{}/slow?ms=3000", t.url("web")))
            .header("cookie", format!("tether={cookie}"))
            .send()
    };
    // Two slow requests of one session in flight...
    let held = [tokio::spawn(slow(&busy)), tokio::spawn(slow(&busy))];
    let in_flight = || servers[0].requests() >= 4;
    assert!(tether_testkit::wait_until(Duration::from_secs(5), in_flight).await);
    // ...its third is refused at once, with a hint when to come back.
    let third =
        c.get(t.url("web")).header("cookie", format!("tether={busy}")).send().await.unwrap();
    assert_eq!(third.status(), 429);
    assert_eq!(third.headers()["retry-after"], "1");
    // Another session on the same server is served meanwhile.
    let r = c.get(t.url("web")).header("cookie", format!("tether={other}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    for h in held {
        assert_eq!(h.await.unwrap().unwrap().status(), 200);
    }
    // Slots come back with the responses.
    let again =
        c.get(t.url("web")).header("cookie", format!("tether={busy}")).send().await.unwrap();
    assert_eq!(again.status(), 200);
    let text = c.get(admin_url(&t, "/metrics")).send().await.unwrap().text().await.unwrap();
    let refused = text
        .lines()
        .find(|l| {
            l.starts_with("tether_requests_refused_total") && l.contains("session_concurrency")
        })
        .unwrap_or_else(|| panic!("no session_concurrency series:\n{text}"));
    assert!(refused.ends_with(" 1"), "{refused}");
}

/// Each server's `sessions_bound` and `sessions_exact`, by name, from the admin API.
async fn session_counts(t: &tether_testkit::Tether) -> HashMap<String, (u64, bool)> {
    let url = admin_url(t, "/api/v1/backends/app");
    let v: serde_json::Value = client().get(url).send().await.unwrap().json().await.unwrap();
    let servers = v["servers"].as_array().unwrap();
    let count = |s: &serde_json::Value| {
        let n =
            s["sessions_bound"].as_u64().unwrap_or_else(|| panic!("a number in every mode: {s}"));
        (s["name"].as_str().unwrap().to_owned(), (n, s["sessions_exact"].as_bool().unwrap()))
    };
    servers.iter().map(count).collect()
}

#[tokio::test]
async fn cookie_sessions_are_counted_per_server_within_five_percent() {
    let servers = echo_servers(3);
    let t = start(config(app(&servers).sticky(Sticky::cookie())).admin()).await;
    // 10,000 new sessions from 8 clients at once; each answer names its server.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (c, url) = (fresh_client(), t.url("web"));
            tokio::spawn(async move {
                let mut per_server: HashMap<String, u64> = HashMap::new();
                for _ in 0..1250 {
                    let r = c.get(&url).send().await.unwrap();
                    assert!(tether_cookie(&r).is_some());
                    *per_server.entry(server_of(&r)).or_default() += 1;
                }
                per_server
            })
        })
        .collect();
    let mut truth: HashMap<String, u64> = HashMap::new();
    for task in tasks {
        for (s, n) in task.await.unwrap() {
            *truth.entry(s).or_default() += n;
        }
    }
    let counts = session_counts(&t).await;
    for (server, true_count) in &truth {
        let (estimate, exact) = counts[server];
        assert!(!exact, "cookie mode estimates");
        let error = (estimate as f64 - *true_count as f64).abs() / *true_count as f64;
        assert!(error <= 0.05, "{server}: {estimate} estimated, {true_count} true");
    }
    let text = client().get(admin_url(&t, "/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("tether_server_sessions{backend=\"app\",server=\"s0\"}"), "{text}");
}

#[tokio::test]
async fn cookie_session_counts_fall_to_zero_after_idle_timeout() {
    let servers = echo_servers(2);
    let sticky = Sticky::cookie().set("idle_timeout", "2s");
    let t = start(config(app(&servers).sticky(sticky)).admin()).await;
    let c = fresh_client();
    let mut truth: HashMap<String, u64> = HashMap::new();
    for _ in 0..40 {
        let r = c.get(t.url("web")).send().await.unwrap();
        *truth.entry(server_of(&r)).or_default() += 1;
    }
    let counts = session_counts(&t).await;
    for (server, n) in &truth {
        // Small counts are exact but for register collisions.
        assert!(counts[server].0.abs_diff(*n) <= 2, "{server}: {:?} vs {n}", counts[server]);
    }
    let all_zero = || async { session_counts(&t).await.values().all(|(n, _)| *n == 0) };
    let fell = tether_testkit::wait_until_async(Duration::from_secs(10), all_zero).await;
    assert!(fell, "still counted: {:?}", session_counts(&t).await);
}

#[tokio::test]
async fn every_mode_gives_every_server_a_session_number() {
    let servers = echo_servers(2);
    let t = start(config(app(&servers)).admin()).await;
    let counts = session_counts(&t).await;
    assert_eq!(counts.len(), 2);
    assert!(counts.values().all(|&(n, exact)| n == 0 && exact), "no affinity: {counts:?}");
}

/// The session id inside a cookie of ours.
fn session_of(cookie: &str) -> u64 {
    let keys = tether_core::affinity::CookieKeys::from_base64(&[KEY]).unwrap();
    keys.decode("app", cookie).unwrap().session.unwrap()
}

#[tokio::test]
async fn a_burst_of_cookieless_requests_on_one_http2_connection_shares_one_pick() {
    let servers = echo_servers(3);
    let t = start(config(app(&servers).sticky(Sticky::cookie()))).await;
    let h2 = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let burst: Vec<_> = (0..12)
        .map(|i| {
            let req = h2.get(format!("{}/api/{i}", t.url("web")));
            tokio::spawn(async move { req.send().await.unwrap() })
        })
        .collect();
    let mut answers = HashSet::new();
    for r in burst {
        let r = r.await.unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        answers.insert((server_of(&r), tether_cookie(&r).expect("each gets the cookie")));
    }
    assert_eq!(answers.len(), 1, "one server, one cookie: {answers:?}");
    let logs = || t.logs().iter().filter(|l| l["affinity"] == "new").count();
    assert!(tether_testkit::wait_until(Duration::from_secs(5), || logs() >= 1).await);
    assert_eq!(logs(), 1, "one new session, eleven requests joining it");
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_first_pick() {
    let servers = echo_servers(3);
    let web = web().trusted_proxies(&["127.0.0.1"]);
    let t = start(config_on(web, app(&servers).sticky(Sticky::cookie()))).await;
    let c = client(); // one kept-alive connection, like a CDN's
    let get = |xff: String| {
        let req = c.get(t.url("web")).header("x-forwarded-for", xff).header("user-agent", "UA/1");
        async move { req.send().await.unwrap() }
    };
    let mut spread = HashSet::new();
    for i in 0..30 {
        spread.insert(server_of(&get(format!("198.51.100.{i}")).await));
    }
    assert_eq!(spread.len(), 3, "new forwarded clients still spread: {spread:?}");
    let (one, two) = (get("203.0.113.9".into()).await, get("203.0.113.9".into()).await);
    assert_eq!(server_of(&one), server_of(&two));
    assert_eq!(tether_cookie(&one), tether_cookie(&two), "one forwarded client, one session");
}

#[tokio::test]
async fn fresh_connections_of_one_address_converge_only_when_asked() {
    let servers = echo_servers(3);
    for across in [true, false] {
        let sticky = Sticky::cookie().set("first_pick_across_connections", across);
        let t = start(config(app(&servers).sticky(sticky))).await;
        let c = fresh_client();
        let mut picks = HashSet::new();
        let mut sessions = HashSet::new();
        for _ in 0..6 {
            let r = c.get(t.url("web")).header("user-agent", "UA/1").send().await.unwrap();
            sessions.insert(session_of(&tether_cookie(&r).unwrap()));
            picks.insert(server_of(&r));
        }
        if across {
            assert_eq!((picks.len(), sessions.len()), (1, 1), "across connections: {picks:?}");
        } else {
            assert_eq!((picks.len(), sessions.len()), (3, 6), "per connection: {picks:?}");
        }
    }
}

#[tokio::test]
async fn the_first_pick_is_forgotten_after_its_window() {
    let servers = echo_servers(3);
    let sticky = Sticky::cookie().set("first_pick_window", "1s");
    let t = start(config(app(&servers).sticky(sticky))).await;
    let c = client();
    let first = tether_cookie(&c.get(t.url("web")).send().await.unwrap()).unwrap();
    let again = tether_cookie(&c.get(t.url("web")).send().await.unwrap()).unwrap();
    assert_eq!(first, again, "within the window");
    let later = tether_testkit::wait_until_async(Duration::from_secs(5), || async {
        let r = c.get(t.url("web")).send().await.unwrap();
        session_of(&tether_cookie(&r).unwrap()) != session_of(&first)
    })
    .await;
    assert!(later, "after the window a cookieless request starts a session of its own");
}

#[tokio::test]
async fn a_shared_redis_table_without_shared_keys_is_refused_by_check() {
    let servers = echo_servers(1);
    let file = |keys: &[&str]| {
        let app = app(&servers).sticky(Sticky::header("X-Session"));
        let c = Config::new().listener(web()).backend("app", app);
        let c = c.redis_stick_table("redis://127.0.0.1:6379");
        if keys.is_empty() { c } else { c.cookie_keys(keys) }
    };
    let out = tether_testkit::run_check(BIN, file(&[])).unwrap();
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("secrets.cookie_keys"), "{}", out.stderr);
    let out = tether_testkit::run_check(BIN, file(&[KEY])).unwrap();
    assert_eq!(out.code, Some(0), "with shared keys: {}", out.stderr);
}
