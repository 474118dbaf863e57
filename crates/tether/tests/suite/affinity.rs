//! Cookie affinity through a real Tether: pinning, spreading, forgery, failover, expiry.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use tether_testkit::EchoServer;

use crate::support::fixture::*;

#[tokio::test]
async fn one_client_replaying_its_cookie_stays_on_one_server_for_1000_requests() {
    let servers = echo_servers(3);
    let t = start(config(app(&servers).sticky(Sticky::cookie()))).await;
    let c = client();
    let first = c.get(t.url("web")).send().await.unwrap();
    let pinned = server_of(&first);
    let cookie = tether_cookie(&first).expect("a new session gets a cookie");
    for i in 0..1000 {
        let r =
            c.get(t.url("web")).header("cookie", format!("tether={cookie}")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(server_of(&r), pinned, "request {i} left the pinned server");
        assert!(tether_cookie(&r).is_none(), "a fresh pin needs no new Set-Cookie");
    }
}

#[tokio::test]
async fn a_servers_cookie_of_our_name_is_dropped_whether_ours_is_issued_or_replayed() {
    use tether_testkit::servers::scripted::{Answer, ScriptedServer, Then};
    fn answer(_path: &str) -> Answer {
        Answer::new(
            b"HTTP/1.1 200 OK\r\nSet-Cookie: tether=forged\r\nSet-Cookie: app=1\r\n\
              Content-Length: 2\r\n\r\nok",
            Then::KeepOpen,
        )
    }
    let server = ScriptedServer::start(answer).unwrap();
    let backend = Backend::new().server(ServerEntry::new("up", server.addr()));
    let t = start(config(backend.sticky(Sticky::cookie()))).await;
    let cookies = |r: &reqwest::Response| -> Vec<String> {
        let all = r.headers().get_all("set-cookie").iter();
        all.map(|v| v.to_str().unwrap().to_owned()).collect()
    };
    let first = client().get(t.url("web")).send().await.unwrap();
    let ours = tether_cookie(&first).expect("a new session gets our cookie");
    assert_ne!(ours, "forged");
    let set = cookies(&first);
    assert_eq!(set.iter().filter(|c| c.starts_with("tether=")).count(), 1, "{set:?}");
    assert!(set.contains(&"app=1".to_owned()), "{set:?}");
    // Replayed and kept as it is: nothing of ours to set, the server's still dropped.
    let again =
        client().get(t.url("web")).header("cookie", format!("tether={ours}")).send().await.unwrap();
    assert_eq!(cookies(&again), ["app=1"]);
}

#[tokio::test]
async fn an_issued_cookie_makes_the_answer_private_whether_the_server_said_public_or_nothing() {
    use tether_testkit::servers::scripted::{Answer, ScriptedServer, Then};
    fn answer(path: &str) -> Answer {
        let head: &'static [u8] = if path == "/public" {
            b"HTTP/1.1 200 OK\r\nCache-Control: public, max-age=60\r\nX-Kept: yes\r\n\
              Content-Length: 2\r\n\r\nok"
        } else {
            b"HTTP/1.1 200 OK\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok"
        };
        Answer::new(head, Then::KeepOpen)
    }
    let server = ScriptedServer::start(answer).unwrap();
    let backend = Backend::new().server(ServerEntry::new("up", server.addr()));
    let t = start(config(backend.sticky(Sticky::cookie()))).await;
    let all = |r: &reqwest::Response, name: &str| -> Vec<String> {
        let values = r.headers().get_all(name).iter();
        values.map(|v| v.to_str().unwrap().to_owned()).collect()
    };
    // (path, Cache-Control with our new cookie, Cache-Control when it is replayed)
    let rows =
        [("/public", "max-age=60, private", Some("public, max-age=60")), ("/", "private", None)];
    for (path, issued, replayed) in rows {
        let first = client().get(format!("{}{path}", t.url("web"))).send().await.unwrap();
        let ours = tether_cookie(&first).expect("a new session gets our cookie");
        assert_eq!(all(&first, "cache-control"), [issued], "{path}");
        assert_eq!(all(&first, "x-kept"), ["yes"], "{path}");
        let again = client()
            .get(format!("{}{path}", t.url("web")))
            .header("cookie", format!("tether={ours}"))
            .send()
            .await
            .unwrap();
        assert!(all(&again, "set-cookie").is_empty(), "{path}");
        assert_eq!(all(&again, "cache-control"), Vec::from_iter(replayed), "{path}");
        assert_eq!(all(&again, "x-kept"), ["yes"], "{path}");
    }
}

#[tokio::test]
async fn three_hundred_fresh_clients_spread_over_all_servers() {
    let servers = echo_servers(3);
    let t = start(config(app(&servers).sticky(Sticky::cookie()))).await;
    let c = fresh_client();
    let mut counts: HashMap<String, u32> = HashMap::new();
    for _ in 0..300 {
        let r = c.get(t.url("web")).send().await.unwrap();
        assert!(tether_cookie(&r).is_some());
        *counts.entry(server_of(&r)).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|&n| n == 100), "round robin gives exact thirds: {counts:?}");
}

#[tokio::test]
async fn forged_or_bit_flipped_cookie_is_replaced_never_an_error() {
    let servers = echo_servers(3);
    let t = start(config(app(&servers).sticky(Sticky::cookie()))).await;
    let c = client();
    let cookie = tether_cookie(&c.get(t.url("web")).send().await.unwrap()).unwrap();
    let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&cookie).unwrap();
    let mut forgeries = vec![
        String::new(),
        "garbage".into(),
        "%%%;;".into(),
        "A".repeat(44),
        "A".repeat(5000),
        cookie[..cookie.len() - 1].to_owned(),
    ];
    for byte in [0, 5, 12, 20, 30] {
        raw[byte] ^= 0x01;
        forgeries.push(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw));
        raw[byte] ^= 0x01;
    }
    for forged in forgeries {
        let r =
            c.get(t.url("web")).header("cookie", format!("tether={forged}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "forged cookie {forged:?}");
        let fresh = tether_cookie(&r).expect("a forged cookie is replaced");
        assert_ne!(fresh, forged);
    }
}

#[tokio::test]
async fn cookie_names_no_address_port_or_server_in_clear() {
    // Long names: "s0" would turn up in one 44-character token of ~30 by chance.
    let servers: Vec<EchoServer> = ["alpha-server", "bravo-server", "charlie-server"]
        .iter()
        .map(|n| EchoServer::start(n).unwrap())
        .collect();
    let t = start(config(app(&servers).sticky(Sticky::cookie()))).await;
    let c = fresh_client();
    for _ in 0..3 {
        let r = c.get(t.url("web")).send().await.unwrap();
        let header: Vec<String> = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        let cookie = tether_cookie(&r).unwrap();
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&cookie).unwrap();
        for s in &servers {
            let port = s.addr().port().to_string();
            for needle in [s.name(), port.as_str(), "127.0.0.1"] {
                assert!(!cookie.contains(needle), "{cookie} contains {needle}");
                assert!(!decoded.windows(needle.len()).any(|w| w == needle.as_bytes()));
            }
            // The address in binary (4 bytes of IP, then 2 of port): two bytes alone would
            // turn up by chance in one token of ~200 (the token is 33 random-looking bytes).
            let [a, b, c, d] = [127u8, 0, 0, 1];
            let [p0, p1] = s.addr().port().to_be_bytes();
            for binary in [&[a, b, c, d][..], &[a, b, c, d, p0, p1], &[p0, p1, a, b, c, d]] {
                let found = decoded.windows(binary.len()).any(|w| w == binary);
                assert!(!found, "address bytes {binary:?} in token");
            }
        }
        assert!(
            header.iter().any(|h| h.contains("HttpOnly") && h.contains("Path=/")),
            "{header:?}"
        );
        assert_eq!(r.headers()["cache-control"], "private");
    }
}

#[tokio::test]
async fn tether_cookie_is_stripped_before_forwarding_and_others_are_kept() {
    let servers = echo_servers(1);
    let t = start(config(app(&servers).sticky(Sticky::cookie()))).await;
    let c = client();
    let cookie = tether_cookie(&c.get(t.url("web")).send().await.unwrap()).unwrap();
    let r = c
        .get(t.url("web"))
        .header("cookie", format!("a=1; tether={cookie}; b=2"))
        .send()
        .await
        .unwrap();
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["headers"]["cookie"], "a=1; b=2");
}

#[tokio::test]
async fn pinned_client_whose_server_dies_gets_a_200_elsewhere_and_a_new_cookie() {
    let mut servers = echo_servers(3);
    let t =
        start(config(app(&servers).set("timeouts.connect", "1s").sticky(Sticky::cookie()))).await;
    let c = client();
    let first = c.get(t.url("web")).send().await.unwrap();
    let pinned = server_of(&first);
    let cookie = tether_cookie(&first).unwrap();

    // Background traffic without affinity: none of it may fail while a server dies.
    let url = t.url("web");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bg = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let c = fresh_client();
            let (mut ok, mut failed) = (0u32, Vec::new());
            for _ in 0..20_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => failed.push(r.status().to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        })
    };
    let victim = servers.iter_mut().find(|s| s.name() == pinned).unwrap();
    victim.stop().await;

    let r = c.get(t.url("web")).header("cookie", format!("tether={cookie}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let moved_to = server_of(&r);
    assert_ne!(moved_to, pinned);
    let new_cookie = tether_cookie(&r).expect("re-pinned sessions get a new cookie");
    assert_ne!(new_cookie, cookie);
    // The new cookie sticks to the new server.
    for _ in 0..20 {
        let r = c
            .get(t.url("web"))
            .header("cookie", format!("tether={new_cookie}"))
            .send()
            .await
            .unwrap();
        assert_eq!(server_of(&r), moved_to);
    }
    let rebound = t.wait_for_log(|l| l["affinity"] == "rebound", Duration::from_secs(5)).await;
    assert!(rebound.is_some(), "access log names the rebound");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = bg.await.unwrap();
    assert!(ok > 0);
    assert!(failed.is_empty(), "requests failed while a server died: {failed:?}");
}

#[tokio::test]
async fn on_server_down_fail_answers_503_instead_of_moving_the_session() {
    let mut servers = echo_servers(2);
    let t =
        start(config(app(&servers).sticky(Sticky::cookie().set("on_server_down", "fail")))).await;
    let c = client();
    let first = c.get(t.url("web")).send().await.unwrap();
    let pinned = server_of(&first);
    let cookie = tether_cookie(&first).unwrap();
    servers.iter_mut().find(|s| s.name() == pinned).unwrap().stop().await;
    let r = c.get(t.url("web")).header("cookie", format!("tether={cookie}")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    // A client without a pin is still served.
    let r = c.get(t.url("web")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_hit_sends_no_set_cookie_and_the_cookie_never_reaches_the_logs() {
    let servers = echo_servers(1);
    let t = start(config(app(&servers).sticky(Sticky::cookie()))).await;
    let c = client();
    let cookie = tether_cookie(&c.get(t.url("web")).send().await.unwrap()).unwrap();
    let r = c.get(t.url("web")).header("cookie", format!("tether={cookie}")).send().await.unwrap();
    assert!(r.headers().get("set-cookie").is_none());
    let logs = t.logs();
    assert!(logs.iter().all(|l| !l.to_string().contains(&cookie)), "cookie value leaked into logs");
}

fn crafted(server: &str, issued_at: u64, refreshed_at: u64) -> String {
    let keys = tether_core::affinity::CookieKeys::from_base64(&[KEY]).unwrap();
    let tag = keys.server_tag(0, "app", server).unwrap();
    keys.encode("app", tag, 0x0123_4567_89ab_cdef, issued_at as u32, refreshed_at as u32)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test]
async fn idle_expiry_absolute_lifetime_and_future_dates_are_enforced_by_tether() {
    let servers = echo_servers(3);
    let sticky = Sticky::cookie().set("idle_timeout", "10m").set("max_lifetime", "1h");
    let t = start(config(app(&servers).sticky(sticky))).await;
    let c = client();
    let now = unix_now();
    let send = |cookie: String| {
        let c = c.clone();
        let url = t.url("web");
        async move { c.get(url).header("cookie", format!("tether={cookie}")).send().await.unwrap() }
    };
    // A token Tether would accept: no server-side state is needed to honour it.
    let fresh = send(crafted("s2", now - 30, now - 30)).await;
    assert_eq!(server_of(&fresh), "s2");
    assert!(tether_cookie(&fresh).is_none(), "fresh pins are not re-issued");
    // Past a quarter of the idle window: still pinned, and re-issued (sliding window).
    let sliding = send(crafted("s2", now - 400, now - 400)).await;
    assert_eq!(server_of(&sliding), "s2");
    assert!(tether_cookie(&sliding).is_some());
    let mut outcomes = Vec::new();
    for (what, cookie) in [
        ("idle", crafted("s2", now - 700, now - 700)),
        ("lifetime", crafted("s2", now - 3700, now - 60)),
        ("future", crafted("s2", now + 3600, now + 3600)),
    ] {
        let r = send(cookie.clone()).await;
        assert_eq!(r.status(), 200, "{what}");
        let renewed = tether_cookie(&r).unwrap_or_else(|| panic!("{what}: a new cookie"));
        assert_ne!(renewed, cookie, "{what}");
        outcomes.push(what);
    }
    let expired_lines = || t.logs().iter().filter(|l| l["affinity"] == "expired").count();
    let all_logged =
        tether_testkit::wait_until(Duration::from_secs(5), || expired_lines() >= outcomes.len())
            .await;
    assert!(all_logged, "each is logged as expired: {} of {}", expired_lines(), outcomes.len());
}
