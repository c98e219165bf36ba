//! [`TxnError`]: why a transactional request, or one key of it, failed.

use txn_types::{LockInfo, TimeStamp};

use crate::StorageError;

/// Why a write conflicted (kvproto's `WriteConflict.Reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteConflictReason {
    /// An optimistic prewrite met a commit newer than its start ts.
    Optimistic,
    /// A pessimistic lock met a commit newer than its for_update_ts: retry with a newer one.
    PessimisticRetry,
    /// The transaction's own rollback record is already there.
    SelfRolledBack,
    /// A read-committed check failed.
    RcCheckTs,
    /// A deferred uniqueness check of a pessimistic transaction met a newer commit.
    LazyUniquenessCheck,
    /// A key of a pessimistic transaction that was not locked met a newer commit.
    NotLockedKeyConflict,
}

/// Errors of the transactional actions. Keys are raw client keys. Per-key errors (locked,
/// conflict, exists...) become `KeyError`s of the response; nothing is written when an action
/// returns one as a request-level error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    /// The key is locked by another transaction.
    #[error("key is locked by txn {}", .0.lock_version)]
    KeyIsLocked(Box<LockInfo>),
    /// A newer write conflicts with this transaction.
    #[error("write conflict on {key:?}: txn {start_ts} vs {conflict_start_ts}@{conflict_commit_ts} ({reason:?})")]
    WriteConflict {
        /// This transaction's start ts.
        start_ts: TimeStamp,
        /// Start ts of the conflicting transaction.
        conflict_start_ts: TimeStamp,
        /// Commit ts of the conflicting write.
        conflict_commit_ts: TimeStamp,
        /// The key.
        key: Vec<u8>,
        /// This transaction's primary key.
        primary: Vec<u8>,
        /// Why it conflicts.
        reason: WriteConflictReason,
    },
    /// An insert met an existing value.
    #[error("key {key:?} already exists")]
    AlreadyExist {
        /// The key.
        key: Vec<u8>,
    },
    /// Neither a lock nor a commit record of the transaction is on its primary.
    #[error("txn {start_ts} not found on {key:?}")]
    TxnNotFound {
        /// The transaction's start ts.
        start_ts: TimeStamp,
        /// The primary key.
        key: Vec<u8>,
    },
    /// A commit found neither the transaction's lock nor its commit record.
    #[error("lock of txn {start_ts} not found on {key:?} (commit at {commit_ts})")]
    TxnLockNotFound {
        /// The transaction's start ts.
        start_ts: TimeStamp,
        /// The attempted commit ts.
        commit_ts: TimeStamp,
        /// The key.
        key: Vec<u8>,
    },
    /// The commit ts is below the lock's min_commit_ts: retry with a newer one.
    #[error(
        "commit ts {commit_ts} of txn {start_ts} below min_commit_ts {min_commit_ts} on {key:?}"
    )]
    CommitTsExpired {
        /// The transaction's start ts.
        start_ts: TimeStamp,
        /// The attempted commit ts.
        commit_ts: TimeStamp,
        /// The key.
        key: Vec<u8>,
        /// The lock's min_commit_ts.
        min_commit_ts: TimeStamp,
    },
    /// A pessimistic prewrite found no pessimistic lock of the transaction.
    #[error("pessimistic lock of txn {start_ts} not found on {key:?}")]
    PessimisticLockNotFound {
        /// The transaction's start ts.
        start_ts: TimeStamp,
        /// The key.
        key: Vec<u8>,
    },
    /// The transaction was rolled back on this key before its pessimistic lock arrived.
    #[error("txn {start_ts} already rolled back on {key:?}")]
    PessimisticLockRolledBack {
        /// The transaction's start ts.
        start_ts: TimeStamp,
        /// The key.
        key: Vec<u8>,
    },
    /// A rollback met the transaction's commit record.
    #[error("txn {start_ts} already committed at {commit_ts} on {key:?}")]
    Committed {
        /// The transaction's start ts.
        start_ts: TimeStamp,
        /// Its commit ts.
        commit_ts: TimeStamp,
        /// The key.
        key: Vec<u8>,
    },
    /// The async-commit/1PC commit ts would exceed the caller's bound.
    #[error(
        "min_commit_ts {min_commit_ts} of txn {start_ts} exceeds max_commit_ts {max_commit_ts}"
    )]
    CommitTsTooLarge {
        /// The transaction's start ts.
        start_ts: TimeStamp,
        /// The commit ts that would be needed.
        min_commit_ts: TimeStamp,
        /// The caller's bound.
        max_commit_ts: TimeStamp,
    },
    /// Reading or decoding the store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The request is malformed (empty primary, zero ts, commit ts not after start ts...).
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl From<engine::EngineError> for TxnError {
    fn from(e: engine::EngineError) -> Self {
        TxnError::Storage(e.into())
    }
}

impl From<codec::CodecError> for TxnError {
    fn from(e: codec::CodecError) -> Self {
        TxnError::Storage(e.into())
    }
}

impl From<txn_types::Error> for TxnError {
    fn from(e: txn_types::Error) -> Self {
        TxnError::Storage(StorageError::Corrupt(e.to_string()))
    }
}

/// Result alias of the transactional actions.
pub type TxnResult<T> = std::result::Result<T, TxnError>;
