//! End to end: real `flotilla` processes on 127.0.0.1 (PD + three stores) driven by the
//! official client, `tikv-client` 0.4 `RawClient` with the default keyspace, unmodified.

mod common;

use std::time::Duration;

use common::{ProcCluster, SMALL_REGIONS};

/// Retries an operation for up to 30 s, as an application would while leaders are elected
/// after a restart.
async fn retry<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = tikv_client::Result<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("retrying: {e}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => panic!("gave up: {e}"),
        }
    }
}

fn key(i: u32) -> String {
    format!("user{i:06}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_api_through_the_official_client() {
    let c = ProcCluster::start(3, SMALL_REGIONS);
    if !c.wait_regions(5, 3, Duration::from_secs(90)).await {
        c.dump_logs();
        panic!("the cluster never reached 5 regions with 3 voters each");
    }
    let raw = c.raw_client().await;

    // Single-key operations.
    raw.put("hello".to_owned(), "world".to_owned())
        .await
        .unwrap();
    assert_eq!(
        raw.get("hello".to_owned()).await.unwrap(),
        Some(b"world".to_vec())
    );
    raw.delete("hello".to_owned()).await.unwrap();
    assert_eq!(raw.get("hello".to_owned()).await.unwrap(), None);

    // Enough keys for the store to split the raw keyspace into many regions.
    let n = 2_000u32;
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let pairs: Vec<(String, String)> =
            chunk.iter().map(|i| (key(*i), format!("v{i}"))).collect();
        raw.batch_put(pairs).await.unwrap();
    }
    if !c.wait_regions(15, 3, Duration::from_secs(120)).await {
        c.dump_logs();
        panic!("the raw keyspace never split into at least 11 regions");
    }

    // Batch get, across regions.
    let keys: Vec<String> = (0..n).step_by(97).map(key).collect();
    let got = raw.batch_get(keys.clone()).await.unwrap();
    assert_eq!(got.len(), keys.len());

    // Scans crossing every region: forward, reverse, key-only, limited.
    let all = raw.scan(key(0)..key(n), 10_000).await.unwrap();
    assert_eq!(all.len(), n as usize);
    let all_keys: Vec<Vec<u8>> = all.iter().map(|p| p.key().clone().into()).collect();
    let mut sorted = all_keys.clone();
    sorted.sort();
    assert_eq!(all_keys, sorted, "scan returns keys in order");
    assert_eq!(all[1234].value(), &b"v1234".to_vec());
    // tikv-client 0.4 walks regions from the low end even for a reverse scan and reverses
    // within each region; the server answers each region's part in descending order.
    let rev = raw.scan_reverse(key(0)..key(n), 10_000).await.unwrap();
    assert_eq!(rev.len(), n as usize);
    let mut rev_keys: Vec<Vec<u8>> = rev.iter().map(|p| p.key().clone().into()).collect();
    let descending_runs = rev_keys.windows(2).filter(|w| w[0] < w[1]).count();
    assert!(
        descending_runs < 40,
        "reverse scan is not descending within regions"
    );
    rev_keys.sort();
    assert_eq!(rev_keys, all_keys);
    let limited = raw.scan(key(100).., 50).await.unwrap();
    assert_eq!(limited.len(), 50);
    assert_eq!(
        Vec::<u8>::from(limited[0].key().clone()),
        key(100).into_bytes()
    );
    let few = raw.scan_reverse(key(995)..key(1000), 100).await.unwrap();
    let mut few_keys: Vec<Vec<u8>> = few.iter().map(|p| p.key().clone().into()).collect();
    few_keys.sort();
    assert_eq!(
        few_keys,
        (995..1000).map(|i| key(i).into_bytes()).collect::<Vec<_>>()
    );
    let only_keys = raw.scan_keys(key(500)..key(700), 1000).await.unwrap();
    assert_eq!(only_keys.len(), 200);

    // Batch scan.
    let ranges = vec![key(10)..key(20), key(1500)..key(1510)];
    let batch = raw.batch_scan(ranges, 100).await.unwrap();
    assert_eq!(batch.len(), 20);

    // Batch delete and delete range.
    raw.batch_delete((0..10).map(key).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(raw.get(key(5)).await.unwrap(), None);
    raw.delete_range(key(100)..key(1900)).await.unwrap();
    let left = raw.scan(key(0)..key(n), 10_000).await.unwrap();
    assert_eq!(left.len(), (n - 10 - 1800) as usize);

    // TTL.
    raw.put_with_ttl("ephemeral".to_owned(), "x".to_owned(), 2)
        .await
        .unwrap();
    let ttl = raw.get_key_ttl_secs("ephemeral".to_owned()).await.unwrap();
    assert!(
        matches!(ttl, Some(t) if (1..=2).contains(&t)),
        "ttl {ttl:?}"
    );
    raw.put("forever".to_owned(), "y".to_owned()).await.unwrap();
    assert_eq!(
        raw.get_key_ttl_secs("forever".to_owned()).await.unwrap(),
        Some(0)
    );
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert_eq!(
        raw.get("ephemeral".to_owned()).await.unwrap(),
        None,
        "expired key still readable"
    );
    assert_eq!(
        raw.get("forever".to_owned()).await.unwrap(),
        Some(b"y".to_vec())
    );

    // Oversize key and value: a typed error, and nothing written.
    let big_key = "k".repeat(10 * 1024);
    assert!(
        raw.put(big_key.clone(), "v".to_owned()).await.is_err(),
        "oversize key accepted"
    );
    let big_value = vec![b'v'; 9 << 20];
    let err = raw
        .put("big".to_owned(), big_value)
        .await
        .expect_err("oversize value accepted");
    eprintln!("oversize value refused: {err}");
    assert_eq!(raw.get("big".to_owned()).await.unwrap(), None);

    // Compare and swap (needs the client's atomic mode).
    let cas = raw.with_atomic_for_cas();
    let (prev, ok) = cas
        .compare_and_swap("cas".to_owned(), None, "a".to_owned())
        .await
        .unwrap();
    assert!(ok && prev.is_none());
    let (prev, ok) = cas
        .compare_and_swap("cas".to_owned(), None, "b".to_owned())
        .await
        .unwrap();
    assert!(!ok);
    assert_eq!(prev, Some(b"a".to_vec()));
    let (_, ok) = cas
        .compare_and_swap("cas".to_owned(), Some(b"a".to_vec()), "c".to_owned())
        .await
        .unwrap();
    assert!(ok);
    assert_eq!(
        raw.get("cas".to_owned()).await.unwrap(),
        Some(b"c".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_stores_lose_no_acknowledged_write() {
    let mut c = ProcCluster::start(3, SMALL_REGIONS);
    if !c.wait_regions(5, 3, Duration::from_secs(90)).await {
        c.dump_logs();
        panic!("the cluster never reached 3 voters per region");
    }
    let raw = c.raw_client().await;
    for i in 0..600u32 {
        retry(|| raw.put(key(i), format!("v{i}"))).await;
    }
    // SIGKILL one store, keep writing, bring it back, then kill and restart every store.
    c.kill_store(1);
    // Regions the killed store led are unavailable until a new leader is elected; the client
    // surfaces that as an error after its own backoff, and the write is retried like an
    // application would. Only acknowledged writes are checked below.
    for i in 600..900u32 {
        retry(|| raw.put(key(i), format!("v{i}"))).await;
    }
    c.start_store(1);
    for i in 0..3 {
        c.restart_store(i);
    }
    assert!(
        c.wait_stores_listening(Duration::from_secs(60)).await,
        "stores did not come back"
    );
    let raw = c.raw_client().await;
    for i in (0..900u32).step_by(7) {
        let got = retry(|| raw.get(key(i))).await;
        assert_eq!(got, Some(format!("v{i}").into_bytes()), "{}", key(i));
    }
    let all = retry(|| raw.scan(key(0)..key(900), 10_000)).await;
    assert_eq!(all.len(), 900);
}
