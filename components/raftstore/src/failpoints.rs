//! Failpoints (the `fail` crate) at the raftstore's crash windows. They are compiled out unless
//! the `failpoints` feature is on, and are exercised by `test_cluster`'s `failpoints` test binary.
//!
//! Every point is evaluated twice: under its plain name (`raft_log_before_write`), which every
//! store of the process hits, and under `name@<store_id>` (`raft_log_before_write@2`), which
//! lets a test that runs several stores in one process crash or pause one of them.
//!
//! | name | where | actions |
//! |---|---|---|
//! | `poller_before_tick` | poller, before a round's tick (`pause` stops the store's raft work, as a paused process would; its gRPC threads go on) | panic, sleep, pause |
//! | `raft_log_before_write` | poller, before the round's raft-log batch is written | panic, sleep, pause |
//! | `raft_log_after_write` | poller, after the batch is written and synced, before any message that follows persistence is sent | panic, sleep, pause |
//! | `apply_before_write` | apply thread, before a round's engine batch is written | panic, sleep, pause |
//! | `apply_after_write` | apply thread, after the engine batch, before clients are answered | panic, sleep, pause |
//! | `split_before_apply` | apply thread, when a `BatchSplit` entry starts applying | panic, sleep, pause |
//! | `split_after_apply` | apply thread, after the batch holding a split is written, before the poller creates the new peers | panic, sleep, pause |
//! | `snapshot_generate` | a leader building a snapshot (`return`: not available now, raft-rs retries) | panic, return, sleep, pause |
//! | `snapshot_before_send` | a leader handing a snapshot message to the transport (`return`: dropped and reported failed) | panic, return, sleep, pause |
//! | `snapshot_before_apply` | apply thread, before a received snapshot's data is written | panic, sleep, pause |
//! | `snapshot_after_apply` | apply thread, after the snapshot's data is written, before the raft log records it | panic, sleep, pause |
//!
//! `return` on a point that has no early exit panics (the `fail` crate's rule).

/// Evaluates failpoint `$name` and its store-scoped twin `$name@<store id>`. With a closure,
/// `return` makes the enclosing function return the closure's value.
macro_rules! fail_point_at {
    ($store_id:expr, $name:literal) => {{
        fail::fail_point!($name);
        fail::fail_point!(&format!(concat!($name, "@{}"), $store_id));
    }};
    ($store_id:expr, $name:literal, $e:expr) => {{
        fail::fail_point!($name, $e);
        fail::fail_point!(&format!(concat!($name, "@{}"), $store_id), $e);
    }};
}
