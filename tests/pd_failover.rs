//! A PD group of three `flotilla pd` processes on loopback: when its leader is paused
//! (SIGSTOP) another member takes over, and once the old leader continues it never hands out a
//! timestamp of its own (its lease lapsed while it was stopped); it relays the new leader's.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use proto::pdpb::pd_client::PdClient;
use proto::pdpb::{GetMembersRequest, TsoRequest};

/// The member processes; dropping it kills them (by pid).
struct Group {
    children: Vec<Child>,
    urls: Vec<String>,
    dir: std::path::PathBuf,
}

impl Group {
    /// Every member's log, for a failure message.
    fn logs(&self) -> String {
        (0..self.children.len())
            .map(|i| {
                let log = std::fs::read_to_string(self.dir.join(format!("pd{i}.log")));
                let log = log.unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- pd{i} ---\n{}\n", tail.join("\n"))
            })
            .collect()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for c in &mut self.children {
            unsafe { libc::kill(c.id() as i32, libc::SIGCONT) };
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts three members and waits until each answers; a member that exits at start (another
/// process took one of its ports between the choice and the bind) restarts the group on fresh
/// ports, so the test always pauses the leader of a whole group.
async fn start_group(dir: &std::path::Path) -> Group {
    for attempt in 0..3 {
        let mut group = spawn_group(&dir.join(format!("try{attempt}")));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if group
                .children
                .iter_mut()
                .any(|c| c.try_wait().unwrap().is_some())
            {
                eprintln!("a member exited at start; restarting\n{}", group.logs());
                break;
            }
            let mut answering = 0;
            for url in &group.urls {
                if named_leader(&group, url).await.is_some() {
                    answering += 1;
                }
            }
            if answering == group.urls.len() {
                return group;
            }
            assert!(
                Instant::now() < deadline,
                "the group did not form\n{}",
                group.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    panic!("three attempts to start a PD group failed");
}

fn spawn_group(dir: &std::path::Path) -> Group {
    std::fs::create_dir_all(dir).unwrap();
    // Six distinct ports: `free_port` never hands out one twice in this process.
    let addrs: Vec<String> = (0..6)
        .map(|_| format!("127.0.0.1:{}", common::free_port()))
        .collect();
    let members: Vec<(String, String)> = addrs
        .chunks(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect();
    let list = members
        .iter()
        .enumerate()
        .map(|(i, (c, p))| format!("{}={c}+{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut children = Vec::new();
    for i in 0..3 {
        let log = std::fs::File::create(dir.join(format!("pd{i}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(["pd", "--data-dir"])
            .arg(dir.join(format!("pd{i}")))
            .args([
                "--initial-cluster",
                &list,
                "--member-id",
                &(i + 1).to_string(),
            ])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        children.push(child);
    }
    let urls = members.iter().map(|(c, _)| format!("http://{c}")).collect();
    Group {
        children,
        urls,
        dir: dir.to_owned(),
    }
}

/// One timestamp from the member at `url`, within 2 s (a member that does not lead relays it
/// to the leader).
async fn tso(url: &str) -> Result<u64, String> {
    tso_from(url, true).await
}

/// Like [`tso`]; with `relay` false the request is marked as already relayed, so the member
/// answers only with a timestamp of its own, if it may hand one out.
async fn tso_from(url: &str, relay: bool) -> Result<u64, String> {
    let attempt = async {
        let mut client = PdClient::connect(url.to_owned())
            .await
            .map_err(|e| e.to_string())?;
        let req = TsoRequest {
            count: 1,
            ..Default::default()
        };
        let mut req = tonic::Request::new(futures::stream::iter([req]));
        if !relay {
            req.metadata_mut()
                .insert("flotilla-pd-forwarded", "1".parse().unwrap());
        }
        let mut stream = client
            .tso(req)
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        let resp = stream
            .next()
            .await
            .ok_or("stream ended")?
            .map_err(|e| e.to_string())?;
        if let Some(e) = resp.header.and_then(|h| h.error) {
            return Err(e.message);
        }
        let ts = resp.timestamp.ok_or("no timestamp")?;
        Ok(((ts.physical as u64) << 18) | ts.logical as u64)
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .map_err(|_| "timeout".to_owned())?
}

/// The leader's index as member `url` names it.
async fn named_leader(group: &Group, url: &str) -> Option<usize> {
    let attempt = async {
        let mut client = PdClient::connect(url.to_owned()).await.ok()?;
        let resp = client
            .get_members(GetMembersRequest::default())
            .await
            .ok()?
            .into_inner();
        // `etcd_leader` is the raft leader; `leader` may name the member itself while its
        // leader is silent (it then answers lookups and forwards timestamps).
        let leader = resp.etcd_leader?.client_urls.first()?.clone();
        group.urls.iter().position(|u| *u == leader)
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
}

/// Waits until a member other than `not` leads and hands out a timestamp; returns both.
async fn serving_leader(group: &Group, not: Option<usize>) -> (usize, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (i, url) in group.urls.iter().enumerate() {
            if Some(i) == not || named_leader(group, url).await != Some(i) {
                continue;
            }
            if let Ok(ts) = tso(url).await {
                return (i, ts);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no serving PD leader\n{}",
            group.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_hands_out_no_timestamp_below_its_successor() {
    let dir = tempfile::tempdir().unwrap();
    let group = start_group(dir.path()).await;
    let (old, t_old) = serving_leader(&group, None).await;

    let pid = group.children[old].id() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let (new, t_new) = serving_leader(&group, Some(old)).await;
    assert_ne!(new, old);
    assert!(t_new > t_old, "{t_new} after {t_old}");
    // A few more from the successor, so the old leader's window is well behind.
    let mut newest = t_new;
    for _ in 0..3 {
        newest = tso(&group.urls[new]).await.unwrap().max(newest);
    }

    // Continued, the old leader hands out no timestamp of its own (its lease lapsed while it
    // was stopped, and then it learns of the new term); what it relays comes from the new
    // leader, above every earlier timestamp.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let until = Instant::now() + Duration::from_secs(3);
    let mut relayed = 0;
    while Instant::now() < until {
        if let Ok(ts) = tso_from(&group.urls[old], false).await {
            panic!("the old leader handed out {ts} of its own (newest before: {newest})");
        }
        if let Ok(ts) = tso(&group.urls[old]).await {
            assert!(ts > newest, "the old leader relayed {ts} after {newest}");
            relayed += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(relayed > 0, "the old leader never relayed a timestamp");
    // The group still serves, from whichever member leads now.
    let (_, t_last) = serving_leader(&group, None).await;
    assert!(t_last > newest);
}
