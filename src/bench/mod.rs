//! `ringkeeper bench`: a load generator that speaks the ZooKeeper wire protocol, so the same run
//! can target ringkeeper or Apache ZooKeeper.
//!
//! Sessions are spread over `--threads` glommio executors. Each session has a sender and a
//! receiver task on one connection. Closed loop: at most `--depth` requests in flight per
//! session, the next sent as soon as a reply frees a slot. Open loop (`--rate`): requests are
//! sent on a fixed schedule whatever the replies do, and latency is measured from each
//! request's intended start, so queueing inside the server is not hidden (coordinated
//! omission).
//!
//! Two workloads coordinate several sessions: `watch` (watch fan-out: `--sessions` watchers hold
//! a data watch on one node, one extra session sets it, and a round's latency is the time from
//! the write's send until the last watcher has its event; watchers re-arm and the next round
//! starts once all have) and `lock` (the ephemeral-sequential lock recipe: create
//! EPHEMERAL_SEQUENTIAL under the lock node, getChildren, hold the lock if lowest, else
//! exists-watch the predecessor; hold `--hold-us`, delete). Every workload names a primary op
//! (`primary_op`) whose figures scripts should read from the report's `primary` entry.

mod client;
mod report;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_lite::io::AsyncWriteExt;
use glommio::{LocalExecutorBuilder, Placement};

use crate::proto::jute::Reader;
use crate::proto::records::Request;
use crate::proto::types::{opcode, Acl, CreateRequest, DeleteRequest, ErrorCode, SetDataRequest};
use crate::txn::WriteOp;
pub use report::{OpReport, Report};

/// Requests one session may have in flight in open-loop mode before it stops sending (a
/// server that stopped answering must not make the bench eat all memory).
const OPEN_LOOP_MAX_INFLIGHT: usize = 100_000;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// create of new persistent nodes
    Create,
    /// create of persistent sequential nodes under one parent
    CreateSeq,
    /// setData on a key space of pre-created nodes
    Set,
    /// getData on a key space of pre-created nodes
    Get,
    /// exists on a key space of pre-created nodes
    Exists,
    /// getChildren on a parent with --width children
    Children,
    /// delete of pre-created nodes (--keys per session)
    Delete,
    /// multi of --multi-ops creates
    Multi,
    /// getData/setData mix with --read-ratio reads
    Mixed,
    /// connect and close a session, repeatedly
    Churn,
    /// watch fan-out: --sessions watchers hold a data watch on one node, one more session sets
    /// it; a round is timed from the write's send until every watcher has its event
    Watch,
    /// lock contention: the ephemeral-sequential lock recipe with --sessions contenders
    Lock,
}

/// The workload's name as given on the command line.
pub fn workload_name(w: Workload) -> String {
    use clap::ValueEnum;
    w.to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_else(|| format!("{w:?}").to_lowercase())
}

/// The op whose throughput and latency are the workload's figures ("all": every op).
pub fn primary_op(w: Workload) -> &'static str {
    match w {
        Workload::Create | Workload::CreateSeq => "create",
        Workload::Set => "setData",
        Workload::Get => "getData",
        Workload::Exists => "exists",
        Workload::Children => "getChildren",
        Workload::Delete => "delete",
        Workload::Multi => "multi",
        Workload::Mixed => "all",
        Workload::Churn => "session",
        Workload::Watch => "watch-fanout",
        Workload::Lock => "acquire",
    }
}

/// Parameters that matter to this workload beyond sessions, depth, rate and data size.
fn workload_params(args: &BenchArgs) -> std::collections::BTreeMap<String, String> {
    let mut p = std::collections::BTreeMap::new();
    match args.workload {
        Workload::Set | Workload::Get | Workload::Exists => {
            p.insert("keys".into(), args.keys.to_string());
        }
        Workload::Mixed => {
            p.insert("keys".into(), args.keys.to_string());
            p.insert("read_ratio".into(), args.read_ratio.to_string());
        }
        Workload::Children => {
            p.insert("width".into(), args.width.to_string());
        }
        Workload::Delete => {
            p.insert("keys_per_session".into(), args.keys.to_string());
        }
        Workload::Multi => {
            p.insert("multi_ops".into(), args.multi_ops.to_string());
        }
        Workload::Watch => {
            p.insert("watchers".into(), args.sessions.to_string());
        }
        Workload::Lock => {
            p.insert("hold_us".into(), args.hold_us.to_string());
        }
        Workload::Create | Workload::CreateSeq | Workload::Churn => {}
    }
    p
}

#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// Servers to connect to; sessions are spread over them round-robin.
    #[arg(long, default_value = "127.0.0.1:2181", value_delimiter = ',')]
    pub servers: Vec<String>,
    #[arg(long, value_enum, default_value = "create")]
    pub workload: Workload,
    /// Concurrent sessions (one connection each).
    #[arg(long, default_value_t = 16)]
    pub sessions: usize,
    /// Requests in flight per session (closed loop).
    #[arg(long, default_value_t = 1)]
    pub depth: usize,
    /// Seconds of measurement (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Stop after this many measured operations in total instead of after --duration.
    #[arg(long)]
    pub ops: Option<u64>,
    /// Seconds of load before measurement starts (not counted).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Open loop: total operations per second, spread over the sessions.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Bytes of data per create/setData.
    #[arg(long, default_value_t = 100)]
    pub data_size: usize,
    /// Pre-created nodes for set/get/exists/mixed (shared), per session for delete.
    #[arg(long, default_value_t = 1000)]
    pub keys: usize,
    /// Children of the parent read by the children workload.
    #[arg(long, default_value_t = 1000)]
    pub width: usize,
    /// Operations per multi.
    #[arg(long, default_value_t = 5)]
    pub multi_ops: usize,
    /// Fraction of reads in the mixed workload.
    #[arg(long, default_value_t = 0.9)]
    pub read_ratio: f64,
    /// Executor threads driving the sessions.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Lock workload: microseconds a contender holds the lock before releasing it.
    #[arg(long, default_value_t = 100)]
    pub hold_us: u64,
    /// Watch workload: seconds a round (all watchers armed, then all events in) may take
    /// before the run is stopped as failed.
    #[arg(long, default_value_t = 10.0)]
    pub round_timeout: f64,
    /// Session timeout asked for, ms.
    #[arg(long, default_value_t = 30000)]
    pub session_timeout: i32,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bad server address {0:?}")]
    Address(String),
    #[error("set-up failed: {0}")]
    Setup(String),
    #[error("{0}")]
    Runtime(String),
}

/// What every session task shares with the others of the run.
struct Control {
    args: BenchArgs,
    root: String,
    data: Vec<u8>,
    /// Set once every session has connected (or failed to): connecting hundreds of sessions is
    /// neither warm-up nor measurement.
    clock: OnceLock<Clock>,
    /// Sessions that connected or gave up, out of `parties`.
    arrived: AtomicUsize,
    /// Sessions whose task has ended; when all have, the run ends (a dead server must not
    /// leave the clock running and thin out the ops/s figure).
    ended: AtomicUsize,
    parties: usize,
    stop: AtomicBool,
    /// Measured operations completed, all threads.
    done: AtomicU64,
    /// Operations sent, all threads (progress line).
    sent: AtomicU64,
    /// Watch workload: rounds' shared counters.
    fanout: FanOut,
}

/// Counts a session task as ended when dropped.
struct Ended<'a>(&'a Control);

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        self.0.ended.fetch_add(1, Ordering::SeqCst);
    }
}

struct Clock {
    start: Instant,
    measure_from: Instant,
    measure_until: Option<Instant>,
}

/// How long the run waits for every session to connect before it starts the clock anyway.
const CONNECT_WAIT: Duration = Duration::from_secs(60);

/// What the watch fan-out writer and its watchers share. Counts are cumulative over rounds,
/// so round `r` is complete when a count reaches `watchers * (r + 1)`.
#[derive(Default)]
struct FanOut {
    /// Watches armed (a getData with watch answered).
    armed: AtomicU64,
    /// Events received.
    fired: AtomicU64,
    /// The current round's write send time, ns since `Control::start`.
    send_ns: AtomicU64,
    /// The latest event arrival of the current round, ns since `Control::start`.
    last_event_ns: AtomicU64,
}

impl Control {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The run's clock; set before any session passes `connected`.
    fn clock(&self) -> &Clock {
        self.clock.get().expect("the clock starts before any load")
    }

    /// Whether an op started at `started` and finished at `now` is measured.
    fn in_window(&self, started: Instant, now: Instant) -> bool {
        let c = self.clock();
        started >= c.measure_from && c.measure_until.is_none_or(|until| now <= until)
    }

    fn nanos(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.clock().start).as_nanos() as u64
    }

    /// A session gave up connecting: the others need not wait for it.
    fn give_up(&self) {
        self.arrived.fetch_add(1, Ordering::SeqCst);
    }

    /// A session is connected: waits until the clock starts. False: the run is stopping.
    async fn connected(&self) -> bool {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        loop {
            if self.clock.get().is_some() {
                return true;
            }
            if self.stopping() {
                return false;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Run a benchmark and return its report (also printed unless the caller prints it).
pub fn run(args: BenchArgs) -> Result<Report, BenchError> {
    let servers = resolve(&args.servers)?;
    let run_id = format!("{:x}", rand::random::<u32>());
    let root = format!("/rkbench-{run_id}");
    let setup_args = args.clone();
    let setup_root = root.clone();
    let setup_server = servers[0];
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move { setup(setup_server, &setup_args, &setup_root).await })
        .map_err(|e| BenchError::Setup(e.to_string()))?
        .join()
        .map_err(|_| BenchError::Setup("set-up thread panicked".into()))??;

    let ctl = Arc::new(Control {
        data: vec![b'x'; args.data_size],
        root,
        clock: OnceLock::new(),
        arrived: AtomicUsize::new(0),
        ended: AtomicUsize::new(0),
        parties: args.sessions + usize::from(args.workload == Workload::Watch),
        stop: AtomicBool::new(false),
        done: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        fanout: FanOut::default(),
        args: args.clone(),
    });
    let results = Arc::new(Mutex::new(Vec::<report::Recorder>::new()));
    let threads = args.threads.clamp(1, args.sessions.max(1));
    let mut handles = Vec::new();
    for t in 0..threads {
        let ctl = ctl.clone();
        let results = results.clone();
        let servers = servers.clone();
        let handle = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("rk-bench-{t}"))
            .spawn(move || async move {
                let recorder = Rc::new(RefCell::new(report::Recorder::default()));
                let mut tasks = Vec::new();
                if t == 0 && ctl.args.workload == Workload::Watch {
                    let addr = servers[ctl.args.sessions % servers.len()];
                    tasks.push(glommio::spawn_local(watch_writer_task(
                        ctl.clone(),
                        recorder.clone(),
                        addr,
                    )));
                }
                for s in (t..ctl.args.sessions).step_by(threads) {
                    let addr = servers[s % servers.len()];
                    let task =
                        glommio::spawn_local(session_task(ctl.clone(), recorder.clone(), s, addr));
                    tasks.push(task);
                }
                for task in tasks {
                    task.await;
                }
                let recorder = Rc::try_unwrap(recorder)
                    .map(RefCell::into_inner)
                    .unwrap_or_default();
                results.lock().map(|mut r| r.push(recorder)).ok();
            })
            .map_err(|e| BenchError::Runtime(e.to_string()))?;
        handles.push(handle);
    }
    start_clock(&ctl);
    progress_and_stop(&ctl);
    for h in handles {
        h.join()
            .map_err(|_| BenchError::Runtime("bench thread panicked".into()))?;
    }
    let elapsed_end = Instant::now();
    let mut merged = report::Recorder::default();
    for r in results
        .lock()
        .map_err(|_| BenchError::Runtime("poisoned".into()))?
        .drain(..)
    {
        merged.merge(r);
    }
    let clock = ctl.clock();
    let measured = match clock.measure_until {
        Some(until) => until
            .min(elapsed_end)
            .saturating_duration_since(clock.measure_from),
        None => elapsed_end.saturating_duration_since(clock.measure_from),
    };
    Ok(merged.report(&args, measured))
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

fn resolve(servers: &[String]) -> Result<Vec<SocketAddr>, BenchError> {
    let mut out = Vec::new();
    for s in servers {
        let addr = s
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| BenchError::Address(s.clone()))?;
        out.push(addr);
    }
    if out.is_empty() {
        return Err(BenchError::Address(String::new()));
    }
    Ok(out)
}

/// Waits until every session has connected (or given up), at most `CONNECT_WAIT`, then
/// starts the warm-up and measurement clock.
fn start_clock(ctl: &Control) {
    let began = Instant::now();
    let mut last_print = began;
    loop {
        let arrived = ctl.arrived.load(Ordering::SeqCst);
        let now = Instant::now();
        if arrived >= ctl.parties || ctl.stopping() || now.duration_since(began) >= CONNECT_WAIT {
            break;
        }
        if !ctl.args.quiet && now.duration_since(last_print) >= Duration::from_secs(1) {
            last_print = now;
            eprint!("\rconnecting: {arrived} of {} sessions   ", ctl.parties);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let start = Instant::now();
    let warmup = if ctl.args.ops.is_some() {
        Duration::ZERO
    } else {
        secs(ctl.args.warmup)
    };
    let measure_from = start + warmup;
    let _ = ctl.clock.set(Clock {
        start,
        measure_from,
        measure_until: ctl
            .args
            .ops
            .is_none()
            .then(|| measure_from + secs(ctl.args.duration)),
    });
}

/// The main thread prints progress and decides when the run ends.
fn progress_and_stop(ctl: &Control) {
    let mut last_print = Instant::now();
    let clock = ctl.clock();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = Instant::now();
        let finished = match (clock.measure_until, ctl.args.ops) {
            (Some(until), _) => now >= until,
            (None, Some(ops)) => ctl.done.load(Ordering::Relaxed) >= ops,
            (None, None) => true,
        };
        if !ctl.args.quiet && now.duration_since(last_print) >= Duration::from_secs(1) {
            last_print = now;
            let phase = if now < clock.measure_from {
                "warm-up"
            } else {
                "measuring"
            };
            eprint!(
                "\r{phase}: {:>6.1}s  sent {:>10}  measured {:>10}   ",
                now.duration_since(clock.start).as_secs_f64(),
                ctl.sent.load(Ordering::Relaxed),
                ctl.done.load(Ordering::Relaxed)
            );
        }
        // A run failed by a session (`fail_run`), or whose sessions all ended, ends now.
        if finished || ctl.stopping() || ctl.ended.load(Ordering::SeqCst) >= ctl.parties {
            ctl.stop.store(true, Ordering::SeqCst);
            if !ctl.args.quiet {
                eprintln!();
            }
            return;
        }
    }
}

/// Creates the run's root and whatever the workload reads or deletes.
async fn setup(server: SocketAddr, args: &BenchArgs, root: &str) -> Result<(), BenchError> {
    let (mut stream, _) = client::connect(server, args.session_timeout)
        .await
        .map_err(|e| BenchError::Setup(format!("cannot connect to {server}: {e}")))?;
    let data = vec![b'x'; args.data_size];
    let mut paths = vec![root.to_string()];
    match args.workload {
        Workload::Set | Workload::Get | Workload::Exists | Workload::Mixed => {
            paths.push(format!("{root}/k"));
            paths.extend((0..args.keys).map(|k| format!("{root}/k/{k}")));
        }
        Workload::Children => {
            paths.push(format!("{root}/wide"));
            paths.extend((0..args.width).map(|k| format!("{root}/wide/c{k}")));
        }
        Workload::Delete => {
            paths.push(format!("{root}/d"));
            for s in 0..args.sessions {
                paths.push(format!("{root}/d/s{s}"));
                paths.extend((0..args.keys).map(|k| format!("{root}/d/s{s}/{k}")));
            }
        }
        Workload::CreateSeq => paths.push(format!("{root}/q")),
        Workload::Watch => paths.push(format!("{root}/w")),
        Workload::Lock => paths.push(format!("{root}/lock")),
        Workload::Create | Workload::Multi | Workload::Churn => {}
    }
    // Pipelined creates: ancestors come first in `paths`, and the server answers in order.
    let mut frames = Vec::new();
    let mut expect = 0usize;
    for (i, path) in paths.iter().enumerate() {
        create_request(path, &data, 0).encode(i as i32 + 1, &mut frames);
        expect += 1;
        if frames.len() > (256 << 10) || i + 1 == paths.len() {
            stream
                .write_all(&frames)
                .await
                .map_err(|e| BenchError::Setup(e.to_string()))?;
            frames.clear();
            while expect > 0 {
                let reply = client::read_reply(&mut stream)
                    .await
                    .map_err(|e| BenchError::Setup(e.to_string()))?;
                if reply.xid == -1 {
                    continue;
                }
                expect -= 1;
                if reply.err != 0 && reply.err != ErrorCode::NodeExists.code() {
                    return Err(BenchError::Setup(format!(
                        "create failed with error {}",
                        reply.err
                    )));
                }
            }
        }
    }
    client::close(&mut stream, i32::MAX - 1).await;
    Ok(())
}

fn create_request(path: &str, data: &[u8], flags: i32) -> Request {
    Request::Create {
        opcode: opcode::CREATE,
        req: CreateRequest {
            path: path.to_string(),
            data: Some(data.to_vec()),
            acl: Acl::open_unsafe(),
            flags,
            ttl: -1,
        },
    }
}

/// The next request of session `s`, its `n`th, and the name it is reported under.
fn next_op(ctl: &Control, s: usize, n: u64) -> (&'static str, Request) {
    let root = &ctl.root;
    let args = &ctl.args;
    let key =
        |n: u64| ((s as u64).wrapping_mul(7919).wrapping_add(n) % args.keys.max(1) as u64) as usize;
    match args.workload {
        Workload::Create => (
            "create",
            create_request(&format!("{root}/s{s}-{n}"), &ctl.data, 0),
        ),
        Workload::CreateSeq => (
            "create",
            create_request(&format!("{root}/q/n-"), &ctl.data, 2),
        ),
        Workload::Set => (
            "setData",
            set_request(&format!("{root}/k/{}", key(n)), &ctl.data),
        ),
        Workload::Get => (
            "getData",
            Request::GetData {
                path: format!("{root}/k/{}", key(n)),
                watch: false,
            },
        ),
        Workload::Exists => (
            "exists",
            Request::Exists {
                path: format!("{root}/k/{}", key(n)),
                watch: false,
            },
        ),
        Workload::Children => (
            "getChildren",
            Request::GetChildren {
                path: format!("{root}/wide"),
                watch: false,
            },
        ),
        Workload::Delete => (
            "delete",
            Request::Delete(DeleteRequest {
                path: format!("{root}/d/s{s}/{n}"),
                version: -1,
            }),
        ),
        Workload::Multi => {
            let ops = (0..args.multi_ops)
                .map(|i| {
                    let Request::Create { opcode, req } =
                        create_request(&format!("{root}/m{s}-{n}-{i}"), &ctl.data, 0)
                    else {
                        unreachable!("create_request builds a create")
                    };
                    WriteOp::Create { opcode, req }
                })
                .collect();
            ("multi", Request::Multi(ops))
        }
        Workload::Mixed => {
            let path = format!("{root}/k/{}", key(n));
            // A cheap deterministic spread of reads and writes.
            let r = (n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11) as f64 / (1u64 << 53) as f64;
            if r < args.read_ratio {
                ("getData", Request::GetData { path, watch: false })
            } else {
                ("setData", set_request(&path, &ctl.data))
            }
        }
        Workload::Churn | Workload::Watch | Workload::Lock => {
            unreachable!("{:?} sessions run their own tasks", args.workload)
        }
    }
}

fn set_request(path: &str, data: &[u8]) -> Request {
    Request::SetData(SetDataRequest {
        path: path.to_string(),
        data: Some(data.to_vec()),
        version: -1,
    })
}

/// How many requests session `s` may send in total (None: until stopped).
fn session_budget(ctl: &Control, s: usize) -> Option<u64> {
    let sessions = ctl.args.sessions.max(1) as u64;
    let from_ops = ctl
        .args
        .ops
        .map(|ops| ops / sessions + u64::from((s as u64) < ops % sessions));
    let from_keys = (ctl.args.workload == Workload::Delete).then_some(ctl.args.keys as u64);
    match (from_ops, from_keys) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn session_task(
    ctl: Arc<Control>,
    rec: Rc<RefCell<report::Recorder>>,
    s: usize,
    addr: SocketAddr,
) {
    let _ended = Ended(&ctl);
    match ctl.args.workload {
        Workload::Churn => return churn_task(ctl.clone(), rec, addr).await,
        Workload::Watch => return watcher_task(ctl.clone(), rec, addr).await,
        Workload::Lock => return lock_task(ctl.clone(), rec, addr).await,
        _ => {}
    }
    let Some(stream) = connect_session(&ctl, &rec, addr, None).await else {
        return;
    };
    let (mut rd, mut wr) = futures_lite::io::split(stream);
    let mut frames = client::FrameReader::default();
    let inflight: Rc<RefCell<VecDeque<(&'static str, Instant)>>> =
        Rc::new(RefCell::new(VecDeque::new()));
    let depth = ctl.args.depth.max(1);
    let slots = Rc::new(glommio::sync::Semaphore::new(depth as u64));
    let sender_done = Rc::new(std::cell::Cell::new(false));
    let budget = session_budget(&ctl, s);
    let open_loop_interval = ctl
        .args
        .rate
        .map(|r| Duration::from_secs_f64(ctl.args.sessions as f64 / r.max(1e-9)));

    let sender = {
        let (ctl, inflight, slots, sender_done, rec) = (
            ctl.clone(),
            inflight.clone(),
            slots.clone(),
            sender_done.clone(),
            rec.clone(),
        );
        glommio::spawn_local(async move {
            let mut n = 0u64;
            let mut next_at = Instant::now();
            let mut frame = Vec::with_capacity(256);
            loop {
                if ctl.stopping() || budget.is_some_and(|b| n >= b) {
                    break;
                }
                let intended = match open_loop_interval {
                    Some(interval) => {
                        let now = Instant::now();
                        if next_at > now {
                            glommio::timer::sleep(next_at - now).await;
                        }
                        let at = next_at;
                        next_at += interval;
                        if inflight.borrow().len() >= OPEN_LOOP_MAX_INFLIGHT {
                            rec.borrow_mut().dropped += 1;
                            continue;
                        }
                        at
                    }
                    None => {
                        if slots.acquire(1).await.is_err() {
                            break;
                        }
                        Instant::now()
                    }
                };
                let (name, req) = next_op(&ctl, s, n);
                n += 1;
                frame.clear();
                req.encode(n as i32, &mut frame);
                inflight.borrow_mut().push_back((name, intended));
                ctl.sent.fetch_add(1, Ordering::Relaxed);
                if wr.write_all(&frame).await.is_err() {
                    break;
                }
            }
            sender_done.set(true);
            wr
        })
    };

    loop {
        if sender_done.get() && inflight.borrow().is_empty() {
            break;
        }
        let reply = futures_lite::future::or(async { Some(frames.next(&mut rd).await) }, async {
            // Wake now and then to notice the sender finished with nothing in flight.
            glommio::timer::sleep(Duration::from_millis(50)).await;
            None
        })
        .await;
        let reply = match reply {
            None => continue,
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                if !inflight.borrow().is_empty() {
                    rec.borrow_mut()
                        .connect_error(&format!("connection lost: {e}"));
                }
                break;
            }
        };
        if reply.xid == -1 {
            continue;
        }
        let Some((name, intended)) = inflight.borrow_mut().pop_front() else {
            rec.borrow_mut()
                .connect_error("reply with nothing in flight");
            break;
        };
        slots.signal(1);
        let now = Instant::now();
        if ctl.in_window(intended, now) {
            let err = reply_error(name, &reply);
            rec.borrow_mut()
                .record(name, now.duration_since(intended), err);
            ctl.done.fetch_add(1, Ordering::Relaxed);
        }
    }
    slots.close();
    let mut wr = sender.await;
    // Close the session so runs do not leave sessions behind to expire.
    let mut frame = Vec::new();
    Request::CloseSession.encode(i32::MAX, &mut frame);
    let _ = wr.write_all(&frame).await;
    let _ = futures_lite::future::or(async { frames.next(&mut rd).await.map(|_| ()) }, async {
        glommio::timer::sleep(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

/// The error an operation got, counting a failed multi (err 0 in the header) as its first
/// non-zero result.
fn reply_error(name: &str, reply: &client::Reply) -> Option<i32> {
    if reply.err != 0 {
        return Some(reply.err);
    }
    if name == "multi" && reply.body.len() >= 4 && reply.body[..4] == (-1i32).to_be_bytes() {
        // First result header has type -1: the multi failed.
        let code = reply
            .body
            .get(5..9)
            .map_or(-1, |b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        return Some(if code == 0 {
            ErrorCode::RuntimeInconsistency.code()
        } else {
            code
        });
    }
    None
}

/// Connects a session of the run and waits for the clock to start (every other session
/// connected). `fatal`: a failure to connect stops the whole run with that message.
async fn connect_session(
    ctl: &Control,
    rec: &RefCell<report::Recorder>,
    addr: SocketAddr,
    fatal: Option<&str>,
) -> Option<glommio::net::TcpStream> {
    match client::connect(addr, ctl.args.session_timeout).await {
        Ok((mut stream, _)) => {
            if ctl.connected().await {
                Some(stream)
            } else {
                client::close(&mut stream, i32::MAX).await;
                None
            }
        }
        Err(e) => {
            ctl.give_up();
            match fatal {
                Some(what) => fail_run(ctl, rec, &format!("{what} cannot connect: {e}")),
                None => rec.borrow_mut().connect_error(&e.to_string()),
            }
            None
        }
    }
}

async fn churn_task(ctl: Arc<Control>, rec: Rc<RefCell<report::Recorder>>, addr: SocketAddr) {
    // Every op here is a connect: nothing to wait for.
    if !ctl.connected().await {
        return;
    }
    while !ctl.stopping() {
        let started = Instant::now();
        match client::connect(addr, ctl.args.session_timeout).await {
            Ok((mut stream, _)) => {
                client::close(&mut stream, 1).await;
                let now = Instant::now();
                if ctl.in_window(started, now) {
                    rec.borrow_mut()
                        .record("session", now.duration_since(started), None);
                    ctl.done.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => rec.borrow_mut().connect_error(&e.to_string()),
        }
        ctl.sent.fetch_add(1, Ordering::Relaxed);
        if ctl
            .args
            .ops
            .is_some_and(|ops| ctl.done.load(Ordering::Relaxed) >= ops)
        {
            break;
        }
    }
}

/// The next reply or notification, checking the stop flag every 50 ms: `None` once the run is
/// stopping.
async fn next_reply(
    ctl: &Control,
    frames: &mut client::FrameReader,
    stream: &mut glommio::net::TcpStream,
) -> Option<std::io::Result<client::Reply>> {
    loop {
        if ctl.stopping() {
            return None;
        }
        let r = futures_lite::future::or(async { Some(frames.next(stream).await) }, async {
            glommio::timer::sleep(Duration::from_millis(50)).await;
            None
        })
        .await;
        if r.is_some() {
            return r;
        }
    }
}

/// Sends one request and waits for its reply, noting the paths of notifications that arrive
/// meanwhile. Records the op's latency under `name` (an error code in `ok_errors` counts as
/// an answer, not an error). `None`: stopped, or the connection failed (recorded).
#[allow(clippy::too_many_arguments)]
async fn call_noting(
    ctl: &Control,
    rec: &RefCell<report::Recorder>,
    stream: &mut glommio::net::TcpStream,
    frames: &mut client::FrameReader,
    xid: &mut i32,
    notified: &mut std::collections::HashSet<String>,
    name: &'static str,
    req: Request,
    ok_errors: &[i32],
) -> Option<client::Reply> {
    *xid += 1;
    let mut frame = Vec::with_capacity(128);
    req.encode(*xid, &mut frame);
    let started = Instant::now();
    if let Err(e) = stream.write_all(&frame).await {
        rec.borrow_mut()
            .connect_error(&format!("{name}: connection lost: {e}"));
        return None;
    }
    loop {
        match next_reply(ctl, frames, stream).await? {
            Err(e) => {
                rec.borrow_mut()
                    .connect_error(&format!("{name}: connection lost: {e}"));
                return None;
            }
            Ok(r) if r.xid == crate::proto::types::xid::NOTIFICATION => {
                if let Some((_, _, path)) = client::parse_notification(&r.body) {
                    notified.insert(path);
                }
            }
            Ok(r) if r.xid == *xid => {
                let now = Instant::now();
                if ctl.in_window(started, now) {
                    let err = (r.err != 0 && !ok_errors.contains(&r.err)).then_some(r.err);
                    rec.borrow_mut()
                        .record(name, now.duration_since(started), err);
                }
                return Some(r);
            }
            Ok(r) => {
                rec.borrow_mut()
                    .connect_error(&format!("{name}: reply with unexpected xid {}", r.xid));
                return None;
            }
        }
    }
}

/// Waits until `count` reaches `target`; false after `timeout` or when the run stops.
async fn wait_count(ctl: &Control, count: &AtomicU64, target: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if count.load(Ordering::SeqCst) >= target {
            return true;
        }
        if ctl.stopping() || Instant::now() > deadline {
            return false;
        }
        glommio::timer::sleep(Duration::from_micros(50)).await;
    }
}

/// Fails a coordinated run loudly: the failure is counted and every session stops.
fn fail_run(ctl: &Control, rec: &RefCell<report::Recorder>, msg: &str) {
    if !ctl.stopping() {
        eprintln!("ringkeeper bench: {msg}; stopping the run");
    }
    rec.borrow_mut().connect_error(msg);
    ctl.stop.store(true, Ordering::SeqCst);
}

/// One watcher of the watch fan-out: arm a data watch, wait for its event, repeat.
async fn watcher_task(ctl: Arc<Control>, rec: Rc<RefCell<report::Recorder>>, addr: SocketAddr) {
    let Some(mut stream) = connect_session(&ctl, &rec, addr, Some("a watcher")).await else {
        return;
    };
    let path = format!("{}/w", ctl.root);
    let mut frames = client::FrameReader::default();
    let mut notified = std::collections::HashSet::new();
    let mut xid = 0;
    let fan = &ctl.fanout;
    loop {
        let arm = Request::GetData {
            path: path.clone(),
            watch: true,
        };
        let Some(reply) = call_noting(
            &ctl,
            &rec,
            &mut stream,
            &mut frames,
            &mut xid,
            &mut notified,
            "getData(watch)",
            arm,
            &[],
        )
        .await
        else {
            if !ctl.stopping() {
                fail_run(&ctl, &rec, "a watcher lost its connection");
            }
            break;
        };
        if reply.err != 0 {
            fail_run(
                &ctl,
                &rec,
                &format!("watcher getData failed with error {}", reply.err),
            );
            break;
        }
        if !notified.is_empty() {
            fail_run(&ctl, &rec, "watcher got an event before the write");
            break;
        }
        fan.armed.fetch_add(1, Ordering::SeqCst);
        let event = match next_reply(&ctl, &mut frames, &mut stream).await {
            None => break,
            Some(Err(e)) => {
                fail_run(&ctl, &rec, &format!("a watcher lost its connection: {e}"));
                break;
            }
            Some(Ok(r)) if r.xid == crate::proto::types::xid::NOTIFICATION => r,
            Some(Ok(r)) => {
                let msg = format!("watcher got a reply with unexpected xid {}", r.xid);
                fail_run(&ctl, &rec, &msg);
                break;
            }
        };
        let now = Instant::now();
        fan.last_event_ns
            .fetch_max(ctl.nanos(now), Ordering::SeqCst);
        let sent = ctl.clock().start + Duration::from_nanos(fan.send_ns.load(Ordering::SeqCst));
        if ctl.in_window(sent, now) {
            rec.borrow_mut()
                .record("watch-event", now.duration_since(sent), None);
        }
        // 3: NodeDataChanged
        let kind = client::parse_notification(&event.body).map(|n| n.0);
        if kind != Some(3) {
            let msg = format!("watcher got event type {kind:?}, not NodeDataChanged");
            fail_run(&ctl, &rec, &msg);
        }
        fan.fired.fetch_add(1, Ordering::SeqCst);
    }
    client::close(&mut stream, i32::MAX).await;
}

/// The watch fan-out writer: once every watcher is armed, set the node and wait until every
/// watcher has its event; the round's latency runs from the send to the last event.
async fn watch_writer_task(
    ctl: Arc<Control>,
    rec: Rc<RefCell<report::Recorder>>,
    addr: SocketAddr,
) {
    let _ended = Ended(&ctl);
    let Some(mut stream) = connect_session(&ctl, &rec, addr, Some("the watch writer")).await else {
        return;
    };
    let path = format!("{}/w", ctl.root);
    let watchers = ctl.args.sessions as u64;
    let timeout = secs(ctl.args.round_timeout);
    let fan = &ctl.fanout;
    let mut frames = client::FrameReader::default();
    let mut notified = std::collections::HashSet::new();
    let mut xid = 0;
    let mut round = 0u64;
    while !ctl.stopping() {
        let target = watchers * (round + 1);
        if !wait_count(&ctl, &fan.armed, target, timeout).await {
            if !ctl.stopping() {
                let armed = fan.armed.load(Ordering::SeqCst) - watchers * round;
                fail_run(
                    &ctl,
                    &rec,
                    &format!(
                        "watch round {round}: only {armed} of {watchers} watchers armed after {:.1} s",
                        timeout.as_secs_f64()
                    ),
                );
            }
            break;
        }
        fan.last_event_ns.store(0, Ordering::SeqCst);
        let sent = Instant::now();
        fan.send_ns.store(ctl.nanos(sent), Ordering::SeqCst);
        ctl.sent.fetch_add(1, Ordering::Relaxed);
        let reply = call_noting(
            &ctl,
            &rec,
            &mut stream,
            &mut frames,
            &mut xid,
            &mut notified,
            "setData",
            set_request(&path, &ctl.data),
            &[],
        )
        .await;
        match reply {
            None => {
                if !ctl.stopping() {
                    fail_run(&ctl, &rec, "the watch writer lost its connection");
                }
                break;
            }
            Some(r) if r.err != 0 => {
                fail_run(
                    &ctl,
                    &rec,
                    &format!("watch writer's setData failed with error {}", r.err),
                );
                break;
            }
            Some(_) => {}
        }
        if !wait_count(&ctl, &fan.fired, target, timeout).await {
            if !ctl.stopping() {
                let fired = fan.fired.load(Ordering::SeqCst) - watchers * round;
                fail_run(
                    &ctl,
                    &rec,
                    &format!(
                        "watch round {round}: only {fired} of {watchers} events after {:.1} s",
                        timeout.as_secs_f64()
                    ),
                );
            }
            break;
        }
        let last =
            ctl.clock().start + Duration::from_nanos(fan.last_event_ns.load(Ordering::SeqCst));
        if ctl.in_window(sent, last) {
            rec.borrow_mut()
                .record("watch-fanout", last.saturating_duration_since(sent), None);
            ctl.done.fetch_add(1, Ordering::Relaxed);
        }
        round += 1;
    }
    client::close(&mut stream, i32::MAX).await;
}

/// One contender of the lock workload (the ZooKeeper lock recipe without herd effect).
async fn lock_task(ctl: Arc<Control>, rec: Rc<RefCell<report::Recorder>>, addr: SocketAddr) {
    let Some(mut stream) = connect_session(&ctl, &rec, addr, None).await else {
        return;
    };
    let dir = format!("{}/lock", ctl.root);
    let no_node = ErrorCode::NoNode.code();
    let mut frames = client::FrameReader::default();
    let mut notified = std::collections::HashSet::new();
    let mut xid = 0;
    let hold = Duration::from_micros(ctl.args.hold_us);
    macro_rules! call {
        ($name:expr, $req:expr, $ok:expr) => {
            call_noting(
                &ctl,
                &rec,
                &mut stream,
                &mut frames,
                &mut xid,
                &mut notified,
                $name,
                $req,
                $ok,
            )
            .await
        };
    }
    'attempts: while !ctl.stopping() {
        let started = Instant::now();
        notified.clear();
        ctl.sent.fetch_add(1, Ordering::Relaxed);
        // EPHEMERAL | SEQUENTIAL
        let Some(r) = call!(
            "create",
            create_request(&format!("{dir}/n-"), &ctl.data, 3),
            &[]
        ) else {
            break 'attempts;
        };
        let mine = match (r.err, Reader::new(&r.body).read_string()) {
            (0, Ok(p)) => p,
            _ => {
                // Counted as an error of the create; do not spin on a failing server.
                glommio::timer::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        let me = mine.rsplit('/').next().unwrap_or_default().to_string();
        loop {
            let Some(r) = call!(
                "getChildren",
                Request::GetChildren {
                    path: dir.clone(),
                    watch: false
                },
                &[]
            ) else {
                break 'attempts;
            };
            let mut kids = match (r.err, Reader::new(&r.body).read_string_vec()) {
                (0, Ok(k)) => k,
                _ => {
                    rec.borrow_mut()
                        .connect_error("lock: getChildren of the lock node failed");
                    break 'attempts;
                }
            };
            // Same prefix, ten-digit counters: name order is sequence order.
            kids.sort_unstable();
            let Some(pos) = kids.iter().position(|k| *k == me) else {
                rec.borrow_mut()
                    .connect_error("lock: own lock node missing from getChildren");
                break 'attempts;
            };
            if pos == 0 {
                break;
            }
            let pred = format!("{dir}/{}", kids[pos - 1]);
            let Some(r) = call!(
                "exists(watch)",
                Request::Exists {
                    path: pred.clone(),
                    watch: true
                },
                &[no_node]
            ) else {
                break 'attempts;
            };
            if r.err == no_node {
                continue;
            }
            if r.err != 0 {
                break 'attempts;
            }
            while !notified.contains(&pred) {
                match next_reply(&ctl, &mut frames, &mut stream).await {
                    None => break 'attempts,
                    Some(Err(e)) => {
                        rec.borrow_mut()
                            .connect_error(&format!("lock: connection lost: {e}"));
                        break 'attempts;
                    }
                    Some(Ok(r)) if r.xid == crate::proto::types::xid::NOTIFICATION => {
                        if let Some((_, _, path)) = client::parse_notification(&r.body) {
                            notified.insert(path);
                        }
                    }
                    Some(Ok(r)) => {
                        rec.borrow_mut()
                            .connect_error(&format!("lock: unexpected reply xid {}", r.xid));
                        break 'attempts;
                    }
                }
            }
        }
        let now = Instant::now();
        if ctl.in_window(started, now) {
            rec.borrow_mut()
                .record("acquire", now.duration_since(started), None);
            ctl.done.fetch_add(1, Ordering::Relaxed);
        }
        if !hold.is_zero() {
            glommio::timer::sleep(hold).await;
        }
        let Some(r) = call!(
            "delete",
            Request::Delete(DeleteRequest {
                path: mine,
                version: -1
            }),
            &[]
        ) else {
            break 'attempts;
        };
        if r.err != 0 {
            break;
        }
        if ctl
            .args
            .ops
            .is_some_and(|ops| ctl.done.load(Ordering::Relaxed) >= ops)
        {
            break;
        }
    }
    // Closing the session removes a lock node left behind.
    client::close(&mut stream, i32::MAX).await;
}
