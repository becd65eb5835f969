//! A member's simulated disk: a durable log (raft entries + the last hard state, exactly what
//! the real WAL recovers, gaps after an installed snapshot included), the newest snapshot
//! received from a leader, and the writes not yet synced. A wipe loses all of it.
//!
//! It mirrors the real log's group commit: one sync in flight; everything submitted meanwhile
//! goes into the next one. A crash loses every write that was not reported durable, except
//! that a prefix of the sync in flight may have reached the platter (a torn write: the real
//! WAL truncates the torn record and keeps the whole records before it).

use std::collections::VecDeque;

use raft::eraftpb::{Entry, Message};
use rand::rngs::StdRng;
use rand::Rng;

/// One record, as the WAL would write it.
#[derive(Clone, Debug)]
pub enum Record {
    Entry(Entry),
    /// (term, vote, commit)
    HardState(u64, u64, u64),
}

/// What one `Consensus::poll` asked to persist, with the messages that may leave only once it
/// is durable.
pub struct Write {
    pub number: u64,
    pub records: Vec<Record>,
    pub persisted_messages: Vec<Message>,
}

/// A snapshot the member received from a leader, as the real shell writes it
/// (`snapshots::write_received`) before raft sees its message: the encoded bytes.
#[derive(Clone)]
pub struct StoredSnapshot {
    pub index: u64,
    pub term: u64,
    pub bytes: Vec<u8>,
}

/// What a durable state holds at an index (`Durable::term_at`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    Term(u64),
    /// Below a snapshot's index: part of its (committed) state.
    Covered,
}

/// What survives a crash.
#[derive(Default, Clone)]
pub struct Durable {
    /// Contiguous, ascending indexes, exactly what the real WAL's replay recovers
    /// (`log::record::Replay`): usually 1..=n, or from just after an installed snapshot.
    pub entries: Vec<Entry>,
    pub hard_state: Option<(u64, u64, u64)>,
    /// The newest (by index) snapshot received from a leader, as `snapshots::load_newest`
    /// would pick it.
    pub snapshot: Option<StoredSnapshot>,
}

impl Durable {
    /// Replays one record as the real WAL's recovery does (`log::record::Replay::apply`).
    /// Returns how many durable entries the record overwrote (raft log truncation) and
    /// whether it reset the log after a gap.
    fn apply(&mut self, record: &Record) -> (usize, bool) {
        match record {
            Record::Entry(e) => {
                let (mut dropped, mut gap) = (0, false);
                if let (Some(first), Some(last)) = (self.entries.first(), self.entries.last()) {
                    let (first, last) = (first.index, last.index);
                    if last + 1 != e.index {
                        let keep = if e.index > last {
                            // A gap: entries appended after an installed snapshot. The
                            // snapshot covers everything before it.
                            gap = true;
                            0
                        } else {
                            dropped = (last + 1 - e.index.max(first)) as usize;
                            e.index.saturating_sub(first) as usize
                        };
                        self.entries.truncate(keep);
                    }
                }
                self.entries.push(e.clone());
                (dropped, gap)
            }
            Record::HardState(t, v, c) => {
                self.hard_state = Some((*t, *v, *c));
                (0, false)
            }
        }
    }

    /// What a start-up recovers (sequencer `run`): the snapshot, and the entries after it.
    pub fn log_after_snapshot(&self) -> &[Entry] {
        let after = self.snapshot.as_ref().map_or(0, |s| s.index);
        let skip = self.entries.partition_point(|e| e.index <= after);
        &self.entries[skip..]
    }

    /// The last durable log position (index, term): the last entry after the snapshot, else
    /// the snapshot's.
    pub fn last(&self) -> Option<(u64, u64)> {
        match (self.log_after_snapshot().last(), &self.snapshot) {
            (Some(e), _) => Some((e.index, e.term)),
            (None, Some(s)) => Some((s.index, s.term)),
            (None, None) => None,
        }
    }

    /// What the durable state holds at `index`: an entry of some term, or the state of a
    /// snapshot that covers it (committed state), or nothing.
    pub fn term_at(&self, index: u64) -> Option<Held> {
        if let Some(s) = &self.snapshot {
            if index < s.index {
                return Some(Held::Covered);
            }
            if index == s.index {
                return Some(Held::Term(s.term));
            }
        }
        let first = self.entries.first()?.index;
        let e = self.entries.get(index.checked_sub(first)? as usize)?;
        Some(Held::Term(e.term))
    }

    /// Keeps a received snapshot if it is the newest (by index) on disk.
    pub fn store_snapshot(&mut self, snapshot: StoredSnapshot) {
        if self
            .snapshot
            .as_ref()
            .is_none_or(|s| s.index <= snapshot.index)
        {
            self.snapshot = Some(snapshot);
        }
    }
}

/// Writes submitted but not yet synced are at most this many; above it the member stops
/// proposing (the sequencer's MAX_LOG_BACKLOG).
pub const MAX_BACKLOG: usize = 256;

pub struct Disk {
    pub durable: Durable,
    queued: VecDeque<Write>,
    in_flight: Option<(u64, Vec<Write>)>,
    next_sync: u64,
    pub syncs: u64,
    pub torn: u64,
    /// Durable entries replaced by a new leader's (follower log truncation).
    pub overwritten: u64,
    /// Log writes after a gap (the first entries after an installed snapshot).
    pub gap_resets: u64,
    /// Times the disk was wiped (the member restarted with an empty data dir).
    pub wipes: u64,
}

impl Disk {
    pub fn new() -> Disk {
        Disk {
            durable: Durable::default(),
            queued: VecDeque::new(),
            in_flight: None,
            next_sync: 0,
            syncs: 0,
            torn: 0,
            overwritten: 0,
            gap_resets: 0,
            wipes: 0,
        }
    }

    /// Nothing queued and nothing being synced.
    pub fn idle(&self) -> bool {
        self.queued.is_empty() && self.in_flight.is_none()
    }

    pub fn backlog(&self) -> usize {
        self.queued.len() + self.in_flight.as_ref().map_or(0, |(_, w)| w.len())
    }

    pub fn submit(&mut self, write: Write) {
        self.queued.push_back(write);
    }

    /// Starts a sync of everything queued if none is in flight; returns its id, for the
    /// completion event.
    pub fn start_sync(&mut self) -> Option<u64> {
        if self.in_flight.is_some() || self.queued.is_empty() {
            return None;
        }
        self.next_sync += 1;
        let writes = self.queued.drain(..).collect();
        self.in_flight = Some((self.next_sync, writes));
        Some(self.next_sync)
    }

    /// The sync `id` completed: its records are durable. Returns its writes, in order.
    pub fn complete(&mut self, id: u64) -> Vec<Write> {
        match self.in_flight.take() {
            Some((current, writes)) if current == id => {
                for w in &writes {
                    for r in &w.records {
                        self.record(r);
                    }
                }
                self.syncs += 1;
                writes
            }
            other => {
                self.in_flight = other;
                panic!("completion of sync {id}, which is not in flight");
            }
        }
    }

    /// Power loss: unsynced writes are gone; with `torn`, a random prefix of the records of
    /// the sync in flight made it to disk (never reported durable, so raft relied on none).
    pub fn crash(&mut self, rng: &mut StdRng, torn: bool) {
        if let Some((_, writes)) = self.in_flight.take() {
            let records: Vec<&Record> = writes.iter().flat_map(|w| &w.records).collect();
            if torn && !records.is_empty() {
                let keep = rng.gen_range(0..=records.len());
                if keep > 0 {
                    self.torn += 1;
                }
                for r in &records[..keep] {
                    self.record(r);
                }
            }
        }
        self.queued.clear();
    }

    fn record(&mut self, r: &Record) {
        let (dropped, gap) = self.durable.apply(r);
        self.overwritten += dropped as u64;
        self.gap_resets += gap as u64;
    }

    /// The data dir is lost (after a crash): the member restarts with nothing, as on a new
    /// machine (empty log, no hard state, no snapshot).
    pub fn wipe(&mut self) {
        assert!(self.idle(), "a wipe follows a crash");
        self.durable = Durable::default();
        self.wipes += 1;
    }
}
