//! Emulated machines: a CPU cgroup per playground process, with a quota in cores. On cgroup v2
//! the quota goes into `cpu.max`; where the unified hierarchy has no usable `cpu` controller
//! (a hybrid layout, as on machines that keep `cpu` on v1) it goes into v1's
//! `cpu.cfs_quota_us`/`cpu.cfs_period_us`. The cgroups are created under the playground's own
//! cgroup, named by the caller (e.g. `flotilla-playground-<pid>-store-<n>`), and removed when
//! their process has stopped.
//!
//! [`CgroupLayout::find`] is pure (it reads the text of `/proc/self/mounts` and
//! `/proc/self/cgroup`); [`CpuCgroups::detect`] adds the checks on the live file system.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// The CFS period of every playground cgroup: the quota is refilled every 100 ms.
pub const CPU_PERIOD_US: u64 = 100_000;
/// The smallest quota the kernel accepts (1 ms per period).
pub const CPU_QUOTA_US_MIN: u64 = 1_000;
/// The largest quota asked for, in cores (more than any machine this runs on).
pub const CPU_CORES_MAX: f64 = 1024.0;

/// What can go wrong with a CPU cgroup.
#[derive(Debug, Error)]
pub enum CgroupError {
    /// The quota asked for is not a positive number of cores within the bounds.
    #[error("invalid CPU quota {0} cores: expected a number in ({min}, {CPU_CORES_MAX}]", min = CPU_QUOTA_US_MIN as f64 / CPU_PERIOD_US as f64)]
    InvalidQuota(f64),
    /// Neither a writable v2 hierarchy with the `cpu` controller nor a writable v1 `cpu`
    /// hierarchy exists (not root, a read-only `/sys/fs/cgroup`, or no cgroup file system).
    #[error("no writable CPU cgroup: {0} (CPU quotas need root and a writable /sys/fs/cgroup)")]
    Unavailable(String),
    /// A cgroup file could not be created, written or removed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// A CPU quota: `quota_us` of CPU time in every `period_us`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuQuota {
    /// CPU time per period, in microseconds.
    pub quota_us: u64,
    /// The period, in microseconds.
    pub period_us: u64,
}

impl CpuQuota {
    /// The quota of `cores` cores (0.2 is a fifth of one core) over [`CPU_PERIOD_US`].
    pub fn from_cores(cores: f64) -> Result<CpuQuota, CgroupError> {
        let quota_us = (cores * CPU_PERIOD_US as f64).round();
        if !cores.is_finite() || cores > CPU_CORES_MAX || quota_us < CPU_QUOTA_US_MIN as f64 {
            return Err(CgroupError::InvalidQuota(cores));
        }
        Ok(CpuQuota {
            quota_us: quota_us as u64,
            period_us: CPU_PERIOD_US,
        })
    }

    /// The content of v2's `cpu.max`.
    pub fn cpu_max(&self) -> String {
        format!("{} {}", self.quota_us, self.period_us)
    }

    /// The quota in cores.
    pub fn cores(&self) -> f64 {
        self.quota_us as f64 / self.period_us as f64
    }
}

/// Which cgroup interface holds the CPU controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupVersion {
    /// The unified hierarchy (`cpu.max`).
    V2,
    /// The legacy `cpu` hierarchy (`cpu.cfs_quota_us`, `cpu.cfs_period_us`).
    V1,
}

/// Where this process's CPU cgroups could be created: the v2 and the v1 candidate (the
/// mount point joined with this process's own cgroup path in that hierarchy).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupLayout {
    /// The directory of this process's cgroup in the unified (v2) hierarchy, if mounted.
    pub v2: Option<PathBuf>,
    /// The directory of this process's cgroup in the v1 hierarchy holding `cpu`, if mounted.
    pub v1: Option<PathBuf>,
}

impl CgroupLayout {
    /// Reads the layout from the text of `/proc/self/mounts` and `/proc/self/cgroup`.
    pub fn find(mounts: &str, self_cgroup: &str) -> CgroupLayout {
        let mut layout = CgroupLayout::default();
        // `/proc/self/cgroup` lines are `ID:CONTROLLERS:PATH`; v2's has empty controllers.
        let own_path = |wanted: &dyn Fn(&str) -> bool| {
            self_cgroup.lines().find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
                wanted(ctrls).then(|| path.trim_matches('/').to_owned())
            })
        };
        for line in mounts.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [_, mount_point, fstype, options, ..] = fields[..] else {
                continue;
            };
            let mount_point = PathBuf::from(unescape_mount(mount_point));
            match fstype {
                "cgroup2" if layout.v2.is_none() => {
                    let own = own_path(&|c| c.is_empty());
                    layout.v2 = Some(join_own(mount_point, own));
                }
                "cgroup" if layout.v1.is_none() && options.split(',').any(|o| o == "cpu") => {
                    let own = own_path(&|c| c.split(',').any(|c| c == "cpu"));
                    layout.v1 = Some(join_own(mount_point, own));
                }
                _ => {}
            }
        }
        layout
    }
}

/// The mount point, or this process's cgroup below it (the root cgroup is the mount point).
fn join_own(mount_point: PathBuf, own: Option<String>) -> PathBuf {
    match own {
        Some(p) if !p.is_empty() => mount_point.join(p),
        _ => mount_point,
    }
}

/// `/proc/self/mounts` writes a space in a path as `\040` (and a few others likewise).
fn unescape_mount(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The place where this process creates CPU cgroups: a directory of one hierarchy.
#[derive(Clone, Debug)]
pub struct CpuCgroups {
    /// The interface in use.
    pub version: CgroupVersion,
    /// The parent directory of the cgroups created.
    pub parent: PathBuf,
}

impl CpuCgroups {
    /// Picks v2 where its hierarchy offers the `cpu` controller and is writable, else v1 where
    /// its `cpu` hierarchy is writable; otherwise a [`CgroupError::Unavailable`] saying what
    /// was found.
    pub fn detect() -> Result<CpuCgroups, CgroupError> {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let layout = CgroupLayout::find(&read("/proc/self/mounts"), &read("/proc/self/cgroup"));
        let mut tried = Vec::new();
        if let Some(dir) = layout.v2 {
            let controllers =
                std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
            if !controllers.split_whitespace().any(|c| c == "cpu") {
                tried.push(format!("v2 at {} offers no cpu controller", dir.display()));
            } else if !writable(&dir) {
                tried.push(format!("v2 at {} is not writable", dir.display()));
            } else {
                return Ok(CpuCgroups {
                    version: CgroupVersion::V2,
                    parent: dir,
                });
            }
        } else {
            tried.push("no cgroup2 mount".into());
        }
        match layout.v1 {
            Some(dir) if writable(&dir) => Ok(CpuCgroups {
                version: CgroupVersion::V1,
                parent: dir,
            }),
            Some(dir) => {
                tried.push(format!("v1 cpu at {} is not writable", dir.display()));
                Err(CgroupError::Unavailable(tried.join("; ")))
            }
            None => {
                tried.push("no v1 cpu mount".into());
                Err(CgroupError::Unavailable(tried.join("; ")))
            }
        }
    }

    /// Creates the cgroup `name` with `quota` (an existing one of that name is reused and its
    /// quota set again).
    pub fn create(&self, name: &str, quota: CpuQuota) -> Result<CpuCgroup, CgroupError> {
        if self.version == CgroupVersion::V2 {
            enable_cpu_controller(&self.parent)?;
        }
        let dir = self.parent.join(name);
        if !dir.is_dir() {
            std::fs::create_dir(&dir).map_err(|source| CgroupError::Io {
                op: "creating",
                path: dir.clone(),
                source,
            })?;
        }
        let cgroup = CpuCgroup {
            dir,
            version: self.version,
            quota,
        };
        let written = match self.version {
            CgroupVersion::V2 => write(&cgroup.dir.join("cpu.max"), &quota.cpu_max()),
            // The period first: a quota is checked against the period in force.
            CgroupVersion::V1 => write(
                &cgroup.dir.join("cpu.cfs_period_us"),
                &quota.period_us.to_string(),
            )
            .and_then(|()| {
                write(
                    &cgroup.dir.join("cpu.cfs_quota_us"),
                    &quota.quota_us.to_string(),
                )
            }),
        };
        // Read back: a kernel that took the write but kept another value is no quota at all.
        let checked = written.and_then(|()| match cgroup.read_quota()? {
            q if q == quota => Ok(()),
            q => Err(CgroupError::Io {
                op: "checking",
                path: cgroup.dir.clone(),
                source: std::io::Error::other(format!("wrote {quota:?}, read back {q:?}")),
            }),
        });
        if let Err(e) = checked {
            let _ = std::fs::remove_dir(&cgroup.dir);
            return Err(e);
        }
        Ok(cgroup)
    }
}

/// One CPU cgroup this process created.
#[derive(Debug)]
pub struct CpuCgroup {
    dir: PathBuf,
    version: CgroupVersion,
    quota: CpuQuota,
}

impl CpuCgroup {
    /// Moves process `pid` (all its threads) into the cgroup.
    pub fn add(&self, pid: u32) -> Result<(), CgroupError> {
        write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    /// The pids in the cgroup.
    #[cfg(test)]
    pub fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        let path = self.dir.join("cgroup.procs");
        let text = std::fs::read_to_string(&path).map_err(|source| CgroupError::Io {
            op: "reading",
            path,
            source,
        })?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// The quota written at creation, read back from the cgroup's files.
    pub fn read_quota(&self) -> Result<CpuQuota, CgroupError> {
        let read = |name: &str| {
            let path = self.dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| CgroupError::Io {
                op: "reading",
                path,
                source,
            })
        };
        let bad = |text: &str| CgroupError::Io {
            op: "parsing",
            path: self.dir.clone(),
            source: std::io::Error::other(format!("unexpected quota {text:?}")),
        };
        let (quota, period) = match self.version {
            CgroupVersion::V2 => {
                let text = read("cpu.max")?;
                let (q, p) = text.trim().split_once(' ').ok_or_else(|| bad(&text))?;
                (q.to_owned(), p.to_owned())
            }
            CgroupVersion::V1 => (
                read("cpu.cfs_quota_us")?.trim().to_owned(),
                read("cpu.cfs_period_us")?.trim().to_owned(),
            ),
        };
        Ok(CpuQuota {
            quota_us: quota.parse().map_err(|_| bad(&quota))?,
            period_us: period.parse().map_err(|_| bad(&period))?,
        })
    }

    /// The quota it was created with.
    pub fn quota(&self) -> CpuQuota {
        self.quota
    }

    /// The cgroup's directory.
    #[cfg(test)]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes the cgroup; its processes must have exited (the kernel refuses otherwise).
    pub fn remove(self) -> Result<(), CgroupError> {
        std::fs::remove_dir(&self.dir).map_err(|source| CgroupError::Io {
            op: "removing",
            path: self.dir.clone(),
            source,
        })
    }
}

/// On v2 a child gets the `cpu` files only once its parent hands the controller down.
fn enable_cpu_controller(parent: &Path) -> Result<(), CgroupError> {
    let path = parent.join("cgroup.subtree_control");
    let enabled = std::fs::read_to_string(&path).unwrap_or_default();
    if enabled.split_whitespace().any(|c| c == "cpu") {
        return Ok(());
    }
    write(&path, "+cpu")
}

fn write(path: &Path, text: &str) -> Result<(), CgroupError> {
    std::fs::write(path, text).map_err(|source| CgroupError::Io {
        op: "writing",
        path: path.to_owned(),
        source,
    })
}

/// Whether this process may create entries in `dir` (access(2), as the kernel will judge).
fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) reads the NUL-terminated path and nothing else.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_in_cores_becomes_microseconds_per_period() {
        let q = CpuQuota::from_cores(0.2).unwrap();
        assert_eq!((q.quota_us, q.period_us), (20_000, 100_000));
        assert_eq!(q.cpu_max(), "20000 100000");
        assert_eq!(CpuQuota::from_cores(0.15).unwrap().quota_us, 15_000);
        assert_eq!(
            CpuQuota::from_cores(2.5).unwrap().cpu_max(),
            "250000 100000"
        );
        assert!((CpuQuota::from_cores(0.15).unwrap().cores() - 0.15).abs() < 1e-9);
        for bad in [0.0, -1.0, 0.001, f64::NAN, f64::INFINITY, 5000.0] {
            assert!(
                matches!(CpuQuota::from_cores(bad), Err(CgroupError::InvalidQuota(_))),
                "{bad}"
            );
        }
    }

    /// This machine's layout: v2 mounted beside v1 with `cpu` on v1.
    const HYBRID_MOUNTS: &str = "\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuset cgroup rw,relatime,cpuset 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";

    #[test]
    fn the_layout_joins_mount_points_with_the_process_own_cgroup() {
        let own = "4:memory:/api/x\n2:cpuacct:/\n1:cpu:/jobs/a\n0::/\n";
        let l = CgroupLayout::find(HYBRID_MOUNTS, own);
        assert_eq!(l.v1, Some(PathBuf::from("/sys/fs/cgroup/cpu/jobs/a")));
        assert_eq!(l.v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));

        // Debian's combined `cpu,cpuacct` hierarchy; `cpuset` alone is not it.
        let mounts = "cgroup /sys/fs/cgroup/cpuset cgroup rw,cpuset 0 0\n\
                      cgroup /sys/fs/cgroup/cpu\\040x cgroup rw,cpu,cpuacct 0 0\n";
        let l = CgroupLayout::find(mounts, "3:cpuset:/\n2:cpu,cpuacct:/user\n");
        assert_eq!(l.v1, Some(PathBuf::from("/sys/fs/cgroup/cpu x/user")));
        assert_eq!(l.v2, None);

        // Pure v2, in a nested cgroup.
        let l = CgroupLayout::find(
            "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n",
            "0::/user.slice/session-1.scope\n",
        );
        assert_eq!(
            l.v2,
            Some(PathBuf::from("/sys/fs/cgroup/user.slice/session-1.scope"))
        );
        assert_eq!(l.v1, None);
        assert_eq!(CgroupLayout::find("", ""), CgroupLayout::default());
    }

    /// A real cgroup on this machine, when it allows one: created with the quota, a child
    /// process moved in, removed after the child exits.
    #[test]
    fn a_real_cgroup_holds_a_process_under_its_quota() {
        let cgroups = match CpuCgroups::detect() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("skipped: {e}");
                return;
            }
        };
        let name = format!("flotilla-test-{}", std::process::id());
        let quota = CpuQuota::from_cores(0.25).unwrap();
        let cgroup = match cgroups.create(&name, quota) {
            Ok(c) => c,
            // A v2 parent that holds processes cannot hand controllers down (EBUSY).
            Err(e) => {
                eprintln!(
                    "skipped: {:?} cgroups detected but not usable: {e}",
                    cgroups.version
                );
                return;
            }
        };
        assert_eq!(cgroup.read_quota().unwrap(), quota);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let added = cgroup.add(child.id());
        let pids = cgroup.pids();
        child.kill().unwrap();
        child.wait().unwrap();
        added.unwrap();
        assert_eq!(pids.unwrap(), vec![child.id()]);
        let dir = cgroup.dir().to_owned();
        cgroup.remove().unwrap();
        assert!(!dir.exists());
    }
}
