//! Transaction log files (`log.<zxid>`), as ZooKeeper 3.8's `FileTxnLog` writes them:
//!
//! ```text
//! FileHeader      magic "ZKLG", version 2, dbid (long)
//! records         Adler-32 of the payload (long), payload length (int), payload, 'B'
//! payload         TxnHeader, the txn record its type selects, then (3.6+) a TxnDigest
//! ```
//!
//! Files are preallocated with zeros, so a zero length is the end of the log. A crash can
//! leave the last record half written; ZooKeeper treats a cut-short record as the end of that
//! file. We do the same for any unreadable record *after which nothing intact follows*, and
//! call an unreadable record followed by an intact one what it is: corruption.

use crate::proto::jute::{DecodeError, Reader, MAX_VECTOR_LEN};
use crate::proto::types::{opcode, Acl};

use super::{adler32, FormatError, FormatReason, FILE_VERSION, LOG_MAGIC};

/// Bytes in a log's FileHeader.
const HEADER_LEN: usize = 16;
/// Checksum (8) and length (4) in front of each payload.
const RECORD_PREFIX: usize = 12;
/// The byte ZooKeeper writes after each payload.
const END_OF_RECORD: u8 = b'B';

/// One logged transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZkTxn {
    /// Where the record (its checksum) starts in the file.
    pub offset: u64,
    /// The session that issued it.
    pub client_id: i64,
    pub cxid: i32,
    pub zxid: i64,
    /// Milliseconds since the epoch, as the leader stamped it (becomes ctime/mtime).
    pub time: i64,
    /// The opcode in the TxnHeader (`create` and `create2` share a body, for instance).
    pub txn_type: i32,
    pub body: TxnBody,
    pub digest: Option<TxnDigest>,
}

/// The record after a TxnHeader, by type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnBody {
    /// create (1) and create2 (15); a pre-3.3 `CreateTxnV0` reads as one with parentCVersion −1.
    Create(CreateTxn),
    /// createContainer (19); `ephemeral` is always false.
    CreateContainer(CreateTxn),
    /// createTTL (21); `ephemeral` is always false.
    CreateTtl {
        create: CreateTxn,
        ttl: i64,
    },
    /// delete (2) and deleteContainer (20).
    Delete {
        path: String,
    },
    /// setData (5) and reconfig (16, which sets /zookeeper/config).
    SetData {
        path: String,
        data: Option<Vec<u8>>,
        version: i32,
    },
    SetAcl {
        path: String,
        acl: Option<Vec<Acl>>,
        version: i32,
    },
    /// check (13), only inside a multi.
    Check {
        path: String,
        version: i32,
    },
    CreateSession {
        timeout_ms: i32,
    },
    /// closeSession (−11): the ephemerals to delete (`None` when the record has no body, as
    /// before 3.6).
    CloseSession {
        paths: Option<Vec<String>>,
    },
    /// error (−1): a failed request, logged to consume its zxid.
    Error {
        err: i32,
    },
    Multi(Vec<MultiOp>),
}

/// CreateTxn and its container/TTL variants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateTxn {
    pub path: String,
    pub data: Option<Vec<u8>>,
    /// Null (`None`) becomes the open ACL; an empty list stays empty.
    pub acl: Option<Vec<Acl>>,
    pub ephemeral: bool,
    /// The parent's stored cversion after this create (−1: compute it on apply).
    pub parent_cversion: i32,
}

/// One operation of a multi txn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultiOp {
    pub txn_type: i32,
    /// `None` when ZooKeeper 3.8 could not apply it inside a multi (an unsupported type, or
    /// bytes that do not decode): applying the multi stops there, as in `DataTree`.
    pub body: Option<TxnBody>,
}

/// The tree digest a 3.6+ server logs after each txn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnDigest {
    pub version: i32,
    pub tree_digest: i64,
}

/// Why a record could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordProblem {
    #[error("record prefix cut off ({0} bytes left)")]
    Short(usize),
    #[error("record length {0}")]
    BadLength(i32),
    #[error("record of {len} bytes runs past the end of the file ({remaining} bytes left)")]
    PastEnd { len: usize, remaining: usize },
    #[error("record not terminated by 'B' (found {0:#04x})")]
    NoEndMarker(u8),
    #[error("record checksum mismatch: stored {stored:#x}, computed {computed:#x}")]
    Checksum { stored: u64, computed: u64 },
}

/// How a log file ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogEnd {
    /// Right after the last record.
    Eof,
    /// Zeros from `offset` on: space ZooKeeper preallocated and never wrote.
    Padding { offset: u64 },
    /// A record a crash cut short at `offset`, with nothing intact after it.
    Torn { offset: u64, problem: RecordProblem },
}

/// A log file's contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedTxnLog {
    /// `None` for an empty file (a crash right after creating it; ZooKeeper deletes those).
    pub dbid: Option<i64>,
    pub txns: Vec<ZkTxn>,
    pub end: LogEnd,
}

/// The txns of one log file, in order. Stops cleanly at the zero-filled preallocated tail or
/// a torn last record; see [`parse_txn_log_full`] to learn which.
pub fn parse_txn_log(bytes: &[u8]) -> Result<Vec<ZkTxn>, FormatError> {
    parse_txn_log_full(bytes).map(|log| log.txns)
}

/// Parses a log file, reporting how it ends.
pub fn parse_txn_log_full(bytes: &[u8]) -> Result<ParsedTxnLog, FormatError> {
    if bytes.is_empty() {
        return Ok(ParsedTxnLog {
            dbid: None,
            txns: Vec::new(),
            end: LogEnd::Eof,
        });
    }
    let mut r = Reader::new(bytes);
    let header = |e| FormatError::new(0, e);
    let magic = r.read_i32().map_err(header)?;
    if magic != LOG_MAGIC {
        let reason = FormatReason::BadMagic {
            expected: "ZKLG",
            found: magic,
        };
        return Err(FormatError::new(0, reason));
    }
    let version = r.read_i32().map_err(header)?;
    if version != FILE_VERSION {
        return Err(FormatError::new(4, FormatReason::BadVersion(version)));
    }
    let dbid = r.read_i64().map_err(header)?;

    let mut txns = Vec::new();
    let mut pos = HEADER_LEN;
    let end = loop {
        if pos == bytes.len() {
            break LogEnd::Eof;
        }
        match check_record(bytes, pos) {
            Ok((payload, next)) => {
                let txn = decode_txn(pos as u64, payload)
                    .map_err(|reason| FormatError::new(pos, reason))?;
                txns.push(txn);
                pos = next;
            }
            Err(problem) => {
                if let Some(next_intact) = next_intact_record(bytes, pos + 1) {
                    let reason = FormatReason::CorruptRecord {
                        problem,
                        next_intact: next_intact as u64,
                    };
                    return Err(FormatError::new(pos, reason));
                }
                let rest = bytes.get(pos..).unwrap_or_default();
                break if rest.iter().all(|&b| b == 0) {
                    LogEnd::Padding { offset: pos as u64 }
                } else {
                    LogEnd::Torn {
                        offset: pos as u64,
                        problem,
                    }
                };
            }
        }
    };
    Ok(ParsedTxnLog {
        dbid: Some(dbid),
        txns,
        end,
    })
}

/// The payload of the intact record at `pos` and where the next one starts.
fn check_record(bytes: &[u8], pos: usize) -> Result<(&[u8], usize), RecordProblem> {
    let rest = bytes.get(pos..).unwrap_or_default();
    let (Some(crc), Some(len)) = (rest.get(..8), rest.get(8..RECORD_PREFIX)) else {
        return Err(RecordProblem::Short(rest.len()));
    };
    let stored = u64::from_be_bytes(crc.try_into().unwrap_or_default());
    let len = i32::from_be_bytes(len.try_into().unwrap_or_default());
    // a zero length is the preallocated tail (Util.readTxnBytes); negative ones are garbage
    let Some(n) = usize::try_from(len).ok().filter(|&n| n > 0) else {
        return Err(RecordProblem::BadLength(len));
    };
    let remaining = rest.len() - RECORD_PREFIX;
    let Some(payload) = rest.get(RECORD_PREFIX..RECORD_PREFIX + n) else {
        return Err(RecordProblem::PastEnd { len: n, remaining });
    };
    match rest.get(RECORD_PREFIX + n) {
        None => return Err(RecordProblem::PastEnd { len: n, remaining }),
        Some(&END_OF_RECORD) => {}
        Some(&other) => return Err(RecordProblem::NoEndMarker(other)),
    }
    let computed = u64::from(adler32(payload));
    if stored != computed {
        return Err(RecordProblem::Checksum { stored, computed });
    }
    Ok((payload, pos + RECORD_PREFIX + n + 1))
}

/// The first offset at or after `from` where an intact record starts. A torn tail has none
/// (zeros and half-written bytes never pass the length, end-marker and checksum tests
/// together); damage in the middle of a log does. Linear in practice: almost every offset
/// fails on its length or end marker before any checksum is computed.
fn next_intact_record(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len().saturating_sub(RECORD_PREFIX)).find(|&pos| check_record(bytes, pos).is_ok())
}

/// True when a decode failed for lack of bytes: Java's EOFException, which ZooKeeper treats
/// as "an older, shorter record" in a few places.
fn is_eof(e: &DecodeError) -> bool {
    matches!(
        e,
        DecodeError::Truncated { .. } | DecodeError::LengthTooLong { .. }
    )
}

fn decode_txn(offset: u64, payload: &[u8]) -> Result<ZkTxn, FormatReason> {
    let mut r = Reader::new(payload);
    let client_id = r.read_i64()?;
    let cxid = r.read_i32()?;
    let zxid = r.read_i64()?;
    let time = r.read_i64()?;
    let txn_type = r.read_i32()?;
    let body_start = r.clone();
    let body = match txn_type {
        opcode::CREATE_SESSION => TxnBody::CreateSession {
            timeout_ms: r.read_i32()?,
        },
        opcode::CLOSE_SESSION => match r.read_string_vec() {
            Ok(paths) => TxnBody::CloseSession { paths: Some(paths) },
            // before 3.6 a closeSession had no body (SerializeUtils tolerates the EOF)
            Err(_) => {
                r = Reader::new(&[]);
                TxnBody::CloseSession { paths: None }
            }
        },
        opcode::CREATE | opcode::CREATE2 => match read_create(&mut r, true) {
            Ok(c) => TxnBody::Create(c),
            // a CreateTxnV0 (no parentCVersion) runs out of bytes; SerializeUtils retries
            Err(e) if txn_type == opcode::CREATE && is_eof(&e) => {
                r = body_start;
                TxnBody::Create(read_create_v0(&mut r)?)
            }
            Err(e) => return Err(e.into()),
        },
        other => decode_body(other, &mut r)?.ok_or(FormatReason::UnknownTxnType(other))?,
    };
    // ZooKeeper reads a digest when enough bytes follow, and ignores anything after it
    let digest = if r.remaining() >= 12 {
        Some(TxnDigest {
            version: r.read_i32()?,
            tree_digest: r.read_i64()?,
        })
    } else {
        None
    };
    Ok(ZkTxn {
        offset,
        client_id,
        cxid,
        zxid,
        time,
        txn_type,
        body,
        digest,
    })
}

/// The bodies shared by top-level txns and multi operations; `None` for another type.
fn decode_body(txn_type: i32, r: &mut Reader<'_>) -> Result<Option<TxnBody>, DecodeError> {
    Ok(Some(match txn_type {
        opcode::CREATE_CONTAINER => TxnBody::CreateContainer(read_create(r, false)?),
        opcode::CREATE_TTL => {
            let create = read_create(r, false)?;
            TxnBody::CreateTtl {
                create,
                ttl: r.read_i64()?,
            }
        }
        opcode::DELETE | opcode::DELETE_CONTAINER => TxnBody::Delete {
            path: r.read_string()?,
        },
        opcode::SET_DATA | opcode::RECONFIG => TxnBody::SetData {
            path: r.read_string()?,
            data: r.read_buffer()?.map(<[u8]>::to_vec),
            version: r.read_i32()?,
        },
        opcode::SET_ACL => TxnBody::SetAcl {
            path: r.read_string()?,
            acl: read_opt_acl_vec(r)?,
            version: r.read_i32()?,
        },
        opcode::ERROR => TxnBody::Error { err: r.read_i32()? },
        opcode::MULTI => {
            let ops = r.read_vec(MAX_VECTOR_LEN, |r| {
                let txn_type = r.read_i32()?;
                let data = r.read_buffer()?;
                Ok(MultiOp {
                    txn_type,
                    body: data.and_then(|d| decode_multi_op(txn_type, d)),
                })
            })?;
            TxnBody::Multi(ops)
        }
        _ => return Ok(None),
    }))
}

/// A multi operation's record, with exactly the types 3.8's `DataTree.processTxn` accepts
/// inside a multi (create2 and setACL, for instance, are not among them).
fn decode_multi_op(txn_type: i32, data: &[u8]) -> Option<TxnBody> {
    let mut r = Reader::new(data);
    match txn_type {
        opcode::CREATE => read_create(&mut r, true).ok().map(TxnBody::Create),
        opcode::CHECK => Some(TxnBody::Check {
            path: r.read_string().ok()?,
            version: r.read_i32().ok()?,
        }),
        opcode::CREATE_CONTAINER
        | opcode::CREATE_TTL
        | opcode::DELETE
        | opcode::DELETE_CONTAINER
        | opcode::SET_DATA
        | opcode::ERROR => decode_body(txn_type, &mut r).ok().flatten(),
        _ => None,
    }
}

/// CreateTxn (`with_ephemeral`) or the common prefix of CreateContainerTxn / CreateTTLTxn.
fn read_create(r: &mut Reader<'_>, with_ephemeral: bool) -> Result<CreateTxn, DecodeError> {
    let path = r.read_string()?;
    let data = r.read_buffer()?.map(<[u8]>::to_vec);
    let acl = read_opt_acl_vec(r)?;
    let ephemeral = if with_ephemeral {
        r.read_bool()?
    } else {
        false
    };
    Ok(CreateTxn {
        path,
        data,
        acl,
        ephemeral,
        parent_cversion: r.read_i32()?,
    })
}

fn read_create_v0(r: &mut Reader<'_>) -> Result<CreateTxn, DecodeError> {
    Ok(CreateTxn {
        path: r.read_string()?,
        data: r.read_buffer()?.map(<[u8]>::to_vec),
        acl: read_opt_acl_vec(r)?,
        ephemeral: r.read_bool()?,
        parent_cversion: -1,
    })
}

/// `vector<ACL>` keeping null (−1, which ZooKeeper turns into the open ACL) apart from empty.
fn read_opt_acl_vec(r: &mut Reader<'_>) -> Result<Option<Vec<Acl>>, DecodeError> {
    let mut probe = r.clone();
    if probe.read_i32()? == -1 {
        *r = probe;
        return Ok(None);
    }
    r.read_acl_vec().map(Some)
}
