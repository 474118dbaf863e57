//! Every process the testkit starts is gone once its handle drops, also when the test
//! panics first (the handle drops during the unwind): a failed assertion must not leave a
//! `redis-server`, a browser or a process of the test's own running. (For [`Tether`] see
//! `harness.rs`, which has a stand-in binary.)
//!
//! Needs `redis-server` and Chromium, like the tests that use them.

use std::panic::AssertUnwindSafe;

use tether_testkit::KillOnDrop;
use tether_testkit::browser::Browser;
use tether_testkit::redis::RedisServer;

/// Holds `handle` in code that panics: the handle drops during the unwind.
fn panic_holding<T>(handle: T) {
    let unwound = std::panic::catch_unwind(AssertUnwindSafe(move || {
        let _held = handle;
        panic!("a failed assertion while the process runs");
    }));
    assert!(unwound.is_err());
}

/// The processes of group `pgid` that are still running (zombies count as gone).
fn running_in_group(pgid: u32) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            // `pid (comm) state ppid pgrp ...`; comm may hold spaces, so split after it.
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().collect())
                .unwrap_or_default();
            fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
        })
        .collect()
}

fn is_running(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
}

#[tokio::test]
async fn a_redis_server_goes_when_the_test_panics() {
    let redis = RedisServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let pid = redis.pid().unwrap();
    panic_holding(redis);
    assert!(!is_running(pid), "redis-server (pid {pid}) survived the panic");
}

#[tokio::test]
async fn a_browser_and_its_renderers_go_when_the_test_panics() {
    let browser = Browser::launch().await.unwrap_or_else(|e| panic!("{e}"));
    let pid = browser.pid();
    assert!(!running_in_group(pid).is_empty(), "no process in the browser's group");
    panic_holding(browser);
    let left = running_in_group(pid);
    assert!(left.is_empty(), "the browser's processes survived the panic: {left:?}");
}

#[test]
fn a_process_a_test_starts_itself_goes_when_the_test_panics() {
    let child = std::process::Command::new("sleep").arg("600").spawn().unwrap();
    let pid = child.id();
    panic_holding(KillOnDrop::new(child));
    assert!(!is_running(pid), "sleep (pid {pid}) survived the panic");
}
