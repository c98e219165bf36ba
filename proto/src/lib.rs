//! Flotilla's wire types: the subset of TiKV's kvproto that Flotilla implements (`metapb`,
//! `errorpb`, `pdpb`, `keyspacepb`, `kvrpcpb`, `tikvpb`, and the `ConfChangeType` of
//! `eraftpb`), plus Flotilla's own store-to-store and on-disk messages (`flotillapb`).
//!
//! The `.proto` files live in `proto/proto/` and are compiled at build time by protox and
//! tonic-prost-build, so no system `protoc` is needed. Message names and field numbers follow
//! the protocol so that the official client interoperates; everything else is ours.
//!
//! Hand-written next to them: [`epoch`], the one rule for comparing region epochs, which the
//! store and PD share.
//!
//! This crate depends on nothing of Flotilla's. Only `pd`, `pd_client` and `server` use its
//! gRPC services; the other crates use its messages.
#![allow(missing_docs, clippy::all)]

macro_rules! include_pkg {
    ($name:ident) => {
        pub mod $name {
            include!(concat!(env!("OUT_DIR"), "/", stringify!($name), ".rs"));
        }
    };
}

include_pkg!(metapb);
include_pkg!(errorpb);
include_pkg!(eraftpb);
include_pkg!(pdpb);
include_pkg!(keyspacepb);
include_pkg!(kvrpcpb);
include_pkg!(tikvpb);
include_pkg!(flotillapb);

pub mod epoch;

pub use prost::Message;
