//! File descriptors: the process limit, and a budget that keeps connections from taking the
//! descriptors the log, snapshots and peers need.
//!
//! A member that runs out of descriptors cannot open its next log segment or snapshot file,
//! and a log that cannot be written stops the member. So descriptors for sockets that anyone
//! on the network can open come from a [`DescriptorBudget`]: client connections from
//! `Shared::descriptors`, inbound peer links from `Shared::peer_descriptors` (a fixed
//! allowance carved out of the clients', `server::peer::INBOUND_DESCRIPTORS`). The clients'
//! budget is the process limit less [`RESERVED_DESCRIPTORS`] (plus
//! [`DESCRIPTORS_PER_SHARD`] for each executor's rings and listener, and what was open when
//! the budget was made). Files of the member's own (segments, snapshots, the lock) are not
//! counted: they live in the reserve.
//!
//! # Using the budget
//!
//! ```text
//! let budget: Arc<DescriptorBudget> = shared.descriptors.clone();   // one per kind of socket
//! // before accept() (or connect()) — not after: the accepted socket already is a descriptor
//! let Some(permit) = budget.try_acquire() else {
//!     // spent: stop accepting (or dialing) for a while; AcceptBackoff paces the retries
//! };
//! let stream = listener.accept().await?;
//! // hold `permit` for as long as the socket lives (move it into the connection's task);
//! // dropping it gives the descriptor back to the budget
//! ```
//!
//! [`DescriptorBudget::try_acquire`] never blocks and is lock-free (one atomic), so any
//! executor may call it. [`AcceptBackoff`] is the sans-IO pacing for a loop that finds the
//! budget spent or gets `EMFILE`/`ENFILE` ([`is_exhaustion`]) from `accept`: a short delay
//! that doubles up to a bound, and "log now" once per episode.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Descriptors kept back from the budget for the member's own files and links that are not
/// drawn from it: log segments (the active one and the next, preallocated), snapshot files
/// being written, loaded or streamed, the data dir lock, directories opened to fsync them.
pub const RESERVED_DESCRIPTORS: usize = 64;
/// Descriptors each executor keeps outside the budget: its io_uring rings, eventfds and the
/// client listener (a shard opens about 6).
pub const DESCRIPTORS_PER_SHARD: usize = 8;
/// First pause of a listener that cannot take another connection.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause between two tries of such a listener.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    #[error("getrlimit(RLIMIT_NOFILE) failed: {0}")]
    GetLimit(std::io::Error),
    #[error("setrlimit(RLIMIT_NOFILE) to {soft} failed: {source}")]
    SetLimit { soft: u64, source: std::io::Error },
}

/// The descriptor limits of this process after [`raise_nofile_limit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit before.
    pub was: u64,
    /// The soft limit now (the hard limit, unless raising it failed).
    pub soft: u64,
    pub hard: u64,
}

/// Raise the soft RLIMIT_NOFILE of this process to its hard limit (threads started later
/// inherit it). Call before any executor starts.
pub fn raise_nofile_limit() -> Result<NofileLimit, DescriptorError> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a locally owned struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(DescriptorError::GetLimit(std::io::Error::last_os_error()));
    }
    let was = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads a locally owned struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(DescriptorError::SetLimit {
                soft: lim.rlim_max,
                source: std::io::Error::last_os_error(),
            });
        }
        lim.rlim_cur = lim.rlim_max;
    }
    Ok(NofileLimit {
        was,
        soft: lim.rlim_cur,
        hard: lim.rlim_max,
    })
}

/// Descriptors open in this process now (0 where /proc is not there).
pub fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// What the budget may hand out under a soft limit of `soft` descriptors with `open` already
/// open and `shards` executors still to start (0 when nothing is left).
pub fn budget_capacity(soft: u64, open: usize, shards: usize) -> usize {
    let soft = usize::try_from(soft).unwrap_or(usize::MAX);
    soft.saturating_sub(open)
        .saturating_sub(RESERVED_DESCRIPTORS)
        .saturating_sub(shards.saturating_mul(DESCRIPTORS_PER_SHARD))
}

/// A count of descriptors that sockets may take; see the module documentation.
#[derive(Debug)]
pub struct DescriptorBudget {
    capacity: usize,
    used: AtomicUsize,
}

impl DescriptorBudget {
    pub fn new(capacity: usize) -> Arc<DescriptorBudget> {
        Arc::new(DescriptorBudget {
            capacity,
            used: AtomicUsize::new(0),
        })
    }

    /// One descriptor, if the budget has one left. The permit gives it back when dropped.
    pub fn try_acquire(self: &Arc<Self>) -> Option<DescriptorPermit> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < self.capacity).then_some(used + 1)
            })
            .ok()
            .map(|_| DescriptorPermit {
                budget: self.clone(),
            })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Permits held now.
    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// One descriptor of a [`DescriptorBudget`], held for as long as its socket is open.
#[derive(Debug)]
pub struct DescriptorPermit {
    budget: Arc<DescriptorBudget>,
}

impl Drop for DescriptorPermit {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether an error means the process (EMFILE) or the system (ENFILE) has no descriptor left.
pub fn is_exhaustion(os_error: Option<i32>) -> bool {
    matches!(os_error, Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// Pacing of a listener that cannot take connections (sans-IO): each [`pause`] gives the
/// delay before the next try (doubling from [`ACCEPT_BACKOFF_MIN`] to [`ACCEPT_BACKOFF_MAX`])
/// and whether it starts an episode (log and count then, not on every try); [`resumed`]
/// ends the episode.
///
/// [`pause`]: AcceptBackoff::pause
/// [`resumed`]: AcceptBackoff::resumed
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    delay: Option<Duration>,
    /// Tries that found no descriptor during the current episode.
    pub tries: u64,
}

impl AcceptBackoff {
    /// The listener could not take a connection: wait this long; `true` for the first
    /// pause of an episode.
    pub fn pause(&mut self) -> (Duration, bool) {
        self.tries += 1;
        let (delay, first) = match self.delay {
            None => (ACCEPT_BACKOFF_MIN, true),
            Some(d) => ((d * 2).min(ACCEPT_BACKOFF_MAX), false),
        };
        self.delay = Some(delay);
        (delay, first)
    }

    /// A connection was taken: `Some(tries)` when this ends an episode.
    pub fn resumed(&mut self) -> Option<u64> {
        self.delay.take()?;
        Some(std::mem::take(&mut self.tries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_bounded_and_given_back() {
        let budget = DescriptorBudget::new(2);
        let a = budget.try_acquire().expect("first");
        let b = budget.try_acquire().expect("second");
        assert!(budget.try_acquire().is_none());
        assert_eq!(budget.in_use(), 2);
        drop(a);
        let c = budget.try_acquire().expect("freed one");
        assert!(budget.try_acquire().is_none());
        drop((b, c));
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn capacity_leaves_the_reserve() {
        let shards = 2;
        let fixed = RESERVED_DESCRIPTORS + shards * DESCRIPTORS_PER_SHARD;
        assert_eq!(budget_capacity(1024, 10, shards), 1024 - 10 - fixed);
        assert_eq!(budget_capacity(fixed as u64, 0, shards), 0);
        assert_eq!(budget_capacity(10, 20, shards), 0);
        assert_eq!(budget_capacity(u64::MAX, 5, shards), usize::MAX - 5 - fixed);
    }

    #[test]
    fn backoff_doubles_to_its_bound_and_logs_once_per_episode() {
        let mut b = AcceptBackoff::default();
        assert_eq!(b.resumed(), None, "no episode yet");
        assert_eq!(b.pause(), (ACCEPT_BACKOFF_MIN, true));
        assert_eq!(b.pause(), (ACCEPT_BACKOFF_MIN * 2, false));
        for _ in 0..20 {
            let (d, first) = b.pause();
            assert!(!first && d <= ACCEPT_BACKOFF_MAX);
        }
        assert_eq!(b.pause().0, ACCEPT_BACKOFF_MAX);
        assert_eq!(b.resumed(), Some(23));
        assert_eq!(b.pause(), (ACCEPT_BACKOFF_MIN, true), "a new episode");
    }

    #[test]
    fn exhaustion_errors() {
        assert!(is_exhaustion(Some(libc::EMFILE)));
        assert!(is_exhaustion(Some(libc::ENFILE)));
        assert!(!is_exhaustion(Some(libc::ECONNABORTED)));
        assert!(!is_exhaustion(None));
    }
}
