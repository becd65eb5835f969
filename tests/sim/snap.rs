//! Snapshot transfer, as the real shell does it (sequencer `send_snapshot`,
//! `receive_snapshot`, `install_snapshot`, `Event::Persisted`):
//!
//! * raft (the leader) asks for a snapshot when a follower needs entries its in-memory log no
//!   longer holds; the `MsgSnapshot` names the index last passed to `Consensus::applied` and
//!   carries no data. The shell streams `snapshot::encode` of its machine at exactly that
//!   index (else it reports failure and raft asks again), one transfer per member at a time,
//!   then reports `snapshot_sent(to, ok)`: ok once the stream is flushed, which says nothing
//!   about its arrival (a stream can break after that).
//! * The receiver decodes the bytes (`snapshot::decode`), stores them durably (the data dir's
//!   snapshots, which a restart loads), keeps `(index, machine)` as incoming, and steps the
//!   message; while one is being stored, others are dropped (the leader sends again).
//! * When raft takes it, `poll` returns `Output::snapshot`: the machine becomes the incoming
//!   one (which must be at that index), and raft hears `applied(index)` only once that ready is
//!   durable (raft-rs panics if applied passes persisted).
//!
//! The stream goes over the simulated network: a partition refuses the connection (after a
//! connect timeout), a member that is down refuses it at once, and a lossy link may break it
//! (reported failed, or reported sent and lost).

use raft::eraftpb::Message;
use rand::Rng;
use ringkeeper::machine::{Machine, MachineConfig};
use ringkeeper::snapshot;

use super::disk::StoredSnapshot;
use super::world::{Time, MS};
use super::{Event, Sim};

/// A partitioned member's address does not answer: the connect gives up after this.
const CONNECT_TIMEOUT: Time = 1_000 * MS;
/// Bytes per µs a stream moves (100 MB/s).
const BANDWIDTH: u64 = 100;
/// A stream breaks with this probability, plus the link's loss rate.
const STREAM_BREAKS: f64 = 0.1;

/// A snapshot from the leader, decoded (or why not), with the raft message to step once it is
/// on disk.
pub struct Received {
    pub from: usize,
    pub msg: Message,
    pub index: u64,
    pub term: u64,
    pub bytes: Vec<u8>,
    pub result: Result<Machine, String>,
}

impl Sim {
    /// raft wants member `to` to catch up from a snapshot at our applied index: stream the
    /// state at that index (sequencer `send_snapshot`).
    pub fn send_snapshot(&mut self, m: usize, msg: Message) -> Result<(), String> {
        let to = msg.to;
        let (index, term) = {
            let meta = msg.get_snapshot().get_metadata();
            (meta.index, meta.term)
        };
        let id = self.members[m].id;
        let node = self.members[m].node.as_mut().expect("a live member");
        if node.transfers.contains(&to) {
            return Ok(()); // the transfer under way reports for both
        }
        if index != node.applied_index {
            // Not the state we hold now: raft asks again.
            node.consensus.snapshot_sent(to, false);
            let applied = node.applied_index;
            self.note_major(format!(
                "member {id}: raft asks for a snapshot at {index} to member {to}, the machine \
                 is at {applied}: refused"
            ));
            return Ok(());
        }
        node.transfers.insert(to);
        let view = node.machine.view();
        let meta = snapshot::Meta::new(index, term, view.last_zxid(), node.consensus.membership());
        let mut data = Vec::new();
        snapshot::encode(&view, &meta, &mut |b| {
            data.extend_from_slice(b);
            Ok(())
        })
        .map_err(|e| format!("member {id}: encoding a snapshot at {index} failed: {e}"))?;
        self.snapshots_sent += 1;
        self.note_major(format!(
            "member {id} streams a snapshot at {index} (term {term}, {} bytes) to member {to}",
            data.len()
        ));
        let life = self.members[m].life;
        let t = to as usize - 1;
        if !self.net.connected(m, t) {
            self.q.after(
                CONNECT_TIMEOUT,
                Event::SnapshotSent {
                    m,
                    life,
                    to,
                    ok: false,
                },
            );
            return Ok(());
        }
        if self.members[t].node.is_none() {
            let refused = self.rng.gen_range(100..2 * MS);
            self.q.after(
                refused,
                Event::SnapshotSent {
                    m,
                    life,
                    to,
                    ok: false,
                },
            );
            return Ok(());
        }
        let net = &self.net.cfg;
        let transfer =
            self.rng.gen_range(net.min_delay..=net.max_delay) + data.len() as u64 / BANDWIDTH;
        if self.rng.gen_bool(STREAM_BREAKS + net.loss) {
            // The connection breaks: either the sender notices, or it had flushed everything
            // into the socket and reports success for a stream that never arrives.
            let ok = self.rng.gen_bool(0.5);
            let at = self.rng.gen_range(0..=transfer);
            self.q.after(at, Event::SnapshotSent { m, life, to, ok });
            return Ok(());
        }
        self.q.after(
            transfer,
            Event::SnapshotArrives {
                from: m,
                to: t,
                data,
                msg: Box::new(msg),
            },
        );
        let flushed = self.rng.gen_range(transfer / 2..=transfer);
        self.q.after(
            flushed,
            Event::SnapshotSent {
                m,
                life,
                to,
                ok: true,
            },
        );
        Ok(())
    }

    /// The stream to `to` ended (sequencer `Event::SnapshotSent`).
    pub fn on_snapshot_sent(
        &mut self,
        m: usize,
        life: u32,
        to: u64,
        ok: bool,
    ) -> Result<(), String> {
        if self.members[m].life != life {
            return Ok(()); // the process that streamed it is gone, and with it the transfer
        }
        let Some(node) = self.members[m].node.as_mut() else {
            return Ok(());
        };
        node.transfers.remove(&to);
        if ok {
            // As the real shell (sizes here are small): 10 s, plus 1 s per 10 MB.
            node.installs
                .insert(to, self.q.now() + super::member::SNAPSHOT_INSTALL_TIMEOUT);
        } else {
            node.consensus.snapshot_sent(to, false);
        }
        if !ok {
            let id = self.members[m].id;
            self.note_major(format!("member {id}: the snapshot stream to {to} failed"));
        }
        self.pump(m)
    }

    /// A snapshot stream arrives (sequencer `receive_snapshot`): decoded and stored on a
    /// thread, which takes about a disk sync.
    pub fn on_snapshot_arrives(
        &mut self,
        from: usize,
        to: usize,
        data: Vec<u8>,
        msg: Message,
    ) -> Result<(), String> {
        if !self.net.connected(from, to) {
            return Ok(()); // the connection broke
        }
        let life = self.members[to].life;
        let Some(node) = self.members[to].node.as_mut() else {
            return Ok(());
        };
        if node.installing {
            return Ok(()); // the leader sends it again
        }
        node.installing = true;
        let (index, term) = {
            let meta = msg.get_snapshot().get_metadata();
            (meta.index, meta.term)
        };
        let result = match snapshot::decode(&data, MachineConfig::default()) {
            Ok((meta, _)) if meta.index != index || meta.term != term => Err(format!(
                "the data is at index {} (term {}) but the message at {index} (term {term})",
                meta.index, meta.term
            )),
            Ok((_, machine)) => Ok(machine),
            Err(e) => Err(e.to_string()),
        };
        let took = self.rng.gen_range(self.cfg.disk_min..=self.cfg.disk_max)
            + data.len() as u64 / BANDWIDTH;
        let stored = Received {
            from,
            msg,
            index,
            term,
            bytes: data,
            result,
        };
        self.q.after(
            took,
            Event::SnapshotStored {
                m: to,
                life,
                stored: Box::new(stored),
            },
        );
        Ok(())
    }

    /// The received snapshot is on disk: raft may take it (sequencer `SnapshotReceived`).
    pub fn on_snapshot_stored(&mut self, m: usize, life: u32, r: Received) -> Result<(), String> {
        if self.members[m].life != life || self.members[m].node.is_none() {
            return Ok(()); // the crash took the half-written file with it
        }
        let id = self.members[m].id;
        let machine = match r.result {
            Ok(machine) => machine,
            // The real shell logs this and drops it; here every snapshot comes from a real
            // encoder, so it is a finding.
            Err(e) => {
                return Err(format!(
                    "member {id}: a snapshot at {} from member {} does not decode: {e}",
                    r.index,
                    r.from + 1
                ))
            }
        };
        self.members[m].disk.durable.store_snapshot(StoredSnapshot {
            index: r.index,
            term: r.term,
            bytes: r.bytes,
        });
        let seed = self.cfg.seed;
        let node = self.members[m].node.as_mut().expect("checked");
        node.installing = false;
        node.incoming = Some((r.index, machine));
        let sender = r.msg.from;
        if let Err(e) = node.consensus.step(sender, r.msg) {
            self.note_major(format!(
                "member {id}: the leader's snapshot was refused: {e}"
            ));
            return Ok(());
        }
        super::member::pin_election_timeout(&mut node.consensus, seed, id);
        self.pump(m)
    }

    /// raft took the leader's snapshot at `index` in ready `ready` (sequencer
    /// `install_snapshot`): the machine becomes the state received with it.
    pub fn install_snapshot(&mut self, m: usize, ready: u64, index: u64) -> Result<(), String> {
        let id = self.members[m].id;
        let node = self.members[m].node.as_mut().expect("a live member");
        let machine = match node.incoming.take() {
            Some((at, machine)) if at == index => machine,
            other => {
                return Err(format!(
                    "member {id}: raft installed a snapshot at {index} whose state is not here \
                     (incoming: {:?})",
                    other.map(|(at, _)| at)
                ))
            }
        };
        let view = machine.view();
        node.machine = machine;
        node.applied_index = index;
        node.installed = Some((ready, index));
        self.snapshots_installed += 1;
        self.checker.snapshot_state(id, index, view);
        self.note_major(format!("member {id} installs the snapshot at {index}"));
        Ok(())
    }
}
