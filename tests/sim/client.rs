//! Simulated clients: each opens a session through the log, then issues random writes on a
//! small key space (so that they collide: NodeExists, NoNode, BadVersion, NotEmpty happen),
//! one at a time, against any member.
//!
//! Retries follow ringkeeper's exactly-once rule: a retry reuses the session and xid, and
//! carries `seen_zxid` = the newest zxid the client has seen once the original may be in the
//! log (its reply was lost or timed out), so that the machine answers a repeat from its
//! idempotency record; a send that cannot have reached the log before (fresh, or after a
//! NotLeader/Busy answer to every earlier attempt) carries `Zxid::MAX`.
//!
//! Some requests are linearizable reads instead: a sync to any member (raft's ReadIndex
//! there), then a read of one key from that member once the sync is answered. The checker
//! verifies that the read reflects every write acknowledged before the sync was sent. A sync
//! without an answer in time, or dropped by a member that knows no leader, is sent again
//! (to a random member) as a new attempt.

use rand::rngs::StdRng;
use rand::Rng;
use ringkeeper::proto::types::{
    Acl, CheckVersionRequest, CreateRequest, DeleteRequest, ErrorCode, Id, SetDataRequest, Stat,
};
use ringkeeper::txn::{Command, Op, OpResult, WriteOp};

use super::world::{Time, MS};
use super::{Event, Sim};

/// What a client sends: the command (its `origin` names this attempt) and who waits.
pub struct Request {
    pub client: usize,
    pub cmd: Command,
}

/// A sync, then a read of `path` on the same member once the sync is answered. `attempt` is
/// the checker's number for this send.
pub struct SyncRequest {
    pub client: usize,
    pub attempt: usize,
    pub path: String,
}

/// What a read found: the node's data and Stat, or no node.
pub type ReadResult = Option<(Option<Vec<u8>>, Stat)>;

pub enum Reply {
    Applied {
        origin: u64,
        zxid: i64,
        result: OpResult,
        duplicate: bool,
    },
    NotLeader {
        origin: u64,
        leader: Option<u64>,
    },
    Busy {
        origin: u64,
    },
    /// The sync is done and the key was read at applied index `applied`.
    Synced {
        attempt: usize,
        applied: u64,
        read: ReadResult,
    },
    /// The member stopped serving (it knows no leader): the connection closes.
    SyncDropped {
        attempt: usize,
    },
}

impl Reply {
    fn origin(&self) -> u64 {
        match self {
            Reply::Applied { origin, .. }
            | Reply::NotLeader { origin, .. }
            | Reply::Busy { origin } => *origin,
            Reply::Synced { .. } | Reply::SyncDropped { .. } => 0,
        }
    }
}

/// An attempt's origin: the member it went to (top byte, raft id), the client, a counter.
pub fn origin(member_id: u64, client: usize, attempt: u64) -> u64 {
    member_id << 56 | (client as u64) << 40 | (attempt & 0xFF_FFFF_FFFF)
}

pub fn origin_member(origin: u64) -> u64 {
    origin >> 56
}

/// How long a client waits for a reply before it retries elsewhere.
const TIMEOUT: (Time, Time) = (300 * MS, 700 * MS);
/// How long a client waits for a sync (raft may drop a ReadIndex request; the member asks
/// again every 500 ms) before it sends a new one elsewhere.
const SYNC_TIMEOUT: (Time, Time) = (1_500 * MS, 3_000 * MS);
/// The share of requests that are a sync and a read.
const READ_SHARE: f64 = 0.15;
/// Keys: /k0../k{KEYS-1}, their child /kN/c, and /q with sequential children.
const KEYS: usize = 6;

pub struct Client {
    pub id: usize,
    pub session: Option<i64>,
    xid: i32,
    /// The newest zxid this client has seen in a reply.
    last_seen: i64,
    current: Option<InFlight>,
    /// A sync and read in flight: the key, and every attempt's number.
    reading: Option<(String, Vec<usize>)>,
    done: u32,
    limit: u32,
    /// No new requests (settling); the current one is finished.
    pub stopping: bool,
    leader_hint: Option<usize>,
    /// Only the Wake carrying this token is current.
    token: u64,
    /// The pending Wake resends after a NotLeader/Busy answer (not a timeout).
    retry_pending: bool,
    attempts: u64,
}

struct InFlight {
    /// The checker's number for this request.
    command: usize,
    op: Op,
    xid: i32,
    /// Every attempt's origin: a reply to any of them answers the request.
    origins: Vec<u64>,
    /// The attempt whose NotLeader/Busy answer still matters.
    current_origin: u64,
    /// Some attempt may be in the log: retries must let the machine spot a repeat.
    maybe_in_log: bool,
}

impl Client {
    pub fn new(id: usize, limit: u32) -> Client {
        Client {
            id,
            session: None,
            xid: 0,
            last_seen: 0,
            current: None,
            reading: None,
            done: 0,
            limit,
            stopping: false,
            leader_hint: None,
            token: 0,
            retry_pending: false,
            attempts: 0,
        }
    }

    /// A request still waits for its answer.
    pub fn busy(&self) -> bool {
        self.current.is_some() || self.reading.is_some()
    }
}

fn key(rng: &mut StdRng) -> String {
    format!("/k{}", rng.gen_range(0..KEYS))
}

fn data(rng: &mut StdRng) -> Option<Vec<u8>> {
    if rng.gen_bool(0.1) {
        return None;
    }
    let len = rng.gen_range(0..6);
    Some((0..len).map(|_| rng.gen()).collect())
}

fn version(rng: &mut StdRng) -> i32 {
    if rng.gen_bool(0.6) {
        -1
    } else {
        rng.gen_range(0..3)
    }
}

fn create(path: String, flags: i32, rng: &mut StdRng) -> WriteOp {
    WriteOp::Create {
        opcode: 1,
        req: CreateRequest {
            path,
            data: data(rng),
            acl: Acl::open_unsafe(),
            flags,
            ttl: -1,
        },
    }
}

/// One random write op on the key space.
fn write_op(rng: &mut StdRng) -> WriteOp {
    let ephemeral = rng.gen_bool(0.15) as i32;
    match rng.gen_range(0..100) {
        0..=27 => create(key(rng), ephemeral, rng),
        28..=37 => create(format!("{}/c", key(rng)), ephemeral, rng),
        38..=45 => create("/q/s-".into(), 2 + ephemeral, rng),
        46..=49 => create("/q".into(), 0, rng),
        50..=74 => WriteOp::SetData(SetDataRequest {
            path: key(rng),
            data: data(rng),
            version: version(rng),
        }),
        75..=89 => {
            let path = match rng.gen_range(0..4) {
                0 => format!("{}/c", key(rng)),
                1 => "/q".into(),
                _ => key(rng),
            };
            WriteOp::Delete(DeleteRequest {
                path,
                version: version(rng),
            })
        }
        _ => WriteOp::Check(CheckVersionRequest {
            path: key(rng),
            version: version(rng),
        }),
    }
}

/// A key to read: one the writes touch.
fn read_path(rng: &mut StdRng) -> String {
    match rng.gen_range(0..100) {
        0..=59 => key(rng),
        60..=84 => format!("{}/c", key(rng)),
        _ => "/q".into(),
    }
}

fn random_op(rng: &mut StdRng) -> Op {
    match rng.gen_range(0..100) {
        0..=2 => Op::CloseSession,
        3..=22 => Op::Multi((0..rng.gen_range(2..=3)).map(|_| write_op(rng)).collect()),
        _ => Op::Write(write_op(rng)),
    }
}

impl Sim {
    /// A client's timer: the think time after a reply ran out, or a request timed out.
    pub fn on_wake(&mut self, c: usize, token: u64) {
        if self.clients[c].token != token {
            return; // superseded
        }
        if self.clients[c].reading.is_some() {
            if !self.clients[c].retry_pending {
                self.note(format!("client {c}: sync timeout, trying again"));
            }
            self.send_sync(c);
            return;
        }
        if self.clients[c].current.is_some() && self.clients[c].retry_pending {
            self.clients[c].retry_pending = false;
            self.send_attempt(c);
            return;
        }
        if self.clients[c].current.is_some() {
            self.note(format!("client {c}: timeout, retrying"));
            let client = &mut self.clients[c];
            if let Some(cur) = &mut client.current {
                cur.maybe_in_log = true;
            }
            client.leader_hint = None;
            self.send_attempt(c);
            return;
        }
        let client = &mut self.clients[c];
        if client.stopping || client.done >= client.limit {
            return;
        }
        if self.rng.gen_bool(READ_SHARE) {
            let path = read_path(&mut self.rng);
            self.clients[c].reading = Some((path, Vec::new()));
            self.send_sync(c);
            return;
        }
        let op = match client.session {
            None => self.new_session_op(c),
            Some(_) => random_op(&mut self.rng),
        };
        let client = &mut self.clients[c];
        let xid = if matches!(op, Op::CreateSession { .. }) {
            0
        } else {
            client.xid += 1;
            client.xid
        };
        let now = self.q.now();
        let command = self.checker.new_command(c, now);
        self.clients[c].current = Some(InFlight {
            command,
            op,
            xid,
            origins: Vec::new(),
            current_origin: 0,
            maybe_in_log: false,
        });
        self.send_attempt(c);
    }

    /// A CreateSession with a password unique to this attempt (so the checker can tell
    /// attempts apart: each one that commits is a session of its own).
    fn new_session_op(&mut self, c: usize) -> Op {
        self.clients[c].attempts += 1;
        let mut passwd = vec![0u8; 16];
        passwd[..8].copy_from_slice(&(c as u64).to_le_bytes());
        passwd[8..].copy_from_slice(&self.clients[c].attempts.to_le_bytes());
        Op::CreateSession {
            timeout_ms: 30_000,
            passwd,
        }
    }

    /// Send (or resend) the current request to the leader hint or a random member.
    fn send_attempt(&mut self, c: usize) {
        let n = self.members.len();
        let m = match self.clients[c].leader_hint {
            Some(m) => m,
            None => self.rng.gen_range(0..n),
        };
        let fresh_session_op = match &self.clients[c].current {
            Some(cur) if matches!(cur.op, Op::CreateSession { .. }) && !cur.origins.is_empty() => {
                Some(self.new_session_op(c))
            }
            _ => None,
        };
        let client = &mut self.clients[c];
        client.attempts += 1;
        let o = origin(m as u64 + 1, c, client.attempts);
        let (session, last_seen) = (client.session.unwrap_or(0), client.last_seen);
        let cur = client.current.as_mut().expect("a request in flight");
        if let Some(op) = fresh_session_op {
            cur.op = op;
        }
        cur.origins.push(o);
        cur.current_origin = o;
        let cmd = Command {
            session: if matches!(cur.op, Op::CreateSession { .. }) {
                0
            } else {
                session
            },
            xid: cur.xid,
            origin: o,
            // Every attempt is a new connection: its first write carries its identities.
            auth: vec![Id::new("ip", format!("10.0.0.{c}"))],
            seen_zxid: if cur.maybe_in_log {
                last_seen
            } else {
                i64::MAX
            },
            op: cur.op.clone(),
        };
        let command = cur.command;
        client.retry_pending = false;
        client.token += 1;
        let token = client.token;
        self.checker.attempt(command, o);
        if self.trace.echo() {
            self.note(format!(
                "client {c}: sends {o:#x} (xid {}, seen {:#x}) to member {}",
                cmd.xid,
                cmd.seen_zxid,
                m + 1
            ));
        }
        let now = self.q.now();
        if let Some(at) = self.net.plan_client(&mut self.rng, now, c, m, true) {
            self.q.at(
                at,
                Event::Request {
                    m,
                    req: Request { client: c, cmd },
                },
            );
        }
        let timeout = self.rng.gen_range(TIMEOUT.0..=TIMEOUT.1);
        self.q.after(timeout, Event::Wake { client: c, token });
    }

    /// Client `c`, idle, makes one more write now.
    /// Send (or send again, as a new attempt) the current sync to a random member: any member
    /// serves syncs.
    fn send_sync(&mut self, c: usize) {
        let m = self.rng.gen_range(0..self.members.len());
        let now = self.q.now();
        let client = &mut self.clients[c];
        let (path, attempts) = client.reading.as_mut().expect("a sync in flight");
        let path = path.clone();
        let attempt = self.checker.sync_sent(c, path.clone(), now);
        attempts.push(attempt);
        client.retry_pending = false;
        client.token += 1;
        let token = client.token;
        if self.trace.echo() {
            self.note(format!(
                "client {c}: sync #{attempt} to member {}, then read {path}",
                m + 1
            ));
        }
        if let Some(at) = self.net.plan_client(&mut self.rng, now, c, m, true) {
            let req = SyncRequest {
                client: c,
                attempt,
                path,
            };
            self.q.at(at, Event::Sync { m, req });
        }
        let timeout = self.rng.gen_range(SYNC_TIMEOUT.0..=SYNC_TIMEOUT.1);
        self.q.after(timeout, Event::Wake { client: c, token });
    }

    /// An answer to a sync: done, or (dropped) try again soon.
    fn on_sync_reply(&mut self, c: usize, from: usize, reply: Reply) {
        let client = &mut self.clients[c];
        let Some((_, attempts)) = &client.reading else {
            return; // late
        };
        match reply {
            Reply::Synced {
                attempt,
                applied,
                read,
            } if attempts.contains(&attempt) => {
                client.reading = None;
                client.done += 1;
                client.token += 1;
                let token = client.token;
                let found = match read {
                    Some((_, stat)) => format!("version {}", stat.version),
                    None => "no node".into(),
                };
                self.note(format!(
                    "client {c}: sync #{attempt} answered by member {} at applied index \
                     {applied}, read: {found}",
                    from + 1
                ));
                let think = self.rng.gen_range(0..20 * MS);
                self.q.after(think, Event::Wake { client: c, token });
            }
            Reply::SyncDropped { attempt } if attempts.last() == Some(&attempt) => {
                client.retry_pending = true;
                client.token += 1;
                let token = client.token;
                let wait = self.rng.gen_range(20 * MS..100 * MS);
                self.q.after(wait, Event::Wake { client: c, token });
            }
            _ => {}
        }
    }

    pub fn send_to_client(&mut self, m: usize, client: usize, reply: Reply) {
        let now = self.q.now();
        if let Some(at) = self.net.plan_client(&mut self.rng, now, client, m, false) {
            self.q.at(
                at,
                Event::Reply {
                    client,
                    from: m,
                    reply,
                },
            );
        }
    }

    pub fn on_reply(&mut self, c: usize, from: usize, reply: Reply) {
        if matches!(reply, Reply::Synced { .. } | Reply::SyncDropped { .. }) {
            self.on_sync_reply(c, from, reply);
            return;
        }
        let origin = reply.origin();
        let client = &mut self.clients[c];
        let Some(cur) = &client.current else {
            return; // a late answer to something already answered
        };
        match reply {
            Reply::Applied {
                zxid,
                result,
                duplicate,
                ..
            } => {
                if !cur.origins.contains(&origin) {
                    return;
                }
                client.last_seen = client.last_seen.max(zxid);
                client.leader_hint = Some(from);
                match (&cur.op, &result) {
                    (Op::CreateSession { .. }, OpResult::SessionCreated { session, .. }) => {
                        client.session = Some(*session);
                        client.xid = 0;
                    }
                    (Op::CreateSession { .. }, _) => {} // refused: try again next time
                    // A retried close finds the session gone: closed either way.
                    (Op::CloseSession, _) => client.session = None,
                    _ => {}
                }
                if matches!(result, OpResult::Error(ErrorCode::SessionExpired))
                    && !matches!(cur.op, Op::CloseSession)
                {
                    client.session = None;
                }
                client.current = None;
                client.done += 1;
                client.token += 1;
                let token = client.token;
                let dup = if duplicate {
                    " (from the idempotency record)"
                } else {
                    ""
                };
                self.note(format!(
                    "client {c}: ack {origin:#x} zxid {zxid:#x} from member {}{dup}",
                    from + 1
                ));
                let think = self.rng.gen_range(0..20 * MS);
                self.q.after(think, Event::Wake { client: c, token });
            }
            Reply::NotLeader { leader, .. } => {
                if origin != cur.current_origin {
                    return;
                }
                if self.trace.echo() {
                    let line = format!(
                        "client {c}: member {} is not the leader ({leader:?})",
                        from + 1
                    );
                    self.note(line);
                }
                let client = &mut self.clients[c];
                client.leader_hint = leader.map(|l| l as usize - 1).filter(|&l| l != from);
                client.token += 1;
                let token = client.token;
                let wait = if client.leader_hint.is_some() {
                    self.rng.gen_range(MS..5 * MS)
                } else {
                    self.rng.gen_range(20 * MS..100 * MS)
                };
                // Not proposed: the retry counts as a fresh send unless an earlier attempt
                // may already be in the log.
                client.retry_pending = true;
                self.q.after(wait, Event::Wake { client: c, token });
            }
            Reply::Busy { .. } => {
                if origin != cur.current_origin {
                    return;
                }
                client.leader_hint = Some(from);
                client.token += 1;
                let token = client.token;
                client.retry_pending = true;
                let wait = self.rng.gen_range(20 * MS..50 * MS);
                self.q.after(wait, Event::Wake { client: c, token });
            }
            Reply::Synced { .. } | Reply::SyncDropped { .. } => {} // handled above
        }
    }
}
