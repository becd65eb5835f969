//! The per-shard watch registry (protocol reference, sections 12.2, 12.3 and 12.6).
//!
//! Sans-IO: a shard registers watches for its own connections and, after every apply, maps the
//! applier's [`Trigger`]s to `(connection, event, path)` notifications. Watches belong to a
//! connection (not a session) and are never persisted.
//!
//! Each `(connection, path)` pair holds a set of kinds (a bit set). One-shot kinds (data, exist,
//! child) are removed when they fire; persistent kinds stay. A connection has at most one
//! persistent mode per path. Recursive watches also sit in an index keyed by path, so that a
//! change looks up only the ancestors of the changed path instead of scanning every watch.
//!
//! Two ZooKeeper 3.8.0 quirks are deliberately not reproduced (3.9 fixed both, ZOOKEEPER-4466):
//! in 3.8.0 a standard watch registered on a path that holds a persistent watch silently turns
//! the persistent watch into a one-shot one, and removing only the Children half of a persistent
//! watch leaves its data half firing. Here the kinds are independent and `remove` drops a
//! persistent watch as a whole.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::Mutex;

use crate::proto::types::{Acl, SessionId};
use crate::proto::types::{AddWatchMode, EventType, WatcherType};
use crate::txn::Trigger;

/// A connection id, unique within the shard.
pub type ConnId = u64;

/// What kind of watch a request registers (section 12.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WatchKind {
    /// getData/exists with watch=true on an existing node.
    Data,
    /// exists with watch=true on a missing node.
    Exist,
    /// getChildren/getChildren2 with watch=true.
    Child,
    /// addWatch mode 0.
    Persistent,
    /// addWatch mode 1.
    PersistentRecursive,
}

impl From<AddWatchMode> for WatchKind {
    fn from(mode: AddWatchMode) -> Self {
        match mode {
            AddWatchMode::Persistent => WatchKind::Persistent,
            AddWatchMode::PersistentRecursive => WatchKind::PersistentRecursive,
        }
    }
}

// Bits of the per-(connection, path) kind set.
const DATA: u8 = 1;
const EXIST: u8 = 2;
const CHILD: u8 = 4;
const PERSISTENT: u8 = 8;
const RECURSIVE: u8 = 16;
const ONE_SHOT: u8 = DATA | EXIST | CHILD;
/// Kinds ZooKeeper keeps in its `dataWatches` table (what wchs/wchc/wchp list).
const DATA_SIDE: u8 = DATA | EXIST | PERSISTENT | RECURSIVE;
/// Kinds ZooKeeper keeps in its `childWatches` table (3.8 puts recursive watches in
/// `dataWatches` only).
const CHILD_SIDE: u8 = CHILD | PERSISTENT;

impl WatchKind {
    fn bit(self) -> u8 {
        match self {
            WatchKind::Data => DATA,
            WatchKind::Exist => EXIST,
            WatchKind::Child => CHILD,
            WatchKind::Persistent => PERSISTENT,
            WatchKind::PersistentRecursive => RECURSIVE,
        }
    }
}

/// Which kinds a checkWatches/removeWatches `type` matches: persistent and recursive watches
/// count as both data and child watches (section 12.6).
fn type_mask(t: WatcherType) -> u8 {
    match t {
        WatcherType::Children => CHILD | PERSISTENT | RECURSIVE,
        WatcherType::Data => DATA | EXIST | PERSISTENT | RECURSIVE,
        WatcherType::Any => DATA | EXIST | CHILD | PERSISTENT | RECURSIVE,
    }
}

/// Kinds registered exactly on the changed path that an event fires (section 12.3).
fn exact_mask(event: EventType) -> u8 {
    match event {
        EventType::NodeCreated | EventType::NodeDataChanged => DATA | EXIST | PERSISTENT,
        EventType::NodeDeleted => DATA | EXIST | CHILD | PERSISTENT,
        EventType::NodeChildrenChanged => CHILD | PERSISTENT,
    }
}

/// Default for `max_watches_per_session`: watched paths one session (its connection on this
/// member) may hold. Generous on purpose: Curator's TreeCache and similar caches set one watch
/// per node of a subtree (data and child watches on one path count once here), and ZooKeeper
/// itself has no limit; half a million covers caches of very large subtrees while one
/// session can hold at most an eighth of the member's total.
pub const DEFAULT_MAX_WATCHES_PER_SESSION: usize = 1 << 19;

/// Default for `max_watches`: watched (connection, path) pairs on this member, every shard
/// together. A pair costs about 250-300 bytes (indexes, the shared path, the per-path watcher
/// map), so this bounds watch memory near 1.2 GiB whatever the clients do.
pub const DEFAULT_MAX_WATCHES_TOTAL: usize = 1 << 22;

/// Which limit refused a watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    #[error("the session already holds {limit} watches (max_watches_per_session)")]
    TooManyWatches { limit: usize },
    #[error("this member already holds {limit} watches (max_watches)")]
    MemberFull { limit: usize },
}

impl WatchError {
    /// The setting that refused the watch, for logs.
    pub fn setting(self) -> &'static str {
        match self {
            WatchError::TooManyWatches { .. } => "max_watches_per_session",
            WatchError::MemberFull { .. } => "max_watches",
        }
    }
}

/// The member-wide count of watched (connection, path) pairs, shared by every shard's
/// registry: each new pair takes one unit, each forgotten pair gives it back.
#[derive(Debug)]
pub struct WatchBudget {
    limit: usize,
    used: AtomicUsize,
    /// Sessions refused a watch at least once, until they end: later refusals are counted
    /// but not logged. Member-wide, as a resumed session may land on another shard. Touched
    /// only on a refusal and, while not empty, when a session ends.
    refused: Mutex<HashSet<SessionId>>,
    any_refused: AtomicBool,
}

impl WatchBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(WatchBudget {
            limit,
            used: AtomicUsize::new(0),
            refused: Mutex::new(HashSet::new()),
            any_refused: AtomicBool::new(false),
        })
    }

    /// Pairs held now, every shard together.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    fn try_take(&self) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                (u < self.limit).then_some(u + 1)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }

    /// Whether this is `session`'s first refusal on this member (log once per session, count
    /// every one).
    pub fn first_refusal(&self, session: SessionId) -> bool {
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        self.any_refused.store(true, Ordering::Relaxed);
        refused.insert(session)
    }

    /// A session ended: if its id ever came back, its first refusal would be logged again.
    pub fn forget_session(&self, session: SessionId) {
        if self.any_refused.load(Ordering::Relaxed) {
            let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
            refused.remove(&session);
            self.any_refused
                .store(!refused.is_empty(), Ordering::Relaxed);
        }
    }
}

/// What one `fire` produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fired {
    /// `(connection, event, path)` to deliver, in order.
    pub events: Vec<(ConnId, EventType, Arc<str>)>,
    /// Events not delivered because their watcher may not READ the node they name.
    pub filtered: usize,
}

/// Data-side totals, as `wchs` prints them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchSummary {
    /// Connections holding at least one data-side watch.
    pub connections: usize,
    /// Paths with at least one data-side watch.
    pub paths: usize,
    /// Data-side (connection, path) pairs.
    pub watches: usize,
}

/// The watches of one shard.
#[derive(Debug)]
pub struct WatchRegistry {
    /// path → connection → kind bits (never 0: empty entries are removed).
    by_path: HashMap<Arc<str>, BTreeMap<ConnId, u8>>,
    /// connection → the paths it watches (any kind).
    by_conn: HashMap<ConnId, BTreeSet<Arc<str>>>,
    /// path → connections with a recursive watch on it: the ancestor walk looks here only.
    recursive: HashMap<Arc<str>, BTreeSet<ConnId>>,
    /// Pairs with a data-side / child-side kind: `zk_watch_count` is their sum.
    data_side: usize,
    child_side: usize,
    max_per_conn: usize,
    /// The member-wide count, shared with the other shards.
    budget: Arc<WatchBudget>,
    /// Reused by `fire` to avoid an allocation per trigger.
    scratch: Vec<(ConnId, u8)>,
}

impl Default for WatchRegistry {
    fn default() -> Self {
        WatchRegistry::new(
            DEFAULT_MAX_WATCHES_PER_SESSION,
            WatchBudget::new(DEFAULT_MAX_WATCHES_TOTAL),
        )
    }
}

impl Drop for WatchRegistry {
    fn drop(&mut self) {
        self.budget.give_back(self.len());
    }
}

impl WatchRegistry {
    /// A registry allowing each connection at most `max_per_conn` watched paths, and taking
    /// every pair from the member-wide `budget`.
    pub fn new(max_per_conn: usize, budget: Arc<WatchBudget>) -> Self {
        WatchRegistry {
            by_path: HashMap::new(),
            by_conn: HashMap::new(),
            recursive: HashMap::new(),
            data_side: 0,
            child_side: 0,
            max_per_conn,
            budget,
            scratch: Vec::new(),
        }
    }

    /// Adds a watch. Re-registering an existing kind is a no-op; a persistent mode replaces the
    /// connection's other persistent mode on the same path.
    ///
    /// A new watched path must fit both the connection's limit and the member's budget;
    /// otherwise nothing is registered and the caller must fail the request (never a silent
    /// drop). Another kind on a path the connection already watches always fits.
    pub fn register(
        &mut self,
        conn: ConnId,
        path: &str,
        kind: WatchKind,
    ) -> Result<(), WatchError> {
        self.register_shared(conn, path, None, kind)
    }

    /// [`register`](Self::register), reusing `shared` (the tree's own copy of `path`, for a
    /// node that exists) when the registry holds no copy yet: a watch on an existing node then
    /// allocates no path string of its own.
    pub fn register_shared(
        &mut self,
        conn: ConnId,
        path: &str,
        shared: Option<&Arc<str>>,
        kind: WatchKind,
    ) -> Result<(), WatchError> {
        let old = self.bits(conn, path);
        let new = match kind {
            WatchKind::Persistent => (old & !RECURSIVE) | PERSISTENT,
            WatchKind::PersistentRecursive => (old & !PERSISTENT) | RECURSIVE,
            _ => old | kind.bit(),
        };
        if old == 0 && new != 0 {
            let held = self.by_conn.get(&conn).map_or(0, BTreeSet::len);
            let error = if held >= self.max_per_conn {
                Some(WatchError::TooManyWatches {
                    limit: self.max_per_conn,
                })
            } else if !self.budget.try_take() {
                Some(WatchError::MemberFull {
                    limit: self.budget.limit(),
                })
            } else {
                None
            };
            if let Some(error) = error {
                return Err(error);
            }
        }
        let key = match shared {
            Some(key) if **key == *path && !self.by_path.contains_key(path) => key.clone(),
            _ => self.intern(path),
        };
        self.set(conn, &key, old, new);
        Ok(())
    }

    /// The notifications for one applied command's triggers, in trigger order; within one
    /// trigger, one event per connection, in ascending connection id. One-shot watches that
    /// fired are removed.
    ///
    /// ACLs at delivery, as ZooKeeper since ZOOKEEPER-4799 (CVE-2024-23944): an event goes to
    /// a watcher only if `may_read(conn, trigger.acl)` (its connection's identities, now, have
    /// READ on the node the event names, with the ACL that node had at that change). This holds
    /// for every kind of watch, as in ZooKeeper's `ServerCnxn.process(event, acl)`: a one-shot
    /// watch whose event is withheld is consumed all the same, a persistent one stays.
    pub fn fire(
        &mut self,
        triggers: &[Trigger],
        may_read: &mut dyn FnMut(ConnId, &[Acl]) -> bool,
    ) -> Fired {
        if self.by_path.is_empty() && self.recursive.is_empty() {
            return Fired::default();
        }
        let mut out = Vec::new();
        let mut filtered = 0;
        let mut hits: BTreeSet<ConnId> = BTreeSet::new();
        let mut changes = std::mem::take(&mut self.scratch);
        for trigger in triggers {
            hits.clear();
            changes.clear();
            let mask = exact_mask(trigger.event);
            if let Some(watchers) = self.by_path.get(&*trigger.path) {
                for (&conn, &bits) in watchers {
                    if bits & mask != 0 {
                        hits.insert(conn);
                        if bits & mask & ONE_SHOT != 0 {
                            changes.push((conn, bits));
                        }
                    }
                }
            }
            for &(conn, old) in &changes {
                self.set(conn, &trigger.path, old, old & !(mask & ONE_SHOT));
            }
            // Recursive watches: the node itself and every ancestor; never NodeChildrenChanged.
            if trigger.event != EventType::NodeChildrenChanged && !self.recursive.is_empty() {
                for ancestor in ancestors(&trigger.path) {
                    if let Some(conns) = self.recursive.get(ancestor) {
                        hits.extend(conns.iter().copied());
                    }
                }
            }
            for &conn in &hits {
                if may_read(conn, &trigger.acl) {
                    out.push((conn, trigger.event, trigger.path.clone()));
                } else {
                    filtered += 1;
                }
            }
        }
        self.scratch = changes;
        Fired {
            events: out,
            filtered,
        }
    }

    /// checkWatches: whether `conn` holds a watch of that type on exactly `path`.
    pub fn check(&self, conn: ConnId, path: &str, t: WatcherType) -> bool {
        self.bits(conn, path) & type_mask(t) != 0
    }

    /// removeWatches: drops `conn`'s watches of that type on `path`; false (NoWatcher) when it
    /// had none. No event is produced (the client makes its own).
    pub fn remove(&mut self, conn: ConnId, path: &str, t: WatcherType) -> bool {
        let old = self.bits(conn, path);
        let mask = type_mask(t);
        if old & mask == 0 {
            return false;
        }
        let key = self.intern(path);
        self.set(conn, &key, old, old & !mask);
        true
    }

    /// The member-wide budget this registry takes from.
    pub fn budget(&self) -> &Arc<WatchBudget> {
        &self.budget
    }

    /// Forgets every watch of a closed connection; returns how many paths it watched.
    pub fn remove_conn(&mut self, conn: ConnId) -> usize {
        let Some(paths) = self.by_conn.remove(&conn) else {
            return 0;
        };
        let n = paths.len();
        self.budget.give_back(n);
        for path in paths {
            let Some(watchers) = self.by_path.get_mut(&path) else {
                continue;
            };
            let old = watchers.remove(&conn).unwrap_or(0);
            if watchers.is_empty() {
                self.by_path.remove(&path);
            }
            self.account(&path, conn, old, 0);
        }
        n
    }

    /// Number of (connection, path) pairs holding any watch.
    pub fn len(&self) -> usize {
        self.by_conn.values().map(BTreeSet::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_conn.is_empty()
    }

    /// Paths `conn` watches (any kind).
    pub fn conn_watch_count(&self, conn: ConnId) -> usize {
        self.by_conn.get(&conn).map_or(0, BTreeSet::len)
    }

    /// mntr's `zk_watch_count`: data-side plus child-side pairs, as ZooKeeper counts its two
    /// tables (a persistent watch counts twice, a recursive one once).
    pub fn watch_count(&self) -> usize {
        self.data_side + self.child_side
    }

    /// wchs's numbers (data and exist watches, persistent ones included; no child watches).
    /// Paths are per shard: to merge shards, union `data_watches_by_path` instead of adding.
    pub fn summary(&self) -> WatchSummary {
        let connections = self
            .by_conn
            .iter()
            .filter(|(conn, paths)| paths.iter().any(|p| self.bits(**conn, p) & DATA_SIDE != 0))
            .count();
        let paths = self
            .by_path
            .values()
            .filter(|watchers| watchers.values().any(|b| b & DATA_SIDE != 0))
            .count();
        WatchSummary {
            connections,
            paths,
            watches: self.data_side,
        }
    }

    /// wchc: data-side watches per connection, sorted by connection then path.
    pub fn data_watches_by_conn(&self) -> Vec<(ConnId, Vec<Arc<str>>)> {
        let mut out: Vec<(ConnId, Vec<Arc<str>>)> = self
            .by_conn
            .iter()
            .map(|(&conn, paths)| {
                let list = paths
                    .iter()
                    .filter(|p| self.bits(conn, p) & DATA_SIDE != 0)
                    .cloned()
                    .collect::<Vec<_>>();
                (conn, list)
            })
            .filter(|(_, list)| !list.is_empty())
            .collect();
        out.sort_by_key(|(conn, _)| *conn);
        out
    }

    /// wchp: data-side watches per path, sorted by path then connection.
    pub fn data_watches_by_path(&self) -> Vec<(Arc<str>, Vec<ConnId>)> {
        let mut out: Vec<(Arc<str>, Vec<ConnId>)> = self
            .by_path
            .iter()
            .map(|(path, watchers)| {
                let conns = watchers
                    .iter()
                    .filter(|(_, b)| **b & DATA_SIDE != 0)
                    .map(|(c, _)| *c)
                    .collect::<Vec<_>>();
                (path.clone(), conns)
            })
            .filter(|(_, conns)| !conns.is_empty())
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn bits(&self, conn: ConnId, path: &str) -> u8 {
        self.by_path
            .get(path)
            .and_then(|w| w.get(&conn))
            .copied()
            .unwrap_or(0)
    }

    /// The registry's shared copy of `path`, or a new one.
    fn intern(&self, path: &str) -> Arc<str> {
        if let Some((key, _)) = self.by_path.get_key_value(path) {
            return key.clone();
        }
        if let Some((key, _)) = self.recursive.get_key_value(path) {
            return key.clone();
        }
        Arc::from(path)
    }

    /// Sets `(conn, path)`'s kinds from `old` to `new`, keeping every index in step.
    fn set(&mut self, conn: ConnId, path: &Arc<str>, old: u8, new: u8) {
        if old == new {
            return;
        }
        if new == 0 {
            if let Some(watchers) = self.by_path.get_mut(&**path) {
                watchers.remove(&conn);
                if watchers.is_empty() {
                    self.by_path.remove(&**path);
                }
            }
            if let Some(paths) = self.by_conn.get_mut(&conn) {
                if paths.remove(&**path) {
                    self.budget.give_back(1);
                }
                if paths.is_empty() {
                    self.by_conn.remove(&conn);
                }
            }
        } else {
            self.by_path
                .entry(path.clone())
                .or_default()
                .insert(conn, new);
            if old == 0 {
                self.by_conn.entry(conn).or_default().insert(path.clone());
            }
        }
        self.account(path, conn, old, new);
    }

    /// Counters and the recursive index, for a change of kinds already made in the main maps.
    fn account(&mut self, path: &Arc<str>, conn: ConnId, old: u8, new: u8) {
        let was_data = old & DATA_SIDE != 0;
        let is_data = new & DATA_SIDE != 0;
        if was_data != is_data {
            if is_data {
                self.data_side += 1;
            } else {
                self.data_side -= 1;
            }
        }
        let was_child = old & CHILD_SIDE != 0;
        let is_child = new & CHILD_SIDE != 0;
        if was_child != is_child {
            if is_child {
                self.child_side += 1;
            } else {
                self.child_side -= 1;
            }
        }
        if (old ^ new) & RECURSIVE != 0 {
            if new & RECURSIVE != 0 {
                self.recursive.entry(path.clone()).or_default().insert(conn);
            } else if let Some(conns) = self.recursive.get_mut(&**path) {
                conns.remove(&conn);
                if conns.is_empty() {
                    self.recursive.remove(&**path);
                }
            }
        }
    }
}

/// `path` and each of its ancestors up to `/` ("/a/b" → "/a/b", "/a", "/").
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(path);
    std::iter::from_fn(move || {
        let current = next?;
        next = match current.rfind('/') {
            Some(0) if current.len() > 1 => Some("/"),
            Some(i) if i > 0 => current.get(..i),
            _ => None,
        };
        Some(current)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::types::{perms, Id};
    use EventType::*;

    fn t(path: &str, event: EventType) -> Trigger {
        Trigger {
            path: Arc::from(path),
            event,
            acl: Arc::from(Vec::new()),
        }
    }

    /// A trigger on a node only `digest:secret` may READ.
    fn secret(path: &str, event: EventType) -> Trigger {
        Trigger {
            acl: Arc::from(vec![Acl {
                perms: perms::ALL,
                id: Id::new("digest", "secret:hash"),
            }]),
            ..t(path, event)
        }
    }

    fn open_to_all(_: ConnId, _: &[Acl]) -> bool {
        true
    }

    fn fire(reg: &mut WatchRegistry, triggers: &[Trigger]) -> Vec<(u64, EventType, String)> {
        let fired = reg.fire(triggers, &mut open_to_all);
        assert_eq!(fired.filtered, 0);
        strings(fired.events)
    }

    fn strings(events: Vec<(ConnId, EventType, Arc<str>)>) -> Vec<(u64, EventType, String)> {
        events
            .into_iter()
            .map(|(c, e, p)| (c, e, p.to_string()))
            .collect()
    }

    /// Fires with connection 1 holding `digest:secret` and every other connection anonymous
    /// (an `ip` identity only); returns the events and how many were withheld.
    fn fire_acl(
        reg: &mut WatchRegistry,
        triggers: &[Trigger],
    ) -> (Vec<(u64, EventType, String)>, usize) {
        let owner = [Id::new("digest", "secret:hash"), Id::new("ip", "127.0.0.1")];
        let anon = [Id::new("ip", "127.0.0.1")];
        let mut may_read = |conn: ConnId, acl: &[Acl]| {
            let ids: &[Id] = if conn == 1 { &owner } else { &anon };
            crate::tree::acl::check(acl, perms::READ, ids)
        };
        let fired = reg.fire(triggers, &mut may_read);
        (strings(fired.events), fired.filtered)
    }

    fn ev(conn: u64, e: EventType, p: &str) -> (u64, EventType, String) {
        (conn, e, p.to_string())
    }

    /// A create of `/p/c` as the applier reports it: the node's event, then the parent's.
    fn create(path: &str, parent: &str) -> Vec<Trigger> {
        vec![t(path, NodeCreated), t(parent, NodeChildrenChanged)]
    }

    fn delete(path: &str, parent: &str) -> Vec<Trigger> {
        vec![t(path, NodeDeleted), t(parent, NodeChildrenChanged)]
    }

    #[test]
    fn ancestors_walk_to_root() {
        assert_eq!(
            ancestors("/a/b/c").collect::<Vec<_>>(),
            ["/a/b/c", "/a/b", "/a", "/"]
        );
        assert_eq!(ancestors("/a").collect::<Vec<_>>(), ["/a", "/"]);
        assert_eq!(ancestors("/").collect::<Vec<_>>(), ["/"]);
        assert_eq!(ancestors("").collect::<Vec<_>>(), [""]);
        assert_eq!(ancestors("x/y").collect::<Vec<_>>(), ["x/y", "x"]);
    }

    #[test]
    fn data_watch_is_one_shot() {
        let mut reg = WatchRegistry::default();
        reg.register(1, "/rk", WatchKind::Data).unwrap();
        let set = [t("/rk", NodeDataChanged)];
        assert_eq!(fire(&mut reg, &set), [ev(1, NodeDataChanged, "/rk")]);
        assert_eq!(fire(&mut reg, &set), []);
        assert!(reg.is_empty());
        assert_eq!(reg.watch_count(), 0);
    }

    #[test]
    fn data_watch_fires_on_delete_not_on_children_changed() {
        let mut reg = WatchRegistry::default();
        reg.register(1, "/p", WatchKind::Data).unwrap();
        assert_eq!(fire(&mut reg, &create("/p/c", "/p")), []);
        assert!(reg.check(1, "/p", WatcherType::Data), "still registered");
        assert_eq!(
            fire(&mut reg, &delete("/p", "/")),
            [ev(1, NodeDeleted, "/p")]
        );
        assert!(reg.is_empty());
    }

    #[test]
    fn exist_watch_fires_on_create() {
        let mut reg = WatchRegistry::default();
        reg.register(2, "/rk/later", WatchKind::Exist).unwrap();
        assert_eq!(
            fire(&mut reg, &create("/rk/later", "/rk")),
            [ev(2, NodeCreated, "/rk/later")]
        );
        assert!(reg.is_empty());
    }

    #[test]
    fn child_watch_fires_on_child_change_and_own_delete_only() {
        let mut reg = WatchRegistry::default();
        reg.register(1, "/p", WatchKind::Child).unwrap();
        // setData and create of /p itself do not fire a child watch on /p.
        assert_eq!(
            fire(&mut reg, &[t("/p", NodeDataChanged), t("/p", NodeCreated)]),
            []
        );
        assert_eq!(
            fire(&mut reg, &create("/p/c", "/p")),
            [ev(1, NodeChildrenChanged, "/p")]
        );
        assert!(reg.is_empty());
        reg.register(1, "/p", WatchKind::Child).unwrap();
        assert_eq!(
            fire(&mut reg, &delete("/p", "/")),
            [ev(1, NodeDeleted, "/p")]
        );
        assert!(reg.is_empty());
    }

    #[test]
    fn firing_one_kind_keeps_the_others() {
        let mut reg = WatchRegistry::default();
        reg.register(1, "/p", WatchKind::Data).unwrap();
        reg.register(1, "/p", WatchKind::Child).unwrap();
        assert_eq!(
            fire(&mut reg, &create("/p/c", "/p")),
            [ev(1, NodeChildrenChanged, "/p")]
        );
        assert!(reg.check(1, "/p", WatcherType::Data));
        assert!(!reg.check(1, "/p", WatcherType::Children));
        assert_eq!(
            fire(&mut reg, &[t("/p", NodeDataChanged)]),
            [ev(1, NodeDataChanged, "/p")]
        );
        assert!(reg.is_empty());
    }

    #[test]
    fn one_event_per_connection_per_trigger() {
        let mut reg = WatchRegistry::default();
        reg.register(1, "/p/c", WatchKind::Data).unwrap();
        reg.register(1, "/p/c", WatchKind::Child).unwrap();
        reg.register(1, "/p/c", WatchKind::Exist).unwrap();
        reg.register(1, "/", WatchKind::PersistentRecursive)
            .unwrap();
        let got = fire(&mut reg, &delete("/p/c", "/p"));
        assert_eq!(got, [ev(1, NodeDeleted, "/p/c")]);
        assert!(!reg.check(1, "/p/c", WatcherType::Any));
    }

    #[test]
    fn events_in_trigger_order_then_connection_order() {
        let mut reg = WatchRegistry::default();
        for conn in [9, 3, 5] {
            reg.register(conn, "/p/c", WatchKind::Data).unwrap();
            reg.register(conn, "/p", WatchKind::Child).unwrap();
        }
        let got = fire(&mut reg, &delete("/p/c", "/p"));
        assert_eq!(
            got,
            [
                ev(3, NodeDeleted, "/p/c"),
                ev(5, NodeDeleted, "/p/c"),
                ev(9, NodeDeleted, "/p/c"),
                ev(3, NodeChildrenChanged, "/p"),
                ev(5, NodeChildrenChanged, "/p"),
                ev(9, NodeChildrenChanged, "/p"),
            ]
        );
    }

    #[test]
    fn top_level_node_parent_is_root() {
        let mut reg = WatchRegistry::default();
        reg.register(1, "/", WatchKind::Child).unwrap();
        reg.register(1, "/cw", WatchKind::Data).unwrap();
        let got = fire(&mut reg, &delete("/cw", "/"));
        assert_eq!(
            got,
            [ev(1, NodeDeleted, "/cw"), ev(1, NodeChildrenChanged, "/")]
        );
    }

    #[test]
    fn persistent_fires_every_event_on_its_node_and_stays() {
        let mut reg = WatchRegistry::default();
        reg.register(1, "/p", WatchKind::Persistent).unwrap();
        let triggers = [
            t("/p", NodeCreated),
            t("/p", NodeDataChanged),
            t("/p", NodeChildrenChanged),
            t("/p/c", NodeDataChanged),
            t("/p/c", NodeCreated),
            t("/p", NodeDeleted),
        ];
        assert_eq!(
            fire(&mut reg, &triggers),
            [
                ev(1, NodeCreated, "/p"),
                ev(1, NodeDataChanged, "/p"),
                ev(1, NodeChildrenChanged, "/p"),
                ev(1, NodeDeleted, "/p"),
            ]
        );
        assert!(
            reg.check(1, "/p", WatcherType::Data),
            "persistent survives even a delete"
        );
        assert_eq!(
            fire(&mut reg, &[t("/p", NodeCreated)]),
            [ev(1, NodeCreated, "/p")]
        );
    }

    #[test]
    fn recursive_fires_for_node_and_descendants_never_children_changed() {
        let mut reg = WatchRegistry::default();
        reg.register(2, "/rk", WatchKind::PersistentRecursive)
            .unwrap();
        let got = fire(&mut reg, &create("/rk/w1/deep", "/rk/w1"));
        assert_eq!(got, [ev(2, NodeCreated, "/rk/w1/deep")]);
        let got = fire(
            &mut reg,
            &[t("/rk", NodeDataChanged), t("/rk", NodeChildrenChanged)],
        );
        assert_eq!(got, [ev(2, NodeDataChanged, "/rk")]);
        let got = fire(&mut reg, &delete("/rk/w1/deep", "/rk/w1"));
        assert_eq!(got, [ev(2, NodeDeleted, "/rk/w1/deep")]);
        // Not for siblings that merely share a prefix, nor for the parent.
        let got = fire(&mut reg, &[t("/rkx", NodeCreated), t("/", NodeDataChanged)]);
        assert_eq!(got, []);
        assert!(reg.check(2, "/rk", WatcherType::Any), "still registered");
    }

    #[test]
    fn recursive_on_root_sees_everything() {
        let mut reg = WatchRegistry::default();
        reg.register(4, "/", WatchKind::PersistentRecursive)
            .unwrap();
        assert_eq!(
            fire(&mut reg, &create("/a", "/")),
            [ev(4, NodeCreated, "/a")]
        );
        assert_eq!(
            fire(&mut reg, &[t("/", NodeDataChanged)]),
            [ev(4, NodeDataChanged, "/")]
        );
    }

    #[test]
    fn recursive_and_one_shot_on_same_path_one_event_and_one_shot_removed() {
        let mut reg = WatchRegistry::default();
        reg.register(1, "/a", WatchKind::PersistentRecursive)
            .unwrap();
        reg.register(1, "/a/b", WatchKind::Data).unwrap();
        reg.register(2, "/a/b", WatchKind::Data).unwrap();
        let got = fire(&mut reg, &[t("/a/b", NodeDataChanged)]);
        assert_eq!(
            got,
            [
                ev(1, NodeDataChanged, "/a/b"),
                ev(2, NodeDataChanged, "/a/b")
            ]
        );
        assert!(!reg.check(1, "/a/b", WatcherType::Data));
        assert!(!reg.check(2, "/a/b", WatcherType::Data));
        let got = fire(&mut reg, &[t("/a/b", NodeDataChanged)]);
        assert_eq!(got, [ev(1, NodeDataChanged, "/a/b")]);
    }

    #[test]
    fn one_persistent_mode_per_path() {
        let mut reg = WatchRegistry::default();
        reg.register(1, "/p", WatchKind::Persistent).unwrap();
        reg.register(1, "/p", WatchKind::PersistentRecursive)
            .unwrap();
        assert_eq!(reg.len(), 1);
        assert_eq!(
            reg.watch_count(),
            1,
            "recursive counts on the data side only"
        );
        // Recursive now: no NodeChildrenChanged, descendants fire.
        let got = fire(&mut reg, &create("/p/c", "/p"));
        assert_eq!(got, [ev(1, NodeCreated, "/p/c")]);
        reg.register(1, "/p", WatchKind::Persistent).unwrap();
        let got = fire(&mut reg, &create("/p/d", "/p"));
        assert_eq!(got, [ev(1, NodeChildrenChanged, "/p")]);
        assert_eq!(reg.watch_count(), 2, "persistent counts on both sides");
    }

    #[test]
    fn persistent_and_one_shot_coexist() {
        let mut reg = WatchRegistry::default();
        reg.register(1, "/p", WatchKind::Persistent).unwrap();
        reg.register(1, "/p", WatchKind::Data).unwrap();
        assert_eq!(
            fire(&mut reg, &[t("/p", NodeDataChanged)]),
            [ev(1, NodeDataChanged, "/p")]
        );
        assert_eq!(
            fire(&mut reg, &[t("/p", NodeDataChanged)]),
            [ev(1, NodeDataChanged, "/p")]
        );
        assert!(reg.check(1, "/p", WatcherType::Children), "persistent kept");
    }

    #[test]
    fn check_rules() {
        let mut reg = WatchRegistry::default();
        reg.register(1, "/d", WatchKind::Data).unwrap();
        reg.register(1, "/e", WatchKind::Exist).unwrap();
        reg.register(1, "/c", WatchKind::Child).unwrap();
        reg.register(1, "/p", WatchKind::Persistent).unwrap();
        reg.register(1, "/r", WatchKind::PersistentRecursive)
            .unwrap();
        use WatcherType::*;
        let table = [
            ("/d", [false, true, true]),
            ("/e", [false, true, true]),
            ("/c", [true, false, true]),
            ("/p", [true, true, true]),
            ("/r", [true, true, true]),
            ("/none", [false, false, false]),
        ];
        for (path, expect) in table {
            for (ty, want) in [Children, Data, Any].into_iter().zip(expect) {
                assert_eq!(reg.check(1, path, ty), want, "{path} {ty:?}");
            }
            assert!(!reg.check(2, path, Any), "other connection");
        }
        // Only the exact path counts for check, even under a recursive watch.
        assert!(!reg.check(1, "/r/child", Data));
    }

    #[test]
    fn remove_rules() {
        let mut reg = WatchRegistry::default();
        reg.register(1, "/x", WatchKind::Data).unwrap();
        reg.register(1, "/x", WatchKind::Child).unwrap();
        assert!(reg.remove(1, "/x", WatcherType::Children));
        assert!(
            !reg.remove(1, "/x", WatcherType::Children),
            "NoWatcher the second time"
        );
        assert!(reg.check(1, "/x", WatcherType::Data));
        assert!(
            !reg.remove(2, "/x", WatcherType::Any),
            "another connection's watch"
        );
        assert!(reg.remove(1, "/x", WatcherType::Any));
        assert!(reg.is_empty());

        reg.register(1, "/r", WatchKind::PersistentRecursive)
            .unwrap();
        assert!(reg.remove(1, "/r", WatcherType::Any));
        assert!(!reg.remove(1, "/r", WatcherType::Any));
        assert_eq!(
            fire(&mut reg, &create("/r/c", "/r")),
            [],
            "removed recursive no longer fires"
        );

        reg.register(1, "/p", WatchKind::Persistent).unwrap();
        assert!(
            reg.remove(1, "/p", WatcherType::Children),
            "persistent counts as child"
        );
        assert_eq!(
            fire(&mut reg, &[t("/p", NodeDataChanged)]),
            [],
            "removed as a whole"
        );
        reg.register(1, "/p", WatchKind::Persistent).unwrap();
        assert!(
            reg.remove(1, "/p", WatcherType::Data),
            "persistent counts as data"
        );
        assert!(reg.is_empty());
        assert_eq!(reg.watch_count(), 0);
    }

    #[test]
    fn remove_conn_forgets_everything_of_that_connection() {
        let mut reg = WatchRegistry::default();
        reg.register(1, "/a", WatchKind::Data).unwrap();
        reg.register(1, "/a", WatchKind::PersistentRecursive)
            .unwrap();
        reg.register(1, "/b", WatchKind::Child).unwrap();
        reg.register(2, "/a", WatchKind::Data).unwrap();
        assert_eq!(reg.remove_conn(1), 2);
        assert_eq!(reg.remove_conn(1), 0);
        assert_eq!(reg.len(), 1);
        assert_eq!(reg.watch_count(), 1);
        let got = fire(
            &mut reg,
            &[t("/a/x", NodeCreated), t("/a", NodeDataChanged)],
        );
        assert_eq!(got, [ev(2, NodeDataChanged, "/a")]);
        assert!(reg.is_empty());
        assert!(reg.recursive.is_empty() && reg.by_path.is_empty() && reg.by_conn.is_empty());
    }

    #[test]
    fn counts_follow_zookeeper_tables() {
        let mut reg = WatchRegistry::default();
        reg.register(1, "/rk", WatchKind::Data).unwrap();
        reg.register(1, "/rk/none", WatchKind::Exist).unwrap();
        reg.register(1, "/rk", WatchKind::Child).unwrap();
        reg.register(2, "/kids", WatchKind::Child).unwrap();
        // wchs: child watches are not listed; mntr's zk_watch_count includes them.
        assert_eq!(
            reg.summary(),
            WatchSummary {
                connections: 1,
                paths: 2,
                watches: 2
            }
        );
        assert_eq!(reg.watch_count(), 4);
        assert_eq!(reg.conn_watch_count(1), 2);
        let by_conn = reg.data_watches_by_conn();
        assert_eq!(by_conn.len(), 1);
        assert_eq!(by_conn[0].0, 1);
        let paths: Vec<&str> = by_conn[0].1.iter().map(|p| &**p).collect();
        assert_eq!(paths, ["/rk", "/rk/none"]);
        let by_path: Vec<(String, Vec<u64>)> = reg
            .data_watches_by_path()
            .into_iter()
            .map(|(p, c)| (p.to_string(), c))
            .collect();
        assert_eq!(
            by_path,
            [
                ("/rk".to_string(), vec![1]),
                ("/rk/none".to_string(), vec![1])
            ]
        );
    }

    fn refused(error: WatchError) -> Result<(), WatchError> {
        Err(error)
    }

    #[test]
    fn per_connection_limit() {
        let mut reg = WatchRegistry::new(2, WatchBudget::new(100));
        reg.register(1, "/a", WatchKind::Data).unwrap();
        reg.register(1, "/b", WatchKind::Data).unwrap();
        // Another kind on an already watched path is not a new path.
        reg.register(1, "/b", WatchKind::Child).unwrap();
        let full = WatchError::TooManyWatches { limit: 2 };
        assert_eq!(reg.register(1, "/c", WatchKind::Data), refused(full));
        // Every kind counts, persistent and recursive included.
        for kind in [WatchKind::Persistent, WatchKind::PersistentRecursive] {
            assert_eq!(reg.register(1, "/c", kind), refused(full));
        }
        assert!(!reg.check(1, "/c", WatcherType::Any), "nothing registered");
        reg.register(2, "/c", WatchKind::Data).unwrap();
        assert_eq!(reg.len(), 3);
        // The watches held before the refusal still fire (and a fired one makes room).
        assert_eq!(
            fire(&mut reg, &[t("/a", NodeDataChanged)]),
            [ev(1, NodeDataChanged, "/a")]
        );
        reg.register(1, "/c", WatchKind::Data).unwrap();
        // A closed connection's watches make room for the next one.
        reg.remove_conn(1);
        reg.register(1, "/x", WatchKind::Data).unwrap();
        reg.register(1, "/y", WatchKind::Data).unwrap();
        assert_eq!(reg.register(1, "/z", WatchKind::Data), refused(full));
    }

    #[test]
    fn first_refusal_once_per_session_until_it_ends() {
        let budget = WatchBudget::new(1);
        assert!(budget.first_refusal(0x100));
        assert!(
            !budget.first_refusal(0x100),
            "same session, even on another connection or shard"
        );
        assert!(budget.first_refusal(0x200));
        budget.forget_session(0x100);
        assert!(budget.first_refusal(0x100));
        budget.forget_session(0x100);
        budget.forget_session(0x200);
        assert!(!budget.any_refused.load(Ordering::Relaxed));
    }

    #[test]
    fn member_budget_is_shared_between_registries_and_given_back() {
        let budget = WatchBudget::new(3);
        let mut a = WatchRegistry::new(10, budget.clone());
        let mut b = WatchRegistry::new(10, budget.clone());
        a.register(1, "/a", WatchKind::Data).unwrap();
        a.register(1, "/a", WatchKind::Child).unwrap(); // same pair: no new unit
        b.register(7, "/a", WatchKind::Data).unwrap();
        b.register(7, "/b", WatchKind::PersistentRecursive).unwrap();
        assert_eq!(budget.used(), 3);
        let full = WatchError::MemberFull { limit: 3 };
        assert_eq!(a.register(2, "/c", WatchKind::Exist), refused(full));
        assert_eq!(b.register(7, "/c", WatchKind::Persistent), refused(full));
        // Each way a pair goes gives its unit back: a one-shot firing, removeWatches,
        // a closed connection, a dropped registry.
        fire(&mut b, &[t("/a", NodeDataChanged)]);
        assert_eq!(budget.used(), 2);
        a.register(2, "/c", WatchKind::Exist).unwrap();
        assert!(b.remove(7, "/b", WatcherType::Any));
        assert_eq!(budget.used(), 2);
        assert_eq!(a.remove_conn(1), 1);
        assert_eq!(budget.used(), 1);
        drop(a);
        assert_eq!(budget.used(), 0);
        assert!(b.is_empty());
    }

    #[test]
    fn persistent_and_recursive_events_need_read_on_the_node() {
        let mut reg = WatchRegistry::default();
        // conn 2 (anonymous) and conn 1 (the owner) watch everything.
        for conn in [1, 2] {
            reg.register(conn, "/", WatchKind::PersistentRecursive)
                .unwrap();
            reg.register(conn, "/secret/x", WatchKind::Persistent)
                .unwrap();
            reg.register(conn, "/secret", WatchKind::Persistent)
                .unwrap();
        }
        // Creating /secret/x: its own event carries its ACL, the parent's carries /secret's.
        let create = [
            secret("/secret/x", NodeCreated),
            secret("/secret", NodeChildrenChanged),
        ];
        let (got, filtered) = fire_acl(&mut reg, &create);
        assert_eq!(
            got,
            [
                ev(1, NodeCreated, "/secret/x"),
                ev(1, NodeChildrenChanged, "/secret")
            ]
        );
        assert_eq!(filtered, 2);
        for event in [NodeDataChanged, NodeDeleted] {
            let (got, filtered) = fire_acl(&mut reg, &[secret("/secret/x", event)]);
            assert_eq!(got, [ev(1, event, "/secret/x")]);
            assert_eq!(filtered, 1);
        }
        // A readable node under the same watches still reaches everyone.
        let (got, filtered) = fire_acl(&mut reg, &[t("/open", NodeCreated)]);
        assert_eq!(
            got,
            [ev(1, NodeCreated, "/open"), ev(2, NodeCreated, "/open")]
        );
        assert_eq!(filtered, 0);
        // The withheld watches stay registered.
        assert!(reg.check(2, "/secret/x", WatcherType::Any));
        assert!(reg.check(2, "/", WatcherType::Any));
    }

    #[test]
    fn one_shot_watch_withheld_by_acl_is_consumed() {
        // As in ZooKeeper: triggerWatch removes the one-shot watch, then process() drops the
        // event the watcher may not read.
        let mut reg = WatchRegistry::default();
        reg.register(2, "/secret", WatchKind::Data).unwrap();
        reg.register(2, "/secret", WatchKind::Child).unwrap();
        let (got, filtered) = fire_acl(&mut reg, &[secret("/secret", NodeDataChanged)]);
        assert_eq!((got, filtered), (vec![], 1));
        assert!(!reg.check(2, "/secret", WatcherType::Data));
        assert!(
            reg.check(2, "/secret", WatcherType::Children),
            "the other kind stays"
        );
        // An empty ACL is open to all, as in ZooKeeper's checkACL.
        let (got, _) = fire_acl(&mut reg, &[t("/secret", NodeChildrenChanged)]);
        assert_eq!(got, [ev(2, NodeChildrenChanged, "/secret")]);
        assert!(reg.is_empty());
    }

    #[test]
    fn paths_are_shared_between_watchers() {
        let mut reg = WatchRegistry::default();
        reg.register(1, "/shared", WatchKind::Data).unwrap();
        reg.register(2, "/shared", WatchKind::Data).unwrap();
        let a = reg.by_conn[&1].iter().next().unwrap().clone();
        let b = reg.by_conn[&2].iter().next().unwrap().clone();
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn a_shared_path_is_reused_not_copied() {
        let mut reg = WatchRegistry::default();
        let tree_key: Arc<str> = Arc::from("/node");
        reg.register_shared(1, "/node", Some(&tree_key), WatchKind::Data)
            .unwrap();
        reg.register(2, "/node", WatchKind::Child).unwrap();
        for conn in [1, 2] {
            assert!(Arc::ptr_eq(
                reg.by_conn[&conn].iter().next().unwrap(),
                &tree_key
            ));
        }
        // A key that is not the path is never used.
        let other: Arc<str> = Arc::from("/other");
        reg.register_shared(1, "/x", Some(&other), WatchKind::Data)
            .unwrap();
        assert!(reg.check(1, "/x", WatcherType::Data));
        assert!(!reg.check(1, "/other", WatcherType::Any));
    }

    #[test]
    fn add_watch_mode_maps_to_kind() {
        assert_eq!(
            WatchKind::from(AddWatchMode::Persistent),
            WatchKind::Persistent
        );
        assert_eq!(
            WatchKind::from(AddWatchMode::PersistentRecursive),
            WatchKind::PersistentRecursive
        );
    }
}
