//! Pure checks of what a store receives over the wire, before anything is read or written:
//! client requests (`kvrpcpb`) against the request limits and the API V2 key modes
//! ([`request`]), and store-to-store raft messages against what the receiving store can
//! safely step ([`raft_message`]).
//!
//! Key types: [`Limits`] and [`CheckRequest`] (one impl per request type the store serves),
//! [`RequestError`]; [`check_raft_message`], [`check_store_keepalive`] (the envelope a store
//! sends to say it is alive while shared regions hibernate) and [`RaftMessageError`].
//!
//! Flow: the server's `tikvpb.Tikv` service calls [`CheckRequest::check`] on every decoded
//! request and answers a failure in the response's error; the raft poller calls
//! [`check_raft_message`] on every message from another store and drops a failure. The fuzz
//! targets in `fuzz/` drive both with arbitrary bytes.
//!
//! Every function here is total: malformed input gives a typed error, never a panic.
//! Must not depend on RocksDB, raft-engine, tonic or any store crate: only `proto`, `codec`
//! and raft-rs's message types.
#![deny(missing_docs)]

pub mod raft_message;
pub mod request;

pub use raft_message::{check_raft_message, check_store_keepalive, RaftMessageError};
pub use request::{CheckRequest, KeyMode, Limits, RequestError};
