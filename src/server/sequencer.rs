//! The sequencer: shard 0's loop around the consensus driver, the log and the state machine.
//!
//! Commands from every shard are gathered into one `Batch` per proposal; raft stages it, the
//! log group-commits it (one write+fdatasync in flight, everything that queued meanwhile in the
//! next), and once durable (on a quorum) it is applied and the result fanned out to every
//! shard. Nothing waits on a timer: batch size follows load.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use glommio::channels::shared_channel::{ConnectedSender, SharedReceiver, SharedSender};

use super::peer::{PeerEvent, Peers};
use super::{Diag, Origin, ServerError, Shared, ToSequencer, ToShard, Update};
use crate::config::MemberSpec;
use crate::consensus::{
    is_conf_change, Consensus, ConsensusError, Membership, Output, Role, StoredEntry, TICK_MS,
};
use crate::log::{snapshots, LogRecord, Wal, WalOptions};
use crate::machine::{Machine, MachineConfig};
use crate::peer_proto::PeerMsg;
use crate::proto::types::{ErrorCode, Id, SessionId};
use crate::reconfig::{self, CONFIG_NODE};
use crate::replica::intake::{self, Forwarded, Intake, Proposal, MAX_BATCH_COMMANDS};
use crate::replica::leadership::Leadership;
use crate::replica::snapshot_schedule::SnapshotSchedule;
use crate::replica::syncs::Syncs;
use crate::replica::transfers::{Stream, Transfers};
use crate::txn::{Applied, Batch, Command, Op, ReconfigOp};
use raft::eraftpb::{ConfChangeV2, EntryType, MessageType};

/// Log bytes waiting for the disk above which nothing new is proposed: commands wait in
/// `pending` (bounded upstream by each connection's limit) instead of piling up in the log's
/// buffer, which refuses to grow past its own hard limit.
const MAX_LOG_BACKLOG: usize = 16 << 20;
/// The leader sends its tree digest this often; members keep their own for this many entries.
const DIGEST_INTERVAL: Duration = Duration::from_secs(1);

enum Event {
    Shard(ToSequencer),
    Persisted(u64),
    WalFailed(String),
    Snapshot(SnapshotDone),
    Peer(PeerEvent),
    /// A snapshot streamed to a member that fell behind (or why not): its size in bytes.
    SnapshotSent {
        to: u64,
        result: Result<u64, String>,
    },
    /// A snapshot from the leader, checked and on disk, with the raft message to step once
    /// the state is at hand.
    SnapshotReceived {
        msg: Box<raft::eraftpb::Message>,
        result: Result<(u64, Box<Machine>), String>,
    },
    Tick,
}

impl From<PeerEvent> for Event {
    fn from(e: PeerEvent) -> Event {
        Event::Peer(e)
    }
}

pub async fn run(
    shared: Arc<Shared>,
    from_shards: Vec<SharedReceiver<ToSequencer>>,
    to_shards: Vec<SharedSender<ToShard>>,
) -> Result<(), ServerError> {
    let config = &shared.config;
    // Links first: a shard's sender to the sequencer polls until its receiver connects, and
    // would burn a core for the whole snapshot load and log read.
    let (inbox_tx, inbox) = async_channel::unbounded::<Event>();
    for rx in from_shards {
        let tx = inbox_tx.clone();
        glommio::spawn_local(async move {
            let rx = rx.connect().await;
            while let Some(msg) = rx.recv().await {
                if tx.send(Event::Shard(msg)).await.is_err() {
                    break;
                }
            }
        })
        .detach();
    }
    // Senders connect once their receivers do; the receivers above are already connecting.
    let mut links = Vec::with_capacity(to_shards.len());
    for tx in to_shards {
        links.push(tx.connect().await);
    }
    {
        let tx = inbox_tx.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(Duration::from_millis(TICK_MS)).await;
                if tx.send(Event::Tick).await.is_err() {
                    break;
                }
            }
        })
        .detach();
    }

    let machine_config = config.machine_config();
    let snap_dir = snapshots::dir_of(&config.data_dir);
    let started = Instant::now();
    // The snapshot loads on a thread of its own while this executor reads the log.
    let (loaded_tx, loaded_rx) = async_channel::bounded(1);
    {
        let (dir, config) = (snap_dir.clone(), machine_config.clone());
        std::thread::Builder::new()
            .name("rk-snapshot-load".into())
            .spawn(move || {
                let _ = loaded_tx.send_blocking(snapshots::load_newest(&dir, &config));
            })?;
    }
    let (wal, recovery) = Wal::open(
        &super::log_dir(config),
        WalOptions {
            segment_bytes: config.log_segment_bytes,
            ..Default::default()
        },
    )
    .await?;
    let (loaded, bad_snapshots) = loaded_rx
        .recv()
        .await
        .map_err(|_| ServerError::Startup("the snapshot loader thread died".into()))??;
    if let Some(l) = &loaded {
        tracing::info!(
            file = %l.path.display(),
            index = l.meta.index,
            zxid = format!("{:#x}", l.meta.last_zxid),
            nodes = l.machine.view().node_count(),
            ms = started.elapsed().as_millis() as u64,
            "snapshot loaded"
        );
    }
    if let Some((file, offset)) = &recovery.truncated_tail {
        tracing::warn!(file = %file.display(), offset, "truncated a torn record at the log tail");
    }
    let snap_index = loaded.as_ref().map_or(0, |l| l.meta.index);
    let entries: Vec<StoredEntry> = recovery
        .entries
        .into_iter()
        .filter(|e| e.index > snap_index)
        .map(|e| StoredEntry {
            index: e.index,
            term: e.term,
            data: e.data,
            conf_change: e.conf_change,
        })
        .collect();
    let log_start = entries.first().map(|e| e.index);
    if log_start.is_some_and(|first| first > snap_index + 1) {
        // The entries in between were compacted into a snapshot that no longer loads.
        let why = match bad_snapshots.into_iter().next() {
            Some(e) => format!(" ({e})"),
            None => String::new(),
        };
        return Err(ServerError::Startup(format!(
            "the log starts at entry {} but no usable snapshot covers the entries before it{why}",
            log_start.unwrap_or(0)
        )));
    }
    let replayed = entries.len();
    let mut last_snapshot_bytes = 0;
    let (machine, snapshot_at, snapshot_members) = match loaded {
        Some(l) => {
            last_snapshot_bytes = std::fs::metadata(&l.path).map_or(0, |m| m.len());
            let members = l.meta.membership();
            (l.machine, Some((l.meta.index, l.meta.term)), Some(members))
        }
        None => (Machine::new(machine_config.clone()), None, None),
    };
    let configured = Membership {
        voters: config.voters(),
        learners: config.learners(),
        joint: None,
    };
    let membership = if config.is_ensemble() {
        let view = machine.view();
        let loaded = snapshot_members.map(|m| (&view, m));
        reconfig::starting_membership(configured, config.join, loaded)
    } else {
        configured
    };
    let consensus = Consensus::new(
        config.server_id,
        &membership,
        snapshot_at,
        entries,
        recovery.hard_state,
    )?;
    let peers = if config.is_ensemble() {
        Some(Rc::new(Peers::start(shared.clone(), inbox_tx.clone())?))
    } else {
        None
    };

    let mut seq = Sequencer {
        shared: shared.clone(),
        wal: Rc::new(wal),
        consensus,
        machine,
        intake: Intake::new(config.tick_time_ms as i64),
        links,
        inbox_tx,
        last_time_ms: 0,
        next_reap: Instant::now(),
        last_tick: Instant::now(),
        unpersisted: 0,
        replay_until: None,
        round: 0,
        snap_dir,
        snapshots: SnapshotSchedule::new(config.snap_count, config.snap_bytes, last_snapshot_bytes),
        clock: Instant::now(),
        applied_index: snap_index,
        max_entry_bytes: (config.log_segment_bytes as usize)
            .min(crate::log::record::MAX_PAYLOAD_LEN),
        compaction: None,
        proposed_at: Default::default(),
        peers,
        members: Vec::new(),
        config_zxid: -1,
        leadership: Leadership::default(),
        published_first: false,
        syncs: Syncs::new(shared.instance),
        machine_config,
        transfers: Transfers::default(),
        installing: false,
        incoming: None,
        installed: None,
        proposal_sizes: None,
        drop_writers: None,
        digests: Default::default(),
        next_digest: Instant::now(),
    };
    // A single member replays its whole log: it is the leader, everything in it was (or will
    // be, in its new term) committed, and acknowledged writes may lie beyond the commit index
    // on disk (it is not synced on its own). A member of an ensemble replays what it knows to
    // be committed; the leader tells it the rest.
    let until = if config.is_ensemble() {
        seq.consensus.commit_index()
    } else {
        seq.consensus.last_index()
    };
    seq.replay_until = (until > snap_index).then_some(until);
    seq.follow_config();
    tracing::info!(entries = replayed, "log replay starting");
    let result = seq.run_loop(&inbox).await;
    // Whatever ended the loop, the shards must stop too, or the process would never exit.
    seq.shut_down(result).await
}

struct Sequencer {
    shared: Arc<Shared>,
    wal: Rc<Wal>,
    consensus: Consensus,
    machine: Machine,
    /// The commands waiting to be proposed, and the leader's rules on them.
    intake: Intake,
    links: Vec<ConnectedSender<ToShard>>,
    inbox_tx: async_channel::Sender<Event>,
    last_time_ms: i64,
    next_reap: Instant,
    last_tick: Instant,
    /// Readies submitted to the log and not yet durable.
    unpersisted: usize,
    /// Until the replayed log is applied, the member does not serve.
    replay_until: Option<u64>,
    /// Apply rounds published so far.
    round: u64,
    snap_dir: std::path::PathBuf,
    snapshots: SnapshotSchedule,
    /// The origin of the monotonic milliseconds the sans-IO parts take (`mono_ms`).
    clock: Instant,
    /// The last log index applied.
    applied_index: u64,
    /// The largest log entry the log accepts (see `seal`).
    max_entry_bytes: usize,
    /// The latest log compaction (it holds the log until it ends; each waits for the one
    /// before it).
    compaction: Option<glommio::Task<()>>,
    /// (last log index, time) of each proposal not yet committed, for `commit_latency_us`.
    proposed_at: std::collections::VecDeque<(u64, Instant)>,
    /// Links to the other members (none when standalone).
    peers: Option<Rc<Peers>>,
    /// The members and their addresses (`/zookeeper/config`, or the static configuration
    /// until a reconfig writes it), and the zxid that last changed them.
    members: Vec<MemberSpec>,
    config_zxid: i64,
    /// The leader as last seen, and whether this member serves.
    leadership: Leadership,
    /// Whether the shards have their first view (they listen only once they do).
    published_first: bool,
    /// sync requests, waiting for their read index or for it to be applied.
    syncs: Syncs,
    machine_config: MachineConfig,
    /// Snapshots streamed to members that fell behind.
    transfers: Transfers,
    /// A snapshot from the leader is being checked and stored.
    installing: bool,
    /// The state of the last snapshot received, for raft to install: (index, machine).
    incoming: Option<(u64, Machine)>,
    /// This member's tree digests per applied entry, and the leader's, compared.
    digests: crate::digest::DigestLog,
    next_digest: Instant,
    /// Connections with writes in flight are to be closed, and why (see `drop_writers`).
    drop_writers: Option<&'static str>,
    /// Proposal sizes in bytes (last, min, max), for mntr.
    proposal_sizes: Option<(i64, i64, i64)>,
    /// An installed snapshot's (ready number, index): raft hears it is applied once that
    /// ready is durable.
    installed: Option<(u64, u64)>,
}

/// A snapshot written by the background thread (or why not).
struct SnapshotDone {
    index: u64,
    result: Result<(std::path::PathBuf, crate::snapshot::Summary), snapshots::SnapshotFileError>,
    took: Duration,
}

impl Sequencer {
    async fn run_loop(
        &mut self,
        inbox: &async_channel::Receiver<Event>,
    ) -> Result<(), ServerError> {
        if self.replay_until.is_none() {
            self.publish_first().await;
        }
        self.pump().await?;
        self.check_leader().await;
        while let Ok(event) = inbox.recv().await {
            self.handle(event)?;
            // Drain whatever else is already queued before proposing: this is the batching.
            while let Ok(event) = inbox.try_recv() {
                self.handle(event)?;
            }
            if let Some(e) = self.wal.failure() {
                // Noticed here too, not only through a write waiting on the log: with every
                // write refused (disk full), none may be waiting.
                return Err(ServerError::LogFailed(e.to_string()));
            }
            let stopping = self.shared.shutdown.load(Ordering::SeqCst);
            if stopping {
                // Writes not yet proposed were never acknowledged: drop them; finish the rest.
                self.intake.clear();
            }
            self.propose()?;
            self.pump().await?;
            self.check_leader().await;
            self.publish_gauges();
            if stopping && self.unpersisted == 0 {
                break;
            }
        }
        Ok(())
    }

    fn handle(&mut self, event: Event) -> Result<(), ServerError> {
        match event {
            Event::Shard(ToSequencer::Commands(cmds)) => {
                self.shared
                    .metrics
                    .sequencer_commands
                    .add(cmds.len() as u64);
                self.intake.push(cmds);
            }
            Event::Shard(ToSequencer::Touch(sessions)) => self.touch(sessions),
            Event::Shard(ToSequencer::Sync { origin, xid }) => {
                let now = self.mono_ms();
                let ctx = self.syncs.ask(origin.0, xid, now);
                self.consensus.read_index(ctx);
            }
            Event::Shard(ToSequencer::Attach { session, origin }) => {
                // Another connection of this member holding the session is stale: it closes.
                self.detach(session, origin);
                // On another member, its writes are answered SessionMoved from now on: the
                // leader hears where the session lives (on the link that then carries the
                // session's writes, so it hears it first).
                self.session_moved(session, self.shared.config.server_id);
                if let (Some(peers), Some(leader)) = (&self.peers, self.leadership.known()) {
                    if leader != self.shared.config.server_id {
                        peers.send(leader, &PeerMsg::Attached(session));
                    }
                }
            }
            Event::Shard(ToSequencer::Collect(reply)) => {
                for link in &self.links {
                    let _ = link.try_send(ToShard::Collect(reply.clone()));
                }
                let _ = reply.try_send(Diag::Sessions(self.session_buckets()));
            }
            Event::Persisted(number) => {
                self.unpersisted -= 1;
                self.consensus.persisted(number);
                if let Some((ready, index)) = self.installed {
                    if ready <= number {
                        self.installed = None;
                        self.consensus.applied(index)?;
                    }
                }
            }
            Event::WalFailed(reason) => {
                // Never retry an fsync, never acknowledge what it did not cover: stop.
                return Err(ServerError::LogFailed(reason));
            }
            Event::Snapshot(done) => self.snapshot_done(done),
            Event::Peer(PeerEvent::Msg { from, msg }) => self.on_peer(from, msg),
            Event::Peer(PeerEvent::Snapshot { from, data, msg }) => {
                self.receive_snapshot(from, data, msg)
            }
            Event::SnapshotSent { to, result } => {
                let now = self.mono_ms();
                match result {
                    Ok(bytes) => {
                        // Reported to raft once the member acknowledges it (see `transfers`).
                        tracing::info!(peer = to, bytes, "snapshot sent");
                        self.transfers.sent(to, Some(bytes), now);
                    }
                    Err(e) => {
                        tracing::warn!(peer = to, "sending a snapshot failed: {e}");
                        self.transfers.sent(to, None, now);
                        self.consensus.snapshot_sent(to, false);
                    }
                }
            }
            Event::SnapshotReceived { msg, result } => {
                self.installing = false;
                match result {
                    Ok((index, machine)) => {
                        self.incoming = Some((index, *machine));
                        // `receive_snapshot` checked that the link's member sent it.
                        let from = msg.from;
                        match self.consensus.step(from, *msg) {
                            Err(ConsensusError::Refused(r)) => self.refused(from, &r.0),
                            Err(e) => {
                                tracing::warn!("the leader's snapshot message was refused: {e}")
                            }
                            Ok(()) => {}
                        }
                    }
                    Err(e) => tracing::error!("a snapshot from the leader was not usable: {e}"),
                }
            }
            Event::Peer(PeerEvent::Down(member)) => {
                self.consensus.unreachable(member);
                if self.leadership.known() == Some(member) && !self.consensus.is_leader() {
                    // Writes forwarded on the broken link may never have arrived.
                    self.drop_writers("the link to the leader broke");
                }
            }
            Event::Tick => self.tick(),
        }
        Ok(())
    }

    fn on_peer(&mut self, from: u64, msg: PeerMsg) {
        match msg {
            PeerMsg::Raft(m) if m.get_msg_type() == MessageType::MsgSnapshot => {
                // Only with its data (`PeerEvent::Snapshot`): raft alone would move on
                // without the state.
                tracing::warn!(peer = from, "a snapshot message without data; ignored");
            }
            PeerMsg::Raft(m) => match self.consensus.step(from, m) {
                Err(ConsensusError::Refused(r)) => self.refused(from, &r.0),
                Err(e) => tracing::debug!(peer = from, "raft message ignored: {e}"),
                Ok(()) => {}
            },
            PeerMsg::RaftRefused(reason) => self.refused(from, &reason),
            PeerMsg::Forward(commands) => {
                match self
                    .intake
                    .forward(from, commands, self.consensus.is_leader())
                {
                    Forwarded::Taken(n) => self.shared.metrics.forwarded_in.add(n as u64),
                    Forwarded::Dropped(n) => self.shared.metrics.forwards_dropped.add(n as u64),
                    Forwarded::Refused {
                        origin_member,
                        session,
                    } => {
                        self.shared.metrics.peer_frames_refused.inc();
                        tracing::warn!(
                            peer = from,
                            origin_member,
                            session,
                            "refused a forward that is not this member's to send"
                        );
                    }
                }
            }
            PeerMsg::Touch(sessions) => {
                if self.consensus.is_leader() {
                    self.touch(sessions);
                }
            }
            PeerMsg::Attached(session) => self.session_moved(session, from),
            PeerMsg::Digest { index, digest } => {
                self.digests.leader(index, digest);
                self.check_digests();
            }
            PeerMsg::Hello { .. }
            | PeerMsg::Challenge { .. }
            | PeerMsg::Proof { .. }
            | PeerMsg::SnapshotChunk(_) => {}
        }
    }

    /// A raft message from member `from` was refused (`peer_proto::raft_wire`, `raft_guard`):
    /// counted, and logged unless a flood of them would flood the log.
    fn refused(&self, from: u64, reason: &str) {
        let metrics = &self.shared.metrics;
        metrics.peer_messages_refused.inc();
        let n = metrics.peer_messages_refused.get();
        if crate::raft_guard::worth_warning(n) {
            tracing::warn!(peer = from, refused = n, "raft message refused: {reason}");
        } else {
            tracing::debug!(peer = from, "raft message refused: {reason}");
        }
    }

    fn note_digest(&mut self, index: u64) {
        if self.peers.is_some() {
            self.digests.applied(index, self.machine.digest());
        }
    }

    /// Compares the leader's digests with ours at the same index, once we have applied it.
    fn check_digests(&mut self) {
        for c in self.digests.compare() {
            self.shared.metrics.digest_checks.inc();
            if !c.matches() {
                self.shared.metrics.digest_mismatches.inc();
                tracing::error!(
                    index = c.index,
                    ours = format!("{:#018x}", c.ours),
                    leader = format!("{:#018x}", c.leader),
                    "this member's tree differs from the leader's at the same log index: its state has diverged"
                );
            }
        }
    }

    /// On the leader: `session` now lives on `member`. Writes from anywhere else get
    /// SessionMoved (`refuse_moved`), as in ZooKeeper, whose leader tracks the same owner.
    /// A new leader knows no owners until sessions attach again (its clients reconnect).
    fn session_moved(&mut self, session: SessionId, member: u64) {
        let live = self.machine.has_session(session);
        self.intake
            .attached(session, member, self.consensus.is_leader(), live);
    }

    /// Closes this member's connections holding `session`, but `keep`.
    fn detach(&self, session: SessionId, keep: Origin) {
        for link in &self.links {
            // Best effort: a shard that is gone has no connection to close.
            let _ = link.try_send(ToShard::Detach { session, keep });
        }
    }

    /// Session activity: the leader's tracker takes it, other members pass it on.
    fn touch(&mut self, sessions: Vec<(SessionId, i32)>) {
        if !self.consensus.is_leader() {
            if let (Some(peers), Some(leader)) = (&self.peers, self.leadership.known()) {
                peers.send(leader, &PeerMsg::Touch(sessions));
            }
            return;
        }
        let now = self.now_ms();
        let machine = &self.machine;
        self.intake
            .touch(sessions, now, |session| machine.has_session(session));
    }

    /// Connections with a write in flight are closed, and writes not yet proposed dropped:
    /// the old leader may have lost them, and their clients would wait forever. ZooKeeper
    /// drops its clients on a leader change too; they reconnect (same session) and retry.
    fn drop_writers(&mut self, why: &'static str) {
        self.intake.clear();
        // Sent by `check_leader`, which can wait for a full link: this must not be lost.
        self.drop_writers = Some(why);
    }

    /// Notices leadership changes: connections that may have lost a write are closed, a new
    /// leader restarts every session's clock, and the member serves only while it knows a
    /// leader (ZooKeeper's followers stop serving while they look for one).
    async fn check_leader(&mut self) {
        let role = self.consensus.role();
        let leader = self.consensus.leader_id();
        let standalone = self.peers.is_none();
        self.shared.role.store(
            match role {
                _ if standalone => super::ROLE_STANDALONE,
                Role::Leader => super::ROLE_LEADER,
                Role::Follower => super::ROLE_FOLLOWER,
                Role::Observer => super::ROLE_OBSERVER,
                Role::Candidate => super::ROLE_LOOKING,
            },
            Ordering::Relaxed,
        );
        self.shared
            .leader_id
            .store(leader.unwrap_or(0), Ordering::Relaxed);
        let member = standalone
            || self
                .consensus
                .membership()
                .contains(self.shared.config.server_id);
        let change = self.leadership.observe(
            leader,
            role == Role::Leader,
            member,
            self.replay_until.is_some(),
        );
        if let Some((previous, leader)) = change.leader {
            self.shared.metrics.leader_changes.inc();
            tracing::info!(
                leader = ?leader,
                previous = ?previous,
                term = self.consensus.term(),
                role = ?role,
                "leader changed"
            );
        }
        if change.drop_writers {
            self.drop_writers("the leader changed");
        }
        if change.restart_clocks {
            self.restart_session_clocks();
        }
        if change.forget_owners {
            self.intake.forget_owners();
        }
        if let Some(why) = self.drop_writers.take() {
            for link in &self.links {
                let _ = link.send(ToShard::DropWriters(why)).await;
            }
        }
        match change.serving {
            Some(true) => {
                self.shared.serving.store(true, Ordering::SeqCst);
                tracing::info!(
                    zxid = format!("{:#x}", self.machine.last_zxid()),
                    leader = ?self.leadership.known(),
                    "serving"
                );
            }
            Some(false) => {
                self.shared.serving.store(false, Ordering::SeqCst);
                let why = if member {
                    "no leader is known"
                } else {
                    "this member is not in the ensemble's configuration"
                };
                tracing::warn!("not serving: {why}; clients are disconnected");
                self.intake.clear();
                self.syncs.clear();
                for link in &self.links {
                    let _ = link.send(ToShard::Unserve).await;
                }
            }
            None => {}
        }
    }

    /// Starts a snapshot of the current state on a thread of its own when enough has been
    /// applied since the last one. The view is an O(1) MVCC clone: writes go on meanwhile and
    /// the snapshot is exactly the state at `index`.
    fn maybe_snapshot(&mut self, index: u64, term: u64) {
        if !self.snapshots.start_if_due(self.mono_ms()) {
            return;
        }
        let (view, meta) = self.snapshot_view(index, term);
        let (dir, tx) = (self.snap_dir.clone(), self.inbox_tx.clone());
        let spawned = std::thread::Builder::new()
            .name("rk-snapshot".into())
            .spawn(move || {
                let started = Instant::now();
                let result = snapshots::write(&dir, &view, &meta);
                let done = SnapshotDone {
                    index: meta.index,
                    result,
                    took: started.elapsed(),
                };
                let _ = tx.send_blocking(Event::Snapshot(done));
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the snapshot thread: {e}");
            let now = self.mono_ms();
            self.snapshots.failed(now);
        }
    }

    fn snapshot_done(&mut self, done: SnapshotDone) {
        let (path, summary) = match done.result {
            Ok(ok) => ok,
            Err(e) => {
                // The log still holds everything: a failed snapshot costs disk and restart
                // time, not data. Try again later (on a full disk, once space is freed).
                tracing::error!(index = done.index, "snapshot failed: {e}; retrying later");
                self.shared.metrics.snapshot_failures.inc();
                let now = self.mono_ms();
                self.snapshots.failed(now);
                return;
            }
        };
        self.snapshots.written(summary.bytes);
        self.shared.metrics.snapshots_written.inc();
        tracing::info!(
            file = %path.display(),
            index = done.index,
            nodes = summary.nodes,
            sessions = summary.sessions,
            bytes = summary.bytes,
            ms = done.took.as_millis() as u64,
            "snapshot written"
        );
        let kept = match snapshots::purge(&self.snap_dir, self.shared.config.snap_retain_count) {
            Ok(kept) => kept,
            Err(e) => {
                tracing::error!("removing old snapshots failed: {e}");
                return;
            }
        };
        // The log reaches back to the snapshot before the newest, so that a bad newest one
        // can fall back to it (older ones are kept for the operator; the log since them costs
        // restart time). First a durable copy of the hard state in the active segment, since
        // the segments about to go may hold the only one.
        let Some(&through) = kept.len().checked_sub(2).and_then(|i| kept.get(i)) else {
            return;
        };
        let (term, vote, commit) = self.consensus.hard_state();
        let ticket = self
            .wal
            .submit(&[LogRecord::HardState { term, vote, commit }]);
        let (wal, previous) = (self.wal.clone(), self.compaction.take());
        self.compaction = Some(glommio::spawn_local(async move {
            if let Some(previous) = previous {
                previous.await;
            }
            let result = match wal.wait_durable(ticket).await {
                Ok(()) => wal.remove_segments_through(through).await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::error!("removing old log segments failed: {e}");
            }
        }));
    }

    fn tick(&mut self) {
        let now = Instant::now();
        while self.last_tick + Duration::from_millis(TICK_MS) <= now {
            self.last_tick += Duration::from_millis(TICK_MS);
            self.consensus.tick();
        }
        let mono = self.mono_ms();
        let consensus = &self.consensus;
        for member in self
            .transfers
            .overdue(mono, |member| consensus.snapshotting(member))
        {
            tracing::warn!(
                peer = member,
                "a snapshot sent was never acknowledged; sending another"
            );
            self.consensus.snapshot_sent(member, false);
        }
        for ctx in self.syncs.retries(mono) {
            self.consensus.read_index(ctx);
        }
        self.publish_leader_stats();
        if !self.consensus.is_leader() || self.replay_until.is_some() {
            return;
        }
        if let Some(peers) = self.peers.as_ref().filter(|_| now >= self.next_digest) {
            self.next_digest = now + DIGEST_INTERVAL;
            peers.broadcast(&PeerMsg::Digest {
                index: self.applied_index,
                digest: self.machine.digest(),
            });
        }
        let now_ms = self.now_ms();
        let reap = now >= self.next_reap;
        if reap {
            self.next_reap =
                now + Duration::from_millis(self.shared.config.container_check_interval_ms);
        }
        let expired = self.intake.tick(now_ms, &self.machine.view(), reap);
        if expired > 0 {
            tracing::info!(count = expired, "expiring sessions");
        }
    }

    /// Seal the pending commands into one proposal (on the leader), or pass them to the
    /// leader (elsewhere; while no leader is known they wait, and the member does not serve).
    fn propose(&mut self) -> Result<(), ServerError> {
        if self.intake.is_empty() {
            return Ok(());
        }
        if !self.consensus.is_leader() {
            self.forward();
            return Ok(());
        }
        let moved = self.intake.refuse_moved();
        self.shared.metrics.sessions_moved.add(moved as u64);
        if self.wal.out_of_space() {
            let instance = self.shared.instance;
            let (zxid, after) = (self.machine.last_zxid(), self.consensus.last_index());
            let refused = self.intake.refuse_for_space(instance, zxid, after);
            self.shared.metrics.writes_rejected.add(refused as u64);
        }
        if self.wal.pending_bytes() > MAX_LOG_BACKLOG {
            self.shared.metrics.log_backpressure.inc();
            return Ok(());
        }
        while let Some(proposal) = self.intake.next_proposal() {
            match proposal {
                Proposal::Reconfig(cmd) => self.reconfigure(cmd)?,
                Proposal::Commands(commands) => self.seal(commands)?,
            }
        }
        Ok(())
    }

    /// A reconfig request, on the leader: proposed as a raft configuration change carrying
    /// the new member list, or answered with why not (through the log, so that the
    /// connection's replies stay in order).
    fn reconfigure(&mut self, mut cmd: Command) -> Result<(), ServerError> {
        let Op::Reconfig(op) = &cmd.op else {
            return self.seal(vec![cmd]);
        };
        // The caller's identities decide here, and go no further (nothing records them).
        let auth = std::mem::take(&mut cmd.auth);
        let (members, mut cc) = match self.plan_reconfig(&auth, op) {
            Ok(plan) => plan,
            Err(code) => {
                cmd.op = Op::Fail(code);
                return self.seal(vec![cmd]);
            }
        };
        let text = reconfig::format(&members);
        cmd.op = Op::SetConfig { members: text };
        let batch = Batch {
            time_ms: self.now_ms(),
            commands: vec![cmd],
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&batch)
            .map_err(|e| ServerError::Startup(format!("cannot serialize a batch: {e}")))?;
        tracing::info!(
            members = ?members.iter().map(|m| (m.id, m.observer)).collect::<Vec<_>>(),
            changes = cc.changes.len(),
            "proposing a new configuration"
        );
        if cc.changes.is_empty() {
            // Addresses or nothing changed: the list alone is written.
            self.consensus.propose(bytes.to_vec())?;
            return Ok(());
        }
        cc.context = bytes.to_vec().into();
        if let Err(e) = self.consensus.propose_conf_change(cc) {
            // raft refused it (a leadership transfer, a change under way): say so.
            tracing::warn!("a configuration change was not proposed: {e}");
            let mut cmd =
                batch.commands.into_iter().next().ok_or_else(|| {
                    ServerError::Startup("a reconfig batch lost its command".into())
                })?;
            cmd.op = Op::Fail(ErrorCode::ReconfigInProgress);
            return self.seal(vec![cmd]);
        }
        Ok(())
    }

    /// The member list a reconfig asks for and the raft change to it, or the error
    /// ZooKeeper answers in its place.
    fn plan_reconfig(
        &self,
        auth: &[Id],
        op: &ReconfigOp,
    ) -> Result<(Vec<MemberSpec>, ConfChangeV2), ErrorCode> {
        if self.peers.is_none() {
            return Err(ErrorCode::Unimplemented); // a standalone server has no ensemble
        }
        let mut live = vec![self.shared.config.server_id];
        live.extend(
            self.consensus
                .peers()
                .into_iter()
                .filter(|p| p.2)
                .map(|p| p.0),
        );
        let leader = reconfig::Leader {
            view: &self.machine.view(),
            members: &self.members,
            membership: self.consensus.membership(),
            change_pending: self.consensus.conf_change_pending(),
            live: &live,
        };
        reconfig::decide(&leader, auth, op).map_err(|r| {
            tracing::info!(code = ?r.code, "reconfig refused: {}", r.why);
            r.code
        })
    }

    /// A committed configuration change: raft switches to it. Returns its context (the
    /// batch that writes the new member list, or nothing).
    fn apply_conf_change(&mut self, entry: &raft::eraftpb::Entry) -> Result<Vec<u8>, ServerError> {
        let Some(context) = self.consensus.apply_conf_change(entry)? else {
            self.shared.metrics.config_changes_refused.inc();
            tracing::error!(
                index = entry.index,
                "a committed configuration change does not apply to this configuration; \
                 skipped (every member skips it alike): the leader that logged it is faulty"
            );
            return Ok(Vec::new());
        };
        self.shared.metrics.config_changes.inc();
        let members = self.consensus.membership();
        tracing::info!(
            index = entry.index,
            voters = ?members.voters,
            learners = ?members.learners,
            joint = members.joint.is_some(),
            "configuration changed"
        );
        if !members.contains(self.shared.config.server_id) {
            tracing::warn!("this member was removed from the ensemble");
        }
        Ok(context)
    }

    /// Once `/zookeeper/config` changed (a reconfig applied, a snapshot installed, at
    /// start-up), the member list and the peer links follow it.
    fn follow_config(&mut self) {
        let view = self.machine.view();
        let zxid = view.stat(CONFIG_NODE).map_or(0, |s| s.mzxid);
        if zxid == self.config_zxid {
            return;
        }
        self.config_zxid = zxid;
        let config = &self.shared.config;
        let fallback = || config.members.iter().map(reconfig::spec_of).collect();
        self.members = match reconfig::config_text(&self.machine.view()) {
            None => fallback(),
            Some(text) => reconfig::parse(&text).unwrap_or_else(|e| {
                tracing::error!("{CONFIG_NODE} does not parse ({e}); keeping the static members");
                fallback()
            }),
        };
        let Some(peers) = &self.peers else {
            return;
        };
        let addrs: Vec<(u64, std::net::SocketAddr)> = self
            .members
            .iter()
            .filter_map(|m| {
                // The static configuration's address wins for a member it names (a test
                // may have put a proxy there).
                if let Some(known) = config.member(m.id) {
                    return Some((m.id, known.peer_addr));
                }
                match m.resolve() {
                    Ok(c) => Some((m.id, c.peer_addr)),
                    Err(e) => {
                        tracing::error!("member {} cannot be dialed: {e}", m.id);
                        None
                    }
                }
            })
            .collect();
        tracing::info!(members = ?addrs, "peer links follow the configuration");
        peers.set_members(&addrs);
    }

    /// Proposes `commands` as one log entry, or as several when one would exceed the log's
    /// record limit (a segment's size: a record never spans segments, and an oversized one
    /// would poison the log). A single command that alone is too large fails in its place,
    /// through the log, so every connection's replies stay in order.
    /// Proposes `commands` in as many log entries as they need (see `intake::seal`).
    fn seal(&mut self, commands: Vec<Command>) -> Result<(), ServerError> {
        let mut oversize = 0;
        let sealed = intake::seal(commands, self.now_ms(), self.max_entry_bytes, &mut oversize)
            .map_err(|e| ServerError::Startup(e.to_string()))?;
        if oversize > 0 {
            tracing::warn!(
                writes = oversize,
                limit = self.max_entry_bytes,
                "a write is larger than a log segment holds; failing it (raise log_segment_bytes)"
            );
            self.shared.metrics.writes_rejected.add(oversize as u64);
        }
        for batch in sealed {
            self.shared.metrics.batches_proposed.inc();
            self.shared
                .metrics
                .batch_commands
                .record(batch.commands as u64);
            let n = batch.bytes.len() as i64;
            self.consensus.propose(batch.bytes)?;
            self.proposal_sizes = Some(match self.proposal_sizes {
                Some((_, min, max)) => (n, min.min(n), max.max(n)),
                None => (n, n, n),
            });
            if self.proposed_at.len() == MAX_BATCH_COMMANDS {
                self.proposed_at.pop_front(); // only a latency sample is lost
            }
            self.proposed_at
                .push_back((self.consensus.last_index(), Instant::now()));
        }
        Ok(())
    }

    fn forward(&mut self) {
        let (Some(peers), Some(leader)) = (&self.peers, self.leadership.known()) else {
            return;
        };
        let mut sent = true;
        while !self.intake.is_empty() && sent {
            let commands = self.intake.take_chunk();
            self.shared.metrics.forwarded_out.add(commands.len() as u64);
            sent = peers.send(leader, &PeerMsg::Forward(commands));
        }
        if !sent {
            self.drop_writers("a write could not be passed to the leader");
        }
    }

    /// Hand every ready to the log, apply what is committed, fan out the results.
    async fn pump(&mut self) -> Result<(), ServerError> {
        while let Some(mut out) = self.consensus.poll()? {
            for m in out.messages.drain(..) {
                if m.get_msg_type() == MessageType::MsgSnapshot {
                    self.send_snapshot(m);
                } else if let Some(peers) = &self.peers {
                    peers.send(m.to, &PeerMsg::Raft(m));
                }
            }
            if let Some((index, _)) = out.snapshot {
                self.install_snapshot(out.number, index).await?;
            }
            for (ctx, index) in out.read_states.drain(..) {
                self.syncs.answered(&ctx, index);
            }
            self.persist(&mut out);
            self.apply(out).await?;
        }
        let refused_due = self.intake.refusals_due(self.applied_index);
        let syncs_due = self.syncs.any_due(self.applied_index);
        if (refused_due || syncs_due) && self.published_first {
            // Nothing they must wait for is in flight: answer them now.
            let mut applied = Vec::new();
            self.intake
                .release_refused(self.applied_index, &mut applied);
            self.publish(self.machine.view(), applied).await;
        }
        Ok(())
    }

    /// The current state as a snapshot at (`index`, `term`), which must be the applied entry.
    fn snapshot_view(
        &self,
        index: u64,
        term: u64,
    ) -> (crate::machine::View, crate::snapshot::Meta) {
        debug_assert_eq!(index, self.applied_index);
        let view = self.machine.view();
        let meta =
            crate::snapshot::Meta::new(index, term, view.last_zxid(), self.consensus.membership());
        (view, meta)
    }

    /// raft wants member `to` to catch up from a snapshot at our applied index: stream the
    /// state at that index from an MVCC view, on a thread of its own.
    fn send_snapshot(&mut self, msg: raft::eraftpb::Message) {
        let to = msg.to;
        let (index, term) = {
            let m = msg.get_snapshot().get_metadata();
            (m.index, m.term)
        };
        let addr = self.peers.as_ref().and_then(|p| p.addr(to));
        let decision = self
            .transfers
            .want(to, index, self.applied_index, addr.is_some());
        let addr = match (decision, addr) {
            (Stream::Start, Some(addr)) => addr,
            (Stream::Already, _) => return,
            _ => {
                self.consensus.snapshot_sent(to, false);
                return;
            }
        };
        let (view, meta) = self.snapshot_view(index, term);
        tracing::info!(
            peer = to,
            index,
            "member is behind the log this leader keeps; sending a snapshot"
        );
        let (shared, tx) = (self.shared.clone(), self.inbox_tx.clone());
        let spawned = std::thread::Builder::new()
            .name("rk-snapshot-send".into())
            .spawn(move || {
                let result = super::peer::send_snapshot(&shared, to, addr, &view, &meta, msg);
                let _ = tx.send_blocking(Event::SnapshotSent { to, result });
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start a snapshot transfer: {e}");
            let now = self.mono_ms();
            self.transfers.sent(to, None, now);
            self.consensus.snapshot_sent(to, false);
        }
    }

    /// A snapshot streamed by the leader: checked, decoded and stored on a thread, then its
    /// raft message is stepped (`Event::SnapshotReceived`).
    fn receive_snapshot(&mut self, from: u64, data: Vec<u8>, msg: raft::eraftpb::Message) {
        if self.installing {
            return; // the leader sends it again
        }
        if let Err(e) = self.consensus.check(from, &msg) {
            return self.refused(from, &e.to_string());
        }
        self.installing = true;
        let index = msg.get_snapshot().get_metadata().index;
        tracing::info!(
            peer = from,
            index,
            bytes = data.len(),
            "receiving a snapshot from the leader"
        );
        let (dir, config, tx) = (
            self.snap_dir.clone(),
            self.machine_config.clone(),
            self.inbox_tx.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name("rk-snapshot-recv".into())
            .spawn(move || {
                let result = (|| {
                    let (meta, machine) =
                        crate::snapshot::decode(&data, config).map_err(|e| e.to_string())?;
                    if meta.index != index {
                        return Err(format!(
                            "the data is at index {} but the message at {index}",
                            meta.index
                        ));
                    }
                    snapshots::write_received(&dir, index, &data).map_err(|e| e.to_string())?;
                    Ok((index, Box::new(machine)))
                })();
                let msg = Box::new(msg);
                let _ = tx.send_blocking(Event::SnapshotReceived { msg, result });
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start a snapshot install: {e}");
            self.installing = false;
        }
    }

    /// raft installed the leader's snapshot at `index`: the state machine becomes its state.
    async fn install_snapshot(&mut self, ready: u64, index: u64) -> Result<(), ServerError> {
        let machine = match self.incoming.take() {
            Some((at, machine)) if at == index => machine,
            _ => {
                return Err(ServerError::Startup(format!(
                    "raft installed a snapshot at {index} whose state is not here"
                )))
            }
        };
        tracing::info!(
            index,
            zxid = format!("{:#x}", machine.last_zxid()),
            nodes = machine.view().node_count(),
            "installed a snapshot from the leader"
        );
        self.machine = machine;
        self.applied_index = index;
        self.installed = Some((ready, index));
        self.follow_config();
        self.digests.reset(index, self.machine.digest());
        self.replay_until = None;
        self.snapshots.installed();
        let view = self.machine.view();
        self.shared
            .last_zxid
            .store(view.last_zxid() as u64, Ordering::Relaxed);
        if self.published_first {
            self.publish(view, Vec::new()).await;
        } else {
            self.publish_first().await;
        }
        Ok(())
    }

    /// Hands a ready's writes to the log; once they (and everything before) are durable,
    /// raft hears of it and the messages that had to wait for the disk go out.
    fn persist(&mut self, out: &mut Output) {
        let messages = std::mem::take(&mut out.persisted_messages);
        if !out.must_persist {
            if messages.is_empty() {
                return;
            }
            // Nothing to write, but these answer for entries an earlier ready may still be
            // syncing: they wait for everything submitted so far.
            let (wal, peers, ticket) =
                (self.wal.clone(), self.peers.clone(), self.wal.last_ticket());
            glommio::spawn_local(async move {
                if wal.wait_durable(ticket).await.is_ok() {
                    send_all(peers.as_deref(), messages);
                }
            })
            .detach();
            return;
        }
        let ticket = if out.must_sync {
            let mut records: Vec<LogRecord<'_>> = out
                .entries
                .iter()
                .map(|e| LogRecord::Entry {
                    index: e.index,
                    term: e.term,
                    data: &e.data,
                    conf_change: e.get_entry_type() == EntryType::EntryConfChangeV2,
                })
                .collect();
            // The newest hard state rides along with every write (a few bytes), so the commit
            // index on disk stays fresh without a write of its own.
            let (term, vote, commit) = match &out.hard_state {
                Some(hs) => (hs.term, hs.vote, hs.commit),
                None => self.consensus.hard_state(),
            };
            records.push(LogRecord::HardState { term, vote, commit });
            let bytes: usize = out.entries.iter().map(|e| e.data.len()).sum();
            self.shared.metrics.log_write_bytes.record(bytes as u64);
            Some(self.wal.submit(&records))
        } else {
            // Only the commit index moved: no sync needed (with one writing client this was
            // a second fsync per write). Persisted once everything submitted before is.
            None
        };
        self.unpersisted += 1;
        let (wal, tx, number) = (self.wal.clone(), self.inbox_tx.clone(), out.number);
        let (shared, peers) = (self.shared.clone(), self.peers.clone());
        let submitted = Instant::now();
        let wait_for = ticket.unwrap_or_else(|| self.wal.last_ticket());
        glommio::spawn_local(async move {
            let event = match wal.wait_durable(wait_for).await {
                Ok(()) => {
                    if ticket.is_some() {
                        let us = submitted.elapsed().as_micros() as u64;
                        shared.metrics.fsync_latency_us.record(us);
                    }
                    // A follower acknowledges entries only once they are on its disk.
                    send_all(peers.as_deref(), messages);
                    Event::Persisted(number)
                }
                Err(e) => Event::WalFailed(e.to_string()),
            };
            let _ = tx.send(event).await;
        })
        .detach();
    }

    async fn apply(&mut self, out: Output) -> Result<(), ServerError> {
        if out.committed.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let mut applied = Vec::new();
        let (mut last_index, mut last_term) = (0, 0);
        for entry in &out.committed {
            last_index = entry.index;
            last_term = entry.term;
            self.snapshots.applied(0, entry.data.len() as u64);
            // Refusals due before this entry's replies (refused after the entry before it).
            self.intake.release_refused(entry.index - 1, &mut applied);
            let context;
            let payload = if is_conf_change(entry) {
                context = self.apply_conf_change(entry)?;
                &context[..]
            } else {
                &entry.data[..]
            };
            if payload.is_empty() {
                self.note_digest(entry.index);
                continue; // a new leader's empty entry, or raft leaving a joint configuration
            }
            let batch = Batch::decode(payload).map_err(|e| {
                ServerError::Startup(format!("log entry {} does not decode: {e}", entry.index))
            })?;
            self.shared.metrics.batches_committed.inc();
            self.shared
                .metrics
                .commands_applied
                .add(batch.commands.len() as u64);
            self.snapshots.applied(batch.commands.len() as u64, 0);
            // One clock reading per entry, not one per command (new sessions' clocks).
            let (now, leading) = (self.now_ms(), self.consensus.is_leader());
            for a in self.machine.apply_batch(entry.term, &batch) {
                self.intake.applied(&a, leading, now);
                applied.push(a);
            }
            self.note_digest(entry.index);
        }
        self.check_digests();
        self.follow_config();
        self.intake.release_refused(last_index, &mut applied);
        self.consensus.applied(last_index)?;
        self.applied_index = last_index;
        while let Some(&(index, at)) = self.proposed_at.front() {
            if index > last_index {
                break;
            }
            self.proposed_at.pop_front();
            let us = at.elapsed().as_micros() as u64;
            self.shared.metrics.commit_latency_us.record(us);
        }
        self.maybe_snapshot(last_index, last_term);
        if self.replay_until.is_some_and(|until| last_index >= until) {
            self.replay_until = None;
        }
        let view = self.machine.view();
        self.shared
            .last_zxid
            .store(view.last_zxid() as u64, Ordering::Relaxed);
        if self.replay_until.is_some() {
            return Ok(()); // still replaying: shards wait for the first view
        }
        self.shared
            .metrics
            .apply_latency_us
            .record(started.elapsed().as_micros() as u64);
        if !self.published_first {
            // Replayed results route nowhere.
            self.publish_first().await;
        } else {
            self.publish(view, applied).await;
        }
        Ok(())
    }

    /// The first view, once the log is replayed: the shards start listening.
    async fn publish_first(&mut self) {
        self.published_first = true;
        if self.consensus.is_leader() {
            self.restart_session_clocks();
        }
        tracing::info!(
            zxid = format!("{:#x}", self.machine.last_zxid()),
            "log replayed"
        );
        self.publish(self.machine.view(), Vec::new()).await;
    }

    /// Sends one apply round to the shards, with the syncs it satisfies.
    async fn publish(&mut self, view: crate::machine::View, applied: Vec<Applied>) {
        let first = self.round == 0;
        let synced = self.syncs.take_due(self.applied_index);
        self.shared.metrics.syncs.add(synced.len() as u64);
        self.round += 1;
        if let Ok(mut latest) = self.shared.latest.lock() {
            *latest = (self.round, view.clone());
        }
        // Pairs with the fence in `Shard::register_conn`.
        std::sync::atomic::fence(Ordering::SeqCst);
        let update = Arc::new(Update {
            round: self.round,
            view,
            applied,
            synced,
        });
        for (shard, link) in self.links.iter().enumerate() {
            // Shards wait for the first view before they accept anyone; after that, a shard
            // without connections has nothing to reply to and no watches to fire.
            if !first && self.shared.shard_conns[shard].load(Ordering::SeqCst) == 0 {
                continue;
            }
            // A full link means a shard is not keeping up. Updates must not be dropped, so
            // the sequencer waits here (its own clients wait with it): that is backpressure.
            let _ = link.send(ToShard::Update(update.clone())).await;
        }
    }

    fn publish_leader_stats(&mut self) {
        let stats = (self.peers.is_some() && self.consensus.is_leader()).then(|| {
            let peers = self.consensus.peers();
            let synced =
                |learner: bool| peers.iter().filter(|p| p.1 == learner && p.2).count() as u64;
            let (last, min, max) = self.proposal_sizes.unwrap_or((-1, -1, -1));
            crate::admin::LeaderStats {
                learners: peers.len() as u64,
                synced_followers: synced(false),
                synced_observers: synced(true),
                pending_syncs: self.transfers.sending() as u64,
                last_proposal_size: last,
                min_proposal_size: min,
                max_proposal_size: max,
            }
        });
        if let Ok(mut s) = self.shared.leader_stats.lock() {
            *s = stats;
        }
    }

    fn publish_gauges(&self) {
        let m = &self.shared.metrics;
        m.sequencer_queue.set(self.intake.len() as i64);
        m.log_queue.set(self.wal.pending_bytes() as i64);
        m.raft_term.set(self.consensus.term() as i64);
        m.commit_index.set(self.consensus.commit_index() as i64);
        m.leader_id.set(self.leadership.known().unwrap_or(0) as i64);
        let ws = self.wal.stats();
        m.fsyncs.reset();
        m.fsyncs.add(ws.syncs);
        m.log_bytes_written.reset();
        m.log_bytes_written.add(ws.bytes_written);
    }

    /// A (new) leader gives every session a fresh full timeout.
    fn restart_session_clocks(&mut self) {
        let now = self.now_ms();
        self.intake.restart_clocks(&self.machine.view(), now);
    }

    fn session_buckets(&self) -> Vec<(i64, Vec<SessionId>)> {
        let mut buckets: std::collections::BTreeMap<i64, Vec<SessionId>> = Default::default();
        for (session, _) in self.machine.view().session_timeouts() {
            if let Some(deadline) = self.intake.deadline(session) {
                buckets.entry(deadline).or_default().push(session);
            }
        }
        buckets.into_iter().collect()
    }

    /// Milliseconds on the monotonic clock, for the sans-IO parts' timers.
    fn mono_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// The leader's wall clock in ms, never going backwards.
    fn now_ms(&mut self) -> i64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.last_time_ms = self.last_time_ms.max(now);
        self.last_time_ms
    }

    async fn shut_down(mut self, result: Result<(), ServerError>) -> Result<(), ServerError> {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        // A compaction in flight holds the log; it ends within one sync (or at once with the
        // log's error).
        if let Some(compaction) = self.compaction.take() {
            compaction.await;
        }
        for link in &self.links {
            let _ = link.send(ToShard::Stop).await;
        }
        let zxid = self.machine.view().last_zxid();
        if let Err(e) = result {
            tracing::error!(zxid = format!("{zxid:#x}"), "stopping: {e}");
            return Err(e);
        }
        let wal = Rc::try_unwrap(self.wal)
            .map_err(|_| ServerError::Startup("log still in use at shutdown".into()))?;
        wal.close().await?;
        tracing::info!(
            zxid = format!("{zxid:#x}"),
            "stopped cleanly: log synced, every acknowledged write is on disk"
        );
        Ok(())
    }
}

fn send_all(peers: Option<&Peers>, messages: Vec<raft::eraftpb::Message>) {
    if let Some(peers) = peers {
        for m in messages {
            peers.send(m.to, &PeerMsg::Raft(m));
        }
    }
}
