//! `ringkeeper bench`: a load generator that speaks the ZooKeeper wire protocol, so the same run
//! can target ringkeeper or Apache ZooKeeper.
//!
//! Sessions are spread over `--threads` glommio executors. Each session has a sender and a
//! receiver task on one connection. Closed loop: at most `--depth` requests in flight per
//! session, the next sent as soon as a reply frees a slot. Open loop (`--rate`): requests are
//! sent on a fixed schedule whatever the replies do, and latency is measured from each
//! request's intended start, so queueing inside the server is not hidden (coordinated
//! omission).

mod client;
mod report;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::io::AsyncWriteExt;
use glommio::{LocalExecutorBuilder, Placement};

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
    start: Instant,
    measure_from: Instant,
    measure_until: Option<Instant>,
    stop: AtomicBool,
    /// Measured operations completed, all threads.
    done: AtomicU64,
    /// Operations sent, all threads (progress line).
    sent: AtomicU64,
}

impl Control {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
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

    let start = Instant::now();
    let warmup = if args.ops.is_some() {
        Duration::ZERO
    } else {
        secs(args.warmup)
    };
    let measure_from = start + warmup;
    let ctl = Arc::new(Control {
        data: vec![b'x'; args.data_size],
        root,
        start,
        measure_from,
        measure_until: args
            .ops
            .is_none()
            .then(|| measure_from + secs(args.duration)),
        stop: AtomicBool::new(false),
        done: AtomicU64::new(0),
        sent: AtomicU64::new(0),
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
    let measured = match ctl.measure_until {
        Some(until) => until
            .min(elapsed_end)
            .saturating_duration_since(ctl.measure_from),
        None => elapsed_end.saturating_duration_since(ctl.measure_from),
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

/// The main thread prints progress and decides when the run ends.
fn progress_and_stop(ctl: &Control) {
    let mut last_print = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = Instant::now();
        let finished = match (ctl.measure_until, ctl.args.ops) {
            (Some(until), _) => now >= until,
            (None, Some(ops)) => ctl.done.load(Ordering::Relaxed) >= ops,
            (None, None) => true,
        };
        if !ctl.args.quiet && now.duration_since(last_print) >= Duration::from_secs(1) {
            last_print = now;
            let phase = if now < ctl.measure_from {
                "warm-up"
            } else {
                "measuring"
            };
            eprint!(
                "\r{phase}: {:>6.1}s  sent {:>10}  measured {:>10}   ",
                now.duration_since(ctl.start).as_secs_f64(),
                ctl.sent.load(Ordering::Relaxed),
                ctl.done.load(Ordering::Relaxed)
            );
        }
        if finished {
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
        Workload::Churn => ("closeSession", Request::CloseSession),
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
    if ctl.args.workload == Workload::Churn {
        return churn_task(ctl, rec, addr).await;
    }
    let (stream, _session) = match client::connect(addr, ctl.args.session_timeout).await {
        Ok(c) => c,
        Err(e) => {
            rec.borrow_mut().connect_error(&e.to_string());
            return;
        }
    };
    let (mut rd, mut wr) = futures_lite::io::split(stream);
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
        let reply =
            futures_lite::future::or(async { Some(client::read_reply(&mut rd).await) }, async {
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
        let in_window =
            intended >= ctl.measure_from && ctl.measure_until.is_none_or(|until| now <= until);
        if in_window {
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
    let _ = futures_lite::future::or(
        async { client::read_reply(&mut rd).await.map(|_| ()) },
        async {
            glommio::timer::sleep(Duration::from_secs(1)).await;
            Ok(())
        },
    )
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

async fn churn_task(ctl: Arc<Control>, rec: Rc<RefCell<report::Recorder>>, addr: SocketAddr) {
    while !ctl.stopping() {
        let started = Instant::now();
        match client::connect(addr, ctl.args.session_timeout).await {
            Ok((mut stream, _)) => {
                client::close(&mut stream, 1).await;
                let now = Instant::now();
                if started >= ctl.measure_from && ctl.measure_until.is_none_or(|u| now <= u) {
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
