//! Commands, results, ACLs and ids as the tools print them: text tokens without spaces (a
//! path with blanks or control characters is quoted) and the same facts as JSON fields.

use std::borrow::Cow;

use serde_json::{json, Map, Value};

use crate::proto::types::{opcode, perms, Acl, CreateMode, ErrorCode};
use crate::txn::{MultiResult, Op, OpResult, WriteOp};

/// `0x…`, two's complement for negative values (as ZooKeeper prints session ids).
pub fn hex(v: i64) -> String {
    format!("{v:#x}")
}

/// A path as one whitespace-free token.
pub fn path_text(p: &str) -> Cow<'_, str> {
    if !p.is_empty()
        && !p
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',' || c == '"')
    {
        Cow::Borrowed(p)
    } else {
        Cow::Owned(format!("{p:?}"))
    }
}

/// Permission letters in zkCli's order (`cdrwa`).
pub fn perms_text(p: i32) -> String {
    [
        (perms::CREATE, 'c'),
        (perms::DELETE, 'd'),
        (perms::READ, 'r'),
        (perms::WRITE, 'w'),
        (perms::ADMIN, 'a'),
    ]
    .iter()
    .filter(|(bit, _)| p & bit != 0)
    .map(|&(_, c)| c)
    .collect()
}

/// `[world:anyone:cdrwa,digest:u:hash:r]`
pub fn acl_text(acl: &[Acl]) -> String {
    let parts: Vec<String> = acl
        .iter()
        .map(|a| {
            let id = format!("{}:{}:{}", a.id.scheme, a.id.id, perms_text(a.perms));
            path_text(&id).into_owned()
        })
        .collect();
    format!("[{}]", parts.join(","))
}

pub fn acl_json(acl: &[Acl]) -> Value {
    Value::Array(
        acl.iter()
            .map(|a| json!({"scheme": a.id.scheme, "id": a.id.id, "perms": perms_text(a.perms)}))
            .collect(),
    )
}

fn create_name(opcode: i32) -> &'static str {
    match opcode {
        opcode::CREATE2 => "create2",
        opcode::CREATE_CONTAINER => "createContainer",
        opcode::CREATE_TTL => "createTTL",
        _ => "create",
    }
}

fn write_path(w: &WriteOp) -> &str {
    match w {
        WriteOp::Create { req, .. } => &req.path,
        WriteOp::Delete(r) => &r.path,
        WriteOp::SetData(r) => &r.path,
        WriteOp::Check(r) => &r.path,
    }
}

fn write_name(w: &WriteOp) -> &'static str {
    match w {
        WriteOp::Create { opcode, .. } => create_name(*opcode),
        WriteOp::Delete(_) => "delete",
        WriteOp::SetData(_) => "setData",
        WriteOp::Check(_) => "check",
    }
}

fn len_text(data: &Option<Vec<u8>>) -> String {
    data.as_ref()
        .map_or_else(|| "null".to_string(), |d| d.len().to_string())
}

fn write_text(w: &WriteOp) -> String {
    let path = path_text(write_path(w));
    match w {
        WriteOp::Create { opcode, req } => {
            let mut s = format!(
                "{} {path} len={}",
                create_name(*opcode),
                len_text(&req.data)
            );
            if req.flags != 0 {
                match CreateMode::from_flags(req.flags) {
                    Some(m) => s.push_str(&format!(" mode={m:?}")),
                    None => s.push_str(&format!(" flags={}", req.flags)),
                }
            }
            if *opcode == opcode::CREATE_TTL || req.ttl != -1 {
                s.push_str(&format!(" ttl={}", req.ttl));
            }
            s
        }
        WriteOp::SetData(r) => format!("setData {path} len={}", len_text(&r.data)),
        _ => format!("{} {path}", write_name(w)),
    }
}

fn write_json(w: &WriteOp) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("op".into(), write_name(w).into());
    m.insert("path".into(), write_path(w).into());
    let data_len = |d: &Option<Vec<u8>>| d.as_ref().map_or(Value::Null, |d| d.len().into());
    match w {
        WriteOp::Create { req, .. } => {
            m.insert("data_len".into(), data_len(&req.data));
            m.insert("flags".into(), req.flags.into());
            if let Some(mode) = CreateMode::from_flags(req.flags) {
                m.insert("mode".into(), format!("{mode:?}").into());
            }
            m.insert("ttl".into(), req.ttl.into());
            m.insert("acl".into(), acl_json(&req.acl));
        }
        WriteOp::SetData(r) => {
            m.insert("data_len".into(), data_len(&r.data));
            m.insert("version".into(), r.version.into());
        }
        WriteOp::Delete(r) => {
            m.insert("version".into(), r.version.into());
        }
        WriteOp::Check(r) => {
            m.insert("version".into(), r.version.into());
        }
    }
    m
}

/// The op and its arguments: `create /a/b len=100`, `multi[3] /a,/b,/c`,
/// `createSession timeout=30000`, `expireSessions n=2`.
pub fn op_text(op: &Op) -> String {
    match op {
        Op::CreateSession { timeout_ms, .. } => format!("createSession timeout={timeout_ms}"),
        Op::CloseSession => "closeSession".into(),
        Op::ExpireSessions { sessions } => format!("expireSessions n={}", sessions.len()),
        Op::Write(w) => write_text(w),
        Op::SetAcl(r) => format!("setAcl {} acl={}", path_text(&r.path), acl_text(&r.acl)),
        Op::Multi(ops) => {
            let paths: Vec<Cow<'_, str>> = ops.iter().map(|w| path_text(write_path(w))).collect();
            format!("multi[{}] {}", ops.len(), paths.join(","))
        }
        Op::DeleteContainer { path } => format!("deleteContainer {}", path_text(path)),
        Op::Fail(code) => format!("invalid code={code:?}"),
        Op::Reconfig(_) => "reconfig".into(),
        Op::SetConfig { members } => format!("setConfig members={}", members.lines().count()),
    }
}

/// The same as JSON fields (`op`, `path`/`paths`, and the op's arguments).
pub fn op_json(op: &Op) -> Map<String, Value> {
    let mut m = Map::new();
    match op {
        Op::CreateSession { timeout_ms, .. } => {
            m.insert("op".into(), "createSession".into());
            m.insert("timeout".into(), (*timeout_ms).into());
        }
        Op::CloseSession => {
            m.insert("op".into(), "closeSession".into());
        }
        Op::ExpireSessions { sessions } => {
            m.insert("op".into(), "expireSessions".into());
            let ids: Vec<Value> = sessions.iter().map(|s| hex(*s).into()).collect();
            m.insert("sessions".into(), ids.into());
        }
        Op::Write(w) => m = write_json(w),
        Op::SetAcl(r) => {
            m.insert("op".into(), "setAcl".into());
            m.insert("path".into(), r.path.clone().into());
            m.insert("acl".into(), acl_json(&r.acl));
            m.insert("version".into(), r.version.into());
        }
        Op::Multi(ops) => {
            m.insert("op".into(), "multi".into());
            let paths: Vec<Value> = ops.iter().map(|w| write_path(w).into()).collect();
            m.insert("paths".into(), paths.into());
            let each: Vec<Value> = ops.iter().map(|w| Value::Object(write_json(w))).collect();
            m.insert("ops".into(), each.into());
        }
        Op::DeleteContainer { path } => {
            m.insert("op".into(), "deleteContainer".into());
            m.insert("path".into(), path.clone().into());
        }
        Op::Fail(code) => {
            m.insert("op".into(), "invalid".into());
            m.insert("code".into(), format!("{code:?}").into());
        }
        Op::Reconfig(_) => {
            m.insert("op".into(), "reconfig".into());
        }
        Op::SetConfig { members } => {
            m.insert("op".into(), "setConfig".into());
            m.insert("members".into(), members.clone().into());
        }
    }
    m
}

/// The outcome as one token: `ok`, `ok=/a/s-0000000001` (a create whose name the server
/// chose), `ok session=0x…`, `err=BadVersion`, `err=NoNode@1` (a multi's failing op).
pub fn result_text(result: &OpResult, op: &Op) -> String {
    match result {
        OpResult::SessionCreated { session, .. } => format!("ok session={}", hex(*session)),
        OpResult::Created { path, .. } => match op {
            Op::Write(w) if write_path(w) != path => format!("ok={}", path_text(path)),
            _ => "ok".into(),
        },
        OpResult::Multi(results) => {
            let failed = results.iter().enumerate().find_map(|(i, r)| match r {
                MultiResult::Error(code) if *code != ErrorCode::Ok => Some((i, *code)),
                _ => None,
            });
            match failed {
                Some((i, code)) => format!("err={code:?}@{i}"),
                None => "ok".into(),
            }
        }
        OpResult::Error(code) => format!("err={code:?}"),
        OpResult::SessionClosed
        | OpResult::SessionsExpired
        | OpResult::Deleted
        | OpResult::Stat(_)
        | OpResult::Config { .. }
        | OpResult::Checked => "ok".into(),
    }
}

/// Extra JSON facts of a result: the created path(s) and the new session id.
pub fn result_json(result: &OpResult, m: &mut Map<String, Value>) {
    match result {
        OpResult::SessionCreated { session, .. } => {
            m.insert("new_session".into(), hex(*session).into());
        }
        OpResult::Created { path, .. } => {
            m.insert("created".into(), path.clone().into());
        }
        OpResult::Multi(results) => {
            let created: Vec<Value> = results
                .iter()
                .filter_map(|r| match r {
                    MultiResult::Created { path, .. } => Some(path.clone().into()),
                    _ => None,
                })
                .collect();
            if !created.is_empty() {
                m.insert("created".into(), created.into());
            }
        }
        _ => {}
    }
}
