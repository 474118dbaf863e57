//! `choose` and `has_alternative` as tables: pin × sticky policy × server states → the pick.
//!
//! Every row builds a backend of three primaries `a`, `b`, `c` and one backup `d` with
//! `balance = "first"` (the lowest usable index wins, so the expected pick is a literal) and
//! one connection slot per server ("full" holds that slot).

use tether_core::{AdminState, Health};

use super::*;
use crate::proxy::affinity::Outcome;
use crate::snapshot::Snapshot;
use crate::test_support;

/// What the test does to one server before choosing.
#[derive(Debug, Clone, Copy)]
enum S {
    Up,
    Down,
    Maint,
    Drain,
    Full,
    /// Draining and full: a pinned session's server at its limit.
    DrainFull,
    Ejected,
    /// Already tried by this request.
    Tried,
}
use S::{Down, Drain, DrainFull, Ejected, Full, Maint, Tried, Up};

/// The sticky and all-down policies of a row's backend.
#[derive(Debug, Clone, Copy)]
struct Policy {
    on_server_down: &'static str,
    on_server_full: &'static str,
    on_all_down: &'static str,
}

const DEFAULTS: Policy =
    Policy { on_server_down: "redispatch", on_server_full: "queue", on_all_down: "503" };
const FAIL: Policy = Policy { on_server_down: "fail", ..DEFAULTS };
const SPILL: Policy = Policy { on_server_full: "spill", ..DEFAULTS };
const REPIN_FULL: Policy = Policy { on_server_full: "redispatch", ..DEFAULTS };
const FAIL_OPEN: Policy = Policy { on_all_down: "fail_open", ..DEFAULTS };
const FAIL_OPEN_FAIL: Policy = Policy { on_server_down: "fail", ..FAIL_OPEN };

/// The outcome of `choose`, as a row states it.
#[derive(Debug, PartialEq)]
enum Want {
    /// This server, pin unchanged or balanced normally.
    Serve(usize),
    /// This server, away from the full pinned one (`spill`).
    Spill(usize),
    NoServer,
    PinnedDown,
    Other(String),
}
use Want::*;

/// `(case, policy, pinned server, states of a b c d, expected)`.
type Row = (&'static str, Policy, Option<usize>, [S; 4], Want);

fn fixture(p: Policy) -> Snapshot {
    let servers = test_support::servers("app", &["a", "b", "c", "d+backup"]);
    test_support::snapshot(&format!(
        r#"
[backends.app]
balance = "first"
on_all_down = "{}"
limits = {{ max_connections_per_server = 1 }}

[backends.app.sticky]
mode = "cookie"
on_server_down = "{}"
on_server_full = "{}"

{servers}"#,
        p.on_all_down, p.on_server_down, p.on_server_full
    ))
}

/// Puts each server in its row state; the returned permits keep "full" servers full.
fn apply(backend: &BackendView, states: [S; 4]) -> (super::Tried, Vec<OwnedSemaphorePermit>) {
    let mut tried = super::Tried::default();
    let mut held = Vec::new();
    for (i, s) in states.into_iter().enumerate() {
        let server = &backend.servers[i];
        match s {
            Up => {}
            Down => drop(server.state.set_health(Health::Down)),
            Maint => drop(server.state.set_admin_state(AdminState::Maint)),
            Drain => drop(server.state.set_admin_state(AdminState::Drain)),
            Ejected => drop(server.state.set_ejected(true)),
            Tried => tried.push(i),
            Full | DrainFull => {
                if let DrainFull = s {
                    server.state.set_admin_state(AdminState::Drain);
                }
                let slots = server.slots.clone().expect("the fixture limits connections");
                held.push(slots.try_acquire_owned().expect("a free slot"));
            }
        }
    }
    (tried, held)
}

fn pin_to(server: Option<usize>) -> Pin {
    Pin {
        key: None,
        learn_only: false,
        server,
        outcome: Outcome::Hit,
        issued_at: 0,
        refresh: false,
        session: None,
        first: crate::proxy::affinity::First::No,
    }
}

fn check(rows: Vec<Row>) {
    for (case, policy, pinned, states, want) in rows {
        let snap = fixture(policy);
        let backend = &snap.backends[0];
        let (tried, _held) = apply(backend, states);
        let pin = pinned.map(|s| pin_to(Some(s)));
        let got = match choose(backend, pin.as_ref(), &tried, None) {
            Ok(Pick { server, spilled: false }) => Serve(server),
            Ok(Pick { server, spilled: true }) => Spill(server),
            Err(ProxyError::NoServer) => NoServer,
            Err(ProxyError::PinnedServerDown) => PinnedDown,
            Err(e) => Other(e.to_string()),
        };
        assert_eq!(got, want, "{case} ({policy:?}, pin {pinned:?}, {states:?})");
    }
}

#[test]
fn new_sessions_skip_unusable_servers_and_fall_back_to_backups() {
    check(vec![
        ("all up: the balancer's first choice", DEFAULTS, None, [Up, Up, Up, Up], Serve(0)),
        ("down is skipped", DEFAULTS, None, [Down, Up, Up, Up], Serve(1)),
        ("maintenance is skipped", DEFAULTS, None, [Maint, Up, Up, Up], Serve(1)),
        ("draining takes no new session", DEFAULTS, None, [Drain, Up, Up, Up], Serve(1)),
        ("ejected is skipped", DEFAULTS, None, [Ejected, Up, Up, Up], Serve(1)),
        ("full is skipped while others have room", DEFAULTS, None, [Full, Up, Up, Up], Serve(1)),
        ("already tried is skipped", DEFAULTS, None, [Tried, Up, Up, Up], Serve(1)),
        ("backup idle while a primary is usable", DEFAULTS, None, [Down, Down, Up, Up], Serve(2)),
        ("backup when no primary is usable", DEFAULTS, None, [Down, Maint, Drain, Up], Serve(3)),
        ("backup when all primaries tried", DEFAULTS, None, [Tried, Tried, Tried, Up], Serve(3)),
        ("backup when every primary is full", DEFAULTS, None, [Full, Full, Full, Up], Serve(3)),
        ("everything full: queue on the first", DEFAULTS, None, [Full, Full, Full, Full], Serve(0)),
        ("all full: no queue on a down one", DEFAULTS, None, [Down, Full, Full, Full], Serve(1)),
        ("everything down: 503", DEFAULTS, None, [Down, Down, Down, Down], NoServer),
        ("everything draining: 503", DEFAULTS, None, [Drain, Drain, Drain, Drain], NoServer),
        ("everything tried: 503", DEFAULTS, None, [Tried, Tried, Tried, Tried], NoServer),
        ("no pin: on_server_down is moot", FAIL, None, [Down, Up, Up, Up], Serve(1)),
    ]);
}

#[test]
fn pinned_sessions_stay_unless_their_server_cannot_serve() {
    check(vec![
        ("pinned server up: followed", DEFAULTS, Some(1), [Up, Up, Up, Up], Serve(1)),
        ("pinned server draining: kept", DEFAULTS, Some(1), [Up, Drain, Up, Up], Serve(1)),
        ("pinned to the backup: followed", DEFAULTS, Some(3), [Up, Up, Up, Up], Serve(3)),
        ("pinned down, redispatch", DEFAULTS, Some(1), [Up, Down, Up, Up], Serve(0)),
        ("pinned down, fail", FAIL, Some(1), [Up, Down, Up, Up], PinnedDown),
        ("pinned in maintenance, redispatch", DEFAULTS, Some(1), [Up, Maint, Up, Up], Serve(0)),
        ("pinned in maintenance, fail", FAIL, Some(1), [Up, Maint, Up, Up], PinnedDown),
        ("pinned ejected, redispatch", DEFAULTS, Some(1), [Up, Ejected, Up, Up], Serve(0)),
        ("pinned ejected, fail", FAIL, Some(1), [Up, Ejected, Up, Up], PinnedDown),
        ("pinned already tried, redispatch", DEFAULTS, Some(1), [Up, Tried, Up, Up], Serve(0)),
        ("pinned already tried, fail", FAIL, Some(1), [Up, Tried, Up, Up], PinnedDown),
        ("pinned down, redispatch to backup", DEFAULTS, Some(1), [Down, Down, Down, Up], Serve(3)),
        ("pinned down, nothing else: 503", DEFAULTS, Some(1), [Down, Down, Down, Down], NoServer),
        ("fail wins over fail_open", FAIL_OPEN_FAIL, Some(1), [Up, Down, Up, Up], PinnedDown),
        ("fail keeps an up pin", FAIL, Some(1), [Down, Up, Down, Down], Serve(1)),
    ]);
}

#[test]
fn a_full_pinned_server_follows_on_server_full() {
    check(vec![
        ("queue: wait for the pinned server", DEFAULTS, Some(1), [Up, Full, Up, Up], Serve(1)),
        ("queue under fail: still wait", FAIL, Some(1), [Up, Full, Up, Up], Serve(1)),
        ("spill: elsewhere, pin kept", SPILL, Some(1), [Up, Full, Up, Up], Spill(0)),
        ("spill skips full servers", SPILL, Some(1), [Full, Full, Up, Up], Spill(2)),
        ("spill to a backup", SPILL, Some(1), [Full, Full, Full, Up], Spill(3)),
        ("spill, no room: wait for pinned", SPILL, Some(1), [Full, Full, Full, Full], Serve(1)),
        ("spill from a draining server", SPILL, Some(1), [Up, DrainFull, Up, Up], Spill(0)),
        ("queue on a draining server", DEFAULTS, Some(1), [Up, DrainFull, Up, Up], Serve(1)),
        ("redispatch: re-pin with room", REPIN_FULL, Some(1), [Up, Full, Up, Up], Serve(0)),
        ("redispatch skips full", REPIN_FULL, Some(1), [Full, Full, Up, Up], Serve(2)),
        ("redispatch, no room: queue on the first", REPIN_FULL, Some(1), [Full; 4], Serve(0)),
    ]);
}

#[test]
fn fail_open_tries_unhealthy_servers_but_never_maintenance() {
    check(vec![
        ("503 with everything down", DEFAULTS, None, [Down, Down, Down, Down], NoServer),
        ("fail_open: a down server", FAIL_OPEN, None, [Down, Down, Down, Down], Serve(0)),
        ("fail_open: an ejected server", FAIL_OPEN, None, [Ejected; 4], Serve(0)),
        ("fail_open: a draining server", FAIL_OPEN, None, [Drain; 4], Serve(0)),
        ("fail_open skips maintenance", FAIL_OPEN, None, [Maint, Down, Down, Down], Serve(1)),
        ("fail_open skips tried", FAIL_OPEN, None, [Tried, Down, Down, Down], Serve(1)),
        ("fail_open, all maintenance: 503", FAIL_OPEN, None, [Maint; 4], NoServer),
        ("fail_open, all tried: 503", FAIL_OPEN, None, [Tried; 4], NoServer),
        ("fail_open, pinned down: redispatch", FAIL_OPEN, Some(1), [Down; 4], Serve(0)),
        ("fail_open prefers usable", FAIL_OPEN, None, [Down, Down, Up, Down], Serve(2)),
    ]);
}

#[test]
fn an_alternative_is_an_untried_server_that_takes_new_sessions() {
    // `(case, states of a b c d)`, expected: whether a retry has somewhere to go.
    let rows: Vec<(&str, [S; 4], bool)> = vec![
        ("nothing tried", [Up, Up, Up, Up], true),
        ("one tried, others up", [Tried, Up, Up, Up], true),
        ("only the backup is left", [Tried, Tried, Tried, Up], true),
        ("the rest are down", [Tried, Down, Down, Down], false),
        ("the rest are in maintenance", [Tried, Maint, Maint, Maint], false),
        ("the rest are draining", [Tried, Drain, Drain, Drain], false),
        ("the rest are ejected", [Tried, Ejected, Ejected, Ejected], false),
        ("a full one counts (it may queue)", [Tried, Full, Down, Down], true),
        ("everything tried", [Tried; 4], false),
    ];
    for (case, states, want) in rows {
        let snap = fixture(DEFAULTS);
        let backend = &snap.backends[0];
        let (tried, _held) = apply(backend, states);
        assert_eq!(has_alternative(backend, &tried), want, "{case} ({states:?})");
    }
}

#[test]
fn tried_remembers_at_most_max_attempts_servers() {
    let mut tried = super::Tried::default();
    for i in 0..MAX_ATTEMPTS + 2 {
        tried.push(i);
    }
    // `(case, server, expected contains)`.
    let rows = [
        ("first attempt", 0, true),
        ("last attempt that fits", MAX_ATTEMPTS - 1, true),
        ("attempts past the limit are not recorded", MAX_ATTEMPTS, false),
    ];
    for (case, server, want) in rows {
        assert_eq!(tried.contains(server), want, "{case}");
    }
    assert_eq!(tried.len(), MAX_ATTEMPTS, "len stops at the limit");
}
