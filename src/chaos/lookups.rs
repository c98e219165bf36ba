//! The PD part of a campaign's verdict, as pure logic: which member led when ([`PdView`], fed
//! the members' `/status` answers), which members were down when (the nemesis's [`PdFault`]s,
//! each until the member answered again), and the lookup probe's rounds ([`Round`], see
//! [`super::lookup_probe`]). [`analyze`] attributes each failed lookup to the leader change
//! around it and fails the run on any lookup that failed while a majority of PD members was up.
//! No I/O and no clock here: `pd_watch` gathers the inputs.

use std::time::Duration;

use serde_json::{json, Value};

use super::lookup_probe::{Outcome, ProbeLine};
use super::verdict::human;

/// Failed lookups up to this long after a new leader is seen belong to that change (clients
/// retry and reconnect for a few seconds).
const ATTRIBUTION_AFTER: Duration = Duration::from_secs(5);
/// A fault of the old leader up to this long before it was last seen leading still explains
/// the change (a status poll can be answered just before the fault lands).
const CAUSE_SLACK: Duration = Duration::from_secs(2);
/// Instants kept per member at which it answered again (each fault adds one).
const BACK_MAX: usize = 10_000;
/// Failed, stalled and unanswered rounds kept for the verdict (counts go on past it).
pub const ROUNDS_KEPT_MAX: usize = 100_000;

/// A member's answer to `/status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    /// Whether it is the serving leader.
    pub is_leader: bool,
    /// Whom it takes for the leader (member index, 0-based).
    pub leader: Option<usize>,
}

/// A new PD leader, as the status polls saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderChange {
    /// The member that led before (none: no leader was known yet).
    pub from: Option<usize>,
    /// The new leader.
    pub to: usize,
    /// When `from` was last seen leading (run clock).
    pub from_last_ns: Option<u64>,
    /// When `to` was first seen leading.
    pub seen_ns: u64,
}

/// The PD group as its members' answers show it. The leader is the member that says it leads
/// and that a majority of all members names as leader (a resumed old leader may still say it
/// leads for a moment; the others know better).
#[derive(Debug)]
pub struct PdView {
    latest: Vec<Option<MemberStatus>>,
    /// The leader and when it was last seen leading.
    leader: Option<(usize, u64)>,
    /// Every change of leader (the first leader seen is not a change).
    pub changes: Vec<LeaderChange>,
    /// Per member, the instants it answered after not answering (or at its first answer).
    pub back_ns: Vec<Vec<u64>>,
}

impl PdView {
    /// A view of a group of `members`, none answering yet.
    pub fn new(members: usize) -> PdView {
        PdView {
            latest: vec![None; members],
            leader: None,
            changes: Vec::new(),
            back_ns: vec![Vec::new(); members],
        }
    }

    /// Member `member` answered `status` (None: no answer) at `t_ns`; the change of leader it
    /// reveals, if any.
    pub fn on_status(
        &mut self,
        t_ns: u64,
        member: usize,
        status: Option<MemberStatus>,
    ) -> Option<LeaderChange> {
        assert!(member < self.latest.len(), "member {member} out of range");
        if self.latest[member].is_none() && status.is_some() {
            let back = &mut self.back_ns[member];
            if back.len() < BACK_MAX {
                back.push(t_ns);
            }
        }
        self.latest[member] = status;
        let now = self.leader_now()?;
        match self.leader {
            Some((l, _)) if l == now => {
                self.leader = Some((l, t_ns));
                None
            }
            previous => {
                self.leader = Some((now, t_ns));
                let from = previous?;
                let change = LeaderChange {
                    from: Some(from.0),
                    to: now,
                    from_last_ns: Some(from.1),
                    seen_ns: t_ns,
                };
                self.changes.push(change);
                Some(change)
            }
        }
    }

    fn leader_now(&self) -> Option<usize> {
        let majority = self.latest.len() / 2 + 1;
        (0..self.latest.len()).find(|&m| {
            let claims = self.latest[m].is_some_and(|s| s.is_leader);
            let named = self
                .latest
                .iter()
                .flatten()
                .filter(|s| s.leader == Some(m))
                .count();
            claims && named >= majority
        })
    }
}

/// A PD member the nemesis took down (or found crashed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PdFault {
    /// Member index.
    pub member: usize,
    /// `kill-pd`, `pause` or `crash`.
    pub kind: &'static str,
    /// When it went down (run clock).
    pub from_ns: u64,
    /// When the nemesis restarted or continued it (none: not healed).
    pub healed_ns: Option<u64>,
}

/// A probe line stamped with the run clock when it was read (the round's end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Round {
    /// When the round ended.
    pub end_ns: u64,
    /// The probe's line.
    pub line: ProbeLine,
}

impl Round {
    fn start_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.line.ms * 1_000_000)
    }

    fn lookup_failed(&self) -> bool {
        matches!(self.line.outcome, Outcome::LookupFailed(_))
    }
}

/// How many rounds ended how.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Rounds (client connects are not rounds).
    pub rounds: u64,
    /// Reads that succeeded in time.
    pub ok: u64,
    /// Rounds whose lookup failed.
    pub lookup_failed: u64,
    /// Rounds whose lookups succeeded and whose read failed at the store.
    pub store_failed: u64,
    /// Rounds longer than the stall bound (their lookups did not fail).
    pub stalls: u64,
    /// Clients that could not be made.
    pub connect_failed: u64,
    /// Lines that were not a probe line.
    pub unreadable: u64,
}

impl Tally {
    /// Counts `outcome`.
    pub fn count(&mut self, outcome: &Outcome) {
        let n = match outcome {
            Outcome::Ok(_) => &mut self.ok,
            Outcome::LookupFailed(_) => &mut self.lookup_failed,
            Outcome::StoreFailed(_) => &mut self.store_failed,
            Outcome::Stall(_) => &mut self.stalls,
            Outcome::ConnectFailed(_) => {
                self.connect_failed += 1;
                return;
            }
        };
        *n += 1;
        self.rounds += 1;
    }
}

/// What the campaign saw of PD.
#[derive(Debug, Default)]
pub struct PdRecord {
    /// Number of PD members.
    pub members: usize,
    /// Leader changes and when members answered again.
    pub changes: Vec<LeaderChange>,
    /// See [`PdView::back_ns`].
    pub back_ns: Vec<Vec<u64>>,
    /// The probe's counts.
    pub tally: Tally,
    /// The rounds that were not ok (up to [`ROUNDS_KEPT_MAX`]).
    pub rounds: Vec<Round>,
    /// Why the probe gave no rounds, if it could not run.
    pub probe_error: Option<String>,
}

/// One leader change in the verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeReport {
    /// The change.
    pub change: LeaderChange,
    /// `kill-pd`, `pause` or `crash` of the old leader, else `other`.
    pub cause: &'static str,
    /// When the cause (or the old leader's last sighting) was.
    pub lost_ns: u64,
    /// Failed lookups attributed to it.
    pub failed: usize,
    /// First failed round's start to last failed round's end (zero: none failed).
    pub failed_window: Duration,
}

/// The PD part of the verdict.
#[derive(Debug)]
pub struct LookupVerdict {
    /// Leader changes, in order.
    pub changes: Vec<ChangeReport>,
    /// The probe's counts.
    pub tally: Tally,
    /// Failed lookups near no leader change.
    pub unattributed: usize,
    /// Failed lookups while a majority of PD members was up (each fails the run).
    pub with_majority_up: Vec<Round>,
    /// See [`PdRecord::probe_error`].
    pub probe_error: Option<String>,
}

impl LookupVerdict {
    /// Whether no lookup failed while a majority of PD was up.
    pub fn passed(&self) -> bool {
        self.with_majority_up.is_empty()
    }
}

/// The instants each fault's member was down: from the fault until it answered again after the
/// heal (u64::MAX: never seen again).
fn down_spans(faults: &[PdFault], back_ns: &[Vec<u64>]) -> Vec<(usize, u64, u64)> {
    faults
        .iter()
        .map(|f| {
            let end = f.healed_ns.map_or(u64::MAX, |healed| {
                back_ns
                    .get(f.member)
                    .and_then(|b| b.iter().copied().find(|t| *t >= healed))
                    .unwrap_or(u64::MAX)
            });
            (f.member, f.from_ns, end)
        })
        .collect()
}

/// Whether at some instant in `[start, end]` fewer than a majority of `members` was up.
fn majority_down_within(spans: &[(usize, u64, u64)], members: usize, start: u64, end: u64) -> bool {
    let down_max = members - (members / 2 + 1);
    // The count of members down only rises at `start` or at a span's start.
    let mut points = std::iter::once(start).chain(
        spans
            .iter()
            .map(|s| s.1)
            .filter(|t| (start..=end).contains(t)),
    );
    points.any(|p| {
        let mut down: Vec<usize> = spans
            .iter()
            .filter(|(_, from, to)| *from <= p && p < *to)
            .map(|s| s.0)
            .collect();
        down.sort_unstable();
        down.dedup();
        down.len() > down_max
    })
}

/// The cause of `c`: the latest fault of the old leader between shortly before it was last
/// seen leading and the new leader's sighting.
fn cause<'f>(c: &LeaderChange, faults: &'f [PdFault]) -> Option<&'f PdFault> {
    let from = c.from?;
    let last = c.from_last_ns.unwrap_or(c.seen_ns);
    let lo = last.saturating_sub(CAUSE_SLACK.as_nanos() as u64);
    faults
        .iter()
        .filter(|f| f.member == from && (lo..=c.seen_ns).contains(&f.from_ns))
        .max_by_key(|f| f.from_ns)
}

/// The verdict on `record`, given the nemesis's PD faults.
pub fn analyze(record: &PdRecord, faults: &[PdFault]) -> LookupVerdict {
    let spans = down_spans(faults, &record.back_ns);
    let after = ATTRIBUTION_AFTER.as_nanos() as u64;
    let mut changes: Vec<ChangeReport> = record
        .changes
        .iter()
        .map(|c| {
            let found = cause(c, faults);
            ChangeReport {
                change: *c,
                cause: found.map_or("other", |f| f.kind),
                lost_ns: found.map_or(c.from_last_ns.unwrap_or(c.seen_ns), |f| f.from_ns),
                failed: 0,
                failed_window: Duration::ZERO,
            }
        })
        .collect();
    let mut windows: Vec<Option<(u64, u64)>> = vec![None; changes.len()];
    let mut unattributed = 0;
    let mut with_majority_up = Vec::new();
    for r in record.rounds.iter().filter(|r| r.lookup_failed()) {
        let (start, end) = (r.start_ns(), r.end_ns);
        if !majority_down_within(&spans, record.members, start, end) {
            with_majority_up.push(r.clone());
        }
        let near = changes
            .iter()
            .enumerate()
            .filter(|(_, c)| start <= c.change.seen_ns + after && end >= c.lost_ns)
            .min_by_key(|(_, c)| c.change.seen_ns.abs_diff(end))
            .map(|(i, _)| i);
        let Some(i) = near else {
            unattributed += 1;
            continue;
        };
        changes[i].failed += 1;
        let w = windows[i].get_or_insert((start, end));
        *w = (w.0.min(start), w.1.max(end));
    }
    for (c, w) in changes.iter_mut().zip(windows) {
        c.failed_window = w.map_or(Duration::ZERO, |(s, e)| Duration::from_nanos(e - s));
    }
    LookupVerdict {
        changes,
        tally: record.tally,
        unattributed,
        with_majority_up,
        probe_error: record.probe_error.clone(),
    }
}

fn member(m: Option<usize>) -> String {
    m.map_or("?".to_owned(), |m| format!("pd{m}"))
}

fn at(t_ns: u64) -> String {
    human(Some(Duration::from_nanos(t_ns)))
}

fn outcome_text(o: &Outcome) -> String {
    match o {
        Outcome::Ok(_) => "ok".to_owned(),
        Outcome::LookupFailed(e)
        | Outcome::StoreFailed(e)
        | Outcome::Stall(e)
        | Outcome::ConnectFailed(e) => e.clone(),
    }
}

impl LookupVerdict {
    /// The verdict's lines about PD.
    pub fn text(&self) -> String {
        let t = &self.tally;
        let mut text = format!(
            "PD lookups (official client, one uncached lookup per round): {} rounds: {} ok, {} lookup failures, {} store failures, {} stalls; {} client connects failed\n",
            t.rounds, t.ok, t.lookup_failed, t.store_failed, t.stalls, t.connect_failed
        );
        if let Some(e) = &self.probe_error {
            text += &format!("  the lookup probe did not run: {e}\n");
        }
        text += &format!("PD leader changes: {}\n", self.changes.len());
        for c in &self.changes {
            let failed = if c.failed == 0 {
                "no lookup failed".to_owned()
            } else {
                format!(
                    "lookups failed for {} ({} rounds)",
                    human(Some(c.failed_window)),
                    c.failed
                )
            };
            text += &format!(
                "  at {}: {} -> {} ({}), new leader seen {} after, {failed}\n",
                at(c.change.seen_ns),
                member(c.change.from),
                member(Some(c.change.to)),
                c.cause,
                human(Some(Duration::from_nanos(
                    c.change.seen_ns.saturating_sub(c.lost_ns)
                ))),
            );
        }
        if self.unattributed > 0 {
            text += &format!(
                "  lookups failed near no leader change: {}\n",
                self.unattributed
            );
        }
        if let Some(first) = self.with_majority_up.first() {
            text += &format!(
                "LOOKUPS FAILED WITH A MAJORITY OF PD UP: {} (first at {}, {}: {})\n",
                self.with_majority_up.len(),
                at(first.end_ns),
                first.line.call.as_deref().unwrap_or("?"),
                outcome_text(&first.line.outcome)
            );
        }
        text
    }

    /// The finding that fails the run, if any.
    pub fn finding(&self) -> Option<String> {
        let first = self.with_majority_up.first()?;
        Some(format!(
            "PD: {} region lookups failed while a majority of PD members was up; the first ended at {} ({}): {}",
            self.with_majority_up.len(),
            at(first.end_ns),
            first.line.call.as_deref().unwrap_or("?"),
            outcome_text(&first.line.outcome)
        ))
    }

    /// The verdict's `pd_lookups` object.
    pub fn json(&self) -> Value {
        let t = &self.tally;
        json!({
            "passed": self.passed(),
            "rounds": t.rounds,
            "ok": t.ok,
            "lookup_failed": t.lookup_failed,
            "store_failed": t.store_failed,
            "stalls": t.stalls,
            "connect_failed": t.connect_failed,
            "unreadable_lines": t.unreadable,
            "probe_error": self.probe_error,
            "leader_changes": self.changes.iter().map(|c| json!({
                "seen_ms": c.change.seen_ns / 1_000_000,
                "lost_ms": c.lost_ns / 1_000_000,
                "from": c.change.from,
                "to": c.change.to,
                "cause": c.cause,
                "failed_rounds": c.failed,
                "failed_window_ms": c.failed_window.as_millis() as u64,
            })).collect::<Vec<_>>(),
            "failed_near_no_leader_change": self.unattributed,
            "failed_with_majority_up": self.with_majority_up.iter().map(|r| json!({
                "end_ms": r.end_ns / 1_000_000,
                "ms": r.line.ms,
                "call": r.line.call,
                "error": outcome_text(&r.line.outcome),
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn status(is_leader: bool, leader: usize) -> Option<MemberStatus> {
        Some(MemberStatus {
            is_leader,
            leader: Some(leader),
        })
    }

    fn failed_round(end_ns: u64, ms: u64) -> Round {
        Round {
            end_ns,
            line: ProbeLine {
                outcome: Outcome::LookupFailed("gone".into()),
                ms,
                pd_failed: 10,
                call: Some("get_region".into()),
                then: None,
            },
        }
    }

    fn record(members: usize, changes: Vec<LeaderChange>, back_ns: Vec<Vec<u64>>) -> PdRecord {
        PdRecord {
            members,
            changes,
            back_ns,
            ..PdRecord::default()
        }
    }

    fn kill(member: usize, from_ns: u64, healed_ns: u64) -> PdFault {
        PdFault {
            member,
            kind: "kill-pd",
            from_ns,
            healed_ns: Some(healed_ns),
        }
    }

    #[test]
    fn the_leader_is_who_claims_it_and_a_majority_names() {
        let mut v = PdView::new(3);
        assert_eq!(v.on_status(1, 0, status(true, 0)), None);
        // One voice is not a majority of three.
        assert_eq!(v.leader_now(), None);
        assert_eq!(v.on_status(2, 1, status(false, 0)), None);
        assert_eq!(v.leader_now(), Some(0));
        v.on_status(3, 2, status(false, 0));
        // pd0 is killed; the others elect pd1.
        v.on_status(10, 0, None);
        v.on_status(11, 1, status(true, 1));
        let change = v.on_status(12, 2, status(false, 1)).unwrap();
        assert_eq!(
            change,
            LeaderChange {
                from: Some(0),
                to: 1,
                from_last_ns: Some(3),
                seen_ns: 12
            }
        );
        // pd0 comes back still claiming for a moment: no change, and it answered again.
        assert_eq!(v.on_status(20, 0, status(true, 0)), None);
        assert_eq!(v.leader_now(), Some(1));
        assert_eq!(v.back_ns[0], vec![1, 20]);
        assert_eq!(v.changes.len(), 1);
    }

    #[test]
    fn pd_alone_leads_by_itself() {
        let mut v = PdView::new(1);
        v.on_status(1, 0, status(true, 0));
        assert_eq!(v.leader_now(), Some(0));
        v.on_status(2, 0, None);
        assert_eq!(v.leader_now(), None);
        assert_eq!(v.on_status(3, 0, status(true, 0)), None);
        assert_eq!(v.back_ns[0], vec![1, 3]);
    }

    #[test]
    fn a_failed_lookup_with_a_majority_up_fails_the_run() {
        let change = LeaderChange {
            from: Some(0),
            to: 1,
            from_last_ns: Some(10 * S),
            seen_ns: 12 * S,
        };
        let mut r = record(3, vec![change], vec![vec![0, 20 * S], vec![0], vec![0]]);
        r.rounds = vec![failed_round(12 * S, 300), failed_round(13 * S, 200)];
        let faults = [kill(0, 10 * S + S / 2, 18 * S)];
        let v = analyze(&r, &faults);
        // One of three down is a minority: both failures count.
        assert_eq!(v.with_majority_up.len(), 2);
        assert!(!v.passed());
        assert_eq!(v.changes[0].cause, "kill-pd");
        assert_eq!(v.changes[0].lost_ns, 10 * S + S / 2);
        assert_eq!(v.changes[0].failed, 2);
        // From the first round's start (11.7 s) to the last's end (13 s).
        assert_eq!(v.changes[0].failed_window, Duration::from_millis(1300));
        assert_eq!(v.unattributed, 0);
        assert!(v.finding().unwrap().contains("2 region lookups failed"));
    }

    #[test]
    fn pd_alone_down_excuses_failures_until_it_answers_again() {
        // Killed at 10 s, restarted at 15 s, answering again at 16 s.
        let mut r = record(1, vec![], vec![vec![0, 16 * S]]);
        r.rounds = vec![
            failed_round(12 * S, 100),
            failed_round(15 * S + S / 2, 100),
            // Began before it answered again: excused.
            failed_round(16 * S + S / 20, 100),
            // Began after: a failure with PD up.
            failed_round(17 * S, 100),
        ];
        let v = analyze(&r, &[kill(0, 10 * S, 15 * S)]);
        assert_eq!(v.with_majority_up, vec![r.rounds[3].clone()]);
        assert_eq!(v.unattributed, 4);
    }

    #[test]
    fn a_fault_never_seen_healed_keeps_the_member_down() {
        let mut r = record(1, vec![], vec![vec![0]]);
        r.rounds = vec![failed_round(30 * S, 100)];
        let v = analyze(&r, &[kill(0, 10 * S, 15 * S)]);
        assert!(v.passed());
    }

    #[test]
    fn two_of_three_down_is_no_majority() {
        let spans = [(0, 10 * S, 20 * S), (1, 15 * S, 25 * S)];
        assert!(!majority_down_within(&spans, 3, 11 * S, 14 * S));
        assert!(majority_down_within(&spans, 3, 14 * S, 16 * S));
        assert!(majority_down_within(&spans, 3, 16 * S, 17 * S));
        // The same member twice is still one member.
        let same = [(0, 10 * S, 20 * S), (0, 12 * S, 22 * S)];
        assert!(!majority_down_within(&same, 3, 13 * S, 14 * S));
    }

    #[test]
    fn failures_far_from_any_change_are_unattributed_and_changes_without_a_fault_are_other() {
        let change = LeaderChange {
            from: Some(2),
            to: 0,
            from_last_ns: Some(50 * S),
            seen_ns: 51 * S,
        };
        let mut r = record(3, vec![change], vec![vec![0], vec![0], vec![0]]);
        r.rounds = vec![failed_round(20 * S, 50)];
        let v = analyze(&r, &[kill(0, 10 * S, 12 * S)]);
        assert_eq!(v.changes[0].cause, "other");
        assert_eq!(v.changes[0].failed, 0);
        assert_eq!(v.changes[0].failed_window, Duration::ZERO);
        assert_eq!(v.unattributed, 1);
        assert!(v.text().contains("no lookup failed"));
    }

    #[test]
    fn the_tally_counts_rounds_apart_from_connects() {
        let mut t = Tally::default();
        t.count(&Outcome::Ok(true));
        t.count(&Outcome::Stall("slow".into()));
        t.count(&Outcome::ConnectFailed("refused".into()));
        assert_eq!((t.rounds, t.ok, t.stalls, t.connect_failed), (2, 1, 1, 1));
    }
}
