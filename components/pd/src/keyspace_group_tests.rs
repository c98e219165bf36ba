//! The balance schedulers balance within each keyspace group (`keyspace_group.rs`).

use std::collections::HashMap;

use codec::memcomparable::encode_bytes;

use super::*;
use crate::keyspace_group::{region_group, KeyspaceGroup, OUTSIDE};
use crate::scheduler::group_tallies;

const RAW0: [u8; 4] = [b'r', 0, 0, 0];
const TXN0: [u8; 4] = [b'x', 0, 0, 0];

/// The encoded key `prefix` + `suffix`.
fn key(prefix: [u8; 4], suffix: &[u8]) -> Vec<u8> {
    let mut raw = prefix.to_vec();
    raw.extend_from_slice(suffix);
    encode_bytes(&raw)
}

/// Region `id`, the `i`-th of keyspace `prefix`, with voters on `stores` (the first leads).
fn keyspace_region(id: u64, prefix: [u8; 4], i: u8, stores: [u64; 3]) -> RegionInfo {
    let peers = stores
        .iter()
        .enumerate()
        .map(|(j, s)| peer(id * 10 + j as u64, *s, false))
        .collect();
    region(id, &key(prefix, &[i]), &key(prefix, &[i + 1]), peers, 0)
}

/// Six stores; 12 raw regions with all replicas on stores 1..=3 and 12 transactional ones on
/// 4..=6: every store holds 12 regions, each group sits on half the stores.
fn halves() -> Sim {
    let mut regions = Vec::new();
    for i in 0..12u8 {
        let lead = u64::from(i % 3);
        let raw = [1 + lead, 1 + (lead + 1) % 3, 1 + (lead + 2) % 3];
        regions.push(keyspace_region(u64::from(i) + 1, RAW0, i, raw));
        let txn = raw.map(|s| s + 3);
        regions.push(keyspace_region(u64::from(i) + 101, TXN0, i, txn));
    }
    Sim {
        stores: (1..=6)
            .map(|id| store_with(id, StoreHealth::Up, 0))
            .collect(),
        regions,
        next_peer_id: 1_000_000,
    }
}

/// Per group, the region (or leader) count of each store 1..=6.
fn per_group(sim: &Sim, leaders: bool) -> HashMap<KeyspaceGroup, [u64; 6]> {
    let mut out: HashMap<KeyspaceGroup, [u64; 6]> = HashMap::new();
    for r in &sim.regions {
        let counts = out.entry(region_group(&r.region)).or_default();
        if leaders {
            counts[r.leader.unwrap().store_id as usize - 1] += 1;
        } else {
            for p in &r.region.peers {
                counts[p.store_id as usize - 1] += 1;
            }
        }
    }
    out
}

#[test]
fn region_group_is_the_keyspace_the_whole_range_lies_in() {
    let r = |start: Vec<u8>, end: Vec<u8>| region(1, &start, &end, vec![], 0).region;
    assert_eq!(
        region_group(&r(key(RAW0, b""), key(RAW0, b"k"))),
        Some(RAW0)
    );
    let next = [b'r', 0, 0, 1];
    assert_eq!(
        region_group(&r(key(RAW0, b"k"), key(next, b""))),
        Some(RAW0)
    );
    assert_eq!(
        region_group(&r(key(TXN0, b"a"), key(TXN0, b"b"))),
        Some(TXN0)
    );
    // Before the first keyspace, spanning two, unbounded, not a keyspace mode, not encoded.
    assert_eq!(region_group(&r(vec![], key(RAW0, b""))), OUTSIDE);
    assert_eq!(region_group(&r(key(RAW0, b"k"), key(next, b"k"))), OUTSIDE);
    assert_eq!(region_group(&r(key(TXN0, b"k"), vec![])), OUTSIDE);
    let other = [b'q', 0, 0, 0];
    assert_eq!(region_group(&r(key(other, b""), key(other, b"k"))), OUTSIDE);
    assert_eq!(region_group(&r(b"a".to_vec(), b"b".to_vec())), OUTSIDE);
}

#[test]
fn group_tallies_count_running_operators_and_leave_the_rest_outside() {
    let mut s = halves().snapshot();
    // Region 1 (raw, on 1,2,3, led by 1) is being moved from store 1 to store 4.
    let r = s
        .regions
        .iter_mut()
        .find(|r| r.info.region.id == 1)
        .unwrap();
    r.has_operator = true;
    r.pending_steps = vec![
        Step::AddLearner {
            store_id: 4,
            peer_id: 0,
        },
        Step::TransferLeader {
            store_id: 2,
            peer_id: 11,
        },
        Step::RemovePeer {
            store_id: 1,
            peer_id: 10,
        },
    ];
    // Store totals as PD reports them (running operators done), and 2 more regions outside
    // the keyspaces on store 6.
    s.stores[0].region_count -= 1;
    s.stores[3].region_count += 1;
    s.stores[0].leader_count -= 1;
    s.stores[1].leader_count += 1;
    s.stores[5].region_count += 2;
    let t = group_tallies(&s);
    let raw = &t[&Some(RAW0)];
    assert_eq!((raw[&1].region_count, raw[&4].region_count), (11, 1));
    assert_eq!((raw[&1].leader_count, raw[&2].leader_count), (3, 5));
    assert_eq!(t[&Some(TXN0)][&4].region_count, 12);
    assert_eq!(t[&OUTSIDE][&6].region_count, 2);
    assert_eq!(t[&OUTSIDE][&1].region_count, 0);
    assert_eq!(t[&OUTSIDE][&1].leader_count, 0);
}

#[test]
fn balance_region_spreads_each_keyspace_over_all_stores_and_settles() {
    let mut sim = halves();
    // Overall counts are even: counting all regions together, nothing would move.
    assert!(sim.counts().iter().all(|c| *c == 12));
    sim.run_until_settled(4, 100);
    for (group, counts) in per_group(&sim, false) {
        assert_eq!(counts.iter().sum::<u64>(), 36);
        // 36 peers on 6 stores: 6 each, give or take the one region the tolerance allows.
        assert!(
            counts.iter().all(|c| (5..=7).contains(c)),
            "{group:?}: {counts:?}"
        );
    }
    assert!(sim.counts().iter().all(|c| (10..=14).contains(c)));
    // Settled: every group within the tolerance, nothing planned.
    assert!(balance_region(&sim.snapshot(), &rules(), 10).is_empty());
}

#[test]
fn balance_region_takes_the_widest_group_first() {
    let mut sim = halves();
    // Raw already spread over all six stores: only transactional regions move.
    for r in sim.regions.iter_mut().filter(|r| r.region.id <= 12) {
        let lead = (r.region.id - 1) % 6;
        for (j, p) in r.region.peers.iter_mut().enumerate() {
            p.store_id = 1 + (lead + j as u64 * 2) % 6;
        }
        r.leader = Some(r.region.peers[0]);
    }
    let ops = balance_region(&sim.snapshot(), &rules(), 4);
    assert!(!ops.is_empty());
    assert!(ops.iter().all(|o| o.region_id > 100), "{ops:?}");
}

#[test]
fn balance_leader_balances_each_keyspace() {
    // Every region has a voter on both halves; raw regions are led from 1..=3, transactional
    // ones from 4..=6: four leaders a store, all of one group.
    let mut sim = halves();
    for r in &mut sim.regions {
        let p = &mut r.region.peers[2];
        p.store_id = if p.store_id > 3 {
            p.store_id - 3
        } else {
            p.store_id + 3
        };
    }
    let leader_rounds = |sim: &mut Sim| {
        for round in 0..50 {
            let ops = balance_leader(&sim.snapshot(), 1, 4);
            if ops.is_empty() {
                return round;
            }
            ops.iter().for_each(|op| sim.apply(op));
        }
        panic!("balance-leader did not settle");
    };
    assert!(leader_rounds(&mut sim) > 0);
    for (group, counts) in per_group(&sim, true) {
        // 12 leaders on 6 stores, mean 2, tolerance 1.
        assert!(
            counts.iter().all(|c| (1..=3).contains(c)),
            "{group:?}: {counts:?}"
        );
    }
    let overall = sim
        .snapshot()
        .stores
        .iter()
        .map(|s| s.leader_count)
        .collect::<Vec<_>>();
    assert!(overall.iter().all(|c| (2..=6).contains(c)), "{overall:?}");
    assert_eq!(leader_rounds(&mut sim), 0, "settled");
}
