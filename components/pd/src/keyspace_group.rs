//! Keyspace groups, what balance-leader and balance-region balance within.
//!
//! PD pre-splits at every keyspace boundary and a region split off keeps its parent's stores,
//! so balancing counts over all regions together can leave every region of one keyspace on
//! half the stores: counts balanced, load not. The balance schedulers therefore balance each
//! group on its own. A region's group is the keyspace (raw `r` or transactional `x` + 3-byte
//! id: the first 4 raw bytes) its whole range lies in; a region outside every keyspace, or
//! spanning more than one, is in the *outside* group ([`OUTSIDE`]).
//!
//! What a group holds per store is tallied in `scheduler::group_tallies`. Pure: no I/O, and
//! nothing of PD's own (the merge checker and the schedulers build on it).

use codec::keys::{RAW_MODE_PREFIX, TXN_MODE_PREFIX};
use codec::memcomparable::{decode_bytes, encode_bytes};
use proto::metapb::Region;

/// A keyspace group: the 4-byte prefix of the keyspace, or None for the outside group.
pub type KeyspaceGroup = Option<[u8; 4]>;

/// The group of regions outside every keyspace, or spanning several.
pub const OUTSIDE: KeyspaceGroup = None;

/// The group `region` lies in (see the module docs).
pub fn region_group(region: &Region) -> KeyspaceGroup {
    let (prefix, _, hi) = keyspace_range(&region.start_key)?;
    let is_keyspace = prefix[0] == RAW_MODE_PREFIX || prefix[0] == TXN_MODE_PREFIX;
    (is_keyspace && !region.end_key.is_empty() && region.end_key <= hi).then_some(prefix)
}

/// The range of encoded keys of the keyspace (mode byte + 3-byte id: the first 4 raw bytes)
/// that the encoded `key` belongs to, and that 4-byte prefix; None when its raw key is
/// shorter than 4 bytes or does not decode.
pub(crate) fn keyspace_range(key: &[u8]) -> Option<([u8; 4], Vec<u8>, Vec<u8>)> {
    let (raw, _) = decode_bytes(key).ok()?;
    let prefix: [u8; 4] = raw.get(..4)?.try_into().ok()?;
    let next = u32::from_be_bytes(prefix).checked_add(1)?;
    Some((
        prefix,
        encode_bytes(&prefix),
        encode_bytes(&next.to_be_bytes()),
    ))
}
