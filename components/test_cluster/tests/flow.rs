//! Region and store traffic in heartbeats: writes and reads served through a store's gRPC
//! service show up, as PD's region and store flows, in the region they touched and in no
//! other, and so do the requests that carried it. Seeded; `FLOTILLA_SEED` replays a run.

use std::time::Duration;

use proto::kvrpcpb;
use proto::tikvpb::tikv_client::TikvClient;
use test_cluster::{encode, fast_config, raw_key, seed_from_env, Cluster};

const WAIT: Duration = Duration::from_secs(20);

/// The most keys one store heartbeat reported written and read, as PD kept them. PD keeps only
/// the last heartbeat, so it is watched all along (heartbeats come every second, the watch
/// looks every 50 ms).
#[derive(Debug, Default)]
struct StoreSeen {
    keys_written: u64,
    keys_read: u64,
    /// Requests of any kind.
    queries: u64,
}

impl StoreSeen {
    fn observe(&mut self, c: &Cluster) {
        let store_id = c.store_id(0);
        let stats = c
            .pd_stores()
            .into_iter()
            .find(|s| s.info.store.id == store_id)
            .and_then(|s| s.info.stats)
            .unwrap_or_default();
        let interval = stats.interval.unwrap_or_default();
        assert!(
            interval.start_timestamp <= interval.end_timestamp,
            "{interval:?}"
        );
        self.keys_written = self.keys_written.max(stats.keys_written);
        self.keys_read = self.keys_read.max(stats.keys_read);
        let q = stats.query_stats.unwrap_or_default();
        self.queries = self
            .queries
            .max(pd::read_queries(&q) + pd::write_queries(&q));
    }
}

/// Waits until PD's flow of the region holding `key` satisfies `seen`. Panics if it never
/// does, or if the region holding `other` ever shows traffic meanwhile.
fn wait_flow(
    c: &Cluster,
    store: &mut StoreSeen,
    key: &str,
    other: &str,
    seen: impl Fn(&pd::RegionFlow) -> bool,
) {
    let (id, other_id) = (
        c.region_of(&encode(key.as_bytes())).unwrap().id,
        c.region_of(&encode(other.as_bytes())).unwrap().id,
    );
    let mut last = None;
    let found = c.wait_until(WAIT, |c| {
        store.observe(c);
        let regions = c.pd_regions();
        let flow_of = |id| regions.iter().find(|r| r.region.id == id).map(|r| r.flow);
        let idle = flow_of(other_id).unwrap_or_default();
        assert_eq!(
            (
                idle.written_keys,
                idle.read_keys,
                idle.written_bytes,
                idle.read_bytes
            ),
            (0, 0, 0, 0),
            "untouched region {other_id} shows traffic"
        );
        last = flow_of(id);
        last.as_ref().is_some_and(&seen)
    });
    assert!(found, "region {id}: PD's flow never matched, last {last:?}");
}

#[test]
fn region_and_store_heartbeats_carry_the_traffic_served() {
    // PD keeps each region's last interval only: region heartbeats 2 s apart leave the watch
    // (every 50 ms) a wide window even on a loaded machine. Without hibernation: a region that
    // goes idle heartbeats as it hibernates and again at its turn in the slow rotation, which
    // may come a few ticks later and replace the interval before the watch sees it.
    let mut cfg = fast_config();
    cfg.raftstore.pd_heartbeat_tick_interval_ticks = 40;
    cfg.raftstore.hibernate_regions = false;
    let c = Cluster::start(1, seed_from_env(), cfg);
    c.must_put(b"a", b"through the router, not counted");
    // Two regions: `a...` keys on the left, `z` on the right and never touched.
    // A split asked before the store is ready for it is dropped: asked again until it holds.
    assert!(
        c.wait_until(WAIT, |c| {
            let (l, r) = (c.region_of(&encode(b"a")), c.region_of(&encode(b"z")));
            if let (Some(l), Some(r)) = (&l, &r) {
                if l.id == r.id {
                    c.router(0).split_region(l.id, vec![encode(b"m")]);
                }
            }
            let pd_knows = |id| c.pd_regions().iter().any(|p| p.region.id == id);
            matches!((l, r), (Some(l), Some(r)) if l.id != r.id && pd_knows(l.id) && pd_knows(r.id))
        }),
        "split at m never reached PD"
    );
    let addr = c.store_addr(0);
    let mut store = StoreSeen::default();
    let mut kv = c
        .block_on(TikvClient::connect(format!("http://{addr}")))
        .expect("connect");

    // One batch of 10 pairs, so that one heartbeat carries all of it.
    let pairs: Vec<kvrpcpb::KvPair> = (0..10)
        .map(|i| kvrpcpb::KvPair {
            key: raw_key(format!("a{i}").as_bytes()),
            value: vec![b'v'; 100],
            ..Default::default()
        })
        .collect();
    let pair_bytes: u64 = pairs
        .iter()
        .map(|p| (p.key.len() + p.value.len()) as u64)
        .sum();
    let put = kvrpcpb::RawBatchPutRequest {
        context: Some(c.kv_context(&raw_key(b"a0"))),
        pairs: pairs.clone(),
        ..Default::default()
    };
    let resp = c.block_on(kv.raw_batch_put(put)).unwrap().into_inner();
    assert!(
        resp.region_error.is_none() && resp.error.is_empty(),
        "{resp:?}"
    );
    wait_flow(&c, &mut store, "a0", "z", |f| {
        f.written_keys == 10
            && f.written_bytes >= pair_bytes
            && f.read_keys == 0
            && (f.write_queries, f.read_queries) == (1, 0)
    });

    // Reads count the pairs they return: 10 found of 12 asked.
    let mut keys: Vec<Vec<u8>> = pairs.iter().map(|p| p.key.clone()).collect();
    keys.extend([raw_key(b"a_missing1"), raw_key(b"a_missing2")]);
    let get = kvrpcpb::RawBatchGetRequest {
        context: Some(c.kv_context(&raw_key(b"a0"))),
        keys,
        ..Default::default()
    };
    let resp = c.block_on(kv.raw_batch_get(get)).unwrap().into_inner();
    assert_eq!(resp.pairs.len(), 10, "{:?}", resp.region_error);
    wait_flow(&c, &mut store, "a0", "z", |f| {
        f.read_keys == 10
            && f.read_bytes == pair_bytes
            && f.written_keys == 0
            && (f.write_queries, f.read_queries) == (0, 1)
    });

    let scan = kvrpcpb::RawScanRequest {
        context: Some(c.kv_context(&raw_key(b"a0"))),
        // From a0: the key `a` put through the router is not among the batch.
        start_key: raw_key(b"a0"),
        end_key: raw_key(b"b"),
        limit: 4,
        ..Default::default()
    };
    let resp = c.block_on(kv.raw_scan(scan)).unwrap().into_inner();
    assert_eq!(resp.kvs.len(), 4, "{:?}", resp.region_error);
    wait_flow(&c, &mut store, "a0", "z", |f| {
        f.read_keys == 4 && f.read_bytes == 4 * pair_bytes / 10 && f.read_queries == 1
    });

    // The store's heartbeats carried the same traffic, over intervals of their own: the batch
    // put and the batch get each in one.
    let seen = c.wait_until(WAIT, |c| {
        store.observe(c);
        store.keys_written >= 10 && store.keys_read >= 10 && store.queries >= 1
    });
    assert!(seen, "store heartbeats never showed the traffic: {store:?}");
}
