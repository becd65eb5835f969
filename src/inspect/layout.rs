//! Where a data dir keeps its log and snapshots, and read-only listing and reading of their
//! files (the server's own helpers tidy up as they list, which a tool must not).

use std::io::Read;
use std::path::{Path, PathBuf};

use rkyv::util::AlignedVec;

use super::InspectError;
use crate::log::snapshots;

/// The WAL never makes a segment larger than this (`wal::MAX_SEGMENT_BYTES`); a bigger file
/// is refused rather than read into memory.
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;
/// At most this many files of one kind are listed (the WAL's own limit on segments).
const MAX_FILES: usize = 1 << 20;
const SEGMENT_SUFFIX: &str = ".seg";
const SNAPSHOT_SUFFIX: &str = ".snap";

/// The two dirs of a data dir.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataDir {
    pub log: PathBuf,
    pub snap: PathBuf,
}

/// `dir` is a data dir (with `log/` or `snap/` in it), or the log dir itself (with `.seg`
/// files; snapshots are then looked for in `../snap`).
pub fn resolve(dir: &Path) -> Result<DataDir, InspectError> {
    let meta = std::fs::metadata(dir).map_err(InspectError::io(dir))?;
    if !meta.is_dir() {
        return Err(InspectError::NotDataDir(dir.to_path_buf()));
    }
    let (log, snap) = (dir.join("log"), snapshots::dir_of(dir));
    if log.is_dir() || snap.is_dir() {
        return Ok(DataDir { log, snap });
    }
    if !numbered(dir, SEGMENT_SUFFIX)?.is_empty() {
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => dir.join(".."),
        };
        return Ok(DataDir {
            log: dir.to_path_buf(),
            snap: snapshots::dir_of(&parent),
        });
    }
    Err(InspectError::NotDataDir(dir.to_path_buf()))
}

/// A log segment file and its sequence number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentFile {
    pub seq: u64,
    pub path: PathBuf,
}

impl SegmentFile {
    /// The file name, for messages.
    pub fn name(&self) -> String {
        file_name(&self.path)
    }
}

/// A snapshot file and the log index in its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    pub index: u64,
    pub path: PathBuf,
}

impl SnapshotFile {
    pub fn name(&self) -> String {
        file_name(&self.path)
    }
}

pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// The segments of `log_dir` in sequence order; a missing dir has none.
pub fn segments(log_dir: &Path) -> Result<Vec<SegmentFile>, InspectError> {
    Ok(numbered(log_dir, SEGMENT_SUFFIX)?
        .into_iter()
        .map(|(seq, path)| SegmentFile { seq, path })
        .collect())
}

/// The snapshots of `snap_dir`, oldest first; a missing dir has none. Unfinished `.snap.tmp`
/// files are not listed (and, unlike `snapshots::list`, not removed).
pub fn snapshots(snap_dir: &Path) -> Result<Vec<SnapshotFile>, InspectError> {
    Ok(numbered(snap_dir, SNAPSHOT_SUFFIX)?
        .into_iter()
        .map(|(index, path)| SnapshotFile { index, path })
        .collect())
}

/// Files named `<20 digits><suffix>` in `dir`, sorted by number.
fn numbered(dir: &Path, suffix: &str) -> Result<Vec<(u64, PathBuf)>, InspectError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(InspectError::io(dir)(e)),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(InspectError::io(dir))?;
        let name = ent.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(suffix)) else {
            continue;
        };
        if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(n) = stem.parse::<u64>() else { continue };
        out.push((n, ent.path()));
        if out.len() > MAX_FILES {
            return Err(InspectError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::other(format!("more than {MAX_FILES} {suffix} files")),
            });
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Reads a whole segment into a 16-byte aligned buffer (so record payloads are accessed in
/// place). A file that shrinks while being read yields what was there.
pub fn read_segment(path: &Path) -> Result<AlignedVec<16>, String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let len = file
        .metadata()
        .map_err(|e| format!("cannot stat: {e}"))?
        .len();
    if len > MAX_SEGMENT_BYTES {
        return Err(format!(
            "{len} bytes is over the {MAX_SEGMENT_BYTES}-byte limit of a segment"
        ));
    }
    let mut image = AlignedVec::<16>::with_capacity(len as usize);
    image.resize(len as usize, 0);
    let mut filled = 0;
    while filled < image.len() {
        match file.read(&mut image.as_mut_slice()[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot read: {e}")),
        }
    }
    image.resize(filled, 0);
    Ok(image)
}
