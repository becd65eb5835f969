//! Filling `admin::ServerStats` for a four-letter word.
//!
//! Counters and gauges are process-wide (`Metrics`); tree figures come from the answering
//! shard's View. Words that list connections, watches or sessions (cons, stat, wchs, wchc,
//! wchp, dump, mntr's watch count) gather them from every shard through the sequencer.

use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::conn::ConnHandle;
use super::shard::Shard;
use super::Diag;
use crate::admin::{self, ConnSessionStats, ConnStats, DumpStats, FourLetter, ServerStats};

/// How long a four-letter word waits for the other shards.
const COLLECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Per-connection figures for `cons`.
#[derive(Default)]
pub struct ConnCounters {
    pub last_op: Cell<i32>,
    pub last_cxid: Cell<i64>,
    pub last_zxid: Cell<i64>,
    pub last_response_ms: Cell<i64>,
    pub last_latency_us: Cell<u64>,
    pub min_latency_us: Cell<u64>,
    pub max_latency_us: Cell<u64>,
    pub sum_latency_us: Cell<u64>,
    pub replies: Cell<u64>,
}

impl ConnCounters {
    pub fn new() -> ConnCounters {
        let c = ConnCounters::default();
        c.last_cxid.set(-1);
        c.min_latency_us.set(u64::MAX);
        c
    }

    pub fn replied(&self, zxid: i64, latency_us: u64) {
        self.last_zxid.set(zxid);
        self.last_response_ms.set(now_ms());
        self.last_latency_us.set(latency_us);
        self.min_latency_us
            .set(self.min_latency_us.get().min(latency_us));
        self.max_latency_us
            .set(self.max_latency_us.get().max(latency_us));
        self.sum_latency_us
            .set(self.sum_latency_us.get() + latency_us);
        self.replies.set(self.replies.get() + 1);
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Shard {
    pub async fn four_letter(&self, cmd: &str) -> String {
        let shared = &self.shared;
        shared.metrics.four_letter_words.inc();
        let Some(word) = FourLetter::from_name(cmd) else {
            return String::new();
        };
        if !shared.config.four_letter_allowed(cmd) {
            return admin::four_letter(
                cmd,
                &ServerStats::default(),
                &shared.config.four_letter_whitelist,
            );
        }
        match word {
            FourLetter::Srst => shared.metrics.reset_server_stats(),
            FourLetter::Crst => {
                for c in self.conns.borrow().values() {
                    c.received.set(0);
                    c.sent.set(0);
                }
            }
            _ => {}
        }
        let view = self.view.borrow().clone();
        let m = &shared.metrics;
        let mut stats = ServerStats {
            serving: shared.serving.load(Ordering::SeqCst),
            mode: match shared.role.load(Ordering::Relaxed) {
                super::ROLE_LEADER => "leader",
                super::ROLE_FOLLOWER => "follower",
                super::ROLE_OBSERVER => "observer",
                super::ROLE_LOOKING => "looking",
                _ => "standalone",
            },
            zxid: view.last_zxid(),
            // ZooKeeper counts the root twice.
            node_count: view.node_count() as u64 + 1,
            num_alive_connections: m.alive_connections.get().max(0) as u64,
            packets_received: m.packets_received.get(),
            packets_sent: m.packets_sent.get(),
            outstanding: m.outstanding_requests.get().max(0) as u64,
            latency: m.latency(),
            ephemerals_count: view.ephemeral_count() as u64,
            approximate_data_size: view.approximate_data_size(),
            global_sessions: view.session_count() as u64,
            uptime_ms: shared
                .started_at
                .elapsed()
                .map_or(0, |d| d.as_millis() as u64),
            conf: shared.config.conf_stats(),
            leader: shared.leader_stats.lock().ok().and_then(|l| *l),
            env: admin::process_env(),
            extra: m.report(),
            ..ServerStats::default()
        };
        (stats.open_fds, stats.max_fds) = admin::fd_counts();
        if shared.config.is_ensemble() {
            // The replicated list once a reconfig wrote it, else the configured one.
            stats.conf.membership =
                Some(crate::reconfig::config_text(&view).unwrap_or_else(|| {
                    let members: Vec<_> = shared
                        .config
                        .members
                        .iter()
                        .map(crate::reconfig::spec_of)
                        .collect();
                    format!("{}version=0", crate::reconfig::format(&members))
                }));
        }
        let gather = word.needs_connections()
            || word.needs_watches()
            || word.needs_dump()
            || matches!(word, FourLetter::Mntr);
        if gather {
            self.gather(&mut stats).await;
            if word.needs_dump() {
                stats.dump.ephemerals = view
                    .sessions()
                    .filter(|(_, s)| s.ephemeral_count() > 0)
                    .map(|(id, s)| (id, s.ephemerals().map(|p| p.to_string()).collect()))
                    .collect();
            }
        }
        admin::four_letter(cmd, &stats, &shared.config.four_letter_whitelist)
    }

    async fn gather(&self, stats: &mut ServerStats) {
        let Ok(rx) = self.collect().await else {
            return;
        };
        // Every shard answers once, and the sequencer once.
        let expected = self.shared.config.shards + 1;
        let deadline = Instant::now() + COLLECT_TIMEOUT;
        for _ in 0..expected {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = futures_lite::future::or(async { rx.recv().await.ok() }, async {
                glommio::timer::sleep(left).await;
                None
            })
            .await;
            match msg {
                Some(Diag::Shard {
                    connections,
                    watches,
                    watch_count,
                }) => {
                    stats.connections.extend(connections);
                    stats.watches.extend(watches);
                    stats.watch_count += watch_count;
                }
                Some(Diag::Sessions(buckets)) => {
                    stats.dump = DumpStats {
                        session_buckets: buckets,
                        ..DumpStats::default()
                    };
                }
                None => break,
            }
        }
    }

    /// This shard's part of a four-letter word's answer.
    pub fn diagnostics(&self) -> Diag {
        let conns = self.conns.borrow();
        let watches = self.watches.borrow();
        Diag::Shard {
            connections: conns.values().map(|c| conn_stats(c)).collect(),
            watches: watches
                .data_watches_by_conn()
                .into_iter()
                .map(|(conn, paths)| admin::SessionWatches {
                    session_id: conns.get(&(conn as u32)).map_or(0, |c| c.session()),
                    paths,
                })
                .collect(),
            watch_count: watches.watch_count() as u64,
        }
    }
}

fn conn_stats(c: &ConnHandle) -> ConnStats {
    let session = c.session();
    let k = &c.counters;
    let replies = k.replies.get().max(1);
    ConnStats {
        remote: c.peer,
        interest_ops: 1,
        queued: c.pending_len() as u64,
        received: c.received.get(),
        sent: c.sent.get(),
        session: (session != 0).then(|| ConnSessionStats {
            session_id: session,
            last_op: admin::op_name(k.last_op.get()),
            established_ms: c.established_ms,
            timeout_ms: c.timeout(),
            last_cxid: k.last_cxid.get(),
            last_zxid: k.last_zxid.get(),
            last_response_ms: k.last_response_ms.get(),
            last_latency_ms: (k.last_latency_us.get() / 1000) as i64,
            min_latency_ms: if k.replies.get() == 0 {
                0
            } else {
                (k.min_latency_us.get() / 1000) as i64
            },
            avg_latency_ms: (k.sum_latency_us.get() / replies / 1000) as i64,
            max_latency_ms: (k.max_latency_us.get() / 1000) as i64,
        }),
    }
}
