//! ZooKeeper 3.8's `DataTree`, reduced to what loading needs: build the tree from a snapshot,
//! apply logged txns exactly as `DataTree.processTxn` does (including its tolerance of the
//! NodeExists/NoNode errors a fuzzy snapshot causes, and its reference-counted ACL cache),
//! then finish as `ZooKeeperServer.loadData` does (dead sessions' ephemerals go, quota stat
//! nodes are recomputed).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::proto::types::{opcode, perms, Acl, Id, Stat};
use crate::tree::NodeKind;

use super::{
    CreateTxn, FormatError, FormatReason, ParsedSnapshot, PersistedStat, TxnBody, ZkNode,
    ZkSession, ZkTxn,
};

/// `EphemeralType.CONTAINER_EPHEMERAL_OWNER`.
const CONTAINER_OWNER: i64 = i64::MIN;
/// Extended ephemeralOwner markers have the top byte set; the next two bytes pick the
/// feature (0 = TTL) and the low 40 bits hold its value.
const EXTENDED_MASK: u64 = 0xFF00_0000_0000_0000;
const EXTENDED_FEATURE_MASK: u64 = 0x00FF_FF00_0000_0000;
const TTL_MAX: i64 = 0xFF_FFFF_FFFF;
const QUOTA_ROOT: &str = "/zookeeper/quota";
const QUOTA_LIMITS: &str = "zookeeper_limits";
const QUOTA_STATS: &str = "zookeeper_stats";

/// A replay failure ZooKeeper would not survive either (it would throw out of processTxn).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("path {0:?} is not a valid znode path")]
    BadPath(String),
    #[error("ttl {0} is outside 1..=0xffffffffff")]
    BadTtl(i64),
}

/// Counts for the import report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Txns applied.
    pub txns: u64,
    /// Operations that failed with NodeExists/NoNode and were skipped (ZooKeeper ignores
    /// these: with a fuzzy snapshot they are expected).
    pub failed_ops: u64,
    /// Multi txns whose remaining operations were skipped because one could not be applied.
    pub multi_aborted: u64,
}

/// What the stored ephemeralOwner means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Persistent,
    Ephemeral(i64),
    Container,
    Ttl(i64),
}

/// The error a DataTree operation reports (and processTxn swallows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Soft {
    NoNode,
    NodeExists,
}

type Outcome = Result<Result<(), Soft>, ReplayError>;

struct Node {
    data: Option<Vec<u8>>,
    acl: i64,
    stat: PersistedStat,
    kind: Kind,
    children: BTreeSet<String>,
    /// Where a node read from the snapshot was stored, to name it if its ACL is missing.
    snap_offset: Option<u64>,
}

/// ZooKeeper's `ReferenceCountedACLCache`: nodes hold a long id; ids are handed out in order
/// and an entry disappears when its last user does. Mirrored exactly because a fuzzy
/// snapshot can hold a node whose id the snapshot's ACL map lacks, and ZooKeeper relies on
/// replay handing out the same id again.
#[derive(Default)]
struct AclCache {
    by_id: HashMap<i64, Vec<Acl>>,
    by_list: HashMap<Vec<Acl>, i64>,
    refs: HashMap<i64, u64>,
    index: i64,
}

impl AclCache {
    /// The id ZooKeeper keeps for "no list stored": the open ACL.
    const OPEN: i64 = -1;

    fn load(&mut self, id: i64, acl: &[Acl]) {
        self.index = self.index.max(id);
        self.by_id.insert(id, acl.to_vec());
        self.by_list.insert(acl.to_vec(), id);
        self.refs.insert(id, 0);
    }

    fn convert(&mut self, acl: Option<&Vec<Acl>>) -> i64 {
        let Some(acl) = acl else {
            return Self::OPEN;
        };
        let id = match self.by_list.get(acl) {
            Some(&id) => id,
            None => {
                // a Java long: a hostile snapshot's largest id wraps rather than panics
                self.index = self.index.wrapping_add(1);
                let id = self.index;
                self.by_id.insert(id, acl.clone());
                self.by_list.insert(acl.clone(), id);
                id
            }
        };
        self.add_usage(id);
        id
    }

    fn add_usage(&mut self, id: i64) {
        if id != Self::OPEN && self.by_id.contains_key(&id) {
            *self.refs.entry(id).or_insert(0) += 1;
        }
    }

    fn remove_usage(&mut self, id: i64) {
        if id == Self::OPEN || !self.by_id.contains_key(&id) {
            return;
        }
        let left = self.refs.get(&id).copied().unwrap_or(0).saturating_sub(1);
        if left == 0 {
            self.remove(id);
        } else {
            self.refs.insert(id, left);
        }
    }

    fn remove(&mut self, id: i64) {
        self.refs.remove(&id);
        if let Some(list) = self.by_id.remove(&id) {
            if self.by_list.get(&list) == Some(&id) {
                self.by_list.remove(&list);
            }
        }
    }

    fn purge_unused(&mut self) {
        let unused: Vec<i64> = self
            .by_id
            .keys()
            .filter(|id| self.refs.get(id).copied().unwrap_or(0) == 0)
            .copied()
            .collect();
        for id in unused {
            self.remove(id);
        }
    }

    fn resolve(&self, id: i64) -> Option<Vec<Acl>> {
        if id == Self::OPEN {
            return Some(vec![Acl {
                perms: perms::ALL,
                id: Id::new("world", "anyone"),
            }]);
        }
        self.by_id.get(&id).cloned()
    }
}

/// The result of [`ZkReplay::finish`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayOutput {
    pub last_zxid: i64,
    pub nodes: Vec<ZkNode>,
    pub sessions: Vec<ZkSession>,
    pub warnings: Vec<String>,
}

/// A snapshot with txns applied on top, as ZooKeeper's DataTree holds it.
pub struct ZkReplay {
    /// Keyed by path; the root is "" as in ZooKeeper (which also answers "/" for it).
    nodes: HashMap<String, Node>,
    acls: AclCache,
    /// Session → its ephemeral nodes (DataTree.ephemerals).
    ephemerals: HashMap<i64, BTreeSet<String>>,
    sessions: BTreeMap<i64, i32>,
    last_zxid: i64,
    stats: ReplayStats,
}

impl ZkReplay {
    /// The tree a snapshot holds, as `DataTree.deserialize` builds it. `snapshot_zxid` is the
    /// zxid in the snapshot's file name.
    pub fn new(snap: &ParsedSnapshot, snapshot_zxid: i64) -> Result<ZkReplay, FormatError> {
        let sessions: BTreeMap<i64, i32> =
            snap.sessions.iter().map(|s| (s.id, s.timeout_ms)).collect();
        let mut acls = AclCache::default();
        for (id, list) in &snap.acls {
            acls.load(*id, list);
        }
        let mut nodes: HashMap<String, Node> = HashMap::with_capacity(snap.nodes.len());
        let mut ephemerals: HashMap<i64, BTreeSet<String>> = HashMap::new();
        for n in &snap.nodes {
            acls.add_usage(n.acl);
            if !n.path.is_empty() {
                let (parent, child) = n.path.rsplit_once('/').unwrap_or(("", &n.path));
                let Some(p) = nodes.get_mut(parent) else {
                    // parse_snapshot has checked this; a hand-built ParsedSnapshot may not have
                    let reason = FormatReason::Orphan(n.path.clone());
                    return Err(FormatError::new(n.offset as usize, reason));
                };
                p.children.insert(child.to_string());
            }
            let kind = stored_kind(n.stat.ephemeral_owner, |s| sessions.contains_key(&s));
            if let Kind::Ephemeral(owner) = kind {
                ephemerals.entry(owner).or_default().insert(n.path.clone());
            }
            let node = Node {
                data: n.data.clone(),
                acl: n.acl,
                stat: n.stat,
                kind,
                children: BTreeSet::new(),
                snap_offset: Some(n.offset),
            };
            nodes.insert(n.path.clone(), node);
        }
        if !nodes.contains_key("") {
            let reason = FormatReason::NoRoot(String::new());
            return Err(FormatError::new(0, reason));
        }
        acls.purge_unused();
        Ok(ZkReplay {
            nodes,
            acls,
            ephemerals,
            sessions,
            last_zxid: snapshot_zxid,
            stats: ReplayStats::default(),
        })
    }

    pub fn stats(&self) -> ReplayStats {
        self.stats
    }

    pub fn last_zxid(&self) -> i64 {
        self.last_zxid
    }

    /// Applies one logged txn (`FileTxnSnapLog.processTransaction`).
    pub fn apply(&mut self, txn: &ZkTxn) -> Result<(), ReplayError> {
        match &txn.body {
            TxnBody::CreateSession { timeout_ms } => {
                self.sessions.insert(txn.client_id, *timeout_ms);
            }
            TxnBody::CloseSession { .. } => {
                self.sessions.remove(&txn.client_id);
            }
            _ => {}
        }
        if self.process(txn, txn.txn_type, &txn.body)?.is_err() {
            self.stats.failed_ops += 1;
        }
        self.last_zxid = self.last_zxid.max(txn.zxid);
        self.stats.txns += 1;
        Ok(())
    }

    /// `DataTree.processTxn` for one (sub-)txn of type `txn_type`.
    fn process(&mut self, hdr: &ZkTxn, txn_type: i32, body: &TxnBody) -> Outcome {
        let (zxid, time) = (hdr.zxid, hdr.time);
        let outcome = match body {
            TxnBody::Create(c) => {
                let kind = if c.ephemeral && hdr.client_id != 0 {
                    Kind::Ephemeral(hdr.client_id)
                } else {
                    Kind::Persistent
                };
                self.create_node(c, kind, zxid, time)?
            }
            TxnBody::CreateContainer(c) => self.create_node(c, Kind::Container, zxid, time)?,
            TxnBody::CreateTtl { create, ttl } => {
                if !(1..=TTL_MAX).contains(ttl) {
                    return Err(ReplayError::BadTtl(*ttl));
                }
                self.create_node(create, Kind::Ttl(*ttl), zxid, time)?
            }
            TxnBody::Delete { path } => self.delete_node(path, zxid)?,
            TxnBody::SetData {
                path,
                data,
                version,
            } => match self.nodes.get_mut(key(path)) {
                None => Err(Soft::NoNode),
                Some(n) => {
                    n.data.clone_from(data);
                    n.stat.mtime = time;
                    n.stat.mzxid = zxid;
                    n.stat.version = *version;
                    Ok(())
                }
            },
            TxnBody::SetAcl { path, acl, version } => match self.nodes.get(key(path)) {
                None => Err(Soft::NoNode),
                Some(n) => {
                    let old = n.acl;
                    self.acls.remove_usage(old);
                    let new = self.acls.convert(acl.as_ref());
                    if let Some(n) = self.nodes.get_mut(key(path)) {
                        n.stat.aversion = *version;
                        n.acl = new;
                    }
                    Ok(())
                }
            },
            TxnBody::CloseSession { paths } => {
                self.kill_session(hdr.client_id, zxid, paths.as_deref())?;
                Ok(())
            }
            TxnBody::CreateSession { .. } | TxnBody::Error { .. } | TxnBody::Check { .. } => Ok(()),
            TxnBody::Multi(ops) => {
                // a multi that failed was logged with every operation turned into an error:
                // it changes nothing
                if ops.iter().all(|op| op.txn_type != opcode::ERROR) {
                    for op in ops {
                        let Some(body) = &op.body else {
                            // DataTree throws an IOException here and skips the rest
                            self.stats.multi_aborted += 1;
                            break;
                        };
                        if self.process(hdr, op.txn_type, body)?.is_err() {
                            self.stats.failed_ops += 1;
                        }
                    }
                }
                Ok(())
            }
        };
        // A node in a fuzzy snapshot may have been deleted and re-created (by another
        // session) before the parent was written; the create then fails with NodeExists
        // while the parent's cversion/pzxid still need the create's values. Only `create`
        // (not create2/container/TTL) gets this in 3.8.
        if txn_type == opcode::CREATE && outcome == Err(Soft::NodeExists) {
            if let TxnBody::Create(c) = body {
                let parent = c.path.rsplit_once('/').map_or("", |(p, _)| p);
                self.set_cversion_pzxid(parent, c.parent_cversion, zxid);
            }
        }
        Ok(outcome)
    }

    /// `DataTree.createNode`.
    fn create_node(&mut self, c: &CreateTxn, kind: Kind, zxid: i64, time: i64) -> Outcome {
        let (parent, child) = split(&c.path)?;
        if !self.nodes.contains_key(parent) {
            return Ok(Err(Soft::NoNode));
        }
        // 3.8 converts (and counts a use of) the ACL before it checks for NodeExists
        let acl = self.acls.convert(c.acl.as_ref());
        let Some(p) = self.nodes.get_mut(parent) else {
            return Ok(Err(Soft::NoNode));
        };
        if p.children.contains(child) {
            return Ok(Err(Soft::NodeExists));
        }
        let cversion = if c.parent_cversion == -1 {
            p.stat.cversion.wrapping_add(1)
        } else {
            c.parent_cversion
        };
        // replaying a create whose node the fuzzy snapshot no longer holds must not move the
        // parent's cversion/pzxid backwards
        if cversion > p.stat.cversion {
            p.stat.cversion = cversion;
            p.stat.pzxid = zxid;
        }
        p.children.insert(child.to_string());
        let owner = match kind {
            Kind::Persistent => 0,
            Kind::Ephemeral(session) => session,
            Kind::Container => CONTAINER_OWNER,
            Kind::Ttl(ttl) => (EXTENDED_MASK as i64) | ttl,
        };
        if let Kind::Ephemeral(session) = kind {
            self.ephemerals
                .entry(session)
                .or_default()
                .insert(c.path.clone());
        }
        let stat = PersistedStat {
            czxid: zxid,
            mzxid: zxid,
            ctime: time,
            mtime: time,
            version: 0,
            cversion: 0,
            aversion: 0,
            ephemeral_owner: owner,
            pzxid: zxid,
        };
        let node = Node {
            data: c.data.clone(),
            acl,
            stat,
            kind,
            children: BTreeSet::new(),
            snap_offset: None,
        };
        // like ZooKeeper's nodes.put, this replaces a node orphaned by an earlier delete
        self.nodes.insert(c.path.clone(), node);
        Ok(Ok(()))
    }

    /// `DataTree.deleteNode`: like ZooKeeper it updates the parent before it finds out
    /// whether the child exists, and leaves any children of the node behind unreachable.
    fn delete_node(&mut self, path: &str, zxid: i64) -> Outcome {
        let (parent, child) = split(path)?;
        let Some(p) = self.nodes.get_mut(parent) else {
            return Ok(Err(Soft::NoNode));
        };
        p.children.remove(child);
        if zxid > p.stat.pzxid {
            p.stat.pzxid = zxid;
        }
        let Some(node) = self.nodes.remove(path) else {
            return Ok(Err(Soft::NoNode));
        };
        self.acls.remove_usage(node.acl);
        if let Kind::Ephemeral(session) = node.kind {
            if let Some(set) = self.ephemerals.get_mut(&session) {
                set.remove(path);
            }
        }
        Ok(Ok(()))
    }

    /// `DataTree.killSession`: the paths the closeSession txn names, then any other ephemeral
    /// the tree knows for the session. Missing nodes are skipped.
    fn kill_session(
        &mut self,
        session: i64,
        zxid: i64,
        paths: Option<&[String]>,
    ) -> Result<(), ReplayError> {
        let mut local = self.ephemerals.remove(&session).unwrap_or_default();
        for path in paths.unwrap_or_default() {
            let _ = self.delete_node(path, zxid)?;
            local.remove(path);
        }
        for path in &local {
            let _ = self.delete_node(path, zxid)?;
        }
        Ok(())
    }

    /// `DataTree.setCversionPzxid`.
    fn set_cversion_pzxid(&mut self, path: &str, cversion: i32, zxid: i64) {
        let path = path.strip_suffix('/').unwrap_or(path);
        if let Some(n) = self.nodes.get_mut(key(path)) {
            let cversion = if cversion == -1 {
                n.stat.cversion.wrapping_add(1)
            } else {
                cversion
            };
            if cversion > n.stat.cversion {
                n.stat.cversion = cversion;
                n.stat.pzxid = zxid;
            }
        }
    }

    /// The tree as a restarted ZooKeeper serves it: `ZooKeeperServer.loadData` kills the
    /// sessions that own ephemerals but are not alive, and `DataTree.setupQuota` recomputes
    /// the quota stat nodes. Nodes left unreachable by a delete are dropped, as the next
    /// snapshot would drop them.
    pub fn finish(mut self) -> Result<ReplayOutput, FormatError> {
        let mut warnings = Vec::new();
        let dead: Vec<i64> = self
            .ephemerals
            .iter()
            .filter(|(s, paths)| !self.sessions.contains_key(s) && !paths.is_empty())
            .map(|(s, _)| *s)
            .collect();
        for session in dead {
            let n = self.ephemerals.get(&session).map_or(0, BTreeSet::len);
            // ZooKeeper passes its last processed zxid; paths in the map are valid
            if self.kill_session(session, self.last_zxid, None).is_ok() {
                warnings.push(format!(
                    "session {session:#x} is not alive: its {n} ephemeral node(s) removed, as \
                     ZooKeeper does on startup"
                ));
            }
        }
        self.setup_quota();

        let mut out = Vec::with_capacity(self.nodes.len());
        let mut stack = vec![String::new()];
        while let Some(path) = stack.pop() {
            let Some(n) = self.nodes.get(&path) else {
                continue;
            };
            let Some(acl) = self.acls.resolve(n.acl) else {
                let reason = FormatReason::UnknownAcl {
                    path: display_path(&path).to_string(),
                    id: n.acl,
                };
                return Err(FormatError::new(
                    n.snap_offset.unwrap_or(0) as usize,
                    reason,
                ));
            };
            for child in &n.children {
                stack.push(format!("{path}/{child}"));
            }
            out.push(self.client_node(&path, n, acl));
        }
        let orphans = self.nodes.len().saturating_sub(out.len());
        if orphans > 0 {
            warnings.push(format!(
                "{orphans} node(s) left without a parent by the replayed deletes were dropped"
            ));
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        let sessions = self
            .sessions
            .iter()
            .map(|(&id, &timeout_ms)| ZkSession { id, timeout_ms })
            .collect();
        Ok(ReplayOutput {
            last_zxid: self.last_zxid,
            nodes: out,
            sessions,
            warnings,
        })
    }

    fn client_node(&self, path: &str, n: &Node, acl: Vec<Acl>) -> ZkNode {
        let num_children = i32::try_from(n.children.len()).unwrap_or(i32::MAX);
        let (kind, owner) = match n.kind {
            Kind::Persistent => (NodeKind::Normal, 0),
            Kind::Ephemeral(session) => (NodeKind::Normal, session),
            // DataNode.copyStat hides container and TTL markers from clients
            Kind::Container => (NodeKind::Container, 0),
            Kind::Ttl(ttl) => (NodeKind::Ttl(ttl), 0),
        };
        let s = &n.stat;
        let stat = Stat {
            czxid: s.czxid,
            mzxid: s.mzxid,
            ctime: s.ctime,
            mtime: s.mtime,
            version: s.version,
            // DataNode.copyStat: the stored cversion counts creations; clients see
            // creations + deletions
            cversion: s.cversion.wrapping_mul(2).wrapping_sub(num_children),
            aversion: s.aversion,
            ephemeral_owner: owner,
            data_length: n
                .data
                .as_ref()
                .map_or(0, |d| i32::try_from(d.len()).unwrap_or(i32::MAX)),
            num_children,
            pzxid: s.pzxid,
        };
        ZkNode {
            path: display_path(path).to_string(),
            data: n.data.clone(),
            acl,
            stat,
            kind,
            creations: s.cversion,
        }
    }

    /// `DataTree.setupQuota`: for every leaf `…/zookeeper_limits` under /zookeeper/quota, the
    /// matching `zookeeper_stats` node gets "count=N,bytes=M" for the quota'd subtree.
    fn setup_quota(&mut self) {
        let mut limits = Vec::new();
        let mut stack = vec![QUOTA_ROOT.to_string()];
        while let Some(path) = stack.pop() {
            let Some(n) = self.nodes.get(&path) else {
                continue;
            };
            if n.children.is_empty() {
                let suffix = format!("/{QUOTA_LIMITS}");
                if path.ends_with(&suffix) {
                    let real = path
                        .find(&suffix)
                        .and_then(|end| path.get(QUOTA_ROOT.len()..end))
                        .unwrap_or_default();
                    if !real.is_empty() {
                        limits.push(real.to_string());
                    }
                }
            } else {
                stack.extend(n.children.iter().map(|c| format!("{path}/{c}")));
            }
        }
        for real in limits {
            let (count, bytes) = self.subtree_counts(&real);
            let stats = format!("{QUOTA_ROOT}{real}/{QUOTA_STATS}");
            if let Some(n) = self.nodes.get_mut(&stats) {
                n.data = Some(format!("count={count},bytes={bytes}").into_bytes());
            }
        }
    }

    /// `DataTree.getCounts`: nodes and data bytes in the subtree at `path` (child paths are
    /// built as ZooKeeper builds them, so "/" counts only itself).
    fn subtree_counts(&self, path: &str) -> (i64, i64) {
        let (mut count, mut bytes) = (0i64, 0i64);
        let mut stack = vec![path.to_string()];
        while let Some(p) = stack.pop() {
            let Some(n) = self.nodes.get(key(&p)) else {
                continue;
            };
            count += 1;
            bytes = bytes.saturating_add(n.data.as_ref().map_or(0, |d| d.len() as i64));
            stack.extend(n.children.iter().map(|c| format!("{p}/{c}")));
        }
        (count, bytes)
    }
}

/// The map key ZooKeeper finds a path under ("/" is an alias of the root, "").
fn key(path: &str) -> &str {
    if path == "/" {
        ""
    } else {
        path
    }
}

fn display_path(key: &str) -> &str {
    if key.is_empty() {
        "/"
    } else {
        key
    }
}

/// Parent and child name of a path a create or delete names. ZooKeeper validates request
/// paths before logging them; a path without a leading slash would throw out of DataTree.
fn split(path: &str) -> Result<(&str, &str), ReplayError> {
    match path.rsplit_once('/') {
        Some((parent, child)) if path.starts_with('/') && !child.is_empty() => Ok((parent, child)),
        _ => Err(ReplayError::BadPath(path.to_string())),
    }
}

/// What a stored ephemeralOwner means (`EphemeralType.get` with extended types enabled).
/// A TTL marker can only collide with a real session id on a server with id 255, which
/// cannot enable extended types; so an owner the snapshot lists as a live session is an
/// ephemeral whatever its shape.
fn stored_kind(owner: i64, is_session: impl Fn(i64) -> bool) -> Kind {
    let bits = owner as u64;
    if owner == 0 {
        Kind::Persistent
    } else if owner == CONTAINER_OWNER {
        Kind::Container
    } else if bits & EXTENDED_MASK == EXTENDED_MASK
        && bits & EXTENDED_FEATURE_MASK == 0
        && !is_session(owner)
    {
        Kind::Ttl(owner & TTL_MAX)
    } else {
        Kind::Ephemeral(owner)
    }
}
