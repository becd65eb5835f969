//! Snapshots: the whole replicated state at one applied log position, as a stream of
//! checksummed rkyv records. Sans-IO: [`encode`] streams a `View` into a byte sink, [`decode`]
//! rebuilds a `Machine` from a file's bytes; `log::snapshots` owns the files.
//!
//! Layout: a 16-byte file header (`MAGIC`, format version), then records, each
//! `[payload len u32][crc32c(payload) u32][kind u8][7 zero bytes][payload][zeros to 16]`:
//! one `Header`, node chunks in pre-order (a parent before its children, siblings sorted, so
//! loading builds every children set in one pass without sorting), session chunks, the
//! sessions' recorded connection identities, and one `End` with the counts. A file without its `End` is incomplete and never loaded.
//!
//! Chunks keep memory bounded while writing (a snapshot of a million znodes never exists as
//! one owned value) and let the loader read each chunk in place (`rkyv::access`, no
//! deserialisation pass): only the node's data and path are copied, into the tree itself.
//!
//! Everything a replay needs is here: the tree with every Stat, ACL and sequence counter
//! (`creations`), the sessions with their passwords and idempotency records, the session-id
//! allocator, the last zxid, and the raft position and membership it corresponds to.

use std::collections::HashMap;
use std::sync::Arc;

use rkyv::rancor::Error as RkyvError;
use rkyv::{Archive, Deserialize, Serialize};

use crate::consensus::{ArchivedJoint, Joint, Membership};
use crate::machine::{Machine, MachineConfig, View};
use crate::proto::types::{Acl, Id, SessionId, Zxid};
use crate::session::{Identified, LastWrite, Session, SessionTable};
use crate::tree::{Node, NodeKind, TreeAssembler, TreeBuilder};
use crate::txn::OpResult;

pub const MAGIC: [u8; 8] = *b"RKSNAP\0\0";
pub const FORMAT: u32 = 1;
pub const FILE_HEADER_LEN: usize = 16;
const RECORD_HEADER_LEN: usize = 16;
/// No record is larger (chunks are cut well below it); a length above it is corruption.
const MAX_PAYLOAD: usize = 256 << 20;
const CHUNK_NODES: usize = 4096;
const CHUNK_BYTES: usize = 4 << 20;

const KIND_HEADER: u8 = 1;
const KIND_NODES: u8 = 2;
const KIND_SESSIONS: u8 = 3;
const KIND_END: u8 = 4;
/// Right after the header, only while a configuration change is joint: its outgoing half.
const KIND_JOINT: u8 = 5;
/// After the sessions: the connection identities they recorded (files without them, written
/// before identities were recorded, read as before).
const KIND_IDENTITIES: u8 = 6;

/// Where in the replicated log a snapshot stands.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// The last log entry the state includes, and its term.
    pub index: u64,
    pub term: u64,
    pub last_zxid: Zxid,
    /// The ensemble's voters and learners as of `index`.
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// The outgoing half of a joint configuration, in a record of its own (files without
    /// one read as before).
    #[rkyv(with = rkyv::with::Skip)]
    pub joint: Option<Joint>,
}

impl Meta {
    /// A snapshot at (`index`, `term`) of a state whose last zxid is `last_zxid`, taken
    /// under `members`.
    pub fn new(index: u64, term: u64, last_zxid: Zxid, members: &Membership) -> Meta {
        Meta {
            index,
            term,
            last_zxid,
            voters: members.voters.clone(),
            learners: members.learners.clone(),
            joint: members.joint.clone(),
        }
    }

    /// The configuration the snapshot was taken under.
    pub fn membership(&self) -> Membership {
        Membership {
            voters: self.voters.clone(),
            learners: self.learners.clone(),
            joint: self.joint.clone(),
        }
    }
}

#[derive(Archive, Serialize, Deserialize)]
struct Header {
    meta: Meta,
    session_id_base: Option<i64>,
    sessions_created: u64,
}

#[derive(Archive, Serialize, Deserialize)]
struct NodeChunk {
    /// ACL lists first used in this chunk; their ids continue the previous chunks' numbering.
    new_acls: Vec<Vec<Acl>>,
    nodes: Vec<SnapNode>,
}

#[derive(Archive, Serialize, Deserialize)]
struct SnapNode {
    path: String,
    data: Option<Vec<u8>>,
    acl: u32,
    czxid: i64,
    mzxid: i64,
    pzxid: i64,
    ctime: i64,
    mtime: i64,
    version: i32,
    aversion: i32,
    creations: i32,
    ephemeral_owner: i64,
    /// 0 normal, 1 container, 2 TTL (`ttl_ms`).
    kind: u8,
    ttl_ms: i64,
}

#[derive(Archive, Serialize, Deserialize)]
struct SessionChunk {
    sessions: Vec<SnapSession>,
}

#[derive(Archive, Serialize, Deserialize)]
struct SnapSession {
    id: SessionId,
    timeout_ms: i32,
    passwd: Vec<u8>,
    last: Option<SnapLastWrite>,
}

#[derive(Archive, Serialize, Deserialize)]
struct IdentityChunk {
    sessions: Vec<SnapIdentified>,
}

/// A session's `session::Identified`.
#[derive(Archive, Serialize, Deserialize)]
struct SnapIdentified {
    session: SessionId,
    origin: u64,
    ids: Vec<Id>,
}

#[derive(Archive, Serialize, Deserialize)]
struct SnapLastWrite {
    xid: i32,
    op_hash: u64,
    zxid: Zxid,
    result: OpResult,
}

#[derive(Archive, Serialize, Deserialize)]
struct End {
    nodes: u64,
    sessions: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a ringkeeper snapshot (bad magic)")]
    BadMagic,
    #[error("snapshot format {0} is not supported (this build reads {FORMAT})")]
    Format(u32),
    #[error("corrupt at offset {offset}: {reason}")]
    Corrupt { offset: u64, reason: String },
    #[error("incomplete: the file ends before its end record")]
    Incomplete,
    #[error("writing: {0}")]
    Sink(#[from] std::io::Error),
}

fn corrupt(offset: usize, reason: impl Into<String>) -> SnapshotError {
    SnapshotError::Corrupt {
        offset: offset as u64,
        reason: reason.into(),
    }
}

/// What `encode` wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub nodes: u64,
    pub sessions: u64,
    pub bytes: u64,
}

/// Streams the state of `view` (which must be the state at `meta.index`) into `sink`.
pub fn encode(
    view: &View,
    meta: &Meta,
    sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<Summary, SnapshotError> {
    let mut out = Out {
        sink,
        summary: Summary::default(),
    };
    let mut file_header = [0u8; FILE_HEADER_LEN];
    file_header[..8].copy_from_slice(&MAGIC);
    file_header[8..12].copy_from_slice(&FORMAT.to_le_bytes());
    out.write(&file_header)?;
    let (session_id_base, sessions_created) = view.session_table().allocator();
    out.record(
        KIND_HEADER,
        &Header {
            meta: meta.clone(),
            session_id_base,
            sessions_created,
        },
    )?;
    if let Some(joint) = &meta.joint {
        out.record(KIND_JOINT, joint)?;
    }

    // Nodes in pre-order, walking each node's (sorted) children set.
    let tree = view.tree();
    let mut acl_ids: HashMap<usize, u32> = HashMap::new();
    let mut chunk = NodeChunk {
        new_acls: Vec::new(),
        nodes: Vec::new(),
    };
    let mut chunk_bytes = 0usize;
    let (root_key, root) = tree
        .get_entry("/")
        .ok_or_else(|| corrupt(0, "the view has no root"))?;
    let mut stack = vec![(root_key.clone(), root.children().iter())];
    let mut next = Some((root_key.clone(), root));
    while let Some((path, node)) = next.take() {
        let acl_key = Arc::as_ptr(node.acl_arc()) as *const u8 as usize;
        let acl = match acl_ids.get(&acl_key) {
            Some(id) => *id,
            None => {
                let id = acl_ids.len() as u32;
                acl_ids.insert(acl_key, id);
                chunk.new_acls.push(node.acl().to_vec());
                id
            }
        };
        let (kind, ttl_ms) = match node.kind() {
            NodeKind::Normal => (0, 0),
            NodeKind::Container => (1, 0),
            NodeKind::Ttl(ttl) => (2, ttl),
        };
        chunk_bytes += path.len() + node.data().map_or(0, <[u8]>::len) + 96;
        chunk.nodes.push(SnapNode {
            path: path.to_string(),
            data: node.data().map(<[u8]>::to_vec),
            acl,
            czxid: node.czxid,
            mzxid: node.mzxid,
            pzxid: node.pzxid,
            ctime: node.ctime,
            mtime: node.mtime,
            version: node.version,
            aversion: node.aversion,
            creations: node.creations,
            ephemeral_owner: node.ephemeral_owner,
            kind,
            ttl_ms,
        });
        out.summary.nodes += 1;
        if chunk.nodes.len() >= CHUNK_NODES || chunk_bytes >= CHUNK_BYTES {
            out.record(KIND_NODES, &chunk)?;
            chunk.new_acls.clear();
            chunk.nodes.clear();
            chunk_bytes = 0;
        }
        // The next node in pre-order: the first unvisited child of the deepest open node.
        while let Some((parent, children)) = stack.last_mut() {
            let Some(name) = children.next() else {
                stack.pop();
                continue;
            };
            let child = crate::proto::path::join(parent, name);
            let (key, node) = tree
                .get_entry(&child)
                .ok_or_else(|| corrupt(0, format!("{child} is listed but missing")))?;
            stack.push((key.clone(), node.children().iter()));
            next = Some((key.clone(), node));
            break;
        }
    }
    if !chunk.nodes.is_empty() {
        out.record(KIND_NODES, &chunk)?;
    }

    let mut sessions = SessionChunk {
        sessions: Vec::new(),
    };
    for (id, s) in view.sessions() {
        sessions.sessions.push(SnapSession {
            id,
            timeout_ms: s.timeout_ms,
            passwd: s.passwd.to_vec(),
            last: s.last_write().map(|l| SnapLastWrite {
                xid: l.xid,
                op_hash: l.op_hash,
                zxid: l.zxid,
                result: l.result.clone(),
            }),
        });
        out.summary.sessions += 1;
        if sessions.sessions.len() >= CHUNK_NODES {
            out.record(KIND_SESSIONS, &sessions)?;
            sessions.sessions.clear();
        }
    }
    if !sessions.sessions.is_empty() {
        out.record(KIND_SESSIONS, &sessions)?;
    }
    let mut identities = IdentityChunk {
        sessions: Vec::new(),
    };
    for (session, s) in view.sessions() {
        let Some(i) = s.identified() else { continue };
        identities.sessions.push(SnapIdentified {
            session,
            origin: i.origin,
            ids: i.ids.to_vec(),
        });
        if identities.sessions.len() >= CHUNK_NODES {
            out.record(KIND_IDENTITIES, &identities)?;
            identities.sessions.clear();
        }
    }
    if !identities.sessions.is_empty() {
        out.record(KIND_IDENTITIES, &identities)?;
    }
    let end = End {
        nodes: out.summary.nodes,
        sessions: out.summary.sessions,
    };
    out.record(KIND_END, &end)?;
    Ok(out.summary)
}

struct Out<'s> {
    sink: &'s mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    summary: Summary,
}

impl Out<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        (self.sink)(bytes)?;
        self.summary.bytes += bytes.len() as u64;
        Ok(())
    }

    fn record<T>(&mut self, kind: u8, value: &T) -> Result<(), SnapshotError>
    where
        T: for<'a> Serialize<
            rkyv::api::high::HighSerializer<
                rkyv::util::AlignedVec,
                rkyv::ser::allocator::ArenaHandle<'a>,
                RkyvError,
            >,
        >,
    {
        let payload = rkyv::to_bytes::<RkyvError>(value)
            .map_err(|e| corrupt(0, format!("cannot serialize: {e}")))?;
        if payload.len() > MAX_PAYLOAD {
            return Err(corrupt(0, "a record over the size limit"));
        }
        let mut header = [0u8; RECORD_HEADER_LEN];
        header[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        header[4..8].copy_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        header[8] = kind;
        self.write(&header)?;
        self.write(&payload)?;
        let pad = padding(payload.len());
        if pad > 0 {
            self.write(&[0u8; 16][..pad])?;
        }
        Ok(())
    }
}

fn padding(len: usize) -> usize {
    (16 - len % 16) % 16
}

/// One record of a snapshot file, checked but not yet interpreted.
struct Raw<'a> {
    offset: usize,
    kind: u8,
    payload: &'a [u8],
}

/// Splits `bytes` into checksummed records. `bytes` must start 16-byte aligned.
fn records(bytes: &[u8]) -> Result<Vec<Raw<'_>>, SnapshotError> {
    if bytes.len() < FILE_HEADER_LEN || bytes[..8] != MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let format = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if format != FORMAT {
        return Err(SnapshotError::Format(format));
    }
    if bytes[12..FILE_HEADER_LEN] != [0; 4] {
        return Err(corrupt(12, "bad file header"));
    }
    let mut out = Vec::new();
    let mut off = FILE_HEADER_LEN;
    while off < bytes.len() {
        if bytes.len() - off < RECORD_HEADER_LEN {
            return Err(SnapshotError::Incomplete);
        }
        let h = &bytes[off..off + RECORD_HEADER_LEN];
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let kind = h[8];
        if len > MAX_PAYLOAD || !(KIND_HEADER..=KIND_IDENTITIES).contains(&kind) || h[9..] != [0; 7]
        {
            return Err(corrupt(off, "bad record header"));
        }
        let start = off + RECORD_HEADER_LEN;
        let end = start + len;
        if end + padding(len) > bytes.len() {
            return Err(SnapshotError::Incomplete);
        }
        let payload = &bytes[start..end];
        if crc32c::crc32c(payload) != crc {
            return Err(corrupt(off, "checksum mismatch"));
        }
        if bytes[end..end + padding(len)].iter().any(|&b| b != 0) {
            return Err(corrupt(end, "bad record padding"));
        }
        out.push(Raw {
            offset: off,
            kind,
            payload,
        });
        off = end + padding(len);
    }
    Ok(out)
}

fn access<'a, T>(raw: &Raw<'a>) -> Result<&'a T, SnapshotError>
where
    T: rkyv::Portable
        + for<'b> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'b, RkyvError>>,
{
    rkyv::access::<T, RkyvError>(raw.payload)
        .map_err(|e| corrupt(raw.offset, format!("record does not decode: {e}")))
}

/// Just the `Meta` of a snapshot file (after checking every record's checksum).
pub fn read_meta(bytes: &[u8]) -> Result<Meta, SnapshotError> {
    aligned(bytes, |bytes| {
        let recs = records(bytes)?;
        check_shape(&recs)?;
        meta_of(&recs)
    })
}

/// The header's `Meta`, with the joint record after it if there is one.
fn meta_of(recs: &[Raw<'_>]) -> Result<Meta, SnapshotError> {
    let header: &ArchivedHeader = access(&recs[0])?;
    let mut meta = rkyv::deserialize::<Meta, RkyvError>(&header.meta)
        .map_err(|e| corrupt(recs[0].offset, e.to_string()))?;
    if let Some(raw) = recs.get(1).filter(|r| r.kind == KIND_JOINT) {
        let joint: &ArchivedJoint = access(raw)?;
        meta.joint = Some(
            rkyv::deserialize::<Joint, RkyvError>(joint)
                .map_err(|e| corrupt(raw.offset, e.to_string()))?,
        );
    }
    Ok(meta)
}

/// Runs `f` on `bytes` 16-byte aligned, as rkyv needs them in place: a buffer from a plain
/// read usually is already (large allocations are), else on one aligned copy.
fn aligned<T>(bytes: &[u8], f: impl FnOnce(&[u8]) -> T) -> T {
    if bytes.as_ptr() as usize % 16 == 0 {
        return f(bytes);
    }
    let mut v = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
    v.extend_from_slice(bytes);
    f(&v)
}

fn check_shape(recs: &[Raw<'_>]) -> Result<(), SnapshotError> {
    match (recs.first(), recs.last()) {
        (Some(first), Some(last)) if first.kind == KIND_HEADER && last.kind == KIND_END => Ok(()),
        (Some(first), _) if first.kind != KIND_HEADER => {
            Err(corrupt(first.offset, "the first record is not the header"))
        }
        _ => Err(SnapshotError::Incomplete),
    }
}

/// Rebuilds the machine a snapshot file holds.
pub fn decode(bytes: &[u8], config: MachineConfig) -> Result<(Meta, Machine), SnapshotError> {
    aligned(bytes, |bytes| decode_aligned(bytes, config))
}

fn decode_aligned(bytes: &[u8], config: MachineConfig) -> Result<(Meta, Machine), SnapshotError> {
    let recs = records(bytes)?;
    check_shape(&recs)?;
    let meta = meta_of(&recs)?;

    // Two cores: this thread decodes records and completes nodes, a second one puts them into
    // the map (about a third of the work).
    let (tx, rx) = crossbeam_channel::bounded::<Vec<(Arc<str>, Node)>>(8);
    let (tree, rest) = std::thread::scope(|scope| {
        let assembler = scope.spawn(move || {
            let mut a = TreeAssembler::new();
            for batch in rx {
                a.add(batch);
            }
            a
        });
        let rest = decode_records(&recs, tx);
        let tree = assembler
            .join()
            .map_err(|_| corrupt(0, "the assembler thread panicked"))?
            .finish()
            .map_err(|r| corrupt(0, r));
        Ok::<_, SnapshotError>((tree, rest))
    })?;
    let (acls, sessions, session_id_base, sessions_created) = rest?;
    let tree = tree?;
    let table = SessionTable::restore(sessions, session_id_base, sessions_created);
    let machine = Machine::restore(config, tree, table, meta.last_zxid, acls);
    Ok((meta, machine))
}

type DecodedRest = (
    Vec<Arc<[Acl]>>,
    imbl::HashMap<SessionId, Session>,
    Option<i64>,
    u64,
);

/// Everything but the map: nodes go to `tx` as they complete.
fn decode_records(
    recs: &[Raw<'_>],
    tx: crossbeam_channel::Sender<Vec<(Arc<str>, Node)>>,
) -> Result<DecodedRest, SnapshotError> {
    let header: &ArchivedHeader = access(&recs[0])?;
    let mut acls: Vec<Arc<[Acl]>> = Vec::new();
    let mut builder = TreeBuilder::new();
    let mut ephemerals: HashMap<SessionId, Vec<Arc<str>>> = HashMap::new();
    let mut sessions = imbl::HashMap::new();
    let (mut nodes, mut session_count) = (0u64, 0u64);
    let mut end = None;
    for raw in &recs[1..] {
        if end.is_some() {
            return Err(corrupt(raw.offset, "a record after the end record"));
        }
        match raw.kind {
            KIND_JOINT if raw.offset == recs[1].offset => {} // read with the header
            KIND_NODES => {
                let chunk: &ArchivedNodeChunk = access(raw)?;
                for acl in chunk.new_acls.iter() {
                    let list = rkyv::deserialize::<Vec<Acl>, RkyvError>(acl)
                        .map_err(|e| corrupt(raw.offset, e.to_string()))?;
                    acls.push(Arc::from(list));
                }
                for n in chunk.nodes.iter() {
                    let acl = acls
                        .get(n.acl.to_native() as usize)
                        .ok_or_else(|| corrupt(raw.offset, "a node names an unknown ACL"))?
                        .clone();
                    let kind = match n.kind {
                        0 => NodeKind::Normal,
                        1 => NodeKind::Container,
                        2 => NodeKind::Ttl(n.ttl_ms.to_native()),
                        _ => return Err(corrupt(raw.offset, "unknown node kind")),
                    };
                    let path: Arc<str> = Arc::from(n.path.as_str());
                    let owner = n.ephemeral_owner.to_native();
                    if owner != 0 {
                        ephemerals.entry(owner).or_default().push(path.clone());
                    }
                    let node = Node {
                        data: n.data.as_ref().map(|d| Arc::from(d.as_slice())),
                        acl,
                        children: Default::default(),
                        czxid: n.czxid.to_native(),
                        mzxid: n.mzxid.to_native(),
                        pzxid: n.pzxid.to_native(),
                        ctime: n.ctime.to_native(),
                        mtime: n.mtime.to_native(),
                        version: n.version.to_native(),
                        aversion: n.aversion.to_native(),
                        creations: n.creations.to_native(),
                        ephemeral_owner: owner,
                        kind,
                    };
                    builder
                        .push(path, node)
                        .map_err(|reason| corrupt(raw.offset, reason))?;
                    nodes += 1;
                }
                if tx.send(builder.take_completed()).is_err() {
                    return Err(corrupt(raw.offset, "the assembler thread stopped"));
                }
            }
            KIND_SESSIONS => {
                let chunk: &ArchivedSessionChunk = access(raw)?;
                for s in chunk.sessions.iter() {
                    let id = s.id.to_native();
                    let mut session = Session::new(s.timeout_ms.to_native(), &s.passwd);
                    if let Some(l) = s.last.as_ref() {
                        let result = rkyv::deserialize::<OpResult, RkyvError>(&l.result)
                            .map_err(|e| corrupt(raw.offset, e.to_string()))?;
                        session.last = Some(Arc::new(LastWrite {
                            xid: l.xid.to_native(),
                            op_hash: l.op_hash.to_native(),
                            zxid: l.zxid.to_native(),
                            result,
                        }));
                    }
                    if sessions.insert(id, session).is_some() {
                        return Err(corrupt(raw.offset, "a session listed twice"));
                    }
                    session_count += 1;
                }
            }
            KIND_IDENTITIES => {
                let chunk: &ArchivedIdentityChunk = access(raw)?;
                for i in chunk.sessions.iter() {
                    let ids = rkyv::deserialize::<Vec<Id>, RkyvError>(&i.ids)
                        .map_err(|e| corrupt(raw.offset, e.to_string()))?;
                    let session = sessions
                        .get_mut(&i.session.to_native())
                        .ok_or_else(|| corrupt(raw.offset, "identities of an unknown session"))?;
                    session.identified = Some(Arc::new(Identified {
                        origin: i.origin.to_native(),
                        ids: Arc::from(ids),
                    }));
                }
            }
            KIND_END => {
                let e: &ArchivedEnd = access(raw)?;
                end = Some((raw.offset, e.nodes.to_native(), e.sessions.to_native()));
            }
            _ => return Err(corrupt(raw.offset, "a second header")),
        }
    }
    let Some((end_offset, end_nodes, end_sessions)) = end else {
        return Err(SnapshotError::Incomplete);
    };
    if (end_nodes, end_sessions) != (nodes, session_count) {
        return Err(corrupt(end_offset, "counts do not match the records"));
    }
    builder.close_all().map_err(|r| corrupt(end_offset, r))?;
    if tx.send(builder.take_completed()).is_err() {
        return Err(corrupt(end_offset, "the assembler thread stopped"));
    }
    drop(tx);
    for (owner, paths) in ephemerals {
        let Some(s) = sessions.get_mut(&owner) else {
            return Err(corrupt(
                end_offset,
                format!("ephemeral node of unknown session {owner:#x}"),
            ));
        };
        s.ephemerals = paths.into_iter().collect();
    }
    Ok((
        acls,
        sessions,
        header.session_id_base.as_ref().map(|b| b.to_native()),
        header.sessions_created.to_native(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::types::{CreateMode, CreateRequest, Id, SetDataRequest};
    use crate::txn::{Batch, Command, Op, WriteOp};

    fn cmd(session: SessionId, xid: i32, op: Op) -> Command {
        Command {
            session,
            xid,
            origin: 0,
            auth: vec![Id::new("ip", "127.0.0.1")],
            seen_zxid: i64::MAX,
            op,
        }
    }

    fn create(path: &str, data: Option<&[u8]>, mode: CreateMode, opcode: i32) -> Op {
        Op::Write(WriteOp::Create {
            opcode,
            req: CreateRequest {
                path: path.into(),
                data: data.map(<[u8]>::to_vec),
                acl: Acl::open_unsafe(),
                flags: mode as i32,
                ttl: -1,
            },
        })
    }

    /// A machine with a bit of everything a snapshot must keep.
    fn sample() -> Machine {
        let mut m = Machine::new(MachineConfig::default());
        let mut batch = Batch {
            time_ms: 1_700_000_000_000,
            commands: vec![cmd(
                0,
                0,
                Op::CreateSession {
                    timeout_ms: 10_000,
                    passwd: vec![7; 16],
                },
            )],
        };
        let applied = m.apply_batch(1, &batch);
        let crate::txn::OpResult::SessionCreated { session, .. } = applied[0].result else {
            panic!("no session");
        };
        use crate::proto::types::opcode;
        batch.commands = vec![
            cmd(
                session,
                1,
                create("/a", Some(b"x"), CreateMode::Persistent, 1),
            ),
            cmd(session, 2, create("/a/b", None, CreateMode::Persistent, 1)),
            cmd(
                session,
                3,
                create("/a-c", Some(b""), CreateMode::Persistent, 1),
            ),
            cmd(
                session,
                4,
                create("/a/s-", Some(b"q"), CreateMode::PersistentSequential, 1),
            ),
            cmd(
                session,
                5,
                create("/a/e", Some(b"eph"), CreateMode::Ephemeral, 1),
            ),
            cmd(
                session,
                6,
                create("/c", None, CreateMode::Container, opcode::CREATE_CONTAINER),
            ),
            cmd(
                session,
                7,
                Op::Write(WriteOp::SetData(SetDataRequest {
                    path: "/a".into(),
                    data: Some(b"y".to_vec()),
                    version: -1,
                })),
            ),
        ];
        let applied = m.apply_batch(1, &batch);
        for a in &applied {
            assert!(
                !matches!(a.result, crate::txn::OpResult::Error(_)),
                "{:?}",
                a.result
            );
        }
        m
    }

    fn meta(m: &Machine) -> Meta {
        Meta {
            index: 42,
            term: 3,
            last_zxid: m.last_zxid(),
            voters: vec![1],
            learners: vec![],
            joint: None,
        }
    }

    fn bytes_of(m: &Machine) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&m.view(), &meta(m), &mut |b| {
            out.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn round_trip_keeps_the_whole_state() {
        let m = sample();
        let bytes = bytes_of(&m);
        let (got_meta, restored) = decode(&bytes, MachineConfig::default()).unwrap();
        assert_eq!(got_meta, meta(&m));
        let (a, b) = (m.view(), restored.view());
        assert_eq!(a.tree(), b.tree());
        assert_eq!(a.session_table(), b.session_table());
        assert_eq!(a.last_zxid(), b.last_zxid());
        assert_eq!(read_meta(&bytes).unwrap(), meta(&m));
    }

    #[test]
    fn a_joint_configuration_is_kept_in_a_record_of_its_own() {
        let m = sample();
        let mut joint_meta = meta(&m);
        joint_meta.voters = vec![2, 3, 4];
        joint_meta.joint = Some(Joint {
            voters_outgoing: vec![1, 2, 3],
            learners_next: vec![1],
            auto_leave: true,
        });
        let mut bytes = Vec::new();
        encode(&m.view(), &joint_meta, &mut |b| {
            bytes.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(read_meta(&bytes).unwrap(), joint_meta);
        let (got, restored) = decode(&bytes, MachineConfig::default()).unwrap();
        assert_eq!(got, joint_meta);
        assert_eq!(restored.digest(), m.digest());
        // A plain configuration writes no such record: files read as before.
        let plain = bytes_of(&m);
        assert_eq!(read_meta(&plain).unwrap().joint, None);
    }

    #[test]
    fn restored_machine_goes_on_identically() {
        let mut m = sample();
        let (_, mut r) = decode(&bytes_of(&m), MachineConfig::default()).unwrap();
        let session = m.view().sessions().next().unwrap().0;
        // The connection's identities were recorded before the snapshot: its writes refer to
        // them, on the restored member as on the original.
        let refers = Command {
            auth: vec![],
            ..cmd(
                session,
                8,
                create("/a/s-", None, CreateMode::PersistentSequential, 1),
            )
        };
        let batch = Batch {
            time_ms: 1_700_000_001_000,
            commands: vec![
                refers,
                cmd(
                    0,
                    0,
                    Op::CreateSession {
                        timeout_ms: 5000,
                        passwd: vec![1; 16],
                    },
                ),
                // A retry of the last write: answered from the idempotency record.
                cmd(
                    session,
                    8,
                    create("/a/s-", None, CreateMode::PersistentSequential, 1),
                ),
                cmd(session, 9, Op::CloseSession),
            ],
        };
        let x: Vec<_> = m
            .apply_batch(2, &batch)
            .into_iter()
            .map(|a| (a.zxid, a.result))
            .collect();
        let y: Vec<_> = r
            .apply_batch(2, &batch)
            .into_iter()
            .map(|a| (a.zxid, a.result))
            .collect();
        assert_eq!(x, y);
        assert!(
            matches!(x[0].1, crate::txn::OpResult::Created { .. }),
            "{x:?}"
        );
        assert_eq!(m.view().tree(), r.view().tree());
        assert_eq!(m.view().session_table(), r.view().session_table());
    }

    #[test]
    fn every_flipped_byte_and_truncation_is_an_error() {
        let bytes = bytes_of(&sample());
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(
                decode(&b, MachineConfig::default()).is_err(),
                "flipped byte {i} went unnoticed"
            );
        }
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len], MachineConfig::default()).is_err());
        }
    }

    #[test]
    fn builder_rejects_bad_orders() {
        let m = Machine::new(MachineConfig::default());
        let v = m.view();
        let node = |p: &str| {
            let mut n = v.node(p).unwrap().clone();
            n.children = Default::default();
            n
        };
        let mut b = TreeBuilder::new();
        assert!(b.push(Arc::from("/zookeeper"), node("/zookeeper")).is_err());
        let mut b = TreeBuilder::new();
        b.push(Arc::from("/"), node("/")).unwrap();
        b.push(Arc::from("/zookeeper"), node("/zookeeper")).unwrap();
        b.push(Arc::from("/zookeeper/quota"), node("/zookeeper/quota"))
            .unwrap();
        assert!(b
            .push(Arc::from("/zookeeper/config"), node("/zookeeper/config"))
            .is_err());
        let mut b = TreeBuilder::new();
        b.push(Arc::from("/"), node("/")).unwrap();
        assert!(b.push(Arc::from("/x/y"), node("/zookeeper")).is_err());
    }
}
