use codec::memcomparable::encode_bytes;
use proto::metapb::{PeerRole, RegionEpoch};

use super::*;
use crate::operator::OpStatus;
use crate::region_dir::RegionFlow;
use crate::scheduler::{StoreHealth, StoreSnap};

/// The encoded key of raw key `raw` in raw-mode keyspace 0 (`r\0\0\0` + `raw`).
fn key(raw: &str) -> Vec<u8> {
    encode_bytes(&[b"r\0\0\0", raw.as_bytes()].concat())
}

/// The encoded bounds of raw-mode keyspace 0.
fn keyspace_bounds() -> (Vec<u8>, Vec<u8>) {
    (encode_bytes(b"r\0\0\0"), encode_bytes(b"r\0\0\x01"))
}

/// Region `id` over `[start, end)` with voters on `stores` (peer ids `id * 10 + store`), the
/// first one leading; seen at its version at time 0, of `size` bytes and as many keys.
fn region(id: u64, start: &[u8], end: &[u8], stores: &[u64], size: u64) -> RegionInfo {
    let peers: Vec<Peer> = stores
        .iter()
        .map(|&s| Peer {
            id: id * 10 + s,
            store_id: s,
            role: PeerRole::Voter as i32,
            is_witness: false,
        })
        .collect();
    let r = Region {
        id,
        start_key: start.to_vec(),
        end_key: end.to_vec(),
        region_epoch: Some(RegionEpoch {
            conf_ver: 5,
            version: 7,
        }),
        peers: peers.clone(),
    };
    RegionInfo {
        approximate_size: size,
        approximate_keys: size,
        version_seen_ms: Some(0),
        ..RegionInfo::new(r, peers.first().copied())
    }
}

fn snap(stores: &[u64], regions: &[RegionInfo]) -> ClusterSnapshot {
    let stores = stores
        .iter()
        .map(|&id| StoreSnap {
            id,
            health: StoreHealth::Up,
            add_peer_tokens: 10,
            remove_peer_tokens: 10,
            ..Default::default()
        })
        .collect();
    let regions = regions
        .iter()
        .map(|r| RegionSnap {
            info: r.clone(),
            has_operator: false,
            is_hot: false,
            pending_steps: Vec::new(),
        })
        .collect();
    ClusterSnapshot { stores, regions }
}

/// Rules: 3 replicas, sources below 100 bytes and keys, 60 s interval, split unknown.
fn rules() -> MergeRules {
    MergeRules {
        max_replicas: 3,
        region_size_bytes_max: 100,
        region_keys_max: 100,
        split_size_bytes: 0,
        split_keys: 0,
        split_merge_interval_ms: 60_000,
        hot_byte_rate_min_per_sec: 1_000,
    }
}

/// Four regions tiling keyspace `r\0\0\0`: a, b, c, d with the given sizes, on stores 1-3.
fn four(sizes: [u64; 4]) -> Vec<RegionInfo> {
    let (lo, hi) = keyspace_bounds();
    let bounds = [lo, key("b"), key("c"), key("d"), hi];
    (0..4)
        .map(|i| {
            region(
                10 + i as u64,
                &bounds[i],
                &bounds[i + 1],
                &[1, 2, 3],
                sizes[i],
            )
        })
        .collect()
}

/// (source, target) region ids of each merge planned.
fn pairs(merges: &[(Operator, Operator)]) -> Vec<(u64, u64)> {
    merges
        .iter()
        .map(|(s, t)| (s.region_id, t.region_id))
        .collect()
}

#[test]
fn keyspace_ranges_bound_merges() {
    let (lo, hi) = keyspace_bounds();
    let a = region(1, &lo, &key("m"), &[1], 0);
    let b = region(2, &key("m"), &hi, &[1], 0);
    assert!(same_keyspace(&a.region, &b.region));
    assert_eq!(check_pair(&a.region, &b.region), Ok(()));
    assert_eq!(check_pair(&b.region, &a.region), Ok(()), "either way round");
    assert_eq!(
        check_pair(&a.region, &a.region),
        Err(MergeRefusal::SameRegion)
    );
    // Across the pre-split boundary r\0\0\1: refused.
    let next = region(3, &hi, &encode_bytes(b"r\0\0\x02"), &[1], 0);
    assert_eq!(
        check_pair(&b.region, &next.region),
        Err(MergeRefusal::DifferentKeyspaces)
    );
    // The regions outside every keyspace, and a region reaching +inf, never merge.
    let before = region(4, b"", &lo, &[1], 0);
    assert_eq!(
        check_pair(&before.region, &a.region),
        Err(MergeRefusal::DifferentKeyspaces)
    );
    let tail = region(5, &key("m"), b"", &[1], 0);
    assert_eq!(
        check_pair(&a.region, &tail.region),
        Err(MergeRefusal::DifferentKeyspaces)
    );
    assert_eq!(
        check_pair(&a.region, &next.region),
        Err(MergeRefusal::NotAdjacent)
    );
    // A boundary key that is not a memcomparable key does not name a keyspace.
    let odd = region(6, &lo, b"r\0\0\0zz", &[1], 0);
    let odd_next = region(7, b"r\0\0\0zz", &hi, &[1], 0);
    assert!(!same_keyspace(&odd.region, &odd_next.region));
}

#[test]
fn checker_merges_a_small_region_into_its_smaller_neighbour() {
    let regions = four([500, 30, 10, 20]);
    let s = snap(&[1, 2, 3], &regions);
    let merges = check_merge(&s, &rules(), 60_000, 8);
    // b (30) goes into c (10, smaller than a, which is too big anyway); d's only neighbour,
    // c, is taken: one merge per region per run.
    assert_eq!(pairs(&merges), vec![(11, 12)]);
    let (source, target) = &merges[0];
    assert_eq!(source.name, MERGE_REGION);
    assert_eq!(
        source.steps,
        vec![Step::Merge {
            target: regions[2].region.clone()
        }],
        "already on the same stores: nothing to move"
    );
    assert_eq!(target.steps, vec![Step::MergeTarget { source_id: 11 }]);
    assert_eq!(source.merge_partner(), Some(12));
    assert_eq!(target.merge_partner(), Some(11));
    assert!(source.is_merge_source() && !target.is_merge_source());
    assert_eq!(check_merge(&s, &rules(), 60_000, 0).len(), 0, "limit");
}

#[test]
fn checker_leaves_young_busy_unhealthy_and_big_regions_alone() {
    let rules = rules();
    let regions = four([500, 30, 10, 500]);
    let none = |regions: &[RegionInfo], now_ms: u64| {
        let merges = check_merge(&snap(&[1, 2, 3], regions), &rules, now_ms, 8);
        assert_eq!(pairs(&merges), vec![], "{regions:?}");
    };
    none(&regions, 59_999);
    let mut young = regions.clone();
    young[2].version_seen_ms = Some(30_000);
    none(&young, 60_000);
    let mut unseen = regions.clone();
    unseen[1].version_seen_ms = None;
    none(&unseen, 60_000);
    let mut pending = regions.clone();
    pending[2].pending_peers = vec![pending[2].region.peers[1]];
    none(&pending, 60_000);
    let mut leaderless = regions.clone();
    leaderless[1].leader = None;
    none(&leaderless, 60_000);
    let mut two_replicas = regions.clone();
    two_replicas[2].region.peers.pop();
    none(&two_replicas, 60_000);
    let mut many_keys = regions.clone();
    many_keys[1].approximate_keys = 100;
    many_keys[2].approximate_keys = 100;
    none(&many_keys, 60_000);
    // Hot (1,000 bytes a second or more): load split made it small for its traffic. Just
    // below the threshold it merges (the control at the end shows the rest).
    for (read, written, merges) in [(10_000, 0, 0), (0, 10_000, 0), (9_990, 9_990, 1)] {
        let mut hot = regions.clone();
        hot[1].flow = RegionFlow {
            read_bytes: read,
            written_bytes: written,
            interval_secs: 10,
            ..RegionFlow::default()
        };
        let found = check_merge(&snap(&[1, 2, 3], &hot), &rules, 60_000, 8);
        assert_eq!(found.len(), merges, "read {read} written {written}");
    }
    let mut busy = snap(&[1, 2, 3], &regions);
    busy.regions[2].has_operator = true;
    assert_eq!(check_merge(&busy, &rules, 60_000, 8).len(), 0);
    let mut down = snap(&[1, 2, 3], &regions);
    down.stores[2].health = StoreHealth::Disconnected;
    assert_eq!(check_merge(&down, &rules, 60_000, 8).len(), 0);
    // The control: all well, b and c merge.
    let ok = check_merge(&snap(&[1, 2, 3], &regions), &rules, 60_000, 8);
    assert_eq!(pairs(&ok), vec![(11, 12)]);
}

#[test]
fn checker_keeps_the_joined_region_below_the_split_thresholds() {
    let regions = four([500, 60, 90, 500]);
    let s = snap(&[1, 2, 3], &regions);
    // Unknown split thresholds: the target must be small too (90 < 100): c into b or b into
    // c, whichever comes first as a source.
    assert_eq!(pairs(&check_merge(&s, &rules(), 60_000, 8)), vec![(11, 12)]);
    // Known: 60 + 90 must stay below them.
    let known = |split: u64| MergeRules {
        split_size_bytes: split,
        split_keys: split,
        ..rules()
    };
    assert_eq!(check_merge(&s, &known(150), 60_000, 8).len(), 0);
    assert_eq!(
        pairs(&check_merge(&s, &known(151), 60_000, 8)),
        vec![(11, 12)]
    );
    // With room for it, a small region may join a big neighbour, the smaller one first.
    assert_eq!(
        pairs(&check_merge(&s, &known(1_000), 60_000, 8)),
        vec![(11, 12)]
    );
    let big = snap(&[1, 2, 3], &four([500, 60, 400, 500]));
    assert_eq!(
        pairs(&check_merge(&big, &known(1_000), 60_000, 8)),
        vec![(11, 12)]
    );
    let bigger = snap(&[1, 2, 3], &four([400, 60, 500, 500]));
    assert_eq!(
        pairs(&check_merge(&bigger, &known(1_000), 60_000, 8)),
        vec![(11, 10)]
    );
}

#[test]
fn a_source_moves_onto_the_targets_stores_leader_last_then_merges() {
    let (lo, hi) = keyspace_bounds();
    let mid = key("m");
    // Source on 1, 2, 3 led by the peer on 1; target on 2, 4, 5.
    let source = region(1, &lo, &mid, &[1, 2, 3], 10);
    let target = region(2, &mid, &hi, &[2, 4, 5], 10);
    let s = snap(&[1, 2, 3, 4, 5], &[source.clone(), target.clone()]);
    let (op, hold) = merge_operators(&source, &target, &s, 3).unwrap();
    assert_eq!(hold.steps, vec![Step::MergeTarget { source_id: 1 }]);
    let expected = vec![
        Step::AddLearner {
            store_id: 4,
            peer_id: 0,
        },
        Step::PromoteLearner {
            store_id: 4,
            peer_id: 0,
        },
        Step::RemovePeer {
            store_id: 3,
            peer_id: 13,
        },
        Step::AddLearner {
            store_id: 5,
            peer_id: 0,
        },
        Step::PromoteLearner {
            store_id: 5,
            peer_id: 0,
        },
        // The leader's peer goes last, the leadership to the peer that stays (store 2).
        Step::TransferLeader {
            store_id: 2,
            peer_id: 12,
        },
        Step::RemovePeer {
            store_id: 1,
            peer_id: 11,
        },
        Step::Merge {
            target: target.region.clone(),
        },
    ];
    assert_eq!(op.steps, expected);
    // No peer in common: the leadership goes to the learner just promoted, whose id is
    // filled in with it.
    let far = region(2, &mid, &hi, &[4, 5, 6], 10);
    let s = snap(&[1, 2, 3, 4, 5, 6], &[source.clone(), far.clone()]);
    let (mut op, _) = merge_operators(&source, &far, &s, 3).unwrap();
    let mut next = 100;
    op.assign_peer_ids(|| {
        next += 1;
        Ok(next)
    })
    .unwrap();
    let transfer = op
        .steps
        .iter()
        .find(|s| matches!(s, Step::TransferLeader { .. }))
        .unwrap();
    assert_eq!(
        *transfer,
        Step::TransferLeader {
            store_id: 6,
            peer_id: 103
        }
    );
    assert!(matches!(
        op.steps[op.steps.len() - 2],
        Step::RemovePeer {
            store_id: 1,
            peer_id: 11
        }
    ));
    // A source with a learner cannot be aligned step by step: refused.
    let mut odd = source.clone();
    odd.region.peers[2].role = PeerRole::Learner as i32;
    let refused = merge_operators(&odd, &target, &s, 3).unwrap_err();
    assert_eq!(refused.code(), "unhealthy");
}

#[test]
fn the_merge_step_is_sent_until_prepared_and_a_rollback_is_stale() {
    let (lo, hi) = keyspace_bounds();
    let mid = key("m");
    let source = region(1, &lo, &mid, &[1, 2, 3], 10);
    let target = region(2, &mid, &hi, &[1, 2, 3], 10);
    let s = snap(&[1, 2, 3], &[source.clone(), target.clone()]);
    let (op, hold) = merge_operators(&source, &target, &s, 3).unwrap();
    let merge_of = |status: OpStatus| match status {
        OpStatus::Running(Some(resp)) => resp.merge.and_then(|m| m.target),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        merge_of(op.advance(&source, 1, 1_000)),
        Some(target.region.clone())
    );
    // A pending peer: wait (PrepareMerge needs every peer caught up).
    let mut lagging = source.clone();
    lagging.pending_peers = vec![lagging.region.peers[1]];
    assert_eq!(op.advance(&lagging, 1, 1_000), OpStatus::Running(None));
    // PrepareMerge applied (version and conf_ver one up): the store carries the merge on;
    // the operator waits for the target's report.
    let mut prepared = source.clone();
    let epoch = prepared.region.region_epoch.as_mut().unwrap();
    epoch.version += 1;
    epoch.conf_ver += 1;
    assert_eq!(op.advance(&prepared, 2, 1_000), OpStatus::Running(None));
    // Split instead (version one up, conf_ver not): stale.
    let mut split = source.clone();
    split.region.region_epoch.as_mut().unwrap().version += 1;
    assert_eq!(op.advance(&split, 2, 1_000), OpStatus::Stale);
    // Rolled back (version one up again): the operator is stale.
    let mut rolled_back = prepared.clone();
    rolled_back.region.region_epoch.as_mut().unwrap().version += 1;
    assert_eq!(op.advance(&rolled_back, 3, 1_000), OpStatus::Stale);
    // Peers moved off the target's stores by someone else: stale.
    let mut moved = source.clone();
    moved.region.peers[2].store_id = 9;
    assert_eq!(op.advance(&moved, 3, 1_000), OpStatus::Stale);
    assert_eq!(op.advance(&source, 1_001, 1_000), OpStatus::Timeout);
    // The target's hold: nothing to send; done once its version grows (it took the source
    // over); stale on a membership change nobody planned.
    assert_eq!(hold.advance(&target, 1, 1_000), OpStatus::Running(None));
    let mut merged = target.clone();
    merged.region.start_key = lo.clone();
    merged.region.region_epoch.as_mut().unwrap().version = 9;
    assert_eq!(hold.advance(&merged, 2, 1_000), OpStatus::Finished);
    let mut reconfigured = target.clone();
    reconfigured.region.region_epoch.as_mut().unwrap().conf_ver += 1;
    assert_eq!(hold.advance(&reconfigured, 2, 1_000), OpStatus::Stale);
}
