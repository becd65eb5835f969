//! The sequencer: shard 0's loop around the consensus driver, the log and the state machine.
//!
//! Commands from every shard are gathered into one `Batch` per proposal; raft stages it, the
//! log group-commits it (one write+fdatasync in flight, everything that queued meanwhile in the
//! next), and once durable (on a quorum) it is applied and the result fanned out to every
//! shard. Nothing waits on a timer: batch size follows load.

use std::collections::HashSet;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use glommio::channels::shared_channel::{ConnectedSender, SharedReceiver, SharedSender};

use super::{Diag, ServerError, Shared, ToSequencer, ToShard, Update};
use crate::consensus::{Consensus, Output, StoredEntry, TICK_MS};
use crate::log::{snapshots, LogRecord, Wal, WalOptions};
use crate::machine::{Machine, MachineConfig};
use crate::proto::types::ErrorCode;
use crate::proto::types::SessionId;
use crate::session::ExpiryTracker;
use crate::txn::{Applied, Batch, Command, Op, OpResult};

/// Most commands in one proposal; more wait for the next.
const MAX_BATCH_COMMANDS: usize = 4096;
/// Log bytes waiting for the disk above which nothing new is proposed: commands wait in
/// `pending` (bounded upstream by each connection's limit) instead of piling up in the log's
/// buffer, which refuses to grow past its own hard limit.
const MAX_LOG_BACKLOG: usize = 16 << 20;
/// Bytes a log record adds to an entry's data (header, index, term, alignment), rounded up.
const ENTRY_OVERHEAD: usize = 128;
/// The log since the last snapshot must reach 1/this of its size before the next one.
const SNAPSHOT_LOG_RATIO: u64 = 4;
/// After a failed snapshot, the next attempt waits this long.
const SNAPSHOT_RETRY: Duration = Duration::from_secs(10);
/// This member's id in a standalone deployment.
const MEMBER_ID: u64 = 1;
/// Origin of the reaper's commands (no connection waits for them).
const REAPER_ORIGIN: u64 = u64::MAX;

enum Event {
    Shard(ToSequencer),
    Persisted(u64),
    WalFailed(String),
    Snapshot(SnapshotDone),
    Tick,
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

    let machine_config = MachineConfig {
        ttl_enabled: config.ttl_enabled,
        ..Default::default()
    };
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
    let mut schedule = SnapshotSchedule::default();
    let (machine, snapshot_at) = match loaded {
        Some(l) => {
            schedule.last_bytes = std::fs::metadata(&l.path).map_or(0, |m| m.len());
            (l.machine, Some((l.meta.index, l.meta.term)))
        }
        None => (Machine::new(machine_config), None),
    };
    let consensus = Consensus::new(
        MEMBER_ID,
        vec![MEMBER_ID],
        snapshot_at,
        entries,
        recovery.hard_state,
    )?;

    let mut seq = Sequencer {
        shared: shared.clone(),
        wal: Rc::new(wal),
        consensus,
        machine,
        tracker: ExpiryTracker::new(config.tick_time_ms as i64),
        links,
        inbox_tx,
        pending: Vec::new(),
        last_time_ms: 0,
        reaping: HashSet::new(),
        next_reap: Instant::now(),
        last_tick: Instant::now(),
        unpersisted: 0,
        reaps_in_flight: 0,
        replay_until: None,
        round: 0,
        snap_dir,
        snapshots: schedule,
        applied_index: snap_index,
        refused: Default::default(),
        max_entry_bytes: (config.log_segment_bytes as usize)
            .min(crate::log::record::MAX_PAYLOAD_LEN),
        compaction: None,
        proposed_at: Default::default(),
    };
    let last = seq.consensus.last_index();
    seq.replay_until = (last > snap_index).then_some(last);
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
    tracker: ExpiryTracker,
    links: Vec<ConnectedSender<ToShard>>,
    inbox_tx: async_channel::Sender<Event>,
    pending: Vec<Command>,
    last_time_ms: i64,
    /// Paths with a reaper delete in flight, so a slow commit does not propose them twice.
    reaping: HashSet<String>,
    next_reap: Instant,
    last_tick: Instant,
    /// Readies submitted to the log and not yet durable.
    unpersisted: usize,
    /// Reaper deletes proposed and not yet applied; `reaping` is cleared when this drops to 0.
    reaps_in_flight: usize,
    /// Until the replayed log is applied, the member does not serve.
    replay_until: Option<u64>,
    /// Apply rounds published so far.
    round: u64,
    snap_dir: std::path::PathBuf,
    snapshots: SnapshotSchedule,
    /// The last log index applied.
    applied_index: u64,
    /// Writes refused for lack of disk space, each answered once every entry up to its index
    /// is applied (so that each connection's replies stay in order).
    refused: std::collections::VecDeque<(u64, Applied)>,
    /// The largest log entry the log accepts (see `seal`).
    max_entry_bytes: usize,
    /// The latest log compaction (it holds the log until it ends; each waits for the one
    /// before it).
    compaction: Option<glommio::Task<()>>,
    /// (last log index, time) of each proposal not yet committed, for `commit_latency_us`.
    proposed_at: std::collections::VecDeque<(u64, Instant)>,
}

/// When the next snapshot is due.
#[derive(Default)]
struct SnapshotSchedule {
    /// Commands and log bytes applied since the last snapshot began.
    commands: u64,
    bytes: u64,
    running: bool,
    /// After a failure, no new attempt before this.
    not_before: Option<Instant>,
    /// Size of the last snapshot written.
    last_bytes: u64,
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
        self.pump().await?;
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
                self.pending.clear();
            }
            self.propose()?;
            self.pump().await?;
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
                self.pending.extend(cmds);
            }
            Event::Shard(ToSequencer::Touch(sessions)) => {
                let now = self.now_ms();
                for (session, timeout) in sessions {
                    // Activity reported after the session was closed must not bring it back
                    // (it would only be expired again, for a log write).
                    if self.machine.has_session(session) {
                        self.tracker.touch(session, timeout, now);
                    }
                }
            }
            Event::Shard(ToSequencer::Attach { session, origin }) => {
                for link in &self.links {
                    // Best effort: a shard that is gone has no connection to close.
                    let _ = link.try_send(ToShard::Detach {
                        session,
                        keep: origin,
                    });
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
            }
            Event::WalFailed(reason) => {
                // Never retry an fsync, never acknowledge what it did not cover: stop.
                return Err(ServerError::LogFailed(reason));
            }
            Event::Snapshot(done) => self.snapshot_done(done),
            Event::Tick => self.tick(),
        }
        Ok(())
    }

    /// Starts a snapshot of the current state on a thread of its own when enough has been
    /// applied since the last one. The view is an O(1) MVCC clone: writes go on meanwhile and
    /// the snapshot is exactly the state at `index`.
    fn maybe_snapshot(&mut self, index: u64, term: u64) {
        let config = &self.shared.config;
        let s = &mut self.snapshots;
        // A snapshot costs in proportion to the whole state, the log it saves in proportion to
        // what was written since the last one: with a big tree and small writes, snap_count
        // alone would rewrite hundreds of MB for every few MB of log. So the log since the
        // last snapshot must also reach a quarter of that snapshot's size (at most 4x write
        // amplification; a restart replays at most that much log).
        if s.running
            || (s.commands < config.snap_count && s.bytes < config.snap_bytes)
            || s.bytes < s.last_bytes / SNAPSHOT_LOG_RATIO
            || s.not_before.is_some_and(|t| Instant::now() < t)
        {
            return;
        }
        s.running = true;
        s.commands = 0;
        s.bytes = 0;
        let view = self.machine.view();
        let meta = crate::snapshot::Meta {
            index,
            term,
            last_zxid: view.last_zxid(),
            voters: vec![MEMBER_ID],
            learners: Vec::new(),
        };
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
            self.snapshots.running = false;
            self.snapshots.not_before = Some(Instant::now() + SNAPSHOT_RETRY);
        }
    }

    fn snapshot_done(&mut self, done: SnapshotDone) {
        self.snapshots.running = false;
        let (path, summary) = match done.result {
            Ok(ok) => ok,
            Err(e) => {
                // The log still holds everything: a failed snapshot costs disk and restart
                // time, not data. Try again later (on a full disk, once space is freed).
                tracing::error!(index = done.index, "snapshot failed: {e}; retrying later");
                self.shared.metrics.snapshot_failures.inc();
                self.snapshots.not_before = Some(Instant::now() + SNAPSHOT_RETRY);
                return;
            }
        };
        self.snapshots.not_before = None;
        self.snapshots.last_bytes = summary.bytes;
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
        if !self.consensus.is_leader() || self.replay_until.is_some() {
            return;
        }
        let now_ms = self.now_ms();
        // Expired sessions stay "closing" in the tracker until their expiry is applied.
        let expired: Vec<SessionId> = self.tracker.expired(now_ms);
        if !expired.is_empty() {
            tracing::info!(count = expired.len(), "expiring sessions");
            self.pending
                .push(internal(Op::ExpireSessions { sessions: expired }));
        }
        if now >= self.next_reap {
            self.next_reap =
                now + Duration::from_millis(self.shared.config.container_check_interval_ms);
            for path in self.machine.view().reap_candidates(now_ms) {
                if self.reaping.insert(path.clone()) {
                    self.reaps_in_flight += 1;
                    let mut cmd = internal(Op::DeleteContainer { path });
                    cmd.origin = REAPER_ORIGIN;
                    self.pending.push(cmd);
                }
            }
        }
    }

    /// Seal the pending commands into one proposal.
    fn propose(&mut self) -> Result<(), ServerError> {
        if self.pending.is_empty() || !self.consensus.is_leader() {
            return Ok(());
        }
        if self.wal.out_of_space() {
            self.refuse_for_space();
        }
        if self.wal.pending_bytes() > MAX_LOG_BACKLOG {
            self.shared.metrics.log_backpressure.inc();
            return Ok(());
        }
        while !self.pending.is_empty() {
            let take = self.pending.len().min(MAX_BATCH_COMMANDS);
            let commands: Vec<Command> = self.pending.drain(..take).collect();
            self.seal(commands)?;
        }
        Ok(())
    }

    /// Proposes `commands` as one log entry, or as several when one would exceed the log's
    /// record limit (a segment's size: a record never spans segments, and an oversized one
    /// would poison the log). A single command that alone is too large fails in its place,
    /// through the log, so every connection's replies stay in order.
    fn seal(&mut self, mut commands: Vec<Command>) -> Result<(), ServerError> {
        let mut batch = Batch {
            time_ms: self.now_ms(),
            commands: Vec::new(),
        };
        loop {
            batch.commands = commands;
            let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&batch)
                .map_err(|e| ServerError::Startup(format!("cannot serialize a batch: {e}")))?;
            if bytes.len() + ENTRY_OVERHEAD <= self.max_entry_bytes {
                self.shared.metrics.batches_proposed.inc();
                self.shared
                    .metrics
                    .batch_commands
                    .record(batch.commands.len() as u64);
                self.consensus.propose(bytes.to_vec())?;
                if self.proposed_at.len() == MAX_BATCH_COMMANDS {
                    self.proposed_at.pop_front(); // only a latency sample is lost
                }
                self.proposed_at
                    .push_back((self.consensus.last_index(), Instant::now()));
                return Ok(());
            }
            commands = std::mem::take(&mut batch.commands);
            if commands.len() == 1 {
                tracing::warn!(
                    bytes = bytes.len(),
                    limit = self.max_entry_bytes,
                    "a write is larger than a log segment holds; failing it (raise log_segment_bytes)"
                );
                self.shared.metrics.writes_rejected.inc();
                commands[0].op = Op::Fail(ErrorCode::MarshallingError);
                continue;
            }
            let second = commands.split_off(commands.len() / 2);
            self.seal(commands)?;
            commands = second;
        }
    }

    /// The disk is full (the next log segment cannot be made): data writes are answered
    /// Throttled ("not executed, try again later") at once instead of waiting an unknown time.
    /// Sessions still open and close, so that clients can connect and read, and the server's
    /// own commands (expiry, the reaper) go on, all in what is left of the active segment.
    fn refuse_for_space(&mut self) {
        let (keep, refuse): (Vec<Command>, Vec<Command>) = self.pending.drain(..).partition(|c| {
            c.origin == 0
                || c.origin == REAPER_ORIGIN
                || matches!(c.op, Op::CreateSession { .. } | Op::CloseSession)
        });
        self.pending = keep;
        if refuse.is_empty() {
            return;
        }
        self.shared.metrics.writes_rejected.add(refuse.len() as u64);
        let zxid = self.machine.last_zxid();
        // Each connection's replies go out in order: these follow everything proposed so far
        // and precede everything proposed later.
        let after = self.consensus.last_index();
        self.refused.extend(refuse.into_iter().map(|c| {
            let applied = Applied {
                origin: c.origin,
                session: c.session,
                xid: c.xid,
                zxid,
                result: OpResult::Error(ErrorCode::Throttled),
                triggers: Vec::new(),
                ended_sessions: Vec::new(),
                duplicate: false,
            };
            (after, applied)
        }));
    }

    /// Moves the refused writes that are due once entry `index` is applied into `applied`.
    fn release_refused(&mut self, index: u64, applied: &mut Vec<Applied>) {
        while self
            .refused
            .front()
            .is_some_and(|(after, _)| *after <= index)
        {
            if let Some((_, a)) = self.refused.pop_front() {
                applied.push(a);
            }
        }
    }

    /// Hand every ready to the log, apply what is committed, fan out the results.
    async fn pump(&mut self) -> Result<(), ServerError> {
        while let Some(out) = self.consensus.poll()? {
            self.persist(&out);
            self.apply(out).await?;
        }
        let due = self
            .refused
            .front()
            .is_some_and(|(after, _)| *after <= self.applied_index);
        if due && self.shared.serving.load(Ordering::SeqCst) {
            // Nothing they must wait for is in flight: answer them now.
            let mut applied = Vec::new();
            self.release_refused(self.applied_index, &mut applied);
            self.publish(self.machine.view(), applied, false).await;
        }
        Ok(())
    }

    fn persist(&mut self, out: &Output) {
        if !out.must_persist {
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
        let shared = self.shared.clone();
        let submitted = Instant::now();
        let wait_for = ticket.unwrap_or_else(|| self.wal.last_ticket());
        glommio::spawn_local(async move {
            let event = match wal.wait_durable(wait_for).await {
                Ok(()) => {
                    if ticket.is_some() {
                        let us = submitted.elapsed().as_micros() as u64;
                        shared.metrics.fsync_latency_us.record(us);
                    }
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
            self.snapshots.bytes += entry.data.len() as u64;
            // Refusals due before this entry's replies (refused after the entry before it).
            self.release_refused(entry.index - 1, &mut applied);
            if entry.data.is_empty() {
                continue; // a new leader's empty entry
            }
            let batch = Batch::decode(&entry.data).map_err(|e| {
                ServerError::Startup(format!("log entry {} does not decode: {e}", entry.index))
            })?;
            self.shared.metrics.batches_committed.inc();
            self.shared
                .metrics
                .commands_applied
                .add(batch.commands.len() as u64);
            self.snapshots.commands += batch.commands.len() as u64;
            for a in self.machine.apply_batch(entry.term, &batch) {
                self.track_sessions(&a);
                applied.push(a);
            }
        }
        self.release_refused(last_index, &mut applied);
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
        let first = !self.shared.serving.swap(true, Ordering::SeqCst);
        if first {
            applied.clear(); // replayed results route nowhere
            self.restart_session_clocks();
            tracing::info!(zxid = format!("{:#x}", view.last_zxid()), "serving");
        }
        self.shared
            .metrics
            .apply_latency_us
            .record(started.elapsed().as_micros() as u64);
        self.publish(view, applied, first).await;
        Ok(())
    }

    /// Sends one apply round to the shards.
    async fn publish(&mut self, view: crate::machine::View, applied: Vec<Applied>, first: bool) {
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

    fn publish_gauges(&self) {
        let m = &self.shared.metrics;
        m.sequencer_queue.set(self.pending.len() as i64);
        m.log_queue.set(self.wal.pending_bytes() as i64);
        m.raft_term.set(self.consensus.term() as i64);
        m.commit_index.set(self.consensus.commit_index() as i64);
        let ws = self.wal.stats();
        m.fsyncs.reset();
        m.fsyncs.add(ws.syncs);
        m.log_bytes_written.reset();
        m.log_bytes_written.add(ws.bytes_written);
    }

    fn track_sessions(&mut self, a: &crate::txn::Applied) {
        use crate::txn::OpResult;
        if let OpResult::SessionCreated {
            session,
            timeout_ms,
            ..
        } = &a.result
        {
            let now = self.now_ms();
            self.tracker.touch(*session, *timeout_ms, now);
        }
        for s in &a.ended_sessions {
            self.tracker.remove(*s);
        }
        if a.origin == REAPER_ORIGIN {
            self.reaps_in_flight = self.reaps_in_flight.saturating_sub(1);
            if self.reaps_in_flight == 0 {
                self.reaping.clear();
            }
        }
    }

    /// A (new) leader gives every session a fresh full timeout.
    fn restart_session_clocks(&mut self) {
        let now = self.now_ms();
        let view = self.machine.view();
        for (session, timeout) in view.session_timeouts() {
            self.tracker.touch(session, timeout, now);
        }
    }

    fn session_buckets(&self) -> Vec<(i64, Vec<SessionId>)> {
        let mut buckets: std::collections::BTreeMap<i64, Vec<SessionId>> = Default::default();
        for (session, _) in self.machine.view().session_timeouts() {
            if let Some(deadline) = self.tracker.deadline(session) {
                buckets.entry(deadline).or_default().push(session);
            }
        }
        buckets.into_iter().collect()
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

fn internal(op: Op) -> Command {
    Command {
        session: 0,
        xid: 0,
        origin: 0,
        auth: Vec::new(),
        seen_zxid: i64::MAX,
        op,
    }
}
