//! The scheduling half of [`Cluster`]: the [`ClusterSnapshot`] the pure schedulers read, and
//! the periodic runs of balance-leader, balance-region and hot-region that queue their
//! operators (sent on the regions' next heartbeats, advanced by `next_step`).
//!
//! The snapshot counts every store's regions, region bytes and leaders as they will be once
//! the running operators finish (an operator reaches its store only on the region's next
//! heartbeat; a run that ignored it would move the same imbalance again and overshoot), and
//! carries each store's store-limit tokens; every operator created consumes its tokens.

use proto::metapb::StoreState;

use super::{Cluster, Inner};
use crate::operator::{Operator, Step};
use crate::scheduler::{
    self, ClusterSnapshot, HotRules, PlacementRules, RegionSnap, StoreHealth, StoreSnap, HOT_REGION,
};
use crate::store_limit::LimitKind;
use crate::PdConfig;

/// The name balance-region gives its operators (counted against
/// `balance_region_operators_max`).
pub(super) const BALANCE_REGION: &str = "balance-region";

/// What [`Cluster::queue_operator`] did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Queued {
    /// The operator is queued.
    Yes,
    /// The store limits refused it.
    NoTokens,
    /// It needs this many new peer ids and too few are reserved.
    NeedIds(u64),
}

impl Cluster {
    /// The schedulers' view at `now_ms`; `with_regions` false leaves the region list empty
    /// (the replica checker needs only the stores, and runs on every heartbeat: that view is
    /// O(stores + operators), the stores' counts coming from the directory's tallies). With
    /// the regions, every region is cloned: for the periodic runs only.
    pub(super) fn snapshot(
        inner: &mut Inner,
        cfg: &PdConfig,
        now_ms: u64,
        with_regions: bool,
    ) -> ClusterSnapshot {
        let statuses = Self::store_status(inner, cfg, now_ms);
        let Inner {
            stores: store_infos,
            limits,
            ..
        } = inner;
        limits.retain_stores(|id| {
            store_infos
                .get(&id)
                .is_some_and(|s| s.store.state != StoreState::Tombstone as i32)
        });
        let stores: Vec<StoreSnap> = statuses
            .into_iter()
            .filter(|s| s.info.store.state != StoreState::Tombstone as i32)
            .map(|s| {
                let id = s.info.store.id;
                let health = if s.info.store.state == StoreState::Offline as i32 {
                    StoreHealth::Offline
                } else if s.is_down_long {
                    StoreHealth::Down
                } else if !s.is_up {
                    StoreHealth::Disconnected
                } else {
                    StoreHealth::Up
                };
                let stats = s.info.stats.unwrap_or_default();
                StoreSnap {
                    id,
                    health,
                    leader_count: s.leader_count,
                    region_count: s.region_count,
                    region_size_bytes: inner.regions.tally(id).region_size_bytes,
                    capacity_bytes: stats.capacity,
                    available_bytes: stats.available,
                    add_peer_tokens: limits.available(id, LimitKind::AddPeer, now_ms),
                    remove_peer_tokens: limits.available(id, LimitKind::RemovePeer, now_ms),
                }
            })
            .collect();
        // While the hot-region scheduler runs, the regions hot at its threshold.
        let hot_min = cfg
            .hot_region_schedule
            .then_some(cfg.hot_region_byte_rate_min_per_sec);
        let regions = if with_regions {
            inner
                .regions
                .iter()
                .map(|r| {
                    let op = inner.operators.get(&r.region.id);
                    RegionSnap {
                        info: r.clone(),
                        has_operator: op.is_some(),
                        is_hot: hot_min.is_some_and(|min| scheduler::is_hot(&r.flow, min)),
                        pending_steps: op.map_or_else(Vec::new, |op| {
                            op.steps.iter().filter(|s| !s.is_done(r)).cloned().collect()
                        }),
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut snap = ClusterSnapshot { stores, regions };
        Self::count_pending_moves(inner, &mut snap);
        snap
    }

    /// Counts regions and bytes as they will be once the running operators' peer additions
    /// and removals are done.
    fn count_pending_moves(inner: &Inner, snap: &mut ClusterSnapshot) {
        for op in inner.operators.values() {
            let Some(info) = inner.regions.get(op.region_id) else {
                continue;
            };
            for step in op.steps.iter().filter(|s| !s.is_done(info)) {
                let (store_id, add) = match step {
                    Step::AddLearner { store_id, .. } => (*store_id, true),
                    Step::RemovePeer { store_id, .. } => (*store_id, false),
                    _ => continue,
                };
                let Some(st) = snap.stores.iter_mut().find(|s| s.id == store_id) else {
                    continue;
                };
                if add {
                    st.region_count += 1;
                    st.region_size_bytes += info.approximate_size;
                } else {
                    st.region_count = st.region_count.saturating_sub(1);
                    st.region_size_bytes =
                        st.region_size_bytes.saturating_sub(info.approximate_size);
                }
            }
        }
    }

    /// Counts leaders as they will be once the running transfer operators finish.
    fn count_pending_transfers(inner: &Inner, snap: &mut ClusterSnapshot) {
        for op in inner.operators.values() {
            let Some(Step::TransferLeader { store_id: to, .. }) = op
                .steps
                .iter()
                .find(|s| matches!(s, Step::TransferLeader { .. }))
            else {
                continue;
            };
            let Some(from) = inner
                .regions
                .get(op.region_id)
                .and_then(|r| r.leader)
                .map(|l| l.store_id)
            else {
                continue;
            };
            if from == *to {
                continue;
            }
            for st in snap.stores.iter_mut() {
                if st.id == from {
                    st.leader_count = st.leader_count.saturating_sub(1);
                } else if st.id == *to {
                    st.leader_count += 1;
                }
            }
        }
    }

    /// Runs balance-leader once; its operators are sent on the regions' next heartbeats.
    pub fn run_balance_leader(&self, now_ms: u64) -> usize {
        let mut inner = self.inner.lock();
        let room = self.cfg.operators_max.saturating_sub(inner.operators.len());
        let limit = room.min(self.cfg.balance_leader_operators_max);
        if !inner.bootstrapped || limit == 0 {
            return 0;
        }
        let mut snap = Self::snapshot(&mut inner, &self.cfg, now_ms, true);
        Self::count_pending_transfers(&inner, &mut snap);
        let ops = scheduler::balance_leader(&snap, self.cfg.leader_balance_tolerance, limit);
        let n = ops.len();
        for mut op in ops {
            op.created_ms = now_ms;
            inner.operators.insert(op.region_id, op);
        }
        n
    }

    /// Runs balance-region once, within `balance_region_operators_max` running operators
    /// and the store limits; returns how many operators it queued. They are sent on the
    /// regions' next heartbeats.
    pub fn run_balance_region(&self, now_ms: u64) -> usize {
        let ops_max = self.cfg.balance_region_operators_max;
        let rules = PlacementRules::from_config(&self.cfg);
        self.run_mover(now_ms, BALANCE_REGION, ops_max, |snap, limit| {
            scheduler::balance_region(snap, &rules, limit)
        })
    }

    /// Runs the hot-region scheduler once (when `hot_region_schedule` is on), within
    /// `hot_region_operators_max` running operators and the store limits; returns how many
    /// operators it queued. They are sent on the regions' next heartbeats.
    pub fn run_hot_region(&self, now_ms: u64) -> usize {
        if !self.cfg.hot_region_schedule {
            return 0;
        }
        let ops_max = self.cfg.hot_region_operators_max;
        let rules = HotRules::from_config(&self.cfg);
        self.run_mover(now_ms, HOT_REGION, ops_max, |snap, limit| {
            scheduler::hot_region(snap, &rules, limit)
        })
    }

    /// Runs `plan`, a scheduler whose operators (named `name`) may each add one peer, with
    /// room for at most `ops_max` of them running at once, and queues what it returns within
    /// the store limits; returns how many operators it queued.
    fn run_mover(
        &self,
        now_ms: u64,
        name: &str,
        ops_max: usize,
        plan: impl FnOnce(&ClusterSnapshot, usize) -> Vec<Operator>,
    ) -> usize {
        // Each operator adds at most one peer; its id is reserved before the lock is taken.
        if let Err(e) = self.ids.reserve(ops_max.max(1) as u64) {
            tracing::warn!(error = %e, scheduler = name, "no peer ids");
            return 0;
        }
        let mut inner = self.inner.lock();
        let running = inner.operators.values().filter(|o| o.name == name).count();
        let room = self.cfg.operators_max.saturating_sub(inner.operators.len());
        let limit = room.min(ops_max.saturating_sub(running));
        if !inner.bootstrapped || limit == 0 {
            return 0;
        }
        let snap = Self::snapshot(&mut inner, &self.cfg, now_ms, true);
        let mut n = 0;
        for op in plan(&snap, limit) {
            match self.queue_operator(&mut inner, op, now_ms, false) {
                Queued::Yes => n += 1,
                Queued::NoTokens => {}
                // Another caller took the reserved ids; the next run plans again.
                Queued::NeedIds(_) => break,
            }
        }
        n
    }

    /// Gives `op` its peer ids and creation time, consumes its store-limit tokens (`force`:
    /// even into debt) and queues it. Nothing changes when the tokens are short, or when the
    /// ids reserved beforehand have run out ([`Queued::NeedIds`]: the caller reserves more
    /// with `IdAllocator::reserve` once it has released the lock, which is never held across
    /// the allocator's write).
    pub(super) fn queue_operator(
        &self,
        inner: &mut Inner,
        mut op: Operator,
        now_ms: u64,
        force: bool,
    ) -> Queued {
        let needed = op
            .steps
            .iter()
            .filter(|s| matches!(s, Step::AddLearner { peer_id: 0, .. }))
            .count() as u64;
        let mut ids = match needed {
            0 => 0..0,
            n => match self.ids.alloc_reserved(n) {
                Some(ids) => ids,
                None => return Queued::NeedIds(n),
            },
        };
        if !inner.limits.consume_operator(&op, now_ms, force) {
            return Queued::NoTokens;
        }
        op.assign_peer_ids(|| Ok(ids.next().expect("counted above")))
            .expect("ids are given");
        op.created_ms = now_ms;
        inner.operators.insert(op.region_id, op);
        Queued::Yes
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proto::eraftpb::ConfChangeType;
    use proto::metapb::{Peer, PeerRole, Region, RegionEpoch, Store};
    use proto::pdpb::RegionHeartbeatRequest;

    use super::*;
    use crate::meta_store::{MemMetaStore, MetaStore};

    fn peer(id: u64, store_id: u64, role: PeerRole) -> Peer {
        Peer {
            id,
            store_id,
            role: role as i32,
            is_witness: false,
        }
    }

    fn region(id: u64, start: &[u8], end: &[u8], conf_ver: u64, peers: Vec<Peer>) -> Region {
        Region {
            id,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            region_epoch: Some(RegionEpoch {
                conf_ver,
                version: 2,
            }),
            peers,
        }
    }

    fn heartbeat(
        c: &Cluster,
        r: &Region,
        pending: Vec<Peer>,
        now_ms: u64,
    ) -> Option<Box<proto::pdpb::RegionHeartbeatResponse>> {
        let req = RegionHeartbeatRequest {
            region: Some(r.clone()),
            leader: r.peers.first().copied(),
            pending_peers: pending,
            term: 1,
            ..Default::default()
        };
        c.region_heartbeat(req, now_ms).unwrap().map(Box::new)
    }

    /// Regions 10..18 on stores 1, 2, 3 (leaders on 1; region 10 gets a pre-split operator), a
    /// new empty store 4.
    fn three_stores_and_a_new_one(cfg: PdConfig) -> (Cluster, Vec<Region>) {
        let meta: Arc<dyn MetaStore> = Arc::new(MemMetaStore::default());
        let c = Cluster::open(meta, cfg, 1_000).unwrap();
        let store = |id: u64| Store {
            id,
            address: format!("127.0.0.1:{}", 20160 + id),
            ..Default::default()
        };
        let first = region(2, b"", b"", 1, vec![peer(3, 1, PeerRole::Voter)]);
        c.bootstrap(store(1), first, 1_000).unwrap();
        for id in 2..=4 {
            c.put_store(store(id), 1_000).unwrap();
        }
        let regions: Vec<Region> = (0..8u8)
            .map(|i| {
                let id = 10 + u64::from(i);
                let end = if i == 7 { vec![] } else { vec![b'z', i + 1] };
                let start = if i == 0 { vec![] } else { vec![b'z', i] };
                let peers = (1..=3)
                    .map(|s| peer(id * 10 + s, s, PeerRole::Voter))
                    .collect();
                region(id, &start, &end, 1, peers)
            })
            .collect();
        for r in &regions {
            heartbeat(&c, r, vec![], 1_000);
        }
        (c, regions)
    }

    #[test]
    fn balance_region_runs_within_limits_and_moves_a_replica_step_by_step() {
        let cfg = PdConfig {
            store_limit_add_peer_per_min: 2,
            balance_region_operators_max: 4,
            ..Default::default()
        };
        let (c, regions) = three_stores_and_a_new_one(cfg);
        // Store 4 may receive two peers now, then one every 30 s.
        assert_eq!(c.run_balance_region(1_000), 2);
        assert_eq!(c.run_balance_region(1_000), 0, "store limit");
        assert_eq!(c.run_balance_region(31_000), 1);
        assert_eq!(c.run_balance_region(31_000), 0);
        let (mut r, op) = regions
            .iter()
            .find_map(|r| {
                let op = c.operator(r.id).filter(|op| op.name == BALANCE_REGION)?;
                Some((r.clone(), op))
            })
            .expect("a balance-region operator");
        assert_eq!(op.name, BALANCE_REGION);
        let Step::AddLearner {
            store_id: 4,
            peer_id,
        } = op.steps[0]
        else {
            panic!("{op:?}")
        };
        // Add the learner.
        let resp = heartbeat(&c, &r, vec![], 32_000).expect("add learner");
        let cp = resp.change_peer.unwrap();
        assert_eq!(cp.change_type, ConfChangeType::AddLearnerNode as i32);
        assert_eq!(cp.peer.unwrap(), peer(peer_id, 4, PeerRole::Learner));
        // The learner is there but still catching up: wait.
        let learner = peer(peer_id, 4, PeerRole::Learner);
        r.peers.push(learner);
        r.region_epoch.as_mut().unwrap().conf_ver += 1;
        assert!(heartbeat(&c, &r, vec![learner], 33_000).is_none());
        // Caught up: promote.
        let resp = heartbeat(&c, &r, vec![], 34_000).expect("promote");
        assert_eq!(
            resp.change_peer.unwrap().change_type,
            ConfChangeType::AddNode as i32
        );
        r.peers[3].role = PeerRole::Voter as i32;
        r.region_epoch.as_mut().unwrap().conf_ver += 1;
        // Four voters: remove the source's peer (not the leader on store 1).
        let resp = heartbeat(&c, &r, vec![], 35_000).expect("remove");
        let cp = resp.change_peer.unwrap();
        assert_eq!(cp.change_type, ConfChangeType::RemoveNode as i32);
        let gone = cp.peer.unwrap();
        assert_ne!(gone.store_id, 1);
        assert_ne!(gone.store_id, 4);
        r.peers.retain(|p| p.id != gone.id);
        r.region_epoch.as_mut().unwrap().conf_ver += 1;
        assert!(heartbeat(&c, &r, vec![], 36_000).is_none());
        assert!(c.operator(r.id).is_none(), "finished");
    }

    /// A heartbeat of `r` (led by its first peer) reporting `read_per_sec` bytes read a second
    /// over 10 s.
    fn read_heartbeat(
        c: &Cluster,
        r: &Region,
        read_per_sec: u64,
        now_ms: u64,
    ) -> Option<proto::pdpb::RegionHeartbeatResponse> {
        let req = RegionHeartbeatRequest {
            region: Some(r.clone()),
            leader: r.peers.first().copied(),
            bytes_read: read_per_sec * 10,
            interval: Some(proto::pdpb::TimeInterval {
                start_timestamp: 100,
                end_timestamp: 110,
            }),
            term: 1,
            ..Default::default()
        };
        c.region_heartbeat(req, now_ms).unwrap()
    }

    #[test]
    fn hot_region_moves_hot_leaders_within_its_limit_and_only_when_on() {
        let off = PdConfig {
            hot_region_schedule: false,
            ..Default::default()
        };
        let (c, regions) = three_stores_and_a_new_one(off);
        for now_ms in [1_000, 2_000] {
            for r in &regions[1..4] {
                read_heartbeat(&c, r, 1 << 20, now_ms);
            }
        }
        assert_eq!(c.run_hot_region(2_000), 0, "turned off");

        let (c, regions) = three_stores_and_a_new_one(PdConfig::default());
        // Store 1 leads three regions read at 1 MiB/s each, a fourth at 100 KiB/s (cold).
        for r in &regions[1..4] {
            read_heartbeat(&c, r, 1 << 20, 1_000);
        }
        read_heartbeat(&c, &regions[4], 100 << 10, 1_000);
        assert_eq!(c.run_hot_region(1_000), 0, "hot in one report only");
        for r in &regions[1..4] {
            read_heartbeat(&c, r, 1 << 20, 2_000);
        }
        read_heartbeat(&c, &regions[4], 100 << 10, 2_000);
        // Two operators at most (the default): one leader to store 2, one to store 3.
        assert_eq!(c.run_hot_region(2_000), 2);
        assert_eq!(c.run_hot_region(3_000), 0, "hot_region_operators_max");
        let mut targets = Vec::new();
        for r in &regions[1..4] {
            let Some(op) = c.operator(r.id).filter(|op| op.name == HOT_REGION) else {
                continue;
            };
            let [Step::TransferLeader { store_id, .. }] = op.steps.as_slice() else {
                panic!("{op:?}")
            };
            targets.push(*store_id);
            // The region's next heartbeat carries the transfer.
            let resp = read_heartbeat(&c, r, 1 << 20, 4_000).expect("transfer leader");
            let to = resp.transfer_leader.unwrap().peer.unwrap();
            assert_eq!(to.store_id, *store_id);
        }
        targets.sort_unstable();
        assert_eq!(targets, vec![2, 3]);
        assert!(c.operator(regions[4].id).is_none(), "cold");
    }

    #[test]
    fn offline_store_replicas_move_within_the_remove_limit() {
        let cfg = PdConfig {
            store_limit_remove_peer_per_min: 3,
            ..Default::default()
        };
        let (c, regions) = three_stores_and_a_new_one(cfg);
        c.remove_store(3, false).unwrap();
        // Each heartbeat asks the replica checker; store 3 may lose 3 peers a minute. (The
        // first region spans the keyspace boundaries: it is being pre-split.)
        let mut moved = 0;
        for r in &regions[1..] {
            if let Some(resp) = heartbeat(&c, r, vec![], 2_000) {
                let cp = resp.change_peer.expect("add learner");
                assert_eq!(cp.peer.unwrap().store_id, 4, "the only up store left");
                moved += 1;
            }
        }
        assert_eq!(moved, 3);
        let op = c.operator(regions[1].id).unwrap();
        assert!(matches!(
            op.steps.last(),
            Some(Step::RemovePeer { store_id: 3, .. })
        ));
        // balance-region does not touch a store that is not up.
        assert_eq!(c.run_balance_region(2_000), 0);
    }
}
