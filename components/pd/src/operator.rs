//! Operators: a short list of steps PD wants one region to go through (add a learner, promote
//! it, transfer leadership, remove a peer, split, merge). Each region heartbeat advances the
//! region's operator by observing which steps are done; the current step is (re)sent until it is.
//!
//! A merge is two operators: the source's (align its peers with the target's stores, then
//! [`Step::Merge`], answered to the source's leader on every heartbeat) and the target's, a
//! passive [`Step::MergeTarget`] that only holds the target so that nothing else changes it
//! meanwhile. Each names the other ([`Operator::merge_partner`]); when one ends, so does the
//! other.

use proto::eraftpb::ConfChangeType;
use proto::metapb::{Peer, PeerRole, Region, RegionEpoch};
use proto::pdpb::{
    ChangePeer, CheckPolicy, Merge, RegionHeartbeatResponse, SplitRegion, TransferLeader,
};

use crate::region_dir::RegionInfo;

/// One step of an operator.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Add a learner peer on a store. `peer_id` 0 means "to be allocated by PD".
    AddLearner {
        /// Target store.
        store_id: u64,
        /// The new peer's id.
        peer_id: u64,
    },
    /// Promote a caught-up learner to voter.
    PromoteLearner {
        /// Store of the learner.
        store_id: u64,
        /// The learner's peer id.
        peer_id: u64,
    },
    /// Remove a (non-leader) peer.
    RemovePeer {
        /// Store of the peer.
        store_id: u64,
        /// The peer's id.
        peer_id: u64,
    },
    /// Move leadership to a voter.
    TransferLeader {
        /// Store of the new leader.
        store_id: u64,
        /// Peer id of the new leader.
        peer_id: u64,
    },
    /// Split at these encoded keys.
    Split {
        /// Split keys, encoded, ascending.
        keys: Vec<Vec<u8>>,
    },
    /// Merge this region (the source, its peers on the target's stores) into `target`.
    Merge {
        /// The target as PD knows it; the target's passive operator ends the merge if the
        /// target changes, so this stays current while the step runs.
        target: Region,
    },
    /// Hold this region (a merge's target) until the source merges into it.
    MergeTarget {
        /// The source region.
        source_id: u64,
    },
}

impl Step {
    fn is_conf_change(&self) -> bool {
        matches!(
            self,
            Step::AddLearner { .. } | Step::PromoteLearner { .. } | Step::RemovePeer { .. }
        )
    }

    /// Whether the region, as reported, shows this step done.
    pub(crate) fn is_done(&self, info: &RegionInfo) -> bool {
        let peer = |id: u64| info.region.peers.iter().find(|p| p.id == id);
        match self {
            Step::AddLearner { peer_id, .. } => peer(*peer_id).is_some(),
            Step::PromoteLearner { peer_id, .. } => {
                peer(*peer_id).is_some_and(|p| p.role == PeerRole::Voter as i32)
            }
            Step::RemovePeer { peer_id, .. } => peer(*peer_id).is_none(),
            Step::TransferLeader { store_id, .. } => info
                .leader
                .as_ref()
                .is_some_and(|l| l.store_id == *store_id),
            // A split or merge is observed as a version change, see `Operator::advance`, and
            // a merged source by its leaving the directory.
            Step::Split { .. } | Step::Merge { .. } | Step::MergeTarget { .. } => false,
        }
    }
}

fn make_peer(id: u64, store_id: u64, role: i32) -> Peer {
    Peer {
        id,
        store_id,
        role,
        is_witness: false,
    }
}

/// Where an operator stands after a heartbeat.
#[derive(Clone, Debug, PartialEq)]
pub enum OpStatus {
    /// Send (or re-send) this step; None: wait (e.g. the learner is still catching up).
    Running(Option<Box<RegionHeartbeatResponse>>),
    /// Every step is done.
    Finished,
    /// The operator ran longer than its timeout.
    Timeout,
    /// The region changed in a way the operator did not plan.
    Stale,
}

/// A plan for one region.
#[derive(Clone, Debug, PartialEq)]
pub struct Operator {
    /// The region.
    pub region_id: u64,
    /// Which scheduler made it (metrics, logs).
    pub name: &'static str,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// The region's epoch when the operator was made.
    pub epoch: RegionEpoch,
    /// Creation time, set by the caller (schedulers do not read clocks).
    pub created_ms: u64,
}

impl Operator {
    /// A new operator on `info`'s current epoch.
    pub fn new(info: &RegionInfo, name: &'static str, steps: Vec<Step>) -> Self {
        Operator {
            region_id: info.region.id,
            name,
            steps,
            epoch: info.epoch(),
            created_ms: 0,
        }
    }

    /// Fills every `peer_id` 0 of an `AddLearner` step (and of the promote and leader
    /// transfer to the same store that follow it).
    pub fn assign_peer_ids(
        &mut self,
        mut alloc: impl FnMut() -> crate::Result<u64>,
    ) -> crate::Result<()> {
        let mut assigned: Vec<(u64, u64)> = Vec::new();
        for step in &mut self.steps {
            match step {
                Step::AddLearner { store_id, peer_id } if *peer_id == 0 => {
                    *peer_id = alloc()?;
                    assigned.push((*store_id, *peer_id));
                }
                Step::PromoteLearner { store_id, peer_id }
                | Step::TransferLeader { store_id, peer_id }
                    if *peer_id == 0 =>
                {
                    if let Some((_, id)) = assigned.iter().find(|(s, _)| s == store_id) {
                        *peer_id = *id;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The region at the other end of a merge, for both of its operators.
    pub fn merge_partner(&self) -> Option<u64> {
        self.steps.iter().find_map(|s| match s {
            Step::Merge { target } => Some(target.id),
            Step::MergeTarget { source_id } => Some(*source_id),
            _ => None,
        })
    }

    /// Whether this is a merge's source operator (the active half).
    pub fn is_merge_source(&self) -> bool {
        self.steps.iter().any(|s| matches!(s, Step::Merge { .. }))
    }

    /// Observes the heartbeat `info` at `now_ms` and says what to do next.
    ///
    /// Epochs: a split is done once the version grows. A merge's source is one version and,
    /// its conf changes done, one conf_ver ahead once PrepareMerge applied: the operator then
    /// waits for the target's report to evict it. Any other version change of the source
    /// (a split, a rolled-back merge) makes it stale. A merge's target is done once its
    /// version grows (it took the source over, or split and the store rolls the merge back).
    pub fn advance(&self, info: &RegionInfo, now_ms: u64, timeout_ms: u64) -> OpStatus {
        if now_ms.saturating_sub(self.created_ms) > timeout_ms {
            return OpStatus::Timeout;
        }
        let epoch = info.epoch();
        let has = |f: fn(&Step) -> bool| self.steps.iter().any(f);
        let splits = has(|s| matches!(s, Step::Split { .. }));
        let held = has(|s| matches!(s, Step::MergeTarget { .. }));
        let conf_changes = self.steps.iter().filter(|s| s.is_conf_change()).count() as u64;
        let prepared = self.is_merge_source()
            && epoch.version == self.epoch.version + 1
            && epoch.conf_ver == self.epoch.conf_ver + conf_changes + 1;
        if epoch.version != self.epoch.version && !prepared {
            return if (splits || held) && epoch.version > self.epoch.version {
                OpStatus::Finished
            } else {
                OpStatus::Stale
            };
        }
        if epoch.conf_ver > self.epoch.conf_ver + conf_changes + u64::from(prepared) {
            return OpStatus::Stale;
        }
        // Skip the prefix of steps already done: the heartbeat may show several at once.
        let Some(step) = self.steps.iter().find(|s| !s.is_done(info)) else {
            return OpStatus::Finished;
        };
        match self.step_response(step, info) {
            Ok(resp) => OpStatus::Running(resp.map(Box::new)),
            Err(()) => OpStatus::Stale,
        }
    }

    /// The response carrying `step`; Ok(None) to wait; Err if the step cannot be done anymore.
    fn step_response(
        &self,
        step: &Step,
        info: &RegionInfo,
    ) -> Result<Option<RegionHeartbeatResponse>, ()> {
        let pending = |id: u64| info.pending_peers.iter().any(|p| p.id == id);
        let is_leader = |id: u64| info.leader.as_ref().is_some_and(|l| l.id == id);
        let mut resp = RegionHeartbeatResponse {
            region_id: info.region.id,
            region_epoch: Some(info.epoch()),
            target_peer: info.leader,
            ..Default::default()
        };
        let change = |peer: Peer, ty: ConfChangeType| {
            Some(ChangePeer {
                peer: Some(peer),
                change_type: ty as i32,
            })
        };
        match step {
            Step::AddLearner { store_id, peer_id } => {
                if info.region.peers.iter().any(|p| p.store_id == *store_id) {
                    return Err(());
                }
                let peer = make_peer(*peer_id, *store_id, PeerRole::Learner as i32);
                resp.change_peer = change(peer, ConfChangeType::AddLearnerNode);
            }
            Step::PromoteLearner { store_id, peer_id } => {
                if !info.region.peers.iter().any(|p| p.id == *peer_id) {
                    return Err(());
                }
                if pending(*peer_id) {
                    return Ok(None);
                }
                let peer = make_peer(*peer_id, *store_id, PeerRole::Voter as i32);
                resp.change_peer = change(peer, ConfChangeType::AddNode);
            }
            Step::RemovePeer { store_id, peer_id } => {
                if is_leader(*peer_id) {
                    return Err(());
                }
                let role = info
                    .region
                    .peers
                    .iter()
                    .find(|p| p.id == *peer_id)
                    .map_or(0, |p| p.role);
                let peer = make_peer(*peer_id, *store_id, role);
                resp.change_peer = change(peer, ConfChangeType::RemoveNode);
            }
            Step::TransferLeader { store_id, peer_id } => {
                let voter = info
                    .region
                    .peers
                    .iter()
                    .any(|p| p.id == *peer_id && p.role == PeerRole::Voter as i32);
                if !voter {
                    return Err(());
                }
                if pending(*peer_id) {
                    return Ok(None);
                }
                let peer = make_peer(*peer_id, *store_id, PeerRole::Voter as i32);
                resp.transfer_leader = Some(TransferLeader {
                    peer: Some(peer),
                    peers: vec![],
                });
            }
            Step::Split { keys } => {
                resp.split_region = Some(SplitRegion {
                    policy: CheckPolicy::Usekey as i32,
                    keys: keys.clone(),
                });
            }
            Step::Merge { target } => {
                // PrepareMerge applied: the source's leader carries the merge on by itself
                // (through leader changes and restarts too); asking again would only be refused.
                if info.epoch().version > self.epoch.version {
                    return Ok(None);
                }
                if !is_aligned(&info.region, target) {
                    return Err(());
                }
                // PrepareMerge waits for every peer anyway; a pending one would only delay it.
                if !info.pending_peers.is_empty() {
                    return Ok(None);
                }
                resp.merge = Some(Merge {
                    target: Some(target.clone()),
                });
            }
            Step::MergeTarget { .. } => return Ok(None),
        }
        Ok(Some(resp))
    }
}

/// Whether `source`'s peers are all voters on exactly the stores of `target`'s voters (what
/// the store side requires of a merge).
pub(crate) fn is_aligned(source: &Region, target: &Region) -> bool {
    let voter_stores = |r: &Region| {
        let mut stores: Vec<u64> = r.peers.iter().map(|p| p.store_id).collect();
        stores.sort_unstable();
        let all_voters = r.peers.iter().all(|p| p.role == PeerRole::Voter as i32);
        all_voters.then_some(stores)
    };
    voter_stores(source).is_some_and(|s| Some(s) == voter_stores(target))
}
