//! What the benchmark learns from the servers beside the client's own figures: the CPU time the
//! server processes used (from `/proc`), the stores' flamegraphs, and whether a Flotilla cluster
//! has reached the shape a run asks for.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::ctl::{http_get, http_get_json};

/// The server processes whose CPU time is counted: pids given on the command line, or read
/// afresh from a file (one pid per line) at every sample, so a restarted process is followed.
#[derive(Clone, Debug, Default)]
pub struct ServerPids {
    pub pids: Vec<u32>,
    pub file: Option<PathBuf>,
}

impl ServerPids {
    fn current(&self) -> Vec<u32> {
        let mut pids = self.pids.clone();
        if let Some(f) = &self.file {
            if let Ok(text) = std::fs::read_to_string(f) {
                pids.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
        pids
    }

    /// CPU seconds (user + system) used so far by each process, by pid; `None` if no process
    /// is named or one of them cannot be read.
    pub fn sample(&self) -> Option<Vec<(u32, f64)>> {
        let pids = self.current();
        if pids.is_empty() {
            return None;
        }
        pids.into_iter()
            .map(|pid| cpu_seconds(pid).map(|s| (pid, s)))
            .collect()
    }
}

/// CPU seconds used between two samples by the processes present in both; `None` if a process
/// was replaced in between (its time would be lost).
pub fn cpu_used(before: &[(u32, f64)], after: &[(u32, f64)]) -> Option<f64> {
    let mut total = 0.0;
    for (pid, end) in after {
        let (_, start) = before.iter().find(|(p, _)| p == pid)?;
        total += end - start;
    }
    Some(total)
}

/// utime + stime of `pid`, in seconds (fields 14 and 15 of `/proc/PID/stat`).
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its ')' are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / ticks.max(1.0))
}

/// The stores PD knows: (store id, status address).
pub async fn store_status_addrs(pd: &str) -> Result<Vec<(u64, String)>> {
    let v = http_get_json(pd, "/pd/api/v1/stores").await?;
    Ok(v["stores"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let id = s["store"]["id"].as_u64()?;
            let addr = s["store"]["status_address"].as_str()?.to_string();
            (!addr.is_empty()).then_some((id, addr))
        })
        .collect())
}

/// Takes a `seconds`-long CPU profile of every store at once and writes each flamegraph to
/// `dir/NAME-store<ID>.svg`; returns the files written (a store that fails is reported, not
/// fatal).
pub async fn profile_stores(
    pd: &str,
    dir: &Path,
    name: &str,
    seconds: u64,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let stores = store_status_addrs(pd).await?;
    let fetches = stores.into_iter().map(|(id, addr)| async move {
        let path = format!("/debug/pprof/profile?seconds={seconds}");
        (id, http_get(&addr, &path).await)
    });
    let mut written = vec![];
    for (id, svg) in futures::future::join_all(fetches).await {
        match svg {
            Ok(svg) => {
                let file = dir.join(format!("{name}-store{id}.svg"));
                std::fs::write(&file, svg)
                    .with_context(|| format!("writing {}", file.display()))?;
                written.push(file);
            }
            Err(e) => eprintln!("profile of store {id} failed: {e:#}"),
        }
    }
    Ok(written)
}

/// The region and leader counts PD reports.
#[derive(Debug, Clone)]
pub struct Shape {
    pub regions: u64,
    pub leaders_per_store: Vec<u64>,
}

impl Shape {
    /// Leaders are balanced when no store leads more than a sixth of the regions above the one
    /// that leads the fewest (and at most 2 for small counts).
    pub fn balanced(&self) -> bool {
        let max = self.leaders_per_store.iter().max().copied().unwrap_or(0);
        let min = self.leaders_per_store.iter().min().copied().unwrap_or(0);
        max - min <= (self.regions / 6).max(2)
    }
}

/// The cluster's shape as PD sees it.
pub async fn shape(pd: &str) -> Result<Shape> {
    let regions = http_get_json(pd, "/pd/api/v1/regions").await?["count"]
        .as_u64()
        .unwrap_or(0);
    let stores = http_get_json(pd, "/pd/api/v1/stores").await?;
    let leaders_per_store = stores["stores"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["status"]["is_up"].as_bool().unwrap_or(false))
        .map(|s| s["status"]["leader_count"].as_u64().unwrap_or(0))
        .collect();
    Ok(Shape {
        regions,
        leaders_per_store,
    })
}

/// Waits until the cluster has at least `min_regions` regions with balanced leaders, or
/// `timeout` passes; returns the last shape seen and whether it was reached.
pub async fn wait_for_shape(
    pd: &str,
    min_regions: u64,
    timeout: Duration,
) -> Result<(Shape, bool)> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = shape(pd).await?;
        let reached = s.regions >= min_regions && s.balanced();
        if reached || Instant::now() >= deadline {
            return Ok((s, reached));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_of_this_process_grows_with_work() {
        let me = ServerPids {
            pids: vec![std::process::id()],
            file: None,
        };
        let before = me.sample().expect("own /proc entry");
        let mut x = 0u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = me.sample().unwrap();
        let used = cpu_used(&before, &after).unwrap();
        assert!(used > 0.1 && used < 5.0, "used {used}");
    }

    #[test]
    fn a_replaced_process_makes_the_figure_unknown() {
        assert_eq!(cpu_used(&[(1, 2.0)], &[(2, 3.0)]), None);
        assert_eq!(cpu_used(&[(1, 2.0), (2, 1.0)], &[(1, 3.5)]), Some(1.5));
    }

    #[test]
    fn balance_allows_a_sixth_of_the_regions() {
        let s = |regions, l: &[u64]| Shape {
            regions,
            leaders_per_store: l.to_vec(),
        };
        assert!(s(48, &[16, 16, 16]).balanced());
        assert!(s(48, &[20, 14, 14]).balanced());
        assert!(!s(48, &[30, 9, 9]).balanced());
        assert!(!s(5, &[5, 0, 0]).balanced());
    }
}
