//! `tether demo` as a new user runs it: it prints what to try, pins a cookie jar to one demo
//! server whose visit count climbs, spreads cookieless clients, and stops cleanly on Ctrl-C.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tether_testkit::KillOnDrop;

use crate::support::fixture::BIN;

#[tokio::test]
async fn demo_pins_a_cookie_jar_and_stops_cleanly_on_ctrl_c() {
    // Killed when the test ends, also when an assertion fails first.
    let mut child = KillOnDrop::new(
        Command::new(BIN)
            .args(["--log-format", "json", "demo", "--listen", "127.0.0.1:0"])
            .args(["--admin", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut addr, mut printed) = (None, String::new());
    while Instant::now() < deadline && (addr.is_none() || !printed.contains("Ctrl-C")) {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else { continue };
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            if v["message"] == "listener bound" && v["listener"] == "demo" {
                addr = v["address"].as_str().map(str::to_owned);
            }
        } else {
            printed.push_str(&line);
            printed.push('\n');
        }
    }
    let addr = addr.expect("demo logs its listener");
    assert!(printed.contains("curl -c jar -b jar"), "instructions printed: {printed}");
    for name in ["alpha", "bravo", "charlie"] {
        assert!(printed.contains(name), "{printed}");
    }

    let url = format!("http://{addr}/");
    let jar = reqwest::Client::builder()
        .cookie_provider(std::sync::Arc::new(reqwest::cookie::Jar::default()))
        .build()
        .unwrap();
    let mut server = None;
    for visit in 1..=5 {
        let body = jar.get(&url).send().await.unwrap().text().await.unwrap();
        assert!(body.contains(&format!("Visit #{visit} ")), "visit {visit}: {body}");
        let name = body.split_whitespace().nth(2).unwrap().trim_end_matches('!').to_owned();
        assert_eq!(server.get_or_insert(name.clone()), &name, "the jar stays on one server");
    }
    let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        let body = fresh.get(&url).send().await.unwrap().text().await.unwrap();
        assert!(body.contains("Visit #1 "), "a cookieless client is always new: {body}");
        seen.insert(body.split_whitespace().nth(2).unwrap().to_owned());
    }
    assert_eq!(seen.len(), 3, "cookieless clients spread over all three: {seen:?}");

    let status =
        Command::new("kill").args(["-s", "INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let mut exit = None;
    tether_testkit::wait_until(Duration::from_secs(10), || {
        exit = child.try_wait().ok().flatten();
        exit.is_some()
    })
    .await;
    assert_eq!(exit.and_then(|s| s.code()), Some(0), "demo exits 0 on Ctrl-C");
}
