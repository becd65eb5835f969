//! The ZooKeeper wire protocol: jute encoding, frames, requests and replies. No I/O.

pub mod frame;
pub mod jute;
pub mod path;
pub mod peer;
pub mod peer_auth;
pub mod raft_wire;
pub mod records;
pub mod types;
