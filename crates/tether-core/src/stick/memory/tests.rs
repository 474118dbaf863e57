use super::*;

const EXPIRY: Expiry = Expiry { idle_timeout: 100, max_lifetime: 1000 };

fn name(s: &str) -> Arc<str> {
    Arc::from(s)
}

#[test]
fn binding_is_found_and_counted() {
    let t = MemoryStore::new(100, EXPIRY);
    assert_eq!(t.get(1, 0), Lookup::Missing);
    assert_eq!(t.bind_if_absent(1, &name("a"), 0).as_ref(), "a");
    assert_eq!(t.get(1, 10), Lookup::Bound(name("a")));
    assert_eq!(t.sessions_bound("a"), 1);
}

#[test]
fn first_binding_wins_a_race() {
    let t = MemoryStore::new(100, EXPIRY);
    assert_eq!(t.bind_if_absent(7, &name("a"), 0).as_ref(), "a");
    assert_eq!(t.bind_if_absent(7, &name("b"), 1).as_ref(), "a");
    assert_eq!(t.sessions_bound("a"), 1);
    assert_eq!(t.sessions_bound("b"), 0);
}

#[test]
fn idle_binding_expires_and_use_keeps_it_alive() {
    let t = MemoryStore::new(100, EXPIRY);
    t.bind_if_absent(1, &name("a"), 0);
    t.bind_if_absent(2, &name("a"), 0);
    for now in (50..=400).step_by(50) {
        assert_eq!(t.get(1, now), Lookup::Bound(name("a")), "used every 50 s: alive at {now}");
    }
    assert_eq!(t.get(2, 400), Lookup::Expired);
    assert_eq!(t.get(2, 401), Lookup::Missing);
    t.sync();
    assert_eq!(t.sessions_bound("a"), 1, "the expired binding is no longer counted");
}

#[test]
fn busy_binding_still_expires_at_max_lifetime() {
    let t = MemoryStore::new(100, EXPIRY);
    t.bind_if_absent(1, &name("a"), 0);
    let mut now = 0;
    while now < 1000 {
        now += 90;
        if now < 1000 {
            assert!(matches!(t.get(1, now), Lookup::Bound(_)));
        }
    }
    assert_eq!(t.get(1, 1000), Lookup::Expired);
}

#[test]
fn rebind_moves_the_count() {
    let t = MemoryStore::new(100, EXPIRY);
    t.bind_if_absent(1, &name("a"), 0);
    t.rebind(1, &name("b"), 5);
    t.sync();
    assert_eq!(t.get(1, 6), Lookup::Bound(name("b")));
    assert_eq!(t.sessions_bound("a"), 0);
    assert_eq!(t.sessions_bound("b"), 1);
}

#[test]
fn expired_binding_is_replaced_by_bind_if_absent() {
    let t = MemoryStore::new(100, EXPIRY);
    t.bind_if_absent(1, &name("a"), 0);
    assert_eq!(t.bind_if_absent(1, &name("b"), 500).as_ref(), "b");
    t.sync();
    assert_eq!(t.sessions_bound("a"), 0);
    assert_eq!(t.sessions_bound("b"), 1);
}

#[test]
fn ten_times_capacity_keeps_the_table_at_capacity() {
    let cap = 1000;
    let t = MemoryStore::new(cap, EXPIRY);
    let a = name("a");
    for k in 0..(10 * cap as u128) {
        t.bind_if_absent(k, &a, 0);
    }
    t.sync();
    assert!(t.len() <= cap, "{} entries", t.len());
    assert!(t.len() >= cap * 9 / 10, "{} entries: evicts only what it must", t.len());
    assert_eq!(t.sessions_bound("a"), t.len(), "the count follows evictions exactly");
}

#[test]
fn clear_forgets_everything_and_zeroes_counts() {
    let t = MemoryStore::new(100, EXPIRY);
    for k in 0..10 {
        t.bind_if_absent(k, &name("a"), 0);
    }
    assert_eq!(t.list(3).len(), 3);
    t.clear();
    assert_eq!(t.len(), 0);
    assert_eq!(t.sessions_bound("a"), 0);
}

#[test]
fn moka_removes_a_binding_a_grace_after_its_window() {
    const S: fn(u64) -> Duration = Duration::from_secs;
    let grace = S(5);
    let policy = |idle_timeout, max_lifetime| Expiry { idle_timeout, max_lifetime };
    // (policy, time since the entry was written, how long moka keeps it from now)
    let cases = [
        (policy(100, 1000), S(0), Some(S(105))),
        (policy(100, 1000), S(950), Some(S(55))),
        (policy(100, 1000), S(1000), Some(S(5))),
        (policy(100, 1000), S(4000), Some(S(5))),
        (policy(100, 0), S(4000), Some(S(105))),
        (policy(0, 1000), S(10), Some(S(995))),
        (policy(0, 0), S(10), None),
    ];
    for (p, age, want) in cases {
        assert_eq!(Backstop::window(p, age, grace), want, "{p:?} written {age:?} ago");
    }
}

/// Waits (up to 20 s, for a loaded machine) until `done` holds; whether it did.
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

#[test]
fn a_binding_past_its_lifetime_stops_counting_without_a_lookup() {
    // Idle for up to a minute but living one second: only moka's clock can end it, as
    // nobody asks for the key again.
    let t =
        MemoryStore::with_grace(100, Expiry { idle_timeout: 60, max_lifetime: 1 }, Duration::ZERO);
    t.bind_if_absent(1, &name("a"), 0);
    assert_eq!(t.sessions_bound("a"), 1);
    assert!(eventually(|| t.sessions_bound("a") == 0), "still counted: {}", t.sessions_bound("a"));
    assert_eq!(t.len(), 0);
}

#[test]
fn a_longer_window_after_a_reload_keeps_existing_bindings() {
    let short = Expiry { idle_timeout: 1, max_lifetime: 0 };
    let kept = MemoryStore::with_grace(100, short, Duration::ZERO);
    let control = MemoryStore::with_grace(100, short, Duration::ZERO);
    kept.bind_if_absent(1, &name("a"), 0);
    control.bind_if_absent(1, &name("a"), 0);
    kept.set_expiry(Expiry { idle_timeout: 600, max_lifetime: 0 });
    assert!(eventually(|| control.sessions_bound("a") == 0), "the control's binding never went");
    assert_eq!(kept.sessions_bound("a"), 1, "the binding made under the old window was removed");
}
