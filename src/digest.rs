//! Comparing tree digests across members (sans-IO).
//!
//! Every member applies the same log, so after entry `i` every member's tree must have the
//! same digest (`tree::Tree::digest`). Each member records its digest after every entry it
//! applies; the leader sends its own now and then; a member compares once it has applied that
//! index too. A mismatch means this member's state diverged (a bug or a disk that lied): it is
//! reported, loudly, by the caller.

use std::collections::VecDeque;

/// Own digests kept (one per applied entry).
const HISTORY: usize = 8192;
/// Leader digests kept while this member has not applied their index yet.
const AHEAD: usize = 64;

/// The outcome of one comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compared {
    pub index: u64,
    pub ours: u64,
    pub leader: u64,
}

impl Compared {
    pub fn matches(&self) -> bool {
        self.ours == self.leader
    }
}

#[derive(Default)]
pub struct DigestLog {
    /// (index, digest after applying it), ascending.
    ours: VecDeque<(u64, u64)>,
    /// The leader's (index, digest), in arrival order.
    leader: VecDeque<(u64, u64)>,
    applied: u64,
}

impl DigestLog {
    /// This member applied entry `index` and its tree's digest is now `digest`.
    pub fn applied(&mut self, index: u64, digest: u64) {
        if self.ours.back().is_some_and(|&(last, _)| last >= index) {
            // A snapshot installed over a later state: what we recorded no longer holds.
            self.ours.clear();
        }
        if self.ours.len() == HISTORY {
            self.ours.pop_front();
        }
        self.ours.push_back((index, digest));
        self.applied = index;
    }

    /// The state was replaced wholesale (a snapshot from the leader) at `index`.
    pub fn reset(&mut self, index: u64, digest: u64) {
        self.ours.clear();
        self.applied(index, digest);
    }

    /// The leader's digest after entry `index`.
    pub fn leader(&mut self, index: u64, digest: u64) {
        if self.leader.len() == AHEAD {
            self.leader.pop_front();
        }
        self.leader.push_back((index, digest));
    }

    /// Every comparison that has become possible (the leader's index applied here and still
    /// in the history).
    pub fn compare(&mut self) -> Vec<Compared> {
        let mut out = Vec::new();
        while let Some(&(index, leader)) = self.leader.front() {
            if index > self.applied {
                break;
            }
            self.leader.pop_front();
            if let Ok(at) = self.ours.binary_search_by_key(&index, |d| d.0) {
                out.push(Compared {
                    index,
                    ours: self.ours[at].1,
                    leader,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_at_the_same_index_once_applied() {
        let mut d = DigestLog::default();
        d.applied(1, 10);
        d.applied(2, 20);
        d.leader(3, 30);
        d.leader(2, 20);
        assert!(d.compare().is_empty(), "index 3 is not applied yet");
        d.applied(3, 31);
        let c = d.compare();
        assert_eq!(c.len(), 2);
        assert!(!c[0].matches(), "3: ours 31, the leader's 30");
        assert_eq!(
            c[0],
            Compared {
                index: 3,
                ours: 31,
                leader: 30
            }
        );
        assert!(c[1].matches());
        assert!(d.compare().is_empty(), "each is compared once");
    }

    #[test]
    fn unknown_indexes_are_skipped_and_a_snapshot_resets() {
        let mut d = DigestLog::default();
        d.applied(5, 50);
        d.leader(4, 1); // before our history
        assert!(d.compare().is_empty());
        d.reset(100, 7); // a snapshot at 100
        d.leader(5, 50);
        d.leader(100, 7);
        let c = d.compare();
        assert_eq!(c.len(), 1);
        assert!(c[0].matches() && c[0].index == 100);
        for i in 0..(HISTORY as u64 + 10) {
            d.applied(101 + i, i);
        }
        d.leader(101, 0);
        assert!(d.compare().is_empty(), "fell out of the history");
    }
}
