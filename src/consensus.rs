//! The consensus driver: raft-rs behind a small sans-IO surface.
//!
//! The shell feeds it proposals, ticks, peer messages and "durable up to ready N" notices; it
//! hands back `Output`s: entries and hard state to persist, messages to send, committed
//! entries to apply. It never waits and never does I/O, so the write path of one member and of
//! a five-member ensemble are the same code, and a simulation can drive it in one thread.
//!
//! Persistence is asynchronous (raft-rs `advance_append_async` + `on_persist_ready`): entries
//! are staged in the in-memory storage at once, written by the log's group commit, and only
//! counted as persisted when the shell reports the sync that covers them. A single member is a
//! one-voter group that elects itself at start-up.

use std::borrow::Cow;
use std::cell::Cell;

use raft::eraftpb::{ConfChangeV2, ConfState, Entry, EntryType, HardState, Message, Snapshot};
use raft::storage::MemStorage;
use raft::{Config, GetEntriesContext, RaftState, RawNode, SnapshotStatus, StateRole, Storage};

use crate::peer_proto::raft_wire::{self, Refusal};
use crate::raft_guard;

/// Who votes and who only listens (raft learners, ZooKeeper observers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// While a change of several voters is under way (raft's joint consensus), the other half.
    pub joint: Option<Joint>,
}

/// The outgoing half of a joint configuration (`Membership`'s voters and learners are the
/// incoming one).
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, Default, PartialEq, Eq,
)]
pub struct Joint {
    pub voters_outgoing: Vec<u64>,
    /// Outgoing voters that become learners once the joint configuration is left.
    pub learners_next: Vec<u64>,
    /// raft-rs leaves the joint configuration by itself.
    pub auto_leave: bool,
}

impl Membership {
    /// A single voting member.
    pub fn single(id: u64) -> Membership {
        Membership {
            voters: vec![id],
            ..Default::default()
        }
    }

    fn conf_state(&self) -> ConfState {
        let mut cs = ConfState::from((self.voters.clone(), self.learners.clone()));
        if let Some(j) = &self.joint {
            cs.voters_outgoing = j.voters_outgoing.clone();
            cs.learners_next = j.learners_next.clone();
            cs.auto_leave = j.auto_leave;
        }
        cs
    }

    /// Whether `id` votes or listens (in either half of a joint configuration).
    pub fn contains(&self, id: u64) -> bool {
        self.voters.contains(&id)
            || self.learners.contains(&id)
            || self
                .joint
                .as_ref()
                .is_some_and(|j| j.voters_outgoing.contains(&id) || j.learners_next.contains(&id))
    }
}

impl From<&ConfState> for Membership {
    fn from(cs: &ConfState) -> Membership {
        let sorted = |ids: &[u64]| {
            let mut ids = ids.to_vec();
            ids.sort_unstable();
            ids
        };
        let joint = (!cs.voters_outgoing.is_empty()).then(|| Joint {
            voters_outgoing: sorted(&cs.voters_outgoing),
            learners_next: sorted(&cs.learners_next),
            auto_leave: cs.auto_leave,
        });
        Membership {
            voters: sorted(&cs.voters),
            learners: sorted(&cs.learners),
            joint,
        }
    }
}

/// This member's part in the group right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    /// Campaigning (pre-vote or vote): no leader is known.
    Candidate,
    /// A learner: replicates and applies, never votes.
    Observer,
}

/// Raft ticks per election timeout; the shell ticks every `TICK_MS`.
pub const ELECTION_TICKS: usize = 10;
pub const HEARTBEAT_TICKS: usize = 2;
pub const TICK_MS: u64 = 50;
/// Entries kept in memory behind the applied index, for slow followers (later: snapshots).
const RETAINED_ENTRIES: u64 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    #[error("not the leader (leader is {leader:?})")]
    NotLeader { leader: Option<u64> },
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("another configuration change is under way")]
    ChangeInProgress,
    #[error("a configuration change entry does not decode: {0}")]
    BadConfChange(String),
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
}

/// An entry recovered from the log at start-up.
pub struct StoredEntry {
    pub index: u64,
    pub term: u64,
    pub data: Vec<u8>,
    /// A configuration change (`data` is a protobuf `ConfChangeV2`), not a batch.
    pub conf_change: bool,
}

impl From<&Entry> for StoredEntry {
    fn from(e: &Entry) -> StoredEntry {
        StoredEntry {
            index: e.index,
            term: e.term,
            data: e.data.to_vec(),
            conf_change: is_conf_change(e),
        }
    }
}

impl From<StoredEntry> for Entry {
    fn from(e: StoredEntry) -> Entry {
        let mut entry = Entry {
            index: e.index,
            term: e.term,
            data: e.data.into(),
            ..Default::default()
        };
        if e.conf_change {
            entry.set_entry_type(EntryType::EntryConfChangeV2);
        }
        entry
    }
}

/// Whether `e` changes the configuration (this crate proposes only `ConfChangeV2`).
pub fn is_conf_change(e: &Entry) -> bool {
    e.get_entry_type() == EntryType::EntryConfChangeV2
}

/// What a committed entry asks of the state machine: the batch bytes of a normal entry, or
/// the batch carried in a configuration change's context (empty when raft-rs proposed the
/// change itself, to leave a joint configuration).
pub fn entry_payload(data: &[u8], conf_change: bool) -> Result<Cow<'_, [u8]>, ConsensusError> {
    if !conf_change {
        return Ok(Cow::Borrowed(data));
    }
    Ok(Cow::Owned(decode_conf_change(data)?.context.to_vec()))
}

fn decode_conf_change(data: &[u8]) -> Result<ConfChangeV2, ConsensusError> {
    raft_wire::decode_conf_change(data).map_err(|e| ConsensusError::BadConfChange(e.0))
}

/// Everything one `poll` asks the shell to do, in this order: send `messages` now; persist
/// `entries` and `hard_state` (in one group commit) and report `persisted(number)` once durable;
/// send `persisted_messages` only after that; apply `committed` (already durable).
///
/// A ready with nothing to write can still carry `persisted_messages` (a follower's answer
/// for entries an earlier ready is still syncing): they too wait until every earlier ready is
/// durable. The deterministic simulation (tests/sim) breaks safety when they do not.
#[derive(Default)]
pub struct Output {
    pub number: u64,
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
    pub messages: Vec<Message>,
    pub persisted_messages: Vec<Message>,
    pub committed: Vec<Entry>,
    /// raft took a snapshot from the leader at (index, term): the state machine must become
    /// the state the leader streamed with it before `committed` is applied.
    pub snapshot: Option<(u64, u64)>,
    /// Answers to `read_index` calls: (context, index). The read is linearizable once
    /// everything up to `index` is applied.
    pub read_states: Vec<(Vec<u8>, u64)>,
    /// This ready must be reported back through `persisted` even if it carries nothing to
    /// write (raft-rs requires readies to be persisted in order).
    pub must_persist: bool,
    /// Something in this ready must reach the disk before it counts as persisted: entries,
    /// or a term or vote change. A commit-index change alone need not (raft re-derives it).
    pub must_sync: bool,
}

/// raft's storage: entries and hard state in memory (the log keeps the durable copy), and
/// snapshots that stand for the state machine at its applied index.
///
/// When a follower needs entries the memory no longer holds, raft asks for a snapshot; this
/// one names the applied (index, term), whose state the shell can produce at once from an
/// MVCC view and stream to the follower (the raft message carries no data).
struct Store {
    mem: MemStorage,
    applied: Cell<(u64, u64)>,
}

impl Storage for Store {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.mem.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let (index, term) = self.applied.get();
        if index == 0 || index < request_index {
            return Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let mut snap = Snapshot::default();
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.mem.initial_state()?.conf_state);
        Ok(snap)
    }
}

pub struct Consensus {
    node: RawNode<Store>,
    /// Highest index handed out as committed.
    handed_out: u64,
    /// The configuration as last applied (a change, or a snapshot from the leader).
    membership: Membership,
}

impl Consensus {
    /// Build the driver from the recovered state: `snapshot` is the (index, term) the loaded
    /// snapshot stands at, `entries` the log after it.
    pub fn new(
        id: u64,
        members: &Membership,
        snapshot: Option<(u64, u64)>,
        entries: Vec<StoredEntry>,
        hard_state: Option<(u64, u64, u64)>,
    ) -> Result<Consensus, ConsensusError> {
        let storage = MemStorage::new_with_conf_state(members.conf_state());
        let mut applied = 0;
        let applied_term = snapshot.map_or(0, |s| s.1);
        {
            let mut core = storage.wl();
            let ents: Vec<Entry> = entries.into_iter().map(Entry::from).collect();
            // MemStorage needs the entries to follow its snapshot: the loaded one, or a marker
            // just before the first entry when the log alone starts after 1.
            let base = match (snapshot, ents.first()) {
                (Some(s), _) => Some(s),
                (None, Some(first)) if first.index > 1 => Some((first.index - 1, first.term)),
                _ => None,
            };
            if let Some((index, term)) = base {
                let mut snap = raft::eraftpb::Snapshot::default();
                snap.mut_metadata().index = index;
                snap.mut_metadata().term = term;
                snap.mut_metadata().set_conf_state(members.conf_state());
                core.apply_snapshot(snap)?;
            }
            if let Some((index, _)) = snapshot {
                applied = index;
            }
            core.append(&ents)?;
            let last = ents.last().map_or(applied, |e| e.index);
            let last_term = ents.last().map_or(snapshot.map_or(0, |s| s.1), |e| e.term);
            let (term, vote, commit) = hard_state.unwrap_or((0, 0, 0));
            if hard_state.is_some() || snapshot.is_some() {
                let hs = HardState {
                    term: term.max(last_term),
                    vote,
                    // A commit index beyond the durable log cannot be trusted; the snapshot's
                    // index was committed.
                    commit: commit.min(last).max(applied),
                    ..Default::default()
                };
                core.set_hardstate(hs);
            }
        }
        let config = Config {
            id,
            election_tick: ELECTION_TICKS,
            heartbeat_tick: HEARTBEAT_TICKS,
            applied,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        config.validate()?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let store = Store {
            mem: storage,
            applied: Cell::new((applied, applied_term)),
        };
        let mut node = RawNode::new(&config, store, &logger)?;
        if members.voters == [id] && members.learners.is_empty() {
            // A one-member group needs no election timeout to pass.
            node.campaign()?;
        }
        Ok(Consensus {
            node,
            handed_out: applied,
            membership: members.clone(),
        })
    }

    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    pub fn leader_id(&self) -> Option<u64> {
        let raft = &self.node.raft;
        // A learner never campaigns, so nothing clears the leader it last heard from: after
        // two election timeouts of silence it counts as gone (a voter would have campaigned).
        if !raft.promotable() && raft.election_elapsed > 2 * ELECTION_TICKS {
            return None;
        }
        match raft.leader_id {
            0 => None,
            id => Some(id),
        }
    }

    pub fn role(&self) -> Role {
        match self.node.raft.state {
            StateRole::Leader => Role::Leader,
            _ if !self.node.raft.promotable() => Role::Observer,
            StateRole::Follower => Role::Follower,
            StateRole::Candidate | StateRole::PreCandidate => Role::Candidate,
        }
    }

    pub fn term(&self) -> u64 {
        self.node.raft.term
    }

    /// raft-rs draws each election timeout from a thread-local RNG; a deterministic
    /// simulation pins it from its seed instead.
    pub fn randomized_election_timeout(&self) -> usize {
        self.node.raft.randomized_election_timeout()
    }

    pub fn set_randomized_election_timeout(&mut self, ticks: usize) {
        self.node.raft.set_randomized_election_timeout(ticks);
    }

    /// (term, vote, commit) as raft holds them now.
    pub fn hard_state(&self) -> (u64, u64, u64) {
        let hs = self.node.raft.hard_state();
        (hs.term, hs.vote, hs.commit)
    }

    pub fn last_index(&self) -> u64 {
        self.node.raft.raft_log.last_index()
    }

    pub fn commit_index(&self) -> u64 {
        self.node.raft.raft_log.committed
    }

    pub fn tick(&mut self) {
        self.node.tick();
        self.hand_over_if_removed();
    }

    /// raft-rs keeps a leader that a configuration change removed (or made an observer)
    /// leading: it hands over to the voter furthest along. Asked on a tick, not when the
    /// change applies, since a voter that has not applied the change yet refuses to
    /// campaign; raft-rs drops a transfer that did not finish within an election timeout,
    /// and the next tick asks again.
    fn hand_over_if_removed(&mut self) {
        let raft = &self.node.raft;
        if !self.is_leader() || raft.promotable() || raft.lead_transferee.is_some() {
            return;
        }
        let voters = raft.prs().conf().voters();
        let next = raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != raft.id && voters.contains(**id))
            .max_by_key(|(_, pr)| pr.matched)
            .map(|(id, _)| *id);
        if let Some(next) = next {
            self.node.transfer_leader(next);
        }
    }

    /// What `raft_guard` checks a peer's message against.
    fn local(&self) -> raft_guard::Local {
        let raft = &self.node.raft;
        raft_guard::Local {
            id: raft.id,
            term: raft.term,
            leader: raft.leader_id,
            is_leader: self.is_leader(),
            leader_votes: raft.prs().conf().voters().contains(raft.leader_id),
            last_index: raft.raft_log.last_index(),
        }
    }

    /// Whether `msg`, received on member `from`'s link, would be stepped (see `step`); the
    /// shell asks before it spends time on a snapshot's data.
    pub fn check(&self, from: u64, msg: &Message) -> Result<(), ConsensusError> {
        raft_guard::admit(&self.local(), from, msg)?;
        Ok(())
    }

    /// A raft message that arrived on member `from`'s link (the member the link authenticated).
    /// It is checked first (`raft_guard::admit`, which runs `peer_proto::raft_wire::check` too; the
    /// decoder has already checked every entry's payload): a message that fails is refused
    /// (`ConsensusError::Refused`) and raft-rs never sees it.
    pub fn step(&mut self, from: u64, mut msg: Message) -> Result<(), ConsensusError> {
        use raft::eraftpb::MessageType as T;
        match raft_guard::admit(&self.local(), from, &msg)? {
            raft_guard::Admit::Step => {}
            raft_guard::Admit::StepAsPlainVote => msg.context = Default::default(),
        }
        match msg.get_msg_type() {
            T::MsgHeartbeat => {
                // A leader sends the commit index it believes this member has reached. A member
                // restarted with an empty data dir has not (raft-rs would panic): it commits
                // only what the leader's term vouches for (an entry of that term at its last
                // index means its whole log matches the leader's), rejects the next append,
                // and the leader probes back to what it has.
                let last = self.last_index();
                if msg.commit > last {
                    let vouched = self.node.raft.raft_log.term(last).ok() == Some(msg.term);
                    msg.commit = if vouched { last } else { self.commit_index() };
                }
            }
            T::MsgHeartbeatResponse | T::MsgAppendResponse
                if self.is_leader() && msg.term == self.term() =>
            {
                self.notice_lost_log(&msg)
            }
            _ => {}
        }
        Ok(self.node.step(msg)?)
    }

    /// A member that answers below what this leader recorded for it has lost its log (its data
    /// dir was wiped). raft-rs would keep taking it for caught up (an idle leader sends it
    /// nothing but heartbeats) or ignore its rejection as stale: record what it has and probe
    /// it again, from the log or a snapshot. Lowering a match never moves the commit index.
    fn notice_lost_log(&mut self, msg: &Message) {
        use raft::eraftpb::MessageType as T;
        let Some(pr) = self.node.raft.mut_prs().get_mut(msg.from) else {
            return;
        };
        let has = match msg.get_msg_type() {
            T::MsgHeartbeatResponse if msg.commit < pr.committed_index => msg.commit,
            T::MsgAppendResponse if msg.reject && msg.reject_hint < pr.matched => msg.reject_hint,
            _ => return,
        };
        pr.matched = has;
        pr.committed_index = has;
        pr.become_probe();
    }

    /// Propose one entry (a serialized `txn::Batch`).
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(), ConsensusError> {
        if !self.is_leader() {
            return Err(ConsensusError::NotLeader {
                leader: self.leader_id(),
            });
        }
        Ok(self.node.propose(vec![], data)?)
    }

    /// Propose a configuration change. `cc.context` carries the batch the state machine
    /// applies with it. raft-rs would quietly turn a change proposed while another is under
    /// way into an empty entry, so that is refused here.
    pub fn propose_conf_change(&mut self, cc: ConfChangeV2) -> Result<(), ConsensusError> {
        if !self.is_leader() {
            return Err(ConsensusError::NotLeader {
                leader: self.leader_id(),
            });
        }
        if self.conf_change_pending() {
            return Err(ConsensusError::ChangeInProgress);
        }
        Ok(self.node.propose_conf_change(Vec::new(), cc)?)
    }

    /// Whether a configuration change is proposed and not yet applied, or the configuration
    /// is joint (raft-rs leaves it by itself once the change that entered it is applied).
    pub fn conf_change_pending(&self) -> bool {
        let raft = &self.node.raft;
        raft.has_pending_conf() || self.is_joint()
    }

    /// A committed configuration change entry reached the state machine: raft switches to
    /// it, and the snapshots raft hands out from now on carry it. Returns what the entry asks
    /// of the state machine besides (see `entry_payload`). Call `applied` before anything else
    /// steps raft (the shell does, at the end of the same apply round).
    ///
    /// Every member then drops the log before the change from memory, so that a member with
    /// no log (one that joins, or comes back empty) catches up from a snapshot, which carries
    /// the configuration, instead of replaying entries from the start against a configuration
    /// it cannot know (a joining member starts with none; replaying "add me" onto none would
    /// make it a group of one). Replay at start-up applies the change again, so a leader that
    /// restarts drops that part of its log too.
    ///
    /// `Ok(None)`: raft refused the change for this configuration (say, it removes every
    /// voter). Only a faulty or hostile leader logs one, and every member, applying the same
    /// log to the same configuration, refuses it alike: it is skipped, not a reason to stop.
    pub fn apply_conf_change(&mut self, entry: &Entry) -> Result<Option<Vec<u8>>, ConsensusError> {
        let cc = decode_conf_change(&entry.data)?;
        let Ok(cs) = self.node.apply_conf_change(&cc) else {
            return Ok(None);
        };
        let store = self.node.mut_store();
        store.mem.wl().set_conf_state(cs.clone());
        let index = entry.index;
        if index > store.mem.first_index()? && index <= store.mem.last_index()? {
            store.mem.wl().compact(index)?;
        }
        self.membership = Membership::from(&cs);
        Ok(Some(cc.context.to_vec()))
    }

    /// Whether the configuration is joint (old and new voters both vote).
    pub fn is_joint(&self) -> bool {
        self.membership.joint.is_some()
    }

    /// The configuration as this member applied it last.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Ask for a linearizable read point; the answer comes back in `Output::read_states`
    /// with the same `ctx`. raft drops the request when no leader is known or the leader has
    /// not committed in its term yet: the caller asks again (the same ctx is harmless).
    pub fn read_index(&mut self, ctx: Vec<u8>) {
        self.node.read_index(ctx);
    }

    /// The state for a snapshot raft asked to send reached `id` (or failed to).
    pub fn snapshot_sent(&mut self, id: u64, ok: bool) {
        let status = if ok {
            SnapshotStatus::Finish
        } else {
            SnapshotStatus::Failure
        };
        self.node.report_snapshot(id, status);
    }

    /// On the leader: every other member's (id, whether it is a learner, whether it is
    /// caught up: recently active and within the entries kept in memory).
    pub fn peers(&self) -> Vec<(u64, bool, bool)> {
        let raft = &self.node.raft;
        let last = raft.raft_log.last_index();
        let learners = raft.prs().conf().learners();
        raft.prs()
            .iter()
            .filter(|(id, _)| **id != raft.id)
            .map(|(id, pr)| {
                let synced = pr.recent_active && pr.matched + RETAINED_ENTRIES >= last;
                (*id, learners.contains(id), synced)
            })
            .collect()
    }

    /// On the leader: whether raft waits for member `id` to install a snapshot.
    pub fn snapshotting(&self, id: u64) -> bool {
        self.node
            .raft
            .prs()
            .get(id)
            .is_some_and(|pr| pr.state == raft::ProgressState::Snapshot)
    }

    /// A peer could not be reached: raft stops pipelining to it until it answers.
    pub fn unreachable(&mut self, id: u64) {
        self.node.report_unreachable(id);
    }

    pub fn has_ready(&self) -> bool {
        self.node.has_ready()
    }

    /// Take the next unit of work, if any. Entries are staged in memory before this returns.
    pub fn poll(&mut self) -> Result<Option<Output>, ConsensusError> {
        if !self.node.has_ready() {
            return Ok(None);
        }
        let mut rd = self.node.ready();
        let mut out = Output {
            number: rd.number(),
            must_persist: rd.must_sync() || !rd.entries().is_empty() || rd.hs().is_some(),
            must_sync: rd.must_sync() || !rd.entries().is_empty(),
            ..Default::default()
        };
        out.messages = rd.take_messages();
        out.committed = rd.take_committed_entries();
        out.read_states = rd
            .take_read_states()
            .into_iter()
            .map(|rs| (rs.request_ctx, rs.index))
            .collect();
        if !rd.snapshot().is_empty() {
            // A snapshot from the leader replaced the log: the shell installs the state it
            // received with it (see `Output::snapshot`).
            let snap = rd.snapshot().clone();
            let meta = snap.get_metadata();
            out.snapshot = Some((meta.index, meta.term));
            out.must_persist = true;
            out.must_sync = true;
            // raft took the snapshot's configuration with it.
            self.membership = Membership::from(meta.get_conf_state());
            self.node.mut_store().mem.wl().apply_snapshot(snap)?;
        }
        out.entries = rd.take_entries();
        if !out.entries.is_empty() {
            self.node.mut_store().mem.wl().append(&out.entries)?;
        }
        if let Some(hs) = rd.hs() {
            self.node.mut_store().mem.wl().set_hardstate(hs.clone());
            out.hard_state = Some(hs.clone());
        }
        out.persisted_messages = rd.take_persisted_messages();
        self.node.advance_append_async(rd);
        self.note_handed_out(&out.committed);
        Ok(Some(out))
    }

    /// The log reports that every ready up to `number` is durable. Afterwards `poll` may yield
    /// newly committed entries.
    pub fn persisted(&mut self, number: u64) {
        self.node.on_persist_ready(number);
    }

    /// The shell applied everything up to `index`; lets raft release memory.
    pub fn applied(&mut self, index: u64) -> Result<(), ConsensusError> {
        self.node.advance_apply_to(index);
        let term = self.node.store().term(index)?;
        let store = self.node.mut_store();
        store.applied.set((index, term));
        let store = &store.mem;
        let first = store.first_index()?;
        if index > first + 2 * RETAINED_ENTRIES {
            store.wl().compact(index - RETAINED_ENTRIES)?;
        }
        Ok(())
    }

    fn note_handed_out(&mut self, committed: &[Entry]) {
        if let Some(last) = committed.last() {
            debug_assert!(
                last.index > self.handed_out,
                "committed entries went backwards"
            );
            self.handed_out = last.index;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drive a one-member group the way the shell does, persisting instantly.
    fn drain(c: &mut Consensus, log: &mut Vec<Entry>, applied: &mut Vec<Vec<u8>>) {
        while let Some(out) = c.poll().unwrap() {
            log.extend(out.entries.iter().cloned());
            for e in &out.committed {
                if !e.data.is_empty() {
                    applied.push(e.data.to_vec());
                }
            }
            if let Some(last) = out.committed.last() {
                c.applied(last.index).unwrap();
            }
            if out.must_persist {
                c.persisted(out.number);
            }
        }
    }

    #[test]
    fn single_member_commits_after_persist() {
        let mut c = Consensus::new(1, &Membership::single(1), None, vec![], None).unwrap();
        let (mut log, mut applied) = (vec![], vec![]);
        drain(&mut c, &mut log, &mut applied);
        assert!(c.is_leader());
        c.propose(b"a".to_vec()).unwrap();
        c.propose(b"b".to_vec()).unwrap();
        // Staged but not yet durable: nothing may be committed.
        let out = c.poll().unwrap().unwrap();
        assert_eq!(out.entries.len(), 2);
        assert!(out.committed.iter().all(|e| e.data.is_empty()));
        assert!(c.poll().unwrap().is_none());
        c.persisted(out.number);
        let out = c.poll().unwrap().unwrap();
        let data: Vec<_> = out.committed.iter().map(|e| e.data.to_vec()).collect();
        assert_eq!(data, vec![b"a".to_vec(), b"b".to_vec()]);
    }

    #[test]
    fn restart_recommits_the_durable_log() {
        let mut c = Consensus::new(1, &Membership::single(1), None, vec![], None).unwrap();
        let (mut log, mut applied) = (vec![], vec![]);
        drain(&mut c, &mut log, &mut applied);
        for i in 0..5u8 {
            c.propose(vec![i]).unwrap();
            drain(&mut c, &mut log, &mut applied);
        }
        assert_eq!(applied.len(), 5);
        let term = c.term();
        // Restart from the durable log with a hard state whose commit index lags behind.
        let stored = log.iter().map(StoredEntry::from).collect();
        let mut c2 =
            Consensus::new(1, &Membership::single(1), None, stored, Some((term, 1, 2))).unwrap();
        let (mut log2, mut applied2) = (vec![], vec![]);
        drain(&mut c2, &mut log2, &mut applied2);
        assert_eq!(
            applied2, applied,
            "every durable entry is applied again, in order"
        );
        assert!(c2.term() > term);
    }

    #[test]
    fn a_committed_change_that_does_not_apply_is_skipped() {
        let mut c = Consensus::new(1, &Membership::single(1), None, vec![], None).unwrap();
        let (mut log, mut applied) = (vec![], vec![]);
        drain(&mut c, &mut log, &mut applied);
        // What a hostile leader could log: remove the only voter.
        let cc = ConfChangeV2 {
            changes: vec![raft::eraftpb::ConfChangeSingle {
                change_type: raft::eraftpb::ConfChangeType::RemoveNode,
                node_id: 1,
                ..Default::default()
            }]
            .into(),
            ..Default::default()
        };
        let entry = Entry {
            entry_type: EntryType::EntryConfChangeV2,
            index: c.last_index() + 1,
            term: c.term(),
            data: raft_wire::encode_conf_change(&cc).into(),
            ..Default::default()
        };
        assert_eq!(c.apply_conf_change(&entry).unwrap(), None);
        assert_eq!(c.membership().voters, vec![1]);
        assert!(c.is_leader());
    }

    #[test]
    fn propose_on_follower_is_refused() {
        let c = &mut Consensus::new(
            1,
            &Membership {
                voters: vec![1, 2, 3],
                learners: vec![],
                joint: None,
            },
            None,
            vec![],
            None,
        )
        .unwrap();
        assert!(matches!(
            c.propose(vec![1]),
            Err(ConsensusError::NotLeader { .. })
        ));
    }

    /// `m` encoded as a peer frame and decoded again: the message, or why it was refused.
    fn wire(m: &Message) -> Result<Message, String> {
        use crate::peer_proto::{decode, encode, PeerMsg};
        let mut buf = Vec::new();
        encode(&PeerMsg::Raft(m.clone()), &mut buf).unwrap();
        match decode(&buf[4..]).unwrap() {
            PeerMsg::Raft(m) => Ok(m),
            PeerMsg::RaftRefused(reason) => Err(reason),
            other => panic!("{other:?}"),
        }
    }

    /// A batch as the leader proposes it (entries that do not decode are refused).
    fn batch(n: i32) -> Vec<u8> {
        let b = crate::txn::Batch {
            time_ms: 1,
            commands: vec![crate::txn::Command {
                session: 0x100,
                xid: n,
                origin: 1,
                auth: vec![],
                seen_zxid: i64::MAX,
                op: crate::txn::Op::CloseSession,
            }],
        };
        rkyv::to_bytes::<rkyv::rancor::Error>(&b).unwrap().to_vec()
    }

    /// Members wired together in memory: every ready persisted at once, every message
    /// delivered, every committed entry applied (configuration changes included).
    struct Group {
        nodes: Vec<Consensus>,
        applied: Vec<Vec<Vec<u8>>>,
    }

    impl Group {
        fn new(voters: &[u64]) -> Group {
            let m = Membership {
                voters: voters.to_vec(),
                learners: vec![],
                joint: None,
            };
            // Election timeouts pinned (raft-rs draws them at random): the same run each time.
            let nodes: Vec<Consensus> = voters
                .iter()
                .map(|&id| {
                    let mut c = Consensus::new(id, &m, None, vec![], None).unwrap();
                    c.set_randomized_election_timeout(ELECTION_TICKS + 2 * id as usize);
                    c
                })
                .collect();
            let applied = vec![Vec::new(); nodes.len()];
            Group { nodes, applied }
        }

        fn run(&mut self, ticks: usize) {
            for _ in 0..ticks {
                for n in &mut self.nodes {
                    n.tick();
                }
                for _ in 0..20 {
                    let mut mail = Vec::new();
                    for (i, n) in self.nodes.iter_mut().enumerate() {
                        while let Some(mut out) = n.poll().unwrap() {
                            mail.append(&mut out.messages);
                            mail.append(&mut out.persisted_messages);
                            for e in &out.committed {
                                if is_conf_change(e) {
                                    n.apply_conf_change(e).unwrap().unwrap();
                                } else if !e.data.is_empty() {
                                    self.applied[i].push(e.data.to_vec());
                                }
                            }
                            if let Some(last) = out.committed.last() {
                                n.applied(last.index).unwrap();
                            }
                            if out.must_persist {
                                n.persisted(out.number);
                            }
                        }
                    }
                    if mail.is_empty() {
                        break;
                    }
                    for m in mail {
                        // Through the wire, as between real members: nothing a member sends
                        // may be refused.
                        let m = wire(&m).expect("a member's own message decodes");
                        if let Some(n) = self.nodes.iter_mut().find(|n| n.node.raft.id == m.to) {
                            let from = m.from;
                            n.step(from, m).expect("a member's own message is admitted");
                        }
                    }
                }
            }
        }

        fn leader(&self) -> Option<u64> {
            let leaders: Vec<u64> = self
                .nodes
                .iter()
                .filter(|n| n.is_leader())
                .map(|n| n.node.raft.id)
                .collect();
            (leaders.len() == 1).then(|| leaders[0])
        }

        fn node(&mut self, id: u64) -> &mut Consensus {
            self.nodes
                .iter_mut()
                .find(|n| n.node.raft.id == id)
                .unwrap()
        }
    }

    #[test]
    fn a_removed_leader_hands_over_and_a_voter_swap_goes_through_joint_consensus() {
        let mut g = Group::new(&[1, 2, 3]);
        g.run(5 * ELECTION_TICKS);
        let first = g.leader().expect("a leader");
        let m = |v: &[u64]| Membership {
            voters: v.to_vec(),
            learners: vec![],
            joint: None,
        };
        let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|&id| id != first).collect();
        let cc = crate::reconfig::conf_change(&m(&[1, 2, 3]), &m(&rest));
        g.node(first).propose_conf_change(cc).unwrap();
        g.run(3);
        let next = g
            .nodes
            .iter()
            .filter(|n| n.is_leader() && n.node.raft.id != first)
            .map(|n| n.node.raft.id)
            .next()
            .expect("the removed leader handed over within three ticks");
        // The old leader hears of the new term from the heartbeats it still sends.
        g.run(2 * ELECTION_TICKS);
        assert_eq!(g.leader(), Some(next));
        assert_eq!(g.node(next).membership(), &m(&rest));
        g.node(next).propose(batch(7)).unwrap();
        g.run(2);
        for id in rest.clone() {
            let i = (id - 1) as usize;
            assert_eq!(g.applied[i].last(), Some(&batch(7)));
        }

        // Two voters at once: in through joint consensus, and out of it by itself.
        let mut swapped = vec![rest[0], first];
        swapped.sort_unstable();
        let cc = crate::reconfig::conf_change(&m(&rest), &m(&swapped));
        assert_eq!(cc.changes.len(), 2);
        g.node(next).propose_conf_change(cc.clone()).unwrap();
        assert!(matches!(
            g.node(next).propose_conf_change(cc),
            Err(ConsensusError::ChangeInProgress)
        ));
        g.run(2 * ELECTION_TICKS);
        let leader = g.leader().expect("a leader after the swap");
        assert!(!g.node(leader).is_joint());
        assert!(!g.node(leader).conf_change_pending());
        assert_eq!(g.node(leader).membership(), &m(&swapped));
    }

    /// A node's (term, leader, last index, commit index, log's (index, term)).
    type NodeState = (u64, Option<u64>, u64, u64, Vec<(u64, u64)>);

    fn state(g: &Group) -> Vec<NodeState> {
        g.nodes
            .iter()
            .map(|n| {
                let raft = &n.node.raft;
                let log = (1..=n.last_index())
                    .map(|i| (i, raft.raft_log.term(i).unwrap_or(0)))
                    .collect();
                (
                    n.term(),
                    n.leader_id(),
                    n.last_index(),
                    n.commit_index(),
                    log,
                )
            })
            .collect()
    }

    #[test]
    fn a_group_survives_hostile_messages() {
        use raft::eraftpb::MessageType as T;
        let mut g = Group::new(&[1, 2, 3]);
        g.run(5 * ELECTION_TICKS);
        let leader = g.leader().expect("a leader");
        g.node(leader).propose(batch(1)).unwrap();
        g.run(2);
        let others: Vec<u64> = [1, 2, 3].into_iter().filter(|&id| id != leader).collect();
        let (victim, attacker) = (others[0], others[1]);
        let before = state(&g);
        let term = g.node(victim).term();
        let last = g.node(victim).last_index();
        let current = term;
        let msg = |t: T, to: u64, term: u64| Message {
            msg_type: t,
            from: attacker,
            to,
            term,
            log_term: term.min(current),
            index: last,
            ..Default::default()
        };
        let entry = |index: u64, term: u64, data: Vec<u8>| Entry {
            index,
            term,
            data: data.into(),
            ..Default::default()
        };

        // Refused where they are decoded.
        let mut at_decode = Vec::new();
        for t in [
            T::MsgHeartbeat,
            T::MsgAppend,
            T::MsgRequestVote,
            T::MsgRequestPreVote,
        ] {
            for to in [victim, leader] {
                at_decode.push(msg(t, to, u64::MAX));
            }
        }
        // An undecodable entry from a "leader" at a later term.
        let mut m = msg(T::MsgAppend, victim, term + 1);
        m.log_term = term;
        m.entries = vec![entry(last + 1, term + 1, vec![0xde, 0xad])].into();
        at_decode.push(m);
        // Entries that do not follow one another.
        let mut m = msg(T::MsgAppend, victim, term + 1);
        m.log_term = term;
        m.entries = vec![
            entry(last + 2, term + 1, batch(2)),
            entry(last + 1, term + 1, batch(3)),
        ]
        .into();
        at_decode.push(m);
        for m in &at_decode {
            assert!(wire(m).is_err(), "{m:?} decoded");
            // And, should a message skip decoding, at step (the entries' data excepted, which
            // only the decoder reads).
            if m.entries.iter().all(|e| e.data.len() > 2) || m.term == u64::MAX {
                assert!(matches!(
                    g.node(m.to).step(attacker, m.clone()),
                    Err(ConsensusError::Refused(_))
                ));
            }
        }

        // Well-formed, refused against the member's state.
        let mut at_step = Vec::new();
        // A well-formed entry at the leader's own term from a member that is not the leader.
        let mut m = msg(T::MsgAppend, victim, term);
        m.log_term = term;
        m.entries = vec![entry(last + 1, term, batch(4))].into();
        at_step.push(m);
        at_step.push(msg(T::MsgHeartbeat, victim, term));
        at_step.push(msg(T::MsgTimeoutNow, victim, term));
        at_step.push(msg(T::MsgTimeoutNow, leader, term));
        // Another member's name on the attacker's link.
        let mut m = msg(T::MsgHeartbeat, victim, term);
        m.from = leader;
        at_step.push(m);
        for m in at_step {
            let m = wire(&m).expect("well-formed");
            let to = m.to;
            assert!(
                matches!(
                    g.node(to).step(attacker, m.clone()),
                    Err(ConsensusError::Refused(_))
                ),
                "{m:?} stepped"
            );
        }
        // A vote claiming a leader transfer: stepped as an ordinary vote, which the lease
        // ignores.
        let mut m = msg(T::MsgRequestVote, victim, term + 1);
        m.log_term = term;
        m.index = last + 10;
        m.context = raft_wire::CAMPAIGN_TRANSFER.into();
        let m = wire(&m).expect("well-formed");
        g.node(victim).step(attacker, m).unwrap();

        g.run(1);
        assert_eq!(state(&g), before, "no change of term, leader or log");
        g.run(3 * ELECTION_TICKS);
        assert_eq!(g.leader(), Some(leader));
        g.node(leader).propose(batch(5)).unwrap();
        g.run(2);
        for applied in &g.applied {
            assert_eq!(applied.last(), Some(&batch(5)));
            assert!(!applied.contains(&batch(4)));
        }
    }
}
