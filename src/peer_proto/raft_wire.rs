//! raft messages on the wire, without the `protobuf` 2.x crate (RUSTSEC-2024-0437: its
//! decoder recurses without bound on nested input).
//!
//! The structs below mirror raft-rs's `eraftpb.proto` (raft-proto 0.7) field for field, with the
//! same field numbers and in the same order, and are encoded and decoded by `prost`: the bytes
//! are the ones raft-rs's own protobuf encoding produces (the tests compare them), so members
//! built before and after this change understand each other, and configuration changes written
//! to the log by raft-rs still decode. Repeated integers are written unpacked, as `protobuf`
//! 2.x writes them (both forms are read).
//!
//! Everything a peer sends passes through [`decode`]: prost decoding, then the structural checks
//! that need no state ([`check`]: message types a member may send, bounded terms, contiguous
//! entries, consistent snapshot metadata) and the decoding of every entry's payload
//! ([`check_entry_data`]). What depends on this member's state (who leads, at which term) is
//! checked by `consensus::Consensus::step` (`crate::raft_guard`). No I/O here.

use std::fmt;

use prost::bytes::Bytes;
use prost::Message as _;
use raft::eraftpb;

use crate::txn::Batch;

/// The highest raft term a peer may name. The term is the zxid's epoch (`machine.rs`, "zxid at
/// apply" in ARCHITECTURE.md): zxid = epoch << 32 | counter, with the sign bit clear, so a
/// term above `i32::MAX` cannot be a zxid epoch. No ensemble reaches 2^31 elections; a term
/// near `u64::MAX` makes raft-rs overflow its term when it campaigns (and panic, on every
/// member, at every restart, since the term is persisted).
pub const MAX_TERM: u64 = i32::MAX as u64;

/// The highest log index a peer may name. No log reaches 2^63 entries; raft-rs adds to indexes
/// (the next index, the index after a snapshot) without checking for overflow.
pub const MAX_INDEX: u64 = i64::MAX as u64;

/// The vote context raft-rs uses for an election after a leader transfer (it lets the vote
/// bypass the leader lease).
pub const CAMPAIGN_TRANSFER: &[u8] = b"CampaignTransfer";

/// Why a raft message from a peer was not stepped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

fn refuse<T>(reason: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(reason.into()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum EntryType {
    EntryNormal = 0,
    EntryConfChange = 1,
    EntryConfChangeV2 = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MessageType {
    MsgHup = 0,
    MsgBeat = 1,
    MsgPropose = 2,
    MsgAppend = 3,
    MsgAppendResponse = 4,
    MsgRequestVote = 5,
    MsgRequestVoteResponse = 6,
    MsgSnapshot = 7,
    MsgHeartbeat = 8,
    MsgHeartbeatResponse = 9,
    MsgUnreachable = 10,
    MsgSnapStatus = 11,
    MsgCheckQuorum = 12,
    MsgTransferLeader = 13,
    MsgTimeoutNow = 14,
    MsgReadIndex = 15,
    MsgReadIndexResp = 16,
    MsgRequestPreVote = 17,
    MsgRequestPreVoteResponse = 18,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ConfChangeTransition {
    Auto = 0,
    Implicit = 1,
    Explicit = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ConfChangeType {
    AddNode = 0,
    RemoveNode = 1,
    AddLearnerNode = 2,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Entry {
    #[prost(enumeration = "EntryType", tag = "1")]
    pub entry_type: i32,
    #[prost(uint64, tag = "2")]
    pub term: u64,
    #[prost(uint64, tag = "3")]
    pub index: u64,
    #[prost(bytes = "bytes", tag = "4")]
    pub data: Bytes,
    #[prost(bytes = "bytes", tag = "6")]
    pub context: Bytes,
    #[prost(bool, tag = "5")]
    pub sync_log: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotMetadata {
    #[prost(message, optional, tag = "1")]
    pub conf_state: Option<ConfState>,
    #[prost(uint64, tag = "2")]
    pub index: u64,
    #[prost(uint64, tag = "3")]
    pub term: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Snapshot {
    #[prost(bytes = "bytes", tag = "1")]
    pub data: Bytes,
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<SnapshotMetadata>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Message {
    #[prost(enumeration = "MessageType", tag = "1")]
    pub msg_type: i32,
    #[prost(uint64, tag = "2")]
    pub to: u64,
    #[prost(uint64, tag = "3")]
    pub from: u64,
    #[prost(uint64, tag = "4")]
    pub term: u64,
    #[prost(uint64, tag = "5")]
    pub log_term: u64,
    #[prost(uint64, tag = "6")]
    pub index: u64,
    #[prost(message, repeated, tag = "7")]
    pub entries: Vec<Entry>,
    #[prost(uint64, tag = "8")]
    pub commit: u64,
    #[prost(uint64, tag = "15")]
    pub commit_term: u64,
    #[prost(message, optional, tag = "9")]
    pub snapshot: Option<Snapshot>,
    #[prost(uint64, tag = "13")]
    pub request_snapshot: u64,
    #[prost(bool, tag = "10")]
    pub reject: bool,
    #[prost(uint64, tag = "11")]
    pub reject_hint: u64,
    #[prost(bytes = "bytes", tag = "12")]
    pub context: Bytes,
    #[prost(uint64, tag = "14")]
    pub deprecated_priority: u64,
    #[prost(int64, tag = "16")]
    pub priority: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ConfState {
    #[prost(uint64, repeated, packed = "false", tag = "1")]
    pub voters: Vec<u64>,
    #[prost(uint64, repeated, packed = "false", tag = "2")]
    pub learners: Vec<u64>,
    #[prost(uint64, repeated, packed = "false", tag = "3")]
    pub voters_outgoing: Vec<u64>,
    #[prost(uint64, repeated, packed = "false", tag = "4")]
    pub learners_next: Vec<u64>,
    #[prost(bool, tag = "5")]
    pub auto_leave: bool,
}

/// raft's V1 change, for completeness: ringkeeper never writes one, and refuses entries that
/// carry one. prost writes `id` (tag 1) first where `protobuf` writes it last; decoding does
/// not care.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ConfChange {
    #[prost(enumeration = "ConfChangeType", tag = "2")]
    pub change_type: i32,
    #[prost(uint64, tag = "3")]
    pub node_id: u64,
    #[prost(bytes = "bytes", tag = "4")]
    pub context: Bytes,
    #[prost(uint64, tag = "1")]
    pub id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ConfChangeSingle {
    #[prost(enumeration = "ConfChangeType", tag = "1")]
    pub change_type: i32,
    #[prost(uint64, tag = "2")]
    pub node_id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ConfChangeV2 {
    #[prost(enumeration = "ConfChangeTransition", tag = "1")]
    pub transition: i32,
    #[prost(message, repeated, tag = "2")]
    pub changes: Vec<ConfChangeSingle>,
    #[prost(bytes = "bytes", tag = "3")]
    pub context: Bytes,
}

// ---- conversions to and from raft-rs's types ----

fn entry_type(v: i32) -> Result<eraftpb::EntryType, Refusal> {
    Ok(match EntryType::try_from(v) {
        Ok(EntryType::EntryNormal) => eraftpb::EntryType::EntryNormal,
        Ok(EntryType::EntryConfChange) => eraftpb::EntryType::EntryConfChange,
        Ok(EntryType::EntryConfChangeV2) => eraftpb::EntryType::EntryConfChangeV2,
        Err(_) => return refuse(format!("unknown entry type {v}")),
    })
}

fn message_type(v: i32) -> Result<eraftpb::MessageType, Refusal> {
    use eraftpb::MessageType as R;
    use MessageType as W;
    let Ok(t) = W::try_from(v) else {
        return refuse(format!("unknown message type {v}"));
    };
    Ok(match t {
        W::MsgHup => R::MsgHup,
        W::MsgBeat => R::MsgBeat,
        W::MsgPropose => R::MsgPropose,
        W::MsgAppend => R::MsgAppend,
        W::MsgAppendResponse => R::MsgAppendResponse,
        W::MsgRequestVote => R::MsgRequestVote,
        W::MsgRequestVoteResponse => R::MsgRequestVoteResponse,
        W::MsgSnapshot => R::MsgSnapshot,
        W::MsgHeartbeat => R::MsgHeartbeat,
        W::MsgHeartbeatResponse => R::MsgHeartbeatResponse,
        W::MsgUnreachable => R::MsgUnreachable,
        W::MsgSnapStatus => R::MsgSnapStatus,
        W::MsgCheckQuorum => R::MsgCheckQuorum,
        W::MsgTransferLeader => R::MsgTransferLeader,
        W::MsgTimeoutNow => R::MsgTimeoutNow,
        W::MsgReadIndex => R::MsgReadIndex,
        W::MsgReadIndexResp => R::MsgReadIndexResp,
        W::MsgRequestPreVote => R::MsgRequestPreVote,
        W::MsgRequestPreVoteResponse => R::MsgRequestPreVoteResponse,
    })
}

fn transition(v: i32) -> Result<eraftpb::ConfChangeTransition, Refusal> {
    Ok(match ConfChangeTransition::try_from(v) {
        Ok(ConfChangeTransition::Auto) => eraftpb::ConfChangeTransition::Auto,
        Ok(ConfChangeTransition::Implicit) => eraftpb::ConfChangeTransition::Implicit,
        Ok(ConfChangeTransition::Explicit) => eraftpb::ConfChangeTransition::Explicit,
        Err(_) => return refuse(format!("unknown configuration change transition {v}")),
    })
}

fn change_type(v: i32) -> Result<eraftpb::ConfChangeType, Refusal> {
    Ok(match ConfChangeType::try_from(v) {
        Ok(ConfChangeType::AddNode) => eraftpb::ConfChangeType::AddNode,
        Ok(ConfChangeType::RemoveNode) => eraftpb::ConfChangeType::RemoveNode,
        Ok(ConfChangeType::AddLearnerNode) => eraftpb::ConfChangeType::AddLearnerNode,
        Err(_) => return refuse(format!("unknown configuration change type {v}")),
    })
}

impl From<&eraftpb::Entry> for Entry {
    fn from(e: &eraftpb::Entry) -> Entry {
        Entry {
            entry_type: e.entry_type as i32,
            term: e.term,
            index: e.index,
            data: e.data.clone(),
            context: e.context.clone(),
            sync_log: e.sync_log,
        }
    }
}

impl TryFrom<Entry> for eraftpb::Entry {
    type Error = Refusal;
    fn try_from(e: Entry) -> Result<eraftpb::Entry, Refusal> {
        Ok(eraftpb::Entry {
            entry_type: entry_type(e.entry_type)?,
            term: e.term,
            index: e.index,
            data: e.data,
            context: e.context,
            sync_log: e.sync_log,
            ..Default::default()
        })
    }
}

impl From<&eraftpb::ConfState> for ConfState {
    fn from(c: &eraftpb::ConfState) -> ConfState {
        ConfState {
            voters: c.voters.clone(),
            learners: c.learners.clone(),
            voters_outgoing: c.voters_outgoing.clone(),
            learners_next: c.learners_next.clone(),
            auto_leave: c.auto_leave,
        }
    }
}

impl From<ConfState> for eraftpb::ConfState {
    fn from(c: ConfState) -> eraftpb::ConfState {
        eraftpb::ConfState {
            voters: c.voters,
            learners: c.learners,
            voters_outgoing: c.voters_outgoing,
            learners_next: c.learners_next,
            auto_leave: c.auto_leave,
            ..Default::default()
        }
    }
}

impl From<&eraftpb::Snapshot> for Snapshot {
    fn from(s: &eraftpb::Snapshot) -> Snapshot {
        Snapshot {
            data: s.data.clone(),
            metadata: s.metadata.as_ref().map(|m| SnapshotMetadata {
                conf_state: m.conf_state.as_ref().map(ConfState::from),
                index: m.index,
                term: m.term,
            }),
        }
    }
}

impl From<Snapshot> for eraftpb::Snapshot {
    fn from(s: Snapshot) -> eraftpb::Snapshot {
        let mut snap = eraftpb::Snapshot {
            data: s.data,
            ..Default::default()
        };
        if let Some(m) = s.metadata {
            let mut meta = eraftpb::SnapshotMetadata {
                index: m.index,
                term: m.term,
                ..Default::default()
            };
            if let Some(cs) = m.conf_state {
                meta.set_conf_state(cs.into());
            }
            snap.set_metadata(meta);
        }
        snap
    }
}

impl From<&eraftpb::Message> for Message {
    fn from(m: &eraftpb::Message) -> Message {
        Message {
            msg_type: m.msg_type as i32,
            to: m.to,
            from: m.from,
            term: m.term,
            log_term: m.log_term,
            index: m.index,
            entries: m.entries.iter().map(Entry::from).collect(),
            commit: m.commit,
            commit_term: m.commit_term,
            snapshot: m.snapshot.as_ref().map(Snapshot::from),
            request_snapshot: m.request_snapshot,
            reject: m.reject,
            reject_hint: m.reject_hint,
            context: m.context.clone(),
            deprecated_priority: m.deprecated_priority,
            priority: m.priority,
        }
    }
}

impl TryFrom<Message> for eraftpb::Message {
    type Error = Refusal;
    fn try_from(m: Message) -> Result<eraftpb::Message, Refusal> {
        let entries = m
            .entries
            .into_iter()
            .map(eraftpb::Entry::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = eraftpb::Message {
            msg_type: message_type(m.msg_type)?,
            to: m.to,
            from: m.from,
            term: m.term,
            log_term: m.log_term,
            index: m.index,
            entries: entries.into(),
            commit: m.commit,
            commit_term: m.commit_term,
            request_snapshot: m.request_snapshot,
            reject: m.reject,
            reject_hint: m.reject_hint,
            context: m.context,
            deprecated_priority: m.deprecated_priority,
            priority: m.priority,
            ..Default::default()
        };
        if let Some(s) = m.snapshot {
            out.set_snapshot(s.into());
        }
        Ok(out)
    }
}

impl From<&eraftpb::ConfChangeV2> for ConfChangeV2 {
    fn from(c: &eraftpb::ConfChangeV2) -> ConfChangeV2 {
        ConfChangeV2 {
            transition: c.transition as i32,
            changes: c
                .changes
                .iter()
                .map(|s| ConfChangeSingle {
                    change_type: s.change_type as i32,
                    node_id: s.node_id,
                })
                .collect(),
            context: c.context.clone(),
        }
    }
}

impl TryFrom<ConfChangeV2> for eraftpb::ConfChangeV2 {
    type Error = Refusal;
    fn try_from(c: ConfChangeV2) -> Result<eraftpb::ConfChangeV2, Refusal> {
        let changes = c
            .changes
            .into_iter()
            .map(|s| {
                Ok(eraftpb::ConfChangeSingle {
                    change_type: change_type(s.change_type)?,
                    node_id: s.node_id,
                    ..Default::default()
                })
            })
            .collect::<Result<Vec<_>, Refusal>>()?;
        Ok(eraftpb::ConfChangeV2 {
            transition: transition(c.transition)?,
            changes: changes.into(),
            context: c.context,
            ..Default::default()
        })
    }
}

// ---- encoding and decoding ----

/// Appends the protobuf encoding of `m`: the bytes raft-rs's own (`protobuf` 2.x) encoding
/// gives. prost writes fields in tag order, `protobuf` in declaration order, which differ for
/// `Message` (`commit_term`, 15, follows `commit`) and `Entry` (`context`, 6, precedes
/// `sync_log`), so those two are written here field by field; the messages inside them
/// (snapshot, metadata, conf state) declare their fields in tag order.
pub fn encode(m: &eraftpb::Message, out: &mut Vec<u8>) {
    let wire = Message::from(m);
    out.reserve(wire.encoded_len());
    write_message(&wire, out);
}

fn write_message(m: &Message, out: &mut Vec<u8>) {
    use prost::encoding::{self as enc, WireType};
    if m.msg_type != 0 {
        enc::int32::encode(1, &m.msg_type, out);
    }
    put_u64(2, m.to, out);
    put_u64(3, m.from, out);
    put_u64(4, m.term, out);
    put_u64(5, m.log_term, out);
    put_u64(6, m.index, out);
    for e in &m.entries {
        enc::encode_key(7, WireType::LengthDelimited, out);
        enc::encode_varint(e.encoded_len() as u64, out);
        write_entry(e, out);
    }
    put_u64(8, m.commit, out);
    put_u64(15, m.commit_term, out);
    if let Some(s) = &m.snapshot {
        enc::message::encode(9, s, out);
    }
    put_u64(13, m.request_snapshot, out);
    if m.reject {
        enc::bool::encode(10, &m.reject, out);
    }
    put_u64(11, m.reject_hint, out);
    put_bytes(12, &m.context, out);
    put_u64(14, m.deprecated_priority, out);
    if m.priority != 0 {
        enc::int64::encode(16, &m.priority, out);
    }
}

fn write_entry(e: &Entry, out: &mut Vec<u8>) {
    use prost::encoding as enc;
    if e.entry_type != 0 {
        enc::int32::encode(1, &e.entry_type, out);
    }
    put_u64(2, e.term, out);
    put_u64(3, e.index, out);
    put_bytes(4, &e.data, out);
    put_bytes(6, &e.context, out);
    if e.sync_log {
        enc::bool::encode(5, &e.sync_log, out);
    }
}

fn put_u64(tag: u32, v: u64, out: &mut Vec<u8>) {
    if v != 0 {
        prost::encoding::uint64::encode(tag, &v, out);
    }
}

fn put_bytes(tag: u32, v: &Bytes, out: &mut Vec<u8>) {
    if !v.is_empty() {
        prost::encoding::bytes::encode(tag, v, out);
    }
}

/// Decodes a raft message from a peer and checks everything that needs no state: see
/// [`check`] and [`check_entry_data`]. The caller still passes it to `Consensus::step`, which
/// checks it against this member's state.
pub fn decode(bytes: &[u8]) -> Result<eraftpb::Message, Refusal> {
    let wire = Message::decode(bytes).or_else(|e| refuse(format!("does not decode: {e}")))?;
    let m = eraftpb::Message::try_from(wire)?;
    check(&m)?;
    check_entry_data(&m)?;
    Ok(m)
}

/// The protobuf encoding of a configuration change (what raft-rs writes in the entry).
pub fn encode_conf_change(cc: &eraftpb::ConfChangeV2) -> Vec<u8> {
    ConfChangeV2::from(cc).encode_to_vec()
}

/// Decodes the data of an `EntryConfChangeV2` entry.
pub fn decode_conf_change(bytes: &[u8]) -> Result<eraftpb::ConfChangeV2, Refusal> {
    let wire = ConfChangeV2::decode(bytes).or_else(|e| refuse(format!("does not decode: {e}")))?;
    eraftpb::ConfChangeV2::try_from(wire)
}

// ---- structural checks ----

/// Checks what a raft message from a peer must satisfy whatever this member's state:
///
/// - its type is one a member sends to another: appends, heartbeats, (pre-)votes, snapshots
///   and their answers, `MsgTimeoutNow` (a leader transfer) and ReadIndex (`sync`). Never
///   the local ones (MsgHup, MsgBeat, MsgUnreachable, MsgSnapStatus, MsgCheckQuorum), nor
///   MsgPropose (a follower forwards writes itself, as `Forward` frames, and `Consensus`
///   proposes only on the leader, so raft-rs never forwards a proposal) nor MsgTransferLeader
///   (`Consensus` asks for a transfer only on the leader, where raft-rs handles it locally);
/// - sender and receiver are named and differ; the term is set (ReadIndex excepted: raft-rs
///   forwards it with none) and at most [`MAX_TERM`]; no term it names is above the message's;
/// - entries only where raft carries them: an append's entries follow its index one by one
///   (entry i at `index + 1 + i`) with terms that never go down and are at least `log_term`;
///   a ReadIndex request or answer carries exactly one (the request's context);
/// - a snapshot message carries metadata (index, term at most the message's, a configuration
///   raft-rs can restore) and no data (ringkeeper streams the state on its own connection);
/// - fields ringkeeper never uses are empty: priorities, snapshot requests, entry contexts;
///   vote context only `CampaignTransfer` on a vote (raft-rs sends none on pre-votes).
pub fn check(m: &eraftpb::Message) -> Result<(), Refusal> {
    use eraftpb::MessageType as T;
    let t = m.msg_type;
    match t {
        T::MsgAppend
        | T::MsgAppendResponse
        | T::MsgRequestVote
        | T::MsgRequestVoteResponse
        | T::MsgSnapshot
        | T::MsgHeartbeat
        | T::MsgHeartbeatResponse
        | T::MsgTimeoutNow
        | T::MsgReadIndex
        | T::MsgReadIndexResp
        | T::MsgRequestPreVote
        | T::MsgRequestPreVoteResponse => {}
        T::MsgHup
        | T::MsgBeat
        | T::MsgPropose
        | T::MsgUnreachable
        | T::MsgSnapStatus
        | T::MsgCheckQuorum
        | T::MsgTransferLeader => return refuse(format!("{t:?} is not sent between members")),
    }
    if m.from == 0 || m.to == 0 || m.from == m.to {
        return refuse(format!("{t:?} from {} to {}", m.from, m.to));
    }
    if t == T::MsgReadIndex {
        if m.term != 0 {
            return refuse(format!("MsgReadIndex with term {}", m.term));
        }
    } else if m.term == 0 {
        // raft-rs takes a message without a term for a local one.
        return refuse(format!("{t:?} without a term"));
    }
    if m.term > MAX_TERM {
        return refuse(format!("{t:?} at term {} (above {MAX_TERM})", m.term));
    }
    let snapshot_index = m.snapshot.as_ref().map_or(0, |s| s.get_metadata().index);
    let highest_index = [m.index, m.commit, m.reject_hint, snapshot_index]
        .into_iter()
        .chain(m.entries.iter().map(|e| e.index))
        .max()
        .unwrap_or(0);
    if highest_index > MAX_INDEX {
        return refuse(format!(
            "{t:?} names index {highest_index} (above {MAX_INDEX})"
        ));
    }
    if t != T::MsgReadIndex && (m.log_term > m.term || m.commit_term > m.term) {
        return refuse(format!(
            "{t:?} at term {} names a later term (log term {}, commit term {})",
            m.term, m.log_term, m.commit_term
        ));
    }
    if m.priority != 0 || m.deprecated_priority != 0 || m.request_snapshot != 0 {
        return refuse(format!("{t:?} with fields ringkeeper never sets"));
    }
    match t {
        T::MsgRequestVote if !m.context.is_empty() && m.context != CAMPAIGN_TRANSFER => {
            return refuse("a vote request with an unknown context")
        }
        T::MsgRequestVote => {}
        T::MsgHeartbeat | T::MsgHeartbeatResponse => {} // a ReadIndex context
        _ if !m.context.is_empty() => return refuse(format!("{t:?} with a context")),
        _ => {}
    }
    match t {
        T::MsgAppend => check_append(m)?,
        T::MsgReadIndex | T::MsgReadIndexResp if m.entries.len() != 1 => {
            return refuse(format!("{t:?} with {} entries", m.entries.len()))
        }
        T::MsgReadIndex | T::MsgReadIndexResp => {}
        _ if !m.entries.is_empty() => return refuse(format!("{t:?} with entries")),
        _ => {}
    }
    if t == T::MsgSnapshot {
        check_snapshot(m)?;
    } else if m.has_snapshot() {
        return refuse(format!("{t:?} with a snapshot"));
    }
    Ok(())
}

fn check_append(m: &eraftpb::Message) -> Result<(), Refusal> {
    // raft-rs reads the term of an index past its log as 0, so "index 5 at term 0" would match
    // a 3-entry log and move the commit index past its end (a panic). Only index 0 has term 0.
    if m.index > 0 && m.log_term == 0 {
        return refuse(format!(
            "append after index {} names term 0 for it",
            m.index
        ));
    }
    let mut last_term = m.log_term;
    for (i, e) in m.entries.iter().enumerate() {
        let want = m.index.checked_add(1 + i as u64);
        if want != Some(e.index) {
            return refuse(format!(
                "append at index {}: entry {i} has index {} (entries must be contiguous)",
                m.index, e.index
            ));
        }
        if e.term < last_term || e.term > m.term {
            return refuse(format!(
                "append at term {}: entry {} has term {} (after term {last_term})",
                m.term, e.index, e.term
            ));
        }
        last_term = e.term;
        match e.entry_type {
            eraftpb::EntryType::EntryNormal | eraftpb::EntryType::EntryConfChangeV2 => {}
            // ringkeeper (and raft-rs, leaving a joint configuration) propose only V2 changes;
            // a V1 entry would reach the state machine as a batch that does not decode.
            eraftpb::EntryType::EntryConfChange => {
                return refuse(format!("entry {} is a ConfChange (V1)", e.index))
            }
        }
        if !e.context.is_empty() {
            return refuse(format!("entry {} has a context", e.index));
        }
    }
    Ok(())
}

fn check_snapshot(m: &eraftpb::Message) -> Result<(), Refusal> {
    if !m.has_snapshot() || !m.get_snapshot().has_metadata() {
        return refuse("MsgSnapshot without snapshot metadata");
    }
    let snap = m.get_snapshot();
    if !snap.data.is_empty() {
        return refuse("MsgSnapshot with data (the state comes on its own connection)");
    }
    let meta = snap.get_metadata();
    if meta.index == 0 || meta.term == 0 || meta.term > m.term {
        return refuse(format!(
            "MsgSnapshot at term {} for index {} of term {}",
            m.term, meta.index, meta.term
        ));
    }
    if !meta.has_conf_state() {
        return refuse("MsgSnapshot without a configuration");
    }
    let cs = meta.get_conf_state();
    check_conf_state(cs)?;
    // The leader sends its own state, in which it votes. Otherwise the receiver could be
    // made the only voter: raft-rs would then elect it at once, before the snapshot is
    // persisted, and panic. (A leader a change removed hands over instead of sending.)
    if !cs
        .voters
        .iter()
        .chain(&cs.voters_outgoing)
        .any(|&id| id == m.from)
    {
        return refuse(format!(
            "MsgSnapshot from member {} with a configuration {cs:?} in which it does not vote",
            m.from
        ));
    }
    Ok(())
}

/// Whether raft-rs can restore `cs` (it panics when it cannot): the same steps as its own
/// `confchange::restore`, on a scratch tracker, and the same comparison afterwards.
pub fn check_conf_state(cs: &eraftpb::ConfState) -> Result<(), Refusal> {
    use eraftpb::ConfChangeType as C;
    let all = || {
        cs.voters
            .iter()
            .chain(&cs.learners)
            .chain(&cs.voters_outgoing)
            .chain(&cs.learners_next)
    };
    if cs.voters.is_empty() || all().any(|&id| id == 0) {
        return refuse(format!("configuration {cs:?} has no voter or a member 0"));
    }
    let single = |id: u64, change_type| eraftpb::ConfChangeSingle {
        change_type,
        node_id: id,
        ..Default::default()
    };
    let mut outgoing: Vec<_> = cs
        .voters_outgoing
        .iter()
        .map(|&id| single(id, C::AddNode))
        .collect();
    let incoming: Vec<_> = cs
        .voters_outgoing
        .iter()
        .map(|&id| single(id, C::RemoveNode))
        .chain(cs.voters.iter().map(|&id| single(id, C::AddNode)))
        .chain(cs.learners.iter().map(|&id| single(id, C::AddLearnerNode)))
        .chain(
            cs.learners_next
                .iter()
                .map(|&id| single(id, C::AddLearnerNode)),
        )
        .collect();
    let mut tracker = raft::ProgressTracker::new(1);
    let result = (|| -> raft::Result<()> {
        if outgoing.is_empty() {
            for cc in incoming {
                let (cfg, changes) = raft::Changer::new(&tracker).simple(&[cc])?;
                tracker.apply_conf(cfg, changes, 1);
            }
        } else {
            for cc in outgoing.drain(..) {
                let (cfg, changes) = raft::Changer::new(&tracker).simple(&[cc])?;
                tracker.apply_conf(cfg, changes, 1);
            }
            let (cfg, changes) =
                raft::Changer::new(&tracker).enter_joint(cs.auto_leave, &incoming)?;
            tracker.apply_conf(cfg, changes, 1);
        }
        Ok(())
    })();
    if let Err(e) = result {
        return refuse(format!("configuration {cs:?} cannot be restored: {e}"));
    }
    let got = tracker.conf().to_conf_state();
    let sorted = |ids: &[u64]| {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids
    };
    let same = sorted(&got.voters) == sorted(&cs.voters)
        && sorted(&got.learners) == sorted(&cs.learners)
        && sorted(&got.voters_outgoing) == sorted(&cs.voters_outgoing)
        && sorted(&got.learners_next) == sorted(&cs.learners_next)
        && got.auto_leave == cs.auto_leave;
    if !same {
        return refuse(format!("configuration {cs:?} is not what it restores to"));
    }
    Ok(())
}

/// Decodes every entry's payload, so that an entry the state machine could not apply is never
/// written to the log: a normal entry's batch (`txn::Batch`), a configuration change (prost)
/// and the batch in its context. Also every member of a change is named.
pub fn check_entry_data(m: &eraftpb::Message) -> Result<(), Refusal> {
    if m.msg_type != eraftpb::MessageType::MsgAppend {
        return Ok(());
    }
    for e in m.entries.iter() {
        match e.entry_type {
            eraftpb::EntryType::EntryNormal => {
                if !e.data.is_empty() {
                    if let Err(err) = Batch::decode(&e.data) {
                        return refuse(format!("entry {} does not decode: {err}", e.index));
                    }
                }
            }
            eraftpb::EntryType::EntryConfChangeV2 => check_conf_change(&e.data)
                .map_err(|r| Refusal(format!("entry {}: {r}", e.index)))?,
            eraftpb::EntryType::EntryConfChange => {
                return refuse(format!("entry {} is a ConfChange (V1)", e.index))
            }
        }
    }
    Ok(())
}

/// A configuration change entry's data as `Consensus::apply_conf_change` expects it: a
/// `ConfChangeV2` naming real members, whose context is empty (raft-rs leaving a joint
/// configuration) or the batch that writes the new member list.
pub fn check_conf_change(data: &[u8]) -> Result<(), Refusal> {
    let cc = decode_conf_change(data)?;
    if cc.changes.iter().any(|c| c.node_id == 0) {
        return refuse("a configuration change names member 0");
    }
    if !cc.context.is_empty() {
        if let Err(err) = Batch::decode(&cc.context) {
            return refuse(format!(
                "a configuration change's context does not decode: {err}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::{Command, Op};
    use eraftpb::MessageType as T;
    use protobuf::Message as _;

    fn batch() -> Vec<u8> {
        let b = Batch {
            time_ms: 5,
            commands: vec![Command {
                session: 0x100,
                xid: 4,
                origin: 9,
                auth: vec![],
                seen_zxid: i64::MAX,
                op: Op::CloseSession,
            }],
        };
        rkyv::to_bytes::<rkyv::rancor::Error>(&b).unwrap().to_vec()
    }

    fn conf_state() -> eraftpb::ConfState {
        let mut cs = eraftpb::ConfState::from((vec![1, 2, 3], vec![4]));
        cs.voters_outgoing = vec![1, 2, 5];
        cs.learners_next = vec![5];
        cs.auto_leave = true;
        cs
    }

    fn messages() -> Vec<eraftpb::Message> {
        let mut out = Vec::new();
        let mut m = eraftpb::Message {
            msg_type: T::MsgAppend,
            to: 2,
            from: 1,
            term: 7,
            log_term: 6,
            index: 41,
            commit: 40,
            ..Default::default()
        };
        m.entries = vec![
            eraftpb::Entry {
                index: 42,
                term: 6,
                data: batch().into(),
                ..Default::default()
            },
            eraftpb::Entry {
                entry_type: eraftpb::EntryType::EntryConfChangeV2,
                index: 43,
                term: 7,
                data: encode_conf_change(&crate::reconfig::conf_change(
                    &crate::consensus::Membership {
                        voters: vec![1, 2, 3],
                        ..Default::default()
                    },
                    &crate::consensus::Membership {
                        voters: vec![1, 2, 4],
                        learners: vec![3],
                        joint: None,
                    },
                ))
                .into(),
                ..Default::default()
            },
            eraftpb::Entry {
                index: 44,
                term: 7,
                ..Default::default()
            },
        ]
        .into();
        out.push(m);
        let mut s = eraftpb::Message {
            msg_type: T::MsgSnapshot,
            to: 3,
            from: 1,
            term: 9,
            ..Default::default()
        };
        let mut snap = eraftpb::Snapshot::default();
        snap.mut_metadata().index = 100;
        snap.mut_metadata().term = 8;
        snap.mut_metadata().set_conf_state(conf_state());
        s.set_snapshot(snap);
        out.push(s);
        out.push(eraftpb::Message {
            msg_type: T::MsgRequestVote,
            to: 3,
            from: 2,
            term: 10,
            log_term: 9,
            index: 120,
            commit: 110,
            commit_term: 9,
            context: CAMPAIGN_TRANSFER.into(),
            ..Default::default()
        });
        out.push(eraftpb::Message {
            msg_type: T::MsgAppendResponse,
            to: 1,
            from: 3,
            term: 10,
            log_term: 4,
            index: 77,
            reject: true,
            reject_hint: 70,
            ..Default::default()
        });
        out.push(eraftpb::Message {
            msg_type: T::MsgHeartbeat,
            to: 2,
            from: 1,
            term: 10,
            commit: 130,
            context: b"ctx".to_vec().into(),
            ..Default::default()
        });
        let mut ri = eraftpb::Message {
            msg_type: T::MsgReadIndex,
            to: 1,
            from: 2,
            ..Default::default()
        };
        ri.entries = vec![eraftpb::Entry {
            data: b"read".to_vec().into(),
            ..Default::default()
        }]
        .into();
        out.push(ri);
        out
    }

    #[test]
    fn the_bytes_are_the_protobuf_crates() {
        for m in messages() {
            let want = m.write_to_bytes().unwrap();
            let mut got = Vec::new();
            encode(&m, &mut got);
            assert_eq!(got, want, "{m:?}");
            let back = decode(&want).unwrap();
            assert_eq!(back, m);
            assert_eq!(back.write_to_bytes().unwrap(), want);
        }
        // Configuration changes, the conf state (repeated integers, written unpacked) alone,
        // and a V1 change.
        let cc = crate::reconfig::conf_change(
            &crate::consensus::Membership {
                voters: vec![1, 2, 3],
                ..Default::default()
            },
            &crate::consensus::Membership {
                voters: vec![2, 3, 4],
                learners: vec![1],
                joint: None,
            },
        );
        let mut cc = cc;
        cc.context = batch().into();
        let want = cc.write_to_bytes().unwrap();
        assert_eq!(encode_conf_change(&cc), want);
        assert_eq!(decode_conf_change(&want).unwrap(), cc);
        let cs = conf_state();
        assert_eq!(
            ConfState::from(&cs).encode_to_vec(),
            cs.write_to_bytes().unwrap()
        );
        let v1 = eraftpb::ConfChange {
            change_type: eraftpb::ConfChangeType::AddLearnerNode,
            node_id: 7,
            context: b"c".to_vec().into(),
            id: 3,
            ..Default::default()
        };
        let wire = ConfChange {
            change_type: ConfChangeType::AddLearnerNode as i32,
            node_id: 7,
            context: b"c".to_vec().into(),
            id: 3,
        };
        assert_eq!(
            ConfChange::decode(&v1.write_to_bytes().unwrap()[..]),
            Ok(wire)
        );
        // Packed repeated integers (another encoder's choice) still decode.
        let packed = [0x0a, 0x02, 0x01, 0x02];
        assert_eq!(ConfState::decode(&packed[..]).unwrap().voters, vec![1, 2]);
    }

    fn refused(m: &eraftpb::Message) -> bool {
        let mut bytes = Vec::new();
        encode(m, &mut bytes);
        decode(&bytes).is_err()
    }

    #[test]
    fn local_and_unused_message_types_are_refused() {
        for t in [
            T::MsgHup,
            T::MsgBeat,
            T::MsgPropose,
            T::MsgUnreachable,
            T::MsgSnapStatus,
            T::MsgCheckQuorum,
            T::MsgTransferLeader,
        ] {
            let m = eraftpb::Message {
                msg_type: t,
                to: 2,
                from: 1,
                term: 3,
                ..Default::default()
            };
            assert!(refused(&m), "{t:?}");
        }
        // An unknown message type does not convert.
        let wire = Message {
            msg_type: 99,
            to: 2,
            from: 1,
            term: 3,
            ..Default::default()
        };
        assert!(decode(&wire.encode_to_vec()).is_err());
    }

    #[test]
    fn terms_are_bounded() {
        for t in [
            T::MsgHeartbeat,
            T::MsgRequestVote,
            T::MsgRequestPreVote,
            T::MsgAppend,
        ] {
            for term in [u64::MAX, MAX_TERM + 1] {
                let m = eraftpb::Message {
                    msg_type: t,
                    to: 2,
                    from: 1,
                    term,
                    ..Default::default()
                };
                assert!(refused(&m), "{t:?} at {term}");
            }
            let ok = eraftpb::Message {
                msg_type: t,
                to: 2,
                from: 1,
                term: MAX_TERM,
                ..Default::default()
            };
            assert!(!refused(&ok), "{t:?} at MAX_TERM");
            let zero = eraftpb::Message { term: 0, ..ok };
            assert!(refused(&zero), "{t:?} without a term");
        }
        let mut m = messages().remove(0);
        m.log_term = m.term + 1;
        assert!(refused(&m), "log term above the term");
        let mut m = messages().remove(0);
        m.entries[2].term = m.term + 1;
        assert!(refused(&m), "entry term above the term");
        let mut m = messages().remove(0);
        m.entries[0].term = m.log_term - 1;
        assert!(refused(&m), "entry term below the previous one");
    }

    #[test]
    fn entries_must_be_contiguous_and_decode() {
        let ok = messages().remove(0);
        assert!(!refused(&ok));
        let mut m = ok.clone();
        m.entries[1].index = 44;
        m.entries[2].index = 43;
        assert!(refused(&m), "out of order");
        let mut m = ok.clone();
        m.entries.remove(1);
        assert!(refused(&m), "a gap");
        let mut m = ok.clone();
        m.index = u64::MAX;
        assert!(refused(&m), "index overflow");
        let mut m = ok.clone();
        m.index = MAX_INDEX - 1;
        for (i, e) in m.entries.iter_mut().enumerate() {
            e.index = MAX_INDEX + i as u64;
        }
        assert!(refused(&m), "indexes past MAX_INDEX");
        let mut m = messages().remove(4);
        m.commit = u64::MAX;
        assert!(refused(&m), "commit past MAX_INDEX");
        // found by the peer_frame fuzz target: raft-rs matched it past its log and panicked
        let mut m = ok.clone();
        m.log_term = 0;
        assert!(refused(&m), "an index after 0 at term 0");
        m.index = 0;
        for (i, e) in m.entries.iter_mut().enumerate() {
            e.index = 1 + i as u64;
        }
        assert!(!refused(&m), "the first append of a log: index 0, term 0");
        let mut m = ok.clone();
        m.entries[0].data = vec![1, 2, 3].into();
        assert!(refused(&m), "a batch that does not decode");
        let mut m = ok.clone();
        m.entries[1].data = vec![0xff, 0xff, 0xff].into();
        assert!(refused(&m), "a conf change that does not decode");
        let mut m = ok.clone();
        let mut cc = decode_conf_change(&m.entries[1].data).unwrap();
        cc.context = vec![9; 20].into();
        m.entries[1].data = encode_conf_change(&cc).into();
        assert!(refused(&m), "a conf change context that does not decode");
        let mut m = ok.clone();
        m.entries[1].set_entry_type(eraftpb::EntryType::EntryConfChange);
        assert!(refused(&m), "a V1 conf change");
        let mut m = ok.clone();
        m.entries[2].context = b"x".to_vec().into();
        assert!(refused(&m), "an entry context");
        // A heartbeat carries no entries; a read index exactly one.
        let mut m = messages().remove(4);
        m.entries = ok.entries.clone();
        assert!(refused(&m));
        let mut m = messages().remove(5);
        m.entries.clear();
        assert!(refused(&m));
        // Recursion-shaped garbage is an error, not a stack overflow.
        // (RUSTSEC-2024-0437: unknown groups nested without end.)
        let mut nested = Vec::new();
        for _ in 0..100_000 {
            nested.extend_from_slice(&[0x9b, 0x06]); // start group, field 99
        }
        assert!(decode(&nested).is_err());
        assert!(decode_conf_change(&nested).is_err());
    }

    #[test]
    fn snapshot_metadata_must_be_consistent() {
        let ok = messages().remove(1);
        assert!(!refused(&ok));
        let mut m = ok.clone();
        m.clear_snapshot();
        assert!(refused(&m), "no snapshot");
        let mut m = ok.clone();
        m.mut_snapshot().mut_metadata().term = m.term + 1;
        assert!(refused(&m), "snapshot term above the message's");
        let mut m = ok.clone();
        m.mut_snapshot().mut_metadata().index = 0;
        assert!(refused(&m), "index 0");
        let mut m = ok.clone();
        m.mut_snapshot().data = vec![1].into();
        assert!(refused(&m), "data inline");
        for cs in [
            eraftpb::ConfState::from((vec![], vec![1])),
            eraftpb::ConfState::from((vec![1, 1], vec![])),
            eraftpb::ConfState::from((vec![1, 2], vec![2])),
            eraftpb::ConfState::from((vec![0, 2], vec![])),
            {
                let mut cs = eraftpb::ConfState::from((vec![1, 2], vec![]));
                cs.learners_next = vec![3];
                cs
            },
        ] {
            let mut m = ok.clone();
            m.mut_snapshot().mut_metadata().set_conf_state(cs.clone());
            assert!(refused(&m), "{cs:?}");
        }
        // The sender must vote in it: else it could make the receiver the only voter.
        let to = ok.to;
        for cs in [
            eraftpb::ConfState::from((vec![to], vec![ok.from])),
            eraftpb::ConfState::from((vec![to, 9], vec![])),
        ] {
            let mut m = ok.clone();
            m.mut_snapshot().mut_metadata().set_conf_state(cs.clone());
            assert!(refused(&m), "{cs:?}");
        }
        let mut joint = eraftpb::ConfState::from((vec![to, 9], vec![]));
        joint.voters_outgoing = vec![ok.from, to];
        let mut m = ok.clone();
        m.mut_snapshot().mut_metadata().set_conf_state(joint);
        assert!(!refused(&m), "an outgoing voter sends while joint");
        let mut m = ok.clone();
        m.mut_snapshot().mut_metadata().clear_conf_state();
        assert!(refused(&m), "no configuration");
        let mut m = messages().remove(0);
        m.set_snapshot(ok.get_snapshot().clone());
        assert!(refused(&m), "a snapshot on an append");
    }

    #[test]
    fn vote_context_and_unused_fields() {
        let ok = messages().remove(2);
        assert!(!refused(&ok));
        let mut m = ok.clone();
        m.context = b"CampaignElection".to_vec().into();
        assert!(refused(&m));
        let mut m = ok.clone();
        m.set_msg_type(T::MsgRequestPreVote);
        assert!(refused(&m), "pre-votes carry no context");
        m.context = Default::default();
        assert!(!refused(&m));
        let mut m = ok.clone();
        m.priority = -1;
        assert!(refused(&m));
        let mut m = ok.clone();
        m.from = 0;
        assert!(refused(&m));
        let mut m = ok.clone();
        m.from = m.to;
        assert!(refused(&m));
        let mut m = messages().remove(5);
        m.term = 3;
        assert!(refused(&m), "a read index carries no term");
    }
}
