//! The znode tree: an MVCC index built from persistent (structurally shared) maps.
//!
//! `Tree` maps each full path to an `Arc<Node>`; a node holds its children's *names* in an
//! ordered persistent set. Cloning a `Tree` is O(1), so the apply loop mutates its own copy and
//! readers hold a clone that never changes under them. Only `machine` mutates a tree, through
//! the primitives below; it does all validation first (ZooKeeper's order), so a primitive's
//! preconditions are internal invariants, not input checks.

pub mod acl;

use std::sync::Arc;

use imbl::{HashMap, OrdSet};

use crate::proto::types::{perms, Acl, Id, SessionId, Stat, Zxid};

/// What kind of persistent node this is (ephemeral nodes are `Normal` with an owner).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Normal,
    /// Deleted by the reaper once it has had a child and has none.
    Container,
    /// Deleted by the reaper once childless and unmodified for this many ms.
    Ttl(i64),
}

/// One znode. Cheap to clone: data, ACL and the children set are shared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// `None` (null) and empty data are distinct on the wire.
    pub(crate) data: Option<Arc<[u8]>>,
    /// Interned by the machine: many nodes share one allocation.
    pub(crate) acl: Arc<[Acl]>,
    pub(crate) children: OrdSet<Arc<str>>,
    pub(crate) czxid: Zxid,
    pub(crate) mzxid: Zxid,
    pub(crate) pzxid: Zxid,
    pub(crate) ctime: i64,
    pub(crate) mtime: i64,
    pub(crate) version: i32,
    pub(crate) aversion: i32,
    /// Children ever created here (ZooKeeper's stored cversion): the sequential suffix.
    pub(crate) creations: i32,
    /// The owning session of an ephemeral node, else 0.
    pub(crate) ephemeral_owner: SessionId,
    pub(crate) kind: NodeKind,
}

impl Node {
    /// The Stat a client sees. Visible cversion = 2 × creations − numChildren (creations plus
    /// deletions); containers and TTL nodes report ephemeralOwner 0.
    pub fn stat(&self) -> Stat {
        let num_children = i32::try_from(self.children.len()).unwrap_or(i32::MAX);
        Stat {
            czxid: self.czxid,
            mzxid: self.mzxid,
            ctime: self.ctime,
            mtime: self.mtime,
            version: self.version,
            cversion: self.creations.wrapping_mul(2).wrapping_sub(num_children),
            aversion: self.aversion,
            ephemeral_owner: self.ephemeral_owner,
            data_length: self.data_len() as i32,
            num_children,
            pzxid: self.pzxid,
        }
    }
    /// The data; `None` for null.
    pub fn data(&self) -> Option<&[u8]> {
        self.data.as_deref()
    }
    /// The shared data buffer, for zero-copy replies.
    pub fn data_arc(&self) -> Option<&Arc<[u8]>> {
        self.data.as_ref()
    }
    fn data_len(&self) -> usize {
        self.data.as_ref().map_or(0, |d| d.len())
    }
    pub fn acl(&self) -> &[Acl] {
        &self.acl
    }
    pub fn acl_arc(&self) -> &Arc<[Acl]> {
        &self.acl
    }
    /// Child names (no leading `/`); iterates in sorted order. The set itself, so replies can
    /// be encoded from it without copying.
    pub fn children(&self) -> &OrdSet<Arc<str>> {
        &self.children
    }
    pub fn num_children(&self) -> usize {
        self.children.len()
    }
    pub fn has_child(&self, name: &str) -> bool {
        self.children.contains(name)
    }
    /// The parent's child-creation counter (the next sequential suffix).
    pub fn creations(&self) -> i32 {
        self.creations
    }
    pub fn ephemeral_owner(&self) -> SessionId {
        self.ephemeral_owner
    }
    pub fn kind(&self) -> NodeKind {
        self.kind
    }
    /// The reaper's rule: an empty container that has had children, or a childless TTL node
    /// unmodified for its ttl.
    pub fn is_reapable(&self, now_ms: i64) -> bool {
        if !self.children.is_empty() {
            return false;
        }
        match self.kind {
            NodeKind::Normal => false,
            NodeKind::Container => self.creations > 0,
            NodeKind::Ttl(ttl) => self.mtime.saturating_add(ttl) <= now_ms,
        }
    }
}

/// The node holding the ensemble's configuration (written by reconfig, read by `conf`).
pub const CONFIG_NODE: &str = "/zookeeper/config";

/// The paths ZooKeeper creates at start and never lets a client delete.
pub const RESERVED_PATHS: [&str; 4] = ["/", "/zookeeper", "/zookeeper/quota", CONFIG_NODE];

pub fn is_reserved(path: &str) -> bool {
    RESERVED_PATHS.contains(&path)
}

/// Everything a new node needs (the machine has validated it).
#[derive(Clone, Debug)]
pub struct NewNode {
    pub data: Option<Arc<[u8]>>,
    pub acl: Arc<[Acl]>,
    pub ephemeral_owner: SessionId,
    pub kind: NodeKind,
    pub zxid: Zxid,
    pub time_ms: i64,
}

/// The whole znode tree at one point in time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    nodes: HashMap<Arc<str>, Arc<Node>>,
    /// Paths of containers and TTL nodes: the reaper's candidates, without a full scan.
    reapable: OrdSet<Arc<str>>,
    /// Σ (path length + data length), ZooKeeper's approximate data size.
    data_size: u64,
    ephemerals: usize,
    /// Σ `node_hash` over every node (wrapping): equal trees have equal digests, and members
    /// compare theirs at the same log index (ZooKeeper 3.6 keeps the same kind of digest).
    digest: u64,
}

/// A node's contribution to the tree digest: its path, data, ACL and every Stat field.
fn node_hash(path: &str, node: &Node) -> u64 {
    let stat = node.stat();
    let mut fixed = [0u8; 8 * 6 + 4 * 5];
    let words = [
        stat.czxid,
        stat.mzxid,
        stat.pzxid,
        stat.ctime,
        stat.mtime,
        stat.ephemeral_owner,
    ];
    for (i, w) in words.iter().enumerate() {
        fixed[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    let ints = [
        stat.version,
        stat.cversion,
        stat.aversion,
        stat.num_children,
        node.data.as_ref().map_or(-1, |d| d.len() as i32),
    ];
    for (i, w) in ints.iter().enumerate() {
        fixed[48 + i * 4..52 + i * 4].copy_from_slice(&w.to_le_bytes());
    }
    let mut crc = crc32c::crc32c(path.as_bytes());
    crc = crc32c::crc32c_append(crc, &fixed);
    let mut second = crc32c::crc32c_append(!crc, node.data().unwrap_or_default());
    for acl in node.acl.iter() {
        second = crc32c::crc32c_append(second, &acl.perms.to_le_bytes());
        second = crc32c::crc32c_append(second, acl.id.scheme.as_bytes());
        second = crc32c::crc32c_append(second, acl.id.id.as_bytes());
    }
    ((crc as u64) << 32) | second as u64
}

impl Tree {
    /// A fresh tree with ZooKeeper's built-in nodes, exactly as a new 3.8 server has them:
    /// all-zero Stats, empty (non-null) data, open ACLs except `/zookeeper/config` (READ only,
    /// aversion −1). Built-in children are not counted as creations, so `/` shows cversion −1.
    pub fn new(open_acl: Arc<[Acl]>, read_acl: Arc<[Acl]>) -> Tree {
        let empty: Arc<[u8]> = Arc::from(&[][..]);
        let node = |acl: &Arc<[Acl]>, children: &[&str]| Node {
            data: Some(empty.clone()),
            acl: acl.clone(),
            children: children.iter().map(|c| Arc::<str>::from(*c)).collect(),
            czxid: 0,
            mzxid: 0,
            pzxid: 0,
            ctime: 0,
            mtime: 0,
            version: 0,
            aversion: 0,
            creations: 0,
            ephemeral_owner: 0,
            kind: NodeKind::Normal,
        };
        let mut tree = Tree {
            nodes: HashMap::new(),
            reapable: OrdSet::new(),
            data_size: 0,
            ephemerals: 0,
            digest: 0,
        };
        let mut config = node(&read_acl, &[]);
        config.aversion = -1;
        for (path, n) in [
            ("/", node(&open_acl, &["zookeeper"])),
            ("/zookeeper", node(&open_acl, &["config", "quota"])),
            ("/zookeeper/quota", node(&open_acl, &[])),
            (CONFIG_NODE, config),
        ] {
            tree.data_size += path.len() as u64;
            tree.digest = tree.digest.wrapping_add(node_hash(path, &n));
            tree.nodes.insert(Arc::from(path), Arc::new(n));
        }
        tree
    }

    /// The node at `path`; `""` is an alias for the root, as in ZooKeeper's read ops.
    pub fn get(&self, path: &str) -> Option<&Node> {
        let path = if path.is_empty() { "/" } else { path };
        self.nodes.get(path).map(|n| &**n)
    }

    /// The node and the shared key of its path (triggers reuse the key's allocation).
    pub fn get_entry(&self, path: &str) -> Option<(&Arc<str>, &Node)> {
        let path = if path.is_empty() { "/" } else { path };
        self.nodes.get_key_value(path).map(|(k, n)| (k, &**n))
    }

    pub fn contains(&self, path: &str) -> bool {
        self.get(path).is_some()
    }

    /// Number of znodes (ZooKeeper's `Node count` is this + 1: it counts the root twice).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn approximate_data_size(&self) -> u64 {
        self.data_size
    }

    pub fn ephemeral_count(&self) -> usize {
        self.ephemerals
    }

    /// Every node, in no particular order (snapshots, dumps).
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Node)> + '_ {
        self.nodes.iter().map(|(k, n)| (k, &**n))
    }

    /// getAllChildrenNumber: all descendants of `path`, not counting itself. O(1) for the root,
    /// O(subtree) otherwise (ZooKeeper scans every path).
    pub fn descendant_count(&self, path: &str) -> Option<u64> {
        let (key, node) = self.get_entry(path)?;
        if &**key == "/" {
            return Some(self.nodes.len() as u64 - 1);
        }
        // An explicit stack: depth is bounded only by the path length, not by our stack.
        let mut count = 0u64;
        let mut stack: Vec<(Arc<str>, Arc<str>)> = node
            .children
            .iter()
            .map(|c| (key.clone(), c.clone()))
            .collect();
        while let Some((parent, name)) = stack.pop() {
            count += 1;
            let child = crate::proto::path::join(&parent, &name);
            if let Some((ckey, cnode)) = self.get_entry(&child) {
                stack.extend(cnode.children.iter().map(|c| (ckey.clone(), c.clone())));
            }
        }
        Some(count)
    }

    /// Paths the reaper should remove now (containers that had children and are empty; TTL
    /// nodes with no children unmodified for their ttl). Sorted.
    pub fn reap_candidates(&self, now_ms: i64) -> Vec<String> {
        self.reapable
            .iter()
            .filter(|p| self.get(p).is_some_and(|n| n.is_reapable(now_ms)))
            .map(|p| p.to_string())
            .collect()
    }

    /// Number of containers and TTL nodes.
    pub fn reapable_count(&self) -> usize {
        self.reapable.len()
    }

    /// The digest of the whole tree (see `node_hash`).
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// Changes the node at `path` in place, keeping the digest.
    fn modify<T>(&mut self, path: &str, f: impl FnOnce(&mut Node) -> T) -> Option<T> {
        let node = Arc::make_mut(self.nodes.get_mut(path)?);
        let before = node_hash(path, node);
        let out = f(node);
        let after = node_hash(path, node);
        self.digest = self.digest.wrapping_sub(before).wrapping_add(after);
        Some(out)
    }

    // ---- mutation primitives (machine only; callers have validated everything) ----

    /// Adds `path` under `parent` (which exists and lacks the child) and bumps the parent's
    /// creation counter and pzxid. Returns the new node's key and Stat.
    pub(crate) fn insert(&mut self, parent: &str, path: &str, new: NewNode) -> (Arc<str>, Stat) {
        let key: Arc<str> = Arc::from(path);
        let name: Arc<str> = Arc::from(crate::proto::path::name(path));
        let found = self.modify(parent, |p| {
            p.children.insert(name);
            p.creations = p.creations.wrapping_add(1);
            p.pzxid = new.zxid;
        });
        debug_assert!(found.is_some(), "insert under a missing parent {parent}");
        let data_len = new.data.as_ref().map_or(0, |d| d.len());
        self.data_size += (path.len() + data_len) as u64;
        if new.ephemeral_owner != 0 {
            self.ephemerals += 1;
        }
        if new.kind != NodeKind::Normal {
            self.reapable.insert(key.clone());
        }
        let node = Node {
            data: new.data,
            acl: new.acl,
            children: OrdSet::new(),
            czxid: new.zxid,
            mzxid: new.zxid,
            pzxid: new.zxid,
            ctime: new.time_ms,
            mtime: new.time_ms,
            version: 0,
            aversion: 0,
            creations: 0,
            ephemeral_owner: new.ephemeral_owner,
            kind: new.kind,
        };
        let stat = node.stat();
        self.digest = self.digest.wrapping_add(node_hash(path, &node));
        let old = self.nodes.insert(key.clone(), Arc::new(node));
        debug_assert!(old.is_none(), "insert over an existing node {path}");
        (key, stat)
    }

    /// Removes a childless node and unlinks it from its parent (raising the parent's pzxid).
    /// Returns the removed node.
    pub(crate) fn remove(&mut self, parent: &str, path: &str, zxid: Zxid) -> Option<Arc<Node>> {
        let node = self.nodes.remove(path)?;
        debug_assert!(node.children.is_empty(), "remove of non-empty {path}");
        self.digest = self.digest.wrapping_sub(node_hash(path, &node));
        self.modify(parent, |p| {
            p.children.remove(crate::proto::path::name(path));
            p.pzxid = p.pzxid.max(zxid);
        });
        self.data_size = self
            .data_size
            .saturating_sub((path.len() + node.data_len()) as u64);
        if node.ephemeral_owner != 0 {
            self.ephemerals = self.ephemerals.saturating_sub(1);
        }
        if node.kind != NodeKind::Normal {
            self.reapable.remove(path);
        }
        Some(node)
    }

    /// setData: new data, version+1, mzxid and mtime. Returns the new Stat.
    pub(crate) fn set_data(
        &mut self,
        path: &str,
        data: Option<Arc<[u8]>>,
        zxid: Zxid,
        time_ms: i64,
    ) -> Option<Stat> {
        let new_len = data.as_ref().map_or(0, |d| d.len()) as u64;
        let (old_len, stat) = self.modify(path, |node| {
            let old_len = node.data_len() as u64;
            node.data = data;
            node.version = node.version.wrapping_add(1);
            node.mzxid = zxid;
            node.mtime = time_ms;
            (old_len, node.stat())
        })?;
        self.data_size = self.data_size.saturating_sub(old_len) + new_len;
        Some(stat)
    }

    /// setACL: new ACL and aversion+1; no zxid field changes.
    pub(crate) fn set_acl(&mut self, path: &str, acl: Arc<[Acl]>) -> Option<Stat> {
        self.modify(path, |node| {
            node.acl = acl;
            node.aversion = node.aversion.wrapping_add(1);
            node.stat()
        })
    }
}

/// Builds a `Tree` from nodes given in pre-order (a parent before its children, siblings in
/// ascending name order), as a snapshot stores them. Each node's children set is filled in
/// from the paths that follow it; `children` of a pushed node must be empty.
///
/// Two halves, so that a loader can run them on two cores: the builder checks the order and
/// completes nodes (`push`, `take_completed`); the [`TreeAssembler`] puts completed nodes into
/// the map. `finish` does both on one thread.
pub struct TreeBuilder {
    /// The path from the root to the last node pushed, each with the children seen so far.
    open: Vec<(Arc<str>, Node, Vec<Arc<str>>)>,
    /// Nodes whose subtree is complete, waiting for the assembler.
    completed: Vec<(Arc<str>, Node)>,
    started: bool,
}

impl Default for TreeBuilder {
    fn default() -> Self {
        TreeBuilder::new()
    }
}

impl TreeBuilder {
    pub fn new() -> TreeBuilder {
        TreeBuilder {
            open: Vec::new(),
            completed: Vec::new(),
            started: false,
        }
    }

    /// Adds the next node. Fails (with the reason) on anything but a valid pre-order.
    pub fn push(&mut self, path: Arc<str>, node: Node) -> Result<(), &'static str> {
        if !node.children.is_empty() {
            return Err("a pushed node must come without children");
        }
        if self.open.is_empty() {
            if self.started {
                return Err("a node after the whole tree");
            }
            if &*path != "/" {
                return Err("the first node is not the root");
            }
            self.started = true;
        } else {
            if &*path == "/" || !path.starts_with('/') || path.ends_with('/') {
                return Err("a bad path");
            }
            let (parent, name) = match path.rfind('/') {
                Some(0) => ("/", &path[1..]),
                Some(i) => (&path[..i], &path[i + 1..]),
                None => return Err("a bad path"),
            };
            while self.open.last().is_some_and(|(p, _, _)| &**p != parent) {
                self.close_last();
            }
            let Some((_, _, siblings)) = self.open.last_mut() else {
                return Err("a node before its parent");
            };
            if siblings.last().is_some_and(|last| &**last >= name) {
                return Err("siblings out of order");
            }
            siblings.push(Arc::from(name));
        }
        self.open.push((path, node, Vec::new()));
        Ok(())
    }

    /// Nodes completed since the last call, for a [`TreeAssembler`].
    pub fn take_completed(&mut self) -> Vec<(Arc<str>, Node)> {
        std::mem::take(&mut self.completed)
    }

    /// Completes every node still open: the input is over.
    pub fn close_all(&mut self) -> Result<(), &'static str> {
        if !self.started {
            return Err("no root");
        }
        while !self.open.is_empty() {
            self.close_last();
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<Tree, &'static str> {
        self.close_all()?;
        let mut assembler = TreeAssembler::new();
        assembler.add(self.take_completed());
        assembler.finish()
    }

    fn close_last(&mut self) {
        if let Some((path, mut node, children)) = self.open.pop() {
            node.children = children.into_iter().collect();
            self.completed.push((path, node));
        }
    }
}

/// The second half of [`TreeBuilder`]: the map and the tree's counters.
pub struct TreeAssembler {
    tree: Tree,
}

impl Default for TreeAssembler {
    fn default() -> Self {
        TreeAssembler::new()
    }
}

impl TreeAssembler {
    pub fn new() -> TreeAssembler {
        TreeAssembler {
            tree: Tree {
                nodes: HashMap::new(),
                reapable: OrdSet::new(),
                data_size: 0,
                ephemerals: 0,
                digest: 0,
            },
        }
    }

    pub fn add(&mut self, completed: Vec<(Arc<str>, Node)>) {
        let t = &mut self.tree;
        for (path, node) in completed {
            t.data_size += (path.len() + node.data_len()) as u64;
            if node.ephemeral_owner != 0 {
                t.ephemerals += 1;
            }
            if node.kind != NodeKind::Normal {
                t.reapable.insert(path.clone());
            }
            t.digest = t.digest.wrapping_add(node_hash(&path, &node));
            t.nodes.insert(path, Arc::new(node));
        }
    }

    pub fn finish(self) -> Result<Tree, &'static str> {
        if !self.tree.nodes.contains_key("/") {
            return Err("no root");
        }
        Ok(self.tree)
    }
}

/// Convenience for readers: may the caller read this node?
pub fn can_read(node: &Node, ids: &[Id]) -> bool {
    acl::check(node.acl(), perms::READ, ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> Tree {
        Tree::new(Arc::from(Acl::open_unsafe()), Arc::from(Acl::read_unsafe()))
    }

    fn new_node(zxid: Zxid) -> NewNode {
        NewNode {
            data: Some(Arc::from(&b"hi"[..])),
            acl: Arc::from(Acl::open_unsafe()),
            ephemeral_owner: 0,
            kind: NodeKind::Normal,
            zxid,
            time_ms: 100,
        }
    }

    fn recomputed_digest(t: &Tree) -> u64 {
        t.iter().fold(0u64, |d, (path, node)| {
            d.wrapping_add(node_hash(path, node))
        })
    }

    #[test]
    fn digest_follows_every_change_and_survives_a_rebuild() {
        let mut t = fresh();
        let d0 = t.digest();
        assert_eq!(d0, recomputed_digest(&t));
        t.insert("/", "/a", new_node(5));
        t.insert("/a", "/a/b", new_node(6));
        assert_ne!(t.digest(), d0);
        t.set_data("/a", Some(Arc::from(&b"x"[..])), 7, 200);
        t.set_acl("/a/b", Arc::from(Acl::read_unsafe()));
        assert_eq!(t.digest(), recomputed_digest(&t));
        let mut other = t.clone();
        other.set_data("/a/b", None, 8, 300);
        assert_ne!(
            other.digest(),
            t.digest(),
            "a different state, a different digest"
        );
        t.remove("/a", "/a/b", 9);
        assert_eq!(t.digest(), recomputed_digest(&t));
        // Rebuilt in pre-order, as a snapshot load does.
        let mut b = TreeBuilder::new();
        fn preorder(t: &Tree, path: &str, out: &mut Vec<Arc<str>>) {
            out.push(Arc::from(path));
            for c in t.get(path).unwrap().children().iter() {
                let child = if path == "/" {
                    format!("/{c}")
                } else {
                    format!("{path}/{c}")
                };
                preorder(t, &child, out);
            }
        }
        let mut paths = Vec::new();
        preorder(&t, "/", &mut paths);
        let mut asm = TreeAssembler::new();
        for p in paths {
            let mut n = t.get(&p).unwrap().clone();
            n.children = OrdSet::new();
            b.push(p, n).unwrap();
            asm.add(b.take_completed());
        }
        b.close_all().unwrap();
        asm.add(b.take_completed());
        assert_eq!(asm.finish().unwrap().digest(), t.digest());
    }

    #[test]
    fn builtins_match_a_fresh_zookeeper() {
        let t = fresh();
        assert_eq!(t.node_count(), 4);
        let root = t.get("/").unwrap().stat();
        assert_eq!((root.cversion, root.num_children, root.czxid), (-1, 1, 0));
        assert_eq!(t.get("").unwrap().stat(), root, "\"\" aliases the root");
        let zk = t.get("/zookeeper").unwrap();
        assert_eq!(zk.stat().cversion, -2);
        assert_eq!(
            zk.children().iter().map(|c| &**c).collect::<Vec<_>>(),
            ["config", "quota"]
        );
        let config = t.get("/zookeeper/config").unwrap();
        assert_eq!(config.stat().aversion, -1);
        assert_eq!(config.data(), Some(&b""[..]));
        assert_eq!(config.acl(), &Acl::read_unsafe()[..]);
        assert_eq!(t.descendant_count("/"), Some(3));
        assert_eq!(t.descendant_count("/zookeeper"), Some(2));
        assert_eq!(t.descendant_count("/nope"), None);
    }

    #[test]
    fn insert_remove_counters_and_snapshots() {
        let mut t = fresh();
        let before = t.clone();
        t.insert("/", "/a", new_node(5));
        t.insert("/a", "/a/b", new_node(6));
        let a = t.get("/a").unwrap().stat();
        assert_eq!(
            (a.cversion, a.num_children, a.pzxid, a.data_length),
            (1, 1, 6, 2)
        );
        assert_eq!(t.descendant_count("/a"), Some(1));
        assert_eq!(t.descendant_count("/"), Some(5));
        t.remove("/a", "/a/b", 7);
        let a = t.get("/a").unwrap().stat();
        assert_eq!((a.cversion, a.num_children, a.pzxid), (2, 0, 7));
        // The earlier clone is untouched (MVCC).
        assert!(before.get("/a").is_none());
        assert_eq!(before.node_count(), 4);
        assert_eq!(
            t.approximate_data_size(),
            before.approximate_data_size() + 2 + 2
        );
    }

    #[test]
    fn reapable_rules() {
        let mut t = fresh();
        let mut c = new_node(5);
        c.kind = NodeKind::Container;
        t.insert("/", "/c", c);
        let mut ttl = new_node(6);
        ttl.kind = NodeKind::Ttl(50);
        t.insert("/", "/t", ttl);
        assert_eq!(t.reap_candidates(149), Vec::<String>::new());
        assert_eq!(t.reap_candidates(150), vec!["/t".to_string()]);
        t.insert("/c", "/c/x", new_node(7));
        t.insert("/t", "/t/x", new_node(8));
        assert_eq!(t.reap_candidates(1000), Vec::<String>::new());
        t.remove("/c", "/c/x", 9);
        t.remove("/t", "/t/x", 10);
        assert_eq!(
            t.reap_candidates(1000),
            vec!["/c".to_string(), "/t".to_string()]
        );
        t.remove("/", "/c", 11);
        assert_eq!(t.reapable_count(), 1);
    }
}
