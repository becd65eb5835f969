//! What a member does when the leader it knows changes, and when it serves clients. A
//! member serves only while it knows a leader, is in the configuration and has replayed its
//! log (ZooKeeper's followers stop serving while they look for a leader). When the leader
//! changes, writes in flight may have been lost with the old one: their connections are
//! closed (ZooKeeper drops its clients on a leader change too; they reconnect and retry). A
//! new leader gives every session a fresh full timeout and learns again where each lives.

/// What changed since the last observation, for the driver to act on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// The leader this member knows changed: (previous, now).
    pub leader: Option<(Option<u64>, Option<u64>)>,
    /// Close the connections with a write in flight: the old leader may have lost it.
    pub drop_writers: bool,
    /// This member now leads: every session's clock restarts.
    pub restart_clocks: bool,
    /// Forget which member each session lives on (a new leader learns it again).
    pub forget_owners: bool,
    /// Serving started (`Some(true)`) or stopped (`Some(false)`: disconnect every client,
    /// drop what waits to be proposed and every sync).
    pub serving: Option<bool>,
}

#[derive(Debug, Default)]
pub struct Leadership {
    known: Option<u64>,
    serving: bool,
}

impl Leadership {
    /// The leader this member knows (itself when it leads).
    pub fn known(&self) -> Option<u64> {
        self.known
    }

    pub fn serving(&self) -> bool {
        self.serving
    }

    /// raft's view now: the leader (if any), whether it is this member, whether this member
    /// is in the configuration, and whether it still replays its log.
    pub fn observe(
        &mut self,
        leader: Option<u64>,
        leading: bool,
        member: bool,
        replaying: bool,
    ) -> Change {
        let mut change = Change::default();
        if leader != self.known {
            let previous = std::mem::replace(&mut self.known, leader);
            change.leader = Some((previous, leader));
            change.drop_writers = previous.is_some();
            change.restart_clocks = leading && !replaying;
            change.forget_owners = true;
        }
        let serving = !replaying && self.known.is_some() && member;
        if serving != self.serving {
            self.serving = serving;
            change.serving = Some(serving);
        }
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_serves_while_it_knows_a_leader_and_belongs() {
        let mut l = Leadership::default();
        let c = l.observe(None, false, true, false);
        assert_eq!(c, Change::default());
        let c = l.observe(Some(2), false, true, false);
        assert_eq!(c.leader, Some((None, Some(2))));
        assert!(!c.drop_writers, "no leader before: nothing was in flight");
        assert_eq!(c.serving, Some(true));
        let c = l.observe(Some(2), false, false, false);
        assert_eq!(c.serving, Some(false), "removed from the configuration");
        let c = l.observe(None, false, true, false);
        assert!(c.drop_writers);
        assert_eq!(c.serving, None, "already not serving");
    }

    #[test]
    fn a_new_leader_restarts_clocks_unless_replaying() {
        let mut l = Leadership::default();
        let c = l.observe(Some(1), true, true, true);
        assert!(!c.restart_clocks && c.forget_owners);
        assert_eq!(c.serving, None, "still replaying");
        let c = l.observe(Some(1), true, true, false);
        assert_eq!(c.serving, Some(true));
        let c = l.observe(Some(3), false, true, false);
        assert!(c.drop_writers && !c.restart_clocks);
        let c = l.observe(Some(1), true, true, false);
        assert!(c.drop_writers && c.restart_clocks);
        assert_eq!(l.known(), Some(1));
        assert!(l.serving());
    }
}
