//! PD's HTTP API on the gRPC port: `/pd/api/v1/regions`, `/pd/api/v1/region/id/{id}`,
//! `/pd/api/v1/hotspot/regions/write` and `/read` (the regions with the most bytes per second
//! in their last heartbeat, by leader store), `/pd/api/v1/stores`,
//! `/pd/api/v1/store/{id}` (`GET` one store, `DELETE` to decommission it: Offline, then
//! Tombstone once its regions have moved; `?force=true` skips the check on the Up stores left),
//! `POST /pd/api/v1/store/{id}/state?state=Up|Offline`, `/metrics`, `/status`, and
//! `POST /pd/api/v1/operators` for an operator's `transfer-leader`, `split-region` (keys as
//! uppercase hex of the encoded region keys) or `merge-region` (a refused merge answers `400`
//! with a `reason`: `same_region`, `not_adjacent`, `different_keyspaces`, `unhealthy`). JSON shapes follow PD's API closely enough for
//! scripts, `flotilla ctl` and fault tests; every error is a JSON `{"error": ...}`, an unknown
//! path `404` and a known path with the wrong method `405` (a gRPC call to an unknown method
//! still gets gRPC's `UNIMPLEMENTED`). A member of a PD group that does not lead answers `503`
//! with the leader's URL (when it knows one) to everything but `/status` and `/metrics`.

use std::sync::Arc;

use std::collections::HashMap;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use codec::hex::{from_hex as unhex, to_hex as hex};
use proto::metapb::{Peer, PeerRole, StoreState};
use serde_json::{json, Value};

use crate::cluster::StoreStatus;
use crate::metrics::Metrics;
use crate::region_dir::{RegionFlow, RegionInfo};
use crate::server::Serving;
use crate::service::now_ms;
use crate::{Cluster, PdError};

#[derive(Clone)]
struct HttpState {
    serving: Serving,
    metrics: Arc<Metrics>,
}

type Reply = (StatusCode, Json<Value>);

impl HttpState {
    /// The served state, or the `503` a member that does not lead answers.
    fn cluster(&self) -> Result<Arc<Cluster>, Reply> {
        self.serving.cluster().ok_or_else(|| {
            let leader = self
                .serving
                .leader()
                .and_then(|m| m.client_urls.first().cloned());
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "not leader", "leader": leader})),
            )
        })
    }
}

/// Adds the HTTP routes to `router` (the gRPC router).
pub(crate) fn routes(router: Router, serving: Serving, metrics: Arc<Metrics>) -> Router {
    let api = Router::new()
        .route("/pd/api/v1/regions", get(regions))
        .route("/pd/api/v1/region/id/{id}", get(region_by_id))
        .route("/pd/api/v1/hotspot/regions/write", get(hot_write_regions))
        .route("/pd/api/v1/hotspot/regions/read", get(hot_read_regions))
        .route("/pd/api/v1/stores", get(stores))
        .route("/pd/api/v1/store/{id}", get(store).delete(delete_store))
        .route("/pd/api/v1/store/{id}/state", post(set_store_state))
        .route("/pd/api/v1/operators", post(add_operator))
        .route("/metrics", get(metrics_text))
        .route("/status", get(status))
        .with_state(HttpState { serving, metrics });
    // The gRPC router's own fallback (gRPC's UNIMPLEMENTED for every path) is replaced by one
    // that still answers gRPC calls that way and everything else with a JSON 404.
    router
        .merge(api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

fn error_reply(code: StatusCode, error: impl std::fmt::Display) -> Reply {
    (code, Json(json!({ "error": error.to_string() })))
}

/// An unknown path: gRPC's `UNIMPLEMENTED` to a gRPC call, a JSON `404` to anything else.
async fn not_found(req: Request) -> Response {
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    if grpc {
        let msg = format!("no such method {}", req.uri().path());
        return tonic::Status::unimplemented(msg)
            .into_http::<axum::body::Body>()
            .into_response();
    }
    let error = format!("no route {} {}", req.method(), req.uri().path());
    error_reply(StatusCode::NOT_FOUND, error).into_response()
}

/// A known path with a method it does not take.
async fn method_not_allowed(req: Request) -> Reply {
    let error = format!(
        "method {} not allowed on {}",
        req.method(),
        req.uri().path()
    );
    error_reply(StatusCode::METHOD_NOT_ALLOWED, error)
}

/// The HTTP status a PD error is answered with.
fn status_of(e: &PdError) -> StatusCode {
    match e {
        PdError::RegionNotFound(_) | PdError::StoreNotFound(_) => StatusCode::NOT_FOUND,
        PdError::Busy(_) | PdError::StoreTombstone(_) | PdError::StoresNotEnough { .. } => {
            StatusCode::CONFLICT
        }
        PdError::InvalidValue(_) | PdError::NotBootstrapped | PdError::MergeRefused { .. } => {
            StatusCode::BAD_REQUEST
        }
        PdError::NotLeader => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn pd_error_reply(e: PdError) -> Reply {
    let (code, mut reply) = error_reply(status_of(&e), &e);
    if let PdError::MergeRefused { reason, .. } = &e {
        reply["reason"] = json!(reason.code());
    }
    (code, reply)
}

fn ok_reply() -> Reply {
    (StatusCode::OK, Json(json!({"ok": true})))
}

fn peer_json(p: &Peer) -> Value {
    let role = PeerRole::try_from(p.role).map_or("Unknown", |r| r.as_str_name());
    json!({"id": p.id, "store_id": p.store_id, "role": role})
}

/// One region as `/pd/api/v1/regions` shows it.
pub(crate) fn region_json(r: &RegionInfo) -> Value {
    let epoch = r.epoch();
    json!({
        "id": r.region.id,
        "start_key": hex(&r.region.start_key),
        "end_key": hex(&r.region.end_key),
        "epoch": {"conf_ver": epoch.conf_ver, "version": epoch.version},
        "peers": r.region.peers.iter().map(peer_json).collect::<Vec<_>>(),
        "leader": r.leader.as_ref().map(peer_json),
        "approximate_size": r.approximate_size,
        "approximate_keys": r.approximate_keys,
        // The traffic of the leader's last heartbeat interval, as PD shows it.
        "written_bytes": r.flow.written_bytes,
        "written_keys": r.flow.written_keys,
        "read_bytes": r.flow.read_bytes,
        "read_keys": r.flow.read_keys,
        "write_queries": r.flow.write_queries,
        "read_queries": r.flow.read_queries,
        "interval_secs": r.flow.interval_secs,
        "pending_peers": r.pending_peers.iter().map(peer_json).collect::<Vec<_>>(),
        "down_peers": r.down_peers.iter().map(|d| json!({
            "peer": d.peer.as_ref().map(peer_json),
            "down_seconds": d.down_seconds,
        })).collect::<Vec<_>>(),
    })
}

/// One store as `/pd/api/v1/stores` shows it.
pub(crate) fn store_json(s: &StoreStatus) -> Value {
    let store = &s.info.store;
    let state = StoreState::try_from(store.state).map_or("Unknown", |st| st.as_str_name());
    // The traffic of the store's last heartbeat interval, and its rates.
    let flow = RegionFlow::from_store_stats(&s.info.stats.unwrap_or_default());
    json!({
        "store": {"id": store.id, "address": store.address, "state": state, "status_address": store.status_address},
        "status": {
            "region_count": s.region_count,
            "leader_count": s.leader_count,
            "last_heartbeat_ms": s.info.last_heartbeat_ms,
            "is_up": s.is_up,
            "is_down_long": s.is_down_long,
            // Progress of a decommission: the peers still to move off an Offline store.
            "regions_left": (store.state == StoreState::Offline as i32).then_some(s.region_count),
            "bytes_written": flow.written_bytes,
            "keys_written": flow.written_keys,
            "bytes_read": flow.read_bytes,
            "keys_read": flow.read_keys,
            "write_queries": flow.write_queries,
            "read_queries": flow.read_queries,
            "interval_secs": flow.interval_secs,
            "bytes_written_per_sec": flow.per_sec(flow.written_bytes),
            "keys_written_per_sec": flow.per_sec(flow.written_keys),
            "bytes_read_per_sec": flow.per_sec(flow.read_bytes),
            "keys_read_per_sec": flow.per_sec(flow.read_keys),
            "write_queries_per_sec": flow.per_sec(flow.write_queries),
            "read_queries_per_sec": flow.per_sec(flow.read_queries),
        },
    })
}

/// A store id in a path; a JSON `400` if it is not one.
fn store_id(id: &str) -> Result<u64, Reply> {
    id.parse::<u64>()
        .ok()
        .filter(|id| *id != 0)
        .ok_or_else(|| error_reply(StatusCode::BAD_REQUEST, format!("bad store id {id:?}")))
}

async fn store(State(st): State<HttpState>, Path(id): Path<String>) -> Result<Json<Value>, Reply> {
    let id = store_id(&id)?;
    let stores = st.cluster()?.stores_status(now_ms());
    let s = stores
        .iter()
        .find(|s| s.info.store.id == id)
        .ok_or_else(|| pd_error_reply(PdError::StoreNotFound(id)))?;
    Ok(Json(store_json(s)))
}

/// `DELETE /pd/api/v1/store/{id}[?force=true]`: decommissions the store (Offline).
async fn delete_store(
    State(st): State<HttpState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Reply {
    let run = || -> Result<(), Reply> {
        let id = store_id(&id)?;
        let force = match query.get("force").map(String::as_str) {
            None | Some("false") => false,
            Some("" | "true") => true,
            Some(other) => {
                let error = format!("force must be true or false, not {other:?}");
                return Err(error_reply(StatusCode::BAD_REQUEST, error));
            }
        };
        st.cluster()?
            .remove_store(id, force)
            .map_err(pd_error_reply)
    };
    run().map_or_else(|reply| reply, |()| ok_reply())
}

/// `POST /pd/api/v1/store/{id}/state?state=Up|Offline`: cancels or starts a decommission. A
/// store becomes Tombstone only once PD has moved its regions away.
async fn set_store_state(
    State(st): State<HttpState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Reply {
    let run = || -> Result<(), Reply> {
        let id = store_id(&id)?;
        let cluster = st.cluster()?;
        match query.get("state").map(String::as_str) {
            Some("Up") => cluster.up_store(id),
            Some("Offline") => cluster.remove_store(id, false),
            other => {
                let error = format!(
                    "state must be Up or Offline, not {other:?} (a store becomes Tombstone \
                     once its regions have moved away)"
                );
                return Err(error_reply(StatusCode::BAD_REQUEST, error));
            }
        }
        .map_err(pd_error_reply)
    };
    run().map_or_else(|reply| reply, |()| ok_reply())
}

async fn regions(State(st): State<HttpState>) -> Result<Json<Value>, Reply> {
    let regions: Vec<Value> = st
        .cluster()?
        .all_regions()
        .iter()
        .map(region_json)
        .collect();
    Ok(Json(json!({"count": regions.len(), "regions": regions})))
}

/// `GET /pd/api/v1/region/id/{id}`: one region, or a JSON `404`.
async fn region_by_id(
    State(st): State<HttpState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Reply> {
    let id = id
        .parse::<u64>()
        .map_err(|_| error_reply(StatusCode::BAD_REQUEST, format!("bad region id {id:?}")))?;
    let region = st
        .cluster()?
        .get_region_by_id(id)
        .map_err(pd_error_reply)?
        .ok_or_else(|| pd_error_reply(PdError::RegionNotFound(id)))?;
    Ok(Json(region_json(&region)))
}

/// How many regions a hotspot listing shows at most.
const HOT_REGIONS_MAX: usize = 100;

/// Which traffic a hotspot listing ranks by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hot {
    Write,
    Read,
}

/// PD's hotspot shape, `{"as_leader": {"<store id>": {"total_flow_bytes", "total_flow_keys",
/// "regions_count", "statistics": [{"region_id", "store_id", "flow_bytes", "flow_keys"}]}}}`,
/// rates per second over each region's last heartbeat interval: the [`HOT_REGIONS_MAX`]
/// regions with the most bytes per second, regions without such traffic left out. Only the
/// leader's flow is known, so `as_peer` stays empty.
fn hotspot_json(regions: &[RegionInfo], hot: Hot) -> Value {
    let rates = |f: &RegionFlow| match hot {
        Hot::Write => (f.per_sec(f.written_bytes), f.per_sec(f.written_keys)),
        Hot::Read => (f.per_sec(f.read_bytes), f.per_sec(f.read_keys)),
    };
    let mut hot_regions: Vec<(u64, u64, f64, f64)> = regions
        .iter()
        .filter_map(|r| {
            let store_id = r.leader.as_ref()?.store_id;
            let (bytes, keys) = rates(&r.flow);
            (bytes > 0.0 || keys > 0.0).then_some((store_id, r.region.id, bytes, keys))
        })
        .collect();
    hot_regions.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.1.cmp(&b.1)));
    hot_regions.truncate(HOT_REGIONS_MAX);
    let mut by_store: std::collections::BTreeMap<u64, Vec<_>> = Default::default();
    for (store_id, region_id, bytes, keys) in hot_regions {
        by_store
            .entry(store_id)
            .or_default()
            .push((region_id, bytes, keys));
    }
    let as_leader: serde_json::Map<String, Value> = by_store
        .into_iter()
        .map(|(store_id, stats)| {
            let total_bytes: f64 = stats.iter().map(|s| s.1).sum();
            let total_keys: f64 = stats.iter().map(|s| s.2).sum();
            let statistics: Vec<Value> = stats
                .iter()
                .map(|(region_id, bytes, keys)| {
                    json!({"region_id": region_id, "store_id": store_id,
                           "flow_bytes": bytes, "flow_keys": keys})
                })
                .collect();
            let entry = json!({
                "total_flow_bytes": total_bytes,
                "total_flow_keys": total_keys,
                "regions_count": statistics.len(),
                "statistics": statistics,
            });
            (store_id.to_string(), entry)
        })
        .collect();
    json!({"as_peer": {}, "as_leader": as_leader})
}

async fn hot_write_regions(State(st): State<HttpState>) -> Result<Json<Value>, Reply> {
    Ok(Json(hotspot_json(&st.cluster()?.all_regions(), Hot::Write)))
}

async fn hot_read_regions(State(st): State<HttpState>) -> Result<Json<Value>, Reply> {
    Ok(Json(hotspot_json(&st.cluster()?.all_regions(), Hot::Read)))
}

async fn stores(State(st): State<HttpState>) -> Result<Json<Value>, Reply> {
    let stores: Vec<Value> = st
        .cluster()?
        .stores_status(now_ms())
        .iter()
        .map(store_json)
        .collect();
    Ok(Json(json!({"count": stores.len(), "stores": stores})))
}

/// The body of `POST /pd/api/v1/operators`, as PD takes it: `{"name": "transfer-leader",
/// "region_id": 2, "to_store_id": 3}`, `{"name": "split-region", "region_id": 2, "policy":
/// "usekey", "keys": ["7200..."]}` or `{"name": "merge-region", "source_region_id": 2,
/// "target_region_id": 3}`.
#[derive(serde::Deserialize)]
struct OperatorRequest {
    name: String,
    #[serde(default)]
    region_id: u64,
    #[serde(default)]
    source_region_id: u64,
    #[serde(default)]
    target_region_id: u64,
    #[serde(default)]
    to_store_id: u64,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    keys: Vec<String>,
}

fn bad_request(error: String) -> Reply {
    error_reply(StatusCode::BAD_REQUEST, error)
}

async fn add_operator(
    State(st): State<HttpState>,
    req: Result<Json<OperatorRequest>, axum::extract::rejection::JsonRejection>,
) -> Reply {
    let req = match req {
        Ok(Json(req)) => req,
        Err(e) => return bad_request(e.body_text()),
    };
    let cluster = match st.cluster() {
        Ok(c) => c,
        Err(reply) => return reply,
    };
    let now = now_ms();
    let added = match req.name.as_str() {
        "transfer-leader" => {
            cluster.add_transfer_leader_operator(req.region_id, req.to_store_id, now)
        }
        "split-region" => {
            if req.policy.as_deref().is_some_and(|p| p != "usekey") {
                return bad_request(format!(
                    "unsupported split policy {:?} (only usekey)",
                    req.policy
                ));
            }
            let keys: Option<Vec<Vec<u8>>> = req.keys.iter().map(|k| unhex(k)).collect();
            let Some(keys) = keys else {
                return bad_request("split keys must be hex".into());
            };
            cluster.add_split_operator(req.region_id, keys, now)
        }
        "merge-region" => {
            cluster.add_merge_operator(req.source_region_id, req.target_region_id, now)
        }
        other => return bad_request(format!("unsupported operator {other:?}")),
    };
    added.map_or_else(pd_error_reply, |()| ok_reply())
}

async fn metrics_text(State(st): State<HttpState>) -> String {
    if let Some(cluster) = st.serving.cluster() {
        let stores = cluster.stores_status(now_ms());
        st.metrics.stores.set(stores.len() as i64);
        st.metrics
            .stores_up
            .set(stores.iter().filter(|s| s.is_up).count() as i64);
        st.metrics.regions.set(cluster.region_count() as i64);
        st.metrics.operators.set(cluster.operator_count() as i64);
    }
    st.metrics.render()
}

/// This member's view: cluster id, whether it leads, who leads, and (when it leads) whether the
/// cluster is bootstrapped.
async fn status(State(st): State<HttpState>) -> Json<Value> {
    let cluster = st.serving.cluster();
    let leader = st.serving.leader();
    Json(json!({
        "cluster_id": st.serving.cluster_id(),
        "member_id": st.serving.member_id(),
        "is_leader": cluster.is_some(),
        "leader_id": leader.as_ref().map(|m| m.member_id),
        "leader": leader.and_then(|m| m.client_urls.first().cloned()),
        "bootstrapped": cluster.map(|c| c.is_bootstrapped()),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::metapb::Region;

    fn region(id: u64, store_id: u64, flow: RegionFlow) -> RegionInfo {
        let leader = Peer {
            id: id * 10,
            store_id,
            ..Default::default()
        };
        RegionInfo {
            flow,
            ..RegionInfo::new(
                Region {
                    id,
                    ..Default::default()
                },
                Some(leader),
            )
        }
    }

    #[test]
    fn hotspots_rank_regions_by_bytes_per_second_and_skip_idle_ones() {
        let flow = |written_bytes, read_bytes, interval_secs| RegionFlow {
            written_bytes,
            written_keys: written_bytes / 10,
            read_bytes,
            read_keys: read_bytes / 10,
            interval_secs,
            ..Default::default()
        };
        let regions = [
            region(1, 1, flow(1000, 0, 10)),
            region(2, 1, flow(600, 50, 2)),
            region(3, 2, flow(0, 0, 10)),
            region(4, 2, flow(200, 0, 0)),
        ];
        let w = hotspot_json(&regions, Hot::Write);
        let s1 = &w["as_leader"]["1"];
        assert_eq!(s1["regions_count"], 2);
        assert_eq!(s1["statistics"][0]["region_id"], 2);
        assert_eq!(s1["statistics"][0]["flow_bytes"], 300.0);
        assert_eq!(s1["statistics"][1]["flow_bytes"], 100.0);
        assert_eq!(s1["total_flow_bytes"], 400.0);
        // An interval under a second counts as one; an idle region is not listed.
        let s2 = &w["as_leader"]["2"];
        assert_eq!(s2["regions_count"], 1);
        assert_eq!(s2["statistics"][0]["region_id"], 4);
        assert_eq!(s2["statistics"][0]["flow_bytes"], 200.0);
        let r = hotspot_json(&regions, Hot::Read);
        assert_eq!(r["as_leader"]["1"]["statistics"][0]["region_id"], 2);
        assert!(r["as_leader"].get("2").is_none());
    }

    #[test]
    fn region_json_shows_the_last_reported_flow() {
        let r = region(
            7,
            1,
            RegionFlow {
                written_bytes: 1,
                written_keys: 2,
                read_bytes: 3,
                read_keys: 4,
                write_queries: 6,
                read_queries: 7,
                interval_secs: 5,
            },
        );
        let j = region_json(&r);
        assert_eq!(
            (
                &j["written_bytes"],
                &j["written_keys"],
                &j["read_bytes"],
                &j["read_keys"],
                &j["write_queries"],
                &j["read_queries"]
            ),
            (
                &json!(1),
                &json!(2),
                &json!(3),
                &json!(4),
                &json!(6),
                &json!(7)
            )
        );
    }
}
