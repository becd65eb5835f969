//! ringkeeper: a ZooKeeper-compatible coordination service.
//!
//! See `docs/ARCHITECTURE.md` for the map. The sans-IO core (`proto`, `txn`, `tree`,
//! `machine`, `session`, `watch`, `consensus`, `reconfig`, `digest`,
//! `log::record`) never touches glommio, sockets,
//! files or clocks; the shell (`server`, `log::wal`, `main.rs`) does all I/O around it.

pub mod admin;
pub mod bench;
pub mod client;
pub mod config;
pub mod consensus;
pub mod digest;
pub mod import;
pub mod inspect;
pub mod log;
pub mod machine;
pub mod peer_proto;
pub mod proto;
pub mod raft_guard;
pub mod reconfig;
pub mod replica;
pub mod server;
pub mod session;
pub mod snapshot;
pub mod tree;
pub mod txn;
pub mod watch;
pub mod zkdata;
