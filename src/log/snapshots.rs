//! Snapshot files: `<data_dir>/snap/<index, 20 digits>.snap`, the format of `crate::snapshot`.
//!
//! Writing goes to `<name>.snap.tmp`, is fsynced, renamed into place and the directory fsynced,
//! so a crash leaves either the whole file or a temporary one that the next start removes.
//! These functions block: the sequencer runs `write` on a thread of its own (a million znodes
//! take a few hundred ms to serialize, which no shard may spend) and the loads happen before
//! serving starts.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::durable;
use crate::machine::{Machine, MachineConfig, View};
use crate::snapshot::{self, Meta, SnapshotError, Summary};

const SUFFIX: &str = ".snap";
const TMP_SUFFIX: &str = ".snap.tmp";
/// Snapshot files above this size are refused (corrupt metadata must not make us allocate).
pub const MAX_FILE_BYTES: u64 = 64 << 30;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("snapshot I/O error ({op} {}): {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("snapshot {}: {source}", path.display())]
    Bad {
        path: PathBuf,
        source: SnapshotError,
    },
}

impl SnapshotFileError {
    /// True when the disk (or quota) is full: worth trying again later.
    pub fn is_no_space(&self) -> bool {
        let source = match self {
            SnapshotFileError::Io { source, .. } => Some(source),
            SnapshotFileError::Bad {
                source: SnapshotError::Sink(e),
                ..
            } => Some(e),
            SnapshotFileError::Bad { .. } => None,
        };
        source.and_then(|e| e.raw_os_error()) == Some(libc::ENOSPC)
            || source.and_then(|e| e.raw_os_error()) == Some(libc::EDQUOT)
    }
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotFileError {
    let path = path.to_path_buf();
    move |source| SnapshotFileError::Io { op, path, source }
}

/// Where snapshots live.
pub fn dir_of(data_dir: &Path) -> PathBuf {
    data_dir.join("snap")
}

pub fn path_of(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("{index:020}{SUFFIX}"))
}

/// Snapshot files in `dir`, oldest (lowest index) first. Temporary files of an interrupted
/// write are removed. A missing directory has none.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, SnapshotFileError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("list", dir)(e)),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(io("list", dir))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(TMP_SUFFIX) {
            let p = ent.path();
            tracing::info!(file = %p.display(), "removing an unfinished snapshot");
            std::fs::remove_file(&p).map_err(io("remove", &p))?;
            continue;
        }
        let Some(stem) = name.strip_suffix(SUFFIX) else {
            continue;
        };
        if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(index) = stem.parse::<u64>() {
                out.push((index, ent.path()));
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Writes the snapshot of `view` (the state at `meta.index`) durably. Blocking.
pub fn write(
    dir: &Path,
    view: &View,
    meta: &Meta,
) -> Result<(PathBuf, Summary), SnapshotFileError> {
    write_file(dir, meta.index, |out, tmp| {
        snapshot::encode(view, meta, &mut |b| out.write_all(b)).map_err(|source| {
            SnapshotFileError::Bad {
                path: tmp.to_path_buf(),
                source,
            }
        })
    })
}

/// Stores, durably and as it is, a snapshot at `index` received from the leader (the caller
/// has decoded it, so it is known to be whole). Blocking.
pub fn write_received(dir: &Path, index: u64, bytes: &[u8]) -> Result<PathBuf, SnapshotFileError> {
    write_file(dir, index, |out, tmp| {
        out.write_all(bytes).map_err(io("write", tmp))
    })
    .map(|(path, ())| path)
}

/// Writes `<index>.snap` through a temporary file: body, fsync, rename, directory fsync.
fn write_file<T>(
    dir: &Path,
    index: u64,
    body: impl FnOnce(&mut std::io::BufWriter<std::fs::File>, &Path) -> Result<T, SnapshotFileError>,
) -> Result<(PathBuf, T), SnapshotFileError> {
    durable::create_dir_all(dir).map_err(io("create dir", dir))?;
    let path = path_of(dir, index);
    let tmp = dir.join(format!("{index:020}{TMP_SUFFIX}"));
    let result = (|| {
        let file = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let value = body(&mut out, &tmp)?;
        let file = out
            .into_inner()
            .map_err(|e| io("write", &tmp)(e.into_error()))?;
        file.sync_all().map_err(io("fsync", &tmp))?;
        drop(file);
        durable::rename(&tmp, &path).map_err(io("rename", &tmp))?;
        Ok(value)
    })();
    match result {
        Ok(value) => Ok((path, value)),
        Err(e) => {
            // Never leave a partial file behind (it would only be removed at the next start,
            // and on a full disk its space is what the log needs).
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), SnapshotFileError> {
    durable::sync_dir(dir).map_err(io("fsync dir", dir))
}

/// Reads and decodes one snapshot file.
pub fn load(path: &Path, config: MachineConfig) -> Result<(Meta, Machine), SnapshotFileError> {
    let bytes = read(path)?;
    snapshot::decode(&bytes, config).map_err(|source| SnapshotFileError::Bad {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a snapshot file whole (bounded by `MAX_FILE_BYTES`).
pub fn read(path: &Path) -> Result<Vec<u8>, SnapshotFileError> {
    let len = std::fs::metadata(path).map_err(io("stat", path))?.len();
    if len > MAX_FILE_BYTES {
        return Err(SnapshotFileError::Bad {
            path: path.to_path_buf(),
            source: SnapshotError::Corrupt {
                offset: 0,
                reason: format!("{len} bytes is more than any snapshot"),
            },
        });
    }
    std::fs::read(path).map_err(io("read", path))
}

/// The newest snapshot that loads (see [`load_newest`]).
pub struct Loaded {
    pub meta: Meta,
    pub machine: Machine,
    pub path: PathBuf,
}

/// Tries the snapshots newest first: a bad one is reported and the one before it tried (the
/// log is kept back to the oldest retained snapshot for exactly this). Returns the one that
/// loaded, if any, and the errors of those that did not.
pub fn load_newest(
    dir: &Path,
    config: &MachineConfig,
) -> Result<(Option<Loaded>, Vec<SnapshotFileError>), SnapshotFileError> {
    let mut skipped = Vec::new();
    for (_, path) in list(dir)?.into_iter().rev() {
        match load(&path, config.clone()) {
            Ok((meta, machine)) => {
                let loaded = Loaded {
                    meta,
                    machine,
                    path,
                };
                return Ok((Some(loaded), skipped));
            }
            Err(e @ SnapshotFileError::Bad { .. }) => {
                tracing::error!("{e}; trying the snapshot before it");
                skipped.push(e);
            }
            Err(e) => return Err(e),
        }
    }
    Ok((None, skipped))
}

/// Removes all but the newest `keep` snapshots; returns the indexes of those kept, oldest
/// first.
pub fn purge(dir: &Path, keep: usize) -> Result<Vec<u64>, SnapshotFileError> {
    let all = list(dir)?;
    let cut = all.len().saturating_sub(keep.max(1));
    for (_, path) in &all[..cut] {
        std::fs::remove_file(path).map_err(io("remove", path))?;
    }
    if cut > 0 {
        sync_dir(dir)?;
    }
    Ok(all[cut..].iter().map(|(index, _)| *index).collect())
}
