//! Four-letter words and metrics (protocol reference, section 17).
//!
//! Formatting here is pure: the server fills a [`ServerStats`] snapshot and [`four_letter`]
//! renders exactly ZooKeeper 3.8's text for it. [`Metrics`] holds the server's own counters,
//! gauges and histograms; every update is a relaxed atomic, so any shard may update them
//! without locks. Two small helpers ([`process_env`], [`fd_counts`]) read process facts for
//! `envi` and `mntr`; they are the only I/O in this module.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// What ZooKeeper prints when a command needs a running server and there is none yet.
pub const NOT_SERVING: &str = "This ZooKeeper instance is not currently serving requests";

/// ZooKeeper's default trace mask, as `gtmk` prints it.
pub const DEFAULT_TRACE_MASK: i64 = 306;

/// The telnet "interrupt process" sequence: ZooKeeper closes the connection on it.
pub const TELNET_CLOSE: [u8; 4] = [0xff, 0xf4, 0xff, 0xfd];

/// The version reported by srvr/stat/mntr/envi. Tools parse the part before the first `-`
/// (`Zookeeper version: 3.8.0-...`), so it claims the ZooKeeper version whose protocol this
/// speaks. The build date comes from `RINGKEEPER_BUILD_DATE` at compile time when set.
pub fn version_string() -> String {
    format!(
        "3.8.0-ringkeeper-{}, built on {}",
        env!("CARGO_PKG_VERSION"),
        option_env!("RINGKEEPER_BUILD_DATE").unwrap_or("unknown")
    )
}

macro_rules! four_letter_words {
    ($($(#[$meta:meta])* $variant:ident = $name:literal,)*) => {
        /// The four-letter words ZooKeeper 3.8.0 knows.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum FourLetter {
            $($(#[$meta])* $variant,)*
        }

        impl FourLetter {
            pub const ALL: &'static [FourLetter] = &[$(FourLetter::$variant,)*];

            pub fn name(self) -> &'static str {
                match self {
                    $(FourLetter::$variant => $name,)*
                }
            }

            pub fn from_name(name: &str) -> Option<FourLetter> {
                match name {
                    $($name => Some(FourLetter::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

four_letter_words! {
    Conf = "conf",
    Cons = "cons",
    Crst = "crst",
    Dirs = "dirs",
    Dump = "dump",
    Envi = "envi",
    Gtmk = "gtmk",
    Ruok = "ruok",
    /// Followed by an 8-byte big-endian mask that the server reads and stores in
    /// `ServerStats::trace_mask` before formatting.
    Stmk = "stmk",
    Srst = "srst",
    Srvr = "srvr",
    Stat = "stat",
    Wchc = "wchc",
    Wchp = "wchp",
    Wchs = "wchs",
    Mntr = "mntr",
    Isro = "isro",
    Hash = "hash",
}

impl FourLetter {
    /// The first four bytes of a connection, if they are a known word (case-sensitive, as in
    /// ZooKeeper; anything else is a frame length).
    pub fn from_bytes(first: &[u8; 4]) -> Option<FourLetter> {
        std::str::from_utf8(first)
            .ok()
            .and_then(FourLetter::from_name)
    }

    /// Whether the server must fill `ServerStats::connections` for this word.
    pub fn needs_connections(self) -> bool {
        matches!(self, FourLetter::Stat | FourLetter::Cons)
    }

    /// Whether the server must fill `ServerStats::watches`.
    pub fn needs_watches(self) -> bool {
        matches!(self, FourLetter::Wchs | FourLetter::Wchc | FourLetter::Wchp)
    }

    /// Whether the server must fill `ServerStats::dump`.
    pub fn needs_dump(self) -> bool {
        matches!(self, FourLetter::Dump)
    }

    /// Commands that print [`NOT_SERVING`] instead of their output before the server serves.
    fn needs_serving(self) -> bool {
        !matches!(
            self,
            FourLetter::Ruok
                | FourLetter::Isro
                | FourLetter::Envi
                | FourLetter::Gtmk
                | FourLetter::Stmk
        )
    }
}

/// One connection as stat/cons print it.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnStats {
    pub remote: SocketAddr,
    /// Selector interest ops: 1 (read) for an ordinary connection, 0 for the 4lw one.
    pub interest_ops: u32,
    /// Requests received and not yet answered.
    pub queued: u64,
    pub received: u64,
    pub sent: u64,
    /// Present once the connection has a session (cons prints more then).
    pub session: Option<ConnSessionStats>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ConnSessionStats {
    pub session_id: i64,
    /// Short name of the last operation ([`op_name`]).
    pub last_op: &'static str,
    /// Wall-clock ms when the connection was established.
    pub established_ms: i64,
    pub timeout_ms: i32,
    /// -1 until the first request (then not printed, as in ZooKeeper).
    pub last_cxid: i64,
    pub last_zxid: i64,
    /// ZooKeeper prints a monotonic-clock ms value here.
    pub last_response_ms: i64,
    pub last_latency_ms: i64,
    pub min_latency_ms: i64,
    pub avg_latency_ms: i64,
    pub max_latency_ms: i64,
}

/// Data-side watches (data, exist, persistent) of one connection, for wchs/wchc/wchp.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionWatches {
    pub session_id: i64,
    pub paths: Vec<Arc<str>>,
}

/// srvr's "Latency min/avg/max" (ms), plus percentiles for mntr.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatencyStats {
    pub min_ms: u64,
    /// Rounded to 4 decimals, as ZooKeeper does.
    pub avg_ms: f64,
    pub max_ms: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl LatencyStats {
    /// From a histogram of microseconds.
    pub fn from_us(h: &HistogramSnapshot) -> LatencyStats {
        if h.count == 0 {
            return LatencyStats::default();
        }
        LatencyStats {
            min_ms: h.min / 1000,
            avg_ms: round4(h.sum as f64 / h.count as f64 / 1000.0),
            max_ms: h.max / 1000,
            p50_ms: round4(h.p50 as f64 / 1000.0),
            p99_ms: round4(h.p99 as f64 / 1000.0),
        }
    }
}

/// What `conf` prints (ZooKeeperServer.dumpConf).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfStats {
    pub client_port: u16,
    pub data_dir: String,
    pub data_log_dir: String,
    pub tick_time_ms: i32,
    pub max_client_cnxns: u32,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub server_id: u64,
    /// An ensemble's members in ZooKeeper's dynamic configuration format (`server.N=` lines,
    /// `version=`), as `conf` lists them after `membership:`.
    pub membership: Option<String>,
}

/// Leader-only lines of stat/srvr and mntr.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LeaderStats {
    pub learners: u64,
    pub synced_followers: u64,
    pub synced_observers: u64,
    pub pending_syncs: u64,
    /// Proposal sizes last/min/max in bytes (-1 when none yet).
    pub last_proposal_size: i64,
    pub min_proposal_size: i64,
    pub max_proposal_size: i64,
}

/// What `dump` prints.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DumpStats {
    /// Session expiry buckets in ascending time: (wall-clock ms, session ids).
    pub session_buckets: Vec<(i64, Vec<i64>)>,
    /// Sessions owning ephemeral nodes, with their paths.
    pub ephemerals: Vec<(i64, Vec<String>)>,
    /// Connection expiry buckets: (wall-clock ms, [(remote, session id or 0)]).
    pub connection_buckets: Vec<(i64, Vec<(SocketAddr, i64)>)>,
}

/// The snapshot a four-letter word is rendered from. The server fills it; fields that only
/// some words print (see [`FourLetter::needs_connections`] etc.) may be left empty otherwise.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerStats {
    pub version: String,
    /// False until the log is replayed: most words then print [`NOT_SERVING`].
    pub serving: bool,
    /// "standalone", "leader", "follower".
    pub mode: &'static str,
    pub read_only: bool,
    pub zxid: i64,
    /// ZooKeeper counts the root twice: an empty server reports 5 (section 17).
    pub node_count: u64,
    /// mntr's zk_watch_count (child watches included).
    pub watch_count: u64,
    pub watches: Vec<SessionWatches>,
    pub num_alive_connections: u64,
    pub connections: Vec<ConnStats>,
    pub packets_received: u64,
    pub packets_sent: u64,
    pub outstanding: u64,
    pub latency: LatencyStats,
    pub ephemerals_count: u64,
    pub approximate_data_size: u64,
    pub global_sessions: u64,
    pub auth_failed_count: u64,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub uptime_ms: u64,
    pub conf: ConfStats,
    /// envi's pairs after `zookeeper.version` (see [`process_env`]).
    pub env: Vec<(String, String)>,
    pub data_dir_size: u64,
    pub log_dir_size: u64,
    pub trace_mask: i64,
    pub leader: Option<LeaderStats>,
    pub dump: DumpStats,
    /// ringkeeper's own metrics for mntr ([`Metrics::report`]); keys start with `rk_`.
    pub extra: Vec<(String, String)>,
}

impl Default for ServerStats {
    fn default() -> Self {
        ServerStats {
            version: version_string(),
            serving: true,
            mode: "standalone",
            read_only: false,
            zxid: 0,
            node_count: 0,
            watch_count: 0,
            watches: Vec::new(),
            num_alive_connections: 0,
            connections: Vec::new(),
            packets_received: 0,
            packets_sent: 0,
            outstanding: 0,
            latency: LatencyStats::default(),
            ephemerals_count: 0,
            approximate_data_size: 0,
            global_sessions: 0,
            auth_failed_count: 0,
            open_fds: None,
            max_fds: None,
            uptime_ms: 0,
            conf: ConfStats::default(),
            env: Vec::new(),
            data_dir_size: 0,
            log_dir_size: 0,
            trace_mask: DEFAULT_TRACE_MASK,
            leader: None,
            dump: DumpStats::default(),
            extra: Vec::new(),
        }
    }
}

/// The reply to four-letter word `cmd`: its output when whitelisted, the whitelist refusal
/// when known but not allowed, and an empty string for an unknown word (the server should not
/// have called: unknown words are frame lengths).
pub fn four_letter(cmd: &str, stats: &ServerStats, whitelist: &[String]) -> String {
    let Some(word) = FourLetter::from_name(cmd) else {
        return String::new();
    };
    if !whitelist.iter().any(|w| w == cmd) {
        return format!("{cmd} is not executed because it is not in the whitelist.\n");
    }
    render(word, stats)
}

/// A whitelisted word's output.
pub fn render(word: FourLetter, stats: &ServerStats) -> String {
    let mut out = String::new();
    if word.needs_serving() && !stats.serving {
        out.push_str(NOT_SERVING);
        out.push('\n');
        return out;
    }
    match word {
        FourLetter::Ruok => out.push_str("imok"),
        FourLetter::Isro => out.push_str(match (stats.serving, stats.read_only) {
            (false, _) => "null",
            (true, true) => "ro",
            (true, false) => "rw",
        }),
        FourLetter::Srvr => srvr(&mut out, stats, false),
        FourLetter::Stat => srvr(&mut out, stats, true),
        FourLetter::Cons => {
            for c in &stats.connections {
                conn_line(&mut out, c, false);
            }
            out.push('\n');
        }
        FourLetter::Conf => conf(&mut out, stats),
        FourLetter::Mntr => mntr(&mut out, stats),
        FourLetter::Envi => {
            out.push_str("Environment:\n");
            let _ = writeln!(out, "zookeeper.version={}", stats.version);
            for (k, v) in &stats.env {
                let _ = writeln!(out, "{k}={v}");
            }
        }
        FourLetter::Wchs => {
            let (connections, paths, total) = watch_summary(&stats.watches);
            let _ = writeln!(out, "{connections} connections watching {paths} paths");
            let _ = writeln!(out, "Total watches:{total}");
        }
        FourLetter::Wchc => {
            for w in stats.watches.iter().filter(|w| !w.paths.is_empty()) {
                let _ = writeln!(out, "0x{:x}", w.session_id);
                for p in &w.paths {
                    let _ = writeln!(out, "\t{p}");
                }
            }
            out.push('\n');
        }
        FourLetter::Wchp => {
            for (path, sessions) in watches_by_path(&stats.watches) {
                let _ = writeln!(out, "{path}");
                for sid in sessions {
                    let _ = writeln!(out, "\t0x{sid:x}");
                }
            }
            out.push('\n');
        }
        FourLetter::Dirs => {
            let _ = writeln!(out, "datadir_size: {}", stats.data_dir_size);
            let _ = writeln!(out, "logdir_size: {}", stats.log_dir_size);
        }
        FourLetter::Gtmk | FourLetter::Stmk => {
            let _ = write!(out, "{}", stats.trace_mask);
        }
        FourLetter::Crst => out.push_str("Connection stats reset.\n"),
        FourLetter::Srst => out.push_str("Server stats reset.\n"),
        // No digest log is kept: nothing to list.
        FourLetter::Hash => {}
        FourLetter::Dump => dump(&mut out, &stats.dump),
    }
    out
}

fn srvr(out: &mut String, s: &ServerStats, with_clients: bool) {
    let _ = writeln!(out, "Zookeeper version: {}", s.version);
    if s.read_only {
        out.push_str("READ-ONLY mode; serving only read-only clients\n");
    }
    if with_clients {
        out.push_str("Clients:\n");
        for c in &s.connections {
            conn_line(out, c, true);
        }
        out.push('\n');
    }
    let l = &s.latency;
    let _ = writeln!(
        out,
        "Latency min/avg/max: {}/{}/{}",
        l.min_ms,
        java_double(l.avg_ms),
        l.max_ms
    );
    let _ = writeln!(out, "Received: {}", s.packets_received);
    let _ = writeln!(out, "Sent: {}", s.packets_sent);
    let _ = writeln!(out, "Connections: {}", s.num_alive_connections);
    let _ = writeln!(out, "Outstanding: {}", s.outstanding);
    let _ = writeln!(out, "Zxid: 0x{:x}", s.zxid);
    let _ = writeln!(out, "Mode: {}", s.mode);
    let _ = writeln!(out, "Node count: {}", s.node_count);
    if let Some(leader) = &s.leader {
        let _ = writeln!(
            out,
            "Proposal sizes last/min/max: {}/{}/{}",
            leader.last_proposal_size, leader.min_proposal_size, leader.max_proposal_size
        );
    }
}

/// ServerCnxn.dumpConnectionInfo, then a newline.
fn conn_line(out: &mut String, c: &ConnStats, brief: bool) {
    let _ = write!(out, " {}[", java_socket_addr(&c.remote));
    if c.interest_ops == 0 {
        out.push('0');
    } else {
        let _ = write!(out, "{:x}", c.interest_ops);
    }
    let _ = write!(
        out,
        "](queued={},recved={},sent={}",
        c.queued, c.received, c.sent
    );
    if let (false, Some(s)) = (brief, &c.session) {
        if s.session_id != 0 {
            let _ = write!(
                out,
                ",sid=0x{:x},lop={},est={},to={}",
                s.session_id, s.last_op, s.established_ms, s.timeout_ms
            );
            if s.last_cxid >= 0 {
                let _ = write!(out, ",lcxid=0x{:x}", s.last_cxid);
            }
            let _ = write!(
                out,
                ",lzxid=0x{:x},lresp={},llat={},minlat={},avglat={},maxlat={}",
                s.last_zxid,
                s.last_response_ms,
                s.last_latency_ms,
                s.min_latency_ms,
                s.avg_latency_ms,
                s.max_latency_ms
            );
        }
    }
    out.push_str(")\n");
}

fn conf(out: &mut String, s: &ServerStats) {
    let c = &s.conf;
    let _ = writeln!(out, "clientPort={}", c.client_port);
    out.push_str("secureClientPort=-1\n");
    let _ = writeln!(out, "dataDir={}", c.data_dir);
    let _ = writeln!(out, "dataDirSize={}", s.data_dir_size);
    let _ = writeln!(out, "dataLogDir={}", c.data_log_dir);
    let _ = writeln!(out, "dataLogSize={}", s.log_dir_size);
    let _ = writeln!(out, "tickTime={}", c.tick_time_ms);
    let _ = writeln!(out, "maxClientCnxns={}", c.max_client_cnxns);
    let _ = writeln!(out, "minSessionTimeout={}", c.min_session_timeout_ms);
    let _ = writeln!(out, "maxSessionTimeout={}", c.max_session_timeout_ms);
    out.push_str("clientPortListenBacklog=-1\n");
    let _ = writeln!(out, "serverId={}", c.server_id);
    if let Some(members) = &c.membership {
        out.push_str("membership: \n");
        out.push_str(members);
        if !members.ends_with('\n') {
            out.push('\n');
        }
    }
}

fn mntr(out: &mut String, s: &ServerStats) {
    let mut kv = |k: &str, v: &dyn std::fmt::Display| {
        let _ = writeln!(out, "{k}\t{v}");
    };
    kv("zk_version", &s.version);
    kv("zk_server_state", &s.mode);
    kv("zk_ephemerals_count", &s.ephemerals_count);
    kv("zk_num_alive_connections", &s.num_alive_connections);
    kv("zk_avg_latency", &java_double(s.latency.avg_ms));
    kv("zk_outstanding_requests", &s.outstanding);
    kv("zk_znode_count", &s.node_count);
    kv("zk_global_sessions", &s.global_sessions);
    kv("zk_packets_sent", &s.packets_sent);
    kv("zk_packets_received", &s.packets_received);
    kv("zk_watch_count", &s.watch_count);
    kv("zk_auth_failed_count", &s.auth_failed_count);
    kv("zk_min_latency", &s.latency.min_ms);
    if let Some(max) = s.max_fds {
        kv("zk_max_file_descriptor_count", &max);
    }
    kv("zk_approximate_data_size", &s.approximate_data_size);
    if let Some(open) = s.open_fds {
        kv("zk_open_file_descriptor_count", &open);
    }
    kv("zk_local_sessions", &0);
    kv("zk_uptime", &s.uptime_ms);
    kv("zk_max_latency", &s.latency.max_ms);
    if let Some(l) = &s.leader {
        kv("zk_learners", &l.learners);
        kv("zk_synced_followers", &l.synced_followers);
        kv("zk_synced_non_voting_followers", &0);
        kv("zk_synced_observers", &l.synced_observers);
        kv("zk_pending_syncs", &l.pending_syncs);
        kv("zk_last_proposal_size", &l.last_proposal_size);
        kv("zk_max_proposal_size", &l.max_proposal_size);
        kv("zk_min_proposal_size", &l.min_proposal_size);
    }
    kv("rk_p50_latency", &java_double(s.latency.p50_ms));
    kv("rk_p99_latency", &java_double(s.latency.p99_ms));
    for (k, v) in &s.extra {
        kv(k, v);
    }
}

/// wchs's numbers: connections with watches, distinct paths, total watches.
fn watch_summary(watches: &[SessionWatches]) -> (usize, usize, usize) {
    let connections = watches.iter().filter(|w| !w.paths.is_empty()).count();
    let mut paths: Vec<&str> = watches
        .iter()
        .flat_map(|w| w.paths.iter().map(|p| &**p))
        .collect();
    let total = paths.len();
    paths.sort_unstable();
    paths.dedup();
    (connections, paths.len(), total)
}

fn watches_by_path(watches: &[SessionWatches]) -> BTreeMap<&str, Vec<i64>> {
    let mut by_path: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for w in watches {
        for p in &w.paths {
            by_path.entry(p).or_default().push(w.session_id);
        }
    }
    by_path
}

fn dump(out: &mut String, d: &DumpStats) {
    out.push_str("SessionTracker dump:\n");
    let sessions: usize = d.session_buckets.iter().map(|(_, s)| s.len()).sum();
    let _ = writeln!(
        out,
        "Session Sets ({})/({}):",
        d.session_buckets.len(),
        sessions
    );
    for (at, ids) in &d.session_buckets {
        let _ = writeln!(out, "{} expire at {}:", ids.len(), java_date_utc(*at));
        for id in ids {
            let _ = writeln!(out, "\t0x{id:x}");
        }
    }
    out.push_str("ephemeral nodes dump:\n");
    let _ = writeln!(out, "Sessions with Ephemerals ({}):", d.ephemerals.len());
    for (sid, paths) in &d.ephemerals {
        let _ = writeln!(out, "0x{sid:x}:");
        for p in paths {
            let _ = writeln!(out, "\t{p}");
        }
    }
    out.push_str("Connections dump:\n");
    let conns: usize = d.connection_buckets.iter().map(|(_, c)| c.len()).sum();
    let _ = writeln!(
        out,
        "Connections Sets ({})/({}):",
        d.connection_buckets.len(),
        conns
    );
    for (at, list) in &d.connection_buckets {
        let _ = writeln!(out, "{} expire at {}:", list.len(), java_date_utc(*at));
        for (addr, sid) in list {
            let _ = writeln!(out, "\tip: {} sessionId: 0x{sid:x}", java_socket_addr(addr));
        }
    }
}

/// The short operation names ZooKeeper's `cons` shows as `lop` (FinalRequestProcessor).
pub fn op_name(opcode: i32) -> &'static str {
    use crate::proto::types::opcode as op;
    match opcode {
        op::NOTIFICATION => "NOTI",
        op::CREATE | op::CREATE2 | op::CREATE_CONTAINER | op::CREATE_TTL => "CREA",
        op::DELETE | op::DELETE_CONTAINER => "DELE",
        op::EXISTS => "EXIS",
        op::GET_DATA => "GETD",
        op::SET_DATA => "SETD",
        op::GET_ACL => "GETA",
        op::SET_ACL => "SETA",
        op::GET_CHILDREN | op::GET_CHILDREN2 => "GETC",
        op::SYNC => "SYNC",
        op::PING => "PING",
        op::CHECK => "CHEC",
        op::MULTI => "MULT",
        op::MULTI_READ => "MLTR",
        op::RECONFIG => "RECO",
        op::CHECK_WATCHES => "CHKW",
        op::REMOVE_WATCHES => "REMW",
        op::SET_WATCHES | op::SET_WATCHES2 => "SETW",
        op::ADD_WATCH => "ADDW",
        op::GET_EPHEMERALS => "GETE",
        op::GET_ALL_CHILDREN_NUMBER => "GETACN",
        op::WHO_AM_I => "HOMI",
        op::AUTH => "AUTH",
        op::SASL => "SASL",
        op::CREATE_SESSION => "SESS",
        op::CLOSE_SESSION => "CLOS",
        _ => "NA",
    }
}

/// Java's `InetSocketAddress.toString()` for a literal address: `/ip:port`, IPv6 in full
/// uncompressed form inside brackets (JDK 14+).
fn java_socket_addr(addr: &SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("/{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => {
            let segs = a.ip().segments().map(|s| format!("{s:x}")).join(":");
            format!("/[{segs}]:{}", a.port())
        }
    }
}

/// Java's `Double.toString` for the values printed here.
fn java_double(x: f64) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            "NaN".into()
        } else if x > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let a = x.abs();
    if x == 0.0 || (1e-3..1e7).contains(&a) {
        // Rust's Debug is the shortest round-trip form with a ".0" for whole numbers: Java's.
        return format!("{x:?}");
    }
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    if mantissa.contains('.') {
        format!("{mantissa}E{exp}")
    } else {
        format!("{mantissa}.0E{exp}")
    }
}

/// BigDecimal.setScale(4, HALF_UP), as ZooKeeper rounds averages.
fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// Java's `Date.toString()` in UTC: `Wed Nov 25 00:51:29 UTC 2026`.
fn java_date_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let weekday = WEEKDAYS[days.rem_euclid(7) as usize];
    let month = MONTHS[(m - 1) as usize];
    format!(
        "{weekday} {month} {d:02} {:02}:{:02}:{:02} UTC {y}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month 1-12, day 1-31) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// envi's process facts, with ZooKeeper's key names where one fits.
pub fn process_env() -> Vec<(String, String)> {
    let mut env = Vec::new();
    let mut push = |k: &str, v: String| env.push((k.to_string(), v));
    push("host.name", hostname().unwrap_or_else(|| "<NA>".into()));
    let (sysname, release) = uname().unwrap_or_else(|| ("<NA>".into(), "<NA>".into()));
    push("os.name", sysname);
    push("os.arch", java_arch(std::env::consts::ARCH).to_string());
    push("os.version", release);
    push(
        "user.name",
        std::env::var("USER").unwrap_or_else(|_| "<NA>".into()),
    );
    push(
        "user.home",
        std::env::var("HOME").unwrap_or_else(|_| "<NA>".into()),
    );
    push(
        "user.dir",
        std::env::current_dir().map_or_else(|_| "<NA>".into(), |p| p.display().to_string()),
    );
    push("process.id", std::process::id().to_string());
    push("ringkeeper.version", env!("CARGO_PKG_VERSION").to_string());
    env
}

fn java_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "x86" => "x86",
        other => other,
    }
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into a buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

fn uname() -> Option<(String, String)> {
    // SAFETY: utsname is plain data; uname fills the struct we own.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return None;
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Some((field(&u.sysname), field(&u.release)))
}

/// (open, max) file descriptors of this process, for mntr; `None` where unknown.
pub fn fd_counts() -> (Option<u64>, Option<u64>) {
    let open = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as u64);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we own.
    let max =
        (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim.rlim_cur);
    (open, max)
}

// ---- ringkeeper's own metrics ----

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
    pub fn reset(&self) {
        self.0.store(0, Relaxed);
    }
}

/// A level that goes up and down (queue depths, open connections).
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Relaxed);
    }
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Relaxed);
    }
    pub fn sub(&self, n: i64) {
        self.0.fetch_sub(n, Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

// Log-linear buckets: values below 2^SUB_BITS+1 are exact; above, each power of two is split
// into 2^SUB_BITS buckets, so a reported value is within 1/2^SUB_BITS (6.25%) of the truth.
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
const LINEAR: u64 = 2 * SUB;
const BUCKETS: usize = (LINEAR + (64 - SUB_BITS as u64 - 1) * SUB) as usize;

fn bucket_of(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros() as u64; // >= SUB_BITS + 1
    let sub = (v >> (exp - SUB_BITS as u64)) & (SUB - 1);
    (LINEAR + (exp - SUB_BITS as u64 - 1) * SUB + sub) as usize
}

/// The largest value that falls in bucket `i`.
fn bucket_high(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let exp = (i - LINEAR) / SUB + SUB_BITS as u64 + 1;
    let sub = (i - LINEAR) % SUB;
    let shift = exp - SUB_BITS as u64;
    let low = (SUB + sub) << shift;
    low.saturating_add((1u64 << shift) - 1)
}

/// A lock-free histogram of u64 values (latencies in µs, batch sizes): relaxed atomic bucket
/// counts, so every shard records into the same one without contention on a lock.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            min: AtomicU64::new(u64::MAX),
            max: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Histogram").field(&self.snapshot()).finish()
    }
}

/// A histogram's numbers at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub count: u64,
    pub sum: u64,
    pub min: u64,
    pub max: u64,
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub p999: u64,
}

impl Histogram {
    pub fn record(&self, v: u64) {
        if let Some(b) = self.buckets.get(bucket_of(v)) {
            b.fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum.fetch_add(v, Relaxed);
        self.min.fetch_min(v, Relaxed);
        self.max.fetch_max(v, Relaxed);
    }

    pub fn reset(&self) {
        for b in self.buckets.iter() {
            b.store(0, Relaxed);
        }
        self.count.store(0, Relaxed);
        self.sum.store(0, Relaxed);
        self.min.store(u64::MAX, Relaxed);
        self.max.store(0, Relaxed);
    }

    /// Percentiles are the highest value of the bucket holding that rank, clamped to the
    /// observed min/max. Concurrent updates may skew one snapshot slightly.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let count: u64 = counts.iter().sum();
        if count == 0 {
            return HistogramSnapshot::default();
        }
        let min = self.min.load(Relaxed);
        let max = self.max.load(Relaxed);
        let at = |q: f64| {
            let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return bucket_high(i).clamp(min.min(max), max);
                }
            }
            max
        };
        HistogramSnapshot {
            count,
            sum: self.sum.load(Relaxed),
            min: min.min(max),
            max,
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            p999: at(0.999),
        }
    }
}

impl HistogramSnapshot {
    /// mntr lines in ZooKeeper's summary shape: `<p>_avg_<name>`, min, max, cnt, sum, p50...
    pub fn push_pairs(&self, prefix: &str, name: &str, out: &mut Vec<(String, String)>) {
        let avg = if self.count == 0 {
            0.0
        } else {
            round4(self.sum as f64 / self.count as f64)
        };
        out.push((format!("{prefix}_avg_{name}"), java_double(avg)));
        for (k, v) in [
            ("min", self.min),
            ("max", self.max),
            ("cnt", self.count),
            ("sum", self.sum),
            ("p50", self.p50),
            ("p95", self.p95),
            ("p99", self.p99),
            ("p999", self.p999),
        ] {
            out.push((format!("{prefix}_{k}_{name}"), v.to_string()));
        }
    }
}

macro_rules! metrics {
    (
        counters { $($(#[doc = $cdoc:literal])* $counter:ident,)* }
        gauges { $($(#[doc = $gdoc:literal])* $gauge:ident,)* }
        histograms { $($(#[doc = $hdoc:literal])* $hist:ident,)* }
    ) => {
        /// The server's own counters, gauges and histograms, shared by every shard (in an
        /// `Arc`); all updates are relaxed atomics. mntr shows them as `rk_*` keys.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $($(#[doc = $cdoc])* pub $counter: Counter,)*
            $($(#[doc = $gdoc])* pub $gauge: Gauge,)*
            $($(#[doc = $hdoc])* pub $hist: Histogram,)*
        }

        impl Metrics {
            /// `rk_`-prefixed key/value pairs for mntr, in declaration order.
            pub fn report(&self) -> Vec<(String, String)> {
                let mut out: Vec<(String, String)> = vec![
                    $((concat!("rk_", stringify!($counter)).to_string(), self.$counter.get().to_string()),)*
                    $((concat!("rk_", stringify!($gauge)).to_string(), self.$gauge.get().to_string()),)*
                ];
                $(self.$hist.snapshot().push_pairs("rk", stringify!($hist), &mut out);)*
                out
            }
        }
    };
}

metrics! {
    counters {
        /// Client frames read (ZooKeeper's "Received").
        packets_received,
        /// Frames written to clients, notifications included ("Sent").
        packets_sent,
        /// Read requests answered on a shard.
        reads,
        /// Write requests sent towards the sequencer.
        writes,
        /// Batches of writes a shard sent to the sequencer.
        shard_batches,
        /// Commands the sequencer received.
        sequencer_commands,
        /// Raft entries (batches) proposed.
        batches_proposed,
        /// Batches committed.
        batches_committed,
        /// Commands applied to the tree.
        commands_applied,
        /// Writes refused before apply (throttled, too large...).
        writes_rejected,
        /// Log bytes written and fdatasync calls issued.
        log_bytes_written,
        fsyncs,
        /// Snapshots written, and attempts that failed.
        snapshots_written,
        snapshot_failures,
        /// Watch notifications sent.
        watch_events,
        /// Watch registrations refused by max_watches_per_session or max_watches (each one
        /// answered QuotaExceeded).
        watches_refused,
        /// Watch events not delivered because the watcher may not READ the node they name.
        watch_events_filtered,
        /// Connections accepted / refused by max_client_cnxns / closed.
        connections_accepted,
        connections_rejected,
        connections_closed,
        /// Sessions created / expired.
        sessions_created,
        sessions_expired,
        /// Times a bounded cross-shard link was full (back-pressure).
        link_full,
        /// Times a connection hit max_outstanding_per_conn and its reads paused.
        reads_paused,
        /// Times a connection's reads paused because its queued replies passed
        /// max_send_queue_bytes (or its shard's passed its share of the total).
        send_queue_pauses,
        /// Connections closed because their queued replies and events passed the hard cap
        /// (slow consumers).
        slow_consumers,
        /// Connections closed with no session after the sessionless timeout.
        handshake_timeouts,
        /// Connections closed for a ConnectRequest over MAX_CONNECT_REQUEST_BYTES or one
        /// that does not decode (or that closed midway).
        connect_requests_refused,
        /// Times a listener stopped accepting because the descriptor budget was spent or
        /// accept found no descriptor (episodes, not tries).
        accept_pauses,
        /// addauth calls refused (identity limit, credential size, unknown scheme).
        auth_refused,
        /// Proposal rounds skipped because the log had too much waiting for the disk.
        log_backpressure,
        /// Four-letter words answered.
        four_letter_words,
        /// Peer frames queued for other members, bytes written to them, frames dropped
        /// because a link's queue was full (its member unreachable), and broken links.
        peer_frames_sent,
        peer_bytes_sent,
        peer_frames_dropped,
        peer_link_failures,
        /// Peer frames received.
        peer_frames_received,
        /// Peer connections refused at the handshake (no proof of the ensemble's secret, an
        /// id that is not a member, a bad or late hello), and connections closed for a limit
        /// (too many handshakes at once, too many links from one member, a stalled frame).
        peer_auth_failures,
        peer_connections_refused,
        /// Peer frames refused after authentication (a forward that is not a member's to send,
        /// a snapshot not from the leader).
        peer_frames_refused,
        /// raft messages from other members refused before raft saw them: undecodable, of a
        /// kind members never send, or inconsistent with this member's state.
        peer_messages_refused,
        /// Writes this member forwarded to the leader / received from other members.
        forwarded_out,
        forwarded_in,
        /// Forwarded writes dropped because this member was not the leader when they arrived.
        forwards_dropped,
        /// Writes answered SessionMoved: their session had moved to another member.
        sessions_moved,
        /// Configuration changes (reconfig, or raft leaving a joint configuration) applied,
        /// and committed ones skipped because they did not apply (a faulty leader's).
        config_changes,
        config_changes_refused,
        /// Leader changes this member saw, and the connections it closed because a write of
        /// theirs may have been lost with the old leader.
        leader_changes,
        writers_dropped,
        /// sync requests answered through raft's ReadIndex.
        syncs,
        /// Tree digests compared with the leader's at the same log index, and mismatches
        /// (a mismatch means this member's state diverged: it is logged as an error).
        digest_checks,
        digest_mismatches,
    }
    gauges {
        /// Connections open now.
        alive_connections,
        /// Requests received and not yet answered.
        outstanding_requests,
        /// Commands waiting for the sequencer to seal a batch.
        sequencer_queue,
        /// Records waiting for the log writer.
        log_queue,
        /// Raft term and commit index, as last seen, and the leader's id (0: none known).
        raft_term,
        commit_index,
        leader_id,
    }
    histograms {
        /// Client request latency, receipt to reply (µs).
        request_latency_us,
        /// Commands per raft entry.
        batch_commands,
        /// Bytes of raft entries per log submit.
        log_write_bytes,
        /// A log submit until it is durable: the group-commit wait plus one write+sync (µs).
        fsync_latency_us,
        /// A batch proposed until it is committed (µs).
        commit_latency_us,
        /// Applying one batch (µs).
        apply_latency_us,
    }
}

impl Metrics {
    /// srst: ZooKeeper resets its latency and packet counters.
    pub fn reset_server_stats(&self) {
        self.packets_received.reset();
        self.packets_sent.reset();
        self.request_latency_us.reset();
    }

    /// srvr's latency line from the request latency histogram.
    pub fn latency(&self) -> LatencyStats {
        LatencyStats::from_us(&self.request_latency_us.snapshot())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers captured from ZooKeeper 3.8 (tests/testdata/zk-wire, in the repository: a
    /// missing file fails the test instead of skipping the comparison).
    fn sample(name: &str) -> Option<String> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/testdata/zk-wire/fourletter")
            .join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => Some(text),
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }

    fn all() -> Vec<String> {
        FourLetter::ALL
            .iter()
            .map(|c| c.name().to_string())
            .collect()
    }

    const ZK_VERSION: &str = "3.8.0-${mvngit.commit.id}, built on 2024-12-29 17:54 UTC";

    /// The live server's state when srvr/stat/cons were captured.
    fn captured() -> ServerStats {
        ServerStats {
            version: ZK_VERSION.to_string(),
            zxid: 0x44,
            node_count: 23,
            num_alive_connections: 2,
            packets_received: 142,
            packets_sent: 151,
            latency: LatencyStats {
                min_ms: 0,
                avg_ms: 2.8915,
                max_ms: 170,
                ..Default::default()
            },
            connections: vec![
                ConnStats {
                    remote: "127.0.0.1:46192".parse().unwrap(),
                    interest_ops: 0,
                    queued: 0,
                    received: 1,
                    sent: 0,
                    session: None,
                },
                ConnStats {
                    remote: "127.0.0.1:39818".parse().unwrap(),
                    interest_ops: 1,
                    queued: 0,
                    received: 91,
                    sent: 93,
                    session: Some(ConnSessionStats {
                        session_id: 0x1000016c5f10000,
                        last_op: "GETC",
                        established_ms: 1795567870560,
                        timeout_ms: 30000,
                        last_cxid: 0x52,
                        last_zxid: 0x44,
                        last_response_ms: 1511139,
                        last_latency_ms: 0,
                        min_latency_ms: 0,
                        avg_latency_ms: 3,
                        max_latency_ms: 170,
                    }),
                },
            ],
            ..Default::default()
        }
    }

    /// Compares with a capture when the shared test data is present (it is in this repo's
    /// workspace); the literal expectations below cover the same shapes without it.
    fn check_sample(name: &str, got: &str) {
        if let Some(want) = sample(name) {
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn ruok_isro_gtmk() {
        let s = ServerStats::default();
        assert_eq!(four_letter("ruok", &s, &all()), "imok");
        assert_eq!(four_letter("isro", &s, &all()), "rw");
        assert_eq!(four_letter("gtmk", &s, &all()), "306");
        check_sample("ruok.txt", &four_letter("ruok", &s, &all()));
        check_sample("isro.txt", &four_letter("isro", &s, &all()));
        check_sample("gtmk.txt", &four_letter("gtmk", &s, &all()));
        let ro = ServerStats {
            read_only: true,
            ..Default::default()
        };
        assert_eq!(four_letter("isro", &ro, &all()), "ro");
        let down = ServerStats {
            serving: false,
            ..Default::default()
        };
        assert_eq!(four_letter("isro", &down, &all()), "null");
        assert_eq!(
            four_letter("ruok", &down, &all()),
            "imok",
            "ruok answers even when not serving"
        );
        let stmk = ServerStats {
            trace_mask: 0,
            ..Default::default()
        };
        assert_eq!(four_letter("stmk", &stmk, &all()), "0");
    }

    #[test]
    fn srvr_matches_capture() {
        let got = four_letter("srvr", &captured(), &all());
        assert_eq!(
            got,
            format!(
                "Zookeeper version: {ZK_VERSION}\nLatency min/avg/max: 0/2.8915/170\nReceived: 142\n\
                 Sent: 151\nConnections: 2\nOutstanding: 0\nZxid: 0x44\nMode: standalone\nNode count: 23\n"
            )
        );
        check_sample("srvr.txt", &got);
    }

    #[test]
    fn srvr_on_empty_server() {
        let s = ServerStats {
            version: ZK_VERSION.to_string(),
            node_count: 5,
            num_alive_connections: 1,
            packets_received: 6,
            packets_sent: 5,
            ..Default::default()
        };
        let got = four_letter("srvr", &s, &["srvr".to_string()]);
        assert!(got.contains("Latency min/avg/max: 0/0.0/0\n"), "{got}");
        assert!(got.contains("Zxid: 0x0\n"));
        check_sample("default-whitelist-srvr.txt", &got);
    }

    #[test]
    fn stat_matches_capture() {
        let mut s = captured();
        s.packets_received = 143;
        s.packets_sent = 152;
        s.connections[0].remote = "127.0.0.1:46172".parse().unwrap();
        let got = four_letter("stat", &s, &all());
        assert!(got.starts_with(&format!(
            "Zookeeper version: {ZK_VERSION}\nClients:\n /127.0.0.1:46172[0](queued=0,recved=1,sent=0)\n \
             /127.0.0.1:39818[1](queued=0,recved=91,sent=93)\n\nLatency"
        )));
        check_sample("stat.txt", &got);
    }

    #[test]
    fn cons_matches_capture() {
        let got = four_letter("cons", &captured(), &all());
        assert_eq!(
            got,
            " /127.0.0.1:46192[0](queued=0,recved=1,sent=0)\n /127.0.0.1:39818[1](queued=0,recved=91,\
             sent=93,sid=0x1000016c5f10000,lop=GETC,est=1795567870560,to=30000,lcxid=0x52,lzxid=0x44,\
             lresp=1511139,llat=0,minlat=0,avglat=3,maxlat=170)\n\n"
        );
        check_sample("cons.txt", &got);
    }

    #[test]
    fn cons_omits_negative_cxid_and_prints_negative_zxid_as_java() {
        let mut s = captured();
        if let Some(sess) = s.connections[1].session.as_mut() {
            sess.last_cxid = -1;
            sess.last_zxid = -1;
        }
        let got = four_letter("cons", &s, &all());
        assert!(got.contains(",to=30000,lzxid=0xffffffffffffffff,"), "{got}");
    }

    #[test]
    fn conf_matches_capture() {
        let s = ServerStats {
            conf: ConfStats {
                client_port: 54087,
                data_dir: "<dataDir>/version-2".into(),
                data_log_dir: "<dataDir>/version-2".into(),
                tick_time_ms: 2000,
                max_client_cnxns: 60,
                min_session_timeout_ms: 4000,
                max_session_timeout_ms: 40000,
                server_id: 0,
                membership: None,
            },
            data_dir_size: 67109337,
            log_dir_size: 67109337,
            ..Default::default()
        };
        let got = four_letter("conf", &s, &all());
        assert!(
            got.starts_with("clientPort=54087\nsecureClientPort=-1\ndataDir=<dataDir>/version-2\n")
        );
        assert!(got.ends_with("clientPortListenBacklog=-1\nserverId=0\n"));
        check_sample("conf.txt", &got);
        let got = four_letter("dirs", &s, &all());
        assert_eq!(got, "datadir_size: 67109337\nlogdir_size: 67109337\n");
        check_sample("dirs.txt", &got);
    }

    fn watches() -> Vec<SessionWatches> {
        vec![SessionWatches {
            session_id: 0x1000016c5f10000,
            paths: vec![Arc::from("/rk/none"), Arc::from("/rk")],
        }]
    }

    #[test]
    fn watch_words_match_capture() {
        let s = ServerStats {
            watches: watches(),
            ..Default::default()
        };
        let wchs = four_letter("wchs", &s, &all());
        assert_eq!(wchs, "1 connections watching 2 paths\nTotal watches:2\n");
        check_sample("wchs.txt", &wchs);
        let wchc = four_letter("wchc", &s, &all());
        assert_eq!(wchc, "0x1000016c5f10000\n\t/rk/none\n\t/rk\n\n");
        check_sample("wchc.txt", &wchc);
        // wchp is sorted by path here (ZooKeeper's order is a hash order).
        let wchp = four_letter("wchp", &s, &all());
        assert_eq!(
            wchp,
            "/rk\n\t0x1000016c5f10000\n/rk/none\n\t0x1000016c5f10000\n\n"
        );
    }

    #[test]
    fn watch_summary_unions_paths_across_connections() {
        let w = vec![
            SessionWatches {
                session_id: 1,
                paths: vec![Arc::from("/a"), Arc::from("/b")],
            },
            SessionWatches {
                session_id: 2,
                paths: vec![Arc::from("/a")],
            },
            SessionWatches {
                session_id: 3,
                paths: vec![],
            },
        ];
        let s = ServerStats {
            watches: w,
            ..Default::default()
        };
        assert_eq!(
            four_letter("wchs", &s, &all()),
            "2 connections watching 2 paths\nTotal watches:3\n"
        );
        assert_eq!(
            four_letter("wchp", &s, &all()),
            "/a\n\t0x1\n\t0x2\n/b\n\t0x1\n\n"
        );
        assert_eq!(
            four_letter("wchc", &s, &all()),
            "0x1\n\t/a\n\t/b\n0x2\n\t/a\n\n"
        );
    }

    #[test]
    fn whitelist_refusal_and_unknown() {
        let s = ServerStats::default();
        let only_srvr = vec!["srvr".to_string()];
        let got = four_letter("ruok", &s, &only_srvr);
        assert_eq!(
            got,
            "ruok is not executed because it is not in the whitelist.\n"
        );
        check_sample("default-whitelist-ruok.txt", &got);
        check_sample(
            "default-whitelist-stat.txt",
            &four_letter("stat", &s, &only_srvr),
        );
        assert_eq!(four_letter("xxxx", &s, &all()), "");
        assert_eq!(four_letter("RUOK", &s, &all()), "", "case-sensitive");
    }

    #[test]
    fn not_serving() {
        let s = ServerStats {
            serving: false,
            ..Default::default()
        };
        for w in [
            "srvr", "stat", "cons", "conf", "mntr", "wchs", "wchc", "wchp", "dirs", "crst", "srst",
            "dump",
        ] {
            assert_eq!(
                four_letter(w, &s, &all()),
                format!("{NOT_SERVING}\n"),
                "{w}"
            );
        }
        assert!(four_letter("envi", &s, &all()).starts_with("Environment:\n"));
    }

    #[test]
    fn resets_and_hash() {
        let s = ServerStats::default();
        assert_eq!(four_letter("crst", &s, &all()), "Connection stats reset.\n");
        assert_eq!(four_letter("srst", &s, &all()), "Server stats reset.\n");
        check_sample("crst.txt", &four_letter("crst", &s, &all()));
        check_sample("srst.txt", &four_letter("srst", &s, &all()));
        assert_eq!(four_letter("hash", &s, &all()), "");
    }

    #[test]
    fn envi_shape() {
        let s = ServerStats {
            version: ZK_VERSION.into(),
            env: vec![
                ("host.name".into(), "localhost".into()),
                ("java.version".into(), "17.0.15".into()),
            ],
            ..Default::default()
        };
        let got = four_letter("envi", &s, &all());
        assert_eq!(
            got,
            format!("Environment:\nzookeeper.version={ZK_VERSION}\nhost.name=localhost\njava.version=17.0.15\n")
        );
        if let Some(want) = sample("envi.txt") {
            assert!(want.starts_with(&got), "same first lines as the capture");
        }
        let env = process_env();
        assert!(env.iter().any(|(k, _)| k == "host.name"));
        assert!(env.iter().any(|(k, v)| k == "os.name" && !v.is_empty()));
    }

    #[test]
    fn mntr_shape() {
        let mut s = captured();
        s.ephemerals_count = 3;
        s.watch_count = 3;
        s.approximate_data_size = 244;
        s.open_fds = Some(39);
        s.max_fds = Some(20000);
        s.global_sessions = 5;
        s.extra = vec![("rk_fsyncs".into(), "7".into())];
        let got = four_letter("mntr", &s, &all());
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(lines[0], format!("zk_version\t{ZK_VERSION}"));
        assert_eq!(lines[1], "zk_server_state\tstandalone");
        for line in &lines {
            let (k, v) = line.split_once('\t').expect("key<TAB>value");
            assert!(k.starts_with("zk_") || k.starts_with("rk_"), "{k}");
            assert!(!v.is_empty(), "{k}");
        }
        let want = [
            "zk_avg_latency\t2.8915",
            "zk_min_latency\t0",
            "zk_max_latency\t170",
            "zk_packets_received\t142",
            "zk_packets_sent\t151",
            "zk_num_alive_connections\t2",
            "zk_outstanding_requests\t0",
            "zk_znode_count\t23",
            "zk_watch_count\t3",
            "zk_ephemerals_count\t3",
            "zk_approximate_data_size\t244",
            "zk_open_file_descriptor_count\t39",
            "zk_max_file_descriptor_count\t20000",
            "zk_global_sessions\t5",
            "rk_fsyncs\t7",
        ];
        for w in want {
            assert!(lines.contains(&w), "missing {w:?} in\n{got}");
        }
        // Same values as the capture for the keys both have.
        if let Some(sample) = sample("mntr.txt") {
            for key in [
                "zk_version",
                "zk_server_state",
                "zk_avg_latency",
                "zk_znode_count",
                "zk_max_latency",
            ] {
                let find = |t: &str| {
                    t.lines()
                        .find(|l| l.split('\t').next() == Some(key))
                        .map(str::to_string)
                };
                assert_eq!(find(&got), find(&sample), "{key}");
            }
        }
        assert!(
            !got.contains("zk_learners"),
            "leader keys only for a leader"
        );
        s.leader = Some(LeaderStats {
            learners: 2,
            ..Default::default()
        });
        assert!(four_letter("mntr", &s, &all()).contains("zk_learners\t2\n"));
        assert!(four_letter("srvr", &s, &all()).contains("Proposal sizes last/min/max: 0/0/0\n"));
    }

    #[test]
    fn dump_shape() {
        let s = ServerStats {
            dump: DumpStats {
                session_buckets: vec![
                    (1795567889000, vec![]),
                    (1795567899000, vec![0x1000016c5f10001]),
                ],
                ephemerals: vec![(
                    0x1000016c5f10000,
                    vec!["/rk/eph".into(), "/rk/mc/kid".into()],
                )],
                connection_buckets: vec![(
                    1795567907000,
                    vec![("127.0.0.1:46240".parse().unwrap(), 0)],
                )],
            },
            ..Default::default()
        };
        let got = four_letter("dump", &s, &all());
        assert_eq!(
            got,
            "SessionTracker dump:\nSession Sets (2)/(1):\n0 expire at Wed Nov 25 00:51:29 UTC 2026:\n\
             1 expire at Wed Nov 25 00:51:39 UTC 2026:\n\t0x1000016c5f10001\nephemeral nodes dump:\n\
             Sessions with Ephemerals (1):\n0x1000016c5f10000:\n\t/rk/eph\n\t/rk/mc/kid\nConnections dump:\n\
             Connections Sets (1)/(1):\n1 expire at Wed Nov 25 00:51:47 UTC 2026:\n\
             \tip: /127.0.0.1:46240 sessionId: 0x0\n"
        );
    }

    #[test]
    fn four_letter_parsing() {
        assert_eq!(FourLetter::from_bytes(b"ruok"), Some(FourLetter::Ruok));
        assert_eq!(FourLetter::from_bytes(b"mntr"), Some(FourLetter::Mntr));
        assert_eq!(FourLetter::from_bytes(&[0, 0, 0, 45]), None);
        assert_eq!(FourLetter::from_bytes(&TELNET_CLOSE), None);
        for w in FourLetter::ALL {
            assert_eq!(FourLetter::from_name(w.name()), Some(*w));
        }
        assert_eq!(FourLetter::ALL.len(), 18);
        assert!(FourLetter::Stat.needs_connections() && FourLetter::Wchp.needs_watches());
    }

    #[test]
    fn java_formats() {
        assert_eq!(java_double(0.0), "0.0");
        assert_eq!(java_double(2.8915), "2.8915");
        assert_eq!(java_double(3.0), "3.0");
        assert_eq!(java_double(0.0005), "5.0E-4");
        assert_eq!(java_double(0.00123), "0.00123");
        assert_eq!(java_double(12_345_678.0), "1.2345678E7");
        assert_eq!(round4(2.891_549), 2.8915);
        assert_eq!(java_date_utc(0), "Thu Jan 01 00:00:00 UTC 1970");
        assert_eq!(
            java_date_utc(951_782_400_000),
            "Tue Feb 29 00:00:00 UTC 2000"
        );
        assert_eq!(
            java_socket_addr(&"127.0.0.1:2181".parse().unwrap()),
            "/127.0.0.1:2181"
        );
        assert_eq!(
            java_socket_addr(&"[::1]:2181".parse().unwrap()),
            "/[0:0:0:0:0:0:0:1]:2181"
        );
        assert_eq!(op_name(crate::proto::types::opcode::GET_CHILDREN2), "GETC");
        assert_eq!(op_name(999), "NA");
    }

    #[test]
    fn version_parses_like_zookeeper() {
        let v = version_string();
        let release = v.split(['-', ',']).next().unwrap();
        assert_eq!(release, "3.8.0");
        assert!(v.contains(", built on "));
    }

    #[test]
    fn histogram_buckets_round_trip() {
        for v in [
            0u64,
            1,
            31,
            32,
            33,
            47,
            48,
            1000,
            123_456,
            u64::MAX / 3,
            u64::MAX,
        ] {
            let b = bucket_of(v);
            assert!(b < BUCKETS, "{v}");
            let high = bucket_high(b);
            assert!(high >= v, "{v} -> bucket {b} high {high}");
            // Relative error bound: the bucket is at most 1/16 of its values wide.
            assert!(high - v <= v / SUB, "{v}: {high}");
            if b > 0 {
                assert!(bucket_high(b - 1) < v, "{v}");
            }
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn histogram_snapshot() {
        let h = Histogram::default();
        assert_eq!(h.snapshot(), HistogramSnapshot::default());
        for v in 1..=1000u64 {
            h.record(v);
        }
        let s = h.snapshot();
        assert_eq!((s.count, s.sum, s.min, s.max), (1000, 500_500, 1, 1000));
        assert!((500..=500 + 500 / 16).contains(&s.p50), "{s:?}");
        assert!((990..=1000).contains(&s.p99), "{s:?}");
        assert_eq!(s.p999, 1000);
        let l = LatencyStats::from_us(&s);
        assert_eq!((l.min_ms, l.max_ms), (0, 1));
        assert_eq!(l.avg_ms, 0.5005);
        h.reset();
        assert_eq!(h.snapshot().count, 0);
    }

    #[test]
    fn metrics_report_and_reset() {
        let m = Metrics::default();
        m.packets_received.add(3);
        m.fsyncs.inc();
        m.sequencer_queue.set(5);
        m.sequencer_queue.sub(2);
        m.batch_commands.record(4);
        m.request_latency_us.record(2500);
        let r = m.report();
        let get = |k: &str| r.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        assert_eq!(get("rk_packets_received").as_deref(), Some("3"));
        assert_eq!(get("rk_fsyncs").as_deref(), Some("1"));
        assert_eq!(get("rk_sequencer_queue").as_deref(), Some("3"));
        assert_eq!(get("rk_cnt_batch_commands").as_deref(), Some("1"));
        assert_eq!(get("rk_avg_batch_commands").as_deref(), Some("4.0"));
        assert_eq!(get("rk_p99_fsync_latency_us").as_deref(), Some("0"));
        assert!(r.iter().all(|(k, _)| k.starts_with("rk_")));
        assert_eq!(m.latency().min_ms, 2);
        m.reset_server_stats();
        assert_eq!(m.packets_received.get(), 0);
        assert_eq!(m.request_latency_us.snapshot().count, 0);
        assert_eq!(m.fsyncs.get(), 1, "srst leaves ringkeeper's own counters");
    }

    #[test]
    fn metrics_are_shareable_across_threads() {
        let m = Arc::new(Metrics::default());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        m.writes.inc();
                        m.apply_latency_us.record(i);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(m.writes.get(), 4000);
        assert_eq!(m.apply_latency_us.snapshot().count, 4000);
    }
}
