//! Filling `admin::ServerStats` for a four-letter word, from the shard that received it.
//!
//! Counters and gauges are process-wide (`Metrics`); the tree figures come from the shard's
//! View. Per-connection and per-watch listings (cons, stat, wchc, wchp) cover the connections
//! of the answering shard only: gathering them from every shard would need a round trip
//! through every executor for a diagnostic command.

use std::sync::atomic::Ordering;

use super::shard::Shard;
use crate::admin::{self, ConfStats, ConnStats, FourLetter, ServerStats, SessionWatches};

impl Shard {
    pub fn four_letter(&self, cmd: &str) -> String {
        let shared = &self.shared;
        shared.metrics.four_letter_words.inc();
        let Some(word) = FourLetter::from_name(cmd) else {
            return String::new();
        };
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
        let watches = self.watches.borrow();
        let m = &shared.metrics;
        let mut stats = ServerStats {
            serving: shared.serving.load(Ordering::SeqCst),
            zxid: view.last_zxid(),
            // ZooKeeper counts the root twice.
            node_count: view.node_count() as u64 + 1,
            watch_count: watches.watch_count() as u64,
            num_alive_connections: m.alive_connections.get().max(0) as u64,
            packets_received: m.packets_received.get(),
            packets_sent: m.packets_sent.get(),
            outstanding: m.outstanding_requests.get().max(0) as u64,
            latency: m.latency(),
            ephemerals_count: view.ephemeral_count() as u64,
            approximate_data_size: view.approximate_data_size() as u64,
            global_sessions: view.session_count() as u64,
            uptime_ms: shared.started_at.elapsed().map_or(0, |d| d.as_millis() as u64),
            conf: ConfStats::from_config(&shared.config),
            env: admin::process_env(),
            extra: m.report(),
            ..ServerStats::default()
        };
        let (open, max) = admin::fd_counts();
        stats.open_fds = open;
        stats.max_fds = max;
        if word.needs_connections() {
            stats.connections = self
                .conns
                .borrow()
                .values()
                .map(|c| ConnStats {
                    remote: c.peer,
                    interest_ops: 1,
                    queued: 0,
                    received: c.received.get(),
                    sent: c.sent.get(),
                    session: None,
                })
                .collect();
        }
        if word.needs_watches() {
            let conns = self.conns.borrow();
            stats.watches = watches
                .data_watches_by_conn()
                .into_iter()
                .map(|(conn, paths)| SessionWatches {
                    session_id: conns.get(&(conn as u32)).map_or(0, |c| c.session()),
                    paths,
                })
                .collect();
        }
        admin::four_letter(cmd, &stats, &shared.config.four_letter_whitelist)
    }
}
