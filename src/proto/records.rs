//! ZooKeeper's request and reply records: the handshake, every client request (decode and
//! encode), and every reply shape (encode only, straight from borrowed data).
//!
//! Decoding follows ZooKeeper 3.8 where it matters for compatibility:
//! - a null ustring reads as "" (kazoo sends "" as null), except a null path in create or
//!   delete, which ZooKeeper fails on (NullPointerException, reported as MarshallingError);
//! - trailing bytes after a record are ignored, as Java's archive ignores them;
//! - inside multi, the op type comes from the create *flags*, not the op header (ZooKeeper
//!   rebuilds each op with `Op.create(..., flags)`): see `decode_multi`.

use crate::proto::frame::{begin_frame, end_frame};
use crate::proto::jute::{DecodeError, Reader, Writer};
use crate::proto::types::{
    opcode, xid, Acl, CheckVersionRequest, CreateRequest, DeleteRequest, ErrorCode, EventType,
    SetAclRequest, SetDataRequest, Stat, Zxid, STATE_SYNC_CONNECTED,
};
use crate::proto::types::{MultiResult, WriteOp};

/// The password length ZooKeeper hands out.
pub const PASSWD_LEN: usize = 16;

// ---------------------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------------------

/// The first frame of a connection (no RequestHeader).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectRequest {
    pub protocol_version: i32,
    pub last_zxid_seen: Zxid,
    pub timeout_ms: i32,
    pub session_id: i64,
    /// Null reads as empty (it can then only fail a resume's password check).
    pub passwd: Vec<u8>,
    /// `None`: an old client that did not send the trailing byte; its ConnectResponse must
    /// not carry one either.
    pub read_only: Option<bool>,
}

impl ConnectRequest {
    /// Decodes a ConnectRequest payload (the frame without its length prefix).
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let protocol_version = r.read_i32()?;
        let last_zxid_seen = r.read_i64()?;
        let timeout_ms = r.read_i32()?;
        let session_id = r.read_i64()?;
        let passwd = r.read_buffer()?.map(<[u8]>::to_vec).unwrap_or_default();
        // ZooKeeper reads the byte if there is one and ignores anything after it.
        let read_only = if r.is_empty() {
            None
        } else {
            Some(r.read_bool()?)
        };
        Ok(ConnectRequest {
            protocol_version,
            last_zxid_seen,
            timeout_ms,
            session_id,
            passwd,
            read_only,
        })
    }

    /// Writes the whole frame, length prefix included.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = begin_frame(out);
        let mut w = Writer::new(out);
        w.write_i32(self.protocol_version);
        w.write_i64(self.last_zxid_seen);
        w.write_i32(self.timeout_ms);
        w.write_i64(self.session_id);
        w.write_buffer(Some(&self.passwd));
        if let Some(ro) = self.read_only {
            w.write_bool(ro);
        }
        end_frame(out, start);
    }
}

/// The server's answer to a ConnectRequest (no ReplyHeader; protocolVersion is always 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectResponse {
    /// Negotiated timeout; 0 tells the client its session is invalid or expired.
    pub timeout_ms: i32,
    pub session_id: i64,
    pub passwd: Vec<u8>,
    /// Present iff the request carried the readOnly byte; the value says whether this
    /// server is read-only.
    pub read_only: Option<bool>,
}

impl ConnectResponse {
    /// The all-zero reply for a wrong password or an expired/unknown session. `read_only`:
    /// `None` for an old client, else whether this server is read-only.
    pub fn invalid(read_only: Option<bool>) -> Self {
        ConnectResponse {
            timeout_ms: 0,
            session_id: 0,
            passwd: vec![0; PASSWD_LEN],
            read_only,
        }
    }

    /// Writes the whole frame, length prefix included.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = begin_frame(out);
        let mut w = Writer::new(out);
        w.write_i32(0);
        w.write_i32(self.timeout_ms);
        w.write_i64(self.session_id);
        w.write_buffer(Some(&self.passwd));
        if let Some(ro) = self.read_only {
            w.write_bool(ro);
        }
        end_frame(out, start);
    }
}

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------

/// The 8 bytes that start every frame after the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    pub xid: i32,
    pub opcode: i32,
}

/// A read inside multiRead. (The `watch` byte ZooKeeper ignores there is not kept.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadOp {
    GetData { path: String },
    GetChildren { path: String },
}

/// setWatches (101) / setWatches2 (105), sent with xid -8 after a reconnect.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetWatches {
    /// True for setWatches2 (it has the two persistent lists on the wire).
    pub v2: bool,
    pub relative_zxid: Zxid,
    pub data: Vec<String>,
    pub exist: Vec<String>,
    pub child: Vec<String>,
    /// Always empty for setWatches (101).
    pub persistent: Vec<String>,
    pub persistent_recursive: Vec<String>,
}

/// A decoded client request (every client opcode of ZooKeeper 3.8).
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    Ping,
    CloseSession,
    /// `opcode` 1, 15, 19 (ttl = -1) or 21 (ttl from the wire). At top level the opcode, not
    /// the flags, decides container vs plain.
    Create {
        opcode: i32,
        req: CreateRequest,
    },
    Delete(DeleteRequest),
    Exists {
        path: String,
        watch: bool,
    },
    GetData {
        path: String,
        watch: bool,
    },
    SetData(SetDataRequest),
    GetAcl {
        path: String,
    },
    SetAcl(SetAclRequest),
    GetChildren {
        path: String,
        watch: bool,
    },
    GetChildren2 {
        path: String,
        watch: bool,
    },
    Sync {
        path: String,
    },
    /// check (13) outside multi.
    Check(CheckVersionRequest),
    /// Ops with create opcodes normalised as ZooKeeper does (see `decode_multi`).
    Multi(Vec<WriteOp>),
    MultiRead(Vec<ReadOp>),
    Reconfig {
        joining_servers: Option<String>,
        leaving_servers: Option<String>,
        new_members: Option<String>,
        cur_config_id: i64,
    },
    /// `kind` raw: 1 children, 2 data, 3 any (`WatcherType::from_i32`); anything else is a
    /// MarshallingError for the server to send.
    CheckWatches {
        path: String,
        kind: i32,
    },
    RemoveWatches {
        path: String,
        kind: i32,
    },
    /// AuthPacket; its leading `type` int is always 0 and is not kept.
    Auth {
        scheme: String,
        auth: Vec<u8>,
    },
    SetWatches(SetWatches),
    GetEphemerals {
        prefix: String,
    },
    GetAllChildrenNumber {
        path: String,
    },
    /// `mode` raw: 0 persistent, 1 persistent recursive (`AddWatchMode::from_i32`); anything
    /// else is a MarshallingError for the server to send.
    AddWatch {
        path: String,
        mode: i32,
    },
    WhoAmI,
    /// GetSASLRequest. SASL is not supported, so its token is checked but not kept.
    Sasl,
}

/// A request whose header was readable but that cannot be carried out as sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Reply Unimplemented with zxid -1, then close the connection (the session lives on).
    #[error("unknown opcode {0}")]
    UnknownOpcode(i32),
    /// Reply MarshallingError (no body); the connection stays open. For a write opcode
    /// (`is_write_opcode`) ZooKeeper logs the failure, so it consumes a zxid.
    #[error("undecodable request body")]
    Marshalling,
    /// multiRead holding only write ops: MarshallingError *with* an empty MultiResponse body
    /// (`encode_multi_read_marshalling_error`); no zxid consumed.
    #[error("multiRead holds write ops")]
    MultiReadWithWrite,
    /// An undecodable auth or sasl packet: ZooKeeper closes the connection without a reply.
    #[error("undecodable auth/sasl packet")]
    DropConnection,
}

impl RequestError {
    /// The error code to reply with, if any.
    pub fn reply_code(self) -> Option<ErrorCode> {
        match self {
            RequestError::UnknownOpcode(_) => Some(ErrorCode::Unimplemented),
            RequestError::Marshalling | RequestError::MultiReadWithWrite => {
                Some(ErrorCode::MarshallingError)
            }
            RequestError::DropConnection => None,
        }
    }
}

/// Opcodes ZooKeeper turns into a transaction (a failure of one still consumes a zxid).
pub fn is_write_opcode(op: i32) -> bool {
    matches!(
        op,
        opcode::CREATE
            | opcode::CREATE2
            | opcode::CREATE_CONTAINER
            | opcode::CREATE_TTL
            | opcode::DELETE
            | opcode::SET_DATA
            | opcode::SET_ACL
            | opcode::CHECK
            | opcode::MULTI
            | opcode::RECONFIG
            | opcode::CLOSE_SESSION
    )
}

/// Decodes a request frame's payload. The outer error means the 8-byte header itself is
/// unreadable (ZooKeeper closes the connection); the inner one is about the body.
pub fn decode_request(
    payload: &[u8],
) -> Result<(RequestHeader, Result<Request, RequestError>), DecodeError> {
    let mut r = Reader::new(payload);
    let header = RequestHeader {
        xid: r.read_i32()?,
        opcode: r.read_i32()?,
    };
    let body = decode_body(header.opcode, &mut r);
    Ok((header, body))
}

fn decode_body(op: i32, r: &mut Reader<'_>) -> Result<Request, RequestError> {
    let marshalling = |_: DecodeError| RequestError::Marshalling;
    let path_watch = |r: &mut Reader<'_>| -> Result<(String, bool), DecodeError> {
        Ok((r.read_string()?, r.read_bool()?))
    };
    let req = match op {
        opcode::PING => Request::Ping,
        opcode::CLOSE_SESSION => Request::CloseSession,
        opcode::WHO_AM_I => Request::WhoAmI,
        opcode::CREATE | opcode::CREATE2 | opcode::CREATE_CONTAINER | opcode::CREATE_TTL => {
            let raw = read_create(r, op == opcode::CREATE_TTL).map_err(marshalling)?;
            Request::Create {
                opcode: op,
                req: raw.into_request()?,
            }
        }
        opcode::DELETE => Request::Delete(read_delete(r).map_err(marshalling)??),
        opcode::EXISTS => {
            let (path, watch) = path_watch(r).map_err(marshalling)?;
            Request::Exists { path, watch }
        }
        opcode::GET_DATA => {
            let (path, watch) = path_watch(r).map_err(marshalling)?;
            Request::GetData { path, watch }
        }
        opcode::GET_CHILDREN => {
            let (path, watch) = path_watch(r).map_err(marshalling)?;
            Request::GetChildren { path, watch }
        }
        opcode::GET_CHILDREN2 => {
            let (path, watch) = path_watch(r).map_err(marshalling)?;
            Request::GetChildren2 { path, watch }
        }
        opcode::SET_DATA => Request::SetData(read_set_data(r).map_err(marshalling)?),
        opcode::GET_ACL => Request::GetAcl {
            path: r.read_string().map_err(marshalling)?,
        },
        opcode::SET_ACL => {
            let decode = |r: &mut Reader<'_>| -> Result<SetAclRequest, DecodeError> {
                Ok(SetAclRequest {
                    path: r.read_string()?,
                    acl: r.read_acl_vec()?,
                    version: r.read_i32()?,
                })
            };
            Request::SetAcl(decode(r).map_err(marshalling)?)
        }
        opcode::SYNC => Request::Sync {
            path: r.read_string().map_err(marshalling)?,
        },
        opcode::CHECK => Request::Check(read_check(r).map_err(marshalling)?),
        opcode::MULTI => match read_multi_ops(r).map_err(marshalling)? {
            MultiOps::Empty => Request::Multi(Vec::new()),
            MultiOps::Writes(ops) => Request::Multi(decode_multi(ops)?),
            // ZooKeeper fails to prep a read op: MarshallingError for the whole multi.
            MultiOps::Reads(_) => return Err(RequestError::Marshalling),
        },
        opcode::MULTI_READ => match read_multi_ops(r).map_err(marshalling)? {
            MultiOps::Empty => Request::MultiRead(Vec::new()),
            MultiOps::Reads(ops) => Request::MultiRead(ops),
            // The first op already fails, after the (empty) response was created.
            MultiOps::Writes(_) => return Err(RequestError::MultiReadWithWrite),
        },
        opcode::RECONFIG => {
            let decode = |r: &mut Reader<'_>| -> Result<Request, DecodeError> {
                Ok(Request::Reconfig {
                    joining_servers: r.read_opt_string()?,
                    leaving_servers: r.read_opt_string()?,
                    new_members: r.read_opt_string()?,
                    cur_config_id: r.read_i64()?,
                })
            };
            decode(r).map_err(marshalling)?
        }
        opcode::CHECK_WATCHES | opcode::REMOVE_WATCHES => {
            let path = r.read_string().map_err(marshalling)?;
            let kind = r.read_i32().map_err(marshalling)?;
            if op == opcode::CHECK_WATCHES {
                Request::CheckWatches { path, kind }
            } else {
                Request::RemoveWatches { path, kind }
            }
        }
        opcode::AUTH => {
            let decode = |r: &mut Reader<'_>| -> Result<Request, DecodeError> {
                let _type = r.read_i32()?;
                let scheme = r.read_string()?;
                let auth = r.read_buffer()?.map(<[u8]>::to_vec).unwrap_or_default();
                Ok(Request::Auth { scheme, auth })
            };
            decode(r).map_err(|_| RequestError::DropConnection)?
        }
        opcode::SASL => {
            r.read_buffer().map_err(|_| RequestError::DropConnection)?;
            Request::Sasl
        }
        opcode::SET_WATCHES | opcode::SET_WATCHES2 => {
            let v2 = op == opcode::SET_WATCHES2;
            let decode = |r: &mut Reader<'_>| -> Result<SetWatches, DecodeError> {
                let mut sw = SetWatches {
                    v2,
                    relative_zxid: r.read_i64()?,
                    data: r.read_string_vec()?,
                    exist: r.read_string_vec()?,
                    child: r.read_string_vec()?,
                    ..SetWatches::default()
                };
                if v2 {
                    sw.persistent = r.read_string_vec()?;
                    sw.persistent_recursive = r.read_string_vec()?;
                }
                Ok(sw)
            };
            Request::SetWatches(decode(r).map_err(marshalling)?)
        }
        opcode::GET_EPHEMERALS => Request::GetEphemerals {
            prefix: r.read_string().map_err(marshalling)?,
        },
        opcode::GET_ALL_CHILDREN_NUMBER => Request::GetAllChildrenNumber {
            path: r.read_string().map_err(marshalling)?,
        },
        opcode::ADD_WATCH => {
            let path = r.read_string().map_err(marshalling)?;
            let mode = r.read_i32().map_err(marshalling)?;
            Request::AddWatch { path, mode }
        }
        // notification (0), createSession (-10), deleteContainer (20) and anything else.
        other => return Err(RequestError::UnknownOpcode(other)),
    };
    Ok(req)
}

/// A create record as read, before the null-path check.
struct RawCreate {
    path: Option<String>,
    data: Option<Vec<u8>>,
    acl: Vec<Acl>,
    flags: i32,
    ttl: i64,
}

impl RawCreate {
    /// ZooKeeper dereferences the path in prep: null is a MarshallingError.
    fn into_request(self) -> Result<CreateRequest, RequestError> {
        let path = self.path.ok_or(RequestError::Marshalling)?;
        Ok(CreateRequest {
            path,
            data: self.data,
            acl: self.acl,
            flags: self.flags,
            ttl: self.ttl,
        })
    }
}

fn read_create(r: &mut Reader<'_>, with_ttl: bool) -> Result<RawCreate, DecodeError> {
    Ok(RawCreate {
        path: r.read_opt_string()?,
        data: r.read_buffer()?.map(<[u8]>::to_vec),
        acl: r.read_acl_vec()?,
        flags: r.read_i32()?,
        ttl: if with_ttl { r.read_i64()? } else { -1 },
    })
}

/// The inner error: a null path, which ZooKeeper fails on (MarshallingError) in prep.
fn read_delete(r: &mut Reader<'_>) -> Result<Result<DeleteRequest, RequestError>, DecodeError> {
    let path = r.read_opt_string()?;
    let version = r.read_i32()?;
    Ok(path
        .map(|path| DeleteRequest { path, version })
        .ok_or(RequestError::Marshalling))
}

fn read_set_data(r: &mut Reader<'_>) -> Result<SetDataRequest, DecodeError> {
    Ok(SetDataRequest {
        path: r.read_string()?,
        data: r.read_buffer()?.map(<[u8]>::to_vec),
        version: r.read_i32()?,
    })
}

fn read_check(r: &mut Reader<'_>) -> Result<CheckVersionRequest, DecodeError> {
    Ok(CheckVersionRequest {
        path: r.read_string()?,
        version: r.read_i32()?,
    })
}

/// One op of a MultiOperationRecord as read, before multi/multiRead rules apply.
enum RawWriteOp {
    Create { header: i32, raw: RawCreate },
    Delete(Result<DeleteRequest, RequestError>),
    SetData(SetDataRequest),
    Check(CheckVersionRequest),
}

enum MultiOps {
    Empty,
    Writes(Vec<RawWriteOp>),
    Reads(Vec<ReadOp>),
}

/// MultiOperationRecord: `MultiHeader(type, done, err)` + record, until a header with done
/// set. Read and write ops may not be mixed, and other op types are errors (both make
/// ZooKeeper's deserialisation fail). Every op consumes at least 9 bytes, so the op count is
/// bounded by the frame size.
fn read_multi_ops(r: &mut Reader<'_>) -> Result<MultiOps, DecodeError> {
    // The caller maps any failure to MarshallingError.
    let invalid = DecodeError::Invalid("multi op type or op mix");
    let mut ops = MultiOps::Empty;
    loop {
        let op_type = r.read_i32()?;
        let done = r.read_bool()?;
        let _err = r.read_i32()?;
        if done {
            return Ok(ops);
        }
        let write = match op_type {
            opcode::CREATE | opcode::CREATE2 | opcode::CREATE_CONTAINER | opcode::CREATE_TTL => {
                let raw = read_create(r, op_type == opcode::CREATE_TTL)?;
                Ok(RawWriteOp::Create {
                    header: op_type,
                    raw,
                })
            }
            opcode::DELETE => Ok(RawWriteOp::Delete(read_delete(r)?)),
            opcode::SET_DATA => Ok(RawWriteOp::SetData(read_set_data(r)?)),
            opcode::CHECK => Ok(RawWriteOp::Check(read_check(r)?)),
            opcode::GET_DATA => {
                let path = r.read_string()?;
                let _watch = r.read_bool()?;
                Err(ReadOp::GetData { path })
            }
            opcode::GET_CHILDREN => {
                let path = r.read_string()?;
                let _watch = r.read_bool()?;
                Err(ReadOp::GetChildren { path })
            }
            _ => return Err(invalid),
        };
        match (&mut ops, write) {
            (MultiOps::Empty, Ok(w)) => ops = MultiOps::Writes(vec![w]),
            (MultiOps::Empty, Err(rd)) => ops = MultiOps::Reads(vec![rd]),
            (MultiOps::Writes(v), Ok(w)) => v.push(w),
            (MultiOps::Reads(v), Err(rd)) => v.push(rd),
            _ => return Err(invalid),
        }
    }
}

/// Turns multi's write ops into `WriteOp`s the way ZooKeeper's `Op.create` does: the op type
/// comes from the flags. TTL flags → createTTL (needs the TTL record: with a plain create
/// record ZooKeeper's prep fails with a ClassCastException → MarshallingError for the whole
/// multi), container flag → createContainer, anything else → create (a create2 op thus gets
/// a type-1 result, and createTTL with non-TTL flags loses its ttl).
fn decode_multi(ops: Vec<RawWriteOp>) -> Result<Vec<WriteOp>, RequestError> {
    ops.into_iter()
        .map(|op| {
            Ok(match op {
                RawWriteOp::Create { header, raw } => {
                    let is_ttl_record = header == opcode::CREATE_TTL;
                    let mut req = raw.into_request()?;
                    let opcode = match req.flags {
                        5 | 6 if is_ttl_record => opcode::CREATE_TTL,
                        5 | 6 => return Err(RequestError::Marshalling),
                        4 => opcode::CREATE_CONTAINER,
                        _ => opcode::CREATE,
                    };
                    if opcode != opcode::CREATE_TTL {
                        req.ttl = -1;
                    }
                    WriteOp::Create { opcode, req }
                }
                RawWriteOp::Delete(d) => WriteOp::Delete(d?),
                RawWriteOp::SetData(s) => WriteOp::SetData(s),
                RawWriteOp::Check(c) => WriteOp::Check(c),
            })
        })
        .collect()
}

fn write_create(w: &mut Writer<'_>, op: i32, req: &CreateRequest) {
    w.write_str(&req.path);
    w.write_buffer(req.data.as_deref());
    w.write_acl_vec(&req.acl);
    w.write_i32(req.flags);
    if op == opcode::CREATE_TTL {
        w.write_i64(req.ttl);
    }
}

fn write_multi_header(w: &mut Writer<'_>, op_type: i32, done: bool, err: i32) {
    w.write_i32(op_type);
    w.write_bool(done);
    w.write_i32(err);
}

fn write_multi_end(w: &mut Writer<'_>) {
    write_multi_header(w, -1, true, -1);
}

/// The opcode of a write op (its MultiHeader type inside multi).
pub fn write_op_opcode(op: &WriteOp) -> i32 {
    match op {
        WriteOp::Create { opcode, .. } => *opcode,
        WriteOp::Delete(_) => opcode::DELETE,
        WriteOp::SetData(_) => opcode::SET_DATA,
        WriteOp::Check(_) => opcode::CHECK,
    }
}

impl Request {
    /// The opcode this request is sent with.
    pub fn opcode(&self) -> i32 {
        match self {
            Request::Ping => opcode::PING,
            Request::CloseSession => opcode::CLOSE_SESSION,
            Request::Create { opcode, .. } => *opcode,
            Request::Delete(_) => opcode::DELETE,
            Request::Exists { .. } => opcode::EXISTS,
            Request::GetData { .. } => opcode::GET_DATA,
            Request::SetData(_) => opcode::SET_DATA,
            Request::GetAcl { .. } => opcode::GET_ACL,
            Request::SetAcl(_) => opcode::SET_ACL,
            Request::GetChildren { .. } => opcode::GET_CHILDREN,
            Request::GetChildren2 { .. } => opcode::GET_CHILDREN2,
            Request::Sync { .. } => opcode::SYNC,
            Request::Check(_) => opcode::CHECK,
            Request::Multi(_) => opcode::MULTI,
            Request::MultiRead(_) => opcode::MULTI_READ,
            Request::Reconfig { .. } => opcode::RECONFIG,
            Request::CheckWatches { .. } => opcode::CHECK_WATCHES,
            Request::RemoveWatches { .. } => opcode::REMOVE_WATCHES,
            Request::Auth { .. } => opcode::AUTH,
            Request::SetWatches(sw) if sw.v2 => opcode::SET_WATCHES2,
            Request::SetWatches(_) => opcode::SET_WATCHES,
            Request::GetEphemerals { .. } => opcode::GET_EPHEMERALS,
            Request::GetAllChildrenNumber { .. } => opcode::GET_ALL_CHILDREN_NUMBER,
            Request::AddWatch { .. } => opcode::ADD_WATCH,
            Request::WhoAmI => opcode::WHO_AM_I,
            Request::Sasl => opcode::SASL,
        }
    }

    /// Writes the whole frame (length prefix, RequestHeader, body). Clients should use
    /// `xid::PING` for pings, `xid::AUTH` for auth and `xid::SET_WATCHES` for setWatches.
    pub fn encode(&self, xid: i32, out: &mut Vec<u8>) {
        let start = begin_frame(out);
        let mut w = Writer::new(out);
        w.write_i32(xid);
        w.write_i32(self.opcode());
        self.encode_body(&mut w);
        end_frame(out, start);
    }

    fn encode_body(&self, w: &mut Writer<'_>) {
        match self {
            Request::Ping | Request::CloseSession | Request::WhoAmI => {}
            Request::Create { opcode, req } => write_create(w, *opcode, req),
            Request::Delete(d) => {
                w.write_str(&d.path);
                w.write_i32(d.version);
            }
            Request::Exists { path, watch }
            | Request::GetData { path, watch }
            | Request::GetChildren { path, watch }
            | Request::GetChildren2 { path, watch } => {
                w.write_str(path);
                w.write_bool(*watch);
            }
            Request::SetData(s) => {
                w.write_str(&s.path);
                w.write_buffer(s.data.as_deref());
                w.write_i32(s.version);
            }
            Request::GetAcl { path }
            | Request::Sync { path }
            | Request::GetAllChildrenNumber { path } => w.write_str(path),
            Request::GetEphemerals { prefix } => w.write_str(prefix),
            Request::SetAcl(s) => {
                w.write_str(&s.path);
                w.write_acl_vec(&s.acl);
                w.write_i32(s.version);
            }
            Request::Check(c) => {
                w.write_str(&c.path);
                w.write_i32(c.version);
            }
            Request::Multi(ops) => {
                for op in ops {
                    write_multi_header(w, write_op_opcode(op), false, -1);
                    match op {
                        WriteOp::Create { opcode, req } => write_create(w, *opcode, req),
                        WriteOp::Delete(d) => {
                            w.write_str(&d.path);
                            w.write_i32(d.version);
                        }
                        WriteOp::SetData(s) => {
                            w.write_str(&s.path);
                            w.write_buffer(s.data.as_deref());
                            w.write_i32(s.version);
                        }
                        WriteOp::Check(c) => {
                            w.write_str(&c.path);
                            w.write_i32(c.version);
                        }
                    }
                }
                write_multi_end(w);
            }
            Request::MultiRead(ops) => {
                for op in ops {
                    let (op_type, path) = match op {
                        ReadOp::GetData { path } => (opcode::GET_DATA, path),
                        ReadOp::GetChildren { path } => (opcode::GET_CHILDREN, path),
                    };
                    write_multi_header(w, op_type, false, -1);
                    w.write_str(path);
                    w.write_bool(false);
                }
                write_multi_end(w);
            }
            Request::Reconfig {
                joining_servers,
                leaving_servers,
                new_members,
                cur_config_id,
            } => {
                w.write_opt_str(joining_servers.as_deref());
                w.write_opt_str(leaving_servers.as_deref());
                w.write_opt_str(new_members.as_deref());
                w.write_i64(*cur_config_id);
            }
            Request::CheckWatches { path, kind } | Request::RemoveWatches { path, kind } => {
                w.write_str(path);
                w.write_i32(*kind);
            }
            Request::Auth { scheme, auth } => {
                w.write_i32(0);
                w.write_str(scheme);
                w.write_buffer(Some(auth));
            }
            Request::SetWatches(sw) => {
                w.write_i64(sw.relative_zxid);
                let mut lists = vec![&sw.data, &sw.exist, &sw.child];
                if sw.v2 {
                    lists.extend([&sw.persistent, &sw.persistent_recursive]);
                }
                for list in lists {
                    w.write_strs(list.iter().map(String::as_str));
                }
            }
            Request::AddWatch { path, mode } => {
                w.write_str(path);
                w.write_i32(*mode);
            }
            Request::Sasl => w.write_buffer(Some(&[])),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------

/// A sequence of strings (children names, ephemeral paths) that a reply encodes in place,
/// never copying the text. Implemented for slices and vectors of anything `AsRef<str>`
/// (`String`, `&str`, `Arc<str>`, ...); the tree may implement it for its own structures.
pub trait StrSeq {
    /// Calls `f` on every element, in order.
    fn each(&self, f: &mut dyn FnMut(&str));
}

impl<T: AsRef<str>> StrSeq for [T] {
    fn each(&self, f: &mut dyn FnMut(&str)) {
        for s in self {
            f(s.as_ref());
        }
    }
}

impl<T: AsRef<str>> StrSeq for Vec<T> {
    fn each(&self, f: &mut dyn FnMut(&str)) {
        self.as_slice().each(f);
    }
}

impl<T: AsRef<str>, const N: usize> StrSeq for [T; N] {
    fn each(&self, f: &mut dyn FnMut(&str)) {
        self.as_slice().each(f);
    }
}

/// So that a borrowed slice can be passed as `&slice` (a bare `[T]` is unsized and cannot
/// become a `&dyn StrSeq`).
impl<T: AsRef<str>> StrSeq for &[T] {
    fn each(&self, f: &mut dyn FnMut(&str)) {
        (**self).each(f);
    }
}

impl std::fmt::Debug for dyn StrSeq + '_ {
    fn fmt(&self, fmt: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = fmt.debug_list();
        self.each(&mut |s| {
            list.entry(&s);
        });
        list.finish()
    }
}

/// `vector<ustring>`. The count is patched in after the elements, so it is right whatever
/// the sequence yields.
fn write_str_seq(w: &mut Writer<'_>, seq: &dyn StrSeq) {
    let at = w.bytes().len();
    w.write_i32(0);
    let mut n = 0usize;
    seq.each(&mut |s| {
        w.write_str(s);
        n += 1;
    });
    w.patch_len(at, n);
}

/// One result of a multiRead.
#[derive(Clone, Copy, Debug)]
pub enum ReadResult<'a> {
    Data { data: Option<&'a [u8]>, stat: Stat },
    Children(&'a dyn StrSeq),
    Error(ErrorCode),
}

/// The body of a successful reply. Borrowed, so that node data, children and ACLs are
/// written straight from where they live.
#[derive(Clone, Copy, Debug)]
pub enum ReplyBody<'a> {
    /// delete, ping, auth, setWatches, check/removeWatches, closeSession, sync-less ops.
    Empty,
    /// create (1), sync.
    Path(&'a str),
    /// create2, createContainer, createTTL.
    PathStat {
        path: &'a str,
        stat: Stat,
    },
    /// exists, setData, setACL.
    Stat(Stat),
    /// getData (and reconfig). `None` data is null on the wire, distinct from empty.
    Data {
        data: Option<&'a [u8]>,
        stat: Stat,
    },
    /// getACL.
    Acl {
        acl: &'a [Acl],
        stat: Stat,
    },
    /// getChildren: names only.
    Children(&'a dyn StrSeq),
    /// getChildren2.
    Children2 {
        children: &'a dyn StrSeq,
        stat: Stat,
    },
    /// multi: results as applied (see `encode_multi_results`).
    Multi(&'a [MultiResult]),
    MultiRead(&'a [ReadResult<'a>]),
    /// getAllChildrenNumber.
    Count(i32),
    /// getEphemerals.
    Paths(&'a dyn StrSeq),
    /// addWatch's 4-byte ErrorResponse body.
    ErrorResponse(i32),
    /// whoAmI: (scheme, user) pairs.
    WhoAmI(&'a [(String, String)]),
    /// sasl's SetSASLResponse token.
    Token(Option<&'a [u8]>),
}

impl ReplyBody<'_> {
    fn encode(&self, w: &mut Writer<'_>) {
        match *self {
            ReplyBody::Empty => {}
            ReplyBody::Path(p) => w.write_str(p),
            ReplyBody::PathStat { path, ref stat } => {
                w.write_str(path);
                w.write_stat(stat);
            }
            ReplyBody::Stat(ref stat) => w.write_stat(stat),
            ReplyBody::Data { data, ref stat } => {
                w.write_buffer(data);
                w.write_stat(stat);
            }
            ReplyBody::Acl { acl, ref stat } => {
                w.write_acl_vec(acl);
                w.write_stat(stat);
            }
            ReplyBody::Children(list) | ReplyBody::Paths(list) => write_str_seq(w, list),
            ReplyBody::Children2 { children, ref stat } => {
                write_str_seq(w, children);
                w.write_stat(stat);
            }
            ReplyBody::Multi(results) => encode_multi_results(w, results),
            ReplyBody::MultiRead(results) => {
                for r in results {
                    match r {
                        ReadResult::Data { data, stat } => {
                            write_multi_header(w, opcode::GET_DATA, false, 0);
                            w.write_buffer(*data);
                            w.write_stat(stat);
                        }
                        ReadResult::Children(list) => {
                            write_multi_header(w, opcode::GET_CHILDREN, false, 0);
                            write_str_seq(w, *list);
                        }
                        ReadResult::Error(e) => write_error_result(w, *e),
                    }
                }
                write_multi_end(w);
            }
            ReplyBody::Count(n) | ReplyBody::ErrorResponse(n) => w.write_i32(n),
            ReplyBody::WhoAmI(infos) => {
                w.write_len(infos.len());
                for (scheme, user) in infos {
                    w.write_str(scheme);
                    w.write_str(user);
                }
            }
            ReplyBody::Token(t) => w.write_buffer(t),
        }
    }
}

fn write_error_result(w: &mut Writer<'_>, e: ErrorCode) {
    write_multi_header(w, opcode::ERROR, false, e.code());
    w.write_i32(e.code());
}

/// MultiResponse: per result a MultiHeader(type, false, err) and its body, then the
/// terminator `ffffffff 01 ffffffff`. create/create2 come back as type 1 with the path only,
/// container/TTL as type 15 with path and Stat; errors as type -1 with the code twice.
fn encode_multi_results(w: &mut Writer<'_>, results: &[MultiResult]) {
    for r in results {
        match r {
            MultiResult::Created {
                opcode: op,
                path,
                stat,
            } => {
                if *op == opcode::CREATE_CONTAINER || *op == opcode::CREATE_TTL {
                    write_multi_header(w, opcode::CREATE2, false, 0);
                    w.write_str(path);
                    w.write_stat(stat);
                } else {
                    write_multi_header(w, opcode::CREATE, false, 0);
                    w.write_str(path);
                }
            }
            MultiResult::Deleted => write_multi_header(w, opcode::DELETE, false, 0),
            MultiResult::SetData(stat) => {
                write_multi_header(w, opcode::SET_DATA, false, 0);
                w.write_stat(stat);
            }
            MultiResult::Checked => write_multi_header(w, opcode::CHECK, false, 0),
            MultiResult::Error(e) => write_error_result(w, *e),
        }
    }
    write_multi_end(w);
}

fn write_reply_header(w: &mut Writer<'_>, xid: i32, zxid: Zxid, err: i32) {
    w.write_i32(xid);
    w.write_i64(zxid);
    w.write_i32(err);
}

/// Writes a whole reply frame: length prefix, ReplyHeader, and the body only when `err` is
/// Ok (ZooKeeper sends no body with an error, whatever `body` holds). The caller picks the
/// xid (-2 for every ping reply) and the zxid (0 for auth, -1 for an unknown opcode).
pub fn encode_reply(out: &mut Vec<u8>, xid: i32, zxid: Zxid, err: ErrorCode, body: &ReplyBody<'_>) {
    let start = begin_frame(out);
    let mut w = Writer::new(out);
    write_reply_header(&mut w, xid, zxid, err.code());
    if err == ErrorCode::Ok {
        body.encode(&mut w);
    }
    end_frame(out, start);
}

/// The one error reply with a body: MarshallingError for a multiRead of write ops, followed
/// by an empty MultiResponse (just the terminator).
pub fn encode_multi_read_marshalling_error(out: &mut Vec<u8>, xid: i32, zxid: Zxid) {
    let start = begin_frame(out);
    let mut w = Writer::new(out);
    write_reply_header(&mut w, xid, zxid, ErrorCode::MarshallingError.code());
    write_multi_end(&mut w);
    end_frame(out, start);
}

/// A watch notification: xid -1, zxid -1, err 0, then WatcherEvent(type, state 3, path).
pub fn encode_watch_event(out: &mut Vec<u8>, event: EventType, path: &str) {
    let start = begin_frame(out);
    let mut w = Writer::new(out);
    write_reply_header(&mut w, xid::NOTIFICATION, -1, 0);
    w.write_i32(event as i32);
    w.write_i32(STATE_SYNC_CONNECTED);
    w.write_str(path);
    end_frame(out, start);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::{frames, split_frame, Split, DEFAULT_MAX_PACKET};
    use crate::proto::types::Id;
    use std::sync::Arc;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The payload of a single frame given as hex.
    fn payload(frame_hex: &str) -> Vec<u8> {
        let f = unhex(frame_hex);
        match split_frame(&f, DEFAULT_MAX_PACKET) {
            Ok(Split::Frame { payload, consumed }) if consumed == f.len() => payload.to_vec(),
            other => panic!("not one frame: {other:?}"),
        }
    }

    fn decode_ok(frame_hex: &str) -> (RequestHeader, Request) {
        let (h, r) = decode_request(&payload(frame_hex)).expect("header");
        (h, r.expect("body"))
    }

    fn decode_err(frame_hex: &str) -> RequestError {
        decode_request(&payload(frame_hex))
            .expect("header")
            .1
            .expect_err("should fail")
    }

    fn reencode(h: RequestHeader, r: &Request) -> String {
        let mut out = Vec::new();
        r.encode(h.xid, &mut out);
        hex(&out)
    }

    const OPEN_ACL: &str = "00000001 0000001f 00000005 776f726c64 00000006 616e796f6e65";

    #[test]
    fn connect_request_new_and_old_client() {
        let new = "0000002d 00000000 0000000000000000 00007530 0000000000000000 00000010 \
                   00000000000000000000000000000000 00";
        let req = ConnectRequest::decode(&payload(new)).unwrap();
        assert_eq!(req.timeout_ms, 30000);
        assert_eq!(req.passwd, vec![0; 16]);
        assert_eq!(req.read_only, Some(false));
        let mut out = Vec::new();
        req.encode(&mut out);
        assert_eq!(hex(&out), new.replace(' ', ""));

        let old = &new[..new.len() - 3];
        let req = ConnectRequest::decode(&payload(&old.replacen("2d", "2c", 1))).unwrap();
        assert_eq!(req.read_only, None);
        // Truncated passwd.
        assert!(ConnectRequest::decode(&unhex("00000000 0000000000000000 00007530")).is_err());
    }

    #[test]
    fn connect_response_shapes() {
        let mut out = Vec::new();
        ConnectResponse::invalid(Some(false)).encode(&mut out);
        assert_eq!(
            hex(&out),
            "00000025000000000000000000000000000000000000001000000000000000000000000000000000\
             00"
        );
        out.clear();
        let resp = ConnectResponse {
            timeout_ms: 10000,
            session_id: 0x0100_0016_c5f1_0001,
            passwd: vec![7; 16],
            read_only: None,
        };
        resp.encode(&mut out);
        assert_eq!(out.len(), 40);
        assert_eq!(&out[..4], &[0, 0, 0, 0x24]);
    }

    #[test]
    fn create_and_its_null_path() {
        let f = format!(
            "00000037 00000001 00000001 00000003 2f726b 00000005 68656c6c6f {OPEN_ACL} 00000000"
        );
        let (h, r) = decode_ok(&f);
        assert_eq!(h, RequestHeader { xid: 1, opcode: 1 });
        let want = CreateRequest {
            path: "/rk".into(),
            data: Some(b"hello".to_vec()),
            acl: Acl::open_unsafe(),
            flags: 0,
            ttl: -1,
        };
        assert_eq!(
            r,
            Request::Create {
                opcode: 1,
                req: want
            }
        );
        assert_eq!(reencode(h, &r), f.replace(' ', ""));

        let null_path =
            format!("00000034 00000001 00000001 ffffffff 00000005 68656c6c6f {OPEN_ACL} 00000000");
        assert_eq!(decode_err(&null_path), RequestError::Marshalling);
        // Body stops after the path.
        assert_eq!(
            decode_err("0000000f 00000002 00000001 00000003 2f7a7a"),
            RequestError::Marshalling
        );
    }

    #[test]
    fn create_ttl_carries_ttl_and_others_do_not() {
        let f = format!(
            "0000003c 00000001 00000015 00000004 2f74746c 00000001 74 {OPEN_ACL} 00000005 000000000000ea60"
        );
        let (h, r) = decode_ok(&f);
        match &r {
            Request::Create { opcode: 21, req } => assert_eq!((req.flags, req.ttl), (5, 60000)),
            other => panic!("{other:?}"),
        }
        assert_eq!(reencode(h, &r), f.replace(' ', ""));
    }

    #[test]
    fn null_strings_read_as_empty_except_create_and_delete() {
        let (_, r) = decode_ok("0000000c 00000001 00000067 ffffffff");
        assert_eq!(
            r,
            Request::GetEphemerals {
                prefix: String::new()
            }
        );
        let (_, r) = decode_ok("0000000d 00000001 00000004 ffffffff 01");
        assert_eq!(
            r,
            Request::GetData {
                path: String::new(),
                watch: true
            }
        );
        assert_eq!(
            decode_err("00000010 00000001 00000002 ffffffff ffffffff"),
            RequestError::Marshalling
        );
    }

    #[test]
    fn every_simple_opcode_round_trips() {
        let reqs = vec![
            Request::Ping,
            Request::CloseSession,
            Request::WhoAmI,
            Request::Delete(DeleteRequest {
                path: "/a".into(),
                version: -1,
            }),
            Request::Exists {
                path: "/a".into(),
                watch: true,
            },
            Request::GetData {
                path: "/a".into(),
                watch: false,
            },
            Request::SetData(SetDataRequest {
                path: "/a".into(),
                data: None,
                version: 3,
            }),
            Request::GetAcl { path: "/a".into() },
            Request::SetAcl(SetAclRequest {
                path: "/a".into(),
                acl: Acl::read_unsafe(),
                version: 0,
            }),
            Request::GetChildren {
                path: "/".into(),
                watch: true,
            },
            Request::GetChildren2 {
                path: "/".into(),
                watch: false,
            },
            Request::Sync { path: "/a".into() },
            Request::Check(CheckVersionRequest {
                path: "/a".into(),
                version: 1,
            }),
            Request::Reconfig {
                joining_servers: None,
                leaving_servers: Some("2".into()),
                new_members: None,
                cur_config_id: -1,
            },
            Request::CheckWatches {
                path: "/a".into(),
                kind: 3,
            },
            Request::RemoveWatches {
                path: "/a".into(),
                kind: 9,
            },
            Request::Auth {
                scheme: "digest".into(),
                auth: b"u:p".to_vec(),
            },
            Request::SetWatches(SetWatches {
                v2: false,
                relative_zxid: 5,
                data: vec!["/a".into()],
                exist: vec![],
                child: vec!["/b".into(), "/c".into()],
                ..SetWatches::default()
            }),
            Request::SetWatches(SetWatches {
                v2: true,
                persistent_recursive: vec!["/r".into()],
                ..SetWatches::default()
            }),
            Request::GetEphemerals {
                prefix: "/e".into(),
            },
            Request::GetAllChildrenNumber { path: "/a".into() },
            Request::AddWatch {
                path: "/a".into(),
                mode: 1,
            },
            Request::Sasl,
            Request::MultiRead(vec![
                ReadOp::GetData { path: "/a".into() },
                ReadOp::GetChildren { path: "/b".into() },
            ]),
            Request::Multi(vec![]),
        ];
        for req in reqs {
            let mut out = Vec::new();
            req.encode(7, &mut out);
            let (h, back) = decode_ok(&hex(&out));
            assert_eq!(
                h,
                RequestHeader {
                    xid: 7,
                    opcode: req.opcode()
                }
            );
            assert_eq!(back, req);
        }
    }

    fn multi_op(op: i32, body: &str) -> String {
        format!("{op:08x} 00 ffffffff {body}")
    }

    fn multi_frame(opcode: i32, ops: &[String]) -> String {
        let body = unhex(&format!(
            "00000009 {opcode:08x} {} ffffffff 01 ffffffff",
            ops.join(" ")
        ));
        let mut out = Vec::new();
        let start = begin_frame(&mut out);
        out.extend_from_slice(&body);
        end_frame(&mut out, start);
        hex(&out)
    }

    fn create_body(flags: i32, ttl: Option<i64>) -> String {
        let ttl = ttl.map(|t| format!("{t:016x}")).unwrap_or_default();
        format!("00000002 2f61 ffffffff {OPEN_ACL} {flags:08x} {ttl}")
    }

    #[test]
    fn multi_create_opcode_follows_flags() {
        let cases = [
            (1, 0, None, Ok((1, -1))),
            (15, 0, None, Ok((1, -1))),
            (19, 0, None, Ok((1, -1))),
            (1, 4, None, Ok((19, -1))),
            (15, 4, None, Ok((19, -1))),
            (21, 5, Some(60), Ok((21, 60))),
            (21, 0, Some(60), Ok((1, -1))),
            (21, 4, Some(60), Ok((19, -1))),
            (1, 9, None, Ok((1, -1))),
            (1, 5, None, Err(RequestError::Marshalling)),
            (19, 6, None, Err(RequestError::Marshalling)),
        ];
        for (header, flags, ttl, want) in cases {
            let f = multi_frame(14, &[multi_op(header, &create_body(flags, ttl))]);
            let got = decode_request(&payload(&f)).unwrap().1.map(|r| match r {
                Request::Multi(ops) => match &ops[..] {
                    [WriteOp::Create { opcode, req }] => (*opcode, req.ttl),
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            });
            assert_eq!(got, want, "header {header} flags {flags}");
        }
    }

    #[test]
    fn multi_mixing_rules() {
        let get_data = multi_op(4, "00000002 2f61 00");
        let get_children = multi_op(8, "00000002 2f61 01");
        let delete = multi_op(2, "00000002 2f61 ffffffff");
        let check = multi_op(13, "00000002 2f61 00000001");
        let set_data = multi_op(5, "00000002 2f61 00000001 78 ffffffff");
        let exists = multi_op(3, "00000002 2f61 00");

        let f = multi_frame(14, &[delete.clone(), check.clone(), set_data.clone()]);
        let (h, r) = decode_ok(&f);
        assert!(matches!(&r, Request::Multi(ops) if ops.len() == 3));
        assert_eq!(reencode(h, &r), f);
        assert_eq!(
            decode_err(&multi_frame(14, std::slice::from_ref(&get_data))),
            RequestError::Marshalling
        );
        assert_eq!(
            decode_err(&multi_frame(14, &[delete.clone(), get_data.clone()])),
            RequestError::Marshalling
        );
        assert_eq!(
            decode_err(&multi_frame(14, std::slice::from_ref(&exists))),
            RequestError::Marshalling
        );

        let (_, r) = decode_ok(&multi_frame(22, &[get_data.clone(), get_children.clone()]));
        assert_eq!(
            r,
            Request::MultiRead(vec![
                ReadOp::GetData { path: "/a".into() },
                ReadOp::GetChildren { path: "/a".into() }
            ])
        );
        assert_eq!(
            decode_err(&multi_frame(22, std::slice::from_ref(&delete))),
            RequestError::MultiReadWithWrite
        );
        // Mixed kinds fail while decoding: the plain MarshallingError shape.
        assert_eq!(
            decode_err(&multi_frame(22, &[get_data.clone(), delete])),
            RequestError::Marshalling
        );
        assert_eq!(
            decode_err(&multi_frame(22, &[exists])),
            RequestError::Marshalling
        );
        assert_eq!(
            decode_ok(&multi_frame(22, &[])).1,
            Request::MultiRead(vec![])
        );
        assert_eq!(decode_ok(&multi_frame(14, &[])).1, Request::Multi(vec![]));
        // No terminator.
        let mut body = unhex(&format!("00000009 0000000e {check}"));
        let mut f = Vec::new();
        let start = begin_frame(&mut f);
        f.append(&mut body);
        end_frame(&mut f, start);
        assert_eq!(decode_err(&hex(&f)), RequestError::Marshalling);
    }

    #[test]
    fn header_and_opcode_errors() {
        assert!(decode_request(&[0, 0, 0, 1, 0, 0, 0]).is_err());
        assert_eq!(
            decode_err("00000008 00000001 000003e7"),
            RequestError::UnknownOpcode(999)
        );
        assert_eq!(
            decode_err("00000008 00000001 00000000"),
            RequestError::UnknownOpcode(0)
        );
        assert_eq!(
            decode_err("00000008 00000001 fffffff6"),
            RequestError::UnknownOpcode(-10)
        );
        assert_eq!(
            decode_err("00000008 00000001 00000014"),
            RequestError::UnknownOpcode(20)
        );
        assert_eq!(
            decode_err("00000008 00000001 00000004"),
            RequestError::Marshalling
        );
        assert_eq!(
            decode_err("0000000a fffffffc 00000064 0000"),
            RequestError::DropConnection
        );
        assert_eq!(
            decode_err("00000008 00000001 00000066"),
            RequestError::DropConnection
        );
        assert_eq!(
            RequestError::UnknownOpcode(5).reply_code(),
            Some(ErrorCode::Unimplemented)
        );
        assert_eq!(RequestError::DropConnection.reply_code(), None);
        assert!(is_write_opcode(opcode::CREATE_TTL) && !is_write_opcode(opcode::GET_DATA));
    }

    fn reply(xid: i32, zxid: i64, err: ErrorCode, body: ReplyBody<'_>) -> String {
        let mut out = Vec::new();
        encode_reply(&mut out, xid, zxid, err, &body);
        hex(&out)
    }

    #[test]
    fn reply_encodings_from_the_reference() {
        assert_eq!(
            reply(1, 7, ErrorCode::Ok, ReplyBody::Path("/rk")),
            "0000001700000001000000000000000700000000000000032f726b"
        );
        // An error reply has no body, whatever is passed.
        assert_eq!(
            reply(2, 8, ErrorCode::NodeExists, ReplyBody::Path("/rk")),
            "00000010000000020000000000000008ffffff92"
        );
        assert_eq!(
            reply(0x3f, 0x2d, ErrorCode::Ok, ReplyBody::WhoAmI(&[("ip".into(), "127.0.0.1".into())])),
            "000000270000003f000000000000002d0000000000000001000000026970000000093132372e302e302e31"
        );
        assert_eq!(
            reply(6, 0x37, ErrorCode::Ok, ReplyBody::ErrorResponse(0)),
            "0000001400000006000000000000003700000000 00000000".replace(' ', "")
        );
        let mut out = Vec::new();
        encode_watch_event(&mut out, EventType::NodeCreated, "/rk/later");
        assert_eq!(
            hex(&out),
            "00000025ffffffffffffffffffffffff0000000000000001000000030000000 92f726b2f6c61746572"
                .replace(' ', "")
        );
        out.clear();
        encode_multi_read_marshalling_error(&mut out, 4, 9);
        assert_eq!(
            hex(&out),
            "000000190000000400000000000000 09fffffffbffffffff01ffffffff".replace(' ', "")
        );
    }

    #[test]
    fn multi_reply_encodings() {
        let stat = Stat {
            czxid: 1,
            ..Stat::default()
        };
        let results = [
            MultiResult::Created {
                opcode: 15,
                path: "/a".into(),
                stat,
            },
            MultiResult::Created {
                opcode: 19,
                path: "/c".into(),
                stat,
            },
            MultiResult::Deleted,
            MultiResult::SetData(stat),
            MultiResult::Checked,
        ];
        let got = reply(1, 2, ErrorCode::Ok, ReplyBody::Multi(&results));
        let stat_hex = {
            let mut b = Vec::new();
            Writer::new(&mut b).write_stat(&stat);
            hex(&b)
        };
        let body = format!(
            "00000001 00 00000000 00000002 2f61 \
             0000000f 00 00000000 00000002 2f63 {stat_hex} \
             00000002 00 00000000 \
             00000005 00 00000000 {stat_hex} \
             0000000d 00 00000000 \
             ffffffff 01 ffffffff"
        )
        .replace(' ', "");
        assert_eq!(
            &got[16..],
            format!("0000000000000002 00000000{body}").replace(' ', "")
        );

        let failed = [
            MultiResult::Error(ErrorCode::Ok),
            MultiResult::Error(ErrorCode::BadVersion),
            MultiResult::Error(ErrorCode::RuntimeInconsistency),
        ];
        let got = reply(0x39, 0x2a, ErrorCode::Ok, ReplyBody::Multi(&failed));
        assert_eq!(
            got,
            "00000040 00000039 000000000000002a 00000000 \
             ffffffff 00 00000000 00000000 ffffffff 00 ffffff99 ffffff99 \
             ffffffff 00 fffffffe fffffffe ffffffff 01 ffffffff"
                .replace(' ', "")
        );
    }

    #[test]
    fn str_seqs_encode_alike() {
        let owned = vec!["a".to_string(), "bc".to_string()];
        let borrowed = ["a", "bc"];
        let shared: Vec<Arc<str>> = vec!["a".into(), "bc".into()];
        let a = reply(1, 1, ErrorCode::Ok, ReplyBody::Children(&owned));
        let b = reply(1, 1, ErrorCode::Ok, ReplyBody::Children(&borrowed));
        let slice: &[&str] = &borrowed;
        assert_eq!(b, reply(1, 1, ErrorCode::Ok, ReplyBody::Children(&slice)));
        let c = reply(1, 1, ErrorCode::Ok, ReplyBody::Paths(&shared));
        assert_eq!(a, b);
        assert_eq!(a, c);
        let want = "00000002 00000001 61 00000002 6263".replace(' ', "");
        assert!(a.ends_with(want.as_str()), "{a}");

        // A structure of the caller's own, straight from where it lives.
        struct Names(std::collections::BTreeSet<String>);
        impl StrSeq for Names {
            fn each(&self, f: &mut dyn FnMut(&str)) {
                self.0.iter().for_each(|s| f(s));
            }
        }
        let names = Names(owned.iter().cloned().collect());
        let d = reply(1, 1, ErrorCode::Ok, ReplyBody::Children(&names));
        assert_eq!(a, d);
        let empty: Vec<String> = vec![];
        let e = reply(1, 1, ErrorCode::Ok, ReplyBody::Children(&empty));
        assert!(e.ends_with("0000000000000000"), "{e}");
        assert_eq!(
            format!("{:?}", ReplyBody::Paths(&owned)),
            r#"Paths(["a", "bc"])"#
        );
        let acl = [Acl {
            perms: 1,
            id: Id::new("digest", "u:x"),
        }];
        let got = reply(
            1,
            1,
            ErrorCode::Ok,
            ReplyBody::Acl {
                acl: &acl,
                stat: Stat::default(),
            },
        );
        assert_eq!(got.len() / 2, 4 + 16 + 4 + 4 + 4 + 6 + 4 + 3 + 68);
    }

    // ---- fuzzing on stable: arbitrary and mutated input through every decoder ----

    /// Decoders must not panic; whatever decodes must re-encode to something that decodes
    /// to the same value.
    fn check_no_panic_and_round_trip(bytes: &[u8]) {
        for f in frames(bytes, DEFAULT_MAX_PACKET).flatten() {
            let _ = ConnectRequest::decode(f);
        }
        if let Ok(c) = ConnectRequest::decode(bytes) {
            let mut out = Vec::new();
            c.encode(&mut out);
            assert_eq!(ConnectRequest::decode(&out[4..]), Ok(c));
        }
        if let Ok((h, Ok(req))) = decode_request(bytes) {
            let mut out = Vec::new();
            req.encode(h.xid, &mut out);
            let (h2, back) = decode_request(&out[4..]).expect("header");
            assert_eq!(h2.xid, h.xid);
            assert_eq!(back, Ok(req));
        }
    }

    fn samples() -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = Vec::new();
        let reqs = [
            Request::Create {
                opcode: 21,
                req: CreateRequest {
                    path: "/x".into(),
                    data: Some(vec![1]),
                    acl: Acl::open_unsafe(),
                    flags: 5,
                    ttl: 9,
                },
            },
            Request::Multi(vec![
                WriteOp::Create {
                    opcode: 19,
                    req: CreateRequest {
                        path: "/c".into(),
                        data: None,
                        acl: vec![],
                        flags: 4,
                        ttl: -1,
                    },
                },
                WriteOp::Delete(DeleteRequest {
                    path: "/d".into(),
                    version: 1,
                }),
                WriteOp::SetData(SetDataRequest {
                    path: "/s".into(),
                    data: Some(vec![]),
                    version: 2,
                }),
                WriteOp::Check(CheckVersionRequest {
                    path: "/k".into(),
                    version: 3,
                }),
            ]),
            Request::MultiRead(vec![ReadOp::GetChildren { path: "/".into() }]),
            Request::SetWatches(SetWatches {
                v2: true,
                data: vec!["/a".into()],
                ..SetWatches::default()
            }),
            Request::SetAcl(SetAclRequest {
                path: "/a".into(),
                acl: Acl::open_unsafe(),
                version: 1,
            }),
            Request::Auth {
                scheme: "digest".into(),
                auth: b"a:b".to_vec(),
            },
        ];
        for r in reqs {
            let mut out = Vec::new();
            r.encode(3, &mut out);
            v.push(out[4..].to_vec());
        }
        let mut c = Vec::new();
        ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 4,
            timeout_ms: 3,
            session_id: 2,
            passwd: vec![1; 16],
            read_only: Some(true),
        }
        .encode(&mut c);
        v.push(c[4..].to_vec());
        v
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            check_no_panic_and_round_trip(&bytes);
        }

        #[test]
        fn random_bodies_after_a_known_opcode(
            op in proptest::sample::select(vec![1i32, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16,
                17, 18, 19, 21, 22, 100, 101, 102, 103, 104, 105, 106, 107, -11]),
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..120),
        ) {
            let mut bytes = vec![0, 0, 0, 1];
            bytes.extend_from_slice(&op.to_be_bytes());
            bytes.extend_from_slice(&body);
            check_no_panic_and_round_trip(&bytes);
        }

        #[test]
        fn mutated_valid_requests(
            which in 0usize..7,
            edits in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 1..4),
            cut in proptest::num::usize::ANY,
        ) {
            let mut bytes = samples()[which].clone();
            for (at, val) in edits {
                let i = at % bytes.len();
                bytes[i] = val;
            }
            check_no_panic_and_round_trip(&bytes);
            bytes.truncate(cut % (bytes.len() + 1));
            check_no_panic_and_round_trip(&bytes);
        }
    }
}
