//! Transactional reads (snapshot isolation at the request's version).
//!
//! Order matters for async commit: a read first raises the store's `max_ts` to its version,
//! then checks the in-memory locks of prewrites in flight, and only then takes its read view.
//! A prewrite either computed its commit ts after the raise (so it commits above the read), or
//! installed its memory lock before the check (so the read reports it), or was applied before
//! the view was taken (so the read finds the lock in the engine).

use proto::kvrpcpb;
use storage::mvcc::{self, TxnScanOptions};
use storage::txn::TxnError;
use txn_types::{Key, TimeStamp};

use super::txn_pb::{key_error, lock_info_to_pb, some_key_error};
use super::{check_in_region, header, scan_range, KvInner, ReqError};

type Res<T> = Result<T, ReqError>;

/// The locks a request says it may read past (resolved or committed by the client).
fn bypass_locks(ctx: Option<&kvrpcpb::Context>) -> Vec<TimeStamp> {
    ctx.map(|c| {
        c.resolved_locks
            .iter()
            .chain(&c.committed_locks)
            .map(|t| TimeStamp::new(*t))
            .collect()
    })
    .unwrap_or_default()
}

impl KvInner {
    /// Raises `max_ts` to `read_ts`, then fails if a prewrite in flight holds one of `keys`.
    fn check_memory_locks(
        &self,
        keys: &[&[u8]],
        read_ts: TimeStamp,
        bypass: &[TimeStamp],
    ) -> Result<(), TxnError> {
        self.cm.update_max_ts(read_ts);
        for key in keys {
            self.cm.read_key_check(&Key::from_raw(key), |lock| {
                mvcc::check_lock_conflict(lock, key, read_ts, bypass)
            })?;
        }
        Ok(())
    }

    pub(super) async fn kv_get(&self, req: kvrpcpb::GetRequest) -> Res<kvrpcpb::GetResponse> {
        let read_ts = TimeStamp::new(req.version);
        let bypass = bypass_locks(req.context.as_ref());
        let mut resp = kvrpcpb::GetResponse::default();
        if let Err(e) = self.check_memory_locks(&[&req.key], read_ts, &bypass) {
            resp.error = some_key_error(e)?;
            return Ok(resp);
        }
        let view = self.read_view(header(req.context.as_ref())).await?;
        check_in_region(&view.region, &[&req.key])?;
        match mvcc::get(view.snapshot.as_ref(), &req.key, read_ts, &bypass) {
            Ok(Some(v)) => {
                self.count_read(&view.region, [(req.key.as_slice(), v.as_slice())]);
                resp.value = v;
            }
            Ok(None) => resp.not_found = true,
            Err(e) => resp.error = some_key_error(e)?,
        }
        Ok(resp)
    }

    pub(super) async fn kv_batch_get(
        &self,
        req: kvrpcpb::BatchGetRequest,
    ) -> Res<kvrpcpb::BatchGetResponse> {
        let read_ts = TimeStamp::new(req.version);
        let bypass = bypass_locks(req.context.as_ref());
        let mut resp = kvrpcpb::BatchGetResponse::default();
        let keys: Vec<&[u8]> = req.keys.iter().map(Vec::as_slice).collect();
        if let Err(e) = self.check_memory_locks(&keys, read_ts, &bypass) {
            resp.error = some_key_error(e)?;
            return Ok(resp);
        }
        let view = self.read_view(header(req.context.as_ref())).await?;
        check_in_region(&view.region, &req.keys)?;
        match mvcc::batch_get(
            view.snapshot.as_ref(),
            &req.keys,
            read_ts,
            &bypass,
            &mut self.response_budget(),
        ) {
            Ok(pairs) => {
                let read = pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice()));
                self.count_read(&view.region, read);
                resp.pairs = pairs
                    .into_iter()
                    .map(|(key, value)| kvrpcpb::KvPair {
                        key,
                        value,
                        ..Default::default()
                    })
                    .collect()
            }
            Err(e) => resp.error = some_key_error(e)?,
        }
        Ok(resp)
    }

    pub(super) async fn kv_scan(&self, req: kvrpcpb::ScanRequest) -> Res<kvrpcpb::ScanResponse> {
        let range = scan_range(&req.start_key, &req.end_key, req.reverse);
        let read_ts = TimeStamp::new(req.version);
        let bypass = bypass_locks(req.context.as_ref());
        let mut resp = kvrpcpb::ScanResponse::default();
        self.cm.update_max_ts(read_ts);
        let lower = Key::from_raw(range.lower);
        let upper = (!range.upper.is_empty()).then(|| Key::from_raw(range.upper));
        let mem_check = self
            .cm
            .read_range_check(Some(&lower), upper.as_ref(), |key, lock| {
                let raw = key.to_raw().map_err(TxnError::from)?;
                mvcc::check_lock_conflict(lock, &raw, read_ts, &bypass)
            });
        if let Err(e) = mem_check {
            resp.error = some_key_error(e)?;
            return Ok(resp);
        }
        let view = self.read_view(header(req.context.as_ref())).await?;
        let opts = TxnScanOptions {
            region_start: &view.region.start_key,
            region_end: &view.region.end_key,
            start_key: &req.start_key,
            end_key: &req.end_key,
            limit: req.limit as usize,
            read_ts,
            key_only: req.key_only,
            reverse: req.reverse,
            bypass_locks: &bypass,
        };
        match mvcc::scan(view.snapshot.as_ref(), &opts, &mut self.response_budget()) {
            Ok(items) => {
                for item in items {
                    resp.pairs.push(match item {
                        Ok((key, value)) => kvrpcpb::KvPair {
                            key,
                            value,
                            ..Default::default()
                        },
                        Err(e) => kvrpcpb::KvPair {
                            error: Some(key_error(e)?),
                            ..Default::default()
                        },
                    });
                }
            }
            Err(e) => resp.error = some_key_error(e)?,
        }
        let read = resp.pairs.iter().filter(|p| p.error.is_none());
        self.count_read(
            &view.region,
            read.map(|p| (p.key.as_slice(), p.value.as_slice())),
        );
        Ok(resp)
    }

    pub(super) async fn kv_scan_lock(
        &self,
        req: kvrpcpb::ScanLockRequest,
    ) -> Res<kvrpcpb::ScanLockResponse> {
        let view = self.read_view(header(req.context.as_ref())).await?;
        let mut resp = kvrpcpb::ScanLockResponse::default();
        match mvcc::scan_locks(
            view.snapshot.as_ref(),
            &view.region.start_key,
            &view.region.end_key,
            &req.start_key,
            &req.end_key,
            TimeStamp::new(req.max_version),
            req.limit as usize,
            &mut self.response_budget(),
        ) {
            Ok(locks) => resp.locks = locks.into_iter().map(lock_info_to_pb).collect(),
            Err(e) => resp.error = some_key_error(e)?,
        }
        Ok(resp)
    }
}
