use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::server::ServerState;

pub(super) fn members(weights: &[u32]) -> Vec<Member> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| Member { state: Arc::new(ServerState::new(format!("s{i}"))), weight: w })
        .collect()
}

const ALL: [Algorithm; 8] = [
    Algorithm::RoundRobin,
    Algorithm::LeastConn,
    Algorithm::Random,
    Algorithm::P2c,
    Algorithm::First,
    Algorithm::Hash,
    Algorithm::Maglev,
    Algorithm::LeastTime,
];

fn counts(b: &dyn Balancer, n: usize, picks: usize, usable: &dyn Fn(usize) -> bool) -> Vec<usize> {
    let mut c = vec![0; n];
    for _ in 0..picks {
        c[b.pick(usable).expect("a usable member")] += 1;
    }
    c
}

#[test]
fn round_robin_weights_1_1_2_give_exact_proportions() {
    let m = members(&[1, 1, 2]);
    let b = build(Algorithm::RoundRobin, &m);
    assert_eq!(counts(b.as_ref(), 3, 400, &|_| true), vec![100, 100, 200]);
}

#[test]
fn round_robin_interleaves_5_1_1_like_nginx() {
    let m = members(&[5, 1, 1]);
    assert_eq!(round_robin::smooth_sequence(&m), vec![0, 0, 1, 0, 2, 0, 0]);
}

#[test]
fn round_robin_equal_weights_never_repeat_a_server() {
    let m = members(&[1, 1, 1]);
    let b = build(Algorithm::RoundRobin, &m);
    let mut last = usize::MAX;
    for _ in 0..300 {
        let i = b.pick(&|_| true).unwrap();
        assert_ne!(i, last);
        last = i;
    }
}

#[test]
fn round_robin_spreads_a_down_servers_share_evenly() {
    let m = members(&[1, 1, 1]);
    let b = build(Algorithm::RoundRobin, &m);
    let c = counts(b.as_ref(), 3, 600, &|i| i != 1);
    assert_eq!(c[1], 0);
    assert!(c[0].abs_diff(c[2]) <= 2, "{c:?}");
}

#[test]
fn round_robin_reduces_weights_by_their_gcd() {
    let m = members(&[200, 100]);
    assert_eq!(round_robin::smooth_sequence(&m).len(), 3);
}

#[test]
fn least_conn_avoids_the_busiest_server() {
    let m = members(&[1, 1, 1]);
    let _busy: Vec<_> = (0..5).map(|_| m[1].state.begin()).collect();
    let _one = m[0].state.begin();
    let b = build(Algorithm::LeastConn, &m);
    for _ in 0..50 {
        assert_eq!(b.pick(&|_| true), Some(2));
    }
}

#[test]
fn least_conn_honours_weight() {
    let m = members(&[3, 1]);
    let _a: Vec<_> = (0..2).map(|_| m[0].state.begin()).collect();
    let _b = m[1].state.begin();
    // (2+1)/3 = 1 < (1+1)/1 = 2: the heavier server still wins.
    assert_eq!(build(Algorithm::LeastConn, &m).pick(&|_| true), Some(0));
}

#[test]
fn least_conn_rotates_ties() {
    let m = members(&[1, 1, 1]);
    let b = build(Algorithm::LeastConn, &m);
    assert_eq!(counts(b.as_ref(), 3, 300, &|_| true), vec![100, 100, 100]);
}

#[test]
fn p2c_prefers_the_less_loaded_of_two() {
    let m = members(&[1, 1]);
    let _busy: Vec<_> = (0..3).map(|_| m[0].state.begin()).collect();
    let b = build_seeded(Algorithm::P2c, &m, SplitMix::seeded(3));
    for _ in 0..50 {
        assert_eq!(b.pick(&|_| true), Some(1));
    }
}

#[test]
fn random_follows_weights() {
    let m = members(&[1, 3]);
    let b = build_seeded(Algorithm::Random, &m, SplitMix::seeded(42));
    let c = counts(b.as_ref(), 2, 40_000, &|_| true);
    let share = c[1] as f64 / 40_000.0;
    assert!((0.72..0.78).contains(&share), "{c:?}");
}

#[test]
fn first_takes_the_first_usable() {
    let m = members(&[1, 1, 1]);
    let b = build(Algorithm::First, &m);
    assert_eq!(b.pick(&|_| true), Some(0));
    assert_eq!(b.pick(&|i| i > 0), Some(1));
}

#[test]
fn no_algorithm_picks_when_nothing_is_usable() {
    let m = members(&[1, 2, 3]);
    for a in ALL {
        let b = build(a, &m);
        assert_eq!(b.pick(&|_| false), None, "{a:?}");
        assert_eq!(b.pick_key(42, &|_| false), None, "{a:?}");
    }
    for a in ALL {
        assert_eq!(build(a, &[]).pick_key(42, &|_| true), None, "{a:?} over no servers");
    }
}

#[test]
fn algorithm_names_round_trip() {
    for a in ALL {
        assert_eq!(Algorithm::parse(a.as_str()), Some(a));
    }
    assert_eq!(Algorithm::parse("ketama"), None);
}

#[test]
fn only_hash_and_maglev_need_a_key() {
    let keyed: Vec<Algorithm> = ALL.into_iter().filter(|a| a.keyed()).collect();
    assert_eq!(keyed, [Algorithm::Hash, Algorithm::Maglev]);
}

#[test]
fn key_hash_is_fixed_across_instances_and_versions() {
    // Changing these values remaps every key of every deployment: don't.
    assert_eq!(key_hash(b"10.0.0.1"), 0xdc9c_7b4b_6203_0973);
    assert_ne!(key_hash(b"10.0.0.1"), key_hash(b"10.0.0.2"));
}

#[test]
fn keyed_algorithms_send_a_key_to_one_server_and_the_others_ignore_it() {
    let m = members(&[1, 1, 1]);
    for a in ALL {
        let b = build_seeded(a, &m, SplitMix::seeded(1));
        let first = b.pick_key(7, &|_| true);
        let same = (0..30).all(|_| b.pick_key(7, &|_| true) == first);
        assert_eq!(same, a.keyed() || a == Algorithm::First, "{a:?}");
    }
}

#[test]
fn hash_balance_factor_reaches_the_ring() {
    let m = members(&[1, 1]);
    let hot = key_hash(b"hot");
    let plain = build_with(Algorithm::Hash, &m, &Options { hash_balance_factor: 0 });
    let home = plain.pick_key(hot, &|_| true).expect("a usable member");
    let _held: Vec<_> = (0..10).map(|_| m[home].state.begin()).collect();
    assert_eq!(plain.pick_key(hot, &|_| true), Some(home), "no bound: the key stays");
    let bounded = build_with(Algorithm::Hash, &m, &Options::default());
    assert_eq!(bounded.pick_key(hot, &|_| true), Some(1 - home), "bound: the key spills");
}

proptest! {
    #[test]
    fn no_algorithm_ever_picks_an_unusable_server(
        weights in proptest::collection::vec(1u32..=MAX_WEIGHT, 1..12),
        mask in any::<u16>(),
        seed in any::<u64>(),
    ) {
        let m = members(&weights);
        let usable = |i: usize| mask & (1 << i) != 0;
        let any_usable = (0..m.len()).any(usable);
        for a in ALL {
            let b = build_seeded(a, &m, SplitMix::seeded(seed));
            for k in 0..50u64 {
                let key = seed.wrapping_add(k);
                for picked in [b.pick(&usable), b.pick_key(key, &usable)] {
                    match picked {
                        Some(i) => prop_assert!(usable(i), "{a:?} picked unusable {i}"),
                        None => prop_assert!(!any_usable, "{a:?} found nothing among usable"),
                    }
                }
            }
        }
    }

    #[test]
    fn round_robin_period_gives_exact_weight_shares(
        weights in proptest::collection::vec(1u32..=16, 1..8),
    ) {
        let m = members(&weights);
        let seq = round_robin::smooth_sequence(&m);
        let g = weights.iter().copied().fold(0, |a, b| { let (mut x, mut y) = (a, b); while y != 0 { (x, y) = (y, x % y); } x });
        let mut c = vec![0u32; weights.len()];
        for &i in &seq { c[i as usize] += 1; }
        for (i, &w) in weights.iter().enumerate() {
            prop_assert_eq!(c[i], w / g);
        }
    }
}
