//! Passive outlier ejection ([`observe`]) as tables: the failure threshold, the ejection cap
//! with its rounding, servers already ejected, and the doubling ejection time.
//!
//! An ejection spawns the timer task that returns the server; these tests run in a tokio
//! runtime only for that spawn, and end long before any timer fires.

use super::*;
use crate::snapshot::Snapshot;
use crate::test_support;

/// A backend `app` of `n` servers with `outlier.consecutive_failures = 3`.
fn fixture(n: usize, max_ejected_percent: u32) -> Snapshot {
    let names: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let servers = test_support::servers("app", &names);
    test_support::snapshot(&format!(
        "[backends.app]\n\
         outlier = {{ consecutive_failures = 3, base_ejection = \"10s\", max_ejection = \"300s\", \
         max_ejected_percent = {max_ejected_percent} }}\n{servers}"
    ))
}

fn fail(backend: &BackendView, i: usize, times: usize) {
    for _ in 0..times {
        observe(backend, i, false);
    }
}

fn ejected(backend: &BackendView) -> Vec<usize> {
    (0..backend.servers.len()).filter(|&i| backend.servers[i].state.is_ejected()).collect()
}

#[tokio::test]
async fn the_cap_rounds_down_and_never_ejects_the_last_server() {
    // `(case, servers, max_ejected_percent, already ejected, last server ejected after 3
    // failures)`.
    let rows: Vec<(&str, usize, u32, usize, bool)> = vec![
        ("one server, default 50%", 1, 50, 0, false),
        ("one server, 100%", 1, 100, 0, false),
        ("two servers, 50%: one may go", 2, 50, 0, true),
        ("two servers, 50%: not a second", 2, 50, 1, false),
        ("two servers, 100%: not the last", 2, 100, 1, false),
        ("three servers, 50% rounds down to one", 3, 50, 1, false),
        ("three servers, 34%: one", 3, 34, 0, true),
        ("three servers, 33% rounds down to none", 3, 33, 0, false),
        ("four servers, 50%: a second", 4, 50, 1, true),
        ("four servers, 50%: not a third", 4, 50, 2, false),
        ("four servers, 24% rounds down to none", 4, 24, 0, false),
        ("ten servers, 10%: one", 10, 10, 0, true),
        ("ten servers, 0%: none", 10, 0, 0, false),
        ("five servers, 100%: a fourth", 5, 100, 3, true),
        ("five servers, 100%: not the fifth", 5, 100, 4, false),
    ];
    for (case, n, percent, before, want) in rows {
        let snap = fixture(n, percent);
        let backend = &snap.backends[0];
        for i in 0..before {
            backend.servers[i].state.set_ejected(true);
        }
        fail(backend, n - 1, 3);
        assert_eq!(backend.servers[n - 1].state.is_ejected(), want, "{case}");
        assert_eq!(ejected(backend).len(), before + usize::from(want), "{case}: others untouched");
    }
}

#[tokio::test]
async fn only_consecutive_failures_reaching_the_threshold_eject() {
    // `(case, outcomes of server 0 in order: F failed, S succeeded, ejected after)`, on four
    // servers with room for two ejections.
    let rows: Vec<(&str, &str, bool)> = vec![
        ("no outcome", "", false),
        ("successes only", "SSSSS", false),
        ("two failures", "FF", false),
        ("three failures", "FFF", true),
        ("a success resets the count", "FFSFF", false),
        ("three after a reset", "FFSFFF", true),
        ("a success after ejection does not return it", "FFFS", true),
        ("more failures while ejected", "FFFFFF", true),
    ];
    for (case, outcomes, want) in rows {
        let snap = fixture(4, 50);
        let backend = &snap.backends[0];
        for o in outcomes.chars() {
            observe(backend, 0, o == 'S');
        }
        assert_eq!(backend.servers[0].state.is_ejected(), want, "{case}");
        let ejections = backend.servers[0].state.ejections();
        assert_eq!(ejections, u32::from(want), "{case}: ejected at most once");
    }
}

#[tokio::test]
async fn a_server_held_back_by_the_cap_is_ejected_once_there_is_room() {
    let snap = fixture(2, 50);
    let backend = &snap.backends[0];
    fail(backend, 0, 3);
    fail(backend, 1, 5);
    assert_eq!(ejected(backend), [0], "the cap holds the second server back");
    backend.servers[0].state.set_ejected(false);
    fail(backend, 1, 1);
    assert_eq!(ejected(backend), [1], "its failures were still counted");
}

#[tokio::test]
async fn no_outlier_table_never_ejects() {
    let snap = test_support::snapshot(&test_support::servers("app", &["a", "b"]));
    let backend = &snap.backends[0];
    fail(backend, 0, 100);
    assert_eq!(ejected(backend), [0usize; 0]);
}

#[tokio::test]
async fn each_ejection_of_a_server_lasts_twice_the_last_up_to_the_maximum() {
    // `(case, earlier ejections, duration of this one)`; base 10s, max 300s.
    let rows: Vec<(&str, u32, &str)> = vec![
        ("first", 0, "10s"),
        ("second", 1, "20s"),
        ("fourth", 3, "80s"),
        ("fifth", 4, "160s"),
        ("sixth reaches the maximum", 5, "300s"),
        ("twentieth stays at the maximum", 19, "300s"),
    ];
    for (case, earlier, want) in rows {
        let snap = fixture(4, 50);
        let backend = &snap.backends[0];
        let state = &backend.servers[0].state;
        for _ in 0..earlier {
            state.set_ejected(true);
            state.set_ejected(false);
        }
        fail(backend, 0, 3);
        let want = format!("ejected for {want} after 3 consecutive failures");
        assert_eq!(*state.reason(), want, "{case}");
    }
}
