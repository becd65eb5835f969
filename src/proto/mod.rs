//! The ZooKeeper wire protocol: jute encoding, frames, requests and replies. No I/O.

pub mod path;
pub mod types;
