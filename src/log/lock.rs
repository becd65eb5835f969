//! Exclusive lock on a data directory.
//!
//! glommio binds every listener with SO_REUSEPORT, so a second ringkeeper on the same port would
//! start silently and steal connections, and two processes appending to one log destroy it. The
//! data dir lock makes the second process fail loudly instead: an exclusive, non-blocking
//! `flock` on `dir/LOCK`, held for the life of the process (the kernel drops it when the file
//! is closed, including on crash). flock locks belong to the open file description, so a
//! second `acquire` in the same process is refused too.

use std::{
    fs::{File, OpenOptions},
    io::{Read, Seek, SeekFrom, Write},
    os::unix::{fs::OpenOptionsExt, io::AsRawFd},
    path::{Path, PathBuf},
};

/// Name of the lock file inside the data dir.
pub const LOCK_FILE: &str = "LOCK";

/// Most bytes read back from a lock file held by someone else (it holds a pid).
const MAX_HOLDER_BYTES: u64 = 64;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot create data dir {dir}: {source}")]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open lock file {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "data dir {dir} is in use by another ringkeeper process ({})",
        match .pid { Some(p) => format!("pid {p}"), None => "pid unknown".to_string() }
    )]
    Held { dir: PathBuf, pid: Option<u32> },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write pid into {path}: {source}")]
    WritePid {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Held while the process uses the data dir; released on drop.
#[derive(Debug)]
pub struct DataDirLock {
    // Closing the file releases the flock.
    _file: File,
    dir: PathBuf,
}

impl DataDirLock {
    /// Creates `dir` if needed, locks `dir/LOCK` and writes this process's pid into it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, LockError> {
        super::durable::create_dir_all(dir).map_err(|source| LockError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false) // the holder's pid must survive a refused attempt
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|source| LockError::Open {
                path: path.clone(),
                source,
            })?;
        // SAFETY: flock on a file descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    pid: read_pid(&mut file),
                });
            }
            return Err(LockError::Lock { path, source: err });
        }
        let write_pid = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            writeln!(file, "{}", std::process::id())?;
            file.sync_data()?;
            // The LOCK entry itself (a new file is durable once its directory is synced).
            super::durable::sync_dir(dir)
        };
        write_pid(&mut file).map_err(|source| LockError::WritePid { path, source })?;
        Ok(DataDirLock {
            _file: file,
            dir: dir.to_path_buf(),
        })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The pid written by the current holder, if it has written one yet.
fn read_pid(file: &mut File) -> Option<u32> {
    let mut s = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(MAX_HOLDER_BYTES).read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_release() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let lock = DataDirLock::acquire(&dir).unwrap();
        assert_eq!(lock.dir(), dir);
        let pid = std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());

        let err = DataDirLock::acquire(&dir).unwrap_err();
        match &err {
            LockError::Held { dir: d, pid } => {
                assert_eq!(d, &dir);
                assert_eq!(*pid, Some(std::process::id()));
            }
            other => panic!("unexpected {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(&dir.display().to_string()), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        // The refused attempt did not wipe the holder's pid.
        let pid_after = std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap();
        assert_eq!(pid, pid_after);

        drop(lock);
        let again = DataDirLock::acquire(&dir).unwrap();
        drop(again);
    }

    #[test]
    fn unusable_dir_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            DataDirLock::acquire(&file),
            Err(LockError::CreateDir { .. })
        ));
    }
}
