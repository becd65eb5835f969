//! Directory entries made durable. A file or directory created or renamed survives a power
//! cut only once the directory that holds its entry has been fsynced (POSIX; ext4 and XFS
//! happen to forgive a missing one, other file systems do not). Every directory the server
//! creates goes through [`create_dir_all`]; every rename and file creation is followed by
//! [`sync_dir`] of its directory. `clippy.toml` forbids `std::fs::create_dir_all`,
//! `create_dir` and `rename` elsewhere.

use std::io;
use std::path::{Path, PathBuf};

/// The directory operations [`create_dir_all_with`] needs: the real file system, or a model
/// of one in tests.
pub trait Dirs {
    fn exists(&self, dir: &Path) -> bool;
    fn create_dir(&mut self, dir: &Path) -> io::Result<()>;
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()>;
}

/// The real file system.
pub struct Fs;

impl Dirs for Fs {
    fn exists(&self, dir: &Path) -> bool {
        dir.is_dir()
    }
    fn create_dir(&mut self, dir: &Path) -> io::Result<()> {
        #[allow(clippy::disallowed_methods)] // this is the durable wrapper
        match std::fs::create_dir(dir) {
            // Another process made it meanwhile: it is there either way (and synced below).
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
            other => other,
        }
    }
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        sync_dir(dir)
    }
}

/// Creates `dir` and every missing ancestor, each made durable: after creating a level, its
/// parent is fsynced. Nothing is synced when `dir` already exists.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    create_dir_all_with(&mut Fs, dir)
}

pub fn create_dir_all_with(fs: &mut impl Dirs, dir: &Path) -> io::Result<()> {
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut level = Some(dir);
    while let Some(d) = level.filter(|d| !d.as_os_str().is_empty() && !fs.exists(d)) {
        missing.push(d.to_path_buf());
        level = d.parent();
    }
    for d in missing.iter().rev() {
        fs.create_dir(d)?;
        fs.sync_dir(parent_of(d))?;
    }
    Ok(())
}

/// fsyncs directory `dir`, making the entries in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

/// Renames `from` to `to` and makes the new entry durable (both must be in one directory).
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    debug_assert_eq!(from.parent(), to.parent());
    #[allow(clippy::disallowed_methods)] // this is the durable wrapper
    std::fs::rename(from, to)?;
    sync_dir(parent_of(to))
}

/// The directory holding `path`'s entry (`.` for a bare name).
pub fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// A file system that keeps, at a power cut, only the directory entries whose parent was
    /// fsynced after they were made (a directory that is lost takes its subtree with it).
    #[derive(Default)]
    struct PowerCutFs {
        durable: BTreeSet<PathBuf>,
        volatile: BTreeSet<PathBuf>,
    }

    impl PowerCutFs {
        fn new(existing: &str) -> Self {
            let mut fs = PowerCutFs::default();
            for d in Path::new(existing).ancestors() {
                fs.durable.insert(d.to_path_buf());
            }
            fs
        }
        fn power_cut(&mut self) {
            self.volatile.clear();
            let durable = std::mem::take(&mut self.durable);
            self.durable = durable
                .iter()
                .filter(|d| d.ancestors().all(|a| durable.contains(a)))
                .cloned()
                .collect();
        }
    }

    impl Dirs for PowerCutFs {
        fn exists(&self, dir: &Path) -> bool {
            self.durable.contains(dir) || self.volatile.contains(dir)
        }
        fn create_dir(&mut self, dir: &Path) -> io::Result<()> {
            assert!(self.exists(parent_of(dir)), "{dir:?} without its parent");
            self.volatile.insert(dir.to_path_buf());
            Ok(())
        }
        fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
            let children: Vec<PathBuf> = self
                .volatile
                .iter()
                .filter(|d| d.parent() == Some(dir))
                .cloned()
                .collect();
            for c in children {
                self.volatile.remove(&c);
                self.durable.insert(c);
            }
            Ok(())
        }
    }

    #[test]
    fn every_level_created_survives_a_power_cut() {
        let mut fs = PowerCutFs::new("/srv");
        create_dir_all_with(&mut fs, Path::new("/srv/data/log/a/b")).unwrap();
        fs.power_cut();
        assert!(fs.exists(Path::new("/srv/data/log/a/b")));
        // Creating without the syncs (what `std::fs::create_dir_all` does) loses it all.
        let mut fs = PowerCutFs::new("/srv");
        for d in ["/srv/data", "/srv/data/log"] {
            fs.create_dir(Path::new(d)).unwrap();
        }
        fs.power_cut();
        assert!(!fs.exists(Path::new("/srv/data")));
    }

    #[test]
    fn an_existing_directory_costs_nothing() {
        let mut fs = PowerCutFs::new("/srv/data");
        create_dir_all_with(&mut fs, Path::new("/srv/data")).unwrap();
        assert!(fs.volatile.is_empty());
    }

    #[test]
    fn on_the_real_file_system() {
        let tmp = std::env::temp_dir().join(format!("rk-durable-{}", std::process::id()));
        let deep = tmp.join("a/b/c");
        create_dir_all(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("x.tmp"), b"x").unwrap();
        rename(&deep.join("x.tmp"), &deep.join("x")).unwrap();
        assert_eq!(std::fs::read(deep.join("x")).unwrap(), b"x");
        std::fs::remove_dir_all(&tmp).unwrap();
        assert_eq!(parent_of(Path::new("x")), Path::new("."));
    }
}
