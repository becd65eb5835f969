//! The write-ahead log: raft entries and hard state, group-committed to pre-zeroed segment
//! files with O_DIRECT writes, recovered on start-up.
//!
//! - [`record`]: the record format, CRC, segment scanning, the torn-versus-corrupt rule and
//!   replay into raft state. Sans-IO.
//! - [`wal`]: the glommio shell: segment files, the group-commit writer task, recovery I/O, and
//!   the start-up io_uring probe.
//! - [`lock`]: the exclusive data dir lock.
//! - [`durable`]: directories created and entries renamed so that they survive a power cut.
//! - [`snapshots`]: snapshot files (write, list, load with fallback, purge).
//!
//! Typical use by the consensus driver, on one glommio executor:
//!
//! ```text
//! probe_io_uring()?;                          // before starting executors
//! let _lock = DataDirLock::acquire(data_dir)?;
//! let (wal, recovery) = Wal::open(&data_dir.join("log"), WalOptions::default()).await?;
//! // rebuild raft storage from recovery.entries / recovery.hard_state
//! let ticket = wal.submit(&[LogRecord::Entry { index, term, data }, LogRecord::HardState { .. }]);
//! wal.wait_durable(ticket).await?;           // then on_persist_ready / send persisted msgs
//! ```

pub mod durable;
pub mod lock;
pub mod record;
pub mod snapshots;
pub mod wal;

pub use lock::{DataDirLock, LockError};
pub use record::{EncodeError, LogRecord, RecoveredEntry};
pub use wal::{dma_probe, probe_io_uring, Recovery, SyncMode, Wal, WalError, WalOptions, WalStats};
