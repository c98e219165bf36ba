//! The keys a request touches, as load-based split samples them ([`crate::load_split`]):
//! each key of a point or batch request, each scan's range. At most [`RANGES_MAX`] per request,
//! so a hot region's sampling costs a bounded copy whatever the batch.

use proto::kvrpcpb;

use crate::load_split::KeyRange;

/// Most ranges one request gives the sampler.
const RANGES_MAX: usize = 16;

/// A request whose keys load-based split samples.
pub(crate) trait SampleKeys {
    /// Its keys, as client keys, at most [`RANGES_MAX`].
    fn key_ranges(&self) -> Vec<KeyRange>;
}

fn points<'a>(keys: impl IntoIterator<Item = &'a Vec<u8>>) -> Vec<KeyRange> {
    keys.into_iter()
        .take(RANGES_MAX)
        .map(|k| KeyRange::Point(k.clone()))
        .collect()
}

/// A scan's range in key order: a reverse scan starts at its upper bound.
fn scan(start: &[u8], end: &[u8], reverse: bool) -> KeyRange {
    let (lower, upper) = if reverse { (end, start) } else { (start, end) };
    KeyRange::Range(lower.to_vec(), upper.to_vec())
}

macro_rules! sample_keys {
    ($($t:ty => |$r:ident| $body:expr;)*) => {$(
        impl SampleKeys for $t {
            fn key_ranges(&self) -> Vec<KeyRange> {
                let $r = self;
                $body
            }
        }
    )*};
}

sample_keys! {
    kvrpcpb::GetRequest => |r| points([&r.key]);
    kvrpcpb::BatchGetRequest => |r| points(&r.keys);
    kvrpcpb::ScanRequest => |r| vec![scan(&r.start_key, &r.end_key, r.reverse)];
    kvrpcpb::PrewriteRequest => |r| points(r.mutations.iter().map(|m| &m.key));
    kvrpcpb::PessimisticLockRequest => |r| points(r.mutations.iter().map(|m| &m.key));
    kvrpcpb::PessimisticRollbackRequest => |r| points(&r.keys);
    kvrpcpb::CommitRequest => |r| points(&r.keys);
    kvrpcpb::CleanupRequest => |r| points([&r.key]);
    kvrpcpb::BatchRollbackRequest => |r| points(&r.keys);
    kvrpcpb::GcRequest => |_r| Vec::new();
    kvrpcpb::DeleteRangeRequest => |r| vec![scan(&r.start_key, &r.end_key, false)];
    kvrpcpb::RawGetRequest => |r| points([&r.key]);
    kvrpcpb::RawBatchGetRequest => |r| points(&r.keys);
    kvrpcpb::RawPutRequest => |r| points([&r.key]);
    kvrpcpb::RawBatchPutRequest => |r| points(r.pairs.iter().map(|p| &p.key));
    kvrpcpb::RawDeleteRequest => |r| points([&r.key]);
    kvrpcpb::RawBatchDeleteRequest => |r| points(&r.keys);
    kvrpcpb::RawScanRequest => |r| vec![scan(&r.start_key, &r.end_key, r.reverse)];
    kvrpcpb::RawDeleteRangeRequest => |r| vec![scan(&r.start_key, &r.end_key, false)];
    kvrpcpb::RawBatchScanRequest => |r| {
        r.ranges
            .iter()
            .take(RANGES_MAX)
            .map(|k| scan(&k.start_key, &k.end_key, r.reverse))
            .collect()
    };
    kvrpcpb::RawGetKeyTtlRequest => |r| points([&r.key]);
    kvrpcpb::RawCasRequest => |r| points([&r.key]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_give_each_key_up_to_the_bound_and_reverse_scans_their_order() {
        let req = kvrpcpb::RawBatchGetRequest {
            keys: (0..40u8).map(|i| vec![i]).collect(),
            ..Default::default()
        };
        let ranges = req.key_ranges();
        assert_eq!(ranges.len(), RANGES_MAX);
        assert_eq!(ranges[1], KeyRange::Point(vec![1]));
        let rev = kvrpcpb::RawScanRequest {
            start_key: b"z".to_vec(),
            end_key: b"a".to_vec(),
            reverse: true,
            ..Default::default()
        };
        assert_eq!(
            rev.key_ranges(),
            vec![KeyRange::Range(b"a".to_vec(), b"z".to_vec())]
        );
    }
}
