//! WAL benchmarks: record encoding + CRC by size, scanning (CPU), the in-memory half of a group
//! commit (CPU), and group-commit throughput on the real disk for both sync modes (`O_DSYNC` vs
//! write + `fdatasync`), one write in flight.
//!
//! `cargo bench --bench log_record` (set `RINGKEEPER_BENCH_DIR` to measure another disk; the
//! default is the system temp dir).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringkeeper::log::{
    record::{self, LogRecord},
    wal::BLOCK,
    SyncMode, Wal, WalOptions,
};
use ringkeeper::proto::types::{opcode, Acl, CreateRequest};
use ringkeeper::txn::{Batch, Command, Op, WriteOp};

/// The raft entry payload the sequencer proposes: an rkyv `Batch` of `n` creates of 100 bytes.
fn batch_bytes(n: usize) -> Vec<u8> {
    let batch = Batch {
        time_ms: 1_700_000_000_000,
        commands: (0..n)
            .map(|i| Command {
                session: 0x0100_0000_0000_0001,
                xid: i as i32 + 1,
                origin: 1,
                auth: Vec::new(),
                seen_zxid: i64::MAX,
                op: Op::Write(WriteOp::Create {
                    opcode: opcode::CREATE,
                    req: CreateRequest {
                        path: format!("/app/queue/item-{:010}", 12345 + i),
                        data: Some(vec![0x5A; 100]),
                        acl: Acl::open_unsafe(),
                        flags: 0,
                        ttl: -1,
                    },
                }),
            })
            .collect(),
    };
    rkyv::to_bytes::<rkyv::rancor::Error>(&batch)
        .unwrap()
        .to_vec()
}

fn encode_and_scan(c: &mut Criterion) {
    let data = vec![0x5Au8; 220];
    let mut g = c.benchmark_group("log_record");
    g.throughput(Throughput::Elements(1));
    let mut buf = Vec::with_capacity(1 << 20);
    g.bench_function("encode_seal_220B", |b| {
        b.iter(|| {
            buf.clear();
            let rec = LogRecord::Entry {
                index: 42,
                term: 7,
                data: &data,
                conf_change: false,
            };
            let n = record::encode(&rec, &mut buf, 1 << 20).unwrap();
            record::seal(&mut buf[..n], 0);
            n
        })
    });

    // Encode + provisional CRC + seal (final CRC) of one entry holding a real batch, by size.
    for creates in [1usize, 16, 256] {
        let payload = batch_bytes(creates);
        g.throughput(Throughput::Bytes(payload.len() as u64));
        g.bench_with_input(
            BenchmarkId::new(
                "encode_seal_batch_of_creates",
                format!("{creates}x_{}B", payload.len()),
            ),
            &payload,
            |b, payload| {
                b.iter(|| {
                    buf.clear();
                    let rec = LogRecord::Entry {
                        index: 42,
                        term: 7,
                        data: payload,
                        conf_change: false,
                    };
                    let n = record::encode(&rec, &mut buf, 1 << 20).unwrap();
                    record::seal(&mut buf[..n], 0);
                    n
                })
            },
        );
    }
    // The CRC alone, for scale.
    let page = vec![0xA5u8; 4096];
    g.throughput(Throughput::Bytes(page.len() as u64));
    g.bench_function("crc32c_4KiB", |b| {
        b.iter(|| crc32c::crc32c(std::hint::black_box(&page)))
    });

    // A 1 MiB segment image full of 220-byte entries.
    let mut seg = Vec::new();
    let mut count = 0u64;
    while seg.len() + 512 < (1 << 20) {
        let at = seg.len();
        let rec = LogRecord::Entry {
            index: count + 1,
            term: 1,
            data: &data,
            conf_change: false,
        };
        record::encode(&rec, &mut seg, 1 << 20).unwrap();
        record::seal(&mut seg[at..], at as u32);
        count += 1;
    }
    seg.resize(1 << 20, 0);
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(seg.len());
    aligned.extend_from_slice(&seg);
    g.throughput(Throughput::Elements(count));
    g.bench_function("scan_1MiB_segment", |b| {
        b.iter(|| record::scan_segment(&aligned).unwrap().records.len())
    });
    g.finish();
}

/// The CPU half of one group commit, as `Wal::submit` and the writer's `write_chunk` do it:
/// encode `n` submitted 120-byte entries into the pending buffer, then build the write
/// buffer (the partial tail block first, the records, zero padding to a 4 KiB multiple) and
/// seal every record with the write's start offset. The WAL exposes no I/O-free entry point
/// for this (its buffer comes from the DMA file), so this mirrors it with `record`'s functions;
/// the write buffer is reused rather than allocated per commit.
fn commit_buffer(c: &mut Criterion) {
    let data = vec![0xC3u8; 120];
    let mut g = c.benchmark_group("group_commit_buffer");
    let mut pending: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut write_buf: Vec<u8> = Vec::with_capacity(1 << 20);
    // The writer's state: 1008 bytes already in the current 4 KiB block.
    let tail = vec![0x11u8; 1008];
    let pos: u64 = 3 * BLOCK + tail.len() as u64;
    for n in [1usize, 64, 512] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("encode_and_seal_120B", n), &n, |b, &n| {
            b.iter(|| {
                pending.clear();
                for i in 0..n as u64 {
                    let rec = LogRecord::Entry {
                        index: 1000 + i,
                        term: 3,
                        data: &data,
                        conf_change: false,
                    };
                    record::encode(&rec, &mut pending, 1 << 20).unwrap();
                }
                let prefix = tail.len();
                let total = prefix + pending.len();
                let buf_len = record::align_up(total, BLOCK as usize);
                write_buf.clear();
                write_buf.extend_from_slice(&tail);
                write_buf.extend_from_slice(&pending);
                write_buf.resize(buf_len, 0);
                let write_start = pos as u32;
                let mut off = prefix;
                while off < total {
                    let len = record::encoded_len(&write_buf[off..]);
                    record::seal(&mut write_buf[off..off + len], write_start);
                    off += len;
                }
                let tail_from = total - total % BLOCK as usize;
                write_buf[tail_from..total].to_vec()
            })
        });
    }
    g.finish();
}

/// Durable records per second with `batch` 120-byte records per commit.
fn commit_loop(opts: WalOptions, dir: &std::path::Path, batch: usize, iters: u64) -> Duration {
    let dir = dir.to_path_buf();
    glommio::LocalExecutorBuilder::default()
        .make()
        .expect("executor")
        .run(async move {
            let (wal, rec) = Wal::open(&dir, opts).await.expect("open");
            let mut index = rec.entries.last().map_or(0, |e| e.index);
            let data = vec![0xC3u8; 120];
            let start = Instant::now();
            for _ in 0..iters {
                let recs: Vec<LogRecord<'_>> = (0..batch)
                    .map(|_| {
                        index += 1;
                        LogRecord::Entry {
                            index,
                            term: 1,
                            data: &data,
                            conf_change: false,
                        }
                    })
                    .collect();
                let t = wal.submit(&recs);
                wal.wait_durable(t).await.expect("durable");
            }
            let elapsed = start.elapsed();
            wal.close().await.expect("close");
            elapsed
        })
}

fn group_commit(c: &mut Criterion) {
    let base = std::env::var_os("RINGKEEPER_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let mut g = c.benchmark_group("wal_commit");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (name, sync) in [
        ("dsync", SyncMode::Dsync),
        ("fdatasync", SyncMode::Fdatasync),
    ] {
        // One log per mode, reused across samples: the pre-zeroed segment is made once.
        let tmp = tempfile::tempdir_in(&base).expect("temp dir");
        // Small segments keep the per-sample reopen (a full scan) cheap.
        let opts = WalOptions {
            sync,
            segment_bytes: 8 << 20,
            ..WalOptions::default()
        };
        for batch in [1usize, 64, 512] {
            g.throughput(Throughput::Elements(batch as u64));
            g.bench_with_input(BenchmarkId::new(name, batch), &batch, |b, &batch| {
                b.iter_custom(|iters| commit_loop(opts, tmp.path(), batch, iters))
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = encode_and_scan, commit_buffer, group_commit
}
criterion_main!(benches);
