//! Values kept across reloads while what they were built from is unchanged: each build of
//! a snapshot takes what it can from the previous generation's store and records what the
//! next build may reuse; what a build did not ask for is dropped with the old generation.

use std::collections::HashMap;
use std::hash::Hash;

/// A store of values by name, each with the key it was built from.
#[derive(Debug)]
pub(super) struct Kept<N, K, V> {
    prev: HashMap<N, (K, V)>,
    next: HashMap<N, (K, V)>,
}

impl<N, K, V> Default for Kept<N, K, V> {
    fn default() -> Self {
        Self { prev: HashMap::new(), next: HashMap::new() }
    }
}

impl<N: Hash + Eq + Clone, K: PartialEq, V: Clone> Kept<N, K, V> {
    /// The value of `name`: the previous generation's when it was built from an equal
    /// `key`, else `make()`; either way kept for the next build.
    pub(super) fn get(&mut self, name: &N, key: K, make: impl FnOnce(&K) -> V) -> V {
        let value = match self.prev.get(name) {
            Some((k, v)) if *k == key => v.clone(),
            _ => make(&key),
        };
        self.next.insert(name.clone(), (key, value.clone()));
        value
    }

    /// Ends a build: what it asked for becomes what the next build may reuse.
    pub(super) fn commit(&mut self) {
        self.prev = std::mem::take(&mut self.next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_kept_while_its_key_is_unchanged_and_dropped_when_not_asked_for() {
        let mut store: Kept<&str, u32, std::sync::Arc<u32>> = Kept::default();
        let a = store.get(&"a", 1, |k| (*k * 10).into());
        let b = store.get(&"b", 2, |k| (*k * 10).into());
        store.commit();
        // (case, name, key, kept from the previous build)
        let rows = [("same key: kept", "a", 1, Some(&a)), ("new key: rebuilt", "b", 3, None)];
        for (case, name, key, kept) in rows {
            let got = store.get(&name, key, |k| (*k * 10).into());
            assert_eq!(
                kept.is_some_and(|k| std::sync::Arc::ptr_eq(k, &got)),
                kept.is_some(),
                "{case}"
            );
        }
        store.commit();
        store.commit();
        let again = store.get(&"a", 1, |k| (*k * 10).into());
        assert!(!std::sync::Arc::ptr_eq(&again, &a), "not asked for in a build: dropped");
        drop(b);
    }
}
