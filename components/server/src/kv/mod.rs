//! The client-facing `tikvpb.Tikv` service: raw and transactional requests checked against
//! the key and value limits and the API V2 key modes (`wire_check`, before anything else),
//! read through a leader's read view or computed from one and written through raft, and
//! answered with region, key and storage errors as data. Reads that return many pairs are
//! bounded by `storage.response_max_bytes` (a [`storage::ResponseBudget`]), writes by the raft
//! entry limit (`RaftEntryTooLarge`); the number of keys in a request is not limited.

mod read;
mod sample;
mod txn_pb;
mod txn_read;
mod txn_resolve;
mod txn_write;
mod write;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use engine::EngineSnapshot;
use engine::KvEngine;
use proto::tikvpb::tikv_server::Tikv;
use proto::{errorpb, kvrpcpb, metapb};
use raftstore::{RaftRouter, ReadResponse, RegionError, RequestHeader};
use storage::txn::TxnError;
use storage::{
    ConcurrencyManager, LatchGuard, Latches, Modify, RegionRange, ResponseBudget, StorageConfig,
    StorageError,
};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};
use txn_types::TimeStamp;
use wire_check::CheckRequest;

use crate::disk::DiskMonitor;
use crate::flow::{write_size, FlowMeter, QueryKind};
use crate::metrics;
use crate::pd::Pd;

use read::scan_range;
pub(crate) use txn_resolve::GC_KEYS_PER_ROUND;

/// Why one client request failed; both kinds are answered inside the response.
#[derive(Debug)]
pub(crate) enum ReqError {
    /// The region cannot serve it (the client refreshes its cache and retries).
    Region(Box<RegionError>),
    /// The request itself is bad, or the data could not be read.
    Storage(StorageError),
    /// The request is malformed in a way the storage limits do not cover (a zero timestamp,
    /// a prewrite without a primary, an unknown operation).
    Invalid(String),
}

impl From<RegionError> for ReqError {
    fn from(e: RegionError) -> Self {
        ReqError::Region(Box::new(e))
    }
}

impl From<wire_check::RequestError> for ReqError {
    fn from(e: wire_check::RequestError) -> Self {
        ReqError::Invalid(e.to_string())
    }
}

impl From<StorageError> for ReqError {
    fn from(e: StorageError) -> Self {
        ReqError::Storage(e)
    }
}

/// A response that can carry a region error and a request error.
pub(crate) trait ErrorResponse: Default {
    /// Sets `region_error`.
    fn set_region_error(&mut self, e: errorpb::Error);
    /// Sets the request error (the `error` string, or a key error where there is none).
    fn set_error(&mut self, msg: String);
}

/// `ErrorResponse` for response types, each group with how it carries a request error: `msg`
/// names the message in the expression that sets it.
macro_rules! error_response {
    ($(|$self_:ident, $msg:ident| $set:expr => [$($t:ty),* $(,)?];)*) => {$($(
        impl ErrorResponse for $t {
            fn set_region_error(&mut self, e: errorpb::Error) {
                self.region_error = Some(e);
            }
            fn set_error(&mut $self_, $msg: String) {
                $set;
            }
        }
    )*)*};
}

error_response! {
    // An `error` string.
    |self, msg| self.error = msg => [
        kvrpcpb::RawGetResponse,
        kvrpcpb::RawPutResponse,
        kvrpcpb::RawBatchPutResponse,
        kvrpcpb::RawDeleteResponse,
        kvrpcpb::RawBatchDeleteResponse,
        kvrpcpb::RawDeleteRangeResponse,
        kvrpcpb::RawGetKeyTtlResponse,
        kvrpcpb::RawCasResponse,
        kvrpcpb::UnsafeDestroyRangeResponse,
        kvrpcpb::DeleteRangeResponse,
    ];
    // A `KeyError` with `abort` set.
    |self, msg| self.error = Some(abort_error(msg)) => [
        kvrpcpb::ScanLockResponse,
        kvrpcpb::GetResponse,
        kvrpcpb::BatchGetResponse,
        kvrpcpb::ScanResponse,
        kvrpcpb::CommitResponse,
        kvrpcpb::BatchRollbackResponse,
        kvrpcpb::CleanupResponse,
        kvrpcpb::TxnHeartBeatResponse,
        kvrpcpb::CheckTxnStatusResponse,
        kvrpcpb::CheckSecondaryLocksResponse,
        kvrpcpb::ResolveLockResponse,
        kvrpcpb::GcResponse,
    ];
    // A list of key errors: the request error is the only one.
    |self, msg| self.errors = vec![abort_error(msg)] => [
        kvrpcpb::PrewriteResponse,
        kvrpcpb::PessimisticLockResponse,
        kvrpcpb::PessimisticRollbackResponse,
    ];
    // No error field (as TiKV does): one pair carrying the error.
    |self, msg| self.kvs = vec![abort_pair(msg)] => [
        kvrpcpb::RawScanResponse,
        kvrpcpb::RawBatchScanResponse,
    ];
    |self, msg| self.pairs = vec![abort_pair(msg)] => [kvrpcpb::RawBatchGetResponse];
}

fn abort_error(msg: String) -> kvrpcpb::KeyError {
    kvrpcpb::KeyError {
        abort: msg,
        ..Default::default()
    }
}

fn abort_pair(msg: String) -> kvrpcpb::KvPair {
    kvrpcpb::KvPair {
        error: Some(abort_error(msg)),
        ..Default::default()
    }
}

/// Shared state of the `Tikv` service.
pub(crate) struct KvInner {
    pub(crate) router: RaftRouter,
    pub(crate) kv: Arc<dyn KvEngine>,
    pub(crate) limits: StorageConfig,
    /// The key and value limits of `limits`, as every request is checked against them.
    pub(crate) request_limits: wire_check::Limits,
    pub(crate) latches: Latches,
    pub(crate) request_timeout: Duration,
    /// `max_ts` and the memory locks of async-commit and 1PC prewrites in flight.
    pub(crate) cm: Arc<ConcurrencyManager>,
    /// PD, for the timestamp that syncs `max_ts` when a region gets a new leader.
    pub(crate) pd: Pd,
    /// Per region, the leader term in which `max_ts` was last synced with PD's TSO.
    pub(crate) max_ts_synced: DashMap<u64, u64>,
    /// Whether the store's disk is below its reserve (writes adding data are refused).
    pub(crate) disk: DiskMonitor,
    /// Keys and bytes written and read per region, for PD's heartbeats.
    pub(crate) flow: Arc<FlowMeter>,
}

/// The `tikvpb.Tikv` service of one store. Cheap to clone.
#[derive(Clone)]
pub struct KvService {
    inner: Arc<KvInner>,
}

impl KvService {
    /// A service over `router` (reads and writes through raft) and `kv` (for
    /// `UnsafeDestroyRange`, which bypasses raft), with request limits and timeout; `cm` is
    /// the store's concurrency manager, `pd` its PD client, `disk` its disk space, `flow` where
    /// the traffic it serves is counted.
    #[allow(clippy::too_many_arguments)] // the store's shared parts, each named
    pub fn new(
        router: RaftRouter,
        kv: Arc<dyn KvEngine>,
        limits: StorageConfig,
        request_timeout: Duration,
        cm: Arc<ConcurrencyManager>,
        pd: Pd,
        disk: DiskMonitor,
        flow: Arc<FlowMeter>,
    ) -> Self {
        let latches = Latches::new(limits.latch_slots);
        let request_limits = wire_check::Limits {
            key_max_bytes: limits.key_max_bytes,
            value_max_bytes: limits.value_max_bytes,
        };
        KvService {
            inner: Arc::new(KvInner {
                router,
                kv,
                limits,
                request_limits,
                latches,
                request_timeout,
                cm,
                pd,
                max_ts_synced: DashMap::new(),
                disk,
                flow,
            }),
        }
    }

    /// The shared state, for the GC worker.
    pub(crate) fn inner(&self) -> Arc<KvInner> {
        self.inner.clone()
    }

    /// Runs one request: counts it, bounds its time, and turns its error into response data.
    async fn handle<R, F>(
        &self,
        kind: &'static str,
        on_timeout: Timeout,
        fut: F,
    ) -> Result<Response<R>, Status>
    where
        R: ErrorResponse,
        F: Future<Output = Result<R, ReqError>>,
    {
        let started = Instant::now();
        metrics::REQUESTS.with_label_values(&[kind]).inc();
        let result = match tokio::time::timeout(self.inner.request_timeout, fut).await {
            Ok(r) => r,
            // A raw write may have been proposed and may still apply: a retryable error would
            // let the client apply it twice. Transactional writes are safe to retry.
            Err(_) if on_timeout == Timeout::OutcomeUnknown => {
                Err(ReqError::from(RegionError::Other(format!(
                    "{kind} timed out after {:?}; its outcome is unknown",
                    self.inner.request_timeout
                ))))
            }
            Err(_) => Err(ReqError::from(RegionError::ServerIsBusy(format!(
                "{kind} timed out after {:?}",
                self.inner.request_timeout
            )))),
        };
        let resp = result.unwrap_or_else(|e| {
            let mut resp = R::default();
            match e {
                ReqError::Region(e) => {
                    metrics::REQUEST_ERRORS
                        .with_label_values(&[kind, "region"])
                        .inc();
                    resp.set_region_error(e.to_pb());
                }
                ReqError::Storage(e) => {
                    metrics::REQUEST_ERRORS
                        .with_label_values(&[kind, "storage"])
                        .inc();
                    resp.set_error(e.to_string());
                }
                ReqError::Invalid(msg) => {
                    metrics::REQUEST_ERRORS
                        .with_label_values(&[kind, "invalid"])
                        .inc();
                    resp.set_error(format!("invalid request: {msg}"));
                }
            }
            resp
        });
        metrics::REQUEST_DURATION
            .with_label_values(&[kind])
            .observe(started.elapsed().as_secs_f64());
        Ok(Response::new(resp))
    }
}

impl KvInner {
    /// The bytes one read response may still carry.
    fn response_budget(&self) -> ResponseBudget {
        ResponseBudget::new(self.limits.response_max_bytes)
    }

    /// A linearizable read view of the region named by `header`.
    async fn read_view(&self, header: RequestHeader) -> Result<ReadResponse, ReqError> {
        let (tx, rx) = oneshot::channel();
        self.router.read(
            header,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        match rx.await {
            Ok(result) => result.map_err(ReqError::from),
            Err(_) => Err(RegionError::Other("raftstore dropped the read".into()).into()),
        }
    }

    /// A read view to compute a write from: current as of the leader's term, without a
    /// ReadIndex round (see `RaftRouter::write_view`).
    pub(crate) async fn write_view(&self, header: RequestHeader) -> Result<ReadResponse, ReqError> {
        let (tx, rx) = oneshot::channel();
        self.router.write_view(
            header,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        match rx.await {
            Ok(result) => result.map_err(ReqError::from),
            Err(_) => Err(RegionError::Other("raftstore dropped the read".into()).into()),
        }
    }

    /// The first half of a transactional write: the keys' latches, then a write view of the
    /// region holding them all. The returned header carries the view's term for
    /// [`KvInner::finish_txn_write`].
    async fn begin_txn_write<K: AsRef<[u8]>>(
        &self,
        ctx: Option<&kvrpcpb::Context>,
        keys: &[K],
    ) -> Result<(LatchGuard, ReadResponse, RequestHeader), ReqError> {
        let latch = self.latches.acquire(keys).await;
        let mut head = header(ctx);
        let view = self.write_view(head.clone()).await?;
        check_in_region(&view.region, keys)?;
        head.term = Some(view.term);
        Ok((latch, view, head))
    }

    /// The second half: proposes the action's changes in the view's term and waits until
    /// they are applied. Nothing to write costs nothing.
    async fn finish_txn_write(
        &self,
        head: RequestHeader,
        modifies: Vec<Modify>,
    ) -> Result<(), ReqError> {
        if modifies.is_empty() {
            return Ok(());
        }
        self.write(head, modifies).await
    }

    /// A whole transactional write around `action`, which reads the view and returns the
    /// changes and its answer, or a key error (then nothing is written).
    async fn txn_write<K, T, F>(
        &self,
        ctx: Option<&kvrpcpb::Context>,
        keys: &[K],
        action: F,
    ) -> Result<Result<T, TxnError>, ReqError>
    where
        K: AsRef<[u8]>,
        F: FnOnce(&dyn EngineSnapshot) -> Result<(Vec<Modify>, T), TxnError>,
    {
        let (_latch, view, head) = self.begin_txn_write(ctx, keys).await?;
        match action(view.snapshot.as_ref()) {
            Ok((modifies, out)) => {
                self.finish_txn_write(head, modifies).await?;
                Ok(Ok(out))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    /// Makes `max_ts` cover every read the region served before this store's peer became
    /// its leader in `term`: those reads were confirmed by a quorum before this term began,
    /// so their timestamps are below a timestamp PD hands out now. Once per region and term.
    async fn sync_max_ts(&self, region_id: u64, term: u64) -> Result<(), ReqError> {
        if self.max_ts_synced.get(&region_id).map(|t| *t) == Some(term) {
            return Ok(());
        }
        let now =
            self.pd.get_tso().await.map_err(|e| {
                RegionError::ServerIsBusy(format!("cannot sync max_ts with PD: {e}"))
            })?;
        self.cm.update_max_ts(TimeStamp::new(now));
        self.max_ts_synced.insert(region_id, term);
        Ok(())
    }

    /// Proposes `modifies` and waits until they are applied. With the disk full, a write that
    /// puts anything is refused with `DiskFull`; pure deletions (raw deletes, GC) go through,
    /// as they are what frees space.
    pub(crate) async fn write(
        &self,
        header: RequestHeader,
        modifies: Vec<Modify>,
    ) -> Result<(), ReqError> {
        if self.disk.is_full() && modifies.iter().any(|m| matches!(m, Modify::Put { .. })) {
            return Err(RegionError::DiskFull {
                store_id: self.router.store_id(),
                reason: self.disk.full_reason(),
            }
            .into());
        }
        let region_id = header.region_id;
        let (keys, bytes) = write_size(&modifies);
        let (tx, rx) = oneshot::channel();
        self.router.propose_write(
            header,
            modifies,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        match rx.await {
            Ok(result) => {
                result.map_err(ReqError::from)?;
                // Applied, and proposed here: this store led the region.
                self.flow.on_write(region_id, keys, bytes);
                Ok(())
            }
            Err(_) => Err(RegionError::Other("raftstore dropped the write".into()).into()),
        }
    }

    /// Counts a read served from `region`'s view that returned `pairs`.
    fn count_read<'a>(
        &self,
        region: &metapb::Region,
        pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) {
        let (keys, bytes) = pairs.into_iter().fold((0, 0), |(k, b), (key, value)| {
            (k + 1, b + (key.len() + value.len()) as u64)
        });
        self.flow.on_read(region.id, keys, bytes);
    }
}

/// Where a request goes, from its `Context`.
pub(crate) fn header(ctx: Option<&kvrpcpb::Context>) -> RequestHeader {
    let ctx = ctx.cloned().unwrap_or_default();
    RequestHeader {
        region_id: ctx.region_id,
        region_epoch: ctx.region_epoch,
        peer: ctx.peer,
        term: None,
    }
}

/// Fails with `KeyNotInRegion` unless every key lies in `region`.
pub(crate) fn check_in_region<K: AsRef<[u8]>>(
    region: &metapb::Region,
    keys: &[K],
) -> Result<(), ReqError> {
    let range = RegionRange {
        start_key: &region.start_key,
        end_key: &region.end_key,
    };
    match range.first_outside(keys) {
        Some(key) => Err(RegionError::KeyNotInRegion {
            key: key.to_vec(),
            region: Box::new(region.clone()),
        }
        .into()),
        None => Ok(()),
    }
}

/// Wall-clock seconds, the time base of raw TTLs.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What a request that timed out answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timeout {
    /// `ServerIsBusy`, which the client retries: the request is idempotent (reads, and the
    /// transactional writes, which a retry finds done).
    Retry,
    /// An error the client does not retry: a raw write may have been proposed and may still
    /// apply, and a retry could apply it twice.
    OutcomeUnknown,
}

/// Each RPC: its method, request and response types, the handler on [`KvInner`],
/// `[not_idempotent]` for those a client's retry could apply twice (see [`Timeout`]), and the
/// kind PD's query statistics count it as (`@ Kind`, none for bookkeeping requests such as
/// lock resolution). Every request is checked (`wire_check`) before its handler sees it; one
/// of a kind is counted, and its keys sampled for load-based split, on the region its context
/// names.
macro_rules! tikv_service {
    (@timeout) => { Timeout::Retry };
    (@timeout not_idempotent) => { Timeout::OutcomeUnknown };
    (@kind) => { None };
    (@kind $kind:ident) => { Some(QueryKind::$kind) };
    ($($method:ident($req:ty) -> $resp:ty => $handler:ident $([$idem:ident])? $(@ $kind:ident)?;)*) => {
        #[tonic::async_trait]
        impl Tikv for KvService {
            $(
                async fn $method(
                    &self,
                    req: Request<$req>,
                ) -> Result<Response<$resp>, Status> {
                    let req = req.into_inner();
                    let inner = &self.inner;
                    let on_timeout = tikv_service!(@timeout $($idem)?);
                    self.handle(stringify!($method), on_timeout, async move {
                        CheckRequest::check(&req, &inner.request_limits)?;
                        let region_id = req.context.as_ref().map_or(0, |c| c.region_id);
                        $(
                            let _ = QueryKind::$kind;
                            inner
                                .flow
                                .load
                                .on_request(region_id, || sample::SampleKeys::key_ranges(&req));
                        )?
                        let resp = inner.$handler(req).await?;
                        if let Some(kind) = tikv_service!(@kind $($kind)?) {
                            inner.flow.on_query(region_id, kind);
                        }
                        Ok(resp)
                    })
                    .await
                }
            )*
        }
    };
}

tikv_service! {
    kv_get(kvrpcpb::GetRequest) -> kvrpcpb::GetResponse => kv_get @ Get;
    kv_scan(kvrpcpb::ScanRequest) -> kvrpcpb::ScanResponse => kv_scan @ Scan;
    kv_batch_get(kvrpcpb::BatchGetRequest) -> kvrpcpb::BatchGetResponse => kv_batch_get @ Get;
    kv_prewrite(kvrpcpb::PrewriteRequest) -> kvrpcpb::PrewriteResponse => kv_prewrite @ Prewrite;
    kv_pessimistic_lock(kvrpcpb::PessimisticLockRequest) -> kvrpcpb::PessimisticLockResponse
        => kv_pessimistic_lock @ AcquirePessimisticLock;
    kv_pessimistic_rollback(kvrpcpb::PessimisticRollbackRequest)
        -> kvrpcpb::PessimisticRollbackResponse => kv_pessimistic_rollback @ Rollback;
    kv_txn_heart_beat(kvrpcpb::TxnHeartBeatRequest) -> kvrpcpb::TxnHeartBeatResponse
        => kv_txn_heart_beat;
    kv_check_txn_status(kvrpcpb::CheckTxnStatusRequest) -> kvrpcpb::CheckTxnStatusResponse
        => kv_check_txn_status;
    kv_check_secondary_locks(kvrpcpb::CheckSecondaryLocksRequest)
        -> kvrpcpb::CheckSecondaryLocksResponse => kv_check_secondary_locks;
    kv_commit(kvrpcpb::CommitRequest) -> kvrpcpb::CommitResponse => kv_commit @ Commit;
    kv_cleanup(kvrpcpb::CleanupRequest) -> kvrpcpb::CleanupResponse => kv_cleanup @ Rollback;
    kv_batch_rollback(kvrpcpb::BatchRollbackRequest) -> kvrpcpb::BatchRollbackResponse
        => kv_batch_rollback @ Rollback;
    kv_scan_lock(kvrpcpb::ScanLockRequest) -> kvrpcpb::ScanLockResponse => kv_scan_lock;
    kv_resolve_lock(kvrpcpb::ResolveLockRequest) -> kvrpcpb::ResolveLockResponse
        => kv_resolve_lock;
    kv_gc(kvrpcpb::GcRequest) -> kvrpcpb::GcResponse => kv_gc @ Gc;
    kv_delete_range(kvrpcpb::DeleteRangeRequest) -> kvrpcpb::DeleteRangeResponse
        => kv_delete_range @ DeleteRange;
    raw_get(kvrpcpb::RawGetRequest) -> kvrpcpb::RawGetResponse => raw_get @ Get;
    raw_batch_get(kvrpcpb::RawBatchGetRequest) -> kvrpcpb::RawBatchGetResponse => raw_batch_get @ Get;
    raw_put(kvrpcpb::RawPutRequest) -> kvrpcpb::RawPutResponse => raw_put [not_idempotent] @ Put;
    raw_batch_put(kvrpcpb::RawBatchPutRequest) -> kvrpcpb::RawBatchPutResponse
        => raw_batch_put [not_idempotent] @ Put;
    raw_delete(kvrpcpb::RawDeleteRequest) -> kvrpcpb::RawDeleteResponse
        => raw_delete [not_idempotent] @ Delete;
    raw_batch_delete(kvrpcpb::RawBatchDeleteRequest) -> kvrpcpb::RawBatchDeleteResponse
        => raw_batch_delete [not_idempotent] @ Delete;
    raw_scan(kvrpcpb::RawScanRequest) -> kvrpcpb::RawScanResponse => raw_scan @ Scan;
    raw_delete_range(kvrpcpb::RawDeleteRangeRequest) -> kvrpcpb::RawDeleteRangeResponse
        => raw_delete_range [not_idempotent] @ DeleteRange;
    raw_batch_scan(kvrpcpb::RawBatchScanRequest) -> kvrpcpb::RawBatchScanResponse
        => raw_batch_scan @ Scan;
    raw_get_key_ttl(kvrpcpb::RawGetKeyTtlRequest) -> kvrpcpb::RawGetKeyTtlResponse
        => raw_get_key_ttl @ Get;
    raw_compare_and_swap(kvrpcpb::RawCasRequest) -> kvrpcpb::RawCasResponse
        => raw_cas [not_idempotent] @ Put;
    unsafe_destroy_range(kvrpcpb::UnsafeDestroyRangeRequest)
        -> kvrpcpb::UnsafeDestroyRangeResponse => unsafe_destroy_range;
}
