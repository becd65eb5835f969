//! A member's simulated disk: a durable log (raft entries + the last hard state, exactly what
//! the real WAL recovers) and the writes not yet synced.
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

/// What survives a crash.
#[derive(Default, Clone)]
pub struct Durable {
    /// Entries 1..=n, contiguous (the simulation never compacts: see the module docs of
    /// `member`).
    pub entries: Vec<Entry>,
    pub hard_state: Option<(u64, u64, u64)>,
}

impl Durable {
    /// Returns how many durable entries the record overwrote (raft log truncation).
    fn apply(&mut self, record: &Record) -> usize {
        match record {
            Record::Entry(e) => {
                let last = self.entries.len() as u64;
                assert!(
                    e.index >= 1 && e.index <= last + 1,
                    "a log write at {} leaves a gap after {last} (an unexpected snapshot?)",
                    e.index
                );
                // Raft log truncation: a new entry at an index drops that index and all after
                // it (the real WAL: "last writer wins" at recovery).
                let dropped = self.entries.len() - (e.index as usize - 1);
                self.entries.truncate(e.index as usize - 1);
                self.entries.push(e.clone());
                dropped
            }
            Record::HardState(t, v, c) => {
                self.hard_state = Some((*t, *v, *c));
                0
            }
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
                        self.overwritten += self.durable.apply(r) as u64;
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
                    self.overwritten += self.durable.apply(r) as u64;
                }
            }
        }
        self.queued.clear();
    }
}
