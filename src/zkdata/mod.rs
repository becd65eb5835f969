//! A reader of Apache ZooKeeper's on-disk data (the `version-2` directory), for
//! `ringkeeper import --zookeeper-data-dir DIR`.
//!
//! ZooKeeper persists a *fuzzy* snapshot (`snapshot.<zxid>`: sessions, the ACL cache and every
//! znode, written while writes go on) plus transaction logs (`log.<zxid>`: one record per
//! txn). What a server serves after a restart is: the newest snapshot that passes its
//! checksum, with every logged txn after the snapshot's zxid replayed on top, tolerating the
//! NodeExists/NoNode errors the fuzziness causes. This module does exactly that, mirroring
//! ZooKeeper 3.8's `FileSnap`, `FileTxnLog`, `SerializeUtils` and `DataTree`.
//!
//! The parsers ([`parse_snapshot`], [`parse_txn_log`]) and the replay ([`ZkReplay`]) work on
//! byte slices and values only; [`load_dir`] is the thin I/O shell that lists and reads the
//! files and names them in errors.
//!
//! Limits: files are read whole into memory (a snapshot is as large as the tree); compressed
//! (`.gz`, `.snappy`) snapshots are refused with a clear error rather than decoded.

mod replay;
mod snap;
mod txnlog;

#[cfg(test)]
mod tests;

use std::fs;
use std::path::{Path, PathBuf};

use crate::proto::jute::DecodeError;
use crate::proto::types::{Acl, Stat};
use crate::tree::NodeKind;

pub use replay::{ReplayError, ReplayStats, ZkReplay};
pub use snap::{parse_snapshot, ParsedSnapshot, PersistedStat, SnapDigest, SnapNode};
pub use txnlog::{
    parse_txn_log, parse_txn_log_full, CreateTxn, LogEnd, MultiOp, ParsedTxnLog, RecordProblem,
    TxnBody, TxnDigest, ZkTxn,
};

/// `FileHeader.magic` of a snapshot: "ZKSN".
pub const SNAP_MAGIC: i32 = i32::from_be_bytes(*b"ZKSN");
/// `FileHeader.magic` of a txn log: "ZKLG".
pub const LOG_MAGIC: i32 = i32::from_be_bytes(*b"ZKLG");
/// The only `FileHeader.version` ZooKeeper has ever written.
pub const FILE_VERSION: i32 = 2;

/// Everything ZooKeeper would serve after restarting on the directory.
#[derive(Clone, Debug, PartialEq)]
pub struct ZkImage {
    /// The zxid of the last transaction applied (snapshot zxid or the last txn replayed).
    pub last_zxid: i64,
    /// Every znode including "/" and the /zookeeper subtree, sorted by path (so a parent
    /// comes before its children).
    pub nodes: Vec<ZkNode>,
    /// Live sessions at last_zxid, sorted by id.
    pub sessions: Vec<ZkSession>,
    /// Which files were used (for the import report): snapshot file name + txn log file names.
    pub sources: Vec<String>,
    pub txns_replayed: u64,
    /// The zxid in the name of the snapshot the image starts from.
    pub snapshot_zxid: i64,
    /// Things an operator should hear about that did not stop the import: snapshots skipped
    /// as invalid, torn log tails, replay errors ZooKeeper itself ignores.
    pub warnings: Vec<String>,
}

/// One znode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZkNode {
    /// "/" for the root, "/a/b" otherwise.
    pub path: String,
    /// Null vs empty kept distinct as ZooKeeper does.
    pub data: Option<Vec<u8>>,
    pub acl: Vec<Acl>,
    /// As ZooKeeper reports it to a client: cversion = 2 × creations − numChildren,
    /// numChildren from the tree, dataLength from the data, and ephemeralOwner 0 for
    /// containers and TTL nodes (ZooKeeper hides their stored markers; see `kind`).
    pub stat: Stat,
    /// Container or TTL (with its ttl in ms), decoded from the stored ephemeralOwner marker;
    /// `Normal` for persistent and ephemeral nodes (`stat.ephemeral_owner` tells those apart).
    pub kind: NodeKind,
    /// The stored cversion: children ever created here (the next sequential suffix).
    pub creations: i32,
}

/// A session as the snapshot and the log know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ZkSession {
    pub id: i64,
    pub timeout_ms: i32,
}

/// Why bytes are not a valid ZooKeeper file; `offset` is from the start of the file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("at byte {offset}: {reason}")]
pub struct FormatError {
    pub offset: u64,
    pub reason: FormatReason,
}

impl FormatError {
    pub(crate) fn new(offset: usize, reason: impl Into<FormatReason>) -> Self {
        FormatError {
            offset: offset as u64,
            reason: reason.into(),
        }
    }
}

/// What is wrong at a [`FormatError`]'s offset.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatReason {
    #[error("{0}")]
    Decode(#[from] DecodeError),
    #[error("magic {found:#010x} is not {expected:?}")]
    BadMagic { expected: &'static str, found: i32 },
    #[error("file format version {0}, but ZooKeeper only writes version 2")]
    BadVersion(i32),
    #[error("does not end with the \"/\" that seals a complete snapshot (cut short?)")]
    Unsealed,
    #[error("checksum mismatch: stored {stored:#x}, computed {computed:#x}")]
    Checksum { stored: u64, computed: u64 },
    #[error("count {count} does not fit in the {remaining} bytes left")]
    BadCount { count: i32, remaining: usize },
    #[error("ACL list {0} is null")]
    NullAclList(i64),
    #[error("node path {0:?} is not a valid znode path")]
    BadPath(String),
    #[error("the first node is {0:?}, not the root")]
    NoRoot(String),
    #[error("node {0:?} comes before its parent")]
    Orphan(String),
    #[error("node {0:?} appears twice")]
    Duplicate(String),
    #[error("snapshot digest {0:?} is not hexadecimal")]
    BadDigest(String),
    #[error("node {path:?} refers to ACL list {id}, which the snapshot does not hold")]
    UnknownAcl { path: String, id: i64 },
    #[error("unknown txn type {0}")]
    UnknownTxnType(i32),
    #[error("{problem}, yet an intact record follows at byte {next_intact}: the log is corrupt, not torn")]
    CorruptRecord {
        problem: RecordProblem,
        next_intact: u64,
    },
}

/// Why [`load_dir`] failed. Every corrupt input is named by file and byte offset.
#[derive(Debug, thiserror::Error)]
pub enum ZkDataError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a ZooKeeper data directory (no version-2 directory, snapshots or logs)", .0.display())]
    NotADataDir(PathBuf),
    #[error("{}: corrupt at byte {offset}: {reason}", file.display())]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: FormatReason,
    },
    #[error(
        "{}: {method}-compressed snapshots are not supported; decompress it (same name without \
         the .{method} suffix) or let ZooKeeper write a plain one (zookeeper.snapshot.compression.method unset)",
        file.display()
    )]
    CompressedSnapshot { file: PathBuf, method: &'static str },
    #[error("{}: no snapshot file{}", dir.display(), if *.logs_present {
        "; ZooKeeper itself refuses to start from txn logs alone"
    } else {
        ""
    })]
    NoSnapshot { dir: PathBuf, logs_present: bool },
    #[error("{}: no valid snapshot: {}", dir.display(), rejected.join("; "))]
    NoValidSnapshot { dir: PathBuf, rejected: Vec<String> },
    #[error(
        "{}: at byte {offset}: txn {found:#x} follows {after:#x} in the same epoch; the txns \
         between are missing (a log file lost?)",
        file.display()
    )]
    ZxidGap {
        file: PathBuf,
        offset: u64,
        after: i64,
        found: i64,
    },
    #[error("{}: at byte {offset}: cannot replay txn {zxid:#x}: {reason}", file.display())]
    Replay {
        file: PathBuf,
        offset: u64,
        zxid: i64,
        reason: ReplayError,
    },
}

/// Adler-32 as `java.util.zip.Adler32` computes it: ZooKeeper's checksum for snapshots and
/// log records. Implemented here (it is a few lines) rather than pulling in a crate.
pub fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    // 5552 is the longest run for which the sums cannot overflow a u32 before reduction.
    const RUN: usize = 5552;
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(RUN) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

/// How a snapshot file is encoded, from its name (ZooKeeper's `SnapStream.getStreamMode`:
/// the last dot-separated part, case-insensitive; anything else is a plain checked stream).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapCompression {
    Plain,
    Gzip,
    Snappy,
}

/// The zxid in `snapshot.<hex>[.<suffix>]` and how the file is compressed; `None` for any
/// other name (ZooKeeper's `Util.getZxidFromName` ignores those too).
pub fn snapshot_name_zxid(name: &str) -> Option<(i64, SnapCompression)> {
    let mut parts = name.split('.');
    if parts.next()? != "snapshot" {
        return None;
    }
    let zxid = parse_hex_zxid(parts.next()?)?;
    let compression = match parts.next_back() {
        Some(ext) if ext.eq_ignore_ascii_case("gz") => SnapCompression::Gzip,
        Some(ext) if ext.eq_ignore_ascii_case("snappy") => SnapCompression::Snappy,
        _ => SnapCompression::Plain,
    };
    Some((zxid, compression))
}

/// The zxid of the first txn a `log.<hex>` file was created for.
pub fn log_name_zxid(name: &str) -> Option<i64> {
    let mut parts = name.split('.');
    if parts.next()? != "log" {
        return None;
    }
    parse_hex_zxid(parts.next()?)
}

fn parse_hex_zxid(s: &str) -> Option<i64> {
    // from_str_radix would also take a sign; ZooKeeper only ever writes bare hex digits
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    i64::from_str_radix(s, 16).ok()
}

/// Reads DIR (either a ZooKeeper dataDir containing `version-2/`, or the `version-2` dir
/// itself; also accept a separate dataLogDir via the second arg), picks the newest snapshot
/// whose checksum is valid (falling back to older ones), replays every valid txn after it
/// from the txn logs, and returns the image.
pub fn load_dir(data_dir: &Path, log_dir: Option<&Path>) -> Result<ZkImage, ZkDataError> {
    let snap_dir = version2_dir(data_dir)?;
    let log_dir = match log_dir {
        Some(d) => version2_dir(d)?,
        None => snap_dir.clone(),
    };
    let mut snaps: Vec<(i64, SnapCompression, String)> = list_dir(&snap_dir)?
        .into_iter()
        .filter_map(|n| snapshot_name_zxid(&n).map(|(z, c)| (z, c, n)))
        .collect();
    // newest first; of two files for one zxid, the plainly named one first
    snaps.sort_by(|a, b| b.0.cmp(&a.0).then(a.2.len().cmp(&b.2.len())));
    let mut logs: Vec<(i64, String)> = list_dir(&log_dir)?
        .into_iter()
        .filter_map(|n| log_name_zxid(&n).map(|z| (z, n)))
        .collect();
    logs.sort();
    if snaps.is_empty() {
        return Err(ZkDataError::NoSnapshot {
            dir: snap_dir,
            logs_present: !logs.is_empty(),
        });
    }

    let mut warnings = Vec::new();
    let mut rejected = Vec::new();
    for (snap_zxid, compression, name) in &snaps {
        let path = snap_dir.join(name);
        let method = match compression {
            SnapCompression::Plain => None,
            SnapCompression::Gzip => Some("gz"),
            SnapCompression::Snappy => Some("snappy"),
        };
        if let Some(method) = method {
            return Err(ZkDataError::CompressedSnapshot { file: path, method });
        }
        let bytes = read_file(&path)?;
        // a snapshot whose tree cannot be built (no root) is as unusable as a bad checksum
        let tree = parse_snapshot(&bytes).and_then(|p| ZkReplay::new(&p, *snap_zxid));
        drop(bytes);
        let replay = match tree {
            Ok(r) => r,
            Err(e) => {
                // ZooKeeper (FileSnap.deserialize) falls back to the next older snapshot
                let why = format!("{name} skipped: {e}");
                warnings.push(why.clone());
                rejected.push(why);
                continue;
            }
        };
        return replay_logs(replay, &path, *snap_zxid, &log_dir, &logs, warnings);
    }
    Err(ZkDataError::NoValidSnapshot {
        dir: snap_dir,
        rejected,
    })
}

/// Replays, in order, every txn after `snap_zxid` from the log files that can hold one
/// (ZooKeeper's `FileTxnLog.getLogFiles`: the newest log starting at or before the snapshot,
/// and all later ones), then finishes the image.
fn replay_logs(
    mut replay: ZkReplay,
    snap_path: &Path,
    snap_zxid: i64,
    log_dir: &Path,
    logs: &[(i64, String)],
    mut warnings: Vec<String>,
) -> Result<ZkImage, ZkDataError> {
    let mut sources = vec![file_name(snap_path)];
    let first = logs
        .iter()
        .map(|(z, _)| *z)
        .filter(|z| *z <= snap_zxid)
        .max()
        .unwrap_or(i64::MIN);
    let mut prev = snap_zxid;
    let mut replayed = 0u64;
    for (_, name) in logs.iter().filter(|(z, _)| *z >= first) {
        let path = log_dir.join(name);
        let bytes = read_file(&path)?;
        let log = parse_txn_log_full(&bytes).map_err(|e| corrupt(&path, e.offset, e.reason))?;
        drop(bytes);
        match &log.end {
            LogEnd::Eof | LogEnd::Padding { .. } => {}
            LogEnd::Torn { offset, problem } => warnings.push(format!(
                "{name}: torn record at byte {offset} ({problem}) ignored, as ZooKeeper does after a crash"
            )),
        }
        let mut used = false;
        for txn in &log.txns {
            if txn.zxid <= snap_zxid {
                continue;
            }
            if txn.zxid <= prev {
                // ZooKeeper logs this and applies the txn anyway; so do we
                warnings.push(format!(
                    "{name}: at byte {}: txn {:#x} does not follow {prev:#x}",
                    txn.offset, txn.zxid
                ));
            } else if txn.zxid >> 32 == prev >> 32 && txn.zxid != prev.wrapping_add(1) {
                return Err(ZkDataError::ZxidGap {
                    file: path,
                    offset: txn.offset,
                    after: prev,
                    found: txn.zxid,
                });
            }
            replay.apply(txn).map_err(|reason| ZkDataError::Replay {
                file: path.clone(),
                offset: txn.offset,
                zxid: txn.zxid,
                reason,
            })?;
            prev = prev.max(txn.zxid);
            replayed += 1;
            used = true;
        }
        if used {
            sources.push(name.clone());
        }
    }
    let stats = replay.stats();
    if stats.failed_ops > 0 {
        warnings.push(format!(
            "{} replayed operations failed (NodeExists/NoNode) and were skipped, as ZooKeeper \
             does for the txns a fuzzy snapshot already holds",
            stats.failed_ops
        ));
    }
    if stats.multi_aborted > 0 {
        warnings.push(format!(
            "{} multi txns held an operation ZooKeeper 3.8 cannot apply inside a multi; their \
             remaining operations were skipped, as ZooKeeper does",
            stats.multi_aborted
        ));
    }
    let done = replay
        .finish()
        .map_err(|e| corrupt(snap_path, e.offset, e.reason))?;
    warnings.extend(done.warnings);
    Ok(ZkImage {
        last_zxid: done.last_zxid,
        nodes: done.nodes,
        sessions: done.sessions,
        sources,
        txns_replayed: replayed,
        snapshot_zxid: snap_zxid,
        warnings,
    })
}

fn corrupt(file: &Path, offset: u64, reason: FormatReason) -> ZkDataError {
    ZkDataError::Corrupt {
        file: file.to_path_buf(),
        offset,
        reason,
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read_file(path: &Path) -> Result<Vec<u8>, ZkDataError> {
    fs::read(path).map_err(|source| ZkDataError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The names of the plain files in `dir` (names that are not UTF-8 cannot be ZooKeeper's).
fn list_dir(dir: &Path) -> Result<Vec<String>, ZkDataError> {
    let io = |source| ZkDataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.file_type().map_err(io)?.is_dir() {
            continue;
        }
        if let Ok(name) = entry.file_name().into_string() {
            out.push(name);
        }
    }
    Ok(out)
}

/// `DIR/version-2` if there is one, else DIR itself when it is a `version-2` directory or
/// holds ZooKeeper files.
fn version2_dir(dir: &Path) -> Result<PathBuf, ZkDataError> {
    let v2 = dir.join("version-2");
    if v2.is_dir() {
        return Ok(v2);
    }
    let names = list_dir(dir)?;
    let is_v2 = dir.file_name().is_some_and(|n| n == "version-2");
    let has_files = names
        .iter()
        .any(|n| snapshot_name_zxid(n).is_some() || log_name_zxid(n).is_some());
    if is_v2 || has_files {
        Ok(dir.to_path_buf())
    } else {
        Err(ZkDataError::NotADataDir(dir.to_path_buf()))
    }
}
