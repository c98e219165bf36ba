//! `flotilla cpu-limit --cores C -- COMMAND...`: runs one command in a CPU cgroup of its own
//! with a quota of C cores (an emulated machine), and removes the cgroup when it exits. The
//! benchmark scripts put the processes they compare with (etcd members) on the same footing as
//! the playground's stores (`playground --store-cpu`), through the same cgroup code.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use tokio::signal::unix::{signal, SignalKind};

use crate::playground::cgroup::{CpuCgroups, CpuQuota};

/// Options of `flotilla cpu-limit`.
#[derive(Args, Debug)]
pub struct CpuLimitArgs {
    /// The quota, in cores (e.g. 0.2).
    #[arg(long)]
    pub cores: f64,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, required = true)]
    pub command: Vec<OsString>,
}

/// Runs the command under the quota; its exit code is ours (SIGTERM and SIGINT are passed on).
pub async fn run(args: CpuLimitArgs) -> Result<ExitCode> {
    let quota = CpuQuota::from_cores(args.cores)?;
    let cgroups = CpuCgroups::detect()?;
    let name = format!("flotilla-cpu-limit-{}", std::process::id());
    let cgroup = cgroups.create(&name, quota)?;
    let procs = cgroups.parent.join(&name).join("cgroup.procs");
    let outcome = run_in(&procs, &args.command).await;
    if let Err(e) = cgroup.remove() {
        eprintln!("cpu-limit: {e}");
    }
    outcome
}

/// Starts the command so that it joins the cgroup (its `cgroup.procs` file) itself, between
/// fork and exec: whatever it forks later is inside too (moving it after the start would leave
/// out the children it forked first).
async fn run_in(procs: &Path, command: &[OsString]) -> Result<ExitCode> {
    let Some((program, rest)) = command.split_first() else {
        bail!("cpu-limit: no command given");
    };
    let procs_c = CString::new(procs.as_os_str().as_bytes())?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(rest).kill_on_drop(true);
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // calls (getpid, open, write, close) on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || join_cgroup(&procs_c));
    }
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "starting {} in {}",
            program.to_string_lossy(),
            procs.display()
        )
    })?;
    let pid = child.id().context("the child exited at once")?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            _ = term.recv() => pass_on(pid, libc::SIGTERM),
            _ = int.recv() => pass_on(pid, libc::SIGINT),
        }
    };
    Ok(match status.code() {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        // Killed by a signal: the shell's convention, 128 + signal.
        None => {
            use std::os::unix::process::ExitStatusExt;
            ExitCode::from(128u8.saturating_add(status.signal().unwrap_or(0) as u8))
        }
    })
}

/// Writes this process's pid into `procs` without allocating (it runs between fork and exec).
fn join_cgroup(procs: &CString) -> std::io::Result<()> {
    let mut digits = [0u8; 20];
    // SAFETY: getpid has no preconditions.
    let mut pid = unsafe { libc::getpid() } as u64;
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (pid % 10) as u8;
        pid /= 10;
        if pid == 0 {
            break;
        }
    }
    // SAFETY: a NUL-terminated path; the buffer outlives the calls.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let len = digits.len() - at;
        let written = libc::write(fd, digits[at..].as_ptr().cast(), len);
        libc::close(fd);
        if written != len as isize {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn pass_on(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with the pid of our own child and a valid signal number.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command runs inside the cgroup from its first instruction (a child it forks at once
    /// is inside too), its exit code comes back, and the cgroup is gone afterwards.
    #[tokio::test]
    async fn a_command_and_its_children_run_in_the_cgroup_which_goes_afterwards() {
        if let Err(e) = CpuCgroups::detect() {
            eprintln!("skipped: {e}");
            return;
        }
        let name = format!("flotilla-cpu-limit-{}", std::process::id());
        let script = format!(
            "sh -c 'grep -q {name} /proc/self/cgroup' || exit 9; \
             grep -q {name} /proc/self/cgroup || exit 8; exit 7"
        );
        let code = run(CpuLimitArgs {
            cores: 0.5,
            command: vec!["sh".into(), "-c".into(), script.into()],
        })
        .await
        .unwrap();
        assert_eq!(
            code,
            ExitCode::from(7),
            "exit 9: the forked child was outside, 8: the command"
        );
        let parent = CpuCgroups::detect().unwrap().parent;
        assert!(!parent.join(&name).exists(), "the cgroup was left behind");
    }
}
