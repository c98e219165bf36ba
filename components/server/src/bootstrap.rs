//! Start-up bookkeeping of a store: its identity (cluster id and store id, kept in the `raft`
//! column family) and, for a new cluster, the first region.

use engine::{KvEngine, WriteBatch, CF_RAFT};
use proto::metapb;
use raft_log::RaftLogStore;

use crate::pd::{BootstrapOutcome, Pd};
use crate::ServerError;

/// Who this store is. Stored as 16 bytes: cluster id, then store id, both big-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreIdent {
    /// The cluster the data belongs to.
    pub cluster_id: u64,
    /// This store's id.
    pub store_id: u64,
}

impl StoreIdent {
    fn encode(&self) -> Vec<u8> {
        let mut buf = self.cluster_id.to_be_bytes().to_vec();
        buf.extend_from_slice(&self.store_id.to_be_bytes());
        buf
    }

    fn decode(bytes: &[u8]) -> Result<StoreIdent, ServerError> {
        let (c, s) = bytes
            .split_first_chunk::<8>()
            .and_then(|(c, rest)| Some((c, <[u8; 8]>::try_from(rest).ok()?)))
            .ok_or_else(|| {
                ServerError::Ident(format!("store identity of {} bytes", bytes.len()))
            })?;
        Ok(StoreIdent {
            cluster_id: u64::from_be_bytes(*c),
            store_id: u64::from_be_bytes(s),
        })
    }
}

/// The identity stored in `kv`, if the store has one.
pub fn load_store_ident(kv: &dyn KvEngine) -> Result<Option<StoreIdent>, ServerError> {
    kv.get_cf(CF_RAFT, codec::keys::store_ident_key())?
        .map(|v| StoreIdent::decode(&v))
        .transpose()
}

fn save_store_ident(kv: &dyn KvEngine, ident: StoreIdent) -> Result<(), ServerError> {
    let mut wb = WriteBatch::default();
    wb.put_cf(CF_RAFT, codec::keys::store_ident_key(), &ident.encode());
    kv.write(&wb, true)?;
    Ok(())
}

/// This store's id: the stored one, or a new one from PD, persisted before it is used.
pub(crate) async fn ensure_store_id(kv: &dyn KvEngine, pd: &Pd) -> Result<u64, ServerError> {
    let cluster_id = pd.cluster_id();
    if let Some(ident) = load_store_ident(kv)? {
        if ident.cluster_id != cluster_id {
            return Err(ServerError::Ident(format!(
                "data belongs to cluster {}, PD serves cluster {cluster_id}",
                ident.cluster_id
            )));
        }
        return Ok(ident.store_id);
    }
    let store_id = pd.alloc_id().await?;
    save_store_ident(
        kv,
        StoreIdent {
            cluster_id,
            store_id,
        },
    )?;
    tracing::info!(store_id, cluster_id, "allocated store id");
    Ok(store_id)
}

/// Regions this store has metadata for.
fn local_regions(kv: &dyn KvEngine) -> Result<Vec<metapb::Region>, ServerError> {
    let states = raftstore::load_region_states(kv)
        .map_err(|e| ServerError::Ident(format!("reading local regions: {e}")))?;
    Ok(states.into_iter().filter_map(|s| s.region).collect())
}

/// If PD has no cluster yet, offers this store's first region (the whole key space, one
/// peer here). If another store wins the race, the local first region is removed again.
pub(crate) async fn bootstrap_cluster_if_needed(
    kv: &dyn KvEngine,
    raft_log: &dyn RaftLogStore,
    pd: &Pd,
    store: &metapb::Store,
) -> Result<(), ServerError> {
    if pd.is_bootstrapped().await? {
        return Ok(());
    }
    let region = match local_regions(kv)?.as_slice() {
        // A previous attempt wrote the first region and stopped before PD answered.
        [region] if region.start_key.is_empty() && region.end_key.is_empty() => region.clone(),
        [] => {
            let region = first_region(pd.alloc_id().await?, pd.alloc_id().await?, store.id);
            raftstore::bootstrap_first_region(kv, raft_log, &region)?;
            region
        }
        _ => {
            return Err(ServerError::Ident(
                "PD is not bootstrapped but this store holds regions".into(),
            ))
        }
    };
    match pd.bootstrap(store.clone(), region.clone()).await? {
        BootstrapOutcome::Bootstrapped => {
            tracing::info!(region_id = region.id, "bootstrapped the cluster")
        }
        BootstrapOutcome::AlreadyBootstrapped => {
            tracing::info!(
                region_id = region.id,
                "another store bootstrapped the cluster; removing our first region"
            );
            raftstore::clear_region_meta(kv, raft_log, region.id)?;
        }
    }
    Ok(())
}

/// The first region of a cluster: everything, one peer on `store_id`, epoch `{1, 1}`.
pub fn first_region(region_id: u64, peer_id: u64, store_id: u64) -> metapb::Region {
    metapb::Region {
        id: region_id,
        start_key: vec![],
        end_key: vec![],
        region_epoch: Some(metapb::RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: vec![metapb::Peer {
            id: peer_id,
            store_id,
            ..Default::default()
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_ident_round_trip() {
        let kv = engine::MemEngine::new();
        assert_eq!(load_store_ident(&kv).unwrap(), None);
        let ident = StoreIdent {
            cluster_id: 7,
            store_id: 42,
        };
        save_store_ident(&kv, ident).unwrap();
        assert_eq!(load_store_ident(&kv).unwrap(), Some(ident));
        assert!(StoreIdent::decode(b"short").is_err());
    }

    #[test]
    fn first_region_covers_everything() {
        let r = first_region(2, 3, 1);
        assert!(r.start_key.is_empty() && r.end_key.is_empty());
        assert_eq!(r.peers[0].store_id, 1);
        assert_eq!(
            r.region_epoch,
            Some(metapb::RegionEpoch {
                conf_ver: 1,
                version: 1
            })
        );
    }
}
