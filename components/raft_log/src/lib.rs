//! raft_log
