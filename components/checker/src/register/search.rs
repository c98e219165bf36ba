//! The linearizability search for one key: Wing & Gong's algorithm with Lowe's just-in-time
//! linearization and memoisation (as in Knossos and Porcupine), and the per-key report.
//!
//! The search state is the set of ops already linearized (a bitset) and the register's value.
//! From a state, an op may go next if it is not linearized and was called no later than the
//! earliest return among the ops left that must take effect; an op whose outcome is unknown
//! never bounds the others and may be left out for good. A state seen before is not explored
//! again. The search succeeds once every op that must take effect is placed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use super::{OptDisplay, RegisterOp, RegisterOpKind, RegisterValue};

/// Distinct search states explored per key before [`check_register`] gives up on it.
pub const REGISTER_STATES_DEFAULT_MAX: u64 = 10_000_000;

/// Ops of a violation's prefix its `Display` names (the last ones).
const PREFIX_SHOWN_MAX: usize = 12;

/// Bounds of [`check_register_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterCheckOptions {
    /// Distinct (linearized set, value) states explored per key before its verdict is
    /// [`RegisterVerdict::Unknown`]; each costs a bitset of the key's ops in memory.
    pub states_max: u64,
}

impl Default for RegisterCheckOptions {
    fn default() -> Self {
        RegisterCheckOptions {
            states_max: REGISTER_STATES_DEFAULT_MAX,
        }
    }
}

/// Why no linearization of a key exists, as far as the search got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterViolation {
    /// Index in the history of the op that could not take effect after the longest prefix:
    /// of the ops that must take effect and are left, the one that returned first.
    pub stuck: usize,
    /// That op.
    pub stuck_op: RegisterOp,
    /// Indices in the history of the longest linearizable prefix found, in order.
    pub prefix: Vec<usize>,
    /// The register's value after that prefix.
    pub value: Option<RegisterValue>,
}

impl fmt::Display for RegisterViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "op #{} ({}) cannot take effect; the longest linearizable prefix found has {} ops \
             and leaves {}; it ends",
            self.stuck,
            self.stuck_op,
            self.prefix.len(),
            OptDisplay(&self.value)
        )?;
        let shown = self.prefix.len().saturating_sub(PREFIX_SHOWN_MAX);
        if shown > 0 {
            f.write_str(" ...")?;
        }
        for i in &self.prefix[shown..] {
            write!(f, " #{i}")?;
        }
        Ok(())
    }
}

/// Whether a key's ops are linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterVerdict {
    /// Some order of the ops respects real time and register semantics.
    Linearizable,
    /// None does.
    NotLinearizable(RegisterViolation),
    /// The search explored `states_max` states without deciding; not a pass.
    Unknown {
        /// The bound reached.
        states_max: u64,
    },
}

/// The verdict on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyReport {
    /// The register.
    pub key: String,
    /// Ops checked: all of the key's ops but reads with an unknown outcome.
    pub ops: usize,
    /// Distinct search states explored.
    pub states_explored: u64,
    /// The verdict.
    pub verdict: RegisterVerdict,
}

/// The verdicts on every key of a history, sorted by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterReport {
    /// One per key.
    pub keys: Vec<KeyReport>,
}

impl RegisterReport {
    /// Whether every key is linearizable (an undecided key is not).
    pub fn is_linearizable(&self) -> bool {
        self.keys
            .iter()
            .all(|k| k.verdict == RegisterVerdict::Linearizable)
    }

    /// Keys with a violation.
    pub fn violations(&self) -> impl Iterator<Item = (&str, &RegisterViolation)> {
        self.keys.iter().filter_map(|k| match &k.verdict {
            RegisterVerdict::NotLinearizable(v) => Some((k.key.as_str(), v)),
            _ => None,
        })
    }

    /// Keys the search gave up on.
    pub fn undecided(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().filter_map(|k| match k.verdict {
            RegisterVerdict::Unknown { .. } => Some(k.key.as_str()),
            _ => None,
        })
    }
}

impl fmt::Display for RegisterReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for k in &self.keys {
            write!(
                f,
                "key {}: {} ops, {} states: ",
                k.key, k.ops, k.states_explored
            )?;
            match &k.verdict {
                RegisterVerdict::Linearizable => writeln!(f, "linearizable")?,
                RegisterVerdict::NotLinearizable(v) => writeln!(f, "NOT linearizable: {v}")?,
                RegisterVerdict::Unknown { states_max } => {
                    writeln!(f, "unknown (gave up after {states_max} states)")?
                }
            }
        }
        Ok(())
    }
}

/// Checks each key of `history` with the default bounds.
pub fn check_register(history: &[RegisterOp]) -> RegisterReport {
    check_register_with(history, &RegisterCheckOptions::default())
}

/// Checks each key of `history` independently for linearizability.
pub fn check_register_with(history: &[RegisterOp], opts: &RegisterCheckOptions) -> RegisterReport {
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, op) in history.iter().enumerate() {
        by_key.entry(op.key.as_str()).or_default().push(i);
    }
    let keys = by_key
        .into_iter()
        .map(|(key, idx)| check_key(history, key, &idx, opts))
        .collect();
    RegisterReport { keys }
}

fn check_key(
    history: &[RegisterOp],
    key: &str,
    idx: &[usize],
    opts: &RegisterCheckOptions,
) -> KeyReport {
    let (entries, values) = entries_of(history, idx);
    let mut search = Search::new(&entries, opts.states_max);
    let verdict = match search.run() {
        Outcome::Linearizable => RegisterVerdict::Linearizable,
        Outcome::TooBig => RegisterVerdict::Unknown {
            states_max: opts.states_max,
        },
        Outcome::Stuck { prefix, value } => {
            let stuck = search.stuck_after(&prefix);
            let stuck = entries[stuck].hist;
            RegisterVerdict::NotLinearizable(RegisterViolation {
                stuck,
                stuck_op: history[stuck].clone(),
                prefix: prefix.iter().map(|&e| entries[e].hist).collect(),
                value: value.checked_sub(1).map(|v| values[v as usize].clone()),
            })
        }
    };
    KeyReport {
        key: key.to_owned(),
        ops: entries.len(),
        states_explored: search.seen.len() as u64,
        verdict,
    }
}

/// A value interned per key: 0 is absent, `v > 0` is `values[v - 1]`.
type Val = u32;

/// What an op does to the register, if it takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// Legal iff the register holds the value.
    Read(Val),
    /// Sets the register.
    Write(Val),
    /// Legal iff the register holds `.0`; sets it to `.1`.
    Cas(Val, Val),
    /// Legal iff the register does not hold the value.
    CasFailed(Val),
}

impl Effect {
    fn apply(self, state: Val) -> Option<Val> {
        match self {
            Effect::Read(v) => (state == v).then_some(state),
            Effect::Write(v) => Some(v),
            Effect::Cas(e, n) => (state == e).then_some(n),
            Effect::CasFailed(e) => (state != e).then_some(state),
        }
    }
}

/// An op as the search sees it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Index in the history.
    hist: usize,
    call: u64,
    /// `None`: the outcome is unknown, the op may be left out.
    ret: Option<u64>,
    effect: Effect,
}

/// The key's ops as entries sorted by call time (reads with unknown outcome dropped), and
/// the interned values.
fn entries_of(history: &[RegisterOp], idx: &[usize]) -> (Vec<Entry>, Vec<RegisterValue>) {
    let mut ids: HashMap<RegisterValue, Val> = HashMap::new();
    let mut values: Vec<RegisterValue> = Vec::new();
    let mut intern = |v: &Option<RegisterValue>| -> Val {
        let Some(v) = v else { return 0 };
        if let Some(&id) = ids.get(v) {
            return id;
        }
        values.push(v.clone());
        let id = Val::try_from(values.len()).expect("fewer than 2^32 values per key");
        ids.insert(v.clone(), id);
        id
    };
    let mut entries = Vec::with_capacity(idx.len());
    for &hist in idx {
        let op = &history[hist];
        let (effect, ret) = match &op.kind {
            RegisterOpKind::Read { .. } if op.ret_ns.is_none() => continue,
            RegisterOpKind::Read { out } => (Effect::Read(intern(out)), op.ret_ns),
            RegisterOpKind::Write { value } => {
                (Effect::Write(intern(&Some(value.clone()))), op.ret_ns)
            }
            RegisterOpKind::Cas { expected, new, out } => {
                let e = intern(expected);
                match out {
                    Some(true) => (Effect::Cas(e, intern(&Some(new.clone()))), op.ret_ns),
                    Some(false) => (Effect::CasFailed(e), op.ret_ns),
                    // Unknown: if it took effect and failed it changed nothing, which is the
                    // same as never taking effect.
                    None => (Effect::Cas(e, intern(&Some(new.clone()))), None),
                }
            }
        };
        entries.push(Entry {
            hist,
            call: op.call_ns,
            ret,
            effect,
        });
    }
    entries.sort_by_key(|e| (e.call, e.ret.unwrap_or(u64::MAX)));
    (entries, values)
}

enum Outcome {
    Linearizable,
    TooBig,
    /// No linearization; the longest prefix found (entry indices) and the value after it.
    Stuck {
        prefix: Vec<usize>,
        value: Val,
    },
}

/// A memo key: the value and the linearized set, without its leading full words (`full`
/// counts them) and trailing empty ones.
#[derive(Debug, PartialEq, Eq, Hash)]
struct StateKey {
    value: Val,
    full: u32,
    words: Box<[u64]>,
}

/// A point of the depth-first search: the candidates from one state and the next to try.
struct Frame {
    candidates: Vec<usize>,
    next: usize,
    value: Val,
}

struct Search<'a> {
    entries: &'a [Entry],
    states_max: u64,
    seen: HashSet<StateKey>,
    /// Bit `i` set: `entries[i]` is linearized.
    lin: Vec<u64>,
    /// Entries that must take effect and are not linearized yet.
    must_left: usize,
}

impl<'a> Search<'a> {
    fn new(entries: &'a [Entry], states_max: u64) -> Self {
        Search {
            entries,
            states_max,
            seen: HashSet::new(),
            lin: vec![0; entries.len().div_ceil(64)],
            must_left: entries.iter().filter(|e| e.ret.is_some()).count(),
        }
    }

    fn is_lin(&self, i: usize) -> bool {
        self.lin[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: usize, on: bool) {
        assert_ne!(
            self.is_lin(i),
            on,
            "entry {i} linearized twice or undone twice"
        );
        self.lin[i / 64] ^= 1 << (i % 64);
        if self.entries[i].ret.is_some() {
            if on {
                self.must_left -= 1;
            } else {
                self.must_left += 1;
            }
        }
    }

    fn state_key(&self, value: Val) -> StateKey {
        let full = self.lin.iter().take_while(|w| **w == u64::MAX).count();
        let end = self
            .lin
            .iter()
            .rposition(|w| *w != 0)
            .map_or(full, |p| p + 1);
        StateKey {
            value,
            full: u32::try_from(full).expect("fewer than 2^38 ops per key"),
            words: self.lin[full..end.max(full)].into(),
        }
    }

    /// Unlinearized entries called no later than the earliest return among unlinearized
    /// entries that must take effect, in call order. If one of them is a must-take-effect op
    /// that reads `value` without changing it, only that one: placing it now loses nothing,
    /// since nothing left returned before it was called.
    fn candidates(&self, value: Val) -> Vec<usize> {
        let mut bound = u64::MAX;
        let mut out = Vec::new();
        let first = self.lin.iter().take_while(|w| **w == u64::MAX).count() * 64;
        for i in (first..self.entries.len()).filter(|&i| !self.is_lin(i)) {
            let e = &self.entries[i];
            if e.call > bound {
                break;
            }
            if let Some(ret) = e.ret {
                bound = bound.min(ret);
            }
            out.push(i);
        }
        out.retain(|&i| self.entries[i].call <= bound);
        let free_read = out.iter().copied().find(|&i| {
            let e = &self.entries[i];
            e.ret.is_some()
                && matches!(e.effect, Effect::Read(_) | Effect::CasFailed(_))
                && e.effect.apply(value).is_some()
        });
        match free_read {
            Some(i) => vec![i],
            None => out,
        }
    }

    fn run(&mut self) -> Outcome {
        if self.must_left == 0 {
            return Outcome::Linearizable;
        }
        self.seen.insert(self.state_key(0));
        let mut stack = vec![Frame {
            candidates: self.candidates(0),
            next: 0,
            value: 0,
        }];
        let (mut path, mut best, mut best_value) = (Vec::new(), Vec::new(), 0);
        while let Some(top) = stack.last_mut() {
            let Some(&i) = top.candidates.get(top.next) else {
                stack.pop();
                if let Some(i) = path.pop() {
                    self.set(i, false);
                }
                continue;
            };
            top.next += 1;
            let Some(value) = self.entries[i].effect.apply(top.value) else {
                continue;
            };
            self.set(i, true);
            if self.must_left == 0 {
                return Outcome::Linearizable;
            }
            if !self.seen.insert(self.state_key(value)) {
                self.set(i, false);
                continue;
            }
            if self.seen.len() as u64 >= self.states_max {
                return Outcome::TooBig;
            }
            path.push(i);
            if path.len() > best.len() {
                best.clone_from(&path);
                best_value = value;
            }
            let candidates = self.candidates(value);
            stack.push(Frame {
                candidates,
                next: 0,
                value,
            });
        }
        Outcome::Stuck {
            prefix: best,
            value: best_value,
        }
    }

    /// The entry left after `prefix` that must take effect and returned first.
    fn stuck_after(&self, prefix: &[usize]) -> usize {
        let mut placed = vec![false; self.entries.len()];
        for &i in prefix {
            placed[i] = true;
        }
        (0..self.entries.len())
            .filter(|&i| !placed[i])
            .filter_map(|i| self.entries[i].ret.map(|r| (r, i)))
            .min()
            .expect("a stuck search leaves an op that must take effect")
            .1
    }
}
