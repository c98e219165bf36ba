//! `flotilla playground` grows and shrinks with real processes: a playground (a PD group of
//! three, three stores) holding keys written through the official client takes a fourth store
//! (`playground scale-out`, PD lists four Up stores), gives one back (`playground scale-in`:
//! the store becomes a Tombstone and its process ends), and every key is still readable.
//! The test stops every process it started, by pid: the playground, and any member it left.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, http_get_json, SMALL_REGIONS};
use serde_json::Value;

const KEYS: usize = 400;

/// The playground process; dropping it stops it (SIGTERM, then SIGKILL) and kills by pid any
/// member process still alive.
struct Playground {
    child: Child,
    dir: tempfile::TempDir,
    out: PathBuf,
    member_pids: Vec<u32>,
}

impl Drop for Playground {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for &pid in &self.member_pids {
            if alive(pid) {
                eprintln!("member pid {pid} outlived the playground; killing it");
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

fn alive(pid: u32) -> bool {
    // A zombie counts as gone: it no longer runs.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

fn flotilla(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run flotilla")
}

fn must_succeed(what: &str, out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

impl Playground {
    fn start() -> Playground {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("small.toml");
        std::fs::write(&cfg, SMALL_REGIONS).unwrap();
        let out = dir.path().join("playground.out");
        let data = dir.path().join("pg");
        let child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
            // Store ports from the OS: tests run side by side.
            .args([
                "playground",
                "--stores",
                "3",
                "--store-port",
                "0",
                "--pd-port",
            ])
            .arg(free_port().to_string())
            .arg("--data-dir")
            .arg(&data)
            .arg("--store-config")
            .arg(&cfg)
            .env("RUST_LOG", "info,raft=warn")
            .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&out).unwrap(),
            ))
            .spawn()
            .unwrap();
        Playground {
            child,
            dir,
            out,
            member_pids: Vec::new(),
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("pg")
    }

    fn data_arg(&self) -> String {
        self.data_dir().to_string_lossy().into_owned()
    }

    /// The "PD members:" line, once the playground printed it.
    fn wait_pd_members(&mut self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = std::fs::read_to_string(&self.out).unwrap_or_default();
            if let Some(line) = out.lines().find_map(|l| l.strip_prefix("PD members: ")) {
                return line.split(',').map(str::to_owned).collect();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the playground exited ({status}):\n{out}");
            }
            assert!(Instant::now() < deadline, "no PD line:\n{out}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `playground display`, and the pids it lists remembered for the clean-up.
    fn display(&mut self) -> String {
        let text = must_succeed(
            "display",
            flotilla(&["playground", "display", "--data-dir", &self.data_arg()]),
        );
        for line in text.lines().skip(2) {
            if let Some(pid) = line.split_whitespace().nth(2).and_then(|p| p.parse().ok()) {
                if !self.member_pids.contains(&pid) {
                    self.member_pids.push(pid);
                }
            }
        }
        text
    }

    fn dump(&self) {
        eprintln!(
            "==== playground output\n{}",
            std::fs::read_to_string(&self.out).unwrap_or_default()
        );
        for entry in std::fs::read_dir(self.data_dir()).unwrap().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                eprintln!("==== {}", path.display());
                for l in tail.into_iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

/// PD's stores (any member that leads answers).
async fn stores(pd: &[String]) -> Vec<Value> {
    for addr in pd {
        if let Some(v) = http_get_json(addr, "/pd/api/v1/stores").await {
            return v["stores"].as_array().cloned().unwrap_or_default();
        }
    }
    Vec::new()
}

fn up_stores(stores: &[Value]) -> Vec<&Value> {
    stores
        .iter()
        .filter(|s| s["store"]["state"] == "Up" && s["status"]["is_up"] == true)
        .collect()
}

async fn wait_up_stores(pd: &[String], n: usize, timeout: Duration) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = stores(pd).await;
        if up_stores(&s).len() == n {
            return s;
        }
        assert!(Instant::now() < deadline, "not {n} Up stores: {s:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn key(i: usize) -> String {
    format!("scale-{i:05}")
}

async fn must_read_all(client: &tikv_client::RawClient) {
    for i in 0..KEYS {
        let got = client.get(key(i)).await.unwrap();
        assert_eq!(got, Some(format!("v{i}").into_bytes()), "key {}", key(i));
    }
}

/// Column `n` (0-based: name, kind, pid, state, store id, ...) of `name`'s line in `display`.
fn column<T: std::str::FromStr>(display: &str, name: &str, n: usize) -> Option<T> {
    display
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))?
        .split_whitespace()
        .nth(n)?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_playground_scales_out_and_in_and_keeps_every_key() {
    let mut pg = Playground::start();
    let pd = pg.wait_pd_members();
    assert_eq!(pd.len(), 3, "a PD group of three by default");
    wait_up_stores(&pd, 3, Duration::from_secs(60)).await;
    let display = pg.display();
    assert_eq!(
        display.lines().filter(|l| l.contains(" running ")).count(),
        6,
        "{display}"
    );

    let config = tikv_client::Config::default()
        .with_default_keyspace()
        .with_timeout(Duration::from_secs(20));
    let client = tikv_client::RawClient::new_with_config(pd.clone(), config)
        .await
        .unwrap();
    for i in 0..KEYS {
        client.put(key(i), format!("v{i}")).await.unwrap();
    }

    let out = flotilla(&["playground", "scale-out", "--data-dir", &pg.data_arg()]);
    if !out.status.success() {
        pg.dump();
    }
    let text = must_succeed("scale-out", out);
    assert!(text.contains("added store4"), "{text}");
    wait_up_stores(&pd, 4, Duration::from_secs(30)).await;
    let display = pg.display();
    assert!(column::<u32>(&display, "store4", 2).is_some(), "{display}");

    // Decommission an original store: it holds replicas of every region.
    let display = pg.display();
    let victim: u64 = column(&display, "store1", 4).expect("store1's id at PD");
    let victim_pid: u32 = column(&display, "store1", 2).unwrap();
    let out = flotilla(&[
        "playground",
        "scale-in",
        "--data-dir",
        &pg.data_arg(),
        "--store",
        &victim.to_string(),
        "--wait-secs",
        "90",
    ]);
    if !out.status.success() {
        pg.dump();
    }
    let text = must_succeed("scale-in", out);
    assert!(text.contains("Tombstone"), "{text}");
    assert!(!alive(victim_pid), "store1 (pid {victim_pid}) still runs");
    let display = pg.display();
    let line = display.lines().find(|l| l.starts_with("store1 ")).unwrap();
    assert!(
        line.contains(" removed ") && line.contains("Tombstone"),
        "{display}"
    );
    assert!(pg.data_dir().join("store1.removed").is_dir());
    assert_eq!(up_stores(&stores(&pd).await).len(), 3);

    must_read_all(&client).await;

    // A stop ends every process the playground started.
    let pids = pg.member_pids.clone();
    unsafe { libc::kill(pg.child.id() as i32, libc::SIGTERM) };
    let status = pg.child.wait().unwrap();
    assert!(status.success(), "{status}");
    for pid in pids {
        assert!(!alive(pid), "pid {pid} outlived the playground");
    }
    assert!(!pg.data_dir().join("playground.json").exists());
}

/// Bad requests to a running playground are refused with a reason and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_playground_refuses_bad_scale_requests() {
    let mut pg = Playground::start();
    let pd = pg.wait_pd_members();
    wait_up_stores(&pd, 3, Duration::from_secs(60)).await;
    let before = pg.display();

    let out = flotilla(&[
        "playground",
        "scale-in",
        "--data-dir",
        &pg.data_arg(),
        "--store",
        "999999",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PD does not know store 999999"), "{err}");

    let out = flotilla(&[
        "playground",
        "scale-out",
        "--data-dir",
        &pg.data_arg(),
        "--count",
        "64",
    ]);
    assert!(!out.status.success(), "more stores than the limit");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot add 64 stores"), "{err}");

    // A second playground on the same data dir is refused.
    let out = flotilla(&["playground", "--data-dir", &pg.data_arg()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already runs"));

    let after = pg.display();
    let names = |t: &str| -> Vec<String> {
        t.lines()
            .skip(2)
            .map(|l| l.split_whitespace().take(4).collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(names(&before), names(&after));

    // Nothing runs on a data dir without a playground.
    let empty = tempfile::tempdir().unwrap();
    let out = flotilla(&[
        "playground",
        "display",
        "--data-dir",
        &empty.path().to_string_lossy(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no playground runs"));
}
