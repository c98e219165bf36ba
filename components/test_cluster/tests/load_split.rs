//! Load-based split, end to end: reads spread over a range of keys, sent through a store's
//! gRPC service above the (lowered) threshold, split the region between them, near the middle
//! of the load; reads of one key alone never split it. Seeded; `FLOTILLA_SEED` replays a run.

use std::time::{Duration, Instant};

use proto::kvrpcpb;
use proto::tikvpb::tikv_client::TikvClient;
use test_cluster::{encode, fast_config, raw_key, seed_from_env, Cluster};
use tonic::transport::Channel;

fn key(i: usize) -> Vec<u8> {
    format!("k{i:03}").into_bytes()
}

/// Raw gets of `keys`, round and round, for `secs` seconds or until `done` holds (checked
/// after each round). Region errors (a split under way) refresh the context and go on.
fn read_load(
    c: &Cluster,
    kv: &mut TikvClient<Channel>,
    keys: &[Vec<u8>],
    secs: u64,
    done: impl Fn(&Cluster) -> bool,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        for k in keys {
            let req = kvrpcpb::RawGetRequest {
                context: Some(c.kv_context(&raw_key(k))),
                key: raw_key(k),
                ..Default::default()
            };
            let resp = c.block_on(kv.raw_get(req)).expect("rpc").into_inner();
            assert!(resp.error.is_empty(), "{}", resp.error);
        }
        if done(c) {
            return true;
        }
    }
    false
}

#[test]
fn a_region_hot_over_a_key_range_splits_in_it_and_a_single_hot_key_does_not() {
    let mut cfg = fast_config();
    cfg.split.qps_threshold = 100;
    cfg.split.detect_times = 2;
    let c = Cluster::start(1, seed_from_env(), cfg);
    for i in 0..100 {
        c.must_put(&key(i), b"v");
    }
    let region = |i| c.region_of(&encode(&key(i))).expect("region");
    assert_eq!(region(0).id, region(99).id, "the keys start in one region");
    let regions_before = c.region_infos().len();
    let addr = c.store_addr(0);
    let mut kv = c
        .block_on(TikvClient::connect(format!("http://{addr}")))
        .expect("connect");

    // Every key read alike: the split falls near the middle of the range.
    let keys: Vec<Vec<u8>> = (0..100).map(key).collect();
    let split = read_load(&c, &mut kv, &keys, 30, |c| {
        let r = |i| c.region_of(&encode(&key(i))).map(|r| r.id);
        r(0) != r(99)
    });
    assert!(split, "30 s of load over 100 keys never split their region");
    let right = region(99);
    assert_eq!(region(0).end_key, right.start_key);
    let at = right.start_key;
    assert!(
        at > encode(&key(20)) && at <= encode(&key(80)),
        "split at {at:?}: not between k020 and k080"
    );
    assert_eq!(c.region_infos().len(), regions_before + 1);

    // One key, as hot: no key balances its load, so nothing splits.
    let hot = vec![key(10)];
    let regions = c.region_infos().len();
    let split_again = read_load(&c, &mut kv, &hot, 6, |c| c.region_infos().len() != regions);
    assert!(!split_again, "a single hot key split its region");
}
