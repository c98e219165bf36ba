//! Small helpers over regions, epochs and keys shared by the poller and the apply thread.

use proto::metapb;
use raft::eraftpb::ConfState;

/// Whether the encoded `key` lies in `[start_key, end_key)` of the region (empty end = +inf).
pub fn key_in_region(key: &[u8], region: &metapb::Region) -> bool {
    key >= region.start_key.as_slice()
        && (region.end_key.is_empty() || key < region.end_key.as_slice())
}

/// The region's epoch, or the zero epoch.
pub fn epoch_of(region: &metapb::Region) -> metapb::RegionEpoch {
    region.region_epoch.unwrap_or_default()
}

/// Whether a request made under `req` may run on a region at `current`: a data request needs the
/// same version (no split since), an admin request also the same conf_ver.
pub fn epoch_matches(
    req: &metapb::RegionEpoch,
    current: &metapb::RegionEpoch,
    check_conf_ver: bool,
) -> bool {
    req.version == current.version && (!check_conf_ver || req.conf_ver == current.conf_ver)
}

/// Whether `a` is older than `b` in either dimension: the one comparison of epochs the store
/// makes (a request, a message, PD's answer or a tombstone is judged by it). The rule is
/// `proto::epoch`'s, which PD's region directory uses too.
pub use proto::epoch::is_stale as is_epoch_stale;

/// The newest of two epochs in each dimension: what a tombstone keeps, so that every message
/// from before the peer's removal compares as not newer (see [`is_epoch_stale`]).
pub use proto::epoch::merge as merge_epochs;

/// The raft membership described by the region's peers.
pub fn conf_state_from_region(region: &metapb::Region) -> ConfState {
    let mut cs = ConfState::default();
    for p in &region.peers {
        if p.role == metapb::PeerRole::Learner as i32 {
            cs.mut_learners().push(p.id);
        } else {
            cs.mut_voters().push(p.id);
        }
    }
    cs
}

/// This store's peer of the region.
pub fn find_peer(region: &metapb::Region, store_id: u64) -> Option<&metapb::Peer> {
    region.peers.iter().find(|p| p.store_id == store_id)
}

/// The peer with `peer_id`.
pub fn find_peer_by_id(region: &metapb::Region, peer_id: u64) -> Option<&metapb::Peer> {
    region.peers.iter().find(|p| p.id == peer_id)
}

/// Whether two key ranges overlap (empty end = +inf).
pub fn ranges_overlap(a: &metapb::Region, b: &metapb::Region) -> bool {
    let a_before_b = !a.end_key.is_empty() && a.end_key <= b.start_key;
    let b_before_a = !b.end_key.is_empty() && b.end_key <= a.start_key;
    !(a_before_b || b_before_a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(start: &[u8], end: &[u8]) -> metapb::Region {
        metapb::Region {
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn key_ranges() {
        let r = region(b"b", b"d");
        assert!(!key_in_region(b"a", &r));
        assert!(key_in_region(b"b", &r));
        assert!(key_in_region(b"c", &r));
        assert!(!key_in_region(b"d", &r));
        assert!(key_in_region(b"zzz", &region(b"b", b"")));
        assert!(ranges_overlap(&region(b"a", b"c"), &region(b"b", b"")));
        assert!(!ranges_overlap(&region(b"a", b"b"), &region(b"b", b"c")));
        assert!(ranges_overlap(&region(b"", b""), &region(b"b", b"c")));
    }

    #[test]
    fn epochs_follow_the_shared_rule() {
        let epoch = |version, conf_ver| metapb::RegionEpoch { version, conf_ver };
        // The cases live with the rule (`proto::epoch`); this pins that the store uses it.
        assert!(is_epoch_stale(&epoch(3, 4), &epoch(2, 5)));
        assert!(!is_epoch_stale(&epoch(2, 5), &epoch(2, 5)));
        assert_eq!(merge_epochs(&epoch(3, 4), &epoch(2, 5)), epoch(3, 5));
    }
}
