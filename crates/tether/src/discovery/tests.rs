//! Discovery's decisions without DNS: what a resolution does to a backend's servers, when a
//! draining server goes, which SRV records count, how long to wait, and what the merged
//! configuration holds. The whole loop, against a real DNS server, is in
//! `crates/tether/tests/suite/discovery.rs`.

use std::time::Duration;

use hickory_resolver::proto::rr::Name;
use hickory_resolver::proto::rr::rdata::SRV;
use tether_core::AdminState;

use super::members::Members;
use super::resolve::{dns_name, lowest_priority};
use super::task::next_wait;
use super::*;
use crate::config::OnRemoved;
use crate::test_support;

fn found(name: &str, weight: u32) -> Found {
    Found { name: name.to_owned(), address: name.parse().unwrap(), weight }
}

fn names(m: &Members) -> Vec<(String, AdminState)> {
    m.servers().map(|s| (s.name, s.state)).collect()
}

const A: &str = "10.0.0.1:80";
const B: &str = "10.0.0.2:80";
const C: &str = "10.0.0.3:80";

/// `(sticky, on_removed)` → the servers after `a b c` then `a b`.
#[test]
fn a_server_that_leaves_dns_drains_only_with_affinity_and_drain() {
    let rows = [
        (true, OnRemoved::Drain, vec![(A, "ready"), (B, "ready"), (C, "drain")]),
        (true, OnRemoved::Remove, vec![(A, "ready"), (B, "ready")]),
        (false, OnRemoved::Drain, vec![(A, "ready"), (B, "ready")]),
        (false, OnRemoved::Remove, vec![(A, "ready"), (B, "ready")]),
    ];
    for (sticky, on_removed, want) in rows {
        let mut m = Members::default();
        assert!(m.update(
            "app",
            vec![found(A, 1), found(B, 1), found(C, 1)],
            on_removed,
            sticky,
            0
        ));
        assert!(m.update("app", vec![found(A, 1), found(B, 1)], on_removed, sticky, 1000));
        let got: Vec<(String, &str)> = m.servers().map(|s| (s.name, s.state.as_str())).collect();
        let want: Vec<(String, &str)> = want.iter().map(|(n, s)| ((*n).to_owned(), *s)).collect();
        assert_eq!(got, want, "sticky {sticky}, {on_removed:?}");
    }
}

#[test]
fn the_same_servers_again_change_nothing_and_new_weights_do() {
    let mut m = Members::default();
    assert!(m.update("app", vec![found(A, 1), found(B, 1)], OnRemoved::Drain, true, 0));
    assert!(!m.update("app", vec![found(A, 1), found(B, 1)], OnRemoved::Drain, true, 1));
    assert!(m.update("app", vec![found(A, 1), found(B, 3)], OnRemoved::Drain, true, 2));
    let weights: Vec<u32> = m.servers().map(|s| s.weight).collect();
    assert_eq!(weights, [1, 3]);
}

#[test]
fn a_draining_server_that_comes_back_is_ready_again() {
    let mut m = Members::default();
    m.update("app", vec![found(A, 1), found(B, 1)], OnRemoved::Drain, true, 0);
    m.update("app", vec![found(A, 1)], OnRemoved::Drain, true, 10);
    assert!(m.draining());
    assert!(m.update("app", vec![found(A, 1), found(B, 1)], OnRemoved::Drain, true, 20));
    assert!(!m.draining());
    assert_eq!(names(&m), [(A.to_owned(), AdminState::Ready), (B.to_owned(), AdminState::Ready)]);
}

/// `(sessions held, ms since it left, lifetime ms)` → whether the sweep removes it.
#[test]
fn a_draining_server_goes_without_sessions_or_after_the_lifetime() {
    let rows = [
        (3, 1_000, Some(60_000), false),
        (0, 1_000, Some(60_000), true),
        (3, 60_000, Some(60_000), true),
        (3, 1_000, None, true),
    ];
    for (held, after, lifetime, gone) in rows {
        let mut m = Members::default();
        m.update("app", vec![found(A, 1), found(B, 1)], OnRemoved::Drain, true, 0);
        m.update("app", vec![found(A, 1)], OnRemoved::Drain, true, 5_000);
        // `A` is in DNS: its sessions never make it go.
        let changed = m.sweep_with("app", 5_000 + after, lifetime, |_| held);
        assert_eq!(changed, gone, "held {held}, after {after}, lifetime {lifetime:?}");
        assert_eq!(m.servers().count(), if gone { 1 } else { 2 });
    }
}

fn srv(priority: u16, weight: u16, port: u16, target: &str) -> SRV {
    SRV::new(priority, weight, port, Name::from_ascii(target).unwrap())
}

#[test]
fn only_the_lowest_priority_counts_and_weights_are_clamped() {
    let records = [
        srv(20, 5, 80, "backup.test."),
        srv(10, 0, 80, "a.test."),
        srv(10, 1000, 81, "b.test."),
        srv(5, 1, 80, "."),
    ];
    let picked: Vec<(String, u16, u32)> =
        lowest_priority(records.iter()).into_iter().map(|(t, p, w)| (dns_name(&t), p, w)).collect();
    assert_eq!(picked, [("a.test".to_owned(), 80, 1), ("b.test".to_owned(), 81, 256)]);
    assert!(lowest_priority([srv(1, 1, 80, ".")].iter()).is_empty());
}

#[test]
fn dns_names_are_lowercase_without_the_final_dot() {
    assert_eq!(dns_name(&Name::from_ascii("App1.Internal.").unwrap()), "app1.internal");
    assert_eq!(dns_name(&Name::from_ascii("app1.internal").unwrap()), "app1.internal");
}

/// `(interval, ttl)` → the wait.
#[test]
fn the_wait_is_the_interval_or_a_shorter_ttl_floored_at_one_second() {
    let s = Duration::from_secs;
    let ms = Duration::from_millis;
    let rows = [
        (s(5), None, s(5)),
        (s(5), Some(s(30)), s(5)),
        (s(5), Some(s(2)), s(2)),
        (s(5), Some(s(0)), s(1)),
        (ms(200), Some(s(0)), ms(200)),
    ];
    for (interval, ttl, want) in rows {
        assert_eq!(next_wait(interval, ttl), want, "{interval:?} {ttl:?}");
    }
}

const DISCOVERED: &str = r#"
[backends.app]
sticky = { mode = "cookie" }
discovery = { dns = "app.internal:8080", nameservers = ["127.0.0.1:5353"] }
[[backends.app.servers]]
name = "static"
address = "127.0.0.1:9001"

[backends.other]
[[backends.other.servers]]
name = "o"
address = "127.0.0.1:9002"
"#;

#[tokio::test]
async fn merged_configs_carry_discovered_servers_once_and_only_where_discovery_is() {
    let metrics = Arc::new(Metrics::default());
    let mut d = Discovery::new(&metrics);
    let snap = test_support::snapshot(DISCOVERED);
    d.published(&snap); // starts the task of `app` (its DNS server is not there)
    let task = d.tasks["app"].id;
    let update = Update { backend: "app".into(), task, servers: vec![found(A, 1), found(B, 2)] };
    assert!(d.handle(Event::Update(update), &snap));
    // A stale task's news is ignored.
    let stale = Update { backend: "app".into(), task: task + 7, servers: vec![] };
    assert!(!d.handle(Event::Update(stale), &snap));
    let once = d.merge(test_support::config(DISCOVERED));
    let twice = d.merge(once.clone());
    for config in [&once, &twice] {
        let app: Vec<(&str, ServerSource)> =
            config.backends[0].servers.iter().map(|s| (s.name.as_str(), s.source)).collect();
        assert_eq!(
            app,
            [("static", ServerSource::Config), (A, ServerSource::Dns), (B, ServerSource::Dns)]
        );
        assert_eq!(config.backends[1].servers.len(), 1);
    }
}

#[tokio::test]
async fn a_backend_that_loses_its_discovery_loses_its_discovered_servers_and_task() {
    let metrics = Arc::new(Metrics::default());
    let mut d = Discovery::new(&metrics);
    d.published(&test_support::snapshot(DISCOVERED));
    let task = d.tasks["app"].id;
    let update = Update { backend: "app".into(), task, servers: vec![found(A, 1)] };
    d.handle(Event::Update(update), &test_support::snapshot(DISCOVERED));
    let without = DISCOVERED.replace(
        "discovery = { dns = \"app.internal:8080\", nameservers = [\"127.0.0.1:5353\"] }\n",
        "",
    );
    d.published(&test_support::snapshot(&without));
    assert!(d.tasks.is_empty());
    let merged = d.merge(test_support::config(&without));
    assert_eq!(merged.backends[0].servers.len(), 1);
}

#[test]
fn a_backend_with_discovery_needs_no_static_server() {
    let snap = test_support::snapshot(
        "[backends.app]\ndiscovery = { srv = \"_http._tcp.app.internal\" }\n",
    );
    let b = test_support::backend(&snap, "app");
    assert!(b.servers.is_empty());
    assert_eq!(b.balancer.pick(&|_| true), None);
}
