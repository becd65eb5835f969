//! The write-ahead log.
pub mod lock;
pub mod record;
pub mod wal;
