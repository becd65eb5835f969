//! What the replicated log carries and what applying it yields.
//!
//! ringkeeper logs *commands* (a write request stamped with its session, xid, connection
//! and the leader's clock) rather than ZooKeeper's pre-validated Txns. Applying a command is
//! deterministic (`machine::Machine::apply_batch`): every member validates it against the same
//! state and reaches the same result, error results included (failed writes consume a zxid, as
//! in ZooKeeper). This removes ZooKeeper's "outstanding changes" bookkeeping in prep, which is
//! where its own ordering bugs live, at the cost of validating on every member.
//!
//! One raft entry holds one `Batch`, serialized with rkyv.

use rkyv::{Archive, Deserialize, Serialize};

use crate::proto::types::{ErrorCode, Id, SessionId, SetAclRequest, Stat, Zxid};
pub use crate::proto::types::{MultiResult, WriteOp};

/// One raft entry: everything the sequencer gathered while the previous entry was in flight.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Batch {
    /// The leader's wall clock when it sealed the batch: ctime/mtime of every node it touches,
    /// and "now" for session and TTL decisions, so that every member decides the same.
    pub time_ms: i64,
    pub commands: Vec<Command>,
}

impl Batch {
    /// Reads a raft entry's data (rkyv reads in place and needs it 16-byte aligned, which an
    /// entry's buffer is not, hence one copy).
    pub fn decode(data: &[u8]) -> Result<Batch, rkyv::rancor::Error> {
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(data.len());
        aligned.extend_from_slice(data);
        rkyv::from_bytes::<Batch, rkyv::rancor::Error>(&aligned)
    }
}

/// Routing tag of a request: which member process, shard and connection waits for it. Every
/// member applies every command, and only the one whose process sent it finds the connection.
/// Layout: instance (24 bits: member id, then 16 random bits per process start) | shard (8)
/// | connection (32; each shard starts counting at a random number, so a command of an
/// earlier process that commits late finds no connection even if the instance bits repeat).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origin(pub u64);

impl Origin {
    pub fn new(instance: u32, shard: u16, conn: u32) -> Origin {
        debug_assert!(instance < 1 << 24 && shard < 256);
        Origin(((instance as u64) << 40) | ((shard as u64 & 0xff) << 32) | conn as u64)
    }
    pub fn instance(self) -> u32 {
        (self.0 >> 40) as u32
    }
    /// The member whose process made this origin.
    pub fn member(self) -> u64 {
        u64::from(self.instance() >> 16)
    }
    pub fn shard(self) -> u16 {
        ((self.0 >> 32) & 0xff) as u16
    }
    pub fn conn(self) -> u32 {
        self.0 as u32
    }
}

/// One client request (or server-internal action) to apply.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Command {
    /// The session the request came on; 0 for server-internal commands.
    pub session: SessionId,
    /// The client's xid; with `session` it identifies a retry (idempotency).
    pub xid: i32,
    /// Unique tag of the member/shard/connection that waits for the reply: apply hands it
    /// back, and it names the connection whose identities the command refers to.
    pub origin: u64,
    /// The connection's identities (ip, digests, super), sent once: on its first write and
    /// on the first after an `addauth` that added one. Apply records them on the session
    /// (`session::Identified`) and checks every write of the connection against the record;
    /// empty means "as recorded". A reconfig carries them always (the leader decides it
    /// before logging anything). Logs written before this carry them on every command, which
    /// reads the same.
    pub auth: Vec<Id>,
    /// The newest zxid the client can have seen when it sent this: the lastZxidSeen of its
    /// ConnectRequest for the first write on a resumed connection, `Zxid::MAX` otherwise. A
    /// repeat of the session's last (xid, op) is a retry only if the client cannot have seen
    /// the original's reply (`seen_zxid` < the original's zxid); clients such as kazoo restart
    /// xids on every connection, and their fresh writes must not be mistaken for retries.
    pub seen_zxid: Zxid,
    pub op: Op,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum Op {
    /// A new session; its id is assigned at apply (deterministically, from replicated state).
    CreateSession {
        timeout_ms: i32,
        passwd: Vec<u8>,
    },
    /// closeSession from the client: its ephemerals go in this same transaction.
    CloseSession,
    /// The leader's session tracker found these sessions silent past their timeout.
    ExpireSessions {
        sessions: Vec<SessionId>,
    },
    Write(WriteOp),
    SetAcl(SetAclRequest),
    Multi(Vec<WriteOp>),
    /// The reaper's removal of an empty container or expired TTL node; re-checked at apply.
    DeleteContainer {
        path: String,
    },
    /// A write ZooKeeper rejects before prep (undecodable body, reconfig while disabled, a
    /// read op inside multi): it still consumes a zxid and gets this error.
    Fail(ErrorCode),
    /// reconfig as the client sent it. The leader turns it into `SetConfig` (logged with the
    /// raft configuration change) or `Fail` before it is logged; see `reconfig`.
    Reconfig(ReconfigOp),
    /// The ensemble's members from now on, in ZooKeeper's dynamic configuration format
    /// without the version line: /zookeeper/config gets it, with the version (this zxid).
    SetConfig {
        members: String,
    },
}

impl Op {
    /// Made by the leader itself (its expiry tracker, reaper, or reconfig decision), never
    /// by a client.
    fn is_internal(&self) -> bool {
        matches!(
            self,
            Op::ExpireSessions { .. } | Op::DeleteContainer { .. } | Op::SetConfig { .. }
        )
    }
}

impl Command {
    /// A write a client can have sent: a client operation on its session (or the creation of
    /// one). Members forward only these; a forward holding anything else is refused.
    pub fn is_client_write(&self) -> bool {
        !self.op.is_internal() && (self.session != 0 || matches!(self.op, Op::CreateSession { .. }))
    }
}

/// A reconfig request: incremental (`joining` and `leaving`, comma-separated) or the whole
/// new member list (`new_members`); `from_config` is the version it was computed from, or -1.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ReconfigOp {
    pub joining: Option<String>,
    pub leaving: Option<String>,
    pub new_members: Option<String>,
    pub from_config: i64,
}

/// The outcome of one command, as the reply will carry it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum OpResult {
    SessionCreated {
        session: SessionId,
        timeout_ms: i32,
        passwd: Vec<u8>,
    },
    SessionClosed,
    SessionsExpired,
    /// create/create2/createContainer/createTTL: the actual path and the new node's Stat.
    Created {
        path: String,
        stat: Stat,
    },
    Deleted,
    /// setData's and setACL's Stat after the change.
    Stat(Stat),
    Checked,
    /// One entry per op, in order; see `MultiResult`.
    Multi(Vec<MultiResult>),
    Error(ErrorCode),
    /// reconfig: the new /zookeeper/config data and Stat.
    Config {
        data: Vec<u8>,
        stat: Stat,
    },
}

/// Why a watch fires, as the applier reports it; the per-shard watch registry maps it to the
/// watchers that get it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trigger {
    pub path: std::sync::Arc<str>,
    pub event: crate::proto::types::EventType,
    /// The ACL of the node the event names, as of this change (ZooKeeper's `DataTree` passes
    /// the same to `triggerWatch`, ZOOKEEPER-4799): the new node's for NodeCreated, the removed
    /// node's for NodeDeleted, the node's for NodeDataChanged, the parent's for
    /// NodeChildrenChanged. Watchers that may not READ it get no event. Interned: a clone is a
    /// reference count.
    pub acl: std::sync::Arc<[crate::proto::types::Acl]>,
}

/// The result of applying one command.
#[derive(Clone, Debug)]
pub struct Applied {
    pub origin: u64,
    pub session: SessionId,
    pub xid: i32,
    pub zxid: Zxid,
    pub result: OpResult,
    /// Watch triggers in the order ZooKeeper sends their events.
    pub triggers: Vec<Trigger>,
    /// Sessions this command ended (close or expiry): their connections are closed.
    pub ended_sessions: Vec<SessionId>,
    /// True when this was a retry answered from the idempotency table (nothing applied).
    pub duplicate: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(session: SessionId, op: Op) -> Command {
        Command {
            session,
            xid: 1,
            origin: 0,
            auth: vec![],
            seen_zxid: Zxid::MAX,
            op,
        }
    }

    #[test]
    fn only_clients_writes_can_be_forwarded() {
        let internal = [
            Op::ExpireSessions { sessions: vec![1] },
            Op::DeleteContainer { path: "/c".into() },
            Op::SetConfig {
                members: "server.1=a:1:2:participant;3".into(),
            },
        ];
        for op in internal {
            assert!(!command(7, op.clone()).is_client_write(), "{op:?}");
            assert!(!command(0, op.clone()).is_client_write(), "{op:?}");
        }
        let client = [
            Op::CloseSession,
            Op::Fail(ErrorCode::Unimplemented),
            Op::Reconfig(ReconfigOp {
                joining: None,
                leaving: Some("2".into()),
                new_members: None,
                from_config: -1,
            }),
        ];
        for op in client {
            assert!(command(7, op.clone()).is_client_write(), "{op:?}");
            assert!(
                !command(0, op.clone()).is_client_write(),
                "sessionless {op:?}"
            );
        }
        let create = Op::CreateSession {
            timeout_ms: 4000,
            passwd: vec![0; 16],
        };
        assert!(
            command(0, create).is_client_write(),
            "a new session has none yet"
        );
    }
}
