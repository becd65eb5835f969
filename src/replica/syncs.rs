//! `sync` requests: each asks raft for a ReadIndex (the leader's commit point, confirmed by a
//! quorum) and is answered once this member has applied up to it. raft drops a request while
//! no leader is known or while a new leader has not committed in its term, so an unanswered
//! one is asked again. Deterministic: time comes in as monotonic milliseconds.

use std::collections::HashMap;

/// An unanswered ReadIndex request is repeated this often, in milliseconds.
pub const RETRY_MS: u64 = 500;

#[derive(Debug)]
struct Waiting {
    origin: u64,
    xid: i32,
    asked_ms: u64,
}

#[derive(Debug)]
pub struct Syncs {
    /// This process's instance: raft-rs keys pending reads by context alone, so contexts from
    /// another member, or from this member before a restart, must never collide with ours.
    instance: u32,
    next: u64,
    /// Waiting for their read index, by context number.
    waiting: HashMap<u64, Waiting>,
    /// With a read index: (index, origin, xid), answered once `index` is applied.
    ready: Vec<(u64, u64, i32)>,
}

impl Syncs {
    pub fn new(instance: u32) -> Syncs {
        Syncs {
            instance,
            next: 1,
            waiting: HashMap::new(),
            ready: Vec::new(),
        }
    }

    /// A sync of connection `origin` (request `xid`): the ReadIndex context to ask raft with.
    pub fn ask(&mut self, origin: u64, xid: i32, now_ms: u64) -> Vec<u8> {
        let n = self.next;
        self.next += 1;
        self.waiting.insert(
            n,
            Waiting {
                origin,
                xid,
                asked_ms: now_ms,
            },
        );
        self.context(n)
    }

    /// The contexts to ask raft with again (unanswered for `RETRY_MS`).
    pub fn retries(&mut self, now_ms: u64) -> Vec<Vec<u8>> {
        let mut again = Vec::new();
        for (&n, w) in self.waiting.iter_mut() {
            if now_ms >= w.asked_ms + RETRY_MS {
                w.asked_ms = now_ms;
                again.push(n);
            }
        }
        again.into_iter().map(|n| self.context(n)).collect()
    }

    /// raft answered context `ctx` with read index `index` (contexts of other processes are
    /// ignored).
    pub fn answered(&mut self, ctx: &[u8], index: u64) {
        let Some(n) = self.number_of(ctx) else { return };
        if let Some(w) = self.waiting.remove(&n) {
            self.ready.push((index, w.origin, w.xid));
        }
    }

    /// Whether a sync can be answered once entry `applied` is applied.
    pub fn any_due(&self, applied: u64) -> bool {
        self.ready.iter().any(|(index, ..)| *index <= applied)
    }

    /// The syncs answered by entry `applied` being applied: (origin, xid) each.
    pub fn take_due(&mut self, applied: u64) -> Vec<(u64, i32)> {
        let mut due = Vec::new();
        self.ready.retain(|&(index, origin, xid)| {
            let ready = index <= applied;
            if ready {
                due.push((origin, xid));
            }
            !ready
        });
        due
    }

    /// The member stops serving: its clients are disconnected, their syncs forgotten.
    pub fn clear(&mut self) {
        self.waiting.clear();
        self.ready.clear();
    }

    fn context(&self, n: u64) -> Vec<u8> {
        let mut ctx = Vec::with_capacity(12);
        ctx.extend_from_slice(&self.instance.to_le_bytes());
        ctx.extend_from_slice(&n.to_le_bytes());
        ctx
    }

    fn number_of(&self, ctx: &[u8]) -> Option<u64> {
        let (instance, n) = ctx.split_first_chunk::<4>()?;
        if *instance != self.instance.to_le_bytes() {
            return None;
        }
        Some(u64::from_le_bytes(n.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_is_answered_once_its_read_index_is_applied() {
        let mut s = Syncs::new(7);
        let ctx = s.ask(100, 3, 0);
        s.answered(&ctx, 12);
        assert!(!s.any_due(11));
        assert!(s.take_due(11).is_empty());
        assert!(s.any_due(12));
        assert_eq!(s.take_due(12), vec![(100, 3)]);
        assert!(s.take_due(12).is_empty(), "answered once");
        s.answered(&ctx, 12);
        assert!(!s.any_due(100), "a repeated answer is ignored");
    }

    #[test]
    fn unanswered_syncs_are_asked_again_and_others_contexts_ignored() {
        let mut s = Syncs::new(7);
        let ctx = s.ask(100, 3, 1000);
        assert!(s.retries(1000 + RETRY_MS - 1).is_empty());
        assert_eq!(s.retries(1000 + RETRY_MS), vec![ctx.clone()]);
        assert!(s.retries(1000 + RETRY_MS).is_empty());
        let mut other = Syncs::new(8);
        let theirs = other.ask(100, 3, 0);
        s.answered(&theirs, 1);
        s.answered(b"short", 1);
        assert!(!s.any_due(u64::MAX));
        s.clear();
        s.answered(&ctx, 1);
        assert!(!s.any_due(u64::MAX), "forgotten");
    }
}
