//! Prometheus metrics of the server layer, registered once in the default registry (so several
//! in-process stores share them) and served by the status server's `/metrics`.

use std::sync::LazyLock;

use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge,
    Encoder, HistogramVec, IntCounter, IntCounterVec, IntGauge, TextEncoder,
};

/// Client requests received, by request type.
pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "flotilla_server_requests_total",
        "Client requests by type",
        &["type"]
    )
    .expect("metric registers once")
});

/// Client requests answered with an error, by request type and kind (`region`, `storage`).
pub static REQUEST_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "flotilla_server_request_errors_total",
        "Client requests answered with an error, by type and kind",
        &["type", "kind"]
    )
    .expect("metric registers once")
});

/// Latency of client requests, by request type.
pub static REQUEST_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "flotilla_server_request_duration_seconds",
        "Latency of client requests by type",
        &["type"],
        prometheus::exponential_buckets(0.0001, 2.0, 20).expect("valid buckets")
    )
    .expect("metric registers once")
});

/// Raft messages of the store-to-store transport, by event (`sent`, `received`, `dropped_full`,
/// `dropped_unreachable`, `snapshot_sent`, `snapshot_failed`, `snapshot_received`; and
/// `snapshot_bytes_sent`, which counts the bytes of delivered snapshots, not messages).
pub static RAFT_MESSAGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "flotilla_transport_raft_messages_total",
        "Store-to-store raft messages by event",
        &["event"]
    )
    .expect("metric registers once")
});

/// Regions the GC worker has garbage-collected (one per region and safe point).
pub static GC_REGIONS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "flotilla_gc_regions_total",
        "Regions garbage-collected below a GC safe point"
    )
    .expect("metric registers once")
});

/// Splits asked by load-based split (see `crate::load_split`).
pub static LOAD_SPLITS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "flotilla_load_splits_total",
        "Region splits asked because of the region's load"
    )
    .expect("metric registers once")
});

/// Bytes the store may still write before its reserve (see `crate::disk`).
pub static DISK_AVAILABLE_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "flotilla_store_disk_available_bytes",
        "Bytes the store may still write: free space, capped by storage.capacity_bytes"
    )
    .expect("metric registers once")
});

/// 1 while the store refuses writes for lack of disk space, else 0.
pub static DISK_FULL: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "flotilla_store_disk_full",
        "1 while available bytes are below storage.reserve_space_bytes and writes are refused"
    )
    .expect("metric registers once")
});

/// Counts one transport event.
pub fn raft_event(event: &str, n: u64) {
    RAFT_MESSAGES.with_label_values(&[event]).inc_by(n);
}

/// Every metric of the process in the Prometheus text format.
pub fn render() -> String {
    // Touch our metrics so they appear even before the first request.
    LazyLock::force(&REQUESTS);
    LazyLock::force(&REQUEST_ERRORS);
    LazyLock::force(&REQUEST_DURATION);
    LazyLock::force(&RAFT_MESSAGES);
    LazyLock::force(&GC_REGIONS);
    LazyLock::force(&DISK_AVAILABLE_BYTES);
    LazyLock::force(&DISK_FULL);
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&prometheus::gather(), &mut buf) {
        tracing::warn!(error = %e, "encoding metrics failed");
    }
    String::from_utf8(buf).unwrap_or_default()
}
