//! One member: the real `Consensus` and `Machine` inside a simulated shell that does what
//! `server::sequencer` does, in the same order, with simulated I/O:
//!
//! * `poll` → send `messages` now; hand `entries` + `hard_state` to the disk (group commit);
//!   apply `committed` (already durable on a quorum and locally);
//! * sync done → `persisted(number)`, then send that ready's `persisted_messages`;
//! * an empty entry is a new leader's no-op; `applied(index)` after each apply round;
//! * a `MsgSnapshot` is streamed with the machine's state, a snapshot raft takes replaces the
//!   machine (see `snap`);
//! * a client's sync asks raft for a read index (`read_index`, again every 500 ms until
//!   answered) and is answered, with a read, once that index is applied.
//!
//! A crash drops the `Consensus` and `Machine`; a restart rebuilds them from the durable state
//! exactly as start-up does (the newest received snapshot, the log after it, the hard state:
//! `Consensus::new(id, members, snapshot, entries, hard_state)`, and the snapshot's machine or
//! a fresh one that re-applies what raft hands out again).
//!
//! The shell never takes snapshots of its own and never compacts its disk log; raft's
//! in-memory log is compacted by `Consensus::applied` past 2 × 1024 applied entries, after
//! which a member that fell behind needs a snapshot (the lagging profile). `apply` fails
//! loudly if raft ever hands out a gap.

use std::collections::{BTreeMap, BTreeSet};

use raft::eraftpb::{Entry, HardState, Message, MessageType};
use rand::Rng;
use ringkeeper::config::MemberSpec;
use ringkeeper::consensus::{
    is_conf_change, Consensus, Membership, StoredEntry, ELECTION_TICKS, TICK_MS,
};
use ringkeeper::machine::{Machine, MachineConfig};
use ringkeeper::reconfig;
use ringkeeper::snapshot;
use ringkeeper::txn::{Batch, Command, Op};

use super::client::{origin_member, Reply, Request, SyncRequest};
use super::disk::{Disk, Record, Write, MAX_BACKLOG};
use super::world::{Time, MS, SEC};
use super::{Event, Sim};

/// Requests a leader holds before sealing them into a proposal; more are answered Busy.
const MAX_PENDING: usize = 512;
/// Commands in one proposal at most (the sequencer's MAX_BATCH_COMMANDS, scaled down).
const MAX_BATCH_COMMANDS: usize = 64;
/// Proposals a member remembers, to reply once they apply; beyond it the client's timeout
/// covers the reply.
const MAX_WAITING: usize = 4096;
/// A proposal not applied after this long is forgotten (its client has long retried).
const WAITING_TTL: Time = 30 * SEC;
/// The leader's clock starts here (ms since the epoch) plus the member's skew.
const WALL_CLOCK_BASE_MS: i64 = 1_700_000_000_000;
/// A sync's ReadIndex request is repeated this often until answered (sequencer SYNC_RETRY).
const SYNC_RETRY: Time = 500 * MS;
/// As the real shell: a snapshot sent and not acknowledged by then is sent again.
pub const SNAPSHOT_INSTALL_TIMEOUT: Time = 10 * SEC;

pub struct Member {
    /// Raft id (1-based; the member's index is id - 1).
    pub id: u64,
    /// Incarnation: bumped by every crash, so events of a dead incarnation are ignored.
    pub life: u32,
    pub disk: Disk,
    /// `None` while crashed.
    pub node: Option<Node>,
}

/// The volatile part of a member: gone in a crash.
pub struct Node {
    pub consensus: Consensus,
    pub machine: Machine,
    pub applied_index: u64,
    /// The last log index the shell was given to persist (or recovered): raft's last index
    /// may not pass it without entries going through the shell.
    log_tail: u64,
    pending: Vec<Request>,
    flush_scheduled: bool,
    /// Proposals this incarnation made, by origin, waiting to be applied.
    waiting: BTreeMap<u64, Waiting>,
    /// The leader's wall clock never goes backwards (sequencer `now_ms`).
    last_time_ms: i64,
    /// (leader, term) as last traced, and since when.
    seen_role: (Option<u64>, u64),
    seen_since: Time,
    /// Members a snapshot is being streamed to (one at a time each).
    pub transfers: BTreeSet<u64>,
    /// Members that received a snapshot and have not acknowledged it, and until when (the real
    /// shell reports a sent snapshot to raft only through the member's acknowledgement, or
    /// as failed after a timeout).
    pub installs: std::collections::BTreeMap<u64, Time>,
    /// A snapshot from the leader is being checked and stored.
    pub installing: bool,
    /// The state of the last snapshot received, for raft to install: (index, machine).
    pub incoming: Option<(u64, Machine)>,
    /// An installed snapshot's (ready number, index): raft hears it is applied once that
    /// ready is durable.
    pub installed: Option<(u64, u64)>,
    /// Syncs waiting for their read index, by context number (per incarnation, from 1, as
    /// the sequencer numbers them).
    syncs: BTreeMap<u64, SyncWait>,
    next_sync: u64,
    /// Syncs with a read index, answered once it is applied.
    ready_syncs: Vec<(u64, SyncWait)>,
}

struct SyncWait {
    req: SyncRequest,
    asked: Time,
}

struct Waiting {
    client: usize,
    proposed_at: Time,
    /// The partition epoch if the member was in its minority when it proposed.
    minority: Option<u64>,
}

impl Node {
    /// Nothing waiting to be proposed.
    pub fn is_quiet(&self) -> bool {
        self.pending.is_empty()
    }

    /// When the (leader, term) this member sees last changed.
    pub fn role_since(&self) -> Time {
        self.seen_since
    }
}

impl Member {
    pub fn new(id: u64) -> Member {
        Member {
            id,
            life: 0,
            disk: Disk::new(),
            node: None,
        }
    }
}

/// After every call that may reset raft's randomized election timeout (a tick or a step that
/// changes role or term), set it to a value that depends only on the seed and raft's state.
pub fn pin_election_timeout(c: &mut Consensus, seed: u64, id: u64) {
    let have = c.randomized_election_timeout();
    let mut h = seed ^ 0x9e37_79b9_7f4a_7c15;
    for v in [id, c.term(), c.leader_id().unwrap_or(0), c.last_index()] {
        h = (h ^ v).wrapping_mul(0x0100_0000_01b3).rotate_left(17);
    }
    let want = ELECTION_TICKS + (h % ELECTION_TICKS as u64) as usize;
    if have != want {
        c.set_randomized_election_timeout(want);
    }
}

pub fn decode_batch(index: u64, data: &[u8]) -> Result<Batch, String> {
    Batch::decode(data).map_err(|e| format!("log entry {index} does not decode: {e}"))
}

impl Sim {
    /// Start-up (first boot or restart after a crash) from the durable state (sequencer `run`).
    pub fn start_member(&mut self, m: usize) -> Result<(), String> {
        let id = self.members[m].id;
        let voters: Vec<u64> = (1..=self.members.len() as u64).collect();
        let durable = &self.members[m].disk.durable;
        let mut snapshot_members = None;
        let (machine, snapshot_at) = match &durable.snapshot {
            Some(s) => {
                let (meta, machine) = snapshot::decode(&s.bytes, MachineConfig::default())
                    .map_err(|e| format!("member {id}: its snapshot does not load: {e}"))?;
                if (meta.index, meta.term) != (s.index, s.term) {
                    return Err(format!(
                        "member {id}: the snapshot stored for ({}, {}) is at ({}, {})",
                        s.index, s.term, meta.index, meta.term
                    ));
                }
                snapshot_members = Some(meta.membership());
                (machine, Some((meta.index, meta.term)))
            }
            None => (Machine::new(MachineConfig::default()), None),
        };
        let snap_index = snapshot_at.map_or(0, |s| s.0);
        let log = durable.log_after_snapshot();
        if let Some(first) = log.first().filter(|e| e.index > snap_index + 1) {
            return Err(format!(
                "member {id} cannot start: the log starts at entry {} but no snapshot covers                  the entries before it (snapshot: {snap_index})",
                first.index
            ));
        }
        let entries: Vec<StoredEntry> = log.iter().map(StoredEntry::from).collect();
        let hard_state = durable.hard_state;
        let restored = entries.len();
        let log_tail = entries.last().map_or(snap_index, |e| e.index);
        let configured = Membership {
            voters,
            learners: Vec::new(),
            joint: None,
        };
        let view = machine.view();
        let loaded = snapshot_members.map(|members| (&view, members));
        let members = reconfig::starting_membership(configured, false, loaded);
        let mut consensus = Consensus::new(id, &members, snapshot_at, entries, hard_state)
            .map_err(|e| format!("member {id} cannot start from its log: {e}"))?;
        pin_election_timeout(&mut consensus, self.cfg.seed, id);
        if snapshot_at.is_some() {
            self.checker.snapshot_state(id, snap_index, machine.view());
        }
        let now = self.q.now();
        let member = &mut self.members[m];
        member.node = Some(Node {
            consensus,
            machine,
            applied_index: snap_index,
            log_tail,
            pending: Vec::new(),
            flush_scheduled: false,
            waiting: BTreeMap::new(),
            last_time_ms: 0,
            seen_role: (None, 0),
            seen_since: now,
            transfers: BTreeSet::new(),
            installs: Default::default(),
            installing: false,
            incoming: None,
            installed: None,
            syncs: BTreeMap::new(),
            next_sync: 1,
            ready_syncs: Vec::new(),
        });
        let life = member.life;
        self.note_major(format!(
            "member {id} starts (life {life}, snapshot {snapshot_at:?}, {restored} entries, \
             hard state {hard_state:?})"
        ));
        // A random phase, so that members do not tick in lockstep.
        let phase = self.rng.gen_range(0..TICK_MS * MS);
        self.q.after(phase, Event::Tick { m, life });
        self.pump(m)
    }

    /// The leader changes who votes (sequencer `reconfigure`): 3 to all members vote, the
    /// others observe, and the new list goes with the change as `/zookeeper/config`.
    pub fn reconfigure(&mut self) -> Result<(), String> {
        let n = self.members.len();
        let Some(l) = (0..n).find(|&m| {
            self.members[m]
                .node
                .as_ref()
                .is_some_and(|x| x.consensus.is_leader())
        }) else {
            return Ok(());
        };
        let mut order: Vec<u64> = (1..=n as u64).collect();
        for i in (1..n).rev() {
            order.swap(i, self.rng.gen_range(0..=i));
        }
        let k = self.rng.gen_range(super::MIN_VOTERS..=n);
        let learners = &order[k..];
        let next = Membership::from(&raft::eraftpb::ConfState::from((
            order[..k].to_vec(),
            learners.to_vec(),
        )));
        let list: Vec<MemberSpec> = (1..=n as u64)
            .map(|id| MemberSpec {
                id,
                peer: format!("10.0.0.{id}:2888"),
                election: None,
                client: None,
                observer: learners.contains(&id),
            })
            .collect();
        let time_ms = self.now_ms(l);
        let id = self.members[l].id;
        let node = self.members[l].node.as_mut().expect("live");
        let mut cc = reconfig::conf_change(node.consensus.membership(), &next);
        if cc.changes.is_empty() {
            return Ok(());
        }
        let batch = Batch {
            time_ms,
            commands: vec![Command {
                session: 0,
                xid: 0,
                origin: 0,
                auth: Vec::new(),
                seen_zxid: i64::MAX,
                op: Op::SetConfig {
                    members: reconfig::format(&list),
                },
            }],
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&batch)
            .map_err(|e| format!("cannot serialize a batch: {e}"))?;
        cc.context = bytes.to_vec().into();
        match node.consensus.propose_conf_change(cc) {
            Ok(()) => {
                self.reconfigs += 1;
                self.note_major(format!(
                    "member {id} proposes a configuration: voters {:?}, observers {:?}",
                    next.voters, next.learners
                ))
            }
            Err(e) => self.note(format!("member {id}: configuration change refused: {e}")),
        }
        self.pump(l)
    }

    pub fn crash(&mut self, m: usize) {
        let torn = self.cfg.torn_writes;
        let member = &mut self.members[m];
        member.node = None;
        member.life += 1;
        member.disk.crash(&mut self.rng, torn);
        self.crashes += 1;
        let id = self.members[m].id;
        let kept = self.members[m].disk.durable.entries.len();
        self.note_major(format!("member {id} crashes (durable log: {kept} entries)"));
    }

    fn live(&mut self, m: usize, life: u32) -> Option<&mut Node> {
        let member = &mut self.members[m];
        if member.life != life {
            return None;
        }
        member.node.as_mut()
    }

    pub fn on_tick(&mut self, m: usize, life: u32) -> Result<(), String> {
        let (seed, id, now) = (self.cfg.seed, self.members[m].id, self.q.now());
        let Some(node) = self.live(m, life) else {
            return Ok(());
        };
        node.consensus.tick();
        pin_election_timeout(&mut node.consensus, seed, id);
        let consensus = &mut node.consensus;
        node.installs.retain(|&member, until| {
            if !consensus.snapshotting(member) {
                return false;
            }
            if now < *until {
                return true;
            }
            consensus.snapshot_sent(member, false);
            false
        });
        for (ctx, wait) in node.syncs.iter_mut() {
            if now >= wait.asked + SYNC_RETRY {
                wait.asked = now;
                node.consensus.read_index(ctx.to_le_bytes().to_vec());
            }
        }
        let jitter = self.cfg.tick_jitter;
        let period = TICK_MS * MS - jitter + self.rng.gen_range(0..=2 * jitter);
        self.q.after(period, Event::Tick { m, life });
        self.pump(m)
    }

    pub fn on_peer(&mut self, from: usize, to: usize, msg: Message) -> Result<(), String> {
        self.net.in_flight -= 1;
        if !self.net.connected(from, to) {
            return Ok(()); // cut while in flight
        }
        let (seed, id) = (self.cfg.seed, self.members[to].id);
        let sender = self.members[from].id;
        let Some(node) = self.members[to].node.as_mut() else {
            return Ok(());
        };
        // Through the wire codec, as between real members: a member's own message always
        // decodes (a structural check that refused one would split the ensemble). Checks
        // against the receiver's state may refuse a stale one (`step` below).
        let msg = {
            use ringkeeper::peer_proto::{decode, encode, PeerMsg};
            let mut buf = Vec::new();
            encode(&PeerMsg::Raft(msg), &mut buf).map_err(|e| e.to_string())?;
            match decode(&buf[4..]).map_err(|e| e.to_string())? {
                PeerMsg::Raft(m) => m,
                other => {
                    return Err(format!(
                        "member {id}: {sender}'s message refused: {other:?}"
                    ))
                }
            }
        };
        if let Err(e) = node.consensus.step(sender, msg) {
            // Raft refuses some messages by design (e.g. from a peer it does not know), and
            // `raft_guard` stale ones (a ReadIndex answer from a deposed leader); the ensemble
            // shell would log and drop them.
            self.note_major(format!("member {id}: step refused: {e}"));
            return Ok(());
        }
        let node = self.members[to].node.as_mut().expect("just used");
        pin_election_timeout(&mut node.consensus, seed, id);
        self.pump(to)
    }

    pub fn send_peer(&mut self, from: usize, msg: Message) {
        let to = msg.to as usize - 1;
        if self.members[to].node.is_none() {
            // The peer's process is gone: the write on its link fails, and the shell reports
            // it (peer `PeerEvent::Down` → `Consensus::unreachable`).
            if let Some(node) = self.members[from].node.as_mut() {
                node.consensus.unreachable(msg.to);
            }
        }
        for delay in self.net.plan_peer(&mut self.rng, from, to) {
            self.q.after(
                delay,
                Event::Peer {
                    from,
                    to,
                    msg: msg.clone(),
                },
            );
        }
    }

    /// A client request: a leader gathers it for the next proposal, anyone else says where the
    /// leader is (the ensemble would forward it; the client retries instead).
    pub fn on_request(&mut self, m: usize, req: Request) -> Result<(), String> {
        let backlog = self.members[m].disk.backlog();
        let Some(node) = self.members[m].node.as_mut() else {
            return Ok(()); // the connection died with the member
        };
        let origin = req.cmd.origin;
        let client = req.client;
        if !node.consensus.is_leader() {
            let leader = node.consensus.leader_id();
            self.send_to_client(m, client, Reply::NotLeader { origin, leader });
            return Ok(());
        }
        if node.pending.len() >= MAX_PENDING || backlog >= MAX_BACKLOG {
            self.send_to_client(m, client, Reply::Busy { origin });
            return Ok(());
        }
        node.pending.push(req);
        if !node.flush_scheduled {
            node.flush_scheduled = true;
            let life = self.members[m].life;
            // Requests arriving within this window share one proposal (the sequencer batches
            // whatever queued while it was busy).
            let delay = self.rng.gen_range(0..300);
            self.q.after(delay, Event::Flush { m, life });
        }
        Ok(())
    }

    /// The leader's wall clock for a batch stamp: virtual time, the member's skew, monotonic.
    fn now_ms(&mut self, m: usize) -> i64 {
        let wall = WALL_CLOCK_BASE_MS + (self.q.now() / MS) as i64 + self.cfg.clock_skew_ms[m];
        let node = self.members[m].node.as_mut().expect("a live member");
        node.last_time_ms = node.last_time_ms.max(wall);
        node.last_time_ms
    }

    /// Seal what is pending into proposals (sequencer `propose`).
    pub fn on_flush(&mut self, m: usize, life: u32) -> Result<(), String> {
        let Some(node) = self.live(m, life) else {
            return Ok(());
        };
        node.flush_scheduled = false;
        let requests = std::mem::take(&mut node.pending);
        if requests.is_empty() {
            return Ok(());
        }
        let leader = node.consensus.is_leader();
        let leader_id = node.consensus.leader_id();
        if !leader {
            for r in requests {
                let origin = r.cmd.origin;
                let leader = leader_id;
                self.send_to_client(m, r.client, Reply::NotLeader { origin, leader });
            }
            return Ok(());
        }
        let time_ms = self.now_ms(m);
        let now = self.q.now();
        let minority = self.net.minority_epoch(m);
        if minority.is_some() {
            self.minority_proposals += 1;
        }
        for chunk in requests.chunks(MAX_BATCH_COMMANDS) {
            let batch = Batch {
                time_ms,
                commands: chunk.iter().map(|r| r.cmd.clone()).collect(),
            };
            let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&batch)
                .map_err(|e| format!("cannot serialize a batch: {e}"))?;
            let node = self.members[m].node.as_mut().expect("live");
            match node.consensus.propose(bytes.to_vec()) {
                Ok(()) => {
                    node.waiting
                        .retain(|_, w| w.proposed_at + WAITING_TTL > now);
                    for r in chunk {
                        if node.waiting.len() < MAX_WAITING {
                            node.waiting.insert(
                                r.cmd.origin,
                                Waiting {
                                    client: r.client,
                                    proposed_at: now,
                                    minority,
                                },
                            );
                        }
                        self.checker.proposed(r.cmd.origin);
                    }
                    if self.trace.echo() {
                        let (id, n) = (self.members[m].id, chunk.len());
                        let index = self.members[m]
                            .node
                            .as_ref()
                            .map_or(0, |n| n.consensus.last_index());
                        self.note(format!(
                            "member {id} proposes {n} command(s) at index {index}"
                        ));
                    }
                }
                Err(e) => {
                    let leader = node.consensus.leader_id();
                    let id = self.members[m].id;
                    self.note(format!("member {id}: proposal refused: {e}"));
                    for r in chunk {
                        let origin = r.cmd.origin;
                        self.send_to_client(m, r.client, Reply::NotLeader { origin, leader });
                    }
                }
            }
        }
        self.pump(m)
    }

    /// Drain every ready (sequencer `pump`): send, persist, apply.
    pub fn pump(&mut self, m: usize) -> Result<(), String> {
        loop {
            let id = self.members[m].id;
            let now = self.q.now();
            let Some(node) = self.members[m].node.as_mut() else {
                return Ok(());
            };
            let mut out = match node.consensus.poll() {
                Ok(Some(out)) => out,
                Ok(None) => break,
                Err(e) => return Err(format!("member {id}: poll failed: {e}")),
            };
            if let Some((index, _)) = out.snapshot {
                node.log_tail = index;
            }
            if let Some(e) = out.entries.last() {
                node.log_tail = e.index;
            }
            if node.consensus.last_index() > node.log_tail {
                // Entries raft holds that never went through the shell (nor to its disk).
                return Err(format!(
                    "member {id}: raft's log jumped to {} past the {} the shell was handed \
                     (snapshot or entries); the machine is at applied index {}",
                    node.consensus.last_index(),
                    node.log_tail,
                    node.applied_index
                ));
            }
            let role = (node.consensus.leader_id(), node.consensus.term());
            if role != node.seen_role {
                node.seen_since = now;
                if role.0.is_some() && role.0 != node.seen_role.0 && node.consensus.is_leader() {
                    self.leader_changes += 1;
                }
                let node = self.members[m].node.as_mut().expect("live");
                node.seen_role = role;
                let me = if node.consensus.is_leader() {
                    " (me)"
                } else {
                    ""
                };
                self.note_major(format!(
                    "member {id}: term {} leader {:?}{me}",
                    role.1, role.0
                ));
            }
            for msg in std::mem::take(&mut out.messages) {
                if msg.get_msg_type() == MessageType::MsgSnapshot {
                    self.send_snapshot(m, msg)?;
                } else {
                    self.send_peer(m, msg);
                }
            }
            if let Some((index, _)) = out.snapshot {
                self.install_snapshot(m, out.number, index)?;
            }
            let node = self.members[m].node.as_mut().expect("live");
            for (ctx, index) in std::mem::take(&mut out.read_states) {
                let ctx = ctx.try_into().map(u64::from_le_bytes).unwrap_or(0);
                if let Some(wait) = node.syncs.remove(&ctx) {
                    node.ready_syncs.push((index, wait));
                }
            }
            self.persist(
                m,
                out.number,
                out.entries,
                out.hard_state,
                out.must_persist,
                out.persisted_messages,
            );
            self.apply(m, out.committed)?;
        }
        self.answer_syncs(m);
        Ok(())
    }

    /// A client's sync arrives (sequencer `ToSequencer::Sync`). A member that knows no leader
    /// does not serve (its clients are disconnected): the client tries again.
    pub fn on_sync(&mut self, m: usize, req: SyncRequest) -> Result<(), String> {
        let now = self.q.now();
        let Some(node) = self.members[m].node.as_mut() else {
            // Nobody listens there: the connection is refused, the client tries elsewhere.
            let (client, attempt) = (req.client, req.attempt);
            self.send_to_client(m, client, Reply::SyncDropped { attempt });
            return Ok(());
        };
        if node.consensus.leader_id().is_none() {
            let (client, attempt) = (req.client, req.attempt);
            self.send_to_client(m, client, Reply::SyncDropped { attempt });
            return Ok(());
        }
        let ctx = node.next_sync;
        node.next_sync += 1;
        node.syncs.insert(ctx, SyncWait { req, asked: now });
        node.consensus.read_index(ctx.to_le_bytes().to_vec());
        self.pump(m)
    }

    /// Answers the syncs whose read index is applied, each with its read of the machine
    /// (sequencer `publish`); then, while no leader is known, drops the others
    /// (`check_leader`: the member stops serving and disconnects its clients).
    fn answer_syncs(&mut self, m: usize) {
        let now = self.q.now();
        let id = self.members[m].id;
        let Some(node) = self.members[m].node.as_mut() else {
            return;
        };
        if node.syncs.is_empty() && node.ready_syncs.is_empty() {
            return;
        }
        let mut replies = Vec::new();
        let applied = node.applied_index;
        let view = node.machine.view();
        let due: Vec<(u64, SyncWait)>;
        (due, node.ready_syncs) = std::mem::take(&mut node.ready_syncs)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        for (index, w) in due {
            let read = view
                .node(&w.req.path)
                .map(|n| (n.data().map(|d| d.to_vec()), n.stat()));
            self.checker
                .read(w.req.attempt, id, index, applied, read.clone(), now);
            let attempt = w.req.attempt;
            replies.push((
                w.req.client,
                Reply::Synced {
                    attempt,
                    applied,
                    read,
                },
            ));
        }
        if node.consensus.leader_id().is_none() {
            let waiting = std::mem::take(&mut node.syncs).into_values();
            let ready = std::mem::take(&mut node.ready_syncs)
                .into_iter()
                .map(|(_, w)| w);
            for w in waiting.chain(ready) {
                let attempt = w.req.attempt;
                replies.push((w.req.client, Reply::SyncDropped { attempt }));
            }
        }
        for (client, reply) in replies {
            self.send_to_client(m, client, reply);
        }
    }

    /// Hand a ready to the disk (sequencer `persist`). A ready that has nothing to write but
    /// carries persisted messages (a follower's append response for entries already staged by
    /// an earlier, still unsynced ready) must wait for every earlier ready: raft-rs requires
    /// readies to be persisted in order, and such a response tells the leader those entries
    /// are durable. It joins the group commit as an empty write, unless nothing is pending.
    fn persist(
        &mut self,
        m: usize,
        number: u64,
        entries: Vec<Entry>,
        hard_state: Option<HardState>,
        must_persist: bool,
        persisted_messages: Vec<Message>,
    ) {
        if !must_persist && persisted_messages.is_empty() {
            return;
        }
        if !must_persist && self.members[m].disk.idle() {
            for msg in persisted_messages {
                self.send_peer(m, msg);
            }
            return;
        }
        let mut records: Vec<Record> = entries.into_iter().map(Record::Entry).collect();
        if let Some(hs) = hard_state {
            records.push(Record::HardState(hs.term, hs.vote, hs.commit));
        }
        self.members[m].disk.submit(Write {
            number,
            records,
            persisted_messages,
        });
        self.start_sync(m);
    }

    fn start_sync(&mut self, m: usize) {
        if let Some(sync) = self.members[m].disk.start_sync() {
            let latency = self.rng.gen_range(self.cfg.disk_min..=self.cfg.disk_max);
            let life = self.members[m].life;
            self.q.after(latency, Event::DiskDone { m, life, sync });
        }
    }

    /// A sync completed: report it, then let out what waited for it.
    pub fn on_disk_done(&mut self, m: usize, life: u32, sync: u64) -> Result<(), String> {
        if self.members[m].life != life || self.members[m].node.is_none() {
            return Ok(()); // the crash took this sync with it
        }
        let writes = self.members[m].disk.complete(sync);
        let number = writes
            .iter()
            .map(|w| w.number)
            .max()
            .expect("a sync has writes");
        let node = self.members[m].node.as_mut().expect("checked");
        node.consensus.persisted(number);
        if let Some((ready, index)) = node.installed {
            if ready <= number {
                // The installed snapshot's ready is durable: only now may raft hear that its
                // index is applied (sequencer `Event::Persisted`).
                node.installed = None;
                node.consensus
                    .applied(index)
                    .map_err(|e| format!("member {}: applied({index}) failed: {e}", m + 1))?;
            }
        }
        for w in writes {
            for msg in w.persisted_messages {
                self.send_peer(m, msg);
            }
        }
        self.start_sync(m);
        self.pump(m)
    }

    /// Apply committed entries in order (sequencer `apply`); reply to the clients whose
    /// proposals these are.
    fn apply(&mut self, m: usize, committed: Vec<Entry>) -> Result<(), String> {
        let Some(last) = committed.last().map(|e| e.index) else {
            return Ok(());
        };
        let now = self.q.now();
        let id = self.members[m].id;
        let mut replies = Vec::new();
        {
            let Sim {
                members,
                checker,
                net,
                ..
            } = self;
            let node = members[m].node.as_mut().expect("a live member");
            for entry in &committed {
                if entry.index != node.applied_index + 1 {
                    return Err(format!(
                        "member {id} was handed entry {} to apply after {}: raft skipped \
                         entries (a snapshot?), which the shell cannot apply",
                        entry.index, node.applied_index
                    ));
                }
                let payload = if is_conf_change(entry) {
                    node.consensus
                        .apply_conf_change(entry)
                        .map_err(|e| format!("member {id}: change {}: {e}", entry.index))?
                        .ok_or_else(|| format!("member {id}: change {} was refused", entry.index))?
                } else {
                    entry.data.to_vec()
                };
                checker.entry(id, entry.index, entry.term, &payload)?;
                node.applied_index = entry.index;
                if payload.is_empty() {
                    continue; // a new leader's empty entry, or raft leaving a joint configuration
                }
                let batch = decode_batch(entry.index, &payload)?;
                let applied = node.machine.apply_batch(entry.term, &batch);
                for (pos, a) in applied.iter().enumerate() {
                    checker.app(id, entry.index, pos, &batch.commands[pos], a)?;
                    if origin_member(a.origin) != id {
                        continue;
                    }
                    let Some(w) = node.waiting.remove(&a.origin) else {
                        continue;
                    };
                    if let Some(epoch) = w.minority {
                        if net.partition.as_ref().is_some_and(|p| p.epoch == epoch) {
                            return Err(format!(
                                "member {id} acknowledged origin {:#x} (index {}) while in \
                                 the minority of partition {epoch}, in which it proposed it",
                                a.origin, entry.index
                            ));
                        }
                    }
                    checker.ack(id, a, entry.index, pos, now);
                    replies.push((
                        w.client,
                        Reply::Applied {
                            origin: a.origin,
                            zxid: a.zxid,
                            result: a.result.clone(),
                            duplicate: a.duplicate,
                        },
                    ));
                }
            }
            node.consensus
                .applied(last)
                .map_err(|e| format!("member {id}: applied({last}) failed: {e}"))?;
        }
        for (client, reply) in replies {
            self.send_to_client(m, client, reply);
        }
        Ok(())
    }
}
