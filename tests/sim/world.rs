//! The simulation's notion of time: a virtual clock, the event queue that drives everything in
//! one thread, and the trace that a failing seed prints.
//!
//! Every decision is taken from one seeded PRNG and events are ordered by (time, sequence
//! number), so the same seed replays the same run (see `member::pin_election_timeout` for the
//! one source of randomness that lives inside raft-rs).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

/// Virtual time in microseconds since the start of the run.
pub type Time = u64;
pub const MS: Time = 1_000;
pub const SEC: Time = 1_000_000;

/// Events a run may have scheduled at once. Far above what a healthy run needs (a few hundred):
/// hitting it means something schedules without bound, which is a bug in the simulation.
const MAX_SCHEDULED: usize = 200_000;

struct Slot<E> {
    at: Time,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Slot<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<E> Eq for Slot<E> {}
impl<E> PartialOrd for Slot<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Slot<E> {
    /// Reversed: `BinaryHeap` is a max-heap and the earliest event must come out first. The
    /// sequence number breaks ties in scheduling order, which keeps runs deterministic.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// The event queue and the virtual clock it advances.
pub struct Queue<E> {
    heap: BinaryHeap<Slot<E>>,
    seq: u64,
    now: Time,
}

impl<E> Queue<E> {
    pub fn new() -> Self {
        Queue {
            heap: BinaryHeap::new(),
            seq: 0,
            now: 0,
        }
    }

    pub fn now(&self) -> Time {
        self.now
    }

    /// Schedules `event` `delay` µs from now.
    pub fn after(&mut self, delay: Time, event: E) {
        self.at(self.now + delay, event);
    }

    pub fn at(&mut self, at: Time, event: E) {
        assert!(
            self.heap.len() < MAX_SCHEDULED,
            "the event queue passed its limit"
        );
        self.seq += 1;
        self.heap.push(Slot {
            at: at.max(self.now),
            seq: self.seq,
            event,
        });
    }

    /// The next event; the clock moves to its time.
    pub fn pop(&mut self) -> Option<E> {
        let slot = self.heap.pop()?;
        self.now = slot.at;
        Some(slot.event)
    }
}

/// The last lines of what happened (printed with a failure), and a fingerprint of every event
/// handled (two runs of one seed must end with the same fingerprint). Faults, restarts and
/// leader changes are also kept in a ring of their own, so that a burst of client traffic
/// does not push them out of a failure's report.
pub struct Trace {
    lines: VecDeque<String>,
    major: VecDeque<String>,
    cap: usize,
    /// Print every line as it is noted (`RK_SIM_TRACE=1`, for replaying one seed).
    echo: bool,
    fingerprint: u64,
}

impl Trace {
    pub fn new(cap: usize, echo: bool) -> Trace {
        Trace {
            lines: VecDeque::with_capacity(cap),
            major: VecDeque::with_capacity(cap),
            cap,
            echo,
            fingerprint: 0xcbf2_9ce4_8422_2325,
        }
    }

    pub fn echo(&self) -> bool {
        self.echo
    }

    /// A line about client traffic.
    pub fn note(&mut self, now: Time, line: String) {
        let line = format!("{:>6}.{:03}ms {line}", now / MS, now % MS);
        if self.echo {
            eprintln!("{line}");
        }
        push(&mut self.lines, self.cap, line);
    }

    /// A line about the ensemble: faults, restarts, leaders.
    pub fn note_major(&mut self, now: Time, line: String) {
        let line = format!("{:>6}.{:03}ms {line}", now / MS, now % MS);
        if self.echo {
            eprintln!("{line}");
        }
        push(&mut self.major, self.cap, line.clone());
        push(&mut self.lines, self.cap, line);
    }

    /// Folds one value into the fingerprint (FNV-1a over its bytes).
    pub fn mix(&mut self, value: u64) {
        for b in value.to_le_bytes() {
            self.fingerprint ^= b as u64;
            self.fingerprint = self.fingerprint.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The report: the last faults and leader changes, then the last events of any kind.
    pub fn tail(&self) -> String {
        let mut s = String::from(" faults, restarts and leaders:\n");
        for l in &self.major {
            s.push_str("  ");
            s.push_str(l);
            s.push('\n');
        }
        s.push_str(" all events:\n");
        for l in &self.lines {
            s.push_str("  ");
            s.push_str(l);
            s.push('\n');
        }
        s
    }
}

fn push(ring: &mut VecDeque<String>, cap: usize, line: String) {
    if ring.len() == cap {
        ring.pop_front();
    }
    ring.push_back(line);
}
