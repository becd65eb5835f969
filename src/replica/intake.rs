//! The commands waiting to be proposed, and the leader's rules on what it proposes: a
//! member forwards only its own clients' writes; a write from a member its session left is
//! answered SessionMoved; on a full disk data writes are answered Throttled; silent
//! sessions are expired and empty containers reaped; proposals are cut at a command count
//! and at what one log entry holds. Deterministic: time comes in as arguments.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::machine::View;
use crate::proto::types::{ErrorCode, SessionId, Zxid};
use crate::session::ExpiryTracker;
use crate::txn::{Applied, Batch, Command, Op, OpResult, Origin};

/// Most commands in one proposal; more wait for the next.
pub const MAX_BATCH_COMMANDS: usize = 4096;
/// Bytes a log record adds to an entry's data (header, index, term, alignment), rounded up.
pub const ENTRY_OVERHEAD: usize = 128;
/// Origin of the reaper's commands (no connection waits for them).
pub const REAPER_ORIGIN: u64 = u64::MAX;

/// What became of a forward from another member.
#[derive(Debug, PartialEq, Eq)]
pub enum Forwarded {
    /// Queued for proposal (this member leads).
    Taken(usize),
    /// Dropped: this member does not lead (the sender sees the leader change soon and
    /// closes the connections that wait for them).
    Dropped(usize),
    /// Refused whole: it holds a command that is not the sender's client's to send.
    Refused {
        origin_member: u64,
        session: SessionId,
    },
}

/// The next thing to propose, in the order the commands came.
#[derive(Debug, PartialEq)]
pub enum Proposal {
    Commands(Vec<Command>),
    /// A reconfig goes in a log entry of its own (the leader decides it first).
    Reconfig(Command),
}

/// A batch serialized for one log entry.
#[derive(Debug)]
pub struct Sealed {
    pub bytes: Vec<u8>,
    pub commands: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot serialize a batch: {0}")]
pub struct SealError(String);

#[derive(Debug)]
pub struct Intake {
    pending: Vec<Command>,
    /// The leader's session tracker (not replicated: a new leader restarts every clock).
    tracker: ExpiryTracker,
    /// On the leader: the member each session was last attached on.
    owners: HashMap<SessionId, u64>,
    /// Writes refused for lack of disk space, each answered once every entry up to its
    /// index is applied (so that each connection's replies stay in order).
    refused: VecDeque<(u64, Applied)>,
    /// Paths with a reaper delete in flight, so a slow commit does not propose them twice.
    reaping: HashSet<String>,
    /// Reaper deletes proposed and not yet applied; `reaping` is cleared when this drops to 0.
    reaps_in_flight: usize,
}

impl Intake {
    /// `tick_ms`: the session expiry granularity (ZooKeeper's tickTime).
    pub fn new(tick_ms: i64) -> Intake {
        Intake {
            pending: Vec::new(),
            tracker: ExpiryTracker::new(tick_ms),
            owners: HashMap::new(),
            refused: VecDeque::new(),
            reaping: HashSet::new(),
            reaps_in_flight: 0,
        }
    }

    /// Commands from this member's clients, in the order received.
    pub fn push(&mut self, commands: impl IntoIterator<Item = Command>) {
        self.pending.extend(commands);
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Commands member `from` forwarded. It may forward only its own clients' writes: a
    /// forward holding a command made on another member, or not a client's, is refused whole.
    pub fn forward(&mut self, from: u64, commands: Vec<Command>, leading: bool) -> Forwarded {
        let foreign = commands
            .iter()
            .find(|c| Origin(c.origin).member() != from || !c.is_client_write());
        if let Some(c) = foreign {
            return Forwarded::Refused {
                origin_member: Origin(c.origin).member(),
                session: c.session,
            };
        }
        let n = commands.len();
        if !leading {
            return Forwarded::Dropped(n);
        }
        self.pending.extend(commands);
        Forwarded::Taken(n)
    }

    /// Up to `MAX_BATCH_COMMANDS` commands to pass to the leader, oldest first.
    pub fn take_chunk(&mut self) -> Vec<Command> {
        let take = self.pending.len().min(MAX_BATCH_COMMANDS);
        self.pending.drain(..take).collect()
    }

    /// Drops every command not yet proposed and forgets the reaper's (the leader changed, or
    /// the member stops serving: their connections close).
    pub fn clear(&mut self) {
        self.pending.clear();
        self.reaping.clear();
        self.reaps_in_flight = 0;
    }

    /// On the leader: `session` now lives on `member` (`live`: the session exists). Writes
    /// from anywhere else get SessionMoved (`refuse_moved`), as ZooKeeper's leader tracks the
    /// same owner. A new leader knows no owners until sessions attach again.
    pub fn attached(&mut self, session: SessionId, member: u64, leading: bool, live: bool) {
        if leading && live {
            self.owners.insert(session, member);
        }
    }

    /// A new leader: it knows no owners yet.
    pub fn forget_owners(&mut self) {
        self.owners.clear();
    }

    /// On the leader, before proposing: writes on a session from a member it no longer lives
    /// on fail with SessionMoved (through the log, in their connection's order). Returns how
    /// many.
    pub fn refuse_moved(&mut self) -> usize {
        if self.owners.is_empty() {
            return 0;
        }
        let mut moved = 0;
        for c in &mut self.pending {
            if c.session == 0 || matches!(c.op, Op::CreateSession { .. }) {
                continue;
            }
            let member = Origin(c.origin).member();
            if self.owners.get(&c.session).is_some_and(|&o| o != member) {
                c.op = Op::Fail(ErrorCode::SessionMoved);
                moved += 1;
            }
        }
        moved
    }

    /// The disk is full: data writes are answered Throttled ("not executed, try again
    /// later") at once instead of waiting an unknown time. Sessions still open and close and
    /// the server's own commands go on, in what is left of the active segment. This member's
    /// (process `instance`'s) clients are answered once everything proposed so far (up to
    /// log index `after`) is applied; other members' clients hear only what the log says, so
    /// theirs go through it as small failed commands. Returns how many were refused here.
    pub fn refuse_for_space(&mut self, instance: u32, last_zxid: Zxid, after: u64) -> usize {
        let mut refused = 0;
        // In place: each connection's commands keep their order.
        for mut c in std::mem::take(&mut self.pending) {
            let goes_on = c.origin == 0
                || c.origin == REAPER_ORIGIN
                || matches!(c.op, Op::CreateSession { .. } | Op::CloseSession);
            if goes_on {
                self.pending.push(c);
            } else if Origin(c.origin).instance() != instance {
                c.op = Op::Fail(ErrorCode::Throttled);
                self.pending.push(c);
            } else {
                refused += 1;
                let applied = Applied {
                    origin: c.origin,
                    session: c.session,
                    xid: c.xid,
                    zxid: last_zxid,
                    result: OpResult::Error(ErrorCode::Throttled),
                    triggers: Vec::new(),
                    ended_sessions: Vec::new(),
                    duplicate: false,
                };
                self.refused.push_back((after, applied));
            }
        }
        refused
    }

    /// Whether a refusal is due once entry `index` is applied.
    pub fn refusals_due(&self, index: u64) -> bool {
        self.refused
            .front()
            .is_some_and(|(after, _)| *after <= index)
    }

    /// Moves the refusals due once entry `index` is applied into `applied`.
    pub fn release_refused(&mut self, index: u64, applied: &mut Vec<Applied>) {
        while self.refusals_due(index) {
            if let Some((_, a)) = self.refused.pop_front() {
                applied.push(a);
            }
        }
    }

    /// The next proposal: the pending commands in order, up to `MAX_BATCH_COMMANDS`, cut
    /// before a reconfig, which comes alone.
    pub fn next_proposal(&mut self) -> Option<Proposal> {
        if self.pending.is_empty() {
            return None;
        }
        let limit = self.pending.len().min(MAX_BATCH_COMMANDS);
        let take = self.pending[..limit]
            .iter()
            .position(|c| matches!(c.op, Op::Reconfig(_)))
            .unwrap_or(limit);
        if take == 0 {
            return Some(Proposal::Reconfig(self.pending.remove(0)));
        }
        Some(Proposal::Commands(self.pending.drain(..take).collect()))
    }

    /// Session activity (`live` says whether a session exists: activity reported after it
    /// closed must not bring it back, it would only be expired again, for a log write).
    pub fn touch(
        &mut self,
        sessions: Vec<(SessionId, i32)>,
        now_ms: i64,
        live: impl Fn(SessionId) -> bool,
    ) {
        for (session, timeout) in sessions {
            if live(session) {
                self.tracker.touch(session, timeout, now_ms);
            }
        }
    }

    /// A (new) leader gives every session a fresh full timeout.
    pub fn restart_clocks(&mut self, view: &View, now_ms: i64) {
        for (session, timeout) in view.session_timeouts() {
            self.tracker.touch(session, timeout, now_ms);
        }
    }

    /// On the leader's tick: sessions silent past their timeout are expired; with `reap`,
    /// empty containers and expired TTL nodes are deleted. Returns the sessions expired.
    pub fn tick(&mut self, now_ms: i64, view: &View, reap: bool) -> usize {
        // Expired sessions stay "closing" in the tracker until their expiry is applied.
        let expired: Vec<SessionId> = self.tracker.expired(now_ms);
        let n = expired.len();
        if n > 0 {
            self.pending
                .push(internal(Op::ExpireSessions { sessions: expired }));
        }
        if reap {
            for path in view.reap_candidates(now_ms) {
                if self.reaping.insert(path.clone()) {
                    self.reaps_in_flight += 1;
                    let mut cmd = internal(Op::DeleteContainer { path });
                    cmd.origin = REAPER_ORIGIN;
                    self.pending.push(cmd);
                }
            }
        }
        n
    }

    /// Bookkeeping for one applied command: new sessions get a clock (and, on the leader,
    /// their owner), ended ones lose theirs, the reaper's deletes are done.
    pub fn applied(&mut self, a: &Applied, leading: bool, now_ms: i64) {
        if let OpResult::SessionCreated {
            session,
            timeout_ms,
            ..
        } = &a.result
        {
            self.tracker.touch(*session, *timeout_ms, now_ms);
            if leading && a.origin != 0 {
                self.owners.insert(*session, Origin(a.origin).member());
            }
        }
        for s in &a.ended_sessions {
            self.tracker.remove(*s);
            self.owners.remove(s);
        }
        if a.origin == REAPER_ORIGIN {
            self.reaps_in_flight = self.reaps_in_flight.saturating_sub(1);
            if self.reaps_in_flight == 0 {
                self.reaping.clear();
            }
        }
    }

    /// When `session` expires unless it shows activity (on the leader).
    pub fn deadline(&self, session: SessionId) -> Option<i64> {
        self.tracker.deadline(session)
    }
}

/// A command the leader makes itself.
pub fn internal(op: Op) -> Command {
    Command {
        session: 0,
        xid: 0,
        origin: 0,
        auth: Vec::new(),
        seen_zxid: i64::MAX,
        op,
    }
}

/// Serializes `commands` into log entries of at most `max_entry_bytes` each (halving a batch
/// that does not fit); a single command too large for any entry fails MarshallingError
/// instead (`oversize` counts them).
pub fn seal(
    commands: Vec<Command>,
    time_ms: i64,
    max_entry_bytes: usize,
    oversize: &mut usize,
) -> Result<Vec<Sealed>, SealError> {
    let mut out = Vec::new();
    seal_into(commands, time_ms, max_entry_bytes, oversize, &mut out)?;
    Ok(out)
}

fn seal_into(
    mut commands: Vec<Command>,
    time_ms: i64,
    max_entry_bytes: usize,
    oversize: &mut usize,
    out: &mut Vec<Sealed>,
) -> Result<(), SealError> {
    loop {
        let batch = Batch { time_ms, commands };
        let bytes =
            rkyv::to_bytes::<rkyv::rancor::Error>(&batch).map_err(|e| SealError(e.to_string()))?;
        if bytes.len() + ENTRY_OVERHEAD <= max_entry_bytes {
            out.push(Sealed {
                bytes: bytes.to_vec(),
                commands: batch.commands.len(),
            });
            return Ok(());
        }
        commands = batch.commands;
        if commands.len() == 1 {
            *oversize += 1;
            commands[0].op = Op::Fail(ErrorCode::MarshallingError);
            continue;
        }
        let second = commands.split_off(commands.len() / 2);
        seal_into(commands, time_ms, max_entry_bytes, oversize, out)?;
        commands = second;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{Machine, MachineConfig};
    use crate::proto::types::{CreateRequest, Id, SetDataRequest};
    use crate::txn::WriteOp;

    fn origin(member: u64, conn: u32) -> u64 {
        Origin::new(((member as u32) << 16) | 7, 0, conn).0
    }

    fn write(session: SessionId, from: u64, data: usize) -> Command {
        Command {
            session,
            xid: 1,
            origin: from,
            auth: vec![Id::new("ip", "127.0.0.1")],
            seen_zxid: i64::MAX,
            op: Op::Write(WriteOp::SetData(SetDataRequest {
                path: "/a".into(),
                data: Some(vec![0; data]),
                version: -1,
            })),
        }
    }

    #[test]
    fn forwards_hold_only_the_senders_client_writes() {
        let mut intake = Intake::new(2000);
        let ok = vec![write(5, origin(2, 1), 1)];
        assert_eq!(intake.forward(2, ok.clone(), true), Forwarded::Taken(1));
        assert_eq!(intake.forward(2, ok.clone(), false), Forwarded::Dropped(1));
        assert_eq!(
            intake.forward(3, ok, true),
            Forwarded::Refused {
                origin_member: 2,
                session: 5
            }
        );
        let expire = internal(Op::ExpireSessions { sessions: vec![5] });
        let expire = Command {
            origin: origin(2, 1),
            ..expire
        };
        assert!(matches!(
            intake.forward(2, vec![expire], true),
            Forwarded::Refused { .. }
        ));
        assert_eq!(intake.len(), 1, "only the first forward was taken");
    }

    #[test]
    fn a_session_that_moved_fails_writes_from_its_old_member() {
        let mut intake = Intake::new(2000);
        intake.attached(5, 2, true, true);
        intake.push([write(5, origin(1, 1), 1), write(5, origin(2, 1), 1)]);
        assert_eq!(intake.refuse_moved(), 1);
        let Some(Proposal::Commands(c)) = intake.next_proposal() else {
            panic!()
        };
        assert_eq!(c[0].op, Op::Fail(ErrorCode::SessionMoved));
        assert!(matches!(c[1].op, Op::Write(_)));
        // Not leading (or an unknown session): nothing is recorded.
        let mut intake = Intake::new(2000);
        intake.attached(5, 2, false, true);
        intake.attached(6, 2, true, false);
        intake.push([write(5, origin(1, 1), 1), write(6, origin(1, 1), 1)]);
        assert_eq!(intake.refuse_moved(), 0);
    }

    #[test]
    fn a_full_disk_refuses_data_writes_in_order() {
        let mut intake = Intake::new(2000);
        let here = Origin(origin(1, 1)).instance();
        let close = Command {
            op: Op::CloseSession,
            ..write(5, origin(1, 2), 1)
        };
        intake.push([write(5, origin(1, 1), 1), write(6, origin(2, 1), 1), close]);
        assert_eq!(intake.refuse_for_space(here, 0x100, 9), 1);
        // Another member's write goes through the log as a failure; the close goes on.
        let Some(Proposal::Commands(c)) = intake.next_proposal() else {
            panic!()
        };
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].op, Op::Fail(ErrorCode::Throttled));
        assert_eq!(c[1].op, Op::CloseSession);
        // This member's client hears once entry 9 is applied.
        assert!(!intake.refusals_due(8));
        let mut out = Vec::new();
        intake.release_refused(9, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].result, OpResult::Error(ErrorCode::Throttled));
        assert_eq!(out[0].zxid, 0x100);
    }

    #[test]
    fn proposals_are_cut_at_the_count_and_before_a_reconfig() {
        let mut intake = Intake::new(2000);
        let reconfig = Command {
            op: Op::Reconfig(crate::txn::ReconfigOp {
                joining: None,
                leaving: Some("3".into()),
                new_members: None,
                from_config: -1,
            }),
            ..write(5, origin(1, 1), 1)
        };
        intake.push((0..MAX_BATCH_COMMANDS + 1).map(|_| write(5, origin(1, 1), 1)));
        intake.push([reconfig, write(5, origin(1, 1), 1)]);
        let sizes: Vec<_> = std::iter::from_fn(|| intake.next_proposal())
            .map(|p| match p {
                Proposal::Commands(c) => c.len(),
                Proposal::Reconfig(_) => 0,
            })
            .collect();
        assert_eq!(sizes, vec![MAX_BATCH_COMMANDS, 1, 0, 1]);
    }

    #[test]
    fn sealing_splits_what_one_entry_cannot_hold() {
        let commands: Vec<_> = (0..8).map(|_| write(5, origin(1, 1), 1000)).collect();
        let mut oversize = 0;
        let sealed = seal(commands, 1, 4096, &mut oversize).unwrap();
        assert!(sealed.len() > 1);
        assert_eq!(sealed.iter().map(|s| s.commands).sum::<usize>(), 8);
        assert!(sealed
            .iter()
            .all(|s| s.bytes.len() + ENTRY_OVERHEAD <= 4096));
        assert_eq!(oversize, 0);
        let huge = vec![write(5, origin(1, 1), 10_000)];
        let sealed = seal(huge, 1, 4096, &mut oversize).unwrap();
        assert_eq!(oversize, 1);
        let batch = Batch::decode(&sealed[0].bytes).unwrap();
        assert_eq!(batch.commands[0].op, Op::Fail(ErrorCode::MarshallingError));
    }

    #[test]
    fn expiry_and_the_reaper_propose_once() {
        let mut m = Machine::new(MachineConfig::default());
        let create = |path: &str, opcode, flags| Command {
            op: Op::Write(WriteOp::Create {
                opcode,
                req: CreateRequest {
                    path: path.into(),
                    data: None,
                    acl: crate::proto::types::Acl::open_unsafe(),
                    flags,
                    ttl: -1,
                },
            }),
            ..write(0, 0, 0)
        };
        let session = internal(Op::CreateSession {
            timeout_ms: 4000,
            passwd: vec![1; 16],
        });
        let applied = m.apply_batch(
            1,
            &Batch {
                time_ms: 1000,
                commands: vec![session],
            },
        );
        let OpResult::SessionCreated { session, .. } = applied[0].result else {
            panic!()
        };
        let container = Command {
            session,
            ..create("/c", crate::proto::types::opcode::CREATE_CONTAINER, 4)
        };
        let child = Command {
            session,
            ..create("/c/x", crate::proto::types::opcode::CREATE, 0)
        };
        let delete = Command {
            session,
            op: Op::Write(WriteOp::Delete(crate::proto::types::DeleteRequest {
                path: "/c/x".into(),
                version: -1,
            })),
            ..write(0, 0, 0)
        };
        m.apply_batch(
            1,
            &Batch {
                time_ms: 1000,
                commands: vec![container, child, delete],
            },
        );
        let mut intake = Intake::new(2000);
        intake.applied(&applied[0], true, 1000);
        // Before the timeout: nothing expires; the empty container is reaped once.
        assert_eq!(intake.tick(2000, &m.view(), true), 0);
        assert_eq!(intake.tick(2000, &m.view(), true), 0);
        let Some(Proposal::Commands(c)) = intake.next_proposal() else {
            panic!()
        };
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].origin, REAPER_ORIGIN);
        // After it: the session expires, once.
        assert_eq!(intake.tick(10_000, &m.view(), false), 1);
        assert_eq!(intake.tick(10_000, &m.view(), false), 0);
        let Some(Proposal::Commands(c)) = intake.next_proposal() else {
            panic!()
        };
        assert_eq!(
            c[0].op,
            Op::ExpireSessions {
                sessions: vec![session]
            }
        );
    }
}
