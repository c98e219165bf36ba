//! The commands that operate a running playground: `scale-out`, `scale-in` and `display`.
//! They reach it through its control port (see [`super::control`]) and watch PD's store list
//! (`GET /pd/api/v1/stores`) to report progress: new stores coming Up, a decommissioned store's
//! regions left to move.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use super::control::{call, MemberView, PlaygroundInfo, Request};
use crate::ctl::http_get_json;

/// How often progress is polled while waiting.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Options of `flotilla playground scale-out`.
#[derive(Args, Debug)]
pub struct ScaleOutArgs {
    /// The running playground's data dir.
    #[arg(long, default_value = "./data/playground")]
    pub data_dir: PathBuf,
    /// Number of stores to add.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=super::STORES_MAX as u64))]
    pub count: u64,
    /// Longest wait for PD to list the new stores Up (0: do not wait).
    #[arg(long, default_value_t = 60)]
    pub wait_secs: u64,
}

/// Options of `flotilla playground scale-in`.
#[derive(Args, Debug)]
pub struct ScaleInArgs {
    /// The running playground's data dir.
    #[arg(long, default_value = "./data/playground")]
    pub data_dir: PathBuf,
    /// The id of the store to remove, as PD and `flotilla ctl stores` name it.
    #[arg(long)]
    pub store: u64,
    /// Longest wait for the store to become a Tombstone and stop (0: do not wait; the
    /// playground finishes the job by itself).
    #[arg(long, default_value_t = 600)]
    pub wait_secs: u64,
}

/// Options of `flotilla playground display`.
#[derive(Args, Debug)]
pub struct DisplayArgs {
    /// The running playground's data dir.
    #[arg(long, default_value = "./data/playground")]
    pub data_dir: PathBuf,
}

/// A store as PD lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreState {
    /// Its advertised address.
    pub address: String,
    /// `Up`, `Offline` or `Tombstone`.
    pub state: String,
    /// Whether it sends heartbeats.
    pub is_up: bool,
    /// Region peers it holds.
    pub region_count: u64,
}

/// PD's stores by id, read from `/pd/api/v1/stores` at `pd` (comma separated: a PD group).
pub async fn store_states(pd: &str) -> Result<HashMap<u64, StoreState>> {
    let v = http_get_json(pd, "/pd/api/v1/stores").await?;
    Ok(parse_stores(&v))
}

fn parse_stores(v: &serde_json::Value) -> HashMap<u64, StoreState> {
    v["stores"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let id = s["store"]["id"].as_u64()?;
            let state = StoreState {
                address: s["store"]["address"].as_str().unwrap_or("").to_owned(),
                state: s["store"]["state"].as_str().unwrap_or("Unknown").to_owned(),
                is_up: s["status"]["is_up"].as_bool().unwrap_or(false),
                region_count: s["status"]["region_count"].as_u64().unwrap_or(0),
            };
            Some((id, state))
        })
        .collect()
}

/// `flotilla playground scale-out`: starts new stores and waits until PD lists them Up.
pub async fn scale_out(args: ScaleOutArgs) -> Result<()> {
    let req = Request::ScaleOut {
        count: args.count as usize,
    };
    let (info, added) = call(&args.data_dir, &req).await?;
    for m in &added {
        println!(
            "added {} pid {} addr {} status {}",
            m.name,
            m.pid.map_or("-".into(), |p| p.to_string()),
            m.addr,
            m.status_addr.as_deref().unwrap_or("-")
        );
    }
    if args.wait_secs == 0 {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait_secs);
    loop {
        let states = store_states(&info.pd_endpoints()).await.unwrap_or_default();
        let up: Vec<(&MemberView, u64)> = added
            .iter()
            .filter_map(|m| {
                let (id, _) = states
                    .iter()
                    .find(|(_, s)| s.address == m.addr && s.state == "Up" && s.is_up)?;
                Some((m, *id))
            })
            .collect();
        if up.len() == added.len() {
            for (m, id) in up {
                println!("{} is store {id}, Up", m.name);
            }
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "{} of {} new stores Up at PD after {} s; see their logs",
                up.len(),
                added.len(),
                args.wait_secs
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// `flotilla playground scale-in`: decommissions a store and, unless told not to wait, reports
/// the regions left on it until PD makes it a Tombstone and the playground has stopped it.
pub async fn scale_in(args: ScaleInArgs) -> Result<()> {
    let req = Request::ScaleIn {
        store_id: args.store,
    };
    let (info, members) = call(&args.data_dir, &req).await?;
    let name = members.first().map_or("?".to_owned(), |m| m.name.clone());
    println!(
        "{name} (store {}) is decommissioning: PD moves its regions away",
        args.store
    );
    if args.wait_secs == 0 {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait_secs);
    let mut last = None;
    loop {
        let state = store_states(&info.pd_endpoints())
            .await
            .ok()
            .and_then(|s| s.get(&args.store).cloned());
        if let Some(s) = &state {
            let now = (s.state.clone(), s.region_count);
            if last.as_ref() != Some(&now) {
                println!(
                    "store {}: {}, {} regions left",
                    args.store, s.state, s.region_count
                );
                last = Some(now);
            }
        }
        if state.is_some_and(|s| s.state == "Tombstone") {
            let (_, all) = call(&args.data_dir, &Request::Display).await?;
            if all.iter().any(|m| m.name == name && m.state == "removed") {
                println!("{name} stopped and removed from the playground");
                return Ok(());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "store {} is not removed after {} s (the playground keeps at it): {:?}",
                args.store,
                args.wait_secs,
                last
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// `flotilla playground display`: every process, with PD's store id and state for stores.
pub async fn display(args: DisplayArgs) -> Result<()> {
    let (info, members) = call(&args.data_dir, &Request::Display).await?;
    let states = store_states(&info.pd_endpoints()).await.unwrap_or_default();
    print!("{}", table(&info, &members, &states));
    Ok(())
}

/// The table `display` prints.
fn table(
    info: &PlaygroundInfo,
    members: &[MemberView],
    states: &HashMap<u64, StoreState>,
) -> String {
    let mut out = format!(
        "playground pid {}, PD {}\n{:<10} {:<6} {:>8} {:<10} {:>6} {:<10} {:<16} {:<16} {:>5}\n",
        info.pid,
        info.pd_endpoints(),
        "name",
        "kind",
        "pid",
        "state",
        "store",
        "pd state",
        "addr",
        "status",
        "cpu"
    );
    for m in members {
        let at_pd = states.iter().find(|(id, s)| {
            m.kind == "store"
                && (m.store_id == Some(**id) || (m.store_id.is_none() && s.address == m.addr))
        });
        out.push_str(&format!(
            "{:<10} {:<6} {:>8} {:<10} {:>6} {:<10} {:<16} {:<16} {:>5}\n",
            m.name,
            m.kind,
            m.pid.map_or("-".into(), |p| p.to_string()),
            m.state,
            at_pd.map_or("-".into(), |(id, _)| id.to_string()),
            at_pd.map_or("-", |(_, s)| s.state.as_str()),
            m.addr,
            m.status_addr.as_deref().unwrap_or("-"),
            m.cpu_cores.map_or("-".into(), |c| format!("{c:.2}")),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_are_read_from_pd_and_joined_to_processes_by_address() {
        let v = serde_json::json!({"count": 2, "stores": [
            {"store": {"id": 1, "address": "127.0.0.1:20161", "state": "Up"},
             "status": {"region_count": 5, "is_up": true}},
            {"store": {"id": 4, "address": "127.0.0.1:20164", "state": "Offline"},
             "status": {"region_count": 2, "is_up": true}},
            {"store": {"address": "no id"}}
        ]});
        let states = parse_stores(&v);
        assert_eq!(states.len(), 2);
        assert_eq!(states[&4].state, "Offline");
        assert_eq!(states[&4].region_count, 2);
        let view = |name: &str, addr: &str| MemberView {
            name: name.into(),
            kind: "store".into(),
            pid: Some(10),
            addr: addr.into(),
            status_addr: None,
            data_dir: String::new(),
            log: String::new(),
            state: "running".into(),
            store_id: None,
            cpu_cores: Some(0.2),
        };
        let info = PlaygroundInfo {
            pid: 1,
            control_addr: String::new(),
            pd: vec!["127.0.0.1:2379".into()],
        };
        let t = table(
            &info,
            &[
                view("store1", "127.0.0.1:20161"),
                view("store2", "127.0.0.1:9"),
            ],
            &states,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[2].starts_with("store1") && lines[2].contains(" Up "),
            "{t}"
        );
        assert!(lines[2].contains("0.20"), "{t}");
        assert!(
            lines[3].starts_with("store2") && !lines[3].contains(" Up "),
            "{t}"
        );
    }
}
