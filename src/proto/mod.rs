//! The ZooKeeper wire protocol: jute encoding, frames, requests and replies. No I/O.

pub mod frame;
pub mod jute;
pub mod path;
pub mod records;
pub mod types;
