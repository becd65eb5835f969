//! The replicated state machine: applies committed `Batch`es of commands to the znode tree and
//! the session table, deterministically, on every member.
//!
//! Validation happens here (ringkeeper logs commands, not pre-validated Txns), in ZooKeeper's
//! exact check order, so every member reaches the same result, errors included. Every command
//! consumes one zxid (a retry answered from the idempotency record consumes none). Time comes
//! only from `Batch::time_ms`.
//!
//! MVCC: the state is made of persistent maps, so `view()` is an O(1) snapshot that readers on
//! every shard keep while the machine moves on. A multi runs on a clone of the state that
//! replaces it only if every op succeeds, which makes rollback free and keeps a half-applied
//! multi invisible.

use std::collections::HashSet;
use std::sync::Arc;

use crate::proto::path;
use crate::proto::types::ErrorCode::{
    BadArguments, BadVersion, InvalidAcl, NoAuth, NoChildrenForEphemerals, NoNode, NodeExists,
    NotEmpty, Unimplemented,
};
use crate::proto::types::{
    opcode, perms, Acl, CheckVersionRequest, CreateMode, CreateRequest, DeleteRequest, ErrorCode,
    EventType, Id, SessionId, SetAclRequest, SetDataRequest, Stat, Zxid,
};
use crate::session::{Identified, LastWrite, Session, SessionTable};
use crate::tree::{acl, NewNode, Node, NodeKind, Tree};
use crate::txn::{Applied, Batch, Command, MultiResult, Op, OpResult, Trigger, WriteOp};

/// The largest TTL ZooKeeper accepts (40 bits of ms, about 34.8 years).
pub const MAX_TTL_MS: i64 = 0xFF_FFFF_FFFF;

/// Settings that change what the machine accepts. Every member must use the same values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineConfig {
    /// TTL nodes (ZooKeeper's `zookeeper.extendedTypesEnabled`): off by default, as there;
    /// TTL creates then fail with Unimplemented.
    pub ttl_enabled: bool,
    /// Live sessions at most; a CreateSession beyond it fails with Throttled.
    pub max_sessions: usize,
}

impl MachineConfig {
    /// The settings as `key=value` words. Members applying one log with different ones would
    /// diverge, so the peer handshake refuses a member whose words differ.
    pub fn shared_settings(&self) -> String {
        format!(
            "ttl_enabled={} max_sessions={}",
            self.ttl_enabled, self.max_sessions
        )
    }
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            ttl_enabled: false,
            max_sessions: 1 << 20,
        }
    }
}

/// The replicated state.
#[derive(Clone, Debug, PartialEq)]
struct State {
    tree: Tree,
    sessions: SessionTable,
    last_zxid: Zxid,
}

/// A node as a reader borrows it from a `View`.
pub type NodeRef<'a> = &'a Node;

/// A consistent, immutable snapshot of the state for readers: never blocks, never changes,
/// never shows half of a multi or of a batch. Cloning is O(1).
#[derive(Clone, Debug)]
pub struct View {
    state: State,
}

impl View {
    /// The zxid of the last applied command.
    pub fn last_zxid(&self) -> Zxid {
        self.state.last_zxid
    }
    pub fn tree(&self) -> &Tree {
        &self.state.tree
    }
    pub fn session_table(&self) -> &SessionTable {
        &self.state.sessions
    }
    /// The node at `path` (`""` is the root, as for ZooKeeper's read ops).
    pub fn node(&self, path: &str) -> Option<&Node> {
        self.state.tree.get(path)
    }
    pub fn exists(&self, path: &str) -> bool {
        self.state.tree.contains(path)
    }
    pub fn stat(&self, path: &str) -> Option<Stat> {
        self.node(path).map(Node::stat)
    }
    /// Child names, sorted; `None` if the node does not exist.
    pub fn children(&self, path: &str) -> Option<Vec<Arc<str>>> {
        self.node(path)
            .map(|n| n.children().iter().cloned().collect())
    }
    /// getAllChildrenNumber: every descendant, the node itself excluded.
    pub fn descendant_count(&self, path: &str) -> Option<u64> {
        self.state.tree.descendant_count(path)
    }
    /// getEphemerals for `session` (see `Session::ephemerals_with_prefix`); empty for an
    /// unknown session.
    pub fn ephemerals(&self, session: SessionId, prefix: &str) -> Vec<Arc<str>> {
        self.session(session)
            .map(|s| s.ephemerals_with_prefix(prefix))
            .unwrap_or_default()
    }
    pub fn session(&self, id: SessionId) -> Option<&Session> {
        self.state.sessions.get(id)
    }
    pub fn sessions(&self) -> impl Iterator<Item = (SessionId, &Session)> + '_ {
        self.state.sessions.iter()
    }
    /// `(session, timeout_ms)` of every live session: what a new leader's tracker needs.
    pub fn session_timeouts(&self) -> impl Iterator<Item = (SessionId, i32)> + '_ {
        self.state.sessions.iter().map(|(id, s)| (id, s.timeout_ms))
    }
    pub fn session_count(&self) -> usize {
        self.state.sessions.len()
    }
    /// The tree's digest (see `tree::Tree::digest`).
    pub fn digest(&self) -> u64 {
        self.state.tree.digest()
    }
    /// Real znodes (4 on a fresh server; ZooKeeper's `Node count` reports one more).
    pub fn node_count(&self) -> usize {
        self.state.tree.node_count()
    }
    pub fn approximate_data_size(&self) -> u64 {
        self.state.tree.approximate_data_size()
    }
    pub fn ephemeral_count(&self) -> usize {
        self.state.tree.ephemeral_count()
    }
    /// Paths the reaper should submit as `DeleteContainer` at `now_ms`, sorted.
    pub fn reap_candidates(&self, now_ms: i64) -> Vec<String> {
        self.state.tree.reap_candidates(now_ms)
    }
}

/// Interning table for ACL lists: nodes share one allocation per distinct list. Entries no
/// node (or view) uses any more are dropped when the table has doubled since the last purge.
#[derive(Debug)]
struct AclInterner {
    set: HashSet<Arc<[Acl]>>,
    purge_at: usize,
}

impl AclInterner {
    const MIN_PURGE: usize = 1024;

    fn new() -> AclInterner {
        AclInterner {
            set: HashSet::new(),
            purge_at: Self::MIN_PURGE,
        }
    }

    fn intern(&mut self, acl: &[Acl]) -> Arc<[Acl]> {
        if let Some(a) = self.set.get(acl) {
            return a.clone();
        }
        if self.set.len() >= self.purge_at {
            self.set.retain(|a| Arc::strong_count(a) > 1);
            self.purge_at = (self.set.len() * 2).max(Self::MIN_PURGE);
        }
        let a: Arc<[Acl]> = Arc::from(acl);
        self.set.insert(a.clone());
        a
    }
}

/// The state machine of one member.
#[derive(Debug)]
pub struct Machine {
    state: State,
    config: MachineConfig,
    acls: AclInterner,
}

/// What one op of a command needs besides the state.
struct Ctx<'a> {
    zxid: Zxid,
    time_ms: i64,
    session: SessionId,
    auth: &'a [Id],
    config: &'a MachineConfig,
    acls: &'a mut AclInterner,
    triggers: Vec<Trigger>,
}

impl<'a> Ctx<'a> {
    fn new(
        config: &'a MachineConfig,
        acls: &'a mut AclInterner,
        zxid: Zxid,
        time_ms: i64,
        session: SessionId,
        auth: &'a [Id],
    ) -> Ctx<'a> {
        Ctx {
            zxid,
            time_ms,
            session,
            auth,
            config,
            acls,
            triggers: Vec::new(),
        }
    }
}

type OpOutcome<T> = Result<T, ErrorCode>;

impl Machine {
    pub fn new(config: MachineConfig) -> Machine {
        let mut acls = AclInterner::new();
        let open = acls.intern(&Acl::open_unsafe());
        let read = acls.intern(&Acl::read_unsafe());
        Machine {
            state: State {
                tree: Tree::new(open, read),
                sessions: SessionTable::new(),
                last_zxid: 0,
            },
            config,
            acls,
        }
    }

    /// A machine restored from a snapshot's parts; `acls` are the distinct ACL lists its
    /// nodes share (interned again, so new nodes keep sharing them).
    pub fn restore(
        config: MachineConfig,
        tree: Tree,
        sessions: SessionTable,
        last_zxid: Zxid,
        acls: impl IntoIterator<Item = Arc<[Acl]>>,
    ) -> Machine {
        let mut interner = AclInterner::new();
        interner.set.extend(acls);
        interner.purge_at = (interner.set.len() * 2).max(AclInterner::MIN_PURGE);
        Machine {
            state: State {
                tree,
                sessions,
                last_zxid,
            },
            config,
            acls: interner,
        }
    }

    pub fn config(&self) -> &MachineConfig {
        &self.config
    }

    /// An O(1) snapshot for readers.
    pub fn view(&self) -> View {
        View {
            state: self.state.clone(),
        }
    }

    /// The tree's digest now (see `tree::Tree::digest`).
    pub fn digest(&self) -> u64 {
        self.state.tree.digest()
    }

    pub fn last_zxid(&self) -> Zxid {
        self.state.last_zxid
    }

    pub fn has_session(&self, id: SessionId) -> bool {
        self.state.sessions.contains(id)
    }

    /// Sets the last zxid (restoring a snapshot; tests of the counter rollover). The next
    /// command gets the zxid after it.
    pub fn set_last_zxid(&mut self, zxid: Zxid) {
        self.state.last_zxid = zxid;
    }

    /// Applies one committed batch from a log entry of raft term `term`. A term above the
    /// current epoch starts a new epoch (counter restarts). Returns one `Applied` per command,
    /// in order.
    pub fn apply_batch(&mut self, term: u64, batch: &Batch) -> Vec<Applied> {
        self.enter_term(term);
        batch
            .commands
            .iter()
            .map(|c| self.apply_command(c, batch.time_ms))
            .collect()
    }

    fn enter_term(&mut self, term: u64) {
        // The epoch must fit the zxid's high half with the sign bit clear.
        let term = term.min(i32::MAX as u64) as i64;
        if term > self.state.last_zxid >> 32 {
            self.state.last_zxid = term << 32;
        }
    }

    /// The next zxid. When the 32-bit counter is exhausted the machine moves to the next
    /// epoch by itself, so zxids keep increasing without an election.
    fn next_zxid(&mut self) -> Zxid {
        let last = self.state.last_zxid;
        let next = if last & 0xFFFF_FFFF == 0xFFFF_FFFF {
            (((last >> 32) + 1) << 32) | 1
        } else {
            last + 1
        };
        self.state.last_zxid = next;
        next
    }

    fn apply_command(&mut self, cmd: &Command, time_ms: i64) -> Applied {
        let mut applied = Applied {
            origin: cmd.origin,
            session: cmd.session,
            xid: cmd.xid,
            zxid: 0,
            result: OpResult::Error(ErrorCode::SystemError),
            triggers: Vec::new(),
            ended_sessions: Vec::new(),
            duplicate: false,
        };
        // Server-internal commands: no session, no idempotency record.
        match &cmd.op {
            Op::CreateSession { timeout_ms, passwd } => {
                applied.zxid = self.next_zxid();
                applied.result = self.create_session(*timeout_ms, passwd, time_ms);
                return applied;
            }
            Op::ExpireSessions { sessions } => {
                applied.zxid = self.next_zxid();
                let mut cx = Ctx::new(&self.config, &mut self.acls, applied.zxid, time_ms, 0, &[]);
                let mut ended = Vec::new();
                for &s in sessions {
                    // An unknown (or repeated) id ends nothing.
                    if kill_session(&mut self.state, &mut cx, s) {
                        ended.push(s);
                    }
                }
                applied.triggers = cx.triggers;
                applied.ended_sessions = ended;
                applied.result = OpResult::SessionsExpired;
                return applied;
            }
            Op::DeleteContainer { path } => {
                applied.zxid = self.next_zxid();
                let mut cx = Ctx::new(&self.config, &mut self.acls, applied.zxid, time_ms, 0, &[]);
                applied.result = match delete_container(&mut self.state, &mut cx, path) {
                    Ok(()) => OpResult::Deleted,
                    Err(e) => OpResult::Error(e),
                };
                applied.triggers = cx.triggers;
                return applied;
            }
            // Logged with the raft configuration change it describes: it must apply whatever
            // became of the session that asked (the leader already checked the request).
            Op::SetConfig { members } => {
                applied.zxid = self.next_zxid();
                let mut cx = Ctx::new(&self.config, &mut self.acls, applied.zxid, time_ms, 0, &[]);
                let (data, stat) = set_config(&mut self.state, &mut cx, members);
                applied.triggers = cx.triggers;
                applied.result = OpResult::Config { data, stat };
                return applied;
            }
            _ => {}
        }

        // Session requests.
        let hash = op_hash(&cmd.op);
        // A write refused for coming from a member the session left records nothing: not
        // its connection's identities, and not the session's last write (a retry of its real
        // last write must still be recognised).
        let mut moved = matches!(cmd.op, Op::Fail(ErrorCode::SessionMoved));
        let Some(session) = self.state.sessions.get_mut(cmd.session) else {
            applied.zxid = self.next_zxid();
            applied.result = OpResult::Error(ErrorCode::SessionExpired);
            return applied;
        };
        if !cmd.auth.is_empty() && !moved {
            session.identified = Some(Arc::new(Identified {
                origin: cmd.origin,
                ids: Arc::from(cmd.auth.as_slice()),
            }));
        }
        if let Some(last) = session.last_write() {
            if last.xid == cmd.xid && last.op_hash == hash && cmd.seen_zxid < last.zxid {
                applied.zxid = last.zxid;
                applied.result = last.result.clone();
                applied.duplicate = true;
                return applied;
            }
        }
        // The caller's identities: those its connection recorded. A connection that has
        // recorded none, or whose record another connection of the session replaced, is not
        // where the session lives any more (ZooKeeper: SessionMoved).
        let auth: Arc<[Id]> = match session.identities_of(cmd.origin) {
            Some(ids) => ids.clone(),
            None if needs_identities(&cmd.op) => {
                moved = true;
                Arc::from([])
            }
            None => Arc::from([]),
        };
        applied.zxid = self.next_zxid();
        let zxid = applied.zxid;
        let mut cx = Ctx::new(
            &self.config,
            &mut self.acls,
            zxid,
            time_ms,
            cmd.session,
            &auth,
        );
        let op = if moved {
            &Op::Fail(ErrorCode::SessionMoved)
        } else {
            &cmd.op
        };
        let result = match op {
            Op::CloseSession => {
                kill_session(&mut self.state, &mut cx, cmd.session);
                applied.ended_sessions.push(cmd.session);
                applied.triggers = cx.triggers;
                applied.result = OpResult::SessionClosed;
                return applied;
            }
            Op::Write(w) => match apply_write(&mut self.state, &mut cx, w) {
                Ok(r) => single_result(r),
                Err(e) => OpResult::Error(e),
            },
            Op::SetAcl(req) => match set_acl(&mut self.state, &mut cx, req) {
                Ok(stat) => OpResult::Stat(stat),
                Err(e) => OpResult::Error(e),
            },
            Op::Multi(ops) => multi(&mut self.state, &mut cx, ops),
            Op::Fail(code) => OpResult::Error(*code),
            // The leader turns every reconfig into SetConfig or Fail before it is logged.
            Op::Reconfig(_) => OpResult::Error(ErrorCode::ReconfigDisabled),
            // Handled above.
            Op::CreateSession { .. }
            | Op::ExpireSessions { .. }
            | Op::DeleteContainer { .. }
            | Op::SetConfig { .. } => OpResult::Error(ErrorCode::SystemError),
        };
        applied.triggers = cx.triggers;
        if let Some(s) = self.state.sessions.get_mut(cmd.session).filter(|_| !moved) {
            s.last = Some(Arc::new(LastWrite {
                xid: cmd.xid,
                op_hash: hash,
                zxid,
                result: result.clone(),
            }));
        }
        applied.result = result;
        applied
    }

    fn create_session(&mut self, timeout_ms: i32, passwd: &[u8], time_ms: i64) -> OpResult {
        if self.state.sessions.len() >= self.config.max_sessions {
            return OpResult::Error(ErrorCode::Throttled);
        }
        let id = self.state.sessions.allocate_id(time_ms);
        self.state
            .sessions
            .insert(id, Session::new(timeout_ms, passwd));
        OpResult::SessionCreated {
            session: id,
            timeout_ms,
            passwd: passwd.to_vec(),
        }
    }
}

/// The result of one successful write op, before it is shaped as a single or multi result.
enum WriteResult {
    Created {
        opcode: i32,
        path: Arc<str>,
        stat: Stat,
    },
    Deleted,
    SetData(Stat),
    Checked,
}

fn single_result(r: WriteResult) -> OpResult {
    match r {
        WriteResult::Created { path, stat, .. } => OpResult::Created {
            path: path.to_string(),
            stat,
        },
        WriteResult::Deleted => OpResult::Deleted,
        WriteResult::SetData(stat) => OpResult::Stat(stat),
        WriteResult::Checked => OpResult::Checked,
    }
}

fn multi_result(r: WriteResult) -> MultiResult {
    match r {
        WriteResult::Created { opcode, path, stat } => MultiResult::Created {
            opcode,
            path: path.to_string(),
            stat,
        },
        WriteResult::Deleted => MultiResult::Deleted,
        WriteResult::SetData(stat) => MultiResult::SetData(stat),
        WriteResult::Checked => MultiResult::Checked,
    }
}

/// All or nothing, on a clone of the state. On failure every op gets an error result (section
/// 9.3): Ok (rolled back) before the failing op, its code, then RuntimeInconsistency; no
/// trigger fires.
fn multi(state: &mut State, cx: &mut Ctx<'_>, ops: &[WriteOp]) -> OpResult {
    let mut scratch = state.clone();
    let mut results = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        match apply_write(&mut scratch, cx, op) {
            Ok(r) => results.push(multi_result(r)),
            Err(code) => {
                cx.triggers.clear();
                let mut out = vec![MultiResult::Error(ErrorCode::Ok); i];
                out.push(MultiResult::Error(code));
                out.resize(
                    ops.len(),
                    MultiResult::Error(ErrorCode::RuntimeInconsistency),
                );
                return OpResult::Multi(out);
            }
        }
    }
    *state = scratch;
    OpResult::Multi(results)
}

fn apply_write(state: &mut State, cx: &mut Ctx<'_>, op: &WriteOp) -> OpOutcome<WriteResult> {
    match op {
        WriteOp::Create { opcode, req } => {
            let (path, stat) = create(state, cx, *opcode, req)?;
            Ok(WriteResult::Created {
                opcode: *opcode,
                path,
                stat,
            })
        }
        WriteOp::Delete(req) => delete(state, cx, req).map(|()| WriteResult::Deleted),
        WriteOp::SetData(req) => set_data(state, cx, req).map(WriteResult::SetData),
        WriteOp::Check(req) => check_version(state, cx, req).map(|()| WriteResult::Checked),
    }
}

/// The parent part of a path, as ZooKeeper's `substring(0, lastSlash)` with `""` = the root.
/// `None` if the path has no `/` or holds a NUL.
fn parent_of(p: &str) -> Option<&str> {
    if p.contains('\0') {
        return None;
    }
    match p.rfind('/')? {
        0 => Some("/"),
        i => Some(&p[..i]),
    }
}

fn version_matches(expected: i32, current: i32) -> bool {
    expected == -1 || expected == current
}

/// create / create2 / createContainer / createTTL, checks in the order of protocol 7.1.
fn create(
    state: &mut State,
    cx: &mut Ctx<'_>,
    op: i32,
    req: &CreateRequest,
) -> OpOutcome<(Arc<str>, Stat)> {
    if !matches!(
        op,
        opcode::CREATE | opcode::CREATE2 | opcode::CREATE_CONTAINER | opcode::CREATE_TTL
    ) {
        return Err(Unimplemented);
    }
    // 1. flags and TTL rules.
    let mode = CreateMode::from_flags(req.flags).ok_or(BadArguments)?;
    if mode.is_ttl() && !cx.config.ttl_enabled {
        return Err(Unimplemented);
    }
    if mode.is_ttl() {
        if req.ttl <= 0 || req.ttl > MAX_TTL_MS {
            return Err(BadArguments);
        }
    } else if req.ttl >= 0 || op == opcode::CREATE_TTL {
        // createTTL with a non-TTL mode is meaningless (ZooKeeper would fail later, in apply).
        return Err(BadArguments);
    }
    // 2. a `/` and no NUL.
    let parent_path = parent_of(&req.path).ok_or(BadArguments)?;
    // 3. the ACL.
    let acl_list = acl::fixup(&req.acl, cx.auth).map_err(|_| InvalidAcl)?;
    // 4. the parent.
    let (parent_key, parent) = state.tree.get_entry(parent_path).ok_or(NoNode)?;
    // 5. CREATE on the parent.
    if !acl::check(parent.acl(), perms::CREATE, cx.auth) {
        return Err(NoAuth);
    }
    // 6. the full path, after the sequential suffix.
    let seq_path;
    let full: &str = if mode.is_sequential() {
        seq_path = format!("{}{:010}", req.path, parent.creations());
        &seq_path
    } else {
        &req.path
    };
    path::validate(full).map_err(|_| BadArguments)?;
    // 7. not already there.
    if state.tree.contains(full) {
        return Err(NodeExists);
    }
    // 8. no children under a session's ephemeral.
    if parent.ephemeral_owner() != 0 {
        return Err(NoChildrenForEphemerals);
    }
    // The opcode decides the kind: create with the container flag is a plain node.
    let (kind, owner) = match op {
        opcode::CREATE_CONTAINER => (NodeKind::Container, 0),
        opcode::CREATE_TTL => (NodeKind::Ttl(req.ttl), 0),
        _ if mode.is_ephemeral() => (NodeKind::Normal, cx.session),
        _ => (NodeKind::Normal, 0),
    };
    let parent_key = parent_key.clone();
    let parent_acl = parent.acl_arc().clone();
    let node_acl = cx.acls.intern(&acl_list);
    let new = NewNode {
        data: req.data.as_deref().map(Arc::from),
        acl: node_acl.clone(),
        ephemeral_owner: owner,
        kind,
        zxid: cx.zxid,
        time_ms: cx.time_ms,
    };
    let (key, stat) = state.tree.insert(&parent_key, full, new);
    if owner != 0 {
        if let Some(s) = state.sessions.get_mut(owner) {
            s.ephemerals.insert(key.clone());
        }
    }
    cx.triggers.push(Trigger {
        path: key.clone(),
        event: EventType::NodeCreated,
        acl: node_acl,
    });
    cx.triggers.push(Trigger {
        path: parent_key,
        event: EventType::NodeChildrenChanged,
        acl: parent_acl,
    });
    Ok((key, stat))
}

/// Unlinks a childless node, keeps its owner's ephemeral set in step, and queues the node's
/// NodeDeleted before the parent's NodeChildrenChanged.
fn remove_node(state: &mut State, cx: &mut Ctx<'_>, parent_path: &str, p: &str) {
    let (Some((parent_key, parent)), Some((key, node))) =
        (state.tree.get_entry(parent_path), state.tree.get_entry(p))
    else {
        debug_assert!(false, "remove_node of {p} without node or parent");
        return;
    };
    let (parent_acl, node_acl) = (parent.acl_arc().clone(), node.acl_arc().clone());
    let (parent_key, key) = (parent_key.clone(), key.clone());
    if let Some(node) = state.tree.remove(&parent_key, &key, cx.zxid) {
        let owner = node.ephemeral_owner();
        if owner != 0 {
            if let Some(s) = state.sessions.get_mut(owner) {
                s.ephemerals.remove(&*key);
            }
        }
    }
    cx.triggers.push(Trigger {
        path: key,
        event: EventType::NodeDeleted,
        acl: node_acl,
    });
    cx.triggers.push(Trigger {
        path: parent_key,
        event: EventType::NodeChildrenChanged,
        acl: parent_acl,
    });
}

/// delete, in the order of protocol 7.2.
fn delete(state: &mut State, cx: &mut Ctx<'_>, req: &DeleteRequest) -> OpOutcome<()> {
    let p = req.path.as_str();
    let parent_path = parent_of(p).ok_or(BadArguments)?;
    if crate::tree::is_reserved(p) {
        return Err(BadArguments);
    }
    let parent = state.tree.get(parent_path).ok_or(NoNode)?;
    if !acl::check(parent.acl(), perms::DELETE, cx.auth) {
        return Err(NoAuth);
    }
    let node = state.tree.get(p).ok_or(NoNode)?;
    if !version_matches(req.version, node.stat().version) {
        return Err(BadVersion);
    }
    if node.num_children() > 0 {
        return Err(NotEmpty);
    }
    remove_node(state, cx, parent_path, p);
    Ok(())
}

fn set_data(state: &mut State, cx: &mut Ctx<'_>, req: &SetDataRequest) -> OpOutcome<Stat> {
    path::validate(&req.path).map_err(|_| BadArguments)?;
    let (key, node) = state.tree.get_entry(&req.path).ok_or(NoNode)?;
    if !acl::check(node.acl(), perms::WRITE, cx.auth) {
        return Err(NoAuth);
    }
    if !version_matches(req.version, node.stat().version) {
        return Err(BadVersion);
    }
    let key = key.clone();
    let acl = node.acl_arc().clone();
    let data = req.data.as_deref().map(Arc::from);
    let stat = state
        .tree
        .set_data(&key, data, cx.zxid, cx.time_ms)
        .ok_or(NoNode)?;
    cx.triggers.push(Trigger {
        path: key,
        event: EventType::NodeDataChanged,
        acl,
    });
    Ok(stat)
}

/// reconfig, as the leader decided it: /zookeeper/config holds the members and the version
/// (this zxid in hex, as ZooKeeper writes it); its data watchers fire.
fn set_config(state: &mut State, cx: &mut Ctx<'_>, members: &str) -> (Vec<u8>, Stat) {
    let data = format!("{members}version={:x}", cx.zxid).into_bytes();
    let key: Arc<str> = Arc::from(crate::tree::CONFIG_NODE);
    let acl = state
        .tree
        .get(&key)
        .map_or_else(|| Arc::from(Vec::new()), |n| n.acl_arc().clone());
    let stat = state
        .tree
        .set_data(&key, Some(Arc::from(&data[..])), cx.zxid, cx.time_ms)
        .unwrap_or_default();
    cx.triggers.push(Trigger {
        path: key,
        event: EventType::NodeDataChanged,
        acl,
    });
    (data, stat)
}

/// setACL: path, ACL validity, node, ADMIN, aversion. Triggers nothing.
fn set_acl(state: &mut State, cx: &mut Ctx<'_>, req: &SetAclRequest) -> OpOutcome<Stat> {
    path::validate(&req.path).map_err(|_| BadArguments)?;
    let acl_list = acl::fixup(&req.acl, cx.auth).map_err(|_| InvalidAcl)?;
    let node = state.tree.get(&req.path).ok_or(NoNode)?;
    if !acl::check(node.acl(), perms::ADMIN, cx.auth) {
        return Err(NoAuth);
    }
    if !version_matches(req.version, node.stat().aversion) {
        return Err(BadVersion);
    }
    let interned = cx.acls.intern(&acl_list);
    state.tree.set_acl(&req.path, interned).ok_or(NoNode)
}

/// check: path, node, READ, version.
fn check_version(state: &State, cx: &Ctx<'_>, req: &CheckVersionRequest) -> OpOutcome<()> {
    path::validate(&req.path).map_err(|_| BadArguments)?;
    let node = state.tree.get(&req.path).ok_or(NoNode)?;
    if !acl::check(node.acl(), perms::READ, cx.auth) {
        return Err(NoAuth);
    }
    if !version_matches(req.version, node.stat().version) {
        return Err(BadVersion);
    }
    Ok(())
}

/// Ends a session: its ephemerals go (sorted order), then the session. False if unknown.
fn kill_session(state: &mut State, cx: &mut Ctx<'_>, id: SessionId) -> bool {
    let Some(session) = state.sessions.remove(id) else {
        return false;
    };
    for p in session.ephemerals() {
        let Some(parent_path) = parent_of(p) else {
            continue;
        };
        let childless = state.tree.get(p).is_some_and(|n| n.num_children() == 0);
        debug_assert!(childless, "ephemeral {p} missing or with children");
        if childless {
            remove_node(state, cx, parent_path, p);
        }
    }
    true
}

/// The reaper's delete, re-checked against the state it now applies to.
fn delete_container(state: &mut State, cx: &mut Ctx<'_>, p: &str) -> OpOutcome<()> {
    let parent_path = parent_of(p).ok_or(BadArguments)?;
    if crate::tree::is_reserved(p) {
        return Err(BadArguments);
    }
    let node = state.tree.get(p).ok_or(NoNode)?;
    if node.num_children() > 0 {
        return Err(NotEmpty);
    }
    if !node.is_reapable(cx.time_ms) {
        return Err(BadVersion);
    }
    remove_node(state, cx, parent_path, p);
    Ok(())
}

/// Whether applying `op` checks the caller's identities (ACLs, `auth` ids in a new ACL).
fn needs_identities(op: &Op) -> bool {
    matches!(op, Op::Write(_) | Op::SetAcl(_) | Op::Multi(_))
}

/// A stable 64-bit hash of an op for the idempotency record: FNV-1a over a canonical
/// little-endian encoding, with data payloads folded in as length + CRC32C (fast on large
/// data). Identical on every member and every build, unlike `std`'s hashers.
pub fn op_hash(op: &Op) -> u64 {
    let mut h = StableHasher::new();
    match op {
        Op::CreateSession { timeout_ms, passwd } => {
            h.u64(1);
            h.i64(i64::from(*timeout_ms));
            h.data(Some(passwd));
        }
        Op::CloseSession => h.u64(2),
        Op::ExpireSessions { sessions } => {
            h.u64(3);
            h.u64(sessions.len() as u64);
            sessions.iter().for_each(|s| h.i64(*s));
        }
        Op::Write(w) => {
            h.u64(4);
            h.write_op(w);
        }
        Op::SetAcl(req) => {
            h.u64(5);
            h.str(&req.path);
            h.acl(&req.acl);
            h.i64(i64::from(req.version));
        }
        Op::Multi(ops) => {
            h.u64(6);
            h.u64(ops.len() as u64);
            ops.iter().for_each(|w| h.write_op(w));
        }
        Op::DeleteContainer { path } => {
            h.u64(7);
            h.str(path);
        }
        Op::Fail(code) => {
            h.u64(8);
            h.i64(i64::from(code.code()));
        }
        Op::Reconfig(r) => {
            h.u64(9);
            for s in [&r.joining, &r.leaving, &r.new_members] {
                h.data(s.as_deref().map(str::as_bytes));
            }
            h.i64(r.from_config);
        }
        Op::SetConfig { members } => {
            h.u64(10);
            h.str(members);
        }
    }
    h.0
}

struct StableHasher(u64);

impl StableHasher {
    fn new() -> Self {
        StableHasher(0xcbf2_9ce4_8422_2325)
    }
    fn bytes(&mut self, b: &[u8]) {
        for x in b {
            self.0 ^= u64::from(*x);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.bytes(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.bytes(s.as_bytes());
    }
    fn data(&mut self, d: Option<&[u8]>) {
        match d {
            None => self.u64(u64::MAX),
            Some(d) => {
                self.u64(d.len() as u64);
                self.u64(u64::from(crc32c::crc32c(d)));
            }
        }
    }
    fn acl(&mut self, acl: &[Acl]) {
        self.u64(acl.len() as u64);
        for a in acl {
            self.i64(i64::from(a.perms));
            self.str(&a.id.scheme);
            self.str(&a.id.id);
        }
    }
    fn write_op(&mut self, w: &WriteOp) {
        match w {
            WriteOp::Create { opcode, req } => {
                self.u64(1);
                self.i64(i64::from(*opcode));
                self.str(&req.path);
                self.data(req.data.as_deref());
                self.acl(&req.acl);
                self.i64(i64::from(req.flags));
                self.i64(req.ttl);
            }
            WriteOp::Delete(req) => {
                self.u64(2);
                self.str(&req.path);
                self.i64(i64::from(req.version));
            }
            WriteOp::SetData(req) => {
                self.u64(3);
                self.str(&req.path);
                self.data(req.data.as_deref());
                self.i64(i64::from(req.version));
            }
            WriteOp::Check(req) => {
                self.u64(4);
                self.str(&req.path);
                self.i64(i64::from(req.version));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::types::Acl;

    fn cmd(session: SessionId, xid: i32, op: Op) -> Command {
        Command {
            session,
            xid,
            origin: 7,
            auth: vec![Id::new("ip", "127.0.0.1")],
            seen_zxid: 0,
            op,
        }
    }

    fn batch(time_ms: i64, commands: Vec<Command>) -> Batch {
        Batch { time_ms, commands }
    }

    fn new_session(m: &mut Machine, term: u64) -> SessionId {
        let op = Op::CreateSession {
            timeout_ms: 30000,
            passwd: vec![1; 16],
        };
        match &m.apply_batch(term, &batch(1000, vec![cmd(0, 0, op)]))[0].result {
            OpResult::SessionCreated { session, .. } => *session,
            other => panic!("{other:?}"),
        }
    }

    fn create_op(path: &str, flags: i32) -> Op {
        Op::Write(WriteOp::Create {
            opcode: opcode::CREATE,
            req: CreateRequest {
                path: path.into(),
                data: Some(b"x".to_vec()),
                acl: Acl::open_unsafe(),
                flags,
                ttl: -1,
            },
        })
    }

    #[test]
    fn zxid_epoch_counter_and_rollover() {
        let mut m = Machine::new(MachineConfig::default());
        let s = new_session(&mut m, 0);
        assert_eq!(m.last_zxid(), 1);
        // A new term restarts the counter.
        let a = m.apply_batch(3, &batch(5, vec![cmd(s, 1, create_op("/a", 0))]));
        assert_eq!(a[0].zxid, (3 << 32) | 1);
        // An older term does not move the epoch back.
        let a = m.apply_batch(2, &batch(5, vec![cmd(s, 2, create_op("/b", 0))]));
        assert_eq!(a[0].zxid, (3 << 32) | 2);
        // Counter exhaustion moves to the next epoch by itself.
        m.set_last_zxid((3 << 32) | 0xFFFF_FFFF);
        let a = m.apply_batch(3, &batch(5, vec![cmd(s, 3, create_op("/c", 0))]));
        assert_eq!(a[0].zxid, (4 << 32) | 1);
        assert_eq!(m.view().stat("/c").map(|s| s.czxid), Some((4 << 32) | 1));
        // A later election to that same epoch keeps counting up.
        let a = m.apply_batch(4, &batch(5, vec![cmd(s, 4, create_op("/d", 0))]));
        assert_eq!(a[0].zxid, (4 << 32) | 2);
    }

    #[test]
    fn batch_commands_get_consecutive_zxids_and_share_time() {
        let mut m = Machine::new(MachineConfig::default());
        let s = new_session(&mut m, 0);
        let out = m.apply_batch(
            0,
            &batch(
                777,
                vec![
                    cmd(s, 1, create_op("/a", 0)),
                    cmd(s, 2, create_op("/a", 0)),
                    cmd(s, 3, create_op("/b", 0)),
                ],
            ),
        );
        let zxids: Vec<Zxid> = out.iter().map(|a| a.zxid).collect();
        assert_eq!(zxids, [2, 3, 4]);
        assert_eq!(out[1].result, OpResult::Error(ErrorCode::NodeExists));
        assert!(out[1].triggers.is_empty());
        assert_eq!(out[0].origin, 7);
        let v = m.view();
        assert_eq!(v.stat("/a").map(|s| s.ctime), Some(777));
        assert_eq!(v.stat("/b").map(|s| s.mtime), Some(777));
        assert_eq!(v.last_zxid(), 4);
    }

    #[test]
    fn views_cross_threads() {
        fn send_sync<T: Send + Sync + Clone>() {}
        send_sync::<View>();
    }

    #[test]
    fn views_are_snapshots() {
        let mut m = Machine::new(MachineConfig::default());
        let s = new_session(&mut m, 0);
        let before = m.view();
        m.apply_batch(0, &batch(1, vec![cmd(s, 1, create_op("/a", 0))]));
        assert!(!before.exists("/a"));
        assert!(m.view().exists("/a"));
        assert_eq!(before.last_zxid(), 1);
        let timeouts: Vec<_> = m.view().session_timeouts().collect();
        assert_eq!(timeouts, [(s, 30000)]);
        assert_eq!(
            m.view().session(s).map(|x| &x.passwd[..]),
            Some(&[1u8; 16][..])
        );
    }

    #[test]
    fn op_hash_is_stable_and_discriminating() {
        // Pinned: the hash is replicated state and must not change between builds.
        assert_eq!(op_hash(&Op::CloseSession), op_hash(&Op::CloseSession));
        let a = op_hash(&create_op("/a", 0));
        assert_ne!(a, op_hash(&create_op("/b", 0)));
        assert_ne!(a, op_hash(&create_op("/a", 1)));
        assert_ne!(
            op_hash(&Op::Fail(ErrorCode::MarshallingError)),
            op_hash(&Op::Fail(ErrorCode::Unimplemented))
        );
        let mut h = StableHasher::new();
        h.u64(2);
        assert_eq!(op_hash(&Op::CloseSession), h.0);
        assert_eq!(StableHasher::new().0, 0xcbf2_9ce4_8422_2325);
        let mut h = StableHasher::new();
        h.bytes(b"a");
        assert_eq!(h.0, 0xaf63_dc4c_8601_ec8c, "FNV-1a 64 of \"a\"");
    }

    #[test]
    fn acl_interning_shares_and_purges() {
        let mut i = AclInterner::new();
        let a = i.intern(&Acl::open_unsafe());
        let b = i.intern(&Acl::open_unsafe());
        assert!(Arc::ptr_eq(&a, &b));
        for n in 0..AclInterner::MIN_PURGE + 10 {
            i.intern(&[Acl {
                perms: 1,
                id: Id::new("ip", format!("10.0.0.{}", n % 256)),
            }]);
            i.intern(&[Acl {
                perms: 1,
                id: Id::new("digest", format!("u{n}:h")),
            }]);
        }
        // Unused entries were purged along the way; the one still referenced survives.
        assert!(i.set.len() < 2 * AclInterner::MIN_PURGE + 20);
        assert!(Arc::ptr_eq(&a, &i.intern(&Acl::open_unsafe())));
    }

    #[test]
    fn nodes_share_interned_acls() {
        let mut m = Machine::new(MachineConfig::default());
        let s = new_session(&mut m, 0);
        m.apply_batch(
            0,
            &batch(
                1,
                vec![cmd(s, 1, create_op("/a", 0)), cmd(s, 2, create_op("/b", 0))],
            ),
        );
        let v = m.view();
        let (a, b) = (v.node("/a").unwrap(), v.node("/b").unwrap());
        assert!(Arc::ptr_eq(a.acl_arc(), b.acl_arc()));
        assert!(Arc::ptr_eq(a.acl_arc(), v.node("/").unwrap().acl_arc()));
    }

    mod props {
        use super::super::*;
        use super::cmd;
        use proptest::prelude::*;

        const PATHS: [&str; 6] = ["/a", "/b", "/a/x", "/a/y", "/b/z", "/a/x/q"];

        fn path() -> impl Strategy<Value = String> {
            prop::sample::select(&PATHS[..]).prop_map(String::from)
        }

        fn version() -> impl Strategy<Value = i32> {
            prop_oneof![Just(-1), 0..3i32]
        }

        fn write_op() -> impl Strategy<Value = WriteOp> {
            prop_oneof![
                (
                    path(),
                    0..4i32,
                    prop::bool::ANY,
                    prop::option::of(prop::collection::vec(any::<u8>(), 0..4))
                )
                    .prop_map(|(path, flags, container, data)| WriteOp::Create {
                        opcode: if container {
                            opcode::CREATE_CONTAINER
                        } else {
                            opcode::CREATE
                        },
                        req: CreateRequest {
                            path,
                            data,
                            acl: Acl::open_unsafe(),
                            flags,
                            ttl: -1
                        },
                    }),
                (path(), version())
                    .prop_map(|(path, version)| WriteOp::Delete(DeleteRequest { path, version })),
                (path(), version(), prop::collection::vec(any::<u8>(), 0..4)).prop_map(
                    |(path, version, d)| {
                        WriteOp::SetData(SetDataRequest {
                            path,
                            data: Some(d),
                            version,
                        })
                    }
                ),
                (path(), version()).prop_map(|(path, version)| WriteOp::Check(
                    CheckVersionRequest { path, version }
                )),
            ]
        }

        #[derive(Clone, Debug)]
        enum Step {
            Op { session: usize, xid: i32, op: Op },
            NewSession,
            Reap(String),
            Term(u64),
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                6 => (0..3usize, 1..4i32, write_op()).prop_map(|(session, xid, w)| Step::Op { session, xid, op: Op::Write(w) }),
                4 => (0..3usize, 1..4i32, prop::collection::vec(write_op(), 0..5))
                    .prop_map(|(session, xid, ops)| Step::Op { session, xid, op: Op::Multi(ops) }),
                1 => (0..3usize, path(), version()).prop_map(|(session, path, version)| Step::Op {
                    session,
                    xid: 9,
                    op: Op::SetAcl(SetAclRequest { path, acl: Acl::open_unsafe(), version }),
                }),
                1 => (0..3usize).prop_map(|session| Step::Op { session, xid: 10, op: Op::CloseSession }),
                1 => Just(Step::NewSession),
                1 => path().prop_map(Step::Reap),
                1 => (0..4u64).prop_map(Step::Term),
            ]
        }

        /// The tree plus every session's ephemerals: what a failed multi must not touch.
        type Observable = (Tree, Vec<(SessionId, Vec<Arc<str>>)>);

        fn observable(m: &Machine) -> Observable {
            let v = m.view();
            let mut eph: Vec<_> = v
                .sessions()
                .map(|(id, s)| (id, s.ephemerals().cloned().collect()))
                .collect();
            eph.sort();
            (v.tree().clone(), eph)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn failed_multis_change_nothing_and_zxids_increase(steps in prop::collection::vec(step(), 1..60)) {
                let mut m = Machine::new(MachineConfig::default());
                let mut twin = Machine::new(MachineConfig::default());
                let mut sessions: Vec<SessionId> = vec![];
                let mut term = 0u64;
                let mut last = m.last_zxid();
                for (i, s) in steps.into_iter().enumerate() {
                    let time = 1000 + i as i64;
                    let command = match s {
                        Step::NewSession => cmd(0, 0, Op::CreateSession { timeout_ms: 1000, passwd: vec![] }),
                        Step::Reap(path) => cmd(0, 0, Op::DeleteContainer { path }),
                        Step::Term(t) => {
                            term = term.max(t);
                            continue;
                        }
                        Step::Op { session, xid, op } => {
                            let id = sessions.get(session).copied().unwrap_or(12345);
                            cmd(id, xid, op)
                        }
                    };
                    let before = observable(&m);
                    let b = Batch { time_ms: time, commands: vec![command.clone()] };
                    let out = m.apply_batch(term, &b);
                    let twin_out = twin.apply_batch(term, &b);
                    prop_assert_eq!(out.len(), 1);
                    let a = &out[0];
                    prop_assert_eq!(&a.result, &twin_out[0].result, "members disagree");
                    if a.duplicate {
                        prop_assert!(a.zxid <= last);
                        // A duplicate consumes no zxid, but a new term still moves the
                        // epoch (last_zxid becomes the new epoch's base, counter 0).
                        let epoch_base = (term as i64) << 32;
                        prop_assert!(m.last_zxid() == last || m.last_zxid() == epoch_base);
                        last = m.last_zxid();
                        prop_assert!(a.triggers.is_empty());
                    } else {
                        prop_assert!(a.zxid > last, "zxid {:#x} after {:#x}", a.zxid, last);
                        prop_assert_eq!(m.last_zxid(), a.zxid);
                        last = a.zxid;
                    }
                    match &a.result {
                        OpResult::SessionCreated { session, .. } => sessions.push(*session),
                        OpResult::Multi(parts) if parts.iter().any(|p| matches!(p, MultiResult::Error(_))) => {
                            prop_assert!(a.triggers.is_empty());
                            prop_assert!(parts.iter().all(|p| matches!(p, MultiResult::Error(_))));
                            let after = observable(&m);
                            prop_assert!(before == after, "a failed multi changed the state");
                        }
                        OpResult::Error(_) => {
                            prop_assert!(a.triggers.is_empty());
                            prop_assert!(before == observable(&m), "a failed write changed the state");
                        }
                        _ => {}
                    }
                    // Invariants: counters agree with a full scan.
                    let v = m.view();
                    let scan_eph = v.tree().iter().filter(|(_, n)| n.ephemeral_owner() != 0).count();
                    prop_assert_eq!(v.ephemeral_count(), scan_eph);
                    let owned: usize = v.sessions().map(|(_, s)| s.ephemeral_count()).sum();
                    prop_assert_eq!(owned, scan_eph);
                    let size: u64 = v.tree().iter().map(|(p, n)| (p.len() + n.data().map_or(0, |d| d.len())) as u64).sum();
                    prop_assert_eq!(v.approximate_data_size(), size);
                    prop_assert_eq!(v.descendant_count("/"), Some(v.node_count() as u64 - 1));
                }
                prop_assert!(observable(&m) == observable(&twin), "members diverged");
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Scenario files: testdata/machine/*.txt (the format is described in testdata/machine/README.md).

    mod scenario {
        use super::super::*;
        use std::collections::HashMap as StdMap;

        pub struct Runner {
            m: Machine,
            time: i64,
            term: u64,
            names: StdMap<String, SessionId>,
            /// Identities per connection (origin): `auth` adds to the session's current one.
            auth: StdMap<u64, Vec<Id>>,
            /// Each session's current connection, and what each connection's writes last
            /// carried: a connection sends its identities once, as the server's do.
            conns: StdMap<String, u64>,
            sent: StdMap<u64, Vec<Id>>,
            xids: StdMap<String, i32>,
            current: String,
            next_xid: Option<i32>,
            last_cmd: Option<Command>,
            last: Option<Applied>,
        }

        fn err_name(c: ErrorCode) -> String {
            format!("{c:?}")
        }

        fn parse_error(name: &str) -> Result<ErrorCode, String> {
            (-200..=0)
                .filter_map(ErrorCode::from_code)
                .find(|c| err_name(*c) == name)
                .ok_or_else(|| format!("unknown error code name {name}"))
        }

        fn parse_num(s: &str) -> Result<i64, String> {
            let (neg, body) = match s.strip_prefix('-') {
                Some(b) => (true, b),
                None => (false, s),
            };
            let v = match body.strip_prefix("0x") {
                Some(h) => i64::from_str_radix(h, 16)
                    .or_else(|_| u64::from_str_radix(h, 16).map(|u| u as i64)),
                None => body.parse::<i64>(),
            }
            .map_err(|e| format!("bad number {s}: {e}"))?;
            Ok(if neg { -v } else { v })
        }

        fn parse_data(s: &str) -> Option<Vec<u8>> {
            if s == "null" {
                None
            } else if let Some(h) = s.strip_prefix("hex:") {
                Some(
                    (0..h.len() / 2)
                        .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap())
                        .collect(),
                )
            } else {
                Some(s.as_bytes().to_vec())
            }
        }

        /// `\xHH` escapes (UTF-8 bytes) in paths.
        fn unescape(s: &str) -> String {
            let b = s.as_bytes();
            let mut out = Vec::with_capacity(b.len());
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') && i + 4 <= b.len() {
                    if let Ok(v) = u8::from_str_radix(&s[i + 2..i + 4], 16) {
                        out.push(v);
                        i += 4;
                        continue;
                    }
                }
                out.push(b[i]);
                i += 1;
            }
            String::from_utf8_lossy(&out).into_owned()
        }

        fn render_data(d: Option<&[u8]>) -> String {
            match d {
                None => "null".into(),
                Some(d) => match std::str::from_utf8(d) {
                    Ok(s)
                        if !s.contains(char::is_whitespace)
                            && !s.starts_with("hex:")
                            && s != "null" =>
                    {
                        s.into()
                    }
                    _ => format!(
                        "hex:{}",
                        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
                    ),
                },
            }
        }

        fn parse_perms(s: &str) -> Result<i32, String> {
            if let Ok(n) = s.parse::<i32>() {
                return Ok(n);
            }
            s.chars().try_fold(0, |acc, c| {
                Ok(acc
                    | match c {
                        'r' => perms::READ,
                        'w' => perms::WRITE,
                        'c' => perms::CREATE,
                        'd' => perms::DELETE,
                        'a' => perms::ADMIN,
                        _ => return Err(format!("bad perms {s}")),
                    })
            })
        }

        /// `scheme:id:perms,...`; `digestpw:user:pass:perms` hashes the password.
        fn parse_acl(s: &str) -> Result<Vec<Acl>, String> {
            if s.is_empty() {
                return Ok(vec![]);
            }
            s.split(',')
                .map(|e| {
                    let (scheme, rest) = e.split_once(':').ok_or(format!("bad acl {e}"))?;
                    let (id, p) = rest.rsplit_once(':').ok_or(format!("bad acl {e}"))?;
                    let perms = parse_perms(p)?;
                    Ok(if scheme == "digestpw" {
                        Acl {
                            perms,
                            id: Id::new("digest", acl::digest_id(id)),
                        }
                    } else {
                        Acl {
                            perms,
                            id: Id::new(scheme, id),
                        }
                    })
                })
                .collect()
        }

        fn render_acl(acl: &[Acl]) -> String {
            acl.iter()
                .map(|a| format!("{}:{}:{}", a.id.scheme, a.id.id, a.perms))
                .collect::<Vec<_>>()
                .join(" ")
        }

        /// Splits `k=v` options; the first bare words are positional.
        fn options<'a>(words: &[&'a str]) -> (Vec<&'a str>, StdMap<&'a str, &'a str>) {
            let mut pos = vec![];
            let mut opts = StdMap::new();
            for w in words {
                match w.split_once('=') {
                    Some((k, v)) => {
                        opts.insert(k, v);
                    }
                    None => pos.push(*w),
                }
            }
            (pos, opts)
        }

        fn opt_num(opts: &StdMap<&str, &str>, k: &str, default: i64) -> Result<i64, String> {
            opts.get(k).map_or(Ok(default), |v| parse_num(v))
        }

        /// A token list matches if every expected token is among the actual ones; numbers
        /// compare by value (so `0x100000001` matches `4294967297`).
        fn tokens_match(expected: &str, actual: &str) -> bool {
            let act: Vec<&str> = actual.split_whitespace().collect();
            let mut exp = expected.split_whitespace();
            let (Some(eh), Some(ah)) = (exp.next(), act.first()) else {
                return expected.trim().is_empty() && actual.trim().is_empty();
            };
            if eh != *ah {
                return false;
            }
            exp.all(|e| {
                act[1..].iter().any(|a| match (e.split_once('='), a.split_once('=')) {
                    (Some((ek, ev)), Some((ak, av))) => {
                        ek == ak
                            && (ev == av
                                || matches!((parse_num(ev), parse_num(av)), (Ok(x), Ok(y)) if x == y))
                    }
                    (None, None) => e == *a,
                    _ => false,
                })
            })
        }

        fn parts_match(expected: &str, actual: &str) -> bool {
            let e: Vec<&str> = expected.split(" | ").collect();
            let a: Vec<&str> = actual.split(" | ").collect();
            e.len() == a.len() && e.iter().zip(&a).all(|(e, a)| tokens_match(e, a))
        }

        fn norm_list(s: &str) -> String {
            // Numbers compare by value, so `0x..` expectations work.
            let s = s
                .split_whitespace()
                .map(|w| parse_num(w).map_or(w.to_string(), |n| n.to_string()))
                .collect::<Vec<_>>()
                .join(" ");
            if s == "(none)" {
                String::new()
            } else {
                s
            }
        }

        impl Runner {
            pub fn new() -> Runner {
                Runner {
                    m: Machine::new(MachineConfig::default()),
                    time: 1_000,
                    term: 0,
                    names: StdMap::new(),
                    auth: StdMap::new(),
                    conns: StdMap::new(),
                    sent: StdMap::new(),
                    xids: StdMap::new(),
                    current: String::new(),
                    next_xid: None,
                    last_cmd: None,
                    last: None,
                }
            }

            fn name_of(&self, id: SessionId) -> String {
                self.names
                    .iter()
                    .find(|(_, v)| **v == id)
                    .map(|(k, _)| k.clone())
                    .unwrap_or_else(|| id.to_string())
            }

            fn session_id(&self, name: &str) -> Result<SessionId, String> {
                if name == "none" {
                    return Ok(0);
                }
                match self.names.get(name) {
                    Some(id) => Ok(*id),
                    None => parse_num(name).map_err(|_| format!("unknown session name {name}")),
                }
            }

            fn stat_tokens(&self, s: &Stat) -> String {
                format!(
                    "czxid={} mzxid={} pzxid={} ctime={} mtime={} version={} cversion={} aversion={} owner={} dataLength={} numChildren={}",
                    s.czxid, s.mzxid, s.pzxid, s.ctime, s.mtime, s.version, s.cversion, s.aversion,
                    if s.ephemeral_owner == 0 { "0".to_string() } else { self.name_of(s.ephemeral_owner) },
                    s.data_length, s.num_children
                )
            }

            fn render_multi_part(&self, r: &MultiResult) -> String {
                match r {
                    MultiResult::Created { opcode, path, stat } => {
                        format!("ok opcode={opcode} path={path} {}", self.stat_tokens(stat))
                    }
                    MultiResult::Deleted | MultiResult::Checked => "ok".into(),
                    MultiResult::SetData(stat) => format!("ok {}", self.stat_tokens(stat)),
                    MultiResult::Error(c) => format!("err {}", err_name(*c)),
                }
            }

            fn render(&self, a: &Applied) -> String {
                let tail = format!(
                    "zxid={} dup={}",
                    a.zxid,
                    if a.duplicate { "yes" } else { "no" }
                );
                match &a.result {
                    OpResult::SessionCreated {
                        session,
                        timeout_ms,
                        ..
                    } => {
                        format!("ok session={session} timeout={timeout_ms} {tail}")
                    }
                    OpResult::Created { path, stat } => {
                        format!("ok path={path} {} {tail}", self.stat_tokens(stat))
                    }
                    OpResult::Stat(stat) | OpResult::Config { stat, .. } => {
                        format!("ok {} {tail}", self.stat_tokens(stat))
                    }
                    OpResult::SessionClosed
                    | OpResult::SessionsExpired
                    | OpResult::Deleted
                    | OpResult::Checked => {
                        format!("ok {tail}")
                    }
                    OpResult::Error(c) => format!("err {} {tail}", err_name(*c)),
                    OpResult::Multi(parts) => {
                        let mut s = format!("multi {tail}");
                        for p in parts {
                            s.push_str(" | ");
                            s.push_str(&self.render_multi_part(p));
                        }
                        s
                    }
                }
            }

            fn write_op(&self, words: &[&str]) -> Result<WriteOp, String> {
                let (pos, o) = options(words.get(1..).unwrap_or(&[]));
                let path = pos.first().map(|p| p.to_string()).unwrap_or_default();
                let path = if path == "\"\"" {
                    String::new()
                } else {
                    unescape(&path)
                };
                let version = opt_num(&o, "version", -1)? as i32;
                Ok(match words.first().copied() {
                    Some("create") => WriteOp::Create {
                        opcode: opt_num(&o, "op", opcode::CREATE as i64)? as i32,
                        req: CreateRequest {
                            path,
                            data: parse_data(o.get("data").copied().unwrap_or("")),
                            acl: parse_acl(o.get("acl").copied().unwrap_or("world:anyone:31"))?,
                            flags: opt_num(&o, "flags", 0)? as i32,
                            ttl: opt_num(&o, "ttl", -1)?,
                        },
                    },
                    Some("delete") => WriteOp::Delete(DeleteRequest { path, version }),
                    Some("set") => WriteOp::SetData(SetDataRequest {
                        path,
                        data: parse_data(o.get("data").copied().unwrap_or("")),
                        version,
                    }),
                    Some("check") => WriteOp::Check(CheckVersionRequest { path, version }),
                    other => return Err(format!("not a write op: {other:?}")),
                })
            }

            /// Applies one command from the current session (or `session` when given).
            fn submit(&mut self, op: Op, internal: bool) -> Applied {
                let (session, auth, xid, origin) = if internal {
                    (0, vec![], 0, 0)
                } else {
                    let cur = self.current.clone();
                    let xid = self.next_xid.take().unwrap_or_else(|| {
                        let x = self.xids.entry(cur.clone()).or_insert(0);
                        *x += 1;
                        *x
                    });
                    let origin = self.origin_of(&cur);
                    let mut ids = self.auth.get(&origin).cloned().unwrap_or_default();
                    if ids.is_empty() {
                        ids.push(Id::new("ip", "192.0.2.1")); // every connection has an address
                    }
                    let auth = if self.sent.get(&origin) == Some(&ids) {
                        vec![]
                    } else {
                        self.sent.insert(origin, ids.clone());
                        ids
                    };
                    (self.session_id(&cur).unwrap_or(0), auth, xid, origin)
                };
                let c = Command {
                    session,
                    xid,
                    origin,
                    auth,
                    seen_zxid: 0,
                    op,
                };
                self.apply(c)
            }

            fn apply(&mut self, c: Command) -> Applied {
                let out = self.m.apply_batch(
                    self.term,
                    &Batch {
                        time_ms: self.time,
                        commands: vec![c.clone()],
                    },
                );
                assert_eq!(out.len(), 1);
                let a = out.into_iter().next().unwrap();
                self.last_cmd = Some(c);
                self.last = Some(a.clone());
                a
            }

            /// The origin of `name`'s current connection: the session's name and connection
            /// number, hashed (0 is the server's own).
            fn origin_of(&self, name: &str) -> u64 {
                let conn = self.conns.get(name).copied().unwrap_or(1);
                let mut h = StableHasher::new();
                h.str(name);
                h.u64(conn);
                h.0 | 1
            }

            fn caller_ids(&self, opts: &StdMap<&str, &str>) -> Vec<Id> {
                let who = opts
                    .get("as")
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| self.current.clone());
                self.auth
                    .get(&self.origin_of(&who))
                    .cloned()
                    .unwrap_or_default()
            }

            /// Runs one line; returns the actual rendering when an expectation is given and
            /// differs.
            pub fn line(&mut self, text: &str) -> Result<(), String> {
                let (command, expect) = match text.split_once(" -> ") {
                    Some((c, e)) => (c.trim(), Some(e.trim())),
                    None => (text.trim(), None),
                };
                let words: Vec<&str> = command.split_whitespace().collect();
                let (pos, opts) = options(words.get(1..).unwrap_or(&[]));
                let arg = |i: usize| {
                    // `""` stands for the empty path.
                    pos.get(i)
                        .map(|a| if *a == "\"\"" { "" } else { *a })
                        .ok_or(format!("missing argument {i}"))
                };
                // (actual, how to compare)
                enum Cmp {
                    Parts,
                    Tokens,
                    List,
                }
                let (actual, cmp): (String, Cmp) = match words.first().copied().unwrap_or("") {
                    "config" => {
                        let ttl = opts.get("ttl").is_some_and(|v| *v == "on");
                        let max = opt_num(&opts, "max_sessions", 1 << 20)? as usize;
                        self.m = Machine::new(MachineConfig {
                            ttl_enabled: ttl,
                            max_sessions: max,
                        });
                        return Ok(());
                    }
                    "time" => {
                        self.time = parse_num(arg(0)?)?;
                        return Ok(());
                    }
                    "term" => {
                        self.term = parse_num(arg(0)?)? as u64;
                        return Ok(());
                    }
                    "setzxid" => {
                        self.m.set_last_zxid(parse_num(arg(0)?)?);
                        return Ok(());
                    }
                    "as" => {
                        self.current = arg(0)?.to_string();
                        return Ok(());
                    }
                    "xid" => {
                        self.next_xid = Some(parse_num(arg(0)?)? as i32);
                        return Ok(());
                    }
                    "conn" => {
                        let n = parse_num(arg(0)?)? as u64;
                        self.conns.insert(self.current.clone(), n);
                        return Ok(());
                    }
                    "carried" => {
                        let c = self.last_cmd.as_ref().ok_or("no command yet")?;
                        (format!("carried {}", c.auth.len()), Cmp::List)
                    }
                    "auth" => {
                        let name = arg(0)?.to_string();
                        let scheme = arg(1)?;
                        let value = pos.get(2).copied().unwrap_or("");
                        let id = match scheme {
                            "digest" => Id::new("digest", acl::digest_id(value)),
                            _ => Id::new(scheme, value),
                        };
                        let origin = self.origin_of(&name);
                        self.auth.entry(origin).or_default().push(id);
                        return Ok(());
                    }
                    "session" => {
                        let name = arg(0)?.to_string();
                        let op = Op::CreateSession {
                            timeout_ms: opt_num(&opts, "timeout", 30000)? as i32,
                            passwd: opts
                                .get("passwd")
                                .map_or(vec![0xAB; 16], |p| p.as_bytes().to_vec()),
                        };
                        let a = self.submit(op, true);
                        if let OpResult::SessionCreated { session, .. } = a.result {
                            self.names.insert(name.clone(), session);
                            self.current = name;
                        }
                        (self.render(&a), Cmp::Parts)
                    }
                    "create" | "delete" | "set" | "check" => {
                        let op = Op::Write(self.write_op(&words)?);
                        let a = self.submit(op, false);
                        (self.render(&a), Cmp::Parts)
                    }
                    "setacl" => {
                        let op = Op::SetAcl(SetAclRequest {
                            path: unescape(arg(0)?),
                            acl: parse_acl(opts.get("acl").copied().unwrap_or(""))?,
                            version: opt_num(&opts, "version", -1)? as i32,
                        });
                        let a = self.submit(op, false);
                        (self.render(&a), Cmp::Parts)
                    }
                    "multi" => {
                        let rest = command.strip_prefix("multi").unwrap_or("").trim();
                        let ops = if rest.is_empty() {
                            vec![]
                        } else {
                            rest.split(" | ")
                                .map(|o| self.write_op(&o.split_whitespace().collect::<Vec<_>>()))
                                .collect::<Result<Vec<_>, _>>()?
                        };
                        let a = self.submit(Op::Multi(ops), false);
                        (self.render(&a), Cmp::Parts)
                    }
                    "close" => {
                        let a = self.submit(Op::CloseSession, false);
                        (self.render(&a), Cmp::Parts)
                    }
                    "fail" => {
                        let a = self.submit(Op::Fail(parse_error(arg(0)?)?), false);
                        (self.render(&a), Cmp::Parts)
                    }
                    "expire" => {
                        let sessions = pos
                            .iter()
                            .map(|n| self.session_id(n))
                            .collect::<Result<Vec<_>, _>>()?;
                        let a = self.submit(Op::ExpireSessions { sessions }, true);
                        (self.render(&a), Cmp::Parts)
                    }
                    "reap" => {
                        let a = self.submit(
                            Op::DeleteContainer {
                                path: arg(0)?.to_string(),
                            },
                            true,
                        );
                        (self.render(&a), Cmp::Parts)
                    }
                    "retry" => {
                        let c = self.last_cmd.clone().ok_or("nothing to retry")?;
                        let a = self.apply(c);
                        (self.render(&a), Cmp::Parts)
                    }
                    // ---- reads and inspections ----
                    "stat" => {
                        let v = self.m.view();
                        (
                            v.stat(arg(0)?).map_or("nonode".into(), |s| {
                                format!("stat {}", self.stat_tokens(&s))
                            }),
                            Cmp::Tokens,
                        )
                    }
                    "get" => {
                        let v = self.m.view();
                        let ids = self.caller_ids(&opts);
                        let actual = match v.node(arg(0)?) {
                            None => "err NoNode".into(),
                            Some(n) if !crate::tree::can_read(n, &ids) => "err NoAuth".into(),
                            Some(n) => format!(
                                "ok data={} {}",
                                render_data(n.data()),
                                self.stat_tokens(&n.stat())
                            ),
                        };
                        (actual, Cmp::Tokens)
                    }
                    "getacl" => {
                        let v = self.m.view();
                        let ids = self.caller_ids(&opts);
                        let actual = match v.node(arg(0)?) {
                            None => "err NoNode".into(),
                            Some(n) if !acl::check(n.acl(), perms::READ | perms::ADMIN, &ids) => {
                                "err NoAuth".into()
                            }
                            Some(n) => render_acl(&acl::redact_for_get_acl(n.acl(), &ids)),
                        };
                        (actual, Cmp::List)
                    }
                    "children" => {
                        let v = self.m.view();
                        let actual = match v.children(arg(0)?) {
                            None => "nonode".into(),
                            Some(c) => c
                                .iter()
                                .map(|c| c.to_string())
                                .collect::<Vec<_>>()
                                .join(" "),
                        };
                        (actual, Cmp::List)
                    }
                    "count" => {
                        let v = self.m.view();
                        (
                            v.descendant_count(arg(0)?)
                                .map_or("nonode".into(), |n| n.to_string()),
                            Cmp::List,
                        )
                    }
                    "exists" => {
                        let v = self.m.view();
                        (
                            (if v.exists(arg(0)?) { "yes" } else { "no" }).into(),
                            Cmp::List,
                        )
                    }
                    "ephemerals" => {
                        let v = self.m.view();
                        let id = self.session_id(arg(0)?)?;
                        let prefix = pos.get(1).copied().unwrap_or("/");
                        (
                            v.ephemerals(id, prefix)
                                .iter()
                                .map(|p| p.to_string())
                                .collect::<Vec<_>>()
                                .join(" "),
                            Cmp::List,
                        )
                    }
                    "lastzxid" => (self.m.view().last_zxid().to_string(), Cmp::List),
                    "triggers" => {
                        let a = self.last.as_ref().ok_or("no command yet")?;
                        let t = a
                            .triggers
                            .iter()
                            .map(|t| format!("{:?} {}", t.event, t.path))
                            .collect::<Vec<_>>()
                            .join(", ");
                        (if t.is_empty() { "none".into() } else { t }, Cmp::List)
                    }
                    "ended" => {
                        let a = self.last.as_ref().ok_or("no command yet")?;
                        let e = a
                            .ended_sessions
                            .iter()
                            .map(|s| self.name_of(*s))
                            .collect::<Vec<_>>()
                            .join(" ");
                        (if e.is_empty() { "none".into() } else { e }, Cmp::List)
                    }
                    "reapable" => {
                        let now = parse_num(arg(0)?)?;
                        (self.m.view().reap_candidates(now).join(" "), Cmp::List)
                    }
                    "info" => {
                        let v = self.m.view();
                        (
                            format!(
                                "info nodes={} ephemerals={} datasize={} sessions={}",
                                v.node_count(),
                                v.ephemeral_count(),
                                v.approximate_data_size(),
                                v.session_count()
                            ),
                            Cmp::Tokens,
                        )
                    }
                    "sessioninfo" => {
                        let v = self.m.view();
                        let id = self.session_id(arg(0)?)?;
                        let actual = match v.session(id) {
                            None => "none".into(),
                            Some(s) => format!(
                                "session id={id} timeout={} passwd={} ephemerals={}",
                                s.timeout_ms,
                                render_data(Some(&s.passwd)),
                                s.ephemeral_count()
                            ),
                        };
                        (actual, Cmp::Tokens)
                    }
                    other => return Err(format!("unknown command {other:?}")),
                };
                let Some(expect) = expect else { return Ok(()) };
                let ok = match cmp {
                    Cmp::Parts => parts_match(expect, &actual),
                    Cmp::Tokens => {
                        // Reads list tokens without a head: give both the same one.
                        let head = actual.split_whitespace().next().unwrap_or("");
                        let e = if expect.starts_with(head)
                            || expect == "nonode"
                            || expect.starts_with("err")
                        {
                            expect.to_string()
                        } else {
                            format!("{head} {expect}")
                        };
                        tokens_match(&e, &actual)
                    }
                    Cmp::List => norm_list(expect) == norm_list(&actual),
                };
                if ok {
                    Ok(())
                } else {
                    Err(format!("expected: {expect}\n      actual:   {actual}"))
                }
            }
        }

        /// Runs a scenario text; returns the failures as `file:line: message`.
        pub fn run(name: &str, text: &str) -> Vec<String> {
            let mut r = Runner::new();
            let mut failures = vec![];
            for (i, line) in text.lines().enumerate() {
                let t = line.trim();
                if t.is_empty() || t.starts_with('#') {
                    continue;
                }
                if let Err(e) = r.line(t) {
                    failures.push(format!("{name}:{}: {t}\n      {e}", i + 1));
                }
            }
            failures
        }
    }

    #[test]
    fn scenario_files() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/machine");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("testdata/machine")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "txt"))
            .collect();
        files.sort();
        assert!(
            files.len() >= 5,
            "scenario files missing in {}",
            dir.display()
        );
        let mut failures = vec![];
        for f in &files {
            let text = std::fs::read_to_string(f).expect("read scenario");
            failures.extend(scenario::run(
                &f.file_name().unwrap().to_string_lossy(),
                &text,
            ));
        }
        assert!(
            failures.is_empty(),
            "{} scenario failures:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn scenario_runner_can_fail() {
        // The runner must notice a wrong expectation of every kind.
        for bad in [
            "create /a -> err NodeExists",
            "create /a -> ok path=/b",
            "stat / -> cversion=0",
            "children /zookeeper -> quota config",
            "lastzxid -> 99",
            "multi -> multi | ok",
            "triggers -> NodeCreated /",
            "get / -> data=x",
            "getacl / -> world:anyone:1",
        ] {
            let text = format!("session A\n{bad}\n");
            assert_eq!(scenario::run("t", &text).len(), 1, "{bad} should fail");
        }
        assert!(scenario::run("t", "session A\ncreate /a -> ok path=/a\ntriggers -> NodeCreated /a, NodeChildrenChanged /\n").is_empty());
    }
}
