//! Requests answered on the connection's shard without a log write: reads against the shard's
//! View (with ACL checks and watch registration), watch management, whoAmI, ping, sync; and the
//! encoding of write replies. Pure functions of their inputs: no I/O here.

use crate::machine::View;
use crate::proto::records::StrSeq;
use crate::proto::records::{
    encode_reply, ReadOp, ReadResult, ReplyBody, Request, RequestError, RequestHeader, SetWatches,
};
use crate::proto::types::opcode;
use crate::proto::types::{
    perms, xid, AddWatchMode, ErrorCode, EventType, Id, SessionId, WatcherType,
};
use crate::tree::acl;
use crate::txn::{Applied, OpResult};
use crate::watch::{WatchKind, WatchRegistry};
use std::sync::Arc;

/// The answer to a request that would register one watch more than `max_watches_per_session`
/// or `max_watches` allow: the whole request fails and registers nothing.
///
/// QuotaExceeded (-125, ZooKeeper 3.7+'s "exceeded the quota that was set on the path") is
/// the code clients handle best here: every current client maps it to a named, non-retryable
/// error (Java `QuotaExceededException`, kazoo `QuotaExceededError`, the C client's
/// `ZQUOTAEXCEEDED`), so Curator's retry loop and kazoo's retry helpers give up at once instead
/// of hammering a limit that a retry cannot lift (Throttled, -127, invites exactly that), and
/// the connection stays usable, so a client is not thrown into a reconnect that re-registers
/// the same watches through setWatches and is refused again (as closing it would).
pub const WATCH_LIMIT_ERROR: ErrorCode = ErrorCode::QuotaExceeded;

pub struct ReadCtx<'a> {
    pub view: &'a View,
    pub watches: &'a mut WatchRegistry,
    /// Counts refused watches (`rk_watches_refused`).
    pub metrics: &'a crate::admin::Metrics,
    pub conn: u64,
    pub session: SessionId,
    pub ids: &'a [Id],
}

/// Reads do not validate path syntax: "" is the root, anything else is looked up as is.
fn read_path(path: &str) -> &str {
    if path.is_empty() {
        "/"
    } else {
        path
    }
}

pub fn answer(ctx: &mut ReadCtx<'_>, header: &RequestHeader, req: Request, out: &mut Vec<u8>) {
    let zxid = ctx.view.last_zxid();
    let x = header.xid;
    let reply =
        |out: &mut Vec<u8>, err: ErrorCode, body: &ReplyBody| encode_reply(out, x, zxid, err, body);
    match req {
        Request::Ping => encode_reply(out, xid::PING, zxid, ErrorCode::Ok, &ReplyBody::Empty),
        Request::Sync { path } => reply(out, ErrorCode::Ok, &ReplyBody::Path(&path)),
        Request::Exists { path, watch } => {
            if path.contains('\0') {
                return reply(out, ErrorCode::BadArguments, &ReplyBody::Empty);
            }
            let path = read_path(&path);
            match ctx.view.stat(path) {
                Some(stat) => {
                    if watch {
                        if let Err(e) = add_watch(ctx, path, WatchKind::Data) {
                            return reply(out, e, &ReplyBody::Empty);
                        }
                    }
                    reply(out, ErrorCode::Ok, &ReplyBody::Stat(stat))
                }
                None => {
                    if watch {
                        if let Err(e) = add_watch(ctx, path, WatchKind::Exist) {
                            return reply(out, e, &ReplyBody::Empty);
                        }
                    }
                    reply(out, ErrorCode::NoNode, &ReplyBody::Empty)
                }
            }
        }
        Request::GetData { path, watch } => {
            let path = read_path(&path);
            match readable(ctx, path) {
                Err(e) => reply(out, e, &ReplyBody::Empty),
                Ok(node) => {
                    if watch {
                        if let Err(e) = add_watch(ctx, path, WatchKind::Data) {
                            return reply(out, e, &ReplyBody::Empty);
                        }
                    }
                    reply(
                        out,
                        ErrorCode::Ok,
                        &ReplyBody::Data {
                            data: node.data(),
                            stat: node.stat(),
                        },
                    )
                }
            }
        }
        Request::GetChildren { path, watch } | Request::GetChildren2 { path, watch } => {
            let two = header.opcode == opcode::GET_CHILDREN2;
            let path = read_path(&path);
            match readable(ctx, path) {
                Err(e) => reply(out, e, &ReplyBody::Empty),
                Ok(node) => {
                    if watch {
                        if let Err(e) = add_watch(ctx, path, WatchKind::Child) {
                            return reply(out, e, &ReplyBody::Empty);
                        }
                    }
                    let children = node.children();
                    if two {
                        reply(
                            out,
                            ErrorCode::Ok,
                            &ReplyBody::Children2 {
                                children,
                                stat: node.stat(),
                            },
                        )
                    } else {
                        reply(out, ErrorCode::Ok, &ReplyBody::Children(children))
                    }
                }
            }
        }
        Request::GetAcl { path } => {
            let path = read_path(&path);
            match ctx.view.node(path) {
                None => reply(out, ErrorCode::NoNode, &ReplyBody::Empty),
                Some(node) => {
                    let list = node.acl();
                    if !acl::check(list, perms::READ | perms::ADMIN, ctx.ids) {
                        return reply(out, ErrorCode::NoAuth, &ReplyBody::Empty);
                    }
                    let shown = if acl::check(list, perms::ADMIN, ctx.ids) {
                        list.to_vec()
                    } else {
                        acl::redact_digests(list)
                    };
                    reply(
                        out,
                        ErrorCode::Ok,
                        &ReplyBody::Acl {
                            acl: &shown,
                            stat: node.stat(),
                        },
                    )
                }
            }
        }
        Request::GetAllChildrenNumber { path } => {
            let path = read_path(&path);
            match readable(ctx, path) {
                Err(e) => reply(out, e, &ReplyBody::Empty),
                Ok(_) => reply(
                    out,
                    ErrorCode::Ok,
                    &ReplyBody::Count(ctx.view.descendant_count(path).unwrap_or(0) as i32),
                ),
            }
        }
        Request::GetEphemerals { prefix } => {
            let prefix = if prefix.is_empty() {
                "/"
            } else {
                prefix.as_str()
            };
            let paths = ctx.view.ephemerals(ctx.session, prefix);
            reply(out, ErrorCode::Ok, &ReplyBody::Paths(&paths))
        }
        Request::MultiRead(ops) => {
            let mut results = Vec::with_capacity(ops.len());
            for op in &ops {
                // Watches are never set inside multiRead.
                let (path, is_data) = match op {
                    ReadOp::GetData { path } => (read_path(path), true),
                    ReadOp::GetChildren { path } => (read_path(path), false),
                };
                results.push(match readable(ctx, path) {
                    Err(e) => ReadResult::Error(e),
                    Ok(node) if is_data => ReadResult::Data {
                        data: node.data(),
                        stat: node.stat(),
                    },
                    Ok(node) => ReadResult::Children(node.children()),
                });
            }
            reply(out, ErrorCode::Ok, &ReplyBody::MultiRead(&results))
        }
        Request::CheckWatches { path, kind } | Request::RemoveWatches { path, kind } => {
            let remove = header.opcode == opcode::REMOVE_WATCHES;
            let Some(kind) = WatcherType::from_i32(kind) else {
                return reply(out, ErrorCode::MarshallingError, &ReplyBody::Empty);
            };
            let found = if remove {
                ctx.watches.remove(ctx.conn, &path, kind)
            } else {
                ctx.watches.check(ctx.conn, &path, kind)
            };
            let err = if found {
                ErrorCode::Ok
            } else {
                ErrorCode::NoWatcher
            };
            reply(out, err, &ReplyBody::Empty)
        }
        Request::AddWatch { path, mode } => {
            let kind = match AddWatchMode::from_i32(mode) {
                Some(AddWatchMode::Persistent) => WatchKind::Persistent,
                Some(AddWatchMode::PersistentRecursive) => WatchKind::PersistentRecursive,
                None => return reply(out, ErrorCode::MarshallingError, &ReplyBody::Empty),
            };
            match add_watch(ctx, &path, kind) {
                Ok(()) => reply(out, ErrorCode::Ok, &ReplyBody::ErrorResponse(0)),
                Err(e) => reply(out, e, &ReplyBody::Empty),
            }
        }
        Request::SetWatches(sw) => {
            // Catch-up events already encoded stay (they are real changes); a path refused by
            // a limit makes the reply an error, so the client knows a watch it asked for is
            // not registered (the others are).
            let err = match set_watches(ctx, &sw, out) {
                Ok(()) => ErrorCode::Ok,
                Err(e) => e,
            };
            reply(out, err, &ReplyBody::Empty)
        }
        Request::WhoAmI => {
            let entries: Vec<(String, String)> = ctx
                .ids
                .iter()
                .filter(|id| id.scheme != "super")
                .map(|id| {
                    let user = match id.scheme.as_str() {
                        "digest" => id.id.split(':').next().unwrap_or("").to_string(),
                        _ => id.id.clone(),
                    };
                    (id.scheme.clone(), user)
                })
                .collect();
            reply(out, ErrorCode::Ok, &ReplyBody::WhoAmI(&entries))
        }
        // SASL is not configured: say so rather than pretend.
        Request::Sasl => reply(out, ErrorCode::Unimplemented, &ReplyBody::Empty),
        // Writes never come here (conn::write_op routes them to the sequencer).
        _ => reply(out, ErrorCode::SystemError, &ReplyBody::Empty),
    }
}

/// The node at `path` if the caller may READ it.
fn readable<'v>(ctx: &ReadCtx<'v>, path: &str) -> Result<&'v crate::tree::Node, ErrorCode> {
    let node = ctx.view.node(path).ok_or(ErrorCode::NoNode)?;
    if !acl::check(node.acl(), perms::READ, ctx.ids) {
        return Err(ErrorCode::NoAuth);
    }
    Ok(node)
}

/// setWatches/setWatches2 after a reconnect: catch up on what changed since `relative_zxid`
/// with events sent now, register the rest (protocol section 12.5). Every path is tried;
/// the error is the limit's if any registration was refused.
///
/// Catch-up events are not ACL-filtered, as in ZooKeeper (`DataTree.setWatches` calls
/// `process(event)`, whose ACL is null: ZOOKEEPER-4799 left them alone; they name only paths
/// the client itself sent). Watches registered here are filtered at delivery like any other.
fn set_watches(ctx: &mut ReadCtx<'_>, sw: &SetWatches, out: &mut Vec<u8>) -> Result<(), ErrorCode> {
    use crate::proto::records::encode_watch_event;
    let rel = sw.relative_zxid;
    let mut result = Ok(());
    let mut register = |ctx: &mut ReadCtx<'_>, path: &str, kind: WatchKind| {
        if let Err(e) = add_watch(ctx, path, kind) {
            result = Err(e);
        }
    };
    for path in &sw.data {
        match ctx.view.stat(path) {
            None => encode_watch_event(out, EventType::NodeDeleted, path),
            Some(stat) if stat.mzxid > rel => {
                encode_watch_event(out, EventType::NodeDataChanged, path)
            }
            Some(_) => register(ctx, path, WatchKind::Data),
        }
    }
    for path in &sw.exist {
        match ctx.view.stat(path) {
            Some(_) => encode_watch_event(out, EventType::NodeCreated, path),
            None => register(ctx, path, WatchKind::Exist),
        }
    }
    for path in &sw.child {
        match ctx.view.stat(path) {
            None => encode_watch_event(out, EventType::NodeDeleted, path),
            Some(stat) if stat.pzxid > rel => {
                encode_watch_event(out, EventType::NodeChildrenChanged, path)
            }
            Some(_) => register(ctx, path, WatchKind::Child),
        }
    }
    for path in &sw.persistent {
        register(ctx, path, WatchKind::Persistent);
    }
    for path in &sw.persistent_recursive {
        register(ctx, path, WatchKind::PersistentRecursive);
    }
    result
}

/// The reply to a request that failed to decode (and needs no zxid).
pub fn answer_error(out: &mut Vec<u8>, header: &RequestHeader, err: &RequestError, zxid: i64) {
    match err {
        RequestError::MultiReadWithWrite => {
            crate::proto::records::encode_multi_read_marshalling_error(out, header.xid, zxid)
        }
        _ => encode_reply(
            out,
            header.xid,
            zxid,
            ErrorCode::MarshallingError,
            &ReplyBody::Empty,
        ),
    }
}

/// The reply to a write, from what applying it produced.
pub fn encode_write_reply(out: &mut Vec<u8>, xid: i32, op: i32, applied: &Applied) {
    let zxid = applied.zxid;
    match &applied.result {
        OpResult::Created { path, stat } => {
            if op == opcode::CREATE {
                encode_reply(out, xid, zxid, ErrorCode::Ok, &ReplyBody::Path(path))
            } else {
                encode_reply(
                    out,
                    xid,
                    zxid,
                    ErrorCode::Ok,
                    &ReplyBody::PathStat { path, stat: *stat },
                )
            }
        }
        OpResult::Stat(stat) => {
            encode_reply(out, xid, zxid, ErrorCode::Ok, &ReplyBody::Stat(*stat))
        }
        OpResult::Multi(results) => {
            encode_reply(out, xid, zxid, ErrorCode::Ok, &ReplyBody::Multi(results))
        }
        OpResult::Config { data, stat } => {
            let body = ReplyBody::Data {
                data: Some(data),
                stat: *stat,
            };
            encode_reply(out, xid, zxid, ErrorCode::Ok, &body)
        }
        OpResult::Error(code) => encode_reply(out, xid, zxid, *code, &ReplyBody::Empty),
        OpResult::Deleted
        | OpResult::Checked
        | OpResult::SessionClosed
        | OpResult::SessionsExpired
        | OpResult::SessionCreated { .. } => {
            encode_reply(out, xid, zxid, ErrorCode::Ok, &ReplyBody::Empty)
        }
    }
}

/// Registers a watch, or says why not ([`WATCH_LIMIT_ERROR`]): every refusal is counted, the
/// first of each session (on this member, until the session ends) is logged.
fn add_watch(ctx: &mut ReadCtx<'_>, path: &str, kind: WatchKind) -> Result<(), ErrorCode> {
    let shared = ctx.view.tree().get_entry(path).map(|(key, _)| key);
    let Err(refused) = ctx.watches.register_shared(ctx.conn, path, shared, kind) else {
        return Ok(());
    };
    ctx.metrics.watches_refused.inc();
    if ctx.watches.budget().first_refusal(ctx.session) {
        tracing::warn!(
            session = format!("{:#x}", ctx.session),
            conn = ctx.conn,
            path,
            kind = ?kind,
            setting = refused.setting(),
            "watch refused: {refused}; this and later refusals for this session answer QuotaExceeded (logged once)"
        );
    }
    Err(WATCH_LIMIT_ERROR)
}

impl StrSeq for imbl::OrdSet<Arc<str>> {
    fn each(&self, f: &mut dyn FnMut(&str)) {
        for name in self.iter() {
            f(name);
        }
    }
}
