//! The merge half of [`Cluster`]: the periodic merge checker and the merges an operator asks
//! for over HTTP, each queued as the two operators of `merge.rs` (the source's, advanced on
//! the source's heartbeats, and the target's passive hold), and the rule that the two end
//! together: whichever ends first (finished, stale, timed out, or evicted from the directory
//! by the merged target's report) takes the other with it.

use super::schedule::Queued;
use super::{Cluster, Inner};
use crate::operator::Operator;
use crate::scheduler::{self, MergeRules};
use crate::{PdError, Result};

impl Cluster {
    /// Removes the operator of `region_id` and, when it is half of a merge, the other half.
    pub(super) fn end_operator(inner: &mut Inner, region_id: u64) -> Option<Operator> {
        let op = inner.operators.remove(&region_id)?;
        if let Some(partner) = op.merge_partner() {
            let paired = inner
                .operators
                .get(&partner)
                .is_some_and(|o| o.merge_partner() == Some(region_id));
            if paired {
                inner.operators.remove(&partner);
            }
        }
        Some(op)
    }

    /// Runs the merge checker once, within `merge_schedule_limit` running merges (0: off),
    /// the store limits and `operators_max` (a merge holds two operators); returns how many
    /// merges it queued. They start on the source regions' next heartbeats.
    pub fn run_merge_checker(&self, now_ms: u64) -> usize {
        let limit = self.cfg.merge_schedule_limit;
        if limit == 0 {
            return 0;
        }
        // Each merge adds at most max_replicas peers; their ids are reserved before the lock.
        if let Err(e) = self.ids.reserve((limit * self.cfg.max_replicas) as u64) {
            tracing::warn!(error = %e, "merge checker: no peer ids");
            return 0;
        }
        let mut inner = self.inner.lock();
        let running = inner
            .operators
            .values()
            .filter(|o| o.is_merge_source())
            .count();
        let room = self.cfg.operators_max.saturating_sub(inner.operators.len()) / 2;
        let limit = room.min(limit.saturating_sub(running));
        if !inner.bootstrapped || limit == 0 {
            return 0;
        }
        let snap = Self::snapshot(&mut inner, &self.cfg, now_ms, true);
        let rules = MergeRules::from_config(&self.cfg);
        let mut n = 0;
        for (source, target) in scheduler::check_merge(&snap, &rules, now_ms, limit) {
            match self.queue_merge(&mut inner, source, target, now_ms, false) {
                Queued::Yes => n += 1,
                Queued::NoTokens => {}
                // Another caller took the reserved ids; the next run plans again.
                Queued::NeedIds(_) => break,
            }
        }
        n
    }

    /// Queues a merge of `source_id` into `target_id`, two adjacent regions of one keyspace,
    /// whatever their sizes and ages (an operator's request, as PD's `merge-region`; the store
    /// limits do not hold it back). Both must be healthy and without an operator.
    pub fn add_merge_operator(&self, source_id: u64, target_id: u64, now_ms: u64) -> Result<()> {
        // The source gains at most max_replicas peers; their ids are reserved before the lock.
        self.ids.reserve(self.cfg.max_replicas as u64)?;
        let mut inner = self.inner.lock();
        Self::must_bootstrapped(&inner)?;
        let region = |id: u64| {
            let info = inner.regions.get(id).cloned();
            info.ok_or(PdError::RegionNotFound(id))
        };
        let (source, target) = (region(source_id)?, region(target_id)?);
        let refused = |reason| PdError::MergeRefused {
            source_id,
            target_id,
            reason,
        };
        scheduler::check_pair(&source.region, &target.region).map_err(refused)?;
        let busy = [source_id, target_id]
            .into_iter()
            .find(|id| inner.operators.contains_key(id));
        if let Some(id) = busy {
            return Err(PdError::Busy(format!(
                "region {id} already has an operator"
            )));
        }
        if inner.operators.len() + 2 > self.cfg.operators_max {
            return Err(PdError::Busy(format!(
                "{} operators running (operators_max)",
                inner.operators.len()
            )));
        }
        let snap = Self::snapshot(&mut inner, &self.cfg, now_ms, false);
        let (source_op, target_op) =
            scheduler::merge_operators(&source, &target, &snap, self.cfg.max_replicas)
                .map_err(refused)?;
        match self.queue_merge(&mut inner, source_op, target_op, now_ms, true) {
            Queued::Yes => Ok(()),
            Queued::NoTokens | Queued::NeedIds(_) => Err(PdError::Busy(
                "peer ids reserved for the merge were taken meanwhile; retry".into(),
            )),
        }
    }

    /// Queues the source's operator (ids, tokens) and, once it is, the target's.
    fn queue_merge(
        &self,
        inner: &mut Inner,
        source: Operator,
        mut target: Operator,
        now_ms: u64,
        force: bool,
    ) -> Queued {
        let queued = self.queue_operator(inner, source, now_ms, force);
        if queued == Queued::Yes {
            target.created_ms = now_ms;
            inner.operators.insert(target.region_id, target);
        }
        queued
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use codec::memcomparable::encode_bytes;
    use proto::metapb::{Peer, PeerRole, Region, RegionEpoch, Store};
    use proto::pdpb::{RegionHeartbeatRequest, RegionHeartbeatResponse, StoreStats};

    use super::*;
    use crate::meta_store::{MemMetaStore, MetaStore};
    use crate::scheduler::MergeRefusal;
    use crate::PdConfig;

    fn region(id: u64, start: &[u8], end: &[u8], version: u64) -> Region {
        Region {
            id,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            region_epoch: Some(RegionEpoch {
                conf_ver: 1,
                version,
            }),
            peers: (1..=3)
                .map(|s| Peer {
                    id: id * 10 + s,
                    store_id: s,
                    role: PeerRole::Voter as i32,
                    is_witness: false,
                })
                .collect(),
        }
    }

    fn must_heartbeat(c: &Cluster, r: &Region, now_ms: u64) -> Option<RegionHeartbeatResponse> {
        let req = RegionHeartbeatRequest {
            region: Some(r.clone()),
            leader: r.peers.first().copied(),
            term: 1,
            ..Default::default()
        };
        c.region_heartbeat(req, now_ms).unwrap()
    }

    fn must_store_heartbeats(c: &Cluster, now_ms: u64) {
        for store_id in 1..=3 {
            let stats = StoreStats {
                store_id,
                ..Default::default()
            };
            c.store_heartbeat(stats, now_ms).unwrap();
        }
    }

    /// Stores 1-3; regions 10..=15 tiling the keys at PD's pre-split boundaries, raw keyspace
    /// 0 in two halves (11 and 12), every region on the three stores, heartbeated at 1 s.
    fn cluster(cfg: PdConfig) -> (Cluster, Vec<Region>) {
        let meta: Arc<dyn MetaStore> = Arc::new(MemMetaStore::default());
        let c = Cluster::open(meta, cfg, 1_000).unwrap();
        let store = |id: u64| Store {
            id,
            address: format!("127.0.0.1:{}", 20160 + id),
            ..Default::default()
        };
        c.bootstrap(store(1), region(2, b"", b"", 1), 1_000)
            .unwrap();
        for id in 2..=3 {
            c.put_store(store(id), 1_000).unwrap();
        }
        let mut bounds = vec![Vec::new()];
        bounds.extend(codec::keys::keyspace_presplit_keys());
        bounds.insert(2, encode_bytes(b"r\0\0\0m"));
        bounds.push(Vec::new());
        let regions: Vec<Region> = bounds
            .windows(2)
            .zip(10..)
            .map(|(w, id)| region(id, &w[0], &w[1], 2))
            .collect();
        for r in &regions {
            assert_eq!(must_heartbeat(&c, r, 1_000), None, "{r:?}");
        }
        (c, regions)
    }

    #[test]
    fn a_merge_asked_for_is_sent_to_the_source_until_the_target_covers_it() {
        let (c, regions) = cluster(PdConfig::default());
        let refused = |source, target| match c.add_merge_operator(source, target, 2_000) {
            Err(PdError::MergeRefused { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(refused(11, 13), MergeRefusal::NotAdjacent);
        assert_eq!(refused(10, 11), MergeRefusal::DifferentKeyspaces);
        assert_eq!(refused(12, 13), MergeRefusal::DifferentKeyspaces);
        assert!(matches!(
            c.add_merge_operator(11, 99, 2_000),
            Err(PdError::RegionNotFound(99))
        ));
        c.add_merge_operator(11, 12, 2_000).unwrap();
        assert!(matches!(
            c.add_merge_operator(12, 11, 2_000),
            Err(PdError::Busy(_))
        ));
        let (source, target) = (&regions[1], &regions[2]);
        // The source's leader is told to merge, on every heartbeat; the target is held.
        for now_ms in [3_000, 4_000] {
            let resp = must_heartbeat(&c, source, now_ms).expect("merge");
            assert_eq!(resp.merge.unwrap().target.as_ref(), Some(target));
        }
        assert_eq!(must_heartbeat(&c, target, 4_000), None);
        assert_eq!(c.operator_count(), 2);
        // CommitMerge applied: the target covers both, one version past the two.
        let mut merged = target.clone();
        merged.start_key = source.start_key.clone();
        merged.region_epoch.as_mut().unwrap().version = 4;
        assert_eq!(must_heartbeat(&c, &merged, 5_000), None);
        assert_eq!(c.get_region_by_id(11).unwrap(), None);
        assert_eq!(c.operator_count(), 0, "both halves ended");
        let holder = c.get_region(&source.start_key).unwrap().unwrap();
        assert_eq!(holder.region, merged);
    }

    #[test]
    fn a_merge_rolled_back_ends_both_operators() {
        let (c, regions) = cluster(PdConfig::default());
        c.add_merge_operator(12, 11, 2_000).unwrap();
        let mut source = regions[2].clone();
        source.region_epoch.as_mut().unwrap().version = 4;
        assert_eq!(must_heartbeat(&c, &source, 3_000), None);
        assert_eq!(c.operator_count(), 0);
    }

    #[test]
    fn the_checker_waits_out_the_split_merge_interval_and_its_limit() {
        let cfg = PdConfig {
            split_merge_interval_secs: 60,
            ..Default::default()
        };
        let (c, regions) = cluster(cfg.clone());
        must_store_heartbeats(&c, 30_000);
        assert_eq!(c.run_merge_checker(30_000), 0, "split 29 s ago");
        // Heartbeats at the same version keep the time PD first saw it.
        for r in &regions {
            must_heartbeat(&c, r, 30_000);
        }
        must_store_heartbeats(&c, 61_000);
        assert_eq!(c.run_merge_checker(61_000), 1);
        let op = c
            .operator(11)
            .expect("the first half merges into the second");
        assert_eq!(op.name, scheduler::MERGE_REGION);
        assert_eq!(op.merge_partner(), Some(12));
        assert_eq!(c.run_merge_checker(61_000), 0, "nothing else to merge");
        // A region seen at a new version (split, merged, rolled back) waits again.
        let (c, mut regions) = cluster(cfg.clone());
        regions[2].region_epoch.as_mut().unwrap().version += 1;
        must_heartbeat(&c, &regions[2], 30_000);
        must_store_heartbeats(&c, 61_000);
        assert_eq!(c.run_merge_checker(61_000), 0, "region 12 changed 31 s ago");
        must_store_heartbeats(&c, 90_000);
        assert_eq!(c.run_merge_checker(90_000), 1);
        let (off, _) = cluster(PdConfig {
            merge_schedule_limit: 0,
            ..cfg
        });
        must_store_heartbeats(&off, 61_000);
        assert_eq!(off.run_merge_checker(61_000), 0, "merge turned off");
    }
}
