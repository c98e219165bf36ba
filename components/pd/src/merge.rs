//! Region merge, PD's side: the merge checker ([`check_merge`]) and the two operators of one
//! merge ([`merge_operators`]), pure like every scheduler (no clock, no I/O, new peers carry
//! id 0).
//!
//! A merge joins a *source* region into an adjacent *target*. The source's operator first
//! moves the source's peers onto the target's stores (add learner → promote → transfer the
//! leadership away if needed → remove, one store at a time, so the source never has fewer
//! than `max_replicas` voters), then answers the source leader's heartbeats with
//! `merge: Merge { target }` until the source reports PrepareMerge applied (one version up);
//! the store carries the merge on from there (CommitMerge in the target: the target's range
//! then covers both and its report evicts the source from PD's directory, which ends both
//! operators). The target's operator is passive: it holds the target so
//! that no other operator changes it meanwhile.
//!
//! Which regions merge: both healthy (a leader, no down or pending peer, `max_replicas`
//! voters and nothing else, on up stores, no operator), both unchanged in version for
//! `split_merge_interval` (a region just split is not merged back at once), neither hot in
//! its leader's last report (load-based split made it small for its traffic), adjacent, within
//! one keyspace ([`same_keyspace`]: PD pre-splits at every keyspace boundary and a merge never
//! crosses one); the source small (size and keys below the merge thresholds) and the target
//! small enough that the joined region stays below the stores' split thresholds (when PD
//! knows them; else the target must be below the merge thresholds too). Of the two
//! neighbours, the smaller is the target.

use std::collections::HashSet;
use std::fmt;

use proto::metapb::{Peer, Region};

use crate::keyspace_group::keyspace_range;
use crate::operator::{Operator, Step};
use crate::region_dir::RegionInfo;
use crate::scheduler::{is_voter, ClusterSnapshot, RegionSnap};

/// The name of both operators of a merge (metrics, logs), as PD's `merge-region`.
pub const MERGE_REGION: &str = "merge-region";

/// The merge checker's thresholds, taken from PD's configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct MergeRules {
    /// Number of voters every region should have.
    pub max_replicas: usize,
    /// A source must be smaller than this (`max_merge_region_size_bytes`).
    pub region_size_bytes_max: u64,
    /// A source must hold fewer keys than this (`max_merge_region_keys`).
    pub region_keys_max: u64,
    /// The stores' split threshold in bytes, 0 when unknown (`region_max_size_bytes`).
    pub split_size_bytes: u64,
    /// The stores' split threshold in keys, 0 when unknown (`region_max_keys`).
    pub split_keys: u64,
    /// A region at a version PD first saw less than this long ago is left alone.
    pub split_merge_interval_ms: u64,
    /// A region whose leader last reported this many bytes a second of reads or writes or
    /// more is hot and left alone (`hot_region_byte_rate_min_per_sec`, whether or not the
    /// hot-region scheduler runs): load-based split cut it small for its traffic, and merging
    /// it back would undo that.
    pub hot_byte_rate_min_per_sec: u64,
}

impl Default for MergeRules {
    fn default() -> Self {
        MergeRules::from_config(&crate::PdConfig::default())
    }
}

impl MergeRules {
    /// The rules in `cfg`.
    pub fn from_config(cfg: &crate::PdConfig) -> Self {
        MergeRules {
            max_replicas: cfg.max_replicas,
            region_size_bytes_max: cfg.max_merge_region_size_bytes,
            region_keys_max: cfg.max_merge_region_keys,
            split_size_bytes: cfg.region_max_size_bytes,
            split_keys: cfg.region_max_keys,
            split_merge_interval_ms: cfg.split_merge_interval_secs.saturating_mul(1000),
            hot_byte_rate_min_per_sec: cfg.hot_region_byte_rate_min_per_sec,
        }
    }

    /// Whether `info`'s last reported traffic makes it hot.
    fn is_hot(&self, info: &RegionInfo) -> bool {
        crate::scheduler::is_hot(&info.flow, self.hot_byte_rate_min_per_sec)
    }

    /// Whether `info` is small enough to be merged away.
    fn is_small(&self, info: &RegionInfo) -> bool {
        info.approximate_size < self.region_size_bytes_max
            && info.approximate_keys < self.region_keys_max
    }

    /// Whether `source` joined into `target` stays below the split thresholds (each one
    /// known), else whether `target` is below the merge thresholds.
    fn fits(&self, source: &RegionInfo, target: &RegionInfo) -> bool {
        let below = |merged: u64, split_max: u64, target: u64, merge_max: u64| {
            if split_max == 0 {
                target < merge_max
            } else {
                merged < split_max
            }
        };
        let size = source
            .approximate_size
            .saturating_add(target.approximate_size);
        let keys = source
            .approximate_keys
            .saturating_add(target.approximate_keys);
        below(
            size,
            self.split_size_bytes,
            target.approximate_size,
            self.region_size_bytes_max,
        ) && below(
            keys,
            self.split_keys,
            target.approximate_keys,
            self.region_keys_max,
        )
    }

    /// Whether PD has seen `info` at its version for `split_merge_interval` by `now_ms`.
    fn is_settled(&self, info: &RegionInfo, now_ms: u64) -> bool {
        info.version_seen_ms
            .is_some_and(|t| now_ms.saturating_sub(t) >= self.split_merge_interval_ms)
    }
}

/// Why two regions cannot merge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MergeRefusal {
    /// Source and target are the same region.
    SameRegion,
    /// Neither region ends where the other starts.
    NotAdjacent,
    /// The regions lie in different keyspaces (or outside any): the merge would cross a
    /// boundary PD pre-splits at.
    DifferentKeyspaces,
    /// One region cannot take part now.
    Unhealthy {
        /// The region.
        region_id: u64,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl MergeRefusal {
    /// A short machine-readable name (the HTTP API's `reason`).
    pub fn code(&self) -> &'static str {
        match self {
            MergeRefusal::SameRegion => "same_region",
            MergeRefusal::NotAdjacent => "not_adjacent",
            MergeRefusal::DifferentKeyspaces => "different_keyspaces",
            MergeRefusal::Unhealthy { .. } => "unhealthy",
        }
    }
}

impl fmt::Display for MergeRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MergeRefusal::SameRegion => write!(f, "a region cannot merge into itself"),
            MergeRefusal::NotAdjacent => write!(f, "the regions are not adjacent"),
            MergeRefusal::DifferentKeyspaces => {
                write!(f, "the regions are not in the same keyspace")
            }
            MergeRefusal::Unhealthy { region_id, why } => write!(f, "region {region_id}: {why}"),
        }
    }
}

/// Whether `left` and `right` (adjacent, `left.end_key == right.start_key`) lie within one
/// keyspace: the range of raw keys that share the first 4 bytes of their boundary key.
pub fn same_keyspace(left: &Region, right: &Region) -> bool {
    let Some((_, lo, hi)) = keyspace_range(&right.start_key) else {
        return false;
    };
    left.start_key >= lo && !right.end_key.is_empty() && right.end_key <= hi
}

/// Checks that `source` and `target` are two adjacent regions of one keyspace.
pub fn check_pair(source: &Region, target: &Region) -> Result<(), MergeRefusal> {
    if source.id == target.id {
        return Err(MergeRefusal::SameRegion);
    }
    let (left, right) = if !source.end_key.is_empty() && source.end_key == target.start_key {
        (source, target)
    } else if !target.end_key.is_empty() && target.end_key == source.start_key {
        (target, source)
    } else {
        return Err(MergeRefusal::NotAdjacent);
    };
    if !same_keyspace(left, right) {
        return Err(MergeRefusal::DifferentKeyspaces);
    }
    Ok(())
}

/// Checks what any merge needs of `info`: a leader, exactly `max_replicas` peers, all voters
/// on up stores, none reported down. (The checker also wants no pending peer; a merge asked
/// over HTTP waits for them.)
fn check_member(
    info: &RegionInfo,
    snap: &ClusterSnapshot,
    max_replicas: usize,
) -> Result<(), MergeRefusal> {
    let why = if info.leader.is_none() {
        Some("no leader known")
    } else if info.region.peers.len() != max_replicas || !info.region.peers.iter().all(is_voter) {
        Some("not exactly max_replicas voters")
    } else if !info.region.peers.iter().all(|p| snap.is_up(p.store_id)) {
        Some("a peer's store is not up")
    } else if !info.down_peers.is_empty() {
        Some("a peer is down")
    } else {
        None
    };
    match why {
        Some(why) => Err(MergeRefusal::Unhealthy {
            region_id: info.region.id,
            why,
        }),
        None => Ok(()),
    }
}

/// The two operators merging `source` into `target`: the source's (align, then merge) and
/// the target's (passive). Regardless of size or age; see [`check_merge`] for those.
pub fn merge_operators(
    source: &RegionInfo,
    target: &RegionInfo,
    snap: &ClusterSnapshot,
    max_replicas: usize,
) -> Result<(Operator, Operator), MergeRefusal> {
    check_pair(&source.region, &target.region)?;
    check_member(source, snap, max_replicas)?;
    check_member(target, snap, max_replicas)?;
    let mut steps = align_steps(source, &target.region);
    steps.push(Step::Merge {
        target: target.region.clone(),
    });
    let hold = Step::MergeTarget {
        source_id: source.region.id,
    };
    Ok((
        Operator::new(source, MERGE_REGION, steps),
        Operator::new(target, MERGE_REGION, vec![hold]),
    ))
}

/// Steps moving `source`'s peers onto `target`'s stores, one store at a time (add a learner
/// there, promote it, remove a peer from a store the target does not use). The leader's peer
/// goes last, after handing the leadership to a peer that stays (or to the one just added).
/// Both regions have `max_replicas` voters on distinct stores: as many to add as to remove.
fn align_steps(source: &RegionInfo, target: &Region) -> Vec<Step> {
    let on = |r: &Region, store_id: u64| r.peers.iter().any(|p| p.store_id == store_id);
    let leads = |p: &Peer| source.leader.as_ref().is_some_and(|l| l.id == p.id);
    let adds = target
        .peers
        .iter()
        .map(|p| p.store_id)
        .filter(|s| !on(&source.region, *s));
    let mut victims: Vec<&Peer> = source
        .region
        .peers
        .iter()
        .filter(|p| !on(target, p.store_id))
        .collect();
    victims.sort_by_key(|p| (leads(p), p.store_id));
    let kept = source
        .region
        .peers
        .iter()
        .find(|p| on(target, p.store_id) && !source.pending_peers.iter().any(|q| q.id == p.id));
    let mut steps = Vec::new();
    for (store_id, victim) in adds.zip(victims) {
        steps.push(Step::AddLearner {
            store_id,
            peer_id: 0,
        });
        steps.push(Step::PromoteLearner {
            store_id,
            peer_id: 0,
        });
        if leads(victim) {
            // Peer id 0: the learner just added, filled in with it.
            let (store_id, peer_id) = kept.map_or((store_id, 0), |p| (p.store_id, p.id));
            steps.push(Step::TransferLeader { store_id, peer_id });
        }
        steps.push(Step::RemovePeer {
            store_id: victim.store_id,
            peer_id: victim.id,
        });
    }
    steps
}

/// Whether the store limits let `source` move onto `target`'s stores now.
fn has_tokens(source: &Region, target: &Region, snap: &ClusterSnapshot) -> bool {
    let on = |r: &Region, store_id: u64| r.peers.iter().any(|p| p.store_id == store_id);
    let adds_ok = target
        .peers
        .iter()
        .filter(|p| !on(source, p.store_id))
        .all(|p| {
            snap.store(p.store_id)
                .is_some_and(|s| s.add_peer_tokens > 0)
        });
    let removes_ok = source
        .peers
        .iter()
        .filter(|p| !on(target, p.store_id))
        .all(|p| {
            snap.store(p.store_id)
                .is_some_and(|s| s.remove_peer_tokens > 0)
        });
    adds_ok && removes_ok
}

/// Up to `ops_max` merges at `now_ms`, each a pair of operators (source's, target's); no
/// region is in two.
pub fn check_merge(
    snap: &ClusterSnapshot,
    rules: &MergeRules,
    now_ms: u64,
    ops_max: usize,
) -> Vec<(Operator, Operator)> {
    let mut order: Vec<&RegionSnap> = snap.regions.iter().collect();
    order.sort_by(|a, b| a.info.region.start_key.cmp(&b.info.region.start_key));
    let eligible = |r: &RegionSnap| {
        !r.has_operator
            && r.info.pending_peers.is_empty()
            && rules.is_settled(&r.info, now_ms)
            && !rules.is_hot(&r.info)
    };
    let mut used: HashSet<u64> = HashSet::new();
    let mut merges = Vec::new();
    for (i, source) in order.iter().enumerate() {
        if merges.len() >= ops_max {
            break;
        }
        let src = &source.info;
        if used.contains(&src.region.id) || !eligible(source) || !rules.is_small(src) {
            continue;
        }
        let neighbours = [i.checked_sub(1), i.checked_add(1)]
            .into_iter()
            .flatten()
            .filter_map(|j| order.get(j))
            .filter(|t| !used.contains(&t.info.region.id) && eligible(t))
            .filter(|t| rules.fits(src, &t.info) && has_tokens(&src.region, &t.info.region, snap));
        let best = neighbours
            .filter_map(|t| {
                let ops = merge_operators(src, &t.info, snap, rules.max_replicas).ok()?;
                Some((&t.info, ops))
            })
            .min_by_key(|(t, _)| (t.approximate_size, t.approximate_keys, t.region.id));
        if let Some((target, ops)) = best {
            used.insert(src.region.id);
            used.insert(target.region.id);
            merges.push(ops);
        }
    }
    merges
}

#[cfg(test)]
#[path = "merge_tests.rs"]
mod tests;
