//! The safety invariants, checked after every step of a run.

use std::collections::HashMap;
use std::fmt;

use raft::eraftpb::Entry;

use crate::node::Node;

/// A broken safety property, with what is needed to understand it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// Two nodes led the same term.
    TwoLeaders {
        /// The term.
        term: u64,
        /// The node seen first as leader.
        first: u64,
        /// The other node.
        second: u64,
    },
    /// A node's committed entry differs from the entry committed at that index before.
    CommittedChanged {
        /// The node.
        node: u64,
        /// The log index.
        index: u64,
    },
    /// A node applied an entry different from one applied at that index before.
    AppliedChanged {
        /// The node.
        node: u64,
        /// The log index.
        index: u64,
    },
    /// Two logs hold entries of the same term at some index but differ at `index` before it.
    LogMismatch {
        /// One node.
        a: u64,
        /// The other node.
        b: u64,
        /// The index where their terms differ.
        index: u64,
    },
    /// After healing, the replicas did not reach one commit index in time.
    NoConvergence {
        /// Commit index per node, from node 1.
        committed: Vec<u64>,
    },
    /// After convergence, two replicas applied different sequences.
    Diverged {
        /// One node.
        a: u64,
        /// The other node.
        b: u64,
    },
    /// A value the client saw committed is missing from the final applied state.
    LostAck {
        /// The value.
        value: u64,
    },
    /// A value was applied twice on one replica.
    AppliedTwice {
        /// The value.
        value: u64,
    },
    /// raft-rs or the simulation panicked (an assertion failed).
    Panicked {
        /// The panic message.
        message: String,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for Violation {}

fn same(a: &Entry, b: &Entry) -> bool {
    a.index == b.index && a.term == b.term && a.data == b.data
}

/// Remembers what has been committed and applied anywhere, to check each node against it.
#[derive(Default)]
pub struct Checker {
    leader_of_term: HashMap<u64, u64>,
    /// `committed[i]` is the entry committed at index `i + 1`, as first seen.
    committed: Vec<Entry>,
    /// `applied[i]` is the entry applied at index `i + 1`, as first seen.
    applied: Vec<Entry>,
    /// Per node, the commit index already checked against `committed`.
    checked_commit: HashMap<u64, u64>,
}

impl Checker {
    /// The number of terms that had a leader.
    pub fn terms_with_leader(&self) -> usize {
        self.leader_of_term.len()
    }

    /// (1) At most one leader per term, over the whole run.
    pub fn check_leader(&mut self, node: &Node) -> Result<(), Violation> {
        if !node.is_leader() {
            return Ok(());
        }
        let first = *self.leader_of_term.entry(node.term()).or_insert(node.id);
        if first != node.id {
            return Err(Violation::TwoLeaders {
                term: node.term(),
                first,
                second: node.id,
            });
        }
        Ok(())
    }

    /// (2) A node's committed prefix agrees with every committed prefix seen before.
    pub fn check_committed(&mut self, node: &Node) -> Result<(), Violation> {
        let checked = self.checked_commit.entry(node.id).or_insert(0);
        let commit = node.committed();
        // A restarted node may come back with a lower in-memory commit index.
        let from = (*checked).min(commit);
        for e in node.log_slice(from + 1, commit + 1) {
            let i = e.index as usize - 1;
            if i < self.committed.len() {
                if !same(&self.committed[i], &e) {
                    return Err(Violation::CommittedChanged {
                        node: node.id,
                        index: e.index,
                    });
                }
            } else {
                assert_eq!(i, self.committed.len(), "commit index skipped entries");
                self.committed.push(e);
            }
        }
        *checked = commit;
        Ok(())
    }

    /// (3) An applied entry equals the entry applied at that index by every other node.
    pub fn check_applied(&mut self, node: u64, entries: &[Entry]) -> Result<(), Violation> {
        for e in entries {
            let i = e.index as usize - 1;
            if i < self.applied.len() {
                if !same(&self.applied[i], e) {
                    return Err(Violation::AppliedChanged {
                        node,
                        index: e.index,
                    });
                }
            } else {
                assert_eq!(i, self.applied.len(), "applied index skipped entries");
                self.applied.push(e.clone());
            }
        }
        Ok(())
    }
}

/// Log matching over whole logs: where two logs hold the same term at an index, they hold the
/// same terms at every index before it. Both committed prefixes were just checked equal to the
/// one committed log, so only the tails above the lower commit index are walked, comparing terms:
/// cheap enough for every tick.
pub fn check_log_matching(nodes: &[Node]) -> Result<(), Violation> {
    for (x, a) in nodes.iter().enumerate() {
        for b in &nodes[x + 1..] {
            let top = a.last_index().min(b.last_index());
            let floor = a.committed().min(b.committed()).max(1);
            let mut matched = false;
            for i in (floor..=top).rev() {
                let term = a.term_at(i);
                let same_term = term.is_some() && term == b.term_at(i);
                if matched && !same_term {
                    return Err(Violation::LogMismatch {
                        a: a.id,
                        b: b.id,
                        index: i,
                    });
                }
                matched |= same_term;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::ELECTION_TICKS;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            data: data.to_vec().into(),
            ..Default::default()
        }
    }

    /// A node whose in-memory log holds `entries`, committed up to `commit`.
    fn node_with_log(id: u64, entries: &[Entry], commit: u64) -> Node {
        let mut node = Node::new(id, 3, ELECTION_TICKS);
        node.raw.raft.raft_log.append(entries);
        node.raw.raft.raft_log.commit_to(commit);
        node
    }

    #[test]
    fn diverged_tails_under_a_matching_term_are_caught() {
        let a = node_with_log(1, &[entry(1, 1, b"x"), entry(2, 2, b"y")], 0);
        let b = node_with_log(2, &[entry(1, 3, b"x"), entry(2, 2, b"y")], 0);
        let err = check_log_matching(&[a, b]).unwrap_err();
        assert_eq!(
            err,
            Violation::LogMismatch {
                a: 1,
                b: 2,
                index: 1
            }
        );
    }

    #[test]
    fn tails_that_differ_only_above_the_match_pass() {
        let a = node_with_log(1, &[entry(1, 1, b"x"), entry(2, 2, b"y")], 0);
        let b = node_with_log(2, &[entry(1, 1, b"x"), entry(2, 3, b"z")], 0);
        check_log_matching(&[a, b]).unwrap();
    }

    #[test]
    fn a_changed_committed_entry_is_caught() {
        let mut checker = Checker::default();
        let a = node_with_log(1, &[entry(1, 1, b"x")], 1);
        let b = node_with_log(2, &[entry(1, 1, b"z")], 1);
        checker.check_committed(&a).unwrap();
        let err = checker.check_committed(&b).unwrap_err();
        assert_eq!(err, Violation::CommittedChanged { node: 2, index: 1 });
    }
}
