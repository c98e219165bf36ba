//! The PD process `pd-sim` starts and measures: a `flotilla pd` child on a loopback port the
//! OS handed out, its CPU time and resident memory from `/proc/PID`, and its `/metrics`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use proto::pdpb::pd_client::PdClient;
use proto::pdpb::GetMembersRequest;
use tonic::transport::Channel;

use crate::playground::free_port;

/// How long PD may take to answer its first call.
const START_WAIT_MAX: Duration = Duration::from_secs(30);

/// A `flotilla pd` child process; killed (by its pid) and its data dir removed when dropped.
pub(super) struct PdProc {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub(super) addr: String,
    dir: PathBuf,
    /// Whether `dir` was created here (and is removed on drop).
    own_dir: bool,
}

impl PdProc {
    /// Starts PD with its data under `dir` (created; a fresh one under /dev/shm, or the temp
    /// dir, when None) and waits until it answers GetMembers.
    pub(super) async fn start(dir: Option<&Path>) -> Result<PdProc> {
        let (dir, own_dir) = match dir {
            Some(d) => (d.to_path_buf(), false),
            None => {
                let base = Path::new("/dev/shm");
                let base = if base.is_dir() {
                    base.to_path_buf()
                } else {
                    std::env::temp_dir()
                };
                (
                    base.join(format!("flotilla-pd-sim-{}", std::process::id())),
                    true,
                )
            }
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let addr = format!("127.0.0.1:{}", free_port(0)?);
        let log = std::fs::File::create(dir.join("pd.log"))?;
        let child = Command::new(std::env::current_exe()?)
            .arg("pd")
            .arg("--data-dir")
            .arg(dir.join("pd"))
            .arg("--addr")
            .arg(&addr)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting flotilla pd")?;
        let mut pd = PdProc {
            child,
            addr,
            dir,
            own_dir,
        };
        let deadline = Instant::now() + START_WAIT_MAX;
        loop {
            if let Some(status) = pd.child.try_wait()? {
                bail!("PD exited ({status}); its log: {}", pd.log_tail());
            }
            if let Ok(mut client) = pd.connect().await {
                if client
                    .get_members(GetMembersRequest::default())
                    .await
                    .is_ok()
                {
                    return Ok(pd);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "PD did not answer within {START_WAIT_MAX:?}: {}",
                    pd.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A new connection (HTTP/2) to PD's gRPC services (the PD this tool starts runs without
    /// TLS).
    pub(super) async fn connect(&self) -> Result<PdClient<Channel>> {
        let plaintext = security::SecurityManager::plaintext();
        let endpoint = plaintext
            .endpoint(&self.addr.to_string())?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2));
        let channel = plaintext.channel(endpoint).await?;
        Ok(PdClient::new(channel))
    }

    /// The child's pid.
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system) and resident memory of the process now.
    pub(super) fn usage(&self) -> Result<Usage> {
        read_usage(self.pid())
    }

    /// PD's `/metrics`, parsed.
    pub(super) async fn metrics(&self) -> Result<Metrics> {
        let body = crate::ctl::http_get(&self.addr, "/metrics").await?;
        Ok(Metrics::parse(&String::from_utf8_lossy(&body)))
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("pd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for PdProc {
    fn drop(&mut self) {
        // Only the child this tool started, by its pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.own_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A process's resource use at one moment.
#[derive(Clone, Copy, Debug)]
pub(super) struct Usage {
    /// User + system CPU time, seconds.
    pub(super) cpu_secs: f64,
    /// Resident set size, bytes.
    pub(super) rss_bytes: u64,
}

/// Reads `/proc/PID/stat` (utime, stime) and `/proc/PID/status` (VmRSS).
fn read_usage(pid: u32) -> Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line; `rest` starts at field 3.
    let ticks = |i: usize| -> Result<u64> {
        let f = fields.get(i - 3).context("short /proc stat")?;
        Ok(f.parse()?)
    };
    // SAFETY: sysconf reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu_secs = (ticks(14)? + ticks(15)?) as f64 / hz;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(Usage {
        cpu_secs,
        rss_bytes: rss_kib * 1024,
    })
}

/// What `pd-sim` reads from PD's `/metrics`.
#[derive(Clone, Debug, Default)]
pub(super) struct Metrics {
    /// `pd_regions`: regions in the directory.
    pub(super) regions: u64,
    /// `pd_region_heartbeat_seconds` buckets: (upper bound in seconds, cumulative count).
    pub(super) heartbeat_buckets: Vec<(f64, u64)>,
    /// Heartbeats handled (the histogram's count).
    pub(super) heartbeats_handled: u64,
}

impl Metrics {
    fn parse(text: &str) -> Metrics {
        let mut m = Metrics::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let value: f64 = value.parse().unwrap_or(0.0);
            if name == "pd_regions" {
                m.regions = value as u64;
            } else if name == "pd_region_heartbeat_seconds_count" {
                m.heartbeats_handled = value as u64;
            } else if let Some(le) = name
                .strip_prefix("pd_region_heartbeat_seconds_bucket{le=\"")
                .and_then(|r| r.strip_suffix("\"}"))
            {
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::INFINITY)
                };
                m.heartbeat_buckets.push((le, value as u64));
            }
        }
        m
    }

    /// The upper bound (seconds) of the bucket holding quantile `q` of the heartbeats handled
    /// since `before`; None if none were.
    pub(super) fn heartbeat_quantile_since(&self, before: &Metrics, q: f64) -> Option<f64> {
        let base = |le: f64| {
            before
                .heartbeat_buckets
                .iter()
                .find(|(b, _)| *b == le)
                .map_or(0, |(_, c)| *c)
        };
        let total =
            self.heartbeats_handled - before.heartbeats_handled.min(self.heartbeats_handled);
        if total == 0 {
            return None;
        }
        let want = (q * total as f64).ceil().max(1.0) as u64;
        self.heartbeat_buckets
            .iter()
            .find(|(le, c)| c.saturating_sub(base(*le)) >= want)
            .map(|(le, _)| *le)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_quantiles_come_from_bucket_deltas() {
        let text = |a: u64, b: u64, c: u64| {
            format!(
                "# HELP x\npd_regions 7\n\
                 pd_region_heartbeat_seconds_bucket{{le=\"0.00001\"}} {a}\n\
                 pd_region_heartbeat_seconds_bucket{{le=\"0.001\"}} {b}\n\
                 pd_region_heartbeat_seconds_bucket{{le=\"+Inf\"}} {c}\n\
                 pd_region_heartbeat_seconds_count {c}\n"
            )
        };
        let before = Metrics::parse(&text(100, 100, 100));
        let after = Metrics::parse(&text(190, 199, 200));
        assert_eq!(after.regions, 7);
        assert_eq!(after.heartbeat_quantile_since(&before, 0.5), Some(0.00001));
        assert_eq!(after.heartbeat_quantile_since(&before, 0.99), Some(0.001));
        assert_eq!(
            after.heartbeat_quantile_since(&before, 1.0),
            Some(f64::INFINITY)
        );
        assert_eq!(before.heartbeat_quantile_since(&before, 0.5), None);
    }

    #[test]
    fn usage_of_this_process_is_read() {
        let u = read_usage(std::process::id()).unwrap();
        assert!(u.rss_bytes > 0);
    }
}
