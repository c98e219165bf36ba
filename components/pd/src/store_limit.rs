//! Store limits: how many peers PD may add to (snapshots a store receives) and remove from
//! each store per minute, so that a scale-out or a decommission does not swamp the stores'
//! foreground traffic. One token bucket per store and direction, in PD's memory only (a PD
//! restart or leader change starts every bucket full). Pure: the caller passes the time in.
//!
//! Flow: `Cluster` reads the whole tokens each store has into the scheduler's
//! snapshot, the schedulers plan only moves the tokens allow, and every operator that adds or
//! removes a peer consumes its tokens when it is created ([`StoreLimits::consume_operator`]).

use std::collections::HashMap;

use crate::operator::{Operator, Step};

/// Bucket units per token: a rate of `r` tokens a minute earns exactly `r` units a
/// millisecond, so refills are integer arithmetic and never lose a fraction.
const UNITS_PER_TOKEN: i64 = 60_000;

/// A token bucket refilled at a fixed rate, holding at most one minute's worth of tokens.
///
/// The balance may go below zero (down to minus the capacity) when an urgent operator is
/// forced through: the debt is paid back before any ordinary operator gets a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    units: i64,
    capacity_units: i64,
    rate_per_min: i64,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket refilled at `rate_per_min` tokens a minute, holding at most one minute's
    /// worth (at least one token).
    pub fn new(rate_per_min: u64, now_ms: u64) -> Self {
        let rate_per_min = i64::try_from(rate_per_min).unwrap_or(i64::MAX / UNITS_PER_TOKEN);
        let capacity_units = rate_per_min.max(1).saturating_mul(UNITS_PER_TOKEN);
        TokenBucket {
            units: capacity_units,
            capacity_units,
            rate_per_min,
            last_ms: now_ms,
        }
    }

    /// Adds the tokens earned since the last call; a clock that goes back earns nothing.
    fn refill(&mut self, now_ms: u64) {
        if now_ms > self.last_ms {
            let elapsed = i64::try_from(now_ms - self.last_ms).unwrap_or(i64::MAX);
            let earned = elapsed.saturating_mul(self.rate_per_min);
            self.units = self.units.saturating_add(earned).min(self.capacity_units);
            self.last_ms = now_ms;
        }
    }

    /// Whole tokens available at `now_ms`.
    pub fn available(&mut self, now_ms: u64) -> u64 {
        self.refill(now_ms);
        // A bucket in debt has nothing to give.
        (self.units.max(0) / UNITS_PER_TOKEN) as u64
    }

    /// Takes one token if there is one; says whether it did.
    pub fn take(&mut self, now_ms: u64) -> bool {
        if self.available(now_ms) == 0 {
            return false;
        }
        self.units -= UNITS_PER_TOKEN;
        true
    }

    /// Takes one token even if there is none, going into debt (at most the capacity deep).
    pub fn force_take(&mut self, now_ms: u64) {
        self.refill(now_ms);
        self.units = (self.units - UNITS_PER_TOKEN).max(-self.capacity_units);
    }
}

/// Which way a peer moves on a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// A peer added to the store (it receives a snapshot).
    AddPeer,
    /// A peer removed from the store.
    RemovePeer,
}

/// Every store's buckets, created full on first use.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreLimits {
    add_peer_per_min: u64,
    remove_peer_per_min: u64,
    buckets: HashMap<(u64, LimitKind), TokenBucket>,
}

impl Default for StoreLimits {
    /// The limits of the default configuration.
    fn default() -> Self {
        let cfg = crate::PdConfig::default();
        StoreLimits::new(
            cfg.store_limit_add_peer_per_min,
            cfg.store_limit_remove_peer_per_min,
        )
    }
}

impl StoreLimits {
    /// Limits of `add_peer_per_min` additions and `remove_peer_per_min` removals per store.
    pub fn new(add_peer_per_min: u64, remove_peer_per_min: u64) -> Self {
        StoreLimits {
            add_peer_per_min,
            remove_peer_per_min,
            buckets: HashMap::new(),
        }
    }

    fn bucket(&mut self, store_id: u64, kind: LimitKind, now_ms: u64) -> &mut TokenBucket {
        let rate = match kind {
            LimitKind::AddPeer => self.add_peer_per_min,
            LimitKind::RemovePeer => self.remove_peer_per_min,
        };
        self.buckets
            .entry((store_id, kind))
            .or_insert_with(|| TokenBucket::new(rate, now_ms))
    }

    /// Whole tokens `store_id` has for `kind` at `now_ms`.
    pub fn available(&mut self, store_id: u64, kind: LimitKind, now_ms: u64) -> u64 {
        self.bucket(store_id, kind, now_ms).available(now_ms)
    }

    /// Consumes the tokens of every peer `op` adds or removes. Without `force` it consumes
    /// nothing and returns false unless every store involved has its tokens; with `force` it
    /// always consumes (buckets may go into debt) and returns true.
    pub fn consume_operator(&mut self, op: &Operator, now_ms: u64, force: bool) -> bool {
        let needs = Self::needs(op);
        if !force {
            let mut want: HashMap<(u64, LimitKind), u64> = HashMap::new();
            for key in &needs {
                *want.entry(*key).or_default() += 1;
            }
            let short = want
                .iter()
                .any(|(&(store, kind), &n)| self.available(store, kind, now_ms) < n);
            if short {
                return false;
            }
        }
        for (store, kind) in needs {
            let bucket = self.bucket(store, kind, now_ms);
            if force {
                bucket.force_take(now_ms);
            } else {
                let taken = bucket.take(now_ms);
                assert!(taken, "store {store} {kind:?}: tokens checked above");
            }
        }
        true
    }

    /// The (store, kind) token each step of `op` needs.
    fn needs(op: &Operator) -> Vec<(u64, LimitKind)> {
        op.steps
            .iter()
            .filter_map(|s| match s {
                Step::AddLearner { store_id, .. } => Some((*store_id, LimitKind::AddPeer)),
                Step::RemovePeer { store_id, .. } => Some((*store_id, LimitKind::RemovePeer)),
                _ => None,
            })
            .collect()
    }

    /// Drops the buckets of stores not in `live` (tombstoned or deleted stores), so that the
    /// map stays bounded by the number of stores.
    pub fn retain_stores(&mut self, live: impl Fn(u64) -> bool) {
        self.buckets.retain(|(store, _), _| live(*store));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region_dir::RegionInfo;

    #[test]
    fn bucket_starts_full_refills_and_caps() {
        let mut b = TokenBucket::new(30, 1_000);
        assert_eq!(b.available(1_000), 30);
        for _ in 0..30 {
            assert!(b.take(1_000));
        }
        assert!(!b.take(1_000), "empty");
        // 30 a minute: one every 2 s.
        assert_eq!(b.available(2_999), 0);
        assert_eq!(b.available(3_000), 1);
        assert!(b.take(3_000));
        assert_eq!(b.available(3_000), 0);
        // A clock that goes back earns nothing and breaks nothing.
        assert_eq!(b.available(500), 0);
        // Long idle: capped at one minute's worth.
        assert_eq!(b.available(10_000_000), 30);
    }

    #[test]
    fn forced_take_goes_into_debt_that_is_paid_first() {
        let mut b = TokenBucket::new(60, 0);
        for _ in 0..60 {
            assert!(b.take(0));
        }
        b.force_take(0);
        b.force_take(0);
        assert_eq!(b.available(0), 0);
        // One a second: the two tokens of debt are paid back before one is available.
        assert_eq!(b.available(2_000), 0);
        assert_eq!(b.available(3_000), 1);
        // The debt is bounded by the capacity.
        for _ in 0..1_000 {
            b.force_take(3_000);
        }
        assert_eq!(b.available(3_000 + 60_000), 0);
        assert_eq!(b.available(3_000 + 61_000), 1);
    }

    fn move_op(from: u64, to: u64) -> Operator {
        let info = RegionInfo::default();
        Operator::new(
            &info,
            "balance-region",
            vec![
                Step::AddLearner {
                    store_id: to,
                    peer_id: 0,
                },
                Step::PromoteLearner {
                    store_id: to,
                    peer_id: 0,
                },
                Step::RemovePeer {
                    store_id: from,
                    peer_id: 1,
                },
            ],
        )
    }

    #[test]
    fn operators_consume_per_store_and_direction() {
        let mut l = StoreLimits::new(2, 1);
        assert!(l.consume_operator(&move_op(1, 2), 0, false));
        assert_eq!(l.available(2, LimitKind::AddPeer, 0), 1);
        assert_eq!(l.available(1, LimitKind::RemovePeer, 0), 0);
        assert_eq!(l.available(1, LimitKind::AddPeer, 0), 2, "untouched");
        // Store 1 has no removal left: refused, and nothing is consumed.
        assert!(!l.consume_operator(&move_op(1, 2), 0, false));
        assert_eq!(l.available(2, LimitKind::AddPeer, 0), 1);
        // Forced: consumed anyway.
        assert!(l.consume_operator(&move_op(1, 2), 0, true));
        assert_eq!(l.available(2, LimitKind::AddPeer, 0), 0);
        assert_eq!(
            l.available(1, LimitKind::RemovePeer, 60_000),
            0,
            "paying debt"
        );
        assert_eq!(l.available(1, LimitKind::RemovePeer, 120_000), 1);
        l.retain_stores(|s| s != 1);
        assert_eq!(
            l.available(1, LimitKind::RemovePeer, 120_000),
            1,
            "fresh bucket"
        );
        assert_eq!(l.available(2, LimitKind::AddPeer, 0), 0, "kept");
    }
}
