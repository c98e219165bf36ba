//! Scale-out: stores added to a running cluster receive replicas through PD's balance-region
//! (add learner, snapshot, promote, remove), and every key stays readable.

use std::collections::HashMap;
use std::time::Duration;

use test_cluster::{fast_config, seed_from_env, Cluster};

/// Region peers per slot, from the stores' own views.
fn peers_per_slot(c: &Cluster) -> HashMap<usize, usize> {
    let mut counts: HashMap<usize, usize> = (0..c.len()).map(|i| (i, 0)).collect();
    for (slot, _) in c.region_infos() {
        *counts.entry(slot).or_default() += 1;
    }
    counts
}

fn within_pct_of_mean(counts: &HashMap<usize, usize>, pct: usize) -> bool {
    let total: usize = counts.values().sum();
    let n = counts.len();
    counts
        .values()
        .all(|&c| (c * n).abs_diff(total) * 100 <= total * pct)
}

#[test]
fn added_stores_receive_regions_until_balanced() {
    let mut cfg = fast_config();
    cfg.raftstore.region_max_keys = 24;
    cfg.raftstore.region_split_keys = 12;
    let mut c = Cluster::start(3, seed_from_env(), cfg);
    let keys: Vec<Vec<u8>> = (0..400u32)
        .map(|i| format!("k{i:05}").into_bytes())
        .collect();
    for k in &keys {
        c.must_put(k, k);
    }
    let enough_regions = c.wait_until(Duration::from_secs(60), |c| {
        let leaders = c.region_infos().iter().filter(|(_, r)| r.is_leader).count();
        leaders >= 20
    });
    assert!(enough_regions, "the writes split into ~20 regions");
    assert!(c.wait_replicated(3, Duration::from_secs(60)));
    let before = peers_per_slot(&c);
    let new = [c.add_store(), c.add_store()];
    let balanced = c.wait_until(Duration::from_secs(180), |c| {
        let counts = peers_per_slot(c);
        new.iter().all(|i| counts[i] > 0) && within_pct_of_mean(&counts, 25)
    });
    assert!(
        balanced,
        "before {before:?}, after {:?}",
        peers_per_slot(&c)
    );
    assert!(c.wait_replicated(3, Duration::from_secs(60)));
    for k in &keys {
        assert_eq!(c.must_get(k).as_deref(), Some(k.as_slice()), "{k:?}");
    }
}
