//! The status HTTP server: `/metrics` (Prometheus text), `/status` (JSON view of the store and
//! its regions), `/debug/pprof/profile?seconds=N` (a CPU flamegraph, see [`crate::profile`])
//! and, when the store allows fault injection, `/debug/fault/partition` (see [`crate::fault`]).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use raftstore::RaftRouter;
use serde::Serialize;
use tokio::sync::watch;

use crate::fault::RaftPartition;
use crate::{metrics, profile};

/// The store as `/status` shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct StoreStatus {
    /// This store's id.
    pub store_id: u64,
    /// Its gRPC address.
    pub address: String,
    /// Regions it holds a peer of.
    pub region_count: usize,
    /// Regions it leads.
    pub leader_count: usize,
    /// One entry per region, by id.
    pub regions: Vec<RegionStatus>,
}

/// One region in `/status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RegionStatus {
    /// Region id.
    pub id: u64,
    /// The leader's peer id (0: unknown).
    pub leader: u64,
    /// Whether this store leads it.
    pub is_leader: bool,
    /// Raft term.
    pub term: u64,
    /// Last applied log index.
    pub applied_index: u64,
}

#[derive(Clone)]
struct StatusState {
    router: RaftRouter,
    address: String,
    /// The store's raft partition, if fault injection is allowed.
    partition: Option<Arc<RaftPartition>>,
    /// Turns true when the store stops; a running profile then ends early.
    shutdown: watch::Receiver<bool>,
}

/// The current status of the store behind `router`.
pub fn store_status(router: &RaftRouter, address: &str) -> StoreStatus {
    let mut regions: Vec<RegionStatus> = router
        .region_infos()
        .into_iter()
        .map(|r| RegionStatus {
            id: r.region.id,
            leader: r.leader_id,
            is_leader: r.is_leader,
            term: r.term,
            applied_index: r.applied_index,
        })
        .collect();
    regions.sort_by_key(|r| r.id);
    StoreStatus {
        store_id: router.store_id(),
        address: address.to_owned(),
        region_count: regions.len(),
        leader_count: regions.iter().filter(|r| r.is_leader).count(),
        regions,
    }
}

async fn status_handler(State(state): State<StatusState>) -> Json<StoreStatus> {
    Json(store_status(&state.router, &state.address))
}

async fn metrics_handler() -> String {
    metrics::render()
}

/// Query of `/debug/pprof/profile`; `seconds` is parsed by hand so that every bad value gets
/// the same message.
#[derive(serde::Deserialize)]
struct ProfileQuery {
    seconds: Option<String>,
}

async fn profile_handler(
    State(state): State<StatusState>,
    Query(query): Query<ProfileQuery>,
) -> Response {
    let duration = match profile::parse_seconds(query.seconds.as_deref()) {
        Ok(duration) => duration,
        Err(msg) => return (StatusCode::BAD_REQUEST, msg).into_response(),
    };
    let mut shutdown = state.shutdown;
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    profile::profile_response(duration, stop).await
}

/// The body of `POST /debug/fault/partition` and the answer of `GET`: the stores whose raft
/// traffic this store drops (empty: healed).
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct PartitionBody {
    /// Store ids.
    pub blocked_stores: Vec<u64>,
}

fn fault_injection_disabled() -> Response {
    (
        StatusCode::FORBIDDEN,
        "fault injection is disabled on this store (set fault_injection = true)\n",
    )
        .into_response()
}

async fn set_partition_handler(
    State(state): State<StatusState>,
    Json(body): Json<PartitionBody>,
) -> Response {
    let Some(p) = &state.partition else {
        return fault_injection_disabled();
    };
    p.set(body.blocked_stores);
    tracing::warn!(blocked_stores = ?p.blocked(), "raft partition set by fault injection");
    Json(PartitionBody {
        blocked_stores: p.blocked(),
    })
    .into_response()
}

/// The body of `POST /debug/fault/clock` and the answer of `GET`: the offset of this store's
/// lease clock from real monotonic time (a clock that jumped; see `raftstore::lease`).
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct ClockBody {
    /// Milliseconds, either way.
    pub offset_ms: i64,
}

/// Largest clock offset fault injection sets, either way (an hour).
const CLOCK_OFFSET_MAX_MS: i64 = 3_600_000;

async fn set_clock_handler(
    State(state): State<StatusState>,
    Json(body): Json<ClockBody>,
) -> Response {
    if state.partition.is_none() {
        return fault_injection_disabled();
    }
    if body.offset_ms.abs() > CLOCK_OFFSET_MAX_MS {
        return (
            StatusCode::BAD_REQUEST,
            format!("offset_ms must be within ±{CLOCK_OFFSET_MAX_MS}\n"),
        )
            .into_response();
    }
    raftstore::set_clock_offset_ns(body.offset_ms * 1_000_000);
    tracing::warn!(
        offset_ms = body.offset_ms,
        "lease clock offset set by fault injection"
    );
    Json(ClockBody {
        offset_ms: raftstore::clock_offset_ns() / 1_000_000,
    })
    .into_response()
}

async fn get_clock_handler(State(state): State<StatusState>) -> Response {
    if state.partition.is_none() {
        return fault_injection_disabled();
    }
    Json(ClockBody {
        offset_ms: raftstore::clock_offset_ns() / 1_000_000,
    })
    .into_response()
}

async fn get_partition_handler(State(state): State<StatusState>) -> Response {
    match &state.partition {
        Some(p) => Json(PartitionBody {
            blocked_stores: p.blocked(),
        })
        .into_response(),
        None => fault_injection_disabled(),
    }
}

/// Serves the status endpoints on `listener` until `shutdown` turns true.
pub(crate) async fn serve(
    listener: security::Incoming,
    router: RaftRouter,
    address: String,
    partition: Option<Arc<RaftPartition>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/status", get(status_handler))
        .route("/debug/pprof/profile", get(profile_handler))
        .route(
            "/debug/fault/partition",
            post(set_partition_handler).get(get_partition_handler),
        )
        .route(
            "/debug/fault/clock",
            post(set_clock_handler).get(get_clock_handler),
        )
        .with_state(StatusState {
            router,
            address,
            partition,
            shutdown: shutdown.clone(),
        });
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::warn!(error = %e, "status server failed");
    }
}
