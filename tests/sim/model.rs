//! An independent model of what the log's commands must do, written from ZooKeeper's rules
//! (and ringkeeper's idempotency rule) for the subset of ops the clients use. The checker
//! replays the committed log through it and compares every result, every zxid and the final
//! tree and session table with what the real `Machine` produced on every member.
//!
//! Plain `BTreeMap`s and full clones: small, obviously right, no sharing with the machine.

use std::collections::{BTreeMap, BTreeSet};

use ringkeeper::machine::View;
use ringkeeper::proto::types::{CreateMode, ErrorCode, SessionId, Stat, Zxid};
use ringkeeper::txn::{Batch, Command, MultiResult, Op, OpResult, WriteOp};

/// What applying one command gave.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub zxid: Zxid,
    pub result: OpResult,
    pub duplicate: bool,
}

#[derive(Clone, Debug)]
struct MNode {
    data: Option<Vec<u8>>,
    czxid: Zxid,
    mzxid: Zxid,
    pzxid: Zxid,
    ctime: i64,
    mtime: i64,
    version: i32,
    aversion: i32,
    creations: i32,
    owner: SessionId,
    children: BTreeSet<String>,
}

impl MNode {
    fn builtin(children: &[&str]) -> MNode {
        MNode {
            data: Some(Vec::new()),
            czxid: 0,
            mzxid: 0,
            pzxid: 0,
            ctime: 0,
            mtime: 0,
            version: 0,
            aversion: 0,
            creations: 0,
            owner: 0,
            children: children.iter().map(|c| c.to_string()).collect(),
        }
    }

    fn stat(&self) -> Stat {
        let n = self.children.len() as i32;
        Stat {
            czxid: self.czxid,
            mzxid: self.mzxid,
            ctime: self.ctime,
            mtime: self.mtime,
            version: self.version,
            cversion: self.creations * 2 - n,
            aversion: self.aversion,
            ephemeral_owner: self.owner,
            data_length: self.data.as_ref().map_or(0, |d| d.len() as i32),
            num_children: n,
            pzxid: self.pzxid,
        }
    }
}

#[derive(Clone, Debug)]
struct Last {
    xid: i32,
    op: Op,
    zxid: Zxid,
    result: OpResult,
}

#[derive(Clone, Debug, Default)]
struct MSession {
    last: Option<Last>,
    ephemerals: BTreeSet<String>,
}

#[derive(Clone)]
struct State {
    nodes: BTreeMap<String, MNode>,
    sessions: BTreeMap<SessionId, MSession>,
}

pub struct Model {
    state: State,
    last_zxid: Zxid,
    /// ZooKeeper's session id layout (server id 1): fixed by the first session's time.
    id_base: Option<i64>,
    created: u64,
}

/// A write op's success, before it is shaped as a single or multi result.
enum Done {
    Created(i32, String, Stat),
    Deleted,
    SetData(Stat),
    Checked,
}

fn parent_of(p: &str) -> &str {
    match p.rfind('/') {
        Some(0) => "/",
        Some(i) => &p[..i],
        None => "",
    }
}

fn name_of(p: &str) -> &str {
    &p[p.rfind('/').map_or(0, |i| i + 1)..]
}

fn version_ok(expected: i32, current: i32) -> bool {
    expected == -1 || expected == current
}

impl Model {
    pub fn new() -> Model {
        let mut nodes = BTreeMap::new();
        nodes.insert("/".to_string(), MNode::builtin(&["zookeeper"]));
        nodes.insert("/zookeeper".into(), MNode::builtin(&["config", "quota"]));
        nodes.insert("/zookeeper/quota".into(), MNode::builtin(&[]));
        let mut config = MNode::builtin(&[]);
        config.aversion = -1;
        nodes.insert("/zookeeper/config".into(), config);
        Model {
            state: State {
                nodes,
                sessions: BTreeMap::new(),
            },
            last_zxid: 0,
            id_base: None,
            created: 0,
        }
    }

    fn next_zxid(&mut self) -> Zxid {
        self.last_zxid += 1;
        self.last_zxid
    }

    /// One committed batch from an entry of raft term `term`.
    pub fn apply_batch(&mut self, term: u64, batch: &Batch) -> Vec<Outcome> {
        // A new term starts a new epoch: zxid = term << 32 | counter.
        let term = term as i64;
        if term > self.last_zxid >> 32 {
            self.last_zxid = term << 32;
        }
        batch
            .commands
            .iter()
            .map(|c| self.apply(c, batch.time_ms))
            .collect()
    }

    fn apply(&mut self, cmd: &Command, time_ms: i64) -> Outcome {
        let fresh = |zxid, result| Outcome {
            zxid,
            result,
            duplicate: false,
        };
        if let Op::CreateSession { timeout_ms, passwd } = &cmd.op {
            let zxid = self.next_zxid();
            let base = *self
                .id_base
                .get_or_insert((1i64 << 56) | ((((time_ms as u64) << 24) >> 8) as i64));
            let id = loop {
                let id = base.wrapping_add(self.created as i64);
                self.created += 1;
                if id != 0 && id != i64::MIN && !self.state.sessions.contains_key(&id) {
                    break id;
                }
            };
            self.state.sessions.insert(id, MSession::default());
            let result = OpResult::SessionCreated {
                session: id,
                timeout_ms: *timeout_ms,
                passwd: passwd.clone(),
            };
            return fresh(zxid, result);
        }
        if let Op::SetConfig { members } = &cmd.op {
            // A membership change: /zookeeper/config gets the list and its version (this
            // zxid, in hex), whoever asked.
            let zxid = self.next_zxid();
            let data = format!("{members}version={zxid:x}").into_bytes();
            let node = self
                .state
                .nodes
                .get_mut("/zookeeper/config")
                .expect("a built-in node");
            node.data = Some(data.clone());
            node.version += 1;
            node.mzxid = zxid;
            node.mtime = time_ms;
            return fresh(
                zxid,
                OpResult::Config {
                    data,
                    stat: node.stat(),
                },
            );
        }
        let Some(session) = self.state.sessions.get(&cmd.session) else {
            let zxid = self.next_zxid();
            return fresh(zxid, OpResult::Error(ErrorCode::SessionExpired));
        };
        // The idempotency rule: the session's last write, same xid and op, and the client
        // cannot have seen its reply.
        if let Some(last) = &session.last {
            if last.xid == cmd.xid && last.op == cmd.op && cmd.seen_zxid < last.zxid {
                return Outcome {
                    zxid: last.zxid,
                    result: last.result.clone(),
                    duplicate: true,
                };
            }
        }
        let zxid = self.next_zxid();
        let result = match &cmd.op {
            Op::CloseSession => {
                kill_session(&mut self.state, cmd.session, zxid);
                return fresh(zxid, OpResult::SessionClosed);
            }
            Op::Write(w) => match write(&mut self.state, w, zxid, time_ms, cmd.session) {
                Ok(Done::Created(_, path, stat)) => OpResult::Created { path, stat },
                Ok(Done::Deleted) => OpResult::Deleted,
                Ok(Done::SetData(stat)) => OpResult::Stat(stat),
                Ok(Done::Checked) => OpResult::Checked,
                Err(e) => OpResult::Error(e),
            },
            Op::Multi(ops) => {
                let mut scratch = self.state.clone();
                let mut results = Vec::new();
                let mut failed = None;
                for (i, op) in ops.iter().enumerate() {
                    match write(&mut scratch, op, zxid, time_ms, cmd.session) {
                        Ok(Done::Created(opcode, path, stat)) => {
                            results.push(MultiResult::Created { opcode, path, stat })
                        }
                        Ok(Done::Deleted) => results.push(MultiResult::Deleted),
                        Ok(Done::SetData(stat)) => results.push(MultiResult::SetData(stat)),
                        Ok(Done::Checked) => results.push(MultiResult::Checked),
                        Err(e) => {
                            failed = Some((i, e));
                            break;
                        }
                    }
                }
                match failed {
                    None => {
                        self.state = scratch;
                        OpResult::Multi(results)
                    }
                    Some((i, code)) => {
                        let mut out = vec![MultiResult::Error(ErrorCode::Ok); i];
                        out.push(MultiResult::Error(code));
                        out.resize(
                            ops.len(),
                            MultiResult::Error(ErrorCode::RuntimeInconsistency),
                        );
                        OpResult::Multi(out)
                    }
                }
            }
            other => panic!("the model does not cover {other:?}"),
        };
        if let Some(s) = self.state.sessions.get_mut(&cmd.session) {
            s.last = Some(Last {
                xid: cmd.xid,
                op: cmd.op.clone(),
                zxid,
                result: result.clone(),
            });
        }
        fresh(zxid, result)
    }

    /// A read of `path`: its data and Stat, or `None` if there is no such node.
    pub fn read(&self, path: &str) -> Option<(Option<Vec<u8>>, Stat)> {
        self.state
            .nodes
            .get(path)
            .map(|n| (n.data.clone(), n.stat()))
    }

    /// The model's state against a member's view: every node (path, data, Stat) and every
    /// session (ephemerals, idempotency record).
    pub fn compare(&self, view: &View) -> Result<(), String> {
        let tree = view.tree();
        if tree.node_count() != self.state.nodes.len() {
            let real: BTreeSet<String> = tree.iter().map(|(p, _)| p.to_string()).collect();
            let model: BTreeSet<String> = self.state.nodes.keys().cloned().collect();
            return Err(format!(
                "the tree has {} nodes, the model {}: only in the tree {:?}, only in the \
                 model {:?}",
                tree.node_count(),
                self.state.nodes.len(),
                real.difference(&model).collect::<Vec<_>>(),
                model.difference(&real).collect::<Vec<_>>()
            ));
        }
        for (path, m) in &self.state.nodes {
            let Some(node) = tree.get(path) else {
                return Err(format!("{path} is in the model but not in the tree"));
            };
            if node.data() != m.data.as_deref() || node.stat() != m.stat() {
                return Err(format!(
                    "{path}: tree has data {:?} stat {:?}, model data {:?} stat {:?}",
                    node.data(),
                    node.stat(),
                    m.data,
                    m.stat()
                ));
            }
        }
        let table = view.session_table();
        if table.len() != self.state.sessions.len() {
            return Err(format!(
                "{} sessions in the table, {} in the model",
                table.len(),
                self.state.sessions.len()
            ));
        }
        for (id, m) in &self.state.sessions {
            let Some(s) = table.get(*id) else {
                return Err(format!("session {id:#x} is in the model only"));
            };
            let eph: BTreeSet<String> = s.ephemerals().map(|p| p.to_string()).collect();
            if eph != m.ephemerals {
                return Err(format!(
                    "session {id:#x}: ephemerals {eph:?}, model {:?}",
                    m.ephemerals
                ));
            }
            let real = s.last_write().map(|l| (l.xid, l.zxid, l.result.clone()));
            let model = m.last.as_ref().map(|l| (l.xid, l.zxid, l.result.clone()));
            if real != model {
                return Err(format!(
                    "session {id:#x}: last write {real:?}, model {model:?}"
                ));
            }
        }
        if view.last_zxid() != self.last_zxid {
            return Err(format!(
                "last zxid {:#x}, model {:#x}",
                view.last_zxid(),
                self.last_zxid
            ));
        }
        Ok(())
    }
}

fn write(
    st: &mut State,
    op: &WriteOp,
    zxid: Zxid,
    time_ms: i64,
    session: SessionId,
) -> Result<Done, ErrorCode> {
    match op {
        WriteOp::Create { opcode, req } => {
            let mode = CreateMode::from_flags(req.flags).expect("clients send valid flags");
            let parent_path = parent_of(&req.path).to_string();
            let parent = st.nodes.get(&parent_path).ok_or(ErrorCode::NoNode)?;
            let full = if mode.is_sequential() {
                format!("{}{:010}", req.path, parent.creations)
            } else {
                req.path.clone()
            };
            if st.nodes.contains_key(&full) {
                return Err(ErrorCode::NodeExists);
            }
            if parent.owner != 0 {
                return Err(ErrorCode::NoChildrenForEphemerals);
            }
            let owner = if mode.is_ephemeral() { session } else { 0 };
            let parent = st.nodes.get_mut(&parent_path).expect("checked");
            parent.children.insert(name_of(&full).to_string());
            parent.creations += 1;
            parent.pzxid = zxid;
            let node = MNode {
                data: req.data.clone(),
                czxid: zxid,
                mzxid: zxid,
                pzxid: zxid,
                ctime: time_ms,
                mtime: time_ms,
                version: 0,
                aversion: 0,
                creations: 0,
                owner,
                children: BTreeSet::new(),
            };
            let stat = node.stat();
            st.nodes.insert(full.clone(), node);
            if owner != 0 {
                if let Some(s) = st.sessions.get_mut(&owner) {
                    s.ephemerals.insert(full.clone());
                }
            }
            Ok(Done::Created(*opcode, full, stat))
        }
        WriteOp::Delete(req) => {
            let parent_path = parent_of(&req.path).to_string();
            if !st.nodes.contains_key(&parent_path) {
                return Err(ErrorCode::NoNode);
            }
            let node = st.nodes.get(&req.path).ok_or(ErrorCode::NoNode)?;
            if !version_ok(req.version, node.version) {
                return Err(ErrorCode::BadVersion);
            }
            if !node.children.is_empty() {
                return Err(ErrorCode::NotEmpty);
            }
            remove(st, &req.path, zxid);
            Ok(Done::Deleted)
        }
        WriteOp::SetData(req) => {
            let node = st.nodes.get_mut(&req.path).ok_or(ErrorCode::NoNode)?;
            if !version_ok(req.version, node.version) {
                return Err(ErrorCode::BadVersion);
            }
            node.data = req.data.clone();
            node.version += 1;
            node.mzxid = zxid;
            node.mtime = time_ms;
            Ok(Done::SetData(node.stat()))
        }
        WriteOp::Check(req) => {
            let node = st.nodes.get(&req.path).ok_or(ErrorCode::NoNode)?;
            if !version_ok(req.version, node.version) {
                return Err(ErrorCode::BadVersion);
            }
            Ok(Done::Checked)
        }
    }
}

fn remove(st: &mut State, path: &str, zxid: Zxid) {
    let node = st.nodes.remove(path).expect("removing a node that exists");
    if let Some(parent) = st.nodes.get_mut(parent_of(path)) {
        parent.children.remove(name_of(path));
        parent.pzxid = parent.pzxid.max(zxid);
    }
    if node.owner != 0 {
        if let Some(s) = st.sessions.get_mut(&node.owner) {
            s.ephemerals.remove(path);
        }
    }
}

fn kill_session(st: &mut State, id: SessionId, zxid: Zxid) {
    let Some(session) = st.sessions.remove(&id) else {
        return;
    };
    for p in &session.ephemerals {
        remove(st, p, zxid);
    }
}
