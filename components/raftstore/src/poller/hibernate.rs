//! Hibernating regions: an idle region stops ticking on its leader and on its followers, so
//! that a store of idle regions spends only a keepalive per store and a slow PD heartbeat per
//! leader, instead of ticking every peer every tick (`hibernate_regions`; the argument is in
//! `docs/architecture.md`, "Hibernating regions").
//!
//! - A leader idle for `hibernate_idle_ticks` ticks ([`Peer::is_idle_leader`]: nothing in
//!   flight, every follower holds the whole log and was heard from lately) leaves the awake set
//!   and sends one last heartbeat, flagged `hibernate`. A follower that steps it and is in step
//!   with the leader ([`Peer::in_step_with`]) leaves the awake set too; one that is not ticks
//!   on, and its election (pre-vote) wakes the leader.
//! - Anything that may need the region wakes the peer: a raft message (but a hibernating
//!   heartbeat, or the answers to one), a proposal, a read, a PD operator, a split, an admin
//!   apply result, a snapshot, a role change. A leader that wakes judges its followers' liveness
//!   afresh ([`Peer::on_wake`]).
//! - Stores vouch for each other: every `store_keepalive_ticks` a store sends a keepalive to
//!   every store it shares regions with, and notes when it last heard anything from each. A
//!   store silent for `hibernate_wake_silent_ticks` wakes every hibernated peer of a region
//!   with a peer on it: a dead leader is replaced by an election, a dead follower is reported
//!   down. This costs O(stores) per interval; the regions are scanned only when a store turns
//!   silent.
//! - A hibernated leader heartbeats PD once when it hibernates, then every
//!   `hibernated_pd_heartbeat_ticks`, spread over the ticks (a rotation, not a burst).

use super::*;

impl Poller {
    /// The peer ticks again (if it hibernated) and counts as busy: a leader counts its idle
    /// ticks from zero.
    pub(super) fn wake(&mut self, id: RegionId) {
        self.active.insert(id);
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if self.awake.insert(id) {
            p.on_wake(self.tick_count);
        } else {
            p.idle_ticks = 0;
        }
    }

    /// On a tick of an awake leader: counts its idle ticks, and hibernates it at the limit.
    pub(super) fn maybe_hibernate_leader(&mut self, id: RegionId) {
        if !self.cfg.hibernate_regions {
            return;
        }
        let now = self.tick_count;
        let silent = self.touches_silent_store(id);
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if silent || !p.is_idle_leader(now, &self.cfg) {
            p.idle_ticks = 0;
            return;
        }
        p.idle_ticks += 1;
        if p.idle_ticks < self.cfg.hibernate_idle_ticks {
            return;
        }
        // The heartbeat goes out in this round's Ready, flagged because the leader is no longer
        // awake (`send_messages`).
        p.raw.ping();
        let _ = self.pd_tx.try_send(p.heartbeat_task(now, &self.cfg, true));
        if !p.in_pd_rotation {
            p.in_pd_rotation = true;
            self.pd_rotation.push_back(id);
        }
        self.awake.remove(&id);
        self.active.insert(id);
        self.note_region_stores(id);
        tracing::debug!(region_id = id, "leader hibernates");
    }

    /// A follower has stepped its leader's hibernating heartbeat: it hibernates too if it is
    /// in step with that leader, else it ticks on (and, hearing nothing more, its pre-vote
    /// wakes the leader).
    pub(super) fn on_hibernating_heartbeat(
        &mut self,
        id: RegionId,
        leader_id: u64,
        term: u64,
        commit: u64,
    ) {
        let in_step = self.cfg.hibernate_regions
            && !self.touches_silent_store(id)
            && self
                .peers
                .get(&id)
                .is_some_and(|p| p.in_step_with(leader_id, term, commit));
        if !in_step {
            return self.wake(id);
        }
        self.awake.remove(&id);
        self.active.insert(id); // its answer to the heartbeat
        self.note_region_stores(id);
    }

    /// Any message from `store_id` (a region's or a keepalive) shows the store is alive.
    pub(super) fn on_store_heard(&mut self, store_id: StoreId) {
        self.store_heard.insert(store_id, self.tick_count);
        self.silent_stores.remove(&store_id);
    }

    pub(super) fn on_store_keepalive(&mut self, msg: &flotillapb::RaftMessage) {
        match wire_check::check_store_keepalive(msg, self.store_id) {
            Ok(from) => self.on_store_heard(from),
            Err(e) => tracing::warn!("dropping store keepalive: {e}"),
        }
    }

    /// Starts watching the stores of a region that hibernates here, from now if they are new.
    fn note_region_stores(&mut self, id: RegionId) {
        let Some(p) = self.peers.get(&id) else { return };
        for peer in &p.region().peers {
            if peer.store_id != self.store_id {
                self.store_heard
                    .entry(peer.store_id)
                    .or_insert(self.tick_count);
            }
        }
    }

    fn touches_silent_store(&self, id: RegionId) -> bool {
        !self.silent_stores.is_empty()
            && self.peers.get(&id).is_some_and(|p| {
                p.region()
                    .peers
                    .iter()
                    .any(|q| self.silent_stores.contains(&q.store_id))
            })
    }

    /// The store's hibernation chores on a tick: hibernated leaders' PD heartbeats, and every
    /// `store_keepalive_ticks` the keepalives and the silent-store check.
    pub(super) fn on_hibernation_tick(&mut self) {
        if !self.cfg.hibernate_regions {
            return;
        }
        self.heartbeat_hibernated_leaders();
        if !self
            .tick_count
            .is_multiple_of(self.cfg.store_keepalive_ticks)
        {
            return;
        }
        for &store_id in self.store_heard.keys() {
            self.transport.send(flotillapb::RaftMessage {
                from_peer: Some(metapb::Peer {
                    store_id: self.store_id,
                    ..Default::default()
                }),
                to_peer: Some(metapb::Peer {
                    store_id,
                    ..Default::default()
                }),
                store_keepalive: true,
                ..Default::default()
            });
        }
        self.wake_for_silent_stores();
    }

    /// Wakes every hibernated peer of a region with a peer on a store that has just turned
    /// silent. Scans the regions only when some store turns silent.
    fn wake_for_silent_stores(&mut self) {
        let now = self.tick_count;
        let bound = self.cfg.hibernate_wake_silent_ticks;
        let newly: HashSet<StoreId> = self
            .store_heard
            .iter()
            .filter(|(s, heard)| {
                now.saturating_sub(**heard) > bound && !self.silent_stores.contains(s)
            })
            .map(|(s, _)| *s)
            .collect();
        if newly.is_empty() {
            return;
        }
        self.silent_stores.extend(newly.iter().copied());
        let ids: Vec<RegionId> = self
            .peers
            .iter()
            .filter(|(id, p)| {
                !self.awake.contains(id)
                    && p.region().peers.iter().any(|q| newly.contains(&q.store_id))
            })
            .map(|(id, _)| *id)
            .collect();
        tracing::info!(
            store_id = self.store_id,
            silent = ?newly,
            woken = ids.len(),
            "stores silent: their hibernated regions wake"
        );
        for id in ids {
            self.wake(id);
        }
    }

    /// Sends the slow PD heartbeats of hibernated leaders: each tick, the share of the
    /// rotation that makes a full turn every `hibernated_pd_heartbeat_ticks`.
    fn heartbeat_hibernated_leaders(&mut self) {
        let quota = rotation_quota(
            &mut self.pd_rotation_credit,
            self.pd_rotation.len() as u64,
            self.cfg.hibernated_heartbeat_ticks(),
        );
        for _ in 0..quota {
            let Some(id) = self.pd_rotation.pop_front() else {
                return;
            };
            let Some(p) = self.peers.get_mut(&id) else {
                continue;
            };
            if self.awake.contains(&id) || !p.is_leader() {
                p.in_pd_rotation = false;
                continue;
            }
            let _ = self
                .pd_tx
                .try_send(p.heartbeat_task(self.tick_count, &self.cfg, true));
            self.pd_rotation.push_back(id);
        }
    }
}

/// The heartbeats one tick owes a rotation of `len` regions that makes a full turn every
/// `interval` ticks: `len / interval`, the fraction carried over in `credit` (a rotation shorter
/// than the interval sends one every few ticks, not one every tick).
fn rotation_quota(credit: &mut u64, len: u64, interval: u64) -> u64 {
    let interval = interval.max(1);
    *credit += len;
    let quota = *credit / interval;
    *credit %= interval;
    quota
}

#[cfg(test)]
mod tests {
    use super::rotation_quota;

    /// Heartbeats sent over `ticks` ticks.
    fn sent(len: u64, interval: u64, ticks: u64) -> u64 {
        let mut credit = 0;
        (0..ticks)
            .map(|_| rotation_quota(&mut credit, len, interval))
            .sum()
    }

    #[test]
    fn a_rotation_turns_once_per_interval_whatever_its_length() {
        // 5 regions, a turn every 40 ticks: 5 heartbeats in 40 ticks, 50 in 400.
        assert_eq!(sent(5, 40, 40), 5);
        assert_eq!(sent(5, 40, 400), 50);
        // Longer than the interval: several a tick, still one turn per interval.
        assert_eq!(sent(1_000, 600, 600), 1_000);
        assert_eq!(sent(1_000, 600, 1), 1);
        // Empty, or an interval of 0 taken as 1.
        assert_eq!(sent(0, 40, 100), 0);
        assert_eq!(sent(3, 0, 2), 6);
    }
}
