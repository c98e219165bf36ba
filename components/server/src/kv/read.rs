//! Raw reads: every request was checked against the key limits (`wire_check`); each key is
//! then checked against the region the read view was served for, and reads of many pairs are
//! bounded by the response budget.

use proto::kvrpcpb;
use storage::raw::{self, ScanOptions, ScanRange};
use storage::{cf_from_request, RegionRange};

use super::{check_in_region, header, now_secs, KvInner, ReqError};

type Res<T> = Result<T, ReqError>;

/// `[lower, upper)` of a scan request (already checked by `wire_check`): a reverse scan sends
/// its upper bound as `start_key`.
pub(super) fn scan_range<'a>(
    start_key: &'a [u8],
    end_key: &'a [u8],
    reverse: bool,
) -> ScanRange<'a> {
    let (lower, upper) = wire_check::request::scan_bounds(start_key, end_key, reverse);
    ScanRange { lower, upper }
}

impl KvInner {
    pub(super) async fn raw_get(
        &self,
        req: kvrpcpb::RawGetRequest,
    ) -> Res<kvrpcpb::RawGetResponse> {
        let cf = cf_from_request(&req.cf)?;
        let view = self.read_view(header(req.context.as_ref())).await?;
        check_in_region(&view.region, &[&req.key])?;
        let value = raw::raw_get(view.snapshot.as_ref(), cf, &req.key, now_secs())?;
        let not_found = value.is_none();
        if let Some(v) = &value {
            self.count_read(&view.region, [(req.key.as_slice(), v.as_slice())]);
        }
        Ok(kvrpcpb::RawGetResponse {
            value: value.unwrap_or_default(),
            not_found,
            ..Default::default()
        })
    }

    pub(super) async fn raw_batch_get(
        &self,
        req: kvrpcpb::RawBatchGetRequest,
    ) -> Res<kvrpcpb::RawBatchGetResponse> {
        let cf = cf_from_request(&req.cf)?;
        let view = self.read_view(header(req.context.as_ref())).await?;
        check_in_region(&view.region, &req.keys)?;
        let pairs = raw::raw_batch_get(
            view.snapshot.as_ref(),
            cf,
            &req.keys,
            now_secs(),
            &mut self.response_budget(),
        )?;
        self.count_read(&view.region, pairs.iter().map(pair_bytes));
        Ok(kvrpcpb::RawBatchGetResponse {
            pairs: to_pb_pairs(pairs),
            ..Default::default()
        })
    }

    pub(super) async fn raw_get_key_ttl(
        &self,
        req: kvrpcpb::RawGetKeyTtlRequest,
    ) -> Res<kvrpcpb::RawGetKeyTtlResponse> {
        let cf = cf_from_request(&req.cf)?;
        let view = self.read_view(header(req.context.as_ref())).await?;
        check_in_region(&view.region, &[&req.key])?;
        let ttl = raw::raw_get_key_ttl(view.snapshot.as_ref(), cf, &req.key, now_secs())?;
        Ok(kvrpcpb::RawGetKeyTtlResponse {
            ttl: ttl.unwrap_or(0),
            not_found: ttl.is_none(),
            ..Default::default()
        })
    }

    pub(super) async fn raw_scan(
        &self,
        req: kvrpcpb::RawScanRequest,
    ) -> Res<kvrpcpb::RawScanResponse> {
        let cf = cf_from_request(&req.cf)?;
        let range = scan_range(&req.start_key, &req.end_key, req.reverse);
        let view = self.read_view(header(req.context.as_ref())).await?;
        check_in_region(&view.region, &[range.lower])?;
        let region = RegionRange {
            start_key: &view.region.start_key,
            end_key: &view.region.end_key,
        };
        let opts = ScanOptions {
            limit: req.limit as usize,
            key_only: req.key_only,
            reverse: req.reverse,
        };
        let pairs = raw::raw_scan(
            view.snapshot.as_ref(),
            cf,
            region,
            range,
            opts,
            now_secs(),
            &mut self.response_budget(),
        )?;
        self.count_read(&view.region, pairs.iter().map(pair_bytes));
        Ok(kvrpcpb::RawScanResponse {
            kvs: to_pb_pairs(pairs),
            ..Default::default()
        })
    }

    pub(super) async fn raw_batch_scan(
        &self,
        req: kvrpcpb::RawBatchScanRequest,
    ) -> Res<kvrpcpb::RawBatchScanResponse> {
        let cf = cf_from_request(&req.cf)?;
        let mut ranges = Vec::with_capacity(req.ranges.len());
        for r in &req.ranges {
            ranges.push(scan_range(&r.start_key, &r.end_key, req.reverse));
        }
        let view = self.read_view(header(req.context.as_ref())).await?;
        let lowers: Vec<&[u8]> = ranges.iter().map(|r| r.lower).collect();
        check_in_region(&view.region, &lowers)?;
        let region = RegionRange {
            start_key: &view.region.start_key,
            end_key: &view.region.end_key,
        };
        let opts = ScanOptions {
            limit: req.each_limit as usize,
            key_only: req.key_only,
            reverse: req.reverse,
        };
        let now = now_secs();
        let mut budget = self.response_budget();
        let mut kvs = Vec::new();
        for range in ranges {
            kvs.extend(to_pb_pairs(raw::raw_scan(
                view.snapshot.as_ref(),
                cf,
                region,
                range,
                opts,
                now,
                &mut budget,
            )?));
        }
        let read = kvs.iter().map(|p| (p.key.as_slice(), p.value.as_slice()));
        self.count_read(&view.region, read);
        Ok(kvrpcpb::RawBatchScanResponse {
            kvs,
            ..Default::default()
        })
    }
}

fn pair_bytes(p: &storage::KvPair) -> (&[u8], &[u8]) {
    (&p.key, &p.value)
}

fn to_pb_pairs(pairs: Vec<storage::KvPair>) -> Vec<kvrpcpb::KvPair> {
    pairs
        .into_iter()
        .map(|p| kvrpcpb::KvPair {
            key: p.key,
            value: p.value,
            ..Default::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_scan_swaps_bounds() {
        let r = scan_range(b"b", b"d", false);
        assert_eq!((r.lower, r.upper), (b"b".as_slice(), b"d".as_slice()));
        let r = scan_range(b"d", b"b", true);
        assert_eq!((r.lower, r.upper), (b"b".as_slice(), b"d".as_slice()));
    }
}
