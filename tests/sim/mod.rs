//! A deterministic simulation of a ringkeeper ensemble: 3 or 5 members in one thread, each the
//! real sans-IO core (`consensus::Consensus` around raft-rs, `machine::Machine`) inside a
//! simulated shell that mirrors `server::sequencer` (persist, report persisted, apply
//! committed), with a simulated network (`net`), disks (`disk`) and clock (`world`), a
//! randomized client workload (`client`), and history checks at the end (`checker`, against
//! an independent model of the tree in `model`).
//!
//! One seed decides everything: the configuration (member count, network quality, disk speed,
//! which faults), the fault schedule and the workload. A run has two phases: faults (crashes,
//! torn writes, partitions, lossy links, wiped disks, and on half the 5-member seeds the
//! leader changing who votes, joint changes included) while clients write and read after a
//! sync, then settling (everything healed and restarted) until every member has applied the
//! same last index; then the checks. Members that fell behind a compacted log catch up from a
//! snapshot the leader streams (`snap`).

pub mod checker;
pub mod client;
pub mod disk;
pub mod member;
pub mod model;
pub mod net;
pub mod snap;
pub mod world;

use raft::eraftpb::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use checker::Checker;
use client::{Client, Reply, Request, SyncRequest};
use disk::Held;
use member::Member;
use net::{Net, NetConfig, Partition};
use world::{Queue, Time, Trace, MS, SEC};

/// What kind of run: the CI default, or a scenario for work in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// Short runs, faults of every kind, a log that stays short (members that fall behind,
    /// wiped ones included, catch up from the leader's log).
    Default,
    /// Long outages under a long workload: a member returns more than 1024 entries behind a
    /// leader whose in-memory log is compacted (`Consensus::applied`), so it catches up from
    /// a snapshot the leader streams (`snap`), as do wiped members
    /// (`RK_SIM_PROFILE=lagging`; CI runs a few seeds of it too).
    Lagging,
}

impl Profile {
    pub fn from_env() -> Profile {
        match std::env::var("RK_SIM_PROFILE").as_deref() {
            Err(_) | Ok("") | Ok("default") => Profile::Default,
            Ok("lagging") => Profile::Lagging,
            Ok(other) => panic!("RK_SIM_PROFILE={other}: known profiles are default, lagging"),
        }
    }
}

/// Everything a seed decides before the run starts.
#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    pub members: usize,
    pub clients: usize,
    pub net: NetConfig,
    /// Latency of one sync (write + fdatasync): uniform in [min, max] µs.
    pub disk_min: Time,
    pub disk_max: Time,
    /// Each member's tick period is TICK_MS ± this.
    pub tick_jitter: Time,
    /// How long faults are injected (and clients start new requests).
    pub fault_phase: Time,
    /// Time between fault decisions: uniform in [min, max].
    pub fault_gap: (Time, Time),
    /// How long a crashed member stays down: uniform in [min, max].
    pub outage: (Time, Time),
    /// Members down at once at most (a power loss of everyone ignores it).
    pub max_down: usize,
    /// A crash may leave a prefix of the sync in flight on disk.
    pub torn_writes: bool,
    pub partitions: bool,
    /// All members may lose power at once (tests that acknowledged writes are durable on a
    /// quorum, not just in memory).
    pub power_loss: bool,
    /// Each member's wall clock offset (ms), for the batch timestamps a leader stamps.
    pub clock_skew_ms: Vec<i64>,
    /// Requests per client at most.
    pub ops_per_client: u32,
    /// A member may lose its data dir (log, hard state, snapshots) and restart empty; only
    /// while the others hold everything it could have acknowledged (see `Sim::wipe_safe`).
    pub wipes: bool,
    /// The leader changes who votes now and then (3 to all members; the others observe):
    /// raft configuration changes, joint ones included, under every other fault.
    pub reconfigs: bool,
}

/// Fewest voters a configuration change leaves (see `Sim::reconfigure`).
pub const MIN_VOTERS: usize = 3;

impl Config {
    /// The configuration of `seed`: even seeds run 3 members, odd seeds 5.
    pub fn from_seed(seed: u64, profile: Profile, rng: &mut StdRng) -> Config {
        let members = if seed % 2 == 0 { 3 } else { 5 };
        let disk_min = rng.gen_range(100..2 * MS);
        let disk_max = disk_min + [MS, 5 * MS, 40 * MS][rng.gen_range(0..3)];
        let mut cfg = Config {
            seed,
            members,
            clients: rng.gen_range(2..=5),
            net: NetConfig::random(rng),
            disk_min,
            disk_max,
            tick_jitter: rng.gen_range(0..10 * MS),
            fault_phase: rng.gen_range(4 * SEC..10 * SEC),
            fault_gap: (100 * MS, rng.gen_range(500 * MS..3 * SEC)),
            outage: (100 * MS, 3 * SEC),
            max_down: if rng.gen_bool(0.3) {
                (members - 1) / 2
            } else {
                1
            },
            torn_writes: rng.gen_bool(0.7),
            partitions: rng.gen_bool(0.8),
            power_loss: rng.gen_bool(0.2),
            clock_skew_ms: (0..members).map(|_| rng.gen_range(-2_000..2_000)).collect(),
            ops_per_client: rng.gen_range(20..80),
            wipes: false,
            reconfigs: false,
        };
        if profile == Profile::Lagging {
            cfg.fault_phase = rng.gen_range(60 * SEC..90 * SEC);
            cfg.outage = (15 * SEC, 40 * SEC);
            cfg.ops_per_client = rng.gen_range(1_000..3_000);
            // Enough load that a member down for the outage misses more than raft keeps.
            cfg.clients = rng.gen_range(4..=8);
        }
        // Drawn last, so that the draws above keep their meaning across versions.
        cfg.wipes = rng.gen_bool(0.4);
        cfg.reconfigs = members > MIN_VOTERS && rng.gen_bool(0.5);
        cfg
    }
}

/// Everything that can happen.
pub enum Event {
    /// A member's raft clock ticks (`life` is the incarnation that scheduled it).
    Tick {
        m: usize,
        life: u32,
    },
    /// A raft message arrives.
    Peer {
        from: usize,
        to: usize,
        msg: Message,
    },
    /// A leader seals the requests gathered so far into one proposal.
    Flush {
        m: usize,
        life: u32,
    },
    /// A disk sync completes.
    DiskDone {
        m: usize,
        life: u32,
        sync: u64,
    },
    /// A client request arrives at a member.
    Request {
        m: usize,
        req: Request,
    },
    /// A client's sync (then read) arrives at a member.
    Sync {
        m: usize,
        req: SyncRequest,
    },
    /// A leader's snapshot stream (the encoded state, then the raft message) arrives.
    SnapshotArrives {
        from: usize,
        to: usize,
        data: Vec<u8>,
        msg: Box<Message>,
    },
    /// The sender's stream ended: flushed (`ok`), or it broke.
    SnapshotSent {
        m: usize,
        life: u32,
        to: u64,
        ok: bool,
    },
    /// A received snapshot is decoded and on disk (sequencer `SnapshotReceived`).
    SnapshotStored {
        m: usize,
        life: u32,
        stored: Box<snap::Received>,
    },
    /// A member's reply arrives at a client.
    Reply {
        client: usize,
        from: usize,
        reply: Reply,
    },
    /// A client's timer (think time or request timeout); stale unless `token` is current.
    Wake {
        client: usize,
        token: u64,
    },
    /// Time to decide on the next fault.
    Fault,
    Restart {
        m: usize,
    },
    /// The partition of this epoch heals.
    Heal {
        epoch: u64,
    },
    /// The fault phase ends.
    Settle,
    /// While settling: has everyone converged?
    Probe,
}

/// What a run reports when it passes.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub entries: u64,
    pub commands: usize,
    pub acks: usize,
    /// Retries answered from the idempotency record.
    pub repeats: usize,
    pub leader_changes: u64,
    /// Proposals made by a leader cut off in a minority (none may be acknowledged there).
    pub minority_proposals: u64,
    pub crashes: u64,
    pub power_losses: u64,
    pub torn: u64,
    pub overwritten: u64,
    pub partitions: u64,
    /// Snapshots streamed by leaders / installed by raft on a member.
    pub snapshots_sent: u64,
    pub snapshots_installed: u64,
    /// Members restarted with an empty data dir.
    pub wipes: u64,
    /// Configuration changes proposed (who votes; see `Sim::reconfigure`).
    pub reconfigs: u64,
    /// Syncs answered (each followed by a read the checker verifies).
    pub reads: u64,
    pub virtual_ms: u64,
    pub events: u64,
    pub fingerprint: u64,
}

/// A failed seed: what went wrong and what happened just before.
pub struct Failure {
    pub seed: u64,
    pub profile: Profile,
    pub members: usize,
    pub message: String,
    pub trace: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "seed {} ({} members) failed: {}",
            self.seed, self.members, self.message
        )?;
        let profile = match self.profile {
            Profile::Default => String::new(),
            Profile::Lagging => "RK_SIM_PROFILE=lagging ".into(),
        };
        writeln!(
            f,
            "replay: {profile}RK_SIM_SEED={} cargo test --release --test simulation \
             (RK_SIM_TRACE=1 prints every step)",
            self.seed
        )?;
        writeln!(f, "last events:")?;
        write!(f, "{}", self.trace)
    }
}

/// After the fault phase, convergence must follow within this much virtual time.
const SETTLE_LIMIT: Time = 60 * SEC;

pub struct Sim {
    pub cfg: Config,
    pub rng: StdRng,
    pub q: Queue<Event>,
    pub net: Net,
    pub members: Vec<Member>,
    pub clients: Vec<Client>,
    pub checker: Checker,
    pub trace: Trace,
    pub settling: bool,
    pub converged: bool,
    pub crashes: u64,
    pub power_losses: u64,
    pub leader_changes: u64,
    pub minority_proposals: u64,
    pub events: u64,
    pub snapshots_sent: u64,
    pub snapshots_installed: u64,
    pub reconfigs: u64,
    /// Members down for a wipe, and how many more times the restart may wait for it to be
    /// safe before it restarts with its disk.
    pub wipe_pending: Vec<Option<u32>>,
}

/// How often a pending wipe checks whether it is safe yet, and how many times.
const WIPE_RETRY: Time = 100 * MS;
const WIPE_TRIES: u32 = 50;

/// Runs one seed to the end and checks its history.
pub fn run_seed(seed: u64, profile: Profile) -> Result<Summary, Failure> {
    let echo = std::env::var("RK_SIM_TRACE").is_ok_and(|v| v == "1");
    let mut rng = StdRng::seed_from_u64(seed);
    let cfg = Config::from_seed(seed, profile, &mut rng);
    if echo {
        eprintln!("{cfg:#?}");
    }
    let members = cfg.members;
    let mut sim = Sim::new(cfg, rng, echo);
    // raft-rs and the machine may panic on a broken invariant: that is a finding too.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.run()));
    let message = match result {
        Ok(Ok(summary)) => return Ok(summary),
        Ok(Err(message)) => message,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            format!("panicked: {what}")
        }
    };
    Err(Failure {
        seed,
        profile,
        members,
        message,
        trace: sim.trace.tail(),
    })
}

impl Sim {
    fn new(cfg: Config, rng: StdRng, echo: bool) -> Sim {
        let members: Vec<Member> = (0..cfg.members)
            .map(|m| Member::new(m as u64 + 1))
            .collect();
        let wipe_pending = vec![None; members.len()];
        let clients = (0..cfg.clients)
            .map(|c| Client::new(c, cfg.ops_per_client))
            .collect();
        Sim {
            net: Net::new(cfg.net.clone()),
            cfg,
            rng,
            q: Queue::new(),
            members,
            clients,
            checker: Checker::default(),
            trace: Trace::new(40, echo),
            settling: false,
            converged: false,
            crashes: 0,
            power_losses: 0,
            leader_changes: 0,
            minority_proposals: 0,
            events: 0,
            snapshots_sent: 0,
            snapshots_installed: 0,
            reconfigs: 0,
            wipe_pending,
        }
    }

    /// Trace a line about client traffic.
    pub fn note(&mut self, line: String) {
        let now = self.q.now();
        self.trace.note(now, line);
    }

    /// Trace a line about the ensemble (faults, restarts, leaders).
    pub fn note_major(&mut self, line: String) {
        let now = self.q.now();
        self.trace.note_major(now, line);
    }

    fn run(&mut self) -> Result<Summary, String> {
        for m in 0..self.members.len() {
            self.start_member(m)?;
        }
        for c in 0..self.clients.len() {
            let at = self.rng.gen_range(0..50 * MS);
            self.q.after(
                at,
                Event::Wake {
                    client: c,
                    token: 0,
                },
            );
        }
        let first_fault = self
            .rng
            .gen_range(self.cfg.fault_gap.0..=self.cfg.fault_gap.1);
        self.q.after(first_fault, Event::Fault);
        self.q.at(self.cfg.fault_phase, Event::Settle);
        let deadline = self.cfg.fault_phase + SETTLE_LIMIT;
        while let Some(event) = self.q.pop() {
            self.events += 1;
            if self.q.now() > deadline {
                return Err(self.stuck());
            }
            self.handle(event)?;
            if self.converged {
                break;
            }
        }
        if !self.converged {
            return Err("the event queue ran dry before the members converged".into());
        }
        let repeats = self.checker.final_checks(&self.members)?;
        Ok(Summary {
            entries: self.checker.last_index(),
            commands: self.checker.commands.len(),
            acks: self.checker.acks.len(),
            repeats,
            leader_changes: self.leader_changes,
            minority_proposals: self.minority_proposals,
            crashes: self.crashes,
            power_losses: self.power_losses,
            torn: self.members.iter().map(|m| m.disk.torn).sum(),
            overwritten: self.members.iter().map(|m| m.disk.overwritten).sum(),
            partitions: self.net.epochs,
            snapshots_sent: self.snapshots_sent,
            snapshots_installed: self.snapshots_installed,
            reconfigs: self.reconfigs,
            wipes: self.members.iter().map(|m| m.disk.wipes).sum(),
            reads: self.checker.answers.len() as u64,
            virtual_ms: self.q.now() / MS,
            events: self.events,
            fingerprint: self.trace.fingerprint(),
        })
    }

    fn handle(&mut self, event: Event) -> Result<(), String> {
        // The fingerprint covers which event ran when; replays must match it exactly.
        self.trace.mix(self.q.now());
        match event {
            Event::Tick { m, life } => {
                self.trace.mix(1 << 32 | m as u64);
                self.on_tick(m, life)
            }
            Event::Peer { from, to, msg } => {
                self.trace.mix(2 << 32 | (from as u64) << 8 | to as u64);
                self.trace.mix(msg.msg_type as u64);
                self.on_peer(from, to, msg)
            }
            Event::Flush { m, life } => {
                self.trace.mix(3 << 32 | m as u64);
                self.on_flush(m, life)
            }
            Event::DiskDone { m, life, sync } => {
                self.trace.mix(4 << 32 | m as u64);
                self.on_disk_done(m, life, sync)
            }
            Event::Request { m, req } => {
                self.trace.mix(5 << 32 | m as u64);
                self.trace.mix(req.cmd.origin);
                self.on_request(m, req)
            }
            Event::Reply {
                client,
                from,
                reply,
            } => {
                self.trace.mix(6 << 32 | client as u64);
                self.on_reply(client, from, reply);
                Ok(())
            }
            Event::Wake { client, token } => {
                self.trace.mix(7 << 32 | client as u64);
                self.on_wake(client, token);
                Ok(())
            }
            Event::Fault => {
                self.trace.mix(8 << 32);
                self.fault()
            }
            Event::Restart { m } => {
                self.trace.mix(9 << 32 | m as u64);
                if self.members[m].node.is_none() {
                    self.restart(m)?;
                }
                Ok(())
            }
            Event::Sync { m, req } => {
                self.trace.mix(13 << 32 | m as u64);
                self.trace.mix(req.attempt as u64);
                self.on_sync(m, req)
            }
            Event::SnapshotArrives {
                from,
                to,
                data,
                msg,
            } => {
                self.trace.mix(14 << 32 | (from as u64) << 8 | to as u64);
                self.on_snapshot_arrives(from, to, data, *msg)
            }
            Event::SnapshotSent { m, life, to, ok } => {
                self.trace.mix(15 << 32 | (m as u64) << 8 | to);
                self.on_snapshot_sent(m, life, to, ok)
            }
            Event::SnapshotStored { m, life, stored } => {
                self.trace.mix(16 << 32 | m as u64);
                self.on_snapshot_stored(m, life, *stored)
            }
            Event::Heal { epoch } => {
                self.trace.mix(10 << 32 | epoch);
                if self
                    .net
                    .partition
                    .as_ref()
                    .is_some_and(|p| p.epoch == epoch)
                {
                    self.heal();
                }
                Ok(())
            }
            Event::Settle => {
                self.trace.mix(11 << 32);
                self.settle()
            }
            Event::Probe => {
                self.trace.mix(12 << 32);
                if self.all_converged() {
                    self.converged = true;
                } else {
                    self.q.after(50 * MS, Event::Probe);
                }
                Ok(())
            }
        }
    }

    /// One fault decision; the next one is scheduled while the fault phase lasts.
    fn fault(&mut self) -> Result<(), String> {
        if self.settling {
            return Ok(());
        }
        let n = self.members.len();
        let down = self.members.iter().filter(|m| m.node.is_none()).count();
        match self.rng.gen_range(0..100) {
            0..=39 if down < self.cfg.max_down => {
                let up: Vec<usize> = (0..n).filter(|&m| self.members[m].node.is_some()).collect();
                let m = up[self.rng.gen_range(0..up.len())];
                self.crash(m);
                let back = self.rng.gen_range(self.cfg.outage.0..=self.cfg.outage.1);
                self.q.after(back, Event::Restart { m });
            }
            40..=69 if self.cfg.partitions && self.net.partition.is_none() => {
                self.net.epochs += 1;
                // With changing voters, only a group too small for any configuration's
                // quorum is sure not to commit.
                let quorum = if self.cfg.reconfigs {
                    MIN_VOTERS / 2 + 1
                } else {
                    n / 2 + 1
                };
                let p = Partition::random(&mut self.rng, self.net.epochs, n, quorum);
                self.note_major(format!("partition {}: {}", p.epoch, p.describe()));
                let heal = self.rng.gen_range(200 * MS..4 * SEC);
                self.q.after(heal, Event::Heal { epoch: p.epoch });
                self.net.partition = Some(p);
            }
            73..=84 if self.cfg.wipes && down < self.cfg.max_down => {
                // The disk goes with the crash; whether it is safe to lose is decided at the
                // restart (see `wipe_safe`).
                let up: Vec<usize> = (0..n).filter(|&m| self.members[m].node.is_some()).collect();
                let m = up[self.rng.gen_range(0..up.len())];
                self.crash(m);
                self.wipe_pending[m] = Some(WIPE_TRIES);
                let back = self.rng.gen_range(self.cfg.outage.0..=self.cfg.outage.1);
                self.q.after(back, Event::Restart { m });
            }
            85..=99 if self.cfg.reconfigs => self.reconfigure()?,
            70..=72 if self.cfg.power_loss => {
                self.note_major("power loss: every member crashes".into());
                self.power_losses += 1;
                for m in 0..n {
                    if self.members[m].node.is_some() {
                        self.crash(m);
                        let back = self.rng.gen_range(50 * MS..SEC);
                        self.q.after(back, Event::Restart { m });
                    }
                }
            }
            _ => {}
        }
        let gap = self
            .rng
            .gen_range(self.cfg.fault_gap.0..=self.cfg.fault_gap.1);
        self.q.after(gap, Event::Fault);
        Ok(())
    }

    /// A member comes back: with an empty disk if a wipe is pending and safe now; if it is
    /// not safe yet, it stays down a while longer, and in the end restarts with its disk.
    fn restart(&mut self, m: usize) -> Result<(), String> {
        if let Some(tries) = self.wipe_pending[m] {
            match self.wipe_safe(m) {
                Ok(()) => {
                    self.wipe_pending[m] = None;
                    self.members[m].disk.wipe();
                    let id = self.members[m].id;
                    self.note_major(format!("member {id} lost its data dir (wiped)"));
                }
                Err(why) if tries > 0 && !self.settling => {
                    self.wipe_pending[m] = Some(tries - 1);
                    if tries == WIPE_TRIES || self.trace.echo() {
                        let id = self.members[m].id;
                        self.note_major(format!("member {id}: wipe waits ({why})"));
                    }
                    self.q.after(WIPE_RETRY, Event::Restart { m });
                    return Ok(());
                }
                Err(why) => {
                    self.wipe_pending[m] = None;
                    let id = self.members[m].id;
                    self.note_major(format!("member {id}: wipe abandoned ({why})"));
                }
            }
        }
        self.start_member(m)
    }

    /// Whether member `m` (down) may lose its disk without the ensemble losing anything: raft
    /// assumes durable state, so a wipe takes back `m`'s acknowledgements and its votes.
    ///
    /// `m` acknowledged only entries on its disk, so up to its durable last index K; one of
    /// those that was (or will be) committed is in the current leader's log at the same
    /// index. So it is safe when every other member is up and connected, one leader has been
    /// stable for a while in a term at least as new as `m`'s (no candidate of a term `m` may
    /// have voted in is left, and no older leader can still count an old acknowledgement),
    /// and every other member durably holds the leader's log up to K: then the others are a
    /// quorum with all of it even if one more member fails later.
    pub fn wipe_safe(&self, m: usize) -> Result<(), &'static str> {
        if self.net.partition.is_some() {
            return Err("a partition");
        }
        let others: Vec<usize> = (0..self.members.len()).filter(|&j| j != m).collect();
        let mut leader = None;
        for &j in &others {
            let Some(node) = &self.members[j].node else {
                return Err("another member is down");
            };
            if node.consensus.is_leader() {
                leader = Some(j);
            }
        }
        let Some(l) = leader else {
            return Err("no leader");
        };
        let lnode = self.members[l].node.as_ref().expect("up");
        let (lid, term) = (self.members[l].id, lnode.consensus.term());
        if self.q.now() < lnode.role_since() + 2 * SEC {
            return Err("the leader is new");
        }
        let mine = &self.members[m].disk.durable;
        if mine.hard_state.is_some_and(|(t, _, _)| t > term) {
            return Err("the member was in a newer term");
        }
        let k = mine
            .last()
            .map_or(0, |(i, _)| i)
            .min(lnode.consensus.last_index());
        let want = self.members[l].disk.durable.term_at(k);
        if !matches!(want, Some(Held::Term(_))) && k > 0 {
            return Err("the leader's log is not durable up to the member's");
        }
        for &j in &others {
            let node = self.members[j].node.as_ref().expect("up");
            if node.consensus.leader_id() != Some(lid) || node.consensus.term() != term {
                return Err("a member follows no leader or another one");
            }
            if k > 0 && self.members[j].disk.durable.term_at(k) != want {
                return Err("a member lacks part of the leader's log");
            }
        }
        Ok(())
    }

    fn heal(&mut self) {
        if let Some(p) = self.net.partition.take() {
            self.note_major(format!("partition {} heals", p.epoch));
        }
    }

    /// End of the fault phase: heal, restart everyone, let clients finish what they started.
    fn settle(&mut self) -> Result<(), String> {
        self.settling = true;
        self.note_major("settling: faults stop, clients finish".into());
        self.heal();
        // Members waiting for a safe wipe last, in case the others make it safe.
        let (waiting, down): (Vec<usize>, Vec<usize>) = (0..self.members.len())
            .filter(|&m| self.members[m].node.is_none())
            .partition(|&m| self.wipe_pending[m].is_some());
        for m in down.into_iter().chain(waiting) {
            self.restart(m)?;
        }
        for c in &mut self.clients {
            c.stopping = true;
        }
        self.q.after(50 * MS, Event::Probe);
        Ok(())
    }

    /// Every member up and at the leader's last index, every disk idle, every client done.
    fn all_converged(&self) -> bool {
        if self.clients.iter().any(|c| c.busy()) {
            return false;
        }
        let mut leader_last = None;
        for m in &self.members {
            let Some(node) = &m.node else { return false };
            if node.consensus.is_leader() {
                leader_last = Some(node.consensus.last_index());
            }
        }
        let Some(last) = leader_last else {
            return false;
        };
        self.members.iter().all(|m| {
            let node = m.node.as_ref().expect("checked above");
            m.disk.idle()
                && node.applied_index == last
                && node.consensus.last_index() == last
                && node.is_quiet()
                // A joint configuration is left by itself.
                && !node.consensus.is_joint()
        })
    }

    /// Why the run did not converge, member by member.
    fn stuck(&self) -> String {
        let mut s = format!(
            "no convergence {}s after the fault phase ended (liveness):",
            SETTLE_LIMIT / SEC
        );
        for m in &self.members {
            match &m.node {
                None => s.push_str(&format!(" [{} down]", m.id)),
                Some(n) => s.push_str(&format!(
                    " [{}: term {} leader {:?} last {} commit {} applied {} disk backlog {}]",
                    m.id,
                    n.consensus.term(),
                    n.consensus.leader_id(),
                    n.consensus.last_index(),
                    n.consensus.commit_index(),
                    n.applied_index,
                    m.disk.backlog()
                )),
            }
        }
        for c in &self.clients {
            if c.busy() {
                s.push_str(&format!(" [client {} busy]", c.id));
            }
        }
        s
    }
}
