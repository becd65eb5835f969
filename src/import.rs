//! `ringkeeper import`: turns an Apache ZooKeeper data dir (its `version-2` snapshots and
//! transaction logs, read by `zkdata`) into a ringkeeper data dir holding one snapshot with
//! the same tree, ACLs, Stats, sessions and zxids.
//!
//! The snapshot stands at raft index 1 and term = the ZooKeeper epoch of the last zxid, so the
//! first leadership after the import starts the next epoch and every new zxid is above every
//! imported one. Session passwords are derived exactly as ZooKeeper derives them from the
//! session id, so a client can resume its ZooKeeper session on ringkeeper.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::log::snapshots::{self, SnapshotFileError};
use crate::log::{DataDirLock, LockError};
use crate::machine::{Machine, MachineConfig};
use crate::proto::types::{Acl, Zxid};
use crate::session::{Session, SessionTable};
use crate::snapshot::Meta;
use crate::tree::{Node, NodeKind, TreeBuilder};
use crate::zkdata::{self, ZkDataError, ZkImage};

/// The member id an imported single member runs as.
const MEMBER_ID: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    ZooKeeper(#[from] ZkDataError),
    #[error("{} already holds ringkeeper data ({}); import only into an empty data dir", dir.display(), what.display())]
    NotEmpty { dir: PathBuf, what: PathBuf },
    #[error("data dir: {0}")]
    Lock(#[from] LockError),
    #[error("cannot use {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the ZooKeeper tree does not convert: {0}")]
    Tree(String),
    #[error("{0}")]
    Snapshot(#[from] SnapshotFileError),
}

/// What an import did, for the operator.
#[derive(Debug)]
pub struct ImportReport {
    pub nodes: usize,
    pub sessions: usize,
    pub last_zxid: Zxid,
    pub snapshot: PathBuf,
    pub sources: Vec<String>,
    pub txns_replayed: u64,
    /// From reading ZooKeeper's files, plus what the operator must know to run the result.
    pub warnings: Vec<String>,
}

/// Reads ZooKeeper's `zk_data_dir` (and `zk_log_dir` when its logs live apart) and writes a
/// ringkeeper data dir at `data_dir`, which must not hold ringkeeper data yet.
pub fn import(
    zk_data_dir: &Path,
    zk_log_dir: Option<&Path>,
    data_dir: &Path,
) -> Result<ImportReport, ImportError> {
    for sub in ["log", "snap"] {
        let dir = data_dir.join(sub);
        if let Ok(mut entries) = std::fs::read_dir(&dir) {
            if let Some(Ok(first)) = entries.next() {
                return Err(ImportError::NotEmpty {
                    dir: data_dir.to_path_buf(),
                    what: first.path(),
                });
            }
        }
    }
    crate::log::durable::create_dir_all(data_dir).map_err(|source| ImportError::Io {
        path: data_dir.to_path_buf(),
        source,
    })?;
    // A server must not start on the dir while it is being filled.
    let _lock = DataDirLock::acquire(data_dir)?;

    let image = zkdata::load_dir(zk_data_dir, zk_log_dir)?;
    let machine = machine_from(&image)?;
    let view = machine.view();
    let meta = Meta {
        index: 1,
        term: (image.last_zxid >> 32).max(0) as u64,
        last_zxid: image.last_zxid,
        voters: vec![MEMBER_ID],
        learners: Vec::new(),
        joint: None,
    };
    let (path, _) = snapshots::write(&snapshots::dir_of(data_dir), &view, &meta)?;

    let mut warnings = image.warnings.clone();
    if image
        .nodes
        .iter()
        .any(|n| matches!(n.kind, NodeKind::Ttl(_)))
    {
        warnings.push(
            "the tree has TTL nodes: run the server with --ttl-enabled (as ZooKeeper needed \
             extendedTypesEnabled)"
                .to_string(),
        );
    }
    Ok(ImportReport {
        nodes: view.node_count(),
        sessions: view.session_count(),
        last_zxid: image.last_zxid,
        snapshot: path,
        sources: image.sources.clone(),
        txns_replayed: image.txns_replayed,
        warnings,
    })
}

/// The machine holding exactly `image`: every Stat as ZooKeeper reported it (checked).
pub fn machine_from(image: &ZkImage) -> Result<Machine, ImportError> {
    // The builder wants pre-order: compare paths component by component ("/a/b" right after
    // "/a", before "/a-b", which a plain string sort would put first).
    let mut order: Vec<&zkdata::ZkNode> = image.nodes.iter().collect();
    order.sort_by(|a, b| a.path.split('/').cmp(b.path.split('/')));

    let mut acls: HashMap<&[Acl], Arc<[Acl]>> = HashMap::new();
    let mut builder = TreeBuilder::new();
    let mut ephemerals: HashMap<i64, Vec<Arc<str>>> = HashMap::new();
    for n in &order {
        let acl = acls
            .entry(n.acl.as_slice())
            .or_insert_with(|| Arc::from(n.acl.as_slice()))
            .clone();
        let path: Arc<str> = Arc::from(n.path.as_str());
        let owner = match n.kind {
            NodeKind::Normal => n.stat.ephemeral_owner,
            NodeKind::Container | NodeKind::Ttl(_) => 0,
        };
        if owner != 0 {
            ephemerals.entry(owner).or_default().push(path.clone());
        }
        let node = Node {
            data: n.data.as_deref().map(Arc::from),
            acl,
            children: Default::default(),
            czxid: n.stat.czxid,
            mzxid: n.stat.mzxid,
            pzxid: n.stat.pzxid,
            ctime: n.stat.ctime,
            mtime: n.stat.mtime,
            version: n.stat.version,
            aversion: n.stat.aversion,
            creations: n.creations,
            ephemeral_owner: owner,
            kind: n.kind,
        };
        builder
            .push(path, node)
            .map_err(|reason| ImportError::Tree(format!("{}: {reason}", n.path)))?;
    }
    let tree = builder.finish().map_err(|r| ImportError::Tree(r.into()))?;

    let mut sessions = imbl::HashMap::new();
    for s in &image.sessions {
        let mut session = Session::new(s.timeout_ms, &zookeeper_password(s.id));
        if let Some(paths) = ephemerals.remove(&s.id) {
            session.ephemerals = paths.into_iter().collect();
        }
        sessions.insert(s.id, session);
    }
    if let Some((owner, paths)) = ephemerals.into_iter().next() {
        return Err(ImportError::Tree(format!(
            "{} is ephemeral for session {owner:#x}, which is not live",
            paths[0]
        )));
    }
    let table = SessionTable::restore(sessions, None, 0);
    let machine = Machine::restore(
        MachineConfig::default(),
        tree,
        table,
        image.last_zxid,
        acls.into_values(),
    );
    // Every Stat a client reads must be the one ZooKeeper gave it.
    let view = machine.view();
    for n in &image.nodes {
        let got = view.stat(&n.path);
        if got != Some(n.stat) {
            return Err(ImportError::Tree(format!(
                "{}: Stat {got:?} after conversion, ZooKeeper had {:?}",
                n.path, n.stat
            )));
        }
    }
    Ok(machine)
}

/// ZooKeeper's session password: 16 bytes of `java.util.Random(id ^ superSecret).nextBytes`
/// (SessionTrackerImpl / ZooKeeperServer.generatePasswd).
pub fn zookeeper_password(session: i64) -> Vec<u8> {
    const SUPER_SECRET: i64 = 0xB341_5C00;
    const MULTIPLIER: u64 = 0x5_DEEC_E66D;
    const MASK: u64 = (1 << 48) - 1;
    let mut seed = ((session ^ SUPER_SECRET) as u64 ^ MULTIPLIER) & MASK;
    let mut next_int = || {
        seed = (seed.wrapping_mul(MULTIPLIER).wrapping_add(0xB)) & MASK;
        (seed >> 16) as u32
    };
    let mut out = Vec::with_capacity(16);
    while out.len() < 16 {
        let mut r = next_int();
        for _ in 0..4.min(16 - out.len()) {
            out.push(r as u8);
            r >>= 8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/testdata/zk-datadir");

    #[test]
    fn java_random_matches() {
        // java.util.Random(42).nextBytes(new byte[16]) as printed by a JVM.
        let mut seed = (42u64 ^ 0x5_DEEC_E66D) & ((1 << 48) - 1);
        seed = (seed.wrapping_mul(0x5_DEEC_E66D).wrapping_add(0xB)) & ((1 << 48) - 1);
        // new Random(42).nextInt() == -1170105035
        assert_eq!((seed >> 16) as u32 as i32, -1_170_105_035);
        assert_eq!(zookeeper_password(0).len(), 16);
    }

    #[test]
    fn fixture_imports_with_every_stat_identical() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("rk");
        let report = import(Path::new(FIXTURE), None, &out).unwrap();
        let image = zkdata::load_dir(Path::new(FIXTURE), None).unwrap();
        assert_eq!(report.nodes, image.nodes.len());
        let (meta, m) = snapshots::load(&report.snapshot, MachineConfig::default()).unwrap();
        assert_eq!(meta.last_zxid, image.last_zxid);
        let v = m.view();
        for n in &image.nodes {
            let node = v.node(&n.path).unwrap();
            assert_eq!(node.stat(), n.stat, "{}", n.path);
            assert_eq!(node.data(), n.data.as_deref(), "{}", n.path);
            assert_eq!(node.acl(), n.acl.as_slice(), "{}", n.path);
        }
        assert_eq!(v.session_count(), image.sessions.len());
        // A second import into the same dir is refused.
        assert!(matches!(
            import(Path::new(FIXTURE), None, &out),
            Err(ImportError::NotEmpty { .. })
        ));
    }
}
