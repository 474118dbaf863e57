//! A reload that adds, removes and moves listeners (issue 15): new listeners accept once the
//! reload succeeds, removed ones close their port at once and drain their connections
//! (requests in flight finish; what outlives `grace_period` is cut), an address that cannot
//! be bound fails the whole reload, and connections keep their own listener's settings
//! whatever the new order. With one thread and with two worker threads (`SO_REUSEPORT`
//! sockets per worker): every worker accepts on new listeners and none on removed ones.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tether_testkit::{EchoServer, Tether, wait_until, wait_until_async};
use tokio::net::TcpStream;

use crate::support::fixture::{
    BIN, Backend, Config, KEY, Listener, admin_url, client, fresh_client, metric_sum,
};
use crate::support::h1raw::RawClient;

/// Generous bound for anything that should happen "at once" on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(10);

/// Listeners `names` on port 0, in that order, each in front of backend "app" over `a`;
/// the admin listener; a grace period of 10 s.
fn with_listeners(names: &[&str], a: &EchoServer) -> Config {
    let mut config = Config::new()
        .set("grace_period", "10s")
        .backend("app", Backend::new().server(a))
        .cookie_keys(&[KEY])
        .admin();
    for name in names {
        config = config.listener(Listener::new(name).default_backend("app"));
    }
    config
}

/// GET `url` on a new connection: its status, or why there was none.
async fn status(url: &str) -> Result<u16, String> {
    let answer = fresh_client().get(url).send().await;
    answer.map(|r| r.status().as_u16()).map_err(|e| format!("GET {url}: {e:?}"))
}

/// Whether a TCP connection to `addr` is refused (a connection that opens is dropped).
async fn refused(addr: SocketAddr) -> bool {
    TcpStream::connect(addr).await.is_err()
}

fn reloaded(outcome: &Value) -> bool {
    outcome["message"] == "config reloaded"
}

/// The series of `/metrics` labelled `listener="NAME"`.
async fn listener_series(t: &Tether, name: &str) -> Vec<String> {
    let text = client().get(admin_url(t, "/metrics")).send().await.unwrap().text().await.unwrap();
    let label = format!("listener=\"{name}\"");
    text.lines().filter(|l| !l.starts_with('#') && l.contains(&label)).map(str::to_owned).collect()
}

#[tokio::test]
async fn a_reload_adds_a_listener_that_accepts_and_proxies() {
    let a = EchoServer::start("a").unwrap();
    let mut t = Tether::start(BIN, with_listeners(&["web"], &a)).await.unwrap();
    assert!(t.try_listener_addr("api").is_none());

    let outcome = t.reload(with_listeners(&["web", "api"], &a)).await.unwrap();

    assert!(reloaded(&outcome), "{outcome}");
    let api = format!("{}/hello", t.url("api"));
    let r = client().get(&api).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["server"], "a", "{echo}");
    assert_eq!(echo["path"], "/hello", "{echo}");
    assert_eq!(status(&t.url("web")).await, Ok(200), "the kept listener still serves");
    let counted = metric_sum(&t, "tether_requests_total", &[("listener", "api")]).await;
    assert_eq!(counted, 1.0, "the new listener's request is counted under its name");
}

#[tokio::test]
async fn a_reload_removes_a_listener_its_request_in_flight_finishes_and_its_port_closes() {
    let a = EchoServer::start("a").unwrap();
    let mut t = Tether::start(BIN, with_listeners(&["web", "api"], &a)).await.unwrap();
    let api = t.listener_addr("api");
    assert!(!listener_series(&t, "api").await.is_empty(), "no series of api to remove");
    let slow_url = format!("http://{api}/slow?ms=1500");
    let slow = tokio::spawn(async move { status(&slow_url).await });
    assert!(wait_until(DEADLINE, || a.requests() >= 1).await, "the slow request never arrived");

    let outcome = t.reload(with_listeners(&["web"], &a)).await.unwrap();

    assert!(reloaded(&outcome), "{outcome}");
    assert!(wait_until_async(DEADLINE, || refused(api)).await, "api still accepts");
    assert!(!slow.is_finished(), "the port closed only after the request in flight ended");
    assert_eq!(slow.await.unwrap(), Ok(200), "the request in flight was cut");
    assert_eq!(status(&t.url("web")).await, Ok(200), "the kept listener still serves");
    let left = listener_series(&t, "api").await;
    assert!(left.is_empty(), "series of the removed listener remain: {left:?}");
    assert!(!listener_series(&t, "web").await.is_empty(), "the kept listener's series went");
    let drained = |l: &Value| l["message"] == "listener drained" && l["listener"] == "api";
    assert!(t.wait_for_log(drained, DEADLINE).await.is_some(), "no \"listener drained\" line");
}

#[tokio::test]
async fn a_reload_moves_a_listener_to_a_new_address_and_drains_the_old_one() {
    let a = EchoServer::start("a").unwrap();
    let mut t = Tether::start(BIN, with_listeners(&["web"], &a)).await.unwrap();
    let old = t.listener_addr("web");
    let slow_url = format!("http://{old}/slow?ms=1500");
    let slow = tokio::spawn(async move { status(&slow_url).await });
    assert!(wait_until(DEADLINE, || a.requests() >= 1).await, "the slow request never arrived");

    // Another loopback address: the configured address changes, so the listener moves.
    let moved = with_listeners(&[], &a)
        .listener(Listener::new("web").address("127.0.0.2:0").default_backend("app"));
    let outcome = t.reload(moved).await.unwrap();

    assert!(reloaded(&outcome), "{outcome}");
    let new = t.listener_addr("web");
    assert_eq!(new.ip().to_string(), "127.0.0.2", "web was not bound anew: {new}");
    assert_eq!(status(&format!("http://{new}/")).await, Ok(200));
    assert!(wait_until_async(DEADLINE, || refused(old)).await, "the old address still accepts");
    assert_eq!(slow.await.unwrap(), Ok(200), "the request in flight on the old address was cut");
}

#[tokio::test]
async fn a_reload_naming_an_address_in_use_fails_and_the_old_listeners_keep_serving() {
    let a = EchoServer::start("a").unwrap();
    let mut t = Tether::start(BIN, with_listeners(&["web"], &a)).await.unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    // "extra" comes first and binds; "api" cannot: the reload must close "extra" again.
    let clash = with_listeners(&["web", "extra"], &a)
        .listener(Listener::new("api").address(busy).default_backend("app"));

    let outcome = t.reload(&clash).await.unwrap();

    assert_eq!(outcome["message"], "reload failed", "{outcome}");
    let error = outcome["error"].as_str().unwrap_or_default();
    assert!(error.contains("\"api\"") && error.contains(&busy.to_string()), "{outcome}");
    assert_eq!(outcome["kept_generation"], 1, "{outcome}");
    assert!(t.try_listener_addr("extra").is_none(), "a listener of the failed reload opened");
    assert_eq!(status(&t.url("web")).await, Ok(200), "the old config does not serve");

    // The admin API's reload says the same, with 422.
    let mark = t.log_mark();
    let r = client().post(admin_url(&t, "/api/v1/reload")).send().await.unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains(&busy.to_string()), "{body}");
    // Logged as the API's, so the next reload (a signal's) cannot take it for its own.
    let failed = |line: &Value| line["message"] == "reload failed" && line["trigger"] == "api";
    assert!(t.wait_for_log_since(mark, failed, DEADLINE).await.is_some(), "not logged");

    // Once the address is free, the same file loads.
    drop(taken);
    let outcome = t.reload(&clash).await.unwrap();
    assert!(reloaded(&outcome), "{outcome}");
    assert_eq!(t.listener_addr("api"), busy);
    assert_eq!(status(&t.url("api")).await, Ok(200));
    assert_eq!(status(&t.url("extra")).await, Ok(200));
}

#[tokio::test]
async fn a_reload_giving_a_listeners_address_to_another_is_refused_and_changes_nothing() {
    let a = EchoServer::start("a").unwrap();
    let mut t = Tether::start(BIN, with_listeners(&["web"], &a)).await.unwrap();
    let web = t.listener_addr("web");
    let on_web = |name: &str| Listener::new(name).address(web).default_backend("app");

    // A rename: "www" would take the address "web" holds until the reload closes it.
    let renamed = t.reload(with_listeners(&[], &a).listener(on_web("www"))).await.unwrap();
    // A second listener on the address "web" keeps.
    let shared = t.reload(with_listeners(&["web"], &a).listener(on_web("api"))).await.unwrap();

    for (outcome, holder) in [(&renamed, "web\" holds it"), (&shared, "web\" is bound to it")] {
        assert_eq!(outcome["message"], "reload failed", "{outcome}");
        let error = outcome["error"].as_str().unwrap_or_default();
        assert!(error.contains(&web.to_string()) && error.contains(holder), "{outcome}");
    }
    assert_eq!(t.listener_addr("web"), web);
    assert_eq!(status(&t.url("web")).await, Ok(200), "the old config does not serve");
}

#[tokio::test]
async fn connections_keep_their_own_listener_when_a_reload_reorders_listeners() {
    let (sa, sb) = (EchoServer::start("sa").unwrap(), EchoServer::start("sb").unwrap());
    let two = |order: [&str; 2]| {
        let mut config = Config::new()
            .set("grace_period", "10s")
            .backend("one", Backend::new().server(&sa))
            .backend("two", Backend::new().server(&sb))
            .cookie_keys(&[KEY])
            .admin();
        for name in order {
            let backend = if name == "a" { "one" } else { "two" };
            config = config.listener(Listener::new(name).default_backend(backend));
        }
        config
    };
    let mut t = Tether::start(BIN, two(["a", "b"])).await.unwrap();
    let (mut on_a, mut on_b) = (
        RawClient::connect(t.listener_addr("a")).await,
        RawClient::connect(t.listener_addr("b")).await,
    );
    assert_eq!(ask(&mut on_a).await, "sa");
    assert_eq!(ask(&mut on_b).await, "sb");

    let outcome = t.reload(two(["b", "a"])).await.unwrap();
    assert!(reloaded(&outcome), "{outcome}");

    // The same connections, now with each listener at the other's position.
    assert_eq!(ask(&mut on_a).await, "sa", "a connection of a got b's settings");
    assert_eq!(ask(&mut on_b).await, "sb", "a connection of b got a's settings");
    for (listener, server) in [("a", "sa"), ("b", "sb")] {
        let labels = [("listener", listener), ("server", server)];
        let counted = metric_sum(&t, "tether_requests_total", &labels).await;
        assert_eq!(counted, 2.0, "requests of {listener} counted under another listener");
    }
}

/// One keep-alive GET on `client`'s connection: the `x-server` that answered.
async fn ask(client: &mut RawClient) -> String {
    assert!(client.send(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n").await, "the connection closed");
    let replies = client.replies(1).await;
    let reply = replies.first().unwrap_or_else(|| panic!("no answer"));
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.header("x-server").unwrap_or("-").to_owned()
}

#[tokio::test]
async fn a_removed_listeners_connections_still_open_after_the_grace_period_are_cut() {
    let a = EchoServer::start("a").unwrap();
    let short = |names: &[&str]| with_listeners(names, &a).set("grace_period", "1s");
    let mut t = Tether::start(BIN, short(&["web", "api"])).await.unwrap();
    let slow_url = format!("{}/slow?ms=8000", t.url("api"));
    // One over HTTP/1.1 (Tether's own loop), one over HTTP/2 (hyper's server).
    let h2 = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let (h1_url, h2_url) = (slow_url.clone(), slow_url);
    let slow_h1 = tokio::spawn(async move { status(&h1_url).await });
    let slow_h2 = tokio::spawn(async move { h2.get(&h2_url).send().await.map(|r| r.status()) });
    assert!(wait_until(DEADLINE, || a.requests() >= 2).await, "the slow requests never arrived");

    let outcome = t.reload(short(&["web"])).await.unwrap();
    assert!(reloaded(&outcome), "{outcome}");

    let asked = std::time::Instant::now();
    let answer = slow_h1.await.unwrap();
    assert!(answer.is_err(), "the HTTP/1.1 request outlived the grace period: {answer:?}");
    let answer = slow_h2.await.unwrap();
    assert!(answer.is_err(), "the HTTP/2 request outlived the grace period: {answer:?}");
    // Not a speed requirement: 6 s tells the 1 s grace period from the 8 s requests.
    assert!(asked.elapsed() < Duration::from_secs(6), "cut after {:?}", asked.elapsed());
    let cut = |l: &Value| {
        l["listener"] == "api" && l["message"].as_str().is_some_and(|m| m.contains("were cut"))
    };
    assert!(t.wait_for_log(cut, DEADLINE).await.is_some(), "the cut is not logged");
    assert_eq!(status(&t.url("web")).await, Ok(200), "the kept listener still serves");
}

/// Listening IPv4 sockets on `port` (Linux: `/proc/net/tcp`, state `0A`), whoever holds
/// them: Tether binds one per worker thread.
fn listening_sockets(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!(":{port:04X}");
    (table.lines().skip(1))
        .filter_map(|l| {
            let mut fields = l.split_whitespace().skip(1);
            Some((fields.next()?.ends_with(&local), fields.nth(1)? == "0A"))
        })
        .filter(|&(on_port, listening)| on_port && listening)
        .count()
}

/// Adds listener "api" then removes it, with `threads` worker threads: after the first
/// reload every worker has its socket and every one of many new connections is served (the
/// kernel spreads them over the sockets: a worker not accepting on its own would leave
/// some unanswered); after the second no socket is left and every connection is refused.
async fn add_then_remove(threads: usize) {
    let a = EchoServer::start("a").unwrap();
    let env = [("TETHER_WORKER_THREADS", &*threads.to_string())];
    let mut t = Tether::start_with_env(BIN, with_listeners(&["web"], &a), &env).await.unwrap();
    assert_eq!(listening_sockets(t.listener_addr("web").port()), threads);

    let outcome = t.reload(with_listeners(&["web", "api"], &a)).await.unwrap();
    assert!(reloaded(&outcome), "{outcome}");
    let api = t.listener_addr("api");
    assert_eq!(listening_sockets(api.port()), threads, "one socket per worker thread");
    for i in 0..32 {
        let answer = tokio::time::timeout(DEADLINE, status(&format!("http://{api}/"))).await;
        assert_eq!(answer, Ok(Ok(200)), "connection {i} to the new listener");
    }

    let outcome = t.reload(with_listeners(&["web"], &a)).await.unwrap();
    assert!(reloaded(&outcome), "{outcome}");
    let closed = wait_until(DEADLINE, || listening_sockets(api.port()) == 0).await;
    assert!(closed, "{} sockets of api left", listening_sockets(api.port()));
    for i in 0..32 {
        assert!(refused(api).await, "connection {i} to the removed listener was accepted");
    }
    assert_eq!(status(&t.url("web")).await, Ok(200), "the kept listener still serves");
}

#[tokio::test]
async fn with_one_thread_listeners_are_added_and_removed_by_reload() {
    add_then_remove(1).await;
}

#[tokio::test]
async fn with_two_worker_threads_each_worker_opens_added_listeners_and_closes_removed_ones() {
    add_then_remove(2).await;
}
