//! The nemesis: a seeded schedule of faults against the cluster. Each round waits a random
//! gap, injects one fault (or two at once for `mix`), holds it a random while, heals it, and
//! then measures liveness: the time from the heal until a write succeeds on every probe key
//! (one beside each of the workload's keys, so every region the workload uses is probed).
//! Every step is a line of the fault timeline.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use codec::hex::{from_hex as unhex, to_hex};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use tikv_client::{RawClient, TransactionClient};
use tokio::time::{sleep, timeout, Instant};

use super::cluster::{ChaosCluster, Target};
use super::lookups::PdFault;
use super::Ctx;

/// A kind of fault.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// Cut one store's raft traffic from the other stores.
    Partition,
    /// kill -9 one store, restart it at the heal.
    Kill,
    /// kill -9 PD, restart it at the heal.
    KillPd,
    /// SIGSTOP a store or PD, SIGCONT at the heal.
    Pause,
    /// Ask PD to move the leaders of a few of the workload's regions.
    TransferLeader,
    /// Ask PD to split the workload's regions at random workload keys.
    Split,
    /// Ask PD to merge two adjacent regions of the workload, whatever their sizes. Only when
    /// named: neither the default list nor a `mix` of other kinds picks it.
    Merge,
    /// Start a new, empty store (a machine joins; PD balances regions onto it).
    AddStore,
    /// Decommission a store while the workload runs: PD moves its replicas away and makes it
    /// a tombstone, then the nemesis stops it. A store is added first when fewer than four
    /// would otherwise stay up.
    RemoveStore,
    /// Pause (SIGSTOP) the store that leads most of the workload's regions, for longer than a
    /// leader lease: its leases must have run out before anyone else leads. Only when named.
    PauseLeader,
    /// Jump a store's lease clock by up to `CLOCK_SKEW_MAX_MS` either way, and back at the
    /// heal (clocks that drift within the stores' `raft_lease_max_drift_ms`). Only when named.
    ClockSkew,
    /// Two of the other kinds asked for (all, if fewer than two were) at once, on different processes.
    Mix,
}

impl FaultKind {
    /// The name used on the command line and in the timeline.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Partition => "partition",
            FaultKind::Kill => "kill",
            FaultKind::KillPd => "kill-pd",
            FaultKind::Pause => "pause",
            FaultKind::TransferLeader => "transfer-leader",
            FaultKind::Split => "split",
            FaultKind::Merge => "merge",
            FaultKind::AddStore => "add-store",
            FaultKind::RemoveStore => "remove-store",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::ClockSkew => "clock-skew",
            FaultKind::Mix => "mix",
        }
    }

    /// Every kind but `mix`.
    const SINGLE: [FaultKind; 8] = [
        FaultKind::Partition,
        FaultKind::Kill,
        FaultKind::KillPd,
        FaultKind::Pause,
        FaultKind::TransferLeader,
        FaultKind::Split,
        FaultKind::AddStore,
        FaultKind::RemoveStore,
    ];

    /// Kinds a `mix` takes only when they were asked for by name (so that runs that did not
    /// name them stay as they were).
    const NAMED_ONLY: [FaultKind; 3] = [
        FaultKind::Merge,
        FaultKind::PauseLeader,
        FaultKind::ClockSkew,
    ];
}

/// How the nemesis runs.
pub struct NemesisConfig {
    /// The kinds it picks from, uniformly.
    pub kinds: Vec<FaultKind>,
    /// Longest quiet gap between a recovery and the next fault (the gap is 1 s to this).
    pub gap_max: Duration,
    /// Longest time a fault is held before it heals (held 1 s to this).
    pub hold_max: Duration,
    /// Bound of one liveness measurement; a write not back by then fails the run.
    pub recovery_max: Duration,
    /// Whether the workload's keys are transactional (else raw).
    pub txn_keys: bool,
}

/// What the nemesis did and saw.
#[derive(Debug, Default)]
pub struct NemesisReport {
    /// Faults injected, by kind (a `mix` counts as itself and as each of its parts).
    pub faults: BTreeMap<&'static str, u32>,
    /// Heal to first successful write on every probe key, one per heal.
    pub recoveries: Vec<Duration>,
    /// Heals after which writes did not come back within the bound.
    pub unrecovered: u32,
    /// Heal instants (run clock).
    pub heals_ns: Vec<u64>,
    /// Processes that exited without the nemesis killing them.
    pub crashes: Vec<String>,
    /// Faults that could not be injected or healed (not a verdict by themselves).
    pub errors: Vec<String>,
    /// PD members taken down (killed, paused, found crashed), for the lookup verdict.
    pub pd_faults: Vec<PdFault>,
    /// Stores started during the run.
    pub stores_added: u32,
    /// Stores PD accepted to decommission.
    pub stores_removed: u32,
    /// Decommissioned stores that PD made tombstones (and the nemesis then stopped), with the
    /// time from the request to the tombstone.
    pub stores_tombstoned: Vec<Duration>,
    /// Decommissioned stores that were not yet tombstones when the run ended.
    pub stores_still_leaving: usize,
}

/// A fault in force, to heal.
#[derive(Debug, Clone, Copy)]
enum Active {
    Partitioned,
    Killed(Target),
    Paused(Target),
    /// Store `i`'s lease clock runs off by an offset.
    Skewed(usize),
    /// A store joined: nothing to heal, the recovery is measured all the same.
    Joined,
    /// A store is being decommissioned: nothing to heal; it retires once it is a tombstone.
    Leaving,
}

/// Writes beside the workload's keys, raw or transactional as the workload's are.
pub enum Probe {
    /// Raw puts.
    Raw(RawClient),
    /// One-key optimistic transactions.
    Txn(TransactionClient),
}

impl Probe {
    async fn write(&self, key: String) -> bool {
        let value = b"probe".to_vec();
        let attempt = async {
            match self {
                Probe::Raw(c) => c.put(key, value).await.is_ok(),
                Probe::Txn(c) => {
                    let Ok(mut t) = c.begin_optimistic().await else {
                        return false;
                    };
                    if t.put(key, value).await.is_err() {
                        let _ = t.rollback().await;
                        return false;
                    }
                    t.commit().await.is_ok()
                }
            }
        };
        matches!(timeout(Duration::from_secs(3), attempt).await, Ok(true))
    }

    /// Time until every key took a write, or None after `bound`.
    async fn until_writable(&self, keys: &[String], bound: Duration) -> Option<Duration> {
        let start = Instant::now();
        let deadline = start + bound;
        let each = keys.iter().map(|k| async move {
            while Instant::now() < deadline {
                if self.write(k.clone()).await {
                    return true;
                }
                sleep(Duration::from_millis(100)).await;
            }
            false
        });
        let all = futures::future::join_all(each).await;
        all.into_iter().all(|ok| ok).then(|| start.elapsed())
    }
}

/// The nemesis's state over a run.
pub struct Nemesis<'a> {
    cluster: &'a mut ChaosCluster,
    cfg: NemesisConfig,
    ctx: &'a Ctx,
    rng: ChaCha8Rng,
    probe: Probe,
    report: NemesisReport,
    /// Processes the nemesis has down on purpose (not crashes).
    down: Vec<Target>,
    /// Stores being decommissioned (PD moves their replicas away), with when it was asked;
    /// no other fault targets them.
    leaving: Vec<(usize, u64, Instant)>,
    /// Stores decommissioned and stopped for good.
    retired: Vec<usize>,
}

/// Most stores a run grows to with `add-store` (the machine has room for so many processes).
/// Largest lease-clock jump the `clock-skew` nemesis makes, either way: below the stores'
/// default `raft_lease_max_drift_ms` (100), the drift the lease is built to absorb.
const CLOCK_SKEW_MAX_MS: i64 = 90;

const STORES_MAX: usize = 7;

/// Fewest stores that stay up when `remove-store` decommissions one.
const STORES_UP_MIN: usize = 3;

impl<'a> Nemesis<'a> {
    /// A nemesis with its own RNG stream from the run's seed.
    pub fn new(
        cluster: &'a mut ChaosCluster,
        cfg: NemesisConfig,
        ctx: &'a Ctx,
        probe: Probe,
    ) -> Self {
        Nemesis {
            cluster,
            cfg,
            ctx,
            rng: ChaCha8Rng::seed_from_u64(ctx.seed.wrapping_add(0xD00D_F00D)),
            probe,
            report: NemesisReport::default(),
            down: Vec::new(),
            leaving: Vec::new(),
            retired: Vec::new(),
        }
    }

    fn log(&self, event: &str, fields: serde_json::Value) {
        let mut line = json!({ "t_ns": self.ctx.clock.now_ns(), "event": event });
        if let (Some(l), Some(f)) = (line.as_object_mut(), fields.as_object()) {
            l.extend(f.clone());
        }
        self.ctx.timeline.push_json(&line);
    }

    /// Notes that `t` went down by `kind`, if it is a PD member.
    fn pd_down(&mut self, t: Target, kind: &'static str) {
        if let Target::Pd(member) = t {
            self.report.pd_faults.push(PdFault {
                member,
                kind,
                from_ns: self.ctx.clock.now_ns(),
                healed_ns: None,
            });
        }
    }

    /// Notes that `t`, if a PD member, was restarted or continued.
    fn pd_healed(&mut self, t: Target) {
        let now = self.ctx.clock.now_ns();
        let open = self
            .report
            .pd_faults
            .iter_mut()
            .rev()
            .find(|f| Target::Pd(f.member) == t && f.healed_ns.is_none());
        if let Some(f) = open {
            f.healed_ns = Some(now);
        }
    }

    /// Runs rounds until `until`, then leaves the cluster healed; the report.
    pub async fn run(mut self, until: Instant) -> NemesisReport {
        while Instant::now() < until {
            let gap = self
                .rng
                .gen_range(Duration::from_secs(1)..=self.cfg.gap_max.max(Duration::from_secs(1)));
            sleep(gap.min(until.saturating_duration_since(Instant::now()))).await;
            self.check_crashes().await;
            if Instant::now() >= until || self.cfg.kinds.is_empty() {
                continue;
            }
            self.round().await;
        }
        self.check_crashes().await;
        self.report.stores_still_leaving = self.leaving.len();
        self.report
    }

    /// One fault (or a mix), held, healed, and the recovery measured.
    async fn round(&mut self) {
        let kind = *self
            .cfg
            .kinds
            .choose(&mut self.rng)
            .expect("kinds is not empty");
        let parts: Vec<FaultKind> = if kind == FaultKind::Mix {
            // Two of the kinds asked for (all of them if fewer than two were).
            let asked = |k: &&FaultKind| self.cfg.kinds.contains(k);
            let named: Vec<FaultKind> = FaultKind::NAMED_ONLY
                .iter()
                .filter(asked)
                .copied()
                .collect();
            let mut pool: Vec<FaultKind> =
                FaultKind::SINGLE.iter().filter(asked).copied().collect();
            pool.extend(&named);
            if pool.len() < 2 {
                pool = FaultKind::SINGLE.to_vec();
                pool.extend(&named);
            }
            pool.shuffle(&mut self.rng);
            pool.truncate(2);
            pool
        } else {
            vec![kind]
        };
        *self.report.faults.entry(kind.name()).or_default() += 1;
        let mut active = Vec::new();
        let mut used = Vec::new();
        for part in parts {
            if kind == FaultKind::Mix {
                *self.report.faults.entry(part.name()).or_default() += 1;
            }
            match self.inject(part, &used).await {
                Ok(Some((a, target))) => {
                    active.push(a);
                    used.push(target);
                }
                Ok(None) => {}
                Err(e) => {
                    self.log(
                        "error",
                        json!({ "fault": part.name(), "error": format!("{e:#}") }),
                    );
                    self.report.errors.push(format!("{}: {e:#}", part.name()));
                }
            }
        }
        if active.is_empty() {
            return;
        }
        let hold = self
            .rng
            .gen_range(Duration::from_secs(1)..=self.cfg.hold_max.max(Duration::from_secs(1)));
        sleep(hold).await;
        self.heal(&active).await;
        let heal_ns = self.ctx.clock.now_ns();
        self.report.heals_ns.push(heal_ns);
        let keys = self.ctx.probe_keys();
        match self
            .probe
            .until_writable(&keys, self.cfg.recovery_max)
            .await
        {
            Some(d) => {
                self.log(
                    "recovered",
                    json!({ "after_ms": d.as_millis() as u64, "probe_keys": keys.len() }),
                );
                self.report.recoveries.push(d);
            }
            None => {
                self.log(
                    "unrecovered",
                    json!({ "bound_ms": self.cfg.recovery_max.as_millis() as u64 }),
                );
                self.report.unrecovered += 1;
            }
        }
    }

    /// Injects one fault on a process not in `used`; the fault to heal and its target, or
    /// None for the instant ones.
    async fn inject(
        &mut self,
        kind: FaultKind,
        used: &[Target],
    ) -> Result<Option<(Active, Target)>> {
        let mut used = used.to_vec();
        used.extend(self.out_of_play().into_iter().map(Target::Store));
        let used = &used[..];
        let stores: Vec<usize> = (0..self.cluster.stores())
            .filter(|i| !used.contains(&Target::Store(*i)))
            .collect();
        // A PD group is built to lose a minority of its members: a round never takes more
        // (PD alone is its own one-member minority).
        let pd_members = self.cluster.pd_members();
        let pd_budget = ((pd_members - 1) / 2).max(1);
        let pd_hit = used.iter().filter(|t| matches!(t, Target::Pd(_))).count();
        let pd_allowed = pd_hit < pd_budget;
        let pick_store = |rng: &mut ChaCha8Rng| stores.choose(rng).copied();
        match kind {
            FaultKind::Partition => {
                let Some(i) = pick_store(&mut self.rng) else {
                    return Ok(None);
                };
                self.log(
                    "fault",
                    json!({ "fault": "partition", "target": format!("store{i}") }),
                );
                self.cluster.partition(i).await?;
                Ok(Some((Active::Partitioned, Target::Store(i))))
            }
            FaultKind::Kill => {
                let Some(i) = pick_store(&mut self.rng) else {
                    return Ok(None);
                };
                let t = Target::Store(i);
                self.log("fault", json!({ "fault": "kill", "target": t.to_string() }));
                self.down.push(t);
                self.cluster.kill(t);
                Ok(Some((Active::Killed(t), t)))
            }
            FaultKind::KillPd => {
                // The leader when one is known (its death is the one that matters), else any
                // member.
                let members: Vec<usize> = (0..pd_members)
                    .filter(|i| pd_allowed && !used.contains(&Target::Pd(*i)))
                    .collect();
                let leader = self
                    .cluster
                    .pd_leader()
                    .await
                    .filter(|i| members.contains(i));
                let Some(i) = leader.or_else(|| members.choose(&mut self.rng).copied()) else {
                    return Ok(None);
                };
                let t = Target::Pd(i);
                self.log(
                    "fault",
                    json!({ "fault": "kill-pd", "target": t.to_string(), "leader": leader.is_some() }),
                );
                self.down.push(t);
                self.pd_down(t, "kill-pd");
                self.cluster.kill(t);
                Ok(Some((Active::Killed(t), t)))
            }
            FaultKind::Pause => {
                let targets: Vec<Target> = self
                    .cluster
                    .targets()
                    .into_iter()
                    .filter(|t| !used.contains(t) && (pd_allowed || !matches!(t, Target::Pd(_))))
                    .collect();
                let Some(&t) = targets.choose(&mut self.rng) else {
                    return Ok(None);
                };
                self.log(
                    "fault",
                    json!({ "fault": "pause", "target": t.to_string() }),
                );
                self.pd_down(t, "pause");
                self.cluster.pause(t, true);
                Ok(Some((Active::Paused(t), t)))
            }
            FaultKind::PauseLeader => {
                let Some(i) = self.busiest_leader(&stores).await? else {
                    return Ok(None);
                };
                let t = Target::Store(i);
                self.log(
                    "fault",
                    json!({ "fault": "pause-leader", "target": t.to_string() }),
                );
                self.cluster.pause(t, true);
                Ok(Some((Active::Paused(t), t)))
            }
            FaultKind::ClockSkew => {
                let Some(i) = pick_store(&mut self.rng) else {
                    return Ok(None);
                };
                let offset = self.rng.gen_range(-CLOCK_SKEW_MAX_MS..=CLOCK_SKEW_MAX_MS);
                self.log(
                    "fault",
                    json!({ "fault": "clock-skew", "target": format!("store{i}"), "offset_ms": offset }),
                );
                self.cluster.set_clock_offset(i, offset).await?;
                Ok(Some((Active::Skewed(i), Target::Store(i))))
            }
            FaultKind::TransferLeader => {
                let n = self.transfer_leaders().await?;
                self.log("fault", json!({ "fault": "transfer-leader", "queued": n }));
                Ok(None)
            }
            FaultKind::Split => {
                let n = self.split().await?;
                self.log("fault", json!({ "fault": "split", "queued": n }));
                Ok(None)
            }
            FaultKind::Merge => {
                let merge = self.merge().await?;
                let pair = merge.map(|(source, target)| json!([source, target]));
                self.log("fault", json!({ "fault": "merge", "queued": pair }));
                Ok(None)
            }
            FaultKind::AddStore => {
                if self.stores_up() >= STORES_MAX {
                    return Ok(None);
                }
                let i = self.add_store().await?;
                Ok(Some((Active::Joined, Target::Store(i))))
            }
            FaultKind::RemoveStore => {
                if self.stores_up() <= STORES_UP_MIN && self.stores_up() < STORES_MAX {
                    self.add_store().await?;
                }
                let Some(i) = pick_store(&mut self.rng) else {
                    return Ok(None);
                };
                if self.stores_up() <= STORES_UP_MIN || self.down.contains(&Target::Store(i)) {
                    return Ok(None);
                }
                let id = self.cluster.store_id(i).await?;
                self.log(
                    "fault",
                    json!({ "fault": "remove-store", "target": format!("store{i}"), "store_id": id }),
                );
                self.cluster.delete_store(id).await?;
                self.report.stores_removed += 1;
                self.leaving.push((i, id, Instant::now()));
                Ok(Some((Active::Leaving, Target::Store(i))))
            }
            FaultKind::Mix => Ok(None),
        }
    }

    /// Of `stores`, the one whose store leads most of the workload's regions (None when none
    /// of them leads any).
    async fn busiest_leader(&mut self, stores: &[usize]) -> Result<Option<usize>> {
        let mut led: BTreeMap<u64, usize> = BTreeMap::new();
        for (.., leader, _) in self.workload_regions().await? {
            if let Some(l) = leader {
                *led.entry(l).or_default() += 1;
            }
        }
        let mut best = None;
        for &i in stores {
            let id = self.cluster.store_id(i).await?;
            let n = led.get(&id).copied().unwrap_or(0);
            if n > 0 && best.is_none_or(|(_, m)| n > m) {
                best = Some((i, n));
            }
        }
        Ok(best.map(|(i, _)| i))
    }

    /// Stores no fault may target: being decommissioned, or retired.
    fn out_of_play(&self) -> Vec<usize> {
        self.leaving
            .iter()
            .map(|(i, ..)| *i)
            .chain(self.retired.iter().copied())
            .collect()
    }

    /// Stores neither leaving nor retired.
    fn stores_up(&self) -> usize {
        self.cluster.stores() - self.leaving.len() - self.retired.len()
    }

    /// Starts a store and learns its id (so that partitions can name it).
    async fn add_store(&mut self) -> Result<usize> {
        let i = self.cluster.add_store()?;
        self.log(
            "fault",
            json!({ "fault": "add-store", "target": format!("store{i}") }),
        );
        self.report.stores_added += 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.cluster.store_id(i).await {
                Ok(_) => return Ok(i),
                Err(e) if Instant::now() > deadline => return Err(e.context("new store's id")),
                Err(_) => sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Stops the decommissioned stores that PD has made tombstones.
    async fn retire_tombstones(&mut self) {
        let mut still = Vec::new();
        for (i, id, since) in std::mem::take(&mut self.leaving) {
            match self.cluster.store_state(id).await {
                Ok((state, _)) if state == "Tombstone" => {
                    let took = since.elapsed();
                    self.log(
                        "retired",
                        json!({ "target": format!("store{i}"), "store_id": id, "after_ms": took.as_millis() as u64 }),
                    );
                    self.cluster.retire(i);
                    self.retired.push(i);
                    self.report.stores_tombstoned.push(took);
                }
                _ => still.push((i, id, since)),
            }
        }
        self.leaving = still;
    }

    async fn heal(&mut self, active: &[Active]) {
        // Processes first, so that the partition is healed on every store that answers.
        let mut active = active.to_vec();
        active.sort_by_key(|a| matches!(a, Active::Partitioned));
        for a in &active {
            let r = match *a {
                Active::Killed(t) => {
                    self.down.retain(|d| *d != t);
                    let r = self.cluster.restart(t);
                    self.pd_healed(t);
                    r
                }
                Active::Paused(t) => {
                    self.cluster.pause(t, false);
                    self.pd_healed(t);
                    Ok(())
                }
                Active::Partitioned => self.cluster.heal_partitions().await,
                // A store killed meanwhile restarts with a true clock.
                Active::Skewed(i) if self.cluster.live_status_addr(i).is_some() => {
                    self.cluster.set_clock_offset(i, 0).await
                }
                Active::Skewed(_) => Ok(()),
                Active::Joined | Active::Leaving => Ok(()),
            };
            self.log("heal", json!({ "fault": format!("{a:?}") }));
            if let Err(e) = r {
                self.report.errors.push(format!("healing {a:?}: {e:#}"));
            }
        }
    }

    /// Restarts any process that exited without being killed, and reports it as a crash.
    async fn check_crashes(&mut self) {
        self.retire_tombstones().await;
        let out = self.out_of_play();
        for t in self.cluster.targets() {
            if self.down.contains(&t) || matches!(t, Target::Store(i) if out.contains(&i)) {
                continue;
            }
            if let Some(status) = self.cluster.exited(t) {
                self.log(
                    "crash",
                    json!({ "target": t.to_string(), "status": status.to_string() }),
                );
                self.report.crashes.push(format!("{t} exited: {status}"));
                self.pd_down(t, "crash");
                self.cluster.kill(t);
                if let Err(e) = self.cluster.restart(t) {
                    self.report.errors.push(format!("restarting {t}: {e:#}"));
                }
                self.pd_healed(t);
            }
        }
    }

    /// The workload's regions in PD's list: (id, start, end, leader store, voter stores).
    async fn workload_regions(
        &self,
    ) -> Result<Vec<(u64, Vec<u8>, Vec<u8>, Option<u64>, Vec<u64>)>> {
        let (lo, hi) = self.ctx.key_range.clone();
        let (lo, hi) = (self.encode(&lo), self.encode(&hi));
        let v = self.cluster.regions().await?;
        let mut out = Vec::new();
        for r in v["regions"].as_array().into_iter().flatten() {
            let start = unhex(r["start_key"].as_str().unwrap_or("")).unwrap_or_default();
            let end = unhex(r["end_key"].as_str().unwrap_or("")).unwrap_or_default();
            if start < hi && (end.is_empty() || end > lo) {
                let voters = r["peers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["role"] == "Voter")
                    .filter_map(|p| p["store_id"].as_u64())
                    .collect();
                let id = r["id"].as_u64().unwrap_or(0);
                out.push((id, start, end, r["leader"]["store_id"].as_u64(), voters));
            }
        }
        Ok(out)
    }

    /// A user key as region boundaries see it: keyspace prefix, memcomparable-encoded.
    fn encode(&self, key: &str) -> Vec<u8> {
        let prefix: &[u8] = if self.cfg.txn_keys {
            b"x\0\0\0"
        } else {
            b"r\0\0\0"
        };
        codec::memcomparable::encode_bytes(&[prefix, key.as_bytes()].concat())
    }

    async fn transfer_leaders(&mut self) -> Result<u32> {
        let regions = self.workload_regions().await?;
        let mut queued = 0;
        for _ in 0..3 {
            let Some((id, _, _, leader, voters)) = regions.choose(&mut self.rng) else {
                break;
            };
            let others: Vec<u64> = voters
                .iter()
                .copied()
                .filter(|s| Some(*s) != *leader)
                .collect();
            let Some(to) = others.choose(&mut self.rng) else {
                continue;
            };
            let body = json!({ "name": "transfer-leader", "region_id": id, "to_store_id": to });
            if self.cluster.add_operator(&body).await? {
                queued += 1;
            }
        }
        Ok(queued)
    }

    async fn split(&mut self) -> Result<u32> {
        let regions = self.workload_regions().await?;
        let mut queued = 0;
        for _ in 0..2 {
            let k = self.ctx.random_key(&mut self.rng);
            let at = self.encode(&k);
            let Some((id, ..)) = regions
                .iter()
                .find(|(_, s, e, ..)| *s < at && (e.is_empty() || at < *e))
            else {
                continue;
            };
            let body = json!({ "name": "split-region", "region_id": id, "policy": "usekey", "keys": [to_hex(&at)] });
            if self.cluster.add_operator(&body).await? {
                queued += 1;
            }
        }
        Ok(queued)
    }

    /// Asks PD to merge one of the workload's regions into a neighbour, either way round;
    /// the (source, target) ids if PD took it (it declines regions of another keyspace,
    /// unhealthy ones or ones with an operator).
    async fn merge(&mut self) -> Result<Option<(u64, u64)>> {
        let regions = self.workload_regions().await?;
        let ranges = regions.iter().map(|(id, s, e, ..)| (*id, &s[..], &e[..]));
        let pairs = adjacent_pairs(ranges);
        let Some(&(left, right)) = pairs.choose(&mut self.rng) else {
            return Ok(None);
        };
        let (source, target) = if self.rng.gen_bool(0.5) {
            (left, right)
        } else {
            (right, left)
        };
        let body = json!({ "name": "merge-region", "source_region_id": source, "target_region_id": target });
        let queued = self.cluster.add_operator(&body).await?;
        Ok(queued.then_some((source, target)))
    }
}

/// The pairs `(left, right)` of regions (id, start key, end key; any order) where `left`
/// ends where `right` starts.
fn adjacent_pairs<'a>(
    ranges: impl IntoIterator<Item = (u64, &'a [u8], &'a [u8])>,
) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, &[u8], &[u8])> = ranges.into_iter().collect();
    ranges.sort_by(|a, b| a.1.cmp(b.1));
    ranges
        .windows(2)
        .filter(|w| !w[0].2.is_empty() && w[0].2 == w[1].1)
        .map(|w| (w[0].0, w[1].0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjacent_pairs_meet_end_to_start_in_any_order() {
        let ranges: [(u64, &[u8], &[u8]); 5] = [
            (4, b"m", b"t"),
            (2, b"", b"c"),
            (3, b"c", b"k"),
            (6, b"x", b""),
            (5, b"t", b"w"),
        ];
        // 3 ends at "k" but 4 starts at "m" (a region PD has not reported); 5 ends at "w".
        assert_eq!(adjacent_pairs(ranges), vec![(2, 3), (4, 5)]);
        assert_eq!(adjacent_pairs([(1, &b""[..], &b""[..])]), vec![]);
    }

    #[test]
    fn merge_and_the_lease_faults_are_mix_parts_only_when_named() {
        for k in [
            FaultKind::Merge,
            FaultKind::PauseLeader,
            FaultKind::ClockSkew,
        ] {
            assert!(!FaultKind::SINGLE.contains(&k));
            assert!(FaultKind::NAMED_ONLY.contains(&k));
        }
        assert_eq!(FaultKind::Merge.name(), "merge");
        assert_eq!(FaultKind::PauseLeader.name(), "pause-leader");
        assert_eq!(FaultKind::ClockSkew.name(), "clock-skew");
    }
}
