//! Wire codec benchmarks (CPU only): request decode and encode per op type, reply encode for
//! the common replies, and frame splitting over a connection's read buffer.
//!
//! `cargo bench --bench proto`. Sizes are realistic: 100-byte data, paths like
//! `/app/queue/item-0000012345`, the open ACL.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringkeeper::proto::frame::{frames, split_frame, Split, DEFAULT_MAX_PACKET};
use ringkeeper::proto::records::{
    decode_request, encode_reply, encode_watch_event, ReplyBody, Request,
};
use ringkeeper::proto::types::{
    opcode, Acl, CreateRequest, DeleteRequest, ErrorCode, EventType, SetDataRequest, Stat,
};
use ringkeeper::txn::{MultiResult, WriteOp};

const PATH: &str = "/app/queue/item-0000012345";

fn data() -> Vec<u8> {
    (0..100u8).collect()
}

fn create_req(path: &str) -> CreateRequest {
    CreateRequest {
        path: path.to_string(),
        data: Some(data()),
        acl: Acl::open_unsafe(),
        flags: 0,
        ttl: -1,
    }
}

fn stat() -> Stat {
    Stat {
        czxid: 0x1_0000_3039,
        mzxid: 0x1_0000_303a,
        ctime: 1_700_000_000_000,
        mtime: 1_700_000_000_123,
        version: 3,
        cversion: 0,
        aversion: 0,
        ephemeral_owner: 0,
        data_length: 100,
        num_children: 0,
        pzxid: 0x1_0000_3039,
    }
}

/// The requests benchmarked, by name: the common ops of a ZooKeeper workload.
fn requests() -> Vec<(&'static str, Request)> {
    let path = PATH.to_string();
    vec![
        ("ping", Request::Ping),
        (
            "create",
            Request::Create {
                opcode: opcode::CREATE,
                req: create_req(PATH),
            },
        ),
        (
            "create2_seq",
            Request::Create {
                opcode: opcode::CREATE2,
                req: CreateRequest {
                    path: "/app/queue/item-".into(),
                    flags: 2,
                    ..create_req(PATH)
                },
            },
        ),
        (
            "delete",
            Request::Delete(DeleteRequest {
                path: path.clone(),
                version: -1,
            }),
        ),
        (
            "setData",
            Request::SetData(SetDataRequest {
                path: path.clone(),
                data: Some(data()),
                version: -1,
            }),
        ),
        (
            "getData",
            Request::GetData {
                path: path.clone(),
                watch: true,
            },
        ),
        (
            "exists",
            Request::Exists {
                path: path.clone(),
                watch: false,
            },
        ),
        (
            "getChildren",
            Request::GetChildren {
                path: "/app/queue".into(),
                watch: false,
            },
        ),
        (
            "multi_4",
            Request::Multi(
                (0..4)
                    .map(|i| WriteOp::Create {
                        opcode: opcode::CREATE,
                        req: create_req(&format!("/app/queue/item-{:010}", 12345 + i)),
                    })
                    .collect(),
            ),
        ),
    ]
}

fn encoded(req: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    req.encode(7, &mut out);
    out
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("proto_decode_request");
    g.throughput(Throughput::Elements(1));
    for (name, req) in requests() {
        let frame = encoded(&req);
        let payload = &frame[4..];
        // Make sure the bench decodes what it thinks it does.
        let (_, body) = decode_request(payload).expect("header");
        assert_eq!(body.as_ref(), Ok(&req), "{name} round trip");
        g.bench_with_input(BenchmarkId::from_parameter(name), payload, |b, p| {
            b.iter(|| decode_request(black_box(p)))
        });
    }
    g.finish();
}

fn encode_requests(c: &mut Criterion) {
    let mut g = c.benchmark_group("proto_encode_request");
    g.throughput(Throughput::Elements(1));
    let mut out = Vec::with_capacity(4096);
    for (name, req) in requests() {
        g.bench_with_input(BenchmarkId::from_parameter(name), &req, |b, req| {
            b.iter(|| {
                out.clear();
                black_box(req).encode(7, &mut out);
                out.len()
            })
        });
    }
    g.finish();
}

fn encode_replies(c: &mut Criterion) {
    let data = data();
    let children_10: Vec<Arc<str>> = (0..10)
        .map(|i| Arc::from(format!("item-{:010}", 12345 + i)))
        .collect();
    let children_1000: Vec<Arc<str>> = (0..1000)
        .map(|i| Arc::from(format!("item-{:010}", 12345 + i)))
        .collect();
    let multi: Vec<MultiResult> = (0..4)
        .map(|i| MultiResult::Created {
            opcode: opcode::CREATE,
            path: format!("/app/queue/item-{:010}", 12345 + i),
            stat: stat(),
        })
        .collect();
    let replies: Vec<(&str, ErrorCode, ReplyBody<'_>)> = vec![
        ("ping_or_delete", ErrorCode::Ok, ReplyBody::Empty),
        ("create", ErrorCode::Ok, ReplyBody::Path(PATH)),
        (
            "create2",
            ErrorCode::Ok,
            ReplyBody::PathStat {
                path: PATH,
                stat: stat(),
            },
        ),
        ("setData_or_exists", ErrorCode::Ok, ReplyBody::Stat(stat())),
        (
            "getData_100B",
            ErrorCode::Ok,
            ReplyBody::Data {
                data: Some(&data),
                stat: stat(),
            },
        ),
        (
            "getChildren_10",
            ErrorCode::Ok,
            ReplyBody::Children(&children_10),
        ),
        (
            "getChildren_1000",
            ErrorCode::Ok,
            ReplyBody::Children(&children_1000),
        ),
        ("multi_4", ErrorCode::Ok, ReplyBody::Multi(&multi)),
        ("error_nonode", ErrorCode::NoNode, ReplyBody::Empty),
    ];
    let mut g = c.benchmark_group("proto_encode_reply");
    g.throughput(Throughput::Elements(1));
    let mut out = Vec::with_capacity(64 * 1024);
    for (name, err, body) in &replies {
        g.bench_function(*name, |b| {
            b.iter(|| {
                out.clear();
                encode_reply(&mut out, 7, 0x1_0000_3039, *err, black_box(body));
                out.len()
            })
        });
    }
    g.bench_function("watch_event", |b| {
        b.iter(|| {
            out.clear();
            encode_watch_event(&mut out, EventType::NodeDataChanged, black_box(PATH));
            out.len()
        })
    });
    g.finish();
}

fn framing(c: &mut Criterion) {
    // A 64 KiB read buffer of pipelined requests (a mix like a busy client's), ending in a
    // partial frame, as a connection's reader sees it.
    let reqs = requests();
    let mut buf = Vec::new();
    let mut n = 0u64;
    while buf.len() < 64 * 1024 {
        buf.extend(encoded(&reqs[n as usize % reqs.len()].1));
        n += 1;
    }
    let whole = buf.len();
    buf.extend(&encoded(&reqs[1].1)[..20]);

    let mut g = c.benchmark_group("proto_frames");
    g.throughput(Throughput::Elements(1));
    let one = encoded(&reqs[1].1);
    g.bench_function("split_frame_create", |b| {
        b.iter(|| match split_frame(black_box(&one), DEFAULT_MAX_PACKET) {
            Ok(Split::Frame { consumed, .. }) => consumed,
            _ => unreachable!(),
        })
    });
    g.throughput(Throughput::Elements(n));
    g.bench_function(BenchmarkId::new("frames_64KiB", n), |b| {
        b.iter(|| {
            let mut it = frames(black_box(&buf), DEFAULT_MAX_PACKET);
            let count = it.by_ref().count();
            assert_eq!(it.consumed(), whole);
            count
        })
    });
    g.bench_function(BenchmarkId::new("frames_and_decode_64KiB", n), |b| {
        b.iter(|| {
            let mut ok = 0usize;
            for f in frames(black_box(&buf), DEFAULT_MAX_PACKET) {
                let (_, body) = decode_request(f.unwrap()).unwrap();
                ok += usize::from(body.is_ok());
            }
            ok
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = decode, encode_requests, encode_replies, framing
}
criterion_main!(benches);
