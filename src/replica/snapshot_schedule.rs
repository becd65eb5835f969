//! When the next snapshot is due. A snapshot costs in proportion to the whole state, the log
//! it saves in proportion to what was written since the last one: with a big tree and small
//! writes, a count of commands alone would rewrite hundreds of MB for every few MB of log.
//! So the log since the last snapshot must also reach 1/`LOG_RATIO` of that snapshot's size
//! (at most that much write amplification; a restart replays at most that much log).
//! Deterministic: time comes in as monotonic milliseconds.

/// The log since the last snapshot must reach 1/this of its size before the next one.
pub const LOG_RATIO: u64 = 4;
/// After a failed snapshot, the next attempt waits this long, in milliseconds.
pub const RETRY_MS: u64 = 10_000;

#[derive(Debug, Default)]
pub struct SnapshotSchedule {
    /// ZooKeeper's snapCount, and its byte equivalent: whichever is reached first.
    every_commands: u64,
    every_bytes: u64,
    /// Commands and log bytes applied since the last snapshot began.
    commands: u64,
    bytes: u64,
    running: bool,
    /// After a failure, no new attempt before this (monotonic ms).
    not_before: Option<u64>,
    /// Size of the last snapshot written.
    last_bytes: u64,
}

impl SnapshotSchedule {
    /// A snapshot after `every_commands` commands or `every_bytes` bytes of log entries;
    /// `last_bytes`: the size of the snapshot the member started from (0: none).
    pub fn new(every_commands: u64, every_bytes: u64, last_bytes: u64) -> SnapshotSchedule {
        SnapshotSchedule {
            every_commands,
            every_bytes,
            last_bytes,
            ..Default::default()
        }
    }

    /// An entry of `bytes` holding `commands` commands was applied.
    pub fn applied(&mut self, commands: u64, bytes: u64) {
        self.commands += commands;
        self.bytes += bytes;
    }

    /// The state was replaced by a snapshot installed from the leader: it counts as one.
    pub fn installed(&mut self) {
        self.commands = 0;
        self.bytes = 0;
    }

    /// Whether to start a snapshot now; if so, it counts as started.
    pub fn start_if_due(&mut self, now_ms: u64) -> bool {
        let due = !self.running
            && (self.commands >= self.every_commands || self.bytes >= self.every_bytes)
            && self.bytes >= self.last_bytes / LOG_RATIO
            && self.not_before.is_none_or(|t| now_ms >= t);
        if due {
            self.running = true;
            self.commands = 0;
            self.bytes = 0;
        }
        due
    }

    /// The snapshot started last was written, `bytes` long.
    pub fn written(&mut self, bytes: u64) {
        self.running = false;
        self.not_before = None;
        self.last_bytes = bytes;
    }

    /// It failed (or could not start): the log still holds everything, so a failed snapshot
    /// costs disk and restart time, not data. The next try waits `RETRY_MS`.
    pub fn failed(&mut self, now_ms: u64) {
        self.running = false;
        self.not_before = Some(now_ms + RETRY_MS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_by_count_or_bytes_but_not_before_a_quarter_of_the_last() {
        let mut s = SnapshotSchedule::new(10, 1000, 0);
        s.applied(9, 10);
        assert!(!s.start_if_due(0));
        s.applied(1, 10);
        assert!(s.start_if_due(0));
        assert!(!s.start_if_due(0), "one at a time");
        s.written(4000);
        // 10 commands again, but the log since is below 4000/4 bytes.
        s.applied(10, 999);
        assert!(!s.start_if_due(0));
        s.applied(0, 1);
        assert!(s.start_if_due(0));
    }

    #[test]
    fn a_failure_waits_before_the_next_try() {
        let mut s = SnapshotSchedule::new(1, 1000, 0);
        s.applied(1, 1);
        assert!(s.start_if_due(5));
        s.failed(5);
        s.applied(1, 1);
        assert!(!s.start_if_due(5 + RETRY_MS - 1));
        assert!(s.start_if_due(5 + RETRY_MS));
    }

    #[test]
    fn an_installed_snapshot_restarts_the_count() {
        let mut s = SnapshotSchedule::new(10, 1000, 0);
        s.applied(9, 10);
        s.installed();
        s.applied(9, 10);
        assert!(!s.start_if_due(0));
    }
}
