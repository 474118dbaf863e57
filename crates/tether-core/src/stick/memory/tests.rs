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
