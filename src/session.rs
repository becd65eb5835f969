//! Sessions: the replicated session table (part of the state machine) and the leader-side
//! expiry tracker.
//!
//! The table is replicated state: which sessions exist, their timeout and password, the
//! ephemerals each owns, and the idempotency record of each session's last write. The tracker
//! is *not* replicated: the leader feeds it the activity it sees and turns what it reports
//! into `ExpireSessions` commands. Both are pure (no clock: time is passed in).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use imbl::OrdSet;

use crate::proto::types::{Id, SessionId, Zxid};
use crate::txn::OpResult;

/// The idempotency record: a session's last write and what it returned.
#[derive(Clone, Debug, PartialEq)]
pub struct LastWrite {
    pub xid: i32,
    /// A stable hash of the command's op (see `machine::op_hash`).
    pub op_hash: u64,
    pub zxid: Zxid,
    pub result: OpResult,
}

/// The connection a session's writes come from, and the identities it holds (its address
/// and what `addauth` added), as the first write of that connection recorded them. A
/// connection's later writes carry no identities: they refer to these (see
/// `txn::Command::auth`). ZooKeeper's identities belong to a connection, not a session, so
/// a session resumed elsewhere records the new connection's.
#[derive(Clone, Debug, PartialEq)]
pub struct Identified {
    pub origin: u64,
    pub ids: Arc<[Id]>,
}

/// One live session.
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    pub timeout_ms: i32,
    pub passwd: Arc<[u8]>,
    /// Paths of the ephemerals it owns, sorted.
    pub(crate) ephemerals: OrdSet<Arc<str>>,
    pub(crate) last: Option<Arc<LastWrite>>,
    pub(crate) identified: Option<Arc<Identified>>,
}

impl Session {
    pub fn new(timeout_ms: i32, passwd: &[u8]) -> Session {
        Session {
            timeout_ms,
            passwd: Arc::from(passwd),
            ephemerals: OrdSet::new(),
            last: None,
            identified: None,
        }
    }
    pub fn ephemerals(&self) -> impl Iterator<Item = &Arc<str>> + '_ {
        self.ephemerals.iter()
    }
    pub fn ephemeral_count(&self) -> usize {
        self.ephemerals.len()
    }
    pub fn last_write(&self) -> Option<&LastWrite> {
        self.last.as_deref()
    }
    pub fn identified(&self) -> Option<&Identified> {
        self.identified.as_deref()
    }
    /// The identities of the connection `origin`, if it is the one the session's writes
    /// last recorded.
    pub fn identities_of(&self, origin: u64) -> Option<&Arc<[Id]>> {
        self.identified
            .as_deref()
            .filter(|i| i.origin == origin)
            .map(|i| &i.ids)
    }
    /// getEphemerals: owned paths starting with `prefix` (plain string prefix); a blank
    /// prefix or `/` (after trimming, as ZooKeeper does) means all of them. Sorted.
    pub fn ephemerals_with_prefix(&self, prefix: &str) -> Vec<Arc<str>> {
        let trimmed = prefix.trim_matches(|c: char| c <= ' ');
        if trimmed.is_empty() || trimmed == "/" {
            return self.ephemerals.iter().cloned().collect();
        }
        use std::ops::Bound;
        self.ephemerals
            .range::<_, str>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|p| p.starts_with(prefix))
            .cloned()
            .collect()
    }
}

/// The replicated session table, plus the deterministic session-id allocator.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionTable {
    sessions: imbl::HashMap<SessionId, Session>,
    /// `0x01 << 56 | low 40 bits of the first session's batch time << 16`, once set.
    id_base: Option<i64>,
    /// Sessions created so far: the low bits of the next id.
    created: u64,
}

impl Default for SessionTable {
    fn default() -> Self {
        SessionTable::new()
    }
}

/// ZooKeeper's container marker as an ephemeral owner: never a session id.
const CONTAINER_MARKER: i64 = i64::MIN;

impl SessionTable {
    pub fn new() -> SessionTable {
        SessionTable {
            sessions: imbl::HashMap::new(),
            id_base: None,
            created: 0,
        }
    }

    pub fn get(&self, id: SessionId) -> Option<&Session> {
        self.sessions.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: SessionId) -> Option<&mut Session> {
        self.sessions.get_mut(&id)
    }

    pub fn contains(&self, id: SessionId) -> bool {
        self.sessions.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// All sessions, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (SessionId, &Session)> + '_ {
        self.sessions.iter().map(|(id, s)| (*id, s))
    }

    /// The allocator state `(id_base, sessions created)`, for snapshots.
    pub fn allocator(&self) -> (Option<i64>, u64) {
        (self.id_base, self.created)
    }

    /// A table restored from a snapshot.
    pub(crate) fn restore(
        sessions: imbl::HashMap<SessionId, Session>,
        id_base: Option<i64>,
        created: u64,
    ) -> SessionTable {
        SessionTable {
            sessions,
            id_base,
            created,
        }
    }

    /// The next session id, as ZooKeeper's `initializeNextSession` lays it out for server id 1:
    /// top byte 0x01, the low 40 bits of the first session's time, then a counter (which, as in
    /// ZooKeeper, carries into the time bits). Skips 0, the container marker and live ids.
    pub(crate) fn allocate_id(&mut self, time_ms: i64) -> SessionId {
        let base = *self
            .id_base
            .get_or_insert((1i64 << 56) | ((((time_ms as u64) << 24) >> 8) as i64));
        loop {
            let id = base.wrapping_add(self.created as i64);
            self.created = self.created.wrapping_add(1);
            if id != 0 && id != CONTAINER_MARKER && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }

    pub(crate) fn insert(&mut self, id: SessionId, session: Session) {
        self.sessions.insert(id, session);
    }

    pub(crate) fn remove(&mut self, id: SessionId) -> Option<Session> {
        self.sessions.remove(&id)
    }
}

/// The leader's session deadline tracker (ZooKeeper's ExpiryQueue): deadlines are rounded up
/// to the next multiple of the tick, so sessions expire in batches, one per tick.
#[derive(Debug, Clone)]
pub struct ExpiryTracker {
    tick_ms: i64,
    deadlines: HashMap<SessionId, Tracked>,
    buckets: BTreeMap<i64, BTreeSet<SessionId>>,
    /// Reported by `expired` and not yet removed: touches no longer revive them.
    closing: BTreeMap<SessionId, i32>,
}

#[derive(Debug, Clone, Copy)]
struct Tracked {
    deadline: i64,
    timeout_ms: i32,
}

impl ExpiryTracker {
    /// `tick_ms` is the bucket width (tickTime); values below 1 are taken as 1.
    pub fn new(tick_ms: i64) -> ExpiryTracker {
        ExpiryTracker {
            tick_ms: tick_ms.max(1),
            deadlines: HashMap::new(),
            buckets: BTreeMap::new(),
            closing: BTreeMap::new(),
        }
    }

    /// ZooKeeper's `roundToNextInterval`: the next tick boundary strictly after `t`.
    pub fn round_up(&self, t: i64) -> i64 {
        (t.div_euclid(self.tick_ms).saturating_add(1)).saturating_mul(self.tick_ms)
    }

    /// Records activity: the session's deadline becomes `now + timeout`, rounded up. Returns
    /// false (and changes nothing) if the session is already being expired.
    pub fn touch(&mut self, session: SessionId, timeout_ms: i32, now_ms: i64) -> bool {
        if self.closing.contains_key(&session) {
            return false;
        }
        let deadline = self.round_up(now_ms.saturating_add(i64::from(timeout_ms.max(0))));
        if let Some(old) = self.deadlines.insert(
            session,
            Tracked {
                deadline,
                timeout_ms,
            },
        ) {
            if old.deadline == deadline {
                return true;
            }
            self.unbucket(session, old.deadline);
        }
        self.buckets.entry(deadline).or_default().insert(session);
        true
    }

    fn unbucket(&mut self, session: SessionId, deadline: i64) {
        if let Some(bucket) = self.buckets.get_mut(&deadline) {
            bucket.remove(&session);
            if bucket.is_empty() {
                self.buckets.remove(&deadline);
            }
        }
    }

    /// Forgets a session (closed or expired by a committed command).
    pub fn remove(&mut self, session: SessionId) {
        self.closing.remove(&session);
        if let Some(old) = self.deadlines.remove(&session) {
            self.unbucket(session, old.deadline);
        }
    }

    /// Sessions whose deadline is at or before `now_ms`, sorted. They move to "closing": they
    /// are not reported again and `touch` no longer extends them, until `remove` or
    /// `reset_all`.
    pub fn expired(&mut self, now_ms: i64) -> Vec<SessionId> {
        let later = match now_ms.checked_add(1) {
            Some(n) => self.buckets.split_off(&n),
            None => BTreeMap::new(),
        };
        let due = std::mem::replace(&mut self.buckets, later);
        let mut out: Vec<SessionId> = due.into_values().flatten().collect();
        out.sort_unstable();
        for s in &out {
            if let Some(t) = self.deadlines.remove(s) {
                self.closing.insert(*s, t.timeout_ms);
            }
        }
        out
    }

    /// A new leader: every tracked session (closing ones included, since their expiry was
    /// never committed) gets a fresh full timeout from `now_ms`.
    pub fn reset_all(&mut self, now_ms: i64) {
        let mut all: Vec<(SessionId, i32)> = self
            .deadlines
            .iter()
            .map(|(s, t)| (*s, t.timeout_ms))
            .collect();
        all.extend(std::mem::take(&mut self.closing));
        self.deadlines.clear();
        self.buckets.clear();
        for (s, timeout) in all {
            self.touch(s, timeout, now_ms);
        }
    }

    /// The earliest deadline, for the caller's timer.
    pub fn next_deadline(&self) -> Option<i64> {
        self.buckets.keys().next().copied()
    }

    pub fn deadline(&self, session: SessionId) -> Option<i64> {
        self.deadlines.get(&session).map(|t| t.deadline)
    }

    pub fn is_closing(&self, session: SessionId) -> bool {
        self.closing.contains_key(&session)
    }

    /// Tracked sessions, closing ones included.
    pub fn len(&self) -> usize {
        self.deadlines.len() + self.closing.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_follow_zookeeper_layout() {
        let mut t = SessionTable::new();
        // The live capture's first session: 0x01000016c5f10000.
        let time = 0x16c5f1i64; // ZooKeeper uses elapsed ms; ringkeeper the batch time
        let a = t.allocate_id(time);
        assert_eq!(a, 0x0100_0016_c5f1_0000u64 as i64);
        t.insert(a, Session::new(30000, b"pw"));
        // Later sessions use the first base, whatever their own time.
        assert_eq!(t.allocate_id(999_999), a + 1);
        assert_eq!(t.allocator(), (Some(a), 2));
    }

    #[test]
    fn allocation_skips_live_ids() {
        let mut t = SessionTable::new();
        let a = t.allocate_id(0);
        assert_eq!(a, 1 << 56);
        t.insert(a + 1, Session::new(1, b""));
        assert_eq!(t.allocate_id(0), a + 2);
    }

    #[test]
    fn ephemerals_by_prefix() {
        let mut s = Session::new(1, b"");
        for p in ["/rk/eph", "/rk/eseq-0000000002", "/other"] {
            s.ephemerals.insert(Arc::from(p));
        }
        let strs = |v: Vec<Arc<str>>| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        assert_eq!(
            strs(s.ephemerals_with_prefix("/")),
            ["/other", "/rk/eph", "/rk/eseq-0000000002"]
        );
        assert_eq!(strs(s.ephemerals_with_prefix(" / ")).len(), 3);
        assert_eq!(strs(s.ephemerals_with_prefix("")).len(), 3);
        assert_eq!(
            strs(s.ephemerals_with_prefix("/rk/es")),
            ["/rk/eseq-0000000002"]
        );
        assert_eq!(
            strs(s.ephemerals_with_prefix("/rk/")),
            ["/rk/eph", "/rk/eseq-0000000002"]
        );
        assert!(s.ephemerals_with_prefix("/zz").is_empty());
    }

    #[test]
    fn deadlines_round_up_to_the_next_tick() {
        let mut t = ExpiryTracker::new(2000);
        assert_eq!(t.round_up(0), 2000);
        assert_eq!(t.round_up(1999), 2000);
        assert_eq!(
            t.round_up(2000),
            4000,
            "a boundary goes to the next one, as in ZooKeeper"
        );
        assert!(t.touch(7, 4000, 1000)); // 5000 → 6000
        assert_eq!(t.deadline(7), Some(6000));
        assert_eq!(t.next_deadline(), Some(6000));
        assert!(t.expired(5999).is_empty());
        assert_eq!(t.expired(6000), vec![7]);
        assert!(t.expired(100_000).is_empty(), "reported once");
    }

    #[test]
    fn touch_extends_and_closing_blocks() {
        let mut t = ExpiryTracker::new(100);
        t.touch(1, 1000, 0); // 1100
        t.touch(2, 1000, 0);
        t.touch(1, 1000, 500); // 1600
        assert_eq!(t.expired(1100), vec![2]);
        assert!(t.is_closing(2));
        assert!(
            !t.touch(2, 1000, 1100),
            "an expiring session is not revived"
        );
        assert_eq!(t.expired(1600), vec![1]);
        t.remove(2);
        assert!(!t.is_closing(2));
        assert_eq!(t.len(), 1);
        // A new leader gives everyone (closing too) a full timeout.
        t.touch(3, 300, 1600); // 2000
        t.reset_all(5000);
        assert_eq!(t.deadline(1), Some(6100));
        assert_eq!(t.deadline(3), Some(5400));
        assert!(!t.is_closing(1));
        t.remove(1);
        t.remove(3);
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None);
    }
}
