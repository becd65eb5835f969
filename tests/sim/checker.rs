//! History checks. While the run goes: every member applies the same entry at each index
//! with the same results and zxids (state machine safety). At the end: identical state on
//! every member; the committed log replayed through the independent `model` gives the same
//! results, zxids and final tree; every acknowledged write is in that log; no command took
//! effect twice; acknowledged writes are ordered in real time (linearizable writes); every
//! snapshot a member installed or loaded is the model's state at its index; every read after
//! a sync reflects all writes acknowledged before the sync was sent, and is what the model
//! holds at the index it was read at (linearizable reads).

use std::collections::BTreeMap;

use ringkeeper::machine::View;
use ringkeeper::txn::{Applied, Command, Op, OpResult};

use super::client::ReadResult;
use super::member::{decode_batch, Member};
use super::model::Model;
use super::world::Time;

/// The first application of one log index; every later one must equal it.
struct Canon {
    term: u64,
    data: Vec<u8>,
    member: u64,
    apps: Vec<CanonApp>,
}

#[derive(Clone, Debug, PartialEq)]
struct CanonApp {
    origin: u64,
    session: i64,
    xid: i32,
    close: bool,
    zxid: i64,
    result: OpResult,
    duplicate: bool,
}

/// A member applied a command it proposed: the write is acknowledged.
pub struct Ack {
    pub member: u64,
    pub origin: u64,
    pub index: u64,
    pub pos: usize,
    pub zxid: i64,
    pub result: OpResult,
    pub at: Time,
}

/// One sync sent by a client (each attempt is one).
pub struct SyncSent {
    pub client: usize,
    pub path: String,
    pub sent: Time,
}

/// A member answered a sync: it read `path` at applied index `applied`, for a read index of
/// `read_index`.
pub struct ReadAnswer {
    pub attempt: usize,
    pub member: u64,
    pub read_index: u64,
    pub applied: u64,
    pub read: ReadResult,
    pub at: Time,
}

/// One client request (all its attempts).
pub struct ClientCommand {
    pub client: usize,
    pub first_sent: Time,
    pub origins: Vec<u64>,
}

#[derive(Default)]
pub struct Checker {
    canon: BTreeMap<u64, Canon>,
    pub acks: Vec<Ack>,
    pub commands: Vec<ClientCommand>,
    origin_command: BTreeMap<u64, usize>,
    pub proposals: u64,
    pub syncs: Vec<SyncSent>,
    pub answers: Vec<ReadAnswer>,
    /// (member, index, state) of every snapshot a member installed or started from.
    snapshots: Vec<(u64, u64, View)>,
}

impl Checker {
    pub fn last_index(&self) -> u64 {
        self.canon.keys().next_back().copied().unwrap_or(0)
    }

    pub fn new_command(&mut self, client: usize, now: Time) -> usize {
        self.commands.push(ClientCommand {
            client,
            first_sent: now,
            origins: Vec::new(),
        });
        self.commands.len() - 1
    }

    pub fn attempt(&mut self, command: usize, origin: u64) {
        self.commands[command].origins.push(origin);
        self.origin_command.insert(origin, command);
    }

    pub fn sync_sent(&mut self, client: usize, path: String, now: Time) -> usize {
        self.syncs.push(SyncSent {
            client,
            path,
            sent: now,
        });
        self.syncs.len() - 1
    }

    pub fn read(
        &mut self,
        attempt: usize,
        member: u64,
        read_index: u64,
        applied: u64,
        read: ReadResult,
        at: Time,
    ) {
        self.answers.push(ReadAnswer {
            attempt,
            member,
            read_index,
            applied,
            read,
            at,
        });
    }

    /// Member `member`'s machine became a snapshot's state at `index`.
    pub fn snapshot_state(&mut self, member: u64, index: u64, view: View) {
        self.snapshots.push((member, index, view));
    }

    pub fn proposed(&mut self, _origin: u64) {
        self.proposals += 1;
    }

    /// Member `id` applies entry `index`: it must be the entry everyone else applied there.
    pub fn entry(&mut self, id: u64, index: u64, term: u64, data: &[u8]) -> Result<(), String> {
        match self.canon.get(&index) {
            None => {
                self.canon.insert(
                    index,
                    Canon {
                        term,
                        data: data.to_vec(),
                        member: id,
                        apps: Vec::new(),
                    },
                );
                Ok(())
            }
            Some(c) if c.term == term && c.data == data => Ok(()),
            Some(c) => Err(format!(
                "state machine safety: member {id} applied entry {index} of term {term} \
                 ({} bytes), member {} applied one of term {} ({} bytes) there",
                data.len(),
                c.member,
                c.term,
                c.data.len()
            )),
        }
    }

    /// Member `id` applied command `pos` of entry `index`: same result and zxid everywhere.
    pub fn app(
        &mut self,
        id: u64,
        index: u64,
        pos: usize,
        cmd: &Command,
        a: &Applied,
    ) -> Result<(), String> {
        let app = CanonApp {
            origin: a.origin,
            session: cmd.session,
            xid: cmd.xid,
            close: matches!(cmd.op, Op::CloseSession),
            zxid: a.zxid,
            result: a.result.clone(),
            duplicate: a.duplicate,
        };
        let canon = self.canon.get_mut(&index).expect("entry() came first");
        if canon.apps.len() == pos {
            canon.apps.push(app);
            return Ok(());
        }
        if canon.apps[pos] != app {
            return Err(format!(
                "members disagree on command {pos} of entry {index}: member {} got {:?}, \
                 member {id} got {app:?}",
                canon.member, canon.apps[pos]
            ));
        }
        Ok(())
    }

    pub fn ack(&mut self, member: u64, a: &Applied, index: u64, pos: usize, at: Time) {
        self.acks.push(Ack {
            member,
            origin: a.origin,
            index,
            pos,
            zxid: a.zxid,
            result: a.result.clone(),
            at,
        });
    }

    /// The checks at the end of a run, once every member has applied the same last index.
    /// Returns how many retries the idempotency record answered.
    pub fn final_checks(&self, members: &[Member]) -> Result<usize, String> {
        let last = self.last_index();
        if self.canon.len() as u64 != last {
            return Err(format!(
                "the applied log has holes: {} indexes up to {last}",
                self.canon.len()
            ));
        }

        // (1) Every member: same state.
        let views: Vec<_> = members
            .iter()
            .map(|m| {
                let n = m.node.as_ref().expect("everyone is up at the end");
                (m.id, n.applied_index, n.machine.view())
            })
            .collect();
        let (id0, _, v0) = &views[0];
        for (id, applied, v) in &views {
            if *applied != last {
                return Err(format!("member {id} applied up to {applied}, not {last}"));
            }
            if v.tree() != v0.tree() {
                return Err(format!("members {id0} and {id} have different trees"));
            }
            if v.session_table() != v0.session_table() {
                return Err(format!(
                    "members {id0} and {id} have different session tables"
                ));
            }
            if v.last_zxid() != v0.last_zxid() {
                return Err(format!(
                    "members {id0} and {id}: last zxid {:#x} vs {:#x}",
                    v0.last_zxid(),
                    v.last_zxid()
                ));
            }
        }

        // (2, 3) The log through the model: same results and zxids, zxids increasing, and
        // the same final state.
        let mut model = Model::new();
        let mut prev_zxid = 0i64;
        let mut snapshots: BTreeMap<u64, Vec<(u64, &View)>> = BTreeMap::new();
        for (member, index, view) in &self.snapshots {
            snapshots.entry(*index).or_default().push((*member, view));
        }
        let mut reads: BTreeMap<u64, Vec<&ReadAnswer>> = BTreeMap::new();
        for a in &self.answers {
            reads.entry(a.applied).or_default().push(a);
        }
        // (6) States observed at `index`: snapshots and reads.
        let observed = |model: &Model, index: u64| -> Result<(), String> {
            for (member, view) in snapshots.get(&index).into_iter().flatten() {
                model.compare(view).map_err(|e| {
                    format!("member {member}'s snapshot at {index} is not the state there: {e}")
                })?;
            }
            for a in reads.get(&index).into_iter().flatten() {
                let path = &self.syncs[a.attempt].path;
                let want = model.read(path);
                if a.read != want {
                    return Err(format!(
                        "member {} answered sync #{} with a read of {path} at applied index \
                         {index} that found {:?}; the model holds {want:?} there",
                        a.member, a.attempt, a.read
                    ));
                }
            }
            Ok(())
        };
        observed(&model, 0)?;
        for (index, c) in &self.canon {
            if c.data.is_empty() {
                observed(&model, *index)?;
                continue;
            }
            let batch = decode_batch(*index, &c.data)?;
            let outcomes = model.apply_batch(c.term, &batch);
            for (pos, (o, app)) in outcomes.iter().zip(&c.apps).enumerate() {
                if o.zxid != app.zxid || o.result != app.result || o.duplicate != app.duplicate {
                    return Err(format!(
                        "entry {index} command {pos} ({:?}): the machine gave zxid {:#x} {:?} \
                         (duplicate: {}), the model zxid {:#x} {:?} (duplicate: {})",
                        batch.commands[pos].op,
                        app.zxid,
                        app.result,
                        app.duplicate,
                        o.zxid,
                        o.result,
                        o.duplicate
                    ));
                }
                if !app.duplicate {
                    if app.zxid <= prev_zxid {
                        return Err(format!(
                            "zxid {:#x} at entry {index} does not follow {prev_zxid:#x}",
                            app.zxid
                        ));
                    }
                    prev_zxid = app.zxid;
                }
            }
            observed(&model, *index)?;
        }
        model
            .compare(v0)
            .map_err(|e| format!("final state vs model: {e}"))?;

        // (2) Every acknowledged write is in the final log, as acknowledged.
        for ack in &self.acks {
            let app = self
                .canon
                .get(&ack.index)
                .and_then(|c| c.apps.get(ack.pos))
                .filter(|app| app.origin == ack.origin);
            match app {
                Some(app) if app.zxid == ack.zxid && app.result == ack.result => {}
                _ => {
                    return Err(format!(
                        "member {} acknowledged origin {:#x} at entry {} (zxid {:#x}), which \
                         the final log does not hold as acknowledged",
                        ack.member, ack.origin, ack.index, ack.zxid
                    ))
                }
            }
        }

        // (4) No command took effect twice: a (session, xid) applies once; repeats come from
        // the idempotency record.
        let mut effects: BTreeMap<(i64, i32), Vec<u64>> = BTreeMap::new();
        for (index, c) in &self.canon {
            for app in &c.apps {
                if app.session == 0 || app.duplicate {
                    continue;
                }
                // A retried close finds its session gone (SessionExpired): no effect.
                if app.close && app.result != OpResult::SessionClosed {
                    continue;
                }
                effects
                    .entry((app.session, app.xid))
                    .or_default()
                    .push(*index);
            }
        }
        if let Some(((session, xid), at)) = effects.iter().find(|(_, v)| v.len() > 1) {
            return Err(format!(
                "session {session:#x} xid {xid} took effect more than once, at entries {at:?}"
            ));
        }

        // (5) Linearizable writes: if A was acknowledged before B was first sent, B comes
        // after A in the log (zxid order).
        let mut first_ack: BTreeMap<usize, (Time, i64, u64)> = BTreeMap::new();
        for ack in &self.acks {
            let Some(&cmd) = self.origin_command.get(&ack.origin) else {
                continue;
            };
            let e = first_ack
                .entry(cmd)
                .or_insert((ack.at, ack.zxid, ack.origin));
            if ack.at < e.0 {
                *e = (ack.at, ack.zxid, ack.origin);
            }
        }
        // Every command's smallest zxid among the applications that took effect.
        let mut effect_zxid: BTreeMap<usize, i64> = BTreeMap::new();
        for c in self.canon.values() {
            for app in c.apps.iter().filter(|a| !a.duplicate) {
                if let Some(&cmd) = self.origin_command.get(&app.origin) {
                    let z = effect_zxid.entry(cmd).or_insert(app.zxid);
                    *z = (*z).min(app.zxid);
                }
            }
        }
        let mut acked: Vec<(Time, i64, usize)> =
            first_ack.iter().map(|(&c, &(t, z, _))| (t, z, c)).collect();
        acked.sort();
        let mut sent: Vec<(Time, usize)> = effect_zxid
            .keys()
            .map(|&c| (self.commands[c].first_sent, c))
            .collect();
        sent.sort();
        let mut i = 0;
        let mut newest: Option<(i64, usize, Time)> = None;
        for (t, b) in sent {
            while i < acked.len() && acked[i].0 < t {
                let (at, z, a) = acked[i];
                if newest.is_none_or(|(nz, _, _)| z > nz) {
                    newest = Some((z, a, at));
                }
                i += 1;
            }
            let zb = effect_zxid[&b];
            if let Some((za, a, at)) = newest {
                if za >= zb {
                    return Err(format!(
                        "not linearizable: client {}'s request (zxid {za:#x}) was acknowledged \
                         at {at}µs, before client {}'s request was sent at {t}µs, yet the \
                         latter got the earlier zxid {zb:#x}",
                        self.commands[a].client, self.commands[b].client
                    ));
                }
            }
        }

        // (7) Linearizable reads: a read after a sync reflects every write acknowledged (to
        // anyone) before the sync was sent: it was read at an index at or past theirs.
        let mut acked: Vec<(Time, u64, usize)> = self
            .acks
            .iter()
            .enumerate()
            .map(|(i, a)| (a.at, a.index, i))
            .collect();
        acked.sort();
        // The newest acknowledged index (and its ack) among the acks up to each position.
        let mut newest: Vec<(u64, usize)> = Vec::with_capacity(acked.len());
        for &(_, index, i) in &acked {
            let prev = newest.last().copied().unwrap_or((0, usize::MAX));
            newest.push(if index > prev.0 { (index, i) } else { prev });
        }
        for a in &self.answers {
            let sync = &self.syncs[a.attempt];
            let before = acked.partition_point(|&(at, _, _)| at < sync.sent);
            let Some(&(need, ack)) = before.checked_sub(1).map(|i| &newest[i]) else {
                continue;
            };
            if a.read_index < need {
                let ack = &self.acks[ack];
                return Err(format!(
                    "stale read index: client {}'s sync #{} sent at {}µs got read index {} from \
                     member {} (answered at {}µs, read at applied index {}), but member {} had \
                     acknowledged origin {:#x} at index {need} at {}µs, before the sync",
                    sync.client,
                    a.attempt,
                    sync.sent,
                    a.read_index,
                    a.member,
                    a.at,
                    a.applied,
                    ack.member,
                    ack.origin,
                    ack.at
                ));
            }
            if a.applied < need {
                let ack = &self.acks[ack];
                return Err(format!(
                    "stale read: client {}'s sync #{} sent at {}µs was answered by member {} \
                     at {}µs with a read at applied index {} (read index {}), but member {} \
                     had acknowledged origin {:#x} at index {need} at {}µs, before the sync",
                    sync.client,
                    a.attempt,
                    sync.sent,
                    a.member,
                    a.at,
                    a.applied,
                    a.read_index,
                    ack.member,
                    ack.origin,
                    ack.at
                ));
            }
        }

        Ok(self
            .canon
            .values()
            .flat_map(|c| &c.apps)
            .filter(|a| a.duplicate)
            .count())
    }
}
