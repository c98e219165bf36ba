//! Raw writes: limits first (nothing is written on a bad request), then the keys' latches,
//! then raft. Compare-and-swap holds its latch from the read to the applied write.

use engine::{WriteBatch, DATA_CFS};
use proto::kvrpcpb;
use storage::raw::{self, CasExpect};
use storage::{cf_from_request, StorageError};

use super::{check_in_region, header, now_secs, KvInner, ReqError};

type Res<T> = Result<T, ReqError>;

impl KvInner {
    pub(super) async fn raw_put(
        &self,
        req: kvrpcpb::RawPutRequest,
    ) -> Res<kvrpcpb::RawPutResponse> {
        let cf = cf_from_request(&req.cf)?;
        let modifies = raw::put_modifies(cf, &[(&req.key, &req.value)], &[], req.ttl, now_secs())?;
        let _latch = self.latches.acquire(&[&req.key]).await;
        self.write(header(req.context.as_ref()), modifies).await?;
        Ok(Default::default())
    }

    pub(super) async fn raw_batch_put(
        &self,
        req: kvrpcpb::RawBatchPutRequest,
    ) -> Res<kvrpcpb::RawBatchPutResponse> {
        let cf = cf_from_request(&req.cf)?;
        let pairs: Vec<(&[u8], &[u8])> = req
            .pairs
            .iter()
            .map(|p| (p.key.as_slice(), p.value.as_slice()))
            .collect();
        let modifies = raw::put_modifies(cf, &pairs, &req.ttls, req.ttl, now_secs())?;
        let keys: Vec<&[u8]> = pairs.iter().map(|(k, _)| *k).collect();
        let _latch = self.latches.acquire(&keys).await;
        self.write(header(req.context.as_ref()), modifies).await?;
        Ok(Default::default())
    }

    pub(super) async fn raw_delete(
        &self,
        req: kvrpcpb::RawDeleteRequest,
    ) -> Res<kvrpcpb::RawDeleteResponse> {
        let cf = cf_from_request(&req.cf)?;
        let _latch = self.latches.acquire(&[&req.key]).await;
        self.write(
            header(req.context.as_ref()),
            raw::delete_modifies(cf, &[&req.key]),
        )
        .await?;
        Ok(Default::default())
    }

    pub(super) async fn raw_batch_delete(
        &self,
        req: kvrpcpb::RawBatchDeleteRequest,
    ) -> Res<kvrpcpb::RawBatchDeleteResponse> {
        let cf = cf_from_request(&req.cf)?;
        let _latch = self.latches.acquire(&req.keys).await;
        self.write(
            header(req.context.as_ref()),
            raw::delete_modifies(cf, &req.keys),
        )
        .await?;
        Ok(Default::default())
    }

    /// Not latched: a range has no finite key set; it is ordered with other writes by raft.
    pub(super) async fn raw_delete_range(
        &self,
        req: kvrpcpb::RawDeleteRangeRequest,
    ) -> Res<kvrpcpb::RawDeleteRangeResponse> {
        let cf = cf_from_request(&req.cf)?;
        let modify = raw::delete_range_modify(cf, &req.start_key, &req.end_key);
        self.write(header(req.context.as_ref()), vec![modify])
            .await?;
        Ok(Default::default())
    }

    pub(super) async fn raw_cas(
        &self,
        req: kvrpcpb::RawCasRequest,
    ) -> Res<kvrpcpb::RawCasResponse> {
        let cf = cf_from_request(&req.cf)?;
        let expect = if req.previous_not_exist {
            CasExpect::NotExist
        } else {
            CasExpect::Value(&req.previous_value)
        };
        let _latch = self.latches.acquire(&[&req.key]).await;
        let head = header(req.context.as_ref());
        let view = self.read_view(head.clone()).await?;
        check_in_region(&view.region, &[&req.key])?;
        let outcome = raw::raw_cas(
            view.snapshot.as_ref(),
            cf,
            &req.key,
            &req.value,
            expect,
            req.ttl,
            now_secs(),
        )?;
        drop(view);
        if outcome.succeed {
            self.write(head, outcome.modifies).await?;
        }
        Ok(kvrpcpb::RawCasResponse {
            succeed: outcome.succeed,
            previous_not_exist: outcome.previous.is_none(),
            previous_value: outcome.previous.unwrap_or_default(),
            ..Default::default()
        })
    }

    /// Deletes the range from every data column family of this store's engine directly,
    /// bypassing raft: the client sends it to every store, as for TiKV.
    pub(super) async fn unsafe_destroy_range(
        &self,
        req: kvrpcpb::UnsafeDestroyRangeRequest,
    ) -> Res<kvrpcpb::UnsafeDestroyRangeResponse> {
        let lower = codec::keys::data_key(&codec::memcomparable::encode_bytes(&req.start_key));
        let upper = if req.end_key.is_empty() {
            codec::keys::DATA_MAX_KEY.to_vec()
        } else {
            codec::keys::data_key(&codec::memcomparable::encode_bytes(&req.end_key))
        };
        let mut wb = WriteBatch::default();
        for &cf in DATA_CFS {
            wb.delete_range_cf(cf, &lower, &upper);
        }
        let kv = self.kv.clone();
        tokio::task::spawn_blocking(move || kv.write(&wb, true))
            .await
            .map_err(|e| StorageError::Engine(format!("destroy range task: {e}")))?
            .map_err(StorageError::from)?;
        Ok(Default::default())
    }
}
