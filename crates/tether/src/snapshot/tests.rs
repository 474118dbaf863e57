//! What a reload keeps, as tables: per-server state, connection slots, stick tables and rate
//! limiters are reused (the same `Arc`) while their key is unchanged, replaced when it
//! changes and dropped with their server or backend; the shared client is kept while its
//! [`ClientKey`] is equal.
//!
//! Every row builds generation 1 from [`BASE`], then one reload per entry of its edits
//! (each a list of text replacements applied to [`BASE`]), and compares a probe of the first
//! and the last snapshot. All snapshots stay alive meanwhile, so two live `Arc`s at one
//! address are one `Arc`.

use std::sync::Arc;

use tether_core::AdminState;

use super::*;
use crate::test_support;

const BASE: &str = r#"
stick_table = { capacity = 1000 }

[backends.app]
limits = { max_connections_per_server = 4 }
rate_limit = { requests_per_second = 10, burst = 20 }
[backends.app.sticky]
mode = "header"
header = "x-session"
idle_timeout = "1h"
[[backends.app.servers]]
name = "a"
address = "127.0.0.1:9001"
[[backends.app.servers]]
name = "b"
address = "127.0.0.1:9002"

[backends.api]
[[backends.api.servers]]
name = "x"
address = "127.0.0.1:9101"
"#;

/// Text replacements turning [`BASE`] into one reload's config.
type Edits<'a> = &'a [(&'a str, &'a str)];

const UNCHANGED: Edits<'static> = &[];
const A: &str = "[[backends.app.servers]]\nname = \"a\"\naddress = \"127.0.0.1:9001\"\n";
const B: &str = "[[backends.app.servers]]\nname = \"b\"\naddress = \"127.0.0.1:9002\"\n";
const RATE: &str = "rate_limit = { requests_per_second = 10, burst = 20 }\n";
const HEADER_MODE: &str = "\"header\"\nheader = \"x-session\"";
const LIMIT: &str = "max_connections_per_server = 4";
const RENAME_A: Edits<'static> = &[("name = \"a\"", "name = \"a2\"")];
const REMOVE_A: Edits<'static> = &[(A, "")];
/// `a` leaves `app`, and `api`'s only server is now called `a`.
const MOVE_A: Edits<'static> = &[(A, ""), ("name = \"x\"", "name = \"a\"")];
const RENAME_APP: Edits<'static> = &[("backends.app", "backends.shop")];

fn edited(edits: Edits<'_>) -> String {
    edits.iter().fold(BASE.to_owned(), |text, (from, to)| {
        assert!(text.contains(from), "edit {from:?} matches nothing");
        text.replace(from, to)
    })
}

/// Something a snapshot holds per server or backend, identified by its `Arc`'s address.
#[derive(Debug, Clone, Copy)]
enum Probe {
    State(&'static str, &'static str),
    Slots(&'static str, &'static str),
    Table(&'static str),
    Rate(&'static str),
}

fn addr<T: ?Sized>(a: &Arc<T>) -> usize {
    Arc::as_ptr(a).cast::<()>() as usize
}

impl Probe {
    fn find(self, snap: &Snapshot) -> Option<usize> {
        let backend = |b: &str| snap.backends.iter().find(|v| &*v.name == b);
        let server = |b: &str, s: &str| backend(b)?.servers.iter().find(|v| v.state.name() == s);
        match self {
            Probe::State(b, s) => server(b, s).map(|v| addr(&v.state)),
            Probe::Slots(b, s) => server(b, s)?.slots.as_ref().map(addr),
            Probe::Table(b) => match backend(b)?.table.as_ref()? {
                Table::Memory(m) => Some(addr(m)),
                Table::Redis(r) => Some(addr(r)),
            },
            Probe::Rate(b) => backend(b)?.rate.as_ref().map(addr),
        }
    }
}

#[derive(Debug, PartialEq)]
enum Want {
    /// The same `Arc` after the reloads.
    Same,
    /// A different one.
    New,
    /// None at all.
    Gone,
}
use Want::{Gone, New, Same};

/// `(case, probe in generation 1, reloads, probe in the last generation, expected)`.
type Row<'a> = (&'a str, Probe, &'a [Edits<'a>], Probe, Want);

fn check(rows: Vec<Row<'_>>) {
    for (case, first, reloads, last, want) in rows {
        let keys = test_support::keys(&[1]);
        let mut registry = Registry::default();
        let mut snaps = vec![registry.build(test_support::config(BASE), &keys)];
        for edits in reloads {
            snaps.push(registry.build(test_support::config(&edited(edits)), &keys));
        }
        let before = first.find(&snaps[0]).unwrap_or_else(|| panic!("{case}: {first:?} missing"));
        let got = match last.find(snaps.last().expect("generation 1")) {
            None => Gone,
            Some(after) if after == before => Same,
            Some(_) => New,
        };
        assert_eq!(got, want, "{case}: {first:?} → {last:?}");
    }
}

#[test]
fn server_state_is_kept_by_backend_and_server_name() {
    let a = Probe::State("app", "a");
    check(vec![
        ("unchanged", a, &[UNCHANGED], a, Same),
        ("address changed: the name is the identity", a, &[&[("9001", "9009")]], a, Same),
        ("weight changed", a, &[&[("9001\"\n", "9001\"\nweight = 3\n")]], a, Same),
        ("another server removed", a, &[&[(B, "")]], a, Same),
        ("kept over several reloads", a, &[UNCHANGED, UNCHANGED, UNCHANGED], a, Same),
        ("removed", a, &[REMOVE_A], a, Gone),
        ("renamed", a, &[RENAME_A], Probe::State("app", "a2"), New),
        ("removed, then added again", a, &[REMOVE_A, UNCHANGED], a, New),
        ("its backend renamed", a, &[RENAME_APP], Probe::State("shop", "a"), New),
        ("moved to another backend", a, &[MOVE_A], Probe::State("api", "a"), New),
    ]);
}

#[test]
fn connection_slots_are_kept_while_the_limit_stays() {
    let a = Probe::Slots("app", "a");
    check(vec![
        ("unchanged", a, &[UNCHANGED], a, Same),
        ("queue settings changed", a, &[&[("limits = {", "limits = { queue_size = 9,")]], a, Same),
        ("limit changed", a, &[&[(LIMIT, "max_connections_per_server = 8")]], a, New),
        ("limit removed", a, &[&[(LIMIT, "max_connections_per_server = 0")]], a, Gone),
        ("server renamed", a, &[RENAME_A], Probe::Slots("app", "a2"), New),
        ("backend renamed", a, &[RENAME_APP], Probe::Slots("shop", "a"), New),
    ]);
}

#[test]
fn the_stick_table_is_kept_while_its_capacity_stays() {
    let app = Probe::Table("app");
    check(vec![
        ("unchanged", app, &[UNCHANGED], app, Same),
        ("expiry changed", app, &[&[("\"1h\"", "\"2h\"")]], app, Same),
        ("a server removed", app, &[&[(B, "")]], app, Same),
        ("capacity changed", app, &[&[("1000", "2000")]], app, New),
        ("affinity turned to cookies", app, &[&[(HEADER_MODE, "\"cookie\"")]], app, Gone),
        ("backend renamed", app, &[RENAME_APP], Probe::Table("shop"), New),
    ]);
}

#[test]
fn a_kept_stick_table_takes_the_new_expiry() {
    let keys = test_support::keys(&[1]);
    let mut registry = Registry::default();
    let _first = registry.build(test_support::config(BASE), &keys);
    let second = registry.build(test_support::config(&edited(&[("\"1h\"", "\"2h\"")])), &keys);
    let app = test_support::backend(&second, "app");
    let Some(Table::Memory(table)) = &app.table else { panic!("a memory table") };
    assert_eq!(table.expiry().idle_timeout, 7200);
}

#[test]
fn rate_limiters_are_kept_while_their_settings_stay() {
    let app = Probe::Rate("app");
    check(vec![
        ("unchanged", app, &[UNCHANGED], app, Same),
        ("servers changed", app, &[&[(B, "")]], app, Same),
        ("rate changed", app, &[&[("= 10,", "= 11,")]], app, New),
        ("burst changed", app, &[&[("burst = 20", "burst = 21")]], app, New),
        ("key changed", app, &[&[("burst = 20", "burst = 20, key = \"affinity\"")]], app, New),
        ("removed", app, &[&[(RATE, "")]], app, Gone),
        ("backend renamed", app, &[RENAME_APP], Probe::Rate("shop"), New),
    ]);
}

#[test]
fn the_shared_client_is_kept_while_its_key_is_equal() {
    // `(case, a setting added to app, same key)`: the key decides reuse (a client has no
    // identity to compare).
    let rows: Vec<(&str, &str, bool)> = vec![
        ("nothing added", "", true),
        ("response timeout", "timeouts = { response = \"9s\" }", true),
        ("slow start", "slow_start = \"30s\"", true),
        ("connect timeout", "timeouts = { connect = \"9s\" }", false),
        ("idle timeout", "timeouts = { idle = \"9s\" }", false),
        ("HTTP/2", "http2 = true", false),
    ];
    let key = |c: &Config| ClientKey::of(c.backend("app").expect("app"));
    let base = key(&test_support::config(BASE));
    for (case, setting, same) in rows {
        let added = format!("[backends.app]\n{setting}\n");
        let next = key(&test_support::config(&edited(&[("[backends.app]\n", &added)])));
        assert_eq!(base == next, same, "{case}");
    }
}

/// Server `a` of `app`.
fn a(snap: &Snapshot) -> &ServerState {
    &test_support::backend(snap, "app").servers[0].state
}

/// One step of an admin-state row.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// A reload from the file, `a` in this state.
    File(&'static str),
    /// A rebuild by the admin API, with `a` in this state in its config.
    Admin(&'static str),
    /// The admin API sets `a`'s state at runtime.
    Set(AdminState),
}

#[test]
fn a_reload_applies_a_servers_state_only_when_the_file_changes_it() {
    use AdminState::{Drain, Maint, Ready};
    use Step::{Admin, File, Set};
    // `(case, steps after generation 1 (`a` ready in the file), `a`'s state at the end)`.
    let rows: Vec<(&str, Vec<Step>, AdminState)> = vec![
        ("the file's state applies", vec![File("maint")], Maint),
        ("a runtime change survives a reload", vec![Set(Drain), File("ready")], Drain),
        ("a change in the file wins", vec![Set(Drain), File("maint")], Maint),
        ("back to ready in the file", vec![File("maint"), File("ready")], Ready),
        (
            "runtime ready survives an unchanged file",
            vec![File("maint"), Set(Ready), File("maint")],
            Ready,
        ),
        ("an admin rebuild ignores states", vec![Set(Drain), Admin("ready")], Drain),
        ("the file stays the reference", vec![Admin("maint"), File("maint")], Maint),
    ];
    for (case, steps, want) in rows {
        let keys = test_support::keys(&[1]);
        let mut registry = Registry::default();
        let mut snap = registry.build(test_support::config(BASE), &keys);
        for step in steps.iter().copied() {
            let with_state = |s: &str| {
                test_support::config(
                    &BASE.replace("name = \"a\"", &format!("name = \"a\"\nstate = \"{s}\"")),
                )
            };
            match step {
                File(s) => snap = registry.build(with_state(s), &keys),
                Admin(s) => snap = registry.rebuild(with_state(s), &keys),
                Set(s) => drop(a(&snap).set_admin_state(s)),
            }
        }
        assert_eq!(a(&snap).admin_state(), want, "{case} ({steps:?})");
    }
}
