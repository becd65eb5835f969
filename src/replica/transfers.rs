//! Snapshots the leader streams to members that fell behind its log: one at a time per
//! member, and each reported to raft only once the member acknowledges it or gives up
//! waiting (reported at once, raft would probe while the member still stores and decodes it,
//! the member would refuse, and raft would ask for the whole snapshot again). Deterministic:
//! time comes in as monotonic milliseconds.

use std::collections::{HashMap, HashSet};

/// A member that received a snapshot and has not said it installed it within this, in
/// milliseconds (plus one per `INSTALL_BYTES_PER_MS`: it decodes and fsyncs it), is sent
/// another.
pub const INSTALL_TIMEOUT_MS: u64 = 10_000;
pub const INSTALL_BYTES_PER_MS: u64 = 10_000;

/// What to do with raft's request to send a member a snapshot.
#[derive(Debug, PartialEq, Eq)]
pub enum Stream {
    /// Stream it (it now counts as under way).
    Start,
    /// One is under way to that member: it reports for both.
    Already,
    /// Not possible now (no address, or not the state this member holds): tell raft it
    /// failed, it asks again.
    Refuse,
}

#[derive(Debug, Default)]
pub struct Transfers {
    sending: HashSet<u64>,
    /// Sent, not yet acknowledged: until when that is waited for.
    installing: HashMap<u64, u64>,
}

impl Transfers {
    /// raft wants `to` sent the state at `index`; this member has applied `applied`, and
    /// `reachable` says whether it knows the member's address.
    pub fn want(&mut self, to: u64, index: u64, applied: u64, reachable: bool) -> Stream {
        if self.sending.contains(&to) {
            return Stream::Already;
        }
        if !reachable || index != applied {
            return Stream::Refuse;
        }
        self.sending.insert(to);
        Stream::Start
    }

    /// The stream to `to` ended: `Some(bytes)` sent (wait for the member's acknowledgment),
    /// `None` failed (tell raft).
    pub fn sent(&mut self, to: u64, bytes: Option<u64>, now_ms: u64) {
        self.sending.remove(&to);
        if let Some(bytes) = bytes {
            let wait = INSTALL_TIMEOUT_MS + bytes / INSTALL_BYTES_PER_MS;
            self.installing.insert(to, now_ms + wait);
        }
    }

    /// The members whose snapshot was never acknowledged in time (`snapshotting` says whether
    /// raft still waits on a member): tell raft they failed, so it sends another.
    pub fn overdue(&mut self, now_ms: u64, snapshotting: impl Fn(u64) -> bool) -> Vec<u64> {
        let mut overdue = Vec::new();
        self.installing.retain(|&member, until| {
            if !snapshotting(member) {
                return false; // installed
            }
            if now_ms < *until {
                return true;
            }
            overdue.push(member);
            false
        });
        overdue.sort_unstable();
        overdue
    }

    /// Streams under way.
    pub fn sending(&self) -> usize {
        self.sending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_stream_per_member_and_only_of_the_applied_state() {
        let mut t = Transfers::default();
        assert_eq!(t.want(2, 10, 10, true), Stream::Start);
        assert_eq!(t.want(2, 10, 10, true), Stream::Already);
        assert_eq!(t.want(3, 9, 10, true), Stream::Refuse);
        assert_eq!(t.want(3, 10, 10, false), Stream::Refuse);
        assert_eq!(t.sending(), 1);
        t.sent(2, None, 0);
        assert_eq!(t.sending(), 0);
        assert!(
            t.overdue(u64::MAX, |_| true).is_empty(),
            "a failure waits for nothing"
        );
    }

    #[test]
    fn an_unacknowledged_snapshot_is_sent_again() {
        let mut t = Transfers::default();
        assert_eq!(t.want(2, 10, 10, true), Stream::Start);
        t.sent(2, Some(50 * INSTALL_BYTES_PER_MS), 1000);
        let deadline = 1000 + INSTALL_TIMEOUT_MS + 50;
        assert!(t.overdue(deadline - 1, |_| true).is_empty());
        assert_eq!(t.overdue(deadline, |_| true), vec![2]);
        assert!(t.overdue(deadline, |_| true).is_empty(), "reported once");
        // Acknowledged in time: nothing to report.
        t.sent(3, Some(0), 0);
        assert!(t.overdue(u64::MAX, |_| false).is_empty());
    }
}
