//! `ringkeeper snapshot dump`: a snapshot's position, then every znode in tree order (a parent
//! before its children, siblings sorted), then every session by id:
//!
//! ```text
//! snapshot index=200 term=1 last_zxid=0x1000000c8 nodes=1004 sessions=1 voters=[1] learners=[]
//! / 0x0 0x0 0x100000002 0 0 0 1 0 0x0 0 2 acl=[world:anyone:cdrwa]
//! /a 0x100000002 0x100000002 0x100000002 1700000000000 1700000000000 0 0 0 0x0 3 0 acl=[world:anyone:cdrwa]
//! session 0x1000001a2b3c0000 timeout=30000 ephemerals=0 last_xid=5
//! ```
//!
//! Node columns: path czxid mzxid pzxid ctime mtime version cversion aversion ephemeralOwner
//! dataLength numChildren acl, then `container` or `ttl=MS` for those kinds.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::describe::{acl_json, acl_text, hex, path_text};
use super::layout;
use super::{emit, InspectError};
use crate::log::snapshots;
use crate::machine::MachineConfig;
use crate::tree::{Node, NodeKind};

pub fn dump(file: &Path, json: bool, out: &mut dyn Write) -> Result<(), InspectError> {
    let path = pick(file)?;
    // ttl_enabled only matters to a machine that goes on applying; this one is only read.
    let (meta, machine) = snapshots::load(&path, MachineConfig::default())?;
    let view = machine.view();
    let voters = format!("{:?}", meta.voters).replace(' ', "");
    let learners = format!("{:?}", meta.learners).replace(' ', "");
    // Only while a change of several voters was under way: the outgoing voters.
    let outgoing = meta.joint.as_ref().map(|j| j.voters_outgoing.clone());
    let joint = match &outgoing {
        Some(ids) => format!(" outgoing_voters={}", format!("{ids:?}").replace(' ', "")),
        None => String::new(),
    };
    emit(
        out,
        json,
        || {
            format!(
                "snapshot index={} term={} last_zxid={} nodes={} sessions={} voters={voters} learners={learners}{joint}",
                meta.index,
                meta.term,
                hex(meta.last_zxid),
                view.node_count(),
                view.session_count()
            )
        },
        || {
            json!({"type": "snapshot", "file": path.display().to_string(), "index": meta.index,
                   "term": meta.term, "last_zxid": hex(meta.last_zxid),
                   "nodes": view.node_count(), "sessions": view.session_count(),
                   "voters": meta.voters, "learners": meta.learners,
                   "outgoing_voters": outgoing})
        },
    )?;

    // Pre-order walk over the children sets (sorted), as the snapshot stores them.
    let tree = view.tree();
    let mut stack: Vec<String> = vec!["/".to_string()];
    while let Some(p) = stack.pop() {
        let Some(node) = tree.get(&p) else { continue };
        node_line(out, json, &p, node)?;
        for name in node.children().iter().rev() {
            stack.push(crate::proto::path::join(&p, name));
        }
    }

    let mut sessions: Vec<_> = view.sessions().collect();
    sessions.sort_unstable_by_key(|(id, _)| *id);
    for (id, s) in sessions {
        let last = s.last_write();
        emit(
            out,
            json,
            || {
                format!(
                    "session {} timeout={} ephemerals={} last_xid={}",
                    hex(id),
                    s.timeout_ms,
                    s.ephemeral_count(),
                    last.map_or("-".to_string(), |l| l.xid.to_string())
                )
            },
            || {
                json!({"type": "session", "id": hex(id), "timeout": s.timeout_ms,
                       "ephemerals": s.ephemeral_count(),
                       "last_xid": last.map(|l| l.xid),
                       "last_zxid": last.map(|l| hex(l.zxid))})
            },
        )?;
    }
    Ok(())
}

/// `file` itself, or the newest snapshot of a data dir or snap dir.
fn pick(file: &Path) -> Result<PathBuf, InspectError> {
    let meta = std::fs::metadata(file).map_err(InspectError::io(file))?;
    if !meta.is_dir() {
        return Ok(file.to_path_buf());
    }
    let snap_dir = match layout::resolve(file) {
        Ok(d) => d.snap,
        Err(_) => file.to_path_buf(),
    };
    layout::snapshots(&snap_dir)?
        .pop()
        .map(|s| s.path)
        .ok_or(InspectError::NoSnapshot(snap_dir))
}

fn node_line(out: &mut dyn Write, json: bool, path: &str, node: &Node) -> Result<(), InspectError> {
    let st = node.stat();
    let kind = node.kind();
    emit(
        out,
        json,
        || {
            let mut s = format!(
                "{} {} {} {} {} {} {} {} {} {} {} {} acl={}",
                path_text(path),
                hex(st.czxid),
                hex(st.mzxid),
                hex(st.pzxid),
                st.ctime,
                st.mtime,
                st.version,
                st.cversion,
                st.aversion,
                hex(st.ephemeral_owner),
                st.data_length,
                st.num_children,
                acl_text(node.acl())
            );
            match kind {
                NodeKind::Normal => {}
                NodeKind::Container => s.push_str(" container"),
                NodeKind::Ttl(ms) => s.push_str(&format!(" ttl={ms}")),
            }
            s
        },
        || {
            let (kind, ttl) = match kind {
                NodeKind::Normal => ("normal", None),
                NodeKind::Container => ("container", None),
                NodeKind::Ttl(ms) => ("ttl", Some(ms)),
            };
            let mut v = json!({"type": "node", "path": path, "czxid": hex(st.czxid),
                   "mzxid": hex(st.mzxid), "pzxid": hex(st.pzxid), "ctime": st.ctime,
                   "mtime": st.mtime, "version": st.version, "cversion": st.cversion,
                   "aversion": st.aversion, "ephemeral_owner": hex(st.ephemeral_owner),
                   "data_length": st.data_length, "num_children": st.num_children,
                   "acl": acl_json(node.acl()), "kind": kind});
            if let (Some(ttl), Value::Object(m)) = (ttl, &mut v) {
                m.insert("ttl".into(), ttl.into());
            }
            v
        },
    )
}
