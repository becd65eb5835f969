//! State machine benchmarks (CPU only):
//! - `prep`: what a shard does to turn a create frame into a `txn::Command`, and the rkyv
//!   round trip of a `Batch` that the sequencer does around the log;
//! - `apply`: `Machine::apply_batch` of create / setData / delete batches on a 100k-node tree
//!   (ringkeeper validates at apply, so this *is* the prep of a write), and creates under a
//!   parent with 1M children (O(log n) children set);
//! - `mvcc_read`: `View::node` / `stat` / `children` while another thread applies writes and
//!   publishes views, against the same reads on a quiet tree.
//!
//! `cargo bench --bench machine` (the whole set: `cargo bench --bench proto --bench machine
//! --bench log_record`, about two minutes on a 2-core machine; a bare `cargo bench` also builds
//! the library's unit tests in the bench profile). Nodes carry 100 bytes of data; paths look like
//! `/app/dir-00007/item-0000012345`. Every timed apply runs with the previous `View` still
//! alive, as in the server (shards hold the last published view), so copy-on-write is paid.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringkeeper::machine::{Machine, MachineConfig, View};
use ringkeeper::proto::records::{decode_request, Request};
use ringkeeper::proto::types::{
    opcode, Acl, CreateRequest, DeleteRequest, Id, SessionId, SetDataRequest,
};
use ringkeeper::txn::{Batch, Command, Op, OpResult, WriteOp};

/// Parents of the 100k-node tree, each with `PER_DIR` children.
const DIRS: usize = 100;
const PER_DIR: usize = 1000;
/// Commands per timed batch.
const BATCH: usize = 256;
/// The sequencer's largest batch (used to build trees quickly).
const BUILD_BATCH: usize = 4096;
/// Children of the wide queue parent.
const WIDE: usize = 1_000_000;

fn data() -> Vec<u8> {
    (0..100u8).collect()
}

fn dir(d: usize) -> String {
    format!("/app/dir-{d:05}")
}

fn item(parent: &str, i: usize) -> String {
    format!("{parent}/item-{i:010}")
}

fn create_op(path: String, flags: i32) -> Op {
    Op::Write(WriteOp::Create {
        opcode: opcode::CREATE,
        req: CreateRequest {
            path,
            data: Some(data()),
            acl: Acl::open_unsafe(),
            flags,
            ttl: -1,
        },
    })
}

fn delete_op(path: String) -> Op {
    Op::Write(WriteOp::Delete(DeleteRequest { path, version: -1 }))
}

fn set_data_op(path: String) -> Op {
    Op::Write(WriteOp::SetData(SetDataRequest {
        path,
        data: Some(data()),
        version: -1,
    }))
}

/// A machine with one session, and the means to feed it batches.
struct Fixture {
    m: Machine,
    session: SessionId,
    xid: i32,
}

impl Fixture {
    fn new() -> Fixture {
        let mut m = Machine::new(MachineConfig::default());
        let open = Command {
            session: 0,
            xid: 0,
            origin: 0,
            auth: Vec::new(),
            seen_zxid: i64::MAX,
            op: Op::CreateSession {
                timeout_ms: 30_000,
                passwd: vec![7; 16],
            },
        };
        let applied = m.apply_batch(
            1,
            &Batch {
                time_ms: 1_700_000_000_000,
                commands: vec![open],
            },
        );
        let OpResult::SessionCreated { session, .. } = applied[0].result else {
            panic!("no session: {:?}", applied[0].result);
        };
        Fixture { m, session, xid: 0 }
    }

    fn batch(&mut self, ops: impl IntoIterator<Item = Op>) -> Batch {
        let commands = ops
            .into_iter()
            .map(|op| {
                self.xid += 1;
                Command {
                    session: self.session,
                    xid: self.xid,
                    origin: 1,
                    auth: Vec::new(),
                    seen_zxid: i64::MAX,
                    op,
                }
            })
            .collect();
        Batch {
            time_ms: 1_700_000_000_000,
            commands,
        }
    }

    /// Applies `ops` in batches of `BUILD_BATCH`, asserting every command succeeds.
    fn apply_all(&mut self, ops: Vec<Op>) {
        for chunk in ops.chunks(BUILD_BATCH) {
            let b = self.batch(chunk.iter().cloned());
            check(&self.m.apply_batch(1, &b));
        }
    }

    /// `/app` with `DIRS` parents of `PER_DIR` children each (100k nodes).
    fn tree_100k() -> Fixture {
        let mut f = Fixture::new();
        f.apply_all(vec![create_op("/app".into(), 0)]);
        f.apply_all((0..DIRS).map(|d| create_op(dir(d), 0)).collect());
        f.apply_all(
            (0..DIRS * PER_DIR)
                .map(|i| create_op(item(&dir(i % DIRS), i / DIRS), 0))
                .collect(),
        );
        f
    }

    /// `/app/queue` with `WIDE` children.
    fn wide_queue() -> Fixture {
        let mut f = Fixture::new();
        f.apply_all(vec![
            create_op("/app".into(), 0),
            create_op("/app/queue".into(), 0),
        ]);
        for start in (0..WIDE).step_by(BUILD_BATCH) {
            let end = (start + BUILD_BATCH).min(WIDE);
            let b = f.batch((start..end).map(|i| create_op(item("/app/queue", i), 0)));
            check(&f.m.apply_batch(1, &b));
        }
        assert_eq!(f.m.view().node("/app/queue").unwrap().num_children(), WIDE);
        f
    }
}

fn check(applied: &[ringkeeper::txn::Applied]) {
    for a in applied {
        assert!(
            !matches!(a.result, OpResult::Error(_)),
            "command failed: {:?}",
            a.result
        );
    }
}

// ---------------------------------------------------------------------------------------------

/// The shard's part (`server::conn`): decode the frame, clone the borrowed request into a
/// `Command`; then the sequencer's rkyv round trip of a batch around the log.
fn prep(c: &mut Criterion) {
    let mut g = c.benchmark_group("prep");
    let req = Request::Create {
        opcode: opcode::CREATE,
        req: CreateRequest {
            path: "/app/queue/item-0000012345".into(),
            data: Some(data()),
            acl: Acl::open_unsafe(),
            flags: 0,
            ttl: -1,
        },
    };
    let mut frame = Vec::new();
    req.encode(7, &mut frame);
    let payload = &frame[4..];
    let auth: Vec<Id> = Vec::new();
    g.throughput(Throughput::Elements(1));
    g.bench_function("create_frame_to_command", |b| {
        b.iter(|| {
            let (header, req) = decode_request(black_box(payload)).unwrap();
            // As `conn::write_op` does: the request is borrowed, so it is cloned.
            let op = match &req {
                Ok(Request::Create { opcode, req }) => Op::Write(WriteOp::Create {
                    opcode: *opcode,
                    req: req.clone(),
                }),
                other => unreachable!("not a create: {other:?}"),
            };
            Command {
                session: 0x0100_0000_0000_0001,
                xid: header.xid,
                origin: 1,
                auth: auth.clone(),
                seen_zxid: i64::MAX,
                op,
            }
        })
    });

    let mut f = Fixture::new();
    let batch = f.batch((0..BATCH).map(|i| create_op(item("/app/queue", i), 0)));
    let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&batch)
        .unwrap()
        .to_vec();
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function(BenchmarkId::new("batch_serialize_creates", BATCH), |b| {
        // As `Sequencer::propose`: rkyv, then a copy into the raft entry.
        b.iter(|| {
            rkyv::to_bytes::<rkyv::rancor::Error>(black_box(&batch))
                .unwrap()
                .to_vec()
        })
    });
    g.bench_function(BenchmarkId::new("batch_deserialize_creates", BATCH), |b| {
        // As `Sequencer::apply`: copy into an aligned buffer, validate and deserialize.
        b.iter(|| {
            let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
            aligned.extend_from_slice(black_box(&bytes));
            rkyv::from_bytes::<Batch, rkyv::rancor::Error>(&aligned).unwrap()
        })
    });
    g.finish();
}

/// Times `timed` batches; after each, publishes a view (kept alive, as a shard would) and runs
/// the untimed `undo` batch that restores the tree's shape.
fn timed_apply(
    f: &mut Fixture,
    iters: u64,
    timed: &Batch,
    undo: Option<&Batch>,
    hold_view: bool,
) -> Duration {
    let mut total = Duration::ZERO;
    let mut view: Option<View> = Some(f.m.view());
    for _ in 0..iters {
        if !hold_view {
            drop(view.take());
        }
        let t = Instant::now();
        let applied = f.m.apply_batch(1, timed);
        total += t.elapsed();
        // Untimed: a bench of failing commands would measure the wrong thing.
        check(&applied);
        drop(applied);
        if let Some(undo) = undo {
            drop(view.replace(f.m.view()));
            f.m.apply_batch(1, undo);
        }
        drop(view.replace(f.m.view()));
    }
    drop(view);
    total
}

fn apply(c: &mut Criterion) {
    let mut g = c.benchmark_group("apply");
    g.sample_size(10);
    g.throughput(Throughput::Elements(BATCH as u64));

    let mut f = Fixture::tree_100k();
    // All under one parent that has PER_DIR children, so the parent's children set and its
    // copy-on-write are part of the cost, as for a queue.
    let parent = dir(7);
    let names: Vec<String> = (0..BATCH).map(|i| item(&parent, PER_DIR + i)).collect();
    let creates = f.batch(names.iter().map(|p| create_op(p.clone(), 0)));
    let deletes = f.batch(names.iter().map(|p| delete_op(p.clone())));
    // setData spread over the whole tree.
    let sets = f.batch((0..BATCH).map(|i| {
        let i = i * 389 % (DIRS * PER_DIR);
        set_data_op(item(&dir(i % DIRS), i / DIRS))
    }));
    g.bench_function(BenchmarkId::new("create_100k_tree_parent_1k", BATCH), |b| {
        b.iter_custom(|iters| timed_apply(&mut f, iters, &creates, Some(&deletes), true))
    });
    g.bench_function(
        BenchmarkId::new("create_100k_tree_parent_1k_no_view", BATCH),
        |b| b.iter_custom(|iters| timed_apply(&mut f, iters, &creates, Some(&deletes), false)),
    );
    check(&f.m.apply_batch(1, &creates));
    g.bench_function(BenchmarkId::new("delete_100k_tree_parent_1k", BATCH), |b| {
        b.iter_custom(|iters| timed_apply(&mut f, iters, &deletes, Some(&creates), true))
    });
    check(&f.m.apply_batch(1, &deletes));
    g.bench_function(BenchmarkId::new("setData_100k_tree", BATCH), |b| {
        b.iter_custom(|iters| timed_apply(&mut f, iters, &sets, None, true))
    });
    drop(f);

    let build = Instant::now();
    let mut w = Fixture::wide_queue();
    eprintln!(
        "apply: built /app/queue with {WIDE} children in {:.1?}",
        build.elapsed()
    );
    let names: Vec<String> = (0..BATCH).map(|i| item("/app/queue", WIDE + i)).collect();
    let creates = w.batch(names.iter().map(|p| create_op(p.clone(), 0)));
    let deletes = w.batch(names.iter().map(|p| delete_op(p.clone())));
    g.bench_function(BenchmarkId::new("create_parent_1M", BATCH), |b| {
        b.iter_custom(|iters| timed_apply(&mut w, iters, &creates, Some(&deletes), true))
    });
    // The queue pattern: sequential creates; the untimed undo deletes what they made.
    let seq = w.batch((0..BATCH).map(|_| create_op("/app/queue/item-".into(), 2)));
    g.bench_function(BenchmarkId::new("create_seq_parent_1M", BATCH), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut view = w.m.view();
            for _ in 0..iters {
                let t = Instant::now();
                let applied = w.m.apply_batch(1, &seq);
                total += t.elapsed();
                view = w.m.view();
                let made: Vec<Op> = applied
                    .into_iter()
                    .map(|a| match a.result {
                        OpResult::Created { path, .. } => delete_op(path),
                        other => panic!("sequential create failed: {other:?}"),
                    })
                    .collect();
                let undo = w.batch(made);
                w.m.apply_batch(1, &undo);
            }
            drop(view);
            total
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------

/// The writer side of `mvcc_read`: applies batches (setData across the tree, creates and
/// deletes under the read parent) and publishes a view after each, until stopped.
struct Writer {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Fixture>>,
}

impl Writer {
    fn start(mut f: Fixture, slot: Arc<Mutex<View>>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let (stop2, ops2) = (stop.clone(), ops.clone());
        let thread = std::thread::spawn(move || {
            let parent = dir(7);
            let names: Vec<String> = (0..32).map(|i| item(&parent, PER_DIR + i)).collect();
            let creates = f.batch(names.iter().map(|p| create_op(p.clone(), 0)));
            let deletes = f.batch(names.iter().map(|p| delete_op(p.clone())));
            let sets = f.batch((0..64).map(|i| {
                let i = i * 1543 % (DIRS * PER_DIR);
                set_data_op(item(&dir(i % DIRS), i / DIRS))
            }));
            let mut round = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                let b = match round % 3 {
                    0 => &creates,
                    1 => &sets,
                    _ => &deletes,
                };
                let applied = f.m.apply_batch(1, b);
                check(&applied);
                let n = applied.len();
                *slot.lock().unwrap() = f.m.view();
                ops2.fetch_add(n as u64, Ordering::Relaxed);
                round += 1;
            }
            // End on a whole create/set/delete cycle, so the tree has its original shape.
            while round % 3 != 0 {
                let b = if round % 3 == 1 { &sets } else { &deletes };
                f.m.apply_batch(1, b);
                round += 1;
            }
            f
        });
        Writer {
            stop,
            ops,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> Fixture {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// Reads `iters` times through `read`, refreshing the view from `slot` every 64 reads (as a
/// shard installs updates between requests).
fn read_loop<R>(slot: &Mutex<View>, iters: u64, mut read: impl FnMut(&View, u64) -> R) -> Duration {
    let mut view = slot.lock().unwrap().clone();
    let t = Instant::now();
    for i in 0..iters {
        if i % 64 == 0 {
            view = slot.lock().unwrap().clone();
        }
        black_box(read(&view, i));
    }
    t.elapsed()
}

fn mvcc_read(c: &mut Criterion) {
    let f = Fixture::tree_100k();
    // Paths spread over the tree in a cache-unfriendly order.
    let paths: Vec<String> = (0..4096)
        .map(|i| {
            let i = i * 7919 % (DIRS * PER_DIR);
            item(&dir(i % DIRS), i / DIRS)
        })
        .collect();
    let wide = dir(7);
    let slot = Arc::new(Mutex::new(f.m.view()));
    let pick = |i: u64| paths[i as usize % paths.len()].as_str();

    let mut g = c.benchmark_group("mvcc_read");
    g.throughput(Throughput::Elements(1));
    let mut f = Some(f);
    for busy in [false, true] {
        let suffix = if busy { "under_writer" } else { "quiet" };
        let writer = busy.then(|| Writer::start(f.take().unwrap(), slot.clone()));
        let started = (
            Instant::now(),
            writer.as_ref().map(|w| w.ops.load(Ordering::Relaxed)),
        );
        g.bench_function(format!("node_{suffix}"), |b| {
            b.iter_custom(|n| {
                read_loop(&slot, n, |v, i| {
                    v.node(pick(i)).map(|n| n.data().map(<[u8]>::len))
                })
            })
        });
        g.bench_function(format!("stat_{suffix}"), |b| {
            b.iter_custom(|n| read_loop(&slot, n, |v, i| v.stat(pick(i))))
        });
        g.bench_function(format!("children_1k_{suffix}"), |b| {
            b.iter_custom(|n| read_loop(&slot, n, |v, _| v.children(&wide).map(|c| c.len())))
        });
        if busy {
            // The same reads on one view the writer has long moved past: no refresh, no
            // dropping of old versions; what remains is sharing memory with a writer.
            g.bench_function("node_under_writer_stale_view", |b| {
                let stale = slot.lock().unwrap().clone();
                b.iter_custom(|n| {
                    let t = Instant::now();
                    for i in 0..n {
                        black_box(stale.node(pick(i)).map(|n| n.data().map(<[u8]>::len)));
                    }
                    t.elapsed()
                })
            });
        }
        if let Some(w) = writer {
            let ops = w.ops.load(Ordering::Relaxed) - started.1.unwrap_or(0);
            let secs = started.0.elapsed().as_secs_f64();
            eprintln!(
                "mvcc_read: the writer applied {:.0} commands/s (batches of 32-64) meanwhile",
                ops as f64 / secs
            );
            f = Some(w.stop());
        }
    }
    g.finish();
    drop(f);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500));
    targets = prep, apply, mvcc_read
}
criterion_main!(benches);
