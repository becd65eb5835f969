//! The simulated network between members (raft messages) and between clients and members.
//!
//! Peer links lose, duplicate, delay and so reorder messages, as UDP-like links would; raft
//! must cope with all of it. Client links behave like TCP connections: FIFO, never duplicated,
//! but a message may be lost (the connection broke) and the client then retries. Partitions
//! split the members into groups; a message crosses groups neither when sent nor when it
//! arrives, so nothing sent before a split trickles across it afterwards.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::Rng;

use super::world::{Time, MS};

/// Peer messages in flight at once; more are dropped (counted as loss). Raft sends a bounded
/// number per tick and per proposal, so this is only reached if something loops.
pub const MAX_IN_FLIGHT: usize = 50_000;

#[derive(Clone, Debug)]
pub struct NetConfig {
    /// One-way delay of a peer message: uniform in [min, max] µs.
    pub min_delay: Time,
    pub max_delay: Time,
    /// Probability that a peer message is lost / delivered twice.
    pub loss: f64,
    pub dup: f64,
    /// Client links: delay range and probability that a request or reply is lost.
    pub client_min_delay: Time,
    pub client_max_delay: Time,
    pub client_loss: f64,
}

impl NetConfig {
    pub fn random(rng: &mut StdRng) -> NetConfig {
        let min_delay = rng.gen_range(50..2 * MS);
        let max_delay = min_delay + rng.gen_range(0..30 * MS);
        NetConfig {
            min_delay,
            max_delay,
            loss: [0.0, 0.01, 0.05, 0.15][rng.gen_range(0..4)],
            dup: [0.0, 0.02, 0.1][rng.gen_range(0..3)],
            client_min_delay: 100,
            client_max_delay: rng.gen_range(200..5 * MS),
            client_loss: [0.0, 0.01, 0.05][rng.gen_range(0..3)],
        }
    }
}

/// A split of the members into groups, until it heals.
#[derive(Clone, Debug)]
pub struct Partition {
    /// Increases with every new partition; acks check that they did not happen in the
    /// minority of the partition their proposal was made in.
    pub epoch: u64,
    /// The group of each member (by index).
    pub group: Vec<u8>,
    /// Members in a group smaller than a quorum.
    pub minority: Vec<bool>,
}

impl Partition {
    /// `quorum`: the fewest members that can commit (a majority of the fewest voters).
    pub fn new(epoch: u64, group: Vec<u8>, quorum: usize) -> Partition {
        let minority = group
            .iter()
            .map(|g| group.iter().filter(|h| *h == g).count() < quorum)
            .collect();
        Partition {
            epoch,
            group,
            minority,
        }
    }

    /// A random split of `n` members: one member cut off, a minority against a majority, or
    /// (rarely) three groups where nobody has a quorum.
    pub fn random(rng: &mut StdRng, epoch: u64, n: usize, commit_quorum: usize) -> Partition {
        let quorum = n / 2 + 1;
        let mut order: Vec<usize> = (0..n).collect();
        // Fisher-Yates with our own rng, so the split depends only on the seed.
        for i in (1..n).rev() {
            order.swap(i, rng.gen_range(0..=i));
        }
        let mut group = vec![0u8; n];
        match rng.gen_range(0..10) {
            0..=3 => group[order[0]] = 1,
            4..=8 => {
                let small = rng.gen_range(1..quorum);
                for &m in &order[..small] {
                    group[m] = 1;
                }
            }
            _ => {
                for (i, &m) in order.iter().enumerate() {
                    group[m] = (i % 3) as u8;
                }
            }
        }
        Partition::new(epoch, group, commit_quorum)
    }

    pub fn describe(&self) -> String {
        let mut groups: BTreeMap<u8, Vec<usize>> = BTreeMap::new();
        for (m, g) in self.group.iter().enumerate() {
            groups.entry(*g).or_default().push(m + 1);
        }
        let parts: Vec<String> = groups.values().map(|ms| format!("{ms:?}")).collect();
        parts.join(" | ")
    }
}

pub struct Net {
    pub cfg: NetConfig,
    pub partition: Option<Partition>,
    pub epochs: u64,
    pub in_flight: usize,
    /// Arrival time of the last message on each client link (client, member, to_member), so
    /// that a later message never overtakes an earlier one.
    fifo: BTreeMap<(usize, usize, bool), Time>,
    pub sent: u64,
    pub lost: u64,
    pub duplicated: u64,
}

impl Net {
    pub fn new(cfg: NetConfig) -> Net {
        Net {
            cfg,
            partition: None,
            epochs: 0,
            in_flight: 0,
            fifo: BTreeMap::new(),
            sent: 0,
            lost: 0,
            duplicated: 0,
        }
    }

    pub fn connected(&self, a: usize, b: usize) -> bool {
        self.partition
            .as_ref()
            .is_none_or(|p| p.group[a] == p.group[b])
    }

    /// The delays (0, 1 or 2 copies) after which a peer message from `a` to `b` arrives.
    pub fn plan_peer(&mut self, rng: &mut StdRng, a: usize, b: usize) -> Vec<Time> {
        self.sent += 1;
        if !self.connected(a, b) || self.in_flight >= MAX_IN_FLIGHT || rng.gen_bool(self.cfg.loss) {
            self.lost += 1;
            return Vec::new();
        }
        let mut copies = vec![rng.gen_range(self.cfg.min_delay..=self.cfg.max_delay)];
        if rng.gen_bool(self.cfg.dup) {
            self.duplicated += 1;
            copies.push(rng.gen_range(self.cfg.min_delay..=self.cfg.max_delay * 2));
        }
        self.in_flight += copies.len();
        copies
    }

    /// When a message on a client link arrives, or `None` if it is lost. FIFO per direction.
    pub fn plan_client(
        &mut self,
        rng: &mut StdRng,
        now: Time,
        client: usize,
        member: usize,
        to_member: bool,
    ) -> Option<Time> {
        if rng.gen_bool(self.cfg.client_loss) {
            return None;
        }
        let delay = rng.gen_range(self.cfg.client_min_delay..=self.cfg.client_max_delay);
        let last = self.fifo.entry((client, member, to_member)).or_insert(0);
        let at = (now + delay).max(*last + 1);
        *last = at;
        Some(at)
    }

    /// The minority partition `member` is in right now, if any: a proposal it makes cannot
    /// commit before that partition heals.
    pub fn minority_epoch(&self, member: usize) -> Option<u64> {
        self.partition
            .as_ref()
            .filter(|p| p.minority[member])
            .map(|p| p.epoch)
    }
}
