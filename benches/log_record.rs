//! WAL benchmarks: record encoding and scanning (CPU), and group-commit throughput on the real
//! disk for both sync modes (`O_DSYNC` vs write + `fdatasync`), one write in flight.
//!
//! `cargo bench --bench log_record` (set `RINGKEEPER_BENCH_DIR` to measure another disk; the
//! default is the system temp dir).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringkeeper::log::{
    record::{self, LogRecord},
    SyncMode, Wal, WalOptions,
};

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
            };
            let n = record::encode(&rec, &mut buf, 1 << 20).unwrap();
            record::seal(&mut buf[..n], 0);
            n
        })
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
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
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

criterion_group!(benches, encode_and_scan, group_commit);
criterion_main!(benches);
