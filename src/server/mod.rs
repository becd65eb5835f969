//! The glommio shell: shards, connections, the sequencer, and the links between them.
//!
//! ```text
//!  shard k (every core)                         shard 0 (also serves clients)
//!  conn tasks ─ reads: answered from the        sequencer: Batch ─▶ consensus ─▶ WAL
//!    shard's View, watches registered locally     group commit ─▶ committed ─▶ Machine::apply
//!  writes ─ Commands ─────── ToSequencer ──────▶   ─▶ Update { View, Applied } to every shard
//!  ◀─ ToShard::Update: fire watches, then replies ◀─┘
//! ```
//!
//! A shard's View changes only when it handles an Update, in the same step that fires the
//! watches of that Update, so a read never observes a change whose event it has not been sent.

mod conn;
pub mod descriptors;
mod identities;
mod listener;
mod peer;
mod read;
mod sequencer;
mod shard;
mod stats;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use glommio::channels::shared_channel::{self, SharedReceiver, SharedSender};
use glommio::{LocalExecutorBuilder, Placement};

use crate::admin::Metrics;
use crate::config::Config;
use crate::machine::{Machine, MachineConfig, View};
use crate::proto::types::SessionId;
use crate::txn::{Applied, Command};

/// Capacity of each cross-shard channel, in messages (each message is a batch).
const LINK_CAPACITY: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Startup(String),
    #[error("data dir: {0}")]
    Lock(#[from] crate::log::LockError),
    #[error("log: {0}")]
    Log(#[from] crate::log::WalError),
    #[error("{0}")]
    Snapshot(#[from] crate::log::snapshots::SnapshotFileError),
    #[error("the log could not be written, so nothing more can be acknowledged: {0}")]
    LogFailed(String),
    #[error("consensus: {0}")]
    Consensus(#[from] crate::consensus::ConsensusError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

pub use crate::txn::Origin;

/// This process's instance bits for `Origin` (never all ones: `u64::MAX` is the reaper's).
fn new_instance(member: u64) -> u32 {
    let random: u16 = rand::random::<u16>().min(0xfffe);
    (((member & 0xff) as u32) << 16) | random as u32
}

/// A shard's messages to the sequencer.
pub enum ToSequencer {
    Commands(Vec<Command>),
    /// Sessions that showed activity since the last report, with their negotiated timeouts.
    Touch(Vec<(SessionId, i32)>),
    /// A session was resumed on this connection: this member's other connections holding it
    /// close, and the leader hears where it lives now (SessionMoved elsewhere).
    Attach {
        session: SessionId,
        origin: Origin,
    },
    /// A four-letter word wants every shard's connections and watches (and the session
    /// tracker's deadlines): the sequencer forwards this to every shard and answers too.
    Collect(async_channel::Sender<Diag>),
    /// A client's sync (ensemble only): answered once this member has applied everything
    /// committed when the sync reached the leader (raft ReadIndex).
    Sync {
        origin: Origin,
        xid: i32,
    },
}

/// The sequencer's messages to a shard.
pub enum ToShard {
    Update(Arc<Update>),
    Detach {
        session: SessionId,
        keep: Origin,
    },
    Collect(async_channel::Sender<Diag>),
    /// Close every connection with a write in flight (the leader changed: it may be lost).
    DropWriters(&'static str),
    /// The member stopped serving (no leader): close every connection.
    Unserve,
    Stop,
}

/// Diagnostics for four-letter words, gathered from every executor.
pub enum Diag {
    Shard {
        connections: Vec<crate::admin::ConnStats>,
        watches: Vec<crate::admin::SessionWatches>,
        watch_count: u64,
    },
    /// Session expiry buckets of the leader's tracker: (deadline ms, sessions).
    Sessions(Vec<(i64, Vec<SessionId>)>),
}

/// One apply round: the new view and everything applied to reach it.
pub struct Update {
    /// Apply rounds counted from 1; a shard ignores a round it has already overtaken.
    pub round: u64,
    pub view: View,
    pub applied: Vec<Applied>,
    /// syncs answered by this round: (origin, xid).
    pub synced: Vec<(u64, i32)>,
}

/// `Shared::role` values.
pub const ROLE_STANDALONE: u8 = 0;
pub const ROLE_LEADER: u8 = 1;
pub const ROLE_FOLLOWER: u8 = 2;
pub const ROLE_OBSERVER: u8 = 3;
pub const ROLE_LOOKING: u8 = 4;

/// State every shard can read.
pub struct Shared {
    pub config: Config,
    pub metrics: Metrics,
    /// Watched (connection, path) pairs of every shard together, against `max_watches`.
    pub watch_budget: Arc<crate::watch::WatchBudget>,
    /// This process's `Origin` instance bits.
    pub instance: u32,
    pub shutdown: AtomicBool,
    /// Set while the member serves clients: its log is replayed and (in an ensemble) it
    /// knows a leader.
    pub serving: AtomicBool,
    /// One of the `ROLE_` values, and the leader's id (0: none known).
    pub role: std::sync::atomic::AtomicU8,
    pub leader_id: AtomicU64,
    /// mntr's leader figures, while this member leads.
    pub leader_stats: std::sync::Mutex<Option<crate::admin::LeaderStats>>,
    pub last_zxid: AtomicU64,
    /// The newest apply round and its view. A shard with no connection is sent no updates
    /// (waking an idle executor for every commit costs more system time than the commit);
    /// it takes this one when its first connection arrives.
    pub latest: std::sync::Mutex<(u64, View)>,
    /// Open connections per shard (see `latest`).
    pub shard_conns: Box<[std::sync::atomic::AtomicU32]>,
    pub started_at: std::time::SystemTime,
    /// Open connections per client address, for `max_client_cnxns` (touched only when a
    /// connection opens or closes).
    pub per_ip: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, u32>>,
    /// Descriptors that client connections may take; the rest of the process limit is kept
    /// for the log and snapshots (`descriptors` module), and for peers:
    pub descriptors: Arc<descriptors::DescriptorBudget>,
    /// Descriptors that connections peers dial to this member may take (none standalone):
    /// carved out of the process limit apart from the clients', so a flood of clients never
    /// cuts a member off from its ensemble.
    pub peer_descriptors: Arc<descriptors::DescriptorBudget>,
}

impl Shared {
    /// Count a new connection from `ip`; false when that address is at its limit.
    pub fn admit(&self, ip: std::net::IpAddr) -> bool {
        let limit = self.config.max_client_cnxns;
        let Ok(mut map) = self.per_ip.lock() else {
            return true;
        };
        let n = map.entry(ip).or_insert(0);
        if limit > 0 && *n >= limit {
            return false;
        }
        *n += 1;
        true
    }

    pub fn release(&self, ip: std::net::IpAddr) {
        if let Ok(mut map) = self.per_ip.lock() {
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

/// Run a member until SIGTERM/SIGINT. Blocks the calling thread.
pub fn run(mut config: Config) -> Result<(), ServerError> {
    crate::log::probe_io_uring().map_err(ServerError::Startup)?;
    // glommio's file operations need absolute paths (a relative one fails with EBADF).
    config.data_dir = std::path::absolute(&config.data_dir)?;
    if let Some(dir) = &config.data_log_dir {
        config.data_log_dir = Some(std::path::absolute(dir)?);
    }
    let _lock = crate::log::DataDirLock::acquire(&config.data_dir)?;
    check_port_free(config.client_addr)?;
    if let Some(me) = config.member(config.server_id) {
        check_port_free(me.peer_addr)?;
    }
    block_termination_signals();

    let shards = config.shards.max(1);
    let peer_allowance = if config.members.is_empty() {
        0
    } else {
        peer::INBOUND_DESCRIPTORS
    };
    let descriptors = descriptor_budget(shards, peer_allowance);
    let instance = new_instance(config.server_id);
    let shared = Arc::new(Shared {
        watch_budget: crate::watch::WatchBudget::new(config.max_watches),
        config,
        metrics: Metrics::default(),
        instance,
        shutdown: AtomicBool::new(false),
        serving: AtomicBool::new(false),
        role: Default::default(),
        leader_id: AtomicU64::new(0),
        leader_stats: Default::default(),
        last_zxid: AtomicU64::new(0),
        latest: std::sync::Mutex::new((0, Machine::new(MachineConfig::default()).view())),
        shard_conns: (0..shards).map(|_| Default::default()).collect(),
        started_at: std::time::SystemTime::now(),
        per_ip: Default::default(),
        descriptors,
        peer_descriptors: descriptors::DescriptorBudget::new(peer_allowance),
    });
    spawn_signal_watcher(shared.clone());

    // Links: every shard → sequencer, sequencer → every shard (shard 0 uses them too, so that
    // every shard handles updates the same way).
    let mut to_seq_rx: Vec<SharedReceiver<ToSequencer>> = Vec::new();
    let mut to_seq_tx: Vec<Option<SharedSender<ToSequencer>>> = Vec::new();
    let mut to_shard_tx: Vec<SharedSender<ToShard>> = Vec::new();
    let mut to_shard_rx: Vec<Option<SharedReceiver<ToShard>>> = Vec::new();
    for _ in 0..shards {
        let (tx, rx) = shared_channel::new_bounded(LINK_CAPACITY);
        to_seq_tx.push(Some(tx));
        to_seq_rx.push(rx);
        let (tx, rx) = shared_channel::new_bounded(LINK_CAPACITY);
        to_shard_tx.push(tx);
        to_shard_rx.push(Some(rx));
    }

    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut handles = Vec::new();
    let mut seq_links = Some((to_seq_rx, to_shard_tx));
    for id in 0..shards {
        let shared = shared.clone();
        let to_seq = to_seq_tx[id].take().expect("one sender per shard");
        let from_seq = to_shard_rx[id].take().expect("one receiver per shard");
        let seq = if id == 0 { seq_links.take() } else { None };
        // Members of an ensemble sharing a machine (a local ensemble, tests) would otherwise
        // all pin their sequencer to core 0: start each member's shards at its own core.
        let offset = if shared.config.is_ensemble() {
            shared.config.server_id as usize
        } else {
            0
        };
        let handle = LocalExecutorBuilder::new(Placement::Fixed((id + offset) % cpus))
            .name(&format!("rk-shard-{id}"))
            .spawn(move || async move {
                let sequencer = seq
                    .map(|(rx, tx)| glommio::spawn_local(sequencer::run(shared.clone(), rx, tx)));
                let shard_result = shard::run(id as u16, shared.clone(), to_seq, from_seq).await;
                if let Err(e) = &shard_result {
                    tracing::error!(shard = id, "shard stopped: {e}");
                    shared.shutdown.store(true, Ordering::SeqCst);
                }
                if let Some(seq) = sequencer {
                    seq.await?;
                }
                shard_result
            })
            .map_err(|e| ServerError::Startup(format!("cannot start shard {id}: {e}")))?;
        handles.push(handle);
    }
    let mut first_error = None;
    for (id, handle) in handles.into_iter().enumerate() {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(_) => {
                first_error
                    .get_or_insert(ServerError::Startup(format!("shard {id} thread panicked")));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Raise the descriptor limit to the hard limit and make the budget sockets draw from.
fn descriptor_budget(shards: usize, peers: usize) -> Arc<descriptors::DescriptorBudget> {
    let soft = match descriptors::raise_nofile_limit() {
        Ok(lim) => {
            if lim.soft != lim.was {
                tracing::info!(from = lim.was, to = lim.soft, "raised the open-files limit");
            }
            lim.soft
        }
        Err(e) => {
            tracing::warn!("cannot raise the open-files limit: {e}");
            // SAFETY: getrlimit writes into a locally owned struct.
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
            lim.rlim_cur
        }
    };
    let open = descriptors::open_descriptors();
    let capacity = descriptors::budget_capacity(soft, open, shards).saturating_sub(peers);
    tracing::info!(
        limit = soft,
        open,
        reserved = descriptors::RESERVED_DESCRIPTORS,
        peers,
        connections = capacity,
        "descriptor budget"
    );
    if capacity < 16 {
        tracing::warn!(
            limit = soft,
            connections = capacity,
            "the open-files limit leaves almost no descriptors for connections: raise `ulimit -n`"
        );
    }
    descriptors::DescriptorBudget::new(capacity)
}

/// Every shard binds the client port with SO_REUSEPORT (glommio always sets it), so a second
/// server on the same port would silently share it. Refuse to start when something already
/// accepts connections there. (A plain bind is no test: the TIME_WAIT connections a stopped
/// server leaves behind make it fail for a minute, while the reuseport bind works.)
fn check_port_free(addr: std::net::SocketAddr) -> Result<(), ServerError> {
    if addr.port() == 0 {
        return Err(ServerError::Startup(
            "the client port must be fixed (0 would give every shard a different port)".into(),
        ));
    }
    let mut probe = addr;
    if probe.ip().is_unspecified() {
        probe.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    // A process that was just killed can keep its listening socket (and complete handshakes)
    // for a moment while the kernel tears its io_uring down: only a listener that stays is
    // another server.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let timeout = std::time::Duration::from_millis(500);
        if std::net::TcpStream::connect_timeout(&probe, timeout).is_err() {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(ServerError::Startup(format!(
                "cannot listen on {addr}: another server is already accepting connections there"
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// SIGTERM/SIGINT go to the watcher thread only (executor threads inherit the mask).
fn block_termination_signals() {
    // SAFETY: plain libc calls on a locally owned sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

fn spawn_signal_watcher(shared: Arc<Shared>) {
    std::thread::Builder::new()
        .name("rk-signals".into())
        .spawn(move || {
            // SAFETY: sigwait on a locally owned set of signals this process blocked.
            let sig = unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGTERM);
                libc::sigaddset(&mut set, libc::SIGINT);
                let mut sig: libc::c_int = 0;
                libc::sigwait(&set, &mut sig);
                sig
            };
            tracing::info!(signal = sig, "shutting down: finishing in-flight writes");
            shared.shutdown.store(true, Ordering::SeqCst);
        })
        .expect("spawn signal thread");
}

/// Where the log lives.
pub fn log_dir(config: &Config) -> PathBuf {
    config
        .data_log_dir
        .clone()
        .unwrap_or_else(|| config.data_dir.clone())
        .join("log")
}
