//! The scheduling half of [`Cluster`]: the [`ClusterSnapshot`] the pure schedulers read, and
//! the periodic runs of balance-leader, balance-region and hot-region that queue their
//! operators (sent on the regions' next heartbeats, advanced by `next_step`).
//!
//! The periodic runs read the regions where the directory holds them (a [`RegionView`] each,
//! nothing copied), and a run that plans nothing backs off: its next run waits twice as long
//! as the last wait, from the scheduler's interval up to `schedule_backoff_max_ms`, and the
//! first run that plans something brings it back to every interval (as PD's schedulers grow
//! their interval while they find nothing to do).
//!
//! The snapshot counts every store's regions, region bytes and leaders as they will be once
//! the running operators finish (an operator reaches its store only on the region's next
//! heartbeat; a run that ignored it would move the same imbalance again and overshoot), and
//! carries each store's store-limit tokens; every operator created consumes its tokens.

use std::borrow::Cow;

use proto::metapb::StoreState;

use super::{Cluster, Inner};
use crate::keyspace_group::{region_group, OUTSIDE};
use crate::operator::{Operator, Step};
use crate::region_dir::{GroupSums, RegionInfo};
use crate::scheduler::{
    self, ClusterSnapshot, GroupTallies, GroupTally, HotRules, PlacementRules, RegionSnap,
    RegionView, StoreHealth, StoreSnap, HOT_REGION,
};
use crate::store_limit::LimitKind;
use crate::PdConfig;

/// The name balance-region gives its operators (counted against
/// `balance_region_operators_max`).
pub(super) const BALANCE_REGION: &str = "balance-region";

/// The name balance-leader gives its operators (and its backoff).
const BALANCE_LEADER: &str = "balance-leader";

/// When a periodic scheduler runs next (see the module docs). Pure: the caller passes the
/// time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Backoff {
    /// The run is skipped before this time (ms since the epoch).
    next_ms: u64,
    /// The last wait; 0 while the scheduler plans.
    delay_ms: u64,
}

impl Backoff {
    /// Whether the scheduler runs at `now_ms`.
    pub(super) fn is_due(&self, now_ms: u64) -> bool {
        now_ms >= self.next_ms
    }

    /// Records a run at `now_ms` of a scheduler ticking every `interval_ms` that queued
    /// `queued` operators, with waits up to `max_ms`.
    pub(super) fn ran(&mut self, now_ms: u64, queued: usize, interval_ms: u64, max_ms: u64) {
        if queued > 0 {
            *self = Backoff::default();
            return;
        }
        self.delay_ms = self
            .delay_ms
            .saturating_mul(2)
            .clamp(interval_ms, max_ms.max(interval_ms));
        // Due half an interval early: the ticks that come after `delay_ms` are not late.
        self.next_ms = now_ms + self.delay_ms - interval_ms / 2;
    }
}

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
    /// The schedulers' view of the stores at `now_ms`, without the regions: O(stores +
    /// operators), the stores' counts coming from the directory's tallies. The replica checker
    /// runs on it on every heartbeat; the periodic runs add [`Cluster::region_views`].
    pub(super) fn snapshot(inner: &mut Inner, cfg: &PdConfig, now_ms: u64) -> ClusterSnapshot {
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
        let mut snap = ClusterSnapshot {
            stores,
            regions: Vec::new(),
        };
        Self::count_pending_moves(inner, &mut snap);
        snap
    }

    /// Every region that `keep` accepts, in key order, borrowed from the directory, with its
    /// running operator's steps not yet done and whether it is hot (`hot`: the hot-region
    /// scheduler runs with these rules).
    pub(super) fn region_views<'a>(
        inner: &'a Inner,
        hot: Option<&HotRules>,
        keep: impl Fn(&RegionInfo) -> bool,
    ) -> Vec<RegionView<'a>> {
        inner
            .regions
            .iter()
            .filter(|r| keep(r))
            .map(|r| Self::region_view(inner, hot, r))
            .collect()
    }

    /// `r` as the schedulers see it (see [`Cluster::region_views`]).
    fn region_view<'a>(
        inner: &'a Inner,
        hot: Option<&HotRules>,
        r: &'a RegionInfo,
    ) -> RegionView<'a> {
        let op = inner.operators.get(&r.region.id);
        RegionView {
            info: r,
            has_operator: op.is_some(),
            is_hot: hot.is_some_and(|h| scheduler::is_hot(&r.flow, h)),
            pending_steps: match op {
                None => Cow::Borrowed(&[]),
                Some(op) => op.steps.iter().filter(|s| !s.is_done(r)).cloned().collect(),
            },
        }
    }

    /// Per keyspace group, per store of `snap`: what the group holds there once the running
    /// operators' steps are done (what `scheduler::group_tallies` makes of every region), from
    /// the directory's group sums and the running operators: O(groups x stores + operators).
    pub(super) fn group_tallies(inner: &Inner, snap: &ClusterSnapshot) -> GroupTallies {
        let mut keyspaces: GroupTallies = inner
            .regions
            .groups()
            .iter()
            .filter(|(g, _)| **g != OUTSIDE)
            .map(|(g, sums)| {
                let per_store = sums
                    .per_store
                    .iter()
                    .map(|(id, t)| {
                        let tally = GroupTally {
                            region_count: t.region_count,
                            region_size_bytes: t.region_size_bytes,
                            leader_count: t.leader_count,
                        };
                        (*id, tally)
                    })
                    .collect();
                (*g, per_store)
            })
            .collect();
        for op in inner.operators.values() {
            let Some(info) = inner.regions.get(op.region_id) else {
                continue;
            };
            let Some(tallies) = keyspaces.get_mut(&region_group(&info.region)) else {
                continue;
            };
            let pending: Vec<Step> = op
                .steps
                .iter()
                .filter(|s| !s.is_done(info))
                .cloned()
                .collect();
            scheduler::count_placement(tallies, scheduler::placement_after(info, &[]), info, false);
            scheduler::count_placement(
                tallies,
                scheduler::placement_after(info, &pending),
                info,
                true,
            );
        }
        scheduler::with_outside(&snap.stores, keyspaces)
    }

    /// The hot-region rules, when that scheduler runs.
    fn hot_rules(&self) -> Option<HotRules> {
        self.cfg
            .hot_region_schedule
            .then(|| HotRules::from_config(&self.cfg))
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

    /// Runs balance-leader once, unless it backs off (see the module docs); its operators are
    /// sent on the regions' next heartbeats.
    pub fn run_balance_leader(&self, now_ms: u64) -> usize {
        let mut inner = self.inner.lock();
        let room = self.cfg.operators_max.saturating_sub(inner.operators.len());
        let limit = room.min(self.cfg.balance_leader_operators_max);
        if !inner.bootstrapped || limit == 0 || !Self::is_due(&inner, BALANCE_LEADER, now_ms) {
            return 0;
        }
        let mut snap = Self::snapshot(&mut inner, &self.cfg, now_ms);
        Self::count_pending_transfers(&inner, &mut snap);
        let hot = self.hot_rules();
        let ops = {
            let tallies = Self::group_tallies(&inner, &snap);
            let list = || Self::region_views(&inner, hot.as_ref(), |_| true);
            let tolerance = self.cfg.leader_balance_tolerance;
            scheduler::balance_leader_over(&snap, tallies, list, tolerance, limit)
        };
        let n = ops.len();
        for mut op in ops {
            op.created_ms = now_ms;
            inner.operators.insert(op.region_id, op);
        }
        let interval_ms = self.cfg.balance_leader_interval_ms;
        self.ran(&mut inner, BALANCE_LEADER, now_ms, n, interval_ms);
        n
    }

    /// Whether the scheduler `name` runs at `now_ms` (it may back off).
    pub(super) fn is_due(inner: &Inner, name: &'static str, now_ms: u64) -> bool {
        inner.backoff.get(name).is_none_or(|b| b.is_due(now_ms))
    }

    /// Records a full run of the scheduler `name` that queued `queued` operators.
    pub(super) fn ran(
        &self,
        inner: &mut Inner,
        name: &'static str,
        now_ms: u64,
        queued: usize,
        interval_ms: u64,
    ) {
        let max_ms = self.cfg.schedule_backoff_max_ms;
        let backoff = inner.backoff.entry(name).or_default();
        backoff.ran(now_ms, queued, interval_ms, max_ms);
    }

    /// Runs balance-region once, within `balance_region_operators_max` running operators
    /// and the store limits; returns how many operators it queued. They are sent on the
    /// regions' next heartbeats.
    pub fn run_balance_region(&self, now_ms: u64) -> usize {
        let ops_max = self.cfg.balance_region_operators_max;
        let rules = PlacementRules::from_config(&self.cfg);
        let hot = self.hot_rules();
        self.run_mover(now_ms, BALANCE_REGION, ops_max, |inner, snap, limit| {
            let tallies = Self::group_tallies(inner, snap);
            let groups = inner.regions.groups();
            let size_min = |g| groups.get(&g).and_then(GroupSums::size_min_bytes);
            let list = || Self::region_views(inner, hot.as_ref(), |_| true);
            scheduler::balance_region_over(snap, tallies, &size_min, list, &rules, limit)
        })
    }

    /// Runs the hot-region scheduler once (when `hot_region_schedule` is on), within
    /// `hot_region_operators_max` running operators and the store limits; returns how many
    /// operators it queued. They are sent on the regions' next heartbeats.
    pub fn run_hot_region(&self, now_ms: u64) -> usize {
        let Some(rules) = self.hot_rules() else {
            return 0;
        };
        let ops_max = self.cfg.hot_region_operators_max;
        self.run_mover(now_ms, HOT_REGION, ops_max, |inner, snap, limit| {
            // A region that moved no bytes adds nothing to a store's loads and is not hot
            // (the threshold is at least 1 byte a second): only the others are copied.
            // The directory counts them: with none, nothing is walked.
            let has_flow = |r: &RegionInfo| r.flow.read_bytes > 0 || r.flow.written_bytes > 0;
            debug_assert!(rules.byte_rate_min_per_sec >= 1);
            let regions = if inner.regions.flowing_len() == 0 {
                Vec::new()
            } else {
                Self::region_views(inner, Some(&rules), has_flow)
            };
            let snap = ClusterSnapshot {
                stores: snap.stores.clone(),
                regions: regions
                    .into_iter()
                    .map(|r| RegionSnap {
                        info: r.info.clone(),
                        has_operator: r.has_operator,
                        is_hot: r.is_hot,
                        pending_steps: r.pending_steps.into_owned(),
                    })
                    .collect(),
            };
            scheduler::hot_region(&snap, &rules, limit)
        })
    }

    /// Runs `plan`, a scheduler whose operators (named `name`) may each add one peer, with
    /// room for at most `ops_max` of them running at once, and queues what it returns within
    /// the store limits; returns how many operators it queued. It backs off while its runs
    /// queue nothing (see the module docs).
    fn run_mover(
        &self,
        now_ms: u64,
        name: &'static str,
        ops_max: usize,
        plan: impl FnOnce(&Inner, &ClusterSnapshot, usize) -> Vec<Operator>,
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
        if !inner.bootstrapped || limit == 0 || !Self::is_due(&inner, name, now_ms) {
            return 0;
        }
        let snap = Self::snapshot(&mut inner, &self.cfg, now_ms);
        let mut n = 0;
        for op in plan(&inner, &snap, limit) {
            match self.queue_operator(&mut inner, op, now_ms, false) {
                Queued::Yes => n += 1,
                Queued::NoTokens => {}
                // Another caller took the reserved ids; the next run plans again.
                Queued::NeedIds(_) => break,
            }
        }
        let interval_ms = self.cfg.balance_region_interval_ms;
        self.ran(&mut inner, name, now_ms, n, interval_ms);
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
#[path = "cluster_schedule_tests.rs"]
mod tests;
