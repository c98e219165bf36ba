//! The client-facing `tikvpb.Tikv` service: raw requests checked against the storage limits,
//! read through a leader's read view or written through raft, and answered with region and
//! storage errors as data.

mod read;
mod write;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use engine::KvEngine;
use proto::tikvpb::tikv_server::Tikv;
use proto::{errorpb, kvrpcpb, metapb};
use raftstore::{RaftRouter, ReadResponse, RegionError, RequestHeader};
use storage::{Latches, Modify, RegionRange, StorageConfig, StorageError};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use crate::metrics;

/// Why one client request failed; both kinds are answered inside the response.
#[derive(Debug)]
pub(crate) enum ReqError {
    /// The region cannot serve it (the client refreshes its cache and retries).
    Region(Box<RegionError>),
    /// The request itself is bad, or the data could not be read.
    Storage(StorageError),
}

impl From<RegionError> for ReqError {
    fn from(e: RegionError) -> Self {
        ReqError::Region(Box::new(e))
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

macro_rules! error_string_response {
    ($($t:ty),* $(,)?) => {$(
        impl ErrorResponse for $t {
            fn set_region_error(&mut self, e: errorpb::Error) {
                self.region_error = Some(e);
            }
            fn set_error(&mut self, msg: String) {
                self.error = msg;
            }
        }
    )*};
}

error_string_response!(
    kvrpcpb::RawGetResponse,
    kvrpcpb::RawPutResponse,
    kvrpcpb::RawBatchPutResponse,
    kvrpcpb::RawDeleteResponse,
    kvrpcpb::RawBatchDeleteResponse,
    kvrpcpb::RawDeleteRangeResponse,
    kvrpcpb::RawGetKeyTtlResponse,
    kvrpcpb::RawCasResponse,
    kvrpcpb::UnsafeDestroyRangeResponse,
);

/// As TiKV does for responses without an `error` field: one pair carrying the error.
macro_rules! kv_pairs_response {
    ($($t:ty),* $(,)?) => {$(
        impl ErrorResponse for $t {
            fn set_region_error(&mut self, e: errorpb::Error) {
                self.region_error = Some(e);
            }
            fn set_error(&mut self, msg: String) {
                self.kvs = vec![abort_pair(msg)];
            }
        }
    )*};
}

kv_pairs_response!(kvrpcpb::RawScanResponse, kvrpcpb::RawBatchScanResponse);

impl ErrorResponse for kvrpcpb::RawBatchGetResponse {
    fn set_region_error(&mut self, e: errorpb::Error) {
        self.region_error = Some(e);
    }
    fn set_error(&mut self, msg: String) {
        self.pairs = vec![abort_pair(msg)];
    }
}

impl ErrorResponse for kvrpcpb::ScanLockResponse {
    fn set_region_error(&mut self, e: errorpb::Error) {
        self.region_error = Some(e);
    }
    fn set_error(&mut self, msg: String) {
        self.error = Some(kvrpcpb::KeyError {
            abort: msg,
            ..Default::default()
        });
    }
}

fn abort_pair(msg: String) -> kvrpcpb::KvPair {
    kvrpcpb::KvPair {
        error: Some(kvrpcpb::KeyError {
            abort: msg,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Shared state of the `Tikv` service.
pub(crate) struct KvInner {
    pub(crate) router: RaftRouter,
    pub(crate) kv: Arc<dyn KvEngine>,
    pub(crate) limits: StorageConfig,
    pub(crate) latches: Latches,
    pub(crate) request_timeout: Duration,
}

/// The `tikvpb.Tikv` service of one store. Cheap to clone.
#[derive(Clone)]
pub struct KvService {
    inner: Arc<KvInner>,
}

impl KvService {
    /// A service over `router` (reads and writes through raft) and `kv` (for
    /// `UnsafeDestroyRange`, which bypasses raft), with request limits and timeout.
    pub fn new(
        router: RaftRouter,
        kv: Arc<dyn KvEngine>,
        limits: StorageConfig,
        request_timeout: Duration,
    ) -> Self {
        let latches = Latches::new(limits.latch_slots);
        KvService {
            inner: Arc::new(KvInner {
                router,
                kv,
                limits,
                latches,
                request_timeout,
            }),
        }
    }

    /// Runs one request: counts it, bounds its time, and turns its error into response data.
    async fn handle<R, F>(&self, kind: &'static str, fut: F) -> Result<Response<R>, Status>
    where
        R: ErrorResponse,
        F: Future<Output = Result<R, ReqError>>,
    {
        let started = Instant::now();
        metrics::REQUESTS.with_label_values(&[kind]).inc();
        let result = match tokio::time::timeout(self.inner.request_timeout, fut).await {
            Ok(r) => r,
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

    /// Proposes `modifies` and waits until they are applied.
    async fn write(&self, header: RequestHeader, modifies: Vec<Modify>) -> Result<(), ReqError> {
        let (tx, rx) = oneshot::channel();
        self.router.propose_write(
            header,
            modifies,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        match rx.await {
            Ok(result) => result.map_err(ReqError::from),
            Err(_) => Err(RegionError::Other("raftstore dropped the write".into()).into()),
        }
    }
}

/// Where a request goes, from its `Context`.
pub(crate) fn header(ctx: Option<&kvrpcpb::Context>) -> RequestHeader {
    let ctx = ctx.cloned().unwrap_or_default();
    RequestHeader {
        region_id: ctx.region_id,
        region_epoch: ctx.region_epoch,
        peer: ctx.peer,
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

#[tonic::async_trait]
impl Tikv for KvService {
    async fn kv_scan_lock(
        &self,
        req: Request<kvrpcpb::ScanLockRequest>,
    ) -> Result<Response<kvrpcpb::ScanLockResponse>, Status> {
        self.handle("kv_scan_lock", self.inner.kv_scan_lock(req.into_inner()))
            .await
    }
    async fn raw_get(
        &self,
        req: Request<kvrpcpb::RawGetRequest>,
    ) -> Result<Response<kvrpcpb::RawGetResponse>, Status> {
        self.handle("raw_get", self.inner.raw_get(req.into_inner()))
            .await
    }
    async fn raw_batch_get(
        &self,
        req: Request<kvrpcpb::RawBatchGetRequest>,
    ) -> Result<Response<kvrpcpb::RawBatchGetResponse>, Status> {
        self.handle("raw_batch_get", self.inner.raw_batch_get(req.into_inner()))
            .await
    }
    async fn raw_put(
        &self,
        req: Request<kvrpcpb::RawPutRequest>,
    ) -> Result<Response<kvrpcpb::RawPutResponse>, Status> {
        self.handle("raw_put", self.inner.raw_put(req.into_inner()))
            .await
    }
    async fn raw_batch_put(
        &self,
        req: Request<kvrpcpb::RawBatchPutRequest>,
    ) -> Result<Response<kvrpcpb::RawBatchPutResponse>, Status> {
        self.handle("raw_batch_put", self.inner.raw_batch_put(req.into_inner()))
            .await
    }
    async fn raw_delete(
        &self,
        req: Request<kvrpcpb::RawDeleteRequest>,
    ) -> Result<Response<kvrpcpb::RawDeleteResponse>, Status> {
        self.handle("raw_delete", self.inner.raw_delete(req.into_inner()))
            .await
    }
    async fn raw_batch_delete(
        &self,
        req: Request<kvrpcpb::RawBatchDeleteRequest>,
    ) -> Result<Response<kvrpcpb::RawBatchDeleteResponse>, Status> {
        self.handle(
            "raw_batch_delete",
            self.inner.raw_batch_delete(req.into_inner()),
        )
        .await
    }
    async fn raw_scan(
        &self,
        req: Request<kvrpcpb::RawScanRequest>,
    ) -> Result<Response<kvrpcpb::RawScanResponse>, Status> {
        self.handle("raw_scan", self.inner.raw_scan(req.into_inner()))
            .await
    }
    async fn raw_delete_range(
        &self,
        req: Request<kvrpcpb::RawDeleteRangeRequest>,
    ) -> Result<Response<kvrpcpb::RawDeleteRangeResponse>, Status> {
        self.handle(
            "raw_delete_range",
            self.inner.raw_delete_range(req.into_inner()),
        )
        .await
    }
    async fn raw_batch_scan(
        &self,
        req: Request<kvrpcpb::RawBatchScanRequest>,
    ) -> Result<Response<kvrpcpb::RawBatchScanResponse>, Status> {
        self.handle(
            "raw_batch_scan",
            self.inner.raw_batch_scan(req.into_inner()),
        )
        .await
    }
    async fn raw_get_key_ttl(
        &self,
        req: Request<kvrpcpb::RawGetKeyTtlRequest>,
    ) -> Result<Response<kvrpcpb::RawGetKeyTtlResponse>, Status> {
        self.handle(
            "raw_get_key_ttl",
            self.inner.raw_get_key_ttl(req.into_inner()),
        )
        .await
    }
    async fn raw_compare_and_swap(
        &self,
        req: Request<kvrpcpb::RawCasRequest>,
    ) -> Result<Response<kvrpcpb::RawCasResponse>, Status> {
        self.handle("raw_compare_and_swap", self.inner.raw_cas(req.into_inner()))
            .await
    }
    async fn unsafe_destroy_range(
        &self,
        req: Request<kvrpcpb::UnsafeDestroyRangeRequest>,
    ) -> Result<Response<kvrpcpb::UnsafeDestroyRangeResponse>, Status> {
        self.handle(
            "unsafe_destroy_range",
            self.inner.unsafe_destroy_range(req.into_inner()),
        )
        .await
    }
}
