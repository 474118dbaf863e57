//! Header maps reused on the thread that serves them. Every HTTP/1.1 request builds two
//! `HeaderMap`s (the request's, the response's), each two allocations, and drops them once
//! their heads are written; a map given back here is cleared, keeping its memory, and the
//! next head of the same thread is read into it. The thread keeps at most [`KEPT`] maps of
//! at most [`MAX_ENTRIES`] entries: a map grown by an unusually large head is dropped.

use std::cell::RefCell;

use http::HeaderMap;

/// Maps kept per thread: enough for the heads of one batch of requests, a few hundred KB at most.
const KEPT: usize = 64;

/// A map with room for more entries than this is not kept (32 lines is four times the
/// headers of a usual request or response).
const MAX_ENTRIES: usize = 32;

thread_local! {
    static KEPT_MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map with room for `entries` without growing: one given back on this thread when
/// there is one, else a new one.
pub fn take(entries: usize) -> HeaderMap {
    let kept = KEPT_MAPS.try_with(|maps| maps.try_borrow_mut().ok()?.pop()).ok().flatten();
    match kept {
        Some(mut map) => {
            map.reserve(entries);
            map
        }
        None => HeaderMap::with_capacity(entries),
    }
}

/// Gives `map` back for the next [`take`] on this thread (cleared here), or drops it when
/// it is large or the thread keeps enough.
pub fn give(mut map: HeaderMap) {
    if map.capacity() > MAX_ENTRIES || map.capacity() == 0 {
        return;
    }
    // Drops the values now: those that share a head's bytes release them.
    map.clear();
    let _ = KEPT_MAPS.try_with(|maps| {
        if let Ok(mut maps) = maps.try_borrow_mut() {
            if maps.len() < KEPT {
                maps.push(map);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn a_map_given_back_is_taken_again_empty_with_its_room() {
        let mut map = take(8);
        let room = map.capacity();
        map.insert("a", HeaderValue::from_static("1"));
        map.append("b", HeaderValue::from_static("2"));
        map.append("b", HeaderValue::from_static("3"));
        give(map);
        let again = take(8);
        assert!(again.is_empty(), "{again:?}");
        assert_eq!(again.capacity(), room, "not the same map, or it lost its room");
        assert_eq!(KEPT_MAPS.with_borrow(Vec::len), 0, "taken, so no longer kept");
        give(again);
    }

    #[test]
    fn a_taken_map_has_the_room_asked_for() {
        give(HeaderMap::with_capacity(4));
        for entries in [1, 4, 12, 30] {
            let map = take(entries);
            assert!(map.capacity() >= entries, "{entries}: {}", map.capacity());
            give(map);
        }
    }

    #[test]
    fn large_maps_are_dropped_and_the_thread_keeps_a_bounded_number() {
        let large = HeaderMap::with_capacity(MAX_ENTRIES * 2);
        assert!(large.capacity() > MAX_ENTRIES);
        give(large);
        let taken = take(1);
        assert!(taken.capacity() <= MAX_ENTRIES, "a large map was kept");
        for _ in 0..KEPT * 2 {
            give(HeaderMap::with_capacity(4));
        }
        assert_eq!(KEPT_MAPS.with_borrow(Vec::len), KEPT);
        KEPT_MAPS.with_borrow_mut(Vec::clear);
    }
}
