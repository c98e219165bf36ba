//! The one rule for comparing two epochs of the same region, shared by the store (`raftstore`)
//! and PD (`pd`'s region directory), so that both judge a report, a message or a tombstone
//! alike.
//!
//! A region's `version` grows with every split and merge, its `conf_ver` with every membership
//! change; neither ever goes back. So an epoch lower than another in either dimension is from
//! before a change the other has seen: it is **stale**, even when it is higher in the other
//! dimension (a report that mixes the two comes from a peer that missed a change). An epoch
//! that is not stale and higher in either dimension is **newer**; equal in both is the same.
//!
//! The `conf_ver`s of two different regions count different things and are never compared:
//! whether one region's range supersedes another's is a matter of `version` alone
//! ([`range_is_stale`]).
#![warn(clippy::all)]

use crate::metapb::RegionEpoch;

/// How an epoch relates to another epoch of the same region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpochOrder {
    /// Lower in version or in conf_ver: from before a change the other has seen.
    Stale,
    /// Equal in both.
    Same,
    /// Not stale, and higher in version or in conf_ver.
    Newer,
}

/// How `a` relates to `b`, two epochs of the same region.
pub fn compare(a: &RegionEpoch, b: &RegionEpoch) -> EpochOrder {
    if a.version < b.version || a.conf_ver < b.conf_ver {
        EpochOrder::Stale
    } else if a.version > b.version || a.conf_ver > b.conf_ver {
        EpochOrder::Newer
    } else {
        EpochOrder::Same
    }
}

/// Whether `a` is older than `b` in either dimension ([`EpochOrder::Stale`]).
pub fn is_stale(a: &RegionEpoch, b: &RegionEpoch) -> bool {
    compare(a, b) == EpochOrder::Stale
}

/// Whether `a` is newer than `b`: not stale, and higher in either dimension
/// ([`EpochOrder::Newer`]).
pub fn is_newer(a: &RegionEpoch, b: &RegionEpoch) -> bool {
    compare(a, b) == EpochOrder::Newer
}

/// The newest of two epochs in each dimension: neither `a` nor `b` is newer than it (what a
/// tombstone keeps, so that every message from before a peer's removal compares as stale or
/// the same).
pub fn merge(a: &RegionEpoch, b: &RegionEpoch) -> RegionEpoch {
    RegionEpoch {
        version: a.version.max(b.version),
        conf_ver: a.conf_ver.max(b.conf_ver),
    }
}

/// Whether a region at epoch `a` must yield its range to a *different* region at epoch `b`
/// that overlaps it: `b` has seen a later split or merge. Only versions are compared (the
/// conf_vers of two regions are unrelated).
pub fn range_is_stale(a: &RegionEpoch, b: &RegionEpoch) -> bool {
    a.version < b.version
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(version: u64, conf_ver: u64) -> RegionEpoch {
        RegionEpoch { version, conf_ver }
    }

    #[test]
    fn lower_in_either_dimension_is_stale() {
        assert_eq!(compare(&epoch(1, 5), &epoch(2, 5)), EpochOrder::Stale);
        assert_eq!(compare(&epoch(2, 4), &epoch(2, 5)), EpochOrder::Stale);
        assert_eq!(compare(&epoch(1, 4), &epoch(2, 5)), EpochOrder::Stale);
    }

    #[test]
    fn mixed_epochs_are_stale_both_ways() {
        // Higher version, lower conf_ver (and the reverse): each missed the other's change.
        assert_eq!(compare(&epoch(3, 4), &epoch(2, 5)), EpochOrder::Stale);
        assert_eq!(compare(&epoch(2, 5), &epoch(3, 4)), EpochOrder::Stale);
        assert!(!is_newer(&epoch(3, 4), &epoch(2, 5)));
        assert!(!is_newer(&epoch(2, 5), &epoch(3, 4)));
    }

    #[test]
    fn equal_is_the_same() {
        assert_eq!(compare(&epoch(2, 5), &epoch(2, 5)), EpochOrder::Same);
        assert!(!is_stale(&epoch(2, 5), &epoch(2, 5)));
        assert!(!is_newer(&epoch(2, 5), &epoch(2, 5)));
    }

    #[test]
    fn higher_in_either_dimension_and_lower_in_none_is_newer() {
        assert_eq!(compare(&epoch(3, 5), &epoch(2, 5)), EpochOrder::Newer);
        assert_eq!(compare(&epoch(2, 6), &epoch(2, 5)), EpochOrder::Newer);
        assert_eq!(compare(&epoch(3, 6), &epoch(2, 5)), EpochOrder::Newer);
        assert!(is_newer(&epoch(3, 6), &epoch(2, 5)));
        assert!(is_stale(&epoch(2, 5), &epoch(3, 6)));
    }

    #[test]
    fn merge_is_newer_than_or_the_same_as_both() {
        let m = merge(&epoch(3, 4), &epoch(2, 5));
        assert_eq!(m, epoch(3, 5));
        assert!(!is_stale(&m, &epoch(3, 4)) && !is_stale(&m, &epoch(2, 5)));
        assert!(is_stale(&epoch(3, 4), &m) && is_stale(&epoch(2, 5), &m));
        assert!(is_stale(&m, &epoch(3, 6)));
    }

    #[test]
    fn ranges_compare_by_version_only() {
        assert!(range_is_stale(&epoch(1, 9), &epoch(2, 1)));
        assert!(!range_is_stale(&epoch(2, 1), &epoch(2, 9)));
        assert!(!range_is_stale(&epoch(3, 1), &epoch(2, 9)));
    }
}
