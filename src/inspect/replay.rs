//! Replaying log entries to learn what the log cannot say by itself: zxids and results exist
//! only once `Machine::apply_batch` has run a command against the state before it.

use std::path::PathBuf;

use crate::log::snapshots;
use crate::machine::{Machine, MachineConfig};
use crate::txn::{Applied, Batch};

use super::layout::SnapshotFile;

/// The state a replay starts from.
pub struct Baseline {
    /// The last log index the state includes (0 for the empty state).
    pub index: u64,
    pub machine: Machine,
    /// The snapshot it came from; `None` for the empty state of a log that starts at 1.
    pub source: Option<PathBuf>,
}

/// Which usable snapshot a replay starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefer {
    /// The newest one whose next entry is in the log: least to replay (the dump).
    Newest,
    /// The oldest one the log reaches back to: most of the log checked (verify).
    Oldest,
}

/// Picks and loads where a replay of the kept log `first..=last` starts. A log that starts at
/// entry 1 starts from the empty state; otherwise from a snapshot at index `I` with
/// `first <= I + 1`, and `I + 1 <= last` for [`Prefer::Newest`] (`I <= last` for
/// [`Prefer::Oldest`], so that a snapshot at the last entry still anchors a check). Returns
/// `None` when no snapshot qualifies, with the snapshots that failed to load on the way.
pub fn baseline(
    range: Option<(u64, u64)>,
    snaps: &[SnapshotFile],
    prefer: Prefer,
    config: &MachineConfig,
) -> (Option<Baseline>, Vec<(PathBuf, String)>) {
    let mut failed = Vec::new();
    let Some((first, last)) = range else {
        return (None, failed);
    };
    if first <= 1 {
        let base = Baseline {
            index: 0,
            machine: Machine::new(config.clone()),
            source: None,
        };
        return (Some(base), failed);
    }
    let fits = |s: &&SnapshotFile| {
        let next = s.index.saturating_add(1);
        first <= next
            && match prefer {
                Prefer::Newest => next <= last,
                Prefer::Oldest => s.index <= last,
            }
    };
    let mut candidates: Vec<&SnapshotFile> = snaps.iter().filter(fits).collect();
    if prefer == Prefer::Newest {
        candidates.reverse();
    }
    for s in candidates {
        match snapshots::load(&s.path, config.clone()) {
            Ok((meta, machine)) if meta.index == s.index => {
                let base = Baseline {
                    index: meta.index,
                    machine,
                    source: Some(s.path.clone()),
                };
                return (Some(base), failed);
            }
            Ok((meta, _)) => failed.push((
                s.path.clone(),
                format!("holds index {}, not the one in its name", meta.index),
            )),
            Err(e) => failed.push((s.path.clone(), e.to_string())),
        }
    }
    (None, failed)
}

/// An entry's batch; `None` for an empty entry (a new leader's first, or raft leaving a
/// joint configuration). A configuration change carries its batch in its context.
pub fn decode_batch(data: &[u8], conf_change: bool) -> Result<Option<Batch>, String> {
    let payload = crate::consensus::entry_payload(data, conf_change).map_err(|e| e.to_string())?;
    if payload.is_empty() {
        return Ok(None);
    }
    Batch::decode(&payload).map(Some).map_err(|e| e.to_string())
}

/// What applying one kept entry gave.
pub enum Step {
    /// At or below the baseline: the starting state already includes it.
    Covered,
    /// No state to apply it to (no baseline, or an earlier entry could not be applied).
    Unknown,
    Applied(Vec<Applied>),
}

/// A machine moving along the kept log.
pub struct Replayer {
    machine: Option<Machine>,
    base: u64,
    /// The last index applied (or the baseline's).
    at: u64,
}

impl Replayer {
    pub fn new(baseline: Option<Baseline>) -> Replayer {
        match baseline {
            Some(b) => Replayer {
                base: b.index,
                at: b.index,
                machine: Some(b.machine),
            },
            None => Replayer {
                machine: None,
                base: 0,
                at: 0,
            },
        }
    }

    /// Applies kept entry `index` of `term` (`batch` `None` for an empty entry).
    pub fn step(&mut self, index: u64, term: u64, batch: Option<&Batch>) -> Step {
        if index <= self.base {
            return Step::Covered;
        }
        let Some(m) = self.machine.as_mut() else {
            return Step::Unknown;
        };
        if index != self.at.saturating_add(1) {
            // Kept entries are contiguous; a hole here means the files changed under us.
            self.machine = None;
            return Step::Unknown;
        }
        self.at = index;
        match batch {
            Some(b) => Step::Applied(m.apply_batch(term, b)),
            None => Step::Applied(Vec::new()),
        }
    }

    /// The state is unknown from here on (an entry that could not be decoded).
    pub fn lose_state(&mut self) {
        self.machine = None;
    }

    pub fn machine(&self) -> Option<&Machine> {
        self.machine.as_ref()
    }

    /// The last index whose effect the state includes.
    pub fn applied_index(&self) -> u64 {
        self.at
    }
}
